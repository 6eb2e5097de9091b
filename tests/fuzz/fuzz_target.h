/* SPDX-License-Identifier: MIT */
/*
 * fuzz_target.h - what a fuzz target gives the standalone driver
 * (fuzz_driver.c).  Each target file defines LLVMFuzzerTestOneInput()
 * (libFuzzer's entry point: one input = one fresh object fed a stream of
 * operations, checked after each; abort() on a broken invariant) and one
 * `const struct fuzz_target fuzz_target` describing itself.
 */
#ifndef IODMA_FUZZ_TARGET_H
#define IODMA_FUZZ_TARGET_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

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
