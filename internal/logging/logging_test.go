package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// decode parses each line of out as one JSON object.
func decode(t *testing.T, out string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line is not JSON: %v\n%s", err, line)
		}
		recs = append(recs, m)
	}
	return recs
}

// TestHCLogWritesThroughSlog: what raft and the cluster package log through
// hclog comes out as the node's slog records: the node's attribute once,
// the logger's name as component, raft's own "node" renamed, errors as
// text, and levels kept (debug shown at debug, trace not).
func TestHCLogWritesThroughSlog(t *testing.T) {
	var buf bytes.Buffer
	root := New(&buf, JSON, slog.LevelDebug)
	base := root.With("node", "n1")
	cl := HCLog(base, "cluster", "node", "n1")
	// As cluster.NewNode does: its own node attribute, then raft's name.
	r := cl.With("node", "n1").Named("raft")
	r.Info("entering candidate state", "node", "Node at 127.0.0.1:3271 [Candidate]", "term", 5)
	r.Debug("heartbeat", "peer", "n2")
	r.Trace("too chatty")
	r.Error("failed to make requestVote RPC", "error", errors.New("connection refused"))
	cl.Named("fsm").Warn("odd", "lonely")
	base.Info("slog record", "component", "target")

	recs := decode(t, buf.String())
	if len(recs) != 5 {
		t.Fatalf("%d records, want 5 (trace dropped at debug):\n%s", len(recs), buf.String())
	}
	for i, m := range recs {
		if m["node"] != "n1" {
			t.Errorf("record %d: node=%v, want n1:\n%v", i, m["node"], m)
		}
		if m["time"] == nil || m["msg"] == nil || m["level"] == nil {
			t.Errorf("record %d lacks time, level or msg: %v", i, m)
		}
	}
	if c := strings.Count(strings.Split(buf.String(), "\n")[0], `"node":`); c != 1 {
		t.Errorf("first line has %d node keys, want 1 (and raft's renamed):\n%s", c, buf.String())
	}
	want := []map[string]any{
		{"level": "INFO", "component": "cluster.raft", "msg": "entering candidate state", "raft_node": "Node at 127.0.0.1:3271 [Candidate]", "term": 5.0},
		{"level": "DEBUG", "component": "cluster.raft", "peer": "n2"},
		{"level": "ERROR", "component": "cluster.raft", "error": "connection refused"},
		{"level": "WARN", "component": "cluster.fsm", "EXTRA_VALUE_AT_END": "lonely"},
		{"level": "INFO", "component": "target"},
	}
	for i, w := range want {
		for k, v := range w {
			if recs[i][k] != v {
				t.Errorf("record %d: %s=%v, want %v (%v)", i, k, recs[i][k], v, recs[i])
			}
		}
	}
	if !cl.IsDebug() || cl.IsTrace() || cl.GetLevel() != hclog.Debug {
		t.Errorf("IsDebug %v IsTrace %v GetLevel %v; want true, false, debug", cl.IsDebug(), cl.IsTrace(), cl.GetLevel())
	}
}

// TestStandardWriterInfersLevels: memberlist's standard-library lines
// become records at the level of their prefix, without the timestamp and
// the "memberlist:" prefix; below the handler's level they are dropped.
func TestStandardWriterInfersLevels(t *testing.T) {
	var buf bytes.Buffer
	l := HCLog(New(&buf, JSON, slog.LevelInfo).With("node", "n2"), "cluster", "node", "n2").Named("memberlist")
	w := l.StandardWriter(&hclog.StandardLoggerOptions{InferLevels: true, InferLevelsWithTimestamp: true})
	for _, line := range []string{
		"2026/12/05 07:48:41 [DEBUG] memberlist: Stream connection from=127.0.0.1:5000\n",
		"2026/12/05 07:48:42 [WARN] memberlist: Was able to connect to n3 over TCP but UDP probes failed\n",
		"2026/12/05 07:48:43.123456 [ERR] memberlist: Failed fallback ping: EOF\n",
		"no prefix at all\n",
	} {
		if _, err := w.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	recs := decode(t, buf.String())
	want := []struct{ level, msg string }{
		{"WARN", "Was able to connect to n3 over TCP but UDP probes failed"},
		{"ERROR", "Failed fallback ping: EOF"},
		{"INFO", "no prefix at all"},
	}
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d (debug dropped at info):\n%s", len(recs), len(want), buf.String())
	}
	for i, w := range want {
		if recs[i]["level"] != w.level || recs[i]["msg"] != w.msg || recs[i]["node"] != "n2" || recs[i]["component"] != "cluster.memberlist" {
			t.Errorf("record %d: %v, want level %s msg %q node n2 component cluster.memberlist", i, recs[i], w.level, w.msg)
		}
	}
}

// TestTextFormat: text records are key=value lines with TRACE for hclog's
// trace level.
func TestTextFormat(t *testing.T) {
	var buf bytes.Buffer
	l := HCLog(New(&buf, Text, LevelTrace).With("node", "n1"), "cluster", "node", "n1").Named("raft")
	l.Trace("pipelining")
	l.Info("two words", "peer", "n 2")
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[0], "level=TRACE") || !strings.Contains(lines[0], "msg=pipelining node=n1 component=cluster.raft") {
		t.Errorf("trace line: %s", lines[0])
	}
	if !strings.HasPrefix(lines[1], "time=") || !strings.Contains(lines[1], `level=INFO msg="two words" node=n1 component=cluster.raft peer="n 2"`) {
		t.Errorf("info line: %s", lines[1])
	}
}

func TestParseFormatAndLevel(t *testing.T) {
	if f, err := ParseFormat("json"); err != nil || f != JSON {
		t.Errorf("json: %v %v", f, err)
	}
	if _, err := ParseFormat("xml"); err == nil || !strings.Contains(err.Error(), "text or json") {
		t.Errorf("xml: %v", err)
	}
	if l, err := ParseLevel("trace"); err != nil || l != LevelTrace {
		t.Errorf("trace: %v %v", l, err)
	}
	if l, err := ParseLevel("warn"); err != nil || l != slog.LevelWarn {
		t.Errorf("warn: %v %v", l, err)
	}
	if _, err := ParseLevel("loud"); err == nil {
		t.Error("loud accepted")
	}
}

// raft logs keys with spaces ("backoff time"): they come out bare, so a
// text line stays key=value words.
func TestHCLogKeysAreBareWords(t *testing.T) {
	var b strings.Builder
	l := slog.New(slog.NewTextHandler(&b, nil))
	HCLog(l, "raft").Error("failed to heartbeat to", "peer", "x", "backoff time", "10ms", `a"b=c`, 1)
	out := b.String()
	if !strings.Contains(out, "backoff_time=10ms") || strings.Contains(out, `"backoff time"`) || !strings.Contains(out, "a_b_c=1") {
		t.Errorf("keys not bare words: %s", out)
	}
}
