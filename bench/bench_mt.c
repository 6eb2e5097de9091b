/* SPDX-License-Identifier: MIT */
/*
 * bench_mt.c - the map side while other threads translate (2-core host):
 *   unmap latency: p50 / p90 / p99 of iodma_domain_unmap() of a 4 KiB
 *     mapping no reader touches, while 4 threads loop
 *     access_begin / translate 64 B / touch the bytes / access_end over
 *     OTHER mappings; baseline: the same percentile with no reader;
 *   held section: one thread holds an access section open for 100 ms on
 *     one range; the time iodma_domain_unmap() of ANOTHER range takes then
 *     (information: it does not wait for that section);
 *   mapper rate: map+unmap pairs per second of one thread while 2 threads
 *     translate (16 hot keys, and random keys over 65,536 live
 *     mappings, and first touches of the mapping the mapper just made), as
 *     a ratio to its rate alone; and, for information, as a ratio to its
 *     rate beside 2 threads that only spin (no iodma call): on 2 CPUs
 *     three busy threads share them, whatever the two others do;
 *     A NOTE gives its rate beside 2 threads that spin and only load the
 *     fresh mapping's IOVA as the translators do (no iodma call): the
 *     row's ceiling for any translation design on this machine;
 *   mapper cost: the mapper thread's own CPU time per map+unmap beside
 *     the translators, as a ratio to its CPU time per pair alone (what the
 *     shared cache lines cost it), and the time it spent blocked (asleep
 *     on a section) per second: the two parts of the rate's loss that are
 *     iodma's, whatever share of the CPUs other processes leave it.
 * Medians of 5 runs where a run is a figure; latencies pool all samples.
 *
 * Diagnostic (no rows): bench_mt --mapper-only MODE runs only the mapper
 * rate, its CPU per pair and its blocks, with readers that do one kind of
 * section each: mix (the rows' readers), hot, rand, fresh (first touches of
 * the mapper's mapping only), nosect (mix without access sections), idle
 * (sections that translate nothing), freshload (mix, but the first-touch
 * slot only loads the mapper's IOVA and translates a hot key),
 * nosect-hot (hot without sections), nofresh (mix without the first
 * touches: neither the load of the mapper's IOVA nor its translation),
 * to tell which one costs the mapper.  With BENCH_MT_CO_ONLY=1 it prints
 * only the mapper's time per pair while a reader runs beside it (mapper
 * on CPU 0, readers on CPU 1), the figure other processes disturb least.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <iodma.h>

#include "bench.h"

#define PG	  4096ull
#define BASE	  0x100000000ull	/* readers' mappings */
#define MAPPER	  0x4000000000ull	/* the mapper's slot (256 GiB) */
#define NLIVE	  65536u
#define HOSTPG	  256u			/* real host pages behind the mappings */
#define NREADERS  4
#define NXLATORS  2

static void die(const char *what, int err)
{
	fprintf(stderr, "bench_mt: %s: %s\n", what, iodma_strerror(err));
	exit(1);
}

struct mt {
	struct iodma_domain *d;
	uint8_t *host;
	uint64_t nlive;
	bool spin_fresh;	/* spin_only, plus the load of @fresh */
	bool spin_only;		/* readers only spin: no iodma call (the
				 * CPU-share baseline of the mapper rate) */
	int mode;		/* --mapper-only: enum rmode */
	bool chunked;		/* --mapper-only: readers count sections */
	/* Each on a cache line of its own: the readers poll @stop in a
	 * tight loop, so a mapper store that shared its line would pay a
	 * cache-line transfer per operation (the bench's cost, not iodma's). */
	alignas(64) atomic_bool stop;
	alignas(64) atomic_uint started; /* readers that have run one section */
	alignas(64) atomic_ulong reads;
	alignas(64) _Atomic uint64_t fresh; /* the mapper's live mapping for
					     * first touches, 0 = none (mapper
					     * rate only) */
	char pad_[64 - sizeof(uint64_t)];
};

/* Mapping i at BASE + i * PG -> host page i % HOSTPG (touched memory). */
static struct mt *mt_create(uint64_t nlive)
{
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	/* aligned: the fields on lines of their own (calloc gives 16). */
	struct mt *m = aligned_alloc(64, sizeof(*m));
	int ret;

