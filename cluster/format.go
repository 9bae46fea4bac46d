package cluster

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// ParseSize parses a byte size: a number with an optional binary suffix
// K, M, G, T or P (also KiB, KB, ...; all powers of 1024) — "10G",
// "512MiB", "4096".
func ParseSize(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	u := strings.ToUpper(t)
	u = strings.TrimSuffix(strings.TrimSuffix(u, "IB"), "B")
	shift := 0
	if n := len(u); n > 0 {
		switch u[n-1] {
		case 'K':
			shift = 10
		case 'M':
			shift = 20
		case 'G':
			shift = 30
		case 'T':
			shift = 40
		case 'P':
			shift = 50
		}
		if shift > 0 {
			u = u[:n-1]
		}
	}
	v, err := strconv.ParseUint(u, 10, 64)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("bad size %q: want a positive number with an optional K, M, G, T or P suffix", s)
	}
	if v > (^uint64(0))>>shift {
		return 0, fmt.Errorf("size %q too large", s)
	}
	return v << shift, nil
}

// FormatSize writes n bytes with the largest binary unit that divides it.
func FormatSize(n uint64) string {
	units := []string{"", "K", "M", "G", "T", "P"}
	i := 0
	for i < len(units)-1 && n >= 1024 && n%1024 == 0 {
		n /= 1024
		i++
	}
	if i == 0 {
		return strconv.FormatUint(n, 10)
	}
	return strconv.FormatUint(n, 10) + units[i] + "iB"
}

// WriteStatusTable writes s for people: the Raft summary, the nodes, then
// the targets and their LUNs.
func WriteStatusTable(w io.Writer, s Status) error {
	leader := s.Leader
	if leader == "" {
		leader = "(none)"
	}
	fmt.Fprintf(w, "node %s  leader %s  term %d  commit %d  applied %d\n", s.Node, leader, s.Term, s.CommitIndex, s.Applied)
	if s.Problem != "" {
		fmt.Fprintf(w, "%s\n", s.Problem)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tRAFT\tALIVE\tHEALTH\tISCSI PORTAL\tAPI\tLAST CONTACT")
	for _, n := range s.Nodes {
		lc := "-"
		if n.LastContactMS >= 0 {
			lc = (time.Duration(n.LastContactMS) * time.Millisecond).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%t\t%s\t%s\t%s\t%s\n", n.ID, n.RaftRole, n.Alive, dash(n.Health), dash(n.ISCSIPortal), dash(n.APIAddr), lc)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(s.Targets) == 0 {
		_, err := fmt.Fprintln(w, "\nno targets")
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TARGET\tLUN\tSIZE\tSECTOR\tIO\tTYPE\tOWNER\tPLACEMENT\tIN SYNC\tEPOCH")
	for _, t := range s.Targets {
		fmt.Fprintf(tw, "%s\t\t\t\t\t\t\t\t\t\n", t.IQN)
		for _, l := range t.LUNs {
			fmt.Fprintf(tw, "\t%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%d\n", l.LUN.LUN, FormatSize(l.Size), l.SectorSize, l.IOMode,
				l.Backing, dash(l.Owner), strings.Join(l.Placement, ","), strings.Join(l.InSync, ","), l.Epoch)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return writeCopies(w, s)
}

// writeCopies writes, for every LUN with more than one copy, each copy's
// state and resync progress.
func writeCopies(w io.Writer, s Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header := false
	for _, t := range s.Targets {
		for _, l := range t.LUNs {
			if len(l.Copies) < 2 {
				continue
			}
			if !header {
				fmt.Fprintln(w)
				fmt.Fprintln(tw, "TARGET\tLUN\tCOPY\tSTATE\tRESYNC\tRATE\tETA\tLAST RESYNC COPIED")
				header = true
			}
			for _, c := range l.Copies {
				node := c.Node
				if c.Owner {
					node += " (owner)"
				}
				// Rate and ETA are known once the resync reported a
				// second time (its first report has copied nothing).
				rate, eta := "-", "-"
				if c.State == CopyResyncing && c.RateBps > 0 {
					rate = FormatRate(c.RateBps)
					eta = (time.Duration(c.ETASeconds) * time.Second).String()
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%.0f%%\t%s\t%s\t%s\n", t.IQN, l.LUN.LUN, node, c.State, c.ResyncPercent,
					rate, eta, humanBytes(c.BytesCopied))
			}
		}
	}
	return tw.Flush()
}

// FormatRate writes a byte rate for people: "95.4 MiB/s".
func FormatRate(bps float64) string {
	return humanBytes(int64(bps)) + "/s"
}

func humanBytes(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	v, i := float64(n), 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
