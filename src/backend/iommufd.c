/* SPDX-License-Identifier: MIT */
/*
 * iommufd.c - the iommufd backend: one IOAS on /dev/iommu per domain, VFIO
 * device cdevs attached to it (Linux >= 6.6 for the cdev; IOAS_MAP_FILE
 * from 6.13 where present).
 *
 * What the kernel is asked:
 *   open       open("/dev/iommu") or dup the caller's iommufd;
 *              IOMMU_IOAS_ALLOC; probe IOMMU_IOAS_MAP_FILE (ENOTTY = absent)
 *   get_caps   IOMMU_IOAS_IOVA_RANGES, sized in two calls (count, then
 *              fill), re-read on every call: the ranges narrow when a
 *              device attaches (its reserved regions, e.g. the x86 MSI
 *              window, leave the IOAS) and widen when it detaches
 *   map        IOMMU_IOAS_MAP at a fixed IOVA from the host VA, or
 *              IOMMU_IOAS_MAP_FILE from fd + offset where the kernel has it
 *   unmap      IOMMU_IOAS_UNMAP (the kernel returns the bytes removed)
 *   unmap_all  IOMMU_IOAS_UNMAP with iova 0, length U64_MAX (the uapi's
 *              "unmap everything" form)
 *   close      IOMMU_DESTROY of the IOAS, close the fd
 *
 * Capabilities reported:
 *   alignment     out_iova_alignment raised to the host page size (the
 *                 domain's rule: alignment >= page size);
 *   ranges        the IOAS's allowed ranges, clipped to the alignment, with
 *                 the first aligned block (IOVA 0) excluded as pci-driver
 *                 does, so that no device is ever handed IOVA 0; at most
 *                 IODMA_MAX_IOVA_RANGES (lowest first: dropping a range
 *                 only makes the domain more conservative);
 *   max_mappings  UINT32_MAX.  iommufd has no per-mapping limit (type1's
 *                 dma_entry_limit does not exist there): what limits it is
 *                 pinned memory (RLIMIT_MEMLOCK accounting), which the map
 *                 reports as -ENOMEM.  A made-up figure such as 65535 would
 *                 make the domain refuse maps the kernel takes, so the
 *                 domain's own counter is given the whole uint32_t range;
 *                 avail_mappings is not implemented (unknown);
 *   flags         IODMA_CAP_UNMAP_ALL, and IODMA_CAP_MAP_FD only when the
 *                 kernel has IOMMU_IOAS_MAP_FILE.
 *
 * Kernel errors are returned as they come.  Where IOMMU_IOAS_UNMAP differs
 * from type1v2 (and the soft backend) it is in cases the domain never
 * sends a backend (checked in the guest, Linux 6.12): a range that would
 * bisect a mapping and a range with nothing mapped both answer -ENOENT
 * (type1v2: -EINVAL, and 0 bytes).  Map over a mapping is -EEXIST for both.
 *
 * Calls come one at a time per domain (the domain's map lock); the state
 * below is immutable after open, so the device attach code may read it
 * without that lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <iodma/backend.h>
#include <iodma/domain.h>
#include <iodma/vfio.h>

#include "../util.h"
#include "iommufd_priv.h"
#include "linux_common.h"
#include "uapi_iommufd.h"

#define IOMMUFD_DEV_PATH      "/dev/iommu"
#define IOMMUFD_RANGES_TRIES  8	/* re-sizing rounds before giving up */

struct iommufd {
	int fd;			/* our iommufd (opened, or a dup of the caller's) */
	uint32_t ioas_id;	/* the domain's IOAS */
	bool map_file;		/* kernel has IOMMU_IOAS_MAP_FILE */
	/* ioctls issued (iodma_vfio_get_stats()); relaxed atomics, no lock */
	_Atomic uint64_t nr_map_ioctls;
	_Atomic uint64_t nr_unmap_ioctls;
	_Atomic uint64_t nr_other_ioctls;
};

/* ioctl(2) as 0 or a negative errno, counted in @counter. */
static int xioctl(_Atomic uint64_t *counter, int fd, unsigned long req,
		  void *arg)
{
	atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
	return ioctl(fd, req, arg) ? -errno : 0;
}

#define XIOCTL_MAP(f, fd, req, arg) \
	xioctl(&(f)->nr_map_ioctls, (fd), (req), (arg))
#define XIOCTL_UNMAP(f, fd, req, arg) \
	xioctl(&(f)->nr_unmap_ioctls, (fd), (req), (arg))
