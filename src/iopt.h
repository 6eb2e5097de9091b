/* SPDX-License-Identifier: MIT */
/*
 * iopt.h - the IO page table: a lock-free radix table IOVA -> target that
 * translation walks without a lock, the way an IOMMU walks its page tables.
 *
 * Concepts
 *   One 64-bit word per entry.  A leaf maps a naturally aligned block of
 *   4 KiB (level 0), 2 MiB (level 1) or 1 GiB (level 2) of IOVA space to a
 *   target block of the same size and alignment (a host VA, a
 *   guest-physical address for two-stage domains, or any value the owner
 *   wants carried for fd-only mappings).  A mapping is stored as the fewest
 *   such blocks its IOVA *and* target alignment allow, greedily from the
 *   front: a 1 GiB mapping, 1 GiB aligned on both sides, is one entry, not
 *   262,144.  Leaves exist only at levels 0-2; levels above only point.
 *
 *   Entry word (bits):
 *     63..12  target address of the block (leaf) / next node (TABLE: the
 *             word minus IOPT_TABLE is the node's address, >= 16-aligned)
 *     5       IOPT_GPA     target is guest-physical (two-stage domain)
 *     4       IOPT_NO_VA   fd-only mapping: the target is no host address
 *     3       IOPT_TABLE   points to the next level (never with PRESENT)
 *     2       IOPT_PRESENT a leaf
 *     1       IOPT_W       device may write   (== IODMA_PERM_WRITE)
 *     0       IOPT_R       device may read    (== IODMA_PERM_READ)
 *   0 is an empty slot.  Because the permission bits equal IODMA_PERM_*, a
 *   caller checks "present with @perm" (perm != 0) as (entry & perm) ==
 *   perm: a lookup only returns a leaf or 0 (a TABLE word never comes back,
 *   and would have bits 0-1 clear anyway), and a leaf always has PRESENT.
 *
 *   Bits each level decodes, for an input width W (iopt_init; IOVAs at or
 *   above 2^W are "not mapped"):
 *     low window, IOVA < 2^min(W,48) (the fast path: three loads):
 *       root   bits 30..min(W,48)-1  flat array of up to 2^18 level-2
 *                                    entries (2 MiB at W >= 48, like SPDK's
 *                                    map_256tb in lib/env_dpdk/memory.c)
 *       L1     bits 21..29           512 entries (4 KiB) per node
 *       L0     bits 12..20           512 entries (4 KiB) per node
 *     high window, 2^48 <= IOVA < 2^W (only when W > 48; out of line):
 *       L5     bits 57..63   (top node when W > 57)
 *       L4     bits 48..56   (top node when 48 < W <= 57)
 *       L3     bits 39..47
 *       L2     bits 30..38   then L1 and L0 as above
 *   Why this shape: the leaf sizes fix the boundaries at bits 12, 21 and
 *   30 (as in x86-64 / VT-d / AMD-Vi / Arm LPAE 4 KiB-granule tables and
 *   Linux's io-pgtable-arm); everything above bit 30 is free to split, and
 *   one wide flat root over bits 30..47 makes the common walk three
 *   dependent loads (SPDK's bare probe does two at a 2 MiB granule, and a
 *   4 KiB-granule table needs the third).  A 9-bit root (four loads) would
 *   save the 2 MiB of mostly untouched virtual memory per table at the
 *   cost of a load and ~6 instructions per lookup.  IOVAs above 2^48 are
 *   rare (57-bit VA space) and take a loop in iopt.c.  The geometry is
 *   fixed at compile time so the walk's shifts are immediates; a granule
 *   larger than 4 KiB (iopt_init) is only an alignment rule for map, reserve
 *   and unmap (a 64 KiB mapping is 16 level-0 entries).
 *
 * Threads
 *   Lookups (iopt_lookup, iopt_walk_high, iopt_hole) take no lock and make
 *   no RCU call: seq_cst loads (plain loads on x86) down the levels.  The
 *   owner keeps the nodes alive: a node is freed only by
 *   iopt_retired_free(), which the owner calls once no lookup that could
 *   have loaded a pointer to it is still under way (xlate.c's walk
 *   counters).  Writers (reserve, map,
 *   unmap, prune, retired_take, fini, stats) are serialised by the caller
 *   (the domain's map_lock).  A writer fills a new node with zeros and publishes it with
 *   a release store; leaves are published and cleared with release stores.
 *   An entry is one word, so a reader sees a mapping whole or not at all;
 *   it may see a mapping that an unmap in progress is clearing (the owner
 *   then waits for the access sections that could hold its slices).
 *
 * Node lifetime and memory bound
 *   iopt_reserve() allocates nodes (4 KiB of entries + 16 bytes of writer
 *   bookkeeping: how many entries are non-zero).  iopt_unmap() only clears
 *   leaves, so an unmap can be undone by iopt_map() without allocating;
 *   once the unmap is final the owner calls iopt_prune(), which unhooks
 *   every node left empty (its parent slot goes to 0 with a release store)
 *   and puts it on a retired list.  A reader already inside reads zeros,
 *   i.e. "not mapped", which is what the unmap made true.  The owner takes
 *   the list under its writer lock (iopt_retired_take) and frees it
 *   (iopt_retired_free) once no lookup can still be inside: a lookup may
 *   run outside any access section, so the owner tracks the walks
 *   themselves (xlate.c).  Nodes never
 *   move and are never reused while reachable, so a reader can never land
 *   in the wrong part of the table.  Memory is bounded by what is live:
 *   one L0 node per 2 MiB block holding a sub-2 MiB leaf, one L1 node per
 *   GiB holding a sub-1 GiB leaf, the high levels above them, plus the
 *   root (8 bytes per GiB of the low window: 2 MiB at W >= 48, allocated
 *   zeroed and on Linux backed only where touched; SPDK keeps the same
 *   2 MiB top level) and what waits to be freed.  Nodes installed by a
 *   reserve whose map never came (the backend failed) stay empty until a
 *   prune over them, or fini.  Without pruning, a 1 GiB mapping made where
 *   a 4 KiB one used to be would be stored in the node that stayed (511
 *   2 MiB + 512 4 KiB leaves: correct, but map and unmap then cost
 *   O(leaves)); with it, it is one entry again.
 *
 * Preconditions (checked; a violation is an error that changes nothing)
 *   - map and reserve never overlap a present entry (-EEXIST): the domain
 *     already refuses overlaps (iopt_hole() on this table before its
 *     reserve), so a 4 KiB map inside a live 2 MiB block never reaches
 *     here;
 *   - unmap never bisects a leaf (-EINVAL): the domain unmaps whole
 *     mappings (strict) or whole mappings with gaps, and every leaf lies
 *     inside one mapping, so no large leaf is ever split;
 *   - iopt_map() after a successful iopt_reserve() of the same iova, len
 *     and target, with no writer in between, cannot fail (asserted).
 *
 * How the domain uses it (domain_priv.h, domain.c, xlate.c):
 *   - every domain has one, of width 64 and granule 4 KiB (the domain
 *     checks its own alignment and IOVA ranges first); the B-tree stays for
 *     range operations (strict/gaps unmap validation, listener replay,
 *     claims, the fd and offset of a mapping); a map's overlap check is
 *     iopt_hole() here, since every page of every mapping has a leaf;
 *   - map: iopt_reserve() before the backend call (its -ENOMEM fails the
 *     map with nothing done), iopt_map() last, once the backend and the
 *     listeners took the mapping; leaf target: the host VA, the GPA
 *     (IOPT_GPA) or, fd-only, the IOVA itself (IOPT_NO_VA);
 *   - unmap: iopt_unmap() FIRST, then a seq_cst fence, so no translation
 *     of the range can start before the backend or a listener is told
 *     (bug 4); a backend failure puts the leaves back with iopt_map();
 *   - nodes: kept hooked after an unmap (the next map nearby reuses them);
 *     pruned when the table holds more than twice the nodes it had after
 *     the last prune (at least 64), and freed once no page-table walk can
 *     be inside them (xlate.c "Page-table walks and node lifetime": a
 *     per-thread walk counter and membarrier(2), which also covers
 *     translations outside access sections);
 *   - translate: iopt_lookup() (or the same three loads spelled out in
 *     iodma_translate()'s frame-less path); (entry & perm) == perm with
 *     neither IOPT_NO_VA nor IOPT_GPA is a host-VA hit; a GPA leaf is
 *     resolved through the memory's regions.
 */
