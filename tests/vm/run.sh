#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# shellcheck disable=SC2054 # QEMU options contain commas
# Host driver of the VM test bed: boot a QEMU guest with an emulated IOMMU,
# run the guest test binaries against the real kernel, report per suite.
#
# Usage: tests/vm/run.sh BUILD_DIR [--tier debian|mini|all]
#                        [--iommu intel|virtio|all] [--test BIN[:BACKENDS]]...
#   BUILD_DIR  a meson build directory: the test binaries are the
#              executables in BUILD_DIR/tests/vm/ and its subdirectories one
#              level down (unless --test is given),
#              logs go to BUILD_DIR/meson-logs/vm-TIER-IOMMU.log
#   --tier     debian: Debian's 6.12 cloud kernel (type1 only)
#              mini:   a tinyconfig kernel from linux-source-6.12 (type1 and
#                      iommufd); all (default): both
#   --iommu    intel (intel-iommu, interrupt remapping), virtio
#              (virtio-iommu-pci), all (default): both
# Environment: IODMA_VM_CACHE (kernel cache, default ~/.cache/iodma-vm),
#              IODMA_VM_TIMEOUT (seconds per boot; default 600 under TCG).
# Exit: 0 when every expected RESULT line came with failed=0, 77 (skip) when
# QEMU cannot run or no kernel can be had, 1 otherwise.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
usage() { sed -n '3,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 1 ] || usage
build=$(cd "$1" && pwd) || exit 2
shift
tiers="debian mini"
iommus="intel virtio"
tests=()
while [ $# -gt 0 ]; do
	case $1 in
	--tier) [ "$2" = all ] && tiers="debian mini" || tiers=$2; shift 2 ;;
	--iommu) [ "$2" = all ] && iommus="intel virtio" || iommus=$2; shift 2 ;;
	--test) tests+=("$2"); shift 2 ;;
	-h | --help) usage ;;
	*) echo "run.sh: unknown argument $1" >&2; usage ;;
	esac
done
for t in $tiers; do
	case $t in debian | mini) ;; *) echo "run.sh: unknown tier $t" >&2; exit 2 ;; esac
done
for i in $iommus; do
	case $i in intel | virtio) ;; *) echo "run.sh: unknown IOMMU $i" >&2; exit 2 ;; esac
done

skip() { echo "SKIP: $*"; echo "vm: 0 passed, 0 failed, 1 skipped"; exit 77; }

# The tools.  As root, install what is missing; otherwise skip.
if ! command -v qemu-system-x86_64 >/dev/null || [ ! -x /bin/busybox ] ||
	! command -v cpio >/dev/null; then
	if [ "$(id -u)" -eq 0 ]; then
		"$here/kernel.sh" ensure qemu-system-x86 busybox-static cpio ||
			skip "cannot install qemu-system-x86 busybox-static cpio"
	else
		skip "needs qemu-system-x86_64, busybox-static and cpio (apt-get install qemu-system-x86 busybox-static cpio)"
	fi
fi
command -v qemu-system-x86_64 >/dev/null || skip "no qemu-system-x86_64"

