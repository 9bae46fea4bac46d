package cluster

import (
	"encoding/json"
	"fmt"
)

// CommandVersion is the payload version every command is written with. Apply
// accepts versions 1..CommandVersion of each type.
const CommandVersion = 1

// Command types.
const (
	CmdNodeRegister   = "node.register"
	CmdNodeHealth     = "node.health"
	CmdNodeRemove     = "node.remove"
	CmdTargetCreate   = "target.create"
	CmdTargetDelete   = "target.delete"
	CmdLUNCreate      = "lun.create"
	CmdLUNDelete      = "lun.delete"
	CmdLUNSetOwner    = "lun.set_owner"
	CmdLUNSetInSync   = "lun.set_in_sync"
	CmdLUNSetProgress = "lun.set_progress"
	CmdLUNAddCopy     = "lun.add_copy"
	CmdLUNSetGens     = "lun.set_generations"
	CmdACLAdd         = "acl.add"
	CmdACLRemove      = "acl.remove"
	CmdCHAPSet        = "chap.set"
	CmdCHAPClear      = "chap.clear"
	CmdCopyReport     = "copy.report" // CopiesReport, report.go
)

// Command is the envelope of every Raft log entry: a type, the version of its
// payload's encoding, and the payload.
type Command struct {
	Type    string          `json:"type"`
	Version int             `json:"version"`
	Payload json.RawMessage `json:"payload"`
}

// NewCommand wraps payload in an envelope of the current version.
func NewCommand(typ string, payload any) (Command, error) {
	b, err := json.Marshal(payload)
	if err != nil {
		return Command{}, fmt.Errorf("cluster: encode %s: %w", typ, err)
	}
	return Command{Type: typ, Version: CommandVersion, Payload: b}, nil
}

// Encode returns the log entry bytes of c.
func (c Command) Encode() []byte {
	b, _ := json.Marshal(c) // a struct of strings, an int and raw JSON: cannot fail
	return b
}

// DecodeCommand parses a log entry.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	if err := json.Unmarshal(b, &c); err != nil {
		return Command{}, errf(ErrBadCommand, "malformed command: %v", err)
	}
	return c, nil
}

// Payloads, one per command type.

// NodeRegister adds a node or updates its addresses; it is recorded alive.
type NodeRegister struct {
	Node NodeInfo `json:"node"`
}

// NodeHealth records the health the leader saw for a node.
type NodeHealth struct {
	ID     string `json:"id"`
	Health string `json:"health"`
}

// NodeRemove removes a node and its copies. A LUN it owned gets a new owner
// from its in-sync set and a new epoch.
type NodeRemove struct {
	ID string `json:"id"`
}

// TargetCreate creates an empty target.
type TargetCreate struct {
	IQN   string `json:"iqn"`
	Alias string `json:"alias,omitempty"`
}

// TargetDelete deletes a target that has no LUNs.
type TargetDelete struct {
	IQN string `json:"iqn"`
}

// LUNCreate creates a LUN. Placement must already be chosen (State.Place),
// by the leader, before the command is proposed.
type LUNCreate struct {
	LUN LUN `json:"lun"`
}

// LUNDelete deletes a LUN.
type LUNDelete struct {
	IQN string `json:"iqn"`
	LUN uint64 `json:"lun"`
}

// LUNSetOwner moves ownership to a node of the in-sync set and bumps the
// epoch. Epoch must be the LUN's current epoch (compare and set).
type LUNSetOwner struct {
	IQN   string `json:"iqn"`
	LUN   uint64 `json:"lun"`
	Owner string `json:"owner"`
	Epoch uint64 `json:"epoch"`
}

// LUNSetInSync adds a copy to, or removes it from, a LUN's in-sync set.
// Epoch must be the LUN's current epoch, so that a change decided under an
// older owner is refused. The owner cannot leave the in-sync set, and only
// a node of the placement can join it.
type LUNSetInSync struct {
	IQN    string `json:"iqn"`
	LUN    uint64 `json:"lun"`
	Epoch  uint64 `json:"epoch"`
	Node   string `json:"node"`
	InSync bool   `json:"in_sync"`
	// ID, when set, must be the LUN's ID: a proposal for a LUN that was
	// deleted and created again under the same number is refused
	// (ErrUnknownLUN), even at an equal epoch.
	ID uint64 `json:"id,omitempty"`
	// Generation, with InSync, records the copy's generation (32 hex
	// digits) as it joins — after a full copy, a new one — or, for a
	// copy in sync already, records it alone.
	Generation string `json:"generation,omitempty"`
}

// LUNSetGenerations records the generations of copies of a LUN (node to
// 32 hex digits) and clears FreshCopies: the owner of Epoch proposes it
// before it serves, for the copies it named (a new LUN's, or its own copy
// of a LUN from before identities). Epoch must be the LUN's current
// epoch, ID its ID, every node one of the placement.
type LUNSetGenerations struct {
	IQN         string            `json:"iqn"`
	LUN         uint64            `json:"lun"`
	ID          uint64            `json:"id"`
	Epoch       uint64            `json:"epoch"`
	Generations map[string]string `json:"generations"`
}

// LUNAddCopy places a new copy of a LUN on Node, out of sync (its owner
// gives it a full copy, then it joins the in-sync set): the leader proposes
// it when a LUN has fewer copies than its replicas (after "hatgt node
// remove"). Epoch must be the LUN's current epoch, ID its ID; Node must be
// an alive node without a copy.
type LUNAddCopy struct {
	IQN   string `json:"iqn"`
	LUN   uint64 `json:"lun"`
	ID    uint64 `json:"id"`
	Epoch uint64 `json:"epoch"`
	Node  string `json:"node"`
}

// LUNSetProgress records the resync progress of Node's copy of a LUN, as
// its owner reports it. Epoch must be the LUN's current epoch (compare and
// set, like LUNSetInSync), ID (when set) the LUN's ID, and Node a node of
// the placement. Counts are non-negative, RegionsDone at most RegionsTotal.
type LUNSetProgress struct {
	IQN          string  `json:"iqn"`
	LUN          uint64  `json:"lun"`
	ID           uint64  `json:"id,omitempty"`
	Epoch        uint64  `json:"epoch"`
	Node         string  `json:"node"`
	RegionsTotal int64   `json:"regions_total"`
	RegionsDone  int64   `json:"regions_done"`
	BytesCopied  int64   `json:"bytes_copied"`
	RateBps      float64 `json:"rate_bps,omitempty"`
	ETAMillis    int64   `json:"eta_ms,omitempty"`
	Done         bool    `json:"done,omitempty"`
}

// ACLChange adds or removes one initiator name of a target's ACL.
type ACLChange struct {
	IQN       string `json:"iqn"`
	Initiator string `json:"initiator"`
}

// CHAPSet sets a target's CHAP credentials.
type CHAPSet struct {
	IQN  string `json:"iqn"`
	CHAP CHAP   `json:"chap"`
}

// CHAPClear removes a target's CHAP credentials.
type CHAPClear struct {
	IQN string `json:"iqn"`
}
