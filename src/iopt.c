/* SPDX-License-Identifier: MIT */
/*
 * iopt.c - the IO page table's writer side, the high-window lookup and the
 * hole search.  The layout, the entry format and the rules are in iopt.h.
 *
 * Every writer operation is one traversal of the range, run in one of a
 * few modes, so that reserve and map can never disagree about which slots
 * a mapping uses:
 *   PLAN     count the nodes the map needs (a missing node is traversed as
 *            the all-zero node: everything below it is missing too) and
 *            refuse overlap with a present entry;
 *   INSTALL  install those nodes, taken from a list allocated in between;
 *   WRITE    store the leaves;
 *   UCHECK   unmap: refuse a leaf the range would bisect;
 *   UCLEAR   unmap: clear the leaves;
 *   PRUNE    unhook the nodes left empty and retire them.
 * The leaf rule (visit_slot): a level-0..2 slot becomes a leaf when the
 * range covers its whole block, the target of the block's first byte is
 * aligned to the block size and the slot does not already point to a node
 * (a node that stayed after an unmap is reused, see iopt.h).
 */
#include <errno.h>
#include <string.h>

#include <iodma/common.h>

#include "iopt.h"
#include "util.h"

static_assert(IOPT_R == IODMA_PERM_READ, "IOPT_R must equal IODMA_PERM_READ");
static_assert(IOPT_W == IODMA_PERM_WRITE, "IOPT_W must equal IODMA_PERM_WRITE");
static_assert((IOPT_MAP_FLAGS & (IOPT_PRESENT | IOPT_TABLE | IOPT_ADDR)) == 0,
	      "leaf flags overlap the structural bits");

#define NODE_BYTES (IOPT_NODE_ENTRIES * sizeof(uint64_t))

/* Writer-only bookkeeping, after each node's 512 entries (readers never
 * look past the entries). */
struct node_meta {
	uint32_t live;          /* non-zero entries in the node */
	uint32_t cand;          /* on the candidate list */
	void *next;             /* the retired list (iopt_prune) */
	void *cand_next;        /* the candidate list (iopt_prune_empty) */
	_Atomic uint64_t *pslot; /* the parent's slot that points here */
	struct node_meta *pmeta; /* the parent's bookkeeping; NULL: a root */
};

#define NODE_ALLOC (NODE_BYTES + sizeof(struct node_meta))

static inline struct node_meta *meta_of(_Atomic uint64_t *n)
{
	return (struct node_meta *)(void *)((char *)n + NODE_BYTES);
}

static inline _Atomic uint64_t *node_of_meta(struct node_meta *m)
{
	return (_Atomic uint64_t *)(void *)((char *)m - NODE_BYTES);
}

/* @m's node has no entry left: remember it for iopt_prune_empty(). */
static void cand_push(struct iopt *t, struct node_meta *m)
{
	if (m->cand)
		return;
	m->cand = 1;
	m->cand_next = t->cand;
	t->cand = node_of_meta(m);
	t->nr_cand++;
}

enum walk_mode { W_PLAN, W_INSTALL, W_WRITE, W_UCHECK, W_UCLEAR, W_PRUNE, W_MARK };

struct walk {
	enum walk_mode mode;
	uint64_t lo, hi;        /* inclusive range still being visited */
	uint64_t iova0;         /* map: first IOVA and its target */
	uint64_t target0;
	uint64_t flags;         /* map: leaf bits */
	size_t need;            /* PLAN: nodes missing */
	uint64_t *pool;         /* INSTALL: allocated nodes, linked by word 0 */
	uint64_t unmapped;      /* UCLEAR: bytes cleared */
	int err;
};

/* The all-zero node PLAN walks below a missing node.  Never written (not
 * const only so that no platform's atomic load can fault on it). */
static _Atomic uint64_t zero_node[IOPT_NODE_ENTRIES];

static inline unsigned int level_shift(unsigned int level)
{
	return IOPT_L0_SHIFT + IOPT_NODE_BITS * level;
}

static inline _Atomic uint64_t *node_of(uint64_t e)
{
	return (_Atomic uint64_t *)(uintptr_t)(e - IOPT_TABLE);
}

