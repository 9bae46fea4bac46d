package scsi

// Task management functions (SAM-5 7). Each returns only after every task
// it aborts has ended; an aborted task's Execute returns TASK ABORTED,
// which the transport does not send.

// The transport finds these methods (and DataOutLength) by interface; keep
// their signatures.
var _ interface {
	AbortTask(n *Nexus, lun uint64, tag uint32) TMFResponse
	AbortTaskSet(n *Nexus, lun uint64) TMFResponse
	ClearTaskSet(n *Nexus, lun uint64) TMFResponse
	LUNReset(n *Nexus, lun uint64) TMFResponse
	TargetReset(n *Nexus) TMFResponse
	NexusLost(n *Nexus)
	DataOutLength(lun uint64, cdb []byte) (uint32, bool)
} = (*Device)(nil)

// keyOf returns the key of nexus n (a nil nexus is the empty one, as in
// Execute).
func keyOf(n *Nexus) string {
	if n == nil {
		return (&Nexus{}).Key()
	}
	return n.Key()
}

// AbortTask aborts the task with tag from nexus n on lun.
func (d *Device) AbortTask(n *Nexus, lun uint64, tag uint32) TMFResponse {
	lu := d.lu(lun)
	if lu == nil {
		return TMFLUNNotExist
	}
	k := keyOf(n)
	if len(lu.tasks.abort(func(e *tsEntry) bool { return e.key == k && e.tag == tag })) == 0 {
		return TMFTaskNotExist
	}
	return TMFComplete
}

// AbortTaskSet aborts every task from nexus n on lun.
func (d *Device) AbortTaskSet(n *Nexus, lun uint64) TMFResponse {
	lu := d.lu(lun)
	if lu == nil {
		return TMFLUNNotExist
	}
	k := keyOf(n)
	lu.tasks.abort(func(e *tsEntry) bool { return e.key == k })
	return TMFComplete
}

// ClearTaskSet aborts every task on lun, from every nexus; the other
// nexuses that lost tasks get COMMANDS CLEARED BY ANOTHER INITIATOR.
func (d *Device) ClearTaskSet(n *Nexus, lun uint64) TMFResponse {
	lu := d.lu(lun)
	if lu == nil {
		return TMFLUNNotExist
	}
	k := keyOf(n)
	for _, o := range lu.tasks.abort(func(*tsEntry) bool { return true }) {
		if o != k {
			lu.addUA(o, ASCCommandsClearedByAnother)
		}
	}
	return TMFComplete
}

// LUNReset performs a logical unit reset of lun (SAM-5 6.3.3): all its
// tasks are aborted, an SPC-2 reservation is released, and every nexus
// gets BUS DEVICE RESET FUNCTION OCCURRED. Mode parameters and
// persistent reservations stay.
func (d *Device) LUNReset(n *Nexus, lun uint64) TMFResponse {
	lu := d.lu(lun)
	if lu == nil {
		return TMFLUNNotExist
	}
	lu.reset()
	return TMFComplete
}

// TargetReset resets every LU of the device, as LUNReset does for one.
func (d *Device) TargetReset(n *Nexus) TMFResponse {
	for _, lun := range d.LUNs() {
		if lu := d.lu(lun); lu != nil {
			lu.reset()
		}
	}
	return TMFComplete
}

// NexusLost is called by the transport when the I_T nexus n is gone
// (session closed or reinstated, I_T NEXUS RESET): its tasks are aborted
// and its unit attention state forgotten, so a new nexus with the same
// name starts with POWER ON, RESET; an SPC-2 reservation it held is
// released. Persistent reservations and registrations are kept (SPC-4
// 5.13).
func (d *Device) NexusLost(n *Nexus) {
	k := keyOf(n)
	for _, lun := range d.LUNs() {
		if lu := d.lu(lun); lu != nil {
			lu.tasks.abort(func(e *tsEntry) bool { return e.key == k })
			lu.nexusLost(k)
			lu.forgetNexus(k)
		}
	}
}

// reset is the logical unit reset. SAM-5 6.3.2 establishes BUS DEVICE
// RESET FUNCTION OCCURRED for every I_T nexus, the one that asked for the
// reset included (libiscsi's MultipathIO.Reset checks both paths).
func (lu *LU) reset() {
	lu.tasks.abort(func(*tsEntry) bool { return true })
	lu.resetReservations()
	lu.addUAAll("", ASCBusDeviceReset)
}
