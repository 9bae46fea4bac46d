# lib.sh - helpers for guest scripts of test/vm/run-vm.sh (busybox sh).
# Sourced before the guest script, in the same shell. The contract of each
# helper is in its comment; run-vm.sh's header lists them too.
#
# Environment set by run-vm.sh: KI_PORTALS (the portals as the guest reaches
# them, "10.0.2.2:PORT ...", in -p order), KI_HOST_PORTALS (the same portals
# as given with -p), KI_INITIATOR (this initiator's IQN), KI_SHARE (1 when
# /ki/share is the host's -s directory), and every -e NAME=VALUE.

# ki_log MSG...: print MSG with the guest's uptime.
ki_log() { echo "[ki $(cut -d' ' -f1 /proc/uptime)] $*"; }

# ki_set NAME VALUE: node option applied by every later ki_login (e.g.
# node.session.timeo.replacement_timeout 5); KI_NODE_SETTINGS= forgets them.
KI_NODE_SETTINGS=
ki_set() { KI_NODE_SETTINGS="$KI_NODE_SETTINGS $1=$2"; }

# ki_targets PORTAL: the IQNs a SendTargets discovery on PORTAL returns, one a
# line, without writing node records (the target answers with its own
# portal addresses, which mean nothing here: log in with ki_login).
ki_targets() {
	iscsiadm -m discovery -t sendtargets -p "$1" -o nonpersistent | awk '{print $2}' | sort -u
}

# ki_login IQN PORTAL: create the node record, apply the ki_set options, log
# in. Status of the login.
ki_login() {
	local kv
	iscsiadm -m node -o new -T "$1" -p "$2" >/dev/null || return 1
	for kv in $KI_NODE_SETTINGS; do
		iscsiadm -m node -T "$1" -p "$2" -o update -n "${kv%%=*}" -v "${kv#*=}" || return 1
	done
	iscsiadm -m node -T "$1" -p "$2" --login
}

# ki_login_all [IQN]: log in to IQN (default: every target SendTargets
# reports) through every portal of KI_PORTALS. Fails if any login failed.
ki_login_all() {
	local p t targets rc=0
	for p in $KI_PORTALS; do
		targets=${1:-$(ki_targets "$p")}
		[ -n "$targets" ] || { echo "ki_login_all: no targets on $p"; rc=1; continue; }
		for t in $targets; do ki_login "$t" "$p" || rc=1; done
	done
	return $rc
}

# ki_logout_all: log out of every session.
ki_logout_all() { iscsiadm -m node --logoutall=all; }

# ki_iscsi_disks: the sd disks (sda ...) whose SCSI host is an iSCSI session.
ki_iscsi_disks() {
	local d
	for d in /sys/block/sd*; do
		[ -e "$d" ] || continue
		case "$(readlink -f "$d/device")" in *session*) echo "${d##*/}" ;; esac
	done
}

# ki_wait_disks N [SECS]: wait (default 30 s) for N iSCSI disks and for udev
# to settle; print the disks; fail if fewer than N appeared.
ki_wait_disks() {
	local n=$1 limit=$((${2:-30} * 10)) i=0
	while [ "$(ki_iscsi_disks | wc -l)" -lt "$n" ] && [ $i -lt $limit ]; do sleep 0.1; i=$((i + 1)); done
	udevadm settle -t 30 2>/dev/null
	ki_iscsi_disks
	[ "$(ki_iscsi_disks | wc -l)" -ge "$n" ]
}

# ki_multipath_start [SECS]: write /etc/multipath.conf unless the script
# wrote its own (every path, friendly names mpatha...), start multipathd,
# wait (default 30 s) for a map, print `multipath -ll`; fail without a map.
ki_multipath_start() {
	local limit=$((${1:-30} * 5)) i=0
	[ -e /etc/multipath.conf ] || cat >/etc/multipath.conf <<'EOF'
defaults {
	user_friendly_names yes
	find_multipaths no
	enable_foreign "^$"
	polling_interval 2
}
blacklist {
	devnode "^(ram|loop|fd|md|sr|scd|st|vd)"
}
EOF
	pidof multipathd >/dev/null || multipathd -s || return 1
	while [ -z "$(multipath -l -v1 2>/dev/null)" ] && [ $i -lt $limit ]; do sleep 0.2; i=$((i + 1)); done
	udevadm settle -t 30 2>/dev/null
	multipath -ll
	[ -n "$(multipath -l -v1 2>/dev/null)" ]
}

# ki_request NAME [TEXT]: leave the file NAME (holding TEXT) in /ki/share for
# the host, which acts on it and deletes it. Status 0 once it is there.
# Written under another name, then renamed: qemu's 9p server stats a file
# right after creating it, so a host that deletes NAME the moment it appears
# can make a plain `: >/ki/share/NAME` fail with ENOENT although the host got
# the request (and in sh a failed redirection of `:` ends the script).
ki_request() {
	local tmp="/ki/share/.ki-request.$$.$1"
	echo "${2:-}" >"$tmp" && mv -f "$tmp" "/ki/share/$1"
}
