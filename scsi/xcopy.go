package scsi

func copyCommands() []opInfo { return nil }
