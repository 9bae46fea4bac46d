//go:build hatgt_broken_dirtyclear

package replication

// brokenDirtyClear: see broken_dirtyclear.go. THIS BUILD IS BROKEN ON PURPOSE.
const brokenDirtyClear = true
