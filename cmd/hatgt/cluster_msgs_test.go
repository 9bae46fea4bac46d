package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hatgt/hatgt/cluster"
)

// fakeAPI is an admin API answering the calls the CLI makes: changes
// succeed, status holds one LUN owned by n2, and a join hangs until the
// request goes away (a member that does not answer its joiner).
// looks counts the status requests since the last LUN was created.
var looks func() int

func fakeAPI(t *testing.T) *httptest.Server {
	t.Helper()
	// The replicated LUN's owner claims its epoch on the third look at the
	// status after a LUN was created.
	var mu sync.Mutex
	n := 0
	epoch := func() uint64 {
		mu.Lock()
		defer mu.Unlock()
		if n++; n < 3 {
			return 1
		}
		return 2
	}
	looks = func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"ok":true}`))
	}
	mux.HandleFunc("POST /v1/targets/{iqn}/luns", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n = 0
		mu.Unlock()
		ok(w, r)
	})
	for _, p := range []string{"POST /v1/targets", "DELETE /v1/targets/{iqn}",
		"DELETE /v1/targets/{iqn}/luns/{lun}", "POST /v1/targets/{iqn}/acl", "DELETE /v1/targets/{iqn}/acl/{i}",
		"PUT /v1/targets/{iqn}/chap", "DELETE /v1/targets/{iqn}/chap", "DELETE /v1/nodes/{id}", "POST /v1/leave"} {
		mux.HandleFunc(p, ok)
	}
	mux.HandleFunc("GET /v1/ping", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(cluster.PingAnswer{ID: "n1"})
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		st := cluster.Status{Node: "n1", Leader: "n1",
			Nodes: []cluster.NodeStatus{{ID: "n1", ISCSIPortal: "127.0.0.11:3260"}, {ID: "n2", ISCSIPortal: "127.0.0.12:3260"}},
			Targets: []cluster.TargetStatus{{IQN: "iqn.2026-11.io.hatgt:demo", LUNs: []cluster.LUNStatus{{LUN: cluster.LUN{
				Target: "iqn.2026-11.io.hatgt:demo", LUN: 0, Size: 1 << 30, Owner: "n2", Placement: []string{"n2"}, Epoch: 1}}}},
				{IQN: "iqn.2026-11.io.hatgt:repl", LUNs: []cluster.LUNStatus{{LUN: cluster.LUN{
					Target: "iqn.2026-11.io.hatgt:repl", LUN: 0, Size: 1 << 30, Owner: "n1", Placement: []string{"n1", "n2"}, Epoch: epoch()}}}}}}
		json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("POST /v1/join", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // then a closed connection ends r's context
		<-r.Context().Done()
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func runCLI(t *testing.T, addr string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	env := map[string]string{"HATGT_ADDR": addr}
	err := runClusterCommand(args[0], args[1:], strings.NewReader("a-chap-secret-1234\n"), &out, &errOut, func(k string) string { return env[k] })
	return out.String(), err
}

// TestClusterChangesSayWhatTheyDid: every change prints one line saying
// what was done (before, they printed nothing); lun create says where the
// LUN is served.
func TestClusterChangesSayWhatTheyDid(t *testing.T) {
	srv := fakeAPI(t)
	addr := strings.TrimPrefix(srv.URL, "http://")
	const iqn = "iqn.2026-11.io.hatgt:demo"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"target", "create", iqn}, "created target " + iqn},
		{[]string{"target", "delete", iqn}, "deleted target " + iqn},
		{[]string{"lun", "create", iqn, "--lun", "0", "--size", "1G"}, "created LUN 0 of " + iqn + ": 1 GiB, 1 copy, served by n2 at iscsi://127.0.0.12:3260/" + iqn + "/0"},
		{[]string{"lun", "create", "iqn.2026-11.io.hatgt:repl", "--lun", "0", "--size", "1G", "--replicas", "2"},
			"created LUN 0 of iqn.2026-11.io.hatgt:repl: 1 GiB, 2 copies on n1,n2, served by n1 at iscsi://127.0.0.11:3260/iqn.2026-11.io.hatgt:repl/0\n"},
		{[]string{"lun", "delete", iqn, "--lun", "0"}, "deleted LUN 0 of " + iqn},
		{[]string{"acl", "add", iqn, "iqn.1993-08.org.debian:01:h1"}, "added iqn.1993-08.org.debian:01:h1 to the ACL of " + iqn},
		{[]string{"acl", "remove", iqn, "iqn.1993-08.org.debian:01:h1"}, "removed iqn.1993-08.org.debian:01:h1 from the ACL of " + iqn},
		{[]string{"chap", "set", iqn, "--user", "alice"}, "set CHAP on " + iqn + ": initiators log in as alice"},
		{[]string{"chap", "clear", iqn}, "cleared CHAP on " + iqn},
		{[]string{"node", "remove", "n3"}, "removed node n3 from the cluster"},
		{[]string{"leave"}, "node n1 left the cluster"},
	} {
		out, err := runCLI(t, addr, tc.args...)
		if len(tc.args) > 2 && tc.args[2] == "iqn.2026-11.io.hatgt:repl" && looks() < 3 {
			t.Errorf("lun create of a replicated LUN returned before its owner claimed it (epoch 2)")
		}
		if err != nil {
			t.Errorf("hatgt %s: %v", strings.Join(tc.args, " "), err)
			continue
		}
		if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 || !strings.HasPrefix(out, tc.want) {
			t.Errorf("hatgt %s printed:\n%s\nwant one line starting %q", strings.Join(tc.args, " "), out, tc.want)
		}
		if strings.Contains(out, "a-chap-secret") {
			t.Errorf("hatgt %s printed the secret", strings.Join(tc.args, " "))
		}
	}
}

// TestJoinTimeoutBlamesThePeer: "hatgt join --timeout" against a node that
// answers but whose join hangs (its peer does not answer it) names the
// peer, not the node; a node that cannot be reached is named as such.
func TestJoinTimeoutBlamesThePeer(t *testing.T) {
	srv := fakeAPI(t)
	addr := strings.TrimPrefix(srv.URL, "http://")
	const peer = "127.0.0.13:3270"
	_, err := runCLI(t, addr, "join", "--timeout", "500ms", peer)
	if err == nil {
		t.Fatal("join through a hung peer succeeded")
	}
	msg := err.Error()
	if !strings.Contains(msg, "node n1 (at "+addr+") did not finish joining through "+peer) || !strings.Contains(msg, peer+"'s admin API does not answer it") {
		t.Errorf("join through a hung peer: %v", err)
	}
	if strings.Contains(msg, "cannot reach the hatgt admin API at "+addr) {
		t.Errorf("the error blames the node asked: %v", err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	start := time.Now()
	_, err = runCLI(t, dead, "join", "--timeout", "5s", peer)
	if err == nil || !strings.Contains(err.Error(), "cannot reach the hatgt admin API at "+dead) {
		t.Errorf("join through a node that is down: %v (after %v)", err, time.Since(start))
	}
}
