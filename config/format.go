package config

import (
	"fmt"
	"strings"
)

// Format writes c in the file format, one directive per line, every LUN
// parameter spelled out. Parse(Format(c)) gives back c apart from line
// numbers and warnings.
func (c *Config) Format() string {
	var b strings.Builder
	for _, p := range c.Portals {
		fmt.Fprintf(&b, "Portal %s\n", p)
	}
	for _, u := range c.DiscoveryUsers {
		fmt.Fprintf(&b, "IncomingUser %s %s\n", u.Name, u.Secret)
	}
	if u := c.DiscoveryOutgoingUser; u != nil {
		fmt.Fprintf(&b, "OutgoingUser %s %s\n", u.Name, u.Secret)
	}
	if c.InitiatorsAllowFile != "" {
		fmt.Fprintf(&b, "InitiatorsAllowFile %s\n", c.InitiatorsAllowFile)
	}
	if c.InitiatorsDenyFile != "" {
		fmt.Fprintf(&b, "InitiatorsDenyFile %s\n", c.InitiatorsDenyFile)
	}
	for _, t := range c.Targets {
		fmt.Fprintf(&b, "\nTarget %s\n", t.Name)
		if t.Alias != "" {
			fmt.Fprintf(&b, "    Alias %s\n", t.Alias)
		}
		for _, l := range t.LUNs {
			fmt.Fprintf(&b, "    Lun %d Path=%s,Type=%s", l.Number, l.Path, l.Type)
			if l.Size != 0 {
				fmt.Fprintf(&b, ",Size=%s", FormatSize(l.Size))
			}
			thin := "no"
			if l.Thin {
				thin = "yes"
			}
			fmt.Fprintf(&b, ",Sector=%d,IOMode=%s,Thin=%s", l.Sector, l.IOMode, thin)
			if l.SerialNumber != "" {
				fmt.Fprintf(&b, ",ScsiSN=%s", l.SerialNumber)
			}
			if l.ScsiID != "" {
				fmt.Fprintf(&b, ",ScsiId=%s", l.ScsiID)
			}
			b.WriteByte('\n')
		}
		for _, n := range t.InitiatorAllow {
			fmt.Fprintf(&b, "    InitiatorAllow %s\n", n)
		}
		for _, u := range t.IncomingUsers {
			fmt.Fprintf(&b, "    IncomingUser %s %s\n", u.Name, u.Secret)
		}
		if u := t.OutgoingUser; u != nil {
			fmt.Fprintf(&b, "    OutgoingUser %s %s\n", u.Name, u.Secret)
		}
		b.WriteString(formatNegotiation(&t.Login))
	}
	return b.String()
}
