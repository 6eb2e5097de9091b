/* SPDX-License-Identifier: MIT */
/*
 * xlate.c - device-side translation: IOVA -> host slices with permission
 * checks, the IOTLB, the miss resolver, the fault log, dirty logging and
 * the translation counters.
 *
 * IOTLB
 *   A power-of-two array of cache-line-sized entries indexed by a hash of
 *   (iova >> page shift).  An entry caches one composed translation
 *   [iova, iova + len) -> host VA with its permissions and the generations
 *   it was filled under: the domain's d->gen (stage 1) and, for a domain
 *   over an iodma_memory, memory_generation() (stage 2).  It is a seqlock
 *   per entry: seq is odd while a filler writes it.  A reader loads seq
 *   (acquire), the fields (relaxed), fences, reloads seq, and uses the
 *   entry only if seq was even and unchanged, both generations are the
 *   current ones and the range and permissions cover the request.  A hit
 *   touches the entry's line and the generation word(s) and writes nothing
 *   shared.  Fillers claim an entry with a CAS even -> odd and give up when
 *   they lose.  A filler reads d->gen BEFORE domain_lookup() and never
 *   fills when it was odd, so an entry built from a table state older than
 *   a whole-domain change carries an older generation and can never hit.
 *   An unmap drops only the entries that may hold its range: an entry
 *   caches a run inside one mapping and sits in the slot of a page of that
 *   run, so the slots of the range's pages are all there is to look at
 *   (ranges longer than the IOTLB bump the generation instead).  A filler
 *   also reads the unmap sequence d->useq before its lookup, does not fill
 *   while it is odd, and re-reads it while it still holds the slot: if an
 *   unmap has begun, it publishes the slot empty.  The unmap, for its part,
 *   waits for a slot being filled before examining it, so a stale run is
 *   never visible once the unmap has dropped its slots; the sections that
 *   saw it before are waited for by the unmap (below, and unmap ordering in
 *   domain_priv.h).  Negative results are never cached.
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
 *   range BEFORE its IOTLB probe or table lookup: nothing if a range of the
 *   same domain already covers it (with the write flag when needed);
 *   otherwise it appends a range or extends one it touches, with release
 *   stores of the range's fields followed by one seq_cst store of the state
 *   word (the publish, A).  A full record merges into the range of that
 *   domain that grows least; with no range of that domain it sets ALL: the
 *   section then overlaps every range of every domain.  The outermost end
 *   of a section that published anything stores state = (sequence + 1) with
 *   no ranges (seq_cst) and, if an unmapper sleeps on it, wakes it.  A
 *   section that translated nothing writes nothing shared at all.
 *
 *   Unmap (domain.c) first stops the range translating, under map_lock:
 *   the records leave the table (or are marked dying) and xlate_unmap_end()
 *   drops the IOTLB slots with seq_cst CASes (or bumps d->gen, seq_cst):
 *   call the last of these seq_cst writes D.  After dropping map_lock it
 *   scans the registry (xlate_wait_sections): for each record it loads the
 *   state (seq_cst, R), and waits for the sequence to move if the section
 *   published ALL or a range of this domain overlapping the unmapped one.
 *
 *   Why no section is missed (store buffering, both sides seq_cst): the
 *   reader does A then loads the IOTLB slot's seq and d->gen with seq_cst
 *   loads (plain moves on x86) or takes table_lock; the unmapper does D
 *   then R.  In the single total order S of seq_cst operations, either A
 *   precedes R, and R reads A or a later state of the same section (the
 *   release/acquire pair also makes the range fields visible), so the
 *   unmapper waits for it; or R precedes A, so D precedes the reader's
 *   IOTLB loads, which then see the dropped slot (odd or empty) or the new
 *   generation and go to the table, where the removal is seen under
 *   table_lock.  A reader that took table_lock before the unmapper did
 *   published A before its unlock, which happens before the unmapper's
 *   lock, so R sees A.  The range fields only grow while a section is open
 *   and are rewritten only after its end (which moves the sequence), so a
 *   half-updated or newer view leads to a wait that is at worst not needed.
 *   A new thread's record is pushed (seq_cst) before its first publish, so
 *   the scan, which loads the list head after D, finds every record that
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
 * Locks (after domain_priv.h's map_lock -> table_lock):
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

#define IOTLB_DEFAULT_ENTRIES 1024
#define FAULT_LOG_DEFAULT     256
#define NR_SHARDS             64

/* One IOTLB entry: exactly one cache line. */
struct iotlb_entry {
	_Alignas(IODMA_CACHELINE) _Atomic uint64_t seq; /* odd while filled */
	_Atomic uint64_t iova;  /* first IOVA of the cached run */
	_Atomic uint64_t len;   /* bytes; 0 = empty */
	_Atomic uint64_t hva;   /* host VA of iova */
	_Atomic uint64_t dgen;  /* d->gen at fill (always even) */
	_Atomic uint64_t mgen;  /* memory_generation() at fill, or 0 */
	_Atomic uint64_t gpa;   /* guest-physical address of iova (two-stage),
				 * or NO_GPA */
	_Atomic uint32_t perm;  /* IODMA_PERM_* */
};
_Static_assert(sizeof(struct iotlb_entry) == IODMA_CACHELINE,
	       "an IOTLB entry is one cache line");

