/* SPDX-License-Identifier: MIT */
/*
 * xlate.c - device-side translation: IOVA -> host slices with permission
 * checks over the domain's IO page table, the fault log, dirty logging and
 * the translation counters.
 *
 * Translation
 *   Every translation walks d->pt (iopt.h) with seq_cst loads (plain loads
 *   on x86) and no lock: a leaf holds the host VA (or the GPA of a
 *   two-stage mapping, then looked up in the memory's regions under
 *   liburcu's read side, or the IOVA of an fd-only mapping, which has no
 *   host address).  Nothing is cached in front of the table, so nothing
 *   needs filling or invalidating.  iodma_translate() and
 *   iodma_translate_one() have a path with no call and no stack frame for
 *   the common case (a valid request outside a section, one host-VA leaf
 *   holding it, no dirty log for a write): fast_hit(), after one compare
 *   of the IOVA with d->xl_limit[perm] (0 while the domain is disabled,
 *   for perm 0, and for writes while the dirty log is on); on x86-64
 *   iodma_translate_one() has it written out in assembly; everything else
 *   goes step by step (xlate_step: one leaf, then following leaves while
 *   they stay host-contiguous), and faults are described by the span of
 *   leaves that fail alike (pt_span) or the hole up to the next leaf
 *   (iopt_hole).
 *
 * Page-table walks and node lifetime
 *   The table's nodes are unhooked only by a prune (domain.c), and freed
 *   only once no walk that could have loaded a pointer to them is still
 *   under way.  Each walk bumps its thread's walk counter (struct reader,
 *   on a line of its own; a fast path's walk, the thread's counter in the
 *   domain's stats shard, struct stat_shard, which also counts its hits)
 *   to odd before its first load and to even after its last (release),
 *   with only a compiler barrier between: the freeing
 *   side (xlate_wait_walks) unhooks, then runs membarrier(2)
 *   (PRIVATE_EXPEDITED: every running thread of the process executes a full
 *   barrier), then waits for every counter it sees odd to move.  A walk
 *   whose odd store was not visible to that scan started its loads after
 *   the barrier, so it loads the unhooked (zero) slot, never the node.
 *   Where membarrier is not available (decided once, before the first
 *   domain: old kernels, valgrind, ThreadSanitizer builds) the walker
 *   issues a seq_cst fence after its odd store and the freer one before
 *   its scan: the store-buffering pattern again (the fast paths are off
 *   then: fast_refresh()).  A fast walk that does not serve a hit puts its
 *   counter back to the even value it started from instead of +2 (so that
 *   the counter counts hits); a waiter that saw the odd value then sees it
 *   change all the same.  A thread that cannot get
 *   a record counts its walks in anon_walks (seq_cst RMWs).  Walks never
 *   block, so the wait is at most a preemption; it runs without map_lock,
 *   and prunes are rare (domain.c "Page-table memory").
 *
 * Access sections
 *   Each thread that opens a section gets a record (struct reader) from a
 *   process-wide registry: a push-only list of records that are recycled,
 *   never freed (a thread's exit, seen through os_thread_on_exit(), closes
 *   a section it left open and gives the record back).  iodma_access_begin
 *   and end still take liburcu's read side as well, so the rare global waits
 *   (region removal, dirty-log stop, set_resolver, domain destroy) keep
 *   os_synchronize_rcu(); only unmap and set_enabled wait per range.
 *
 *   A record holds the ranges the open section translates in: {domain,
 *   page-rounded first, last, write}, up to SECT_RANGES, and a 32-bit state
 *   word = (section sequence << 6) | ALL | number of ranges, which is also
 *   the futex word.  Every translate entry point (translate, xlate_next,
 *   check_range, read, write), inside a section, records the requested
 *   range BEFORE its page-table walk: nothing if a range of the
 *   same domain already covers it (with the write flag when needed);
 *   otherwise it appends a range or extends one it touches, with release
 *   stores of the range's fields followed by one seq_cst store of the state
 *   word (the publish, A).  A full record merges into the range of that
 *   domain that grows least; with no range of that domain it sets ALL: the
 *   section then overlaps every range of every domain.  The outermost end
 *   of a section that published anything stores state = (sequence + 1) with
 *   no ranges (seq_cst) and, if an unmapper sleeps on it, wakes it.  A
 *   section that translated nothing writes nothing shared at all.
 *   A call that appended a range and then failed having given nothing (no
 *   slice, no byte copied, no passed check) takes that range back
 *   (sect_retract: the state again, one range fewer, same sequence, and a
 *   wake-up if an unmapper sleeps on it), so that an unmap of it never
 *   waits for the rest of the section: a device model that faults on a
 *   fresh IOVA and is then preempted inside its section would otherwise
 *   hold up every unmap of that IOVA for a time slice.  Only the last range
 *   is taken back, and only while nothing was published after it, so the
 *   ranges covering what the section holds are never touched; a waiting
 *   unmapper re-reads the state at each change and stops waiting when the
 *   sequence moved or no published range overlaps its range any more (a
 *   range re-appended at the same index after a retraction was published
 *   after the unmapper's scan, so its walk sees the cleared leaves: waiting
 *   for it is at worst not needed).
 *
 *   Unmap (domain.c) first stops the range translating, under map_lock:
 *   iopt_unmap() clears the range's leaves and xlate_stop() issues a
 *   seq_cst fence (X); set_enabled stores d->enabled (seq_cst) before X.
 *   After dropping map_lock the unmapper scans the registry
 *   (xlate_wait_sections): for each record it loads the state (seq_cst, R),
 *   and waits for the sequence to move if the section published ALL or a
 *   range of this domain overlapping the unmapped one.
 *
 *   Why no section is missed (store buffering): the reader does A, then
 *   loads d->enabled and the table's entries with seq_cst loads (L); the
 *   unmapper clears the leaves (C), then X, then R.  All of A, L, X and R
 *   are in the single total order S.  If R does not see A, R precedes A in
 *   S (coherence), so X < R < A < L in S; C is sequenced before the fence X,
 *   so L sees C (or later): the reader finds the range unmapped.  If R sees
 *   A (or a later state of the same section; the release/acquire pair also
 *   makes the range fields visible), the unmapper waits for the section.
 *   The range fields only grow while a section is open and are rewritten
 *   only after its end (which moves the sequence), so a half-updated or
 *   newer view leads to a wait that is at worst not needed.
 *   A new thread's record is pushed (seq_cst) before its first publish, so
 *   the scan, which loads the list head after X, finds every record that
 *   could matter.  The wait: spin briefly on the state, then count itself
 *   in waiters (seq_cst RMW), re-load the state (seq_cst) and FUTEX_WAIT on
 *   its current value; the end stores the state (seq_cst) and then loads
 *   waiters (seq_cst): one of the two sees the other, so no wake-up is
 *   lost.  The end's store is a release that the unmapper's final load
 *   acquires: every access the section made through its slices happens
 *   before the unmapper returns.  A thread whose record could not be
 *   allocated counts its section in anon_sections (seq_cst RMW before its
 *   lookups): an unmapper that sees any falls back to a grace period.  The
 *   unmapper never waits for its own thread's section (it cannot end
 *   first).  The translate path outside a section adds one TLS load and a
 *   branch.
 *
 * Dirty log
 *   One bit per granule (the domain alignment when logging started) over
 *   the whole 64-bit IOVA space, as a sparse radix tree: the granule page
 *   number (pfn) is decoded as
 *     [ top: top_bits | mid: 9 bits ... (levels - 1 of them) | leaf: 15 ]
 *   The top array is allocated at start; mid nodes (512 pointers) and
 *   leaves (512 words = 32768 granules) are installed lazily by CAS (the
 *   loser frees its copy).  Bits are set with atomic_fetch_or and read and
 *   cleared with atomic exchange / fetch_and, all seq_cst.  The log is
 *   published as an RCU pointer; stop unpublishes it, waits a grace period,
 *   frees it.
 *
 *   A write through a slice held across a harvest (translate for write,
 *   get_and_clear, then the device writes: libvfio-user issue 595) must not
 *   be lost.  The log's harvest word counts harvests started (high half)
 *   and under way (low half); get_and_clear adds (1 << 32) + 1 before it
 *   clears any bit, subtracts 1 after the last, then fences.  A write
 *   translation inside a section snapshots the word (seq_cst load) after
 *   publishing its range and before its marks.  The section's outermost end
 *   fences, re-loads the word, and re-marks the whole range if a harvest
 *   was under way at a snapshot, or another one started since, or the log
 *   changed (started during the section).  Argument, per bitmap word (all
 *   marks M, clears C, the counter updates I1/I2 and the snapshots are
 *   seq_cst): a harvest whose clear C loses a mark M of this section has
 *   M before C.  If its I1 preceded the snapshot, then I2 did not (else C
 *   preceded the snapshot, hence M), so it was under way: re-mark.  If I1
 *   followed the snapshot, either the end's load sees it (re-mark, which
 *   follows every write of the section, so the next harvest reports it) or
 *   the end's fence precedes the harvest's closing fence in S, and then
 *   every write of the section is visible to what the harvester reads after
 *   get_and_clear returns (it copies the new data).  The fences are needed
 *   because the device's writes are plain stores, which a load may pass.
 *   A harvest therefore never waits for a section.  A write range that did
 *   not fit a full record sets the log's lost flag instead.
 *
 * Locks (after domain_priv.h's map_lock):
 *   res_lock   serialises set_resolver (held across its grace period);
 *   dirty_lock serialises dirty start/stop (never held while waiting, so
 *              start may run inside an access section);
 *   fault_lock protects the fault ring and its counters.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include <iodma/xlate.h>
#include <iodma/memory.h>

#include "domain_priv.h"
#include "memory_priv.h"
#include "util.h"

#define IOTLB_DEFAULT_ENTRIES 1024 /* validated only (API) */
#define FAULT_LOG_DEFAULT     256
#define NR_SHARDS             64

/* Translation counters of the threads sharing one slot.  @walk is the
 * fast paths' walk counter of the slot's owner (only the first NR_SHARDS
 * slots, which have one owner each, take the fast paths): odd while one of
 * its walks of this domain's table is under way; +2 once a walk served a
 * hit, back to its start value when the walk falls back to the full path
 * (which counts on its own).  So walk / 2 is that thread's fast hits,
 * exact and monotonic for a reader, and the hit costs no counter store of
 * its own. */
struct stat_shard {
	_Alignas(IODMA_CACHELINE) _Atomic uint64_t hits;
	_Atomic uint64_t misses;
	_Atomic uint64_t resolver_calls;
	_Atomic uint64_t walk;
};

struct resolver {
	iodma_resolver_fn fn;
	void *arg;
};

#define DIRTY_LEAF_BITS  15
#define DIRTY_LEAF_WORDS (1u << (DIRTY_LEAF_BITS - 6))
#define DIRTY_NODE_BITS  9
#define DIRTY_NODE_SIZE  (1u << DIRTY_NODE_BITS)
#define DIRTY_TOP_MAX    12 /* at most 4096 top slots (32 KiB) */

struct dirty_log {
	unsigned int gshift;    /* log2 of the granule */
	unsigned int levels;    /* pointer levels above the leaves (>= 1) */
	unsigned int top_bits;  /* pfn bits decoded by the top array */
	_Atomic bool lost;      /* a leaf could not be allocated, or a write
				 * could not be tracked (section overflow):
				 * report every granule dirty until logging
				 * stops */
	_Atomic uint64_t harvest; /* (harvests started << HV_GEN_SHIFT) |
				 * harvests under way (get_and_clear) */
	_Atomic(void *) top[];  /* 1 << top_bits slots */
};

#define HV_GEN_SHIFT   32
#define HV_ACTIVE_MASK 0xffffffffull

struct xlate_state {
	/* Read-mostly: the translate path. */
	unsigned int page_shift;        /* log2 host page: section ranges */
	struct stat_shard *shards;      /* NR_SHARDS + 1: the last one is
					 * shared by threads past the first
					 * NR_SHARDS, with atomic adds */
	_Atomic(struct dirty_log *) dirty;      /* RCU; NULL = logging off */
	_Atomic(struct resolver *) resolver;    /* RCU; NULL = none */
	struct resolver res_slot[2];    /* the one not published is free */
	void *raw;                      /* allocation holding all of this */

