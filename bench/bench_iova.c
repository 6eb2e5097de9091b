// SPDX-License-Identifier: MIT
/*
 * bench_iova.c - IOVA allocator: ns per alloc+free pair with the rcache,
 * through the tree only, and for a naive baseline (sorted array of busy
 * ranges, linear top-down first fit), each with 10k live allocations in
 * place; then a long run (2M random ops, ~100k live) whose ns/op per
 * 200k-op window must stay flat (row: last window against the second).
 * Medians of 5 runs, in CPU time (process CPU for the pairs, thread CPU
 * for the long run's row; its note gives wall/cpu per window); rows in the
 * format of bench.h; --ir counts the pair loops under callgrind.
 * Issue 12's rows: the 4 KiB (cache path) and 256 KiB (tree path) pair
 * with 16, 1,024 and 65,536 live allocations of the same size, beside a
 * bare free-list pop+push measured in the same run, each judged on its
 * Ir/op against the absolute bar (target "Ir<=X"); two threads'
 * pair rate against one thread's (wall time: needs two idle cores); and
 * iodma_map_single + iodma_unmap_single of 4 KiB through a soft domain
 * without bounce, beside a malloc+free pair.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>

#include <iodma.h>

#include "iova.h"
#include "util.h"
#include "bench.h"

#define G       4096ull
#define SPACE   (1ull << 39)
#define RUNS    BENCH_RUNS
#define LIVE    10000
#define FIFO    32

static void die(const char *what)
{
	fprintf(stderr, "bench_iova: %s failed\n", what);
	exit(1);
}

/* ---- the naive baseline ---------------------------------------------------- */

struct naive {
	uint64_t *start, *len;	/* busy ranges sorted by start */
	size_t n, cap;
	uint64_t lo, hi;	/* space [lo, hi) */
};

static void naive_init(struct naive *nv, uint64_t lo, uint64_t hi)
{
	memset(nv, 0, sizeof(*nv));
	nv->lo = lo;
	nv->hi = hi;
	nv->cap = 1 << 20;
	nv->start = malloc(nv->cap * sizeof(uint64_t));
	nv->len = malloc(nv->cap * sizeof(uint64_t));
	if (!nv->start || !nv->len)
		die("malloc");
}

static void naive_fini(struct naive *nv)
{
	free(nv->start);
	free(nv->len);
}

/* Highest fit below the top, scanning the gaps from the top down. */
static int naive_get(struct naive *nv, uint64_t len, uint64_t align,
		     uint64_t *iova)
{
	uint64_t top = nv->hi;
	size_t i = nv->n;

	for (;;) {
		uint64_t gap_lo = i ? nv->start[i - 1] + nv->len[i - 1] : nv->lo;

		if (top - gap_lo >= len) {
			uint64_t cand = align_down(top - len, align);

			if (cand >= gap_lo) {
				if (nv->n == nv->cap)
					return -1;
				memmove(&nv->start[i + 1], &nv->start[i],
					(nv->n - i) * sizeof(uint64_t));
				memmove(&nv->len[i + 1], &nv->len[i],
					(nv->n - i) * sizeof(uint64_t));
				nv->start[i] = cand;
				nv->len[i] = len;
				nv->n++;
				*iova = cand;
				return 0;
			}
		}
		if (i == 0)
			return -1;
		top = nv->start[--i];
	}
}

static int naive_put(struct naive *nv, uint64_t iova, uint64_t len)
{
	size_t lo = 0, hi = nv->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (nv->start[mid] < iova)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == nv->n || nv->start[lo] != iova || nv->len[lo] != len)
		return -1;
	memmove(&nv->start[lo], &nv->start[lo + 1],
		(nv->n - lo - 1) * sizeof(uint64_t));
	memmove(&nv->len[lo], &nv->len[lo + 1],
		(nv->n - lo - 1) * sizeof(uint64_t));
	nv->n--;
	return 0;
}

/* ---- one allocator interface for the three contestants --------------------- */

struct contestant {
	struct iova_alloc *a;	/* NULL: the naive one */
	struct naive nv;
};

static void c_get(struct contestant *c, uint64_t len, uint64_t *iova)
{
	int r = c->a ? iova_alloc_get(c->a, len, G, UINT64_MAX, iova) :
		       naive_get(&c->nv, len, G, iova);

	if (r)
		die("get");
}

