#!/usr/bin/env bash
# in-netns.sh - run by run-vm.sh inside a fresh network namespace
# (unshare -n), whose only device is its own loopback:
#
#   in-netns.sh RELAYS_FILE CMD...
#
# brings the loopback up, starts one relay per line "GUEST_PORT SOCKET" of
# RELAYS_FILE - 127.0.0.1:GUEST_PORT (where qemu's user-mode network sends
# the guest's 10.0.2.2:GUEST_PORT) to the unix socket SOCKET, on which
# run-vm.sh's relay in the host namespace listens - runs CMD (qemu), stops
# the relays and exits with CMD's status; SIGTERM and SIGINT go on to CMD.
# Nothing else is reachable from here: a guest connection to any other port
# is refused.
set -u
relays=$1
shift
ip link set lo up || exit 2
pgids=() child=
stop() { local p; for p in "${pgids[@]}"; do kill -- "-$p" 2>/dev/null; done; }
trap stop EXIT
# a signal to this script (run-vm.sh's -t limit) goes on to CMD
trap '[ -n "$child" ] && kill -TERM "$child" 2>/dev/null' INT TERM
while read -r port sock; do
	for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
	[ -S "$sock" ] || { echo "in-netns.sh: no relay socket $sock" >&2; exit 2; }
	setsid socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr,nodelay" "UNIX-CONNECT:$sock" </dev/null &
	pgids+=($!)
done <"$relays"
"$@" &
child=$!
# wait returns early (status > 128) when a trapped signal arrives: wait again
while :; do
	wait "$child"
	rc=$?
	kill -0 "$child" 2>/dev/null || exit $rc
done
