package target

import (
	"bytes"
	"testing"

	"github.com/hatgt/hatgt/scsi"
)

func TestLoginAndTestUnitReady(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{})
	if in.tsih == 0 {
		t.Fatal("TSIH 0 after login")
	}
	in.ready()
	if r := in.exec(cdbTUR, false, nil, 0); r.status != scsi.StatusGood {
		t.Fatalf("TUR status %v", r.status)
	}
}

func TestLoginUnknownTargetFails(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	st, err := in.login(loginOpts{target: "iqn.2026-11.io.hatgt:nope"})
	if err != nil {
		t.Fatal(err)
	}
	if st != LoginTargetNotFound {
		t.Fatalf("status %#04x, want target not found", uint16(st))
	}
}

func TestWriteReadImmediateData(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{})
	in.ready()
	data := ftPattern(8*512, 1)
	if r := in.exec(cdbWrite10(10, 8), false, data, uint32(len(data))); r.status != scsi.StatusGood {
		t.Fatalf("write status %v sense %x", r.status, r.sense)
	}
	if !bytes.Equal(env.backend.bytes(10*512, 18*512), data) {
		t.Fatal("backend does not hold the written data")
	}
	r := in.exec(cdbRead10(10, 8), true, nil, uint32(len(data)))
	if r.status != scsi.StatusGood || !bytes.Equal(r.data, data) {
		t.Fatalf("read back: status %v, equal %v", r.status, bytes.Equal(r.data, data))
	}
	if r.flags != 0 || r.residual != 0 {
		t.Fatalf("residual flags %#x count %d, want none", r.flags, r.residual)
	}
}

func TestWriteWithR2TsAndSmallBursts(t *testing.T) {
	env := newFTEnv(t, func(c *ServerConfig) {
		c.MaxBurstLength = 4096
		c.FirstBurstLength = 1024
		c.MaxOutstandingR2T = 2
	})
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{keys: []KV{{"MaxRecvDataSegmentLength", "4096"}}})
	in.ready()
	const n = 128 // 64 KiB
	data := ftPattern(n*512, 2)
	r := in.exec(cdbWrite10(100, n), false, data, uint32(len(data)))
	if r.status != scsi.StatusGood {
		t.Fatalf("write status %v sense %x", r.status, r.sense)
	}
	if len(r.r2ts) < (len(data)-1024)/4096 {
		t.Fatalf("%d R2Ts, want at least %d", len(r.r2ts), (len(data)-1024)/4096)
	}
	next := uint32(1024) // after immediate data of FirstBurstLength
	for i, p := range r.r2ts {
		if p.DataSN() != uint32(i) {
			t.Fatalf("R2T %d has R2TSN %d", i, p.DataSN())
		}
		if p.BufferOffset() != next || p.U32(offDesiredLen) > 4096 {
			t.Fatalf("R2T %d: offset %d len %d, want offset %d len <= 4096", i, p.BufferOffset(), p.U32(offDesiredLen), next)
		}
		next += p.U32(offDesiredLen)
	}
	if next != uint32(len(data)) {
		t.Fatalf("R2Ts cover up to %d, want %d", next, len(data))
	}
	if !bytes.Equal(env.backend.bytes(100*512, (100+n)*512), data) {
		t.Fatal("backend does not hold the written data")
	}
}

func TestWriteInitialR2TNoImmediateData(t *testing.T) {
	env := newFTEnv(t, func(c *ServerConfig) { c.InitialR2T = true; c.DisableImmediateData = true })
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{keys: []KV{{"InitialR2T", "Yes"}, {"ImmediateData", "No"}}})
	in.ready()
	data := ftPattern(16*512, 3)
	r := in.exec(cdbWrite10(0, 16), false, data, uint32(len(data)))
	if r.status != scsi.StatusGood || len(r.r2ts) == 0 || r.r2ts[0].BufferOffset() != 0 {
		t.Fatalf("status %v, %d R2Ts", r.status, len(r.r2ts))
	}
	if !bytes.Equal(env.backend.bytes(0, 16*512), data) {
		t.Fatal("backend does not hold the written data")
	}
}

func TestUnsolicitedDataOut(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{keys: []KV{{"ImmediateData", "No"}, {"FirstBurstLength", "8192"}}})
	in.ready()
	data := ftPattern(32*512, 4)
	r := in.exec(cdbWrite10(200, 32), false, data, uint32(len(data)))
	if r.status != scsi.StatusGood {
		t.Fatalf("status %v sense %x", r.status, r.sense)
	}
	if len(r.r2ts) == 0 || r.r2ts[0].BufferOffset() != 8192 {
		t.Fatalf("first R2T should start after the unsolicited burst: %d R2Ts", len(r.r2ts))
	}
	if !bytes.Equal(env.backend.bytes(200*512, 232*512), data) {
		t.Fatal("backend does not hold the written data")
	}
}

