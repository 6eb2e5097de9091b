/* SPDX-License-Identifier: MIT */
/*
 * iodma/cache.h - CPU cache maintenance for non-coherent DMA
 *                 (dma-api crate DmaOp::flush / invalidate / flush_invalidate).
 *
 * Concepts
 *   A device that does not snoop CPU caches needs the driver to clean (write
 *   back) dirty lines before the device reads memory, and to invalidate lines
 *   before the CPU reads what the device wrote.  These functions do it for
 *   the architecture the library was built for:
 *     aarch64  dc cvac / dc ivac / dc civac per line, then dsb sy (dc ivac
 *              is not allowed at EL0: a hosted build invalidates with
 *              dc civac, a freestanding one with dc ivac);
 *     riscv64  cbo.clean / cbo.inval / cbo.flush per line (Zicbom, when the
 *              compiler targets it), fence rw,rw otherwise;
 *     x86-64   DMA is coherent: clean is sfence (orders the stores before a
 *              doorbell), invalidate is lfence+mfence, clean+invalidate uses
 *              clflush(opt) per line then mfence (a real write-back, as
 *              flushing a buffer before handing it to a non-snooping agent
 *              needs).
 *   The range is widened to whole cache lines.  Invalidate on a line shared
 *   with other data discards that data's dirty bytes on non-coherent
 *   architectures: keep DMA buffers cache-line aligned there.
 *   iodma_sync_for_cpu / _for_device call these for devices created with
 *   noncoherent = true.  All are thread-safe, never fail, and do not block.
 */
#ifndef IODMA_CACHE_H
#define IODMA_CACHE_H

#include <iodma/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * iodma_cache_line_size() - The data cache line size used for maintenance.
 *
 * Context: thread-safe.
 * Return:  bytes (a power of two; from CTR_EL0 on aarch64, CPUID on x86-64,
 *          64 elsewhere).
 */
IODMA_EXPORT size_t iodma_cache_line_size(void);

/**
 * iodma_cache_clean() - Write dirty lines of [va, va + len) back to memory
 *                       (DmaOp::flush).
 * @va:  first byte.
 * @len: bytes; 0 does nothing.
 *
 * Context: thread-safe.
 * Return:  nothing.
 */
IODMA_EXPORT void iodma_cache_clean(const void *va, size_t len);

/**
 * iodma_cache_invalidate() - Discard cached lines of [va, va + len)
 *                            (DmaOp::invalidate).
 * @va:  first byte.
 * @len: bytes; 0 does nothing.
 *
 * Context: thread-safe.
 * Return:  nothing.
 */
IODMA_EXPORT void iodma_cache_invalidate(const void *va, size_t len);

/**
 * iodma_cache_clean_invalidate() - Write back and discard
 *                                  (DmaOp::flush_invalidate).
 * @va:  first byte.
 * @len: bytes; 0 does nothing.
 *
 * Context: thread-safe.
 * Return:  nothing.
 */
IODMA_EXPORT void iodma_cache_clean_invalidate(const void *va, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* IODMA_CACHE_H */
