/* SPDX-License-Identifier: MIT */
/*
 * domain_priv.h - the inside of a domain, shared by domain.c (bookkeeping,
 * backend calls, listeners), xlate.c (translation, faults, dirty log) and
 * dma.c.
 *
 * Two books of the same mappings:
 *   table  a B+tree iova -> struct map_rec: the range operations (overlap
 *          checks, strict/gaps unmap validation, listener replay, claims,
 *          the fd and offset of a mapping).  Only writers use it, under
 *          map_lock.  Together with the young records (below) it is the
 *          domain's book: every record is in exactly one of the two.
 *   young  up to DOMAIN_YOUNG_MAX records of the latest maps, not yet in
 *          the table (young_iova[i] -> young_rec[i], unordered; map_lock).
 *          A strict guest (Linux iommu.strict=1 behind a virtual IOMMU)
 *          maps and unmaps around every I/O; while fewer than
 *          DOMAIN_YOUNG_MAX such mappings are live, a map records its
 *          mapping here and the exact unmap of it finds it here: the
 *          B-tree, whose leaf is a cold miss (plus its TLB miss) at tens
 *          of thousands of live mappings, is not touched at all.  A map
 *          that finds the array full moves it into the table first.  The
 *          exact unmap of one record of the table leaves the young ones
 *          where they are (no young record lies inside a range one record
 *          fills), so an unmap of an older mapping in between costs the
 *          young ones nothing.  The
 *          overlap check of such a map is the page table's (pt holds a
 *          leaf for every page of every record, young or not: iopt_hole),
 *          the rest of map_admit() is the same.  Every other reader of the
 *          book first moves the young records into the table
 *          (book_settle() in domain.c), which cannot fail: each young
 *          record was given its B-tree nodes (btree_preload_n) before it
 *          was added.
 *   pt     the IO page table (iopt.h): what every translation walks,
 *          without a lock.  Leaf target: the host VA, the GPA (IOPT_GPA,
 *          two-stage) or, for an fd-only mapping, the IOVA itself
 *          (IOPT_NO_VA: nothing to translate to, only the permission).
 *
 * Lock order: map_lock -> (xlate's internal locks).  map_lock serialises
 * every change: map, unmap, listeners, caps, claims, enable; held while
 * calling the backend and the listeners.  Translation takes no lock.
 *
 * Map (map_locked): validate; with the young array full, settle it;
 * btree_preload_n (the record's B-tree nodes, for its later settle); the
 * overlap check on the page table (iopt_hole), the limit and the claim
 * (map_admit); the record becomes young; iopt_reserve (this and the
 * preload are the only steps that allocate), the backend, the listeners,
 * then iopt_map, which cannot fail any more.  The mapping becomes
 * translatable last, once everyone was told.
 *
 * Unmap ordering (DESIGN.md "Before unmap returns"), as domain.c does it:
 *   1. translation of the range stops FIRST, under map_lock: iopt_unmap()
 *      clears the leaves (release stores), then xlate_stop(d) issues the
 *      seq_cst fence that is the unmapper's half of the access-section
 *      handshake (xlate.c);
 *   2. the backend unmaps each contiguous run (on failure the runs already
 *      unmapped are re-mapped and the leaves put back with iopt_map(), which
 *      cannot fail: the nodes are still there; nothing changed), flushes
 *      its IOTLB, and the listeners are told: none of them can translate
 *      the range any more;
 *   3. the records leave the table; claims and counters are updated; once
 *      enough page-table nodes were left empty, those still empty are
 *      unhooked and taken (domain.c "Page-table memory");
 *   4. map_lock dropped, then xlate_wait_sections(d, range): every access
 *      section of another thread that recorded a piece of the range has
 *      ended (a futex wait on each such section; other sections, and
 *      preempted readers elsewhere, are not waited for); then, if nodes
 *      were taken, xlate_wait_walks() and they are freed;
 *   5. return.
 * set_enabled stores d->enabled and calls xlate_stop too, then waits for
 * every section that recorded a range of the domain.
 */
#ifndef IODMA_DOMAIN_PRIV_H
#define IODMA_DOMAIN_PRIV_H

#include <stdatomic.h>

#include <errno.h>

#include <iodma/domain.h>
#include <iodma/xlate.h>

#include "btree.h"
#include "iopt.h"
#include "iova.h"
#include "util.h"

