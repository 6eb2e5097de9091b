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

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "os/os.h"

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

/* ---- the lookup, inline for dma.c ------------------------------------------ */

#define REGMAP_L1_SHIFT   33
#define REGMAP_L1_SIZE    (1u << (REGMAP_VA_BITS - REGMAP_L1_SHIFT))
#define REGMAP_CHUNK_SHIFT 21
#define REGMAP_CHUNK_SIZE (1ull << REGMAP_CHUNK_SHIFT)
#define REGMAP_L2_SIZE    (1u << (REGMAP_L1_SHIFT - REGMAP_CHUNK_SHIFT))
#define REGMAP_LEAF_SIZE  (1u << (REGMAP_CHUNK_SHIFT - REGMAP_PAGE_SHIFT))
#define REGMAP_VALID      1ull

struct regmap_leaf {
	_Atomic uint64_t e[REGMAP_LEAF_SIZE];   /* IOVA | REGMAP_VALID, or 0 */
};

struct regmap_l2 {
	_Atomic uint64_t e[REGMAP_L2_SIZE];     /* 0, direct, or leaf pointer */
};

struct regmap {
	/* First: a lookup indexes it with no offset to add. */
	struct regmap_l2 *_Atomic l1[REGMAP_L1_SIZE]; /* installed under lock */
	os_mutex_t lock;                        /* serialises writers */
	uint64_t bytes;                         /* table bytes; under lock */
};

static inline unsigned int l1_idx(uint64_t va)
{
	return (unsigned int)(va >> REGMAP_L1_SHIFT) & (REGMAP_L1_SIZE - 1);
}

static inline unsigned int l2_idx(uint64_t va)
{
	return (unsigned int)(va >> REGMAP_CHUNK_SHIFT) & (REGMAP_L2_SIZE - 1);
}

static inline unsigned int leaf_idx(uint64_t va)
{
	return (unsigned int)(va >> REGMAP_PAGE_SHIFT) & (REGMAP_LEAF_SIZE - 1);
}

static inline bool ent_direct(uint64_t e)
{
	return e & REGMAP_VALID;
}

static inline struct regmap_leaf *ent_leaf(uint64_t e)
{
	return ent_direct(e) ? NULL : (struct regmap_leaf *)(uintptr_t)e;
}

/* len > 0 and [va, va + len) below 2^48 (len - 1 < 2^48 rules out a
 * wrap of va + len - 1 too). */
static inline bool in_va_space(uint64_t va, uint64_t len)
{
	return (((len - 1) | (va + (len - 1))) >> REGMAP_VA_BITS) == 0;
}

/* The L2 entry of @va's chunk, or NULL (no L2 table).  Lock-free. */
static inline _Atomic uint64_t *l2_ent(const struct regmap *m, uint64_t va)
{
	struct regmap_l2 *l2;

	l2 = atomic_load_explicit(&((struct regmap *)m)->l1[l1_idx(va)],
				  memory_order_acquire);
	return l2 ? &l2->e[l2_idx(va)] : NULL;
}

/* regmap_lookup() past one chunk or page: out of line. */
int regmap_lookup_slow(const struct regmap *m, uint64_t va, uint64_t len,
		       uint64_t *iova);

/* IOVA of @va if every page of [va, va + len) (len > 0) is present and the
 * pages are contiguous in IOVA space.  Returns 0 or -ENOENT.  Lock-free.
 * The common cases (the buffer in one direct 2 MiB chunk or in one page of
 * a leaf) are inline: three loads, as SPDK's spdk_mem_map_translate. */
static inline int regmap_lookup(const struct regmap *m, uint64_t va,
				uint64_t len, uint64_t *iova)
{
	struct regmap_l2 *l2;
	uint64_t e, off;
	struct regmap_leaf *lf;

	if (!in_va_space(va, len))
		return -ENOENT;
	/* l2_ent() with no mask: va < 2^48, so va >> REGMAP_L1_SHIFT is an
	 * index of l1 already. */
	l2 = atomic_load_explicit(&((struct regmap *)m)->l1[va >> REGMAP_L1_SHIFT],
				  memory_order_acquire);
	if (!l2)
		return -ENOENT;
	e = atomic_load_explicit(&l2->e[l2_idx(va)], memory_order_acquire);
	/* (off + len cannot wrap: both are below 2^48.) */
	if (ent_direct(e)) {
		off = va & (REGMAP_CHUNK_SIZE - 1);
		if (off + len <= REGMAP_CHUNK_SIZE) {
			*iova = e - REGMAP_VALID + off;   /* (the bit is set) */
			return 0;
		}
	} else {
		lf = ent_leaf(e);
		if (!lf)
			return -ENOENT;
		e = atomic_load_explicit(&lf->e[leaf_idx(va)], memory_order_relaxed);
		if (!(e & REGMAP_VALID))
			return -ENOENT;
		off = va & (REGMAP_PAGE_SIZE - 1);
		if (off + len <= REGMAP_PAGE_SIZE) {
			*iova = e - REGMAP_VALID + off;
			return 0;
		}
	}
	return regmap_lookup_slow(m, va, len, iova);
}

/* Bytes of table memory the map holds (its own struct with the top
 * level, L2 tables and leaves).  Serialised with the writers. */
uint64_t regmap_table_bytes(struct regmap *m);

/* Tests only (test_regmap.c): regmap_set() without taking m->lock, the
 * caller's bug that fill_locked()'s lock assertion exists to catch; it
 * aborts in a debug build. */
void regmap_test_set_unlocked(struct regmap *m, uint64_t va, uint64_t len,
			      uint64_t iova);

#endif /* IODMA_REGMAP_H */
