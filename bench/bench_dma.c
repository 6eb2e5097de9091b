/* SPDX-License-Identifier: MIT */
/*
 * bench_dma.c - driver-side figures, each beside a baseline measured in the
 * same run (medians of 5 runs):
 *   VA -> IOVA of registered memory: iodma_va_to_iova() (the lookup
 *     iodma_map_single() does on registered memory) of random 256-byte
 *     buffers with 65,536 registrations of 4 KiB, then of 2 MiB, vs the
 *     bare two-level radix probe (bench.h) at the same granule over the
 *     same keys;
 *   heap bytes the registrations cost per registered 2 MiB beyond the
 *     domain's own mappings: mallinfo2() growth across registering the
 *     65,536 x 2 MiB, minus its growth across making the same IOVA
 *     allocations and domain maps directly on another domain (what is
 *     left: the VA -> IOVA table plus the per-registration record);
 *   for information, iodma_map_single + iodma_unmap_single of 4 KiB of
 *     registered memory (a lookup) vs of an unregistered buffer (IOVA
 *     allocation + soft domain map + unmap);
 *   bounce: iodma_map_single + iodma_unmap_single BIDIRECTIONAL of 4 KiB and
 *     64 KiB with bounce policy ALWAYS (copy in + copy back) vs memcpy in +
 *     memcpy out of the same size; ratio = memcpy time / bounce time.  A
 *     NOTE gives the floor of a bounce whose unmap claims its run with one
 *     compare-and-swap: memcpy in + one compare-and-swap + memcpy out;
 *     another the floor of any bounce with per-thread slots: a map and an
 *     unmap that are two out-of-line calls, each taking its copy's
 *     addresses from thread-local storage and doing nothing else (no
 *     record, no check, no atomic).
 * The registered host memory is a MAP_NORESERVE range never touched.
 * Times are process CPU time, each contestant interleaved with its
 * baseline slice by slice (bench.h: bench_interleave()).  With --ir the
 * lookup loops and the bounce loops (2,000 ops each, bounce and memcpy)
 * run once each for callgrind.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <malloc.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <iodma.h>

#include "bench.h"
#include "regmap.h"

#define NREGS	65536u
#define NKEYS	(1u << 16)
#define KMASK	(NKEYS - 1)
#define BUF	256u
#define OPS	500000ul
#define IR_OPS	20000ul
#define BOUNCE_IR_OPS 2000ul

static volatile uint64_t sink;

static void die(const char *what, int err)
{
	fprintf(stderr, "bench_dma: %s: %s\n", what, iodma_strerror(err));
	exit(1);
}

static struct iodma_domain *big_domain(void)
{
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_domain *d;
	int ret;

	so.max_mappings = 1u << 20;
	o.backend_config = &so;
	ret = iodma_domain_create(&o, &d);
	if (ret)
		die("domain_create", ret);
	return d;
}

/* Resident bytes of the process (/proc/self/statm), 0 if unknown. */
static size_t rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size = 0, res = 0;

	if (!f)
		return 0;
	if (fscanf(f, "%lu %lu", &size, &res) != 2)
		res = 0;
	fclose(f);
	return res * (size_t)iodma_page_size();
}

