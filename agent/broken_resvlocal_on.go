//go:build hatgt_broken_resvlocal

package agent

// brokenResvLocal: see broken_resvlocal.go. THIS BUILD IS BROKEN ON PURPOSE.
const brokenResvLocal = true
