package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client talks to a node's admin API. It is what the hatgt CLI uses and
// what a follower uses to forward a change to the leader.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// NewClient returns a client for addr: "host:port" (TCP), an http:// URL,
// or "unix:/path/to/hatgt.sock". token may be empty. hc nil means a client
// with a 30 s timeout.
func NewClient(addr, token string, hc *http.Client) *Client {
	c := &Client{token: token, hc: hc}
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
// error comes back as *Error.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("cluster: %s %s: %w", method, path, redactURLErr(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("cluster: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		if json.Unmarshal(b, &eb) == nil && eb.Error != nil {
			return eb.Error
		}
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
			return fmt.Errorf("cluster: %s %s: HTTP %d: %w", method, path, resp.StatusCode, errNoEndpoint)
		}
		return fmt.Errorf("cluster: %s %s: HTTP %d", method, path, resp.StatusCode)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("cluster: bad answer to %s %s: %w", method, path, err)
		}
	}
	return nil
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
