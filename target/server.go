package target

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hatgt/hatgt/scsi"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("target: server closed")

// ServerConfig configures an iSCSI target server. Zero values get the
// defaults documented on each field (see DefaultServerConfig).
type ServerConfig struct {
	Logger *slog.Logger
	// Portals returns the portals SendTargets advertises for a target; nil
	// (or a nil result) means the address the discovery connection arrived
	// on, with the target's TPGT.
	Portals func(targetName string) []Portal

	// Limits and preferences the target offers in login negotiation.
	// MaxRecvDataSegmentLength is what the target accepts in one data
	// segment (default 262144).
	MaxRecvDataSegmentLength uint32
	// MaxBurstLength (default 1048576) and FirstBurstLength (default
	// 262144) bound solicited and unsolicited data sequences.
	MaxBurstLength   uint32
	FirstBurstLength uint32
	// MaxConnections per session (default 8).
	MaxConnections uint32
	// MaxOutstandingR2T per task (default 8).
	MaxOutstandingR2T uint32
	// DisableImmediateData offers ImmediateData=No (default: Yes).
	DisableImmediateData bool
	// InitialR2T offers InitialR2T=Yes (default: No, which lets the
	// initiator send FirstBurstLength of unsolicited data).
	InitialR2T bool
	// DefaultTime2Wait and DefaultTime2Retain offered in login and sent in
	// Logout Responses (defaults 2 and 20 seconds).
	DefaultTime2Wait   uint32
	DefaultTime2Retain uint32

	// CmdWindow is the CmdSN window, the queue depth of a session
	// (default 128): MaxCmdSN advances as commands complete, so at most
	// CmdWindow non-immediate SCSI commands of a session are in progress
	// at once; commands beyond MaxCmdSN are ignored (RFC 7143 section
	// 4.2.2.1). Immediate SCSI commands beyond one per connection get
	// TASK SET FULL.
	CmdWindow uint32
	// MaxCommandData bounds the Expected Data Transfer Length of one
	// write (default 32 MiB, the MAXIMUM TRANSFER LENGTH the SCSI device
	// reports); longer writes fail with CHECK CONDITION.
	MaxCommandData uint32
	// SessionWriteBudget bounds the write data buffers of one session, in
	// bytes (default 64 MiB). CmdWindow × FirstBurstLength of it is kept
	// for the data initiators send unasked (immediate and unsolicited);
	// a write whose solicited data does not fit in the rest waits, its
	// R2Ts unsent, until enough writes complete. It must be at least
	// CmdWindow × FirstBurstLength + MaxCommandData.
	SessionWriteBudget uint64
	// WriteTimeout bounds every write to a connection (default 30 s): an
	// initiator that stops reading for that long loses the connection,
	// and its tasks are aborted.
	WriteTimeout time.Duration
	// DataOutTimeout is how long a write may wait for Data-Out it has
	// asked for with an R2T, or that the initiator announced as
	// unsolicited, before the target gives up on the connection (error
	// recovery level 0) and aborts its tasks (default 30 s).
	DataOutTimeout time.Duration

	// NopInInterval is how long a connection may stay silent before the
	// target pings it with a NOP-In (default 10 s; negative disables).
	// NopInTimeout is how long the target waits for the answer before it
	// drops the connection (default 90 s). A long timeout: a dead peer is
	// also found by TCP, while single-threaded initiators (libiscsi's
	// synchronous API) answer only between their own commands, and
	// dropping them sooner turns a pause into a reconnect storm with a
	// fresh POWER ON unit attention each time.
	NopInInterval time.Duration
	NopInTimeout  time.Duration
	// LoginTimeout bounds the whole login phase (default 30 s).
	LoginTimeout time.Duration

	// DiscoveryCHAP, when set, makes discovery sessions authenticate
	// with CHAP (ietd.conf's global IncomingUser/OutgoingUser);
	// SetDiscoveryCHAP changes it while the server runs.
	DiscoveryCHAP *CHAPConfig
}

// DefaultServerConfig returns a config with every default filled in.
func DefaultServerConfig() ServerConfig {
	var c ServerConfig
	c.setDefaults()
	return c
}

