package agent

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/hatgt/hatgt/config"
	"github.com/hatgt/hatgt/scsi"
)

// Reloading the configuration file of a running node (SIGHUP).
//
// What a reload changes: targets added (their LUNs opened) and removed
// (their sessions closed, their LUNs flushed and closed); LUNs added to
// and removed from a running target; every target's login rules (Alias,
// InitiatorAllow, CHAP, login keys, initiators.allow/deny), which apply to
// logins from then on while the sessions already logged in carry on; and
// discovery CHAP. What it does not: Portal lines, and the settings of a
// LUN that stays (Path, Size, IOMode, ...): those take a restart, and a
// reload that changes them says so and keeps them as they run.
//
// A reload is all or nothing: every LUN it adds is opened before anything
// changes, and when one fails to open, the others are closed again and the
// node runs on as before.

// reloadFile reads the configuration file at path and applies it. Every
// outcome is logged: the file's errors (the running configuration then
// stays), its warnings, what changed.
func (n *Single) ReloadFile(path string) {
	n.log.Info("SIGHUP: reloading the configuration", "file", path)
	cfg, err := config.ParseFile(path)
	if err != nil {
		var list config.ErrorList
		if errors.As(err, &list) {
			for _, e := range list {
				n.log.Error("reload: " + e.Error())
			}
		} else {
			n.log.Error("reload: " + err.Error())
		}
		n.log.Error("reload failed: the file has errors; the running configuration stays", "file", path)
		return
	}
	for _, w := range cfg.Warnings {
		n.log.Warn("reload: config: " + w.Error())
	}
	if err := n.reload(cfg); err != nil {
		n.log.Error("reload failed; the running configuration stays", "err", err)
	}
}

// reloadSummary counts what a reload changed, for its log line.
type reloadSummary struct {
	targetsAdded, targetsRemoved, lunsAdded, lunsRemoved int
}

// newLUN is a LUN a reload opened, to be exposed at commit.
type newLUN struct {
	target string
	number uint64
	lu     *scsi.LU
}

// reload applies cfg to the running node (see the top of this file).
func (n *Single) reload(cfg *config.Config) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	old := n.cfg
	// running is cfg as it will run: with the running portals, and the
	// running settings of LUNs that stay.
	running := *cfg
	running.Targets = slices.Clone(cfg.Targets)
	if !slices.Equal(old.Portals, cfg.Portals) {
		n.log.Warn("reload: Portal lines changed; portals are opened at start only, restart hatgt to apply them",
			"running", old.Portals, "file", cfg.Portals)
		running.Portals = old.Portals
	}
	oldTargets := map[string]config.Target{}
	for _, t := range old.Targets {
		oldTargets[t.Name] = t
	}
	newTargets := map[string]bool{}
	for _, t := range cfg.Targets {
		newTargets[t.Name] = true
	}

	// Prepare: open every LUN the reload adds.
	var opened []lunKey
	var added []newLUN
	newDevices := map[string]*scsi.Device{}
	fail := func(err error) error {
		for _, k := range opened {
			n.closeStore(k)
		}
		return err
	}
	for i := range running.Targets {
		t := &running.Targets[i]
		ot, kept := oldTargets[t.Name]
		if !kept {
			newDevices[t.Name] = scsi.NewDevice(scsi.DeviceConfig{Logger: n.log.With("target", t.Name)})
		}
		t.LUNs = slices.Clone(t.LUNs)
		for j, l := range t.LUNs {
			if kept {
				if ol, ok := findLUN(ot.LUNs, l.Number); ok {
					if !sameLUNLine(ol, l) {
						n.log.Warn("reload: the settings of a running LUN change at restart only (or remove the Lun line, reload, put it back, reload); it runs as before",
							"target", t.Name, "lun", l.Number, "line", l.Line)
						t.LUNs[j] = ol
					}
					continue
				}
			}
			if holder, busy := n.pathOpen(l.Path); busy {
				return fail(fmt.Errorf("target %s LUN %d: Path %s is still served as %s: a file moves to another LUN "+
					"in two reloads (remove it from the old one, reload, add it to the new one, reload) or at restart", t.Name, l.Number, l.Path, holder))
			}
			lu, err := n.openLUN(t.Name, l)
			if err != nil {
				return fail(fmt.Errorf("target %s LUN %d: %w", t.Name, l.Number, err))
			}
			opened = append(opened, lunKey{t.Name, l.Number})
			added = append(added, newLUN{target: t.Name, number: l.Number, lu: lu})
		}
	}

	// Commit: nothing below fails for lack of a resource.
	var sum reloadSummary
	var errs []error
	n.srv.SetDiscoveryCHAP(discoveryCHAP(&running))
	for _, ot := range old.Targets {
		if newTargets[ot.Name] {
			continue
		}
		n.log.Info("reload: removing target; its sessions are closed", "target", ot.Name)
		if err := n.srv.RemoveTarget(ot.Name); err != nil {
			errs = append(errs, err)
		}
		for _, l := range ot.LUNs {
			errs = append(errs, n.closeStore(lunKey{ot.Name, l.Number}))
		}
		delete(n.devices, ot.Name)
		sum.targetsRemoved++
	}
	for _, t := range running.Targets {
		ot, kept := oldTargets[t.Name]
		if !kept {
			continue
		}
		dev := n.devices[t.Name]
		for _, ol := range ot.LUNs {
			if _, ok := findLUN(t.LUNs, ol.Number); !ok {
				n.log.Info("reload: removing LUN", "target", t.Name, "lun", ol.Number)
				dev.RemoveLU(ol.Number)
				errs = append(errs, n.closeStore(lunKey{t.Name, ol.Number}))
				sum.lunsRemoved++
			}
		}
		if err := n.srv.UpdateTarget(nodeTargetConfig(&running, t, nil)); err != nil {
			errs = append(errs, err)
		}
	}
	for _, a := range added {
		dev := n.devices[a.target]
		if dev == nil {
			dev = newDevices[a.target]
		} else {
			n.log.Info("reload: adding LUN", "target", a.target, "lun", a.number)
			sum.lunsAdded++
		}
		if err := dev.AddLU(a.number, a.lu); err != nil {
			errs = append(errs, err)
		}
	}
	for _, t := range running.Targets {
		dev, isNew := newDevices[t.Name]
		if !isNew {
			continue
		}
		if err := n.srv.AddTarget(nodeTargetConfig(&running, t, dev)); err != nil {
			errs = append(errs, err)
			continue
		}
		n.devices[t.Name] = dev
		n.log.Info("reload: serving new target", "target", t.Name, "luns", len(t.LUNs))
		sum.targetsAdded++
	}
	n.cfg = &running
	n.log.Info("configuration reloaded", "targets", len(running.Targets),
		"targets_added", sum.targetsAdded, "targets_removed", sum.targetsRemoved,
		"luns_added", sum.lunsAdded, "luns_removed", sum.lunsRemoved)
	return errors.Join(errs...)
}

// pathOpen reports whether a running LUN has path open, and which.
func (n *Single) pathOpen(path string) (string, bool) {
	for _, st := range n.stores {
		if filepath.Clean(st.path) == filepath.Clean(path) {
			return st.name, true
		}
	}
	return "", false
}

func findLUN(luns []config.LUN, number uint64) (config.LUN, bool) {
	for _, l := range luns {
		if l.Number == number {
			return l, true
		}
	}
	return config.LUN{}, false
}

// sameLUNLine reports whether two LUN lines describe the same LUN (their line
// numbers aside).
func sameLUNLine(a, b config.LUN) bool {
	a.Line, b.Line = 0, 0
	return a == b
}
