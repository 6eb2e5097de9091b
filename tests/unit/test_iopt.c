/* SPDX-License-Identifier: MIT */
/*
 * test_iopt.c - the IO page table: argument errors, leaf layout (1 GiB and
 * 2 MiB leaves cost one entry), the edges of the address space, reserve
 * all-or-nothing under allocation failure, a 200k-operation differential
 * test against a sorted-array model for several widths and granules, and
 * lock-free lookups racing a writer.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <iodma/backend.h>
#include <iodma/test-hooks.h> /* fault injection: tests only */

#include "iopt.h"
#include "os/os.h"

#define KiB (1ull << 10)
#define MiB (1ull << 20)
#define GiB (1ull << 30)
#define P4K (4 * KiB)
#define P2M (2 * MiB)
#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* Under ThreadSanitizer the single-threaded differential test runs a
 * tenth of its operations (it has no threads for TSan to check, and
 * TSan's slowdown came near the suite timeout on a loaded machine); the
 * racing test runs in full. */
#if defined(__SANITIZE_THREAD__)
#define TSAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TSAN_BUILD 1
#endif
#endif
#ifdef TSAN_BUILD
#define OPS_DIV 10
/* TSan cannot see liburcu's grace period (membarrier): tell it that every
 * read-side section that has ended happens before what follows
 * os_synchronize_rcu(), which is what RCU guarantees for the nodes freed
 * after it (they were unhooked before it began).  ASan and valgrind check
 * the real thing: without the wait they report the use after free. */
#include <sanitizer/tsan_interface.h>
static char rcu_hb;
#define RCU_HB_RELEASE() __tsan_release(&rcu_hb)
#define RCU_HB_ACQUIRE() __tsan_acquire(&rcu_hb)
#else
#define OPS_DIV 1
#define RCU_HB_RELEASE() ((void)0)
#define RCU_HB_ACQUIRE() ((void)0)
#endif

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint64_t rnd(void)
{
	uint64_t x = rng_state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	rng_state = x;
	return x;
}

/* reserve + map, the map armed to fail any allocation: it must not need one. */
static void map_ok(struct iopt *t, uint64_t iova, uint64_t len, uint64_t target,
		   uint64_t flags)
{
	assert_int_equal(iopt_reserve(t, iova, len, target), 0);
	iodma_test_fail_alloc(1);
	assert_int_equal(iopt_map(t, iova, len, target, flags), 0);
	iodma_test_fail_alloc(0);
}

static void expect_hit(const struct iopt *t, uint64_t iova, uint64_t target,
		       uint64_t len, uint64_t flags)
{
	struct iopt_hit h;

	assert_true(iopt_lookup(t, iova, &h));
	assert_int_equal(h.target, target);
	assert_int_equal(h.len, len);
	assert_int_equal(h.entry & ~IOPT_ADDR, flags | IOPT_PRESENT);
}

static void expect_miss(const struct iopt *t, uint64_t iova)
{
	struct iopt_hit h;

	assert_false(iopt_lookup(t, iova, &h));
	assert_int_equal(h.entry, 0);
	assert_true(h.len > 0);
}

/* ---- argument errors -------------------------------------------------- */

static void test_init_rejects_bad_width_and_granule(void **state)
{
	struct iopt t;

	assert_int_equal(iopt_init(NULL, 48, P4K), -EINVAL);
	assert_int_equal(iopt_init(&t, 11, P4K), -EINVAL);
	assert_int_equal(iopt_init(&t, 65, P4K), -EINVAL);
	assert_int_equal(iopt_init(&t, 48, 0), -EINVAL);
	assert_int_equal(iopt_init(&t, 48, 3 * P4K), -EINVAL);
	assert_int_equal(iopt_init(&t, 48, 2 * KiB), -EINVAL);
	assert_int_equal(iopt_init(&t, 48, 2 * GiB), -EINVAL);
	assert_int_equal(iopt_init(&t, 14, 32 * KiB), -EINVAL); /* > 2^W */
	iopt_fini(&t); /* after a failed init: a no-op */
	iodma_test_fail_alloc(1);
	assert_int_equal(iopt_init(&t, 48, P4K), -ENOMEM);
	iodma_test_fail_alloc(2); /* the high root */
	assert_int_equal(iopt_init(&t, 64, P4K), -ENOMEM);
	iodma_test_fail_alloc(0);
	for (unsigned int w = 12; w <= 64; w++) {
		assert_int_equal(iopt_init(&t, w, P4K), 0);
		iopt_fini(&t);
	}
}

static void test_bad_ranges_and_flags_change_nothing(void **state)
{
	struct iopt t;
	struct iopt_stats st;
	uint64_t un = 7;

	assert_int_equal(iopt_init(&t, 48, 64 * KiB), 0);
	/* len 0, misaligned iova/len/target (64 KiB granule), wraps */
	assert_int_equal(iopt_reserve(&t, 0x100000, 0, 0x200000), -EINVAL);
	assert_int_equal(iopt_reserve(&t, 0x101000, 64 * KiB, 0x200000), -EINVAL);
	assert_int_equal(iopt_reserve(&t, 0x100000, 4 * KiB, 0x200000), -EINVAL);
	assert_int_equal(iopt_reserve(&t, 0x100000, 64 * KiB, 0x201000), -EINVAL);
	assert_int_equal(iopt_reserve(&t, 0x100000, 64 * KiB, 0ull - 64 * KiB + 0), 0);
	assert_int_equal(iopt_reserve(&t, 0x100000, 128 * KiB, 0ull - 64 * KiB), -EINVAL);
	assert_int_equal(iopt_map(&t, 0x100000, 0, 0x200000, IOPT_R), -EINVAL);
	assert_int_equal(iopt_map(&t, 0x101000, 64 * KiB, 0x200000, IOPT_R), -EINVAL);
	assert_int_equal(iopt_map(&t, 0x100000, 64 * KiB, 0x201000, IOPT_R), -EINVAL);
	assert_int_equal(iopt_map(&t, 0x100000, 128 * KiB, 0ull - 64 * KiB, IOPT_R), -EINVAL);
	assert_int_equal(iopt_map(&t, 0x100000, 64 * KiB, 0x200000, IOPT_PRESENT), -EINVAL);
	assert_int_equal(iopt_map(&t, 0x100000, 64 * KiB, 0x200000, IOPT_TABLE), -EINVAL);
	assert_int_equal(iopt_map(&t, 0x100000, 64 * KiB, 0x200000, 0x1000), -EINVAL);
	assert_int_equal(iopt_unmap(&t, 0x100000, 0, NULL), -EINVAL);
	assert_int_equal(iopt_unmap(&t, 0x101000, 64 * KiB, NULL), -EINVAL);
	assert_int_equal(iopt_unmap(&t, 0x100000, 4 * KiB, NULL), -EINVAL);
	assert_int_equal(iopt_unmap(&t, 0ull - 64 * KiB, 128 * KiB, NULL), -EINVAL);
	assert_int_equal(iopt_reserve(NULL, 0, 64 * KiB, 0), -EINVAL);
	assert_int_equal(iopt_map(NULL, 0, 64 * KiB, 0, IOPT_R), -EINVAL);
	assert_int_equal(iopt_unmap(NULL, 0, 64 * KiB, NULL), -EINVAL);
	/* Nothing got mapped by any of that. */
	iopt_get_stats(&t, &st);
	assert_int_equal(st.leaves, 0);
	expect_miss(&t, 0x100000);
	/* Unmapping nothing is fine: 0 bytes. */
	assert_int_equal(iopt_unmap(&t, 0x100000, 64 * KiB, &un), 0);
	assert_int_equal(un, 0);
	iopt_fini(&t);
}

/* ---- layout ----------------------------------------------------------- */

static void test_large_leaves_cost_one_entry(void **state)
{
	struct iopt t;
	struct iopt_stats st;
	uint64_t un;

	assert_int_equal(iopt_init(&t, 48, P4K), 0);
	/* 1 GiB aligned on both sides: one root entry, no node at all. */
	map_ok(&t, 4 * GiB, GiB, 64 * GiB, IOPT_R);
	iopt_get_stats(&t, &st);
	assert_int_equal(st.leaves, 1);
	assert_int_equal(st.nodes, 0);
	expect_hit(&t, 4 * GiB, 64 * GiB, GiB, IOPT_R);
	expect_hit(&t, 5 * GiB - 1, 65 * GiB - 1, 1, IOPT_R);
	expect_miss(&t, 5 * GiB);
	expect_miss(&t, 4 * GiB - 1);
	/* 2 MiB aligned: one L1 node, one entry. */
	map_ok(&t, 8 * GiB + 6 * MiB, P2M, 0x40000000000ull + 2 * MiB, IOPT_W);
	iopt_get_stats(&t, &st);
	assert_int_equal(st.leaves, 2);
	assert_int_equal(st.nodes, 1);
	expect_hit(&t, 8 * GiB + 7 * MiB, 0x40000000000ull + 3 * MiB, MiB, IOPT_W);
	/* 4 MiB + 8 KiB with a target only 4 KiB aligned: 1026 4 KiB leaves. */
	map_ok(&t, 12 * GiB, 4 * MiB + 8 * KiB, 0x7f0000001000ull, IOPT_R | IOPT_W);
	iopt_get_stats(&t, &st);
	assert_int_equal(st.leaves, 2 + 1026);
	assert_int_equal(st.nodes, 1 + 1 + 3);
	expect_hit(&t, 12 * GiB + 5000, 0x7f0000001000ull + 5000, 8192 - 5000, IOPT_R | IOPT_W);
	/* A mapping starting mid-block: 4 KiB leaves up to the 2 MiB boundary,
	 * then 2 MiB leaves, then 4 KiB leaves again. */
	map_ok(&t, 16 * GiB + 2 * MiB - 8 * KiB, 4 * MiB + 16 * KiB,
	       32 * GiB + 2 * MiB - 8 * KiB, IOPT_R | IOPT_NO_VA);
	expect_hit(&t, 16 * GiB + 2 * MiB - 8 * KiB, 32 * GiB + 2 * MiB - 8 * KiB,
		   4 * KiB, IOPT_R | IOPT_NO_VA);
	expect_hit(&t, 16 * GiB + 2 * MiB + 4096, 32 * GiB + 2 * MiB + 4096,
		   2 * MiB - 4096, IOPT_R | IOPT_NO_VA);
	expect_hit(&t, 16 * GiB + 6 * MiB, 32 * GiB + 6 * MiB, 4 * KiB,
		   IOPT_R | IOPT_NO_VA);
	/* Unmap counts bytes, and leaves the nodes in place. */
	assert_int_equal(iopt_unmap(&t, 4 * GiB, GiB, &un), 0);
	assert_int_equal(un, GiB);
	assert_int_equal(iopt_unmap(&t, 8 * GiB, 16 * GiB, &un), 0);
	assert_int_equal(un, 2 * MiB + 4 * MiB + 8 * KiB + 4 * MiB + 16 * KiB);
	iopt_get_stats(&t, &st);
	assert_int_equal(st.leaves, 0);
	assert_int_equal(st.nodes, 1 + 4 + 3);
	/* A 1 GiB map where a node stayed is stored in that node: 512 2 MiB
	 * leaves, no allocation (reserve armed to fail). */
	iodma_test_fail_alloc(1);
	assert_int_equal(iopt_reserve(&t, 8 * GiB, GiB, 8 * GiB), 0);
	iodma_test_fail_alloc(0);
	assert_int_equal(iopt_map(&t, 8 * GiB, GiB, 8 * GiB, IOPT_GPA | IOPT_R), 0);
	iopt_get_stats(&t, &st);
	assert_int_equal(st.leaves, 512);
	expect_hit(&t, 8 * GiB + 10 * MiB + 3, 8 * GiB + 10 * MiB + 3, 2 * MiB - 3,
		   IOPT_GPA | IOPT_R);
	iopt_fini(&t);
}

static void test_overlap_is_eexist_and_changes_nothing(void **state)
{
	struct iopt t;
	struct iopt_stats st, st2;

	assert_int_equal(iopt_init(&t, 48, P4K), 0);
	map_ok(&t, GiB, GiB, 2 * GiB, IOPT_R);                 /* 1 GiB leaf */
	map_ok(&t, 4 * GiB, P2M, 4 * GiB, IOPT_R);             /* 2 MiB leaf */
	map_ok(&t, 8 * GiB, 2 * P4K, 8 * GiB + P4K, IOPT_R);   /* 4 KiB leaves */
	iopt_get_stats(&t, &st);
	/* A 4 KiB map inside the 1 GiB and 2 MiB leaves, a 2 MiB map over
	 * 4 KiB leaves, a 1 GiB map over all of them. */
	assert_int_equal(iopt_reserve(&t, GiB + 5 * P4K, P4K, 0), -EEXIST);
	assert_int_equal(iopt_map(&t, GiB + 5 * P4K, P4K, 0, IOPT_R), -EEXIST);
	assert_int_equal(iopt_reserve(&t, 4 * GiB + P4K, P4K, 0), -EEXIST);
	assert_int_equal(iopt_map(&t, 4 * GiB + P4K, P4K, 0, IOPT_R), -EEXIST);
	assert_int_equal(iopt_reserve(&t, 8 * GiB, P2M, 0), -EEXIST);
	assert_int_equal(iopt_map(&t, 8 * GiB, P2M, 0, IOPT_R), -EEXIST);
	assert_int_equal(iopt_reserve(&t, 8 * GiB + P4K, P4K, 0), -EEXIST);
	assert_int_equal(iopt_reserve(&t, 0, 16 * GiB, 0), -EEXIST);
	assert_int_equal(iopt_map(&t, 0, 16 * GiB, 0, IOPT_R), -EEXIST);
	iopt_get_stats(&t, &st2);
	assert_memory_equal(&st, &st2, sizeof(st));
	expect_hit(&t, GiB + 5 * P4K, 2 * GiB + 5 * P4K, GiB - 5 * P4K, IOPT_R);
	expect_hit(&t, 8 * GiB + P4K, 8 * GiB + 2 * P4K, P4K, IOPT_R);
	expect_miss(&t, 8 * GiB + 2 * P4K);
	iopt_fini(&t);
}

static void test_map_without_reserve_is_enomem(void **state)
{
	struct iopt t;
	struct iopt_stats st;

	assert_int_equal(iopt_init(&t, 48, P4K), 0);
	assert_int_equal(iopt_map(&t, 8 * GiB, P4K, 0, IOPT_R), -ENOMEM);
	iopt_get_stats(&t, &st);
	assert_int_equal(st.leaves, 0);
	assert_int_equal(st.nodes, 0);
	expect_miss(&t, 8 * GiB);
	/* Reserved for another target alignment: the layout differs. */
	assert_int_equal(iopt_reserve(&t, 8 * GiB, GiB, 8 * GiB), 0);
	assert_int_equal(iopt_map(&t, 8 * GiB, GiB, 8 * GiB + P4K, IOPT_R), -ENOMEM);
	expect_miss(&t, 8 * GiB);
	/* A root-level leaf needs no node: no reserve needed. */
	assert_int_equal(iopt_map(&t, 8 * GiB, GiB, 8 * GiB, IOPT_R), 0);
	expect_hit(&t, 8 * GiB, 8 * GiB, GiB, IOPT_R);
	iopt_fini(&t);
}

static void test_unmap_refuses_to_bisect_a_leaf(void **state)
{
	struct iopt t;
	uint64_t un = 0;

	assert_int_equal(iopt_init(&t, 48, P4K), 0);
	map_ok(&t, 4 * GiB, P2M, 4 * GiB, IOPT_R);
	map_ok(&t, 5 * GiB, GiB, 6 * GiB, IOPT_W);
	map_ok(&t, 8 * GiB, 4 * P4K, 8 * GiB + P4K, IOPT_R);
	/* Inside, across the start, across the end of a 2 MiB / 1 GiB leaf;
	 * a range whose tail bisects after a whole leaf clears nothing. */
	assert_int_equal(iopt_unmap(&t, 4 * GiB + P4K, P4K, &un), -EINVAL);
	assert_int_equal(iopt_unmap(&t, 4 * GiB - P4K, 2 * P4K, &un), -EINVAL);
	assert_int_equal(iopt_unmap(&t, 4 * GiB + P2M - P4K, 2 * P4K, &un), -EINVAL);
	assert_int_equal(iopt_unmap(&t, 5 * GiB + P2M, P2M, &un), -EINVAL);
	assert_int_equal(iopt_unmap(&t, 4 * GiB, GiB + P2M, &un), -EINVAL);
	assert_int_equal(un, 0);
	expect_hit(&t, 4 * GiB, 4 * GiB, P2M, IOPT_R);
	expect_hit(&t, 5 * GiB, 6 * GiB, GiB, IOPT_W);
	/* 4 KiB leaves are whole at every page: the table cannot tell a
	 * mapping's end (that is the domain's B-tree's job). */
	assert_int_equal(iopt_unmap(&t, 8 * GiB + P4K, P4K, &un), 0);
	assert_int_equal(un, P4K);
	expect_miss(&t, 8 * GiB + P4K);
	expect_hit(&t, 8 * GiB, 8 * GiB + P4K, P4K, IOPT_R);
	iopt_fini(&t);
}

/* ---- edges of the address space --------------------------------------- */

static void test_top_of_the_address_space(void **state)
{
	const uint64_t top48 = 1ull << 48;
	struct iopt t;
	struct iopt_hit h;
	uint64_t un;

	/* W = 48: the last page below 2^48 maps; 2^48 and beyond do not. */
	assert_int_equal(iopt_init(&t, 48, P4K), 0);
	map_ok(&t, top48 - P4K, P4K, 0x1000, IOPT_R);
	expect_hit(&t, top48 - 1, 0x1fff, 1, IOPT_R);
	map_ok(&t, top48 - 2 * GiB, GiB, 0, IOPT_W);
	expect_hit(&t, top48 - GiB - 1, GiB - 1, 1, IOPT_W);
	assert_int_equal(iopt_reserve(&t, top48, P4K, 0), -ERANGE);
	assert_int_equal(iopt_map(&t, top48, P4K, 0, IOPT_R), -ERANGE);
	assert_int_equal(iopt_reserve(&t, top48 - 2 * P4K, 2 * P4K + P4K, 0), -ERANGE);
	assert_int_equal(iopt_unmap(&t, top48 - P4K, 2 * P4K, NULL), -ERANGE);
	assert_false(iopt_lookup(&t, top48, &h));
	assert_int_equal(h.len, 0ull - top48);
	assert_false(iopt_lookup(&t, ~0ull, &h));
	assert_int_equal(h.len, 1);
	assert_int_equal(iopt_hole(&t, top48 - 3 * P4K, 2 * P4K), 2 * P4K);
	assert_int_equal(iopt_hole(&t, top48 - GiB, 16 * P4K), 16 * P4K);
	assert_int_equal(iopt_hole(&t, top48 - 3 * GiB, 2 * GiB), GiB);
	assert_int_equal(iopt_unmap(&t, 0, top48, &un), 0);
	assert_int_equal(un, GiB + P4K);
	iopt_fini(&t);

	/* W = 64: the last page and the last GiB of the 64-bit space; a range
	 * that would wrap is refused. */
	assert_int_equal(iopt_init(&t, 64, P4K), 0);
	map_ok(&t, 0ull - P4K, P4K, 0x5000, IOPT_R);
	expect_hit(&t, ~0ull, 0x5fff, 1, IOPT_R);
	map_ok(&t, 0ull - 2 * GiB, GiB, 3 * GiB, IOPT_R | IOPT_W);
	expect_hit(&t, 0ull - 2 * GiB + 5, 3 * GiB + 5, GiB - 5, IOPT_R | IOPT_W);
	assert_int_equal(iopt_reserve(&t, 0ull - P4K, 2 * P4K, 0), -EINVAL);
	assert_int_equal(iopt_map(&t, 0ull - P4K, 2 * P4K, 0, IOPT_R), -EINVAL);
	assert_int_equal(iopt_unmap(&t, 0ull - P4K, 2 * P4K, NULL), -EINVAL);
	/* Across the low/high window boundary at 2^48, with 1 GiB leaves on
	 * both sides and 4 KiB ones at the seam. */
	map_ok(&t, top48 - GiB, 2 * GiB, 7 * GiB, IOPT_R);
	expect_hit(&t, top48 - 1, 8 * GiB - 1, 1, IOPT_R);
	expect_hit(&t, top48, 8 * GiB, GiB, IOPT_R);
	map_ok(&t, top48 + 4 * GiB - P4K, 2 * P4K, 5 * P4K, IOPT_W);
	expect_hit(&t, top48 + 4 * GiB - P4K, 5 * P4K, P4K, IOPT_W);
	expect_hit(&t, top48 + 4 * GiB, 6 * P4K, P4K, IOPT_W);
	assert_int_equal(iopt_hole(&t, top48 + GiB, 8 * GiB), 3 * GiB - P4K);
	assert_int_equal(iopt_unmap(&t, top48 - GiB, 2 * GiB, &un), 0);
	assert_int_equal(un, 2 * GiB);
	assert_int_equal(iopt_unmap(&t, 0, 0ull - P4K, &un), 0); /* all but the last page */
	assert_int_equal(un, 2 * P4K + GiB);
	expect_hit(&t, ~0ull, 0x5fff, 1, IOPT_R);
	assert_int_equal(iopt_unmap(&t, 0ull - P4K, P4K, &un), 0);
	assert_int_equal(un, P4K);
	expect_miss(&t, ~0ull);
	iopt_fini(&t);

	/* W = 57: above 2^57 nothing; just below works. */
	assert_int_equal(iopt_init(&t, 57, P4K), 0);
	map_ok(&t, (1ull << 57) - P2M, P2M, P2M, IOPT_R);
	expect_hit(&t, (1ull << 57) - 1, 2 * P2M - 1, 1, IOPT_R);
	assert_int_equal(iopt_reserve(&t, 1ull << 57, P4K, 0), -ERANGE);
	assert_false(iopt_lookup(&t, 1ull << 57, &h));
	iopt_fini(&t);
}

/* ---- allocation failure ------------------------------------------------- */

/* Every allocation of a reserve fails in turn: -ENOMEM, and the table is as
 * before (same nodes, same lookups); then it succeeds and the map cannot
 * fail.  Covers a reserve needing nodes at every level of the high window. */
static void test_reserve_fail_nth_leaves_table_unchanged(void **state)
{
	static const struct { unsigned int w; uint64_t iova, len, target; } c[] = {
		{ 48, 3 * GiB - P4K, P2M + 3 * P4K, 0x10000 },   /* L1 + 3 L0 */
		{ 48, 0x7f00000000ull + P4K, 64 * MiB, P4K },   /* 33 nodes */
		{ 64, (1ull << 63) + GiB - P4K, 2 * P4K, 0 },   /* L4, L3, L2, L1, L0 */
		{ 57, (1ull << 56) + 5 * GiB, P2M, 0 },         /* L3, L2, L1 */
	};

	for (size_t k = 0; k < sizeof(c) / sizeof(c[0]); k++) {
		struct iopt t;
		struct iopt_stats before, after;
		unsigned int n;
		int err;

		assert_int_equal(iopt_init(&t, c[k].w, P4K), 0);
		/* Something already there. */
		map_ok(&t, 0x10000, P4K, 0, IOPT_R);
		iopt_get_stats(&t, &before);
		for (n = 1;; n++) {
			iodma_test_fail_alloc(n);
			err = iopt_reserve(&t, c[k].iova, c[k].len, c[k].target);
			iodma_test_fail_alloc(0);
			if (err == 0)
				break;
			assert_int_equal(err, -ENOMEM);
			iopt_get_stats(&t, &after);
			assert_memory_equal(&before, &after, sizeof(before));
			/* Nothing installed: a map still finds nodes missing. */
			assert_int_equal(iopt_map(&t, c[k].iova, c[k].len, c[k].target,
						  IOPT_R), -ENOMEM);
		}
		assert_true(n > 2);
		iopt_get_stats(&t, &after);
		assert_int_equal(after.nodes, before.nodes + n - 1);
		iodma_test_fail_alloc(1);
		assert_int_equal(iopt_map(&t, c[k].iova, c[k].len, c[k].target, IOPT_R), 0);
		iodma_test_fail_alloc(0);
		expect_hit(&t, c[k].iova + c[k].len - 1, c[k].target + c[k].len - 1, 1, IOPT_R);
		expect_hit(&t, 0x10000, 0, P4K, IOPT_R);
		iopt_fini(&t);
	}
}

/* ---- pruning: empty nodes leave, and come back only through reserve ------ */

static void test_prune_unhooks_empty_nodes(void **state)
{
	struct iopt t;
	struct iopt_stats st;
	uint64_t un;
	void *list;

	assert_int_equal(iopt_init(&t, 48, P4K), 0);
	map_ok(&t, 8 * GiB, P4K, 0x1000, IOPT_R);
	map_ok(&t, 8 * GiB + 2 * P4K, P4K, 0x3000, IOPT_R);
	iopt_get_stats(&t, &st);
	assert_int_equal(st.nodes, 2);
	/* An unmap only clears: undoing it (a backend that failed to unmap)
	 * is a map that needs no allocation. */
	assert_int_equal(iopt_unmap(&t, 8 * GiB, P4K, &un), 0);
	iodma_test_fail_alloc(1);
	assert_int_equal(iopt_map(&t, 8 * GiB, P4K, 0x1000, IOPT_R), 0);
	iodma_test_fail_alloc(0);
	expect_hit(&t, 8 * GiB, 0x1000, P4K, IOPT_R);
	/* A node that still holds a leaf stays. */
	assert_int_equal(iopt_unmap(&t, 8 * GiB, P4K, &un), 0);
	assert_int_equal(iopt_prune(&t, 8 * GiB, GiB), 0);
	iopt_get_stats(&t, &st);
	assert_int_equal(st.nodes, 2);
	assert_int_equal(st.retired, 0);
	assert_null(iopt_retired_take(&t));
	expect_hit(&t, 8 * GiB + 2 * P4K, 0x3000, P4K, IOPT_R);
	/* Emptied: both nodes go, the L0 one and the L1 one above it. */
	assert_int_equal(iopt_unmap(&t, 8 * GiB + 2 * P4K, P4K, &un), 0);
	assert_int_equal(iopt_prune(&t, 8 * GiB + 2 * P4K, P4K), 0);
	iopt_get_stats(&t, &st);
	assert_int_equal(st.nodes, 0);
	assert_int_equal(st.retired, 2);
	expect_miss(&t, 8 * GiB + 2 * P4K);
	list = iopt_retired_take(&t);
	assert_non_null(list);
	iopt_get_stats(&t, &st);
	assert_int_equal(st.retired, 0);
	assert_int_equal(iopt_retired_free(list), 2);
	assert_int_equal(iopt_retired_free(NULL), 0);
	/* Where the 4 KiB leaves were, a 1 GiB map is one entry again. */
	map_ok(&t, 8 * GiB, GiB, 16 * GiB, IOPT_W);
	iopt_get_stats(&t, &st);
	assert_int_equal(st.leaves, 1);
	assert_int_equal(st.nodes, 0);
	expect_hit(&t, 8 * GiB + P4K, 16 * GiB + P4K, GiB - P4K, IOPT_W);
	/* Pruning around a large leaf, or nothing, changes nothing. */
	assert_int_equal(iopt_prune(&t, 0, 1ull << 48), 0);
	expect_hit(&t, 8 * GiB, 16 * GiB, GiB, IOPT_W);
	/* Errors. */
	assert_int_equal(iopt_prune(&t, 8 * GiB + 1, P4K), -EINVAL);
	assert_int_equal(iopt_prune(&t, 8 * GiB, 0), -EINVAL);
	assert_int_equal(iopt_prune(&t, (1ull << 48) - P4K, 2 * P4K), -ERANGE);
	assert_int_equal(iopt_prune(NULL, 0, P4K), -EINVAL);
	/* Pruned nodes left for fini are freed by it (valgrind checks). */
	map_ok(&t, 4 * GiB, P4K, 0, IOPT_R);
	assert_int_equal(iopt_unmap(&t, 4 * GiB, P4K, &un), 0);
	assert_int_equal(iopt_prune(&t, 4 * GiB, P4K), 0);
	iopt_fini(&t);
}

/* iopt_prune_empty(): only nodes an unmap (or iopt_mark_empty) left empty
 * are looked at; one filled again meanwhile stays; an emptied parent goes
 * with its child. */
static void test_prune_empty_takes_only_empty_nodes(void **state)
{
	struct iopt t;
	struct iopt_stats st;
	uint64_t un;

	(void)state;
	assert_int_equal(iopt_init(&t, 48, P4K), 0);
	map_ok(&t, 8 * GiB, P4K, 0x1000, IOPT_R);
	map_ok(&t, 8 * GiB + P4K, P4K, 0x2000, IOPT_R);
	map_ok(&t, 9 * GiB, P4K, 0x9000, IOPT_R);
	/* Half emptied: no candidate. */
	assert_int_equal(iopt_unmap(&t, 8 * GiB, P4K, &un), 0);
	iopt_get_stats(&t, &st);
	assert_int_equal(st.candidates, 0);
	assert_int_equal(iopt_prune_empty(&t), 0);
	/* Emptied, then filled again before the prune: stays. */
	assert_int_equal(iopt_unmap(&t, 8 * GiB + P4K, P4K, &un), 0);
	iopt_get_stats(&t, &st);
	assert_int_equal(st.candidates, 1);
	map_ok(&t, 8 * GiB + 5 * P4K, P4K, 0x5000, IOPT_W);
	assert_int_equal(iopt_prune_empty(&t), 0);
	iopt_get_stats(&t, &st);
	assert_int_equal(st.candidates, 0);
	assert_int_equal(st.nodes, 4);
	expect_hit(&t, 8 * GiB + 5 * P4K, 0x5000, P4K, IOPT_W);
	/* Emptied for good: its L0 node and the L1 node above it go; the
	 * other GiB's nodes stay. */
	assert_int_equal(iopt_unmap(&t, 8 * GiB + 5 * P4K, P4K, &un), 0);
	assert_int_equal(iopt_unmap(&t, 8 * GiB + 5 * P4K, P4K, &un), 0); /* again: no double entry */
	iopt_get_stats(&t, &st);
	assert_int_equal(st.candidates, 1);
	assert_int_equal(iopt_prune_empty(&t), 2);
	iopt_get_stats(&t, &st);
	assert_int_equal(st.nodes, 2);
	assert_int_equal(st.retired, 2);
	expect_miss(&t, 8 * GiB + 5 * P4K);
	expect_hit(&t, 9 * GiB, 0x9000, P4K, IOPT_R);
	assert_int_equal(iopt_retired_free(iopt_retired_take(&t)), 2);
	/* A reserve whose map never came: marked, then taken. */
	assert_int_equal(iopt_reserve(&t, 12 * GiB, P4K, 0), 0);
	iopt_get_stats(&t, &st);
	assert_int_equal(st.nodes, 4);
	assert_int_equal(st.candidates, 0);
	assert_int_equal(iopt_mark_empty(&t, 12 * GiB, P4K), 0);
	assert_int_equal(iopt_mark_empty(&t, 12 * GiB, 0), -EINVAL);
	assert_int_equal(iopt_prune_empty(&t), 2);
	iopt_get_stats(&t, &st);
	assert_int_equal(st.nodes, 2);
	iopt_retired_free(iopt_retired_take(&t));
	/* A range prune empties the candidate list first (no dangling entry). */
	assert_int_equal(iopt_unmap(&t, 9 * GiB, P4K, &un), 0);
	assert_int_equal(iopt_prune(&t, 9 * GiB, P4K), 0);
	iopt_get_stats(&t, &st);
	assert_int_equal(st.candidates, 0);
	assert_int_equal(st.nodes, 0);
	iopt_retired_free(iopt_retired_take(&t));
	iopt_fini(&t);
}

/* ---- differential test against a sorted model ----------------------------- */

struct mmap_ {
	uint64_t iova, len, target, flags;
};

#define MAXM 256

struct model {
	struct mmap_ v[MAXM]; /* sorted by iova, non-overlapping */
	size_t n;
};

static long model_find(const struct model *m, uint64_t iova)
{
	for (size_t i = 0; i < m->n; i++)
		if (iova >= m->v[i].iova && iova - m->v[i].iova < m->v[i].len)
			return (long)i;
	return -1;
}

static bool model_overlaps(const struct model *m, uint64_t iova, uint64_t len)
{
	uint64_t last = iova + (len - 1);

	for (size_t i = 0; i < m->n; i++)
		if (iova <= m->v[i].iova + (m->v[i].len - 1) && m->v[i].iova <= last)
			return true;
	return false;
}

static void model_add(struct model *m, struct mmap_ x)
{
	size_t i = m->n;

	while (i > 0 && m->v[i - 1].iova > x.iova) {
		m->v[i] = m->v[i - 1];
		i--;
	}
	m->v[i] = x;
	m->n++;
}

static void model_del(struct model *m, size_t i, size_t cnt)
{
	memmove(&m->v[i], &m->v[i + cnt], (m->n - i - cnt) * sizeof(m->v[0]));
	m->n -= cnt;
}

/* The hit must be the model's mapping, and the leaf it reports a real
 * block: 4 KiB, 2 MiB or 1 GiB, naturally aligned in IOVA and target, whole
 * inside the mapping. */
static void check_lookup(const struct iopt *t, const struct model *m,
			 uint64_t iova)
{
	long i = model_find(m, iova);
	struct iopt_hit h;
	bool hit = iopt_lookup(t, iova, &h);

	if (i < 0) {
		assert_false(hit);
		assert_int_equal(h.entry, 0);
		assert_true(h.len > 0);
		/* The empty block reported holds no mapping. */
		uint64_t l = h.len;

		if (iova + (l - 1) < iova)
			l = 0ull - iova;
		assert_false(model_overlaps(m, iova, l));
		return;
	}
	const struct mmap_ *x = &m->v[i];
	uint64_t end = iova + h.len; /* first byte after the leaf */
	bool ok = false;

	assert_true(hit);
	assert_int_equal(h.target, x->target + (iova - x->iova));
	assert_int_equal(h.entry & ~IOPT_ADDR, x->flags | IOPT_PRESENT);
	assert_true(h.len > 0 && h.len <= x->len - (iova - x->iova));
	for (unsigned int s = 12; s <= 30; s += 9) {
		uint64_t b = 1ull << s, start = end - b;

		if ((end & (b - 1)) == 0 && start <= iova && start >= x->iova &&
		    ((x->target + (start - x->iova)) & (b - 1)) == 0)
			ok = true;
	}
	assert_true(ok);
}

static void check_hole(const struct iopt *t, const struct model *m,
		       uint64_t iova, uint64_t max)
{
	uint64_t expect = max;

	if (iova + (max - 1) < iova)
		max = expect = 0ull - iova;
	if (model_find(m, iova) >= 0) {
		expect = 0;
	} else {
		for (size_t i = 0; i < m->n; i++)
			if (m->v[i].iova > iova && m->v[i].iova - iova < expect)
				expect = m->v[i].iova - iova;
	}
	assert_int_equal(iopt_hole(t, iova, max), expect);
}

struct cfg {
	unsigned int w;
	uint64_t g;
	unsigned long ops;
};

static uint64_t pick_zone(const struct cfg *c)
{
	uint64_t z[4];
	unsigned int n = 0;

	z[n++] = 0;
	if (c->w > 34)
		z[n++] = (1ull << 32) - 4 * GiB;
	if (c->w >= 48)
		z[n++] = (1ull << 48) - 4 * GiB; /* the low/high window seam */
	z[n++] = (c->w == 64 ? 0 : 1ull << c->w) - 4 * GiB; /* the top */
	return z[rnd() % n];
}

static void gen_map(const struct cfg *c, struct mmap_ *x)
{
	uint64_t z = pick_zone(c), delta, g = c->g;
	unsigned int r = rnd() % 25;

	/* Mostly small mappings; large ones are rare because over time the
	 * zones fill with nodes that stay, and a large map over them is
	 * stored as many small leaves (see iopt.h). */
	if (r < 17) {
		x->len = g * (1 + rnd() % 8);
		x->iova = z + g * (rnd() % (8 * GiB / g));
	} else if (r < 23) {
		x->len = P2M * (1 + rnd() % 3) + (rnd() % 2 ? 0 : g * (rnd() % 4));
		x->iova = z + P2M * (rnd() % (8 * GiB / P2M)) + (rnd() % 4 ? 0 : g);
	} else {
		x->len = GiB * (1 + rnd() % 2) + (rnd() % 3 ? 0 : P2M);
		x->iova = z + GiB * (rnd() % 8);
	}
	switch (rnd() % 4) {
	case 0:
	case 3:
		delta = GiB * (rnd() % 64);
		break;
	case 1:
		delta = P2M * (1 + rnd() % 511);
		break;
	default:
		/* Only 4 KiB/granule aligned: small leaves; keep it short. */
		delta = g * (1 + rnd() % 1000);
		if (x->len > 16 * MiB)
			delta = GiB;
		break;
	}
	/* Sometimes a target at the top of the 64-bit space (some wrap). */
	x->target = rnd() % 8 ? x->iova + delta :
		    0ull - delta - x->len + (x->len <= 16 * MiB ? (rnd() % 2) * g : 0);
	x->flags = (rnd() % 3 + 1) | (rnd() % 5 == 0 ? IOPT_NO_VA : 0) |
		   (rnd() % 5 == 1 ? IOPT_GPA : 0);
}

static uint64_t pick_iova(const struct cfg *c, const struct model *m)
{
	unsigned int r = rnd() % 8;

	if (m->n && r < 4) {
		const struct mmap_ *x = &m->v[rnd() % m->n];

		return x->iova + rnd() % x->len;
	}
	if (m->n && r < 6) {
		const struct mmap_ *x = &m->v[rnd() % m->n];

		switch (rnd() % 4) {
		case 0: return x->iova - 1;
		case 1: return x->iova;
		case 2: return x->iova + x->len - 1;
		default: return x->iova + x->len;
		}
	}
	if (r == 6)
		return rnd(); /* anywhere, mostly above 2^W */
	return pick_zone(c) + rnd() % (8 * GiB);
}

static void run_random(const struct cfg *c)
{
	struct model *m = calloc(1, sizeof(*m));
	struct iopt t;
	struct iopt_stats st;
	unsigned long maps = 0, unmaps = 0, lookups = 0, refused = 0;
	uint64_t last = c->w == 64 ? ~0ull : (1ull << c->w) - 1, un;

	assert_non_null(m);
	assert_int_equal(iopt_init(&t, c->w, c->g), 0);
	for (unsigned long op = 0; op < c->ops; op++) {
		unsigned int r = rnd() % 100;

		if (r < 40 && m->n < MAXM) {
			struct mmap_ x;
			int expect, err;

			gen_map(c, &x);
			if (x.iova + (x.len - 1) < x.iova)
				expect = -EINVAL;
			else if (x.iova + (x.len - 1) > last)
				expect = -ERANGE;
			else if (x.target + (x.len - 1) < x.target)
				expect = -EINVAL;
			else if (model_overlaps(m, x.iova, x.len))
				expect = -EEXIST;
			else
				expect = 0;
			if (expect) {
				iopt_get_stats(&t, &st);
				assert_int_equal(iopt_reserve(&t, x.iova, x.len, x.target), expect);
				assert_int_equal(iopt_map(&t, x.iova, x.len, x.target, x.flags), expect);
				struct iopt_stats st2;

				iopt_get_stats(&t, &st2);
				assert_memory_equal(&st, &st2, sizeof(st));
				refused++;
				continue;
			}
			if (rnd() % 8 == 0) {
				/* Map first: fine if no node is missing. */
				err = iopt_map(&t, x.iova, x.len, x.target, x.flags);
				if (err == 0)
					goto mapped;
				assert_int_equal(err, -ENOMEM);
				check_lookup(&t, m, x.iova);
			}
			map_ok(&t, x.iova, x.len, x.target, x.flags);
mapped:
			model_add(m, x);
			maps++;
		} else if (r < 60 && m->n) {
			size_t i = rnd() % m->n, j = i;
			uint64_t lo, hi, bytes = 0;

			if (rnd() % 2)
				j = i + rnd() % MIN(4, m->n - i);
			lo = m->v[i].iova;
			hi = m->v[j].iova + (m->v[j].len - 1);
			if (hi - lo > 256 * MiB && rnd() % 16) {
				/* Mostly nearby mappings: a span across zones
				 * scans most of the root. */
				j = i;
				hi = m->v[j].iova + (m->v[j].len - 1);
			}
			for (size_t k = i; k <= j; k++)
				bytes += m->v[k].len;
			assert_int_equal(iopt_unmap(&t, lo, hi - lo + 1, &un), 0);
			assert_int_equal(un, bytes);
			if (rnd() % 2) {
				/* Alone: no reader to wait for. */
				assert_int_equal(iopt_prune(&t, lo, hi - lo + 1), 0);
				iopt_retired_free(iopt_retired_take(&t));
			} else if (rnd() % 3 == 0) {
				/* The domain's way: the nodes unmaps emptied. */
				iopt_prune_empty(&t);
				iopt_retired_free(iopt_retired_take(&t));
			}
			model_del(m, i, j - i + 1);
			unmaps++;
		} else if (r < 62) {
			/* An unmap over a gap: nothing, 0 bytes. */
			uint64_t iova = pick_zone(c) + c->g * (rnd() % (8 * GiB / c->g));

			if (iova + (c->g - 1) >= iova && iova + (c->g - 1) <= last &&
			    !model_overlaps(m, iova, c->g)) {
				assert_int_equal(iopt_unmap(&t, iova, c->g, &un), 0);
				assert_int_equal(un, 0);
			}
		} else {
			uint64_t iova = pick_iova(c, m);

			check_lookup(&t, m, iova);
			if (r < 70)
				check_hole(&t, m, iova, 1 + rnd() % (2 * GiB));
			lookups++;
		}
	}
	/* Everything the model has, the table has, and nothing else. */
	iopt_get_stats(&t, &st);
	assert_true(st.leaves >= m->n);
	for (size_t i = 0; i < m->n; i++) {
		check_lookup(&t, m, m->v[i].iova);
		check_lookup(&t, m, m->v[i].iova + m->v[i].len - 1);
	}
	{
		uint64_t total = 0;

		for (size_t i = 0; i < m->n; i++)
			total += m->v[i].len;
		if (c->w < 64) {
			assert_int_equal(iopt_unmap(&t, 0, last + 1, &un), 0);
		} else {
			/* 2^64 bytes is no range: two halves (no leaf
			 * straddles 2^63). */
			uint64_t un2;

			assert_int_equal(iopt_unmap(&t, 0, 1ull << 63, &un), 0);
			assert_int_equal(iopt_unmap(&t, 1ull << 63, 1ull << 63, &un2), 0);
			un += un2;
		}
		assert_int_equal(un, total);
	}
	iopt_get_stats(&t, &st);
	assert_int_equal(st.leaves, 0);
	printf("  W=%u granule=%lluK: %lu maps, %lu unmaps, %lu lookups, %lu refused, %zu nodes\n",
	       c->w, (unsigned long long)(c->g >> 10), maps, unmaps, lookups, refused,
	       st.nodes);
	iopt_fini(&t);
	free(m);
}

static void test_random_ops_match_model(void **state)
{
	static const struct cfg cfgs[] = {
		{ 48, 4 * KiB, 200000 },
		{ 64, 4 * KiB, 200000 },
		{ 57, 4 * KiB, 50000 },
		{ 39, 64 * KiB, 50000 },
	};

	for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++) {
		struct cfg c = cfgs[i];

		c.ops /= OPS_DIV;
		run_random(&c);
	}
}

