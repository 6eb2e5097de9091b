/* SPDX-License-Identifier: MIT */
/*
 * vfio.c - the VFIO type1v2 backend (and VFIO no-IOMMU mode).
 *
 * One container (/dev/vfio/vfio) shared by one or more groups
 * (/dev/vfio/N).  Opening checks VFIO_GET_API_VERSION and
 * VFIO_CHECK_EXTENSION(VFIO_TYPE1v2_IOMMU); each group must be viable
 * (VFIO_GROUP_GET_STATUS) and is added with VFIO_GROUP_SET_CONTAINER; the
 * first group is followed by VFIO_SET_IOMMU.
 *
 * Capabilities: VFIO_IOMMU_GET_INFO, called with the argsz we have and
 * again with the argsz the kernel asks for (the buffer is kept and grown,
 * so later calls make one ioctl), then the capability chain is walked:
 *   IOVA_RANGE  inclusive [start, end] -> [iova, iova + len), aligned
 *               inwards to the alignment, page 0 dropped (pci-driver does
 *               the same); beyond IODMA_MAX_IOVA_RANGES the smallest
 *               ranges are dropped (never merged: that would make holes
 *               look valid) and iodma_vfio_last_error() says so;
 *   MIGRATION   IODMA_CAP_DIRTY_TRACKING;
 *   DMA_AVAIL   mappings the container still takes, read live.
 * Top of the space: type1 before Linux 6.18 computes dma->iova + dma->size
 * in 64 bits, so a mapping that ends at 2^64 wraps to 0 and breaks the
 * search of UNMAP_DMA (observed on 6.12 with virtio-iommu, whose range ends
 * at 0xffffffffffffffff: the unmap of that mapping, and of its neighbours,
 * removes 0 bytes).  A range reaching 2^64 is therefore cut one alignment
 * unit short.
 * alignment = lowest set bit of iova_pgsizes.  max_mappings = DMA_AVAIL now
 * + our live mappings, where live = avail_base - DMA_AVAIL now and
 * avail_base is DMA_AVAIL when the IOMMU model was set (no mapping of ours
 * yet).  Without DMA_AVAIL (kernels before 5.10) 65535 is assumed.
 *
 * Before the first group there is no IOMMU to ask: get_caps reports a
 * placeholder (alignment = page, [page, 2^39) minus the MSI window
 * 0xfee00000-0xfeefffff) that the first group's refresh narrows or widens
 * (the domain reserves what was removed; the IOVA allocator keeps serving
 * only the placeholder's space).
 *
 * map / unmap are VFIO_IOMMU_MAP_DMA / UNMAP_DMA; the kernel's errors pass
 * through (-EEXIST over a mapping, -ENOSPC at dma_entry_limit).  UNMAP_DMA
 * reports the bytes it removed: anything but the range the domain asked
 * for (whole mappings tiling it) is -EIO, with *unmapped set to what the
 * kernel removed: the domain's books and the kernel no longer agree.
 * unmap_all is UNMAP_DMA with VFIO_DMA_UNMAP_FLAG_ALL where the kernel has
 * VFIO_UNMAP_ALL, else two unmaps of half the 64-bit space each.
 *
 * No-IOMMU mode (opts.noiommu): groups are /dev/vfio/noiommu-N and the
 * model VFIO_NOIOMMU_IOMMU.  The kernel has no MAP_DMA then; the domain is
 * used identity style: map checks that iova is the physical address of va
 * and mlocks it (ident_book.c's book), unmap munlocks.  Caps as identity.
 *
 * Locking: the domain serialises map/unmap/get_caps with its map lock;
 * group adds come from outside it (iodma_vfio_add_group, device open) and
 * take v->lock, which get_caps and avail_mappings also take (order:
 * map_lock -> v->lock).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/vfio.h>

#include <iodma/domain.h>
#include <iodma/vfio.h>

#include "../util.h"
#include "ident_book.h"
#include "linux_common.h"
#include "vfio_priv.h"

#define VFIO_DEFAULT_MAX_MAPPINGS 65535u
#define VFIO_MAX_CAPS             64	/* chain entries walked at most */
#define IDENT_PHYS_BITS           52

struct vfio_group {
	int nr;		/* group number, or -1 when added by fd */
	int fd;
};

struct vfio {
	os_mutex_t lock;		/* protects everything below */
	int container;
	bool own_container;		/* close it at the end */
	bool noiommu;
	bool iommu_set;			/* VFIO_SET_IOMMU done */
	bool has_unmap_all;		/* VFIO_UNMAP_ALL extension */
	bool has_avail;			/* DMA_AVAIL capability seen */
	uint32_t avail_base;		/* DMA_AVAIL when the model was set */
	uint32_t nr_groups;
	uint32_t cap_groups;
	struct vfio_group *groups;
	struct vfio_iommu_type1_info *info; /* GET_INFO buffer */
	uint32_t info_len;		/* its size in bytes */
	struct ident_book book;		/* no-IOMMU mode only */
	/* ioctls issued (iodma_vfio_get_stats()); relaxed atomics, no lock */
	_Atomic uint64_t nr_map_ioctls;
	_Atomic uint64_t nr_unmap_ioctls;
	_Atomic uint64_t nr_other_ioctls;
};

