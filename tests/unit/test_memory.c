/* SPDX-License-Identifier: MIT */
/* Unit tests: guest/physical memory regions (iodma/memory.h): add, remove,
 * lookups, translation into host slices, copies, fds, fail-nth. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <iodma.h>
#include <iodma/test-hooks.h> /* fault injection: tests only */

#include "memory_priv.h"
#include "util.h"

#define PG ((uint64_t)iodma_page_size())

static struct iodma_memory *mem_new(void)
{
	struct iodma_memory *m = NULL;

	assert_int_equal(iodma_memory_create(NULL, &m), 0);
	assert_non_null(m);
	return m;
}

static size_t nr_regions(const struct iodma_memory *m)
{
	return iodma_memory_get_regions(m, NULL, 0);
}

static void test_create_rejects_bad_opts(void **state)
{
	struct iodma_memory_opts o = IODMA_OPTS_INIT(struct iodma_memory_opts);
	struct iodma_memory *m = (void *)0x1;

	(void)state;
	assert_int_equal(iodma_memory_create(NULL, NULL), -EINVAL);
	o.flags = 1;
	assert_int_equal(iodma_memory_create(&o, &m), -EINVAL);
	assert_ptr_equal(m, (void *)0x1);
	o.flags = 0;
	o.size = 1;
	assert_int_equal(iodma_memory_create(&o, &m), -EINVAL);
	assert_ptr_equal(m, (void *)0x1);
	o.size = sizeof(o);
	assert_int_equal(iodma_memory_create(&o, &m), 0);
	assert_int_equal(nr_regions(m), 0);
	assert_int_equal(memory_generation(m) % 2, 0);
	iodma_memory_destroy(m);
	iodma_memory_destroy(NULL);
}

static void test_create_fail_nth_returns_enomem_and_leaves_out(void **state)
{
	struct iodma_memory *m;
	unsigned long n;
	int ret;

	(void)state;
	for (n = 1;; n++) {
		m = (void *)0x1;
		iodma_test_fail_alloc(n);
		ret = iodma_memory_create(NULL, &m);
		if (ret == 0)
			break;
		assert_int_equal(ret, -ENOMEM);
		assert_ptr_equal(m, (void *)0x1);
	}
	iodma_test_fail_alloc(0);
	assert_true(n >= 2);
	iodma_memory_destroy(m);
}

static void test_add_region_is_zeroed_sorted_and_memfd_backed(void **state)
{
	struct iodma_memory *m = mem_new();
	struct iodma_region_info r[4];
	void *va1, *va2, *va3;
	uint64_t g0 = memory_generation(m);

	(void)state;
	assert_int_equal(iodma_memory_add_region(m, 0x100000, 4 * PG, 0, &va1), 0);
	assert_int_equal(iodma_memory_add_region(m, 0x0, 2 * PG, IODMA_REGION_ANON, &va2), 0);
	assert_int_equal(iodma_memory_add_region(m, 0x200000, PG, 0, &va3), 0);
	assert_int_equal(memory_generation(m), g0 + 6);
	for (uint64_t i = 0; i < 4 * PG; i++)
		assert_int_equal(((unsigned char *)va1)[i], 0);

	assert_int_equal(iodma_memory_get_regions(m, r, 4), 3);
	assert_int_equal(r[0].gpa, 0);
	assert_ptr_equal(r[0].va, va2);
	assert_int_equal(r[0].fd, -1);       /* anonymous: no fd */
	assert_true(r[0].owned);
	assert_int_equal(r[1].gpa, 0x100000);
	assert_int_equal(r[1].len, 4 * PG);
	assert_true(r[1].fd >= 0);           /* memfd by default */
	assert_int_equal(r[1].offset, 0);
	assert_int_equal(r[2].gpa, 0x200000);
	/* A short array gets only what fits, the count is still the total. */
	memset(r, 0, sizeof(r));
	assert_int_equal(iodma_memory_get_regions(m, r, 1), 3);
	assert_int_equal(r[0].gpa, 0);
	assert_int_equal(r[1].len, 0);
	iodma_memory_destroy(m);
}

static void test_memfd_region_fd_and_va_see_the_same_bytes(void **state)
{
	struct iodma_memory *m = mem_new();
	struct iodma_region_info ri;
	char buf[16] = { 0 };
	void *va;

	(void)state;
	assert_int_equal(iodma_memory_add_region(m, 0x10000, 2 * PG, 0, &va), 0);
	assert_int_equal(iodma_memory_find(m, 0x10000 + PG + 5, &ri), 0);
	assert_true(ri.fd >= 0);
	assert_int_equal(pwrite(ri.fd, "through-the-fd", 15, (off_t)(PG + 5)), 15);
	assert_string_equal((char *)va + PG + 5, "through-the-fd");
	assert_int_equal(iodma_memory_read(m, 0x10000 + PG + 5, buf, 15), 0);
	assert_string_equal(buf, "through-the-fd");
	iodma_memory_destroy(m);
}

