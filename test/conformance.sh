#!/usr/bin/env bash
# Runs libiscsi's conformance suite (iscsi-test-cu) against a fresh
# "hatgt serve --dev" on a free loopback port, then again against a
# read-only LUN for the write-protect tests. Fails when any test fails, or
# when fewer than HATGT_CU_MIN_PASSED (default 560) tests passed in the main
# run. There is no list of known failures: a failure is a failure.
#
# A second run gives iscsi-test-cu the URL twice for its MultipathIO tests
# (which skip with one URL): they run over a second session from another
# initiator (another I_T nexus) to the same LU, checking that both see one
# device (identical VPD 0x83 designators) and that IO, a reset and COMPARE
# AND WRITE on one path are seen on the other. It is a run of its own
# because with two URLs libiscsi's Sanitize.Readonly changes the control
# mode page through the second path, and the MODE PARAMETERS CHANGED unit
# attention SPC-4 then owes the first path fails the SANITIZE that
# Sanitize.Reset sends next without looking at its status.
#
# Environment:
#   HATGT_CU_MIN_PASSED   minimum passed tests in the read-write run (default 560)
#   HATGT_CU_TESTS        iscsi-test-cu -t filter for the read-write run (default: all)
#   HATGT_CU_MP_TESTS     -t filter for the multipath run (default: ALL.MultipathIO)
#   HATGT_CU_RO_TESTS     -t list for the read-only run (default: the write-protect
#                         tests: ALL.ReadOnly and ALL.Write1{0,2,6}.WriteProtect)
#   HATGT_CU_LOG_DIR      where logs go (default: a temp dir, kept on failure)
#   HATGT_CU_CLUSTER      1 (default): also run the suite against a LUN with three
#                         copies on a three-node cluster on 127.0.77.1-3; 0: skip
#   HATGT_CU_TIMEOUT      seconds before a hung iscsi-test-cu run is killed and
#                         counted as incomplete, i.e. failed (default 900)
set -euo pipefail

root="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
cd "$root"

for tool in iscsi-test-cu stdbuf; do
	if ! command -v "$tool" >/dev/null; then
		echo "conformance: $tool not found (apt-get install libiscsi-bin coreutils)" >&2
		exit 1
	fi
done

