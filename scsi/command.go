package scsi

import "fmt"

// Status is a SCSI status byte (SAM-5).
type Status uint8

const (
	StatusGood                Status = 0x00
	StatusCheckCondition      Status = 0x02
	StatusConditionMet        Status = 0x04
	StatusBusy                Status = 0x08
	StatusReservationConflict Status = 0x18
	StatusTaskSetFull         Status = 0x28
	StatusACAActive           Status = 0x30
	StatusTaskAborted         Status = 0x40
)

func (s Status) String() string {
	switch s {
	case StatusGood:
		return "GOOD"
	case StatusCheckCondition:
		return "CHECK CONDITION"
	case StatusConditionMet:
		return "CONDITION MET"
	case StatusBusy:
		return "BUSY"
	case StatusReservationConflict:
		return "RESERVATION CONFLICT"
	case StatusTaskSetFull:
		return "TASK SET FULL"
	case StatusACAActive:
		return "ACA ACTIVE"
	case StatusTaskAborted:
		return "TASK ABORTED"
	}
	return fmt.Sprintf("status 0x%02x", uint8(s))
}

// TaskAttr is the SAM task attribute of a command.
type TaskAttr uint8

const (
	TaskSimple      TaskAttr = 0
	TaskOrdered     TaskAttr = 1
	TaskHeadOfQueue TaskAttr = 2
	TaskACA         TaskAttr = 3
)

// Nexus identifies the I_T nexus a command arrives on. The transport fills
// it once per session; scsi/ uses it for reservations, unit attentions and
// REPORT TARGET PORT GROUPS / VPD 0x83 port identifiers.
type Nexus struct {
	// InitiatorName is the iSCSI initiator name (iqn...).
	InitiatorName string
	// InitiatorPort is the SCSI initiator port name: name + ",i,0x" + ISID
	// in hex, as RFC 7143 section 4.4.1 defines it.
	InitiatorPort string
	// TargetName and TargetPort likewise (TargetPort = name + ",t,0x" + TPGT).
	TargetName string
	TargetPort string
	// RelativeTargetPort is the relative port identifier of the target
	// port (1-based, unique within the SCSI target device).
	RelativeTargetPort uint16
	// TargetPortGroup is the target port group the port belongs to.
	TargetPortGroup uint16
}

// Key returns a string that uniquely names the I_T nexus.
func (n *Nexus) Key() string { return n.InitiatorPort + "|" + n.TargetPort }

// Command is one SCSI command as the transport hands it to the device
// server. The transport has already collected all Data-Out (Data); it never
// interprets the CDB beyond what its protocol needs.
type Command struct {
	Nexus *Nexus
	// LUN is the logical unit number (flat, decoded from the SAM LUN
	// structure by the transport).
	LUN  uint64
	CDB  []byte
	Attr TaskAttr
	// Tag is the transport's task tag (iSCSI ITT), unique per nexus among
	// outstanding tasks.
	Tag uint32
	// Data is the Data-Out buffer (len = data the initiator sent).
	Data []byte
	// DataInLen is the initiator's expected Data-In length: the device
	// server may return more, the transport truncates and reports residual.
	DataInLen uint32
	// DataOutLen is the initiator's expected Data-Out length.
	DataOutLen uint32
}

// Response is the outcome of a command.
type Response struct {
	Status Status
	// Sense is fixed-format sense data (SPC-4 4.5.3) when Status is CHECK
	// CONDITION.
	Sense []byte
	// Data is the Data-In payload (may be longer than the allocation the
	// initiator asked for; the transport truncates).
	Data []byte
}

// TMFResponse is the outcome of a task management function (SAM-5 7.10).
type TMFResponse uint8

const (
	TMFComplete        TMFResponse = 0   // FUNCTION COMPLETE
	TMFTaskNotExist    TMFResponse = 1   // task does not exist
	TMFLUNNotExist     TMFResponse = 2   // LUN does not exist
	TMFTaskAllegiant   TMFResponse = 3   // task still allegiant
	TMFReassignNotSupp TMFResponse = 4   // task allegiance reassignment not supported
	TMFNotSupported    TMFResponse = 5   // function not supported
	TMFAuthFailed      TMFResponse = 6   // function authorization failed
	TMFRejected        TMFResponse = 255 // function rejected
)
