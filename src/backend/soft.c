/* SPDX-License-Identifier: MIT */
/*
 * soft.c - the soft (in-process) IOMMU backend.
 *
 * It behaves like VFIO type1v2 would for the domain above it and keeps its
 * own book of mappings, so that a bug in the domain's bookkeeping shows up
 * as a disagreement with the "hardware":
 *   map or unmap not aligned to caps.alignment   -EINVAL
 *   map not inside one of caps.ranges            -EINVAL
 *   map over a live mapping                      -EEXIST
 *   map with the limit reached                   -ENOSPC
 *   unmap                               removes the mappings wholly inside
 *                                       the range, reports their bytes;
 *                                       a mapping crossing either end of the
 *                                       range: -EINVAL, nothing removed
 *   unmap_all, avail_mappings = max - live, flush_iotlb (counted).
 * Translation itself is served by the domain's table (iodma/backend.h);
 * this book only mirrors what a real IOMMU would hold.
 *
 * The book is what such an IOMMU keeps: an IO page table, a radix tree
 * with 9 bits of IOVA per level over 4 KiB granules and as many levels as
 * the highest valid IOVA needs (3 for the default 39-bit space, like x86
 * second-level or ARM SMMU stage-2 tables with a 39-bit input).  An entry
 * above the last level is empty, points to the next level's table, or is
 * a block mapping its whole span (2 MiB, 1 GiB, ... as large as the level)
 * wherever a mapping covers the block's whole aligned span; a last-level
 * table holds two bits per 4 KiB page.  So a 4 KiB map or unmap touches
 * one line of one last-level table (128 bytes per 2 MiB of IOVA), a 1 GiB
 * mapping takes one block entry and a 1 TiB one two 512 GiB blocks when
 * aligned (at most 511 entries per level and end otherwise).
 * Unlike a hardware table, the book also says where each mapping starts:
 * the page or block holding a mapping's first byte is marked "first".
 * That is all the type1 rules need: a map needs every page of its range
 * unmapped; an unmap of [iova, last] is refused when the page at iova or
 * the one at last + 1 is a mapping's non-first part (a mapping crosses
 * that end: the mappings are disjoint and contiguous, so no other can),
 * and otherwise clears every page and block of the range, skipping empty
 * subtrees, reporting the bytes cleared and taking the first marks cleared
 * off the live count.  A block never needs splitting: a mapping is removed
 * whole or not at all.  A table is freed when its last entry is cleared
 * (the root stays until close), into a few spares kept for the next
 * tables (pt_alloc()); soft_table_pages() counts the live ones for the
 * tests.  A range inside one last-level table's 2 MiB takes a fast path:
 * one descent, then that table's words.
 *
 * The domain serialises calls with its map lock; only the fault-injection
 * counters are touched from other threads (atomics).
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include <iodma/backend.h>
#include <iodma/test-hooks.h>

#include "../util.h"

#define SOFT_DEFAULT_MAX_MAPPINGS 65535u
#define SOFT_DEFAULT_IOVA_BITS    39

/* ---- the IO page table ---------------------------------------------------- */

#define PT_GRANULE_SHIFT 12		/* 4 KiB pages */
#define PT_GRANULE	 (1ull << PT_GRANULE_SHIFT)
#define PT_LEVEL_BITS	 9
#define PT_ENTRIES	 (1u << PT_LEVEL_BITS)
#define PT_IDX_MASK	 (PT_ENTRIES - 1)
#define PT_MAX_LEVELS	 6		/* 52 bits of page number / 9 */

/*
 * Entry format above the last level.  Empty: 0.  Table: the child's
 * address | VALID | TABLE (table pages are at least 8-byte aligned).
 * Block: VALID, and FIRST when its mapping starts at the block's first
 * byte.
 */
#define PTE_VALID	0x1ull
#define PTE_TABLE	0x2ull
#define PTE_FIRST	0x4ull
#define PTE_ADDR_MASK	(~0x7ull)

/*
 * A table above the last level: its entries, and how many entries each
 * child holds (freed at 0).  A child's count lives in its parent, not
 * beside the child's entries: a 4 KiB map or unmap writes a count in a
 * level-1 table, of which there are 512 times fewer than leaves.
 */
