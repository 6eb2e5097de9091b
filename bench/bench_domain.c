/* SPDX-License-Identifier: MIT */
/*
 * bench_domain.c - strict map + unmap through the soft IOMMU
 * (iodma_domain_map + iodma_domain_unmap of 4 KiB at a random free slot
 * between the live mappings) with 16, 1,024 and 65,536 live mappings, beside
 * two baselines measured in the same run on the same keys:
 *   GLib's GTree (g_tree_new_full, the balanced tree QEMU's util/iova-tree.c
 *   keeps its IOVA -> host ranges in): overlap lookup + insert of a
 *   g_new'd range, then lookup + remove (the tree frees it), as QEMU's
 *   iova_tree_insert / iova_tree_remove do;
 *   a sorted array of ranges: binary search, overlap check, memmove in;
 *   binary search, memmove out.
 * And batched: 64 maps then one iodma_domain_unmap_gaps over them, per map.
 * And at 65,536 live, a strict guest with RING_Q mappings in flight: each
 * pair unmaps the oldest of them and maps a new one (distinct random free
 * slots), beside the same keys with one in flight.
 * Medians of 5 runs in process CPU time, each run interleaved slice by
 * slice (bench.h: bench_interleave(); a NOTE says when an operation
 * blocks, with its wall time); --ir runs each loop once for callgrind.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <iodma.h>
#ifdef BENCH_HAVE_GLIB
#include <glib.h>
#endif

#include "bench.h"

#define PG	0x1000ull
#define BASE	0x100000000ull	/* 4 GiB */
#define NKEYS	(1u << 14)
#define IR_OPS	2000
#define RING_Q	24		/* mappings in flight (ring row) */

static volatile uint64_t sink;

static void die(const char *what, int err)
{
	fprintf(stderr, "bench_domain: %s: %s\n", what, iodma_strerror(err));
	exit(1);
}

struct range {
	uint64_t iova, len, va;
	uint32_t perm;
};

/* ---- the sorted-array baseline -------------------------------------------- */

struct sarr {
	struct range *r;
	size_t n;
};

