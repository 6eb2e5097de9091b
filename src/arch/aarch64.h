/* SPDX-License-Identifier: MIT */
/*
 * arch/aarch64.h - cache maintenance primitives for AArch64 (cache.c only).
 *
 * Lines are maintained to the Point of Coherency with DC CVAC (clean),
 * DC IVAC (invalidate) and DC CIVAC (clean+invalidate), then DSB SY waits
 * for completion.  The line size is CTR_EL0.DminLine (bits 19..16: log2 of
 * the smallest D-cache line in 4-byte words).
 *
 * DC IVAC is not permitted at EL0 (it traps whatever SCTLR_EL1.UCI says),
 * so a hosted build (Linux user space) invalidates with DC CIVAC, as Linux
 * does for user-space cache maintenance; clean+invalidate is a superset of
 * invalidate for memory the CPU did not dirty.  A freestanding build
 * (IODMA_FREESTANDING, running at EL1 or above) uses DC IVAC.
 */
#ifndef IODMA_ARCH_AARCH64_H
#define IODMA_ARCH_AARCH64_H

#include <stdint.h>

static inline unsigned int arch_dcache_line_size(void)
{
	uint64_t ctr;

	__asm__ volatile("mrs %0, ctr_el0" : "=r"(ctr));
	return 4u << ((ctr >> 16) & 0xf);
}

static inline void arch_dc_cvac(uintptr_t p)
{
	__asm__ volatile("dc cvac, %0" : : "r"(p) : "memory");
}

static inline void arch_dc_civac(uintptr_t p)
{
	__asm__ volatile("dc civac, %0" : : "r"(p) : "memory");
}

static inline void arch_dc_ivac(uintptr_t p)
{
#if defined(IODMA_FREESTANDING)
	__asm__ volatile("dc ivac, %0" : : "r"(p) : "memory");
#else
	__asm__ volatile("dc civac, %0" : : "r"(p) : "memory");
#endif
}

static inline void arch_dsb_sy(void)
{
	__asm__ volatile("dsb sy" ::: "memory");
}

#endif /* IODMA_ARCH_AARCH64_H */
