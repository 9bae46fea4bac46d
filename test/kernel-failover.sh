#!/usr/bin/env bash
# kernel-failover.sh - owner FAILOVER of a replicated LUN as the REAL Linux
# initiator (open-iscsi + iscsi_tcp, dm-multipath, scsi_dh_alua) sees it, in a
# throwaway qemu VM (the repository's harness, test/vm/run-vm.sh).
#
# NOT part of CI or test/run-all.sh: the VM is software-emulated (TCG); a run
# takes a few minutes. Run it by hand, as root (run-vm.sh needs a network
# namespace); the host packages it needs are in test/vm/README.md (it says
# what is missing), its guest is built on first use and cached:
#
#   bash test/kernel-failover.sh
#
# What it does:
#   1. go build ./cmd/hatgt (or KI_REV=COMMIT via git archive);
#   2. starts a cluster of three nodes, all on 127.0.0.1 with their own ports
#      (n1 3360 + 3370-3373, n2 3460 + 3470-3473, n3 3560 + 3570-3573; or
#      KF_BASES="33 34 35" for other hundreds), n1 --bootstrap, n2/n3 --join;
#      three nodes so that Raft keeps a quorum when one dies;
#   3. creates iqn.2026-11.io.hatgt:kf with LUN 0, 256 MiB, --replicas 2
#      --placement n1,n2 (owner n1) and waits until both copies are in-sync;
#   4. boots the VM with the portals of n1 and n2. The guest logs in to both
#      (replacement_timeout 5 s), checks two disks with one wwid, scsi_dh_alua
#      attached, n1's path active/optimized and n2's standby, starts a
#      multipath map (group_by_prio, prio alua, hwhandler '1 alua',
#      no_path_retry 30 = 60 s of queueing at polling_interval 2), writes 64 MiB
#      of random data through it (O_DIRECT) and reads it back;
#   5. the guest asks the host (share directory) to kill -9 n1, the owner; at
#      once it reads 16 MiB and writes 16 MiB through the map (in parallel);
#      both must complete and compare equal. The time from the kill to the
#      first completed IO is logged (the failover time as the initiator sees
#      it), and a trace of path and ALUA states every second while it waits;
#   4b. registers a persistent reservation key on both paths and reserves the
#      LUN (Write Exclusive, Registrants Only) through n1; n2's Standby path
#      must show both keys and the reservation (sg_persist);
#   6. after the failover: n2's path must be active/optimized and hold the
#      reservation and both keys (the cluster's, not n1's), the host checks
#      that n2 and n3 report owner n2 with a higher epoch, and IO through the
#      map still works (the 64 MiB written before the kill read back);
#   7. the guest asks the host to restart n1; its copy must become in-sync
#      again (resync of what it missed), its path must come back, and report
#      standby (RTPG through it) while n2 stays the owner;
#   8. scans the guest dmesg and hatgt's logs.
#
# Output: one line per check, then "N passed, N failed"; exit status 0 only
# when nothing failed. Logs (nI.log of each node, the VM console and dmesg, a
# timeline of the owner after the kill) stay in the directory printed at the
# start (KI_OUT=DIR to choose it).
#
# Env: KI_OUT, KI_REV, KI_VM_TIMEOUT
# (seconds, default 600), HATGT_LOG_LEVEL (default info), KF_BASES,
# KF_PREFIX (node IDs PREFIX1..3, default kf), KF_HATGT=BINARY (test a hatgt
# built elsewhere, e.g. with a fix), KF_RESCAN=1 (workaround: the guest
# rescans the standby path once it turns active while sized 0, see below).
#
# Node IDs are kf1..kf3 and the binary is copied as "kfnode": others on this
# machine were seen killing "n3" or every "hatgt" process by name mid-run.
# A node that died without a "signal received" line was SIGKILLed: not us.
#
# Found by this test (2026-11-25, at a0e6fc6; fixed in 6cf0686): scsi/alua.go
# refused READ CAPACITY (10) and (16) in Standby (NOT READY, 04/0B). Linux
# reads a disk's size once, when it attaches it, so the standby path got size
# 0 ("0 512-byte logical blocks"). After the failover, scsi_dh_alua saw it
# active/optimized, but every IO the map sent there failed with "access
# beyond end of device". dm-multipath failed and reinstated the path every
# ~3 s (TUR passes), the map kept queueing, and the IO never completed
# ("standby-path-capacity" and "failover-io" failed). LIO answers READ
# CAPACITY in Standby. At 6cf0686 the whole run passes. The first 4 KiB read
# completed 7.6 s after the kill and the 16 MiB read/write after 13-14 s
# (TCG guest). "standby-path-capacity" keeps watching for that regression.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${KI_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/kf-failover.XXXXXX")}
VM_TIMEOUT=${KI_VM_TIMEOUT:-600}
LOG_LEVEL=${HATGT_LOG_LEVEL:-info}
IQN=iqn.2026-11.io.hatgt:kf
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
set -- ${KF_BASES:-33 34 35}
B1=$1 B2=$2 B3=$3
# node IDs: not n1/n2/n3, so that nobody's `pkill -f "node-id n3"` meets ours
N1=${KF_PREFIX:-kf}1 N2=${KF_PREFIX:-kf}2 N3=${KF_PREFIX:-kf}3
PY=python3; [ -x /usr/bin/python3 ] && PY=/usr/bin/python3 # (a pyenv shim takes 1-2 s a call)
export HATGT_TOKEN=kf-token-$RANDOM$RANDOM$RANDOM