/* ---- lookups racing a writer ----------------------------------------------- */

/*
 * Eight 1 GiB regions straddling 2^48 (four in the low window, four in the
 * high one, W = 64).  The writer moves each region between kinds, each with
 * its own permissions and target offset, so a present entry says which
 * kind it belongs to:
 *   0 empty;
 *   1 the whole GiB, target = iova + K1, IOPT_R;
 *   2 one 2 MiB block at 2 MiB * k, target = iova + K2, IOPT_W;
 *   3 four 4 KiB pages at 4 KiB * k, target = iova + K3, IOPT_R | IOPT_W.
 * A region's state is a seqlock (odd while the writer changes it).  A
 * reader that saw the same even sequence before and after its lookup knows
 * the exact answer; any other present entry must still be one whole word
 * of some kind: target - iova and permissions of the same kind.  The
 * writer prunes emptied nodes and frees them after os_synchronize_rcu();
 * the readers look up inside RCU read-side sections (ASan / valgrind catch
 * a node freed under a reader).
 */
#define NR_REG 8
#define K1 (64 * GiB)
#define K2 (2 * GiB + 6 * MiB)
#define K3 (5 * GiB + 3 * P4K)

struct region {
	_Atomic uint64_t seq;
	_Atomic unsigned int kind, k;
};

