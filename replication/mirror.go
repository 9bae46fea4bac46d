package replication

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"sync"
)

// Mirror is the replica side of a node: it applies the owner's requests for
// the LUNs this node holds a copy of, and fences owners of older epochs.
// Its Handle method is the node's replication Handler.
type Mirror struct {
	logger *slog.Logger

	mu    sync.Mutex
	luns  map[LUNID]*mirrorLUN
	check EpochCheck
}

// EpochCheck reports whether the cluster has committed epoch for lun: nil
// when this node's applied state holds lun at epoch or later; else an
// error (ErrEpochUnknown: not committed, or not applied here yet). The
// cluster's Coordinator.CheckEpoch is one.
type EpochCheck func(lun LUNID, epoch uint64) error

type mirrorLUN struct {
	store Store
	// mu orders fencing against writes: requests hold it shared while they
	// check the epoch and apply; raising the epoch takes it exclusively,
	// so once a newer epoch is recorded no older request is in progress.
	mu     sync.RWMutex
	newest uint64
	// lost: the copy is not the one the cluster recorded (MarkLost);
	// only a hello with FlagFull (a full copy begins) is taken. Guarded
	// by mu.
	lost bool

	// seqMu guards lastSeq, the highest write or unmap sequence number
	// applied (or the hello floor) in epoch newest. Requests of one
	// connection carry increasing numbers.
	seqMu   sync.Mutex
	lastSeq uint64

	statsMu sync.Mutex // guards stats, updated under the shared mu
	stats   MirrorStats
}

// MirrorStats counts what a mirror applied for one LUN.
type MirrorStats struct {
	Writes, ResyncWrites, Unmaps, Flushes, Verifies uint64
	WriteBytes, ResyncBytes                         uint64
	StaleRefused                                    uint64
	// UnknownRefused counts requests refused because their epoch was
	// newer than any seen and the EpochCheck did not know it.
	UnknownRefused uint64
}

// NewMirror returns a mirror holding no LUN yet.
func NewMirror(logger *slog.Logger) *Mirror {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Mirror{logger: logger, luns: map[LUNID]*mirrorLUN{}}
}

// AddLUN makes the mirror serve its copy of lun from store. epoch is the
// newest epoch the node knows for the LUN (from the coordinator); older
// requests are refused from the start. A store that keeps its copy's
// identity (an IdentityStore: a CopyStore) has its generation reported in
// every hello reply, and a new one written when an owner's hello carries
// one.
func (m *Mirror) AddLUN(lun LUNID, store Store, epoch uint64) {
	m.mu.Lock()
	m.luns[lun] = &mirrorLUN{store: store, newest: epoch}
	m.mu.Unlock()
}

// MarkLost records that this node's copy of lun was lost (it is not the
// copy the cluster recorded: no generation where one was recorded, or
// its backing file had to be created again): until an owner starts a
// full copy (a hello with FlagFull) every request is answered
// StatusCopyLost, so no owner counts this copy as holding data it does
// not have.
func (m *Mirror) MarkLost(lun LUNID) {
	l := m.lun(lun)
	if l == nil {
		return
	}
	l.mu.Lock()
	l.lost = true
	l.mu.Unlock()
	m.logger.Warn("replication: copy lost, it needs a full copy", "lun", uint64(lun))
}