/* ioctl(2) on behalf of @v, counted as a map, unmap or other ioctl.  The
 * count is made first so that errno is the ioctl's own afterwards. */
#define VFIO_IOCTL(v, counter, ...)					\
	(atomic_fetch_add_explicit(&(v)->counter, 1, memory_order_relaxed), \
	 ioctl(__VA_ARGS__))

static const struct iodma_backend_ops vfio_ops;

/* ---- GET_INFO ----------------------------------------------------------- */

struct vfio_info {
	uint64_t pgsizes;
	uint32_t nr_ranges;		/* entries in ranges (raw, inclusive) */
	struct vfio_iova_range ranges[IODMA_MAX_IOVA_RANGES * 4];
	uint32_t nr_raw;		/* ranges the kernel reported */
	bool has_ranges;
	bool migration;
	uint64_t dirty_pgsizes;		/* migration cap: log page sizes */
	uint64_t max_dirty_bitmap;	/* migration cap: bitmap bytes at most */
	bool has_avail;
	uint32_t avail;
};

/* VFIO_IOMMU_GET_INFO into v->info, growing it to the argsz the kernel
 * asks for.  v->lock held. */
static int vfio_read_info_raw(struct vfio *v)
{
	for (int tries = 0; tries < 4; tries++) {
		memset(v->info, 0, v->info_len);
		v->info->argsz = v->info_len;
		if (VFIO_IOCTL(v, nr_other_ioctls, v->container, VFIO_IOMMU_GET_INFO, v->info) < 0) {
			int err = -errno;

			vfio_set_error("vfio: VFIO_IOMMU_GET_INFO: %s",
				       strerror(errno));
			return err;
		}
		if (v->info->argsz <= v->info_len)
			return 0;
		{
			uint32_t want = v->info->argsz;
			void *p = iodma_realloc(v->info, want);

			if (!p)
				return -ENOMEM;
			v->info = p;
			v->info_len = want;
		}
	}
	vfio_set_error("vfio: VFIO_IOMMU_GET_INFO keeps asking for more room");
	return -EIO;
}

/* Parse a GET_INFO answer of @len bytes into @out. */
static void vfio_parse_info(const struct vfio_iommu_type1_info *info,
			    uint32_t len, struct vfio_info *out)
{
	const char *base = (const char *)info;
	uint32_t argsz = IODMA_MIN(info->argsz, len);
	uint32_t off, steps = 0;

	memset(out, 0, sizeof(*out));
	if (info->flags & VFIO_IOMMU_INFO_PGSIZES)
		out->pgsizes = info->iova_pgsizes;
	if (!(info->flags & VFIO_IOMMU_INFO_CAPS) || argsz < sizeof(*info))
		return;
	for (off = info->cap_offset;
	     off && off + sizeof(struct vfio_info_cap_header) <= argsz &&
	     steps < VFIO_MAX_CAPS; steps++) {
		const struct vfio_info_cap_header *h =
			(const void *)(base + off);

		switch (h->id) {
		case VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: {
			const struct vfio_iommu_type1_info_cap_iova_range *c =
				(const void *)h;
			uint32_t n;

			if (off + sizeof(*c) > argsz)
				break;
			n = c->nr_iovas;
			if ((argsz - off - sizeof(*c)) / sizeof(c->iova_ranges[0]) < n)
				n = (uint32_t)((argsz - off - sizeof(*c)) /
					       sizeof(c->iova_ranges[0]));
			out->has_ranges = true;
			out->nr_raw = n;
			n = IODMA_MIN(n, (uint32_t)IODMA_ARRAY_SIZE(out->ranges));
			memcpy(out->ranges, c->iova_ranges,
			       n * sizeof(c->iova_ranges[0]));
			out->nr_ranges = n;
			break;
		}
		case VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION: {
			const struct vfio_iommu_type1_info_cap_migration *c =
				(const void *)h;

			out->migration = true;
			if (off + sizeof(*c) <= argsz) {
				out->dirty_pgsizes = c->pgsize_bitmap;
				out->max_dirty_bitmap = c->max_dirty_bitmap_size;
			}
			break;
		}
		case VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL: {
			const struct vfio_iommu_type1_info_dma_avail *c =
				(const void *)h;

			if (off + sizeof(*c) <= argsz) {
				out->has_avail = true;
				out->avail = c->avail;
			}
			break;
		}
		default:
			break;
		}
		if (h->next <= off)
			break; /* the chain only moves forward */
		off = h->next;
	}
}

static int vfio_read_info(struct vfio *v, struct vfio_info *out)
{
	int err = vfio_read_info_raw(v);

	if (!err)
		vfio_parse_info(v->info, v->info_len, out);
	return err;
}

/* Keep the IODMA_MAX_IOVA_RANGES largest of @n ranges, in address order. */
static uint32_t keep_largest(struct iodma_iova_range *r, uint32_t n)
{
	while (n > IODMA_MAX_IOVA_RANGES) {
		uint32_t small = 0;

		for (uint32_t i = 1; i < n; i++) {
			if (r[i].len < r[small].len)
				small = i;
		}
		memmove(&r[small], &r[small + 1], (n - small - 1) * sizeof(*r));
		n--;
	}
	return n;
}

