package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hatgt/hatgt/cluster"
)

// The replication tests read "hatgt status --json" into types of their
// own rather than cluster.Status: they need only the LUN fields of the
// CLI contract (copies and their resync progress), and decoding into
// loose types keeps them from breaking on a field that changes type.

// replStatus is the part of "hatgt status --json" the replication tests
// read.
type replStatus struct {
	Node    string `json:"node"`
	Leader  string `json:"leader"`
	Targets []struct {
		IQN  string    `json:"iqn"`
		LUNs []replLUN `json:"luns"`
	} `json:"targets"`
}

// replLUN is one LUN of the status with its copies.
type replLUN struct {
	ID        uint64     `json:"id"`
	LUN       uint64     `json:"lun"`
	Size      uint64     `json:"size"`
	Owner     string     `json:"owner"`
	Epoch     uint64     `json:"epoch"`
	Placement []string   `json:"placement"`
	InSync    []string   `json:"in_sync"`
	Copies    []replCopy `json:"copies"`
}

// replCopy is the state of one copy of a LUN (one per placement node).
type replCopy struct {
	Node          string  `json:"node"`
	State         string  `json:"state"` // in-sync, resyncing, out-of-sync, offline
	Owner         any     `json:"owner"`
	ResyncPercent float64 `json:"resync_percent"`
	BytesCopied   float64 `json:"bytes_copied"` // what the copy's last resync copied
	RateBPS       float64 `json:"rate_bps"`
	ETASeconds    float64 `json:"eta_seconds"`
}

// copyOf returns the copy held by node, or nil.
func (l *replLUN) copyOf(node string) *replCopy {
	for i := range l.Copies {
		if l.Copies[i].Node == node {
			return &l.Copies[i]
		}
	}
	return nil
}

// summary is a one-line description of the LUN's replication state, for
// failure messages and logs.
func (l *replLUN) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "owner %s epoch %d placement %v in_sync %v copies:", l.Owner, l.Epoch, l.Placement, l.InSync)
	if len(l.Copies) == 0 {
		b.WriteString(" none")
	}
	for _, c := range l.Copies {
		fmt.Fprintf(&b, " %s=%s(%.0f%%, copied %.0f)", c.Node, c.State, c.ResyncPercent, c.BytesCopied)
	}
	return b.String()
}

// allInSync tells whether every placement node is in the in-sync set and
// its copy says in-sync; why says what is missing.
func (l *replLUN) allInSync() (ok bool, why string) {
	if len(l.Placement) == 0 {
		return false, "no placement: " + l.summary()
	}
	if len(l.Copies) != len(l.Placement) {
		return false, fmt.Sprintf("%d copies for %d placement nodes: %s", len(l.Copies), len(l.Placement), l.summary())
	}
	for _, n := range l.Placement {
		if !slices.Contains(l.InSync, n) {
			return false, n + " not in in_sync: " + l.summary()
		}
		if c := l.copyOf(n); c == nil || c.State != "in-sync" {
			return false, n + "'s copy not in-sync: " + l.summary()
		}
	}
	return true, ""
}

// replStatusOf runs "hatgt status --json" through p's API and decodes it.
// Unlike statusJSON it returns errors, for use inside waitFor.
func replStatusOf(p *clusterProc) (replStatus, error) {
	var st replStatus
	out, err := p.statusCLI("--json")
	if err != nil {
		return st, fmt.Errorf("hatgt status --json via %s: %v: %s", p.id, err, strings.TrimSpace(out))
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("hatgt status --json via %s: %v\n%s", p.id, err, out)
	}
	return st, nil
}

// replLUNOf returns LUN n of target iqn as p reports it.
func replLUNOf(p *clusterProc, iqn string, n uint64) (*replLUN, error) {
	st, err := replStatusOf(p)
	if err != nil {
		return nil, err
	}
	for _, ts := range st.Targets {
		if ts.IQN != iqn {
			continue
		}
		for i := range ts.LUNs {
			if ts.LUNs[i].LUN == n {
				return &ts.LUNs[i], nil
			}
		}
	}
	return nil, fmt.Errorf("%s reports no %s LUN %d", p.id, iqn, n)
}

// waitReplLUN waits until cond holds for LUN n as p reports it and
// returns that state. The limit bounds a broken cluster, it measures
// nothing.
func waitReplLUN(c *testCluster, p *clusterProc, iqn string, n uint64, what string, limit time.Duration, cond func(l *replLUN) (bool, string)) *replLUN {
	c.t.Helper()
	var last *replLUN
	c.waitFor(what, limit, func() (bool, string) {
		l, err := replLUNOf(p, iqn, n)
		if err != nil {
			return false, err.Error()
		}
		last = l
		return cond(l)
	})
	return last
}