/* ---- lookups -------------------------------------------------------------- */

struct iopt_leaf iopt_walk_high(const struct iopt *t, uint64_t iova)
{
	const _Atomic uint64_t *n = t->hi_root;
	unsigned int level = t->hi_level;
	uint64_t e;

	if (iova > t->last) {
		/* Above the input width (with W <= 48, everything at or above
		 * fast_limit is): empty up to 2^64.  Mask ~0 makes the hit's
		 * len 0 - iova = 2^64 - iova (iova > 0 here). */
		return (struct iopt_leaf){ .entry = 0, .mask = ~0ull };
	}
	assert(n); /* W > 48: the high root exists */
	for (;;) {
		unsigned int s = level_shift(level); /* <= 57 */

		e = atomic_load_explicit(&n[(iova >> s) & (IOPT_NODE_ENTRIES - 1)],
					 memory_order_seq_cst);
		if (!(e & IOPT_TABLE) || level == 0)
			return (struct iopt_leaf){ .entry = e, .mask = (1ull << s) - 1 };
		n = iopt_node(e);
		level--;
	}
}

uint64_t iopt_hole(const struct iopt *t, uint64_t iova, uint64_t max)
{
	uint64_t hole = 0;
	struct iopt_hit h;

	while (hole < max) {
		if (iopt_lookup(t, iova + hole, &h))
			break;
		if (h.len >= max - hole)
			return max;
		hole += h.len;
		if (iova + hole < iova)
			break; /* reached 2^64 */
	}
	return IODMA_MIN(hole, max);
}

/* ---- init / fini ------------------------------------------------------------ */

int iopt_init(struct iopt *t, unsigned int width, uint64_t granule)
{
	unsigned int low;

	if (!t)
		return -EINVAL;
	memset(t, 0, sizeof(*t));
	if (width < IOPT_L0_SHIFT || width > 64 || !is_pow2(granule) ||
	    granule < (1ull << IOPT_L0_SHIFT) || granule > (1ull << IOPT_L2_SHIFT) ||
	    (width < 64 && granule > (1ull << width)))
		return -EINVAL;
	low = IODMA_MIN(width, IOPT_LOW_MAX_WIDTH);
	t->width = width;
	t->granule = granule;
	t->last = width == 64 ? ~0ull : (1ull << width) - 1;
	t->fast_limit = 1ull << low;
	t->root_entries = 1ull << (IODMA_MAX(low, IOPT_L2_SHIFT) - IOPT_L2_SHIFT);
	t->root = iodma_calloc((size_t)t->root_entries, sizeof(uint64_t));
	if (!t->root)
		return -ENOMEM;
	if (width > IOPT_LOW_MAX_WIDTH) {
		t->hi_level = width > level_shift(5) ? 5 : 4;
		t->hi_root = iodma_calloc(IOPT_NODE_ENTRIES, sizeof(uint64_t));
		if (!t->hi_root) {
			iodma_free(t->root);
			t->root = NULL;
			return -ENOMEM;
		}
	}
	return 0;
}

/* Free the nodes below the entries of @n, which are level-@level entries. */
static void free_below(_Atomic uint64_t *n, uint64_t entries, unsigned int level)
{
	for (uint64_t i = 0; i < entries; i++) {
		uint64_t e = atomic_load_explicit(&n[i], memory_order_relaxed);

		if (e & IOPT_TABLE) {
			_Atomic uint64_t *c = node_of(e);

			assert(level > 0);
			free_below(c, IOPT_NODE_ENTRIES, level - 1);
			iodma_free(c);
		}
	}
}

void *iopt_retired_take(struct iopt *t)
{
	void *list = t->retired;

	t->retired = NULL;
	t->nr_retired = 0;
	return list;
}

size_t iopt_retired_free(void *list)
{
	size_t n = 0;

	while (list) {
		void *next = meta_of(list)->next;

		iodma_free(list);
		list = next;
		n++;
	}
	return n;
}

void *iopt_retired_join(void *a, void *b)
{
	void *tail = a;

	if (!a)
		return b;
	while (meta_of(tail)->next)
		tail = meta_of(tail)->next;
	meta_of(tail)->next = b;
	return a;
}

