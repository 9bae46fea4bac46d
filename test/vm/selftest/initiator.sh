# Guest script of test/vm/selftest.sh: the initiator side of the harness
# against the host's tgtd on two portals (the same LUN behind both).
#   run-vm.sh -s SHARE -e ST_TOKEN=T -e ST_IQN=IQN -e ST_FORBIDDEN=PORT \
#     -p 127.0.0.1:P1 -p 127.0.0.1:P2 -p 127.0.0.1:P4 selftest/initiator.sh
# (P4: a portal nothing listens on until the guest asks the host, with the
# request file open-down-portal, and again after close-down-portal)
# Prints "KI_CHECK PASS|FAIL name"; exits 7 (the host checks that the status
# comes through), 20 when a check the rest depends on failed.
ck() { # NAME SHELL-CODE: eval in a subshell, report, return its status
	local n=$1 rc=0
	shift
	(eval "$*") >/tmp/ck.out 2>&1 || rc=$?
	if [ $rc = 0 ]; then echo "KI_CHECK PASS $n"; else echo "KI_CHECK FAIL $n: $(tail -3 /tmp/ck.out | tr '\n' ' ')"; fi
	cat /tmp/ck.out
	return $rc
}
must() { ck "$@" || exit 20; }

ck env-passed "test '$ST_TOKEN' != '' && test \"\$KI_HOST_PORTALS\" != ''"
ck modules "lsmod | grep -q '^iscsi_tcp ' && lsmod | grep -q '^dm_multipath ' && lsmod | grep -q '^scsi_dh_alua '"
ck iscsid-running "pidof iscsid"
ck udevd-running "udevadm control --ping"
ck share-write "echo '$ST_TOKEN' >/ki/share/from-guest"
# requests to a host that deletes each one as soon as it appears
ck share-requests "i=0; while [ \$i -lt 200 ]; do ki_request req-\$i || exit 1; i=\$((i + 1)); done"
# the guest reaches only the -p portals: a host port not given is refused
# (and nc itself works: it reaches a portal)
first=${KI_PORTALS%% *}
ck nc-reaches-portal "echo | nc -w 2 ${first%:*} ${first#*:}"
ck forbidden-port-unreachable "echo x | nc -w 5 10.0.2.2 $ST_FORBIDDEN >/tmp/nc.out; rc=\$?; cat /tmp/nc.out; test \$rc -ne 0 && ! grep -q forbidden /tmp/nc.out"
# the third portal starts down: refused (RST), not accepted and closed
down=$(echo $KI_PORTALS | cut -d' ' -f3)
KI_PORTALS=$(echo $KI_PORTALS | cut -d' ' -f1-2)
ck down-portal-refused "echo | nc -w 3 ${down%:*} ${down#*:}; test \$? -ne 0"
reach() { # PORTAL SECS: wait until it answers portal-up
	local i=0
	while [ $i -lt $(($2 * 2)) ]; do
		echo | nc -w 2 ${1%:*} ${1#*:} 2>/dev/null | grep -q portal-up && return 0
		sleep 0.5; i=$((i + 1))
	done
	return 1
}
ki_request open-down-portal
ck down-portal-comes-up "reach $down 30"
ki_request close-down-portal
ck down-portal-refused-again "i=0; while echo | nc -w 2 ${down%:*} ${down#*:} >/dev/null 2>&1 && [ \$i -lt 60 ]; do sleep 0.5; i=\$((i + 1)); done; ! echo | nc -w 2 ${down%:*} ${down#*:}"
for p in $KI_PORTALS; do
	ck "discovery-$p" "ki_targets $p | tee /dev/stderr | grep -qx '$ST_IQN'"
done
ki_set node.session.timeo.replacement_timeout 5
must login-all "ki_login_all '$ST_IQN'"
disks=$(ki_wait_disks 2 30 | tr "\n" " ")
must two-disks "test \$(echo $disks | wc -w) -eq 2"
d=$(echo $disks | cut -d' ' -f1)
ck inquiry "sg_inq /dev/$d | tee /dev/stderr | grep -q 'Vendor identification: IET'"
ck same-wwid "for x in $disks; do cat /sys/block/\$x/device/wwid; done | sort -u | wc -l | grep -qx 1"
must multipath-map ki_multipath_start
m=/dev/mapper/$(multipath -l -v1 | head -1)
ck two-paths-in-map "multipathd show paths; test \$(multipathd show paths | grep -c 'active ready') -eq 2"
dd if=/dev/urandom of=/tmp/pattern bs=1M count=32 2>/dev/null
ck map-write "dd if=/tmp/pattern of=$m bs=1M count=32 oflag=direct"
ck map-read-verify "dd if=$m of=/tmp/back bs=1M count=32 iflag=direct && cmp /tmp/pattern /tmp/back"
ki_log "offline /dev/$d: I/O goes on through the other path"
echo offline >/sys/block/$d/device/state
ck map-read-one-path "dd if=$m of=/tmp/back bs=1M count=32 iflag=direct && cmp /tmp/pattern /tmp/back"
echo running >/sys/block/$d/device/state
multipath -F >/dev/null 2>&1
udevadm settle -t 30
ck logout ki_logout_all
exit 7
