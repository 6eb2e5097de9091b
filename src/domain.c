/* SPDX-License-Identifier: MIT */
/*
 * domain.c - an IOMMU domain: validation, the mapping table, the IOVA
 * allocator, backend calls with rollback, and listeners.
 *
 * Every change runs under map_lock (domain_priv.h) and follows one pattern:
 * validate everything, reserve what can fail (IOVA claim, B-tree nodes,
 * IO page-table nodes), then make the irreversible calls (backend,
 * listeners) with an undo path, and finally update the books, which cannot
 * fail any more.
 *
 * Young records (domain_priv.h).  A map records its mapping in a small
 * array, not the B-tree; the exact unmap of a young record takes it back
 * from there; every other reader of the book first moves the array into
 * the B-tree (book_settle), as does a map that finds it full.  A strict
 * guest's map + unmap pair therefore touches no B-tree node: at 65,536
 * live mappings the B-tree leaf was the pair's dearest miss.  Memory: the
 * B-tree nodes the young records will need stay reserved as its spares.
 *
 * Unmap order (domain_priv.h).  Translation of the range stops FIRST, so
 * that nothing the backend or a listener does afterwards can still reach
 * it: under map_lock the page table's leaves of the range are cleared and
 * xlate_stop() fences.  Then the backend unmaps each contiguous run (a
 * failure re-maps the runs already removed from the backend and puts the
 * leaves back: nothing changed), flush_iotlb and the listeners' unmap per
 * run; the records leave the table and claims are released.  map_lock is
 * dropped and only then does the unmap wait, for the access sections of
 * other threads that recorded a piece of the range (xlate_wait_sections):
 * no grace period on this path.
 *
 * Page-table memory.  An unmap only clears leaves; the nodes it leaves
 * empty stay hooked, so the next map nearby reuses them and a strict
 * map + unmap pair allocates and frees nothing.  The table remembers
 * them (iopt_prune_empty's candidates, as are the nodes of a map that
 * failed after its reserve); once PT_PRUNE_MIN of them have piled up,
 * the unmap (or failed map) that sees it unhooks those still empty, in
 * O(their number), and frees them after xlate_wait_walks(): memory stays
 * within what the live mappings need plus PT_PRUNE_MIN nodes (and their
 * parents), whatever a hostile guest maps and unmaps, at O(1) amortised
 * cost per operation and one membarrier(2) per PT_PRUNE_MIN nodes.
 *
 * Failed undo.  A map that a listener rejects is taken back from the
 * backend.  Should the backend refuse that unmap (a kernel error; the
 * soft backend's fault injection), the IOMMU still holds the mapping, so
 * the table records it as live too, counted in nr_mappings, and the map
 * returns -EUCLEAN: the books never disagree, and the caller's ordinary
 * unmap removes it later.  The listeners that accepted the map keep it;
 * the one that rejected it and those after it never saw it (a later
 * unmap is, to them, a gap).  A listener's or backend's own -EUCLEAN is
 * returned as -EIO, so that the code means only this.
 *
 * Claims.  A fixed-IOVA map claims its space in the allocator, clipped to
 * the allocator's ranges (the caps at creation), so allocations never land
 * on it; the claim is recomputed from the same ranges when it is released.
 * Claiming starts with the domain's first IOVA allocation (claims_enable),
 * which claims every live mapping first: until then nothing can collide.
 * A map inside an allocation claims nothing but is counted in it
 * (MAP_F_INSIDE); the allocation cannot be freed (-EBUSY) until the count
 * is back to zero, so no IOVA space is handed out twice.  The count is
 * dropped where claims are released, with the record leaving the table.
 *
 * refresh_caps accepts new caps when every live mapping fits them (inside
 * a new range, aligned to the new alignment); space the ranges lost is
 * reserved in the allocator for good (-EBUSY while an allocation lies
 * there), space they gained is usable by fixed-IOVA maps (the allocator
 * keeps serving only its original ranges).  The allocator is never rebuilt:
 * other modules hold d->iova.
 */
#include <errno.h>
#include <string.h>

#include <iodma/domain.h>
#include <iodma/memory.h>

#include "domain_priv.h"
#include "memory_priv.h"

/* Mappings below the limit from which a map re-reads the backend's
 * avail_mappings. */
#define AVAIL_RECHECK_MARGIN 256

/* Empty page-table nodes (4 KiB each) kept hooked for reuse before a
 * prune unhooks them. */
#define PT_PRUNE_MIN 64

/* Width of every domain's page table: the whole 64-bit IOVA space (the
 * caps' ranges, which refresh_caps may change, are checked before it). */
#define PT_WIDTH 64

struct domain_impl {
	struct iodma_domain d;
	/* Ranges the IOVA allocator was created over (caps at creation);
	 * immutable. */
	uint32_t nr_alloc_ranges;
	struct iodma_iova_range alloc_ranges[IODMA_MAX_IOVA_RANGES];
	uint64_t granule;		/* the allocator's, = alignment at creation */
	_Atomic bool claims_on;		/* fixed maps claim allocator space; set
					 * under map_lock at the first IOVA
					 * allocation, never cleared */
};

static inline struct domain_impl *to_impl(struct iodma_domain *d)
{
	return (struct domain_impl *)d; /* d is the first member */
}

static inline struct iodma_domain *unconst(const struct iodma_domain *d)
{
	return (struct iodma_domain *)(uintptr_t)d;
}

/* ---- helpers ------------------------------------------------------------ */

static void pt_unmap(struct iodma_domain *d, uint64_t iova, uint64_t last);

static bool ranges_contain(const struct iodma_iova_range *r, uint32_t nr,
			   uint64_t iova, uint64_t len)
{
	for (uint32_t i = 0; i < nr; i++) {
		if (range_contains(r[i].iova, r[i].len, iova, len))
			return true;
	}
	return false;
}

/* Caps a backend reported are usable: alignment a power of two >= the page
 * size, 1..IODMA_MAX_IOVA_RANGES valid, sorted, disjoint, aligned ranges. */
static int caps_validate(const struct iodma_caps *c)
{
	if (!is_pow2(c->alignment) || c->alignment < os_page_size())
		return -EINVAL;
	if (c->nr_ranges == 0 || c->nr_ranges > IODMA_MAX_IOVA_RANGES)
		return -EINVAL;
	for (uint32_t i = 0; i < c->nr_ranges; i++) {
		const struct iodma_iova_range *r = &c->ranges[i];

		if (!range_valid(r->iova, r->len) ||
		    !is_aligned(r->iova, c->alignment) ||
		    !is_aligned(r->len, c->alignment))
			return -EINVAL;
		if (i > 0 && r->iova <= range_last(c->ranges[i - 1].iova,
						   c->ranges[i - 1].len))
			return -EINVAL;
	}
	return 0;
}

/* The event a backend or listener sees for the record at @iova. */
static void make_event(struct iodma_domain *d, uint64_t iova,
		       const struct map_rec *rec, struct iodma_map_event *ev)
{
	ev->iova = iova;
	ev->len = rec->len;
	ev->perm = rec->perm;
	if (rec->flags & MAP_F_GPA) {
		struct iodma_region_info ri;
		uint64_t gpa = rec->target;

		ev->gpa = gpa;
		ev->va = NULL;
		ev->fd = -1;
		ev->offset = 0;
		os_rcu_read_lock();
		if (memory_lookup(d->memory, gpa, &ri) == 0 &&
		    range_contains(ri.gpa, ri.len, gpa, rec->len)) {
			ev->va = (char *)ri.va + (gpa - ri.gpa);
			if (ri.fd >= 0) {
				ev->fd = ri.fd;
				ev->offset = ri.offset + (gpa - ri.gpa);
			}
		}
		os_rcu_read_unlock();
		return;
	}
	ev->va = (rec->flags & MAP_F_NO_VA) ? NULL :
		 (void *)(uintptr_t)rec->target;
	ev->gpa = (uint64_t)(uintptr_t)ev->va;
	ev->fd = rec->fd;
	ev->offset = rec->offset;
}

