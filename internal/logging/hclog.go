package logging

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// ComponentKey is the attribute holding an hclog logger's name.
const ComponentKey = "component"

// HCLog returns an hclog.Logger named name that writes every record
// through l's handler. attrs are key, value pairs that l already carries
// (what was given to l.With, such as "node", ID): an hclog argument with
// one of those keys and the same value is left out, one with another value
// is renamed (see the package comment). Its level is l's; SetLevel does
// nothing.
func HCLog(l *slog.Logger, name string, attrs ...any) hclog.Logger {
	carried := map[string]any{}
	for i := 0; i+1 < len(attrs); i += 2 {
		if k, ok := attrs[i].(string); ok {
			carried[k] = attrs[i+1]
		}
	}
	return &hcLogger{h: l.Handler(), name: name, carried: carried}
}

// hcLogger is the hclog.Logger of HCLog. It is immutable: With and Named
// return new ones.
type hcLogger struct {
	h       slog.Handler
	name    string
	carried map[string]any
	implied []any // With's arguments, in order
}

var _ hclog.Logger = (*hcLogger)(nil)

// slogLevel maps hclog's levels to slog's; ok is false for Off.
func slogLevel(l hclog.Level) (_ slog.Level, ok bool) {
	switch l {
	case hclog.Trace:
		return LevelTrace, true
	case hclog.Debug:
		return slog.LevelDebug, true
	case hclog.Warn:
		return slog.LevelWarn, true
	case hclog.Error:
		return slog.LevelError, true
	case hclog.Off:
		return 0, false
	}
	return slog.LevelInfo, true // Info, NoLevel
}

func (g *hcLogger) Log(level hclog.Level, msg string, args ...any) {
	lv, ok := slogLevel(level)
	if !ok || !enabled(g.h, lv) {
		return
	}
	r := slog.NewRecord(time.Now(), lv, msg, 0)
	if g.name != "" {
		r.AddAttrs(slog.String(ComponentKey, g.name))
	}
	seen := map[string]bool{}
	r.AddAttrs(g.attrs(g.implied, seen)...)
	r.AddAttrs(g.attrs(args, seen)...)
	_ = g.h.Handle(context.Background(), r)
}

// bareKey makes an attribute key a bare word in both formats: raft logs
// some keys with spaces ("backoff time"), which the text format would quote
// (key=value readers, our own test among them, stop there).
func bareKey(k string) string {
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r == '=' || r == '"' {
			return '_'
		}
		return r
	}, k)
}

// reserved are the keys every record has already.
var reserved = map[string]bool{slog.TimeKey: true, slog.LevelKey: true, slog.MessageKey: true, ComponentKey: true}

// attrs turns hclog's alternating key, value arguments into attributes:
// values printable in either format, keys that repeat the carried
// attributes dropped or renamed, a key seen before on the line renamed.
func (g *hcLogger) attrs(args []any, seen map[string]bool) []slog.Attr {
	var out []slog.Attr
	for i := 0; i < len(args); i += 2 {
		var key string
		var val any
		if i+1 >= len(args) {
			// hclog's convention for an odd argument count.
			key, val = "EXTRA_VALUE_AT_END", args[i]
		} else {
			k, ok := args[i].(string)
			if !ok {
				k = fmt.Sprint(args[i])
			}
			key, val = k, args[i+1]
		}
		key = bareKey(key)
		val = printable(val)
		if cv, ok := g.carried[key]; ok && fmt.Sprint(cv) == fmt.Sprint(val) {
			continue
		}
		if _, ok := g.carried[key]; ok || reserved[key] || seen[key] {
			key = g.prefix() + "_" + key
		}
		seen[key] = true
		out = append(out, slog.Any(key, val))
	}
	return out
}

// prefix is the last part of the logger's name ("raft" for cluster.raft),
// which renamed keys start with.
func (g *hcLogger) prefix() string {
	if i := strings.LastIndexByte(g.name, '.'); i >= 0 {
		return g.name[i+1:]
	}
	if g.name == "" {
		return "lib"
	}
	return g.name
}