	if (!m)
		die("aligned_alloc", -12);
	memset(m, 0, sizeof(*m));
	so.max_mappings = 1u << 20;
	o.backend_config = &so;
	ret = iodma_domain_create(&o, &m->d);
	if (ret)
		die("domain_create", ret);
	m->host = mmap(NULL, (HOSTPG + 1) * PG, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m->host == MAP_FAILED)
		die("mmap", -12);
	memset(m->host, 1, (HOSTPG + 1) * PG);
	m->nlive = nlive;
	for (uint64_t i = 0; i < nlive; i++) {
		ret = iodma_domain_map(m->d, BASE + i * PG, PG,
				       m->host + (i % HOSTPG) * PG, IODMA_PERM_RW);
		if (ret)
			die("map", ret);
	}
	return m;
}

static void mt_destroy(struct mt *m)
{
	iodma_domain_destroy(m->d);
	munmap(m->host, (HOSTPG + 1) * PG);
	free(m);
}

/* Reader kinds (--mapper-only); the rows use RM_MIX. */
enum rmode { RM_MIX, RM_HOT, RM_RAND, RM_FRESH, RM_NOSECT, RM_IDLE,
	     RM_FRESHLOAD, RM_NOSECT_HOT, RM_NOFRESH, RM_NR };
static const char *const rmode_names[RM_NR] = {
	"mix", "hot", "rand", "fresh", "nosect", "idle", "freshload",
	"nosect-hot", "nofresh" };

/* A reader: sections over the live set, alternating 16 hot mappings (in
 * the CPU's caches) and all of them (mostly not); while the mapper publishes its fresh
 * mapping (m->fresh), every fourth section is a first touch of it instead
 * (it may be gone by then: a failed translation touches nothing). */
struct reader {
	struct mt *m;
	unsigned int id;
	pthread_t th;
	/* --mapper-only: sections done so far, stored by the reader after
	 * each (its own line), so the mapper can tell whether it ran. */
	alignas(64) atomic_ulong done;
	char pad_[64 - sizeof(atomic_ulong)];
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	struct mt *m = r->m;
	uint64_t x = 0x9e3779b97f4a7c15ull * (r->id + 1), sum = 0;
	unsigned long n = 0;

	if (m->chunked) {
		/* --mapper-only: the readers on CPU 1, the mapper on CPU 0,
		 * so that they run side by side whenever both run. */
		cpu_set_t cs;

		CPU_ZERO(&cs);
		CPU_SET(1, &cs);
		pthread_setaffinity_np(pthread_self(), sizeof(cs), &cs);
	}
	while (m->spin_only && !atomic_load_explicit(&m->stop, memory_order_relaxed)) {
		/* The same PRNG work, no translation, no touch; with
		 * spin_fresh, the readers' load of the mapper's fresh IOVA
		 * every fourth turn as well (the hand-off alone). */
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		sum += x;
		if (m->spin_fresh && (n & 3) == 3)
			sum += atomic_load_explicit(&m->fresh,
						    memory_order_relaxed);
		if (n++ == 0)
			atomic_fetch_add(&m->started, 1);
	}

