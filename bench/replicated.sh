#!/usr/bin/env bash
# bench/replicated.sh: what synchronous replication costs a write.
#
# Builds hatgt from this tree and starts a three-node cluster of real
# processes on loopback addresses (127.0.0.21-23 by default, or the next
# free triple), each with its own data dir under the work directory. One
# target gets three 1 GiB write-back fileio LUNs, all owned by n1 (so all
# behind the same portal):
#
#   LUN 0  --replicas 1 --placement n1          (r1: no mirror)
#   LUN 1  --replicas 2 --placement n1,n2       (r2: one mirror)
#   LUN 2  --replicas 3 --placement n1,n2,n3    (r3: two mirrors)
#
# Every row is measured against the three LUNs alternately (the order
# flips each round), ROUNDS times; the table shows medians, the ratios
# r2/r1 and r3/r1 (the goal: r2/r1 >= 0.7), and for 4 KiB at depth 1 the
# mean latency (elapsed / count) and what each mirror adds to it.
#
# Rows (qemu-img bench, sequential writes): 4 KiB at queue depth 32,
# 1 MiB at depth 8, 4 KiB at depth 1.
#
# Needs go, qemu-img with the iscsi driver (qemu-block-extra), jq, ss
# (iproute2). All nodes share this machine's CPUs and disk: the numbers
# say what the replication path costs, not what separate machines reach.
#
# Environment (defaults finish in a few minutes on 2 cores):
#   ROUNDS=5            rounds per row (medians over them)
#   COUNT_4K_QD1=2000   requests per 4 KiB depth-1 run
#   COUNT_4K_QD32=8000  requests per 4 KiB depth-32 run
#   COUNT_1M=200        requests per 1 MiB depth-8 run
#   FIRST_IP=127.0.0.21 address of n1 (n2 and n3 follow); when its ports
#                       are taken, the next free triple is used
#   BENCH_TMPDIR=/var/tmp  where the nodes' data dirs (sparse images) live
#   RESULTS=bench/results/replicated.txt  where the table is written too
#   KEEP=1              keep the work directory (data dirs, node logs)
#
# Output: the table on stdout and in $RESULTS; exit status 1 when any run
# failed (its cell reads "fail").
set -uo pipefail

ROUNDS=${ROUNDS:-5}
COUNT_4K_QD1=${COUNT_4K_QD1:-2000}
COUNT_4K_QD32=${COUNT_4K_QD32:-8000}
COUNT_1M=${COUNT_1M:-200}
FIRST_IP=${FIRST_IP:-127.0.0.21}
BENCH_TMPDIR=${BENCH_TMPDIR:-/var/tmp}
KEEP=${KEEP:-0}

IQN=iqn.2026-11.io.hatgt:repl-bench
LUN_SIZE=1G
NODES=(n1 n2 n3)
PORTS=(3260 3270 3271 3272 3273) # iSCSI, API, Raft, gossip, replication

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
for v in ROUNDS COUNT_4K_QD1 COUNT_4K_QD32 COUNT_1M; do
	is_uint "${!v}" || die "$v must be a positive integer, not '${!v}'"
done
[[ $FIRST_IP =~ ^127\.([0-9]+)\.([0-9]+)\.([0-9]+)$ ]] || die "FIRST_IP must be a 127.x.y.z address, not '$FIRST_IP'"

need go "Go (https://go.dev/dl)"
need qemu-img "qemu-utils and qemu-block-extra"
need jq "jq"
need ss "iproute2"
need timeout "coreutils"
need awk "gawk or mawk"

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || die "cannot find the repository"
cd "$repo" || die "cannot cd to $repo"
RESULTS=${RESULTS:-$repo/bench/results/replicated.txt}

work=$(mktemp -d "$BENCH_TMPDIR/hatgt-repl-bench.XXXXXX") || die "cannot make a work directory in $BENCH_TMPDIR"
pids=()

stop_nodes() {
	local pid
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null
	done
	for pid in "${pids[@]}"; do
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.2
		done
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	pids=()
}

