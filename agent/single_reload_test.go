package agent

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hatgt/hatgt/config"
	"github.com/hatgt/hatgt/scsi"
)

// reloadEnv is a node started from a config text; its files live in dir.
type reloadEnv struct {
	t   *testing.T
	dir string
	n   *Single
}

func (e *reloadEnv) parse(text string) *config.Config {
	e.t.Helper()
	text = strings.ReplaceAll(text, "DIR", e.dir)
	cfg, err := config.Parse("hatgt.conf", strings.NewReader("Portal 127.0.0.1:0\n"+text))
	if err != nil {
		e.t.Fatal(err)
	}
	return cfg
}

func newReloadEnv(t *testing.T, text string) *reloadEnv {
	e := &reloadEnv{t: t, dir: t.TempDir()}
	n, err := StartSingle(e.parse(text), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	e.n = n
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.Shutdown(ctx)
	})
	return e
}

// state is what runs: target -> LUN numbers exposed, and the open paths.
func (e *reloadEnv) state() (map[string][]uint64, []string) {
	luns := map[string][]uint64{}
	for name, dev := range e.n.devices {
		luns[name] = dev.LUNs()
	}
	var paths []string
	for _, st := range e.n.stores {
		paths = append(paths, strings.TrimPrefix(st.path, e.dir+"/"))
	}
	slices.Sort(paths)
	return luns, paths
}

func (e *reloadEnv) expect(luns map[string][]uint64, paths ...string) {
	e.t.Helper()
	gotLUNs, gotPaths := e.state()
	if !reflect.DeepEqual(gotLUNs, luns) || !reflect.DeepEqual(gotPaths, paths) {
		e.t.Fatalf("running: %v with %v\nwant:    %v with %v", gotLUNs, gotPaths, luns, paths)
	}
}

const (
	tA = "iqn.2026-11.io.x:a"
	tB = "iqn.2026-11.io.x:b"
)

func TestReloadAddsAndRemoves(t *testing.T) {
	e := newReloadEnv(t, "Target "+tA+"\nLun 0 Path=DIR/a0.img,Size=1M\nLun 1 Path=DIR/a1.img,Size=1M\n")
	e.expect(map[string][]uint64{tA: {0, 1}}, "a0.img", "a1.img")
	nexus := &scsi.Nexus{InitiatorName: "iqn.2026-11.io.x:host", InitiatorPort: "iqn.2026-11.io.x:host,i,0x000000000001",
		TargetName: tA, TargetPort: tA + ",t,0x0001", RelativeTargetPort: 1, TargetPortGroup: 1}
	tur := func() (status scsi.Status, asc uint16) {
		r := e.n.devices[tA].Execute(context.Background(), &scsi.Command{Nexus: nexus, CDB: make([]byte, 6)})
		if len(r.Sense) >= 14 {
			asc = uint16(r.Sense[12])<<8 | uint16(r.Sense[13])
		}
		return r.Status, asc
	}
	for i := 0; i < 4; i++ { // the power-on unit attention
		if st, _ := tur(); st == scsi.StatusGood {
			break
		}
	}

	// A new target, a LUN added to and one removed from a running target.
	err := e.n.reload(e.parse("Target " + tA + "\nLun 0 Path=DIR/a0.img,Size=1M\nLun 2 Path=DIR/a2.img,Size=1M\n" +
		"Target " + tB + "\nLun 0 Path=DIR/b0.img,Size=1M\nIncomingUser u user-secret-12\n"))
	if err != nil {
		t.Fatal(err)
	}
	e.expect(map[string][]uint64{tA: {0, 2}, tB: {0}}, "a0.img", "a2.img", "b0.img")
	if len(e.n.cfg.Targets) != 2 || len(e.n.cfg.Targets[1].IncomingUsers) != 1 {
		t.Errorf("running config %+v", e.n.cfg.Targets)
	}
	// The host's session on LUN 0 is told, so that it rescans.
	if st, asc := tur(); st != scsi.StatusCheckCondition || asc != 0x3f0e {
		t.Errorf("LUN 0 after the reload changed the LUNs: status %v ASC %#04x, want CHECK CONDITION REPORTED LUNS DATA HAS CHANGED (0x3f0e)", st, asc)
	}

	// A target removed: its files are closed (and can be opened again).
	if err := e.n.reload(e.parse("Target " + tB + "\nLun 0 Path=DIR/b0.img,Size=1M\n")); err != nil {
		t.Fatal(err)
	}
	e.expect(map[string][]uint64{tB: {0}}, "b0.img")
	if err := e.n.reload(e.parse("Target " + tA + "\nLun 0 Path=DIR/a0.img,Size=1M\nTarget " + tB + "\nLun 0 Path=DIR/b0.img,Size=1M\n")); err != nil {
		t.Fatalf("reopening a removed target's file: %v", err)
	}
	e.expect(map[string][]uint64{tA: {0}, tB: {0}}, "a0.img", "b0.img")
}

