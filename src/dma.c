/* SPDX-License-Identifier: MIT */
/*
 * dma.c - the driver side: a device's DMA API (iodma/dma.h).
 *
 * A streaming map is one of four kinds, chosen at map time:
 *   registered  the buffer lies in registered memory: the IOVA comes from
 *               the VA -> IOVA radix table (regmap.c), nothing is mapped;
 *   bounce      the data goes through a run of bounce slots (bounce.c);
 *               the IOVA identifies the slot by arithmetic;
 *   dynamic     with a domain: the granule pages covering the buffer are
 *               mapped at IOVA space allocated below the mask;
 *   direct      no domain: the bus address from virt_to_phys.
 * Bounce runs are recorded in their slots (bounce.h: claimed lock-free).
 * The others are recorded in dev->maps, a B-tree keyed by IOVA whose value
 * is the head of a chain of records with that IOVA (registered and direct maps of the
 * same buffer share an IOVA), under dev->lock.  unmap and sync find their
 * map there (or in the pool) and refuse anything else with -EINVAL.
 *
 * A record being unmapped (its domain unmap in flight, dev->lock dropped)
 * is marked dying: invisible to lookups, restored if the unmap fails.
 *
 * Lock order: dev->lock -> domain map lock -> regmap lock, and dev->lock ->
 * bounce area lock (iodma_map_sg, iodma_unmap_sg); nothing is taken while
 * an area lock is held.  The domain's unmap waits for access sections, so
 * dev->lock is dropped around it.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include <iodma/cache.h>
#include <iodma/dma.h>
#include <iodma/domain.h>

#include "bounce.h"
#include "btree.h"
#include "dma_priv.h"
#include "regmap.h"
#include "util.h"

#define DMA_MAX_MMIO        16
#define DMA_DEFAULT_POOL    (4u << 20)
#define DMA_DEFAULT_SLOT    2048u
#define DMA_MAX_POOL        (1ull << 36)

enum smap_kind {
	SMAP_DIRECT = 0,  /* direct mode: bus address */
	SMAP_REG = 1,     /* inside registered memory */
	SMAP_DYN = 2,     /* own domain mapping + IOVA allocation */
	SMAP_SG_DYN = 3,  /* sg element mapped inside its group's allocation */
};

/* A registration (iodma_dev_register). */
struct dma_reg {
	uint64_t va;
	uint64_t len;
	uint64_t iova;   /* device address of va (direct: of the first page) */
	uint64_t live;   /* registered streaming maps inside; dev->lock */
	bool dying;      /* unregister in flight; dev->lock */
};

/* The one IOVA allocation of a scatter-gather list mapped with a domain. */
struct sg_group {
	uint64_t iova;
	uint64_t len;
	uint64_t nelems; /* element records pointing here; dev->lock */
};

/* A live streaming map that is not a bounce. */
struct smap {
	struct smap *next;     /* next record with the same iova */
	uint64_t iova;
	size_t len;
	void *va;
	uint8_t dir;
	uint8_t kind;          /* enum smap_kind */
	bool sg;               /* element of a scatter-gather list */
	bool dying;            /* unmap in flight */
	struct dma_reg *reg;   /* SMAP_REG */
	uint64_t map_iova;     /* SMAP_DYN: IOVA allocation == domain mapping */
	uint64_t map_len;
	struct sg_group *grp;  /* SMAP_SG_DYN */
};

/* A coherent allocation, keyed by iova in dev->coh. */
struct coh_rec {
	void *va;
	size_t len;        /* as passed */
	size_t alloc_len;  /* mapped bytes */
	void *raw;         /* os_pages_alloc result */
	size_t raw_len;
	bool dying;
};

struct mmio_win {
	uint64_t paddr;
	uint64_t len;
	void *va;
};

struct dma_stats {
	_Atomic uint64_t st_maps;
	_Atomic uint64_t st_registered_hits;
	_Atomic uint64_t st_mappings_created;
	_Atomic uint64_t st_bounces;
	_Atomic uint64_t st_bounce_fast; /* iodma_map_single()'s stash hits:
					  * counted in maps and bounces */
	_Atomic uint64_t st_bounce_bytes;
	_Atomic uint64_t st_bounce_full;
	_Atomic uint64_t st_coherent;
	_Atomic uint64_t st_leaked;
	_Atomic uint64_t st_cache[3];  /* clean, invalidate, clean+invalidate */
};

struct dma_stat_shard {
	struct dma_stats s;
	char pad[2 * IODMA_CACHELINE - sizeof(struct dma_stats)];
};

struct iodma_dev {
	/* Immutable after create. */
	struct iodma_domain *domain;
	uint64_t dma_mask;
	uint64_t min_align;
	uint64_t max_segment_size;   /* 0 = none */
	uint64_t segment_boundary;   /* 0 = none; else a mask 2^n - 1 */
	uint64_t granule;            /* domain alignment, or the page size */
	enum iodma_bounce_policy policy;
	bool noncoherent;
	bool bounce_fast;            /* ALWAYS, coherent, min_align <= runs' */
	int (*v2p)(void *arg, const void *va, uint64_t *pa);
	void *v2p_arg;
	struct bounce_pool *pool;    /* NULL with policy NEVER */
	/* With bounce_fast: the pool's id (bounce_stash_mine()) and its
	 * va_delta, at hand for the stash hits of iodma_map_single() and
	 * iodma_unmap_single() (bounce.h). */
	uint64_t bid;
	uintptr_t bva_delta;
	struct regmap *regmap;       /* lock-free lookups; own writer lock */

	os_mutex_t lock;             /* protects maps, coh, regs, max_map_len */
	struct btree maps;           /* iova -> struct smap * (chain head) */
	struct btree coh;            /* iova -> struct coh_rec */
	struct dma_reg **regs;       /* sorted by va */
	size_t nr_regs;
	size_t cap_regs;
	uint64_t max_map_len;        /* longest record ever in maps */

	os_mutex_t mmio_lock;        /* serialises iodma_dev_add_mmio */
	struct mmio_win mmio[DMA_MAX_MMIO]; /* published by nr_mmio */
	_Atomic unsigned int nr_mmio;

	/* Statistics: per-thread shards (util.h), the last one shared. */
	struct dma_stat_shard stats[IODMA_SHARDS + 1];
};

/* Adding to a counter is a plain load and store in the calling thread's
 * own shard (no locked instruction on the map path), an atomic add in the
 * shared one; reading sums the shards (a snapshot, exact once the
 * writers are done).  Counters that go down wrap: the sum is modulo 2^64. */
static inline void stat_add(_Atomic uint64_t *c, bool own, uint64_t n)
{
	if (own)
		atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
				      memory_order_relaxed);
	else
		atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static uint64_t stat_sum(const struct iodma_dev *dev, size_t off)
{
	uint64_t v = 0;

	for (unsigned int i = 0; i <= IODMA_SHARDS; i++)
		v += atomic_load_explicit((_Atomic uint64_t *)((uintptr_t)&dev->stats[i] + off),
					  memory_order_relaxed);
	return v;
}

#define STAT_ADD(dev, f, n) do {						\
		unsigned int sh_ = shard_own();					\
		stat_add(&(dev)->stats[sh_].s.f, sh_ < IODMA_SHARDS, (n));	\
	} while (0)
#define STAT_GET(dev, f) stat_sum((dev), offsetof(struct dma_stat_shard, s.f))

static inline bool dir_valid(enum iodma_dir dir)
{
	return dir == IODMA_TO_DEVICE || dir == IODMA_FROM_DEVICE ||
	       dir == IODMA_BIDIRECTIONAL;
}

static inline bool dir_to_dev(unsigned int dir)
{
	return dir & IODMA_TO_DEVICE;
}

static inline bool dir_from_dev(unsigned int dir)
{
	return dir & IODMA_FROM_DEVICE;
}

static inline uint32_t dir_perm(unsigned int dir)
{
	return (dir_to_dev(dir) ? IODMA_PERM_READ : 0) |
	       (dir_from_dev(dir) ? IODMA_PERM_WRITE : 0);
}

/* ---- cache maintenance (non-coherent devices) ---------------------------- */

/* Before the device accesses [va, va + len): write back what the CPU
 * wrote; for a device write, also drop the lines so no dirty line is
 * evicted over the device's data later (Linux's arch_sync_dma_for_device). */
static __attribute__((noinline)) void
cache_for_device_nc(struct iodma_dev *dev, const void *va, size_t len,
		    unsigned int dir)
{
	if (dir == IODMA_TO_DEVICE) {
		iodma_cache_clean(va, len);
		STAT_ADD(dev, st_cache[0], 1);
	} else {
		iodma_cache_clean_invalidate(va, len);
		STAT_ADD(dev, st_cache[2], 1);
	}
}

/* A coherent device (x86's, and the default): nothing to do, no call. */
static inline __attribute__((always_inline)) void
cache_for_device(struct iodma_dev *dev, const void *va, size_t len,
		 unsigned int dir)
{
	if (dev->noncoherent)
		cache_for_device_nc(dev, va, len, dir);
}

