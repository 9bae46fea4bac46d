package scsi

func atomicCommands() []opInfo { return nil }

// atomicState is this area's per-LU state (filled in by its owner).
type atomicState struct{}

func (s *atomicState) init(lu *LU) error { return nil }

// Limits reported in the Block Limits VPD page (0xB0).
const (
	maxCompareAndWriteLength = 255  // blocks (MAXIMUM COMPARE AND WRITE LENGTH)
	maxAtomicTransferLength  = 2048 // blocks
)
