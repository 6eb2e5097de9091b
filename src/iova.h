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
 * takes the (still lock-free) slower path on each switch.  The cache hit
 * and the free of a range the thread was handed are static inlines here
 * (below): no call on a hit.
 *
 * Thread-safe: every function may be called from any thread.
 * No system calls.
 */
#ifndef IODMA_IOVA_H
#define IODMA_IOVA_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include <stdatomic.h>

#include <iodma/common.h>

#include "util.h"

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

/**
 * iova_alloc_get() - allocate IOVA space.
 * @a: the allocator.
 * @len: bytes, > 0, rounded up to the granule.
 * @align: bytes, a power of two (raised to the granule).
 * @limit: the highest byte the range may cover (a dma_mask).
 * @iova: where the first byte of the range is stored.
 *
 * The result is the highest such free range (top-down, Linux iova.c's
 * alloc_iova()), or, for 1, 2, 4 ... 128 granules with the rcache on, the
 * range freed last into the calling thread's magazine that fits (Linux's
 * alloc_iova_fast()).  A static inline: the cache hit is done in the
 * caller (see "The inline fast paths" below), anything else in
 * iova_alloc_get_slow().
 *
 * Context: any thread.
 * Return: 0 and *@iova; -EINVAL (@a or @iova NULL, @len 0, @align not a
 * power of two, @len overflows when rounded); -ENOMEM (no space at or
 * below @limit, after flushing the caches).  Nothing changes on error.
 */
static inline int iova_alloc_get(struct iova_alloc *a, uint64_t len,
				 uint64_t align, uint64_t limit,
				 uint64_t *iova);

/**
 * iova_alloc_put() - free an allocation made by iova_alloc_get().
 * @a: the allocator.
 * @iova: the range's first byte, as iova_alloc_get() stored it.
 * @len: bytes, the same as given to iova_alloc_get() (rounded the same).
 *
 * Sizes of 1, 2, 4 ... 128 granules with the rcache on: a thread among the
 * process's first 64 (util.h shard_own()) frees a range it was handed with
 * one compare-and-swap of the range's state word and a push into its own
 * magazine, no lock, inline in the caller; any other free of such a size
 * takes one hash stripe's spin lock (and the shared slot's, for threads
 * without a shard); the tree lock only to drain a full magazine.  Linux's
 * free_iova_fast() pushes whatever it is given; this checks it.
 *
 * Context: any thread.  Concurrent frees of one range: exactly one returns
 * 0, the others -ENOENT.
 * Return: 0; -ENOENT if [@iova, @iova + @len rounded) is not a live
 * allocation (never allocated, double free, wrong @len, @a NULL);
 * -EBUSY if a fixed map lies inside it (iova_claim() counted it and no
 * iova_unclaim_inside() took it back).  Nothing changes on error.
 */
static inline int iova_alloc_put(struct iova_alloc *a, uint64_t iova,
				 uint64_t len);

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

/* ---- The inline fast paths (issue 12) ---------------------------------------
 *
 * Internal to iova.c and the two inlines below; no other file may touch
 * these structures.  The cache hit of iova_alloc_get() and the recorded
 * free of iova_alloc_put() are inlined into their callers (domain.c's
 * map path, the tests, the benchmarks): one %fs-relative compare finds the
 * calling thread's own slot, no call on a hit (Linux inlines nothing of
 * its rcache, but its fast path is one call deep too; the calls, returns
 * and argument shuffles were 22 of the 131 instructions of a 4 KiB pair).
 * Everything else (and every miss) calls iova_alloc_get_slow() or
 * iova_alloc_put_slow(), which check the arguments fully and give the
 * documented errors.
 */

#define IOVA_NR_REC      64	/* a thread's records of what it was handed */
#define IOVA_NR_CLASSES  8	/* 1, 2, 4 ... 128 granules */
#define IOVA_MAG_SIZE    64

/* A spin lock (the functions are in iova.c). */
typedef struct {
	atomic_uint v;
} iova_spin_t;

/* A magazine.  The fast paths of its holder write n and the top entries;
 * the pads keep them off any line another thread's magazine (or another
 * heap block) writes, whatever the heap puts next to it (issue 12: no line
 * written by two threads on the fast path). */