struct race {
	struct iopt t;
	uint64_t base;
	struct region reg[NR_REG];
	atomic_bool stop;
	_Atomic unsigned int cur;       /* the region the writer is changing */
	atomic_ulong stable_checks, racy_checks, errors;
	_Atomic uint64_t bad_iova, bad_entry;
};

static uint64_t kind_delta(unsigned int kind)
{
	return kind == 1 ? K1 : kind == 2 ? K2 : K3;
}

static uint64_t kind_perm(unsigned int kind)
{
	return kind == 1 ? IOPT_R : kind == 2 ? IOPT_W : IOPT_R | IOPT_W;
}

static void kind_range(unsigned int kind, unsigned int k, uint64_t *off, uint64_t *len)
{
	switch (kind) {
	case 1: *off = 0; *len = GiB; break;
	case 2: *off = P2M * k; *len = P2M; break;
	default: *off = P4K * k; *len = 4 * P4K; break;
	}
}

static void race_fail(struct race *r, uint64_t iova, uint64_t entry)
{
	if (atomic_fetch_add(&r->errors, 1) == 0) {
		atomic_store(&r->bad_iova, iova);
		atomic_store(&r->bad_entry, entry);
	}
}

static void *race_reader(void *arg)
{
	struct race *r = arg;
	uint64_t x = (uint64_t)(uintptr_t)&x | 1;

	while (!atomic_load_explicit(&r->stop, memory_order_relaxed)) {
		unsigned int ri;
		uint64_t s1, s2, off, iova, koff, klen;
		unsigned int kind, k;
		struct iopt_hit h;
		bool hit;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		ri = x % NR_REG;
		if (x & (1ull << 61))   /* half of the probes where the writer is */
			ri = atomic_load_explicit(&r->cur, memory_order_relaxed);
		off = (x >> 8) % GiB;
		if (x & (1ull << 60))   /* half of them where kinds 2 and 3 live */
			off %= 16 * MiB + 64 * KiB;
		iova = r->base + ri * GiB + off;
		s1 = atomic_load_explicit(&r->reg[ri].seq, memory_order_acquire);
		kind = atomic_load_explicit(&r->reg[ri].kind, memory_order_relaxed);
		k = atomic_load_explicit(&r->reg[ri].k, memory_order_relaxed);
		os_rcu_read_lock(); /* the access section: nodes stay */
		hit = iopt_lookup(&r->t, iova, &h);
		RCU_HB_RELEASE();
		os_rcu_read_unlock();
		atomic_thread_fence(memory_order_acquire);
		s2 = atomic_load_explicit(&r->reg[ri].seq, memory_order_relaxed);
		if (hit) {
			/* Whatever the timing: one whole word of one kind. */
			uint64_t perm = h.entry & (IOPT_R | IOPT_W);
			unsigned int hk = perm == IOPT_R ? 1 : perm == IOPT_W ? 2 : 3;

			if (h.target != iova + kind_delta(hk) ||
			    (h.entry & ~IOPT_ADDR) != (perm | IOPT_PRESENT))
				race_fail(r, iova, h.entry);
		}
		if (s1 == s2 && !(s1 & 1)) {
			bool inside = false;

			if (kind) {
				kind_range(kind, k, &koff, &klen);
				inside = off >= koff && off - koff < klen;
			}
			if (hit != inside || (hit && (h.entry & (IOPT_R | IOPT_W)) !=
					      kind_perm(kind)))
				race_fail(r, iova, h.entry);
			atomic_fetch_add_explicit(&r->stable_checks, 1, memory_order_relaxed);
		} else {
			atomic_fetch_add_explicit(&r->racy_checks, 1, memory_order_relaxed);
		}
	}
	return NULL;
}

