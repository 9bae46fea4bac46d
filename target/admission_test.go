package target

import (
	"bytes"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/hatgt/hatgt/scsi"
)

// onlySession returns the server's one session.
func (env *ftEnv) onlySession(t *testing.T) *session {
	t.Helper()
	env.srv.mu.Lock()
	defer env.srv.mu.Unlock()
	if len(env.srv.sessions) != 1 {
		t.Fatalf("%d sessions, want 1", len(env.srv.sessions))
	}
	for _, ss := range env.srv.sessions {
		return ss
	}
	return nil
}

// waitNoSessions waits until the server has no session left; it fails the
// test when that has not happened after 10 s (a bound for "never", not a
// speed requirement).
func (env *ftEnv) waitNoSessions(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		env.srv.mu.Lock()
		n := len(env.srv.sessions)
		env.srv.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions still there after 10 s", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkReleased checks that an ended session holds nothing: no task, no
// window slot, no immediate slot, no write budget.
func checkReleased(t *testing.T, ss *session) {
	t.Helper()
	// Tasks finish asynchronously after the session ends (a command in a
	// device completes first); wait for them as Shutdown would.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := ss.admission()
		ss.mu.Lock()
		n := len(ss.tasks)
		ss.mu.Unlock()
		if st.liveTasks == 0 && st.bytes == 0 && st.waiting == 0 && n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("session still holds: %d tasks, %+v", n, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSequencerSlotsSlideOnRelease(t *testing.T) {
	q := newSequencer(10, 2)
	var ran []uint32
	run := func(sn uint32) func() { return func() { ran = append(ran, sn) } }
	if !q.submitTask(10, run(10)) || !q.submitTask(11, run(11)) || len(ran) != 2 {
		t.Fatalf("tasks in the window not delivered: %v", ran)
	}
	if exp, max := q.window(); exp != 12 || max != 11 {
		t.Fatalf("window [%d, %d] with two live tasks of two, want closed [12, 11]", exp, max)
	}
	if q.submitTask(12, run(12)) || q.submit(12, nil) {
		t.Fatal("command accepted by a closed window")
	}
	q.release()
	if exp, max := q.window(); exp != 12 || max != 12 {
		t.Fatalf("window [%d, %d] after one task completed, want [12, 12]", exp, max)
	}
	q.release()
	if exp, max := q.window(); exp != 12 || max != 13 {
		t.Fatalf("window [%d, %d] after both tasks completed, want [12, 13]", exp, max)
	}
	// A task ahead of a gap holds its slot while it waits.
	if !q.submitTask(13, run(13)) || len(ran) != 2 {
		t.Fatalf("CmdSN 13 refused or delivered before 12: %v", ran)
	}
	if live, peak := q.slots(); live != 1 || peak != 2 {
		t.Fatalf("live %d peak %d, want 1 and 2", live, peak)
	}
	// A command that is not a task frees its CmdSN at delivery; the task
	// after it keeps its slot.
	if !q.submit(12, nil) || len(ran) != 3 || ran[2] != 13 {
		t.Fatalf("gap filled, delivered %v", ran)
	}
	if exp, max := q.window(); exp != 14 || max != 14 {
		t.Fatalf("window [%d, %d], want [14, 14]", exp, max)
	}
	if live, _ := q.slots(); live != 1 {
		t.Fatalf("live %d, want 1", live)
	}
}

// TestSequencerWindowProperties drives the sequencer at random and checks
// that at most depth tasks are live and MaxCmdSN never decreases.
func TestSequencerWindowProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const depth = 5
	q := newSequencer(0xfffffff0, depth) // wraps
	held := 0
	_, lastMax := q.window()
	next := uint32(0xfffffff0)
	for i := 0; i < 20000; i++ {
		exp, max := q.window()
		switch r := rng.IntN(10); {
		case r < 5: // the next CmdSN, as a task or not
			task := rng.IntN(4) != 0
			var ok bool
			if task {
				ok = q.submitTask(next, func() { held++ })
			} else {
				ok = q.submit(next, nil)
			}
			if ok != snLessEq(next, max) {
				t.Fatalf("CmdSN %d with window [%d, %d]: accepted %v", next, exp, max, ok)
			}
			if ok {
				next++
			}
		case r < 8 && held > 0:
			held--
			q.release()
		default: // a CmdSN beyond MaxCmdSN, or an old one
			if q.submitTask(max+1+uint32(rng.IntN(3)), func() { held++ }) || q.submitTask(exp-1, func() { held++ }) {
				t.Fatal("CmdSN outside the window accepted")
			}
		}
		_, max = q.window()
		if !snLessEq(lastMax, max) {
			t.Fatalf("MaxCmdSN went down from %d to %d", lastMax, max)
		}
		lastMax = max
		if live, _ := q.slots(); live > depth || int(live) != held {
			t.Fatalf("live %d, held %d, depth %d", live, held, depth)
		}
	}
}

// TestWindowClosesUntilTasksComplete: MaxCmdSN advances as tasks complete,
// not as they are delivered, so an initiator cannot have more than the
// window's worth of tasks live.
func TestWindowClosesUntilTasksComplete(t *testing.T) {
	env := newFTEnv(t, func(c *ServerConfig) { c.CmdWindow = 4 })
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{keys: []KV{{"ImmediateData", "No"}, {"InitialR2T", "Yes"}}})
	in.ready()
	// Four writes wait for their data: the window is closed.
	var cmds []*PDU
	var r2ts []*PDU
	for i := 0; i < 4; i++ {
		p := in.scsiCmd(cdbWrite10(uint32(i), 1), false, true, 512)
		in.send(p)
		cmds = append(cmds, p)
		r := in.mustRecv()
		if r.Opcode() != OpR2T || r.ITT() != p.ITT() {
			t.Fatalf("got %v for ITT %#x, want an R2T for %#x", r.Opcode(), r.ITT(), p.ITT())
		}
		r2ts = append(r2ts, r)
	}
	if last := r2ts[3]; last.MaxCmdSN() != last.ExpCmdSN()-1 {
		t.Fatalf("window [%d, %d] with 4 live tasks of 4, want closed", last.ExpCmdSN(), last.MaxCmdSN())
	}
	// A fifth command is outside the window: ignored, no answer.
	extra := in.scsiCmd(cdbTUR, false, false, 0)
	in.send(extra)
	_, before := in.ping(nil)
	for _, p := range before {
		if p.ITT() == extra.ITT() {
			t.Fatalf("%v for a command beyond MaxCmdSN", p.Opcode())
		}
	}
	ss := env.onlySession(t)
	if st := ss.admission(); st.liveTasks != 4 || st.peakLiveTasks > 4 {
		t.Fatalf("live %d peak %d, want 4 and at most 4", st.liveTasks, st.peakLiveTasks)
	}
	// Completing one task opens one slot, in its own response.
	in.sendData(cmds[0].ITT(), r2ts[0].TTT(), ftPattern(512, 1), 0, 512)
	r := in.mustRecv()
	if r.Opcode() != OpSCSIResponse || r.ITT() != cmds[0].ITT() || r.BHS[3] != byte(scsi.StatusGood) {
		t.Fatalf("got %v ITT %#x status %#x", r.Opcode(), r.ITT(), r.BHS[3])
	}
	if r.MaxCmdSN() != r.ExpCmdSN() {
		t.Fatalf("window [%d, %d] after one of 4 tasks completed, want one slot", r.ExpCmdSN(), r.MaxCmdSN())
	}
	// The ignored CmdSN is free: a command with it now runs.
	again := in.scsiCmd(cdbTUR, false, false, 0)
	again.SetCmdSN(extra.CmdSN())
	in.cmdSN--
	in.send(again)
	if r := in.mustRecv(); r.Opcode() != OpSCSIResponse || r.ITT() != again.ITT() || r.BHS[3] != byte(scsi.StatusGood) {
		t.Fatalf("got %v ITT %#x status %#x, want GOOD for %#x", r.Opcode(), r.ITT(), r.BHS[3], again.ITT())
	}
	for i := 1; i < 4; i++ {
		in.sendData(cmds[i].ITT(), r2ts[i].TTT(), ftPattern(512, 1), 0, 512)
		if r := in.mustRecv(); r.Opcode() != OpSCSIResponse || r.ITT() != cmds[i].ITT() {
			t.Fatalf("got %v ITT %#x", r.Opcode(), r.ITT())
		}
	}
	pong, _ := in.ping(nil)
	if pong.MaxCmdSN()-pong.ExpCmdSN() != 3 {
		t.Fatalf("window [%d, %d] when idle, want 4 commands", pong.ExpCmdSN(), pong.MaxCmdSN())
	}
	if st := ss.admission(); st.liveTasks != 0 || st.peakLiveTasks != 4 || st.bytes != 0 {
		t.Fatalf("idle session: %+v", st)
	}
}

// immediateCmd builds an immediate SCSI Command (current CmdSN, not
// consumed).
func (in *initiator) immediateCmd(cdb []byte, read, write bool, edtl uint32) *PDU {
	p := in.scsiCmd(cdb, read, write, edtl)
	p.SetImmediate(true)
	in.cmdSN--
	return p
}

// TestImmediateTasksBounded: immediate commands bypass the window, so they
// have a bound of their own; one too many gets TASK SET FULL.
func TestImmediateTasksBounded(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{keys: []KV{{"ImmediateData", "No"}, {"InitialR2T", "Yes"}}})
	in.ready()
	w := in.immediateCmd(cdbWrite10(0, 1), false, true, 512)
	in.send(w)
	r2t := in.mustRecv()
	if r2t.Opcode() != OpR2T || r2t.ITT() != w.ITT() {
		t.Fatalf("got %v ITT %#x, want an R2T", r2t.Opcode(), r2t.ITT())
	}
	for i := 0; i < 3; i++ {
		tur := in.immediateCmd(cdbTUR, false, false, 0)
		in.send(tur)
		r := in.mustRecv()
		if r.Opcode() != OpSCSIResponse || r.ITT() != tur.ITT() || scsi.Status(r.BHS[3]) != scsi.StatusTaskSetFull {
			t.Fatalf("immediate command while one is in progress: %v ITT %#x status %#x, want TASK SET FULL", r.Opcode(), r.ITT(), r.BHS[3])
		}
	}
	// Non-immediate commands are not affected.
	if r := in.exec(cdbTUR, false, nil, 0); r.status != scsi.StatusGood {
		t.Fatalf("TUR: %v", r.status)
	}
	in.sendData(w.ITT(), r2t.TTT(), ftPattern(512, 3), 0, 512)
	if r := in.mustRecv(); r.Opcode() != OpSCSIResponse || r.ITT() != w.ITT() || r.BHS[3] != byte(scsi.StatusGood) {
		t.Fatalf("immediate write: %v status %#x", r.Opcode(), r.BHS[3])
	}
	tur := in.immediateCmd(cdbTUR, false, false, 0)
	in.send(tur)
	if r := in.mustRecv(); r.ITT() != tur.ITT() || r.BHS[3] != byte(scsi.StatusGood) {
		t.Fatalf("immediate TUR once the slot is free: %v status %#x", r.Opcode(), r.BHS[3])
	}
	if !bytes.Equal(env.backend.bytes(0, 512), ftPattern(512, 3)) {
		t.Fatal("immediate write did not land")
	}
}