	_Alignas(IODMA_CACHELINE) _Atomic uint64_t invalidations; /* flushes */
	_Atomic uint64_t stops;         /* xlate_stop() calls: map_lock */

	os_mutex_t res_lock;            /* serialises set_resolver; protects
					 * res_slot */
	os_mutex_t dirty_lock;          /* serialises dirty start/stop */
	os_mutex_t fault_lock;          /* protects the fields below */
	struct iodma_fault *faults;     /* ring of fault_cap records */
	uint32_t fault_cap;
	uint32_t fault_head;            /* oldest record */
	uint32_t fault_count;
	uint64_t faults_total;
	uint64_t faults_dropped;
};

/* ---- access-section records (see "Access sections" above) ---- */

#define SECT_RANGES   16        /* ranges one record keeps per section */
#define ST_NR_MASK    0x1fu     /* state: ranges published (0..16) */
#define ST_ALL        0x20u     /* state: overflow, overlaps everything */
#define ST_SEQ_SHIFT  6         /* state: section sequence above this */
#define ST_SEQ_ONE    (1u << ST_SEQ_SHIFT)

/* A range a section translates in, as unmappers read it.  It only grows
 * while the section is open (first down, last up, write 0 -> 1). */
struct sect_range {
	_Atomic(struct iodma_domain *) d;
	_Atomic uint64_t first;         /* page-rounded, inclusive */
	_Atomic uint64_t last;
	_Atomic uint32_t write;
};

/* The owner's dirty snapshot of a write range (never read by others). */
struct sect_dirty {
	struct dirty_log *dl;           /* log at the first snapshot, or NULL */
	uint64_t hgen;                  /* its harvest generation then */
	bool snap;                      /* a snapshot was taken */
	bool remark;                    /* re-mark at the end regardless */
};

/* One thread's access-section record, cache-line aligned (reader_get()).
 * Three kinds of line, so that an unmapper's registry scan costs one
 * transfer per record whose owner translated since, and the transfers of
 * several records overlap:
 *   the registry line: the link and in_use, written when a thread takes or
 *     gives back the record, so the scan follows the list from its own
 *     cache instead of waiting, record after record, for each owner's
 *     line to come back;
 *   the published line(s): state, waiters and the ranges, state and the
 *     first range on one line (what the scan reads of a section with one
 *     range: one line);
 *   the owner's lines: the dirty snapshots (never read by others) and the
 *     walk counter (read only by xlate_wait_walks()). */
struct reader {
	struct reader *next;            /* registry link, set before publish */
	_Atomic uint32_t in_use;        /* owned by a live thread */
	/* The futex word: (sequence << ST_SEQ_SHIFT) | ST_ALL | ranges.
	 * Written by the owner only; the sequence moves at each outermost
	 * end of a section that published a range. */
	_Alignas(IODMA_CACHELINE) _Atomic uint32_t state;
	_Atomic uint32_t waiters;       /* unmappers sleeping on state */
	struct sect_range rng[SECT_RANGES];
	_Alignas(IODMA_CACHELINE) struct sect_dirty dirty[SECT_RANGES];
	/* Page-table walks of the owner (odd while one is under way), on a
	 * line of its own: written by every translation, read only by
	 * xlate_wait_walks(). */
	_Alignas(IODMA_CACHELINE) _Atomic uint32_t walk;
	void *raw;                      /* the allocation (never freed) */
};

static_assert(offsetof(struct reader, rng) + sizeof(struct sect_range) <=
	      offsetof(struct reader, state) + IODMA_CACHELINE,
	      "state and the first range share a cache line");

/* Flags for one translation step. */
#define XF_NOSTATS   0x1u /* do not count hits/misses */
#define XF_NORESOLVE 0x2u /* do not call the resolver */

#define NO_GPA UINT64_MAX

/* One host-contiguous run. */
struct run {
	char *va;
	uint64_t len;
	uint64_t gpa;   /* guest-physical address of va (two-stage or identity
			 * over memory), NO_GPA for a host-VA mapping */
};

/* ---- counters ------------------------------------------------------------ */

/* Add 1 to a counter of this thread's shard.  The first NR_SHARDS threads
 * own their shard and need no atomic read-modify-write; later threads
 * share one more shard and add atomically, so no increment is lost. */
static inline void stat_inc(struct xlate_state *xl, size_t field_off)
{
	unsigned int slot = shard_own();
	bool own = slot < NR_SHARDS;
	_Atomic uint64_t *c = (_Atomic uint64_t *)
		((char *)&xl->shards[own ? slot : NR_SHARDS] + field_off);

	if (own)
		atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
				      memory_order_relaxed);
	else
		atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

#define STAT_INC(xl, f) stat_inc((xl), offsetof(struct stat_shard, f))

/* ---- setup --------------------------------------------------------------- */

int xlate_init(struct iodma_domain *d, const struct iodma_domain_opts *opts)
{
	uint32_t entries = IOTLB_DEFAULT_ENTRIES, flog = FAULT_LOG_DEFAULT;
	size_t off_sh, off_f, total;
	struct xlate_state *xl;
	uintptr_t base;
	void *raw;

	assert(d);
	if (opts && opts->size >= offsetof(struct iodma_domain_opts, iotlb_entries) +
				  sizeof(opts->iotlb_entries) && opts->iotlb_entries)
		entries = opts->iotlb_entries;
	if (opts && opts->size >= offsetof(struct iodma_domain_opts, fault_log_entries) +
				  sizeof(opts->fault_log_entries) && opts->fault_log_entries)
		flog = opts->fault_log_entries;
	if (!is_pow2(entries))
		return -EINVAL;

	/* One allocation: state, shards, fault ring; cache aligned.  The
	 * IOTLB size is still validated (API), but nothing is cached: the IO
	 * page table is walked on every translation (see the file comment). */
	off_sh = (sizeof(*xl) + IODMA_CACHELINE - 1) & ~(size_t)(IODMA_CACHELINE - 1);
	off_f = off_sh + (NR_SHARDS + 1) * sizeof(struct stat_shard);
	total = off_f + (size_t)flog * sizeof(struct iodma_fault);
	raw = iodma_malloc(total + IODMA_CACHELINE);
	if (!raw)
		return -ENOMEM;
	base = ((uintptr_t)raw + IODMA_CACHELINE - 1) & ~(uintptr_t)(IODMA_CACHELINE - 1);
	memset((void *)base, 0, total);
	xl = (struct xlate_state *)base;
	xl->raw = raw;
	xl->page_shift = ilog2_u64(os_page_size());
	xl->shards = (struct stat_shard *)(base + off_sh);
	xl->faults = (struct iodma_fault *)(base + off_f);
	xl->fault_cap = flog;
	atomic_init(&xl->dirty, NULL);
	atomic_init(&xl->resolver, NULL);
	os_mutex_init(&xl->res_lock);
	os_mutex_init(&xl->dirty_lock);
	os_mutex_init(&xl->fault_lock);
	d->xl = xl;
	d->xl_shards = xl->shards;
	for (unsigned int p = 0; p < 4; p++)
		atomic_init(&d->xl_limit[p], 0);
	xlate_set_limit(d);
	return 0;
}

void xlate_set_limit(struct iodma_domain *d)
{
	bool on = atomic_load_explicit(&d->enabled, memory_order_relaxed);
	bool dirty = atomic_load_explicit(&d->xl->dirty, memory_order_relaxed);

	/* perm 0 is invalid: always the full path, which says so. */
	atomic_store_explicit(&d->xl_limit[IODMA_PERM_READ], on ? d->pt.fast_limit : 0,
			      memory_order_seq_cst);
	atomic_store_explicit(&d->xl_limit[IODMA_PERM_WRITE],
			      on && !dirty ? d->pt.fast_limit : 0, memory_order_seq_cst);
	atomic_store_explicit(&d->xl_limit[IODMA_PERM_RW],
			      on && !dirty ? d->pt.fast_limit : 0, memory_order_seq_cst);
}

static void dirty_free(struct dirty_log *dl);

void xlate_fini(struct iodma_domain *d)
{
	struct xlate_state *xl = d ? d->xl : NULL;

	if (!xl)
		return;
	dirty_free(atomic_load_explicit(&xl->dirty, memory_order_relaxed));
	os_mutex_destroy(&xl->res_lock);
	os_mutex_destroy(&xl->dirty_lock);
	os_mutex_destroy(&xl->fault_lock);
	iodma_free(xl->raw);
	d->xl = NULL;
}

/* ---- stopping translation ------------------------------------------------ */

void xlate_stop(struct iodma_domain *d)
{
	/* The fence X of the file comment: the leaf clears (or the enabled
	 * store) before it are seen by every walk that follows it in S.  It
	 * stays right after the clear (not later, before the scan): the
	 * sooner a translator sees the leaf gone, the fewer first touches of
	 * a dying mapping succeed, and each that does is a section the
	 * unmap must then wait for. */
	atomic_thread_fence(memory_order_seq_cst);
	/* Counted as an invalidation; callers hold map_lock, so a plain
	 * increment (no second locked instruction after the fence). */
	atomic_store_explicit(&d->xl->stops,
			      atomic_load_explicit(&d->xl->stops, memory_order_relaxed) + 1,
			      memory_order_relaxed);
}

IODMA_EXPORT void iodma_iotlb_flush(struct iodma_domain *d)
{
	if (!d)
		return;
	/* Nothing is cached in front of the IO page table: a translation
	 * always walks the current table.  Counted, as before. */
	atomic_fetch_add_explicit(&d->xl->invalidations, 1, memory_order_relaxed);
}

/* ---- access sections ----------------------------------------------------- */

/* The calling thread's section state.  Initial-exec TLS: one %fs-relative
 * load on the translate path instead of a __tls_get_addr() call. */
/* A guest-physical range the open section wrote through (two-stage or
 * identity write runs), for the memory's dirty log (memory.h): owner
 * private, re-marked at the section's end like the IOVA ranges. */
#define SECT_GPA 8

struct sect_gpa {
	struct iodma_memory *m;
	uint64_t first, last;   /* bytes, inclusive hull of the runs */
	uint64_t hgen;          /* harvests started at the first snapshot */
	bool remark;            /* re-mark at the end regardless */
};

struct sect_tls {
	unsigned int depth;     /* nesting of open sections */
	uintptr_t fast;         /* the translate fast paths may run: the byte
				 * offset of the own shard's walk counter;
				 * 0 = not now (inside a
				 * section, no record, no own shard, walkers
				 * fence); see fast_refresh() */
	bool anon;              /* the outermost one has no record (counted in
				 * anon_sections) */
	struct reader *r;       /* this thread's record, or NULL */
	uint64_t miss_left;     /* inside a resolver call: xlate_miss_left() */
	unsigned int ngpa;      /* entries in gpa[] */
	struct sect_gpa gpa[SECT_GPA];
};

static _Thread_local struct sect_tls tls __attribute__((tls_model("initial-exec")));

/* Every record ever made, newest first; records are recycled, never freed,
 * so the list only grows (by one per thread alive at the same time). */
static _Atomic(struct reader *) registry;
/* Outermost sections open on threads that could not get a record (out of
 * memory): an unmap that sees one falls back to os_synchronize_rcu(). */
static _Atomic uint64_t anon_sections;

static void reader_exit(void *arg);

/* A free record for this thread: a recycled one, else a new one pushed on
 * the registry.  NULL when out of memory (retried at the next begin). */
static struct reader *reader_get(void)
{
	struct reader *r, *head;

