//go:build !hatgt_broken_resvlocal

package agent

// brokenResvLocal is true only in a deliberately broken build (build tag
// hatgt_broken_resvlocal), which the fault simulator (test/sim) must
// catch: each node keeps its LUs' persistent reservations in memory, as
// before they lived in Raft.
const brokenResvLocal = false
