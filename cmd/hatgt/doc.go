// Command hatgt is the one binary of a hatgt node.
//
//	hatgt serve --dev                 one node, one file-backed LUN, no config
//	hatgt serve --config hatgt.conf   the targets and LUNs a config file declares
//	hatgt status | target | lun | acl | chap | join | leave | node
//	                                  cluster management over the admin API
//
// main parses flags, runs the CLI and wires the packages together; it owns
// nothing else. The running node is package agent: agent.New and Run for a
// cluster node, agent.StartSingle for "serve --dev" / "serve --config". Every error a user can cause
// ends in one line that says what to fix and a non-zero exit status.
package main