	for (r = atomic_load_explicit(&registry, memory_order_acquire); r; r = r->next) {
		uint32_t free_ = 0;

		if (atomic_load_explicit(&r->in_use, memory_order_relaxed) == 0 &&
		    atomic_compare_exchange_strong_explicit(&r->in_use, &free_, 1,
							    memory_order_acquire,
							    memory_order_relaxed))
			goto got;
	}
	{
		/* iodma_calloc() aligns to 16 only; records are never freed. */
		void *raw = iodma_calloc(1, sizeof(*r) + IODMA_CACHELINE);

		if (!raw)
			return NULL;
		r = (struct reader *)(((uintptr_t)raw + IODMA_CACHELINE - 1) &
				      ~(uintptr_t)(IODMA_CACHELINE - 1));
		r->raw = raw;
	}
	atomic_init(&r->in_use, 1);
	head = atomic_load_explicit(&registry, memory_order_relaxed);
	do {
		r->next = head;
	} while (!atomic_compare_exchange_weak_explicit(&registry, &head, r,
							memory_order_seq_cst,
							memory_order_relaxed));
got:
	if (os_thread_on_exit(reader_exit, r)) {
		/* No way to learn of this thread's exit: do not keep it. */
		atomic_store_explicit(&r->in_use, 0, memory_order_release);
		return NULL;
	}
	return r;
}

static void section_close(struct reader *r);

/* The thread exits: close a section it left open (so no unmap waits for
 * it forever) and give the record back for the next new thread. */
static void reader_exit(void *arg)
{
	struct reader *r = arg;

	if (tls.r == r) {
		if (tls.depth) {
			tls.depth = 0;
			section_close(r);
		}
		tls.r = NULL;
		tls.fast = 0;
	}
	atomic_store_explicit(&r->in_use, 0, memory_order_release);
}

/* Outermost begin: make sure the thread has a record. */
static __attribute__((noinline)) void section_open(void)
{
	if (!tls.r)
		tls.r = reader_get();
	if (!tls.r) {
		tls.anon = true;
		atomic_fetch_add_explicit(&anon_sections, 1, memory_order_seq_cst);
	}
}

static inline void section_begin(void)
{
	os_rcu_read_lock();
	tls.fast = 0; /* inside: translations record their range first */
	if (tls.depth++ == 0 && !tls.r)
		section_open();
}

static void dirty_mark_span(struct dirty_log *dl, uint64_t first, uint64_t last);

/* Publish @st, a state that frees waiters (the section ended or holds a
 * range fewer), and wake the unmappers waiting on it (sect_wait).  seq_cst
 * store and load: an unmapper counts itself in waiters, then loads the
 * state, so the two cannot both miss each other. */
static void sect_release(struct reader *r, uint32_t st)
{
	atomic_store_explicit(&r->state, st, memory_order_seq_cst);
	if (atomic_load_explicit(&r->waiters, memory_order_seq_cst))
		os_wake_all(&r->state);
}

/* Outermost end of a section that recorded something: re-mark the write
 * ranges a harvest may have cleared (file comment, "Dirty log"), then
 * publish the end (new sequence, no ranges) and wake the unmappers
 * waiting for it. */
static void section_close(struct reader *r)
{
	uint32_t st = atomic_load_explicit(&r->state, memory_order_relaxed);
	uint32_t nr = st & ST_NR_MASK;
	bool fenced = false;

	if (!(st & (ST_NR_MASK | ST_ALL)))
		return; /* nothing published: nobody can be waiting */
	for (uint32_t i = 0; i < nr; i++) {
		struct sect_dirty *sd = &r->dirty[i];
		struct iodma_domain *d;
		struct dirty_log *dl;
		uint64_t h, first, last;

		if (!sd->snap)
			continue;
		d = atomic_load_explicit(&r->rng[i].d, memory_order_relaxed);
		if (!d)
			continue; /* the domain was destroyed meanwhile */
		dl = atomic_load_explicit(&d->xl->dirty, memory_order_acquire);
		if (!dl)
			continue;
		if (!fenced) {
			/* The section's writes through its slices are plain
			 * stores: without a full fence the load below could
			 * pass them (x86 store buffer) and miss a harvest that
			 * then copies the page before they land.  Pairs with
			 * the fence at the end of a harvest. */
			atomic_thread_fence(memory_order_seq_cst);
			fenced = true;
		}
		h = atomic_load_explicit(&dl->harvest, memory_order_seq_cst);
		if (!sd->remark && dl == sd->dl && (h >> HV_GEN_SHIFT) == sd->hgen)
			continue;
		first = atomic_load_explicit(&r->rng[i].first, memory_order_relaxed);
		last = atomic_load_explicit(&r->rng[i].last, memory_order_relaxed);
		dirty_mark_span(dl, first, last);
	}
	sect_release(r, (st & ~(ST_NR_MASK | ST_ALL)) + ST_SEQ_ONE);
}

/* Outermost end: re-mark the guest-physical write ranges a harvest of the
 * memory's log may have cleared before the section's writes landed (the
 * argument of the file comment's "Dirty log", with the memory's harvest
 * word).  A shared log (vhost-user's) has no harvest word to look at: its
 * owner may have cleared the bits at any time, so those ranges are always
 * marked again, after every write of the section. */
static void section_gpa_close(void)
{
	atomic_thread_fence(memory_order_seq_cst); /* as in section_close() */
	for (unsigned int i = 0; i < tls.ngpa; i++) {
		struct sect_gpa *g = &tls.gpa[i];
		uint64_t h = memory_dirty_harvest(g->m);

		if (g->remark || (h >> 32) != g->hgen || memory_dirty_shared(g->m))
			memory_dirty_mark(g->m, g->first, g->last - g->first + 1);
	}
	tls.ngpa = 0;
}

static inline void section_end(void)
{
	assert(tls.depth > 0);
	if (--tls.depth == 0) {
		if (tls.ngpa)
			section_gpa_close();
		/* A section opened without a record may have got one for its
		 * walks since (walk_record): then both apply. */
		if (tls.r)
			section_close(tls.r);
		if (tls.anon) {
			tls.anon = false;
			atomic_fetch_sub_explicit(&anon_sections, 1, memory_order_seq_cst);
		}
	}
	os_rcu_read_unlock();
}

IODMA_EXPORT void iodma_access_begin(void)
{
	section_begin();
}

IODMA_EXPORT void iodma_access_end(void)
{
	section_end();
}

/* Take the dirty snapshot of write range @i of @r (after the range was
 * published): the log and its harvest word now.  A later snapshot of the
 * same range only adds reasons to re-mark. */
static void sect_snapshot(struct reader *r, uint32_t i, struct xlate_state *xl,
			  bool fresh)
{
	struct sect_dirty *sd = &r->dirty[i];
	struct dirty_log *dl = atomic_load_explicit(&xl->dirty, memory_order_acquire);
	uint64_t h = dl ? atomic_load_explicit(&dl->harvest, memory_order_seq_cst) : 0;

	if (fresh || !sd->snap) {
		sd->snap = true;
		sd->dl = dl;
		sd->hgen = h >> HV_GEN_SHIFT;
		sd->remark = (h & HV_ACTIVE_MASK) != 0;
	} else if (dl != sd->dl || (h >> HV_GEN_SHIFT) != sd->hgen ||
		   (h & HV_ACTIVE_MASK)) {
		sd->remark = true;
	}
}

/* Publish every change made to @r's ranges: the seq_cst store that pairs
 * with the unmapper's seq_cst load of the state (file comment). */
static inline void sect_publish(struct reader *r, uint32_t st)
{
	atomic_store_explicit(&r->state, st, memory_order_seq_cst);
}

/* Record, in the calling thread's open section, that it translates
 * [iova, iova + len) of @d (page-rounded), BEFORE the lookup.  Returns the
 * state it published when it appended a range of its own (which
 * sect_retract() may take back if the translation then fails having given
 * nothing), else 0. */
static __attribute__((noinline)) uint32_t
sect_record(struct iodma_domain *d, uint64_t iova, uint64_t len, bool write)
{
	struct reader *r = tls.r;
	struct xlate_state *xl = d->xl;
	uint64_t pmask = (1ull << xl->page_shift) - 1;
	uint64_t first = iova & ~pmask, last = range_last(iova, len) | pmask;
	uint64_t best_grow = UINT64_MAX;
	uint32_t st, nr, best = SECT_RANGES, i;

	if (!r) {
		/* No record: the unmapper falls back to a grace period; the
		 * dirty log cannot be told what to re-mark. */
		struct dirty_log *dl;

		if (write && (dl = atomic_load_explicit(&xl->dirty, memory_order_acquire)))
			atomic_store_explicit(&dl->lost, true, memory_order_seq_cst);
		return 0;
	}
	st = atomic_load_explicit(&r->state, memory_order_relaxed);
	nr = st & ST_NR_MASK;
	for (i = 0; i < nr; i++) {
		struct sect_range *e = &r->rng[i];
		uint64_t f, l, grow;
		uint32_t w;

		if (atomic_load_explicit(&e->d, memory_order_relaxed) != d)
			continue;
		f = atomic_load_explicit(&e->first, memory_order_relaxed);
		l = atomic_load_explicit(&e->last, memory_order_relaxed);
		w = atomic_load_explicit(&e->write, memory_order_relaxed);
		if (f <= first && l >= last && (w || !write))
			return 0; /* covered: already published before */
		if (w == write && (l == UINT64_MAX || first <= l + 1) &&
		    (f == 0 || f - 1 <= last)) {
			best = i; /* touches a range of the same kind: extend it */
			break;
		}
		/* Overflow choice: the range that grows least. */
		grow = (IODMA_MAX(l, last) - IODMA_MIN(f, first)) - (l - f);
		if (grow < best_grow) {
			best_grow = grow;
			best = i;
		}
	}
	if (i == nr && nr < SECT_RANGES) {
		struct sect_range *e = &r->rng[nr];

		/* A device model often translates the same range section
		 * after section: leave equal fields alone, so the line stays
		 * shared with the unmappers that read it (only the state word
		 * then moves).  A field not stored keeps a value published
		 * before, which the publish below orders as well. */
		if (atomic_load_explicit(&e->d, memory_order_relaxed) != d)
			atomic_store_explicit(&e->d, d, memory_order_release);
		if (atomic_load_explicit(&e->first, memory_order_relaxed) != first)
			atomic_store_explicit(&e->first, first, memory_order_release);
		if (atomic_load_explicit(&e->last, memory_order_relaxed) != last)
			atomic_store_explicit(&e->last, last, memory_order_release);
		if (atomic_load_explicit(&e->write, memory_order_relaxed) != (uint32_t)write)
			atomic_store_explicit(&e->write, write, memory_order_release);
		sect_publish(r, st + 1);
		r->dirty[nr].snap = false;
		if (write)
			sect_snapshot(r, nr, xl, true);
		return st + 1;
	}
	if (best < SECT_RANGES) {
		struct sect_range *e = &r->rng[best];
		uint64_t f = atomic_load_explicit(&e->first, memory_order_relaxed);
		uint64_t l = atomic_load_explicit(&e->last, memory_order_relaxed);

		/* Ranges only grow while the section is open, so an unmapper
		 * reading them half-updated still sees at least the old one. */
		if (first < f)
			atomic_store_explicit(&e->first, first, memory_order_release);
		if (last > l)
			atomic_store_explicit(&e->last, last, memory_order_release);
		if (write)
			atomic_store_explicit(&e->write, 1, memory_order_release);
		sect_publish(r, st);
		if (write)
			sect_snapshot(r, best, xl, false);
		return 0;
	}
	/* Full, and no range of this domain: the section now counts as
	 * touching everything; writes here can no longer be re-marked. */
	if (!(st & ST_ALL))
		sect_publish(r, st | ST_ALL);
	if (write) {
		struct dirty_log *dl = atomic_load_explicit(&xl->dirty, memory_order_acquire);

		if (dl)
			atomic_store_explicit(&dl->lost, true, memory_order_seq_cst);
	}
	return 0;
}

/* The translate entry points call this first: nothing outside a section.
 * Returns sect_record()'s token (0 outside a section). */
static inline uint32_t sect_note(struct iodma_domain *d, uint64_t iova,
				 uint64_t len, uint32_t perm)
{
	if (__builtin_expect(tls.depth != 0, 0))
		return sect_record(d, iova, len, (perm & IODMA_PERM_WRITE) != 0);
	return 0;
}

/* The translation that published @tok (sect_record) failed and gave its
 * caller nothing (no slice, no byte copied, no successful check): take its
 * range back, so that an unmap of it need not wait for the rest of the
 * section (a preempted thread's section could hold it for a time slice).
 * Only while @tok is still the state, i.e. that range is the last one and
 * nothing (a resolver's nested translation) published since.  The ranges
 * below it, which cover what the section holds, are untouched; unmappers
 * waiting on the state are woken to look again (sect_wait). */