// waitAllInSync waits until every copy of the LUN is in sync.
func waitAllInSync(c *testCluster, p *clusterProc, iqn string, n uint64, limit time.Duration) *replLUN {
	c.t.Helper()
	return waitReplLUN(c, p, iqn, n, fmt.Sprintf("every copy of %s LUN %d in sync", iqn, n), limit,
		func(l *replLUN) (bool, string) { return l.allInSync() })
}

// createReplicatedLUN creates target iqn (when create is set) and LUN n
// of size bytes with one copy on each of the placement nodes, the first
// the owner, through via.
func createReplicatedLUN(via *clusterProc, iqn string, n int, size string, placement []*clusterProc) {
	via.c.t.Helper()
	ids := make([]string, len(placement))
	for i, p := range placement {
		ids[i] = p.id
	}
	via.hatgt("lun", "create", iqn, "--lun", strconv.Itoa(n), "--size", size,
		"--replicas", strconv.Itoa(len(ids)), "--placement", strings.Join(ids, ","))
}

// backingFile is the file node p keeps its copy of LUN l of iqn in.
func backingFile(p *clusterProc, iqn string, l *replLUN) string {
	return cluster.DefaultBackingPath(p.dataDir, iqn, l.LUN, l.ID)
}

// identityBlock is the size of a replicated copy's identity block, which
// follows the LUN's data in its backing file (replication.IdentitySize:
// the file is the LUN's size plus this).
const identityBlock = 4096

// waitBackingFiles waits until every placement node has its backing file
// at the LUN's size plus the copy's identity block.
func waitBackingFiles(c *testCluster, iqn string, l *replLUN) {
	c.t.Helper()
	for _, id := range l.Placement {
		path := backingFile(c.node(id), iqn, l)
		want := int64(l.Size) + identityBlock
		c.waitFor(id+"'s backing file", 30*time.Second, func() (bool, string) {
			st, err := os.Stat(path)
			if err != nil {
				return false, err.Error()
			}
			return st.Size() == want, fmt.Sprintf("%s is %d bytes, want %d", path, st.Size(), want)
		})
	}
}

// fileSHA256 is the SHA-256 of the first n bytes of path (a copy's data,
// without its identity block, which differs from copy to copy).
func fileSHA256(t *testing.T, path string, n int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if got, err := io.Copy(h, io.LimitReader(f, n)); err != nil || got != n {
		t.Fatalf("%s: read %d of %d bytes: %v", path, got, n, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// checkCopiesIdentical asserts that the data in every placement node's
// backing file (the LUN's size) has the same SHA-256, and returns the
// owner's file.
func checkCopiesIdentical(t *testing.T, c *testCluster, iqn string, l *replLUN) string {
	t.Helper()
	ownerFile := backingFile(c.node(l.Owner), iqn, l)
	want := fileSHA256(t, ownerFile, int64(l.Size))
	for _, id := range l.Placement {
		if id == l.Owner {
			continue
		}
		f := backingFile(c.node(id), iqn, l)
		if got := fileSHA256(t, f, int64(l.Size)); got != want {
			t.Errorf("%s's copy %s has SHA-256 %s, the owner %s's %s", id, f, got[:16], l.Owner, want[:16])
		}
	}
	return ownerFile
}

// readFileRange reads n bytes at off of path.
func readFileRange(t *testing.T, path string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("%s: read %d bytes at %d: %v", path, n, off, err)
	}
	return b
}

// randomImage writes size crypto-random bytes to a file in a temporary
// directory and returns its path and content.
func randomImage(t *testing.T, size int) (string, []byte) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	path := filepath.Join(t.TempDir(), "src.img")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, data
}

func replURL(p *clusterProc, iqn string, n int) string {
	return fmt.Sprintf("iscsi://%s/%s/%d", p.portal(), iqn, n)
}

// qemuIOWrites returns qemu-io arguments that write pattern to [off,
// off+length) of url in chunk-sized requests, one after the other.
func qemuIOWrites(url string, pattern byte, off, length, chunk int64) []string {
	args := []string{"-f", "raw"}
	for o := off; o < off+length; o += chunk {
		args = append(args, "-c", fmt.Sprintf("write -P 0x%02x %d %d", pattern, o, min(chunk, off+length-o)))
	}
	return append(args, url)
}

// qemuIOFailed tells whether qemu-io's output reports a failed command
// (its exit status says so too, but only for the last command in some
// versions).
func qemuIOFailed(out string) bool {
	return strings.Contains(out, "failed") || strings.Contains(out, "error")
}

// runLUNVerify runs "hatgt lun verify IQN --lun N" through p's API and
// returns its output and exit status (-1 when it did not run or was
// killed).
func runLUNVerify(p *clusterProc, iqn string, n int) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.c.bin, "lun", "verify", iqn, "--lun", strconv.Itoa(n), "--timeout", "2m")
	cmd.Env = append(os.Environ(), p.c.env...)
	cmd.Env = append(cmd.Env, "HATGT_ADDR="+p.api())
	out, err := cmd.CombinedOutput()
	if err == nil {
		return string(out), 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		return string(out), ee.ExitCode()
	}
	return fmt.Sprintf("%s\n(%v)", out, err), -1
}

