// SPDX-License-Identifier: MIT
// start_riscv64.S - entry in M-mode on QEMU's riscv64 virt board
// (-bios none -kernel ELF at 0x80000000): hart 0 runs, the others park;
// stack, BSS cleared.  No MMU (M-mode, physical = virtual), and QEMU's
// PMAs make all RAM cacheable memory, where Zicbom's cbo.* act.
	.section .text.boot, "ax"
	.global _start
_start:
	csrr	t0, mhartid
	bnez	t0, 3f
	la	sp, __stack_top
	li	t0, (1 << 13)			// mstatus.FS = Initial: the
	csrs	mstatus, t0			// lp64d ABI may touch FP regs
	la	t0, __bss_start
	la	t1, __bss_end
1:	bgeu	t0, t1, 2f
	sd	zero, 0(t0)
	addi	t0, t0, 8
	j	1b
2:	call	bm_main
	call	board_exit
3:	wfi
	j	3b