static void c_put(struct contestant *c, uint64_t iova, uint64_t len)
{
	int r = c->a ? iova_alloc_put(c->a, iova, len) :
		       naive_put(&c->nv, iova, len);

	if (r)
		die("put");
}

/* 10k live allocations of 1..64 pages packed at the top, so new ones land
 * below them (a first-fit scan crosses all of them). */
static void c_setup(struct contestant *c, int kind)
{
	uint64_t iova;
	int i;

	memset(c, 0, sizeof(*c));
	if (kind == 2) {
		naive_init(&c->nv, 0, SPACE);
	} else {
		struct iodma_iova_range r = { 0, SPACE };

		if (iova_alloc_create(G, &r, 1, NULL, 0, &c->a))
			die("create");
		iova_alloc_set_caching(c->a, kind == 0);
	}
	for (i = 0; i < LIVE; i++)
		c_get(c, (1 + (uint64_t)i % 64) * G, &iova);
}

static void c_teardown(struct contestant *c)
{
	if (c->a)
		iova_alloc_destroy(c->a);
	else
		naive_fini(&c->nv);
}

/* ns per alloc+free pair: sizes 1, 2, 4, 8 pages, FIFO of 32 outstanding.
 * In Ir mode the loop alone is counted under @irkey. */
static double pairs(int kind, long n, const char *irkey)
{
	struct contestant c;
	uint64_t fifo_iova[FIFO], fifo_len[FIFO];
	double t0, t1;
	long i;

	c_setup(&c, kind);
	for (i = 0; i < FIFO; i++) {
		fifo_len[i] = (1ull << (i & 3)) * G;
		c_get(&c, fifo_len[i], &fifo_iova[i]);
	}
	if (irkey)
		bench_ir_begin();
	t0 = bench_proc_ns();
	for (i = 0; i < n; i++) {
		int k = (int)(i % FIFO);

		c_put(&c, fifo_iova[k], fifo_len[k]);
		c_get(&c, fifo_len[k], &fifo_iova[k]);
	}
	t1 = bench_proc_ns();
	if (irkey)
		bench_ir_end(irkey, (unsigned long)n);
	c_teardown(&c);
	return (t1 - t0) / (double)n;
}

/* ---- the long run ------------------------------------------------------------ */

#define LR_OPS    2000000
#define LR_WIN    200000
#define LR_LIVE   100000
#define LR_NWIN   (LR_OPS / LR_WIN)

static void long_run(double out[LR_NWIN], double cpu[LR_NWIN])
{
	static uint64_t liova[2 * LR_LIVE], llen[2 * LR_LIVE];
	struct iodma_iova_range r = { 0, SPACE };
	struct iova_alloc *a;
	size_t nr = 0;
	int w;

	if (iova_alloc_create(G, &r, 1, NULL, 0, &a))
		die("create");
	for (w = 0; w < LR_NWIN; w++) {
		double t0 = bench_now_ns(), c0 = bench_cpu_ns();
		long i;

		for (i = 0; i < LR_WIN; i++) {
			uint64_t x = bench_rnd();
			/* alloc with probability ~ (2*LIVE - nr) / (2*LIVE) */
			bool alloc = nr == 0 || (x % (2 * LR_LIVE)) >= nr;

			if (alloc && nr < 2 * LR_LIVE) {
				uint64_t pages = (x >> 20) & 3 ?
						 1ull << ((x >> 24) % 6) :
						 1 + ((x >> 24) % 100);
				uint64_t align = (x >> 32) & 7 ? G : pages * G;

				if (!is_pow2(align))
					align = G;
				if (iova_alloc_get(a, pages * G, align,
						   UINT64_MAX, &liova[nr]))
					die("long-run get");
				llen[nr++] = pages * G;
			} else {
				size_t k = (size_t)((x >> 16) % nr);

				if (iova_alloc_put(a, liova[k], llen[k]))
					die("long-run put");
				liova[k] = liova[--nr];
				llen[k] = llen[nr];
			}
		}
		out[w] = (bench_now_ns() - t0) / LR_WIN;
		cpu[w] = (bench_cpu_ns() - c0) / LR_WIN;
	}
	iova_alloc_destroy(a);
}


/* ---- issue 12: the pair at 16 / 1,024 / 65,536 live ------------------------ */