# shellcheck source=test/kernel-lib.sh
. "$ROOT/test/kernel-lib.sh"

WATCH_PID=
cleanup() {
  [ -n "$WATCH_PID" ] && kill "$WATCH_PID" 2>/dev/null
  local n p
  for n in $N1 $N2 $N3; do
    [ -s "$OUT/$n.pid" ] || continue
    p=$(cat "$OUT/$n.pid")
    kill "$p" 2>/dev/null
  done
  for n in $N1 $N2 $N3; do
    [ -s "$OUT/$n.pid" ] || continue
    p=$(cat "$OUT/$n.pid")
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ki_preflight kernel-failover.sh
command -v python3 >/dev/null || { echo "kernel-failover.sh: needs python3 (reads hatgt status --json)" >&2; exit 2; }

# --- build ---------------------------------------------------------------
ki_build "${KF_HATGT:-}" # KF_HATGT: a hatgt built elsewhere (e.g. with a fix under test)
H=$OUT/kfnode # not "hatgt": others' `pkill -f hatgt` must not meet our nodes
mv "$OUT/hatgt" "$H"
"$RUNVM" --build-only >"$OUT/vm-build.log" 2>&1 || { bad vm-build "$(tail -5 "$OUT/vm-build.log")"; finish; exit 1; }

# --- cluster ---------------------------------------------------------------
base() { case $1 in $N1) echo "$B1";; $N2) echo "$B2";; $N3) echo "$B3";; esac; }
api() { echo "127.0.0.1:$(base "$1")70"; }
port_free() { ! ss -ltnuH "sport = :$1" 2>/dev/null | grep -q .; }
busy=
for n in $N1 $N2 $N3; do
  for s in 60 70 71 72 73; do port_free "$(base $n)$s" || busy="$busy $(base $n)$s"; done
done
[ -z "$busy" ] || { bad ports "in use:$busy (set KF_BASES, e.g. \"43 44 45\")"; finish; exit 1; }

start_node() { # ID [extra flags...]: start, wait until its portal and API listen
  local id=$1 b p; shift
  b=$(base "$id")
  "$H" serve --node-id "$id" --bind 127.0.0.1 --data-dir "$OUT/data/$id" --log-level "$LOG_LEVEL" \
    --iscsi-port "${b}60" --api-port "${b}70" --raft-port "${b}71" --gossip-port "${b}72" --repl-port "${b}73" \
    "$@" >>"$OUT/$id.log" 2>&1 &
  p=$!
  disown "$p" 2>/dev/null
  echo "$p" >"$OUT/$id.pid"
  for _ in $(seq 150); do
    if ! port_free "${b}60" && ! port_free "${b}70"; then return 0; fi
    kill -0 "$p" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# lun_info NODE -> "owner epoch in_sync(comma) copies(node:state,...) alive(comma)"
# of LUN 0 of $IQN as NODE's status answers; empty when the node does not answer
lun_info() {
  HATGT_ADDR=$(api "$1") timeout 5 "$H" status --json 2>/dev/null | $PY -c '
import sys, json
s = json.load(sys.stdin)
alive = ",".join(n["id"] for n in s.get("nodes", []) if n.get("alive"))
for t in s.get("targets", []):
    if t.get("iqn") != sys.argv[1]:
        continue
    for l in t.get("luns", []):
        if l.get("lun") == 0:
            print(l.get("owner") or "-", l.get("epoch", 0), ",".join(l.get("in_sync") or []) or "-",
                  ",".join("%s:%s" % (c["node"], c["state"]) for c in l.get("copies") or []) or "-", alive or "-")
' "$IQN" 2>/dev/null
}

mkdir -p "$OUT/data"
if start_node $N1 --bootstrap; then ok "$N1 started (bootstrap)"
else bad $N1-start "$(tail -5 "$OUT/$N1.log")"; finish; exit 1; fi
for n in $N2 $N3; do
  if start_node $n --join "$(api $N1)"; then ok "$n started (join $(api $N1))"
  else bad $n-start "$(tail -5 "$OUT/$n.log")"; finish; exit 1; fi
done
joined=
for _ in $(seq 60); do
  a=$(HATGT_ADDR=$(api $N1) timeout 5 "$H" status --json 2>/dev/null | $PY -c 'import sys,json; print(sum(1 for n in json.load(sys.stdin)["nodes"] if n.get("alive")))' 2>/dev/null)
  [ "${a:-0}" -ge 3 ] && { joined=1; break; }
  sleep 0.5
done
[ -n "$joined" ] && ok "cluster of 3 alive" || { bad cluster "$(HATGT_ADDR=$(api $N1) "$H" status 2>&1 | head -10)"; finish; exit 1; }

export HATGT_ADDR=$(api $N1)
if "$H" target create "$IQN" >"$OUT/create.log" 2>&1 &&
   "$H" lun create "$IQN" --lun 0 --size 256M --replicas 2 --placement $N1,$N2 >>"$OUT/create.log" 2>&1; then
  ok "target $IQN, LUN 0 256 MiB --replicas 2 --placement $N1,$N2"
else bad lun-create "$(tail -3 "$OUT/create.log")"; finish; exit 1; fi
info=
for _ in $(seq 120); do
  info=$(lun_info $N1)
  case "$info" in "$N1 "*" $N1,$N2 $N1:in-sync,$N2:in-sync "*) break;; esac
  sleep 0.5
