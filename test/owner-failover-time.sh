#!/usr/bin/env bash
# Measures how long a replicated LUN is unavailable when its owner is
# killed (kill -9), with real processes (not part of CI; needs qemu-img):
# three nodes on 127.0.0.41-43; each try creates a 64 MiB LUN with two
# copies, writes it, kills its owner and times until the other copy's
# portal serves it (qemu-img info polled every 100 ms), then restarts the
# killed node. Two cases, TRIES times each (default 5):
#   leader:   the owner is also the Raft leader (a new leader must be
#             elected before the LUN can move)
#   follower: the owner is a follower (the leader stays)
# Prints one line per try and min/median/max per case.
#   bash test/owner-failover-time.sh
set -u
root="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
work="$(mktemp -d /tmp/hatgt-ofail.XXXXXX)"
B=$work/hatgt; D=$work/data; mkdir -p $D
go build -o "$B" "$root/cmd/hatgt" || exit 1
TRIES=${TRIES:-5}
export HATGT_TOKEN=ofail-token-123456
IQN=iqn.2026-11.io.hatgt:ofail
ipof() { case $1 in n1) echo 127.0.0.41;; n2) echo 127.0.0.42;; n3) echo 127.0.0.43;; esac; }
start() { # id extra...
  local id=$1; shift
  # In a subshell: the killed nodes are not this shell's jobs (no
  # "Killed" lines).
  ( $B serve --node-id $id --data-dir $D/$id --bind $(ipof $id) "$@" >> $D/$id.log 2>&1 &
    echo $! > $D/$id.pid )
}
cleanup() { for n in n1 n2 n3; do kill -9 $(cat $D/$n.pid 2>/dev/null) 2>/dev/null; done; sleep 1; rm -rf "$work"; }
trap cleanup EXIT
start n1 --bootstrap; sleep 2
start n2 --join 127.0.0.41:3270
start n3 --join 127.0.0.41:3270
sleep 5
cli() { HATGT_ADDR=$1:3270 timeout 10 $B "${@:2}"; }
status() { # field of "hatgt status --json" through any alive node
  for n in n1 n2 n3; do
    out=$(cli $(ipof $n) status --json 2>/dev/null); rc=$?
    # 3: the cluster has problems (a LUN not served during the failover)
    [ $rc = 0 ] || [ $rc = 3 ] && { echo "$out"; return; }
  done
}
leader() { status | python3 -c 'import sys,json; print(json.load(sys.stdin).get("leader") or "")'; }
insync() { # lun -> number of in-sync copies
  status | python3 -c "import sys,json
s=json.load(sys.stdin)
print(max([len(l.get('in_sync') or []) for t in s['targets'] for l in t['luns'] if l['lun']==$1] or [0]))"
}
bothinsync() { test "$(insync $1)" = 2; }
serves() { timeout 5 qemu-img info "iscsi://$(ipof $1):3260/$IQN/$2" > /dev/null 2>&1; }
waitfor() { local i; for i in $(seq 1 600); do "$@" && return 0; sleep 0.1; done; echo "timed out: $*" >&2; return 1; }
cli 127.0.0.41 target create $IQN > /dev/null
head -c 16M /dev/urandom > $work/src.raw
declare -A times
lun=0
for i in $(seq 1 "$TRIES"); do
  for mode in leader follower; do
    L=$(leader)
    others=(); for n in n1 n2 n3; do [ "$n" != "$L" ] && others+=($n); done
    if [ $mode = leader ]; then owner=$L; other=${others[0]}; else owner=${others[0]}; other=${others[1]}; fi
    cli $(ipof $L) lun create $IQN --lun $lun --size 64M --placement $owner,$other > /dev/null || exit 1
    waitfor bothinsync $lun || exit 1
    waitfor serves $owner $lun || exit 1
    qemu-img convert -n -f raw -O raw $work/src.raw "iscsi://$(ipof $owner):3260/$IQN/$lun" || exit 1
    kill -9 $(cat $D/$owner.pid); t0=$(date +%s.%N)
    waitfor serves $other $lun || exit 1
    t1=$(date +%s.%N)
    dt=$(python3 -c "print(round($t1-$t0,2))")
    times[$mode]+="$dt "
    echo "try $i ($mode): owner $owner killed (leader was $L), $other serves LUN $lun after $dt s"
    start $owner; sleep 1
    waitfor bothinsync $lun || exit 1
    lun=$((lun+1))
  done
done
for mode in leader follower; do
  printf '%s\n' ${times[$mode]} | sort -n | awk -v m=$mode '{a[NR]=$1} END {md=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; print "owner failover (" m "): min", a[1], "s, median", md, "s, max", a[NR], "s over", NR, "tries"}'
done
