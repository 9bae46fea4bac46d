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
// Parse reads a whole file and reports every problem it finds at once, each
// as "FILE:LINE: what is wrong (and what to write instead)". Parsing is pure:
// it does not look at the file system; whether a Path exists is checked when
// the node opens it.
//
// Invariants of a Config returned without error: at least one target; target
// names are valid iSCSI names (RFC 3720 section 3.2.6.3: iqn., eui. or naa.
// form), unique and lower case; LUN numbers are unique within a target; every
// LUN has a Path, a Type, a Sector of 512 or 4096, an IOMode, and a Size that
// is zero (take the size of the existing file or device) or a positive
// multiple of Sector; Paths are unique across the file; CHAP secrets are at
// least 12 bytes and an OutgoingUser secret differs from the IncomingUser
// secret (RFC 7143 section 12.1.3).
package config