/* Convert the kernel's info into caps.  @avail_base: DMA_AVAIL when the
 * model was set; @unmap_all: the kernel has VFIO_UNMAP_ALL. */
static int vfio_info_to_caps(const struct vfio_info *in, uint32_t avail_base,
			     bool unmap_all, struct iodma_caps *caps)
{
	struct iodma_iova_range r[IODMA_ARRAY_SIZE(in->ranges)];
	uint64_t page = os_page_size(), a;
	uint32_t n = 0, kept;

	memset(caps, 0, sizeof(*caps));
	a = in->pgsizes ? in->pgsizes & -in->pgsizes : page;
	caps->alignment = IODMA_MAX(a, page);
	a = caps->alignment;
	if (!in->has_ranges) {
		r[n].iova = a;
		r[n++].len = 0 - 2 * a; /* [a, 2^64 - a): see "top of the space" */
	}
	for (uint32_t i = 0; in->has_ranges && i < in->nr_ranges; i++) {
		uint64_t lo = align_up(in->ranges[i].start, a);
		uint64_t end = in->ranges[i].end, last;

		if (in->ranges[i].start > end || (lo == 0 && in->ranges[i].start))
			continue;
		if (lo < a)
			lo = a;	/* page 0 is never a DMA address */
		if (end == UINT64_MAX)
			last = UINT64_MAX - a; /* see "top of the space" above */
		else if (align_down(end + 1, a) == 0)
			continue;
		else
			last = align_down(end + 1, a) - 1;
		if (lo > last)
			continue;
		if (n > 0 && lo <= range_last(r[n - 1].iova, r[n - 1].len))
			continue; /* unsorted or overlapping: not trusted */
		r[n].iova = lo;
		r[n++].len = last - lo + 1;
	}
	if (n == 0) {
		vfio_set_error("vfio: the kernel reports no usable IOVA range");
		return -ERANGE;
	}
	kept = keep_largest(r, n);
	if (kept < n || in->nr_raw > in->nr_ranges)
		vfio_set_error("vfio: the kernel reports %u IOVA ranges; kept the %u largest",
			       in->nr_raw, kept);
	memcpy(caps->ranges, r, kept * sizeof(r[0]));
	caps->nr_ranges = kept;
	if (in->has_avail) {
		uint32_t live = avail_base > in->avail ?
				avail_base - in->avail : 0;

		caps->max_mappings = in->avail + live;
	} else {
		caps->max_mappings = VFIO_DEFAULT_MAX_MAPPINGS;
	}
	if (in->migration)
		caps->flags |= IODMA_CAP_DIRTY_TRACKING;
	if (unmap_all)
		caps->flags |= IODMA_CAP_UNMAP_ALL;
	return 0;
}

int vfio_caps_from_info(const void *buf, uint32_t len, uint32_t avail_base,
			bool unmap_all, struct iodma_caps *caps)
{
	struct vfio_info in;

	if (!buf || len < sizeof(struct vfio_iommu_type1_info) || !caps)
		return -EINVAL;
	vfio_parse_info(buf, len, &in);
	return vfio_info_to_caps(&in, avail_base, unmap_all, caps);
}

/* ---- groups ------------------------------------------------------------- */

static int group_index(const struct vfio *v, int nr)
{
	for (uint32_t i = 0; nr >= 0 && i < v->nr_groups; i++) {
		if (v->groups[i].nr == nr)
			return (int)i;
	}
	return -1;
}

/* Open /dev/vfio/N (or noiommu-N).  Returns the fd or a negative errno. */
static int group_open(bool noiommu, int nr)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/%s%d", vfio_dev_dir(),
		 noiommu ? "noiommu-" : "", nr);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		int err = -errno;

		if (errno == ENOENT)
			vfio_set_error("vfio: %s does not exist: is the device bound to vfio-pci%s?",
				       path, noiommu ? " with enable_unsafe_noiommu_mode=1" : "");
		else if (errno == EBUSY)
			vfio_set_error("vfio: %s is already open (by this or another process)",
				       path);
		else
			vfio_set_error("vfio: open %s: %s", path, strerror(errno));
		return err;
	}
	return fd;
}

/* Add an open group fd to the container.  v->lock held.  On success the
 * group is recorded (v takes @fd); on error nothing changed. */