/* Translation counters of the threads sharing one slot. */
struct stat_shard {
	_Alignas(IODMA_CACHELINE) _Atomic uint64_t hits;
	_Atomic uint64_t misses;
	_Atomic uint64_t resolver_calls;
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
	/* Read-mostly: the hit path. */
	struct iotlb_entry *iotlb;
	struct iodma_memory *memory;    /* == d->memory, on this read-mostly
					 * line (d's first line holds map_lock) */
	uint64_t iotlb_mask;            /* entries - 1 */
	unsigned int page_shift;        /* log2 host page: hash input */
	struct stat_shard *shards;      /* NR_SHARDS + 1: the last one is
					 * shared by threads past the first
					 * NR_SHARDS, with atomic adds */
	_Atomic(struct dirty_log *) dirty;      /* RCU; NULL = logging off */
	_Atomic(struct resolver *) resolver;    /* RCU; NULL = none */
	struct resolver res_slot[2];    /* the one not published is free */
	void *raw;                      /* allocation holding all of this */

	_Alignas(IODMA_CACHELINE) _Atomic uint64_t invalidations;

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

/* One thread's access-section record.  Allocated with iodma_calloc (16-byte
 * alignment, so no _Alignas here); the pad keeps the next record's state
 * word off this record's owner-private tail. */
struct reader {
	/* The futex word: (sequence << ST_SEQ_SHIFT) | ST_ALL | ranges.
	 * Written by the owner only; the sequence moves at each outermost
	 * end of a section that published a range. */
	_Atomic uint32_t state;
	_Atomic uint32_t waiters;       /* unmappers sleeping on state */
	_Atomic uint32_t in_use;        /* owned by a live thread */
	struct reader *next;            /* registry link, set before publish */
	struct sect_range rng[SECT_RANGES];
	struct sect_dirty dirty[SECT_RANGES];
	char pad[IODMA_CACHELINE];
};

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
	unsigned int slot = os_thread_slot();
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
	size_t off_tlb, off_sh, off_f, total;
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