static void test_add_region_rejects_bad_arguments_unchanged(void **state)
{
	struct iodma_memory *m = mem_new();
	uint64_t g = memory_generation(m);
	void *va = (void *)0x1;

	(void)state;
	assert_int_equal(iodma_memory_add_region(m, 0x1000 + 1, PG, 0, &va), -EINVAL);
	assert_int_equal(iodma_memory_add_region(m, 0, 0, 0, &va), -EINVAL);
	assert_int_equal(iodma_memory_add_region(m, 0, PG + 1, 0, &va), -EINVAL);
	assert_int_equal(iodma_memory_add_region(m, UINT64_MAX - PG + 1, 2 * PG, 0, &va), -EINVAL);
	assert_int_equal(iodma_memory_add_region(m, 0, PG, 0x80, &va), -EINVAL);
	assert_int_equal(iodma_memory_add_region(m, 0, PG,
		IODMA_REGION_ANON | IODMA_REGION_HUGETLB, &va), -EINVAL);
	/* HUGETLB wants 2 MiB multiples. */
	assert_int_equal(iodma_memory_add_region(m, 0, PG, IODMA_REGION_HUGETLB, &va), -EINVAL);
	assert_int_equal(iodma_memory_add_region(NULL, 0, PG, 0, &va), -EINVAL);
	assert_ptr_equal(va, (void *)0x1);
	assert_int_equal(nr_regions(m), 0);
	assert_int_equal(memory_generation(m), g);
	iodma_memory_destroy(m);
}

static void test_add_region_host_rejects_bad_arguments_unchanged(void **state)
{
	struct iodma_memory *m = mem_new();
	char *buf = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	(void)state;
	assert_true(buf != MAP_FAILED);
	assert_int_equal(iodma_memory_add_region_host(m, 0, PG, NULL, -1, 0), -EINVAL);
	assert_int_equal(iodma_memory_add_region_host(m, 0, PG, buf + 8, -1, 0), -EINVAL);
	assert_int_equal(iodma_memory_add_region_host(m, 8, PG, buf, -1, 0), -EINVAL);
	assert_int_equal(iodma_memory_add_region_host(m, 0, PG - 8, buf, -1, 0), -EINVAL);
	assert_int_equal(iodma_memory_add_region_host(m, 0, 0, buf, -1, 0), -EINVAL);
	assert_int_equal(iodma_memory_add_region_host(m, 0, PG, buf, 3, 8), -EINVAL);
	assert_int_equal(iodma_memory_add_region_host(m, 0, PG, buf, -7, 0), -EINVAL);
	assert_int_equal(nr_regions(m), 0);
	/* Offset is ignored without an fd. */
	assert_int_equal(iodma_memory_add_region_host(m, 0, PG, buf, -1, 8), 0);
	assert_int_equal(nr_regions(m), 1);
	iodma_memory_destroy(m);
	/* Caller-owned memory is not freed by the library. */
	buf[0] = 1;
	munmap(buf, 4 * PG);
}

static void test_overlapping_region_is_eexist_unchanged(void **state)
{
	struct iodma_memory *m = mem_new();
	char *buf = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct iodma_region_info r[2];
	uint64_t g;

	(void)state;
	assert_int_equal(iodma_memory_add_region(m, 4 * PG, 4 * PG, 0, NULL), 0);
	g = memory_generation(m);
	assert_int_equal(iodma_memory_add_region(m, 4 * PG, PG, 0, NULL), -EEXIST);
	assert_int_equal(iodma_memory_add_region(m, 7 * PG, 2 * PG, 0, NULL), -EEXIST);
	assert_int_equal(iodma_memory_add_region(m, 2 * PG, 3 * PG, 0, NULL), -EEXIST);
	assert_int_equal(iodma_memory_add_region(m, 0, 16 * PG, 0, NULL), -EEXIST);
	assert_int_equal(iodma_memory_add_region_host(m, 5 * PG, PG, buf, -1, 0), -EEXIST);
	assert_int_equal(memory_generation(m), g);
	assert_int_equal(iodma_memory_get_regions(m, r, 2), 1);
	assert_int_equal(r[0].gpa, 4 * PG);
	assert_int_equal(r[0].len, 4 * PG);
	/* Touching (adjacent) regions are fine. */
	assert_int_equal(iodma_memory_add_region_host(m, 8 * PG, PG, buf, -1, 0), 0);
	assert_int_equal(iodma_memory_add_region(m, 3 * PG, PG, 0, NULL), 0);
	assert_int_equal(nr_regions(m), 3);
	iodma_memory_destroy(m);
	munmap(buf, 4 * PG);
}

static void test_translate_splits_at_region_ends_and_lengths_add_up(void **state)
{
	struct iodma_memory *m = mem_new();
	struct iodma_slice s[4];
	void *a, *b, *c;
	size_t nr = 99;

	(void)state;
	assert_int_equal(iodma_memory_add_region(m, 0, 2 * PG, 0, &a), 0);
	assert_int_equal(iodma_memory_add_region(m, 2 * PG, PG, 0, &b), 0);
	assert_int_equal(iodma_memory_add_region(m, 3 * PG, 4 * PG, 0, &c), 0);

	assert_int_equal(iodma_memory_translate(m, PG + 100, 3 * PG, s, 4, &nr, NULL), 0);
	assert_int_equal(nr, 3);
	assert_ptr_equal(s[0].va, (char *)a + PG + 100);
	assert_int_equal(s[0].len, PG - 100);
	assert_ptr_equal(s[1].va, b);
	assert_int_equal(s[1].len, PG);
	assert_ptr_equal(s[2].va, c);
	assert_int_equal(s[2].len, PG + 100);
	assert_int_equal(s[0].len + s[1].len + s[2].len, 3 * PG);

	/* Inside one region: one slice. */
	assert_int_equal(iodma_memory_translate(m, 3 * PG + 1, 8, s, 4, &nr, NULL), 0);
	assert_int_equal(nr, 1);
	assert_ptr_equal(s[0].va, (char *)c + 1);
	assert_int_equal(s[0].len, 8);

	/* Too few slices: -E2BIG with max written. */
	assert_int_equal(iodma_memory_translate(m, 0, 7 * PG, s, 2, &nr, NULL), -E2BIG);
	assert_int_equal(nr, 2);
	assert_int_equal(s[1].len, PG);
	iodma_memory_destroy(m);
}

