/* SPDX-License-Identifier: MIT */
/*
 * iodma/backend.h - the IOMMU backend interface, and the soft IOMMU.
 *
 * Concepts
 *   A backend programs one IOMMU (real, through the kernel, or emulated) for
 *   one domain.  It does nothing else: validation, bookkeeping, the IOVA
 *   allocator, listeners and rollback live once in the domain (domain.c) for
 *   every backend.  The domain calls a backend with its map lock held, so a
 *   backend sees one call at a time per domain and needs no lock of its own
 *   for its per-domain state.  Ranges passed to a backend are already
 *   validated: aligned, inside a valid IOVA range, not overlapping (map) or
 *   made of whole live mappings (unmap).
 *
 *   The ops table is a versioned ``static const`` struct (SQLite's
 *   sqlite3_io_methods, Linux's iommu_domain_ops): members marked optional
 *   may be NULL and are NULL-checked in one place in the domain.  New members
 *   are added only at the end together with a version bump.
 *
 *   The soft backend (iodma_backend_soft()) is the embedded default: an
 *   in-process IOMMU whose translation structure is the domain's own mapping
 *   table, with configurable alignment, valid IOVA ranges and mapping limit.
 *   Its fault-injection hook (fail the Nth map or unmap), used by the tests
 *   to prove that a failing backend leaves the domain unchanged, is in
 *   iodma/test-hooks.h, which is neither installed nor exported.
 */
#ifndef IODMA_BACKEND_H
#define IODMA_BACKEND_H

#include <iodma/common.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IODMA_BACKEND_OPS_VERSION 2
/* Version 1 tables (no dirty_* members) are still accepted. */
#define IODMA_BACKEND_OPS_VERSION_MIN 1
#define IODMA_MAX_IOVA_RANGES     64

/**
 * struct iodma_caps - What an IOMMU allows (pci-driver PciIommu queries).
 * @size:          IODMA_STRUCT_INIT(): the size the caller was built with
 *                 (growth rule of iodma/common.h; the library fills what
 *                 fits and never writes @size).
 * @alignment:     power of two >= host page size; iova, len and host address
 *                 of every map/unmap must be multiples of it.
 * @nr_ranges:     number of valid entries in @ranges (1..IODMA_MAX_IOVA_RANGES).
 * @ranges:        valid IOVA ranges, sorted, non-overlapping; a map must lie
 *                 inside one of them.
 * @max_mappings:  most mappings that may exist at once.
 * @flags:         IODMA_CAP_* bits.
 * @reserved_:     0 (explicit, so the struct has no tail padding a later
 *                 field could not use; growth rule of iodma/common.h).
 */
struct iodma_caps {
	size_t size;
	uint64_t alignment;
	uint32_t nr_ranges;
	uint32_t max_mappings;
	struct iodma_iova_range ranges[IODMA_MAX_IOVA_RANGES];
	uint32_t flags;
	uint32_t reserved_;
};

#define IODMA_CAP_MAP_FD        0x1u /* backend can map fd + offset without a VA */
#define IODMA_CAP_DIRTY_TRACKING 0x2u /* the IOMMU can log device writes */
#define IODMA_CAP_UNMAP_ALL     0x4u /* a single call unmaps everything */

/**
 * struct iodma_map_event - One mapping, as a backend or listener sees it.
 * @iova:   first device address.
 * @len:    bytes.
 * @va:     host virtual address of the first byte, or NULL when the mapping
 *          has none (fd-only mapping, or a guest-physical target that is not
 *          inside one iodma_memory region).
 * @gpa:    for a domain over an iodma_memory: the guest-physical address the
 *          IOVA maps to (stage 1 of two); otherwise equal to (uintptr_t)va.
 * @fd:     file descriptor backing the memory, or -1.
 * @offset: offset of the first byte in @fd (meaningless when fd is -1).
 * @perm:   IODMA_PERM_* the device has.
 */
struct iodma_map_event {
	uint64_t iova;
	uint64_t len;
	void *va;
	uint64_t gpa;
	int fd;
	uint64_t offset;
	uint32_t perm;
};

