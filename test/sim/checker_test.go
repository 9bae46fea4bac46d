package sim

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// hist builds a history on a time line of milliseconds from t0.
type hist struct {
	t0     time.Time
	ops    []Op
	epochs map[writeKey]uint64
}

func newHist() *hist {
	return &hist{t0: time.Unix(1000, 0), epochs: map[writeKey]uint64{}}
}

func (h *hist) at(ms int) time.Time { return h.t0.Add(time.Duration(ms) * time.Millisecond) }

func (h *hist) write(lun int, block, version uint64, from, to int, o Outcome, epoch uint64) {
	h.ops = append(h.ops, Op{Kind: OpWrite, LUN: lun, Block: block, Version: version, Invoke: h.at(from), Done: h.at(to), Outcome: o})
	if o == OK && epoch > 0 {
		h.epochs[writeKey{lun, block, version}] = epoch
	}
}

func (h *hist) read(lun int, block, version uint64, from, to int) {
	h.ops = append(h.ops, Op{Kind: OpRead, LUN: lun, Block: block, Version: version, Invoke: h.at(from), Done: h.at(to), Outcome: OK})
}

func (h *hist) flush(lun int, from, to int) {
	h.ops = append(h.ops, Op{Kind: OpFlush, LUN: lun, Invoke: h.at(from), Done: h.at(to), Outcome: OK})
}

var strict = []LUNMode{{Strict: true}, {Strict: false}}

func TestCheckerAcceptsAGoodHistory(t *testing.T) {
	h := newHist()
	h.write(0, 1, 1, 0, 10, OK, 2)
	h.write(0, 1, 2, 20, 30, Failed, 0) // may or may not have landed
	h.read(0, 1, 1, 25, 35)             // concurrent with v2: either is fine
	h.write(0, 1, 3, 40, 50, OK, 3)     // the next epoch
	h.read(0, 1, 3, 60, 70)             // after v3's ack
	h.write(0, 2, 1, 45, 5000, OK, 3)   // slow, but in the new epoch
	h.write(1, 1, 1, 0, 10, OK, 2)      // write-back, never flushed
	h.read(1, 1, 0, 20, 30)             // not durable: an older read is allowed
	final := map[blockKey]Final{{0, 1}: {Version: 3}, {0, 2}: {Version: 1}, {1, 1}: {Version: 0}}
	r := Check(h.ops, h.epochs, final, strict)
	if r.Failed() {
		t.Fatalf("a correct history failed: %s\n%s", r.Summary(), strings.Join(r.Problems(10), "\n"))
	}
	if r.AckedWrites != 4 || r.Writes != 5 || r.AckedReads != 3 {
		t.Errorf("counts: %s", r.Summary())
	}
}

