/* SPDX-License-Identifier: MIT */
/*
 * soft.c - the soft (in-process) IOMMU backend.
 *
 * It behaves like VFIO type1v2 would for the domain above it and keeps its
 * own book of mappings (a B-tree keyed by IOVA), so that a bug in the
 * domain's bookkeeping shows up as a disagreement with the "hardware":
 *   map over a live mapping             -EEXIST
 *   map with the limit reached          -ENOSPC
 *   unmap                               removes the mappings wholly inside
 *                                       the range, reports their bytes;
 *                                       a mapping crossing either end of the
 *                                       range: -EINVAL, nothing removed
 *   unmap_all, avail_mappings = max - live, flush_iotlb (counted).
 * Translation itself is served by the domain's table (iodma/backend.h);
 * this book only mirrors what a real IOMMU would hold.  It costs one
 * descent of its B-tree per map (btree_insert_check: the overlap and limit
 * checks see the new mapping's neighbours on the insert's own path) and per
 * exact unmap (btree_remove_le); a wider unmap adds one lookup for the
 * start crossing and one btree_remove_range pass.
 *
 * The domain serialises calls with its map lock; only the fault-injection
 * counters are touched from other threads (atomics).
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include <iodma/backend.h>
#include <iodma/test-hooks.h>

#include "../btree.h"
#include "../util.h"

#define SOFT_DEFAULT_MAX_MAPPINGS 65535u
#define SOFT_DEFAULT_IOVA_BITS    39

struct soft_rec {
	uint64_t len;
	uint32_t perm;
};

struct soft {
	struct iodma_caps caps;		/* fixed at open */
	struct btree book;		/* iova -> struct soft_rec */
	uint64_t flushes;		/* flush_iotlb calls */
	atomic_uint fault_nth[2];	/* per enum iodma_soft_fault_op */
	atomic_int fault_err[2];
};

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

static int soft_open(const void *config, void **priv)
{
	struct soft *s;
	int err;

	s = iodma_calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	err = soft_parse_opts(config, &s->caps);
	if (!err)
		err = btree_init(&s->book, sizeof(struct soft_rec));
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

	btree_fini(&s->book);
	iodma_free(s);
}

static int soft_get_caps(void *priv, struct iodma_caps *caps)
{
	struct soft *s = priv;

	*caps = s->caps;
	return 0;
}

/* btree_insert_check's verdict on a new mapping, shown the mappings
 * either side of its start: -EEXIST if one overlaps it (the book is
 * disjoint, so only these two can), else -ENOSPC at the limit. */
static int soft_map_check(const void *prev, uint64_t prev_key,
			  const void *next, uint64_t next_key, void *arg)
{
	const struct iodma_map_event *ev = ((void **)arg)[0];
	const struct soft *s = ((void **)arg)[1];
	const struct soft_rec *p = prev;

	if (p && range_last(prev_key, p->len) >= ev->iova)
		return -EEXIST;
	if (next && next_key <= range_last(ev->iova, ev->len))
		return -EEXIST;
	if (btree_count(&s->book) >= s->caps.max_mappings)
		return -ENOSPC;
	return 0;
}

static int soft_map(void *priv, const struct iodma_map_event *ev)
{
	struct soft *s = priv;
	struct soft_rec rec = { .len = ev->len, .perm = ev->perm };
	void *arg[2] = { (void *)(uintptr_t)ev, s };
	int err;

	err = soft_fault(s, IODMA_SOFT_FAULT_MAP);
	if (err)
		return err;
	if (!range_valid(ev->iova, ev->len))
		return -EINVAL;
	/* One descent: the overlap and limit checks, then the insert. */
	return btree_insert_check(&s->book, ev->iova, &rec, soft_map_check, arg);
}

static void soft_sum_len(uint64_t key, const void *value, void *arg)
{
	*(uint64_t *)arg += ((const struct soft_rec *)value)->len;
}

#define SOFT_NONE_INSIDE 1	/* soft_unmap_pick: nothing in the range */
#define SOFT_MANY_INSIDE 2	/* soft_unmap_pick: maybe several inside */

/* btree_remove_le's verdict on the mapping holding the range's last byte
 * (the greatest start <= last), @arg the range {iova, last}. */
static int soft_unmap_pick(uint64_t key, const void *value, void *arg)
{
	const uint64_t *r = arg;
	uint64_t end = range_last(key, ((const struct soft_rec *)value)->len);

	if (end < r[0])
		return SOFT_NONE_INSIDE;
	if (key < r[0] || end > r[1])
		return -EINVAL;		/* crosses an end (or both) */
	return key == r[0] ? 0 : SOFT_MANY_INSIDE;
}

/*
 * Remove every mapping inside [iova, last]; -EINVAL if one crosses an end
 * (nothing removed then).  The book's mappings are disjoint, so only two
 * can cross: the one holding @last (found first: the greatest start <=
 * @last) and the one holding iova - 1.  When the mapping holding @last
 * starts at @iova it is the only one inside and nothing can hold iova - 1
 * across @iova: btree_remove_le checks and removes it on one descent, the
 * exact unmap.  Else the whole range goes in one btree_remove_range() pass.
 */
static int soft_unmap_range(struct soft *s, uint64_t iova, uint64_t last,
			    uint64_t *unmapped)
{
	const struct soft_rec *r;
	struct soft_rec rec;
	uint64_t range[2] = { iova, last }, key, bytes = 0;
	int ret;

	ret = btree_remove_le(&s->book, last, soft_unmap_pick, range, &key, &rec);
	if (ret == 0) {
		*unmapped = rec.len;
		return 0;
	}
	if (ret == -ENOENT || ret == SOFT_NONE_INSIDE) {
		*unmapped = 0;		/* nothing at or inside the range */
		return 0;
	}
	if (ret < 0)
		return ret;
	if (iova > 0) {
		r = btree_lookup_le(&s->book, iova - 1, &key);
		if (r && range_last(key, r->len) >= iova)
			return -EINVAL;	/* crosses @iova */
	}
	btree_remove_range(&s->book, iova, last, soft_sum_len, &bytes);
	*unmapped = bytes;
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
	if (!range_valid(iova, len))
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
	size_t live = btree_count(&s->book);

	*avail = live >= s->caps.max_mappings ?
		 0 : s->caps.max_mappings - (uint32_t)live;
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
