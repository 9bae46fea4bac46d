package scsi

import (
	"bytes"
	"sync"
	"sync/atomic"
)

// Mode pages (SPC-4 7.5, SBC-3 6.4). Each page is kept whole, header
// included, as its default value, its changeable-bits mask and its
// current value. Saved values are not supported.
type modePage struct {
	page, sub byte
	def       []byte
	mask      []byte
}

// modeState is the per-LU mode parameter state.
type modeState struct {
	mu    sync.Mutex
	pages []modePage // in the order MODE SENSE returns them
	cur   [][]byte   // current values, parallel to pages

	// bits mirrors the current values the data path reads on every
	// command, without taking mu.
	bits atomic.Uint32
}

const (
	modeWCE    = 1 << iota // caching page WCE
	modeDSense             // control page D_SENSE
	modeSWP                // control page SWP
)

func newPage(page, sub byte, length int) []byte {
	if sub != 0 {
		b := make([]byte, 4+length)
		b[0], b[1] = 0x40|page, sub
		put16(b[2:], uint16(length))
		return b
	}
	b := make([]byte, 2+length)
	b[0], b[1] = page, byte(length)
	return b
}

func (s *modeState) init(lu *LU) {
	add := func(def []byte, maskAt map[int]byte) {
		mask := make([]byte, len(def))
		for i, m := range maskAt {
			mask[i] = m
		}
		p := modePage{page: def[0] & 0x3f, def: def, mask: mask}
		if def[0]&0x40 != 0 {
			p.sub = def[1]
		}
		s.pages = append(s.pages, p)
		s.cur = append(s.cur, bytes.Clone(def))
	}
	add(newPage(0x01, 0, 0x0a), nil) // read-write error recovery
	add(newPage(0x02, 0, 0x0e), nil) // disconnect-reconnect
	caching := newPage(0x08, 0, 0x12)
	if lu.cfg.WriteCache {
		caching[2] |= 0x04 // WCE
	}
	add(caching, map[int]byte{2: 0x04})
	control := newPage(0x0a, 0, 0x0a)
	control[3] = 0x10                            // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering
	put16(control[8:], 0xffff)                   // BUSY TIMEOUT PERIOD: unlimited
	add(control, map[int]byte{2: 0x04, 4: 0x08}) // D_SENSE, SWP
	add(newPage(0x0a, 0x01, 0x1c), nil)          // control extension
	add(newPage(0x1a, 0, 0x26), nil)             // power condition
	ie := newPage(0x1c, 0, 0x0a)
	ie[2] = 0x08 // DEXCPT: informational exceptions reporting disabled
	add(ie, nil)
	s.refresh()
}

// refresh recomputes bits from the current pages (mu held or init).
func (s *modeState) refresh() {
	var v uint32
	for i, p := range s.pages {
		c := s.cur[i]
		switch {
		case p.page == 0x08 && p.sub == 0 && c[2]&0x04 != 0:
			v |= modeWCE
		case p.page == 0x0a && p.sub == 0:
			if c[2]&0x04 != 0 {
				v |= modeDSense
			}
			if c[4]&0x08 != 0 {
				v |= modeSWP
			}
		}
	}
	s.bits.Store(v)
}

func (s *modeState) writeCache() bool           { return s.bits.Load()&modeWCE != 0 }
func (s *modeState) descriptorSense() bool      { return s.bits.Load()&modeDSense != 0 }
func (s *modeState) softwareWriteProtect() bool { return s.bits.Load()&modeSWP != 0 }

