package replication

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"

	"github.com/hatgt/hatgt/scsi"
)

// A replicated Volume serves a scsi.LU: WRITE(10) lands on the mirror, and
// once the owner is deposed the LU answers NOT READY, ASYMMETRIC ACCESS
// STATE TRANSITION (so multipath retries elsewhere) instead of a medium
// error.
func TestVolumeBehindSCSI(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	v := c.open("a", Config{}, silentCoord{c.coord})
	lu, err := scsi.NewLU(v, scsi.LUConfig{BlockSize: 512, WriteCache: true, Thin: true})
	if err != nil {
		t.Fatal(err)
	}
	d := scsi.NewDevice(scsi.DeviceConfig{})
	if err := d.AddLU(0, lu); err != nil {
		t.Fatal(err)
	}
	n := &scsi.Nexus{InitiatorName: "iqn.test:i", InitiatorPort: "iqn.test:i,i,0x1", TargetName: "iqn.test:t", TargetPort: "iqn.test:t,t,0x1", RelativeTargetPort: 1, TargetPortGroup: 1}
	run := func(cdb, data []byte) *scsi.Response {
		return d.Execute(context.Background(), &scsi.Command{Nexus: n, CDB: cdb, Data: data, DataOutLen: uint32(len(data))})
	}
	for range 8 { // clear power-on unit attentions
		if r := run(make([]byte, 6), nil); r.Status == scsi.StatusGood {
			break
		}
	}
	write10 := func(lba uint32, data []byte) *scsi.Response {
		cdb := make([]byte, 10)
		cdb[0] = 0x2a
		binary.BigEndian.PutUint32(cdb[2:], lba)
		binary.BigEndian.PutUint16(cdb[7:], uint16(len(data)/512))
		return run(cdb, data)
	}
	data := pattern(7, 4096)
	if r := write10(16, data); r.Status != scsi.StatusGood {
		t.Fatalf("WRITE(10): status %v sense %x", r.Status, r.Sense)
	}
	if !bytes.Equal(c.read("b", 16*512, 4096), data) {
		t.Fatal("write through the LU did not reach the mirror")
	}
	if r := run([]byte{0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil); r.Status != scsi.StatusGood {
		t.Fatalf("SYNCHRONIZE CACHE: status %v sense %x", r.Status, r.Sense)
	}

	c.coord.NewEpoch(testLUN, "b")
	c.open("b", Config{}, nil) // fences b's own mirror, greets a's
	r := write10(32, data)
	if r.Status != scsi.StatusCheckCondition || len(r.Sense) < 14 {
		t.Fatalf("write by a deposed owner: status %v sense %x", r.Status, r.Sense)
	}
	key, asc := r.Sense[2]&0xf, uint16(r.Sense[12])<<8|uint16(r.Sense[13])
	if key != byte(scsi.KeyNotReady) || asc != uint16(scsi.ASCLUNotReadyTransition) {
		t.Fatalf("sense key %#x asc %#04x, want NOT READY / ASYMMETRIC ACCESS STATE TRANSITION", key, asc)
	}
}
