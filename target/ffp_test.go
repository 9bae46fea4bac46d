package target

import (
	"bytes"
	"testing"
	"time"

	"github.com/hatgt/hatgt/scsi"
)

// collect reads PDUs until one for itt with final status arrives, and
// returns every PDU read.
func (in *initiator) until(match func(*PDU) bool) []*PDU {
	in.t.Helper()
	var got []*PDU
	for {
		p := in.mustRecv()
		got = append(got, p)
		if match(p) {
			return got
		}
	}
}

func TestCmdSNOutsideWindowIgnored(t *testing.T) {
	env := newFTEnv(t, func(c *ServerConfig) { c.CmdWindow = 4 })
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{})
	in.ready()
	_, _ = in.ping(nil) // learn the current window
	if in.maxCmdSN-in.expCmdSN != 3 {
		t.Fatalf("window [%d, %d], want 4 commands", in.expCmdSN, in.maxCmdSN)
	}

	high := in.scsiCmd(cdbTUR, false, false, 0)
	high.SetCmdSN(in.maxCmdSN + 1)
	in.cmdSN--
	in.send(high)
	low := in.scsiCmd(cdbTUR, false, false, 0)
	low.SetCmdSN(in.expCmdSN - 1)
	in.cmdSN--
	in.send(low)

	// A good command afterwards is answered; the ignored ones never are.
	good := in.scsiCmd(cdbTUR, false, false, 0)
	in.send(good)
	got := in.until(func(p *PDU) bool { return p.Opcode() == OpSCSIResponse && p.ITT() == good.ITT() })
	_, before := in.ping(nil)
	for _, p := range append(got, before...) {
		if p.ITT() == high.ITT() || p.ITT() == low.ITT() {
			t.Fatalf("answer %v for a command outside the window", p.Opcode())
		}
	}
	if got[len(got)-1].BHS[3] != byte(scsi.StatusGood) {
		t.Fatalf("status %#x", got[len(got)-1].BHS[3])
	}
}

func TestCmdSNOutOfOrderDeliveredInOrder(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{})
	in.ready()
	first := in.scsiCmd(cdbTUR, false, false, 0)
	second := in.scsiCmd(cdbTUR, false, false, 0)
	in.send(second) // CmdSN n+1 first: must wait for n
	_, before := in.ping(nil)
	for _, p := range before {
		if p.ITT() == second.ITT() {
			t.Fatal("command ahead of ExpCmdSN answered before the gap was filled")
		}
	}
	exp := in.expCmdSN
	in.send(first)
	seen := map[uint32]bool{}
	in.until(func(p *PDU) bool {
		if p.Opcode() == OpSCSIResponse {
			seen[p.ITT()] = true
		}
		return len(seen) == 2
	})
	if !seen[first.ITT()] || !seen[second.ITT()] {
		t.Fatalf("responses %v", seen)
	}
	if in.expCmdSN != exp+2 {
		t.Fatalf("ExpCmdSN %d, want %d", in.expCmdSN, exp+2)
	}
}

func TestSequencerWindow(t *testing.T) {
	q := newSequencer(0xfffffffe, 4) // wraps around zero
	var order []uint32
	run := func(sn uint32) func() { return func() { order = append(order, sn) } }
	if !q.submit(0xffffffff, run(0xffffffff)) || len(order) != 0 {
		t.Fatal("future CmdSN should wait")
	}
	if q.submit(2, run(2)) {
		t.Fatal("CmdSN beyond MaxCmdSN accepted")
	}
	if !q.submit(0xfffffffe, run(0xfffffffe)) {
		t.Fatal("ExpCmdSN refused")
	}
	if len(order) != 2 || order[0] != 0xfffffffe || order[1] != 0xffffffff {
		t.Fatalf("delivery order %x", order)
	}
	if q.submit(0xfffffffe, run(1)) {
		t.Fatal("old CmdSN accepted")
	}
	if exp, max := q.window(); exp != 0 || max != 3 {
		t.Fatalf("window [%d, %d], want [0, 3]", exp, max)
	}
	if !q.consume(0) {
		t.Fatal("consume in window failed")
	}
	if exp, _ := q.window(); exp != 1 {
		t.Fatalf("ExpCmdSN %d after consume, want 1", exp)
	}
}

