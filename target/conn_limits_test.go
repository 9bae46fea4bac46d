package target

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// logBuf collects a server's log lines (text handler) for tests.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines returns the log lines that contain msg.
func (l *logBuf) lines(msg string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.b.String(), "\n") {
		if strings.Contains(line, msg) {
			out = append(out, line)
		}
	}
	return out
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// captureLog makes the server log into the returned buffer.
func captureLog(c *ServerConfig) *logBuf {
	lb := &logBuf{}
	c.Logger = slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return lb
}

// dialPipe connects a test initiator to the server over an in-memory pipe:
// nothing is buffered, so an initiator that does not read stops the
// target's writes at once.
func (env *ftEnv) dialPipe(t *testing.T) *initiator {
	t.Helper()
	a, b := net.Pipe()
	if !env.srv.startConn(a) {
		t.Fatal("server refused the connection")
	}
	t.Cleanup(func() { b.Close() })
	return &initiator{t: t, nc: b, br: bufio.NewReader(b), itt: 0x100, cmdSN: 1, targetMRDSL: 8192,
		isid: [6]byte{0x80, 0, 0, 0, 0, 1}}
}

// TestWriteTimeoutDropsInitiatorThatStopsReading: an initiator that stops
// reading loses its connection after WriteTimeout, and its tasks (writes
// waiting for data behind an unsent R2T, reads whose data cannot go out)
// are cleaned up: no task, slot or buffer is left.
func TestWriteTimeoutDropsInitiatorThatStopsReading(t *testing.T) {
	env := newFTEnv(t, func(c *ServerConfig) { c.WriteTimeout = 50 * time.Millisecond })
	in := env.dialPipe(t)
	in.mustLogin(loginOpts{keys: []KV{{"ImmediateData", "Yes"}, {"InitialR2T", "Yes"}}})
	ss := env.onlySession(t)
	var wire []byte
	for i := 0; i < 4; i++ {
		p := in.scsiCmd(cdbWrite10(uint32(i)*16, 16), false, true, 8192)
		p.Data = ftPattern(4096, byte(i))
		p.SetExpStatSN(in.expStatSN)
		wire = append(wire, p.Encode(in.dig)...)
	}
	for i := 0; i < 4; i++ {
		p := in.scsiCmd(cdbRead10(0, 128), true, false, 64<<10)
		p.SetExpStatSN(in.expStatSN)
		wire = append(wire, p.Encode(in.dig)...)
	}
	// The target may drop the connection before it has read all of it.
	in.nc.Write(wire)
	env.waitNoSessions(t)
	checkReleased(t, ss)
}

// TestDataOutTimeoutDropsConnection: a write that waits for Data-Out (an
// R2T unanswered, or unsolicited data announced and never sent) for
// DataOutTimeout ends its connection (error recovery level 0) with a log
// line naming the initiator and the task; nothing is left behind.
func TestDataOutTimeoutDropsConnection(t *testing.T) {
	for _, tc := range []struct {
		name        string
		keys        []KV
		unsolicited bool
	}{
		{"R2T unanswered", []KV{{"ImmediateData", "No"}, {"InitialR2T", "Yes"}}, false},
		{"unsolicited data never sent", []KV{{"ImmediateData", "No"}, {"InitialR2T", "No"}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs *logBuf
			env := newFTEnv(t, func(c *ServerConfig) {
				c.DataOutTimeout = 50 * time.Millisecond
				logs = captureLog(c)
			})
			in := ftDial(t, env.addr)
			in.mustLogin(loginOpts{keys: tc.keys})
			in.ready()
			ss := env.onlySession(t)
			p := in.scsiCmd(cdbWrite10(0, 8), false, true, 4096)
			if tc.unsolicited {
				p.SetFlags(p.Flags() &^ cmdFinal)
			}
			in.send(p)
			if !tc.unsolicited {
				if r := in.mustRecv(); r.Opcode() != OpR2T || r.ITT() != p.ITT() {
					t.Fatalf("got %v ITT %#x, want an R2T", r.Opcode(), r.ITT())
				}
			}
			in.expectClosed()
			env.waitNoSessions(t)
			checkReleased(t, ss)
			lines := logs.lines("no Data-Out within DataOutTimeout")
			if len(lines) != 1 {
				t.Fatalf("%d Data-Out timeout log lines, want 1:\n%s", len(lines), logs)
			}
			for _, want := range []string{"level=WARN", "initiator=" + ftInitiator, fmt.Sprintf("itt=%d", p.ITT()), fmt.Sprintf("cmdsn=%d", p.CmdSN())} {
				if !strings.Contains(lines[0], want) {
					t.Errorf("log line %q lacks %q", lines[0], want)
				}
			}
		})
	}
}
