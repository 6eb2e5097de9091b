/* SPDX-License-Identifier: MIT */
/* Unit tests: return-code texts, version, page size, range helpers and the
 * allocation fault-injection hook the other suites' fail-nth sweeps use. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>
#include <string.h>

#include <iodma.h>
#include <iodma/test-hooks.h> /* fault injection: tests only */

#include "util.h"
#include "drop-cap.h"

static void test_strerror_names_every_documented_code(void **state)
{
	static const int codes[] = { 0, -EINVAL, -ERANGE, -EEXIST, -ENOSPC,
				     -ENOMEM, -ENOENT, -EFAULT, -EACCES, -EBUSY,
				     -EOPNOTSUPP, -E2BIG, -EALREADY, -EIO, -EPERM,
				     -EUCLEAN, -EPROTO, -EBADMSG, -ETIMEDOUT,
				     -ENOTCONN };
	const char *unknown = iodma_strerror(-12345);

	(void)state;
	assert_string_equal(unknown, "unknown error");
	for (size_t i = 0; i < IODMA_ARRAY_SIZE(codes); i++) {
		const char *s = iodma_strerror(codes[i]);

		assert_non_null(s);
		assert_string_not_equal(s, unknown);
	}
	/* -ENOSPC tells the user what to raise on VFIO type1. */
	assert_non_null(strstr(iodma_strerror(-ENOSPC), "dma_entry_limit"));
}

static void test_version_matches_header(void **state)
{
	char want[32];

	(void)state;
	snprintf(want, sizeof(want), "%d.%d.%d", IODMA_VERSION_MAJOR,
		 IODMA_VERSION_MINOR, IODMA_VERSION_PATCH);
	assert_string_equal(iodma_version(), want);
}

static void test_page_size_is_power_of_two(void **state)
{
	size_t p = iodma_page_size();

	(void)state;
	assert_true(p >= 4096);
	assert_true(is_pow2(p));
}

static void test_range_end_overflow_is_invalid(void **state)
{
	(void)state;
	assert_false(range_valid(0x1000, 0));
	assert_true(range_valid(UINT64_MAX - 0xfff, 0x1000)); /* ends at 2^64 */
	assert_false(range_valid(UINT64_MAX - 0xfff, 0x2000));
	assert_true(range_valid(1, UINT64_MAX)); /* [1, 2^64) */
	assert_false(range_valid(2, UINT64_MAX));
	assert_true(range_valid(0, UINT64_MAX));
	assert_int_equal(range_last(0x1000, 0x1000), 0x1fff);
}

static void test_range_overlap_and_containment(void **state)
{
	(void)state;
	assert_true(ranges_overlap(0x1000, 0x1000, 0x1fff, 1));
	assert_false(ranges_overlap(0x1000, 0x1000, 0x2000, 1));
	assert_true(range_contains(0x1000, 0x2000, 0x2000, 0x1000));
	assert_false(range_contains(0x1000, 0x2000, 0x2000, 0x1001));
	assert_true(range_contains(0, UINT64_MAX, UINT64_MAX - 1, 1));
}

static void test_align_helpers(void **state)
{
	(void)state;
	assert_int_equal(align_up(0x1001, 0x1000), 0x2000);
	assert_int_equal(align_up(0x1000, 0x1000), 0x1000);
	assert_int_equal(align_up(UINT64_MAX - 1, 0x1000), 0); /* overflow */
	assert_int_equal(align_down(0x1fff, 0x1000), 0x1000);
	assert_true(is_aligned(0x3000, 0x1000));
	assert_false(is_aligned(0x3001, 0x1000));
	assert_false(is_pow2(0));
	assert_false(is_pow2(0x3000));
	assert_int_equal(ilog2_u64(0x1000), 12);
}

static void test_fail_alloc_fails_exactly_the_nth(void **state)
{
	void *a, *b, *c;

	(void)state;
	iodma_test_fail_alloc(2);
	a = iodma_malloc(16);
	b = iodma_malloc(16);
	c = iodma_calloc(2, 8);
	assert_non_null(a);
	assert_null(b);
	assert_non_null(c); /* fires once */
	iodma_free(a);
	iodma_free(c);

	iodma_test_fail_alloc(1);
	assert_null(iodma_realloc(NULL, 8));
	a = iodma_realloc(NULL, 8);
	assert_non_null(a);
	iodma_free(a);

	iodma_test_fail_alloc(5);
	iodma_test_fail_alloc(0); /* disarmed */
	for (int i = 0; i < 10; i++) {
		a = iodma_malloc(8);
		assert_non_null(a);
		iodma_free(a);
	}
}

/* Two fresh, never-written pages must not report the same frame (the
 * kernel's shared zero page): a device would write into it. */
