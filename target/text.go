package target

import (
	"errors"
	"fmt"
	"strings"
)

// KV is one key=value pair of a text data segment (RFC 7143 section 6).
type KV struct{ Key, Value string }

// Text limits (RFC 7143 sections 6.1 and 5.1).
const (
	// MaxKeyLen is the longest key name: 63 bytes.
	MaxKeyLen = 63
	// MaxValueLen is the longest simple value unless the key says
	// otherwise: 255 bytes. In a list value it bounds each element.
	MaxValueLen = 255
	// MaxLargeValueLen bounds the encoded large-binary values (CHAP_C,
	// CHAP_R: up to 1024 bytes, hex encoded with a "0x" prefix) and the
	// values of vendor extension keys.
	MaxLargeValueLen = 8192
	// MaxTextLen is the most key=value data accepted in one negotiation
	// sequence (a text spread over several PDUs with the C bit). RFC 7143
	// requires at least 8192; we accept 64 KiB.
	MaxTextLen = 64 * 1024
)

// ErrMalformedText is wrapped by every ParseText error.
var ErrMalformedText = errors.New("iscsi: malformed text key=value data")

// maxValueLen returns the length limit of the value of key.
func maxValueLen(key string) int {
	switch key {
	case "CHAP_C", "CHAP_R":
		return MaxLargeValueLen
	}
	if strings.HasPrefix(key, "X-") || strings.HasPrefix(key, "X#") {
		return MaxLargeValueLen
	}
	return MaxValueLen
}

// checkValueLen applies the value length limits of RFC 7143 section 6.1:
// a simple value, and each element of a list value, is at most 255 bytes
// unless the key allows more; no value exceeds MaxLargeValueLen.
func checkValueLen(key, value string) error {
	limit := maxValueLen(key)
	if len(value) > MaxLargeValueLen {
		return fmt.Errorf("%w: value of %s is %d bytes, limit %d", ErrMalformedText, key, len(value), MaxLargeValueLen)
	}
	for rest := value; ; {
		elem, tail, more := strings.Cut(rest, ",")
		if len(elem) > limit {
			return fmt.Errorf("%w: value of %s has a %d-byte element, limit %d", ErrMalformedText, key, len(elem), limit)
		}
		if !more {
			return nil
		}
		rest = tail
	}
}

// validKeyName reports whether k is a well-formed key name: 1 to 63 bytes
// of the characters RFC 7143 section 6.1 allows (letters, digits, ".",
// "-", "+", "@", "_", and ":" and "#" for vendor extension keys).
func validKeyName(k string) bool {
	if len(k) == 0 || len(k) > MaxKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '-', c == '+', c == '@', c == '_', c == ':', c == '#':
		default:
			return false
		}
	}
	return true
}

// ParseText splits a Login/Text data segment into key=value pairs, in order.
//
// Every pair must be "key=value" followed by a NUL. A last pair without its
// NUL is accepted (the text ends at the end of the segment), and empty
// pairs (runs of NULs, as left by padding) are skipped. A pair without "=",
// a key name that is empty, over 63 bytes or uses characters outside the
// RFC set, a value over its limit (255 bytes for most keys), and a key that
// appears twice are errors wrapping ErrMalformedText.
func ParseText(data []byte) ([]KV, error) {
	kvs, err := parseTextList(data)
	if err != nil {
		return nil, err
	}
	seen := make(map[string]struct{}, len(kvs))
	for _, kv := range kvs {
		if _, dup := seen[kv.Key]; dup {
			return nil, fmt.Errorf("%w: key %q sent twice", ErrMalformedText, kv.Key)
		}
		seen[kv.Key] = struct{}{}
	}
	return kvs, nil
}

// parseTextList is ParseText without the duplicate check (a SendTargets
// response legitimately repeats TargetName and TargetAddress).
func parseTextList(data []byte) ([]KV, error) {
	if len(data) > MaxTextLen {
		return nil, fmt.Errorf("%w: %d bytes of text, limit %d", ErrMalformedText, len(data), MaxTextLen)
	}
	var kvs []KV
	for len(data) > 0 {
		end := indexByte(data, 0)
		pair := data
		if end >= 0 {
			pair, data = data[:end], data[end+1:]
		} else {
			data = nil
		}
		if len(pair) == 0 {
			continue
		}
		eq := indexByte(pair, '=')
		if eq < 0 {
			return nil, fmt.Errorf("%w: pair without '=' (%d bytes)", ErrMalformedText, len(pair))
		}
		key, value := string(pair[:eq]), string(pair[eq+1:])
		if !validKeyName(key) {
			return nil, fmt.Errorf("%w: invalid key name %q", ErrMalformedText, truncate(key, MaxKeyLen+1))
		}
		if err := checkValueLen(key, value); err != nil {
			return nil, err
		}
		kvs = append(kvs, KV{Key: key, Value: value})
	}
	return kvs, nil
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// EncodeText joins pairs into a data segment (each "key=value\x00").
func EncodeText(kvs []KV) []byte {
	n := 0
	for _, kv := range kvs {
		n += len(kv.Key) + len(kv.Value) + 2
	}
	b := make([]byte, 0, n)
	for _, kv := range kvs {
		b = append(b, kv.Key...)
		b = append(b, '=')
		b = append(b, kv.Value...)
		b = append(b, 0)
	}
	return b
}
