package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNotLUNOwner answers a request that only the owner of a LUN can serve
// (online verify) on another node; the message names the owner.
var ErrNotLUNOwner = &Error{Code: "not_lun_owner", Message: "this node does not own the LUN"}

// VerifyResult is the answer of POST /v1/targets/{iqn}/luns/{lun}/verify:
// every other copy compared with the owner's, region by region.
type VerifyResult struct {
	Target     string       `json:"target"`
	LUN        uint64       `json:"lun"`
	Owner      string       `json:"owner"`
	Epoch      uint64       `json:"epoch"`
	RegionSize int64        `json:"region_size"`
	Repair     bool         `json:"repair,omitempty"`
	Copies     []VerifyCopy `json:"copies"`
}

// VerifyCopy is the comparison of one copy with the owner's. Error says why
// the copy could not be compared (offline, or the run was cut short). In a
// repair run Divergent lists the regions that were rewritten.
type VerifyCopy struct {
	Node          string  `json:"node"`
	Regions       int64   `json:"regions"`
	BytesCompared int64   `json:"bytes_compared"`
	Divergent     []int64 `json:"divergent,omitempty"`
	Error         string  `json:"error,omitempty"`
}

// Identical reports whether every copy was compared and none differs.
func (r *VerifyResult) Identical() bool {
	for _, c := range r.Copies {
		if c.Error != "" || len(c.Divergent) > 0 {
			return false
		}
	}
	return true
}

// VerifyProgress is how far a running online verify got, over all the
// copies it compares (each is read whole: Regions of the LUN per copy).
type VerifyProgress struct {
	// Node is the copy being compared, the Copy-th of Copies.
	Node   string `json:"node"`
	Copy   int    `json:"copy"`
	Copies int    `json:"copies"`
	// RegionsDone of RegionsTotal (the LUN's regions times Copies).
	RegionsDone  int64 `json:"regions_done"`
	RegionsTotal int64 `json:"regions_total"`
	// BytesCompared so far; RateBps is it per second since the start,
	// ETASeconds what is left at that rate (0 while unknown).
	BytesCompared int64   `json:"bytes_compared"`
	RateBps       float64 `json:"rate_bps"`
	ETASeconds    float64 `json:"eta_seconds"`
	// Divergent counts the regions found different so far.
	Divergent int `json:"divergent"`
}

// Percent is RegionsDone of RegionsTotal, 0 to 100.
func (p VerifyProgress) Percent() float64 {
	if p.RegionsTotal <= 0 {
		return 0
	}
	return min(100, float64(p.RegionsDone)/float64(p.RegionsTotal)*100)
}

// LUNVerifier runs an online verify of a LUN this node owns. It fails with
// ErrNotLUNOwner when the node does not serve the LUN as its owner.
// With repair, divergent regions of in-sync copies are rewritten from the
// owner's copy (and still reported). progress, when not nil, is called as
// the run goes (as often as after every region: it must return quickly).
type LUNVerifier func(ctx context.Context, iqn string, lun uint64, repair bool, progress func(VerifyProgress)) (*VerifyResult, error)

// verifierBox holds the API's LUNVerifier (none: this node cannot verify).
type verifierBox struct{ v atomic.Pointer[LUNVerifier] }

// SetVerifier installs the function that serves online verify requests.
func (a *API) SetVerifier(v LUNVerifier) { a.verifier.v.Store(&v) }

// verifyProgressInterval is the least time between two progress lines of
// a streamed verify (a variable for tests).
var verifyProgressInterval = time.Second

