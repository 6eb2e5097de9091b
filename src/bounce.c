/* SPDX-License-Identifier: MIT */
/*
 * bounce.c - the bounce pool: slot allocation and run records (see
 * bounce.h).  No copies here: dma.c copies between the buffer and the run.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include <iodma/domain.h>

#include "bounce.h"
#include "util.h"

#define BOUNCE_MAX_AREAS     4
#define BOUNCE_MIN_AREA_SLOTS 256 /* split only pools with this many per area */

/* Per-thread stashes of free runs (see bounce.h). */
#define STASH_SMALL     4096u  /* every stash: STASH_DEPTH times this ... */
#define STASH_BIG       65536u /* ... the first few: this many bytes in all */
#define STASH_HIDE_DIV  8      /* each kind holds at most 1/8 of the pool */

#if BOUNCE_TLS
_Thread_local struct bounce_tls bounce_tls
	__attribute__((tls_model("initial-exec")));
#endif

struct bounce_stash *bounce_stash_fill(struct bounce_pool *p,
				       unsigned int *sh)
{
	unsigned int s = p->nstash ? shard_own() : IODMA_SHARDS;

	if (s >= p->nstash)
		return NULL;
#if BOUNCE_TLS
	bounce_tls = (struct bounce_tls){ p->id, &p->stash[s], s };
#endif
	*sh = s;
	return &p->stash[s];
}

struct bounce_area {
	os_mutex_t lock;     /* protects bitmap and cursor */
	uint32_t first;      /* first slot (pool index) */
	uint32_t nslots;
	uint32_t cursor;     /* next-fit start, relative to @first */
	uint64_t *bitmap;    /* bit set = slot in use (or stashed) */
	char pad[IODMA_CACHELINE];
};

static inline bool bit_test(const uint64_t *bm, uint32_t i)
{
	return (bm[i / 64] >> (i % 64)) & 1;
}

static void bits_set(uint64_t *bm, uint32_t i, uint32_t n)
{
	for (uint32_t k = i; k < i + n; k++)
		bm[k / 64] |= 1ull << (k % 64);
}

static void bits_clear(uint64_t *bm, uint32_t i, uint32_t n)
{
	for (uint32_t k = i; k < i + n; k++)
		bm[k / 64] &= ~(1ull << (k % 64));
}

/* Is the bus range of the whole pool contiguous below the mask?  (Direct
 * mode, memory allocated here.) */
static int check_direct(const struct bounce_cfg *cfg, void *va, size_t len,
			uint64_t *bus)
{
	size_t pg = os_page_size();
	uint64_t pa0 = 0, pa;
	int ret;

	for (size_t off = 0; off < len; off += pg) {
		ret = cfg->virt_to_phys(cfg->arg, (uint8_t *)va + off, &pa);
		if (ret)
			return ret;
		if (off == 0)
			pa0 = pa;
		else if (pa != pa0 + off)
			return -ENOMEM;
	}
	if (!range_valid(pa0, len) || range_last(pa0, len) > cfg->dma_mask)
		return -ENOMEM;
	*bus = pa0;
	return 0;
}

/* Free the pool.  Returns false when the pool's mapping could not be
 * removed: the device may still reach the pages, so they and the IOVA
 * space around them are deliberately left allocated (domain.h, -EUCLEAN). */
static bool pool_free(struct bounce_pool *p)
{
	bool clean = true;

	if (p->mapped && iodma_domain_unmap(p->domain, p->iova, p->len) != 0)
		clean = false;
	if (clean && p->iova_allocated)
		(void)iodma_iova_free(p->domain, p->iova, p->len);
	if (clean && p->raw)
		os_pages_free(p->raw, p->raw_len, -1);
	for (unsigned int i = 0; i < p->areas_ready; i++) {
		iodma_free(p->areas[i].bitmap);
		os_mutex_destroy(&p->areas[i].lock);
	}
	iodma_free(p->areas);
	iodma_free(p->stash);
	iodma_free(p->slots);
	iodma_free(p);
	return clean;
}