void iopt_fini(struct iopt *t)
{
	if (!t || !t->root)
		return;
	iopt_retired_free(iopt_retired_take(t));
	free_below(t->root, t->root_entries, 2);
	iodma_free(t->root);
	if (t->hi_root) {
		free_below(t->hi_root, IOPT_NODE_ENTRIES, t->hi_level);
		iodma_free(t->hi_root);
	}
	memset(t, 0, sizeof(*t));
}

void iopt_get_stats(const struct iopt *t, struct iopt_stats *st)
{
	st->nodes = t->nodes;
	st->candidates = t->nr_cand;
	st->leaves = t->leaves;
	st->retired = t->nr_retired;
	st->bytes = (t->nodes + t->nr_retired) * NODE_ALLOC +
		    (size_t)t->root_entries * sizeof(uint64_t) +
		    (t->hi_root ? NODE_BYTES : 0);
}

/* ---- the traversal ------------------------------------------------------ */

static void visit_node(struct iopt *t, struct walk *w, _Atomic uint64_t *n,
		       struct node_meta *m, uint64_t entries, unsigned int level,
		       uint64_t start);

/* Slot @slot, in the node whose bookkeeping is @pm (NULL for the roots),
 * holds a level-@level entry for the block starting at @start. */
static void visit_slot(struct iopt *t, struct walk *w, _Atomic uint64_t *slot,
		       struct node_meta *pm, unsigned int level, uint64_t start)
{
	unsigned int s = level_shift(level);
	uint64_t blast = start + ((1ull << s) - 1); /* s <= 57: no wrap */
	uint64_t lo = IODMA_MAX(w->lo, start), hi = IODMA_MIN(w->hi, blast);
	bool whole = lo == start && hi == blast;
	uint64_t e = atomic_load_explicit(slot, memory_order_relaxed);
	_Atomic uint64_t *child;

	switch (w->mode) {
	case W_UCHECK:
	case W_UCLEAR:
	case W_PRUNE:
	case W_MARK:
		if (e & IOPT_PRESENT) {
			if (w->mode == W_PRUNE || w->mode == W_MARK)
				return;
			if (!whole) {
				w->err = -EINVAL; /* the range bisects this leaf */
				return;
			}
			if (w->mode == W_UCLEAR) {
				atomic_store_explicit(slot, 0, memory_order_release);
				t->leaves--;
				if (pm && --pm->live == 0)
					cand_push(t, pm);
				w->unmapped += 1ull << s;
			}
		} else if (e & IOPT_TABLE) {
			child = node_of(e);
			visit_node(t, w, child, meta_of(child), IOPT_NODE_ENTRIES,
				   level - 1, start);
			if (w->mode == W_MARK && meta_of(child)->live == 0)
				cand_push(t, meta_of(child));
			if (w->mode == W_PRUNE && meta_of(child)->live == 0) {
				/* Empty: unhook it.  A reader may still be
				 * inside (it reads zeros); the owner frees it
				 * after its wait (iopt_retired_take/free). */
				atomic_store_explicit(slot, 0, memory_order_release);
				if (pm)
					pm->live--;
				meta_of(child)->next = t->retired;
				t->retired = child;
				t->nodes--;
				t->nr_retired++;
			}
		}
		return;
	case W_PLAN:
	case W_INSTALL:
	case W_WRITE:
		break;
	}
	if (e & IOPT_PRESENT) {
		w->err = -EEXIST;
		return;
	}
	if (level <= 2 && !(e & IOPT_TABLE) && whole &&
	    is_aligned(w->target0 + (start - w->iova0), 1ull << s)) {
		/* A leaf goes here. */
		assert(e == 0);
		if (w->mode == W_WRITE) {
			atomic_store_explicit(slot, ((w->target0 + (start - w->iova0)) &
						     IOPT_ADDR) | w->flags | IOPT_PRESENT,
					      memory_order_release);
			t->leaves++;
			if (pm)
				pm->live++;
		}
		return;
	}
	assert(level > 0); /* level 0 is always a whole, aligned block */
	if (e & IOPT_TABLE) {
		child = node_of(e);
	} else {
		switch (w->mode) {
		case W_PLAN:
			w->need++;
			child = zero_node; /* only read in PLAN */
			break;
		case W_INSTALL:
			child = (_Atomic uint64_t *)w->pool;
			assert(child);
			w->pool = (uint64_t *)(uintptr_t)w->pool[0];
			/* The rest is zero since calloc; the release store
			 * below publishes the zeros with the node. */
			atomic_store_explicit(&child[0], 0, memory_order_relaxed);
			meta_of(child)->pslot = slot;
			meta_of(child)->pmeta = pm;
			atomic_store_explicit(slot, (uint64_t)(uintptr_t)child | IOPT_TABLE,
					      memory_order_release);
			t->nodes++;
			if (pm)
				pm->live++;
			break;
		default:
			/* WRITE runs only after a PLAN that found nothing missing. */
			assert(!"iopt: map found a node missing after its plan");
			w->err = -ENOMEM;
			return;
		}
	}
	/* (zero_node has no bookkeeping; PLAN never touches it.) */
	visit_node(t, w, child, child == zero_node ? NULL : meta_of(child),
		   IOPT_NODE_ENTRIES, level - 1, start);
}

