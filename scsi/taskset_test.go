package scsi

import (
	"context"
	"runtime"
	"sync"
	"testing"
)

// gatedBackend blocks every write at offset 0 until release is closed and
// logs the order in which reads and writes complete.
type gatedBackend struct {
	*memBackend
	entered chan struct{}
	release chan struct{}
	mu      sync.Mutex
	log     []string
}

func newGated(blocks int64) *gatedBackend {
	return &gatedBackend{memBackend: newMemBackend(blocks * 512), entered: make(chan struct{}, 1), release: make(chan struct{})}
}

func (g *gatedBackend) note(s string) {
	g.mu.Lock()
	g.log = append(g.log, s)
	g.mu.Unlock()
}

func (g *gatedBackend) WriteAt(p []byte, off int64) (int, error) {
	if off == 0 {
		g.entered <- struct{}{}
		<-g.release
	}
	n, err := g.memBackend.WriteAt(p, off)
	g.note("write")
	return n, err
}

func (g *gatedBackend) ReadAt(p []byte, off int64) (int, error) {
	n, err := g.memBackend.ReadAt(p, off)
	g.note("read")
	return n, err
}

func gatedDevice(t *testing.T) (*Device, *LU, *gatedBackend) {
	g := newGated(64)
	lu, err := NewLU(g, LUConfig{})
	if err != nil {
		t.Fatal(err)
	}
	d := NewDevice(DeviceConfig{})
	if err := d.AddLU(0, lu); err != nil {
		t.Fatal(err)
	}
	return d, lu, g
}

func exec(d *Device, n *Nexus, attr TaskAttr, tag uint32, cdb, data []byte) *Response {
	return d.Execute(context.Background(), &Command{Nexus: n, CDB: cdb, Attr: attr, Tag: tag, Data: data, DataInLen: 512, DataOutLen: uint32(len(data))})
}

// async runs a command in a goroutine and returns its response channel.
func async(d *Device, n *Nexus, attr TaskAttr, tag uint32, cdb, data []byte) chan *Response {
	ch := make(chan *Response, 1)
	go func() { ch <- exec(d, n, attr, tag, cdb, data) }()
	return ch
}

// waitTasks yields until the LU's task set holds n tasks.
func waitTasks(lu *LU, n int) {
	for lu.tasks.count() != n {
		runtime.Gosched()
	}
}

// waitAborted yields until n tasks of the LU's task set are marked
// aborted (and still running).
func waitAborted(lu *LU, n int) {
	for {
		lu.tasks.mu.Lock()
		c := 0
		for _, e := range lu.tasks.active {
			if e.aborted {
				c++
			}
		}
		lu.tasks.mu.Unlock()
		if c >= n {
			return
		}
		runtime.Gosched()
	}
}

func TestTaskAttributes(t *testing.T) {
	d, lu, g := gatedDevice(t)
	n := testNexus(0)
	clearUA(d, n)

	// A SIMPLE write blocks in the backend.
	a := async(d, n, TaskSimple, 1, cdb10(opWrite10, 0, 0, 1), make([]byte, 512))
	<-g.entered
	// An ORDERED read must wait for it.
	b := async(d, n, TaskOrdered, 2, cdb10(opRead10, 0, 5, 1), nil)
	waitTasks(lu, 2)
	// A newer SIMPLE read must wait for the ORDERED one.
	c := async(d, n, TaskSimple, 3, cdb10(opRead10, 0, 6, 1), nil)
	waitTasks(lu, 3)
	for i := 0; i < 100; i++ {
		runtime.Gosched()
	}
	// HEAD OF QUEUE runs at once, while the others are still held.
	wantGood(t, exec(d, n, TaskHeadOfQueue, 4, cdb10(opRead10, 0, 7, 1), nil))
	select {
	case r := <-b:
		t.Fatalf("ORDERED task completed before the older task: %v", r.Status)
	case r := <-c:
		t.Fatalf("SIMPLE task passed an ORDERED one: %v", r.Status)
	default:
	}
	close(g.release)
	wantGood(t, <-a)
	wantGood(t, <-b)
	wantGood(t, <-c)
	g.mu.Lock()
	defer g.mu.Unlock()
	want := []string{"read", "write", "read", "read"} // HOQ, A, B, C
	if len(g.log) != len(want) {
		t.Fatalf("log %v", g.log)
	}
	for i := range want {
		if g.log[i] != want[i] {
			t.Fatalf("backend order %v, want %v", g.log, want)
		}
	}
}

func TestSimpleTasksRunConcurrently(t *testing.T) {
	d, _, g := gatedDevice(t)
	n := testNexus(0)
	clearUA(d, n)
	a := async(d, n, TaskSimple, 1, cdb10(opWrite10, 0, 0, 1), make([]byte, 512))
	<-g.entered
	// Would block forever if SIMPLE tasks were serialised.
	wantGood(t, exec(d, n, TaskSimple, 2, cdb10(opRead10, 0, 9, 1), nil))
	close(g.release)
	wantGood(t, <-a)
}

