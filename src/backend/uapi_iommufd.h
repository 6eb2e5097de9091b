/* SPDX-License-Identifier: MIT */
/*
 * uapi_iommufd.h - the kernel uapi iodma uses for iommufd and the VFIO
 * device cdev, for systems whose headers predate it.
 *
 * Debian 12's linux-libc-dev (6.1) has no <linux/iommufd.h> and no VFIO
 * cdev ioctls.  The definitions below are ours, written from the kernel's
 * uapi documentation (include/uapi/linux/iommufd.h, Linux >= 6.2;
 * include/uapi/linux/vfio.h cdev section, Linux >= 6.6; IOMMU_IOAS_MAP_FILE,
 * Linux >= 6.13).  Each group is used only when the system header lacks it:
 *   - <linux/iommufd.h> when __has_include() finds it, else ours;
 *   - IOMMU_IOAS_MAP_FILE when the iommufd header in use lacks it;
 *   - the VFIO cdev structs when <linux/vfio.h> lacks
 *     VFIO_DEVICE_BIND_IOMMUFD.
 *
 * The ABI rules these rely on (from the uapi's "General ioctl format"):
 * every iommufd ioctl is _IO(';', 0x80 + n) and takes a struct whose first
 * __u32 is its size; the kernel accepts a larger struct if the bytes it does
 * not know are zero, and a smaller one down to the size of the first
 * release.  The VFIO cdev ioctls take argsz first, with the same growth rule
 * (the kernel reads up to the last field it knows).  So a struct here is
 * always the first-release layout, and the _Static_asserts below pin every
 * size and every offset we rely on, so that a layout mistake cannot compile.
 *
 * Linux only; included by src/backend/iommufd.c (and h-vfio's cdev code).
 */
#ifndef IODMA_UAPI_IOMMUFD_H
#define IODMA_UAPI_IOMMUFD_H

#include <stddef.h>
#include <linux/types.h>
#include <linux/ioctl.h>
#include <linux/vfio.h>

/* ---- iommufd (/dev/iommu) ----------------------------------------------- */

#if defined(__has_include)
#if __has_include(<linux/iommufd.h>)
#include <linux/iommufd.h>
#define IODMA_HAVE_SYS_IOMMUFD_H 1
#endif
#endif

#ifndef IODMA_HAVE_SYS_IOMMUFD_H

#define IOMMUFD_TYPE (';')

/* Command numbers: consecutive from 0x80 (only the ones iodma names). */
enum {
	IOMMUFD_CMD_BASE = 0x80,
	IOMMUFD_CMD_DESTROY = 0x80,
	IOMMUFD_CMD_IOAS_ALLOC = 0x81,
	IOMMUFD_CMD_IOAS_ALLOW_IOVAS = 0x82,
	IOMMUFD_CMD_IOAS_COPY = 0x83,
	IOMMUFD_CMD_IOAS_IOVA_RANGES = 0x84,
	IOMMUFD_CMD_IOAS_MAP = 0x85,
	IOMMUFD_CMD_IOAS_UNMAP = 0x86,
	IOMMUFD_CMD_OPTION = 0x87,
};

/* IOMMU_DESTROY: destroy any object (here: the IOAS) by its id. */
struct iommu_destroy {
	__u32 size;
	__u32 id;
};
#define IOMMU_DESTROY _IO(IOMMUFD_TYPE, IOMMUFD_CMD_DESTROY)

/* IOMMU_IOAS_ALLOC: a new, empty I/O address space; flags must be 0. */
struct iommu_ioas_alloc {
	__u32 size;
	__u32 flags;
	__u32 out_ioas_id;
};
#define IOMMU_IOAS_ALLOC _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOC)

/* One allowed interval; @last is inclusive (the kernel's naming). */
struct iommu_iova_range {
	__aligned_u64 start;
	__aligned_u64 last;
};