#define XIOCTL_OTHER(f, fd, req, arg) \
	xioctl(&(f)->nr_other_ioctls, (fd), (req), (arg))

/* Does the kernel know IOMMU_IOAS_MAP_FILE?  Asked with fd -1: a kernel
 * that has the ioctl rejects the argument (EBADF), one that does not
 * rejects the command number itself (ENOTTY). */
static bool iommufd_probe_map_file(struct iommufd *f)
{
	uint64_t page = os_page_size();
	struct iommu_ioas_map_file m = {
		.size = sizeof(m),
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE,
		.ioas_id = f->ioas_id,
		.fd = -1,
		.start = 0,
		.length = page,
		.iova = page,
	};
	int err = XIOCTL_OTHER(f, f->fd, IOMMU_IOAS_MAP_FILE, &m);

	if (err == 0) {
		/* Cannot happen with fd -1; undo it anyway. */
		struct iommu_ioas_unmap u = {
			.size = sizeof(u), .ioas_id = f->ioas_id,
			.iova = page, .length = page,
		};

		XIOCTL_OTHER(f, f->fd, IOMMU_IOAS_UNMAP, &u);
		return true;
	}
	return err != -ENOTTY;
}

static int iommufd_open(const void *config, void **priv)
{
	struct iodma_iommufd_opts c = IODMA_OPTS_INIT(struct iodma_iommufd_opts);
	const struct iodma_iommufd_opts *o = config ? &c : NULL;
	struct iommu_ioas_alloc a = { .size = sizeof(a) };
	struct iommufd *f;
	int fd, err;

	err = opts_copy(&c, sizeof(c), config,
			IODMA_OFFSETOFEND(struct iodma_iommufd_opts, iommufd));
	if (err)
		return err;
	if (o && o->iommufd < -1)
		return -EINVAL;
	f = iodma_calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	if (!o || o->iommufd <= 0) {
		fd = open(IOMMUFD_DEV_PATH, O_RDWR | O_CLOEXEC);
		if (fd < 0) {
			err = -errno;
			vfio_set_error("cannot open %s: %s%s", IOMMUFD_DEV_PATH,
				       strerror(-err), err == -ENOENT ?
				       " (kernel without CONFIG_IOMMUFD?)" : "");
			goto err_free;
		}
	} else {
		/* Our own reference: the caller's fd stays the caller's. */
		fd = fcntl(o->iommufd, F_DUPFD_CLOEXEC, 0);
		if (fd < 0) {
			err = -errno;
			vfio_set_error("iommufd %d: %s", o->iommufd,
				       strerror(-err));
			goto err_free;
		}
	}
	err = XIOCTL_OTHER(f, fd, IOMMU_IOAS_ALLOC, &a);
	if (err) {
		vfio_set_error("IOMMU_IOAS_ALLOC: %s%s", strerror(-err),
			       err == -ENOTTY ? " (not an iommufd)" : "");
		goto err_close;
	}
	f->fd = fd;
	f->ioas_id = a.out_ioas_id;
	f->map_file = iommufd_probe_map_file(f);
	*priv = f;
	return 0;

err_close:
	close(fd);
err_free:
	iodma_free(f);
	return err;
}

static void iommufd_close(void *priv)
{
	struct iommufd *f = priv;
	struct iommu_destroy d = { .size = sizeof(d), .id = f->ioas_id };

	/* EBUSY while a device is still attached: the kernel then frees the
	 * IOAS with the last reference (the iommufd and its devices). */
	XIOCTL_OTHER(f, f->fd, IOMMU_DESTROY, &d);
	close(f->fd);
	iodma_free(f);
}

/*
 * Read the IOAS's allowed ranges into a new array (*@out, iodma_free it):
 * first with no array to learn the count (-EMSGSIZE and num_iovas set),
 * then with an array that large; again if a device attached in between.
 */
