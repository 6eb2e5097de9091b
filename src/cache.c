/* SPDX-License-Identifier: MIT */
/*
 * cache.c - CPU cache maintenance for non-coherent DMA (iodma/cache.h).
 *
 * The range is widened to whole lines: [align_down(va, line),
 * align_up(va + len, line)).  No OS call: the line size comes from the CPU
 * (CPUID, CTR_EL0) and is cached after the first query.
 */
#include <stdatomic.h>

#include <iodma/cache.h>

#include "util.h"

#if defined(__x86_64__)
#include "arch/x86_64.h"
#elif defined(__aarch64__)
#include "arch/aarch64.h"
#elif defined(__riscv) && __riscv_xlen == 64
#include "arch/riscv64.h"
#else
#error "iodma: no cache maintenance for this architecture"
#endif

static atomic_uint cached_line; /* 0 = not read yet */

IODMA_EXPORT size_t iodma_cache_line_size(void)
{
	unsigned int line = atomic_load_explicit(&cached_line,
						 memory_order_relaxed);

	if (!line) {
		line = arch_dcache_line_size();
		/* A value that is not a power of two cannot be right. */
		if (line < 16 || (line & (line - 1)))
			line = 64;
		atomic_store_explicit(&cached_line, line, memory_order_relaxed);
	}
	return line;
}

/* First line address and one past the last line of [va, va + len), or
 * false for an empty range.  A range running into the top of the address
 * space stops at the last whole line. */
static __attribute__((unused)) bool line_span(const void *va, size_t len, uintptr_t *first,
		      uintptr_t *last)
{
	uintptr_t line = iodma_cache_line_size();
	uintptr_t s = (uintptr_t)va;
	uintptr_t e;

	if (len == 0)
		return false;
	e = s + (len - 1);
	if (e < s)
		e = UINTPTR_MAX;
	*first = s & ~(line - 1);
	*last = e & ~(line - 1);
	return true;
}

#if defined(__x86_64__)

static atomic_int clflushopt_state; /* 0 unknown, 1 no, 2 yes */

static bool use_clflushopt(void)
{
	int s = atomic_load_explicit(&clflushopt_state, memory_order_relaxed);

	if (!s) {
		s = arch_has_clflushopt() ? 2 : 1;
		atomic_store_explicit(&clflushopt_state, s, memory_order_relaxed);
	}
	return s == 2;
}

IODMA_EXPORT void iodma_cache_clean(const void *va, size_t len)
{
	/* Coherent DMA: only order the stores before a later doorbell. */
	if (len)
		arch_sfence();
}

IODMA_EXPORT void iodma_cache_invalidate(const void *va, size_t len)
{
	/* Coherent DMA: keep later loads after the device's completion. */
	if (len)
		arch_lfence_mfence();
}

IODMA_EXPORT void iodma_cache_clean_invalidate(const void *va, size_t len)
{
	uintptr_t p, last, line = iodma_cache_line_size();

	if (!line_span(va, len, &p, &last))
		return;
	/* clflush(opt) is weakly ordered against other stores: fence first
	 * so earlier stores to the range are written back too. */
	arch_mfence();
	if (use_clflushopt()) {
		for (;; p += line) {
			arch_clflushopt((const void *)p);
			if (p == last)
				break;
		}
	} else {
		for (;; p += line) {
			arch_clflush((const void *)p);
			if (p == last)
				break;
		}
	}
	arch_mfence();
}

#elif defined(__aarch64__)

IODMA_EXPORT void iodma_cache_clean(const void *va, size_t len)
{
	uintptr_t p, last, line = iodma_cache_line_size();

	if (!line_span(va, len, &p, &last))
		return;
	for (;; p += line) {
		arch_dc_cvac(p);
		if (p == last)
			break;
	}
	arch_dsb_sy();
}

IODMA_EXPORT void iodma_cache_invalidate(const void *va, size_t len)
{
	uintptr_t p, last, line = iodma_cache_line_size();

	if (!line_span(va, len, &p, &last))
		return;
	for (;; p += line) {
		arch_dc_ivac(p);
		if (p == last)
			break;
	}
	arch_dsb_sy();
}

IODMA_EXPORT void iodma_cache_clean_invalidate(const void *va, size_t len)
{
	uintptr_t p, last, line = iodma_cache_line_size();

	if (!line_span(va, len, &p, &last))
		return;
	for (;; p += line) {
		arch_dc_civac(p);
		if (p == last)
			break;
	}
	arch_dsb_sy();
}

#else /* riscv64 */

#if defined(__riscv_zicbom)
#define CBO_LOOP(op)							\
	do {								\
		uintptr_t p_, last_, line_ = iodma_cache_line_size();	\
		if (!line_span(va, len, &p_, &last_))			\
			return;						\
		arch_fence_rw();					\
		for (;; p_ += line_) {					\
			op(p_);						\
			if (p_ == last_)				\
				break;					\
		}							\
		arch_fence_rw();					\
	} while (0)
#else
#define CBO_LOOP(op)							\
	do {								\
		if (len)						\
			arch_fence_rw();				\
	} while (0)
#endif

IODMA_EXPORT void iodma_cache_clean(const void *va, size_t len)
{
	CBO_LOOP(arch_cbo_clean);
}

IODMA_EXPORT void iodma_cache_invalidate(const void *va, size_t len)
{
	CBO_LOOP(arch_cbo_inval);
}

IODMA_EXPORT void iodma_cache_clean_invalidate(const void *va, size_t len)
{
	CBO_LOOP(arch_cbo_flush);
}

#endif