static void sect_retract(uint32_t tok)
{
	struct reader *r = tls.r;

	if (!tok || !r || atomic_load_explicit(&r->state, memory_order_relaxed) != tok)
		return;
	r->dirty[(tok & ST_NR_MASK) - 1].snap = false;
	sect_release(r, tok - 1); /* same sequence, one range fewer */
}

/* Does @r's published state @st cover [iova, last] of @d? */
static bool sect_overlaps(struct reader *r, uint32_t st, struct iodma_domain *d,
			  uint64_t iova, uint64_t last)
{
	uint32_t nr = st & ST_NR_MASK;

	if (st & ST_ALL)
		return true;
	for (uint32_t i = 0; i < nr; i++) {
		struct sect_range *e = &r->rng[i];

		if (atomic_load_explicit(&e->d, memory_order_acquire) == d &&
		    atomic_load_explicit(&e->first, memory_order_acquire) <= last &&
		    atomic_load_explicit(&e->last, memory_order_acquire) >= iova)
			return true;
	}
	return false;
}

#define SECT_SPIN 200 /* relax hints before sleeping on the futex */

/* Is the section that published @st on @r still one to wait for, now
 * that @r's state reads @cur?  Not once its sequence moved (it ended), nor
 * once it no longer publishes a range overlapping [iova, last] of @d (it
 * took back the range of a failed translation, sect_retract()). */
static bool sect_still(struct reader *r, uint32_t st, uint32_t cur,
		       struct iodma_domain *d, uint64_t iova, uint64_t last)
{
	if ((cur >> ST_SEQ_SHIFT) != (st >> ST_SEQ_SHIFT))
		return false;
	return cur == st || ((cur & (ST_NR_MASK | ST_ALL)) &&
			     sect_overlaps(r, cur, d, iova, last));
}

/* Wait until the section that published @st on @r, which overlaps
 * [iova, last] of @d, has ended or no longer overlaps it. */
static void sect_wait(struct reader *r, uint32_t st, struct iodma_domain *d,
		      uint64_t iova, uint64_t last)
{
	uint32_t cur;

	for (int i = 0; i < SECT_SPIN; i++) {
		cur = atomic_load_explicit(&r->state, memory_order_acquire);
		if (cur != st) {
			if (!sect_still(r, st, cur, d, iova, last))
				return;
			st = cur;
		}
		os_cpu_relax();
	}
	atomic_fetch_add_explicit(&r->waiters, 1, memory_order_seq_cst);
	for (;;) {
		cur = atomic_load_explicit(&r->state, memory_order_seq_cst);
		if (!sect_still(r, st, cur, d, iova, last))
			break;
		st = cur;
		os_wait_on(&r->state, cur);
	}
	atomic_fetch_sub_explicit(&r->waiters, 1, memory_order_release);
}

void xlate_forget_domain(struct iodma_domain *d)
{
	struct reader *r = tls.r;
	uint32_t nr;

	if (!r || !tls.depth)
		return;
	nr = atomic_load_explicit(&r->state, memory_order_relaxed) & ST_NR_MASK;
	for (uint32_t i = 0; i < nr; i++) {
		if (atomic_load_explicit(&r->rng[i].d, memory_order_relaxed) == d) {
			atomic_store_explicit(&r->rng[i].d, NULL, memory_order_release);
			r->dirty[i].snap = false;
		}
	}
}

void xlate_wait_sections(struct iodma_domain *d, uint64_t iova, uint64_t last)
{
	struct reader *self = tls.r, *r;

	/* Called after the caller's xlate_stop() (the fence X of the file
	 * comment): every load below is seq_cst or follows one.
	 * Sections without a record (out of memory) are waited for as a
	 * whole: a grace period, or, inside the caller's own section (where a
	 * grace period would wait for itself), until none but the caller's
	 * is open. */
	if (atomic_load_explicit(&anon_sections, memory_order_seq_cst)) {
		if (tls.depth == 0)
			os_synchronize_rcu();
		else
			while (atomic_load_explicit(&anon_sections, memory_order_seq_cst) >
			       (uint64_t)tls.anon)
				os_cpu_relax();
	}
	/* Request every record's published line first: the lines the owners
	 * wrote since the last scan then come in together, not one after
	 * the other (a hint; the seq_cst loads below are what count). */
	for (r = atomic_load_explicit(&registry, memory_order_seq_cst); r; r = r->next)
		__builtin_prefetch((const void *)&r->state, 0);
	for (r = atomic_load_explicit(&registry, memory_order_seq_cst); r; r = r->next) {
		uint32_t st;

		if (r == self)
			continue; /* the caller's own section cannot end first */
		st = atomic_load_explicit(&r->state, memory_order_seq_cst);
		if (!(st & (ST_NR_MASK | ST_ALL)) || !sect_overlaps(r, st, d, iova, last))
			continue;
		sect_wait(r, st, d, iova, last);
	}
}

const void *xlate_section_self(void)
{
	if (!tls.depth)
		return NULL;
	if (tls.anon || !tls.r)
		return XLATE_SECT_ANON;
	return tls.r;
}

bool xlate_section_touches(const void *sect, struct iodma_domain *d,
			   uint64_t iova, uint64_t last)
{
	struct reader *r;
	uint32_t st;

	if (!sect)
		return false;
	if (sect == XLATE_SECT_ANON)
		return true; /* waited for as a whole: a grace period */
	r = (struct reader *)(uintptr_t)sect;
	st = atomic_load_explicit(&r->state, memory_order_seq_cst);
	/* The same test as xlate_wait_sections(): what it would wait for. */
	return (st & (ST_NR_MASK | ST_ALL)) && sect_overlaps(r, st, d, iova, last);
}

/* ---- page-table walks ----------------------------------------------------- */

/* Walks of threads that have no record (out of memory); seq_cst. */
static _Atomic uint64_t anon_walks;
/* Readers fence after announcing a walk: membarrier(2) is not available
 * (or this is a ThreadSanitizer build, which does not model it).  Decided
 * once, by xlate_global_init(), before the first domain exists. */
static _Atomic bool walk_fence;
static _Atomic int walk_init_state; /* 0 not yet, 1 deciding, 2 done */

void xlate_global_init(void)
{
	int st = 0;

	if (atomic_load_explicit(&walk_init_state, memory_order_acquire) == 2)
		return;
	if (atomic_compare_exchange_strong_explicit(&walk_init_state, &st, 1,
						    memory_order_acq_rel,
						    memory_order_acquire)) {
#if defined(__SANITIZE_THREAD__)
		atomic_store_explicit(&walk_fence, true, memory_order_relaxed);
#else
		atomic_store_explicit(&walk_fence, os_membarrier() != 0,
				      memory_order_relaxed);
#endif
		atomic_store_explicit(&walk_init_state, 2, memory_order_release);
		return;
	}
	while (atomic_load_explicit(&walk_init_state, memory_order_acquire) != 2)
		os_cpu_relax();
}

/* The first walk of a thread with no record yet. */
static __attribute__((noinline)) struct reader *walk_record(void)
{
	if (!tls.r)
		tls.r = reader_get();
	if (!tls.r)
		atomic_fetch_add_explicit(&anon_walks, 1, memory_order_seq_cst);
	return tls.r;
}

/* Recompute tls.fast (outside a section, once the thread has its record
 * and, on a platform with unique thread numbers, its own stats shard). */
static __attribute__((noinline)) void fast_refresh(void)
{
	unsigned int own = shard_own();

	/* The byte offset of the own shard's walk counter in the shard
	 * array (never 0), so that the hit path adds it to the array with
	 * no multiply. */
	tls.fast = !tls.depth && tls.r && own < NR_SHARDS &&
		   !atomic_load_explicit(&walk_fence, memory_order_relaxed) ?
		   own * (unsigned int)sizeof(struct stat_shard) +
		   (unsigned int)offsetof(struct stat_shard, walk) : 0;
}

/* Announce a walk of an IO page table (iopt.h "Node lifetime"): the
 * owner's walk counter goes odd.  Returns the record, or NULL when the
 * walk was counted in anon_walks instead. */
static inline __attribute__((always_inline)) struct reader *walk_begin(void)
{
	struct reader *r = tls.r;

	if (__builtin_expect(!r, 0)) {
		r = walk_record();
		if (!r)
			return NULL;
	}
	atomic_store_explicit(&r->walk,
			      atomic_load_explicit(&r->walk, memory_order_relaxed) + 1,
			      memory_order_relaxed);
	if (__builtin_expect(atomic_load_explicit(&walk_fence, memory_order_relaxed), 0))
		atomic_thread_fence(memory_order_seq_cst);
	else
		atomic_signal_fence(memory_order_seq_cst); /* membarrier's half */
	return r;
}

/* The walk is over: the counter goes even (release: every load of the
 * walk happens before a reclaimer that sees the new value frees). */
static inline __attribute__((always_inline)) void walk_end(struct reader *r)
{
	if (__builtin_expect(!r, 0)) {
		atomic_fetch_sub_explicit(&anon_walks, 1, memory_order_seq_cst);
		return;
	}
	atomic_store_explicit(&r->walk,
			      atomic_load_explicit(&r->walk, memory_order_relaxed) + 1,
			      memory_order_release);
}

#define WALK_SPIN 1000 /* relax hints before yielding */

_Atomic bool xlate_test_skip_walk_wait;

/* Wait while @c holds @w (odd: a walk under way). */
static void walk_wait(const _Atomic uint64_t *c, uint64_t w)
{
	for (unsigned int i = 0; atomic_load_explicit(c, memory_order_acquire) == w; i++) {
		if (i < WALK_SPIN)
			os_cpu_relax();
		else
			os_yield();
	}
}

bool xlate_wait_walks(struct iodma_domain *d)
{
	struct reader *r;
	unsigned int i;

	if (atomic_load_explicit(&xlate_test_skip_walk_wait, memory_order_relaxed))
		return true; /* tests only: the mechanism dropped */

	/* The writer's half of the handshake, after the caller unhooked the
	 * nodes: a full barrier on every thread (membarrier), or the seq_cst
	 * fence that pairs with the readers' own fences.  Then a walk not
	 * seen under way here started after the unhook and cannot reach the
	 * nodes; one seen under way is waited for (walks never block: this
	 * waits out at most a preemption). */
	if (atomic_load_explicit(&walk_fence, memory_order_relaxed))
		atomic_thread_fence(memory_order_seq_cst);
	else if (os_membarrier() != 0)
		return false; /* the readers do not fence: cannot tell */
	for (r = atomic_load_explicit(&registry, memory_order_seq_cst); r; r = r->next) {
		uint32_t w = atomic_load_explicit(&r->walk, memory_order_acquire);

		if (!(w & 1))
			continue;
		for (i = 0; atomic_load_explicit(&r->walk, memory_order_acquire) == w; i++) {
			if (i < WALK_SPIN)
				os_cpu_relax();
			else
				os_yield();
		}
	}
	/* The fast paths' walks of this table (struct stat_shard): a walk
	 * that falls back puts the counter back to its start value, so a
	 * later walk may show the same odd value again; waiting on for it
	 * is not needed but safe, and the full path it falls back to runs
	 * long with the counter even. */
	for (i = 0; i < NR_SHARDS; i++) {
		_Atomic uint64_t *c = &d->xl->shards[i].walk;
		uint64_t w = atomic_load_explicit(c, memory_order_acquire);

		if (w & 1)
			walk_wait(c, w);
	}
	for (i = 0; atomic_load_explicit(&anon_walks, memory_order_seq_cst); i++) {
		if (i < WALK_SPIN)
			os_cpu_relax();
		else
			os_yield();
	}
	return true;
}

/* ---- faults -------------------------------------------------------------- */

static void fault_record(struct iodma_domain *d, const struct iodma_fault *f)
{
	struct xlate_state *xl = d->xl;

	os_mutex_lock(&xl->fault_lock);
	if (xl->fault_count == xl->fault_cap) {
		/* Full: the oldest record gives way. */
		xl->fault_head = (xl->fault_head + 1) % xl->fault_cap;
		xl->fault_count--;
		xl->faults_dropped++;
	}
	xl->faults[(xl->fault_head + xl->fault_count) % xl->fault_cap] = *f;
	xl->fault_count++;
	xl->faults_total++;
	os_mutex_unlock(&xl->fault_lock);
}

