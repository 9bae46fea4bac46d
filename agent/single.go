package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/hatgt/hatgt/blockstore"
	"github.com/hatgt/hatgt/config"
	"github.com/hatgt/hatgt/scsi"
	"github.com/hatgt/hatgt/target"
)

// DevConfigName is the File of the configuration "serve --dev" serves:
// its LUN's messages then speak of the dev LUN and --data-dir.
const DevConfigName = "--dev"

// Single is a running single-node hatgt ("serve --dev", "serve --config"):
// one iSCSI server, its portals and the stores under its LUNs, as a config
// file describes them; SIGHUP reloads it (ReloadFile).
type Single struct {
	log       *slog.Logger
	srv       *target.Server
	listeners []net.Listener
	dev       bool // serving the --dev configuration

	// mu serializes reload with itself and with shutdown.
	mu      sync.Mutex
	cfg     *config.Config          // what runs (see reload)
	devices map[string]*scsi.Device // by target name
	stores  []openStore
	sizes   map[lunKey]int64
}

type openStore struct {
	key  lunKey
	name string // "target/lun" for messages
	path string
	s    Store
	ro   bool
}

type lunKey struct {
	target string
	lun    uint64
}

// StartSingle listens on the portals of cfg and opens every LUN. On error
// nothing is left open.
func StartSingle(cfg *config.Config, log *slog.Logger) (_ *Single, err error) {
	srv, err := target.NewServer(target.ServerConfig{Logger: log.With("component", "target"), DiscoveryCHAP: discoveryCHAP(cfg)})
	if err != nil {
		return nil, err
	}
	n := &Single{log: log, srv: srv, sizes: map[lunKey]int64{}, dev: cfg.File == DevConfigName, cfg: cfg, devices: map[string]*scsi.Device{}}
	defer func() {
		if err != nil {
			n.closeAll()
		}
	}()
	// Listen first: a busy port is the commonest start-up failure, and
	// nothing should be created on disk before it is found.
	for _, p := range cfg.Portals {
		l, err := net.Listen("tcp", p)
		if err != nil {
			return nil, fmt.Errorf("portal %s: %w", p, ListenError(err))
		}
		n.listeners = append(n.listeners, l)
	}
	for _, t := range cfg.Targets {
		dev := scsi.NewDevice(scsi.DeviceConfig{Logger: log.With("target", t.Name)})
		for _, l := range t.LUNs {
			lu, err := n.openLUN(t.Name, l)
			if err != nil {
				return nil, fmt.Errorf("target %s LUN %d: %w", t.Name, l.Number, err)
			}
			if err := dev.AddLU(l.Number, lu); err != nil {
				return nil, err
			}
		}
		if err := srv.AddTarget(nodeTargetConfig(cfg, t, dev)); err != nil {
			return nil, err
		}
		n.devices[t.Name] = dev
	}
	return n, nil
}

// nodeTargetConfig is what the iSCSI server needs of target t of cfg: its
// device, ACL, CHAP, login keys, and the initiators.allow/deny rules of
// cfg.
func nodeTargetConfig(cfg *config.Config, t config.Target, dev *scsi.Device) target.TargetConfig {
	tc := target.TargetConfig{
		Name: t.Name, Alias: t.Alias, Device: dev, ACL: t.InitiatorAllow,
		CHAP:  chapConfig(t.IncomingUsers, t.OutgoingUser),
		Login: loginParams(t.Login),
	}
	if cfg.InitiatorsAllow != nil || cfg.InitiatorsDeny != nil {
		name := t.Name
		tc.AllowFrom = func(initiator string, remote net.Addr) bool {
			return cfg.InitiatorAllowed(name, initiator, addrOf(remote))
		}
	}
	return tc
}

// discoveryCHAP is the CHAP discovery sessions of cfg must pass, or nil.
func discoveryCHAP(cfg *config.Config) *target.CHAPConfig {
	return chapConfig(cfg.DiscoveryUsers, cfg.DiscoveryOutgoingUser)
}

// chapConfig turns IncomingUser/OutgoingUser lines into a CHAP config;
// nil when there is no IncomingUser.
func chapConfig(in []config.User, out *config.User) *target.CHAPConfig {
	if len(in) == 0 {
		return nil
	}
	c := &target.CHAPConfig{User: in[0].Name, Secret: in[0].Secret}
	for _, u := range in[1:] {
		c.MoreUsers = append(c.MoreUsers, target.CHAPUser{User: u.Name, Secret: u.Secret})
	}
	if out != nil {
		c.MutualUser, c.MutualSecret = out.Name, out.Secret
	}
	return c
}

