/* SPDX-License-Identifier: MIT */
/*
 * iodma/vfio.h - the Linux backends (VFIO type1v2, iommufd, identity) and
 * VFIO PCI device access.
 *
 * Concepts
 *   Three backends program a real IOMMU, or none, through the kernel:
 *   vfio (a type1v2 container shared by one or more VFIO groups), iommufd
 *   (an IOAS on /dev/iommu with VFIO device cdevs attached) and identity (no
 *   IOMMU: the IOVA of a buffer is its physical address, read from
 *   /proc/self/pagemap).  They are selected with iodma_backend_vfio(),
 *   iodma_backend_iommufd() and iodma_backend_identity() as the domain's
 *   backend, with the options struct below as backend_config.  The domain
 *   API is the same for all: the backend only programs the kernel, and a
 *   kernel error comes back as its negative errno with the domain unchanged.
 *
 *   A VFIO device (struct iodma_vfio_device) is a PCI function opened by its
 *   address ("0000:00:03.0") through a domain: with the vfio backend its
 *   group joins the domain's container, with iommufd its cdev is bound and
 *   attached to the domain's IOAS.  It gives what a user-space driver needs
 *   beside DMA: region info, mmapped BARs (also as MMIO windows of an
 *   iodma_dev, virtio-drivers' mmio_phys_to_virt), config space, bus mastering,
 *   reset and interrupts delivered to eventfds.  A device must be closed
 *   before its domain is destroyed.
 *
 *   Errors are negative errnos; the calls that talk to the kernel also leave
 *   a sentence for the calling thread in iodma_vfio_last_error() (which
 *   devices of a group are not bound to vfio-pci, which capability the
 *   kernel lacks, ...).
 *
 *   Threads: opening/closing devices and adding groups are serialised per
 *   domain by its map lock; the other device calls may run concurrently on
 *   different devices, and on one device except where noted.
 */
#ifndef IODMA_VFIO_H
#define IODMA_VFIO_H

#include <iodma/common.h>
#include <iodma/backend.h>