// writeFlood sends n WRITE(10) commands of size bytes each (immediate and
// unsolicited data as negotiated) without waiting for anything, then
// answers R2Ts as they come until every command has its response. After
// every PDU it checks the session's counters against its limits. It
// returns the order in which the commands got their first R2T.
func writeFlood(t *testing.T, env *ftEnv, in *initiator, n int, size uint32, budget uint64) (firstR2T []int) {
	t.Helper()
	ss := env.onlySession(t)
	first := in.negNum("FirstBurstLength", 65536)
	immOK, unsolOK := in.negBool("ImmediateData", true), !in.negBool("InitialR2T", true)
	data := make([][]byte, n)
	byITT := map[uint32]int{}
	for i := 0; i < n; i++ {
		data[i] = ftPattern(int(size), byte(i))
		p := in.scsiCmd(cdbWrite10(uint32(i)*(size/512), uint16(size/512)), false, true, size)
		byITT[p.ITT()] = i
		var sent uint32
		if immOK {
			sent = min(size, first, in.targetMRDSL)
			p.Data = data[i][:sent]
		}
		end := min(first, size)
		if unsolOK && sent < end {
			p.SetFlags(p.Flags() &^ cmdFinal)
		} else {
			end = sent
		}
		in.send(p)
		in.sendData(p.ITT(), ReservedTag, data[i], sent, end-sent)
	}
	check := func() {
		st := ss.admission()
		if st.liveTasks > st.window || st.peakLiveTasks > st.window {
			t.Fatalf("live tasks %d (peak %d) beyond the window %d", st.liveTasks, st.peakLiveTasks, st.window)
		}
		if st.bytes > budget || st.peakBytes > budget || st.unsolBytes > st.unsolCap || st.grantBytes > st.grantCap {
			t.Fatalf("write buffers beyond the budget %d: %+v", budget, st)
		}
	}
	seen := map[int]bool{}
	for done := 0; done < n; {
		r := in.mustRecv()
		check()
		i, ok := byITT[r.ITT()]
		if !ok {
			t.Fatalf("%v for unknown ITT %#x", r.Opcode(), r.ITT())
		}
		switch r.Opcode() {
		case OpR2T:
			if !seen[i] {
				seen[i] = true
				firstR2T = append(firstR2T, i)
			}
			in.sendData(r.ITT(), r.TTT(), data[i], r.BufferOffset(), r.U32(offDesiredLen))
		case OpSCSIResponse:
			if r.BHS[3] != byte(scsi.StatusGood) {
				t.Fatalf("write %d: status %#x", i, r.BHS[3])
			}
			done++
		default:
			t.Fatalf("unexpected %v", r.Opcode())
		}
	}
	for i := 0; i < n; i++ {
		off := i * int(size)
		if !bytes.Equal(env.backend.bytes(off, off+int(size)), data[i]) {
			t.Fatalf("write %d did not land", i)
		}
	}
	_, _ = in.ping(nil)
	if st := ss.admission(); st.liveTasks != 0 || st.bytes != 0 || st.waiting != 0 {
		t.Fatalf("idle session still holds: %+v", st)
	}
	return firstR2T
}

