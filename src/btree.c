/* SPDX-License-Identifier: MIT */
/*
 * btree.c - a B+tree from uint64_t keys to fixed-size inline values.
 *
 * Layout.  Every node has the same allocation size, so a preloaded spare
 * can become a leaf or an interior node.  A node is a 256-byte header
 * ({nr, leaf} + up to BT_KEYS keys) followed by its payload:
 *   leaf:     nr entries (1..BT_LEAF_MAX), keys[i] -> value i stored inline
 *             at data + i * value_size; binary search touches the key lines
 *             only.  (A slot map that left values in place and shifted
 *             only keys and slot bytes was measured: its extra header line
 *             cost 3-5% on bench_domain's rows, more than the value moves
 *             it saved.)
 *   interior: nr separator keys (1..BT_INNER_MAX - 1) and nr + 1 children;
 *             every key k under child[i] has keys[i - 1] <= k < keys[i].
 * Non-root leaves hold at least BT_LEAF_MIN entries, non-root interior
 * nodes at least BT_INNER_MIN children: the tree's height is O(log n) and
 * memory per entry bounded.  All leaves are at depth height - 1.
 *
 * Insert splits bottom-up along the recorded path, so it needs at most one
 * new node per level plus a new root; it first counts how many it needs and
 * takes them from the spare list (filled by btree_preload() or here),
 * which is why nothing can fail half-way.  Remove borrows from or merges
 * with a sibling bottom-up and never allocates.
 */
#include <errno.h>
#include <string.h>

#include "btree.h"
#include "util.h"

#define BT_LEAF_MAX	16		/* entries per leaf */
#define BT_LEAF_MIN	(BT_LEAF_MAX / 2)
#define BT_INNER_MAX	32		/* children per interior node */
#define BT_INNER_MIN	(BT_INNER_MAX / 2)
#define BT_KEYS		31		/* max(BT_LEAF_MAX, BT_INNER_MAX - 1) */
#define BT_MAX_HEIGHT	32		/* far beyond 2^64 entries */

struct btree_node {
	uint32_t nr;			/* leaf: entries; interior: keys */
	uint32_t leaf;			/* 1 = leaf */
	uint64_t keys[BT_KEYS];
	_Alignas(8) unsigned char data[]; /* children or values */
};

_Static_assert(sizeof(struct btree_node) == 256, "node header is 4 lines");
_Static_assert(BT_KEYS >= BT_LEAF_MAX && BT_KEYS >= BT_INNER_MAX - 1,
	       "key array too small");

static size_t node_size(const struct btree *t)
{
	size_t inner = BT_INNER_MAX * sizeof(struct btree_node *);
	size_t leaf = BT_LEAF_MAX * t->value_size;

	return sizeof(struct btree_node) + IODMA_MAX(inner, leaf);
}

static inline struct btree_node **node_child(const struct btree_node *n)
{
	return (struct btree_node **)(uintptr_t)n->data;
}

static inline unsigned char *node_val(const struct btree *t,
				      const struct btree_node *n, unsigned int i)
{
	return (unsigned char *)(uintptr_t)n->data + (size_t)i * t->value_size;
}

/*
 * Child @i of interior node @n, with its first 512 bytes requested at once:
 * the binary search would otherwise fetch its key lines one after the
 * other, then the line of the child pointer (an interior node's 32 children
 * are bytes 256-511) or of the value (the first 8 to 16 values of a leaf),
 * each a miss when the tree outgrows the caches.  Measured: the key lines
 * alone took the strict pair at 65,536 live from ~1,510 to ~1,390 ns, the
 * first 512 bytes to ~1,100; the whole node (768 bytes for map_rec) lost
 * 10-15% on the in-cache rows to the longer prefetch loop.
 */
_Static_assert(sizeof(struct btree_node) + BT_INNER_MAX * sizeof(void *) >= 512,
	       "descend() prefetches within the smallest node");

static inline struct btree_node *descend(const struct btree_node *n,
					 unsigned int i)
{
	const char *c = (const char *)node_child(n)[i];

	__builtin_prefetch(c + 64);
	__builtin_prefetch(c + 128);
	__builtin_prefetch(c + 192);
	__builtin_prefetch(c + 256);
	__builtin_prefetch(c + 320);
	__builtin_prefetch(c + 384);
	__builtin_prefetch(c + 448);
	return (struct btree_node *)(uintptr_t)c;
}

/* The value of entry @pos of leaf @n. */
static inline unsigned char *leaf_val(const struct btree *t,
				      const struct btree_node *n, unsigned int pos)
{
	return node_val(t, n, pos);
}

