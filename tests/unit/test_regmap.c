// SPDX-License-Identifier: MIT
/*
 * test_regmap.c - the registered-memory VA -> IOVA table (src/regmap.h):
 * direct 2 MiB entries and their table cost, 4 KiB leaves under partly
 * registered chunks, per-page entries, clear and restore, contiguity
 * across entries, every documented error with "nothing changed", and
 * lock-free lookups while another thread registers and unregisters.
 *
 * Addresses are synthetic: the table never touches the memory it maps.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <iodma/backend.h>
#include <iodma/test-hooks.h> /* fault injection: tests only */

#include "regmap.h"
#include "util.h"

#define K4   4096ull
#define M2   (2ull << 20)
#define BASE 0x200000000000ull /* 32 TiB: 8 GiB aligned */

static struct regmap *mk(void)
{
	struct regmap *m = NULL;

	assert_int_equal(regmap_create(&m), 0);
	return m;
}

static void reg(struct regmap *m, uint64_t va, uint64_t len, uint64_t iova)
{
	assert_int_equal(regmap_reserve(m, va, len), 0);
	regmap_set(m, va, len, iova);
}

static uint64_t look(struct regmap *m, uint64_t va, uint64_t len)
{
	uint64_t io = 0xdead;

	assert_int_equal(regmap_lookup(m, va, len, &io), 0);
	return io;
}

static void miss(struct regmap *m, uint64_t va, uint64_t len)
{
	uint64_t io = 0xdead;

	assert_int_equal(regmap_lookup(m, va, len, &io), -ENOENT);
	assert_int_equal(io, 0xdead);
}

/* Whole 2 MiB chunks are one entry each: 4096 registrations of 2 MiB in
 * one 8 GiB span cost one 32 KiB L2 table, 8 bytes per chunk (the 4 KiB
 * leaves of the old table cost 4096 bytes per chunk). */
static void test_whole_chunks_are_direct_entries(void **state)
{
	struct regmap *m = mk();
	uint64_t before = regmap_table_bytes(m);

	(void)state;
	for (uint64_t i = 0; i < 4096; i++)
		reg(m, BASE + i * M2, M2, 0x1000000000ull + i * 3 * M2);
	assert_true(regmap_table_bytes(m) - before <= 16 * 4096);
	for (uint64_t i = 0; i < 4096; i += 97) {
		uint64_t io = 0x1000000000ull + i * 3 * M2;

		assert_int_equal(look(m, BASE + i * M2, 1), io);
		assert_int_equal(look(m, BASE + i * M2 + 12345, 256), io + 12345);
		assert_int_equal(look(m, BASE + i * M2, M2), io);
		/* Into the next registration, which is not contiguous in
		 * IOVA (gap of 2 MiB between them). */
		if (i + 1 < 4096)
			miss(m, BASE + (i + 1) * M2 - 8, 16);
	}
	/* Past the end, before the start, below a registered L2 table. */
	miss(m, BASE + 4096 * M2, 1);
	miss(m, BASE - 1, 1);
	miss(m, BASE - 1, 2);
	regmap_destroy(m);
}

/* A registration that covers chunks in part: leaves under those, a direct
 * entry for the whole ones, and a buffer crossing from one kind to the
 * other is contiguous. */
static void test_partial_chunks_use_leaves(void **state)
{
	struct regmap *m = mk();
	uint64_t va = BASE + 3 * M2 - 8 * K4, len = 8 * K4 + M2 + 5 * K4;
	uint64_t io = 0x40000000ull, before = regmap_table_bytes(m);

	(void)state;
	reg(m, va, len, io);
	/* One L2 table and two leaves. */
	assert_int_equal(regmap_table_bytes(m) - before, 32768 + 2 * 4096);
	assert_int_equal(look(m, va, 1), io);
	assert_int_equal(look(m, va + 8 * K4 - 100, 200), io + 8 * K4 - 100);
	assert_int_equal(look(m, va + 8 * K4 + M2 - 100, 200), io + 8 * K4 + M2 - 100);
	assert_int_equal(look(m, va, len), io);
	miss(m, va - 1, 2);
	miss(m, va, len + 1);
	miss(m, va - K4, 1);
	/* The rest of the first chunk, registered elsewhere in IOVA: each is
	 * found, a buffer across the two is not contiguous. */
	reg(m, BASE + 2 * M2, M2 - 8 * K4, 0x80000000ull);
	assert_int_equal(look(m, BASE + 2 * M2, K4), 0x80000000ull);
	miss(m, va - 8, 16);
	/* Unregister both: nothing left. */
	regmap_clear(m, va, len);
	regmap_clear(m, BASE + 2 * M2, M2 - 8 * K4);
	miss(m, va, 1);
	miss(m, va + 8 * K4, 1);
	miss(m, BASE + 2 * M2, 1);
	regmap_destroy(m);
}