/* Get the pool's memory and its device address. */
static int pool_memory(struct bounce_pool *p, const struct bounce_cfg *cfg)
{
	size_t pg = os_page_size();
	uint64_t align = pg;
	int ret;

	if (cfg->domain)
		align = IODMA_MAX(align, iodma_domain_alignment(cfg->domain));
	if (cfg->va) {
		if (!is_aligned((uintptr_t)cfg->va, align))
			return -EINVAL;
		p->va = cfg->va;
		if (!cfg->domain) {
			if (!is_aligned(cfg->bus, p->slot_size) ||
			    !range_valid(cfg->bus, p->len) ||
			    range_last(cfg->bus, p->len) > cfg->dma_mask)
				return -EINVAL;
			p->iova = cfg->bus;
			return 0;
		}
	} else {
		size_t extra = align > pg ? (size_t)align - pg : 0;

		if (!is_aligned(p->len, pg) || p->len + extra < p->len)
			return -EINVAL;
		p->raw_len = p->len + extra;
		ret = os_pages_alloc(p->raw_len, 0, &p->raw, NULL);
		if (ret) {
			p->raw = NULL;
			return ret;
		}
		p->va = (uint8_t *)(uintptr_t)align_up((uintptr_t)p->raw, align);
		if (!cfg->domain)
			return check_direct(cfg, p->va, p->len, &p->iova);
	}
	/* With a domain: IOVA space below the mask, one read/write mapping. */
	if (!is_aligned(p->len, align))
		return -EINVAL;
	ret = iodma_iova_alloc(cfg->domain, p->len,
			       IODMA_MAX(align, (uint64_t)p->slot_size),
			       cfg->dma_mask, &p->iova);
	if (ret)
		return ret;
	p->iova_allocated = true;
	ret = iodma_domain_map(cfg->domain, p->iova, p->len, p->va,
			       IODMA_PERM_RW);
	/* -EUCLEAN: a listener rejected the map and the backend kept it
	 * (domain.h): it is live, and pool_free() must take it back. */
	if (ret == 0 || ret == -EUCLEAN)
		p->mapped = true;
	return ret;
}

