// SPDX-License-Identifier: MIT
/*
 * iova.c - the IOVA allocator of a domain (see iova.h for the contract).
 *
 * Everything inside is counted in granule pages ("pfn", "pages"), so no
 * computation can overflow; bytes appear only at the API boundary.
 *
 * Free space.  The usable space ("segments") is the valid ranges minus the
 * reserved windows; it is fixed at create.  Its free part is a set of free
 * extents in an AVL tree keyed by first pfn, each node augmented with the
 * largest extent of its subtree (max_pages).  Adjacent free extents are
 * always merged, except at a "cut": a pfn where two valid ranges touch, as
 * no allocation may span two valid ranges.  The top-down search visits the
 * right (higher) subtree first and prunes every subtree whose max_pages is
 * too small or which lies entirely above the limit, so it costs O(log n)
 * unless alignment makes large-enough extents unusable (then it still finds
 * the highest fit, by looking into those subtrees too).
 *
 * Busy set.  Allocations (ALLOC), claims (CLAIM, one node per free piece of
 * the claimed range) and cached allocations (CACHED) are nodes of a second
 * AVL tree, keyed the same way.  Free extents + busy nodes tile the
 * segments exactly (iova_alloc_check() verifies it), with one exception:
 * the tombstone, the last range freed to the tree if it merged with no
 * free extent, is free space whose node stays in the busy tree (kind
 * FREE) and in no free extent until an allocation of exactly it revives
 * the node or anything else purges it (tomb_purge()); so a tree-path free
 * and the next allocation of the same hole, the streaming pattern, update
 * no tree at all (issue 12; Linux's iova.c erases and re-inserts).
 *
 * Mapped allocations.  An ALLOC node counts the fixed maps inside it
 * (maps: iova_claim() adds, iova_unclaim_inside() takes away), and
 * iova_alloc_put() refuses it with -EBUSY while that count is not zero, so
 * a live mapping's space is never handed out again.  Kind, maps and a
 * generation share one atomic state word per node (ST_*), so the free's
 * checks and its flip are one compare-and-swap.
 *
 * rcache.  Frees of 1, 2, 4 ... 128 pages go, still in the busy tree but
 * marked CACHED, to the magazines of the caller's slot (loaded and previous,
 * as in Linux's per-CPU rcache), full magazines to a bounded depot.  A
 * magazine entry is the busy node itself.  An allocation of such a size
 * pops a fitting entry (below the limit, aligned) and flips it back to
 * ALLOC.  A claim that overlaps a CACHED node, or a flush, evicts it: the
 * node leaves the busy tree, its space becomes free, and the node is marked
 * EVICTED; the magazine still owns it and discards it when it next sees it.
 *
 * The fast path without any lock (issue 12).  A thread among the process's
 * first IODMA_SHARDS (util.h shard_own()) owns a slot of its own: only it
 * reads or writes that slot's magazines, its records and its counters, so
 * its alloc pops and its free pushes without a lock; magazines move to and
 * from the depot under depot_lock only when full or empty.  What it was
 * handed it remembers (struct iova_rec: range -> node and the exact state
 * word it was handed in), and its free of that range is one
 * compare-and-swap of the node's state word from exactly that state (ALLOC,
 * no maps, that generation) to CACHED.  Anything else fails it: a second
 * free (CACHED now), a fixed map inside (maps > 0), a record gone stale
 * (another thread freed it, or the node was recycled: a new generation).
 * A record is kept after its free: its compare-and-swap fails once the
 * node left that state, and while the node is that allocation again
 * (handed out again whole, to any thread) the free is a free of a live
 * allocation, as it would be through the hash.  The hit and the recorded
 * free are static inlines in iova.h, in their callers; everything else
 * is here, from iova_alloc_get_slow() / iova_alloc_put_slow().
 * Then, and for every other free of a class size (no record, a thread
 * without a slot of its own), the pfn hash decides: every ALLOC or CACHED
 * node of a class size ("hashed") is also in a chained hash keyed by pfn,
 * guarded by 64 striped spin locks (a bucket belongs to one stripe whatever
 * the table's size; a chain changes only under its stripe's lock, with the
 * tree lock held too; the table doubles with every stripe held); the free
 * finds the node and flips ALLOC to CACHED with the same compare-and-swap
 * (-ENOENT when not ALLOC: the double-free check, -EBUSY when maps > 0).
 * Linux's rcache has no such check: it pushes whatever pfn it is given.
 * The busy tree keeps every hashed node, so claims, reservations and the
 * check still see the whole space; tree-lock holders act on a kind they
 * read only by a compare-and-swap from what they read (claim inside an
 * ALLOC, evict a CACHED), retrying when the fast path changed it.  Flushes
 * cannot touch another thread's magazines: they evict every CACHED node
 * they find in the busy tree instead.  Nodes are never freed before
 * destroy (type-stable: a stale record points at a node, never at freed
 * memory).  Threads without a slot share one under its spin lock.
 *
 * Locks, in this order: shared slot lock -> depot_lock -> tree_lock -> one
 * stripe (or all of them, in index order).  Slot, tree and stripe locks
 * spin; depot_lock is a mutex.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "iova.h"
#include "util.h"

enum iova_kind {
	IOVA_FREE = 1,	/* free extent, in the free tree */
	IOVA_ALLOC,	/* live allocation, in the busy tree */
	IOVA_CLAIM,	/* claimed piece, in the busy tree */
	IOVA_EVICTED = 5, /* was CACHED, claimed away; only a magazine holds it */
	/* freed into a magazine, still in the busy tree.  All ones in the
	 * kind bits: the fast alloc's expected state is st | ST_KIND_MASK. */
	IOVA_CACHED = 15,
};

struct iova_node {
	uint64_t pfn;		/* first granule page */
	uint64_t pages;		/* > 0 */
	uint64_t max_pages;	/* free tree: largest .pages in this subtree */
	struct iova_node *l, *r;
	struct iova_node *hnext; /* chain of the pfn hash (hashed nodes) */
	/* The state word: kind, maps and generation in one atomic 64-bit
	 * word, so that "is this a live allocation with no mapping inside"
	 * and "it is freed now" are one compare-and-swap (see ST_*). */
	_Atomic uint64_t st;
	int16_t height;		/* AVL height, leaf = 1 (< IOVA_MAX_HEIGHT) */
	uint8_t hashed;		/* in the pfn hash (stripe + tree lock) */
	uint8_t ri;		/* hashed: rec_idx() of its range, set with
				 * pfn, so the fast alloc need not compute it */
} __attribute__((aligned(IODMA_CACHELINE)));
/* One node per cache line (nodes come from line-aligned slabs): the fast
 * paths of two threads write the state words of their own nodes, never a
 * line another thread's node shares (issue 12: no shared line written). */
_Static_assert(sizeof(struct iova_node) == IODMA_CACHELINE,
	       "struct iova_node is one cache line");

/*
 * The state word of a node:
 *   bits 0..3   kind (enum iova_kind);
 *   bits 4..35  maps: ALLOC only, the fixed maps inside it (iova_claim's
 *               *claimed = false); the free is -EBUSY while > 0.  32 bits:
 *               a domain has at most UINT32_MAX mappings;
 *   bits 36..63 generation: bumped whenever the node takes a new identity
 *               (node_get()), so a stale pointer to a recycled node (a
 *               thread's record of what it was handed, see iova_rec) fails
 *               its compare-and-swap instead of flipping another range.
 * Nodes are never returned to the heap before iova_alloc_destroy()
 * (node_put() keeps them in the pool), so such a stale pointer always
 * points at a node (type-stable memory, as Linux's SLAB_TYPESAFE_BY_RCU).
 */
#define ST_KIND_MASK	0xfull
#define ST_MAPS_SHIFT	4
#define ST_MAPS_ONE	(1ull << ST_MAPS_SHIFT)
#define ST_MAPS_MASK	(0xffffffffull << ST_MAPS_SHIFT)
#define ST_GEN_SHIFT	36
#define ST_GEN_ONE	(1ull << ST_GEN_SHIFT)

/* The inline fast paths (iova.h) reach a node through these. */
_Static_assert(offsetof(struct iova_node, pfn) == IOVA_NODE_PFN_OFF &&
	       offsetof(struct iova_node, st) == IOVA_NODE_ST_OFF &&
	       offsetof(struct iova_node, ri) == IOVA_NODE_RI_OFF,
	       "iova.h's IOVA_NODE_*_OFF match struct iova_node");
_Static_assert(ST_KIND_MASK == IOVA_FAST_KIND_MASK &&
	       IOVA_ALLOC == IOVA_FAST_ALLOC && IOVA_CACHED == IOVA_FAST_CACHED,
	       "iova.h's IOVA_FAST_* match the state word");

static inline unsigned int st_kind(uint64_t s)
{
	return (unsigned int)(s & ST_KIND_MASK);
}

static inline uint64_t st_maps(uint64_t s)
{
	return (s & ST_MAPS_MASK) >> ST_MAPS_SHIFT;
}

/* @s with its kind replaced by @kind (maps and generation kept). */
static inline uint64_t st_with(uint64_t s, unsigned int kind)
{
	return (s & ~ST_KIND_MASK) | kind;
}

static inline unsigned int node_kind(const struct iova_node *n)
{
	return st_kind(atomic_load_explicit(&n->st, memory_order_relaxed));
}

/* Set the kind of a node nobody else can flip now (tree lock held, the
 * node not ALLOC or CACHED, or not yet visible): maps 0, generation kept. */
static inline void node_set_kind(struct iova_node *n, unsigned int kind)
{
	uint64_t s = atomic_load_explicit(&n->st, memory_order_relaxed);

	atomic_store_explicit(&n->st, (s & ~(ST_KIND_MASK | ST_MAPS_MASK)) | kind,
			      memory_order_relaxed);
}

/*
 * Compare-and-swap of a state word, acq_rel.  The release half publishes
 * what the caller did with the range before (a freeing owner's unmapping)
 * to whoever next reads this word with acquire (the next owner's cache hit,
 * on any thread); the acquire half is that next owner's side.  Without it
 * aarch64 and riscv64 may let a new owner's writes into the range's page
 * tables pass the old owner's.  All flips of one node's kind or maps are
 * compare-and-swaps of this one word, so they are totally ordered and
 * exactly one of two racing flips from the same state wins: a free against
 * a claim counting a map (the free sees maps > 0: -EBUSY, or the claim sees
 * CACHED and retries), two frees (the second sees CACHED: -ENOENT), a cache
 * hit against a claim's eviction (EVICTED or ALLOC, never both).
 */
static inline bool st_cas(struct iova_node *n, uint64_t *old, uint64_t new)
{
	return atomic_compare_exchange_strong_explicit(&n->st, old, new,
						       memory_order_acq_rel,
						       memory_order_acquire);
}

/* IOVA_NR_REC, IOVA_NR_CLASSES, IOVA_MAG_SIZE: iova.h */
#define IOVA_LINUX_CLASSES 6	/* Linux caches 1..32 pages; the classes
				 * above (64, 128) hold fewer magazines in
				 * the depot, see depot_max() */
#define IOVA_DEPOT_MAX   32	/* full magazines per class in the depot */
#define IOVA_MAX_HEIGHT  96	/* AVL of < 2^64 nodes is < 93 high */
#define IOVA_STRIPE_BITS 6
#define IOVA_NR_STRIPES  (1u << IOVA_STRIPE_BITS)
#define IOVA_HASH_BITS0  8	/* initial buckets: 256 */
#define IOVA_HASH_BITSMAX 40

/* A spin lock: the fast path's critical sections are a few dozen
 * instructions, and a pthread mutex's lock + unlock alone cost more than
 * the whole section (issue 12).  Waiters spin, then yield. */