/* ---- the book: the table and the young records --------------------------- */

_Static_assert(DOMAIN_YOUNG_MAX >= 1 &&
	       DOMAIN_YOUNG_MAX + 1 <= BTREE_PRELOAD_MAX,
	       "a young record's B-tree nodes come from btree_preload_n, "
	       "also beside a table record's put-back");

/* Move every young record into the table (domain_priv.h "young"): from
 * here on the table alone is the book.  Cannot fail: each young record was
 * given its B-tree nodes (btree_preload_n) when it was added, and every
 * insert into the table while young records exist preloads for them too
 * (btree_preload_n(nr_young + 1)).  Every reader of the table that needs
 * the whole book calls this first.  map_lock held. */
static void book_settle(struct iodma_domain *d)
{
	for (uint32_t i = 0; i < d->nr_young; i++) {
		int e = btree_insert(&d->table, d->young_iova[i],
				     &d->young_rec[i]);

		assert(e == 0);
		(void)e;
	}
	d->nr_young = 0;
}

/* Record @rec at @iova as young.  The caller made room (fewer than
 * DOMAIN_YOUNG_MAX) and preloaded the table for nr_young + 1 inserts.
 * map_lock held. */
static void young_add(struct iodma_domain *d, uint64_t iova,
		      const struct map_rec *rec)
{
	assert(d->nr_young < DOMAIN_YOUNG_MAX);
	d->young_iova[d->nr_young] = iova;
	d->young_rec[d->nr_young] = *rec;
	d->nr_young++;
}

/* Index of the young record that starts at @iova, or DOMAIN_YOUNG_MAX.
 * Newest first: a strict guest unmaps what it mapped last, while older
 * young records (a burst of long-lived maps) may stay for a while. */
static uint32_t young_find(const struct iodma_domain *d, uint64_t iova)
{
	for (uint32_t i = d->nr_young; i-- > 0;) {
		if (d->young_iova[i] == iova)
			return i;
	}
	return DOMAIN_YOUNG_MAX;
}

/* Drop young record @i (the last one takes its place). */
static void young_del(struct iodma_domain *d, uint32_t i)
{
	assert(i < d->nr_young);
	d->nr_young--;
	d->young_iova[i] = d->young_iova[d->nr_young];
	d->young_rec[i] = d->young_rec[d->nr_young];
}

/* First record overlapping [iova, last], or NULL.  map_lock held, the book
 * settled. */
static const struct map_rec *first_in(struct iodma_domain *d, uint64_t iova,
				      uint64_t last, uint64_t *key)
{
	const struct map_rec *r = btree_lookup_le(&d->table, iova, key);

	if (r && range_last(*key, r->len) >= iova)
		return r;
	r = btree_lookup_ge(&d->table, iova, key);
	return r && *key <= last ? r : NULL;
}

/* Record after the one at @key that still starts at or below @last. */
static const struct map_rec *next_in(struct iodma_domain *d, uint64_t key,
				     uint64_t last, uint64_t *key_out)
{
	const struct map_rec *r = btree_next(&d->table, key, key_out);

	return r && *key_out <= last ? r : NULL;
}

/* Iterates the maximal runs of contiguous records inside [from, last]. */
struct run_iter {
	struct iodma_domain *d;
	uint64_t last;
	uint64_t key;
	const struct map_rec *rec;
};

struct run {
	uint64_t iova;
	uint64_t last;	/* inclusive */
};

static void run_iter_init(struct run_iter *it, struct iodma_domain *d,
			  uint64_t iova, uint64_t last)
{
	it->d = d;
	it->last = last;
	it->rec = first_in(d, iova, last, &it->key);
}

static bool run_next(struct run_iter *it, struct run *run)
{
	uint64_t k;
	const struct map_rec *r;

	if (!it->rec)
		return false;
	run->iova = it->key;
	run->last = range_last(it->key, it->rec->len);
	for (;;) {
		r = next_in(it->d, it->key, it->last, &k);
		it->rec = r;
		if (!r)
			break;
		it->key = k;
		if (run->last == UINT64_MAX || k != run->last + 1 ||
		    range_last(k, r->len) - run->iova == UINT64_MAX)
			break;
		run->last = range_last(k, r->len);
	}
	return true;
}

/* The allocator's ranges clipped to [iova, iova + len): call @fn on each
 * piece.  Stops at the first error. */
static int for_each_claim_piece(struct iodma_domain *d, uint64_t iova,
				uint64_t len, int (*fn)(struct iodma_domain *,
							uint64_t, uint64_t,
							void *),
				void *arg)
{
	struct domain_impl *di = to_impl(d);
	uint64_t last = range_last(iova, len);

	for (uint32_t i = 0; i < di->nr_alloc_ranges; i++) {
		const struct iodma_iova_range *r = &di->alloc_ranges[i];
		uint64_t lo, hi;
		int err;

		if (!ranges_overlap(r->iova, r->len, iova, len))
			continue;
		lo = IODMA_MAX(r->iova, iova);
		hi = IODMA_MIN(range_last(r->iova, r->len), last);
		err = fn(d, lo, hi - lo + 1, arg);
		if (err)
			return err;
	}
	return 0;
}

static int unclaim_piece(struct iodma_domain *d, uint64_t iova, uint64_t len,
			 void *arg)
{
	iova_unclaim(d->iova, iova, len);
	return 0;
}

static int unclaim_inside_piece(struct iodma_domain *d, uint64_t iova,
				uint64_t len, void *arg)
{
	iova_unclaim_inside(d->iova, iova, len);
	return 0;
}

struct claim_ctx {
	uint32_t nr_claimed;	/* pieces that became claimed */
	uint32_t nr_inside;	/* pieces inside an allocation (counted in it) */
	struct iodma_iova_range done[IODMA_MAX_IOVA_RANGES]; /* for rollback */
	bool inside[IODMA_MAX_IOVA_RANGES];	/* done[i] was inside */
};

static int claim_piece(struct iodma_domain *d, uint64_t iova, uint64_t len,
		       void *arg)
{
	struct claim_ctx *cx = arg;
	uint32_t i = cx->nr_claimed + cx->nr_inside;
	bool claimed = false;
	int err = iova_claim(d->iova, iova, len, &claimed);

	if (err)
		return err;
	assert(i < IODMA_ARRAY_SIZE(cx->done));
	cx->done[i].iova = iova;
	cx->done[i].len = len;
	cx->inside[i] = !claimed;
	if (claimed)
		cx->nr_claimed++;
	else
		cx->nr_inside++;
	return 0;
}

/* Release what a record holds in the allocator: its claims
 * (MAP_F_CLAIMED), or its place in the allocation it lies inside
 * (MAP_F_INSIDE: the allocation can be freed again once none is left). */
static void unclaim(struct iodma_domain *d, uint64_t iova,
		    const struct map_rec *rec)
{
	if (rec->flags & MAP_F_CLAIMED)
		for_each_claim_piece(d, iova, rec->len, unclaim_piece, NULL);
	else if (rec->flags & MAP_F_INSIDE)
		for_each_claim_piece(d, iova, rec->len, unclaim_inside_piece,
				     NULL);
}

