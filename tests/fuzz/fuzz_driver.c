/* SPDX-License-Identifier: MIT */
/*
 * fuzz_driver.c - a standalone driver for the vhost-user fuzz target, for
 * compilers without libFuzzer (gcc) and for the bounded run in `make
 * check`.  It runs LLVMFuzzerTestOneInput() over
 *   1. the files named on the command line, if any (reproduce a crash);
 *   2. otherwise every file of the seed corpus (--corpus DIR), then
 *      pseudo-random inputs: mutations of the seeds and of earlier
 *      mutations, from a fixed-seed PRNG, until --count inputs ran or
 *      --seconds passed, whichever comes first.
 * No coverage feedback: that is what the libFuzzer build is for
 * (tests/fuzz/README.md).  The sequence depends only on --seed and the
 * corpus, so input number N is reproducible: --save N FILE writes it.
 *
 * Defaults: 20000 inputs or 60 s; under valgrind 2000, under TSan 500.
 * --threads adds a device thread that translates and reads while the
 * messages are handled (3000 inputs; valgrind 600, TSan 200).  The
 * environment may lower or raise them: IODMA_FUZZ_COUNT, IODMA_FUZZ_SECONDS.
 * On a crash the input is written to ./vu-fuzz-crash.bin (and its number
 * printed) before the process dies.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#ifdef RUNNING_ON_VALGRIND
#define UNDER_VALGRIND() (RUNNING_ON_VALGRIND != 0)
#else
#define UNDER_VALGRIND() 0
#endif

/* ThreadSanitizer makes every mmap and fd operation slow (about 20
 * inputs/s): a smaller default keeps its tier's run the same every time. */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif

#include "fuzz_target.h"

#define MAX_LEN   4096
#define MAX_SEEDS 256
#define POOL      32

struct input {
	uint8_t *b;
	size_t n;
};

static struct input seeds[MAX_SEEDS];
static size_t nseeds;
static struct input pool[POOL];        /* recent mutations, to mutate again */
static size_t npool;

/* The input being run, for the crash handler. */
static const uint8_t *run_data;
static size_t run_len;
static long run_index = -1;

static uint64_t rng;

static uint64_t rnd(void)
{
	/* xorshift64*: the whole sequence follows from --seed. */
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545f4914f6cdd1dull;
}

static size_t pick(size_t n)
{
	return n ? (size_t)(rnd() % n) : 0;
}

static void dump_crash(void)
{
	static char path[96];
	char msg[200];
	int fd, len;

	if (!run_data)
		return;
	snprintf(path, sizeof(path), "%s-crash.bin", fuzz_target.name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd >= 0) {
		if (write(fd, run_data, run_len) != (ssize_t)run_len)
			(void)0;
		close(fd);
	}
	len = snprintf(msg, sizeof(msg),
		       "%s: input #%ld (%zu bytes) failed; written to %s\n",
		       fuzz_target.name, run_index, run_len, path);
	if (len > 0 && write(2, msg, (size_t)len) < 0)
		(void)0;
	run_data = NULL;
}

static void on_signal(int sig)
{
	dump_crash();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* ASan/UBSan report through their own exit path: ask them to call us. */
extern void __sanitizer_set_death_callback(void (*cb)(void)) __attribute__((weak));

static void run(const uint8_t *b, size_t n, long index)
{
	run_data = b;
	run_len = n;
	run_index = index;
	LLVMFuzzerTestOneInput(b, n);
	run_data = NULL;
}

static int read_file(const char *path, struct input *in)
{
	FILE *f = fopen(path, "rb");
	uint8_t buf[MAX_LEN];
	size_t n;

	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	in->b = malloc(n ? n : 1);
	if (!in->b)
		return -1;
	memcpy(in->b, buf, n);
	in->n = n;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int load_corpus(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char *names[MAX_SEEDS];
	size_t n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)) && n < MAX_SEEDS)
		if (e->d_name[0] != '.')
			names[n++] = strdup(e->d_name);
	closedir(d);
	qsort(names, n, sizeof(names[0]), cmp_str); /* a fixed order */
	for (size_t i = 0; i < n; i++) {
		char path[4096];

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (read_file(path, &seeds[nseeds]) == 0 && seeds[nseeds].n)
			nseeds++;
		free(names[i]);
	}
	return 0;
}