static void test_translate_hole_is_efault_with_the_hole_subrange(void **state)
{
	struct iodma_memory *m = mem_new();
	struct iodma_fault f;
	struct iodma_slice s[4];
	size_t nr;
	void *a;

	(void)state;
	assert_int_equal(iodma_memory_add_region(m, 0, 2 * PG, 0, &a), 0);
	assert_int_equal(iodma_memory_add_region(m, 5 * PG, PG, 0, NULL), 0);

	/* Hole from 2 PG to 5 PG; request ends past it. */
	assert_int_equal(iodma_memory_translate(m, PG, 5 * PG, s, 4, &nr, &f), -EFAULT);
	assert_int_equal(nr, 1);
	assert_ptr_equal(s[0].va, (char *)a + PG);
	assert_int_equal(s[0].len, PG);
	assert_int_equal(f.iova, 2 * PG);
	assert_int_equal(f.len, 3 * PG);
	assert_int_equal(f.reason, IODMA_FAULT_NOT_MAPPED);

	/* Request ending inside the hole: fault stops at the request end. */
	assert_int_equal(iodma_memory_translate(m, 3 * PG, PG, s, 4, &nr, &f), -EFAULT);
	assert_int_equal(nr, 0);
	assert_int_equal(f.iova, 3 * PG);
	assert_int_equal(f.len, PG);

	/* Past the last region. */
	assert_int_equal(iodma_memory_translate(m, 6 * PG, 10, s, 4, &nr, &f), -EFAULT);
	assert_int_equal(f.iova, 6 * PG);
	assert_int_equal(f.len, 10);

	/* Bad ranges. */
	assert_int_equal(iodma_memory_translate(m, 0, 0, s, 4, &nr, &f), -EINVAL);
	assert_int_equal(iodma_memory_translate(m, UINT64_MAX, 2, s, 4, &nr, &f), -EINVAL);
	assert_int_equal(iodma_memory_translate(m, 0, 1, NULL, 4, &nr, &f), -EINVAL);
	iodma_memory_destroy(m);
}

static void test_read_write_cross_regions_and_efault_copies_nothing(void **state)
{
	struct iodma_memory *m = mem_new();
	char *src = malloc(3 * PG), *dst = malloc(3 * PG);
	void *a, *b;

	(void)state;
	assert_int_equal(iodma_memory_add_region(m, 0, 2 * PG, 0, &a), 0);
	assert_int_equal(iodma_memory_add_region(m, 2 * PG, 2 * PG, IODMA_REGION_ANON, &b), 0);
	for (size_t i = 0; i < 3 * PG; i++)
		src[i] = (char)(i * 7 + 3);
	assert_int_equal(iodma_memory_write(m, PG / 2, src, 3 * PG), 0);
	assert_memory_equal((char *)a + PG / 2, src, 2 * PG - PG / 2);
	assert_memory_equal(b, src + 2 * PG - PG / 2, PG + PG / 2);
	memset(dst, 0, 3 * PG);
	assert_int_equal(iodma_memory_read(m, PG / 2, dst, 3 * PG), 0);
	assert_memory_equal(dst, src, 3 * PG);

	/* Crossing the end of memory: -EFAULT, nothing copied either way. */
	memset(dst, 0x5a, 3 * PG);
	assert_int_equal(iodma_memory_read(m, 2 * PG, dst, 3 * PG), -EFAULT);
	for (size_t i = 0; i < 3 * PG; i++)
		assert_int_equal((unsigned char)dst[i], 0x5a);
	memset(src, 0x11, 3 * PG);
	assert_int_equal(iodma_memory_write(m, 2 * PG, src, 3 * PG), -EFAULT);
	assert_int_equal(((unsigned char *)b)[0], (unsigned char)(((2 * PG - PG / 2) * 7 + 3) & 0xff));
	assert_int_equal(iodma_memory_read(m, 0, dst, 0), -EINVAL);
	assert_int_equal(iodma_memory_write(m, UINT64_MAX, src, 2), -EINVAL);
	assert_int_equal(iodma_memory_read(m, 0, NULL, 1), -EINVAL);
	free(src);
	free(dst);
	iodma_memory_destroy(m);
}

