/* SPDX-License-Identifier: MIT */
/*
 * vfio_device.c - VFIO PCI device access (iodma/vfio.h): open a device through a
 * vfio (type1 group) or iommufd (device cdev) domain, regions and BARs,
 * config space, bus mastering, reset, interrupts to eventfds, and the BARs
 * as MMIO windows of an iodma_dev.
 *
 * Linux code: it makes ioctls on the device fd.  Not a backend: it sits
 * above the vfio and iommufd backends and uses both private headers.  A
 * device's state is written only by open, map_bar, irq_* and close, which
 * the header marks not thread-safe per device; reads of the region table
 * are safe from any thread.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/vfio.h>

#include <iodma/dma.h>
#include <iodma/domain.h>
#include <iodma/vfio.h>

#include "../util.h"
#include "iommufd_priv.h"
#include "linux_common.h"
#include "vfio_priv.h"

#define PCI_COMMAND          0x04
#define PCI_COMMAND_MASTER   0x4
#define PCI_BASE_ADDRESS_0   0x10
#define PCI_BAR_IO           0x1
#define PCI_BAR_TYPE_64      0x4	/* bits 2:1 == 10b */
#define PCI_BAR_MEM_MASK     (~0xfull)
#define VDEV_CACHED_REGIONS  9	/* BAR0-5, ROM, config, VGA */
#define IRQ_NONE_ENABLED     (-1)

struct iodma_vfio_device {
	struct iodma_domain *d;
	int fd;				/* device fd (group's or cdev) */
	bool cdev;			/* opened through iommufd */
	uint32_t dev_id;		/* iommufd device id */
	uint32_t flags;			/* VFIO_DEVICE_FLAGS_* */
	uint32_t nr_regions;
	uint32_t nr_irqs;
	struct iodma_vfio_region_info regions[VDEV_CACHED_REGIONS];
	struct {
		void *va;
		uint64_t len;
	} bars[IODMA_VFIO_NR_BARS];	/* mmapped BARs */
	int irq_type;			/* enabled index, or IRQ_NONE_ENABLED */
};

/* Fetch region @index from the kernel. */
static int region_query(int fd, uint32_t index,
			struct iodma_vfio_region_info *out)
{
	struct vfio_region_info ri = { .argsz = sizeof(ri), .index = index };

	if (ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, &ri) < 0) {
		int err = -errno;

		vfio_set_error("vfio: VFIO_DEVICE_GET_REGION_INFO(%u): %s",
			       index, strerror(errno));
		return err;
	}
	out->index = index;
	out->flags = 0;
	if (ri.flags & VFIO_REGION_INFO_FLAG_READ)
		out->flags |= IODMA_VFIO_REGION_READ;
	if (ri.flags & VFIO_REGION_INFO_FLAG_WRITE)
		out->flags |= IODMA_VFIO_REGION_WRITE;
	if (ri.flags & VFIO_REGION_INFO_FLAG_MMAP)
		out->flags |= IODMA_VFIO_REGION_MMAP;
	out->size = ri.size;
	out->offset = ri.offset;
	return 0;
}

/* The cdev name "vfioN" under sysfs .../BDF/vfio-dev/, into @name. */
static int find_cdev(const char *bdf, char *name, size_t len)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *dir;
	int err = -ENOENT;

	snprintf(path, sizeof(path), "%s/bus/pci/devices/%s/vfio-dev",
		 vfio_sysfs_root(), bdf);
	dir = opendir(path);
	if (!dir) {
		vfio_set_error("vfio: %s: %s (device not bound to vfio-pci, or the kernel lacks "
			       "CONFIG_VFIO_DEVICE_CDEV)", path, strerror(errno));
		return -ENOENT;
	}
	while ((de = readdir(dir)) != NULL) {
		if (!strncmp(de->d_name, "vfio", 4) && de->d_name[4] >= '0' &&
		    de->d_name[4] <= '9') {
			snprintf(name, len, "%s", de->d_name);
			err = 0;
			break;
		}
	}
	closedir(dir);
	if (err)
		vfio_set_error("vfio: no vfioN entry in %s", path);
	return err;
}

