/* SPDX-License-Identifier: MIT */
/*
 * bench.h - what every benchmark under bench/ shares: clocks, the median of
 * a run set, a fixed-seed PRNG, the radix-probe baseline, the row format
 * bench/run.py turns into the one table `make bench` prints, and the Ir
 * mode (instructions per operation under callgrind).
 *
 * Rows.  A benchmark prints each figure as one tab-separated line
 *   ROW id figure unit value baseline-name baseline ratio target verdict
 *       ir-key ir-key-of-baseline
 * where ratio is value/baseline, or baseline/value for a time whose target
 * reads ">=" (memcpy time / bounce time), target is the bar the
 * redesign of issue 8 must meet ("ratio<=1.5", "<=250 ns", "-" none) and
 * verdict PASS/MISS/-.  Each value is the median of BENCH_RUNS runs and its
 * baseline is measured in the same run, interleaved with it slice by slice,
 * in process CPU time (bench_interleave()); the threaded figures are wall
 * time.  NOTE lines carry what does not fit a row; run.py prints them
 * under the table.
 *
 * Ir mode (argument --ir).  Each measured loop whose row names an ir-key runs
 * once with a fixed op count between bench_ir_begin() and bench_ir_end(),
 * which zero callgrind's counters and dump them under the key
 * (CALLGRIND_ZERO_STATS / CALLGRIND_DUMP_STATS_AT), and the program prints
 * "IR key ops".  Setup and teardown fall outside every dump.  run.py divides
 * each dump's Ir total by its op count.  Outside valgrind the client
 * requests are no-ops.
 */
#ifndef IODMA_BENCH_H
#define IODMA_BENCH_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

#if defined(__has_include)
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#define BENCH_HAVE_CALLGRIND 1
#endif
#endif
#ifndef BENCH_HAVE_CALLGRIND
#define CALLGRIND_ZERO_STATS do { } while (0)
#define CALLGRIND_DUMP_STATS_AT(s) do { (void)(s); } while (0)
#endif

#define BENCH_RUNS   5
#define BENCH_SLICES 10

static inline double bench_clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Wall time. */
static inline double bench_now_ns(void)
{
	return bench_clock_ns(CLOCK_MONOTONIC);
}

/* CPU time of this thread: immune to other processes on a shared host. */
static inline double bench_cpu_ns(void)
{
	return bench_clock_ns(CLOCK_THREAD_CPUTIME_ID);
}

/* CPU time of the whole process: also counts work handed to helper threads
 * (a deferred free, a call_rcu thread), still immune to other processes. */
static inline double bench_proc_ns(void)
{
	return bench_clock_ns(CLOCK_PROCESS_CPUTIME_ID);
}

static inline int bench_cmp_double(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;

	return (a > b) - (a < b);
}

/* The median of @n samples (sorts @v in place). */
static inline double bench_median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), bench_cmp_double);
	return v[n / 2];
}

/* The @p-th percentile (0..100) of @n samples (sorts @v in place). */
static inline double bench_pct(double *v, size_t n, double p)
{
	size_t i;

	qsort(v, n, sizeof(*v), bench_cmp_double);
	i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
	return v[i < n ? i : n - 1];
}

/* A measured loop: runs @n operations on @ctx (its return value, its own
 * ns per operation, is not used by bench_interleave()). */
typedef double (*bench_fn)(void *ctx, unsigned long n);

/* Voluntary context switches of this thread so far: each is a time it
 * blocked (slept, waited on a futex, polled). */
static inline double bench_blocks(void)
{
	struct rusage ru;

	getrusage(RUSAGE_THREAD, &ru);
	return (double)ru.ru_nvcsw;
}

/*
 * bench_interleave() - Medians of @k contestants measured in the same run.
 * @fn:    the @k loops.
 * @ctx:   passed to each.
 * @n:     operations per run of each loop (at least BENCH_SLICES).
 * @k:     contestants (at most 8).
 * @cpu:   receives each one's median process CPU ns per operation.
 * @wall:  receives each one's median wall-clock ns per operation, or NULL.
 * @block: receives each one's median voluntary context switches of the
 *         measuring thread per operation, or NULL.
 *
 * Each of BENCH_RUNS runs is cut into BENCH_SLICES slices, and every slice
 * runs the contestants one after the other, so a change of load falls on
 * all of them alike.  A run's figure is its total time over its
 * operations; the result is the median of the runs.
 *
 * The figure the table shows is process CPU time: on a shared 2-core host
 * wall time swings 2-5x with the other processes' load, CPU time does not;
 * it still counts system calls and work handed to helper threads.  What it
 * does not count is time asleep, which @block reveals (bench_block_note()):
 * a wall/CPU quotient cannot, as preemption lands unevenly on loops of
 * different lengths.  Reading the CPU clock is a system call (~0.7 us): a
 * slice must run long enough to make it negligible.
 */
