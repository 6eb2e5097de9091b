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

/* One published snapshot of the regions, sorted by gpa, non-overlapping. */
struct region_array {
	size_t nr;
	size_t cap;                     /* entries allocated */
	struct iodma_region_info r[];
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

		if (range_last(a->r[mid].gpa, a->r[mid].len) < gpa)
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

	if (!a || i == a->nr || a->r[i].gpa > gpa)
		return -ENOENT;
	*out = a->r[i];
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
	struct iodma_memory *m;

	if (!out)
		return -EINVAL;
	if (opts && (opts->size < offsetof(struct iodma_memory_opts, flags) +
				  sizeof(opts->flags) || opts->flags != 0))
		return -EINVAL;
	m = iodma_calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	atomic_init(&m->regions, NULL);
	atomic_init(&m->gen, 0);
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
	for (size_t i = 0; a && i < a->nr; i++)
		if (a->r[i].owned)
			os_pages_free(a->r[i].va, a->r[i].len, a->r[i].fd);
	iodma_free(a);
	iodma_free(m->spare);
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

	old = atomic_exchange_explicit(&m->regions, next, memory_order_acq_rel);
	atomic_fetch_add_explicit(&m->gen, 2, memory_order_acq_rel);
	os_synchronize_rcu();
	if (old) {
		iodma_free(m->spare);
		m->spare = old;
	}
}

/* Insert @ri into the array.  Returns 0, -EEXIST (overlap) or -ENOMEM;
 * nothing changed on error. */
static int region_insert(struct iodma_memory *m,
			 const struct iodma_region_info *ri)
{
	struct region_array *cur, *next;
	size_t i, nr;
	int ret = 0;

	os_mutex_lock(&m->lock);
	cur = atomic_load_explicit(&m->regions, memory_order_relaxed);
	nr = cur ? cur->nr : 0;
	i = regions_search(cur, ri->gpa);
	if (i < nr && ranges_overlap(cur->r[i].gpa, cur->r[i].len, ri->gpa,
				     ri->len)) {
		ret = -EEXIST;
		goto out;
	}
	next = iodma_malloc(sizeof(*next) + (nr + 1) * sizeof(next->r[0]));
	if (!next) {
		ret = -ENOMEM;
		goto out;
	}
	next->nr = nr + 1;
	next->cap = nr + 1;
	if (i)
		memcpy(next->r, cur->r, i * sizeof(next->r[0]));
	next->r[i] = *ri;
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
	size_t i, nr;

	if (!m)
		return -EINVAL;
	os_mutex_lock(&m->lock);
	cur = atomic_load_explicit(&m->regions, memory_order_relaxed);
	nr = cur ? cur->nr : 0;
	i = regions_search(cur, gpa);
	if (i == nr || cur->r[i].gpa != gpa) {
		os_mutex_unlock(&m->lock);
		return -ENOENT;
	}
	gone = cur->r[i];
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
	if (out && max && nr)
		memcpy(out, a->r, IODMA_MIN(nr, max) * sizeof(*out));
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

		if (!a || i == a->nr || a->r[i].gpa > gpa) {
			if (fault) {
				uint64_t hole = left;

				if (a && i < a->nr)
					hole = IODMA_MIN(left, a->r[i].gpa - gpa);
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
		r = &a->r[i];
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

/* Copy between @buf and guest memory: check the whole range, then copy, in
 * one read-side section so no region can be freed in between. */
static int memory_copy(const struct iodma_memory *m, uint64_t gpa, void *buf,
		       size_t len, bool to_guest)
{
	const struct region_array *a;
	size_t i, n;
	char *p = buf;
	int ret;

	if (!m || !buf || !range_valid(gpa, len))
		return -EINVAL;
	os_rcu_read_lock();
	a = regions_get(m);
	ret = regions_walk(a, gpa, len, NULL, SIZE_MAX, &n, NULL);
	if (ret == 0) {
		i = regions_search(a, gpa);
		while (len) {
			const struct iodma_region_info *r = &a->r[i++];
			uint64_t off = gpa - r->gpa;
			size_t run = (size_t)IODMA_MIN((uint64_t)len, r->len - off);

			if (to_guest)
				memcpy((char *)r->va + off, p, run);
			else
				memcpy(p, (char *)r->va + off, run);
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
