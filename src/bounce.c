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

/* Per-slot record.  Only the first slot of a run carries the metadata;
 * every slot of a live run has @head = index of that first slot. */
struct bounce_slot {
	void *orig;      /* head: the buffer */
	size_t len;      /* head: bytes mapped */
	uint32_t head;   /* first slot of the run this slot belongs to */
	uint32_t nslots; /* head: slots in the run */
	uint8_t dir;     /* head: enum iodma_dir */
	uint8_t flags;   /* head: BOUNCE_F_* */
	uint8_t dying;   /* head: claimed by an unmap in progress */
};

struct bounce_area {
	os_mutex_t lock;     /* protects bitmap, cursor and the slots' records */
	uint32_t first;      /* first slot (pool index) */
	uint32_t nslots;
	uint32_t cursor;     /* next-fit start, relative to @first */
	uint64_t *bitmap;    /* bit set = slot in use */
	char pad[IODMA_CACHELINE];
};

struct bounce_pool {
	/* Immutable after create. */
	struct iodma_domain *domain;
	uint8_t *va;             /* host address of slot 0 */
	uint64_t iova;           /* bus address/IOVA of slot 0 */
	size_t len;              /* nslots * slot_size */
	size_t slot_size;
	unsigned int slot_shift;
	uint32_t nslots;
	unsigned int nareas;
	unsigned int areas_ready; /* areas whose lock and bitmap exist */
	void *raw;               /* what os_pages_alloc returned, or NULL */
	size_t raw_len;
	bool mapped;             /* [iova, iova + len) mapped in @domain */
	bool iova_allocated;