IODMA_EXPORT size_t iodma_fault_pop(struct iodma_domain *d,
				    struct iodma_fault *out, size_t max)
{
	struct xlate_state *xl;
	size_t n = 0;

	if (!d || !out)
		return 0;
	xl = d->xl;
	os_mutex_lock(&xl->fault_lock);
	while (n < max && xl->fault_count) {
		out[n++] = xl->faults[xl->fault_head];
		xl->fault_head = (xl->fault_head + 1) % xl->fault_cap;
		xl->fault_count--;
	}
	os_mutex_unlock(&xl->fault_lock);
	return n;
}

static inline int fault_errno(const struct iodma_fault *f)
{
	return f->reason == IODMA_FAULT_PERMISSION ? -EACCES : -EFAULT;
}

/* ---- dirty log ----------------------------------------------------------- */

/* Shift of the pfn bits decoded at pointer level @k (0 = top). */
static inline unsigned int dirty_shift(const struct dirty_log *dl,
				       unsigned int k)
{
	return DIRTY_LEAF_BITS + DIRTY_NODE_BITS * (dl->levels - 1 - k);
}

/* The leaf holding @pfn's bit; allocated (CAS install) when @create.
 * NULL when absent (or, with @create, out of memory). */
static _Atomic uint64_t *dirty_leaf(struct dirty_log *dl, uint64_t pfn,
				    bool create)
{
	uint64_t top_mask = (1ull << dl->top_bits) - 1;
	_Atomic(void *) *slot = &dl->top[(pfn >> dirty_shift(dl, 0)) & top_mask];

	for (unsigned int k = 0;; k++) {
		bool leaf = k == dl->levels - 1;
		void *p = atomic_load_explicit(slot, memory_order_acquire);

		if (!p) {
			void *n, *expected = NULL;

			if (!create)
				return NULL;
			n = iodma_calloc(1, leaf ? DIRTY_LEAF_WORDS * sizeof(uint64_t)
					      : DIRTY_NODE_SIZE * sizeof(void *));
			if (!n)
				return NULL;
			if (atomic_compare_exchange_strong_explicit(
				    slot, &expected, n, memory_order_acq_rel,
				    memory_order_acquire)) {
				p = n;
			} else {
				iodma_free(n);
				p = expected;
			}
		}
		if (leaf)
			return p;
		slot = &((_Atomic(void *) *)p)[(pfn >> dirty_shift(dl, k + 1)) &
					       (DIRTY_NODE_SIZE - 1)];
	}
}

static void dirty_free_node(void *p, unsigned int depth, unsigned int levels)
{
	if (!p)
		return;
	if (depth < levels) {
		_Atomic(void *) *n = p;

		for (unsigned int i = 0; i < DIRTY_NODE_SIZE; i++)
			dirty_free_node(atomic_load_explicit(&n[i], memory_order_relaxed),
					depth + 1, levels);
	}
	iodma_free(p);
}

static void dirty_free(struct dirty_log *dl)
{
	if (!dl)
		return;
	for (uint64_t i = 0; i < (1ull << dl->top_bits); i++)
		dirty_free_node(atomic_load_explicit(&dl->top[i], memory_order_relaxed),
				1, dl->levels);
	iodma_free(dl);
}

/* Mark the granules of [first, last] dirty.  Inside a read-side section.
 * Every access is seq_cst: the dirty-race argument (file comment) orders
 * these marks against the harvest's clears in one total order. */
static void dirty_mark_span(struct dirty_log *dl, uint64_t first, uint64_t last_byte)
{
	uint64_t pfn = first >> dl->gshift;
	uint64_t last = last_byte >> dl->gshift;

	for (;;) {
		uint64_t leaf_last = pfn | ((1ull << DIRTY_LEAF_BITS) - 1);
		uint64_t hi = IODMA_MIN(last, leaf_last);
		_Atomic uint64_t *leaf = dirty_leaf(dl, pfn, true);

		if (!leaf) {
			atomic_store_explicit(&dl->lost, true, memory_order_seq_cst);
		} else {
			while (pfn <= hi) {
				unsigned int b = pfn & 63;
				uint64_t n = IODMA_MIN(hi - pfn + 1, 64 - (uint64_t)b);
				uint64_t mask = (n == 64 ? ~0ull : ((1ull << n) - 1)) << b;
				_Atomic uint64_t *w =
					&leaf[(pfn >> 6) & (DIRTY_LEAF_WORDS - 1)];

				/* Already set: no write, no shared line made dirty. */
				if ((atomic_load_explicit(w, memory_order_seq_cst) & mask) != mask)
					atomic_fetch_or_explicit(w, mask, memory_order_seq_cst);
				pfn += n;
			}
		}
		if (hi == last)
			break;
		pfn = hi + 1;
	}
}

/* Mark for a successful write translation. */
static inline void dirty_mark(struct xlate_state *xl, uint64_t iova,
			      uint64_t len)
{
	struct dirty_log *dl;

	if (!atomic_load_explicit(&xl->dirty, memory_order_relaxed))
		return;
	os_rcu_read_lock();
	dl = atomic_load_explicit(&xl->dirty, memory_order_acquire);
	if (dl)
		dirty_mark_span(dl, iova, range_last(iova, len));
	os_rcu_read_unlock();
}

/* Keep a write run's guest-physical range in the open section, with the
 * memory log's harvest word taken before the run is marked (section_end()
 * re-marks it if a harvest ran across the section).  Kept whether or not
 * the log runs: a log started while the section is open (a migration's
 * first step: vhost-user SET_LOG_BASE, iodma_memory_dirty_log_start())
 * must still see the writes the section makes through slices it took
 * before, or a page the first full copy sends before such a write lands
 * is never sent again (the kernel's vhost closes the same window by
 * taking every ring's mutex to set VHOST_F_LOG_ALL).  So a range kept
 * while the log was off is marked at the section's end if it is on by
 * then.  No room (more than SECT_GPA memories written in one section):
 * a running log reports everything dirty until it stops
 * (memory_dirty_set_lost); a log started after that within the section
 * is not told of that memory's writes. */
static void gpa_keep(struct iodma_memory *m, uint64_t gpa, uint64_t len)
{
	uint64_t h = memory_dirty_harvest(m), last = range_last(gpa, len);
	bool unlogged = !memory_dirty_logging(m);
	struct sect_gpa *g;
	unsigned int i;

	for (i = 0; i < tls.ngpa && tls.gpa[i].m != m; i++)
		;
	if (i == tls.ngpa) {
		if (i == SECT_GPA) {
			memory_dirty_set_lost(m);
			return;
		}
		g = &tls.gpa[tls.ngpa++];
		*g = (struct sect_gpa){ .m = m, .first = gpa, .last = last,
					.hgen = h >> 32,
					.remark = unlogged || (h & 0xffffffffu) != 0 };
		return;
	}
	g = &tls.gpa[i];
	g->first = IODMA_MIN(g->first, gpa);
	g->last = IODMA_MAX(g->last, last);
	if (unlogged || (h >> 32) != g->hgen || (h & 0xffffffffu))
		g->remark = true;
}

/* Mark a write run in the memory's guest-physical log (memory.h), where the
 * run has a guest-physical address; inside a section, keep it for the
 * re-mark at the section's end. */
static inline void gpa_mark(struct iodma_domain *d, const struct run *run)
{
	if (run->gpa == NO_GPA || !d->memory)
		return;
	os_rcu_read_lock();
	if (tls.depth)
		gpa_keep(d->memory, run->gpa, run->len);
	memory_dirty_mark(d->memory, run->gpa, run->len);
	os_rcu_read_unlock();
}

IODMA_EXPORT int iodma_dirty_log_start(struct iodma_domain *d)
{
	struct xlate_state *xl;
	struct dirty_log *dl;
	unsigned int gshift, need, levels, top_bits;
	int ret = 0;

	if (!d)
		return -EINVAL;
	xl = d->xl;
	/* map_lock first (lock order): the backend's calls are serialised by
	 * it, and the backend's log must start before any unmap can look at
	 * xlate_dirty_backend(). */
	os_mutex_lock(&d->map_lock);
	os_mutex_lock(&xl->dirty_lock);
	if (atomic_load_explicit(&xl->dirty, memory_order_relaxed)) {
		ret = -EALREADY;
		goto out;
	}
	gshift = ilog2_u64(atomic_load_explicit(&d->alignment, memory_order_relaxed));
	need = 64 - gshift > DIRTY_LEAF_BITS ? 64 - gshift - DIRTY_LEAF_BITS : 0;
	if (need <= DIRTY_TOP_MAX) {
		levels = 1;
		top_bits = need;
	} else {
		levels = 1 + (need - DIRTY_TOP_MAX + DIRTY_NODE_BITS - 1) / DIRTY_NODE_BITS;
		top_bits = need - DIRTY_NODE_BITS * (levels - 1);
	}
	dl = iodma_calloc(1, sizeof(*dl) + (sizeof(dl->top[0]) << top_bits));
	if (!dl) {
		ret = -ENOMEM;
		goto out;
	}
	dl->gshift = gshift;
	dl->levels = levels;
	dl->top_bits = top_bits;
	if (backend_dirty(d)) {
		/* The device's own writes (a passthrough device behind VFIO):
		 * the backend logs them, or nothing is logged at all. */
		ret = be_dirty_start(d, 1ull << gshift);
		if (ret) {
			iodma_free(dl);
			goto out;
		}
		d->dirty_pgsize = 1ull << gshift;
	}
	atomic_store_explicit(&xl->dirty, dl, memory_order_release);
	xlate_set_limit(d); /* writes leave the fast paths: they mark */
out:
	os_mutex_unlock(&xl->dirty_lock);
	os_mutex_unlock(&d->map_lock);
	return ret;
}

IODMA_EXPORT int iodma_dirty_log_stop(struct iodma_domain *d)
{
	struct xlate_state *xl;
	struct dirty_log *dl;

	if (!d)
		return -EINVAL;
	xl = d->xl;
	os_mutex_lock(&d->map_lock);
	os_mutex_lock(&xl->dirty_lock);
	dl = atomic_exchange_explicit(&xl->dirty, NULL, memory_order_acq_rel);
	xlate_set_limit(d);
	if (dl && d->dirty_pgsize) {
		be_dirty_stop(d);
		d->dirty_pgsize = 0;
	}
	os_mutex_unlock(&xl->dirty_lock);
	os_mutex_unlock(&d->map_lock);
	if (!dl)
		return -EINVAL;
	os_synchronize_rcu(); /* no thread still marks in it */
	dirty_free(dl);
	return 0;
}

uint64_t xlate_dirty_backend(struct iodma_domain *d)
{
	return d->dirty_pgsize;
}

void xlate_dirty_merge(struct iodma_domain *d, uint64_t iova, uint64_t pgsize,
		       const uint64_t *bitmap, uint64_t nbits)
{
	struct dirty_log *dl;

	os_rcu_read_lock();
	dl = atomic_load_explicit(&d->xl->dirty, memory_order_acquire);
	for (uint64_t i = 0; dl && i < nbits; i++) {
		uint64_t j = i;

		if (bitmap && !(bitmap[i / 64] & (1ull << (i % 64))))
			continue;
		/* A run of set bits: one mark. */
		while (j + 1 < nbits &&
		       (!bitmap || (bitmap[(j + 1) / 64] & (1ull << ((j + 1) % 64)))))
			j++;
		dirty_mark_span(dl, iova + i * pgsize, iova + (j + 1) * pgsize - 1);
		i = j;
	}
	os_rcu_read_unlock();
}

/* OR the low @n bits of @v into @bitmap at bit @o. */
static inline void bits_put(uint64_t *bitmap, uint64_t o, uint64_t v,
			    unsigned int n)
{
	unsigned int b = o & 63;

	bitmap[o >> 6] |= v << b;
	if (b && b + n > 64)
		bitmap[(o >> 6) + 1] |= v >> (64 - b);
}

