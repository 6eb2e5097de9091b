/* SPDX-License-Identifier: MIT */
/*
 * btree.h - an ordered map from uint64_t keys to fixed-size values stored
 * inline: the mapping table's structure (and anything else that needs an
 * ordered set of intervals keyed by start).
 *
 * A B+tree: values live in leaves (sorted key arrays, binary searched),
 * interior nodes hold separator keys.  A descent requests the first 512
 * bytes of each node it enters at once (keys and child pointers or the
 * first values), so a tree larger than the caches costs about one miss
 * latency per level rather than one per line.  Lookup, insert, remove,
 * predecessor/successor are O(log n); btree_remove_range() is one descent
 * per leaf it empties or trims; btree_insert_check() and btree_remove_le()
 * fold a neighbour check into the insert's or remove's own descent.
 * Memory per entry is bounded (leaves at least half full, except the
 * root).  Not thread-safe: the owner serialises writers and excludes
 * readers during a write (the domain: its map_lock).  Value pointers
 * returned by lookups stay valid only until the next insert or remove.
 *
 * btree_preload() reserves the nodes one insert can need, so that an insert
 * made after an irreversible step (a backend map) cannot fail.
 */
#ifndef IODMA_BTREE_H
#define IODMA_BTREE_H

#include <stddef.h>
#include <stdint.h>

#define BTREE_MAX_VALUE 64 /* bytes */

struct btree_node;

struct btree {
	struct btree_node *root;
	size_t value_size;          /* bytes per value, <= BTREE_MAX_VALUE */
	size_t count;               /* entries */
	unsigned int height;        /* 0 = empty, 1 = root is a leaf */
	struct btree_node *spare;   /* preloaded free nodes (singly linked) */
	unsigned int nr_spare;
	struct btree_node *last_leaf; /* the rightmost leaf, or NULL (unknown):
				     * an insert past the largest key goes
				     * straight there; a removal forgets
				     * it when it restructures, every other
				     * insert sets it again */
};

/* Initialise an empty tree whose values are @value_size bytes.
 * Returns 0 or -EINVAL (value_size 0 or > BTREE_MAX_VALUE). */
int btree_init(struct btree *t, size_t value_size);

/* Free every node.  The tree is empty (and re-usable) after. */
void btree_fini(struct btree *t);

/* Make sure the next btree_insert() cannot fail for lack of memory.
 * Returns 0 or -ENOMEM (nothing changed). */
int btree_preload(struct btree *t);

/* Upper bound of btree_preload_n()'s @n (at most BT_INNER_MAX - 2 = 30,
 * btree.c; the domain's 28 young records plus one). */
#define BTREE_PRELOAD_MAX 29

/* Make sure the next @n btree_insert() calls (1 <= @n <= BTREE_PRELOAD_MAX,
 * with no other insert in between; removals may come between them) cannot
 * fail for lack of memory: @n * (height + 2) spare nodes.  Why that is
 * enough: an insert takes at most one node per level plus a new root, and
 * the height grows at most once in BTREE_PRELOAD_MAX inserts (a new root
 * has two children and splits again only after BT_INNER_MAX - 2 more
 * splits below it).  For an owner that records entries elsewhere first
 * and moves them into the tree later, where no failure may happen (the
 * domain's young mappings, domain_priv.h).  The spares stay with the tree
 * (freed by btree_fini).  Returns 0, -EINVAL (@n out of range; nothing
 * changed) or -ENOMEM (spares added so far are kept; the guarantee does
 * not hold). */
int btree_preload_n(struct btree *t, unsigned int n);

/* Insert @key -> copy of *@value.  Returns 0, -EEXIST (@key present,
 * nothing changed) or -ENOMEM (nothing changed; cannot happen right after a
 * successful btree_preload()). */
int btree_insert(struct btree *t, uint64_t key, const void *value);

