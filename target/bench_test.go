package target

import (
	"testing"
)

// benchIO runs b.N commands of size bytes (reads or writes) with depth
// commands in flight on one connection.
func benchIO(b *testing.B, write bool, size, depth int) {
	env := newFTEnvTB(b)
	in := ftDial(b, env.addr)
	in.mustLogin(loginOpts{})
	in.ready()
	data := ftPattern(size, 1)
	blocks := uint16(size / 512)
	issue := func(i int) {
		lba := uint32(i*int(blocks)) % (ftBlocks - uint32(blocks))
		var p *PDU
		if write {
			p = in.scsiCmd(cdbWrite10(lba, blocks), false, true, uint32(size))
			p.Data = data
		} else {
			p = in.scsiCmd(cdbRead10(lba, blocks), true, false, uint32(size))
		}
		in.send(p)
	}
	b.SetBytes(int64(size))
	b.ResetTimer()
	sent, done := 0, 0
	for ; sent < min(depth, b.N); sent++ {
		issue(sent)
	}
	for done < b.N {
		r := in.mustRecv()
		final := r.Opcode() == OpSCSIResponse || (r.Opcode() == OpDataIn && r.Flags()&flagStatus != 0)
		if !final {
			continue
		}
		if r.BHS[3] != 0 {
			b.Fatalf("status %#x", r.BHS[3])
		}
		done++
		if sent < b.N {
			issue(sent)
			sent++
		}
	}
}

func BenchmarkRead4KQD32(b *testing.B)   { benchIO(b, false, 4096, 32) }
func BenchmarkWrite4KQD32(b *testing.B)  { benchIO(b, true, 4096, 32) }
func BenchmarkRead256KQD8(b *testing.B)  { benchIO(b, false, 256<<10, 8) }
func BenchmarkWrite256KQD8(b *testing.B) { benchIO(b, true, 256<<10, 8) }