static int iommufd_read_ranges(struct iommufd *f, struct iommu_iova_range **out,
			       uint32_t *nr, uint64_t *kalign)
{
	struct iommu_iova_range *r = NULL, *nr_r;
	uint32_t cap = 0;
	int err = -EAGAIN;

	for (int i = 0; i < IOMMUFD_RANGES_TRIES; i++) {
		struct iommu_ioas_iova_ranges q = {
			.size = sizeof(q),
			.ioas_id = f->ioas_id,
			.num_iovas = cap,
			.allowed_iovas = (uintptr_t)r,
		};

		err = XIOCTL_OTHER(f, f->fd, IOMMU_IOAS_IOVA_RANGES, &q);
		if (err == 0 && q.num_iovas <= cap) {
			*out = r;
			*nr = q.num_iovas;
			*kalign = q.out_iova_alignment;
			return 0;
		}
		if (err && err != -EMSGSIZE)
			break;
		/* Too small: q.num_iovas is the count needed. */
		cap = q.num_iovas;
		nr_r = iodma_realloc(r, (size_t)cap * sizeof(*r));
		if (!nr_r) {
			err = -ENOMEM;
			break;
		}
		r = nr_r;
		err = -EAGAIN;
	}
	iodma_free(r);
	if (err != -ENOMEM)
		vfio_set_error("IOMMU_IOAS_IOVA_RANGES: %s", strerror(-err));
	return err;
}

/* Clip the kernel's ranges (inclusive last) to @align into @caps, without
 * [0, align): see the file comment.
 *
 * Top of the space: on Linux 6.12 with virtio-iommu (whose IOAS range ends
 * at 0xffffffffffffffff), device writes into a mapping that ends exactly at
 * 2^64 did not reach memory past its first 256 KiB, with no fault logged
 * (seen by the virtio-blk-pci guest test with its bounce pool there).  type1
 * has a like defect (src/backend/vfio.c), so a range reaching 2^64 is cut
 * one alignment unit short here too. */
static void iommufd_ranges_to_caps(const struct iommu_iova_range *kr,
				   uint32_t n, uint64_t align,
				   struct iodma_caps *caps)
{
	caps->nr_ranges = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t start, len;

		if (caps->nr_ranges == IODMA_MAX_IOVA_RANGES)
			break;
		if (kr[i].start > kr[i].last || kr[i].last < align)
			continue;
		start = align_up(IODMA_MAX(kr[i].start, align), align);
		if (start == 0)
			continue;	/* rounding up overflowed */
		if (kr[i].last == UINT64_MAX) {
			/* One unit short of 2^64: see "top of the space". */
			if (start > UINT64_MAX - 2 * align + 1)
				continue;
			len = 0 - start - align;
		} else {
			uint64_t end = align_down(kr[i].last + 1, align);

			if (end <= start)
				continue;
			len = end - start;
		}
		caps->ranges[caps->nr_ranges].iova = start;
		caps->ranges[caps->nr_ranges++].len = len;
	}
}

static int iommufd_get_caps(void *priv, struct iodma_caps *caps)
{
	struct iommufd *f = priv;
	struct iommu_iova_range *kr = NULL;
	uint64_t align = os_page_size(), kalign = 0;
	uint32_t n = 0;
	int err;

	err = iommufd_read_ranges(f, &kr, &n, &kalign);
	if (err)
		return err;
	/* The uapi keeps out_iova_alignment <= PAGE_SIZE; a larger one is
	 * honoured anyway, rounded up to a power of two. */
	if (kalign > align) {
		if (kalign > (1ull << 63)) {
			iodma_free(kr);
			return -EINVAL;
		}
		align = is_pow2(kalign) ? kalign :
			1ull << (ilog2_u64(kalign) + 1);
	}
	memset(caps, 0, sizeof(*caps));
	caps->alignment = align;
	caps->max_mappings = UINT32_MAX;
	caps->flags = IODMA_CAP_UNMAP_ALL | (f->map_file ? IODMA_CAP_MAP_FD : 0);
	iommufd_ranges_to_caps(kr, n, align, caps);
	iodma_free(kr);
	return 0;
}

static uint32_t iommufd_map_flags(uint32_t perm)
{
	uint32_t flags = IOMMU_IOAS_MAP_FIXED_IOVA;

	if (perm & IODMA_PERM_READ)
		flags |= IOMMU_IOAS_MAP_READABLE;
	if (perm & IODMA_PERM_WRITE)
		flags |= IOMMU_IOAS_MAP_WRITEABLE;
	return flags;
}

/* IOMMU_IOAS_MAP_FILE of ev->fd + ev->offset. */
static int iommufd_map_file(struct iommufd *f, const struct iodma_map_event *ev,
			    uint32_t flags)
{
	struct iommu_ioas_map_file m = {
		.size = sizeof(m),
		.flags = flags,
		.ioas_id = f->ioas_id,
		.fd = ev->fd,
		.start = ev->offset,
		.length = ev->len,
		.iova = ev->iova,
	};

	return XIOCTL_MAP(f, f->fd, IOMMU_IOAS_MAP_FILE, &m);
}

