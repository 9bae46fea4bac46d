package scsi

func portGroupCommands() []opInfo { return nil }

// aluaState is this area's per-LU state (filled in by its owner).
type aluaState struct{}

func (s *aluaState) init(lu *LU) error { return nil }
