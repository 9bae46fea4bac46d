package test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hatgt/hatgt/cluster"
)

// TestClusterFirstHour replays, with real processes and the CLI, what a
// new user met in a first hour with "hatgt dev --nodes 3": LUNs that no
// node could serve were accepted (exit 0, status "owned, in sync"), a
// failed create left a file, a relative --path landed in a node's working
// directory, --size 1GB and --replicas 0 passed silently, the cluster took
// names the config file refuses and kept :DEMO and :demo apart, and a
// list through a follower missed what was just created through it.
func TestClusterFirstHour(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three hatgt processes; skipped with -short")
	}
	c := newTestCluster(t, 3)
	const iqn = "iqn.2026-11.io.hatgt:first-hour"
	steps := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"ReadsThroughAFollowerSeeItsWrites", func(t *testing.T) { followerReadsItsWrites(t, c, iqn) }},
		{"NamesAsInTheConfigFile", func(t *testing.T) { namesAsInTheConfigFile(t, c) }},
		{"ImpossibleLUNsRefusedLeavingNothing", func(t *testing.T) { impossibleLUNsRefused(t, c, iqn) }},
		{"StatusShowsServedLUNs", func(t *testing.T) { statusShowsServedLUNs(t, c, iqn) }},
		{"StatusShowsAFailedCopy", func(t *testing.T) { statusShowsAFailedCopy(t, c, iqn) }},
	}
	for _, s := range steps {
		ok := t.Run(s.name, func(t *testing.T) { c.t = t; s.fn(t) })
		c.t = t
		if !ok {
			return
		}
	}
}

// followerReadsItsWrites: "target create" then "target list" through the
// same follower, five times: each list shows its create; likewise "lun
// create" then "lun list".
func followerReadsItsWrites(t *testing.T, c *testCluster, iqn string) {
	f := c.followers()[0]
	for i := range 5 {
		name := fmt.Sprintf("iqn.2026-11.io.hatgt:ryw%d", i)
		f.hatgt("target", "create", name)
		if out := f.hatgt("target", "list"); !strings.Contains(out, name) {
			t.Errorf("target list through %s right after creating %s through it:\n%s", f.id, name, out)
		}
	}
	f.hatgt("target", "create", iqn)
	f.hatgt("lun", "create", iqn, "--lun", "0", "--size", "64M")
	if out := f.hatgt("lun", "list", iqn); !strings.Contains(out, "64MiB") {
		t.Errorf("lun list through %s right after lun create through it:\n%s", f.id, out)
	}
}