done
case "$info" in
  "$N1 "*" $N1,$N2 $N1:in-sync,$N2:in-sync "*) ok "both copies in-sync, owner $N1 (owner epoch in_sync copies alive: $info)";;
  *) bad in-sync "not in sync after 60 s: $info"; finish; exit 1;;
esac
EPOCH0=$(echo "$info" | cut -d' ' -f2)
"$H" status >"$OUT/status-before.txt" 2>&1

# --- guest script ------------------------------------------------------------
# Sourced by the guest's sh after /ki/lib.sh. Each check prints
# "KI_CHECK PASS name" or "KI_CHECK FAIL name: detail"; the host counts them.
ki_guest_checks >"$OUT/guest.sh"
cat >>"$OUT/guest.sh" <<'EOF'
now() { cut -d' ' -f1 /proc/uptime; }
S=/ki/share
wait_file() { # FILE SECS
  local i=0; while [ ! -e "$1" ] && [ $i -lt $(($2 * 10)) ]; do sleep 0.1; i=$((i+1)); done; [ -e "$1" ]
}
pathmap() { # "portal disk sid" per attached disk
  iscsiadm -m session -P 3 2>/dev/null | awk '/Current Portal:/ {p=$3; sub(/,.*/, "", p)} /SID:/ {sid=$2}
    /Attached scsi disk/ {print p, $4, sid}'
}
astate() { cat /sys/block/$1/device/access_state 2>/dev/null; }
trace() { # while the failover IO runs: path and ALUA states once a second
  while :; do
    echo "TRACE [$(now)] $D1=$(astate $D1)/$(cat /sys/block/$D1/device/state 2>/dev/null) $D2=$(astate $D2)/$(cat /sys/block/$D2/device/state 2>/dev/null) | $(multipathd show paths format '%d %t %T %p' 2>/dev/null | tail -n +2 | tr '\n' ';')"
    sleep 1
  done
}
diag() {
  echo "=== DIAG (status $1) ==="
  iscsiadm -m session -P 3 2>&1 | grep -E 'Portal|State|SID|disk'
  for d in $(ki_iscsi_disks); do
    echo "--- /dev/$d dh_state=$(cat /sys/block/$d/device/dh_state 2>/dev/null) access_state=$(astate $d) state=$(cat /sys/block/$d/device/state 2>/dev/null)"
  done
  multipath -ll 2>/dev/null
  multipathd show paths 2>/dev/null
}
trap 'diag $?' EXIT

