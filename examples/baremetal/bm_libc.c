// SPDX-License-Identifier: MIT
/*
 * bm_libc.c - the little of a C library the virtio-blk driver and the
 * iodma core use, for a board with no OS: mem* (which GCC may call even
 * from -ffreestanding code), a heap, a console printf and a clock.
 *
 * Heap: size classes of powers of two (32 B .. 64 MiB), each with a free
 * list; a block's class sits in a 16-byte header before it.  Pages (for
 * iodma's pages_alloc and the driver's anonymous mmap) come from a
 * separate page-aligned bump region with an exact-length free list.  One
 * CPU, no interrupts: nothing here locks.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>

#include "bm.h"
#include "board.h"

/* ---- mem* ---------------------------------------------------------------- */

void *memcpy(void *restrict d, const void *restrict s, size_t n)
{
	unsigned char *dp = d;
	const unsigned char *sp = s;

	if (!(((uintptr_t)dp | (uintptr_t)sp) & 7)) {
		for (; n >= 8; n -= 8, dp += 8, sp += 8)
			*(uint64_t *)(void *)dp = *(const uint64_t *)(const void *)sp;
	}
	while (n--)
		*dp++ = *sp++;
	return d;
}

void *memmove(void *d, const void *s, size_t n)
{
	unsigned char *dp = d;
	const unsigned char *sp = s;

	if (dp <= sp || dp >= sp + n)
		return memcpy(d, s, n);
	while (n--)
		dp[n] = sp[n];
	return d;
}

