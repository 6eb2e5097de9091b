/* SPDX-License-Identifier: MIT */
/* stdlib.h - the bare-metal heap (bm_libc.c). */
#ifndef BM_STDLIB_H
#define BM_STDLIB_H
#include <stddef.h>

void *malloc(size_t len);
void *calloc(size_t n, size_t len);
void *realloc(void *p, size_t len);
void *aligned_alloc(size_t align, size_t len);
void free(void *p);
#endif
