package replication

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"
)

// Generation identifies one copy of a replicated LUN's data (DESIGN.md
// invariant 7), like DRBD's generation identifiers: 128 random bits kept
// on the copy itself, in its identity block, so it goes wherever the
// copy's data goes, and recorded by the cluster (Raft) for each copy. A
// blank disk, or one restored from an old backup, does not carry the
// generation the cluster recorded for the copy it replaces. The zero value
// means none (a copy that has no identity block, or an invalid one).
//
// A copy gets a new generation when it is created (the first owner of a
// new LUN gives every copy one) and when a full copy of it starts; the
// owner records it in Raft, with the copy's join of the in-sync set.
type Generation [16]byte

// NewGeneration returns a random generation.
func NewGeneration() Generation {
	var g Generation
	for g.IsZero() {
		rand.Read(g[:]) // never fails (crypto/rand)
	}
	return g
}

// IsZero reports whether g is none.
func (g Generation) IsZero() bool { return g == Generation{} }

// String is g in 32 lower-case hex digits ("" for none).
func (g Generation) String() string {
	if g.IsZero() {
		return ""
	}
	return hex.EncodeToString(g[:])
}

// ParseGeneration parses String's form; "" is none.
func ParseGeneration(s string) (Generation, error) {
	var g Generation
	if s == "" {
		return g, nil
	}
	if len(s) != 2*len(g) {
		return g, fmt.Errorf("replication: generation %q: want %d hex digits", s, 2*len(g))
	}
	if _, err := hex.Decode(g[:], []byte(s)); err != nil {
		return Generation{}, fmt.Errorf("replication: generation %q: %w", s, err)
	}
	return g, nil
}

// IdentitySize is the size of a copy's identity block: the IdentitySize
// bytes right after the LUN's data in the copy's backing store (a fileio
// copy's file is the LUN's size plus IdentitySize; a blockio copy's device
// holds at least that).
//
// The block, all integers big-endian:
//
//	off  size  field
//	 0     8   magic "HATGTGEN"
//	 8     4   format (1)
//	12     4   zero
//	16     8   LUN ID
//	24     8   the LUN's size in bytes (the data before the block)
//	32    16   generation
//	48     4   CRC32C of bytes 0..47
//	52  4044   zero
//
// A block with another magic (a blank disk reads zeros), another format,
// a bad checksum, or another LUN's ID or size holds no identity: the copy's
// generation is none.
const IdentitySize = 4096

const (
	identityMagic  = "HATGTGEN"
	identityFormat = 1
	identityUsed   = 52
)

// ErrNoIdentity wraps every reason a copy has no generation (ReadIdentity).
var ErrNoIdentity = errors.New("replication: the copy has no identity")

// IdentityStore is a Store that keeps its copy's identity: a CopyStore.
// A Mirror reports the generation of such a store to the owner (hello
// replies) and sets a new one when the owner asks; a Volume checks its own
// at Open. A store without it has no identity (the zero generation).
type IdentityStore interface {
	Store
	// Generation returns the copy's generation (zero: none).
	Generation() Generation
	// SetGeneration writes g into the copy's identity block and makes it
	// durable before it returns.
	SetGeneration(g Generation) error
}

// storeGeneration is s's generation, or none when s keeps no identity.
func storeGeneration(s Store) Generation {
	if is, ok := s.(IdentityStore); ok {
		return is.Generation()
	}
	return Generation{}
}

// CopyStore is one node's copy of a replicated LUN over a backing Store:
// the LUN's data is the first size bytes of the backing store, and the
// copy's identity block the IdentitySize bytes after them. It reads and
// writes the block through the backing store's ReadAt, WriteAt and Flush
// (WriteAtFUA when it has it), so any Store works — a file, a block
// device, an in-memory store — as long as it holds size+IdentitySize bytes
// and makes what it wrote durable on Flush.
//
// CopyStore is a Store (Size is the LUN's) with the optional capabilities
// Unmapper and FUAWriter (passed on to the backing store, or emulated as
// the package does for a Store without them), and an IdentityStore.
type CopyStore struct {
	raw  Store
	lun  LUNID
	size int64

	mu     sync.Mutex // orders SetGeneration calls
	gen    Generation
	reason error // why gen is none, from the last read
}