/* map_rec.flags */
#define MAP_F_NO_VA    0x1u /* fd-only mapping: no host address */
#define MAP_F_GPA      0x2u /* target is a guest-physical address (two-stage) */
#define MAP_F_CLAIMED  0x4u /* the map claimed its IOVA space (iova_claim) */
#define MAP_F_INSIDE   0x8u /* the map lies inside an IOVA allocation and is
			     * counted there (iova_claim, *claimed = false) */

/* Records kept out of the B-tree (domain_priv.h "young"); + 1 <=
 * BTREE_PRELOAD_MAX (an unmap of a table record preloads for the young
 * ones plus its own put-back).  28: a strict guest's mappings in flight
 * at a queue depth of 32 or so stay young (the pair at 65,536 live:
 * ~90 ns up to 28 in flight, ~400 ns beyond, when every record passes
 * through the B-tree; with 8 it was ~390 ns from 9 on).  The cost: up to
 * 29 * (height + 2) spare B-tree nodes of 768 bytes, ~130 KiB at 65,536
 * mappings (height 4), reserved only once that many are young at the same
 * moment, and 40 bytes a record in the domain. */
#define DOMAIN_YOUNG_MAX 28u

/* One mapping in the table; the key is its iova.  32 bytes. */
struct map_rec {
	uint64_t len;
	uint64_t target;  /* host VA, or GPA with MAP_F_GPA, or 0 with MAP_F_NO_VA */
	uint64_t offset;  /* fd offset of the first byte */
	int32_t fd;       /* -1 if none */
	uint16_t perm;    /* IODMA_PERM_* */
	uint16_t flags;   /* MAP_F_* */
};

/* What a lookup hands to translation: a copy, valid after the lock drops. */
struct map_lookup {
	uint64_t iova;
	struct map_rec rec;
};

struct iodma_listener {
	const struct iodma_listener_ops *ops;
	void *arg;
	struct iodma_listener *next;
};

struct xlate_state; /* private to xlate.c */
struct stat_shard;  /* likewise */

struct iodma_domain {
	/* Immutable after create. */
	const struct iodma_backend_ops *ops;
	void *bpriv;                    /* backend state from ops->open */
	struct iodma_memory *memory;    /* two-stage / identity memory, or NULL */

	os_mutex_t map_lock;            /* serialises changes; see above */
	struct iodma_caps caps;         /* protected by map_lock */
	_Atomic uint64_t alignment;     /* == caps.alignment; lock-free reads */
	struct iodma_listener *listeners; /* protected by map_lock */
	_Atomic uint64_t nr_mappings;   /* written under map_lock */
	struct btree table;             /* iova -> struct map_rec; map_lock */
	uint32_t nr_young;              /* young records (above); map_lock */
	uint64_t young_iova[DOMAIN_YOUNG_MAX];
	struct map_rec young_rec[DOMAIN_YOUNG_MAX];
	void *pt_kept;                  /* pruned nodes no walk could be
					 * waited out for (no membarrier, no
					 * fence): freed at destroy; map_lock */
	_Atomic uint64_t pt_nodes_freed; /* page-table nodes pruned and freed
					 * (for tests) */
	uint64_t dirty_pgsize;          /* the backend logs the device's writes
					 * at this page size while the dirty
					 * log is on, else 0; written under
					 * map_lock (and xlate's dirty_lock),
					 * read by unmaps under map_lock: kept
					 * off the lines translators write */

	struct iova_alloc *iova;        /* thread-safe on its own */

	/* Translation (xlate.c): read by every translation, written only by
	 * map/unmap (the page table's nodes) and set_enabled.  The padding
	 * keeps map_lock and the writers' fields a cache line away (the
	 * domain comes from calloc: no 64-byte alignment to rely on). */
	char xl_pad[IODMA_CACHELINE];
	_Atomic bool enabled;           /* false: identity over memory */
	struct xlate_state *xl;         /* faults, dirty log, stats */
	/* The translate fast paths' words (xlate.c xlate_set_limit()):
	 * indexed by the IODMA_PERM_* value asked for, the IOVA bound below
	 * which that access may take the fast path: pt.fast_limit, or 0 for
	 * perm 0 (invalid), while the domain is disabled, and for writes
	 * while the dirty log is on (one compare tests all of these); and
	 * xl->shards (one load fewer). */
	_Atomic uint64_t xl_limit[4];
	struct stat_shard *xl_shards;
	struct iopt pt;                 /* the IO page table; writers hold
					 * map_lock */
};

/* Does the backend log the device's own writes (backend.h, version 2)? */
static inline bool backend_dirty(const struct iodma_domain *d)
{
	return d->ops->version >= 2 && d->ops->dirty_start;
}

