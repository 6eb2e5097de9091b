/* SPDX-License-Identifier: MIT */
/*
 * iodma/xlate.h - the device side: translate IOVAs to host memory.
 *
 * Concepts
 *   A device model (a VMM's emulated device, a vhost-user back end) turns the
 *   IOVAs a driver gave it into host memory through the domain, with a
 *   permission check, as vm-memory's GuestMemory does with its IOMMU feature
 *   (rust-vmm vm-memory, iommu feature).  A translation yields host slices whose lengths add up to the
 *   requested length, split wherever host memory is discontiguous; an error
 *   ends the list and says which sub-range failed and why.
 *
 *   Stages: a domain with no memory maps IOVA -> host VA directly; a domain
 *   over an iodma_memory maps IOVA -> GPA and the GPA is resolved through the
 *   memory's regions.  Every translation walks the domain's IO page table
 *   (a radix table like the IOMMU page tables the soft backend emulates:
 *   4 KiB, 2 MiB and 1 GiB leaves, three dependent loads below 2^48),
 *   without a lock and without a cache in front of it, so there is nothing
 *   to fill on a first touch and nothing to invalidate: a map is
 *   translatable when it returns, an unmap has stopped the range
 *   translating before anyone is told of it.  Stage 2 is looked up in the
 *   memory's regions at each translation, so a region change is followed
 *   at once.  With the IOMMU disabled, translation is identity over the
 *   domain's memory.
 *
 *   On a miss that the page table cannot serve, an optional resolver (a
 *   vIOMMU page-table walk, a vhost-user IOTLB miss) may install the mapping
 *   and the lookup is retried once; otherwise a fault is recorded (iova,
 *   len, perm, reason) in the domain's fault log.
 *
 *   Access sections: host slices may be used only inside an access section
 *   (iodma_access_begin/end), and must be obtained inside the same section.
 *   Inside a section, each translation first records the IOVA range it
 *   asks for (page-rounded, per domain) in the calling thread's record; an
 *   unmap first stops the range translating, then waits for exactly the
 *   sections of other threads that recorded a piece of it, so after unmap
 *   returns the owner may free the memory: no use after unmap.  A section
 *   open on another range or in another domain, or a preempted thread
 *   elsewhere, does not delay it; the wait sleeps on a futex and is woken
 *   by the section's end (no grace period, no timed sleep).  A call that
 *   fails having given nothing (iodma_translate with no slice, a failed
 *   iodma_check_range, iodma_read/iodma_write, or the first
 *   iodma_xlate_next of a range) takes its range back, so a fault on an
 *   IOVA does not make a later unmap of it wait for the rest of the
 *   section; one that gave slices before failing keeps its range.  A section that
 *   touches more than 16 separate ranges keeps merged, larger ones; one
 *   that touches more than 16 domains counts as touching everything (more
 *   waiting, never less).  Sections nest (the outermost end counts), are
 *   per thread, and also hold liburcu's read side, which region removal,
 *   dirty-log stop and set_resolver wait for.  A section costs nothing
 *   shared until it translates: then one seq_cst store per new range and
 *   one at its end.  Translation outside a section records nothing and
 *   costs one thread-local load more.  Every walk of the page table also
 *   bumps a counter of the calling thread (two plain stores), which lets
 *   the nodes an unmap prunes be freed once no walk can be inside them
 *   (membarrier(2) on the freeing side, as liburcu's memb flavour does;
 *   without it the walker adds a fence).  An unmap called inside a section is
 *   fine for ranges that section did not translate; for its own ranges it
 *   does not wait for itself, and the caller must not use those slices
 *   after it.  (Two threads that each unmap, inside a section, a range the
 *   other's open section translated wait for each other for ever.)
 *
 *   Dirty logging: while on, every translation with IODMA_PERM_WRITE marks
 *   the IOVA pages it covers dirty (granule = the domain alignment), as a
 *   device write through vm-memory's bitmap would; get-and-clear returns and
 *   clears the bitmap of a range.  A write through a slice obtained before
 *   a harvest appears in that harvest or the next, never in none, for
 *   slices used inside access sections (iodma_write opens its own): when a
 *   harvest starts, or is under way, between a write translation and its
 *   section's end, the end marks the section's write ranges again, so they
 *   may be reported twice (the libvfio-user issue 595 race: the harvest
 *   clears the bit, the device writes afterwards through the slice it
 *   holds).  A section whose write ranges did not fit its record sets the
 *   log's "lost" state instead: every granule reports dirty until logging
 *   stops.  A write that cannot be logged (no memory for its bitmap leaf)
 *   does the same.
 *
 *   All functions here are thread-safe and may run concurrently with map and
 *   unmap on the same domain.
 */
