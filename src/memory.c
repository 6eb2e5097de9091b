/* SPDX-License-Identifier: MIT */
/*
 * memory.c - guest/physical memory: regions GPA -> host VA (+ fd, offset).
 *
 * The regions are an immutable array sorted by gpa, published through an
 * atomic pointer (RCU).  Readers binary-search it inside a read-side
 * section without any lock.  Writers (add/remove) are serialised by
 * m->lock: they build a new array, publish it, bump the generation by 2,
 * wait a grace period (os_synchronize_rcu) and only then retire the old
 * array (kept as the spare that the next removal fills, so that removal
 * never allocates) and, for a removed region the library allocated, free
 * its pages.
 *
 * No system calls here: pages come from os_pages_alloc().
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include <iodma/memory.h>

#include "memory_priv.h"
#include "util.h"

/* One region of a snapshot.  Everything but @dirty is immutable once
 * published; @dirty is set and cleared under m->lock by dirty-log
 * start/stop (and copied along when a new snapshot is built). */
struct mregion {
	struct iodma_region_info i;
	_Atomic(_Atomic uint64_t *) dirty; /* one bit per page, bit k = page
					    * i.gpa / page + k; NULL = off */
};

/* The shared mode of the dirty log (iodma_memory_dirty_log_start_shared):
 * a flat bitmap by guest-physical address that belongs to someone else
 * (a vhost-user front end), one bit per SHARED_LOG_PAGE. */
struct shared_log {
	_Atomic uint8_t *bits;
	uint64_t bytes;
};

#define SHARED_LOG_SHIFT 12 /* VHOST_LOG_PAGE, 0x1000, on every host */

/* One published snapshot of the regions, sorted by gpa, non-overlapping. */
struct region_array {
	size_t nr;
	size_t cap;                     /* entries allocated */
	struct mregion r[];
};

/*
 * Removal must not fail, so it must not allocate: the array retired by the
 * last change is kept as m->spare (once no reader can see it).  Its
 * capacity is always >= the current count - 1, which is what a removal
 * needs: an insert retires an array of count - 1 entries, a removal one of
 * count + 1.
 */
struct iodma_memory {
	_Atomic(struct region_array *) regions; /* RCU; NULL = no region */
	_Atomic uint64_t gen;                   /* even; += 2 per change */
	os_mutex_t lock;                        /* serialises add/remove;
						 * protects spare */
	struct region_array *spare;             /* retired, unreachable */
	_Atomic bool dirty_on;                  /* GPA dirty log running;
						 * written under lock */
	_Atomic(struct shared_log *) shared;    /* RCU; non-NULL = the log
						 * runs in shared mode; written
						 * under lock */
	_Atomic uint64_t dirty_harvest;         /* harvests started << 32 |
						 * harvests under way (xlate.c
						 * re-marks across them) */
	_Atomic bool dirty_lost;                /* a write could not be kept
						 * for re-marking: report every
						 * page dirty until stop */
	unsigned int page_shift;                /* log2 of a log page */
};

/* The current snapshot.  Caller is inside a read-side section. */
static const struct region_array *regions_get(const struct iodma_memory *m)
{
	return atomic_load_explicit(&((struct iodma_memory *)m)->regions,
				    memory_order_acquire);
}

/* Index of the first region whose last byte is >= @gpa (a region holding
 * @gpa, or the next one above it); a->nr if none. */