static void test_find_and_remove_region(void **state)
{
	struct iodma_memory *m = mem_new();
	struct iodma_region_info ri;
	uint64_t g;

	(void)state;
	assert_int_equal(iodma_memory_add_region(m, 0x10000, 2 * PG, 0, NULL), 0);
	assert_int_equal(iodma_memory_add_region(m, 0x40000, 2 * PG, 0, NULL), 0);
	assert_int_equal(iodma_memory_find(m, 0x10000 + 2 * PG - 1, &ri), 0);
	assert_int_equal(ri.gpa, 0x10000);
	assert_int_equal(iodma_memory_find(m, 0x10000 + 2 * PG, &ri), -ENOENT);
	assert_int_equal(iodma_memory_find(m, 0, &ri), -ENOENT);

	g = memory_generation(m);
	/* Only the region's first address names it. */
	assert_int_equal(iodma_memory_remove_region(m, 0x10000 + PG), -ENOENT);
	assert_int_equal(iodma_memory_remove_region(m, 0x20000), -ENOENT);
	assert_int_equal(memory_generation(m), g);
	assert_int_equal(nr_regions(m), 2);

	assert_int_equal(iodma_memory_remove_region(m, 0x10000), 0);
	assert_int_equal(memory_generation(m), g + 2);
	assert_int_equal(iodma_memory_find(m, 0x10000, &ri), -ENOENT);
	assert_int_equal(iodma_memory_find(m, 0x40000, &ri), 0);
	assert_int_equal(iodma_memory_remove_region(m, 0x10000), -ENOENT);
	assert_int_equal(iodma_memory_remove_region(m, 0x40000), 0);
	assert_int_equal(nr_regions(m), 0);
	/* The space can be used again. */
	assert_int_equal(iodma_memory_add_region(m, 0x10000, 8 * PG, 0, NULL), 0);
	iodma_memory_destroy(m);
}

static void test_remove_never_allocates(void **state)
{
	struct iodma_memory *m = mem_new();
	const uint64_t order[] = { 3, 0, 5, 1, 4, 2 };

	(void)state;
	for (uint64_t i = 0; i < 6; i++)
		assert_int_equal(iodma_memory_add_region(m, i * PG, PG, IODMA_REGION_ANON, NULL), 0);
	for (size_t k = 0; k < 6; k++) {
		struct iodma_region_info ri;

		iodma_test_fail_alloc(1); /* any allocation would fail */
		assert_int_equal(iodma_memory_remove_region(m, order[k] * PG), 0);
		iodma_test_fail_alloc(0);
		assert_int_equal(nr_regions(m), 5 - k);
		assert_int_equal(iodma_memory_find(m, order[k] * PG, &ri), -ENOENT);
		for (size_t j = k + 1; j < 6; j++)
			assert_int_equal(iodma_memory_find(m, order[j] * PG, &ri), 0);
	}
	iodma_memory_destroy(m);
}