/* Claim the allocator space of a new mapping (MAP_F_CLAIMED), or count it
 * in the one allocation it lies inside (MAP_F_INSIDE).  A range partly
 * inside an allocation and partly outside, or inside two (possible only
 * once refresh_caps merged two touching ranges), is -EEXIST. */
static int claim(struct iodma_domain *d, uint64_t iova, struct map_rec *rec)
{
	struct claim_ctx cx = { 0 };
	int err = for_each_claim_piece(d, iova, rec->len, claim_piece, &cx);

	if (!err && cx.nr_inside && (cx.nr_claimed || cx.nr_inside > 1))
		err = -EEXIST;
	if (err) {
		/* Undo exactly what this call did. */
		for (uint32_t i = 0; i < cx.nr_claimed + cx.nr_inside; i++) {
			if (cx.inside[i])
				iova_unclaim_inside(d->iova, cx.done[i].iova,
						    cx.done[i].len);
			else
				iova_unclaim(d->iova, cx.done[i].iova,
					     cx.done[i].len);
		}
		return err;
	}
	if (cx.nr_claimed)
		rec->flags |= MAP_F_CLAIMED;
	else if (cx.nr_inside)
		rec->flags |= MAP_F_INSIDE;
	return 0;
}

/* ---- create / destroy --------------------------------------------------- */

IODMA_EXPORT int iodma_domain_create(const struct iodma_domain_opts *opts,
				     struct iodma_domain **out)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	const struct iodma_backend_ops *ops;
	struct domain_impl *di;
	struct iodma_domain *d;
	struct iodma_caps caps;
	int err;

	if (!out)
		return -EINVAL;
	err = opts_copy(&o, sizeof(o), opts,
			IODMA_OFFSETOFEND(struct iodma_domain_opts, reserved));
	if (err)
		return err;
	ops = o.backend ? o.backend : iodma_backend_soft();
	if (ops->version >= 2 && (!ops->dirty_start != !ops->dirty_stop ||
				  !ops->dirty_start != !ops->dirty_get ||
				  !ops->dirty_start != !ops->unmap_dirty))
		return -EINVAL; /* all four dirty ops or none */
	if (ops->version < IODMA_BACKEND_OPS_VERSION_MIN ||
	    ops->version > IODMA_BACKEND_OPS_VERSION || !ops->open ||
	    !ops->close || !ops->get_caps || !ops->map || !ops->unmap)
		return -EINVAL;
	if (o.iotlb_entries && !is_pow2(o.iotlb_entries))
		return -EINVAL;
	if (o.flags & ~IODMA_DOMAIN_DISABLED)
		return -EINVAL;
	if ((o.flags & IODMA_DOMAIN_DISABLED) && !o.memory)
		return -EINVAL;
	if (o.nr_reserved && !o.reserved)
		return -EINVAL;
	for (uint32_t i = 0; i < o.nr_reserved; i++) {
		if (!range_valid(o.reserved[i].iova, o.reserved[i].len))
			return -EINVAL;
	}

	di = iodma_calloc(1, sizeof(*di));
	if (!di)
		return -ENOMEM;
	d = &di->d;
	d->ops = ops;
	d->memory = o.memory;
	btree_init(&d->table, sizeof(struct map_rec));
	xlate_global_init();
	err = iopt_init(&d->pt, PT_WIDTH, 1ull << IOPT_L0_SHIFT);
	if (err)
		goto err_free;
	err = be_open(d, o.backend_config);
	if (err)
		goto err_pt;
	memset(&caps, 0, sizeof(caps));
	err = be_get_caps(d, &caps);
	if (!err)
		err = caps_validate(&caps);
	if (err)
		goto err_close;
	d->caps = caps;
	atomic_init(&d->alignment, caps.alignment);
	atomic_init(&d->nr_mappings, 0);
	atomic_init(&di->claims_on, false);
	atomic_init(&d->enabled, !(o.flags & IODMA_DOMAIN_DISABLED));
	di->nr_alloc_ranges = caps.nr_ranges;
	di->granule = caps.alignment;
	memcpy(di->alloc_ranges, caps.ranges,
	       caps.nr_ranges * sizeof(caps.ranges[0]));
	err = iova_alloc_create(caps.alignment, caps.ranges, caps.nr_ranges,
				o.reserved, o.nr_reserved, &d->iova);
	if (err)
		goto err_close;
	os_mutex_init(&d->map_lock);
	err = xlate_init(d, &o);
	if (err)
		goto err_locks;
	*out = d;
	return 0;

err_locks:
	os_mutex_destroy(&d->map_lock);
	iova_alloc_destroy(d->iova);
err_close:
	be_close(d);
err_pt:
	iopt_fini(&d->pt);
err_free:
	iodma_free(di);
	return err;
}

IODMA_EXPORT void iodma_domain_destroy(struct iodma_domain *d)
{
	struct iodma_listener *l, *next;
	const struct map_rec *r;
	struct run_iter it;
	struct run run;
	uint64_t key, bytes;
	bool had = false;

	if (!d)
		return;
	os_mutex_lock(&d->map_lock);
	book_settle(d);
	if (btree_count(&d->table)) {
		had = true;
		/* Errors are ignored: there is nobody left to report to. */
		if (be_unmap_all(d, &bytes) == -EOPNOTSUPP) {
			run_iter_init(&it, d, 0, UINT64_MAX);
			while (run_next(&it, &run))
				be_unmap(d, run.iova, run.last - run.iova + 1,
					 &bytes);
		}
		if (be_has_flush_iotlb(d)) {
			run_iter_init(&it, d, 0, UINT64_MAX);
			while (run_next(&it, &run))
				be_flush_iotlb(d, run.iova,
					       run.last - run.iova + 1);
		}
		/* One unmap event per mapping to each listener. */
		for (r = btree_lookup_ge(&d->table, 0, &key); r;
		     r = btree_next(&d->table, key, &key)) {
			for (l = d->listeners; l; l = l->next)
				l->ops->unmap(l->arg, key, r->len);
		}
		pt_unmap(d, 0, UINT64_MAX);
		xlate_stop(d);
		btree_fini(&d->table);
		atomic_store(&d->nr_mappings, 0);
	}
	os_mutex_unlock(&d->map_lock);
	/* No section may still look at d when it is freed: those of other
	 * threads that recorded it end first (their end reads d's dirty
	 * log), the caller's own forgets it. */
	xlate_wait_sections(d, 0, UINT64_MAX);
	xlate_forget_domain(d);
	if (had)
		os_synchronize_rcu();

	for (l = d->listeners; l; l = next) {
		next = l->next;
		iodma_free(l);
	}
	xlate_fini(d);
	iova_alloc_destroy(d->iova);
	be_close(d);
	btree_fini(&d->table);
	/* The caller promised no translation runs or starts any more (the
	 * walks of this domain are over): the nodes go without a wait. */
	iopt_retired_free(d->pt_kept);
	iopt_fini(&d->pt);
	os_mutex_destroy(&d->map_lock);
	iodma_free(to_impl(d));
}

/* ---- queries ------------------------------------------------------------ */

IODMA_EXPORT int iodma_domain_get_caps(const struct iodma_domain *d,
				       struct iodma_caps *caps)
{
	struct iodma_domain *w = unconst(d);
	struct iodma_caps c;

