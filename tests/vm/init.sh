#!/bin/sh
# SPDX-License-Identifier: MIT
# /init of the iodma VM test bed (busybox sh, PID 1 in the guest).
#
# Mounts the pseudo file systems, loads the modules listed in /modules.load
# (Debian tier; module parameters are taken from /proc/cmdline as modprobe
# would), binds the test devices (QEMU NVMe, virtio-blk) to vfio-pci, runs
# every test of /tests.list against each backend the kernel offers, prints a
# GUEST-INFO block and ends with "IODMA-VM-DONE rc=N" before powering off.
#
# /tests.list, written by initramfs.sh: one test a line,
#	[backends=soft,vfio,iommufd] /tests/NAME [ARGS...]
# run as: /tests/NAME ARGS --backend B [--device BDF ...]
# (without backends=, every backend available: soft once, vfio, iommufd when
# /dev/iommu exists).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# The image has no /dev/console node (making one needs root), so the kernel
# started us without stdio: take the console now.
exec 0</dev/console 1>/dev/console 2>&1
# End whatever the firmware left on the current line (escape sequences).
echo
mkdir -p /tmp /dev/shm /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /dev/shm
# Only emergencies on the console: kernel lines would cut TAP lines in two.
# Everything stays in the log buffer (dmesg, /dev/kmsg) for the tests.
echo "1 4 1 7" >/proc/sys/kernel/printk

cmdline=$(cat /proc/cmdline)
rc=0
say() { echo "vm-init: $*"; }

# Loadable modules, dependencies first; NAME.PARAM=V on the kernel command
# line becomes PARAM=V for module NAME.
if [ -s /modules.load ]; then
	while read -r ko; do
		[ -n "$ko" ] || continue
		name=${ko##*/}
		name=${name%.ko}
		name=$(echo "$name" | tr - _)
		params=
		for w in $cmdline; do
			case $w in
			"$name".*) params="$params ${w#"$name".}" ;;
			esac
		done
		# shellcheck disable=SC2086
		insmod "$ko" $params || { say "insmod $ko failed"; rc=1; }
	done </modules.load
fi

# wait_for PATH SECONDS: poll (10 per second) until PATH exists.
wait_for() {
	n=$(($2 * 10))
	while [ ! -e "$1" ] && [ "$n" -gt 0 ]; do
		sleep 0.1
		n=$((n - 1))
	done
	[ -e "$1" ]
}

# The devices for VFIO: QEMU's NVMe (class 0x010802) and virtio-blk
# (1af4:1001 transitional, 1af4:1042 modern).
devices=
for d in /sys/bus/pci/devices/*; do
	[ -e "$d/class" ] || continue
	class=$(cat "$d/class")
	id="$(cat "$d/vendor"):$(cat "$d/device")"
	case "$class/$id" in
	0x010802/* | */0x1af4:0x1001 | */0x1af4:0x1042) ;;
	*) continue ;;
	esac
	bdf=${d##*/}
	echo vfio-pci >"$d/driver_override"
	if [ -e "$d/driver" ]; then
		echo "$bdf" >"$d/driver/unbind"
	fi
	echo "$bdf" >/sys/bus/pci/drivers_probe
	# virtio-iommu makes the group only once a driver has probed.
	if ! wait_for "$d/iommu_group" 10; then
		say "$bdf ($id class $class): no iommu_group, not used"
		rc=1
		continue
	fi
	group=$(readlink "$d/iommu_group")
	group=${group##*/}
	if ! wait_for "/dev/vfio/$group" 10; then
		say "$bdf: no /dev/vfio/$group, not used"
		rc=1
		continue
	fi
	drv=$(readlink "$d/driver")
	say "device $bdf ($id class $class) group $group driver ${drv##*/}"
	devices="$devices $bdf"
done
devargs=
for bdf in $devices; do
	devargs="$devargs --device $bdf"
done
[ -n "$devices" ] || say "no device for VFIO found"

if [ -e /dev/iommu ]; then
	# The VFIO device cdevs appear shortly after the bind.
	for bdf in $devices; do
		wait_for "/sys/bus/pci/devices/$bdf/vfio-dev" 5 ||
			say "$bdf: no vfio-dev (VFIO device cdev)"
	done
	all_backends="soft vfio iommufd"
else
	all_backends="soft vfio"
fi
say "backends: $all_backends; devices:$devices"

# Run the tests.
if [ -s /tests.list ]; then
	while read -r first rest; do
		case $first in
		'' | '#'*) continue ;;
		backends=*)
			want=$(echo "${first#backends=}" | tr , ' ')
			# shellcheck disable=SC2086 # split the arguments
			set -- $rest
			;;
		*)
			want=$all_backends
			# shellcheck disable=SC2086 # split the arguments
			set -- $first $rest
			;;
		esac
		bin=$1
		shift
		for b in $want; do
			case " $all_backends " in
			*" $b "*) ;;
			*) continue ;;
			esac
			case $b in
			soft) dev= ;;
			*) dev=$devargs ;;
			esac
			say "run ${bin##*/} --backend $b"
			t0=$(cut -d' ' -f1 /proc/uptime)
			# shellcheck disable=SC2086
			timeout 300 "$bin" "$@" --backend "$b" $dev </dev/null 2>&1
			st=$?
			t1=$(cut -d' ' -f1 /proc/uptime)
			echo "EXIT ${bin##*/} $b rc=$st t0=$t0 t1=$t1"
			[ "$st" -eq 0 ] || rc=1
		done
	done </tests.list
else
	say "no /tests.list"
	rc=1
fi

echo "GUEST-INFO begin"
echo "uname: $(uname -r)"
echo "cmdline: $cmdline"
echo "uptime: $(cut -d' ' -f1 /proc/uptime)"
for g in /sys/kernel/iommu_groups/*; do
	[ -d "$g/devices" ] || continue
	# shellcheck disable=SC2012 # PCI addresses only
	echo "iommu_group ${g##*/}: $(ls "$g/devices" | tr '\n' ' ')"
done
# shellcheck disable=SC2012 # device names only
ls /dev/vfio /dev/vfio/devices 2>/dev/null | tr '\n' ' '
echo
[ -e /dev/iommu ] && echo "/dev/iommu present" || echo "/dev/iommu absent"
dmesg | grep -iE 'DMAR|virtio.iommu|viommu|vfio|iommu' | head -n 80
# Kernel warnings, oopses and BUGs were kept off the console: show them and
# their context, and count them as a failure.
problems=$(dmesg | grep -E 'BUG:|Oops|WARNING:|general protection|Kernel panic|Call Trace' | head -n 20)
if [ -n "$problems" ]; then
	echo "$problems" | while IFS= read -r l; do echo "KERNEL-PROBLEM: $l"; done
	echo "--- last kernel messages"
	dmesg | tail -n 150
	rc=1
fi
echo "GUEST-INFO end"
echo "IODMA-VM-DONE rc=$rc"
sync
poweroff -f
# poweroff -f does not return; should it, make the kernel panic (-no-reboot
# then ends QEMU).
exit "$rc"
