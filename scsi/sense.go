package scsi

import "fmt"

// SenseKey values (SPC-4 table 45).
type SenseKey uint8

const (
	KeyNoSense        SenseKey = 0x0
	KeyRecoveredError SenseKey = 0x1
	KeyNotReady       SenseKey = 0x2
	KeyMediumError    SenseKey = 0x3
	KeyHardwareError  SenseKey = 0x4
	KeyIllegalRequest SenseKey = 0x5
	KeyUnitAttention  SenseKey = 0x6
	KeyDataProtect    SenseKey = 0x7
	KeyBlankCheck     SenseKey = 0x8
	KeyCopyAborted    SenseKey = 0xa
	KeyAbortedCommand SenseKey = 0xb
	KeyVolumeOverflow SenseKey = 0xd
	KeyMiscompare     SenseKey = 0xe
)

// ASC/ASCQ pairs used by the device server, as one 16-bit value (ASC<<8|ASCQ).
type ASC uint16

const (
	ASCNoAdditional              ASC = 0x0000
	ASCLUNotReadyCauseNotReport  ASC = 0x0400
	ASCLUNotReadyManualIntervent ASC = 0x0403
	ASCLUNotReadyFormat          ASC = 0x0404
	ASCLUNotReadyTransition      ASC = 0x040a // ASYMMETRIC ACCESS STATE TRANSITION
	ASCLUNotAccessibleStandby    ASC = 0x040b // TARGET PORT IN STANDBY STATE
	ASCLUNotAccessibleUnavail    ASC = 0x040c // TARGET PORT IN UNAVAILABLE STATE
	ASCLUNotReadySanitize        ASC = 0x041b
	ASCWriteError                ASC = 0x0c00
	ASCUnrecoveredReadError      ASC = 0x1100
	ASCMiscompareDuringVerify    ASC = 0x1d00
	ASCParameterListLength       ASC = 0x1a00
	ASCInvalidOpcode             ASC = 0x2000
	ASCAccessDeniedNoAccessRight ASC = 0x2002 // ACCESS DENIED - NO ACCESS RIGHTS
	ASCLBAOutOfRange             ASC = 0x2100
	ASCInvalidFieldInCDB         ASC = 0x2400
	ASCLUNotSupported            ASC = 0x2500
	ASCInvalidFieldInParam       ASC = 0x2600
	ASCParameterNotSupported     ASC = 0x2601
	ASCParameterValueInvalid     ASC = 0x2602
	ASCInvalidReleaseOfPR        ASC = 0x2604
	ASCTooManyTargetDescriptors  ASC = 0x2606
	ASCUnsupportedTargetDescType ASC = 0x2607
	ASCTooManySegmentDescriptors ASC = 0x2608
	ASCUnsupportedSegDescType    ASC = 0x2609
	ASCInsufficientRegResources  ASC = 0x5504
	ASCWriteProtected            ASC = 0x2700
	ASCPowerOnReset              ASC = 0x2900
	ASCBusDeviceReset            ASC = 0x2903 // BUS DEVICE RESET FUNCTION OCCURRED
	ASCITNexusLoss               ASC = 0x2907
	ASCParametersChanged         ASC = 0x2a00
	ASCModeParametersChanged     ASC = 0x2a01
	ASCReservationsPreempted     ASC = 0x2a03
	ASCReservationsReleased      ASC = 0x2a04
	ASCRegistrationsPreempted    ASC = 0x2a05
	ASCAsymAccessStateChanged    ASC = 0x2a06
	ASCCapacityDataChanged       ASC = 0x2a09
	ASCCommandsClearedByAnother  ASC = 0x2f00
	ASCSavingParamsNotSupported  ASC = 0x3900
	ASCMediumNotPresent          ASC = 0x3a00
	ASCReportedLUNsDataChanged   ASC = 0x3f0e
	ASCInquiryDataChanged        ASC = 0x3f03
	ASCInternalTargetFailure     ASC = 0x4400
	ASCMediumRemovalPrevented    ASC = 0x5302
	ASCInvalidCommandOperCode    ASC = 0x2000
	ASCCommandSequenceError      ASC = 0x2c00
	ASCCopyTargetDeviceNotReach  ASC = 0x0d02
	ASCSpaceAllocFailedWriteProt ASC = 0x2707
	ASCOverlappedCommands        ASC = 0x4e00
	ASCInvalidMessageError       ASC = 0x4900
	ASCInvalidFieldInIU          ASC = 0x0e03 // INVALID FIELD IN COMMAND INFORMATION UNIT
	ASCInitCommandRequired       ASC = 0x0402 // LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED
	ASCMicrocodeChanged          ASC = 0x3f01
)

