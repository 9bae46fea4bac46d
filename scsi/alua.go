package scsi

func portGroupCommands() []opInfo { return nil }

// aluaState is this area's per-LU state (filled in by its owner).
type aluaState struct{}

func (s *aluaState) init(lu *LU) error { return nil }

// aluaGate refuses t when the access state of the nexus's target port group
// does not allow it (SPC-4 5.15.2.4): Standby/Unavailable answer NOT READY
// with the state's ASC; Transitioning answers NOT READY, ASYMMETRIC ACCESS
// STATE TRANSITION.
func (lu *LU) aluaGate(t *task) error { return nil }

// tpgs returns the INQUIRY TPGS field (bits 5-4 of byte 5): 01b implicit
// ALUA.
func (lu *LU) tpgs() byte { return 1 }