// Lost reports whether lun's copy is marked lost.
func (m *Mirror) Lost(lun LUNID) bool {
	l := m.lun(lun)
	if l == nil {
		return false
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.lost
}

// SetEpochCheck makes the mirror accept an epoch newer than the newest it
// has seen for a LUN (from a hello, a request, Fence or AddLUN) only once
// check says the cluster committed it. A request whose epoch check refuses
// is answered StatusEpochUnknown and changes nothing: one forged frame
// with a huge epoch no longer fences the copy against its real owner, and
// an owner whose epoch this node has not applied yet retries its hello
// (Volume does, for up to AckTimeout). nil (the default) accepts any newer
// epoch. The cluster sets it before serving the replication port.
func (m *Mirror) SetEpochCheck(check EpochCheck) {
	m.mu.Lock()
	m.check = check
	m.mu.Unlock()
}

// admit reports whether req's epoch, newer than any l has seen, may be
// recorded: the epoch check (if any) says it is committed. It is called
// without l.mu (the check reads the cluster's state, whose own updates
// call Fence).
func (m *Mirror) admit(l *mirrorLUN, req *Message) bool {
	m.mu.Lock()
	check := m.check
	m.mu.Unlock()
	if check == nil {
		return true
	}
	err := check(req.LUN, req.Epoch)
	if err == nil {
		return true
	}
	l.count(func(st *MirrorStats) { st.UnknownRefused++ })
	m.logger.Info("replication: refusing a request of an epoch not committed here (yet)",
		"lun", uint64(req.LUN), "type", req.Type.String(), "epoch", req.Epoch, "newest", l.newestEpoch(), "err", err)
	return false
}

// RemoveLUN stops serving lun.
func (m *Mirror) RemoveLUN(lun LUNID) {
	m.mu.Lock()
	delete(m.luns, lun)
	m.mu.Unlock()
}

// Fence raises the newest epoch of lun to epoch (a no-op if it is already
// newer). The cluster calls it when Raft commits a new epoch, so an old
// owner is refused even before the new owner says hello.
func (m *Mirror) Fence(lun LUNID, epoch uint64) {
	l := m.lun(lun)
	if l == nil {
		return
	}
	l.mu.Lock()
	if epoch > l.newest {
		l.newest = epoch
		l.seqMu.Lock()
		l.lastSeq = 0
		l.seqMu.Unlock()
	}
	l.mu.Unlock()
}

// Follow fences lun at every epoch coord commits, until cancel is called.
func (m *Mirror) Follow(ctx context.Context, coord Coordinator, lun LUNID) (cancel func()) {
	cancel = coord.Watch(lun, func(v View) { m.Fence(lun, v.Epoch) })
	if v, err := coord.View(ctx, lun); err == nil {
		m.Fence(lun, v.Epoch)
	}
	return cancel
}

// Newest returns the newest epoch seen for lun.
func (m *Mirror) Newest(lun LUNID) uint64 {
	l := m.lun(lun)
	if l == nil {
		return 0
	}
	return l.newestEpoch()
}

func (l *mirrorLUN) newestEpoch() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.newest
}

// Stats returns the counters of lun.
func (m *Mirror) Stats(lun LUNID) MirrorStats {
	l := m.lun(lun)
	if l == nil {
		return MirrorStats{}
	}
	l.statsMu.Lock()
	defer l.statsMu.Unlock()
	return l.stats
}

func (m *Mirror) lun(lun LUNID) *mirrorLUN {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.luns[lun]
}

