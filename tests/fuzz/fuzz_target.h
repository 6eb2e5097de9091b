/* SPDX-License-Identifier: MIT */
/*
 * fuzz_target.h - what a fuzz target gives the standalone driver
 * (fuzz_driver.c).  Each target file defines LLVMFuzzerTestOneInput()
 * (libFuzzer's entry point: one input = one fresh object fed a stream of
 * operations, checked after each; abort() on a broken invariant) and one
 * `const struct fuzz_target fuzz_target` describing itself.
 *
 * And what the targets share: reading the input (struct fuzz_in, u8/u16
 * on the operation stream), checking an invariant (CHECK: report and
 * abort()), arming the library's allocation failure and the soft
 * backend's map/unmap failures for one operation (fuzz_arm/fuzz_disarm).
 */
#ifndef IODMA_FUZZ_TARGET_H
#define IODMA_FUZZ_TARGET_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <iodma/test-hooks.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/**
 * struct fuzz_target - A target, as the standalone driver sees it.
 * @name:        program name, for messages and the crash file
 *               (NAME-crash.bin).
 * @count:       generated inputs by default: plain, under valgrind, under
 *               TSan (IODMA_FUZZ_COUNT overrides).
 * @threads:     NULL, or switches the target to its threaded mode
 *               (--threads) and returns that mode's default counts.
 * @write_seeds: writes the seed corpus into a directory; returns the
 *               number of files or -1.
 * @summary:     prints what the run reached; returns non-zero when a run
 *               of @generated >= 1000 inputs reached too little state to
 *               have tested what it is for.
 */
struct fuzz_target {
	const char *name;
	long count[3];
	const long *(*threads)(void);
	int (*write_seeds)(const char *dir);
	int (*summary)(long generated);
};

extern const struct fuzz_target fuzz_target;

/* The operation-stream targets' input: bytes taken from the front, 0 once
 * it is used up (an input that ends mid-operation still runs). */
struct fuzz_in {
	const uint8_t *p;
	size_t left;
};

static inline uint8_t fuzz_u8(struct fuzz_in *in)
{
	if (!in->left)
		return 0;
	in->left--;
	return *in->p++;
}

static inline uint16_t fuzz_u16(struct fuzz_in *in)
{
	uint16_t v = fuzz_u8(in);

	return (uint16_t)(v | (uint16_t)fuzz_u8(in) << 8);
}

/* @bytes (at most 8) bytes, little endian. */
static inline uint64_t fuzz_un(struct fuzz_in *in, int bytes)
{
	uint64_t v = 0;

	for (int i = 0; i < bytes; i++)
		v |= (uint64_t)fuzz_u8(in) << (8 * i);
	return v;
}

/*
 * The operation-stream targets (fuzz_dma.c, fuzz_domain.c) read one input
 * at a time: LLVMFuzzerTestOneInput() points fuzz_stream at it, and u8()
 * and u16() take the next bytes.
 */
static struct fuzz_in fuzz_stream;

static inline uint8_t u8(void)
{
	return fuzz_u8(&fuzz_stream);
}

static inline uint16_t u16(void)
{
	return fuzz_u16(&fuzz_stream);
}

/* ---- invariants ------------------------------------------------------------ */

/* A target may point this at a function that prints where in the input
 * it was (which message, which operation): printed after the condition. */
static void (*fuzz_fail_context)(FILE *f);

/* Report a broken invariant (the condition's text, then @fmt's message if
 * not empty) and abort(): libFuzzer and the standalone driver keep the
 * input as the crash file. */
static inline void fuzz_fail(const char *file, int line, const char *what,
			     const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s:%d: invariant broken: %s", file, line, what);
	if (fuzz_fail_context)
		fuzz_fail_context(stderr);
	if (fmt && *fmt) {
		fprintf(stderr, ": ");
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
	}
	fprintf(stderr, "\n");
	abort();
}

/* CHECK(cond) or CHECK(cond, "format", args...): fuzz_fail unless @cond. */
#define CHECK(cond, ...) \
	do { \
		if (!(cond)) \
			fuzz_fail(__FILE__, __LINE__, #cond, "" __VA_ARGS__); \
	} while (0)

/* ---- faults armed for one operation ------------------------------------------ */

/* Which failures the next operation meets. */
struct fuzz_faults {
	bool alloc;	/* one of the library's next 1..4 allocations */
	bool map;	/* the soft backend's next map: -EIO */
	bool unmap;	/* the soft backend's next unmap: -EIO */
};

/* Arm @f on @d (its domain's soft backend) before an operation; the
 * allocation's rank comes from the stream (u8). */
static inline void fuzz_arm(struct iodma_domain *d, const struct fuzz_faults *f)
{
	if (f->alloc)
		iodma_test_fail_alloc(1 + (u8() & 3));
	if (f->map)
		CHECK(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_MAP, 1, -EIO) == 0);
	if (f->unmap)
		CHECK(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_UNMAP, 1, -EIO) == 0);
}

/* After the operation: whatever was not consumed is cleared, and @f. */
static inline void fuzz_disarm(struct iodma_domain *d, struct fuzz_faults *f)
{
	iodma_test_fail_alloc(0);
	iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_MAP, 0, -EIO);
	iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_UNMAP, 0, -EIO);
	*f = (struct fuzz_faults){ 0 };
}

/* For write_seeds: write @n bytes to DIR/NAME.  Returns 0 or -1. */
static inline int fuzz_write_file(const char *dir, const char *name,
				  const void *b, size_t n)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f)
		return -1;
	if (fwrite(b, 1, n, f) != n) {
		fclose(f);
		return -1;
	}
	return fclose(f) ? -1 : 0;
}

#endif /* IODMA_FUZZ_TARGET_H */
