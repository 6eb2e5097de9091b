/* SPDX-License-Identifier: MIT */
/*
 * vfio_priv.h - what the VFIO type1 backend (backend/vfio.c), the identity
 * backend (backend/identity.c) and VFIO device access (vfio.c) share.
 * Linux only.
 */
#ifndef IODMA_BACKEND_VFIO_PRIV_H
#define IODMA_BACKEND_VFIO_PRIV_H

#include <stdbool.h>
#include <stdint.h>

#include <iodma/vfio.h>

struct iodma_domain;

/* Is @d a domain of the vfio (type1 / no-IOMMU) backend? */
bool vfio_domain_is(const struct iodma_domain *d);

/* Attach an open, viable group fd to the domain's container
 * (VFIO_GROUP_SET_CONTAINER, VFIO_SET_IOMMU on first group), refresh caps.
 * The domain takes the fd on success (closed at destroy); on error the
 * caller still owns it and it is in no container (a group already in a
 * container, this one included, is -EBUSY).  0 or negative errno. */
int vfio_domain_add_group(struct iodma_domain *d, int groupfd);

/* The open group fd of @group in a vfio domain, opening and adding the
 * group first if it is not in the container yet.  The fd stays owned by
 * the domain.  0 and *@groupfd, or negative errno. */
int vfio_domain_group_fd(struct iodma_domain *d, int group, int *groupfd);

/* The raw GET_INFO figures of a type1 domain (for tests and tools):
 * iova_pgsizes, DMA_AVAIL now, migration capability.  0; -EINVAL not a
 * type1 domain; -ENODEV no group yet; or the ioctl's error. */
int vfio_domain_info(struct iodma_domain *d, uint64_t *pgsizes,
		     uint32_t *avail, bool *migration);

/* Caps from a VFIO_IOMMU_GET_INFO answer (struct vfio_iommu_type1_info and
 * its capability chain) of @len bytes, as the vfio backend reports them;
 * exposed for tests.  0; -EINVAL bad arguments; -ERANGE no usable range. */
int vfio_caps_from_info(const void *buf, uint32_t len, uint32_t avail_base,
			bool unmap_all, struct iodma_caps *caps);

/* Put in the error text which devices of IOMMU group @group are not bound
 * to vfio-pci (read from sysfs: kernel/iommu_groups/N/devices/<=>/driver). */
void vfio_explain_not_viable(int group);

/* Set / clear the calling thread's iodma_vfio_last_error() text. */
void vfio_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The sysfs root ("" normally, $IODMA_SYSFS_ROOT in tests) and the VFIO
 * device directory ("/dev/vfio" or $IODMA_VFIO_DEV_DIR). */
const char *vfio_sysfs_root(void);
const char *vfio_dev_dir(void);

/* Is "DDDD:BB:DD.F" well formed (hex digits, sane lengths)? */
bool vfio_bdf_valid(const char *bdf);

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

#endif /* IODMA_BACKEND_VFIO_PRIV_H */
