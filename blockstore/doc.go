// Package blockstore holds the backends a logical unit stores its blocks
// in: regular files (sparse, punch-hole discard, SEEK_DATA/SEEK_HOLE), block
// devices (O_DIRECT, BLKDISCARD) and, for tests, memory and crash-simulating
// stores. It knows nothing of SCSI: byte offsets, lengths, flush, discard.
package blockstore

import _ "golang.org/x/sys/unix" // keep x/sys pinned in go.mod