#define P_FIFO  32
#define P_NLIVE 3
static const unsigned long p_live[P_NLIVE] = { 16, 1024, 65536 };

/* The in-run baseline: a bare LIFO free list of IOVAs, one pop and one push
 * per pair (the least any cache can do). */
struct flist {
	uint64_t v[P_FIFO];
	unsigned int n;
};

static volatile uint64_t sink;

static double base_pairs(void *ctx, unsigned long n)
{
	struct flist *f = ctx;
	double t0 = bench_proc_ns();

	for (unsigned long i = 0; i < n; i++) {
		uint64_t x = f->v[--f->n];	/* "alloc" */

		sink = x;
		f->v[f->n++] = x;		/* "free" */
	}
	return (bench_proc_ns() - t0) / (double)n;
}

struct pctx {
	struct iova_alloc *a;
	uint64_t len;
	uint64_t fifo[P_FIFO];
	unsigned int k;
};

/* One pair per op: free the oldest of P_FIFO outstanding, allocate anew. */
static double iova_pairs(void *ctx, unsigned long n)
{
	struct pctx *c = ctx;
	double t0 = bench_proc_ns();

	for (unsigned long i = 0; i < n; i++) {
		if (iova_alloc_put(c->a, c->fifo[c->k], c->len))
			die("pair put");
		if (iova_alloc_get(c->a, c->len, G, UINT64_MAX, &c->fifo[c->k]))
			die("pair get");
		c->k = (c->k + 1) % P_FIFO;
	}
	return (bench_proc_ns() - t0) / (double)n;
}

/* @live allocations of @len (packed top-down) plus P_FIFO outstanding;
 * @tree: the rcache off, every pair goes through the tree. */
static void pctx_init(struct pctx *c, uint64_t len, unsigned long live,
		      bool tree)
{
	struct iodma_iova_range r = { 0, SPACE };
	uint64_t iova;

	memset(c, 0, sizeof(*c));
	c->len = len;
	if (iova_alloc_create(G, &r, 1, NULL, 0, &c->a))
		die("create");
	if (tree)
		iova_alloc_set_caching(c->a, false);
	for (unsigned long i = 0; i < live; i++)
		if (iova_alloc_get(c->a, len, G, UINT64_MAX, &iova))
			die("live get");
	for (unsigned int i = 0; i < P_FIFO; i++)
		if (iova_alloc_get(c->a, len, G, UINT64_MAX, &c->fifo[i]))
			die("fifo get");
}

/* A row whose target is an absolute Ir/op bar (issue 12's figures): run.py
 * judges it on the Ir/op column. */
static void row_ir(const char *id, const char *fig, double ns,
		   const char *bname, double base, double ir_bar,
		   const char *irkey, const char *irbase)
{
	printf("ROW\t%s\t%s\tns\t%.1f\t%s\t%.1f\t%.4g\tIr<=%g\t-\t%s\t%s\n",
	       id, fig, ns, bname, base, ns / base, ir_bar, irkey, irbase);
	fflush(stdout);
}

static void pair_rows(bool ir)
{
	static const char *const sz[2] = { "4k", "256k" };
	static const uint64_t len[2] = { 4096, 256 * 1024 };
	/* Issue 12's bars: 4 KiB <= 100 Ir flat; 256 KiB <= Linux's counts. */
	static const double bar[2][P_NLIVE] = { { 100, 100, 100 },
						 { 664, 820, 976 } };
	struct flist f = { .n = P_FIFO };

	if (ir) {
		bench_ir_begin();
		base_pairs(&f, 20000);
		bench_ir_end("iova.base.pair", 20000);
	}
	for (int s = 0; s < 2; s++) {
		for (int l = 0; l < P_NLIVE; l++) {
			static const unsigned long ops[2] = { 40000, 400000 };
			char id[64], key[64], fig[96];
			double med[2], v[2][RUNS];
			struct pctx c;

			/* 256 KiB is cached too now (64-page class); issue
			 * 12's row is Linux's tree path, so the rcache is
			 * off for it. */
			pctx_init(&c, len[s], p_live[l], s == 1);
			snprintf(id, sizeof(id), "iova.%s.%lu", sz[s], p_live[l]);
			snprintf(key, sizeof(key), "iova.%s.%lu.pair", sz[s],
				 p_live[l]);
			if (ir) {
				iova_pairs(&c, 1000);	/* warm the caches */
				bench_ir_begin();
				iova_pairs(&c, 20000);
				bench_ir_end(key, 20000);
				iova_alloc_destroy(c.a);
				continue;
			}
			iova_pairs(&c, 1000);
			/* Alternate the two loops, one slice each per run. */
			for (int r = 0; r < RUNS; r++) {
				v[0][r] = iova_pairs(&c, ops[0]);
				v[1][r] = base_pairs(&f, ops[1]);
			}
			med[0] = bench_median(v[0], RUNS);
			med[1] = bench_median(v[1], RUNS);
			snprintf(fig, sizeof(fig),
				 "IOVA %s alloc+free pair, %lu live%s",
				 s ? "256 KiB" : "4 KiB", p_live[l],
				 s ? " (tree path)" : " (cache path)");
			row_ir(id, fig, med[0], "free-list pop+push", med[1],
			       bar[s][l], key, "iova.base.pair");
			iova_alloc_destroy(c.a);
		}
	}
}

