// SPDX-License-Identifier: MIT
/*
 * board_riscv64.c - QEMU's riscv64 virt board (hw/riscv/virt.c memory
 * map): NS16550 UART at 0x10000000, 8 virtio-mmio slots of 0x1000 bytes
 * from 0x10001000, the CLINT's mtime (10 MHz) at 0x0200bff8, and the
 * SiFive test device at 0x100000 to end the run with an exit code.
 */
#include <stdint.h>

#include "board.h"

#define UART_BASE	0x10000000u
#define UART_THR	0u
#define UART_LSR	5u
#define UART_LSR_THRE	(1u << 5)
#define CLINT_MTIME	0x0200bff8u
#define TEST_BASE	0x00100000u
#define TEST_PASS	0x5555u
#define TEST_FAIL	0x3333u

const struct board board = {
	.name = "riscv64 virt",
	.vmmio_base = 0x10001000u,
	.vmmio_stride = 0x1000u,
	.vmmio_slots = 8,
};

void board_putc(char c)
{
	volatile uint8_t *uart = (volatile uint8_t *)(uintptr_t)UART_BASE;

	while (!(uart[UART_LSR] & UART_LSR_THRE))
		;
	uart[UART_THR] = (uint8_t)c;
}

uint64_t board_ticks(void)
{
	return *(volatile uint64_t *)(uintptr_t)CLINT_MTIME;
}

uint64_t board_tick_hz(void)
{
	return 10000000u;
}

void board_exit(int code)
{
	volatile uint32_t *test = (volatile uint32_t *)(uintptr_t)TEST_BASE;

	*test = code ? ((uint32_t)code << 16 | TEST_FAIL) : TEST_PASS;
	for (;;)
		__asm__ volatile("wfi");
}
