/* SPDX-License-Identifier: MIT */
/*
 * bench_xlate.c - device-side translation: iodma_translate_one() of 8
 * bytes (perm R; what a device model calls for one descriptor or buffer)
 * at random keys over the live set, beside a bare two-level radix probe
 * (bench.h) over the same keys, measured in the same run:
 *   4 KiB mappings, 16 / 1,024 / 65,536 live (soft domain, 4 KiB alignment);
 *   2 MiB mappings, 512 live (soft domain with 2 MiB alignment);
 *   one 1 GiB mapping (soft domain with 1 GiB alignment);
 *   for information, iodma_translate() (an array of slices, 8 arguments)
 *   at 1,024 live 4 KiB mappings;
 *   first touch: the first translation of each of 1,024 mappings made just
 *   before (where an IOTLB would miss), over 1,024 live 4 KiB mappings;
 * and, for information, iodma_read() of 4 KiB vs memcpy() of 4 KiB.
 * The host memory behind the mappings is a MAP_NORESERVE range that is
 * never touched (translation does not read it).  Medians of 5 runs, in
 * process CPU time (bench.h: bench_interleave()); first touch likewise,
 * per round of 1,024 fresh mappings, the two alternating.
 * With --ir each loop runs once with a fixed op count for callgrind.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <iodma.h>

#include "bench.h"

#define PG	 4096ull
#define MB2	 (2ull << 20)
#define GB1	 (1ull << 30)
#define BASE	 0x100000000ull	/* 4 GiB */
#define NKEYS	 (1u << 16)
#define KMASK	 (NKEYS - 1)
#define OPS	 500000ul
#define IR_OPS	 20000ul
#define FT_M	 1024u		/* fresh mappings per first-touch round */
#define FT_REPS	 32u		/* probe passes per round (see ft_round) */
#define FT_BASE	 (BASE + (1ull << 34)) /* above every live set */

static volatile uintptr_t sink;

struct xctx {
	struct iodma_domain *d;
	struct probe *p;
	uint64_t *keys;
};

static void die(const char *what, int err)
{
	fprintf(stderr, "bench_xlate: %s: %s\n", what, iodma_strerror(err));
	exit(1);
}

/* Untouched, unreserved host VA. */
struct host {
	char *map;	/* what mmap returned: @len + @align bytes */
	char *va;	/* @len bytes aligned to @align inside it */
	uint64_t len, align;
};

static struct host host_range(uint64_t len, uint64_t align)
{
	struct host h = { .len = len, .align = align };

	h.map = mmap(NULL, len + align, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (h.map == MAP_FAILED)
		die("mmap", -12);
	h.va = (char *)(((uintptr_t)h.map + align - 1) & ~(uintptr_t)(align - 1));
	return h;
}

static void host_free(struct host *h)
{
	munmap(h->map, h->len + h->align);
}

static struct iodma_domain *soft_domain(uint64_t align)
{
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_iova_range r = { GB1, 255 * GB1 };
	struct iodma_domain *d;
	int ret;