func TestNopOutEcho(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{})
	data := []byte("ping data, not a multiple of 4")
	r, _ := in.ping(data)
	if !bytes.Equal(r.Data, data) || r.TTT() != ReservedTag {
		t.Fatalf("echo %q TTT %#x", r.Data, r.TTT())
	}
	// Non-immediate NOP-Out takes a CmdSN and is answered too.
	p := NewPDU(OpNopOut)
	p.SetFinal(true)
	p.SetITT(in.nextITT())
	p.SetTTT(ReservedTag)
	p.SetCmdSN(in.cmdSN)
	in.cmdSN++
	exp := in.expCmdSN
	in.send(p)
	r = in.mustRecv()
	if r.Opcode() != OpNopIn || r.ITT() != p.ITT() || r.ExpCmdSN() != exp+1 {
		t.Fatalf("got %v ITT %#x ExpCmdSN %d", r.Opcode(), r.ITT(), r.ExpCmdSN())
	}
}

func TestTargetPingsIdleConnection(t *testing.T) {
	env := newFTEnv(t, func(c *ServerConfig) { c.NopInInterval = 20 * time.Millisecond; c.NopInTimeout = time.Minute })
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{})
	r := in.mustRecv()
	if r.Opcode() != OpNopIn || r.ITT() != ReservedTag || r.TTT() == ReservedTag {
		t.Fatalf("got %v ITT %#x TTT %#x, want a NOP-In ping", r.Opcode(), r.ITT(), r.TTT())
	}
	if r.StatSN() != in.expStatSN {
		t.Fatalf("ping StatSN %d, want %d (not advanced)", r.StatSN(), in.expStatSN)
	}
	a := NewPDU(OpNopOut)
	a.SetImmediate(true)
	a.SetFinal(true)
	a.SetITT(ReservedTag)
	a.SetTTT(r.TTT())
	a.SetCmdSN(in.cmdSN)
	in.send(a)
	// Answered: the connection stays and keeps working.
	in.ready()
}

func TestTargetDropsConnectionThatDoesNotAnswerPing(t *testing.T) {
	env := newFTEnv(t, func(c *ServerConfig) { c.NopInInterval = 10 * time.Millisecond; c.NopInTimeout = 30 * time.Millisecond })
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{})
	in.expectClosed()
}

func TestUnknownOpcodeRejected(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{})
	for _, op := range []Opcode{0x0f, OpVendorInitLo, OpSNACKReq} {
		p := NewPDU(op)
		p.SetImmediate(true)
		p.SetFinal(true)
		p.SetITT(in.nextITT())
		in.send(p)
		r := in.mustRecv()
		if r.Opcode() != OpReject {
			t.Fatalf("opcode %#x: got %v, want Reject", uint8(op), r.Opcode())
		}
		want := rejectCmdNotSupported
		if op == OpSNACKReq {
			want = rejectProtocolError
		}
		if r.BHS[2] != want || len(r.Data) != BHSLen || !bytes.Equal(r.Data, p.BHS[:]) {
			t.Fatalf("opcode %#x: reason %#x, data %x", uint8(op), r.BHS[2], r.Data)
		}
	}
	in.ready()
}

func TestOversizeDataSegmentClosesConnection(t *testing.T) {
	env := newFTEnv(t, func(c *ServerConfig) { c.MaxRecvDataSegmentLength = 4096 })
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{})
	p := NewPDU(OpNopOut)
	p.SetImmediate(true)
	p.SetFinal(true)
	p.SetITT(in.nextITT())
	p.SetTTT(ReservedTag)
	p.Data = make([]byte, 8192)
	in.send(p)
	in.expectClosed()
}

func TestDataDigestErrorRejected(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{keys: []KV{{"HeaderDigest", "CRC32C"}, {"DataDigest", "CRC32C"}}})
	if !in.dig.Header || !in.dig.Data {
		t.Skipf("target did not negotiate digests: %v", in.neg)
	}
	in.ready()
	p := NewPDU(OpNopOut)
	p.SetImmediate(true)
	p.SetFinal(true)
	p.SetITT(in.nextITT())
	p.SetTTT(ReservedTag)
	p.SetExpStatSN(in.expStatSN)
	p.Data = []byte("12345678")
	wire := p.Encode(in.dig)
	wire[len(wire)-1] ^= 0xff // break the data digest
	if _, err := in.nc.Write(wire); err != nil {
		t.Fatal(err)
	}
	r := in.mustRecv()
	if r.Opcode() != OpReject || r.BHS[2] != rejectDataDigest {
		t.Fatalf("got %v reason %#x, want data digest Reject", r.Opcode(), r.BHS[2])
	}
	// Still in sync: a good ping works.
	if e, _ := in.ping([]byte("ok")); string(e.Data) != "ok" {
		t.Fatalf("echo %q", e.Data)
	}
}