// printable makes values that the JSON handler would write badly (an
// error marshals as {}) or hclog would format specially into strings.
func printable(v any) any {
	switch x := v.(type) {
	case nil:
		return nil
	case error:
		return x.Error()
	case hclog.Format:
		if len(x) == 0 {
			return ""
		}
		if f, ok := x[0].(string); ok {
			return fmt.Sprintf(f, x[1:]...)
		}
		return fmt.Sprint(x...)
	case hclog.Hex:
		return fmt.Sprintf("0x%x", int(x))
	case hclog.Octal:
		return fmt.Sprintf("0%o", int(x))
	case hclog.Binary:
		return fmt.Sprintf("0b%b", int(x))
	case hclog.Quote:
		return string(x)
	case time.Time, time.Duration, string, bool, int, int8, int16, int32, int64,
		uint, uint8, uint16, uint32, uint64, float32, float64, slog.Value, slog.LogValuer:
		return v
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprintf("%+v", v)
}

func (g *hcLogger) Trace(msg string, args ...any) { g.Log(hclog.Trace, msg, args...) }
func (g *hcLogger) Debug(msg string, args ...any) { g.Log(hclog.Debug, msg, args...) }
func (g *hcLogger) Info(msg string, args ...any)  { g.Log(hclog.Info, msg, args...) }
func (g *hcLogger) Warn(msg string, args ...any)  { g.Log(hclog.Warn, msg, args...) }
func (g *hcLogger) Error(msg string, args ...any) { g.Log(hclog.Error, msg, args...) }

func (g *hcLogger) IsTrace() bool { return enabled(g.h, LevelTrace) }
func (g *hcLogger) IsDebug() bool { return enabled(g.h, slog.LevelDebug) }
func (g *hcLogger) IsInfo() bool  { return enabled(g.h, slog.LevelInfo) }
func (g *hcLogger) IsWarn() bool  { return enabled(g.h, slog.LevelWarn) }
func (g *hcLogger) IsError() bool { return enabled(g.h, slog.LevelError) }

func (g *hcLogger) ImpliedArgs() []any { return append([]any(nil), g.implied...) }

func (g *hcLogger) With(args ...any) hclog.Logger {
	c := *g
	c.implied = append(append([]any(nil), g.implied...), args...)
	if len(c.implied)%2 == 1 {
		// hclog keeps pairs; a lone value ends the list, as in Log.
		c.implied = append(c.implied[:len(c.implied)-1], "EXTRA_VALUE_AT_END", c.implied[len(c.implied)-1])
	}
	return &c
}

func (g *hcLogger) Name() string { return g.name }

func (g *hcLogger) Named(name string) hclog.Logger {
	c := *g
	if c.name != "" {
		c.name += "." + name
	} else {
		c.name = name
	}
	return &c
}

func (g *hcLogger) ResetNamed(name string) hclog.Logger {
	c := *g
	c.name = name
	return &c
}

// SetLevel does nothing: the level is the slog handler's.
func (g *hcLogger) SetLevel(hclog.Level) {}

func (g *hcLogger) GetLevel() hclog.Level {
	for _, l := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if sl, _ := slogLevel(l); enabled(g.h, sl) {
			return l
		}
	}
	return hclog.Off
}

func (g *hcLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(g.StandardWriter(opts), "", 0)
}

// StandardWriter returns a writer that logs each line written to it as a
// record. With opts.InferLevels the level comes from a "[DEBUG]",
// "[INFO]", "[WARN]", "[ERR]" or "[ERROR]", "[TRACE]" prefix (after a
// standard-library timestamp with InferLevelsWithTimestamp, which is
// dropped: the record has its own time); opts.ForceLevel overrides it;
// else the level is Info. A "NAME: " prefix repeating the logger's own
// name (memberlist's "memberlist: ") is dropped too.
func (g *hcLogger) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	w := &stdWriter{g: g}
	if opts != nil {
		w.infer, w.withTime, w.force = opts.InferLevels, opts.InferLevelsWithTimestamp, opts.ForceLevel
	}
	return w
}
