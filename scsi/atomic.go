package scsi

func atomicCommands() []opInfo { return nil }

// atomicState is this area's per-LU state (filled in by its owner).
type atomicState struct{}

func (s *atomicState) init(lu *LU) error { return nil }
