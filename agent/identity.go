package agent

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strings"
)

// identityOUI fills the IEEE company ID field of the NAA designators hatgt
// makes up. hatgt has no registered OUI, so it uses one with the "locally
// administered" bit (0x02 in the first octet) set, which no registered
// company ID has.
const identityOUI = 0x026874

// LUNIdentity derives the unit serial number (VPD page 0x80) and the NAA
// IEEE Registered Extended designator (VPD page 0x83, 16 bytes) of a LUN
// from the target name and LUN number alone. A restart, or another node of
// a cluster serving the same LUN, therefore reports the same identity, which
// is what multipath and every initiator's disk identification rely on.
func LUNIdentity(targetName string, lun uint64) (serial string, naa [16]byte) {
	h := sha256.New()
	h.Write([]byte("hatgt lun identity v1\x00"))
	h.Write([]byte(strings.ToLower(targetName)))
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], lun)
	h.Write(n[:])
	sum := h.Sum(nil)

	return fmt.Sprintf("%X", sum[:8]), naaDesignator(sum[8:21])
}

// ScsiIDDesignator derives the NAA designator of VPD page 0x83 from an
// IET ScsiId, as LUNIdentity does from the target name and LUN number:
// LUNs with the same ScsiId, in any target or on any node, report the same
// identity (what IET's ScsiId was for: one disk multipathed through
// several targets).
func ScsiIDDesignator(id string) [16]byte {
	sum := sha256.Sum256([]byte("hatgt scsi id v1\x00" + id))
	return naaDesignator(sum[:13])
}

// naaDesignator builds an NAA 6 designator (4-bit NAA, 24-bit IEEE company
// ID, 36-bit vendor specific identifier, 64-bit extension) from hatgt's
// company ID and the 100 bits of the 13 bytes v (the high nibble of v[0]
// unused).
func naaDesignator(v []byte) (naa [16]byte) {
	naa[0] = 0x60 | identityOUI>>20&0x0f
	naa[1] = identityOUI >> 12 & 0xff
	naa[2] = identityOUI >> 4 & 0xff
	naa[3] = identityOUI&0x0f<<4 | v[0]&0x0f
	copy(naa[4:], v[1:13])
	return naa
}