static inline void bench_interleave(const bench_fn *fn, void *ctx,
				    const unsigned long *n, int k, double *cpu,
				    double *wall, double *block)
{
	double vc[8][BENCH_RUNS], vw[8][BENCH_RUNS], vb[8][BENCH_RUNS];

	for (int r = 0; r < BENCH_RUNS; r++) {
		double sc[8] = { 0 }, sw[8] = { 0 }, sb[8] = { 0 };

		for (int s = 0; s < BENCH_SLICES; s++) {
			for (int i = 0; i < k; i++) {
				double b0 = bench_blocks();
				double c0 = bench_proc_ns(), w0 = bench_now_ns();

				fn[i](ctx, n[i] / BENCH_SLICES);
				sw[i] += bench_now_ns() - w0;
				sc[i] += bench_proc_ns() - c0;
				sb[i] += bench_blocks() - b0;
			}
		}
		for (int i = 0; i < k; i++) {
			double ops = (double)(n[i] / BENCH_SLICES * BENCH_SLICES);

			vc[i][r] = sc[i] / ops;
			vw[i][r] = sw[i] / ops;
			vb[i][r] = sb[i] / ops;
		}
	}
	for (int i = 0; i < k; i++) {
		cpu[i] = bench_median(vc[i], BENCH_RUNS);
		if (wall)
			wall[i] = bench_median(vw[i], BENCH_RUNS);
		if (block)
			block[i] = bench_median(vb[i], BENCH_RUNS);
	}
}

/* A NOTE line when the operation blocks (more than once per 1,000 ops),
 * which its CPU time cannot show, with its wall time beside. */
static inline void bench_block_note(const char *id, double cpu, double wall,
				    double block)
{
	if (block > 1e-3)
		printf("NOTE\t%s blocks %.3g times per op (voluntary context "
		       "switches): CPU %.1f ns, wall %.1f ns per op\n", id,
		       block, cpu, wall);
}

/* xorshift64 with a fixed seed: every run draws the same sequence. */
static uint64_t bench_rng = 88172645463325252ull;

static inline uint64_t bench_rnd(void)
{
	bench_rng ^= bench_rng << 13;
	bench_rng ^= bench_rng >> 7;
	bench_rng ^= bench_rng << 17;
	return bench_rng;
}

/* ---- rows --------------------------------------------------------------- */

enum bench_target {
	BT_NONE,	/* information only */
	BT_RATIO_LE,	/* value / baseline <= bar */
	BT_RATIO_GE,	/* baseline / value >= bar (times: higher is better) */
	BT_RATE_GE,	/* value / baseline >= bar (rates: higher is better) */
	BT_VALUE_LE,	/* value <= bar (ratio still value / baseline) */
};

/*
 * bench_row() - Print one row of the table.
 * @id:      short stable identifier ("xlate.4k.16").
 * @figure:  what the value measures.
 * @unit:    of @value and @base.
 * @value:   the iodma figure (a median).
 * @bname:   the baseline, or "-" (then @base is ignored).
 * @base:    the baseline figure measured in the same run.
 * @kind:    enum bench_target: which quantity @bar bounds.
 * @bar:     the target.
 * @ir:      Ir-mode key of the iodma loop, or NULL.
 * @irb:     Ir-mode key of the baseline loop, or NULL.
 */
static inline void bench_row(const char *id, const char *figure,
			     const char *unit, double value, const char *bname,
			     double base, enum bench_target kind, double bar,
			     const char *ir, const char *irb)
{
	bool has_base = strcmp(bname, "-") != 0 && base > 0;
	double ratio = 0;
	const char *verdict = "-";
	char tgt[32] = "-", rs[32] = "-";

	if (has_base)
		ratio = kind == BT_RATIO_GE ? base / value : value / base;
	switch (kind) {
	case BT_NONE:
		break;
	case BT_RATIO_LE:
		snprintf(tgt, sizeof(tgt), "ratio<=%g", bar);
		verdict = ratio <= bar ? "PASS" : "MISS";
		break;
	case BT_RATIO_GE:
	case BT_RATE_GE:
		snprintf(tgt, sizeof(tgt), "ratio>=%g", bar);
		verdict = ratio >= bar ? "PASS" : "MISS";
		break;
	case BT_VALUE_LE:
		snprintf(tgt, sizeof(tgt), "<=%g %s", bar, unit);
		verdict = value <= bar ? "PASS" : "MISS";
		break;
	}
	if (has_base)
		snprintf(rs, sizeof(rs), "%.4g", ratio);
	printf("ROW\t%s\t%s\t%s\t%.1f\t%s\t", id, figure, unit, value, bname);
	if (has_base)
		printf("%.1f", base);
	else
		printf("-");
	printf("\t%s\t%s\t%s\t%s\t%s\n", rs, tgt, verdict, ir ? ir : "-",
	       irb ? irb : "-");
	fflush(stdout);
}