/* Open the device fd: group path (type1) or cdev (iommufd). */
static int device_fd_open(struct iodma_vfio_device *vd, const char *bdf)
{
	char name[NAME_MAX + 1], path[PATH_MAX];
	int group, gfd, fd, err;

	if (vfio_domain_is(vd->d)) {
		err = iodma_vfio_group_of(bdf, &group);
		if (err)
			return err;
		err = vfio_domain_group_fd(vd->d, group, &gfd);
		if (err)
			return err;
		fd = ioctl(gfd, VFIO_GROUP_GET_DEVICE_FD, bdf);
		if (fd < 0) {
			err = -errno;
			vfio_set_error("vfio: VFIO_GROUP_GET_DEVICE_FD(%s): %s", bdf,
				       strerror(errno));
			return err;
		}
		vd->fd = fd;
		return 0;
	}
	err = find_cdev(bdf, name, sizeof(name));
	if (err)
		return err;
	snprintf(path, sizeof(path), "%s/devices/%s", vfio_dev_dir(), name);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		vfio_set_error("vfio: open %s: %s", path, strerror(errno));
		return err;
	}
	err = iommufd_domain_attach_device(vd->d, fd, &vd->dev_id);
	if (err) {
		if (!*iodma_vfio_last_error())
			vfio_set_error("vfio: attaching %s to the iommufd IOAS: %s",
				       path, strerror(-err));
		close(fd);
		return err;
	}
	vd->fd = fd;
	vd->cdev = true;
	return 0;
}

static void device_fd_close(struct iodma_vfio_device *vd)
{
	if (vd->cdev)
		iommufd_domain_detach_device(vd->d, vd->fd, vd->dev_id);
	close(vd->fd);
	vd->fd = -1;
}

IODMA_EXPORT int iodma_vfio_device_open(struct iodma_domain *d, const char *bdf,
					struct iodma_vfio_device **out)
{
	struct vfio_device_info info = { .argsz = sizeof(info) };
	struct iodma_vfio_device *vd;
	int err;

	vfio_set_error("%s", "");
	if (!d || !out || !vfio_bdf_valid(bdf) ||
	    (!vfio_domain_is(d) && !iommufd_domain_is(d))) {
		vfio_set_error("vfio: device_open needs a vfio or iommufd domain and a PCI address DDDD:BB:DD.F");
		return -EINVAL;
	}
	vd = iodma_calloc(1, sizeof(*vd));
	if (!vd)
		return -ENOMEM;
	vd->d = d;
	vd->fd = -1;
	vd->irq_type = IRQ_NONE_ENABLED;
	err = device_fd_open(vd, bdf);
	if (err)
		goto err_free;
	if (ioctl(vd->fd, VFIO_DEVICE_GET_INFO, &info) < 0) {
		err = -errno;
		vfio_set_error("vfio: VFIO_DEVICE_GET_INFO(%s): %s", bdf,
			       strerror(errno));
		goto err_close;
	}
	if (!(info.flags & VFIO_DEVICE_FLAGS_PCI)) {
		err = -EINVAL;
		vfio_set_error("vfio: %s is not a vfio-pci device", bdf);
		goto err_close;
	}
	vd->flags = info.flags;
	vd->nr_regions = info.num_regions;
	vd->nr_irqs = info.num_irqs;
	for (uint32_t i = 0; i < VDEV_CACHED_REGIONS; i++) {
		vd->regions[i].index = i;
		if (i < vd->nr_regions && region_query(vd->fd, i, &vd->regions[i]))
			memset(&vd->regions[i], 0, sizeof(vd->regions[i]));
		vd->regions[i].index = i;
	}
	*out = vd;
	return 0;

err_close:
	device_fd_close(vd);
err_free:
	iodma_free(vd);
	return err;
}

IODMA_EXPORT void iodma_vfio_device_close(struct iodma_vfio_device *vd)
{
	if (!vd)
		return;
	if (vd->irq_type != IRQ_NONE_ENABLED)
		iodma_vfio_irq_disable(vd);
	for (uint32_t i = 0; i < IODMA_VFIO_NR_BARS; i++) {
		if (vd->bars[i].va)
			munmap(vd->bars[i].va, vd->bars[i].len);
	}
	device_fd_close(vd);
	iodma_free(vd);
}

IODMA_EXPORT int iodma_vfio_device_fd(const struct iodma_vfio_device *vd)
{
	return vd ? vd->fd : -EINVAL;
}

