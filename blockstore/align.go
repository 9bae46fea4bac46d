package blockstore

import "unsafe"

// alignedBuf returns n bytes whose first byte sits at a multiple of align
// (a power of two), as O_DIRECT needs. Go does not promise any alignment
// for make([]byte), so over-allocate and slice.
func alignedBuf(n, align int) []byte {
	b := make([]byte, n+align)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) & uintptr(align-1)); r != 0 {
		skip = align - r
	}
	return b[skip : skip+n : skip+n]
}

// isAligned reports whether p's start and length and off are multiples of
// align (a power of two). An empty p counts as aligned.
func isAligned(p []byte, off int64, align int) bool {
	if len(p) == 0 {
		return off&int64(align-1) == 0
	}
	mask := uintptr(align - 1)
	return uintptr(unsafe.Pointer(unsafe.SliceData(p)))&mask == 0 &&
		uintptr(len(p))&mask == 0 && uintptr(off)&mask == 0
}
