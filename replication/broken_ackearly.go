//go:build !hatgt_broken_ackearly

package replication

// brokenAckEarly is true only in a deliberately broken build (build tag
// hatgt_broken_ackearly), which the fault simulator (test/sim) must catch:
// the owner acknowledges a write once its own copy took it, without waiting for the mirrors' answers.
const brokenAckEarly = false
