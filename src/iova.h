/* SPDX-License-Identifier: MIT */
/*
 * iova.h - the IOVA allocator of a domain.
 *
 * It hands out IOVA space of a given length and alignment at or below a
 * limit (a dma_mask), inside the domain's valid IOVA ranges, outside the
 * reserved windows, clear of other allocations and of fixed-IOVA mappings
 * (which "claim" their space).  Like Linux's iova.c it allocates top-down
 * below the limit; unlike it, the free-space search is O(log n) (free
 * extents in a tree augmented with the largest free extent of each
 * subtree), so long runs do not degrade.  Recently freed ranges of small
 * power-of-two page counts are kept in per-thread-slot caches (Linux's iova
 * rcache: magazines per slot plus a shared depot; 1 .. 128 pages here,
 * Linux stops at 32) and handed out again without the tree.  A thread with
 * a slot of its own allocates from and frees into its magazines without
 * any lock, checking each free against the range's state word with one
 * compare-and-swap (double free -ENOENT, free over a mapping -EBUSY, which
 * Linux does not check); other frees find the allocation in a pfn hash
 * under a striped spin lock.  Either way O(1) and no global lock.  The
 * fast paths find the thread's slot through a per-thread cache of the
 * last allocator it used, so a thread alternating between allocators
 * takes the (still lock-free) slower path on each switch.
 *
 * Thread-safe: every function may be called from any thread.
 * No system calls.
 */
#ifndef IODMA_IOVA_H
#define IODMA_IOVA_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include <iodma/common.h>

struct iova_alloc;

/* Create an allocator over @ranges (sorted, non-overlapping, each aligned to
 * @granule) minus @reserved (any ranges; clipped to granule boundaries
 * outward).  @granule is a power of two >= 4096.
 * Returns 0, -EINVAL or -ENOMEM. */
int iova_alloc_create(uint64_t granule,
		      const struct iodma_iova_range *ranges, size_t nr_ranges,
		      const struct iodma_iova_range *reserved, size_t nr_reserved,
		      struct iova_alloc **out);

/* Free the allocator and everything in it (allocations, claims, caches). */
void iova_alloc_destroy(struct iova_alloc *a);

/* Allocate @len bytes (rounded up to the granule) aligned to @align (a power
 * of two, raised to the granule), with the last byte <= @limit.  The result
 * is the highest such free range (top-down).  Returns 0 and *@iova, -EINVAL
 * (len 0, align not a power of two, len overflow) or -ENOMEM (no space). */
int iova_alloc_get(struct iova_alloc *a, uint64_t len, uint64_t align,
		   uint64_t limit, uint64_t *iova);

/* Free an allocation made by iova_alloc_get() with the same @len.
 * Returns 0; -ENOENT if [iova, iova + len rounded) is not a live
 * allocation (double free, wrong len); -EBUSY if a fixed map lies inside
 * it (iova_claim() counted it and no iova_unclaim_inside() took it back):
 * nothing changes on error.  Sizes of 1, 2, 4 ... 128 pages with the
 * rcache on: a thread among the process's first 64 (util.h shard_own())
 * frees a range it was handed with one compare-and-swap of the range's
 * state word and a push into its own magazine, no lock; any other free of
 * such a size takes one hash stripe's spin lock (and the shared slot's,
 * for threads without a shard); the tree lock only to drain a full
 * magazine.  Concurrent frees of one range: exactly one returns 0, the
 * others -ENOENT.  Context: any thread. */
int iova_alloc_put(struct iova_alloc *a, uint64_t iova, uint64_t len);

/* A fixed-IOVA mapping is about to use [iova, iova + len) (granule-aligned,
 * inside the valid ranges).
 *  - range entirely inside one live allocation: 0, *@claimed = false
 *    (the allocation's owner is mapping its own space); the allocation
 *    counts one more mapping inside it and cannot be freed (-EBUSY) until
 *    iova_unclaim_inside() takes it back;
 *  - range overlaps no allocation and no claim: the parts of it that are
 *    free space (not reserved windows) become claimed; 0, *@claimed = true;
 *  - otherwise (straddles an allocation's edge, overlaps another claim):
 *    -EEXIST, nothing changes.
 * Cached (freed but not yet returned to the tree) ranges that overlap are
 * evicted from the caches first, so a claim never collides with the cache.
 * A claim inside an allocation racing that allocation's free (on any
 * thread) is one of the first two cases, never -EEXIST: either the claim
 * counts first (0, *@claimed = false; the free is -EBUSY) or the free
 * does (0, *@claimed = true over the freed space).
 * May return -EINVAL (not granule-aligned, len 0, overflow) or -ENOMEM
 * (nothing changes then).  Parts outside the valid ranges are ignored like
 * reserved windows. */
int iova_claim(struct iova_alloc *a, uint64_t iova, uint64_t len,
	       bool *claimed);

/* Undo a claim that set *claimed = true, with the same range.  A range that
 * is not exactly such a claim is ignored (nothing changes). */
void iova_unclaim(struct iova_alloc *a, uint64_t iova, uint64_t len);

/* Undo an iova_claim() that set *claimed = false, with the same range: the
 * mapping inside the allocation is gone.  O(log n). */
void iova_unclaim_inside(struct iova_alloc *a, uint64_t iova, uint64_t len);

/* Take @n more windows out of the space the allocator serves, for good
 * (the domain's valid ranges shrank: iommufd re-reads them after every
 * attach).  The windows must be granule-aligned and must not overlap each
 * other.  All or nothing: -EINVAL bad window; -EBUSY an allocation or claim
 * lies in one of them (cached ranges are flushed back first); -ENOMEM.
 * Claims made before keep their pieces: their ranges cannot overlap the
 * windows. */
int iova_alloc_reserve(struct iova_alloc *a,
		       const struct iodma_iova_range *r, size_t n);

/* Return every cached range to the tree (used by claim and by tests). */
void iova_alloc_flush_caches(struct iova_alloc *a);

/* Turn the rcache on (the default) or off (flushes it); for tests and
 * benchmarks of the tree path. */
void iova_alloc_set_caching(struct iova_alloc *a, bool on);

/* Counters for tests and benchmarks.  iova_alloc_get_stats() walks the busy
 * tree under the tree lock (O(n): the fast alloc counts no cache hits, they
 * are frees pushed - ranges drained or evicted - ranges still cached); exact
 * when no other thread is in the allocator, else a snapshot. */
struct iova_alloc_stats {
	uint64_t allocs;        /* successful iova_alloc_get() */
	uint64_t cache_hits;    /* of those, served by a cache */
	uint64_t frees;
	uint64_t live;          /* allocations live now */
	uint64_t claims;        /* claims live now */
	uint64_t free_bytes;    /* free space in the tree (excludes cached) */
};
void iova_alloc_get_stats(struct iova_alloc *a, struct iova_alloc_stats *st);

/* Self-check for tests: the tree's invariants and augmentation.
 * Returns 0 or -EUCLEAN. */
int iova_alloc_check(struct iova_alloc *a);

#endif /* IODMA_IOVA_H */
