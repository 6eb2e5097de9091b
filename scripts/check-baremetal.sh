#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds examples/baremetal for QEMU's aarch64 and riscv64 virt boards and
# boots each image under TCG twice: the virtio-blk device declared coherent
# and non-coherent (4 runs).  A run passes when QEMU exits 0 and the console
# shows the "RESULT ... verified OK" line.  Skips (exit 77, as Meson reads
# it) when a cross compiler or QEMU is missing: `scripts/deps.sh baremetal`.
# Usage: scripts/check-baremetal.sh [OUTDIR]   (default build-baremetal)
#   BM_SABOTAGE=1 builds images whose verify step is told one word differs:
#   every run must then FAIL (proves the check sharp).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build-baremetal}
mkdir -p "$out"
timeout_s=${BM_TIMEOUT:-300}

skip() { echo "baremetal: SKIP: $*"; exit 77; }
for t in aarch64-linux-gnu-gcc riscv64-linux-gnu-gcc qemu-system-aarch64 qemu-system-riscv64; do
	command -v "$t" >/dev/null || skip "$t not found (install: scripts/deps.sh baremetal)"
done

core=(src/util.c src/btree.c src/iopt.c src/iova.c src/domain.c src/xlate.c src/memory.c
      src/regmap.c src/bounce.c src/dma.c src/cache.c src/backend/soft.c
      src/os/freestanding.c)
prog=(examples/baremetal/main.c examples/baremetal/bm_libc.c
      examples/baremetal/transport_vmmio.c examples/virtio-blk/driver.c)
common_flags=(-std=c11 -ffreestanding -nostdinc -fno-pie -fno-stack-protector
	-fno-builtin -O2 -g -Wall -Wextra -Werror -Wno-unused-parameter
	-DIODMA_FREESTANDING -DIODMA_BUILDING_LIBRARY
	-Iexamples/baremetal/include -Isrc/os/freestanding-include -Iinclude -Isrc)

# QEMU 7.2 (Debian 12) has no Zicbom; 8.0+ has -cpu rv64,zicbom=true.
zicbom=0
if timeout 3 qemu-system-riscv64 -M virt -bios none -cpu rv64,zicbom=true -display none \
	-monitor none -serial none -S </dev/null >/dev/null 2>&1; then :; else
	[ $? -eq 124 ] && zicbom=1
fi

flags_of() {
	case $1 in
	aarch64) echo "-mcpu=cortex-a57 -mgeneral-regs-only -mno-outline-atomics" ;;
	riscv64) echo "-march=rv64imafdc_zicsr_zifencei$([ $zicbom = 1 ] && echo _zicbom) -mabi=lp64d -mcmodel=medany -mno-relax" ;;
	esac
}
cc_of() { echo "$1-linux-gnu-gcc"; }

compile() { # arch src obj [extra flags]
	local cc; cc=$(cc_of "$1")
	# shellcheck disable=SC2046
	$cc "${common_flags[@]}" $(flags_of "$1") -isystem "$($cc -print-file-name=include)" \
		${BM_SABOTAGE:+-DBM_SABOTAGE} "${@:4}" -c "$2" -o "$3"
}

build() { # arch noncoherent -> image path on stdout
	local arch=$1 nc=$2 cc dir img obj
	cc=$(cc_of "$arch")
	dir="$out/$arch-$([ "$nc" = 1 ] && echo noncoherent || echo coherent)"
	mkdir -p "$dir" "$out/$arch-common"
	local objs=()
	for f in "${core[@]}" "${prog[@]}" examples/baremetal/board_$arch.c; do
		obj="$out/$arch-common/$(echo "$f" | tr / _ | sed 's/\.c$/.o/')"
		[ "$f" = examples/baremetal/main.c ] && obj="$dir/main.o"
		if [ ! -f "$obj" ] || [ "$f" = examples/baremetal/main.c ]; then
			compile "$arch" "$f" "$obj" -DBM_NONCOHERENT="$nc" >&2
		fi
		objs+=("$obj")
	done
	# shellcheck disable=SC2046
	$cc $(flags_of "$arch") -c examples/baremetal/start_$arch.S -o "$dir/start.o" >&2
	img="$dir/iodma-baremetal.elf"
	# shellcheck disable=SC2046
	$cc $(flags_of "$arch") -nostdlib -static -no-pie -T examples/baremetal/link_$arch.ld \
		-Wl,--wrap=iodma_cache_clean -Wl,--wrap=iodma_cache_invalidate \
		-Wl,--wrap=iodma_cache_clean_invalidate -Wl,--build-id=none \
		-Wl,--no-warn-rwx-segments \
		"$dir/start.o" "${objs[@]}" -lgcc -o "$img" >&2
	echo "$img"
}

rm -rf "$out"/*-common
disk="$out/disk.img"
rm -f "$disk"
truncate -s 16M "$disk"

fail=0
start=$(date +%s)
[ $zicbom = 1 ] || echo "baremetal: note: $(qemu-system-riscv64 --version | head -1) has no Zicbom (QEMU 8.0+): the riscv64 non-coherent run makes the same sync calls, which issue a fence and no cbo.*"
for arch in aarch64 riscv64; do
	for nc in 0 1; do
		if ! img=$(build $arch $nc); then
			echo "FAIL $arch nc=$nc: build failed"
			fail=1
			continue
		fi
		log="${img%.elf}.log"
		case $arch in
		aarch64) q=(qemu-system-aarch64 -M virt -cpu cortex-a57 -semihosting) ;;
		riscv64) q=(qemu-system-riscv64 -M virt -bios none)
			 [ "$nc" = 1 ] && [ $zicbom = 1 ] && q+=(-cpu rv64,zicbom=true) ;;
		esac
		q+=(-m 256M -smp 1 -nographic -monitor none -serial stdio -kernel "$img"
		    -global virtio-mmio.force-legacy=false
		    -drive "if=none,id=d0,format=raw,file=$disk"
		    -device virtio-blk-device,drive=d0)
		rc=0
		timeout "$timeout_s" "${q[@]}" </dev/null >"$log" 2>&1 || rc=$?
		line=$(grep -a 'RESULT' "$log" | tr -d '\r' || true)
		if [ $rc -eq 0 ] && grep -aq 'RESULT .* verified OK' "$log"; then
			echo "PASS $line"
		else
			echo "FAIL $arch $([ "$nc" = 1 ] && echo non-coherent || echo coherent): qemu exit $rc; ${line:-no RESULT line} (log: $log)"
			tail -5 "$log" | tr -d '\r' | sed 's/^/    /'
			fail=1
		fi
	done
done
echo "baremetal: 4 runs in $(( $(date +%s) - start )) s"
exit $fail
