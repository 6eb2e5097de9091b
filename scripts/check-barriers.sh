#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Proves that include/iodma/barrier.h emits the intended instruction on each
# architecture: compiles tests/barrier/barrier_probe.c (one function per
# barrier) with -ffreestanding -O2 for x86-64, aarch64 and riscv64 (C, and
# C++ with the native compiler), disassembles it, and checks every
# function's body against the table below.  An architecture whose cross
# compiler is absent is skipped with a message (scripts/check-cross.sh
# installs them).  Exit 1 on any mismatch.
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
fail=0 checked=0

# function body as one line of "mnemonic operands;" items
body() { # objdump, object, function
	"$1" -d --no-show-raw-insn "$2" |
		awk -v f="<$3>:" '$2 == f { on = 1; next } on && /^$/ { exit }
			on { sub(/^[^:]*:[ \t]*/, ""); sub(/[ \t]+(#|\/\/) .*$/, "");
			     gsub(/[ \t]+/, " ");
			     if ($0 ~ /^(nop|data16|xchg %ax,%ax)/) next; # padding
			     printf "%s; ", $0 }'
}

expect() { # arch, objdump, object, function, extended regex over the body
	local b
	b=$(body "$2" "$3" "$4")
	checked=$((checked + 1))
	if [[ "$b" =~ $5 ]]; then
		echo "  ok   $1 $4: $b"
	else
		echo "  FAIL $1 $4: wanted /$5/, got: $b" >&2
		fail=1
	fi
}

compile() { # cc, object, extra args...
	local cc=$1 o=$2; shift 2
	"$cc" -ffreestanding -O2 -Wall -Wextra -Werror -Iinclude "$@" \
		-c tests/barrier/barrier_probe.c -o "$o"
}

# What each function's body must be, per architecture: ARCH FUNCTION REGEX
# (the regex is the rest of the line).  x86-64: the dma_ pair and
# release/acquire are compiler barriers only.  riscv64's objdump prints
# fence iorw,iorw as plain "fence"; the zero extensions of a u16 argument
# or result may stand beside the barrier.
want=$(cat <<'EOF'
x86-64  probe_dma_wmb            ^ret; $
x86-64  probe_dma_rmb            ^ret; $
x86-64  probe_wmb                ^sfence; ret; $
x86-64  probe_rmb                ^lfence; ret; $
x86-64  probe_mb                 ^mfence; ret; $
x86-64  probe_store_release_u16  ^mov %si,\(%rdi\); ret; $
x86-64  probe_store_release_u32  ^mov %esi,\(%rdi\); ret; $
x86-64  probe_load_acquire_u16   ^movzwl \(%rdi\),%eax; ret; $
aarch64 probe_dma_wmb            ^dmb oshst; ret; $
aarch64 probe_dma_rmb            ^dmb oshld; ret; $
aarch64 probe_wmb                ^dsb st; ret; $
aarch64 probe_rmb                ^dsb ld; ret; $
aarch64 probe_mb                 ^dsb sy; ret; $
aarch64 probe_store_release_u16  ^(and w1, w1, #0xffff; )?dmb osh; strh w1, \[x0\]; ret; $
aarch64 probe_store_release_u32  ^dmb osh; str w1, \[x0\]; ret; $
aarch64 probe_load_acquire_u16   ^ldrh w0, \[x0\]; (and w0, w0, #0xffff; )?dmb oshld; ret; $
riscv64 probe_dma_wmb            ^fence w,w; ret; $
riscv64 probe_dma_rmb            ^fence r,r; ret; $
riscv64 probe_wmb                ^fence ow,ow; ret; $
riscv64 probe_rmb                ^fence ir,ir; ret; $
riscv64 probe_mb                 ^fence( iorw,iorw)?; ret; $
riscv64 probe_store_release_u16  ^fence rw,w; sh a1,0\(a0\); ret; $
riscv64 probe_store_release_u32  ^fence rw,w; sw a1,0\(a0\); ret; $
riscv64 probe_load_acquire_u16   ^lhu a0,0\(a0\); (sll a0,a0,0x30; srl a0,a0,0x30; )?fence r,rw; ret; $
EOF
)

# The builds: ARCH COMPILER OBJDUMP LANGUAGE-FLAGS...  The native x86-64
# compilers must be there (C and C++); a missing cross compiler skips its
# architecture.
builds=(
	"x86-64 gcc objdump -std=c11"
	"x86-64 g++ objdump -x c++ -std=c++11"
	"aarch64 aarch64-linux-gnu-gcc aarch64-linux-gnu-objdump -std=c11"
	"riscv64 riscv64-linux-gnu-gcc riscv64-linux-gnu-objdump -std=c11"
)

n=0
for b in "${builds[@]}"; do
	read -r arch cc dump flags <<<"$b"
	n=$((n + 1))
	if [ "$arch" != x86-64 ] && ! command -v "$cc" >/dev/null; then
		echo "barriers: SKIP $arch: no $cc"
		continue
	fi
	# shellcheck disable=SC2086 # flags: several words
	if ! compile "$cc" "$out/$n.o" $flags; then
		echo "barriers: $arch probe does not compile ($cc)" >&2; fail=1
		continue
	fi
	while read -r a fn re; do
		[ "$a" = "$arch" ] && expect "$arch" "$dump" "$out/$n.o" "$fn" "$re"
	done <<<"$want"
done

echo "barriers: $checked functions checked, $([ $fail -eq 0 ] && echo all as intended || echo MISMATCH)"
exit $fail
