package replication

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"
	"os"
	"path/filepath"
	"sync"
)

// DirtyMap is the set of regions a copy has not seen, one bit per region
// (like DRBD's bitmap). Writes mark bits before they are acknowledged and
// wait (MarkDurable) until the bits are persisted; concurrent markers share
// one persist (group commit, like DRBD's activity-log transactions), and a
// write whose bits are already durable does not wait at all. Clearing is
// lazy: a cleared bit that comes back after a crash only costs one extra
// region copy.
//
// A resync does not clear a region when it sends it: it marks it copied
// (Copied), and clears the copied regions once a flush on the copy made
// them durable there (ClearCopied). Any Mark or Merge of a copied region
// in between takes the copied mark away, so the region stays dirty: the
// write that marked it may be missing from what was copied.
//
// File format (path given to OpenDirtyMap), written to a temporary file and
// renamed: magic "HDRT", version 1, region size, volume size, bit count,
// CRC32C of the bitmap, then the bitmap words, all big-endian.
type DirtyMap struct {
	path       string
	regionSize int64
	size       int64
	regions    int64

	mu        sync.Mutex
	cond      *sync.Cond
	words     []uint64
	copied    []uint64 // dirty regions sent to the copy, not yet durable there
	ncopied   int64    // bits set in copied
	count     int64
	gen       uint64 // bumped by every Mark that set a new bit
	synced    uint64 // generation known to be on disk
	syncing   bool
	dirtyDisk bool // clears not yet persisted
}

const dirtyMagic = 0x48445254 // "HDRT"

// NewDirtyMap returns an empty in-memory map (path "" never persists) for
// a volume of size bytes.
func NewDirtyMap(size, regionSize int64) *DirtyMap {
	regions := (size + regionSize - 1) / regionSize
	n := (regions + 63) / 64
	d := &DirtyMap{regionSize: regionSize, size: size, regions: regions, words: make([]uint64, n), copied: make([]uint64, n)}
	d.cond = sync.NewCond(&d.mu)
	return d
}

// OpenDirtyMap loads the map persisted at path, or returns a new map
// persisted there with every region dirty (a copy whose map was lost is
// caught up by a full copy). full says which.
func OpenDirtyMap(path string, size, regionSize int64) (d *DirtyMap, full bool, err error) {
	d = NewDirtyMap(size, regionSize)
	d.path = path
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		d.SetAll()
		return d, true, d.persist()
	}
	if err != nil {
		return nil, false, err
	}
	if err := d.decode(b); err != nil {
		// A torn or foreign file: the safe answer is a full copy.
		d.SetAll()
		return d, true, d.persist()
	}
	return d, false, nil
}

func (d *DirtyMap) decode(b []byte) error {
	const hdr = 4 + 4 + 8 + 8 + 8 + 4
	if len(b) < hdr || binary.BigEndian.Uint32(b) != dirtyMagic || binary.BigEndian.Uint32(b[4:]) != 1 {
		return fmt.Errorf("replication: dirty map: bad header")
	}
	if int64(binary.BigEndian.Uint64(b[8:])) != d.regionSize || int64(binary.BigEndian.Uint64(b[16:])) != d.size ||
		int64(binary.BigEndian.Uint64(b[24:])) != d.regions {
		return fmt.Errorf("replication: dirty map: geometry changed")
	}
	body := b[hdr:]
	if len(body) != len(d.words)*8 || crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(b[32:]) {
		return fmt.Errorf("replication: dirty map: bad body")
	}
	d.count = 0
	for i := range d.words {
		d.words[i] = binary.BigEndian.Uint64(body[i*8:])
		d.count += int64(bits.OnesCount64(d.words[i]))
	}
	return nil
}