IODMA_EXPORT int iodma_vfio_device_counts(const struct iodma_vfio_device *vd,
					  uint32_t *nr_regions,
					  uint32_t *nr_irqs)
{
	if (!vd)
		return -EINVAL;
	if (nr_regions)
		*nr_regions = vd->nr_regions;
	if (nr_irqs)
		*nr_irqs = vd->nr_irqs;
	return 0;
}

IODMA_EXPORT int iodma_vfio_region_info(struct iodma_vfio_device *vd,
					uint32_t index,
					struct iodma_vfio_region_info *info)
{
	if (!vd || !info || index >= vd->nr_regions)
		return -EINVAL;
	if (index < VDEV_CACHED_REGIONS) {
		*info = vd->regions[index];
		return 0;
	}
	return region_query(vd->fd, index, info);
}

IODMA_EXPORT int iodma_vfio_map_bar(struct iodma_vfio_device *vd, uint32_t bar,
				    void **va, uint64_t *len)
{
	const struct iodma_vfio_region_info *ri;
	int prot = 0;
	void *p;

	if (!vd || !va || bar >= IODMA_VFIO_NR_BARS || bar >= vd->nr_regions)
		return -EINVAL;
	if (vd->bars[bar].va)
		goto out;
	ri = &vd->regions[bar];
	if (ri->size == 0) {
		vfio_set_error("vfio: BAR %u is not implemented", bar);
		return -ENOENT;
	}
	if (!(ri->flags & IODMA_VFIO_REGION_MMAP) || ri->size > SIZE_MAX) {
		vfio_set_error("vfio: BAR %u cannot be mmapped: use iodma_vfio_region_read/write", bar);
		return -EOPNOTSUPP;
	}
	if (ri->flags & IODMA_VFIO_REGION_READ)
		prot |= PROT_READ;
	if (ri->flags & IODMA_VFIO_REGION_WRITE)
		prot |= PROT_WRITE;
	p = mmap(NULL, (size_t)ri->size, prot, MAP_SHARED, vd->fd,
		 (off_t)ri->offset);
	if (p == MAP_FAILED) {
		int err = -errno;

		vfio_set_error("vfio: mmap of BAR %u (%#llx bytes): %s%s", bar,
			       (unsigned long long)ri->size, strerror(errno),
			       errno == EINVAL ? " (the MSI-X table may be unmappable here: "
			       "use region read/write)" : "");
		return err;
	}
	vd->bars[bar].va = p;
	vd->bars[bar].len = ri->size;
out:
	*va = vd->bars[bar].va;
	if (len)
		*len = vd->bars[bar].len;
	return 0;
}

/* Region @index, bounds-checked for [offset, offset + len). */
static int region_for_io(struct iodma_vfio_device *vd, uint32_t index,
			 uint64_t offset, size_t len, uint32_t need,
			 struct iodma_vfio_region_info *ri)
{
	int err;

	if (!vd || len == 0)
		return -EINVAL;
	err = iodma_vfio_region_info(vd, index, ri);
	if (err)
		return err;
	if (!range_valid(offset, len) || ri->size == 0 ||
	    !range_contains(0, ri->size, offset, len))
		return -EINVAL;
	if (!(ri->flags & need))
		return -EACCES;
	return 0;
}

