package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestAPIRefusesImpossibleLUNsUpFront: through a follower's API, every
// LUN a new user could ask for by mistake is refused before anything is
// proposed, with a message that says what to write instead, and the state
// holds no LUN afterwards.
func TestAPIRefusesImpossibleLUNsUpFront(t *testing.T) {
	c := threeNodes(t)
	f := c.follower()
	cl := NewClient(f.cfg.APIAddr, testToken, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.CreateTarget(ctx, iqnA, ""); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		q    LUNRequest
		code *Error
		says []string
	}{
		{"relative path", LUNRequest{Size: 1 << 20, Path: "relative.img"}, ErrInvalid, []string{"relative", "/var/lib/hatgt/relative.img", "no path"}},
		{"unclean path", LUNRequest{Size: 1 << 20, Path: "/srv//a/../disk.img"}, ErrInvalid, []string{"write /srv/disk.img"}},
		{"blockio without path", LUNRequest{Size: 1 << 20, Backing: BackingBlock}, ErrInvalid, []string{"--path /dev/"}},
		{"not a sector multiple", LUNRequest{Size: 1000}, ErrBadSize, []string{"multiple of the sector size 512", "use 1KiB (1024 bytes)"}},
		{"not a 4K multiple", LUNRequest{Size: 6 << 10, SectorSize: 4096}, ErrBadSize, []string{"use 8KiB"}},
		{"bad sector", LUNRequest{Size: 1 << 20, SectorSize: 1024}, ErrBadSize, []string{"--sector 512 or --sector 4096"}},
		{"larger than a LUN", LUNRequest{Size: 1 << 60}, ErrBadSize, []string{"at most 128PiB with 512-byte sectors"}},
		{"more replicas than nodes", LUNRequest{Size: 1 << 20, Replicas: 4}, ErrNotEnoughNodes, []string{"cluster has 3 nodes", "--replicas 1 to 3"}},
		{"negative replicas", LUNRequest{Size: 1 << 20, Replicas: -1}, ErrInvalid, []string{"at least 1"}},
		{"unknown node", LUNRequest{Size: 1 << 20, Placement: []string{"n1", "n9"}}, ErrUnknownNode, []string{`"n9"`, "n1, n2, n3"}},
	} {
		err := cl.CreateLUN(ctx, iqnA, tc.q)
		if !errors.Is(err, tc.code) {
			t.Errorf("%s: got %v, want %s", tc.name, err, tc.code.Code)
			continue
		}
		for _, w := range tc.says {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", tc.name, err, w)
			}
		}
	}
	if n := len(f.fsm.State().Targets[iqnA].LUNs); n != 0 {
		t.Errorf("%d LUNs in the state after only refused creates", n)
	}

	// Two LUNs on one file of one node would overwrite each other.
	if err := cl.CreateLUN(ctx, iqnA, LUNRequest{LUN: 0, Size: 1 << 20, Path: "/srv/a.img", Placement: []string{"n1"}}); err != nil {
		t.Fatal(err)
	}
	err := cl.CreateLUN(ctx, iqnA, LUNRequest{LUN: 1, Size: 1 << 20, Path: "/srv/a.img", Placement: []string{"n2", "n1"}})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "already the backing store of LUN 0") {
		t.Errorf("a second LUN on /srv/a.img of n1: %v", err)
	}
	if err := cl.CreateLUN(ctx, iqnA, LUNRequest{LUN: 1, Size: 1 << 20, Path: "/srv/a.img", Placement: []string{"n2"}}); err != nil {
		t.Errorf("the same path on another node: %v", err)
	}
}