func modeCommands() []opInfo {
	return []opInfo{
		{name: "MODE SENSE(6)", opcode: opModeSense6, cdbLen: 6, fn: cmdModeSense,
			flags: opReadLike | opAllowedStandby | opNoMedium,
			usage: []byte{opModeSense6, 0x08, 0xff, 0xff, 0xff, 0x00}},
		{name: "MODE SENSE(10)", opcode: opModeSense10, cdbLen: 10, fn: cmdModeSense,
			flags: opReadLike | opAllowedStandby | opNoMedium,
			usage: []byte{opModeSense10, 0x18, 0xff, 0xff, 0x00, 0x00, 0x00, 0xff, 0xff, 0x00}},
		{name: "MODE SELECT(6)", opcode: opModeSelect6, cdbLen: 6, fn: cmdModeSelect,
			flags: opAllowedStandby | opNoMedium,
			usage: []byte{opModeSelect6, 0x11, 0x00, 0x00, 0xff, 0x00}},
		{name: "MODE SELECT(10)", opcode: opModeSelect10, cdbLen: 10, fn: cmdModeSelect,
			flags: opAllowedStandby | opNoMedium,
			usage: []byte{opModeSelect10, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x00}},
	}
}

// cmdModeSense is MODE SENSE (6) and (10) (SPC-4 6.11/6.12).
func cmdModeSense(t *task) error {
	lu, cdb := t.lu, t.cdb
	ten := len(cdb) == 10
	dbd := cdb[1]&0x08 != 0
	llbaa := ten && cdb[1]&0x10 != 0
	pc := cdb[2] >> 6
	code, sub := cdb[2]&0x3f, cdb[3]
	alloc := int(cdb[4])
	if ten {
		alloc = int(be16(cdb[7:]))
	}
	if pc == 3 {
		return NewSense(KeyIllegalRequest, ASCSavingParamsNotSupported)
	}

	s := &lu.mode
	s.mu.Lock()
	var pages []byte
	found := false
	for i, p := range s.pages {
		var match bool
		switch {
		case code == 0x3f && sub == 0xff:
			match = true
		case code == 0x3f && sub == 0x00:
			match = p.sub == 0
		case sub == 0xff:
			match = p.page == code
		default:
			match = p.page == code && p.sub == sub
		}
		if !match {
			continue
		}
		found = true
		var v []byte
		switch pc {
		case 0:
			v = s.cur[i]
		case 1:
			v = bytes.Clone(p.mask)
			v[0], v[1] = p.def[0], p.def[1]
			if p.sub != 0 {
				v[2], v[3] = p.def[2], p.def[3]
			}
		case 2:
			v = p.def
		}
		pages = append(pages, v...)
	}
	s.mu.Unlock()
	if !found {
		if code == 0x3f || s.hasPage(code) {
			return InvalidCDBField(3, -1)
		}
		return InvalidCDBField(2, 5)
	}

	var bd []byte
	if !dbd {
		if llbaa {
			bd = make([]byte, 16)
			if pc != 1 {
				put64(bd, lu.blocks)
				put32(bd[12:], lu.cfg.BlockSize)
			}
		} else {
			bd = make([]byte, 8)
			if pc != 1 {
				n := lu.blocks
				if n > 0xffffffff {
					n = 0xffffffff
				}
				put32(bd, uint32(n))
				put32(bd[4:], lu.cfg.BlockSize) // byte 4 reserved, 5-7 block length
			}
		}
	}
	dsp := byte(0x10) // DPOFUA
	if lu.writeProtected() {
		dsp |= 0x80 // WP
	}
	var b []byte
	if ten {
		b = make([]byte, 8, 8+len(bd)+len(pages))
		b[3] = dsp
		if llbaa && !dbd {
			b[4] = 0x01 // LONGLBA
		}
		put16(b[6:], uint16(len(bd)))
		b = append(append(b, bd...), pages...)
		put16(b, uint16(len(b)-2))
	} else {
		b = make([]byte, 4, 4+len(bd)+len(pages))
		b[2] = dsp
		b[3] = byte(len(bd))
		b = append(append(b, bd...), pages...)
		if len(b) > 256 {
			b = b[:256]
		}
		b[0] = byte(len(b) - 1)
	}
	t.dataIn(b, alloc)
	return nil
}