struct pt_table {
	uint64_t e[PT_ENTRIES];
	uint16_t used[PT_ENTRIES];	/* used[i]: entries of e[i]'s child */
};

/*
 * A last-level table: two bits per 4 KiB page, "mapped" and "first page of
 * its mapping": page i's are bit i % 64 of w[i / 64].present and .first,
 * side by side (one cache line holds both words).  Wider entries
 * holding the page's address, as a hardware table's do, were measured
 * (bench_domain, same run): the strict pair at 65,536 live took 816-854 ns
 * with 64-bit entries (a 1 MiB last level, one random line of it per
 * pair) and 682-730 ns with these (32 KiB).
 */
struct pt_word {
	uint64_t present;
	uint64_t first;
};

struct pt_leaf {
	struct pt_word w[PT_ENTRIES / 64];
};

/* What clearing a range removed. */
struct pt_cleared {
	uint64_t bytes;			/* sum of the spans cleared */
	uint64_t firsts;		/* mappings' first pages among them */
};

struct soft {
	struct iodma_caps caps;		/* fixed at open */
	void *root;			/* level levels - 1 */
	uint16_t root_used;		/* entries of the root */
	unsigned int levels;		/* 1..PT_MAX_LEVELS; level 0 = 4 KiB */
	uint64_t top;			/* last IOVA the table spans */
	uint32_t live;			/* mappings */
	uint64_t tables;		/* tables allocated, root included */
	void *spare[2];			/* emptied tables kept for reuse,
					 * [0] last level, [1] above: a list
					 * through each one's first word */
	unsigned int nspare[2];
	uint64_t flushes;		/* flush_iotlb calls */
	atomic_uint fault_nth[2];	/* per enum iodma_soft_fault_op */
	atomic_int fault_err[2];
};

static inline unsigned int pt_shift(unsigned int level)
{
	return PT_GRANULE_SHIFT + PT_LEVEL_BITS * level;
}

static inline void *pt_child(uint64_t e)
{
	return (void *)(uintptr_t)(e & PTE_ADDR_MASK);
}

static inline unsigned int pt_page(uint64_t iova)
{
	return (unsigned int)(iova >> PT_GRANULE_SHIFT) & PT_IDX_MASK;
}

/*
 * Emptied tables are kept for reuse, PT_SPARE of each kind: a streaming map
 * + unmap at a fresh IOVA (iodma_map_single of unregistered memory) would
 * otherwise allocate and free a table per level on every pair (10,847
 * against 4,421 Ir a pair measured).  Linux's IOMMU drivers keep
 * intermediate tables for the same reason: io-pgtable frees one only when
 * an unmap covers its whole span.  A table is emptied before it is freed,
 * so a spare is all zero but for the list link in its first word.
 */
#define PT_SPARE 16

static size_t pt_size(unsigned int l)
{
	return l ? sizeof(struct pt_table) : sizeof(struct pt_leaf);
}

/* A zeroed table for level @l. */
static void *pt_alloc(struct soft *s, unsigned int l)
{
	unsigned int k = l ? 1 : 0;
	void *t = s->spare[k];

	if (t) {
		s->spare[k] = *(void **)t;
		*(void **)t = NULL;
		s->nspare[k]--;
	} else {
		t = iodma_calloc(1, pt_size(l));
	}
	if (t)
		s->tables++;
	return t;
}

static void pt_free(struct soft *s, void *t, unsigned int l)
{
	unsigned int k = l ? 1 : 0;

	s->tables--;
	if (s->nspare[k] == PT_SPARE) {
		iodma_free(t);
		return;
	}
	*(void **)t = s->spare[k];
	s->spare[k] = t;
	s->nspare[k]++;
}

static void pt_spares_free(struct soft *s)
{
	for (unsigned int k = 0; k < 2; k++) {
		while (s->spare[k]) {
			void *t = s->spare[k];

			s->spare[k] = *(void **)t;
			iodma_free(t);
		}
		s->nspare[k] = 0;
	}
}

/* Bits @i..@j (page indexes in the leaf, i <= j) that fall in word @k. */
static inline uint64_t leaf_mask(unsigned int k, unsigned int i, unsigned int j)
{
	unsigned int a = i > 64 * k ? i - 64 * k : 0;
	unsigned int b = j < 64 * k + 63 ? j - 64 * k : 63;

	return (~0ull << a) & (~0ull >> (63 - b));
}