static void test_virt_to_phys_of_unwritten_pages_is_not_the_zero_page(void **state)
{
	size_t pg = iodma_page_size();
	char *p = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t a, b;
	int r;

	(void)state;
	assert_true(p != MAP_FAILED);
	r = os_virt_to_phys(p, &a);
	if (r == -EPERM) {
		munmap(p, 2 * pg);
		skip(); /* frame numbers hidden without CAP_SYS_ADMIN */
	}
	assert_int_equal(r, 0);
	assert_int_equal(os_virt_to_phys(p + pg + 8, &b), 0);
	assert_true(a / pg != b / pg);
	assert_int_equal(b % pg, 8);
	assert_int_equal((unsigned char)p[0], 0); /* the data is untouched */
	munmap(p, 2 * pg);
}

/* The growth rule of common.h on a struct that grew from v1 to v2. */
struct growth_v1 {
	size_t size;
	uint32_t a;
	uint32_t reserved;
};
struct growth_v2 {
	size_t size;
	uint32_t a;
	uint32_t reserved;
	uint64_t b;
};

static void test_opts_copy_growth_rule(void **state)
{
	const size_t v1_min = IODMA_OFFSETOFEND(struct growth_v1, reserved);
	struct growth_v1 old = { .size = sizeof(old), .a = 3 };
	struct growth_v2 neu = { .size = sizeof(neu), .a = 4, .b = 0 };
	struct growth_v2 d2 = { .size = sizeof(d2), .a = 1, .b = 9 };
	struct growth_v1 d1 = { .size = sizeof(d1), .a = 1 };

	(void)state;
	/* NULL: the defaults stay. */
	assert_int_equal(opts_copy(&d2, sizeof(d2), NULL, v1_min), 0);
	assert_int_equal(d2.a, 1);
	assert_int_equal(d2.b, 9);
	/* Older caller: its fields are taken, the new field keeps its default. */
	assert_int_equal(opts_copy(&d2, sizeof(d2), &old, v1_min), 0);
	assert_int_equal(d2.size, sizeof(d2));
	assert_int_equal(d2.a, 3);
	assert_int_equal(d2.b, 9);
	/* Newer caller with an all-zero tail: accepted, the tail is dropped. */
	assert_int_equal(opts_copy(&d1, sizeof(d1), &neu, v1_min), 0);
	assert_int_equal(d1.size, sizeof(d1));
	assert_int_equal(d1.a, 4);
	/* Newer caller using a field this library does not know: -E2BIG. */
	neu.b = 1;
	neu.a = 5;
	assert_int_equal(opts_copy(&d1, sizeof(d1), &neu, v1_min), -E2BIG);
	assert_int_equal(d1.a, 4);
	/* Smaller than the first version: -EINVAL, nothing copied. */
	old.size = v1_min - 1;
	old.a = 6;
	assert_int_equal(opts_copy(&d1, sizeof(d1), &old, v1_min), -EINVAL);
	assert_int_equal(d1.a, 4);
	old.size = 0;
	assert_int_equal(opts_copy(&d1, sizeof(d1), &old, v1_min), -EINVAL);
}

/* The output side of the rule (out_copy, ext_copy EXT_OUT) on the same
 * struct grown from v1 to v2. */
