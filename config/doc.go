// Package config reads the hatgt node configuration file, hatgt.conf.
//
// The format follows the iSCSI Enterprise Target's ietd.conf, so that an
// administrator who knows IET can read it at a glance: one directive per
// line, a Target line opens a block that runs to the next Target line, and
// logical units are described by a Lun line with comma-separated Key=Value
// parameters:
//
//	# global settings come before the first Target
//	Portal 0.0.0.0:3260
//
//	Target iqn.2026-11.io.example:storage.disk1
//	    Alias disk1
//	    Lun 0 Path=/srv/iscsi/disk1.img,Type=fileio,Size=10G,Sector=512,IOMode=wb
//	    Lun 1 Path=/dev/sdb,Type=blockio,IOMode=wt
//	    InitiatorAllow iqn.1993-08.org.debian:01:host1
//	    IncomingUser alice secret-of-16-b
//	    OutgoingUser target tgt-secret-12b
//
// A real IET configuration loads as it is: the global IncomingUser and
// OutgoingUser lines are discovery CHAP, a Target block's iSCSI login keys
// (MaxConnections, InitialR2T, HeaderDigest, ...) are the target's values
// in negotiation (Target.Login), ScsiId and ScsiSN are a LUN's identity,
// and IET's keys that hatgt cannot honour (Wthreads, QueuedCommands,
// NOPInterval, Type=nullio, iSNSServer, ...) are a warning with their line
// (iet.go). IET's initiators.allow and initiators.deny files are read when
// the global InitiatorsAllowFile/InitiatorsDenyFile directives name them
// (initiators.go).
//
// Parse reads a whole file and reports every problem it finds at once, each
// as "FILE:LINE: what is wrong (and what to write instead)". Parse is pure:
// it does not look at the file system; whether a Path exists is checked when
// the node opens it. ParseFile also reads the initiators files.
//
// Invariants of a Config returned without error: at least one target; target
// names are valid iSCSI names (RFC 3720 section 3.2.6.3: iqn., eui. or naa.
// form), unique and lower case; LUN numbers are unique within a target; every
// LUN has a Path, a Type, a Sector of 512 or 4096, an IOMode, and a Size that
// is zero (take the size of the existing file or device) or a positive
// multiple of Sector; Paths are unique across the file; CHAP secrets are at
// least 12 bytes, IncomingUser names are unique within their block, an
// OutgoingUser comes with at least one IncomingUser and its secret differs
// from every IncomingUser secret of its block (RFC 7143 section 12.1.3);
// login keys are within RFC 7143's ranges.
package config