/*
 * Node search: binary search over the key array.  GCC compiles the halving
 * step to a branch: on sequential keys (batched maps) it predicts well and
 * lets the next loads issue early.  Measured with bench_domain against this:
 * a mask (branch-free) step halved the mispredictions on random keys but
 * made every step wait for the previous load (batched maps 1.6-2x slower);
 * a linear count over the keys helped random pairs and cost the batched
 * rows 1.1-1.5x.
 */

/* Number of keys in @n that are <= @key (the child to descend into). */
static inline unsigned int upper_bound(const struct btree_node *n, uint64_t key)
{
	const uint64_t *k = n->keys;
	unsigned int lo = 0, len = n->nr;

	if (len == 0)
		return 0;
	while (len > 1) {
		unsigned int half = len / 2;

		lo += k[lo + half - 1] <= key ? half : 0;
		len -= half;
	}
	return lo + (k[lo] <= key);
}

/* Number of keys in @n that are < @key. */
static inline unsigned int lower_bound(const struct btree_node *n, uint64_t key)
{
	const uint64_t *k = n->keys;
	unsigned int lo = 0, len = n->nr;

	if (len == 0)
		return 0;
	while (len > 1) {
		unsigned int half = len / 2;

		lo += k[lo + half - 1] < key ? half : 0;
		len -= half;
	}
	return lo + (k[lo] < key);
}

int btree_init(struct btree *t, size_t value_size)
{
	if (value_size == 0 || value_size > BTREE_MAX_VALUE)
		return -EINVAL;
	memset(t, 0, sizeof(*t));
	t->value_size = value_size;
	return 0;
}

static void free_subtree(struct btree_node *n, unsigned int level)
{
	if (level > 1) {
		for (unsigned int i = 0; i <= n->nr; i++)
			free_subtree(node_child(n)[i], level - 1);
	}
	iodma_free(n);
}

void btree_fini(struct btree *t)
{
	t->last_leaf = NULL;
	if (t->root)
		free_subtree(t->root, t->height);
	while (t->spare) {
		struct btree_node *n = t->spare;

		t->spare = node_child(n)[0];
		iodma_free(n);
	}
	t->root = NULL;
	t->height = 0;
	t->count = 0;
	t->nr_spare = 0;
}

/* Make sure at least @need spare nodes exist.  -ENOMEM keeps the spares
 * already added (they are internal and freed by btree_fini). */
static int fill_spares(struct btree *t, unsigned int need)
{
	while (t->nr_spare < need) {
		struct btree_node *n = iodma_malloc(node_size(t));

		if (!n)
			return -ENOMEM;
		node_child(n)[0] = t->spare;
		t->spare = n;
		t->nr_spare++;
	}
	return 0;
}

static struct btree_node *take_spare(struct btree *t, bool leaf)
{
	struct btree_node *n = t->spare;

	assert(n && t->nr_spare > 0);
	t->spare = node_child(n)[0];
	t->nr_spare--;
	n->nr = 0;
	n->leaf = leaf;
	return n;
}

int btree_preload(struct btree *t)
{
	/* Worst case: every level splits and a new root appears. */
	return fill_spares(t, t->height + 1);
}

_Static_assert(BTREE_PRELOAD_MAX <= BT_INNER_MAX - 2,
	       "btree_preload_n: the height grows at most once in n inserts");

int btree_preload_n(struct btree *t, unsigned int n)
{
	if (n == 0 || n > BTREE_PRELOAD_MAX)
		return -EINVAL;
	return fill_spares(t, n * (t->height + 2));
}

void *btree_lookup(const struct btree *t, uint64_t key)
{
	const struct btree_node *n = t->root;
	unsigned int i;

	if (!n)
		return NULL;
	for (unsigned int l = t->height; l > 1; l--)
		n = descend(n, upper_bound(n, key));
	i = lower_bound(n, key);
	if (i < n->nr && n->keys[i] == key)
		return leaf_val(t, n, i);
	return NULL;
}

static const struct btree_node *leftmost_leaf(const struct btree_node *n,
					      unsigned int level)
{
	for (; level > 1; level--)
		n = node_child(n)[0];
	return n;
}

static const struct btree_node *rightmost_leaf(const struct btree_node *n,
					       unsigned int level)
{
	for (; level > 1; level--)
		n = node_child(n)[n->nr];
	return n;
}

void *btree_lookup_le(const struct btree *t, uint64_t key, uint64_t *key_out)
{
	const struct btree_node *n = t->root, *cand = NULL;
	unsigned int cand_level = 0, i;

	if (!n)
		return NULL;
	for (unsigned int l = t->height; l > 1; l--) {
		i = upper_bound(n, key);
		if (i > 0) {	/* the subtree left of our path */
			cand = node_child(n)[i - 1];
			cand_level = l - 1;
		}
		n = descend(n, i);
	}
	i = upper_bound(n, key);
	if (i == 0) {
		if (!cand)
			return NULL;
		n = rightmost_leaf(cand, cand_level);
		i = n->nr;
	}
	if (key_out)
		*key_out = n->keys[i - 1];
	return leaf_val(t, n, i - 1);
}