# The guest test binaries.
if [ ${#tests[@]} -eq 0 ]; then
	while IFS= read -r f; do
		tests+=("$f")
	done < <(find "$build/tests/vm" -maxdepth 2 -type f -perm -u+x ! -name '*.sh' \
		! -path '*.p/*' 2>/dev/null | sort)
fi
[ ${#tests[@]} -gt 0 ] || { echo "run.sh: no test binaries in $build/tests/vm (build first)"; exit 1; }

# KVM only where it is real: a writable /dev/kvm from kvm_intel or kvm_amd
# (a software hypervisor's /dev/kvm cannot run a stock kernel).
if [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then
	accel=kvm
	boot_timeout=${IODMA_VM_TIMEOUT:-300}
else
	accel=tcg
	boot_timeout=${IODMA_VM_TIMEOUT:-600}
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/iodma-vm.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$build/meson-logs"
truncate -s 64M "$work/nvme.img" "$work/vblk.img"

total_pass=0 total_fail=0 total_skip=0
summary=()
failures=()
ran=0

# expected_backends TIER SPEC_BACKENDS: the backends whose RESULT must appear.
expected_backends() {
	local have=soft\ vfio b out=
	[ "$1" = mini ] && have="soft vfio iommufd"
	for b in $have; do
		if [ -z "$2" ] || [[ ",$2," == *",$b,"* ]]; then
			out="$out $b"
		fi
	done
	echo "${out# }"
}

for tier in $tiers; do
	t0=$SECONDS
	kdir=$("$here/kernel.sh" "$tier")
	st=$?
	if [ $st -eq 77 ]; then
		echo "SKIP: tier $tier: no kernel (see kernel.sh messages above)"
		summary+=("$(printf '%-7s %-7s %-18s %-8s %6s %6s %7s  %s' "$tier" '*' '*' '*' - - - "SKIP no kernel")")
		total_skip=$((total_skip + 1))
		continue
	elif [ $st -ne 0 ] || [ ! -f "$kdir/vmlinuz" ]; then
		echo "run.sh: tier $tier: kernel.sh failed"
		summary+=("$(printf '%-7s %-7s %-18s %-8s %6s %6s %7s  %s' "$tier" '*' '*' '*' - - - "FAIL kernel")")
		failures+=("$tier: kernel.sh failed")
		total_fail=$((total_fail + 1))
		continue
	fi
	echo "== tier $tier: kernel $(cat "$kdir/kver" 2>/dev/null) ($((SECONDS - t0)) s to fetch/build)"
	initrd="$work/initrd-$tier.cpio.gz"
	"$here/initramfs.sh" "$initrd" "$kdir" "${tests[@]}" || {
		failures+=("$tier: initramfs.sh failed")
		total_fail=$((total_fail + 1))
		continue
	}

	for iommu in $iommus; do
		log="$build/meson-logs/vm-$tier-$iommu.log"
		append="console=ttyS0 panic=-1 quiet loglevel=4"
		iommu_dev=()
		case $iommu in
		intel)
			append="$append intel_iommu=on"
			iommu_dev=(-device intel-iommu,intremap=on,caching-mode=on)
			;;
		virtio)
			# No interrupt remapping behind virtio-iommu.
			append="$append vfio_iommu_type1.allow_unsafe_interrupts=1 iommufd.allow_unsafe_interrupts=1"
			iommu_dev=(-device virtio-iommu-pci)
			;;
		esac
		cmd=(qemu-system-x86_64 -accel "$accel"
			-machine q35,kernel-irqchip=split -cpu max -smp 2 -m 1G
			-nographic -no-reboot -nodefaults -serial stdio
			"${iommu_dev[@]}"
			-drive "file=$work/nvme.img,if=none,id=nvm,format=raw"
			-device nvme,serial=deadbeef,drive=nvm
			-drive "file=$work/vblk.img,if=none,id=vblk,format=raw"
			-device virtio-blk-pci,drive=vblk,disable-legacy=on,iommu_platform=on
			-kernel "$kdir/vmlinuz" -initrd "$initrd" -append "$append")
		echo "== boot $tier/$iommu ($accel, timeout ${boot_timeout}s): ${cmd[*]}"
		b0=$SECONDS
		{
			echo "# ${cmd[*]}"
			timeout -k 10 "$boot_timeout" "${cmd[@]}" </dev/null 2>&1
			echo "# qemu exit status $?"
		} | tr -d '\r' >"$log"
		secs=$((SECONDS - b0))
		ran=$((ran + 1))
		echo "   $secs s, log $log"

		done_rc=$(sed -n 's/.*IODMA-VM-DONE rc=\([0-9]*\).*/\1/p' "$log" | tail -n1)
		if [ -z "$done_rc" ]; then
			failures+=("$tier/$iommu: no IODMA-VM-DONE marker (boot failure or timeout after ${secs}s); last lines:")
			while IFS= read -r l; do failures+=("    $l"); done < <(tail -n 15 "$log")
			total_fail=$((total_fail + 1))
		fi
		# Guest-side problems (device without group, insmod failure, kernel
		# warning or oops): one failure per boot that had any.
		nprob=0
		while IFS= read -r l; do
			failures+=("$tier/$iommu: $l")
			nprob=$((nprob + 1))
		done < <(grep -oE 'vm-init: .*(failed|not used|no device|no /tests).*|KERNEL-PROBLEM: .*' "$log")
		[ $nprob -eq 0 ] || total_fail=$((total_fail + 1))

		for spec in "${tests[@]}"; do
			bin=${spec%%:*}
			name=$(basename "$bin")
			sb=
			[ "$bin" = "$spec" ] || sb=${spec#*:}
			for be in $(expected_backends "$tier" "$sb"); do
				res=$(grep -oE "RESULT $name $be passed=[0-9]+ failed=[0-9]+ skipped=[0-9]+" "$log" | tail -n1)
				exitrc=$(grep -oE "EXIT $name $be rc=[0-9]+" "$log" | tail -n1)
				exitrc=${exitrc##*rc=}
				if [ -z "$res" ]; then
					status="FAIL no RESULT"
					[ -n "$exitrc" ] && status="$status (exit $exitrc)"
					p=- f=- s=-
					total_fail=$((total_fail + 1))
					failures+=("$tier/$iommu: $name --backend $be: no RESULT line")
				else
					p=${res#*passed=}; p=${p%% *}
					f=${res#*failed=}; f=${f%% *}
					s=${res#*skipped=}; s=${s%% *}
					total_pass=$((total_pass + p))
					total_fail=$((total_fail + f))
					total_skip=$((total_skip + s))
					if [ "$f" -ne 0 ]; then
						status=FAIL
					elif [ -n "$exitrc" ] && [ "$exitrc" -ne 0 ]; then
						status="FAIL exit $exitrc"
						total_fail=$((total_fail + 1))
						failures+=("$tier/$iommu: $name --backend $be: RESULT clean but exit status $exitrc")
					else
						status=ok
					fi
				fi
				summary+=("$(printf '%-7s %-7s %-18s %-8s %6s %6s %7s  %s' "$tier" "$iommu" "$name" "$be" "$p" "$f" "$s" "$status")")
			done
		done
		# The failing TAP lines of this boot, with their backend.
		while IFS= read -r l; do
			failures+=("$tier/$iommu: $l")
		done < <(awk '/^vm-init: run /{ run = $3 " " $5 } /^not ok /{ print run ": " $0 }' "$log")
		summary+=("$(printf '%-7s %-7s %-18s %-8s %6s %6s %7s  %s' "$tier" "$iommu" '(boot)' '' '' '' '' "${secs}s, marker ${done_rc:-MISSING}")")
	done
done

echo
echo "== vm summary ($accel)"
printf '%-7s %-7s %-18s %-8s %6s %6s %7s  %s\n' tier iommu suite backend passed failed skipped status
for l in "${summary[@]}"; do echo "$l"; done
if [ ${#failures[@]} -gt 0 ]; then
	echo
	echo "== failures"
	for l in "${failures[@]}"; do echo "$l"; done
fi
echo
echo "vm: $total_pass passed, $total_fail failed, $total_skip skipped"
if [ $ran -eq 0 ]; then
	echo "SKIP: no guest could be booted"
	exit 77
fi
[ $total_fail -eq 0 ] && [ ${#failures[@]} -eq 0 ] && exit 0
exit 1
