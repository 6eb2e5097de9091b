/* SPDX-License-Identifier: MIT */
/*
 * vfio_priv.h - the VFIO type1 backend (backend/vfio.c) as seen by VFIO
 * device access (backend/vfio_device.c) and the tests.  No other backend
 * includes it (shared helpers: linux_common.h, ident_book.h).
 * Linux only.
 */
#ifndef IODMA_BACKEND_VFIO_PRIV_H
#define IODMA_BACKEND_VFIO_PRIV_H

#include <stdbool.h>
#include <stdint.h>

#include <iodma/vfio.h>

struct iodma_domain;
struct iodma_vfio_stats;

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

/* Caps from a VFIO_IOMMU_GET_INFO answer (struct vfio_iommu_type1_info and
 * its capability chain) of @len bytes, as the vfio backend reports them;
 * exposed for tests.  0; -EINVAL bad arguments; -ERANGE no usable range. */
int vfio_caps_from_info(const void *buf, uint32_t len, uint32_t avail_base,
			bool unmap_all, struct iodma_caps *caps);

/* The ioctl counters of vfio domain @d (iodma_vfio_get_stats()); relaxed
 * loads, any thread.  0; -EINVAL @d is not a vfio domain. */
int vfio_domain_stats(const struct iodma_domain *d,
		      struct iodma_vfio_stats *st);


#endif /* IODMA_BACKEND_VFIO_PRIV_H */
