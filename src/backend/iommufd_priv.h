/* SPDX-License-Identifier: MIT */
/*
 * iommufd_priv.h - what the iommufd backend (src/backend/iommufd.c) offers
 * the VFIO device code (src/backend/vfio_device.c): attaching a VFIO device cdev to the
 * domain's IOAS.
 *
 * Order of operations for a device on an iommufd domain:
 *   1. open /dev/vfio/devices/vfioN (found through
 *      /sys/bus/pci/devices/BDF/vfio-dev/);
 *   2. iommufd_domain_attach_device(): VFIO_DEVICE_BIND_IOMMUFD with the
 *      domain's iommufd, VFIO_DEVICE_ATTACH_IOMMUFD_PT with its IOAS, then
 *      IOMMU_IOAS_IOVA_RANGES re-read and iodma_domain_refresh_caps();
 *   3. use the device (regions, interrupts, ...);
 *   4. iommufd_domain_detach_device(), then close the cdev fd (the close is
 *      the unbind: VFIO has no unbind ioctl).
 *   The domain is destroyed after its devices are closed (IOMMU_DESTROY of
 *   an IOAS that still has a device attached fails with EBUSY; the backend
 *   then only closes its iommufd and the kernel frees the IOAS with the
 *   last device).
 *
 * The legacy VFIO interface and the cdev exclude each other: while the
 * device's group is open (/dev/vfio/N, possibly set to a type1 container),
 * VFIO_DEVICE_BIND_IOMMUFD fails with EBUSY.  Close every group and
 * container fd of the device before step 2.
 *
 * Linux only.  Thread-safe like the domain calls they make (the domain's
 * map lock serialises the refresh); the backend state they read is
 * immutable after the domain was created.
 */
#ifndef IODMA_BACKEND_IOMMUFD_PRIV_H
#define IODMA_BACKEND_IOMMUFD_PRIV_H

#include <stdbool.h>
#include <stdint.h>

struct iodma_domain;

/* Is @d a domain created with iodma_backend_iommufd()?  False for NULL. */
bool iommufd_domain_is(const struct iodma_domain *d);

/*
 * iommufd_domain_attach_device() - Bind a VFIO device cdev to the domain's
 * iommufd and attach it to the domain's IOAS.
 * @d:      an iommufd domain.
 * @devfd:  open fd of /dev/vfio/devices/vfioN, not yet bound; its group
 *          must not be open through the legacy interface (EBUSY).
 * @dev_id: receives the device's id in the iommufd (from the bind).
 *
 * After the attach the IOVA ranges are re-read (IOMMU_IOAS_IOVA_RANGES: the
 * device's reserved regions, e.g. the MSI window, leave the IOAS) and the
 * domain's caps refreshed.  If the refresh fails the device is detached.
 *
 * Return: 0; -EBADF @devfd < 0; -EINVAL @d NULL or not an iommufd domain,
 *         or @dev_id NULL; the kernel's errno from BIND / ATTACH (-EBUSY
 *         legacy group still open, -ENOTTY not a VFIO cdev, ...); or
 *         iodma_domain_refresh_caps()'s error (-EBUSY: live mappings in
 *         the space the device removed).  On error *@dev_id and the
 *         domain's caps are unchanged and the device is attached to no
 *         IOAS.  A bind that succeeded cannot be undone except by closing
 *         @devfd (no unbind ioctl exists), which the caller does on error.
 */
int iommufd_domain_attach_device(struct iodma_domain *d, int devfd,
				 uint32_t *dev_id);

/*
 * iommufd_domain_detach_device() - VFIO_DEVICE_DETACH_IOMMUFD_PT, then
 * re-read the ranges (they may widen again) and refresh the domain's caps.
 * @d:      the iommufd domain the device was attached to.
 * @devfd:  its cdev fd; the caller closes it afterwards (that unbinds).
 * @dev_id: the id from iommufd_domain_attach_device() (for the record).
 *
 * Errors are ignored (nobody to report them to); the device then blocks
 * DMA, or is detached anyway when @devfd is closed.
 */
void iommufd_domain_detach_device(struct iodma_domain *d, int devfd,
				  uint32_t dev_id);

struct iodma_vfio_stats;

/* The ioctl counters of an iommufd domain (iodma_vfio_get_stats(); the
 * device bind/attach/detach above count as other ioctls).  0; -EINVAL not
 * an iommufd domain. */
int iommufd_domain_stats(const struct iodma_domain *d,
			 struct iodma_vfio_stats *st);

#endif /* IODMA_BACKEND_IOMMUFD_PRIV_H */