static int group_attach_locked(struct vfio *v, int fd, int nr)
{
	struct vfio_group_status st = { .argsz = sizeof(st) };
	struct vfio_info info;
	bool set_iommu = !v->iommu_set;
	int err;

	os_mutex_assert_held(&v->lock);

	if (v->nr_groups == v->cap_groups) {
		uint32_t cap = v->cap_groups ? 2 * v->cap_groups : 4;
		void *p = iodma_realloc(v->groups, cap * sizeof(*v->groups));

		if (!p)
			return -ENOMEM;
		v->groups = p;
		v->cap_groups = cap;
	}
	if (VFIO_IOCTL(v, nr_other_ioctls, fd, VFIO_GROUP_GET_STATUS, &st) < 0) {
		err = -errno;
		vfio_set_error("vfio: VFIO_GROUP_GET_STATUS: %s", strerror(errno));
		return err;
	}
	if (!(st.flags & VFIO_GROUP_FLAGS_VIABLE)) {
		if (nr >= 0)
			vfio_explain_not_viable(nr);
		else
			vfio_set_error("vfio: group is not viable: bind every device of it to vfio-pci");
		return -EBUSY;
	}
	if (st.flags & VFIO_GROUP_FLAGS_CONTAINER_SET) {
		vfio_set_error("vfio: group %d is already in a container", nr);
		return -EBUSY;
	}
	if (VFIO_IOCTL(v, nr_other_ioctls, fd, VFIO_GROUP_SET_CONTAINER, &v->container) < 0) {
		err = -errno;
		vfio_set_error("vfio: VFIO_GROUP_SET_CONTAINER (group %d): %s",
			       nr, strerror(errno));
		return err;
	}
	if (set_iommu) {
		unsigned long model = v->noiommu ? VFIO_NOIOMMU_IOMMU :
					      VFIO_TYPE1v2_IOMMU;

		if (VFIO_IOCTL(v, nr_other_ioctls, v->container, VFIO_SET_IOMMU, model) < 0) {
			err = -errno;
			vfio_set_error("vfio: VFIO_SET_IOMMU(%s): %s%s",
				       v->noiommu ? "no-IOMMU" : "type1v2",
				       strerror(errno),
				       errno == EPERM ? " (no interrupt remapping? "
				       "vfio_iommu_type1 allow_unsafe_interrupts=1)" : "");
			VFIO_IOCTL(v, nr_other_ioctls, fd, VFIO_GROUP_UNSET_CONTAINER);
			return err;
		}
		v->iommu_set = true;
		if (!v->noiommu) {
			v->has_unmap_all = VFIO_IOCTL(v, nr_other_ioctls, v->container, VFIO_CHECK_EXTENSION,
						 VFIO_UNMAP_ALL) > 0;
			err = vfio_read_info(v, &info);
			if (err) {
				VFIO_IOCTL(v, nr_other_ioctls, fd, VFIO_GROUP_UNSET_CONTAINER);
				v->iommu_set = false;
				return err;
			}
			v->has_avail = info.has_avail;
			v->avail_base = info.avail;
		}
	}
	v->groups[v->nr_groups].nr = nr;
	v->groups[v->nr_groups].fd = fd;
	v->nr_groups++;
	return 0;
}

/* Undo the last group_attach_locked() of @fd.  v->lock held. */
static void group_detach_locked(struct vfio *v, int fd)
{
	os_mutex_assert_held(&v->lock);

	for (uint32_t i = 0; i < v->nr_groups; i++) {
		if (v->groups[i].fd != fd)
			continue;
		VFIO_IOCTL(v, nr_other_ioctls, fd, VFIO_GROUP_UNSET_CONTAINER);
		v->groups[i] = v->groups[--v->nr_groups];
		/* The kernel drops the model with the container's last group;
		 * a caller-supplied container may still hold other users'
		 * groups, so ask it rather than assume. */
		if (v->nr_groups == 0) {
			struct vfio_iommu_type1_info probe = { .argsz = sizeof(probe) };

			v->iommu_set = VFIO_IOCTL(v, nr_other_ioctls, v->container,
						  VFIO_IOMMU_GET_INFO, &probe) == 0;
		}
		return;
	}
}

bool vfio_domain_is(const struct iodma_domain *d)
{
	return iodma_backend_priv(d, &vfio_ops) != NULL;
}

/* Attach @fd (group @nr or -1) and refresh the domain's caps; rolled back
 * on error (the caller keeps @fd then). */
static int domain_attach(struct iodma_domain *d, int fd, int nr)
{
	struct vfio *v = iodma_backend_priv(d, &vfio_ops);
	int err;

	os_mutex_lock(&v->lock);
	err = group_attach_locked(v, fd, nr);
	os_mutex_unlock(&v->lock);
	if (err)
		return err;
	err = iodma_domain_refresh_caps(d);
	if (err) {
		if (err == -EBUSY)
			vfio_set_error("vfio: group %d narrows the IOVA ranges under a live mapping or allocation",
				       nr);
		os_mutex_lock(&v->lock);
		group_detach_locked(v, fd);
		os_mutex_unlock(&v->lock);
	}
	return err;
}

int vfio_domain_add_group(struct iodma_domain *d, int groupfd)
{
	if (!vfio_domain_is(d) || groupfd < 0)
		return -EINVAL;
	return domain_attach(d, groupfd, -1);
}

int vfio_domain_group_fd(struct iodma_domain *d, int group, int *groupfd)
{
	struct vfio *v;
	int fd, i, err;

	if (!vfio_domain_is(d) || group < 0 || !groupfd)
		return -EINVAL;
	v = iodma_backend_priv(d, &vfio_ops);
	os_mutex_lock(&v->lock);
	i = group_index(v, group);
	fd = i >= 0 ? v->groups[i].fd : -1;
	os_mutex_unlock(&v->lock);
	if (fd >= 0) {
		*groupfd = fd;
		return 0;
	}
	fd = group_open(v->noiommu, group);
	if (fd < 0)
		return fd;
	err = domain_attach(d, fd, group);
	if (err) {
		close(fd);
		return err;
	}
	*groupfd = fd;
	return 0;
}

IODMA_EXPORT int iodma_vfio_get_iommu_info(struct iodma_domain *d,
					   struct iodma_vfio_iommu_info *out)
{
	struct vfio_info info;
	struct vfio *v;
	int err;

