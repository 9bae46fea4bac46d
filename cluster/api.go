package cluster

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// SocketName is the admin API's unix socket in the data dir.
const SocketName = "hatgt.sock"

// maxBody bounds request bodies.
const maxBody = 1 << 20

// API is the HTTP/JSON admin API of one node. Reads (GET) are open;
// changes need the admin token on TCP (Authorization: Bearer TOKEN) when
// one is configured. The unix socket in the data dir is for local root and
// needs no token.
type API struct {
	node     *Node
	token    string
	log      hclog.Logger
	verifier verifierBox
}

// NewAPI returns the API of node; token comes from the node's Config.
func NewAPI(node *Node) *API {
	return &API{node: node, token: node.cfg.Token, log: node.log.Named("api")}
}

// Handler returns the API's handler. local marks the unix-socket listener,
// where changes need no token.
func (a *API) Handler(local bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", a.status)
	mux.HandleFunc("GET /v1/ping", a.ping)
	mux.HandleFunc("GET /v1/internal/applied", a.applied)
	mux.HandleFunc("GET /v1/targets", a.listTargets)
	mux.HandleFunc("POST /v1/targets", a.mutate(a.createTarget))
	mux.HandleFunc("DELETE /v1/targets/{iqn}", a.mutate(a.deleteTarget))
	mux.HandleFunc("POST /v1/targets/{iqn}/luns", a.mutate(a.createLUN))
	mux.HandleFunc("DELETE /v1/targets/{iqn}/luns/{lun}", a.mutate(a.deleteLUN))
	mux.HandleFunc("POST /v1/targets/{iqn}/luns/{lun}/verify", a.verifyLUN)
	mux.HandleFunc("POST /v1/targets/{iqn}/acl", a.mutate(a.addACL))
	mux.HandleFunc("DELETE /v1/targets/{iqn}/acl/{initiator}", a.mutate(a.removeACL))
	mux.HandleFunc("PUT /v1/targets/{iqn}/chap", a.mutate(a.setCHAP))
	mux.HandleFunc("DELETE /v1/targets/{iqn}/chap", a.mutate(a.clearCHAP))
	mux.HandleFunc("POST /v1/nodes", a.mutate(a.addNode))
	mux.HandleFunc("DELETE /v1/nodes/{id}", a.mutate(a.removeNode))
	mux.HandleFunc("POST /v1/join", a.mutate(a.join))
	mux.HandleFunc("POST /v1/leave", a.mutate(a.leave))
	mux.HandleFunc("POST /v1/internal/forward", a.mutate(a.forwarded))
	mux.HandleFunc("POST /v1/internal/prepare", a.mutate(a.prepareLUN))
	mux.HandleFunc("POST /v1/internal/abandon", a.mutate(a.abandonLUN))
	if local {
		return mux
	}
	return a.auth(mux)
}

// auth refuses non-GET requests without the token.
func (a *API) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.token != "" && r.Method != http.MethodGet && r.Method != http.MethodHead {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(a.token)) != 1 {
				a.log.Warn("refused change without valid token", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
				writeErr(w, errf(ErrUnauthorized, "missing or wrong admin token: set HATGT_TOKEN or --token-file"))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// CheckExposure refuses to serve the API on a non-loopback address without
// a token: anyone who can reach it could change the cluster. The serve
// command calls it before listening.
func CheckExposure(apiAddr, token string) error {
	if token != "" {
		return nil
	}
	host, _, err := net.SplitHostPort(apiAddr)
	if err != nil {
		return fmt.Errorf("cluster: API address %q: %v", apiAddr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("cluster: refusing to serve the admin API on %s without a token: set HATGT_TOKEN or --token-file, or bind it to 127.0.0.1", apiAddr)
}

// Serve serves the API on l (TCP) and on DATA/hatgt.sock until ctx ends or
// the node shuts down (after a leave), then shuts both servers down.
func (a *API) Serve(ctx context.Context, l net.Listener) error {
	sock := filepath.Join(a.node.cfg.DataDir, SocketName)
	_ = os.Remove(sock)
	ul, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		ul.Close()
		return err
	}
	tcp := &http.Server{Handler: a.Handler(false), ReadHeaderTimeout: 10 * time.Second}
	unix := &http.Server{Handler: a.Handler(true), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- tcp.Serve(l) }()
	go func() { errc <- unix.Serve(ul) }()
	select {
	case <-ctx.Done():
	case <-a.node.Done(): // Shutdown below still lets the leave answer out
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tcp.Shutdown(sctx)
	unix.Shutdown(sctx)
	_ = os.Remove(sock)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (a *API) mutate(h func(r *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		v, err := h(r)
		if err != nil {
			writeErr(w, err)
			return
		}
		if v == nil {
			v = map[string]bool{"ok": true}
		}
		writeJSON(w, http.StatusOK, v)
	}
}

func decodeBody(r *http.Request, v any) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return errf(ErrInvalid, "read request: %v", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return errf(ErrInvalid, "bad JSON request body")
	}
	return nil
}

func (a *API) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.node.Status())
}

// PingAnswer is the answer of GET /v1/ping.
type PingAnswer struct {
	ID string `json:"id"`
}

func (a *API) ping(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, PingAnswer{ID: a.node.cfg.NodeID})
}

func (a *API) listTargets(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.node.Status().Targets)
}