// TestWriteBudgetHoldsR2TsUntilRoom: a write whose solicited data does not
// fit in the session's budget gets no R2T until enough writes complete;
// the budget is never exceeded and every write still completes.
func TestWriteBudgetHoldsR2TsUntilRoom(t *testing.T) {
	const size = 256 << 10
	for _, tc := range []struct {
		name string
		keys []KV
	}{
		{"solicited only", []KV{{"ImmediateData", "No"}, {"InitialR2T", "Yes"}}},
		{"immediate and unsolicited", []KV{{"ImmediateData", "Yes"}, {"InitialR2T", "No"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const window, firstBurst, budget = 8, 64 << 10, 1 << 20
			env := newFTEnv(t, func(c *ServerConfig) {
				c.CmdWindow = window
				c.MaxConnections = 1
				c.FirstBurstLength = firstBurst
				c.MaxBurstLength = size
				c.MaxCommandData = size
				c.MaxRecvDataSegmentLength = 16 << 10 // immediate data, then unsolicited Data-Out
				c.SessionWriteBudget = budget
			})
			in := ftDial(t, env.addr)
			in.mustLogin(loginOpts{keys: tc.keys})
			in.ready()
			st := env.onlySession(t).admission()
			unsol := uint64(0)
			if !in.negBool("InitialR2T", true) {
				unsol = firstBurst
			}
			fit := int(st.grantCap / (size - unsol)) // writes granted at once
			if fit < 1 || fit >= window {
				t.Fatalf("test setup: %d writes fit in %+v", fit, st)
			}
			order := writeFlood(t, env, in, window, size, budget)
			// The first R2Ts went to the writes that fit, in order; each
			// later one only after a write completed.
			for i, w := range order {
				if w != i {
					t.Fatalf("R2Ts in order %v, want arrival order", order)
				}
			}
			if st := env.onlySession(t).admission(); st.peakBytes > budget {
				t.Fatalf("peak %d bytes, budget %d", st.peakBytes, budget)
			}
		})
	}
}

// TestWriteBudgetSolicitsOnlyWhatFits checks the R2Ts a flood gets before
// anything completes: only the writes that fit.
func TestWriteBudgetSolicitsOnlyWhatFits(t *testing.T) {
	const size, budget = 256 << 10, 1 << 20
	env := newFTEnv(t, func(c *ServerConfig) {
		c.CmdWindow = 8
		c.MaxConnections = 1
		c.FirstBurstLength = 64 << 10
		c.MaxBurstLength = size
		c.MaxCommandData = size
		c.SessionWriteBudget = budget
	})
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{keys: []KV{{"ImmediateData", "No"}, {"InitialR2T", "Yes"}}})
	in.ready()
	var itts []uint32
	for i := 0; i < 8; i++ {
		p := in.scsiCmd(cdbWrite10(uint32(i)*512, 512), false, true, size)
		in.send(p)
		itts = append(itts, p.ITT())
	}
	_, got := in.ping(nil)
	want := int(budget / size) // no unsolicited data: the whole budget is for grants
	if len(got) != want {
		t.Fatalf("%d PDUs before the ping's answer, want %d R2Ts", len(got), want)
	}
	for i, r := range got {
		if r.Opcode() != OpR2T || r.ITT() != itts[i] {
			t.Fatalf("PDU %d: %v for ITT %#x, want an R2T for %#x", i, r.Opcode(), r.ITT(), itts[i])
		}
	}
	st := env.onlySession(t).admission()
	if st.waiting != 8-want || st.bytes != budget || st.liveTasks != 8 {
		t.Fatalf("counters %+v, want %d waiting and %d bytes", st, 8-want, budget)
	}
	in.nc.Close()
	env.waitNoSessions(t)
}