	v = iodma_backend_priv(d, &vfio_ops);
	if (!v || !out) {
		vfio_set_error("vfio: iodma_vfio_get_iommu_info needs a vfio domain and somewhere to put the figures");
		return -EINVAL;
	}
	if (v->noiommu) {
		vfio_set_error("vfio: a no-IOMMU container has no VFIO_IOMMU_GET_INFO");
		return -EINVAL;
	}
	os_mutex_lock(&v->lock);
	if (v->iommu_set) {
		err = vfio_read_info(v, &info);
	} else {
		vfio_set_error("vfio: the container has no group yet, hence no IOMMU model to ask");
		err = -ENODEV;
	}
	os_mutex_unlock(&v->lock);
	if (err)
		return err;
	memset(out, 0, sizeof(*out));
	out->iova_pgsizes = info.pgsizes;
	out->dirty_pgsizes = info.dirty_pgsizes;
	out->dma_avail = info.has_avail ? info.avail : 0;
	out->has_dma_avail = info.has_avail;
	out->migration = info.migration;
	return 0;
}

IODMA_EXPORT int iodma_vfio_add_group(struct iodma_domain *d, int group)
{
	int fd;

	if (!vfio_domain_is(d) || group < 0) {
		vfio_set_error("vfio: iodma_vfio_add_group needs a vfio domain and a group >= 0");
		return -EINVAL;
	}
	return vfio_domain_group_fd(d, group, &fd);
}

int vfio_domain_stats(const struct iodma_domain *d,
		      struct iodma_vfio_stats *st)
{
	struct vfio *v;

	if (!vfio_domain_is(d))
		return -EINVAL;
	v = iodma_backend_priv(d, &vfio_ops);
	st->map_ioctls = atomic_load_explicit(&v->nr_map_ioctls,
					      memory_order_relaxed);
	st->unmap_ioctls = atomic_load_explicit(&v->nr_unmap_ioctls,
						memory_order_relaxed);
	st->other_ioctls = atomic_load_explicit(&v->nr_other_ioctls,
						memory_order_relaxed);
	return 0;
}

/* ---- ops ---------------------------------------------------------------- */

static void vfio_free(struct vfio *v)
{
	for (uint32_t i = 0; i < v->nr_groups; i++) {
		VFIO_IOCTL(v, nr_other_ioctls, v->groups[i].fd, VFIO_GROUP_UNSET_CONTAINER);
		close(v->groups[i].fd);
	}
	if (v->own_container && v->container >= 0)
		close(v->container);
	if (v->noiommu)
		ident_book_fini(&v->book);
	os_mutex_destroy(&v->lock);
	iodma_free(v->groups);
	iodma_free(v->info);
	iodma_free(v);
}

/* Open and attach group @nr during open (no domain yet). */
static int open_add_group(struct vfio *v, int nr)
{
	int fd, err;

	if (group_index(v, nr) >= 0)
		return 0;
	fd = group_open(v->noiommu, nr);
	if (fd < 0)
		return fd;
	/* Nobody else can see @v yet; the lock is for the helper's rule. */
	os_mutex_lock(&v->lock);
	err = group_attach_locked(v, fd, nr);
	os_mutex_unlock(&v->lock);
	if (err)
		close(fd);
	return err;
}