// TestNamesFollowTheConfigFile: the cluster takes the names the config
// file takes, and folds case as it does: :DEMO and :demo are one target,
// stored lower case, found whatever the case it is named in.
func TestNamesFollowTheConfigFile(t *testing.T) {
	c := threeNodes(t)
	f := c.follower()
	cl := NewClient(f.cfg.APIAddr, testToken, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	err := cl.CreateTarget(ctx, "iqn.2026-11.io.example:under_score", "")
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `'_' is not allowed`) {
		t.Errorf("a name with '_': %v", err)
	}
	for _, bad := range []string{"iqn.2026-11", "disk1", "iqn.20-11.x:y"} {
		if err := cl.CreateTarget(ctx, bad, ""); !errors.Is(err, ErrInvalid) {
			t.Errorf("target name %q: %v", bad, err)
		}
	}
	if err := cl.CreateTarget(ctx, "iqn.2026-11.io.Example:DEMO", ""); err != nil {
		t.Fatal(err)
	}
	const demo = "iqn.2026-11.io.example:demo"
	if _, ok := f.fsm.State().Targets[demo]; !ok {
		t.Fatalf("targets %v: want %s, lower case", f.fsm.State().Targets, demo)
	}
	if err := cl.CreateTarget(ctx, demo, ""); !errors.Is(err, ErrTargetExists) {
		t.Errorf(":demo after :DEMO: %v, want target_exists", err)
	}
	// Named in any case, it is the same target.
	if err := cl.CreateLUN(ctx, "IQN.2026-11.IO.EXAMPLE:Demo", LUNRequest{LUN: 0, Size: 1 << 20}); err != nil {
		t.Errorf("LUN on the target named in upper case: %v", err)
	}
	if err := cl.AddACL(ctx, demo, "iqn.1993-08.org.debian:01:HOST1"); err != nil {
		t.Fatal(err)
	}
	if err := cl.AddACL(ctx, demo, "iqn.1993-08.org.debian:01:host1"); !errors.Is(err, ErrACLExists) {
		t.Errorf("the same initiator in lower case: %v", err)
	}
	if err := cl.AddACL(ctx, demo, "iqn.1993-08.org.debian:01:bad_name"); !errors.Is(err, ErrInvalid) {
		t.Errorf("an initiator name with '_': %v", err)
	}
	if acl := f.fsm.State().Targets[demo].ACL; len(acl) != 1 || acl[0] != "iqn.1993-08.org.debian:01:host1" {
		t.Errorf("ACL %v, want the initiator lower case", acl)
	}
	if err := cl.RemoveACL(ctx, "iqn.2026-11.io.example:DEMO", "iqn.1993-08.org.debian:01:Host1"); err != nil {
		t.Errorf("remove the initiator named in another case: %v", err)
	}
	if err := cl.DeleteLUN(ctx, "iqn.2026-11.io.example:DEMO", 0); err != nil {
		t.Errorf("delete the LUN through the upper-case name: %v", err)
	}
	if err := cl.DeleteTarget(ctx, "iqn.2026-11.io.example:DEMO"); err != nil {
		t.Errorf("delete through the upper-case name: %v", err)
	}
}

// TestResolveIQNKeepsOldMixedCaseTargets: a state written before names
// were stored lower case may hold a mixed-case target; it is found by any
// spelling, and a new target that differs only in case is refused.
func TestResolveIQNKeepsOldMixedCaseTargets(t *testing.T) {
	s := NewState()
	s.Targets["iqn.2026-11.io.example:OLD"] = &Target{IQN: "iqn.2026-11.io.example:OLD", LUNs: map[uint64]*LUN{}}
	for _, name := range []string{"iqn.2026-11.io.example:OLD", "iqn.2026-11.io.example:old", "IQN.2026-11.io.example:Old"} {
		if got := s.resolveIQN(name); got != "iqn.2026-11.io.example:OLD" {
			t.Errorf("resolveIQN(%q) = %q", name, got)
		}
	}
	if got := s.resolveIQN("iqn.2026-11.io.example:NEW"); got != "iqn.2026-11.io.example:new" {
		t.Errorf("a new name resolves to %q, want it lower case", got)
	}
	p := TargetCreate{IQN: "iqn.2026-11.io.example:old"}
	if err := checkTargetCreate(s, &p); !errors.Is(err, ErrTargetExists) {
		t.Errorf("a target differing only in case from an old one: %v", err)
	}
}
