/* SPDX-License-Identifier: MIT */
/*
 * test_cache.c - cache maintenance (iodma/cache.h) on the build
 * architecture, and its use by non-coherent devices' maps and syncs.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <iodma.h>

#include "dma_priv.h"

#define PG 4096u

static void test_line_size_is_a_power_of_two(void **state)
{
	size_t line = iodma_cache_line_size();

	(void)state;
	assert_true(line >= 16 && line <= 4096);
	assert_int_equal(line & (line - 1), 0);
	assert_int_equal(iodma_cache_line_size(), line); /* stable */
}

/* Each function, over odd ranges, leaves the data intact and does not
 * fault: zero length, unaligned start, one byte, a line boundary, many
 * lines, the last byte of a page. */
static void test_functions_run_over_odd_ranges_and_keep_data(void **state)
{
	void (*fn[3])(const void *, size_t) = {
		iodma_cache_clean, iodma_cache_invalidate,
		iodma_cache_clean_invalidate,
	};
	size_t line = iodma_cache_line_size();
	uint8_t *buf = NULL;
	struct { size_t off, len; } r[] = {
		{ 0, 0 }, { 1, 0 }, { 3, 1 }, { line - 1, 2 }, { 5, 3 * line + 7 },
		{ 0, PG }, { PG - 1, 1 }, { 17, 2 * PG - 17 },
	};

	(void)state;
	assert_int_equal(posix_memalign((void **)&buf, PG, 2 * PG), 0);
	for (size_t i = 0; i < 2 * PG; i++)
		buf[i] = (uint8_t)(i * 13);
	for (int f = 0; f < 3; f++) {
		for (size_t k = 0; k < sizeof(r) / sizeof(r[0]); k++)
			fn[f](buf + r[k].off, r[k].len);
	}
	/* x86 DMA is coherent and the CPU's own view never changes. */
	for (size_t i = 0; i < 2 * PG; i++)
		assert_int_equal(buf[i], (uint8_t)(i * 13));
	/* Zero length on NULL is a no-op. */
	iodma_cache_clean(NULL, 0);
	iodma_cache_invalidate(NULL, 0);
	iodma_cache_clean_invalidate(NULL, 0);
	free(buf);
}

static struct dma_cache_counts counts(struct iodma_dev *dev)
{
	struct dma_cache_counts c;

	dma_dev_cache_counts(dev, &c);
	return c;
}

/* A non-coherent device's maps and syncs do the maintenance Linux's
 * dma-direct does: clean before the device reads, clean+invalidate before
 * it writes, invalidate before the CPU reads what it wrote. */
static void test_noncoherent_device_maps_and_syncs_maintain_caches(void **state)
{
	struct iodma_domain *d = NULL;
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_dev *dev = NULL;
	struct dma_cache_counts c;
	uint8_t *buf = NULL, x[64];
	uint64_t iova, bio;

	(void)state;
	assert_int_equal(posix_memalign((void **)&buf, PG, 2 * PG), 0);
	memset(buf, 0, 2 * PG);
	assert_int_equal(iodma_domain_create(NULL, &d), 0);
	o.domain = d;
	o.noncoherent = true;
	o.bounce_pool_size = 1 << 16;
	assert_int_equal(iodma_dev_create(&o, &dev), 0);

	assert_int_equal(iodma_map_single(dev, buf, 256, IODMA_TO_DEVICE, &iova), 0);
	c = counts(dev);
	assert_int_equal(c.clean, 1);
	assert_int_equal(c.invalidate + c.clean_invalidate, 0);
	assert_int_equal(iodma_sync_for_device(dev, iova, 64, IODMA_TO_DEVICE), 0);
	assert_int_equal(counts(dev).clean, 2);
	/* sync_for_cpu of a TO_DEVICE map: nothing to invalidate. */
	assert_int_equal(iodma_sync_for_cpu(dev, iova, 64, IODMA_TO_DEVICE), 0);
	assert_int_equal(counts(dev).invalidate, 0);
	assert_int_equal(iodma_unmap_single(dev, iova, 256, IODMA_TO_DEVICE), 0);
	assert_int_equal(counts(dev).invalidate, 0);

	assert_int_equal(iodma_map_single(dev, buf, 256, IODMA_FROM_DEVICE, &iova), 0);
	assert_int_equal(counts(dev).clean_invalidate, 1);
	assert_int_equal(iodma_sync_for_cpu(dev, iova, 64, IODMA_FROM_DEVICE), 0);
	assert_int_equal(counts(dev).invalidate, 1);
	assert_int_equal(iodma_unmap_single(dev, iova, 256, IODMA_FROM_DEVICE), 0);
	assert_int_equal(counts(dev).invalidate, 2);

	/* Bounced: the maintenance is on the bounce slot, the data still
	 * flows both ways. */
	memset(buf + 1, 0x11, 100);
	assert_int_equal(iodma_map_single_attrs(dev, buf + 1, 100, 64, 0,
						IODMA_BIDIRECTIONAL, &bio), 0);
	c = counts(dev);
	assert_int_equal(c.clean_invalidate, 2);
	assert_int_equal(iodma_read(d, bio, x, 64), 0);
	assert_int_equal(x[0], 0x11);
	memset(x, 0x22, 64);
	assert_int_equal(iodma_write(d, bio, x, 64), 0);
	assert_int_equal(iodma_sync_for_cpu(dev, bio, 64, IODMA_BIDIRECTIONAL), 0);
	assert_int_equal(counts(dev).invalidate, 3);
	assert_int_equal(buf[1], 0x22);
	assert_int_equal(iodma_unmap_single(dev, bio, 100, IODMA_BIDIRECTIONAL), 0);
	assert_int_equal(counts(dev).invalidate, 4);
	iodma_dev_destroy(dev);

	/* A coherent device does none of it. */
	o.noncoherent = false;
	assert_int_equal(iodma_dev_create(&o, &dev), 0);
	assert_int_equal(iodma_map_single(dev, buf, 256, IODMA_BIDIRECTIONAL, &iova), 0);
	assert_int_equal(iodma_sync_for_cpu(dev, iova, 256, IODMA_BIDIRECTIONAL), 0);
	assert_int_equal(iodma_sync_for_device(dev, iova, 256, IODMA_BIDIRECTIONAL), 0);
	assert_int_equal(iodma_unmap_single(dev, iova, 256, IODMA_BIDIRECTIONAL), 0);
	c = counts(dev);
	assert_int_equal(c.clean + c.invalidate + c.clean_invalidate, 0);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_line_size_is_a_power_of_two),
		cmocka_unit_test(test_functions_run_over_odd_ranges_and_keep_data),
		cmocka_unit_test(test_noncoherent_device_maps_and_syncs_maintain_caches),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