/* Bytes malloc has handed out (arena and mmap'd chunks). */
static size_t heap_bytes(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

/* ---- VA -> IOVA ------------------------------------------------------------------ */

struct lctx {
	struct iodma_dev *dev;
	struct probe *p;
	uint64_t *keys;
};

static double l_iodma(void *ctx, unsigned long n)
{
	struct lctx *c = ctx;
	double t0 = bench_now_ns();
	uint64_t io;

	for (unsigned long i = 0; i < n; i++) {
		int ret = iodma_va_to_iova(c->dev, (void *)(uintptr_t)c->keys[i & KMASK],
					   BUF, &io);

		if (ret)
			die("va_to_iova", ret);
		sink += io;
	}
	return (bench_now_ns() - t0) / (double)n;
}

static double l_probe(void *ctx, unsigned long n)
{
	struct lctx *c = ctx;
	double t0 = bench_now_ns();

	for (unsigned long i = 0; i < n; i++) {
		void *io = probe_lookup(c->p, c->keys[i & KMASK], BUF, 1);

		if (!io)
			die("probe", -2);
		sink += (uintptr_t)io;
	}
	return (bench_now_ns() - t0) / (double)n;
}

/* 65,536 registrations of @sz, contiguous in VA.  Under callgrind (--ir)
 * the 2 MiB set has 8,192 registrations: valgrind cannot reserve 128 GiB
 * of client address space; instructions per lookup do not depend on the
 * count for a radix table (log2 of it for a tree: 13 levels, not 16). */
static void bench_lookup(uint64_t sz, unsigned int gshift, const char *id,
			 const char *fig)
{
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_domain *d = big_domain(), *d2 = NULL;
	uint64_t nregs = bench_ir_on && sz > 4096 ? 8192 : NREGS;
	uint64_t span = nregs * sz;
	char *m = mmap(NULL, span + sz, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	char *host;
	struct lctx c;
	static const bench_fn fn[2] = { l_iodma, l_probe };
	static const unsigned long ops[2] = { OPS, OPS };
	double med[2];
	char iri[64], irp[64];
	size_t h0, h1, r0, r1;
	uint64_t *iovas;
	int ret;

	if (m == MAP_FAILED)
		die("mmap", -12);
	host = (char *)(((uintptr_t)m + sz - 1) & ~(uintptr_t)(sz - 1));
	o.domain = d;
	o.bounce = IODMA_BOUNCE_NEVER;
	ret = iodma_dev_create(&o, &c.dev);
	if (ret)
		die("dev_create", ret);
	c.p = probe_create(gshift);
	iovas = malloc(nregs * sizeof(*iovas));
	if (!iovas)
		die("malloc", -12);
	h0 = heap_bytes();
	r0 = rss_bytes();
	for (uint64_t i = 0; i < nregs; i++) {
		ret = iodma_dev_register(c.dev, host + i * sz, sz, &iovas[i]);
		if (ret)
			die("register", ret);
	}
	h1 = heap_bytes();
	r1 = rss_bytes();
	for (uint64_t i = 0; i < nregs; i++)
		probe_set(c.p, (uintptr_t)(host + i * sz), sz, iovas[i], 3);
	c.keys = malloc(NKEYS * sizeof(*c.keys));
	for (unsigned int k = 0; k < NKEYS; k++) {
		uint64_t r = bench_rnd();

		c.keys[k] = (uintptr_t)host + (r % nregs) * sz +
			    ((r >> 32) % ((sz - BUF) / 8 + 1)) * 8;
	}
	snprintf(iri, sizeof(iri), "%s.iodma", id);
	snprintf(irp, sizeof(irp), "%s.probe", id);
	l_iodma(&c, NKEYS);
	l_probe(&c, NKEYS);
	if (bench_ir_on) {
		bench_ir_begin();
		l_iodma(&c, IR_OPS);
		bench_ir_end(iri, IR_OPS);
		bench_ir_begin();
		l_probe(&c, IR_OPS);
		bench_ir_end(irp, IR_OPS);
		goto out;
	}
	bench_interleave(fn, &c, ops, 2, med, NULL, NULL);
	bench_row(id, fig, "ns", med[0], "radix probe", med[1], BT_RATIO_LE,
		  1.2, iri, irp);

	if (sz == (2ull << 20)) {
		/* The domain's own share: the same allocations and maps. */
		size_t g0, g1, q0, q1;
		double per;

		d2 = big_domain();
		g0 = heap_bytes();
		q0 = rss_bytes();
		for (uint64_t i = 0; i < nregs; i++) {
			uint64_t io;

			ret = iodma_iova_alloc(d2, sz, 4096, UINT64_MAX, &io);
			if (!ret)
				ret = iodma_domain_map(d2, io, sz, host + i * sz,
						       IODMA_PERM_RW);
			if (ret)
				die("domain map", ret);
		}
		g1 = heap_bytes();
		q1 = rss_bytes();
		per = ((double)h1 - (double)h0 - ((double)g1 - (double)g0)) / nregs;
		bench_row("reg.bytes.2m",
			  "VA->IOVA table+record bytes per registered 2 MiB",
			  "B", per, "-", 0, BT_NONE, 0, NULL, NULL);
		printf("NOTE\tregistration bytes per 2 MiB by resident memory "
		       "instead of heap (catches tables mmap'd outside malloc): "
		       "%.0f B\n",
		       ((double)r1 - (double)r0 - ((double)q1 - (double)q0)) / nregs);
		iodma_domain_destroy(d2);
	}
out:
	iodma_dev_destroy(c.dev);
	iodma_domain_destroy(d);
	probe_destroy(c.p);
	free(c.keys);
	free(iovas);
	munmap(m, span + sz);
}

/* ---- registered vs dynamic map_single (information) ------------------------------ */

struct mctx {
	struct iodma_dev *dev;
	uint8_t *reg, *plain;
};

/* map_single + unmap_single of 4 KiB inside a registration: a lookup. */
static double m_registered(void *ctx, unsigned long n)
{
	struct mctx *c = ctx;
	double t0 = bench_now_ns();

	for (unsigned long i = 0; i < n; i++) {
		uint64_t iova;
		int ret = iodma_map_single(c->dev, c->reg + ((i & 255) << 12), 4096,
					   IODMA_TO_DEVICE, &iova);

		if (ret)
			die("map registered", ret);
		ret = iodma_unmap_single(c->dev, iova, 4096, IODMA_TO_DEVICE);
		if (ret)
			die("unmap registered", ret);
	}
	return (bench_now_ns() - t0) / (double)n;
}

/* The same of an unregistered buffer: IOVA alloc + domain map + unmap. */
static double m_dynamic(void *ctx, unsigned long n)
{
	struct mctx *c = ctx;
	double t0 = bench_now_ns();

	for (unsigned long i = 0; i < n; i++) {
		uint64_t iova;
		int ret = iodma_map_single(c->dev, c->plain, 4096, IODMA_TO_DEVICE,
					   &iova);

		if (ret)
			die("map dynamic", ret);
		ret = iodma_unmap_single(c->dev, iova, 4096, IODMA_TO_DEVICE);
		if (ret)
			die("unmap dynamic", ret);
	}
	return (bench_now_ns() - t0) / (double)n;
}

static void bench_map(void)
{
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_domain *d = big_domain();
	static const bench_fn fn[2] = { m_registered, m_dynamic };
	static const unsigned long ops[2] = { 200000, 20000 };
	double med[2], wall[2], blk[2];
	struct mctx c;
	int ret;

	c.reg = aligned_alloc(4096, 1 << 20);
	c.plain = aligned_alloc(4096, 4096);
	if (!c.reg || !c.plain)
		die("aligned_alloc", -12);
	o.domain = d;
	o.bounce = IODMA_BOUNCE_NEVER;
	ret = iodma_dev_create(&o, &c.dev);
	if (ret)
		die("dev_create", ret);
	ret = iodma_dev_register(c.dev, c.reg, 1 << 20, NULL);
	if (ret)
		die("register", ret);
	m_registered(&c, 1000);
	m_dynamic(&c, 100);
	bench_interleave(fn, &c, ops, 2, med, wall, blk);
	bench_block_note("map.registered", med[0], wall[0], blk[0]);
	bench_block_note("map.unregistered", med[1], wall[1], blk[1]);
	bench_row("map.registered", "map_single+unmap_single 4 KiB, registered",
		  "ns", med[0], "same, unregistered", med[1], BT_NONE, 0, NULL,
		  NULL);
	iodma_dev_destroy(c.dev);
	iodma_domain_destroy(d);
	free(c.reg);
	free(c.plain);
}

/* ---- bounce ---------------------------------------------------------------------- */

struct bctx {
	struct iodma_dev *dev;
	uint8_t *buf, *copy;
	size_t len;
};

static double b_bounce(void *ctx, unsigned long n)
{
	struct bctx *c = ctx;
	double t0 = bench_now_ns();

	for (unsigned long i = 0; i < n; i++) {
		uint64_t iova;
		int ret = iodma_map_single(c->dev, c->buf, c->len,
					   IODMA_BIDIRECTIONAL, &iova);

		if (ret)
			die("map_single", ret);
		ret = iodma_unmap_single(c->dev, iova, c->len, IODMA_BIDIRECTIONAL);
		if (ret)
			die("unmap_single", ret);
	}
	return (bench_now_ns() - t0) / (double)n;
}

static double b_memcpy(void *ctx, unsigned long n)
{
	struct bctx *c = ctx;
	double t0 = bench_now_ns();

	for (unsigned long i = 0; i < n; i++) {
		memcpy(c->copy, c->buf, c->len);
		__asm__ volatile("" ::: "memory");
		memcpy(c->buf, c->copy, c->len);
		__asm__ volatile("" ::: "memory");
	}
	return (bench_now_ns() - t0) / (double)n;
}

/* For information: the floor a bounce map + unmap cannot go below while
 * its unmap claims the run with one atomic read-modify-write (of two
 * racing unmaps of one map exactly one must win): memcpy in, one
 * compare-and-swap on a word of its own, memcpy out. */
static _Atomic uint64_t floor_word;

static double b_floor(void *ctx, unsigned long n)
{
	struct bctx *c = ctx;
	double t0 = bench_now_ns();

	for (unsigned long i = 0; i < n; i++) {
		uint64_t w;

		memcpy(c->copy, c->buf, c->len);
		__asm__ volatile("" ::: "memory");
		w = atomic_load_explicit(&floor_word, memory_order_relaxed);
		atomic_compare_exchange_strong(&floor_word, &w, w + 1);
		memcpy(c->buf, c->copy, c->len);
		__asm__ volatile("" ::: "memory");
	}
	return (bench_now_ns() - t0) / (double)n;
}

/* For information: the skeleton of a bounce with per-thread slots and
 * nothing else: map = one call that records the buffer and copies into
 * the thread's slot, unmap = one call that copies back; both addresses
 * from thread-local storage, as any per-thread stash must find them.
 * Everything a real bounce adds (the run's record, the checks an unmap of
 * bad arguments needs, statistics) comes on top of this. */
struct skel_tls {
	void *slot;
	void *orig;
};
static _Thread_local struct skel_tls skel
	__attribute__((tls_model("initial-exec")));

static __attribute__((noinline)) int skel_map(void *va, size_t len)
{
	skel.orig = va;
	memcpy(skel.slot, va, len);
	return 0;
}

static __attribute__((noinline)) int skel_unmap(size_t len)
{
	memcpy(skel.orig, skel.slot, len);
	return 0;
}

static double b_skel(void *ctx, unsigned long n)
{
	struct bctx *c = ctx;
	double t0 = bench_now_ns();

	skel.slot = c->copy;
	for (unsigned long i = 0; i < n; i++) {
		if (skel_map(c->buf, c->len) || skel_unmap(c->len))
			die("skeleton", -1);
		__asm__ volatile("" ::: "memory");
	}
	return (bench_now_ns() - t0) / (double)n;
}

static void bench_bounce(void)
{
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_domain *d;
	struct bctx c;
	static const bench_fn fn[4] = { b_bounce, b_memcpy, b_floor, b_skel };
	static const size_t sizes[2] = { 4096, 65536 };
	static const double bar[2] = { 0.9, 0.97 };
	static const char *const ids[2] = { "bounce.4k", "bounce.64k" };
	static const char *const figs[2] = {
		"bounce map+unmap BIDIR 4 KiB (policy ALWAYS)",
		"bounce map+unmap BIDIR 64 KiB (policy ALWAYS)" };
	int ret = iodma_domain_create(NULL, &d);

	if (ret)
		die("domain_create", ret);
	o.domain = d;
	o.bounce = IODMA_BOUNCE_ALWAYS;
	ret = iodma_dev_create(&o, &c.dev);
	if (ret)
		die("dev_create", ret);
	for (int s = 0; s < 2; s++) {
		/* 64 MiB each way per run */
		unsigned long iters = (unsigned long)((64u << 20) / sizes[s]);
		unsigned long ops[4] = { iters, iters, iters, iters };
		double med[4], wall[4], blk[4];
		char iri[64], irb[64];

		c.len = sizes[s];
		c.buf = aligned_alloc(4096, c.len);
		c.copy = aligned_alloc(4096, c.len);
		if (!c.buf || !c.copy)
			die("aligned_alloc", -12);
		memset(c.buf, 1, c.len);
		memset(c.copy, 2, c.len);
		snprintf(iri, sizeof(iri), "%s.iodma", ids[s]);
		snprintf(irb, sizeof(irb), "%s.memcpy", ids[s]);
		b_bounce(&c, iters / 16);	/* warm-up */
		b_memcpy(&c, iters / 16);
		if (bench_ir_on) {
			bench_ir_begin();
			b_bounce(&c, BOUNCE_IR_OPS);
			bench_ir_end(iri, BOUNCE_IR_OPS);
			bench_ir_begin();
			b_memcpy(&c, BOUNCE_IR_OPS);
			bench_ir_end(irb, BOUNCE_IR_OPS);
		} else {
			bench_interleave(fn, &c, ops, 4, med, wall, blk);
			bench_block_note(ids[s], med[0], wall[0], blk[0]);
			bench_row(ids[s], figs[s], "ns", med[0], "memcpy in+out",
				  med[1], BT_RATIO_GE, bar[s], iri, irb);
			printf("NOTE\t%s floor with one compare-and-swap between "
			       "the copies: %.1f ns (memcpy in+out / floor = "
			       "%.3f)\n", ids[s], med[2], med[1] / med[2]);
			printf("NOTE\t%s skeleton of any per-thread bounce (two "
			       "calls, addresses from thread-local storage, the "
			       "copies, nothing else): %.1f ns (memcpy in+out / "
			       "skeleton = %.3f)\n", ids[s], med[3],
			       med[1] / med[3]);
		}
		free(c.buf);
		free(c.copy);
	}
	iodma_dev_destroy(c.dev);
	iodma_domain_destroy(d);
}

/* The table alone (src/regmap.c through its internal API): bytes of
 * VA -> IOVA table per registered 2 MiB at 65,536 adjacent 2 MiB
 * registrations (the row above adds each registration's own record). */
static void bench_regmap_table(void)
{
	const uint64_t base = 0x100000000000ull, sz = 2ull << 20;
	struct regmap *m;
	int ret;

	ret = regmap_create(&m);
	if (ret)
		die("regmap_create", ret);
	for (uint64_t i = 0; i < NREGS; i++) {
		ret = regmap_reserve(m, base + i * sz, sz);
		if (ret)
			die("regmap_reserve", ret);
		regmap_set(m, base + i * sz, sz, 0x40000000ull + i * sz);
	}
	bench_row("reg.table.2m", "VA->IOVA table bytes per registered 2 MiB",
		  "B", (double)regmap_table_bytes(m) / NREGS, "-", 0,
		  BT_VALUE_LE, 16, NULL, NULL);
	regmap_destroy(m);
}

int main(int argc, char **argv)
{
	bench_ir_mode(argc, argv);
	bench_lookup(4096, 12, "va2iova.4k",
		     "VA->IOVA 256 B, 65,536 regs of 4 KiB");
	bench_lookup(2ull << 20, 21, "va2iova.2m",
		     "VA->IOVA 256 B, 65,536 regs of 2 MiB");
	if (!bench_ir_on) {
		bench_regmap_table();
		bench_map();
	}
	bench_bounce();
	return 0;
}
