package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	good := map[string]uint64{"4096": 4096, "1K": 1024, "10M": 10 << 20, "10MiB": 10 << 20, "2g": 2 << 30, "1TiB": 1 << 40, "3P": 3 << 50, "4096B": 4096}
	for in, want := range good {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
		if back, _ := ParseSize(FormatSize(want)); back != want {
			t.Errorf("FormatSize(%d) = %q does not parse back", want, FormatSize(want))
		}
	}
	for _, in := range []string{"", "0", "-1", "1.5G", "G", "12X", "99999999999P", "1KK"} {
		if v, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want error", in, v)
		}
	}
	// GB, TB, ... mean powers of 1000 to many: refused, with both
	// readings spelled out.
	for in, want := range map[string][]string{
		"1GB":  {"1G for 1 GiB (1073741824 bytes)", "1000000000 for 1×10^9 bytes"},
		"10tb": {"10T for 10 TiB", "10000000000000 for 10×10^12 bytes"},
		"4KB":  {"4K for 4 KiB (4096 bytes)", "4000 for"},
	} {
		v, err := ParseSize(in)
		if err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, v)
			continue
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("ParseSize(%q): %q lacks %q", in, err, w)
			}
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1", "10G", "4KiB", "", "18446744073709551615", "16384P"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseSize(s)
		if err != nil {
			return
		}
		if v == 0 {
			t.Fatalf("ParseSize(%q) = 0 without error", s)
		}
		if back, err := ParseSize(FormatSize(v)); err != nil || back != v {
			t.Fatalf("round trip of %d: %d, %v", v, back, err)
		}
	})
}

func TestWriteStatusTable(t *testing.T) {
	s := Status{Node: "n1", Leader: "n1", Term: 2, Nodes: []NodeStatus{{ID: "n1", RaftRole: "leader", Alive: true, Health: "alive", LastContactMS: 0}},
		Targets: []TargetStatus{{IQN: iqnA, CHAP: &CHAPStatus{User: "u", Secret: "set"},
			LUNs: []LUNStatus{{LUN: LUN{LUN: 3, Size: 1 << 30, SectorSize: 512, IOMode: "wb", Backing: "fileio", Owner: "n1", Placement: []string{"n1", "n2"}, InSync: []string{"n1"}, Epoch: 4},
				Copies: []CopyStatus{{Node: "n1", State: CopyInSync, Owner: true, ResyncPercent: 100},
					{Node: "n2", State: CopyResyncing, ResyncPercent: 42, BytesCopied: 3 << 20, RateBps: 50 << 20, ETASeconds: 7}}}}}}}
	var b bytes.Buffer
	if err := WriteStatusTable(&b, s); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"leader n1", "term 2", iqnA, "1GiB", "n1,n2", "leader",
		"n1 (owner)", "resyncing", "42%", "50.0 MiB/s", "7s", "3.0 MiB"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "PERSISTENT RESERVATIONS") {
		t.Errorf("a LUN without registrations shows reservations:\n%s", out)
	}

	// A reserved LUN: who holds it, of what type, how many registrations.
	s.Targets[0].LUNs[0].Reservations = json.RawMessage(`{"generation":3,"registrations":[{"initiator":"iqn.1994-05.com.redhat:h1","key":10},` +
		`{"initiator":"iqn.1994-05.com.redhat:h2","key":11}],"reservation":{"holder":{"initiator":"iqn.1994-05.com.redhat:h1"},"type":5}}`)
	b.Reset()
	if err := WriteStatusTable(&b, s); err != nil {
		t.Fatal(err)
	}
	want := "PERSISTENT RESERVATIONS\n" + iqnA + " LUN 3: Write Exclusive, Registrants Only, held by iqn.1994-05.com.redhat:h1; 2 registrations (generation 3)\n"
	if !strings.Contains(b.String(), want) {
		t.Errorf("table lacks\n%s\nin:\n%s", want, b.String())
	}
	s.Targets[0].LUNs[0].Reservations = nil

	// A resync that has not reported a rate yet shows no rate and no
	// ETA (not "0 B/s", "0s": done in no time).
	s.Targets[0].LUNs[0].Copies[1] = CopyStatus{Node: "n2", State: CopyResyncing}
	b.Reset()
	if err := WriteStatusTable(&b, s); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.Contains(line, "resyncing") && (strings.Contains(line, "0 B/s") || strings.Contains(line, " 0s ")) {
			t.Errorf("a resync without a rate yet shows one: %q", line)
		}
	}
}

func TestStatusSaysWhyThereIsNoLeader(t *testing.T) {
	nodes := func(alive ...bool) []NodeStatus {
		var ns []NodeStatus
		for i, a := range alive {
			ns = append(ns, NodeStatus{ID: fmt.Sprintf("n%d", i+1), Voter: true, Alive: a})
		}
		return ns
	}
	s := Status{Node: "n4", Nodes: nodes(false, false, false, true, true)}
	p := s.quorumProblem()
	if !strings.Contains(p, "quorum lost, 2 of 5 voters reachable, a quorum needs 3") {
		t.Fatalf("problem = %q", p)
	}
	s.Problem = p
	var b strings.Builder
	if err := WriteStatusTable(&b, s); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "quorum lost") {
		t.Fatalf("table does not say why:\n%s", b.String())
	}
	s = Status{Node: "n1", Nodes: nodes(true, true, false)}
	if p := s.quorumProblem(); !strings.Contains(p, "election") {
		t.Fatalf("with a majority reachable: %q", p)
	}
	s.Leader = "n1"
	if p := s.quorumProblem(); p != "" {
		t.Fatalf("with a leader: %q", p)
	}
}
