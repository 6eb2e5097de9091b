/* SPDX-License-Identifier: MIT */
/*
 * iodma/memory.h - guest or physical memory: the "backend" memory behind a
 * domain (vm-memory's GuestMemoryBackend).
 *
 * Concepts
 *   An iodma_memory is a set of non-overlapping regions, each mapping
 *   [gpa, gpa + len) of a guest-physical (or bus-physical) address space to
 *   host memory: a host VA and, when the memory has one, an fd + offset so
 *   that listeners can program IOMMUs from the fd (iommufd, vhost-user).
 *   Regions the library allocates itself are backed by memfd by default, so
 *   every such region has an fd.
 *
 *   A two-stage domain (iodma_domain_opts.memory) maps IOVA -> GPA and
 *   resolves GPA through this memory; with the IOMMU disabled, translation is
 *   identity over it.
 *
 *   Locking: lookups are lock-free (RCU): they may run on any thread while
 *   another adds or removes regions.  Adding and removing are serialised by
 *   an internal lock.  Removing a region waits until no access section
 *   (iodma/xlate.h) that could see it is still open; translations that
 *   start after the removal no longer find it (stage 2 is looked up at
 *   every translation).
 *
 *   Dirty log by guest-physical address: iodma_memory_dirty_log_start()
 *   gives every region a bitmap of one bit per host page (4 KiB on x86-64,
 *   the page of vhost-user's shared log), as vm-memory's per-region
 *   bitmaps do.  While it runs, pages are marked by device writes through
 *   any two-stage domain over this memory (a write translation marks the
 *   guest-physical pages behind the IOVAs), by identity translation of a
 *   disabled domain, by iodma_memory_write() and by
 *   iodma_memory_mark_dirty() (for a VMM's own writes through slices of
 *   iodma_memory_translate()).  The marks are kept by guest-physical
 *   address, so they survive the unmap of the IOVA that wrote them.  This
 *   is the log a migrating VMM sends pages from; the per-domain IOVA log
 *   (iodma_dirty_log_start() in iodma/xlate.h) reports what a device wrote
 *   by IOVA, as VFIO's type1 dirty bitmaps do, and is lost with an unmap.
 *
 *   The log has a second, shared mode (iodma_memory_dirty_log_start_shared):
 *   the marks go into a flat bitmap by guest-physical address that someone
 *   else owns and harvests, one bit per 4 KiB page, set with atomic byte
 *   ORs: the shared log of a vhost-user front end (vhost-user spec,
 *   "Migration": log[page / 8] |= 1 << page % 8).  The same writes mark it
 *   as in the per-region mode; only the owner reads and clears it.
 */
#ifndef IODMA_MEMORY_H
#define IODMA_MEMORY_H

#include <iodma/common.h>
#include <iodma/xlate.h>