P1=$(echo $KI_PORTALS | cut -d' ' -f1); P2=$(echo $KI_PORTALS | cut -d' ' -f2)
ki_set node.session.timeo.replacement_timeout 5
ck_fatal login-n1 ki_login "$KI_TARGET" "$P1"
ck_fatal login-n2 ki_login "$KI_TARGET" "$P2"
ck_fatal two-disks "ki_wait_disks 2 30"
pathmap
D1=$(pathmap | awk -v p=$P1 '$1 == p {print $2}' | head -1)
D2=$(pathmap | awk -v p=$P2 '$1 == p {print $2}' | head -1)
SID1=$(pathmap | awk -v p=$P1 '$1 == p {print $3}' | head -1)
ki_log "n1 path: /dev/$D1 (session $SID1), n2 path: /dev/$D2"
ck_fatal path-per-portal "test -n '$D1' && test -n '$D2' && test '$D1' != '$D2'"
printf 'n1 %s %s %s\nn2 %s %s\n' "$D1" "$SID1" "$(basename $(readlink -f /sys/block/$D1/device))" "$D2" "$(basename $(readlink -f /sys/block/$D2/device))" >$S/paths
ck same-wwid "cat /sys/block/$D1/device/wwid /sys/block/$D2/device/wwid; test \"\$(cat /sys/block/$D1/device/wwid)\" = \"\$(cat /sys/block/$D2/device/wwid)\""
ck alua-handler "cat /sys/block/$D1/device/dh_state /sys/block/$D2/device/dh_state; grep -qx alua /sys/block/$D1/device/dh_state && grep -qx alua /sys/block/$D2/device/dh_state"
ck n1-active-optimized "astate $D1; test \"\$(astate $D1)\" = active/optimized"
ck n2-standby "astate $D2; test \"\$(astate $D2)\" = standby"
ck rtpg-n2 "sg_rtpg -d /dev/$D2"
# the standby path must know the LUN's size: Linux reads it once, at attach
# (READ CAPACITY); a path sized 0 fails every IO once it becomes active
# ("access beyond end of device") until someone rescans it
ck standby-path-capacity "echo $D1=\$(cat /sys/block/$D1/size) $D2=\$(cat /sys/block/$D2/size) sectors; test \$(cat /sys/block/$D2/size) -eq \$(cat /sys/block/$D1/size)"
cat >/etc/multipath.conf <<'MPC'
defaults {
	user_friendly_names yes
	find_multipaths no
	enable_foreign "^$"
	polling_interval 2
}
blacklist {
	devnode "^(ram|loop|fd|md|sr|scd|st|vd)"
}
devices {
	device {
		vendor "HATGT"
		product "VIRTUAL-DISK"
		path_grouping_policy group_by_prio
		prio alua
		hardware_handler "1 alua"
		path_checker tur
		failback immediate
		no_path_retry 30
	}
}
MPC
ck_fatal multipath-map ki_multipath_start
M=/dev/mapper/$(multipath -l -v1 | head -1)
ck hwhandler-alua "multipath -ll | grep -q \"hwhandler='1 alua'\""
ck queue-if-no-path "dmsetup table; dmsetup table | grep -q queue_if_no_path"
ck prio-groups "multipath -ll | grep -E 'prio=50 status=active' && multipath -ll | grep -E 'prio=1 status=enabled'"
dd if=/dev/urandom of=/tmp/pattern bs=1M count=64 2>/dev/null
dd if=/dev/urandom of=/tmp/pattern2 bs=1M count=16 2>/dev/null
ck mp-write-64M dd if=/tmp/pattern of=$M bs=1M count=64 oflag=direct
ck mp-read-64M dd if=$M of=/tmp/back bs=1M count=64 iflag=direct
ck mp-verify-64M cmp /tmp/pattern /tmp/back
multipathd show paths

# --- persistent reservations: the device's, on every path and node ---
# The host registers its key on both paths (each an I_T nexus, as
# mpathpersist does) and reserves Write Exclusive, Registrants Only
# through n1, the owner; n2, a Standby path on another node, must show
# both registrations and the reservation. The map's writes stay allowed:
# every path is registered.
PRK=0x4b46
ck pr-register-n1 sg_persist --out --register --param-sark=$PRK /dev/$D1
ck pr-register-n2 sg_persist --out --register --param-sark=$PRK /dev/$D2
ck pr-reserve sg_persist --out --reserve --param-rk=$PRK --prout-type=5 /dev/$D1
ck pr-keys-through-standby "sg_persist -i -k /dev/$D2 | tee /dev/stderr | grep -c -i '$PRK' | grep -qx 2"
ck pr-reservation-through-standby "sg_persist -i -r /dev/$D2 | tee /dev/stderr | grep -q -i 'write exclusive, registrants only'"

# --- the owner dies ---
ki_log "asking the host to kill -9 n1 (the owner)"
ki_request kill-request
ck_fatal host-killed-n1 "wait_file $S/killed 60"
t0=$(now)
trace & TRACE=$!
RESCAN=
if [ -n "${KF_RESCAN:-}" ]; then # workaround, to see the rest: rescan a path sized 0 once it is active
  ( while :; do
      if [ "$(astate $D2)" = active/optimized ] && [ "$(cat /sys/block/$D2/size)" = 0 ]; then
        ki_log "KF_RESCAN: $D2 active with size 0: rescan"; echo 1 >/sys/block/$D2/device/rescan
      fi
      sleep 0.5
    done ) & RESCAN=$!