// TestAdmissionFlood300 is the review's scenario: one initiator sends 300
// WRITE(10) commands of 256 KiB back to back, ignoring MaxCmdSN, and never
// answers an R2T. The session holds at most a window of tasks and stays
// within its write budget. The heap growth is logged for the record
// (measured: 300 live tasks and +75 MiB before admission limits).
func TestAdmissionFlood300(t *testing.T) {
	for _, imm := range []uint32{0, 64 << 10} {
		env := newFTEnv(t, nil)
		in := ftDial(t, env.addr)
		in.mustLogin(loginOpts{keys: []KV{{"ImmediateData", map[bool]string{true: "Yes", false: "No"}[imm > 0]}, {"InitialR2T", "Yes"}}})
		in.ready()
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		heap0 := ms.HeapAlloc
		payload := make([]byte, imm)
		for i := 0; i < 300; i++ {
			p := in.scsiCmd(cdbWrite10(uint32(i%8)*512, 512), false, true, 256<<10)
			p.Data = payload
			in.send(p)
		}
		_, got := in.ping(nil)
		ss := env.onlySession(t)
		st := ss.admission()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		cfg := DefaultServerConfig()
		t.Logf("immediate data %d KiB: %d R2Ts, live tasks %d (peak %d, window %d), write buffers %d KiB (peak %d KiB, budget %d KiB), heap growth %.1f MiB",
			imm>>10, len(got), st.liveTasks, st.peakLiveTasks, st.window, st.bytes>>10, st.peakBytes>>10, cfg.SessionWriteBudget>>10,
			float64(int64(ms.HeapAlloc)-int64(heap0))/(1<<20))
		if st.window != cfg.CmdWindow || st.liveTasks != st.window || st.peakLiveTasks != st.window {
			t.Fatalf("live tasks %d (peak %d), want the window %d", st.liveTasks, st.peakLiveTasks, cfg.CmdWindow)
		}
		if len(got) != int(cfg.CmdWindow) {
			t.Fatalf("%d R2Ts, want one per task in the window (%d)", len(got), cfg.CmdWindow)
		}
		if st.peakBytes > cfg.SessionWriteBudget {
			t.Fatalf("peak write buffers %d, budget %d", st.peakBytes, cfg.SessionWriteBudget)
		}
		in.nc.Close()
		env.waitNoSessions(t)
		checkReleased(t, ss)
	}
}
