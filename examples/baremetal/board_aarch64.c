// SPDX-License-Identifier: MIT
/*
 * board_aarch64.c - QEMU's aarch64 virt board (hw/arm/virt.c memory map):
 * PL011 UART at 0x09000000, 32 virtio-mmio slots of 0x200 bytes from
 * 0x0a000000, the generic timer's virtual counter, and semihosting
 * SYS_EXIT to end the run with an exit code (QEMU -semihosting).
 */
#include <stdint.h>

#include "board.h"

#define PL011_BASE	0x09000000u
#define PL011_DR	0x00u
#define PL011_FR	0x18u
#define PL011_FR_TXFF	(1u << 5)

const struct board board = {
	.name = "aarch64 virt",
	.vmmio_base = 0x0a000000u,
	.vmmio_stride = 0x200u,
	.vmmio_slots = 32,
};

void board_putc(char c)
{
	volatile uint32_t *uart = (volatile uint32_t *)(uintptr_t)PL011_BASE;

	while (uart[PL011_FR / 4] & PL011_FR_TXFF)
		;
	uart[PL011_DR / 4] = (uint8_t)c;
}

uint64_t board_ticks(void)
{
	uint64_t v;

	__asm__ volatile("isb; mrs %0, cntvct_el0" : "=r"(v) :: "memory");
	return v;
}

uint64_t board_tick_hz(void)
{
	uint64_t v;

	__asm__ volatile("mrs %0, cntfrq_el0" : "=r"(v));
	return v;
}

/* Semihosting (ARM IHI 0082): SYS_EXIT with ADP_Stopped_ApplicationExit
 * and the exit code as subcode. */
void board_exit(int code)
{
	static volatile uint64_t block[2];
	register uint64_t x0 __asm__("x0") = 0x18;
	register uint64_t x1 __asm__("x1") = (uintptr_t)block;

	block[0] = 0x20026;
	block[1] = (uint64_t)(int64_t)code;
	__asm__ volatile("hlt #0xf000" : "+r"(x0) : "r"(x1) : "memory");
	for (;;)
		__asm__ volatile("wfi");
}