/*
 * IOMMU_IOAS_IOVA_RANGES: on input @num_iovas is the capacity of the array
 * at @allowed_iovas; on output the number of ranges, with -EMSGSIZE when it
 * did not fit (then call again with a larger array).  The ranges narrow as
 * devices attach.  @out_iova_alignment: iova and iova + length of a map must
 * be multiples of it (1 = any; never above PAGE_SIZE).
 */
struct iommu_ioas_iova_ranges {
	__u32 size;
	__u32 ioas_id;
	__u32 num_iovas;
	__u32 __reserved;
	__aligned_u64 allowed_iovas;
	__aligned_u64 out_iova_alignment;
};
#define IOMMU_IOAS_IOVA_RANGES _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_IOVA_RANGES)

/* Flags of IOMMU_IOAS_MAP (and MAP_FILE, COPY). */
enum iommufd_ioas_map_flags {
	IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0,	/* map exactly at @iova */
	IOMMU_IOAS_MAP_WRITEABLE = 1 << 1,	/* the device may write */
	IOMMU_IOAS_MAP_READABLE = 1 << 2,	/* the device may read */
};

/* IOMMU_IOAS_MAP: map [user_va, user_va + length) at @iova (with
 * FIXED_IOVA the range must be free: -EEXIST otherwise). */
struct iommu_ioas_map {
	__u32 size;
	__u32 flags;
	__u32 ioas_id;
	__u32 __reserved;
	__aligned_u64 user_va;
	__aligned_u64 length;
	__aligned_u64 iova;
};
#define IOMMU_IOAS_MAP _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP)

/* IOMMU_IOAS_UNMAP: remove every mapping inside [iova, iova + length); a
 * mapping crossing either end is refused; @length returns the bytes
 * removed.  iova 0 with length U64_MAX removes everything. */
struct iommu_ioas_unmap {
	__u32 size;
	__u32 ioas_id;
	__aligned_u64 iova;
	__aligned_u64 length;
};
#define IOMMU_IOAS_UNMAP _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_UNMAP)

/* IOMMU_OPTION: get/set a global or per-object option. */
enum iommufd_option {
	IOMMU_OPTION_RLIMIT_MODE = 0,
	IOMMU_OPTION_HUGE_PAGES = 1,
};

enum iommufd_option_ops {
	IOMMU_OPTION_OP_SET = 0,
	IOMMU_OPTION_OP_GET = 1,
};

struct iommu_option {
	__u32 size;
	__u32 option_id;
	__u16 op;
	__u16 __reserved;
	__u32 object_id;
	__aligned_u64 val64;
};
#define IOMMU_OPTION _IO(IOMMUFD_TYPE, IOMMUFD_CMD_OPTION)

/* Sizes of the first-release layouts. */
_Static_assert(sizeof(struct iommu_destroy) == 8, "iommu_destroy");
_Static_assert(sizeof(struct iommu_ioas_alloc) == 12, "iommu_ioas_alloc");
_Static_assert(sizeof(struct iommu_iova_range) == 16, "iommu_iova_range");
_Static_assert(sizeof(struct iommu_ioas_iova_ranges) == 32,
	       "iommu_ioas_iova_ranges");
_Static_assert(sizeof(struct iommu_ioas_map) == 40, "iommu_ioas_map");
_Static_assert(sizeof(struct iommu_ioas_unmap) == 24, "iommu_ioas_unmap");
_Static_assert(sizeof(struct iommu_option) == 24, "iommu_option");
_Static_assert(offsetof(struct iommu_option, option_id) == 4, "option_id");
_Static_assert(offsetof(struct iommu_option, op) == 8, "option op");
_Static_assert(offsetof(struct iommu_option, object_id) == 12, "object_id");
_Static_assert(offsetof(struct iommu_option, val64) == 16, "val64");

#endif /* !IODMA_HAVE_SYS_IOMMUFD_H */

/* IOMMU_IOAS_MAP_FILE (Linux >= 6.13): map @length bytes of the memfd @fd
 * from byte @start; otherwise as IOMMU_IOAS_MAP.  Older kernels answer
 * ENOTTY: callers must probe and fall back to IOMMU_IOAS_MAP. */
