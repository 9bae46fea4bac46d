package agent

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hatgt/hatgt/config"
	"github.com/hatgt/hatgt/scsi"
)

// TestMissingFileErrors checks what a LUN whose file cannot be opened
// reports: a missing directory is named as such, even with Size= given.
func TestMissingFileErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		lun     config.LUN
		want    []string
		notWant string
	}{
		{"missing directory", config.LUN{Path: filepath.Join(dir, "srv", "iscsi", "db.img"), Type: config.FileIO, Size: 1 << 20, Sector: 512, IOMode: config.WriteThrough},
			[]string{"db.img does not exist, nor does its directory " + filepath.Join(dir, "srv", "iscsi"), "mkdir -p"}, "give Size="},
		{"missing file without Size", config.LUN{Path: filepath.Join(dir, "db.img"), Type: config.FileIO, Sector: 512, IOMode: config.WriteThrough},
			[]string{"db.img does not exist", "give Size= to create it"}, ""},
		{"read-only never creates", config.LUN{Path: filepath.Join(dir, "ro.img"), Type: config.FileIO, Size: 1 << 20, Sector: 512, IOMode: config.ReadOnly},
			[]string{"ro.img does not exist", "IOMode=ro"}, "give Size="},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := &Single{log: slog.New(slog.DiscardHandler), sizes: map[lunKey]int64{}}
			_, err := n.openLUN("iqn.2026-11.io.x:y", tc.lun)
			if err == nil {
				n.closeAll()
				t.Fatal("openLUN succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if tc.notWant != "" && strings.Contains(err.Error(), tc.notWant) {
				t.Errorf("error %q says %q", err, tc.notWant)
			}
		})
	}
}

// TestScsiIDSetsDesignator: a LUN with ScsiId reports the NAA designator
// derived from it in VPD page 0x83, the same in any target; without one,
// the designator comes from the target name and LUN number.
func TestScsiIDSetsDesignator(t *testing.T) {
	dir := t.TempDir()
	naaOf := func(target string, l config.LUN) []byte {
		t.Helper()
		n := &Single{log: slog.New(slog.DiscardHandler), sizes: map[lunKey]int64{}}
		lu, err := n.openLUN(target, l)
		if err != nil {
			t.Fatal(err)
		}
		defer n.closeAll()
		d := scsi.NewDevice(scsi.DeviceConfig{})
		if err := d.AddLU(0, lu); err != nil {
			t.Fatal(err)
		}
		nexus := &scsi.Nexus{InitiatorName: "iqn.2026-11.test:a", InitiatorPort: "iqn.2026-11.test:a,i,0x000000000001", TargetName: target}
		// INQUIRY, EVPD, page 0x83.
		r := d.Execute(context.Background(), &scsi.Command{Nexus: nexus, CDB: []byte{0x12, 0x01, 0x83, 0, 255, 0}, DataInLen: 255})
		if r.Status != scsi.StatusGood {
			t.Fatalf("INQUIRY VPD 0x83: status %v sense %x", r.Status, r.Sense)
		}
		for b := r.Data[4:]; len(b) >= 4; b = b[4+int(b[3]):] {
			if b[1]&0x0f == 3 { // NAA
				return b[4 : 4+int(b[3])]
			}
		}
		t.Fatalf("no NAA designator in % x", r.Data)
		return nil
	}
	lun := func(name, id string) config.LUN {
		return config.LUN{Path: filepath.Join(dir, name), Type: config.FileIO, Size: 1 << 20, Sector: 512, IOMode: config.WriteThrough, ScsiID: id}
	}
	want := ScsiIDDesignator("xyz")
	a := naaOf("iqn.2026-11.io.x:a", lun("a.img", "xyz"))
	b := naaOf("iqn.2026-11.io.x:b", lun("b.img", "xyz"))
	c := naaOf("iqn.2026-11.io.x:a", lun("c.img", ""))
	if !bytes.Equal(a, want[:]) || !bytes.Equal(b, want[:]) {
		t.Errorf("NAA with ScsiId=xyz: %x and %x, want %x", a, b, want)
	}
	if _, derived := LUNIdentity("iqn.2026-11.io.x:a", 0); !bytes.Equal(c, derived[:]) {
		t.Errorf("NAA without ScsiId: %x, want %x", c, derived)
	}
	if other := ScsiIDDesignator("xyz2"); other == want || other[0]>>4 != 6 {
		t.Errorf("designator of another ScsiId: %x", other)
	}
}
