package target

import (
	"reflect"
	"testing"
)

// testTargetLimits are the target's values in the negotiation tables.
func testTargetLimits() (SessionParams, ConnParams) {
	return SessionParams{
		MaxConnections: 8, InitialR2T: false, ImmediateData: true,
		MaxBurstLength: 1 << 20, FirstBurstLength: 1 << 17,
		DefaultTime2Wait: 5, DefaultTime2Retain: 30, MaxOutstandingR2T: 4,
		DataPDUInOrder: false, DataSequenceInOrder: false, ErrorRecoveryLevel: 2,
	}, ConnParams{HeaderDigest: true, DataDigest: false, TargetMaxRecvDataSegmentLength: 65536}
}

func TestNegotiateKeys(t *testing.T) {
	type check func(s SessionParams, c ConnParams) bool
	tests := []struct {
		key, value string
		answer     string // "" = no answer (declaration)
		check      check
	}{
		// Lists: the target picks the first value it supports.
		{"HeaderDigest", "CRC32C,None", "CRC32C", func(s SessionParams, c ConnParams) bool { return c.HeaderDigest }},
		{"HeaderDigest", "None,CRC32C", "None", func(s SessionParams, c ConnParams) bool { return !c.HeaderDigest }},
		{"HeaderDigest", "Foo,CRC32C", "CRC32C", nil},
		{"HeaderDigest", "Foo", valReject, func(s SessionParams, c ConnParams) bool { return !c.HeaderDigest }},
		{"DataDigest", "CRC32C,None", "None", func(s SessionParams, c ConnParams) bool { return !c.DataDigest }},
		{"DataDigest", "CRC32C", valReject, nil},
		// Minimum.
		{"MaxConnections", "1", "1", func(s SessionParams, c ConnParams) bool { return s.MaxConnections == 1 }},
		{"MaxConnections", "100", "8", func(s SessionParams, c ConnParams) bool { return s.MaxConnections == 8 }},
		{"MaxConnections", "0", valReject, func(s SessionParams, c ConnParams) bool { return s.MaxConnections == 1 }},
		{"MaxConnections", "65536", valReject, nil},
		{"MaxBurstLength", "512", "512", func(s SessionParams, c ConnParams) bool { return s.MaxBurstLength == 512 }},
		{"MaxBurstLength", "16777215", "1048576", func(s SessionParams, c ConnParams) bool { return s.MaxBurstLength == 1<<20 }},
		{"MaxBurstLength", "0x1000", "4096", nil},
		{"MaxBurstLength", "511", valReject, func(s SessionParams, c ConnParams) bool { return s.MaxBurstLength == 262144 }},
		{"MaxBurstLength", "16777216", valReject, nil},
		{"MaxBurstLength", "-1", valReject, nil},
		{"MaxBurstLength", "", valReject, nil},
		{"MaxBurstLength", "12ab", valReject, nil},
		{"MaxBurstLength", "99999999999999999999999", valReject, nil},
		{"FirstBurstLength", "262144", "131072", func(s SessionParams, c ConnParams) bool { return s.FirstBurstLength == 1<<17 }},
		{"FirstBurstLength", "8192", "8192", nil},
		{"FirstBurstLength", "100", valReject, nil},
		{"DefaultTime2Retain", "0", "0", func(s SessionParams, c ConnParams) bool { return s.DefaultTime2Retain == 0 }},
		{"DefaultTime2Retain", "3600", "30", nil},
		{"DefaultTime2Retain", "3601", valReject, nil},
		{"MaxOutstandingR2T", "1", "1", nil},
		{"MaxOutstandingR2T", "65535", "4", func(s SessionParams, c ConnParams) bool { return s.MaxOutstandingR2T == 4 }},
		{"MaxOutstandingR2T", "0", valReject, nil},
		{"ErrorRecoveryLevel", "2", "0", func(s SessionParams, c ConnParams) bool { return s.ErrorRecoveryLevel == 0 }},
		{"ErrorRecoveryLevel", "3", valReject, nil},
		// Maximum.
		{"DefaultTime2Wait", "0", "5", func(s SessionParams, c ConnParams) bool { return s.DefaultTime2Wait == 5 }},
		{"DefaultTime2Wait", "3600", "3600", func(s SessionParams, c ConnParams) bool { return s.DefaultTime2Wait == 3600 }},
		{"DefaultTime2Wait", "3601", valReject, nil},
		// OR.
		{"InitialR2T", "No", "No", func(s SessionParams, c ConnParams) bool { return !s.InitialR2T }},
		{"InitialR2T", "Yes", "Yes", func(s SessionParams, c ConnParams) bool { return s.InitialR2T }},
		{"InitialR2T", "yes", valReject, nil},
		{"DataPDUInOrder", "No", "No", func(s SessionParams, c ConnParams) bool { return !s.DataPDUInOrder }},
		{"DataSequenceInOrder", "Yes", "Yes", func(s SessionParams, c ConnParams) bool { return s.DataSequenceInOrder }},
		// AND.
		{"ImmediateData", "Yes", "Yes", func(s SessionParams, c ConnParams) bool { return s.ImmediateData }},
		{"ImmediateData", "No", "No", func(s SessionParams, c ConnParams) bool { return !s.ImmediateData }},
		{"ImmediateData", "Maybe", valReject, func(s SessionParams, c ConnParams) bool { return s.ImmediateData }},
		// Declarations.
		{"MaxRecvDataSegmentLength", "4096", "", func(s SessionParams, c ConnParams) bool { return c.InitiatorMaxRecvDataSegmentLength == 4096 }},
		{"MaxRecvDataSegmentLength", "511", valReject, func(s SessionParams, c ConnParams) bool { return c.InitiatorMaxRecvDataSegmentLength == 8192 }},
		{"MaxRecvDataSegmentLength", "16777215", "", nil},
		{"MaxRecvDataSegmentLength", "16777216", valReject, nil},
		// Newer and obsolete keys.
		{"TaskReporting", "FastAbort,RFC3720", "RFC3720", nil},
		{"TaskReporting", "FastAbort", valReject, nil},
		{"iSCSIProtocolLevel", "2", "1", nil},
		{"iSCSIProtocolLevel", "0", "0", nil},
		{"iSCSIProtocolLevel", "32", valReject, nil},
		{"OFMarker", "Yes", "No", nil},
		{"IFMarker", "No", "No", nil},
		{"OFMarkInt", "2048~8192", valReject, nil},
		{"IFMarkInt", "2048", valReject, nil},
		{"RDMAExtensions", "Yes", "No", nil},
		// Keys the initiator does not send.
		{"TargetAlias", "x", valIrrelevant, nil},
		{"TargetPortalGroupTag", "1", valIrrelevant, nil},
		{"TargetAddress", "1.2.3.4:3260,1", valIrrelevant, nil},
		{"SendTargets", "All", valIrrelevant, nil},
		// Unknown and vendor keys.
		{"X-com.example.feature", "1", valNotUnderstood, nil},
		{"X#vendor", "1", valNotUnderstood, nil},
		{"NoSuchKey", "1", valNotUnderstood, nil},
	}
	for _, tt := range tests {
		t.Run(tt.key+"="+tt.value, func(t *testing.T) {
			s, c := testTargetLimits()
			n := newNegotiator(true, s, c)
			out := n.negotiate([]KV{{tt.key, tt.value}})
			var want []KV
			if tt.answer != "" {
				want = []KV{{tt.key, tt.answer}}
			}
			if !reflect.DeepEqual(out, want) {
				t.Fatalf("answer %q, want %q", out, want)
			}
			if tt.check != nil {
				s, c := n.final()
				if !tt.check(s, c) {
					t.Fatalf("result %+v %+v", s, c)
				}
			}
		})
	}
}

