package logging

import (
	"strings"

	"github.com/hashicorp/go-hclog"
)

// stdWriter is hcLogger.StandardWriter: standard-library log lines in,
// records out.
type stdWriter struct {
	g        *hcLogger
	infer    bool
	withTime bool
	force    hclog.Level
}

func (w *stdWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(string(p), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		level := hclog.Info
		switch {
		case w.force != hclog.NoLevel:
			_, line = levelPrefix(trimStdTime(line))
			level = w.force
		case w.infer:
			if w.withTime {
				line = trimStdTime(line)
			}
			level, line = levelPrefix(line)
		}
		if own := w.g.prefix() + ":"; strings.HasPrefix(line, own) {
			line = strings.TrimSpace(line[len(own):])
		}
		w.g.Log(level, line)
	}
	return len(p), nil
}

// levelPrefix takes the "[LEVEL]" prefix off line; without one the level is
// Info.
func levelPrefix(line string) (hclog.Level, string) {
	for _, p := range []struct {
		tag   string
		level hclog.Level
	}{{"[TRACE]", hclog.Trace}, {"[DEBUG]", hclog.Debug}, {"[INFO]", hclog.Info},
		{"[WARN]", hclog.Warn}, {"[WARNING]", hclog.Warn}, {"[ERR]", hclog.Error}, {"[ERROR]", hclog.Error}} {
		if rest, ok := strings.CutPrefix(line, p.tag); ok {
			return p.level, strings.TrimSpace(rest)
		}
	}
	return hclog.Info, line
}

// trimStdTime drops a leading standard-library timestamp: "2006/01/02 ",
// "15:04:05" with optional ".000000" fractions, each part optional in
// that order, as log.LstdFlags and log.Lmicroseconds write them.
func trimStdTime(line string) string {
	rest := line
	if len(rest) >= 11 && isDigits(rest[0:4]) && rest[4] == '/' && isDigits(rest[5:7]) && rest[7] == '/' && isDigits(rest[8:10]) && rest[10] == ' ' {
		rest = rest[11:]
	}
	if len(rest) >= 8 && isDigits(rest[0:2]) && rest[2] == ':' && isDigits(rest[3:5]) && rest[5] == ':' && isDigits(rest[6:8]) {
		rest = rest[8:]
		if len(rest) > 1 && rest[0] == '.' {
			i := 1
			for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
				i++
			}
			rest = rest[i:]
		}
	}
	return strings.TrimLeft(rest, " ")
}

func isDigits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
