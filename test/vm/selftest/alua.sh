# Guest script of test/vm/selftest.sh: the guest's ALUA stack (scsi_dh_alua,
# multipath's alua prioritizer and hardware handler) against a target inside
# the guest itself - the kernel's LIO - so no host target is involved:
#   run-vm.sh selftest/alua.sh
# One 64 MiB fileio LUN behind two target portal groups: TPG 1
# (127.0.0.1:3261, ALUA group "default", active/optimized) and TPG 2
# (127.0.0.1:3262, group "b", active/non-optimized). Then the states swap
# (default -> standby, b -> active/optimized) and I/O must follow.
# Prints "KI_CHECK PASS|FAIL name"; exits 20 if LIO cannot be set up.
ck() {
	local n=$1
	shift
	if (eval "$*") >/tmp/ck.out 2>&1; then echo "KI_CHECK PASS $n"; else echo "KI_CHECK FAIL $n: $(tail -3 /tmp/ck.out | tr '\n' ' ')"; fi
	cat /tmp/ck.out
}
IQN=iqn.2026-11.io.hatgt:vm-selftest-lio
C=/sys/kernel/config/target
D=$C/core/fileio_0/lun0
lio() { # set up the target; any failure stops here
	set -e
	modprobe target_core_file
	modprobe iscsi_target_mod
	mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
	truncate -s 64M /tmp/lio.img
	mkdir -p $D
	echo "fd_dev_name=/tmp/lio.img,fd_dev_size=67108864" >$D/control
	echo 1 >$D/enable
	echo 6c1f0a52-93d4-4e0b-8a77-2b9f3e4d5c61 >$D/wwn/vpd_unit_serial # no serial, no ALUA VPD
	mkdir $D/alua/b
	echo 2 >$D/alua/b/tg_pt_gp_id
	echo 1 >$D/alua/b/alua_access_state
	for t in 1 2; do
		T=$C/iscsi/$IQN/tpgt_$t
		mkdir -p $T/lun/lun_0
		ln -s $D $T/lun/lun_0/lun0
		mkdir $T/np/127.0.0.1:326$t
		echo 1 >$T/attrib/generate_node_acls
		echo 1 >$T/attrib/cache_dynamic_acls
		echo 0 >$T/attrib/demo_mode_write_protect
		echo 0 >$T/attrib/authentication
		echo 1 >$T/enable
	done
	echo b >$C/iscsi/$IQN/tpgt_2/lun/lun_0/alua_tg_pt_gp
}
(lio) || { echo "KI_CHECK FAIL lio-target: could not set up LIO"; exit 20; }
echo "KI_CHECK PASS lio-target"
KI_PORTALS="127.0.0.1:3261 127.0.0.1:3262"
ck login-both "ki_login_all $IQN"
disks=$(ki_wait_disks 2 30 | tr "\n" " ")
for d in $disks; do
	ck "alua-handler-$d" "cat /sys/block/$d/device/dh_state /sys/block/$d/device/access_state; grep -qx alua /sys/block/$d/device/dh_state"
done
ck multipath-map "ki_multipath_start >/tmp/mp; cat /tmp/mp; grep -q \"hwhandler='1 alua'\" /tmp/mp"
ck alua-priorities "grep -q 'prio=50 status=active' /tmp/mp && grep -q 'prio=10 status=enabled' /tmp/mp"
m=/dev/mapper/$(multipath -l -v1 | head -1)
ki_log "swap: default -> standby, b -> active/optimized"
echo 2 >$D/alua/default_tg_pt_gp/alua_access_state
echo 0 >$D/alua/b/alua_access_state
dd if=/dev/zero of=$m bs=1M count=8 oflag=direct 2>&1 | tail -1
# multipathd regroups on its next path check (polling_interval 2): wait
ghost() { multipath -ll >/tmp/mp 2>&1; grep -q 'active ghost running' /tmp/mp; }
i=0
while ! ghost && [ $i -lt 30 ]; do sleep 1; i=$((i + 1)); done
ck standby-path-ghost "cat /tmp/mp; grep -q 'active ghost running' /tmp/mp"
dd if=/dev/urandom of=/tmp/pattern bs=1M count=32 2>/dev/null
ck io-after-swap "dd if=/tmp/pattern of=$m bs=1M count=32 oflag=direct && dd if=$m of=/tmp/back bs=1M count=32 iflag=direct && cmp /tmp/pattern /tmp/back"
multipath -F >/dev/null 2>&1
udevadm settle -t 30
ki_logout_all >/dev/null
