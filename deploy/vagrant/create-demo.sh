#!/usr/bin/env bash
# create-demo.sh NODES TARGET_IQN INITIATOR_IQN
#
# Run on one cluster node (the Vagrantfile runs it on the last one) once
# the nodes are provisioned: waits until NODES nodes are alive members of
# the cluster, then creates TARGET_IQN with LUN 0 (HATGT_DEMO_SIZE, 1G by
# default) replicated on min(NODES, 3) nodes, lets INITIATOR_IQN in (the
# ACL), and waits until the LUN is served. Run again, it creates only what
# is missing.
#
# Environment: HATGT_ADDR (the node's admin API, IP:3270; required),
# HATGT_TOKEN_FILE (default /etc/hatgt/token), HATGT_BIN (default
# /usr/local/bin/hatgt), HATGT_DEMO_SIZE, HATGT_DEMO_WAIT (seconds to wait
# for the nodes, default 600: with libvirt the VMs boot in parallel).
set -euo pipefail

die() {
	echo "create-demo.sh: $*" >&2
	exit 1
}

[[ $# -eq 3 ]] || die "usage: create-demo.sh NODES TARGET_IQN INITIATOR_IQN"
nodes=$1 target=${2,,} initiator=$3
[[ $nodes =~ ^[1-9][0-9]*$ ]] || die "NODES $nodes: want a number"
[[ -n ${HATGT_ADDR:-} ]] || die "set HATGT_ADDR to a node's admin API (IP:3270)"
hatgt=${HATGT_BIN:-/usr/local/bin/hatgt}
token_file=${HATGT_TOKEN_FILE:-/etc/hatgt/token}
size=${HATGT_DEMO_SIZE:-1G}
replicas=$((nodes < 3 ? nodes : 3))
wait_nodes=${HATGT_DEMO_WAIT:-600}

cli() { "$hatgt" "$@" --token-file "$token_file"; }

# status --json exits 3 while it shows a problem (no leader yet, a LUN not
# served yet) and 1 when the node does not answer: read its output anyway.
status_json() { "$hatgt" status --json 2>/dev/null || true; }

echo "create-demo.sh: waiting for $nodes alive nodes and a leader (through $HATGT_ADDR)"
for ((i = 0; ; i++)); do
	st=$(status_json)
	alive=$(grep -c '"alive": true' <<<"$st" || true)
	if [[ $alive -ge $nodes ]] && grep -q '"leader": "[^"]' <<<"$st"; then
		break
	fi
	((i < wait_nodes)) || die "only $alive of $nodes nodes alive after ${wait_nodes} s: $("$hatgt" status 2>&1 || true)"
	sleep 1
done
echo "create-demo.sh: $alive nodes alive"

if ! cli target list | awk 'NR > 1 {print tolower($1)}' | grep -xF "$target" >/dev/null; then
	cli target create "$target"
fi
if ! cli lun list "$target" | awk -v t="$target" 'tolower($1) == t && $2 == "0" {f = 1} END {exit !f}'; then
	cli lun create "$target" --lun 0 --size "$size" --replicas "$replicas"
fi
if ! cli acl list "$target" | grep -ixF "$initiator" >/dev/null; then
	cli acl add "$target" "$initiator"
fi

# Served: status exits 0 (no problem) and the owner reports serving it.
for ((i = 0; ; i++)); do
	rc=0
	st=$("$hatgt" status --json 2>/dev/null) || rc=$?
	if [[ $rc -eq 0 ]] && grep -q '"service": "serving"' <<<"$st"; then
		break
	fi
	((i < 120)) || die "LUN 0 of $target is not served after 120 s: $("$hatgt" status 2>&1 || true)"
	sleep 1
done
"$hatgt" status
echo "create-demo.sh: $target LUN 0 is served; initiator $initiator may log in"