/* Called by btree_insert_check() with the entries either side of the new
 * key: @prev (greatest key below it, @prev_key) and @next (smallest key
 * above it, @next_key); each NULL (its key 0) when there is none.  Returns
 * 0 to let the insert go on, or a negative errno to refuse it. */
typedef int (*btree_gap_fn)(const void *prev, uint64_t prev_key,
			    const void *next, uint64_t next_key, void *arg);

/* btree_insert() that first shows @check the neighbours of @key, found on
 * the same descent (for an ordered set of disjoint intervals: "does the new
 * one overlap either side?" without a separate lookup).  Returns 0,
 * -EEXIST (@key present; @check not called), @check's non-zero return or
 * -ENOMEM; nothing changed unless 0.  @check must not touch the tree. */
int btree_insert_check(struct btree *t, uint64_t key, const void *value,
		       btree_gap_fn check, void *arg);

/* Called by btree_remove_le() on the entry it found; returns 0 to remove
 * it, anything else to keep it (and have btree_remove_le return that). */
typedef int (*btree_pick_fn)(uint64_t key, const void *value, void *arg);

/* Find the entry with the greatest key <= @key and remove it if @pick
 * agrees: a lookup_le and a remove on one descent.  On removal stores its
 * key in *@key_out and copies its value to @value_out (each if not NULL).
 * Never allocates.  Returns 0 (removed), -ENOENT (no key <= @key; @pick
 * not called) or @pick's non-zero return (nothing changed). */
int btree_remove_le(struct btree *t, uint64_t key, btree_pick_fn pick,
		    void *arg, uint64_t *key_out, void *value_out);

/* Remove @key; copy its value to @value_out if not NULL.  Never allocates.
 * Returns 0 or -ENOENT. */
int btree_remove(struct btree *t, uint64_t key, void *value_out);

/* Called by btree_remove_range() on each entry it removes. */
typedef void (*btree_visit_fn)(uint64_t key, const void *value, void *arg);

/* Remove every entry whose key lies in [@lo, @hi] (inclusive; nothing when
 * @lo > @hi), calling @fn(key, value, @arg) on each, in key order, just
 * before it goes (@fn may be NULL; it must not touch the tree).  One
 * descent per leaf touched, where btree_remove() per key walks the whole
 * path each time.  Never allocates, cannot fail.  Returns how many entries
 * were removed. */
size_t btree_remove_range(struct btree *t, uint64_t lo, uint64_t hi,
			  btree_visit_fn fn, void *arg);

/* Called by btree_visit() on each entry in order; returns 0 to go on, or
 * anything else to stop (btree_visit returns it). */
typedef int (*btree_each_fn)(uint64_t key, const void *value, void *arg);

/* Call @fn on every entry whose key lies in [@lo, @hi], in key order, with
 * one descent per leaf (a btree_next() loop descends once per entry).
 * @fn must not change the tree.  Returns 0 or @fn's non-zero return. */
int btree_visit(const struct btree *t, uint64_t lo, uint64_t hi,
		btree_each_fn fn, void *arg);

/* Exact lookup.  Returns the value or NULL. */
void *btree_lookup(const struct btree *t, uint64_t key);

/* Entry with the greatest key <= @key; *@key_out receives its key.
 * Returns the value or NULL if none. */
void *btree_lookup_le(const struct btree *t, uint64_t key, uint64_t *key_out);

/* Entry with the smallest key >= @key; likewise. */
void *btree_lookup_ge(const struct btree *t, uint64_t key, uint64_t *key_out);

/* Entry with the smallest key > @key; likewise (iteration). */
void *btree_next(const struct btree *t, uint64_t key, uint64_t *key_out);

/* Entry with the greatest key < @key; likewise. */
void *btree_prev(const struct btree *t, uint64_t key, uint64_t *key_out);

static inline size_t btree_count(const struct btree *t)
{
	return t->count;
}

/* Self-check for tests: sortedness, fill, separator invariants.
 * Returns 0 or -EUCLEAN with the first violation. */
int btree_check(const struct btree *t);

#endif /* IODMA_BTREE_H */
