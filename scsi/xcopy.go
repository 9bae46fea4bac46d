package scsi

import (
	"bytes"
	"encoding/binary"
	"sync"
)

// EXTENDED COPY (LID1, SPC-4 6.4) and RECEIVE COPY RESULTS (6.23, the LID1
// service actions): the copy manager of an LU copies block ranges between
// LUs of the same Device - named by their NAA designator in identification
// CSCD descriptors (type E4h) - using block-to-block segment descriptors
// (type 02h). Copies run to completion inside the command; results of a
// list with LIST ID USAGE 00b are held per I_T nexus for RECEIVE COPY
// RESULTS.
func copyCommands() []opInfo {
	return []opInfo{
		{name: "EXTENDED COPY(LID1)", opcode: 0x83, sa: 0x00, hasSA: true, cdbLen: 16,
			usage: []byte{0x83, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x07},
			flags: opWrite, fn: extendedCopy},
		{name: "RECEIVE COPY RESULTS(COPY STATUS)", opcode: 0x84, sa: 0x00, hasSA: true, cdbLen: 16,
			usage: rcrUsage(0x00), flags: opReadLike, fn: receiveCopyResults},
		{name: "RECEIVE COPY RESULTS(OPERATING PARAMETERS)", opcode: 0x84, sa: 0x03, hasSA: true, cdbLen: 16,
			usage: rcrUsage(0x03), flags: opReadLike, fn: receiveCopyResults},
		{name: "RECEIVE COPY RESULTS(FAILED SEGMENT DETAILS)", opcode: 0x84, sa: 0x04, hasSA: true, cdbLen: 16,
			usage: rcrUsage(0x04), flags: opReadLike, fn: receiveCopyResults},
	}
}

func rcrUsage(sa byte) []byte {
	return []byte{0x84, sa, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x07}
}

// Copy manager limits, reported by RECEIVE COPY RESULTS (OPERATING
// PARAMETERS) and VPD page 0x8F.
const (
	xcopyMaxCSCDs         = 8
	xcopyMaxSegments      = 16
	xcopyMaxDescListLen   = 1024
	xcopyMaxSegmentLength = 256 << 20 // bytes per segment
	xcopyMaxHeldResults   = 32        // per LU, oldest dropped first
	xcopyChunk            = 1 << 20   // bytes per read/write while copying
)

// Descriptor type codes.
const (
	cscdIdentification = 0xe4
	segBlockToBlock    = 0x02
)

// ascOperationInProgress: ILLEGAL REQUEST, OPERATION IN PROGRESS (SPC-4
// 6.4.3.2: a list identifier already in use on the nexus).
const ascOperationInProgress ASC = 0x0016

// copyState holds the copy operations of one LU: list identifiers in use
// and held results, per I_T nexus.
type copyState struct {
	mu      sync.Mutex
	running map[copyKey]bool
	held    map[copyKey]*copyResult
	order   []copyKey // held keys, oldest first
}

type copyKey struct {
	nexus  string
	listID byte
}

// copyResult is what RECEIVE COPY RESULTS reports for a finished list.
type copyResult struct {
	failed    bool
	segments  uint16 // segments processed
	bytes     uint64 // bytes written
	sense     []byte // fixed-format sense of the failure
	segFailed bool   // failure happened while processing a segment
}

func (s *copyState) init(lu *LU) error {
	s.running = map[copyKey]bool{}
	s.held = map[copyKey]*copyResult{}
	return nil
}

// hold records r for k, dropping the oldest results beyond the limit.
func (s *copyState) hold(k copyKey, r *copyResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.held[k]; ok {
		for i, x := range s.order {
			if x == k {
				s.order = append(s.order[:i], s.order[i+1:]...)
				break
			}
		}
	}
	s.held[k] = r
	s.order = append(s.order, k)
	for len(s.order) > xcopyMaxHeldResults {
		delete(s.held, s.order[0])
		s.order = s.order[1:]
	}
}