void *memset(void *d, int c, size_t n)
{
	unsigned char *dp = d;

	if (!c && !((uintptr_t)dp & 7)) {
		for (; n >= 8; n -= 8, dp += 8)
			*(uint64_t *)(void *)dp = 0;
	}
	while (n--)
		*dp++ = (unsigned char)c;
	return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *ap = a, *bp = b;

	for (; n; n--, ap++, bp++)
		if (*ap != *bp)
			return *ap < *bp ? -1 : 1;
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

/* ---- heap ---------------------------------------------------------------- */

extern char __heap_start[], __heap_end[];

#define MIN_SHIFT	5
#define MAX_SHIFT	26
#define HDR		16u
#define MAGIC		0x6d6c6c6fu	/* a malloc block */
#define MAGIC_ALIGNED	0x616c676eu	/* an aligned_alloc block */
#define PAGE		4096u

struct hdr {
	uint32_t magic;
	uint32_t shift;
	void *base;	/* aligned_alloc: the malloc block it sits in */
};

struct free_blk {
	struct free_blk *next;
};

struct free_pages {
	struct free_pages *next;
	size_t len;
};

static struct free_blk *free_list[MAX_SHIFT + 1];
static struct free_pages *free_pages;
static uintptr_t small_top, page_top;	/* bump pointers, growing apart */
static bool heap_ready;
static struct bm_heap_stats hs;

static void heap_init(void)
{
	uintptr_t lo = ((uintptr_t)__heap_start + PAGE - 1) & ~(uintptr_t)(PAGE - 1);
	uintptr_t hi = (uintptr_t)__heap_end & ~(uintptr_t)(PAGE - 1);

	/* The lower quarter for small blocks, the rest for pages. */
	small_top = lo;
	page_top = lo + ((hi - lo) / 4 & ~(uintptr_t)(PAGE - 1));
	hs.small_limit = page_top;
	hs.page_limit = hi;
	heap_ready = true;
}

static void *bump(uintptr_t *top, uintptr_t limit, size_t len, size_t align)
{
	uintptr_t p = (*top + align - 1) & ~(uintptr_t)(align - 1);

	if (p > limit || limit - p < len)
		return NULL;
	*top = p + len;
	return (void *)p;
}

void *malloc(size_t len)
{
	unsigned int shift = MIN_SHIFT;
	struct hdr *h;

	if (!heap_ready)
		heap_init();
	while (shift <= MAX_SHIFT && ((size_t)1 << shift) < len + HDR)
		shift++;
	if (shift > MAX_SHIFT)
		return NULL;
	if (free_list[shift]) {
		h = (struct hdr *)(void *)free_list[shift];
		free_list[shift] = free_list[shift]->next;
	} else {
		h = bump(&small_top, hs.small_limit, (size_t)1 << shift, HDR);
		if (!h)
			return NULL;
	}
	h->magic = MAGIC;
	h->shift = shift;
	h->base = NULL;
	hs.live++;
	return (char *)h + HDR;
}

void free(void *p)
{
	struct hdr *h;

	if (!p)
		return;
	h = (struct hdr *)(void *)((char *)p - HDR);
	if (h->magic == MAGIC_ALIGNED) {
		h->magic = 0;
		free(h->base);
		return;
	}
	if (h->magic != MAGIC) {
		printf("bm_libc: free of a bad pointer %p\n", p);
		board_exit(3);
	}
	h->magic = 0;
	((struct free_blk *)(void *)h)->next = free_list[h->shift];
	free_list[h->shift] = (struct free_blk *)(void *)h;
	hs.live--;
}

void *calloc(size_t n, size_t len)
{
	void *p;

	if (len && n > SIZE_MAX / len)
		return NULL;
	p = malloc(n * len);
	if (p)
		memset(p, 0, n * len);
	return p;
}

void *realloc(void *p, size_t len)
{
	struct hdr *h;
	size_t have;
	void *q;

	if (!p)
		return malloc(len);
	h = (struct hdr *)(void *)((char *)p - HDR);
	have = ((size_t)1 << h->shift) - HDR;
	if (h->magic == MAGIC && len <= have)
		return p;
	q = malloc(len);
	if (!q)
		return NULL;
	memcpy(q, p, have < len ? have : len);
	free(p);
	return q;
}

void *aligned_alloc(size_t align, size_t len)
{
	char *base, *p;
	struct hdr *h;

	if (align < HDR)
		align = HDR;
	if (align & (align - 1))
		return NULL;
	base = malloc(len + align + HDR);
	if (!base)
		return NULL;
	p = (char *)(((uintptr_t)base + HDR + align - 1) & ~(uintptr_t)(align - 1));
	h = (struct hdr *)(void *)(p - HDR);
	h->magic = MAGIC_ALIGNED;
	h->base = base;
	return p;
}

void *bm_pages_alloc(size_t len)
{
	struct free_pages **pp, *f;
	void *p = NULL;

	if (!heap_ready)
		heap_init();
	len = (len + PAGE - 1) & ~(size_t)(PAGE - 1);
	for (pp = &free_pages; (f = *pp); pp = &f->next) {
		if (f->len == len) {
			*pp = f->next;
			p = f;
			break;
		}
	}
	if (!p)
		p = bump(&page_top, hs.page_limit, len, PAGE);
	if (p) {
		memset(p, 0, len);
		hs.pages_live += len;
	}
	return p;
}

void bm_pages_free(void *p, size_t len)
{
	struct free_pages *f = p;

	if (!p)
		return;
	len = (len + PAGE - 1) & ~(size_t)(PAGE - 1);
	f->len = len;
	f->next = free_pages;
	free_pages = f;
	hs.pages_live -= len;
}

void bm_heap_stats(struct bm_heap_stats *out)
{
	*out = hs;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, long off)
{
	void *p;

	if (addr || fd != -1 || off || !(flags & MAP_ANONYMOUS) || !prot)
		return MAP_FAILED;
	p = bm_pages_alloc(len);
	return p ? p : MAP_FAILED;
}

int munmap(void *addr, size_t len)
{
	bm_pages_free(addr, len);
	return 0;
}

/* ---- clock --------------------------------------------------------------- */

int clock_gettime(int clk, struct timespec *ts)
{
	uint64_t t = board_ticks(), hz = board_tick_hz();

	(void)clk;
	ts->tv_sec = (time_t)(t / hz);
	ts->tv_nsec = (long)((t % hz) * 1000000000u / hz);
	return 0;
}

/* ---- console ------------------------------------------------------------- */

struct bm_file {
	int unused;
};
static struct bm_file files[2];
FILE *const stdout = &files[0];
FILE *const stderr = &files[1];

struct out {
	char *buf;
	size_t len, pos;	/* pos counts every byte, stored or not */
};

static void out_c(struct out *o, char c)
{
	if (o->buf) {
		if (o->pos + 1 < o->len)
			o->buf[o->pos] = c;
	} else {
		if (c == '\n')
			board_putc('\r');
		board_putc(c);
	}
	o->pos++;
}

static void out_num(struct out *o, uint64_t v, unsigned int base, bool neg,
		    int width, bool zero, bool left)
{
	char tmp[24];
	int n = 0;

	do {
		tmp[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	if (neg)
		width--;
	if (zero && neg)
		out_c(o, '-');
	if (!left)
		for (int i = n; i < width; i++)
			out_c(o, zero ? '0' : ' ');
	if (!zero && neg)
		out_c(o, '-');
	while (n)
		out_c(o, tmp[--n]);
}

static void out_fmt(struct out *o, const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		bool zero = false, left = false;
		int width = 0, lng = 0, prec = -1;
		size_t start;

		if (*fmt != '%') {
			out_c(o, *fmt);
			continue;
		}
		fmt++;
		for (;; fmt++) {
			if (*fmt == '0')
				zero = true;
			else if (*fmt == '-')
				left = true;
			else
				break;
		}
		if (*fmt == '*') {
			width = va_arg(ap, int);
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		if (*fmt == '.') {
			fmt++;
			prec = 0;
			if (*fmt == '*') {
				prec = va_arg(ap, int);
				fmt++;
			}
			while (*fmt >= '0' && *fmt <= '9')
				prec = prec * 10 + (*fmt++ - '0');
		}
		for (;; fmt++) {
			if (*fmt == 'l')
				lng++;
			else if (*fmt == 'z')
				lng = 2;
			else if (*fmt != 'h')
				break;
		}
		start = o->pos;
		switch (*fmt) {
		case 'd':
		case 'i': {
			int64_t v = lng ? (lng > 1 ? va_arg(ap, long long) : va_arg(ap, long))
					: va_arg(ap, int);
			out_num(o, v < 0 ? -(uint64_t)v : (uint64_t)v, 10, v < 0,
				width, zero, left);
			break;
		}
		case 'u':
		case 'x':
		case 'X': {
			uint64_t v = lng ? (lng > 1 ? va_arg(ap, unsigned long long)
					       : va_arg(ap, unsigned long))
					 : va_arg(ap, unsigned int);
			out_num(o, v, *fmt == 'u' ? 10 : 16, false, width, zero, left);
			break;
		}
		case 'p':
			out_c(o, '0');
			out_c(o, 'x');
			out_num(o, (uintptr_t)va_arg(ap, void *), 16, false, 0, false, false);
			break;
		case 'c':
			out_c(o, (char)va_arg(ap, int));
			break;
		case 's': {
			const char *s = va_arg(ap, const char *);
			int n = 0;

			if (!s)
				s = "(null)";
			while (s[n] && (prec < 0 || n < prec))
				n++;
			if (!left)
				for (int i = n; i < width; i++)
					out_c(o, ' ');
			for (int i = 0; i < n; i++)
				out_c(o, s[i]);
			break;
		}
		case '%':
			out_c(o, '%');
			break;
		default:
			out_c(o, '%');
			if (*fmt)
				out_c(o, *fmt);
			else
				fmt--;
			break;
		}
		if (left)
			while ((int)(o->pos - start) < width)
				out_c(o, ' ');
	}
}

int vsnprintf(char *buf, size_t len, const char *fmt, va_list ap)
{
	struct out o = { .buf = buf, .len = len };

	out_fmt(&o, fmt, ap);
	if (len)
		buf[o.pos < len ? o.pos : len - 1] = 0;
	return (int)o.pos;
}

int snprintf(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	return n;
}

int printf(const char *fmt, ...)
{
	struct out o = { 0 };
	va_list ap;

	va_start(ap, fmt);
	out_fmt(&o, fmt, ap);
	va_end(ap);
	return (int)o.pos;
}

int fprintf(FILE *f, const char *fmt, ...)
{
	struct out o = { 0 };
	va_list ap;

	(void)f;
	va_start(ap, fmt);
	out_fmt(&o, fmt, ap);
	va_end(ap);
	return (int)o.pos;
}

int puts(const char *s)
{
	printf("%s\n", s);
	return 0;
}

/* ---- libatomic ----------------------------------------------------------- */

#if defined(__riscv)
/* GCC 12 calls out for a byte-sized fetch_or on RISC-V (no subword AMO);
 * an amoor.w on the aligned word that holds the byte does it (A ext). */
uint8_t bm_atomic_fetch_or_1(volatile void *p, uint8_t v, int order)
	__asm__("__atomic_fetch_or_1");
uint8_t bm_atomic_fetch_or_1(volatile void *p, uint8_t v, int order)
{
	uintptr_t a = (uintptr_t)p;
	unsigned int shift = (unsigned int)(a & 3) * 8;
	uint32_t old;

	(void)order;
	old = __atomic_fetch_or((volatile uint32_t *)(a & ~(uintptr_t)3),
				(uint32_t)v << shift, __ATOMIC_SEQ_CST);
	return (uint8_t)(old >> shift);
}
#endif