static void test_add_fail_nth_returns_enomem_unchanged(void **state)
{
	struct iodma_memory *m = mem_new();
	char *buf = mmap(NULL, PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	unsigned long n;
	int ret;

	(void)state;
	assert_int_equal(iodma_memory_add_region(m, 0, PG, 0, NULL), 0);
	for (int which = 0; which < 2; which++) {
		size_t before = nr_regions(m);
		uint64_t g = memory_generation(m);

		for (n = 1;; n++) {
			void *va = (void *)0x1;

			iodma_test_fail_alloc(n);
			if (which == 0)
				ret = iodma_memory_add_region(m, 4 * PG, PG, 0, &va);
			else
				ret = iodma_memory_add_region_host(m, 8 * PG, PG, buf, -1, 0);
			if (ret == 0)
				break;
			assert_int_equal(ret, -ENOMEM);
			assert_ptr_equal(va, (void *)0x1);
			assert_int_equal(nr_regions(m), before);
			assert_int_equal(memory_generation(m), g);
		}
		iodma_test_fail_alloc(0);
		assert_true(n >= 2);
		assert_int_equal(nr_regions(m), before + 1);
	}
	iodma_memory_destroy(m);
	munmap(buf, PG);
}

/* ---- GPA dirty log --------------------------------------------------------- */

/* Harvest [gpa, gpa + pages * PG) into a fresh bitmap. */
static uint64_t harvest(struct iodma_memory *m, uint64_t gpa, uint64_t pages)
{
	uint64_t bm[4] = { 0 };

	assert_true(pages <= 64);
	assert_int_equal(iodma_memory_dirty_get_and_clear(m, gpa, pages * PG, bm, 4), 0);
	return bm[0];
}

static void test_dirty_log_errors_change_nothing(void **state)
{
	struct iodma_memory *m = mem_new();
	uint64_t bm[2] = { 0 };
	void *va;

	(void)state;
	assert_int_equal(iodma_memory_add_region(m, 0, 4 * PG, 0, &va), 0);
	assert_int_equal(iodma_memory_dirty_log_start(NULL), -EINVAL);
	assert_int_equal(iodma_memory_dirty_log_stop(NULL), -EINVAL);
	/* Off: stop and harvest refuse, marking succeeds and does nothing. */
	assert_int_equal(iodma_memory_dirty_log_stop(m), -EINVAL);
	assert_int_equal(iodma_memory_dirty_get_and_clear(m, 0, PG, bm, 2), -EINVAL);
	assert_int_equal(iodma_memory_mark_dirty(m, 0, PG), 0);

	assert_int_equal(iodma_memory_dirty_log_start(m), 0);
	assert_int_equal(iodma_memory_dirty_log_start(m), -EALREADY);
	assert_int_equal(iodma_memory_mark_dirty(m, PG, PG), 0);
	/* Bad ranges, alignment, bitmap: -EINVAL / -ENOSPC, nothing cleared. */
	assert_int_equal(iodma_memory_mark_dirty(NULL, 0, PG), -EINVAL);
	assert_int_equal(iodma_memory_mark_dirty(m, 0, 0), -EINVAL);
	assert_int_equal(iodma_memory_mark_dirty(m, UINT64_MAX, 2), -EINVAL);
	assert_int_equal(iodma_memory_mark_dirty(m, 3 * PG, 2 * PG), -EFAULT);
	assert_int_equal(iodma_memory_dirty_get_and_clear(NULL, 0, PG, bm, 2), -EINVAL);
	assert_int_equal(iodma_memory_dirty_get_and_clear(m, 0, PG, NULL, 2), -EINVAL);
	assert_int_equal(iodma_memory_dirty_get_and_clear(m, 8, PG, bm, 2), -EINVAL);
	assert_int_equal(iodma_memory_dirty_get_and_clear(m, 0, PG + 8, bm, 2), -EINVAL);
	assert_int_equal(iodma_memory_dirty_get_and_clear(m, 0, 0, bm, 2), -EINVAL);
	assert_int_equal(iodma_memory_dirty_get_and_clear(m, UINT64_MAX - PG + 1, 2 * PG,
							  bm, 2), -EINVAL);
	assert_int_equal(iodma_memory_dirty_get_and_clear(m, 0, 65 * PG, bm, 1), -ENOSPC);
	/* The -EFAULT mark marked nothing (page 3 clean); page 1 survived the
	 * refused calls. */
	assert_int_equal(harvest(m, 0, 4), 1ull << 1);
	assert_int_equal(iodma_memory_dirty_log_stop(m), 0);
	assert_int_equal(iodma_memory_dirty_log_stop(m), -EINVAL);
	iodma_memory_destroy(m);
}

static void test_dirty_log_start_fail_nth_leaves_it_off(void **state)
{
	struct iodma_memory *m = mem_new();
	int ret = -ENOMEM;
	void *va;

	(void)state;
	assert_int_equal(iodma_memory_add_region(m, 0, 4 * PG, 0, &va), 0);
	assert_int_equal(iodma_memory_add_region(m, 16 * PG, 4 * PG, 0, &va), 0);
	assert_int_equal(iodma_memory_add_region(m, 32 * PG, 4 * PG, 0, &va), 0);
	for (unsigned long n = 1; ret == -ENOMEM && n < 16; n++) {
		iodma_test_fail_alloc(n);
		ret = iodma_memory_dirty_log_start(m);
		iodma_test_fail_alloc(0);
		if (ret == -ENOMEM) {
			uint64_t bm[1];

			/* Off, with no bitmap left behind (valgrind checks). */
			assert_int_equal(iodma_memory_dirty_get_and_clear(m, 0, PG, bm, 1),
					 -EINVAL);
		}
	}
	assert_int_equal(ret, 0);
	/* A region added while the log runs cannot be added without its
	 * bitmap: -ENOMEM, nothing added. */
	iodma_test_fail_alloc(1);
	assert_int_equal(iodma_memory_add_region_host(m, 64 * PG, PG, va, -1, 0), -ENOMEM);
	iodma_test_fail_alloc(0);
	assert_int_equal(nr_regions(m), 3);
	assert_int_equal(iodma_memory_dirty_log_stop(m), 0);
	iodma_memory_destroy(m);
}

static void test_dirty_log_marks_writes_by_gpa_across_regions(void **state)
{
	struct iodma_memory *m = mem_new();
	char buf[3 * 4096 + 8];
	void *va;

	(void)state;
	/* Regions at pages 1-2 and 4-5 (hole at 3): the harvest window starts
	 * at page 0, so region bits are shifted into place. */
	assert_int_equal(iodma_memory_add_region(m, PG, 2 * PG, 0, &va), 0);
	assert_int_equal(iodma_memory_add_region(m, 4 * PG, 2 * PG, 0, &va), 0);
	assert_int_equal(iodma_memory_dirty_log_start(m), 0);
	assert_int_equal(harvest(m, 0, 8), 0);

	/* iodma_memory_write marks the pages it wrote, here pages 2..2. */
	memset(buf, 7, sizeof(buf));
	assert_int_equal(iodma_memory_write(m, 2 * PG + 8, buf, 16), 0);
	/* Reads mark nothing. */
	assert_int_equal(iodma_memory_read(m, PG, buf, PG), 0);
	assert_int_equal(harvest(m, 0, 8), 1ull << 2);
	assert_int_equal(harvest(m, 0, 8), 0); /* cleared */

	/* A mark spanning the hole is -EFAULT; pieces inside regions work. */
	assert_int_equal(iodma_memory_mark_dirty(m, 2 * PG, 3 * PG), -EFAULT);
	assert_int_equal(iodma_memory_mark_dirty(m, 2 * PG - 1, 2), 0);
	assert_int_equal(iodma_memory_mark_dirty(m, 5 * PG, PG), 0);
	/* A window that starts inside a region and ends in a hole. */
	assert_int_equal(harvest(m, 2 * PG, 6), (1ull << 0) | (1ull << 3));
	assert_int_equal(harvest(m, PG, 1), 1); /* page 1 was left for it */
	assert_int_equal(harvest(m, 0, 8), 0);

	/* A region added while logging is logged; a removed one takes its
	 * marks with it. */
	assert_int_equal(iodma_memory_add_region(m, 7 * PG, PG, 0, &va), 0);
	assert_int_equal(iodma_memory_mark_dirty(m, 7 * PG, PG), 0);
	assert_int_equal(iodma_memory_mark_dirty(m, 4 * PG, PG), 0);
	assert_int_equal(iodma_memory_remove_region(m, 4 * PG), 0);
	assert_int_equal(harvest(m, 0, 8), 1ull << 7);

	/* Stop drops the marks; a restart begins clean. */
	assert_int_equal(iodma_memory_mark_dirty(m, PG, PG), 0);
	assert_int_equal(iodma_memory_dirty_log_stop(m), 0);
	assert_int_equal(iodma_memory_dirty_log_start(m), 0);
	assert_int_equal(harvest(m, 0, 8), 0);
	/* Destroy while logging frees the bitmaps (valgrind checks). */
	assert_int_equal(iodma_memory_mark_dirty(m, PG, PG), 0);
	iodma_memory_destroy(m);
}

static void test_dirty_log_large_region_words(void **state)
{
	struct iodma_memory *m = mem_new();
	uint64_t bm[4];
	void *va;

	(void)state;
	/* 200 pages starting at page 3: bits cross region words and output
	 * words at different offsets. */
	assert_int_equal(iodma_memory_add_region(m, 3 * PG, 200 * PG, IODMA_REGION_ANON, &va), 0);
	assert_int_equal(iodma_memory_dirty_log_start(m), 0);
	assert_int_equal(iodma_memory_mark_dirty(m, 60 * PG, 10 * PG), 0);   /* 60..69 */
	assert_int_equal(iodma_memory_mark_dirty(m, 202 * PG, PG), 0);       /* last */
	assert_int_equal(iodma_memory_dirty_get_and_clear(m, 64 * PG, 192 * PG, bm, 3), 0);
	/* Window page 0 = page 64: pages 64..69 -> bits 0..5; 202 -> 138. */
	assert_int_equal(bm[0], 0x3full);
	assert_int_equal(bm[1], 0);
	assert_int_equal(bm[2], 1ull << (138 - 128));
	/* Pages 60..63 were outside that window and are still set. */
	assert_int_equal(iodma_memory_dirty_get_and_clear(m, 0, 256 * PG, bm, 4), 0);
	assert_int_equal(bm[0], 0xfull << 60);
	assert_int_equal(bm[1] | bm[2] | bm[3], 0);
	iodma_memory_destroy(m);
}

/* Migration, as a VMM does it: start the log, copy everything once, then
 * send the pages each harvest reports while a writer keeps writing; after
 * the writer stops, a last harvest.  The copy must equal the memory: a
 * write that no harvest reported would show as a difference. */
#define MIG_PAGES 64

struct mig_writer {
	struct iodma_memory *m;
	atomic_bool stop;
	atomic_ulong writes;
	struct iodma_domain *d;  /* set: every write is a device write through
				  * this two-stage domain (IOVA = MIG_IOVA + gpa) */
};

#define MIG_IOVA 0x10000000ull

static void *mig_write_loop(void *arg)
{
	struct mig_writer *w = arg;
	uint64_t x = 88172645463325252ull;

	while (!atomic_load(&w->stop)) {
		uint64_t v, page, off;

		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		page = x % MIG_PAGES;
		off = (x >> 32) % (PG / 8) * 8;
		v = x;
		if (w->d) {
			/* A device model: translate for write inside a section,
			 * let a harvest run, then write through the slice. */
			struct iodma_slice sl;
			size_t nr;

			iodma_access_begin();
			assert_int_equal(iodma_translate(w->d, MIG_IOVA + page * PG + off, 8,
							 IODMA_PERM_WRITE, &sl, 1, &nr, NULL), 0);
			/* Long enough for whole harvests (clear and copy) to
			 * run between the translation and the write. */
			nanosleep(&(struct timespec){ .tv_nsec = 20000 }, NULL);
			memcpy(sl.va, &v, 8);
			iodma_access_end();
		} else if (x & 1)
			assert_int_equal(iodma_memory_write(w->m, page * PG + off, &v, 8), 0);
		else {
			/* A VMM's own write through a slice, marked after. */
			struct iodma_slice sl;
			size_t nr;

			iodma_access_begin();
			assert_int_equal(iodma_memory_translate(w->m, page * PG + off, 8,
								&sl, 1, &nr, NULL), 0);
			memcpy(sl.va, &v, 8);
			assert_int_equal(iodma_memory_mark_dirty(w->m, page * PG + off, 8), 0);
			iodma_access_end();
		}
		w->writes++;
	}
	return NULL;
}

/* A VMM's send of a page reads it while the device may write it (the
 * next harvest reports such a page again): a deliberate race that TSan
 * must not check, since the library's writer is a plain memcpy. */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MIG_RACY __attribute__((no_sanitize("thread")))
#endif
#endif
#if !defined(MIG_RACY) && defined(__SANITIZE_THREAD__)
#define MIG_RACY __attribute__((no_sanitize_thread))
#endif
#ifndef MIG_RACY
#define MIG_RACY
#endif

static MIG_RACY void mig_copy_page(const char *mem, char *copy, unsigned int p)
{
	for (uint64_t i = 0; i < PG; i += 8)
		*(volatile uint64_t *)(copy + p * PG + i) =
			*(const volatile uint64_t *)(mem + p * PG + i);
}

static void mig_send(struct iodma_memory *m, const char *mem, char *copy)
{
	uint64_t bm[MIG_PAGES / 64];

	assert_int_equal(iodma_memory_dirty_get_and_clear(m, 0, MIG_PAGES * PG, bm,
							  MIG_PAGES / 64), 0);
	for (unsigned int p = 0; p < MIG_PAGES; p++)
		if (bm[p / 64] & (1ull << (p % 64)))
			mig_copy_page(mem, copy, p);
}

static void migration_run(bool device)
{
	struct iodma_memory *m = mem_new();
	struct mig_writer w = { .m = m };
	char *copy = malloc(MIG_PAGES * PG);
	pthread_t t;
	void *va;

	assert_non_null(copy);
	assert_int_equal(iodma_memory_add_region(m, 0, MIG_PAGES * PG, 0, &va), 0);
	if (device) {
		struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);

		o.memory = m;
		assert_int_equal(iodma_domain_create(&o, &w.d), 0);
		assert_int_equal(iodma_domain_map_gpa(w.d, MIG_IOVA, MIG_PAGES * PG, 0,
						      IODMA_PERM_RW), 0);
	}
	assert_int_equal(iodma_memory_dirty_log_start(m), 0);
	assert_int_equal(pthread_create(&t, NULL, mig_write_loop, &w), 0);
	for (unsigned int p = 0; p < MIG_PAGES; p++)
		mig_copy_page(va, copy, p);
	/* Rounds until the writer has done plenty (it may start late), for
	 * at most about 10 s (sanitizers and valgrind are slow). */
	{
		struct timespec ts0, ts;

		clock_gettime(CLOCK_MONOTONIC, &ts0);
		for (int round = 0; round < 200 || atomic_load(&w.writes) < (w.d ? 2000 : 5000);
		     round++) {
			mig_send(m, va, copy);
			clock_gettime(CLOCK_MONOTONIC, &ts);
			if (ts.tv_sec - ts0.tv_sec > 10)
				break;
		}
	}
	atomic_store(&w.stop, true);
	pthread_join(t, NULL);
	mig_send(m, va, copy);
	assert_true(w.writes > 0);
	assert_memory_equal(copy, va, MIG_PAGES * PG);
	assert_int_equal(iodma_memory_dirty_log_stop(m), 0);
	if (w.d)
		iodma_domain_destroy(w.d);
	iodma_memory_destroy(m);
	free(copy);
}

