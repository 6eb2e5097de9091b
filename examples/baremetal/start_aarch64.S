// SPDX-License-Identifier: MIT
// start_aarch64.S - entry at EL1 on QEMU's aarch64 virt board (-kernel ELF,
// one CPU): stack, FP/SIMD on, BSS cleared, then an identity map with the
// MMU and caches on (so dc cvac/ivac/civac act on cacheable Normal memory):
// one level-1 table of 1 GiB blocks, 4 KiB granule, 39-bit VA:
//   [0, 1 GiB)      Device-nGnRnE, never executable (UART, virtio-mmio)
//   [1 GiB, 2 GiB)  Normal write-back, inner shareable (the RAM)
	.section .text.boot, "ax"
	.global _start
_start:
	ldr	x0, =__stack_top
	mov	sp, x0
	mov	x0, #(3 << 20)			// CPACR_EL1.FPEN: no FP/SIMD traps
	msr	cpacr_el1, x0
	isb
	ldr	x0, =__bss_start
	ldr	x1, =__bss_end
1:	cmp	x0, x1
	b.hs	2f
	str	xzr, [x0], #8
	b	1b
2:	adrp	x0, l1_table
	ldr	x1, =(0x00000000 | (3 << 53) | (1 << 10) | (0 << 2) | 1)
	str	x1, [x0]
	ldr	x1, =(0x40000000 | (1 << 10) | (3 << 8) | (1 << 2) | 1)
	str	x1, [x0, #8]
	dsb	sy
	msr	ttbr0_el1, x0
	ldr	x1, =0xff00			// attr0 Device-nGnRnE, attr1 Normal WB
	msr	mair_el1, x1
	// T0SZ=25, IRGN0=ORGN0=WB-WA, SH0=inner, TG0=4K, EPD1, IPS=40 bits
	ldr	x1, =(25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23) | (2 << 32))
	msr	tcr_el1, x1
	isb
	tlbi	vmalle1
	dsb	sy
	isb
	mrs	x1, sctlr_el1
	orr	x1, x1, #(1 << 0)		// M
	orr	x1, x1, #(1 << 2)		// C
	orr	x1, x1, #(1 << 12)		// I
	msr	sctlr_el1, x1
	isb
	bl	bm_main
	bl	board_exit

	.section .bss.pt, "aw", %nobits
	.balign 4096
l1_table:
	.space	4096
