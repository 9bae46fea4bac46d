#!/usr/bin/env bash
# provision-node.sh NODE_ID BIND_IP FIRST_NODE_IP
#
# Makes this machine a hatgt cluster node: installs the hatgt binary and
# deploy/systemd/hatgt.service, writes /etc/default/hatgt for this node and
# the shared admin token (/etc/hatgt/token), then enables and starts
# hatgt.service and waits until its admin API answers. The node whose
# BIND_IP is FIRST_NODE_IP bootstraps the cluster; every other node joins
# it through FIRST_NODE_IP:3270. Run again, it rewrites only what changed
# and restarts hatgt only then.
#
# It reads, from the repository's deploy/ directory (the Vagrantfile syncs
# it to /deploy):
#   systemd/hatgt.service
#   vagrant/hatgt               built on the host, see README.md
#   vagrant/.secrets/token      the admin token, the same on every node
#   vagrant/.secrets/gossip-key the gossip key (base64), the same on every node
#
# Environment, to use it elsewhere or test it:
#   HATGT_DEPLOY_SRC      the deploy/ directory (default /deploy)
#   HATGT_DEPLOY_BINARY   the hatgt binary to install (default SRC/vagrant/hatgt)
#   HATGT_DEPLOY_SECRETS  the directory of token and gossip-key (default SRC/vagrant/.secrets)
#   HATGT_DEPLOY_ROOT     install under this directory instead of / and
#                         start nothing (no systemctl): what a test checks
set -euo pipefail

die() {
	echo "provision-node.sh: $*" >&2
	exit 1
}

[[ $# -eq 3 ]] || die "usage: provision-node.sh NODE_ID BIND_IP FIRST_NODE_IP"
node_id=$1 bind=$2 first=$3
src=${HATGT_DEPLOY_SRC:-/deploy}
binary=${HATGT_DEPLOY_BINARY:-$src/vagrant/hatgt}
secrets=${HATGT_DEPLOY_SECRETS:-$src/vagrant/.secrets}
root=${HATGT_DEPLOY_ROOT:-}
unit=$src/systemd/hatgt.service
api_port=3270

# systemd reads /etc/default/hatgt without a shell: keep the values plain.
[[ $node_id =~ ^[A-Za-z0-9._-]+$ ]] || die "node id $node_id: letters, digits, '.', '_' and '-' only"
for ip in "$bind" "$first"; do
	[[ $ip =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || die "$ip is not an IPv4 address"
done

[[ -f $binary ]] || die "no hatgt binary at $binary. Build it on the host first, from the top of the repository:
    CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -o deploy/vagrant/hatgt ./cmd/hatgt
then copy it to the VMs and provision again: vagrant rsync && vagrant provision"
if ! version=$("$binary" version 2>&1); then
	die "$binary does not run here: $version
Build it for linux/amd64 without cgo (a binary linked against the host's newer glibc does not start on Debian 12):
    CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -o deploy/vagrant/hatgt ./cmd/hatgt"
fi
[[ -f $unit ]] || die "no unit file at $unit"
for f in token gossip-key; do
	[[ -s $secrets/$f ]] || die "no $secrets/$f: the Vagrantfile makes it on 'vagrant up' (or write it yourself, the same on every node)"
done
gossip_key=$(tr -d '[:space:]' <"$secrets/gossip-key")

if [[ $bind == "$first" ]]; then
	cluster_args=--bootstrap
else
	cluster_args="--join $first:$api_port"
fi

changed=0
# put MODE FROM TO: install FROM as TO unless TO already holds the same bytes.
put() {
	if [[ -f $3 ]] && cmp -s "$2" "$3"; then
		chmod "$1" "$3"
		return
	fi
	install -D -m "$1" "$2" "$3"
	changed=1
	echo "provision-node.sh: wrote ${3#"$root"}"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/env" <<EOF
# /etc/default/hatgt for node $node_id, written by deploy/vagrant/provision-node.sh
# (each variable is explained in deploy/systemd/hatgt.env).
HATGT_NODE_ID=$node_id
HATGT_BIND=$bind
HATGT_CLUSTER_ARGS="$cluster_args"
HATGT_TOKEN_FILE=/etc/hatgt/token
HATGT_GOSSIP_KEY=$gossip_key
HATGT_EXTRA_ARGS=
EOF
cat >"$tmp/profile" <<EOF
# hatgt's CLI talks to this node (status needs no token; changes need
# sudo and --token-file /etc/hatgt/token).
export HATGT_ADDR=$bind:$api_port
EOF

install -d -m 0755 "$root/usr/local/bin" "$root/etc/systemd/system" "$root/etc/default" "$root/etc/profile.d"
install -d -m 0700 "$root/etc/hatgt"
put 0755 "$binary" "$root/usr/local/bin/hatgt"
put 0644 "$unit" "$root/etc/systemd/system/hatgt.service"
put 0600 "$tmp/env" "$root/etc/default/hatgt"
put 0600 "$secrets/token" "$root/etc/hatgt/token"
put 0644 "$tmp/profile" "$root/etc/profile.d/hatgt.sh"

if [[ -n $root ]]; then
	echo "provision-node.sh: installed node $node_id under $root (HATGT_DEPLOY_ROOT: nothing started)"
	exit 0
fi

systemctl daemon-reload
systemctl enable hatgt.service
if [[ $changed -eq 1 ]] && systemctl is-active --quiet hatgt.service; then
	systemctl restart hatgt.service
else
	systemctl start hatgt.service
fi

# Its API answers: "hatgt status" exits 0 (healthy) or 3 (it shows a
# problem, e.g. no leader while the other nodes are still booting); 1 is
# no answer.
for _ in $(seq 120); do
	rc=0
	/usr/local/bin/hatgt status --addr "$bind:$api_port" >/dev/null 2>&1 || rc=$?
	[[ $rc -eq 0 || $rc -eq 3 ]] && break
	sleep 1
done
if [[ $rc -ne 0 && $rc -ne 3 ]]; then
	systemctl status --no-pager hatgt.service || true
	journalctl -u hatgt.service -n 30 --no-pager || true
	die "node $node_id: hatgt's admin API at $bind:$api_port does not answer after 120 s (journalctl -u hatgt)"
fi
echo "provision-node.sh: node $node_id is up ($version)"
/usr/local/bin/hatgt status --addr "$bind:$api_port" || true