/* ---- Ir mode ---------------------------------------------------------------- */

static bool bench_ir_on;

/* True when the program was started with --ir (also sets the mode). */
static inline bool bench_ir_mode(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--ir") == 0)
			bench_ir_on = true;
	return bench_ir_on;
}

static inline void bench_ir_begin(void)
{
	CALLGRIND_ZERO_STATS;
}

static inline void bench_ir_end(const char *key, unsigned long ops)
{
	CALLGRIND_DUMP_STATS_AT(key);
	printf("IR\t%s\t%lu\n", key, ops);
	fflush(stdout);
}

/* ---- the radix-probe baseline ------------------------------------------------ */

/*
 * A bare two-level radix table over a 48-bit address space, as SPDK's mem
 * map is: the top level is indexed by bits 47..30 (one pointer per GiB),
 * a leaf by the bits between 30 and the granule (4 KiB: 2^18 entries,
 * 2 MiB: 512 entries).  An entry is the target address of the granule's
 * first byte (8-byte aligned at least) with the permission bits in its
 * low three bits.  A probe is one load per level,
 * a permission test, a bounds test and base + offset.
 */
#define PROBE_TOP_SHIFT 30
#define PROBE_TOP_SIZE  (1u << (48 - PROBE_TOP_SHIFT))

struct probe {
	unsigned int gshift;		/* granule: 12 or 21 */
	uint64_t *top[PROBE_TOP_SIZE];
};

static inline struct probe *probe_create(unsigned int gshift)
{
	struct probe *p = calloc(1, sizeof(*p));

	if (!p)
		abort();
	p->gshift = gshift;
	return p;
}

static inline void probe_destroy(struct probe *p)
{
	for (unsigned int i = 0; i < PROBE_TOP_SIZE; i++)
		free(p->top[i]);
	free(p);
}

/* [key, key + len) -> @va with @perm (1 read, 2 write); key and len
 * granule aligned, @va 8-byte aligned. */
static inline void probe_set(struct probe *p, uint64_t key, uint64_t len,
			     uintptr_t va, uint32_t perm)
{
	uint64_t g = 1ull << p->gshift;

	for (uint64_t o = 0; o < len; o += g) {
		uint64_t k = key + o;
		uint64_t **leaf = &p->top[k >> PROBE_TOP_SHIFT];

		if (!*leaf) {
			*leaf = calloc(1ull << (PROBE_TOP_SHIFT - p->gshift),
				       sizeof(uint64_t));
			if (!*leaf)
				abort();
		}
		(*leaf)[(k & ((1ull << PROBE_TOP_SHIFT) - 1)) >> p->gshift] =
			(uint64_t)(va + o) | perm;
	}
}

static inline void probe_clear(struct probe *p, uint64_t key, uint64_t len)
{
	uint64_t g = 1ull << p->gshift;

	for (uint64_t o = 0; o < len; o += g) {
		uint64_t k = key + o;

		p->top[k >> PROBE_TOP_SHIFT]
		      [(k & ((1ull << PROBE_TOP_SHIFT) - 1)) >> p->gshift] = 0;
	}
}

/* Host address of [key, key + len) with @perm, or NULL. */
/* Out of line, as a library call is, and with no interprocedural
 * analysis either: GCC otherwise clones it with the bench's constant
 * len and perm folded in (probe_lookup.constprop), which no caller of a
 * library function gets. */
#if defined(__GNUC__) && !defined(__clang__)
#define PROBE_CALL_ATTR __attribute__((noipa, unused))
#else
#define PROBE_CALL_ATTR __attribute__((noinline, unused))
#endif
PROBE_CALL_ATTR static void *
probe_lookup(const struct probe *p, uint64_t key, uint64_t len, uint32_t perm)
{
	uint64_t gmask = (1ull << p->gshift) - 1, e;
	const uint64_t *leaf;

	if (key >> 48)
		return NULL;
	leaf = p->top[key >> PROBE_TOP_SHIFT];
	if (!leaf)
		return NULL;
	e = leaf[(key & ((1ull << PROBE_TOP_SHIFT) - 1)) >> p->gshift];
	if ((e & perm) != perm || (key & gmask) + len > gmask + 1)
		return NULL;
	return (void *)(uintptr_t)((e & ~(uint64_t)7) + (key & gmask));
}

#endif /* IODMA_BENCH_H */