static const uint8_t interesting[] = { 0, 1, 2, 3, 4, 5, 7, 8, 0x7f, 0x80, 0xc0,
				       0xe0, 0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5,
				       0xf6, 0xff };

/* Mutate @b (@n bytes, room for MAX_LEN) in place; returns the new length. */
static size_t mutate(uint8_t *b, size_t n)
{
	int rounds = 1 + (int)pick(6);

	for (int r = 0; r < rounds; r++) {
		const struct input *o = &seeds[pick(nseeds)];

		switch (pick(8)) {
		case 0: /* flip a bit */
			if (n)
				b[pick(n)] ^= (uint8_t)(1u << pick(8));
			break;
		case 1: /* an interesting byte */
			if (n)
				b[pick(n)] = interesting[pick(sizeof(interesting))];
			break;
		case 2: /* a random byte */
			if (n)
				b[pick(n)] = (uint8_t)rnd();
			break;
		case 3: { /* insert bytes */
			size_t at = pick(n + 1), k = 1 + pick(8);

			if (n + k > MAX_LEN)
				break;
			memmove(b + at + k, b + at, (n - at) & (MAX_LEN - 1)); /* < MAX_LEN: the mask tells gcc */
			for (size_t i = 0; i < k; i++)
				b[at + i] = (uint8_t)rnd();
			n += k;
			break;
		}
		case 4: { /* delete bytes */
			size_t at = pick(n), k = 1 + pick(16);

			if (!n)
				break;
			if (at + k > n)
				k = n - at;
			memmove(b + at, b + at + k, n - at - k);
			n -= k;
			break;
		}
		case 5: { /* duplicate a chunk (repeat a message) */
			size_t from = pick(n), k = 1 + pick(64), at = pick(n + 1);

			if (!n || at > n)
				break;
			if (from + k > n)
				k = n - from;
			if (!k || n + k > MAX_LEN || k > MAX_LEN)
				break;
			memmove(b + at + k, b + at, (n - at) & (MAX_LEN - 1)); /* < MAX_LEN: the mask tells gcc */
			memmove(b + at, b + (from < at ? from : from + k), k);
			n += k;
			break;
		}
		case 6: { /* splice: our head, another seed's tail */
			size_t at = pick(n + 1), from = pick(o->n + 1);

			if (at + (o->n - from) > MAX_LEN)
				break;
			memcpy(b + at, o->b + from, o->n - from);
			n = at + (o->n - from);
			break;
		}
		default: { /* overwrite with a chunk of another seed */
			size_t from = pick(o->n), k = 1 + pick(48), at = pick(n + 1);

			if (from + k > o->n)
				k = o->n - from;
			if (at + k > MAX_LEN)
				break;
			memcpy(b + at, o->b + from, k);
			if (at + k > n)
				n = at + k;
			break;
		}
		}
	}
	return n;
}

/* Input number @i of the sequence (after the corpus) into @b. */
static size_t generate(uint8_t *b)
{
	size_t n;

	if (pick(16) == 0 || !nseeds) {
		n = 1 + pick(600);
		for (size_t i = 0; i < n; i++)
			b[i] = (uint8_t)rnd();
		return n;
	}
	if (npool && pick(3) == 0) {
		const struct input *p = &pool[pick(npool)];

		memcpy(b, p->b, p->n);
		n = p->n;
	} else {
		const struct input *s = &seeds[pick(nseeds)];

		memcpy(b, s->b, s->n);
		n = s->n;
	}
	return mutate(b, n);
}

