#!/usr/bin/env bash
# build-guest.sh - build the guest of test/vm/run-vm.sh: a Debian bookworm
# kernel and an initramfs holding busybox, open-iscsi, multipath-tools,
# sg3-utils, udev and the kernel modules they need. Called by run-vm.sh when
# its cache is missing or stale; you do not run it by hand.
#
#   build-guest.sh CACHE_DIR GUEST_DIR
#
# CACHE_DIR keeps what is worth keeping between builds: a private apt state
# (apt/: its own sources list, pinned to bookworm whatever the host runs,
# and its own package lists; the host's apt state is never touched) and the
# downloaded .debs (debs/). GUEST_DIR receives vmlinuz, base.cpio.gz and
# manifest (kernel version and every package used, with its version).
#
# Nothing is installed on the host: the .debs are fetched with
# `apt-get download` and unpacked with `dpkg-deb -x` into a scratch tree.
# The libraries are found by asking the guest's own loader (chroot +
# ld.so --list) what every binary needs, so a library missing from the
# downloaded packages fails the build here, not the guest at run time.
#
# Env: HATGT_VM_MIRROR (default http://deb.debian.org/debian) and
# HATGT_VM_SECURITY_MIRROR (default http://deb.debian.org/debian-security),
# HATGT_VM_KEYRING (default /usr/share/keyrings/debian-archive-keyring.gpg).
set -euo pipefail