func (a *API) apply(r *http.Request, typ string, payload any) (any, error) {
	cmd, err := NewCommand(typ, payload)
	if err != nil {
		return nil, err
	}
	idx, err := a.node.Apply(r.Context(), cmd)
	if err != nil {
		return nil, err
	}
	return OpResult{Index: idx}, nil
}

func (a *API) createTarget(r *http.Request) (any, error) {
	var p TargetCreate
	if err := decodeBody(r, &p); err != nil {
		return nil, err
	}
	return a.apply(r, CmdTargetCreate, p)
}

func (a *API) deleteTarget(r *http.Request) (any, error) {
	return a.apply(r, CmdTargetDelete, TargetDelete{IQN: a.iqn(r)})
}

// LUNRequest is the body of POST /v1/targets/{iqn}/luns. Zero fields take
// defaults: sector 512, IO mode wb, type fileio, 1 replica.
type LUNRequest struct {
	LUN        uint64   `json:"lun"`
	Size       uint64   `json:"size"`
	SectorSize uint32   `json:"sector_size,omitempty"`
	IOMode     string   `json:"io_mode,omitempty"`
	Backing    string   `json:"backing,omitempty"`
	Path       string   `json:"path,omitempty"`
	Replicas   int      `json:"replicas,omitempty"`
	Placement  []string `json:"placement,omitempty"`
}

// LUN returns the LUN the request asks for, defaults filled in.
func (q LUNRequest) toLUN(iqn string) LUN {
	l := LUN{Target: iqn, LUN: q.LUN, Size: q.Size, SectorSize: q.SectorSize, IOMode: q.IOMode,
		Backing: q.Backing, Path: q.Path, Replicas: q.Replicas, Placement: q.Placement}
	if l.SectorSize == 0 {
		l.SectorSize = 512
	}
	if l.IOMode == "" {
		l.IOMode = IOModeWriteBack
	}
	if l.Backing == "" {
		l.Backing = BackingFile
	}
	if l.Replicas == 0 {
		l.Replicas = max(1, len(l.Placement))
	}
	return l
}

func (a *API) createLUN(r *http.Request) (any, error) {
	var q LUNRequest
	if err := decodeBody(r, &q); err != nil {
		return nil, err
	}
	return a.apply(r, CmdLUNCreate, LUNCreate{LUN: q.toLUN(a.iqn(r))})
}

func (a *API) deleteLUN(r *http.Request) (any, error) {
	n, err := strconv.ParseUint(r.PathValue("lun"), 10, 64)
	if err != nil {
		return nil, errf(ErrInvalid, "bad LUN number %q", r.PathValue("lun"))
	}
	return a.apply(r, CmdLUNDelete, LUNDelete{IQN: a.iqn(r), LUN: n})
}