func TestHeaderDigestErrorClosesConnection(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{keys: []KV{{"HeaderDigest", "CRC32C"}}})
	if !in.dig.Header {
		t.Skipf("target did not negotiate header digest: %v", in.neg)
	}
	p := NewPDU(OpNopOut)
	p.SetImmediate(true)
	p.SetFinal(true)
	p.SetITT(in.nextITT())
	p.SetTTT(ReservedTag)
	wire := p.Encode(in.dig)
	wire[BHSLen] ^= 0xff
	if _, err := in.nc.Write(wire); err != nil {
		t.Fatal(err)
	}
	in.expectClosed()
}

func TestMisbehavingConnectionDoesNotDisturbOthers(t *testing.T) {
	env := newFTEnv(t, nil)
	good := ftDial(t, env.addr)
	good.mustLogin(loginOpts{})
	good.ready()
	bad := ftDial(t, env.addr)
	bad.mustLogin(loginOpts{isid: &[6]byte{0x80, 0, 0, 0, 0, 2}})
	// Garbage: random headers, including nonsense opcodes and lengths.
	for i := 0; i < 50; i++ {
		var p PDU
		for j := range p.BHS {
			p.BHS[j] = byte(i*31 + j*17)
		}
		p.BHS[4] = 0 // keep the stream decodable
		p.BHS[5], p.BHS[6], p.BHS[7] = 0, 0, byte(i%8)
		p.Data = make([]byte, i%8)
		if _, err := bad.nc.Write(p.Encode(Digests{})); err != nil {
			break
		}
	}
	bad.nc.Close()
	data := ftPattern(4096, 9)
	if r := good.exec(cdbWrite10(0, 8), false, data, 4096); r.status != scsi.StatusGood {
		t.Fatalf("write on the good session: %v", r.status)
	}
	if r := good.exec(cdbRead10(0, 8), true, nil, 4096); !bytes.Equal(r.data, data) {
		t.Fatal("read back on the good session differs")
	}
}

func TestSessionReinstatement(t *testing.T) {
	env := newFTEnv(t, nil)
	old := ftDial(t, env.addr)
	old.mustLogin(loginOpts{})
	old.ready()
	// A write waiting for data in the old session: reinstatement aborts it.
	p := old.scsiCmd(cdbWrite10(0, 8), false, true, 4096)
	old.send(p)
	if r := old.mustRecv(); r.Opcode() != OpR2T {
		t.Fatalf("got %v, want R2T", r.Opcode())
	}
	oldTSIH := old.tsih

	fresh := ftDial(t, env.addr)
	fresh.mustLogin(loginOpts{}) // same ISID, TSIH 0
	if fresh.tsih == oldTSIH {
		t.Fatal("reinstated session kept the old TSIH")
	}
	old.expectClosed()
	fresh.ready()
	env.srv.mu.Lock()
	n := len(env.srv.sessions)
	env.srv.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
}

func TestSecondConnectionJoinsSession(t *testing.T) {
	env := newFTEnv(t, nil)
	a := ftDial(t, env.addr)
	a.mustLogin(loginOpts{})
	a.ready()
	b := ftDial(t, env.addr)
	b.cmdSN, b.expStatSN = a.cmdSN, 0
	b.mustLogin(loginOpts{tsih: a.tsih, cid: 1})
	if b.tsih != a.tsih {
		t.Fatalf("TSIH %d, want %d", b.tsih, a.tsih)
	}
	// Commands on either connection share the session's CmdSN window.
	b.cmdSN = a.cmdSN
	if r := b.exec(cdbTUR, false, nil, 0); r.status != scsi.StatusGood {
		t.Fatalf("TUR on the second connection: %v", r.status)
	}
	a.cmdSN = b.cmdSN
	if r := a.exec(cdbTUR, false, nil, 0); r.status != scsi.StatusGood {
		t.Fatalf("TUR on the first connection: %v", r.status)
	}
	// A login to a TSIH that does not exist fails.
	c := ftDial(t, env.addr)
	if st, err := c.login(loginOpts{tsih: a.tsih + 100, cid: 2}); err != nil || st != LoginSessionNotExist {
		t.Fatalf("status %#04x err %v, want session does not exist", uint16(st), err)
	}
}

