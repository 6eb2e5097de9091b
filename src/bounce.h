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
 * The hot path takes no lock (Linux's swiotlb takes its area lock twice)
 * and one atomic read-modify-write per map + unmap on one thread:
 *  - a thread with a shard of its own (shard_own() in util.h) keeps the
 *    runs it frees in a stash that only it writes (two runs; up to 8 KiB
 *    in all, 64 KiB for the first threads) and maps from there first, as
 *    Linux's per-CPU IOVA rcache and SPDK's mempool caches do.  Stashed
 *    slots stay reserved in their area: stashes hold at most a quarter of
 *    the pool, and a thread that finds the areas full empties its own
 *    stash into them and tries again; another thread's stash is not taken
 *    (as with Linux's per-CPU page lists, -ENOMEM may come while that much
 *    sits in other threads' stashes, also of threads that exited: there is
 *    no thread-exit hook for them here, the pool's destroy frees them).
 *    The stash is last in, first out: a map takes the run its thread
 *    freed last, whose slots (and their cache lines) are still hot from
 *    that run's copies.  The run a map took stays in place (lent), so that
 *    its unmap on the same thread is one count raise
 *    (bounce_unmap_lent());
 *  - a run's head slot has a state word (generation, mapping thread,
 *    direction, flags, FREE/LIVE/DYING).  The mapping thread unmaps the
 *    run its last map took with one compare-and-swap LIVE -> FREE
 *    (bounce_unmap_lent()); any other unmap claims with one
 *    compare-and-swap LIVE -> DYING (bounce_claim_fast()), copies back and
 *    ends the run DYING -> FREE (bounce_unclaim()).  Of two unmaps of one
 *    map at the same moment (the caller's bug) exactly one wins, and a
 *    stale one fails on the generation, so no run is freed twice.  (A
 *    plain store in place of the mapping thread's compare-and-swap saves
 *    ~6 ns beside a 4 KiB copy in + out of ~43 ns, but a racing claim
 *    between its load and its store freed a run twice in
 *    test_bounce_owner_racing_another_unmap_exactly_one_wins.)  sync and
 *    lookups read the record lock-free as a seqlock.
 * The area locks are taken only to reserve or free slots in an area.
 * bounce.c only allocates, records and releases runs; dma.c does the copies
 * and the cache maintenance.  Thread-safe.
 *
 * The stash hit of a map (bounce_map_lend()), the owner's unmap of it
 * (bounce_unmap_lent()), every other unmap's claim
 * (bounce_claim_fast(), bounce_unclaim()) and the free onto the stash
 * (bounce_stash_push()) are inline here, so that dma.c's
 * iodma_map_single/iodma_unmap_single of a bounce call nothing but the
 * copy; everything else is out of line in bounce.c.
 */
#ifndef IODMA_BOUNCE_H
#define IODMA_BOUNCE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct iodma_domain;
struct bounce_area;

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
	uint64_t claimed; /* bounce_claim(): the head's state it left */
};

#define BOUNCE_F_SG 0x1u /* part of a scatter-gather list */

#define BOUNCE_PAGE  4096u /* runs of this many bytes or more start on one */
#define STASH_DEPTH  2     /* runs per stash */

/* A head slot's state word: generation << ST_GEN_SHIFT | the mapping
 * thread's shard << ST_OWNER_SHIFT | the run's flags << 10 | its
 * direction << 2 | one of ST_*, so that an unmap checks state, direction,
 * flags and (on the owner's path) the mapping thread in one compare.  Only
 * heads of live (LIVE) or unmapping (DYING) runs are not FREE. */
#define ST_FREE  0u
#define ST_LIVE  1u
#define ST_DYING 2u
#define ST_MASK  3ull
#define ST_OWNER_SHIFT 18
#define ST_OWNER_NONE  IODMA_SHARDS /* mapped by a thread without a shard */
#define ST_OWNER (0x7full << ST_OWNER_SHIFT)
#define ST_GEN_SHIFT 25
#define ST_GEN   (1ull << ST_GEN_SHIFT)

_Static_assert(IODMA_SHARDS < 0x7f, "the owner field holds IODMA_SHARDS");

/* The state bits of a run mapped with @dir and @flags (8 bits each). */
static inline uint64_t bounce_attr(unsigned int dir, unsigned int flags)
{
	return (uint64_t)(dir & 0xffu) << 2 | (uint64_t)(flags & 0xffu) << 10;
}

/* The owner bits of a run mapped by the thread of shard @sh (any number
 * >= IODMA_SHARDS: no shard of its own, ST_OWNER_NONE). */
static inline uint64_t bounce_owner(unsigned int sh)
{
	return (uint64_t)(sh < IODMA_SHARDS ? sh : ST_OWNER_NONE)
	       << ST_OWNER_SHIFT;
}

/* Per-slot record, 32 bytes.  Only the first slot of a run carries the
 * metadata; every slot of a run has @head = index of that first slot.
 * @len and @orig are written by the run's allocator while the state is
 * not LIVE and published by the release store of LIVE; lock-free readers
 * check the state again after reading them (a seqlock, the generation in
 * the state word telling one life of the run from the next). */
struct bounce_slot {
	_Atomic uint64_t state;  /* head: see ST_* */
	_Atomic uint64_t len;    /* head: bytes mapped */
	_Atomic uintptr_t orig;  /* head: the buffer */
	_Atomic uint32_t head;   /* first slot of the run this slot belongs to */
	uint32_t nslots;         /* head: slots in the run; its owner's */
};

/* A stashed run, with what a map needs from it at hand. */
struct bounce_srun {
	uint64_t iova;    /* bus address/IOVA of its first byte */
	uint64_t lo;      /* a map of len bytes may take it if ... */
	uint64_t span;    /* ... len - 1 - lo < span (bounce_srun_set()) */
	uint32_t head;    /* its head slot, state FREE */
	uint32_t nslots;
};

/* Free runs kept by one thread (shard_own()); only that thread writes
 * them.  Their bits stay set in their area's bitmap.
 * @run[count - 1] is the run freed last.  Two cache lines: what a map and
 * an unmap of the lent run touch, then the runs.
 * A 4 KiB copy in + out leaves what a bounce adds beside it mostly
 * unhidden, the chain of loads that gives a copy its addresses most of all
 * (issue 8): a map finds its copy's destination in @top_bva and the unmap
 * of the lent run its copy's destination in @lent_orig, each one load
 * from the stash, which dma.c finds with one load from the device.
 *   @cw: bits 0-7 count, runs in @run; bits 8-31 held, their slots (read
 *        by stats, bounce_slots_used());
 *   @top_bva: host address of @run[count - 1] while count > 0;
 *   @lent_iova, @lent_slot, @lent_orig: the run bounce_map_lend() took
 *        last, left in place at @run[count] with nothing done to the stash
 *        since, its head slot and its buffer; else @lent_iova is
 *        BOUNCE_NO_LENT (no run starts there: runs start on a slot).  Its
 *        unmap on this thread puts it back by raising count
 *        (bounce_unmap_lent()). */
struct bounce_stash {
	_Atomic uint64_t cw;
	void *top_bva;
	uint64_t lent_iova;
	struct bounce_slot *lent_slot;
	void *lent_orig;
	/* Immutable: the pool's, here so that a map needs nothing else. */
	struct bounce_slot *slots;
	uintptr_t va_delta;
	uint32_t budget;            /* most slots it may hold */
	char pad[IODMA_CACHELINE - 7 * sizeof(uint64_t) - sizeof(uint32_t)];
	struct bounce_srun run[STASH_DEPTH];
};

#define BOUNCE_NO_LENT UINT64_MAX

#define STASH_HELD_MAX ((1u << 24) - 1)

/* One run of @n slots more (or less) in a stash's cw: count 1, held @n. */
static inline uint64_t stash_w(uint32_t n)
{
	return (uint64_t)n << 8 | 1u;
}

static inline uint64_t stash_cw(const struct bounce_stash *st)
{
	return atomic_load_explicit(&((struct bounce_stash *)st)->cw,
				    memory_order_relaxed);
}

static inline uint32_t stash_count(const struct bounce_stash *st)
{
	return (uint32_t)(stash_cw(st) & 0xff);
}

static inline uint32_t stash_held(const struct bounce_stash *st)
{
	return (uint32_t)stash_cw(st) >> 8;
}

/* Set @st's count and held (and @top_bva); no run lent.  @delta: the
 * pool's va_delta. */
static inline void stash_set(struct bounce_stash *st, uintptr_t delta,
			     uint32_t count, uint32_t held)
{
	st->lent_iova = BOUNCE_NO_LENT;
	st->top_bva = count ? (void *)(uintptr_t)(st->run[count - 1].iova +
						  delta) : NULL;
	atomic_store_explicit(&st->cw, (uint64_t)held << 8 | count,
			      memory_order_relaxed);
}

struct bounce_pool {
	/* Immutable after create. */
	struct iodma_domain *domain;
	uint8_t *va;             /* host address of slot 0 */
	uint64_t iova;           /* bus address/IOVA of slot 0 */
	uintptr_t va_delta;      /* va - iova (modulo 2^64) */
	size_t len;              /* nslots * slot_size */
	size_t slot_size;
	unsigned int slot_shift;
	uint32_t nslots;
	unsigned int nareas;
	unsigned int areas_ready; /* areas whose lock and bitmap exist */
	unsigned int nstash;     /* threads 0..nstash-1 have a stash */
	uint64_t id;             /* unique in the process, never 0 (bounce_tls) */
	void *raw;               /* what os_pages_alloc returned, or NULL */
	size_t raw_len;
	bool mapped;             /* [iova, iova + len) mapped in @domain */
	bool iova_allocated;

	struct bounce_slot *slots;
	struct bounce_area *areas;
	struct bounce_stash *stash; /* nstash of them, or NULL */
	_Atomic uint64_t used;     /* slots set in the bitmaps (snapshot) */
};

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

/* Is @iova inside the pool's bus/IOVA range?  @p may be NULL (no pool). */
static inline bool bounce_owns(const struct bounce_pool *p, uint64_t iova)
{
	return p && iova - p->iova < p->len;
}

/* Reserve a run for [orig, orig + len): its first byte's IOVA is a
 * multiple of @align (and of 4096 when @len >= 4096, as in Linux's
 * swiotlb), its last byte <= @limit, and it does not cross a
 * multiple of @boundary + 1 (@boundary 0 = no constraint).  Returns 0 and
 * the run, or -ENOMEM (no free run fits in the areas or the caller's
 * stash). */
int bounce_map(struct bounce_pool *p, void *orig, size_t len, uint8_t dir,
	       uint8_t flags, uint64_t align, uint64_t limit,
	       uint64_t boundary, struct bounce_run *out);

/* Bus address/IOVA and host address of slot @slot. */
static inline uint64_t bounce_slot_iova(const struct bounce_pool *p,
					uint32_t slot)
{
	return p->iova + ((uint64_t)slot << p->slot_shift);
}

static inline void *bounce_slot_va(const struct bounce_pool *p, uint32_t slot)
{
	return p->va + ((size_t)slot << p->slot_shift);
}

/* The largest power of two every slot's bus address/IOVA is a multiple
 * of. */
static inline uint64_t bounce_head_align(const struct bounce_pool *p)
{
	uint64_t x = p->iova | p->slot_size;

	return x & -x;
}

/* Host address of the pool byte at bus address/IOVA @iova. */
static inline void *bounce_iova_va(const struct bounce_pool *p, uint64_t iova)
{
	return (void *)(uintptr_t)(iova + p->va_delta);
}

/* Slots a run of @len (> 0) bytes takes. */
static inline uint64_t bounce_nslots(const struct bounce_pool *p, size_t len)
{
	return (((uint64_t)len - 1) >> p->slot_shift) + 1;
}

/* The calling thread's shard (shard_own()) when it has one already, else
 * a number >= IODMA_SHARDS: shard_own() without assigning a first
 * number (the slow paths do that). */
static inline unsigned int bounce_shard(void)
{
#if defined(OS_THREAD_SLOT_UNIQUE)
	return os_tls_slot - 1u; /* UINT_MAX before the first assignment */
#else
	return IODMA_SHARDS;
#endif
}

/*
 * The fast paths' way to the calling thread's stash (the house pattern of
 * iova.c's iova_tls): the last pool it used with a stash of its own (its
 * id, never reused, so a destroyed pool at the same address does not
 * match), that stash and the thread's shard.  One %fs-relative compare and
 * load instead of the thread number, a bound check and an index: the
 * stash is where a map finds its copy's destination, so this is on the
 * chain of loads the copy waits for.  Another pool (or none yet) misses:
 * the caller takes its slow path, which calls bounce_stash_fill() to look
 * the stash up and set it here for the next call (no call on the fast
 * path, so that it saves no register).  Written
 * and read by its thread only.  Freestanding builds have no thread
 * numbers that never repeat, so no such cache: the stash by index.
 */
#if defined(OS_THREAD_SLOT_UNIQUE) && !defined(IODMA_FREESTANDING)
#define BOUNCE_TLS 1
struct bounce_tls {
	uint64_t id;              /* 0: none (ids start at 1) */
	struct bounce_stash *st;
	unsigned int sh;
};
extern _Thread_local struct bounce_tls bounce_tls
	__attribute__((tls_model("initial-exec")));
#else
#define BOUNCE_TLS 0
#endif

/* The calling thread's stash in @p and its shard, set bounce_tls to them.
 * Returns NULL (and nothing set) when the thread has no stash in @p. */
struct bounce_stash *bounce_stash_fill(struct bounce_pool *p,
				       unsigned int *sh);

/* The calling thread's stash in @p (whose id is @id) and its shard in
 * *@sh, or NULL: the thread has none there, or (BOUNCE_TLS) bounce_tls
 * holds another pool's: call bounce_stash_fill() on the slow path. */
static inline struct bounce_stash *bounce_stash_mine(struct bounce_pool *p,
						     uint64_t id,
						     unsigned int *sh)
{
#if BOUNCE_TLS
	(void)p;
	if (bounce_tls.id == id) {
		*sh = bounce_tls.sh;
		return bounce_tls.st;
	}
	return NULL;
#else
	unsigned int s = bounce_shard();

	(void)id;
	if (s >= p->nstash)
		return NULL;
	*sh = s;
	return &p->stash[s];
#endif
}

/* Make the FREE run at @s (ours alone: out of the stash, or its bits just
 * set) LIVE for @orig, @len and @attr (bounce_attr()) with the next
 * generation.  The release fence orders the FREE/DYING store a lock-free
 * reader may still be validating against before the new record (seqlock
 * writer). */
static inline void bounce_publish(struct bounce_slot *s, void *orig,
				  size_t len, uint64_t attr)
{
	uint64_t state = atomic_load_explicit(&s->state, memory_order_relaxed);

	assert((state & ST_MASK) == ST_FREE);
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(&s->len, len, memory_order_relaxed);
	atomic_store_explicit(&s->orig, (uintptr_t)orig, memory_order_relaxed);
	atomic_store_explicit(&s->state,
			      (state & ~(ST_GEN - 1)) + ST_GEN + attr + ST_LIVE,
			      memory_order_release);
}

/* The stash hit of bounce_map() for the thread of shard @sh, whose stash
 * is @st (&p->stash[sh] of its pool p, sh < p->nstash): the run it freed
 * last, if that run has exactly the slots @len (> 0) needs and, for
 * @len >= BOUNCE_PAGE, starts on a page, made LIVE for @orig (not NULL)
 * with @dir, no flags and this thread as its owner; no alignment, limit or boundary constraint
 * (dma.c calls it only where every run meets the device's).  The run's
 * entry stays in place above the stash's count, lent (see struct
 * bounce_stash).  Returns true, the run's host address in *@bva and its
 * first byte's bus address/IOVA in *@iova, or false and nothing changed
 * (call bounce_map()). */
static inline bool bounce_map_lend(struct bounce_stash *st, unsigned int sh,
				   void *orig, size_t len, unsigned int dir,
				   void **bva, uint64_t *iova)
{
	const struct bounce_srun *r;
	struct bounce_slot *s;
	uint64_t cw;
	uint32_t c;

	cw = stash_cw(st);
	c = (uint32_t)cw & 0xff;
	if (!c)
		return false;
	r = &st->run[c - 1];
	/* Exactly as many slots, and on a page if len >= BOUNCE_PAGE. */
	if (len - 1 - r->lo >= r->span)
		return false;
	*bva = st->top_bva;
	s = &st->slots[r->head];
	atomic_store_explicit(&st->cw, cw - stash_w(r->nslots),
			      memory_order_relaxed);
	if (c >= 2) /* (unused while count is 0) */
		st->top_bva = (void *)(uintptr_t)(st->run[c - 2].iova +
						  st->va_delta);
	st->lent_iova = r->iova;
	st->lent_slot = s;
	st->lent_orig = orig;
	bounce_publish(s, orig, len,
		       bounce_attr(dir, 0) | (uint64_t)sh << ST_OWNER_SHIFT);
	*iova = r->iova;
	return true;
}

/* Take the live run starting at @iova (inside the pool: bounce_owns())
 * mapped by any thread with exactly @len, @dir and (flags & BOUNCE_F_SG)
 * == @flags and, if @orig is not NULL, that buffer, from LIVE to DYING:
 * after it the caller owns the run.  One compare-and-swap: of two such
 * racing claims, or of one and the mapping thread's own unmap
 * (bounce_unmap_lent()), one wins; the generation in
 * the state word makes a stale one fail.  Returns the head slot, the
 * buffer in *@buf and the state it left in *@claimed (for
 * bounce_unclaim()), or -1 (no such run; nothing changed). */
static inline int64_t bounce_claim_fast(struct bounce_pool *p, uint64_t iova,
					size_t len, unsigned int dir,
					unsigned int flags, const void *orig,
					void **buf, uint64_t *claimed)
{
	uint64_t off = iova - p->iova, state;
	struct bounce_slot *s;
	uintptr_t o;

	if (off & (p->slot_size - 1))
		return -1;
	s = &p->slots[off >> p->slot_shift];
	/* Only the head of a live run is LIVE. */
	state = atomic_load_explicit(&s->state, memory_order_acquire);
	if ((state & (ST_GEN - 1) & ~ST_OWNER) !=
		    (bounce_attr(dir, flags) | ST_LIVE) ||
	    atomic_load_explicit(&s->len, memory_order_relaxed) != len)
		return -1;
	o = atomic_load_explicit(&s->orig, memory_order_relaxed);
	if (orig && o != (uintptr_t)orig)
		return -1;
	if (!atomic_compare_exchange_strong_explicit(&s->state, &state,
						     state - ST_LIVE + ST_DYING,
						     memory_order_acq_rel,
						     memory_order_relaxed))
		return -1;
	*buf = (void *)o;
	*claimed = state - ST_LIVE + ST_DYING;
	return (int64_t)(off >> p->slot_shift);
}

/* End the run at @head claimed by bounce_claim_fast() (which left
 * @claimed): DYING -> FREE with a release store (no other thread writes a
 * DYING state word: every other writer's compare-and-swap expects LIVE or
 * FREE).  Its slots stay reserved until the caller puts them away. */
static inline void bounce_unclaim(struct bounce_pool *p, uint32_t head,
				  uint64_t claimed)
{
	atomic_store_explicit(&p->slots[head].state,
			      claimed - ST_DYING + ST_FREE,
			      memory_order_release);
}

/* Put away the run at @head, made FREE by the caller (bounce_unclaim()), whose slots are still reserved: into the stash of
 * the caller (the thread of shard @sh, or any number >= IODMA_SHARDS) if
 * its budget allows (the oldest runs there go back to their areas to make
 * room), else back to its area. */
void bounce_release_slow(struct bounce_pool *p, unsigned int sh,
			 uint32_t head);

/* Fill stash entry @r for the run at @head (@n slots, bus address/IOVA
 * @iova): a map of len bytes fits it when it needs exactly @n slots
 * (lo = (n - 1) slots < len <= n slots) and, for len >= BOUNCE_PAGE, the
 * run starts on a page; both in one compare, len - 1 - lo < span. */
static inline void bounce_srun_set(const struct bounce_pool *p,
				   struct bounce_srun *r, uint32_t head,
				   uint32_t n, uint64_t iova)
{
	uint64_t lo = (uint64_t)(n - 1) << p->slot_shift;
	uint64_t hi = (uint64_t)n << p->slot_shift;

	if (iova & (BOUNCE_PAGE - 1))
		hi = IODMA_MIN(hi, (uint64_t)BOUNCE_PAGE - 1);
	r->iova = iova;
	r->lo = lo;
	r->span = hi > lo ? hi - lo : 0;
	r->head = head;
	r->nslots = n;
}

/* Put away the run at @head (bus address/IOVA @iova), made FREE by the
 * caller (the thread of shard @sh) whose slots are still reserved, onto
 * the top of its stash if that has room without giving a run back to an
 * area.  Returns true, or false and nothing changed (call
 * bounce_release_slow()).
 * Only the calling thread takes runs from its stash, so a run pushed here
 * stays the caller's until its next map: dma.c copies back from it after
 * this (the last thing an unmap does), as long as no map runs in between
 * on this thread (a signal handler that maps would: the DMA API is not
 * async-signal-safe). */
static inline bool bounce_stash_push(struct bounce_pool *p, unsigned int sh,
				     uint32_t head, uint64_t iova)
{
	struct bounce_stash *st;
	uint32_t n, c;
	uint64_t cw;

	if (sh >= p->nstash)
		return false;
	st = &p->stash[sh];
	n = p->slots[head].nslots;
	cw = stash_cw(st);
	c = (uint32_t)cw & 0xff;
	if (c >= STASH_DEPTH || ((uint32_t)cw >> 8) + n > st->budget)
		return false;
	bounce_srun_set(p, &st->run[c], head, n, iova);
	stash_set(st, p->va_delta, c + 1, ((uint32_t)cw >> 8) + n);
	return true;
}

/* The unmap of the run at @iova by the thread of shard @sh, whose stash
 * is @st (&p->stash[sh], sh < p->nstash), when that run is the one its
 * last bounce_map_lend() took (@lent_iova) and it is still live, single,
 * mapped with exactly @len and @dir by this thread (no generation check
 * needed: every map on this thread after that one changed @lent_iova, and
 * a life of the run begun by another thread has another owner).  Ends the
 * run with one compare-and-swap and puts it back in the stash by raising
 * count: its entry is still in place and fitted before.  @bva: the run's
 * host address (@iova + the pool's va_delta).  Returns true and the
 * buffer in *@buf, or false and nothing changed (not that run, or not
 * live as such: bounce_claim_fast() decides). */
static inline bool bounce_unmap_lent(struct bounce_stash *st,
				     unsigned int sh, uint64_t iova,
				     void *bva, size_t len, unsigned int dir,
				     void **buf)
{
	struct bounce_slot *s;
	uint64_t state;

	if (iova != st->lent_iova)
		return false;
	s = st->lent_slot;
	state = atomic_load_explicit(&s->state, memory_order_relaxed);
	if ((state & (ST_GEN - 1)) != (bounce_attr(dir, 0) |
				       (uint64_t)sh << ST_OWNER_SHIFT |
				       ST_LIVE) ||
	    atomic_load_explicit(&s->len, memory_order_relaxed) != len)
		return false;
	/* One compare-and-swap: of this and another thread's claim of the
	 * run at the same moment (bounce_claim_fast()), exactly one wins. */
	if (!atomic_compare_exchange_strong_explicit(
		    &s->state, &state, state - ST_LIVE + ST_FREE,
		    memory_order_acq_rel, memory_order_relaxed))
		return false;
	atomic_store_explicit(&st->cw, stash_cw(st) + stash_w(s->nslots),
			      memory_order_relaxed);
	st->top_bva = bva;
	*buf = st->lent_orig;
	return true;
}

/* The live run containing [iova, iova + len).  Returns 0 or -EINVAL. */
int bounce_find(struct bounce_pool *p, uint64_t iova, size_t len,
		struct bounce_run *out);

/* Start unmapping the run that begins at @iova with exactly @len, @dir,
 * (flags & BOUNCE_F_SG) == @flags and, if @orig is not NULL, that buffer
 * (bounce_claim_fast()): the run stops being found by
 * bounce_find/bounce_claim but keeps its slots.  Returns 0 and the run
 * (with the state it left, for bounce_release()), or -EINVAL (no such
 * run, nothing changed). */
int bounce_claim(struct bounce_pool *p, uint64_t iova, size_t len,
		 uint8_t dir, uint8_t flags, const void *orig,
		 struct bounce_run *out);

/* Free the slots of run @run claimed by the caller with bounce_claim(). */
void bounce_release(struct bounce_pool *p, const struct bounce_run *run);

uint64_t bounce_slots_total(const struct bounce_pool *p);
uint64_t bounce_slots_used(const struct bounce_pool *p);

#endif /* IODMA_BOUNCE_H */