/* Bits set in @x (the builtin is a libgcc call without -mpopcnt; this is
 * a dozen instructions, and a 4 KiB unmap's word has one bit). */
static inline unsigned int pop64(uint64_t x)
{
	if ((x & (x - 1)) == 0)
		return x != 0;
	x -= (x >> 1) & 0x5555555555555555ull;
	x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
	return (unsigned int)((x * 0x0101010101010101ull) >> 56);
}

/* Is the page at @iova (granule-aligned, <= s->top) part of a mapping that
 * starts below it? */
static bool pt_inside(const struct soft *s, uint64_t iova)
{
	const void *t = s->root;

	for (unsigned int l = s->levels - 1; l > 0; l--) {
		unsigned int sh = pt_shift(l);
		uint64_t e = ((const struct pt_table *)t)->e[(iova >> sh) &
							    PT_IDX_MASK];

		if (!(e & PTE_TABLE))	/* empty or a block */
			return e != 0 && !((e & PTE_FIRST) &&
					   (iova & ((1ull << sh) - 1)) == 0);
		t = pt_child(e);
	}
	{
		const struct pt_word *w = &((const struct pt_leaf *)t)->w[pt_page(iova) / 64];
		uint64_t bit = 1ull << (pt_page(iova) % 64);

		return (w->present & bit) && !(w->first & bit);
	}
}

/*
 * The range walks below visit, in table @t of level @l, the entries whose
 * spans meet [lo, hi] (granule-aligned, inside @t's span), each with the
 * part [a, b] of its span inside the range; a part is whole when it is the
 * entry's entire span.  At level 0 they work on the leaf's words.
 */

/* Is every page of [lo, hi] unmapped, in @t and below? */
static bool pt_empty(const void *t, unsigned int l, uint64_t lo, uint64_t hi)
{
	unsigned int sh = pt_shift(l);
	uint64_t m = (1ull << sh) - 1;

	if (l == 0) {
		const struct pt_leaf *lf = t;
		unsigned int i = pt_page(lo), j = pt_page(hi);

		for (unsigned int k = i / 64; k <= j / 64; k++) {
			if (lf->w[k].present & leaf_mask(k, i, j))
				return false;
		}
		return true;
	}
	for (uint64_t a = lo;;) {
		uint64_t b = IODMA_MIN(a | m, hi);
		uint64_t e = ((const struct pt_table *)t)->e[(a >> sh) & PT_IDX_MASK];

		/* A block maps its whole span; a table holds at least one
		 * entry (empty ones are freed), so it is in the range when the
		 * range covers the table's whole span. */
		if (e != 0 && (!(e & PTE_TABLE) || ((a & m) == 0 && b == (a | m)) ||
			       !pt_empty(pt_child(e), l - 1, a, b)))
			return false;
		if (b == hi)
			return true;
		a = b + 1;
	}
}

/*
 * Map [lo, hi], all unmapped, in @t (level @l, *@used its entries) and
 * below: a block wherever the range covers an entry's whole span, a table
 * below otherwise, pages at level 0.  *@first: the range starts a mapping
 * (cleared once its first page or block is written).  -ENOMEM: a table
 * could not be allocated; part of the range may be mapped then (the caller
 * clears it), and every table linked in holds an entry.
 */
static int pt_fill(struct soft *s, void *t, uint16_t *used, unsigned int l,
		   uint64_t lo, uint64_t hi, bool *first)
{
	unsigned int sh = pt_shift(l);
	uint64_t m = (1ull << sh) - 1;

	if (l == 0) {
		struct pt_leaf *lf = t;
		unsigned int i = pt_page(lo), j = pt_page(hi);

		for (unsigned int k = i / 64; k <= j / 64; k++)
			lf->w[k].present |= leaf_mask(k, i, j);
		if (*first)
			lf->w[i / 64].first |= 1ull << (i % 64);
		*first = false;
		*used += j - i + 1;
		return 0;
	}
	for (uint64_t a = lo;;) {
		uint64_t b = IODMA_MIN(a | m, hi);
		struct pt_table *pt = t;
		unsigned int i = (a >> sh) & PT_IDX_MASK;
		uint64_t *ep = &pt->e[i];

		if ((a & m) == 0 && b == (a | m)) {
			*ep = PTE_VALID | (*first ? PTE_FIRST : 0);
			*first = false;
			(*used)++;
		} else {
			/* Empty or a table: the range is unmapped. */
			void *c = *ep ? pt_child(*ep) : pt_alloc(s, l - 1);
			int err;

			if (!c)
				return -ENOMEM;
			err = pt_fill(s, c, &pt->used[i], l - 1, a, b, first);
			if (!*ep) {
				if (pt->used[i] == 0) {	/* failed before writing */
					pt_free(s, c, l - 1);
					return err;
				}
				*ep = (uint64_t)(uintptr_t)c | PTE_VALID | PTE_TABLE;
				(*used)++;
			}
			if (err)
				return err;
		}
		if (b == hi)
			return 0;
		a = b + 1;
	}
}

