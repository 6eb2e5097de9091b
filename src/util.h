/* SPDX-License-Identifier: MIT */
/*
 * util.h - small helpers shared by the core: range checks, alignment,
 * allocation with fault injection.  No system calls.
 */
#ifndef IODMA_UTIL_H
#define IODMA_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <assert.h>

#include "os/os.h"

#define IODMA_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define IODMA_MIN(a, b) ((a) < (b) ? (a) : (b))
#define IODMA_MAX(a, b) ((a) > (b) ? (a) : (b))
#define IODMA_CACHELINE 64

/* Bytes up to and including @member: the size of the first version of an
 * options struct whose last field then was @member. */
#define IODMA_OFFSETOFEND(type, member) \
	(offsetof(type, member) + sizeof(((type *)0)->member))

/*
 * opts_copy() - Copy a caller's options struct of any version into ours.
 * @dst:      our struct, already holding the defaults (IODMA_OPTS_INIT and
 *            whatever the consumer sets); its first member is size_t size.
 * @dst_size: sizeof(*dst).
 * @src:      the caller's struct, first member size_t size; NULL = defaults.
 * @min_size: bytes of the first version (IODMA_OFFSETOFEND of its last
 *            field then).
 *
 * The growth rule of common.h, as Linux's copy_struct_from_user() applies it
 * to extensible syscall structs (openat2, clone3): a shorter struct is an
 * older caller and the fields it does not have keep their defaults; a longer
 * one is a newer caller, accepted only if every byte we do not know is zero.
 * On success dst->size is @dst_size.
 *
 * Return: 0; -EINVAL if src->size < @min_size; -E2BIG if src->size >
 *         @dst_size and a byte past @dst_size is non-zero.  On error @dst is
 *         unchanged.
 */
int opts_copy(void *dst, size_t dst_size, const void *src, size_t min_size);

/* Which way an extensible struct crosses the API. */
enum ext_dir {
	EXT_IN,  /* caller -> library (options) */
	EXT_OUT, /* library -> caller (caps, stats, state) */
};

/*
 * ext_copy() - Copy an extensible struct (first member size_t size) between
 * two versions of it, either way across the API: the one copy behind
 * opts_copy() and out_copy().
 * @dst:      receiver; its size member is left as it is.
 * @dst_size: bytes the receiver has (>= sizeof(size_t)).
 * @src:      sender.
 * @src_size: bytes the sender has (>= sizeof(size_t)).
 * @dir:      EXT_IN: @src is the caller's, bytes of @src past @dst_size
 *            must be zero (a newer caller using a field this library does
 *            not know is -E2BIG) and @dst's bytes past @src_size keep their
 *            defaults.  EXT_OUT: @dst is the caller's, bytes of @src past
 *            @dst_size are dropped (an older caller does not see the fields
 *            added since) and @dst's bytes past @src_size are zeroed (a
 *            newer caller sees 0 in the fields this library does not have).
 *
 * The rule of Linux's copy_struct_from_user() (openat2, clone3) and, for
 * EXT_OUT, of its copy_struct_to_user().
 *
 * Return: 0; -E2BIG (EXT_IN only), and then @dst is unchanged.
 */
int ext_copy(void *dst, size_t dst_size, const void *src, size_t src_size,
	     enum ext_dir dir);

/*
 * out_copy() - Fill a caller's output struct of any version from ours.
 * @dst:      the caller's struct, first member size_t size set by
 *            IODMA_STRUCT_INIT() (the size it was built with).
 * @src:      our struct, fully filled.
 * @src_size: sizeof(*src).
 * @min_size: bytes of the struct's first version.
 *
 * The growth rule of common.h for output structs: min(dst->size, @src_size)
 * bytes are filled, the caller's bytes past @src_size are zeroed,
 * dst->size is not changed.
 *
 * Return: 0; -EINVAL if dst->size < @min_size, and then @dst is unchanged.
 */
int out_copy(void *dst, const void *src, size_t src_size, size_t min_size);

/* [iova, iova + len) is a valid range: len > 0 and the last byte does not
 * wrap past 2^64 - 1. */
static inline bool range_valid(uint64_t iova, uint64_t len)
{
	return len != 0 && iova + (len - 1) >= iova;
}

/* Inclusive last byte of a valid range. */
static inline uint64_t range_last(uint64_t iova, uint64_t len)
{
	return iova + (len - 1);
}

/* Do [a, a + alen) and [b, b + blen) (both valid) overlap? */
static inline bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b,
				  uint64_t blen)
{
	return a <= range_last(b, blen) && b <= range_last(a, alen);
}

/* Is [in, in + inlen) inside [out, out + outlen)? (both valid) */
static inline bool range_contains(uint64_t out, uint64_t outlen, uint64_t in,
				  uint64_t inlen)
{
	return in >= out && range_last(in, inlen) <= range_last(out, outlen);
}

static inline bool is_pow2(uint64_t x)
{
	return x != 0 && (x & (x - 1)) == 0;
}

/* x is a multiple of the power of two a */
static inline bool is_aligned(uint64_t x, uint64_t a)
{
	return (x & (a - 1)) == 0;
}

static inline uint64_t align_down(uint64_t x, uint64_t a)
{
	return x & ~(a - 1);
}

/* Rounds up to a multiple of the power of two a; returns 0 on overflow
 * (callers check: a 0 result for a non-zero x means overflow). */
static inline uint64_t align_up(uint64_t x, uint64_t a)
{
	uint64_t r = (x + (a - 1)) & ~(a - 1);
	return r < x ? 0 : r;
}

/* An empty statement that ends a basic block for the optimiser: the tests
 * on either side stay two branches (GCC otherwise combines two cheap
 * tests with setcc, more instructions than it saves on a hot path). */
#define BRANCH_SEP() __asm__ __volatile__("")

static inline unsigned int ilog2_u64(uint64_t x)
{
	return 63u - (unsigned int)__builtin_clzll(x);
}

/* Per-thread shards (statistics, bounce-slot stashes): IODMA_SHARDS of
 * them, each written by one thread only, with plain loads and stores of
 * relaxed atomics and no read-modify-write (Linux's per-CPU counters do
 * the same with preemption off).  shard_own() is the calling thread's, or
 * IODMA_SHARDS when it has none (more threads than shards, or a platform
 * whose thread numbers may repeat): then the caller must use atomic
 * read-modify-writes on a shared one. */
#define IODMA_SHARDS 64

static inline unsigned int shard_own(void)
{
#if defined(OS_THREAD_SLOT_UNIQUE)
	unsigned int s = os_thread_slot();

	return s < IODMA_SHARDS ? s : IODMA_SHARDS;
#else
	return IODMA_SHARDS;
#endif
}

/* Library allocations: all go through these so that
 * iodma_test_fail_alloc() can fail the Nth one. */
void *iodma_malloc(size_t len);
void *iodma_calloc(size_t n, size_t len);
void *iodma_realloc(void *p, size_t len);
void iodma_free(void *p);

#endif /* IODMA_UTIL_H */