static int vfio_open(const void *config, void **priv)
{
	struct iodma_vfio_opts def = IODMA_OPTS_INIT(struct iodma_vfio_opts);
	const struct iodma_vfio_opts *o = &def;
	char path[PATH_MAX];
	struct vfio *v;
	int err, ver;

	err = opts_copy(&def, sizeof(def), config,
			IODMA_OFFSETOFEND(struct iodma_vfio_opts, noiommu));
	if (err) {
		vfio_set_error("vfio: struct iodma_vfio_opts: size %s",
			       err == -E2BIG ? "larger than this library knows, with a non-zero tail"
					     : "smaller than its first version");
		return err;
	}
	if ((o->nr_groups && !o->groups) ||
	    (o->nr_devices && !o->devices)) {
		vfio_set_error("vfio: bad struct iodma_vfio_opts");
		return -EINVAL;
	}
	for (uint32_t i = 0; i < o->nr_groups; i++) {
		if (o->groups[i] < 0) {
			vfio_set_error("vfio: group %d is not a group number", o->groups[i]);
			return -EINVAL;
		}
	}
	for (uint32_t i = 0; i < o->nr_devices; i++) {
		if (!vfio_bdf_valid(o->devices[i])) {
			vfio_set_error("vfio: '%s' is not a PCI address DDDD:BB:DD.F",
				       o->devices[i] ? o->devices[i] : "(null)");
			return -EINVAL;
		}
	}
	v = iodma_calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	os_mutex_init(&v->lock);
	v->noiommu = o->noiommu;
	v->container = -1;
	v->info_len = sizeof(*v->info);
	v->info = iodma_calloc(1, v->info_len);
	if (!v->info) {
		err = -ENOMEM;
		goto err;
	}
	if (v->noiommu) {
		err = ident_book_init(&v->book, VFIO_DEFAULT_MAX_MAPPINGS);
		if (err) {
			v->noiommu = false; /* nothing to fini */
			goto err;
		}
	}
	if (o->container > 0) {
		v->container = o->container;
	} else {
		snprintf(path, sizeof(path), "%s/vfio", vfio_dev_dir());
		v->container = open(path, O_RDWR | O_CLOEXEC);
		if (v->container < 0) {
			err = -errno;
			vfio_set_error("vfio: open %s: %s%s", path, strerror(errno),
				       errno == ENOENT ? " (load vfio-pci / vfio_iommu_type1)" : "");
			goto err;
		}
		v->own_container = true;
	}
	ver = VFIO_IOCTL(v, nr_other_ioctls, v->container, VFIO_GET_API_VERSION);
	if (ver != VFIO_API_VERSION) {
		err = ver < 0 ? -errno : -EPROTO;
		vfio_set_error("vfio: VFIO_GET_API_VERSION is %d, want %d", ver,
			       VFIO_API_VERSION);
		goto err;
	}
	if (VFIO_IOCTL(v, nr_other_ioctls, v->container, VFIO_CHECK_EXTENSION,
		  v->noiommu ? VFIO_NOIOMMU_IOMMU : VFIO_TYPE1v2_IOMMU) <= 0) {
		err = -EOPNOTSUPP;
		vfio_set_error("vfio: the kernel has no %s (%s)",
			       v->noiommu ? "VFIO no-IOMMU mode" : "VFIO_TYPE1v2_IOMMU",
			       v->noiommu ? "vfio enable_unsafe_noiommu_mode=1" :
			       "load vfio_iommu_type1");
		goto err;
	}
	if (o->container > 0) {
		/* A container with groups already has its model. */
		struct vfio_info info;

		if (vfio_read_info(v, &info) == 0) {
			v->iommu_set = true;
			v->has_unmap_all = VFIO_IOCTL(v, nr_other_ioctls, v->container, VFIO_CHECK_EXTENSION,
						 VFIO_UNMAP_ALL) > 0;
			v->has_avail = info.has_avail;
			v->avail_base = info.avail;
		}
	}
	for (uint32_t i = 0; i < o->nr_groups; i++) {
		err = open_add_group(v, o->groups[i]);
		if (err)
			goto err;
	}
	for (uint32_t i = 0; i < o->nr_devices; i++) {
		int nr;

		err = iodma_vfio_group_of(o->devices[i], &nr);
		if (!err)
			err = open_add_group(v, nr);
		if (err)
			goto err;
	}
	*priv = v;
	return 0;
err:
	vfio_free(v);
	return err;
}

static void vfio_close(void *priv)
{
	vfio_free(priv);
}

static void ident_caps(struct iodma_caps *caps)
{
	uint64_t page = os_page_size();

	memset(caps, 0, sizeof(*caps));
	caps->alignment = page;
	caps->nr_ranges = 1;
	caps->ranges[0].iova = page;
	caps->ranges[0].len = (1ull << IDENT_PHYS_BITS) - page;
	caps->max_mappings = VFIO_DEFAULT_MAX_MAPPINGS;
	caps->flags = IODMA_CAP_UNMAP_ALL;
}

static int vfio_get_caps(void *priv, struct iodma_caps *caps)
{
	struct vfio *v = priv;
	struct vfio_info info;
	int err = 0;

	os_mutex_lock(&v->lock);
	if (v->noiommu) {
		ident_caps(caps);
	} else if (!v->iommu_set) {
		uint64_t page = os_page_size();

		/* What every x86 IOMMU we know offers (VT-d's 39-bit space
		 * minus the MSI window; AMD and virtio-iommu offer more), so
		 * that IOVAs allocated before the first group stay valid. */
		memset(caps, 0, sizeof(*caps));
		caps->alignment = page;
		caps->nr_ranges = 2;
		caps->ranges[0].iova = page;
		caps->ranges[0].len = 0xfee00000ull - page;
		caps->ranges[1].iova = 0xfef00000ull;
		caps->ranges[1].len = (1ull << 39) - 0xfef00000ull;
		caps->max_mappings = VFIO_DEFAULT_MAX_MAPPINGS;
	} else {
		err = vfio_read_info(v, &info);
		if (!err)
			err = vfio_info_to_caps(&info, v->avail_base,
						v->has_unmap_all, caps);
	}
	os_mutex_unlock(&v->lock);
	return err;
}

static int vfio_avail_mappings(void *priv, uint32_t *avail)
{
	struct vfio *v = priv;
	struct vfio_info info;
	int err = -EOPNOTSUPP;

	os_mutex_lock(&v->lock);
	if (v->noiommu) {
		*avail = v->book.max - ident_book_count(&v->book);
		err = 0;
	} else if (v->iommu_set && v->has_avail) {
		err = vfio_read_info(v, &info);
		if (!err && info.has_avail)
			*avail = info.avail;
		else if (!err)
			err = -EOPNOTSUPP;
	}
	os_mutex_unlock(&v->lock);
	return err;
}

