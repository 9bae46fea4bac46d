package simnet

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"
)

// An http.Client and an http.Server over simnet: requests and large
// bodies go through; across a cut a request on a kept-alive connection
// times out instead of failing at once; after the heal it works again.
func TestHTTPOverSimnet(t *testing.T) {
	n, hs := newNet(t, Config{Window: 16 << 10, SendBuffer: 16 << 10}, "client", "server")
	ln, err := hs["server"].Listen(":8080")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, r.Body) // echo
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	tr := &http.Transport{DialContext: hs["client"].DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}

	post := func(ctx context.Context, body []byte) ([]byte, error) {
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://server:8080/echo", bytes.NewReader(body))
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		return io.ReadAll(resp.Body)
	}
	body := bytes.Repeat([]byte("simnet "), 150_000) // 1 MiB, many windows
	if got, err := post(t.Context(), body); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("echo of 1 MiB: %d bytes, %v", len(got), err)
	}

	n.Cut("client", "server")
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	_, err = post(ctx, []byte("across the cut"))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("request across the cut: %v, want the context's deadline", err)
	}
	n.Heal("client", "server")
	if got, err := post(t.Context(), []byte("healed")); err != nil || string(got) != "healed" {
		t.Fatalf("request after the heal: %q, %v", got, err)
	}
}
