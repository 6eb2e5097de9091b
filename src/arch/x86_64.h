/* SPDX-License-Identifier: MIT */
/*
 * arch/x86_64.h - cache maintenance primitives for x86-64 (cache.c only).
 *
 * x86 DMA is cache-coherent: a device's reads snoop the CPU caches and its
 * writes invalidate them.  So "clean" only has to order the CPU's stores
 * before the doorbell (sfence), "invalidate" only has to keep later loads
 * from being satisfied early (lfence; mfence), and clean+invalidate really
 * writes the lines back and evicts them with clflushopt (when CPUID.7.0:EBX
 * bit 23 says so) or clflush, for agents that do not snoop.
 */
#ifndef IODMA_ARCH_X86_64_H
#define IODMA_ARCH_X86_64_H

#include <stdint.h>

static inline void arch_cpuid(uint32_t leaf, uint32_t sub, uint32_t *a,
			      uint32_t *b, uint32_t *c, uint32_t *d)
{
	__asm__ volatile("cpuid"
			 : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d)
			 : "a"(leaf), "c"(sub));
}

/* CLFLUSH line size: CPUID.1:EBX bits 15..8, in 8-byte units. */
static inline unsigned int arch_dcache_line_size(void)
{
	uint32_t a, b, c, d;
	unsigned int line;

	arch_cpuid(1, 0, &a, &b, &c, &d);
	line = ((b >> 8) & 0xff) * 8;
	return line ? line : 64;
}

static inline bool arch_has_clflushopt(void)
{
	uint32_t a, b, c, d;

	arch_cpuid(0, 0, &a, &b, &c, &d);
	if (a < 7)
		return false;
	arch_cpuid(7, 0, &a, &b, &c, &d);
	return (b >> 23) & 1;
}

static inline void arch_clflush(const void *p)
{
	__asm__ volatile("clflush %0" : : "m"(*(const char *)p) : "memory");
}

/* clflushopt is clflush with a 0x66 prefix; spelled as bytes so that old
 * assemblers take it. */
static inline void arch_clflushopt(const void *p)
{
	__asm__ volatile(".byte 0x66; clflush %0"
			 : : "m"(*(const char *)p) : "memory");
}

static inline void arch_sfence(void)
{
	__asm__ volatile("sfence" ::: "memory");
}

static inline void arch_lfence_mfence(void)
{
	__asm__ volatile("lfence; mfence" ::: "memory");
}

static inline void arch_mfence(void)
{
	__asm__ volatile("mfence" ::: "memory");
}

#endif /* IODMA_ARCH_X86_64_H */
