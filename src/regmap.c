/* SPDX-License-Identifier: MIT */
/*
 * regmap.c - the VA -> IOVA radix table of registered memory.
 *
 * A 48-bit virtual address is decoded in three levels, 12 bits each, as
 * SPDK's mem map does with 2 MiB pages (here the leaves hold 4 KiB pages):
 *
 *    47          36 35          24 23          12 11           0
 *   +--------------+--------------+--------------+--------------+
 *   |  L1 index    |  L2 index    | leaf index   | page offset  |
 *   +--------------+--------------+--------------+--------------+
 *     4096 entries   4096 entries   4096 entries
 *     -> L2 table    -> leaf        uint64_t: IOVA of the 4 KiB page
 *                                   | REGMAP_VALID (bit 0)
 *
 * Bits 63..48 must be zero (user-space VAs on x86-64 4-level paging,
 * AArch64 48-bit VA, RISC-V Sv48); higher addresses are never registered.
 * Each table is 32 KiB; a leaf covers 16 MiB of VA, an L2 table 64 GiB.
 *
 * Readers do acquire loads of the L1 and L2 slots and a relaxed load of the
 * leaf entry; writers hold m->lock, publish new tables with release stores
 * and free tables only in regmap_destroy().
 */
#include <errno.h>
#include <stdatomic.h>

#include "regmap.h"
#include "util.h"

#define REGMAP_LVL_BITS  12
#define REGMAP_LVL_SIZE  (1u << REGMAP_LVL_BITS)
#define REGMAP_LVL_MASK  (REGMAP_LVL_SIZE - 1)
#define REGMAP_L1_SHIFT  36
#define REGMAP_L2_SHIFT  24
#define REGMAP_VALID     1ull

struct regmap_leaf {
	_Atomic uint64_t e[REGMAP_LVL_SIZE];
};

struct regmap_l2 {
	struct regmap_leaf *_Atomic leaf[REGMAP_LVL_SIZE];
};

struct regmap {
	os_mutex_t lock;                              /* serialises writers */
	struct regmap_l2 *_Atomic l1[REGMAP_LVL_SIZE]; /* installed under lock */
};

static inline unsigned int l1_idx(uint64_t va)
{
	return (unsigned int)(va >> REGMAP_L1_SHIFT) & REGMAP_LVL_MASK;
}

static inline unsigned int l2_idx(uint64_t va)
{
	return (unsigned int)(va >> REGMAP_L2_SHIFT) & REGMAP_LVL_MASK;
}

static inline unsigned int leaf_idx(uint64_t va)
{
	return (unsigned int)(va >> REGMAP_PAGE_SHIFT) & REGMAP_LVL_MASK;
}

int regmap_create(struct regmap **out)
{
	struct regmap *m = iodma_calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	os_mutex_init(&m->lock);
	*out = m;
	return 0;
}

void regmap_destroy(struct regmap *m)
{
	if (!m)
		return;
	for (unsigned int i = 0; i < REGMAP_LVL_SIZE; i++) {
		struct regmap_l2 *l2 = atomic_load_explicit(&m->l1[i],
							    memory_order_relaxed);

		if (!l2)
			continue;
		for (unsigned int j = 0; j < REGMAP_LVL_SIZE; j++)
			iodma_free(atomic_load_explicit(&l2->leaf[j],
							memory_order_relaxed));
		iodma_free(l2);
	}
	os_mutex_destroy(&m->lock);
	iodma_free(m);
}

/* The leaf holding @va, or NULL.  Lock-free. */
static inline struct regmap_leaf *leaf_of(const struct regmap *m, uint64_t va)
{
	struct regmap_l2 *l2;

	l2 = atomic_load_explicit(&((struct regmap *)m)->l1[l1_idx(va)],
				  memory_order_acquire);
	if (!l2)
		return NULL;
	return atomic_load_explicit(&l2->leaf[l2_idx(va)], memory_order_acquire);
}

static bool in_va_space(uint64_t va, uint64_t len)
{
	return range_valid(va, len) &&
	       range_last(va, len) < (1ull << REGMAP_VA_BITS);
}

