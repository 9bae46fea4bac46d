package cluster

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"
)

// TestVerifyStreamsProgress: with a progress function the client gets the
// owner's progress reports while the verify runs, then the result; an
// error after the stream started comes back as the API's *Error, one
// before it as an ordinary error answer; without one the answer is the
// result alone, as before.
func TestVerifyStreamsProgress(t *testing.T) {
	old := verifyProgressInterval
	verifyProgressInterval = 0
	t.Cleanup(func() { verifyProgressInterval = old })

	var fail error
	a := &API{}
	a.SetVerifier(func(ctx context.Context, iqn string, lun uint64, repair bool, progress func(VerifyProgress)) (*VerifyResult, error) {
		if iqn == "early" {
			return nil, errf(ErrNotLUNOwner, "not the owner")
		}
		for i := int64(1); i <= 3; i++ {
			if progress != nil {
				progress(VerifyProgress{Node: "n2", Copy: 1, Copies: 1, RegionsDone: i, RegionsTotal: 4, BytesCompared: i << 20, RateBps: 1 << 20, ETASeconds: float64(4 - i)})
			}
		}
		if fail != nil {
			return nil, fail
		}
		return &VerifyResult{Target: iqn, LUN: lun, Owner: "n1", Repair: repair, Copies: []VerifyCopy{{Node: "n2", Regions: 4}}}, nil
	})
	srv := httptest.NewServer(a.Handler(true))
	defer srv.Close()
	cl := NewClient(srv.URL, "", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var got []VerifyProgress
	res, err := cl.VerifyLUNProgress(ctx, iqnA, 3, true, func(p VerifyProgress) { got = append(got, p) })
	if err != nil {
		t.Fatal(err)
	}
	if res.Target != iqnA || res.LUN != 3 || !res.Repair || len(res.Copies) != 1 {
		t.Errorf("result %+v", res)
	}
	if len(got) != 3 || got[0].RegionsDone != 1 || got[2].RegionsDone != 3 || got[2].Percent() != 75 {
		t.Errorf("progress %+v, want 3 reports, 25%% to 75%%", got)
	}

	fail = errf(ErrNotLUNOwner, "deposed during the run")
	got = nil
	_, err = cl.VerifyLUNProgress(ctx, iqnA, 3, false, func(p VerifyProgress) { got = append(got, p) })
	if !errors.Is(err, ErrNotLUNOwner) || err.Error() != "deposed during the run" || len(got) != 3 {
		t.Errorf("error after the stream started: %v (%d reports)", err, len(got))
	}
	if _, err := cl.VerifyLUNProgress(ctx, "early", 3, false, func(VerifyProgress) {}); !errors.Is(err, ErrNotLUNOwner) {
		t.Errorf("error before the stream: %v", err)
	}

	fail = nil
	res, err = cl.VerifyLUN(ctx, iqnA, 1, false)
	if err != nil || res.LUN != 1 || res.Repair {
		t.Errorf("without progress: %+v, %v", res, err)
	}
}
