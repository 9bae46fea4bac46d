package scsi

import "context"

// task is one command in execution on a logical unit.
type task struct {
	ctx  context.Context
	dev  *Device
	lu   *LU
	cmd  *Command
	cdb  []byte
	op   *opInfo
	data []byte // Data-In produced by the handler
}