static void test_dirty_log_migration_loses_no_write(void **state)
{
	(void)state;
	migration_run(false);
}

/* The same with a device model writing through slices of a two-stage
 * domain, a harvest free to run between its translation and its write
 * (libvfio-user issue 595): the section's end marks the page again. */
static void test_dirty_log_migration_device_writes_lose_nothing(void **state)
{
	(void)state;
	migration_run(true);
}

/* Start, harvest and stop race with writers: no use after free of a
 * bitmap (ASan, valgrind, TSan tiers). */
static void *mark_loop(void *arg)
{
	struct mig_writer *w = arg;
	uint64_t v = 1;

	while (!atomic_load(&w->stop)) {
		assert_int_equal(iodma_memory_write(w->m, (w->writes % MIG_PAGES) * PG, &v, 8), 0);
		assert_int_equal(iodma_memory_mark_dirty(w->m, 0, MIG_PAGES * PG), 0);
		w->writes++;
	}
	return NULL;
}

static void test_dirty_log_start_stop_race_with_writers(void **state)
{
	struct iodma_memory *m = mem_new();
	struct mig_writer w = { .m = m };
	uint64_t bm[1];
	pthread_t t;
	void *va;

	(void)state;
	assert_int_equal(iodma_memory_add_region(m, 0, MIG_PAGES * PG, 0, &va), 0);
	assert_int_equal(pthread_create(&t, NULL, mark_loop, &w), 0);
	for (int i = 0; i < 100; i++) {
		assert_int_equal(iodma_memory_dirty_log_start(m), 0);
		assert_int_equal(iodma_memory_dirty_get_and_clear(m, 0, MIG_PAGES * PG, bm, 1), 0);
		assert_int_equal(iodma_memory_dirty_log_stop(m), 0);
	}
	atomic_store(&w.stop, true);
	pthread_join(t, NULL);
	iodma_memory_destroy(m);
}

