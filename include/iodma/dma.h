/* SPDX-License-Identifier: MIT */
/*
 * iodma/dma.h - the driver side: a device's DMA API.
 *
 * Concepts
 *   An iodma_dev is one device as its driver sees it (Linux's struct device
 *   DMA view, dma-api crate DmaOp, virtio-drivers Hal): a domain to map into (or
 *   none: direct mode, where the DMA address is the physical address given by
 *   the platform), a dma_mask, whether the device is cache-coherent, a bounce
 *   policy, and constraints (minimum alignment, max segment size, segment
 *   boundary).  "iova" below is the DMA address the device uses, whether an
 *   IOMMU translates it or not.
 *
 *   Coherent allocations are zeroed, page aligned, contiguous in IOVA space
 *   and below dma_mask.  Streaming maps take a direction and bounce when the
 *   buffer is above dma_mask (direct mode), misaligned for the device, or the
 *   policy says so (ALWAYS: confidential-VM style sharing, as virtio-drivers'
 *   test HAL does).  A bounce copies the buffer in at map (for FROM_DEVICE
 *   too, as Linux's swiotlb does: the slots then never show the device, or
 *   give back to the buffer, data an earlier mapping left there) and copies
 *   back at unmap or sync-for-cpu for FROM_DEVICE/BIDIRECTIONAL.
 *   sync_for_device (DmaOp::confirm_write) and sync_for_cpu
 *   (DmaOp::prepare_read) do the bounce copies and, for a non-coherent
 *   device, the cache maintenance (iodma/cache.h).
 *
 *   Registered memory (a VA range registered once, mapped with as few
 *   mappings as the alignment allows) makes later maps of buffers inside it a
 *   lookup in a multi-level VA -> IOVA radix table, with no new mapping and
 *   no system call.
 *
 *   A domain map that a listener rejected and the backend refused to take
 *   back is live (-EUCLEAN, iodma/domain.h).  The functions here then unmap
 *   it once more themselves and fail with -EIO, nothing mapped; only if
 *   the backend refuses again do they return -EUCLEAN: the device may
 *   still reach the memory, whose IOVA space stays allocated (and, for
 *   coherent memory, whose pages are never freed).  Keep such a buffer.
 *
 *   Locking: every function is thread-safe unless it says otherwise.  The
 *   bounce pool is split in areas with their own locks, taken only to
 *   reserve or free slots: a thread keeps the last runs it freed (up to a
 *   quarter of the pool in all threads) and maps from the one it freed
 *   last first, whose slots are still in its cache, so a bounce map +
 *   unmap of the same size as the last one takes no lock, and the unmap
 *   ends its run with one compare-and-swap on whichever thread it runs
 *   (of two racing unmaps of one map, one gets -EINVAL).  None of these
 *   functions is async-signal-safe.  Statistics are per-thread counters
 *   summed when read.
 *   Registered-memory lookups are lock-free.  A given mapping must not be
 *   unmapped twice or synced after unmap (as with Linux's DMA API, where
 *   it is undefined and dma-debug reports it best effort).  iodma refuses
 *   (-EINVAL, nothing changed) an unmap that comes after the map's unmap
 *   returned, and of two unmaps of one bounce at the same time exactly one
 *   succeeds (only it copies back).  A thread that exits keeps the free
 *   runs it kept for its next maps (at most 2 x 4 KiB, 64 KiB for the
 *   first threads) until the device is destroyed.
 */
#ifndef IODMA_DMA_H
#define IODMA_DMA_H

#include <iodma/common.h>

