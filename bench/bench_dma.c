/* SPDX-License-Identifier: MIT */
/*
 * bench_dma.c - driver-side DMA figures, each beside a baseline measured in
 * the same run (median of 5 runs each):
 *   1. bounce copy throughput: map_single + unmap_single BIDIRECTIONAL with
 *      policy ALWAYS (copy in + copy back) vs two plain memcpy of the same
 *      size; the ratio should be close to 1 (memcpy-bound);
 *   2. iodma_va_to_iova (radix table) vs a binary search over a sorted
 *      array of the same registrations;
 *   3. map_single + unmap_single of registered memory (a lookup) vs a
 *      dynamic map + unmap of an unregistered buffer through the soft
 *      domain (IOVA alloc + domain map + unmap + free);
 *   4. the registered-memory table (src/regmap.c, driven through its
 *      internal API: 65,536 x 2 MiB is 128 GiB of VA, which the dev API
 *      would need backed) at 65,536 registrations of 4 KiB and of 2 MiB,
 *      random lookups, vs a bare 2-level radix probe over the same keys.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <iodma.h>

#include "bench.h"
#include "regmap.h"

#define RUNS BENCH_RUNS

static void die(const char *what, int err)
{
	fprintf(stderr, "bench_dma: %s: %s\n", what, iodma_strerror(err));
	exit(1);
}

static volatile uint64_t sink;

/* ---- 1. bounce copy throughput ---------------------------------------------- */

static void bench_bounce(struct iodma_domain *d)
{
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_dev *dev;
	size_t sizes[2] = { 4096, 65536 };
	int ret;

	o.domain = d;
	o.bounce = IODMA_BOUNCE_ALWAYS;
	ret = iodma_dev_create(&o, &dev);
	if (ret)
		die("dev_create", ret);
	printf("1. bounce copy throughput (map_single+unmap_single BIDIRECTIONAL, "
	       "policy ALWAYS) vs memcpy in + memcpy out (thread CPU time)\n");
	for (int s = 0; s < 2; s++) {
		size_t len = sizes[s];
		long iters = (long)((256u << 20) / len); /* 256 MiB each way */
		uint8_t *buf = aligned_alloc(4096, len), *bounce = aligned_alloc(4096, len);
		double t_b[RUNS], t_m[RUNS], mib = (double)iters * 2 * (double)len / (1 << 20);

		memset(buf, 1, len);
		memset(bounce, 2, len);
		for (int r = 0; r < RUNS; r++) {
			double t0 = bench_cpu_ns();

			for (long i = 0; i < iters; i++) {
				uint64_t iova;

				ret = iodma_map_single(dev, buf, len, IODMA_BIDIRECTIONAL, &iova);
				if (ret)
					die("map_single", ret);
				ret = iodma_unmap_single(dev, iova, len, IODMA_BIDIRECTIONAL);
				if (ret)
					die("unmap_single", ret);
			}
			t_b[r] = bench_cpu_ns() - t0;
			t0 = bench_cpu_ns();
			for (long i = 0; i < iters; i++) {
				memcpy(bounce, buf, len);
				__asm__ volatile("" ::: "memory");
				memcpy(buf, bounce, len);
				__asm__ volatile("" ::: "memory");
			}
			t_m[r] = bench_cpu_ns() - t0;
		}
		{
			double b = mib / (bench_median(t_b, RUNS) / 1e9);
			double m = mib / (bench_median(t_m, RUNS) / 1e9);

			printf("   %6zu B: bounce %8.0f MiB/s (%7.1f ns/op)   memcpy x2 %8.0f MiB/s (%7.1f ns)   ratio %.2f\n",
			       len, b, bench_median(t_b, RUNS) / (double)iters, m,
			       bench_median(t_m, RUNS) / (double)iters, b / m);
		}
		free(buf);
		free(bounce);
	}
	iodma_dev_destroy(dev);
}

/* ---- 2. VA -> IOVA lookup ---------------------------------------------------------- */

struct reg_ent {
	uintptr_t va;
	size_t len;
	uint64_t iova;
};

static int bsearch_lookup(const struct reg_ent *e, size_t n, uintptr_t va,
			  size_t len, uint64_t *iova)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (e[mid].va <= va)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return -1;
	lo--;
	if (va + len > e[lo].va + e[lo].len)
		return -1;
	*iova = e[lo].iova + (va - e[lo].va);
	return 0;
}

#define NREGS   256
#define REG_LEN (256u << 10)
#define NLOOK   (1u << 16)