/*
 * Unmap every page of [lo, hi] in @t (level @l, *@used its entries) and
 * below, adding what it held to @c, and free the tables it leaves empty.
 * Every block met must lie wholly inside the range: the caller has checked
 * that no mapping crosses either end (or is undoing a map of exactly the
 * range).
 */
static void pt_clear(struct soft *s, void *t, uint16_t *used, unsigned int l,
		     uint64_t lo, uint64_t hi, struct pt_cleared *c)
{
	unsigned int sh = pt_shift(l);
	uint64_t m = (1ull << sh) - 1;

	if (l == 0) {
		struct pt_leaf *lf = t;
		unsigned int i = pt_page(lo), j = pt_page(hi);

		for (unsigned int k = i / 64; k <= j / 64; k++) {
			struct pt_word *w = &lf->w[k];
			uint64_t gone = w->present & leaf_mask(k, i, j);
			unsigned int n = pop64(gone);

			c->bytes += (uint64_t)n << PT_GRANULE_SHIFT;
			c->firsts += pop64(w->first & gone);
			*used -= n;
			w->present &= ~gone;
			w->first &= ~gone;
		}
		return;
	}
	for (uint64_t a = lo;;) {
		uint64_t b = IODMA_MIN(a | m, hi);
		struct pt_table *pt = t;
		unsigned int i = (a >> sh) & PT_IDX_MASK;
		uint64_t e = pt->e[i];

		if (e & PTE_TABLE) {
			pt_clear(s, pt_child(e), &pt->used[i], l - 1, a, b, c);
			if (pt->used[i] == 0) {
				pt_free(s, pt_child(e), l - 1);
				pt->e[i] = 0;
				(*used)--;
			}
		} else if (e) {
			c->bytes += m + 1;
			c->firsts += (e & PTE_FIRST) != 0;
			pt->e[i] = 0;
			(*used)--;
		}
		if (b == hi)
			return;
		a = b + 1;
	}
}

/*
 * The 4 KiB fast paths: a range inside one leaf's 2 MiB, reached through
 * tables only, is checked and changed in that leaf's words on one descent
 * (the common map and unmap); anything else takes the range walks.
 */

/* The leaf holding the page at @iova (<= s->top) when every entry above it
 * is a table, else NULL (a block, or nothing); *@used its count. */
static struct pt_leaf *pt_leaf_of(struct soft *s, uint64_t iova,
				  uint16_t **used)
{
	void *t = s->root;
	uint16_t *u = &s->root_used;

	for (unsigned int l = s->levels - 1; l > 0; l--) {
		struct pt_table *pt = t;
		unsigned int i = (iova >> pt_shift(l)) & PT_IDX_MASK;

		if (!(pt->e[i] & PTE_TABLE))
			return NULL;
		u = &pt->used[i];
		t = pt_child(pt->e[i]);
	}
	*used = u;
	return t;
}

/* Is any of pages @i..@j of @lf mapped? */
static bool leaf_any(const struct pt_leaf *lf, unsigned int i, unsigned int j)
{
	for (unsigned int k = i / 64; k <= j / 64; k++) {
		if (lf->w[k].present & leaf_mask(k, i, j))
			return true;
	}
	return false;
}

/* Pages @i..@j of @lf: how many are mapped. */
static unsigned int leaf_count(const struct pt_leaf *lf, unsigned int i,
			       unsigned int j)
{
	unsigned int n = 0;

	for (unsigned int k = i / 64; k <= j / 64; k++)
		n += pop64(lf->w[k].present & leaf_mask(k, i, j));
	return n;
}