void *btree_lookup_ge(const struct btree *t, uint64_t key, uint64_t *key_out)
{
	const struct btree_node *n = t->root, *cand = NULL;
	unsigned int cand_level = 0, i;

	if (!n)
		return NULL;
	for (unsigned int l = t->height; l > 1; l--) {
		i = upper_bound(n, key);
		if (i < n->nr) {	/* the subtree right of our path */
			cand = node_child(n)[i + 1];
			cand_level = l - 1;
		}
		n = descend(n, i);
	}
	i = lower_bound(n, key);
	if (i == n->nr) {
		if (!cand)
			return NULL;
		n = leftmost_leaf(cand, cand_level);
		i = 0;
	}
	if (key_out)
		*key_out = n->keys[i];
	return leaf_val(t, n, i);
}

int btree_visit(const struct btree *t, uint64_t lo, uint64_t hi,
		btree_each_fn fn, void *arg)
{
	while (lo <= hi && t->root) {
		const struct btree_node *n = t->root;
		unsigned int i;
		uint64_t k = 0;
		int ret;

		for (unsigned int l = t->height; l > 1; l--)
			n = descend(n, upper_bound(n, lo));
		i = lower_bound(n, lo);
		if (i == n->nr) {
			/* Past this leaf's keys: the next one is further right. */
			if (!btree_lookup_ge(t, lo, &k) || k > hi)
				return 0;
			lo = k;
			continue;
		}
		for (; i < n->nr; i++) {
			k = n->keys[i];
			if (k > hi)
				return 0;
			ret = fn(k, leaf_val(t, n, i), arg);
			if (ret)
				return ret;
		}
		if (k == UINT64_MAX)
			return 0;
		lo = k + 1;
	}
	return 0;
}

void *btree_next(const struct btree *t, uint64_t key, uint64_t *key_out)
{
	if (key == UINT64_MAX)
		return NULL;
	return btree_lookup_ge(t, key + 1, key_out);
}

void *btree_prev(const struct btree *t, uint64_t key, uint64_t *key_out)
{
	if (key == 0)
		return NULL;
	return btree_lookup_le(t, key - 1, key_out);
}

/* ---- insert ----------------------------------------------------------- */

/* Insert (key, value) at position @pos of leaf @n, which has room. */
static void leaf_insert_at(struct btree *t, struct btree_node *n,
			   unsigned int pos, uint64_t key, const void *value)
{
	size_t vs = t->value_size;

	assert(n->nr < BT_LEAF_MAX && pos <= n->nr);
	memmove(&n->keys[pos + 1], &n->keys[pos],
		(n->nr - pos) * sizeof(uint64_t));
	memmove(node_val(t, n, pos + 1), node_val(t, n, pos),
		(n->nr - pos) * vs);
	n->keys[pos] = key;
	memcpy(node_val(t, n, pos), value, vs);
	n->nr++;
}

/* Remove entries @pos..@pos + @cnt - 1 of leaf @n, copying the first one's
 * value to @out if not NULL. */
static inline __attribute__((always_inline)) void
leaf_remove_span(struct btree *t, struct btree_node *n, unsigned int pos,
		 unsigned int cnt, void *out)
{
	size_t vs = t->value_size;

	assert(cnt > 0 && pos + cnt <= n->nr);
	if (out)
		memcpy(out, node_val(t, n, pos), vs);
	memmove(&n->keys[pos], &n->keys[pos + cnt],
		(n->nr - pos - cnt) * sizeof(uint64_t));
	memmove(node_val(t, n, pos), node_val(t, n, pos + cnt),
		(n->nr - pos - cnt) * vs);
	n->nr -= cnt;
}

/* Append entries @from..@from + @count - 1 of leaf @src to leaf @dst,
 * which has room; @src is left unchanged (the caller drops them). */
static void leaf_append(struct btree *t, struct btree_node *dst,
			const struct btree_node *src, unsigned int from,
			unsigned int count)
{
	assert(dst->nr + count <= BT_LEAF_MAX && from + count <= src->nr);
	memcpy(&dst->keys[dst->nr], &src->keys[from], count * sizeof(uint64_t));
	memcpy(node_val(t, dst, dst->nr), node_val(t, src, from),
	       count * t->value_size);
	dst->nr += count;
}

/* Insert separator @key with right child @right after child @pos of
 * interior node @n, which has room. */