// regionPattern matches how a verify line can name region r of 1 MiB:
// "region 5", "region #5", "regions 5", or its byte offset.
func regionPattern(r int64) *regexp.Regexp {
	return regexp.MustCompile(fmt.Sprintf(`(?i)\bregions?\s*[#:=]?\s*%d\b|\b%d\b|\b0x%x\b`, r, r<<20, r<<20))
}

// verifyNamesRegion tells whether verify's output reports region r of
// node: a line naming the region that either names the node or follows
// the line that introduces the node's copy.
func verifyNamesRegion(out, node string, others []string, r int64) bool {
	re := regionPattern(r)
	nodeRe := regexp.MustCompile(`\b` + regexp.QuoteMeta(node) + `\b`)
	current := ""
	for _, line := range strings.Split(out, "\n") {
		if nodeRe.MatchString(line) {
			current = node
		} else {
			for _, o := range others {
				if regexp.MustCompile(`\b` + regexp.QuoteMeta(o) + `\b`).MatchString(line) {
					current = o
				}
			}
		}
		if re.MatchString(line) && current == node {
			return true
		}
	}
	return false
}

// corruptFile flips the bytes of path at off (len n) in place.
func corruptFile(t *testing.T, path string, off int64, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	orig := bytes.Clone(b)
	for i := range b {
		b[i] ^= 0xff
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(readFileRange(t, path, off, int64(n)), orig) {
		t.Fatalf("%s unchanged at %d after the overwrite", path, off)
	}
}

// untouchedRegions counts the 1 MiB regions of [off, off+length) of path
// in which no chunk starts with 4 KiB of pattern (qemuIOWrites' chunks).
func untouchedRegions(t *testing.T, path string, off, length, chunk int64, pattern byte) int {
	t.Helper()
	want := bytes.Repeat([]byte{pattern}, 4096)
	n := 0
	for r := off; r < off+length; r += 1 << 20 {
		touched := false
		for o := r; o < min(r+1<<20, off+length); o += chunk {
			if bytes.Equal(readFileRange(t, path, o, 4096), want) {
				touched = true
				break
			}
		}
		if !touched {
			n++
		}
	}
	return n
}

// servesIO reports whether url answers IO (qemu-img opens the LUN, which
// fails on a standby or deposed path), for waitFor.
func servesIO(url string) func() (bool, string) {
	return func() (bool, string) {
		out, err := tool("qemu-img", "info", url)
		return err == nil, fmt.Sprintf("%v: %s", err, out)
	}
}

// replOnFollowers creates target iqn with a LUN 0 of size whose two
// copies are on the nodes that are not the Raft leader (killing or
// cutting off either keeps the leader and the quorum), waits until both
// are in sync, and returns the leader, the copies (the owner first) and
// the LUN.
func replOnFollowers(c *testCluster, iqn, size string) (*clusterProc, []*clusterProc, *replLUN) {
	c.t.Helper()
	lead := c.leader()
	var copies []*clusterProc
	for _, p := range c.nodes {
		if p != lead {
			copies = append(copies, p)
		}
	}
	lead.hatgt("target", "create", iqn)
	createReplicatedLUN(lead, iqn, 0, size, copies)
	return lead, copies, waitAllInSync(c, lead, iqn, 0, 60*time.Second)
}

// writeImage writes the raw image file src to the start of the LUN
// behind url (what names the path in a failure).
func writeImage(t *testing.T, src, url, what string) {
	t.Helper()
	if out, err := tool("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, url); err != nil {
		t.Fatalf("write through %s: %v\n%s", what, err, out)
	}
}

// readLUN reads the whole LUN behind url (what names the path in a
// failure).
func readLUN(t *testing.T, url, what string) []byte {
	t.Helper()
	back := filepath.Join(t.TempDir(), "back.img")
	if out, err := tool("qemu-img", "convert", "-f", "raw", "-O", "raw", url, back); err != nil {
		t.Fatalf("read through %s: %v\n%s", what, err, out)
	}
	b, err := os.ReadFile(back)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
