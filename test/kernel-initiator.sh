#!/usr/bin/env bash
# kernel-initiator.sh - check hatgt against the REAL Linux initiator (open-iscsi
# + kernel iscsi_tcp, dm-multipath, scsi_dh_alua) in a throwaway qemu VM.
#
# NOT part of CI or test/run-all.sh: the VM is software-emulated (TCG) and a
# full run (both VMs) takes ~4-5 minutes on a busy 2-core box, more under
# heavier load. Run it by hand (as root) after changes to target/ or scsi/:
#
#   bash test/kernel-initiator.sh            # build, smoke + multipath
#   bash test/kernel-initiator.sh smoke      # only the single-path run
#   bash test/kernel-initiator.sh multipath  # only the two-portal run
#   bash test/kernel-initiator.sh FILE       # your own guest script (test/vm/
#                                            # run-vm.sh -h), both portals,
#                                            # KI_TARGET set
#
# Needs: root (the VM's network is a private network namespace), Go, and the
# host packages of the repository's VM harness test/vm/run-vm.sh
# (qemu-system-x86, socat, cpio, debian-archive-keyring: it says what is
# missing; `test/vm/run-vm.sh --install-deps` installs them). Its guest, a
# Debian bookworm kernel + initramfs, is built on first use (0.5-2.5 min, apt)
# and cached in ~/.cache/hatgt-vm (test/vm/README.md).
#
# What it does:
#   1. go build ./cmd/hatgt into a temp dir;
#   2. starts `hatgt serve --config` on TWO portals 127.0.0.1:P1 and
#      127.0.0.1:P2 (random ports in 5000-5999, or KI_PORTS="P1 P2") with two
#      targets: iqn.2026-11.io.hatgt:ki (1 GiB fileio LUN 0, write-back) and
#      iqn.2026-11.io.hatgt:ki-chap (64 MiB, write-through, mutual CHAP);
#   3. "smoke" VM (portal P1 only): SendTargets, login, INQUIRY/ALUA handler,
#      REPORT SUPPORTED OPCODES, READ CAPACITY(16), SET TARGET PORT GROUPS
#      refused, 64 MiB O_DIRECT write/read/verify, 4 parallel writers, 4 MiB
#      commands, SYNCHRONIZE CACHE, discard (UNMAP) reads back zeros, WRITE
#      SAME, persistent reservations, LUN/TARGET RESET (sg_reset; skipped by
#      a guest without it), hatgt frozen 8 s (SIGSTOP) with a
#      3 s SCSI timeout, a hatgt crash (SIGKILL) + restart with the session
#      recovering and the data intact, a graceful stop (SIGTERM) + start with
#      the same, logout; then mutual CHAP: wrong secret refused, login + I/O,
#      wrong target secret refused;
#   4. "multipath" VM (both portals, negotiating CRC32C header+data digests,
#      MaxRecvDataSegmentLength 16 KiB, InitialR2T=Yes, ImmediateData=No,
#      MaxBurstLength 128 KiB): two paths, scsi_dh_alua attached,
#      dm-multipath map with hwhandler '1 alua', I/O through the map, one path
#      offlined while I/O continues, path reinstated, hatgt crash + restart
#      during a read through the map (all paths fail and come back);
#   5. scans the guest dmesg for the kernel complaining (sense data, conn
#      errors, timeouts, "unsupported", I/O errors, call traces) and hatgt's
#      log for ERROR lines; each scan is one check.
#
# Restart: while hatgt is down, the relays of test/vm/run-vm.sh refuse the
# guest's connections (RST), as a real network does (test/vm/README.md,
# Network). (Relays that accepted and closed them instead made open-iscsi
# 2.1.8's iscsid give up reconnecting: session stuck in REOPEN.) The restart
# is immediate by default; KI_RESTART_DELAY=S keeps hatgt down S seconds.
#
# Output: one line per check, then "N passed, N failed"; exit status 0 only
# when nothing failed. Logs (hatgt log, VM consoles, guest dmesg) stay in the
# directory printed at the start (KI_OUT=DIR to choose it).
#
# Env: KI_REV=COMMIT builds that commit (git archive) instead of the working
# tree, e.g. KI_REV=HEAD while others have uncommitted edits; KI_RESTART_DELAY=S
# seconds hatgt stays dead in the crash test (default 0, see "Restart");
# KI_OUT, KI_PORTS; KI_VM_TIMEOUT seconds per VM (default 1200);
# HATGT_LOG_LEVEL (default debug).
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${KI_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/hatgt-ki.XXXXXX")}
VM_TIMEOUT=${KI_VM_TIMEOUT:-1200}
LOG_LEVEL=${HATGT_LOG_LEVEL:-debug}
IQN=iqn.2026-11.io.hatgt:ki
MODES=${*:-smoke multipath}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# shellcheck source=test/kernel-lib.sh
. "$ROOT/test/kernel-lib.sh"

HATGT_PID= WATCH_PID=
cleanup() {
  [ -n "$WATCH_PID" ] && kill "$WATCH_PID" 2>/dev/null
  if [ -n "$HATGT_PID" ] && kill "$HATGT_PID" 2>/dev/null; then
    for _ in $(seq 350); do kill -0 "$HATGT_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  # a restarted hatgt's pid is kept in a file by the watcher
  [ -s "$OUT/hatgt.pid" ] && kill "$(cat "$OUT/hatgt.pid")" 2>/dev/null
  true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ki_preflight kernel-initiator.sh

# --- build ---------------------------------------------------------------
ki_build
"$RUNVM" --build-only >"$OUT/vm-build.log" 2>&1 || { bad vm-build "$(tail -5 "$OUT/vm-build.log")"; finish; exit 1; }

# --- ports + config --------------------------------------------------------
port_free() { ! ss -ltnH "sport = :$1" 2>/dev/null | grep -q .; }
if [ -n "${KI_PORTS:-}" ]; then
  set -- $KI_PORTS; P1=$1 P2=$2
else
  P1= P2=
  for _ in $(seq 50); do
    p=$((5000 + RANDOM % 1000))
    port_free "$p" || continue
    if [ -z "$P1" ]; then P1=$p; elif [ "$p" != "$P1" ]; then P2=$p; break; fi
  done
fi
[ -n "$P1" ] && [ -n "$P2" ] || { bad ports "no free ports"; finish; exit 1; }
mkdir -p "$OUT/data"
cat >"$OUT/hatgt.conf" <<EOF
Portal 127.0.0.1:$P1
Portal 127.0.0.1:$P2

Target $IQN
    Alias kernel-initiator test
    Lun 0 Path=$OUT/data/lun0.img,Size=1G,IOMode=wb

Target $IQN-chap
    Lun 0 Path=$OUT/data/chap0.img,Size=64M,IOMode=wt
    IncomingUser kiuser kisecret0123456
    OutgoingUser kitarget kitgtsecret98765
EOF

start_hatgt() { # -> HATGT_PID, waits until both portals listen
  "$OUT/hatgt" serve --config "$OUT/hatgt.conf" --log-level "$LOG_LEVEL" >>"$OUT/hatgt.log" 2>&1 &
  HATGT_PID=$!
  disown "$HATGT_PID" 2>/dev/null # no "Killed" job message after the crash test
  echo "$HATGT_PID" >"$OUT/hatgt.pid"
  for _ in $(seq 100); do
    if ! port_free "$P1" && ! port_free "$P2"; then return 0; fi
    kill -0 "$HATGT_PID" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
if start_hatgt; then ok "hatgt serving on 127.0.0.1:$P1 and 127.0.0.1:$P2"
else bad hatgt-start "$(tail -5 "$OUT/hatgt.log")"; finish; exit 1; fi

# --- guest scripts ---------------------------------------------------------
# Sourced by the guest's sh after /ki/lib.sh. Each check prints
# "KI_CHECK PASS name" or "KI_CHECK FAIL name: detail"; the host counts them.
ki_guest_checks >"$OUT/guest-lib.sh"
cat >>"$OUT/guest-lib.sh" <<'EOF'
same() { cmp "$1" "$2"; }
readback() { # DEV OFFSET_MIB COUNT_MIB FILE: O_DIRECT read
  rm -f $4; dd if=/dev/$1 of=$4 bs=1M skip=$2 count=$3 iflag=direct
}
diag() {
  echo "=== DIAG (status $1) ==="
  iscsiadm -m session -P 3 2>&1 | grep -E 'Portal|State|SID|Timeout|Length|Immediate|InitialR2T|Outstanding|Digest|disk'
  for d in $(ki_iscsi_disks); do
    echo "--- /dev/$d"
    for f in device/dh_state device/access_state device/state queue/max_sectors_kb queue/discard_max_bytes \
             queue/write_zeroes_max_bytes queue/optimal_io_size queue/write_cache queue/fua; do
      echo "$f=$(cat /sys/block/$d/$f 2>/dev/null)"
    done
    cat /sys/block/$d/device/scsi_disk/*/provisioning_mode 2>/dev/null | sed 's/^/provisioning_mode=/'
  done
  multipath -ll 2>/dev/null
}
trap 'diag $?' EXIT
EOF

cat >"$OUT/guest-smoke.sh" <<'EOF'
ki_set node.session.timeo.replacement_timeout 90
p=${KI_PORTALS%% *}
ck discovery "ki_targets $p | tee /dev/stderr | grep -qx '$KI_TARGET'"
ck_fatal login ki_login "$KI_TARGET" "$p"
d=$(ki_wait_disks 1 30 | head -1)
ck_fatal disk test -n "$d"
ck inquiry "sg_inq /dev/$d | grep -E 'Vendor|Product|TPGS' && grep -q HATGT /sys/block/$d/device/vendor"
ck alua-handler "cat /sys/block/$d/device/dh_state /sys/block/$d/device/access_state; grep -qx alua /sys/block/$d/device/dh_state"
ck rtpg sg_rtpg -d /dev/$d
ck vpd-0x83 sg_vpd -p 0x83 /dev/$d
# (sg_raw: the exact CDBs, whatever the sg3-utils version makes of them)
ck report-opcodes "sg_raw -r 8192 -o /tmp/opc /dev/$d a3 0c 00 00 00 00 00 00 20 00 00 00 && test \$(wc -c </tmp/opc) -gt 100"
ck report-opcodes-one "sg_raw -r 64 /dev/$d a3 0c 01 93 00 00 00 00 00 40 00 00 2>&1 | tee /dev/stderr | grep -q -E '^ *00 +00 03'"
ck readcap16 "sg_readcap -l /dev/$d | tee /dev/stderr | grep -q 'lbpme=1'"
# TPGS=01b (implicit only): SET TARGET PORT GROUPS must be an invalid opcode
# (sg_stpg exits 0 even then, so look at the sense it prints)
ck stpg-rejected "sg_stpg -v --optimized /dev/$d 2>&1 | tee /dev/stderr | grep -q -i 'invalid.*op.*code' && sg_rtpg -d /dev/$d | grep -q 'active/optimized'"
ck tur sg_turs -n 3 /dev/$d
dd if=/dev/urandom of=/tmp/pattern bs=1M count=64 2>/dev/null
ck write-64M dd if=/tmp/pattern of=/dev/$d bs=1M count=64 oflag=direct
ck read-64M dd if=/dev/$d of=/tmp/back bs=1M count=64 iflag=direct
ck verify-64M same /tmp/pattern /tmp/back
# 4 writers at once (several commands in flight: CmdSN window, R2T, ITTs)
for i in 0 1 2 3; do
  dd if=/tmp/pattern of=/dev/$d bs=256k count=32 skip=$((i*32)) seek=$((256 + i*32)) oflag=direct 2>/tmp/par$i.err &
done
wait
ck parallel-write "! grep -l -i error /tmp/par*.err"
ck parallel-verify "dd if=/dev/$d of=/tmp/back2 bs=1M skip=64 count=32 iflag=direct 2>/dev/null && head -c 33554432 /tmp/pattern | cmp - /tmp/back2"
# 4 MiB commands: several R2T / Data-In sequences per command
ck big-io "echo 4096 > /sys/block/$d/queue/max_sectors_kb; cat /sys/block/$d/queue/max_sectors_kb /sys/block/$d/queue/max_hw_sectors_kb;
  dd if=/tmp/pattern of=/dev/$d bs=4M count=16 seek=128 oflag=direct && readback $d 512 64 /tmp/back && cmp /tmp/pattern /tmp/back"
echo 1024 > /sys/block/$d/queue/max_sectors_kb
ck sync-cache-10 sg_raw /dev/$d 35 00 00 00 00 00 00 00 00 00
ck sync-cache-16 sg_raw /dev/$d 91 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
ck fsync-blockdev "dd if=/tmp/pattern of=/dev/$d bs=1M count=4 seek=200 conv=fsync"
# discard: UNMAP (LBPRZ=1 -> reads back zeros)
dd if=/tmp/pattern of=/dev/$d bs=1M count=1 seek=300 oflag=direct 2>/dev/null
ck discard "cat /sys/block/$d/device/scsi_disk/*/provisioning_mode; blkdiscard -o $((300*1048576)) -l 1048576 /dev/$d"
dd if=/dev/zero of=/tmp/zero1m bs=1M count=1 2>/dev/null
ck discard-zeros "dd if=/dev/$d bs=1M skip=300 count=1 iflag=direct 2>/dev/null | cmp - /tmp/zero1m"
# WRITE SAME(16) LBA 2000000 (0x1e8480) x64 and WRITE SAME(10) LBA 2000064 x64, zero block, over random data
dd if=/dev/zero of=/tmp/zero512 bs=512 count=1 2>/dev/null
dd if=/tmp/pattern of=/dev/$d bs=512 seek=2000000 count=128 oflag=direct 2>/dev/null
ck write-same "sg_raw -s 512 -i /tmp/zero512 /dev/$d 93 00 00 00 00 00 00 1e 84 80 00 00 00 40 00 00 &&
  sg_raw -s 512 -i /tmp/zero512 /dev/$d 41 00 00 1e 84 c0 00 00 40 00 &&
  dd if=/dev/$d of=/tmp/ws bs=512 skip=2000000 count=128 iflag=direct 2>/dev/null && head -c 65536 /tmp/zero1m >/tmp/z64 && cmp /tmp/ws /tmp/z64"
ck persistent-reservation "
  sg_persist -n --out --register --param-sark=0xabc /dev/$d &&
  sg_persist -n --in --read-keys /dev/$d | grep -q 0xabc &&
  sg_persist -n --out --reserve --param-rk=0xabc --prout-type=5 /dev/$d &&
  sg_persist -n --in --read-reservation /dev/$d | grep -q 0xabc &&
  dd if=/dev/$d of=/dev/null bs=1M count=1 iflag=direct &&
  sg_persist -n --out --release --param-rk=0xabc --prout-type=5 /dev/$d &&
  sg_persist -n --out --register --param-rk=0xabc --param-sark=0 /dev/$d &&
  ! sg_persist -n --in --read-keys /dev/$d | grep -q 0xabc"
if command -v sg_reset >/dev/null; then
  ck lun-reset "sg_reset -d /dev/$d && sleep 2 && readback $d 0 4 /tmp/r && head -c 4194304 /tmp/pattern | cmp - /tmp/r"
  ck target-reset "sg_reset -t /dev/$d && sleep 2 && readback $d 0 4 /tmp/r && head -c 4194304 /tmp/pattern | cmp - /tmp/r"
fi
ck state-running "cat /sys/block/$d/device/state; grep -qx running /sys/block/$d/device/state"
# hatgt frozen 8 s with a 3 s SCSI command timeout: the kernel aborts the
# command (ABORT TASK, maybe LUN RESET) or drops the connection on its NOP-Out
# ping timeout; either way the I/O must complete once hatgt runs again
if [ -d /ki/share ] && [ -n "${KI_RESTART:-}" ]; then
  echo 3 > /sys/block/$d/device/timeout
  ki_log "asking the host to freeze hatgt for 8 s"
  ki_request stall-request 8
  i=0; while [ ! -e /ki/share/stalled ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
  ck stall-read "readback $d 0 16 /tmp/r && head -c 16777216 /tmp/pattern | cmp - /tmp/r"
  i=0; while [ ! -e /ki/share/resumed ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
  i=0; while ! iscsiadm -m session -P 1 | grep -q 'Connection State: LOGGED IN' && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done
  ck stall-write-after "dd if=/tmp/pattern of=/dev/$d bs=1M count=8 seek=600 oflag=direct && readback $d 600 8 /tmp/r && head -c 8388608 /tmp/pattern | cmp - /tmp/r"
  ck stall-state-running "cat /sys/block/$d/device/state; grep -qx running /sys/block/$d/device/state"
  dmesg | tail -20
  echo 30 > /sys/block/$d/device/timeout
fi
# hatgt crash + restart: the session must recover (same ISID, TSIH 0 login)
if [ -d /ki/share ] && [ -n "${KI_RESTART:-}" ]; then
  ki_log "asking the host to kill -9 and restart hatgt"
  ki_request restart-request
  i=0; while [ ! -e /ki/share/restarted ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
  ck host-restarted test -e /ki/share/restarted
  # the initiator reconnects on its own (iscsid: same ISID, TSIH 0); log what it sees
  i=0
  while [ $i -lt 60 ]; do
    st=$(iscsiadm -m session -P 1 2>&1 | grep -E 'Connection State|Session State' | tr -s '\t\n ' '  ')
    echo "[$(cut -d' ' -f1 /proc/uptime)] $st"
    case "$st" in *"Connection State: LOGGED IN"*) break;; esac
    [ $((i % 5)) -eq 0 ] && netstat -tn 2>/dev/null | grep -E ':(${KI_HOST_PORTALS##*:})|10.0.2.2'
    sleep 2; i=$((i+1))
  done
  ck session-recovered-in-120s "iscsiadm -m session -P 1 | grep -q 'iSCSI Connection State: LOGGED IN'"
  ck io-after-restart "readback $d 0 64 /tmp/back && cmp /tmp/pattern /tmp/back"
  ck write-after-restart "dd if=/tmp/pattern of=/dev/$d bs=1M count=8 seek=400 oflag=direct && readback $d 400 8 /tmp/r && head -c 8388608 /tmp/pattern | cmp - /tmp/r"
  ck session-recovered "iscsiadm -m session -P 1 | grep -E 'State'; iscsiadm -m session -P 1 | grep -q 'iSCSI Session State: LOGGED_IN'"
fi
udevadm settle -t 30 2>/dev/null; sync
# graceful stop: hatgt asks the initiator to log out (Async Message, AsyncEvent 1)
# and exits; the initiator logs out, reconnects once hatgt is back
if [ -d /ki/share ] && [ -n "${KI_RESTART:-}" ]; then
  ki_log "asking the host to stop hatgt with SIGTERM and start it again"
  ki_request term-request
  i=0; while [ ! -e /ki/share/termed ] && [ $i -lt 900 ]; do sleep 0.1; i=$((i+1)); done
  ck term-restarted "test -e /ki/share/termed && echo hatgt took \$(cat /ki/share/term-seconds) s to stop"
  i=0
  while [ $i -lt 60 ]; do
    st=$(iscsiadm -m session -P 1 2>&1 | grep -E 'Connection State|Session State' | tr -s '\t\n ' '  ')
    echo "[$(cut -d' ' -f1 /proc/uptime)] $st"
    case "$st" in *"Connection State: LOGGED IN"*) break;; esac
    sleep 2; i=$((i+1))
  done
  ck term-session-recovered "iscsiadm -m session -P 1 | grep -q 'iSCSI Connection State: LOGGED IN'"
  ck term-io-after "dd if=/tmp/pattern of=/dev/$d bs=1M count=8 seek=700 oflag=direct && readback $d 700 8 /tmp/r && head -c 8388608 /tmp/pattern | cmp - /tmp/r"
fi
udevadm settle -t 30 2>/dev/null; sync
ck logout ki_logout_all
ck no-disk-after-logout "sleep 1; test -z \"\$(ki_iscsi_disks)\""
# mutual CHAP target (IncomingUser + OutgoingUser in the config)
ck chap-discovery "ki_targets $p | grep -qx '$KI_TARGET-chap'"
ki_set node.session.auth.authmethod CHAP
ki_set node.session.auth.username kiuser
ki_set node.session.auth.password wrongsecret01234
ck chap-wrong-secret-refused "! ki_login '$KI_TARGET-chap' $p"
iscsiadm -m node -T "$KI_TARGET-chap" -p $p -o delete >/dev/null 2>&1
KI_NODE_SETTINGS=
ki_set node.session.auth.authmethod CHAP
ki_set node.session.auth.username kiuser
ki_set node.session.auth.password kisecret0123456
ki_set node.session.auth.username_in kitarget
ki_set node.session.auth.password_in kitgtsecret98765
ck chap-login ki_login "$KI_TARGET-chap" $p
c=$(ki_wait_disks 1 30 | head -1)
ck chap-io "dd if=/tmp/pattern of=/dev/$c bs=1M count=8 oflag=direct && readback $c 0 8 /tmp/r && head -c 8388608 /tmp/pattern | cmp - /tmp/r"
udevadm settle -t 30 2>/dev/null
ck chap-logout ki_logout_all
iscsiadm -m node -T "$KI_TARGET-chap" -p $p -o delete >/dev/null 2>&1
KI_NODE_SETTINGS=
ki_set node.session.auth.authmethod CHAP
ki_set node.session.auth.username kiuser
ki_set node.session.auth.password kisecret0123456
ki_set node.session.auth.username_in kitarget
ki_set node.session.auth.password_in wrongtgtsecret12
ck chap-wrong-target-secret-refused "! ki_login '$KI_TARGET-chap' $p"
ki_logout_all >/dev/null 2>&1
ck no-disk-at-end "sleep 1; test -z \"\$(ki_iscsi_disks)\""
EOF

cat >"$OUT/guest-multipath.sh" <<'EOF'
ki_set node.session.timeo.replacement_timeout 5
# other negotiation than the smoke run: digests, small PDUs, R2T for everything
ki_set node.conn[0].iscsi.HeaderDigest CRC32C
ki_set node.conn[0].iscsi.DataDigest CRC32C
ki_set node.conn[0].iscsi.MaxRecvDataSegmentLength 16384
ki_set node.session.iscsi.InitialR2T Yes
ki_set node.session.iscsi.ImmediateData No
ki_set node.session.iscsi.FirstBurstLength 65536
ki_set node.session.iscsi.MaxBurstLength 131072
n=$(echo $KI_PORTALS | wc -w)
ck_fatal login-all ki_login_all "$KI_TARGET"
disks=$(ki_wait_disks $n 30)
ck_fatal paths "test $(echo $disks | wc -w) -eq $n"
ki_log "paths: $(echo $disks)"
for d in $disks; do
  ck alua-$d "echo dh_state=\$(cat /sys/block/$d/device/dh_state) access_state=\$(cat /sys/block/$d/device/access_state); grep -qx alua /sys/block/$d/device/dh_state"
done
ck negotiated "iscsiadm -m session -P 2 | grep -E 'Digest|Length|R2T|Immediate' | sort | uniq -c; iscsiadm -m session -P 2 | grep -q 'HeaderDigest: CRC32C' && iscsiadm -m session -P 2 | grep -q 'DataDigest: CRC32C' && iscsiadm -m session -P 2 | grep -q 'InitialR2T: Yes'"
ck same-wwid "for d in $(echo $disks); do cat /sys/block/\$d/device/wwid; done | sort -u | wc -l | grep -qx 1"
ck_fatal multipath-map ki_multipath_start
m=/dev/mapper/$(multipath -l -v1 | head -1)
ck hwhandler-alua "multipath -ll | grep -q \"hwhandler='1 alua'\""
ck all-paths-ready "multipathd show paths; test \$(multipathd show paths | grep -c 'active ready') -eq $n"
dd if=/dev/urandom of=/tmp/pattern bs=1M count=64 2>/dev/null
ck mp-write dd if=/tmp/pattern of=$m bs=1M count=64 oflag=direct
ck mp-read dd if=$m of=/tmp/back bs=1M count=64 iflag=direct
ck mp-verify cmp /tmp/pattern /tmp/back
first=$(echo $disks | cut -d' ' -f1)
ki_log "offline $first, I/O must continue on the other path(s)"
echo offline > /sys/block/$first/device/state
ck mp-read-one-path-offline "dd if=$m of=/tmp/back bs=1M count=64 iflag=direct && cmp /tmp/pattern /tmp/back"
ck mp-write-one-path-offline "dd if=/tmp/pattern of=$m bs=1M count=16 seek=100 oflag=direct"
sleep 3; multipath -ll
echo running > /sys/block/$first/device/state
i=0; while [ $(multipathd show paths | grep -c 'active ready') -lt $n ] && [ $i -lt 30 ]; do sleep 1; i=$((i+1)); done
ck path-reinstated "multipathd show paths; test \$(multipathd show paths | grep -c 'active ready') -eq $n"
ck mp-read-after-reinstate "dd if=$m of=/tmp/back bs=1M count=16 skip=100 iflag=direct && head -c 16777216 /tmp/pattern | cmp - /tmp/back"
# hatgt crash + immediate restart under I/O through the map: every path fails
# at once; iSCSI session recovery (replacement_timeout 5) must bring them back
# before the I/O gives up, and the data must be intact
if [ -d /ki/share ] && [ -n "${KI_RESTART:-}" ]; then
  ki_log "kill -9 + restart of hatgt during a read through $m"
  (sleep 1; ki_request restart-request) &
  ck mp-read-across-crash "dd if=$m of=/tmp/back bs=1M count=64 iflag=direct && cmp /tmp/pattern /tmp/back"
  wait
  i=0; while [ ! -e /ki/share/restarted ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
  i=0; while [ $(multipathd show paths | grep -c 'active ready') -lt $n ] && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done
  ck mp-paths-back-after-crash "multipathd show paths; multipath -ll; test \$(multipathd show paths | grep -c 'active ready') -eq $n"
  ck mp-write-after-crash "dd if=/tmp/pattern of=$m bs=1M count=16 seek=200 oflag=direct && dd if=$m of=/tmp/back bs=1M count=16 skip=200 iflag=direct && head -c 16777216 /tmp/pattern | cmp - /tmp/back"
fi
multipath -F >/dev/null 2>&1; udevadm settle -t 30 2>/dev/null
ck logout ki_logout_all
EOF

# --- helpers for a VM run ----------------------------------------------------
# restart watcher: when the guest asks, kill -9 hatgt, restart it, tell the guest
watch_restart() { # SHARE: serve the guest's requests until killed
  local share=$1 secs t0
  while :; do
    if [ -e "$share/stall-request" ]; then # freeze hatgt (a stuck backend): SCSI timeouts, TMFs
      secs=$(cat "$share/stall-request"); rm -f "$share/stall-request"
      echo "=== $(date -u +%T) SIGSTOP $HATGT_PID for ${secs:-8} s (requested by guest) ===" >>"$OUT/hatgt.log"
      kill -STOP "$HATGT_PID"; : >"$share/stalled"
      sleep "${secs:-8}"; kill -CONT "$HATGT_PID"
      echo "=== $(date -u +%T) SIGCONT $HATGT_PID ===" >>"$OUT/hatgt.log"
      : >"$share/resumed"
    fi
    if [ -e "$share/restart-request" ]; then # crash: kill -9, start again
      rm -f "$share/restart-request"
      echo "=== $(date -u +%T) kill -9 $HATGT_PID and restart (requested by guest) ===" >>"$OUT/hatgt.log"
      kill -9 "$HATGT_PID"
      while kill -0 "$HATGT_PID" 2>/dev/null; do sleep 0.05; done
      sleep "${KI_RESTART_DELAY:-0}"
      if start_hatgt; then : >"$share/restarted"; fi
      # what reaches hatgt afterwards (reconnects of the initiator), for the log
      for _ in $(seq 20); do
        { date -u +%T; ss -tnp "( sport = :$P1 or sport = :$P2 )"; } >>"$OUT/ss-after-restart.log" 2>&1
        sleep 1
      done
    fi
    if [ -e "$share/term-request" ]; then # graceful stop (SIGTERM: Async logout request), start again
      rm -f "$share/term-request"
      echo "=== $(date -u +%T) SIGTERM $HATGT_PID and restart (requested by guest) ===" >>"$OUT/hatgt.log"
      t0=$SECONDS; kill -TERM "$HATGT_PID"
      while kill -0 "$HATGT_PID" 2>/dev/null; do sleep 0.05; done
      echo "=== $(date -u +%T) hatgt exited after $((SECONDS - t0)) s ===" >>"$OUT/hatgt.log"
      echo $((SECONDS - t0)) >"$share/term-seconds"
      if start_hatgt; then : >"$share/termed"; fi
    fi
    sleep 0.2
  done
}

scan_dmesg() { # NAME DMESG_FILE
  local pat='sense|unsupported|not supported|conn error|connection[0-9:]* error|timed out|timing out|i/o error|critical|call trace|warning|rejected|abort|reset|failed|illegal|invalid|unaligned|recovery|not a multiple|mismatch|disabl|ignor|unable|bogus|incorrect|inconsistent|exceed|truncat|too (large|small|big)|out of range'
  # expected: the POWER ON UA at first access, resets we asked for, the
  # offline path in the multipath run, the conn error of the hatgt restart
  local benign='Power-on or device reset occurred|fail to add MMCONFIG|Fast TSC calibration failed|Failing path|Reinstating path|rejecting I/O to offline device|Mode Sense:|Write cache:|iommu:|sg_reset|CONFIG_IMA_DISABLE_HTABLE'
  # both runs kill hatgt once: the connection drops (1020 = ISCSI_ERR_TCP_CONN_CLOSE),
  # and a reconnect that the relay accepted in the moment hatgt died drops too
  benign="$benign|detected conn error \\(1020\\)"
  # ... and a command in flight on a connection at that moment (a path
  # checker's TEST UNIT READY, which nothing retries) fails with it
  benign="$benign|FAILED Result: hostbyte=DID_TRANSPORT_DISRUPTED"
  # ... and freezes it for 8 s with a 3 s command timeout: aborts, resets and
  # ping timeouts are expected there (they are listed as "expected" below)
  local stall='timing out command|abort|ping timeout|conn error \(1011\)|device reset|target reset|Device offlined|session recovery'
  if [ "$1" = smoke ]; then
    grep -i -E "$stall" "$2" | grep -v "Power-on or device reset" | sed 's/^/    expected (stall test): /' | head -20
    benign="$benign|timing out command|abort|ping timeout|conn error \\(1011\\)|device reset|target reset"
    # a read-ahead (flags 0x80700: REQ_RAHEAD + FAILFAST, from udev/blkid) that
    # times out during the freeze is failed without retry: expected
    benign="$benign|hostbyte=DID_TIME_OUT|CDB: Read\\(10\\)|op 0x0:\\(READ\\) flags 0x80700|async page read"
  fi
  # only what follows the boot (from the iSCSI transport's load on)
  ki_known_kernel_noise "$2" | sed -n '/iSCSI transport class/,$p' | grep -i -E "$pat" | grep -v -E "$benign" >"$OUT/$1-dmesg-complaints.txt"
  if [ -s "$OUT/$1-dmesg-complaints.txt" ]; then
    bad "$1-dmesg" "kernel complained ($(wc -l <"$OUT/$1-dmesg-complaints.txt") lines, $OUT/$1-dmesg-complaints.txt):"
    sed 's/^/    /' "$OUT/$1-dmesg-complaints.txt" | head -40
  else ok "$1-dmesg: no complaints"; fi
}

run_vm() { # NAME GUEST PORTAL... -> counts checks
  local name=$1 guest=$2; shift 2
  local args=() share="$OUT/share-$name"
  rm -rf "$share"; mkdir -p "$share"
  for p in "$@"; do args+=(-p "$p"); done
  cat "$OUT/guest-lib.sh" "$OUT/$guest" >"$OUT/$name-guest.sh"
  local restart=
  restart=1; watch_restart "$share" & WATCH_PID=$! # the guest may ask for a crash/freeze/stop
  echo "--- VM $name: $* (console: $OUT/$name-console.log)"
  local t0=$SECONDS rc=0
  "$RUNVM" -q -o "$OUT/$name-console.log" -t "$VM_TIMEOUT" -s "$share" \
    -e KI_TARGET=$IQN ${restart:+-e KI_RESTART=1} "${args[@]}" "$OUT/$name-guest.sh" >"$OUT/$name-run.log" 2>&1 || rc=$?
  [ -n "$WATCH_PID" ] && { kill "$WATCH_PID" 2>/dev/null; wait "$WATCH_PID" 2>/dev/null; WATCH_PID=; }
  HATGT_PID=$(cat "$OUT/hatgt.pid")
  tr -d '\r' <"$OUT/$name-console.log" >"$OUT/$name-console.txt"
  local line
  while IFS= read -r line; do
    case "$line" in
      "KI_CHECK PASS "*) ok "$name/${line#KI_CHECK PASS }";;
      "KI_CHECK FAIL "*) line=${line#KI_CHECK FAIL }; bad "$name/${line%%:*}" "${line#*:}";;
    esac
  done < <(grep -a -E '^KI_CHECK (PASS|FAIL) ' "$OUT/$name-console.txt")
  if [ "$rc" -eq 0 ]; then ok "$name: guest script finished ($((SECONDS - t0)) s)"
  else bad "$name" "run-vm.sh exit status $rc after $((SECONDS - t0)) s (124 = VM timeout, 125 = no status; see $OUT/$name-run.log)"; fi
  if [ -s "$OUT/$name-console.log.dmesg" ]; then scan_dmesg "$name" "$OUT/$name-console.log.dmesg"
  else bad "$name-dmesg" "no guest dmesg saved"; fi
  kill -0 "$HATGT_PID" 2>/dev/null || bad "$name-hatgt-alive" "hatgt exited: $(tail -3 "$OUT/hatgt.log")"
}

for mode in $MODES; do
  case $mode in
    smoke) run_vm smoke guest-smoke.sh "127.0.0.1:$P1";;
    multipath) run_vm multipath guest-multipath.sh "127.0.0.1:$P1" "127.0.0.1:$P2";;
    *) if [ -f "$mode" ]; then cp "$mode" "$OUT/guest-custom.sh"; run_vm custom guest-custom.sh "127.0.0.1:$P1" "127.0.0.1:$P2"
       else echo "unknown mode $mode (smoke, multipath or a guest script file)" >&2; exit 2; fi;;
  esac
done

# --- hatgt's own log -----------------------------------------------------------
grep -a -E 'level=(ERROR|WARN)' "$OUT/hatgt.log" >"$OUT/hatgt-complaints.txt"
if grep -q 'level=ERROR' "$OUT/hatgt-complaints.txt"; then
  bad hatgt-log "ERROR lines in $OUT/hatgt.log:"; grep 'level=ERROR' "$OUT/hatgt-complaints.txt" | head -20 | sed 's/^/    /'
else ok "hatgt-log: no ERROR lines"; fi
if [ -s "$OUT/hatgt-complaints.txt" ]; then echo "hatgt WARN lines:"; grep 'level=WARN' "$OUT/hatgt-complaints.txt" | head -20 | sed 's/^/    /'; fi

finish