/* ---- the backend ops, one wrapper each ------------------------------------
 * The only place where the domain calls a backend (backend.h: optional ops
 * "are NULL-checked in one place").  Required ops (open, close, get_caps,
 * map, unmap; checked at domain creation) are called as they are; an
 * optional op that is NULL, or newer than the table's version, is a no-op
 * (flush_iotlb, dirty_stop) or -EOPNOTSUPP (the others).  Callers hold
 * what the op needs (map_lock for all but open and close). */
static inline int be_open(struct iodma_domain *d, const void *config)
{
	return d->ops->open(config, &d->bpriv);
}

static inline void be_close(struct iodma_domain *d)
{
	d->ops->close(d->bpriv);
}

static inline int be_get_caps(struct iodma_domain *d, struct iodma_caps *caps)
{
	return d->ops->get_caps(d->bpriv, caps);
}

static inline int be_map(struct iodma_domain *d,
			 const struct iodma_map_event *ev)
{
	return d->ops->map(d->bpriv, ev);
}

static inline int be_unmap(struct iodma_domain *d, uint64_t iova,
			   uint64_t len, uint64_t *unmapped)
{
	return d->ops->unmap(d->bpriv, iova, len, unmapped);
}

static inline int be_unmap_all(struct iodma_domain *d, uint64_t *unmapped)
{
	if (!d->ops->unmap_all)
		return -EOPNOTSUPP;
	return d->ops->unmap_all(d->bpriv, unmapped);
}

static inline bool be_has_flush_iotlb(const struct iodma_domain *d)
{
	return d->ops->flush_iotlb != NULL;
}

static inline void be_flush_iotlb(struct iodma_domain *d, uint64_t iova,
				  uint64_t len)
{
	if (d->ops->flush_iotlb)
		d->ops->flush_iotlb(d->bpriv, iova, len);
}

static inline int be_avail_mappings(struct iodma_domain *d, uint32_t *avail)
{
	if (!d->ops->avail_mappings)
		return -EOPNOTSUPP;
	return d->ops->avail_mappings(d->bpriv, avail);
}

static inline int be_dirty_start(struct iodma_domain *d, uint64_t pgsize)
{
	if (!backend_dirty(d))
		return -EOPNOTSUPP;
	return d->ops->dirty_start(d->bpriv, pgsize);
}

static inline void be_dirty_stop(struct iodma_domain *d)
{
	if (backend_dirty(d))
		d->ops->dirty_stop(d->bpriv);
}

static inline int be_dirty_get(struct iodma_domain *d, uint64_t iova,
			       uint64_t len, uint64_t pgsize, uint64_t *bitmap)
{
	if (!backend_dirty(d))
		return -EOPNOTSUPP;
	return d->ops->dirty_get(d->bpriv, iova, len, pgsize, bitmap);
}

static inline int be_unmap_dirty(struct iodma_domain *d, uint64_t iova,
				 uint64_t len, uint64_t pgsize,
				 uint64_t *bitmap, uint64_t *unmapped)
{
	if (!backend_dirty(d))
		return -EOPNOTSUPP;
	return d->ops->unmap_dirty(d->bpriv, iova, len, pgsize, bitmap,
				   unmapped);
}

/* ---- domain.c, for xlate.c ------------------------------------------------ */

/* OR the backend's log of [iova, iova + len) (@pgsize multiples) into
 * @bitmap, bit 0 = @iova; the query is widened to whole mappings and cut
 * back.  map_lock held, the backend's log on.  0, -ENOMEM or the
 * backend's error (@bitmap then unchanged). */
int domain_dirty_get(struct iodma_domain *d, uint64_t iova, uint64_t len,
		     uint64_t pgsize, uint64_t *bitmap);

/* ---- xlate.c, for a resolver inside the library (vhost_user.c) ------------ */

/* Inside a resolver call (iodma_resolver_fn), on the calling thread: the
 * bytes the translation that missed still wants from the missing IOVA on
 * (>= 1), so the resolver may ask for the rest of the buffer at once;
 * 0 outside a resolver call. */
uint64_t xlate_miss_left(void);

/* Does a leaf of @d map @iova with every bit of @perm right now?  A
 * lock-free look (no resolver, no stats, no fault); any thread. */
bool xlate_mapped(struct iodma_domain *d, uint64_t iova, uint32_t perm);

/* The calling thread's open access section, as a token for
 * xlate_section_touches() on another thread while this one stays inside
 * it (a resolver waiting for its UPDATE): NULL outside a section,
 * XLATE_SECT_ANON for a section without a record (out of memory). */
