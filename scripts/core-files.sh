# SPDX-License-Identifier: MIT
# Sourced (not run) by scripts/layout-check.sh and scripts/check-baremetal.sh:
# the sources of the freestanding core, the part of iodma a bare-metal
# program links (examples/baremetal): the library core, the soft backend and
# the freestanding platform layer.  No Linux header, no system call.
core_files=(src/util.c src/btree.c src/iopt.c src/iova.c src/domain.c src/xlate.c src/memory.c
	src/regmap.c src/bounce.c src/dma.c src/cache.c src/backend/soft.c
	src/os/freestanding.c)

# core_is_freestanding OBJECT ARCH [LIBGCC]: OBJECT is the core's objects
# linked with -nostdlib -r.  Fails, naming the offence, when it needs a
# symbol other than memcpy/memmove/memset/memcmp (what a bare-metal target's
# compiler may call on its own; the linker-made _GLOBAL_OFFSET_TABLE_ too)
# and the compiler's runtime routines that LIBGCC (libgcc.a, from
# $CC -print-libgcc-file-name) defines (riscv64's __clzdi2) and GCC's
# libatomic entry points, __atomic_* (riscv64's sub-word __atomic_fetch_or_1,
# which examples/baremetal/bm_libc.c supplies), or contains a system-call instruction of ARCH
# (x86-64 syscall/sysenter/int $0x80, aarch64 svc/hvc/smc, riscv64 ecall):
# the core must not call an OS.  NM and OBJDUMP name the target's tools.
core_is_freestanding() {
	local obj=$1 arch=$2 libgcc=${3:-} nm=${NM:-nm} objdump=${OBJDUMP:-objdump} undef insn re rt=
	[ -n "$libgcc" ] && [ -f "$libgcc" ] &&
		rt=$("$nm" --defined-only "$libgcc" 2>/dev/null | awk 'NF == 3 && $2 ~ /^[TW]$/ {print $3}' | sort -u)
	undef=$("$nm" -u "$obj" | awk '{print $2}' |
		grep -vxE 'memcpy|memmove|memset|memcmp|_GLOBAL_OFFSET_TABLE_|__atomic_[a-z0-9_]+' |
		{ if [ -n "$rt" ]; then grep -vxF -f <(echo "$rt"); else cat; fi; } || true)
	if [ -n "$undef" ]; then
		echo "freestanding core ($arch): needs symbols a bare-metal target does not have:" $undef
		return 1
	fi
	case $arch in
	x86-64) re='[[:space:]](syscall|sysenter|int[[:space:]]+\$0x80)([[:space:]]|$)' ;;
	aarch64) re='[[:space:]](svc|hvc|smc)[[:space:]]' ;;
	riscv64) re='[[:space:]]ecall([[:space:]]|$)' ;;
	*) echo "core_is_freestanding: unknown arch $arch"; return 1 ;;
	esac
	insn=$("$objdump" -d --no-show-raw-insn "$obj" | grep -E "$re" | head -n 3 || true)
	if [ -n "$insn" ]; then
		echo "freestanding core ($arch): a system-call instruction:"
		echo "$insn"
		return 1
	fi
}
