#!/usr/bin/env bash
# run-vm.sh - boot a throwaway Linux VM that is a real Linux iSCSI initiator
# (open-iscsi + kernel iscsi_tcp, dm-multipath + multipathd, scsi_dh_alua,
# sg3-utils, udev) against iSCSI portals listening on this host's loopback,
# run a guest script in it, and exit with the script's status.
#
# USAGE (as root)
#   test/vm/run-vm.sh [options] -p 127.0.0.1:PORT [-p ...] GUEST_SCRIPT
#   test/vm/run-vm.sh --build-only | --check | --install-deps | -h
#
#   -p HOST:PORT  an iSCSI portal on this host, HOST in 127.0.0.0/8 (or
#                 localhost). Repeatable, order kept. The guest reaches it
#                 at 10.0.2.2:PORT; a PORT already taken by an earlier -p
#                 (the same portal twice: two paths) at 10.0.2.2:40000+.
#                 $KI_PORTALS in the guest is the list, in -p order.
#   -o FILE       the guest's console (default ./vm-console.log); the whole
#                 guest dmesg, read at the end, goes to FILE.dmesg
#   -t SECONDS    limit for the whole VM run (default 900)
#   -m MIB        guest memory (default 1024)
#   -c N          guest vCPUs (default 1)
#   -s DIR        share host DIR read-write at /ki/share in the guest (9p):
#                 results out, requests to the host (e.g. "restart the
#                 target") while the guest runs
#   -e NAME=VALUE export NAME to the guest script (repeatable);
#                 -e KI_INITIATOR=IQN changes the initiator's name
#   -k            kernel messages on the console (loglevel 7)
#   -q            don't copy the console to stdout while the VM runs
#   --rebuild     rebuild the cached guest first
#   --build-only  build the cached guest if missing or stale, then exit
#   --check       check the host packages and root, then exit
#   --install-deps  apt-get install the missing host packages, then exit
#
#   Env: HATGT_VM_CACHE (cache directory, default ~/.cache/hatgt-vm);
#   HATGT_VM_NET=host (diagnosis only: no namespace, no relays; the guest
#   reaches every port of this host and beyond, and a portal that is down
#   refuses connections as on a real network; one -p per port).
#
#   Exit status: the guest script's; 124 the VM hit -t; 125 the VM ended
#   without reporting a status (kernel panic, qemu error); 2 usage, setup or
#   missing-package error.
#
# THE GUEST SCRIPT is sourced by busybox sh (as root, in the guest's
# initramfs, cwd /tmp) after guest/lib.sh; its status (or `exit N`) becomes
# run-vm.sh's. Already running: udevd, iscsid. Loaded: iscsi_tcp, sd_mod, sg,
# dm_multipath (+ round-robin, service-time, queue-length), scsi_dh_alua.
# `modprobe` also finds the LIO target (target_core_mod, target_core_file,
# iscsi_target_mod) and scsi_debug. eth0 is 10.0.2.15/24. Helpers
# (guest/lib.sh): ki_log, ki_set NAME VALUE (node option for later logins),
# ki_targets PORTAL, ki_login IQN PORTAL, ki_login_all [IQN],
# ki_logout_all, ki_iscsi_disks, ki_wait_disks N [SECS],
# ki_multipath_start [SECS], ki_request NAME [TEXT] (a request file in
# /ki/share for the host: use it, not `: >/ki/share/NAME`, see lib.sh). Tools: iscsiadm iscsid multipath multipathd
# dmsetup kpartx udevadm, every sg3-utils program (sg_inq, sg_rtpg, sg_raw,
# sg_persist, sg_reset, ...), busybox (dd, cmp, blkdiscard, nc, ...).
# Discovery answers carry the target's own portal addresses (127.0.0.1:...),
# which mean nothing in the guest: log in with ki_login/ki_login_all.
#
# See test/vm/README.md for the network design, the cache, the packages and
# the timings.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${HATGT_VM_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/hatgt-vm}

die() { echo "run-vm.sh: $*" >&2; exit 2; }
log() { echo "run-vm.sh: $*" >&2; }

# --- host packages -----------------------------------------------------------
# command -> Debian package. Not installed by .ci/run: these VM tests are not
# part of CI. (apt-get, dpkg-deb, unshare, flock, setsid, ip and ss come with
# every Debian system: apt, dpkg, util-linux, iproute2.)
HOST_CMDS=(qemu-system-x86_64:qemu-system-x86 socat:socat cpio:cpio python3:python3
	gzip:gzip apt-get:apt dpkg-deb:dpkg unshare:util-linux flock:util-linux
	ip:iproute2)
