/* SPDX-License-Identifier: MIT */
/*
 * identity.c - the identity backend: no IOMMU, IOVA = physical address.
 *
 * A device behind no IOMMU (bare metal, VFIO no-IOMMU mode) sees physical
 * addresses, so there is nothing to program: a "map" only checks that the
 * caller's IOVA really is where the memory lives, and pins it there.
 *   map    mlock [va, va + len) (faults every page in, COW broken), then
 *          read /proc/self/pagemap for every page: page i must be present
 *          at physical address iova + i * page.  Frame numbers read as 0
 *          without CAP_SYS_ADMIN: -EPERM.  Not contiguous there: -EINVAL.
 *          On error the range is munlocked again.
 *   unmap  munlock.  mlock does not nest: unmapping munlocks the range even
 *          if the caller had mlocked it for its own reasons.
 * mlock keeps pages resident, not necessarily in place: with
 * vm.compact_unevictable_allowed=1 compaction may move them.  Buffers for a
 * no-IOMMU device should come from hugetlb or be allocated so that the
 * kernel cannot migrate them; this backend checks at map time only.
 *
 * Caps: alignment = page size; one range [page size, 2^52) (x86-64's
 * architectural physical-address limit; page 0 is never handed out);
 * max mappings 65535; IODMA_CAP_UNMAP_ALL.
 *
 * The book (iova -> va, len) is shared with VFIO no-IOMMU mode
 * (backend/vfio.c); its calls are serialised by the domain's map lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <iodma/backend.h>
#include <iodma/vfio.h>

#include "../btree.h"
#include "../util.h"
#include "vfio_priv.h"

#define IDENTITY_MAX_MAPPINGS 65535u
#define IDENTITY_PHYS_BITS    52
#define PAGEMAP_BATCH         512	/* entries per pread */
#define PM_PRESENT            (1ull << 63)
#define PM_PFN_MASK           ((1ull << 55) - 1)

struct ident_rec {
	uint64_t len;
	uint64_t va;
};

/* Check that [va, va + len) is resident at [iova, iova + len).  The range
 * must already be mlocked (so present and writable-faulted). */
static int identity_check(const void *va, uint64_t iova, uint64_t len)
{
	uint64_t page = os_page_size();
	uint64_t buf[PAGEMAP_BATCH];
	uint64_t first = (uintptr_t)va / page, pages = len / page, done = 0;
	int fd, err = 0;

	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		vfio_set_error("identity: cannot open /proc/self/pagemap: %s",
			       strerror(errno));
		return err;
	}
	while (done < pages && !err) {
		uint64_t n = IODMA_MIN(pages - done, (uint64_t)PAGEMAP_BATCH);
		ssize_t r = pread(fd, buf, n * sizeof(buf[0]),
				  (off_t)((first + done) * sizeof(buf[0])));

		if (r != (ssize_t)(n * sizeof(buf[0]))) {
			err = r < 0 ? -errno : -EIO;
			vfio_set_error("identity: short read of /proc/self/pagemap");
			break;
		}
		for (uint64_t i = 0; i < n; i++) {
			uint64_t e = buf[i], want = iova + (done + i) * page;

			if (!(e & PM_PRESENT)) {
				err = -EFAULT;
				vfio_set_error("identity: page %#llx not present after mlock",
					       (unsigned long long)((first + done + i) * page));
				break;
			}
			if ((e & PM_PFN_MASK) == 0) {
				err = -EPERM;
				vfio_set_error("identity: /proc/self/pagemap hides frame numbers: "
					       "the identity backend needs CAP_SYS_ADMIN");
				break;
			}
			if ((e & PM_PFN_MASK) * page != want) {
				err = -EINVAL;
				vfio_set_error("identity: va %#llx is at physical %#llx, not at iova %#llx",
					       (unsigned long long)((first + done + i) * page),
					       (unsigned long long)((e & PM_PFN_MASK) * page),
					       (unsigned long long)want);
				break;
			}
		}
		done += n;
	}
	close(fd);
	return err;
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

/* ---- the identity backend ------------------------------------------------ */

struct identity {
	struct ident_book book;	/* serialised by the domain's map lock */
};

static int identity_open(const void *config, void **priv)
{
	struct identity *s;
	int err;

	if (config) {
		vfio_set_error("identity: backend_config must be NULL");
		return -EINVAL;
	}
	s = iodma_calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	err = ident_book_init(&s->book, IDENTITY_MAX_MAPPINGS);
	if (err) {
		iodma_free(s);
		return err;
	}
	*priv = s;
	return 0;
}

static void identity_close(void *priv)
{
	struct identity *s = priv;

	ident_book_fini(&s->book);
	iodma_free(s);
}

static int identity_get_caps(void *priv, struct iodma_caps *caps)
{
	uint64_t page = os_page_size();

	memset(caps, 0, sizeof(*caps));
	caps->alignment = page;
	caps->nr_ranges = 1;
	caps->ranges[0].iova = page;
	caps->ranges[0].len = (1ull << IDENTITY_PHYS_BITS) - page;
	caps->max_mappings = IDENTITY_MAX_MAPPINGS;
	caps->flags = IODMA_CAP_UNMAP_ALL;
	return 0;
}

static int identity_map(void *priv, const struct iodma_map_event *ev)
{
	struct identity *s = priv;

	return ident_book_map(&s->book, ev);
}

static int identity_unmap(void *priv, uint64_t iova, uint64_t len,
			  uint64_t *unmapped)
{
	struct identity *s = priv;

	return ident_book_unmap(&s->book, iova, len, unmapped);
}

static int identity_unmap_all(void *priv, uint64_t *unmapped)
{
	struct identity *s = priv;

	return ident_book_unmap(&s->book, 0, UINT64_MAX, unmapped);
}

static int identity_avail(void *priv, uint32_t *avail)
{
	struct identity *s = priv;

	*avail = s->book.max - ident_book_count(&s->book);
	return 0;
}

static const struct iodma_backend_ops identity_ops = {
	.version = IODMA_BACKEND_OPS_VERSION,
	.name = "identity",
	.open = identity_open,
	.close = identity_close,
	.get_caps = identity_get_caps,
	.map = identity_map,
	.unmap = identity_unmap,
	.unmap_all = identity_unmap_all,
	.avail_mappings = identity_avail,
};

IODMA_EXPORT const struct iodma_backend_ops *iodma_backend_identity(void)
{
	return &identity_ops;
}
