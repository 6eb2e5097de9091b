#!/bin/sh
# SPDX-License-Identifier: MIT
# /init of the vhost-user-blk test (tests/vm/vhost-user-blk.sh; busybox sh,
# PID 1 in the guest).  The kernel's own virtio_blk driver drives the one
# virtio-blk device (QEMU's vhost-user-blk-pci or its built-in
# virtio-blk-pci): write vublk.mib MiB of pseudo-random data to /dev/vda
# with dd (O_DIRECT), read it back with O_DIRECT and through the page cache
# (after dropping it), compare SHA-256 sums, print MiB/s.
# Lines for the host:
#   VUBLK-SRC sha=...             the data written
#   VUBLK-READ mode=direct|cached sha=... ok|BAD
#   VUBLK-RATE label=... write=MiB/s read_direct=MiB/s read_cached=MiB/s
#   VUBLK-DONE rc=N               last, then poweroff
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec 0</dev/console 1>/dev/console 2>&1
echo
mkdir -p /tmp
mount -t tmpfs tmpfs /tmp
echo "1 4 1 7" >/proc/sys/kernel/printk

rc=0
mib=16
label=unnamed
for w in $(cat /proc/cmdline); do
	case $w in
	vublk.mib=*) mib=${w#vublk.mib=} ;;
	vublk.label=*) label=${w#vublk.label=} ;;
	esac
done
say() { echo "vublk-init: $*"; }
done_() {
	echo "VUBLK-DONE rc=$rc"
	sync
	poweroff -f
}

# The modules this test needs (virtio_pci is built in; virtio_blk comes
# in modules.extra, kernel.sh).
for f in /modules.load /modules.extra; do
	[ -s $f ] || continue
	while read -r ko; do
		case $ko in
		*virtio_blk.ko | *virtio-iommu.ko) insmod "$ko" || { say "insmod $ko failed"; rc=1; } ;;
		esac
	done <$f
done

n=100
while [ ! -b /dev/vda ] && [ $n -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
if [ ! -b /dev/vda ]; then
	say "no /dev/vda"
	ls /sys/bus/pci/devices/ /sys/block 2>&1
	dmesg | tail -n 30
	rc=1
	done_
fi

# now: seconds since boot, 10 ms resolution.
now() { cut -d' ' -f1 /proc/uptime; }
# rate T0 T1: MiB/s of $mib MiB in T1 - T0 seconds.
rate() { awk -v a="$1" -v b="$2" -v m="$mib" 'BEGIN { d = b - a; if (d < 0.01) d = 0.01; printf "%.1f", m / d }'; }

dd if=/dev/urandom of=/tmp/src bs=1M count="$mib" 2>/dev/null
src=$(sha256sum </tmp/src | cut -d' ' -f1)
echo "VUBLK-SRC sha=$src"

t0=$(now)
dd if=/tmp/src of=/dev/vda bs=1M oflag=direct conv=fsync 2>/dev/null || { say "write failed"; rc=1; }
t1=$(now)
w=$(rate "$t0" "$t1")

t0=$(now)
dd if=/dev/vda of=/tmp/back bs=1M count="$mib" iflag=direct 2>/dev/null || { say "direct read failed"; rc=1; }
t1=$(now)
rd=$(rate "$t0" "$t1")
s=$(sha256sum </tmp/back | cut -d' ' -f1)
if [ "$s" = "$src" ]; then echo "VUBLK-READ mode=direct sha=$s ok"; else echo "VUBLK-READ mode=direct sha=$s BAD"; rc=1; fi
rm -f /tmp/back

sync
echo 3 >/proc/sys/vm/drop_caches
t0=$(now)
dd if=/dev/vda of=/tmp/back bs=1M count="$mib" 2>/dev/null || { say "cached read failed"; rc=1; }
t1=$(now)
rc_=$(rate "$t0" "$t1")
s=$(sha256sum </tmp/back | cut -d' ' -f1)
if [ "$s" = "$src" ]; then echo "VUBLK-READ mode=cached sha=$s ok"; else echo "VUBLK-READ mode=cached sha=$s BAD"; rc=1; fi

echo "VUBLK-RATE label=$label write=$w read_direct=$rd read_cached=$rc_"
dmesg | grep -iE 'DMAR|iommu|fault|virtio_blk|vda|error|batch|strict|lazy' | grep -v 'Adding to iommu group' | tail -n 10 | sed 's/^/vublk-dmesg: /'
done_
