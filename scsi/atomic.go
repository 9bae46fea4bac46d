package scsi

func atomicCommands() []opInfo { return nil }
