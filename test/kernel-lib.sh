# kernel-lib.sh - what test/kernel-initiator.sh and test/kernel-failover.sh
# share: check counters, preflight, building hatgt, and the guest's check
# functions. Sourced (not run) by both; they set ROOT and OUT first. The VM
# harness is the repository's own test/vm/run-vm.sh (test/vm/README.md).

RUNVM=$ROOT/test/vm/run-vm.sh

pass=0 fail=0
failed_names=()
ok()  { pass=$((pass + 1)); echo "PASS $*"; }
bad() { fail=$((fail + 1)); failed_names+=("$1"); echo "FAIL $*"; }

finish() {
  echo
  [ ${#failed_names[@]} -gt 0 ] && printf 'failed: %s\n' "${failed_names[*]}"
  echo "logs: $OUT"
  echo "$pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}

# ki_preflight NAME: exit 2 unless root and the host has what run-vm.sh
# needs (its message names the missing Debian packages).
ki_preflight() {
  if [ "$(id -u)" != 0 ]; then echo "$1: run as root (test/vm/run-vm.sh needs it)" >&2; exit 2; fi
  "$RUNVM" --check >/dev/null || { echo "$1: test/vm/run-vm.sh cannot run here (above)" >&2; exit 2; }
  export PATH=$PATH:/usr/local/go/bin
  echo "logs in $OUT"
}

# ki_build [BINARY]: $OUT/hatgt from the working tree, or from commit
# KI_REV (git archive), or a copy of BINARY (built elsewhere); exits on
# failure.
ki_build() {
  local src=$ROOT
  if [ -n "${KI_REV:-}" ]; then
    src=$OUT/src; rm -rf "$src"; mkdir -p "$src"
    (cd "$ROOT" && git archive "$KI_REV") | tar -x -C "$src" || { bad build "git archive $KI_REV failed"; finish; exit 1; }
  fi
  if [ -n "${1:-}" ]; then
    cp "$1" "$OUT/hatgt" && ok "binary $1" || { bad build "no $1"; finish; exit 1; }
  elif (cd "$src" && go build -o "$OUT/hatgt" ./cmd/hatgt) >"$OUT/build.log" 2>&1; then
    ok "build ${KI_REV:-working tree} ($(cd "$ROOT" && git log -1 --format='%h %s' ${KI_REV:-HEAD} 2>/dev/null | cut -c1-60))"
  else
    bad build "$(tail -5 "$OUT/build.log")"; finish; exit 1
  fi
}

# ki_guest_checks prints the guest's check functions, for the top of a
# guest script (sourced by the guest's sh after /ki/lib.sh). Each check
# prints "KI_CHECK PASS name" or "KI_CHECK FAIL name: detail"; the host
# counts them.
ki_guest_checks() {
  cat <<'EOF'
ck() { # NAME SHELL-CODE...: eval it in a subshell, report
  local n=$1; shift
  if ( eval "$*" ) >/tmp/ck.out 2>&1; then echo "KI_CHECK PASS $n"
  else echo "KI_CHECK FAIL $n: $(tail -4 /tmp/ck.out | tr '\n' ' ' | cut -c1-300)"; fi
  cat /tmp/ck.out
}
ck_fatal() { # like ck, but exit the script on failure
  local n=$1; shift
  if ( eval "$*" ) >/tmp/ck.out 2>&1; then echo "KI_CHECK PASS $n"; cat /tmp/ck.out
  else echo "KI_CHECK FAIL $n: $(tail -4 /tmp/ck.out | tr '\n' ' ' | cut -c1-300)"; cat /tmp/ck.out; exit 20; fi
}
EOF
}

# ki_known_kernel_noise DMESG: print DMESG without the guest-kernel warnings
# that are about the kernel's own structure, not about the target; a NOTE
# on stderr names each one dropped. The dmesg scans then stay strict about
# every other warning. Known so far:
# - the guest's Debian 6.1 kernel (6.1.0-57, 6.1.192) can warn once, when an
#   iSCSI session is torn down, that the iscsi_ctrl workqueue
#   (WQ_MEM_RECLAIM) flushes runtime-PM work queued on pm_wq, which is not
#   (check_flush_dependency in __iscsi_unbind_session -> scsi_remove_target
#   -> device_del -> pm_runtime_remove): a rule between two kernel
#   workqueues, hit when runtime-PM work for the SCSI target device is
#   pending at its removal (seen once in kernel-failover.sh's final logout).
ki_known_kernel_noise() {
  awk '
    /-+\[ cut here \]-+/ { inblk = 1; buf = $0 "\n"; next }
    inblk {
      buf = buf $0 "\n"
      if ($0 ~ /---\[ end trace/) {
        inblk = 0
        if (buf ~ /iscsi_ctrl[^ ]*__iscsi_unbind_session.* is flushing !WQ_MEM_RECLAIM pm:pm_runtime_work/)
          print "NOTE dropped a known guest-kernel warning (iscsi_ctrl flushing pm_runtime_work at session teardown: test/kernel-lib.sh)" > "/dev/stderr"
        else
          printf "%s", buf
      }
      next
    }
    { print }
    END { if (inblk) printf "%s", buf }' "$1"
}