/* @n (bookkeeping @m, NULL for the roots) holds @entries level-@level
 * entries, the first for the block at @start. */
static void visit_node(struct iopt *t, struct walk *w, _Atomic uint64_t *n,
		       struct node_meta *m, uint64_t entries, unsigned int level,
		       uint64_t start)
{
	unsigned int s = level_shift(level);
	uint64_t first, last, nlast;

	nlast = start + ((entries << s) - 1); /* entries << s <= 2^64 */
	if (entries << s == 0)
		nlast = ~0ull;
	if (w->hi < start || w->lo > nlast)
		return;
	first = (IODMA_MAX(w->lo, start) - start) >> s;
	last = (IODMA_MIN(w->hi, nlast) - start) >> s;
	for (uint64_t i = first; i <= last && !w->err; i++) {
		/* Unmap skips empty slots here: unmap_all scans the 2^18
		 * root entries of a 48-bit table. */
		if ((w->mode == W_UCHECK || w->mode == W_UCLEAR || w->mode == W_PRUNE ||
		     w->mode == W_MARK) &&
		    atomic_load_explicit(&n[i], memory_order_relaxed) == 0)
			continue;
		visit_slot(t, w, &n[i], m, level, start + (i << s));
	}
}

/* Run @w over [w->lo, w->hi] (already checked to be below 2^W). */
static int walk(struct iopt *t, struct walk *w)
{
	uint64_t lo = w->lo;

	w->err = 0;
	if (lo < t->fast_limit)
		visit_node(t, w, t->root, NULL, t->root_entries, 2, 0);
	if (!w->err && w->hi >= t->fast_limit && t->hi_root) {
		/* The high window starts at 2^48: its entries for lower IOVAs
		 * are never used. */
		w->lo = IODMA_MAX(lo, t->fast_limit);
		visit_node(t, w, t->hi_root, NULL, IOPT_NODE_ENTRIES, t->hi_level, 0);
		w->lo = lo;
	}
	return w->err;
}

/* The checks shared by reserve, map and unmap. */
static int range_check(const struct iopt *t, uint64_t iova, uint64_t len)
{
	if (!range_valid(iova, len) || !is_aligned(iova, t->granule) ||
	    !is_aligned(len, t->granule))
		return -EINVAL;
	if (range_last(iova, len) > t->last)
		return -ERANGE;
	return 0;
}

static int map_check(const struct iopt *t, uint64_t iova, uint64_t len,
		     uint64_t target)
{
	int err = range_check(t, iova, len);

	if (err)
		return err;
	if (!is_aligned(target, t->granule) || !range_valid(target, len))
		return -EINVAL;
	return 0;
}