/* ---- issue 12: two threads against one -------------------------------------- */

#define MT_OPS 2000000ul	/* ~30 ms a thread: a 6 ms run was decided by one
				 * preemption on the shared 2-core host */

struct mtarg {
	struct iova_alloc *a;
	pthread_barrier_t *bar;
};

static void *mt_worker(void *p)
{
	struct mtarg *m = p;
	struct pctx c;

	memset(&c, 0, sizeof(c));
	c.a = m->a;
	c.len = 4096;
	for (unsigned int i = 0; i < P_FIFO; i++)
		if (iova_alloc_get(c.a, c.len, G, UINT64_MAX, &c.fifo[i]))
			die("mt get");
	iova_pairs(&c, 1000);
	pthread_barrier_wait(m->bar);
	iova_pairs(&c, MT_OPS);
	return NULL;
}

/* Pairs per microsecond of wall time with @nt threads on one allocator. */
static double mt_rate(int nt)
{
	struct iodma_iova_range r = { 0, SPACE };
	pthread_barrier_t bar;
	pthread_t th[2];
	struct mtarg m;
	double t0, t1;

	if (iova_alloc_create(G, &r, 1, NULL, 0, &m.a))
		die("create");
	pthread_barrier_init(&bar, NULL, (unsigned int)nt + 1);
	m.bar = &bar;
	for (int i = 0; i < nt; i++)
		if (pthread_create(&th[i], NULL, mt_worker, &m))
			die("pthread_create");
	pthread_barrier_wait(&bar);
	t0 = bench_now_ns();
	for (int i = 0; i < nt; i++)
		pthread_join(th[i], NULL);
	t1 = bench_now_ns();
	pthread_barrier_destroy(&bar);
	iova_alloc_destroy(m.a);
	return (double)nt * MT_OPS / (t1 - t0) * 1e3;
}

static void mt_row(void)
{
	double v[2][RUNS];

	for (int r = 0; r < RUNS; r++) {
		v[0][r] = mt_rate(2);
		v[1][r] = mt_rate(1);
	}
	bench_row("iova.mt2", "IOVA 4 KiB pairs, 2 threads (Mpairs/s, wall)",
		  "Mop/s", bench_median(v[0], RUNS), "1 thread",
		  bench_median(v[1], RUNS), BT_RATE_GE, 1.6, NULL, NULL);
}

/* ---- issue 12: iodma_map_single + unmap_single, 4 KiB, soft domain ---------- */

struct mapctx {
	struct iodma_dev *dev;
	void *buf;
};

static double map_pairs(void *ctx, unsigned long n)
{
	struct mapctx *c = ctx;
	double t0 = bench_proc_ns();

	for (unsigned long i = 0; i < n; i++) {
		uint64_t iova;

		if (iodma_map_single(c->dev, c->buf, 4096, IODMA_TO_DEVICE,
				     &iova))
			die("map_single");
		if (iodma_unmap_single(c->dev, iova, 4096, IODMA_TO_DEVICE))
			die("unmap_single");
	}
	return (bench_proc_ns() - t0) / (double)n;
}

