package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/hatgt/hatgt/cluster"
)

// "hatgt node remove" of an owner whose lease may still hold says it waits,
// once, and asks again until the leader removes the node; "hatgt leave
// --force" sends the option.
func TestNodeRemoveWaitsOutOwnerLeaseAndLeaveForce(t *testing.T) {
	var mu sync.Mutex
	removes := 0
	var leaveBody string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Method == http.MethodDelete && r.URL.Path == "/v1/nodes/n2":
			removes++
			if removes <= 2 {
				w.WriteHeader(http.StatusServiceUnavailable)
				json.NewEncoder(w).Encode(map[string]any{"error": &cluster.Error{Code: cluster.ErrOwnerLease.Code,
					Message: "node n2 owns LUN 0 of iqn.x and may still serve it until its owner lease runs out: retry in 0.4s"}})
				return
			}
			w.Write([]byte("null"))
		case r.Method == http.MethodPost && r.URL.Path == "/v1/leave":
			var b bytes.Buffer
			b.ReadFrom(r.Body)
			leaveBody = b.String()
			w.Write([]byte("null"))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	env := func(k string) string {
		if k == "HATGT_ADDR" {
			return strings.TrimPrefix(srv.URL, "http://")
		}
		return ""
	}
	var out bytes.Buffer
	if err := runClusterCommand("node", []string{"remove", "n2"}, nil, &out, &out, env); err != nil {
		t.Fatalf("node remove: %v", err)
	}
	if removes != 3 {
		t.Errorf("%d remove requests, want 3 (two answered owner_lease)", removes)
	}
	if got := out.String(); strings.Count(got, "waiting: ") != 1 || !strings.Contains(got, "owner lease") {
		t.Errorf("output %q: want one line saying it waits for the owner lease", got)
	}

	if err := runClusterCommand("leave", []string{"--force"}, nil, &out, &out, env); err != nil {
		t.Fatalf("leave --force: %v", err)
	}
	var o cluster.LeaveOptions
	if err := json.Unmarshal([]byte(leaveBody), &o); err != nil || !o.Force {
		t.Errorf("leave --force sent %q, want force", leaveBody)
	}
}
