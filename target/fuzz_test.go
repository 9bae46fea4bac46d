package target

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// panicCounter is a slog handler that counts the records reporting a
// recovered panic, so that tests can fail on panics the server survives.
type panicCounter struct {
	n    atomic.Int64
	last atomic.Value
}

func (h *panicCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *panicCounter) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "panicked") {
		h.n.Add(1)
		var b strings.Builder
		r.Attrs(func(a slog.Attr) bool { b.WriteString(a.String() + " "); return true })
		h.last.Store(b.String())
	}
	return nil
}
func (h *panicCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *panicCounter) WithGroup(string) slog.Handler      { return h }

// pipeSession starts a full feature phase connection over net.Pipe with
// the session bound directly (no login), and returns the initiator side.
func pipeSession(t testing.TB, srv *Server, isid byte) (*initiator, *conn) {
	a, b := net.Pipe()
	c := newConn(srv, a)
	te := srv.lookupTarget(ftIQN)
	sess, cp := loginEnv{c}.Defaults()
	sess.ImmediateData, sess.InitialR2T = true, false
	cp.InitiatorMaxRecvDataSegmentLength = 8192
	cp.HeaderDigest, cp.DataDigest = false, false
	res := &LoginResult{
		InitiatorName: ftInitiator, ISID: [6]byte{0x80, 0, 0, 0, 1, isid},
		SessionType: SessionNormal, Target: te.loginTarget(), Session: sess, Conn: cp, CmdSN: 1,
	}
	if _, st := srv.bindSession(c, res); st != LoginSuccess {
		t.Fatalf("bindSession: %#x", uint16(st))
	}
	c.params = cp
	go func() {
		defer close(c.done)
		c.fullFeature(1)
	}()
	in := &initiator{nc: b, itt: 0x100, cmdSN: 1, targetMRDSL: cp.TargetMaxRecvDataSegmentLength, neg: map[string]string{}}
	in.br = newReader(b)
	return in, c
}

func FuzzFullFeaturePDU(f *testing.F) {
	seed := func(op Opcode, flags byte, data []byte) []byte {
		p := NewPDU(op)
		p.SetFlags(flags)
		p.SetITT(7)
		p.SetCmdSN(1)
		p.SetU32(offExpDataLen, 4096)
		p.BHS[offCDB] = 0x2a
		p.BHS[offCDB+8] = 8
		return append(p.BHS[:], data...)
	}
	f.Add(seed(OpSCSICommand, 0xa1, make([]byte, 512)))
	f.Add(seed(OpSCSICommand, 0x21, nil))
	f.Add(seed(OpSCSICommand, 0xc1, nil))
	f.Add(seed(OpDataOut, 0x80, make([]byte, 100)))
	f.Add(seed(OpTaskMgmtReq, 0x81, nil))
	f.Add(seed(OpTaskMgmtReq, 0x87, nil))
	f.Add(seed(OpTextReq, 0xc0, []byte("SendTargets=All\x00")))
	f.Add(seed(OpTextReq, 0x80, []byte("MaxBurstLength=1\x00X-foo=bar\x00")))
	f.Add(seed(OpLogoutReq, 0x82, nil))
	f.Add(seed(OpNopOut, 0x80, []byte("x")))
	f.Add(seed(OpSNACKReq, 0x80, nil))
	f.Add(seed(0x3e, 0x80, nil))

	counter := &panicCounter{}
	srv, err := NewServer(ServerConfig{Logger: slog.New(counter), NopInInterval: -1})
	if err != nil {
		f.Fatal(err)
	}
	dev, _ := newFTDevice(f)
	if err := srv.AddTarget(TargetConfig{Name: ftIQN, Device: dev}); err != nil {
		f.Fatal(err)
	}
	var n atomic.Uint32
	f.Fuzz(func(t *testing.T, b []byte) {
		in, c := pipeSession(t, srv, byte(n.Add(1)))
		defer func() {
			in.nc.Close()
			c.close()
			<-c.done
		}()
		var p PDU
		copy(p.BHS[:], b)
		if len(b) > BHSLen {
			p.Data = b[BHSLen:min(len(b), BHSLen+2048)]
		}
		if ahs := int(p.BHS[4]) * 4; ahs > 0 && len(p.Data) >= ahs {
			p.AHS, p.Data = p.Data[:ahs], p.Data[ahs:]
		}
		go func() {
			in.nc.Write(p.Encode(Digests{}))
			ping := NewPDU(OpNopOut)
			ping.SetImmediate(true)
			ping.SetFinal(true)
			ping.SetITT(0xabcdef)
			ping.SetTTT(ReservedTag)
			in.nc.Write(ping.Encode(Digests{}))
		}()
		in.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			r, err := ReadPDU(in.br, Digests{}, 0)
			if err != nil {
				break // the target closed the connection: acceptable
			}
			if r.Opcode() == OpNopIn && r.ITT() == 0xabcdef {
				break
			}
		}
		if counter.n.Load() != 0 {
			t.Fatalf("a handler panicked on %x: %v", b, counter.last.Load())
		}
	})
}