CACHE=${1:?usage: build-guest.sh CACHE_DIR GUEST_DIR}
GUEST=${2:?usage: build-guest.sh CACHE_DIR GUEST_DIR}
MIRROR=${HATGT_VM_MIRROR:-http://deb.debian.org/debian}
SECURITY=${HATGT_VM_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
KEYRING=${HATGT_VM_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}

die() { echo "build-guest.sh: $*" >&2; exit 2; }
log() { echo "build-guest.sh: $*" >&2; }

# Packages whose programs the guest runs. Their libraries (lib* packages in
# the closure of their dependencies) are added automatically.
TOOL_PKGS=(busybox-static open-iscsi multipath-tools kpartx dmsetup sg3-utils sg3-utils-udev udev)
# Programs copied into the guest; a path under usr/ lands without it (the
# guest's /usr is a link to /).
GUEST_BINS=(sbin/iscsid sbin/iscsiadm sbin/iscsistart sbin/iscsi-iname
	sbin/multipath sbin/multipathd sbin/multipathc sbin/mpathpersist sbin/kpartx
	sbin/dmsetup bin/udevadm lib/udev/scsi_id lib/udev/kpartx_id)
# ... and every sg3-utils program (usr/bin/sg_*, incl. sg_reset, sg_opcodes,
# sg_write_same, sg_unmap).
# udev rules for block devices, SCSI, device-mapper and multipath.
GUEST_RULES=(50-udev-default.rules 60-block.rules 60-persistent-storage.rules
	55-dm.rules 60-persistent-storage-dm.rules 95-dm-notify.rules
	56-dm-mpath.rules 60-multipath.rules 56-dm-parts.rules 60-kpartx.rules
	68-del-part-nodes.rules 55-scsi-sg3_id.rules 58-scsi-sg3_symlink.rules)
# Kernel modules the guest's /init loads at boot ...
BOOT_MODULES=(virtio_pci virtio_net iscsi_tcp sd_mod sg dm_multipath
	dm_round_robin dm_service_time dm_queue_length scsi_dh_alua crc32c_generic)
# ... and those only shipped, for `modprobe NAME` in the guest: 9p for
# run-vm.sh -s, the LIO target (selftest.sh's in-guest ALUA target),
# scsi_debug.
EXTRA_MODULES=(9pnet_virtio 9p configfs target_core_mod target_core_file
	target_core_iblock iscsi_target_mod scsi_debug)

[ -r "$KEYRING" ] || die "no Debian archive keyring at $KEYRING: apt-get install debian-archive-keyring (or set HATGT_VM_KEYRING)"
[ "$(id -u)" = 0 ] || die "run as root (chroot checks the guest's libraries)"

# --- private apt ---------------------------------------------------------
A=$CACHE/apt
mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$A/sources.d" "$CACHE/debs"
: >"$A/status"
cat >"$A/sources.list" <<EOF
deb [signed-by=$KEYRING] $MIRROR bookworm main
deb [signed-by=$KEYRING] $MIRROR bookworm-updates main
deb [signed-by=$KEYRING] $SECURITY bookworm-security main
EOF
APT_OPTS=(-o "Dir::State::Lists=$A/lists" -o "Dir::State::status=$A/status"
	-o "Dir::Cache=$A/cache" -o "Dir::Etc::SourceList=$A/sources.list"
	-o "Dir::Etc::SourceParts=$A/sources.d" -o APT::Architecture=amd64
	-o APT::Architectures::=amd64 -o Acquire::Languages=none
	-o Debug::NoLocking=true -o APT::Sandbox::User=root)
acache() { apt-cache "${APT_OPTS[@]}" "$@"; }
NODEP=(--no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances)

log "apt-get update (private lists for bookworm, in $A)"
apt-get -q "${APT_OPTS[@]}" update >"$A/update.log" 2>&1 ||
	{ tail -5 "$A/update.log" >&2; die "apt-get update failed (network? mirror $MIRROR; set HATGT_VM_MIRROR)"; }

KPKG=$(acache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -1)
[ -n "$KPKG" ] || die "cannot resolve linux-image-amd64 to a kernel package"
# the -cloud flavour has no CONFIG_SCSI_DH (scsi_dh_alua): the generic one
direct_libs=$(acache depends "${NODEP[@]}" "${TOOL_PKGS[@]}" | sed -n 's/^ *|\{0,1\}\(Pre\)\{0,1\}Depends: \(lib[^ <]*\)$/\2/p' | sort -u)
LIB_PKGS=$(acache depends --recurse "${NODEP[@]}" $direct_libs | grep -v '^ ' | grep '^lib' | grep -v -- '-perl$' | sort -u)
PKGS=("$KPKG" "${TOOL_PKGS[@]}" $LIB_PKGS)

# --- download (reuses the .debs of the same version) ------------------------
# cached .deb file name of each package's candidate version
declare -A DEB=()
while read -r p v; do DEB[$p]=${p}_${v//:/%3a}_; done < <(acache show --no-all-versions "${PKGS[@]}" |
	awk '/^Package: / {p = $2} /^Version: / {print p, $2}')
deb_of() { ls "$CACHE/debs/${DEB[$1]:-none}"*.deb 2>/dev/null | head -1; }
need=()
for p in "${PKGS[@]}"; do [ -n "$(deb_of "$p")" ] || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
	log "apt-get download ${#need[@]} of ${#PKGS[@]} packages into $CACHE/debs"
	(cd "$CACHE/debs" && apt-get -q "${APT_OPTS[@]}" download "${need[@]}") >"$CACHE/debs/download.log" 2>&1 ||
		{ tail -5 "$CACHE/debs/download.log" >&2; die "apt-get download failed"; }
fi

# --- unpack ------------------------------------------------------------------
W=$(mktemp -d "${TMPDIR:-/tmp}/hatgt-vm-build.XXXXXX")
trap 'rm -rf "$W"' EXIT
STAGE=$W/stage KSTAGE=$W/kernel ROOT=$W/root
mkdir -p "$STAGE" "$KSTAGE"
: >"$W/manifest"
for p in "${PKGS[@]}"; do
	deb=$(deb_of "$p")
	[ -n "$deb" ] || die "no .deb for $p after the download"
	if [ "$p" = "$KPKG" ]; then dpkg-deb -x "$deb" "$KSTAGE"; else dpkg-deb -x "$deb" "$STAGE"; fi
	basename "$deb" >>"$W/manifest"
done
KVER=$(ls "$KSTAGE/lib/modules" | head -1)
BB=$STAGE/bin/busybox

# --- root: busybox, programs, libraries, udev rules ----------------------------
mkdir -p "$ROOT"/{bin,sbin,lib/x86_64-linux-gnu,lib64,etc/iscsi,etc/udev,proc,sys,dev,run,tmp,root,var/lib/iscsi,var/lock,ki}
ln -s . "$ROOT/usr"
cp "$BB" "$ROOT/bin/busybox"
for a in $("$BB" --list); do [ -e "$ROOT/bin/$a" ] || ln -s busybox "$ROOT/bin/$a"; done
for b in "${GUEST_BINS[@]}" $(cd "$STAGE" && ls usr/bin/sg_*); do
	mkdir -p "$ROOT/$(dirname "${b#usr/}")"
	cp -L --remove-destination "$STAGE/$b" "$ROOT/${b#usr/}"
done
ln -s /bin/udevadm "$ROOT/lib/systemd-udevd"
cp -L "$STAGE/lib64/ld-linux-x86-64.so.2" "$ROOT/lib64/"
# dlopen()ed, so no loader lists them: libgcc_s (pthread_cancel, multipathd)
# and multipath's checker/prioritizer plugins
cp -L "$STAGE/lib/x86_64-linux-gnu/libgcc_s.so.1" "$ROOT/lib/x86_64-linux-gnu/"
cp -a "$STAGE/lib/multipath" "$ROOT/lib/"

# copy_libs FILE...: the libraries the guest's own loader cannot find for
# FILE (it names the first one missing), copied from the stage until it can
ldlist() { chroot "$ROOT" /lib64/ld-linux-x86-64.so.2 --list "/${1#"$ROOT"/}" 2>&1; }
copy_libs() {
	local f n path found out
	for f in "$@"; do
		[ "$(head -c 4 "$f" | tail -c 3)" = ELF ] || continue # scripts
		while ! out=$(ldlist "$f"); do
			n=$(echo "$out" | sed -n 's/.*error while loading shared libraries: \([^:]*\): cannot open.*/\1/p' | head -1)
			[ -n "$n" ] || die "the guest's loader fails on ${f#"$ROOT"/}: $out"
			found=
			for path in lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu lib usr/lib usr/lib/x86_64-linux-gnu/systemd; do
				[ -e "$STAGE/$path/$n" ] && { found=${path#usr/}/$n; break; }
			done
			[ -n "$found" ] || die "library $n (needed by ${f#"$ROOT"/}) is in none of the downloaded packages: add its package to TOOL_PKGS in $0"
			[ ! -e "$ROOT/$found" ] || die "the guest's loader does not find $found (needed by ${f#"$ROOT"/})"
			cp -L "$STAGE/$path/$n" "$ROOT/$found"
		done
	done
}
copy_libs $(find "$ROOT/bin" "$ROOT/sbin" "$ROOT/lib" -type f \( -perm -u+x -o -name '*.so*' \) ! -name busybox)

mkdir -p "$ROOT/lib/udev/rules.d"
for r in "${GUEST_RULES[@]}"; do
	[ -e "$STAGE/lib/udev/rules.d/$r" ] || die "udev rule $r is in none of the packages"
	cp "$STAGE/lib/udev/rules.d/$r" "$ROOT/lib/udev/rules.d/"
done
cp "$STAGE/etc/iscsi/iscsid.conf" "$ROOT/etc/iscsi/"
sed -i 's/^node.startup = .*/node.startup = manual/' "$ROOT/etc/iscsi/iscsid.conf"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\n' >"$ROOT/etc/group"
printf '127.0.0.1 localhost\n' >"$ROOT/etc/hosts"
: >"$ROOT/etc/fstab"

# --- kernel modules: the wanted ones and what they depend on -----------------
"$BB" depmod -b "$KSTAGE" "$KVER"
M=$KSTAGE/lib/modules/$KVER
# modules.dep lines: "kernel/x/y.ko: kernel/a.ko kernel/b.ko"
declare -A path_of=() deps_of=() picked=()
while IFS= read -r line; do
	key=${line%%:*} name=${line%%:*}
	name=${name##*/}; name=${name%%.ko*}; name=${name//-/_}
	path_of[$name]=$key deps_of[$key]=${line#*:}
done <"$M/modules.dep"
pick() { # MODULE_PATH
	local d
	[ -n "${picked[$1]:-}" ] && return 0
	picked[$1]=1
	for d in ${deps_of[$1]}; do pick "$d"; done
}
: >"$ROOT/etc/boot-modules"
for m in "${BOOT_MODULES[@]}" "${EXTRA_MODULES[@]}"; do
	if [ -n "${path_of[$m]:-}" ]; then pick "${path_of[$m]}"
	elif grep -q "/${m//_/[-_]}\.ko" "$M/modules.builtin" 2>/dev/null; then continue # built in
	else die "kernel module $m is not in $KPKG"; fi
done
for m in "${BOOT_MODULES[@]}"; do [ -n "${path_of[$m]:-}" ] && echo "$m" >>"$ROOT/etc/boot-modules"; done
for p in "${!picked[@]}"; do
	mkdir -p "$ROOT/lib/modules/$KVER/$(dirname "$p")"
	cp "$M/$p" "$ROOT/lib/modules/$KVER/$p"
done
cp "$M"/modules.builtin* "$ROOT/lib/modules/$KVER/" 2>/dev/null || true
"$BB" depmod -b "$ROOT" "$KVER"

# --- out -----------------------------------------------------------------------
mkdir -p "$GUEST"
cp "$KSTAGE/boot/vmlinuz-$KVER" "$GUEST/vmlinuz"
(cd "$ROOT" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$GUEST/base.cpio.gz"
{ echo "kernel $KVER ($KPKG)"; sort "$W/manifest"; } >"$GUEST/manifest"
log "guest: $KPKG, initramfs $(du -h "$GUEST/base.cpio.gz" | cut -f1), ${#PKGS[@]} packages (listed in manifest)"
