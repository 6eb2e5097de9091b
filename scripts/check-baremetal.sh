#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds examples/baremetal for QEMU's aarch64 and riscv64 virt boards and
# boots each image under TCG twice: the virtio-blk device declared coherent
# and non-coherent (4 runs).  A run passes when QEMU exits 0 and the console
# shows the "RESULT ... verified OK" line.  Skips (exit 77, as Meson reads
# it) when a cross compiler or QEMU is missing: `scripts/deps.sh baremetal`.
# riscv64's non-coherent run executes Zicbom's cbo.clean/inval/flush, which
# needs QEMU 8.0+: when the system's qemu-system-riscv64 is older (Debian 12:
# 7.2), Debian 12's backports QEMU is unpacked privately into
# ~/.cache/iodma-qemu-riscv64 (delete it to refresh) and runs the riscv64
# boots; where that cannot be had the run fences instead and says why.
# Before linking, the core's objects alone (scripts/core-files.sh) must need
# no symbol but mem* and libgcc's, and hold no system-call instruction (svc,
# ecall).
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

. scripts/core-files.sh
core=("${core_files[@]}")
prog=(examples/baremetal/main.c examples/baremetal/bm_libc.c
      examples/baremetal/transport_vmmio.c examples/virtio-blk/driver.c)
common_flags=(-std=c11 -ffreestanding -nostdinc -fno-pie -fno-stack-protector
	-fno-builtin -O2 -g -Wall -Wextra -Werror -Wno-unused-parameter
	-DIODMA_FREESTANDING -DIODMA_BUILDING_LIBRARY
	-Iexamples/baremetal/include -Isrc/os/freestanding-include -Iinclude -Isrc)

# Zicbom (cbo.clean/inval/flush) came in QEMU 8.0; Debian 12 has 7.2.  Its
# backports archive has a newer one (10.0 as of this writing) whose
# qemu-system-riscv package needs only Debian 12's libraries, but installing
# it would move qemu-system-common, and with it qemu-system-x86, off the 7.2
# the vm tier runs.  So it is unpacked privately (apt-get download +
# dpkg-deb -x, no install, nothing configured) into a cache and used for the
# riscv64 runs only; the 7.2 system emulator stays for everything else.
# Set BM_QEMU_RISCV64=/path/to/qemu-system-riscv64 to use another.
has_zicbom() { # qemu binary
	local rc=0
	timeout 3 "$1" -M virt -bios none -cpu rv64,zicbom=true -display none \
		-monitor none -serial none -S </dev/null >/dev/null 2>&1 || rc=$?
	[ $rc -eq 124 ]
}

private_qemu_riscv64() { # -> binary path on stdout, or the reason on stdout and status 1
	local cache=${XDG_CACHE_HOME:-$HOME/.cache}/iodma-qemu-riscv64 mirror apt_o deb missing
	if [ -x "$cache/root/usr/bin/qemu-system-riscv64" ]; then
		echo "$cache/root/usr/bin/qemu-system-riscv64"
		return 0
	fi
	if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
		echo "no apt-get/dpkg-deb to fetch a newer QEMU"
		return 1
	fi
	# The Debian mirror this machine's apt already uses.
	mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)$/\1/p' \
		/etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
	[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 ~ /\/debian\/?$/ { print $2; exit }' \
		/etc/apt/sources.list 2>/dev/null)
	[ -n "$mirror" ] || { echo "no Debian mirror in this machine's apt sources"; return 1; }
	rm -rf "$cache"
	mkdir -p "$cache/apt/lists/partial" "$cache/apt/cache/archives/partial" "$cache/deb"
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bookworm-backports main" \
		>"$cache/apt/sources.list"
	apt_o=(-o "Dir::Etc::sourcelist=$cache/apt/sources.list" -o Dir::Etc::sourceparts=/nonexistent
	       -o "Dir::State::Lists=$cache/apt/lists" -o "Dir::Cache=$cache/apt/cache"
	       -o APT::Sandbox::User=root -o Debug::NoLocking=1)
	apt-get "${apt_o[@]}" -qq update >/dev/null 2>&1 ||
		{ echo "apt-get update of bookworm-backports failed"; return 1; }
	(cd "$cache/deb" && apt-get "${apt_o[@]}" -qq download qemu-system-riscv >/dev/null 2>&1) ||
		{ echo "bookworm-backports has no qemu-system-riscv to download"; return 1; }
	deb=$(ls "$cache"/deb/qemu-system-riscv_*.deb)
	dpkg-deb -x "$deb" "$cache/root" || { echo "dpkg-deb -x $deb failed"; return 1; }
	missing=$(ldd "$cache/root/usr/bin/qemu-system-riscv64" 2>/dev/null | awk '/not found/ { print $1 }' | tr '\n' ' ')
	[ -z "$missing" ] || { rm -rf "$cache/root"; echo "$deb needs libraries not installed here: $missing(scripts/deps.sh baremetal)"; return 1; }
	echo "$cache/root/usr/bin/qemu-system-riscv64"
}

qemu_rv=${BM_QEMU_RISCV64:-qemu-system-riscv64}
zicbom=0
zicbom_why=
if has_zicbom "$qemu_rv"; then
	zicbom=1
elif [ -z "${BM_QEMU_RISCV64:-}" ] && qpriv=$(private_qemu_riscv64) && has_zicbom "$qpriv"; then
	qemu_rv=$qpriv
	zicbom=1
else
	zicbom_why="$($qemu_rv --version | head -1) has no Zicbom (QEMU 8.0+)${qpriv:+, and a newer one could not be had: $qpriv}"
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
	# The core alone: no symbol but mem*, no system call (the linked
	# program below has a libc of its own that would hide a core's call).
	local core_objs=("${objs[@]:0:${#core[@]}}") why
	$cc -nostdlib -r "${core_objs[@]}" -o "$dir/core.o" >&2 || return 1
	if ! why=$(NM=$arch-linux-gnu-nm OBJDUMP=$arch-linux-gnu-objdump core_is_freestanding "$dir/core.o" "$arch" "$($cc -print-libgcc-file-name)"); then
		echo "$why" >&2
		return 1
	fi
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
if [ $zicbom = 1 ]; then
	echo "baremetal: riscv64 runs on $($qemu_rv --version | head -1) ($qemu_rv), with Zicbom"
else
	echo "baremetal: note: $zicbom_why: the riscv64 non-coherent run makes the same sync calls, which issue a fence and no cbo.*"
fi
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
		riscv64) q=("$qemu_rv" -M virt -bios none)
			 [ "$nc" = 1 ] && [ $zicbom = 1 ] && q+=(-cpu rv64,zicbom=true) ;;
		esac
		# -nic none: the board's default NIC is a virtio-net-pci whose
		# option ROM (efi-virtio.rom, ipxe-qemu, only a Recommends of
		# qemu-system-arm) a fresh Debian 12 root lacks, and QEMU then exits.
		q+=(-m 256M -smp 1 -nographic -nic none -monitor none -serial stdio -kernel "$img"
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