/* The shared mode: marks land in a flat bitmap by 4 KiB guest-physical
 * page (vhost-user's log), the owner harvests, a switch moves the marks to
 * the new bitmap, stop forgets it. */
static void test_dirty_log_shared_marks_flat_bitmap_by_gpa(void **state)
{
	struct iodma_memory *m = mem_new();
	uint8_t log1[64] = { 0 }, log2[64] = { 0 }, buf[8] = { 1 };
	uint64_t bm[2];
	void *va;

	(void)state;
	/* Region at 64 KiB: log byte 2 holds pages 16..23. */
	assert_int_equal(iodma_memory_add_region(m, 0x10000, 0x10000, IODMA_REGION_ANON, &va), 0);
	assert_int_equal(iodma_memory_dirty_log_start_shared(NULL, log1, 64), -EINVAL);
	assert_int_equal(iodma_memory_dirty_log_start_shared(m, NULL, 64), -EINVAL);
	assert_int_equal(iodma_memory_dirty_log_start_shared(m, log1, 0), -EINVAL);
	assert_int_equal(iodma_memory_dirty_log_start_shared(m, log1, UINT64_MAX / 4), -EINVAL);
	assert_int_equal(iodma_memory_dirty_log_start_shared(m, log1, 64), 0);
	/* Per-region mode and harvesting are not for this mode. */
	assert_int_equal(iodma_memory_dirty_log_start(m), -EBUSY);
	assert_int_equal(iodma_memory_dirty_get_and_clear(m, 0x10000, PG, bm, 2), -EOPNOTSUPP);
	/* A write across pages 17 and 18 (4 KiB pages, whatever the host's). */
	assert_int_equal(iodma_memory_write(m, 0x11ffc, buf, 8), 0);
	assert_int_equal(log1[2], (1u << 1) | (1u << 2));
	assert_int_equal(iodma_memory_mark_dirty(m, 0x1f000, 0x1000), 0); /* page 31 */
	assert_int_equal(log1[3], 1u << 7);
	/* Outside every region: nothing marked, as in the per-region mode. */
	assert_int_equal(iodma_memory_mark_dirty(m, 0x30000, 0x1000), -EFAULT);
	assert_int_equal(log1[6], 0);
	/* The owner clears; the library never does: a new write sets it again. */
	log1[2] = 0;
	assert_int_equal(iodma_memory_write(m, 0x10000, buf, 1), 0);
	assert_int_equal(log1[2], 1u);
	/* Switch: later marks go to the new bitmap only. */
	assert_int_equal(iodma_memory_dirty_log_start_shared(m, log2, 64), 0);
	assert_int_equal(iodma_memory_write(m, 0x13000, buf, 1), 0);
	assert_int_equal(log2[2], 1u << 3);
	assert_int_equal(log1[2], 1u);
	/* A log shorter than the memory: pages past it are not marked. */
	assert_int_equal(iodma_memory_dirty_log_start_shared(m, log2, 2), 0);
	memset(log2, 0, sizeof(log2));
	assert_int_equal(iodma_memory_write(m, 0x10000, buf, 1), 0);
	for (size_t i = 0; i < sizeof(log2); i++)
		assert_int_equal(log2[i], 0);
	assert_int_equal(iodma_memory_dirty_log_stop(m), 0);
	assert_int_equal(iodma_memory_write(m, 0x13000, buf, 1), 0);
	assert_int_equal(log2[2], 0);
	assert_int_equal(iodma_memory_dirty_log_stop(m), -EINVAL);
	/* The per-region mode refuses the shared one while it runs. */
	assert_int_equal(iodma_memory_dirty_log_start(m), 0);
	assert_int_equal(iodma_memory_dirty_log_start_shared(m, log1, 64), -EBUSY);
	assert_int_equal(iodma_memory_dirty_log_stop(m), 0);
	iodma_memory_destroy(m);
}

