/* SPDX-License-Identifier: MIT */
/*
 * bench_domain.c - map/unmap through the soft IOMMU and domain lookups,
 * each beside a baseline measured in the same run.
 *
 *   map+unmap pair (4 KiB) with N live mappings around  vs
 *     a bare B-tree insert+remove pair at the same size, and malloc+free(32);
 *   the share of os_synchronize_rcu() (every unmap waits for a grace period),
 *     and unmap_gaps of 64 mappings in one call (one grace period for 64);
 *   domain_lookup()  vs  a bare btree_lookup_le() on the same table.
 * Every figure is the median of 5 runs.
 */
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
		printf("    of which os_synchronize_rcu()   %9.1f ns  (%.0f%% of the pair)\n",
		       s, 100.0 * s / p);
		printf("    pair minus grace period         %9.1f ns\n", p - s);
		printf("  baseline btree insert+remove      %9.1f ns  pair/btree = %.1fx, (pair-rcu)/btree = %.1fx\n",
		       b, p / b, (p - s) / b);
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

int main(void)
{
	printf("bench_domain: medians of %d runs\n", RUNS);
	run_size(10000);
	run_size(1000000);
	return (int)(sink & 0);
}
