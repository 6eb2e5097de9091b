/* SPDX-License-Identifier: MIT */
/*
 * test_soft.c - the soft IOMMU backend's book of mappings against a model.
 *
 * The soft backend plays the "hardware" whose disagreement with the
 * domain's table exposes bookkeeping bugs (VFIO type1v2 semantics: -EEXIST
 * on overlap, -ENOSPC at the mapping limit, unmap removing only mappings
 * wholly inside the range and -EINVAL, nothing removed, for one crossing
 * either end).  These tests drive its ops directly, with no domain above to
 * filter the requests, over enough mappings that its book spans many
 * B-tree leaves and levels, and compare every answer with a plain sorted
 * array of intervals.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <iodma/backend.h>

#define PG 4096ull

struct ival {
	uint64_t iova, len;
};

/* The model: disjoint intervals sorted by start. */
struct book {
	struct ival *v;
	size_t n, cap;
};

static uint64_t last_of(uint64_t iova, uint64_t len)
{
	return iova + (len - 1);
}

static bool range_ok(uint64_t iova, uint64_t len)
{
	return len != 0 && iova + (len - 1) >= iova;
}

static int model_map(struct book *b, uint64_t iova, uint64_t len, size_t max)
{
	size_t i = 0;

	if (!range_ok(iova, len))
		return -EINVAL;
	for (size_t k = 0; k < b->n; k++) {
		if (b->v[k].iova <= last_of(iova, len) &&
		    iova <= last_of(b->v[k].iova, b->v[k].len))
			return -EEXIST;
		if (b->v[k].iova < iova)
			i = k + 1;
	}
	if (b->n >= max)
		return -ENOSPC;
	if (b->n == b->cap) {
		b->cap = b->cap ? 2 * b->cap : 256;
		b->v = realloc(b->v, b->cap * sizeof(*b->v));
		assert_non_null(b->v);
	}
	memmove(&b->v[i + 1], &b->v[i], (b->n - i) * sizeof(*b->v));
	b->v[i].iova = iova;
	b->v[i].len = len;
	b->n++;
	return 0;
}

static int model_unmap(struct book *b, uint64_t iova, uint64_t last,
		       uint64_t *bytes)
{
	size_t w = 0;

	for (size_t k = 0; k < b->n; k++) {
		uint64_t s = b->v[k].iova, e = last_of(s, b->v[k].len);

		if (s <= last && iova <= e && (s < iova || e > last))
			return -EINVAL;
	}
	*bytes = 0;
	for (size_t k = 0; k < b->n; k++) {
		if (b->v[k].iova >= iova && b->v[k].iova <= last)
			*bytes += b->v[k].len;
		else
			b->v[w++] = b->v[k];
	}
	b->n = w;
	return 0;
}

static uint64_t rng = 0x2545f4914f6cdd1dull;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* A start: mostly page-aligned in a space dense enough for overlaps, some
 * at odd bytes (the backend does not require alignment), a few at the ends
 * of the 64-bit space. */
static uint64_t pick_iova(uint64_t space)
{
	switch (rnd() % 16) {
	case 0:
		return UINT64_MAX - rnd() % (4 * PG);
	case 1:
		return rnd() % (4 * PG);
	case 2:
		return (rnd() % space) * PG + rnd() % PG;
	default:
		return (rnd() % space) * PG;
	}
}

static uint64_t pick_len(unsigned int max_pages)
{
	switch (rnd() % 16) {
	case 0:
		return 0;			/* -EINVAL */
	case 1:
		return UINT64_MAX;		/* wraps unless at 0 */
	case 2:
		return 1 + rnd() % PG;
	default:
		return (1 + rnd() % max_pages) * PG;
	}
}

/* 100k random map / unmap / unmap_all / avail_mappings calls straight into
 * the backend, every return, reported byte count and live count checked
 * against the model; the limit is reached and left again many times. */
