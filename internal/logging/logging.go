package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
)

// Format is how records are written.
type Format string

// Formats.
const (
	// Text is log/slog's key=value text: time=... level=INFO msg=... k=v.
	Text Format = "text"
	// JSON is one JSON object per line: {"time":...,"level":"INFO","msg":...}.
	JSON Format = "json"
)

// LevelTrace is below slog.LevelDebug: hclog's Trace. Records at it are
// written with level TRACE.
const LevelTrace = slog.LevelDebug - 4

// ParseFormat reads a --log-format value: "text" or "json".
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case Text, JSON:
		return f, nil
	}
	return "", fmt.Errorf("--log-format %q: want text or json", s)
}

// ParseLevel reads a --log-level value: debug, info, warn or error (or
// trace: hclog's most verbose level, below debug).
func ParseLevel(s string) (slog.Level, error) {
	if s == "trace" || s == "TRACE" {
		return LevelTrace, nil
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// NewHandler returns the handler writing records at level or above to w
// in format f (an unknown format means Text).
func NewHandler(w io.Writer, f Format, level slog.Leveler) slog.Handler {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: replaceLevel}
	if f == JSON {
		return slog.NewJSONHandler(w, opts)
	}
	return slog.NewTextHandler(w, opts)
}

// New returns a logger over NewHandler(w, f, level).
func New(w io.Writer, f Format, level slog.Leveler) *slog.Logger {
	return slog.New(NewHandler(w, f, level))
}

// replaceLevel writes LevelTrace as TRACE instead of DEBUG-4, and a
// duration as text ("1.5s") in both formats (JSON would write nanoseconds).
func replaceLevel(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.LevelKey {
		if l, ok := a.Value.Any().(slog.Level); ok && l <= LevelTrace {
			return slog.String(slog.LevelKey, "TRACE")
		}
	}
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}

// enabled reports whether h takes records at level.
func enabled(h slog.Handler, level slog.Level) bool {
	return h.Enabled(context.Background(), level)
}
