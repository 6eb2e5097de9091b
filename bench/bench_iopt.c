/* SPDX-License-Identifier: MIT */
/*
 * bench_iopt - the IO page table's lookup (src/iopt.h, inlined) against a
 * bare 2-level radix probe measured in the same run, on the same keys.
 *
 * Baseline: SPDK's mem map shape (lib/env_dpdk/memory.c): a flat top array
 * over VA bits 30..47 (2^18 pointers) and leaf tables over bits 12..29
 * (4 KiB entries, for the 4 KiB cases) or 21..29 (2 MiB entries, for the
 * 2 MiB and 1 GiB cases: the best a 2-level table can do for them); one
 * load per level, entry = target | R/W bits, base + offset, permission
 * check.  Both loops do the same work per key: look up, check "present
 * with READ" and that 8 bytes fit in the block, add the target to a sum;
 * the sums must be equal (checked).
 *
 * Cases (W = 48, 4 KiB granule; keys: 2^20 random IOVAs, each a random
 * mapping at a random 8-byte offset):
 *   4K x16, x1024, x65536   4 KiB mappings on every other page (as
 *                           bench_domain), targets contiguous per page;
 *   4K sparse x65536        one 4 KiB mapping per 2 MiB (every lookup
 *                           touches its own leaf page, in both tables);
 *   2M x1024, 1G x16        2 MiB / 1 GiB mappings, targets aligned.
 * Printed: ns per lookup (median of 5 runs, thread CPU time), the ratio,
 * for independent lookups (throughput) and for a chain where each key
 * depends on the previous result (latency: 3 dependent loads vs 2), and, when valgrind is installed, instructions per lookup from callgrind
 * (the bench re-runs itself under it; --no-ir skips that), with the
 * ratio, and the same net of an empty loop that only sums the keys.  Then
 * table bytes per mapping at 65,536 dense and sparse 4 KiB mappings.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#define HAVE_CALLGRIND 1
#endif
#endif

#include "iopt.h"
#include "bench.h"

#define BASE   0x100000000ull         /* 4 GiB */
#define TBASE  0x7f0000000000ull      /* targets */
#define NKEYS  (1u << 20)
#define IR_KEYS (1u << 17)
#define PERM_R 0x1u

/* ---- the baseline ----------------------------------------------------- */

#define RTOP_BITS 18

struct radix {
	uint64_t *top[1u << RTOP_BITS]; /* bits 30..47 */
	unsigned int shift;             /* 12 or 21 */
	size_t leaves;                  /* leaf tables allocated */
};

static struct radix *radix_new(unsigned int shift)
{
	struct radix *r = calloc(1, sizeof(*r));

	if (!r)
		abort();
	r->shift = shift;
	return r;
}

static void radix_set(struct radix *r, uint64_t va, uint64_t entry)
{
	uint64_t **l = &r->top[va >> 30];

	if (!*l) {
		*l = calloc((size_t)1 << (30 - r->shift), sizeof(uint64_t));
		if (!*l)
			abort();
		r->leaves++;
	}
	(*l)[(va >> r->shift) & ((1ull << (30 - r->shift)) - 1)] = entry;
}

static void radix_map(struct radix *r, uint64_t va, uint64_t len, uint64_t target)
{
	for (uint64_t o = 0; o < len; o += 1ull << r->shift)
		radix_set(r, va + o, (target + o) | PERM_R);
}

static void radix_free(struct radix *r)
{
	for (size_t i = 0; i < (1u << RTOP_BITS); i++)
		free(r->top[i]);
	free(r);
}

static size_t radix_bytes(const struct radix *r)
{
	return sizeof(r->top) + r->leaves * (sizeof(uint64_t) << (30 - r->shift));
}

/* One load per level, base + offset, permission check. */
#define RADIX_PROBE(name, SHIFT)                                              \
static inline __attribute__((always_inline)) bool                            \
name(const struct radix *r, uint64_t va, uint32_t perm, uint64_t *out,        \
     uint64_t *len)                                                           \
{                                                                             \
	const uint64_t *l;                                                    \
	uint64_t e, off;                                                      \
                                                                              \
	if (va >> 48)                                                         \
		return false;                                                 \
	l = r->top[va >> 30];                                                 \
	if (!l)                                                               \
		return false;                                                 \
	e = l[(va >> (SHIFT)) & ((1ull << (30 - (SHIFT))) - 1)];              \
	if ((e & perm) != perm)                                               \
		return false;                                                 \
	off = va & ((1ull << (SHIFT)) - 1);                                   \
	*out = (e & ~0xfffull) + off;                                         \
	*len = (1ull << (SHIFT)) - off;                                       \
	return true;                                                          \
}
RADIX_PROBE(radix_probe_4k, 12)
RADIX_PROBE(radix_probe_2m, 21)

