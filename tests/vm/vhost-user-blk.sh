#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# shellcheck disable=SC2054 # QEMU options contain commas
# iodma's vhost-user back end against a real VMM: QEMU 7.2 drives
# examples/vhost-user-blk (iodma/vhost-user.h + the demo's virtio-blk device
# model) through `-device vhost-user-blk-pci,iommu_platform=on,ats=on`
# behind an emulated intel-iommu with a device IOTLB, and a Linux guest's
# own virtio_blk driver writes and reads back a file (tests/vm/
# vhost-user-blk-init.sh), in strict (iommu.strict=1) and lazy
# (iommu.strict=0) mode.  The same guest workload then runs on QEMU's
# built-in virtio-blk-pci with the same vIOMMU in the same run (the peer),
# and the throughput ratios are printed.
#
# Usage: tests/vm/vhost-user-blk.sh BUILD_DIR [--iommu intel|virtio|all]
#                                   [--mib N] [--modes strict,lazy]
#   BUILD_DIR  meson build directory with examples/vhost-user-blk built;
#              logs go to BUILD_DIR/meson-logs/vublk-*.log
#   --iommu    intel: intel-iommu,device-iotlb=on,caching-mode=on;
#              virtio: virtio-iommu-pci; all (default): both
#   --mib      MiB the guest writes and reads back (default 16)
# The back end also tries a device access right after each of its first 3
# INVALIDATEs of mapped IOVAs: each must fault (isolation); a last boot
# acks those INVALIDATEs before applying them and must see violations
# (the check's negative control).
# Environment: IODMA_VM_CACHE, IODMA_VM_TIMEOUT (seconds per boot, 300).
# Passes only if every SHA-256 read back in the guest matches the data
# written, the image on the host holds it too, and the back end exits
# cleanly with no failed request.  Exit 0, 1, or 77 (skip: no QEMU, no
# kernel, back end not built).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
usage() { sed -n '3,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
build=$(cd "$1" && pwd) || exit 2
shift
iommus="intel virtio"
mib=16
probes=3
modes="strict lazy"
while [ $# -gt 0 ]; do
	case $1 in
	--iommu) [ "$2" = all ] && iommus="intel virtio" || iommus=$2; shift 2 ;;
	--mib) mib=$2; shift 2 ;;
	--modes) modes=${2//,/ }; shift 2 ;;
	-h | --help) usage ;;
	*) echo "vhost-user-blk.sh: unknown argument $1" >&2; usage ;;
	esac
done

skip() { echo "SKIP: $*"; exit 77; }
command -v qemu-system-x86_64 >/dev/null || skip "no qemu-system-x86_64 (apt-get install qemu-system-x86)"
[ -x /bin/busybox ] && command -v cpio >/dev/null || skip "needs busybox-static and cpio"
backend=$build/examples/vhost-user-blk/vhost-user-blk-iodma
[ -x "$backend" ] || skip "$backend not built"
qemu-system-x86_64 -device help 2>/dev/null | grep -q vhost-user-blk-pci ||
	skip "this QEMU has no vhost-user-blk-pci"

kdir=$("$here/kernel.sh" debian)
st=$?
[ $st -eq 77 ] && skip "no guest kernel (kernel.sh debian)"
[ $st -eq 0 ] && [ -f "$kdir/vmlinuz" ] || { echo "vhost-user-blk.sh: kernel.sh failed"; exit 1; }
grep -q virtio_blk "$kdir/modules.extra" 2>/dev/null ||
	grep -q virtio_blk "$kdir"/lib/modules/*/modules.builtin 2>/dev/null ||
	skip "the guest kernel has no virtio_blk"

if [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then
	accel=kvm
else
	accel=tcg
fi
boot_timeout=${IODMA_VM_TIMEOUT:-300}

work=$(mktemp -d "${TMPDIR:-/tmp}/iodma-vublk.XXXXXX")
be_pid=
cleanup() {
	[ -n "$be_pid" ] && kill "$be_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$build/meson-logs"
IODMA_VM_INIT="$here/vhost-user-blk-init.sh" "$here/initramfs.sh" "$work/initrd.gz" "$kdir" ||
	{ echo "vhost-user-blk.sh: initramfs.sh failed"; exit 1; }

fail=0
results=()
declare -A rate

# field LINE KEY: the value of KEY=... in LINE.
field() { sed -n "s/.*[ ]$2=\([^ ]*\).*/\1/p" <<<"$1"; }