#ifndef IODMA_IOPT_H
#define IODMA_IOPT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Entry bits (see above). */
#define IOPT_R        0x1ull
#define IOPT_W        0x2ull
#define IOPT_PRESENT  0x4ull
#define IOPT_TABLE    0x8ull
#define IOPT_NO_VA    0x10ull
#define IOPT_GPA      0x20ull
#define IOPT_ADDR     (~0xfffull)
/* Leaf flags a caller may pass to iopt_map(). */
#define IOPT_MAP_FLAGS (IOPT_R | IOPT_W | IOPT_NO_VA | IOPT_GPA)

#define IOPT_L0_SHIFT 12u   /* 4 KiB leaves */
#define IOPT_L1_SHIFT 21u   /* 2 MiB leaves */
#define IOPT_L2_SHIFT 30u   /* 1 GiB leaves */
#define IOPT_NODE_BITS 9u
#define IOPT_NODE_ENTRIES (1u << IOPT_NODE_BITS)
#define IOPT_LOW_MAX_WIDTH 48u /* the flat root covers at most bits 30..47 */

struct iopt {
	/* Read by every lookup; immutable between init and fini. */
	_Atomic uint64_t *root;     /* level-2 entries for [0, fast_limit) */
	uint64_t fast_limit;        /* 2^min(W, 48): IOVAs below walk inline */
	/* Read by the out-of-line lookup. */
	uint64_t last;              /* 2^W - 1: highest IOVA the table holds */
	_Atomic uint64_t *hi_root;  /* W > 48: node of level hi_level; else NULL */
	unsigned int hi_level;      /* 4 or 5 */
	/* Writer side (serialised by the owner), a cache line away from what
	 * every lookup reads: a map or unmap must not take that line from
	 * the translating CPUs. */
	char pad[64];
	unsigned int width;         /* W */
	uint64_t granule;           /* alignment of map/reserve/unmap */
	uint64_t root_entries;      /* 2^(max(min(W,48),30) - 30) */
	size_t nodes;               /* nodes in the tree (roots excluded) */
	size_t leaves;              /* present leaf entries */
	void *retired;              /* nodes pruned, not yet taken */
	size_t nr_retired;
	void *cand;                 /* nodes an unmap left empty (they may
				     * have been filled again since) */
	size_t nr_cand;
};

