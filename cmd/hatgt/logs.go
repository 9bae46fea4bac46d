package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/hatgt/hatgt/internal/logging"
)

// reportFailure writes the error that ends a serve command: one "hatgt:
// ..." line, or, with --log-format json, one error record, so that every
// line a JSON-logging node writes on stderr is JSON.
func reportFailure(stderr io.Writer, log *slog.Logger, format logging.Format, err error) {
	if format == logging.JSON && log != nil {
		log.Error("hatgt: " + err.Error())
		return
	}
	fmt.Fprintf(stderr, "hatgt: %v\n", err)
}

// parseFlags parses args into fs. A bad flag comes back as one error that
// names the help command (the caller prints it once: no usage dump around
// it); -h or --help prints fs.Usage and returns flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, args []string, help string) error {
	usage, out := fs.Usage, fs.Output()
	fs.Usage = func() {}
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.Usage = usage
	fs.SetOutput(out)
	switch {
	case errors.Is(err, flag.ErrHelp):
		if usage != nil {
			usage()
		} else {
			fs.PrintDefaults()
		}
		return err
	case err != nil:
		return fmt.Errorf("%v (run \"%s\" for the flags)", err, help)
	}
	return nil
}