// verifyLUN serves POST /v1/targets/{iqn}/luns/{lun}/verify[?repair=1]:
// the VerifyResult as JSON once the run ends; with progress=1, a stream of
// JSON lines (application/x-ndjson) instead: {"progress":VerifyProgress}
// at most once per verifyProgressInterval while it runs, then
// {"result":VerifyResult} or {"error":Error}. An error before the first
// line is an ordinary error answer.
func (a *API) verifyLUN(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	n, err := strconv.ParseUint(r.PathValue("lun"), 10, 64)
	if err != nil {
		writeErr(w, errf(ErrInvalid, "bad LUN number %q", r.PathValue("lun")))
		return
	}
	vp := a.verifier.v.Load()
	if vp == nil {
		writeErr(w, errf(ErrNotLUNOwner, "node %s does not run replication", a.node.cfg.NodeID))
		return
	}
	repair := r.URL.Query().Get("repair") == "1"
	if r.URL.Query().Get("progress") != "1" {
		res, err := (*vp)(r.Context(), a.iqn(r), n, repair, nil)
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
		return
	}
	st := &verifyStream{w: w}
	res, err := (*vp)(r.Context(), a.iqn(r), n, repair, st.progress)
	st.end(res, err)
}

// verifyStream writes a streamed verify's lines.
type verifyStream struct {
	w       http.ResponseWriter
	mu      sync.Mutex
	started bool
	last    time.Time
}

// verifyLine is one line of a streamed verify: exactly one field is set.
type verifyLine struct {
	Progress *VerifyProgress `json:"progress,omitempty"`
	Result   *VerifyResult   `json:"result,omitempty"`
	Error    *Error          `json:"error,omitempty"`
}

func (s *verifyStream) progress(p VerifyProgress) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := time.Now(); s.started && now.Sub(s.last) < verifyProgressInterval {
		return
	} else {
		s.last = now
	}
	s.writeLocked(verifyLine{Progress: &p})
}

func (s *verifyStream) end(res *VerifyResult, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.writeLocked(verifyLine{Result: res})
		return
	}
	if !s.started {
		writeErr(s.w, err)
		return
	}
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Code: "internal", Message: err.Error()}
	}
	s.writeLocked(verifyLine{Error: e})
}

func (s *verifyStream) writeLocked(l verifyLine) {
	if !s.started {
		s.started = true
		s.w.Header().Set("Content-Type", ndjson)
		s.w.WriteHeader(http.StatusOK)
	}
	b, _ := json.Marshal(l)
	s.w.Write(append(b, '\n'))
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
}

const ndjson = "application/x-ndjson"

// VerifyLUN asks the node (which must own the LUN) to verify its copies.
// It can take as long as reading the whole LUN at the resync rate: ctx
// bounds it.
func (c *Client) VerifyLUN(ctx context.Context, iqn string, lun uint64, repair bool) (*VerifyResult, error) {
	return c.VerifyLUNProgress(ctx, iqn, lun, repair, nil)
}

// VerifyLUNProgress is VerifyLUN calling progress (when not nil) with each
// progress report the node streams while it runs, about once a second. A
// node that does not stream (an older version) answers with the result
// only.
func (c *Client) VerifyLUNProgress(ctx context.Context, iqn string, lun uint64, repair bool, progress func(VerifyProgress)) (*VerifyResult, error) {
	path := "/v1/targets/" + url.PathEscape(iqn) + "/luns/" + strconv.FormatUint(lun, 10) + "/verify"
	q := url.Values{}
	if repair {
		q.Set("repair", "1")
	}
	if progress == nil {
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		var out VerifyResult
		if err := c.do(ctx, http.MethodPost, path, struct{}{}, &out); err != nil {
			return nil, err
		}
		return &out, nil
	}
	q.Set("progress", "1")
	var out *VerifyResult
	err := c.stream(ctx, http.MethodPost, path+"?"+q.Encode(), struct{}{}, func(line []byte) error {
		var l verifyLine
		if err := json.Unmarshal(line, &l); err != nil {
			return err
		}
		switch {
		case l.Error != nil:
			return l.Error
		case l.Result != nil:
			out = l.Result
		case l.Progress != nil:
			progress(*l.Progress)
		}
		return nil
	}, func(body []byte) error {
		out = &VerifyResult{}
		return json.Unmarshal(body, out)
	})
	if err != nil {
		return nil, err
	}
	if out == nil {
		return nil, &TransportError{Addr: c.Addr(), Method: http.MethodPost, Path: path, Sent: true, Err: errors.New("the answer ended before the result")}
	}
	return out, nil
}
