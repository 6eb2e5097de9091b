/* SPDX-License-Identifier: MIT */
/*
 * iodma/domain.h - an IOMMU domain: one IOVA address space.
 *
 * Concepts
 *   A domain is one device address space programmed through one backend
 *   (soft, vfio, iommufd, identity).  It knows the IOMMU's capabilities
 *   (alignment, valid IOVA ranges, max mappings: pci-driver PciIommu), keeps
 *   the mapping table (non-overlapping [iova, iova + len) -> host VA and/or
 *   fd + offset, or guest-physical address, with permissions), owns an IOVA
 *   allocator, and notifies listeners (OpenVMM DmaTarget) of every map and
 *   unmap after replaying the live mappings to each new one.
 *
 *   Invariants: every mapping is aligned and inside one valid IOVA range;
 *   mappings never overlap; the backend and the table always agree, and
 *   every listener holds what the table holds.  Every failing call leaves
 *   all of them exactly as they were, with one exception a backend forces:
 *   a map a listener rejected, whose undo the backend then refused to
 *   unmap, stays live (-EUCLEAN, see iodma_domain_map()).
 *
 *   Two unmap modes: strict (PciIommu::unmap: exactly one or several
 *   contiguous whole mappings) and gaps allowed (DmaTarget::unmap_dma: gaps
 *   are fine, bisecting a mapping is not; returns the bytes unmapped).
 *   Before any unmap returns, the range left the domain's IO page table
 *   (before anyone was told), the backend's IOTLB was flushed and every access section that could still see
 *   the range has ended (iodma/xlate.h), so the caller may free the memory.
 *
 *   Locking: map, unmap, listener and allocator calls are thread-safe and
 *   serialised by the domain's map lock; translation (xlate.h) runs
 *   concurrently with them.  Listener and backend callbacks run with the map
 *   lock held: from them, only translation and the lock-free queries
 *   iodma_domain_alignment() and iodma_domain_nr_mappings() may be called on
 *   the same domain (any other function of it would wait for the lock).
 */
#ifndef IODMA_DOMAIN_H
#define IODMA_DOMAIN_H

#include <iodma/common.h>
#include <iodma/backend.h>