/* ---- the measured loops (what callgrind counts: --toggle-collect) ------ */

static __attribute__((noinline)) uint64_t
loop_radix_4k(const struct radix *r, const uint64_t *keys, size_t n)
{
	uint64_t acc = 0, out, len;

	for (size_t i = 0; i < n; i++) {
		if (radix_probe_4k(r, keys[i], PERM_R, &out, &len) && len >= 8)
			acc += out;
		else
			acc += 1;
	}
	return acc;
}

static __attribute__((noinline)) uint64_t
loop_radix_2m(const struct radix *r, const uint64_t *keys, size_t n)
{
	uint64_t acc = 0, out, len;

	for (size_t i = 0; i < n; i++) {
		if (radix_probe_2m(r, keys[i], PERM_R, &out, &len) && len >= 8)
			acc += out;
		else
			acc += 1;
	}
	return acc;
}

static __attribute__((noinline)) uint64_t
loop_iopt(const struct iopt *t, const uint64_t *keys, size_t n)
{
	uint64_t acc = 0;

	for (size_t i = 0; i < n; i++) {
		struct iopt_hit h;

		iopt_lookup(t, keys[i], &h);
		if ((h.entry & PERM_R) == PERM_R && h.len >= 8)
			acc += h.target;
		else
			acc += 1;
	}
	return acc;
}

/* Latency: each key depends on the previous result (target >> 63 is 0,
 * which the compiler cannot know), so lookups cannot overlap: the cost of
 * the dependent loads themselves, as when a device model translates a
 * descriptor address it just read. */
#define DEP_LOOP(name, PROBE)                                                 \
static __attribute__((noinline)) uint64_t                                     \
name(const struct radix *r, const uint64_t *keys, size_t n)                   \
{                                                                             \
	uint64_t acc = 0, out = 0, len;                                       \
                                                                              \
	for (size_t i = 0; i < n; i++) {                                      \
		if (PROBE(r, keys[i] + (out >> 63), PERM_R, &out, &len) &&    \
		    len >= 8)                                                 \
			acc += out;                                           \
		else                                                          \
			acc += 1;                                             \
	}                                                                     \
	return acc;                                                           \
}
DEP_LOOP(dep_radix_4k, radix_probe_4k)
DEP_LOOP(dep_radix_2m, radix_probe_2m)

static __attribute__((noinline)) uint64_t
dep_iopt(const struct iopt *t, const uint64_t *keys, size_t n)
{
	uint64_t acc = 0, out = 0;

	for (size_t i = 0; i < n; i++) {
		struct iopt_hit h;

		iopt_lookup(t, keys[i] + (out >> 63), &h);
		out = h.target;
		if ((h.entry & PERM_R) == PERM_R && h.len >= 8)
			acc += h.target;
		else
			acc += 1;
	}
	return acc;
}

/* Unused where valgrind's headers are absent (a cross build). */
static __attribute__((noinline, unused)) uint64_t
loop_empty(const uint64_t *keys, size_t n)
{
	uint64_t acc = 0;

	for (size_t i = 0; i < n; i++)
		acc += keys[i];
	return acc;
}

/* ---- cases -------------------------------------------------------------- */

enum layout { L_4K_PAIRED, L_4K_SPARSE, L_4K_DENSE, L_2M, L_1G };

struct bcase {
	const char *name;
	enum layout layout;
	uint64_t n;
};

static const struct bcase cases[] = {
	{ "4K x16",            L_4K_PAIRED, 16 },
	{ "4K x1024",          L_4K_PAIRED, 1024 },
	{ "4K x65536",         L_4K_PAIRED, 65536 },
	{ "4K x65536 sparse",  L_4K_SPARSE, 65536 },
	{ "2M x1024",          L_2M,        1024 },
	{ "1G x16",            L_1G,        16 },
};

struct setup {
	struct iopt t;
	struct radix *r;
	uint64_t *keys;
	uint64_t mlen;
};

static uint64_t map_iova(enum layout l, uint64_t i)
{
	switch (l) {
	case L_4K_PAIRED: return BASE + 2 * i * 4096;
	case L_4K_SPARSE: return BASE + i * (2ull << 20) + (i % 512) * 4096;
	case L_4K_DENSE:  return BASE + i * 4096;
	case L_2M:        return BASE + i * (2ull << 20);
	default:          return BASE + (i << 30);
	}
}

static uint64_t map_len(enum layout l)
{
	return l == L_2M ? 2ull << 20 : l == L_1G ? 1ull << 30 : 4096;
}

