/* SPDX-License-Identifier: MIT */
/*
 * bench.h - what every benchmark under bench/ shares: clocks, the median of
 * a run set, a fixed-seed PRNG.  Each figure a benchmark prints is the
 * median of BENCH_RUNS runs, beside a baseline measured in the same run.
 */
#ifndef IODMA_BENCH_H
#define IODMA_BENCH_H

#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#define BENCH_RUNS 5

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

/* xorshift64 with a fixed seed: every run draws the same sequence. */
static uint64_t bench_rng = 88172645463325252ull;

static inline uint64_t bench_rnd(void)
{
	bench_rng ^= bench_rng << 13;
	bench_rng ^= bench_rng >> 7;
	bench_rng ^= bench_rng << 17;
	return bench_rng;
}

#endif /* IODMA_BENCH_H */
