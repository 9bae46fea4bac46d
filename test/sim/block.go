package sim

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// BlockSize is the unit of the workload: every write replaces one whole
// block with a new version of it.
const BlockSize = 4096

// A block version's content: a header, then bytes derived from (LUN,
// block, version), so a torn, mixed or misplaced block is told from any
// version that was written. Version 0 is the initial all-zero block.
//
//	0  magic "HSIM"
//	4  LUN (uint32)
//	8  block (uint64)
//	16 version (uint64)
//	24 writer (uint32)
//	28 CRC32 of bytes 0..27
const blockMagic = 0x4853494d

func encodeBlock(lun uint32, block, version uint64, writer uint32) []byte {
	b := make([]byte, BlockSize)
	binary.BigEndian.PutUint32(b[0:], blockMagic)
	binary.BigEndian.PutUint32(b[4:], lun)
	binary.BigEndian.PutUint64(b[8:], block)
	binary.BigEndian.PutUint64(b[16:], version)
	binary.BigEndian.PutUint32(b[24:], writer)
	binary.BigEndian.PutUint32(b[28:], crc32.ChecksumIEEE(b[:28]))
	fill(b[32:], lun, block, version)
	return b
}

// fill writes the pattern of (lun, block, version): xorshift64 seeded by
// the three.
func fill(p []byte, lun uint32, block, version uint64) {
	x := uint64(lun)<<48 ^ block<<20 ^ version ^ 0x9e3779b97f4a7c15
	for i := 0; i+8 <= len(p); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.BigEndian.PutUint64(p[i:], x)
	}
}

// decodeBlock returns the version a block holds (0 for all zeros), or an
// error when it is no version of this block at all.
func decodeBlock(b []byte, lun uint32, block uint64) (version uint64, writer uint32, err error) {
	if len(b) != BlockSize {
		return 0, 0, fmt.Errorf("block of %d bytes", len(b))
	}
	if isZero(b) {
		return 0, 0, nil
	}
	if binary.BigEndian.Uint32(b) != blockMagic || binary.BigEndian.Uint32(b[28:]) != crc32.ChecksumIEEE(b[:28]) {
		return 0, 0, fmt.Errorf("no valid header (garbage or a torn block)")
	}
	gl, gb := binary.BigEndian.Uint32(b[4:]), binary.BigEndian.Uint64(b[8:])
	version, writer = binary.BigEndian.Uint64(b[16:]), binary.BigEndian.Uint32(b[24:])
	if gl != lun || gb != block {
		return 0, 0, fmt.Errorf("holds LUN %d block %d version %d (misplaced)", gl, gb, version)
	}
	want := make([]byte, BlockSize-32)
	fill(want, lun, block, version)
	for i := range want {
		if b[32+i] != want[i] {
			return 0, 0, fmt.Errorf("header says version %d, body differs at byte %d (a mix of versions)", version, 32+i)
		}
	}
	return version, writer, nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
