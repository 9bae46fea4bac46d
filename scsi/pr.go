package scsi

func reservationCommands() []opInfo { return nil }
