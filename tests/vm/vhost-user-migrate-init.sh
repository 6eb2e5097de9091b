#!/bin/sh
# SPDX-License-Identifier: MIT
# /init of the vhost-user live-migration test (tests/vm/vhost-user-migrate.sh;
# busybox sh, PID 1 in the guest).  Writes two regions of the virtio-blk
# disk with different pseudo-random data (vumig.mib MiB each), then
# several readers (vumig.readers) read the two regions alternately with
# O_DIRECT (dd iflag=direct bs=1M: the device writes straight into each
# dd's one buffer, which thus alternates between the two contents) and
# check each read's SHA-256 against the one computed beforehand, for
# vumig.secs seconds of guest uptime while the host migrates the VM.
# Then one full re-read of both regions.
# Lines for the host:
#   VUMIG-READY                 the readers run: migrate now
#   VUMIG-BAD reader=N region=A|B sha=...   a read that does not match
#   VUMIG-READER n=N reads=R bad=B
#   VUMIG-FULL sha=... ok|BAD
#   VUMIG-DONE rc=N reads=R bad=B   last, then poweroff
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
mib=8
readers=4
secs=20
for w in $(cat /proc/cmdline); do
	case $w in
	vumig.mib=*) mib=${w#vumig.mib=} ;;
	vumig.readers=*) readers=${w#vumig.readers=} ;;
	vumig.secs=*) secs=${w#vumig.secs=} ;;
	esac
done
say() { echo "vumig-init: $*"; }
done_() {
	echo "VUMIG-DONE rc=$rc reads=${1:-0} bad=${2:-0}"
	sync
	poweroff -f
}

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
	rc=1
	done_
fi

# Uptime in whole seconds: it runs on across the migration.
now() { cut -d. -f1 /proc/uptime; }

dd if=/dev/urandom of=/tmp/a bs=1M count="$mib" 2>/dev/null
dd if=/dev/urandom of=/tmp/b bs=1M count="$mib" 2>/dev/null
sha_a=$(sha256sum </tmp/a | cut -d' ' -f1)
sha_b=$(sha256sum </tmp/b | cut -d' ' -f1)
sha_all=$(cat /tmp/a /tmp/b | sha256sum | cut -d' ' -f1)
dd if=/tmp/a of=/dev/vda bs=1M oflag=direct conv=fsync 2>/dev/null || { say "write A failed"; rc=1; }
dd if=/tmp/b of=/dev/vda bs=1M seek="$mib" oflag=direct conv=fsync 2>/dev/null || { say "write B failed"; rc=1; }
rm -f /tmp/a /tmp/b
echo "VUMIG-SHA a=$sha_a b=$sha_b"

# reader N: alternate regions A and B until the end time.
reader() {
	local i=$1 reads=0 bad=0 r=A skip=0 want s
	while [ "$(now)" -lt "$end" ]; do
		if [ $r = A ]; then skip=0 want=$sha_a; else skip=$mib want=$sha_b; fi
		s=$(dd if=/dev/vda bs=1M skip="$skip" count="$mib" iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
		reads=$((reads + 1))
		if [ "$s" != "$want" ]; then
			bad=$((bad + 1))
			echo "VUMIG-BAD reader=$i region=$r sha=$s at=$(now)"
		fi
		if [ $r = A ]; then r=B; else r=A; fi
	done
	echo "VUMIG-READER n=$i reads=$reads bad=$bad"
	echo "$reads $bad" >/tmp/reader.$i
}

# Every 5 s of uptime while the readers run: the interrupt counts per CPU
# of the disk's queue and of the local timer (a hang's post-mortem: which
# CPU stopped taking which interrupt).
# Past the readers' end by 10 s (they are stuck): once, what they wait on
# (their kernel stacks) and the disk's block-layer state (debugfs).
watch() {
	local told=0 p f
	while :; do
		sleep 5
		echo "VUMIG-WATCH at=$(now) $(grep -E 'virtio.*req|LOC' /proc/interrupts | tr -s ' ' | tr '\n' '|')"
		[ $told = 0 ] && [ "$(now)" -ge $((end + 10)) ] || continue
		told=1
		echo "VUMIG-STUCK inflight=$(cat /sys/block/vda/inflight 2>/dev/null | tr -s ' ')"
		for p in /proc/[0-9]*; do
			[ "$(cat "$p/comm" 2>/dev/null)" = dd ] || continue
			echo "VUMIG-STUCK dd ${p#/proc/} state=$(sed -n 's/^State:[[:space:]]*//p' "$p/status" | tr -d ' ') $(tr '\n' '|' <"$p/stack" 2>/dev/null)"
		done
		mkdir -p /sys/kernel/debug
		mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
		for f in /sys/kernel/debug/block/vda/state /sys/kernel/debug/block/vda/hctx0/state \
			/sys/kernel/debug/block/vda/hctx0/dispatch /sys/kernel/debug/block/vda/hctx0/busy \
			/sys/kernel/debug/block/vda/hctx0/tags /sys/kernel/debug/block/vda/hctx0/ctx_map \
			/sys/kernel/debug/block/vda/hctx0/flags; do
			[ -r $f ] && echo "VUMIG-STUCK ${f#/sys/kernel/debug/block/} $(tr '\n' '|' <$f | cut -c1-400)"
		done
	done
}

end=$(($(now) + secs))
watch &
watcher=$!
reader_pids=
i=0
while [ $i -lt "$readers" ]; do
	reader $i &
	reader_pids="$reader_pids $!"
	i=$((i + 1))
done
echo "VUMIG-READY readers=$readers mib=$mib secs=$secs"
# shellcheck disable=SC2086 # a list of PIDs
wait $reader_pids
kill $watcher 2>/dev/null

reads=0
bad=0
i=0
while [ $i -lt "$readers" ]; do
	if [ -s /tmp/reader.$i ]; then
		read -r r b </tmp/reader.$i
		reads=$((reads + r))
		bad=$((bad + b))
	else
		say "reader $i left no count"
		rc=1
	fi
	i=$((i + 1))
done
[ $bad -eq 0 ] && [ $reads -gt 0 ] || rc=1

s=$(dd if=/dev/vda bs=1M count=$((2 * mib)) iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ "$s" = "$sha_all" ]; then echo "VUMIG-FULL sha=$s ok"; else echo "VUMIG-FULL sha=$s BAD"; rc=1; fi
dmesg | grep -iE 'fault|virtio_blk|vda|error|timeout|hung' | tail -n 10 | sed 's/^/vumig-dmesg: /'
done_ $reads $bad