static void test_out_copy_growth_rule(void **state)
{
	const size_t v1_min = IODMA_OFFSETOFEND(struct growth_v1, reserved);
	struct growth_v2 lib2 = { .size = sizeof(lib2), .a = 7, .reserved = 8, .b = 9 };
	struct growth_v1 lib1 = { .size = sizeof(lib1), .a = 7, .reserved = 8 };
	struct growth_v1 old;
	struct {
		struct growth_v2 s;
		uint64_t extra;
	} big;
	struct growth_v2 neu, copy;

	(void)state;
	/* Older caller, newer library: the prefix it knows, .b not written
	 * (it is past the caller's struct). */
	memset(&big, 0xa5, sizeof(big));
	big.s.size = sizeof(old);
	assert_int_equal(out_copy(&big.s, &lib2, sizeof(lib2), v1_min), 0);
	assert_int_equal(big.s.size, sizeof(old));
	assert_int_equal(big.s.a, 7);
	assert_int_equal(big.s.reserved, 8);
	assert_int_equal(big.s.b, 0xa5a5a5a5a5a5a5a5ull);
	memset(&old, 0xa5, sizeof(old));
	old.size = sizeof(old);
	assert_int_equal(out_copy(&old, &lib2, sizeof(lib2), v1_min), 0);
	assert_int_equal(old.a, 7);
	assert_int_equal(old.reserved, 8);
	/* Newer caller, older library: the field it lacks reads 0. */
	memset(&neu, 0xa5, sizeof(neu));
	neu.size = sizeof(neu);
	assert_int_equal(out_copy(&neu, &lib1, sizeof(lib1), v1_min), 0);
	assert_int_equal(neu.size, sizeof(neu));
	assert_int_equal(neu.a, 7);
	assert_int_equal(neu.b, 0);
	/* A library field past the caller's struct is not an error on output
	 * (-E2BIG is for inputs only). */
	memset(&big, 0xa5, sizeof(big));
	big.s.size = sizeof(big);
	assert_int_equal(out_copy(&big.s, &lib2, sizeof(lib2), v1_min), 0);
	assert_int_equal(big.s.b, 9);
	assert_int_equal(big.extra, 0);
	/* Smaller than the first version: -EINVAL, nothing written. */
	memset(&neu, 0xa5, sizeof(neu));
	neu.size = v1_min - 1;
	copy = neu;
	assert_int_equal(out_copy(&neu, &lib2, sizeof(lib2), v1_min), -EINVAL);
	assert_memory_equal(&neu, &copy, sizeof(neu));
	neu.size = 0;
	copy = neu;
	assert_int_equal(out_copy(&neu, &lib2, sizeof(lib2), v1_min), -EINVAL);
	assert_memory_equal(&neu, &copy, sizeof(neu));
	/* EXT_IN keeps the receiver's defaults past a shorter sender and never
	 * writes the receiver's size. */
	neu = (struct growth_v2){ .size = 1234, .a = 1, .b = 5 };
	assert_int_equal(ext_copy(&neu, sizeof(neu), &lib1, sizeof(lib1), EXT_IN), 0);
	assert_int_equal(neu.size, 1234);
	assert_int_equal(neu.a, 7);
	assert_int_equal(neu.b, 5);
}

#ifndef NDEBUG
static void *held_elsewhere(void *arg)
{
	return (void *)(uintptr_t)os_mutex_held(arg);
}
#endif

/* os_mutex_held(), what the *_locked helpers assert: true for the holding
 * thread only, and again after a condition wait gave the lock back. */
static void test_mutex_held_is_true_only_for_the_holder(void **state)
{
#ifdef NDEBUG
	(void)state;
	skip(); /* compiled out */
#else
	os_mutex_t mu;
	os_cond_t cv;
	uint64_t deadline;
	pthread_t t;
	void *seen;

	(void)state;
	os_mutex_init(&mu);
	os_cond_init(&cv);
	assert_false(os_mutex_held(&mu));
	os_mutex_lock(&mu);
	assert_true(os_mutex_held(&mu));
	assert_int_equal(pthread_create(&t, NULL, held_elsewhere, &mu), 0);
	assert_int_equal(pthread_join(t, &seen), 0);
	assert_null(seen); /* held, but not by that thread */
	deadline = os_now_ns() + 1000000;
	while (os_cond_timedwait(&cv, &mu, deadline) != -ETIMEDOUT)
		; /* a spurious wakeup returns 0 */
	assert_true(os_mutex_held(&mu));
	os_mutex_unlock(&mu);
	assert_false(os_mutex_held(&mu));
	os_cond_destroy(&cv);
	os_mutex_destroy(&mu);
#endif
}

/* ---- os_virt_to_phys_range() ------------------------------------------- */

/* Frame numbers are visible (CAP_SYS_ADMIN): else the tests that need
 * them skip. */
static bool pfns_visible(void)
{
	uint64_t pa;
	static char probe = 1;

	return os_virt_to_phys(&probe, &pa) == 0;
}

/* Bad arguments: -EINVAL and @out untouched. */
static void test_virt_to_phys_range_argument_errors(void **state)
{
	size_t pg = iodma_page_size();
	uint64_t out[2] = { 7, 7 };
	size_t failed = 99;
	static char buf[1];

	(void)state;
	assert_int_equal(os_virt_to_phys_range(buf, 0, out, &failed), -EINVAL);
	assert_int_equal(os_virt_to_phys_range(buf, 1, NULL, &failed), -EINVAL);
	/* The last page of the address space, and one past it. */
	assert_int_equal(os_virt_to_phys_range((void *)(UINTPTR_MAX - pg + 1), 2,
					       out, &failed), -EINVAL);
	assert_int_equal(os_virt_to_phys_range((void *)UINTPTR_MAX, SIZE_MAX,
					       out, &failed), -EINVAL);
	assert_int_equal(out[0], 7);
	assert_int_equal(out[1], 7);
	assert_int_equal(failed, 99);
}

/* A hole in the range: -EFAULT naming the page, and no crash (the pages
 * are faulted in before the read: an unmapped one must not be touched). */