var _ IdentityStore = (*CopyStore)(nil)

// NewCopyStore returns the copy of LUN lun, of size bytes, kept in raw,
// and reads its identity. It fails when raw is smaller than size +
// IdentitySize; an identity block that cannot be read or holds no valid
// identity leaves the generation none (IdentityProblem says why).
func NewCopyStore(raw Store, lun LUNID, size int64) (*CopyStore, error) {
	if size <= 0 {
		return nil, fmt.Errorf("replication: copy of LUN %d: size %d must be positive", lun, size)
	}
	if have := raw.Size(); have < size+IdentitySize {
		return nil, fmt.Errorf("replication: the store of LUN %d's copy holds %d bytes, not the LUN's %d plus %d for the copy's identity block",
			lun, have, size, IdentitySize)
	}
	c := &CopyStore{raw: raw, lun: lun, size: size}
	c.gen, c.reason = ReadIdentity(raw, lun, size)
	return c, nil
}

// ReadIdentity reads the identity block of LUN lun's copy kept in raw (the
// block at offset size). It returns the generation, or the zero generation
// and an error wrapping ErrNoIdentity that says why there is none (a
// failed read too).
func ReadIdentity(raw Store, lun LUNID, size int64) (Generation, error) {
	b := make([]byte, IdentitySize)
	if _, err := raw.ReadAt(b, size); err != nil {
		return Generation{}, fmt.Errorf("%w: reading its identity block at byte %d: %w", ErrNoIdentity, size, err)
	}
	return decodeIdentity(b, lun, size)
}

func decodeIdentity(b []byte, lun LUNID, size int64) (Generation, error) {
	var g Generation
	switch {
	case string(b[0:8]) != identityMagic:
		return g, fmt.Errorf("%w: no identity block (a blank disk, or a copy from before identities)", ErrNoIdentity)
	case crc32.Checksum(b[:48], castagnoli) != binary.BigEndian.Uint32(b[48:]):
		return g, fmt.Errorf("%w: the identity block's checksum is wrong", ErrNoIdentity)
	case binary.BigEndian.Uint32(b[8:]) != identityFormat:
		return g, fmt.Errorf("%w: identity block format %d is unknown", ErrNoIdentity, binary.BigEndian.Uint32(b[8:]))
	case LUNID(binary.BigEndian.Uint64(b[16:])) != lun:
		return g, fmt.Errorf("%w: the identity block is LUN %d's, not LUN %d's", ErrNoIdentity, binary.BigEndian.Uint64(b[16:]), lun)
	case int64(binary.BigEndian.Uint64(b[24:])) != size:
		return g, fmt.Errorf("%w: the identity block is of a %d-byte LUN, not %d", ErrNoIdentity, binary.BigEndian.Uint64(b[24:]), size)
	}
	copy(g[:], b[32:48])
	if g.IsZero() {
		return g, fmt.Errorf("%w: the identity block holds no generation", ErrNoIdentity)
	}
	return g, nil
}

func encodeIdentity(lun LUNID, size int64, g Generation) []byte {
	b := make([]byte, IdentitySize)
	copy(b, identityMagic)
	binary.BigEndian.PutUint32(b[8:], identityFormat)
	binary.BigEndian.PutUint64(b[16:], uint64(lun))
	binary.BigEndian.PutUint64(b[24:], uint64(size))
	copy(b[32:48], g[:])
	binary.BigEndian.PutUint32(b[48:], crc32.Checksum(b[:48], castagnoli))
	return b
}

// Generation returns the copy's generation (zero: none).
func (c *CopyStore) Generation() Generation {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// IdentityProblem says why the copy has no generation (nil when it has
// one).
func (c *CopyStore) IdentityProblem() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason
}

