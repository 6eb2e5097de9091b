/* SPDX-License-Identifier: MIT */
/*
 * regmap.c - the VA -> IOVA radix table of registered memory.
 *
 * A 48-bit virtual address is decoded as SPDK's mem map does
 * (lib/env_dpdk/memory.c): two levels down to 2 MiB, and a 4 KiB-granule
 * leaf only under the 2 MiB chunks that are registered in part:
 *
 *    47             33 32          21 20      12 11           0
 *   +-----------------+--------------+----------+--------------+
 *   |    L1 index     |   L2 index   |leaf index| page offset  |
 *   +-----------------+--------------+----------+--------------+
 *     32768 entries     4096 entries   512 entries
 *     -> L2 table       uint64_t:      uint64_t: IOVA of the 4 KiB page
 *     (NULL: nothing    0 nothing       | REGMAP_VALID (bit 0)
 *     registered in     IOVA of the chunk | REGMAP_VALID: the whole
 *     those 8 GiB)        2 MiB chunk is registered, contiguous in IOVA
 *                       else a leaf pointer (bit 0 clear)
 *
 * Bits 63..48 must be zero (user-space VAs on x86-64 4-level paging,
 * AArch64 48-bit VA, RISC-V Sv48); higher addresses are never registered.
 * The L1 array is 256 KiB, an L2 table 32 KiB (8 GiB of VA), a leaf 4 KiB
 * (2 MiB): a registration of whole 2 MiB chunks costs 8 bytes of L2 per
 * chunk and no leaf; a 2 MiB registration in 4 KiB entries (the old
 * layout) cost 4 KiB.
 *
 * A chunk goes direct only when one regmap_set() covers all of it and it
 * has no leaf; a chunk that has had a leaf keeps it (filled per page)
 * until regmap_destroy(), as do L2 tables, so a concurrent reader never
 * follows a freed pointer.  A direct chunk that has to be set or cleared in
 * part gets its leaf first (regmap_reserve*(), filled from the direct
 * entry, so lookups do not change when it is published).
 *
 * Readers do acquire loads of the L1 slot and of the L2 entry (a leaf
 * pointer is published with a release store after it is filled) and a
 * relaxed load of the leaf entry; writers hold m->lock.
 */
#include <errno.h>
#include <stdatomic.h>

#include "regmap.h"
#include "util.h"

int regmap_create(struct regmap **out)
{
	struct regmap *m = iodma_calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	os_mutex_init(&m->lock);
	m->bytes = sizeof(*m);
	*out = m;
	return 0;
}

void regmap_destroy(struct regmap *m)
{
	if (!m)
		return;
	for (unsigned int i = 0; i < REGMAP_L1_SIZE; i++) {
		struct regmap_l2 *l2 = atomic_load_explicit(&m->l1[i],
							    memory_order_relaxed);

		if (!l2)
			continue;
		for (unsigned int j = 0; j < REGMAP_L2_SIZE; j++)
			iodma_free(ent_leaf(atomic_load_explicit(&l2->e[j],
							  memory_order_relaxed)));
		iodma_free(l2);
	}
	os_mutex_destroy(&m->lock);
	iodma_free(m);
}

uint64_t regmap_table_bytes(struct regmap *m)
{
	uint64_t n;

	os_mutex_lock(&m->lock);
	n = m->bytes;
	os_mutex_unlock(&m->lock);
	return n;
}

/* Install the L2 table of @va and, with @leaf, a leaf under its chunk
 * (filled from a direct entry).  Caller holds m->lock. */
static int reserve_chunk_locked(struct regmap *m, uint64_t va, bool leaf)
{
	struct regmap_l2 *l2;
	struct regmap_leaf *lf;
	uint64_t e;

	os_mutex_assert_held(&m->lock);

	l2 = atomic_load_explicit(&m->l1[l1_idx(va)], memory_order_relaxed);
	if (!l2) {
		l2 = iodma_calloc(1, sizeof(*l2));
		if (!l2)
			return -ENOMEM;
		m->bytes += sizeof(*l2);
		atomic_store_explicit(&m->l1[l1_idx(va)], l2,
				      memory_order_release);
	}
	e = atomic_load_explicit(&l2->e[l2_idx(va)], memory_order_relaxed);
	if (!leaf || (e && !ent_direct(e)))
		return 0;
	lf = iodma_calloc(1, sizeof(*lf));
	if (!lf)
		return -ENOMEM;
	m->bytes += sizeof(*lf);
	if (e) {
		/* Direct: the leaf says the same, page by page. */
		for (unsigned int i = 0; i < REGMAP_LEAF_SIZE; i++)
			atomic_store_explicit(&lf->e[i],
					      e + ((uint64_t)i << REGMAP_PAGE_SHIFT),
					      memory_order_relaxed);
	}
	atomic_store_explicit(&l2->e[l2_idx(va)], (uint64_t)(uintptr_t)lf,
			      memory_order_release);
	return 0;
}

static int reserve(struct regmap *m, uint64_t va, uint64_t len, bool pages)
{
	uint64_t c, last;
	int ret = 0;

	if (!in_va_space(va, len))
		return -EINVAL;
	last = range_last(va, len);
	os_mutex_lock(&m->lock);
	/* One step per 2 MiB chunk; a leaf where the range covers it in part
	 * (or everywhere, with @pages). */
	for (c = align_down(va, REGMAP_CHUNK_SIZE); c <= last;
	     c += REGMAP_CHUNK_SIZE) {
		bool part = c < va || range_last(c, REGMAP_CHUNK_SIZE) > last;

		ret = reserve_chunk_locked(m, c, pages || part);
		if (ret)
			break;
	}
	os_mutex_unlock(&m->lock);
	return ret;
}