func TestAbortTaskWaitingForData(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{keys: []KV{{"ImmediateData", "No"}, {"InitialR2T", "Yes"}}})
	in.ready()
	p := in.scsiCmd(cdbWrite10(0, 8), false, true, 4096)
	in.send(p)
	if r := in.mustRecv(); r.Opcode() != OpR2T {
		t.Fatalf("got %v, want R2T", r.Opcode())
	}
	tmf := in.tmf(tmfAbortTask, p.ITT(), p.CmdSN())
	r := in.mustRecv()
	if r.Opcode() != OpTaskMgmtResp || r.ITT() != tmf.ITT() || r.BHS[2] != byte(scsi.TMFComplete) {
		t.Fatalf("got %v ITT %#x response %d", r.Opcode(), r.ITT(), r.BHS[2])
	}
	// Late data for the aborted task is dropped; no response for it ever.
	in.sendData(p.ITT(), 1, make([]byte, 4096), 0, 4096)
	_, before := in.ping(nil)
	for _, q := range before {
		if q.ITT() == p.ITT() {
			t.Fatalf("%v for the aborted task", q.Opcode())
		}
	}
	// The task is gone: aborting it again finds nothing.
	in.tmf(tmfAbortTask, p.ITT(), p.CmdSN())
	if r := in.mustRecv(); r.BHS[2] != byte(scsi.TMFTaskNotExist) {
		t.Fatalf("second abort: response %d, want task does not exist", r.BHS[2])
	}
	in.ready()
}

func TestTaskManagementFunctions(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{})
	in.ready()
	cases := []struct {
		fn   byte
		lun  uint64
		want scsi.TMFResponse
	}{
		{tmfAbortTaskSet, 0, scsi.TMFComplete},
		{tmfClearTaskSet, 0, scsi.TMFComplete},
		{tmfLUNReset, 0, scsi.TMFComplete},
		{tmfLUNReset, 7, scsi.TMFLUNNotExist},
		{tmfTaskReassign, 0, scsi.TMFReassignNotSupp},
		{tmfClearACA, 0, scsi.TMFNotSupported},
		{tmfTargetWarmReset, 0, scsi.TMFComplete},
		{0x55, 0, scsi.TMFRejected},
	}
	for _, c := range cases {
		p := in.tmfLUN(c.fn, ReservedTag, in.cmdSN, encodeLUN(c.lun))
		r := in.mustRecv()
		if r.Opcode() != OpTaskMgmtResp || r.ITT() != p.ITT() || scsi.TMFResponse(r.BHS[2]) != c.want {
			t.Fatalf("function %d LUN %d: %v response %d, want %d", c.fn, c.lun, r.Opcode(), r.BHS[2], c.want)
		}
	}
	// A reset leaves a unit attention, then the LU works again.
	in.ready()
}

func TestTargetColdResetClosesSessions(t *testing.T) {
	env := newFTEnv(t, nil)
	other := ftDial(t, env.addr)
	other.mustLogin(loginOpts{isid: &[6]byte{0x80, 0, 0, 0, 0, 9}})
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{})
	in.ready()
	p := in.tmf(tmfTargetColdReset, ReservedTag, in.cmdSN)
	r := in.mustRecv()
	if r.Opcode() != OpTaskMgmtResp || r.ITT() != p.ITT() || r.BHS[2] != 0 {
		t.Fatalf("got %v response %d", r.Opcode(), r.BHS[2])
	}
	in.expectClosed()
	other.expectClosed()
}

// tmf sends an immediate Task Management Function Request.
func (in *initiator) tmf(fn byte, rtt, refCmdSN uint32) *PDU {
	return in.tmfLUN(fn, rtt, refCmdSN, 0)
}

func (in *initiator) tmfLUN(fn byte, rtt, refCmdSN uint32, lun uint64) *PDU {
	p := NewPDU(OpTaskMgmtReq)
	p.SetImmediate(true)
	p.SetFlags(0x80 | fn)
	p.SetLUN(lun)
	p.SetITT(in.nextITT())
	p.SetU32(offReferencedTaskTg, rtt)
	p.SetCmdSN(in.cmdSN)
	p.SetU32(offRefCmdSN, refCmdSN)
	in.send(p)
	return p
}