HOST_FILES=(/usr/share/keyrings/debian-archive-keyring.gpg:debian-archive-keyring)
missing_pkgs() {
	local e pkgs=()
	for e in "${HOST_CMDS[@]}"; do command -v "${e%%:*}" >/dev/null || pkgs+=("${e#*:}"); done
	for e in "${HOST_FILES[@]}"; do [ -e "${e%%:*}" ] || pkgs+=("${e#*:}"); done
	[ ${#pkgs[@]} -eq 0 ] || printf '%s\n' "${pkgs[@]}" | sort -u | tr '\n' ' '
}
check_host() {
	local m
	[ "$(id -u)" = 0 ] || die "run as root (the VM's network is a private network namespace; the build uses chroot)"
	m=$(missing_pkgs)
	[ -z "$m" ] || die "missing host packages: ${m% }. Install them with
    apt-get install --no-install-recommends ${m% }
  or: test/vm/run-vm.sh --install-deps
  (the VM tests need qemu-system-x86, socat, cpio, python3 and
  debian-archive-keyring; CI does not install them: these tests are not
  part of CI)"
}

# --- the cached guest ----------------------------------------------------------
GUEST=$CACHE/guest
guest_key() { sha256sum "$HERE/build-guest.sh" | cut -c1-16; }
guest_ok() {
	[ -s "$GUEST/vmlinuz" ] && [ -s "$GUEST/base.cpio.gz" ] && [ "$(cat "$GUEST/key" 2>/dev/null)" = "$(guest_key)" ]
}
ensure_guest() { # REBUILD(0/1): build under a lock unless the cache is fresh
	mkdir -p "$CACHE"
	exec 9>"$CACHE/lock"
	flock 9
	if [ "$1" = 1 ] || ! guest_ok; then
		local t0=$SECONDS
		log "building the guest into $GUEST (once; see test/vm/README.md)"
		rm -rf "$GUEST.new"
		"$HERE/build-guest.sh" "$CACHE" "$GUEST.new" || { flock -u 9; die "building the guest failed"; }
		guest_key >"$GUEST.new/key"
		rm -rf "$GUEST"
		mv "$GUEST.new" "$GUEST"
		log "guest built in $((SECONDS - t0)) s"
	fi
	flock -u 9
}

# --- options -----------------------------------------------------------------------
PORTALS=() ENVS=() OUT=./vm-console.log TIMEOUT=900 MEM=1024 CPUS=1 SHARE= KLOG=0 QUIET=0 REBUILD=0 SCRIPT=
while [ $# -gt 0 ]; do
	case "$1" in
	-p | -o | -t | -m | -c | -s | -e) [ $# -ge 2 ] || die "$1 needs a value (see -h)" ;;&
	-p) PORTALS+=("$2"); shift 2 ;;
	-o) OUT=$2; shift 2 ;;
	-t) TIMEOUT=$2; shift 2 ;;
	-m) MEM=$2; shift 2 ;;
	-c) CPUS=$2; shift 2 ;;
	-s) SHARE=$(cd "$2" 2>/dev/null && pwd) || die "-s $2: no such directory"; shift 2 ;;
	-e) ENVS+=("$2"); shift 2 ;;
	-k) KLOG=1; shift ;;
	-q) QUIET=1; shift ;;
	--rebuild) REBUILD=1; shift ;;
	--build-only) check_host; ensure_guest "$REBUILD"; cat "$GUEST/manifest" | head -1; exit 0 ;;
	--check) check_host; echo "run-vm.sh: host ready (guest cache: $CACHE)"; exit 0 ;;
	--install-deps)
		[ "$(id -u)" = 0 ] || die "run as root"
		m=$(missing_pkgs)
		[ -n "$m" ] || { echo "run-vm.sh: nothing missing"; exit 0; }
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $m
		exit ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
	-*) die "unknown option $1 (see -h)" ;;
	*) [ -z "$SCRIPT" ] || die "one guest script only (got $SCRIPT and $1)"; SCRIPT=$1; shift ;;
	esac