	while (!atomic_load_explicit(&m->stop, memory_order_relaxed)) {
		struct iodma_slice s;
		uint64_t i, iova;
		size_t nr;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		i = (n & 1) ? x % 16 : x % m->nlive;
		if (m->mode == RM_HOT || m->mode == RM_NOSECT_HOT)
			i = x % 16;
		else if (m->mode == RM_RAND)
			i = x % m->nlive;
		iova = BASE + i * PG + ((x >> 40) % (PG / 64)) * 64;
		if (m->mode == RM_IDLE) {
			iodma_access_begin();
			iodma_access_end();
			if (m->chunked)
				atomic_store_explicit(&r->done, n,
						      memory_order_relaxed);
			if (n++ == 0)
				atomic_fetch_add(&m->started, 1);
			continue;
		}
		if ((m->mode == RM_FRESH || (n & 3) == 3) &&
		    (m->mode == RM_MIX || m->mode == RM_FRESH ||
		     m->mode == RM_NOSECT || m->mode == RM_FRESHLOAD)) {
			uint64_t f = atomic_load_explicit(&m->fresh,
							  memory_order_relaxed);

			if (f && m->mode != RM_FRESHLOAD)
				iova = f + ((x >> 40) % (PG / 64)) * 64;
		}
		if (m->mode != RM_NOSECT && m->mode != RM_NOSECT_HOT)
			iodma_access_begin();
		if (iodma_translate(m->d, iova, 64, IODMA_PERM_RW, &s, 1, &nr,
				    NULL) == 0) {
			uint8_t *b = s.va;

			/* Readers share host pages: relaxed atomics, as a
			 * device's concurrent DMA would be. */
			sum += __atomic_load_n(&b[0], __ATOMIC_RELAXED) +
			       __atomic_load_n(&b[63], __ATOMIC_RELAXED);
			__atomic_store_n(&b[8], (uint8_t)sum, __ATOMIC_RELAXED);
		}
		if (m->mode != RM_NOSECT && m->mode != RM_NOSECT_HOT)
			iodma_access_end();
		if (m->chunked)
			atomic_store_explicit(&r->done, n, memory_order_relaxed);
		if (n++ == 0)
			atomic_fetch_add(&m->started, 1);
	}
	atomic_fetch_add(&m->reads, n);
	return (void *)(uintptr_t)(sum & 0);
}

static void sleep_ns(long ns)
{
	struct timespec ts = { 0, ns };

	nanosleep(&ts, NULL);
}

/* Start @n readers and return once each has run a section (on a loaded
 * 2-core host a new thread may wait milliseconds for its first slice). */
static void readers_start(struct mt *m, struct reader *rd, unsigned int n)
{
	atomic_store(&m->stop, false);
	atomic_store(&m->started, 0);
	atomic_store(&m->reads, 0);
	for (unsigned int i = 0; i < n; i++) {
		rd[i].m = m;
		rd[i].id = i;
		atomic_store(&rd[i].done, 0);
		if (pthread_create(&rd[i].th, NULL, reader_main, &rd[i]))
			die("pthread_create", -11);
	}
	while (atomic_load(&m->started) < n)
		sleep_ns(1000000);
}

static void readers_stop(struct mt *m, struct reader *rd, unsigned int n)
{
	atomic_store(&m->stop, true);
	for (unsigned int i = 0; i < n; i++)
		pthread_join(rd[i].th, NULL);
}

/* ---- unmap latency ------------------------------------------------------------ */

#define LAT_MAX   2000
#define LAT_WALL  5e9		/* ns: stop sampling after this */
#define LAT_GAP   200000	/* ns asleep between two samples */

/* Unmap latencies (ns) of the mapper's slot; returns the sample count.
 * The samples are spread out (LAT_GAP apart, so over ~0.5 s at least) so
 * that they meet the readers in every phase of their loops. */
static size_t unmap_lat(struct mt *m, double *lat)
{
	double start = bench_now_ns();
	size_t k;

	for (k = 0; k < LAT_MAX && bench_now_ns() - start < LAT_WALL; k++) {
		double t0;

		if (k)
			sleep_ns(LAT_GAP);
		int ret = iodma_domain_map(m->d, MAPPER, PG, m->host + HOSTPG * PG,
					   IODMA_PERM_RW);

		if (ret)
			die("map", ret);
		t0 = bench_now_ns();
		ret = iodma_domain_unmap(m->d, MAPPER, PG);
		lat[k] = bench_now_ns() - t0;
		if (ret)
			die("unmap", ret);
	}
	return k;
}

static void bench_unmap_latency(struct mt *m)
{
	static double lr[LAT_MAX], l0[LAT_MAX];
	struct reader rd[NREADERS];
	size_t nr, n0;
	static const double pct[3] = { 50, 90, 99 };
	static const char *const ids[3] = { "unmap.p50", "unmap.p90", "unmap.p99" };
	static const char *const figs[3] = {
		"unmap 4 KiB p50, 4 threads in sections elsewhere",
		"unmap 4 KiB p90, 4 threads in sections elsewhere",
		"unmap 4 KiB p99, 4 threads in sections elsewhere" };

	unsigned long sections;
	double secs;

	n0 = unmap_lat(m, l0);
	readers_start(m, rd, NREADERS);
	secs = bench_now_ns();
	nr = unmap_lat(m, lr);
	secs = (bench_now_ns() - secs) / 1e9;
	readers_stop(m, rd, NREADERS);
	sections = atomic_load(&m->reads);
	for (int i = 0; i < 3; i++) {
		double a = bench_pct(lr, nr, pct[i]) / 1e3;
		double b = bench_pct(l0, n0, pct[i]) / 1e3;
		/* Readers that hardly ran make the figure meaningless. */
		bool valid = (double)sections > 1e5 * secs;

		bench_row(ids[i], figs[i], "us", a, "same, no readers", b,
			  i == 2 && valid ? BT_VALUE_LE : BT_NONE, 50, NULL, NULL);
	}
	printf("NOTE\tunmap latency: %zu samples over %.1f s with readers "
	       "(%lu reader sections meanwhile%s), %zu without\n", nr, secs,
	       sections, (double)sections > 1e5 * secs ? "" :
	       ": too few, no verdict", n0);
}