/* Before the CPU reads what the device wrote (arch_sync_dma_for_cpu). */
static inline __attribute__((always_inline)) void
cache_for_cpu(struct iodma_dev *dev, const void *va, size_t len,
	      unsigned int dir)
{
	if (!dev->noncoherent || !dir_from_dev(dir))
		return;
	iodma_cache_invalidate(va, len);
	STAT_ADD(dev, st_cache[1], 1);
}

void dma_dev_cache_counts(const struct iodma_dev *dev,
			  struct dma_cache_counts *out)
{
	out->clean = STAT_GET(dev, st_cache[0]);
	out->invalidate = STAT_GET(dev, st_cache[1]);
	out->clean_invalidate = STAT_GET(dev, st_cache[2]);
}

/* ---- direct mode: bus addresses ------------------------------------------ */

static int os_v2p(void *arg, const void *va, uint64_t *pa)
{
	return os_virt_to_phys(va, pa);
}

#define V2P_BATCH 64 /* pages per os_virt_to_phys_range() (512 B of stack) */

/* phys_contig() with the platform's own lookup: the pages' bus addresses
 * come V2P_BATCH at a time (one pagemap read each on Linux), not one
 * lookup per page. */
static int phys_contig_os(uintptr_t v, uintptr_t page, uintptr_t last,
			  uint64_t pg, uint64_t *pa)
{
	uint64_t buf[V2P_BATCH], base = 0;
	size_t npages = (size_t)((last - page) / pg) + 1, done = 0;
	int ret;

	while (done < npages) {
		size_t n = IODMA_MIN(npages - done, (size_t)V2P_BATCH);

		ret = os_virt_to_phys_range((const void *)(page + done * pg), n,
					    buf, NULL);
		if (ret)
			return ret;
		if (done == 0)
			base = buf[0];
		for (size_t i = 0; i < n; i++)
			if (buf[i] != base + (done + i) * pg)
				return 1;
		done += n;
	}
	*pa = base + (v - page);
	return 0;
}

/* Bus address of @va when [va, va + len) is physically contiguous.
 * Returns 0 (contiguous, *pa set), 1 (not contiguous) or the hook's
 * negative errno. */
static int phys_contig(struct iodma_dev *dev, const void *va, size_t len,
		       uint64_t *pa)
{
	uint64_t pg = os_page_size();
	uintptr_t v = (uintptr_t)va;
	uintptr_t page = align_down(v, pg);
	uintptr_t last = align_down(range_last(v, len), pg);
	uint64_t first, p;
	int ret;

	if (dev->v2p == os_v2p)
		return phys_contig_os(v, page, last, pg, pa);
	ret = dev->v2p(dev->v2p_arg, va, &first);
	if (ret)
		return ret;
	while (page != last) {
		page += pg;
		ret = dev->v2p(dev->v2p_arg, (const void *)page, &p);
		if (ret)
			return ret;
		if (p != align_down(first, pg) + (page - align_down(v, pg)))
			return 1;
	}
	*pa = first;
	return 0;
}

/* ---- the streaming-map records -------------------------------------------- */

/* Add @s under its iova.  The tree was preloaded.  dev->lock held. */
static void smap_insert_locked(struct iodma_dev *dev, struct smap *s)
{
	struct smap **head = btree_lookup(&dev->maps, s->iova);
	int ret;

	os_mutex_assert_held(&dev->lock);

	if (head) {
		s->next = *head;
		*head = s;
	} else {
		s->next = NULL;
		ret = btree_insert(&dev->maps, s->iova, &s);
		assert(ret == 0);
		(void)ret;
	}
	if (s->len > dev->max_map_len)
		dev->max_map_len = s->len;
}

/* Remove @s.  Never allocates.  dev->lock held. */
static void smap_unlink_locked(struct iodma_dev *dev, struct smap *s)
{
	struct smap **head = btree_lookup(&dev->maps, s->iova);
	struct smap **pp;

	os_mutex_assert_held(&dev->lock);

	assert(head);
	for (pp = head; *pp != s; pp = &(*pp)->next)
		assert(*pp);
	*pp = s->next;
	if (!*head)
		(void)btree_remove(&dev->maps, s->iova, NULL);
}

/* The live record made by a map returning @iova with @len and @dir.
 * dev->lock held. */
static struct smap *smap_find_exact_locked(struct iodma_dev *dev,
					   uint64_t iova, size_t len,
					   unsigned int dir, bool sg,
					   const void *va)
{
	struct smap **head = btree_lookup(&dev->maps, iova);

	os_mutex_assert_held(&dev->lock);

	for (struct smap *s = head ? *head : NULL; s; s = s->next) {
		if (!s->dying && s->len == len && s->dir == dir &&
		    s->sg == sg && (!va || s->va == va))
			return s;
	}
	return NULL;
}

/* A live record containing [iova, iova + len) with @dir.  dev->lock held. */
static struct smap *smap_find_containing_locked(struct iodma_dev *dev,
						uint64_t iova, size_t len,
						unsigned int dir)
{
	uint64_t key;
	struct smap **head = btree_lookup_le(&dev->maps, iova, &key);

	os_mutex_assert_held(&dev->lock);

	while (head) {
		if (iova - key >= dev->max_map_len)
			break;
		for (struct smap *s = *head; s; s = s->next) {
			if (!s->dying && s->dir == dir &&
			    range_contains(s->iova, s->len, iova, len))
				return s;
		}
		head = btree_prev(&dev->maps, key, &key);
	}
	return NULL;
}

/* ---- registrations --------------------------------------------------------- */

