/* SPDX-License-Identifier: MIT */
/*
 * bounce.h - the bounce pool of a device (Linux's swiotlb), private to
 * dma.c.
 *
 * One contiguous region, reachable by the device below its dma_mask, cut
 * into slots of slot_size bytes: slot i is at bus address/IOVA
 * pool_iova + i * slot_size and at host address pool_va + i * slot_size, so
 * turning a bounce IOVA into its slot is arithmetic, never a lookup.  A map
 * takes a run of contiguous slots; the run's metadata (original buffer,
 * length, direction) lives in its first slot's record and every slot of the
 * run knows its first slot.
 *
 * The slots are split into areas (up to 4) with a lock each, so threads on
 * different areas do not contend; a thread starts at the area of its thread
 * slot and moves on to the others when it is full.  A run never crosses an
 * area, so the longest bounce is one area.
 *
 * The hot path takes no lock (Linux's swiotlb takes its area lock twice):
 *  - a thread with a shard of its own (shard_own() in util.h) keeps the
 *    runs it frees in a stash that only it touches (two runs; up to 8 KiB
 *    in all, 64 KiB for the first threads) and maps from there first, so
 *    a map + unmap of the same size is one atomic read-modify-write (the
 *    unmap's claim).  Stashed slots stay reserved in their area: stashes
 *    hold at most a quarter of the pool, and a thread that finds the
 *    areas full empties its own stash into them and tries again; another
 *    thread's stash is not taken (as with Linux's per-CPU page lists,
 *    -ENOMEM may come while that much sits in other threads' stashes);
 *  - a run's head slot has a state word (generation, FREE/LIVE/DYING).
 *    Unmap claims a run with one compare-and-swap LIVE -> DYING (of two
 *    racing unmaps exactly one wins, a stale one fails on the
 *    generation), copies back, and frees it; sync and lookups read the
 *    record lock-free as a seqlock.
 * The area locks are taken only to reserve or free slots in an area.
 * bounce.c only allocates, records and releases runs; dma.c does the copies
 * and the cache maintenance.  Thread-safe.
 */
#ifndef IODMA_BOUNCE_H
#define IODMA_BOUNCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct iodma_domain;
struct bounce_pool;

/* How to build a pool. */
struct bounce_cfg {
	struct iodma_domain *domain; /* map the pool into it, or NULL: direct */
	uint64_t dma_mask;           /* the pool's last byte must be <= it */
	size_t pool_size;            /* bytes; multiple of slot_size */
	size_t slot_size;            /* power of two >= 64 */
	void *va;                    /* caller's memory, or NULL: allocate */
	uint64_t bus;                /* direct mode: bus address of @va */
	/* direct mode without @va: bus address of a host VA (0 or -errno) */
	int (*virt_to_phys)(void *arg, const void *va, uint64_t *pa);
	void *arg;
};

/* A run as recorded. */
struct bounce_run {
	uint64_t iova;   /* bus address/IOVA of the run's first byte */
	void *bva;       /* host address of the run's first byte */
	void *orig;      /* the buffer it stands for */
	size_t len;      /* bytes mapped */
	uint8_t dir;     /* enum iodma_dir */
	uint8_t flags;   /* BOUNCE_F_* given at map */
};

#define BOUNCE_F_SG 0x1u /* part of a scatter-gather list */

/* Allocate (or take the caller's) memory, check the device reaches it
 * below dma_mask (direct) or allocate IOVA space below it and map it
 * read/write (domain).  Returns 0, -EINVAL, -ENOMEM (including: no IOVA
 * space, or direct-mode memory not contiguous below the mask), or the
 * domain's map error; -EIO a listener rejected the pool's map and it was
 * taken back.  Nothing left allocated on error, except with -EUCLEAN: the
 * backend refused to unmap the pool, so its pages and IOVA space are kept
 * (the device may still reach them). */
int bounce_create(const struct bounce_cfg *cfg, struct bounce_pool **out);

/* Unmap and free the pool.  Returns how many runs were still live.  If the
 * backend refuses the unmap, the pages and IOVA space stay allocated (the
 * device may still reach them). */
uint64_t bounce_destroy(struct bounce_pool *p);

/* Is @iova inside the pool's bus/IOVA range? */
bool bounce_owns(const struct bounce_pool *p, uint64_t iova);

/* Reserve a run for [orig, orig + len): its first byte's IOVA is a
 * multiple of @align (and of 4096 when @len >= 4096, as in Linux's
 * swiotlb), its last byte <= @limit, and it does not cross a
 * multiple of @boundary + 1 (@boundary 0 = no constraint).  Returns 0 and
 * the run, or -ENOMEM (no free run fits in the areas or the caller's
 * stash). */
int bounce_map(struct bounce_pool *p, void *orig, size_t len, uint8_t dir,
	       uint8_t flags, uint64_t align, uint64_t limit,
	       uint64_t boundary, struct bounce_run *out);

/* The live run containing [iova, iova + len).  Returns 0 or -EINVAL. */
int bounce_find(struct bounce_pool *p, uint64_t iova, size_t len,
		struct bounce_run *out);

/* Start unmapping the run that begins at @iova with exactly @len, @dir,
 * (flags & BOUNCE_F_SG) == @flags and, if @orig is not NULL, that buffer:
 * the run stops being found by bounce_find/bounce_claim but keeps its
 * slots.  Returns 0 and the run, or -EINVAL (no such run, nothing
 * changed). */
int bounce_claim(struct bounce_pool *p, uint64_t iova, size_t len,
		 uint8_t dir, uint8_t flags, const void *orig,
		 struct bounce_run *out);

/* bounce_claim() + @fn(@arg, run) + bounce_release() (the single-map
 * unmap: @fn copies back while the run is claimed, so no map can take its
 * slots).  @p may be NULL (no pool).  Returns 0, -ENOENT (@iova is not in
 * the pool, or no pool: not a bounce, so the caller looks elsewhere) or
 * -EINVAL (in the pool but no such run); on error @fn is not called and
 * nothing changed. */
int bounce_unmap(struct bounce_pool *p, uint64_t iova, size_t len,
		 uint8_t dir, uint8_t flags, const void *orig,
		 void (*fn)(void *arg, const struct bounce_run *run),
		 void *arg);

/* Free the slots of a run claimed by the caller. */
void bounce_release(struct bounce_pool *p, uint64_t iova);

uint64_t bounce_slots_total(const struct bounce_pool *p);
uint64_t bounce_slots_used(const struct bounce_pool *p);

#endif /* IODMA_BOUNCE_H */
