//go:build hatgt_broken_nolease

package agent

// skipLeaseCheck: see lease_check.go. THIS BUILD IS BROKEN ON PURPOSE.
const skipLeaseCheck = true