struct iova_mag {
	char pad0[IODMA_CACHELINE];
	unsigned int n;
	struct iova_mag *next;	/* depot / empty list link */
	struct iova_node *e[IOVA_MAG_SIZE];
	char pad1[IODMA_CACHELINE];
};

/* What a thread with a slot of its own was last handed (cache classes),
 * keyed by (va >> log2(size in bytes)) mod IOVA_NR_REC: its free of that
 * range flips the node's state word with one compare-and-swap from exactly
 * the state it was handed in (ALLOC, no maps, that generation) to @st (the
 * same with kind CACHED: what the hit's compare-and-swap expected, stored
 * as it is), without finding the node in the pfn hash.  Only the owner
 * reads or writes it.  A record is not emptied when its range is freed:
 * once the node is no longer ALLOC with that generation its
 * compare-and-swap fails, and while it is (the range handed out again as
 * the same node, to any thread) the free is right to succeed, as it would
 * through the hash. */
struct iova_rec {
	uint64_t key[IOVA_NR_REC];	/* iova_rec_key(); IOVA_REC_NONE: empty */
	struct iova_node *n[IOVA_NR_REC];
	uint64_t st[IOVA_NR_REC];
};

/* A record's key: the range's first byte (granule-aligned) plus @tz, log2
 * of its size in bytes (12 .. 63: less than the granule, >= 4096, so the
 * low bits hold it).  Never all ones (the empty key).  Only a granule-
 * aligned @iova may be compared with it: x + 1 with tz 12 is x's key
 * with tz 13 (test_fast_path_misaligned_free_enoent). */
#define IOVA_REC_NONE UINT64_MAX
static inline uint64_t iova_rec_key(uint64_t va, uint64_t tz)
{
	return va + tz;
}

/*
 * A slot: the loaded and previous magazine of every class (Linux's per-CPU
 * iova_cpu_rcache).  A thread with a shard of its own (util.h shard_own())
 * owns one slot, made on its first use, and is its only reader and writer:
 * its alloc and free take no lock at all (magazines, records, counters are
 * private; the depot lock only to exchange a full or empty magazine).
 * Threads without a shard share one slot under its spin lock.
 */
struct iova_slot {
	char pad0[IODMA_CACHELINE];	/* keep slots off each other's lines */
	iova_spin_t lock;	/* shared slot only: protects everything in it */
	/* The loaded magazine of each class by log2 of its size in bytes
	 * (class + log2(granule)): the fast paths index it with the
	 * ctz() they computed, without subtracting the granule's shift.
	 * Only [shift, shift + IOVA_NR_CLASSES) are used; loaded points at
	 * ltz[shift], so loaded[c] is class c's. */
	struct iova_mag *ltz[64];
	struct iova_mag **loaded;
	struct iova_mag *prev[IOVA_NR_CLASSES];
	/* Frees pushed into this slot's cache.  Cache hits are not counted
	 * (the fast alloc stays shorter): they are pushed - drained or
	 * evicted - still CACHED, see cache_hits() in iova.c. */
	_Atomic uint64_t fput;
	struct iova_rec rec;	/* owned slots only */
	char pad1[IODMA_CACHELINE];
};

/* The first member of struct iova_alloc: what the inline fast paths read
 * of the allocator, immutable after create but id.  Read by every thread,
 * written by none on the fast path (its line is shared clean). */
struct iova_alloc_head {
	/* Unique in the process (iova_tls), never reused.  A new one each
	 * time the rcache is switched on or off (iova_alloc_set_caching()):
	 * every thread's iova_tls then misses and its slow path, which sets
	 * it again only while the rcache is on, sees the switch.  So the
	 * fast paths need not test it. */
	_Atomic uint64_t id;
	uint64_t gmask;		/* granule - 1 */
	uint64_t granule;	/* bytes per pfn (a multiply, not a shift:
				 * no shift-count register) */
	/* ~gmask: the inline get's alignment test in one and */
	uint64_t ngmask;
	uint64_t class_max;	/* granule << (IOVA_NR_CLASSES - 1) */
};

/* The state word of a node (iova.c's ST_* and enum iova_kind, checked
 * there): kind in bits 0..3, CACHED all ones, ALLOC 2. */
#define IOVA_FAST_KIND_MASK 0xfull
#define IOVA_FAST_ALLOC     2u
#define IOVA_FAST_CACHED    15u
/* Where in struct iova_node (iova.c, which checks them) the fast paths
 * find the first page, the state word and the record index. */
