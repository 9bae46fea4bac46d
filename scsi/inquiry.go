package scsi

func inquiryCommands() []opInfo {
	return []opInfo{
		{name: "INQUIRY", opcode: opInquiry, cdbLen: 6, fn: cmdInquiry,
			flags: flagsAlwaysAllowed | opNoUA,
			usage: []byte{opInquiry, 0x01, 0xff, 0xff, 0xff, 0x00}},
	}
}

// Version descriptors (SPC-4 table 125) claimed in standard INQUIRY data.
const (
	versionSAM5  = 0x00a0
	versionISCSI = 0x0960
	versionSPC4  = 0x0460
	versionSBC3  = 0x04c0
)

// cmdInquiry is INQUIRY (SPC-4 6.6): standard data or, with EVPD, a
// vital product data page. For an absent LUN (t.lu nil) the standard data
// says peripheral qualifier 011b, device type 1Fh.
func cmdInquiry(t *task) error {
	cdb := t.cdb
	if cdb[1]&0x02 != 0 { // CMDDT, obsolete
		return InvalidCDBField(1, 1)
	}
	alloc := int(be16(cdb[3:]))
	if cdb[1]&0x01 == 0 {
		if cdb[2] != 0 {
			return InvalidCDBField(2, -1)
		}
		t.dataIn(t.standardInquiry(), alloc)
		return nil
	}
	if t.lu == nil {
		return NewSense(KeyIllegalRequest, ASCLUNotSupported)
	}
	page, err := t.vpdPage(cdb[2])
	if err != nil {
		return err
	}
	t.dataIn(page, alloc)
	return nil
}

// standardInquiry builds the 96-byte standard INQUIRY data.
func (t *task) standardInquiry() []byte {
	b := make([]byte, 96)
	lu := t.lu
	if lu == nil {
		b[0] = 0x7f // qualifier 011b: no LU can be addressed here; type 1Fh
	}
	b[2] = 0x06        // SPC-4
	b[3] = 0x10 | 0x02 // HISUP, RESPONSE DATA FORMAT 2
	b[4] = byte(len(b) - 5)
	if lu != nil {
		b[5] = (lu.tpgs()&3)<<4 | 0x08 // TPGS, 3PC (EXTENDED COPY)
	}
	b[7] = 0x02 // CMDQUE
	vendor, product, rev := "HATGT", "VIRTUAL-DISK", "0001"
	if lu != nil {
		vendor, product, rev = lu.cfg.VendorID, lu.cfg.ProductID, lu.cfg.Revision
	}
	copy(b[8:16], asciiField(vendor, 8))
	copy(b[16:32], asciiField(product, 16))
	copy(b[32:36], asciiField(rev, 4))
	for i, v := range []uint16{versionSAM5, versionISCSI, versionSPC4, versionSBC3} {
		put16(b[58+2*i:], v)
	}
	return b
}

// asciiField returns s as an n-byte INQUIRY field: printable ASCII only
// (SPC-4 4.4.1), left-aligned, padded with spaces.
func asciiField(s string, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = ' '
	}
	j := 0
	for i := 0; i < len(s) && j < n; i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			c = '_'
		}
		b[j] = c
		j++
	}
	return b
}