IODMA_EXPORT int iodma_vfio_region_read(struct iodma_vfio_device *vd,
					uint32_t index, uint64_t offset,
					void *buf, size_t len)
{
	struct iodma_vfio_region_info ri;
	ssize_t n;
	int err;

	if (!buf)
		return -EINVAL;
	err = region_for_io(vd, index, offset, len, IODMA_VFIO_REGION_READ, &ri);
	if (err)
		return err;
	n = pread(vd->fd, buf, len, (off_t)(ri.offset + offset));
	if (n < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EIO;
}

IODMA_EXPORT int iodma_vfio_region_write(struct iodma_vfio_device *vd,
					 uint32_t index, uint64_t offset,
					 const void *buf, size_t len)
{
	struct iodma_vfio_region_info ri;
	ssize_t n;
	int err;

	if (!buf)
		return -EINVAL;
	err = region_for_io(vd, index, offset, len, IODMA_VFIO_REGION_WRITE, &ri);
	if (err)
		return err;
	n = pwrite(vd->fd, buf, len, (off_t)(ri.offset + offset));
	if (n < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EIO;
}

IODMA_EXPORT int iodma_vfio_config_read(struct iodma_vfio_device *vd,
					uint32_t offset, void *buf, size_t len)
{
	return iodma_vfio_region_read(vd, IODMA_VFIO_REGION_CONFIG, offset,
				      buf, len);
}

IODMA_EXPORT int iodma_vfio_config_write(struct iodma_vfio_device *vd,
					 uint32_t offset, const void *buf,
					 size_t len)
{
	return iodma_vfio_region_write(vd, IODMA_VFIO_REGION_CONFIG, offset,
				       buf, len);
}

IODMA_EXPORT int iodma_vfio_set_bus_master(struct iodma_vfio_device *vd,
					   bool enable)
{
	uint16_t cmd;
	int err;

	err = iodma_vfio_config_read(vd, PCI_COMMAND, &cmd, sizeof(cmd));
	if (err)
		return err;
	if (enable)
		cmd |= PCI_COMMAND_MASTER;
	else
		cmd &= (uint16_t)~PCI_COMMAND_MASTER;
	return iodma_vfio_config_write(vd, PCI_COMMAND, &cmd, sizeof(cmd));
}

IODMA_EXPORT int iodma_vfio_reset(struct iodma_vfio_device *vd)
{
	if (!vd)
		return -EINVAL;
	if (!(vd->flags & VFIO_DEVICE_FLAGS_RESET)) {
		vfio_set_error("vfio: the device has no reset method");
		return -EOPNOTSUPP;
	}
	if (ioctl(vd->fd, VFIO_DEVICE_RESET) < 0) {
		int err = -errno;

		vfio_set_error("vfio: VFIO_DEVICE_RESET: %s", strerror(errno));
		return err;
	}
	return 0;
}

static bool irq_type_valid(enum iodma_vfio_irq_type t)
{
	return t == IODMA_VFIO_IRQ_INTX || t == IODMA_VFIO_IRQ_MSI ||
	       t == IODMA_VFIO_IRQ_MSIX;
}

IODMA_EXPORT int iodma_vfio_irq_info(struct iodma_vfio_device *vd,
				     enum iodma_vfio_irq_type type,
				     uint32_t *count)
{
	struct vfio_irq_info ii = { .argsz = sizeof(ii) };

	if (!vd || !count || !irq_type_valid(type))
		return -EINVAL;
	if ((uint32_t)type >= vd->nr_irqs) {
		*count = 0;
		return 0;
	}
	ii.index = (uint32_t)type;
	if (ioctl(vd->fd, VFIO_DEVICE_GET_IRQ_INFO, &ii) < 0) {
		int err = -errno;

		vfio_set_error("vfio: VFIO_DEVICE_GET_IRQ_INFO(%d): %s", type,
			       strerror(errno));
		return err;
	}
	*count = (ii.flags & VFIO_IRQ_INFO_EVENTFD) ? ii.count : 0;
	return 0;
}

/* VFIO_DEVICE_SET_IRQS on @index: @nr eventfds, or disable (nr == 0). */
static int set_irqs(struct iodma_vfio_device *vd, uint32_t index, uint32_t nr,
		    const int *eventfds)
{
	size_t sz = sizeof(struct vfio_irq_set) + (size_t)nr * sizeof(int32_t);
	struct vfio_irq_set *s = iodma_calloc(1, sz);
	int err = 0;

	if (!s)
		return -ENOMEM;
	s->argsz = (uint32_t)sz;
	s->flags = (nr ? VFIO_IRQ_SET_DATA_EVENTFD : VFIO_IRQ_SET_DATA_NONE) |
		   VFIO_IRQ_SET_ACTION_TRIGGER;
	s->index = index;
	s->start = 0;
	s->count = nr;
	for (uint32_t i = 0; i < nr; i++)
		((int32_t *)s->data)[i] = eventfds[i];
	if (ioctl(vd->fd, VFIO_DEVICE_SET_IRQS, s) < 0) {
		err = -errno;
		vfio_set_error("vfio: VFIO_DEVICE_SET_IRQS(index %u, %u vectors): %s",
			       index, nr, strerror(errno));
	}
	iodma_free(s);
	return err;
}

IODMA_EXPORT int iodma_vfio_irq_enable(struct iodma_vfio_device *vd,
				       enum iodma_vfio_irq_type type,
				       uint32_t nr, const int *eventfds,
				       enum iodma_vfio_irq_type *used)
{
	static const enum iodma_vfio_irq_type order[] = {
		IODMA_VFIO_IRQ_MSIX, IODMA_VFIO_IRQ_MSI, IODMA_VFIO_IRQ_INTX,
	};
	enum iodma_vfio_irq_type pick = type;
	uint32_t count = 0;
	int err;

	if (!vd || nr == 0 || !eventfds ||
	    (type != IODMA_VFIO_IRQ_AUTO && !irq_type_valid(type)))
		return -EINVAL;
	for (uint32_t i = 0; i < nr; i++) {
		if (eventfds[i] < 0)
			return -EINVAL;
	}
	if (type == IODMA_VFIO_IRQ_AUTO) {
		for (size_t i = 0; i < IODMA_ARRAY_SIZE(order); i++) {
			err = iodma_vfio_irq_info(vd, order[i], &count);
			if (err)
				return err;
			if (count) {
				pick = order[i];
				break;
			}
		}
	} else {
		err = iodma_vfio_irq_info(vd, type, &count);
		if (err)
			return err;
	}
	if (count == 0) {
		vfio_set_error("vfio: the device has no interrupt of that kind");
		return -ENOENT;
	}
	nr = IODMA_MIN(nr, count);
	if (vd->irq_type != IRQ_NONE_ENABLED) {
		err = iodma_vfio_irq_disable(vd);
		if (err)
			return err;
	}
	err = set_irqs(vd, (uint32_t)pick, nr, eventfds);
	if (err)
		return err;
	vd->irq_type = (int)pick;
	if (used)
		*used = pick;
	return 0;
}

IODMA_EXPORT int iodma_vfio_irq_disable(struct iodma_vfio_device *vd)
{
	int err;

	if (!vd)
		return -EINVAL;
	if (vd->irq_type == IRQ_NONE_ENABLED)
		return 0;
	err = set_irqs(vd, (uint32_t)vd->irq_type, 0, NULL);
	if (!err)
		vd->irq_type = IRQ_NONE_ENABLED;
	return err;
}

IODMA_EXPORT int iodma_vfio_register_bars(struct iodma_vfio_device *vd,
					  struct iodma_dev *dev)
{
	int added = 0, err;

	if (!vd || !dev)
		return -EINVAL;
	for (uint32_t bar = 0; bar < IODMA_VFIO_NR_BARS && bar < vd->nr_regions;
	     bar++) {
		const struct iodma_vfio_region_info *ri = &vd->regions[bar];
		uint32_t lo, hi = 0;
		uint64_t addr;
		void *va;
		bool is64;

		err = iodma_vfio_config_read(vd, PCI_BASE_ADDRESS_0 + 4 * bar,
					     &lo, sizeof(lo));
		if (err)
			return err;
		if (lo & PCI_BAR_IO)
			continue;
		is64 = (lo & 0x6) == PCI_BAR_TYPE_64;
		if (is64 && bar + 1 < IODMA_VFIO_NR_BARS) {
			err = iodma_vfio_config_read(vd, PCI_BASE_ADDRESS_0 + 4 * (bar + 1),
						     &hi, sizeof(hi));
			if (err)
				return err;
		}
		addr = ((uint64_t)hi << 32) | (lo & PCI_BAR_MEM_MASK);
		if (ri->size && (ri->flags & IODMA_VFIO_REGION_MMAP)) {
			err = iodma_vfio_map_bar(vd, bar, &va, NULL);
			if (err)
				return err;
			err = iodma_dev_add_mmio(dev, addr, ri->size, va);
			if (err) {
				vfio_set_error("vfio: BAR %u at %#llx: iodma_dev_add_mmio: %s",
					       bar, (unsigned long long)addr,
					       iodma_strerror(err));
				return err;
			}
			added++;
		}
		if (is64)
			bar++; /* the upper half is not a BAR of its own */
	}
	return added;
}

IODMA_EXPORT int iodma_vfio_get_stats(const struct iodma_domain *d,
				      struct iodma_vfio_stats *st)
{
	struct iodma_vfio_stats s = IODMA_STRUCT_INIT(struct iodma_vfio_stats);
	int err;

	if (!d || !st)
		return -EINVAL;
	if (iommufd_domain_is(d))
		err = iommufd_domain_stats(d, &s);
	else
		err = vfio_domain_stats(d, &s);
	if (err)
		return err;
	return out_copy(st, &s, sizeof(s),
			IODMA_OFFSETOFEND(struct iodma_vfio_stats, other_ioctls));
}
