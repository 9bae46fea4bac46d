package cluster

import (
	"math"
	"net"
	"strings"

	"github.com/hatgt/hatgt/replication"
)

// validName checks an iSCSI name (RFC 7143 4.2.7): iqn., eui. or naa. form,
// at most 223 bytes, no spaces or control characters.
func validName(s string) bool {
	if len(s) < 5 || len(s) > 223 {
		return false
	}
	l := strings.ToLower(s)
	if !strings.HasPrefix(l, "iqn.") && !strings.HasPrefix(l, "eui.") && !strings.HasPrefix(l, "naa.") {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || r == '/' {
			return false
		}
	}
	return true
}

func validAddr(s string, required bool) bool {
	if s == "" {
		return !required
	}
	_, _, err := net.SplitHostPort(s)
	return err == nil
}

func checkNodeInfo(n *NodeInfo) error {
	if !nodeIDRe.MatchString(n.ID) {
		return errf(ErrInvalid, "bad node id %q", n.ID)
	}
	if !validAddr(n.RaftAddr, true) || !validAddr(n.APIAddr, true) || !validAddr(n.GossipAddr, false) ||
		!validAddr(n.ISCSIPortal, false) || !validAddr(n.ReplicationAddr, false) {
		return errf(ErrInvalid, "node %s: bad address", n.ID)
	}
	return nil
}

// checkLUNSettings validates the settings of a LUN being created (not its
// placement, which needs the state).
func checkLUNSettings(l *LUN) error {
	if l.LUN > MaxLUN {
		return errf(ErrInvalid, "LUN number %d above %d", l.LUN, MaxLUN)
	}
	switch l.SectorSize {
	case 512, 4096:
	default:
		return errf(ErrBadSize, "sector size %d: want 512 or 4096", l.SectorSize)
	}
	if l.Size == 0 || l.Size%uint64(l.SectorSize) != 0 {
		return errf(ErrBadSize, "size %d: want a positive multiple of the sector size %d", l.Size, l.SectorSize)
	}
	if l.Size/uint64(l.SectorSize) > 1<<48 {
		return errf(ErrBadSize, "size %d too large", l.Size)
	}
	switch l.IOMode {
	case IOModeWriteBack, IOModeWriteThrough, IOModeReadOnly:
	default:
		return errf(ErrInvalid, "IO mode %q: want wb, wt or ro", l.IOMode)
	}
	switch l.Backing {
	case BackingFile, BackingBlock:
	default:
		return errf(ErrInvalid, "backing type %q: want fileio or blockio", l.Backing)
	}
	if l.Backing == BackingBlock && l.Path == "" {
		return errf(ErrInvalid, "blockio needs a device path")
	}
	if strings.ContainsRune(l.Path, 0) {
		return errf(ErrInvalid, "bad path")
	}
	if l.Replicas < 1 {
		return errf(ErrInvalid, "replicas must be at least 1, got %d", l.Replicas)
	}
	return nil
}

func checkCHAP(c *CHAP) error {
	if c.User == "" || len(c.User) > 255 || strings.ContainsAny(c.User, "\x00\n") {
		return errf(ErrInvalid, "CHAP user name must be 1-255 bytes")
	}
	// RFC 7143 9.2.1: secrets shorter than 12 bytes are refused.
	if len(c.Secret) < 12 || len(c.Secret) > 255 {
		return errf(ErrInvalid, "CHAP secret must be 12-255 bytes")
	}
	if (c.MutualUser == "") != (c.MutualSecret == "") {
		return errf(ErrInvalid, "mutual CHAP needs both a user and a secret")
	}
	if c.MutualUser != "" {
		if len(c.MutualUser) > 255 || strings.ContainsAny(c.MutualUser, "\x00\n") {
			return errf(ErrInvalid, "mutual CHAP user name must be 1-255 bytes")
		}
		if len(c.MutualSecret) < 12 || len(c.MutualSecret) > 255 {
			return errf(ErrInvalid, "mutual CHAP secret must be 12-255 bytes")
		}
		if c.MutualSecret == c.Secret {
			return errf(ErrInvalid, "mutual CHAP secret must differ from the CHAP secret")
		}
	}
	return nil
}

// checkProgress validates the numbers of a progress report (not the LUN,
// epoch or node, which need the state).
func checkProgress(p *LUNSetProgress) error {
	if p.RegionsTotal < 0 || p.RegionsDone < 0 || p.BytesCopied < 0 || p.ETAMillis < 0 {
		return errf(ErrInvalid, "progress of %q: negative count", p.Node)
	}
	if p.RegionsDone > p.RegionsTotal {
		return errf(ErrInvalid, "progress of %q: %d of %d regions done", p.Node, p.RegionsDone, p.RegionsTotal)
	}
	// JSON has no NaN or infinity, so such a rate never decodes; a
	// negative one can.
	if !(p.RateBps >= 0) || math.IsInf(p.RateBps, 0) {
		return errf(ErrInvalid, "progress of %q: bad rate", p.Node)
	}
	return nil
}

// checkGeneration checks a copy's generation as commands carry it: 32
// lower-case hex digits, not all zero.
func checkGeneration(node, g string) error {
	gen, err := replication.ParseGeneration(g)
	if err != nil || gen.IsZero() || gen.String() != g {
		return errf(ErrInvalid, "generation %q of %q's copy: want 32 lower-case hex digits, not all zero", g, node)
	}
	return nil
}