// loginParams turns a target's login keys into the server's form; nil
// when the target sets none.
func loginParams(n config.Negotiation) *target.LoginParams {
	p := &target.LoginParams{
		MaxConnections:           n.MaxConnections,
		InitialR2T:               n.InitialR2T,
		ImmediateData:            n.ImmediateData,
		MaxRecvDataSegmentLength: n.MaxRecvDataSegmentLength,
		MaxXmitDataSegmentLength: n.MaxXmitDataSegmentLength,
		MaxBurstLength:           n.MaxBurstLength,
		FirstBurstLength:         n.FirstBurstLength,
		DefaultTime2Wait:         n.DefaultTime2Wait,
		DefaultTime2Retain:       n.DefaultTime2Retain,
		MaxOutstandingR2T:        n.MaxOutstandingR2T,
		HeaderDigest:             digestPolicy(n.HeaderDigest),
		DataDigest:               digestPolicy(n.DataDigest),
	}
	if *p == (target.LoginParams{}) {
		return nil
	}
	return p
}

// digestPolicy reads a HeaderDigest/DataDigest list: one value alone is
// required, both (or none given) leave the choice to the initiator.
func digestPolicy(list []string) target.DigestPolicy {
	switch {
	case len(list) == 1 && list[0] == "None":
		return target.DigestNone
	case len(list) == 1 && list[0] == "CRC32C":
		return target.DigestCRC32C
	}
	return target.DigestAny
}

// addrOf is the IP address of a connection's remote end (zero when it has
// none).
func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	if a != nil {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			return ap.Addr().Unmap()
		}
	}
	return netip.Addr{}
}

func (n *Single) openLUN(targetName string, l config.LUN) (*scsi.LU, error) {
	mode, err := blockstore.ParseMode(string(l.IOMode))
	if err != nil {
		return nil, err
	}
	opts := blockstore.Options{Mode: mode, Logger: n.log}
	var s Store
	switch l.Type {
	case config.BlockIO:
		s, err = blockstore.OpenBlockDevice(l.Path, opts)
	default:
		opts.Size = l.Size
		opts.Create = l.Size > 0 && mode != blockstore.ReadOnly
		s, err = blockstore.OpenFile(l.Path, opts)
	}
	if err != nil {
		return nil, storeError(l, n.dev, err)
	}
	key := lunKey{targetName, l.Number}
	n.stores = append(n.stores, openStore{key: key, name: fmt.Sprintf("%s/%d", targetName, l.Number), path: l.Path, s: s, ro: mode == blockstore.ReadOnly})
	if l.Type == config.FileIO && mode != blockstore.ReadOnly {
		n.warnIfOvercommitted(l.Path, s)
	}
	if s.Size() < int64(l.Sector) {
		n.closeStore(key)
		return nil, fmt.Errorf("%s: %d bytes is smaller than one %d-byte sector", l.Path, s.Size(), l.Sector)
	}
	serial, naa := LUNIdentity(targetName, l.Number)
	if l.SerialNumber != "" {
		serial = l.SerialNumber
	}
	if l.ScsiID != "" {
		naa = ScsiIDDesignator(l.ScsiID)
	}
	// Persistent reservations with APTPL survive a restart in a file
	// beside a fileio LUN's image; a blockio LUN has nowhere of its own
	// to keep them, so it reports PTPL_C=0 and refuses APTPL.
	var prStore scsi.ReservationStore
	if l.Type != config.BlockIO {
		fs, err := scsi.NewFileReservationStore(l.Path + ".pr.json")
		if err != nil {
			n.closeStore(key)
			return nil, fmt.Errorf("reservation state for %s: %w", l.Path, err)
		}
		prStore = fs
	}
	lu, err := scsi.NewLU(s, scsi.LUConfig{
		Reservations: prStore,
		BlockSize:    l.Sector,
		ReadOnly:     mode == blockstore.ReadOnly,
		WriteCache:   mode == blockstore.WriteBack,
		Thin:         l.Thin,
		SerialNumber: serial,
		DeviceID:     naa,
		Logger:       n.log.With("target", targetName, "lun", l.Number),
	})
	if err != nil {
		n.closeStore(key)
		return nil, err
	}
	n.sizes[key] = s.Size()
	return lu, nil
}

// closeStore flushes (unless read-only) and closes the store of key and
// forgets it; it reports what failed.
func (n *Single) closeStore(key lunKey) error {
	for i, st := range n.stores {
		if st.key != key {
			continue
		}
		n.stores = append(n.stores[:i], n.stores[i+1:]...)
		delete(n.sizes, key)
		var errs []error
		if !st.ro {
			if err := st.s.Flush(); err != nil {
				errs = append(errs, fmt.Errorf("flush %s: %w", st.name, err))
			}
		}
		if err := st.s.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", st.name, err))
		}
		return errors.Join(errs...)
	}
	return nil
}

