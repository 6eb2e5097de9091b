/* SPDX-License-Identifier: MIT */
/*
 * arch/riscv64.h - cache maintenance primitives for RISC-V 64 (cache.c only).
 *
 * With the Zicbom extension (the compiler defines __riscv_zicbom when it
 * targets it, e.g. -march=rv64gc_zicbom) lines are cleaned, invalidated and
 * flushed with CBO.CLEAN / CBO.INVAL / CBO.FLUSH on 64-byte cache blocks
 * (the block size the platform reports in its device tree; 64 on every
 * implementation shipping Zicbom), ordered by fence rw,rw.  Without it the
 * ISA has no cache-block operations: only a fence is issued (platforms
 * without Zicbom have coherent DMA or a vendor extension not covered here).
 */
#ifndef IODMA_ARCH_RISCV64_H
#define IODMA_ARCH_RISCV64_H

#include <stdint.h>

#define ARCH_RISCV_CBO_BLOCK 64u

static inline unsigned int arch_dcache_line_size(void)
{
	return ARCH_RISCV_CBO_BLOCK;
}

static inline void arch_fence_rw(void)
{
	__asm__ volatile("fence rw, rw" ::: "memory");
}

#if defined(__riscv_zicbom)
static inline void arch_cbo_clean(uintptr_t p)
{
	__asm__ volatile("cbo.clean 0(%0)" : : "r"(p) : "memory");
}

static inline void arch_cbo_inval(uintptr_t p)
{
	__asm__ volatile("cbo.inval 0(%0)" : : "r"(p) : "memory");
}

static inline void arch_cbo_flush(uintptr_t p)
{
	__asm__ volatile("cbo.flush 0(%0)" : : "r"(p) : "memory");
}
#endif

#endif /* IODMA_ARCH_RISCV64_H */