# run_guest IOMMU MODE DEVICE(vhost|builtin|control): one boot; sets
# rate[...].  vhost: the iodma back end, with the isolation probes (each
# must fault); control: the same with the probes' negative control (the
# probed INVALIDATEs acked before they are applied: the probes must see
# violations, else the isolation check proves nothing); builtin: QEMU's
# virtio-blk-pci.
run_guest() {
	local iommu=$1 mode=$2 dev=$3
	local tag="$dev-$iommu-$mode" log="$build/meson-logs/vublk-$dev-$iommu-$mode.log"
	local img="$work/$dev.img" append iommu_dev=() dev_args=() be_log="$work/be-$tag.log"
	local strict=1
	[ "$mode" = lazy ] && strict=0
	local attempt secs be_rc
	# A guest that never reached the workload (a kernel panic at boot:
	# TCG on a loaded host) is booted once more; a failure after the
	# workload began is never retried.
	for attempt in 1 2; do
		rm -f "$img"
		truncate -s 64M "$img"
		# no_timer_check: on a loaded host TCG can miss the kernel's timer
		# check through the remapped IO-APIC and panic at boot.
		append="console=ttyS0 panic=-1 quiet loglevel=4 no_timer_check iommu.strict=$strict vublk.mib=$mib vublk.label=$tag"
		case $iommu in
		intel)
			append="$append intel_iommu=on"
			iommu_dev=(-device intel-iommu,intremap=on,device-iotlb=on,caching-mode=on)
			;;
		virtio)
			iommu_dev=(-device virtio-iommu-pci)
			;;
		esac
		if [ "$dev" != builtin ]; then
			local be_args=(--isolation-probes "$probes")
			[ "$dev" = control ] && be_args+=(--drop-invalidations)
			rm -f "$work/vu.sock"
			"$backend" --socket "$work/vu.sock" --disk "$img" "${be_args[@]}" >"$be_log" 2>&1 &
			be_pid=$!
			for _ in $(seq 50); do [ -S "$work/vu.sock" ] && break; sleep 0.1; done
			[ -S "$work/vu.sock" ] || { echo "vhost-user-blk.sh: back end did not listen"; cat "$be_log"; fail=1; return; }
			dev_args=(-chardev "socket,id=vu,path=$work/vu.sock"
				-device vhost-user-blk-pci,chardev=vu,num-queues=1,iommu_platform=on,ats=on,disable-legacy=on)
		else
			dev_args=(-drive "file=$img,if=none,id=d0,format=raw"
				-device virtio-blk-pci,drive=d0,num-queues=1,iommu_platform=on,ats=on,disable-legacy=on)
		fi
		local cmd=(qemu-system-x86_64 -accel "$accel"
			-machine q35,kernel-irqchip=split -cpu max -smp 2 -m 512M
			-object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem
			"${iommu_dev[@]}" "${dev_args[@]}"
			-nographic -no-reboot -nodefaults -serial stdio
			-kernel "$kdir/vmlinuz" -initrd "$work/initrd.gz" -append "$append")
		local b0=$SECONDS
		{
			echo "# ${cmd[*]}"
			timeout -k 10 "$boot_timeout" "${cmd[@]}" </dev/null 2>&1
			echo "# qemu exit status $?"
		} | tr -d '\r' >"$log"
		secs=$((SECONDS - b0))
		be_rc=0
		if [ -n "$be_pid" ]; then
			# QEMU is gone: the back end sees the disconnect and exits.
			for _ in $(seq 50); do kill -0 "$be_pid" 2>/dev/null || break; sleep 0.1; done
			kill -0 "$be_pid" 2>/dev/null && { kill "$be_pid"; echo "vhost-user-blk.sh: back end did not exit; killed"; }
			wait "$be_pid"
			be_rc=$?
			be_pid=
			sed 's/^/# back end: /' "$be_log" >>"$log"
		fi
		grep -q '^VUBLK-SRC' "$log" && break
		[ $attempt -eq 1 ] && { cp "$log" "$log.boot1"; echo "  $tag: the guest did not reach the workload (boot failure, log $log.boot1): booting again"; }
	done

	local ok=1 src
	src=$(sed -n 's/^VUBLK-SRC sha=\([0-9a-f]*\).*/\1/p' "$log")
	grep -q '^VUBLK-DONE rc=0' "$log" || { ok=0; echo "  $tag: guest did not finish cleanly:"; grep -E 'VUBLK-DONE|vublk-init' "$log" | sed 's/^/    /'; tail -n 5 "$log" | sed 's/^/    /'; }
	[ "$(grep -c '^VUBLK-READ .* ok$' "$log")" -eq 2 ] || { ok=0; echo "  $tag: a read-back checksum does not match"; }
	# The data is in the image on the host too.
	if [ -n "$src" ] && [ "$(head -c "$((mib * 1048576))" "$img" | sha256sum | cut -d' ' -f1)" != "$src" ]; then
		ok=0
		echo "  $tag: the host image does not hold the data written"
	fi
	local line
	line=$(grep '^VUBLK-RATE ' "$log" | tail -n1)
	grep -E '^VUBLK-(SRC|READ|RATE)' "$log" | sed "s/^/  $tag: /"
	if [ "$dev" != builtin ]; then
		local cnt
		cnt=$(grep '^VHOST-USER-BLK-COUNTERS' "$be_log")
		echo "  $tag: back end: ${cnt:-NO COUNTERS}"
		# Every complaint of the back end (the counters line aside).
		grep -v '^VHOST-USER-BLK-COUNTERS' "$be_log" | grep -E 'failed|not supported|cannot|broken|needs reset' |
			head -n 5 | sed "s/^/  $tag: back end: /"
		if [ $be_rc -ne 0 ] || [ -z "$cnt" ] || [ "$(field "$cnt" ioerr)" != 0 ] ||
			[ "$(field "$cnt" xlate_failures)" != 0 ] ||
			grep -v '^VHOST-USER-BLK-COUNTERS' "$be_log" | grep -qE 'failed|not supported|cannot|broken|needs reset'; then
			ok=0
			echo "  $tag: back end exit $be_rc, or a request failed (see $log)"
		fi
		local np nf nv
		np=$(field "$cnt" isolation_probes)
		nf=$(field "$cnt" isolation_faults)
		nv=$(field "$cnt" isolation_violations)
		if [ "$dev" = vhost ] && { [ "${np:-0}" -eq 0 ] || [ "$nf" != "$np" ] || [ "$nv" != 0 ]; }; then
			ok=0
			echo "  $tag: isolation: $np probes, $nf faulted, $nv violations (want every probe to fault)"
		elif [ "$dev" = vhost ]; then
			echo "  $tag: isolation: $np device accesses right after INVALIDATE, $nf faulted, $nv violations"
		elif [ "$dev" = control ] && [ "${nv:-0}" -eq 0 ]; then
			ok=0
			echo "  $tag: negative control: $np probes saw no violation with INVALIDATEs acked early: the isolation check is blunt"
		elif [ "$dev" = control ]; then
			echo "  $tag: negative control: $nv of $np probes caught the early-acked INVALIDATE (as they must)"
		fi
	fi
	rate[$tag.write]=$(field "$line" write)
	rate[$tag.read_direct]=$(field "$line" read_direct)
	rate[$tag.read_cached]=$(field "$line" read_cached)
	if [ $ok -eq 1 ]; then
		results+=("$(printf '%-22s ok    %4ss  write %6s  read_direct %6s  read_cached %6s MiB/s' "$tag" "$secs" "${rate[$tag.write]}" "${rate[$tag.read_direct]}" "${rate[$tag.read_cached]}")")
	else
		results+=("$(printf '%-22s FAIL  %4ss  (log %s)' "$tag" "$secs" "$log")")
		fail=1
	fi
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }

for iommu in $iommus; do
	for mode in $modes; do
		echo "== $iommu/$mode: vhost-user-blk (iodma back end), then QEMU's virtio-blk-pci ($accel)"
		run_guest "$iommu" "$mode" vhost
		run_guest "$iommu" "$mode" builtin
	done
done
first_iommu=${iommus%% *}
first_mode=${modes%% *}
echo "== $first_iommu/$first_mode: the isolation check's negative control"
run_guest "$first_iommu" "$first_mode" control

echo
echo "== vhost-user-blk summary ($accel, $mib MiB, MiB/s measured in the guest)"
for l in "${results[@]}"; do echo "$l"; done
echo "== throughput ratio iodma vhost-user-blk / QEMU virtio-blk-pci (same vIOMMU, same run)"
for iommu in $iommus; do
	for mode in $modes; do
		v=vhost-$iommu-$mode b=builtin-$iommu-$mode
		echo "VUBLK-RATIO $iommu/$mode write=$(ratio "${rate[$v.write]:-}" "${rate[$b.write]:-}") read_direct=$(ratio "${rate[$v.read_direct]:-}" "${rate[$b.read_direct]:-}") read_cached=$(ratio "${rate[$v.read_cached]:-}" "${rate[$b.read_cached]:-}")"
	done
done
[ $fail -eq 0 ] && { echo "vhost-user-blk: PASS"; exit 0; }
echo "vhost-user-blk: FAIL"
exit 1
