/* SPDX-License-Identifier: MIT */
/*
 * bench_domain.c - map/unmap through the soft IOMMU and domain lookups,
 * each beside a baseline measured in the same run.
 *
 *   map+unmap pair (4 KiB) with N live mappings around  vs
 *     a bare B-tree insert+remove pair at the same size, and malloc+free(32);
 *   a grace period (os_synchronize_rcu(), which unmap no longer waits for:
 *     shown for scale), and unmap_gaps of 64 mappings in one call;
 *   domain_lookup()  vs  a bare btree_lookup_le() on the same table;
 *   unmap latency (p50/p90/p99) while 4 threads translate and touch other
 *     ranges inside access sections  vs  the same with no other thread;
 *   a mapper's map+unmap rate with 2 such threads  vs  alone.
 * Every figure is the median of 5 runs (the percentiles: of all samples).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <iodma/domain.h>

#include "domain_priv.h"
#include "bench.h"

#define PG	 4096ull
#define BASE	 0x100000000ull	/* 4 GiB: inside the default second range */
#define RUNS	 BENCH_RUNS

static volatile uint64_t sink;

/* A domain holding @n live 4 KiB mappings at BASE + 2 * i * PG (so every
 * odd page is a free slot for the measured pairs). */
static struct iodma_domain *make_domain(uint64_t n)
{
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_domain *d = NULL;

	so.max_mappings = 4000000;
	o.backend_config = &so;
	if (iodma_domain_create(&o, &d)) {
		fprintf(stderr, "domain_create failed\n");
		exit(1);
	}
	for (uint64_t i = 0; i < n; i++) {
		if (iodma_domain_map(d, BASE + 2 * i * PG, PG,
				     (void *)(uintptr_t)(0x7f0000000000ull + i * PG),
				     IODMA_PERM_RW)) {
			fprintf(stderr, "map %llu failed\n", (unsigned long long)i);
			exit(1);
		}
	}
	return d;
}

static double bench_pair(struct iodma_domain *d, uint64_t n, int iters)
{
	double t0 = bench_now_ns();

	for (int k = 0; k < iters; k++) {
		uint64_t iova = BASE + (2 * (bench_rnd() % n) + 1) * PG;

		if (iodma_domain_map(d, iova, PG, (void *)(uintptr_t)0x7e0000000000ull,
				     IODMA_PERM_RW) ||
		    iodma_domain_unmap(d, iova, PG)) {
			fprintf(stderr, "pair failed\n");
			exit(1);
		}
	}
	return (bench_now_ns() - t0) / iters;
}

/* 64 maps of 4 KiB above the live ones, then one unmap_gaps over all 64
 * (one grace period for 64); returns ns per mapping (map + its unmap). */
static double bench_batch64(struct iodma_domain *d, uint64_t n, int iters)
{
	double t0 = bench_now_ns();
	uint64_t u;

	for (int k = 0; k < iters; k++) {
		uint64_t first = BASE + 2 * n * PG + (bench_rnd() % 1024) * 64 * PG;

		for (uint64_t j = 0; j < 64; j++) {
			if (iodma_domain_map(d, first + j * PG, PG,
					     (void *)(uintptr_t)0x7e0000000000ull,
					     IODMA_PERM_RW))
				exit(1);
		}
		if (iodma_domain_unmap_gaps(d, first, 64 * PG, &u) || u != 64 * PG)
			exit(1);
	}
	return (bench_now_ns() - t0) / iters / 64;
}

static double bench_sync_rcu(int iters)
{
	double t0 = bench_now_ns();

	for (int k = 0; k < iters; k++)
		os_synchronize_rcu();
	return (bench_now_ns() - t0) / iters;
}

static double bench_btree_pair(struct btree *t, uint64_t n, int iters)
{
	struct map_rec rec = { .len = PG, .fd = -1, .perm = 3 };
	double t0 = bench_now_ns();

	for (int k = 0; k < iters; k++) {
		uint64_t key = BASE + (2 * (bench_rnd() % n) + 1) * PG;

		if (btree_insert(t, key, &rec) || btree_remove(t, key, NULL))
			exit(1);
	}
	return (bench_now_ns() - t0) / iters;
}

static double bench_malloc(int iters)
{
	double t0 = bench_now_ns();

	for (int k = 0; k < iters; k++) {
		void *p = malloc(32);

		sink += (uintptr_t)p;
		free(p);
	}
	return (bench_now_ns() - t0) / iters;
}

