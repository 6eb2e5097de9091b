/* SPDX-License-Identifier: MIT */
/*
 * test_btree.c - the mapping table's B+tree against a sorted-array model.
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
#include <iodma/test-hooks.h> /* fault injection: tests only */

#include "btree.h"

struct val {
	uint64_t a, b, c, d; /* 32 bytes, like struct map_rec */
};

static struct val mkval(uint64_t k)
{
	struct val v = { k, ~k, k * 3, k ^ 0x5555 };

	return v;
}

/* ---- the reference model: a sorted array of keys ---------------------- */

struct model {
	uint64_t *k;
	size_t n, cap;
};

static size_t model_lb(const struct model *m, uint64_t key) /* first >= key */
{
	size_t lo = 0, hi = m->n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (m->k[mid] < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool model_insert(struct model *m, uint64_t key)
{
	size_t i = model_lb(m, key);

	if (i < m->n && m->k[i] == key)
		return false;
	if (m->n == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 1024;
		m->k = realloc(m->k, m->cap * sizeof(*m->k));
		assert_non_null(m->k);
	}
	memmove(&m->k[i + 1], &m->k[i], (m->n - i) * sizeof(*m->k));
	m->k[i] = key;
	m->n++;
	return true;
}

static bool model_remove(struct model *m, uint64_t key)
{
	size_t i = model_lb(m, key);

	if (i == m->n || m->k[i] != key)
		return false;
	memmove(&m->k[i], &m->k[i + 1], (m->n - i - 1) * sizeof(*m->k));
	m->n--;
	return true;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	uint64_t x = rng_state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	rng_state = x;
	return x;
}

/* Remove a random key of @m from both @m and @t (some removals among the
 * inserts, so that merges free nodes). */
static void remove_random(struct model *m, struct btree *t)
{
	uint64_t k = m->k[rnd() % m->n];

	assert_true(model_remove(m, k));
	assert_int_equal(btree_remove(t, k, NULL), 0);
}

static void check_val(const void *p, uint64_t key)
{
	struct val v = mkval(key);

	assert_non_null(p);
	assert_memory_equal(p, &v, sizeof(v));
}

/* Every query kind agrees with the model for @key. */
static void check_queries(const struct btree *t, const struct model *m,
			  uint64_t key)
{
	size_t i = model_lb(m, key);
	uint64_t k = 0;
	void *p;

	/* exact */
	p = btree_lookup(t, key);
	if (i < m->n && m->k[i] == key)
		check_val(p, key);
	else
		assert_null(p);
	/* ge */
	p = btree_lookup_ge(t, key, &k);
	if (i < m->n) {
		assert_int_equal(k, m->k[i]);
		check_val(p, k);
	} else {
		assert_null(p);
	}
	/* le */
	p = btree_lookup_le(t, key, &k);
	{
		size_t j = (i < m->n && m->k[i] == key) ? i + 1 : i;

		if (j > 0) {
			assert_int_equal(k, m->k[j - 1]);
			check_val(p, k);
		} else {
			assert_null(p);
		}
	}
	/* next: first > key */
	p = btree_next(t, key, &k);
	{
		size_t j = (i < m->n && m->k[i] == key) ? i + 1 : i;

		if (j < m->n) {
			assert_int_equal(k, m->k[j]);
			check_val(p, k);
		} else {
			assert_null(p);
		}
	}
	/* prev: last < key */
	p = btree_prev(t, key, &k);
	if (i > 0) {
		assert_int_equal(k, m->k[i - 1]);
		check_val(p, k);
	} else {
		assert_null(p);
	}
}

static void test_init_rejects_bad_value_size(void **state)
{
	struct btree t;

	assert_int_equal(btree_init(&t, 0), -EINVAL);
	assert_int_equal(btree_init(&t, BTREE_MAX_VALUE + 1), -EINVAL);
	assert_int_equal(btree_init(&t, BTREE_MAX_VALUE), 0);
	assert_int_equal(btree_check(&t), 0);
	btree_fini(&t);
}

static void test_empty_tree_queries_return_null(void **state)
{
	struct btree t;
	uint64_t k;

	assert_int_equal(btree_init(&t, sizeof(struct val)), 0);
	assert_null(btree_lookup(&t, 5));
	assert_null(btree_lookup_le(&t, UINT64_MAX, &k));
	assert_null(btree_lookup_ge(&t, 0, &k));
	assert_null(btree_next(&t, 0, &k));
	assert_null(btree_prev(&t, UINT64_MAX, &k));
	assert_int_equal(btree_remove(&t, 5, NULL), -ENOENT);
	assert_int_equal(btree_count(&t), 0);
	btree_fini(&t);
}

static void test_extreme_keys_and_duplicates(void **state)
{
	struct btree t;
	struct val v0 = mkval(0), vmax = mkval(UINT64_MAX), out;
	uint64_t k;

	assert_int_equal(btree_init(&t, sizeof(struct val)), 0);
	assert_int_equal(btree_insert(&t, 0, &v0), 0);
	assert_int_equal(btree_insert(&t, UINT64_MAX, &vmax), 0);
	assert_int_equal(btree_insert(&t, 0, &vmax), -EEXIST);
	check_val(btree_lookup(&t, 0), 0); /* unchanged by the refused insert */
	assert_int_equal(btree_count(&t), 2);
	assert_null(btree_next(&t, UINT64_MAX, &k));
	assert_null(btree_prev(&t, 0, &k));
	check_val(btree_lookup_le(&t, UINT64_MAX - 1, &k), 0);
	check_val(btree_lookup_ge(&t, 1, &k), UINT64_MAX);
	assert_int_equal(btree_remove(&t, UINT64_MAX, &out), 0);
	assert_memory_equal(&out, &vmax, sizeof(out));
	assert_int_equal(btree_remove(&t, UINT64_MAX, NULL), -ENOENT);
	assert_int_equal(btree_check(&t), 0);
	btree_fini(&t);
}

/* 200k random operations, each checked against the model, with the tree's
 * invariants verified after every one. */
static void test_random_ops_match_sorted_model(void **state)
{
	struct btree t;
	struct model m = { 0 };
	const int ops = 200000;
	const uint64_t space = 20000; /* dense enough for many hits */

	assert_int_equal(btree_init(&t, sizeof(struct val)), 0);
	for (int i = 0; i < ops; i++) {
		uint64_t key = (rnd() % space) * 4096;
		unsigned int op = rnd() % 10;
		struct val v = mkval(key), out;

		/* Grow early, then churn, then shrink. */
		if (i > ops * 3 / 4)
			op = op < 7 ? 1 : op;
		else if (i < ops / 4)
			op = op < 6 ? 0 : op;
		if (op == 0 || op >= 8) {
			bool fresh = model_insert(&m, key);

			assert_int_equal(btree_insert(&t, key, &v),
					 fresh ? 0 : -EEXIST);
		} else if (op == 1) {
			bool had = model_remove(&m, key);

			assert_int_equal(btree_remove(&t, key, &out),
					 had ? 0 : -ENOENT);
			if (had)
				assert_memory_equal(&out, &v, sizeof(v));
		} else {
			check_queries(&t, &m, key + (rnd() % 3) - 1);
		}
		assert_int_equal(btree_count(&t), m.n);
		assert_int_equal(btree_check(&t), 0);
	}
	/* Full ordered walk. */
	{
		uint64_t k = 0;
		size_t n = 0;
		void *p = btree_lookup_ge(&t, 0, &k);

		for (; p; p = btree_next(&t, k, &k)) {
			assert_int_equal(k, m.k[n]);
			n++;
		}
		assert_int_equal(n, m.n);
	}
	btree_fini(&t);
	assert_int_equal(btree_count(&t), 0);
	free(m.k);
}

/* A million sequential inserts, walk both ways, then remove in an order
 * that exercises borrow and merge on both sides. */
static void test_million_sequential_inserts_and_removals(void **state)
{
	struct btree t;
	const uint64_t n = 1000000;
	uint64_t k, i;
	void *p;

	assert_int_equal(btree_init(&t, sizeof(struct val)), 0);
	for (i = 0; i < n; i++) {
		struct val v = mkval(i * 8192);

		assert_int_equal(btree_insert(&t, i * 8192, &v), 0);
	}
	assert_int_equal(btree_count(&t), n);
	assert_int_equal(btree_check(&t), 0);
	assert_true(t.height <= 6);
	i = 0;
	for (p = btree_lookup_ge(&t, 0, &k); p; p = btree_next(&t, k, &k))
		assert_int_equal(k, 8192 * i++);
	assert_int_equal(i, n);
	for (p = btree_lookup_le(&t, UINT64_MAX, &k); p; p = btree_prev(&t, k, &k))
		assert_int_equal(k, 8192 * --i);
	assert_int_equal(i, 0);
	check_val(btree_lookup_le(&t, 8192 * 777 + 5, &k), 8192 * 777);
	check_val(btree_lookup_ge(&t, 8192 * 777 + 5, &k), 8192 * 778);
	/* Odd keys first (holes everywhere), then the rest backwards. */
	for (i = 1; i < n; i += 2)
		assert_int_equal(btree_remove(&t, i * 8192, NULL), 0);
	assert_int_equal(btree_check(&t), 0);
	for (i = n; i-- > 0;) {
		if (i % 2 == 0)
			assert_int_equal(btree_remove(&t, i * 8192, NULL), 0);
	}
	assert_int_equal(btree_count(&t), 0);
	assert_int_equal(btree_check(&t), 0);
	assert_null(t.root);
	btree_fini(&t);
}

/* Fail-nth: a failing insert returns -ENOMEM and leaves the tree as it
 * was; the sweep runs over inserts that split several levels. */
static void test_insert_fail_nth_leaves_tree_unchanged(void **state)
{
	struct btree t;
	uint64_t key;
	struct val v;
	int err;

	assert_int_equal(btree_init(&t, sizeof(struct val)), 0);
	/* Sweep the empty-tree insert. */
	iodma_test_fail_alloc(1);
	v = mkval(1);
	assert_int_equal(btree_insert(&t, 1, &v), -ENOMEM);
	assert_int_equal(btree_count(&t), 0);
	assert_null(btree_lookup(&t, 1));
	iodma_test_fail_alloc(0);
	/* Grow until the next in-order insert needs more than one node. */
	for (key = 1; key <= 16 * 16 * 16; key++) {
		size_t before = btree_count(&t);
		unsigned int n;

		v = mkval(key);
		for (n = 1;; n++) {
			iodma_test_fail_alloc(n);
			err = btree_insert(&t, key, &v);
			if (err == 0)
				break;
			assert_int_equal(err, -ENOMEM);
			assert_int_equal(btree_count(&t), before);
			assert_null(btree_lookup(&t, key));
			assert_int_equal(btree_check(&t), 0);
		}
		iodma_test_fail_alloc(0);
	}
	assert_int_equal(btree_count(&t), 16 * 16 * 16);
	assert_int_equal(btree_check(&t), 0);
	btree_fini(&t);
}

/* After btree_preload() an insert succeeds even when the next allocation
 * is armed to fail, whatever the shape of the tree. */
static void test_preload_guarantees_insert(void **state)
{
	struct btree t;
	struct model m = { 0 };

	assert_int_equal(btree_init(&t, sizeof(struct val)), 0);
	for (int i = 0; i < 30000; i++) {
		uint64_t key = rnd() % 1000000;
		struct val v = mkval(key);
		bool fresh;

		assert_int_equal(btree_preload(&t), 0);
		iodma_test_fail_alloc(1);
		fresh = model_insert(&m, key);
		assert_int_equal(btree_insert(&t, key, &v), fresh ? 0 : -EEXIST);
		iodma_test_fail_alloc(0);
		if (i % 4 == 3) { /* some removals so merges free nodes */
			remove_random(&m, &t);
		}
	}
	assert_int_equal(btree_count(&t), m.n);
	assert_int_equal(btree_check(&t), 0);
	/* Preload itself fails cleanly. */
	btree_fini(&t);
	assert_int_equal(btree_init(&t, sizeof(struct val)), 0);
	iodma_test_fail_alloc(1);
	assert_int_equal(btree_preload(&t), -ENOMEM);
	iodma_test_fail_alloc(0);
	assert_int_equal(btree_check(&t), 0);
	assert_int_equal(btree_count(&t), 0);
	btree_fini(&t);
	free(m.k);
}

struct visit_log {
	uint64_t *keys;
	size_t n, cap;
};

/* Record each visited key; the value must be the one inserted under it. */
static void log_visit(uint64_t key, const void *value, void *arg)
{
	struct visit_log *vl = arg;

	check_val(value, key);
	assert_true(vl->n < vl->cap);
	vl->keys[vl->n++] = key;
}

/* btree_remove_range() against the model: random ranges (empty, inside one
 * leaf, across many leaves and levels, the whole key space) over trees
 * grown and churned at random; every visited key in order, the count, the
 * survivors and the invariants checked after each. */
static void test_remove_range_matches_model(void **state)
{
	struct btree t;
	struct model m = { 0 };
	struct visit_log vl = { 0 };
	const uint64_t space = 30000;

	vl.cap = space;
	vl.keys = malloc(vl.cap * sizeof(*vl.keys));
	assert_non_null(vl.keys);
	assert_int_equal(btree_init(&t, sizeof(struct val)), 0);
	/* Empty tree, inverted range. */
	assert_int_equal(btree_remove_range(&t, 0, UINT64_MAX, NULL, NULL), 0);
	for (int round = 0; round < 3000; round++) {
		unsigned int adds = rnd() % 400;
		uint64_t lo, hi;
		size_t a, b, got;

		for (unsigned int i = 0; i < adds; i++) {
			uint64_t key = (rnd() % space) * 4096;
			struct val v = mkval(key);
			bool fresh = model_insert(&m, key);

			assert_int_equal(btree_insert(&t, key, &v),
					 fresh ? 0 : -EEXIST);
		}
		switch (rnd() % 8) {
		case 0: /* whole space */
			lo = 0;
			hi = UINT64_MAX;
			break;
		case 1: /* inverted: removes nothing */
			lo = (rnd() % space) * 4096 + 1;
			hi = lo - 1;
			break;
		case 2: /* wide */
			lo = (rnd() % space) * 4096 - rnd() % 2;
			hi = lo + (rnd() % (space / 2)) * 4096;
			break;
		default: /* narrow, bounds on and off keys */
			lo = (rnd() % space) * 4096 + rnd() % 3 - 1;
			hi = lo + (rnd() % 64) * 4096 + rnd() % 3;
			break;
		}
		a = model_lb(&m, lo);
		b = lo <= hi ? (hi == UINT64_MAX ? m.n : model_lb(&m, hi + 1)) : a;
		vl.n = 0;
		got = btree_remove_range(&t, lo, hi, log_visit, &vl);
		assert_int_equal(got, b - a);
		assert_int_equal(vl.n, b - a);
		if (b > a)
			assert_memory_equal(vl.keys, &m.k[a], (b - a) * sizeof(uint64_t));
		memmove(&m.k[a], &m.k[b], (m.n - b) * sizeof(*m.k));
		m.n -= b - a;
		assert_int_equal(btree_count(&t), m.n);
		assert_int_equal(btree_check(&t), 0);
		if (round % 50 == 0) {
			for (size_t i = 0; i < m.n; i++)
				check_val(btree_lookup(&t, m.k[i]), m.k[i]);
		}
		if (b > a) {
			check_queries(&t, &m, lo);
			check_queries(&t, &m, hi);
		}
	}
	/* What is left goes in one call, without a visitor. */
	assert_int_equal(btree_remove_range(&t, 0, UINT64_MAX, NULL, NULL), m.n);
	assert_int_equal(btree_count(&t), 0);
	assert_null(btree_lookup_ge(&t, 0, NULL));
	assert_int_equal(btree_check(&t), 0);
	btree_fini(&t);
	free(vl.keys);
	free(m.k);
}

struct nbr_ctx {
	const struct model *m;
	uint64_t key;		/* the key being inserted / looked up */
	int answer;		/* what the callback returns */
	int calls;
};

/* btree_insert_check's callback: the neighbours must be the model's. */
static int expect_gap(const void *prev, uint64_t pk, const void *next,
		      uint64_t nk, void *arg)
{
	struct nbr_ctx *cx = arg;
	size_t i = model_lb(cx->m, cx->key);

	cx->calls++;
	if (i > 0) {
		assert_int_equal(pk, cx->m->k[i - 1]);
		check_val(prev, pk);
	} else {
		assert_null(prev);
	}
	if (i < cx->m->n) {
		assert_int_equal(nk, cx->m->k[i]);
		check_val(next, nk);
	} else {
		assert_null(next);
	}
	return cx->answer;
}

/* btree_remove_le's callback: the entry must be the model's greatest key
 * <= the probe. */
static int expect_le(uint64_t key, const void *value, void *arg)
{
	struct nbr_ctx *cx = arg;
	size_t i = model_lb(cx->m, cx->key);

	cx->calls++;
	if (i < cx->m->n && cx->m->k[i] == cx->key)
		i++;
	assert_true(i > 0);
	assert_int_equal(key, cx->m->k[i - 1]);
	check_val(value, key);
	return cx->answer;
}

/* Appends go straight to the rightmost leaf; a removal may merge that
 * leaf away (it is forgotten then), and the next append finds the new
 * one: order, counts and invariants hold through rounds of both. */
static void test_appends_after_removals(void **state)
{
	struct btree t;
	uint64_t top = 0;

	(void)state;
	assert_int_equal(btree_init(&t, sizeof(struct val)), 0);
	for (int round = 0; round < 20; round++) {
		size_t n = 500 + rnd() % 3000, drop;

		for (size_t i = 0; i < n; i++) {
			struct val v = mkval(top);

			assert_int_equal(btree_insert(&t, top, &v), 0);
			top += 1 + rnd() % 3;
		}
		/* Drop the top part, then a range in the middle. */
		drop = rnd() % (btree_count(&t) + 1);
		for (size_t i = 0; i < drop; i++) {
			uint64_t k;

			assert_non_null(btree_lookup_le(&t, UINT64_MAX, &k));
			assert_int_equal(btree_remove(&t, k, NULL), 0);
		}
		if (btree_count(&t) > 10) {
			uint64_t lo, hi;

			assert_non_null(btree_lookup_ge(&t, 0, &lo));
			assert_non_null(btree_lookup_le(&t, UINT64_MAX, &hi));
			btree_remove_range(&t, lo + (hi - lo) / 3, lo + (hi - lo) / 2, NULL, NULL);
		}
		assert_int_equal(btree_check(&t), 0);
	}
	/* Everything is still in order and found. */
	{
		uint64_t k, prev = 0;
		size_t n = 0;
		const void *v;

		for (v = btree_lookup_ge(&t, 0, &k); v; v = btree_next(&t, k, &k)) {
			assert_true(n == 0 || k > prev);
			check_val(v, k);
			prev = k;
			n++;
		}
		assert_int_equal(n, btree_count(&t));
	}
	btree_fini(&t);
}

/* btree_visit()'s visitor: log, and stop after @stop_after entries (0 = never). */
struct each_log {
	struct visit_log vl;
	size_t stop_after;
};

static int log_each(uint64_t key, const void *value, void *arg)
{
	struct each_log *el = arg;

	log_visit(key, value, &el->vl);
	return el->stop_after && el->vl.n == el->stop_after ? 7 : 0;
}

/* btree_visit() against the model: every key in [lo, hi] in order, once,
 * over trees of one leaf to several levels, ranges empty, inverted, inside
 * a leaf, across leaves, reaching both ends of the key space; a visitor's
 * non-zero return stops the walk there and is returned. */
static void test_visit_matches_model(void **state)
{
	struct btree t;
	struct model m = { 0 };
	struct each_log el = { 0 };
	const uint64_t space = 20000;

	(void)state;
	el.vl.cap = space + 2;
	el.vl.keys = malloc(el.vl.cap * sizeof(uint64_t));
	assert_non_null(el.vl.keys);
	assert_int_equal(btree_init(&t, sizeof(struct val)), 0);
	assert_int_equal(btree_visit(&t, 0, UINT64_MAX, log_each, &el), 0);
	assert_int_equal(el.vl.n, 0);
	for (int round = 0; round < 2000; round++) {
		unsigned int adds = rnd() % 200;
		uint64_t lo, hi;
		size_t a, b;
		int ret;

		for (unsigned int i = 0; i < adds; i++) {
			uint64_t key = (rnd() % space) * 4096;
			struct val v = mkval(key);
			bool fresh = model_insert(&m, key);

			assert_int_equal(btree_insert(&t, key, &v), fresh ? 0 : -EEXIST);
		}
		if (round == 1000) {
			/* The extreme keys too. */
			struct val v0 = mkval(0), vm = mkval(UINT64_MAX);

			if (model_insert(&m, 0))
				assert_int_equal(btree_insert(&t, 0, &v0), 0);
			assert_true(model_insert(&m, UINT64_MAX));
			assert_int_equal(btree_insert(&t, UINT64_MAX, &vm), 0);
		}
		switch (rnd() % 6) {
		case 0:
			lo = 0;
			hi = UINT64_MAX;
			break;
		case 1:
			lo = (rnd() % space) * 4096 + 1;
			hi = lo - 1;
			break;
		case 2:
			lo = (rnd() % space) * 4096 - rnd() % 2;
			hi = lo + (rnd() % (space / 2)) * 4096;
			break;
		default:
			lo = (rnd() % space) * 4096 + rnd() % 3 - 1;
			hi = lo + (rnd() % 64) * 4096 + rnd() % 3;
			break;
		}
		a = model_lb(&m, lo);
		b = lo <= hi ? (hi == UINT64_MAX ? m.n : model_lb(&m, hi + 1)) : a;
		el.vl.n = 0;
		el.stop_after = (b > a && rnd() % 4 == 0) ? 1 + rnd() % (b - a) : 0;
		ret = btree_visit(&t, lo, hi, log_each, &el);
		if (el.stop_after) {
			assert_int_equal(ret, 7);
			assert_int_equal(el.vl.n, el.stop_after);
		} else {
			assert_int_equal(ret, 0);
			assert_int_equal(el.vl.n, b - a);
		}
		if (el.vl.n)
			assert_memory_equal(el.vl.keys, &m.k[a], el.vl.n * sizeof(uint64_t));
		if (rnd() % 3 == 0 && m.n) {
			/* Churn: remove a random stretch so leaves thin out. */
			size_t i = rnd() % m.n, k = 1 + rnd() % 50;

			for (size_t j = i; j < m.n && j < i + k; j++)
				assert_int_equal(btree_remove(&t, m.k[j], NULL), 0);
			k = k < m.n - i ? k : m.n - i;
			memmove(&m.k[i], &m.k[i + k], (m.n - i - k) * sizeof(*m.k));
			m.n -= k;
		}
	}
	btree_fini(&t);
	free(el.vl.keys);
	free(m.k);
}

/* btree_insert_check and btree_remove_le against the model: 150k random
 * calls on trees of up to ~20k keys (neighbours in other leaves and
 * subtrees included); refused calls change nothing. */
static void test_neighbour_ops_match_model(void **state)
{
	struct btree t;
	struct model m = { 0 };
	struct nbr_ctx cx = { .m = &m };
	const uint64_t space = 40000;

	assert_int_equal(btree_init(&t, sizeof(struct val)), 0);
	for (int i = 0; i < 150000; i++) {
		uint64_t key = (rnd() % space) * 4096 + (rnd() % 4 == 0);
		bool grow = (i / 30000) % 2 == 0;
		unsigned int op = rnd() % 10;
		struct val v = mkval(key), out;
		int calls;

		cx.key = key;
		cx.answer = rnd() % 5 == 0 ? -EBUSY : 0;
		cx.calls = 0;
		if (op < (grow ? 7u : 3u)) {
			size_t j = model_lb(&m, key);
			bool present = j < m.n && m.k[j] == key;
			int want = present ? -EEXIST : cx.answer;

			assert_int_equal(btree_insert_check(&t, key, &v,
							    expect_gap, &cx), want);
			assert_int_equal(cx.calls, present ? 0 : 1);
			if (want == 0)
				assert_true(model_insert(&m, key));
		} else {
			size_t j = model_lb(&m, key);
			uint64_t k = 0;
			int want;

			if (j < m.n && m.k[j] == key)
				j++;
			want = j == 0 ? -ENOENT : cx.answer;
			assert_int_equal(btree_remove_le(&t, key, expect_le, &cx,
							 &k, &out), want);
			calls = j == 0 ? 0 : 1;
			assert_int_equal(cx.calls, calls);
			if (want == 0) {
				assert_int_equal(k, m.k[j - 1]);
				check_val(&out, k);
				assert_true(model_remove(&m, k));
			}
		}
		assert_int_equal(btree_count(&t), m.n);
		if (i % 16 == 0 || i > 149000)
			assert_int_equal(btree_check(&t), 0);
	}
	for (size_t i = 0; i < m.n; i++)
		check_val(btree_lookup(&t, m.k[i]), m.k[i]);
	/* Empty tree: the gap callback sees no neighbours. */
	btree_fini(&t);
	m.n = 0;
	cx.key = 7;
	cx.answer = 0;
	cx.calls = 0;
	assert_int_equal(btree_remove_le(&t, 7, expect_le, &cx, NULL, NULL), -ENOENT);
	assert_int_equal(btree_insert_check(&t, 7, &(struct val){ 0 }, expect_gap, &cx), 0);
	assert_int_equal(cx.calls, 1);
	assert_int_equal(btree_count(&t), 1);
	btree_fini(&t);
	free(m.k);
}

static void test_check_detects_corruption(void **state)
{
	struct btree t;
	struct val v = mkval(0);

	assert_int_equal(btree_init(&t, sizeof(struct val)), 0);
	for (uint64_t k = 0; k < 100; k++)
		assert_int_equal(btree_insert(&t, k, &v), 0);
	assert_int_equal(btree_check(&t), 0);
	t.count++;
	assert_int_equal(btree_check(&t), -EUCLEAN);
	t.count--;
	t.nr_spare++;
	assert_int_equal(btree_check(&t), -EUCLEAN);
	t.nr_spare--;
	t.height++;
	assert_int_equal(btree_check(&t), -EUCLEAN);
	t.height--;
	assert_int_equal(btree_check(&t), 0);
	btree_fini(&t);
}

/* btree_preload_n(n): the next n inserts succeed with every allocation
 * armed to fail, removals allowed in between (the domain's young records:
 * added one by one, each preloading for all so far, moved into the tree
 * later).  Random keys against the model, and inserts into the rightmost
 * leaf of a tree grown by appends, where the first one splits every level
 * up to the root whenever that whole edge is full. */
static void test_preload_n_guarantees_n_inserts(void **state)
{
	struct btree t;
	struct model m = { 0 };
	struct val v;

	assert_int_equal(btree_init(&t, sizeof(struct val)), 0);
	assert_int_equal(btree_preload_n(&t, 0), -EINVAL);
	assert_int_equal(btree_preload_n(&t, BTREE_PRELOAD_MAX + 1), -EINVAL);
	for (int round = 0; round < 3000; round++) {
		unsigned int n = 1 + (unsigned int)(rnd() % BTREE_PRELOAD_MAX);
		uint64_t keys[BTREE_PRELOAD_MAX];

		for (unsigned int i = 0; i < n; i++) {
			do
				keys[i] = rnd() % 200000;
			while (!model_insert(&m, keys[i])); /* a fresh key */
			/* Each one preloads for all so far, as the domain does. */
			assert_int_equal(btree_preload_n(&t, i + 1), 0);
		}
		if (round % 3 == 2 && btree_count(&t)) {
			/* A removal in between: a key already in the tree. */
			uint64_t k2;
			bool pending;

			do {
				k2 = m.k[rnd() % m.n];
				pending = false;
				for (unsigned int i = 0; i < n; i++)
					pending |= keys[i] == k2;
			} while (pending);
			assert_true(model_remove(&m, k2));
			assert_int_equal(btree_remove(&t, k2, NULL), 0);
		}
		iodma_test_fail_alloc(1);
		for (unsigned int i = 0; i < n; i++) {
			v = mkval(keys[i]);
			assert_int_equal(btree_insert(&t, keys[i], &v), 0);
		}
		iodma_test_fail_alloc(0);
		if (round % 2) { /* keep the tree growing, but churn it */
			remove_random(&m, &t);
		}
	}
	assert_int_equal(btree_count(&t), m.n);
	assert_int_equal(btree_check(&t), 0);
	btree_fini(&t);

	/* Fresh trees of every size up to 600 grown by appends (no spares
	 * left over: each insert allocated what it took), then n inserts just
	 * below the largest key: into the rightmost leaf, which is full at
	 * some sizes, and then every node up to the root may split. */
	for (uint64_t size = 1; size <= 600; size++) {
		for (unsigned int n = 1; n <= BTREE_PRELOAD_MAX; n += BTREE_PRELOAD_MAX - 1) {
			assert_int_equal(btree_init(&t, sizeof(struct val)), 0);
			for (uint64_t k = 1; k <= size; k++) {
				v = mkval(64 * k);
				assert_int_equal(btree_insert(&t, 64 * k, &v), 0);
			}
			assert_int_equal(t.nr_spare, 0);
			assert_int_equal(btree_preload_n(&t, n), 0);
			iodma_test_fail_alloc(1);
			for (unsigned int i = 0; i < n; i++) {
				v = mkval(64 * size - 1 - i);
				assert_int_equal(btree_insert(&t, 64 * size - 1 - i, &v), 0);
			}
			iodma_test_fail_alloc(0);
			assert_int_equal(btree_count(&t), size + n);
			assert_int_equal(btree_check(&t), 0);
			btree_fini(&t);
		}
	}
	free(m.k);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init_rejects_bad_value_size),
		cmocka_unit_test(test_empty_tree_queries_return_null),
		cmocka_unit_test(test_extreme_keys_and_duplicates),
		cmocka_unit_test(test_random_ops_match_sorted_model),
		cmocka_unit_test(test_million_sequential_inserts_and_removals),
		cmocka_unit_test(test_insert_fail_nth_leaves_tree_unchanged),
		cmocka_unit_test(test_preload_guarantees_insert),
		cmocka_unit_test(test_remove_range_matches_model),
		cmocka_unit_test(test_appends_after_removals),
		cmocka_unit_test(test_visit_matches_model),
		cmocka_unit_test(test_neighbour_ops_match_model),
		cmocka_unit_test(test_check_detects_corruption),
		cmocka_unit_test(test_preload_n_guarantees_n_inserts),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
