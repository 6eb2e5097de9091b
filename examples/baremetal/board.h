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
 * Barriers between DMA memory and device registers.  Private to this
 * example for now; each maps one to one onto include/iodma/barrier.h
 * (bm_dma_wmb -> iodma_dma_wmb, bm_dma_rmb -> iodma_dma_rmb, bm_mb ->
 * iodma_mb), so switching is a one-line change per macro.  As Linux's
 * writel/readl: a doorbell write must follow the ring stores (wmb, 'o'
 * ordered after 'w'), a ring read must follow the register read that
 * said there is something (rmb).
 */
#if defined(__aarch64__)
#define bm_dma_wmb()	__asm__ volatile("dsb st" ::: "memory")
#define bm_dma_rmb()	__asm__ volatile("dsb ld" ::: "memory")
#define bm_mb()		__asm__ volatile("dsb sy" ::: "memory")
#elif defined(__riscv)
#define bm_dma_wmb()	__asm__ volatile("fence w,o" ::: "memory")
#define bm_dma_rmb()	__asm__ volatile("fence i,r" ::: "memory")
#define bm_mb()		__asm__ volatile("fence iorw,iorw" ::: "memory")
#else
#error "examples/baremetal: aarch64 or riscv64 only"
#endif

#endif