IODMA_EXPORT int iodma_dirty_get_and_clear(struct iodma_domain *d,
					   uint64_t iova, uint64_t len,
					   uint64_t *bitmap, size_t words)
{
	uint64_t g, first, last, pfn, pages;
	struct dirty_log *dl;
	int ret = 0;

	if (!d || !bitmap || !range_valid(iova, len))
		return -EINVAL;
	os_rcu_read_lock();
	dl = atomic_load_explicit(&d->xl->dirty, memory_order_acquire);
	if (!dl) {
		ret = -EINVAL;
		goto out;
	}
	g = 1ull << dl->gshift;
	if (!is_aligned(iova, g) || !is_aligned(len, g)) {
		ret = -EINVAL;
		goto out;
	}
	pages = len >> dl->gshift;
	if ((pages + 63) / 64 > words) {
		ret = -ENOSPC;
		goto out;
	}
	memset(bitmap, 0, (size_t)((pages + 63) / 64) * sizeof(*bitmap));
	/* A harvest starts (generation + 1, one more under way) before any
	 * bit is cleared and ends after the last: sections that see either
	 * re-mark their write ranges at their end (file comment). */
	atomic_fetch_add_explicit(&dl->harvest, (1ull << HV_GEN_SHIFT) + 1,
				  memory_order_seq_cst);
	first = iova >> dl->gshift;
	last = first + pages - 1;
	pfn = first;
	while (pfn <= last) {
		uint64_t leaf_last = pfn | ((1ull << DIRTY_LEAF_BITS) - 1);
		uint64_t hi = IODMA_MIN(last, leaf_last);
		_Atomic uint64_t *leaf = dirty_leaf(dl, pfn, false);

		while (leaf && pfn <= hi) {
			unsigned int b = pfn & 63;
			unsigned int n = (unsigned int)IODMA_MIN(hi - pfn + 1, 64 - (uint64_t)b);
			uint64_t mask = (n == 64 ? ~0ull : ((1ull << n) - 1)) << b;
			_Atomic uint64_t *w = &leaf[(pfn >> 6) & (DIRTY_LEAF_WORDS - 1)];
			uint64_t old;

			if (!(atomic_load_explicit(w, memory_order_seq_cst) & mask))
				old = 0;
			else if (n == 64)
				old = atomic_exchange_explicit(w, 0, memory_order_seq_cst);
			else
				old = atomic_fetch_and_explicit(w, ~mask, memory_order_seq_cst);
			old = (old & mask) >> b;
			if (old)
				bits_put(bitmap, pfn - first, old, n);
			pfn += n;
		}
		if (hi == last)
			break;
		pfn = hi + 1;
	}
	atomic_fetch_sub_explicit(&dl->harvest, 1, memory_order_seq_cst);
	/* Pairs with the fence of a section's end: either that end sees this
	 * harvest and re-marks, or every write of the section is visible to
	 * whatever the caller reads after this returns (the page copy). */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&dl->lost, memory_order_seq_cst)) {
		/* Some writes could not be logged: everything may be dirty. */
		for (uint64_t o = 0; o < pages; o += 64) {
			unsigned int n = (unsigned int)IODMA_MIN(pages - o, 64);

			bitmap[o >> 6] = n == 64 ? ~0ull : (1ull << n) - 1;
		}
	} else if (backend_dirty(d)) {
		/* (dirty_pgsize is re-checked under map_lock below.) */
		/* The device's own writes, from the backend's log (outside
		 * the read side: the backend call may sleep). */
		os_rcu_read_unlock();
		os_mutex_lock(&d->map_lock);
		if (d->dirty_pgsize == g)
			ret = domain_dirty_get(d, iova, len, g, bitmap);
		os_mutex_unlock(&d->map_lock);
		return ret;
	}
out:
	os_rcu_read_unlock();
	return ret;
}

/* ---- the miss resolver ---------------------------------------------------- */

IODMA_EXPORT int iodma_xlate_set_resolver(struct iodma_domain *d,
					  iodma_resolver_fn fn, void *arg)
{
	struct xlate_state *xl;
	struct resolver *cur, *next = NULL;

	if (!d)
		return -EINVAL;
	xl = d->xl;
	os_mutex_lock(&xl->res_lock);
	cur = atomic_load_explicit(&xl->resolver, memory_order_relaxed);
	if (fn) {
		/* The slot not published has no reader: the last swap waited
		 * for them. */
		next = cur == &xl->res_slot[0] ? &xl->res_slot[1] : &xl->res_slot[0];
		next->fn = fn;
		next->arg = arg;
	}
	atomic_store_explicit(&xl->resolver, next, memory_order_release);
	os_synchronize_rcu(); /* nobody runs the old resolver any more */
	os_mutex_unlock(&xl->res_lock);
	return 0;
}

/* ---- translation ---------------------------------------------------------- */

/* One IO page-table lookup, under walk protection. */
static inline __attribute__((always_inline)) bool
pt_lookup(struct iodma_domain *d, uint64_t iova, struct iopt_hit *h)
{
	struct reader *r = walk_begin();
	bool hit = iopt_lookup(&d->pt, iova, h);

	walk_end(r);
	return hit;
}

/* Bytes from @iova to the next mapping, at most @left. */
static uint64_t pt_hole(struct iodma_domain *d, uint64_t iova, uint64_t left)
{
	struct reader *r = walk_begin();
	uint64_t hole = iopt_hole(&d->pt, iova, left);

	walk_end(r);
	return hole;
}

static void fault_set(struct iodma_fault *f, uint64_t iova, uint64_t len,
		      uint32_t perm, uint32_t reason)
{
	*f = (struct iodma_fault){ .iova = iova, .len = len, .perm = perm,
				   .reason = reason };
}

/* A fault's sub-range: bytes from @iova (at most @left) over which the
 * leaves fail as @h's does: same permissions, same kind, targets that
 * follow each other. */
static uint64_t pt_span(struct iodma_domain *d, uint64_t iova, uint64_t left,
			const struct iopt_hit *h)
{
	const uint64_t same = IOPT_PRESENT | IOPT_R | IOPT_W | IOPT_NO_VA | IOPT_GPA;
	uint64_t span = IODMA_MIN(left, h->len);
	struct iopt_hit n;

	while (span < left) {
		uint64_t next = iova + span;

		if (next == 0 || !pt_lookup(d, next, &n) ||
		    (n.entry & same) != (h->entry & same) ||
		    n.target != h->target + span)
			break;
		span += IODMA_MIN(left - span, n.len);
	}
	return span;
}

/* Identity over the domain's memory (IOMMU disabled). */
static int xlate_identity(struct iodma_domain *d, uint64_t iova, uint64_t left,
			  uint32_t perm, struct run *run, struct iodma_fault *f)
{
	struct iodma_fault mf;
	struct iodma_slice s;
	size_t nr = 0;
	int ret;

	if (!d->memory) {
		fault_set(f, iova, left, perm, IODMA_FAULT_NOT_MAPPED);
		return -EFAULT;
	}
	ret = iodma_memory_translate(d->memory, iova, left, &s, 1, &nr, &mf);
	if (nr == 1) {
		run->va = s.va;
		run->len = s.len;
		run->gpa = iova;
		return 0;
	}
	assert(ret == -EFAULT);
	fault_set(f, mf.iova, mf.len, perm, IODMA_FAULT_NOT_MAPPED);
	return -EFAULT;
}

/* Stage 2 of a two-stage leaf: the guest-physical [gpa, gpa + glen)
 * through the memory's regions (liburcu's read side keeps the region's
 * memory; region removal waits for it and for access sections). */
static int xlate_stage2(struct iodma_domain *d, uint64_t iova, uint64_t gpa,
			uint64_t glen, uint32_t perm, struct run *run,
			struct iodma_fault *f)
{
	struct iodma_region_info ri;
	int ret = 0;

	os_rcu_read_lock();
	if (d->memory && memory_lookup(d->memory, gpa, &ri) == 0) {
		run->va = (char *)ri.va + (gpa - ri.gpa);
		run->len = IODMA_MIN(glen, range_last(ri.gpa, ri.len) - gpa + 1);
		run->gpa = gpa;
	} else {
		uint64_t hole = glen;

		if (d->memory) {
			struct iodma_fault mf;
			size_t nr;

			if (iodma_memory_translate(d->memory, gpa, glen, NULL, 0,
						   &nr, &mf) == -EFAULT && nr == 0)
				hole = mf.len;
		}
		fault_set(f, iova, hole, perm, IODMA_FAULT_NOT_MAPPED);
		ret = -EFAULT;
	}
	os_rcu_read_unlock();
	return ret;
}

/* Everything but the plain host-VA hit: the IOMMU disabled, no leaf (the
 * resolver, then a fault), a leaf without @perm, an fd-only leaf, a
 * two-stage leaf. */
static __attribute__((noinline)) int
xlate_slow(struct iodma_domain *d, uint64_t iova, uint64_t left, uint32_t perm,
	   unsigned int flags, struct run *run, struct iodma_fault *f)
{
	struct xlate_state *xl = d->xl;
	struct iopt_hit h;
	bool resolved = false;
	uint64_t mleft;

	if (!atomic_load_explicit(&d->enabled, memory_order_seq_cst))
		return xlate_identity(d, iova, left, perm, run, f);
	while (!pt_lookup(d, iova, &h)) {
		if (!(flags & XF_NOSTATS))
			STAT_INC(xl, misses);
		if (!resolved && !(flags & XF_NORESOLVE)) {
			struct resolver *r;

			os_rcu_read_lock();
			r = atomic_load_explicit(&xl->resolver, memory_order_acquire);
			if (r) {
				uint64_t outer = tls.miss_left;

				STAT_INC(xl, resolver_calls);
				tls.miss_left = left;
				resolved = r->fn(r->arg, d, iova, perm) == 0;
				tls.miss_left = outer;
			}
			os_rcu_read_unlock();
			if (resolved)
				continue;
		}
		fault_set(f, iova, pt_hole(d, iova, left), perm,
			  IODMA_FAULT_NOT_MAPPED);
		return -EFAULT;
	}
	mleft = IODMA_MIN(left, h.len);
	if ((h.entry & perm) != perm) {
		fault_set(f, iova, pt_span(d, iova, left, &h), perm,
			  IODMA_FAULT_PERMISSION);
		return -EACCES;
	}
	if (h.entry & IOPT_NO_VA) {
		fault_set(f, iova, pt_span(d, iova, left, &h), perm,
			  IODMA_FAULT_NO_HOST);
		return -EFAULT;
	}
	if (!(flags & XF_NOSTATS))
		STAT_INC(xl, hits);
	if (h.entry & IOPT_GPA) {
		int ret = xlate_stage2(d, iova, h.target, mleft, perm, run, f);

		/* A stage-2 hole: report it over the whole stage-1 span. */
		if (ret && mleft < left)
			ret = xlate_stage2(d, iova, h.target,
					   pt_span(d, iova, left, &h), perm, run, f);
		return ret;
	}
	run->va = (char *)(uintptr_t)h.target;
	run->len = mleft;
	run->gpa = NO_GPA;
	return 0;
}

uint64_t xlate_miss_left(void)
{
	return tls.miss_left;
}

bool xlate_mapped(struct iodma_domain *d, uint64_t iova, uint32_t perm)
{
	struct iopt_hit h;

	return pt_lookup(d, iova, &h) && (h.entry & perm) == perm;
}

/* Grow a run that stopped at a leaf's end while bytes are left: the next
 * leaves, as long as they are usable with @perm, of the same kind and
 * host-contiguous (and guest-physically contiguous for two-stage).  A
 * stage-2 hole or any other fault just ends the run: the next step reports
 * it. */
static __attribute__((noinline)) void
xlate_extend(struct iodma_domain *d, uint64_t iova, uint64_t left, uint32_t perm,
	     struct run *run)
{
	uint64_t kind = IOPT_NO_VA | IOPT_GPA;