static void test_virt_to_phys_range_unmapped_page_is_efault(void **state)
{
	size_t pg = iodma_page_size(), failed = 99;
	char *p = mmap(NULL, 3 * pg, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t out[3], pa;

	(void)state;
	assert_true(p != MAP_FAILED);
	assert_int_equal(munmap(p + pg, pg), 0);
	assert_int_equal(os_virt_to_phys_range(p, 3, out, &failed), -EFAULT);
	assert_int_equal(failed, 1);
	assert_int_equal(os_virt_to_phys(p + pg + 5, &pa), -EFAULT);
	munmap(p, pg);
	munmap(p + 2 * pg, pg);
}

/* Without CAP_SYS_ADMIN pagemap reads every frame number as 0: -EPERM,
 * not a bus address of 0.  In a child that drops the capability (so the
 * test runs as root too); as a user the drop is a no-op. */
static void test_virt_to_phys_range_without_cap_sys_admin_is_eperm(void **state)
{
	int status;
	pid_t pid;

	(void)state;
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		size_t pg = iodma_page_size(), failed = 99;
		char *p = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		uint64_t out[2], pa;

		if (p == MAP_FAILED)
			_exit(10);
		if (drop_sys_admin() != 0)
			_exit(11);
		p[0] = 1;
		if (os_virt_to_phys_range(p, 2, out, &failed) != -EPERM ||
		    failed != 0)
			_exit(12);
		if (os_virt_to_phys(p + 8, &pa) != -EPERM)
			_exit(13);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 11)
		skip(); /* no capset here */
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* One batched read says what a call per page says, written pages and
 * never-written ones alike (each gets its own frame, not the zero page),
 * from an unaligned start. */
static void test_virt_to_phys_range_equals_per_page_calls(void **state)
{
	enum { N = 40 };
	size_t pg = iodma_page_size(), failed = 99;
	char *p = mmap(NULL, N * pg, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t out[N], pa;

	(void)state;
	assert_true(p != MAP_FAILED);
	if (!pfns_visible()) {
		munmap(p, N * pg);
		skip(); /* frame numbers hidden without CAP_SYS_ADMIN */
	}
	for (size_t i = 0; i < N; i += 3)
		p[i * pg] = (char)i;
	assert_int_equal(os_virt_to_phys_range(p + 100, N, out, &failed), 0);
	assert_int_equal(failed, 99);
	for (size_t i = 0; i < N; i++) {
		assert_int_equal(out[i] % pg, 0);
		assert_int_equal(os_virt_to_phys(p + i * pg + 100, &pa), 0);
		assert_int_equal(pa, out[i] + 100);
		for (size_t j = 0; j < i; j++)
			assert_true(out[j] != out[i]);
	}
	for (size_t i = 0; i < N; i++)
		assert_int_equal(p[i * pg], i % 3 ? 0 : (char)i);
	munmap(p, N * pg);
}

/* The cached pagemap descriptor names the process that opened it: a
 * forked child must read its own page table, not its parent's (where the
 * child's new mapping does not exist). */
static void test_virt_to_phys_in_a_forked_child_reads_its_own_pages(void **state)
{
	int status;
	pid_t pid;

	(void)state;
	if (!pfns_visible()) /* also opens the parent's descriptor */
		skip();
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		size_t pg = iodma_page_size();
		char *p = mmap(NULL, pg, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		uint64_t pa;

		if (p == MAP_FAILED)
			_exit(10);
		p[0] = 1;
		_exit(os_virt_to_phys(p, &pa) == 0 ? 0 : 12);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_out_copy_growth_rule),
		cmocka_unit_test(test_opts_copy_growth_rule),
		cmocka_unit_test(test_strerror_names_every_documented_code),
		cmocka_unit_test(test_version_matches_header),
		cmocka_unit_test(test_page_size_is_power_of_two),
		cmocka_unit_test(test_range_end_overflow_is_invalid),
		cmocka_unit_test(test_range_overlap_and_containment),
		cmocka_unit_test(test_align_helpers),
		cmocka_unit_test(test_fail_alloc_fails_exactly_the_nth),
		cmocka_unit_test(test_virt_to_phys_of_unwritten_pages_is_not_the_zero_page),
		cmocka_unit_test(test_mutex_held_is_true_only_for_the_holder),
		cmocka_unit_test(test_virt_to_phys_range_argument_errors),
		cmocka_unit_test(test_virt_to_phys_range_unmapped_page_is_efault),
		cmocka_unit_test(test_virt_to_phys_range_without_cap_sys_admin_is_eperm),
		cmocka_unit_test(test_virt_to_phys_range_equals_per_page_calls),
		cmocka_unit_test(test_virt_to_phys_in_a_forked_child_reads_its_own_pages),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
