package scsi

import (
	"encoding/binary"
	"strings"
)

// iSCSI TransportIDs (SPC-4 7.6.4.6): byte 0 has the FORMAT CODE in bits
// 7-6 and the PROTOCOL IDENTIFIER (5 = iSCSI) in bits 3-0; bytes 2-3 the
// ADDITIONAL LENGTH (a multiple of 4, at least 16); then a NUL-terminated
// UTF-8 string, padded with NULs: the iSCSI name (format 00b, the
// initiator device) or name + ",i,0x" + ISID in hex (format 01b, one
// initiator port).
const (
	protocolISCSI    = 0x5
	tidFormatDevice  = 0x0
	tidFormatPort    = 0x1
	tidMinLength     = 20
	tidISIDSeparator = ",i,0x"
	tidMaxNameLength = 223 // RFC 7143 3.2.6.1
	tidISIDHexDigits = 12
)

// parseTransportID decodes the iSCSI TransportID at the start of b. off
// is b's offset in the parameter list, for the sense field pointer. It
// returns the initiator it names (ISID empty for format 00b) and its
// length.
func parseTransportID(b []byte, off int) (PRPort, int, error) {
	var p PRPort
	if len(b) < 4 {
		return p, 0, NewSense(KeyIllegalRequest, ASCParameterListLength)
	}
	if b[0]&0x0f != protocolISCSI {
		return p, 0, InvalidParamField(off, 3)
	}
	format := b[0] >> 6
	if format != tidFormatDevice && format != tidFormatPort {
		return p, 0, InvalidParamField(off, 7)
	}
	n := 4 + int(binary.BigEndian.Uint16(b[2:4]))
	if n < tidMinLength || (n-4)%4 != 0 {
		return p, 0, InvalidParamField(off+2, -1)
	}
	if n > len(b) {
		return p, 0, NewSense(KeyIllegalRequest, ASCParameterListLength)
	}
	s := string(b[4:n])
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	} else {
		return p, 0, InvalidParamField(off+4, -1) // not NUL-terminated
	}
	s = strings.ToLower(s)
	if format == tidFormatPort {
		i := strings.Index(s, tidISIDSeparator)
		if i <= 0 {
			return p, 0, InvalidParamField(off+4, -1)
		}
		isid := s[i+len(tidISIDSeparator):]
		if len(isid) != tidISIDHexDigits || strings.Trim(isid, "0123456789abcdef") != "" {
			return p, 0, InvalidParamField(off+4+i, -1)
		}
		s, p.ISID = s[:i], isid
	}
	if s == "" || len(s) > tidMaxNameLength || strings.ContainsAny(s, ", ") {
		return p, 0, InvalidParamField(off+4, -1)
	}
	p.InitiatorName = s
	return p, n, nil
}

// appendTransportID appends the iSCSI TransportID of p's initiator: format
// 01b when the ISID is known, 00b otherwise.
func appendTransportID(b []byte, p *PRPort) []byte {
	s := p.InitiatorName
	hdr := byte(protocolISCSI)
	if p.ISID != "" {
		s += tidISIDSeparator + p.ISID
		hdr |= tidFormatPort << 6
	}
	n := len(s) + 1 // NUL
	n = (n + 3) &^ 3
	if n < tidMinLength-4 {
		n = tidMinLength - 4
	}
	b = append(b, hdr, 0, byte(n>>8), byte(n))
	b = append(b, s...)
	return append(b, make([]byte, n-len(s))...)
}