int bounce_create(const struct bounce_cfg *cfg, struct bounce_pool **out)
{
	struct bounce_pool *p;
	uint64_t nslots, small, big;
	unsigned int nareas = 1, nbig;
	int ret;

	if (!is_pow2(cfg->slot_size) || cfg->slot_size < 64 ||
	    cfg->pool_size < cfg->slot_size ||
	    !is_aligned(cfg->pool_size, cfg->slot_size))
		return -EINVAL;
	nslots = cfg->pool_size / cfg->slot_size;
	if (nslots > (1u << 30))
		return -EINVAL;
	while (nareas < BOUNCE_MAX_AREAS &&
	       nslots / (nareas * 2) >= BOUNCE_MIN_AREA_SLOTS)
		nareas *= 2;

	p = iodma_calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	static _Atomic uint64_t next_id = 1;

	p->id = atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed);
	p->domain = cfg->domain;
	p->slot_size = cfg->slot_size;
	p->slot_shift = ilog2_u64(cfg->slot_size);
	p->nslots = (uint32_t)nslots;
	p->len = cfg->pool_size;
	p->nareas = nareas;
	/* Every thread's stash holds up to 2 x 4 KiB, the first threads' up
	 * to 64 KiB; each kind at most 1/8 of the pool. */
	small = STASH_DEPTH * IODMA_MAX(STASH_SMALL >> p->slot_shift, 1u);
	big = IODMA_MAX(STASH_BIG >> p->slot_shift, small);
	p->nstash = (unsigned int)IODMA_MIN(nslots / (STASH_HIDE_DIV * small),
					    (uint64_t)IODMA_SHARDS);
	nbig = (unsigned int)IODMA_MIN(nslots / (STASH_HIDE_DIV * big),
				       (uint64_t)p->nstash);
	p->slots = iodma_calloc(nslots, sizeof(*p->slots));
	p->areas = iodma_calloc(nareas, sizeof(*p->areas));
	if (p->nstash)
		p->stash = iodma_calloc(p->nstash, sizeof(*p->stash));
	if (!p->slots || !p->areas || (p->nstash && !p->stash)) {
		ret = -ENOMEM;
		goto fail;
	}
	for (unsigned int i = 0; i < p->nstash; i++) {
		p->stash[i].budget = (uint32_t)(i < nbig ? big : small);
		p->stash[i].lent_iova = BOUNCE_NO_LENT;
	}
	for (unsigned int i = 0; i < nareas; i++) {
		struct bounce_area *a = &p->areas[i];
		uint32_t per = (uint32_t)(nslots / nareas);

		a->first = i * per;
		a->nslots = i == nareas - 1 ? (uint32_t)nslots - a->first : per;
		a->bitmap = iodma_calloc((a->nslots + 63) / 64, sizeof(uint64_t));
		if (!a->bitmap) {
			ret = -ENOMEM;
			goto fail;
		}
		os_mutex_init(&a->lock);
		p->areas_ready++;
	}
	ret = pool_memory(p, cfg);
	p->va_delta = (uintptr_t)p->va - (uintptr_t)p->iova;
	for (unsigned int i = 0; i < p->nstash; i++) {
		p->stash[i].slots = p->slots;
		p->stash[i].va_delta = p->va_delta;
	}
	if (ret == -EUCLEAN)
		ret = -EIO; /* a clean failure once pool_free() unmapped it */
	if (ret)
		goto fail;
	*out = p;
	return 0;
fail:
	if (!pool_free(p))
		ret = -EUCLEAN; /* the pool's memory stays reachable: kept */
	return ret;
}

static inline struct bounce_area *area_of(struct bounce_pool *p, uint32_t slot)
{
	uint32_t per = p->nslots / p->nareas;

	return &p->areas[IODMA_MIN(slot / per, p->nareas - 1)];
}

static inline unsigned int st_of(uint64_t state)
{
	return (unsigned int)(state & ST_MASK);
}

uint64_t bounce_destroy(struct bounce_pool *p)
{
	uint64_t live = 0;

	if (!p)
		return 0;
	for (uint32_t i = 0; i < p->nslots; i++) {
		if (st_of(atomic_load_explicit(&p->slots[i].state,
					       memory_order_relaxed)) != ST_FREE)
			live++;
	}
	pool_free(p);
	return live;
}

uint64_t bounce_slots_total(const struct bounce_pool *p)
{
	return p ? p->nslots : 0;
}

uint64_t bounce_slots_used(const struct bounce_pool *p)
{
	uint64_t used, held = 0;

	if (!p)
		return 0;
	used = atomic_load_explicit(&((struct bounce_pool *)p)->used,
				    memory_order_relaxed);
	for (unsigned int i = 0; i < p->nstash; i++)
		held += stash_held(&p->stash[i]);
	return used > held ? used - held : 0;
}

static inline uint64_t slot_iova(const struct bounce_pool *p, uint32_t slot)
{
	return bounce_slot_iova(p, slot);
}

/* First-fit search for @n free slots in [from, to) (area-relative) whose
 * run satisfies the constraints.  Returns the relative index or -1.
 * Caller holds a->lock. */