static void remember(const uint8_t *b, size_t n)
{
	struct input *p = &pool[npool < POOL ? npool++ : pick(POOL)];

	free(p->b);
	p->b = malloc(n ? n : 1);
	if (!p->b) {
		p->n = 0;
		return;
	}
	memcpy(p->b, b, n);
	p->n = n;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static long env_long(const char *name, long dflt)
{
	const char *v = getenv(name);

	return v && *v ? atol(v) : dflt;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: %s [--corpus DIR] [--count N] [--seconds S] [--seed X]\n"
		"       %*s [--threads] [--save N FILE] [--write-seeds DIR] [FILE...]\n",
		fuzz_target.name, (int)strlen(fuzz_target.name), "");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *corpus = NULL, *save_file = NULL;
	long count = -1;
	double seconds = (double)env_long("IODMA_FUZZ_SECONDS", 60);
	long save_index = -1, i;
	uint64_t seed = 0x5eed0f1d0ull;
	const long *counts = fuzz_target.count;
	static uint8_t buf[MAX_LEN];
	int nfiles = 0;
	double t0, dt;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int a = 1; a < argc; a++) {
		if (!strcmp(argv[a], "--corpus") && a + 1 < argc) {
			corpus = argv[++a];
		} else if (!strcmp(argv[a], "--count") && a + 1 < argc) {
			count = atol(argv[++a]);
		} else if (!strcmp(argv[a], "--seconds") && a + 1 < argc) {
			seconds = atof(argv[++a]);
		} else if (!strcmp(argv[a], "--seed") && a + 1 < argc) {
			seed = strtoull(argv[++a], NULL, 0);
		} else if (!strcmp(argv[a], "--save") && a + 2 < argc) {
			save_index = atol(argv[++a]);
			save_file = argv[++a];
		} else if (!strcmp(argv[a], "--threads") && fuzz_target.threads) {
			counts = fuzz_target.threads();
		} else if (!strcmp(argv[a], "--write-seeds") && a + 1 < argc) {
			int n = fuzz_target.write_seeds(argv[++a]);

			if (n < 0) {
				perror("write-seeds");
				return 1;
			}
			printf("wrote %d seeds to %s\n", n, argv[a]);
			return 0;
		} else if (argv[a][0] == '-') {
			usage();
		} else {
			nfiles++;
		}
	}

	if (count < 0)
		count = env_long("IODMA_FUZZ_COUNT",
				 UNDER_VALGRIND() ? counts[1] : UNDER_TSAN ? counts[2] : counts[0]);

	signal(SIGABRT, on_signal);
	signal(SIGSEGV, on_signal);
	signal(SIGBUS, on_signal);
	signal(SIGILL, on_signal);
	signal(SIGFPE, on_signal);
	if (__sanitizer_set_death_callback)
		__sanitizer_set_death_callback(dump_crash);

	t0 = now();
	if (nfiles) {
		/* Reproduce: run the named files only. */
		for (int a = 1; a < argc; a++) {
			struct input in;

			if (argv[a][0] == '-') {
				if (strcmp(argv[a], "--corpus") && strcmp(argv[a], "--seed") &&
				    strcmp(argv[a], "--count") && strcmp(argv[a], "--seconds"))
					continue;
				a++;
				continue;
			}
			if (read_file(argv[a], &in)) {
				perror(argv[a]);
				return 1;
			}
			run(in.b, in.n, -1);
			printf("%s: ok\n", argv[a]);
			free(in.b);
		}
		return 0;
	}

	if (corpus && load_corpus(corpus)) {
		perror(corpus);
		return 1;
	}
	for (size_t s = 0; s < nseeds; s++)
		run(seeds[s].b, seeds[s].n, -1 - (long)s);
	rng = seed ? seed : 1;
	for (i = 0; i < count; i++) {
		size_t n = generate(buf);

		if (i == save_index) {
			FILE *f = fopen(save_file, "wb");

			if (!f || fwrite(buf, 1, n, f) != n || fclose(f)) {
				perror(save_file);
				return 1;
			}
			printf("input #%ld (%zu bytes) saved to %s\n", i, n, save_file);
			return 0;
		}
		run(buf, n, i);
		if (pick(4) == 0)
			remember(buf, n);
		if ((i & 63) == 0 && now() - t0 > seconds) {
			i++;
			break;
		}
	}
	dt = now() - t0;
	printf("%s: %zu seeds + %ld generated inputs in %.1f s (%.0f inputs/s), "
	       "seed %#llx%s\n", fuzz_target.name, nseeds, i, dt,
	       (double)(nseeds + (size_t)i) / dt,
	       (unsigned long long)seed, i < count ? " (time bound reached)" : "");
	if (fuzz_target.summary(i))
		return 1;
	for (size_t s = 0; s < nseeds; s++)
		free(seeds[s].b);
	for (size_t p = 0; p < npool; p++)
		free(pool[p].b);
	return 0;
}