#ifdef __cplusplus
extern "C" {
#endif

struct iodma_domain;
struct iodma_dev;
struct iodma_vfio_device;

/* ---- backends ------------------------------------------------------------ */

/**
 * struct iodma_vfio_opts - Configuration of a VFIO type1v2 domain.
 * @size:       IODMA_OPTS_INIT().
 * @container:  0 or -1 (the default): open a new container
 *              (/dev/vfio/vfio), closed with the domain.  > 0: an open
 *              container to use (not closed by the domain); its IOMMU model
 *              is set here when it has none yet.
 * @nr_groups:  entries in @groups.
 * @groups:     VFIO group numbers (/dev/vfio/N) to add to the container.
 * @nr_devices: entries in @devices.
 * @devices:    PCI addresses ("0000:00:03.0") whose groups are added
 *              (a group named twice is added once).
 * @noiommu:    use VFIO's no-IOMMU mode: groups are /dev/vfio/noiommu-N and
 *              the container's model is VFIO_NOIOMMU_IOMMU.  There is no
 *              MAP_DMA then; the domain works like the identity backend:
 *              a map is accepted only when every page of [va, va + len)
 *              has the physical address iova + offset (/proc/self/pagemap,
 *              needs CAP_SYS_ADMIN), and the range is mlocked while mapped.
 *
 * A domain may be opened with no group at all; its caps are then a
 * placeholder (alignment = page size, [page, 2^39) minus the x86 MSI window
 * 0xfee00000-0xfeefffff: what VT-d, AMD-Vi and virtio-iommu all offer) until the
 * first group is added (iodma_vfio_add_group() or iodma_vfio_device_open()),
 * when VFIO_SET_IOMMU is done and the real caps are read.  Maps need a group.
 */
struct iodma_vfio_opts {
	size_t size;
	int container;
	uint32_t nr_groups;
	const int *groups;
	uint32_t nr_devices;
	const char *const *devices;
	bool noiommu;
};

/**
 * iodma_backend_vfio() - The VFIO type1v2 backend.
 *
 * Capabilities come from VFIO_IOMMU_GET_INFO: alignment = lowest page size
 * in iova_pgsizes; ranges from the IOVA-range capability (page 0 dropped,
 * a range reaching 2^64 cut one alignment unit short because type1 before
 * Linux 6.18 cannot unmap a mapping that ends there, at most
 * IODMA_MAX_IOVA_RANGES: the smallest are dropped beyond that);
 * max mappings = DMA_AVAIL + live mappings, DMA_AVAIL re-read at every
 * iodma_domain_get_caps() / avail_mappings; IODMA_CAP_DIRTY_TRACKING when
 * the migration capability is present; IODMA_CAP_UNMAP_ALL when the kernel
 * has VFIO_UNMAP_ALL.  The kernel's refusals pass through: -EEXIST (map over
 * a mapping), -ENOSPC (dma_entry_limit reached: see iodma_strerror()).  An
 * UNMAP_DMA that removes other than the expected bytes is -EIO.
 *
 * Context: thread-safe.
 * Return:  the static ops table; backend_config is a
 *          const struct iodma_vfio_opts * (NULL = a new container, no group).
 *          Open errors: -ENOENT no /dev/vfio/vfio (VFIO not loaded) or no such
 *          group; -EINVAL bad options or a BDF that does not parse;
 *          -EPROTO wrong VFIO API version; -EOPNOTSUPP no type1v2 (or no
 *          no-IOMMU mode); -EBUSY a group is not viable (a device of it is
 *          not bound to vfio-pci; iodma_vfio_last_error() names them) or
 *          already in another container; -EPERM; -ENOMEM.
 */
IODMA_EXPORT const struct iodma_backend_ops *iodma_backend_vfio(void);

/**
 * struct iodma_iommufd_opts - Configuration of an iommufd domain.
 * @size:    IODMA_OPTS_INIT().
 * @iommufd: 0 or -1 (the default): open /dev/iommu, closed with the domain;
 *           > 0: an open iommufd to use (not closed by the domain).
 *
 * Devices are attached with iodma_vfio_device_open().
 */
struct iodma_iommufd_opts {
	size_t size;
	int iommufd;
};

/**
 * iodma_backend_iommufd() - The iommufd backend (IOAS + VFIO device cdev).
 *
 * Ranges and alignment come from IOMMU_IOAS_IOVA_RANGES, re-read after
 * every device attach; maps use IOMMU_IOAS_MAP with a fixed IOVA (or
 * IOMMU_IOAS_MAP_FILE for fd-backed memory where the kernel has it).
 *
 * Context: thread-safe.
 * Return:  the static ops table; backend_config is a
 *          const struct iodma_iommufd_opts * or NULL.
 */
IODMA_EXPORT const struct iodma_backend_ops *iodma_backend_iommufd(void);

/**
 * iodma_backend_identity() - No IOMMU: IOVA = physical address.
 *
 * For bare metal and for devices behind no IOMMU.  A map of
 * [iova, iova + len) -> va is accepted only if every page of the buffer
 * is resident at physical address iova + (its offset in the buffer) per
 * /proc/self/pagemap: -EPERM when the kernel hides frame numbers (the
 * process lacks CAP_SYS_ADMIN), -EINVAL when the buffer is not physically
 * contiguous at @iova.  The range is mlocked while mapped (so it stays where
 * it was checked) and munlocked at unmap.  Caps: alignment = page size; one
 * range [page size, 2^52) (x86-64's physical address limit, page 0 left
 * out); max mappings 65535; IODMA_CAP_UNMAP_ALL.  Use
 * iodma_dev_create()'s virt_to_phys to learn where a buffer is.  The
 * backend_config must be NULL.
 *
 * Context: thread-safe.
 * Return:  the static ops table.
 */
IODMA_EXPORT const struct iodma_backend_ops *iodma_backend_identity(void);

/**
 * iodma_vfio_group_of() - The IOMMU group of a PCI device.
 * @bdf:   PCI address, "DDDD:BB:DD.F" (the 4-digit domain is required).
 * @group: receives the group number.
 *
 * Reads the link /sys/bus/pci/devices/@bdf/iommu_group.  The sysfs root can
 * be moved for tests with the environment variable IODMA_SYSFS_ROOT (e.g.
 * a temp dir holding bus/pci/devices/...).
 *
 * Context: thread-safe.
 * Return:  0; -EINVAL NULL argument or malformed @bdf; -ENOENT no such
 *          device, or it has no IOMMU group (no IOMMU, or no driver probed
 *          it yet); -EPROTO the link does not end in a number.
 */
IODMA_EXPORT int iodma_vfio_group_of(const char *bdf, int *group);

/**
 * iodma_vfio_bdf_valid() - Is a string a PCI address the VFIO calls accept?
 * @bdf: NUL-terminated string, or NULL.
 *
 * The form is Linux's PCI device name (the directory names of
 * /sys/bus/pci/devices, pci_name() in the kernel): "DDDD:BB:DD.F" with a
 * PCI domain of 4 to 8 hex digits (more than 4 for VMD-style domains such
 * as "10000:00:00.0"), 2 hex digits of bus, 2 of device and a function
 * 0..7; hex digits in either case.  Only the syntax is checked: whether
 * such a device exists is iodma_vfio_group_of()'s business.  Every call of
 * this header that takes a @bdf rejects, with -EINVAL, exactly the strings
 * this returns false for.
 *
 * Context: thread-safe; touches no file.
 * Return:  true if @bdf is well formed; false for NULL, a short or long
 *          domain, a missing ':' or '.', a non-hex digit, a function above
 *          7, or anything after the function digit.
 */
IODMA_EXPORT bool iodma_vfio_bdf_valid(const char *bdf);

/**
 * iodma_vfio_add_group() - Add a VFIO group to a vfio domain's container.
 * @d:     a domain created with iodma_backend_vfio().
 * @group: group number (/dev/vfio/@group, or noiommu-@group).
 *
 * The group must be viable (every device in it bound to vfio-pci or no
 * driver).  The first group sets the container's IOMMU model; the caps are
 * re-read after every add (iodma_domain_refresh_caps()).  Adding a group
 * the container already has is a no-op.  The device nodes are looked up
 * under IODMA_VFIO_DEV_DIR when that environment variable is set
 * (default /dev/vfio).
 *
 * Context: thread-safe; may block.
 * Return:  0; -EINVAL @d is not a vfio domain or @group < 0; -ENOENT no such
 *          group; -EBUSY not viable or in another container; -EPERM; the
 *          caps refresh error (-EBUSY: a live mapping lies outside the
 *          new ranges); -ENOMEM.  On error the group is not in the container.
 */
IODMA_EXPORT int iodma_vfio_add_group(struct iodma_domain *d, int group);

/**
 * iodma_vfio_last_error() - Why the calling thread's last VFIO call failed.
 *
 * Context: thread-safe (per-thread text).
 * Return:  a sentence set by the last failing call of this header's
 *          functions or of the vfio/iommufd/identity backends on this
 *          thread, or "" if none failed yet.  Valid until the thread's next
 *          such call.
 */
IODMA_EXPORT const char *iodma_vfio_last_error(void);

/**
 * struct iodma_vfio_stats - ioctls a vfio or iommufd domain has issued.
 * @size:         IODMA_STRUCT_INIT(); see iodma_vfio_get_stats().
 * @map_ioctls:   VFIO_IOMMU_MAP_DMA / IOMMU_IOAS_MAP(_FILE) calls.
 * @unmap_ioctls: VFIO_IOMMU_UNMAP_DMA / IOMMU_IOAS_UNMAP calls.
 * @other_ioctls: every other ioctl of the backend: GET_INFO, IOVA ranges,
 *                API version and extension checks, group status and
 *                container set/unset, IOAS alloc/destroy, device
 *                bind/attach/detach.
 *
 * Counted since the domain was created, failed calls included.  The VFIO
 * device calls of this header (region info, interrupts, reset) are not
 * counted: they go to the device fd, not to the domain.
 */
struct iodma_vfio_stats {
	size_t size;
	uint64_t map_ioctls;
	uint64_t unmap_ioctls;
	uint64_t other_ioctls;
};

/**
 * iodma_vfio_get_stats() - The ioctl counters of a vfio or iommufd domain.
 * @d:  a domain created with iodma_backend_vfio() or iodma_backend_iommufd().
 * @st: receives the counters; its @size set by
 *      IODMA_STRUCT_INIT(struct iodma_vfio_stats) (growth rule of
 *      iodma/common.h, Linux's copy_struct_to_user()).
 *
 * Each counter is read atomically, the three not as one snapshot (a call
 * concurrent with maps may see one counter move before another).  In VFIO
 * no-IOMMU mode maps make no ioctl: only @other_ioctls grows.
 *
 * Context: thread-safe, lock-free.
 * Return:  0 and min(st->size, sizeof(struct iodma_vfio_stats)) bytes
 *          filled, the caller's bytes past the library's struct zeroed;
 *          -EINVAL NULL argument, @d is neither a vfio nor an iommufd
 *          domain, or st->size smaller than the first version of struct
 *          iodma_vfio_stats (*@st unchanged).
 */
IODMA_EXPORT int iodma_vfio_get_stats(const struct iodma_domain *d,
				      struct iodma_vfio_stats *st);

/**
 * struct iodma_vfio_iommu_info - The raw VFIO_IOMMU_GET_INFO figures.
 * @iova_pgsizes:  the page sizes the IOMMU maps, as VFIO's iova_pgsizes
 *                 bitmap (bit n set: 2^n-byte pages); its lowest set bit
 *                 is the domain's alignment.  0 when the kernel reported
 *                 none (VFIO_IOMMU_INFO_PGSIZES clear).
 * @dirty_pgsizes: the page sizes the container can log writes at (the
 *                 migration capability's pgsize_bitmap); 0 without it.
 * @dma_avail:     the DMA_AVAIL capability: how many more mappings the
 *                 container accepts now (vfio_iommu_type1's
 *                 dma_entry_limit minus every mapping in the container,
 *                 other users' included); 0 when @has_dma_avail is false.
 * @has_dma_avail: the kernel reported DMA_AVAIL (Linux 5.10 and later).
 * @migration:     the migration capability is present, so the domain has
 *                 IODMA_CAP_DIRTY_TRACKING.
 *
 * An output struct: see "Growth rule" in iodma/common.h.
 */
struct iodma_vfio_iommu_info {
	uint64_t iova_pgsizes;
	uint64_t dirty_pgsizes;
	uint32_t dma_avail;
	bool has_dma_avail;
	bool migration;
};

/**
 * iodma_vfio_get_iommu_info() - What the type1 IOMMU of a vfio domain says.
 * @d:    a domain created with iodma_backend_vfio(), not in no-IOMMU mode,
 *        with at least one group in its container.
 * @info: receives the figures.
 *
 * Issues VFIO_IOMMU_GET_INFO on the domain's container now and walks its
 * capability chain (VFIO uapi, <linux/vfio.h>): the figures behind
 * iodma_domain_get_caps() before the library turns them into caps, for
 * tools that report them (iodma info) and for checking a kernel.  The
 * domain is not changed; the ioctl counts in iodma_vfio_get_stats()'s
 * @other_ioctls.
 *
 * Context: thread-safe; takes the domain's backend lock (not from a map
 *          listener); may block in the kernel.
 * Return:  0 and *@info filled; -EINVAL NULL argument, @d is not a vfio
 *          domain, or it is in no-IOMMU mode (no GET_INFO there); -ENODEV
 *          no group in the container yet, so no IOMMU model to ask;
 *          -ENOMEM; -EIO the kernel kept asking for a larger buffer; or
 *          the ioctl's error.  *@info is untouched on error, and
 *          iodma_vfio_last_error() says why.
 */
IODMA_EXPORT int iodma_vfio_get_iommu_info(struct iodma_domain *d,
					   struct iodma_vfio_iommu_info *info);

/* ---- VFIO PCI device access ---------------------------------------------- */

/* Region indexes of a vfio-pci device (VFIO_PCI_*_REGION_INDEX). */
#define IODMA_VFIO_REGION_BAR0   0u /* BARs are 0..5 */
#define IODMA_VFIO_REGION_ROM    6u
#define IODMA_VFIO_REGION_CONFIG 7u
#define IODMA_VFIO_REGION_VGA    8u
#define IODMA_VFIO_NR_BARS       6u

/* struct iodma_vfio_region_info.flags */
#define IODMA_VFIO_REGION_READ  0x1u
#define IODMA_VFIO_REGION_WRITE 0x2u
#define IODMA_VFIO_REGION_MMAP  0x4u

/**
 * struct iodma_vfio_region_info - One region of a VFIO device.
 * @index:  region index (IODMA_VFIO_REGION_*).
 * @flags:  IODMA_VFIO_REGION_* bits.
 * @size:   bytes; 0 = the region does not exist (e.g. an unused BAR).
 * @offset: where the region starts in the device fd (for pread/mmap).
 */
struct iodma_vfio_region_info {
	uint32_t index;
	uint32_t flags;
	uint64_t size;
	uint64_t offset;
};

/**
 * iodma_vfio_device_open() - Open a PCI device through a domain.
 * @d:   a vfio or iommufd domain.
 * @bdf: PCI address "DDDD:BB:DD.F"; the device must be bound to vfio-pci.
 * @out: receives the device.
 *
 * vfio domain: the device's group joins the domain's container if it is not
 * in it yet, then VFIO_GROUP_GET_DEVICE_FD.  iommufd domain: the cdev
 * /dev/vfio/devices/vfioN found through /sys/bus/pci/devices/@bdf/vfio-dev/
 * is opened, bound to the domain's iommufd and attached to its IOAS.
 * Either way the domain's caps are refreshed.
 *
 * Context: thread-safe; may block.
 * Return:  0; -EINVAL bad argument or @d is neither a vfio nor an iommufd
 *          domain; -ENOENT no such device / group / cdev (not bound to
 *          vfio-pci); -EBUSY not viable or in use; -ENOMEM; or the kernel's
 *          error.  No device is open on error; a group the call added to
 *          the container stays there (viable, harmless) until the domain
 *          is destroyed.
 */
IODMA_EXPORT int iodma_vfio_device_open(struct iodma_domain *d, const char *bdf,
					struct iodma_vfio_device **out);

/**
 * iodma_vfio_device_close() - Close a device.
 * @dev: device, or NULL (no-op).
 *
 * Interrupts are disabled, BARs unmapped, the iommufd attachment detached
 * and the device fd closed.  The group stays in the container until the
 * domain is destroyed.  MMIO windows registered with
 * iodma_vfio_register_bars() point at unmapped memory afterwards: destroy
 * that iodma_dev first.
 *
 * Context: not thread-safe against other calls on @dev.
 * Return:  nothing.
 */
IODMA_EXPORT void iodma_vfio_device_close(struct iodma_vfio_device *dev);

/**
 * iodma_vfio_device_fd() - The VFIO device file descriptor.
 * @dev: device.
 *
 * For ioctls this header does not wrap.  Owned by @dev: do not close it.
 *
 * Context: thread-safe.
 * Return:  the fd, or -EINVAL for a NULL @dev.
 */
IODMA_EXPORT int iodma_vfio_device_fd(const struct iodma_vfio_device *dev);

/**
 * iodma_vfio_device_counts() - How many regions and IRQ indexes a device has.
 * @dev:         device.
 * @nr_regions:  if not NULL, receives VFIO_DEVICE_GET_INFO's num_regions.
 * @nr_irqs:     if not NULL, receives num_irqs.
 *
 * Context: thread-safe.
 * Return:  0; -EINVAL NULL @dev.
 */
IODMA_EXPORT int iodma_vfio_device_counts(const struct iodma_vfio_device *dev,
					  uint32_t *nr_regions,
					  uint32_t *nr_irqs);

/**
 * iodma_vfio_region_info() - VFIO_DEVICE_GET_REGION_INFO.
 * @dev:   device.
 * @index: region index, < nr_regions.
 * @info:  receives the region's flags, size and offset.
 *
 * Context: thread-safe.
 * Return:  0; -EINVAL bad argument or index; or the kernel's error.
 */
IODMA_EXPORT int iodma_vfio_region_info(struct iodma_vfio_device *dev,
					uint32_t index,
					struct iodma_vfio_region_info *info);

/**
 * iodma_vfio_map_bar() - mmap a BAR.
 * @dev: device.
 * @bar: 0..5.
 * @va:  receives the CPU address of the BAR's first byte.
 * @len: if not NULL, receives the BAR's size.
 *
 * The mapping is kept by @dev (a second call returns the same address) and
 * unmapped by iodma_vfio_device_close().  A BAR without the MMAP flag (an
 * I/O-port BAR, or one the kernel will not let user space map) is
 * -EOPNOTSUPP: use iodma_vfio_region_read/write() instead.
 *
 * Context: not thread-safe against other calls on @dev.
 * Return:  0; -EINVAL bad argument; -ENOENT the BAR is not implemented
 *          (size 0); -EOPNOTSUPP not mappable; or mmap's error.
 */
IODMA_EXPORT int iodma_vfio_map_bar(struct iodma_vfio_device *dev, uint32_t bar,
				    void **va, uint64_t *len);

/**
 * iodma_vfio_region_read() - pread from a region.
 * @dev:    device.
 * @index:  region index.
 * @offset: byte offset inside the region.
 * @buf:    destination.
 * @len:    bytes; > 0; [offset, offset + len) inside the region.
 *
 * For MMIO registers use an access width the device accepts (1, 2, 4 or 8
 * bytes: vfio-pci passes the width through).
 *
 * Context: thread-safe.
 * Return:  0; -EINVAL bad argument or outside the region; -EACCES the region
 *          is not readable; -EIO short read; or pread's error.
 */
IODMA_EXPORT int iodma_vfio_region_read(struct iodma_vfio_device *dev,
					uint32_t index, uint64_t offset,
					void *buf, size_t len);

/**
 * iodma_vfio_region_write() - pwrite to a region.
 * @dev:    device.
 * @index:  region index.
 * @offset: byte offset inside the region.
 * @buf:    source.
 * @len:    bytes; > 0; inside the region.
 *
 * Context: thread-safe.
 * Return:  0; -EINVAL bad argument or outside the region; -EACCES the region
 *          is not writable; -EIO short write; or pwrite's error.
 */
IODMA_EXPORT int iodma_vfio_region_write(struct iodma_vfio_device *dev,
					 uint32_t index, uint64_t offset,
					 const void *buf, size_t len);

/**
 * iodma_vfio_config_read() - Read PCI config space.
 * @dev:    device.
 * @offset: byte offset (0..4095).
 * @buf:    destination.
 * @len:    bytes; > 0; offset + len <= the config region's size.
 *
 * Context: thread-safe.
 * Return:  as iodma_vfio_region_read() on IODMA_VFIO_REGION_CONFIG.
 */
IODMA_EXPORT int iodma_vfio_config_read(struct iodma_vfio_device *dev,
					uint32_t offset, void *buf, size_t len);

/**
 * iodma_vfio_config_write() - Write PCI config space.
 * @dev:    device.
 * @offset: byte offset.
 * @buf:    source.
 * @len:    bytes; > 0; inside the config region.
 *
 * vfio-pci virtualises parts of config space (BARs, MSI/MSI-X capability,
 * some command bits): what reads back is the virtualised view.
 *
 * Context: thread-safe.
 * Return:  as iodma_vfio_region_write().
 */
IODMA_EXPORT int iodma_vfio_config_write(struct iodma_vfio_device *dev,
					 uint32_t offset, const void *buf,
					 size_t len);

/**
 * iodma_vfio_set_bus_master() - Enable or disable bus mastering.
 * @dev:    device.
 * @enable: true sets, false clears bit 2 of the command register (0x04).
 *
 * The device can do DMA only while bus mastering is on.
 *
 * Context: not thread-safe against other config writes to the command
 *          register (read-modify-write).
 * Return:  0, or the config read/write error.
 */
IODMA_EXPORT int iodma_vfio_set_bus_master(struct iodma_vfio_device *dev,
					   bool enable);

/**
 * iodma_vfio_reset() - VFIO_DEVICE_RESET.
 * @dev: device.
 *
 * Context: not thread-safe against other calls on @dev.
 * Return:  0; -EOPNOTSUPP the device has no reset method
 *          (VFIO_DEVICE_FLAGS_RESET clear); or the kernel's error.
 */
IODMA_EXPORT int iodma_vfio_reset(struct iodma_vfio_device *dev);

/* Interrupt kinds (VFIO_PCI_*_IRQ_INDEX) */
enum iodma_vfio_irq_type {
	IODMA_VFIO_IRQ_INTX = 0,
	IODMA_VFIO_IRQ_MSI = 1,
	IODMA_VFIO_IRQ_MSIX = 2,
	IODMA_VFIO_IRQ_AUTO = 100, /* MSI-X, else MSI, else INTx */
};

/**
 * iodma_vfio_irq_info() - VFIO_DEVICE_GET_IRQ_INFO.
 * @dev:   device.
 * @type:  IODMA_VFIO_IRQ_INTX, _MSI or _MSIX.
 * @count: receives how many vectors of that kind the device has (0: none).
 *
 * Context: thread-safe.
 * Return:  0; -EINVAL bad argument; or the kernel's error.
 */
IODMA_EXPORT int iodma_vfio_irq_info(struct iodma_vfio_device *dev,
				     enum iodma_vfio_irq_type type,
				     uint32_t *count);

/**
 * iodma_vfio_irq_enable() - Deliver interrupts to eventfds.
 * @dev:      device.
 * @type:     IODMA_VFIO_IRQ_MSIX, _MSI, _INTX, or _AUTO (the first of
 *            MSI-X, MSI, INTx the device has).
 * @nr:       eventfds in @eventfds; > 0; vector i signals @eventfds[i].
 *            Clamped to the vectors the chosen kind has (INTx: 1).
 * @eventfds: eventfds (eventfd(2)); the caller keeps them open.
 * @used:     if not NULL, receives the kind chosen.
 *
 * VFIO_DEVICE_SET_IRQS with DATA_EVENTFD | ACTION_TRIGGER.  Only one kind
 * is enabled at a time: enabling another first disables the current one.
 * INTx is auto-masked by the kernel: unmask it (VFIO_IRQ_SET_ACTION_UNMASK
 * on the device fd) after handling.
 *
 * Context: not thread-safe against other irq calls on @dev.
 * Return:  0; -EINVAL bad argument; -ENOENT the device has no interrupt of
 *          that kind (none at all for AUTO); or the kernel's error (nothing
 *          enabled then).
 */
IODMA_EXPORT int iodma_vfio_irq_enable(struct iodma_vfio_device *dev,
				       enum iodma_vfio_irq_type type,
				       uint32_t nr, const int *eventfds,
				       enum iodma_vfio_irq_type *used);

/**
 * iodma_vfio_irq_disable() - Stop interrupt delivery.
 * @dev: device.
 *
 * Context: not thread-safe against other irq calls on @dev.
 * Return:  0 (also when nothing was enabled); or the kernel's error.
 */
IODMA_EXPORT int iodma_vfio_irq_disable(struct iodma_vfio_device *dev);

/**
 * iodma_vfio_register_bars() - Declare the device's BARs as MMIO windows.
 * @vdev: VFIO device.
 * @dev:  the iodma_dev of the same device (iodma/dma.h).
 *
 * Every implemented, mmappable memory BAR is mapped (iodma_vfio_map_bar())
 * and added with iodma_dev_add_mmio() at its bus address read from config
 * space (64-bit BARs combined; I/O BARs skipped), so that
 * iodma_mmio_phys_to_virt() validates an access against the BAR's size
 * (virtio-drivers Hal::mmio_phys_to_virt).
 *
 * Context: not thread-safe against other calls on @vdev.
 * Return:  the number of windows added (>= 0); or the first error (windows
 *          added before it stay: iodma_dev has no remove).
 */
IODMA_EXPORT int iodma_vfio_register_bars(struct iodma_vfio_device *vdev,
					  struct iodma_dev *dev);

#ifdef __cplusplus
}
#endif
#endif /* IODMA_VFIO_H */