static void test_dirty_log_shared_start_fail_nth_leaves_it_off(void **state)
{
	struct iodma_memory *m = mem_new();
	uint8_t log[8] = { 0 }, b = 1;
	void *va;

	(void)state;
	assert_int_equal(iodma_memory_add_region(m, 0, 0x8000, IODMA_REGION_ANON, &va), 0);
	iodma_test_fail_alloc(1);
	assert_int_equal(iodma_memory_dirty_log_start_shared(m, log, 8), -ENOMEM);
	assert_int_equal(iodma_memory_write(m, 0, &b, 1), 0);
	assert_int_equal(log[0], 0);
	assert_int_equal(iodma_memory_dirty_log_stop(m), -EINVAL); /* still off */
	iodma_memory_destroy(m);
}

/* Growth rule of common.h for struct iodma_memory_opts. */
static void test_opts_growth(void **state)
{
	struct {
		struct iodma_memory_opts o;
		uint64_t newer;
	} w;
	struct iodma_memory *m = NULL;

	(void)state;
	memset(&w, 0, sizeof(w));
	w.o.size = sizeof(w);
	assert_int_equal(iodma_memory_create(&w.o, &m), 0);
	iodma_memory_destroy(m);
	m = NULL;
	w.newer = 1;
	assert_int_equal(iodma_memory_create(&w.o, &m), -E2BIG);
	assert_null(m);
	w.newer = 0;
	w.o.size = offsetof(struct iodma_memory_opts, flags);
	assert_int_equal(iodma_memory_create(&w.o, &m), -EINVAL);
	assert_null(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_opts_growth),
		cmocka_unit_test(test_create_rejects_bad_opts),
		cmocka_unit_test(test_create_fail_nth_returns_enomem_and_leaves_out),
		cmocka_unit_test(test_add_region_is_zeroed_sorted_and_memfd_backed),
		cmocka_unit_test(test_memfd_region_fd_and_va_see_the_same_bytes),
		cmocka_unit_test(test_add_region_rejects_bad_arguments_unchanged),
		cmocka_unit_test(test_add_region_host_rejects_bad_arguments_unchanged),
		cmocka_unit_test(test_overlapping_region_is_eexist_unchanged),
		cmocka_unit_test(test_translate_splits_at_region_ends_and_lengths_add_up),
		cmocka_unit_test(test_translate_hole_is_efault_with_the_hole_subrange),
		cmocka_unit_test(test_read_write_cross_regions_and_efault_copies_nothing),
		cmocka_unit_test(test_find_and_remove_region),
		cmocka_unit_test(test_remove_never_allocates),
		cmocka_unit_test(test_add_fail_nth_returns_enomem_unchanged),
		cmocka_unit_test(test_dirty_log_errors_change_nothing),
		cmocka_unit_test(test_dirty_log_start_fail_nth_leaves_it_off),
		cmocka_unit_test(test_dirty_log_marks_writes_by_gpa_across_regions),
		cmocka_unit_test(test_dirty_log_large_region_words),
		cmocka_unit_test(test_dirty_log_migration_loses_no_write),
		cmocka_unit_test(test_dirty_log_migration_device_writes_lose_nothing),
		cmocka_unit_test(test_dirty_log_start_stop_race_with_writers),
		cmocka_unit_test(test_dirty_log_shared_marks_flat_bitmap_by_gpa),
		cmocka_unit_test(test_dirty_log_shared_start_fail_nth_leaves_it_off),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
