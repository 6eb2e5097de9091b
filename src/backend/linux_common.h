/* SPDX-License-Identifier: MIT */
/*
 * linux_common.h - helpers shared by the Linux backends (vfio.c, iommufd.c,
 * ident_book.c) and VFIO device access (vfio_device.c): error text, sysfs
 * and /dev/vfio paths, PCI address syntax.  Linux only; every backend may
 * include it, no backend includes another backend's private header.
 */
#ifndef IODMA_BACKEND_LINUX_COMMON_H
#define IODMA_BACKEND_LINUX_COMMON_H

#include <stdbool.h>

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

#endif /* IODMA_BACKEND_LINUX_COMMON_H */