static void inner_insert_at(struct btree_node *n, unsigned int pos,
			    uint64_t key, struct btree_node *right)
{
	struct btree_node **c = node_child(n);

	assert(n->nr < BT_INNER_MAX - 1 && pos <= n->nr);
	memmove(&n->keys[pos + 1], &n->keys[pos],
		(n->nr - pos) * sizeof(uint64_t));
	memmove(&c[pos + 2], &c[pos + 1], (n->nr - pos) * sizeof(*c));
	n->keys[pos] = key;
	c[pos + 1] = right;
	n->nr++;
}

/* Split full leaf @n while inserting (key, value) at @pos.  The upper half
 * moves to a spare; returns it and its first key in *@sep. */
static struct btree_node *leaf_split(struct btree *t, struct btree_node *n,
				     unsigned int pos, uint64_t key,
				     const void *value, uint64_t *sep)
{
	struct btree_node *r = take_spare(t, true);
	unsigned int left = (BT_LEAF_MAX + 1) / 2 + ((BT_LEAF_MAX + 1) & 1);

	assert(n->nr == BT_LEAF_MAX);
	/* After the insert there are BT_LEAF_MAX + 1 entries: @left stay. */
	if (pos < left) {
		leaf_append(t, r, n, left - 1, BT_LEAF_MAX - (left - 1));
		n->nr = left - 1;
		leaf_insert_at(t, n, pos, key, value);
	} else {
		leaf_append(t, r, n, left, BT_LEAF_MAX - left);
		n->nr = left;
		leaf_insert_at(t, r, pos - left, key, value);
	}
	*sep = r->keys[0];
	return r;
}

/* Split full interior node @n while inserting (@key, @right) at @pos;
 * returns the new right node and the separator that moves up in *@up. */
static struct btree_node *inner_split(struct btree *t, struct btree_node *n,
				      unsigned int pos, uint64_t key,
				      struct btree_node *right, uint64_t *up)
{
	uint64_t keys[BT_INNER_MAX];
	struct btree_node *ch[BT_INNER_MAX + 1];
	struct btree_node *r = take_spare(t, false);
	unsigned int nk = n->nr + 1, lk, rk;

	assert(n->nr == BT_INNER_MAX - 1);
	memcpy(keys, n->keys, pos * sizeof(uint64_t));
	keys[pos] = key;
	memcpy(&keys[pos + 1], &n->keys[pos], (n->nr - pos) * sizeof(uint64_t));
	memcpy(ch, node_child(n), (pos + 1) * sizeof(*ch));
	ch[pos + 1] = right;
	memcpy(&ch[pos + 2], &node_child(n)[pos + 1],
	       (n->nr - pos) * sizeof(*ch));

	lk = nk / 2;		/* keys staying left */
	rk = nk - lk - 1;	/* keys moving right; keys[lk] goes up */
	memcpy(n->keys, keys, lk * sizeof(uint64_t));
	memcpy(node_child(n), ch, (lk + 1) * sizeof(*ch));
	n->nr = lk;
	memcpy(r->keys, &keys[lk + 1], rk * sizeof(uint64_t));
	memcpy(node_child(r), &ch[lk + 1], (rk + 1) * sizeof(*ch));
	r->nr = rk;
	*up = keys[lk];
	return r;
}

static int insert_split(struct btree *t, struct btree_node **path,
			const unsigned int *idx, unsigned int pos,
			uint64_t key, const void *value);

/* Insert (@key, @value) at position @pos of the leaf ending the root path
 * @path / @idx (t->height levels).  Returns 0 or -ENOMEM (nothing
 * changed).  The common case, a leaf with room, inline. */
static inline __attribute__((always_inline)) int
insert_path(struct btree *t, struct btree_node **path, const unsigned int *idx,
	    unsigned int pos, uint64_t key, const void *value)
{
	struct btree_node *n = path[t->height - 1];

	if (n->nr < BT_LEAF_MAX) {
		t->count++;
		leaf_insert_at(t, n, pos, key, value);
		return 0;
	}
	return insert_split(t, path, idx, pos, key, value);
}

static int insert_walk(struct btree *t, uint64_t key, const void *value);
static int insert_check_walk(struct btree *t, uint64_t key, const void *value,
			     btree_gap_fn check, void *arg);

/* The rightmost leaf when @key goes after every key and it has room (an
 * append: sequential maps, the batched case), else NULL.  Appending there
 * changes no separator: interior keys bound subtrees from below. */
static inline struct btree_node *append_leaf(const struct btree *t, uint64_t key)
{
	struct btree_node *n = t->last_leaf;

	if (n && n->nr > 0 && n->nr < BT_LEAF_MAX && key > n->keys[n->nr - 1])
		return n;
	return NULL;
}