/* Is page @i of @lf the non-first part of a mapping? */
static inline bool leaf_inside(const struct pt_leaf *lf, unsigned int i)
{
	const struct pt_word *w = &lf->w[i / 64];
	uint64_t bit = 1ull << (i % 64);

	return (w->present & bit) && !(w->first & bit);
}

/* ---- the backend ---------------------------------------------------------- */
/* Does the fault armed on @op fire on this call? */
static int soft_fault(struct soft *s, enum iodma_soft_fault_op op)
{
	unsigned int c = atomic_load(&s->fault_nth[op]);

	while (c != 0) {
		if (atomic_compare_exchange_weak(&s->fault_nth[op], &c, c - 1))
			return c == 1 ? atomic_load(&s->fault_err[op]) : 0;
	}
	return 0;
}

/* Validate soft options into @caps. */
static int soft_parse_opts(const struct iodma_soft_opts *o,
			   struct iodma_caps *caps)
{
	uint64_t page = os_page_size();

	memset(caps, 0, sizeof(*caps));
	caps->alignment = page;
	caps->max_mappings = SOFT_DEFAULT_MAX_MAPPINGS;
	caps->flags = IODMA_CAP_MAP_FD | IODMA_CAP_UNMAP_ALL;
	if (o) {
		struct iodma_soft_opts c = IODMA_OPTS_INIT(struct iodma_soft_opts);
		int err = opts_copy(&c, sizeof(c), o,
				    IODMA_OFFSETOFEND(struct iodma_soft_opts, ranges));

		if (err)
			return err;
		o = &c;
		if (o->alignment) {
			if (!is_pow2(o->alignment) || o->alignment < page)
				return -EINVAL;
			caps->alignment = o->alignment;
		}
		if (o->max_mappings)
			caps->max_mappings = o->max_mappings;
		if (o->nr_ranges) {
			if (!o->ranges || o->nr_ranges > IODMA_MAX_IOVA_RANGES)
				return -EINVAL;
			for (uint32_t i = 0; i < o->nr_ranges; i++) {
				const struct iodma_iova_range *r = &o->ranges[i];

				if (!range_valid(r->iova, r->len) ||
				    !is_aligned(r->iova, caps->alignment) ||
				    !is_aligned(r->len, caps->alignment))
					return -EINVAL;
				if (i > 0 && r->iova <= range_last(o->ranges[i - 1].iova,
								   o->ranges[i - 1].len))
					return -EINVAL;
				caps->ranges[i] = *r;
			}
			caps->nr_ranges = o->nr_ranges;
		} else if (o->ranges) {
			return -EINVAL;
		}
	}
	if (caps->alignment < PT_GRANULE)
		return -EINVAL;	/* no host has pages below 4 KiB */
	if (caps->nr_ranges == 0) {
		/* 39-bit space minus page 0 and the x86 MSI window. */
		uint64_t a = caps->alignment;
		uint64_t lo = a, msi = 0xfee00000ull, msi_end = 0xfef00000ull;
		uint64_t top = 1ull << SOFT_DEFAULT_IOVA_BITS;

		msi = align_down(msi, a);
		msi_end = align_up(msi_end, a);
		if (lo < msi) {
			caps->ranges[caps->nr_ranges].iova = lo;
			caps->ranges[caps->nr_ranges++].len = msi - lo;
		}
		lo = IODMA_MAX(lo, msi_end);
		if (lo < top) {
			caps->ranges[caps->nr_ranges].iova = lo;
			caps->ranges[caps->nr_ranges++].len = top - lo;
		}
		if (caps->nr_ranges == 0)
			return -EINVAL; /* alignment swallowed the space */
	}
	return 0;
}

/* Size the table for the valid ranges: enough levels for the highest. */
static int soft_table_init(struct soft *s)
{
	const struct iodma_iova_range *r = &s->caps.ranges[s->caps.nr_ranges - 1];
	unsigned int bits = ilog2_u64(range_last(r->iova, r->len)) + 1;

	s->levels = bits <= PT_GRANULE_SHIFT + PT_LEVEL_BITS ? 1 :
		    (bits - PT_GRANULE_SHIFT + PT_LEVEL_BITS - 1) / PT_LEVEL_BITS;
	s->top = bits == 64 ? UINT64_MAX : (1ull << bits) - 1;
	s->root = pt_alloc(s, s->levels - 1);
	return s->root ? 0 : -ENOMEM;
}

