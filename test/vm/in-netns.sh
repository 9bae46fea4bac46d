#!/usr/bin/env bash
# in-netns.sh - run by run-vm.sh inside a fresh network namespace
# (unshare -n), whose only device is its own loopback:
#
#   in-netns.sh HOST_PID RELAYS_FILE CMD...
#
# brings the loopback up, starts relay.py for the portals in RELAYS_FILE
# (lines "GUEST_PORT SOCKET HOST_ADDR HOST_PORT": 127.0.0.1:GUEST_PORT here,
# where qemu's user-mode network sends the guest's 10.0.2.2:GUEST_PORT, to
# the unix socket SOCKET, on which run-vm.sh's socat in the host namespace
# listens, for the portal HOST_ADDR:HOST_PORT; HOST_PID is a process in the
# host namespace, whose /proc/HOST_PID/net/tcp tells relay.py whether the
# portal listens), runs CMD (qemu), stops the relay and exits with CMD's
# status; SIGTERM and SIGINT go on to CMD. Nothing else is reachable from
# here: a guest connection to any other port is refused.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
host_pid=$1 relays=$2
shift 2
ip link set lo up || exit 2
relay_pgid= child=
stop() { [ -n "$relay_pgid" ] && kill -- "-$relay_pgid" 2>/dev/null; }
trap stop EXIT
# a signal to this script (run-vm.sh's -t limit) goes on to CMD
trap '[ -n "$child" ] && kill -TERM "$child" 2>/dev/null' INT TERM
args=()
while read -r port sock addr hport; do args+=("$port" "$sock" "$addr" "$hport"); done <"$relays"
if [ ${#args[@]} -gt 0 ]; then
	py=python3
	[ -x /usr/bin/python3 ] && py=/usr/bin/python3 # not a slow version-manager shim
	setsid "$py" "$here/relay.py" "$host_pid" "${args[@]}" </dev/null &
	relay_pgid=$!
fi
"$@" &
child=$!
# wait returns early (status > 128) when a trapped signal arrives: wait again
while :; do
	wait "$child"
	rc=$?
	kill -0 "$child" 2>/dev/null || exit $rc
done
