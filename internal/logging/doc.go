// Package logging gives a hatgt process one log format. Everything a node
// logs goes through one log/slog handler (New: text or JSON, one record
// per line), including what the libraries log in their own ways:
//
//   - hashicorp/raft and the cluster package log through an hclog.Logger:
//     HCLog returns one that writes through the node's slog logger;
//   - memberlist writes standard-library log lines ("2026/12/05 07:48:41
//     [DEBUG] memberlist: ..."): the io.Writer of HCLog(...).StandardWriter
//     takes the level from the "[LEVEL]" prefix and drops the timestamp;
//   - anything else that uses the standard library's default logger goes
//     through slog.SetDefault, which the caller sets.
//
// So every line has the same shape and the same attributes: time, level,
// msg, then the node's own (node=ID), then component= (the hclog name,
// e.g. cluster.raft) and the record's own.
//
// Levels keep their meaning: hclog's Trace is LevelTrace (below Debug,
// written "TRACE"), Debug is Debug, and so on; a record below the handler's
// level is dropped before anything is formatted.
//
// An hclog argument whose key the handler already writes (time, level,
// msg, component, or one of the attributes given to HCLog, such as node)
// is renamed to NAME_KEY (raft's own "node" becomes raft_node); one that
// repeats a given attribute with the same value (the cluster package adds
// node=ID to its logger) is dropped, so a key appears once per line.
//
// The package imports the standard library and go-hclog only, so that the
// binary and package agent can both use it.
package logging
