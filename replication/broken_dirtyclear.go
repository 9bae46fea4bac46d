//go:build !hatgt_broken_dirtyclear

package replication

// brokenDirtyClear is true only in a deliberately broken build (build tag
// hatgt_broken_dirtyclear), which the fault simulator (test/sim) must catch:
// a resync clears a region's dirty bit, durably, when it sends the region, before the copy made it durable.
const brokenDirtyClear = false
