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
 * The book is what such an IOMMU keeps: an IO page table, a radix tree of
 * 4 KiB table pages of 512 64-bit entries, 9 bits of IOVA per level over
 * 4 KiB granules, as many levels as the highest valid IOVA needs (3 for the
 * default 39-bit space, like x86 second-level or ARM SMMU stage-2 tables
 * with a 39-bit input).  An entry is empty, points to the next level's
 * table, or maps its whole span: a 4 KiB page at the last level, a block
 * (2 MiB, 1 GiB, ... as large as the level) above it wherever a mapping
 * covers the block's whole aligned span.  A 4 KiB map or unmap touches
 * one entry of one last-level table, and a 1 GiB or 1 TiB mapping takes
 * one or 1,024 block entries.
 * Unlike a hardware table, an entry also says where its mapping starts:
 * the entry holding a mapping's first byte is marked "first" and holds the
 * mapping's length (in 4 KiB pages) and permission.  That is all the
 * type1 rules need: a map needs every entry of its range empty; an unmap
 * of [iova, last] is refused when the entry at iova or the one at
 * last + 1 is a mapping's non-first part (a mapping crosses that end: the
 * mappings are disjoint and contiguous, so no other can), and otherwise
 * clears every entry of the range, skipping empty subtrees, reporting the
 * bytes cleared and counting the first marks cleared off the live count.
 * A block never needs splitting: a mapping is removed whole or not at
 * all.  A table page is freed when its last entry is cleared (the root
 * stays until close); soft_table_pages() counts them for the tests.
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
 * Entry format.  Empty: 0.  Table: the child's address | VALID | TABLE
 * (table pages are at least 8-byte aligned).  Page or block: VALID, the
 * permission at PTE_PERM_SHIFT, and on a mapping's first entry FIRST and
 * the mapping's length in pages from bit 12 up (at most 2^52 - 1 pages).
 */
#define PTE_VALID	0x1ull
#define PTE_TABLE	0x2ull
#define PTE_FIRST	0x4ull
#define PTE_PERM_SHIFT	3
#define PTE_PERM_MASK	(0x3ull << PTE_PERM_SHIFT)
#define PTE_ADDR_MASK	(~0x7ull)

struct pt_table {
	uint64_t e[PT_ENTRIES];
	uint32_t used;			/* entries != 0 */
};

/* What clearing a range removed. */
struct pt_cleared {
	uint64_t bytes;			/* sum of the spans of cleared entries */
	uint32_t firsts;		/* mappings' first entries among them */
};

struct soft {
	struct iodma_caps caps;		/* fixed at open */
	struct pt_table *root;		/* level levels - 1 */
	unsigned int levels;		/* 1..PT_MAX_LEVELS; level 0 = 4 KiB */
	uint64_t top;			/* last IOVA the table spans */
	uint32_t live;			/* mappings */
	uint64_t tables;		/* table pages allocated, root included */
	uint64_t flushes;		/* flush_iotlb calls */
	atomic_uint fault_nth[2];	/* per enum iodma_soft_fault_op */
	atomic_int fault_err[2];
};

static inline unsigned int pt_shift(unsigned int level)
{
	return PT_GRANULE_SHIFT + PT_LEVEL_BITS * level;
}

static inline struct pt_table *pt_child(uint64_t e)
{
	return (struct pt_table *)(uintptr_t)(e & PTE_ADDR_MASK);
}

static struct pt_table *pt_alloc(struct soft *s)
{
	struct pt_table *t = iodma_calloc(1, sizeof(*t));

	if (t)
		s->tables++;
	return t;
}

static void pt_free(struct soft *s, struct pt_table *t)
{
	s->tables--;
	iodma_free(t);
}

/* The page or block entry whose span holds @iova (<= s->top), or 0 when
 * none does; *@base the first IOVA of that span. */
static uint64_t pt_lookup(const struct soft *s, uint64_t iova, uint64_t *base)
{
	const struct pt_table *t = s->root;
	unsigned int l = s->levels - 1;

	for (;;) {
		unsigned int sh = pt_shift(l);
		uint64_t e = t->e[(iova >> sh) & PT_IDX_MASK];

		if (!(e & PTE_TABLE)) {
			*base = iova & ~((1ull << sh) - 1);
			return e;
		}
		t = pt_child(e);
		l--;
	}
}

/* Is the page at @iova (granule-aligned, <= s->top) part of a mapping that
 * starts below it? */
static bool pt_inside(const struct soft *s, uint64_t iova)
{
	uint64_t base, e = pt_lookup(s, iova, &base);

	return e != 0 && !((e & PTE_FIRST) && base == iova);
}

/*
 * The range walks below visit, in table @t of level @l, the entries whose
 * spans meet [lo, hi] (granule-aligned, inside @t's span), each with the
 * part [a, b] of its span inside the range; a part is whole when it is the
 * entry's entire span.
 */