static void test_soft_book_matches_interval_model(void **state)
{
	const struct iodma_backend_ops *ops = iodma_backend_soft();
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_map_event ev = { .fd = -1, .perm = IODMA_PERM_RW };
	const uint64_t space = 12000;
	const size_t max = 1000;
	struct book b = { 0 };
	uint64_t u, mu;
	uint32_t avail;
	size_t peak = 0;
	int ops_seen[5] = { 0 };
	void *p;

	so.max_mappings = max;
	assert_int_equal(ops->open(&so, &p), 0);
	for (int i = 0; i < 100000; i++) {
		unsigned int op = rnd() % 1000;
		int want, got;

		if (op < 700) {		/* map, small */
			ev.iova = pick_iova(space);
			ev.len = pick_len(4);
			ev.va = (void *)(uintptr_t)(0x7f0000000000ull + ev.iova % (1ull << 40));
			want = model_map(&b, ev.iova, ev.len, max);
			got = ops->map(p, &ev);
			assert_int_equal(got, want);
			ops_seen[0] += got == 0;
			ops_seen[4] += got == -ENOSPC;
		} else if (op < 995) {	/* unmap, from one page to thousands */
			uint64_t iova = pick_iova(space);
			uint64_t len = pick_len(op < 990 ? 8 : 4096);

			if (!range_ok(iova, len)) {
				assert_int_equal(ops->unmap(p, iova, len, &u), -EINVAL);
			} else {
				want = model_unmap(&b, iova, last_of(iova, len), &mu);
				u = 0xdead;
				got = ops->unmap(p, iova, len, &u);
				assert_int_equal(got, want);
				if (got == 0)
					assert_int_equal(u, mu);
				ops_seen[got == 0 ? (mu ? 1 : 2) : 3]++;
			}
		} else if (op == 999 && rnd() % 4 == 0) {
			want = model_unmap(&b, 0, UINT64_MAX, &mu);
			assert_int_equal(ops->unmap_all(p, &u), want);
			assert_int_equal(u, mu);
		}
		assert_int_equal(ops->avail_mappings(p, &avail), 0);
		assert_int_equal(avail, max - b.n);
		peak = b.n > peak ? b.n : peak;
	}
	assert_int_equal(peak, max);
	/* Every kind of outcome happened, many times. */
	assert_true(ops_seen[0] > 1000);	/* maps */
	assert_true(ops_seen[1] > 1000);	/* unmaps removing something */
	assert_true(ops_seen[2] > 1000);	/* unmaps over a gap */
	assert_true(ops_seen[3] > 1000);	/* unmaps refused: a crossing */
	assert_true(ops_seen[4] > 1000);	/* maps refused: the limit */
	{
		int want = model_unmap(&b, 0, UINT64_MAX, &mu);

		assert_int_equal(ops->unmap_all(p, &u), want);
		assert_int_equal(u, mu);
		assert_int_equal(ops->avail_mappings(p, &avail), 0);
		assert_int_equal(avail, max);
	}
	ops->close(p);
	free(b.v);
}

/* The crossing checks at either end, with the crossing mapping in another
 * B-tree leaf than the mappings inside (hundreds of neighbours), and
 * nothing removed when one is refused. */
static void test_soft_unmap_crossing_far_from_inside(void **state)
{
	const struct iodma_backend_ops *ops = iodma_backend_soft();
	struct iodma_map_event ev = { .fd = -1, .perm = IODMA_PERM_RW,
				      .va = (void *)(uintptr_t)0x7f0000000000ull };
	const uint64_t base = 0x100000000ull;
	uint64_t u;
	uint32_t avail, before;
	void *p;

	assert_int_equal(ops->open(NULL, &p), 0);
	/* 600 mappings of 2 pages at base + 4k pages. */
	for (uint64_t k = 0; k < 600; k++) {
		ev.iova = base + 4 * k * PG;
		ev.len = 2 * PG;
		assert_int_equal(ops->map(p, &ev), 0);
	}
	assert_int_equal(ops->avail_mappings(p, &before), 0);
	/* Starts inside mapping 0: crosses the start, 599 wholly inside. */
	assert_int_equal(ops->unmap(p, base + PG, 4 * 600 * PG, &u), -EINVAL);
	/* Ends inside mapping 599: crosses the end. */
	assert_int_equal(ops->unmap(p, base, 4 * 599 * PG + PG, &u), -EINVAL);
	/* Both. */
	assert_int_equal(ops->unmap(p, base + PG, 4 * 599 * PG, &u), -EINVAL);
	assert_int_equal(ops->avail_mappings(p, &avail), 0);
	assert_int_equal(avail, before);
	/* Inside one mapping only. */
	assert_int_equal(ops->unmap(p, base + 4 * 300 * PG + 1, 8, &u), -EINVAL);
	/* Exactly one mapping. */
	assert_int_equal(ops->unmap(p, base + 4 * 300 * PG, 2 * PG, &u), 0);
	assert_int_equal(u, 2 * PG);
	/* Gap-to-gap over 100 mappings, starting and ending in gaps. */
	assert_int_equal(ops->unmap(p, base + 4 * 100 * PG - PG, 4 * 100 * PG, &u), 0);
	assert_int_equal(u, 100 * 2 * PG);
	assert_int_equal(ops->avail_mappings(p, &avail), 0);
	assert_int_equal(avail, before + 101);
	/* Nothing there. */
	assert_int_equal(ops->unmap(p, base + 4 * 150 * PG, 2 * PG, &u), 0);
	assert_int_equal(u, 0);
	assert_int_equal(ops->unmap_all(p, &u), 0);
	assert_int_equal(u, (600 - 101) * 2 * PG);
	ops->close(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_soft_book_matches_interval_model),
		cmocka_unit_test(test_soft_unmap_crossing_far_from_inside),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