cleanup() {
	stop_nodes
	if [[ $KEEP == 1 ]]; then
		log "kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ip_free IP: nobody listens on a node port of IP, nor of the wildcard.
ip_free() {
	local port listening
	listening=$(ss -Hltn | awk '{print $4}')
	for port in "${PORTS[@]}"; do
		grep -qxF -e "$1:$port" -e "0.0.0.0:$port" -e "*:$port" -e "[::]:$port" <<<"$listening" && return 1
	done
	return 0
}

# Pick three consecutive free addresses, starting at FIRST_IP.
prefix=${FIRST_IP%.*}
first=${FIRST_IP##*.}
ips=()
for ((base = first; base + 2 <= 254; base += 3)); do
	if ip_free "$prefix.$base" && ip_free "$prefix.$((base + 1))" && ip_free "$prefix.$((base + 2))"; then
		ips=("$prefix.$base" "$prefix.$((base + 1))" "$prefix.$((base + 2))")
		break
	fi
done
((${#ips[@]} == 3)) || die "no three free loopback addresses from $FIRST_IP on (ports ${PORTS[*]})"

# Every node and every CLI call share one admin token.
HATGT_TOKEN=repl-bench-$RANDOM$RANDOM$RANDOM
export HATGT_TOKEN

log "building hatgt"
go build -o "$work/hatgt" ./cmd/hatgt || die "go build ./cmd/hatgt failed"

api() { echo "${ips[$1]}:3270"; }

# cli NODE-INDEX ARGS...: hatgt CLI against that node's admin API.
cli() {
	local i=$1
	shift
	HATGT_ADDR=$(api "$i") timeout 120 "$work/hatgt" "$@"
}

start_node() {
	local i=$1
	local args=(serve --node-id "${NODES[$i]}" --bind "${ips[$i]}" --data-dir "$work/${NODES[$i]}")
	if ((i == 0)); then args+=(--bootstrap); else args+=(--join "$(api 0)"); fi
	"$work/hatgt" "${args[@]}" >"$work/${NODES[$i]}.log" 2>&1 &
	pids+=($!)
}

# wait_until SECONDS WHAT COMMAND...: poll COMMAND until it succeeds.
wait_until() {
	local limit=$1 what=$2 i
	shift 2
	for ((i = 0; i < limit * 5; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		for pid in "${pids[@]}"; do
			kill -0 "$pid" 2>/dev/null || die "a node exited while waiting for $what (see $work/*.log; KEEP=1 keeps them)"
		done
		sleep 0.2
	done
	die "gave up waiting for $what after ${limit}s (KEEP=1 keeps the node logs)"
}

# voters_and_leader I: node I sees three voters and a leader.
voters_and_leader() {
	cli "$1" status --json | jq -e '([.nodes[] | select(.voter)] | length) == 3 and .leader != ""'
}

# all_in_sync: every LUN of the target has every placement node in its
# in-sync set (and, where the status shows copies, each copy in-sync).
all_in_sync() {
	cli 0 status --json | jq -e --arg iqn "$IQN" '
		[.targets[] | select(.iqn == $iqn) | .luns[]] as $l
		| ($l | length) == 3 and ($l | all(
			(.placement | length) == .replicas
			and ((.in_sync // []) | length) == (.placement | length)
			and ((.copies // []) | all(.state == "in-sync"))))'
}

start_node 0
wait_until 60 "n1 to answer" cli 0 status
start_node 1
start_node 2
wait_until 90 "three voters and a leader" voters_and_leader 2
log "cluster up on ${ips[*]}, work directory $work"

cli 0 target create "$IQN" >/dev/null || die "target create failed"
placements=(n1 n1,n2 n1,n2,n3)
for lun in 0 1 2; do
	out=$(cli 0 lun create "$IQN" --lun "$lun" --size "$LUN_SIZE" --replicas $((lun + 1)) \
		--placement "${placements[$lun]}" 2>&1) || die "lun create $lun failed: $out"
done
wait_until 300 "every copy of the three LUNs in sync" all_in_sync

portal="${ips[0]}:3260"
urls=()
for lun in 0 1 2; do
	urls+=("iscsi://$portal/$IQN/$lun")
done
# Smoke test: each LUN answers through n1 and qemu-img has its iscsi driver.
for url in "${urls[@]}"; do
	wait_until 60 "$url to answer" timeout 30 qemu-img info "$url"
	out=$(timeout 30 qemu-img info "$url" 2>&1) || die "qemu-img info $url failed: $out"
	grep -q 'virtual size: 1 GiB' <<<"$out" || die "unexpected LUN at $url: $out"
done

# qemu_bench URL SIZE DEPTH COUNT: sequential writes; prints
# "IOPS MiB/s mean-latency-µs" (the latency is elapsed / count, which
# at depth 1 is the mean time per write).
qemu_bench() {
	local url=$1 size=$2 depth=$3 count=$4 out secs
	local args=(bench -f raw -t none -w -s "$size" -d "$depth" -c "$count")
	out=$(timeout 600 qemu-img "${args[@]}" "$url" 2>&1) || {
		log "qemu-img ${args[*]} $url failed: $out"
		return 1
	}
	secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
	[[ -n $secs ]] || {
		log "cannot parse qemu-img bench output: $out"
		return 1
	}
	awk -v c="$count" -v s="$secs" -v b="$size" 'BEGIN {
		if (s <= 0) s = 0.0005 # below the resolution of qemu-img
		printf "%.0f %.1f %.1f\n", c / s, c * b / 1048576 / s, s * 1e6 / c }'
}

# Warm-up, not measured: the first writes to each sparse file allocate
# its blocks on every copy; the rows below then overwrite them.
log "warm-up: 256 MiB written to each LUN"
for url in "${urls[@]}"; do
	qemu_bench "$url" 1048576 8 256 >/dev/null || die "warm-up write to $url failed"
done
wait_until 120 "every copy in sync after the warm-up" all_in_sync

# node_cpu: the CPU time (clock ticks, user + system) each node process
# used so far, "n1 n2 n3".
node_cpu() {
	local pid out=()
	for pid in "${pids[@]}"; do
		# Fields 14 and 15 of /proc/PID/stat; the command name (field 2)
		# of hatgt has no spaces.
		out+=("$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)")
	done
	echo "${out[*]}"
}

# cpu_per_write BEFORE AFTER COUNT: each node's CPU µs per write over a
# run, "n1 n2 n3" (a clock tick is 1/CLK_TCK s, so short runs are coarse).
cpu_per_write() {
	awk -v a="$1" -v b="$2" -v c="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN {
		split(a, x, " "); split(b, y, " ")
		for (i = 1; i <= 3; i++) printf "%s%.1f", (i > 1 ? " " : ""), (y[i] - x[i]) * 1e6 / hz / c
		printf "\n" }'
}

rows=(
	"write 4KiB QD32|4096 32 $COUNT_4K_QD32"
	"write 1MiB QD8|1048576 8 $COUNT_1M"
	"write 4KiB QD1|4096 1 $COUNT_4K_QD1"
)
lat_row=2 # the depth-1 row: its latency gets a line of its own

mkdir -p "$work/samples"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
failed=0
for ((round = 1; round <= ROUNDS; round++)); do
	if ((round % 2)); then order=(0 1 2); else order=(2 1 0); fi
	for i in "${!rows[@]}"; do
		label=${rows[$i]%%|*}
		read -r size depth count <<<"${rows[$i]#*|}"
		for lun in "${order[@]}"; do
			for pid in "${pids[@]}"; do
				kill -0 "$pid" 2>/dev/null || die "a node died (see $work/*.log; KEEP=1 keeps them)"
			done
			cpu0=$(node_cpu)
			if res=$(qemu_bench "${urls[$lun]}" "$size" "$depth" "$count"); then
				echo "$res $(cpu_per_write "$cpu0" "$(node_cpu)" "$count")" >>"$work/samples/$i.r$((lun + 1))"
			else
				failed=1
			fi
			log "round $round/$ROUNDS  $label  r$((lun + 1)): ${res:-fail}"
			res=
		done
	done
done
all_in_sync >/dev/null 2>&1 || {
	log "not every copy is in sync after the runs: a mirror fell out"
	failed=1
}


# ratio A B: A/B with two decimals, "-" when either is missing.
ratio() {
	if [[ -n $1 && -n $2 ]]; then
		awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
	else
		echo -
	fi
}

# cpu_cell FILE: median CPU µs per write of n1/n2/n3, or "fail".
cpu_cell() {
	local c v out=()
	for c in 4 5 6; do
		v=$(median "$1" "$c")
		out+=("$(num "$v" %.0f)")
	done
	local IFS=/
	echo "${out[*]}"
}

# samples FILE: the IOPS column on one line, or "none".
samples() {
	if [[ -s $1 ]]; then awk '{printf "%s%s", sep, $1; sep = " "}' "$1"; else echo none; fi
}

table() {
	echo "hatgt synchronous replication: medians of $ROUNDS rounds, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "host: $(nproc) CPUs, Linux $(uname -r), $(df -hT "$work" | awk 'NR == 2 {print $2 " on " $1}'), load average $load_start at start, $(cut -d' ' -f1-3 /proc/loadavg) at end"
	echo "hatgt $(git -C "$repo" rev-parse --short HEAD 2>/dev/null)$(git -C "$repo" diff --quiet HEAD 2>/dev/null || echo '+dirty'), 3 nodes on ${ips[*]} (one machine), fileio wb 1 GiB LUNs owned by n1"
	echo "r1: 1 copy; r2: owner + 1 mirror; r3: owner + 2 mirrors"
	echo "$(qemu-img --version | head -1); qemu-img bench -t none -w (sequential)"
	echo "counts: 4KiB QD1 $COUNT_4K_QD1, 4KiB QD32 $COUNT_4K_QD32, 1MiB $COUNT_1M requests"
	echo
	printf '%-16s %8s %7s %8s %7s %8s %7s %7s %7s\n' "row" "r1 IOPS" "MiB/s" "r2 IOPS" "MiB/s" "r3 IOPS" "MiB/s" "r2/r1" "r3/r1"
	local i r
	for i in "${!rows[@]}"; do
		local -A io=() mb=()
		for r in r1 r2 r3; do
			io[$r]=$(median "$work/samples/$i.$r" 1)
			mb[$r]=$(median "$work/samples/$i.$r" 2)
		done
		printf '%-16s %8s %7s %8s %7s %8s %7s %7s %7s\n' "${rows[$i]%%|*}" \
			"$(num "${io[r1]}" %.0f)" "$(num "${mb[r1]}" %.1f)" \
			"$(num "${io[r2]}" %.0f)" "$(num "${mb[r2]}" %.1f)" \
			"$(num "${io[r3]}" %.0f)" "$(num "${mb[r3]}" %.1f)" \
			"$(ratio "${io[r2]}" "${io[r1]}")" "$(ratio "${io[r3]}" "${io[r1]}")"
	done
	local l1 l2 l3
	l1=$(median "$work/samples/$lat_row.r1" 3)
	l2=$(median "$work/samples/$lat_row.r2" 3)
	l3=$(median "$work/samples/$lat_row.r3" 3)
	echo
	printf 'write 4KiB QD1 mean latency: r1 %s µs, r2 %s µs, r3 %s µs\n' \
		"$(num "$l1" %.0f)" "$(num "$l2" %.0f)" "$(num "$l3" %.0f)"
	if [[ -n $l1 && -n $l2 && -n $l3 ]]; then
		awk -v a="$l1" -v b="$l2" -v c="$l3" 'BEGIN {
			printf "added by replication: one mirror +%.0f µs, two mirrors +%.0f µs\n", b - a, c - a }'
	fi
	echo
	echo "CPU µs per write of each node process (medians; n1 owns every LUN, qemu-img not counted):"
	printf '%-16s %-20s %-20s %-20s\n' "row" "r1 n1/n2/n3" "r2 n1/n2/n3" "r3 n1/n2/n3"
	for i in "${!rows[@]}"; do
		local cells=()
		for r in r1 r2 r3; do
			cells+=("$(cpu_cell "$work/samples/$i.$r")")
		done
		printf '%-16s %-20s %-20s %-20s\n' "${rows[$i]%%|*}" "${cells[@]}"
	done
	echo
	echo "goal: r2/r1 >= 0.7 (IOPS). ratio = rN IOPS / r1 IOPS; latency = elapsed / count at depth 1."
	echo
	echo "IOPS of every round (spread shows how noisy the machine was):"
	for i in "${!rows[@]}"; do
		printf '%-16s r1 %s; r2 %s; r3 %s\n' "${rows[$i]%%|*}" \
			"$(samples "$work/samples/$i.r1")" "$(samples "$work/samples/$i.r2")" "$(samples "$work/samples/$i.r3")"
	done
}

table >"$work/table.txt"
cat "$work/table.txt"
mkdir -p "$(dirname "$RESULTS")" && cp "$work/table.txt" "$RESULTS" && log "table written to $RESULTS"
exit "$failed"