func (d *DirtyMap) encodeLocked() []byte {
	b := make([]byte, 36, 36+len(d.words)*8)
	binary.BigEndian.PutUint32(b, dirtyMagic)
	binary.BigEndian.PutUint32(b[4:], 1)
	binary.BigEndian.PutUint64(b[8:], uint64(d.regionSize))
	binary.BigEndian.PutUint64(b[16:], uint64(d.size))
	binary.BigEndian.PutUint64(b[24:], uint64(d.regions))
	for _, w := range d.words {
		b = binary.BigEndian.AppendUint64(b, w)
	}
	binary.BigEndian.PutUint32(b[32:], crc32.Checksum(b[36:], castagnoli))
	return b
}

// persist writes the map now (callers hold no lock).
func (d *DirtyMap) persist() error {
	if d.path == "" {
		return nil
	}
	d.mu.Lock()
	b := d.encodeLocked()
	d.mu.Unlock()
	return writeFileSync(d.path, b)
}

func writeFileSync(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// RegionSize returns the bytes per bit.
func (d *DirtyMap) RegionSize() int64 { return d.regionSize }

// Regions returns the number of regions of the volume.
func (d *DirtyMap) Regions() int64 { return d.regions }

func (d *DirtyMap) span(off, length int64) (first, last int64, ok bool) {
	if length <= 0 || off < 0 || off >= d.size {
		return 0, 0, false
	}
	end := min(off+length, d.size)
	return off / d.regionSize, (end - 1) / d.regionSize, true
}

// Mark sets the bits of [off, off+length) in memory and returns the
// generation to pass to WaitDurable (0 when every bit was already set and
// durable).
func (d *DirtyMap) Mark(off, length int64) uint64 {
	first, last, ok := d.span(off, length)
	if !ok {
		return 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	set := false
	for r := first; r <= last; r++ {
		w, b := r/64, uint64(1)<<(r%64)
		d.uncopyLocked(w, b)
		if d.words[w]&b == 0 {
			d.words[w] |= b
			d.count++
			set = true
		}
	}
	if set {
		d.gen++
	}
	if d.gen > d.synced {
		return d.gen // an earlier marker's persist may still be pending
	}
	return 0
}

// WaitDurable returns once generation gen (as returned by Mark or Merge)
// is on disk. Whoever arrives while no persist runs performs one for
// everybody marked so far.
func (d *DirtyMap) WaitDurable(gen uint64) error {
	if gen == 0 || d.path == "" {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	gen = min(gen, d.gen) // a generation never reached would never be synced
	for d.synced < gen {
		if d.syncing {
			d.cond.Wait()
			continue
		}
		if err := d.syncLocked(); err != nil {
			return fmt.Errorf("replication: persist dirty map: %w", err)
		}
	}
	return nil
}

// syncLocked writes the map as it is now, with d.mu released during the
// write (no other persist runs meanwhile: syncing), and wakes the waiters.
// Callers hold d.mu and have checked that no persist runs.
func (d *DirtyMap) syncLocked() error {
	d.syncing = true
	target := d.gen
	b := d.encodeLocked()
	d.mu.Unlock()
	err := writeFileSync(d.path, b)
	d.mu.Lock()
	d.syncing = false
	if err == nil {
		d.synced = max(d.synced, target)
		d.dirtyDisk = false
	}
	d.cond.Broadcast()
	return err
}

// MarkDurable is Mark then WaitDurable.
func (d *DirtyMap) MarkDurable(off, length int64) error {
	return d.WaitDurable(d.Mark(off, length))
}

// SetAll marks every region (full copy).
func (d *DirtyMap) SetAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for r := int64(0); r < d.regions; r++ {
		d.words[r/64] |= 1 << (r % 64)
	}
	clear(d.copied)
	d.ncopied = 0
	d.count = d.regions
	d.gen++
}

// uncopyLocked takes the copied mark off the bits b of word w.
func (d *DirtyMap) uncopyLocked(w int64, b uint64) {
	if c := d.copied[w] & b; c != 0 {
		d.copied[w] &^= c
		d.ncopied -= int64(bits.OnesCount64(c))
	}
}

// Clear clears region r in memory; Flush persists clears. Only for a
// region known to be durable on the copy: a resync uses Copied and
// ClearCopied instead.
func (d *DirtyMap) Clear(r int64) {
	if r < 0 || r >= d.regions {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	w, b := r/64, uint64(1)<<(r%64)
	d.uncopyLocked(w, b)
	if d.words[w]&b != 0 {
		d.words[w] &^= b
		d.count--
		d.dirtyDisk = true
	}
}

// Copied records that dirty region r was sent to the copy (or found equal
// there) and is waiting for a flush of the copy: it stays dirty, but
// NextUncopied skips it. A no-op for a clean region.
func (d *DirtyMap) Copied(r int64) {
	if r < 0 || r >= d.regions {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	w, b := r/64, uint64(1)<<(r%64)
	if d.words[w]&b != 0 && d.copied[w]&b == 0 {
		d.copied[w] |= b
		d.ncopied++
	}
}

// ClearCopied clears every region marked copied and not marked again
// since (in memory; Flush persists clears) and returns how many. Call it
// only after a flush of the copy that was sent once the copies had been
// acknowledged: that flush made them durable there.
func (d *DirtyMap) ClearCopied() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	var n int64
	for i, c := range d.copied {
		if c == 0 {
			continue
		}
		c &= d.words[i]
		d.words[i] &^= c
		d.copied[i] = 0
		n += int64(bits.OnesCount64(c))
	}
	d.ncopied = 0
	if n > 0 {
		d.count -= n
		d.dirtyDisk = true
	}
	return n
}

// ForgetCopied drops every copied mark: those regions are copied again (a
// resync that stopped before the copy was flushed).
func (d *DirtyMap) ForgetCopied() {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.copied)
	d.ncopied = 0
}

// copiedCount returns the number of regions marked copied.
func (d *DirtyMap) copiedCount() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ncopied
}

// NextUncopied returns the first dirty region at or after from that is not
// marked copied, or -1.
func (d *DirtyMap) NextUncopied(from int64) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	for r := max(from, 0); r < d.regions; {
		w := (d.words[r/64] &^ d.copied[r/64]) >> (r % 64)
		if w != 0 {
			return r + int64(bits.TrailingZeros64(w))
		}
		r = (r/64 + 1) * 64
	}
	return -1
}

