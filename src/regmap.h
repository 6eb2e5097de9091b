/* SPDX-License-Identifier: MIT */
/*
 * regmap.h - the VA -> IOVA table of registered memory (SPDK's mem map:
 * 2 MiB entries, and 4 KiB-granule leaves under the 2 MiB chunks that are
 * registered in part), private to dma.c.
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
 * regmap_set() and regmap_clear() on the range cannot fail: the interior
 * tables, and a 4 KiB-granule leaf under each 2 MiB chunk the range covers
 * in part.  Returns 0, -EINVAL (the range reaches past 2^48) or -ENOMEM
 * (tables already installed stay: they change no lookup). */
int regmap_reserve(struct regmap *m, uint64_t va, uint64_t len);

/* regmap_reserve(), with a leaf under every chunk of the range: needed
 * before regmap_set_page() (pages not contiguous in IOVA). */
int regmap_reserve_pages(struct regmap *m, uint64_t va, uint64_t len);

/* [va, va + len) -> [iova, iova + len).  Range reserved, 4 KiB aligned.
 * A whole 2 MiB chunk without a leaf gets one direct 2 MiB entry. */
void regmap_set(struct regmap *m, uint64_t va, uint64_t len, uint64_t iova);

/* One 4 KiB page -> @iova (4 KiB aligned).  Page reserved with
 * regmap_reserve_pages(). */
void regmap_set_page(struct regmap *m, uint64_t va, uint64_t iova);

/* Forget [va, va + len) (4 KiB aligned): a range set with one
 * regmap_set(), or reserved (its direct chunks are whole or have leaves). */
void regmap_clear(struct regmap *m, uint64_t va, uint64_t len);

/* IOVA of @va if every page of [va, va + len) (len > 0) is present and the
 * pages are contiguous in IOVA space.  Returns 0 or -ENOENT.  Lock-free. */
int regmap_lookup(const struct regmap *m, uint64_t va, uint64_t len,
		  uint64_t *iova);

/* Bytes of table memory the map holds (its own struct with the top
 * level, L2 tables and leaves).  Serialised with the writers. */
uint64_t regmap_table_bytes(struct regmap *m);

#endif /* IODMA_REGMAP_H */
