/* SPDX-License-Identifier: MIT */
/*
 * domain_priv.h - the inside of a domain, shared by domain.c (bookkeeping,
 * backend calls, listeners), xlate.c (IOTLB, translation, faults, dirty
 * log) and dma.c.
 *
 * Lock order: map_lock -> table_lock -> (xlate's internal locks).
 *   map_lock    serialises every change: map, unmap, listeners, caps,
 *               claims, enable; held while calling the backend and the
 *               listeners.
 *   table_lock  rwlock over the B-tree's structure: writers (already holding
 *               map_lock) take it for writing only around btree_insert /
 *               btree_remove; translation misses take it for reading.
 * The IOTLB is lock-free (see xlate.c).  Translation never takes map_lock.
 *
 * Unmap ordering (DESIGN.md "Before unmap returns"), as domain.c does it:
 *   1. translation of the range stops FIRST, under map_lock:
 *      xlate_unmap_begin(d) makes the unmap sequence odd (no IOTLB fill
 *      starts from the table); the records leave the table (one record,
 *      after btree_preload so it can be put back) or are marked
 *      MAP_F_DYING (several, or one that could not be preloaded:
 *      domain_lookup() treats them as absent), under table_lock for
 *      writing; xlate_unmap_end(d, range) makes the sequence even and new
 *      and drops every IOTLB entry that may hold the range (waiting for a
 *      slot being filled; a filler that looked the table up before sees
 *      the sequence changed and publishes nothing).  Its seq_cst writes
 *      are the unmapper's half of the access-section handshake (xlate.c);
 *   2. the backend unmaps each contiguous run (on failure the runs already
 *      unmapped are re-mapped and the records restored exactly: nothing
 *      changed), flushes its IOTLB, and the listeners are told: none of
 *      them can translate the range any more;
 *   3. dying records leave the table; claims and counters are updated;
 *   4. map_lock dropped, then xlate_wait_sections(d, range): every access
 *      section of another thread that recorded a piece of the range has
 *      ended (a futex wait on each such section; other sections, and
 *      preempted readers elsewhere, are not waited for);
 *   5. return.
 * Whole-domain changes (refresh_caps, set_enabled, unmap_all, iotlb flush)
 * bump the stage-1 generation instead (xlate_invalidate_begin/end): every
 * entry goes.  unmap_all and set_enabled then wait for every section that
 * recorded a range of the domain (range [0, 2^64 - 1]); refresh_caps keeps
 * every mapping valid and waits for nothing.
 */
#ifndef IODMA_DOMAIN_PRIV_H
#define IODMA_DOMAIN_PRIV_H

#include <stdatomic.h>

#include <iodma/domain.h>
#include <iodma/xlate.h>

#include "btree.h"
#include "iova.h"
#include "util.h"

/* map_rec.flags */
#define MAP_F_NO_VA    0x1u /* fd-only mapping: no host address */
#define MAP_F_GPA      0x2u /* target is a guest-physical address (two-stage) */
#define MAP_F_CLAIMED  0x4u /* the map claimed its IOVA space (iova_claim) */
#define MAP_F_INSIDE   0x8u /* the map lies inside an IOVA allocation and is
			     * counted there (iova_claim, *claimed = false) */
#define MAP_F_DYING    0x10u /* being unmapped: translation treats it as
			     * absent; only seen under map_lock inside one
			     * unmap (domain.c) */

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

	os_rwlock_t table_lock;         /* protects table's structure */
	struct btree table;             /* iova -> struct map_rec */

	struct iova_alloc *iova;        /* thread-safe on its own */

	/* Translation (xlate.c).  gen, enabled and xl are read by every
	 * translation; the table above and useq below are written by every
	 * map or unmap, so padding keeps them a cache line away (the domain
	 * comes from calloc: no 64-byte alignment to rely on).  The hit path
	 * reads the memory pointer from xl, not from the first line, which
	 * map_lock shares. */
	char gen_pad[IODMA_CACHELINE];
	_Atomic uint64_t gen;           /* stage-1 generation; odd while changing */
	_Atomic bool enabled;           /* false: identity over memory */
	struct xlate_state *xl;         /* IOTLB, faults, dirty log, stats */
	char useq_pad[IODMA_CACHELINE];
	_Atomic uint64_t useq;          /* unmap sequence; odd while records
					 * leave the table */
};

/* ---- domain.c, for xlate.c and dma.c ------------------------------------ */

/* The mapping that contains @iova, copied into *@out.  Takes table_lock for
 * reading; safe from any thread.  Returns 0 or -ENOENT. */
int domain_lookup(struct iodma_domain *d, uint64_t iova, struct map_lookup *out);

/* ---- xlate.c, for domain.c ---------------------------------------------- */

/* Allocate the IOTLB (opts->iotlb_entries), fault log, stats.
 * Returns 0, -EINVAL (entries not a power of two) or -ENOMEM. */
int xlate_init(struct iodma_domain *d, const struct iodma_domain_opts *opts);
void xlate_fini(struct iodma_domain *d);

/* Whole-IOTLB invalidation around a change of the domain as a whole
 * (set_enabled, refresh_caps, unmap_all): generation odd, then even and
 * new.  Called with map_lock held. */
void xlate_invalidate_begin(struct iodma_domain *d);
void xlate_invalidate_end(struct iodma_domain *d);

/* Steps 2 and 4 of the unmap ordering, around the records of
 * [iova, iova + len) leaving the table.  Called with map_lock held. */
void xlate_unmap_begin(struct iodma_domain *d);
void xlate_unmap_end(struct iodma_domain *d, uint64_t iova, uint64_t len);

/* Step 4 of the unmap ordering: wait until every access section of another
 * thread that recorded a range of @d overlapping [iova, last] (or that
 * overflowed) has ended.  Called after the range stopped translating (a
 * seq_cst step: xlate_unmap_end or xlate_invalidate_end), WITHOUT map_lock
 * (a section's owner may be waiting for it).  Never sleeps on a timer:
 * spins briefly, then sleeps on the section's futex word. */
void xlate_wait_sections(struct iodma_domain *d, uint64_t iova, uint64_t last);

/* Domain destroy: wait for the other threads' sections that recorded @d
 * (xlate_wait_sections over everything), and drop @d from the calling
 * thread's own open section, whose end must not look at @d any more. */
void xlate_forget_domain(struct iodma_domain *d);

/* For tests: unmappers now sleeping on the calling thread's section; does
 * the calling thread hold a section record. */
uint32_t xlate_test_section_waiters(void);
bool xlate_test_has_record(void);
size_t xlate_test_records(void); /* records in the registry */

#endif /* IODMA_DOMAIN_PRIV_H */