#ifdef __cplusplus
extern "C" {
#endif

struct iodma_memory;

/**
 * struct iodma_memory_opts - How to create a memory.
 * @size:  IODMA_OPTS_INIT().
 * @flags: reserved, must be 0.
 */
struct iodma_memory_opts {
	size_t size;
	uint32_t flags;
};

/**
 * struct iodma_region_info - One region, as reported by lookups.
 * @gpa:    first guest-physical address.
 * @len:    bytes.
 * @va:     host address of @gpa.
 * @fd:     backing fd, or -1.
 * @offset: offset of @gpa in @fd.
 * @owned:  true when the library allocated the memory (memfd).
 */
struct iodma_region_info {
	uint64_t gpa;
	uint64_t len;
	void *va;
	int fd;
	uint64_t offset;
	bool owned;
};

/* Flags for iodma_memory_add_region(). */
#define IODMA_REGION_ANON     0x1u /* anonymous memory, no fd */
#define IODMA_REGION_HUGETLB  0x2u /* memfd with MFD_HUGETLB (2 MiB pages) */

/**
 * iodma_memory_create() - Create an empty memory.
 * @opts: options, or NULL for defaults.
 * @out:  receives the memory.
 *
 * Context: thread-safe.
 * Return:  0; -EINVAL bad opts (size below the first version, flags not
 *          0); -E2BIG @opts is longer than this library knows and a byte
 *          past its end is non-zero (growth rule, iodma/common.h); -ENOMEM.  *@out unchanged on error.
 */
IODMA_EXPORT int iodma_memory_create(const struct iodma_memory_opts *opts,
				     struct iodma_memory **out);

/**
 * iodma_memory_destroy() - Free a memory and the regions it allocated.
 * @m: memory, or NULL.
 *
 * Context: not thread-safe against other use of @m; every domain created
 *          over @m must have been destroyed first.
 * Return:  nothing.
 */
IODMA_EXPORT void iodma_memory_destroy(struct iodma_memory *m);

/**
 * iodma_memory_add_region() - Allocate host memory for [gpa, gpa + len).
 * @m:     memory.
 * @gpa:   first address; multiple of the host page size.
 * @len:   bytes; > 0, multiple of the page size (2 MiB for HUGETLB), no
 *         overflow.
 * @flags: 0 (memfd-backed, shared mapping), IODMA_REGION_ANON or
 *         IODMA_REGION_HUGETLB.
 * @va:    if not NULL, receives the host address of @gpa.
 *
 * The memory is zeroed.
 *
 * Context: thread-safe; must not be called inside an access section (it
 *          waits a grace period before freeing the previous region list).
 * Return:  0; -EINVAL bad alignment/len/flags; -EEXIST overlaps a region;
 *          -ENOMEM (or the platform's errno for memfd/mmap).  Nothing added
 *          on error.
 */
IODMA_EXPORT int iodma_memory_add_region(struct iodma_memory *m, uint64_t gpa,
					 uint64_t len, uint32_t flags,
					 void **va);

/**
 * iodma_memory_add_region_host() - Add caller-owned host memory.
 * @m:      memory.
 * @gpa:    first address; page aligned.
 * @len:    bytes; > 0, page multiple, no overflow.
 * @va:     host address of @gpa; page aligned; must outlive the region.
 * @fd:     fd backing @va, or -1.  Not duplicated, not closed.
 * @offset: offset of @va in @fd; page aligned (ignored when fd is -1).
 *
 * Context: thread-safe; must not be called inside an access section.
 * Return:  0; -EINVAL bad arguments; -EEXIST overlaps a region; -ENOMEM.
 *          Nothing added on error.
 */
IODMA_EXPORT int iodma_memory_add_region_host(struct iodma_memory *m,
					      uint64_t gpa, uint64_t len,
					      void *va, int fd, uint64_t offset);

/**
 * iodma_memory_remove_region() - Remove the region that starts at @gpa.
 * @m:   memory.
 * @gpa: the region's first address.
 *
 * Waits for open access sections, then frees memory the library allocated.
 *
 * Context: thread-safe; must not be called inside an access section.
 * Return:  0; -ENOENT no region starts at @gpa.
 */
IODMA_EXPORT int iodma_memory_remove_region(struct iodma_memory *m,
					    uint64_t gpa);

/**
 * iodma_memory_find() - The region that holds @gpa.
 * @m:    memory.
 * @gpa:  address.
 * @info: receives the region.
 *
 * Context: thread-safe, lock-free.
 * Return:  0; -ENOENT no region holds @gpa.
 */
IODMA_EXPORT int iodma_memory_find(const struct iodma_memory *m, uint64_t gpa,
				   struct iodma_region_info *info);

/**
 * iodma_memory_get_regions() - List the regions in address order.
 * @m:   memory.
 * @out: array of @max entries, or NULL to count only.
 * @max: entries in @out.
 *
 * Context: thread-safe (a snapshot).
 * Return:  the number of regions (may exceed @max: only @max were written).
 */
IODMA_EXPORT size_t iodma_memory_get_regions(const struct iodma_memory *m,
					     struct iodma_region_info *out,
					     size_t max);

/**
 * iodma_memory_translate() - Resolve [gpa, gpa + len) to host slices.
 * @m:     memory.
 * @gpa:   first address.
 * @len:   bytes; > 0, no overflow.
 * @out:   array of @max slices.
 * @max:   entries in @out.
 * @nr:    receives how many slices were written.
 * @fault: if not NULL, on -EFAULT receives the first sub-range not backed by
 *         any region (reason IODMA_FAULT_NOT_MAPPED).
 *
 * Slices are split where regions end; their lengths add up to @len.  The
 * host addresses stay valid until the region is removed; call inside an
 * access section when regions may be removed concurrently.
 *
 * Context: thread-safe, lock-free.
 * Return:  0; -EINVAL bad range; -EFAULT part of the range is not backed
 *          (*@nr slices before the hole were written); -E2BIG more than @max
 *          slices needed (*@nr = @max written).
 */
IODMA_EXPORT int iodma_memory_translate(const struct iodma_memory *m,
					uint64_t gpa, uint64_t len,
					struct iodma_slice *out, size_t max,
					size_t *nr, struct iodma_fault *fault);

/**
 * iodma_memory_read() - Copy from guest memory.
 * @m:   memory.
 * @gpa: first address.
 * @buf: destination, @len bytes.
 * @len: bytes; > 0, no overflow.
 *
 * Context: thread-safe.
 * Return:  0; -EINVAL bad range; -EFAULT part not backed (nothing copied).
 */
IODMA_EXPORT int iodma_memory_read(const struct iodma_memory *m, uint64_t gpa,
				   void *buf, size_t len);

/**
 * iodma_memory_write() - Copy into guest memory.
 * @m:   memory.
 * @gpa: first address.
 * @buf: source, @len bytes.
 * @len: bytes; > 0, no overflow.
 *
 * Context: thread-safe.
 * Return:  0; -EINVAL bad range; -EFAULT part not backed (nothing copied).
 */
IODMA_EXPORT int iodma_memory_write(struct iodma_memory *m, uint64_t gpa,
				    const void *buf, size_t len);

/**
 * iodma_memory_dirty_log_start() - Start the guest-physical dirty log.
 * @m: memory.
 *
 * Every region, and every region added while the log runs, gets a bitmap
 * of one bit per host page, all clear.
 *
 * Context: thread-safe; may run inside an access section.
 * Return:  0; -EINVAL @m is NULL; -EALREADY the log already runs;
 *          -EBUSY the log runs in shared mode; -ENOMEM (no bitmap was
 *          installed, the log stays off).
 */
IODMA_EXPORT int iodma_memory_dirty_log_start(struct iodma_memory *m);

/**
 * iodma_memory_dirty_log_start_shared() - Log into a bitmap owned elsewhere.
 * @m:         memory.
 * @log:       the bitmap: bit (page % 8) of byte (page / 8) stands for the
 *             4 KiB guest-physical page page = gpa >> 12 (VHOST_LOG_PAGE,
 *             whatever the host page size); typically memory shared with
 *             another process.  Must stay mapped until the log is stopped
 *             or switched to another bitmap.
 * @log_bytes: bytes of @log; it covers guest-physical [0, log_bytes * 8 *
 *             4096).  Pages beyond it are not marked: the caller makes it
 *             cover every region (the vhost-user layer refuses a log that
 *             does not).
 *
 * From now on every write the per-region mode would mark (memory.h
 * Concepts) sets the page's bit with an atomic byte OR, after a full
 * fence, so the owner that clears a bit atomically and then reads the page
 * sees the data written before the mark (vhost-user spec, "Migration").
 * The library never clears a bit.  Called while the shared mode already
 * runs, it switches to @log: marks made after it returns go to @log only,
 * and no marker still touches the old bitmap (the caller may unmap it).
 * iodma_memory_dirty_get_and_clear() is -EOPNOTSUPP in this mode: the
 * owner harvests.  iodma_memory_dirty_log_stop() stops it.
 *
 * Context: thread-safe.  Starting may run inside an access section;
 *          switching waits for open sections (not inside one).
 * Return:  0; -EINVAL NULL @m or @log, @log_bytes 0 or above 2^61;
 *          -EBUSY the per-region mode runs; -ENOMEM.  On error the log
 *          is as it was (off, or still on the old bitmap).
 */
IODMA_EXPORT int iodma_memory_dirty_log_start_shared(struct iodma_memory *m,
						     void *log,
						     uint64_t log_bytes);

/**
 * iodma_memory_dirty_log_stop() - Stop the guest-physical dirty log.
 * @m: memory.
 *
 * Drops every bitmap and the marks in it; in shared mode, forgets the
 * shared bitmap (not unmapped: its owner's) and, when it returns, no
 * marker touches it any more.
 *
 * Context: thread-safe; waits for open access sections (must not be called
 *          inside one).
 * Return:  0; -EINVAL @m is NULL or the log was not running.
 */
IODMA_EXPORT int iodma_memory_dirty_log_stop(struct iodma_memory *m);

/**
 * iodma_memory_mark_dirty() - Mark guest-physical pages dirty.
 * @m:   memory.
 * @gpa: first byte.
 * @len: bytes; > 0, no overflow.
 *
 * For writes the library did not see: a VMM or back end writing through
 * slices of iodma_memory_translate().  Call it after the write.  Does
 * nothing (and succeeds) while the log is off.
 *
 * Context: thread-safe, lock-free.
 * Return:  0; -EINVAL bad range; -EFAULT part of the range is not backed by
 *          a region (nothing marked).
 */
IODMA_EXPORT int iodma_memory_mark_dirty(struct iodma_memory *m, uint64_t gpa,
					 uint64_t len);

/**
 * iodma_memory_dirty_get_and_clear() - Read and clear the log of a range.
 * @m:      memory.
 * @gpa:    first byte; multiple of the host page size.
 * @len:    bytes; > 0, page multiple, no overflow.
 * @bitmap: receives one bit per page: bit i (bit i % 64 of word i / 64) for
 *          the page at @gpa + i * page; 1 = written since the last harvest.
 *          Pages outside every region read 0.
 * @words:  uint64_t words in @bitmap; at least ceil(len / page / 64).
 *
 * Each bit is read and cleared atomically.  A device write through a slice
 * obtained before this call, inside an access section, is reported by this
 * call or the next one, never by none (iodma/xlate.h, access sections).
 *
 * Context: thread-safe, lock-free; may run while devices write.
 * Return:  0; -EINVAL bad range or alignment, or the log is off; -ENOSPC
 *          @bitmap too small (nothing cleared); -EOPNOTSUPP the log runs
 *          in shared mode (its owner reads it; nothing cleared).
 */
IODMA_EXPORT int iodma_memory_dirty_get_and_clear(struct iodma_memory *m,
						  uint64_t gpa, uint64_t len,
						  uint64_t *bitmap, size_t words);

#ifdef __cplusplus
}
#endif
#endif /* IODMA_MEMORY_H */