	while (run->len < left) {
		uint64_t next = iova + run->len;
		struct iodma_fault f;
		struct iopt_hit h;
		struct run more;

		if (next == 0 || !pt_lookup(d, next, &h) || (h.entry & perm) != perm)
			return;
		if ((h.entry & kind) == 0) {
			if (run->gpa != NO_GPA)
				return;
			more.va = (char *)(uintptr_t)h.target;
			more.len = IODMA_MIN(left - run->len, h.len);
			more.gpa = NO_GPA;
		} else if ((h.entry & kind) == IOPT_GPA) {
			if (run->gpa == NO_GPA || h.target != run->gpa + run->len ||
			    xlate_stage2(d, next, h.target,
					 IODMA_MIN(left - run->len, h.len), perm,
					 &more, &f))
				return;
		} else {
			return;
		}
		if (more.va != run->va + run->len)
			return;
		run->len += more.len;
	}
}

/* One step: the largest host-contiguous run at @iova (at most @left
 * bytes), or an error with *@f describing the failing sub-range.  The
 * common case, a host-VA leaf with @perm, is one inlined walk. */
static inline __attribute__((always_inline)) int
xlate_step(struct iodma_domain *d, uint64_t iova, uint64_t left, uint32_t perm,
	   unsigned int flags, struct run *run, struct iodma_fault *f)
{
	const uint64_t kind = perm | IOPT_NO_VA | IOPT_GPA;
	struct iopt_hit h;
	bool hit;
	int ret;

	/* seq_cst: the reader's half of the section handshake (file
	 * comment), like the walk's loads. */
	hit = __builtin_expect(atomic_load_explicit(&d->enabled, memory_order_seq_cst), 1) &&
	      __builtin_expect(pt_lookup(d, iova, &h), 1);
	if (__builtin_expect(hit && (h.entry & kind) == perm, 1)) {
		run->va = (char *)(uintptr_t)h.target;
		run->len = h.len;
		run->gpa = NO_GPA;
		if (!(flags & XF_NOSTATS))
			STAT_INC(d->xl, hits);
	} else if (hit && (h.entry & kind) == (perm | IOPT_GPA) &&
		   xlate_stage2(d, iova, h.target, IODMA_MIN(left, h.len), perm,
				run, f) == 0) {
		/* Two-stage: the same walk, then the GPA's region (a failure
		 * goes the slow way, which describes the fault). */
		if (!(flags & XF_NOSTATS))
			STAT_INC(d->xl, hits);
	} else {
		ret = xlate_slow(d, iova, left, perm, flags, run, f);
		if (ret)
			return ret;
	}
	if (__builtin_expect(run->len >= left, 1)) {
		run->len = left;
		return 0;
	}
	if (atomic_load_explicit(&d->enabled, memory_order_relaxed))
		xlate_extend(d, iova, left, perm, run);
	return 0;
}

static inline bool perm_valid(uint32_t perm)
{
	return perm && !(perm & ~IODMA_PERM_RW);
}

IODMA_EXPORT int iodma_check_range(struct iodma_domain *d, uint64_t iova,
				   uint64_t len, uint32_t perm)
{
	struct iodma_fault f;
	struct run run;
	uint32_t tok;

	if (!d || !range_valid(iova, len) || !perm_valid(perm))
		return -EINVAL;
	tok = sect_note(d, iova, len, perm);
	while (len) {
		int ret = xlate_step(d, iova, len, perm, 0, &run, &f);

		if (ret) {
			sect_retract(tok); /* a failed check vouches for nothing */
			return ret;
		}
		iova += run.len;
		len -= run.len;
	}
	return 0;
}

#define IT_ERROR 0x1u /* the iteration ended with it->fault */

IODMA_EXPORT int iodma_xlate_begin(struct iodma_xlate_iter *it,
				   struct iodma_domain *d, uint64_t iova,
				   uint64_t len, uint32_t perm)
{
	if (!it || !d || !perm_valid(perm) || (len && !range_valid(iova, len)))
		return -EINVAL;
	/* The library needs its whole state: no shorter caller (common.h). */
	if (it->size < sizeof(*it))
		return -EINVAL;
	*it = (struct iodma_xlate_iter){ .size = it->size, .d = d, .iova = iova,
					 .left = len, .perm = perm, .flags = 0 };
	return 0;
}

IODMA_EXPORT int iodma_xlate_next(struct iodma_xlate_iter *it,
				  struct iodma_slice *slice)
{
	struct run run;
	uint32_t tok;
	int ret;

	if (!it || !it->d || !slice)
		return -EINVAL;
	if (it->flags & IT_ERROR)
		return fault_errno(&it->fault);
	if (!it->left)
		return 0;
	tok = sect_note(it->d, it->iova, it->left, it->perm);
	ret = xlate_step(it->d, it->iova, it->left, it->perm, 0, &run, &it->fault);
	if (ret) {
		/* A range this call appended covers only what it failed to
		 * give (slices given before are under earlier ranges). */
		sect_retract(tok);
		it->flags |= IT_ERROR;
		fault_record(it->d, &it->fault);
		return ret;
	}
	if (it->perm & IODMA_PERM_WRITE) {
		dirty_mark(it->d->xl, it->iova, run.len);
		gpa_mark(it->d, &run);
	}
	slice->va = run.va;
	slice->len = run.len;
	it->iova += run.len;
	it->left -= run.len;
	return 1;
}

/* iodma_translate() past its first leaf: step by step, merging
 * host-contiguous runs. */
static __attribute__((noinline)) int
translate_steps(struct iodma_domain *d, uint64_t iova, uint64_t len,
		uint32_t perm, struct iodma_slice *out, size_t max, size_t *nr,
		struct iodma_fault *fault, uint32_t tok)
{
	struct iodma_fault f;
	struct run run;
	size_t n = 0;
	int ret = 0;

	while (len) {
		ret = xlate_step(d, iova, len, perm, 0, &run, &f);
		if (ret) {
			if (!n)
				sect_retract(tok); /* nothing given: before the
						    * fault log's lock */
			fault_record(d, &f);
			if (fault)
				*fault = f;
			break;
		}
		if (n && (char *)out[n - 1].va + out[n - 1].len == run.va) {
			/* Host-contiguous with the previous slice: merge. */
			out[n - 1].len += run.len;
		} else if (n == max) {
			ret = -E2BIG;
			break;
		} else {
			out[n].va = run.va;
			out[n].len = run.len;
			n++;
		}
		if (perm & IODMA_PERM_WRITE) {
			dirty_mark(d->xl, iova, run.len);
			gpa_mark(d, &run);
		}
		iova += run.len;
		len -= run.len;
	}
	*nr = n;
	return ret;
}

/* iodma_translate() in full: validation, the section record, then step by
 * step. */
static __attribute__((noinline)) int
translate_full(struct iodma_domain *d, uint64_t iova, uint64_t len,
	       uint32_t perm, struct iodma_slice *out, size_t max, size_t *nr,
	       struct iodma_fault *fault)
{
	uint32_t tok;

	if (!d || !nr || (max && !out) || !range_valid(iova, len) ||
	    !perm_valid(perm))
		return -EINVAL;
	tok = sect_note(d, iova, len, perm);
	if (!tls.fast && !tls.depth)
		fast_refresh(); /* for the next call (a record comes with the walk below) */
	return translate_steps(d, iova, len, perm, out, max, nr, fault, tok);
}

/* The fast paths' test of a leaf @e of a block of @mask + 1 bytes: host
 * VA with the permission bits of @pm = perm | IOPT_NO_VA | IOPT_GPA (a
 * valid perm: flipping R and W in @e leaves a bit of @pm set exactly when
 * a permission is missing or the leaf is not host VA; no TABLE word
 * reaches here with @perm's bits: a level-0 slot is a leaf or 0), and the
 * request, @lm1 = len - 1 bytes past @iova, inside the block (hence no
 * wrap: range_valid(); len == 0 fails, as lm1 wraps).  *@va set on a hit. */
static inline __attribute__((always_inline)) bool
fast_leaf(uint64_t e, uint64_t mask, uint64_t iova, uint64_t lm1, uint64_t pm,
	  void **va)
{
	uint64_t off = iova & mask;

	e ^= IODMA_PERM_RW; /* the address bits stay */
	if (__builtin_expect(!(e & pm), 1) &&
	    __builtin_expect(lm1 <= (off ^ mask), 1)) {
		*va = (void *)(uintptr_t)((e & IOPT_ADDR) | off);
		return true;
	}
	return false;
}

/* The fast paths' hit (iodma_translate(), iodma_translate_one()), inline
 * and with no call so that they need no stack frame: one host-VA leaf with
 * @perm holds the whole request (a descriptor, a buffer inside one page or
 * large page).  The caller checked the rest (FAST_OK): a thread with its
 * own shard outside a section (@fast, see fast_refresh()), @d not NULL,
 * @perm valid and @iova below d->xl_limit[perm] (so the domain is enabled,
 * and no dirty log to mark for a write).  The walk is announced in the
 * shard's walk counter (struct stat_shard; walk_begin()/walk_end()'s
 * protocol on another word): odd before the first load, +2 after the last
 * on a hit (which counts it), back to its start value otherwise.  Returns
 * true with *@va set, or false: the caller goes the full way, which starts
 * over. */
static inline __attribute__((always_inline)) bool
fast_hit(struct iodma_domain *d, uint64_t iova, uint64_t len, uint32_t perm,
	 uintptr_t fast, void **va)
{
	_Atomic uint64_t *wc = (_Atomic uint64_t *)((uintptr_t)d->xl_shards + fast);
	uint64_t pm = perm | IOPT_NO_VA | IOPT_GPA, lm1 = len - 1, e;
	bool hit;

	/* Only this thread writes the counter: plain loads of it (a second
	 * one at the end frees a register for the walk). */
	atomic_store_explicit(wc, atomic_load_explicit(wc, memory_order_relaxed) + 1,
			      memory_order_relaxed);
	atomic_signal_fence(memory_order_seq_cst); /* membarrier's half */
	e = atomic_load_explicit(&d->pt.root[iova >> IOPT_L2_SHIFT],
				 memory_order_seq_cst);
	if (!(e & IOPT_TABLE)) {
		hit = fast_leaf(e, (1ull << IOPT_L2_SHIFT) - 1, iova, lm1, pm, va);
	} else {
		e = atomic_load_explicit(&iopt_node(e)[(iova >> IOPT_L1_SHIFT) &
						       (IOPT_NODE_ENTRIES - 1)],
					 memory_order_seq_cst);
		if (!(e & IOPT_TABLE)) {
			hit = fast_leaf(e, (1ull << IOPT_L1_SHIFT) - 1, iova, lm1,
					pm, va);
		} else {
			e = atomic_load_explicit(&iopt_node(e)[(iova >> IOPT_L0_SHIFT) &
							       (IOPT_NODE_ENTRIES - 1)],
						 memory_order_seq_cst);
			hit = fast_leaf(e, (1ull << IOPT_L0_SHIFT) - 1, iova, lm1,
					pm, va);
		}
	}
	atomic_store_explicit(wc, atomic_load_explicit(wc, memory_order_relaxed) +
			      (hit ? 1 : (uint64_t)-1), memory_order_release);
	return hit;
}

/* The checks before fast_hit(): a thread that may take it, a domain, an
 * IOVA below the domain's limit for @perm (a valid one). */
#define FAST_OK(fast, d, perm, iova)                                          \
	((fast) && (d) && (perm) <= IODMA_PERM_RW &&                          \
	 (iova) < atomic_load_explicit(&(d)->xl_limit[perm], memory_order_seq_cst))

IODMA_EXPORT int iodma_translate(struct iodma_domain *d, uint64_t iova,
				 uint64_t len, uint32_t perm,
				 struct iodma_slice *out, size_t max,
				 size_t *nr, struct iodma_fault *fault)
{
	uintptr_t fast = tls.fast;

	/* The common case: see fast_hit().  Anything else, or any doubt,
	 * goes to translate_full(), which starts over. */
	if (__builtin_expect(FAST_OK(fast, d, perm, iova) && nr && out && max, 1) &&
	    __builtin_expect(fast_hit(d, iova, len, perm, fast, &out[0].va), 1)) {
		out[0].len = len;
		*nr = 1;
		return 0;
	}
	return translate_full(d, iova, len, perm, out, max, nr, fault);
}