func TestAbortTaskNeverReceivedConsumesCmdSN(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{})
	in.ready()
	// CmdSN n is "lost"; the TMF carries CmdSN n+1 and RefCmdSN n.
	lost := in.cmdSN
	in.cmdSN++
	p := NewPDU(OpTaskMgmtReq)
	p.SetImmediate(true)
	p.SetFlags(0x80 | tmfAbortTask)
	p.SetITT(in.nextITT())
	p.SetU32(offReferencedTaskTg, 0x7777)
	p.SetCmdSN(in.cmdSN)
	p.SetU32(offRefCmdSN, lost)
	in.send(p)
	r := in.mustRecv()
	if r.BHS[2] != byte(scsi.TMFComplete) {
		t.Fatalf("response %d, want function complete", r.BHS[2])
	}
	if r.ExpCmdSN() != lost+1 {
		t.Fatalf("ExpCmdSN %d, want %d (the lost CmdSN counts as received)", r.ExpCmdSN(), lost+1)
	}
	in.ready()
}

func TestInvalidDataSNFailsCommand(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{keys: []KV{{"ImmediateData", "No"}, {"InitialR2T", "Yes"}}})
	in.ready()
	before := env.backend.bytes(0, 1024)
	p := in.scsiCmd(cdbWrite10(0, 2), false, true, 1024)
	in.send(p)
	r2t := in.mustRecv()
	if r2t.Opcode() != OpR2T {
		t.Fatalf("got %v", r2t.Opcode())
	}
	d := NewPDU(OpDataOut)
	d.SetFinal(true)
	d.SetITT(p.ITT())
	d.SetTTT(r2t.TTT())
	d.SetDataSN(27)
	d.Data = ftPattern(1024, 7)
	in.send(d)
	r := in.mustRecv()
	if r.Opcode() != OpSCSIResponse || scsi.Status(r.BHS[3]) != scsi.StatusCheckCondition {
		t.Fatalf("got %v status %#x, want CHECK CONDITION", r.Opcode(), r.BHS[3])
	}
	if !bytes.Equal(env.backend.bytes(0, 1024), before) {
		t.Fatal("data with a bad DataSN was written")
	}
	in.ready()
}

func TestLogoutClosesSession(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{})
	in.ready()
	p := NewPDU(OpLogoutReq)
	p.SetImmediate(true)
	p.SetFlags(0x80 | logoutCloseSession)
	p.SetITT(in.nextITT())
	p.SetCmdSN(in.cmdSN)
	in.send(p)
	r := in.mustRecv()
	if r.Opcode() != OpLogoutResp || r.ITT() != p.ITT() || r.BHS[2] != logoutOK {
		t.Fatalf("got %v response %d", r.Opcode(), r.BHS[2])
	}
	in.expectClosed()
	// The session is gone: the same ISID logs in fresh.
	again := ftDial(t, env.addr)
	again.mustLogin(loginOpts{})
	again.ready()
}

func TestLogoutConnectionRecoveryNotSupported(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{})
	p := NewPDU(OpLogoutReq)
	p.SetImmediate(true)
	p.SetFlags(0x80 | logoutRecovery)
	p.SetITT(in.nextITT())
	p.SetCmdSN(in.cmdSN)
	in.send(p)
	if r := in.mustRecv(); r.Opcode() != OpLogoutResp || r.BHS[2] != logoutRecoveryNotSupp {
		t.Fatalf("got %v response %d", r.Opcode(), r.BHS[2])
	}
	in.ready()
}

func TestDiscoverySession(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{discovery: true})
	p := NewPDU(OpTextReq)
	p.SetImmediate(true)
	p.SetFinal(true)
	p.SetITT(in.nextITT())
	p.SetTTT(ReservedTag)
	p.SetCmdSN(in.cmdSN)
	p.Data = EncodeText([]KV{{"SendTargets", "All"}})
	in.send(p)
	r := in.mustRecv()
	if r.Opcode() != OpTextResp || !r.Final() || r.ITT() != p.ITT() {
		t.Fatalf("got %v F=%v", r.Opcode(), r.Final())
	}
	kvs, err := ParseText(r.Data)
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) < 2 || kvs[0] != (KV{"TargetName", ftIQN}) || kvs[1].Key != "TargetAddress" {
		t.Fatalf("SendTargets answer %v", kvs)
	}
	// SCSI commands are not for discovery sessions.
	c := in.scsiCmd(cdbTUR, false, false, 0)
	c.SetImmediate(true)
	in.send(c)
	if r := in.mustRecv(); r.Opcode() != OpReject {
		t.Fatalf("got %v, want Reject", r.Opcode())
	}
}

