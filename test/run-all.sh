#!/usr/bin/env bash
# The whole test run, as README.md gives it and .ci/run calls it:
#   1. go test ./...            unit tests of every package, the end-to-end
#                               tests in test/ (real clients and processes)
#                               and the whole-cluster fault simulator
#                               (test/sim: fixed seeds, broken builds), one
#                               package at a time (-p 1: the simulator and
#                               the real-process tests both need the CPUs)
#   2. go test -race            on the core packages, the node runtime,
#                               replication and the cluster (HATGT_RACE=0 skips)
#   3. test/conformance.sh      libiscsi's iscsi-test-cu against serve --dev
# Every step runs even when an earlier one failed; the exit status is
# non-zero when any failed. The summary at the end repeats go test's
# per-package lines and the conformance counts.
set -euo pipefail

root="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
cd "$root"
logs="$(mktemp -d /tmp/hatgt-run-all.XXXXXX)"
race_pkgs=(./config/ ./blockstore/ ./scsi/ ./target/ ./agent/ ./replication/ ./cluster/)
export HATGT_SIM_SUMMARY="$logs/sim.txt"
status=0
declare -a results=()

step() { # step NAME LOG CMD...: runs CMD, teeing to LOG, recording the result
	local name="$1" log="$2" rc=0
	shift 2
	echo "=== $name: $*"
	"$@" 2>&1 | tee "$log" || rc=$?
	if [[ $rc -eq 0 ]]; then
		results+=("PASS  $name")
	else
		results+=("FAIL  $name (exit $rc)")
		status=1
	fi
}

step "go test ./..." "$logs/go-test.log" go test -count=1 -p 1 -timeout 40m ./...
if [[ "${HATGT_RACE:-1}" != 0 ]]; then
	step "go test -race (core packages)" "$logs/go-test-race.log" go test -count=1 -race -timeout 20m "${race_pkgs[@]}"
fi
step "conformance (iscsi-test-cu)" "$logs/conformance.log" bash test/conformance.sh

echo
echo "=== summary"
for log in go-test go-test-race; do
	[[ -f "$logs/$log.log" ]] || continue
	echo "--- $log"
	grep -E '^(ok|FAIL|---|panic:)|\[no test files\]' "$logs/$log.log" | grep -v '^--- PASS' || true
done
echo "--- simulator"
cat "$HATGT_SIM_SUMMARY" 2>/dev/null || echo "(no simulator summary: test/sim did not run)"
echo "--- conformance"
grep '^conformance: [0-9]' "$logs/conformance.log" || true
printf '%s\n' "${results[@]}"
if [[ $status -eq 0 ]]; then
	rm -rf "$logs"
	echo "all tests passed"
else
	echo "some tests FAILED (logs in $logs)"
fi
exit $status