#define IOVA_NODE_PFN_OFF   0
#define IOVA_NODE_ST_OFF    48
#define IOVA_NODE_RI_OFF    59

static inline uint64_t iova_node_pfn(const struct iova_node *n)
{
	return *(const uint64_t *)(const void *)((const char *)n +
						  IOVA_NODE_PFN_OFF);
}

static inline _Atomic uint64_t *iova_node_st(struct iova_node *n)
{
	return (_Atomic uint64_t *)(void *)((char *)n + IOVA_NODE_ST_OFF);
}

static inline unsigned int iova_node_ri(const struct iova_node *n)
{
	return *(const uint8_t *)((const char *)n + IOVA_NODE_RI_OFF);
}

/**
 * iova_alloc_get_slow() - iova_alloc_get() past its inline hit.
 * @a, @len, @align, @limit, @iova: as iova_alloc_get().
 *
 * Checks every argument itself (the inline part may have checked none),
 * then the thread's slot (owned: lock-free; shared: its spin lock), the
 * depot, the tree (its spin lock); sets iova_tls for the next call.
 * Context: any thread.
 * Return: as iova_alloc_get(); nothing changes on error.
 */
int iova_alloc_get_slow(struct iova_alloc *a, uint64_t len, uint64_t align,
			uint64_t limit, uint64_t *iova);

/**
 * iova_alloc_put_slow() - iova_alloc_put() past its inline free.
 * @a, @iova, @len: as iova_alloc_put().
 *
 * Checks every argument itself; a class size through the thread's record
 * or the pfn hash (a stripe's spin lock), other sizes through the tree.
 * Context: any thread.
 * Return: as iova_alloc_put(); nothing changes on error.
 */
int iova_alloc_put_slow(struct iova_alloc *a, uint64_t iova, uint64_t len);

/*
 * The fast paths' way to the calling thread's owned slot: the last
 * allocator it used with a slot of its own (its id, never reused, so a
 * destroyed allocator at the same address does not match) and that slot.
 * One %fs-relative compare and load instead of the thread number, a bound
 * check and a load from the allocator's table; another allocator (or none
 * yet) misses and the slow path finds the slot and sets it here.  Written
 * and read by its thread only.  Initial-exec, as os_tls_slot: one
 * %fs-relative load from the shared library too.  Freestanding builds
 * have no thread numbers (no owned slots), so no such cache either.
 */
#if defined(OS_THREAD_SLOT_UNIQUE) && !defined(IODMA_FREESTANDING)
#define IOVA_TLS 1
struct iova_tls {
	uint64_t id;			/* 0: none (ids start at 1) */
	struct iova_slot *s;
};
extern _Thread_local struct iova_tls iova_tls
	__attribute__((tls_model("initial-exec")));
#else
#define IOVA_TLS 0
#endif

/*
 * The hit: the thread's own slot is the one iova_tls remembers for this
 * allocator (so the rcache is on: see iova_alloc_head.id), the size a
 * class, the alignment at most
 * the granule, and the top entry of the loaded magazine fits below @limit
 * and is still CACHED.  No lock, no call, no line written but the slot's
 * (the thread's alone) and the node's state word.
 *
 * Sizes: t = len - 1 with the granule's bits set is the rounded length
 * minus one (len 0 wraps to all ones); it is a class iff t + 1 is a power
 * of two at most class_max, and then ctz(t + 1) = class + shift.
 * Alignment: a power of two at most the granule iff no bit of align - 1
 * is in align or above the granule's (then every cached range is aligned
 * to it).
 *
 * The flip CACHED -> ALLOC is a compare-and-swap from CACHED with the
 * generation the node has: an EVICTED node fails it (a claim or a flush
 * took its space back; the slow path discards it), and exactly one of the
 * hit and a racing eviction (a compare-and-swap from CACHED on another
 * thread) wins.  acq_rel: the acquire half pairs with the release of the
 * free that made it CACHED, on whatever thread, so the old owner's use of
 * the range (its unmap's page-table writes) happens before ours; on
 * aarch64 and riscv64 a relaxed one would let our caller's writes to the
 * range's translations pass the old owner's.  The node's pfn is read
 * plainly: it does not change while the node is CACHED or EVICTED, and a
 * magazine holds a node only in those states.
 */