/* IOMMU_IOAS_MAP of ev->va. */
static int iommufd_map_va(struct iommufd *f, const struct iodma_map_event *ev,
			  uint32_t flags)
{
	struct iommu_ioas_map m = {
		.size = sizeof(m),
		.flags = flags,
		.ioas_id = f->ioas_id,
		.user_va = (uintptr_t)ev->va,
		.length = ev->len,
		.iova = ev->iova,
	};

	return XIOCTL_MAP(f, f->fd, IOMMU_IOAS_MAP, &m);
}

/*
 * fd-backed memory goes by fd where the kernel can (the mapping then does
 * not depend on the VA staying mapped); the kernel pins only memfd-like
 * files that way (EINVAL for others), so such memory falls back to its VA
 * when it has one.  Any other answer (-EEXIST, -ENOMEM, ...) is final.
 */
static int iommufd_map(void *priv, const struct iodma_map_event *ev)
{
	struct iommufd *f = priv;
	uint32_t flags = iommufd_map_flags(ev->perm);
	int err;

	if (ev->fd >= 0 && f->map_file) {
		err = iommufd_map_file(f, ev, flags);
		if (!err || !ev->va || (err != -EINVAL &&
					err != -EOPNOTSUPP && err != -EBADF))
			return err;
	}
	if (!ev->va)
		return -EOPNOTSUPP;	/* fd-only and no IOAS_MAP_FILE */
	return iommufd_map_va(f, ev, flags);
}

/*
 * IOMMU_IOAS_UNMAP removes every mapping inside the range and refuses one
 * crossing an end, like the domain's contract.  The length it reports is
 * checked: it can only be smaller than asked when the kernel held less than
 * the domain's books say; the range is empty in the kernel either way, so
 * that is reported (the true byte count), not failed.  More than asked
 * would be a broken kernel: -EIO.
 */
static int iommufd_unmap_range(struct iommufd *f, uint64_t iova, uint64_t len,
			       uint64_t *unmapped)
{
	struct iommu_ioas_unmap u = {
		.size = sizeof(u), .ioas_id = f->ioas_id,
		.iova = iova, .length = len,
	};
	int err = XIOCTL_UNMAP(f, f->fd, IOMMU_IOAS_UNMAP, &u);

	if (err)
		return err;
	if (u.length > len)
		return -EIO;
	*unmapped = u.length;
	return 0;
}

static int iommufd_unmap(void *priv, uint64_t iova, uint64_t len,
			 uint64_t *unmapped)
{
	return iommufd_unmap_range(priv, iova, len, unmapped);
}

static int iommufd_unmap_all(void *priv, uint64_t *unmapped)
{
	int err = iommufd_unmap_range(priv, 0, UINT64_MAX, unmapped);

	/* Older kernels answer ENOENT when nothing was mapped. */
	if (err == -ENOENT) {
		*unmapped = 0;
		err = 0;
	}
	return err;
}

/* Dirty tracking on an IOAS needs a HWPT allocated with
 * IOMMU_HWPT_ALLOC_DIRTY_TRACKING on hardware whose IOMMU_GET_HW_INFO
 * reports IOMMU_HW_CAP_DIRTY_TRACKING (Linux 6.7); this backend attaches
 * devices to an IOAS's automatic domain, which logs nothing: say so,
 * rather than log only half of the writes. */
static int iommufd_dirty_start(void *priv, uint64_t pgsize)
{
	(void)priv;
	(void)pgsize;
	vfio_set_error("iommufd: dirty tracking needs a dirty-tracking HWPT, which this backend "
		       "does not allocate (IOMMU_HWPT_ALLOC_DIRTY_TRACKING)");
	return -EOPNOTSUPP;
}

static void iommufd_dirty_stop(void *priv)
{
	(void)priv; /* never started */
}

static int iommufd_dirty_get(void *priv, uint64_t iova, uint64_t len,
			     uint64_t pgsize, uint64_t *bitmap)
{
	(void)priv, (void)iova, (void)len, (void)pgsize, (void)bitmap;
	return -EOPNOTSUPP; /* never started */
}

static int iommufd_unmap_dirty(void *priv, uint64_t iova, uint64_t len,
			       uint64_t pgsize, uint64_t *bitmap, uint64_t *unmapped)
{
	(void)pgsize, (void)bitmap; /* never started: nothing to report */
	return iommufd_unmap(priv, iova, len, unmapped);
}