func TestNegotiateFirstBurstIrrelevant(t *testing.T) {
	s, c := testTargetLimits()
	n := newNegotiator(true, s, c)
	// FirstBurstLength comes before the keys that make it irrelevant.
	out := n.negotiate([]KV{{"FirstBurstLength", "8192"}, {"InitialR2T", "Yes"}, {"ImmediateData", "No"}})
	want := []KV{{"FirstBurstLength", valIrrelevant}, {"InitialR2T", "Yes"}, {"ImmediateData", "No"}}
	if !reflect.DeepEqual(out, want) {
		t.Fatalf("answer %q, want %q", out, want)
	}
	n = newNegotiator(true, s, c)
	out = n.negotiate([]KV{{"FirstBurstLength", "8192"}, {"InitialR2T", "No"}, {"ImmediateData", "No"}})
	if out[0].Value != "8192" {
		t.Fatalf("answer %q", out)
	}
}

func TestNegotiateFirstBurstBoundedByMaxBurst(t *testing.T) {
	s, c := testTargetLimits()
	n := newNegotiator(true, s, c)
	out := n.negotiate([]KV{{"FirstBurstLength", "65536"}, {"MaxBurstLength", "4096"}})
	if want := []KV{{"FirstBurstLength", "4096"}, {"MaxBurstLength", "4096"}}; !reflect.DeepEqual(out, want) {
		t.Fatalf("answers %q, want %q", out, want)
	}
	if got, _ := n.final(); got.FirstBurstLength != 4096 || got.MaxBurstLength != 4096 {
		t.Fatalf("FirstBurstLength %d MaxBurstLength %d", got.FirstBurstLength, got.MaxBurstLength)
	}
}