static int vfio_map(void *priv, const struct iodma_map_event *ev)
{
	struct vfio *v = priv;
	struct vfio_iommu_type1_dma_map m = { .argsz = sizeof(m) };
	int err;

	if (v->noiommu)
		return ident_book_map(&v->book, ev);
	if (!ev->va) {
		vfio_set_error("vfio: type1 maps host addresses only (no fd-only mapping)");
		return -EOPNOTSUPP;
	}
	if (ev->perm & IODMA_PERM_READ)
		m.flags |= VFIO_DMA_MAP_FLAG_READ;
	if (ev->perm & IODMA_PERM_WRITE)
		m.flags |= VFIO_DMA_MAP_FLAG_WRITE;
	m.vaddr = (uintptr_t)ev->va;
	m.iova = ev->iova;
	m.size = ev->len;
	if (VFIO_IOCTL(v, nr_map_ioctls, v->container, VFIO_IOMMU_MAP_DMA, &m) == 0)
		return 0;
	err = -errno;
	if (err == -ENOSPC)
		vfio_set_error("vfio: VFIO_IOMMU_MAP_DMA: the container's mapping limit is reached "
			       "(vfio_iommu_type1 dma_entry_limit module parameter)");
	else
		vfio_set_error("vfio: VFIO_IOMMU_MAP_DMA iova %#llx len %#llx: %s",
			       (unsigned long long)ev->iova,
			       (unsigned long long)ev->len, strerror(errno));
	return err;
}

/* One UNMAP_DMA.  Returns 0 and the bytes removed, or -errno. */
static int vfio_unmap_once(struct vfio *v, uint64_t iova, uint64_t len,
			   uint32_t flags, uint64_t *bytes)
{
	struct vfio_iommu_type1_dma_unmap u = {
		.argsz = sizeof(u), .flags = flags, .iova = iova, .size = len,
	};

	if (VFIO_IOCTL(v, nr_unmap_ioctls, v->container, VFIO_IOMMU_UNMAP_DMA, &u) < 0) {
		int err = -errno;

		vfio_set_error("vfio: VFIO_IOMMU_UNMAP_DMA iova %#llx len %#llx: %s",
			       (unsigned long long)iova, (unsigned long long)len,
			       strerror(errno));
		return err;
	}
	*bytes = u.size;
	return 0;
}

static int vfio_unmap(void *priv, uint64_t iova, uint64_t len,
		      uint64_t *unmapped)
{
	struct vfio *v = priv;
	uint64_t bytes = 0;
	int err;

	if (v->noiommu)
		return ident_book_unmap(&v->book, iova, len, unmapped);
	err = vfio_unmap_once(v, iova, len, 0, &bytes);
	if (err)
		return err;
	*unmapped = bytes;
	if (bytes != len) {
		vfio_set_error("vfio: VFIO_IOMMU_UNMAP_DMA iova %#llx len %#llx removed %#llx bytes: "
			       "the kernel and the domain disagree",
			       (unsigned long long)iova, (unsigned long long)len,
			       (unsigned long long)bytes);
		/* Fewer: the rest was gone already (someone else unmapped it
		 * from a shared container); the range is empty in the kernel
		 * now, so the domain's books may follow.  More cannot be
		 * explained. */
		if (bytes > len)
			return -EIO;
	}
	return 0;
}

static int vfio_unmap_all(void *priv, uint64_t *unmapped)
{
	struct vfio *v = priv;

	if (v->noiommu)
		return ident_book_unmap(&v->book, 0, UINT64_MAX, unmapped);
	/* Without the kernel's UNMAP_ALL (before 5.12), or on a container
	 * that may hold mappings this domain did not make, the domain unmaps
	 * its own runs instead (two half-space unmaps would fail on a mapping
	 * that crosses 2^63, and could half succeed). */
	if (!v->has_unmap_all || !v->own_container)
		return -EOPNOTSUPP;
	return vfio_unmap_once(v, 0, 0, VFIO_DMA_UNMAP_FLAG_ALL, unmapped);
}

/* ---- dirty tracking (VFIO_IOMMU_DIRTY_PAGES, type1 since Linux 5.8) ---- */

/* OR the first @nbits bits of @src into @dst. */
static void bits_or(uint64_t *dst, const uint64_t *src, uint64_t nbits)
{
	for (uint64_t w = 0; w < nbits / 64; w++)
		dst[w] |= src[w];
	if (nbits % 64)
		dst[nbits / 64] |= src[nbits / 64] & ((1ull << (nbits % 64)) - 1);
}

/* A zeroed bitmap of one bit per @pgsize of @len bytes; its size in bytes
 * in *@bytes.  NULL when out of memory. */
static uint64_t *dirty_buf(uint64_t len, uint64_t pgsize, uint64_t *bytes)
{
	uint64_t words = (len / pgsize + 63) / 64;

	*bytes = words * sizeof(uint64_t);
	return iodma_calloc((size_t)words, sizeof(uint64_t));
}

/* After an ioctl that filled @buf with the dirty bits of [iova, iova +
 * len): OR them into @bitmap (@rc 0), or say why not (@rc < 0, errno set).
 * Returns 0 or -errno. */
static int dirty_done(int rc, const char *what, uint64_t iova, uint64_t len,
		      uint64_t pgsize, const uint64_t *buf, uint64_t *bitmap)
{
	int err = -errno;

	if (rc == 0) {
		bits_or(bitmap, buf, len / pgsize);
		return 0;
	}
	vfio_set_error("vfio: %s iova %#llx len %#llx: %s", what,
		       (unsigned long long)iova, (unsigned long long)len,
		       strerror(-err));
	return err;
}