done
[ -n "$SCRIPT" ] || die "no guest script (see -h)"
[ -f "$SCRIPT" ] || die "guest script $SCRIPT: no such file"
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] || die "-t $TIMEOUT: not a number of seconds"
for kv in "${ENVS[@]}"; do [[ "$kv" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "-e $kv: not NAME=VALUE"; done
check_host
ensure_guest "$REBUILD"

# --- portals: guest address and relays -------------------------------------------
RUN=$(mktemp -d "${TMPDIR:-/tmp}/hatgt-vm-run.XXXXXX")
QEMU_PID= HOST_RELAYS=()
cleanup() {
	set +e
	[ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null && wait "$QEMU_PID" 2>/dev/null
	for p in "${HOST_RELAYS[@]}"; do kill -- "-$p" 2>/dev/null; done
	rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

NET=${HATGT_VM_NET:-isolated}
[ "$NET" = isolated ] || [ "$NET" = host ] || die "HATGT_VM_NET=$NET: isolated (default) or host"
GUEST_PORTALS=()
declare -A TAKEN=()
: >"$RUN/relays"
i=0
for hp in "${PORTALS[@]}"; do
	h=${hp%:*} port=${hp##*:}
	[ "$h" = localhost ] && h=127.0.0.1
	[[ "$h" =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "-p $hp: the host must be a loopback address (127.0.0.0/8)"
	[[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "-p $hp: bad port"
	gp=$port
	if [ -n "${TAKEN[$gp]:-}" ]; then gp=40000; while [ -n "${TAKEN[$gp]:-}" ]; do gp=$((gp + 1)); done; fi
	TAKEN[$gp]=1
	GUEST_PORTALS+=("10.0.2.2:$gp")
	if [ "$NET" = host ]; then # slirp connects to the host's 127.0.0.1:PORT itself
		[ "$h" = 127.0.0.1 ] && [ "$gp" = "$port" ] || die "-p $hp: HATGT_VM_NET=host takes 127.0.0.1 portals, each port once"
		continue
	fi
	# host side: unix socket -> the portal; a connection per guest connection
	setsid socat "UNIX-LISTEN:$RUN/p$i.sock,fork,unlink-early" "TCP:$h:$port,nodelay" </dev/null >>"$RUN/relay.log" 2>&1 &
	HOST_RELAYS+=($!)
	echo "$gp $RUN/p$i.sock $h $port" >>"$RUN/relays"
	i=$((i + 1))
done

# --- this run's part of the initramfs: /init, helpers, script, environment ------------
mkdir -p "$RUN/root/ki"
cp "$HERE/guest/init" "$RUN/root/init"
chmod 755 "$RUN/root/init"
cp "$HERE/guest/lib.sh" "$RUN/root/ki/lib.sh"
cp "$SCRIPT" "$RUN/root/ki/cmd.sh"
{
	q() { printf "%s='%s'\n" "$1" "$(printf %s "$2" | sed "s/'/'\\\\''/g")"; }
	q KI_PORTALS "${GUEST_PORTALS[*]}"
	q KI_HOST_PORTALS "${PORTALS[*]}"
	q KI_INITIATOR iqn.2026-11.io.hatgt:vm-initiator
	q KI_SHARE "${SHARE:+1}"
	for kv in "${ENVS[@]}"; do q "${kv%%=*}" "${kv#*=}"; done
	echo "export KI_PORTALS KI_HOST_PORTALS KI_INITIATOR KI_SHARE"
	for kv in "${ENVS[@]}"; do echo "export ${kv%%=*}"; done
} >"$RUN/root/ki/env"
(cd "$RUN/root" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$RUN/run.cpio.gz"
cat "$GUEST/base.cpio.gz" "$RUN/run.cpio.gz" >"$RUN/initrd" # a later archive's files win

# --- boot --------------------------------------------------------------------------
APPEND="console=ttyS0 panic=-1 oops=panic mitigations=off log_buf_len=8M"
if [ "$KLOG" = 1 ]; then APPEND+=" loglevel=7"; else APPEND+=" quiet loglevel=3"; fi
STATUS=$RUN/status
: >"$OUT"
: >"$STATUS"
log "booting ($MEM MiB, $CPUS vCPU, TCG; portals: ${GUEST_PORTALS[*]:-none}), console: $OUT"
T0=$(date +%s.%N)
LAUNCH=(unshare -n -- "$HERE/in-netns.sh" $$ "$RUN/relays")
[ "$NET" = isolated ] || { LAUNCH=(); log "HATGT_VM_NET=host: the guest can reach any port of this host"; }
# KVM is not used: a stock kernel barely boots on this host's kvm_pvm.
"${LAUNCH[@]}" qemu-system-x86_64 -accel tcg -cpu max -smp "$CPUS" -m "$MEM" \
	-nodefaults -no-user-config -display none -no-reboot \
	-kernel "$GUEST/vmlinuz" -initrd "$RUN/initrd" -append "$APPEND" \
	-serial "file:$OUT" -serial "file:$STATUS" \
	-netdev user,id=n0,ipv6=off,net=10.0.2.0/24,host=10.0.2.2 \
	-device virtio-net-pci,netdev=n0,romfile= \
	${SHARE:+-virtfs "local,path=$SHARE,mount_tag=share,security_model=none,id=share"} \
	</dev/null >"$RUN/qemu.out" 2>&1 &
QEMU_PID=$!
TAIL_PID=
if [ "$QUIET" = 0 ]; then tail -n +1 -f --pid="$QEMU_PID" "$OUT" & TAIL_PID=$!; fi
RC=
deadline=$((SECONDS + TIMEOUT))
while kill -0 "$QEMU_PID" 2>/dev/null; do
	if [ $SECONDS -ge $deadline ]; then
		log "the VM ran into the -t limit ($TIMEOUT s): stopped"
		kill "$QEMU_PID" 2>/dev/null
		RC=124
		break
	fi
	sleep 0.2
done
wait "$QEMU_PID" || [ -n "$RC" ] || { log "qemu failed:"; cat "$RUN/qemu.out" >&2; }
QEMU_PID=
[ -z "$TAIL_PID" ] || wait "$TAIL_PID" 2>/dev/null || true
grep -a -v '^KI_EXIT_STATUS=' "$STATUS" >"$OUT.dmesg" || true
if [ -z "$RC" ]; then
	RC=$(sed -n 's/^KI_EXIT_STATUS=\([0-9]*\).*/\1/p' "$STATUS" | tail -1)
	[ -n "$RC" ] || { log "the guest reported no status (see $OUT)"; RC=125; }
fi
log "VM done in $(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s, status $RC"
exit "$RC"