func TestNegotiateLeadingOnlyOnNonLeading(t *testing.T) {
	s, c := testTargetLimits()
	n := newNegotiator(false, s, c)
	var in, want []KV
	for key, k := range negKeys {
		if k.leadingOnly {
			in = append(in, KV{key, "1"})
			want = append(want, KV{key, valIrrelevant})
		}
	}
	if len(in) < 10 {
		t.Fatalf("only %d leading-only keys", len(in))
	}
	if out := n.negotiate(in); !reflect.DeepEqual(out, want) {
		t.Fatalf("answers %q", out)
	}
	// Connection keys still count.
	out := n.negotiate([]KV{{"HeaderDigest", "CRC32C"}, {"MaxRecvDataSegmentLength", "1024"}})
	if !reflect.DeepEqual(out, []KV{{"HeaderDigest", "CRC32C"}}) || n.conn.InitiatorMaxRecvDataSegmentLength != 1024 {
		t.Fatalf("answers %q conn %+v", out, n.conn)
	}
	if offers := n.offers(map[string]bool{}); offers != nil {
		t.Fatalf("offers on a non-leading connection: %q", offers)
	}
}

func TestNegotiateDefaultsWhenNothingSaid(t *testing.T) {
	s, c := testTargetLimits()
	n := newNegotiator(true, s, c)
	gotS, gotC := n.final()
	wantS, wantC := rfcDefaults()
	if gotS != wantS || gotC != wantC {
		t.Fatalf("results %+v %+v, want RFC defaults", gotS, gotC)
	}
}

func TestNegotiateOffers(t *testing.T) {
	s := SessionParams{MaxBurstLength: 8192, FirstBurstLength: 4096, ImmediateData: false,
		InitialR2T: true, DefaultTime2Wait: 10, DefaultTime2Retain: 5}
	n := newNegotiator(true, s, ConnParams{})
	seen := map[string]bool{"FirstBurstLength": true} // negotiated already
	got := n.offers(seen)
	want := []KV{{"ImmediateData", "No"}, {"MaxBurstLength", "8192"}, {"DefaultTime2Wait", "10"}, {"DefaultTime2Retain", "5"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("offers %q, want %q", got, want)
	}
	if again := n.offers(seen); again != nil {
		t.Fatalf("offered twice: %q", again)
	}
	// The initiator answers with a smaller MaxBurstLength, rejects
	// DefaultTime2Retain and ignores the rest.
	if out := n.negotiate([]KV{{"MaxBurstLength", "4096"}, {"DefaultTime2Retain", valReject}}); out != nil {
		t.Fatalf("answers to answers: %q", out)
	}
	r, _ := n.final()
	if r.MaxBurstLength != 4096 || r.DefaultTime2Retain != 5 || r.ImmediateData || r.DefaultTime2Wait != 10 {
		t.Fatalf("results %+v", r)
	}
}

func TestNegotiateDeclare(t *testing.T) {
	n := newNegotiator(true, SessionParams{}, ConnParams{TargetMaxRecvDataSegmentLength: 100})
	if got := n.declare(); !reflect.DeepEqual(got, []KV{{"MaxRecvDataSegmentLength", "512"}}) {
		t.Fatalf("declaration %q: must be clamped to 512", got)
	}
	if got := n.declare(); got != nil {
		t.Fatalf("declared twice: %q", got)
	}
}

func TestTargetLimitsClamp(t *testing.T) {
	s, c := targetLimits(SessionParams{MaxBurstLength: 1 << 30, FirstBurstLength: 1 << 25, MaxConnections: 70000,
		MaxOutstandingR2T: 70000, DefaultTime2Wait: 5000, DefaultTime2Retain: 5000, ErrorRecoveryLevel: 2},
		ConnParams{TargetMaxRecvDataSegmentLength: 1 << 30})
	if s.MaxBurstLength != maxDataSegmentLength || s.FirstBurstLength != maxDataSegmentLength ||
		s.MaxConnections != 65535 || s.MaxOutstandingR2T != 65535 || s.DefaultTime2Wait != 3600 ||
		s.DefaultTime2Retain != 3600 || s.ErrorRecoveryLevel != 0 || c.TargetMaxRecvDataSegmentLength != maxDataSegmentLength {
		t.Fatalf("limits %+v %+v", s, c)
	}
}