	so.alignment = align;
	so.max_mappings = 1u << 20;
	so.nr_ranges = 1;
	so.ranges = &r;
	o.backend_config = &so;
	ret = iodma_domain_create(&o, &d);
	if (ret)
		die("domain_create", ret);
	return d;
}

/* @n mappings of @sz at BASE + 2 * i * sz (a free slot between each two)
 * onto @host + i * sz, in the domain and in the probe; random 8-byte keys. */
static void populate(struct xctx *c, uint64_t n, uint64_t sz, char *host)
{
	for (uint64_t i = 0; i < n; i++) {
		uint64_t iova = BASE + 2 * i * sz;
		int ret = iodma_domain_map(c->d, iova, sz, host + i * sz,
					   IODMA_PERM_RW);

		if (ret)
			die("map", ret);
		probe_set(c->p, iova, sz, (uintptr_t)(host + i * sz), 3);
	}
	c->keys = malloc(NKEYS * sizeof(*c->keys));
	for (unsigned int k = 0; k < NKEYS; k++) {
		uint64_t r = bench_rnd();

		c->keys[k] = BASE + 2 * (r % n) * sz + ((r >> 32) % (sz / 8)) * 8;
	}
}

/* What a device model calls for one descriptor or buffer. */
static double t_iodma(void *ctx, unsigned long n)
{
	struct xctx *c = ctx;
	void *va;
	double t0 = bench_now_ns();

	for (unsigned long i = 0; i < n; i++) {
		int ret = iodma_translate_one(c->d, c->keys[i & KMASK], 8,
					      IODMA_PERM_READ, &va);

		if (ret)
			die("translate_one", ret);
		sink += (uintptr_t)va;
	}
	return (bench_now_ns() - t0) / (double)n;
}

/* The same through the general entry point (an array of slices). */
static double t_iodma_multi(void *ctx, unsigned long n)
{
	struct xctx *c = ctx;
	struct iodma_slice s;
	size_t nr;
	double t0 = bench_now_ns();

	for (unsigned long i = 0; i < n; i++) {
		int ret = iodma_translate(c->d, c->keys[i & KMASK], 8,
					  IODMA_PERM_READ, &s, 1, &nr, NULL);

		if (ret)
			die("translate", ret);
		sink += (uintptr_t)s.va;
	}
	return (bench_now_ns() - t0) / (double)n;
}

static double t_probe(void *ctx, unsigned long n)
{
	struct xctx *c = ctx;
	double t0 = bench_now_ns();

	for (unsigned long i = 0; i < n; i++) {
		void *va = probe_lookup(c->p, c->keys[i & KMASK], 8, 1);

		if (!va)
			die("probe", -14);
		sink += (uintptr_t)va;
	}
	return (bench_now_ns() - t0) / (double)n;
}

static void run_set(const char *id, const char *fig, uint64_t n, uint64_t sz,
		    unsigned int gshift, bool multi)
{
	struct xctx c;
	struct host h = host_range(n * sz, sz);
	const bench_fn fn[2] = { multi ? t_iodma_multi : t_iodma, t_probe };
	static const unsigned long ops[2] = { OPS, OPS };
	double med[2];
	char iri[64], irp[64];

	c.d = soft_domain(sz);
	c.p = probe_create(gshift);
	populate(&c, n, sz, h.va);
	snprintf(iri, sizeof(iri), "%s.iodma", id);
	snprintf(irp, sizeof(irp), "%s.probe", id);
	t_iodma(&c, NKEYS);	/* warm-up: caches */
	t_probe(&c, NKEYS);
	if (bench_ir_on) {
		bench_ir_begin();
		fn[0](&c, IR_OPS);
		bench_ir_end(iri, IR_OPS);
		bench_ir_begin();
		t_probe(&c, IR_OPS);
		bench_ir_end(irp, IR_OPS);
	} else {
		bench_interleave(fn, &c, ops, 2, med, NULL, NULL);
		bench_row(id, fig, "ns", med[0], "radix probe", med[1],
			  multi ? BT_NONE : BT_RATIO_LE, 1.5, iri, irp);
	}
	iodma_domain_destroy(c.d);
	probe_destroy(c.p);
	free(c.keys);
	host_free(&h);
}

/* One first-touch round: map FT_M fresh 4 KiB mappings (untimed), translate
 * each once in random order (timed), unmap them (untimed); the probe gets
 * the same entries and keys.  Adds the timed ns per operation to @ti and
 * @tp.  A probe has no first touch (no cache of its own, and its entries
 * were just written, so they are in the CPU cache as iodma's table is):
 * its pass is repeated FT_REPS times so the interval is long enough for
 * the CPU clock. */
static void ft_round(struct xctx *c, char *host, uint64_t *keys, double *ti,
		     double *tp, bool ir)
{
	void *va;
	uint64_t un;
	double t0;
	int ret;

	for (unsigned int i = 0; i < FT_M; i++) {
		uint64_t iova = FT_BASE + 2 * i * PG;

		ret = iodma_domain_map(c->d, iova, PG, host + i * PG,
				       IODMA_PERM_RW);
		if (ret)
			die("map", ret);
		probe_set(c->p, iova, PG, (uintptr_t)(host + i * PG), 3);
	}
	for (unsigned int i = FT_M - 1; i > 0; i--) {	/* shuffle */
		unsigned int j = (unsigned int)(bench_rnd() % (i + 1));
		uint64_t t = keys[i];

		keys[i] = keys[j];
		keys[j] = t;
	}
	if (ir)
		bench_ir_begin();
	t0 = bench_proc_ns();
	for (unsigned int i = 0; i < FT_M; i++) {
		ret = iodma_translate_one(c->d, keys[i], 8, IODMA_PERM_READ, &va);
		if (ret)
			die("translate_one", ret);
		sink += (uintptr_t)va;
	}
	*ti += (bench_proc_ns() - t0) / FT_M;
	if (ir) {
		bench_ir_end("xlate.first.iodma", FT_M);
		bench_ir_begin();
	}
	t0 = bench_proc_ns();
	for (unsigned int rep = 0; rep < (ir ? 1 : FT_REPS); rep++) {
		for (unsigned int i = 0; i < FT_M; i++) {
			void *pva = probe_lookup(c->p, keys[i], 8, 1);

			if (!pva)
				die("probe", -14);
			sink += (uintptr_t)pva;
		}
	}
	*tp += (bench_proc_ns() - t0) / (FT_M * FT_REPS);
	if (ir)
		bench_ir_end("xlate.first.probe", FT_M);
	ret = iodma_domain_unmap_gaps(c->d, FT_BASE, 2 * FT_M * PG, &un);
	if (ret || un != FT_M * PG)
		die("unmap_gaps", ret);
	probe_clear(c->p, FT_BASE, 2 * FT_M * PG);
}

static void run_first_touch(void)
{
	struct xctx c;
	const uint64_t live = 1024;
	struct host h = host_range((live + FT_M) * PG, PG);
	char *host = h.va;
	uint64_t keys[FT_M];
	double vi[BENCH_RUNS], vp[BENCH_RUNS];
	const int rounds = 40;

	c.d = soft_domain(PG);
	c.p = probe_create(12);
	populate(&c, live, PG, host);
	for (unsigned int i = 0; i < FT_M; i++)
		keys[i] = FT_BASE + 2 * i * PG + (bench_rnd() % (PG / 8)) * 8;
	if (bench_ir_on) {
		double a = 0, b = 0;

		ft_round(&c, host + live * PG, keys, &a, &b, false); /* warm */
		ft_round(&c, host + live * PG, keys, &a, &b, true);
	} else {
		for (int r = 0; r < BENCH_RUNS; r++) {
			double a = 0, b = 0;

			for (int k = 0; k < rounds; k++)
				ft_round(&c, host + live * PG, keys, &a, &b,
					 false);
			vi[r] = a / rounds;
			vp[r] = b / rounds;
		}
		bench_row("xlate.first", "translate_one 8 B, first touch after map (1,024 live)",
			  "ns", bench_median(vi, BENCH_RUNS), "radix probe",
			  bench_median(vp, BENCH_RUNS), BT_RATIO_LE, 2.0,
			  "xlate.first.iodma", "xlate.first.probe");
	}
	iodma_domain_destroy(c.d);
	probe_destroy(c.p);
	free(c.keys);
	host_free(&h);
}

/* ---- iodma_read of 4 KiB vs memcpy (information) ------------------------- */

#define RD_LEN	(1ull << 20)	/* one mapping over a touched 1 MiB buffer */

struct rctx {
	struct iodma_domain *d;
	char *buf;
	char dst[4096];
};

/* Sources walk the 1 MiB in 4 KiB steps. */
#define RD_OFF(i) (((i) * 4096) & (RD_LEN - 1))

static double r_read(void *ctx, unsigned long n)
{
	struct rctx *c = ctx;
	double t0 = bench_now_ns();

	for (unsigned long i = 0; i < n; i++) {
		int ret = iodma_read(c->d, BASE + RD_OFF(i), c->dst, 4096);

		if (ret)
			die("read", ret);
		sink += (uintptr_t)c->dst[i & 4095];
	}
	return (bench_now_ns() - t0) / (double)n;
}

static double r_memcpy(void *ctx, unsigned long n)
{
	struct rctx *c = ctx;
	double t0 = bench_now_ns();

	for (unsigned long i = 0; i < n; i++) {
		memcpy(c->dst, c->buf + RD_OFF(i), 4096);
		__asm__ volatile("" ::: "memory");
		sink += (uintptr_t)c->dst[i & 4095];
	}
	return (bench_now_ns() - t0) / (double)n;
}

static void run_read(void)
{
	static struct rctx c;
	static const bench_fn fn[2] = { r_read, r_memcpy };
	static const unsigned long ops[2] = { 200000, 200000 };
	double med[2];
	int ret;

	c.buf = mmap(NULL, RD_LEN, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (c.buf == MAP_FAILED)
		die("mmap", -12);
	memset(c.buf, 1, RD_LEN);
	c.d = soft_domain(PG);
	ret = iodma_domain_map(c.d, BASE, RD_LEN, c.buf, IODMA_PERM_RW);
	if (ret)
		die("map", ret);
	r_read(&c, 1000);
	r_memcpy(&c, 1000);
	if (bench_ir_on) {
		bench_ir_begin();
		r_read(&c, IR_OPS / 10);
		bench_ir_end("read.4k.iodma", IR_OPS / 10);
		bench_ir_begin();
		r_memcpy(&c, IR_OPS / 10);
		bench_ir_end("read.4k.memcpy", IR_OPS / 10);
	} else {
		bench_interleave(fn, &c, ops, 2, med, NULL, NULL);
		bench_row("read.4k", "iodma_read 4 KiB (one 1 MiB mapping)", "ns",
			  med[0], "memcpy 4 KiB", med[1], BT_NONE, 0,
			  "read.4k.iodma", "read.4k.memcpy");
	}
	iodma_domain_destroy(c.d);
	munmap(c.buf, RD_LEN);
}

int main(int argc, char **argv)
{
	bench_ir_mode(argc, argv);
	run_set("xlate.4k.16", "translate_one 8 B, 16 live 4 KiB maps", 16, PG, 12, false);
	run_set("xlate.4k.1k", "translate_one 8 B, 1,024 live 4 KiB maps", 1024, PG, 12, false);
	run_set("xlate.4k.64k", "translate_one 8 B, 65,536 live 4 KiB maps", 65536, PG, 12, false);
	run_set("xlate.2m", "translate_one 8 B, 512 live 2 MiB maps", 512, MB2, 21, false);
	run_set("xlate.1g", "translate_one 8 B, one 1 GiB map", 1, GB1, 21, false);
	run_set("xlate.multi.1k", "iodma_translate (slice array) 8 B, 1,024 live 4 KiB",
		1024, PG, 12, true);
	run_first_touch();
	run_read();
	return 0;
}