// warnIfOvercommitted warns when a sparse file could grow beyond the free
// space of its filesystem: writes would then fail with SPACE ALLOCATION
// FAILED.
func (n *Single) warnIfOvercommitted(path string, s Store) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	allocated := int64(0)
	if a, ok := s.(interface{ AllocatedBytes() (int64, error) }); ok {
		allocated, _ = a.AllocatedBytes()
	}
	if need := s.Size() - allocated; need > free {
		n.log.Warn("LUN is larger than the free space of its filesystem: writes will fail once it is full",
			"path", path, "size", FormatBytes(s.Size()), "allocated", FormatBytes(allocated), "free", FormatBytes(free))
	}
}

// storeError explains the usual reasons a store does not open.
func storeError(l config.LUN, dev bool, err error) error {
	path := l.Path
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("%s: no space left on device to create the LUN: %w", path, err)
	case errors.Is(err, blockstore.ErrInUse):
		return fmt.Errorf("%s is in use by another process (another hatgt?)", path)
	case errors.Is(err, os.ErrNotExist):
		return missingError(l)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%s: permission denied", path)
	case errors.Is(err, blockstore.ErrSize):
		if st, serr := os.Stat(path); serr == nil && st.Mode().IsRegular() && dev {
			return fmt.Errorf("%s is %d bytes, not the %d bytes of the dev LUN: move it away or use another --data-dir", path, st.Size(), l.Size)
		} else if serr == nil && st.Mode().IsRegular() {
			return fmt.Errorf("%s is %d bytes, not the %d of Size=%s: hatgt does not resize an existing LUN file; "+
				"change Size= (or drop it to use the file as it is) or move the file away", path, st.Size(), l.Size, config.FormatSize(l.Size))
		}
		return err
	}
	return err
}

// missingError says why a LUN's path does not exist and what to do.
func missingError(l config.LUN) error {
	dir := filepath.Dir(l.Path)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s does not exist, nor does its directory %s: hatgt creates a LUN's file, not its directories; "+
			"create the directory (mkdir -p %s) or correct Path=", l.Path, dir, dir)
	}
	switch {
	case l.Type == config.BlockIO:
		return fmt.Errorf("%s does not exist (Type=blockio serves an existing block device)", l.Path)
	case l.IOMode == config.ReadOnly:
		return fmt.Errorf("%s does not exist, and a read-only LUN (IOMode=ro) is never created", l.Path)
	}
	return fmt.Errorf("%s does not exist (with Type=fileio, give Size= to create it)", l.Path)
}

func (n *Single) LUNSize(targetName string, lun uint64) int64 {
	return n.sizes[lunKey{targetName, lun}]
}

// addrs returns the addresses the node listens on (with the real port when
// port 0 was asked for).
func (n *Single) Addrs() []string {
	out := make([]string, len(n.listeners))
	for i, l := range n.listeners {
		out[i] = l.Addr().String()
	}
	return out
}

// serve accepts connections on every portal. The channel receives the first
// error of a portal that stopped on its own (not by shutdown).
func (n *Single) Serve() <-chan error {
	errc := make(chan error, len(n.listeners))
	for _, l := range n.listeners {
		n.log.Info("serving", "portal", l.Addr().String())
		go func() {
			if err := n.srv.Serve(l); err != nil && !errors.Is(err, target.ErrServerClosed) {
				errc <- fmt.Errorf("portal %s: %w", l.Addr(), err)
			}
		}()
	}
	return errc
}

// shutdown drains the server (commands in flight finish until ctx is done),
// then flushes and closes every store. It reports the first failure, but
// always flushes and closes everything it can.
func (n *Single) Shutdown(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var first error
	if err := n.srv.Shutdown(ctx); err != nil {
		n.log.Warn("commands still in flight when the shutdown timeout expired; connections closed", "err", err)
	}
	for _, l := range n.listeners {
		l.Close()
	}
	n.listeners = nil
	for _, st := range n.stores {
		if !st.ro {
			if err := st.s.Flush(); err != nil {
				n.log.Error("flush failed: recent writes may be lost", "lun", st.name, "err", err)
				first = cmp(first, fmt.Errorf("flush %s: %w", st.name, err))
			}
		}
		if err := st.s.Close(); err != nil {
			n.log.Error("close failed", "lun", st.name, "err", err)
			first = cmp(first, fmt.Errorf("close %s: %w", st.name, err))
		}
	}
	n.stores = nil
	return first
}

// closeAll releases everything after a failed start.
func (n *Single) closeAll() {
	for _, l := range n.listeners {
		l.Close()
	}
	for _, st := range n.stores {
		st.s.Close()
	}
	n.listeners, n.stores = nil, nil
}