static void setup(struct setup *s, enum layout l, uint64_t n, size_t nkeys)
{
	uint64_t len = map_len(l);

	if (iopt_init(&s->t, 48, 4096))
		abort();
	s->r = radix_new(len == 4096 ? 12 : 21);
	s->mlen = len;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t iova = map_iova(l, i), target = TBASE + i * len;

		if (iopt_reserve(&s->t, iova, len, target) ||
		    iopt_map(&s->t, iova, len, target, IOPT_R | IOPT_W))
			abort();
		radix_map(s->r, iova, len, target);
	}
	s->keys = malloc(nkeys * sizeof(*s->keys));
	if (!s->keys)
		abort();
	bench_rng = 88172645463325252ull;
	for (size_t k = 0; k < nkeys; k++)
		s->keys[k] = map_iova(l, bench_rnd() % n) + (bench_rnd() % (len / 8)) * 8;
}

static void teardown(struct setup *s)
{
	iopt_fini(&s->t);
	radix_free(s->r);
	free(s->keys);
}

static uint64_t run_radix(const struct setup *s, size_t n)
{
	return s->mlen == 4096 ? loop_radix_4k(s->r, s->keys, n)
			       : loop_radix_2m(s->r, s->keys, n);
}

static uint64_t dep_radix(const struct setup *s, size_t n)
{
	return s->mlen == 4096 ? dep_radix_4k(s->r, s->keys, n)
			       : dep_radix_2m(s->r, s->keys, n);
}

/* ---- instruction counts: this program again, under callgrind ------------ */

#define IR_PER_CASE 3 /* radix, iopt, empty */

static int ir_child(void)
{
#ifdef HAVE_CALLGRIND
	static volatile uint64_t sink;

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct setup s;

		setup(&s, cases[c].layout, cases[c].n, IR_KEYS);
		CALLGRIND_DUMP_STATS_AT("setup"); /* collects nothing: drops it */
		sink += run_radix(&s, IR_KEYS);
		CALLGRIND_DUMP_STATS_AT("radix");
		sink += loop_iopt(&s.t, s.keys, IR_KEYS);
		CALLGRIND_DUMP_STATS_AT("iopt");
		sink += loop_empty(s.keys, IR_KEYS);
		CALLGRIND_DUMP_STATS_AT("empty");
		teardown(&s);
	}
	return 0;
#else
	return 1;
#endif
}

/* Ir of dump @n in @dir, or -1. */
static __attribute__((unused)) double read_dump(const char *dir, int n)
{
	char path[512], line[512];
	double ir = -1;
	FILE *f;

	snprintf(path, sizeof(path), "%s/cg.%d", dir, n);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "summary:", 8) || !strncmp(line, "totals:", 7)) {
			ir = strtod(strchr(line, ':') + 1, NULL);
			break;
		}
	}
	fclose(f);
	unlink(path);
	return ir;
}

/* Fills ir[case][0..2] (radix, iopt, empty) per lookup; false if no
 * callgrind. */
