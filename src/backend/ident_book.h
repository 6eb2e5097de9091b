/* SPDX-License-Identifier: MIT */
/*
 * ident_book.h - the identity book (ident_book.c), shared by the identity
 * backend and VFIO no-IOMMU mode.  Linux only.
 */
#ifndef IODMA_BACKEND_IDENT_BOOK_H
#define IODMA_BACKEND_IDENT_BOOK_H

#include <stdint.h>

struct iodma_map_event;

/* Identity checks shared by the identity backend and VFIO no-IOMMU mode
 * (backend/identity.c): every page of [va, va + len) is at physical address
 * iova + offset.  0; -EPERM frame numbers hidden (no CAP_SYS_ADMIN);
 * -EINVAL not identity-contiguous; -EFAULT a page cannot be made present;
 * or the read error.  Then the range is mlocked: identity_lock() does both,
 * identity_unlock() undoes it. */
int identity_lock(const void *va, uint64_t iova, uint64_t len);
void identity_unlock(const void *va, uint64_t len);

/* A book of identity mappings (iova -> va, len), for the identity backend
 * and VFIO no-IOMMU mode: map validates and mlocks (identity_lock), unmap
 * munlocks.  Same refusals as a type1 IOMMU: -EEXIST overlap, -ENOSPC at
 * @max mappings, unmap removes the mappings wholly inside the range and
 * refuses (-EINVAL, nothing removed) one crossing an end. */
struct btree;
struct ident_book {
	struct btree *t;	/* iova -> struct ident_rec; caller serialises */
	uint32_t max;		/* mapping limit */
};
int ident_book_init(struct ident_book *b, uint32_t max);
void ident_book_fini(struct ident_book *b);	/* munlocks what is left */
int ident_book_map(struct ident_book *b, const struct iodma_map_event *ev);
int ident_book_unmap(struct ident_book *b, uint64_t iova, uint64_t len,
		     uint64_t *unmapped);
uint32_t ident_book_count(const struct ident_book *b);

#endif /* IODMA_BACKEND_IDENT_BOOK_H */