/* After an insert by a walk: remember the rightmost leaf (height loads). */
static void last_leaf_set(struct btree *t)
{
	t->last_leaf = t->root ? (struct btree_node *)(uintptr_t)
				 rightmost_leaf(t->root, t->height) : NULL;
}

int btree_insert(struct btree *t, uint64_t key, const void *value)
{
	struct btree_node *n = append_leaf(t, key);
	int err;

	if (n) {
		t->count++;
		leaf_insert_at(t, n, n->nr, key, value);
		return 0;
	}
	err = insert_walk(t, key, value);
	if (err == 0)
		last_leaf_set(t);
	return err;
}

int btree_insert_check(struct btree *t, uint64_t key, const void *value,
		       btree_gap_fn check, void *arg)
{
	struct btree_node *n = append_leaf(t, key);
	int err;

	if (n) {
		/* The neighbours: the leaf's last entry, and none after. */
		err = check(leaf_val(t, n, n->nr - 1), n->keys[n->nr - 1], NULL, 0, arg);
		if (err)
			return err;
		t->count++;
		leaf_insert_at(t, n, n->nr, key, value);
		return 0;
	}
	err = insert_check_walk(t, key, value, check, arg);
	if (err == 0)
		last_leaf_set(t);
	return err;
}

static int insert_walk(struct btree *t, uint64_t key, const void *value)
{
	struct btree_node *path[BT_MAX_HEIGHT];
	unsigned int idx[BT_MAX_HEIGHT];
	struct btree_node *n;
	unsigned int h = t->height, pos, l;
	int err;

	if (!t->root) {
		err = fill_spares(t, 1);
		if (err)
			return err;
		n = take_spare(t, true);
		leaf_insert_at(t, n, 0, key, value);
		t->root = n;
		t->height = 1;
		t->count = 1;
		return 0;
	}

	n = t->root;
	for (l = 0; l + 1 < h; l++) {
		path[l] = n;
		idx[l] = upper_bound(n, key);
		n = descend(n, idx[l]);
	}
	path[h - 1] = n;
	pos = lower_bound(n, key);
	if (pos < n->nr && n->keys[pos] == key)
		return -EEXIST;
	return insert_path(t, path, idx, pos, key, value);
}

static int insert_check_walk(struct btree *t, uint64_t key, const void *value,
			     btree_gap_fn check, void *arg)
{
	struct btree_node *path[BT_MAX_HEIGHT];
	unsigned int idx[BT_MAX_HEIGHT];
	const struct btree_node *n, *cl = NULL, *cr = NULL, *nb;
	unsigned int h = t->height, cl_level = 0, cr_level = 0, pos, l;
	const void *prev = NULL, *next = NULL;
	uint64_t pk = 0, nk = 0;
	int err;

	if (!t->root) {
		err = check(NULL, 0, NULL, 0, arg);
		return err ? err : btree_insert(t, key, value);
	}
	n = t->root;
	for (l = 0; l + 1 < h; l++) {
		path[l] = (struct btree_node *)(uintptr_t)n;
		idx[l] = upper_bound(n, key);
		if (idx[l] > 0) {	/* the subtree left of the path */
			cl = node_child(n)[idx[l] - 1];
			cl_level = h - 1 - l;
		}
		if (idx[l] < n->nr) {	/* the subtree right of it */
			cr = node_child(n)[idx[l] + 1];
			cr_level = h - 1 - l;
		}
		n = descend(n, idx[l]);
	}
	path[h - 1] = (struct btree_node *)(uintptr_t)n;
	/* The leaf's values past descend()'s 512 bytes: the insert's move
	 * writes them (requested now, beside the key search). */
	for (size_t o = 512; o < node_size(t); o += 64)
		__builtin_prefetch((const char *)n + o, 1);
	pos = lower_bound(n, key);
	if (pos < n->nr && n->keys[pos] == key)
		return -EEXIST;
	if (pos > 0) {
		pk = n->keys[pos - 1];
		prev = leaf_val(t, n, pos - 1);
	} else if (cl) {
		nb = rightmost_leaf(cl, cl_level);
		pk = nb->keys[nb->nr - 1];
		prev = leaf_val(t, nb, nb->nr - 1);
	}
	if (pos < n->nr) {
		nk = n->keys[pos];
		next = leaf_val(t, n, pos);
	} else if (cr) {
		nb = leftmost_leaf(cr, cr_level);
		nk = nb->keys[0];
		next = leaf_val(t, nb, 0);
	}
	err = check(prev, pk, next, nk, arg);
	if (err)
		return err;
	return insert_path(t, path, idx, pos, key, value);
}