/* First index whose iova is > @iova. */
static size_t sarr_upper(const struct sarr *a, uint64_t iova)
{
	size_t lo = 0, hi = a->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (a->r[mid].iova <= iova)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int sarr_insert(struct sarr *a, const struct range *x)
{
	size_t i = sarr_upper(a, x->iova);

	if ((i > 0 && a->r[i - 1].iova + a->r[i - 1].len > x->iova) ||
	    (i < a->n && a->r[i].iova < x->iova + x->len))
		return -1;
	memmove(&a->r[i + 1], &a->r[i], (a->n - i) * sizeof(*a->r));
	a->r[i] = *x;
	a->n++;
	return 0;
}

static int sarr_remove(struct sarr *a, uint64_t iova, uint64_t len)
{
	size_t i = sarr_upper(a, iova);

	if (i == 0 || a->r[i - 1].iova != iova || a->r[i - 1].len != len)
		return -1;
	i--;
	memmove(&a->r[i], &a->r[i + 1], (a->n - i - 1) * sizeof(*a->r));
	a->n--;
	return 0;
}

/* ---- the GTree baseline ----------------------------------------------------- */

#ifdef BENCH_HAVE_GLIB
/* Overlapping ranges compare equal: a lookup finds any overlap. */
static gint range_cmp(gconstpointer x, gconstpointer y, gpointer unused)
{
	const struct range *a = x, *b = y;

	if (a->iova + a->len <= b->iova)
		return -1;
	if (b->iova + b->len <= a->iova)
		return 1;
	return 0;
}

static GTree *gt_new(void)
{
	return g_tree_new_full(range_cmp, NULL, g_free, NULL);
}

static int gt_insert(GTree *t, const struct range *x)
{
	struct range *n;

	if (g_tree_lookup(t, x))
		return -1;
	n = g_new(struct range, 1);
	*n = *x;
	g_tree_insert(t, n, n);
	return 0;
}

static int gt_remove(GTree *t, uint64_t iova, uint64_t len)
{
	struct range q = { .iova = iova, .len = len };
	const struct range *f = g_tree_lookup(t, &q);

	if (!f || f->iova != iova || f->len != len)
		return -1;
	g_tree_remove(t, &q);
	return 0;
}
#endif

/* ---- the contestants ------------------------------------------------------------ */

struct dctx {
	uint64_t n;
	struct iodma_domain *d;
	struct sarr sa;
#ifdef BENCH_HAVE_GLIB
	GTree *gt;
#endif
	uint64_t keys[NKEYS];	/* free odd slots */
	unsigned long cur[3];	/* where each contestant goes on in keys[] */
	char *host;
	/* Ring row: distinct free odd slots, the first half for the ring,
	 * the second for its one-in-flight baseline. */
	uint64_t rkeys[NKEYS];
	uint64_t ring[RING_Q];
	unsigned long rnext[2];
};

/* Map one page at @iova (read/write). */
static void map_at(struct dctx *c, uint64_t iova)
{
	int ret = iodma_domain_map(c->d, iova, PG, c->host, IODMA_PERM_RW);

	if (ret)
		die("map", ret);
}

/* One strict pair at @iova. */
static void pair_at(struct dctx *c, uint64_t iova)
{
	int ret;

	map_at(c, iova);
	ret = iodma_domain_unmap(c->d, iova, PG);
	if (ret)
		die("unmap", ret);
}

/* The ring: unmap the oldest of RING_Q in flight, map a new one. */
static double p_ring(void *ctx, unsigned long ops)
{
	struct dctx *c = ctx;
	double t0 = bench_now_ns();

	for (unsigned long i = 0; i < ops; i++, c->rnext[0]++) {
		uint64_t *slot = &c->ring[c->rnext[0] % RING_Q];
		int ret = iodma_domain_unmap(c->d, *slot, PG);

		if (ret)
			die("ring unmap", ret);
		*slot = c->rkeys[(RING_Q + c->rnext[0]) % (NKEYS / 2)];
		map_at(c, *slot);
	}
	return (bench_now_ns() - t0) / (double)ops;
}

/* Its baseline: map + unmap of one at a time, keys of the other half. */
static double p_one(void *ctx, unsigned long ops)
{
	struct dctx *c = ctx;
	double t0 = bench_now_ns();

	for (unsigned long i = 0; i < ops; i++, c->rnext[1]++)
		pair_at(c, c->rkeys[NKEYS / 2 + c->rnext[1] % (NKEYS / 2)]);
	return (bench_now_ns() - t0) / (double)ops;
}

/* The ring row (65,536 live): RING_Q strict mappings in flight. */
static void bench_ring(struct dctx *c)
{
	bench_fn fn[2] = { p_ring, p_one };
	unsigned long nops[2] = { 6400, 6400 };
	double med[2], wall[2], blk[2];
	uint64_t n = c->n;

	/* A random choice of NKEYS distinct odd slots (n >= NKEYS). */
	for (uint64_t i = 0; i < NKEYS; i++)
		c->rkeys[i] = i;
	for (uint64_t i = NKEYS; i < n; i++) {
		uint64_t j = bench_rnd() % (i + 1);

		if (j < NKEYS)
			c->rkeys[j] = i;
	}
	for (unsigned int i = 0; i < NKEYS; i++)
		c->rkeys[i] = BASE + (2 * c->rkeys[i] + 1) * PG;
	for (unsigned int i = 0; i < RING_Q; i++) {
		c->ring[i] = c->rkeys[i];
		map_at(c, c->ring[i]);
	}
	bench_interleave(fn, c, nops, 2, med, wall, blk);
	bench_block_note("ring.64k", med[0], wall[0], blk[0]);
	bench_row("ring.64k", "strict map+unmap 4 KiB, 65,536 live, 24 in flight",
		  "ns", med[0], "same keys, 1 in flight", med[1], BT_VALUE_LE,
		  500, NULL, NULL);
}

static double p_iodma(void *ctx, unsigned long ops)
{
	struct dctx *c = ctx;
	unsigned long k0 = c->cur[0];
	double t0 = bench_now_ns();

	for (unsigned long i = 0; i < ops; i++)
		pair_at(c, c->keys[(k0 + i) % NKEYS]);
	c->cur[0] = k0 + ops;
	return (bench_now_ns() - t0) / (double)ops;
}

static double p_sarr(void *ctx, unsigned long ops)
{
	struct dctx *c = ctx;
	unsigned long k0 = c->cur[1];
	double t0 = bench_now_ns();

	for (unsigned long i = 0; i < ops; i++) {
		struct range x = { c->keys[(k0 + i) % NKEYS], PG, (uintptr_t)c->host, 3 };

		if (sarr_insert(&c->sa, &x) || sarr_remove(&c->sa, x.iova, PG))
			die("sorted array", -22);
	}
	c->cur[1] = k0 + ops;
	return (bench_now_ns() - t0) / (double)ops;
}

#ifdef BENCH_HAVE_GLIB
static double p_gtree(void *ctx, unsigned long ops)
{
	struct dctx *c = ctx;
	unsigned long k0 = c->cur[2];
	double t0 = bench_now_ns();

	for (unsigned long i = 0; i < ops; i++) {
		struct range x = { c->keys[(k0 + i) % NKEYS], PG, (uintptr_t)c->host, 3 };

		if (gt_insert(c->gt, &x) || gt_remove(c->gt, x.iova, PG))
			die("gtree", -22);
	}
	c->cur[2] = k0 + ops;
	return (bench_now_ns() - t0) / (double)ops;
}
#endif

/* 64 maps of 4 KiB above the live set, then one unmap_gaps over all 64;
 * ns per map. */
static double p_batch(void *ctx, unsigned long batches)
{
	struct dctx *c = ctx;
	uint64_t top = BASE + 2 * c->n * PG + PG, u;
	double t0 = bench_now_ns();

	for (unsigned long k = 0; k < batches; k++) {
		uint64_t first = top + (bench_rnd() % 1024) * 64 * PG;
		int ret;

		for (uint64_t j = 0; j < 64; j++)
			map_at(c, first + j * PG);
		ret = iodma_domain_unmap_gaps(c->d, first, 64 * PG, &u);
		if (ret || u != 64 * PG)
			die("unmap_gaps", ret);
	}
	return (bench_now_ns() - t0) / (double)batches / 64;
}

static void run_size(uint64_t n, const char *tag, const char *label)
{
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct dctx *c = calloc(1, sizeof(*c));
	double mi, ms, mg, mb;
	char id[64], fig[96], k1[64], k2[64], k3[64], k4[64];
	unsigned long ops = 6400, sops = n > 10000 ? 2000 : 200000;
	unsigned long irs = n > 10000 ? 100 : IR_OPS;	/* sorted array, Ir */
	int ret;

	if (!c)
		die("calloc", -12);
	c->n = n;
	c->host = mmap(NULL, PG, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	so.max_mappings = 1u << 20;
	o.backend_config = &so;
	ret = iodma_domain_create(&o, &c->d);
	if (ret)
		die("domain_create", ret);
	c->sa.r = malloc((n + 1) * sizeof(*c->sa.r));
#ifdef BENCH_HAVE_GLIB
	c->gt = gt_new();
#endif
	for (uint64_t i = 0; i < n; i++) {
		struct range x = { BASE + 2 * i * PG, PG, (uintptr_t)c->host, 3 };

		map_at(c, x.iova);
		if (sarr_insert(&c->sa, &x))
			die("sorted array", -22);
#ifdef BENCH_HAVE_GLIB
		if (gt_insert(c->gt, &x))
			die("gtree", -22);
#endif
	}
	for (unsigned int k = 0; k < NKEYS; k++)
		c->keys[k] = BASE + (2 * (bench_rnd() % n) + 1) * PG;
	snprintf(k1, sizeof(k1), "pair.%s.iodma", tag);
	snprintf(k2, sizeof(k2), "pair.%s.gtree", tag);
	snprintf(k3, sizeof(k3), "pair.%s.sarray", tag);
	snprintf(k4, sizeof(k4), "batch64.%s.iodma", tag);
	if (bench_ir_on) {
		bench_ir_begin();
		p_iodma(c, IR_OPS);
		bench_ir_end(k1, IR_OPS);
#ifdef BENCH_HAVE_GLIB
		bench_ir_begin();
		p_gtree(c, IR_OPS);
		bench_ir_end(k2, IR_OPS);
#endif
		bench_ir_begin();
		p_sarr(c, irs);
		bench_ir_end(k3, irs);
		bench_ir_begin();
		p_batch(c, IR_OPS / 64);
		bench_ir_end(k4, (IR_OPS / 64) * 64);
		goto out;
	}
	{
		/* Sized to ~0.1 s per run today; the sorted array moves n/2
		 * entries per operation. */
		bench_fn fn[4] = { p_iodma, p_batch, p_sarr, NULL };
		unsigned long nops[4] = { ops, ops / 64, sops, ops * 10 };
		double med[4] = { 0 }, wall[4] = { 0 }, blk[4] = { 0 };
		int k = 3;

#ifdef BENCH_HAVE_GLIB
		fn[3] = p_gtree;
		k = 4;
#endif
		bench_interleave(fn, c, nops, k, med, wall, blk);
		med[1] /= 64;	/* p_batch's operation is a batch of 64 maps */
		wall[1] /= 64;
		blk[1] /= 64;
		snprintf(id, sizeof(id), "pair.%s", tag);
		bench_block_note(id, med[0], wall[0], blk[0]);
		snprintf(id, sizeof(id), "batch64.%s", tag);
		bench_block_note(id, med[1], wall[1], blk[1]);
		mi = med[0];
		mb = med[1];
		ms = med[2];
		mg = med[3];
	}
	{
		enum bench_target kind = n == 16 || n == 65536 ? BT_VALUE_LE : BT_NONE;
		double bar = n == 16 ? 250 : 500;

		snprintf(id, sizeof(id), "pair.%s", tag);
		snprintf(fig, sizeof(fig), "strict map+unmap 4 KiB, %s live", label);
#ifdef BENCH_HAVE_GLIB
		bench_row(id, fig, "ns", mi, "GTree ins+rm", mg, kind, bar, k1, k2);
		snprintf(id, sizeof(id), "pair.%s.sa", tag);
		snprintf(fig, sizeof(fig), "  (same) vs sorted array, %s live", label);
		bench_row(id, fig, "ns", mi, "sorted-array ins+rm", ms, BT_NONE, 0,
			  k1, k3);
#else
		bench_row(id, fig, "ns", mi, "sorted-array ins+rm", ms, kind, bar,
			  k1, k3);
		(void)mg;
#endif
		snprintf(id, sizeof(id), "batch64.%s", tag);
		snprintf(fig, sizeof(fig), "64 maps + 1 unmap_gaps, per map, %s live",
			 label);
#ifdef BENCH_HAVE_GLIB
		bench_row(id, fig, "ns", mb, "GTree ins+rm", mg, BT_VALUE_LE, 150,
			  k4, k2);
#else
		bench_row(id, fig, "ns", mb, "sorted-array ins+rm", ms, BT_VALUE_LE,
			  150, k4, k3);
#endif
	}
	if (n == 65536)
		bench_ring(c);
out:
	iodma_domain_destroy(c->d);
#ifdef BENCH_HAVE_GLIB
	g_tree_destroy(c->gt);
#endif
	free(c->sa.r);
	munmap(c->host, PG);
	free(c);
}

int main(int argc, char **argv)
{
	bench_ir_mode(argc, argv);
	run_size(16, "16", "16");
	run_size(1024, "1k", "1,024");
	run_size(65536, "64k", "65,536");
	return (int)(sink & 0);
}