#ifndef IODMA_XLATE_H
#define IODMA_XLATE_H

#include <iodma/common.h>

#ifdef __cplusplus
extern "C" {
#endif

struct iodma_domain;

/**
 * struct iodma_slice - A piece of host memory.
 * @va:  host address.
 * @len: bytes.
 */
struct iodma_slice {
	void *va;
	uint64_t len;
};

/* Why a translation failed. */
enum iodma_fault_reason {
	IODMA_FAULT_NONE = 0,
	IODMA_FAULT_NOT_MAPPED = 1,  /* no mapping (or no memory region) */
	IODMA_FAULT_PERMISSION = 2,  /* mapped without the requested perm */
	IODMA_FAULT_NO_HOST = 3,     /* mapped, but no host VA (fd-only) */
};

/**
 * struct iodma_fault - A failed access.
 * @iova:   first byte that failed.
 * @len:    bytes of the failing sub-range (up to the end of the request or
 *          to where the failure stops, whichever comes first).
 * @perm:   the access that was attempted.
 * @reason: enum iodma_fault_reason.
 */
struct iodma_fault {
	uint64_t iova;
	uint64_t len;
	uint32_t perm;
	uint32_t reason;
};

/**
 * iodma_access_begin() - Open an access section on this thread.
 *
 * Host slices obtained inside the section stay valid until the outermost
 * matching iodma_access_end(): an unmap (or set_enabled) that covers a
 * range translated in the section waits for that end; region removal,
 * dirty-log stop and set_resolver wait for every open section (liburcu's
 * read side, which the section also holds, as in QEMU's
 * address_space_map under RCU).  The thread's record is allocated on its
 * first section (if that fails, the section still works and unmaps fall
 * back to a grace period); a thread that exits inside a section has it
 * closed for it.
 *
 * Context: any thread; nests; lock-free; a few instructions (the first
 *          section of a thread takes the registry's list once).
 * Return:  nothing.
 */
IODMA_EXPORT void iodma_access_begin(void);

/**
 * iodma_access_end() - Close the innermost access section of this thread.
 *
 * The outermost end of a section that translated anything re-marks its
 * write ranges dirty if a harvest overlapped it (see "Dirty logging"),
 * publishes the end with one seq_cst store, and wakes an unmap waiting for
 * it (a futex wake, only when one is waiting).
 *
 * Context: the thread that opened it; must balance iodma_access_begin().
 * Return:  nothing.
 */
IODMA_EXPORT void iodma_access_end(void);

/**
 * iodma_check_range() - GuestMemory::check_range.
 * @d:    domain.
 * @iova: first byte.
 * @len:  bytes; > 0, no overflow.
 * @perm: IODMA_PERM_* wanted.
 *
 * Like a translation but yields nothing; records no fault, marks nothing
 * dirty, calls the resolver on a miss.
 *
 * Context: thread-safe.
 * Return:  0 the whole range is accessible with @perm; -EFAULT some part is
 *          not mapped (or has no host memory); -EACCES some part lacks
 *          @perm; -EINVAL bad range or perm.
 */
IODMA_EXPORT int iodma_check_range(struct iodma_domain *d, uint64_t iova,
				   uint64_t len, uint32_t perm);

/**
 * struct iodma_xlate_iter - State of a slice-by-slice translation
 *                           (GuestMemory::get_slices).
 * @size:  IODMA_STRUCT_INIT(struct iodma_xlate_iter), set by the caller
 *         before iodma_xlate_begin().
 * @d:     private: the domain translated in.
 * @iova:  private: the next byte to translate.
 * @left:  private: bytes still to translate.
 * @perm:  private: the IODMA_PERM_* asked for.
 * @flags: private: the iterator's state bits.
 * @fault: private: the fault that ended the walk, if any.
 * @reserved_: private: room for the state of later versions.
 *
 * Fields other than @size are private; the struct is public so it can live
 * on the stack.  The library needs its state whole, so the size never
 * grows past this first version: later state goes into @reserved_ (growth
 * rule of iodma/common.h).
 */
struct iodma_xlate_iter {
	size_t size;
	struct iodma_domain *d;
	uint64_t iova;
	uint64_t left;
	uint32_t perm;
	uint32_t flags;
	struct iodma_fault fault;
	uint64_t reserved_[4];
};

/**
 * iodma_xlate_begin() - Start translating [iova, iova + len).
 * @it:   iterator to initialise; it->size set by
 *        IODMA_STRUCT_INIT(struct iodma_xlate_iter).
 * @d:    domain.
 * @iova: first byte.
 * @len:  bytes; 0 gives an empty iteration (vm-memory: count 0).
 * @perm: IODMA_PERM_* wanted.
 *
 * Context: thread-safe.
 * Return:  0; -EINVAL overflowing range, bad perm, NULL argument, or
 *          it->size smaller than sizeof(struct iodma_xlate_iter) (the
 *          iterator is then unusable: iodma_xlate_next() on it is -EINVAL
 *          unless an earlier begin succeeded on it).
 */
IODMA_EXPORT int iodma_xlate_begin(struct iodma_xlate_iter *it,
				   struct iodma_domain *d, uint64_t iova,
				   uint64_t len, uint32_t perm);

/**
 * iodma_xlate_next() - The next host slice.
 * @it:    iterator from iodma_xlate_begin().
 * @slice: receives the slice.
 *
 * The slices' lengths add up to the requested length; the first error ends
 * the iteration (every later call returns the same error), records a fault
 * in the domain's log (unless the resolver fixed it) and is described in
 * @it->fault.  Call inside an access section to use the slice safely.
 *
 * Context: thread-safe.
 * Return:  1 a slice was produced; 0 done; -EFAULT not mapped / no host
 *          memory; -EACCES permission.
 */
IODMA_EXPORT int iodma_xlate_next(struct iodma_xlate_iter *it,
				  struct iodma_slice *slice);

/**
 * iodma_translate() - Translate a range into an array of host slices.
 * @d:     domain.
 * @iova:  first byte.
 * @len:   bytes; > 0, no overflow.
 * @perm:  IODMA_PERM_* wanted.
 * @out:   array of @max slices.
 * @max:   entries in @out.
 * @nr:    receives the slices written.
 * @fault: if not NULL, receives the failing sub-range on -EFAULT/-EACCES.
 *
 * Context: thread-safe; use the slices inside an access section.
 * Return:  0; -EINVAL bad range/perm; -EFAULT / -EACCES (*@nr slices before
 *          the failing sub-range were written; a fault was recorded);
 *          -E2BIG more than @max slices needed (*@nr = @max).
 */
IODMA_EXPORT int iodma_translate(struct iodma_domain *d, uint64_t iova,
				 uint64_t len, uint32_t perm,
				 struct iodma_slice *out, size_t max,
				 size_t *nr, struct iodma_fault *fault);

/**
 * iodma_translate_one() - Translate a range into one host pointer.
 * @d:    domain.
 * @iova: first byte.
 * @len:  bytes; > 0, no overflow.
 * @perm: IODMA_PERM_* wanted.
 * @va:   receives the host address of @iova; [*@va, *@va + @len) is the
 *        whole range, host-contiguous.
 *
 * What a device model does with one descriptor or buffer: the single-slice
 * case of iodma_translate(), as vm-memory's GuestMemory::get_slice() (one
 * region holds the range, else an error) or QEMU's address_space_map()
 * for a whole length.  The same semantics as iodma_translate() with
 * @max = 1 and no @fault (the fault is still recorded in the domain's log,
 * iodma_fault_pop()), with fewer arguments for the common path: a range
 * inside one leaf of the IO page table is translated with no call and no
 * lock.  A range over several mappings that are contiguous in host memory
 * is one pointer too.
 *
 * Context: thread-safe; use the pointer inside an access section.
 * Return:  0 and *@va set; -EINVAL NULL @d or @va, bad range/perm;
 *          -EFAULT / -EACCES not mapped / no host memory / permission (a
 *          fault was recorded); -E2BIG the range is mapped but needs more
 *          than one host slice.  *@va is left unchanged on every error.
 */
IODMA_EXPORT int iodma_translate_one(struct iodma_domain *d, uint64_t iova,
				     uint64_t len, uint32_t perm, void **va);

/**
 * iodma_read() - Copy from device-visible memory (a device DMA read).
 * @d:    domain.
 * @iova: first byte.
 * @buf:  destination, @len bytes.
 * @len:  bytes; > 0, no overflow.
 *
 * Checks IODMA_PERM_READ over the whole range before copying anything,
 * and copies exactly the host memory it checked.
 *
 * Context: thread-safe; opens its own access section.
 * Return:  0; -EINVAL; -EFAULT / -EACCES (nothing copied, fault recorded);
 *          -ENOMEM the range splits into more than 16 host runs and no
 *          memory could hold their list (nothing copied).
 */
IODMA_EXPORT int iodma_read(struct iodma_domain *d, uint64_t iova, void *buf,
			    size_t len);

/**
 * iodma_write() - Copy into device-visible memory (a device DMA write).
 * @d:    domain.
 * @iova: first byte.
 * @buf:  source, @len bytes.
 * @len:  bytes; > 0, no overflow.
 *
 * Checks IODMA_PERM_WRITE over the whole range before copying anything,
 * and copies into exactly the host memory it checked; marks the pages
 * dirty when dirty logging is on.
 *
 * Context: thread-safe; opens its own access section.
 * Return:  0; -EINVAL; -EFAULT / -EACCES (nothing copied, fault recorded);
 *          -ENOMEM the range splits into more than 16 host runs and no
 *          memory could hold their list (nothing copied).
 */
IODMA_EXPORT int iodma_write(struct iodma_domain *d, uint64_t iova,
			     const void *buf, size_t len);

/**
 * typedef iodma_resolver_fn - Installs a missing translation.
 * @arg:  the resolver's argument.
 * @d:    the domain that missed.
 * @iova: the first byte that missed.
 * @perm: the access attempted.
 *
 * Called outside the map lock but possibly inside the caller's access
 * section: it may call iodma_domain_map*() but must not unmap.
 *
 * Return: 0 a mapping covering @iova was installed (the lookup is retried
 *         once); a negative errno otherwise (the fault is recorded).
 */
typedef int (*iodma_resolver_fn)(void *arg, struct iodma_domain *d,
				 uint64_t iova, uint32_t perm);

/**
 * iodma_xlate_set_resolver() - Set or clear the miss resolver.
 * @d:   domain.
 * @fn:  resolver, or NULL to remove.
 * @arg: its argument.
 *
 * Context: thread-safe; waits for access sections so no thread still runs
 *          the old resolver when it returns.
 * Return:  0.
 */
IODMA_EXPORT int iodma_xlate_set_resolver(struct iodma_domain *d,
					  iodma_resolver_fn fn, void *arg);

/**
 * iodma_fault_pop() - Take recorded faults, oldest first.
 * @d:   domain.
 * @out: array of @max records.
 * @max: entries in @out.
 *
 * Context: thread-safe.
 * Return:  the number of records written (0 if none).
 */
IODMA_EXPORT size_t iodma_fault_pop(struct iodma_domain *d,
				    struct iodma_fault *out, size_t max);

/**
 * iodma_dirty_log_start() - Start logging device writes.
 * @d: domain.
 *
 * Logs what translations with IODMA_PERM_WRITE mark (emulated devices) and,
 * on a backend whose device writes by itself (a passthrough device behind
 * VFIO type1: VFIO_IOMMU_DIRTY_PAGES START, at the domain alignment), what
 * the kernel logs; iodma_dirty_get_and_clear() returns both.  A backend
 * that cannot track its device's writes makes the start fail rather than
 * log half of them (iommufd without a dirty-tracking HWPT; type1 without
 * the migration capability).
 *
 * Context: thread-safe; takes the domain's map lock (the backend call).
 * Return:  0; -EALREADY already on; -ENOMEM; -EOPNOTSUPP the backend cannot
 *          track its device's writes (iodma_vfio_last_error() says why); or
 *          the backend's error.  Logging is off after an error.
 */
IODMA_EXPORT int iodma_dirty_log_start(struct iodma_domain *d);

/**
 * iodma_dirty_log_stop() - Stop logging and drop the bitmap.
 * @d: domain.
 *
 * Context: thread-safe; waits for access sections.
 * Return:  0; -EINVAL logging was not on.
 */
IODMA_EXPORT int iodma_dirty_log_stop(struct iodma_domain *d);

/**
 * iodma_dirty_get_and_clear() - Read and clear the dirty bitmap of a range.
 * @d:      domain.
 * @iova:   first byte; multiple of the domain alignment (the granule).
 * @len:    bytes; > 0, granule multiple, no overflow.
 * @bitmap: receives one bit per granule page, bit i (bit i % 64 of word
 *          i / 64) for the page at iova + i * granule; 1 = dirty.
 * @words:  uint64_t words in @bitmap; at least ceil(len / granule / 64).
 *
 * A write through a slice obtained before this call appears in this
 * bitmap or the next one (slices used inside access sections; see "Dirty
 * logging"), so a page may be reported by two consecutive calls.  Never
 * waits for a section: it counts itself in the log's harvest word instead
 * (started before the first bit is cleared, finished after the last).
 *
 * Dirty bits live in leaves allocated on a range's first logged write.
 * If one cannot be allocated (out of memory), that write's pages cannot be
 * recorded, so the log is marked lost: from then on every call reports
 * every page of the range asked for as dirty, whether written, cleared or
 * mapped at all, until iodma_dirty_log_stop() (a restart begins a precise
 * log).  Over-reporting is the safe side for a migration, which resends
 * those pages (QEMU's vfio_get_dirty_bitmap() marks a whole range dirty
 * when VFIO cannot track its writes); under-reporting would lose guest
 * data.
 *
 * On a backend that logs its device's writes, the kernel's log of the
 * range is ORed in: the kernel is asked for the mappings that overlap the
 * range, whole (VFIO's GET_BITMAP rule), and the range is cut out of its
 * answer (the kernel forgets the rest of those mappings' bits too: VFIO
 * type1 reports every page a device without page pinning can reach as
 * dirty at each harvest anyway).  An unmap while logging hands the
 * kernel's bits of its range to this log first
 * (VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP), so they are reported here after
 * the mapping is gone; without memory for that, the whole range is
 * reported dirty.
 *
 * Context: thread-safe; each bit is read and cleared atomically; with a
 *          logging backend, takes the domain's map lock.
 * Return:  0; -EINVAL bad range or logging off; -ENOSPC bitmap too small
 *          (nothing cleared); with a logging backend also -ENOMEM or the
 *          backend's error, after the bits logged by translation were
 *          returned and cleared (the kernel's are left for the next call).
 */
IODMA_EXPORT int iodma_dirty_get_and_clear(struct iodma_domain *d,
					   uint64_t iova, uint64_t len,
					   uint64_t *bitmap, size_t words);

/**
 * iodma_iotlb_flush() - Drop every cached translation of the domain.
 * @d: domain, or NULL (nothing happens).
 *
 * Nothing is cached in front of the IO page table any more (see
 * "Stages"): every translation already sees the current mappings, so this
 * only counts an invalidation (iotlb_invalidations).  Kept so that a
 * vIOMMU model can call it where the guest's invalidation commands say so
 * (VT-d's global IOTLB invalidation, virtio-iommu's detach).
 *
 * Context: thread-safe.
 * Return:  nothing.
 */
IODMA_EXPORT void iodma_iotlb_flush(struct iodma_domain *d);

/**
 * struct iodma_xlate_stats - Translation counters (monotonic).
 * @size:               IODMA_STRUCT_INIT(); see iodma_xlate_get_stats().
 * @iotlb_hits:         translation steps a page-table leaf served (the
 *                      names are kept from the IOTLB this table replaced).
 * @iotlb_misses:       page-table walks that found no leaf (a fault or a
 *                      resolver call follows).
 * @iotlb_invalidations: unmaps, enable/disable and iodma_iotlb_flush()
 *                      calls (each stops translation of what it changed).
 * @resolver_calls:     times the miss resolver ran.
 * @faults:             faults recorded.
 * @faults_dropped:     faults lost because the log was full.
 */
struct iodma_xlate_stats {
	size_t size;
	uint64_t iotlb_hits;
	uint64_t iotlb_misses;
	uint64_t iotlb_invalidations;
	uint64_t resolver_calls;
	uint64_t faults;
	uint64_t faults_dropped;
};

/**
 * iodma_xlate_get_stats() - Read the translation counters.
 * @d:  domain.
 * @st: receives the counters; its @size set by
 *      IODMA_STRUCT_INIT(struct iodma_xlate_stats) (growth rule of
 *      iodma/common.h, Linux's copy_struct_to_user()).
 *
 * Counters are per-thread sharded; a read while translations run sums a
 * consistent-enough snapshot.
 *
 * Context: thread-safe.
 * Return:  0 and min(st->size, sizeof(struct iodma_xlate_stats)) bytes
 *          filled, the caller's bytes past the library's struct zeroed;
 *          -EINVAL NULL argument, or st->size smaller than the first
 *          version of struct iodma_xlate_stats (*@st unchanged).
 */
IODMA_EXPORT int iodma_xlate_get_stats(const struct iodma_domain *d,
					struct iodma_xlate_stats *st);

#ifdef __cplusplus
}
#endif
#endif /* IODMA_XLATE_H */