func TestReloadIsAllOrNothing(t *testing.T) {
	e := newReloadEnv(t, "Target "+tA+"\nLun 0 Path=DIR/a0.img,Size=1M\n")
	// b0 opens, b1 does not exist and has no Size: nothing may change.
	err := e.n.reload(e.parse("Target " + tB + "\nLun 0 Path=DIR/b0.img,Size=1M\nLun 1 Path=DIR/b1.img\n"))
	if err == nil || !strings.Contains(err.Error(), "b1.img does not exist") {
		t.Fatalf("reload = %v, want b1.img's error", err)
	}
	e.expect(map[string][]uint64{tA: {0}}, "a0.img")
	if e.n.cfg.Targets[0].Name != tA {
		t.Errorf("running config changed: %+v", e.n.cfg.Targets)
	}
	// b0 was closed again: a reload that can open everything works.
	if err := e.n.reload(e.parse("Target " + tB + "\nLun 0 Path=DIR/b0.img,Size=1M\n")); err != nil {
		t.Fatal(err)
	}
	e.expect(map[string][]uint64{tB: {0}}, "b0.img")
}

func TestReloadKeepsWhatNeedsARestart(t *testing.T) {
	e := newReloadEnv(t, "Target "+tA+"\nLun 0 Path=DIR/a0.img,Size=1M\nLun 1 Path=DIR/a1.img,Size=1M\n")
	// A running LUN's settings, and the portals, stay as they run.
	cfg := e.parse("Target " + tA + "\nLun 0 Path=DIR/a0.img,Size=1M,IOMode=ro\nLun 1 Path=DIR/a1.img,Size=1M\n")
	cfg.Portals = []string{"127.0.0.1:1"}
	if err := e.n.reload(cfg); err != nil {
		t.Fatal(err)
	}
	if l := e.n.cfg.Targets[0].LUNs[0]; l.IOMode != config.WriteThrough {
		t.Errorf("running LUN 0 changed to %+v", l)
	}
	if p := e.n.cfg.Portals; len(p) != 1 || p[0] != "127.0.0.1:0" {
		t.Errorf("running portals %v", p)
	}
	// A file cannot move from one LUN to another in one reload.
	err := e.n.reload(e.parse("Target " + tA + "\nLun 0 Path=DIR/a0.img,Size=1M\nTarget " + tB + "\nLun 0 Path=DIR/a1.img,Size=1M\n"))
	if err == nil || !strings.Contains(err.Error(), "still served as "+tA+"/1") {
		t.Fatalf("moving a file: %v", err)
	}
	e.expect(map[string][]uint64{tA: {0, 1}}, "a0.img", "a1.img")
}

func TestReloadUpdatesDiscoveryCHAPAndRules(t *testing.T) {
	e := newReloadEnv(t, "Target "+tA+"\nLun 0 Path=DIR/a0.img,Size=1M\n")
	allow := filepath.Join(e.dir, "initiators.allow")
	if err := os.WriteFile(allow, []byte("ALL 192.0.2.0/24\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := e.parse("IncomingUser joe joe-disc-secret\nInitiatorsAllowFile " + allow + "\nTarget " + tA + "\nLun 0 Path=DIR/a0.img,Size=1M\nMaxBurstLength 65536\n")
	if err := cfg.LoadInitiatorFiles(); err != nil {
		t.Fatal(err)
	}
	if err := e.n.reload(cfg); err != nil {
		t.Fatal(err)
	}
	if e.n.cfg.InitiatorsAllow == nil || len(e.n.cfg.DiscoveryUsers) != 1 || *e.n.cfg.Targets[0].Login.MaxBurstLength != 65536 {
		t.Errorf("running config %+v", e.n.cfg)
	}
	e.expect(map[string][]uint64{tA: {0}}, "a0.img")
}
