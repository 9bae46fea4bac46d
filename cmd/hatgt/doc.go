// Command hatgt is the one binary of a hatgt node.
//
//	hatgt serve --dev                 one node, one file-backed LUN, no config
//	hatgt serve --config hatgt.conf   the targets and LUNs a config file declares
//	hatgt status | target | lun | acl | chap | join | leave | node
//	                                  cluster management over the admin API
//
// main wires the packages together and owns nothing else: target (iSCSI),
// scsi (device server), blockstore (backends), config (the file format) and
// cluster (Raft state, membership, admin API). Every error a user can cause
// ends in one line that says what to fix and a non-zero exit status.
package main