// SetGeneration writes g (not zero) into the identity block and makes it
// durable (a FUA write, or a write and a flush) before it returns. On
// error the copy's generation is none: the block may be half written.
func (c *CopyStore) SetGeneration(g Generation) error {
	if g.IsZero() {
		return fmt.Errorf("replication: copy of LUN %d: cannot set the zero generation", c.lun)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := writeFUA(c.raw, encodeIdentity(c.lun, c.size, g), c.size); err != nil {
		c.gen, c.reason = Generation{}, fmt.Errorf("%w: writing its identity block failed: %w", ErrNoIdentity, err)
		return fmt.Errorf("replication: writing the identity of LUN %d's copy: %w", c.lun, err)
	}
	c.gen, c.reason = g, nil
	return nil
}

// Backing returns the backing store (the data and the identity block).
func (c *CopyStore) Backing() Store { return c.raw }

// Size returns the LUN's size: the data part of the backing store.
func (c *CopyStore) Size() int64 { return c.size }

// inData reports whether n bytes at off lie within the data.
func (c *CopyStore) inData(off, n int64) bool {
	return off >= 0 && n >= 0 && n <= c.size && off <= c.size-n
}

// errBeyondData is a request that reaches past the LUN's data into the
// identity block.
func (c *CopyStore) errBeyondData(off, n int64) error {
	return fmt.Errorf("%w: %d bytes at %d of LUN %d's %d", ErrOutOfRange, n, off, c.lun, c.size)
}

// MappedExtent reports the provisioning of the data at off (GET LBA
// STATUS) as the backing store does, within the data; a backing store
// that cannot tell reports everything mapped.
func (c *CopyStore) MappedExtent(off int64) (bool, int64, error) {
	if !c.inData(off, 1) {
		return false, 0, c.errBeyondData(off, 1)
	}
	return mappedExtent(c.raw, off, c.size)
}

// mappedExtent asks s (of the given data size) about off; a store that
// cannot tell has everything mapped.
func mappedExtent(s Store, off, size int64) (bool, int64, error) {
	em, ok := s.(interface {
		MappedExtent(off int64) (bool, int64, error)
	})
	if !ok {
		return true, size - off, nil
	}
	mapped, n, err := em.MappedExtent(off)
	if err != nil {
		return false, 0, err
	}
	return mapped, min(n, size-off), nil
}

// ReadAt reads the LUN's data.
func (c *CopyStore) ReadAt(p []byte, off int64) (int, error) {
	if !c.inData(off, int64(len(p))) {
		return 0, c.errBeyondData(off, int64(len(p)))
	}
	return c.raw.ReadAt(p, off)
}

// WriteAt writes the LUN's data.
func (c *CopyStore) WriteAt(p []byte, off int64) (int, error) {
	if !c.inData(off, int64(len(p))) {
		return 0, c.errBeyondData(off, int64(len(p)))
	}
	return c.raw.WriteAt(p, off)
}

// WriteAtFUA writes the LUN's data durably.
func (c *CopyStore) WriteAtFUA(p []byte, off int64) (int, error) {
	if !c.inData(off, int64(len(p))) {
		return 0, c.errBeyondData(off, int64(len(p)))
	}
	return writeFUA(c.raw, p, off)
}

// Unmap deallocates a range of the LUN's data.
func (c *CopyStore) Unmap(off, length int64) error {
	if !c.inData(off, length) {
		return c.errBeyondData(off, length)
	}
	return unmapStore(c.raw, off, length)
}

// Flush flushes the backing store.
func (c *CopyStore) Flush() error { return c.raw.Flush() }

// Close closes the backing store when it has a Close method.
func (c *CopyStore) Close() error {
	if cl, ok := c.raw.(interface{ Close() error }); ok {
		return cl.Close()
	}
	return nil
}

var (
	_ Unmapper  = (*CopyStore)(nil)
	_ FUAWriter = (*CopyStore)(nil)
)