static void bench_lookup(struct iodma_domain *d)
{
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_dev *dev;
	struct reg_ent *ents = malloc(NREGS * sizeof(*ents));
	uintptr_t *q = malloc(NLOOK * sizeof(*q));
	uint8_t *mem;
	double t_r[RUNS], t_b[RUNS];
	long rounds = 40;
	int ret;

	o.domain = d;
	o.bounce = IODMA_BOUNCE_NEVER;
	ret = iodma_dev_create(&o, &dev);
	if (ret)
		die("dev_create", ret);
	/* Registrations with a one-page gap between them, spread over VA. */
	mem = aligned_alloc(4096, (size_t)NREGS * (REG_LEN + 4096));
	for (size_t i = 0; i < NREGS; i++) {
		ents[i].va = (uintptr_t)mem + i * (REG_LEN + 4096);
		ents[i].len = REG_LEN;
		ret = iodma_dev_register(dev, (void *)ents[i].va, REG_LEN, &ents[i].iova);
		if (ret)
			die("register", ret);
	}
	srand(1);
	for (size_t i = 0; i < NLOOK; i++) {
		size_t r = (size_t)rand() % NREGS;

		q[i] = ents[r].va + ((size_t)rand() % (REG_LEN - 512));
	}
	for (int r = 0; r < RUNS; r++) {
		uint64_t acc = 0, io;
		double t0 = bench_now_ns();

		for (long k = 0; k < rounds; k++) {
			for (size_t i = 0; i < NLOOK; i++) {
				if (iodma_va_to_iova(dev, (void *)q[i], 256, &io))
					die("va_to_iova", -1);
				acc += io;
			}
		}
		t_r[r] = (bench_now_ns() - t0) / ((double)rounds * NLOOK);
		t0 = bench_now_ns();
		for (long k = 0; k < rounds; k++) {
			for (size_t i = 0; i < NLOOK; i++) {
				if (bsearch_lookup(ents, NREGS, q[i], 256, &io))
					die("bsearch", -1);
				acc += io;
			}
		}
		t_b[r] = (bench_now_ns() - t0) / ((double)rounds * NLOOK);
		sink += acc;
	}
	printf("2. VA -> IOVA lookup, %d registrations of %u KiB, random 256-byte buffers\n",
	       NREGS, REG_LEN >> 10);
	printf("   iodma_va_to_iova %6.1f ns   binary search %6.1f ns   ratio %.2f\n",
	       bench_median(t_r, RUNS), bench_median(t_b, RUNS),
	       bench_median(t_r, RUNS) / bench_median(t_b, RUNS));
	iodma_dev_destroy(dev);
	free(mem);
	free(ents);
	free(q);
}

/* ---- 3. registered vs dynamic map --------------------------------------------------- */

static void bench_map(struct iodma_domain *d)
{
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_dev *dev;
	uint8_t *reg = aligned_alloc(4096, 1 << 20), *plain = aligned_alloc(4096, 4096);
	double t_r[RUNS], t_d[RUNS];
	long iters = 200000;
	int ret;

	o.domain = d;
	o.bounce = IODMA_BOUNCE_NEVER;
	ret = iodma_dev_create(&o, &dev);
	if (ret)
		die("dev_create", ret);
	ret = iodma_dev_register(dev, reg, 1 << 20, NULL);
	if (ret)
		die("register", ret);
	for (int r = 0; r < RUNS; r++) {
		uint64_t iova;
		double t0 = bench_now_ns();

		for (long i = 0; i < iters; i++) {
			uint8_t *b = reg + ((size_t)(i & 255) << 12);

			ret = iodma_map_single(dev, b, 4096, IODMA_TO_DEVICE, &iova);
			if (ret)
				die("map registered", ret);
			ret = iodma_unmap_single(dev, iova, 4096, IODMA_TO_DEVICE);
			if (ret)
				die("unmap registered", ret);
		}
		t_r[r] = (bench_now_ns() - t0) / (double)iters;
		t0 = bench_now_ns();
		for (long i = 0; i < iters / 10; i++) {
			ret = iodma_map_single(dev, plain, 4096, IODMA_TO_DEVICE, &iova);
			if (ret)
				die("map dynamic", ret);
			ret = iodma_unmap_single(dev, iova, 4096, IODMA_TO_DEVICE);
			if (ret)
				die("unmap dynamic", ret);
		}
		t_d[r] = (bench_now_ns() - t0) / (double)(iters / 10);
	}
	printf("3. map_single+unmap_single of 4 KiB: registered (lookup) vs dynamic (soft domain)\n");
	printf("   registered %7.1f ns   dynamic %8.1f ns   ratio %.3f (%.1fx faster)\n",
	       bench_median(t_r, RUNS), bench_median(t_d, RUNS), bench_median(t_r, RUNS) / bench_median(t_d, RUNS),
	       bench_median(t_d, RUNS) / bench_median(t_r, RUNS));
	iodma_dev_destroy(dev);
	free(reg);
	free(plain);
}

/* ---- 4. registered-memory table vs a bare 2-level radix ----------------------------- */

#define RM_N     65536u
#define RM_LOOK  (1u << 20)
#define RM_BASE  0x100000000000ull /* 16 TiB: clear of any real mapping */

