package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hatgt/hatgt/cluster"
)

// "hatgt status" exits 3, with nothing on stderr, when what it prints
// shows a problem (with --json too), 0 when nothing is wrong, and 1 when
// the node cannot be asked.
func TestStatusExitStatus(t *testing.T) {
	var st cluster.Status
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(st)
	}))
	defer srv.Close()
	env := func(k string) string {
		if k == "HATGT_ADDR" {
			return strings.TrimPrefix(srv.URL, "http://")
		}
		return ""
	}
	exit := func(args ...string) (int, string) {
		var out, errOut bytes.Buffer
		err := runClusterCommand("status", args, nil, &out, &errOut, env)
		code := exitStatus(err, &errOut)
		return code, errOut.String()
	}
	healthy := cluster.Status{Node: "n1", Leader: "n1"}
	for _, tc := range []struct {
		name string
		st   cluster.Status
		want int
	}{
		{"healthy", healthy, 0},
		{"a LUN no node serves", cluster.Status{Node: "n1", Leader: "n1", Problems: []string{"LUN 0 of iqn.x is served by no node"}}, exitProblems},
		{"no leader", cluster.Status{Node: "n1", Problem: "no leader: quorum lost"}, exitProblems},
	} {
		st = tc.st
		for _, args := range [][]string{nil, {"--json"}} {
			if code, errOut := exit(args...); code != tc.want || errOut != "" {
				t.Errorf("%s, status %v: exit %d, stderr %q; want %d and nothing", tc.name, args, code, errOut, tc.want)
			}
		}
	}
	srv.Close()
	if code, _ := exit(); code != 1 {
		t.Errorf("a node that cannot be asked: exit %d, want 1", code)
	}
}
