package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Client talks to a node's admin API. It is what the hatgt CLI uses and
// what a follower uses to forward a change to the leader.
type Client struct {
	addr  string
	base  string
	token string
	hc    *http.Client
}

// NewClient returns a client for addr: "host:port" (TCP), an http:// URL,
// or "unix:/path/to/hatgt.sock". token may be empty. hc nil means a client
// with a 30 s timeout.
func NewClient(addr, token string, hc *http.Client) *Client {
	c := &Client{addr: addr, token: token, hc: hc}
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		c.base = "http://hatgt"
		c.hc = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
		}}
		return c
	}
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		c.base = strings.TrimRight(addr, "/")
	} else {
		c.base = "http://" + addr
	}
	if c.hc == nil {
		c.hc = &http.Client{Timeout: 30 * time.Second}
	}
	return c
}

// do sends a request and decodes the answer into out (if not nil). An API
// error comes back as *Error, no answer as *TransportError.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return &TransportError{Addr: c.Addr(), Method: method, Path: path, Sent: true, Err: err}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return c.badAnswer(method, path, err)
		}
	}
	return nil
}

// maxAnswer bounds an answer (or one line of a streamed one).
const maxAnswer = 16 << 20

// stream sends a request whose answer may be a stream of JSON lines
// (application/x-ndjson): onLine gets each line. Any other answer is
// read whole and given to onBody. An error of onLine ends the stream and
// is returned.
func (c *Client) stream(ctx context.Context, method, path string, in any, onLine, onBody func([]byte) error) error {
	resp, err := c.send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "application/x-ndjson" {
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
		if err != nil {
			return &TransportError{Addr: c.Addr(), Method: method, Path: path, Sent: true, Err: err}
		}
		if err := onBody(b); err != nil {
			return c.badAnswer(method, path, err)
		}
		return nil
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), maxAnswer)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		if err := onLine(sc.Bytes()); err != nil {
			var e *Error
			if errors.As(err, &e) {
				return err
			}
			return c.badAnswer(method, path, err)
		}
	}
	if err := sc.Err(); err != nil {
		return &TransportError{Addr: c.Addr(), Method: method, Path: path, Sent: true, Err: err}
	}
	return nil
}

// send sends a request and returns the answer when its status is 200 OK;
// otherwise the API's *Error, or a *TransportError when no answer came.
func (c *Client) send(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	var sent atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(httptrace.WroteRequestInfo) { sent.Store(true) },
	})
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, &TransportError{Addr: c.Addr(), Method: method, Path: path, Sent: sent.Load(), Err: redactURLErr(err)}
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, &TransportError{Addr: c.Addr(), Method: method, Path: path, Sent: true, Err: err}
	}
	var eb errorBody
	if json.Unmarshal(b, &eb) == nil && eb.Error != nil {
		return nil, eb.Error
	}
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
		return nil, fmt.Errorf("%s answered %s %s with HTTP %d: %w", c.Addr(), method, path, resp.StatusCode, errNoEndpoint)
	}
	return nil, fmt.Errorf("%s answered %s %s with HTTP %d: is it a hatgt node's admin API address (port 3270 by default)?",
		c.Addr(), method, path, resp.StatusCode)
}

func (c *Client) badAnswer(method, path string, err error) error {
	return fmt.Errorf("the hatgt admin API at %s sent a bad answer to %s %s (a different hatgt version?): %w", c.Addr(), method, path, err)
}

// Addr returns the address the client talks to, as given to NewClient.
func (c *Client) Addr() string { return c.addr }

// TransportError is a request that got no answer from the node at Addr:
// it could not be reached, or (Sent) it took the request but did not
// answer before the context or the client's timeout ended. Not an answer
// of the API, which comes back as *Error.
type TransportError struct {
	Addr, Method, Path string
	// Sent is true when the request was written: the node was reached,
	// and may have acted on it.
	Sent bool
	Err  error
}

func (e *TransportError) Error() string {
	if e.Sent {
		return fmt.Sprintf("the hatgt admin API at %s took %s %s but did not answer: %v", e.Addr, e.Method, e.Path, e.Err)
	}
	return fmt.Sprintf("cannot reach the hatgt admin API at %s: %v", e.Addr, e.Err)
}

func (e *TransportError) Unwrap() error { return e.Err }

// Timeout reports whether the request ran out of time (rather than being
// refused or reset).
func (e *TransportError) Timeout() bool {
	var ne net.Error
	return errors.Is(e.Err, context.DeadlineExceeded) || errors.As(e.Err, &ne) && ne.Timeout()
}

