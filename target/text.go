package target

import "errors"

// KV is one key=value pair of a text data segment (RFC 7143 section 6).
type KV struct{ Key, Value string }

// ParseText splits a Login/Text data segment into key=value pairs, in order.
func ParseText(data []byte) ([]KV, error) {
	return nil, errors.New("target: ParseText not implemented")
}

// EncodeText joins pairs into a data segment (each "key=value\x00").
func EncodeText(kvs []KV) []byte { return nil }