// IsDirty reports region r's bit.
func (d *DirtyMap) IsDirty(r int64) bool {
	if r < 0 || r >= d.regions {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.words[r/64]&(1<<(r%64)) != 0
}

// Count returns the number of dirty regions.
func (d *DirtyMap) Count() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.count
}

// Next returns the first dirty region at or after from, or -1.
func (d *DirtyMap) Next(from int64) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	for r := max(from, 0); r < d.regions; {
		w := d.words[r/64] >> (r % 64)
		if w != 0 {
			return r + int64(bits.TrailingZeros64(w))
		}
		r = (r/64 + 1) * 64
	}
	return -1
}

// Flush persists the map (clears included).
func (d *DirtyMap) Flush() error {
	if d.path == "" {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for d.syncing {
		d.cond.Wait()
	}
	if !d.dirtyDisk && d.synced >= d.gen {
		return nil
	}
	return d.syncLocked()
}

// Remove deletes the persisted file (the copy is in sync again).
func (d *DirtyMap) Remove() error {
	if d.path == "" {
		return nil
	}
	if err := os.Remove(d.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Merge sets every bit that is set in o (same geometry) and returns the
// generation to pass to WaitDurable.
func (d *DirtyMap) Merge(o *DirtyMap) uint64 {
	o.mu.Lock()
	words := append([]uint64(nil), o.words...)
	o.mu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	set := false
	for i := range d.words {
		if i >= len(words) {
			break
		}
		d.uncopyLocked(int64(i), words[i])
		if add := words[i] &^ d.words[i]; add != 0 {
			d.words[i] |= add
			d.count += int64(bits.OnesCount64(add))
			set = true
		}
	}
	if set {
		d.gen++
	}
	if d.gen > d.synced {
		return d.gen
	}
	return 0
}