/* insert_path() into a full leaf: split bottom-up as needed. */
static int insert_split(struct btree *t, struct btree_node **path,
			const unsigned int *idx, unsigned int pos,
			uint64_t key, const void *value)
{
	struct btree_node *n = path[t->height - 1], *right;
	unsigned int h = t->height, need, l;
	uint64_t sep;
	int err;

	/* Count the splits: full nodes from the leaf up, plus a new root. */
	need = 0;
	if (n->nr == BT_LEAF_MAX) {
		need = 1;
		for (l = h - 1; l-- > 0;) {
			if (path[l]->nr < BT_INNER_MAX - 1)
				break;
			need++;
		}
		if (need == h)
			need++;
	}
	err = fill_spares(t, need);
	if (err)
		return err;

	/* From here on nothing can fail. */
	t->count++;
	if (n->nr < BT_LEAF_MAX) {
		leaf_insert_at(t, n, pos, key, value);
		return 0;
	}
	right = leaf_split(t, n, pos, key, value, &sep);
	for (l = h - 1; l-- > 0;) {
		n = path[l];
		if (n->nr < BT_INNER_MAX - 1) {
			inner_insert_at(n, idx[l], sep, right);
			return 0;
		}
		right = inner_split(t, n, idx[l], sep, right, &sep);
	}
	/* The root split: grow a level. */
	n = take_spare(t, false);
	n->keys[0] = sep;
	node_child(n)[0] = t->root;
	node_child(n)[1] = right;
	n->nr = 1;
	t->root = n;
	t->height++;
	return 0;
}

/* ---- remove ----------------------------------------------------------- */

/* Leaf @n (child @i of @p) has fewer than BT_LEAF_MIN entries (maybe none):
 * borrow what it lacks from a sibling that keeps BT_LEAF_MIN, else merge
 * with a sibling (then the two hold fewer than 2 * BT_LEAF_MIN). */
static void leaf_rebalance(struct btree *t, struct btree_node *p,
			   unsigned int i)
{
	struct btree_node **c = node_child(p);
	struct btree_node *n = c[i], *ls, *rs;
	unsigned int need = BT_LEAF_MIN - n->nr;

	assert(n->nr < BT_LEAF_MIN);
	if (i > 0 && c[i - 1]->nr >= BT_LEAF_MIN + need) {
		ls = c[i - 1];
		for (unsigned int k = 0; k < need; k++) {
			leaf_insert_at(t, n, 0, ls->keys[ls->nr - 1],
				       leaf_val(t, ls, ls->nr - 1));
			ls->nr--;
		}
		p->keys[i - 1] = n->keys[0];
		return;
	}
	if (i < p->nr && c[i + 1]->nr >= BT_LEAF_MIN + need) {
		rs = c[i + 1];
		leaf_append(t, n, rs, 0, need);
		leaf_remove_span(t, rs, 0, need, NULL);
		p->keys[i] = rs->keys[0];
		return;
	}
	/* Merge child j + 1 into child j. */
	{
		unsigned int j = i > 0 ? i - 1 : i;
		struct btree_node *a = c[j], *b = c[j + 1];

		assert(a->nr + b->nr < 2 * BT_LEAF_MIN);
		leaf_append(t, a, b, 0, b->nr);
		memmove(&p->keys[j], &p->keys[j + 1],
			(p->nr - j - 1) * sizeof(uint64_t));
		memmove(&c[j + 1], &c[j + 2], (p->nr - j - 1) * sizeof(*c));
		p->nr--;
		iodma_free(b);
	}
}

/* Interior node child @i of @p has BT_INNER_MIN - 1 children. */
static void inner_rebalance(struct btree_node *p, unsigned int i)
{
	struct btree_node **c = node_child(p);
	struct btree_node *n = c[i];
	struct btree_node **nc = node_child(n);

	if (i > 0 && c[i - 1]->nr + 1 > BT_INNER_MIN) {
		struct btree_node *ls = c[i - 1];

		memmove(&n->keys[1], n->keys, n->nr * sizeof(uint64_t));
		memmove(&nc[1], nc, (n->nr + 1) * sizeof(*nc));
		n->keys[0] = p->keys[i - 1];
		nc[0] = node_child(ls)[ls->nr];
		n->nr++;
		p->keys[i - 1] = ls->keys[ls->nr - 1];
		ls->nr--;
		return;
	}
	if (i < p->nr && c[i + 1]->nr + 1 > BT_INNER_MIN) {
		struct btree_node *rs = c[i + 1];
		struct btree_node **rc = node_child(rs);

		n->keys[n->nr] = p->keys[i];
		nc[n->nr + 1] = rc[0];
		n->nr++;
		p->keys[i] = rs->keys[0];
		memmove(rs->keys, &rs->keys[1], (rs->nr - 1) * sizeof(uint64_t));
		memmove(rc, &rc[1], rs->nr * sizeof(*rc));
		rs->nr--;
		return;
	}
	{
		unsigned int j = i > 0 ? i - 1 : i;
		struct btree_node *a = c[j], *b = c[j + 1];

		assert(a->nr + b->nr + 1 <= BT_INNER_MAX - 1);
		a->keys[a->nr] = p->keys[j];
		memcpy(&a->keys[a->nr + 1], b->keys, b->nr * sizeof(uint64_t));
		memcpy(&node_child(a)[a->nr + 1], node_child(b),
		       (b->nr + 1) * sizeof(*c));
		a->nr += b->nr + 1;
		memmove(&p->keys[j], &p->keys[j + 1],
			(p->nr - j - 1) * sizeof(uint64_t));
		memmove(&c[j + 1], &c[j + 2], (p->nr - j - 1) * sizeof(*c));
		p->nr--;
		iodma_free(b);
	}
}

