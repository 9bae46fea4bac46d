package cluster

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
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

// LUNVerifier runs an online verify of a LUN this node owns. It fails with
// ErrNotLUNOwner when the node does not serve the LUN as its owner.
// With repair, divergent regions of in-sync copies are rewritten from the
// owner's copy (and still reported).
type LUNVerifier func(ctx context.Context, iqn string, lun uint64, repair bool) (*VerifyResult, error)

// verifierBox holds the API's LUNVerifier (none: this node cannot verify).
type verifierBox struct{ v atomic.Pointer[LUNVerifier] }

// SetVerifier installs the function that serves online verify requests.
func (a *API) SetVerifier(v LUNVerifier) { a.verifier.v.Store(&v) }

func (a *API) verifyLUN(r *http.Request) (any, error) {
	n, err := strconv.ParseUint(r.PathValue("lun"), 10, 64)
	if err != nil {
		return nil, errf(ErrInvalid, "bad LUN number %q", r.PathValue("lun"))
	}
	vp := a.verifier.v.Load()
	if vp == nil {
		return nil, errf(ErrNotLUNOwner, "node %s does not run replication", a.node.cfg.NodeID)
	}
	return (*vp)(r.Context(), a.iqn(r), n, r.URL.Query().Get("repair") == "1")
}

// VerifyLUN asks the node (which must own the LUN) to verify its copies.
// It can take as long as reading the whole LUN at the resync rate: ctx
// bounds it.
func (c *Client) VerifyLUN(ctx context.Context, iqn string, lun uint64, repair bool) (*VerifyResult, error) {
	var out VerifyResult
	path := "/v1/targets/" + url.PathEscape(iqn) + "/luns/" + strconv.FormatUint(lun, 10) + "/verify"
	if repair {
		path += "?repair=1"
	}
	if err := c.do(ctx, http.MethodPost, path, struct{}{}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