fi
( dd if=$M of=/tmp/fo-read bs=1M count=16 iflag=direct; echo $? >/tmp/fo-read.rc; now >/tmp/fo-read.t ) >/tmp/fo-read.log 2>&1 &
( dd if=/tmp/pattern2 of=$M bs=1M seek=128 count=16 oflag=direct; echo $? >/tmp/fo-write.rc; now >/tmp/fo-write.t ) >/tmp/fo-write.log 2>&1 &
# and one 4 KiB read: when the first IO after the kill completes
( dd if=$M of=/tmp/fo-probe bs=4k skip=4096 count=1 iflag=direct; echo $? >/tmp/fo-probe.rc; now >/tmp/fo-probe.t ) >/tmp/fo-probe.log 2>&1 &
# a dd stuck in D state cannot be killed: wait 180 s at most (the map queues
# 60 s without a path), then report what the initiator sees and stop
end=$(awk "BEGIN {print $t0 + 180}")
while { [ ! -e /tmp/fo-read.rc ] || [ ! -e /tmp/fo-write.rc ]; } && awk "BEGIN {exit !($(now) < $end)}"; do sleep 0.1; done
kill $TRACE $RESCAN 2>/dev/null; wait $TRACE $RESCAN 2>/dev/null
if [ ! -e /tmp/fo-read.rc ] || [ ! -e /tmp/fo-write.rc ]; then
  echo "KI_CHECK FAIL failover-io: read $(test -e /tmp/fo-read.rc && echo done || echo STUCK), write $(test -e /tmp/fo-write.rc && echo done || echo STUCK) 180 s after the kill"
  ps | grep -E ' dd ' | grep -v grep; cat /sys/block/$D2/device/access_state; sg_rtpg -d /dev/$D2; multipath -ll; dmsetup status; dmesg | tail -60
  ki_request owner-check-request; wait_file $S/owner-check 60; cat $S/owner-check
  exit 21
fi
tr=$(cat /tmp/fo-read.t 2>/dev/null); tw=$(cat /tmp/fo-write.t 2>/dev/null)
ki_log "failover IO: read done at +$(awk "BEGIN {print $tr - $t0}") s (status $(cat /tmp/fo-read.rc)), write done at +$(awk "BEGIN {print $tw - $t0}") s (status $(cat /tmp/fo-write.rc))"
ck failover-read-completes "cat /tmp/fo-read.log; test \"\$(cat /tmp/fo-read.rc)\" = 0"
ck failover-write-completes "cat /tmp/fo-write.log; test \"\$(cat /tmp/fo-write.rc)\" = 0"
ck failover-read-data "head -c 16777216 /tmp/pattern | cmp - /tmp/fo-read"
ck failover-write-data "dd if=$M of=/tmp/back2 bs=1M skip=128 count=16 iflag=direct && cmp /tmp/pattern2 /tmp/back2"
tp=$(cat /tmp/fo-probe.t 2>/dev/null || echo $tr)
ki_log "4 KiB probe read done at +$(awk "BEGIN {print $tp - $t0}") s (status $(cat /tmp/fo-probe.rc 2>/dev/null))"
ck failover-probe-data "dd if=/tmp/pattern bs=4k skip=4096 count=1 2>/dev/null | cmp - /tmp/fo-probe"
first=$(awk "BEGIN {m = $tr; if ($tw < m) m = $tw; if ($tp < m) m = $tp; print m - $t0}")
echo "KI_FAILOVER_SECONDS $first"
ki_log "failover as the initiator saw it: first IO completed $first s after the kill"
i=0; while [ "$(astate $D2)" != active/optimized ] && [ $i -lt 30 ]; do sleep 1; i=$((i+1)); done
ck n2-active-optimized "astate $D2; test \"\$(astate $D2)\" = active/optimized"
ck rtpg-n2-after "sg_rtpg -d /dev/$D2 | tee /dev/stderr | grep -q 'active/optimized'"
ki_request owner-check-request
ck owner-n2-higher-epoch "wait_file $S/owner-check 90 && cat $S/owner-check && grep -q '^PASS' $S/owner-check"
# the new owner holds what the dead one did
ck pr-reservation-after-failover "sg_persist -i -r /dev/$D2 | tee /dev/stderr | grep -q -i 'write exclusive, registrants only' && sg_persist -i -r /dev/$D2 | grep -q -i 'key=$PRK'"
ck pr-keys-after-failover "sg_persist -i -k /dev/$D2 | tee /dev/stderr | grep -c -i '$PRK' | grep -qx 2"
multipath -ll; multipathd show paths
ck mp-read-64M-after "dd if=$M of=/tmp/back bs=1M count=64 iflag=direct && cmp /tmp/pattern /tmp/back"
ck mp-write-after "dd if=/tmp/pattern of=$M bs=1M count=16 seek=160 oflag=direct && dd if=$M of=/tmp/back2 bs=1M skip=160 count=16 iflag=direct && head -c 16777216 /tmp/pattern | cmp - /tmp/back2"