static size_t regions_search(const struct region_array *a, uint64_t gpa)
{
	size_t lo = 0, hi = a ? a->nr : 0;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (range_last(a->r[mid].i.gpa, a->r[mid].i.len) < gpa)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int memory_lookup(const struct iodma_memory *m, uint64_t gpa,
		  struct iodma_region_info *out)
{
	const struct region_array *a = regions_get(m);
	size_t i = regions_search(a, gpa);

	if (!a || i == a->nr || a->r[i].i.gpa > gpa)
		return -ENOENT;
	*out = a->r[i].i;
	return 0;
}

uint64_t memory_generation(const struct iodma_memory *m)
{
	return atomic_load_explicit(&((struct iodma_memory *)m)->gen,
				    memory_order_acquire);
}

IODMA_EXPORT int iodma_memory_create(const struct iodma_memory_opts *opts,
				     struct iodma_memory **out)
{
	struct iodma_memory_opts o = IODMA_OPTS_INIT(struct iodma_memory_opts);
	struct iodma_memory *m;
	int err;

	if (!out)
		return -EINVAL;
	err = opts_copy(&o, sizeof(o), opts,
			IODMA_OFFSETOFEND(struct iodma_memory_opts, flags));
	if (err)
		return err;
	if (o.flags != 0)
		return -EINVAL;
	m = iodma_calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	atomic_init(&m->regions, NULL);
	atomic_init(&m->gen, 0);
	atomic_init(&m->dirty_on, false);
	atomic_init(&m->shared, NULL);
	atomic_init(&m->dirty_harvest, 0);
	atomic_init(&m->dirty_lost, false);
	m->page_shift = ilog2_u64(os_page_size());
	os_mutex_init(&m->lock);
	*out = m;
	return 0;
}

IODMA_EXPORT void iodma_memory_destroy(struct iodma_memory *m)
{
	struct region_array *a;

	if (!m)
		return;
	a = atomic_load_explicit(&m->regions, memory_order_relaxed);
	for (size_t i = 0; a && i < a->nr; i++) {
		iodma_free((void *)atomic_load_explicit(&a->r[i].dirty,
							memory_order_relaxed));
		if (a->r[i].i.owned)
			os_pages_free(a->r[i].i.va, a->r[i].i.len, a->r[i].i.fd);
	}
	iodma_free(a);
	iodma_free(m->spare);
	iodma_free(atomic_load_explicit(&m->shared, memory_order_relaxed));
	os_mutex_destroy(&m->lock);
	iodma_free(m);
}

/* Publish @next (may be NULL) in place of the current array, bump the
 * generation, wait for readers and keep the old array as the spare.
 * Called with m->lock held. */
static void regions_replace_locked(struct iodma_memory *m,
				   struct region_array *next)
{
	struct region_array *old;

	os_mutex_assert_held(&m->lock);

	old = atomic_exchange_explicit(&m->regions, next, memory_order_acq_rel);
	atomic_fetch_add_explicit(&m->gen, 2, memory_order_acq_rel);
	os_synchronize_rcu();
	if (old) {
		iodma_free(m->spare);
		m->spare = old;
	}
}

/* A zeroed bitmap of one bit per log page of a region of @len bytes. */
static _Atomic uint64_t *dirty_bitmap_alloc(struct iodma_memory *m, uint64_t len)
{
	uint64_t pages = len >> m->page_shift;

	return iodma_calloc((size_t)((pages + 63) / 64), sizeof(uint64_t));
}

/* Insert @ri into the array.  Returns 0, -EEXIST (overlap) or -ENOMEM;
 * nothing changed on error. */
static int region_insert(struct iodma_memory *m,
			 const struct iodma_region_info *ri)
{
	struct region_array *cur, *next;
	_Atomic uint64_t *bits = NULL;
	size_t i, nr;
	int ret = 0;

	os_mutex_lock(&m->lock);
	cur = atomic_load_explicit(&m->regions, memory_order_relaxed);
	nr = cur ? cur->nr : 0;
	i = regions_search(cur, ri->gpa);
	if (i < nr && ranges_overlap(cur->r[i].i.gpa, cur->r[i].i.len, ri->gpa,
				     ri->len)) {
		ret = -EEXIST;
		goto out;
	}
	if (atomic_load_explicit(&m->dirty_on, memory_order_relaxed) &&
	    !atomic_load_explicit(&m->shared, memory_order_relaxed)) {
		bits = dirty_bitmap_alloc(m, ri->len);
		if (!bits) {
			ret = -ENOMEM;
			goto out;
		}
	}
	next = iodma_malloc(sizeof(*next) + (nr + 1) * sizeof(next->r[0]));
	if (!next) {
		iodma_free((void *)bits);
		ret = -ENOMEM;
		goto out;
	}
	next->nr = nr + 1;
	next->cap = nr + 1;
	if (i)
		memcpy(next->r, cur->r, i * sizeof(next->r[0]));
	next->r[i].i = *ri;
	atomic_init(&next->r[i].dirty, bits);
	if (nr - i)
		memcpy(&next->r[i + 1], &cur->r[i], (nr - i) * sizeof(next->r[0]));
	regions_replace_locked(m, next);
out:
	os_mutex_unlock(&m->lock);
	return ret;
}

IODMA_EXPORT int iodma_memory_add_region(struct iodma_memory *m, uint64_t gpa,
					 uint64_t len, uint32_t flags,
					 void **va)
{
	struct iodma_region_info ri;
	uint64_t unit = os_page_size();
	uint32_t pflags;
	void *p = NULL;
	int fd = -1, ret;

	if (!m || (flags & ~(IODMA_REGION_ANON | IODMA_REGION_HUGETLB)) ||
	    flags == (IODMA_REGION_ANON | IODMA_REGION_HUGETLB))
		return -EINVAL;
	if (flags & IODMA_REGION_HUGETLB)
		unit = 2ull << 20;
	if (!range_valid(gpa, len) || !is_aligned(gpa, os_page_size()) ||
	    !is_aligned(len, unit) || len > SIZE_MAX)
		return -EINVAL;
	pflags = (flags & IODMA_REGION_ANON) ? 0 : OS_PAGES_SHARED;
	if (flags & IODMA_REGION_HUGETLB)
		pflags |= OS_PAGES_HUGETLB;
	ret = os_pages_alloc((size_t)len, pflags, &p, &fd);
	if (ret)
		return ret;
	ri = (struct iodma_region_info){ .gpa = gpa, .len = len, .va = p,
					 .fd = fd, .offset = 0, .owned = true };
	ret = region_insert(m, &ri);
	if (ret) {
		os_pages_free(p, (size_t)len, fd);
		return ret;
	}
	if (va)
		*va = p;
	return 0;
}

IODMA_EXPORT int iodma_memory_add_region_host(struct iodma_memory *m,
					      uint64_t gpa, uint64_t len,
					      void *va, int fd, uint64_t offset)
{
	uint64_t pg = os_page_size();
	struct iodma_region_info ri;

	if (!m || !va || !range_valid(gpa, len) || !is_aligned(gpa, pg) ||
	    !is_aligned(len, pg) || !is_aligned((uintptr_t)va, pg) ||
	    !range_valid((uintptr_t)va, len) || fd < -1 ||
	    (fd >= 0 && !is_aligned(offset, pg)))
		return -EINVAL;
	ri = (struct iodma_region_info){ .gpa = gpa, .len = len, .va = va,
					 .fd = fd, .offset = fd >= 0 ? offset : 0,
					 .owned = false };
	return region_insert(m, &ri);
}

IODMA_EXPORT int iodma_memory_remove_region(struct iodma_memory *m,
					    uint64_t gpa)
{
	struct region_array *cur, *next = NULL;
	struct iodma_region_info gone;
	_Atomic uint64_t *gone_bits;
	size_t i, nr;

	if (!m)
		return -EINVAL;
	os_mutex_lock(&m->lock);
	cur = atomic_load_explicit(&m->regions, memory_order_relaxed);
	nr = cur ? cur->nr : 0;
	i = regions_search(cur, gpa);
	if (i == nr || cur->r[i].i.gpa != gpa) {
		os_mutex_unlock(&m->lock);
		return -ENOENT;
	}
	gone = cur->r[i].i;
	gone_bits = atomic_load_explicit(&cur->r[i].dirty, memory_order_relaxed);
	if (nr > 1) {
		next = m->spare;
		m->spare = NULL;
		assert(next && next->cap >= nr - 1);
		next->nr = nr - 1;
		memcpy(next->r, cur->r, i * sizeof(next->r[0]));
		memcpy(&next->r[i], &cur->r[i + 1],
		       (nr - i - 1) * sizeof(next->r[0]));
	}
	regions_replace_locked(m, next);
	iodma_free((void *)gone_bits); /* no reader marks in it any more */
	if (gone.owned)
		os_pages_free(gone.va, (size_t)gone.len, gone.fd);
	os_mutex_unlock(&m->lock);
	return 0;
}

IODMA_EXPORT int iodma_memory_find(const struct iodma_memory *m, uint64_t gpa,
				   struct iodma_region_info *info)
{
	int ret;

	if (!m || !info)
		return -EINVAL;
	os_rcu_read_lock();
	ret = memory_lookup(m, gpa, info);
	os_rcu_read_unlock();
	return ret;
}

IODMA_EXPORT size_t iodma_memory_get_regions(const struct iodma_memory *m,
					     struct iodma_region_info *out,
					     size_t max)
{
	const struct region_array *a;
	size_t nr;

	if (!m)
		return 0;
	os_rcu_read_lock();
	a = regions_get(m);
	nr = a ? a->nr : 0;
	for (size_t i = 0; out && i < IODMA_MIN(nr, max); i++)
		out[i] = a->r[i].i;
	os_rcu_read_unlock();
	return nr;
}

/* Walk [gpa, gpa + len) over snapshot @a: fill up to @max slices.  Returns
 * as iodma_memory_translate().  Caller is inside a read-side section. */
static int regions_walk(const struct region_array *a, uint64_t gpa,
			uint64_t len, struct iodma_slice *out, size_t max,
			size_t *nr, struct iodma_fault *fault)
{
	size_t i = regions_search(a, gpa), n = 0;
	uint64_t left = len;

	while (left) {
		const struct iodma_region_info *r;
		uint64_t run;

		if (!a || i == a->nr || a->r[i].i.gpa > gpa) {
			if (fault) {
				uint64_t hole = left;

				if (a && i < a->nr)
					hole = IODMA_MIN(left, a->r[i].i.gpa - gpa);
				*fault = (struct iodma_fault){
					.iova = gpa, .len = hole, .perm = 0,
					.reason = IODMA_FAULT_NOT_MAPPED };
			}
			*nr = n;
			return -EFAULT;
		}
		if (n == max) {
			*nr = n;
			return -E2BIG;
		}
		r = &a->r[i].i;
		run = IODMA_MIN(left, range_last(r->gpa, r->len) - gpa + 1);
		if (out) {
			out[n].va = (char *)r->va + (gpa - r->gpa);
			out[n].len = run;
		}
		n++;
		left -= run;
		gpa += run;   /* may wrap to 0 only when left is 0 */
		i++;
	}
	*nr = n;
	return 0;
}

IODMA_EXPORT int iodma_memory_translate(const struct iodma_memory *m,
					uint64_t gpa, uint64_t len,
					struct iodma_slice *out, size_t max,
					size_t *nr, struct iodma_fault *fault)
{
	size_t n = 0;
	int ret;

	if (!m || !nr || !range_valid(gpa, len) || (max && !out))
		return -EINVAL;
	os_rcu_read_lock();
	ret = regions_walk(regions_get(m), gpa, len, out, max, &n, fault);
	os_rcu_read_unlock();
	*nr = n;
	return ret;
}

/* ---- GPA dirty log --------------------------------------------------------- */

void memory_shared_log_mark(void *log, uint64_t bytes, uint64_t gpa,
			    uint64_t len)
{
	_Atomic uint8_t *bits = log;
	uint64_t first, last, k;

	if (!len || !bytes)
		return;
	first = gpa >> SHARED_LOG_SHIFT;
	last = range_last(gpa, len) >> SHARED_LOG_SHIFT;
	if (first / 8 >= bytes)
		return;
	if (last / 8 >= bytes)
		last = bytes * 8 - 1;
	/* The data written before this call must be visible before any bit
	 * the owner may read and clear, also where a bit is only read. */
	atomic_thread_fence(memory_order_seq_cst);
	for (k = first; k <= last;) {
		uint64_t b = k % 8, n = IODMA_MIN(8 - b, last - k + 1);
		uint8_t mask = (uint8_t)(((1u << n) - 1) << b);
		_Atomic uint8_t *p = &bits[k / 8];

		if ((atomic_load_explicit(p, memory_order_relaxed) & mask) != mask)
			atomic_fetch_or_explicit(p, mask, memory_order_relaxed);
		k += n;
	}
}

/* Mark the log pages of [gpa, gpa + len) that lie in region @r.  Inside a
 * read-side section that saw m->dirty_on true (so the bitmap cannot be
 * freed under us: iodma_memory_dirty_log_stop).  A bit
 * already set is only read: no shared line is written again. */
static void region_mark(const struct iodma_memory *m, const struct mregion *r,
			uint64_t gpa, uint64_t len)
{
	struct shared_log *sl = atomic_load_explicit(
		&((struct iodma_memory *)m)->shared, memory_order_acquire);
	_Atomic uint64_t *bits;
	uint64_t first, last, k;

	if (sl) {
		memory_shared_log_mark((void *)sl->bits, sl->bytes, gpa, len);
		return;
	}
	bits = atomic_load_explicit(&((struct mregion *)r)->dirty,
				    memory_order_acquire);
	if (!bits || !len)
		return;
	first = (gpa - r->i.gpa) >> m->page_shift;
	last = (range_last(gpa, len) - r->i.gpa) >> m->page_shift;
	for (k = first; k <= last;) {
		uint64_t w = k / 64, b = k % 64;
		uint64_t n = IODMA_MIN(64 - b, last - k + 1);
		uint64_t mask = (n == 64 ? ~0ull : ((1ull << n) - 1)) << b;

		/* seq_cst: the section-end re-mark argument in xlate.c
		 * orders marks against a harvest's clears. */
		if ((atomic_load_explicit(&bits[w], memory_order_seq_cst) & mask) != mask)
			atomic_fetch_or_explicit(&bits[w], mask, memory_order_seq_cst);
		k += n;
	}
}

void memory_dirty_mark(const struct iodma_memory *m, uint64_t gpa, uint64_t len)
{
	const struct region_array *a;
	size_t i;

	if (!atomic_load_explicit(&((struct iodma_memory *)m)->dirty_on,
				  memory_order_acquire) || !len)
		return;
	a = regions_get(m);
	for (i = regions_search(a, gpa); a && i < a->nr; i++) {
		const struct mregion *r = &a->r[i];
		uint64_t lo = IODMA_MAX(gpa, r->i.gpa);
		uint64_t hi = IODMA_MIN(range_last(gpa, len),
					range_last(r->i.gpa, r->i.len));

		if (r->i.gpa > range_last(gpa, len))
			break;
		region_mark(m, r, lo, hi - lo + 1);
	}
}

uint64_t memory_dirty_harvest(const struct iodma_memory *m)
{
	return atomic_load_explicit(&((struct iodma_memory *)m)->dirty_harvest,
				    memory_order_seq_cst);
}

bool memory_dirty_logging(const struct iodma_memory *m)
{
	return atomic_load_explicit(&((struct iodma_memory *)m)->dirty_on,
				    memory_order_acquire);
}

bool memory_dirty_shared(const struct iodma_memory *m)
{
	return atomic_load_explicit(&((struct iodma_memory *)m)->shared,
				    memory_order_acquire) != NULL;
}

void memory_dirty_set_lost(struct iodma_memory *m)
{
	if (atomic_load_explicit(&m->dirty_on, memory_order_acquire))
		atomic_store_explicit(&m->dirty_lost, true, memory_order_seq_cst);
}

IODMA_EXPORT int iodma_memory_dirty_log_start(struct iodma_memory *m)
{
	struct region_array *a;
	size_t i;
	int ret = 0;

	if (!m)
		return -EINVAL;
	os_mutex_lock(&m->lock);
	if (atomic_load_explicit(&m->dirty_on, memory_order_relaxed)) {
		ret = atomic_load_explicit(&m->shared, memory_order_relaxed) ?
		      -EBUSY : -EALREADY;
		goto out;
	}
	a = atomic_load_explicit(&m->regions, memory_order_relaxed);
	/* All bitmaps or none: allocate first, publish after. */
	for (i = 0; a && i < a->nr; i++) {
		_Atomic uint64_t *bits = dirty_bitmap_alloc(m, a->r[i].i.len);

		if (!bits) {
			while (i--) {
				iodma_free((void *)atomic_load_explicit(
					&a->r[i].dirty, memory_order_relaxed));
				atomic_store_explicit(&a->r[i].dirty, NULL,
						      memory_order_relaxed);
			}
			ret = -ENOMEM;
			goto out;
		}
		atomic_store_explicit(&a->r[i].dirty, bits, memory_order_relaxed);
	}
	/* Readers see dirty_on only after every bitmap is in place; a
	 * reader that saw a bitmap NULL just before simply marked nothing
	 * (it wrote before logging began). */
	atomic_store_explicit(&m->dirty_on, true, memory_order_seq_cst);
out:
	os_mutex_unlock(&m->lock);
	return ret;
}

IODMA_EXPORT int iodma_memory_dirty_log_start_shared(struct iodma_memory *m,
						     void *log, uint64_t log_bytes)
{
	struct shared_log *sl, *old;

	if (!m || !log || !log_bytes || log_bytes > UINT64_MAX / 8)
		return -EINVAL;
	sl = iodma_malloc(sizeof(*sl));
	if (!sl)
		return -ENOMEM;
	sl->bits = log;
	sl->bytes = log_bytes;
	os_mutex_lock(&m->lock);
	old = atomic_load_explicit(&m->shared, memory_order_relaxed);
	if (atomic_load_explicit(&m->dirty_on, memory_order_relaxed) && !old) {
		os_mutex_unlock(&m->lock);
		iodma_free(sl);
		return -EBUSY; /* the per-region mode runs */
	}
	/* The pointer first, the flag after: a marker that sees dirty_on
	 * true finds a log.  A switch publishes the new log and waits for
	 * every marker that could still hold the old one. */
	atomic_store_explicit(&m->shared, sl, memory_order_release);
	atomic_store_explicit(&m->dirty_on, true, memory_order_seq_cst);
	if (old) {
		os_synchronize_rcu();
		iodma_free(old);
	}
	os_mutex_unlock(&m->lock);
	return 0;
}

IODMA_EXPORT int iodma_memory_dirty_log_stop(struct iodma_memory *m)
{
	struct region_array *a;
	struct shared_log *sl;

	if (!m)
		return -EINVAL;
	os_mutex_lock(&m->lock);
	if (!atomic_load_explicit(&m->dirty_on, memory_order_relaxed)) {
		os_mutex_unlock(&m->lock);
		return -EINVAL;
	}
	/* Markers test dirty_on inside their section before they load a
	 * bitmap: once every section that saw it true has ended, nobody
	 * touches the bitmaps and they can go, without allocating. */
	atomic_store_explicit(&m->dirty_on, false, memory_order_seq_cst);
	sl = atomic_exchange_explicit(&m->shared, NULL, memory_order_relaxed);
	os_synchronize_rcu();
	iodma_free(sl);
	a = atomic_load_explicit(&m->regions, memory_order_relaxed);
	for (size_t i = 0; a && i < a->nr; i++)
		iodma_free((void *)atomic_exchange_explicit(&a->r[i].dirty, NULL,
							    memory_order_relaxed));
	os_mutex_unlock(&m->lock);
	return 0;
}

IODMA_EXPORT int iodma_memory_mark_dirty(struct iodma_memory *m, uint64_t gpa,
					 uint64_t len)
{
	size_t n;
	int ret;

	if (!m || !range_valid(gpa, len))
		return -EINVAL;
	os_rcu_read_lock();
	ret = regions_walk(regions_get(m), gpa, len, NULL, SIZE_MAX, &n, NULL);
	if (ret == 0)
		memory_dirty_mark(m, gpa, len);
	os_rcu_read_unlock();
	return ret;
}

IODMA_EXPORT int iodma_memory_dirty_get_and_clear(struct iodma_memory *m,
						  uint64_t gpa, uint64_t len,
						  uint64_t *bitmap, size_t words)
{
	const struct region_array *a;
	uint64_t pg, first, last, need;
	bool lost;
	size_t i;

	if (!m || !bitmap || !range_valid(gpa, len))
		return -EINVAL;
	pg = 1ull << m->page_shift;
	if (!is_aligned(gpa, pg) || !is_aligned(len, pg))
		return -EINVAL;
	need = ((len >> m->page_shift) + 63) / 64;
	if (words < need)
		return -ENOSPC;
	if (!atomic_load_explicit(&m->dirty_on, memory_order_acquire))
		return -EINVAL;
	if (atomic_load_explicit(&m->shared, memory_order_acquire))
		return -EOPNOTSUPP; /* the log's owner harvests it */
	/* Counted as started and under way before any bit is cleared, and no
	 * longer under way after the last: an access section that wrote
	 * through a slice across this harvest sees it at its end and marks
	 * its pages again (xlate.c, "Dirty log"), so they are in the next
	 * harvest.  Never waits for a section. */
	atomic_fetch_add_explicit(&m->dirty_harvest, (1ull << 32) + 1,
				  memory_order_seq_cst);
	lost = atomic_load_explicit(&m->dirty_lost, memory_order_seq_cst);
	memset(bitmap, 0, (size_t)need * sizeof(uint64_t));
	first = gpa >> m->page_shift;
	last = range_last(gpa, len) >> m->page_shift;
	os_rcu_read_lock();
	a = regions_get(m);
	for (i = regions_search(a, gpa); a && i < a->nr; i++) {
		const struct mregion *r = &a->r[i];
		_Atomic uint64_t *bits = atomic_load_explicit(
			&((struct mregion *)r)->dirty, memory_order_acquire);
		uint64_t rfirst = r->i.gpa >> m->page_shift;
		uint64_t lo, hi, k;

		if (rfirst > last)
			break;
		if (!bits)
			continue;
		lo = IODMA_MAX(first, rfirst) - rfirst;   /* region page index */
		hi = IODMA_MIN(last, range_last(r->i.gpa, r->i.len) >> m->page_shift) -
		     rfirst;
		for (k = lo; k <= hi;) {
			uint64_t w = k / 64, b = k % 64;
			uint64_t n = IODMA_MIN(64 - b, hi - k + 1);
			uint64_t mask = (n == 64 ? ~0ull : ((1ull << n) - 1)) << b;
			uint64_t got = 0;

			if (atomic_load_explicit(&bits[w], memory_order_seq_cst) & mask)
				got = atomic_fetch_and_explicit(&bits[w], ~mask,
								memory_order_seq_cst) & mask;
			if (lost)
				got = mask; /* every page may be dirty */
			while (got) {
				uint64_t bit = (uint64_t)__builtin_ctzll(got);
				uint64_t o = rfirst + w * 64 + bit - first;

				bitmap[o / 64] |= 1ull << (o % 64);
				got &= got - 1;
			}
			k += n;
		}
	}
	os_rcu_read_unlock();
	atomic_fetch_sub_explicit(&m->dirty_harvest, 1, memory_order_seq_cst);
	/* Pairs with the fence at a section's end (xlate.c). */
	atomic_thread_fence(memory_order_seq_cst);
	return 0;
}

/* Copy between @buf and guest memory: check the whole range, then copy, in
 * one read-side section so no region can be freed in between. */
static int memory_copy(const struct iodma_memory *m, uint64_t gpa, void *buf,
		       size_t len, bool to_guest)
{
	const struct region_array *a;
	bool logging;
	size_t i, n;
	char *p = buf;
	int ret;

	if (!m || !buf || !range_valid(gpa, len))
		return -EINVAL;
	os_rcu_read_lock();
	a = regions_get(m);
	logging = to_guest && atomic_load_explicit(
		&((struct iodma_memory *)m)->dirty_on, memory_order_acquire);
	ret = regions_walk(a, gpa, len, NULL, SIZE_MAX, &n, NULL);
	if (ret == 0) {
		i = regions_search(a, gpa);
		while (len) {
			const struct iodma_region_info *r = &a->r[i++].i;
			uint64_t off = gpa - r->gpa;
			size_t run = (size_t)IODMA_MIN((uint64_t)len, r->len - off);

			/* Written first, marked after: a harvest in between
			 * leaves the mark for the next one. */
			if (to_guest)
				memcpy((char *)r->va + off, p, run);
			else
				memcpy(p, (char *)r->va + off, run);
			if (logging)
				region_mark(m, &a->r[i - 1], gpa, run);
			p += run;
			len -= run;
			gpa += run;
		}
	}
	os_rcu_read_unlock();
	return ret;
}

IODMA_EXPORT int iodma_memory_read(const struct iodma_memory *m, uint64_t gpa,
				   void *buf, size_t len)
{
	return memory_copy(m, gpa, buf, len, false);
}

IODMA_EXPORT int iodma_memory_write(struct iodma_memory *m, uint64_t gpa,
				    const void *buf, size_t len)
{
	return memory_copy(m, gpa, (void *)buf, len, true);
}
