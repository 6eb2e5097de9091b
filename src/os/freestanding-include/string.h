/* SPDX-License-Identifier: MIT */
/* Freestanding build: the four functions GCC requires of any environment. */
#ifndef IODMA_FS_STRING_H
#define IODMA_FS_STRING_H
#include <stddef.h>
void *memcpy(void *restrict d, const void *restrict s, size_t n);
void *memmove(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
#endif
