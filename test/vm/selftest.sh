#!/usr/bin/env bash
# selftest.sh - checks test/vm/run-vm.sh itself, without hatgt. As root:
#
#   bash test/vm/selftest.sh
#
# 1. usage: a non-loopback portal and a missing script are refused (status 2,
#    no VM);
# 2. starts its own tgtd (package tgt) on a private control port (-C N, a
#    free N, so another tgtd is never touched) with one 256 MiB LUN behind
#    two portals 127.0.0.1:P1 and :P2 (free ports in 6000-6999), checks with
#    `ss -ltnp` that this tgtd got both ports, and a socat on a third port
#    P3 that the guest must NOT reach;
# 3. VM "initiator" (selftest/initiator.sh, -p P1 -p P2 -p P4): -e and -s
#    work (200 ki_request files, each deleted by the host as it appears),
#    modules, iscsid and udevd are up, P3 is refused while a portal is
#    reached; P4, a portal nothing listens on, is refused (not accepted and
#    closed), reached once the host listens there, refused again once it
#    stops; SendTargets through both portals, login through both, one
#    dm-multipath map over two paths, 32 MiB written and read back through
#    it, I/O on one path when the other is offline, logout; the guest exits
#    7 and run-vm.sh must exit 7; the guest's dmesg must be saved;
# 4. VM "alua" (selftest/alua.sh, no -p): LIO inside the guest with two ALUA
#    port groups: scsi_dh_alua, hwhandler '1 alua', priorities 50/10, the
#    states swapped and I/O following;
# 5. VM "timeout": a guest that sleeps, run with -t 60, must end with 124.
#
# Prints one line per check and "N passed, N failed"; exit status 0 only if
# nothing failed. Logs in the directory printed at the start. Stops its
# tgtd (by PID: tgtd ignores SIGTERM while it has targets, so
# `tgtadm --op delete --mode system --force` first, kill -9 if need be).
# ~2-3 minutes (and the guest's first build, 0.5-2.5 minutes).
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RUNVM=$HERE/run-vm.sh
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hatgt-vm-selftest.XXXXXX")
IQN=iqn.2026-11.io.hatgt:vm-selftest
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "PASS $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
finish() { echo "logs: $WORK"; echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]; }

TGTD_PID= CTRL= GUARD_PID= TAKER_PID=
cleanup() {
	[ -n "$TAKER_PID" ] && kill "$TAKER_PID" 2>/dev/null
	[ -n "$GUARD_PID" ] && kill -- "-$GUARD_PID" 2>/dev/null
	if [ -n "$TGTD_PID" ]; then
		tgtadm -C "$CTRL" --op delete --mode system --force >/dev/null 2>&1
		for _ in $(seq 50); do kill -0 "$TGTD_PID" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$TGTD_PID" 2>/dev/null
		wait "$TGTD_PID" 2>/dev/null
	fi
	true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$RUNVM" --check || exit 2
command -v tgtd >/dev/null && command -v tgtadm >/dev/null || { echo "selftest.sh: needs tgtd/tgtadm: apt-get install tgt" >&2; exit 2; }
echo "logs in $WORK"

# --- 1. usage errors -----------------------------------------------------------------
echo 'exit 0' >"$WORK/true.sh"
rc=0; "$RUNVM" -q -p 10.1.2.3:3260 "$WORK/true.sh" >"$WORK/usage1.log" 2>&1 || rc=$?
[ $rc = 2 ] && ok "usage: a non-loopback portal is refused (status 2)" || bad usage-portal "status $rc: $(cat "$WORK/usage1.log")"
rc=0; "$RUNVM" -q "$WORK/no-such-script.sh" >"$WORK/usage2.log" 2>&1 || rc=$?
[ $rc = 2 ] && ok "usage: a missing guest script is refused (status 2)" || bad usage-script "status $rc: $(cat "$WORK/usage2.log")"

# --- 2. the host's targets -------------------------------------------------------------
if "$RUNVM" --build-only >"$WORK/build.log" 2>&1; then ok "guest built or cached ($(tail -1 "$WORK/build.log"))"
else bad build "$(tail -5 "$WORK/build.log")"; finish; exit 1; fi
port_free() { ! ss -ltnH "sport = :$1" | grep -q .; }
free_port() { # a free port in 6000-6999 not among $*
	local p
	for _ in $(seq 100); do
		p=$((6000 + RANDOM % 1000))
		port_free $p && [[ " $* " != *" $p "* ]] && { echo $p; return; }
	done
	return 1
}
P1=$(free_port) P2=$(free_port "$P1") P3=$(free_port "$P1" "$P2") P4=$(free_port "$P1" "$P2" "$P3") ||
	{ bad ports "no free ports"; finish; exit 1; }
for _ in $(seq 100); do
	CTRL=$((100 + RANDOM % 900))
	[ -e "/var/run/tgtd/socket.$CTRL" ] || [ -e "/var/run/tgtd/socket.$CTRL.lock" ] || break
done
tgtd -f -C "$CTRL" --iscsi "portal=127.0.0.1:$P1" >"$WORK/tgtd.log" 2>&1 &
TGTD_PID=$!
T=(tgtadm -C "$CTRL" --lld iscsi)
for _ in $(seq 100); do "${T[@]}" --op show --mode target >/dev/null 2>&1 && break; sleep 0.1; done
truncate -s 256M "$WORK/lun.img"
if kill -0 "$TGTD_PID" 2>/dev/null &&
	"${T[@]}" --op new --mode target --tid 1 -T "$IQN" &&
	"${T[@]}" --op new --mode logicalunit --tid 1 --lun 1 -b "$WORK/lun.img" &&
	"${T[@]}" --op bind --mode target --tid 1 -I ALL &&
	"${T[@]}" --op new --mode portal --param "portal=127.0.0.1:$P2"; then
	ok "tgtd (pid $TGTD_PID, control port $CTRL) with $IQN"
else bad tgtd "$(tail -5 "$WORK/tgtd.log")"; finish; exit 1; fi
for p in $P1 $P2; do
	if ss -ltnpH "sport = :$p" | tee -a "$WORK/ss.txt" | grep -q "pid=$TGTD_PID,"; then ok "tgtd listens on 127.0.0.1:$p"
	else bad "tgtd-port-$p" "not our tgtd on $p: $(ss -ltnpH "sport = :$p")"; finish; exit 1; fi
done
setsid socat "TCP-LISTEN:$P3,bind=127.0.0.1,fork,reuseaddr" SYSTEM:"echo forbidden" </dev/null >/dev/null 2>&1 &
GUARD_PID=$!

# --- VMs -----------------------------------------------------------------------------------
count_checks() { # NAME CONSOLE
	local line
	while IFS= read -r line; do
		case "$line" in
		"KI_CHECK PASS "*) ok "$1/${line#KI_CHECK PASS }" ;;
		"KI_CHECK FAIL "*) line=${line#KI_CHECK FAIL }; bad "$1/${line%%:*}" "${line#*:}" ;;
		esac
	done < <(tr -d '\r' <"$2" | grep -a -E '^KI_CHECK (PASS|FAIL) ')
}
vm() { # NAME WANT_STATUS run-vm.sh-ARGS...
	local name=$1 want=$2 rc=0 t0=$SECONDS
	shift 2
	echo "--- VM $name (console: $WORK/$name.log)"
	# (a watchdog far above any run: a VM that -t does not stop fails here)
	timeout --preserve-status "${WATCHDOG:-1800}" "$RUNVM" -q -o "$WORK/$name.log" "$@" >"$WORK/$name.run" 2>&1 || rc=$?
	count_checks "$name" "$WORK/$name.log"
	[ "$rc" = "$want" ] && ok "$name: run-vm.sh exit status $rc ($((SECONDS - t0)) s)" ||
		bad "$name" "run-vm.sh exit status $rc, want $want ($((SECONDS - t0)) s): $(tail -3 "$WORK/$name.run")"
}

