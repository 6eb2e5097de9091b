/* SPDX-License-Identifier: MIT */
/* stdio.h - the bare-metal console: what the virtio-blk driver prints with.
 * Both streams go to the board's UART (bm_libc.c). */
#ifndef BM_STDIO_H
#define BM_STDIO_H
#include <stdarg.h>
#include <stddef.h>

typedef struct bm_file FILE;
extern FILE *const stdout;
extern FILE *const stderr;

int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int fprintf(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int snprintf(char *buf, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int vsnprintf(char *buf, size_t len, const char *fmt, va_list ap);
int puts(const char *s);
#endif