func TestTextResponseContinuation(t *testing.T) {
	env := newFTEnv(t, nil)
	for i := 0; i < 40; i++ {
		name := ftIQN + "-extra-target-with-a-long-name-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		if err := env.srv.AddTarget(TargetConfig{Name: name, Device: env.dev}); err != nil {
			t.Fatal(err)
		}
	}
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{discovery: true, keys: []KV{{"MaxRecvDataSegmentLength", "512"}}})
	p := NewPDU(OpTextReq)
	p.SetImmediate(true)
	p.SetFinal(true)
	p.SetITT(in.nextITT())
	p.SetTTT(ReservedTag)
	p.SetCmdSN(in.cmdSN)
	p.Data = EncodeText([]KV{{"SendTargets", "All"}})
	in.send(p)
	var all []byte
	parts := 0
	for {
		r := in.mustRecv()
		if r.Opcode() != OpTextResp || len(r.Data) > 512 {
			t.Fatalf("got %v with %d bytes", r.Opcode(), len(r.Data))
		}
		all = append(all, r.Data...)
		parts++
		if r.Final() {
			if r.TTT() != ReservedTag {
				t.Fatal("final Text Response with a TTT")
			}
			break
		}
		if r.Flags()&textContinue == 0 || r.TTT() == ReservedTag {
			t.Fatalf("partial Text Response without C or TTT")
		}
		q := NewPDU(OpTextReq)
		q.SetImmediate(true)
		q.SetFinal(true)
		q.SetITT(p.ITT())
		q.SetTTT(r.TTT())
		q.SetCmdSN(in.cmdSN)
		in.send(q)
	}
	// TargetName repeats, so this is no negotiation text for ParseText.
	names := 0
	for _, kv := range bytes.Split(bytes.TrimRight(all, "\x00"), []byte{0}) {
		if bytes.HasPrefix(kv, []byte("TargetName=")) {
			names++
		}
	}
	if parts < 2 || names != 41 {
		t.Fatalf("%d parts, %d targets", parts, names)
	}
}

func TestLUNDecoding(t *testing.T) {
	cases := []struct {
		raw  uint64
		want uint64
	}{
		{0, 0},
		{0x0005_0000_0000_0000, 5},
		{0x00ff_0000_0000_0000, 255},
		{0x4101_0000_0000_0000, 0x101},
		{0x7fff_0000_0000_0000, 0x3fff},
		{0x0105_0000_0000_0000, noSuchLUN}, // peripheral, bus 1
		{0x0005_0001_0000_0000, noSuchLUN}, // second level
		{0x8001_0000_0000_0000, noSuchLUN}, // logical unit addressing
		{0xc000_0000_0000_0000, noSuchLUN}, // extended
	}
	for _, c := range cases {
		if got := decodeLUN(c.raw); got != c.want {
			t.Errorf("decodeLUN(%#016x) = %#x, want %#x", c.raw, got, c.want)
		}
	}
	for _, l := range []uint64{0, 1, 255, 256, 0x3fff} {
		if got := decodeLUN(encodeLUN(l)); got != l {
			t.Errorf("round trip %d -> %#016x -> %d", l, encodeLUN(l), got)
		}
	}
}

func TestServerConfigValidate(t *testing.T) {
	c := DefaultServerConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	bad := []func(*ServerConfig){
		func(c *ServerConfig) { c.FirstBurstLength = c.MaxBurstLength + 1 },
		func(c *ServerConfig) { c.MaxRecvDataSegmentLength = 100 },
		func(c *ServerConfig) { c.MaxBurstLength = 1 << 24 },
		func(c *ServerConfig) { c.MaxCommandData = 512 },
		func(c *ServerConfig) { c.NopInTimeout = -1 },
		func(c *ServerConfig) { c.SessionWriteBudget = uint64(c.MaxCommandData) }, // no room for unsolicited data
		func(c *ServerConfig) { c.CmdWindow = 1024 },                              // 1024 × FirstBurstLength > budget
		func(c *ServerConfig) { c.WriteTimeout = -time.Second },
		func(c *ServerConfig) { c.DataOutTimeout = -time.Second },
	}
	for i, mod := range bad {
		c := DefaultServerConfig()
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("case %d: invalid config accepted", i)
		}
	}
	if _, err := NewServer(ServerConfig{FirstBurstLength: 4096, MaxBurstLength: 1024}); err == nil {
		t.Error("NewServer accepted an invalid config")
	}
}