#ifndef IOMMU_IOAS_MAP_FILE
#define IODMA_IOMMUFD_CMD_IOAS_MAP_FILE 0x8f
struct iommu_ioas_map_file {
	__u32 size;
	__u32 flags;
	__u32 ioas_id;
	__s32 fd;
	__aligned_u64 start;
	__aligned_u64 length;
	__aligned_u64 iova;
};
#define IOMMU_IOAS_MAP_FILE _IO(IOMMUFD_TYPE, IODMA_IOMMUFD_CMD_IOAS_MAP_FILE)
_Static_assert(sizeof(struct iommu_ioas_map_file) == 40, "iommu_ioas_map_file");
#endif

/*
 * Offsets of every field iodma reads or writes, whichever header defined the
 * struct: a later kernel may append fields, never move these.
 */
_Static_assert(offsetof(struct iommu_destroy, id) == 4, "destroy.id");
_Static_assert(offsetof(struct iommu_ioas_alloc, flags) == 4, "alloc.flags");
_Static_assert(offsetof(struct iommu_ioas_alloc, out_ioas_id) == 8,
	       "alloc.out_ioas_id");
_Static_assert(offsetof(struct iommu_iova_range, start) == 0, "range.start");
_Static_assert(offsetof(struct iommu_iova_range, last) == 8, "range.last");
_Static_assert(offsetof(struct iommu_ioas_iova_ranges, ioas_id) == 4,
	       "ranges.ioas_id");
_Static_assert(offsetof(struct iommu_ioas_iova_ranges, num_iovas) == 8,
	       "ranges.num_iovas");
_Static_assert(offsetof(struct iommu_ioas_iova_ranges, allowed_iovas) == 16,
	       "ranges.allowed_iovas");
_Static_assert(offsetof(struct iommu_ioas_iova_ranges, out_iova_alignment) == 24,
	       "ranges.out_iova_alignment");
_Static_assert(offsetof(struct iommu_ioas_map, flags) == 4, "map.flags");
_Static_assert(offsetof(struct iommu_ioas_map, ioas_id) == 8, "map.ioas_id");
_Static_assert(offsetof(struct iommu_ioas_map, user_va) == 16, "map.user_va");
_Static_assert(offsetof(struct iommu_ioas_map, length) == 24, "map.length");
_Static_assert(offsetof(struct iommu_ioas_map, iova) == 32, "map.iova");
_Static_assert(offsetof(struct iommu_ioas_map_file, flags) == 4, "mapf.flags");
_Static_assert(offsetof(struct iommu_ioas_map_file, ioas_id) == 8,
	       "mapf.ioas_id");
_Static_assert(offsetof(struct iommu_ioas_map_file, fd) == 12, "mapf.fd");
_Static_assert(offsetof(struct iommu_ioas_map_file, start) == 16, "mapf.start");
_Static_assert(offsetof(struct iommu_ioas_map_file, length) == 24,
	       "mapf.length");
_Static_assert(offsetof(struct iommu_ioas_map_file, iova) == 32, "mapf.iova");
_Static_assert(offsetof(struct iommu_ioas_unmap, ioas_id) == 4,
	       "unmap.ioas_id");
_Static_assert(offsetof(struct iommu_ioas_unmap, iova) == 8, "unmap.iova");
_Static_assert(offsetof(struct iommu_ioas_unmap, length) == 16, "unmap.length");
_Static_assert(IOMMUFD_TYPE == ';', "IOMMUFD_TYPE");
_Static_assert(IOMMU_DESTROY == _IO(';', 0x80), "IOMMU_DESTROY");
_Static_assert(IOMMU_IOAS_ALLOC == _IO(';', 0x81), "IOMMU_IOAS_ALLOC");
_Static_assert(IOMMU_IOAS_IOVA_RANGES == _IO(';', 0x84), "IOAS_IOVA_RANGES");
_Static_assert(IOMMU_IOAS_MAP == _IO(';', 0x85), "IOMMU_IOAS_MAP");
_Static_assert(IOMMU_IOAS_UNMAP == _IO(';', 0x86), "IOMMU_IOAS_UNMAP");
_Static_assert(IOMMU_IOAS_MAP_FILE == _IO(';', 0x8f), "IOMMU_IOAS_MAP_FILE");