static double malloc_pairs(void *ctx, unsigned long n)
{
	double t0 = bench_proc_ns();

	(void)ctx;
	for (unsigned long i = 0; i < n; i++) {
		void *p = malloc(64);

		sink = (uint64_t)(uintptr_t)p;
		free(p);
	}
	return (bench_proc_ns() - t0) / (double)n;
}

static void map_row(bool ir)
{
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_dev_opts dopt = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_domain *d;
	struct mapctx c;
	double v[2][RUNS];

	so.max_mappings = 1u << 20;
	o.backend_config = &so;
	if (iodma_domain_create(&o, &d))
		die("domain_create");
	dopt.domain = d;
	dopt.bounce = IODMA_BOUNCE_NEVER;
	if (iodma_dev_create(&dopt, &c.dev))
		die("dev_create");
	c.buf = aligned_alloc(4096, 4096);
	if (!c.buf)
		die("aligned_alloc");
	map_pairs(&c, 1000);
	if (ir) {
		bench_ir_begin();
		map_pairs(&c, 20000);
		bench_ir_end("iova.map4k.pair", 20000);
		bench_ir_begin();
		malloc_pairs(NULL, 20000);
		bench_ir_end("iova.malloc.pair", 20000);
	} else {
		for (int r = 0; r < RUNS; r++) {
			v[0][r] = map_pairs(&c, 100000);
			v[1][r] = malloc_pairs(NULL, 100000);
		}
		bench_row("iova.map4k",
			  "map_single+unmap_single 4 KiB, soft, unregistered",
			  "ns", bench_median(v[0], RUNS), "malloc+free 64 B",
			  bench_median(v[1], RUNS), BT_NONE, 0, "iova.map4k.pair",
			  "iova.malloc.pair");
	}
	iodma_dev_destroy(c.dev);
	iodma_domain_destroy(d);
	free(c.buf);
}

int main(int argc, char **argv)
{
	double v[3][RUNS], med[3], lr[LR_NWIN][RUNS], lrm[LR_NWIN];
	double lc[LR_NWIN][RUNS], lcm[LR_NWIN];
	static const char *const id[3] = { "iova.rcache", "iova.tree", "iova.naive" };
	static const char *const name[3] = {
		"IOVA alloc+free, rcache on, 10k live",
		"IOVA alloc+free, rcache off (tree), 10k live", "-" };
	static const char *const irkey[3] = {
		"iova.rcache.pair", "iova.tree.pair", "iova.naive.pair" };
	static const long n[3] = { 2000000, 1000000, 4000 };
	static const long irn[3] = { 20000, 20000, 1000 };
	int k, run, w;

	if (bench_ir_mode(argc, argv)) {
		for (k = 0; k < 3; k++)
			pairs(k, irn[k], irkey[k]);
		pair_rows(true);
		map_row(true);
		return 0;
	}
	for (run = 0; run < RUNS; run++)
		for (k = 0; k < 3; k++)
			v[k][run] = pairs(k, n[k], NULL);
	for (k = 0; k < 3; k++)
		med[k] = bench_median(v[k], RUNS);
	for (k = 0; k < 2; k++)
		bench_row(id[k], name[k], "ns", med[k], "naive sorted array",
			  med[2], BT_NONE, 0, irkey[k], irkey[2]);
	pair_rows(false);
	mt_row();
	map_row(false);

	for (run = 0; run < RUNS; run++) {
		double o[LR_NWIN], oc[LR_NWIN];

		long_run(o, oc);
		for (w = 0; w < LR_NWIN; w++) {
			lr[w][run] = o[w];
			lc[w][run] = oc[w];
		}
	}
	for (w = 0; w < LR_NWIN; w++) {
		lrm[w] = bench_median(lr[w], RUNS);
		lcm[w] = bench_median(lc[w], RUNS);
	}
	/* Flatness: the last window against the second (the first is the
	 * ramp-up to ~LR_LIVE live), in CPU time. */
	bench_row("iova.longrun", "IOVA long run ~100k live, last 200k-op window",
		  "ns", lcm[LR_NWIN - 1], "2nd window", lcm[1], BT_NONE, 0,
		  NULL, NULL);
	printf("NOTE\tIOVA long run, ns/op per %d-op window (wall/cpu):", LR_WIN);
	for (w = 0; w < LR_NWIN; w++)
		printf(" %.0f/%.0f", lrm[w], lcm[w]);
	printf("\n");
	return 0;
}