static inline int iova_alloc_get(struct iova_alloc *a, uint64_t len,
				 uint64_t align, uint64_t limit,
				 uint64_t *iova)
{
#if IOVA_TLS
	const struct iova_alloc_head *h = (const struct iova_alloc_head *)a;

	if (__builtin_expect(a && iova && iova_tls.id ==
			     atomic_load_explicit(&h->id, memory_order_relaxed),
			     1)) {
		uint64_t t = (len - 1) | h->gmask;

		if (t < h->class_max && !((t + 1) & t) &&
		    !((align - 1) & (align | h->ngmask))) {
			struct iova_slot *s = iova_tls.s;
			uint64_t tz = (unsigned int)__builtin_ctzll(t + 1);
			struct iova_mag *m = s->ltz[tz];
			uint64_t k = m->n;

			if (k) {
				struct iova_node *n = m->e[k - 1];
				uint64_t st, v;

				st = atomic_load_explicit(iova_node_st(n),
						memory_order_relaxed) |
				     IOVA_FAST_KIND_MASK;
				if (iova_node_pfn(n) * h->granule + t <= limit &&
				    atomic_compare_exchange_strong_explicit(
					    iova_node_st(n), &st,
					    st - IOVA_FAST_CACHED +
					    IOVA_FAST_ALLOC,
					    memory_order_acq_rel,
					    memory_order_acquire)) {
					unsigned int ri = iova_node_ri(n);

					/* ALLOC and ours: pfn is fixed */
					v = iova_node_pfn(n) * h->granule;
					m->n--;
					/* What this thread's free finds. */
					s->rec.key[ri] = iova_rec_key(v, tz);
					s->rec.n[ri] = n;
					s->rec.st[ri] = st;
					*iova = v;
					return 0;
				}
			}
		}
	}
#endif
	return iova_alloc_get_slow(a, len, align, limit, iova);
}

/*
 * The recorded free: @iova is granule-aligned, this thread was handed
 * exactly [iova, iova + t] (the key holds the address and the size:
 * another length misses) and the loaded magazine has room.  The state word goes
 * from exactly the state this thread was handed it in (ALLOC, no maps,
 * that generation) to CACHED, or the slow path's pfn hash decides: a
 * double free (CACHED, or freed by another thread), a map inside
 * (maps > 0), a stale record (a new generation).  acq_rel: the release
 * half publishes our caller's use of the range to the next owner's
 * acquire (its cache hit, or a drain under the tree lock).
 */
static inline int iova_alloc_put(struct iova_alloc *a, uint64_t iova,
				 uint64_t len)
{
#if IOVA_TLS
	const struct iova_alloc_head *h = (const struct iova_alloc_head *)a;

	if (__builtin_expect(a && iova_tls.id ==
			     atomic_load_explicit(&h->id, memory_order_relaxed),
			     1)) {
		uint64_t t = (len - 1) | h->gmask;

		if (t < h->class_max && !((t + 1) & t) &&
		    !(iova & h->gmask)) {
			struct iova_slot *s = iova_tls.s;
			uint64_t tz = (unsigned int)__builtin_ctzll(t + 1);
			unsigned int ri = (unsigned int)(iova >> tz) &
					  (IOVA_NR_REC - 1);
			struct iova_mag *m = s->ltz[tz];
			uint64_t k = m->n;

			if (s->rec.key[ri] == iova_rec_key(iova, tz) &&
			    k < IOVA_MAG_SIZE) {
				struct iova_node *n = s->rec.n[ri];
				uint64_t to = s->rec.st[ri];
				uint64_t exp = to - IOVA_FAST_CACHED +
					       IOVA_FAST_ALLOC;

				if (atomic_compare_exchange_strong_explicit(
					    iova_node_st(n), &exp, to,
					    memory_order_acq_rel,
					    memory_order_acquire)) {
					m->e[k] = n;
					m->n++;
					atomic_store_explicit(&s->fput,
						atomic_load_explicit(&s->fput,
							memory_order_relaxed) + 1,
						memory_order_relaxed);
					return 0;
				}
			}
		}
	}
#endif
	return iova_alloc_put_slow(a, iova, len);
}

#endif /* IODMA_IOVA_H */