#ifdef __cplusplus
extern "C" {
#endif

struct iodma_domain;
struct iodma_dev;

/* Direction of a streaming mapping (DmaDirection, BufferDirection). */
enum iodma_dir {
	IODMA_TO_DEVICE = 1,     /* driver -> device: device reads */
	IODMA_FROM_DEVICE = 2,   /* device -> driver: device writes */
	IODMA_BIDIRECTIONAL = 3,
};

/* When streaming maps go through the bounce pool. */
enum iodma_bounce_policy {
	IODMA_BOUNCE_WHEN_NEEDED = 0, /* above dma_mask or misaligned */
	IODMA_BOUNCE_NEVER = 1,       /* such maps fail with -ERANGE/-EINVAL */
	IODMA_BOUNCE_ALWAYS = 2,      /* every streaming map bounces */
};

/**
 * struct iodma_dev_opts - Describe a device.
 * @size:            IODMA_OPTS_INIT().
 * @domain:          domain to map into, or NULL for direct mode.
 * @dma_mask:        highest address the device can reach (inclusive);
 *                   0 = all 64 bits.  Must be >= 0xffff.
 * @noncoherent:     true if the device does not snoop CPU caches: syncs then
 *                   clean/invalidate (iodma/cache.h).
 * @bounce:          enum iodma_bounce_policy.
 * @min_align:       alignment the device needs of a streaming buffer's
 *                   address; a power of two; 0 = 1.
 * @max_segment_size: longest DMA segment the device takes; 0 = no limit.
 * @segment_boundary: a segment must not cross a multiple of
 *                   (segment_boundary + 1); a mask like 0xffffffff; 0 = none.
 * @bounce_pool_size: bytes in the bounce pool; 0 = 4 MiB.  The pool is
 *                   created at dev creation unless @bounce is NEVER.
 * @bounce_slot_size: bytes per slot; a power of two >= 64; 0 = 2048 (Linux
 *                   swiotlb's IO_TLB_SIZE).  A map takes contiguous slots.
 * @virt_to_phys:    direct mode only: platform hook giving the bus address
 *                   of a host VA; NULL = the OS default (Linux:
 *                   /proc/self/pagemap, needs CAP_SYS_ADMIN).  Must return 0
 *                   or a negative errno.
 * @platform_arg:    passed to @virt_to_phys.
 * @bounce_pool:     optional caller-supplied bounce pool memory of
 *                   @bounce_pool_size bytes (a multiple of the slot size),
 *                   aligned to the domain alignment (page size in direct
 *                   mode); NULL = the library allocates it.  Needed in
 *                   direct mode when the platform's pages are not below
 *                   dma_mask (a low-memory carve-out, a shared window of a
 *                   confidential VM).  Must stay valid until destroy.
 * @bounce_pool_bus: direct mode with @bounce_pool: its bus address
 *                   (slot-size aligned; the pool's last byte at or below
 *                   dma_mask).  Ignored with a domain, where the pool is
 *                   mapped at IOVA space allocated below dma_mask.
 */
struct iodma_dev_opts {
	size_t size;
	struct iodma_domain *domain;
	uint64_t dma_mask;
	bool noncoherent;
	enum iodma_bounce_policy bounce;
	uint64_t min_align;
	uint64_t max_segment_size;
	uint64_t segment_boundary;
	size_t bounce_pool_size;
	size_t bounce_slot_size;
	int (*virt_to_phys)(void *arg, const void *va, uint64_t *pa);
	void *platform_arg;
	void *bounce_pool;
	uint64_t bounce_pool_bus;
};

/**
 * iodma_dev_create() - Create a device's DMA context.
 * @opts: options (required: at least IODMA_OPTS_INIT).
 * @out:  receives the device.
 *
 * Context: thread-safe; may block (allocates and maps the bounce pool).
 * Return:  0; -EINVAL bad options (size below the first version, which
 *          ended at @platform_arg: a struct of that size is accepted and
 *          the later fields take their defaults); -E2BIG @opts is longer
 *          than this library knows and a byte past its end is non-zero
 *          (growth rule, iodma/common.h); -ENOMEM (including: no IOVA space below
 *          dma_mask for the bounce pool); -EIO the pool's map was rejected
 *          by a listener and had to be taken back; or the domain's map
 *          error.  Nothing allocated on error, except with -EUCLEAN: the
 *          backend refused to take the pool's mapping back, so the device
 *          may still reach the pool's pages, which stay allocated (with their
 *          IOVA space and the mapping, see iodma/domain.h).
 */
IODMA_EXPORT int iodma_dev_create(const struct iodma_dev_opts *opts,
				  struct iodma_dev **out);

/**
 * iodma_dev_destroy() - Free a device's DMA context.
 * @dev: device, or NULL.
 *
 * Unmaps the bounce pool and every registration.  Streaming maps and
 * coherent allocations still live are released too (a driver bug, counted
 * in the stats' leaked field before they go).
 *
 * Context: not thread-safe against other calls on @dev.
 * Return:  nothing.
 */
IODMA_EXPORT void iodma_dev_destroy(struct iodma_dev *dev);

/**
 * iodma_dev_domain() - The domain a device maps into.
 * @dev: device.
 *
 * Context: thread-safe.
 * Return:  the domain, or NULL in direct mode.
 */
IODMA_EXPORT struct iodma_domain *iodma_dev_domain(const struct iodma_dev *dev);

/* ---- coherent memory (DmaOp::alloc_coherent, VirtIoHal::dma_alloc) ------ */

/**
 * iodma_alloc_coherent() - Allocate DMA memory both CPU and device use.
 * @dev:  device.
 * @len:  bytes; > 0; rounded up to pages (the domain alignment with a domain).
 * @va:   receives the CPU address (page aligned).
 * @iova: receives the device address (below dma_mask).
 *
 * The memory is zeroed and contiguous in IOVA space.
 *
 * Context: thread-safe; may block.
 * Return:  0; -EINVAL len 0 or too large; -ENOMEM no memory or no IOVA space
 *          below dma_mask (direct mode: the pages are not below the mask);
 *          -EUCLEAN the domain map was rejected and could not be undone
 *          (Concepts: the pages stay mapped and allocated, unreachable to
 *          the caller); or the domain's map error (-EIO when it was undone
 *          after all).  Nothing allocated on any error but -EUCLEAN.
 */
IODMA_EXPORT int iodma_alloc_coherent(struct iodma_dev *dev, size_t len,
				      void **va, uint64_t *iova);

/**
 * iodma_free_coherent() - Free memory from iodma_alloc_coherent().
 * @dev:  device.
 * @len:  the len passed at allocation.
 * @va:   the CPU address returned.
 * @iova: the device address returned.
 *
 * Argument order is Linux's dma_free_coherent(dev, size, cpu_addr,
 * dma_handle), matching iodma_alloc_coherent(dev, len, &va, &iova) (before
 * 0.2 it was (dev, va, iova, len)).
 *
 * Context: thread-safe; may block (waits for access sections).
 * Return:  0; -EINVAL (@va, @iova, @len) is not a live coherent allocation
 *          of @dev; or the domain's unmap error (the backend's, e.g. a
 *          VFIO unmap ioctl's): the allocation stays live and mapped, and
 *          may be freed again.  Nothing freed on error.
 */
IODMA_EXPORT int iodma_free_coherent(struct iodma_dev *dev, size_t len,
				     void *va, uint64_t iova);

/* ---- streaming maps (DmaOp::map_single, dma_map_single) ----------------- */

/**
 * iodma_map_single() - Give the device a buffer for one transfer.
 * @dev:  device.
 * @va:   buffer; any alignment.
 * @len:  bytes; > 0.
 * @dir:  enum iodma_dir.
 * @iova: receives the device address of @va's first byte.
 *
 * Inside registered memory: a lookup, no mapping.  Otherwise, with a domain:
 * the pages covering the buffer are mapped at IOVA space allocated below
 * dma_mask.  Direct mode: the physical address.  Bounces as the policy says
 * (see Concepts); a bounce copies the buffer in now (every direction).
 * For a non-coherent device the buffer's cache lines are cleaned (to device)
 * or invalidated (from device).
 *
 * Context: thread-safe; may block (domain map) unless the buffer is
 *          registered or bounced.
 * Return:  0; -EINVAL len 0, overflow or bad dir, or the buffer is
 *          misaligned (min_align) and the policy is NEVER; -ENOMEM bounce
 *          pool full or no IOVA space; -ERANGE the buffer is above dma_mask
 *          (direct mode, including not physically contiguous) and the
 *          policy is NEVER; -EUCLEAN the domain map was rejected and could
 *          not be undone (Concepts: the device may still reach the
 *          buffer); or the domain's error (-EIO when it was undone after
 *          all; or direct mode's virt_to_phys error).  Nothing mapped on
 *          any error but -EUCLEAN.
 */
IODMA_EXPORT int iodma_map_single(struct iodma_dev *dev, void *va, size_t len,
				  enum iodma_dir dir, uint64_t *iova);

/**
 * iodma_map_single_attrs() - DmaOp::map_single with per-call constraints.
 * @dev:      device.
 * @va:       buffer.
 * @len:      bytes; > 0.
 * @align:    alignment the device needs of the DMA address; a power of two;
 *            0 = the device's min_align.  A buffer whose address does not
 *            have it is bounced (WHEN_NEEDED) or refused (-EINVAL, NEVER).
 * @dma_mask: mask for this map; 0 = the device's; must not exceed it.
 * @dir:      enum iodma_dir.
 * @iova:     receives the device address.
 *
 * Context: as iodma_map_single().
 * Return:  as iodma_map_single().
 */
IODMA_EXPORT int iodma_map_single_attrs(struct iodma_dev *dev, void *va,
					size_t len, uint64_t align,
					uint64_t dma_mask, enum iodma_dir dir,
					uint64_t *iova);

/**
 * iodma_unmap_single() - End a streaming map.
 * @dev:  device.
 * @iova: the address iodma_map_single() returned.
 * @len:  the len passed to it.
 * @dir:  the dir passed to it.
 *
 * FROM_DEVICE/BIDIRECTIONAL bounces are copied back to the buffer; a
 * non-coherent device's buffer lines are invalidated.  After return the
 * device can no longer reach the buffer (domain unmap semantics).
 *
 * Context: thread-safe; may block.  Any thread may unmap a map made on
 *          another.  An unmap of a map being unmapped at the same time on
 *          another thread is the caller's bug (Concepts: -EINVAL for one
 *          of the two).
 * Return:  0; -EINVAL no such live streaming map; or the domain's unmap
 *          error (the backend's): the map stays live and may be unmapped
 *          again.  Nothing changed on error.
 */
IODMA_EXPORT int iodma_unmap_single(struct iodma_dev *dev, uint64_t iova,
				    size_t len, enum iodma_dir dir);

/**
 * iodma_sync_for_cpu() - Let the CPU read what the device wrote
 *                        (DmaOp::prepare_read, dma_sync_single_for_cpu).
 * @dev:  device.
 * @iova: an address inside a live streaming map (iova + offset).
 * @len:  bytes; > 0; [iova, iova + len) inside that map.
 * @dir:  the direction of the map.
 *
 * Bounced FROM_DEVICE/BIDIRECTIONAL: copies bounce -> buffer.  Non-coherent:
 * invalidates the buffer's cache lines first.
 *
 * Context: thread-safe (for distinct maps).
 * Return:  0; -EINVAL not inside a live map of @dev, or bad dir.
 */
IODMA_EXPORT int iodma_sync_for_cpu(struct iodma_dev *dev, uint64_t iova,
				    size_t len, enum iodma_dir dir);

/**
 * iodma_sync_for_device() - Hand CPU writes to the device
 *                           (DmaOp::confirm_write, dma_sync_single_for_device).
 * @dev:  device.
 * @iova: an address inside a live streaming map.
 * @len:  bytes; > 0; inside that map.
 * @dir:  the direction of the map.
 *
 * Bounced TO_DEVICE/BIDIRECTIONAL: copies buffer -> bounce.  Non-coherent:
 * cleans the cache lines after.
 *
 * Context: thread-safe (for distinct maps).
 * Return:  0; -EINVAL not inside a live map of @dev, or bad dir.
 */
IODMA_EXPORT int iodma_sync_for_device(struct iodma_dev *dev, uint64_t iova,
				       size_t len, enum iodma_dir dir);

/* ---- scatter-gather ------------------------------------------------------ */

/**
 * struct iodma_sg - One scatter-gather element.
 * @va:      input: buffer.
 * @len:     input: bytes; > 0.
 * @iova:    output: device address of this element's first byte.
 * @seg_iova: output, valid for the first N elements where N is what
 *           iodma_map_sg() returned: the Nth merged DMA segment's address.
 * @seg_len: output, likewise: its length.
 *
 * An array element, like struct iovec: it has no size member because a
 * caller and a library that disagree on sizeof(struct iodma_sg) would
 * stride the array differently.  Its layout is frozen for the soname
 * (growth rule of iodma/common.h).
 */
struct iodma_sg {
	void *va;
	size_t len;
	uint64_t iova;
	uint64_t seg_iova;
	uint64_t seg_len;
};

/**
 * iodma_map_sg() - Map a scatter-gather list (dma_map_sg).
 * @dev:   device.
 * @sg:    @nents elements.
 * @nents: > 0.
 * @dir:   enum iodma_dir.
 *
 * With a domain the elements get consecutive IOVA space from one allocation,
 * so elements that end and start on page boundaries merge into one DMA
 * segment.  Elements are bounced individually as the policy says.  Every
 * segment, merged or not, respects max_segment_size and segment_boundary
 * whichever way its elements were mapped (Linux's dma_map_sg contract): an
 * element in registered memory whose registered IOVA would cross a
 * boundary line is mapped dynamically instead (or bounced without a
 * domain), and so is a direct-mode element whose bus address would.
 *
 * Context: thread-safe; may block.
 * Return:  the number of DMA segments (>= 1) described in the first
 *          elements' seg_iova/seg_len; -EINVAL bad list (an element of
 *          len 0, wrapping, longer than max_segment_size or than the
 *          boundary window), or, policy NEVER, an element whose address
 *          lacks min_align (as iodma_map_single()), or whose bytes would
 *          cross a boundary line wherever they are mapped (direct mode:
 *          its bus address; with a domain: its offset in its page plus
 *          its length exceed the window; other policies bounce such an
 *          element); -ENOMEM; -EUCLEAN
 *          a domain map or the rollback's unmap could not be undone
 *          (Concepts: the device may still reach some elements); or the
 *          domain's error (-EIO when a map left live was undone after
 *          all).  All or nothing: on any error but -EUCLEAN no element is
 *          mapped.
 */
IODMA_EXPORT int iodma_map_sg(struct iodma_dev *dev, struct iodma_sg *sg,
			      size_t nents, enum iodma_dir dir);

/**
 * iodma_unmap_sg() - Unmap a list mapped by iodma_map_sg().
 * @dev:   device.
 * @sg:    the same list (with the iova fields as iodma_map_sg() left them).
 * @nents: the same count.
 * @dir:   the same direction.
 *
 * Context: thread-safe; may block.
 * Return:  0; -EINVAL the list is not a live mapping of @dev; or the
 *          domain's unmap error (the backend's): the whole list stays
 *          mapped and may be unmapped again.  Nothing changed on error.
 */
IODMA_EXPORT int iodma_unmap_sg(struct iodma_dev *dev, struct iodma_sg *sg,
				size_t nents, enum iodma_dir dir);

/**
 * iodma_sync_sg_for_cpu() - iodma_sync_for_cpu() on every element.
 * @dev:   device.
 * @sg:    the list as iodma_map_sg() mapped it.
 * @nents: the count it was mapped with.
 * @dir:   the direction it was mapped with.
 *
 * Context: thread-safe.
 * Return:  0; -EINVAL.
 */
IODMA_EXPORT int iodma_sync_sg_for_cpu(struct iodma_dev *dev,
				       struct iodma_sg *sg, size_t nents,
				       enum iodma_dir dir);

/**
 * iodma_sync_sg_for_device() - iodma_sync_for_device() on every element.
 * @dev:   device.
 * @sg:    the list as iodma_map_sg() mapped it.
 * @nents: the count it was mapped with.
 * @dir:   the direction it was mapped with.
 *
 * Context: thread-safe.
 * Return:  0; -EINVAL.
 */
IODMA_EXPORT int iodma_sync_sg_for_device(struct iodma_dev *dev,
					  struct iodma_sg *sg, size_t nents,
					  enum iodma_dir dir);

/* ---- registered memory (SPDK mem map) ------------------------------------ */

/**
 * iodma_dev_register() - Register a VA range once for fast later maps.
 * @dev:  device.
 * @va:   first byte; multiple of the domain alignment (page size in direct
 *        mode).
 * @len:  bytes; > 0, same multiple, no overflow.
 * @iova: if not NULL, receives the device address of @va.
 *
 * With a domain the range is mapped read/write as one mapping at IOVA space
 * below dma_mask.  In direct mode the pages' physical addresses are recorded.
 * Either way the VA -> IOVA radix table learns every page.
 *
 * Context: thread-safe; may block.
 * Return:  0; -EINVAL bad alignment/len; -EEXIST overlaps a registration;
 *          -ENOMEM; -ERANGE direct mode and a page is above dma_mask;
 *          -EUCLEAN the domain map was rejected and could not be undone
 *          (Concepts: the device may still reach the range; it is not
 *          registered); or the domain's error (-EIO when it was undone
 *          after all).  Nothing registered on error.
 */
IODMA_EXPORT int iodma_dev_register(struct iodma_dev *dev, void *va,
				    size_t len, uint64_t *iova);

/**
 * iodma_dev_unregister() - Undo iodma_dev_register().
 * @dev: device.
 * @va:  the registered start.
 * @len: the registered len.
 *
 * Context: thread-safe; may block (unmap waits for access sections).
 * Return:  0; -ENOENT no such registration; -EBUSY streaming maps inside it
 *          are live; or the domain's unmap error (the backend's): still
 *          registered.  Nothing changed on error.
 */
IODMA_EXPORT int iodma_dev_unregister(struct iodma_dev *dev, void *va,
				      size_t len);

/**
 * iodma_va_to_iova() - Look up registered memory.
 * @dev:  device.
 * @va:   any byte.
 * @len:  bytes that must be contiguous in IOVA space from @va; > 0.
 * @iova: receives the device address of @va.
 *
 * Context: thread-safe, lock-free: a few dependent loads, no system call.
 * Return:  0; -ENOENT not all of [va, va + len) is registered contiguously.
 */
IODMA_EXPORT int iodma_va_to_iova(const struct iodma_dev *dev, const void *va,
				  size_t len, uint64_t *iova);

/* ---- MMIO windows (VirtIoHal::mmio_phys_to_virt) -------------------------- */

/**
 * iodma_dev_add_mmio() - Declare a device MMIO window (a BAR).
 * @dev:   device.
 * @paddr: bus address of the window.
 * @len:   bytes; > 0, no overflow.
 * @va:    where the CPU sees it (a mapped BAR).
 *
 * Context: thread-safe.
 * Return:  0; -EINVAL bad arguments; -EEXIST overlaps a window; -ENOSPC
 *          more than 16 windows.
 */
IODMA_EXPORT int iodma_dev_add_mmio(struct iodma_dev *dev, uint64_t paddr,
				    uint64_t len, void *va);

/**
 * iodma_mmio_phys_to_virt() - VirtIoHal::mmio_phys_to_virt.
 * @dev:   device.
 * @paddr: bus address.
 * @len:   bytes; > 0.
 * @va:    receives the CPU address of @paddr.
 *
 * Context: thread-safe.
 * Return:  0; -EFAULT [paddr, paddr + len) is not inside one window.
 */
IODMA_EXPORT int iodma_mmio_phys_to_virt(const struct iodma_dev *dev,
					 uint64_t paddr, uint64_t len,
					 void **va);

/* ---- virtio-drivers Hal, thin over the above ----------------------------- */
/* The iodma_hal_* functions keep virtio-drivers' Hal argument order
 * (dma_alloc(pages, direction) -> (paddr, vaddr), dma_dealloc(paddr, vaddr,
 * pages), unshare(paddr, buffer, direction)) so that a port reads one to one;
 * the rest of this header follows Linux's dma-api order (dma_map_single(dev,
 * ptr, size, dir) / dma_unmap_single(dev, addr, size, dir), dma_free_coherent
 * (dev, size, cpu_addr, handle)). */

/**
 * iodma_hal_dma_alloc() - VirtIoHal::dma_alloc.
 * @dev:   device.
 * @pages: pages (host page size); > 0.
 * @dir:   the direction the memory is used in (informational).
 * @paddr: receives the device address.
 * @va:    receives the CPU address: page aligned, zeroed.
 *
 * Context: as iodma_alloc_coherent().
 * Return:  as iodma_alloc_coherent().
 */
IODMA_EXPORT int iodma_hal_dma_alloc(struct iodma_dev *dev, size_t pages,
				     enum iodma_dir dir, uint64_t *paddr,
				     void **va);

/**
 * iodma_hal_dma_dealloc() - VirtIoHal::dma_dealloc.
 * @dev:   device.
 * @paddr: as returned.
 * @va:    as returned.
 * @pages: as passed.
 *
 * Context: thread-safe; may block.
 * Return:  as iodma_free_coherent(): 0; -EINVAL not a live allocation; or
 *          the domain's unmap error (still allocated).
 */
IODMA_EXPORT int iodma_hal_dma_dealloc(struct iodma_dev *dev, uint64_t paddr,
				       void *va, size_t pages);

/**
 * iodma_hal_share() - VirtIoHal::share: a streaming map.
 * @dev:   device.
 * @buf:   buffer; @len > 0.
 * @len:   bytes.
 * @dir:   enum iodma_dir.
 * @paddr: receives the device address.
 *
 * Unlike virtio-drivers' Hal::share, failure is reported.
 *
 * Context: as iodma_map_single().
 * Return:  as iodma_map_single().
 */
IODMA_EXPORT int iodma_hal_share(struct iodma_dev *dev, void *buf, size_t len,
				 enum iodma_dir dir, uint64_t *paddr);

/**
 * iodma_hal_unshare() - VirtIoHal::unshare: unmap, copying back if bounced.
 * @dev:   device.
 * @paddr: as returned by iodma_hal_share().
 * @buf:   the same buffer.
 * @len:   the same length.
 * @dir:   the same direction.
 *
 * Context: as iodma_unmap_single().
 * Return:  as iodma_unmap_single(); -EINVAL also if @buf is not the
 *          buffer that was shared at @paddr.
 */
IODMA_EXPORT int iodma_hal_unshare(struct iodma_dev *dev, uint64_t paddr,
				   void *buf, size_t len, enum iodma_dir dir);

/* ---- statistics ------------------------------------------------------------ */

/**
 * struct iodma_dev_stats - Counters of a device (monotonic unless noted).
 * @size:              IODMA_STRUCT_INIT(); see iodma_dev_get_stats().
 * @maps:              streaming maps made (single + sg elements).
 * @registered_hits:   maps served from registered memory.
 * @mappings_created:  domain mappings this device created and kept: a map
 *                     a failing call rolled back is not counted.
 * @bounces:           maps that bounced.
 * @bounce_bytes:      bytes copied through the bounce pool, both ways.
 * @bounce_slots_total: slots in the pool (constant).
 * @bounce_slots_used: slots in use now (a snapshot; slots a thread keeps
 *                     for its next maps are not in use).
 * @bounce_full:       maps refused with -ENOMEM because the pool was full
 *                     (other threads may keep up to a quarter of it
 *                     for their next maps).
 * @coherent_allocs:   live coherent allocations (a snapshot).
 * @leaked:            maps and allocations still live at destroy.
 */
struct iodma_dev_stats {
	size_t size;
	uint64_t maps;
	uint64_t registered_hits;
	uint64_t mappings_created;
	uint64_t bounces;
	uint64_t bounce_bytes;
	uint64_t bounce_slots_total;
	uint64_t bounce_slots_used;
	uint64_t bounce_full;
	uint64_t coherent_allocs;
	uint64_t leaked;
};

/**
 * iodma_dev_get_stats() - Read a device's counters.
 * @dev: device.
 * @st:  receives them; its @size set by
 *       IODMA_STRUCT_INIT(struct iodma_dev_stats) (growth rule of
 *       iodma/common.h, Linux's copy_struct_to_user()).
 *
 * Context: thread-safe.
 * Return:  0 and min(st->size, sizeof(struct iodma_dev_stats)) bytes filled,
 *          the caller's bytes past the library's struct zeroed; -EINVAL
 *          NULL argument, or st->size smaller than the first version of
 *          struct iodma_dev_stats (*@st unchanged).
 */
IODMA_EXPORT int iodma_dev_get_stats(const struct iodma_dev *dev,
				      struct iodma_dev_stats *st);

#ifdef __cplusplus
}
#endif
#endif /* IODMA_DMA_H */
