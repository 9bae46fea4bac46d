#!/usr/bin/env bash
# Logs in to "hatgt serve --dev" with the real Linux initiator (open-iscsi and
# the kernel's iscsi_tcp) in a throwaway VM, writes 64 MiB with O_DIRECT,
# reads it back and compares: ../shared/tools/kernel-initiator's smoke test.
# Not part of run-all.sh: the VM needs qemu-system-x86, downloads a Debian
# kernel on first use and takes a minute or two under TCG.
#
#   bash test/kernel-initiator.sh [GUEST_SCRIPT]   (default: examples/smoke.sh)
set -euo pipefail

root="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
ki="$root/../shared/tools/kernel-initiator"
if [[ ! -x "$ki/run-vm.sh" ]]; then
	echo "kernel-initiator: $ki/run-vm.sh not found" >&2
	exit 1
fi
script="${1:-$ki/examples/smoke.sh}"
work="$(mktemp -d /tmp/hatgt-ki.XXXXXX)"
pid=""
cleanup() {
	[[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$work/data" "$work/hatgt"
	echo "kernel-initiator: logs in $work" >&2
}
trap cleanup EXIT

(cd "$root" && go build -o "$work/hatgt" ./cmd/hatgt)
"$work/hatgt" serve --dev --data-dir "$work/data" --iscsi-addr 127.0.0.1:0 >"$work/hatgt.out" 2>"$work/hatgt.err" &
pid=$!
portal=""
for _ in $(seq 1 300); do
	portal="$(awk '$1 == "portal" { print $2; exit }' "$work/hatgt.out")"
	[[ -n "$portal" ]] && break
	kill -0 "$pid" 2>/dev/null || { cat "$work/hatgt.err" >&2; exit 1; }
	sleep 0.1
done
[[ -n "$portal" ]] || { echo "kernel-initiator: hatgt printed no portal" >&2; exit 1; }

rc=0
(cd "$work" && "$ki/run-vm.sh" -q -o "$work/console.log" -p "$portal" "$script") || rc=$?
grep -a '^\[ki ' "$work/console.log" || true
if [[ $rc -eq 0 ]]; then
	echo "kernel-initiator: PASS"
else
	echo "kernel-initiator: FAIL (guest script exit $rc; see $work/console.log)" >&2
fi
exit $rc
