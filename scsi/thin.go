package scsi

func thinCommands() []opInfo { return nil }
