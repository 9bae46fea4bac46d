//go:build !hatgt_broken_nolease

package agent

// skipLeaseCheck is true only in a deliberately broken build (build tag
// hatgt_broken_nolease), which the fault simulator must catch: the owner
// lease is then checked by the control loop's poller alone, not on the IO
// path.
const skipLeaseCheck = false