/* What a lookup found. */
struct iopt_hit {
	uint64_t entry;   /* the leaf word (0 on a miss): IOPT_* bits */
	uint64_t target;  /* target of the looked-up IOVA (entry's block + offset) */
	uint64_t len;     /* bytes from the IOVA to the end of the leaf block;
			   * on a miss, to the end of the empty block the walk
			   * ended in (no mapping there: a lower bound of the hole) */
};

struct iopt_stats {
	size_t nodes;       /* nodes in the tree (below the roots) */
	size_t candidates;  /* nodes on the candidate list (iopt_prune_empty) */
	size_t leaves;      /* present leaf entries */
	size_t retired;     /* pruned nodes not yet taken (iopt_retired_take) */
	size_t bytes;       /* (nodes + retired) * (4 KiB + 16) + the roots */
};

/* The entries of the node an IOPT_TABLE word points to. */
static inline const _Atomic uint64_t *iopt_node(uint64_t e)
{
	return (const _Atomic uint64_t *)(uintptr_t)(e - IOPT_TABLE);
}

/* A leaf word and the offset mask of its block (size - 1); two words, so
 * the out-of-line walk returns them in registers and the caller's
 * struct iopt_hit never has to live in memory. */
struct iopt_leaf {
	uint64_t entry;
	uint64_t mask;
};

/* Out of line: IOVAs at or above fast_limit (high window or not mapped). */
struct iopt_leaf iopt_walk_high(const struct iopt *t, uint64_t iova);