/**
 * struct iodma_backend_ops - Operations of an IOMMU backend.
 * @version:    IODMA_BACKEND_OPS_VERSION.
 * @name:       short name ("soft", "vfio", "iommufd", "identity").
 * @open:       create the backend state for a new domain from @config (the
 *              domain opts' backend_config, may be NULL); store it in *@priv.
 *              Return 0 or a negative errno (nothing to clean up then).
 * @close:      release what open created.  Called with no mapping left
 *              (the domain unmaps everything first).
 * @get_caps:   fill @caps (every byte 0 on entry; @size is the domain's
 *              business: it sets it afterwards).  Called at domain
 *              creation and after iodma_domain_refresh_caps().
 * @map:        program one mapping.  0, or a negative errno and nothing was
 *              programmed.
 * @unmap:      remove the mappings that exactly tile [iova, iova + len)
 *              (the domain guarantees no live mapping is bisected).  Returns
 *              0 and stores the bytes actually removed in *@unmapped, or a
 *              negative errno and nothing was removed.
 * @unmap_all:  optional; remove every mapping in one call.  May return
 *              -EOPNOTSUPP (nothing removed) to have the domain unmap its
 *              runs one by one instead.
 * @flush_iotlb: optional; invalidate the IOMMU's own IOTLB for the range.
 *              Called after unmap and before the domain's unmap returns.
 * @avail_mappings: optional; how many more mappings the IOMMU will take now
 *              (VFIO's DMA_AVAIL read live).  -EOPNOTSUPP if unknown.
 *
 * Dirty tracking of the device's own writes (version >= 2; all optional:
 * a backend without @dirty_start has no device of its own to track, like
 * the soft IOMMU, whose only writers are translations through the domain,
 * which the domain logs itself).  All are called with the domain's map
 * lock held, while the domain's dirty log is on (iodma_dirty_log_start()):
 * @dirty_start: begin tracking at @pgsize bytes per bit (the log's
 *              granule).  0; -EOPNOTSUPP the device's writes cannot be
 *              tracked (the domain then refuses to log: a log that misses
 *              them would lose guest data); or another negative errno.
 *              Nothing started on error.
 * @dirty_stop: end it.
 * @dirty_get:  OR into @bitmap (bit i, bit i % 64 of word i / 64, is the
 *              page @iova + i * @pgsize) the pages of [iova, iova + len)
 *              written since tracking started or since the last dirty_get
 *              or unmap_dirty covering them, and forget them.  The range
 *              covers whole mappings only (VFIO's GET_BITMAP rule).  0 or a
 *              negative errno (then @bitmap is unchanged, nothing forgotten).
 * @unmap_dirty: @unmap that also ORs into @bitmap the range's pages
 *              written and not yet reported (VFIO_DMA_UNMAP_FLAG_GET_DIRTY_
 *              BITMAP), so an unmap during migration loses no write.
 */
struct iodma_backend_ops {
	uint32_t version;
	const char *name;
	int (*open)(const void *config, void **priv);
	void (*close)(void *priv);
	int (*get_caps)(void *priv, struct iodma_caps *caps);
	int (*map)(void *priv, const struct iodma_map_event *ev);
	int (*unmap)(void *priv, uint64_t iova, uint64_t len, uint64_t *unmapped);
	int (*unmap_all)(void *priv, uint64_t *unmapped);
	void (*flush_iotlb)(void *priv, uint64_t iova, uint64_t len);
	int (*avail_mappings)(void *priv, uint32_t *avail);
	/* version >= 2 */
	int (*dirty_start)(void *priv, uint64_t pgsize);
	void (*dirty_stop)(void *priv);
	int (*dirty_get)(void *priv, uint64_t iova, uint64_t len, uint64_t pgsize,
			 uint64_t *bitmap);
	int (*unmap_dirty)(void *priv, uint64_t iova, uint64_t len,
			   uint64_t pgsize, uint64_t *bitmap, uint64_t *unmapped);
};

/* ---- the soft backend --------------------------------------------------- */

/**
 * struct iodma_soft_opts - Configuration of a soft IOMMU domain.
 * @size:         IODMA_OPTS_INIT().
 * @alignment:    power of two >= host page size; 0 = host page size.
 * @nr_ranges:    entries in @ranges; 0 = the default: a 39-bit IOVA space
 *                minus page 0 and the x86 MSI window 0xfee00000-0xfeefffff.
 * @ranges:       valid IOVA ranges: sorted, non-overlapping, each aligned.
 * @max_mappings: mapping limit; 0 = 65535 (VFIO type1's dma_entry_limit).
 */
struct iodma_soft_opts {
	size_t size;
	uint64_t alignment;
	uint32_t nr_ranges;
	uint32_t max_mappings;
	const struct iodma_iova_range *ranges;
};

/**
 * iodma_backend_soft() - The soft (in-process) IOMMU backend.
 *
 * Context: thread-safe.
 * Return:  the static ops table; pass it as iodma_domain_opts.backend with an
 *          optional struct iodma_soft_opts as backend_config.
 */
IODMA_EXPORT const struct iodma_backend_ops *iodma_backend_soft(void);

struct iodma_domain;

/**
 * iodma_backend_priv() - The state a backend keeps for one domain.
 * @d:   a domain, or NULL.
 * @ops: the backend's own ops table (the one passed as
 *       iodma_domain_opts.backend when @d was created).
 *
 * A backend's extension functions take a struct iodma_domain (e.g.
 * iodma_vfio_add_group()); this is how they reach the state their open op
 * stored, and check in the same step that the domain runs their backend and
 * not another one, without seeing the domain's internals (the layering of
 * Linux's iommu_domain and its driver-private container, or a VFIO
 * container's driver data).
 *
 * Context: any thread; the result stays valid until iodma_domain_destroy(@d).
 *          The domain does not serialise what the caller does with it: a
 *          backend's extension functions lock their own state (backend ops
 *          themselves run under the domain's map lock).
 * Return:  the pointer @ops->open stored for @d; NULL when @d or @ops is
 *          NULL or @d runs a different backend.
 */
IODMA_EXPORT void *iodma_backend_priv(const struct iodma_domain *d,
				      const struct iodma_backend_ops *ops);

#ifdef __cplusplus
}
#endif
#endif /* IODMA_BACKEND_H */
