package scsi

import (
	"encoding/binary"
	"sync"
)

// Commands that must be atomic with respect to other writes: COMPARE AND
// WRITE (SBC-4 5.3), ORWRITE (16) (5.9) and WRITE ATOMIC (16) (5.45). Each
// takes an exclusive lock on its LBA range (lu.lockRange) for the whole
// read-modify-write; any other command that writes (or reads, for WRITE
// ATOMIC's all-or-nothing guarantee) an overlapping range must take the
// same lock for the guarantee to hold against it.
func atomicCommands() []opInfo {
	return []opInfo{
		{name: "COMPARE AND WRITE", opcode: 0x89, cdbLen: 16,
			usage: []byte{0x89, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0xff, 0x1f, 0x07},
			flags: opWrite, fn: compareAndWrite},
		{name: "ORWRITE(16)", opcode: 0x8b, cdbLen: 16,
			usage: []byte{0x8b, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07},
			flags: opWrite, fn: orWrite16},
		{name: "WRITE ATOMIC(16)", opcode: 0x9c, cdbLen: 16,
			usage: []byte{0x9c, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0xff, 0xff, 0x1f, 0x07},
			flags: opWrite, fn: writeAtomic16},
	}
}

// Limits reported in the Block Limits VPD page (0xB0).
const (
	maxCompareAndWriteLength = 255  // blocks (MAXIMUM COMPARE AND WRITE LENGTH)
	maxAtomicTransferLength  = 2048 // blocks
	// atomicAlignment and atomicGranularity (ATOMIC ALIGNMENT, ATOMIC
	// TRANSFER LENGTH GRANULARITY) are 0: any LBA and length will do.
	atomicAlignment   = 0
	atomicGranularity = 0
)

// atomicState is the LU-wide range lock that serialises overlapping
// atomic commands.
type atomicState struct {
	mu   sync.Mutex
	held []*heldRange

	sanitize sanitizeState // misc.go: SANITIZE in progress / failure mode
}

// heldRange is one granted lock on [lba, end).
type heldRange struct {
	lba, end uint64
	shared   bool
	done     chan struct{} // closed on unlock
}

func (s *atomicState) init(lu *LU) error { return nil }

// lockRange locks blocks [lba, lba+n) exclusively against every other
// holder of an overlapping range and returns the unlock function. It is
// cheap when nothing overlaps (one mutex and a scan of the currently held
// ranges), so every write may take it. n == 0 locks nothing.
func (lu *LU) lockRange(lba, n uint64) (unlock func()) {
	return lu.atomic.lock(lba, n, false)
}

// lockRangeShared locks [lba, lba+n) against exclusive holders only:
// readers that take it never see half of a WRITE ATOMIC or COMPARE AND
// WRITE.
func (lu *LU) lockRangeShared(lba, n uint64) (unlock func()) {
	return lu.atomic.lock(lba, n, true)
}

func (s *atomicState) lock(lba, n uint64, shared bool) func() {
	if n == 0 {
		return func() {}
	}
	end := lba + n
	if end < lba { // overflow: lock to the end of the address space
		end = ^uint64(0)
	}
	for {
		s.mu.Lock()
		var wait chan struct{}
		for _, h := range s.held {
			if h.lba < end && lba < h.end && !(shared && h.shared) {
				wait = h.done
				break
			}
		}
		if wait == nil {
			h := &heldRange{lba: lba, end: end, shared: shared, done: make(chan struct{})}
			s.held = append(s.held, h)
			s.mu.Unlock()
			var once sync.Once
			return func() { once.Do(func() { s.release(h) }) }
		}
		s.mu.Unlock()
		<-wait
	}
}

func (s *atomicState) release(h *heldRange) {
	s.mu.Lock()
	for i, x := range s.held {
		if x == h {
			last := len(s.held) - 1
			s.held[i] = s.held[last]
			s.held[last] = nil
			s.held = s.held[:last]
			break
		}
	}
	s.mu.Unlock()
	close(h.done)
}