	if (!d || !caps)
		return -EINVAL;
	os_mutex_lock(&w->map_lock);
	c = d->caps;
	os_mutex_unlock(&w->map_lock);
	c.size = sizeof(c);
	return out_copy(caps, &c, sizeof(c),
			IODMA_OFFSETOFEND(struct iodma_caps, reserved_));
}

IODMA_EXPORT void *iodma_backend_priv(const struct iodma_domain *d,
				      const struct iodma_backend_ops *ops)
{
	/* ops and bpriv are set before iodma_domain_create() returns and
	 * never change afterwards: no lock. */
	if (!d || !ops || d->ops != ops)
		return NULL;
	return d->bpriv;
}

IODMA_EXPORT uint64_t iodma_domain_alignment(const struct iodma_domain *d)
{
	if (!d)
		return 0;
	return atomic_load_explicit(&unconst(d)->alignment,
				    memory_order_relaxed);
}

IODMA_EXPORT uint32_t iodma_domain_max_mappings(const struct iodma_domain *d)
{
	struct iodma_domain *w = unconst(d);
	uint32_t max;

	if (!d)
		return 0;
	os_mutex_lock(&w->map_lock);
	max = d->caps.max_mappings;
	os_mutex_unlock(&w->map_lock);
	return max;
}

IODMA_EXPORT uint64_t iodma_domain_nr_mappings(const struct iodma_domain *d)
{
	if (!d)
		return 0;
	return atomic_load_explicit(&unconst(d)->nr_mappings,
				    memory_order_relaxed);
}

int domain_lookup(struct iodma_domain *d, uint64_t iova, struct map_lookup *out)
{
	const struct map_rec *r;
	uint64_t key;
	int err = -ENOENT;

	os_mutex_lock(&d->map_lock);
	book_settle(d);
	r = btree_lookup_le(&d->table, iova, &key);
	if (r && range_last(key, r->len) >= iova) {
		out->iova = key;
		out->rec = *r;
		err = 0;
	}
	os_mutex_unlock(&d->map_lock);
	return err;
}

/* ---- the backend's dirty log -------------------------------------------- */

int domain_dirty_get(struct iodma_domain *d, uint64_t iova, uint64_t len,
		     uint64_t pgsize, uint64_t *bitmap)
{
	uint64_t last = range_last(iova, len), lo = iova, hi = last, key, n, off;
	const struct map_rec *r;
	uint64_t *tmp;
	int err;

	book_settle(d);
	/* No mapping in the range: nothing the device can have written. */
	r = btree_lookup_le(&d->table, last, &key);
	if (!r || range_last(key, r->len) < iova)
		return 0;
	/* The kernel's query must cover whole mappings (VFIO's GET_BITMAP):
	 * widen it to the mappings that cross either end. */
	r = btree_lookup_le(&d->table, iova, &key);
	if (r && range_last(key, r->len) >= iova)
		lo = key;
	r = btree_lookup_le(&d->table, last, &key);
	if (r && range_last(key, r->len) > last)
		hi = range_last(key, r->len);
	if (lo == iova && hi == last)
		return be_dirty_get(d, iova, len, pgsize, bitmap);
	n = (hi - lo) / pgsize + 1;
	tmp = iodma_calloc((size_t)((n + 63) / 64), sizeof(uint64_t));
	if (!tmp)
		return -ENOMEM;
	err = be_dirty_get(d, lo, hi - lo + 1, pgsize, tmp);
	if (err == 0) {
		/* The caller's window: bits (iova - lo) / pgsize onwards. */
		off = (iova - lo) / pgsize;
		for (uint64_t i = 0; i < len / pgsize; i++)
			if (tmp[(off + i) / 64] & (1ull << ((off + i) % 64)))
				bitmap[i / 64] |= 1ull << (i % 64);
	}
	iodma_free(tmp);
	return err;
}

/* ---- the IO page table -------------------------------------------------- */

/* What a mapping's leaves point to, and their flags (domain_priv.h). */
static uint64_t pt_target(uint64_t iova, const struct map_rec *rec)
{
	return (rec->flags & MAP_F_NO_VA) ? iova : rec->target;
}

static uint64_t pt_flags(const struct map_rec *rec)
{
	return (rec->perm & IODMA_PERM_RW) |
	       ((rec->flags & MAP_F_NO_VA) ? IOPT_NO_VA : 0) |
	       ((rec->flags & MAP_F_GPA) ? IOPT_GPA : 0);
}

/* Publish a mapping whose nodes iopt_reserve() installed: cannot fail. */
static void pt_map(struct iodma_domain *d, uint64_t iova,
		   const struct map_rec *rec)
{
	int e = iopt_map(&d->pt, iova, rec->len, pt_target(iova, rec),
			 pt_flags(rec));

	assert(e == 0);
	(void)e;
}

/* Clear every leaf in [iova, last] (whole mappings only: validated by the
 * caller, so this cannot fail).  A range of 2^64 bytes takes two calls. */
static void pt_unmap(struct iodma_domain *d, uint64_t iova, uint64_t last)
{
	int e;

	if (iova == 0 && last == UINT64_MAX) {
		e = iopt_unmap(&d->pt, 0, 1ull << 63, NULL);
		if (!e)
			e = iopt_unmap(&d->pt, 1ull << 63, 1ull << 63, NULL);
	} else {
		e = iopt_unmap(&d->pt, iova, last - iova + 1, NULL);
	}
	assert(e == 0);
	(void)e;
}

/* Once PT_PRUNE_MIN nodes were left empty (by unmaps, or by maps that
 * failed after their reserve), unhook those still empty and return them
 * (iopt_retired_take) for pt_free() once map_lock is dropped; else NULL.
 * O(those nodes), never a scan of the table.  map_lock held. */
static void *pt_maybe_prune(struct iodma_domain *d)
{
	struct iopt_stats st;

	iopt_get_stats(&d->pt, &st);
	if (st.candidates < PT_PRUNE_MIN)
		return NULL;
	iopt_prune_empty(&d->pt);
	return iopt_retired_take(&d->pt);
}

/* Free nodes pruned by pt_maybe_prune(), once no walk can be inside them.
 * map_lock NOT held (the wait may spin out a preempted walker). */
static void pt_free(struct iodma_domain *d, void *list)
{
	if (!list)
		return;
	if (xlate_wait_walks(d)) {
		atomic_fetch_add_explicit(&d->pt_nodes_freed, iopt_retired_free(list),
					  memory_order_relaxed);
		return;
	}
	/* Cannot know when the walks are over: keep the nodes until destroy. */
	os_mutex_lock(&d->map_lock);
	d->pt_kept = iopt_retired_join(d->pt_kept, list);
	os_mutex_unlock(&d->map_lock);
}

/* ---- map ---------------------------------------------------------------- */

/* What map_admit() checks a new mapping against. */
struct map_admit_ctx {
	struct iodma_domain *d;
	uint64_t iova, last;
	struct map_rec *rec;
};

/* The rules of a new mapping besides the page table's overlap check, in
 * btree_gap_fn's shape: the neighbours given (NULL: none; map_locked()
 * passes none) do not overlap it, the domain and the IOMMU take one more
 * mapping, and the allocator space is claimed (rec->flags, before the
 * record is copied into the book).  Nothing changed unless it returns 0. */
