package scsi

func miscCommands() []opInfo { return nil }