// luByDesignator returns the LU of the device whose NAA designator (as VPD
// page 0x83 reports it) is id, preferring self when several match.
func (d *Device) luByDesignator(self *LU, id []byte) *LU {
	if self != nil {
		if own := self.deviceID(); bytes.Equal(own[:], id) {
			return self
		}
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	for _, lu := range d.lus {
		if own := lu.deviceID(); bytes.Equal(own[:], id) {
			return lu
		}
	}
	return nil
}

// segment is one parsed block-to-block segment descriptor.
type segment struct {
	src, dst       uint16
	blocks         uint64
	srcLBA, dstLBA uint64
}

func copyAborted(asc ASC) *SenseError { return NewSense(KeyCopyAborted, asc) }

// extendedCopy implements EXTENDED COPY (LID1).
func extendedCopy(t *task) error {
	if err := needCDB(t, 16); err != nil {
		return err
	}
	plen := int(binary.BigEndian.Uint32(t.cdb[10:]))
	if plen == 0 {
		return nil
	}
	p := t.cmd.Data
	if len(p) > plen {
		p = p[:plen]
	}
	if len(p) < 16 {
		return NewSense(KeyIllegalRequest, ASCParameterListLength)
	}
	listID := p[0]
	usage := p[1] >> 3 & 3
	switch {
	case usage == 1:
		return InvalidParamField(1, 4)
	case usage == 3 && listID != 0:
		return InvalidParamField(0, -1)
	}
	cscdLen := int(binary.BigEndian.Uint16(p[2:]))
	segLen := uint64(binary.BigEndian.Uint32(p[8:]))
	inlineLen := uint64(binary.BigEndian.Uint32(p[12:]))
	if uint64(cscdLen)+segLen > xcopyMaxDescListLen {
		return NewSense(KeyIllegalRequest, ASCParameterListLength)
	}
	if 16+uint64(cscdLen)+segLen+inlineLen > uint64(len(p)) {
		return NewSense(KeyIllegalRequest, ASCParameterListLength)
	}
	if inlineLen != 0 {
		return InvalidParamField(12, -1) // MAXIMUM INLINE DATA LENGTH is 0
	}

	// CSCD descriptors: 32 bytes each.
	if cscdLen%32 != 0 {
		return InvalidParamField(2, -1)
	}
	if cscdLen/32 > xcopyMaxCSCDs {
		return NewSense(KeyIllegalRequest, ASCTooManyTargetDescriptors)
	}
	cscds := p[16 : 16+cscdLen]
	for off := 0; off < cscdLen; off += 32 {
		d := cscds[off : off+32]
		if d[0] != cscdIdentification {
			return NewSense(KeyIllegalRequest, ASCUnsupportedTargetDescType)
		}
		if d[1]&0x1f != 0 { // PERIPHERAL DEVICE TYPE: block devices only
			return NewSense(KeyIllegalRequest, ASCUnsupportedTargetDescType)
		}
	}

	// Segment descriptors: count first, then check types.
	segs := p[16+cscdLen : 16+uint64(cscdLen)+segLen]
	var parsed []segment
	for off := 0; off < len(segs); {
		if len(segs)-off < 4 {
			return InvalidParamField(16+cscdLen+off, -1)
		}
		dl := 4 + int(binary.BigEndian.Uint16(segs[off+2:]))
		if dl > len(segs)-off {
			return NewSense(KeyIllegalRequest, ASCParameterListLength)
		}
		if len(parsed) == xcopyMaxSegments {
			return NewSense(KeyIllegalRequest, ASCTooManySegmentDescriptors)
		}
		d := segs[off : off+dl]
		var s segment
		if d[0] == segBlockToBlock && dl == 28 {
			s = segment{
				src:    binary.BigEndian.Uint16(d[4:]),
				dst:    binary.BigEndian.Uint16(d[6:]),
				blocks: uint64(binary.BigEndian.Uint16(d[10:])),
				srcLBA: binary.BigEndian.Uint64(d[12:]),
				dstLBA: binary.BigEndian.Uint64(d[20:]),
			}
		} else {
			s.src = 0xffff // marks an unsupported descriptor
		}
		parsed = append(parsed, s)
		off += dl
	}
	for _, s := range parsed {
		if s.src == 0xffff {
			return NewSense(KeyIllegalRequest, ASCUnsupportedSegDescType)
		}
	}

	lu := t.lu
	key := copyKey{nexus: t.nexusKey(), listID: listID}
	if usage != 3 {
		lu.copy.mu.Lock()
		if lu.copy.running[key] {
			lu.copy.mu.Unlock()
			return NewSense(KeyIllegalRequest, ascOperationInProgress)
		}
		lu.copy.running[key] = true
		delete(lu.copy.held, key)
		lu.copy.mu.Unlock()
		defer func() {
			lu.copy.mu.Lock()
			delete(lu.copy.running, key)
			lu.copy.mu.Unlock()
		}()
	}

	res := &copyResult{}
	err := runCopy(t, cscds, parsed, res)
	if err != nil {
		res.failed = true
		if se, ok := err.(*SenseError); ok {
			res.sense = se.Fixed()
		}
	}
	if usage == 0 {
		lu.copy.hold(key, res)
	}
	return err
}

// runCopy resolves the CSCDs and processes the segments in order.
func runCopy(t *task, cscds []byte, segs []segment, res *copyResult) error {
	targets := make([]*LU, len(cscds)/32)
	for i := range targets {
		d := cscds[32*i : 32*i+32]
		// Designation descriptor at bytes 4-23: NAA (type 3) designators
		// name LUs; other types name nothing we know.
		dtype, dlen := d[5]&0x0f, int(d[7])
		if dtype != 3 || dlen > 16 {
			continue
		}
		tl := t.dev.luByDesignator(t.lu, d[8:8+dlen])
		if tl == nil {
			continue
		}
		if bl := uint32(d[29])<<16 | uint32(d[30])<<8 | uint32(d[31]); bl != 0 && bl != tl.cfg.BlockSize {
			continue
		}
		targets[i] = tl
	}
	for _, s := range segs {
		if int(s.src) >= len(targets) || int(s.dst) >= len(targets) ||
			targets[s.src] == nil || targets[s.dst] == nil {
			res.segFailed = true
			return copyAborted(ASCCopyTargetDeviceNotReach)
		}
		src, dst := targets[s.src], targets[s.dst]
		if src.cfg.BlockSize != dst.cfg.BlockSize {
			res.segFailed = true
			return copyAborted(ASCCopyTargetDeviceNotReach)
		}
		if s.blocks<<src.shift > xcopyMaxSegmentLength {
			return InvalidParamField(0, -1)
		}
		if src.checkRange(s.srcLBA, s.blocks) != nil || dst.checkRange(s.dstLBA, s.blocks) != nil {
			res.segFailed = true
			return copyAborted(ASCNoAdditional)
		}
		if err := gateCopyTarget(t, src, false); err != nil {
			res.segFailed = true
			return err
		}
		if err := gateCopyTarget(t, dst, true); err != nil {
			res.segFailed = true
			return err
		}
		if err := copyBlocks(src, dst, s.srcLBA, s.dstLBA, s.blocks); err != nil {
			res.segFailed = true
			if se, ok := err.(*SenseError); ok {
				return copyAborted(se.ASC)
			}
			return err
		}
		res.segments++
		res.bytes += s.blocks << src.shift
	}
	return nil
}

// gateCopyTarget applies to a copy target other than the LU that received
// the EXTENDED COPY the gates a READ (src) or WRITE (dst) from the same I_T
// nexus would pass there: ALUA access state, reservations, write protect.
// The receiving LU already passed them for EXTENDED COPY itself.
func gateCopyTarget(t *task, lu *LU, write bool) error {
	if lu == t.lu {
		return nil
	}
	op := &opInfo{name: "READ(16)", opcode: 0x88, cdbLen: 16, flags: opReadLike}
	if write {
		op = &opInfo{name: "WRITE(16)", opcode: 0x8a, cdbLen: 16, flags: opWrite}
	}
	cdb := make([]byte, 16)
	cdb[0] = op.opcode
	gt := &task{ctx: t.ctx, dev: t.dev, lu: lu, cmd: t.cmd, cdb: cdb, op: op, nexus: t.nexus}
	if err := lu.aluaGate(gt); err != nil {
		return err
	}
	if err := lu.reservationGate(gt); err != nil {
		return err
	}
	if write && lu.writeProtected() {
		return NewSense(KeyDataProtect, ASCWriteProtected)
	}
	return nil
}

// copyBlocks copies n blocks from src at sl to dst at dl, in chunks, each
// written under dst's range lock. Overlapping ranges on one LU are copied
// in the direction that never reads an already overwritten block.
func copyBlocks(src, dst *LU, sl, dl, n uint64) error {
	if n == 0 {
		return nil
	}
	per := max(uint64(xcopyChunk)>>src.shift, 1)
	buf := make([]byte, min(n, per)<<src.shift)
	backward := src == dst && dl > sl && dl < sl+n
	for done := uint64(0); done < n; {
		c := min(n-done, per)
		off := done
		if backward {
			off = n - done - c
		}
		b := buf[:c<<src.shift]
		if err := src.readInto(b, sl+off); err != nil {
			return err
		}
		unlock := dst.lockRange(dl+off, c)
		err := dst.writeCached(b, dl+off)
		unlock()
		if err != nil {
			return err
		}
		done += c
	}
	return dst.settle()
}

// receiveCopyResults implements RECEIVE COPY RESULTS for LID1 lists.
func receiveCopyResults(t *task) error {
	if err := needCDB(t, 16); err != nil {
		return err
	}
	sa := t.cdb[1] & 0x1f
	alloc := int(binary.BigEndian.Uint32(t.cdb[10:]))
	if sa == 0x03 {
		t.dataIn(copyOperatingParameters(), alloc)
		return nil
	}
	lu := t.lu
	key := copyKey{nexus: t.nexusKey(), listID: t.cdb[2]}
	lu.copy.mu.Lock()
	r, ok := lu.copy.held[key]
	running := lu.copy.running[key]
	lu.copy.mu.Unlock()
	if sa == 0x00 && running {
		out := make([]byte, 12)
		binary.BigEndian.PutUint32(out, 8)
		out[4] = 0x00 // operation in progress
		t.dataIn(out, alloc)
		return nil
	}
	if !ok {
		return InvalidCDBField(2, -1)
	}
	switch sa {
	case 0x00: // COPY STATUS
		out := make([]byte, 12)
		binary.BigEndian.PutUint32(out, 8)
		out[4] = 0x01 // completed, no errors
		if r.failed {
			out[4] = 0x02
		}
		binary.BigEndian.PutUint16(out[5:], r.segments)
		units, count := byte(0), r.bytes
		for count > 0xffffffff {
			units++
			count >>= 10
		}
		out[7] = units
		binary.BigEndian.PutUint32(out[8:], uint32(count))
		t.dataIn(out, alloc)
	case 0x04: // FAILED SEGMENT DETAILS
		if !r.failed {
			t.dataIn(make([]byte, 60), alloc)
			return nil
		}
		out := make([]byte, 60+len(r.sense))
		binary.BigEndian.PutUint32(out, uint32(len(out)-4))
		out[56] = byte(StatusCheckCondition)
		binary.BigEndian.PutUint16(out[58:], uint16(len(r.sense)))
		copy(out[60:], r.sense)
		t.dataIn(out, alloc)
	}
	return nil
}

// implementedCopyDescriptors lists the descriptor type codes the copy
// manager accepts.
var implementedCopyDescriptors = []byte{segBlockToBlock, cscdIdentification}

// copyOperatingParameters is the OPERATING PARAMETERS parameter data.
func copyOperatingParameters() []byte {
	out := make([]byte, 44+len(implementedCopyDescriptors))
	binary.BigEndian.PutUint32(out[0:], uint32(len(out)-4))
	out[4] = 0x01 // SNLID: a list identifier may be reused on another nexus
	binary.BigEndian.PutUint16(out[8:], xcopyMaxCSCDs)
	binary.BigEndian.PutUint16(out[10:], xcopyMaxSegments)
	binary.BigEndian.PutUint32(out[12:], xcopyMaxDescListLen)
	binary.BigEndian.PutUint32(out[16:], xcopyMaxSegmentLength)
	binary.BigEndian.PutUint32(out[20:], 0) // MAXIMUM INLINE DATA LENGTH
	binary.BigEndian.PutUint32(out[24:], 0) // HELD DATA LIMIT
	binary.BigEndian.PutUint32(out[28:], 0) // MAXIMUM STREAM DEVICE TRANSFER SIZE
	binary.BigEndian.PutUint16(out[34:], 1) // TOTAL CONCURRENT COPIES
	out[36] = 1                             // MAXIMUM CONCURRENT COPIES
	out[37] = 9                             // DATA SEGMENT GRANULARITY (log2 bytes)
	out[43] = byte(len(implementedCopyDescriptors))
	copy(out[44:], implementedCopyDescriptors)
	return out
}

// thirdPartyCopyVPD returns the Third-party Copy VPD page (0x8F, SPC-4
// 7.8.17) including its 4-byte header: the commands the copy manager
// supports, its descriptor types and its general limits.
func (lu *LU) thirdPartyCopyVPD() []byte {
	var body []byte
	add := func(typ uint16, data []byte) {
		for (4+len(data))%4 != 0 {
			data = append(data, 0)
		}
		var h [4]byte
		binary.BigEndian.PutUint16(h[0:], typ)
		binary.BigEndian.PutUint16(h[2:], uint16(len(data)))
		body = append(append(body, h[:]...), data...)
	}
	// Supported Commands (0001h).
	cmds := []byte{
		0x83, 1, 0x00, // EXTENDED COPY (LID1)
		0x84, 3, 0x00, 0x03, 0x04, // RECEIVE COPY RESULTS
	}
	add(0x0001, append([]byte{byte(len(cmds))}, cmds...))
	// Supported Descriptors (0004h).
	add(0x0004, append([]byte{byte(len(implementedCopyDescriptors))}, implementedCopyDescriptors...))
	// Supported CSCD Descriptor IDs (000Ch): none beyond the list-relative
	// indexes.
	add(0x000c, []byte{0, 0})
	// General Copy Operations (8001h).
	g := make([]byte, 32)
	binary.BigEndian.PutUint32(g[0:], 1) // TOTAL CONCURRENT COPIES
	binary.BigEndian.PutUint32(g[4:], 1) // MAXIMUM IDENTIFIED CONCURRENT COPIES
	binary.BigEndian.PutUint32(g[8:], xcopyMaxSegmentLength)
	g[12] = 9 // DATA SEGMENT GRANULARITY
	add(0x8001, g)

	out := make([]byte, 4, 4+len(body))
	out[1] = 0x8f
	binary.BigEndian.PutUint16(out[2:], uint16(len(body)))
	return append(out, body...)
}