#define XLATE_SECT_ANON ((const void *)1)
const void *xlate_section_self(void);

/* Would xlate_wait_sections(@d, @iova, @last) wait for the section @sect
 * (from xlate_section_self(), still open)?  True for XLATE_SECT_ANON and
 * for a section that overflowed its records; false for NULL.  Any thread,
 * lock-free. */
bool xlate_section_touches(const void *sect, struct iodma_domain *d,
			   uint64_t iova, uint64_t last);

/* ---- domain.c, for tests -------------------------------------------------- */

/* The mapping that contains @iova, copied into *@out, from the table.
 * Takes map_lock (not from a listener callback).  Returns 0 or -ENOENT. */
int domain_lookup(struct iodma_domain *d, uint64_t iova, struct map_lookup *out);

/* ---- xlate.c, for domain.c ---------------------------------------------- */

/* Once per process, before the first domain: decide whether page-table
 * walkers fence (no membarrier) or not.  Idempotent, thread-safe. */
void xlate_global_init(void);

/* Allocate the fault log and stats (opts->iotlb_entries is validated).
 * Returns 0, -EINVAL (entries not a power of two) or -ENOMEM. */
int xlate_init(struct iodma_domain *d, const struct iodma_domain_opts *opts);
void xlate_fini(struct iodma_domain *d);

/* The page size of the backend's dirty log while the domain's log is on
 * and the backend logs the device's writes, else 0.  map_lock held. */
uint64_t xlate_dirty_backend(struct iodma_domain *d);

/* Mark in the domain's dirty log the pages whose bits are set in @bitmap
 * (bit i = page @iova + i * @pgsize, @nbits bits), or all @nbits pages
 * when @bitmap is NULL.  Any thread; a no-op while logging is off. */
void xlate_dirty_merge(struct iodma_domain *d, uint64_t iova, uint64_t pgsize,
		       const uint64_t *bitmap, uint64_t nbits);

/* After d->enabled was stored (set_enabled, map_lock held): the fast
 * paths' limits follow it (seq_cst stores, before xlate_stop()'s fence);
 * xlate.c calls it as well when the dirty log starts or stops. */
void xlate_set_limit(struct iodma_domain *d);

/* Step 1 of the unmap ordering, after the leaves were cleared (or enabled
 * was changed): the seq_cst fence, counted as an invalidation.  Called
 * with map_lock held. */
void xlate_stop(struct iodma_domain *d);

/* Step 4 of the unmap ordering: wait until every access section of another
 * thread that recorded a range of @d overlapping [iova, last] (or that
 * overflowed) has ended.  Called after xlate_stop(), WITHOUT map_lock
 * (a section's owner may be waiting for it).  Never sleeps on a timer:
 * spins briefly, then sleeps on the section's futex word. */
void xlate_wait_sections(struct iodma_domain *d, uint64_t iova, uint64_t last);

/* After page-table nodes were unhooked (iopt_prune): wait until no walk
 * of @d's table that could have loaded a pointer to them is still under
 * way, so they can be freed.  Any thread, no lock held.  Returns false when that
 * cannot be known (membarrier failed after the walkers were told not to
 * fence): the caller must keep the nodes until the domain is destroyed. */
bool xlate_wait_walks(struct iodma_domain *d);

/* Domain destroy: wait for the other threads' sections that recorded @d
 * (xlate_wait_sections over everything), and drop @d from the calling
 * thread's own open section, whose end must not look at @d any more. */
void xlate_forget_domain(struct iodma_domain *d);

/* For tests: unmappers now sleeping on the calling thread's section; does
 * the calling thread hold a section record. */
uint32_t xlate_test_section_waiters(void);
bool xlate_test_has_record(void);
/* For tests: hold a page-table walk open on this thread (as a translation
 * preempted mid-walk would), and end it; and a switch that makes
 * xlate_wait_walks() return at once, to show the tests that need it fail
 * without it. */
void xlate_test_walk_begin(void);
void xlate_test_walk_end(void);
/* The same for a fast path's walk of @d's table (the calling thread's
 * shard counter); false when the thread has no shard of its own. */
bool xlate_test_fast_walk_begin(struct iodma_domain *d);
void xlate_test_fast_walk_end(struct iodma_domain *d);
extern _Atomic bool xlate_test_skip_walk_wait;
size_t xlate_test_records(void); /* records in the registry */

#endif /* IODMA_DOMAIN_PRIV_H */