static int64_t area_search(struct bounce_pool *p, struct bounce_area *a,
			   uint32_t from, uint32_t to, uint32_t n, size_t len,
			   uint64_t align, uint64_t limit, uint64_t boundary)
{
	uint32_t i = from;

	while (i < to && to - i >= n) {
		uint64_t iova;
		uint32_t j;

		if (i % 64 == 0 && a->bitmap[i / 64] == ~0ull) {
			i += 64;
			continue;
		}
		if (bit_test(a->bitmap, i)) {
			i++;
			continue;
		}
		iova = slot_iova(p, a->first + i);
		if (!is_aligned(iova, align)) {
			uint64_t next = align_up(iova, align);

			if (!next)
				return -1;
			uint64_t step = ((next - iova) + p->slot_size - 1)
					>> p->slot_shift;

			i += (uint32_t)IODMA_MIN(IODMA_MAX(step, 1), (uint64_t)to);
			continue;
		}
		if (iova + (len - 1) > limit)
			return -1; /* slots only go up from here */
		if (boundary && (iova & ~boundary) !=
				((iova + (len - 1)) & ~boundary)) {
			uint64_t next = (iova | boundary) + 1;

			if (!next)
				return -1;
			i += (uint32_t)IODMA_MIN(((next - iova) + p->slot_size - 1)
						 >> p->slot_shift, (uint64_t)to);
			continue;
		}
		/* Scan the window from its end: skip past the last busy slot. */
		for (j = i + n; j > i; j--) {
			if (bit_test(a->bitmap, j - 1))
				break;
		}
		if (j == i)
			return i;
		i = j;
	}
	return -1;
}

/* The calling thread's stash, or NULL. */
static inline struct bounce_stash *stash_own(struct bounce_pool *p)
{
	unsigned int sh;

	if (!p->nstash)
		return NULL;
	sh = shard_own();
	return sh < p->nstash ? &p->stash[sh] : NULL;
}

/* Give the slots of run @head back to its area.  Out of line: it takes
 * the area lock, and keeping it out of release() keeps that straight. */
static __attribute__((noinline)) void area_release(struct bounce_pool *p, uint32_t head, uint32_t n)
{
	struct bounce_area *a = area_of(p, head);

	os_mutex_lock(&a->lock);
	bits_clear(a->bitmap, head - a->first, n);
	/* Freeing the run allocated last: hand the same (cache-hot) slots to
	 * the next map instead of walking the whole area. */
	if (head - a->first + n == a->cursor ||
	    (a->cursor == 0 && head - a->first + n == a->nslots))
		a->cursor = head - a->first;
	os_mutex_unlock(&a->lock);
	atomic_fetch_sub_explicit(&p->used, n, memory_order_relaxed);
}

/* Empty the caller's stash into the areas. */
static void stash_flush(struct bounce_pool *p, struct bounce_stash *st)
{
	uint32_t c = stash_count(st);

	for (uint32_t k = 0; k < c; k++)
		area_release(p, st->run[k].head, st->run[k].nslots);
	stash_set(st, p->va_delta, 0, 0);
}

/* Does the free run at @head (of @n slots) meet a map's constraints? */
static inline bool run_fits(const struct bounce_pool *p, uint32_t head,
			    size_t len, uint64_t align, uint64_t limit,
			    uint64_t boundary)
{
	uint64_t iova = slot_iova(p, head);

	return is_aligned(iova, align) && iova + (len - 1) <= limit &&
	       (!boundary || (iova & ~boundary) ==
				     ((iova + (len - 1)) & ~boundary));
}

/* A stashed run of exactly @n slots that fits, taken out, or -1.  The
 * newest first (bounce_map_lend() has tried the very newest already when
 * we get here from bounce_map(), but bounce_map() is also called
 * directly). */
static inline int64_t stash_take(struct bounce_pool *p,
				 struct bounce_stash *st, uint32_t n,
				 size_t len, uint64_t align, uint64_t limit,
				 uint64_t boundary)
{
	uint64_t cw = stash_cw(st);
	uint32_t c = (uint32_t)cw & 0xff;

	for (uint32_t k = c; k-- > 0;) {
		uint32_t h = st->run[k].head;

		if (st->run[k].nslots != n ||
		    !run_fits(p, h, len, align, limit, boundary))
			continue;
		/* Keep the others in order, oldest first. */
		for (uint32_t j = k; j + 1 < c; j++)
			st->run[j] = st->run[j + 1];
		stash_set(st, p->va_delta, c - 1, ((uint32_t)cw >> 8) - n);
		return h;
	}
	return -1;
}