func TestDataInSplitting(t *testing.T) {
	env := newFTEnv(t, func(c *ServerConfig) { c.MaxBurstLength = 8192; c.FirstBurstLength = 4096 })
	env.backend.fill(0, ftPattern(64*512, 5))
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{keys: []KV{{"MaxRecvDataSegmentLength", "2048"}, {"MaxBurstLength", "8192"}, {"FirstBurstLength", "4096"}}})
	in.ready()
	r := in.exec(cdbRead10(0, 64), true, nil, 64*512)
	if r.status != scsi.StatusGood || !bytes.Equal(r.data, env.backend.bytes(0, 64*512)) {
		t.Fatalf("status %v, data equal %v", r.status, bytes.Equal(r.data, env.backend.bytes(0, 64*512)))
	}
	if len(r.dataIns) != 64*512/2048 {
		t.Fatalf("%d Data-In PDUs, want %d", len(r.dataIns), 64*512/2048)
	}
	for i, p := range r.dataIns {
		if len(p.Data) > 2048 {
			t.Fatalf("Data-In %d carries %d bytes", i, len(p.Data))
		}
		if p.DataSN() != uint32(i) {
			t.Fatalf("Data-In %d has DataSN %d", i, p.DataSN())
		}
		endOfBurst := (int(p.BufferOffset())+len(p.Data))%8192 == 0
		if p.Final() != endOfBurst {
			t.Fatalf("Data-In %d at %d: F=%v, want %v", i, p.BufferOffset(), p.Final(), endOfBurst)
		}
		last := i == len(r.dataIns)-1
		if (p.Flags()&flagStatus != 0) != last {
			t.Fatalf("Data-In %d: S bit %v", i, !last)
		}
	}
}

func TestReadResiduals(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{})
	in.ready()
	// One block asked for, two expected: underflow of one block.
	r := in.exec(cdbRead10(0, 1), true, nil, 1024)
	if r.status != scsi.StatusGood || len(r.data) != 512 || r.flags != flagUnderflow || r.residual != 512 {
		t.Fatalf("underflow: status %v len %d flags %#x residual %d", r.status, len(r.data), r.flags, r.residual)
	}
	// Two blocks asked for, 200 bytes expected: overflow, data truncated.
	r = in.exec(cdbRead10(0, 2), true, nil, 200)
	if r.status != scsi.StatusGood || len(r.data) != 200 || r.flags != flagOverflow || r.residual != 824 {
		t.Fatalf("overflow: status %v len %d flags %#x residual %d", r.status, len(r.data), r.flags, r.residual)
	}
}

func TestCheckConditionCarriesSense(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{})
	in.ready()
	r := in.exec(cdbRead10(ftBlocks, 1), true, nil, 512) // beyond the end
	if r.status != scsi.StatusCheckCondition {
		t.Fatalf("status %v, want CHECK CONDITION", r.status)
	}
	if len(r.sense) < 14 || r.sense[2]&0x0f != byte(scsi.KeyIllegalRequest) || r.sense[12] != 0x21 {
		t.Fatalf("sense %x, want ILLEGAL REQUEST / LBA OUT OF RANGE", r.sense)
	}
	if len(r.data) != 0 || r.flags != flagUnderflow || r.residual != 512 {
		t.Fatalf("data %d flags %#x residual %d", len(r.data), r.flags, r.residual)
	}
}

func TestUnsupportedLUNAddressing(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{})
	in.ready()
	p := in.scsiCmd(cdbTUR, false, false, 0)
	p.SetLUN(0x8000_0000_0000_0000) // extended logical unit addressing
	in.send(p)
	r := in.mustRecv()
	if r.Opcode() != OpSCSIResponse || scsi.Status(r.BHS[3]) != scsi.StatusCheckCondition {
		t.Fatalf("got %v status %#x, want CHECK CONDITION", r.Opcode(), r.BHS[3])
	}
}

func TestBidirectionalCommandRefused(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{})
	in.ready()
	p := in.scsiCmd(cdbWrite10(0, 1), true, true, 512)
	in.send(p)
	r := in.mustRecv()
	if r.Opcode() != OpSCSIResponse || scsi.Status(r.BHS[3]) != scsi.StatusCheckCondition {
		t.Fatalf("got %v status %#x", r.Opcode(), r.BHS[3])
	}
	in.ready() // the connection still works
}

// sizedDevice adds the optional DataOutLength capability to a device, the
// way the scsi package is expected to offer it.
type sizedDevice struct {
	*scsi.Device
}

func (d sizedDevice) DataOutLength(lun uint64, cdb []byte) (uint32, bool) {
	if len(cdb) >= 10 && cdb[0] == 0x2a { // WRITE(10) of 512-byte blocks
		return (uint32(cdb[7])<<8 | uint32(cdb[8])) * 512, true
	}
	return 0, false
}

func TestWriteResidualsFromDevice(t *testing.T) {
	env := newFTEnv(t, nil)
	const name = ftIQN + "-sized"
	if err := env.srv.addTarget(TargetConfig{Name: name, Device: env.dev}, sizedDevice{env.dev}); err != nil {
		t.Fatal(err)
	}
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{target: name})
	in.ready()
	// One block written, two expected: underflow of one block.
	r := in.exec(cdbWrite10(0, 1), false, ftPattern(1024, 1), 1024)
	if r.status != scsi.StatusGood || r.flags != flagUnderflow || r.residual != 512 {
		t.Fatalf("underflow: status %v flags %#x residual %d", r.status, r.flags, r.residual)
	}
	// One block written, 200 bytes expected: overflow of 312 bytes.
	r = in.exec(cdbWrite10(0, 1), false, ftPattern(200, 1), 200)
	if r.flags != flagOverflow || r.residual != 312 {
		t.Fatalf("overflow: status %v flags %#x residual %d", r.status, r.flags, r.residual)
	}
}