/* iova_spin_t: iova.h (the slot holds one). */
static inline void spin_lock(iova_spin_t *l)
{
	unsigned int tries = 0;

	while (atomic_exchange_explicit(&l->v, 1, memory_order_acquire)) {
		while (atomic_load_explicit(&l->v, memory_order_relaxed)) {
			if (++tries < 256)
				os_cpu_relax();
			else
				os_yield();
		}
	}
}

static inline void spin_unlock(iova_spin_t *l)
{
	atomic_store_explicit(&l->v, 0, memory_order_release);
}

/* Held by someone (a spin lock has no owner to compare with). */
#define spin_assert_held(l) \
	assert(atomic_load_explicit(&(l)->v, memory_order_relaxed))

/* Relaxed counter bump by its only writer (the holder of its lock). */
static inline void ctr_inc(_Atomic uint64_t *c)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
			      memory_order_relaxed);
}

static inline uint64_t ctr_get(_Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

/* struct iova_mag, struct iova_rec, struct iova_slot: iova.h (the inline
 * fast paths use them).  A record's index is the range's number among
 * ranges of its size (va >> tz, tz = log2 of the size in bytes = class +
 * log2(granule)), so that consecutive ranges of every class spread over
 * the records; the fast paths have tz at hand already. */
static inline unsigned int rec_idx(uint64_t va, unsigned int tz)
{
	return (unsigned int)(va >> tz) & (IOVA_NR_REC - 1);
}

/* A lock of the pfn hash, alone on its cache line. */
struct iova_stripe {
	iova_spin_t lock;
	char pad[IODMA_CACHELINE - sizeof(iova_spin_t)];
};

/* Nodes come IOVA_SLAB at a time (the first slab: exactly what create
 * needs), line-aligned inside the slab. */
#define IOVA_SLAB 63
struct iova_slab {
	struct iova_slab *next;
	char mem[];	/* nodes, from its first line-aligned byte */
};

/* A piece of usable space, in pages, inclusive last. */
struct iova_seg {
	uint64_t pfn;
	uint64_t last;
};

struct iova_alloc {
	/* What the inline fast paths read (iova.h): id, gmask, ngmask,
	 * granule, class_max.  First, so that a pointer to the
	 * allocator is one to it. */
	struct iova_alloc_head h;
	/* Immutable after create. */
	unsigned int shift;		/* log2(granule) */
	struct iova_seg *segs;		/* valid minus reserved, sorted */
	size_t nr_segs;
	uint64_t *cuts;			/* pfns where two valid ranges touch */
	size_t nr_cuts;
	struct iodma_iova_range *ranges; /* the valid ranges, in pages */
	size_t nr_ranges;

	_Atomic bool caching;		/* rcache on (default) */
	/* Owned slots by shard, made by their owner on first use (release
	 * store; others load with acquire), freed at destroy. */
	struct iova_slot *_Atomic own[IODMA_SHARDS];
	char pad_own[IODMA_CACHELINE];	/* the fast path reads the above
					 * only: keep it off tree_lock's line */

	/* A spin lock, not a mutex: the tree path's critical section is a
	 * few hundred instructions, and a pthread mutex's lock + unlock cost
	 * ~170 of them (issue 12).  Flushes and claims hold it for O(n);
	 * waiters then yield (spin_lock()). */
	iova_spin_t tree_lock;		/* protects everything below, and
					 * every node's fields but pfn/pages of
					 * CACHED/EVICTED nodes (immutable) */
	struct iova_node *free_root;
	struct iova_node *busy_root;
	struct iova_node *pool;		/* spare nodes, linked by ->l */
	struct iova_slab *slabs;	/* every node lives in one of these */
	struct iova_node *slab_next;	/* the current slab's next node */
	size_t slab_left;
	size_t nr_nodes;		/* nodes in all slabs */
	size_t nr_pool;
	uint64_t free_pages;
	uint64_t allocs;		/* served by the tree */
	uint64_t frees;			/* returned straight to the tree */
	uint64_t cached_out;		/* CACHED nodes drained or evicted */
	struct iova_node *tomb;		/* see tomb_purge(): a freed range */
	uint64_t claims;
	size_t hcount;			/* hashed nodes */

	/* The pfn hash of every live or cached allocation of a cache class
	 * (1..128 pages): the free finds its node here under one stripe lock,
	 * without the tree lock or a tree walk.  htab/hbits change only with
	 * every stripe lock held (and the tree lock); a chain and the
	 * kind/maps of its nodes change only under its stripe's lock. */
	struct iova_node **htab;
	unsigned int hbits;
	struct iova_stripe stripes[IOVA_NR_STRIPES];

	os_mutex_t depot_lock;		/* protects depot[], nr_depot[], empty */
	struct iova_mag *depot[IOVA_NR_CLASSES];
	unsigned int nr_depot[IOVA_NR_CLASSES];
	struct iova_mag *empty;		/* spare empty magazines */

	struct iova_slot shared;	/* threads without a shard */
};

/* The fast paths' way to the calling thread's own slot (iova.h). */
#if IOVA_TLS
_Thread_local struct iova_tls iova_tls
	__attribute__((tls_model("initial-exec")));
#endif
static _Atomic uint64_t iova_next_id = 1;

/* ---- AVL tree with max-extent augmentation --------------------------------- */

static inline int node_height(const struct iova_node *n)
{
	return n ? n->height : 0;
}

static inline uint64_t node_max(const struct iova_node *n)
{
	return n ? n->max_pages : 0;
}

static inline uint64_t node_last(const struct iova_node *n)
{
	return n->pfn + n->pages - 1;
}

/* Recompute height and augmentation from the children. */
static void node_fix(struct iova_node *n)
{
	int hl = node_height(n->l), hr = node_height(n->r);
	uint64_t m = n->pages;

	n->height = 1 + (hl > hr ? hl : hr);
	m = IODMA_MAX(m, node_max(n->l));
	n->max_pages = IODMA_MAX(m, node_max(n->r));
}

static struct iova_node *rot_right(struct iova_node *n)
{
	struct iova_node *l = n->l;

	n->l = l->r;
	l->r = n;
	node_fix(n);
	node_fix(l);
	return l;
}

static struct iova_node *rot_left(struct iova_node *n)
{
	struct iova_node *r = n->r;

	n->r = r->l;
	r->l = n;
	node_fix(n);
	node_fix(r);
	return r;
}

/* Restore the AVL property at @n (children balanced); returns new root. */
static struct iova_node *rebalance(struct iova_node *n)
{
	int bf = node_height(n->l) - node_height(n->r);

	if (bf > 1) {
		if (node_height(n->l->l) < node_height(n->l->r))
			n->l = rot_left(n->l);
		return rot_right(n);
	}
	if (bf < -1) {
		if (node_height(n->r->r) < node_height(n->r->l))
			n->r = rot_right(n->r);
		return rot_left(n);
	}
	node_fix(n);
	return n;
}

/*
 * Insert and remove walk down once, keeping the path (the addresses of the
 * links they followed), and walk back up it fixing heights and the
 * augmentation and rebalancing, only as far as something changes: once a
 * subtree's height and max_pages are what they were, nothing above it can
 * change (Linux's rbtree stops its fix-up the same way).  Recursing to the
 * root and back at every level, as before, was most of the tree path's
 * cost (issue 12).  @links[0..@d) is the path; only nodes above depth
 * @keep may end the walk (below it the fields compared are stale: a
 * removed node's successor moved up to depth @keep).
 */
static inline __attribute__((always_inline)) void
avl_fix_up(struct iova_node **links[], int d, int keep, bool aug)
{
	while (d-- > 0) {
		struct iova_node **lp = links[d], *n = *lp;
		int hl = node_height(n->l), hr = node_height(n->r), h;
		uint64_t m;

		if (hl - hr > 1 || hr - hl > 1) {
			h = n->height;
			m = n->max_pages;
			n = rebalance(n);
			*lp = n;
			if (d < keep && n->height == h &&
			    (!aug || n->max_pages == m))
				break;
			continue;
		}
		h = 1 + (hl > hr ? hl : hr);
		if (!aug) {
			/* The busy tree: heights only (max_pages is the free
			 * tree's search; the busy tree's is not kept). */
			if (d < keep && n->height == h)
				break;
			n->height = (int16_t)h;
			continue;
		}
		m = IODMA_MAX(n->pages, node_max(n->l));
		m = IODMA_MAX(m, node_max(n->r));
		if (d < keep && n->height == h && n->max_pages == m)
			break;
		n->height = (int16_t)h;
		n->max_pages = m;
	}
}

/* Hang @n as a leaf at the empty link *@lp, reached by the path
 * @links[0..@d) (a descent that did not meet @n's key), and rebalance. */
static inline void avl_insert_at(struct iova_node **links[], int d,
				 struct iova_node **lp, struct iova_node *n,
				 bool aug)
{
	assert(!*lp);
	n->l = n->r = NULL;
	n->height = 1;
	n->max_pages = n->pages;
	*lp = n;
	avl_fix_up(links, d, d, aug);
}

/* @aug: the free tree (keep max_pages); the busy tree does not.  A key
 * already in the tree is the caller's bug; iova_alloc_check() finds it
 * (the descent goes right of an equal key, the order check fails). */
static struct iova_node *avl_insert(struct iova_node *root, struct iova_node *n,
				    bool aug)
{
	struct iova_node **links[IOVA_MAX_HEIGHT], **lp = &root;
	uint64_t pfn = n->pfn;
	int d = 0;

	while (*lp) {
		links[d++] = lp;
		lp = pfn < (*lp)->pfn ? &(*lp)->l : &(*lp)->r;
	}
	avl_insert_at(links, d, lp, n, aug);
	return root;
}

/* The link to the node keyed @pfn in the tree at *@rootp, or to the NULL
 * where it would be; the path to it in @links[0..*@d). */
static struct iova_node **avl_path(struct iova_node **rootp, uint64_t pfn,
				   struct iova_node **links[], int *d)
{
	struct iova_node **lp = rootp;

	*d = 0;
	while (*lp && (*lp)->pfn != pfn) {
		links[(*d)++] = lp;
		lp = pfn < (*lp)->pfn ? &(*lp)->l : &(*lp)->r;
	}
	return lp;
}

/* Unlink the node at *@lp, found by avl_path() (@links, @d), by relinking,
 * never by copying keys: magazines and records hold node pointers. */
static void avl_remove_at(struct iova_node **links[], int d,
			  struct iova_node **lp, bool aug)
{
	struct iova_node *n = *lp;
	int keep = d;

	if (!n->l || !n->r) {
		*lp = n->l ? n->l : n->r;
	} else {
		/* The successor m (leftmost of the right subtree) takes n's
		 * place; the path through n now runs through m. */
		int dn = d;
		struct iova_node **sp = &n->r, *m;

		links[d++] = lp;
		while ((*sp)->l) {
			links[d++] = sp;
			sp = &(*sp)->l;
		}
		m = *sp;
		*sp = m->r;
		m->l = n->l;
		m->r = n->r;
		*lp = m;
		if (d > dn + 1)
			links[dn + 1] = &m->r;
		keep = dn;	/* m's own fields are stale: fix it too */
	}
	avl_fix_up(links, d, keep, aug);
}

/* Unlink the node keyed @pfn (it exists). */
static struct iova_node *avl_remove(struct iova_node *root, uint64_t pfn,
				    bool aug)
{
	struct iova_node **links[IOVA_MAX_HEIGHT], **lp;
	int d;

	lp = avl_path(&root, pfn, links, &d);
	assert(*lp);
	avl_remove_at(links, d, lp, aug);
	return root;
}

/* Recompute the augmentation on the path to the node keyed @pfn after its
 * pages (or, order-preserving, its pfn) changed; stops where max_pages
 * stays what it was. */
static void avl_update_path(struct iova_node *root, uint64_t pfn)
{
	struct iova_node *path[IOVA_MAX_HEIGHT];
	int depth = 0;

	while (root) {
		path[depth++] = root;
		if (pfn == root->pfn)
			break;
		root = pfn < root->pfn ? root->l : root->r;
	}
	while (depth > 0) {
		struct iova_node *n = path[--depth];
		uint64_t m = n->max_pages;

		node_fix(n);
		/* The changed node itself always; above it, only while
		 * max_pages changes (heights do not). */
		if (n->pfn != pfn && n->max_pages == m)
			break;
	}
}

/* The node with the greatest pfn <= @pfn, or NULL. */
static struct iova_node *avl_floor(struct iova_node *n, uint64_t pfn)
{
	struct iova_node *best = NULL;

	while (n) {
		if (n->pfn == pfn)
			return n;
		if (n->pfn < pfn) {
			best = n;
			n = n->r;
		} else {
			n = n->l;
		}
	}
	return best;
}

static struct iova_node *avl_find(struct iova_node *n, uint64_t pfn)
{
	while (n && n->pfn != pfn)
		n = pfn < n->pfn ? n->l : n->r;
	return n;
}

/* The highest fit of @pages aligned to @align with last page <= @limit in
 * the free subtree @n: returns its extent and *@out, or NULL.  Top-down:
 * a node's right subtree, then the node, then its left subtree, skipping
 * subtrees whose max_pages is too small and right subtrees of nodes above
 * the limit.  Iterative: @stack holds the nodes whose right subtree is
 * being searched, to be tried themselves on the way back. */
static struct iova_node *free_fit(struct iova_node *n, uint64_t pages,
				  uint64_t align, uint64_t limit, uint64_t *out)
{
	struct iova_node *stack[IOVA_MAX_HEIGHT];
	int sp = 0;

	for (;;) {
		while (n && n->max_pages >= pages) {
			if (n->pfn <= limit) {
				stack[sp++] = n;
				n = n->r;
			} else {
				n = n->l;
			}
		}
		if (sp == 0)
			return NULL;
		n = stack[--sp];
		{
			uint64_t last = IODMA_MIN(node_last(n), limit);

			/* n->pfn <= limit: pushed only then */
			if (last - n->pfn + 1 >= pages) {
				uint64_t cand = align_down(last - pages + 1,
							   align);

				if (cand >= n->pfn) {
					*out = cand;
					return n;
				}
			}
		}
		n = n->l;
	}
}

/* In-order iterator with an explicit stack (the check allocates nothing). */
struct iova_iter {
	const struct iova_node *stack[IOVA_MAX_HEIGHT];
	int depth;
};

static void iter_push_left(struct iova_iter *it, const struct iova_node *n)
{
	while (n && it->depth < IOVA_MAX_HEIGHT) {
		it->stack[it->depth++] = n;
		n = n->l;
	}
}

static const struct iova_node *iter_peek(const struct iova_iter *it)
{
	return it->depth ? it->stack[it->depth - 1] : NULL;
}

static void iter_next(struct iova_iter *it)
{
	const struct iova_node *n = it->stack[--it->depth];

	iter_push_left(it, n->r);
}

/* ---- nodes ---------------------------------------------------------------- */

/* A new current slab of @k nodes (what is left of the old one goes to the
 * pool).  Returns 0 or -ENOMEM (nothing changed). */
static int slab_grow(struct iova_alloc *a, size_t k)
{
	struct iova_slab *sl = iodma_malloc(sizeof(*sl) +
					    (k + 1) * sizeof(struct iova_node));
	uintptr_t p;

	if (!sl)
		return -ENOMEM;
	while (a->slab_left > 0) {
		struct iova_node *n = a->slab_next++;

		a->slab_left--;
		atomic_init(&n->st, 0);
		n->l = a->pool;
		a->pool = n;
		a->nr_pool++;
	}
	sl->next = a->slabs;
	a->slabs = sl;
	p = ((uintptr_t)sl->mem + IODMA_CACHELINE - 1) &
	    ~(uintptr_t)(IODMA_CACHELINE - 1);
	a->slab_next = (struct iova_node *)p;
	a->slab_left = k;
	a->nr_nodes += k;
	return 0;
}

/* Slabs double (as many nodes as made so far, up to IOVA_SLAB, at least
 * @k): few allocations, and a small allocator stays small. */
static int slab_more(struct iova_alloc *a, size_t k)
{
	return slab_grow(a, IODMA_MAX(k, IODMA_MIN(a->nr_nodes, IOVA_SLAB)));
}

/* A node from the current slab (a new slab when it is used up), or NULL
 * without memory.  Nodes are never given back one by one: the slabs go at
 * destroy.  Tree lock held (or create). */
static struct iova_node *node_new(struct iova_alloc *a)
{
	struct iova_node *n;

	if (a->slab_left == 0 && slab_more(a, 1))
		return NULL;
	n = a->slab_next++;
	a->slab_left--;
	atomic_init(&n->st, 0);
	return n;
}

/* A spare node, with a new identity: its generation moves on, so a stale
 * pointer to its old self (a thread's record) no longer matches it. */
static struct iova_node *node_get(struct iova_alloc *a)
{
	struct iova_node *n = a->pool;
	uint64_t s;

	if (n) {
		a->pool = n->l;
		a->nr_pool--;
	} else {
		n = node_new(a);
		if (!n)
			return NULL;
	}
	n->hashed = 0;
	s = atomic_load_explicit(&n->st, memory_order_relaxed);
	atomic_store_explicit(&n->st, (s & ~(ST_KIND_MASK | ST_MAPS_MASK)) +
			      ST_GEN_ONE, memory_order_relaxed);
	return n;
}

/* Back to the pool, never to the heap before destroy: a thread's record
 * may still point here (type-stable nodes, see ST_*).  The pool is as large
 * as the most nodes ever in use at once. */
static void node_put(struct iova_alloc *a, struct iova_node *n)
{
	node_set_kind(n, 0);
	n->l = a->pool;
	a->pool = n;
	a->nr_pool++;
}

/* Make sure node_get() succeeds @k times.  Returns 0 or -ENOMEM (nothing
 * visible changes). */
static int node_reserve(struct iova_alloc *a, size_t k)
{
	size_t have = a->nr_pool + a->slab_left;

	return have >= k ? 0 : slab_more(a, k - have);
}

/* The cache class of an allocation of @pages (log2), or -1. */
static int size_class(uint64_t pages)
{
	if (!is_pow2(pages) || pages > (1u << (IOVA_NR_CLASSES - 1)))
		return -1;
	return (int)ilog2_u64(pages);
}

/* ---- the pfn hash ------------------------------------------------------------ */

/* Fibonacci hashing: the top bits of pfn * 2^64/phi.  The stripe is the top
 * IOVA_STRIPE_BITS of it, the bucket the top hbits (>= IOVA_STRIPE_BITS), so
 * a bucket always belongs to one stripe whatever the table's size. */
static inline uint64_t pfn_hash(uint64_t pfn)
{
	return pfn * 0x9e3779b97f4a7c15ull;
}

static inline struct iova_stripe *stripe_of(struct iova_alloc *a, uint64_t pfn)
{
	return &a->stripes[pfn_hash(pfn) >> (64 - IOVA_STRIPE_BITS)];
}

static inline struct iova_node **bucket_of(struct iova_alloc *a, uint64_t pfn)
{
	return &a->htab[pfn_hash(pfn) >> (64 - a->hbits)];
}

/* The hashed node at @pfn, or NULL.  Its stripe's lock held. */
static inline struct iova_node *hash_find(struct iova_alloc *a, uint64_t pfn)
{
	struct iova_node *n = *bucket_of(a, pfn);

	while (n && n->pfn != pfn)
		n = n->hnext;
	return n;
}

static void stripes_lock_all(struct iova_alloc *a)
{
	for (unsigned int i = 0; i < IOVA_NR_STRIPES; i++)
		spin_lock(&a->stripes[i].lock);
}

static void stripes_unlock_all(struct iova_alloc *a)
{
	for (unsigned int i = IOVA_NR_STRIPES; i-- > 0;)
		spin_unlock(&a->stripes[i].lock);
}

/* Double the table when it holds as many nodes as buckets.  Tree lock held.
 * Without memory the table stays as it is (chains grow, nothing fails). */
static void hash_maybe_grow(struct iova_alloc *a)
{
	struct iova_node **nt, **old;
	unsigned int bits = a->hbits;
	size_t i;

	if (a->hcount < ((size_t)1 << bits) || bits >= IOVA_HASH_BITSMAX)
		return;
	nt = iodma_calloc((size_t)1 << (bits + 1), sizeof(*nt));
	if (!nt)
		return;
	stripes_lock_all(a);
	old = a->htab;
	a->htab = nt;
	a->hbits = bits + 1;
	for (i = 0; i < ((size_t)1 << bits); i++) {
		while (old[i]) {
			struct iova_node *n = old[i], **b;

			old[i] = n->hnext;
			b = bucket_of(a, n->pfn);
			n->hnext = *b;
			*b = n;
		}
	}
	stripes_unlock_all(a);
	iodma_free(old);
}

/* Hash busy node @n (a new ALLOC of a cache class).  Tree lock held. */
static void hash_insert(struct iova_alloc *a, struct iova_node *n)
{
	struct iova_stripe *st;
	struct iova_node **b;

	hash_maybe_grow(a);
	st = stripe_of(a, n->pfn);
	spin_lock(&st->lock);
	b = bucket_of(a, n->pfn);
	n->hnext = *b;
	*b = n;
	n->hashed = 1;
	n->ri = (uint8_t)rec_idx(n->pfn << a->shift,
				 (unsigned int)size_class(n->pages) + a->shift);
	spin_unlock(&st->lock);
	a->hcount++;
}

/* Unhash @n.  Tree lock and @n's stripe lock held. */
static void hash_unlink(struct iova_alloc *a, struct iova_node *n)
{
	struct iova_node **pp = bucket_of(a, n->pfn);

	while (*pp != n)
		pp = &(*pp)->hnext;
	*pp = n->hnext;
	n->hnext = NULL;
	n->hashed = 0;
	a->hcount--;
}

/* ---- free tree ------------------------------------------------------------ */

static bool is_cut(const struct iova_alloc *a, uint64_t pfn)
{
	size_t lo = 0, hi = a->nr_cuts;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (a->cuts[mid] == pfn)
			return true;
		if (a->cuts[mid] < pfn)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

/*
 * The tombstone (issue 12: the streaming pattern, a tree-path free and
 * then an allocation of the same size, took the range's node out of the
 * busy tree into the free tree and back: four tree updates a pair).  A
 * freed class-size range that merges with no free extent stays where it
 * is instead: its node (a->tomb, kind FREE, not hashed) stays in the busy
 * tree, its pages count as free (free_pages), and no free extent holds
 * them.  tree_alloc() weighs it beside free_fit()'s answer (top-down: the
 * higher candidate wins) and, when the request is exactly that range,
 * makes the node the allocation again, with no tree update at all.
 * Everything else that uses the space first purges it: the node leaves
 * the busy tree and its range goes to the free tree (free_insert()), the
 * state the eager update would have left.  At most one at a time; it
 * never lies next to a free extent (a merge purges it first).  Nothing
 * reaches it without the tree lock: it is in no hash chain and no
 * magazine, and a thread's stale record of it expects ALLOC.  Tree lock
 * held.
 */
static void free_insert(struct iova_alloc *a, struct iova_node *n,
			uint64_t pfn, uint64_t pages);

static __attribute__((noinline)) void tomb_purge_slow(struct iova_alloc *a)
{
	struct iova_node *t = a->tomb;

	a->tomb = NULL;
	a->busy_root = avl_remove(a->busy_root, t->pfn, false);
	a->free_pages -= t->pages;	/* free_insert() counts them again */
	free_insert(a, t, t->pfn, t->pages);
}

static inline void tomb_purge(struct iova_alloc *a)
{
	if (a->tomb)
		tomb_purge_slow(a);
}

/* The free extents that [pfn, end) (busy, so no free extent starts in it)
 * merges with: *@pp the one ending at pfn - 1, *@sp the one starting at
 * end, each NULL when there is none or a cut lies between.  One descent;
 * its path in @links[0..*@d) and the empty link where an extent keyed pfn
 * would hang is returned. */
static struct iova_node **free_nbrs(struct iova_alloc *a, uint64_t pfn,
				    uint64_t end, struct iova_node **links[],
				    int *d, struct iova_node **pp,
				    struct iova_node **sp)
{
	struct iova_node **lp = &a->free_root, *p = NULL, *s = NULL;
	int k = 0;

	/* The extent just below is the last one keyed below pfn, the one
	 * just above the first keyed above. */
	while (*lp) {
		struct iova_node *x = *lp;

		links[k++] = lp;
		if (x->pfn < pfn) {
			p = x;
			lp = &x->r;
		} else {
			s = x;
			lp = &x->l;
		}
	}
	if (p && (node_last(p) != pfn - 1 || is_cut(a, pfn)))
		p = NULL;
	if (s && (s->pfn != end || is_cut(a, end)))
		s = NULL;
	*d = k;
	*pp = p;
	*sp = s;
	return lp;
}

/* free_insert() past its descent: @p, @s, @links, @d, @lp from
 * free_nbrs(), the free tree unchanged since. */
static void free_join(struct iova_alloc *a, struct iova_node *n, uint64_t pfn,
		      uint64_t pages, struct iova_node *p, struct iova_node *s,
		      struct iova_node **links[], int d, struct iova_node **lp)
{
	a->free_pages += pages;
	if (p && s) {
		uint64_t sp = s->pages;

		a->free_root = avl_remove(a->free_root, s->pfn, true);
		node_put(a, s);
		p->pages += pages + sp;
		avl_update_path(a->free_root, p->pfn);
		node_put(a, n);
	} else if (p) {
		p->pages += pages;
		avl_update_path(a->free_root, p->pfn);
		node_put(a, n);
	} else if (s) {
		s->pfn = pfn;
		s->pages += pages;
		avl_update_path(a->free_root, pfn);
		node_put(a, n);
	} else {
		/* The descent's empty link is where pfn hangs: no second
		 * descent to insert. */
		n->pfn = pfn;
		n->pages = pages;
		node_set_kind(n, IOVA_FREE);
		avl_insert_at(links, d, lp, n, true);
	}
}

/* Return [pfn, pfn + pages) to the free tree, merging with its neighbours;
 * @n becomes the new extent or goes to the pool.  Tree lock held. */
static void free_insert(struct iova_alloc *a, struct iova_node *n,
			uint64_t pfn, uint64_t pages)
{
	struct iova_node **links[IOVA_MAX_HEIGHT], **lp, *p, *s;
	int d;

	tomb_purge(a);	/* its extent may be a neighbour */
	lp = free_nbrs(a, pfn, pfn + pages, links, &d, &p, &s);
	free_join(a, n, pfn, pages, p, s, links, d, lp);
}

/* Take [pfn, pfn + pages) out of free extent @f, which contains it.
 * Needs at most one node from the pool (a split).  Tree lock held. */
static void free_carve(struct iova_alloc *a, struct iova_node *f, uint64_t pfn,
		       uint64_t pages)
{
	uint64_t f_end = f->pfn + f->pages, end = pfn + pages;

	assert(pfn >= f->pfn && end <= f_end);
	a->free_pages -= pages;
	if (pfn == f->pfn && end == f_end) {
		a->free_root = avl_remove(a->free_root, f->pfn, true);
		node_put(a, f);
	} else if (pfn == f->pfn) {
		f->pfn = end;
		f->pages -= pages;
		avl_update_path(a->free_root, f->pfn);
	} else if (end == f_end) {
		f->pages -= pages;
		avl_update_path(a->free_root, f->pfn);
	} else {
		struct iova_node *t = node_get(a);

		assert(t); /* reserved by the caller */
		f->pages = pfn - f->pfn;
		avl_update_path(a->free_root, f->pfn);
		t->pfn = end;
		t->pages = f_end - end;
		node_set_kind(t, IOVA_FREE);
		a->free_root = avl_insert(a->free_root, t, true);
	}
}

/* A busy node leaves the busy tree and its space becomes free: a freed
 * class-size allocation (kind FREE) that merges with nothing becomes the
 * tombstone instead (see tomb_purge()), its node staying in the busy tree. */
static void busy_release(struct iova_alloc *a, struct iova_node *n)
{
	struct iova_node **links[IOVA_MAX_HEIGHT], **lp, *p, *s;
	int d;

	if (n->hashed) {
		struct iova_stripe *st = stripe_of(a, n->pfn);

		spin_lock(&st->lock);
		hash_unlink(a, n);
		spin_unlock(&st->lock);
	}
	tomb_purge(a);
	lp = free_nbrs(a, n->pfn, n->pfn + n->pages, links, &d, &p, &s);
	if (!p && !s && node_kind(n) == IOVA_FREE &&
	    size_class(n->pages) >= 0) {
		a->free_pages += n->pages;
		a->tomb = n;
		return;
	}
	/* The busy tree's update leaves the free tree's path intact. */
	a->busy_root = avl_remove(a->busy_root, n->pfn, false);
	free_join(a, n, n->pfn, n->pages, p, s, links, d, lp);
}

/* A node takes a new identity (node_get()'s, for a node that skips the
 * pool): kind 0, no maps, the next generation. */
static inline void node_renew(struct iova_node *n)
{
	uint64_t s = atomic_load_explicit(&n->st, memory_order_relaxed);

	atomic_store_explicit(&n->st, (s & ~(ST_KIND_MASK | ST_MAPS_MASK)) +
			      ST_GEN_ONE, memory_order_relaxed);
}

/* Allocate from the tree.  Tree lock held.  Returns 0 and *@out (the busy
 * node, ALLOC), -ENOSPC (no fit) or -ENOMEM (no node); nothing changes on
 * error. */
static int tree_alloc(struct iova_alloc *a, uint64_t pages, uint64_t align,
		      uint64_t limit, struct iova_node **out)
{
	struct iova_node *f, *b;
	uint64_t cand;

	f = free_fit(a->free_root, pages, align, limit, &cand);
	b = a->tomb;
	if (b) {
		/* The tombstone's range is free too: the higher fit wins. */
		uint64_t last = IODMA_MIN(node_last(b), limit), tc;

		if (b->pfn <= limit && last - b->pfn + 1 >= pages &&
		    (tc = align_down(last - pages + 1, align)) >= b->pfn &&
		    (!f || tc > cand)) {
			if (tc == b->pfn && pages == b->pages) {
				/* Exactly it: its node, still in the busy
				 * tree there, is the allocation again (a
				 * new identity); no tree changes. */
				a->tomb = NULL;
				a->free_pages -= pages;
				node_renew(b);
				node_set_kind(b, IOVA_ALLOC);
				goto hashed;
			}
			/* Part of it: to the free tree, then as usual. */
			tomb_purge(a);
			f = free_fit(a->free_root, pages, align, limit, &cand);
			assert(f);
		}
	}
	if (!f)
		return -ENOSPC;
	if (cand == f->pfn && pages == f->pages) {
		/* The whole extent (a freed range allocated again). */
		a->free_root = avl_remove(a->free_root, f->pfn, true);
		a->free_pages -= pages;
		/* Its node leaves the free tree and becomes the allocation,
		 * a new identity as node_get() gives. */
		b = f;
		node_renew(b);
		goto busy;
	}
	if (node_reserve(a, 2))
		return -ENOMEM;
	free_carve(a, f, cand, pages);
	b = node_get(a);
busy:
	b->pfn = cand;
	b->pages = pages;
	node_set_kind(b, IOVA_ALLOC);
	b->hashed = 0;
	a->busy_root = avl_insert(a->busy_root, b, false);
hashed:
	if (size_class(pages) >= 0)
		hash_insert(a, b);
	a->allocs++;
	*out = b;
	return 0;
}

/* ---- rcache ---------------------------------------------------------------- */

/* Return every entry of @m to the tree (CACHED) or the pool (EVICTED).
 * Tree lock held; the caller holds @m (its slot, or a magazine taken out of
 * the depot), so no cache hit can pop these entries, and evictions take the
 * tree lock: nobody else can flip them now. */
static void mag_drain_locked(struct iova_alloc *a, struct iova_mag *m)
{
	spin_assert_held(&a->tree_lock);

	while (m->n > 0) {
		struct iova_node *n = m->e[--m->n];
		uint64_t s = atomic_load_explicit(&n->st, memory_order_acquire);

		if (st_kind(s) == IOVA_CACHED) {
			bool ok = st_cas(n, &s, st_with(s, IOVA_FREE));

			assert(ok);
			(void)ok;
			a->cached_out++;
			busy_release(a, n);
		} else {
			assert(st_kind(s) == IOVA_EVICTED);
			node_put(a, n);
		}
	}
}

static void mag_drain(struct iova_alloc *a, struct iova_mag *m)
{
	spin_lock(&a->tree_lock);
	mag_drain_locked(a, m);
	spin_unlock(&a->tree_lock);
}

/* An empty magazine from the spare list or the heap, or NULL. */
static struct iova_mag *mag_new(struct iova_alloc *a)
{
	struct iova_mag *m;

	os_mutex_lock(&a->depot_lock);
	m = a->empty;
	if (m)
		a->empty = m->next;
	os_mutex_unlock(&a->depot_lock);
	if (!m) {
		m = iodma_malloc(sizeof(*m));
		if (!m)
			return NULL;
	}
	m->n = 0;
	m->next = NULL;
	return m;
}

static void mag_recycle(struct iova_alloc *a, struct iova_mag *m)
{
	assert(m->n == 0);
	os_mutex_lock(&a->depot_lock);
	m->next = a->empty;
	a->empty = m;
	os_mutex_unlock(&a->depot_lock);
}

/* Full magazines of class @c the depot keeps: IOVA_DEPOT_MAX up to Linux's
 * largest class (32 pages), halved for each class above, so that no class
 * hoards more than 32 magazines' worth of 32-page ranges (256 MiB of 4 KiB
 * pages per class: the space a 32-bit device sees stays mostly in the
 * tree; and a miss flushes the caches before it fails). */
static inline unsigned int depot_max(int c)
{
	return c < IOVA_LINUX_CLASSES ? IOVA_DEPOT_MAX :
	       IOVA_DEPOT_MAX >> (c - IOVA_LINUX_CLASSES + 1);
}

/* Make room for one entry in the slot's loaded magazine of class @c.
 * The slot held (owned, or the shared one locked).  Returns false when no
 * magazine can be had (then the caller frees to the tree). */
static __attribute__((noinline)) bool
mag_prepare_push_slow(struct iova_alloc *a, struct iova_slot *s, int c)
{
	struct iova_mag *e, *full;

	if (s->prev[c] && s->prev[c]->n < IOVA_MAG_SIZE) {
		e = s->loaded[c];
		s->loaded[c] = s->prev[c];
		s->prev[c] = e;
		return true;
	}
	/* loaded and prev are each NULL or full. */
	e = mag_new(a);
	if (!e) {
		if (!s->loaded[c])
			return false;
		mag_drain(a, s->loaded[c]);
		return true;
	}
	if (!s->loaded[c]) {
		s->loaded[c] = e;
		return true;
	}
	if (!s->prev[c]) {
		s->prev[c] = s->loaded[c];
		s->loaded[c] = e;
		return true;
	}
	/* Both full: prev goes to the depot, or back to the tree. */
	full = s->prev[c];
	os_mutex_lock(&a->depot_lock);
	if (a->nr_depot[c] < depot_max(c)) {
		full->next = a->depot[c];
		a->depot[c] = full;
		a->nr_depot[c]++;
		full = NULL;
	}
	os_mutex_unlock(&a->depot_lock);
	if (full) {
		mag_drain(a, full);
		mag_recycle(a, full);
	}
	s->prev[c] = s->loaded[c];
	s->loaded[c] = e;
	return true;
}

static inline bool mag_prepare_push(struct iova_alloc *a,
				    struct iova_slot *s, int c)
{
	struct iova_mag *m = s->loaded[c];

	if (m && m->n < IOVA_MAG_SIZE)
		return true;
	return mag_prepare_push_slow(a, s, c);
}

/* Index of the topmost entry of @m below @limit and aligned, or -1.
 * Reads pfn of CACHED or EVICTED nodes: immutable in those states. */
static int mag_find(const struct iova_mag *m, uint64_t pages, uint64_t align,
		    uint64_t limit)
{
	int i;

	if (!m)
		return -1;
	for (i = (int)m->n - 1; i >= 0; i--) {
		const struct iova_node *n = m->e[i];

		if (n->pfn + pages - 1 <= limit && is_aligned(n->pfn, align))
			return i;
	}
	return -1;
}

static struct iova_node *mag_take(struct iova_mag *m, int i)
{
	struct iova_node *n = m->e[i];

	m->e[i] = m->e[--m->n];
	return n;
}

/* Flip a node popped from a magazine from CACHED to ALLOC.  True and
 * *@st (its new state) on a hit; false when a claim or a flush evicted it
 * (EVICTED: then the magazine's holder owns the node and must discard it). */
static inline bool pop_flip(struct iova_node *n, uint64_t *st)
{
	uint64_t s = atomic_load_explicit(&n->st, memory_order_relaxed);

	if (st_kind(s) != IOVA_CACHED ||
	    !st_cas(n, &s, st_with(s, IOVA_ALLOC))) {
		assert(st_kind(s) == IOVA_EVICTED);
		return false;
	}
	assert(st_maps(s) == 0); /* freed only with none */
	*st = st_with(s, IOVA_ALLOC);
	return true;
}

/* Try slot @s (held), then the depot.  Returns the node (now ALLOC) and
 * *@st, or NULL. */
static __attribute__((noinline)) struct iova_node *
cache_get(struct iova_alloc *a, struct iova_slot *s, int c, uint64_t pages,
	  uint64_t align, uint64_t limit, uint64_t *st)
{
	for (;;) {
		struct iova_mag *m = s->loaded[c];
		struct iova_node *n;
		int i = mag_find(m, pages, align, limit);

		if (i < 0) {
			m = s->prev[c];
			i = mag_find(m, pages, align, limit);
		}
		if (i < 0 && (!s->loaded[c] || s->loaded[c]->n == 0)) {
			/* loaded is empty: refill from prev or the depot. */
			if (s->prev[c] && s->prev[c]->n > 0) {
				m = s->loaded[c];
				s->loaded[c] = s->prev[c];
				s->prev[c] = m;
				return NULL; /* prev had no fit either */
			}
			os_mutex_lock(&a->depot_lock);
			m = a->depot[c];
			if (m) {
				a->depot[c] = m->next;
				a->nr_depot[c]--;
				if (s->loaded[c]) {
					s->loaded[c]->next = a->empty;
					a->empty = s->loaded[c];
				}
				s->loaded[c] = m;
			}
			os_mutex_unlock(&a->depot_lock);
			if (!m)
				return NULL;
			i = mag_find(m, pages, align, limit);
		}
		if (i < 0)
			return NULL;
		n = mag_take(m, i);
		if (pop_flip(n, st))
			return n;
		spin_lock(&a->tree_lock);
		node_put(a, n);
		spin_unlock(&a->tree_lock);
	}
}

/* The owned slot of shard @i, or NULL. */
static struct iova_slot *own_slot_at(struct iova_alloc *a, unsigned int i)
{
	return atomic_load_explicit(&a->own[i], memory_order_acquire);
}

/* Sums of the slots' counters (exact when no thread is in the allocator). */
static uint64_t slot_sums(struct iova_alloc *a)
{
	uint64_t f = ctr_get(&a->shared.fput);

	for (unsigned int i = 0; i < IODMA_SHARDS; i++) {
		struct iova_slot *s = own_slot_at(a, i);

		if (s)
			f += ctr_get(&s->fput);
	}
	return f;
}

/* CACHED nodes in the busy tree now.  Tree lock held; O(n) (stats and
 * the check only).  Exact when no other thread is in the allocator, else
 * a snapshot. */
static uint64_t count_cached_locked(struct iova_alloc *a)
{
	struct iova_iter it = { .depth = 0 };
	uint64_t k = 0;

	iter_push_left(&it, a->busy_root);
	while (iter_peek(&it)) {
		k += node_kind(iter_peek(&it)) == IOVA_CACHED;
		iter_next(&it);
	}
	return k;
}

/* Allocations served by a cache: every push into a magazine ends as a
 * hit, a drain or eviction (cached_out), or is still CACHED (@cached).
 * Tree lock held; a snapshot clamped at 0 while other threads run. */
static uint64_t cache_hits(struct iova_alloc *a, uint64_t fput,
			   uint64_t cached)
{
	uint64_t gone = a->cached_out + cached;

	return fput > gone ? fput - gone : 0;
}

/*
 * Evict every CACHED node of the busy tree: its space becomes free, the
 * node EVICTED, still owned by the magazine that holds it (or is about to:
 * a free that flipped it to CACHED pushes it next), which discards it when
 * it pops it.  This is how flushes reach the magazines of owned slots,
 * which only their owner may touch.  Tree lock held.  Without memory for a
 * free extent node the rest stay cached (a flush is a best effort).
 */
static void evict_cached_locked(struct iova_alloc *a)
{
	struct iova_iter it = { .depth = 0 };
	struct iova_node *list = NULL;
	size_t k = 0;

	spin_assert_held(&a->tree_lock);
	iter_push_left(&it, a->busy_root);
	while (iter_peek(&it)) {
		struct iova_node *n = (struct iova_node *)iter_peek(&it);
		uint64_t s = atomic_load_explicit(&n->st, memory_order_acquire);

		iter_next(&it);
		if (st_kind(s) != IOVA_CACHED)
			continue;
		if (node_reserve(a, k + 1))
			break;
		/* Fails only when its owner's cache hit took it just now. */
		if (!st_cas(n, &s, st_with(s, IOVA_EVICTED)))
			continue;
		struct iova_stripe *st = stripe_of(a, n->pfn);

		spin_lock(&st->lock);
		hash_unlink(a, n);
		spin_unlock(&st->lock);
		n->hnext = list;	/* off the hash: the link is ours */
		list = n;
		k++;
	}
	while (list) {
		struct iova_node *n = list;

		list = n->hnext;
		n->hnext = NULL;
		a->busy_root = avl_remove(a->busy_root, n->pfn, false);
		a->cached_out++;
		free_insert(a, node_get(a), n->pfn, n->pages);
	}
}

void iova_alloc_flush_caches(struct iova_alloc *a)
{
	struct iova_mag *full[IOVA_NR_CLASSES];
	struct iova_slot *s = &a->shared;
	int c;

	spin_lock(&s->lock);
	spin_lock(&a->tree_lock);
	for (c = 0; c < IOVA_NR_CLASSES; c++) {
		if (s->loaded[c])
			mag_drain_locked(a, s->loaded[c]);
		if (s->prev[c])
			mag_drain_locked(a, s->prev[c]);
	}
	spin_unlock(&a->tree_lock);
	spin_unlock(&s->lock);
	os_mutex_lock(&a->depot_lock);
	for (c = 0; c < IOVA_NR_CLASSES; c++) {
		full[c] = a->depot[c];
		a->depot[c] = NULL;
		a->nr_depot[c] = 0;
	}
	os_mutex_unlock(&a->depot_lock);
	for (c = 0; c < IOVA_NR_CLASSES; c++) {
		while (full[c]) {
			struct iova_mag *m = full[c];

			full[c] = m->next;
			mag_drain(a, m);
			mag_recycle(a, m);
		}
	}
	/* What is left is in owned slots' magazines. */
	spin_lock(&a->tree_lock);
	evict_cached_locked(a);
	spin_unlock(&a->tree_lock);
}

/*
 * The switch, then a new id: every thread's iova_tls stops matching, so
 * its next alloc or free takes the slow path, which reads the switch.
 * Both seq_cst, and own_slot() reads the id before the switch: a thread
 * that read the new id sees the new switch (and, when it is off, does not
 * set iova_tls); one that read the old id sets iova_tls to it, which no
 * longer matches.  A fast path running on another thread while the switch
 * flips may still push into its magazine (the flush then misses that
 * range until the next flush), as a free that started before the switch.
 */
void iova_alloc_set_caching(struct iova_alloc *a, bool on)
{
	atomic_store(&a->caching, on);
	atomic_store(&a->h.id, atomic_fetch_add_explicit(&iova_next_id, 1,
							 memory_order_relaxed));
	if (!on)
		iova_alloc_flush_caches(a);
}

/* ---- create / destroy ------------------------------------------------------ */

static int cmp_seg(const struct iova_seg *x, const struct iova_seg *y)
{
	return x->pfn < y->pfn ? -1 : x->pfn > y->pfn;
}

/* Insertion sort: reserved windows are few. */
static void sort_segs(struct iova_seg *s, size_t n)
{
	size_t i, j;

	for (i = 1; i < n; i++) {
		struct iova_seg t = s[i];

		for (j = i; j > 0 && cmp_seg(&s[j - 1], &t) > 0; j--)
			s[j] = s[j - 1];
		s[j] = t;
	}
}

static void iova_free_all(struct iova_alloc *a)
{
	unsigned int i;
	int c;

	/* Every node, in the trees, the pool or a magazine, is in a slab. */
	while (a->slabs) {
		struct iova_slab *sl = a->slabs;

		a->slabs = sl->next;
		iodma_free(sl);
	}
	for (i = 0; i <= IODMA_SHARDS; i++) {
		struct iova_slot *s = i < IODMA_SHARDS ? own_slot_at(a, i) :
							 &a->shared;

		if (!s)
			continue;
		for (c = 0; c < IOVA_NR_CLASSES; c++) {
			iodma_free(s->loaded[c]);
			iodma_free(s->prev[c]);
		}
		if (s != &a->shared)
			iodma_free(s);
	}
	for (c = 0; c < IOVA_NR_CLASSES; c++) {
		while (a->depot[c]) {
			struct iova_mag *m = a->depot[c];

			a->depot[c] = m->next;
			iodma_free(m);
		}
	}
	while (a->empty) {
		struct iova_mag *m = a->empty;

		a->empty = m->next;
		iodma_free(m);
	}
	iodma_free(a->htab);
	iodma_free(a->segs);
	iodma_free(a->cuts);
	iodma_free(a->ranges);
}

/* Fill a->segs (valid ranges minus @res, sorted and merged) and a->cuts. */
static int build_segs(struct iova_alloc *a, struct iova_seg *res, size_t nres)
{
	size_t i, j = 0, nseg = 0, ncut = 0, cap;

	cap = a->nr_ranges + nres;
	a->segs = iodma_calloc(cap ? cap : 1, sizeof(*a->segs));
	a->cuts = iodma_calloc(a->nr_ranges ? a->nr_ranges : 1,
			       sizeof(*a->cuts));
	if (!a->segs || !a->cuts)
		return -ENOMEM;
	for (i = 0; i < a->nr_ranges; i++) {
		uint64_t cur = a->ranges[i].iova;
		uint64_t last = cur + a->ranges[i].len - 1;

		if (i > 0 && a->ranges[i - 1].iova + a->ranges[i - 1].len == cur)
			a->cuts[ncut++] = cur;
		/* skip windows wholly below */
		while (j < nres && res[j].last < cur)
			j++;
		for (size_t k = j; k < nres && res[k].pfn <= last; k++) {
			if (res[k].pfn > cur) {
				a->segs[nseg].pfn = cur;
				a->segs[nseg].last = res[k].pfn - 1;
				nseg++;
			}
			if (res[k].last >= last) {
				cur = last + 1;
				break;
			}
			if (res[k].last + 1 > cur)
				cur = res[k].last + 1;
		}
		if (cur <= last) {
			a->segs[nseg].pfn = cur;
			a->segs[nseg].last = last;
			nseg++;
		}
	}
	assert(nseg <= cap);
	a->nr_segs = nseg;
	a->nr_cuts = ncut;
	return 0;
}

int iova_alloc_create(uint64_t granule,
		      const struct iodma_iova_range *ranges,
		      size_t nr_ranges,
		      const struct iodma_iova_range *reserved,
		      size_t nr_reserved, struct iova_alloc **out)
{
	struct iova_seg *res = NULL;
	struct iova_alloc *a;
	unsigned int shift;
	size_t i, nres = 0;
	int err;

	if (!out || !is_pow2(granule) || granule < 4096 ||
	    (nr_ranges && !ranges) || (nr_reserved && !reserved))
		return -EINVAL;
	shift = ilog2_u64(granule);
	for (i = 0; i < nr_ranges; i++) {
		const struct iodma_iova_range *r = &ranges[i];

		if (!range_valid(r->iova, r->len) ||
		    !is_aligned(r->iova, granule) || !is_aligned(r->len, granule))
			return -EINVAL;
		if (i > 0 && r->iova <= range_last(ranges[i - 1].iova,
						      ranges[i - 1].len))
			return -EINVAL; /* unsorted or overlapping */
	}
	for (i = 0; i < nr_reserved; i++)
		if (!range_valid(reserved[i].iova, reserved[i].len))
			return -EINVAL;

	a = iodma_calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->shift = shift;
	/* Before anything can fail: iova_free_all() reads it. */
	a->shared.loaded = &a->shared.ltz[shift];
	a->h.gmask = granule - 1;
	a->h.ngmask = ~a->h.gmask;
	a->h.granule = granule;
	a->h.class_max = granule << (IOVA_NR_CLASSES - 1);
	atomic_init(&a->h.id, atomic_fetch_add_explicit(&iova_next_id, 1,
							memory_order_relaxed));
	err = -ENOMEM;
	a->ranges = iodma_calloc(nr_ranges ? nr_ranges : 1, sizeof(*a->ranges));
	res = iodma_calloc(nr_reserved ? nr_reserved : 1, sizeof(*res));
	if (!a->ranges || !res)
		goto fail;
	a->nr_ranges = nr_ranges;
	for (i = 0; i < nr_ranges; i++) {
		a->ranges[i].iova = ranges[i].iova >> shift;
		a->ranges[i].len = ranges[i].len >> shift;
	}
	/* reserved windows, clipped outward to the granule, sorted, merged */
	for (i = 0; i < nr_reserved; i++) {
		res[i].pfn = reserved[i].iova >> shift;
		res[i].last = range_last(reserved[i].iova, reserved[i].len) >>
			      shift;
	}
	sort_segs(res, nr_reserved);
	for (i = 0; i < nr_reserved; i++) {
		if (nres > 0 && res[i].pfn <= res[nres - 1].last + 1) {
			res[nres - 1].last = IODMA_MAX(res[nres - 1].last,
						       res[i].last);
			continue;
		}
		res[nres++] = res[i];
	}
	err = build_segs(a, res, nres);
	if (err)
		goto fail;
	err = -ENOMEM;
	if (a->nr_segs && slab_grow(a, a->nr_segs))
		goto fail;
	for (i = 0; i < a->nr_segs; i++) {
		struct iova_node *n = node_new(a);

		if (!n)
			goto fail;
		n->pfn = a->segs[i].pfn;
		n->pages = a->segs[i].last - a->segs[i].pfn + 1;
		atomic_init(&n->st, IOVA_FREE);
		n->hashed = 0;
		a->free_root = avl_insert(a->free_root, n, true);
		a->free_pages += n->pages;
	}
	a->hbits = IOVA_HASH_BITS0;
	a->htab = iodma_calloc((size_t)1 << a->hbits, sizeof(*a->htab));
	if (!a->htab)
		goto fail;
	iodma_free(res);
	atomic_init(&a->caching, true);
	atomic_init(&a->tree_lock.v, 0);
	os_mutex_init(&a->depot_lock);
	atomic_init(&a->shared.lock.v, 0);
	atomic_init(&a->shared.fput, 0);
	for (i = 0; i < IODMA_SHARDS; i++)
		atomic_init(&a->own[i], NULL);
	for (i = 0; i < IOVA_NR_STRIPES; i++)
		atomic_init(&a->stripes[i].lock.v, 0);
	*out = a;
	return 0;
fail:
	iodma_free(res);
	iova_free_all(a);
	iodma_free(a);
	return err;
}

void iova_alloc_destroy(struct iova_alloc *a)
{
	unsigned int i;
	int c;

	if (!a)
		return;
	/* No thread is in the allocator any more: drain every slot, owned
	 * ones too, so EVICTED nodes held by magazines reach the pool. */
	spin_lock(&a->tree_lock);
	for (i = 0; i < IODMA_SHARDS; i++) {
		struct iova_slot *s = own_slot_at(a, i);

		for (c = 0; s && c < IOVA_NR_CLASSES; c++) {
			if (s->loaded[c])
				mag_drain_locked(a, s->loaded[c]);
			if (s->prev[c])
				mag_drain_locked(a, s->prev[c]);
		}
	}
	spin_unlock(&a->tree_lock);
	iova_alloc_flush_caches(a);
	os_mutex_destroy(&a->depot_lock);
	iova_free_all(a);
	iodma_free(a);
}

/* ---- alloc / free ---------------------------------------------------------- */

/* Bytes -> pages: @len rounded up; false on len 0 or overflow. */
static bool len_to_pages(const struct iova_alloc *a, uint64_t len,
			 uint64_t *pages)
{
	uint64_t g = 1ull << a->shift;
	uint64_t r;

	if (len == 0)
		return false;
	r = align_up(len, g);
	if (r == 0)
		return false;
	*pages = r >> a->shift;
	return true;
}

/* A new owned slot for shard @i (first use by its owner), or NULL without
 * memory (the caller then uses the shared slot). */
static __attribute__((noinline)) struct iova_slot *
own_slot_new(struct iova_alloc *a, unsigned int i)
{
	struct iova_slot *s = iodma_calloc(1, sizeof(*s));
	int c;

	if (!s)
		return NULL;
	s->loaded = &s->ltz[a->shift];
	/* Every class has a loaded magazine from the start, and keeps one
	 * (a swap or a refill only replaces it): the fast paths do not test
	 * for none. */
	for (c = 0; c < IOVA_NR_CLASSES; c++) {
		s->loaded[c] = mag_new(a);
		if (!s->loaded[c]) {
			while (c-- > 0)
				mag_recycle(a, s->loaded[c]);
			iodma_free(s);
			return NULL;
		}
	}
	for (c = 0; c < IOVA_NR_REC; c++)
		s->rec.key[c] = IOVA_REC_NONE;
	atomic_init(&s->lock.v, 0);
	atomic_init(&s->fput, 0);
	/* Release: the stats, the check and destroy load it with acquire
	 * and see it initialised. */
	atomic_store_explicit(&a->own[i], s, memory_order_release);
	return s;
}

/* The calling thread's own slot, or NULL when it has no shard of its own
 * (more than IODMA_SHARDS threads, or thread numbers that may repeat) or
 * no memory for one: then it shares a->shared under its lock. */
static inline struct iova_slot *own_slot(struct iova_alloc *a)
{
	unsigned int i = shard_own();
#if IOVA_TLS
	/* Before the switch (see iova_alloc_set_caching()). */
	uint64_t id = atomic_load(&a->h.id);
#endif
	struct iova_slot *s;

	if (i >= IODMA_SHARDS)
		return NULL;
	/* Only this thread ever stores it: its own store needs no order. */
	s = atomic_load_explicit(&a->own[i], memory_order_relaxed);
	if (!s)
		s = own_slot_new(a, i);
#if IOVA_TLS
	if (s && atomic_load(&a->caching)) {
		/* The fast paths find it here from now on (see iova_tls). */
		iova_tls.id = id;
		iova_tls.s = s;
	}
#endif
	return s;
}

/* Remember that this thread was handed @n (first byte @va, class @c) in
 * state @st.  @va is passed, not read from @n: another thread may free
 * (and the tree recycle) @n by now. */
static inline void rec_set(const struct iova_alloc *a, struct iova_slot *s,
			   unsigned int c, struct iova_node *n, uint64_t va,
			   uint64_t st)
{
	unsigned int i = rec_idx(va, c + a->shift);

	s->rec.key[i] = iova_rec_key(va, c + a->shift);
	s->rec.n[i] = n;
	s->rec.st[i] = st_with(st, IOVA_CACHED);
}

/* The common hit on an owned slot, no lock: the top entry of the loaded
 * magazine fits and is still CACHED.  Anything else is left to
 * cache_get() (an EVICTED top entry too: it discards it). */
static inline struct iova_node *own_get_top(struct iova_slot *s, int c,
					    uint64_t pages, uint64_t align,
					    uint64_t limit, uint64_t *st)
{
	struct iova_mag *m = s->loaded[c];
	struct iova_node *n;

	if (!m || m->n == 0)
		return NULL;
	n = m->e[m->n - 1];
	if (n->pfn + pages - 1 > limit || !is_aligned(n->pfn, align) ||
	    !pop_flip(n, st))
		return NULL;
	m->n--;
	return n;
}

/* A cache hit of class @c: true and *@pfn, or false (go to the tree). */
static inline bool cache_alloc(struct iova_alloc *a, int c, uint64_t pages,
			       uint64_t align, uint64_t limit, uint64_t *pfn)
{
	struct iova_slot *s = own_slot(a);
	struct iova_node *n;
	uint64_t st;

	if (s) {
		n = own_get_top(s, c, pages, align, limit, &st);
		if (!n)
			n = cache_get(a, s, c, pages, align, limit, &st);
		if (!n)
			return false;
		*pfn = n->pfn;	/* ALLOC and ours: pfn cannot change */
		rec_set(a, s, (unsigned int)c, n, n->pfn << a->shift, st);
		return true;
	}
	s = &a->shared;
	spin_lock(&s->lock);
	n = cache_get(a, s, c, pages, align, limit, &st);
	if (n)
		*pfn = n->pfn;
	spin_unlock(&s->lock);
	return n != NULL;
}

static int get_tree(struct iova_alloc *a, uint64_t pages, uint64_t align_pages,
		    uint64_t limit_pfn, uint64_t *pfnp);

/* iova_alloc_get() past its fast path. */
int iova_alloc_get_slow(struct iova_alloc *a, uint64_t len, uint64_t align,
			uint64_t limit, uint64_t *iova)
{
	uint64_t pages, align_pages, limit_pfn, pfn;
	int c, err;

	if (!a || !iova || !is_pow2(align) || !len_to_pages(a, len, &pages))
		return -EINVAL;
	align_pages = align >> a->shift;
	if (align_pages == 0)
		align_pages = 1;
	/* last usable page: the one whose last byte is <= limit */
	if (limit == UINT64_MAX) {
		limit_pfn = UINT64_MAX >> a->shift;
	} else {
		limit_pfn = (limit + 1) >> a->shift;
		if (limit_pfn == 0)
			return -ENOMEM;
		limit_pfn--;
	}
	if (pages - 1 > limit_pfn)
		return -ENOMEM;

	c = size_class(pages);
	if (c >= 0 && atomic_load_explicit(&a->caching, memory_order_relaxed) &&
	    cache_alloc(a, c, pages, align_pages, limit_pfn, &pfn)) {
		*iova = pfn << a->shift;
		return 0;
	}
	err = get_tree(a, pages, align_pages, limit_pfn, &pfn);
	if (err)
		return err;
	*iova = pfn << a->shift;
	return 0;
}

/* The tree path of iova_alloc_get(). */
static __attribute__((noinline)) int
get_tree(struct iova_alloc *a, uint64_t pages, uint64_t align_pages,
	 uint64_t limit_pfn, uint64_t *pfnp)
{
	struct iova_node *n = NULL;
	struct iova_slot *s;
	uint64_t st = 0;
	int err, c;

	spin_lock(&a->tree_lock);
	err = tree_alloc(a, pages, align_pages, limit_pfn, &n);
	if (err == -ENOSPC && slot_sums(a) > 0) {
		/* The caches may hold the space (anything was ever pushed):
		 * return it and retry once, as Linux's alloc_iova_fast()
		 * flushes every CPU's rcache before it fails. */
		spin_unlock(&a->tree_lock);
		iova_alloc_flush_caches(a);
		spin_lock(&a->tree_lock);
		err = tree_alloc(a, pages, align_pages, limit_pfn, &n);
	}
	if (!err) {
		*pfnp = n->pfn;
		st = atomic_load_explicit(&n->st, memory_order_relaxed);
	}
	spin_unlock(&a->tree_lock);
	if (err)
		return -ENOMEM;
	/* A record only serves a free while the rcache is on (with it off
	 * every free goes to the tree; turned on later, a free without a
	 * record finds the range through the hash). */
	c = size_class(pages);
	if (c >= 0 && atomic_load_explicit(&a->caching, memory_order_relaxed) &&
	    (s = own_slot(a)) != NULL)
		rec_set(a, s, (unsigned int)c, n, *pfnp << a->shift, st);
	return 0;
}

/* The free's check and flip in one compare-and-swap: ALLOC with no map
 * inside -> @kind.  Returns 0; -ENOENT (not a live allocation: never
 * allocated, or freed already) or -EBUSY (a mapping lies inside); then
 * nothing changed. */
static int flip_free(struct iova_node *n, unsigned int kind)
{
	uint64_t s = atomic_load_explicit(&n->st, memory_order_relaxed);

	do {
		if (st_kind(s) != IOVA_ALLOC)
			return -ENOENT;
		if (st_maps(s) != 0)
			return -EBUSY;
	} while (!st_cas(n, &s, st_with(s, kind)));
	return 0;
}

/* A cache-class free straight back to the tree: tree lock, then the
 * stripe's. */
static __attribute__((noinline)) int put_tree(struct iova_alloc *a,
					      uint64_t pfn, uint64_t pages)
{
	struct iova_stripe *st = stripe_of(a, pfn);
	struct iova_node *n;
	int err = -ENOENT;

	spin_lock(&a->tree_lock);
	spin_lock(&st->lock);
	n = hash_find(a, pfn);
	if (n && n->pages == pages) {
		err = flip_free(n, IOVA_FREE);
		if (!err)
			hash_unlink(a, n);
	}
	spin_unlock(&st->lock);
	if (!err) {
		a->frees++;
		busy_release(a, n);
	}
	spin_unlock(&a->tree_lock);
	return err;
}

/* A cache-class free found through the pfn hash under its stripe lock,
 * into slot @s (owned, or the shared one locked). */
static __attribute__((noinline)) int put_hashed(struct iova_alloc *a,
						struct iova_slot *s, int c,
						uint64_t pfn, uint64_t pages)
{
	struct iova_stripe *st = stripe_of(a, pfn);
	struct iova_node *n;
	int err = -ENOENT;

	if (!mag_prepare_push(a, s, c))
		return put_tree(a, pfn, pages);
	spin_lock(&st->lock);
	n = hash_find(a, pfn);
	if (n && n->pages == pages)
		err = flip_free(n, IOVA_CACHED);
	spin_unlock(&st->lock);
	if (!err) {
		struct iova_mag *m = s->loaded[c];

		assert(m->n < IOVA_MAG_SIZE);
		m->e[m->n++] = n;
		ctr_inc(&s->fput);
	}
	return err;
}

/*
 * Free of a cache-class allocation.  A thread with a slot of its own that
 * was handed this range (its record) frees it with one compare-and-swap
 * of the node's state word and a push into its own magazine: no lock, no
 * shared line written but the node's.  The compare-and-swap expects the
 * exact state it was handed in (ALLOC, no maps, that generation), so a
 * double free (CACHED now), a free over a mapping (maps > 0) or a stale
 * record (recycled node) fails it and the pfn hash decides, under a stripe
 * lock, which error it is.  Others (no record, no shard) go through the
 * hash too.
 */
static int class_put(struct iova_alloc *a, int c, uint64_t pfn,
		     uint64_t pages)
{
	struct iova_slot *s;
	int err;

	if (!atomic_load_explicit(&a->caching, memory_order_relaxed))
		return put_tree(a, pfn, pages);
	s = own_slot(a);
	if (s) {
		uint64_t va = pfn << a->shift;
		unsigned int tz = (unsigned int)c + a->shift;
		unsigned int ri = rec_idx(va, tz);
		struct iova_node *n = s->rec.n[ri];

		if (s->rec.key[ri] == iova_rec_key(va, tz) &&
		    mag_prepare_push(a, s, c)) {
			uint64_t exp = st_with(s->rec.st[ri], IOVA_ALLOC);

			if (st_cas(n, &exp, s->rec.st[ri])) {
				struct iova_mag *m = s->loaded[c];

				m->e[m->n++] = n;
				ctr_inc(&s->fput);
				return 0;
			}
		}
		return put_hashed(a, s, c, pfn, pages);
	}
	s = &a->shared;
	spin_lock(&s->lock);
	err = put_hashed(a, s, c, pfn, pages);
	spin_unlock(&s->lock);
	return err;
}

/* iova_alloc_put() past its fast path. */
int iova_alloc_put_slow(struct iova_alloc *a, uint64_t iova, uint64_t len)
{
	struct iova_node **links[IOVA_MAX_HEIGHT], **lp, *n;
	uint64_t pages, pfn;
	int c, d, err = -ENOENT;

	if (!a || !len_to_pages(a, len, &pages) ||
	    !is_aligned(iova, 1ull << a->shift))
		return -ENOENT;
	pfn = iova >> a->shift;
	c = size_class(pages);
	if (c >= 0)
		return class_put(a, c, pfn, pages);
	spin_lock(&a->tree_lock);
	/* One descent finds, checks and unlinks it. */
	lp = avl_path(&a->busy_root, pfn, links, &d);
	n = *lp;
	if (n && node_kind(n) == IOVA_ALLOC && n->pages == pages) {
		/* -EBUSY: a mapping still lies inside, the space stays taken. */
		err = flip_free(n, IOVA_FREE);
		if (!err) {
			assert(!n->hashed); /* not a class size */
			a->frees++;
			avl_remove_at(links, d, lp, false);
			free_insert(a, n, n->pfn, n->pages);
		}
	}
	spin_unlock(&a->tree_lock);
	return err;
}

/* ---- claims ---------------------------------------------------------------- */

/* First segment whose last >= @pfn. */
static size_t seg_first(const struct iova_alloc *a, uint64_t pfn)
{
	size_t lo = 0, hi = a->nr_segs;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (a->segs[mid].last < pfn)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

struct overlap_count {
	size_t taken;		/* ALLOC or CLAIM nodes */
	size_t cached;
	size_t total;
	struct iova_node *first;
	uint64_t first_st;	/* first's state word as read when counted */
	struct iova_node *first_cached;
};

/* Count busy nodes overlapping pages [p, q]. */
static void busy_overlaps(struct iova_node *n, uint64_t p, uint64_t q,
			  struct overlap_count *oc)
{
	while (n) {
		if (n->pfn > q) {
			n = n->l;
			continue;
		}
		if (node_last(n) < p) {
			n = n->r;
			continue;
		}
		/* One read of the kind per node: the fast path may flip it
		 * (ALLOC <-> CACHED) at any moment, and a decision made from
		 * two reads would mix two states (issue 12's -EEXIST). */
		uint64_t st = atomic_load_explicit(&n->st, memory_order_acquire);
		unsigned int kind = st_kind(st);

		busy_overlaps(n->l, p, q, oc);
		oc->total++;
		if (!oc->first) {
			oc->first = n;
			oc->first_st = st;
		}
		if (kind == IOVA_CACHED) {
			oc->cached++;
			if (!oc->first_cached)
				oc->first_cached = n;
		} else {
			oc->taken++;
		}
		n = n->r;
	}
}

/* [iova, iova + len) as pages [*p, *q] of the allocator's granule; false
 * when the range wraps, is empty or is not granule aligned. */
static bool granule_pages(const struct iova_alloc *a, uint64_t iova,
			  uint64_t len, uint64_t *p, uint64_t *q)
{
	uint64_t g = 1ull << a->shift;

	if (!range_valid(iova, len) || !is_aligned(iova, g) || !is_aligned(len, g))
		return false;
	*p = iova >> a->shift;
	*q = range_last(iova, len) >> a->shift;
	return true;
}

int iova_claim(struct iova_alloc *a, uint64_t iova, uint64_t len,
	       bool *claimed)
{
	struct overlap_count oc = { 0 };
	uint64_t p, q;
	size_t i, first, pieces = 0;
	int err;

	if (!a || !claimed || !granule_pages(a, iova, len, &p, &q))
		return -EINVAL;

	spin_lock(&a->tree_lock);
	tomb_purge(a);	/* its hole is free space, not a busy node */
again:
	/* Kinds read here may flip ALLOC <-> CACHED at any moment (the
	 * fast path, no lock); every decision is taken from the one read
	 * that busy_overlaps() made of each state word (so -EEXIST is the
	 * answer of the moment a taken node was read) and what it acts on is
	 * a compare-and-swap from exactly that read, retried from the top
	 * when it fails.  Reading oc.first's kind a second time, as an older
	 * version did, let a free that flipped it to CACHED between the two
	 * reads turn "inside one allocation" into "taken": -EEXIST, although
	 * neither state alone gives it (seen under qemu-riscv64). */
	oc = (struct overlap_count){ 0 };
	busy_overlaps(a->busy_root, p, q, &oc);
	if (oc.total == 1 && st_kind(oc.first_st) == IOVA_ALLOC &&
	    oc.first->pfn <= p && node_last(oc.first) >= q) {
		uint64_t s = oc.first_st;

		if (st_maps(s) == 0xffffffffull) {
			spin_unlock(&a->tree_lock);
			return -ENOMEM;	/* the count is full */
		}
		/* One more map inside, unless it was freed meanwhile: then
		 * the free won (its compare-and-swap saw no map). */
		if (!st_cas(oc.first, &s, s + ST_MAPS_ONE))
			goto again;
		spin_unlock(&a->tree_lock);
		*claimed = false;
		return 0;
	}
	if (oc.taken > 0) {
		spin_unlock(&a->tree_lock);
		return -EEXIST;
	}
	first = seg_first(a, p);
	for (i = first; i < a->nr_segs && a->segs[i].pfn <= q; i++)
		pieces++;
	err = node_reserve(a, oc.cached + 2 * pieces);
	if (err) {
		spin_unlock(&a->tree_lock);
		return err;
	}
	/* Evict cached ranges: the magazine keeps the node, marked EVICTED. */
	while (oc.cached > 0) {
		struct iova_node *n = oc.first_cached;
		struct iova_stripe *st = stripe_of(a, n->pfn);

		uint64_t ns = atomic_load_explicit(&n->st, memory_order_acquire);

		/* The cache hit's compare-and-swap and this one race from
		 * CACHED: one wins. */
		if (st_kind(ns) != IOVA_CACHED ||
		    !st_cas(n, &ns, st_with(ns, IOVA_EVICTED)))
			goto again; /* handed out again meanwhile */
		spin_lock(&st->lock);
		hash_unlink(a, n);
		spin_unlock(&st->lock);
		a->busy_root = avl_remove(a->busy_root, n->pfn, false);
		a->cached_out++;
		free_insert(a, node_get(a), n->pfn, n->pages);
		oc = (struct overlap_count){ 0 };
		busy_overlaps(a->busy_root, p, q, &oc);
		if (oc.taken > 0)
			goto again; /* a cache hit made one ALLOC: -EEXIST */
	}
	for (i = first; i < a->nr_segs && a->segs[i].pfn <= q; i++) {
		uint64_t s = IODMA_MAX(p, a->segs[i].pfn);
		uint64_t e = IODMA_MIN(q, a->segs[i].last);
		struct iova_node *f = avl_floor(a->free_root, s), *b;

		assert(f && node_last(f) >= e);
		free_carve(a, f, s, e - s + 1);
		b = node_get(a);
		b->pfn = s;
		b->pages = e - s + 1;
		node_set_kind(b, IOVA_CLAIM);
		a->busy_root = avl_insert(a->busy_root, b, false);
	}
	a->claims++;
	spin_unlock(&a->tree_lock);
	*claimed = true;
	return 0;
}

void iova_unclaim(struct iova_alloc *a, uint64_t iova,
		  uint64_t len)
{
	uint64_t p, q;
	size_t i, first;

	if (!a || !granule_pages(a, iova, len, &p, &q))
		return;

	spin_lock(&a->tree_lock);
	first = seg_first(a, p);
	/* All pieces must be this claim's, or nothing is undone. */
	for (i = first; i < a->nr_segs && a->segs[i].pfn <= q; i++) {
		uint64_t s = IODMA_MAX(p, a->segs[i].pfn);
		uint64_t e = IODMA_MIN(q, a->segs[i].last);
		struct iova_node *n = avl_find(a->busy_root, s);

		if (!n || node_kind(n) != IOVA_CLAIM || n->pages != e - s + 1) {
			spin_unlock(&a->tree_lock);
			return; /* not a claim of ours: ignored */
		}
	}
	for (i = first; i < a->nr_segs && a->segs[i].pfn <= q; i++) {
		uint64_t s = IODMA_MAX(p, a->segs[i].pfn);

		busy_release(a, avl_find(a->busy_root, s));
	}
	if (a->claims > 0)
		a->claims--;
	spin_unlock(&a->tree_lock);
}

void iova_unclaim_inside(struct iova_alloc *a, uint64_t iova, uint64_t len)
{
	struct iova_node *n;
	uint64_t p, q;

	if (!a || !granule_pages(a, iova, len, &p, &q))
		return;
	spin_lock(&a->tree_lock);
	n = avl_floor(a->busy_root, p);
	if (n) {
		uint64_t s = atomic_load_explicit(&n->st, memory_order_relaxed);

		/* maps > 0: every free is refused, the kind cannot change;
		 * other claims inside may count at the same time (the CAS). */
		do {
			if (st_kind(s) != IOVA_ALLOC || node_last(n) < q ||
			    st_maps(s) == 0) {
				assert(0); /* iova_claim() counted it */
				break;
			}
		} while (!st_cas(n, &s, s - ST_MAPS_ONE));
	}
	spin_unlock(&a->tree_lock);
}

/* Remove pages [p, q] from the sorted segment array @segs of *@n entries
 * (capacity at least *@n + 1: one segment may split in two). */
static void segs_subtract(struct iova_seg *segs, size_t *n, uint64_t p,
			  uint64_t q)
{
	size_t i = 0;

	while (i < *n) {
		struct iova_seg *g = &segs[i];

		if (g->last < p || g->pfn > q) {
			i++;
		} else if (g->pfn >= p && g->last <= q) {	/* all of it */
			memmove(g, g + 1, (*n - i - 1) * sizeof(*g));
			(*n)--;
		} else if (g->pfn < p && g->last > q) {		/* split */
			memmove(g + 2, g + 1, (*n - i - 1) * sizeof(*g));
			g[1].pfn = q + 1;
			g[1].last = g->last;
			g->last = p - 1;
			(*n)++;
			i += 2;
		} else if (g->pfn < p) {			/* its tail */
			g->last = p - 1;
			i++;
		} else {					/* its head */
			g->pfn = q + 1;
			i++;
		}
	}
}

int iova_alloc_reserve(struct iova_alloc *a,
		       const struct iodma_iova_range *r, size_t n)
{
	struct iova_seg *segs;
	size_t nsegs, i;
	uint64_t g;
	int err;

	if (!a || (n && !r))
		return -EINVAL;
	g = 1ull << a->shift;
	for (i = 0; i < n; i++) {
		if (!range_valid(r[i].iova, r[i].len) ||
		    !is_aligned(r[i].iova, g) || !is_aligned(r[i].len, g))
			return -EINVAL;
		for (size_t j = 0; j < i; j++)
			if (ranges_overlap(r[i].iova, r[i].len, r[j].iova, r[j].len))
				return -EINVAL;
	}
	if (n == 0)
		return 0;
	/* Cached ranges are free space to the caller: give them back first. */
	iova_alloc_flush_caches(a);

	spin_lock(&a->tree_lock);
	tomb_purge(a);	/* its hole is free space, not a busy node */
	for (i = 0; i < n; i++) {
		struct overlap_count oc = { 0 };

		busy_overlaps(a->busy_root, r[i].iova >> a->shift,
			      range_last(r[i].iova, r[i].len) >> a->shift, &oc);
		if (oc.total) {
			err = -EBUSY;
			goto out;
		}
	}
	err = -ENOMEM;
	segs = iodma_calloc(a->nr_segs + n, sizeof(*segs));
	if (!segs)
		goto out;
	if (node_reserve(a, n)) {
		iodma_free(segs);
		goto out;
	}
	memcpy(segs, a->segs, a->nr_segs * sizeof(*segs));
	nsegs = a->nr_segs;
	for (i = 0; i < n; i++) {
		uint64_t p = r[i].iova >> a->shift;
		uint64_t q = range_last(r[i].iova, r[i].len) >> a->shift;
		size_t k;

		/* Every usable page in [p, q] is free (nothing busy there):
		 * carve it out of the free extents, segment by segment. */
		for (k = seg_first(a, p); k < a->nr_segs && a->segs[k].pfn <= q; k++) {
			uint64_t pos = IODMA_MAX(p, a->segs[k].pfn);
			uint64_t e = IODMA_MIN(q, a->segs[k].last);

			while (pos <= e) {
				struct iova_node *f = avl_floor(a->free_root, pos);
				uint64_t end;

				assert(f && node_last(f) >= pos);
				end = IODMA_MIN(e, node_last(f));
				free_carve(a, f, pos, end - pos + 1);
				pos = end + 1;
			}
		}
		segs_subtract(segs, &nsegs, p, q);
	}
	iodma_free(a->segs);
	a->segs = segs;
	a->nr_segs = nsegs;
	err = 0;
out:
	spin_unlock(&a->tree_lock);
	return err;
}

/* ---- stats and self-check ---------------------------------------------------- */

void iova_alloc_get_stats(struct iova_alloc *a,
			  struct iova_alloc_stats *st)
{
	uint64_t hits, fput;

	spin_lock(&a->tree_lock);
	fput = slot_sums(a);
	hits = cache_hits(a, fput, count_cached_locked(a));
	st->allocs = a->allocs + hits;
	st->cache_hits = hits;
	st->frees = a->frees + fput;
	st->live = st->allocs - st->frees;
	st->claims = a->claims;
	st->free_bytes = a->free_pages << a->shift;
	spin_unlock(&a->tree_lock);
}

/* Checks AVL shape and augmentation of @n; returns its height or -1.
 * @tomb: the one busy node that may be FREE (tomb_purge()). */
static int check_subtree(const struct iova_node *n, bool is_free,
			 const struct iova_node *tomb)
{
	int hl, hr;
	uint64_t m;

	if (!n)
		return 0;
	hl = check_subtree(n->l, is_free, tomb);
	hr = check_subtree(n->r, is_free, tomb);
	if (hl < 0 || hr < 0 || hl - hr > 1 || hr - hl > 1)
		return -1;
	if (n->height != 1 + IODMA_MAX(hl, hr) || n->pages == 0)
		return -1;
	if (n->l && n->l->pfn >= n->pfn)
		return -1;
	if (n->r && n->r->pfn <= n->pfn)
		return -1;
	m = IODMA_MAX(n->pages, IODMA_MAX(node_max(n->l), node_max(n->r)));
	if (is_free && n->max_pages != m)
		return -1;	/* the busy tree keeps no max_pages */
	if (is_free ? node_kind(n) != IOVA_FREE :
	    n == tomb ? node_kind(n) != IOVA_FREE || n->hashed :
	    (node_kind(n) != IOVA_ALLOC && node_kind(n) != IOVA_CLAIM &&
	     node_kind(n) != IOVA_CACHED))
		return -1;
	return n->height;
}

int iova_alloc_check(struct iova_alloc *a)
{
	struct iova_iter fi = { .depth = 0 }, bi = { .depth = 0 };
	uint64_t free_pages = 0, live = 0, cached = 0;
	const struct iova_node *prev_free = NULL;
	size_t i;
	int ret = -EUCLEAN;

	uint64_t fput, hashed = 0;

	/* Owned slots have no lock: exact when no other thread is in the
	 * allocator (tests call it so). */
	spin_lock(&a->shared.lock);
	spin_lock(&a->tree_lock);
	stripes_lock_all(a);
	fput = slot_sums(a);
	if (check_subtree(a->free_root, true, NULL) < 0 ||
	    check_subtree(a->busy_root, false, a->tomb) < 0)
		goto out;
	iter_push_left(&fi, a->free_root);
	iter_push_left(&bi, a->busy_root);
	/* Free extents and busy nodes tile each segment, in order. */
	for (i = 0; i < a->nr_segs; i++) {
		uint64_t cur = a->segs[i].pfn;

		if (i > 0 && a->segs[i - 1].last >= a->segs[i].pfn)
			goto out;
		while (cur <= a->segs[i].last) {
			const struct iova_node *f = iter_peek(&fi);
			const struct iova_node *b = iter_peek(&bi);
			const struct iova_node *n;

			if ((f && f->pfn == cur) || (b && b == a->tomb &&
						      b->pfn == cur)) {
				/* a free extent, or the tombstone: free space
				 * in the busy tree, of a class size */
				n = f && f->pfn == cur ? f : b;
				if (n == b && size_class(b->pages) < 0)
					goto out;
				/* no two free extents side by side but at
				 * cuts (the tombstone counts as one) */
				if (prev_free && node_last(prev_free) + 1 == n->pfn &&
				    !is_cut(a, n->pfn))
					goto out;
				prev_free = n;
				free_pages += n->pages;
				if (n == f)
					iter_next(&fi);
				else
					iter_next(&bi);
			} else if (b && b->pfn == cur) {
				n = b;
				unsigned int k = node_kind(b);

				if (k == IOVA_ALLOC)
					live++;
				else if (k == IOVA_CACHED)
					cached++;
				/* hashed iff a live or cached class node,
				 * and then found where the hash puts it */
				if (b->hashed != ((k == IOVA_ALLOC ||
						   k == IOVA_CACHED) &&
						  size_class(b->pages) >= 0) ||
				    (b->hashed && hash_find(a, b->pfn) != b))
					goto out;
				hashed += b->hashed;
				iter_next(&bi);
			} else {
				goto out; /* hole or overlap */
			}
			if (node_last(n) > a->segs[i].last)
				goto out; /* crosses a segment end */
			cur = node_last(n) + 1;
		}
	}
	if (iter_peek(&fi) || iter_peek(&bi))
		goto out; /* outside every segment */
	if (free_pages != a->free_pages ||
	    /* every push is a hit, drained or evicted, or still CACHED */
	    fput < a->cached_out + cached ||
	    /* live = allocs - frees with hits = fput - cached_out - cached
	     * on both sides: what left the tree and did not come back */
	    live != a->allocs - a->frees - a->cached_out - cached ||
	    hashed != a->hcount)
		goto out;
	ret = 0;
out:
	stripes_unlock_all(a);
	spin_unlock(&a->tree_lock);
	spin_unlock(&a->shared.lock);
	return ret;
}