/* iodma_translate_one() the full way: iodma_translate() with one slice. */
static __attribute__((noinline)) int
translate_one_full(struct iodma_domain *d, uint64_t iova, uint64_t len,
		   uint32_t perm, void **va)
{
	struct iodma_slice s;
	size_t nr;
	int ret;

	if (!va)
		return -EINVAL;
	ret = translate_full(d, iova, len, perm, &s, 1, &nr, NULL);
	if (!ret)
		*va = s.va;
	return ret;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(IODMA_NO_ASM)
/*
 * x86-64: the fast path of fast_hit() and its callers' checks written out,
 * 16 instructions fewer than GCC makes of the C below (no callee-saved
 * register, no copy of the arguments, the walk counter bumped in memory).
 * The same steps, the same order, the same protocol: the counter's odd
 * store before the first table load and its even store (x86 stores are
 * releases) after the last; both are plain read-modify-writes of a word
 * only this thread writes.  Every exit leaves the argument registers as
 * they came (len is decremented and restored), so the fallback is the
 * C call with the same arguments.  test_xlate covers both (the C path
 * runs under aarch64 and riscv64 in the cross tier, and with
 * -DIODMA_NO_ASM).  The constants it spells as literals are the C
 * definitions below, each pinned by an assertion so that a change to the
 * table's format cannot leave the assembly behind.
 */
_Static_assert(IODMA_PERM_RW == 3, "asm: cmp $3 / xor $3");
_Static_assert((IOPT_NO_VA | IOPT_GPA) == 0x30, "asm: or $0x30");
_Static_assert(IOPT_TABLE == 8, "asm: test $8, and the node at e - 8");
_Static_assert(IOPT_ADDR == ~0xfffull, "asm: and $-4096");
_Static_assert(IOPT_L2_SHIFT == 30 && IOPT_L1_SHIFT == 21 &&
	       IOPT_L0_SHIFT == 12, "asm: shr $30 / $21 / $12 and the masks");
_Static_assert(IOPT_NODE_ENTRIES == 512, "asm: and $511");
_Static_assert(sizeof(((struct iodma_domain *)0)->xl_limit[0]) == 8,
	       "asm: the limit words are indexed by perm * 8");
IODMA_EXPORT int iodma_translate_one(struct iodma_domain *d, uint64_t iova,
				     uint64_t len, uint32_t perm, void **va)
{
	uintptr_t fast = tls.fast;

	__asm__ goto(
		"test	%[f], %[f]\n\t"
		"jz	%l[full]\n\t"
		"test	%[d], %[d]\n\t"
		"jz	%l[full]\n\t"
		"cmp	$3, %k[p]\n\t"		/* IODMA_PERM_RW */
		"ja	%l[full]\n\t"
		"test	%[va], %[va]\n\t"
		"jz	%l[full]\n\t"
		"mov	%k[p], %%r9d\n\t"
		"cmp	%c[lim](%[d],%%r9,8), %[iova]\n\t"
		"jae	%l[full]\n\t"
		"add	%c[sh](%[d]), %[f]\n\t"	/* the shard's walk counter */
		"addq	$1, (%[f])\n\t"		/* odd: a walk under way */
		"or	$0x30, %%r9d\n\t"		/* pm: + IOPT_NO_VA | IOPT_GPA */
		"mov	%c[root](%[d]), %%r10\n\t"
		"mov	%[iova], %%r11\n\t"
		"shr	$30, %%r11\n\t"
		"mov	(%%r10,%%r11,8), %%r10\n\t"
		"test	$8, %%r10b\n\t"		/* IOPT_TABLE */
		"jnz	1f\n\t"
		"mov	$0x3fffffff, %%r11d\n\t"
		"jmp	3f\n"
		"1:\n\t"
		"mov	%[iova], %%r11\n\t"
		"shr	$21, %%r11\n\t"
		"and	$511, %%r11d\n\t"
		"mov	-8(%%r10,%%r11,8), %%r10\n\t"
		"test	$8, %%r10b\n\t"
		"jnz	2f\n\t"
		"mov	$0x1fffff, %%r11d\n\t"
		"jmp	3f\n"
		"4:\n\t"				/* not a hit */
		"subq	$1, (%[f])\n\t"		/* even: back to its start */
		"jmp	%l[full]\n"
		"2:\n\t"
		"mov	%[iova], %%r11\n\t"
		"shr	$12, %%r11\n\t"
		"and	$511, %%r11d\n\t"
		"mov	-8(%%r10,%%r11,8), %%r10\n\t"
		"mov	$0xfff, %%r11d\n"
		"3:\n\t"				/* r10 leaf, r11 its mask */
		"xor	$3, %%r10\n\t"		/* fast_leaf() */
		"test	%%r9, %%r10\n\t"
		"jnz	4b\n\t"
		"mov	%[iova], %%r9\n\t"
		"and	%%r11, %%r9\n\t"		/* off */
		"xor	%%r9, %%r11\n\t"		/* mask - off */
		"sub	$1, %[len]\n\t"
		"cmp	%[len], %%r11\n\t"
		"lea	1(%[len]), %[len]\n\t"	/* (keeps the flags) */
		"jb	4b\n\t"
		"and	$-4096, %%r10\n\t"		/* IOPT_ADDR */
		"or	%%r9, %%r10\n\t"
		"mov	%%r10, (%[va])\n\t"
		"addq	$1, (%[f])"			/* even: +2, a hit */
		: [f] "+r"(fast), [len] "+r"(len)
		: [d] "r"(d), [iova] "r"(iova), [p] "r"(perm), [va] "r"(va),
		  [lim] "i"(offsetof(struct iodma_domain, xl_limit)),
		  [sh] "i"(offsetof(struct iodma_domain, xl_shards)),
		  [root] "i"(offsetof(struct iodma_domain, pt.root))
		: "r9", "r10", "r11", "cc", "memory"
		: full);
	return 0;
full:
	return translate_one_full(d, iova, len, perm, va);
}
#else
IODMA_EXPORT int iodma_translate_one(struct iodma_domain *d, uint64_t iova,
				     uint64_t len, uint32_t perm, void **va)
{
	uintptr_t fast = tls.fast;

	/* One branch per test: BRANCH_SEP() keeps GCC from combining two
	 * of them with setcc, which costs more instructions than it saves
	 * on this path. */
	if (__builtin_expect(!fast || !d, 0))
		goto full;
	BRANCH_SEP();
	if (__builtin_expect(perm > IODMA_PERM_RW, 0))
		goto full;
	BRANCH_SEP();
	if (__builtin_expect(!va, 0))
		goto full;
	if (__builtin_expect(iova < atomic_load_explicit(&d->xl_limit[perm],
							 memory_order_seq_cst), 1) &&
	    __builtin_expect(fast_hit(d, iova, len, perm, fast, va), 1))
		return 0;
full:
	return translate_one_full(d, iova, len, perm, va);
}
#endif

#define COPY_RUNS 16

/* iodma_read/iodma_write: check the whole range, then copy, all inside one
 * access section so nothing checked can be freed before the copy. */
static int xlate_copy(struct iodma_domain *d, uint64_t iova, char *buf,
		      size_t len, uint32_t perm)
{
	struct run stack_runs[COPY_RUNS], *runs = stack_runs, run;
	struct iodma_fault f;
	uint64_t pos = iova, left = len;
	size_t n = 0, cap = COPY_RUNS, done = 0;
	uint32_t tok;
	int ret = 0;

	if (!d || !buf || !range_valid(iova, len))
		return -EINVAL;
	section_begin();
	tok = sect_note(d, iova, len, perm);
	/* Translate everything first and keep every run: the copy then uses
	 * exactly what was checked, so an error copies nothing and a racing
	 * unmap + remap cannot redirect part of the copy (the runs' memory
	 * stays valid until this section ends). */
	while (left) {
		ret = xlate_step(d, pos, left, perm, 0, &run, &f);
		if (ret) {
			sect_retract(tok); /* an error copies nothing */
			fault_record(d, &f);
			goto out;
		}
		if (n == cap) {
			struct run *r = iodma_malloc(2 * cap * sizeof(*r));

			if (!r) {
				ret = -ENOMEM;
				goto out;
			}
			memcpy(r, runs, n * sizeof(*r));
			if (runs != stack_runs)
				iodma_free(runs);
			runs = r;
			cap *= 2;
		}
		runs[n++] = run;
		pos += run.len;
		left -= run.len;
	}
	if (perm & IODMA_PERM_WRITE)
		dirty_mark(d->xl, iova, len);
	for (size_t i = 0; i < n; i++) {
		if (perm & IODMA_PERM_WRITE) {
			memcpy(runs[i].va, buf + done, (size_t)runs[i].len);
			gpa_mark(d, &runs[i]); /* after the write */
		} else {
			memcpy(buf + done, runs[i].va, (size_t)runs[i].len);
		}
		done += (size_t)runs[i].len;
	}
out:
	section_end();
	if (runs != stack_runs)
		iodma_free(runs);
	return ret;
}

IODMA_EXPORT int iodma_read(struct iodma_domain *d, uint64_t iova, void *buf,
			    size_t len)
{
	return xlate_copy(d, iova, buf, len, IODMA_PERM_READ);
}

IODMA_EXPORT int iodma_write(struct iodma_domain *d, uint64_t iova,
			     const void *buf, size_t len)
{
	return xlate_copy(d, iova, (char *)buf, len, IODMA_PERM_WRITE);
}

/* ---- counters ------------------------------------------------------------ */

IODMA_EXPORT int iodma_xlate_get_stats(const struct iodma_domain *d,
					struct iodma_xlate_stats *st)
{
	struct iodma_xlate_stats s = IODMA_STRUCT_INIT(struct iodma_xlate_stats);
	struct iodma_xlate_stats *out = st;
	struct xlate_state *xl;

	if (!d || !st)
		return -EINVAL;
	xl = d->xl;
	st = &s;
	for (unsigned int i = 0; i <= NR_SHARDS; i++) {
		/* The fast paths' hits: walk / 2 (struct stat_shard). */
		st->iotlb_hits += atomic_load_explicit(&xl->shards[i].hits,
						       memory_order_relaxed) +
				  (atomic_load_explicit(&xl->shards[i].walk,
							memory_order_relaxed) >> 1);
		st->iotlb_misses += atomic_load_explicit(&xl->shards[i].misses,
							 memory_order_relaxed);
		st->resolver_calls += atomic_load_explicit(&xl->shards[i].resolver_calls,
							   memory_order_relaxed);
	}
	st->iotlb_invalidations = atomic_load_explicit(&xl->stops, memory_order_relaxed) +
				  atomic_load_explicit(&xl->invalidations,
						       memory_order_relaxed);
	os_mutex_lock(&xl->fault_lock);
	st->faults = xl->faults_total;
	st->faults_dropped = xl->faults_dropped;
	os_mutex_unlock(&xl->fault_lock);
	return out_copy(out, &s, sizeof(s),
			IODMA_OFFSETOFEND(struct iodma_xlate_stats, faults_dropped));
}

/* ---- for tests ------------------------------------------------------------ */

uint32_t xlate_test_section_waiters(void)
{
	return tls.r ? atomic_load(&tls.r->waiters) : 0;
}

static _Thread_local struct reader *test_walk_r;

void xlate_test_walk_begin(void)
{
	test_walk_r = walk_begin();
}

void xlate_test_walk_end(void)
{
	walk_end(test_walk_r);
}

bool xlate_test_fast_walk_begin(struct iodma_domain *d)
{
	unsigned int own = shard_own();
	_Atomic uint64_t *c;

	if (own >= NR_SHARDS)
		return false;
	c = &d->xl->shards[own].walk;
	atomic_store(c, atomic_load(c) + 1);
	return true;
}

void xlate_test_fast_walk_end(struct iodma_domain *d)
{
	_Atomic uint64_t *c = &d->xl->shards[shard_own()].walk;

	atomic_store(c, atomic_load(c) + 1);
}

bool xlate_test_has_record(void)
{
	return tls.r != NULL;
}

size_t xlate_test_records(void)
{
	size_t n = 0;

	for (struct reader *r = atomic_load(&registry); r; r = r->next)
		n++;
	return n;
}