func (c *ServerConfig) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	def := func(v *uint32, d uint32) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.MaxRecvDataSegmentLength, 262144)
	def(&c.MaxBurstLength, 1048576)
	def(&c.FirstBurstLength, 262144)
	def(&c.MaxConnections, 8)
	def(&c.MaxOutstandingR2T, 8)
	def(&c.DefaultTime2Wait, 2)
	def(&c.DefaultTime2Retain, 20)
	def(&c.CmdWindow, 128)
	def(&c.MaxCommandData, 32<<20)
	if c.SessionWriteBudget == 0 {
		c.SessionWriteBudget = 64 << 20
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 30 * time.Second
	}
	if c.DataOutTimeout == 0 {
		c.DataOutTimeout = 30 * time.Second
	}
	if c.NopInInterval == 0 {
		c.NopInInterval = 10 * time.Second
	}
	if c.NopInTimeout == 0 {
		c.NopInTimeout = 90 * time.Second
	}
	if c.LoginTimeout == 0 {
		c.LoginTimeout = 30 * time.Second
	}
}

// Validate reports configuration errors, including relations between
// fields. It expects defaults to have been applied.
func (c *ServerConfig) Validate() error {
	const maxSeg = 1<<24 - 1
	var errs []error
	check := func(name string, v, lo, hi uint32) {
		if v < lo || v > hi {
			errs = append(errs, fmt.Errorf("%s %d out of range [%d, %d]", name, v, lo, hi))
		}
	}
	check("MaxRecvDataSegmentLength", c.MaxRecvDataSegmentLength, 512, maxSeg)
	check("MaxBurstLength", c.MaxBurstLength, 512, maxSeg)
	check("FirstBurstLength", c.FirstBurstLength, 512, maxSeg)
	check("MaxConnections", c.MaxConnections, 1, 65535)
	check("MaxOutstandingR2T", c.MaxOutstandingR2T, 1, 65535)
	check("DefaultTime2Wait", c.DefaultTime2Wait, 0, 3600)
	check("DefaultTime2Retain", c.DefaultTime2Retain, 0, 3600)
	check("CmdWindow", c.CmdWindow, 1, 1<<16)
	if c.FirstBurstLength > c.MaxBurstLength {
		errs = append(errs, errors.New("FirstBurstLength must not exceed MaxBurstLength"))
	}
	if c.MaxCommandData < c.MaxBurstLength {
		errs = append(errs, errors.New("MaxCommandData must be at least MaxBurstLength"))
	}
	if need := uint64(c.CmdWindow)*uint64(c.FirstBurstLength) + uint64(c.MaxCommandData); c.SessionWriteBudget < need {
		errs = append(errs, fmt.Errorf("SessionWriteBudget %d is less than CmdWindow × FirstBurstLength + MaxCommandData = %d: raise it, or lower those", c.SessionWriteBudget, need))
	}
	if c.WriteTimeout < 0 {
		errs = append(errs, errors.New("WriteTimeout must be positive (0 means the default)"))
	}
	if c.DataOutTimeout < 0 {
		errs = append(errs, errors.New("DataOutTimeout must be positive (0 means the default)"))
	}
	if c.NopInInterval > 0 && c.NopInTimeout <= 0 {
		errs = append(errs, errors.New("NopInTimeout must be positive when NopInInterval is"))
	}
	if c.LoginTimeout <= 0 {
		errs = append(errs, errors.New("LoginTimeout must be positive"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("target: invalid config: %w", errors.Join(errs...))
	}
	return nil
}

// TargetConfig describes one iSCSI target (one SCSI target device).
// Name, Device and the tags are fixed for the life of the target; the
// login rules (Alias, ACL, AllowFrom, CHAP, Login) can be changed with
// UpdateTarget.
type TargetConfig struct {
	Name, Alias    string
	Device         *scsi.Device
	PortalGroupTag uint16 // default 1
	RelativePortID uint16 // default 1
	// ACL lists the initiator names allowed to log in; empty means any.
	ACL []string
	// AllowFrom, when set, is asked after ACL, at login and when
	// SendTargets lists the target, with the initiator's name and the
	// address it connects from; false refuses the login (and hides the
	// target from discovery).
	AllowFrom func(initiatorName string, remote net.Addr) bool
	// CHAP, when set, makes CHAP authentication mandatory.
	CHAP *CHAPConfig
	// Login, when set, holds the target's own values in login
	// negotiation instead of the server's.
	Login *LoginParams
}

// targetEntry is a target as the server holds it.
type targetEntry struct {
	cfg TargetConfig // Name, PortalGroupTag, RelativePortID: fixed
	dev device
	// rules are the login rules, replaced whole by UpdateTarget.
	rules atomic.Pointer[targetRules]
}

// targetRules are the parts of a target that UpdateTarget changes.
type targetRules struct {
	alias     string
	acl       map[string]bool
	allowFrom func(string, net.Addr) bool
	chap      *CHAPConfig
	login     *LoginParams
}

func newTargetRules(tc TargetConfig) *targetRules {
	r := &targetRules{alias: tc.Alias, acl: map[string]bool{}, allowFrom: tc.AllowFrom, chap: tc.CHAP, login: tc.Login}
	for _, a := range tc.ACL {
		r.acl[strings.ToLower(a)] = true
	}
	return r
}

func (t *targetEntry) allows(initiator string) bool {
	acl := t.rules.Load().acl
	return len(acl) == 0 || acl[strings.ToLower(initiator)]
}

// admits reports whether initiator, connecting from remote, may log in:
// the ACL and the AllowFrom rules both allow it.
func (t *targetEntry) admits(initiator string, remote net.Addr) bool {
	r := t.rules.Load()
	if len(r.acl) > 0 && !r.acl[strings.ToLower(initiator)] {
		return false
	}
	return r.allowFrom == nil || r.allowFrom(initiator, remote)
}

func (t *targetEntry) loginTarget() *LoginTarget {
	r := t.rules.Load()
	return &LoginTarget{
		Name:           t.cfg.Name,
		Alias:          r.alias,
		PortalGroupTag: t.cfg.PortalGroupTag,
		AllowInitiator: t.allows,
		AllowFrom:      r.allowFrom,
		CHAP:           r.chap,
		Params:         r.login,
	}
}

// sessionKey identifies a session: initiator name, ISID and target name
// (empty for discovery sessions), RFC 7143 section 4.4.3.
type sessionKey struct {
	initiator string
	isid      [6]byte
	target    string
}

// Server is an iSCSI target server: it accepts connections on any number of
// listeners, runs login, and serves the full feature phase of the sessions
// it creates. Its targets can be added and removed while it runs.
type Server struct {
	cfg ServerConfig
	log *slog.Logger

	// discoveryCHAP is the CHAP discovery sessions must pass; nil: none.
	discoveryCHAP atomic.Pointer[CHAPConfig]

	mu        sync.Mutex
	targets   map[string]*targetEntry
	sessions  map[sessionKey]*session
	byTSIH    map[uint16]*session
	nextTSIH  uint16
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   bool
	connWG    sync.WaitGroup
}

// NewServer returns a server with no targets.
func NewServer(cfg ServerConfig) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		targets:   map[string]*targetEntry{},
		sessions:  map[sessionKey]*session{},
		byTSIH:    map[uint16]*session{},
		listeners: map[net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
	}
	s.discoveryCHAP.Store(cfg.DiscoveryCHAP)
	return s, nil
}

// SetDiscoveryCHAP changes the CHAP credentials discovery sessions must
// pass (nil: none) for logins from now on; sessions already logged in
// stay.
func (s *Server) SetDiscoveryCHAP(c *CHAPConfig) {
	s.discoveryCHAP.Store(c)
}

// AddTarget starts serving a target.
func (s *Server) AddTarget(tc TargetConfig) error {
	if tc.Name == "" {
		return errors.New("target: target name is empty")
	}
	if tc.Device == nil {
		return fmt.Errorf("target: target %s has no device", tc.Name)
	}
	return s.addTarget(tc, tc.Device)
}

func (s *Server) addTarget(tc TargetConfig, dev device) error {
	if tc.PortalGroupTag == 0 {
		tc.PortalGroupTag = 1
	}
	if tc.RelativePortID == 0 {
		tc.RelativePortID = 1
	}
	if err := tc.Login.Validate(); err != nil {
		return fmt.Errorf("target: target %s: %w", tc.Name, err)
	}
	te := &targetEntry{cfg: tc, dev: dev}
	te.rules.Store(newTargetRules(tc))
	key := strings.ToLower(tc.Name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.targets[key]; ok {
		return fmt.Errorf("target: target %s already exists", tc.Name)
	}
	s.targets[key] = te
	return nil
}

// UpdateTarget replaces the login rules of a running target (Alias, ACL,
// AllowFrom, CHAP, Login) with those of tc; they apply to logins from now
// on, while the target's sessions carry on (as a reloaded ietd.conf did).
// tc.Device must be nil or the target's own device, and tc's tags zero or
// the target's own: those are fixed (RemoveTarget and AddTarget change
// them).
func (s *Server) UpdateTarget(tc TargetConfig) error {
	if err := tc.Login.Validate(); err != nil {
		return fmt.Errorf("target: target %s: %w", tc.Name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	te, ok := s.targets[strings.ToLower(tc.Name)]
	switch {
	case !ok:
		return fmt.Errorf("target: no target %s", tc.Name)
	case tc.Device != nil && te.cfg.Device != tc.Device:
		return fmt.Errorf("target: target %s: UpdateTarget cannot change the device", tc.Name)
	case tc.PortalGroupTag != 0 && tc.PortalGroupTag != te.cfg.PortalGroupTag,
		tc.RelativePortID != 0 && tc.RelativePortID != te.cfg.RelativePortID:
		return fmt.Errorf("target: target %s: UpdateTarget cannot change the portal group tag or relative port ID", tc.Name)
	}
	te.rules.Store(newTargetRules(tc))
	return nil
}

// RemoveTarget stops serving a target and closes its sessions.
func (s *Server) RemoveTarget(name string) error {
	s.mu.Lock()
	te, ok := s.targets[strings.ToLower(name)]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("target: no target %s", name)
	}
	delete(s.targets, strings.ToLower(name))
	var victims []*session
	for _, ss := range s.sessions {
		if ss.tgt == te {
			victims = append(victims, ss)
		}
	}
	s.mu.Unlock()
	for _, ss := range victims {
		ss.terminate("target removed")
	}
	return nil
}

func (s *Server) lookupTarget(name string) *targetEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.targets[strings.ToLower(name)]
}

// Serve accepts connections on l until Shutdown. It always returns a
// non-nil error: ErrServerClosed after Shutdown.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors and the like: back off and retry,
			// as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !s.startConn(nc) {
			nc.Close()
		}
	}
}