/* ---- a section held for 100 ms ----------------------------------------------- */

struct holder {
	struct mt *m;
	atomic_int state;	/* 1 section open, 2 done */
};

static void *holder_main(void *arg)
{
	struct holder *h = arg;
	struct iodma_slice s;
	size_t nr;

	iodma_access_begin();
	if (iodma_translate(h->m->d, BASE, 64, IODMA_PERM_READ, &s, 1, &nr, NULL))
		die("translate", -14);
	atomic_store(&h->state, 1);
	sleep_ns(100 * 1000 * 1000);
	iodma_access_end();
	atomic_store(&h->state, 2);
	return NULL;
}

static void bench_held(struct mt *m)
{
	double v[BENCH_RUNS], b[BENCH_RUNS];

	for (int r = 0; r < BENCH_RUNS; r++) {
		struct holder h = { .m = m };
		pthread_t th;
		double t0;
		int ret = iodma_domain_map(m->d, MAPPER, PG, m->host + HOSTPG * PG,
					   IODMA_PERM_RW);

		if (ret)
			die("map", ret);
		t0 = bench_now_ns();
		ret = iodma_domain_unmap(m->d, MAPPER, PG);
		b[r] = bench_now_ns() - t0;
		if (ret)
			die("unmap", ret);
		ret = iodma_domain_map(m->d, MAPPER, PG, m->host + HOSTPG * PG,
				       IODMA_PERM_RW);
		if (ret)
			die("map", ret);
		if (pthread_create(&th, NULL, holder_main, &h))
			die("pthread_create", -11);
		while (atomic_load(&h.state) == 0)
			;
		t0 = bench_now_ns();
		ret = iodma_domain_unmap(m->d, MAPPER, PG);
		v[r] = bench_now_ns() - t0;
		if (ret)
			die("unmap", ret);
		pthread_join(th, NULL);
	}
	bench_row("unmap.held", "unmap 4 KiB while another range's section is held 100 ms",
		  "us", bench_median(v, BENCH_RUNS) / 1e3, "same, no section",
		  bench_median(b, BENCH_RUNS) / 1e3, BT_NONE, 0, NULL, NULL);
}

/* ---- mapper rate ---------------------------------------------------------------- */

#define RATE_NS 4e8	/* 0.4 s per measurement */

/* What a mapper_rate() run cost the mapper thread itself. */
struct mcost {
	double cpu_ns;		/* its CPU time per pair */
	double blocks;		/* voluntary context switches per second */
};

/* 16 map+unmap pairs of the mapper's slot, pairs @n.. (publishing each
 * new mapping to the readers' first touches, m->fresh); returns n + 16. */
static unsigned long mapper_burst(struct mt *m, unsigned long n)
{
	for (int k = 0; k < 16; k++, n++) {
		uint64_t iova = MAPPER + (n & 255) * PG;
		int ret = iodma_domain_map(m->d, iova, PG, m->host + HOSTPG * PG,
					   IODMA_PERM_RW);

		if (ret)
			die("map", ret);
		atomic_store_explicit(&m->fresh, iova, memory_order_relaxed);
		ret = iodma_domain_unmap(m->d, iova, PG);
		if (ret)
			die("unmap", ret);
	}
	return n;
}