static void bitmap_arg(struct vfio_bitmap *b, uint64_t pgsize, uint64_t bytes,
		       uint64_t *buf)
{
	b->pgsize = pgsize;
	b->size = bytes;
	b->data = (__u64 *)buf;
}

static int vfio_dirty_pages(struct vfio *v, uint32_t flag, const char *what)
{
	struct vfio_iommu_type1_dirty_bitmap db = { .argsz = sizeof(db), .flags = flag };

	if (VFIO_IOCTL(v, nr_other_ioctls, v->container, VFIO_IOMMU_DIRTY_PAGES, &db) == 0)
		return 0;
	vfio_set_error("vfio: VFIO_IOMMU_DIRTY_PAGES %s: %s", what, strerror(errno));
	return -errno;
}

static int vfio_dirty_start(void *priv, uint64_t pgsize)
{
	struct vfio *v = priv;
	struct vfio_info vi;
	int err;

	if (v->noiommu) {
		vfio_set_error("vfio: no-IOMMU mode cannot track the device's writes");
		return -EOPNOTSUPP;
	}
	os_mutex_lock(&v->lock);
	err = vfio_read_info(v, &vi);
	os_mutex_unlock(&v->lock);
	if (err)
		return err;
	/* The kernel logs at the page sizes its migration capability lists
	 * (the IOMMU's smallest page); without the capability it has no log. */
	if (!vi.migration || !(vi.dirty_pgsizes & pgsize)) {
		vfio_set_error("vfio: the container cannot log writes at %#llx bytes a page "
			       "(migration capability %s, page sizes %#llx)",
			       (unsigned long long)pgsize, vi.migration ? "present" : "absent",
			       (unsigned long long)vi.dirty_pgsizes);
		return -EOPNOTSUPP;
	}
	return vfio_dirty_pages(v, VFIO_IOMMU_DIRTY_PAGES_FLAG_START, "START");
}

static void vfio_dirty_stop(void *priv)
{
	struct vfio *v = priv;

	if (!v->noiommu)
		vfio_dirty_pages(v, VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP, "STOP");
}

static int vfio_dirty_get(void *priv, uint64_t iova, uint64_t len,
			  uint64_t pgsize, uint64_t *bitmap)
{
	struct vfio *v = priv;
	struct {
		struct vfio_iommu_type1_dirty_bitmap db;
		struct vfio_iommu_type1_dirty_bitmap_get get;
	} a;
	uint64_t bytes, *buf = dirty_buf(len, pgsize, &bytes);
	int err;

	if (!buf)
		return -ENOMEM;
	memset(&a, 0, sizeof(a));
	a.db.argsz = sizeof(a);
	a.db.flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP;
	a.get.iova = iova;
	a.get.size = len;
	bitmap_arg(&a.get.bitmap, pgsize, bytes, buf);
	err = dirty_done(VFIO_IOCTL(v, nr_other_ioctls, v->container,
				    VFIO_IOMMU_DIRTY_PAGES, &a),
			 "VFIO_IOMMU_DIRTY_PAGES GET_BITMAP", iova, len, pgsize,
			 buf, bitmap);
	iodma_free(buf);
	return err;
}

static int vfio_unmap_dirty(void *priv, uint64_t iova, uint64_t len,
			    uint64_t pgsize, uint64_t *bitmap, uint64_t *unmapped)
{
	struct vfio *v = priv;
	struct {
		struct vfio_iommu_type1_dma_unmap u;
		struct vfio_bitmap b;
	} a;
	uint64_t bytes, *buf;
	int err;

	if (v->noiommu)
		return vfio_unmap(priv, iova, len, unmapped);
	buf = dirty_buf(len, pgsize, &bytes);
	if (!buf)
		return -ENOMEM;
	memset(&a, 0, sizeof(a));
	a.u.argsz = sizeof(a);
	a.u.flags = VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP;
	a.u.iova = iova;
	a.u.size = len;
	bitmap_arg(&a.b, pgsize, bytes, buf);
	err = dirty_done(VFIO_IOCTL(v, nr_unmap_ioctls, v->container,
				    VFIO_IOMMU_UNMAP_DMA, &a),
			 "VFIO_IOMMU_UNMAP_DMA GET_DIRTY_BITMAP", iova, len, pgsize,
			 buf, bitmap);
	if (err == 0) {
		*unmapped = a.u.size;
		if (a.u.size > len)
			err = -EIO; /* more than asked: cannot be explained */
	}
	iodma_free(buf);
	return err;
}

static const struct iodma_backend_ops vfio_ops = {
	.version = IODMA_BACKEND_OPS_VERSION,
	.name = "vfio",
	.open = vfio_open,
	.close = vfio_close,
	.get_caps = vfio_get_caps,
	.map = vfio_map,
	.unmap = vfio_unmap,
	.unmap_all = vfio_unmap_all,
	.avail_mappings = vfio_avail_mappings,
	.dirty_start = vfio_dirty_start,
	.dirty_stop = vfio_dirty_stop,
	.dirty_get = vfio_dirty_get,
	.unmap_dirty = vfio_unmap_dirty,
};

IODMA_EXPORT const struct iodma_backend_ops *iodma_backend_vfio(void)
{
	return &vfio_ops;
}
