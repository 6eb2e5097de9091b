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

# x86-64: the dma_ pair and release/acquire are compiler barriers only.
# (riscv64's objdump prints fence iorw,iorw as plain "fence"; the zero
# extensions of a u16 argument or result may stand beside the barrier.)
if compile gcc "$out/x86.o" -std=c11 && compile g++ "$out/x86pp.o" -x c++ -std=c++11; then
	for o in x86.o x86pp.o; do
		d=objdump
		expect x86-64 $d "$out/$o" probe_dma_wmb '^ret; $'
		expect x86-64 $d "$out/$o" probe_dma_rmb '^ret; $'
		expect x86-64 $d "$out/$o" probe_wmb '^sfence; ret; $'
		expect x86-64 $d "$out/$o" probe_rmb '^lfence; ret; $'
		expect x86-64 $d "$out/$o" probe_mb '^mfence; ret; $'
		expect x86-64 $d "$out/$o" probe_store_release_u16 '^mov %si,\(%rdi\); ret; $'
		expect x86-64 $d "$out/$o" probe_store_release_u32 '^mov %esi,\(%rdi\); ret; $'
		expect x86-64 $d "$out/$o" probe_load_acquire_u16 '^movzwl \(%rdi\),%eax; ret; $'
	done
else
	echo "barriers: x86-64 probe does not compile" >&2; fail=1
fi

if command -v aarch64-linux-gnu-gcc >/dev/null; then
	if compile aarch64-linux-gnu-gcc "$out/a64.o" -std=c11; then
		d=aarch64-linux-gnu-objdump o=$out/a64.o
		expect aarch64 $d $o probe_dma_wmb '^dmb oshst; ret; $'
		expect aarch64 $d $o probe_dma_rmb '^dmb oshld; ret; $'
		expect aarch64 $d $o probe_wmb '^dsb st; ret; $'
		expect aarch64 $d $o probe_rmb '^dsb ld; ret; $'
		expect aarch64 $d $o probe_mb '^dsb sy; ret; $'
		expect aarch64 $d $o probe_store_release_u16 '^(and w1, w1, #0xffff; )?dmb osh; strh w1, \[x0\]; ret; $'
		expect aarch64 $d $o probe_store_release_u32 '^dmb osh; str w1, \[x0\]; ret; $'
		expect aarch64 $d $o probe_load_acquire_u16 '^ldrh w0, \[x0\]; (and w0, w0, #0xffff; )?dmb oshld; ret; $'
	else
		echo "barriers: aarch64 probe does not compile" >&2; fail=1
	fi
else
	echo "barriers: SKIP aarch64: no aarch64-linux-gnu-gcc"
fi

if command -v riscv64-linux-gnu-gcc >/dev/null; then
	if compile riscv64-linux-gnu-gcc "$out/rv.o" -std=c11; then
		d=riscv64-linux-gnu-objdump o=$out/rv.o
		expect riscv64 $d $o probe_dma_wmb '^fence w,w; ret; $'
		expect riscv64 $d $o probe_dma_rmb '^fence r,r; ret; $'
		expect riscv64 $d $o probe_wmb '^fence ow,ow; ret; $'
		expect riscv64 $d $o probe_rmb '^fence ir,ir; ret; $'
		expect riscv64 $d $o probe_mb '^fence( iorw,iorw)?; ret; $'
		expect riscv64 $d $o probe_store_release_u16 '^fence rw,w; sh a1,0\(a0\); ret; $'
		expect riscv64 $d $o probe_store_release_u32 '^fence rw,w; sw a1,0\(a0\); ret; $'
		expect riscv64 $d $o probe_load_acquire_u16 '^lhu a0,0\(a0\); (sll a0,a0,0x30; srl a0,a0,0x30; )?fence r,rw; ret; $'
	else
		echo "barriers: riscv64 probe does not compile" >&2; fail=1
	fi
else
	echo "barriers: SKIP riscv64: no riscv64-linux-gnu-gcc"
fi

echo "barriers: $checked functions checked, $([ $fail -eq 0 ] && echo all as intended || echo MISMATCH)"
exit $fail
