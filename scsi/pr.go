package scsi

func reservationCommands() []opInfo { return nil }

// prState is this area's per-LU state (filled in by its owner).
type prState struct{}

func (s *prState) init(lu *LU) error { return nil }

// reservationGate returns ErrReservationConflict when the persistent or
// SPC-2 reservation of the LU forbids t from its nexus (SPC-4 5.13.1,
// table 69). It runs in the gate chain before every command.
func (lu *LU) reservationGate(t *task) error { return nil }
