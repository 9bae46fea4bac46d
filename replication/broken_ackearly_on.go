//go:build hatgt_broken_ackearly

package replication

// brokenAckEarly: see broken_ackearly.go. THIS BUILD IS BROKEN ON PURPOSE.
const brokenAckEarly = true