static int soft_open(const void *config, void **priv)
{
	struct soft *s;
	int err;

	s = iodma_calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	err = soft_parse_opts(config, &s->caps);
	if (!err)
		err = soft_table_init(s);
	if (err) {
		iodma_free(s);
		return err;
	}
	*priv = s;
	return 0;
}

static void soft_close(void *priv)
{
	struct soft *s = priv;
	struct pt_cleared c = { 0, 0 };

	pt_clear(s, s->root, &s->root_used, s->levels - 1, 0, s->top, &c);
	pt_spares_free(s);
	iodma_free(s->root);
	iodma_free(s);
}

static int soft_get_caps(void *priv, struct iodma_caps *caps)
{
	struct soft *s = priv;

	*caps = s->caps;
	return 0;
}

/* Is [iova, iova + len) (valid) inside one of the valid ranges? */
static bool soft_in_ranges(const struct iodma_caps *caps, uint64_t iova,
			   uint64_t len)
{
	for (uint32_t i = 0; i < caps->nr_ranges; i++) {
		if (range_contains(caps->ranges[i].iova, caps->ranges[i].len,
				   iova, len))
			return true;
	}
	return false;
}

static int soft_map(void *priv, const struct iodma_map_event *ev)
{
	struct soft *s = priv;
	bool first = true;
	uint64_t last;
	int err;

	err = soft_fault(s, IODMA_SOFT_FAULT_MAP);
	if (err)
		return err;
	/* VFIO type1: -EINVAL for a misaligned or out-of-range map. */
	if (!range_valid(ev->iova, ev->len) ||
	    !is_aligned(ev->iova | ev->len, s->caps.alignment) ||
	    !soft_in_ranges(&s->caps, ev->iova, ev->len))
		return -EINVAL;
	last = range_last(ev->iova, ev->len);
	if ((ev->iova >> pt_shift(1)) == (last >> pt_shift(1))) {
		uint16_t *used;
		struct pt_leaf *lf = pt_leaf_of(s, ev->iova, &used);

		if (lf) {
			unsigned int i = pt_page(ev->iova), j = pt_page(last);

			if (leaf_any(lf, i, j))
				return -EEXIST;
			if (s->live >= s->caps.max_mappings)
				return -ENOSPC;
			for (unsigned int k = i / 64; k <= j / 64; k++)
				lf->w[k].present |= leaf_mask(k, i, j);
			lf->w[i / 64].first |= 1ull << (i % 64);
			*used += j - i + 1;
			s->live++;
			return 0;
		}
	}
	if (!pt_empty(s->root, s->levels - 1, ev->iova, last))
		return -EEXIST;
	if (s->live >= s->caps.max_mappings)
		return -ENOSPC;
	err = pt_fill(s, s->root, &s->root_used, s->levels - 1, ev->iova,
		      last, &first);
	if (err) {
		struct pt_cleared c = { 0, 0 };

		pt_clear(s, s->root, &s->root_used, s->levels - 1, ev->iova, last, &c);
		return err;
	}
	s->live++;
	return 0;
}

/*
 * Remove every mapping inside [iova, last] (granule-aligned ends); -EINVAL
 * if one crosses an end (nothing removed then).  The mappings are disjoint
 * and contiguous, so only the one holding @iova or the one holding
 * last + 1 can cross, and each does exactly when that page is not its
 * first.  Nothing lies above s->top.
 */
