package target

import (
	"context"
	"sync"
	"testing"

	"github.com/hatgt/hatgt/scsi"
)

// blockingDevice holds every command with CDB byte 0 == 0xff until its
// context is cancelled or release is closed; it records the task
// management calls it gets.
type blockingDevice struct {
	*scsi.Device
	started chan uint32
	release chan struct{}

	mu     sync.Mutex
	aborts []uint32
	lost   int
}

func (d *blockingDevice) Execute(ctx context.Context, cmd *scsi.Command) *scsi.Response {
	if len(cmd.CDB) > 0 && cmd.CDB[0] == 0xff {
		d.started <- cmd.Tag
		select {
		case <-ctx.Done():
			return &scsi.Response{Status: scsi.StatusTaskAborted}
		case <-d.release:
			return &scsi.Response{Status: scsi.StatusGood}
		}
	}
	return d.Device.Execute(ctx, cmd)
}

func (d *blockingDevice) AbortTask(n *scsi.Nexus, lun uint64, tag uint32) scsi.TMFResponse {
	d.mu.Lock()
	d.aborts = append(d.aborts, tag)
	d.mu.Unlock()
	return d.Device.AbortTask(n, lun, tag)
}

func (d *blockingDevice) NexusLost(n *scsi.Nexus) {
	d.mu.Lock()
	d.lost++
	d.mu.Unlock()
	d.Device.NexusLost(n)
}

func newBlockingTarget(t *testing.T, env *ftEnv) (*blockingDevice, string) {
	d := &blockingDevice{Device: env.dev, started: make(chan uint32, 16), release: make(chan struct{})}
	const name = ftIQN + "-blocking"
	if err := env.srv.addTarget(TargetConfig{Name: name, Device: env.dev}, d); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		select {
		case <-d.release:
		default:
			close(d.release)
		}
	})
	return d, name
}

func TestAbortExecutingTask(t *testing.T) {
	env := newFTEnv(t, nil)
	dev, name := newBlockingTarget(t, env)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{target: name})
	in.ready()
	p := in.scsiCmd([]byte{0xff}, false, false, 0)
	in.send(p)
	if tag := <-dev.started; tag != p.ITT() {
		t.Fatalf("device started tag %#x, want %#x", tag, p.ITT())
	}
	tmf := in.tmf(tmfAbortTask, p.ITT(), p.CmdSN())
	r := in.mustRecv()
	// The TMF response comes after the task is gone, and the task itself
	// is never answered.
	if r.Opcode() != OpTaskMgmtResp || r.ITT() != tmf.ITT() || r.BHS[2] != byte(scsi.TMFComplete) {
		t.Fatalf("got %v ITT %#x response %d, want the TMF response", r.Opcode(), r.ITT(), r.BHS[2])
	}
	_, before := in.ping(nil)
	for _, q := range before {
		if q.ITT() == p.ITT() {
			t.Fatalf("%v for the aborted task", q.Opcode())
		}
	}
	dev.mu.Lock()
	aborts := dev.aborts
	dev.mu.Unlock()
	if len(aborts) != 1 || aborts[0] != p.ITT() {
		t.Fatalf("device AbortTask calls %v", aborts)
	}
}

func TestAbortTaskSetLeavesOtherSessions(t *testing.T) {
	env := newFTEnv(t, nil)
	dev, name := newBlockingTarget(t, env)
	a := ftDial(t, env.addr)
	a.mustLogin(loginOpts{target: name})
	a.ready()
	b := ftDial(t, env.addr)
	b.mustLogin(loginOpts{target: name, isid: &[6]byte{0x80, 0, 0, 0, 0, 0x42}})
	b.ready()
	pa := a.scsiCmd([]byte{0xff}, false, false, 0)
	a.send(pa)
	<-dev.started
	pb := b.scsiCmd([]byte{0xff}, false, false, 0)
	b.send(pb)
	<-dev.started

	a.tmf(tmfAbortTaskSet, ReservedTag, a.cmdSN)
	if r := a.mustRecv(); r.Opcode() != OpTaskMgmtResp || r.BHS[2] != 0 {
		t.Fatalf("got %v response %d", r.Opcode(), r.BHS[2])
	}
	// b's task is untouched: it completes when released.
	close(dev.release)
	r := b.mustRecv()
	if r.Opcode() != OpSCSIResponse || r.ITT() != pb.ITT() || r.BHS[3] != byte(scsi.StatusGood) {
		t.Fatalf("other session: got %v ITT %#x status %#x", r.Opcode(), r.ITT(), r.BHS[3])
	}
}

func TestSessionEndTellsDevice(t *testing.T) {
	env := newFTEnv(t, nil)
	dev, name := newBlockingTarget(t, env)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{target: name})
	in.ready()
	p := in.scsiCmd([]byte{0xff}, false, false, 0)
	in.send(p)
	<-dev.started
	in.nc.Close() // connection loss: the only connection, so the session ends
	// A new login with the same ISID works once the old session is gone.
	again := ftDial(t, env.addr)
	again.mustLogin(loginOpts{target: name})
	again.ready()
	env.srv.mu.Lock()
	n := len(env.srv.sessions)
	env.srv.mu.Unlock()
	dev.mu.Lock()
	lost := dev.lost
	dev.mu.Unlock()
	if n != 1 || lost != 1 {
		t.Fatalf("%d sessions, NexusLost called %d times; want 1 and 1", n, lost)
	}
}