static int map_admit(const void *prev, uint64_t pk, const void *next,
		     uint64_t nk, void *arg)
{
	struct map_admit_ctx *cx = arg;
	struct iodma_domain *d = cx->d;
	const struct iodma_caps *c = &d->caps;
	const struct map_rec *p = prev;
	uint64_t nr;
	uint32_t avail;

	if ((p && range_last(pk, p->len) >= cx->iova) || (next && nk <= cx->last))
		return -EEXIST;
	nr = atomic_load_explicit(&d->nr_mappings, memory_order_relaxed);
	if (nr >= c->max_mappings)
		return -ENOSPC;
	/* Near the limit, ask the IOMMU how many it will still take (VFIO's
	 * DMA_AVAIL, read live: a shared container's other users count too).
	 * Far from it the kernel's own -ENOSPC is enough, and a type1 map
	 * stays one ioctl instead of two. */
	if (nr + AVAIL_RECHECK_MARGIN >= c->max_mappings &&
	    be_avail_mappings(d, &avail) == 0 && avail == 0)
		return -ENOSPC;
	if (atomic_load_explicit(&to_impl(d)->claims_on, memory_order_relaxed))
		return claim(d, cx->iova, cx->rec);
	return 0;
}

static int map_locked(struct iodma_domain *d, uint64_t iova,
		      struct map_rec *rec, void **pruned)
{
	const struct iodma_caps *c = &d->caps;
	struct map_admit_ctx cx = { .d = d, .iova = iova,
				    .last = range_last(iova, rec->len), .rec = rec };
	struct iodma_listener *l, *m;
	struct iodma_map_event ev;
	uint64_t unmapped;
	int err;

	os_mutex_assert_held(&d->map_lock);

	if ((rec->flags & MAP_F_NO_VA) && !(c->flags & IODMA_CAP_MAP_FD))
		return -EOPNOTSUPP;
	if (!is_aligned(iova | rec->len, c->alignment) ||
	    (!(rec->flags & MAP_F_NO_VA) && !is_aligned(rec->target, c->alignment)) ||
	    (rec->fd >= 0 && !is_aligned(rec->offset, c->alignment)))
		return -EINVAL;
	if (!ranges_contain(c->ranges, c->nr_ranges, iova, rec->len))
		return -ERANGE;
	/* The page table's level-0 line is requested now, so that its miss
	 * overlaps the work below instead of following it. */
	iopt_prefetch(&d->pt, iova);
	/* The record is young (domain_priv.h): the B-tree is not touched.
	 * With no room left, the young records move to the table first
	 * (sending the new record to the table instead would leave long-lived
	 * mappings young for ever and every later map in the table). */
	if (d->nr_young == DOMAIN_YOUNG_MAX)
		book_settle(d);
	err = btree_preload_n(&d->table, d->nr_young + 1);
	if (err)
		return err;
	/* Overlap: the page table has a leaf for every page of every record
	 * (young or in the table), so a hole as long as the new mapping is
	 * "overlaps nothing" (checked before map_admit's other rules, as the
	 * table's neighbour check was).  The mapping is not translatable
	 * before pt_map() below. */
	if (iopt_hole(&d->pt, iova, rec->len) < rec->len)
		return -EEXIST;
	err = map_admit(NULL, 0, NULL, 0, &cx);
	if (err)
		return err;
	young_add(d, iova, rec);	/* rec->flags has the claim's bits */
	/* The page table's nodes too: after this, publishing cannot fail. */
	err = iopt_reserve(&d->pt, iova, rec->len, pt_target(iova, rec));
	if (err)
		goto err_unclaim;
	make_event(d, iova, rec, &ev);
	err = be_map(d, &ev);
	if (err)
		goto err_reserved;
	for (l = d->listeners; l; l = l->next) {
		err = l->ops->map(l->arg, &ev);
		if (err)
			break;
	}
	if (l) {
		/* @l rejected the map.  The backend gives it back first, and
		 * only once it has are the listeners that accepted it told:
		 * if the backend refuses, the mapping is live and stays so
		 * for them too (see "Failed undo" above). */
		if (be_unmap(d, iova, rec->len, &unmapped) == 0) {
			be_flush_iotlb(d, iova, rec->len);
			for (m = d->listeners; m != l; m = m->next)
				m->ops->unmap(m->arg, iova, rec->len);
			goto err_reserved;
		}
		err = -EUCLEAN;
	}
	/* Translatable last: everyone was told of the mapping. */
	pt_map(d, iova, rec);
	atomic_fetch_add_explicit(&d->nr_mappings, 1, memory_order_relaxed);
	return err;

err_reserved:
	/* -EUCLEAN says "left live" and nothing else. */
	if (err == -EUCLEAN)
		err = -EIO;
err_unclaim:
	young_del(d, young_find(d, iova));
	unclaim(d, iova, rec);
	/* Nodes the reserve installed stay, empty, until a prune. */
	iopt_mark_empty(&d->pt, iova, rec->len);
	*pruned = pt_maybe_prune(d);
	return err;
}

static int check_perm(uint32_t perm)
{
	return perm && !(perm & ~IODMA_PERM_RW) ? 0 : -EINVAL;
}

static int do_map(struct iodma_domain *d, uint64_t iova, struct map_rec *rec)
{
	void *pruned = NULL;
	int err;

	if (!d || !range_valid(iova, rec->len) || check_perm(rec->perm))
		return -EINVAL;
	if (!(rec->flags & MAP_F_NO_VA) && !range_valid(rec->target, rec->len))
		return -EINVAL;
	if (rec->fd >= 0 && !range_valid(rec->offset, rec->len))
		return -EINVAL;
	os_mutex_lock(&d->map_lock);
	err = map_locked(d, iova, rec, &pruned);
	os_mutex_unlock(&d->map_lock);
	pt_free(d, pruned);
	return err;
}

IODMA_EXPORT int iodma_domain_map(struct iodma_domain *d, uint64_t iova,
				  uint64_t len, void *va, uint32_t perm)
{
	struct map_rec rec = {
		.len = len, .target = (uint64_t)(uintptr_t)va, .offset = 0,
		.fd = -1, .perm = (uint16_t)perm, .flags = 0,
	};

	if (!d || !va || d->memory || perm > UINT16_MAX)
		return -EINVAL;
	return do_map(d, iova, &rec);
}

IODMA_EXPORT int iodma_domain_map_fd(struct iodma_domain *d, uint64_t iova,
				     uint64_t len, void *va, int fd,
				     uint64_t offset, uint32_t perm)
{
	struct map_rec rec = {
		.len = len, .target = (uint64_t)(uintptr_t)va, .offset = offset,
		.fd = fd, .perm = (uint16_t)perm, .flags = va ? 0 : MAP_F_NO_VA,
	};

	if (!d || fd < 0 || d->memory || perm > UINT16_MAX)
		return -EINVAL;
	return do_map(d, iova, &rec);
}

IODMA_EXPORT int iodma_domain_map_gpa(struct iodma_domain *d, uint64_t iova,
				      uint64_t len, uint64_t gpa, uint32_t perm)
{
	struct map_rec rec = {
		.len = len, .target = gpa, .offset = 0, .fd = -1,
		.perm = (uint16_t)perm, .flags = MAP_F_GPA,
	};

	if (!d || !d->memory || perm > UINT16_MAX)
		return -EINVAL;
	return do_map(d, iova, &rec);
}

/* ---- unmap -------------------------------------------------------------- */

/* Re-map, in the backend, every record of the runs before @stop (rollback
 * of a failed multi-run unmap).  Best effort: nothing else can be done. */
static void backend_remap_before(struct iodma_domain *d, uint64_t iova,
				 uint64_t last, uint64_t stop)
{
	struct iodma_map_event ev;
	const struct map_rec *r;
	uint64_t key;

	for (r = first_in(d, iova, last, &key); r && key < stop;
	     r = next_in(d, key, last, &key)) {
		make_event(d, key, r, &ev);
		be_map(d, &ev);
	}
}