#ifdef __cplusplus
extern "C" {
#endif

struct iodma_domain;
struct iodma_memory;

#define IODMA_DOMAIN_DISABLED 0x1u /* create with translation off (identity over memory) */

/**
 * struct iodma_domain_opts - How to create a domain.
 * @size:              IODMA_OPTS_INIT().
 * @backend:           ops table; NULL = iodma_backend_soft().
 * @backend_config:    passed to the backend's open (soft: a
 *                     const struct iodma_soft_opts *, or NULL for defaults).
 * @memory:            optional guest/physical memory.  When set, the domain
 *                     is two-stage: iodma_domain_map_gpa() maps IOVA -> GPA
 *                     and translation resolves GPA through @memory; and
 *                     with the IOMMU disabled translation is identity over
 *                     @memory.  The memory must outlive the domain.
 * @iotlb_entries:     0 or a power of two (anything else is -EINVAL); no
 *                     longer used: translation walks the domain's IO page
 *                     table, which has no capacity to size (xlate.h).
 * @fault_log_entries: fault records kept before the oldest are dropped; 0 = 256.
 * @nr_reserved:       entries in @reserved.
 * @reserved:          IOVA windows the IOVA allocator never hands out (maps
 *                     at a fixed IOVA may still use them).
 * @flags:             IODMA_DOMAIN_* bits.
 */
struct iodma_domain_opts {
	size_t size;
	const struct iodma_backend_ops *backend;
	const void *backend_config;
	struct iodma_memory *memory;
	uint32_t iotlb_entries;
	uint32_t fault_log_entries;
	uint32_t nr_reserved;
	uint32_t flags;
	const struct iodma_iova_range *reserved;
};

/**
 * iodma_domain_create() - Create a domain and open its backend.
 * @opts: options (IODMA_OPTS_INIT then fill); NULL = all defaults.
 * @out:  receives the new domain.
 *
 * Context: thread-safe; may block (backend open).
 * Return:  0; -EINVAL bad options (size below the first version,
 *          iotlb_entries not a power of two, backend version unknown,
 *          backend caps inconsistent); -E2BIG opts, or the backend's options
 *          struct in backend_config, is longer than this library knows and a
 *          byte past its end is non-zero (growth rule, iodma/common.h);
 *          -ENOMEM; or the backend's open error.  On error *@out is unchanged
 *          and nothing is left allocated.
 */
IODMA_EXPORT int iodma_domain_create(const struct iodma_domain_opts *opts,
				     struct iodma_domain **out);

/**
 * iodma_domain_destroy() - Unmap everything and free a domain.
 * @d: domain, or NULL (no-op).
 *
 * Every live mapping is unmapped from the backend and from each listener
 * (one unmap event each), then the backend is closed.  Listeners are
 * unregistered.
 *
 * Context: not thread-safe against other calls on @d; waits for open access
 *          sections.
 * Return:  nothing.
 */
IODMA_EXPORT void iodma_domain_destroy(struct iodma_domain *d);

/**
 * iodma_domain_get_caps() - The IOMMU's capabilities (PciIommu queries).
 * @d:    domain.
 * @caps: receives alignment, valid IOVA ranges, max mappings, flags; its
 *        @size set by IODMA_STRUCT_INIT(struct iodma_caps) (growth rule of
 *        iodma/common.h, Linux's copy_struct_to_user()).
 *
 * Context: thread-safe; takes the map lock (not from a listener).
 * Return:  0 and min(caps->size, sizeof(struct iodma_caps)) bytes filled,
 *          the caller's bytes past the library's struct zeroed; -EINVAL
 *          NULL argument, or caps->size smaller than the first version of
 *          struct iodma_caps (*@caps unchanged).
 */
IODMA_EXPORT int iodma_domain_get_caps(const struct iodma_domain *d,
				       struct iodma_caps *caps);

/**
 * iodma_domain_alignment() - PciIommu::alignment.
 * @d: domain.
 *
 * Context: thread-safe, lock-free.
 * Return:  the alignment in bytes: a power of two >= host page size; 0 for
 *          a NULL domain.
 */
IODMA_EXPORT uint64_t iodma_domain_alignment(const struct iodma_domain *d);

/**
 * iodma_domain_max_mappings() - PciIommu::max_num_mappings.
 * @d: domain.
 *
 * Context: thread-safe; takes the map lock (not from a listener).
 * Return:  the most mappings that may be in effect at once; 0 for a NULL
 *          domain.
 */
IODMA_EXPORT uint32_t iodma_domain_max_mappings(const struct iodma_domain *d);

/**
 * iodma_domain_nr_mappings() - How many mappings are live now.
 * @d: domain.
 *
 * Context: thread-safe, lock-free (a snapshot).
 * Return:  the count; 0 for a NULL domain.
 */
IODMA_EXPORT uint64_t iodma_domain_nr_mappings(const struct iodma_domain *d);

/**
 * iodma_domain_refresh_caps() - Re-read the backend's capabilities.
 * @d: domain.
 *
 * For backends whose ranges change when devices attach (iommufd re-reads
 * IOAS_IOVA_RANGES after every attach).
 *
 * Context: thread-safe; takes the map lock.
 * Ranges may shrink: the space they lose leaves the IOVA allocator for
 * good.  The alignment may grow, but not below the alignment the domain was
 * created with (the allocator's granule).
 *
 * Return:  0; -EBUSY a live mapping would fall outside the new ranges or
 *          break the new alignment, an IOVA allocation lies in lost space,
 *          or the new alignment is not a multiple of the creation-time one
 *          (old caps kept); -EINVAL the new caps are invalid; or the
 *          backend's error (old caps kept).
 */
IODMA_EXPORT int iodma_domain_refresh_caps(struct iodma_domain *d);

/**
 * iodma_domain_map() - Map host memory at a fixed IOVA (PciIommu::map).
 * @d:    domain.
 * @iova: device address; multiple of iodma_domain_alignment(d).
 * @len:  bytes; > 0, multiple of the alignment, iova + len must not overflow.
 * @va:   host address of the first byte; same alignment; must stay valid
 *        until the range is unmapped.
 * @perm: IODMA_PERM_READ and/or IODMA_PERM_WRITE, as seen by the device.
 *
 * The mapping carries no fd (listeners see fd = -1).  On a two-stage domain
 * (one created over an iodma_memory) use iodma_domain_map_gpa() instead.
 *
 * A listener that rejects the map makes it fail: the backend unmaps it,
 * then every listener that accepted it sees its unmap.  Should the backend
 * refuse that unmap, the mapping cannot be taken back: it is then recorded
 * as live (the books never disagree with the IOMMU; nr_mappings counts it,
 * a map over it is -EEXIST) and -EUCLEAN is returned; the caller removes
 * it with iodma_domain_unmap() like any other.  In the kernel, iommufd
 * treats an unmap that does not remove exactly what was asked as a driver
 * bug (iommu_unmap_nofail() in drivers/iommu/iommufd/pages.c warns and
 * goes on); a user-space domain cannot assume that of an ioctl, so it
 * keeps its book equal to the IOMMU's and tells the caller.
 *
 * Context: thread-safe; may block (backend, listeners).
 * Return:  0; -EINVAL bad alignment/length/perm, NULL va, a two-stage
 *          domain, or [va, va + len) wraps past the end of the address
 *          space; -ERANGE not inside one valid IOVA range; -EEXIST overlaps
 *          a mapping, or lies partly inside an IOVA allocation
 *          (iodma_iova_alloc(): a map is either wholly inside one
 *          allocation, or clear of all of them), or spans two
 *          allocations (possible only once refresh_caps merged two
 *          touching valid ranges);
 *          -ENOSPC max mappings reached (within 256 of the limit the
 *          backend's live count, VFIO's DMA_AVAIL, is read too); -ENOMEM;
 *          the backend's or a listener's error: then nothing was mapped
 *          and every listener that saw the map has seen its unmap;
 *          -EUCLEAN a listener rejected the map and the backend refused to
 *          unmap it again: the mapping is live, in the table and the
 *          backend, and with the listeners that accepted it before the one
 *          that rejected it (the rejecting one and those after it never
 *          saw it); unmap it.  A listener's or backend's own -EUCLEAN is
 *          returned as -EIO, so -EUCLEAN always means "left live".
 */
IODMA_EXPORT int iodma_domain_map(struct iodma_domain *d, uint64_t iova,
				  uint64_t len, void *va, uint32_t perm);

/**
 * iodma_domain_map_fd() - Map memory given by fd + offset (DmaTarget::map_dma).
 * @d:      domain.
 * @iova:   device address; aligned.
 * @len:    bytes; > 0, aligned, no overflow.
 * @va:     host address of the same memory, or NULL when only the fd is known
 *          (then the backend must have IODMA_CAP_MAP_FD, and translation of
 *          the range fails: there is no host address to hand out).
 * @fd:     file descriptor of the backing memory (>= 0); not duplicated:
 *          the caller keeps it open while the mapping lives.
 * @offset: byte offset of iova in @fd; aligned.
 * @perm:   IODMA_PERM_* for the device.
 *
 * Context: thread-safe; may block.
 * Return:  as iodma_domain_map() (-EUCLEAN included); also -EINVAL for
 *          fd < 0, a misaligned offset, or [offset, offset + len) wrapping
 *          past 2^64; -EOPNOTSUPP for va == NULL on a backend without
 *          IODMA_CAP_MAP_FD.  Nothing changed on any other error.
 */
IODMA_EXPORT int iodma_domain_map_fd(struct iodma_domain *d, uint64_t iova,
				     uint64_t len, void *va, int fd,
				     uint64_t offset, uint32_t perm);

/**
 * iodma_domain_map_gpa() - Map IOVA -> guest-physical address (stage 1).
 * @d:    a domain created over an iodma_memory.
 * @iova: device address; aligned.
 * @len:  bytes; > 0, aligned, no overflow.
 * @gpa:  guest-physical address; aligned; gpa + len must not overflow.  It
 *        need not be backed by a memory region now: translation resolves it
 *        through the memory at access time (what a vIOMMU page table holds).
 * @perm: IODMA_PERM_*.
 *
 * Listeners see va/fd/offset of the region holding [gpa, gpa + len) when one
 * region holds all of it, else va = NULL and fd = -1.
 *
 * Context: thread-safe; may block.
 * Return:  as iodma_domain_map() (-EUCLEAN included); -EINVAL also when
 *          @d has no memory or [gpa, gpa + len) wraps past 2^64.  Nothing
 *          changed on any other error.
 */
IODMA_EXPORT int iodma_domain_map_gpa(struct iodma_domain *d, uint64_t iova,
				      uint64_t len, uint64_t gpa, uint32_t perm);

/**
 * iodma_domain_unmap() - Strict unmap (PciIommu::unmap semantics).
 * @d:    domain.
 * @iova: first byte; aligned.
 * @len:  bytes; > 0, aligned, no overflow.
 *
 * [iova, iova + len) must be exactly one live mapping or several contiguous
 * whole mappings with no gap between them.  In this order: the range stops
 * translating (its leaves leave the IO page table, vm-memory's rule), the backend
 * unmaps it and flushes its IOTLB, the listeners are told (a listener that
 * translates the range from its unmap callback gets -EFAULT); then, after
 * the map lock is dropped, the call waits for the access sections of other
 * threads that translated a piece of the range (xlate.h: only those, on a
 * futex; sections on other ranges do not delay it).  After it returns the
 * memory may be freed.
 *
 * Context: thread-safe; may block (map lock; the sections above).  From
 *          inside an access section it does not wait for that section: the
 *          caller must not use that section's slices of the range after.
 * Return:  0; -EINVAL misaligned/zero/overflowing range, or the range is not
 *          exactly tiled by whole contiguous mappings (including: nothing
 *          mapped there); or the backend's error.  Nothing changed on error
 *          (translations of the range fail while the backend is tried).
 *          Never fails for lack of memory.
 */
IODMA_EXPORT int iodma_domain_unmap(struct iodma_domain *d, uint64_t iova,
				    uint64_t len);

/**
 * iodma_domain_unmap_gaps() - Unmap allowing gaps (DmaTarget::unmap_dma).
 * @d:        domain.
 * @iova:     first byte; aligned.
 * @len:      bytes; > 0, aligned, no overflow.
 * @unmapped: if not NULL, receives the bytes actually unmapped (0 when the
 *            range held no mapping).
 *
 * Every mapping inside the range is removed; gaps are fine; a mapping that
 * crosses either end of the range (would be bisected) is refused.  Same
 * order and waiting as iodma_domain_unmap(), over the whole range.
 *
 * Context: thread-safe; may block; as iodma_domain_unmap() inside a section.
 * Return:  0; -EINVAL bad range or a mapping would be bisected; or the
 *          backend's error.  Nothing changed on error.
 */
IODMA_EXPORT int iodma_domain_unmap_gaps(struct iodma_domain *d, uint64_t iova,
					 uint64_t len, uint64_t *unmapped);

/**
 * iodma_domain_unmap_all() - Remove every mapping.
 * @d:        domain.
 * @unmapped: if not NULL, receives the bytes unmapped.
 *
 * Uses the backend's unmap_all when it has one (VFIO_DMA_UNMAP_FLAG_ALL).
 * Waits for every access section of another thread that translated in
 * this domain (sections in other domains do not delay it).
 *
 * Context: thread-safe; may block; as iodma_domain_unmap() inside a section.
 * Return:  0, or the backend's error (nothing changed).
 */
IODMA_EXPORT int iodma_domain_unmap_all(struct iodma_domain *d,
					uint64_t *unmapped);

/**
 * iodma_domain_set_enabled() - Turn translation on or off.
 * @d:       domain.
 * @enabled: false = IOMMU disabled: translation is identity over the
 *           domain's iodma_memory (IOVA = guest-physical address); mappings
 *           are kept and come back when re-enabled.
 *
 * Context: thread-safe; every translation that starts afterwards sees the
 *          new state; waits for the access sections of other threads that
 *          translated in this domain.
 * Return:  0; -EINVAL disabling a domain that has no memory.
 */
IODMA_EXPORT int iodma_domain_set_enabled(struct iodma_domain *d, bool enabled);

/* ---- IOVA allocation ---------------------------------------------------- */

/**
 * iodma_iova_alloc() - Allocate IOVA space.
 * @d:     domain.
 * @len:   bytes; > 0; rounded up to the domain alignment.
 * @align: required alignment of the result; a power of two; values below
 *         the domain alignment are raised to it.
 * @limit: highest usable address (inclusive: the dma_mask), e.g.
 *         0xffffffff for a 32-bit device.
 * @iova:  receives the start.
 *
 * The range is inside one valid IOVA range, at or below @limit, clear of
 * live mappings, of other allocations and of the reserved windows.  It is
 * not mapped: map it with iodma_domain_map*() (maps wholly inside an
 * allocation are allowed, and counted in it), release it with
 * iodma_iova_free() once they are unmapped.  No IOVA space is ever handed
 * out twice: not over another allocation, a reserved window or a live
 * mapping, fixed-IOVA or inside a freed allocation.  Recently freed sizes
 * are served from per-thread caches (Linux's iova rcache) without the
 * tree.
 *
 * Context: thread-safe.
 * Return:  0; -EINVAL bad len/align; -ENOMEM no free range fits (or no
 *          memory).  Nothing allocated on error.
 */
IODMA_EXPORT int iodma_iova_alloc(struct iodma_domain *d, uint64_t len,
				  uint64_t align, uint64_t limit,
				  uint64_t *iova);

/**
 * iodma_iova_free() - Release IOVA space from iodma_iova_alloc().
 * @d:    domain.
 * @iova: the start returned by iodma_iova_alloc().
 * @len:  the len passed to it.
 *
 * An allocation is freed only when no mapping lies inside it: unmap them
 * first.  Otherwise the free is refused and the space stays allocated, so
 * that the next iodma_iova_alloc() cannot hand out IOVAs a device can
 * still reach (Linux's dma-iommu frees the IOVA only after the unmap, for
 * the same reason).  The check reads a count kept in the allocation: the
 * free's cost does not depend on the number of mappings.  A free of 1, 2,
 * 4 ... 32 domain pages (the cached sizes) finds its allocation in a hash
 * under one of 64 striped spin locks and takes no domain-wide lock, so
 * its cost does not depend on the number of live allocations either; a
 * double free is still detected there (unlike Linux's iova rcache, which
 * does not check).  Two threads freeing the same range at once: exactly
 * one gets 0.
 *
 * Context: thread-safe.
 * Return:  0; -ENOENT no allocation [iova, iova + len) (nothing freed);
 *          -EBUSY a live mapping lies inside the allocation (nothing
 *          freed: it is still allocated; unmap, then free again).
 */
IODMA_EXPORT int iodma_iova_free(struct iodma_domain *d, uint64_t iova,
				 uint64_t len);

/* ---- listeners (OpenVMM DmaTarget) ------------------------------------- */

/**
 * struct iodma_listener_ops - A consumer of the domain's mapping events.
 * @map:   a mapping was added (or is being replayed).  Return 0 to accept,
 *         or a negative errno to reject: the map then fails with that error
 *         and every listener that accepted it gets @unmap (after the
 *         backend unmapped it; if the backend cannot, the map fails with
 *         -EUCLEAN instead and those listeners keep it: it is live).
 * @unmap: [iova, iova + len) is being removed.  The range never bisects a
 *         mapping this listener accepted but may contain gaps (DmaTarget).
 *         Must not fail.
 *
 * Both run with the domain's map lock held.
 */
struct iodma_listener_ops {
	int (*map)(void *arg, const struct iodma_map_event *ev);
	void (*unmap)(void *arg, uint64_t iova, uint64_t len);
};

struct iodma_listener;

/**
 * iodma_domain_add_listener() - Register a listener and replay the mappings.
 * @d:   domain.
 * @ops: callbacks; must stay valid until removal.
 * @arg: passed to the callbacks.
 * @out: receives the registration handle.
 *
 * Every live mapping is first replayed to @ops->map in IOVA order; then the
 * listener sees every map and unmap.
 *
 * Context: thread-safe; may block.
 * Return:  0; -EINVAL NULL ops or callbacks; -ENOMEM; or the error a replayed
 *          map returned: then the mappings already replayed were unmapped
 *          from this listener and it is not registered.
 */
IODMA_EXPORT int iodma_domain_add_listener(struct iodma_domain *d,
					   const struct iodma_listener_ops *ops,
					   void *arg,
					   struct iodma_listener **out);

/**
 * iodma_domain_remove_listener() - Unregister a listener.
 * @d: domain.
 * @l: handle from iodma_domain_add_listener(), or NULL (no-op).
 *
 * The listener is not sent unmaps for the live mappings.
 *
 * Context: thread-safe.
 * Return:  nothing.
 */
IODMA_EXPORT void iodma_domain_remove_listener(struct iodma_domain *d,
					       struct iodma_listener *l);

/**
 * iodma_domain_for_each_mapping() - Visit the live mappings in a range.
 * @d:    domain.
 * @iova: first byte of the range.
 * @len:  bytes; > 0, no overflow (alignment not required).
 * @fn:   called for every mapping overlapping the range, in IOVA order;
 *        returning non-zero stops the walk and that value is returned.
 * @arg:  passed to @fn.
 *
 * Context: thread-safe; holds the map lock while visiting, so @fn must not
 *          map or unmap on @d.
 * Return:  0 after visiting all; @fn's non-zero value; -EINVAL bad range.
 */
IODMA_EXPORT int iodma_domain_for_each_mapping(struct iodma_domain *d,
					       uint64_t iova, uint64_t len,
					       int (*fn)(void *arg, const struct iodma_map_event *ev),
					       void *arg);

#ifdef __cplusplus
}
#endif
#endif /* IODMA_DOMAIN_H */