	struct bounce_slot *slots; /* records, under their area's lock */
	struct bounce_area *areas;
	_Atomic uint64_t used;     /* slots in use (snapshot) */
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

static void pool_free(struct bounce_pool *p)
{
	if (p->mapped)
		(void)iodma_domain_unmap(p->domain, p->iova, p->len);
	if (p->iova_allocated)
		(void)iodma_iova_free(p->domain, p->iova, p->len);
	if (p->raw)
		os_pages_free(p->raw, p->raw_len, -1);
	for (unsigned int i = 0; i < p->areas_ready; i++) {
		iodma_free(p->areas[i].bitmap);
		os_mutex_destroy(&p->areas[i].lock);
	}
	iodma_free(p->areas);
	iodma_free(p->slots);
	iodma_free(p);
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
	if (ret)
		return ret;
	p->mapped = true;
	return 0;
}

int bounce_create(const struct bounce_cfg *cfg, struct bounce_pool **out)
{
	struct bounce_pool *p;
	uint64_t nslots;
	unsigned int nareas = 1;
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
	p->domain = cfg->domain;
	p->slot_size = cfg->slot_size;
	p->slot_shift = ilog2_u64(cfg->slot_size);
	p->nslots = (uint32_t)nslots;
	p->len = cfg->pool_size;
	p->nareas = nareas;
	p->slots = iodma_calloc(nslots, sizeof(*p->slots));
	p->areas = iodma_calloc(nareas, sizeof(*p->areas));
	if (!p->slots || !p->areas) {
		ret = -ENOMEM;
		goto fail;
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
	if (ret)
		goto fail;
	*out = p;
	return 0;
fail:
	pool_free(p);
	return ret;
}

static inline struct bounce_area *area_of(struct bounce_pool *p, uint32_t slot)
{
	uint32_t per = p->nslots / p->nareas;

	return &p->areas[IODMA_MIN(slot / per, p->nareas - 1)];
}

uint64_t bounce_destroy(struct bounce_pool *p)
{
	uint64_t live = 0;

	if (!p)
		return 0;
	for (uint32_t i = 0; i < p->nslots; i++) {
		struct bounce_area *a = area_of(p, i);

		if (bit_test(a->bitmap, i - a->first) && p->slots[i].head == i)
			live++;
	}
	pool_free(p);
	return live;
}

bool bounce_owns(const struct bounce_pool *p, uint64_t iova)
{
	return p && iova >= p->iova && iova - p->iova < p->len;
}

uint64_t bounce_slots_total(const struct bounce_pool *p)
{
	return p ? p->nslots : 0;
}

uint64_t bounce_slots_used(const struct bounce_pool *p)
{
	return p ? atomic_load_explicit(&p->used, memory_order_relaxed) : 0;
}

static inline uint64_t slot_iova(const struct bounce_pool *p, uint32_t slot)
{
	return p->iova + ((uint64_t)slot << p->slot_shift);
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

int bounce_map(struct bounce_pool *p, void *orig, size_t len, uint8_t dir,
	       uint8_t flags, uint64_t align, uint64_t limit,
	       uint64_t boundary, struct bounce_run *out)
{
	uint64_t n64 = ((uint64_t)len + p->slot_size - 1) >> p->slot_shift;
	unsigned int start;

	assert(len > 0 && is_pow2(align));
	if (n64 == 0 || n64 > p->nslots)
		return -ENOMEM;
	start = p->nareas > 1 ? os_thread_slot() % p->nareas : 0;
	for (unsigned int k = 0; k < p->nareas; k++) {
		struct bounce_area *a = &p->areas[(start + k) % p->nareas];
		uint32_t n = (uint32_t)n64;
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
			struct bounce_slot *s = &p->slots[first];

			bits_set(a->bitmap, (uint32_t)r, n);
			for (uint32_t i = 0; i < n; i++)
				p->slots[first + i].head = first;
			s->orig = orig;
			s->len = len;
			s->nslots = n;
			s->dir = dir;
			s->flags = flags;
			s->dying = 0;
			a->cursor = (uint32_t)r + n >= a->nslots ? 0 : (uint32_t)r + n;
			os_mutex_unlock(&a->lock);
			atomic_fetch_add_explicit(&p->used, n, memory_order_relaxed);
			out->iova = slot_iova(p, first);
			out->bva = p->va + ((size_t)first << p->slot_shift);
			out->orig = orig;
			out->len = len;
			out->dir = dir;
			out->flags = flags;
			return 0;
		}
		os_mutex_unlock(&a->lock);
	}
	return -ENOMEM;
}

static void run_out(struct bounce_pool *p, uint32_t head,
		    struct bounce_run *out)
{
	const struct bounce_slot *s = &p->slots[head];

	out->iova = slot_iova(p, head);
	out->bva = p->va + ((size_t)head << p->slot_shift);
	out->orig = s->orig;
	out->len = s->len;
	out->dir = s->dir;
	out->flags = s->flags;
}

/* Head of the live run holding slot @slot, or -1.  Caller holds the
 * area's lock. */
static int64_t head_of_locked(struct bounce_pool *p, struct bounce_area *a,
			      uint32_t slot)
{
	uint32_t head;

	if (!bit_test(a->bitmap, slot - a->first))
		return -1;
	head = p->slots[slot].head;
	if (head < a->first || head > slot ||
	    !bit_test(a->bitmap, head - a->first) ||
	    p->slots[head].head != head || p->slots[head].dying)
		return -1;
	return head;
}

int bounce_find(struct bounce_pool *p, uint64_t iova, size_t len,
		struct bounce_run *out)
{
	uint32_t slot;
	struct bounce_area *a;
	int64_t head;
	int ret = -EINVAL;

	if (!bounce_owns(p, iova) || !range_valid(iova, len))
		return -EINVAL;
	slot = (uint32_t)((iova - p->iova) >> p->slot_shift);
	a = area_of(p, slot);
	os_mutex_lock(&a->lock);
	head = head_of_locked(p, a, slot);
	if (head >= 0) {
		uint64_t hiova = slot_iova(p, (uint32_t)head);

		if (range_contains(hiova, p->slots[head].len, iova, len)) {
			run_out(p, (uint32_t)head, out);
			ret = 0;
		}
	}
	os_mutex_unlock(&a->lock);
	return ret;
}

/* Is there a live run starting exactly at slot @slot with these
 * attributes?  Caller holds a->lock. */
static bool run_matches_locked(struct bounce_pool *p, struct bounce_area *a,
			       uint32_t slot, size_t len, uint8_t dir,
			       uint8_t flags, const void *orig)
{
	const struct bounce_slot *s = &p->slots[slot];

	return head_of_locked(p, a, slot) == (int64_t)slot && s->len == len &&
	       s->dir == dir && (s->flags & BOUNCE_F_SG) == flags &&
	       (!orig || s->orig == orig);
}

int bounce_claim(struct bounce_pool *p, uint64_t iova, size_t len,
		 uint8_t dir, uint8_t flags, const void *orig,
		 struct bounce_run *out)
{
	uint32_t slot;
	struct bounce_area *a;
	int ret = -EINVAL;

	if (!bounce_owns(p, iova) || !is_aligned(iova - p->iova, p->slot_size))
		return -EINVAL;
	slot = (uint32_t)((iova - p->iova) >> p->slot_shift);
	a = area_of(p, slot);
	os_mutex_lock(&a->lock);
	if (run_matches_locked(p, a, slot, len, dir, flags, orig)) {
		p->slots[slot].dying = 1;
		run_out(p, slot, out);
		ret = 0;
	}
	os_mutex_unlock(&a->lock);
	return ret;
}

/* Free the run at @slot.  Caller holds a->lock.  Returns the slots freed. */
static uint32_t release_locked(struct bounce_pool *p, struct bounce_area *a,
			       uint32_t slot)
{
	uint32_t n = p->slots[slot].nslots;

	bits_clear(a->bitmap, slot - a->first, n);
	/* Freeing the run allocated last: hand the same (cache-hot) slots to
	 * the next map instead of walking the whole area. */
	if (slot - a->first + n == a->cursor ||
	    (a->cursor == 0 && slot - a->first + n == a->nslots))
		a->cursor = slot - a->first;
	p->slots[slot].dying = 0;
	p->slots[slot].orig = NULL;
	return n;
}

int bounce_unmap(struct bounce_pool *p, uint64_t iova, size_t len,
		 uint8_t dir, uint8_t flags, const void *orig,
		 void (*fn)(void *arg, const struct bounce_run *run),
		 void *arg)
{
	struct bounce_run run;
	struct bounce_area *a;
	uint32_t slot, n;

	if (!bounce_owns(p, iova) || !is_aligned(iova - p->iova, p->slot_size))
		return -EINVAL;
	slot = (uint32_t)((iova - p->iova) >> p->slot_shift);
	a = area_of(p, slot);
	os_mutex_lock(&a->lock);
	if (!run_matches_locked(p, a, slot, len, dir, flags, orig)) {
		os_mutex_unlock(&a->lock);
		return -EINVAL;
	}
	run_out(p, slot, &run);
	fn(arg, &run);
	n = release_locked(p, a, slot);
	os_mutex_unlock(&a->lock);
	atomic_fetch_sub_explicit(&p->used, n, memory_order_relaxed);
	return 0;
}

void bounce_release(struct bounce_pool *p, uint64_t iova)
{
	uint32_t slot = (uint32_t)((iova - p->iova) >> p->slot_shift);
	struct bounce_area *a = area_of(p, slot);
	uint32_t n;

	os_mutex_lock(&a->lock);
	assert(p->slots[slot].head == slot && p->slots[slot].dying);
	n = release_locked(p, a, slot);
	os_mutex_unlock(&a->lock);
	atomic_fetch_sub_explicit(&p->used, n, memory_order_relaxed);
}
