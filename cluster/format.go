package cluster

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hatgt/hatgt/config"
)

// ParseSize parses a byte size as the config file does (config.ParseSize):
// a number with an optional suffix K, M, G, T or P, powers of 1024, also
// written KiB, MiB, ... — "10G" and "10GiB" are both 10737418240 bytes.
// "KB", "MB", "GB", "TB" and "PB" are refused with a message: elsewhere
// they mean powers of 1000, so they say what to write instead of being
// read either way.
func ParseSize(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	if num, unit, ok := decimalUnit(t); ok {
		bin := unit[:1] // "GB" -> "G"
		return 0, fmt.Errorf("size %q: %s is ambiguous (powers of 1000 or of 1024?), and hatgt reads sizes in powers of 1024 as the config file does: write %s%s for %s %siB (%s bytes), or %s%s for %s×10^%d bytes",
			s, unit, num, bin, num, bin, mulString(num, binaryShift(bin)), num, strings.Repeat("0", decimalExp(bin)), num, decimalExp(bin))
	}
	v, err := config.ParseSize(t)
	if err != nil {
		return 0, fmt.Errorf("bad size %q: %v", s, err)
	}
	return uint64(v), nil
}

// decimalUnit splits "10GB" into "10" and "GB" when s ends with one of the
// units whose meaning (1000 or 1024) depends on who reads it.
func decimalUnit(s string) (num, unit string, ok bool) {
	if len(s) < 3 {
		return "", "", false
	}
	u := strings.ToUpper(s[len(s)-2:])
	if u[1] != 'B' || !strings.ContainsRune("KMGTP", rune(u[0])) {
		return "", "", false
	}
	num = s[:len(s)-2]
	for _, c := range num {
		if c < '0' || c > '9' {
			return "", "", false
		}
	}
	return num, u, true
}

func binaryShift(unit string) uint {
	return 10 * uint(strings.Index("KMGTP", unit)+1)
}

func decimalExp(unit string) int {
	return 3 * (strings.Index("KMGTP", unit) + 1)
}

// mulString is num << shift in decimal, or "too many" past 64 bits.
func mulString(num string, shift uint) string {
	v, err := strconv.ParseUint(num, 10, 64)
	if err != nil || v > (^uint64(0))>>shift {
		return "too many"
	}
	return strconv.FormatUint(v<<shift, 10)
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

// WriteStatusTable writes s for people: the Raft summary and a PROBLEM
// line for each of s.Problems (LUNs no node serves, copies that failed),
// the nodes, the targets and their LUNs, every copy with its state and
// service, the persistent reservations, then the last error of each copy
// that had one.
func WriteStatusTable(w io.Writer, s Status) error {
	return writeStatusTable(w, s, time.Now())
}

func writeStatusTable(w io.Writer, s Status, now time.Time) error {
	leader := s.Leader
	if leader == "" {
		leader = "(none)"
	}
	fmt.Fprintf(w, "node %s  leader %s  term %d  commit %d  applied %d\n", s.Node, leader, s.Term, s.CommitIndex, s.Applied)
	if s.Problem != "" {
		fmt.Fprintf(w, "%s\n", s.Problem)
	}
	for _, p := range s.Problems {
		fmt.Fprintf(w, "PROBLEM: %s\n", p)
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
	fmt.Fprintln(tw, "TARGET\tLUN\tSIZE\tSECTOR\tIO\tTYPE\tOWNER\tPLACEMENT\tIN SYNC\tEPOCH\tSERVICE")
	for _, t := range s.Targets {
		fmt.Fprintf(tw, "%s\t\t\t\t\t\t\t\t\t\t\n", t.IQN)
		for _, l := range t.LUNs {
			fmt.Fprintf(tw, "\t%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", l.LUN.LUN, FormatSize(l.Size), l.SectorSize, l.IOMode,
				l.Backing, dash(l.Owner), strings.Join(l.Placement, ","), strings.Join(l.InSync, ","), l.Epoch, lunServiceWord(l.Service))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := writeCopies(w, s, now); err != nil {
		return err
	}
	writeReservations(w, s)
	return writeLastErrors(w, s, now)
}

// lunServiceWord is a LUN's service for the table: NOT SERVED stands out.
func lunServiceWord(s string) string {
	if s == ServiceNotServed {
		return "NOT SERVED"
	}
	return dash(s)
}

// writeCopies writes every copy of every LUN: its state, whether its node
// serves it (and since when), and for a LUN with more than one copy the
// resync progress.
func writeCopies(w io.Writer, s Status, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header := false
	for _, t := range s.Targets {
		for _, l := range t.LUNs {
			if !header {
				fmt.Fprintln(w)
				fmt.Fprintln(tw, "TARGET\tLUN\tCOPY\tSTATE\tSERVICE\tSINCE\tRESYNC\tRATE\tETA\tLAST RESYNC COPIED")
				header = true
			}
			for _, c := range l.Copies {
				node := c.Node
				if c.Owner {
					node += " (owner)"
				}
				// Rate and ETA are known once the resync reported a
				// second time (its first report has copied nothing).
				resync, rate, eta, copied := "-", "-", "-", "-"
				if len(l.Copies) > 1 {
					resync, copied = fmt.Sprintf("%.0f%%", c.ResyncPercent), humanBytes(c.BytesCopied)
				}
				if c.State == CopyResyncing && c.RateBps > 0 {
					rate = FormatRate(c.RateBps)
					eta = (time.Duration(c.ETASeconds) * time.Second).String()
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.IQN, l.LUN.LUN, node, c.State, dash(c.Service),
					ago(c.ServiceSince, now), resync, rate, eta, copied)
			}
		}
	}
	return tw.Flush()
}

// writeLastErrors writes the last error of every copy that had one, when
// it happened, and whether the copy still fails.
func writeLastErrors(w io.Writer, s Status, now time.Time) error {
	header := false
	for _, t := range s.Targets {
		for _, l := range t.LUNs {
			for _, c := range l.Copies {
				if c.LastError == "" {
					continue
				}
				if !header {
					fmt.Fprintln(w, "\nLAST ERRORS")
					header = true
				}
				still := "since recovered"
				if c.Service == ServiceFailed {
					still = "still failing"
				}
				fmt.Fprintf(w, "%s LUN %d on %s, %s (%s, %s): %s\n", t.IQN, l.LUN.LUN, c.Node,
					c.LastErrorAt.Local().Format("2006-01-02 15:04:05"), ago(c.LastErrorAt, now), still, c.LastError)
			}
		}
	}
	return nil
}

// ago writes how long before now t was, to the second ("-" for no time).
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t).Round(time.Second)
	if d < 0 {
		d = 0 // the reporting node's clock runs ahead of this one
	}
	return d.String() + " ago"
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
