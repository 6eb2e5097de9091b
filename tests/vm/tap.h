/* SPDX-License-Identifier: MIT */
/*
 * tap.h - a tiny TAP harness for the guest test binaries (no cmocka: Debian
 * ships no static cmocka, and the guest wants static binaries).
 *
 * Usage (one harness per binary, single-threaded):
 *
 *	#include "tap.h"
 *	TAP_PLAN();
 *	TAP_OK(fd >= 0, "open_container", "open: %s", strerror(errno));
 *	TAP_SKIP("iommufd_map_file", "kernel has no IOMMU_IOAS_MAP_FILE");
 *	return TAP_RESULT("conformance", "vfio");
 *
 * Output, one line each, flushed at once so that nothing is lost if the
 * binary crashes or the guest powers off:
 *
 *	ok 1 open_container
 *	not ok 2 map_twice - tests/vm/conformance.c:123: ret=-22 want -17
 *	ok 3 iommufd_map_file # SKIP kernel has no IOMMU_IOAS_MAP_FILE
 *	RESULT conformance vfio passed=1 failed=1 skipped=1
 *
 * Test names must not contain spaces (the host parser splits on them); use
 * underscores.  TAP_OK evaluates to its condition (true when passed), so a
 * test can stop early:  if (!TAP_OK(...)) return;
 * TAP_DIAG prints a "# ..." comment line (ignored by the host parser).
 */
#ifndef IODMA_TESTS_VM_TAP_H
#define IODMA_TESTS_VM_TAP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

struct tap_state {
	unsigned int n;		/* tests numbered so far */
	unsigned int passed;
	unsigned int failed;
	unsigned int skipped;
};

/* One per binary: the harness is only included by a test's main file. */
static struct tap_state tap_state;

/* Reset the counters, make stdout line-buffered and print the TAP version. */
#define TAP_PLAN() tap_plan_()

/* Record a result; on failure print file:line and the printf-style message. */
#define TAP_OK(cond, name, ...) \
	tap_ok_(!!(cond), (name), __FILE__, __LINE__, __VA_ARGS__)

/* Record a skipped test with its reason. */
#define TAP_SKIP(name, reason) tap_skip_((name), (reason))

/* A "# ..." diagnostic line, printf-style. */
#define TAP_DIAG(...) tap_diag_(__VA_ARGS__)

/* Print the RESULT line; evaluates to the exit status (0 if nothing failed). */
#define TAP_RESULT(binary, backend) tap_result_((binary), (backend))

static inline void tap_plan_(void)
{
	tap_state = (struct tap_state){ 0 };
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("TAP version 13\n");
	fflush(stdout);
}

static inline __attribute__((format(printf, 5, 6))) bool
tap_ok_(bool pass, const char *name, const char *file, int line,
	const char *fmt, ...)
{
	va_list ap;

	tap_state.n++;
	if (pass) {
		tap_state.passed++;
		printf("ok %u %s\n", tap_state.n, name);
	} else {
		tap_state.failed++;
		printf("not ok %u %s - %s:%d: ", tap_state.n, name, file, line);
		va_start(ap, fmt);
		vprintf(fmt, ap);
		va_end(ap);
		printf("\n");
	}
	fflush(stdout);
	return pass;
}

static inline void tap_skip_(const char *name, const char *reason)
{
	tap_state.n++;
	tap_state.skipped++;
	printf("ok %u %s # SKIP %s\n", tap_state.n, name, reason);
	fflush(stdout);
}

static inline __attribute__((format(printf, 1, 2))) void
tap_diag_(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static inline int tap_result_(const char *binary, const char *backend)
{
	printf("1..%u\n", tap_state.n);
	printf("RESULT %s %s passed=%u failed=%u skipped=%u\n", binary,
	       backend, tap_state.passed, tap_state.failed,
	       tap_state.skipped);
	fflush(stdout);
	return tap_state.failed ? 1 : 0;
}

#endif /* IODMA_TESTS_VM_TAP_H */
