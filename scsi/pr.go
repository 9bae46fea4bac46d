package scsi

func reservationCommands() []opInfo { return nil }

// prState is this area's per-LU state (filled in by its owner).
type prState struct{}

func (s *prState) init(lu *LU) error { return nil }