work="$(mktemp -d /tmp/hatgt-conformance.XXXXXX)"
logdir="${HATGT_CU_LOG_DIR:-$work}"
mkdir -p "$logdir"
pid=""
cluster_pids=()
cleanup() {
	local rc=$?
	for p in "$pid" "${cluster_pids[@]}"; do
		if [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; then
			kill -TERM "$p" 2>/dev/null || true
			wait "$p" 2>/dev/null || true
		fi
	done
	rm -rf "$work/data" "$work/ro.img" "$work/hatgt" "$work/cucount" "$work/cluster"
	if [[ $rc -eq 0 && -z "${HATGT_CU_LOG_DIR:-}" ]]; then
		rm -rf "$work"
	else
		echo "conformance: logs kept in $logdir" >&2
	fi
}
trap cleanup EXIT

go build -o "$work/hatgt" ./cmd/hatgt

# start_hatgt LOG ARGS...: starts hatgt on 127.0.0.1 port 0 and sets $pid
# and $portal from the "portal" line it prints.
start_hatgt() {
	local log="$1"
	shift
	"$work/hatgt" serve "$@" >"$log.out" 2>"$log.err" &
	pid=$!
	portal=""
	for _ in $(seq 1 600); do
		portal="$(awk '$1 == "portal" { print $2; exit }' "$log.out")"
		[[ -n "$portal" ]] && return 0
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "conformance: hatgt exited at start:" >&2
			cat "$log.err" >&2
			return 1
		fi
		sleep 0.1
	done
	echo "conformance: hatgt printed no portal" >&2
	return 1
}

stop_hatgt() {
	local rc=0
	kill -TERM "$pid"
	wait "$pid" || rc=$?
	pid=""
	if [[ $rc -ne 0 ]]; then
		echo "conformance: hatgt exited $rc after SIGTERM" >&2
		return 1
	fi
}

go build -o "$work/cucount" ./test/cucount
# summarize LOG: prints "conformance: N passed, N skipped, N failed, N total"
# (test/cucount: CUnit's verdict per test run) and the failed runs, and sets
# $passed and $failed. An incomplete or misread log counts as a failure.
summarize() {
	local log="$1" line rc=0
	line="$("$work/cucount" --list failed "$log")" || rc=$?
	grep '^failed' <<<"$line" || true
	line="$(tail -n 1 <<<"$line")"
	echo "$line"
	passed=$(sed -nE 's/^conformance: ([0-9]+) passed.*/\1/p' <<<"$line")
	failed=$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$line")
	if [[ $rc -ne 0 || -z "$passed" || -z "$failed" ]]; then
		echo "conformance: $log is incomplete or unreadable (see above)" >&2
		failed=${failed:-1}
		[[ "$failed" -eq 0 ]] && failed=1
		passed=${passed:-0}
	fi
}

status=0
cu_timeout="${HATGT_CU_TIMEOUT:-900}"

# run_cu NAME LOG ARGS...: runs iscsi-test-cu ARGS into LOG, killed after
# HATGT_CU_TIMEOUT seconds (summarize then finds the log incomplete).
run_cu() {
	local name="$1" log="$2" rc=0
	shift 2
	timeout --kill-after=30 "$cu_timeout" stdbuf -o0 -e0 iscsi-test-cu "$@" >"$log" 2>&1 || rc=$?
	if [[ $rc -eq 124 || $rc -eq 137 ]]; then
		echo "conformance: iscsi-test-cu ($name) did not finish within ${cu_timeout}s; killed" >&2
	fi
}

# judge NAME MIN: fails the script when the run summarize just counted had
# a failure or fewer than MIN passed.
judge() {
	if [[ "$failed" -ne 0 ]]; then
		echo "conformance: FAIL: $failed tests failed ($1 run)" >&2
		status=1
	fi
	if [[ "$passed" -lt "$2" ]]; then
		echo "conformance: FAIL: $passed tests passed in the $1 run, fewer than $2" >&2
		status=1
	fi
}

# 1. Read-write: the dev target.
start_hatgt "$logdir/hatgt-rw" --dev --data-dir "$work/data" --iscsi-addr 127.0.0.1:0
url="iscsi://$portal/iqn.2026-11.io.hatgt:dev/0"
echo "conformance: iscsi-test-cu against $url"
args=(-d -S -v)
[[ -n "${HATGT_CU_TESTS:-}" ]] && args+=(-t "$HATGT_CU_TESTS")
run_cu read-write "$logdir/cu-rw.log" "${args[@]}" "$url"
# 1b. The multipath tests, over two sessions to the same LU.
echo "conformance: iscsi-test-cu (multipath) against $url twice"
run_cu multipath "$logdir/cu-mp.log" -d -S -v -t "${HATGT_CU_MP_TESTS:-ALL.MultipathIO}" "$url" "$url"
stop_hatgt || status=1
min="${HATGT_CU_MIN_PASSED:-560}"
summarize "$logdir/cu-rw.log"
judge read-write "$min"
summarize "$logdir/cu-mp.log"
judge multipath 4 # the four MultipathIO tests

# 2. Read-only: a config file with IOMode=ro over an existing image.
ro_tests="ALL.ReadOnly,ALL.Write10.WriteProtect,ALL.Write12.WriteProtect,ALL.Write16.WriteProtect,ALL.Sanitize.Readonly"
truncate -s 256M "$work/ro.img"
cat >"$work/ro.conf" <<EOF
Portal 127.0.0.1:0
Target iqn.2026-11.io.hatgt:ro
    Lun 0 Path=$work/ro.img,Type=fileio,IOMode=ro,Sector=512
EOF
start_hatgt "$logdir/hatgt-ro" --config "$work/ro.conf"
url="iscsi://$portal/iqn.2026-11.io.hatgt:ro/0"
echo "conformance: iscsi-test-cu (write protect) against $url"
run_cu read-only "$logdir/cu-ro.log" -d -S -v -t "${HATGT_CU_RO_TESTS:-$ro_tests}" "$url"
stop_hatgt || status=1
summarize "$logdir/cu-ro.log"
judge read-only 1

# 3. Cluster: three nodes on 127.0.77.1-3, a LUN with a copy on each; the
# whole suite against its owner, so every write is replicated to two
# mirrors and every persistent reservation goes through Raft.
if [[ "${HATGT_CU_CLUSTER:-1}" == 1 ]]; then
	cl="$work/cluster"
	mkdir -p "$cl"
	head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$cl/token"
	export HATGT_ADDR=127.0.77.1:3270 HATGT_TOKEN
	HATGT_TOKEN="$(cat "$cl/token")"
	for i in 1 2 3; do
		start_args=(--join 127.0.77.1:3270)
		[[ $i -eq 1 ]] && start_args=(--bootstrap)
		"$work/hatgt" serve --node-id "n$i" --bind "127.0.77.$i" --data-dir "$cl/n$i" \
			--token-file "$cl/token" "${start_args[@]}" >"$logdir/hatgt-cluster-n$i.log" 2>&1 &
		cluster_pids+=($!)
		# the first node leads before the others join it
		[[ $i -eq 1 ]] && for _ in $(seq 1 100); do
			"$work/hatgt" status >/dev/null 2>&1 && break
			sleep 0.1
		done
	done
	cl_iqn=iqn.2026-11.io.hatgt:cluster
	created=""
	for _ in $(seq 1 300); do
		alive="$("$work/hatgt" status --json 2>/dev/null | grep -c '"alive": true' || true)"
		if [[ "$alive" -ge 3 ]]; then
			"$work/hatgt" target create "$cl_iqn" >/dev/null &&
				created="$("$work/hatgt" lun create "$cl_iqn" --lun 0 --size 1G --replicas 3)"
			break
		fi
		sleep 0.1
	done
	url="$(sed -nE 's/.* at (iscsi:[^ ]*).*/\1/p' <<<"$created")"
	if [[ -z "$url" ]]; then
		echo "conformance: FAIL: the cluster did not form or refused the LUN (logs: $logdir/hatgt-cluster-n*.log): $created" >&2
		status=1
	else
		for _ in $(seq 1 300); do # every copy in sync: status exits 0
			"$work/hatgt" status >/dev/null 2>&1 && break
			sleep 0.1
		done
		echo "conformance: iscsi-test-cu (cluster: 3 copies) against $url"
		run_cu cluster "$logdir/cu-cluster.log" "${args[@]}" "$url"
		summarize "$logdir/cu-cluster.log"
		# A new epoch during the run (a node that stalled past its lease,
		# a failover) answers "transitioning" for a moment, which the
		# suite, with one path and no retries, counts as failures: say so.
		epochs="$(cat "$logdir"/hatgt-cluster-n*.log | grep -c 'msg="owning replicated LUN"' || true)"
		if [[ "$epochs" -gt 1 ]]; then
			echo "conformance: the cluster LUN was opened in $epochs epochs during the run (an owner lease that ended, a failover): see $logdir/hatgt-cluster-n*.log" >&2
		fi
		judge cluster "$min"
	fi
	for p in "${cluster_pids[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in "${cluster_pids[@]}"; do
		wait "$p" || { echo "conformance: a cluster node exited $? after SIGTERM" >&2; status=1; }
	done
	cluster_pids=()
fi

exit $status
