package cluster

import (
	"fmt"
	"path/filepath"
	"strings"
)

// maxLUNSectors bounds a LUN's sectors as the state machine does
// (checkLUNSettings); with 512-byte sectors that is 128 PiB.
const maxLUNSectors = 1 << 48

// checkNewLUN checks what a LUN create can be refused for from the request
// alone, before the leader places it or asks any node, with a message
// that says what to write instead. It is stricter than what the state
// machine checks (checkLUNSettings): entries already in a log keep
// applying as they did; new ones are held to these rules here.
func checkNewLUN(l *LUN) error {
	switch l.SectorSize {
	case 512, 4096:
	default:
		return errf(ErrBadSize, "sector size %d: want 512 or 4096 (--sector 512 or --sector 4096)", l.SectorSize)
	}
	sector := uint64(l.SectorSize)
	if l.Size == 0 {
		return errf(ErrBadSize, "a LUN needs a size: e.g. --size 10G (K/M/G/T/P are powers of 1024)")
	}
	if l.Size%sector != 0 {
		up := (l.Size/sector + 1) * sector
		return errf(ErrBadSize, "size %d bytes is not a multiple of the sector size %d: use %s (%d bytes), or another multiple of %d",
			l.Size, sector, FormatSize(up), up, sector)
	}
	if l.Size/sector > maxLUNSectors {
		return errf(ErrBadSize, "size %s is more than a LUN can be: at most %s with %d-byte sectors", FormatSize(l.Size),
			FormatSize(maxLUNSectors*sector), sector)
	}
	if l.Replicas < 0 {
		return errf(ErrInvalid, "replicas must be at least 1, got %d: e.g. --replicas 2 for two copies on two nodes", l.Replicas)
	}
	if l.Backing == BackingBlock && l.Path == "" {
		return errf(ErrInvalid, "a blockio LUN needs the block device's path: --path /dev/... (the same device path on every node of its placement)")
	}
	if l.Path != "" {
		if strings.ContainsRune(l.Path, 0) {
			return errf(ErrInvalid, "path %q holds a NUL byte", l.Path)
		}
		if !filepath.IsAbs(l.Path) {
			return errf(ErrInvalid, "path %q is relative, and each node would read it from its own working directory: give the absolute path on the nodes (e.g. %s), or no path for a file in each node's data dir",
				l.Path, filepath.Join("/var/lib/hatgt", l.Path))
		}
		if c := filepath.Clean(l.Path); c != l.Path {
			return errf(ErrInvalid, "path %q is not in its plain form: write %s", l.Path, c)
		}
	}
	return nil
}

// checkReplicas checks a LUN's number of copies (and a placement given
// by hand) against the nodes of s: one copy per node, on alive nodes.
func checkReplicas(s *State, l *LUN) error {
	nodes := len(s.Nodes)
	if l.Replicas > nodes {
		return errf(ErrNotEnoughNodes, "%d replicas requested but the cluster has %d nodes, and each copy needs its own: use --replicas %s, or add nodes first",
			l.Replicas, nodes, upTo(nodes))
	}
	for _, id := range l.Placement {
		ni := s.Nodes[id]
		if ni == nil {
			return errf(ErrUnknownNode, "placement names node %q, which is not in the cluster (its nodes: %s)", id, strings.Join(nodeIDs(s), ", "))
		}
		if ni.Health != HealthAlive {
			return errf(ErrNotEnoughNodes, "placement names node %s, which is %s: its copy could not be created; bring it back, or leave it out of --placement", id, ni.Health)
		}
	}
	return nil
}

// checkPathFree refuses a path that another LUN with a copy on one of the
// same nodes already uses: two LUNs on one file would overwrite each
// other.
func checkPathFree(s *State, l *LUN) error {
	if l.Path == "" {
		return nil
	}
	for _, t := range s.SortedTargets() {
		for _, o := range t.SortedLUNs() {
			if o.Path != l.Path {
				continue
			}
			for _, id := range l.Placement {
				for _, oid := range o.Placement {
					if id == oid {
						return errf(ErrInvalid, "path %s is already the backing store of LUN %d of %s on node %s: give each LUN its own --path", l.Path, o.LUN, t.IQN, id)
					}
				}
			}
		}
	}
	return nil
}

func upTo(n int) string {
	switch n {
	case 0:
		return "1 once a node joined"
	case 1:
		return "1"
	}
	return fmt.Sprintf("1 to %d", n)
}

func nodeIDs(s *State) []string {
	var ids []string
	for _, n := range s.SortedNodes() {
		ids = append(ids, n.ID)
	}
	return ids
}