	/* One allocation: state, IOTLB, shards, fault ring; cache aligned. */
	off_tlb = (sizeof(*xl) + IODMA_CACHELINE - 1) & ~(size_t)(IODMA_CACHELINE - 1);
	off_sh = off_tlb + (size_t)entries * sizeof(struct iotlb_entry);
	off_f = off_sh + (NR_SHARDS + 1) * sizeof(struct stat_shard);
	total = off_f + (size_t)flog * sizeof(struct iodma_fault);
	raw = iodma_malloc(total + IODMA_CACHELINE);
	if (!raw)
		return -ENOMEM;
	base = ((uintptr_t)raw + IODMA_CACHELINE - 1) & ~(uintptr_t)(IODMA_CACHELINE - 1);
	memset((void *)base, 0, total);
	xl = (struct xlate_state *)base;
	xl->raw = raw;
	xl->iotlb = (struct iotlb_entry *)(base + off_tlb);
	xl->iotlb_mask = entries - 1;
	xl->memory = d->memory;
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
	return 0;
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

/* ---- IOTLB slots ---------------------------------------------------------- */

static inline struct iotlb_entry *iotlb_slot_of_pfn(struct xlate_state *xl,
						   uint64_t pfn)
{
	uint64_t h = pfn * 0x9e3779b97f4a7c15ull;

	return &xl->iotlb[(h >> 32) & xl->iotlb_mask];
}

static inline struct iotlb_entry *iotlb_slot(struct xlate_state *xl,
					     uint64_t iova)
{
	return iotlb_slot_of_pfn(xl, iova >> xl->page_shift);
}

/* Empty entry @e if it overlaps [iova, iova + len).  An entry being filled
 * (odd seq) is waited for: its filler either saw the unmap sequence move
 * and published nothing, or published a run that is examined here.  A
 * filler's odd window is a few stores and one load, never a block. */
static void iotlb_drop(struct iotlb_entry *e, uint64_t iova, uint64_t len)
{
	uint64_t s, eiova, elen;

	for (;;) {
		s = atomic_load_explicit(&e->seq, memory_order_seq_cst);
		if (s & 1)
			continue;
		eiova = atomic_load_explicit(&e->iova, memory_order_relaxed);
		elen = atomic_load_explicit(&e->len, memory_order_relaxed);
		if (elen == 0 || !ranges_overlap(eiova, elen, iova, len))
			return;
		if (atomic_compare_exchange_weak_explicit(&e->seq, &s, s + 1,
							  memory_order_seq_cst,
							  memory_order_relaxed))
			break;
	}
	atomic_store_explicit(&e->len, 0, memory_order_relaxed);
	atomic_store_explicit(&e->seq, s + 2, memory_order_release);
}

void xlate_invalidate_begin(struct iodma_domain *d)
{
	atomic_fetch_add_explicit(&d->gen, 1, memory_order_seq_cst);
	atomic_fetch_add_explicit(&d->xl->invalidations, 1, memory_order_relaxed);
}

void xlate_invalidate_end(struct iodma_domain *d)
{
	atomic_fetch_add_explicit(&d->gen, 1, memory_order_seq_cst);
}

void xlate_unmap_begin(struct iodma_domain *d)
{
	atomic_fetch_add_explicit(&d->useq, 1, memory_order_seq_cst);
}

static void iotlb_drop(struct iotlb_entry *e, uint64_t iova, uint64_t len);

void xlate_unmap_end(struct iodma_domain *d, uint64_t iova, uint64_t len)
{
	struct xlate_state *xl = d->xl;
	uint64_t pages, first, p;

	atomic_fetch_add_explicit(&d->useq, 1, memory_order_seq_cst);
	atomic_fetch_add_explicit(&xl->invalidations, 1, memory_order_relaxed);
	first = iova >> xl->page_shift;
	pages = (range_last(iova, len) >> xl->page_shift) - first + 1;
	if (pages > xl->iotlb_mask + 1) {
		/* Cheaper to drop everything than to visit every slot twice. */
		atomic_fetch_add_explicit(&d->gen, 2, memory_order_seq_cst);
		return;
	}
	for (p = 0; p < pages; p++)
		iotlb_drop(iotlb_slot_of_pfn(xl, first + p), iova, len);
}

IODMA_EXPORT void iodma_iotlb_flush(struct iodma_domain *d)
{
	if (!d)
		return;
	/* +2 keeps the parity, so it composes with an unmap's begin/end. */
	atomic_fetch_add_explicit(&d->gen, 2, memory_order_seq_cst);
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
	bool anon;              /* the outermost one has no record (counted in
				 * anon_sections) */
	struct reader *r;       /* this thread's record, or NULL */
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
	r = iodma_calloc(1, sizeof(*r));
	if (!r)
		return NULL;
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
	if (tls.depth++ == 0 && !tls.r)
		section_open();
}

static void dirty_mark_span(struct dirty_log *dl, uint64_t first, uint64_t last);

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
	atomic_store_explicit(&r->state, (st & ~(ST_NR_MASK | ST_ALL)) + ST_SEQ_ONE,
			      memory_order_seq_cst);
	if (atomic_load_explicit(&r->waiters, memory_order_seq_cst))
		os_wake_all(&r->state);
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
		if (tls.r) {
			section_close(tls.r);
		} else if (tls.anon) {
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
 * [iova, iova + len) of @d (page-rounded), BEFORE the lookup. */
static __attribute__((noinline)) void
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
		return;
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
			return; /* covered: already published before */
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
		return;
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
		return;
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
}

/* The translate entry points call this first: nothing outside a section. */
static inline void sect_note(struct iodma_domain *d, uint64_t iova,
			     uint64_t len, uint32_t perm)
{
	if (__builtin_expect(tls.depth != 0, 0))
		sect_record(d, iova, len, (perm & IODMA_PERM_WRITE) != 0);
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

/* Wait until the section that published @st on @r has ended. */
static void sect_wait(struct reader *r, uint32_t st)
{
	uint32_t seq = st >> ST_SEQ_SHIFT, cur;

	for (int i = 0; i < SECT_SPIN; i++) {
		if ((atomic_load_explicit(&r->state, memory_order_acquire) >> ST_SEQ_SHIFT) != seq)
			return;
		os_cpu_relax();
	}
	atomic_fetch_add_explicit(&r->waiters, 1, memory_order_seq_cst);
	for (;;) {
		cur = atomic_load_explicit(&r->state, memory_order_seq_cst);
		if ((cur >> ST_SEQ_SHIFT) != seq)
			break;
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

	/* Called after the caller's seq_cst removal (xlate_unmap_end or a
	 * generation bump): every load below is seq_cst or follows one.
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
	for (r = atomic_load_explicit(&registry, memory_order_seq_cst); r; r = r->next) {
		uint32_t st;

		if (r == self)
			continue; /* the caller's own section cannot end first */
		st = atomic_load_explicit(&r->state, memory_order_seq_cst);
		if (!(st & (ST_NR_MASK | ST_ALL)) || !sect_overlaps(r, st, d, iova, last))
			continue;
		sect_wait(r, st);
	}
}

/* ---- IOTLB --------------------------------------------------------------- */


/* A hit: fill *@run and return true. */
static inline bool iotlb_probe(struct iodma_domain *d, struct xlate_state *xl,
			       uint64_t iova, uint64_t left, uint32_t perm,
			       struct run *run)
{
	struct iotlb_entry *e = iotlb_slot(xl, iova);
	uint64_t s, eiova, elen, ehva, edgen, emgen, egpa, off;
	uint32_t eperm;

	/* seq_cst (a plain load on x86): pairs with the unmapper's seq_cst
	 * drop, see "Access sections" in the file comment. */
	s = atomic_load_explicit(&e->seq, memory_order_seq_cst);
	if (s & 1)
		return false;
	eiova = atomic_load_explicit(&e->iova, memory_order_relaxed);
	elen = atomic_load_explicit(&e->len, memory_order_relaxed);
	ehva = atomic_load_explicit(&e->hva, memory_order_relaxed);
	edgen = atomic_load_explicit(&e->dgen, memory_order_relaxed);
	emgen = atomic_load_explicit(&e->mgen, memory_order_relaxed);
	egpa = atomic_load_explicit(&e->gpa, memory_order_relaxed);
	eperm = atomic_load_explicit(&e->perm, memory_order_relaxed);
	atomic_thread_fence(memory_order_acquire);
	if (atomic_load_explicit(&e->seq, memory_order_relaxed) != s)
		return false;
	off = iova - eiova;
	if (off >= elen || (eperm & perm) != perm)
		return false;
	if (edgen != atomic_load_explicit(&d->gen, memory_order_seq_cst))
		return false;
	if (xl->memory && emgen != memory_generation(xl->memory))
		return false;
	run->va = (char *)(uintptr_t)ehva + off;
	run->len = IODMA_MIN(left, elen - off);
	run->gpa = egpa == NO_GPA ? NO_GPA : egpa + off;
	return true;
}

/* Cache [iova, iova + len) -> hva under generations @dgen/@mgen in the
 * slot of @key (the IOVA that missed).  Gives up if another filler holds
 * the slot.  @useq is the unmap sequence read before the table lookup.
 * It is read again while the slot is still held (odd): if an unmap has
 * begun since, what we looked up may be gone and the slot is published
 * empty; if not, that unmap's iotlb_drop() will wait for the slot and
 * examine what we publish (all seq_cst: one side always sees the other). */
static void iotlb_fill(struct iodma_domain *d, uint64_t key, uint64_t iova,
		       uint64_t len, uint64_t hva, uint64_t gpa, uint32_t perm,
		       uint64_t dgen, uint64_t mgen, uint64_t useq)
{
	struct iotlb_entry *e = iotlb_slot(d->xl, key);
	uint64_t s = atomic_load_explicit(&e->seq, memory_order_relaxed);

	if ((dgen & 1) || (useq & 1) ||
	    (s & 1) ||
	    !atomic_compare_exchange_strong_explicit(&e->seq, &s, s + 1,
						     memory_order_seq_cst,
						     memory_order_relaxed))
		return;
	atomic_store_explicit(&e->iova, iova, memory_order_relaxed);
	atomic_store_explicit(&e->hva, hva, memory_order_relaxed);
	atomic_store_explicit(&e->dgen, dgen, memory_order_relaxed);
	atomic_store_explicit(&e->mgen, mgen, memory_order_relaxed);
	atomic_store_explicit(&e->gpa, gpa, memory_order_relaxed);
	atomic_store_explicit(&e->perm, perm, memory_order_relaxed);
	if (atomic_load_explicit(&d->useq, memory_order_seq_cst) != useq)
		len = 0; /* an unmap began: publish nothing */
	atomic_store_explicit(&e->len, len, memory_order_relaxed);
	atomic_store_explicit(&e->seq, s + 2, memory_order_release);
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
 * re-marks it if a harvest ran across the section).  No room: the log
 * reports everything dirty until it stops (memory_dirty_set_lost). */
static void gpa_keep(struct iodma_memory *m, uint64_t gpa, uint64_t len)
{
	uint64_t h = memory_dirty_harvest(m), last = range_last(gpa, len);
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
					.remark = (h & 0xffffffffu) != 0 };
		return;
	}
	g = &tls.gpa[i];
	g->first = IODMA_MIN(g->first, gpa);
	g->last = IODMA_MAX(g->last, last);
	if ((h >> 32) != g->hgen || (h & 0xffffffffu))
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
	if (tls.depth && memory_dirty_logging(d->memory))
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
	atomic_store_explicit(&xl->dirty, dl, memory_order_release);
out:
	os_mutex_unlock(&xl->dirty_lock);
	return ret;
}