/* Is every entry of [lo, hi] empty, in @t and below? */
static bool pt_empty(const struct pt_table *t, unsigned int l, uint64_t lo,
		     uint64_t hi)
{
	unsigned int sh = pt_shift(l);
	uint64_t m = (1ull << sh) - 1;

	for (uint64_t a = lo;;) {
		uint64_t b = IODMA_MIN(a | m, hi);
		uint64_t e = t->e[(a >> sh) & PT_IDX_MASK];

		/* A page or block maps its whole span; a table holds at least
		 * one entry (empty ones are freed), so it is in the range when
		 * the range covers the table's whole span. */
		if (e != 0 && (!(e & PTE_TABLE) || ((a & m) == 0 && b == (a | m)) ||
			       !pt_empty(pt_child(e), l - 1, a, b)))
			return false;
		if (b == hi)
			return true;
		a = b + 1;
	}
}

/*
 * Write the entries of [lo, hi], all empty, in @t (level @l) and below: a
 * page or block entry wherever the range covers an entry's whole span,
 * a table below otherwise.  *@pte is the entry to write; after the first
 * one its FIRST mark and length are dropped.  -ENOMEM: a table page could
 * not be allocated; part of the range may be written then (the caller
 * clears it), and every table linked in holds an entry.
 */
static int pt_fill(struct soft *s, struct pt_table *t, unsigned int l,
		   uint64_t lo, uint64_t hi, uint64_t *pte)
{
	unsigned int sh = pt_shift(l);
	uint64_t m = (1ull << sh) - 1;

	for (uint64_t a = lo;;) {
		uint64_t b = IODMA_MIN(a | m, hi);
		uint64_t *ep = &t->e[(a >> sh) & PT_IDX_MASK];

		if ((a & m) == 0 && b == (a | m)) {	/* always at level 0 */
			*ep = *pte;
			*pte &= PTE_VALID | PTE_PERM_MASK;
			t->used++;
		} else {
			/* Empty or a table: the range is empty. */
			struct pt_table *c = *ep ? pt_child(*ep) : pt_alloc(s);
			int err;

			if (!c)
				return -ENOMEM;
			err = pt_fill(s, c, l - 1, a, b, pte);
			if (!*ep) {
				if (c->used == 0) {	/* failed before writing */
					pt_free(s, c);
					return err;
				}
				*ep = (uint64_t)(uintptr_t)c | PTE_VALID | PTE_TABLE;
				t->used++;
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
 * Clear every entry of [lo, hi] in @t (level @l) and below, adding what it
 * held to @c, and free the table pages it leaves empty.  Every page and
 * block met must lie wholly inside the range: the caller has checked that
 * no mapping crosses either end (or is undoing a map of exactly the range).
 */
static void pt_clear(struct soft *s, struct pt_table *t, unsigned int l,
		     uint64_t lo, uint64_t hi, struct pt_cleared *c)
{
	unsigned int sh = pt_shift(l);
	uint64_t m = (1ull << sh) - 1;

	for (uint64_t a = lo;;) {
		uint64_t b = IODMA_MIN(a | m, hi);
		uint64_t *ep = &t->e[(a >> sh) & PT_IDX_MASK];
		uint64_t e = *ep;

		if (e & PTE_TABLE) {
			struct pt_table *ch = pt_child(e);

			pt_clear(s, ch, l - 1, a, b, c);
			if (ch->used == 0) {
				pt_free(s, ch);
				*ep = 0;
				t->used--;
			}
		} else if (e) {
			c->bytes += m + 1;
			c->firsts += (e & PTE_FIRST) != 0;
			*ep = 0;
			t->used--;
		}
		if (b == hi)
			return;
		a = b + 1;
	}
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
	s->root = pt_alloc(s);
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

	pt_clear(s, s->root, s->levels - 1, 0, s->top, &c);
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
	uint64_t last, pte;
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
	if (!pt_empty(s->root, s->levels - 1, ev->iova, last))
		return -EEXIST;
	if (s->live >= s->caps.max_mappings)
		return -ENOSPC;
	/* The length, a multiple of the granule, is its own page count
	 * shifted to bit 12. */
	pte = PTE_VALID | PTE_FIRST | ev->len |
	      ((uint64_t)(ev->perm & IODMA_PERM_RW) << PTE_PERM_SHIFT);
	err = pt_fill(s, s->root, s->levels - 1, ev->iova, last, &pte);
	if (err) {
		struct pt_cleared c = { 0, 0 };

		pt_clear(s, s->root, s->levels - 1, ev->iova, last, &c);
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
	if (pt_inside(s, iova) || (last < s->top && pt_inside(s, last + 1)))
		return -EINVAL;
	pt_clear(s, s->root, s->levels - 1, iova, last, &c);
	s->live -= c.firsts;
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

/* For tests: how many table pages (root included) this soft backend state
 * holds.  Not exported. */
uint64_t soft_table_pages(const void *priv);
uint64_t soft_table_pages(const void *priv)
{
	return ((const struct soft *)priv)->tables;
}