/* The baseline: two dependent loads, no checks; level 1 is a flat array
 * over the span of the keys, level 2 a 512-entry table (SPDK's mem map
 * shape: 2 MiB entries; for 4 KiB keys the second level holds 4 KiB
 * entries).  Called out of line with regmap_lookup()'s shape, as
 * regmap_lookup() is: the row compares tables, not call overheads. */
struct rad2 {
	uint64_t **l1;
	unsigned int l2_shift; /* bits below the level-2 index */
};

static __attribute__((noinline)) int rad2_probe(const struct rad2 *r, uint64_t va,
						uint64_t len, uint64_t *iova)
{
	uint64_t off = va - RM_BASE;
	const uint64_t *l2 = r->l1[off >> (r->l2_shift + 9)];

	(void)len;
	*iova = l2[(off >> r->l2_shift) & 511] + (va & ((1ull << r->l2_shift) - 1));
	return 0;
}

static void bench_regmap_one(uint64_t reg_len, uint64_t stride)
{
	struct regmap *m;
	struct rad2 r;
	uint64_t span = (uint64_t)RM_N * stride, *q = malloc(RM_LOOK * sizeof(*q));
	unsigned int shift = reg_len >= (2u << 20) ? 21 : 12;
	size_t nl1 = (size_t)(span >> (shift + 9)) + 1;
	double t_m[RUNS], t_b[RUNS];
	int ret;

	ret = regmap_create(&m);
	if (ret)
		die("regmap_create", ret);
	r.l2_shift = shift;
	r.l1 = calloc(nl1, sizeof(*r.l1));
	for (size_t i = 0; i < nl1; i++)
		r.l1[i] = calloc(512, sizeof(uint64_t));
	for (uint64_t i = 0; i < RM_N; i++) {
		uint64_t va = RM_BASE + i * stride, iova = 0x40000000ull + i * reg_len;

		ret = regmap_reserve(m, va, reg_len);
		if (ret)
			die("regmap_reserve", ret);
		regmap_set(m, va, reg_len, iova);
		for (uint64_t o = 0; o < reg_len; o += 1ull << shift) {
			uint64_t k = va + o - RM_BASE;

			r.l1[k >> (shift + 9)][(k >> shift) & 511] = iova + o;
		}
	}
	for (size_t i = 0; i < RM_LOOK; i++)
		q[i] = RM_BASE + (bench_rnd() % RM_N) * stride +
		       bench_rnd() % (reg_len - 256);
	for (int k = 0; k < RUNS; k++) {
		uint64_t acc = 0, io;
		double t0 = bench_cpu_ns();

		for (size_t i = 0; i < RM_LOOK; i++) {
			if (regmap_lookup(m, q[i], 256, &io))
				die("regmap_lookup", -1);
			acc += io;
		}
		t_m[k] = (bench_cpu_ns() - t0) / RM_LOOK;
		t0 = bench_cpu_ns();
		for (size_t i = 0; i < RM_LOOK; i++) {
			if (rad2_probe(&r, q[i], 256, &io))
				die("rad2_probe", -1);
			acc += io;
		}
		t_b[k] = (bench_cpu_ns() - t0) / RM_LOOK;
		/* Both must agree: the baseline is the same translation. */
		{
			uint64_t io2;

			if (regmap_lookup(m, q[k], 256, &io) ||
			    rad2_probe(&r, q[k], 256, &io2) || io != io2)
				die("baseline disagrees", -1);
		}
		sink += acc;
	}
	printf("   %6.0f KiB x %u: regmap %5.1f ns   2-level radix %5.1f ns   ratio %.2f   table %.1f B per 2 MiB registered\n",
	       (double)reg_len / 1024, RM_N, bench_median(t_m, RUNS), bench_median(t_b, RUNS),
	       bench_median(t_m, RUNS) / bench_median(t_b, RUNS),
	       (double)regmap_table_bytes(m) / ((double)RM_N * (double)reg_len / (2 << 20)));
	regmap_destroy(m);
	for (size_t i = 0; i < nl1; i++)
		free(r.l1[i]);
	free(r.l1);
	free(q);
}

static void bench_regmap(void)
{
	printf("4. registered-memory table lookup (internal regmap API, random 256-byte buffers) vs a bare 2-level radix\n");
	bench_regmap_one(4096, 8192);         /* every other 4 KiB page */
	bench_regmap_one(2u << 20, 2u << 20); /* adjacent 2 MiB chunks (hugepages) */
}

int main(void)
{
	struct iodma_domain *d;
	int ret = iodma_domain_create(NULL, &d);

	if (ret)
		die("domain_create", ret);
	bench_bounce(d);
	bench_lookup(d);
	bench_map(d);
	bench_regmap();
	iodma_domain_destroy(d);
	return 0;
}
