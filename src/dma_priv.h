/* SPDX-License-Identifier: MIT */
/*
 * dma_priv.h - what tests and benchmarks of dma.c may see beyond dma.h.
 */
#ifndef IODMA_DMA_PRIV_H
#define IODMA_DMA_PRIV_H

#include <stdint.h>

#include <iodma/dma.h>

/* Cache maintenance a non-coherent device's maps and syncs performed. */
struct dma_cache_counts {
	uint64_t clean;            /* iodma_cache_clean() calls */
	uint64_t invalidate;       /* iodma_cache_invalidate() calls */
	uint64_t clean_invalidate; /* iodma_cache_clean_invalidate() calls */
};

void dma_dev_cache_counts(const struct iodma_dev *dev,
			  struct dma_cache_counts *out);

#endif /* IODMA_DMA_PRIV_H */
