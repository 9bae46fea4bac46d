package scsi

import (
	"encoding/hex"
	"hash/fnv"
)

// vpdPages lists the supported VPD pages in ascending order (SPC-4 7.8).
var vpdPages = []byte{0x00, 0x80, 0x83, 0x86, 0x8f, 0xb0, 0xb1, 0xb2}

// vpdPage builds VPD page code for t's LU and nexus.
func (t *task) vpdPage(code byte) ([]byte, error) {
	lu := t.lu
	var body []byte
	switch code {
	case 0x00:
		body = append([]byte(nil), vpdPages...)
	case 0x80:
		body = []byte(lu.serial())
	case 0x83:
		body = t.deviceIdentification()
	case 0x86:
		body = make([]byte, 0x3c)
		body[1] = 0x04 | 0x02 | 0x01 // HEADSUP, ORDSUP, SIMPSUP
		body[2] = 0x01               // V_SUP: volatile cache
		body[3] = 0x01               // LUICLR
	case 0x8f:
		return lu.thirdPartyCopyVPD(), nil
	case 0xb0:
		body = lu.blockLimits()
	case 0xb1:
		body = make([]byte, 0x3c)
		put16(body, 0x0001) // MEDIUM ROTATION RATE: non-rotating
		body[3] = 0x40      // WABEREQ 01b: reads after a BLOCK ERASE sanitize succeed
	case 0xb2:
		body = make([]byte, 4)
		if lu.thin() {
			body[1] = 0x80 | 0x40 | 0x20 | 0x04 // LBPU, LBPWS, LBPWS10, LBPRZ
			body[2] = 0x02                      // PROVISIONING TYPE: thin
		}
	default:
		return nil, InvalidCDBField(2, -1)
	}
	b := make([]byte, 4, 4+len(body))
	b[1] = code
	put16(b[2:], uint16(len(body)))
	return append(b, body...), nil
}

// serial is the unit serial number (VPD 0x80): the configured one, or one
// derived from the device identifier.
func (lu *LU) serial() string {
	if lu.cfg.SerialNumber != "" {
		return string(asciiField(lu.cfg.SerialNumber, len(lu.cfg.SerialNumber)))
	}
	id := lu.deviceID()
	return hex.EncodeToString(id[:8])
}

// deviceID returns the 16-byte NAA IEEE Registered Extended designator:
// the configured one, or (when unset) one derived from the serial number
// so it is stable and the same on every node that has the same config.
func (lu *LU) deviceID() [16]byte {
	id := lu.cfg.DeviceID
	if id != ([16]byte{}) {
		return id
	}
	h := fnv.New128a()
	h.Write([]byte(lu.cfg.SerialNumber))
	copy(id[:], h.Sum(nil))
	id[0] = 0x60 | id[0]&0x0f // NAA 6
	return id
}

// deviceIdentification is the body of VPD 0x83 (SPC-4 7.8.6).
func (t *task) deviceIdentification() []byte {
	lu := t.lu
	var b []byte
	desc := func(codeSet, assocType byte, piv bool, v []byte) {
		h := []byte{codeSet, assocType, 0, byte(len(v))}
		if piv {
			h[0] = 0x50 | codeSet // PROTOCOL IDENTIFIER 5h: iSCSI
			h[1] |= 0x80          // PIV
		}
		b = append(b, h...)
		b = append(b, v...)
	}
	id := lu.deviceID()
	desc(1, 0x03, false, id[:])                                                  // LU, NAA
	desc(2, 0x01, false, append(asciiField(lu.cfg.VendorID, 8), lu.serial()...)) // LU, T10 vendor ID
	n := t.nexus
	if n.RelativeTargetPort != 0 {
		v := make([]byte, 4)
		put16(v[2:], n.RelativeTargetPort)
		desc(1, 0x14, true, v) // target port, relative target port
	}
	if n.TargetPortGroup != 0 {
		v := make([]byte, 4)
		put16(v[2:], n.TargetPortGroup)
		desc(1, 0x15, true, v) // target port, target port group
	}
	if n.TargetPort != "" {
		desc(3, 0x18, true, scsiNameString(n.TargetPort)) // target port, SCSI name
	}
	if n.TargetName != "" {
		desc(3, 0x28, true, scsiNameString(n.TargetName)) // target device, SCSI name
	}
	return b
}

// scsiNameString returns s null-terminated and padded to a multiple of 4
// bytes (SPC-4 7.8.6.11).
func scsiNameString(s string) []byte {
	n := (len(s) + 4) &^ 3
	if n > 252 {
		n = 252
	}
	b := make([]byte, n)
	copy(b[:n-1], s)
	return b
}

// blockLimits is the body of the Block Limits VPD page (SBC-3 6.5.3).
func (lu *LU) blockLimits() []byte {
	b := make([]byte, 0x3c)
	if writeSameNonZero {
		b[0] = 0x01 // WSNZ: WRITE SAME with 0 blocks is not supported
	}
	b[1] = maxCompareAndWriteLength
	// OPTIMAL TRANSFER LENGTH GRANULARITY is the physical block, as READ
	// CAPACITY(16) reports it (Linux ignores a granularity that is not a
	// multiple of the physical block, with a warning).
	put16(b[2:], uint16(1)<<lu.physicalExponent())
	put32(b[4:], uint32(lu.maxTransferBlocks()))
	put32(b[8:], uint32((1<<20)>>lu.shift)) // OPTIMAL TRANSFER LENGTH: 1 MiB
	put32(b[12:], uint32(lu.maxTransferBlocks()))
	if lu.thin() {
		// Reported limits may be lower than what UNMAP accepts; at most
		// 1M blocks keeps initiators' requests small.
		unmap := uint32(maxUnmapLBACount)
		if unmap > 1<<20 {
			unmap = 1 << 20
		}
		put32(b[16:], unmap)
		put32(b[20:], maxUnmapDescriptorCount)
		// OPTIMAL UNMAP GRANULARITY: a hole smaller than the 4 KiB
		// physical block frees nothing in the file below.
		put32(b[24:], uint32(1)<<lu.physicalExponent())
	}
	put64(b[32:], lu.maxWriteSameBlocks())
	put32(b[40:], maxAtomicTransferLength)
	put32(b[44:], atomicAlignment)
	put32(b[48:], atomicGranularity)
	return b
}