int regmap_reserve(struct regmap *m, uint64_t va, uint64_t len)
{
	uint64_t p, last;
	int ret = 0;

	if (!in_va_space(va, len))
		return -EINVAL;
	last = range_last(va, len);
	os_mutex_lock(&m->lock);
	/* One step per leaf (16 MiB of VA). */
	for (p = va & ~((1ull << REGMAP_L2_SHIFT) - 1); p <= last;
	     p += 1ull << REGMAP_L2_SHIFT) {
		struct regmap_l2 *l2;
		struct regmap_leaf *leaf;

		l2 = atomic_load_explicit(&m->l1[l1_idx(p)], memory_order_relaxed);
		if (!l2) {
			l2 = iodma_calloc(1, sizeof(*l2));
			if (!l2) {
				ret = -ENOMEM;
				break;
			}
			atomic_store_explicit(&m->l1[l1_idx(p)], l2,
					      memory_order_release);
		}
		leaf = atomic_load_explicit(&l2->leaf[l2_idx(p)],
					    memory_order_relaxed);
		if (!leaf) {
			leaf = iodma_calloc(1, sizeof(*leaf));
			if (!leaf) {
				ret = -ENOMEM;
				break;
			}
			atomic_store_explicit(&l2->leaf[l2_idx(p)], leaf,
					      memory_order_release);
		}
		if (p + (1ull << REGMAP_L2_SHIFT) < p)
			break;
	}
	os_mutex_unlock(&m->lock);
	return ret;
}

/* Store @entry for every page of [va, va + len), with @step added to the
 * entry's IOVA per page (0 for clearing).  Caller holds m->lock. */
static void fill_locked(struct regmap *m, uint64_t va, uint64_t len,
			uint64_t entry, uint64_t step)
{
	uint64_t npages = len >> REGMAP_PAGE_SHIFT;

	for (uint64_t i = 0; i < npages; i++) {
		uint64_t p = va + (i << REGMAP_PAGE_SHIFT);
		struct regmap_leaf *leaf = leaf_of(m, p);

		assert(leaf); /* regmap_reserve() ran */
		atomic_store_explicit(&leaf->e[leaf_idx(p)], entry,
				      memory_order_relaxed);
		entry += step;
	}
}

void regmap_set(struct regmap *m, uint64_t va, uint64_t len, uint64_t iova)
{
	assert(is_aligned(va | len | iova, REGMAP_PAGE_SIZE));
	os_mutex_lock(&m->lock);
	fill_locked(m, va, len, iova | REGMAP_VALID, REGMAP_PAGE_SIZE);
	os_mutex_unlock(&m->lock);
}

void regmap_set_page(struct regmap *m, uint64_t va, uint64_t iova)
{
	assert(is_aligned(va | iova, REGMAP_PAGE_SIZE));
	os_mutex_lock(&m->lock);
	fill_locked(m, va, REGMAP_PAGE_SIZE, iova | REGMAP_VALID, 0);
	os_mutex_unlock(&m->lock);
}

void regmap_clear(struct regmap *m, uint64_t va, uint64_t len)
{
	assert(is_aligned(va | len, REGMAP_PAGE_SIZE));
	os_mutex_lock(&m->lock);
	fill_locked(m, va, len, 0, 0);
	os_mutex_unlock(&m->lock);
}

int regmap_lookup(const struct regmap *m, uint64_t va, uint64_t len,
		  uint64_t *iova)
{
	uint64_t page = va & ~(REGMAP_PAGE_SIZE - 1);
	uint64_t last, first_entry, want;
	const struct regmap_leaf *leaf;

	if (!in_va_space(va, len))
		return -ENOENT;
	leaf = leaf_of(m, page);
	if (!leaf)
		return -ENOENT;
	first_entry = atomic_load_explicit(&leaf->e[leaf_idx(page)],
					   memory_order_relaxed);
	if (!(first_entry & REGMAP_VALID))
		return -ENOENT;
	first_entry &= ~REGMAP_VALID;
	last = range_last(va, len) & ~(REGMAP_PAGE_SIZE - 1);
	/* The common case: the buffer lies in one page. */
	want = first_entry;
	while (page != last) {
		uint64_t e;

		page += REGMAP_PAGE_SIZE;
		want += REGMAP_PAGE_SIZE;
		if (leaf_idx(page) == 0) {
			leaf = leaf_of(m, page);
			if (!leaf)
				return -ENOENT;
		}
		e = atomic_load_explicit(&leaf->e[leaf_idx(page)],
					 memory_order_relaxed);
		if (e != (want | REGMAP_VALID))
			return -ENOENT;
	}
	*iova = first_entry + (va & (REGMAP_PAGE_SIZE - 1));
	return 0;
}

uint64_t regmap_table_bytes(struct regmap *m)
{
	uint64_t n = sizeof(*m);

	os_mutex_lock(&m->lock);
	for (unsigned int i = 0; i < REGMAP_LVL_SIZE; i++) {
		struct regmap_l2 *l2 = atomic_load_explicit(&m->l1[i],
							    memory_order_relaxed);

		if (!l2)
			continue;
		n += sizeof(*l2);
		for (unsigned int j = 0; j < REGMAP_LVL_SIZE; j++)
			if (atomic_load_explicit(&l2->leaf[j], memory_order_relaxed))
				n += sizeof(struct regmap_leaf);
	}
	os_mutex_unlock(&m->lock);
	return n;
}
