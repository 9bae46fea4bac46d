// Command hatgt is the one binary of a hatgt node.
//
//	hatgt serve --dev                 one node, one file-backed LUN, no config
//	hatgt serve --config hatgt.conf   the targets and LUNs a config file declares
//	hatgt status | target | lun | acl | chap | join | leave | node
//	                                  cluster management over the admin API
//
// main parses flags, runs the CLI and wires the packages together; it owns
// nothing else. A cluster node's runtime is package agent (agent.New, Run);
// the single-node "serve --dev" / "serve --config" runtime still lives in
// node.go until it joins agent too. Every error a user can cause
// ends in one line that says what to fix and a non-zero exit status.
package main
