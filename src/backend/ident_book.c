/* SPDX-License-Identifier: MIT */
/*
 * ident_book.c - the identity book: pinning and checking memory for a
 * device that sees physical addresses (no IOMMU), and the record of what
 * is pinned (iova -> va, len).
 *
 * Shared by the identity backend (identity.c) and VFIO no-IOMMU mode
 * (vfio.c); neither includes the other.  Each book's calls are serialised
 * by the owning domain's map lock.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include <iodma/backend.h>

#include "../btree.h"
#include "../util.h"
#include "ident_book.h"
#include "linux_common.h"

#define PAGEMAP_BATCH         512	/* entries per pread (4 KiB of stack) */

struct ident_rec {
	uint64_t len;
	uint64_t va;
};

/* Check that [va, va + len) is resident at [iova, iova + len).  The range
 * must already be mlocked (so present and writable-faulted); its frames
 * come from os_virt_to_phys_range(), PAGEMAP_BATCH pages per pagemap read. */
static int identity_check(const void *va, uint64_t iova, uint64_t len)
{
	uint64_t page = os_page_size();
	uint64_t buf[PAGEMAP_BATCH];
	uint64_t first = (uintptr_t)va / page, pages = len / page, done = 0;

	while (done < pages) {
		uint64_t n = IODMA_MIN(pages - done, (uint64_t)PAGEMAP_BATCH);
		size_t bad = 0;
		int err = os_virt_to_phys_range((const void *)(uintptr_t)((first + done) * page),
						(size_t)n, buf, &bad);

		if (err == -EFAULT) {
			vfio_set_error("identity: page %#llx not present after mlock",
				       (unsigned long long)((first + done + bad) * page));
			return err;
		}
		if (err == -EPERM) {
			vfio_set_error("identity: /proc/self/pagemap hides frame numbers: "
				       "the identity backend needs CAP_SYS_ADMIN");
			return err;
		}
		if (err) {
			vfio_set_error("identity: cannot read /proc/self/pagemap: %s",
				       strerror(-err));
			return err;
		}
		for (uint64_t i = 0; i < n; i++) {
			uint64_t want = iova + (done + i) * page;

			if (buf[i] != want) {
				vfio_set_error("identity: va %#llx is at physical %#llx, not at iova %#llx",
					       (unsigned long long)((first + done + i) * page),
					       (unsigned long long)buf[i],
					       (unsigned long long)want);
				return -EINVAL;
			}
		}
		done += n;
	}
	return 0;
}

int identity_lock(const void *va, uint64_t iova, uint64_t len)
{
	int err;

	if (mlock(va, len) < 0) {
		err = -errno;
		vfio_set_error("identity: mlock of %llu bytes failed: %s (RLIMIT_MEMLOCK?)",
			       (unsigned long long)len, strerror(errno));
		return err;
	}
	err = identity_check(va, iova, len);
	if (err)
		munlock(va, len);
	return err;
}

void identity_unlock(const void *va, uint64_t len)
{
	munlock(va, len);
}

/* ---- the book ----------------------------------------------------------- */

int ident_book_init(struct ident_book *b, uint32_t max)
{
	b->max = max;
	b->t = iodma_calloc(1, sizeof(*b->t));
	if (!b->t)
		return -ENOMEM;
	btree_init(b->t, sizeof(struct ident_rec));
	return 0;
}

void ident_book_fini(struct ident_book *b)
{
	const struct ident_rec *r;
	uint64_t key;

	if (!b->t)
		return;
	for (r = btree_lookup_ge(b->t, 0, &key); r;
	     r = btree_next(b->t, key, &key))
		identity_unlock((const void *)(uintptr_t)r->va, r->len);
	btree_fini(b->t);
	iodma_free(b->t);
	b->t = NULL;
}

uint32_t ident_book_count(const struct ident_book *b)
{
	return (uint32_t)btree_count(b->t);
}

int ident_book_map(struct ident_book *b, const struct iodma_map_event *ev)
{
	struct ident_rec rec = { .len = ev->len, .va = (uintptr_t)ev->va };
	const struct ident_rec *prev;
	uint64_t key;
	int err;

	if (!range_valid(ev->iova, ev->len))
		return -EINVAL;
	if (!ev->va) {
		vfio_set_error("identity: a mapping needs a host address");
		return -EOPNOTSUPP;
	}
	prev = btree_lookup_le(b->t, range_last(ev->iova, ev->len), &key);
	if (prev && range_last(key, prev->len) >= ev->iova)
		return -EEXIST;
	if (btree_count(b->t) >= b->max)
		return -ENOSPC;
	err = btree_preload(b->t);
	if (err)
		return err;
	err = identity_lock(ev->va, ev->iova, ev->len);
	if (err)
		return err;
	err = btree_insert(b->t, ev->iova, &rec);
	assert(err == 0); /* preloaded, overlap excluded */
	return err;
}

int ident_book_unmap(struct ident_book *b, uint64_t iova, uint64_t len,
		     uint64_t *unmapped)
{
	const struct ident_rec *r;
	struct ident_rec rec;
	uint64_t key, last, first = 0, n = 0, bytes = 0;

	if (!range_valid(iova, len))
		return -EINVAL;
	last = range_last(iova, len);
	/* A mapping crossing the start? */
	r = btree_lookup_le(b->t, iova, &key);
	if (r && key < iova && range_last(key, r->len) >= iova)
		return -EINVAL;
	for (r = btree_lookup_ge(b->t, iova, &key); r && key <= last;
	     r = btree_next(b->t, key, &key)) {
		if (range_last(key, r->len) > last)
			return -EINVAL; /* crosses the end */
		if (n++ == 0)
			first = key;
		if (range_last(key, r->len) == UINT64_MAX)
			break;
	}
	key = first;
	for (uint64_t i = 0; i < n; i++) {
		btree_lookup_ge(b->t, key, &key);
		btree_remove(b->t, key, &rec);
		identity_unlock((const void *)(uintptr_t)rec.va, rec.len);
		bytes += rec.len;
	}
	*unmapped = bytes;
	return 0;
}