func TestShutdownWaitsAndCloses(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{})
	in.ready()
	ctxDone := make(chan error, 1)
	go func() { ctxDone <- env.srv.Shutdown(t.Context()) }()
	// The target asks for a logout; the initiator complies.
	r := in.mustRecv()
	if r.Opcode() != OpAsyncMsg || r.BHS[36] != 1 {
		t.Fatalf("got %v event %d, want a logout request", r.Opcode(), r.BHS[36])
	}
	p := NewPDU(OpLogoutReq)
	p.SetImmediate(true)
	p.SetFlags(0x80 | logoutCloseSession)
	p.SetITT(in.nextITT())
	p.SetCmdSN(in.cmdSN)
	in.send(p)
	if r := in.mustRecv(); r.Opcode() != OpLogoutResp || r.BHS[2] != logoutOK {
		t.Fatalf("got %v response %d", r.Opcode(), r.BHS[2])
	}
	in.expectClosed()
	if err := <-ctxDone; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if nc, err := netDial(env.addr); err == nil {
		nc.Close()
		t.Fatal("server still accepts connections after Shutdown")
	}
}

func TestTextInNormalSession(t *testing.T) {
	env := newFTEnv(t, nil)
	if err := env.srv.AddTarget(TargetConfig{Name: ftIQN + "-other", Device: env.dev}); err != nil {
		t.Fatal(err)
	}
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{})
	p := NewPDU(OpTextReq)
	p.SetFinal(true)
	p.SetITT(in.nextITT())
	p.SetTTT(ReservedTag)
	p.SetCmdSN(in.cmdSN)
	in.cmdSN++
	p.Data = EncodeText([]KV{{"SendTargets", "All"}, {"X-hatgt-unknown", "1"}, {"MaxBurstLength", "512"}})
	in.send(p)
	r := in.mustRecv()
	if r.Opcode() != OpTextResp || !r.Final() {
		t.Fatalf("got %v", r.Opcode())
	}
	got := map[string][]string{}
	for _, kv := range bytes.Split(bytes.TrimRight(r.Data, "\x00"), []byte{0}) {
		k, v, _ := bytes.Cut(kv, []byte("="))
		got[string(k)] = append(got[string(k)], string(v))
	}
	// A normal session sees only its own target.
	if n := got["TargetName"]; len(n) != 1 || n[0] != ftIQN {
		t.Fatalf("TargetName %v", n)
	}
	if v := got["X-hatgt-unknown"]; len(v) != 1 || v[0] != "NotUnderstood" {
		t.Fatalf("unknown key answered %v", v)
	}
	if v := got["MaxBurstLength"]; len(v) != 1 || v[0] != "Reject" {
		t.Fatalf("login-only key answered %v", v)
	}
}

func TestConnectionReinstatementAndLimit(t *testing.T) {
	env := newFTEnv(t, func(c *ServerConfig) { c.MaxConnections = 2 })
	a := ftDial(t, env.addr)
	a.mustLogin(loginOpts{keys: []KV{{"MaxConnections", "2"}}})
	a.ready()
	b := ftDial(t, env.addr)
	b.cmdSN = a.cmdSN
	b.mustLogin(loginOpts{tsih: a.tsih, cid: 1})
	// A third connection is one too many.
	c := ftDial(t, env.addr)
	c.cmdSN = a.cmdSN
	if st, err := c.login(loginOpts{tsih: a.tsih, cid: 2}); err != nil || st != LoginTooManyConnections {
		t.Fatalf("third connection: status %#04x err %v", uint16(st), err)
	}
	// The same CID again reinstates the connection: the old one closes.
	b2 := ftDial(t, env.addr)
	b2.cmdSN = a.cmdSN
	b2.mustLogin(loginOpts{tsih: a.tsih, cid: 1})
	b.expectClosed()
	b2.cmdSN = a.cmdSN
	if r := b2.exec(cdbTUR, false, nil, 0); r.status != scsi.StatusGood {
		t.Fatalf("TUR on the reinstated connection: %v", r.status)
	}
	a.cmdSN = b2.cmdSN
	if r := a.exec(cdbTUR, false, nil, 0); r.status != scsi.StatusGood {
		t.Fatalf("TUR on the first connection: %v", r.status)
	}
}