# 3. initiator against tgtd
token=t$RANDOM$RANDOM
mkdir -p "$WORK/share"
# the host side of the guest's requests: 200 ki_request calls, taken at
# once; opening and closing a listener on P4, a portal that starts down
( cd "$WORK/share" && down_pid= && trap '[ -n "$down_pid" ] && kill -- "-$down_pid" 2>/dev/null; exit 0' TERM && while :; do
	for f in req-*; do [ -e "$f" ] && rm -f "$f" && echo "$f"; done
	if [ -e open-down-portal ]; then
		rm -f open-down-portal
		setsid socat "TCP-LISTEN:$P4,bind=127.0.0.1,fork,reuseaddr" SYSTEM:"echo portal-up" </dev/null >/dev/null 2>&1 &
		down_pid=$!
	fi
	if [ -e close-down-portal ]; then
		rm -f close-down-portal
		kill -- "-$down_pid"
	fi
	sleep 0.01
done >"$WORK/requests.txt" ) &
TAKER_PID=$!
vm initiator 7 -t 600 -s "$WORK/share" -e ST_TOKEN=$token -e ST_IQN=$IQN -e ST_FORBIDDEN=$P3 \
	-p "127.0.0.1:$P1" -p "127.0.0.1:$P2" -p "127.0.0.1:$P4" "$HERE/selftest/initiator.sh"
kill "$TAKER_PID"; wait "$TAKER_PID" 2>/dev/null; TAKER_PID=
n=$(sort -u "$WORK/requests.txt" | wc -l)
[ "$n" = 200 ] && ok "initiator: the host took all 200 requests (ki_request)" || bad initiator-requests "the host took $n of 200 requests"
[ "$(cat "$WORK/share/from-guest" 2>/dev/null)" = "$token" ] && ok "initiator: the guest's file reached the host (-s)" ||
	bad initiator-share "no $WORK/share/from-guest with $token"
grep -q 'iSCSI' "$WORK/initiator.log.dmesg" 2>/dev/null && ok "initiator: guest dmesg saved ($(wc -l <"$WORK/initiator.log.dmesg") lines)" ||
	bad initiator-dmesg "no iSCSI lines in $WORK/initiator.log.dmesg"

# 4. ALUA inside the guest
vm alua 0 -t 600 "$HERE/selftest/alua.sh"

# 5. the -t limit
echo 'ki_log "sleeping past the limit"; sleep 3600' >"$WORK/sleep.sh"
WATCHDOG=600 vm timeout 124 -t 60 "$WORK/sleep.sh"

finish