// namesAsInTheConfigFile: a name the config file refuses is refused;
// :DEMO is stored as :demo, and :demo is then the same target.
func namesAsInTheConfigFile(t *testing.T, c *testCluster) {
	f := c.followers()[0]
	out, err := f.tryHatgt("target", "create", "iqn.2026-11.io.hatgt:under_score")
	if err == nil || !strings.Contains(out, "'_' is not allowed") {
		t.Errorf("target create :under_score: %v\n%s", err, out)
	}
	f.hatgt("target", "create", "iqn.2026-11.io.hatgt:DEMO")
	out, err = f.tryHatgt("target", "create", "iqn.2026-11.io.hatgt:demo")
	if err == nil || !strings.Contains(out, "already exists") {
		t.Errorf("target create :demo after :DEMO: %v\n%s", err, out)
	}
	n := 0
	for _, ts := range f.statusJSON().Targets {
		if strings.EqualFold(ts.IQN, "iqn.2026-11.io.hatgt:demo") {
			n++
			if ts.IQN != "iqn.2026-11.io.hatgt:demo" {
				t.Errorf("target stored as %s, want lower case", ts.IQN)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d targets named :demo in some case, want 1", n)
	}
	f.hatgt("target", "delete", "iqn.2026-11.io.hatgt:Demo")
}

// impossibleLUNsRefused: each LUN of the user's list is refused, exit
// status non-zero, with a message saying what failed (on which node) and
// what to write instead; no LUN is in the state and no backing file on any
// node's disk, nor in the nodes' working directory.
func impossibleLUNsRefused(t *testing.T, c *testCluster, iqn string) {
	f := c.followers()[0]
	bigFails := fileSystemRefuses1P(t)
	cases := []struct {
		args []string
		says []string
	}{
		{[]string{"--lun", "1", "--size", "1G", "--type", "blockio", "--path", "/dev/nonexistent"},
			[]string{"LUN 1 of " + iqn + " not created", "no block device /dev/nonexistent on this node", "Nothing was created"}},
		{[]string{"--lun", "3", "--size", "1G", "--path", "relative.img"}, []string{"relative", "absolute path"}},
		{[]string{"--lun", "4", "--size", "1GB"}, []string{"write 1G for 1 GiB", "1000000000 for 1×10^9 bytes"}},
		{[]string{"--lun", "5", "--size", "1G", "--replicas", "0"}, []string{"--replicas 0"}},
		{[]string{"--lun", "6", "--size", "1G", "--replicas", "4"}, []string{"cluster has 3 nodes", "--replicas 1 to 3"}},
		{[]string{"--lun", "7", "--size", "1000"}, []string{"not a multiple of the sector size 512", "1KiB"}},
	}
	if bigFails {
		cases = append(cases, struct {
			args []string
			says []string
		}{[]string{"--lun", "2", "--size", "1P"}, []string{"LUN 2 of " + iqn + " not created", "file too large", "smaller --size"}})
	}
	for _, tc := range cases {
		args := append([]string{"lun", "create", iqn}, tc.args...)
		out, err := f.tryHatgt(args...)
		var ee *exec.ExitError
		if err == nil || !errors.As(err, &ee) {
			t.Errorf("hatgt %s: exit status %v, want a failure\n%s", strings.Join(args, " "), err, out)
			continue
		}
		for _, w := range tc.says {
			if !strings.Contains(out, w) {
				t.Errorf("hatgt %s says:\n%s\nwithout %q", strings.Join(args, " "), out, w)
			}
		}
	}
	// Only LUN 0 (created before) exists, in every node's answer.
	for _, p := range c.nodes {
		st := p.statusJSON()
		for _, ts := range st.Targets {
			if ts.IQN != iqn {
				continue
			}
			if len(ts.LUNs) != 1 || ts.LUNs[0].LUN.LUN != 0 {
				t.Errorf("%s: LUNs of %s after the refused creates: %+v", p.id, iqn, ts.LUNs)
			}
		}
		for _, prob := range st.Problems {
			t.Errorf("%s: status shows a problem after refused creates only: %s", p.id, prob)
		}
	}
	// No file: only LUN 0's, on its owner.
	for _, p := range c.nodes {
		filepath.WalkDir(filepath.Join(p.dataDir, "luns"), func(path string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && !strings.HasSuffix(path, "lun0-1.img") {
				t.Errorf("%s: %s left behind", p.id, path)
			}
			return nil
		})
	}
	wd, _ := os.Getwd()
	if _, err := os.Stat(filepath.Join(wd, "relative.img")); err == nil {
		t.Errorf("relative.img created in the nodes' working directory %s", wd)
		os.Remove(filepath.Join(wd, "relative.img"))
	}
}

// fileSystemRefuses1P tells whether the file system of the test's data
// dirs cannot hold a 1 PiB sparse file (ext4: 16 TiB at most).
func fileSystemRefuses1P(t *testing.T) bool {
	probe := filepath.Join(t.TempDir(), "probe")
	f, err := os.Create(probe)
	if err != nil {
		t.Fatal(err)
	}
	err = f.Truncate(1 << 50)
	f.Close()
	os.Remove(probe)
	if !errors.Is(err, syscall.EFBIG) {
		t.Logf("the file system holds a 1 PiB file (%v): --size 1P is not a case here", err)
	}
	return errors.Is(err, syscall.EFBIG)
}

// statusShowsServedLUNs: LUN 0's owner reports it serves it: status
// (JSON and text) says serving, with no problem.
func statusShowsServedLUNs(t *testing.T, c *testCluster, iqn string) {
	f := c.followers()[0]
	c.waitFor("LUN 0 reported serving", 30*time.Second, func() (bool, string) {
		l := lunStatus(f.statusJSON(), iqn, 0)
		if l == nil {
			return false, "no LUN 0"
		}
		return l.Service == cluster.ServiceServing, fmt.Sprintf("LUN 0: %s %+v", l.Service, l.Copies)
	})
	l := lunStatus(f.statusJSON(), iqn, 0)
	if c := l.Copies[0]; !c.Owner || c.Service != cluster.ServiceServing || c.ServiceSince.IsZero() {
		t.Errorf("owner's copy: %+v", c)
	}
	out := f.hatgt("status")
	if strings.Contains(out, "PROBLEM") || strings.Contains(out, "NOT SERVED") {
		t.Errorf("status shows a problem:\n%s", out)
	}
}

// statusShowsAFailedCopy: a LUN whose file its owner can no longer use
// (replaced by one of another size while the node was down) is not
// served: its owner reports the error, and status says so at a glance
// (a PROBLEM line, NOT SERVED) with the error and when it happened; it
// comes back once the file is right.
func statusShowsAFailedCopy(t *testing.T, c *testCluster, iqn string) {
	lead := c.leader()
	var victim *clusterProc
	for _, p := range c.nodes {
		if p != lead {
			victim = p
		}
	}
	img := filepath.Join(t.TempDir(), "disk9.img")
	lead.hatgt("lun", "create", iqn, "--lun", "9", "--size", "1M", "--path", img, "--placement", victim.id)
	if st, err := os.Stat(img); err != nil || st.Size() != 1<<20 {
		t.Fatalf("the create returned but %s is %v (%v)", img, st, err)
	}
	c.waitFor("LUN 9 served", 30*time.Second, func() (bool, string) {
		l := lunStatus(lead.statusJSON(), iqn, 9)
		return l != nil && l.Service == cluster.ServiceServing, fmt.Sprintf("%+v", l)
	})
	victim.kill9()
	// Down, it reports nothing: status says so from its health.
	c.waitFor("LUN 9 not served while its owner is down", 30*time.Second, func() (bool, string) {
		st := lead.statusJSON()
		l := lunStatus(st, iqn, 9)
		return l != nil && l.Service == cluster.ServiceNotServed && l.Copies[0].Service == cluster.ServiceOffline &&
			hasProblem(st, "its owner "+victim.id+" is offline"), fmt.Sprintf("%+v %q", l, st.Problems)
	})
	if err := os.WriteFile(img, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	victim.start()
	want := "is 4096 bytes, not the LUN's 1048576"
	c.waitFor("the owner's failure in status", 60*time.Second, func() (bool, string) {
		st, err := lead.status()
		if err != nil {
			return false, err.Error()
		}
		l := lunStatus(st, iqn, 9)
		return l != nil && l.Copies[0].Service == cluster.ServiceFailed && hasProblem(st, want), fmt.Sprintf("%+v %q", l, st.Problems)
	})
	l := lunStatus(lead.statusJSON(), iqn, 9)
	if l.Service != cluster.ServiceNotServed || !strings.Contains(l.Copies[0].LastError, want) || l.Copies[0].LastErrorAt.IsZero() {
		t.Errorf("LUN 9: service %s, copy %+v", l.Service, l.Copies[0].CopyService)
	}
	out, err := lead.tryHatgt("status")
	if !statusHasProblems(err) {
		t.Errorf("hatgt status showing a LUN no node serves: %v, want exit status 3", err)
	}
	for _, w := range []string{"PROBLEM: LUN 9 of " + iqn + " is served by no node: its owner " + victim.id + " cannot serve it", "NOT SERVED", "LAST ERRORS", "still failing"} {
		if !strings.Contains(out, w) {
			t.Errorf("hatgt status lacks %q:\n%s", w, out)
		}
	}
	// Fixed: served again, the last error kept.
	if err := os.Truncate(img, 1<<20); err != nil {
		t.Fatal(err)
	}
	c.waitFor("LUN 9 served again", 60*time.Second, func() (bool, string) {
		st, err := lead.status()
		if err != nil {
			return false, err.Error()
		}
		l := lunStatus(st, iqn, 9)
		return l != nil && l.Service == cluster.ServiceServing && len(st.Problems) == 0, fmt.Sprintf("%+v %q", l, st.Problems)
	})
	if l := lunStatus(lead.statusJSON(), iqn, 9); !strings.Contains(l.Copies[0].LastError, want) {
		t.Errorf("the last error went with the recovery: %+v", l.Copies[0].CopyService)
	}
	// hatgt fails the test unless status exits 0: nothing is wrong now.
	if out := lead.hatgt("status"); !strings.Contains(out, "since recovered") {
		t.Errorf("hatgt status after the recovery does not show the last error as recovered:\n%s", out)
	}
}

func lunStatus(st cluster.Status, iqn string, n uint64) *cluster.LUNStatus {
	for _, ts := range st.Targets {
		if ts.IQN == iqn {
			for i := range ts.LUNs {
				if ts.LUNs[i].LUN.LUN == n {
					return &ts.LUNs[i]
				}
			}
		}
	}
	return nil
}

func hasProblem(st cluster.Status, s string) bool {
	for _, p := range st.Problems {
		if strings.Contains(p, s) {
			return true
		}
	}
	return false
}
