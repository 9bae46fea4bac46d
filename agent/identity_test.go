package agent

import (
	"strings"
	"testing"
)

const testIdentityIQN = "iqn.2026-11.io.hatgt:dev"

func TestLunIdentity(t *testing.T) {
	s0, n0 := LUNIdentity(testIdentityIQN, 0)
	s0again, n0again := LUNIdentity(strings.ToUpper(testIdentityIQN), 0)
	if s0 != s0again || n0 != n0again {
		t.Errorf("identity depends on call or on name case: %s %x vs %s %x", s0, n0, s0again, n0again)
	}
	s1, n1 := LUNIdentity(testIdentityIQN, 1)
	s2, n2 := LUNIdentity("iqn.2026-11.io.hatgt:other", 0)
	if s0 == s1 || s0 == s2 || n0 == n1 || n0 == n2 {
		t.Errorf("identities collide: %s %s %s", s0, s1, s2)
	}
	if len(s0) != 16 || strings.Trim(s0, "0123456789ABCDEF") != "" {
		t.Errorf("serial %q is not 16 upper-case hex digits", s0)
	}
	for _, naa := range [][16]byte{n0, n1, n2} {
		if naa[0]>>4 != 6 {
			t.Errorf("NAA field = %d, want 6 (IEEE Registered Extended)", naa[0]>>4)
		}
		oui := uint32(naa[0]&0x0f)<<20 | uint32(naa[1])<<12 | uint32(naa[2])<<4 | uint32(naa[3]>>4)
		if oui != identityOUI {
			t.Errorf("company ID = %06x, want %06x", oui, identityOUI)
		}
	}
}