static double bench_lookup(struct iodma_domain *d, uint64_t n, int iters)
{
	struct map_lookup ml;
	double t0 = bench_now_ns();

	for (int k = 0; k < iters; k++) {
		uint64_t iova = BASE + 2 * (bench_rnd() % n) * PG + 64;

		if (domain_lookup(d, iova, &ml))
			exit(1);
		sink += ml.rec.target;
	}
	return (bench_now_ns() - t0) / iters;
}

static double bench_btree_lookup(struct btree *t, uint64_t n, int iters)
{
	double t0 = bench_now_ns();
	uint64_t key;

	for (int k = 0; k < iters; k++) {
		uint64_t iova = BASE + 2 * (bench_rnd() % n) * PG + 64;
		const struct map_rec *r = btree_lookup_le(t, iova, &key);

		sink += r->target + key;
	}
	return (bench_now_ns() - t0) / iters;
}

static void run_size(uint64_t n)
{
	double pair[RUNS], sync[RUNS], bt[RUNS], mf[RUNS], lk[RUNS], blk[RUNS];
	double batch[RUNS];
	double t0 = bench_now_ns();
	struct iodma_domain *d = make_domain(n);
	struct btree t;
	struct map_rec rec = { .len = PG, .fd = -1, .perm = 3 };
	const int iters = 20000, liters = 1000000;

	printf("\n%llu live mappings (setup %.2f s)\n", (unsigned long long)n,
	       (bench_now_ns() - t0) / 1e9);
	btree_init(&t, sizeof(struct map_rec));
	for (uint64_t i = 0; i < n; i++) {
		rec.target = 0x7f0000000000ull + i * PG;
		btree_insert(&t, BASE + 2 * i * PG, &rec);
	}
	for (int r = 0; r < RUNS; r++) {
		pair[r] = bench_pair(d, n, iters);
		sync[r] = bench_sync_rcu(iters);
		batch[r] = bench_batch64(d, n, iters / 64);
		bt[r] = bench_btree_pair(&t, n, iters * 10);
		mf[r] = bench_malloc(iters * 10);
		lk[r] = bench_lookup(d, n, liters);
		blk[r] = bench_btree_lookup(&t, n, liters);
	}
	{
		double p = bench_median(pair, RUNS), s = bench_median(sync, RUNS), b = bench_median(bt, RUNS);
		double m = bench_median(mf, RUNS), l = bench_median(lk, RUNS), bl = bench_median(blk, RUNS);
		double b64 = bench_median(batch, RUNS);

		printf("  map+unmap pair (4 KiB, soft)      %9.1f ns\n", p);
		printf("  a grace period (not in the pair)  %9.1f ns  (%.0f%% of the pair)\n",
		       s, 100.0 * s / p);
		printf("  baseline btree insert+remove      %9.1f ns  pair/btree = %.1fx\n",
		       b, p / b);
		printf("  baseline malloc+free(32)          %9.1f ns  pair/malloc = %.1fx\n",
		       m, p / m);
		printf("  64 maps + one unmap_gaps, per map %9.1f ns  vs pair: %.2fx\n",
		       b64, b64 / p);
		printf("  domain_lookup                     %9.1f ns\n", l);
		printf("  baseline btree_lookup_le          %9.1f ns  lookup/btree = %.2fx\n",
		       bl, l / bl);
	}
	btree_fini(&t);
	iodma_domain_destroy(d);
}

/* ---- unmap with translating threads ------------------------------------- */

#define TR_MAX 4

struct trctx {
	struct iodma_domain *d;
	atomic_int stop;
	atomic_ulong sections;
	char *buf;             /* TR_MAX pages the translators write */
};

struct trarg {
	struct trctx *c;
	int id;
};

/* A device model: sections that translate its own page and touch it. */
static void *translator(void *arg)
{
	struct trarg *a = arg;
	struct trctx *c = a->c;
	uint64_t iova = BASE + (uint64_t)a->id * PG;
	unsigned long n = 0;

	while (!atomic_load_explicit(&c->stop, memory_order_relaxed)) {
		struct iodma_slice s;
		size_t nr;

		iodma_access_begin();
		if (iodma_translate(c->d, iova + (n & 63) * 64, 64, IODMA_PERM_RW,
				    &s, 1, &nr, NULL) == 0)
			memset(s.va, (int)n, 64);
		iodma_access_end();
		n++;
	}
	atomic_fetch_add(&c->sections, n);
	return NULL;
}

static int cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

	return (a > b) - (a < b);
}

/* @iters map+unmap pairs of a page above the translators' pages; each
 * unmap timed into @lat (ns) when not NULL.  Returns pairs per second. */
static double mapper_cpu_ns; /* CPU time of the last mapper() run */