/* leaf_shrunk() when the leaf fell under its minimum (or the root leaf
 * emptied). */
static void leaf_fix(struct btree *t, struct btree_node **path,
		     const unsigned int *idx, struct btree_node *n)
{
	unsigned int h = t->height, l;

	/* A merge may free the rightmost leaf, a borrow change which leaf
	 * that is: forget it (a removal that needs no fix keeps it: the
	 * rightmost leaf still holds the largest keys). */
	t->last_leaf = NULL;

	if (h == 1) {
		if (n->nr == 0) {
			iodma_free(n);
			t->root = NULL;
			t->height = 0;
		}
		return;
	}
	if (n->nr >= BT_LEAF_MIN)
		return;
	leaf_rebalance(t, path[h - 2], idx[h - 2]);
	for (l = h - 2; l > 0; l--) {
		if (path[l]->nr + 1 >= BT_INNER_MIN)
			return;
		inner_rebalance(path[l - 1], idx[l - 1]);
	}
	/* The root lost its last separator: shrink a level. */
	if (t->root->nr == 0) {
		n = t->root;
		t->root = node_child(n)[0];
		t->height--;
		iodma_free(n);
	}
}

/* Leaf @n at the end of the root path @path / @idx (t->height - 1 levels)
 * just lost entries: restore the fill invariants bottom-up.  The common
 * case, nothing to do, inline. */
static inline __attribute__((always_inline)) void
leaf_shrunk(struct btree *t, struct btree_node **path, const unsigned int *idx,
	    struct btree_node *n)
{
	if (n->nr >= BT_LEAF_MIN || (t->height == 1 && n->nr > 0))
		return;
	leaf_fix(t, path, idx, n);
}

int btree_remove(struct btree *t, uint64_t key, void *value_out)
{
	struct btree_node *path[BT_MAX_HEIGHT];
	unsigned int idx[BT_MAX_HEIGHT];
	struct btree_node *n = t->root;
	unsigned int h = t->height, pos, l;


	if (!n)
		return -ENOENT;
	for (l = 0; l + 1 < h; l++) {
		path[l] = n;
		idx[l] = upper_bound(n, key);
		n = descend(n, idx[l]);
	}
	pos = lower_bound(n, key);
	if (pos == n->nr || n->keys[pos] != key)
		return -ENOENT;
	leaf_remove_span(t, n, pos, 1, value_out);
	t->count--;
	leaf_shrunk(t, path, idx, n);
	return 0;
}

int btree_remove_le(struct btree *t, uint64_t key, btree_pick_fn pick,
		    void *arg, uint64_t *key_out, void *value_out)
{
	struct btree_node *path[BT_MAX_HEIGHT];
	unsigned int idx[BT_MAX_HEIGHT];
	struct btree_node *n = t->root;
	const struct btree_node *cl = NULL, *nb;
	unsigned int h = t->height, cl_level = 0, i, l;

	uint64_t k;
	int err;

	if (!n)
		return -ENOENT;
	for (l = 0; l + 1 < h; l++) {
		path[l] = n;
		idx[l] = upper_bound(n, key);
		if (idx[l] > 0) {
			cl = node_child(n)[idx[l] - 1];
			cl_level = h - 1 - l;
		}
		n = descend(n, idx[l]);
	}
	i = upper_bound(n, key);
	if (i > 0) {
		k = n->keys[i - 1];
		err = pick(k, leaf_val(t, n, i - 1), arg);
		if (err)
			return err;
		if (key_out)
			*key_out = k;
		leaf_remove_span(t, n, i - 1, 1, value_out);
		t->count--;
		leaf_shrunk(t, path, idx, n);
		return 0;
	}
	if (!cl)
		return -ENOENT;
	/* In the previous leaf, off this path: remove it by key (rare: @key
	 * sorts before everything in its leaf). */
	nb = rightmost_leaf(cl, cl_level);
	k = nb->keys[nb->nr - 1];
	err = pick(k, leaf_val(t, nb, nb->nr - 1), arg);
	if (err)
		return err;
	if (key_out)
		*key_out = k;
	return btree_remove(t, k, value_out);
}