// errNoEndpoint is an answer without an API error from a node that has no
// such endpoint (an older version).
var errNoEndpoint = errors.New("no such endpoint on that node")

// redactURLErr keeps url.Error's operation and cause; a URL never holds a
// secret here, but the token must never be echoed, so headers are not.
func redactURLErr(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

// Status returns GET /v1/status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
	return s, err
}

// Ping returns the ID of the node that answers.
func (c *Client) Ping(ctx context.Context) (string, error) {
	var p PingAnswer
	err := c.do(ctx, http.MethodGet, "/v1/ping", nil, &p)
	return p.ID, err
}

// CreateTarget creates a target.
func (c *Client) CreateTarget(ctx context.Context, iqn, alias string) error {
	return c.do(ctx, http.MethodPost, "/v1/targets", TargetCreate{IQN: iqn, Alias: alias}, nil)
}

// DeleteTarget deletes a target without LUNs.
func (c *Client) DeleteTarget(ctx context.Context, iqn string) error {
	return c.do(ctx, http.MethodDelete, "/v1/targets/"+url.PathEscape(iqn), nil, nil)
}

// CreateLUN creates a LUN on target iqn.
func (c *Client) CreateLUN(ctx context.Context, iqn string, q LUNRequest) error {
	return c.do(ctx, http.MethodPost, "/v1/targets/"+url.PathEscape(iqn)+"/luns", q, nil)
}

// DeleteLUN deletes LUN lun of target iqn.
func (c *Client) DeleteLUN(ctx context.Context, iqn string, lun uint64) error {
	return c.do(ctx, http.MethodDelete, "/v1/targets/"+url.PathEscape(iqn)+"/luns/"+strconv.FormatUint(lun, 10), nil, nil)
}

// AddACL allows initiator to log in to target iqn.
func (c *Client) AddACL(ctx context.Context, iqn, initiator string) error {
	return c.do(ctx, http.MethodPost, "/v1/targets/"+url.PathEscape(iqn)+"/acl", ACLChange{Initiator: initiator}, nil)
}

// RemoveACL removes initiator from target iqn's ACL.
func (c *Client) RemoveACL(ctx context.Context, iqn, initiator string) error {
	return c.do(ctx, http.MethodDelete, "/v1/targets/"+url.PathEscape(iqn)+"/acl/"+url.PathEscape(initiator), nil, nil)
}

// SetCHAP sets target iqn's CHAP credentials.
func (c *Client) SetCHAP(ctx context.Context, iqn string, chap CHAP) error {
	return c.do(ctx, http.MethodPut, "/v1/targets/"+url.PathEscape(iqn)+"/chap", chap, nil)
}

// ClearCHAP removes target iqn's CHAP credentials.
func (c *Client) ClearCHAP(ctx context.Context, iqn string) error {
	return c.do(ctx, http.MethodDelete, "/v1/targets/"+url.PathEscape(iqn)+"/chap", nil, nil)
}

// AddNode asks the cluster to add node as a voter (what a joining node
// sends to a member).
func (c *Client) AddNode(ctx context.Context, node NodeInfo) (JoinResult, error) {
	var r JoinResult
	err := c.do(ctx, http.MethodPost, "/v1/nodes", node, &r)
	return r, err
}

// RemoveNode removes a dead node from the cluster. While the node may
// still serve LUNs it owns (its owner lease), the answer is ErrOwnerLease,
// saying when to retry.
func (c *Client) RemoveNode(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/nodes/"+url.PathEscape(id), nil, nil)
}

// Join asks the node to join the cluster of the member at peer (API
// address).
func (c *Client) Join(ctx context.Context, peer string) error {
	return c.do(ctx, http.MethodPost, "/v1/join", JoinRequest{Peer: peer}, nil)
}

// Leave asks the node to leave the cluster and stop (Node.Leave: it hands
// its LUNs over first).
func (c *Client) Leave(ctx context.Context, opts LeaveOptions) error {
	return c.do(ctx, http.MethodPost, "/v1/leave", opts, nil)
}

// Forward sends an Op to the leader's internal endpoint.
func (c *Client) Forward(ctx context.Context, op *Op) (OpResult, error) {
	var r OpResult
	err := c.do(ctx, http.MethodPost, "/v1/internal/forward", op, &r)
	return r, err
}