/* Direct-mode pages: one entry each, contiguous or not. */
static void test_pages_one_by_one(void **state)
{
	struct regmap *m = mk();
	uint64_t va = BASE + 7 * M2;

	(void)state;
	assert_int_equal(regmap_reserve_pages(m, va, M2 + 4 * K4), 0);
	for (uint64_t p = 0; p < (M2 + 4 * K4) / K4; p++) {
		/* Pairs of pages contiguous, pairs apart. */
		uint64_t pa = 0x10000000ull + (p / 2) * 4 * K4 + (p % 2) * K4;

		regmap_set_page(m, va + p * K4, pa);
	}
	assert_int_equal(look(m, va + 5, 2 * K4 - 5), 0x10000000ull + 5);
	miss(m, va + K4, 2 * K4);               /* pages 1 and 2 are apart */
	miss(m, va + M2 - 8, 16);               /* pages 511 and 512 too */
	/* Pages 512 and 513 (the next chunk's leaf) are contiguous. */
	assert_int_equal(look(m, va + M2 + K4 - 8, 16),
			 0x10000000ull + 256 * 4 * K4 + K4 - 8);
	regmap_clear(m, va, M2 + 4 * K4);
	miss(m, va, 1);
	miss(m, va + M2, 1);
	regmap_destroy(m);
}

/* iodma_dev_unregister()'s failure path: clear, then set again. */
static void test_clear_then_set_again_restores(void **state)
{
	struct regmap *m = mk();
	uint64_t va = BASE + 64 * M2 + 16 * K4, len = 3 * M2;

	(void)state;
	reg(m, va, len, 0x7000000000ull);
	regmap_clear(m, va, len);
	miss(m, va, 1);
	miss(m, va + M2, 1);
	regmap_set(m, va, len, 0x7000000000ull);
	assert_int_equal(look(m, va, len), 0x7000000000ull);
	assert_int_equal(look(m, va + M2 + 3, 8), 0x7000000000ull + M2 + 3);
	regmap_destroy(m);
}

/* A direct chunk given a leaf by a reserve keeps its translation, and can
 * then be cleared in part. */
static void test_leaf_under_direct_chunk_says_the_same(void **state)
{
	struct regmap *m = mk();
	uint64_t va = BASE + 9 * M2, before;

	(void)state;
	reg(m, va, M2, 0x5000000000ull);
	before = regmap_table_bytes(m);
	assert_int_equal(regmap_reserve_pages(m, va + K4, K4), 0);
	assert_int_equal(regmap_table_bytes(m) - before, 4096);
	assert_int_equal(look(m, va, M2), 0x5000000000ull);
	regmap_clear(m, va + K4, K4);
	miss(m, va + K4, 1);
	miss(m, va, M2);
	assert_int_equal(look(m, va + 2 * K4, M2 - 2 * K4), 0x5000000000ull + 2 * K4);
	regmap_destroy(m);
}

/* -EINVAL past 2^48, -ENOMEM with nothing changed for lookups. */
static void test_reserve_errors_change_nothing(void **state)
{
	struct regmap *m = mk();
	uint64_t va = BASE + 100 * M2 + K4, before;
	int ret = -ENOMEM;

	(void)state;
	assert_int_equal(regmap_reserve(m, (1ull << 48) - K4, 2 * K4), -EINVAL);
	assert_int_equal(regmap_reserve_pages(m, 1ull << 48, K4), -EINVAL);
	assert_int_equal(regmap_reserve(m, UINT64_MAX - K4 + 1, K4), -EINVAL);
	miss(m, (1ull << 48) - 1, 2);
	miss(m, 0, 0);
	reg(m, BASE, M2, 0x3000000000ull);
	before = regmap_table_bytes(m);
	/* Fail each allocation a reserve makes in turn. */
	for (unsigned long n = 1; ret == -ENOMEM; n++) {
		iodma_test_fail_alloc(n);
		ret = regmap_reserve(m, va, 2 * M2);
		iodma_test_fail_alloc(0);
		assert_true(ret == 0 || ret == -ENOMEM);
		miss(m, va, 1);
		miss(m, va + M2, 1);
		assert_int_equal(look(m, BASE, M2), 0x3000000000ull);
		assert_true(n < 10);
	}
	assert_true(regmap_table_bytes(m) > before);
	regmap_set(m, va, 2 * M2, 0x9000000000ull);
	assert_int_equal(look(m, va, 2 * M2), 0x9000000000ull);
	regmap_destroy(m);
}

