#!/usr/bin/env bash
# bench/run.sh: hatgt against tgt, on this machine, in one run.
#
# Builds hatgt from this tree, serves its --dev target (LUN 0: a 1 GiB
# sparse file, write-back fileio) and a tgt target with the same kind of
# LUN (LUN 1: a 1 GiB sparse file, tgt's default rdwr backing store) from
# the same directory, so both sit on the same disk. Every row is measured
# against both servers alternately (the order flips each round), ROUNDS
# times; the table shows medians and the ratio hatgt/tgt (>1: hatgt is
# faster).
#
# Rows: qemu-img bench (sequential, 4 KiB at queue depth 1 and 32, 1 MiB
# at depth 8, writes then reads) and iscsi-perf (random 4 KiB reads at
# depth 32 for PERF_SECONDS).
#
# Needs root (tgtd), go, qemu-img with the iscsi driver (qemu-block-extra),
# iscsi-perf (libiscsi-bin), tgtd/tgtadm (tgt), ss (iproute2).
#
# Environment (defaults finish in a few minutes on 2 cores):
#   ROUNDS=3          rounds per row (medians over them)
#   COUNT_4K_QD1=2000 requests per 4 KiB depth-1 run
#   COUNT_4K_QD32=8000 requests per 4 KiB depth-32 run
#   COUNT_1M=200      requests per 1 MiB depth-8 run
#   PERF_SECONDS=5    seconds per iscsi-perf run
#   BENCH_TMPDIR=/var/tmp  where the two 1 GiB sparse images live
#   RESULTS=bench/results/last.txt  where the table is written too
#   KEEP=1            keep the work directory (images, server logs)
#   HATGT_PORT, TGT_PORT  portal ports on 127.0.0.1 (default: free ones)
#
# Output: the table on stdout and in $RESULTS; exit status 1 when any run
# failed (its cell reads "fail").
set -uo pipefail

ROUNDS=${ROUNDS:-3}
COUNT_4K_QD1=${COUNT_4K_QD1:-2000}
COUNT_4K_QD32=${COUNT_4K_QD32:-8000}
COUNT_1M=${COUNT_1M:-200}
PERF_SECONDS=${PERF_SECONDS:-5}
BENCH_TMPDIR=${BENCH_TMPDIR:-/var/tmp}
KEEP=${KEEP:-0}

HATGT_IQN=iqn.2026-11.io.hatgt:dev
HATGT_LUN=0
TGT_IQN=iqn.2026-11.io.tgt:bench
TGT_LUN=1 # tgt's LUN 0 is its controller

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
for v in ROUNDS COUNT_4K_QD1 COUNT_4K_QD32 COUNT_1M PERF_SECONDS; do
	is_uint "${!v}" || die "$v must be a positive integer, not '${!v}'"
done

need go "Go (https://go.dev/dl)"
need qemu-img "qemu-utils and qemu-block-extra"
need iscsi-perf "libiscsi-bin"
need tgtd "tgt"
need tgtadm "tgt"
need ss "iproute2"
need timeout "coreutils"
need awk "gawk or mawk"
((EUID == 0)) || die "tgtd needs root; run as root"

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || die "cannot find the repository"
cd "$repo" || die "cannot cd to $repo"
RESULTS=${RESULTS:-$repo/bench/results/last.txt}

work=$(mktemp -d "$BENCH_TMPDIR/hatgt-bench.XXXXXX") || die "cannot make a work directory in $BENCH_TMPDIR"
hatgt_pid=
tgtd_pid=
tgt_ctl=

stop_hatgt() {
	[[ -n $hatgt_pid ]] || return 0
	kill -TERM "$hatgt_pid" 2>/dev/null
	for _ in $(seq 50); do
		kill -0 "$hatgt_pid" 2>/dev/null || break
		sleep 0.2
	done
	kill -KILL "$hatgt_pid" 2>/dev/null
	wait "$hatgt_pid" 2>/dev/null
	hatgt_pid=
}

stop_tgtd() {
	[[ -n $tgtd_pid ]] || return 0
	# tgtd ignores SIGTERM while it has targets: delete them, then ask
	# the daemon to exit; kill -9 if it will not.
	tgtadm -C "$tgt_ctl" --lld iscsi --op delete --force --mode target --tid 1 >/dev/null 2>&1
	tgtadm -C "$tgt_ctl" --op delete --mode system >/dev/null 2>&1
	for _ in $(seq 25); do
		kill -0 "$tgtd_pid" 2>/dev/null || break
		sleep 0.2
	done
	kill -KILL "$tgtd_pid" 2>/dev/null
	wait "$tgtd_pid" 2>/dev/null
	tgtd_pid=
}

cleanup() {
	stop_hatgt
	stop_tgtd
	if [[ $KEEP == 1 ]]; then
		log "kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port prints a TCP port nobody listens on.
free_port() {
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 20000))
		if [[ -z $(ss -Hltn "sport = :$p") ]]; then
			echo "$p"
			return 0
		fi
	done
	die "no free TCP port found"
}

