package agent

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/hatgt/hatgt/config"
	"github.com/hatgt/hatgt/scsi"
)

// TestAPTPLSurvivesRestart checks the wiring of the file reservation
// store: a registration made with APTPL=1 is there again after the LUN is
// closed and opened anew (as after a restart of hatgt).
func TestAPTPLSurvivesRestart(t *testing.T) {
	const devTargetName = "iqn.2026-11.io.hatgt:dev"
	l := config.LUN{Number: 0, Path: filepath.Join(t.TempDir(), "lun0.img"), Type: config.FileIO,
		Size: 1 << 20, Sector: 512, IOMode: config.WriteBack, Thin: true}
	nexus := &scsi.Nexus{InitiatorName: "iqn.2026-11.test:a", InitiatorPort: "iqn.2026-11.test:a,i,0x000000000001",
		TargetName: devTargetName, TargetPort: devTargetName + ",t,0x0001", RelativeTargetPort: 1, TargetPortGroup: 1}
	exec := func(d *scsi.Device, cdb, data []byte) *scsi.Response {
		for i := 0; i < 4; i++ { // past the POWER ON unit attention
			r := d.Execute(context.Background(), &scsi.Command{Nexus: nexus, CDB: cdb, Data: data, DataInLen: 255, DataOutLen: uint32(len(data))})
			if r.Status != scsi.StatusCheckCondition || r.Sense[2]&0xf != 6 {
				return r
			}
		}
		t.Fatal("unit attention does not clear")
		return nil
	}
	open := func() (*Single, *scsi.Device) {
		n := &Single{log: slog.New(slog.DiscardHandler), sizes: map[lunKey]int64{}}
		lu, err := n.openLUN(devTargetName, l)
		if err != nil {
			t.Fatal(err)
		}
		d := scsi.NewDevice(scsi.DeviceConfig{})
		if err := d.AddLU(0, lu); err != nil {
			t.Fatal(err)
		}
		return n, d
	}

	n, d := open()
	// PERSISTENT RESERVE OUT, REGISTER, key 0x1234, APTPL=1.
	params := make([]byte, 24)
	params[14], params[15] = 0x12, 0x34
	params[20] = 0x01
	if r := exec(d, []byte{0x5f, 0x00, 0, 0, 0, 0, 0, 0, 24, 0}, params); r.Status != scsi.StatusGood {
		t.Fatalf("REGISTER with APTPL: %v sense %x", r.Status, r.Sense)
	}
	n.closeAll()

	n, d = open()
	defer n.closeAll()
	// PERSISTENT RESERVE IN, READ KEYS.
	r := exec(d, []byte{0x5e, 0x00, 0, 0, 0, 0, 0, 0, 255, 0}, nil)
	if r.Status != scsi.StatusGood || len(r.Data) < 16 {
		t.Fatalf("READ KEYS: %v, %d bytes", r.Status, len(r.Data))
	}
	if r.Data[7] != 8 || r.Data[14] != 0x12 || r.Data[15] != 0x34 {
		t.Fatalf("after restart READ KEYS = %x, want key 0x1234", r.Data[:16])
	}
}