// Each invariant the checker exists for, broken once.
func TestCheckerCatchesEachViolation(t *testing.T) {
	tests := []struct {
		name  string
		build func(h *hist) map[blockKey]Final
		want  func(r *Report) []string
	}{{
		"acknowledged write lost",
		func(h *hist) map[blockKey]Final {
			h.write(0, 1, 1, 0, 10, OK, 2)
			h.write(0, 1, 2, 20, 30, OK, 2)
			return map[blockKey]Final{{0, 1}: {Version: 1}}
		},
		func(r *Report) []string { return r.Lost },
	}, {
		"a failed older write landed over a newer acknowledged one",
		func(h *hist) map[blockKey]Final {
			h.write(0, 1, 1, 0, 3000, TimedOut, 0) // queued on a stalled owner
			h.write(0, 1, 2, 3000, 3010, OK, 3)
			return map[blockKey]Final{{0, 1}: {Version: 1}}
		},
		func(r *Report) []string { return r.Lost },
	}, {
		"flushed write-back write lost",
		func(h *hist) map[blockKey]Final {
			h.write(1, 1, 1, 0, 10, OK, 2)
			h.flush(1, 20, 30)
			return map[blockKey]Final{{1, 1}: {Version: 0}}
		},
		func(r *Report) []string { return r.Lost },
	}, {
		"FUA write-back write lost",
		func(h *hist) map[blockKey]Final {
			h.write(1, 1, 1, 0, 10, OK, 2)
			h.ops[len(h.ops)-1].FUA = true
			return map[blockKey]Final{{1, 1}: {Version: 0}}
		},
		func(r *Report) []string { return r.Lost },
	}, {
		"stale read",
		func(h *hist) map[blockKey]Final {
			h.write(0, 1, 1, 0, 10, OK, 2)
			h.write(0, 1, 2, 20, 30, OK, 3)
			h.read(0, 1, 1, 40, 50) // sent after v2's ack
			return map[blockKey]Final{{0, 1}: {Version: 2}}
		},
		func(r *Report) []string { return r.Stale },
	}, {
		"read of a version never written",
		func(h *hist) map[blockKey]Final {
			h.write(0, 1, 1, 0, 10, OK, 2)
			h.read(0, 1, 7, 40, 50)
			return map[blockKey]Final{{0, 1}: {Version: 1}}
		},
		func(r *Report) []string { return r.Garbage },
	}, {
		"torn block after healing",
		func(h *hist) map[blockKey]Final {
			h.write(0, 1, 1, 0, 10, OK, 2)
			return map[blockKey]Final{{0, 1}: {Err: errors.New("a mix of versions")}}
		},
		func(r *Report) []string { return r.Garbage },
	}, {
		"two epochs taking writes",
		func(h *hist) map[blockKey]Final {
			h.write(0, 1, 1, 0, 10, OK, 3)  // the new owner acknowledges
			h.write(0, 2, 1, 20, 30, OK, 2) // then the old one still does
			return map[blockKey]Final{{0, 1}: {Version: 1}, {0, 2}: {Version: 1}}
		},
		func(r *Report) []string { return r.TwoEpochs },
	}, {
		"acknowledged write no owner reported",
		func(h *hist) map[blockKey]Final {
			h.write(0, 1, 1, 0, 10, OK, 0)
			return map[blockKey]Final{{0, 1}: {Version: 1}}
		},
		func(r *Report) []string { return r.NoEpoch },
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHist()
			final := tc.build(h)
			r := Check(h.ops, h.epochs, final, strict)
			if got := tc.want(r); len(got) != 1 {
				t.Errorf("want exactly one finding of this kind; %s\n%s", r.Summary(), strings.Join(r.Problems(10), "\n"))
			}
			if !r.Failed() {
				t.Error("report does not say it failed")
			}
		})
	}
}

func TestBlockFormat(t *testing.T) {
	b := encodeBlock(1, 42, 7, 3)
	if v, w, err := decodeBlock(b, 1, 42); err != nil || v != 7 || w != 3 {
		t.Fatalf("decode: v%d w%d %v", v, w, err)
	}
	if v, _, err := decodeBlock(make([]byte, BlockSize), 1, 42); err != nil || v != 0 {
		t.Fatalf("zeros: v%d %v", v, err)
	}
	if _, _, err := decodeBlock(b, 1, 43); err == nil {
		t.Error("a block decoded at another block number")
	}
	mixed := append(append([]byte(nil), b[:2048]...), encodeBlock(1, 42, 8, 3)[2048:]...)
	if _, _, err := decodeBlock(mixed, 1, 42); err == nil {
		t.Error("half of v7 and half of v8 decoded")
	}
}

// A difference the cluster resolves by itself (a dropped copy resynced)
// is no divergence; one that lasts is, and so is a cluster that does not
// heal.
func TestSettle(t *testing.T) {
	healthy := func() error { return nil }
	calls := 0
	transient := func() []string {
		calls++
		if calls < 3 {
			return []string{"n3 differs"}
		}
		return nil
	}
	if d := settle(time.Minute, healthy, transient); len(d) != 0 || calls != 3 {
		t.Errorf("a difference gone at the third compare: got %v after %d compares", d, calls)
	}
	lasting := func() []string { return []string{"n3 differs"} }
	if d := settle(600*time.Millisecond, healthy, lasting); len(d) != 1 || d[0] != "n3 differs" {
		t.Errorf("a lasting difference: got %v", d)
	}
	sick := func() error { return errors.New("no leader") }
	d := settle(time.Minute, sick, func() []string { return nil })
	if len(d) != 1 || !strings.Contains(d[0], "no leader") {
		t.Errorf("an unhealed cluster: got %v", d)
	}
}