// compareAndWrite implements COMPARE AND WRITE (SBC-4 5.3): the Data-Out
// holds N blocks of verify data then N blocks of write data; the write
// happens only if the medium equals the verify data, atomically.
func compareAndWrite(t *task) error {
	if err := needCDB(t, 16); err != nil {
		return err
	}
	cdb := t.cdb
	if cdb[1]&0xe0 != 0 { // WRPROTECT: no protection information
		return InvalidCDBField(1, 7)
	}
	fua := cdb[1]&0x08 != 0
	lba := binary.BigEndian.Uint64(cdb[2:])
	n := uint64(cdb[13])
	if n > maxCompareAndWriteLength {
		return InvalidCDBField(13, -1)
	}
	lu := t.lu
	if err := lu.checkRange(lba, n); err != nil {
		return err
	}
	bs := uint64(lu.cfg.BlockSize)
	if err := needDataOut(t, 2*n*bs, 13); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	verify, write := t.cmd.Data[:n*bs], t.cmd.Data[n*bs:2*n*bs]

	unlock := lu.lockRange(lba, n)
	defer unlock()
	cur, err := lu.readBlocks(lba, n)
	if err != nil {
		return err
	}
	for i := range cur {
		if cur[i] != verify[i] {
			return &SenseError{Key: KeyMiscompare, ASC: ASCMiscompareDuringVerify, Info: uint64(i), InfoValid: true}
		}
	}
	return lu.writeBlocks(write, lba, fua)
}

// orWrite16 implements ORWRITE (16) (SBC-4 5.9) with the default
// (non-BMOP) operation: each written block is the OR of the medium and the
// Data-Out block, atomically.
func orWrite16(t *task) error {
	if err := needCDB(t, 16); err != nil {
		return err
	}
	cdb := t.cdb
	if cdb[1]&0xe0 != 0 { // ORPROTECT
		return InvalidCDBField(1, 7)
	}
	fua := cdb[1]&0x08 != 0
	lba := binary.BigEndian.Uint64(cdb[2:])
	n := uint64(binary.BigEndian.Uint32(cdb[10:]))
	lu := t.lu
	if err := lu.checkRange(lba, n); err != nil {
		return err
	}
	if err := needDataOut(t, n<<lu.shift, 10); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	unlock := lu.lockRange(lba, n)
	defer unlock()
	cur, err := lu.readBlocks(lba, n)
	if err != nil {
		return err
	}
	for i, b := range t.cmd.Data[:len(cur)] {
		cur[i] |= b
	}
	return lu.writeBlocks(cur, lba, fua)
}

// writeAtomic16 implements WRITE ATOMIC (16) (SBC-4 5.45): a write that
// other commands see either entirely or not at all.
func writeAtomic16(t *task) error {
	if err := needCDB(t, 16); err != nil {
		return err
	}
	cdb := t.cdb
	if cdb[1]&0xe0 != 0 {
		return InvalidCDBField(1, 7)
	}
	fua := cdb[1]&0x08 != 0
	lba := binary.BigEndian.Uint64(cdb[2:])
	n := uint64(binary.BigEndian.Uint16(cdb[12:]))
	lu := t.lu
	if n > maxAtomicTransferLength {
		return InvalidCDBField(12, -1)
	}
	if misaligned(lba, atomicAlignment) {
		return InvalidCDBField(2, -1)
	}
	if misaligned(n, atomicGranularity) {
		return InvalidCDBField(12, -1)
	}
	if err := lu.checkRange(lba, n); err != nil {
		return err
	}
	if err := needDataOut(t, n<<lu.shift, 12); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	unlock := lu.lockRange(lba, n)
	defer unlock()
	return lu.writeBlocks(t.cmd.Data[:n<<lu.shift], lba, fua)
}