/* Lock-free lookups of stable registrations while another thread keeps
 * registering and unregistering next to them: in the same leaf, whole
 * chunks in the same L2 table, and in L2 tables installed meanwhile. */
struct rd_arg {
	struct regmap *m;
	_Atomic int stop;
	_Atomic long lookups;
	int errors;
};

#define STABLE_LEAF   (BASE + 20 * M2 + 8 * K4)   /* 8 pages, chunk 20 */
#define STABLE_DIRECT (BASE + 21 * M2)            /* chunk 21 */

static void *reader(void *p)
{
	struct rd_arg *a = p;

	while (!atomic_load_explicit(&a->stop, memory_order_relaxed)) {
		uint64_t io;

		if (regmap_lookup(a->m, STABLE_LEAF + 3 * K4 + 7, 100, &io) ||
		    io != 0x11000000ull + 3 * K4 + 7)
			a->errors++;
		if (regmap_lookup(a->m, STABLE_DIRECT + 77777, 4096, &io) ||
		    io != 0x22000000ull + 77777)
			a->errors++;
		atomic_fetch_add_explicit(&a->lookups, 1, memory_order_relaxed);
	}
	return NULL;
}

static void test_lookups_lock_free_during_writes(void **state)
{
	struct regmap *m = mk();
	struct rd_arg a = { .m = m };
	pthread_t t;

	(void)state;
	reg(m, STABLE_LEAF, 8 * K4, 0x11000000ull);
	reg(m, STABLE_DIRECT, M2, 0x22000000ull);
	assert_int_equal(pthread_create(&t, NULL, reader, &a), 0);
	/* At least 300 rounds, and until the reader has run alongside. */
	for (int i = 0; i < 300 || (atomic_load(&a.lookups) < 20000 && i < 1000000); i++) {
		uint64_t far = BASE + (uint64_t)(i % 7 + 1) * (8ull << 30);

		/* Same leaf, same L2 table (whole chunks), other L2 tables. */
		reg(m, BASE + 20 * M2, 8 * K4, 0x33000000ull);
		reg(m, BASE + 22 * M2, 2 * M2, 0x44000000ull);
		reg(m, far, M2 + K4, 0x55000000ull);
		regmap_clear(m, BASE + 20 * M2, 8 * K4);
		regmap_clear(m, BASE + 22 * M2, 2 * M2);
		regmap_clear(m, far, M2 + K4);
	}
	atomic_store(&a.stop, 1);
	pthread_join(t, NULL);
	assert_int_equal(a.errors, 0);
	assert_true(atomic_load(&a.lookups) >= 20000);
	regmap_destroy(m);
}

/* A *_locked helper called without its lock trips the lock assertion
 * (os_mutex_assert_held(), like lockdep_assert_held() in Linux's iova.c):
 * a death test, in a child process.  With the same lock held the same
 * call succeeds.  Release builds (NDEBUG) compile the check out. */
static void test_locked_helper_without_the_lock_aborts(void **state)
{
	struct regmap *m = NULL;
	uint64_t va = 0x40000000ull, iova;
	int status;
	pid_t pid;

	(void)state;
#ifdef NDEBUG
	skip();
#endif
	assert_int_equal(regmap_create(&m), 0);
	assert_int_equal(regmap_reserve(m, va, REGMAP_PAGE_SIZE), 0);
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit no_core = { 0, 0 };

		setrlimit(RLIMIT_CORE, &no_core);
		regmap_test_set_unlocked(m, va, REGMAP_PAGE_SIZE, 0x5000);
		_exit(0); /* the assertion did not fire */
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGABRT);
	/* Under the lock the same call is fine. */
	os_mutex_lock(&m->lock);
	regmap_test_set_unlocked(m, va, REGMAP_PAGE_SIZE, 0x5000);
	os_mutex_unlock(&m->lock);
	assert_int_equal(regmap_lookup(m, va, REGMAP_PAGE_SIZE, &iova), 0);
	assert_int_equal(iova, 0x5000);
	regmap_destroy(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_whole_chunks_are_direct_entries),
		cmocka_unit_test(test_partial_chunks_use_leaves),
		cmocka_unit_test(test_pages_one_by_one),
		cmocka_unit_test(test_clear_then_set_again_restores),
		cmocka_unit_test(test_leaf_under_direct_chunk_says_the_same),
		cmocka_unit_test(test_reserve_errors_change_nothing),
		cmocka_unit_test(test_lookups_lock_free_during_writes),
		cmocka_unit_test(test_locked_helper_without_the_lock_aborts),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
