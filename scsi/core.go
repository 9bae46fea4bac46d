package scsi

func coreCommands() []opInfo { return nil }