# --- the old owner comes back ---
ki_log "asking the host to restart n1"
ki_request restart-request
ck n1-back-in-sync "wait_file $S/restarted 200 && cat $S/restarted && grep -q '^PASS' $S/restarted"
logged_in() { iscsiadm -m session -r $1 -P 1 2>/dev/null | grep -q 'Connection State: LOGGED IN'; }
i=0; while ! logged_in $SID1 && [ $i -lt 30 ]; do sleep 1; i=$((i+1)); done
N1D=
if logged_in $SID1; then
  ki_log "n1's session came back by itself"; N1D=$D1
else
  echo "KI_NOTE iscsid did not bring n1's session back by itself within 30 s of its copy being in sync ($(iscsiadm -m session -r $SID1 -P 1 2>&1 | grep -E 'State' | tr -s '\t\n ' '  ')); logged out and in again (test/vm's relays refuse connections while a portal is down, as a real network does: test/vm/README.md, Network)"
  iscsiadm -m session -r $SID1 -u
  ck n1-relogin iscsiadm -m node -T "$KI_TARGET" -p "$P1" --login
  i=0; while [ -z "$(pathmap | awk -v p=$P1 '$1 == p {print $2}')" ] && [ $i -lt 30 ]; do sleep 1; i=$((i+1)); done
  udevadm settle -t 30 2>/dev/null
  N1D=$(pathmap | awk -v p=$P1 '$1 == p {print $2}' | head -1)
fi
ki_log "n1 path after the restart: /dev/$N1D"
ck_fatal n1-path-disk "pathmap; test -n '$N1D'"
i=0; while ! multipathd show paths | grep " $N1D " | grep -q -E 'active +(ready|ghost)' && [ $i -lt 30 ]; do sleep 1; i=$((i+1)); done
multipath -ll; multipathd show paths
ck n1-path-in-map "multipathd show paths | grep ' $N1D ' | grep -E 'active +(ready|ghost)'"
ck n1-path-low-prio "multipathd show paths format '%d %p %t %T' | tee /dev/stderr | grep -q -E '^$N1D +1 '"
ck n1-path-capacity "echo $N1D=\$(cat /sys/block/$N1D/size) $D2=\$(cat /sys/block/$D2/size) sectors; test \$(cat /sys/block/$N1D/size) -eq \$(cat /sys/block/$D2/size)"
ck n1-rtpg-standby "sg_rtpg -d /dev/$N1D | tee /tmp/rtpg1; awk '/target port group id/ {g=\$6} /asymmetric access state/ {print g, \$0}' /tmp/rtpg1 | tee /dev/stderr | grep -i -E '^0x0*1 .*standby' && grep -q active/optimized /tmp/rtpg1"
ck n1-access-state-standby "astate $N1D; test \"\$(astate $N1D)\" = standby"
ck n2-still-optimized "astate $D2; test \"\$(astate $D2)\" = active/optimized"
ck mp-read-after-rejoin "dd if=$M of=/tmp/back bs=1M count=64 iflag=direct && cmp /tmp/pattern /tmp/back"
ck mp-write-after-rejoin "dd if=/tmp/pattern2 of=$M bs=1M count=16 seek=192 oflag=direct && dd if=$M of=/tmp/back2 bs=1M skip=192 count=16 iflag=direct && cmp /tmp/pattern2 /tmp/back2"
ck pr-clear sg_persist --out --clear --param-rk=$PRK /dev/$D2
multipath -F >/dev/null 2>&1; udevadm settle -t 30 2>/dev/null
ck logout ki_logout_all
EOF

