package target

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseText(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct {
		name string
		in   string
		want []KV
		err  bool
	}{
		{name: "empty", in: "", want: nil},
		{name: "one", in: "InitiatorName=iqn.x\x00", want: []KV{{"InitiatorName", "iqn.x"}}},
		{name: "two", in: "A=1\x00B=2\x00", want: []KV{{"A", "1"}, {"B", "2"}}},
		{name: "empty value", in: "A=\x00", want: []KV{{"A", ""}}},
		{name: "value with =", in: "A=b=c\x00", want: []KV{{"A", "b=c"}}},
		{name: "missing trailing NUL", in: "A=1\x00B=2", want: []KV{{"A", "1"}, {"B", "2"}}},
		{name: "padding NULs skipped", in: "A=1\x00\x00\x00\x00", want: []KV{{"A", "1"}}},
		{name: "vendor key", in: "X-com.example.foo=1\x00X#abc=2\x00", want: []KV{{"X-com.example.foo", "1"}, {"X#abc", "2"}}},
		{name: "key 63 bytes", in: "K" + long(62) + "=v\x00", want: []KV{{"K" + long(62), "v"}}},
		{name: "value 255 bytes", in: "K=" + long(255) + "\x00", want: []KV{{"K", long(255)}}},
		{name: "CHAP_C large", in: "CHAP_C=0x" + long(2048) + "\x00", want: []KV{{"CHAP_C", "0x" + long(2048)}}},
		{name: "no =", in: "A\x00", err: true},
		{name: "empty key", in: "=1\x00", err: true},
		{name: "key 64 bytes", in: "K" + long(63) + "=v\x00", err: true},
		{name: "value 256 bytes", in: "K=" + long(256) + "\x00", err: true},
		{name: "list of 255-byte elements", in: "K=" + long(255) + "," + long(255) + "\x00", want: []KV{{"K", long(255) + "," + long(255)}}},
		{name: "list with a 256-byte element", in: "K=a," + long(256) + "\x00", err: true},
		{name: "CHAP_C over the large limit", in: "CHAP_C=0x" + long(MaxLargeValueLen) + "\x00", err: true},
		{name: "bad key char", in: "A B=1\x00", err: true},
		{name: "high-bit key char", in: "A\xff=1\x00", err: true},
		{name: "duplicate", in: "A=1\x00A=2\x00", err: true},
		{name: "too long overall", in: strings.Repeat("A=1\x00", MaxTextLen/4+1), err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseText([]byte(tt.in))
			if tt.err {
				if err == nil {
					t.Fatalf("ParseText(%q) = %v, want error", tt.in, got)
				}
				if !errors.Is(err, ErrMalformedText) {
					t.Fatalf("error %v does not wrap ErrMalformedText", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseText: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseText = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEncodeText(t *testing.T) {
	kvs := []KV{{"HeaderDigest", "None"}, {"MaxBurstLength", "262144"}, {"TargetAlias", ""}}
	got := EncodeText(kvs)
	want := "HeaderDigest=None\x00MaxBurstLength=262144\x00TargetAlias=\x00"
	if string(got) != want {
		t.Fatalf("EncodeText = %q, want %q", got, want)
	}
	back, err := ParseText(got)
	if err != nil || !reflect.DeepEqual(back, kvs) {
		t.Fatalf("round trip = %q, %v", back, err)
	}
	if len(EncodeText(nil)) != 0 {
		t.Fatal("EncodeText(nil) not empty")
	}
}

func TestSendTargetsText(t *testing.T) {
	visible := []SendTargetsEntry{
		{Name: "iqn.2026-01.io.hatgt:a", Portals: []Portal{{Addr: "10.0.0.1:3260", TPGT: 1}, {Addr: "[fe80::1]:3260", TPGT: 2}}},
		{Name: "iqn.2026-01.io.hatgt:b", Portals: []Portal{{Addr: "10.0.0.2:3260", TPGT: 7}}},
	}
	all := []KV{
		{"TargetName", "iqn.2026-01.io.hatgt:a"},
		{"TargetAddress", "10.0.0.1:3260,1"},
		{"TargetAddress", "[fe80::1]:3260,2"},
		{"TargetName", "iqn.2026-01.io.hatgt:b"},
		{"TargetAddress", "10.0.0.2:3260,7"},
	}
	tests := []struct {
		value   string
		visible []SendTargetsEntry
		want    []KV
	}{
		{"All", visible, all},
		{"iqn.2026-01.io.hatgt:b", visible, all[3:]},
		{"iqn.2026-01.io.hatgt:a", visible, all[:3]},
		{"iqn.2026-01.io.hatgt:nope", visible, nil},
		{"", visible[1:], all[3:]},
		{"All", nil, nil},
	}
	for _, tt := range tests {
		got := SendTargetsText(tt.value, tt.visible)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("SendTargetsText(%q) = %q, want %q", tt.value, got, tt.want)
		}
	}
	// A SendTargets response repeats keys: it must still encode and parse
	// as a list.
	back, err := parseTextList(EncodeText(all))
	if err != nil || !reflect.DeepEqual(back, all) {
		t.Fatalf("list round trip = %q, %v", back, err)
	}
	if _, err := ParseText(EncodeText(all)); err == nil {
		t.Fatal("ParseText accepted duplicate TargetAddress keys")
	}
}
