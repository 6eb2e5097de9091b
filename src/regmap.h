/* SPDX-License-Identifier: MIT */
/*
 * regmap.h - the VA -> IOVA table of registered memory (SPDK's mem map,
 * with 4 KiB leaves), private to dma.c.
 *
 * Lookups are lock-free (acquire loads of the table pointers, no system
 * call) and may run on any thread while another registers or unregisters
 * other ranges.  Writers are serialised by the map's own mutex.  Interior
 * tables and leaves, once installed, stay until regmap_destroy(), so a
 * concurrent reader never follows a freed pointer.
 */
#ifndef IODMA_REGMAP_H
#define IODMA_REGMAP_H

#include <stddef.h>
#include <stdint.h>

#define REGMAP_PAGE_SHIFT 12
#define REGMAP_PAGE_SIZE  (1ull << REGMAP_PAGE_SHIFT)
#define REGMAP_VA_BITS    48

struct regmap;

/* Returns 0 or -ENOMEM. */
int regmap_create(struct regmap **out);
void regmap_destroy(struct regmap *m);

/* Install every table [va, va + len) needs (both 4 KiB aligned) so that
 * regmap_set*() on the range cannot fail.  Returns 0, -EINVAL (the range
 * reaches past 2^48) or -ENOMEM (tables already installed stay: they are
 * empty and change no lookup). */
int regmap_reserve(struct regmap *m, uint64_t va, uint64_t len);

/* [va, va + len) -> [iova, iova + len).  Range reserved, 4 KiB aligned. */
void regmap_set(struct regmap *m, uint64_t va, uint64_t len, uint64_t iova);

/* One 4 KiB page -> @iova (4 KiB aligned).  Page reserved. */
void regmap_set_page(struct regmap *m, uint64_t va, uint64_t iova);

/* Forget [va, va + len) (4 KiB aligned). */
void regmap_clear(struct regmap *m, uint64_t va, uint64_t len);

/* IOVA of @va if every page of [va, va + len) (len > 0) is present and the
 * pages are contiguous in IOVA space.  Returns 0 or -ENOENT.  Lock-free. */
int regmap_lookup(const struct regmap *m, uint64_t va, uint64_t len,
		  uint64_t *iova);

/* Bytes of table memory the map holds (its own struct, interior tables
 * and leaves).  Writers serialised against it (m->lock). */
uint64_t regmap_table_bytes(struct regmap *m);

#endif /* IODMA_REGMAP_H */