static const struct iodma_backend_ops iommufd_ops = {
	.version = IODMA_BACKEND_OPS_VERSION,
	.name = "iommufd",
	.open = iommufd_open,
	.close = iommufd_close,
	.get_caps = iommufd_get_caps,
	.map = iommufd_map,
	.unmap = iommufd_unmap,
	.unmap_all = iommufd_unmap_all,
	.dirty_start = iommufd_dirty_start,
	.dirty_stop = iommufd_dirty_stop,
	.dirty_get = iommufd_dirty_get,
	.unmap_dirty = iommufd_unmap_dirty,
};

IODMA_EXPORT const struct iodma_backend_ops *iodma_backend_iommufd(void)
{
	return &iommufd_ops;
}

/* ---- VFIO device cdev attach (iommufd_priv.h) ----------------------------- */

bool iommufd_domain_is(const struct iodma_domain *d)
{
	return iodma_backend_priv(d, &iommufd_ops) != NULL;
}

int iommufd_domain_attach_device(struct iodma_domain *d, int devfd,
				 uint32_t *dev_id)
{
	struct vfio_device_bind_iommufd bind;
	struct vfio_device_attach_iommufd_pt at;
	struct iommufd *f;
	int err;

	if (devfd < 0)
		return -EBADF;
	if (!iommufd_domain_is(d) || !dev_id)
		return -EINVAL;
	f = iodma_backend_priv(d, &iommufd_ops);

	memset(&bind, 0, sizeof(bind));
	bind.argsz = IODMA_VFIO_BIND_IOMMUFD_MINSZ;
	bind.iommufd = f->fd;
	err = XIOCTL_OTHER(f, devfd, VFIO_DEVICE_BIND_IOMMUFD, &bind);
	if (err) {
		vfio_set_error("VFIO_DEVICE_BIND_IOMMUFD: %s%s", strerror(-err),
			       err == -EBUSY ? " (close the device's VFIO group "
			       "and container fds first)" : "");
		return err;
	}

	memset(&at, 0, sizeof(at));
	at.argsz = IODMA_VFIO_ATTACH_PT_MINSZ;
	at.pt_id = f->ioas_id;
	err = XIOCTL_OTHER(f, devfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at);
	if (err) {
		vfio_set_error("VFIO_DEVICE_ATTACH_IOMMUFD_PT (IOAS %u): %s",
			       f->ioas_id, strerror(-err));
		return err;
	}

	/* The device's reserved regions left the IOAS: re-read the ranges. */
	err = iodma_domain_refresh_caps(d);
	if (err) {
		struct vfio_device_detach_iommufd_pt dt;

		vfio_set_error("iommufd attach: domain caps refresh: %s%s",
			       strerror(-err), err == -EBUSY ?
			       " (live mappings where the device's IOVA ranges "
			       "no longer reach)" : "");
		memset(&dt, 0, sizeof(dt));
		dt.argsz = IODMA_VFIO_DETACH_PT_MINSZ;
		XIOCTL_OTHER(f, devfd, VFIO_DEVICE_DETACH_IOMMUFD_PT, &dt);
		return err;
	}
	*dev_id = bind.out_devid;
	return 0;
}

void iommufd_domain_detach_device(struct iodma_domain *d, int devfd,
				  uint32_t dev_id)
{
	struct vfio_device_detach_iommufd_pt dt;
	struct iommufd *f;

	(void)dev_id;
	if (devfd < 0 || !iommufd_domain_is(d))
		return;
	f = iodma_backend_priv(d, &iommufd_ops);
	memset(&dt, 0, sizeof(dt));
	dt.argsz = IODMA_VFIO_DETACH_PT_MINSZ;
	if (XIOCTL_OTHER(f, devfd, VFIO_DEVICE_DETACH_IOMMUFD_PT, &dt) == 0)
		iodma_domain_refresh_caps(d);	/* ranges may widen again */
}

int iommufd_domain_stats(const struct iodma_domain *d,
			 struct iodma_vfio_stats *st)
{
	struct iommufd *f;

	if (!iommufd_domain_is(d) || !st)
		return -EINVAL;
	f = iodma_backend_priv(d, &iommufd_ops);
	st->map_ioctls = atomic_load_explicit(&f->nr_map_ioctls,
					      memory_order_relaxed);
	st->unmap_ioctls = atomic_load_explicit(&f->nr_unmap_ioctls,
						memory_order_relaxed);
	st->other_ioctls = atomic_load_explicit(&f->nr_other_ioctls,
						memory_order_relaxed);
	return 0;
}
