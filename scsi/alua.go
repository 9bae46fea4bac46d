package scsi

func portGroupCommands() []opInfo { return nil }