# --- host side of the guest's requests ------------------------------------
now_s() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now_s)" 'BEGIN {printf "%.2f", b - a}'; }
watch_guest() { # SHARE: serve the guest's requests until killed
  local share=$1 t0= info p tl=
  while :; do
    if [ -e "$share/kill-request" ]; then
      rm -f "$share/kill-request"
      p=$(cat "$OUT/$N1.pid")
      echo "=== $(date -u +%T.%N) kill -9 $N1 ($p) (requested by guest) ===" | tee -a "$OUT/$N1.log" "$OUT/$N2.log" "$OUT/$N3.log" >/dev/null
      kill -9 "$p"; t0=$(now_s)
      while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
      : >"$share/killed"
      # the owner as n2 and n3 see it, every 0.5 s for 40 s
      ( for _ in $(seq 80); do
          echo "+$(since "$t0") s $N2: $(lun_info $N2 || true) | $N3: $(lun_info $N3 || true)"
          sleep 0.5
        done ) >"$OUT/owner-timeline.txt" 2>&1 &
      tl=$!
    fi
    if [ -e "$share/owner-check-request" ]; then
      rm -f "$share/owner-check-request"
      local r=FAIL det=
      for _ in $(seq 120); do
        det="$N2: $(lun_info $N2) / $N3: $(lun_info $N3)"
        if $PY - "$EPOCH0" "$N2" "$(lun_info $N2)" "$(lun_info $N3)" <<'PY'
import sys
e0 = int(sys.argv[1])
for info in sys.argv[3:]:
    f = info.split()
    if len(f) < 2 or f[0] != sys.argv[2] or int(f[1]) <= e0:
        sys.exit(1)
PY
        then r=PASS; break; fi
        sleep 0.5
      done
      echo "$r owner $N2 with an epoch above $EPOCH0 (owner epoch in_sync copies alive): $det" >"$share/owner-check"
    fi
    if [ -e "$share/restart-request" ]; then
      rm -f "$share/restart-request"
      [ -n "$tl" ] && { kill "$tl" 2>/dev/null; wait "$tl" 2>/dev/null; tl=; }
      echo "=== $(date -u +%T.%N) restart $N1 (requested by guest) ===" >>"$OUT/$N1.log"
      local r=FAIL det="$N1 did not start: $(tail -3 "$OUT/$N1.log")" t1
      t1=$(now_s)
      if start_node $N1; then
        for _ in $(seq 360); do
          info=$(lun_info $N2)
          det="$N2: $info"
          case "$info" in "$N2 "*" $N1:in-sync,$N2:in-sync "*|"$N2 "*" $N2:in-sync,$N1:in-sync "*) r=PASS; break;; esac
          sleep 0.5
        done
      fi
      echo "$r $N1's copy in-sync again $(since "$t1") s after its restart (owner epoch in_sync copies alive): $det" >"$share/restarted"
    fi
    sleep 0.1
  done
}

scan_dmesg() { # DMESG_FILE
  local f=$1 d1= s1= h1= d2= h2=
  read -r _ d1 s1 h1 < <(grep '^n1 ' "$OUT/share/paths" 2>/dev/null)
  read -r _ d2 h2 < <(grep '^n2 ' "$OUT/share/paths" 2>/dev/null)
  local pat='sense|unsupported|not supported|conn error|connection[0-9:]* error|timed out|timing out|i/o error|critical|call trace|warning|rejected|abort|reset|failed|failing|illegal|invalid|unaligned|recovery|mismatch|disabl|ignor|unable|bogus|incorrect|inconsistent|exceed|truncat|out of range|offline|beyond end|not a multiple'
  local benign='Power-on or device reset occurred|fail to add MMCONFIG|Fast TSC calibration failed|Mode Sense:|Write cache:|iommu:|CONFIG_IMA_DISABLE_HTABLE'
  ki_known_kernel_noise "$f" | sed -n '/iSCSI transport class/,$p' | grep -i -E "$pat" | grep -v -E "$benign" >"$OUT/dmesg-all-complaints.txt"
  # the dead path: its connection drops, its session times out, its I/O fails
  local dead='^$'
  [ -n "$d1" ] && dead="\\b$d1\\b|\\[$d1\\]|session$s1\\b|connection$s1:|sd $h1:"
  # the standby path refuses reads (NOT READY, standby): the partition scan at attach fails
  local standby='^$'
  [ -n "$d2" ] && standby="ldm_validate_partition_table\\(\\): Disk read failed|Dev $d2: unable to read RDB block 0|$d2: unable to read partition table"
  # dm-multipath failing/reinstating paths is what it is for
  grep -E "$dead" "$OUT/dmesg-all-complaints.txt" >"$OUT/dmesg-dead-path.txt"
  grep -v -E "$dead" "$OUT/dmesg-all-complaints.txt" | grep -v -E "$standby" |
    grep -v -E 'multipath: [0-9:]+: (Failing|Reinstating) path' >"$OUT/dmesg-complaints.txt"
  echo "  standby path ($d2) at attach: $(grep -c -E "$standby" "$OUT/dmesg-all-complaints.txt") failed partition-table reads (expected)"
  echo "  dead path ($d1, session $s1): $(wc -l <"$OUT/dmesg-dead-path.txt") kernel lines (expected), in $OUT/dmesg-dead-path.txt:"
  head -12 "$OUT/dmesg-dead-path.txt" | sed 's/^/    /'
  echo "  dm-multipath path events:"
  grep -E 'multipath: [0-9:]+: (Failing|Reinstating) path|alua: ' "$f" | sed 's/^/    /' | head -30
  if [ -s "$OUT/dmesg-complaints.txt" ]; then
    bad dmesg "kernel complained outside the dead path ($(wc -l <"$OUT/dmesg-complaints.txt") lines, $OUT/dmesg-complaints.txt):"
    sed 's/^/    /' "$OUT/dmesg-complaints.txt" | head -40
  else ok "dmesg: no complaints beyond the dead path ($d1)"; fi
  if grep -E -i "i/o error" "$f" | grep -q -E "dm-[0-9]"; then
    bad dmesg-map-io-error "I/O error on the multipath map: $(grep -E -i 'i/o error' "$f" | grep -E 'dm-[0-9]' | head -3)"
  else ok "dmesg: no I/O error on the multipath map"; fi
}