static double mapper(struct trctx *c, int iters, uint64_t *lat)
{
	double t0 = bench_now_ns(), c0 = bench_cpu_ns();

	for (int k = 0; k < iters; k++) {
		uint64_t iova = BASE + (64 + (uint64_t)(k & 1023)) * PG;
		double u0;

		if (iodma_domain_map(c->d, iova, PG, c->buf, IODMA_PERM_RW))
			exit(1);
		u0 = bench_now_ns();
		if (iodma_domain_unmap(c->d, iova, PG))
			exit(1);
		if (lat)
			lat[k] = (uint64_t)(bench_now_ns() - u0);
	}
	mapper_cpu_ns = (bench_cpu_ns() - c0) / iters;
	return iters / ((bench_now_ns() - t0) / 1e9);
}

/* Run the mapper with @nthreads translators; fills @lat, returns its rate. */
static double with_translators(int nthreads, int iters, uint64_t *lat)
{
	struct trctx c;
	struct trarg a[TR_MAX];
	pthread_t t[TR_MAX];
	double rate;

	memset(&c, 0, sizeof(c));
	c.buf = aligned_alloc(PG, TR_MAX * PG);
	if (!c.buf || iodma_domain_create(NULL, &c.d) ||
	    iodma_domain_map(c.d, BASE, TR_MAX * PG, c.buf, IODMA_PERM_RW))
		exit(1);
	for (int i = 0; i < nthreads; i++) {
		a[i] = (struct trarg){ .c = &c, .id = i };
		pthread_create(&t[i], NULL, translator, &a[i]);
	}
	/* Let them start. */
	for (double w = bench_now_ns(); bench_now_ns() - w < 20e6;)
		;
	rate = mapper(&c, iters, lat);
	atomic_store(&c.stop, 1);
	for (int i = 0; i < nthreads; i++)
		pthread_join(t[i], NULL);
	iodma_domain_destroy(c.d);
	free(c.buf);
	return rate;
}

static void run_threads(void)
{
	const int iters = 20000;
	uint64_t *lat = malloc(iters * sizeof(*lat));
	uint64_t *all0 = malloc(RUNS * (size_t)iters * sizeof(*lat));
	uint64_t *all4 = malloc(RUNS * (size_t)iters * sizeof(*lat));
	double alone[RUNS], two[RUNS], alone_cpu[RUNS], two_cpu[RUNS];

	for (int r = 0; r < RUNS; r++) {
		with_translators(0, iters, lat);
		memcpy(all0 + (size_t)r * iters, lat, iters * sizeof(*lat));
		with_translators(4, iters, lat);
		memcpy(all4 + (size_t)r * iters, lat, iters * sizeof(*lat));
		alone[r] = with_translators(0, iters, NULL);
		alone_cpu[r] = mapper_cpu_ns;
		two[r] = with_translators(2, iters, NULL);
		two_cpu[r] = mapper_cpu_ns;
	}
	qsort(all0, RUNS * (size_t)iters, sizeof(*lat), cmp_u64);
	qsort(all4, RUNS * (size_t)iters, sizeof(*lat), cmp_u64);
	{
		size_t n = RUNS * (size_t)iters;
		double a = bench_median(alone, RUNS), t2 = bench_median(two, RUNS);

		printf("\nunmap latency (4 KiB, soft), %zu samples\n", n);
		printf("  alone                         p50 %8.2f us  p90 %8.2f us  p99 %8.2f us\n",
		       all0[n / 2] / 1e3, all0[n * 9 / 10] / 1e3, all0[n * 99 / 100] / 1e3);
		printf("  4 threads in sections, other ranges  p50 %8.2f us  p90 %8.2f us  p99 %8.2f us\n",
		       all4[n / 2] / 1e3, all4[n * 9 / 10] / 1e3, all4[n * 99 / 100] / 1e3);
		double ac = bench_median(alone_cpu, RUNS), tc = bench_median(two_cpu, RUNS);

		printf("mapper map+unmap rate: alone %.0f/s, with 2 translating threads %.0f/s (%.0f%% of alone)\n",
		       a, t2, 100.0 * t2 / a);
		printf("  mapper CPU per pair: alone %.1f ns, with 2 translating threads %.1f ns (rate by CPU time %.0f%% of alone)\n",
		       ac, tc, 100.0 * ac / tc);
	}
	free(lat);
	free(all0);
	free(all4);
}

int main(void)
{
	printf("bench_domain: medians of %d runs\n", RUNS);
	run_threads();
	if (getenv("BENCH_DOMAIN_THREADS_ONLY"))
		return 0;
	run_size(16);
	run_size(1024);
	run_size(65536);
	return (int)(sink & 0);
}