func TestTextRequestContinuation(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{discovery: true})
	text := EncodeText([]KV{{"SendTargets", "All"}})
	itt := in.nextITT()
	send := func(data []byte, cont bool, ttt uint32) {
		p := NewPDU(OpTextReq)
		p.SetImmediate(true)
		if cont {
			p.SetFlags(textContinue)
		} else {
			p.SetFinal(true)
		}
		p.SetITT(itt)
		p.SetTTT(ttt)
		p.SetCmdSN(in.cmdSN)
		p.Data = data
		in.send(p)
	}
	send(text[:5], true, ReservedTag)
	r := in.mustRecv()
	if r.Opcode() != OpTextResp || r.Final() || len(r.Data) != 0 || r.TTT() == ReservedTag {
		t.Fatalf("ack of a partial request: %v F=%v len %d TTT %#x", r.Opcode(), r.Final(), len(r.Data), r.TTT())
	}
	send(text[5:], false, r.TTT())
	r = in.mustRecv()
	if r.Opcode() != OpTextResp || !r.Final() || !bytes.Contains(r.Data, []byte("TargetName="+ftIQN)) {
		t.Fatalf("answer: %v F=%v %q", r.Opcode(), r.Final(), r.Data)
	}
}

func TestReinstateOnlyConnectionKeepsSession(t *testing.T) {
	env := newFTEnv(t, nil)
	a := ftDial(t, env.addr)
	a.mustLogin(loginOpts{})
	a.ready()
	b := ftDial(t, env.addr)
	b.cmdSN = a.cmdSN
	b.mustLogin(loginOpts{tsih: a.tsih, cid: 0}) // same CID: replaces a
	if b.tsih != a.tsih {
		t.Fatalf("TSIH %d, want %d", b.tsih, a.tsih)
	}
	a.expectClosed()
	if r := b.exec(cdbTUR, false, nil, 0); r.status != scsi.StatusGood {
		t.Fatalf("TUR on the reinstated connection: %v", r.status)
	}
}

func TestWriteWithDigestsAndDataOutDigestError(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{keys: []KV{{"HeaderDigest", "CRC32C"}, {"DataDigest", "CRC32C"},
		{"ImmediateData", "No"}, {"InitialR2T", "Yes"}, {"MaxRecvDataSegmentLength", "1024"}}})
	if !in.dig.Header || !in.dig.Data {
		t.Skipf("target did not negotiate digests: %v", in.neg)
	}
	in.ready()
	data := ftPattern(8*512+0, 11)
	if r := in.exec(cdbWrite10(40, 8), false, data, uint32(len(data))); r.status != scsi.StatusGood {
		t.Fatalf("write: %v", r.status)
	}
	if !bytes.Equal(env.backend.bytes(40*512, 48*512), data) {
		t.Fatal("backend does not hold the written data")
	}

	// Now break the data digest of one Data-Out: Reject, then CHECK
	// CONDITION once the sequence is complete; nothing written.
	before := env.backend.bytes(60*512, 62*512)
	p := in.scsiCmd(cdbWrite10(60, 2), false, true, 1024)
	in.send(p)
	r2t := in.mustRecv()
	if r2t.Opcode() != OpR2T {
		t.Fatalf("got %v", r2t.Opcode())
	}
	d := NewPDU(OpDataOut)
	d.SetFinal(true)
	d.SetITT(p.ITT())
	d.SetTTT(r2t.TTT())
	d.Data = ftPattern(1024, 12)
	wire := d.Encode(in.dig)
	wire[len(wire)-1] ^= 0x55
	if _, err := in.nc.Write(wire); err != nil {
		t.Fatal(err)
	}
	if r := in.mustRecv(); r.Opcode() != OpReject || r.BHS[2] != rejectDataDigest {
		t.Fatalf("got %v reason %#x, want data digest Reject", r.Opcode(), r.BHS[2])
	}
	r := in.mustRecv()
	if r.Opcode() != OpSCSIResponse || r.ITT() != p.ITT() || scsi.Status(r.BHS[3]) != scsi.StatusCheckCondition {
		t.Fatalf("got %v status %#x, want CHECK CONDITION", r.Opcode(), r.BHS[3])
	}
	if !bytes.Equal(env.backend.bytes(60*512, 62*512), before) {
		t.Fatal("data that failed its digest was written")
	}
	in.ready()
}