static bool measure_ir(double ir[][IR_PER_CASE])
{
#ifdef HAVE_CALLGRIND
	char dir[] = "/tmp/bench_iopt.XXXXXX", out[600], self[512];
	ssize_t sl;
	pid_t pid;
	int st, dump = 1;

	if (!mkdtemp(dir))
		return false;
	sl = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (sl <= 0)
		return false;
	self[sl] = 0;
	snprintf(out, sizeof(out), "--callgrind-out-file=%s/cg", dir);
	pid = fork();
	if (pid == 0) {
		freopen("/dev/null", "w", stdout);
		freopen("/dev/null", "w", stderr);
		execlp("valgrind", "valgrind", "--tool=callgrind", "--collect-atstart=no",
		       "--toggle-collect=loop_*", out, self, "--ir-child", (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) {
		rmdir(dir);
		return false;
	}
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		read_dump(dir, dump++); /* setup */
		for (int k = 0; k < IR_PER_CASE; k++)
			ir[c][k] = read_dump(dir, dump++) / IR_KEYS;
	}
	snprintf(out, sizeof(out), "%s/cg", dir);
	unlink(out);
	rmdir(dir);
	return true;
#else
	(void)ir;
	return false;
#endif
}

static volatile uint64_t sink; /* keeps the timed loops */

/* ---- main ------------------------------------------------------------------ */

static void memory_report(void)
{
	static const struct { const char *name; enum layout l; } m[] = {
		{ "dense (contiguous pages)", L_4K_DENSE },
		{ "sparse (one per 2 MiB)", L_4K_SPARSE },
	};

	printf("\ntable memory at 65,536 live 4 KiB mappings (bytes per mapping)\n");
	printf("  %-26s %14s %14s %14s\n", "layout", "iopt", "iopt w/o root", "2-level radix");
	for (size_t i = 0; i < 2; i++) {
		struct setup s;
		struct iopt_stats st;

		setup(&s, m[i].l, 65536, 1);
		iopt_get_stats(&s.t, &st);
		printf("  %-26s %14.1f %14.1f %14.1f\n", m[i].name,
		       (double)st.bytes / 65536,
		       (double)(st.bytes - ((size_t)1 << 18) * 8) / 65536, /* W=48 root */
		       (double)radix_bytes(s.r) / 65536);
		teardown(&s);
	}
	printf("  (roots: iopt 2 MiB and radix 2 MiB at W = 48, allocated zeroed; the\n"
	       "   radix's 4 KiB-granule leaf tables are 2 MiB each, touched per page)\n");
}

int main(int argc, char **argv)
{
	const size_t nc = sizeof(cases) / sizeof(cases[0]);
	double ns[sizeof(cases) / sizeof(cases[0])][4];
	double ir[sizeof(cases) / sizeof(cases[0])][IR_PER_CASE];
	bool have_ir = false, no_ir = false;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--ir-child"))
			return ir_child();
		if (!strcmp(argv[i], "--no-ir"))
			no_ir = true;
	}
	for (size_t c = 0; c < nc; c++) {
		double vr[BENCH_RUNS], vi[BENCH_RUNS], dr[BENCH_RUNS], di[BENCH_RUNS];
		struct setup s;
		uint64_t sr, si;

		setup(&s, cases[c].layout, cases[c].n, NKEYS);
		sr = run_radix(&s, NKEYS); /* warm-up, and the sums to compare */
		si = loop_iopt(&s.t, s.keys, NKEYS);
		sink = sr;
		if (sr != si || dep_radix(&s, NKEYS) != dep_iopt(&s.t, s.keys, NKEYS)) {
			fprintf(stderr, "%s: radix and iopt disagree\n", cases[c].name);
			return 1;
		}
		for (int k = 0; k < BENCH_RUNS; k++) {
			double t0 = bench_cpu_ns();

			sink += run_radix(&s, NKEYS);
			vr[k] = (bench_cpu_ns() - t0) / NKEYS;
			t0 = bench_cpu_ns();
			sink += loop_iopt(&s.t, s.keys, NKEYS);
			vi[k] = (bench_cpu_ns() - t0) / NKEYS;
			t0 = bench_cpu_ns();
			sink += dep_radix(&s, NKEYS);
			dr[k] = (bench_cpu_ns() - t0) / NKEYS;
			t0 = bench_cpu_ns();
			sink += dep_iopt(&s.t, s.keys, NKEYS);
			di[k] = (bench_cpu_ns() - t0) / NKEYS;
		}
		ns[c][0] = bench_median(vr, BENCH_RUNS);
		ns[c][1] = bench_median(vi, BENCH_RUNS);
		ns[c][2] = bench_median(dr, BENCH_RUNS);
		ns[c][3] = bench_median(di, BENCH_RUNS);
		teardown(&s);
	}
	if (!no_ir)
		have_ir = measure_ir(ir);

	printf("bench_iopt: lookup of 8 bytes, read permission (W = 48, 4 KiB granule)\n");
	printf("time: median of %d runs of %u random keys, thread CPU ns per lookup\n",
	       BENCH_RUNS, NKEYS);
	printf("  %-18s %9s %9s %7s | %9s %9s %7s", "case", "radix ns", "iopt ns", "ratio",
	       "dep radix", "dep iopt", "ratio");
	if (have_ir)
		printf(" | %8s %8s %6s | %6s %8s %8s %6s", "radix Ir", "iopt Ir", "ratio",
		       "loop", "radix-", "iopt-", "ratio");
	printf("\n");
	for (size_t c = 0; c < nc; c++) {
		printf("  %-18s %9.2f %9.2f %6.2fx | %9.2f %9.2f %6.2fx", cases[c].name,
		       ns[c][0], ns[c][1], ns[c][1] / ns[c][0], ns[c][2], ns[c][3],
		       ns[c][3] / ns[c][2]);
		if (have_ir) {
			double net_r = ir[c][0] - ir[c][2], net_i = ir[c][1] - ir[c][2];

			printf(" | %8.1f %8.1f %5.2fx | %6.1f %8.1f %8.1f %5.2fx",
			       ir[c][0], ir[c][1], ir[c][1] / ir[c][0], ir[c][2],
			       net_r, net_i, net_i / net_r);
		}
		printf("\n");
	}
	printf("  ns: independent lookups (throughput); dep: each key depends on the\n"
	       "  previous result (latency of the dependent loads)\n");
	if (have_ir)
		printf("  Ir: callgrind instructions per lookup (%u keys); \"loop\" is an empty\n"
		       "  loop summing the keys, and radix-/iopt- are net of it\n", IR_KEYS);
	else if (!no_ir)
		printf("  (no instruction counts: valgrind/callgrind not available)\n");
	memory_report();
	return 0;
}
