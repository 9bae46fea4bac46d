package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hatgt/hatgt/cluster"
)

func desiredFile(path string, size uint64) cluster.DesiredLUN {
	return cluster.DesiredLUN{
		LUN: cluster.LUN{Target: testIQN, LUN: 0, ID: 7, Size: size, SectorSize: 512, IOMode: cluster.IOModeWriteBack,
			Backing: cluster.BackingFile, Replicas: 1, Placement: []string{"n1"}, Owner: "n1"},
		Owned: true, BackingPath: path,
	}
}

// tooLargeForTheFileSystem returns a size the file system of dir cannot
// hold in one file, or skips: ext4 stops at 16 TiB, tmpfs and xfs go to
// 8 EiB, past any LUN.
func tooLargeForTheFileSystem(t *testing.T, dir string) uint64 {
	const size = 1 << 50 // 1 PiB
	probe := filepath.Join(dir, "probe")
	f, err := os.Create(probe)
	if err != nil {
		t.Fatal(err)
	}
	err = f.Truncate(size)
	f.Close()
	os.Remove(probe)
	if !errors.Is(err, syscall.EFBIG) {
		t.Skipf("the file system of %s holds a 1 PiB sparse file (%v): no size a LUN may have is too large for it", dir, err)
	}
	return size
}

// TestEnsureBackingLeavesNoFileWhenSizingFails: a file the file system
// cannot make that large is refused with the real reason and what to do,
// and removed, so that the next try says the same (before: an empty file
// stayed, and every later try said "is 0 bytes, not the LUN's ...").
func TestEnsureBackingLeavesNoFileWhenSizingFails(t *testing.T) {
	dir := t.TempDir()
	size := tooLargeForTheFileSystem(t, dir)
	l := desiredFile(filepath.Join(dir, "luns", "big.img"), size)
	for try := 1; try <= 2; try++ {
		created, err := EnsureBacking(l)
		if err == nil || created {
			t.Fatalf("try %d: created %v, err %v; want a failure", try, created, err)
		}
		for _, w := range []string{"file too large", "smaller --size"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("try %d: %q does not say %q", try, err, w)
			}
		}
		if _, err := os.Stat(l.BackingPath); !os.IsNotExist(err) {
			t.Errorf("try %d: %s left behind (%v)", try, l.BackingPath, err)
		}
	}
}

func TestEnsureBackingSaysWhatToDo(t *testing.T) {
	dir := t.TempDir()
	l := desiredFile("/dev/nonexistent-hatgt-test", 1<<20)
	l.LUN.Backing = cluster.BackingBlock
	if _, err := EnsureBacking(l); err == nil || !strings.Contains(err.Error(), "no block device /dev/nonexistent-hatgt-test on this node") {
		t.Errorf("blockio on a missing device: %v", err)
	}
	l.BackingPath = filepath.Join(dir, "plain")
	if err := os.WriteFile(l.BackingPath, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureBacking(l); err == nil || !strings.Contains(err.Error(), "is not a block device") || !strings.Contains(err.Error(), "--type fileio") {
		t.Errorf("blockio on a regular file: %v", err)
	}
	l = desiredFile(l.BackingPath, 1<<20) // an empty file of another size
	if _, err := EnsureBacking(l); err == nil || !strings.Contains(err.Error(), "--size 0 (the file's size)") {
		t.Errorf("a file of another size: %v", err)
	}
}

// TestPreparerCreatesAndAbandonsOnlyItsOwnFiles: PrepareLUN creates a
// missing file (and opens it), AbandonLUN removes that file, but never a
// file that was there before PrepareLUN; a prepare whose open fails
// removes the file it created.
func TestPreparerCreatesAndAbandonsOnlyItsOwnFiles(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	open := func(l cluster.DesiredLUN) (Store, error) { return OpenStore(l, log) }
	p := newPreparer(log, EnsureBacking, open)

	l := desiredFile(filepath.Join(dir, "new.img"), 1<<20)
	if err := p.PrepareLUN(ctx, l); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(l.BackingPath); err != nil || st.Size() != 1<<20 {
		t.Fatalf("prepared file: %v, %v", st, err)
	}
	other := l
	other.ID = 8
	if err := p.AbandonLUN(ctx, other); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(l.BackingPath); err != nil {
		t.Fatalf("abandoning another LUN ID removed the file: %v", err)
	}
	if err := p.AbandonLUN(ctx, l); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(l.BackingPath); !os.IsNotExist(err) {
		t.Errorf("abandoned file still there (%v)", err)
	}

	// A file that existed is used, and stays when the LUN is abandoned.
	old := desiredFile(filepath.Join(dir, "old.img"), 1<<20)
	if err := os.WriteFile(old.BackingPath, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.PrepareLUN(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := p.AbandonLUN(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old.BackingPath); err != nil {
		t.Errorf("a file that existed before the prepare was removed: %v", err)
	}

	// The open fails after the file was created: nothing stays.
	failing := newPreparer(log, EnsureBacking, func(cluster.DesiredLUN) (Store, error) { return nil, errors.New("open failed") })
	bad := desiredFile(filepath.Join(dir, "bad.img"), 1<<20)
	if err := failing.PrepareLUN(ctx, bad); err == nil {
		t.Fatal("prepare with a failing open succeeded")
	}
	if _, err := os.Stat(bad.BackingPath); !os.IsNotExist(err) {
		t.Errorf("a prepare that failed left %s (%v)", bad.BackingPath, err)
	}
}