/* The backend's unmap of one run.  While the backend logs the device's
 * writes (xlate_dirty_backend), unmap_dirty hands over what it logged for
 * the range, which goes into the domain's log: an unmap during migration
 * loses no write.  Should that fail for lack of memory, the whole range is
 * marked dirty instead (more is safe, less is not) and the plain unmap
 * runs: unmap never fails for lack of memory. */
static int backend_unmap(struct iodma_domain *d, uint64_t iova, uint64_t len,
			 uint64_t *done)
{
	uint64_t pg = xlate_dirty_backend(d), *bm;
	int err;

	if (!pg)
		return be_unmap(d, iova, len, done);
	bm = iodma_calloc((size_t)((len / pg + 63) / 64), sizeof(uint64_t));
	if (bm) {
		err = be_unmap_dirty(d, iova, len, pg, bm, done);
		if (err == 0)
			xlate_dirty_merge(d, iova, pg, bm, len / pg);
		iodma_free(bm);
		if (err != -ENOMEM)
			return err;
	}
	xlate_dirty_merge(d, iova, pg, NULL, len / pg);
	return be_unmap(d, iova, len, done);
}

/* btree_remove_range()'s visitor: a record leaves, its claims with it. */
static void unclaim_visit(uint64_t key, const void *value, void *arg)
{
	unclaim(arg, key, value);
}

/*
 * Unmap the records in [iova, last] (validated by the caller).  @n records,
 * @bytes in total, @single_run when they form one contiguous run
 * [first, run_last].  @all: the whole table (backend unmap_all allowed).
 * @taken: the one record, already out of the book (@young: it was a young
 * record; a failure puts it back where it was).  map_lock held.  Returns 0
 * or the backend's error with nothing changed.
 * The caller waits for the access sections after dropping map_lock.
 */
static int unmap_records(struct iodma_domain *d, uint64_t iova, uint64_t last,
			 uint64_t first, uint64_t n, bool single_run,
			 uint64_t run_last, bool all, const struct map_rec *taken,
			 bool young, void **pruned)
{
	struct iodma_listener *l;
	const struct map_rec *r;
	struct run_iter it;
	struct run run;
	struct map_rec rec;
	uint64_t key, done;
	int err;

	/* 1. Translation of the range stops first: its leaves are cleared and
	 * the fence makes that visible to every walk that follows (and to
	 * the section handshake).  From here on no translation of the range
	 * succeeds, not even from a listener's unmap callback. */
	pt_unmap(d, first, run_last);
	xlate_stop(d);

	/* 2. The backend: one call per contiguous run. */
	/* unmap_all may decline (-EOPNOTSUPP: e.g. a kernel without
	 * VFIO_UNMAP_ALL, or a container shared with mappings not ours):
	 * then the runs are unmapped one by one below. */
	/* While the backend logs the device's writes, every run goes through
	 * unmap_dirty (unmap_all would drop what it logged). */
	err = all && !xlate_dirty_backend(d) ? be_unmap_all(d, &done) :
	      -EOPNOTSUPP;
	if (err == 0) {
		;
	} else if (err != -EOPNOTSUPP) {
		goto restore;
	} else if (single_run) {
		err = backend_unmap(d, first, run_last - first + 1, &done);
		if (err)
			goto restore;
	} else {
		run_iter_init(&it, d, iova, last);
		while (run_next(&it, &run)) {
			err = backend_unmap(d, run.iova, run.last - run.iova + 1,
					    &done);
			if (err) {
				backend_remap_before(d, iova, last, run.iova);
				goto restore;
			}
		}
	}

	/* 3. The backend's IOTLB and the listeners, per run. */
	if (be_has_flush_iotlb(d) || d->listeners) {
		if (single_run) {
			run.iova = first;
			run.last = run_last;
			be_flush_iotlb(d, run.iova, run.last - run.iova + 1);
			for (l = d->listeners; l; l = l->next)
				l->ops->unmap(l->arg, run.iova,
					      run.last - run.iova + 1);
		} else {
			run_iter_init(&it, d, iova, last);
			while (run_next(&it, &run)) {
				be_flush_iotlb(d, run.iova,
					       run.last - run.iova + 1);
				for (l = d->listeners; l; l = l->next)
					l->ops->unmap(l->arg, run.iova,
						      run.last - run.iova + 1);
			}
		}
	}

	/* 4. The books: one descent per leaf for a batch. */
	if (taken) {
		unclaim(d, first, taken); /* already out of the table */
	} else if (n == 1) {
		err = btree_remove(&d->table, first, &rec);
		assert(err == 0);
		unclaim(d, first, &rec);
	} else {
		size_t gone = btree_remove_range(&d->table, first, run_last,
						 unclaim_visit, d);

		assert(gone == n);
		(void)gone;
	}
	atomic_fetch_sub_explicit(&d->nr_mappings, n, memory_order_relaxed);
	*pruned = pt_maybe_prune(d);
	return 0;

restore:
	/* Put the leaves back exactly: nothing changed (translations of the
	 * range failed meanwhile, as if it were being unmapped).  The nodes
	 * are still hooked (no prune since the clear): cannot fail; a record
	 * already taken out goes back in (preloaded: cannot fail either). */
	if (taken) {
		if (young) {
			young_add(d, first, taken); /* its slot is free */
		} else {
			int e = btree_insert(&d->table, first, taken);

			assert(e == 0);
			(void)e;
		}
		pt_map(d, first, taken);
		return err;
	}
	for (r = first_in(d, first, run_last, &key); r;
	     r = next_in(d, key, run_last, &key))
		pt_map(d, key, r);
	return err;
}

struct unmap_range {
	uint64_t iova, last;
};

/* btree_remove_le()'s pick for unmap_locked(): the record at or before
 * the range's first byte is taken when it is exactly the range; -EINVAL
 * when it starts before the range and reaches into it; 1 (keep it, look
 * further) otherwise. */
static int unmap_pick_one(uint64_t key, const void *value, void *arg)
{
	const struct map_rec *r = value;
	const struct unmap_range *u = arg;
	uint64_t rlast = range_last(key, r->len);

	if (key == u->iova && rlast == u->last)
		return 0;
	if (key < u->iova && rlast >= u->iova)
		return -EINVAL;
	return 1;
}

/*
 * Validate and unmap [iova, last].  strict: exactly tiled by contiguous
 * whole mappings; else gaps allowed, no mapping crossing an end.  map_lock
 * held.  *@bytes receives the bytes unmapped.
 */
/* What unmap_scan() learns about the records inside the range. */
struct unmap_scan_ctx {
	uint64_t last;          /* the range's last byte */
	bool strict;
	uint64_t n, total;      /* records, bytes */
	uint64_t first;         /* first record's IOVA */
	uint64_t prev_last;     /* last byte of the last record seen */
	bool single_run;        /* no gap between them */
};

/* btree_visit()'s visitor over the records starting in [iova, last]: a
 * gap is -EINVAL when strict, a record crossing @last always is. */
static int unmap_scan(uint64_t key, const void *value, void *arg)
{
	struct unmap_scan_ctx *cx = arg;
	const struct map_rec *r = value;

	if (cx->n == 0) {
		cx->first = key;
	} else if (cx->prev_last == UINT64_MAX || key != cx->prev_last + 1) {
		if (cx->strict)
			return -EINVAL; /* gap */
		cx->single_run = false;
	}
	cx->prev_last = range_last(key, r->len);
	if (cx->prev_last > cx->last)
		return -EINVAL; /* would bisect */
	cx->n++;
	cx->total += r->len;
	return 0;
}