int regmap_reserve(struct regmap *m, uint64_t va, uint64_t len)
{
	return reserve(m, va, len, false);
}

int regmap_reserve_pages(struct regmap *m, uint64_t va, uint64_t len)
{
	return reserve(m, va, len, true);
}

/* With @set, store @iova for [va, va + len), stepping @step per page;
 * else clear it.  Whole chunks without a leaf become direct (or empty);
 * the others need their leaf (regmap_reserve*() ran).  Caller holds
 * m->lock. */
static void fill_locked(struct regmap *m, uint64_t va, uint64_t len,
			uint64_t iova, uint64_t step, bool set)
{
	uint64_t end = va + len; /* in the VA space: cannot wrap */

	os_mutex_assert_held(&m->lock);

	while (va < end) {
		uint64_t c = align_down(va, REGMAP_CHUNK_SIZE);
		uint64_t stop = IODMA_MIN(end, c + REGMAP_CHUNK_SIZE);
		_Atomic uint64_t *pe = l2_ent(m, va);
		uint64_t e;
		struct regmap_leaf *lf;

		assert(pe); /* regmap_reserve*() ran */
		e = atomic_load_explicit(pe, memory_order_relaxed);
		lf = e ? ent_leaf(e) : NULL;
		if (!lf) {
			/* Only whole chunks are direct; a partial one was
			 * given its leaf by regmap_reserve*(). */
			assert(va == c && stop == c + REGMAP_CHUNK_SIZE &&
			       (!set || step == REGMAP_PAGE_SIZE));
			atomic_store_explicit(pe, set ? iova | REGMAP_VALID : 0,
					      memory_order_release);
			iova += REGMAP_CHUNK_SIZE;
			va = stop;
			continue;
		}
		for (; va < stop; va += REGMAP_PAGE_SIZE) {
			atomic_store_explicit(&lf->e[leaf_idx(va)],
					      set ? iova | REGMAP_VALID : 0,
					      memory_order_relaxed);
			iova += step;
		}
	}
}

void regmap_set(struct regmap *m, uint64_t va, uint64_t len, uint64_t iova)
{
	assert(is_aligned(va | len | iova, REGMAP_PAGE_SIZE));
	os_mutex_lock(&m->lock);
	fill_locked(m, va, len, iova, REGMAP_PAGE_SIZE, true);
	os_mutex_unlock(&m->lock);
}

void regmap_test_set_unlocked(struct regmap *m, uint64_t va, uint64_t len,
			      uint64_t iova)
{
	fill_locked(m, va, len, iova, REGMAP_PAGE_SIZE, true);
}

void regmap_set_page(struct regmap *m, uint64_t va, uint64_t iova)
{
	assert(is_aligned(va | iova, REGMAP_PAGE_SIZE));
	os_mutex_lock(&m->lock);
	fill_locked(m, va, REGMAP_PAGE_SIZE, iova, 0, true);
	os_mutex_unlock(&m->lock);
}

void regmap_clear(struct regmap *m, uint64_t va, uint64_t len)
{
	assert(is_aligned(va | len, REGMAP_PAGE_SIZE));
	os_mutex_lock(&m->lock);
	fill_locked(m, va, len, 0, 0, false);
	os_mutex_unlock(&m->lock);
}

/* IOVA of @va and the bytes from @va to the end of the entry that holds
 * it (its chunk or its page), or false.  Lock-free. */
static inline bool xlate(const struct regmap *m, uint64_t va, uint64_t *iova,
			 uint64_t *span)
{
	_Atomic uint64_t *pe = l2_ent(m, va);
	uint64_t e;
	struct regmap_leaf *lf;

	if (!pe)
		return false;
	e = atomic_load_explicit(pe, memory_order_acquire);
	if (ent_direct(e)) {
		*iova = (e & ~REGMAP_VALID) + (va & (REGMAP_CHUNK_SIZE - 1));
		*span = REGMAP_CHUNK_SIZE - (va & (REGMAP_CHUNK_SIZE - 1));
		return true;
	}
	lf = ent_leaf(e);
	if (!lf)
		return false;
	e = atomic_load_explicit(&lf->e[leaf_idx(va)], memory_order_relaxed);
	if (!(e & REGMAP_VALID))
		return false;
	*iova = (e & ~REGMAP_VALID) + (va & (REGMAP_PAGE_SIZE - 1));
	*span = REGMAP_PAGE_SIZE - (va & (REGMAP_PAGE_SIZE - 1));
	return true;
}

/* A buffer that crosses entries: every next entry must continue the IOVA
 * range of the first.  Lock-free. */
static int lookup_span(const struct regmap *m, uint64_t va, uint64_t len,
		       uint64_t *iova)
{
	uint64_t io, span, cur, left;

	if (!xlate(m, va, &io, &span))
		return -ENOENT;
	for (cur = va, left = len; left > span;) {
		uint64_t next, nspan;

		cur += span;
		left -= span;
		if (!xlate(m, cur, &next, &nspan) || next != io + (cur - va))
			return -ENOENT;
		span = nspan;
	}
	*iova = io;
	return 0;
}

int regmap_lookup_slow(const struct regmap *m, uint64_t va, uint64_t len,
		       uint64_t *iova)
{
	return lookup_span(m, va, len, iova);
}