static void test_lookups_race_one_writer(void **state)
{
	struct race *r = calloc(1, sizeof(*r));
	pthread_t th[2];
	unsigned long iters = 40000;

	assert_non_null(r);
	r->base = (1ull << 48) - 4 * GiB;
	assert_int_equal(iopt_init(&r->t, 64, P4K), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, race_reader, r), 0);
	for (unsigned long it = 0; it < iters; it++) {
		unsigned int ri = rnd() % NR_REG, kind = rnd() % 4, k = rnd() % 8;
		struct region *g = &r->reg[ri];
		uint64_t s = atomic_load_explicit(&g->seq, memory_order_relaxed);
		uint64_t reg = r->base + ri * GiB, off, len, un;

		atomic_store_explicit(&r->cur, ri, memory_order_relaxed);
		atomic_store_explicit(&g->seq, s + 1, memory_order_relaxed);
		atomic_thread_fence(memory_order_release);
		assert_int_equal(iopt_unmap(&r->t, reg, GiB, &un), 0);
		atomic_store_explicit(&g->kind, kind, memory_order_relaxed);
		atomic_store_explicit(&g->k, k, memory_order_relaxed);
		if (kind) {
			kind_range(kind, k, &off, &len);
			assert_int_equal(iopt_reserve(&r->t, reg + off, len,
						      reg + off + kind_delta(kind)), 0);
			assert_int_equal(iopt_map(&r->t, reg + off, len,
						  reg + off + kind_delta(kind),
						  kind_perm(kind)), 0);
		}
		atomic_store_explicit(&g->seq, s + 2, memory_order_release);
		if (it % 16 == 15) {
			/* The owner's protocol: prune, take, wait, free. */
			void *list;

			assert_int_equal(iopt_prune(&r->t, r->base, NR_REG * GiB), 0);
			list = iopt_retired_take(&r->t);
			os_synchronize_rcu();
			RCU_HB_ACQUIRE();
			iopt_retired_free(list);
		}
	}
	atomic_store(&r->stop, true);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	printf("  %lu stable checks, %lu racing checks, %lu errors (first: iova %#llx entry %#llx)\n",
	       atomic_load(&r->stable_checks), atomic_load(&r->racy_checks),
	       atomic_load(&r->errors), (unsigned long long)atomic_load(&r->bad_iova),
	       (unsigned long long)atomic_load(&r->bad_entry));
	assert_int_equal(atomic_load(&r->errors), 0);
	assert_true(atomic_load(&r->stable_checks) > 0);
	iopt_fini(&r->t);
	free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init_rejects_bad_width_and_granule),
		cmocka_unit_test(test_bad_ranges_and_flags_change_nothing),
		cmocka_unit_test(test_large_leaves_cost_one_entry),
		cmocka_unit_test(test_overlap_is_eexist_and_changes_nothing),
		cmocka_unit_test(test_map_without_reserve_is_enomem),
		cmocka_unit_test(test_unmap_refuses_to_bisect_a_leaf),
		cmocka_unit_test(test_top_of_the_address_space),
		cmocka_unit_test(test_reserve_fail_nth_leaves_table_unchanged),
		cmocka_unit_test(test_prune_unhooks_empty_nodes),
		cmocka_unit_test(test_prune_empty_takes_only_empty_nodes),
		cmocka_unit_test(test_random_ops_match_model),
		cmocka_unit_test(test_lookups_race_one_writer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
