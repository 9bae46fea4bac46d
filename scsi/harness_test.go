package scsi

import (
	"context"
	"testing"
)

// testNexus returns a distinct I_T nexus for initiator i.
func testNexus(i int) *Nexus {
	name := "iqn.2026-11.test:init" + string(rune('a'+i))
	return &Nexus{
		InitiatorName: name, InitiatorPort: name + ",i,0x000000000001",
		TargetName: "iqn.2026-11.test:tgt", TargetPort: "iqn.2026-11.test:tgt,t,0x0001",
		RelativeTargetPort: 1, TargetPortGroup: 1,
	}
}

// testDevice builds a device with one LU (LUN 0) over a fresh memory
// backend of the given number of blocks.
func testDevice(t *testing.T, blocks int64, cfg LUConfig) (*Device, *LU, *memBackend) {
	t.Helper()
	if cfg.BlockSize == 0 {
		cfg.BlockSize = 512
	}
	mb := newMemBackend(blocks * int64(cfg.BlockSize))
	lu, err := NewLU(mb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := NewDevice(DeviceConfig{})
	if err := d.AddLU(0, lu); err != nil {
		t.Fatal(err)
	}
	return d, lu, mb
}

// run executes cdb with data-out from nexus n on LUN 0.
func run(d *Device, n *Nexus, cdb []byte, data []byte, allocLen uint32) *Response {
	return d.Execute(context.Background(), &Command{Nexus: n, CDB: cdb, Data: data, DataInLen: allocLen, DataOutLen: uint32(len(data))})
}

// clearUA issues TEST UNIT READY until no unit attention is pending.
func clearUA(d *Device, n *Nexus) {
	for i := 0; i < 16; i++ {
		r := run(d, n, make([]byte, 6), nil, 0)
		if r.Status != StatusCheckCondition || len(r.Sense) < 3 || r.Sense[2]&0xf != byte(KeyUnitAttention) {
			return
		}
	}
}

// senseOf returns key and ASC of a CHECK CONDITION response (fails the
// test if there is none).
func senseOf(t *testing.T, r *Response) (SenseKey, ASC) {
	t.Helper()
	if r.Status != StatusCheckCondition || len(r.Sense) < 14 {
		t.Fatalf("want CHECK CONDITION with sense, got %v sense %x", r.Status, r.Sense)
	}
	return SenseKey(r.Sense[2] & 0xf), ASC(uint16(r.Sense[12])<<8 | uint16(r.Sense[13]))
}