static double mapper_rate(struct mt *m, struct mcost *c)
{
	double t0 = bench_now_ns(), c0 = bench_cpu_ns(), b0 = bench_blocks(), t;
	unsigned long n = 0;

	do {
		n = mapper_burst(m, n);
		t = bench_now_ns() - t0;
	} while (t < RATE_NS);
	c->cpu_ns = (bench_cpu_ns() - c0) / (double)n;
	c->blocks = (bench_blocks() - b0) / (t / 1e9);
	atomic_store(&m->fresh, 0);
	return (double)n / (t / 1e9);
}

/* mapper_rate() while NXLATORS readers @rd run (started and stopped
 * around it). */
static double mapper_rate_beside(struct mt *m, struct reader *rd,
				 struct mcost *c)
{
	double v;

	readers_start(m, rd, NXLATORS);
	v = mapper_rate(m, c);
	readers_stop(m, rd, NXLATORS);
	return v;
}

static void bench_mapper_rate(struct mt *m)
{
	double v[BENCH_RUNS], b[BENCH_RUNS], sp[BENCH_RUNS];
	double cv[BENCH_RUNS], cb[BENCH_RUNS], kv[BENCH_RUNS], ks[BENCH_RUNS];
	double sf[BENCH_RUNS];
	struct reader rd[NXLATORS];
	struct mcost c;

	for (int r = 0; r < BENCH_RUNS; r++) {
		b[r] = mapper_rate(m, &c);
		cb[r] = c.cpu_ns;
		v[r] = mapper_rate_beside(m, rd, &c);
		cv[r] = c.cpu_ns;
		kv[r] = c.blocks;
		/* The same number of threads doing no iodma call at all: what
		 * sharing the CPUs alone costs the mapper. */
		m->spin_only = true;
		sp[r] = mapper_rate_beside(m, rd, &c);
		ks[r] = c.blocks;
		/* ... and that also load m->fresh as the translators do: the
		 * benchmark's own hand-off, which no library can avoid. */
		m->spin_fresh = true;
		sf[r] = mapper_rate_beside(m, rd, &c);
		m->spin_fresh = false;
		m->spin_only = false;
	}
	bench_row("mapper.rate", "map+unmap rate with 2 threads translating",
		  "op/s", bench_median(v, BENCH_RUNS), "same, alone",
		  bench_median(b, BENCH_RUNS), BT_RATE_GE, 0.5, NULL, NULL);
	bench_row("mapper.spin", "  (same) vs 2 threads that only spin (CPU share)",
		  "op/s", bench_median(v, BENCH_RUNS), "2 spinning threads",
		  bench_median(sp, BENCH_RUNS), BT_NONE, 0, NULL, NULL);
	bench_row("mapper.cpu", "  mapper's own CPU per map+unmap, 2 translating",
		  "ns", bench_median(cv, BENCH_RUNS), "same, alone",
		  bench_median(cb, BENCH_RUNS), BT_NONE, 0, NULL, NULL);
	printf("NOTE\tmapper rate beside 2 threads that only spin and load "
	       "the fresh mapping's IOVA every 4th turn (the hand-off; no "
	       "iodma call): %.0f op/s, %.3f of alone: the row's ceiling for "
	       "any translation design (its readers then cost nothing)\n",
	       bench_median(sf, BENCH_RUNS),
	       bench_median(sf, BENCH_RUNS) / bench_median(b, BENCH_RUNS));
	printf("NOTE\tmapper blocked (voluntary switches) %.0f /s beside the "
	       "translators, %.0f /s beside the spinning threads (medians)\n",
	       bench_median(kv, BENCH_RUNS), bench_median(ks, BENCH_RUNS));
}

/* --mapper-only: the mapper's wall time per pair over chunks of 16 pairs,
 * median over the chunks during which a reader made progress (so ran on
 * the other CPU: the cost of running beside it, whatever else the host
 * runs), or over all chunks when @nrd is 0. */
#define CHUNK_MAX (1u << 20)

static double mapper_chunks(struct mt *m, struct reader *rd, unsigned int nrd)
{
	static double v[CHUNK_MAX];
	double t0 = bench_now_ns(), t = 0;
	unsigned long n = 0;
	size_t k = 0;

	while (t < RATE_NS && k < CHUNK_MAX) {
		unsigned long before = 0, after = 0;
		double c0;

		for (unsigned int i = 0; i < nrd; i++)
			before += atomic_load_explicit(&rd[i].done, memory_order_relaxed);
		c0 = bench_now_ns();
		n = mapper_burst(m, n);
		t = bench_now_ns();
		for (unsigned int i = 0; i < nrd; i++)
			after += atomic_load_explicit(&rd[i].done, memory_order_relaxed);
		if (nrd == 0 || after != before)
			v[k++] = (t - c0) / 16;
		t -= t0;
	}
	atomic_store(&m->fresh, 0);
	return k ? bench_median(v, k) : 0;
}