// SenseError is a command failure with sense data: the device server
// answers CHECK CONDITION with it. Find it with errors.As.
type SenseError struct {
	Key SenseKey
	ASC ASC
	// Info, when InfoValid, goes into the INFORMATION field (e.g. the
	// first LBA that miscompared, or the offset of a miscompare).
	Info      uint64
	InfoValid bool
	// SKSV and FieldPointer give the sense-key specific field pointer for
	// ILLEGAL REQUEST (SPC-4 4.5.2.4.2): CD=true means the CDB, BitValid
	// with Bit gives the bit.
	SKSV         bool
	CD           bool
	BitValid     bool
	Bit          uint8
	FieldPointer uint16
}

func (e *SenseError) Error() string {
	return fmt.Sprintf("scsi: sense key 0x%x asc/ascq 0x%02x/0x%02x", uint8(e.Key), uint8(e.ASC>>8), uint8(e.ASC))
}

// NewSense returns a SenseError with the given key and ASC/ASCQ.
func NewSense(key SenseKey, asc ASC) *SenseError { return &SenseError{Key: key, ASC: asc} }

// InvalidCDBField returns ILLEGAL REQUEST, INVALID FIELD IN CDB with a field
// pointer to byte (and bit, if bit >= 0) of the CDB.
func InvalidCDBField(byteOff int, bit int) *SenseError {
	e := &SenseError{Key: KeyIllegalRequest, ASC: ASCInvalidFieldInCDB, SKSV: true, CD: true, FieldPointer: uint16(byteOff)}
	if bit >= 0 {
		e.BitValid, e.Bit = true, uint8(bit)
	}
	return e
}

// InvalidParamField returns ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST
// with a field pointer into the parameter data.
func InvalidParamField(byteOff int, bit int) *SenseError {
	e := &SenseError{Key: KeyIllegalRequest, ASC: ASCInvalidFieldInParam, SKSV: true, FieldPointer: uint16(byteOff)}
	if bit >= 0 {
		e.BitValid, e.Bit = true, uint8(bit)
	}
	return e
}

// Fixed returns the fixed-format sense data (SPC-4 4.5.3), 18 bytes.
func (e *SenseError) Fixed() []byte {
	b := make([]byte, 18)
	b[0] = 0x70
	if e.InfoValid && e.Info <= 0xffffffff { // else only descriptor format can carry it
		b[0] |= 0x80
		i := e.Info
		b[3], b[4], b[5], b[6] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
	}
	b[2] = byte(e.Key) & 0x0f
	b[7] = 10
	b[12] = byte(e.ASC >> 8)
	b[13] = byte(e.ASC)
	if e.SKSV {
		b[15] = 0x80
		if e.CD {
			b[15] |= 0x40
		}
		if e.BitValid {
			b[15] |= 0x08 | (e.Bit & 0x7)
		}
		b[16] = byte(e.FieldPointer >> 8)
		b[17] = byte(e.FieldPointer)
	}
	return b
}

// Descriptor returns the descriptor-format sense data (SPC-4 4.5.2): an
// information descriptor when InfoValid and a sense-key specific
// descriptor when SKSV.
func (e *SenseError) Descriptor() []byte {
	b := make([]byte, 8, 8+12+8)
	b[0] = 0x72
	b[1] = byte(e.Key) & 0x0f
	b[2] = byte(e.ASC >> 8)
	b[3] = byte(e.ASC)
	if e.InfoValid {
		d := make([]byte, 12)
		d[0], d[1], d[2] = 0x00, 0x0a, 0x80
		for i := 0; i < 8; i++ {
			d[4+i] = byte(e.Info >> (56 - 8*i))
		}
		b = append(b, d...)
	}
	if e.SKSV {
		f := e.Fixed()
		b = append(b, 0x02, 0x06, 0, 0, f[15], f[16], f[17], 0)
	}
	b[7] = byte(len(b) - 8)
	return b
}

// StatusError makes a command end with a status other than CHECK
// CONDITION and GOOD (RESERVATION CONFLICT, BUSY, TASK SET FULL...).
type StatusError struct{ Status Status }

func (e *StatusError) Error() string { return "scsi: " + e.Status.String() }

// ErrReservationConflict ends a command with RESERVATION CONFLICT.
var ErrReservationConflict = &StatusError{Status: StatusReservationConflict}