/*
 * Validate and unmap [iova, last].  strict: exactly tiled by contiguous
 * whole mappings; else gaps allowed, no mapping crossing an end.  map_lock
 * held.  *@bytes receives the bytes unmapped.
 */
static int unmap_locked(struct iodma_domain *d, uint64_t iova, uint64_t last,
			bool strict, bool all, uint64_t *bytes, void **pruned)
{
	struct unmap_scan_ctx cx = { .last = last, .strict = strict,
				     .single_run = true };
	const struct map_rec *r;
	uint64_t key;
	int err;

	os_mutex_assert_held(&d->map_lock);

	*bytes = 0;
	/* A young record that is exactly the range (the strict guest's unmap
	 * of what it just mapped): nothing else can lie in it (records are
	 * disjoint), so it is taken without the table.  A young record at
	 * @iova of another length, or none, leaves the answer to the table. */
	{
		uint32_t i = young_find(d, iova);

		if (i < d->nr_young &&
		    range_last(iova, d->young_rec[i].len) == last) {
			struct map_rec one = d->young_rec[i];

			young_del(d, i);
			*bytes = one.len;
			return unmap_records(d, iova, last, iova, 1, true, last,
					     all, &one, true, pruned);
		}
	}
	/* The common case, exactly one record, leaves the table on the
	 * descent that finds it (translation never reads the table; a
	 * backend failure puts it back: preloaded, with the young records'
	 * inserts).  No young record can lie in a range that one record of
	 * the table fills, so this needs no book_settle(); a record of the
	 * table crossing @iova is -EINVAL whatever the young ones are. */
	if (btree_preload_n(&d->table, d->nr_young + 1) == 0) {
		struct unmap_range u = { .iova = iova, .last = last };
		struct map_rec one;

		err = btree_remove_le(&d->table, iova, unmap_pick_one, &u,
				      &key, &one);
		if (err == 0) {
			*bytes = one.len;
			return unmap_records(d, iova, last, iova, 1, true, last,
					     all, &one, false, pruned);
		}
		if (err < 0 && err != -ENOENT)
			return err; /* a record crossing @iova */
	}
	/* Otherwise the whole book: a record starting before @iova (a young
	 * one too, now in the table) must end before it. */
	book_settle(d);
	r = btree_lookup_le(&d->table, iova, &key);
	if (r && range_last(key, r->len) >= iova && key < iova)
		return -EINVAL;
	err = btree_visit(&d->table, iova, last, unmap_scan, &cx);
	if (err)
		return err;
	if (cx.n == 0)
		return strict ? -EINVAL : 0;
	if (strict && (cx.first != iova || cx.prev_last != last))
		return -EINVAL; /* gap at the start or the end */
	if (cx.single_run && cx.prev_last - cx.first == UINT64_MAX)
		cx.single_run = false; /* run length would not fit */
	*bytes = cx.total;
	return unmap_records(d, iova, last, cx.first, cx.n, cx.single_run,
			     cx.prev_last, all, NULL, false, pruned);
}

static int unmap_common(struct iodma_domain *d, uint64_t iova, uint64_t last,
			bool strict, bool all, uint64_t *unmapped)
{
	uint64_t bytes = 0;
	void *pruned = NULL;
	int err;

	os_mutex_lock(&d->map_lock);
	err = unmap_locked(d, iova, last, strict, all, &bytes, &pruned);
	os_mutex_unlock(&d->map_lock);
	if (err)
		return err;
	/* The range no longer translates; wait only for the sections of
	 * other threads that recorded a piece of it (xlate.c). */
	if (bytes)
		xlate_wait_sections(d, iova, last);
	pt_free(d, pruned);
	if (unmapped)
		*unmapped = bytes;
	return 0;
}

/* Alignment and range checks shared by both unmap modes. */
static int unmap_validate(struct iodma_domain *d, uint64_t iova, uint64_t len)
{
	uint64_t a;

	if (!d || !range_valid(iova, len))
		return -EINVAL;
	a = atomic_load_explicit(&d->alignment, memory_order_relaxed);
	if (!is_aligned(iova | len, a))
		return -EINVAL;
	return 0;
}

IODMA_EXPORT int iodma_domain_unmap(struct iodma_domain *d, uint64_t iova,
				    uint64_t len)
{
	int err = unmap_validate(d, iova, len);

	if (err)
		return err;
	return unmap_common(d, iova, range_last(iova, len), true, false, NULL);
}

IODMA_EXPORT int iodma_domain_unmap_gaps(struct iodma_domain *d, uint64_t iova,
					 uint64_t len, uint64_t *unmapped)
{
	int err = unmap_validate(d, iova, len);

	if (err)
		return err;
	return unmap_common(d, iova, range_last(iova, len), false, false,
			    unmapped);
}

IODMA_EXPORT int iodma_domain_unmap_all(struct iodma_domain *d,
					uint64_t *unmapped)
{
	if (!d)
		return -EINVAL;
	return unmap_common(d, 0, UINT64_MAX, false, true, unmapped);
}

/* ---- caps, enable ------------------------------------------------------- */

/* Append [lo, hi] rounded outward to @granule to @out, merging with the
 * previous window when they touch. */
static void window_add(struct iodma_iova_range *out, size_t *n, size_t max,
		       uint64_t lo, uint64_t hi, uint64_t granule)
{
	uint64_t a = align_down(lo, granule);
	uint64_t b = align_down(hi, granule) + (granule - 1);

	if (*n > 0) {
		struct iodma_iova_range *p = &out[*n - 1];
		uint64_t pl = range_last(p->iova, p->len);

		if (a <= pl || a == pl + 1) {
			if (b > pl)
				p->len = b - p->iova + 1;
			return;
		}
	}
	assert(*n < max);
	out[*n].iova = a;
	out[*n].len = b - a + 1;
	(*n)++;
}

/* The allocator's ranges minus @c's ranges (both sorted), rounded outward
 * to the allocator's granule: the space the allocator must stop serving.
 * Returns the number of windows written to @out. */
static size_t removed_windows(const struct domain_impl *di,
			      const struct iodma_caps *c,
			      struct iodma_iova_range *out, size_t max)
{
	size_t n = 0;

	for (uint32_t i = 0; i < di->nr_alloc_ranges; i++) {
		uint64_t cur = di->alloc_ranges[i].iova;
		uint64_t last = range_last(cur, di->alloc_ranges[i].len);
		bool covered = false; /* cur passed last */

		for (uint32_t k = 0; k < c->nr_ranges && !covered; k++) {
			uint64_t klo = c->ranges[k].iova;
			uint64_t khi = range_last(klo, c->ranges[k].len);

			if (khi < cur)
				continue;
			if (klo > last)
				break;
			if (klo > cur)
				window_add(out, &n, max, cur, klo - 1, di->granule);
			if (khi >= last)
				covered = true;
			else
				cur = khi + 1;
		}
		if (!covered)
			window_add(out, &n, max, cur, last, di->granule);
	}
	return n;
}