/* ---- the one-node fast path ------------------------------------------------
 * Most maps and unmaps are a few 4 KiB pages inside one 2 MiB block whose
 * nodes exist (a strict unmap of a streaming buffer, its map right after):
 * they reach the level-0 node with two loads and touch its slots directly.
 * Anything else (a range crossing a 2 MiB boundary, a missing node, a large
 * leaf on the way, the high window) takes the general walk, which gives the
 * same result.  A range shorter than 2 MiB only ever has level-0 leaves. */

/* The level-0 node holding all of [iova, last], or NULL. */
static _Atomic uint64_t *l0_node(const struct iopt *t, uint64_t iova,
				 uint64_t last)
{
	uint64_t e;

	if (last >= t->fast_limit || (iova >> IOPT_L1_SHIFT) != (last >> IOPT_L1_SHIFT))
		return NULL;
	e = atomic_load_explicit(&t->root[iova >> IOPT_L2_SHIFT], memory_order_relaxed);
	if (!(e & IOPT_TABLE))
		return NULL;
	e = atomic_load_explicit(&node_of(e)[(iova >> IOPT_L1_SHIFT) &
					      (IOPT_NODE_ENTRIES - 1)],
				 memory_order_relaxed);
	return (e & IOPT_TABLE) ? node_of(e) : NULL;
}

static inline unsigned int l0_idx(uint64_t iova)
{
	return (unsigned int)(iova >> IOPT_L0_SHIFT) & (IOPT_NODE_ENTRIES - 1);
}

/* Is every level-0 slot of [iova, last] in @n empty? */
static bool l0_empty(_Atomic uint64_t *n, uint64_t iova, uint64_t last)
{
	for (unsigned int i = l0_idx(iova); i <= l0_idx(last); i++)
		if (atomic_load_explicit(&n[i], memory_order_relaxed))
			return false;
	return true;
}

void iopt_prefetch(const struct iopt *t, uint64_t iova)
{
	_Atomic uint64_t *n = t->root ? l0_node(t, iova, iova) : NULL;

	if (n) {
		__builtin_prefetch((const void *)&n[l0_idx(iova)], 1);
		__builtin_prefetch((const void *)meta_of(n), 1);
	}
}

int iopt_reserve(struct iopt *t, uint64_t iova, uint64_t len, uint64_t target)
{
	struct walk w = { .mode = W_PLAN, .lo = iova, .iova0 = iova,
			  .target0 = target };
	uint64_t *pool = NULL;
	int err;

	if (!t || !t->root)
		return -EINVAL;
	err = map_check(t, iova, len, target);
	if (err)
		return err;
	w.hi = range_last(iova, len);
	if (len < (1ull << IOPT_L1_SHIFT)) {
		_Atomic uint64_t *n = l0_node(t, iova, w.hi);

		if (n)
			return l0_empty(n, iova, w.hi) ? 0 : -EEXIST;
	}
	err = walk(t, &w);
	if (err || w.need == 0)
		return err;
	/* All or nothing: allocate every node before installing any. */
	for (size_t i = 0; i < w.need; i++) {
		uint64_t *n = iodma_calloc(1, NODE_ALLOC);

		if (!n) {
			while (pool) {
				uint64_t *next = (uint64_t *)(uintptr_t)pool[0];

				iodma_free(pool);
				pool = next;
			}
			return -ENOMEM;
		}
		n[0] = (uint64_t)(uintptr_t)pool;
		pool = n;
	}
	w.mode = W_INSTALL;
	w.pool = pool;
	err = walk(t, &w);
	assert(err == 0 && w.pool == NULL);
	return err;
}