func TestAbortTaskWaitingBehindOrdered(t *testing.T) {
	d, lu, g := gatedDevice(t)
	n := testNexus(0)
	clearUA(d, n)
	a := async(d, n, TaskOrdered, 1, cdb10(opWrite10, 0, 0, 1), make([]byte, 512))
	<-g.entered
	b := async(d, n, TaskSimple, 2, cdb10(opRead10, 0, 5, 1), nil)
	waitTasks(lu, 2)
	if got := d.AbortTask(n, 0, 2); got != TMFComplete {
		t.Fatalf("AbortTask = %d", got)
	}
	if r := <-b; r.Status != StatusTaskAborted {
		t.Fatalf("aborted task ended with %v", r.Status)
	}
	if got := d.AbortTask(n, 0, 99); got != TMFTaskNotExist {
		t.Fatalf("AbortTask of unknown tag = %d", got)
	}
	if got := d.AbortTask(n, 9, 1); got != TMFLUNNotExist {
		t.Fatalf("AbortTask on absent LUN = %d", got)
	}
	close(g.release)
	wantGood(t, <-a)
	if lu.tasks.count() != 0 {
		t.Fatal("task set not empty")
	}
}

func TestLUNResetWaitsForRunningTask(t *testing.T) {
	d, lu, g := gatedDevice(t)
	n, other := testNexus(0), testNexus(1)
	clearUA(d, n)
	clearUA(d, other)
	a := async(d, other, TaskSimple, 1, cdb10(opWrite10, 0, 0, 1), make([]byte, 512))
	<-g.entered
	done := make(chan TMFResponse, 1)
	go func() { done <- d.LUNReset(n, 0) }()
	// The reset cannot complete while the task is inside the backend.
	waitAborted(lu, 1)
	select {
	case <-done:
		t.Fatal("LUN RESET returned while an affected task was still running")
	default:
	}
	close(g.release)
	if r := <-a; r.Status != StatusTaskAborted {
		t.Fatalf("task ended with %v, want TASK ABORTED", r.Status)
	}
	if got := <-done; got != TMFComplete {
		t.Fatalf("LUNReset = %d", got)
	}
	// Every nexus, the one that asked included, sees BUS DEVICE RESET.
	wantSense(t, run(d, other, make([]byte, 6), nil, 0), KeyUnitAttention, ASCBusDeviceReset)
	wantSense(t, run(d, n, make([]byte, 6), nil, 0), KeyUnitAttention, ASCBusDeviceReset)
	wantGood(t, run(d, n, make([]byte, 6), nil, 0))
}

func TestClearTaskSetAndNexusLoss(t *testing.T) {
	d, lu, g := gatedDevice(t)
	n, other, third := testNexus(0), testNexus(1), testNexus(2)
	for _, x := range []*Nexus{n, other, third} {
		clearUA(d, x)
	}
	a := async(d, other, TaskOrdered, 1, cdb10(opWrite10, 0, 0, 1), make([]byte, 512))
	<-g.entered
	b := async(d, n, TaskSimple, 7, cdb10(opRead10, 0, 3, 1), nil)
	waitTasks(lu, 2)
	go func() {
		// Release the blocked write once CLEAR TASK SET has marked it.
		waitAborted(lu, 1)
		close(g.release)
	}()
	if got := d.ClearTaskSet(n, 0); got != TMFComplete {
		t.Fatalf("ClearTaskSet = %d", got)
	}
	if r := <-a; r.Status != StatusTaskAborted {
		t.Fatalf("other nexus's task: %v", r.Status)
	}
	if r := <-b; r.Status != StatusTaskAborted {
		t.Fatalf("own task: %v", r.Status)
	}
	wantSense(t, run(d, other, make([]byte, 6), nil, 0), KeyUnitAttention, ASCCommandsClearedByAnother)
	wantGood(t, run(d, third, make([]byte, 6), nil, 0)) // had no task
	wantGood(t, run(d, n, make([]byte, 6), nil, 0))

	// Nexus loss forgets the nexus: it starts again with POWER ON.
	lu.addUA(n.Key(), ASCModeParametersChanged)
	d.NexusLost(n)
	wantSense(t, run(d, n, make([]byte, 6), nil, 0), KeyUnitAttention, ASCPowerOnReset)
	wantGood(t, run(d, n, make([]byte, 6), nil, 0))

	// TARGET RESET: every nexus gets BUS DEVICE RESET.
	if got := d.TargetReset(n); got != TMFComplete {
		t.Fatalf("TargetReset = %d", got)
	}
	wantSense(t, run(d, third, make([]byte, 6), nil, 0), KeyUnitAttention, ASCBusDeviceReset)
	wantSense(t, run(d, n, make([]byte, 6), nil, 0), KeyUnitAttention, ASCBusDeviceReset)
	wantGood(t, run(d, n, make([]byte, 6), nil, 0))
}

func TestCancelledContextAbortsWaitingTask(t *testing.T) {
	d, lu, g := gatedDevice(t)
	n := testNexus(0)
	clearUA(d, n)
	a := async(d, n, TaskOrdered, 1, cdb10(opWrite10, 0, 0, 1), make([]byte, 512))
	<-g.entered
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan *Response, 1)
	go func() {
		ch <- d.Execute(ctx, &Command{Nexus: n, CDB: cdb10(opRead10, 0, 1, 1), Tag: 2})
	}()
	waitTasks(lu, 2)
	cancel()
	if r := <-ch; r.Status != StatusTaskAborted {
		t.Fatalf("cancelled task: %v", r.Status)
	}
	close(g.release)
	wantGood(t, <-a)
}