static inline __attribute__((always_inline)) bool
iopt_hit_fill(uint64_t e, uint64_t mask, uint64_t iova, struct iopt_hit *h)
{
	h->entry = e;
	h->target = (e & IOPT_ADDR) | (iova & mask);
	h->len = mask + 1 - (iova & mask);
	return (e & IOPT_PRESENT) != 0;
}

/**
 * iopt_lookup() - Find the leaf that maps @iova.
 * @t:    table.
 * @iova: any 64-bit address.
 * @h:    out: the leaf word, the target of @iova, and the bytes to the end
 *        of the leaf block (see struct iopt_hit); filled on a miss too.
 *
 * The walk an IOMMU does: three acquire loads (root, L1, L0) for an IOVA
 * below 2^min(W,48), stopping early at a 1 GiB or 2 MiB leaf or an empty
 * slot; higher IOVAs go out of line.  Each level's exit has its own
 * constant block mask, so the common 4 KiB hit is straight-line code after
 * the two "points to a node" branches.  No permission check: the caller
 * tests h->entry (the IOPT_R/IOPT_W bits equal IODMA_PERM_*).
 *
 * The loads are seq_cst (plain loads on x86 and arm64's ldar, as acquire
 * would be): an owner that clears leaves and then issues a seq_cst fence
 * can rely on every lookup ordered after that fence, in the single total
 * order, seeing the clear (the access-section handshake of xlate.c).
 *
 * Context: lock-free; any thread, concurrently with one writer, under the
 *          owner's protection of the nodes (see "Node lifetime").  The result
 *          describes the table at one instant: the entry is one word.
 * Return:  true if a leaf maps @iova (h->entry has IOPT_PRESENT), else false.
 */
static inline __attribute__((always_inline)) bool
iopt_lookup(const struct iopt *t, uint64_t iova, struct iopt_hit *h)
{
	uint64_t e;

	if (__builtin_expect(iova >= t->fast_limit, 0)) {
		struct iopt_leaf l = iopt_walk_high(t, iova);

		return iopt_hit_fill(l.entry, l.mask, iova, h);
	}
	/* The 4 KiB path falls through; 2 MiB / 1 GiB leaves and holes take
	 * one taken branch more. */
	e = atomic_load_explicit(&t->root[iova >> IOPT_L2_SHIFT],
				 memory_order_seq_cst);
	if (__builtin_expect(!(e & IOPT_TABLE), 0))
		return iopt_hit_fill(e, (1ull << IOPT_L2_SHIFT) - 1, iova, h);
	e = atomic_load_explicit(&iopt_node(e)[(iova >> IOPT_L1_SHIFT) &
					       (IOPT_NODE_ENTRIES - 1)],
				 memory_order_seq_cst);
	if (__builtin_expect(!(e & IOPT_TABLE), 0))
		return iopt_hit_fill(e, (1ull << IOPT_L1_SHIFT) - 1, iova, h);
	e = atomic_load_explicit(&iopt_node(e)[(iova >> IOPT_L0_SHIFT) &
					       (IOPT_NODE_ENTRIES - 1)],
				 memory_order_seq_cst);
	return iopt_hit_fill(e, (1ull << IOPT_L0_SHIFT) - 1, iova, h);
}

/**
 * iopt_init() - Initialise an empty table.
 * @t:       table (caller's storage).
 * @width:   input address width W in bits, 12..64: IOVAs >= 2^W are not
 *           mapped (-ERANGE for map/reserve/unmap); e.g. 39, 48, 57, 64.
 * @granule: power of two, 4 KiB..1 GiB, <= 2^W: the alignment of every
 *           iova, len and target given to reserve/map/unmap (the domain's
 *           alignment).
 *
 * Allocates the root (8 bytes per GiB below 2^min(W,48), zeroed) and, for
 * W > 48, one 4 KiB high root.
 *
 * Context: not thread-safe; no reader may use @t before this returns.
 * Return:  0; -EINVAL bad width or granule; -ENOMEM (nothing allocated,
 *          @t must not be used).
 */
int iopt_init(struct iopt *t, unsigned int width, uint64_t granule);