// Handle applies one request and returns its reply. It never panics on a
// malformed request: it answers StatusBadRequest.
func (m *Mirror) Handle(req *Message) *Message {
	l := m.lun(req.LUN)
	if l == nil {
		return reply(req, StatusNoLUN)
	}
	if req.Type == MsgHello {
		var gen Generation // the copy's new generation, if the owner sent one
		if len(req.Payload) > 0 {
			if len(req.Payload) != len(gen) {
				return reply(req, StatusBadRequest)
			}
			if copy(gen[:], req.Payload); gen.IsZero() {
				return reply(req, StatusBadRequest)
			}
		}
		if req.Epoch > l.newestEpoch() && !m.admit(l, req) {
			return reply(req, StatusEpochUnknown)
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if req.Epoch < l.newest {
			l.count(func(st *MirrorStats) { st.StaleRefused++ })
			return staleReply(req, l.newest)
		}
		if l.lost && req.Flags&FlagFull == 0 {
			return reply(req, StatusCopyLost)
		}
		if is, ok := l.store.(IdentityStore); ok && !gen.IsZero() {
			// A full copy begins, or the first owner of a new LUN
			// names the copy: the new generation is durable before
			// the owner hears of it.
			if err := is.SetGeneration(gen); err != nil {
				m.logger.Warn("replication: writing the copy's new generation failed", "lun", uint64(req.LUN), "err", err)
				return reply(req, StatusIOError)
			}
			m.logger.Info("replication: the copy has a new generation", "lun", uint64(req.LUN), "generation", gen.String(), "full", req.Flags&FlagFull != 0)
		}
		if l.lost {
			l.lost = false
			m.logger.Info("replication: a full copy of a lost copy begins", "lun", req.LUN, "epoch", req.Epoch)
		}
		l.seqMu.Lock()
		if req.Epoch > l.newest || req.Seq > l.lastSeq {
			l.lastSeq = req.Seq
		}
		last := l.lastSeq
		l.seqMu.Unlock()
		l.newest = req.Epoch
		rep := reply(req, StatusOK)
		rep.Seq = last // above the floor: someone else used this epoch
		if is, ok := l.store.(IdentityStore); ok {
			g := is.Generation()
			rep.Payload = g[:] // the owner compares it with the recorded one
		}
		return rep
	}
	l.mu.RLock()
	if req.Epoch < l.newest {
		newest := l.newest
		l.mu.RUnlock()
		l.count(func(st *MirrorStats) { st.StaleRefused++ })
		return staleReply(req, newest)
	}
	if req.Epoch > l.newest {
		// A newer owner speaks without a hello first (or after ours was
		// lost): record its epoch before applying, once it is known to
		// be committed.
		l.mu.RUnlock()
		if !m.admit(l, req) {
			return reply(req, StatusEpochUnknown)
		}
		l.mu.Lock()
		if req.Epoch > l.newest {
			l.newest = req.Epoch
			l.seqMu.Lock()
			l.lastSeq = 0
			l.seqMu.Unlock()
		}
		l.mu.Unlock()
		return m.Handle(req)
	}
	if l.lost {
		l.mu.RUnlock()
		return reply(req, StatusCopyLost)
	}
	if req.Type == MsgWrite || req.Type == MsgUnmap {
		l.seqMu.Lock()
		if req.Seq <= l.lastSeq {
			last := l.lastSeq
			l.seqMu.Unlock()
			l.mu.RUnlock()
			m.logger.Warn("replication: refusing an out-of-order request", "lun", req.LUN, "seq", req.Seq, "last", last)
			return reply(req, StatusOutOfOrder)
		}
		l.lastSeq = req.Seq
		l.seqMu.Unlock()
	}
	st, payload := m.apply(l, req)
	l.mu.RUnlock()
	rep := reply(req, st)
	rep.Payload = payload
	if st != StatusOK {
		m.logger.Warn("replication: mirror request failed", "lun", req.LUN, "type", req.Type.String(), "off", req.Offset, "status", st.String())
	}
	return rep
}

func staleReply(req *Message, newest uint64) *Message {
	r := reply(req, StatusStaleEpoch)
	r.Epoch = newest
	return r
}

func validRange(off int64, n uint64, size int64) bool {
	return off >= 0 && n <= uint64(size) && off <= size-int64(n)
}

func (m *Mirror) apply(l *mirrorLUN, req *Message) (Status, []byte) {
	s := l.store
	switch req.Type {
	case MsgWrite:
		if req.Length != uint64(len(req.Payload)) || !validRange(req.Offset, req.Length, s.Size()) {
			return StatusBadRequest, nil
		}
		var err error
		if req.Flags&FlagFUA != 0 {
			_, err = writeFUA(s, req.Payload, req.Offset)
		} else {
			_, err = s.WriteAt(req.Payload, req.Offset)
		}
		if err != nil {
			return StatusIOError, nil
		}
		l.count(func(st *MirrorStats) {
			if req.Flags&FlagResync != 0 {
				st.ResyncWrites++
				st.ResyncBytes += req.Length
			} else {
				st.Writes++
				st.WriteBytes += req.Length
			}
		})
	case MsgUnmap:
		if !validRange(req.Offset, req.Length, s.Size()) {
			return StatusBadRequest, nil
		}
		if err := unmapStore(s, req.Offset, int64(req.Length)); err != nil {
			return StatusIOError, nil
		}
		if req.Flags&FlagFUA != 0 {
			if err := s.Flush(); err != nil {
				return StatusIOError, nil
			}
		}
		l.count(func(st *MirrorStats) { st.Unmaps++ })
	case MsgFlush:
		if err := s.Flush(); err != nil {
			return StatusIOError, nil
		}
		l.count(func(st *MirrorStats) { st.Flushes++ })
	case MsgVerify:
		if req.Length > MaxPayload || !validRange(req.Offset, req.Length, s.Size()) {
			return StatusBadRequest, nil
		}
		sum, err := regionSum(s, req.Offset, int64(req.Length))
		if err != nil {
			return StatusIOError, nil
		}
		l.count(func(st *MirrorStats) { st.Verifies++ })
		return StatusOK, sum[:]
	default:
		return StatusBadRequest, nil
	}
	return StatusOK, nil
}

func (l *mirrorLUN) count(f func(*MirrorStats)) {
	l.statsMu.Lock()
	f(&l.stats)
	l.statsMu.Unlock()
}

// sumChunk is what regionSum reads at a time: a verify request, a 68-byte
// frame, must not make the mirror allocate the region it names.
const sumChunk = 256 << 10

// regionSum is the SHA-256 of n bytes at off of s, read in pieces of at
// most sumChunk bytes.
func regionSum(s Store, off, n int64) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	h := sha256.New()
	buf := make([]byte, min(n, sumChunk))
	for pos := int64(0); pos < n; {
		chunk := buf[:min(int64(len(buf)), n-pos)]
		if _, err := s.ReadAt(chunk, off+pos); err != nil {
			return sum, err
		}
		h.Write(chunk)
		pos += int64(len(chunk))
	}
	h.Sum(sum[:0])
	return sum, nil
}
