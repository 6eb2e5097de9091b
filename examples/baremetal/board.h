/* SPDX-License-Identifier: MIT */
/*
 * board.h - what each QEMU virt board (board_aarch64.c, board_riscv64.c)
 * gives the bare-metal program: a UART, a free-running counter, the
 * virtio-mmio slots and a way to end the run.
 */
#ifndef BM_BOARD_H
#define BM_BOARD_H
#include <stdint.h>

struct board {
	const char *name;		/* "aarch64 virt" */
	uintptr_t vmmio_base;		/* first virtio-mmio slot */
	uintptr_t vmmio_stride;		/* bytes between slots */
	unsigned int vmmio_slots;
};

extern const struct board board;

void board_putc(char c);
uint64_t board_ticks(void);		/* monotonic counter */
uint64_t board_tick_hz(void);
__attribute__((noreturn)) void board_exit(int code);

/*
 * Barriers between DMA memory and device registers (iodma/barrier.h), as
 * Linux's writel/readl: a doorbell or queue-enable register write follows
 * the ring stores (wmb: dsb st / fence ow,ow), a ring read follows the
 * register read that announced it (rmb: dsb ld / fence ir,ir).
 */
#include <iodma/barrier.h>
#define bm_dma_wmb()	iodma_wmb()
#define bm_dma_rmb()	iodma_rmb()
#define bm_mb()		iodma_mb()

#endif