IODMA_EXPORT int iodma_dirty_log_stop(struct iodma_domain *d)
{
	struct xlate_state *xl;
	struct dirty_log *dl;

	if (!d)
		return -EINVAL;
	xl = d->xl;
	os_mutex_lock(&xl->dirty_lock);
	dl = atomic_exchange_explicit(&xl->dirty, NULL, memory_order_acq_rel);
	os_mutex_unlock(&xl->dirty_lock);
	if (!dl)
		return -EINVAL;
	os_synchronize_rcu(); /* no thread still marks in it */
	dirty_free(dl);
	return 0;
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

/* Bytes from @iova to the next mapping, at most @left. */
static uint64_t table_hole_len(struct iodma_domain *d, uint64_t iova,
			       uint64_t left)
{
	uint64_t key = 0, hole = left;

	os_rwlock_rdlock(&d->table_lock);
	if (btree_lookup_ge(&d->table, iova, &key) && key > iova)
		hole = IODMA_MIN(left, key - iova);
	os_rwlock_unlock(&d->table_lock);
	return hole;
}

static void fault_set(struct iodma_fault *f, uint64_t iova, uint64_t len,
		      uint32_t perm, uint32_t reason)
{
	*f = (struct iodma_fault){ .iova = iova, .len = len, .perm = perm,
				   .reason = reason };
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

/* The miss path: the mapping table (and the memory for stage 2), the
 * resolver, an IOTLB fill.  Inside a read-side section. */
static int xlate_slow(struct iodma_domain *d, uint64_t iova, uint64_t left,
		      uint32_t perm, unsigned int flags, struct run *run,
		      struct iodma_fault *f)
{
	struct xlate_state *xl = d->xl;
	struct iodma_region_info ri;
	struct map_lookup ml;
	uint64_t g, us, mg, off, mleft;
	bool resolved = false;

	if (!atomic_load_explicit(&d->enabled, memory_order_acquire))
		return xlate_identity(d, iova, left, perm, run, f);
	for (;;) {
		/* Generations first, then the table: see the file comment. */
		g = atomic_load_explicit(&d->gen, memory_order_acquire);
		us = atomic_load_explicit(&d->useq, memory_order_seq_cst);
		mg = d->memory ? memory_generation(d->memory) : 0;
		if (domain_lookup(d, iova, &ml) == 0)
			break;
		if (!resolved && !(flags & XF_NORESOLVE)) {
			struct resolver *r =
				atomic_load_explicit(&xl->resolver, memory_order_acquire);

			if (r) {
				STAT_INC(xl, resolver_calls);
				if (r->fn(r->arg, d, iova, perm) == 0) {
					resolved = true;
					continue;
				}
			}
		}
		fault_set(f, iova, table_hole_len(d, iova, left), perm,
			  IODMA_FAULT_NOT_MAPPED);
		return -EFAULT;
	}
	off = iova - ml.iova;
	mleft = IODMA_MIN(left, ml.rec.len - off); /* bytes left in the mapping */
	if ((ml.rec.perm & perm) != perm) {
		fault_set(f, iova, mleft, perm, IODMA_FAULT_PERMISSION);
		return -EACCES;
	}
	if (ml.rec.flags & MAP_F_NO_VA) {
		fault_set(f, iova, mleft, perm, IODMA_FAULT_NO_HOST);
		return -EFAULT;
	}
	if (!(ml.rec.flags & MAP_F_GPA)) {
		run->va = (char *)(uintptr_t)ml.rec.target + off;
		run->len = mleft;
		run->gpa = NO_GPA;
		iotlb_fill(d, iova, ml.iova, ml.rec.len, ml.rec.target, NO_GPA,
			   ml.rec.perm, g, mg, us);
		return 0;
	}

	/* Stage 2: the GPA through the memory's regions. */
	if (!d->memory || memory_lookup(d->memory, ml.rec.target + off, &ri)) {
		uint64_t hole = mleft;

		if (d->memory) {
			struct iodma_fault mf;
			size_t nr;

			if (iodma_memory_translate(d->memory, ml.rec.target + off,
						   mleft, NULL, 0, &nr, &mf) == -EFAULT &&
			    nr == 0)
				hole = mf.len;
		}
		fault_set(f, iova, hole, perm, IODMA_FAULT_NOT_MAPPED);
		return -EFAULT;
	} else {
		/* Intersect the stage-1 mapping with the region, in GPA. */
		uint64_t t = ml.rec.target;
		uint64_t gstart = IODMA_MAX(t, ri.gpa);
		uint64_t glast = IODMA_MIN(range_last(t, ml.rec.len),
					   range_last(ri.gpa, ri.len));
		uint64_t eiova = ml.iova + (gstart - t);
		uint64_t elen = glast - gstart + 1;
		uint64_t ehva = (uintptr_t)ri.va + (gstart - ri.gpa);

		run->va = (char *)(uintptr_t)ehva + (iova - eiova);
		run->len = IODMA_MIN(left, elen - (iova - eiova));
		run->gpa = gstart + (iova - eiova);
		iotlb_fill(d, iova, eiova, elen, ehva, gstart, ml.rec.perm, g, mg,
			   us);
		return 0;
	}
}

/* The slow path out of line, inside its own read-side section. */
static __attribute__((noinline)) int
xlate_miss(struct iodma_domain *d, uint64_t iova, uint64_t left, uint32_t perm,
	   unsigned int flags, struct run *run, struct iodma_fault *f)
{
	int ret;

	os_rcu_read_lock();
	ret = xlate_slow(d, iova, left, perm, flags, run, f);
	os_rcu_read_unlock();
	return ret;
}

/* One step: the largest host-contiguous run at @iova (at most @left
 * bytes), or an error with *@f describing the failing sub-range. */
static inline __attribute__((always_inline)) int
xlate_step(struct iodma_domain *d, uint64_t iova, uint64_t left, uint32_t perm,
	   unsigned int flags, struct run *run, struct iodma_fault *f)
{
	struct xlate_state *xl = d->xl;

	if (atomic_load_explicit(&d->enabled, memory_order_relaxed)) {
		if (iotlb_probe(d, xl, iova, left, perm, run)) {
			if (!(flags & XF_NOSTATS))
				STAT_INC(xl, hits);
			return 0;
		}
		if (!(flags & XF_NOSTATS))
			STAT_INC(xl, misses);
	}
	return xlate_miss(d, iova, left, perm, flags, run, f);
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

	if (!d || !range_valid(iova, len) || !perm_valid(perm))
		return -EINVAL;
	sect_note(d, iova, len, perm);
	while (len) {
		int ret = xlate_step(d, iova, len, perm, 0, &run, &f);

		if (ret)
			return ret;
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
	*it = (struct iodma_xlate_iter){ .d = d, .iova = iova, .left = len,
					 .perm = perm, .flags = 0 };
	return 0;
}

IODMA_EXPORT int iodma_xlate_next(struct iodma_xlate_iter *it,
				  struct iodma_slice *slice)
{
	struct run run;
	int ret;

	if (!it || !it->d || !slice)
		return -EINVAL;
	if (it->flags & IT_ERROR)
		return fault_errno(&it->fault);
	if (!it->left)
		return 0;
	sect_note(it->d, it->iova, it->left, it->perm);
	ret = xlate_step(it->d, it->iova, it->left, it->perm, 0, &run, &it->fault);
	if (ret) {
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

IODMA_EXPORT int iodma_translate(struct iodma_domain *d, uint64_t iova,
				 uint64_t len, uint32_t perm,
				 struct iodma_slice *out, size_t max,
				 size_t *nr, struct iodma_fault *fault)
{
	struct iodma_fault f;
	struct run run;
	size_t n = 0;
	int ret = 0;

	if (!d || !nr || (max && !out) || !range_valid(iova, len) ||
	    !perm_valid(perm))
		return -EINVAL;
	sect_note(d, iova, len, perm);
	while (len) {
		ret = xlate_step(d, iova, len, perm, 0, &run, &f);
		if (ret) {
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
	int ret = 0;

	if (!d || !buf || !range_valid(iova, len))
		return -EINVAL;
	section_begin();
	sect_note(d, iova, len, perm);
	/* Translate everything first and keep every run: the copy then uses
	 * exactly what was checked, so an error copies nothing and a racing
	 * unmap + remap cannot redirect part of the copy (the runs' memory
	 * stays valid until this section ends). */
	while (left) {
		ret = xlate_step(d, pos, left, perm, 0, &run, &f);
		if (ret) {
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

IODMA_EXPORT void iodma_xlate_get_stats(const struct iodma_domain *d,
					struct iodma_xlate_stats *st)
{
	struct xlate_state *xl;

	if (!d || !st)
		return;
	xl = d->xl;
	memset(st, 0, sizeof(*st));
	for (unsigned int i = 0; i <= NR_SHARDS; i++) {
		st->iotlb_hits += atomic_load_explicit(&xl->shards[i].hits,
						       memory_order_relaxed);
		st->iotlb_misses += atomic_load_explicit(&xl->shards[i].misses,
							 memory_order_relaxed);
		st->resolver_calls += atomic_load_explicit(&xl->shards[i].resolver_calls,
							   memory_order_relaxed);
	}
	st->iotlb_invalidations = atomic_load_explicit(&xl->invalidations,
						       memory_order_relaxed);
	os_mutex_lock(&xl->fault_lock);
	st->faults = xl->faults_total;
	st->faults_dropped = xl->faults_dropped;
	os_mutex_unlock(&xl->fault_lock);
}

/* ---- for tests ------------------------------------------------------------ */

uint32_t xlate_test_section_waiters(void)
{
	return tls.r ? atomic_load(&tls.r->waiters) : 0;
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