size_t btree_remove_range(struct btree *t, uint64_t lo, uint64_t hi,
			  btree_visit_fn fn, void *arg)
{
	struct btree_node *path[BT_MAX_HEIGHT];
	unsigned int idx[BT_MAX_HEIGHT];
	size_t removed = 0;

	if (lo > hi)
		return 0;
	while (t->root) {
		struct btree_node *n = t->root;
		unsigned int h = t->height, pos, end, l;
		uint64_t last;
		bool more;

		for (l = 0; l + 1 < h; l++) {
			path[l] = n;
			idx[l] = upper_bound(n, lo);
			n = descend(n, idx[l]);
		}
		pos = lower_bound(n, lo);
		if (pos == n->nr) {
			/* Nothing >= @lo here: the next leaf starts at or
			 * after the nearest separator right of the path. */
			more = false;
			for (l = h - 1; l-- > 0;) {
				if (idx[l] < path[l]->nr) {
					lo = path[l]->keys[idx[l]];
					more = true;
					break;
				}
			}
			if (!more || lo > hi)
				break;
			continue;
		}
		for (end = pos; end < n->nr && n->keys[end] <= hi; end++) {
			if (fn)
				fn(n->keys[end], leaf_val(t, n, end), arg);
		}
		if (end == pos)
			break;
		last = n->keys[end - 1];
		more = end == n->nr && last < hi;
		leaf_remove_span(t, n, pos, end - pos, NULL);
		t->count -= end - pos;
		removed += end - pos;
		leaf_shrunk(t, path, idx, n);
		if (!more)
			break;
		lo = last + 1;	/* last < hi: no overflow */
	}
	return removed;
}

/* ---- self-check --------------------------------------------------------- */

struct check_ctx {
	const struct btree *t;
	size_t entries;
};

/* Check the subtree @n at @level (1 = leaf) whose keys must lie in
 * [lo, hi) (each bound present only when has_lo / has_hi). */
static int check_node(struct check_ctx *cx, const struct btree_node *n,
		      unsigned int level, bool root, bool has_lo, uint64_t lo,
		      bool has_hi, uint64_t hi)
{
	if (!n || (n->leaf != 0) != (level == 1))
		return -EUCLEAN;
	for (unsigned int i = 0; i < n->nr; i++) {
		if (i > 0 && n->keys[i - 1] >= n->keys[i])
			return -EUCLEAN;
		if ((has_lo && n->keys[i] < lo) || (has_hi && n->keys[i] >= hi))
			return -EUCLEAN;
	}
	if (level == 1) {
		if (n->nr > BT_LEAF_MAX || n->nr < (root ? 1u : BT_LEAF_MIN))
			return -EUCLEAN;
		cx->entries += n->nr;
		return 0;
	}
	if (n->nr > BT_INNER_MAX - 1 ||
	    n->nr + 1 < (root ? 2u : BT_INNER_MIN))
		return -EUCLEAN;
	for (unsigned int i = 0; i <= n->nr; i++) {
		bool clo = i > 0 ? true : has_lo;
		uint64_t vlo = i > 0 ? n->keys[i - 1] : lo;
		bool chi = i < n->nr ? true : has_hi;
		uint64_t vhi = i < n->nr ? n->keys[i] : hi;
		int err = check_node(cx, node_child(n)[i], level - 1, false,
				     clo, vlo, chi, vhi);

		if (err)
			return err;
	}
	return 0;
}

int btree_check(const struct btree *t)
{
	struct check_ctx cx = { .t = t, .entries = 0 };
	unsigned int spares = 0;
	int err;

	if (t->value_size == 0 || t->value_size > BTREE_MAX_VALUE)
		return -EUCLEAN;
	for (const struct btree_node *s = t->spare; s; s = node_child(s)[0])
		spares++;
	if (spares != t->nr_spare)
		return -EUCLEAN;
	if (!t->root)
		return t->height == 0 && t->count == 0 ? 0 : -EUCLEAN;
	if (t->height == 0 || t->height > BT_MAX_HEIGHT)
		return -EUCLEAN;
	err = check_node(&cx, t->root, t->height, true, false, 0, false, 0);
	if (err)
		return err;
	return cx.entries == t->count ? 0 : -EUCLEAN;
}