# wait_listen PID PORT NAME: wait until PID listens on 127.0.0.1:PORT.
wait_listen() {
	local pid=$1 port=$2 name=$3
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || return 1
		if ss -Hltnp "sport = :$port" | grep -q "127.0.0.1:$port .*pid=$pid,"; then
			return 0
		fi
		# tgtd falls back to 0.0.0.0:3260 when it cannot have the port.
		ss -Hltnp "sport = :3260" | grep -q "pid=$pid," && break
		sleep 0.1
	done
	log "$name (pid $pid) is not listening on 127.0.0.1:$port; it listens on:"
	ss -Hltnp | grep "pid=$pid," >&2
	return 1
}

# --- hatgt -------------------------------------------------------------
log "building hatgt"
go build -o "$work/hatgt" ./cmd/hatgt || die "go build ./cmd/hatgt failed"
hatgt_port=${HATGT_PORT:-$(free_port)}
[[ -n $hatgt_port ]] || die "no free TCP port for hatgt"
"$work/hatgt" serve --dev --data-dir "$work/hatgt-data" --iscsi-addr "127.0.0.1:$hatgt_port" \
	>"$work/hatgt.log" 2>&1 &
hatgt_pid=$!
wait_listen "$hatgt_pid" "$hatgt_port" hatgt || {
	tail -20 "$work/hatgt.log" >&2
	die "hatgt did not start (log above)"
}
hatgt_url="iscsi://127.0.0.1:$hatgt_port/$HATGT_IQN/$HATGT_LUN"

# --- tgt ---------------------------------------------------------------
tgt_port=${TGT_PORT:-$(free_port)}
[[ -n $tgt_port ]] || die "no free TCP port for tgt"
while :; do
	tgt_ctl=$((1000 + RANDOM % 9000))
	[[ -e /var/run/tgtd/socket.$tgt_ctl.lock ]] || break
done
mkdir -p "$work/tgt" && truncate -s 1G "$work/tgt/lun1.img" || die "cannot create the tgt image"
tgtd -f -C "$tgt_ctl" --iscsi "portal=127.0.0.1:$tgt_port" >"$work/tgtd.log" 2>&1 &
tgtd_pid=$!
if ! wait_listen "$tgtd_pid" "$tgt_port" tgtd; then
	if ss -Hltnp | grep "pid=$tgtd_pid," | grep -q ':3260 '; then
		die "tgtd fell back to port 3260 instead of 127.0.0.1:$tgt_port (was the port taken?)"
	fi
	tail -20 "$work/tgtd.log" >&2
	die "tgtd did not start (log above)"
fi
tgtadm -C "$tgt_ctl" --lld iscsi --op new --mode target --tid 1 -T "$TGT_IQN" &&
	tgtadm -C "$tgt_ctl" --lld iscsi --op new --mode logicalunit --tid 1 --lun "$TGT_LUN" -b "$work/tgt/lun1.img" &&
	tgtadm -C "$tgt_ctl" --lld iscsi --op bind --mode target --tid 1 -I ALL ||
	die "configuring tgt failed"
tgt_url="iscsi://127.0.0.1:$tgt_port/$TGT_IQN/$TGT_LUN"

# Smoke test: both LUNs answer and qemu-img has its iscsi driver.
for url in "$hatgt_url" "$tgt_url"; do
	out=$(timeout 30 qemu-img info "$url" 2>&1) || die "qemu-img info $url failed: $out"
	grep -q 'virtual size: 1 GiB' <<<"$out" || die "unexpected LUN at $url: $out"
done
log "hatgt at $hatgt_url, tgt at $tgt_url, work directory $work"

# --- measurements ------------------------------------------------------

# qemu_bench URL w|r SIZE DEPTH COUNT: prints "IOPS MiB/s".
qemu_bench() {
	local url=$1 rw=$2 size=$3 depth=$4 count=$5 out secs
	local args=(bench -f raw -t none -s "$size" -d "$depth" -c "$count")
	[[ $rw == w ]] && args+=(-w)
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
		printf "%.0f %.1f\n", c / s, c * b / 1048576 / s }'
}

# perf_bench URL: random 4 KiB reads at depth 32; prints "IOPS MiB/s".
perf_bench() {
	local url=$1 out iops bytes
	# -b counts blocks: 8 x 512-byte blocks (both LUNs use 512).
	out=$(timeout $((PERF_SECONDS + 60)) iscsi-perf -t "$PERF_SECONDS" -m 32 -b 8 -r "$url" 2>&1 | tr '\r' '\n') || {
		log "iscsi-perf $url failed: $(tail -5 <<<"$out")"
		return 1
	}
	bytes=$(sed -n 's/^FIXED transfer size of [0-9]* blocks (\([0-9]*\) byte).*/\1/p' <<<"$out")
	iops=$(grep -o 'iops average [0-9]*' <<<"$out" | tail -1 | awk '{print $3}')
	[[ -n $iops && -n $bytes ]] || {
		log "cannot parse iscsi-perf output: $(tail -5 <<<"$out")"
		return 1
	}
	awk -v i="$iops" -v b="$bytes" 'BEGIN { printf "%d %.1f\n", i, i * b / 1048576 }'
}