/* ---- VFIO device cdev (/dev/vfio/devices/vfioN, Linux >= 6.6) ---------- */

#ifndef VFIO_DEVICE_BIND_IOMMUFD

/*
 * VFIO_DEVICE_BIND_IOMMUFD: bind the device cdev to @iommufd; @out_devid is
 * the device's id inside that iommufd.  There is no unbind ioctl: closing
 * the cdev fd unbinds.  Fails with EBUSY while the device's group is open
 * through the legacy container interface.
 */
struct vfio_device_bind_iommufd {
	__u32 argsz;
	__u32 flags;
	__s32 iommufd;
	__u32 out_devid;
};
#define VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18)

/* VFIO_DEVICE_ATTACH_IOMMUFD_PT: attach the bound device to the IOAS (or
 * HWPT) @pt_id; on return @pt_id holds the HWPT actually attached. */
struct vfio_device_attach_iommufd_pt {
	__u32 argsz;
	__u32 flags;
	__u32 pt_id;
};
#define VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 19)

/* VFIO_DEVICE_DETACH_IOMMUFD_PT: the device blocks DMA afterwards. */
struct vfio_device_detach_iommufd_pt {
	__u32 argsz;
	__u32 flags;
};
#define VFIO_DEVICE_DETACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 20)

_Static_assert(sizeof(struct vfio_device_bind_iommufd) == 16,
	       "vfio_device_bind_iommufd");
_Static_assert(sizeof(struct vfio_device_attach_iommufd_pt) == 12,
	       "vfio_device_attach_iommufd_pt");
_Static_assert(sizeof(struct vfio_device_detach_iommufd_pt) == 8,
	       "vfio_device_detach_iommufd_pt");

#endif /* !VFIO_DEVICE_BIND_IOMMUFD */

_Static_assert(offsetof(struct vfio_device_bind_iommufd, flags) == 4,
	       "bind.flags");
_Static_assert(offsetof(struct vfio_device_bind_iommufd, iommufd) == 8,
	       "bind.iommufd");
_Static_assert(offsetof(struct vfio_device_bind_iommufd, out_devid) == 12,
	       "bind.out_devid");
_Static_assert(offsetof(struct vfio_device_attach_iommufd_pt, flags) == 4,
	       "attach.flags");
_Static_assert(offsetof(struct vfio_device_attach_iommufd_pt, pt_id) == 8,
	       "attach.pt_id");
_Static_assert(offsetof(struct vfio_device_detach_iommufd_pt, flags) == 4,
	       "detach.flags");
_Static_assert(VFIO_TYPE == ';' && VFIO_BASE == 100, "VFIO_TYPE/BASE");
_Static_assert(VFIO_DEVICE_BIND_IOMMUFD == _IO(';', 118), "BIND_IOMMUFD");
_Static_assert(VFIO_DEVICE_ATTACH_IOMMUFD_PT == _IO(';', 119),
	       "ATTACH_IOMMUFD_PT");
_Static_assert(VFIO_DEVICE_DETACH_IOMMUFD_PT == _IO(';', 120),
	       "DETACH_IOMMUFD_PT");

/* The sizes iodma passes as argsz / size: the first-release layouts, which
 * every kernel with the ioctl accepts. */
#define IODMA_VFIO_BIND_IOMMUFD_MINSZ \
	(offsetof(struct vfio_device_bind_iommufd, out_devid) + sizeof(__u32))
#define IODMA_VFIO_ATTACH_PT_MINSZ \
	(offsetof(struct vfio_device_attach_iommufd_pt, pt_id) + sizeof(__u32))
#define IODMA_VFIO_DETACH_PT_MINSZ \
	(offsetof(struct vfio_device_detach_iommufd_pt, flags) + sizeof(__u32))

#endif /* IODMA_UAPI_IOMMUFD_H */