# --- the VM ------------------------------------------------------------------
share="$OUT/share"
rm -rf "$share"; mkdir -p "$share"
watch_guest "$share" & WATCH_PID=$!
echo "--- VM: 127.0.0.1:${B1}60 ($N1) 127.0.0.1:${B2}60 ($N2) (console: $OUT/console.log)"
t0=$SECONDS rc=0
"$RUNVM" -q -o "$OUT/console.log" -t "$VM_TIMEOUT" -s "$share" -e KI_TARGET=$IQN ${KF_RESCAN:+-e KF_RESCAN=1} \
  -p "127.0.0.1:${B1}60" -p "127.0.0.1:${B2}60" "$OUT/guest.sh" >"$OUT/run.log" 2>&1 || rc=$?
kill "$WATCH_PID" 2>/dev/null; wait "$WATCH_PID" 2>/dev/null; WATCH_PID=
tr -d '\r' <"$OUT/console.log" >"$OUT/console.txt"
while IFS= read -r line; do
  case "$line" in
    "KI_CHECK PASS "*) ok "vm/${line#KI_CHECK PASS }";;
    "KI_CHECK FAIL "*) line=${line#KI_CHECK FAIL }; bad "vm/${line%%:*}" "${line#*:}";;
  esac
done < <(grep -a -E '^KI_CHECK (PASS|FAIL) ' "$OUT/console.txt")
if [ "$rc" -eq 0 ]; then ok "vm: guest script finished ($((SECONDS - t0)) s)"
else bad vm "run-vm.sh exit status $rc after $((SECONDS - t0)) s (124 = VM timeout, 125 = no status; see $OUT/run.log)"; fi
grep -a '^KI_NOTE ' "$OUT/console.txt" | sed 's/^KI_NOTE /NOTE /'
fo=$(grep -a '^KI_FAILOVER_SECONDS ' "$OUT/console.txt" | tail -1 | cut -d' ' -f2)
[ -n "$fo" ] && echo "  failover as the initiator saw it: first IO completed $fo s after kill -9 of the owner"
if [ -s "$OUT/owner-timeline.txt" ]; then
  echo "  owner after the kill (as $N2 / $N3 answer: owner epoch in_sync copies alive):"
  awk '{k=$0; sub(/^[^ ]+ s /, "", k); if (k != last) print "    " $0; last=k}' "$OUT/owner-timeline.txt" | head -15
fi
if [ -s "$OUT/console.log.dmesg" ]; then scan_dmesg "$OUT/console.log.dmesg"
else bad dmesg "no guest dmesg saved"; fi

# --- hatgt's own logs ------------------------------------------------------------
for n in $N2 $N3 $N1; do
  [ $n = $N1 ] && [ ! -e "$share/restarted" ] && continue # killed, never restarted
  p=$(cat "$OUT/$n.pid" 2>/dev/null)
  kill -0 "$p" 2>/dev/null || bad "$n-alive" "$n exited (no 'signal received' line: SIGKILL, by whom?): $(tail -2 "$OUT/$n.log")"
done
cat "$OUT"/$N1.log "$OUT"/$N2.log "$OUT"/$N3.log | grep -a 'level=ERROR' >"$OUT/hatgt-errors-all.txt"
# Raft and memberlist report every failed RPC to the killed node (its
# ports ${B1}7x) as an ERROR (one log format for the whole node shows them as
# level=ERROR): expected, like the dead path's lines in dmesg.
dead_raft="127\.0\.0\.1:${B1}7[0-9][^0-9].*connection refused"
grep -a -E "$dead_raft" "$OUT/hatgt-errors-all.txt" >"$OUT/hatgt-errors-dead-node.txt"
grep -a -v -E "$dead_raft" "$OUT/hatgt-errors-all.txt" >"$OUT/hatgt-errors.txt"
echo "  Raft's and memberlist's errors about the killed $N1: $(wc -l <"$OUT/hatgt-errors-dead-node.txt") lines (expected)"
if [ -s "$OUT/hatgt-errors.txt" ]; then
  bad hatgt-log "ERROR lines in the node logs ($OUT/hatgt-errors.txt):"; head -20 "$OUT/hatgt-errors.txt" | sed 's/^/    /'
else ok "hatgt logs: no ERROR lines"; fi
grep -a -h 'level=WARN' "$OUT"/$N1.log "$OUT"/$N2.log "$OUT"/$N3.log | head -20 | sed 's/^/    WARN /'
HATGT_ADDR=$(api $N2) "$H" status >"$OUT/status-after.txt" 2>&1

finish
