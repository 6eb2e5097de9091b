/* SPDX-License-Identifier: MIT */
/*
 * test_soft.c - the soft IOMMU backend's book of mappings against a model.
 *
 * The soft backend plays the "hardware" whose disagreement with the
 * domain's table exposes bookkeeping bugs (VFIO type1v2 semantics: -EEXIST
 * on overlap, -ENOSPC at the mapping limit, unmap removing only mappings
 * wholly inside the range and -EINVAL, nothing removed, for one crossing
 * either end, -EINVAL for a misaligned map or unmap or a map outside the
 * valid ranges).  These tests drive its ops directly, with no domain above
 * to filter the requests, over enough mappings that its IO page table
 * spans many table pages and all its levels, and compare every answer with
 * a plain sorted array of intervals.
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
#include <iodma/test-hooks.h>

uint64_t soft_table_pages(const void *priv); /* soft.c, for tests */
void soft_spares_drop(void *priv);             /* soft.c, for tests */

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

/* The valid range the model tests open the backend with: everything but
 * page 0, up to the last byte of the 64-bit space. */
#define LO PG

static int model_map(struct book *b, uint64_t iova, uint64_t len, size_t max)
{
	size_t i = 0;

	if (!range_ok(iova, len) || (iova | len) % PG != 0 || iova < LO)
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
 * at odd bytes (-EINVAL: type1 requires alignment), a few at the ends of
 * the 64-bit space (page 0 is outside the valid range: -EINVAL). */
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
	struct iodma_iova_range all = { .iova = LO, .len = 0 - LO };
	struct iodma_map_event ev = { .fd = -1, .perm = IODMA_PERM_RW };
	const uint64_t space = 12000;
	const size_t max = 1000;
	struct book b = { 0 };
	uint64_t u, mu;
	uint32_t avail;
	size_t peak = 0;
	int ops_seen[6] = { 0 };
	void *p;

	so.max_mappings = max;
	so.nr_ranges = 1;
	so.ranges = &all;
	assert_int_equal(ops->open(&so, &p), 0);
	for (int i = 0; i < 100000; i++) {
		unsigned int op = rnd() % 1000;
		int want, got;

		if (op < 740) {		/* map, small */
			ev.iova = pick_iova(space);
			ev.len = pick_len(4);
			ev.va = (void *)(uintptr_t)(0x7f0000000000ull + ev.iova % (1ull << 40));
			want = model_map(&b, ev.iova, ev.len, max);
			got = ops->map(p, &ev);
			assert_int_equal(got, want);
			ops_seen[0] += got == 0;
			ops_seen[4] += got == -ENOSPC;
			ops_seen[5] += got == -EINVAL;
		} else if (op < 995) {	/* unmap, from one page to thousands */
			uint64_t iova = pick_iova(space);
			uint64_t len = pick_len(op < 990 ? 8 : 4096);

			if (!range_ok(iova, len) || (iova | len) % PG != 0) {
				assert_int_equal(ops->unmap(p, iova, len, &u), -EINVAL);
				ops_seen[5]++;
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
	assert_true(ops_seen[5] > 1000);	/* refused: misaligned, page 0 */
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


#define MIB (1ull << 20)
#define GIB (1ull << 30)

static void map_ok(const struct iodma_backend_ops *ops, void *p,
		   uint64_t iova, uint64_t len)
{
	struct iodma_map_event ev = { .iova = iova, .len = len, .fd = -1,
				      .perm = IODMA_PERM_RW,
				      .va = (void *)(uintptr_t)0x7f0000000000ull };

	assert_int_equal(ops->map(p, &ev), 0);
}

static int map_at(const struct iodma_backend_ops *ops, void *p,
		  uint64_t iova, uint64_t len)
{
	struct iodma_map_event ev = { .iova = iova, .len = len, .fd = -1,
				      .perm = IODMA_PERM_READ };

	return ops->map(p, &ev);
}

/* A 1 GiB and a 2 MiB mapping take one block entry each (no last-level
 * table); an unmap that would split a block, at either end or inside, is
 * refused and changes nothing; a mapping made of pages, 2 MiB blocks and
 * a 1 GiB block (misaligned start and end) is refused at each piece's
 * border and removed whole. */
static void test_soft_blocks_are_never_split(void **state)
{
	const struct iodma_backend_ops *ops = iodma_backend_soft();
	uint64_t u = 0xdead;
	uint32_t avail, before;
	void *p;

	assert_int_equal(ops->open(NULL, &p), 0);
	assert_int_equal(soft_table_pages(p), 1);	/* the root */
	map_ok(ops, p, 4 * GIB, GIB);			/* one 1 GiB block */
	assert_int_equal(soft_table_pages(p), 1);
	map_ok(ops, p, 6 * GIB, 2 * MIB);		/* one 2 MiB block */
	assert_int_equal(soft_table_pages(p), 2);
	assert_int_equal(ops->avail_mappings(p, &before), 0);
	/* Inside, at the start, at the end, across either end. */
	assert_int_equal(ops->unmap(p, 4 * GIB + PG, PG, &u), -EINVAL);
	assert_int_equal(ops->unmap(p, 4 * GIB, 2 * MIB, &u), -EINVAL);
	assert_int_equal(ops->unmap(p, 5 * GIB - 2 * MIB, 2 * MIB, &u), -EINVAL);
	assert_int_equal(ops->unmap(p, 4 * GIB - PG, 2 * PG, &u), -EINVAL);
	assert_int_equal(ops->unmap(p, 5 * GIB - PG, 2 * PG, &u), -EINVAL);
	assert_int_equal(ops->unmap(p, 4 * GIB + 2 * MIB, 4 * GIB, &u), -EINVAL);
	assert_int_equal(ops->unmap(p, 6 * GIB + MIB, MIB, &u), -EINVAL);
	assert_int_equal(ops->unmap(p, 6 * GIB, MIB, &u), -EINVAL);
	/* Overlapping maps: into a block, over a block's first page. */
	assert_int_equal(map_at(ops, p, 4 * GIB + 7 * MIB, PG), -EEXIST);
	assert_int_equal(map_at(ops, p, 4 * GIB - PG, 2 * PG), -EEXIST);
	assert_int_equal(map_at(ops, p, 4 * GIB, 4 * GIB), -EEXIST);
	assert_int_equal(ops->avail_mappings(p, &avail), 0);
	assert_int_equal(avail, before);
	assert_int_equal(u, 0xdead);
	assert_int_equal(soft_table_pages(p), 2);
	/* Whole: the 2 MiB block's table goes with it. */
	assert_int_equal(ops->unmap(p, 6 * GIB, 2 * MIB, &u), 0);
	assert_int_equal(u, 2 * MIB);
	assert_int_equal(soft_table_pages(p), 1);
	assert_int_equal(ops->unmap(p, 4 * GIB, GIB, &u), 0);
	assert_int_equal(u, GIB);

	/* [1 GiB - 2 MiB - 4 KiB, 2 GiB + 2 MiB + 4 KiB): a page, a 2 MiB
	 * block, a 1 GiB block, a 2 MiB block, a page. */
	map_ok(ops, p, GIB - 2 * MIB - PG, GIB + 4 * MIB + 2 * PG);
	assert_int_equal(soft_table_pages(p), 5);	/* root, 2 x (2M, 4K) */
	assert_int_equal(ops->unmap(p, GIB - 2 * MIB, 2 * MIB, &u), -EINVAL);
	assert_int_equal(ops->unmap(p, GIB, GIB, &u), -EINVAL);
	assert_int_equal(ops->unmap(p, 2 * GIB, 2 * MIB + PG, &u), -EINVAL);
	assert_int_equal(ops->unmap(p, GIB - 2 * MIB - PG, GIB + 4 * MIB + PG, &u),
			 -EINVAL);
	assert_int_equal(ops->unmap(p, GIB - 2 * MIB, GIB + 4 * MIB + 2 * PG, &u),
			 -EINVAL);
	assert_int_equal(soft_table_pages(p), 5);
	assert_int_equal(ops->unmap(p, 0x1000, 3 * GIB, &u), 0);
	assert_int_equal(u, GIB + 4 * MIB + 2 * PG);
	assert_int_equal(soft_table_pages(p), 1);
	assert_int_equal(ops->avail_mappings(p, &avail), 0);
	assert_int_equal(avail, 65535);
	ops->close(p);
}

/* Mappings at the top of the table's space: the default 39-bit space ends
 * at 2^39 - 1, a map past it is outside the valid ranges and an unmap past
 * it finds nothing; with a valid range up to 2^64 - 1 (6 levels) the last
 * page and a last 2 MiB block map, and unmaps ending at 2^64 - 1 (no page
 * after them to check) work and refuse a split. */
static void test_soft_top_of_space(void **state)
{
	const struct iodma_backend_ops *ops = iodma_backend_soft();
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_iova_range all = { .iova = PG, .len = 0 - PG };
	const uint64_t top39 = 1ull << 39;
	uint64_t u;
	void *p;

	assert_int_equal(ops->open(NULL, &p), 0);
	map_ok(ops, p, top39 - PG, PG);
	assert_int_equal(map_at(ops, p, top39, PG), -EINVAL);
	assert_int_equal(map_at(ops, p, top39 - 2 * MIB, 2 * MIB), -EEXIST);
	map_ok(ops, p, top39 - GIB, GIB - PG);
	assert_int_equal(ops->unmap(p, top39 - 2 * PG, 2 * PG, &u), -EINVAL);
	assert_int_equal(ops->unmap(p, top39, PG, &u), 0);
	assert_int_equal(u, 0);
	assert_int_equal(ops->unmap(p, top39 - PG, PG, &u), 0);
	assert_int_equal(u, PG);
	assert_int_equal(ops->unmap(p, top39 - GIB, 0 - (top39 - GIB), &u), 0);
	assert_int_equal(u, GIB - PG);
	assert_int_equal(soft_table_pages(p), 1);
	ops->close(p);

	so.nr_ranges = 1;
	so.ranges = &all;
	assert_int_equal(ops->open(&so, &p), 0);
	map_ok(ops, p, 0 - PG, PG);
	assert_int_equal(soft_table_pages(p), 6);	/* one per level */
	map_ok(ops, p, 0 - 4 * MIB, 2 * MIB);
	map_ok(ops, p, 0 - 2 * MIB, 2 * MIB - PG);
	assert_int_equal(map_at(ops, p, 0 - 2 * PG, 2 * PG), -EEXIST);
	assert_int_equal(ops->unmap(p, 0 - 4 * MIB + PG, 4 * MIB - PG, &u),
			 -EINVAL);
	assert_int_equal(ops->unmap(p, 0 - 2 * PG, 2 * PG, &u), -EINVAL);
	assert_int_equal(ops->unmap(p, 0 - PG, PG, &u), 0);
	assert_int_equal(u, PG);
	assert_int_equal(ops->unmap(p, 0 - 2 * MIB, 2 * MIB, &u), 0);
	assert_int_equal(u, 2 * MIB - PG);
	assert_int_equal(ops->unmap_all(p, &u), 0);
	assert_int_equal(u, 2 * MIB);
	assert_int_equal(soft_table_pages(p), 1);
	ops->close(p);
}

/* A wide unmap over mappings scattered across the whole space removes
 * them all, reports their bytes and frees every table page but the root;
 * one ending inside a far mapping is refused with nothing removed. */
static void test_soft_wide_unmap_sparse(void **state)
{
	const struct iodma_backend_ops *ops = iodma_backend_soft();
	const uint64_t top39 = 1ull << 39;
	uint64_t u, bytes = 0, far = 0;
	uint64_t pages;
	uint32_t avail;
	void *p;

	assert_int_equal(ops->open(NULL, &p), 0);
	/* One mapping per 1 GiB slot (none below 4 GiB: the MSI window):
	 * 1-3 pages at a page offset that varies, or a 2 MiB block. */
	for (uint64_t k = 4; k < 512; k += 3) {
		uint64_t iova = k * GIB + ((k * 7919) % 4096) * PG * 127 % (GIB - 4 * MIB);
		uint64_t len = k % 5 == 0 ? 2 * MIB : (1 + k % 3) * PG;

		if (len == 2 * MIB)
			iova = iova / (2 * MIB) * (2 * MIB);
		map_ok(ops, p, iova, len);
		bytes += len;
		far = iova;
	}
	pages = soft_table_pages(p);
	assert_true(pages > 170);
	assert_int_equal(ops->avail_mappings(p, &avail), 0);
	assert_int_equal(avail, 65535 - 170);
	/* Ends inside the last mapping (the 2 MiB block or pages at far). */
	assert_int_equal(ops->unmap(p, PG, far, &u), -EINVAL);
	assert_int_equal(ops->avail_mappings(p, &avail), 0);
	assert_int_equal(avail, 65535 - 170);
	assert_int_equal(soft_table_pages(p), pages);
	assert_int_equal(ops->unmap(p, PG, top39 - PG, &u), 0);
	assert_int_equal(u, bytes);
	assert_int_equal(soft_table_pages(p), 1);
	assert_int_equal(ops->avail_mappings(p, &avail), 0);
	assert_int_equal(avail, 65535);
	ops->close(p);
}

/* Huge mappings take block entries: 1 TiB at an aligned start is 2
 * entries of 512 GiB, and 1 TiB minus two pages from the second page
 * takes 7 table pages (a leaf, a 2 MiB and a 1 GiB table at each end).
 * A table page that cannot be allocated fails the map with -ENOMEM,
 * leaving nothing mapped and no table page behind. */
static void test_soft_huge_maps_and_enomem(void **state)
{
	const struct iodma_backend_ops *ops = iodma_backend_soft();
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_iova_range r = { .iova = PG, .len = (1ull << 48) - PG };
	const uint64_t tib = 1ull << 40;
	uint64_t u;
	uint32_t avail;
	void *p;

	so.nr_ranges = 1;
	so.ranges = &r;
	assert_int_equal(ops->open(&so, &p), 0);
	map_ok(ops, p, tib, tib);
	assert_int_equal(soft_table_pages(p), 1);
	map_ok(ops, p, PG, tib - 2 * PG);
	assert_int_equal(soft_table_pages(p), 7);
	assert_int_equal(ops->unmap(p, 512 * GIB, tib, &u), -EINVAL);
	assert_int_equal(ops->unmap(p, 0, 2 * tib, &u), 0);
	assert_int_equal(u, 2 * tib - 2 * PG);
	assert_int_equal(soft_table_pages(p), 1);
	for (unsigned long nth = 1; nth <= 6; nth++) {
		soft_spares_drop(p);
		iodma_test_fail_alloc(nth);
		assert_int_equal(map_at(ops, p, PG, tib - 2 * PG), -ENOMEM);
		iodma_test_fail_alloc(0);
		assert_int_equal(soft_table_pages(p), 1);
		assert_int_equal(ops->avail_mappings(p, &avail), 0);
		assert_int_equal(avail, 65535);
		assert_int_equal(ops->unmap_all(p, &u), 0);
		assert_int_equal(u, 0);
	}
	map_ok(ops, p, PG, tib - 2 * PG);
	assert_int_equal(soft_table_pages(p), 7);
	ops->close(p);
}

/* A map + unmap at a fresh IOVA each time (a streaming map of unregistered
 * memory) reuses the tables the last unmap emptied: after the first pair no
 * pair allocates (fault injection armed for the next allocation sees none),
 * and the tables are counted live only while mapped.  Dropping the spares
 * makes the next pair allocate again. */
static void test_soft_tables_reused(void **state)
{
	const struct iodma_backend_ops *ops = iodma_backend_soft();
	void *p;
	uint64_t u;

	(void)state;
	assert_int_equal(ops->open(NULL, &p), 0);
	map_ok(ops, p, 4 * GIB, PG);
	assert_int_equal(soft_table_pages(p), 3);
	assert_int_equal(ops->unmap(p, 4 * GIB, PG, &u), 0);
	assert_int_equal(soft_table_pages(p), 1);
	iodma_test_fail_alloc(1);
	for (uint64_t k = 1; k <= 64; k++) {
		uint64_t iova = 4 * GIB + k * 2 * MIB;	/* a new leaf each */

		assert_int_equal(map_at(ops, p, iova, PG), 0);
		assert_int_equal(soft_table_pages(p), 3);
		assert_int_equal(ops->unmap(p, iova, PG, &u), 0);
		assert_int_equal(u, PG);
	}
	soft_spares_drop(p);
	assert_int_equal(map_at(ops, p, 4 * GIB, PG), -ENOMEM);
	iodma_test_fail_alloc(0);
	assert_int_equal(soft_table_pages(p), 1);
	ops->close(p);
}

/* Misaligned to a caps.alignment above the page size, or outside the valid
 * ranges: -EINVAL (VFIO type1), nothing mapped. */
static void test_soft_einval(void **state)
{
	const struct iodma_backend_ops *ops = iodma_backend_soft();
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	uint64_t u;
	uint32_t avail;
	void *p;

	so.alignment = 16 * PG;
	assert_int_equal(ops->open(&so, &p), 0);
	assert_int_equal(map_at(ops, p, 4 * GIB + PG, 16 * PG), -EINVAL);
	assert_int_equal(map_at(ops, p, 4 * GIB, 8 * PG), -EINVAL);
	assert_int_equal(map_at(ops, p, 0, 16 * PG), -EINVAL);	/* page 0 */
	assert_int_equal(map_at(ops, p, 0xfee00000ull, 16 * PG), -EINVAL); /* MSI */
	assert_int_equal(map_at(ops, p, 0xfed00000ull, 2 * MIB), -EINVAL);
	map_ok(ops, p, 4 * GIB, 16 * PG);
	assert_int_equal(ops->unmap(p, 4 * GIB, PG, &u), -EINVAL);
	assert_int_equal(ops->unmap(p, 4 * GIB + PG, 16 * PG, &u), -EINVAL);
	assert_int_equal(ops->avail_mappings(p, &avail), 0);
	assert_int_equal(avail, 65534);
	assert_int_equal(ops->unmap(p, 4 * GIB, 16 * PG, &u), 0);
	assert_int_equal(u, 16 * PG);
	ops->close(p);
}

/* A mapping across a 2 MiB boundary lies in two last-level tables: an
 * unmap of either half (inside one table: the one-descent path) sees the
 * other table's page and is refused; the whole one goes. */
static void test_soft_mapping_across_leaves(void **state)
{
	const struct iodma_backend_ops *ops = iodma_backend_soft();
	const uint64_t b = 4 * GIB + 2 * MIB;
	uint64_t u;
	void *p;

	assert_int_equal(ops->open(NULL, &p), 0);
	map_ok(ops, p, b - 2 * PG, 4 * PG);
	map_ok(ops, p, b - 4 * PG, 2 * PG);
	map_ok(ops, p, b + 2 * PG, PG);
	assert_int_equal(soft_table_pages(p), 4);	/* root, 2M, 2 leaves */
	assert_int_equal(ops->unmap(p, b - 4 * PG, 4 * PG, &u), -EINVAL);
	assert_int_equal(ops->unmap(p, b - 2 * PG, 2 * PG, &u), -EINVAL);
	assert_int_equal(ops->unmap(p, b, 2 * PG, &u), -EINVAL);
	assert_int_equal(ops->unmap(p, b, 3 * PG, &u), -EINVAL);
	assert_int_equal(map_at(ops, p, b + PG, PG), -EEXIST);
	assert_int_equal(ops->unmap(p, b - 2 * PG, 4 * PG, &u), 0);
	assert_int_equal(u, 4 * PG);
	assert_int_equal(ops->unmap(p, b - 4 * PG, 2 * PG, &u), 0);
	assert_int_equal(u, 2 * PG);
	assert_int_equal(soft_table_pages(p), 3);	/* the lower leaf went */
	assert_int_equal(ops->unmap(p, b + 2 * PG, PG, &u), 0);
	assert_int_equal(u, PG);
	assert_int_equal(soft_table_pages(p), 1);
	ops->close(p);
}

/* Valid ranges below 2 MiB need one level (the root is a last-level
 * table), below 1 GiB two: the same rules there, the root never freed. */
static void test_soft_small_spaces(void **state)
{
	const struct iodma_backend_ops *ops = iodma_backend_soft();
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_iova_range r1 = { .iova = PG, .len = 2 * MIB - PG };
	struct iodma_iova_range r2 = { .iova = PG, .len = 64 * MIB - PG };
	uint64_t u;
	void *p;

	so.nr_ranges = 1;
	so.ranges = &r1;
	assert_int_equal(ops->open(&so, &p), 0);
	map_ok(ops, p, PG, PG);
	map_ok(ops, p, 2 * MIB - 2 * PG, 2 * PG);
	assert_int_equal(map_at(ops, p, 2 * MIB, PG), -EINVAL);
	assert_int_equal(map_at(ops, p, 2 * MIB - PG, PG), -EEXIST);
	assert_int_equal(ops->unmap(p, 2 * MIB - PG, PG, &u), -EINVAL);
	assert_int_equal(ops->unmap(p, 2 * MIB - 2 * PG, PG, &u), -EINVAL);
	assert_int_equal(ops->unmap(p, PG, PG, &u), 0);		/* fast path */
	assert_int_equal(u, PG);
	assert_int_equal(ops->unmap(p, 2 * MIB - 2 * PG, 2 * PG, &u), 0);
	assert_int_equal(u, 2 * PG);
	assert_int_equal(soft_table_pages(p), 1);
	map_ok(ops, p, 8 * PG, 8 * PG);
	assert_int_equal(ops->unmap_all(p, &u), 0);
	assert_int_equal(u, 8 * PG);
	ops->close(p);

	so.ranges = &r2;
	assert_int_equal(ops->open(&so, &p), 0);
	map_ok(ops, p, 2 * MIB, 2 * MIB);			/* a block */
	map_ok(ops, p, 64 * MIB - PG, PG);
	assert_int_equal(soft_table_pages(p), 2);
	assert_int_equal(ops->unmap(p, 2 * MIB, MIB, &u), -EINVAL);
	assert_int_equal(ops->unmap(p, PG, 64 * MIB - PG, &u), 0);
	assert_int_equal(u, 2 * MIB + PG);
	assert_int_equal(soft_table_pages(p), 1);
	ops->close(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_soft_book_matches_interval_model),
		cmocka_unit_test(test_soft_unmap_crossing_far_from_inside),
		cmocka_unit_test(test_soft_blocks_are_never_split),
		cmocka_unit_test(test_soft_top_of_space),
		cmocka_unit_test(test_soft_wide_unmap_sparse),
		cmocka_unit_test(test_soft_huge_maps_and_enomem),
		cmocka_unit_test(test_soft_tables_reused),
		cmocka_unit_test(test_soft_einval),
		cmocka_unit_test(test_soft_mapping_across_leaves),
		cmocka_unit_test(test_soft_small_spaces),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
