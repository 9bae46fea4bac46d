package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The run state tells a starting node how its previous run ended. A node
// that stopped without a clean shutdown (killed, crashed) on a machine
// that rebooted since (another boot ID: a power loss, a kernel crash) may
// have lost writes its write-back disks held in their volatile caches:
// writes it acknowledged, which its in-sync mirrors still hold. Its copies
// of write-back LUNs are then suspect (reconcile_repl.go): as owner it hands
// such a LUN to an in-sync mirror; as a mirror it leaves the in-sync set;
// either way the owner compares the copy region by region before it counts
// as in sync again. A process killed on a machine that stayed up keeps
// what it wrote (the page cache, the device's cache): no copy is suspect.
const runStateFile = "run-state.json"

type runState struct {
	BootID string `json:"boot_id"`
	// Clean is set by a shutdown that flushed every LUN.
	Clean bool `json:"clean"`
}

// readBootID is the default Deps.BootID: the kernel's boot ID, new at
// every boot.
func readBootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// startRun reads how the previous run in dir ended and records this one
// as running (not clean) on boot bootID. It reports whether the previous
// run ended uncleanly across a reboot (unknown boot IDs count as another
// boot). A first start is not suspect.
func startRun(dir, bootID string) (suspect bool, err error) {
	path := filepath.Join(dir, runStateFile)
	var prev runState
	switch b, err := os.ReadFile(path); {
	case errors.Is(err, os.ErrNotExist):
		prev.Clean = true
	case err != nil:
		return false, fmt.Errorf("run state: %w", err)
	default:
		if json.Unmarshal(b, &prev) != nil {
			prev = runState{} // unreadable: assume the worst
		}
	}
	suspect = !prev.Clean && (prev.BootID == "" || bootID == "" || prev.BootID != bootID)
	return suspect, writeRunState(path, runState{BootID: bootID})
}

// endRun records a clean shutdown.
func endRun(dir, bootID string) error {
	return writeRunState(filepath.Join(dir, runStateFile), runState{BootID: bootID, Clean: true})
}

func writeRunState(path string, st runState) error {
	b, _ := json.Marshal(st)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("run state: %w", err)
	}
	if _, err = f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		if d, derr := os.Open(filepath.Dir(path)); derr == nil {
			err = d.Sync()
			d.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("run state: %w", err)
	}
	return nil
}
