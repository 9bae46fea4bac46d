package scsi

func thinCommands() []opInfo { return nil }

// Limits reported in the Block Limits VPD page (0xB0).
const (
	maxUnmapLBACount        = 0x400000 // blocks per UNMAP descriptor range total
	maxUnmapDescriptorCount = 256
	maxWriteSameLength      = 0x400000 // blocks
)
