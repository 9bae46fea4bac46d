#!/usr/bin/env bash
# provision-initiator.sh INITIATOR_IQN TARGET_IQN NODE_IP...
#
# Makes this machine a Linux iSCSI initiator of the hatgt cluster: installs
# open-iscsi and multipath-tools, names the initiator INITIATOR_IQN (the
# name the target's ACL lets in), configures dm-multipath for hatgt's ALUA
# paths, discovers TARGET_IQN through every node's portal (NODE_IP:3260),
# logs in to every portal discovery returns, and shows the multipath map.
# Run again, it logs in only where it is not logged in yet.
set -euo pipefail

die() {
	echo "provision-initiator.sh: $*" >&2
	exit 1
}

[[ $# -ge 3 ]] || die "usage: provision-initiator.sh INITIATOR_IQN TARGET_IQN NODE_IP..."
initiator=$1 target=${2,,}
shift 2
portals=()
for ip in "$@"; do portals+=("$ip:3260"); done

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends open-iscsi multipath-tools >/dev/null

# The name the target's ACL knows; iscsid reads it when it starts.
echo "InitiatorName=$initiator" >/etc/iscsi/initiatorname.iscsi
# Node records made from now on: give a dead path up after 5 s (not 120)
# so that multipath sends the IO to the next path group at once, and log
# in again at boot.
sed -i -e 's/^node\.session\.timeo\.replacement_timeout = .*/node.session.timeo.replacement_timeout = 5/' \
	-e 's/^node\.startup = .*/node.startup = automatic/' /etc/iscsi/iscsid.conf
systemctl restart iscsid.service

# The configuration test/kernel-failover.sh proved with hatgt's ALUA
# paths (the owner's path Active/Optimized, the others Standby), except
# that only hatgt's LUNs are multipathed: the VM's own disk (sda with
# VirtualBox, vda with libvirt) stays a plain disk.
cat >/etc/multipath.conf <<'EOF'
defaults {
	user_friendly_names yes
	find_multipaths no
	enable_foreign "^$"
	polling_interval 2
}
blacklist {
	device {
		vendor ".*"
		product ".*"
	}
}
blacklist_exceptions {
	device {
		vendor "HATGT"
		product "VIRTUAL-DISK"
	}
}
devices {
	device {
		vendor "HATGT"
		product "VIRTUAL-DISK"
		path_grouping_policy group_by_prio
		prio alua
		hardware_handler "1 alua"
		path_checker tur
		failback immediate
		no_path_retry 30
	}
}
EOF
systemctl enable multipathd.service
systemctl restart multipathd.service

# The target appears once the last node has created it (create-demo.sh):
# with libvirt the VMs come up in parallel, so wait for it.
for portal in "${portals[@]}"; do
	for ((i = 0; ; i++)); do
		if iscsiadm -m discovery -t sendtargets -p "$portal" 2>/dev/null | awk '{print tolower($2)}' | grep -xF "$target" >/dev/null; then
			break
		fi
		((i < 600)) || die "$target not discovered through $portal after 600 s (is the cluster up? is this initiator in its ACL?)"
		sleep 1
	done
done
echo "provision-initiator.sh: discovered $target through ${portals[*]}"
iscsiadm -m node -T "$target"

# Log in to every portal discovery recorded (each node holding a copy of
# one of the target's LUNs); 15 is "already logged in".
rc=0
iscsiadm -m node -T "$target" --login || rc=$?
[[ $rc -eq 0 || $rc -eq 15 ]] || die "login to $target failed (iscsiadm status $rc)"
iscsiadm -m session

for ((i = 0; ; i++)); do
	udevadm settle -t 30 || true
	map=$(multipath -l -v1 2>/dev/null | head -1)
	[[ -n $map ]] && break
	((i < 60)) || die "no multipath map for $target after 60 s: $(multipath -v3 2>&1 | tail -20)"
	sleep 1
done
multipath -ll
echo "provision-initiator.sh: /dev/mapper/$map is $target LUN 0 through every path (multipath -ll above)"
