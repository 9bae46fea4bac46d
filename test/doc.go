// Package test runs a built hatgt binary against real iSCSI clients
// (libiscsi's iscsi-ls and iscsi-inq, qemu-img) and against bad input. Tests
// that need a client skip with a message naming the Debian package when it
// is missing.
//
// The cluster tests start several real hatgt processes on their own
// loopback addresses. run-all.sh (what .ci/run and the README run) and
// conformance.sh (libiscsi's iscsi-test-cu) live here too.
package test