/**
 * iopt_fini() - Free every node and the root.
 * @t: an initialised table (or one whose init failed: no-op).
 *
 * Context: no reader may be walking @t, and none may start.
 */
void iopt_fini(struct iopt *t);

/**
 * iopt_prefetch() - Request, without waiting, the cache lines a map or
 *                   unmap of the page at @iova will write: its level-0
 *                   entry and that node's bookkeeping.
 * @t:    table.
 * @iova: any IOVA.
 *
 * A hint: does nothing when the level-0 node is not there (or @iova is in
 * the high window).  A writer calls it before other work whose misses the
 * table's can then overlap (the domain: before its B-tree descent).
 *
 * Context: writer (reads the upper levels like a lookup).
 */
void iopt_prefetch(const struct iopt *t, uint64_t iova);

/**
 * iopt_reserve() - Allocate and install every node iopt_map() of the same
 *                  range will need, so that the map cannot fail.
 * @t:      table.
 * @iova:   first IOVA; multiple of the granule.
 * @len:    bytes; > 0, multiple of the granule; iova + len must not wrap.
 * @target: target of @iova; multiple of the granule; target + len must
 *          not wrap.  The leaf layout depends on it (large leaves need the
 *          target aligned too), so reserve and map take the same one.
 *
 * Counts the missing nodes first, allocates all of them, then installs
 * them (empty: invisible to lookups).  Like btree_preload() for the B-tree,
 * this is the step before an irreversible backend call.
 *
 * Context: writer: serialised with every other writer by the caller;
 *          lookups may run concurrently.
 * Return:  0; -EINVAL bad alignment/length/wrap; -ERANGE the range reaches
 *          2^W; -EEXIST it overlaps a present entry; -ENOMEM.  On any error
 *          the table is unchanged (no node installed).
 */
int iopt_reserve(struct iopt *t, uint64_t iova, uint64_t len, uint64_t target);

/**
 * iopt_map() - Publish the leaves mapping [iova, iova + len) to
 *              [target, target + len).
 * @t, @iova, @len, @target: as for iopt_reserve().
 * @flags:  IOPT_R | IOPT_W (the device's permissions, == IODMA_PERM_*),
 *          optionally IOPT_NO_VA (fd-only) or IOPT_GPA (two-stage).
 *
 * Checks everything first (the nodes are there, every slot is empty), then
 * writes each leaf with a release store: a lookup sees each block mapped or
 * not, never half.  After a successful iopt_reserve() of the same range
 * and target with no writer in between it cannot fail.
 *
 * Context: writer (see iopt_reserve()).
 * Return:  0; -EINVAL bad alignment/length/wrap/flags; -ERANGE the range
 *          reaches 2^W; -EEXIST overlaps a present entry; -ENOMEM a node is
 *          missing (the range was not reserved).  On error nothing is mapped.
 */
int iopt_map(struct iopt *t, uint64_t iova, uint64_t len, uint64_t target,
	     uint64_t flags);

/**
 * iopt_unmap() - Clear every leaf inside [iova, iova + len).
 * @t:        table.
 * @iova:     multiple of the granule.
 * @len:      bytes; > 0, multiple of the granule, no wrap.
 * @unmapped: out, optional: bytes of leaves cleared (gaps not counted).
 *
 * Gaps are allowed (DmaTarget::unmap_dma); a leaf that the range would
 * bisect is refused before anything is cleared.  Each leaf is cleared with
 * a release store; nodes stay hooked until iopt_prune() (see "Node
 * lifetime").  Never allocates.  When this returns no
 * lookup that *starts* afterwards finds the range; a lookup already under
 * way may still return a leaf it loaded before: waiting for those is the
 * owner's access-section wait.
 *
 * Context: writer (see iopt_reserve()).
 * Return:  0; -EINVAL bad alignment/length/wrap, or a leaf crosses the
 *          range's start or end; -ERANGE the range reaches 2^W.  On error
 *          nothing was cleared.
 */
int iopt_unmap(struct iopt *t, uint64_t iova, uint64_t len, uint64_t *unmapped);