/* Index of the first registration with va > @va.  dev->lock held. */
static size_t reg_upper_locked(struct iodma_dev *dev, uint64_t va)
{
	size_t lo = 0, hi = dev->nr_regs;

	os_mutex_assert_held(&dev->lock);

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (dev->regs[mid]->va <= va)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The live registration containing [va, va + len).  dev->lock held. */
static struct dma_reg *reg_find_locked(struct iodma_dev *dev, uint64_t va,
				       uint64_t len)
{
	size_t i = reg_upper_locked(dev, va);
	struct dma_reg *r;

	os_mutex_assert_held(&dev->lock);

	if (i == 0)
		return NULL;
	r = dev->regs[i - 1];
	if (r->dying || !range_contains(r->va, r->len, va, len))
		return NULL;
	return r;
}

/* ---- device ---------------------------------------------------------------- */

IODMA_EXPORT int iodma_dev_create(const struct iodma_dev_opts *opts,
				  struct iodma_dev **out)
{
	struct iodma_dev_opts o;
	struct iodma_dev *dev;
	size_t pg = os_page_size();
	int ret;

	if (!opts || !out)
		return -EINVAL;
	memset(&o, 0, sizeof(o));
	/* First version: up to platform_arg; bounce_pool came later. */
	ret = opts_copy(&o, sizeof(o), opts,
			IODMA_OFFSETOFEND(struct iodma_dev_opts, platform_arg));
	if (ret)
		return ret;
	if (!o.dma_mask)
		o.dma_mask = UINT64_MAX;
	if (!o.min_align)
		o.min_align = 1;
	if (!o.bounce_pool_size)
		o.bounce_pool_size = DMA_DEFAULT_POOL;
	if (!o.bounce_slot_size)
		o.bounce_slot_size = DMA_DEFAULT_SLOT;
	if (o.segment_boundary == UINT64_MAX)
		o.segment_boundary = 0;
	if (o.dma_mask < 0xffff || !is_pow2(o.min_align) ||
	    (o.bounce != IODMA_BOUNCE_WHEN_NEEDED &&
	     o.bounce != IODMA_BOUNCE_NEVER &&
	     o.bounce != IODMA_BOUNCE_ALWAYS) ||
	    !is_pow2(o.bounce_slot_size) || o.bounce_slot_size < 64 ||
	    o.bounce_pool_size < o.bounce_slot_size ||
	    !is_aligned(o.bounce_pool_size, o.bounce_slot_size) ||
	    o.bounce_pool_size > DMA_MAX_POOL ||
	    (o.segment_boundary && (!is_pow2(o.segment_boundary + 1) ||
				    o.segment_boundary + 1 < pg)) ||
	    (o.domain && o.virt_to_phys))
		return -EINVAL;
	if (!o.bounce_pool && !is_aligned(o.bounce_pool_size, pg))
		return -EINVAL;

	dev = iodma_calloc(1, sizeof(*dev));
	if (!dev)
		return -ENOMEM;
	dev->domain = o.domain;
	dev->dma_mask = o.dma_mask;
	dev->min_align = o.min_align;
	dev->max_segment_size = o.max_segment_size;
	dev->segment_boundary = o.segment_boundary;
	dev->granule = o.domain ? iodma_domain_alignment(o.domain) : pg;
	dev->policy = o.bounce;
	dev->noncoherent = o.noncoherent;
	dev->v2p = o.virt_to_phys ? o.virt_to_phys : os_v2p;
	dev->v2p_arg = o.platform_arg;
	os_mutex_init(&dev->lock);
	os_mutex_init(&dev->mmio_lock);
	ret = btree_init(&dev->maps, sizeof(struct smap *));
	if (!ret)
		ret = btree_init(&dev->coh, sizeof(struct coh_rec));
	if (ret)
		goto fail;
	ret = regmap_create(&dev->regmap);
	if (ret)
		goto fail;
	if (o.bounce != IODMA_BOUNCE_NEVER) {
		struct bounce_cfg cfg = {
			.domain = o.domain,
			.dma_mask = o.dma_mask,
			.pool_size = o.bounce_pool_size,
			.slot_size = o.bounce_slot_size,
			.va = o.bounce_pool,
			.bus = o.bounce_pool_bus,
			.virt_to_phys = dev->v2p,
			.arg = dev->v2p_arg,
		};

		ret = bounce_create(&cfg, &dev->pool);
		if (ret)
			goto fail;
		dev->bounce_fast = o.bounce == IODMA_BOUNCE_ALWAYS &&
				   !o.noncoherent &&
				   o.min_align <= bounce_head_align(dev->pool);
		if (dev->bounce_fast) {
			dev->bid = dev->pool->id;
			dev->bva_delta = dev->pool->va_delta;
		}
		if (o.domain)
			STAT_ADD(dev, st_mappings_created, 1);
	}
	*out = dev;
	return 0;
fail:
	regmap_destroy(dev->regmap);
	btree_fini(&dev->maps);
	btree_fini(&dev->coh);
	os_mutex_destroy(&dev->mmio_lock);
	os_mutex_destroy(&dev->lock);
	iodma_free(dev);
	return ret;
}

/* Release a record's domain resources (destroy path). */
static void smap_release_domain(struct iodma_dev *dev, struct smap *s)
{
	if (s->kind == SMAP_DYN) {
		(void)iodma_domain_unmap(dev->domain, s->map_iova, s->map_len);
		(void)iodma_iova_free(dev->domain, s->map_iova, s->map_len);
	} else if (s->kind == SMAP_SG_DYN && --s->grp->nelems == 0) {
		(void)iodma_domain_unmap_gaps(dev->domain, s->grp->iova,
					      s->grp->len, NULL);
		(void)iodma_iova_free(dev->domain, s->grp->iova, s->grp->len);
		iodma_free(s->grp);
	}
}

IODMA_EXPORT void iodma_dev_destroy(struct iodma_dev *dev)
{
	struct smap **head;
	struct coh_rec *c;
	uint64_t key;

	if (!dev)
		return;
	/* Streaming maps still live: a driver bug, released and counted. */
	while ((head = btree_lookup_ge(&dev->maps, 0, &key))) {
		struct smap *s = *head;

		(void)btree_remove(&dev->maps, key, NULL);
		while (s) {
			struct smap *next = s->next;

			STAT_ADD(dev, st_leaked, 1);
			smap_release_domain(dev, s);
			iodma_free(s);
			s = next;
		}
	}
	STAT_ADD(dev, st_leaked, bounce_destroy(dev->pool));
	dev->pool = NULL;
	while ((c = btree_lookup_ge(&dev->coh, 0, &key))) {
		struct coh_rec rec = *c;

		(void)btree_remove(&dev->coh, key, NULL);
		STAT_ADD(dev, st_leaked, 1);
		if (dev->domain) {
			(void)iodma_domain_unmap(dev->domain, key, rec.alloc_len);
			(void)iodma_iova_free(dev->domain, key, rec.alloc_len);
		}
		os_pages_free(rec.raw, rec.raw_len, -1);
	}
	for (size_t i = 0; i < dev->nr_regs; i++) {
		struct dma_reg *r = dev->regs[i];

		if (dev->domain) {
			(void)iodma_domain_unmap(dev->domain, r->iova, r->len);
			(void)iodma_iova_free(dev->domain, r->iova, r->len);
		}
		iodma_free(r);
	}
	iodma_free(dev->regs);
	regmap_destroy(dev->regmap);
	btree_fini(&dev->maps);
	btree_fini(&dev->coh);
	os_mutex_destroy(&dev->mmio_lock);
	os_mutex_destroy(&dev->lock);
	iodma_free(dev);
}

IODMA_EXPORT struct iodma_domain *iodma_dev_domain(const struct iodma_dev *dev)
{
	return dev->domain;
}

/* A domain map of [io, io + len) failed with @ret.  -EUCLEAN means it is
 * live all the same (a listener rejected it and the backend refused to
 * unmap it, domain.h): unmap it once more.  Then the failure is clean
 * (-EIO: nothing mapped); if the backend refuses again the mapping stays,
 * with the IOVA allocation around it (iodma_iova_free() refuses while it
 * lives), and -EUCLEAN tells the caller the device may still reach the
 * memory. */
static int dyn_map_failed(struct iodma_dev *dev, uint64_t io, uint64_t len,
			  int ret)
{
	if (ret != -EUCLEAN)
		return ret;
	return iodma_domain_unmap(dev->domain, io, len) == 0 ? -EIO : -EUCLEAN;
}

/* ---- coherent memory ------------------------------------------------------- */

IODMA_EXPORT int iodma_alloc_coherent(struct iodma_dev *dev, size_t len,
				      void **va, uint64_t *iova)
{
	size_t pg = os_page_size();
	struct coh_rec rec = { 0 };
	uint64_t io = 0, alloc_len, extra;
	bool iova_done = false;
	uint8_t *p;
	int ret;

	if (!dev || !va || !iova || len == 0 || len > (SIZE_MAX >> 2))
		return -EINVAL;
	alloc_len = align_up(len, dev->granule);
	extra = dev->granule > pg ? dev->granule - pg : 0;
	if (!alloc_len || alloc_len + extra > (SIZE_MAX >> 1))
		return -EINVAL;
	rec.len = len;
	rec.alloc_len = (size_t)alloc_len;
	rec.raw_len = (size_t)(alloc_len + extra);
	ret = os_pages_alloc(rec.raw_len, 0, &rec.raw, NULL);
	if (ret)
		return ret;
	p = (uint8_t *)(uintptr_t)align_up((uintptr_t)rec.raw, dev->granule);
	rec.va = p;

	os_mutex_lock(&dev->lock);
	ret = btree_preload(&dev->coh);
	if (ret)
		goto fail;
	if (dev->domain) {
		ret = iodma_iova_alloc(dev->domain, alloc_len, dev->granule,
				       dev->dma_mask, &io);
		if (ret)
			goto fail;
		iova_done = true;
		ret = iodma_domain_map(dev->domain, io, alloc_len, p,
				       IODMA_PERM_RW);
		if (ret) {
			ret = dyn_map_failed(dev, io, alloc_len, ret);
			goto fail;
		}
		STAT_ADD(dev, st_mappings_created, 1);
	} else {
		ret = phys_contig(dev, p, (size_t)alloc_len, &io);
		if (ret == 1 || (ret == 0 && range_last(io, alloc_len) >
					      dev->dma_mask))
			ret = -ENOMEM;
		if (ret)
			goto fail;
	}
	ret = btree_insert(&dev->coh, io, &rec);
	if (ret) {
		/* Preloaded, so only a duplicate bus address from a broken
		 * direct-mode virt_to_phys hook can get here. */
		assert(!dev->domain);
		ret = -EINVAL;
		goto fail;
	}
	os_mutex_unlock(&dev->lock);
	STAT_ADD(dev, st_coherent, 1);
	*va = p;
	*iova = io;
	return 0;
fail:
	if (iova_done)
		(void)iodma_iova_free(dev->domain, io, alloc_len);
	os_mutex_unlock(&dev->lock);
	/* Pages the device may still reach are never given back. */
	if (ret != -EUCLEAN)
		os_pages_free(rec.raw, rec.raw_len, -1);
	return ret;
}

IODMA_EXPORT int iodma_free_coherent(struct iodma_dev *dev, size_t len,
				     void *va, uint64_t iova)
{
	struct coh_rec *c, rec;
	int ret;

	if (!dev)
		return -EINVAL;
	os_mutex_lock(&dev->lock);
	c = btree_lookup(&dev->coh, iova);
	if (!c || c->dying || c->va != va || c->len != len) {
		os_mutex_unlock(&dev->lock);
		return -EINVAL;
	}
	c->dying = true;
	rec = *c;
	os_mutex_unlock(&dev->lock);

	if (dev->domain) {
		ret = iodma_domain_unmap(dev->domain, iova, rec.alloc_len);
		if (ret) {
			os_mutex_lock(&dev->lock);
			c = btree_lookup(&dev->coh, iova);
			c->dying = false;
			os_mutex_unlock(&dev->lock);
			return ret;
		}
		(void)iodma_iova_free(dev->domain, iova, rec.alloc_len);
	}
	os_mutex_lock(&dev->lock);
	(void)btree_remove(&dev->coh, iova, NULL);
	os_mutex_unlock(&dev->lock);
	os_pages_free(rec.raw, rec.raw_len, -1);
	STAT_ADD(dev, st_coherent, UINT64_MAX); /* - 1 */
	return 0;
}

/* ---- streaming maps --------------------------------------------------------- */

enum map_class {
	CLASS_REG,
	CLASS_BOUNCE,
	CLASS_DYN,
	CLASS_DIRECT,
};

/* Decide how [va, va + len) is mapped (registered memory is tried by the
 * caller first).  *@pa receives the bus address for CLASS_DIRECT. */
static int classify(struct iodma_dev *dev, void *va, size_t len,
		    uint64_t align, uint64_t mask, enum map_class *cls,
		    uint64_t *pa)
{
	bool never = dev->policy == IODMA_BOUNCE_NEVER;
	int ret;

	if (dev->policy == IODMA_BOUNCE_ALWAYS) {
		*cls = CLASS_BOUNCE;
		return 0;
	}
	if (!is_aligned((uintptr_t)va, align)) {
		if (never)
			return -EINVAL;
		*cls = CLASS_BOUNCE;
		return 0;
	}
	if (dev->domain) {
		*cls = CLASS_DYN;
		return 0;
	}
	ret = phys_contig(dev, va, len, pa);
	if (ret < 0)
		return ret;
	if (ret == 1 || range_last(*pa, len) < *pa ||
	    range_last(*pa, len) > mask) {
		if (never)
			return -ERANGE;
		*cls = CLASS_BOUNCE;
		return 0;
	}
	if (!is_aligned(*pa, align)) {
		if (never)
			return -EINVAL;
		*cls = CLASS_BOUNCE;
		return 0;
	}
	*cls = CLASS_DIRECT;
	return 0;
}

/* Bounce [va, va + len): reserve a run, copy the buffer in, clean the run
 * for a non-coherent device.  The copy is made for FROM_DEVICE too, as
 * Linux's swiotlb does since its DMA_FROM_DEVICE info-leak fix: otherwise
 * bytes the device does not write would come back at unmap as whatever an
 * earlier mapping left in the slots, leaking that mapping's data into this
 * buffer. */
static __attribute__((noinline)) int
map_bounce(struct iodma_dev *dev, void *va, size_t len, uint64_t align,
	   uint64_t mask, uint64_t boundary, unsigned int dir, uint8_t flags,
	   uint64_t *iova)
{
	struct bounce_run run;
	struct dma_stats *st;
	unsigned int sh;
	bool own;
	int ret;

	if (!dev->pool)
		return -ENOMEM;
	ret = bounce_map(dev->pool, va, len, (uint8_t)dir, flags, align, mask,
			 boundary, &run);
	/* One shard look-up for every counter of this map (STAT_ADD). */
	sh = shard_own();
	own = sh < IODMA_SHARDS;
	st = &dev->stats[sh].s;
	if (ret) {
		stat_add(&st->st_bounce_full, own, 1);
		return ret;
	}
	memcpy(run.bva, va, len);
	cache_for_device(dev, run.bva, len, dir);
	stat_add(&st->st_bounce_bytes, own, len);
	if (!(flags & BOUNCE_F_SG)) {
		/* A single map is complete here (sg: counted once all mapped). */
		stat_add(&st->st_bounces, own, 1);
		stat_add(&st->st_maps, own, 1);
	}
	*iova = run.iova;
	return 0;
}

/* The end of a bounce: invalidate the run for the CPU, copy it back for
 * FROM_DEVICE/BIDIRECTIONAL.  (@arg is the device.) */
static void bounce_copy_back(void *arg, const struct bounce_run *run)
{
	struct iodma_dev *dev = arg;

	cache_for_cpu(dev, run->bva, run->len, run->dir);
	if (dir_from_dev(run->dir)) {
		memcpy(run->orig, run->bva, run->len);
		STAT_ADD(dev, st_bounce_bytes, run->len);
	}
}

/* End a claimed bounce run: copy back, free the slots. */
static void unmap_bounce(struct iodma_dev *dev, const struct bounce_run *run)
{
	bounce_copy_back(dev, run);
	bounce_release(dev->pool, run);
}

/* A registered hit: record it against its registration.  Returns 0,
 * -ENOENT (the registration is going away: map another way) or -ENOMEM. */
static int map_registered(struct iodma_dev *dev, void *va, size_t len,
			  unsigned int dir, uint64_t io, uint64_t *iova)
{
	struct smap *s = iodma_malloc(sizeof(*s));
	struct dma_reg *r;

	if (!s)
		return -ENOMEM;
	os_mutex_lock(&dev->lock);
	r = reg_find_locked(dev, (uintptr_t)va, len);
	/* The lock-free lookup that sent us here may predate an unregister
	 * and a new registration of the same VA at another IOVA: look again
	 * now that registrations cannot change (they do under dev->lock). */
	if (!r || regmap_lookup(dev->regmap, (uintptr_t)va, len, &io) != 0) {
		os_mutex_unlock(&dev->lock);
		iodma_free(s);
		return -ENOENT;
	}
	if (btree_preload(&dev->maps)) {
		os_mutex_unlock(&dev->lock);
		iodma_free(s);
		return -ENOMEM;
	}
	*s = (struct smap){ .iova = io, .len = len, .va = va,
			    .dir = (uint8_t)dir, .kind = SMAP_REG, .reg = r };
	r->live++;
	smap_insert_locked(dev, s);
	os_mutex_unlock(&dev->lock);
	STAT_ADD(dev, st_registered_hits, 1);
	*iova = io;
	return 0;
}

/* Map the granule pages covering [va, va + len) at new IOVA space. */
static int map_dynamic(struct iodma_dev *dev, void *va, size_t len,
		       uint64_t align, uint64_t mask, unsigned int dir,
		       uint64_t *iova)
{
	uint64_t g = dev->granule;
	uint64_t base = align_down((uintptr_t)va, g);
	uint64_t end = align_up((uintptr_t)va + len, g);
	uint64_t io;
	struct smap *s;
	int ret;

	if (!end)
		return -EINVAL;
	s = iodma_malloc(sizeof(*s));
	if (!s)
		return -ENOMEM;
	os_mutex_lock(&dev->lock);
	ret = btree_preload(&dev->maps);
	if (ret)
		goto fail;
	ret = iodma_iova_alloc(dev->domain, end - base, IODMA_MAX(g, align),
			       mask, &io);
	if (ret)
		goto fail;
	ret = iodma_domain_map(dev->domain, io, end - base,
			       (void *)(uintptr_t)base, dir_perm(dir));
	if (ret) {
		ret = dyn_map_failed(dev, io, end - base, ret);
		(void)iodma_iova_free(dev->domain, io, end - base);
		goto fail;
	}
	*s = (struct smap){ .iova = io + ((uintptr_t)va - base), .len = len,
			    .va = va, .dir = (uint8_t)dir, .kind = SMAP_DYN,
			    .map_iova = io, .map_len = end - base };
	smap_insert_locked(dev, s);
	os_mutex_unlock(&dev->lock);
	STAT_ADD(dev, st_mappings_created, 1);
	*iova = s->iova;
	return 0;
fail:
	os_mutex_unlock(&dev->lock);
	iodma_free(s);
	return ret;
}

static int map_direct(struct iodma_dev *dev, void *va, size_t len,
		      unsigned int dir, uint64_t pa, uint64_t *iova)
{
	struct smap *s = iodma_malloc(sizeof(*s));

	if (!s)
		return -ENOMEM;
	os_mutex_lock(&dev->lock);
	if (btree_preload(&dev->maps)) {
		os_mutex_unlock(&dev->lock);
		iodma_free(s);
		return -ENOMEM;
	}
	*s = (struct smap){ .iova = pa, .len = len, .va = va,
			    .dir = (uint8_t)dir, .kind = SMAP_DIRECT };
	smap_insert_locked(dev, s);
	os_mutex_unlock(&dev->lock);
	*iova = pa;
	return 0;
}

/* Check the per-call constraints; 0 values become the device's. */
static int map_args(struct iodma_dev *dev, void *va, size_t len,
		    enum iodma_dir dir, uint64_t *iova, uint64_t *align,
		    uint64_t *mask)
{
	if (!dev || !va || !iova || !range_valid((uintptr_t)va, len) ||
	    !dir_valid(dir))
		return -EINVAL;
	if (!*align)
		*align = dev->min_align;
	if (!*mask)
		*mask = dev->dma_mask;
	if (!is_pow2(*align) || *mask > dev->dma_mask || *mask < 0xffff)
		return -EINVAL;
	return 0;
}

/* Everything but policy ALWAYS: registered, then as classify() decides.
 * Out of line, so that map_single() stays short for the bounce. */
static __attribute__((noinline)) int
map_single_classify(struct iodma_dev *dev, void *va, size_t len,
		    uint64_t align, uint64_t dma_mask, enum iodma_dir dir,
		    uint64_t *iova)
{
	enum map_class cls;
	uint64_t io, pa = 0;
	int ret;

	if (regmap_lookup(dev->regmap, (uintptr_t)va, len, &io) == 0 &&
	    range_last(io, len) >= io && range_last(io, len) <= dma_mask &&
	    is_aligned(io, align)) {
		ret = map_registered(dev, va, len, dir, io, iova);
		if (ret != -ENOENT)
			goto out;
	}
	ret = classify(dev, va, len, align, dma_mask, &cls, &pa);
	if (ret)
		return ret;
	switch (cls) {
	case CLASS_BOUNCE:
		/* Counts its own map (st_maps) and cleans only the run. */
		return map_bounce(dev, va, len, align, dma_mask, 0, dir, 0, iova);
	case CLASS_DYN:
		ret = map_dynamic(dev, va, len, align, dma_mask, dir, iova);
		break;
	case CLASS_DIRECT:
		ret = map_direct(dev, va, len, dir, pa, iova);
		break;
	default:
		ret = -EINVAL;
		break;
	}
out:
	if (ret == 0) {
		cache_for_device(dev, va, len, dir);
		STAT_ADD(dev, st_maps, 1);
	}
	return ret;
}

static inline __attribute__((always_inline)) int
map_single(struct iodma_dev *dev, void *va, size_t len, uint64_t align,
	   uint64_t dma_mask, enum iodma_dir dir, uint64_t *iova)
{
	int ret = map_args(dev, va, len, dir, iova, &align, &dma_mask);

	if (ret)
		return ret;
	/* Policy ALWAYS: straight to the pool (classify() would say so). */
	if (dev->policy == IODMA_BOUNCE_ALWAYS)
		return map_bounce(dev, va, len, align, dma_mask, 0, dir, 0, iova);
	return map_single_classify(dev, va, len, align, dma_mask, dir, iova);
}

IODMA_EXPORT int iodma_map_single_attrs(struct iodma_dev *dev, void *va,
					size_t len, uint64_t align,
					uint64_t dma_mask, enum iodma_dir dir,
					uint64_t *iova)
{
	return map_single(dev, va, len, align, dma_mask, dir, iova);
}

/* memcpy() and return 0, out of line: a hot path that ends with a copy
 * jumps here and keeps no register across the call. */
static __attribute__((noinline)) int copy_ret0(void *dst, const void *src,
					       size_t len)
{
	memcpy(dst, src, len);
	return 0;
}

/* iodma_map_single() but for its stash hit: out of line, so that the hot
 * path keeps no register of its own across the copy. */
static __attribute__((noinline)) int
map_single_slow(struct iodma_dev *dev, void *va, size_t len,
		enum iodma_dir dir, uint64_t *iova)
{
	unsigned int sh;

	/* The next call finds the stash (bounce_stash_mine()). */
	if (dev && dev->bounce_fast)
		(void)bounce_stash_fill(dev->pool, &sh);
	return map_single(dev, va, len, 0, 0, dir, iova);
}

IODMA_EXPORT int iodma_map_single(struct iodma_dev *dev, void *va, size_t len,
				  enum iodma_dir dir, uint64_t *iova)
{
	/* The hot case, in one pass of checks: policy ALWAYS on a coherent
	 * device, the run the calling thread freed last (bounce_map_lend()),
	 * the device's alignment and mask (every run starts on a multiple of
	 * dev->min_align and the whole pool lies below the mask:
	 * bounce_create(), so no limit to check).  The copy's destination is
	 * one load from the stash, the stash one load from the thread's cache
	 * (bounce_stash_mine()).  Stats first, so that nothing but the copy
	 * is left after the copy; one counter for the map and the bounce
	 * (st_bounce_fast). */
	if (dev && va && iova && range_valid((uintptr_t)va, len) &&
	    dir_valid(dir) && dev->bounce_fast) {
		unsigned int sh;
		struct bounce_stash *bst = bounce_stash_mine(dev->pool, dev->bid,
							     &sh);
		uint64_t io;
		void *bva;

		if (bst && bounce_map_lend(bst, sh, va, len, dir, &bva, &io)) {
			/* sh < IODMA_SHARDS: our own shard. */
			struct dma_stats *st = &dev->stats[sh].s;

			stat_add(&st->st_bounce_bytes, true, len);
			stat_add(&st->st_bounce_fast, true, 1);
			*iova = io;
			return copy_ret0(bva, va, len);
		}
	}
	return map_single_slow(dev, va, len, dir, iova);
}

/* Unmap a single map recorded in dev->maps (not a bounce). */
static __attribute__((noinline)) int
unmap_single_rec(struct iodma_dev *dev, uint64_t iova, size_t len,
		 enum iodma_dir dir, const void *va)
{
	struct smap *s;
	int ret;

	if (len == 0)
		return -EINVAL;
	os_mutex_lock(&dev->lock);
	s = smap_find_exact_locked(dev, iova, len, dir, false, va);
	if (!s) {
		os_mutex_unlock(&dev->lock);
		return -EINVAL;
	}
	if (s->kind == SMAP_DYN) {
		s->dying = true;
		os_mutex_unlock(&dev->lock);
		ret = iodma_domain_unmap(dev->domain, s->map_iova, s->map_len);
		os_mutex_lock(&dev->lock);
		if (ret) {
			s->dying = false;
			os_mutex_unlock(&dev->lock);
			return ret;
		}
		(void)iodma_iova_free(dev->domain, s->map_iova, s->map_len);
	} else if (s->kind == SMAP_REG) {
		s->reg->live--;
	}
	smap_unlink_locked(dev, s);
	os_mutex_unlock(&dev->lock);
	cache_for_cpu(dev, s->va, s->len, s->dir);
	iodma_free(s);
	return 0;
}

/* Unmap a single map; @va, when not NULL, must be the mapped buffer.
 * Out of line: iodma_unmap_single() keeps its bounce hit apart. */
static __attribute__((noinline)) int
unmap_single(struct iodma_dev *dev, uint64_t iova, size_t len,
	     enum iodma_dir dir, const void *va)
{
	struct bounce_pool *p;
	uint64_t claimed;
	unsigned int sh;
	void *bva, *buf;
	int64_t h;

	if (!dev || !dir_valid(dir))
		return -EINVAL;
	/* A bounce run is found from @iova by arithmetic (bounce.h); not in
	 * the pool (or no pool): a record in dev->maps. */
	p = dev->pool;
	if (!bounce_owns(p, iova))
		return unmap_single_rec(dev, iova, len, dir, va);
	/* (No run has length 0: a 0 @len is refused here.)  Whichever thread
	 * mapped it: one compare-and-swap (bounce_claim_fast()). */
	h = bounce_claim_fast(p, iova, len, dir, 0, va, &buf, &claimed);
	if (h < 0)
		return -EINVAL;
	/* Claimed: no map can take the run's slots until it is released. */
	bva = bounce_slot_va(p, (uint32_t)h);
	cache_for_cpu(dev, bva, len, dir);
	sh = IODMA_MIN(bounce_shard(), (unsigned int)IODMA_SHARDS);
	if (dir_from_dev(dir)) {
		stat_add(&dev->stats[sh].s.st_bounce_bytes, sh < IODMA_SHARDS,
			 len);
		memcpy(buf, bva, len);
	}
	bounce_unclaim(p, (uint32_t)h, claimed);
	if (!bounce_stash_push(p, sh, (uint32_t)h, iova))
		bounce_release_slow(p, sh, (uint32_t)h);
	return 0;
}

IODMA_EXPORT int iodma_unmap_single(struct iodma_dev *dev, uint64_t iova,
				    size_t len, enum iodma_dir dir)
{
	/* The hot case, in one pass of checks: policy ALWAYS on a coherent
	 * device (no cache maintenance), a thread with a stash unmapping the
	 * run its last map took from that stash (bounce_unmap_lent(): one
	 * compare-and-swap, the run back where no other thread takes it
	 * before the copy back, so that the copy comes last; the copy's
	 * destination one load from the stash, the stash one load from the
	 * thread's cache, bounce_stash_mine()).  (dir_valid(): the @dir the
	 * run was mapped with.) */
	if (dev && dev->bounce_fast) {
		unsigned int sh;
		struct bounce_stash *bst = bounce_stash_mine(dev->pool, dev->bid,
							     &sh);

		if (bst) {
			void *bva = (void *)(uintptr_t)(iova + dev->bva_delta);
			void *buf;

			if (bounce_unmap_lent(bst, sh, iova, bva, len, dir,
					      &buf)) {
				if (!dir_from_dev(dir))
					return 0;
				stat_add(&dev->stats[sh].s.st_bounce_bytes,
					 true, len);
				return copy_ret0(buf, bva, len);
			}
		}
	}
	/* Any other run, of this thread or another: one compare-and-swap
	 * (bounce_claim_fast()), as the lent run's. */
	return unmap_single(dev, iova, len, dir, NULL);
}

static int sync_single(struct iodma_dev *dev, uint64_t iova, size_t len,
		       enum iodma_dir dir, bool for_cpu)
{
	struct smap *s;
	void *va;

	if (!dev || !range_valid(iova, len) || !dir_valid(dir))
		return -EINVAL;
	if (bounce_owns(dev->pool, iova)) {
		struct bounce_run run;
		size_t off;

		if (bounce_find(dev->pool, iova, len, &run) || run.dir != dir)
			return -EINVAL;
		off = (size_t)(iova - run.iova);
		if (for_cpu) {
			cache_for_cpu(dev, (uint8_t *)run.bva + off, len, dir);
			if (dir_from_dev(dir)) {
				memcpy((uint8_t *)run.orig + off,
				       (uint8_t *)run.bva + off, len);
				STAT_ADD(dev, st_bounce_bytes, len);
			}
		} else {
			if (dir_to_dev(dir)) {
				memcpy((uint8_t *)run.bva + off,
				       (uint8_t *)run.orig + off, len);
				STAT_ADD(dev, st_bounce_bytes, len);
			}
			cache_for_device(dev, (uint8_t *)run.bva + off, len, dir);
		}
		return 0;
	}
	os_mutex_lock(&dev->lock);
	s = smap_find_containing_locked(dev, iova, len, dir);
	va = s ? (uint8_t *)s->va + (iova - s->iova) : NULL;
	os_mutex_unlock(&dev->lock);
	if (!s)
		return -EINVAL;
	if (for_cpu)
		cache_for_cpu(dev, va, len, dir);
	else
		cache_for_device(dev, va, len, dir);
	return 0;
}

IODMA_EXPORT int iodma_sync_for_cpu(struct iodma_dev *dev, uint64_t iova,
				    size_t len, enum iodma_dir dir)
{
	return sync_single(dev, iova, len, dir, true);
}

IODMA_EXPORT int iodma_sync_for_device(struct iodma_dev *dev, uint64_t iova,
				       size_t len, enum iodma_dir dir)
{
	return sync_single(dev, iova, len, dir, false);
}

/* ---- scatter-gather --------------------------------------------------------- */

/* Per-element plan of iodma_map_sg(). */
struct sg_plan {
	enum map_class cls;
	uint64_t addr;     /* REG: iova; DIRECT: bus address; DYN: offset of
			    * the covering pages in the group allocation */
	uint64_t base;     /* DYN: first covering page (host VA) */
	uint64_t cover;    /* DYN: covering bytes */
	struct dma_reg *reg; /* REG */
	struct smap *rec;  /* not BOUNCE */
	bool inserted;     /* rec is in dev->maps */
	bool done;         /* mapped (for rollback) */
};

/* Would [start, start + len) cross a multiple of @boundary + 1? */
static inline bool crosses(uint64_t start, uint64_t len, uint64_t boundary)
{
	return boundary &&
	       (start & ~boundary) != ((start + (len - 1)) & ~boundary);
}

static inline uint64_t pow2_ceil(uint64_t x)
{
	return x <= 1 ? 1 : 1ull << (64 - __builtin_clzll(x - 1));
}

/* Plan element @i: registered, bounce, dynamic (placed at *@cursor in the
 * group allocation) or direct.  Every branch leaves the element inside one
 * segment_boundary window (its length was checked against the window and
 * max_segment_size by the caller): a registered or direct address that
 * would cross a line is not used, the element is mapped dynamically or
 * bounced instead (bounce.c places runs inside the window), or refused
 * with -EINVAL under BOUNCE_NEVER without a domain.  A dynamic element
 * whose offset in its page puts it across a line wherever it is placed is
 * bounced too (-EINVAL under BOUNCE_NEVER).  dev->lock held. */
static int sg_plan_elem_locked(struct iodma_dev *dev, struct iodma_sg *e,
			       struct sg_plan *pl, uint64_t *cursor)
{
	uint64_t b = dev->segment_boundary, g = dev->granule;
	uint64_t v = (uintptr_t)e->va, io, base, end, off, start;
	int ret;

	os_mutex_assert_held(&dev->lock);

	if (dev->policy != IODMA_BOUNCE_ALWAYS &&
	    regmap_lookup(dev->regmap, v, e->len, &io) == 0 &&
	    range_last(io, e->len) >= io &&
	    range_last(io, e->len) <= dev->dma_mask &&
	    is_aligned(io, dev->min_align) &&
	    !crosses(io, e->len, b) &&
	    (pl->reg = reg_find_locked(dev, v, e->len))) {
		pl->cls = CLASS_REG;
		pl->addr = io;
		return 0;
	}
	ret = classify(dev, e->va, e->len, dev->min_align, dev->dma_mask,
		       &pl->cls, &pl->addr);
	if (ret)
		return ret;
	if (pl->cls == CLASS_DIRECT && crosses(pl->addr, e->len, b)) {
		if (dev->policy == IODMA_BOUNCE_NEVER)
			return -EINVAL;
		pl->cls = CLASS_BOUNCE;
		return 0;
	}
	if (pl->cls != CLASS_DYN)
		return 0;
	base = align_down(v, g);
	end = align_up(v + e->len, g);
	if (!end)
		return -EINVAL;
	off = v - base;
	start = *cursor;
	if (dev->min_align > g)
		start = align_up(start, dev->min_align);
	if (crosses(start + off, e->len, b))
		start = align_up(start, IODMA_MAX(b + 1, g));
	if (crosses(start + off, e->len, b)) {
		/* Its offset in the page puts it across a line wherever its
		 * pages go (off + len > the window): only a bounce run, which
		 * bounce.c places inside one window, can carry it whole. */
		if (dev->policy == IODMA_BOUNCE_NEVER)
			return -EINVAL;
		pl->cls = CLASS_BOUNCE;
		return 0;
	}
	*cursor = start;
	pl->base = base;
	pl->cover = end - base;
	pl->addr = *cursor;
	if (*cursor + pl->cover < *cursor)
		return -EINVAL;
	*cursor += pl->cover;
	return 0;
}

IODMA_EXPORT int iodma_map_sg(struct iodma_dev *dev, struct iodma_sg *sg,
			      size_t nents, enum iodma_dir dir)
{
	uint64_t b, cursor = 0, align, siova, slen;
	struct sg_group *grp = NULL;
	struct sg_plan *pl;
	size_t i, ndyn = 0, nseg;
	bool grp_iova = false, grp_mapped = false;
	int ret = 0;

	if (!dev || !sg || nents == 0 || nents > INT32_MAX || !dir_valid(dir))
		return -EINVAL;
	b = dev->segment_boundary;
	for (i = 0; i < nents; i++) {
		if (!sg[i].va || !range_valid((uintptr_t)sg[i].va, sg[i].len) ||
		    (dev->max_segment_size && sg[i].len > dev->max_segment_size) ||
		    (b && sg[i].len > b + 1))
			return -EINVAL;
	}
	pl = iodma_calloc(nents, sizeof(*pl));
	if (!pl)
		return -ENOMEM;

	os_mutex_lock(&dev->lock);
	for (i = 0; i < nents; i++) {
		ret = sg_plan_elem_locked(dev, &sg[i], &pl[i], &cursor);
		if (ret)
			goto fail;
		if (pl[i].cls == CLASS_DYN)
			ndyn++;
	}
	if (ndyn) {
		/* One IOVA allocation for the list.  Aligned to the next power
		 * of two of its size (capped by the segment boundary) so that
		 * offsets kept clear of boundaries above stay clear. */
		align = IODMA_MAX(dev->granule, dev->min_align);
		if (b)
			align = IODMA_MAX(align, IODMA_MIN(b + 1, pow2_ceil(cursor)));
		grp = iodma_calloc(1, sizeof(*grp));
		if (!grp) {
			ret = -ENOMEM;
			goto fail;
		}
		grp->len = cursor;
		ret = iodma_iova_alloc(dev->domain, cursor, align, dev->dma_mask,
				       &grp->iova);
		if (ret)
			goto fail;
		grp_iova = true;
	}
	/* Records first (invisible until the end): their insertion is the
	 * last thing that can fail for lack of memory before the maps. */
	for (i = 0; i < nents; i++) {
		struct smap *s;
		uintptr_t v = (uintptr_t)sg[i].va;

		if (pl[i].cls == CLASS_BOUNCE)
			continue;
		s = iodma_malloc(sizeof(*s));
		if (!s) {
			ret = -ENOMEM;
			goto fail;
		}
		*s = (struct smap){ .len = sg[i].len, .va = sg[i].va,
				    .dir = (uint8_t)dir, .sg = true,
				    .dying = true };
		pl[i].rec = s;
		switch (pl[i].cls) {
		case CLASS_REG:
			s->kind = SMAP_REG;
			s->reg = pl[i].reg;
			s->iova = pl[i].addr;
			break;
		case CLASS_DIRECT:
			s->kind = SMAP_DIRECT;
			s->iova = pl[i].addr;
			break;
		default:
			s->kind = SMAP_SG_DYN;
			s->grp = grp;
			s->iova = grp->iova + pl[i].addr + (v - pl[i].base);
			break;
		}
		ret = btree_preload(&dev->maps);
		if (ret)
			goto fail;
		smap_insert_locked(dev, s);
		pl[i].inserted = true;
	}
	for (i = 0; i < nents; i++) {
		switch (pl[i].cls) {
		case CLASS_BOUNCE:
			ret = map_bounce(dev, sg[i].va, sg[i].len,
					 dev->min_align, dev->dma_mask, b, dir,
					 BOUNCE_F_SG, &pl[i].addr);
			break;
		case CLASS_DYN:
			ret = iodma_domain_map(dev->domain,
					       grp->iova + pl[i].addr,
					       pl[i].cover,
					       (void *)(uintptr_t)pl[i].base,
					       dir_perm(dir));
			/* -EUCLEAN: live despite the error (domain.h);
			 * the group unmap below takes it back. */
			if (!ret || ret == -EUCLEAN)
				grp_mapped = true;
			break;
		default:
			break;
		}
		if (ret)
			goto fail;
		pl[i].done = true;
	}
	/* Success: publish.  Only now are the domain maps counted: a failed
	 * list rolled them back. */
	if (grp) {
		grp->nelems = ndyn;
		STAT_ADD(dev, st_mappings_created, ndyn);
	}
	for (i = 0; i < nents; i++) {
		if (pl[i].rec) {
			pl[i].rec->dying = false;
			if (pl[i].cls == CLASS_REG) {
				pl[i].reg->live++;
				STAT_ADD(dev, st_registered_hits, 1);
			}
			sg[i].iova = pl[i].rec->iova;
		} else {
			sg[i].iova = pl[i].addr;
			STAT_ADD(dev, st_bounces, 1);
		}
	}
	os_mutex_unlock(&dev->lock);
	for (i = 0; i < nents; i++) {
		if (pl[i].cls != CLASS_BOUNCE)
			cache_for_device(dev, sg[i].va, sg[i].len, dir);
	}
	iodma_free(pl);
	STAT_ADD(dev, st_maps, nents);

	/* Merge IOVA-contiguous elements into segments. */
	nseg = 0;
	siova = sg[0].iova;
	slen = sg[0].len;
	for (i = 1; i < nents; i++) {
		uint64_t e = sg[i].iova, elen = sg[i].len;

		if (siova + slen == e &&
		    (!dev->max_segment_size ||
		     slen + elen <= dev->max_segment_size) &&
		    !crosses(siova, slen + elen, b)) {
			slen += elen;
			continue;
		}
		sg[nseg].seg_iova = siova;
		sg[nseg].seg_len = slen;
		nseg++;
		siova = e;
		slen = elen;
	}
	sg[nseg].seg_iova = siova;
	sg[nseg].seg_len = slen;
	return (int)(nseg + 1);

fail:
	for (i = 0; i < nents; i++) {
		if (pl[i].cls == CLASS_BOUNCE && pl[i].done) {
			struct bounce_run run;

			if (!bounce_claim(dev->pool, pl[i].addr, sg[i].len,
					  (uint8_t)dir, BOUNCE_F_SG, sg[i].va,
					  &run))
				bounce_release(dev->pool, &run);
		}
		if (pl[i].inserted)
			smap_unlink_locked(dev, pl[i].rec);
		iodma_free(pl[i].rec);
	}
	if (grp_mapped) {
		/* If the backend refuses, elements stay reachable: say so. */
		if (iodma_domain_unmap_gaps(dev->domain, grp->iova, grp->len,
					    NULL))
			ret = -EUCLEAN;
		else if (ret == -EUCLEAN)
			ret = -EIO;
	}
	if (grp_iova)
		(void)iodma_iova_free(dev->domain, grp->iova, grp->len);
	iodma_free(grp);
	os_mutex_unlock(&dev->lock);
	iodma_free(pl);
	return ret;
}

IODMA_EXPORT int iodma_unmap_sg(struct iodma_dev *dev, struct iodma_sg *sg,
				size_t nents, enum iodma_dir dir)
{
	struct sg_group *grp = NULL;
	uint64_t ndyn = 0;
	size_t i;
	int ret;

	if (!dev || !sg || nents == 0 || !dir_valid(dir))
		return -EINVAL;
	os_mutex_lock(&dev->lock);
	/* Validate the whole list before touching anything. */
	for (i = 0; i < nents; i++) {
		struct bounce_run run;
		struct smap *s;

		if (bounce_owns(dev->pool, sg[i].iova)) {
			if (bounce_find(dev->pool, sg[i].iova, sg[i].len, &run) ||
			    run.iova != sg[i].iova || run.len != sg[i].len ||
			    run.dir != dir || !(run.flags & BOUNCE_F_SG) ||
			    run.orig != sg[i].va)
				goto einval;
			continue;
		}
		s = smap_find_exact_locked(dev, sg[i].iova, sg[i].len, dir,
					   true, sg[i].va);
		if (!s)
			goto einval;
		if (s->kind == SMAP_SG_DYN) {
			if (grp && s->grp != grp)
				goto einval;
			grp = s->grp;
			ndyn++;
		}
	}
	if (grp && ndyn != grp->nelems)
		goto einval;
	/* The one step that can fail: the domain unmap of the group.  Kept
	 * under dev->lock so the list cannot change meanwhile. */
	if (grp) {
		ret = iodma_domain_unmap_gaps(dev->domain, grp->iova, grp->len,
					      NULL);
		if (ret) {
			os_mutex_unlock(&dev->lock);
			return ret;
		}
	}
	for (i = 0; i < nents; i++) {
		struct bounce_run run;
		struct smap *s;

		if (bounce_owns(dev->pool, sg[i].iova)) {
			if (!bounce_claim(dev->pool, sg[i].iova, sg[i].len,
					  (uint8_t)dir, BOUNCE_F_SG, sg[i].va,
					  &run))
				unmap_bounce(dev, &run);
			continue;
		}
		s = smap_find_exact_locked(dev, sg[i].iova, sg[i].len, dir,
					   true, sg[i].va);
		if (!s)
			continue; /* the same element listed twice */
		if (s->kind == SMAP_REG)
			s->reg->live--;
		smap_unlink_locked(dev, s);
		cache_for_cpu(dev, s->va, s->len, dir);
		iodma_free(s);
	}
	if (grp) {
		(void)iodma_iova_free(dev->domain, grp->iova, grp->len);
		iodma_free(grp);
	}
	os_mutex_unlock(&dev->lock);
	return 0;
einval:
	os_mutex_unlock(&dev->lock);
	return -EINVAL;
}

static int sync_sg(struct iodma_dev *dev, struct iodma_sg *sg, size_t nents,
		   enum iodma_dir dir, bool for_cpu)
{
	if (!dev || !sg || nents == 0)
		return -EINVAL;
	for (size_t i = 0; i < nents; i++) {
		int ret = sync_single(dev, sg[i].iova, sg[i].len, dir, for_cpu);

		if (ret)
			return ret;
	}
	return 0;
}

IODMA_EXPORT int iodma_sync_sg_for_cpu(struct iodma_dev *dev,
				       struct iodma_sg *sg, size_t nents,
				       enum iodma_dir dir)
{
	return sync_sg(dev, sg, nents, dir, true);
}

IODMA_EXPORT int iodma_sync_sg_for_device(struct iodma_dev *dev,
					  struct iodma_sg *sg, size_t nents,
					  enum iodma_dir dir)
{
	return sync_sg(dev, sg, nents, dir, false);
}

/* ---- registered memory ----------------------------------------------------- */

/* Direct mode: record the bus address of every 4 KiB page of the range.
 * @check_only: only verify every page is below the mask. */
static int reg_direct_pages(struct iodma_dev *dev, uint64_t v, uint64_t len,
			    bool check_only, uint64_t *first)
{
	uint64_t pg = os_page_size(), pa = 0;
	int ret;

	for (uint64_t off = 0; off < len; off += REGMAP_PAGE_SIZE) {
		if (off % pg == 0) {
			ret = dev->v2p(dev->v2p_arg, (const void *)(uintptr_t)(v + off),
				       &pa);
			if (ret)
				return ret;
			pa = align_down(pa, pg);
			if (range_last(pa, pg) > dev->dma_mask || pa + pg < pa)
				return -ERANGE;
			if (off == 0)
				*first = pa;
		}
		if (!check_only)
			regmap_set_page(dev->regmap, v + off, pa + off % pg);
	}
	return 0;
}

IODMA_EXPORT int iodma_dev_register(struct iodma_dev *dev, void *va,
				    size_t len, uint64_t *iova)
{
	uint64_t v = (uintptr_t)va, io = 0, g;
	struct dma_reg *r;
	bool iova_done = false;
	size_t i;
	int ret;

	if (!dev || !va || !range_valid(v, len))
		return -EINVAL;
	g = dev->granule;
	if (!is_aligned(v, g) || !is_aligned(len, g) ||
	    range_last(v, len) >= (1ull << REGMAP_VA_BITS))
		return -EINVAL;
	r = iodma_calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	os_mutex_lock(&dev->lock);
	i = reg_upper_locked(dev, v);
	if ((i > 0 && ranges_overlap(dev->regs[i - 1]->va,
				     dev->regs[i - 1]->len, v, len)) ||
	    (i < dev->nr_regs && ranges_overlap(dev->regs[i]->va,
						dev->regs[i]->len, v, len))) {
		ret = -EEXIST;
		goto fail;
	}
	if (dev->nr_regs == dev->cap_regs) {
		size_t cap = dev->cap_regs ? dev->cap_regs * 2 : 8;
		struct dma_reg **n = iodma_realloc(dev->regs, cap * sizeof(*n));

		if (!n) {
			ret = -ENOMEM;
			goto fail;
		}
		dev->regs = n;
		dev->cap_regs = cap;
	}
	/* Direct mode records bus pages one by one: leaves everywhere. */
	ret = dev->domain ? regmap_reserve(dev->regmap, v, len) :
			    regmap_reserve_pages(dev->regmap, v, len);
	if (ret)
		goto fail;
	if (dev->domain) {
		ret = iodma_iova_alloc(dev->domain, len, g, dev->dma_mask, &io);
		if (ret)
			goto fail;
		iova_done = true;
		ret = iodma_domain_map(dev->domain, io, len, va, IODMA_PERM_RW);
		if (ret) {
			ret = dyn_map_failed(dev, io, len, ret);
			goto fail;
		}
		STAT_ADD(dev, st_mappings_created, 1);
		regmap_set(dev->regmap, v, len, io);
	} else {
		ret = reg_direct_pages(dev, v, len, true, &io);
		if (!ret)
			ret = reg_direct_pages(dev, v, len, false, &io);
		if (ret) {
			regmap_clear(dev->regmap, v, len);
			goto fail;
		}
	}
	r->va = v;
	r->len = len;
	r->iova = io;
	memmove(&dev->regs[i + 1], &dev->regs[i],
		(dev->nr_regs - i) * sizeof(*dev->regs));
	dev->regs[i] = r;
	dev->nr_regs++;
	os_mutex_unlock(&dev->lock);
	if (iova)
		*iova = io;
	return 0;
fail:
	if (iova_done)
		(void)iodma_iova_free(dev->domain, io, len);
	os_mutex_unlock(&dev->lock);
	iodma_free(r);
	return ret;
}

IODMA_EXPORT int iodma_dev_unregister(struct iodma_dev *dev, void *va,
				      size_t len)
{
	uint64_t v = (uintptr_t)va;
	struct dma_reg *r;
	size_t i;
	int ret;

	if (!dev)
		return -EINVAL;
	os_mutex_lock(&dev->lock);
	i = reg_upper_locked(dev, v);
	r = i > 0 ? dev->regs[i - 1] : NULL;
	if (!r || r->va != v || r->len != len || r->dying) {
		os_mutex_unlock(&dev->lock);
		return -ENOENT;
	}
	if (r->live) {
		os_mutex_unlock(&dev->lock);
		return -EBUSY;
	}
	r->dying = true;
	regmap_clear(dev->regmap, v, len);
	os_mutex_unlock(&dev->lock);

	if (dev->domain) {
		ret = iodma_domain_unmap(dev->domain, r->iova, len);
		if (ret) {
			os_mutex_lock(&dev->lock);
			regmap_set(dev->regmap, v, len, r->iova);
			r->dying = false;
			os_mutex_unlock(&dev->lock);
			return ret;
		}
		(void)iodma_iova_free(dev->domain, r->iova, len);
	}
	os_mutex_lock(&dev->lock);
	i = reg_upper_locked(dev, v) - 1;
	assert(dev->regs[i] == r);
	memmove(&dev->regs[i], &dev->regs[i + 1],
		(dev->nr_regs - i - 1) * sizeof(*dev->regs));
	dev->nr_regs--;
	os_mutex_unlock(&dev->lock);
	iodma_free(r);
	return 0;
}

IODMA_EXPORT int iodma_va_to_iova(const struct iodma_dev *dev, const void *va,
				  size_t len, uint64_t *iova)
{
	/* (len == 0 fails regmap_lookup()'s first test.)  BRANCH_SEP():
	 * two branches are fewer instructions than GCC's setcc merge. */
	if (__builtin_expect(!dev, 0))
		return -ENOENT;
	BRANCH_SEP();
	if (__builtin_expect(!iova, 0))
		return -ENOENT;
	return regmap_lookup(dev->regmap, (uintptr_t)va, len, iova);
}

/* ---- MMIO windows ------------------------------------------------------------ */

IODMA_EXPORT int iodma_dev_add_mmio(struct iodma_dev *dev, uint64_t paddr,
				    uint64_t len, void *va)
{
	unsigned int n;

	if (!dev || !va || !range_valid(paddr, len) ||
	    !range_valid((uintptr_t)va, len))
		return -EINVAL;
	os_mutex_lock(&dev->mmio_lock);
	n = atomic_load_explicit(&dev->nr_mmio, memory_order_relaxed);
	for (unsigned int i = 0; i < n; i++) {
		if (ranges_overlap(dev->mmio[i].paddr, dev->mmio[i].len,
				   paddr, len)) {
			os_mutex_unlock(&dev->mmio_lock);
			return -EEXIST;
		}
	}
	if (n == DMA_MAX_MMIO) {
		os_mutex_unlock(&dev->mmio_lock);
		return -ENOSPC;
	}
	dev->mmio[n] = (struct mmio_win){ .paddr = paddr, .len = len, .va = va };
	atomic_store_explicit(&dev->nr_mmio, n + 1, memory_order_release);
	os_mutex_unlock(&dev->mmio_lock);
	return 0;
}

IODMA_EXPORT int iodma_mmio_phys_to_virt(const struct iodma_dev *dev,
					 uint64_t paddr, uint64_t len,
					 void **va)
{
	unsigned int n;

	if (!dev || !va || !range_valid(paddr, len))
		return -EFAULT;
	n = atomic_load_explicit(&((struct iodma_dev *)dev)->nr_mmio,
				 memory_order_acquire);
	for (unsigned int i = 0; i < n; i++) {
		const struct mmio_win *w = &dev->mmio[i];

		if (range_contains(w->paddr, w->len, paddr, len)) {
			*va = (uint8_t *)w->va + (paddr - w->paddr);
			return 0;
		}
	}
	return -EFAULT;
}

/* ---- VirtIoHal ------------------------------------------------------------------ */

IODMA_EXPORT int iodma_hal_dma_alloc(struct iodma_dev *dev, size_t pages,
				     enum iodma_dir dir, uint64_t *paddr,
				     void **va)
{
	size_t pg = os_page_size();

	if (pages == 0 || pages > SIZE_MAX / pg)
		return -EINVAL;
	return iodma_alloc_coherent(dev, pages * pg, va, paddr);
}

IODMA_EXPORT int iodma_hal_dma_dealloc(struct iodma_dev *dev, uint64_t paddr,
				       void *va, size_t pages)
{
	size_t pg = os_page_size();

	if (pages == 0 || pages > SIZE_MAX / pg)
		return -EINVAL;
	return iodma_free_coherent(dev, pages * pg, va, paddr);
}

IODMA_EXPORT int iodma_hal_share(struct iodma_dev *dev, void *buf, size_t len,
				 enum iodma_dir dir, uint64_t *paddr)
{
	return iodma_map_single(dev, buf, len, dir, paddr);
}

IODMA_EXPORT int iodma_hal_unshare(struct iodma_dev *dev, uint64_t paddr,
				   void *buf, size_t len, enum iodma_dir dir)
{
	if (!buf)
		return -EINVAL;
	return unmap_single(dev, paddr, len, dir, buf);
}

/* ---- statistics ------------------------------------------------------------------ */

IODMA_EXPORT int iodma_dev_get_stats(const struct iodma_dev *dev,
				     struct iodma_dev_stats *st)
{
	struct iodma_dev_stats s = IODMA_STRUCT_INIT(struct iodma_dev_stats);

	if (!dev || !st)
		return -EINVAL;
	s.maps = STAT_GET(dev, st_maps) + STAT_GET(dev, st_bounce_fast);
	s.registered_hits = STAT_GET(dev, st_registered_hits);
	s.mappings_created = STAT_GET(dev, st_mappings_created);
	s.bounces = STAT_GET(dev, st_bounces) + STAT_GET(dev, st_bounce_fast);
	s.bounce_bytes = STAT_GET(dev, st_bounce_bytes);
	s.bounce_slots_total = bounce_slots_total(dev->pool);
	s.bounce_slots_used = bounce_slots_used(dev->pool);
	s.bounce_full = STAT_GET(dev, st_bounce_full);
	s.coherent_allocs = STAT_GET(dev, st_coherent);
	s.leaked = STAT_GET(dev, st_leaked);
	return out_copy(st, &s, sizeof(s),
			IODMA_OFFSETOFEND(struct iodma_dev_stats, leaked));
}