// startConn serves nc on a new goroutine; false when shutting down.
func (s *Server) startConn(nc net.Conn) bool {
	c := newConn(s, nc)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return false
	}
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.connWG.Done()
		defer func() {
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
		c.serve()
	}()
	return true
}

// Shutdown stops accepting connections, lets commands in flight finish
// (until ctx is done), then closes every connection and waits for them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for l := range s.listeners {
		l.Close()
	}
	s.mu.Unlock()

	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !s.idle() {
		select {
		case <-ctx.Done():
			s.closeAllConns()
			return ctx.Err()
		case <-tick.C:
		}
	}
	done := make(chan struct{})
	go func() { s.connWG.Wait(); close(done) }()
	// Ask every initiator to log out (RFC 7143 section 11.9.1, AsyncEvent
	// 1) and give it a moment to do so before closing what is left.
	if s.requestLogouts() > 0 {
		grace := time.NewTimer(shutdownLogoutGrace)
		select {
		case <-done:
		case <-grace.C:
		case <-ctx.Done():
		}
		grace.Stop()
	}
	s.closeAllConns()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// shutdownLogoutGrace is how long Shutdown waits for initiators to answer
// its logout request.
const shutdownLogoutGrace = 2 * time.Second

// requestLogouts sends an Asynchronous Message "target requests logout" on
// every connection in full feature phase and returns how many it sent.
func (s *Server) requestLogouts() int {
	s.mu.Lock()
	cs := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		if c.ffp.Load() {
			cs = append(cs, c)
		}
	}
	s.mu.Unlock()
	for _, c := range cs {
		c.requestLogout(s.cfg.DefaultTime2Wait)
	}
	return len(cs)
}