/**
 * iopt_prune() - Unhook the nodes under [iova, iova + len) that hold no
 *                entry, and retire them.
 * @t, @iova, @len: as for iopt_unmap().
 *
 * Separate from iopt_unmap() so that an unmap whose backend call fails can
 * be undone with iopt_map() alone (the nodes are still hooked: it cannot
 * fail); the owner prunes once the unmap is final.  Runs
 * iopt_prune_empty() first.  Each unhook is a
 * release store of 0 to the parent slot; a reader already inside the node
 * reads zeros.  Never allocates.
 *
 * Context: writer (see iopt_reserve()).
 * Return:  0; -EINVAL bad alignment/length/wrap; -ERANGE the range reaches
 *          2^W.  On error nothing changed.
 */
int iopt_prune(struct iopt *t, uint64_t iova, uint64_t len);

/**
 * iopt_mark_empty() - Put the empty nodes under [iova, iova + len) on the
 *                     candidate list.
 * @t, @iova, @len: as for iopt_unmap().
 *
 * For nodes that no unmap emptied: those an iopt_reserve() installed for a
 * map that never came (the backend refused it).  Never allocates.
 *
 * Context: writer (see iopt_reserve()).
 * Return:  0; -EINVAL bad alignment/length/wrap; -ERANGE the range reaches
 *          2^W.  On error nothing changed.
 */
int iopt_mark_empty(struct iopt *t, uint64_t iova, uint64_t len);

/**
 * iopt_prune_empty() - Unhook and retire the nodes unmaps left empty.
 * @t: table.
 *
 * Every node whose last entry an iopt_unmap() cleared is remembered (once,
 * in iopt_stats.candidates); this visits only those: a node filled again
 * since is dropped from the list, an empty one is unhooked (release store
 * of 0 to its parent's slot) and retired, and a parent left empty by that
 * is visited too.  O(candidates), whatever the table's size: the owner's
 * way to bound memory without scanning the table.  Never allocates.
 *
 * Context: writer (see iopt_reserve()).
 * Return:  how many nodes were retired.
 */
size_t iopt_prune_empty(struct iopt *t);

/**
 * iopt_retired_take() - Detach the list of nodes pruned so far.
 * @t: table.
 *
 * Context: writer (see iopt_reserve()).
 * Return:  the list (NULL if empty), for iopt_retired_free().
 */
void *iopt_retired_take(struct iopt *t);

/**
 * iopt_retired_free() - Free a list from iopt_retired_take().
 * @list: the list, or NULL.
 *
 * Context: any thread, no lock, but only once no reader can still be
 *          inside those nodes: after waiting for every lookup under way
 *          when they were unhooked (the domain: xlate_wait_walks()).
 * Return:  how many nodes were freed.
 */
size_t iopt_retired_free(void *list);

/**
 * iopt_retired_join() - One list of two from iopt_retired_take().
 * @a, @b: lists, or NULL.
 *
 * Context: any thread; the lists are the caller's.
 * Return:  the list holding the nodes of both.
 */
void *iopt_retired_join(void *a, void *b);

/**
 * iopt_hole() - Bytes from @iova to the first present leaf, at most @max.
 * @t:    table.
 * @iova: any address.
 * @max:  cap, > 0 (e.g. the bytes left in a request); @iova + @max - 1
 *        must not wrap (else it is clipped at 2^64 - 1).
 *
 * For fault reports: "not mapped for this many bytes".  Skips empty
 * subtrees whole.  0 if @iova itself is mapped.
 *
 * Context: lock-free reader like iopt_lookup(), inside an access
 *          section (a result racing a writer describes some state during
 *          the call); or the writer itself, for whom it is exact (the
 *          domain's overlap check of a map).
 * Return:  the length of the hole starting at @iova, <= @max.
 */
uint64_t iopt_hole(const struct iopt *t, uint64_t iova, uint64_t max);

/**
 * iopt_get_stats() - Memory and entry counts.
 * @t:  table.
 * @st: out.
 *
 * Context: writer side (serialised with reserve/map/unmap).
 */
void iopt_get_stats(const struct iopt *t, struct iopt_stats *st);

#endif /* IODMA_IOPT_H */
