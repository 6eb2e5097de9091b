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
 * The book (iova -> va, len) and the pin/check code live in ident_book.c,
 * shared with VFIO no-IOMMU mode (backend/vfio.c); its calls are
 * serialised by the domain's map lock.
 */
#include <errno.h>
#include <string.h>

#include <iodma/backend.h>
#include <iodma/vfio.h>

#include "../util.h"
#include "ident_book.h"
#include "linux_common.h"

#define IDENTITY_MAX_MAPPINGS 65535u
#define IDENTITY_PHYS_BITS    52

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
