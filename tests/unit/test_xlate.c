/* SPDX-License-Identifier: MIT */
/* Unit tests: device-side translation (iodma/xlate.h, seed 002 GuestMemory
 * with IOMMU): slices, errors and their sub-ranges, check_range, counters,
 * two stages, identity, resolver, fault log, dirty log, counters. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "growth.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <iodma.h>
#include <iodma/test-hooks.h> /* fault injection: tests only */

#include "util.h"

#define PG ((uint64_t)iodma_page_size())
#define IOVA0 0x10000000ull

/* A domain with a small fault log and the default soft backend. */
static struct iodma_domain *dom_new(struct iodma_memory *m, uint32_t flags,
				    uint32_t fault_log)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_domain *d = NULL;

	o.memory = m;
	o.flags = flags;
	o.fault_log_entries = fault_log;
	assert_int_equal(iodma_domain_create(&o, &d), 0);
	return d;
}

static char *pages(size_t n)
{
	char *p = mmap(NULL, n * PG, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	assert_true(p != MAP_FAILED);
	return p;
}

static size_t faults_pending(struct iodma_domain *d)
{
	struct iodma_fault f[64];
	size_t n, total = 0;

	while ((n = iodma_fault_pop(d, f, 64)))
		total += n;
	return total;
}

static struct iodma_xlate_stats stats(struct iodma_domain *d)
{
	struct iodma_xlate_stats st = IODMA_STRUCT_INIT(struct iodma_xlate_stats);

	iodma_xlate_get_stats(d, &st);
	return st;
}

static void test_slices_add_up_and_split_where_host_discontiguous(void **state)
{
	struct iodma_domain *d = dom_new(NULL, 0, 0);
	char *a = pages(4), *b = pages(4);
	struct iodma_xlate_iter it = IODMA_STRUCT_INIT(struct iodma_xlate_iter);
	struct iodma_slice s[4];
	uint64_t sum = 0;
	size_t nr;
	int ret, k = 0;

	(void)state;
	/* IOVA-contiguous, host-discontiguous. */
	assert_int_equal(iodma_domain_map(d, IOVA0, 2 * PG, a, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_domain_map(d, IOVA0 + 2 * PG, PG, b, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_translate(d, IOVA0 + 100, 3 * PG - 200, IODMA_PERM_READ,
					 s, 4, &nr, NULL), 0);
	assert_int_equal(nr, 2);
	assert_ptr_equal(s[0].va, a + 100);
	assert_int_equal(s[0].len, 2 * PG - 100);
	assert_ptr_equal(s[1].va, b);
	assert_int_equal(s[1].len, PG - 100);

	/* The iterator yields the same pieces. */
	assert_int_equal(iodma_xlate_begin(&it, d, IOVA0 + 100, 3 * PG - 200,
					   IODMA_PERM_READ), 0);
	while ((ret = iodma_xlate_next(&it, &s[k])) == 1) {
		sum += s[k].len;
		k++;
	}
	assert_int_equal(ret, 0);
	assert_int_equal(k, 2);
	assert_int_equal(sum, 3 * PG - 200);
	assert_ptr_equal(s[1].va, b);
	assert_int_equal(iodma_xlate_next(&it, &s[0]), 0); /* stays done */

	/* Two mappings that are host-contiguous come back as one slice. */
	assert_int_equal(iodma_domain_map(d, IOVA0 + 8 * PG, PG, b + PG, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_domain_map(d, IOVA0 + 9 * PG, PG, b + 2 * PG, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_translate(d, IOVA0 + 8 * PG, 2 * PG, IODMA_PERM_READ,
					 s, 4, &nr, NULL), 0);
	assert_int_equal(nr, 1);
	assert_ptr_equal(s[0].va, b + PG);
	assert_int_equal(s[0].len, 2 * PG);

	/* Too few slices: -E2BIG with max written. */
	assert_int_equal(iodma_translate(d, IOVA0, 3 * PG, IODMA_PERM_READ,
					 s, 1, &nr, NULL), -E2BIG);
	assert_int_equal(nr, 1);
	assert_int_equal(s[0].len, 2 * PG);
	assert_int_equal(faults_pending(d), 0);
	iodma_domain_destroy(d);
	munmap(a, 4 * PG);
	munmap(b, 4 * PG);
}

static void test_error_stops_at_first_unmapped_byte_with_hole_subrange(void **state)
{
	struct iodma_domain *d = dom_new(NULL, 0, 0);
	char *a = pages(4);
	struct iodma_xlate_iter it = IODMA_STRUCT_INIT(struct iodma_xlate_iter);
	struct iodma_fault f, log[4];
	struct iodma_slice s[4];
	size_t nr;

	(void)state;
	assert_int_equal(iodma_domain_map(d, IOVA0, PG, a, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_domain_map(d, IOVA0 + 3 * PG, PG, a + PG, IODMA_PERM_RW), 0);

	assert_int_equal(iodma_translate(d, IOVA0 + 10, 5 * PG, IODMA_PERM_WRITE,
					 s, 4, &nr, &f), -EFAULT);
	assert_int_equal(nr, 1);
	assert_int_equal(s[0].len, PG - 10);
	assert_int_equal(f.iova, IOVA0 + PG);
	assert_int_equal(f.len, 2 * PG);           /* to the next mapping */
	assert_int_equal(f.perm, IODMA_PERM_WRITE);
	assert_int_equal(f.reason, IODMA_FAULT_NOT_MAPPED);
	assert_int_equal(iodma_fault_pop(d, log, 4), 1);
	assert_memory_equal(&log[0], &f, sizeof(f));

	/* Hole up to the request end. */
	assert_int_equal(iodma_translate(d, IOVA0 + PG + 5, 20, IODMA_PERM_READ,
					 s, 4, &nr, &f), -EFAULT);
	assert_int_equal(nr, 0);
	assert_int_equal(f.iova, IOVA0 + PG + 5);
	assert_int_equal(f.len, 20);

	/* Iterator: one slice, then the error, then the same error again. */
	assert_int_equal(iodma_xlate_begin(&it, d, IOVA0, 2 * PG, IODMA_PERM_READ), 0);
	assert_int_equal(iodma_xlate_next(&it, &s[0]), 1);
	assert_int_equal(s[0].len, PG);
	assert_int_equal(iodma_xlate_next(&it, &s[0]), -EFAULT);
	assert_int_equal(it.fault.iova, IOVA0 + PG);
	assert_int_equal(it.fault.len, PG);
	assert_int_equal(it.fault.reason, IODMA_FAULT_NOT_MAPPED);
	assert_int_equal(iodma_xlate_next(&it, &s[0]), -EFAULT);
	assert_int_equal(faults_pending(d), 2); /* one per failed call */
	iodma_domain_destroy(d);
	munmap(a, 4 * PG);
}

static void test_permission_error_covers_the_mapping_part(void **state)
{
	struct iodma_domain *d = dom_new(NULL, 0, 0);
	char *a = pages(4);
	struct iodma_fault f;
	struct iodma_slice s[4];
	size_t nr;

	(void)state;
	assert_int_equal(iodma_domain_map(d, IOVA0, PG, a, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_domain_map(d, IOVA0 + PG, 2 * PG, a + PG, IODMA_PERM_READ), 0);
	assert_int_equal(iodma_domain_map(d, IOVA0 + 3 * PG, PG, a + 3 * PG, IODMA_PERM_RW), 0);

	assert_int_equal(iodma_translate(d, IOVA0, 4 * PG, IODMA_PERM_READ, s, 4, &nr, &f), 0);
	assert_int_equal(nr, 1); /* host-contiguous: merged */
	assert_int_equal(iodma_translate(d, IOVA0, 4 * PG, IODMA_PERM_WRITE, s, 4, &nr, &f), -EACCES);
	assert_int_equal(nr, 1);
	assert_int_equal(s[0].len, PG);
	assert_int_equal(f.iova, IOVA0 + PG);
	assert_int_equal(f.len, 2 * PG);           /* the read-only mapping */
	assert_int_equal(f.perm, IODMA_PERM_WRITE);
	assert_int_equal(f.reason, IODMA_FAULT_PERMISSION);
	/* Ending inside the mapping: the fault stops at the request end. */
	assert_int_equal(iodma_translate(d, IOVA0 + 2 * PG, 8, IODMA_PERM_RW, s, 4, &nr, &f), -EACCES);
	assert_int_equal(f.iova, IOVA0 + 2 * PG);
	assert_int_equal(f.len, 8);
	assert_int_equal(f.perm, IODMA_PERM_RW);
	assert_int_equal(faults_pending(d), 2);
	{
		struct iodma_xlate_iter it = IODMA_STRUCT_INIT(struct iodma_xlate_iter);

		assert_int_equal(iodma_xlate_begin(&it, d, IOVA0, 4 * PG, IODMA_PERM_WRITE), 0);
		assert_int_equal(iodma_xlate_next(&it, s), 1);
		assert_int_equal(iodma_xlate_next(&it, s), -EACCES);
		assert_int_equal(it.fault.reason, IODMA_FAULT_PERMISSION);
		assert_int_equal(it.fault.iova, IOVA0 + PG);
		assert_int_equal(it.fault.len, 2 * PG);
		assert_int_equal(iodma_xlate_next(&it, s), -EACCES);
		assert_int_equal(faults_pending(d), 1);
	}
	iodma_domain_destroy(d);
	munmap(a, 4 * PG);
}

static void test_check_range_answers_without_recording_faults(void **state)
{
	struct iodma_domain *d = dom_new(NULL, 0, 0);
	char *a = pages(2);

	(void)state;
	assert_int_equal(iodma_domain_map(d, IOVA0, PG, a, IODMA_PERM_READ), 0);
	assert_int_equal(iodma_domain_map(d, IOVA0 + PG, PG, a + PG, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_check_range(d, IOVA0, 2 * PG, IODMA_PERM_READ), 0);
	assert_int_equal(iodma_check_range(d, IOVA0 + PG, PG, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_check_range(d, IOVA0, 2 * PG, IODMA_PERM_WRITE), -EACCES);
	assert_int_equal(iodma_check_range(d, IOVA0, 2 * PG + 1, IODMA_PERM_READ), -EFAULT);
	assert_int_equal(iodma_check_range(d, IOVA0 - 1, 2, IODMA_PERM_READ), -EFAULT);
	assert_int_equal(iodma_check_range(d, IOVA0, 0, IODMA_PERM_READ), -EINVAL);
	assert_int_equal(iodma_check_range(d, UINT64_MAX, 2, IODMA_PERM_READ), -EINVAL);
	assert_int_equal(iodma_check_range(d, IOVA0, 1, 0), -EINVAL);
	assert_int_equal(iodma_check_range(d, IOVA0, 1, 0x4), -EINVAL);
	assert_int_equal(iodma_check_range(NULL, IOVA0, 1, IODMA_PERM_READ), -EINVAL);
	assert_int_equal(faults_pending(d), 0);
	assert_int_equal(stats(d).faults, 0);
	iodma_domain_destroy(d);
	munmap(a, 2 * PG);
}

static void test_count_zero_is_an_empty_iteration_and_bad_args_einval(void **state)
{
	struct iodma_domain *d = dom_new(NULL, 0, 0);
	struct iodma_xlate_iter it = IODMA_STRUCT_INIT(struct iodma_xlate_iter);
	struct iodma_slice s;
	size_t nr = 7;

	(void)state;
	assert_int_equal(iodma_xlate_begin(&it, d, 0x1234, 0, IODMA_PERM_READ), 0);
	assert_int_equal(iodma_xlate_next(&it, &s), 0);
	assert_int_equal(iodma_xlate_begin(&it, d, UINT64_MAX, 2, IODMA_PERM_READ), -EINVAL);
	assert_int_equal(iodma_xlate_begin(&it, d, 0, 1, 0), -EINVAL);
	assert_int_equal(iodma_xlate_begin(&it, d, 0, 1, 0x8), -EINVAL);
	assert_int_equal(iodma_xlate_begin(&it, NULL, 0, 1, IODMA_PERM_READ), -EINVAL);
	assert_int_equal(iodma_translate(d, 0, 0, IODMA_PERM_READ, &s, 1, &nr, NULL), -EINVAL);
	assert_int_equal(iodma_translate(d, UINT64_MAX, 2, IODMA_PERM_READ, &s, 1, &nr, NULL), -EINVAL);
	assert_int_equal(iodma_translate(d, 0, 1, 0, &s, 1, &nr, NULL), -EINVAL);
	assert_int_equal(iodma_translate(d, 0, 1, IODMA_PERM_READ, NULL, 1, &nr, NULL), -EINVAL);
	assert_int_equal(iodma_translate(d, 0, 1, IODMA_PERM_READ, &s, 1, NULL, NULL), -EINVAL);
	assert_int_equal(nr, 7);
	assert_int_equal(iodma_read(d, 0, &s, 0), -EINVAL);
	assert_int_equal(iodma_write(d, UINT64_MAX, &s, 2), -EINVAL);
	assert_int_equal(iodma_read(d, 0, NULL, 1), -EINVAL);
	assert_int_equal(faults_pending(d), 0);
	iodma_domain_destroy(d);
}

/* Nothing is cached in front of the IO page table: every translation
 * step is a walk, counted as a hit when a leaf serves it and as a miss when
 * none maps the address. */
static void test_every_translation_walks_the_page_table(void **state)
{
	struct iodma_domain *d = dom_new(NULL, 0, 0);
	char *a = pages(4);
	struct iodma_slice s;
	struct iodma_fault f;
	struct iodma_xlate_stats st = IODMA_STRUCT_INIT(struct iodma_xlate_stats);
	size_t nr;

	(void)state;
	assert_int_equal(iodma_domain_map(d, IOVA0, 4 * PG, a, IODMA_PERM_RW), 0);
	st = stats(d);
	assert_int_equal(st.iotlb_hits, 0);
	assert_int_equal(st.iotlb_misses, 0);
	/* The first touch right after the map: a hit, no fill. */
	assert_int_equal(iodma_translate(d, IOVA0 + 8, 8, IODMA_PERM_READ, &s, 1, &nr, NULL), 0);
	st = stats(d);
	assert_int_equal(st.iotlb_hits, 1);
	assert_int_equal(st.iotlb_misses, 0);
	assert_int_equal(iodma_translate(d, IOVA0 + 64, 8, IODMA_PERM_WRITE, &s, 1, &nr, NULL), 0);
	assert_ptr_equal(s.va, a + 64);
	assert_int_equal(iodma_translate(d, IOVA0 + 3 * PG + 8, 8, IODMA_PERM_READ, &s, 1, &nr, NULL), 0);
	assert_ptr_equal(s.va, a + 3 * PG + 8);
	st = stats(d);
	assert_int_equal(st.iotlb_hits, 3);
	assert_int_equal(st.iotlb_misses, 0);
	/* A whole-range translate runs to the mapping's end in one slice. */
	assert_int_equal(iodma_translate(d, IOVA0, 4 * PG, IODMA_PERM_READ, &s, 1, &nr, NULL), 0);
	assert_int_equal(nr, 1);
	assert_int_equal(s.len, 4 * PG);
	assert_int_equal(stats(d).iotlb_hits, 4);
	/* Not mapped: a miss, and a fault. */
	assert_int_equal(iodma_translate(d, IOVA0 + 4 * PG, 8, IODMA_PERM_READ, &s, 1, &nr, &f), -EFAULT);
	st = stats(d);
	assert_int_equal(st.iotlb_hits, 4);
	assert_int_equal(st.iotlb_misses, 1);
	iodma_domain_destroy(d);
	munmap(a, 4 * PG);
}

static void test_iotlb_is_invalidated_before_unmap_returns(void **state)
{
	struct iodma_domain *d = dom_new(NULL, 0, 0);
	char *a = pages(1);
	struct iodma_slice s;
	struct iodma_fault f;
	struct iodma_xlate_stats st = IODMA_STRUCT_INIT(struct iodma_xlate_stats);
	uint64_t inv;
	size_t nr;

	(void)state;
	assert_int_equal(iodma_domain_map(d, IOVA0, PG, a, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_translate(d, IOVA0, 8, IODMA_PERM_READ, &s, 1, &nr, NULL), 0);
	assert_int_equal(iodma_translate(d, IOVA0, 8, IODMA_PERM_READ, &s, 1, &nr, NULL), 0);
	st = stats(d);
	assert_int_equal(st.iotlb_hits, 2);
	inv = st.iotlb_invalidations;
	assert_int_equal(iodma_domain_unmap(d, IOVA0, PG), 0);
	assert_int_equal(iodma_translate(d, IOVA0, 8, IODMA_PERM_READ, &s, 1, &nr, &f), -EFAULT);
	assert_int_equal(f.reason, IODMA_FAULT_NOT_MAPPED);
	st = stats(d);
	assert_int_equal(st.iotlb_hits, 2);          /* not a stale hit */
	assert_int_equal(st.iotlb_misses, 1);
	assert_true(st.iotlb_invalidations > inv);
	/* Re-mapped elsewhere: the new host address. */
	assert_int_equal(iodma_domain_map(d, IOVA0, PG, a, IODMA_PERM_READ), 0);
	assert_int_equal(iodma_translate(d, IOVA0, 8, IODMA_PERM_WRITE, &s, 1, &nr, &f), -EACCES);
	iodma_domain_destroy(d);
	munmap(a, PG);
}

/* An unmap touches only its own range: a device model's rings keep
 * translating while its data buffers come and go, and so after an unmap
 * far longer than any IOTLB. */
static void test_unmap_leaves_other_ranges_translating(void **state)
{
	struct iodma_domain *d = dom_new(NULL, 0, 0);
	char *ring = pages(1), *buf = pages(64);
	struct iodma_slice s;
	struct iodma_fault f;
	struct iodma_xlate_stats st = IODMA_STRUCT_INIT(struct iodma_xlate_stats);
	size_t nr;

	(void)state;
	assert_int_equal(iodma_domain_map(d, IOVA0, PG, ring, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_translate(d, IOVA0, 8, IODMA_PERM_READ, &s, 1, &nr, NULL), 0);
	for (int i = 0; i < 64; i++) {
		uint64_t b = IOVA0 + 0x100000 + (uint64_t)i * PG;

		assert_int_equal(iodma_domain_map(d, b, PG, buf + i * PG, IODMA_PERM_RW), 0);
		assert_int_equal(iodma_translate(d, b, 8, IODMA_PERM_WRITE, &s, 1, &nr, NULL), 0);
		assert_ptr_equal(s.va, buf + i * PG);
		assert_int_equal(iodma_domain_unmap(d, b, PG), 0);
		assert_int_equal(iodma_translate(d, b, 8, IODMA_PERM_WRITE, &s, 1, &nr, &f), -EFAULT);
		assert_int_equal(iodma_translate(d, IOVA0, 8, IODMA_PERM_READ, &s, 1, &nr, NULL), 0);
		assert_ptr_equal(s.va, ring);
	}
	{
		char *big = pages(2048);

		assert_int_equal(iodma_domain_map(d, IOVA0 + 0x10000000, 2048 * PG,
						  big, IODMA_PERM_RW), 0);
		assert_int_equal(iodma_domain_unmap(d, IOVA0 + 0x10000000, 2048 * PG), 0);
		st = stats(d);
		assert_int_equal(iodma_translate(d, IOVA0, 8, IODMA_PERM_READ, &s, 1, &nr, NULL), 0);
		assert_int_equal(stats(d).iotlb_hits, st.iotlb_hits + 1);
		assert_int_equal(stats(d).iotlb_misses, st.iotlb_misses);
		assert_ptr_equal(s.va, ring);
		assert_int_equal(iodma_translate(d, IOVA0 + 0x10000000 + 5 * PG, 8,
						 IODMA_PERM_READ, &s, 1, &nr, &f), -EFAULT);
		munmap(big, 2048 * PG);
	}
	iodma_domain_destroy(d);
	munmap(ring, PG);
	munmap(buf, 64 * PG);
}

/* iodma_iotlb_flush() has nothing to drop (nothing is cached in front of
 * the page table): it is counted, and translation goes on as before. */
static void test_iotlb_flush_is_counted_and_changes_nothing(void **state)
{
	struct iodma_domain *d = dom_new(NULL, 0, 0);
	char *a = pages(1);
	struct iodma_slice s;
	struct iodma_xlate_stats st = IODMA_STRUCT_INIT(struct iodma_xlate_stats);
	size_t nr;

	(void)state;
	assert_int_equal(iodma_domain_map(d, IOVA0, PG, a, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_translate(d, IOVA0, 8, IODMA_PERM_READ, &s, 1, &nr, NULL), 0);
	st = stats(d);
	iodma_iotlb_flush(d);
	assert_int_equal(stats(d).iotlb_invalidations, st.iotlb_invalidations + 1);
	assert_int_equal(iodma_translate(d, IOVA0, 8, IODMA_PERM_READ, &s, 1, &nr, NULL), 0);
	assert_ptr_equal(s.va, a);
	assert_int_equal(stats(d).iotlb_misses, st.iotlb_misses);
	assert_int_equal(stats(d).iotlb_hits, st.iotlb_hits + 1);
	iodma_iotlb_flush(NULL);
	iodma_domain_destroy(d);
	munmap(a, PG);
}

static void test_two_stage_composes_and_follows_both_generations(void **state)
{
	struct iodma_memory *m;
	struct iodma_domain *d;
	struct iodma_slice s[4];
	struct iodma_fault f;
	struct iodma_xlate_stats st = IODMA_STRUCT_INIT(struct iodma_xlate_stats);
	char *host = pages(8);
	void *r1 = host, *r2 = host + 4 * PG, *r3; /* host-discontiguous */
	size_t nr;

	(void)state;
	assert_int_equal(iodma_memory_create(NULL, &m), 0);
	assert_int_equal(iodma_memory_add_region_host(m, 0x200000, 2 * PG, r1, -1, 0), 0);
	assert_int_equal(iodma_memory_add_region_host(m, 0x200000 + 2 * PG, 2 * PG, r2, -1, 0), 0);
	assert_int_equal(iodma_memory_add_region(m, 0x800000, 4 * PG, 0, &r3), 0);
	d = dom_new(m, 0, 0);

	/* IOVA -> GPA over two regions: two slices, split at the region end. */
	assert_int_equal(iodma_domain_map_gpa(d, IOVA0, 4 * PG, 0x200000, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_translate(d, IOVA0 + PG, 2 * PG, IODMA_PERM_READ, s, 4, &nr, NULL), 0);
	assert_int_equal(nr, 2);
	assert_ptr_equal(s[0].va, (char *)r1 + PG);
	assert_int_equal(s[0].len, PG);
	assert_ptr_equal(s[1].va, r2);
	assert_int_equal(s[1].len, PG);
	memcpy((char *)r2 + 16, "stage2", 7);
	{
		char buf[8];

		assert_int_equal(iodma_read(d, IOVA0 + 2 * PG + 16, buf, 7), 0);
		assert_string_equal(buf, "stage2");
	}

	/* Each step walks stage 1, then stage 2: a hit each. */
	st = stats(d);
	assert_int_equal(iodma_translate(d, IOVA0 + 8, 8, IODMA_PERM_READ, s, 4, &nr, NULL), 0);
	assert_int_equal(iodma_translate(d, IOVA0 + 16, 8, IODMA_PERM_READ, s, 4, &nr, NULL), 0);
	assert_ptr_equal(s[0].va, (char *)r1 + 16);
	assert_int_equal(stats(d).iotlb_hits, st.iotlb_hits + 2);

	/* Stage 2 changes (a region removed): followed at once. */
	assert_int_equal(iodma_memory_remove_region(m, 0x200000 + 2 * PG), 0);
	assert_int_equal(iodma_translate(d, IOVA0 + 16, 8, IODMA_PERM_READ, s, 4, &nr, NULL), 0);
	assert_ptr_equal(s[0].va, (char *)r1 + 16);
	assert_int_equal(iodma_translate(d, IOVA0 + PG, 3 * PG, IODMA_PERM_READ, s, 4, &nr, &f), -EFAULT);
	assert_int_equal(nr, 1);
	assert_int_equal(f.iova, IOVA0 + 2 * PG);
	assert_int_equal(f.len, 2 * PG);
	assert_int_equal(f.reason, IODMA_FAULT_NOT_MAPPED);

	/* Stage 1 changes (remapped to another GPA): the new region. */
	assert_int_equal(iodma_translate(d, IOVA0 + 16, 8, IODMA_PERM_READ, s, 4, &nr, NULL), 0);
	assert_int_equal(iodma_domain_unmap(d, IOVA0, 4 * PG), 0);
	assert_int_equal(iodma_domain_map_gpa(d, IOVA0, 4 * PG, 0x800000, IODMA_PERM_READ), 0);
	assert_int_equal(iodma_translate(d, IOVA0 + 16, 8, IODMA_PERM_READ, s, 4, &nr, NULL), 0);
	assert_ptr_equal(s[0].va, (char *)r3 + 16);
	assert_int_equal(iodma_translate(d, IOVA0, 4 * PG, IODMA_PERM_READ, s, 4, &nr, NULL), 0);
	assert_int_equal(nr, 1);
	assert_int_equal(s[0].len, 4 * PG);

	/* A GPA no region backs. */
	assert_int_equal(iodma_domain_map_gpa(d, IOVA0 + 8 * PG, 2 * PG, 0x40000000, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_translate(d, IOVA0 + 8 * PG, PG, IODMA_PERM_READ, s, 4, &nr, &f), -EFAULT);
	assert_int_equal(f.iova, IOVA0 + 8 * PG);
	assert_int_equal(f.len, PG);
	iodma_domain_destroy(d);
	iodma_memory_destroy(m);
	munmap(host, 8 * PG);
}

/* iodma_translate_one() is iodma_translate() with one slice: the same
 * pointer, the same errors (each documented one provoked here), the fault
 * recorded, *va untouched on every error, hits counted exactly on the
 * fast path and not at all for a fast walk that went the full way. */
static void test_translate_one_is_translate_with_one_slice(void **state)
{
	struct iodma_domain *d = dom_new(NULL, 0, 0);
	char *a = pages(8);
	void *va, *const untouched = (void *)(uintptr_t)0x5a5a;
	struct iodma_xlate_stats st;
	struct iodma_slice s;
	struct iodma_fault f[4];
	uint64_t bm[1];
	size_t nr;

	(void)state;
	/* [IOVA0, +2 PG) RW onto a; +2 PG read-only onto a + 2 PG (host-
	 * contiguous with the first); +4 PG RW onto a + 5 PG (not). */
	assert_int_equal(iodma_domain_map(d, IOVA0, 2 * PG, a, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_domain_map(d, IOVA0 + 2 * PG, PG, a + 2 * PG,
					  IODMA_PERM_READ), 0);
	assert_int_equal(iodma_domain_map(d, IOVA0 + 3 * PG, PG, a + 5 * PG,
					  IODMA_PERM_RW), 0);

	/* Hits, inside one page: the pointer, and one hit each. */
	for (uint64_t off = 0; off < 2 * PG; off += PG / 2 + 8) {
		assert_int_equal(iodma_translate_one(d, IOVA0 + off, 8, IODMA_PERM_RW, &va), 0);
		assert_ptr_equal(va, a + off);
		assert_int_equal(iodma_translate(d, IOVA0 + off, 8, IODMA_PERM_RW, &s, 1, &nr, NULL), 0);
		assert_ptr_equal(s.va, va);
	}
	st = stats(d);
	assert_int_equal(st.iotlb_hits, 8);
	assert_int_equal(st.iotlb_misses, 0);
	/* A whole page, and the last byte of one. */
	assert_int_equal(iodma_translate_one(d, IOVA0 + PG, PG, IODMA_PERM_READ, &va), 0);
	assert_ptr_equal(va, a + PG);
	assert_int_equal(iodma_translate_one(d, IOVA0 + PG - 1, 1, IODMA_PERM_READ, &va), 0);
	assert_ptr_equal(va, a + PG - 1);
	/* Across leaves and mappings that are host-contiguous: one pointer
	 * still (the full path, one hit for the run it merges). */
	st = stats(d);
	assert_int_equal(iodma_translate_one(d, IOVA0 + PG - 8, 2 * PG + 8, IODMA_PERM_READ, &va), 0);
	assert_ptr_equal(va, a + PG - 8);
	assert_int_equal(stats(d).iotlb_hits, st.iotlb_hits + 1);
	assert_int_equal(stats(d).iotlb_misses, st.iotlb_misses);
	assert_int_equal(faults_pending(d), 0);

	/* -E2BIG: mapped, but two host slices. */
	va = untouched;
	assert_int_equal(iodma_translate_one(d, IOVA0 + 3 * PG - 8, 16, IODMA_PERM_READ, &va), -E2BIG);
	assert_ptr_equal(va, untouched);
	/* -EACCES: a write to the read-only page; a fault, no hit. */
	st = stats(d);
	assert_int_equal(iodma_translate_one(d, IOVA0 + 2 * PG + 8, 8, IODMA_PERM_WRITE, &va), -EACCES);
	assert_ptr_equal(va, untouched);
	assert_int_equal(iodma_fault_pop(d, f, 4), 1);
	assert_int_equal(f[0].reason, IODMA_FAULT_PERMISSION);
	assert_int_equal(stats(d).iotlb_hits, st.iotlb_hits);
	/* -EFAULT: not mapped (a miss and a fault), also past the last page. */
	assert_int_equal(iodma_translate_one(d, IOVA0 + 4 * PG + 8, 8, IODMA_PERM_READ, &va), -EFAULT);
	assert_int_equal(iodma_translate_one(d, IOVA0 + 4 * PG - 8, 16, IODMA_PERM_READ, &va), -EFAULT);
	assert_ptr_equal(va, untouched);
	assert_int_equal(iodma_fault_pop(d, f, 4), 2);
	assert_int_equal(f[0].reason, IODMA_FAULT_NOT_MAPPED);
	assert_int_equal(f[0].iova, IOVA0 + 4 * PG + 8);
	/* (the step over the mapped 8 bytes of the second is a hit) */
	assert_int_equal(stats(d).iotlb_hits, st.iotlb_hits + 1);
	assert_int_equal(stats(d).iotlb_misses, st.iotlb_misses + 2);
	/* -EINVAL: NULL domain or out-pointer, len 0, a range that wraps,
	 * perm 0 or unknown bits; nothing recorded, nothing counted. */
	st = stats(d);
	assert_int_equal(iodma_translate_one(NULL, IOVA0, 8, IODMA_PERM_READ, &va), -EINVAL);
	assert_int_equal(iodma_translate_one(d, IOVA0, 8, IODMA_PERM_READ, NULL), -EINVAL);
	assert_int_equal(iodma_translate_one(d, IOVA0, 0, IODMA_PERM_READ, &va), -EINVAL);
	assert_int_equal(iodma_translate_one(d, UINT64_MAX - 3, 8, IODMA_PERM_READ, &va), -EINVAL);
	assert_int_equal(iodma_translate_one(d, IOVA0 + 8, UINT64_MAX, IODMA_PERM_READ, &va), -EINVAL);
	assert_int_equal(iodma_translate_one(d, IOVA0, 8, 0, &va), -EINVAL);
	assert_int_equal(iodma_translate_one(d, IOVA0, 8, 4, &va), -EINVAL);
	assert_int_equal(iodma_translate_one(d, IOVA0, 8, IODMA_PERM_READ | 0x1000, &va), -EINVAL);
	assert_int_equal(iodma_translate_one(d, IOVA0, 8, IODMA_PERM_READ | 0x80000000u, &va), -EINVAL);
	assert_ptr_equal(va, untouched);
	assert_int_equal(faults_pending(d), 0);
	assert_int_equal(stats(d).iotlb_hits, st.iotlb_hits);
	assert_int_equal(stats(d).iotlb_misses, st.iotlb_misses);

	/* With the dirty log on, a write translation marks its page (the
	 * fast path leaves writes to the full path), a read does not. */
	assert_int_equal(iodma_dirty_log_start(d), 0);
	assert_int_equal(iodma_translate_one(d, IOVA0 + PG + 8, 8, IODMA_PERM_WRITE, &va), 0);
	assert_ptr_equal(va, a + PG + 8);
	assert_int_equal(iodma_translate_one(d, IOVA0 + 8, 8, IODMA_PERM_READ, &va), 0);
	assert_int_equal(iodma_dirty_get_and_clear(d, IOVA0, 64 * PG, bm, 1), 0);
	assert_int_equal(bm[0], 2);
	assert_int_equal(iodma_dirty_log_stop(d), 0);
	/* Stopped: writes take the fast path again (a hit, nothing marked). */
	st = stats(d);
	assert_int_equal(iodma_translate_one(d, IOVA0 + 8, 8, IODMA_PERM_WRITE, &va), 0);
	assert_int_equal(stats(d).iotlb_hits, st.iotlb_hits + 1);

	/* Unmapped: gone for both entry points at once. */
	assert_int_equal(iodma_domain_unmap(d, IOVA0, 2 * PG), 0);
	assert_int_equal(iodma_translate_one(d, IOVA0 + 8, 8, IODMA_PERM_READ, &va), -EFAULT);
	iodma_domain_destroy(d);
	munmap(a, 8 * PG);
}

/* A disabled domain is identity over its memory for iodma_translate_one()
 * as well: the fast path's limit follows set_enabled both ways.  (And a
 * two-stage leaf goes the full way.) */
static void test_translate_one_follows_set_enabled(void **state)
{
	struct iodma_memory *m;
	struct iodma_domain *d;
	void *r1, *r2, *va;

	(void)state;
	assert_int_equal(iodma_memory_create(NULL, &m), 0);
	assert_int_equal(iodma_memory_add_region(m, IOVA0, 2 * PG, 0, &r1), 0);
	assert_int_equal(iodma_memory_add_region(m, 0x800000, PG, 0, &r2), 0);
	d = dom_new(m, 0, 0);
	/* IOVA0 -> GPA 0x800000 while enabled; identity (r1) while not. */
	assert_int_equal(iodma_domain_map_gpa(d, IOVA0, PG, 0x800000, IODMA_PERM_RW), 0);
	for (int round = 0; round < 2; round++) {
		assert_int_equal(iodma_translate_one(d, IOVA0 + 8, 8, IODMA_PERM_READ, &va), 0);
		assert_ptr_equal(va, (char *)r2 + 8);
		assert_int_equal(iodma_domain_set_enabled(d, false), 0);
		assert_int_equal(iodma_translate_one(d, IOVA0 + 8, 8, IODMA_PERM_READ, &va), 0);
		assert_ptr_equal(va, (char *)r1 + 8);
		assert_int_equal(iodma_translate_one(d, IOVA0 + PG + 8, 8, IODMA_PERM_WRITE, &va), 0);
		assert_ptr_equal(va, (char *)r1 + PG + 8);
		assert_int_equal(iodma_domain_set_enabled(d, true), 0);
		assert_int_equal(iodma_translate_one(d, IOVA0 + PG + 8, 8, IODMA_PERM_READ, &va), -EFAULT);
	}
	iodma_domain_destroy(d);
	iodma_memory_destroy(m);
}

static void test_disabled_domain_is_identity_over_memory(void **state)
{
	struct iodma_memory *m;
	struct iodma_domain *d;
	struct iodma_slice s[4];
	struct iodma_fault f;
	char *host = pages(8);
	void *r1, *r2 = host + 4 * PG;
	size_t nr;

	(void)state;
	assert_int_equal(iodma_memory_create(NULL, &m), 0);
	assert_int_equal(iodma_memory_add_region(m, 0x100000, 2 * PG, 0, &r1), 0);
	/* host + 4 PG cannot follow r1 directly: host is mapped already. */
	assert_int_equal(iodma_memory_add_region_host(m, 0x100000 + 2 * PG, PG, r2, -1, 0), 0);
	d = dom_new(m, IODMA_DOMAIN_DISABLED, 0);

	assert_int_equal(iodma_translate(d, 0x100000 + PG, 2 * PG, IODMA_PERM_RW, s, 4, &nr, NULL), 0);
	assert_int_equal(nr, 2);
	assert_ptr_equal(s[0].va, (char *)r1 + PG);
	assert_ptr_equal(s[1].va, r2);
	assert_int_equal(s[0].len + s[1].len, 2 * PG);
	assert_int_equal(iodma_write(d, 0x100000 + 2 * PG, "id", 3), 0);
	assert_string_equal((char *)r2, "id");
	assert_int_equal(iodma_translate(d, 0x100000 + 3 * PG, 1, IODMA_PERM_READ, s, 4, &nr, &f), -EFAULT);
	assert_int_equal(f.reason, IODMA_FAULT_NOT_MAPPED);
	assert_int_equal(stats(d).iotlb_hits + stats(d).iotlb_misses, 0);

	/* Enabled: the (empty) mapping table rules. */
	assert_int_equal(iodma_domain_set_enabled(d, true), 0);
	assert_int_equal(iodma_check_range(d, 0x100000, 8, IODMA_PERM_READ), -EFAULT);
	assert_int_equal(iodma_domain_set_enabled(d, false), 0);
	assert_int_equal(iodma_check_range(d, 0x100000, 8, IODMA_PERM_READ), 0);
	iodma_domain_destroy(d);
	iodma_memory_destroy(m);
	munmap(host, 8 * PG);
}

struct resolver_ctx {
	char *host;
	int calls;
	int fail;
};

static int resolver_map(void *arg, struct iodma_domain *d, uint64_t iova,
			uint32_t perm)
{
	struct resolver_ctx *c = arg;

	c->calls++;
	if (c->fail)
		return -ENOENT;
	return iodma_domain_map(d, align_down(iova, PG), PG, c->host, perm);
}

static void test_resolver_installs_a_mapping_on_miss(void **state)
{
	struct iodma_domain *d = dom_new(NULL, 0, 0);
	struct resolver_ctx c = { .host = pages(1) };
	struct iodma_slice s;
	struct iodma_fault f;
	size_t nr;

	(void)state;
	assert_int_equal(iodma_xlate_set_resolver(d, resolver_map, &c), 0);
	assert_int_equal(iodma_translate(d, IOVA0 + 24, 8, IODMA_PERM_WRITE, &s, 1, &nr, &f), 0);
	assert_ptr_equal(s.va, c.host + 24);
	assert_int_equal(c.calls, 1);
	assert_int_equal(stats(d).resolver_calls, 1);
	assert_int_equal(iodma_domain_nr_mappings(d), 1);
	/* Mapped now: no more calls. */
	assert_int_equal(iodma_translate(d, IOVA0 + 32, 8, IODMA_PERM_WRITE, &s, 1, &nr, &f), 0);
	assert_int_equal(c.calls, 1);
	assert_int_equal(faults_pending(d), 0);

	/* A failing resolver: the fault is recorded. */
	c.fail = 1;
	assert_int_equal(iodma_translate(d, IOVA0 + 4 * PG, 8, IODMA_PERM_READ, &s, 1, &nr, &f), -EFAULT);
	assert_int_equal(c.calls, 2);
	assert_int_equal(f.reason, IODMA_FAULT_NOT_MAPPED);
	assert_int_equal(faults_pending(d), 1);
	/* check_range also asks the resolver, but records nothing. */
	assert_int_equal(iodma_check_range(d, IOVA0 + 4 * PG, 8, IODMA_PERM_READ), -EFAULT);
	assert_int_equal(c.calls, 3);
	assert_int_equal(faults_pending(d), 0);

	/* Removed: not called any more. */
	assert_int_equal(iodma_xlate_set_resolver(d, NULL, NULL), 0);
	assert_int_equal(iodma_check_range(d, IOVA0 + 4 * PG, 8, IODMA_PERM_READ), -EFAULT);
	assert_int_equal(c.calls, 3);
	assert_int_equal(stats(d).resolver_calls, 3);
	assert_int_equal(iodma_xlate_set_resolver(NULL, NULL, NULL), -EINVAL);
	iodma_domain_destroy(d);
	munmap(c.host, PG);
}

static void test_fault_log_overflow_drops_oldest_and_counts(void **state)
{
	struct iodma_domain *d = dom_new(NULL, 0, 4);
	struct iodma_fault f[8];
	struct iodma_xlate_stats st = IODMA_STRUCT_INIT(struct iodma_xlate_stats);
	char buf[8];

	(void)state;
	for (uint64_t i = 0; i < 6; i++)
		assert_int_equal(iodma_read(d, IOVA0 + i * PG, buf, 8), -EFAULT);
	st = stats(d);
	assert_int_equal(st.faults, 6);
	assert_int_equal(st.faults_dropped, 2);
	assert_int_equal(iodma_fault_pop(d, f, 1), 1);
	assert_int_equal(f[0].iova, IOVA0 + 2 * PG);  /* the two oldest went */
	assert_int_equal(f[0].len, 8);
	assert_int_equal(f[0].perm, IODMA_PERM_READ);
	assert_int_equal(iodma_fault_pop(d, f, 8), 3);
	assert_int_equal(f[0].iova, IOVA0 + 3 * PG);
	assert_int_equal(f[2].iova, IOVA0 + 5 * PG);
	assert_int_equal(iodma_fault_pop(d, f, 8), 0);
	assert_int_equal(iodma_fault_pop(NULL, f, 8), 0);
	iodma_domain_destroy(d);
}

static void test_read_write_check_all_first_and_copy_nothing_on_error(void **state)
{
	struct iodma_domain *d = dom_new(NULL, 0, 0);
	char *a = pages(40);
	char *buf = malloc(20 * PG), *back = malloc(20 * PG);

	(void)state;
	/* 20 one-page mappings onto every other host page: 20 runs. */
	for (uint64_t i = 0; i < 20; i++)
		assert_int_equal(iodma_domain_map(d, IOVA0 + i * PG, PG, a + 2 * i * PG,
						  i == 19 ? IODMA_PERM_READ : IODMA_PERM_RW), 0);
	for (size_t i = 0; i < 20 * PG; i++)
		buf[i] = (char)(i * 13 + 1);
	assert_int_equal(iodma_write(d, IOVA0 + 1, buf, 19 * PG - 1), 0);
	for (uint64_t i = 0; i < 19; i++)
		assert_memory_equal(a + 2 * i * PG + (i ? 0 : 1), buf + i * PG - (i ? 1 : 0),
				    i ? PG : PG - 1);
	memset(back, 0, 20 * PG);
	assert_int_equal(iodma_read(d, IOVA0 + 1, back, 19 * PG - 1), 0);
	assert_memory_equal(back, buf, 19 * PG - 1);

	/* 19 runs are more than fit on the stack: without memory for their
	 * list, -ENOMEM and nothing copied. */
	memset(back, 0x55, 20 * PG);
	iodma_test_fail_alloc(1);
	assert_int_equal(iodma_read(d, IOVA0 + 1, back, 19 * PG - 1), -ENOMEM);
	iodma_test_fail_alloc(0);
	assert_int_equal((unsigned char)back[0], 0x55);
	assert_int_equal((unsigned char)back[19 * PG - 2], 0x55);

	/* The last page is read-only: a write over it copies nothing. */
	memset(buf, 0x77, 20 * PG);
	assert_int_equal(iodma_write(d, IOVA0, buf, 20 * PG), -EACCES);
	assert_int_equal((unsigned char)a[1], 1);
	/* Past the end: a read copies nothing. */
	memset(back, 0x33, 20 * PG);
	assert_int_equal(iodma_read(d, IOVA0 + 19 * PG, back, 2 * PG), -EFAULT);
	assert_int_equal((unsigned char)back[0], 0x33);
	assert_int_equal(faults_pending(d), 2);
	iodma_domain_destroy(d);
	munmap(a, 40 * PG);
	free(buf);
	free(back);
}

static void test_fd_only_mapping_has_no_host_address(void **state)
{
	struct iodma_domain *d = dom_new(NULL, 0, 0);
	struct iodma_memory *m;
	struct iodma_region_info ri;
	struct iodma_slice s;
	struct iodma_fault f;
	size_t nr;

	(void)state;
	assert_int_equal(iodma_memory_create(NULL, &m), 0);
	assert_int_equal(iodma_memory_add_region(m, 0, 2 * PG, 0, NULL), 0);
	assert_int_equal(iodma_memory_find(m, 0, &ri), 0);
	assert_int_equal(iodma_domain_map_fd(d, IOVA0, 2 * PG, NULL, ri.fd, 0, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_translate(d, IOVA0 + PG, 2 * PG, IODMA_PERM_READ, &s, 1, &nr, &f), -EFAULT);
	assert_int_equal(f.reason, IODMA_FAULT_NO_HOST);
	assert_int_equal(f.iova, IOVA0 + PG);
	assert_int_equal(f.len, PG);
	assert_int_equal(iodma_check_range(d, IOVA0, 8, IODMA_PERM_READ), -EFAULT);
	iodma_domain_destroy(d);
	iodma_memory_destroy(m);
}

static uint64_t bit(const uint64_t *bm, uint64_t i)
{
	return (bm[i / 64] >> (i % 64)) & 1;
}

static void test_dirty_log_marks_writes_not_reads_and_get_clears(void **state)
{
	struct iodma_domain *d = dom_new(NULL, 0, 0);
	char *a = pages(200);
	struct iodma_slice s[4];
	uint64_t bm[4];
	char buf[16] = { 0 };
	size_t nr;

	(void)state;
	assert_int_equal(iodma_domain_map(d, IOVA0, 200 * PG, a, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_dirty_get_and_clear(d, IOVA0, PG, bm, 4), -EINVAL);
	assert_int_equal(iodma_dirty_log_stop(d), -EINVAL);
	assert_int_equal(iodma_dirty_log_start(d), 0);
	assert_int_equal(iodma_dirty_log_start(d), -EALREADY);

	assert_int_equal(iodma_read(d, IOVA0 + 5 * PG, buf, 16), 0);
	assert_int_equal(iodma_check_range(d, IOVA0 + 6 * PG, 8, IODMA_PERM_WRITE), 0);
	assert_int_equal(iodma_translate(d, IOVA0 + 7 * PG, 8, IODMA_PERM_READ, s, 4, &nr, NULL), 0);
	assert_int_equal(iodma_write(d, IOVA0 + 2 * PG - 1, buf, 2), 0);          /* pages 1, 2 */
	assert_int_equal(iodma_translate(d, IOVA0 + 70 * PG, PG, IODMA_PERM_RW, s, 4, &nr, NULL), 0);
	{
		struct iodma_xlate_iter it = IODMA_STRUCT_INIT(struct iodma_xlate_iter);

		assert_int_equal(iodma_xlate_begin(&it, d, IOVA0 + 130 * PG, 2 * PG,
						   IODMA_PERM_WRITE), 0);
		while (iodma_xlate_next(&it, s) == 1)
			;
	}

	/* -ENOSPC: too small, nothing cleared. */
	assert_int_equal(iodma_dirty_get_and_clear(d, IOVA0, 200 * PG, bm, 3), -ENOSPC);
	/* -EINVAL: not granule aligned. */
	assert_int_equal(iodma_dirty_get_and_clear(d, IOVA0 + 1, PG, bm, 4), -EINVAL);
	assert_int_equal(iodma_dirty_get_and_clear(d, IOVA0, PG + 1, bm, 4), -EINVAL);
	assert_int_equal(iodma_dirty_get_and_clear(d, IOVA0, 0, bm, 4), -EINVAL);

	/* A window that starts mid-word: pages 60..139. */
	memset(bm, 0xff, sizeof(bm));
	assert_int_equal(iodma_dirty_get_and_clear(d, IOVA0 + 60 * PG, 80 * PG, bm, 2), 0);
	for (uint64_t i = 0; i < 80; i++)
		assert_int_equal(bit(bm, i), i == 10 || i == 70 || i == 71);
	/* The rest is still there, the window was cleared. */
	assert_int_equal(iodma_dirty_get_and_clear(d, IOVA0, 200 * PG, bm, 4), 0);
	for (uint64_t i = 0; i < 200; i++)
		assert_int_equal(bit(bm, i), i == 1 || i == 2);
	assert_int_equal(iodma_dirty_get_and_clear(d, IOVA0, 200 * PG, bm, 4), 0);
	assert_int_equal(bm[0] | bm[1] | bm[2] | bm[3], 0);

	assert_int_equal(iodma_dirty_log_stop(d), 0);
	assert_int_equal(iodma_write(d, IOVA0, buf, 2), 0);
	assert_int_equal(iodma_dirty_get_and_clear(d, IOVA0, PG, bm, 4), -EINVAL);
	/* Restart: a fresh, empty bitmap. */
	assert_int_equal(iodma_dirty_log_start(d), 0);
	assert_int_equal(iodma_dirty_get_and_clear(d, IOVA0, PG, bm, 1), 0);
	assert_int_equal(bm[0], 0);
	iodma_domain_destroy(d); /* frees a live log */
	munmap(a, 200 * PG);
}

static void test_dirty_log_covers_high_iovas_across_leaves(void **state)
{
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_iova_range r = { .iova = 1ull << 40, .len = 1ull << 40 };
	struct iodma_domain *d;
	char *a = pages(2);
	uint64_t leaf = (1ull << 15) * PG; /* IOVA bytes covered by one leaf */
	uint64_t iova = (1ull << 40) + 7 * leaf - PG, bm[1];

	(void)state;
	so.nr_ranges = 1;
	so.ranges = &r;
	o.backend_config = &so;
	assert_int_equal(iodma_domain_create(&o, &d), 0);
	assert_int_equal(iodma_domain_map(d, iova, 2 * PG, a, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_dirty_log_start(d), 0);
	assert_int_equal(iodma_write(d, iova + PG - 4, "abcdefgh", 8), 0); /* both leaves */
	assert_int_equal(iodma_dirty_get_and_clear(d, iova - PG, 4 * PG, bm, 1), 0);
	assert_int_equal(bm[0], 0x6);
	iodma_domain_destroy(d);
	munmap(a, 2 * PG);
}

static void test_dirty_start_fail_nth_and_lost_marks_report_all(void **state)
{
	struct iodma_domain *d = dom_new(NULL, 0, 0);
	char *a = pages(4);
	uint64_t bm[1];
	unsigned long n;
	int ret;

	(void)state;
	assert_int_equal(iodma_domain_map(d, IOVA0, 4 * PG, a, IODMA_PERM_RW), 0);
	for (n = 1;; n++) {
		iodma_test_fail_alloc(n);
		ret = iodma_dirty_log_start(d);
		if (ret == 0)
			break;
		assert_int_equal(ret, -ENOMEM);
		assert_int_equal(iodma_dirty_get_and_clear(d, IOVA0, PG, bm, 1), -EINVAL);
	}
	iodma_test_fail_alloc(0);
	/* A write whose bitmap leaf cannot be allocated is not lost: every
	 * granule is reported dirty from then on. */
	iodma_test_fail_alloc(1);
	assert_int_equal(iodma_write(d, IOVA0, "x", 1), 0);
	iodma_test_fail_alloc(0);
	assert_int_equal(iodma_dirty_get_and_clear(d, IOVA0, 4 * PG, bm, 1), 0);
	assert_int_equal(bm[0], 0xf);
	/* As xlate.h says: every later harvest too, cleared or not, of any
	 * range (pages never written, never mapped), until logging stops. */
	assert_int_equal(iodma_dirty_get_and_clear(d, IOVA0, 4 * PG, bm, 1), 0);
	assert_int_equal(bm[0], 0xf);
	assert_int_equal(iodma_dirty_get_and_clear(d, IOVA0 + 2 * PG, PG, bm, 1), 0);
	assert_int_equal(bm[0], 0x1);
	assert_int_equal(iodma_dirty_get_and_clear(d, IOVA0 + 64 * PG, 3 * PG, bm, 1), 0);
	assert_int_equal(bm[0], 0x7);
	/* A restart gives a precise log again. */
	assert_int_equal(iodma_dirty_log_stop(d), 0);
	assert_int_equal(iodma_dirty_log_start(d), 0);
	assert_int_equal(iodma_write(d, IOVA0 + PG, "x", 1), 0);
	assert_int_equal(iodma_dirty_get_and_clear(d, IOVA0, 4 * PG, bm, 1), 0);
	assert_int_equal(bm[0], 0x2);
	iodma_domain_destroy(d);
	munmap(a, 4 * PG);
}

static void test_bad_iotlb_size_is_einval(void **state)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_domain *d = NULL;

	(void)state;
	o.iotlb_entries = 1000;
	assert_int_equal(iodma_domain_create(&o, &d), -EINVAL);
	assert_null(d);
	o.iotlb_entries = 1; /* a one-entry IOTLB still works */
	assert_int_equal(iodma_domain_create(&o, &d), 0);
	{
		char *a = pages(1);
		struct iodma_slice s;
		size_t nr;

		assert_int_equal(iodma_domain_map(d, IOVA0, PG, a, IODMA_PERM_RW), 0);
		assert_int_equal(iodma_translate(d, IOVA0, 8, IODMA_PERM_READ, &s, 1, &nr, NULL), 0);
		assert_int_equal(iodma_translate(d, IOVA0, 8, IODMA_PERM_READ, &s, 1, &nr, NULL), 0);
		assert_int_equal(stats(d).iotlb_hits, 2);
		iodma_domain_destroy(d);
		munmap(a, PG);
	}
}

static void test_domain_create_fail_nth_covers_xlate_init(void **state)
{
	struct iodma_domain *d;
	unsigned long n;
	int ret;

	(void)state;
	for (n = 1;; n++) {
		d = NULL;
		iodma_test_fail_alloc(n);
		ret = iodma_domain_create(NULL, &d);
		if (ret == 0)
			break;
		assert_int_equal(ret, -ENOMEM);
		assert_null(d);
	}
	iodma_test_fail_alloc(0);
	iodma_domain_destroy(d);
}

/* The guest-physical dirty log (memory.h): device writes through a
 * two-stage domain mark the GPA pages behind the IOVAs, and the marks
 * survive the unmap of the IOVA. */
static uint64_t gpa_harvest(struct iodma_memory *m, uint64_t gpa, uint64_t pages)
{
	uint64_t bm[1] = { 0 };

	assert_int_equal(iodma_memory_dirty_get_and_clear(m, gpa, pages * PG, bm, 1), 0);
	return bm[0];
}

static void test_gpa_dirty_log_two_stage_survives_unmap(void **state)
{
	const uint64_t GPA = 0x400000;
	struct iodma_memory *m;
	struct iodma_domain *d;
	struct iodma_slice s[4];
	char buf[64] = { 0 };
	size_t nr;
	void *r;

	(void)state;
	assert_int_equal(iodma_memory_create(NULL, &m), 0);
	assert_int_equal(iodma_memory_add_region(m, GPA, 16 * PG, 0, &r), 0);
	d = dom_new(m, 0, 0);
	/* IOVA0 + k pages -> GPA + (k + 4) pages. */
	assert_int_equal(iodma_domain_map_gpa(d, IOVA0, 8 * PG, GPA + 4 * PG,
					      IODMA_PERM_RW), 0);
	assert_int_equal(iodma_memory_dirty_log_start(m), 0);

	/* Reads mark nothing. */
	assert_int_equal(iodma_translate(d, IOVA0, 2 * PG, IODMA_PERM_READ, s, 4, &nr, NULL), 0);
	assert_int_equal(iodma_read(d, IOVA0, buf, sizeof(buf)), 0);
	assert_int_equal(gpa_harvest(m, GPA, 16), 0);

	/* A write translation (miss, then hit) marks GPA pages 5-6. */
	iodma_iotlb_flush(d);
	assert_int_equal(iodma_translate(d, IOVA0 + PG, 2 * PG, IODMA_PERM_WRITE, s, 4, &nr, NULL), 0);
	assert_int_equal(gpa_harvest(m, GPA, 16), 3ull << 5);
	assert_int_equal(iodma_translate(d, IOVA0 + PG, 2 * PG, IODMA_PERM_WRITE, s, 4, &nr, NULL), 0);
	assert_int_equal(gpa_harvest(m, GPA, 16), 3ull << 5);

	/* The iterator and iodma_write mark too (GPA pages 11 and 7). */
	{
		struct iodma_xlate_iter it = IODMA_STRUCT_INIT(struct iodma_xlate_iter);
		struct iodma_slice sl;

		assert_int_equal(iodma_xlate_begin(&it, d, IOVA0 + 7 * PG, 8, IODMA_PERM_WRITE), 0);
		assert_int_equal(iodma_xlate_next(&it, &sl), 1);
	}
	assert_int_equal(iodma_write(d, IOVA0 + 3 * PG + 100, buf, sizeof(buf)), 0);

	/* Unmapping the IOVA keeps the guest-physical marks. */
	assert_int_equal(iodma_domain_unmap(d, IOVA0, 8 * PG), 0);
	assert_int_equal(gpa_harvest(m, GPA, 16), (1ull << 11) | (1ull << 7));

	/* Identity (IOMMU disabled): IOVA == GPA. */
	assert_int_equal(iodma_domain_set_enabled(d, false), 0);
	assert_int_equal(iodma_write(d, GPA + 9 * PG, buf, 8), 0);
	assert_int_equal(gpa_harvest(m, GPA, 16), 1ull << 9);

	assert_int_equal(iodma_memory_dirty_log_stop(m), 0);
	iodma_domain_destroy(d);
	iodma_memory_destroy(m);
}

/* A domain without memory maps host VAs: write translations have no
 * guest-physical address and mark no GPA log (and do not crash). */
static void test_gpa_dirty_log_host_va_domain_marks_nothing(void **state)
{
	struct iodma_memory *m;
	struct iodma_domain *d = dom_new(NULL, 0, 0);
	char *p = pages(2);
	char buf[8] = { 1 };
	void *r;

	(void)state;
	assert_int_equal(iodma_memory_create(NULL, &m), 0);
	assert_int_equal(iodma_memory_add_region(m, 0, 4 * PG, 0, &r), 0);
	assert_int_equal(iodma_memory_dirty_log_start(m), 0);
	assert_int_equal(iodma_domain_map(d, IOVA0, 2 * PG, p, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_write(d, IOVA0, buf, sizeof(buf)), 0);
	assert_int_equal(gpa_harvest(m, 0, 4), 0);
	assert_int_equal(iodma_domain_unmap(d, IOVA0, 2 * PG), 0);
	iodma_domain_destroy(d);
	iodma_memory_destroy(m);
	munmap(p, 2 * PG);
}

/* A two-stage domain over 16 pages of guest memory at @gpa, with IOVA0 + k
 * pages -> @gpa + (k + 4) pages for k < 8 (the dirty-log tests). */
static struct iodma_domain *gpa_dom(uint64_t gpa, struct iodma_memory **m)
{
	struct iodma_domain *d;
	void *r;

	assert_int_equal(iodma_memory_create(NULL, m), 0);
	assert_int_equal(iodma_memory_add_region(*m, gpa, 16 * PG, 0, &r), 0);
	d = dom_new(*m, 0, 0);
	assert_int_equal(iodma_domain_map_gpa(d, IOVA0, 8 * PG, gpa + 4 * PG,
					      IODMA_PERM_RW), 0);
	return d;
}

/* The libvfio-user 595 race on the guest-physical log: a write translated
 * (and marked) inside a section, a harvest, then the device's write
 * through the slice it holds: the next harvest must report the page. */
static void test_gpa_dirty_write_across_a_harvest_is_not_lost(void **state)
{
	const uint64_t GPA = 0x400000;
	struct iodma_memory *m;
	struct iodma_domain *d;
	struct iodma_slice s[2];
	static uint8_t shared_log[4096];
	size_t nr;

	(void)state;
	d = gpa_dom(GPA, &m);
	assert_int_equal(iodma_memory_dirty_log_start(m), 0);

	iodma_access_begin();
	assert_int_equal(iodma_translate(d, IOVA0 + PG, 8, IODMA_PERM_WRITE, s, 2, &nr, NULL), 0);
	assert_int_equal(gpa_harvest(m, GPA, 16), 1ull << 5); /* sent, clean */
	memset(s[0].va, 0x5a, 8);                             /* the write */
	iodma_access_end();
	assert_int_equal(gpa_harvest(m, GPA, 16), 1ull << 5); /* not lost */
	assert_int_equal(gpa_harvest(m, GPA, 16), 0);

	/* No harvest across the section: reported once, not twice. */
	iodma_access_begin();
	assert_int_equal(iodma_translate(d, IOVA0 + 2 * PG, 8, IODMA_PERM_WRITE, s, 2, &nr, NULL), 0);
	memset(s[0].va, 0x5b, 8);
	iodma_access_end();
	assert_int_equal(gpa_harvest(m, GPA, 16), 1ull << 6);
	assert_int_equal(gpa_harvest(m, GPA, 16), 0);

	/* A shared log (vhost-user's) is cleared by its owner with no word to
	 * watch: the section's end marks its write ranges again. */
	assert_int_equal(iodma_memory_dirty_log_stop(m), 0);
	assert_int_equal(iodma_memory_dirty_log_start_shared(m, shared_log,
							     sizeof(shared_log)), 0);
	iodma_access_begin();
	assert_int_equal(iodma_translate(d, IOVA0 + 3 * PG, 8, IODMA_PERM_WRITE, s, 2, &nr, NULL), 0);
	{
		uint64_t page = (GPA + 7 * PG) >> 12;

		assert_true(__atomic_load_n(&shared_log[page / 8], __ATOMIC_SEQ_CST) &
			    (1u << (page % 8)));
		__atomic_store_n(&shared_log[page / 8], 0, __ATOMIC_SEQ_CST); /* owner harvests */
		memset(s[0].va, 0x5c, 8);
		iodma_access_end();
		assert_true(__atomic_load_n(&shared_log[page / 8], __ATOMIC_SEQ_CST) &
			    (1u << (page % 8)));
	}
	assert_int_equal(iodma_memory_dirty_log_stop(m), 0);
	iodma_domain_destroy(d);
	iodma_memory_destroy(m);
}

/*
 * A log started while a section is open (a migration's first step) still
 * gets the writes that section makes through slices it took before: the
 * full copy that follows the start may send the page before the write
 * lands, and nothing sends it again unless the section's end marks it.
 * Both kinds of log: the memory's own (harvested) and a shared one
 * (vhost-user SET_LOG_BASE).  A section that ends before the start marks
 * nothing (its writes are in the full copy).
 */
static void test_gpa_dirty_log_started_inside_a_section(void **state)
{
	const uint64_t GPA = 0x400000;
	const uint64_t page = (GPA + 5 * PG) >> 12;
	struct iodma_memory *m;
	struct iodma_domain *d;
	struct iodma_slice s[2];
	static uint8_t shared_log[4096];
	size_t nr;

	(void)state;
	d = gpa_dom(GPA, &m);

	iodma_access_begin();
	assert_int_equal(iodma_translate(d, IOVA0 + PG, 8, IODMA_PERM_WRITE, s, 2, &nr, NULL), 0);
	assert_int_equal(iodma_memory_dirty_log_start(m), 0);
	assert_int_equal(gpa_harvest(m, GPA, 16), 0);	/* the full copy */
	memset(s[0].va, 0x5a, 8);			/* the write */
	iodma_access_end();
	assert_int_equal(gpa_harvest(m, GPA, 16), 1ull << 5);
	assert_int_equal(iodma_memory_dirty_log_stop(m), 0);

	memset(shared_log, 0, sizeof(shared_log));
	iodma_access_begin();
	assert_int_equal(iodma_translate(d, IOVA0 + PG, 8, IODMA_PERM_WRITE, s, 2, &nr, NULL), 0);
	assert_int_equal(iodma_memory_dirty_log_start_shared(m, shared_log,
							     sizeof(shared_log)), 0);
	memset(s[0].va, 0x5b, 8);
	iodma_access_end();
	assert_true(__atomic_load_n(&shared_log[page / 8], __ATOMIC_SEQ_CST) &
		    (1u << (page % 8)));
	assert_int_equal(iodma_memory_dirty_log_stop(m), 0);

	iodma_access_begin();
	assert_int_equal(iodma_translate(d, IOVA0 + PG, 8, IODMA_PERM_WRITE, s, 2, &nr, NULL), 0);
	memset(s[0].va, 0x5c, 8);
	iodma_access_end();
	assert_int_equal(iodma_memory_dirty_log_start(m), 0);
	assert_int_equal(gpa_harvest(m, GPA, 16), 0);
	assert_int_equal(iodma_memory_dirty_log_stop(m), 0);
	iodma_domain_destroy(d);
	iodma_memory_destroy(m);
}

/* Growth rule of common.h for the output struct iodma_xlate_stats and the
 * iterator state struct iodma_xlate_iter. */
static int get_xlate_stats(void *ctx, void *out)
{
	return iodma_xlate_get_stats(ctx, out);
}

static void test_xlate_stats_and_iter_growth_rule(void **state)
{
	struct iodma_domain *d = dom_new(NULL, 0, 0);
	struct iodma_xlate_stats st = IODMA_STRUCT_INIT(struct iodma_xlate_stats);
	struct {
		struct iodma_xlate_iter it;
		unsigned char newer[16];
	} w;
	struct iodma_xlate_iter it, copy;
	struct iodma_slice s;
	char *a = pages(1);

	(void)state;
	assert_int_equal(iodma_domain_map(d, IOVA0, PG, a, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_check_range(d, IOVA0, PG, IODMA_PERM_READ), 0);
	check_output_growth(sizeof(struct iodma_xlate_stats), get_xlate_stats, d);
	assert_int_equal(iodma_xlate_get_stats(d, &st), 0);
	assert_int_equal(iodma_xlate_get_stats(NULL, &st), -EINVAL);
	assert_int_equal(iodma_xlate_get_stats(d, NULL), -EINVAL);

	/* An iterator smaller than the library's state: -EINVAL, untouched. */
	memset(&it, 0x5a, sizeof(it));
	it.size = sizeof(it) - 1;
	copy = it;
	assert_int_equal(iodma_xlate_begin(&it, d, IOVA0, PG, IODMA_PERM_READ),
			 -EINVAL);
	assert_memory_equal(&it, &copy, sizeof(it));
	it.size = 0;
	assert_int_equal(iodma_xlate_begin(&it, d, IOVA0, PG, IODMA_PERM_READ),
			 -EINVAL);
	/* A newer caller's larger iterator works; its size is kept. */
	memset(&w, 0x5a, sizeof(w));
	w.it.size = sizeof(w);
	assert_int_equal(iodma_xlate_begin(&w.it, d, IOVA0, PG, IODMA_PERM_READ), 0);
	assert_int_equal(w.it.size, sizeof(w));
	assert_int_equal(iodma_xlate_next(&w.it, &s), 1);
	assert_ptr_equal(s.va, a);
	assert_int_equal(s.len, PG);
	assert_int_equal(iodma_xlate_next(&w.it, &s), 0);
	assert_int_equal(iodma_domain_unmap(d, IOVA0, PG), 0);
	iodma_domain_destroy(d);
	munmap(a, PG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_xlate_stats_and_iter_growth_rule),
		cmocka_unit_test(test_gpa_dirty_log_two_stage_survives_unmap),
		cmocka_unit_test(test_gpa_dirty_log_host_va_domain_marks_nothing),
		cmocka_unit_test(test_gpa_dirty_write_across_a_harvest_is_not_lost),
		cmocka_unit_test(test_gpa_dirty_log_started_inside_a_section),
		cmocka_unit_test(test_slices_add_up_and_split_where_host_discontiguous),
		cmocka_unit_test(test_error_stops_at_first_unmapped_byte_with_hole_subrange),
		cmocka_unit_test(test_permission_error_covers_the_mapping_part),
		cmocka_unit_test(test_check_range_answers_without_recording_faults),
		cmocka_unit_test(test_count_zero_is_an_empty_iteration_and_bad_args_einval),
		cmocka_unit_test(test_every_translation_walks_the_page_table),
		cmocka_unit_test(test_iotlb_is_invalidated_before_unmap_returns),
		cmocka_unit_test(test_unmap_leaves_other_ranges_translating),
		cmocka_unit_test(test_iotlb_flush_is_counted_and_changes_nothing),
		cmocka_unit_test(test_two_stage_composes_and_follows_both_generations),
		cmocka_unit_test(test_disabled_domain_is_identity_over_memory),
		cmocka_unit_test(test_translate_one_is_translate_with_one_slice),
		cmocka_unit_test(test_translate_one_follows_set_enabled),
		cmocka_unit_test(test_resolver_installs_a_mapping_on_miss),
		cmocka_unit_test(test_fault_log_overflow_drops_oldest_and_counts),
		cmocka_unit_test(test_read_write_check_all_first_and_copy_nothing_on_error),
		cmocka_unit_test(test_fd_only_mapping_has_no_host_address),
		cmocka_unit_test(test_dirty_log_marks_writes_not_reads_and_get_clears),
		cmocka_unit_test(test_dirty_log_covers_high_iovas_across_leaves),
		cmocka_unit_test(test_dirty_start_fail_nth_and_lost_marks_report_all),
		cmocka_unit_test(test_bad_iotlb_size_is_einval),
		cmocka_unit_test(test_domain_create_fail_nth_covers_xlate_init),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
