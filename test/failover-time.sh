#!/usr/bin/env bash
# Measures Raft leader failover with real processes (not part of CI):
# three nodes on 127.0.0.21-23, kill -9 of the leader, time until a
# survivor's `hatgt status --json` names a new leader (polled every 50 ms),
# restart of the killed node; TRIES times (default 10). Prints one line per
# try and min/median/max.
#   bash test/failover-time.sh
set -u
root="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
work="$(mktemp -d /tmp/hatgt-failover.XXXXXX)"
B=$work/hatgt; D=$work/data; mkdir -p $D
go build -o "$B" "$root/cmd/hatgt" || exit 1
TRIES=${TRIES:-10}
export HATGT_TOKEN=fo-token-123456
start() { # id ip extra...
  local id=$1 ip=$2; shift 2
  $B serve --node-id $id --data-dir $D/$id --bind $ip "$@" > $D/$id.log 2>&1 &
  echo $! > $D/$id.pid
}
start n1 127.0.0.21 --bootstrap; sleep 2
start n2 127.0.0.22 --join 127.0.0.21:3270
start n3 127.0.0.23 --join 127.0.0.21:3270
sleep 5
times=()
ipof() { case $1 in n1) echo 127.0.0.21;; n2) echo 127.0.0.22;; n3) echo 127.0.0.23;; esac; }
leader() { HATGT_ADDR=$1:3270 timeout 2 $B status --json 2>/dev/null | python3 -c 'import sys,json; print(json.load(sys.stdin).get("leader") or "")' 2>/dev/null; }
for i in $(seq 1 "$TRIES"); do
  L=$(leader 127.0.0.21); [ -z "$L" ] && L=$(leader 127.0.0.22)
  surv=n1; [ "$L" = n1 ] && surv=n2
  kill -9 $(cat $D/$L.pid); t0=$(date +%s.%N)
  while :; do
    NL=$(leader $(ipof $surv))
    if [ -n "$NL" ] && [ "$NL" != "$L" ]; then break; fi
    sleep 0.05
  done
  t1=$(date +%s.%N)
  dt=$(python3 -c "print(round($t1-$t0,2))"); times+=("$dt")
  echo "try $i: killed $L, new leader $NL after $dt s"
  ip=$(ipof $L); start $L $ip; sleep 4
done
for n in n1 n2 n3; do kill -9 $(cat $D/$n.pid) 2>/dev/null; done
wait 2>/dev/null
rm -rf "$work"
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; print "leader failover: min", a[1], "s, median", m, "s, max", a[NR], "s over", NR, "tries"}'
