package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// CheckName reports whether name is a valid iSCSI name in one of the forms
// of RFC 3720 section 3.2.6.3 (and RFC 3980 for naa.):
//
//	iqn.YYYY-MM.reversed.domain[:anything]
//	eui.<16 hex digits>
//	naa.<16 or 32 hex digits>
//
// Names are compared case-insensitively and hatgt stores them lower case;
// the characters allowed are ASCII letters, digits, '-', '.' and ':'.
func CheckName(name string) error {
	if len(name) > MaxNameLen {
		return fmt.Errorf("longer than %d bytes", MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == ':') {
			return fmt.Errorf("character %q is not allowed in an iSCSI name (use a-z, 0-9, '-', '.', ':')", c)
		}
	}
	lower := strings.ToLower(name)
	switch {
	case strings.HasPrefix(lower, "iqn."):
		return checkIQN(lower)
	case strings.HasPrefix(lower, "eui."):
		if len(lower) != 4+16 || !isHex(lower[4:]) {
			return errors.New("an eui. name is \"eui.\" and 16 hex digits")
		}
	case strings.HasPrefix(lower, "naa."):
		if n := len(lower) - 4; (n != 16 && n != 32) || !isHex(lower[4:]) {
			return errors.New("an naa. name is \"naa.\" and 16 or 32 hex digits")
		}
	default:
		return errors.New("an iSCSI name starts with iqn., eui. or naa. (e.g. iqn.2026-11.com.example:disk1)")
	}
	return nil
}

// CanonicalName checks name with CheckName and returns the form hatgt
// stores and compares it in: lower case (iSCSI names are
// case-insensitive, RFC 3722). The config file and the cluster's admin API
// both name targets and initiators through it, so a name one takes the
// other takes too, spelled the same. On error the lower-case form is
// returned all the same, so that a parser can go on checking.
func CanonicalName(name string) (string, error) {
	return strings.ToLower(name), CheckName(name)
}

func checkIQN(name string) error {
	const form = "want iqn.YYYY-MM.reversed.domain[:identifier], e.g. iqn.2026-11.com.example:disk1"
	rest := name[len("iqn."):]
	// yyyy-mm
	if len(rest) < 8 || rest[4] != '-' || rest[7] != '.' {
		return errors.New(form)
	}
	year, err1 := strconv.Atoi(rest[:4])
	month, err2 := strconv.Atoi(rest[5:7])
	if err1 != nil || err2 != nil || !isDigits(rest[:4]) || !isDigits(rest[5:7]) || year < 1900 || month < 1 || month > 12 {
		return errors.New("bad date in iqn. name: " + form)
	}
	authority, _, _ := strings.Cut(rest[8:], ":")
	if authority == "" {
		return errors.New("missing naming authority (a reversed domain name) after the date: " + form)
	}
	for _, label := range strings.Split(authority, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("bad domain label %q in naming authority %q: %s", label, authority, form)
		}
	}
	return nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return s != ""
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// ParseSize parses a byte count: a number with an optional binary suffix
// K, M, G, T or P (powers of 1024), optionally followed by "B" or "iB":
// "4096", "512M", "10G", "1TiB". The result is positive.
func ParseSize(s string) (int64, error) {
	num := strings.ToUpper(s)
	switch {
	case strings.HasSuffix(num, "IB"):
		num = num[:len(num)-2]
		if num == "" || !strings.ContainsRune("KMGTP", rune(num[len(num)-1])) {
			return 0, errors.New("want a number with K, M, G, T or P, e.g. 10G")
		}
	case strings.HasSuffix(num, "B"):
		num = num[:len(num)-1]
	}
	var shift uint
	if num != "" {
		if i := strings.IndexByte("KMGTP", num[len(num)-1]); i >= 0 {
			shift = 10 * uint(i+1)
			num = num[:len(num)-1]
		}
	}
	if !isDigits(num) {
		return 0, errors.New("want a whole number of bytes, optionally with K, M, G, T or P (powers of 1024), e.g. 512M")
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > math.MaxInt64>>shift {
		return 0, errors.New("too large")
	}
	if n == 0 {
		return 0, errors.New("must be more than 0")
	}
	return n << shift, nil
}

// FormatSize writes n the way ParseSize reads it, with the largest exact
// unit.
func FormatSize(n int64) string {
	units := []string{"", "K", "M", "G", "T", "P"}
	i := 0
	for i < len(units)-1 && n != 0 && n%1024 == 0 {
		n /= 1024
		i++
	}
	return strconv.FormatInt(n, 10) + units[i]
}

// suggest returns ` (did you mean "X"?)` for the known word closest to
// word, or "" when none is close.
func suggest(word string, known []string) string {
	best, bestD := "", 3
	lw := strings.ToLower(word)
	for _, k := range known {
		d := editDistance(lw, strings.ToLower(k))
		if d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance of a and b, capped for long
// inputs (a config typo is short).
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