func (s *modeState) hasPage(code byte) bool {
	for _, p := range s.pages {
		if p.page == code {
			return true
		}
	}
	return false
}

// cmdModeSelect is MODE SELECT (6) and (10) (SPC-4 6.9/6.10): only bits
// the changeable mask allows may differ from the current values; the
// whole parameter list is checked before anything changes. Other nexuses
// get MODE PARAMETERS CHANGED.
func cmdModeSelect(t *task) error {
	lu, cdb := t.lu, t.cdb
	ten := len(cdb) == 10
	if cdb[1]&0x10 == 0 {
		return InvalidCDBField(1, 4) // PF=0: vendor-specific pages are not supported
	}
	if cdb[1]&0x01 != 0 {
		return NewSense(KeyIllegalRequest, ASCSavingParamsNotSupported)
	}
	pll, hdr := int(cdb[4]), 4
	if ten {
		pll, hdr = int(be16(cdb[7:])), 8
	}
	if pll == 0 {
		return nil
	}
	data, err := t.dataOut(pll)
	if err != nil {
		return err
	}
	if pll < hdr {
		return NewSense(KeyIllegalRequest, ASCParameterListLength)
	}
	bdl, long := int(data[3]), false
	if ten {
		bdl, long = int(be16(data[6:])), data[4]&0x01 != 0
	}
	if data[1] != 0 { // MEDIUM TYPE
		return InvalidParamField(1, -1)
	}
	if hdr+bdl > pll {
		return NewSense(KeyIllegalRequest, ASCParameterListLength)
	}
	if bdl != 0 {
		dsz := 8
		if long {
			dsz = 16
		}
		if bdl != dsz {
			if ten {
				return InvalidParamField(6, -1)
			}
			return InvalidParamField(3, -1)
		}
		d := data[hdr : hdr+bdl]
		bl := be24(d[5:])
		if long {
			bl = be32(d[12:])
		}
		if bl != lu.cfg.BlockSize {
			return InvalidParamField(hdr+bdl-3, -1)
		}
	}

	s := &lu.mode
	s.mu.Lock()
	defer s.mu.Unlock()
	type update struct {
		idx int
		v   []byte
	}
	var ups []update
	for off := hdr + bdl; off < pll; {
		if pll-off < 2 {
			return NewSense(KeyIllegalRequest, ASCParameterListLength)
		}
		code, spf := data[off]&0x3f, data[off]&0x40 != 0
		var sub byte
		plen := int(data[off+1]) + 2
		if spf {
			if pll-off < 4 {
				return NewSense(KeyIllegalRequest, ASCParameterListLength)
			}
			sub, plen = data[off+1], int(be16(data[off+2:]))+4
		}
		if off+plen > pll {
			return NewSense(KeyIllegalRequest, ASCParameterListLength)
		}
		idx := -1
		for i, p := range s.pages {
			if p.page == code && p.sub == sub {
				idx = i
			}
		}
		if idx < 0 {
			return InvalidParamField(off, 5)
		}
		p, cur := s.pages[idx], s.cur[idx]
		if plen != len(p.def) {
			if spf {
				return InvalidParamField(off+2, -1)
			}
			return InvalidParamField(off+1, -1)
		}
		v := bytes.Clone(data[off : off+plen])
		v[0] &^= 0x80 // PS is reserved in MODE SELECT
		start := 2
		if spf {
			start = 4
		}
		for i := start; i < plen; i++ {
			if (v[i]^cur[i])&^p.mask[i] != 0 {
				return InvalidParamField(off+i, -1)
			}
		}
		ups = append(ups, update{idx, v})
		off += plen
	}
	changed := false
	for _, u := range ups {
		if !bytes.Equal(s.cur[u.idx], u.v) {
			s.cur[u.idx] = u.v
			changed = true
		}
	}
	s.refresh()
	if changed {
		lu.addUAAll(t.nexusKey(), ASCModeParametersChanged)
	}
	return nil
}