/* --mapper-only MODE: the mapper's figures beside one kind of reader,
 * medians of 5, as NOTE lines only. */
static int mapper_only(const char *mode)
{
	double v[BENCH_RUNS], b[BENCH_RUNS], cv[BENCH_RUNS], cb[BENCH_RUNS];
	double kv[BENCH_RUNS];
	struct reader rd[NXLATORS];
	struct mcost c;
	struct mt *m;
	int k;

	for (k = 0; k < RM_NR; k++)
		if (strcmp(mode, rmode_names[k]) == 0)
			break;
	if (k == RM_NR) {
		fprintf(stderr, "bench_mt: --mapper-only mix|hot|rand|fresh|nosect|idle|freshload|nosect-hot|nofresh\n");
		return 2;
	}
	m = mt_create(NLIVE);
	m->mode = k;
	for (int r = 0; r < BENCH_RUNS && !getenv("BENCH_MT_CO_ONLY"); r++) {
		/* BENCH_MT_WITH_ONLY=1: no alone runs (a profile of the mapper
		 * beside the readers only). */
		if (getenv("BENCH_MT_WITH_ONLY")) {
			b[r] = cb[r] = 1;
		} else {
			b[r] = mapper_rate(m, &c);
			cb[r] = c.cpu_ns;
		}
		v[r] = mapper_rate_beside(m, rd, &c);
		cv[r] = c.cpu_ns;
		kv[r] = c.blocks;
	}
	{
		double ca[BENCH_RUNS], cw[BENCH_RUNS];

		cpu_set_t cs, old;

		pthread_getaffinity_np(pthread_self(), sizeof(old), &old);
		CPU_ZERO(&cs);
		CPU_SET(0, &cs);
		pthread_setaffinity_np(pthread_self(), sizeof(cs), &cs);
		m->chunked = true;
		for (int r = 0; r < BENCH_RUNS; r++) {
			ca[r] = mapper_chunks(m, rd, 0);
			readers_start(m, rd, NXLATORS);
			cw[r] = mapper_chunks(m, rd, NXLATORS);
			readers_stop(m, rd, NXLATORS);
		}
		m->chunked = false;
		pthread_setaffinity_np(pthread_self(), sizeof(old), &old);
		printf("NOTE\t%s: co-running ns/pair %.1f vs alone %.1f (%.2fx)\n",
		       mode, bench_median(cw, BENCH_RUNS), bench_median(ca, BENCH_RUNS),
		       bench_median(cw, BENCH_RUNS) / bench_median(ca, BENCH_RUNS));
	}
	if (!getenv("BENCH_MT_CO_ONLY"))
	printf("NOTE\t%s: rate %.3g /s vs alone %.3g (%.3f); CPU/pair %.1f ns vs "
	       "%.1f (%.2fx); blocked %.0f /s; reader sections %lu\n", mode,
	       bench_median(v, BENCH_RUNS), bench_median(b, BENCH_RUNS),
	       bench_median(v, BENCH_RUNS) / bench_median(b, BENCH_RUNS),
	       bench_median(cv, BENCH_RUNS), bench_median(cb, BENCH_RUNS),
	       bench_median(cv, BENCH_RUNS) / bench_median(cb, BENCH_RUNS),
	       bench_median(kv, BENCH_RUNS), atomic_load(&m->reads));
	mt_destroy(m);
	return 0;
}

int main(int argc, char **argv)
{
	struct mt *m;

	if (argc == 3 && strcmp(argv[1], "--mapper-only") == 0)
		return mapper_only(argv[2]);
	if (bench_ir_mode(argc, argv))
		return 0;	/* no Ir figures here */
	m = mt_create(NLIVE);
	bench_unmap_latency(m);
	bench_held(m);
	bench_mapper_rate(m);
	mt_destroy(m);
	return 0;
}
