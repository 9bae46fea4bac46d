package target

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Login scripts (testdata/login/*.txt) are golden scenarios in the style of
// etcd-io/raft's datadriven tests: each exchange is a Login Request the
// initiator sends and the Login Response the login phase must answer.
//
//	# comment
//	setup chap=USER:SECRET mutual=USER:SECRET immediatedata=no maxburst=N
//
//	> T 0->1 [C] [tsih=N] [cid=N]
//	InitiatorName=...
//	< T 0->1 status=0x0000 statsn=500 tsih=0 [done] [error]
//	AuthMethod=None
//
// A request line is "> " with the T and C flags, the stages ("CSG->NSG",
// or just "CSG" without T) and optional header fields; its key=value lines
// follow. The response is rendered the same way after "< ". Exchanges are
// separated by blank lines. Run with -rewrite-login to regenerate the expected
// responses after a deliberate change, then review the diff.

var rewriteScripts = flag.Bool("rewrite-login", false, "rewrite the expected responses of testdata/login scripts")

type scriptExchange struct {
	reqLine string
	reqKVs  []string
}

func TestLoginScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/login/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no login scripts: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			got := runLoginScript(t, string(b))
			if got == string(b) {
				return
			}
			if *rewriteScripts {
				if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			t.Errorf("%s: responses differ (run with -rewrite-login to update)\n--- got\n%s", file, got)
		})
	}
}

// runLoginScript runs a script and returns it with the responses the login
// phase actually gave.
func runLoginScript(t *testing.T, script string) string {
	var out strings.Builder
	env := newFakeLoginEnv()
	var l *loginPhase
	lines := strings.Split(strings.TrimRight(script, "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			out.WriteString(line + "\n")
		case strings.HasPrefix(line, "setup"):
			applyScriptSetup(t, env, line)
			out.WriteString(line + "\n")
		case strings.HasPrefix(line, "> "):
			if l == nil {
				l = newLoginPhase(env)
				l.rand = &seqReader{}
			}
			ex := scriptExchange{reqLine: line}
			out.WriteString(line + "\n")
			for i+1 < len(lines) && lines[i+1] != "" && !strings.HasPrefix(lines[i+1], "<") {
				i++
				ex.reqKVs = append(ex.reqKVs, lines[i])
				out.WriteString(lines[i] + "\n")
			}
			// Skip the expected response: it is regenerated.
			for i+1 < len(lines) && lines[i+1] != "" {
				i++
			}
			out.WriteString(runScriptExchange(t, l, ex))
		default:
			t.Fatalf("script line %d: unexpected %q", i+1, line)
		}
	}
	return out.String()
}

func applyScriptSetup(t *testing.T, env *fakeLoginEnv, line string) {
	tgt := env.targets[testTarget]
	for _, f := range strings.Fields(line)[1:] {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "chap", "mutual":
			user, secret, ok := strings.Cut(v, ":")
			if !ok {
				t.Fatalf("setup %s=%s: want USER:SECRET", k, v)
			}
			if tgt.CHAP == nil {
				tgt.CHAP = &CHAPConfig{}
			}
			if k == "chap" {
				tgt.CHAP.User, tgt.CHAP.Secret = user, secret
			} else {
				tgt.CHAP.MutualUser, tgt.CHAP.MutualSecret = user, secret
			}
		case "immediatedata":
			env.sess.ImmediateData = v == "yes"
		case "maxburst":
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("setup maxburst=%s", v)
			}
			env.sess.MaxBurstLength = uint32(n)
		default:
			t.Fatalf("setup: unknown %q", f)
		}
	}
}

func runScriptExchange(t *testing.T, l *loginPhase, ex scriptExchange) string {
	var r loginReq
	for _, f := range strings.Fields(ex.reqLine)[1:] {
		switch {
		case f == "T":
			r.transit = true
		case f == "C":
			r.cont = true
		case strings.HasPrefix(f, "tsih="):
			n, _ := strconv.Atoi(f[5:])
			r.tsih = uint16(n)
		case strings.HasPrefix(f, "cid="):
			n, _ := strconv.Atoi(f[4:])
			r.cid = uint16(n)
		default:
			csg, nsg, _ := strings.Cut(f, "->")
			c, err1 := strconv.Atoi(csg)
			n, err2 := strconv.Atoi(nsg)
			if nsg == "" {
				n, err2 = 0, nil
			}
			if err1 != nil || err2 != nil {
				t.Fatalf("request line %q: bad field %q", ex.reqLine, f)
			}
			r.csg, r.nsg = uint8(c), uint8(n)
		}
	}
	for _, kv := range ex.reqKVs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			t.Fatalf("request pair %q without '='", kv)
		}
		r.kvs = append(r.kvs, KV{k, v})
	}
	if r.kvs == nil {
		r.data = []byte{}
	}
	resp, done, err := l.handle(r.pdu())
	if resp == nil {
		return fmt.Sprintf("< none error=%q\n", err)
	}
	tr, c, csg, nsg := respFlags(resp)
	var b strings.Builder
	b.WriteString("<")
	if tr {
		fmt.Fprintf(&b, " T %d->%d", csg, nsg)
	} else {
		fmt.Fprintf(&b, " %d", csg)
	}
	if c {
		b.WriteString(" C")
	}
	fmt.Fprintf(&b, " status=0x%04x statsn=%d tsih=%d", uint16(respStatus(resp)), resp.StatSN(), resp.U16(14))
	if done {
		b.WriteString(" done")
	}
	if err != nil {
		b.WriteString(" error")
	}
	b.WriteString("\n")
	kvs, perr := parseTextList(resp.Data)
	if perr != nil {
		t.Fatalf("response text: %v", perr)
	}
	for _, kv := range kvs {
		b.WriteString(kv.Key + "=" + kv.Value + "\n")
	}
	return b.String()
}