IODMA_EXPORT int iodma_domain_refresh_caps(struct iodma_domain *d)
{
	struct domain_impl *di = to_impl(d);
	struct iodma_iova_range removed[2 * IODMA_MAX_IOVA_RANGES + 1];
	struct iodma_caps caps;
	const struct map_rec *r;
	uint64_t key;
	size_t nr_removed;
	int err;

	if (!d)
		return -EINVAL;
	memset(&caps, 0, sizeof(caps));
	os_mutex_lock(&d->map_lock);
	err = be_get_caps(d, &caps);
	if (!err)
		err = caps_validate(&caps);
	if (err)
		goto out;
	/* Every live mapping must stay legal under the new caps, and the
	 * allocator's granule (the alignment at creation) must still divide
	 * the alignment: claims are made in granules. */
	err = -EBUSY;
	if (!is_aligned(caps.alignment, di->granule))
		goto out;
	book_settle(d);
	for (r = btree_lookup_ge(&d->table, 0, &key); r;
	     r = btree_next(&d->table, key, &key)) {
		if (!ranges_contain(caps.ranges, caps.nr_ranges, key, r->len) ||
		    !is_aligned(key, caps.alignment) ||
		    !is_aligned(r->len, caps.alignment))
			goto out;
	}
	/* Space the ranges lost is taken from the allocator for good (all or
	 * nothing: -EBUSY while an allocation lies there). */
	nr_removed = removed_windows(di, &caps, removed, IODMA_ARRAY_SIZE(removed));
	err = iova_alloc_reserve(d->iova, removed, nr_removed);
	if (err)
		goto out;
	/* Every mapping stays valid: translation is not affected. */
	d->caps = caps;
	atomic_store(&d->alignment, caps.alignment);
	err = 0;
out:
	os_mutex_unlock(&d->map_lock);
	return err;
}

IODMA_EXPORT int iodma_domain_set_enabled(struct iodma_domain *d, bool enabled)
{
	if (!d || (!enabled && !d->memory))
		return -EINVAL;
	os_mutex_lock(&d->map_lock);
	atomic_store_explicit(&d->enabled, enabled, memory_order_seq_cst);
	xlate_set_limit(d);
	xlate_stop(d);
	os_mutex_unlock(&d->map_lock);
	xlate_wait_sections(d, 0, UINT64_MAX); /* every section of this domain */
	return 0;
}

/* ---- IOVA allocation ---------------------------------------------------- */

/*
 * Claims are made only once the allocator is in use: a domain whose user
 * picks every IOVA itself (a VMM, a PciIommu driver) never pays for them.
 * The first allocation claims the space of every live mapping, under
 * map_lock so that no map slips between; all or nothing.
 */
static int claims_enable(struct iodma_domain *d)
{
	struct domain_impl *di = to_impl(d);
	struct map_rec *r;
	uint64_t key, undo;
	int err = 0;

	os_mutex_lock(&d->map_lock);
	if (atomic_load_explicit(&di->claims_on, memory_order_relaxed))
		goto out;
	book_settle(d);
	for (r = btree_lookup_ge(&d->table, 0, &key); r;
	     r = btree_next(&d->table, key, &key)) {
		struct map_rec c = *r;

		err = claim(d, key, &c);
		if (err)
			break;
		r->flags = c.flags;
	}
	if (err) {
		/* Release the claims made, up to the record that failed. */
		for (r = btree_lookup_ge(&d->table, 0, &undo); r && undo < key;
		     r = btree_next(&d->table, undo, &undo)) {
			unclaim(d, undo, r);
			r->flags &= (uint16_t)~(MAP_F_CLAIMED | MAP_F_INSIDE);
		}
		goto out;
	}
	atomic_store_explicit(&di->claims_on, true, memory_order_release);
out:
	os_mutex_unlock(&d->map_lock);
	return err;
}

IODMA_EXPORT int iodma_iova_alloc(struct iodma_domain *d, uint64_t len,
				  uint64_t align, uint64_t limit,
				  uint64_t *iova)
{
	uint64_t a, rlen;
	int err;

	if (!d || !iova || len == 0 || !is_pow2(align))
		return -EINVAL;
	if (!atomic_load_explicit(&to_impl(d)->claims_on, memory_order_acquire)) {
		err = claims_enable(d);
		if (err)
			return err;
	}
	a = atomic_load_explicit(&d->alignment, memory_order_relaxed);
	if (align < a)
		align = a;
	rlen = align_up(len, a);
	if (rlen == 0)
		return -EINVAL;
	return iova_alloc_get(d->iova, rlen, align, limit, iova);
}

IODMA_EXPORT int iodma_iova_free(struct iodma_domain *d, uint64_t iova,
				 uint64_t len)
{
	uint64_t a, rlen;

	if (!d || len == 0)
		return -ENOENT;
	a = atomic_load_explicit(&d->alignment, memory_order_relaxed);
	rlen = align_up(len, a);
	if (rlen == 0)
		return -ENOENT;
	return iova_alloc_put(d->iova, iova, rlen);
}

/* ---- listeners ---------------------------------------------------------- */

IODMA_EXPORT int iodma_domain_add_listener(struct iodma_domain *d,
					   const struct iodma_listener_ops *ops,
					   void *arg,
					   struct iodma_listener **out)
{
	struct iodma_listener *l, **tail;
	struct iodma_map_event ev;
	const struct map_rec *r, *u;
	uint64_t key, ukey;
	int err = 0;

	if (!d || !ops || !ops->map || !ops->unmap || !out)
		return -EINVAL;
	l = iodma_calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->ops = ops;
	l->arg = arg;

	os_mutex_lock(&d->map_lock);
	book_settle(d);
	for (r = btree_lookup_ge(&d->table, 0, &key); r;
	     r = btree_next(&d->table, key, &key)) {
		make_event(d, key, r, &ev);
		err = ops->map(arg, &ev);
		if (err)
			break;
	}
	if (err) {
		/* Take back what this listener accepted (IOVA order). */
		for (u = btree_lookup_ge(&d->table, 0, &ukey); u && ukey < key;
		     u = btree_next(&d->table, ukey, &ukey))
			ops->unmap(arg, ukey, u->len);
		os_mutex_unlock(&d->map_lock);
		iodma_free(l);
		return err;
	}
	for (tail = &d->listeners; *tail; tail = &(*tail)->next)
		;
	*tail = l;
	os_mutex_unlock(&d->map_lock);
	*out = l;
	return 0;
}

IODMA_EXPORT void iodma_domain_remove_listener(struct iodma_domain *d,
					       struct iodma_listener *l)
{
	struct iodma_listener **pp;
	bool found = false;

	if (!d || !l)
		return;
	os_mutex_lock(&d->map_lock);
	for (pp = &d->listeners; *pp; pp = &(*pp)->next) {
		if (*pp == l) {
			*pp = l->next;
			found = true;
			break;
		}
	}
	os_mutex_unlock(&d->map_lock);
	if (found)
		iodma_free(l);
}

IODMA_EXPORT int iodma_domain_for_each_mapping(struct iodma_domain *d,
					       uint64_t iova, uint64_t len,
					       int (*fn)(void *arg, const struct iodma_map_event *ev),
					       void *arg)
{
	struct iodma_map_event ev;
	const struct map_rec *r;
	uint64_t key, last;
	int ret = 0;

	if (!d || !fn || !range_valid(iova, len))
		return -EINVAL;
	last = range_last(iova, len);
	os_mutex_lock(&d->map_lock);
	book_settle(d);
	for (r = first_in(d, iova, last, &key); r; r = next_in(d, key, last, &key)) {
		make_event(d, key, r, &ev);
		ret = fn(arg, &ev);
		if (ret)
			break;
	}
	os_mutex_unlock(&d->map_lock);
	return ret;
}