/* Reserve @n slots in the areas.  Returns the head or -1. */
static int64_t area_alloc(struct bounce_pool *p, uint32_t n, size_t len,
			  uint64_t align, uint64_t limit, uint64_t boundary)
{
	unsigned int start = p->nareas > 1 ? os_thread_slot() % p->nareas : 0;

	for (unsigned int k = 0; k < p->nareas; k++) {
		struct bounce_area *a = &p->areas[(start + k) % p->nareas];
		int64_t r;

		if (n > a->nslots || slot_iova(p, a->first) > limit)
			continue;
		os_mutex_lock(&a->lock);
		r = area_search(p, a, a->cursor, a->nslots, n, len, align,
				limit, boundary);
		if (r < 0)
			r = area_search(p, a, 0,
					IODMA_MIN(a->cursor + n - 1, a->nslots),
					n, len, align, limit, boundary);
		if (r >= 0) {
			uint32_t first = a->first + (uint32_t)r;

			bits_set(a->bitmap, (uint32_t)r, n);
			for (uint32_t i = 0; i < n; i++)
				atomic_store_explicit(&p->slots[first + i].head,
						      first, memory_order_relaxed);
			p->slots[first].nslots = n;
			a->cursor = (uint32_t)r + n >= a->nslots ? 0 : (uint32_t)r + n;
			os_mutex_unlock(&a->lock);
			atomic_fetch_add_explicit(&p->used, n, memory_order_relaxed);
			return first;
		}
		os_mutex_unlock(&a->lock);
	}
	return -1;
}

/* No stashed run fits: reserve in the areas; when they are full, empty
 * the caller's stash into them and try again.  Returns the head or -1.
 * Out of line, so the stash hit in bounce_map() stays short. */
static __attribute__((noinline)) int64_t
map_slow(struct bounce_pool *p, struct bounce_stash *st, uint32_t n,
	 size_t len, uint64_t align, uint64_t limit, uint64_t boundary)
{
	int64_t h = area_alloc(p, n, len, align, limit, boundary);

	if (h < 0 && st && stash_count(st)) {
		stash_flush(p, st);
		h = area_alloc(p, n, len, align, limit, boundary);
	}
	return h;
}

int bounce_map(struct bounce_pool *p, void *orig, size_t len, uint8_t dir,
	       uint8_t flags, uint64_t align, uint64_t limit,
	       uint64_t boundary, struct bounce_run *out)
{
	uint64_t n64 = bounce_nslots(p, len);
	struct bounce_stash *st;
	int64_t h = -1;
	uint32_t n;

	assert(len > 0 && is_pow2(align));
	if (n64 > p->nslots)
		return -ENOMEM;
	n = (uint32_t)n64;
	/* A page or more starts on a page, as Linux's swiotlb does: a copy
	 * between page-aligned buffers at different offsets in their pages
	 * is slower (~3% at 64 KiB here). */
	if (len >= BOUNCE_PAGE && align < BOUNCE_PAGE)
		align = BOUNCE_PAGE;
	st = stash_own(p);
	if (st) {
		st->lent_iova = BOUNCE_NO_LENT; /* bounce_unmap_lent() */
		h = stash_take(p, st, n, len, align, limit, boundary);
	}
	if (h < 0) {
		h = map_slow(p, st, n, len, align, limit, boundary);
		if (h < 0)
			return -ENOMEM;
	}
	/* The run is ours alone (FREE, its bits set). */
	bounce_publish(&p->slots[h], orig, len,
		       bounce_attr(dir, flags) | bounce_owner(bounce_shard()));
	out->iova = slot_iova(p, (uint32_t)h);
	out->bva = bounce_slot_va(p, (uint32_t)h);
	out->orig = orig;
	out->len = len;
	out->dir = dir;
	out->flags = flags;
	return 0;
}