func (a *API) addACL(r *http.Request) (any, error) {
	var p ACLChange
	if err := decodeBody(r, &p); err != nil {
		return nil, err
	}
	p.IQN = a.iqn(r)
	ini, err := canonicalName("initiator", p.Initiator)
	if err != nil {
		return nil, err
	}
	p.Initiator = a.initiator(p.IQN, ini)
	return a.apply(r, CmdACLAdd, p)
}

func (a *API) removeACL(r *http.Request) (any, error) {
	iqn := a.iqn(r)
	return a.apply(r, CmdACLRemove, ACLChange{IQN: iqn, Initiator: a.initiator(iqn, r.PathValue("initiator"))})
}

func (a *API) setCHAP(r *http.Request) (any, error) {
	var c CHAP
	if err := decodeBody(r, &c); err != nil {
		return nil, err
	}
	return a.apply(r, CmdCHAPSet, CHAPSet{IQN: a.iqn(r), CHAP: c})
}

func (a *API) clearCHAP(r *http.Request) (any, error) {
	return a.apply(r, CmdCHAPClear, CHAPClear{IQN: a.iqn(r)})
}

func (a *API) addNode(r *http.Request) (any, error) {
	var ni NodeInfo
	if err := decodeBody(r, &ni); err != nil {
		return nil, err
	}
	return a.node.AddNode(r.Context(), ni)
}

func (a *API) removeNode(r *http.Request) (any, error) {
	return nil, a.node.RemoveNode(r.Context(), r.PathValue("id"))
}

// JoinRequest is the body of POST /v1/join: the API address of a member of
// the cluster to join.
type JoinRequest struct {
	Peer string `json:"peer"`
}

func (a *API) join(r *http.Request) (any, error) {
	var q JoinRequest
	if err := decodeBody(r, &q); err != nil {
		return nil, err
	}
	if q.Peer == "" {
		return nil, errf(ErrInvalid, "join needs a peer address")
	}
	return nil, a.node.JoinVia(r.Context(), q.Peer)
}

// leave takes LeaveOptions as its body; an empty body means none.
func (a *API) leave(r *http.Request) (any, error) {
	var o LeaveOptions
	if r.ContentLength != 0 {
		if err := decodeBody(r, &o); err != nil {
			return nil, err
		}
	}
	return nil, a.node.Leave(r.Context(), o)
}

// forwarded runs an Op that a follower forwarded. It never forwards again:
// if this node no longer leads, the follower retries.
func (a *API) forwarded(r *http.Request) (any, error) {
	var op Op
	if err := decodeBody(r, &op); err != nil {
		return nil, err
	}
	if !a.node.IsLeader() {
		return nil, ErrNotLeader
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.node.cfg.ApplyTimeout)
	defer cancel()
	idx, err := a.node.execute(ctx, &op)
	if errors.Is(err, errRetry) {
		return nil, ErrNotLeader
	}
	if err != nil {
		return nil, err
	}
	return OpResult{Index: idx}, nil
}

type errorBody struct {
	Error *Error `json:"error"`
}

func writeErr(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Code: "internal", Message: err.Error()}
	}
	writeJSON(w, httpStatus(e), errorBody{Error: e})
}

func httpStatus(e *Error) int {
	switch e.Code {
	case ErrUnauthorized.Code:
		return http.StatusUnauthorized
	case ErrUnknownTarget.Code, ErrUnknownLUN.Code, ErrUnknownNode.Code, ErrUnknownACL.Code:
		return http.StatusNotFound
	case ErrTargetExists.Code, ErrLUNExists.Code, ErrACLExists.Code, ErrTargetHasLUNs.Code, ErrStaleEpoch.Code, ErrNotLUNOwner.Code:
		return http.StatusConflict
	case ErrNoLeader.Code, ErrNotLeader.Code, ErrShutdown.Code, ErrNotEnoughNodes.Code, ErrOwnerLease.Code:
		return http.StatusServiceUnavailable
	case ErrInvalid.Code, ErrBadSize.Code, ErrBadCommand.Code, ErrUnknownCommand.Code, ErrUnsupportedVersion.Code:
		return http.StatusBadRequest
	case ErrBacking.Code:
		return http.StatusUnprocessableEntity
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