int iopt_map(struct iopt *t, uint64_t iova, uint64_t len, uint64_t target,
	     uint64_t flags)
{
	struct walk w = { .mode = W_PLAN, .lo = iova, .iova0 = iova,
			  .target0 = target, .flags = flags };
	int err;

	if (!t || !t->root || (flags & ~IOPT_MAP_FLAGS))
		return -EINVAL;
	err = map_check(t, iova, len, target);
	if (err)
		return err;
	w.hi = range_last(iova, len);
	if (len < (1ull << IOPT_L1_SHIFT)) {
		_Atomic uint64_t *n = l0_node(t, iova, w.hi);

		if (n) {
			unsigned int first = l0_idx(iova), last = l0_idx(w.hi);

			if (!l0_empty(n, iova, w.hi))
				return -EEXIST;
			for (unsigned int k = first; k <= last; k++)
				atomic_store_explicit(&n[k], ((target + ((uint64_t)(k - first) <<
								 IOPT_L0_SHIFT)) & IOPT_ADDR) |
						      flags | IOPT_PRESENT,
						      memory_order_release);
			meta_of(n)->live += last - first + 1;
			t->leaves += last - first + 1;
			return 0;
		}
	}
	err = walk(t, &w);
	if (err)
		return err;
	if (w.need)
		return -ENOMEM; /* not reserved */
	w.mode = W_WRITE;
	err = walk(t, &w);
	assert(err == 0);
	return err;
}

/* Check [iova, iova + len) and walk it with @w (lo/hi set here). */
static int walk_range(struct iopt *t, struct walk *w, uint64_t iova, uint64_t len)
{
	int err;

	if (!t || !t->root)
		return -EINVAL;
	err = range_check(t, iova, len);
	if (err)
		return err;
	w->lo = iova;
	w->hi = range_last(iova, len);
	return walk(t, w);
}

int iopt_unmap(struct iopt *t, uint64_t iova, uint64_t len, uint64_t *unmapped)
{
	struct walk w = { .mode = W_UCHECK };
	_Atomic uint64_t *n;
	int err;

	if (t && t->root && len < (1ull << IOPT_L1_SHIFT) &&
	    range_check(t, iova, len) == 0 &&
	    (n = l0_node(t, iova, range_last(iova, len)))) {
		/* Level-0 leaves only: nothing to bisect. */
		unsigned int first = l0_idx(iova), last = l0_idx(range_last(iova, len));
		struct node_meta *m = meta_of(n);
		uint64_t cleared = 0;

		for (unsigned int k = first; k <= last; k++) {
			if (!atomic_load_explicit(&n[k], memory_order_relaxed))
				continue;
			atomic_store_explicit(&n[k], 0, memory_order_release);
			cleared++;
		}
		m->live -= (uint32_t)cleared;
		t->leaves -= cleared;
		if (cleared && m->live == 0)
			cand_push(t, m);
		if (unmapped)
			*unmapped = cleared << IOPT_L0_SHIFT;
		return 0;
	}
	err = walk_range(t, &w, iova, len);
	if (err)
		return err;
	w.mode = W_UCLEAR;
	err = walk(t, &w);
	assert(err == 0);
	if (unmapped)
		*unmapped = w.unmapped;
	return err;
}

int iopt_mark_empty(struct iopt *t, uint64_t iova, uint64_t len)
{
	struct walk w = { .mode = W_MARK };

	return walk_range(t, &w, iova, len); /* a mark walk cannot fail */
}

size_t iopt_prune_empty(struct iopt *t)
{
	size_t n = 0;

	while (t->cand) {
		_Atomic uint64_t *node = t->cand;
		struct node_meta *m = meta_of(node), *pm;

		t->cand = m->cand_next;
		t->nr_cand--;
		m->cand = 0;
		if (m->live != 0)
			continue; /* filled again since */
		/* Unhook it: a reader already inside reads zeros. */
		assert(atomic_load_explicit(m->pslot, memory_order_relaxed) ==
		       ((uint64_t)(uintptr_t)node | IOPT_TABLE));
		atomic_store_explicit(m->pslot, 0, memory_order_release);
		pm = m->pmeta;
		if (pm && --pm->live == 0)
			cand_push(t, pm);
		m->next = t->retired;
		t->retired = node;
		t->nodes--;
		t->nr_retired++;
		n++;
	}
	return n;
}

int iopt_prune(struct iopt *t, uint64_t iova, uint64_t len)
{
	struct walk w = { .mode = W_PRUNE };

	if (!t || !t->root)
		return -EINVAL;
	/* No node on the candidate list may be retired by the walk below
	 * (the list would then point into freed memory): empty it first. */
	iopt_prune_empty(t);
	return walk_range(t, &w, iova, len); /* a prune walk cannot fail */
}