static int soft_unmap_range(struct soft *s, uint64_t iova, uint64_t last,
			    uint64_t *unmapped)
{
	struct pt_cleared c = { 0, 0 };

	if (iova > s->top) {
		*unmapped = 0;
		return 0;
	}
	last = IODMA_MIN(last, s->top);
	if ((iova >> pt_shift(1)) == (last >> pt_shift(1))) {
		uint16_t *used;
		struct pt_leaf *lf = pt_leaf_of(s, iova, &used);
		unsigned int i = pt_page(iova), j = pt_page(last), n;

		/* A leaf left empty takes the walk, which frees it. */
		if (lf && (n = leaf_count(lf, i, j)) < *used) {
			if (leaf_inside(lf, i) ||
			    (j < PT_IDX_MASK ? leaf_inside(lf, j + 1) :
			     last < s->top && pt_inside(s, last + 1)))
				return -EINVAL;
			for (unsigned int k = i / 64; k <= j / 64; k++) {
				struct pt_word *w = &lf->w[k];
				uint64_t gone = w->present & leaf_mask(k, i, j);

				s->live -= pop64(w->first & gone);
				w->present &= ~gone;
				w->first &= ~gone;
			}
			*used -= n;
			*unmapped = (uint64_t)n << PT_GRANULE_SHIFT;
			return 0;
		}
	}
	if (pt_inside(s, iova) || (last < s->top && pt_inside(s, last + 1)))
		return -EINVAL;
	pt_clear(s, s->root, &s->root_used, s->levels - 1, iova, last, &c);
	s->live -= (uint32_t)c.firsts;
	*unmapped = c.bytes;
	return 0;
}

static int soft_unmap(void *priv, uint64_t iova, uint64_t len,
		      uint64_t *unmapped)
{
	struct soft *s = priv;
	int err;

	err = soft_fault(s, IODMA_SOFT_FAULT_UNMAP);
	if (err)
		return err;
	/* VFIO type1: -EINVAL for a misaligned unmap. */
	if (!range_valid(iova, len) ||
	    !is_aligned(iova | len, s->caps.alignment))
		return -EINVAL;
	return soft_unmap_range(s, iova, range_last(iova, len), unmapped);
}

static int soft_unmap_all(void *priv, uint64_t *unmapped)
{
	struct soft *s = priv;
	int err;

	err = soft_fault(s, IODMA_SOFT_FAULT_UNMAP);
	if (err)
		return err;
	return soft_unmap_range(s, 0, UINT64_MAX, unmapped);
}

static void soft_flush_iotlb(void *priv, uint64_t iova, uint64_t len)
{
	struct soft *s = priv;

	s->flushes++;
}

static int soft_avail_mappings(void *priv, uint32_t *avail)
{
	struct soft *s = priv;

	*avail = s->live >= s->caps.max_mappings ?
		 0 : s->caps.max_mappings - s->live;
	return 0;
}
static const struct iodma_backend_ops soft_ops = {
	.version = IODMA_BACKEND_OPS_VERSION,
	.name = "soft",
	.open = soft_open,
	.close = soft_close,
	.get_caps = soft_get_caps,
	.map = soft_map,
	.unmap = soft_unmap,
	.unmap_all = soft_unmap_all,
	.flush_iotlb = soft_flush_iotlb,
	.avail_mappings = soft_avail_mappings,
};

IODMA_EXPORT const struct iodma_backend_ops *iodma_backend_soft(void)
{
	return &soft_ops;
}

int iodma_soft_inject_fault(struct iodma_domain *d,
			    enum iodma_soft_fault_op op,
			    unsigned int nth, int err)
{
	struct soft *s;

	s = iodma_backend_priv(d, &soft_ops);
	if (!s || err >= 0 ||
	    (op != IODMA_SOFT_FAULT_MAP && op != IODMA_SOFT_FAULT_UNMAP))
		return -EINVAL;
	atomic_store(&s->fault_err[op], err);
	atomic_store(&s->fault_nth[op], nth);
	return 0;
}

/* For tests: how many flush_iotlb calls this soft backend state received
 * (a domain's bpriv).  Not exported. */
uint64_t soft_flush_count(const void *priv);
uint64_t soft_flush_count(const void *priv)
{
	return ((const struct soft *)priv)->flushes;
}

/* For tests: free the spare tables, so that the next tables come from the
 * allocator (fault injection counts them).  Not exported. */
void soft_spares_drop(void *priv);
void soft_spares_drop(void *priv)
{
	pt_spares_free(priv);
}

/* For tests: how many tables (root included, last-level ones too) this
 * soft backend state holds, spares not counted.  Not exported. */
uint64_t soft_table_pages(const void *priv);
uint64_t soft_table_pages(const void *priv)
{
	return ((const struct soft *)priv)->tables;
}