// idle reports whether no connection has a command in flight.
func (s *Server) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.active.Load() > 0 {
			return false
		}
	}
	return true
}

func (s *Server) closeAllConns() {
	s.mu.Lock()
	cs := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		c.close()
	}
}

// sendTargetsEntries returns the targets visible to initiator, connected
// from remote to local: all it may log in to, or only own when own is
// non-nil (normal sessions).
func (s *Server) sendTargetsEntries(initiator string, own *targetEntry, local, remote net.Addr) []SendTargetsEntry {
	s.mu.Lock()
	var tes []*targetEntry
	if own != nil {
		tes = []*targetEntry{own}
	} else {
		for _, te := range s.targets {
			if te.admits(initiator, remote) {
				tes = append(tes, te)
			}
		}
	}
	s.mu.Unlock()
	slices.SortFunc(tes, func(a, b *targetEntry) int { return strings.Compare(a.cfg.Name, b.cfg.Name) })
	out := make([]SendTargetsEntry, 0, len(tes))
	for _, te := range tes {
		var portals []Portal
		if s.cfg.Portals != nil {
			portals = s.cfg.Portals(te.cfg.Name)
		}
		if portals == nil && local != nil {
			portals = []Portal{{Addr: local.String(), TPGT: te.cfg.PortalGroupTag}}
		}
		out = append(out, SendTargetsEntry{Name: te.cfg.Name, Portals: portals})
	}
	return out
}