static void run_out(struct bounce_pool *p, uint32_t head, uint64_t state,
		    size_t len, uintptr_t orig, struct bounce_run *out)
{
	out->iova = slot_iova(p, head);
	out->bva = bounce_slot_va(p, head);
	out->orig = (void *)orig;
	out->len = len;
	out->dir = (uint8_t)(state >> 2);
	out->flags = (uint8_t)(state >> 10);
	out->claimed = 0;
}

int bounce_find(struct bounce_pool *p, uint64_t iova, size_t len,
		struct bounce_run *out)
{
	struct bounce_slot *s;
	uint64_t state, rlen;
	uintptr_t orig;
	uint32_t slot, head;

	if (!bounce_owns(p, iova) || !range_valid(iova, len))
		return -EINVAL;
	slot = (uint32_t)((iova - p->iova) >> p->slot_shift);
	head = atomic_load_explicit(&p->slots[slot].head, memory_order_relaxed);
	if (head > slot)
		return -EINVAL;
	/* Seqlock read of the head's record: LIVE before and after. */
	s = &p->slots[head];
	state = atomic_load_explicit(&s->state, memory_order_acquire);
	if (st_of(state) != ST_LIVE)
		return -EINVAL;
	rlen = atomic_load_explicit(&s->len, memory_order_relaxed);
	orig = atomic_load_explicit(&s->orig, memory_order_relaxed);
	atomic_thread_fence(memory_order_acquire);
	if (atomic_load_explicit(&s->state, memory_order_relaxed) != state ||
	    !range_contains(slot_iova(p, head), rlen, iova, len))
		return -EINVAL;
	run_out(p, head, state, rlen, orig, out);
	return 0;
}

int bounce_claim(struct bounce_pool *p, uint64_t iova, size_t len,
		 uint8_t dir, uint8_t flags, const void *orig,
		 struct bounce_run *out)
{
	uint64_t claimed;
	void *buf;
	int64_t head;

	if (!bounce_owns(p, iova))
		return -EINVAL;
	head = bounce_claim_fast(p, iova, len, dir, flags, orig, &buf,
				 &claimed);
	if (head < 0)
		return -EINVAL;
	run_out(p, (uint32_t)head, bounce_attr(dir, flags), len,
		(uintptr_t)buf, out);
	out->claimed = claimed;
	return 0;
}

void bounce_release_slow(struct bounce_pool *p, unsigned int sh,
			 uint32_t head)
{
	struct bounce_slot *s = &p->slots[head];
	struct bounce_stash *st = sh < p->nstash ? &p->stash[sh] : NULL;
	uint32_t n = s->nslots, held, c;

	if (!st || n > st->budget) {
		area_release(p, head, n);
		return;
	}
	c = stash_count(st);
	held = stash_held(st);
	while (c && (c == STASH_DEPTH || held + n > st->budget)) {
		held -= st->run[0].nslots;
		area_release(p, st->run[0].head, st->run[0].nslots);
		for (uint32_t j = 0; j + 1 < c; j++)
			st->run[j] = st->run[j + 1];
		c--;
		stash_set(st, p->va_delta, c, held);
	}
	bounce_srun_set(p, &st->run[c], head, n, slot_iova(p, head));
	stash_set(st, p->va_delta, c + 1, held + n);
}

void bounce_release(struct bounce_pool *p, const struct bounce_run *run)
{
	unsigned int sh = bounce_shard();
	uint32_t head = (uint32_t)((run->iova - p->iova) >> p->slot_shift);

	bounce_unclaim(p, head, run->claimed);
	if (!bounce_stash_push(p, sh, head, run->iova))
		bounce_release_slow(p, sh, head);
}
