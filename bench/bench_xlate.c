/* SPDX-License-Identifier: MIT */
/*
 * bench_xlate - cost of device-side translation, each figure beside a
 * baseline measured in the same run:
 *   translate hit (8 bytes, iodma_translate into one slice; iterator)
 *       vs a flat translation va = base + (iova - iova0) with the same
 *       bounds check;
 *   translate miss (IOTLB flushed before each one) vs the hit;
 *   iodma_read of 4 KiB vs memcpy of 4 KiB.
 * Each measurement is run 5 times; the median is printed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <iodma.h>

#include "bench.h"

#define IOVA0   0x10000000ull
#define MAP_LEN (1ull << 20)
#define RUNS    BENCH_RUNS

static volatile uintptr_t sink;

/* The baseline: what a device model without an IOMMU does. */
struct flat {
	uint64_t iova0;
	uint64_t len;
	char *base;
};

__attribute__((noinline)) static int flat_translate(const struct flat *f,
						    uint64_t iova, uint64_t len,
						    struct iodma_slice *s)
{
	uint64_t off = iova - f->iova0;

	if (iova < f->iova0 || off >= f->len || len > f->len - off)
		return -1;
	s->va = f->base + off;
	s->len = len;
	return 0;
}

typedef double (*bench_fn)(void *ctx, unsigned long n);

struct ctx {
	struct iodma_domain *d;
	struct flat flat;
	char *buf;
	char dst[4096];
};

/* Offsets walk 16 pages in 64-byte steps: all IOTLB hits after warm-up. */
#define OFF(i) (((i) * 64) & (16 * 4096 - 1))

static double b_flat(void *p, unsigned long n)
{
	struct ctx *c = p;
	struct iodma_slice s;
	double t = bench_now_ns();

	for (unsigned long i = 0; i < n; i++) {
		flat_translate(&c->flat, IOVA0 + OFF(i), 8, &s);
		sink += (uintptr_t)s.va;
	}
	return (bench_now_ns() - t) / n;
}

static double b_hit(void *p, unsigned long n)
{
	struct ctx *c = p;
	struct iodma_slice s;
	size_t nr;
	double t = bench_now_ns();

	for (unsigned long i = 0; i < n; i++) {
		iodma_translate(c->d, IOVA0 + OFF(i), 8, IODMA_PERM_READ, &s, 1, &nr, NULL);
		sink += (uintptr_t)s.va;
	}
	return (bench_now_ns() - t) / n;
}

static double b_iter(void *p, unsigned long n)
{
	struct ctx *c = p;
	struct iodma_xlate_iter it;
	struct iodma_slice s;
	double t = bench_now_ns();

	for (unsigned long i = 0; i < n; i++) {
		iodma_xlate_begin(&it, c->d, IOVA0 + OFF(i), 8, IODMA_PERM_READ);
		while (iodma_xlate_next(&it, &s) == 1)
			sink += (uintptr_t)s.va;
	}
	return (bench_now_ns() - t) / n;
}

static double b_miss(void *p, unsigned long n)
{
	struct ctx *c = p;
	struct iodma_slice s;
	size_t nr;
	double t = bench_now_ns();

	for (unsigned long i = 0; i < n; i++) {
		iodma_iotlb_flush(c->d);
		iodma_translate(c->d, IOVA0 + OFF(i), 8, IODMA_PERM_READ, &s, 1, &nr, NULL);
		sink += (uintptr_t)s.va;
	}
	return (bench_now_ns() - t) / n;
}

static double b_memcpy(void *p, unsigned long n)
{
	struct ctx *c = p;
	double t = bench_now_ns();

	for (unsigned long i = 0; i < n; i++) {
		memcpy(c->dst, c->buf + OFF(i * 64), 4096);
		sink += (uintptr_t)c->dst[i & 4095];
	}
	return (bench_now_ns() - t) / n;
}

static double b_read(void *p, unsigned long n)
{
	struct ctx *c = p;
	double t = bench_now_ns();

	for (unsigned long i = 0; i < n; i++) {
		iodma_read(c->d, IOVA0 + OFF(i * 64), c->dst, 4096);
		sink += (uintptr_t)c->dst[i & 4095];
	}
	return (bench_now_ns() - t) / n;
}

static double run(bench_fn fn, void *ctx, unsigned long n)
{
	double v[RUNS];

	fn(ctx, n / 10); /* warm-up */
	for (int r = 0; r < RUNS; r++)
		v[r] = fn(ctx, n);
	return bench_median(v, RUNS);
}

int main(void)
{
	struct ctx c;
	double flat, hit, iter, miss, cpy, rd;
	struct iodma_xlate_stats st;

	memset(&c, 0, sizeof(c));
	c.buf = mmap(NULL, MAP_LEN, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (c.buf == MAP_FAILED)
		return 1;
	memset(c.buf, 1, MAP_LEN);
	c.flat = (struct flat){ .iova0 = IOVA0, .len = MAP_LEN, .base = c.buf };
	if (iodma_domain_create(NULL, &c.d) ||
	    iodma_domain_map(c.d, IOVA0, MAP_LEN, c.buf, IODMA_PERM_RW)) {
		fprintf(stderr, "setup failed\n");
		return 1;
	}

	flat = run(b_flat, &c, 4000000);
	hit = run(b_hit, &c, 4000000);
	iter = run(b_iter, &c, 4000000);
	miss = run(b_miss, &c, 1000000);
	cpy = run(b_memcpy, &c, 400000);
	rd = run(b_read, &c, 400000);

	printf("bench_xlate (median of %d runs, ns per operation)\n", RUNS);
	printf("  %-40s %8.2f ns\n", "baseline: flat va = base + off (8 B)", flat);
	printf("  %-40s %8.2f ns  x%.2f of flat\n", "iodma_translate, IOTLB hit (8 B)", hit, hit / flat);
	printf("  %-40s %8.2f ns  x%.2f of flat\n", "iterator begin+next, IOTLB hit (8 B)", iter, iter / flat);
	printf("  %-40s %8.2f ns  x%.2f of hit\n", "iodma_translate, miss (flush each)", miss, miss / hit);
	printf("  %-40s %8.2f ns\n", "baseline: memcpy 4 KiB", cpy);
	printf("  %-40s %8.2f ns  x%.2f of memcpy\n", "iodma_read 4 KiB", rd, rd / cpy);
	iodma_xlate_get_stats(c.d, &st);
	printf("  (iotlb hits %llu, misses %llu, invalidations %llu)\n",
	       (unsigned long long)st.iotlb_hits, (unsigned long long)st.iotlb_misses,
	       (unsigned long long)st.iotlb_invalidations);
	iodma_domain_destroy(c.d);
	munmap(c.buf, MAP_LEN);
	return 0;
}