# Rows: label|command. Writes come before reads so reads find data.
rows=(
	"qemu-img write 4KiB QD1|qemu_bench URL w 4096 1 $COUNT_4K_QD1"
	"qemu-img write 4KiB QD32|qemu_bench URL w 4096 32 $COUNT_4K_QD32"
	"qemu-img read 4KiB QD1|qemu_bench URL r 4096 1 $COUNT_4K_QD1"
	"qemu-img read 4KiB QD32|qemu_bench URL r 4096 32 $COUNT_4K_QD32"
	"qemu-img write 1MiB QD8|qemu_bench URL w 1048576 8 $COUNT_1M"
	"qemu-img read 1MiB QD8|qemu_bench URL r 1048576 8 $COUNT_1M"
	"iscsi-perf randread 4KiB QD32|perf_bench URL"
)

mkdir -p "$work/samples"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
failed=0
for ((round = 1; round <= ROUNDS; round++)); do
	if ((round % 2)); then order=(hatgt tgt); else order=(tgt hatgt); fi
	for i in "${!rows[@]}"; do
		label=${rows[$i]%%|*}
		cmd=${rows[$i]#*|}
		for server in "${order[@]}"; do
			if [[ $server == hatgt ]]; then url=$hatgt_url; else url=$tgt_url; fi
			kill -0 "$hatgt_pid" 2>/dev/null || die "hatgt died (see $work/hatgt.log; KEEP=1 keeps it)"
			kill -0 "$tgtd_pid" 2>/dev/null || die "tgtd died (see $work/tgtd.log; KEEP=1 keeps it)"
			# shellcheck disable=SC2086 # cmd is our own word list
			if res=$(${cmd/URL/$url}); then
				echo "$res" >>"$work/samples/$i.$server"
			else
				failed=1
			fi
			log "round $round/$ROUNDS  $label  $server: ${res:-fail}"
			res=
		done
	done
done


table() {
	echo "hatgt vs tgt: medians of $ROUNDS rounds, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "host: $(nproc) CPUs, Linux $(uname -r), $(df -hT "$work" | awk 'NR == 2 {print $2 " on " $1}'), load average $load_start at start, $(cut -d' ' -f1-3 /proc/loadavg) at end"
	echo "hatgt $(git -C "$repo" rev-parse --short HEAD 2>/dev/null)$(git -C "$repo" diff --quiet HEAD 2>/dev/null || echo '+dirty') --dev (fileio wb); $(tgtd -V 2>&1 | head -1) rdwr"
	echo "$(qemu-img --version | head -1); $(iscsi-perf 2>&1 | grep -m1 -o 'iscsi-perf version [0-9.]*')"
	echo "counts: 4KiB QD1 $COUNT_4K_QD1, 4KiB QD32 $COUNT_4K_QD32, 1MiB $COUNT_1M requests; iscsi-perf $PERF_SECONDS s"
	echo
	printf '%-31s %10s %9s %10s %9s %8s\n' "row" "hatgt IOPS" "MiB/s" "tgt IOPS" "MiB/s" "ratio"
	for i in "${!rows[@]}"; do
		local hi hm ti tm ratio
		hi=$(median "$work/samples/$i.hatgt" 1)
		hm=$(median "$work/samples/$i.hatgt" 2)
		ti=$(median "$work/samples/$i.tgt" 1)
		tm=$(median "$work/samples/$i.tgt" 2)
		ratio=-
		if [[ -n $hi && -n $ti ]]; then
			ratio=$(awk -v a="$hi" -v b="$ti" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
		fi
		printf '%-31s %10s %9s %10s %9s %8s\n' "${rows[$i]%%|*}" \
			"$(num "$hi" %.0f)" "$(num "$hm" %.1f)" "$(num "$ti" %.0f)" "$(num "$tm" %.1f)" "$ratio"
	done
	echo
	echo "ratio = hatgt IOPS / tgt IOPS (>1: hatgt faster). qemu-img bench is sequential;"
	echo "both LUNs are 1 GiB sparse files in the same directory, served write-back."
	echo
	echo "IOPS of every round (spread shows how noisy the machine was):"
	for i in "${!rows[@]}"; do
		printf '%-31s hatgt %s; tgt %s\n' "${rows[$i]%%|*}" \
			"$(samples "$work/samples/$i.hatgt")" "$(samples "$work/samples/$i.tgt")"
	done
}

# samples FILE: the IOPS column on one line, or "none".
samples() {
	if [[ -s $1 ]]; then awk '{printf "%s%s", sep, $1; sep = " "}' "$1"; else echo none; fi
}

table >"$work/table.txt"
cat "$work/table.txt"
mkdir -p "$(dirname "$RESULTS")" && cp "$work/table.txt" "$RESULTS" && log "table written to $RESULTS"
exit "$failed"
