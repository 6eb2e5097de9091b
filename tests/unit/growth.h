/* SPDX-License-Identifier: MIT */
/*
 * growth.h - the output growth rule of iodma/common.h, checked on one
 * public "get" function.  Include after <cmocka.h>.
 */
#ifndef IODMA_TEST_GROWTH_H
#define IODMA_TEST_GROWTH_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Fills @out (first member size_t size) for the object @ctx. */
typedef int (*growth_get_fn)(void *ctx, void *out);

/* Bytes a "newer caller" has beyond the library's struct. */
#define GROWTH_EXTRA 40

/*
 * @size is sizeof the struct, which is also its first version; the object
 * behind @ctx must not change while this runs (the values are compared).
 *   - newer caller: a struct GROWTH_EXTRA bytes longer, filled with 0xa5:
 *     0, the library's part equal to an exact-size call, the rest zeroed,
 *     .size left as the caller set it;
 *   - too small (size - 1, sizeof(size_t), 0): -EINVAL, not a byte written.
 */
static inline void check_output_growth(size_t size, growth_get_fn get, void *ctx)
{
	const size_t big = size + GROWTH_EXTRA;
	unsigned char *ref = calloc(1, size);
	unsigned char *buf = malloc(big);
	unsigned char *copy = malloc(big);
	const size_t small[] = { size - 1, sizeof(size_t), 0 };
	size_t s;

	assert_non_null(ref);
	assert_non_null(buf);
	assert_non_null(copy);
	memcpy(ref, &size, sizeof(size));
	assert_int_equal(get(ctx, ref), 0);
	memcpy(&s, ref, sizeof(s));
	assert_int_equal(s, size);

	memset(buf, 0xa5, big);
	memcpy(buf, &big, sizeof(big));
	assert_int_equal(get(ctx, buf), 0);
	memcpy(&s, buf, sizeof(s));
	assert_int_equal(s, big);
	assert_memory_equal(buf + sizeof(size_t), ref + sizeof(size_t),
			    size - sizeof(size_t));
	for (size_t i = size; i < big; i++)
		assert_int_equal(buf[i], 0);

	for (size_t k = 0; k < sizeof(small) / sizeof(small[0]); k++) {
		memset(buf, 0xa5, big);
		memcpy(buf, &small[k], sizeof(small[k]));
		memcpy(copy, buf, big);
		assert_int_equal(get(ctx, buf), -EINVAL);
		assert_memory_equal(buf, copy, big);
	}
	free(copy);
	free(buf);
	free(ref);
}

#endif /* IODMA_TEST_GROWTH_H */
