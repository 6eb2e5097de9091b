/* SPDX-License-Identifier: MIT */
/*
 * fuzz_domain.c - a fuzz target for the domain operation stream
 * (iodma/domain.h, iodma/xlate.h) against a reference model.
 *
 * One input = one fresh soft domain over a 256-granule IOVA window made of
 * two valid ranges with a hole between them, a 64-granule host buffer, and
 * a stream of operations, each decoded from a few bytes:
 *
 *   map (at a fixed IOVA, or inside an IOVA allocation), strict unmap,
 *   unmap with gaps, unmap all, translate, iodma_read / iodma_write,
 *   iova_alloc, iova_free, a listener added or removed (it may reject the
 *   next map), the IOVA dirty log (start, stop, get-and-clear), and armed
 *   faults for the next operation: the library's Nth allocation fails, the
 *   soft backend's next map or unmap fails, the listener rejects the next
 *   map.
 *
 * Every operation's result is checked against the model, a plain sorted
 * array of mappings and allocations that follows domain.h's rules: the
 * errors it may return (all those whose condition holds: the header does
 * not order them) and 0 exactly when none holds and no fault was armed;
 * an error changes nothing (the mapping list, nr_mappings, the listener's
 * view, the allocations); a translation gives the host bytes the model
 * names, merges host-contiguous pieces, and faults at the first byte the
 * model says it must, with the reason it must; a copy that fails copies
 * nothing; a dirty harvest reports every page written since the last one.
 * After every operation the whole mapping list (for_each_mapping over the
 * window) and the listener's view are compared with the model.  abort() on
 * any difference.
 *
 * Encoding: byte 0 picks the options (mapping limit 8 or the default,
 * granule 4 KiB or 8 KiB); then each operation is one opcode byte followed
 * by up to 7 argument bytes (missing bytes read as 0).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <iodma/backend.h>
#include <iodma/test-hooks.h>
#include <iodma/domain.h>
#include <iodma/xlate.h>

#include "fuzz_target.h"

#define NPG      256u      /* IOVA window, granules */
#define HPG      64u       /* host buffer, granules */
#define HOLE_LO  200u      /* granules [HOLE_LO, HOLE_HI) are not valid */
#define HOLE_HI  208u
#define MAXMAP   512u
#define MAXALLOC 64u
#define MAXSLICE 8u

struct mmap_rec {
	uint64_t iova, len, host;       /* host: byte offset in the buffer */
	uint32_t perm;
	bool listener_has;              /* the listener accepted it */
};

struct alloc_rec {
	uint64_t iova, len;             /* len as passed to iodma_iova_alloc */
	uint64_t span;                  /* len rounded up to the granule */
};

static struct state {
	uint64_t base, g;               /* window start, granule */
	uint32_t max_mappings;
	uint8_t *host;                  /* HPG * g bytes, granule-aligned */
	size_t host_len;
	void *map;                      /* the mmap holding it */
	struct iodma_domain *d;

	struct mmap_rec m[MAXMAP];
	unsigned int nm;
	struct alloc_rec a[MAXALLOC];
	unsigned int na;

	/* The listener. */
	struct iodma_listener *lis;
	bool lis_reject;                /* reject the next map */
	struct { uint64_t iova, len; } lview[MAXMAP];
	unsigned int nl;

	/* The IOVA dirty log. */
	bool logging, log_lost;
	uint8_t must[NPG], may[NPG];    /* per window granule */

	/* Faults armed for the next operation. */
	struct fuzz_faults arm;
	bool arm_reject;                /* the listener refuses the next map */
} S;

struct fuzz_domain_stats {
	uint64_t inputs, ops, ok, rejected, maps_ok, unmaps_ok, xlate_ok,
		 xlate_fault, copies_ok, allocs_ok, frees_ok, harvests, euclean,
		 enomem;
} fd_stats;

/* ---- the model ------------------------------------------------------------------- */

static bool overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

static bool in_valid_range(uint64_t iova, uint64_t len)
{
	uint64_t lo = S.base, mid_lo = S.base + HOLE_LO * S.g, mid_hi = S.base + HOLE_HI * S.g,
		 hi = S.base + NPG * S.g;

	/* By last byte: the top page [2^64 - g, 2^64) is a range. */
	return (iova >= lo && iova + (len - 1) < mid_lo) ||
	       (iova >= mid_hi && iova + (len - 1) < hi);
}

static int find_map(uint64_t addr)
{
	for (unsigned int i = 0; i < S.nm; i++)
		if (addr >= S.m[i].iova && addr - S.m[i].iova < S.m[i].len)
			return (int)i;
	return -1;
}

static void model_add(uint64_t iova, uint64_t len, uint64_t host, uint32_t perm,
		      bool listener_has)
{
	unsigned int i = S.nm;

	CHECK(S.nm < MAXMAP);
	while (i && S.m[i - 1].iova > iova) {
		S.m[i] = S.m[i - 1];
		i--;
	}
	S.m[i] = (struct mmap_rec){ iova, len, host, perm, listener_has };
	S.nm++;
}

static void model_remove(unsigned int i)
{
	memmove(&S.m[i], &S.m[i + 1], (S.nm - i - 1) * sizeof(S.m[0]));
	S.nm--;
}

/* Maps inside [iova, iova + len) */
static unsigned int maps_inside(uint64_t iova, uint64_t len)
{
	unsigned int n = 0;

	for (unsigned int i = 0; i < S.nm; i++)
		n += overlap(S.m[i].iova, S.m[i].len, iova, len);
	return n;
}

/* ---- the library's view, compared with the model ---------------------------------- */

struct seen {
	unsigned int n;
	bool bad;
};

static int visit(void *arg, const struct iodma_map_event *ev)
{
	struct seen *sn = arg;
	const struct mmap_rec *m;

	if (sn->n >= S.nm) {
		sn->bad = true;
		return 1;
	}
	m = &S.m[sn->n++];
	if (ev->iova != m->iova || ev->len != m->len ||
	    ev->va != S.host + m->host || ev->perm != m->perm || ev->fd != -1)
		sn->bad = true;
	return 0;
}

static void compare(void)
{
	struct seen sn = { 0 };
	unsigned int nl = 0;

	CHECK(iodma_domain_nr_mappings(S.d) == S.nm);
	CHECK(iodma_domain_for_each_mapping(S.d, 0, UINT64_MAX, visit, &sn) == 0);
	CHECK(!sn.bad);
	CHECK(sn.n == S.nm);
	if (!S.lis) {
		CHECK(S.nl == 0);
		return;
	}
	/* The listener holds exactly the mappings it accepted. */
	for (unsigned int i = 0; i < S.nm; i++) {
		if (!S.m[i].listener_has)
			continue;
		CHECK(nl < S.nl);
		CHECK(S.lview[nl].iova == S.m[i].iova && S.lview[nl].len == S.m[i].len);
		nl++;
	}
	CHECK(nl == S.nl);
}

/* ---- the listener ------------------------------------------------------------------- */

static int lis_map(void *arg, const struct iodma_map_event *ev)
{
	unsigned int i;

	(void)arg;
	if (S.lis_reject) {
		S.lis_reject = false;
		return -EPERM;
	}
	CHECK(S.nl < MAXMAP);
	for (i = 0; i < S.nl; i++)
		CHECK(!overlap(S.lview[i].iova, S.lview[i].len, ev->iova, ev->len));
	i = S.nl;
	while (i && S.lview[i - 1].iova > ev->iova) {
		S.lview[i] = S.lview[i - 1];
		i--;
	}
	S.lview[i].iova = ev->iova;
	S.lview[i].len = ev->len;
	S.nl++;
	return 0;
}

static void lis_unmap(void *arg, uint64_t iova, uint64_t len)
{
	unsigned int i = 0;

	(void)arg;
	CHECK(len && iova + len > iova);
	while (i < S.nl) {
		uint64_t a = S.lview[i].iova, l = S.lview[i].len;

		if (a >= iova && a + l <= iova + len) {
			memmove(&S.lview[i], &S.lview[i + 1], (S.nl - i - 1) * sizeof(S.lview[0]));
			S.nl--;
			continue;
		}
		/* Never bisects what the listener accepted. */
		CHECK(!overlap(a, l, iova, len));
		i++;
	}
}

static const struct iodma_listener_ops lis_ops = { lis_map, lis_unmap };

/* ---- faults armed for one operation ------------------------------------------------- */

static void arm(void)
{
	fuzz_arm(S.d, &S.arm);
	S.lis_reject = S.arm_reject;
}

static void disarm(void)
{
	fuzz_disarm(S.d, &S.arm);
	S.lis_reject = false;
	S.arm_reject = false;
}

/* ---- operations ---------------------------------------------------------------------- */

/* The errors an operation may return, as a bit set over a few errnos. */
enum { E_INVAL = 1, E_RANGE = 2, E_EXIST = 4, E_NOSPC = 8, E_NOMEM = 16, E_IO = 32,
       E_PERM = 64, E_UCLEAN = 128, E_NOENT = 256, E_BUSY = 512 };

static unsigned int ebit(int ret)
{
	switch (ret) {
	case -EINVAL: return E_INVAL;
	case -ERANGE: return E_RANGE;
	case -EEXIST: return E_EXIST;
	case -ENOSPC: return E_NOSPC;
	case -ENOMEM: return E_NOMEM;
	case -EIO: return E_IO;
	case -EPERM: return E_PERM;
	case -EUCLEAN: return E_UCLEAN;
	case -ENOENT: return E_NOENT;
	case -EBUSY: return E_BUSY;
	default: return 1u << 30;
	}
}

static uint64_t iova_of(uint8_t pg, uint8_t esc)
{
	uint64_t iova = S.base + (uint64_t)pg * S.g;

	switch (esc & 15) {
	case 1: return iova + S.g / 2;                  /* misaligned */
	case 2: return UINT64_MAX - S.g + 1;            /* the top page */
	case 3: return S.base - S.g;                    /* below the window */
	default: return iova;
	}
}

static void op_map(bool in_alloc)
{
	uint8_t pg = u8(), n = u8(), hpg = u8(), pm = u8(), esc = u8();
	uint64_t iova, len, host;
	uint32_t perm = pm & 3;
	unsigned int errs = 0, i;
	bool inside = false; /* wholly inside one allocation already seen */
	void *va;
	int ret;

	if (pm & 0x80)
		perm = pm & 7; /* 4..7: a bit that is no permission */
	hpg %= HPG;
	len = (uint64_t)(1 + n % 16) * S.g;
	if (len > (HPG - hpg) * S.g)
		len = (HPG - hpg) * S.g;
	host = (uint64_t)hpg * S.g;
	if (in_alloc && S.na) {
		const struct alloc_rec *a = &S.a[pg % S.na];

		iova = a->iova + (uint64_t)(n % (a->span / S.g)) * S.g;
	} else {
		iova = iova_of(pg, esc);
	}
	va = S.host + host;
	switch (esc >> 4) {
	case 1: len = 0; break;
	case 2: len += S.g / 2; break;                  /* not a granule multiple */
	case 3: va = (uint8_t *)va + 8; break;          /* misaligned host */
	case 4: va = NULL; break;
	default: break;
	}
	/* The errors whose condition holds. */
	if (len == 0 || len % S.g || iova % S.g || iova + (len - 1) < iova || !va ||
	    (uintptr_t)va % S.g || perm == 0 || (perm & ~3u))
		errs |= E_INVAL;
	if (!(errs & E_INVAL)) {
		if (!in_valid_range(iova, len))
			errs |= E_RANGE;
		if (maps_inside(iova, len))
			errs |= E_EXIST;
		for (i = 0; i < S.na; i++) {
			const struct alloc_rec *a = &S.a[i];

			if (!overlap(a->iova, a->span, iova, len))
				continue;
			if (iova >= a->iova && iova + len <= a->iova + a->span && !inside)
				inside = true;
			else
				errs |= E_EXIST; /* partly inside, or two */
		}
		if (S.nm >= S.max_mappings)
			errs |= E_NOSPC;
	}
	arm();
	ret = iodma_domain_map(S.d, iova, len, va, perm);
	if (ret == 0) {
		CHECK(errs == 0);
		model_add(iova, len, host, perm, S.lis != NULL);
		fd_stats.maps_ok++;
	} else if (ret == -EUCLEAN) {
		/* The listener rejected it, the backend kept it: live. */
		CHECK(errs == 0 && S.arm_reject && S.arm.unmap && S.lis);
		model_add(iova, len, host, perm, false);
		fd_stats.euclean++;
	} else {
		/* An allocation may fail before the checks (the header
		 * does not order the errors). */
		unsigned int may = errs | (S.arm.alloc ? E_NOMEM : 0);

		if (!errs) {
			may |= S.arm.map ? E_IO : 0;
			may |= S.arm_reject && S.lis ? E_PERM : 0;
		}
		if (!(ebit(ret) & may))
			fprintf(stderr, "map %#llx +%#llx va %p perm %u: %d, may %#x\n",
				(unsigned long long)iova, (unsigned long long)len, va, perm,
				ret, may);
		CHECK(ebit(ret) & may);
	}
}

static void op_unmap(bool gaps)
{
	uint8_t pg = u8(), n = u8(), esc = u8();
	uint64_t iova = iova_of(pg, esc), len = (uint64_t)(1 + n % 24) * S.g, done = 0, sum = 0;
	unsigned int errs = 0, i;
	int ret;

	if ((esc >> 4) == 1)
		len = 0;
	else if ((esc >> 4) == 2)
		len += 1;
	/* A mapping picked to be the start of the range, to hit exact tilings. */
	if ((esc >> 4) >= 8 && S.nm) {
		const struct mmap_rec *m = &S.m[pg % S.nm];
		unsigned int k = (unsigned int)(pg % S.nm), extra = n % 3;

		iova = m->iova;
		len = m->len;
		while (extra-- && k + 1 < S.nm && S.m[k + 1].iova == S.m[k].iova + S.m[k].len)
			len += S.m[++k].len;
	}
	if (len == 0 || len % S.g || iova % S.g || iova + (len - 1) < iova) {
		errs |= E_INVAL;
	} else if (gaps) {
		for (i = 0; i < S.nm; i++) {
			const struct mmap_rec *m = &S.m[i];

			if (!overlap(m->iova, m->len, iova, len))
				continue;
			if (m->iova < iova || m->iova + m->len > iova + len)
				errs |= E_INVAL; /* would be bisected */
			sum += m->len;
		}
	} else {
		/* Exactly tiled by whole contiguous mappings. */
		uint64_t at = iova;

		while (at < iova + len) {
			int k = find_map(at);

			if (k < 0 || S.m[k].iova != at) {
				errs |= E_INVAL;
				break;
			}
			at += S.m[k].len;
		}
		if (at != iova + len)
			errs |= E_INVAL;
		sum = len;
	}
	arm();
	ret = gaps ? iodma_domain_unmap_gaps(S.d, iova, len, &done) :
		     iodma_domain_unmap(S.d, iova, len);
	if (ret == 0) {
		CHECK(errs == 0);
		CHECK(!gaps || done == sum);
		for (i = 0; i < S.nm;) {
			if (overlap(S.m[i].iova, S.m[i].len, iova, len))
				model_remove(i);
			else
				i++;
		}
		fd_stats.unmaps_ok++;
	} else {
		/* Never fails for lack of memory (domain.h); a backend error
		 * only when it was armed and a mapping was there to unmap. */
		CHECK(ebit(ret) & (errs ? errs : (S.arm.unmap && sum ? E_IO : 0)));
	}
}

static void op_unmap_all(void)
{
	uint64_t done = 0, sum = 0;
	int ret;

	for (unsigned int i = 0; i < S.nm; i++)
		sum += S.m[i].len;
	arm();
	ret = iodma_domain_unmap_all(S.d, &done);
	if (ret == 0) {
		CHECK(done == sum);
		S.nm = 0;
	} else {
		CHECK(ret == -EIO && S.arm.unmap && sum);
	}
}

/* What a request of @len bytes at @iova with @perm must give: the bytes
 * before the first byte that fails (-EFAULT or -EACCES at *@at), or 0. */
static int expect(uint64_t iova, uint64_t len, uint32_t perm, uint64_t *at)
{
	for (uint64_t a = iova; a - iova < len;) {
		int k = find_map(a);

		*at = a;
		if (k < 0)
			return -EFAULT;
		if ((S.m[k].perm & perm) != perm)
			return -EACCES;
		a = S.m[k].iova + S.m[k].len;
	}
	return 0;
}

/* The host address of a mapped IOVA. */
static uint8_t *host_of(uint64_t a)
{
	int k = find_map(a);

	CHECK(k >= 0);
	return S.host + S.m[k].host + (a - S.m[k].iova);
}

static void mark_written(uint64_t iova, uint64_t len, bool must)
{
	if (!S.logging || !len)
		return;
	for (uint64_t p = (iova - S.base) / S.g; p <= (iova + len - 1 - S.base) / S.g; p++) {
		if (p >= NPG)
			break;
		S.may[p] = 1;
		if (must)
			S.must[p] = 1;
	}
}

static void op_translate(void)
{
	uint8_t pg = u8(), esc = u8(), pm = u8();
	uint16_t off = u16(), ln = u16();
	uint64_t iova = iova_of(pg, esc & 0x0f) + off % S.g, len = 1 + ln % (4 * S.g), at = 0;
	uint32_t perm = 1 + pm % 3;
	size_t max = 1 + (pm >> 4) % MAXSLICE, nr = 99, n = 0;
	struct iodma_slice s[MAXSLICE];
	struct iodma_fault f = { 0 };
	uint8_t *prev_end = NULL;
	int want, ret;

	if (esc & 0x80)
		perm = pm & 0x80 ? 0 : 4; /* no permission, a bit that is none */
	if (esc & 0x40)
		len = 0;
	arm();
	if (perm == 0 || perm > 3 || len == 0 || iova + (len - 1) < iova) {
		CHECK(iodma_translate(S.d, iova, len, perm, s, max, &nr, &f) == -EINVAL);
		return;
	}
	want = expect(iova, len, perm, &at);
	/* Host-contiguous pieces merge: count the slices the good prefix needs. */
	for (uint64_t a = iova; a < (want ? at : iova + len);) {
		int k = find_map(a);
		uint64_t run = S.m[k].iova + S.m[k].len - a;
		uint8_t *h = host_of(a);

		if (run > iova + len - a)
			run = iova + len - a;
		if (!(n && h == prev_end)) {
			if (n == max) {
				want = -E2BIG;
				break;
			}
			n++;
		}
		prev_end = h + run;
		a += run;
	}
	ret = iodma_translate(S.d, iova, len, perm, s, max, &nr, &f);
	CHECK(ret == want);
	if (ret == -E2BIG) {
		CHECK(nr == max);
		return;
	}
	CHECK(nr == n);
	/* The slices are the model's bytes, in order. */
	{
		uint64_t a = iova;

		for (size_t i = 0; i < nr; i++) {
			CHECK(s[i].va == host_of(a));
			CHECK(s[i].len > 0);
			a += s[i].len;
		}
		CHECK(a == (ret ? at : iova + len));
	}
	if (ret) {
		CHECK(f.iova == at);
		CHECK(f.perm == perm);
		CHECK(f.reason == (ret == -EFAULT ? IODMA_FAULT_NOT_MAPPED : IODMA_FAULT_PERMISSION));
		CHECK(f.len > 0);
		fd_stats.xlate_fault++;
		if (perm & IODMA_PERM_WRITE)
			mark_written(iova, at - iova, false);
	} else {
		fd_stats.xlate_ok++;
		if (perm & IODMA_PERM_WRITE)
			mark_written(iova, len, true);
	}
}

static void op_copy(void)
{
	uint8_t pg = u8(), esc = u8(), wr = u8();
	uint16_t off = u16(), ln = u16();
	uint64_t iova = iova_of(pg, esc & 0x0f) + off % S.g, len = 1 + ln % (3 * S.g), at;
	uint8_t buf[3 * 8192], before[3 * 8192];
	bool write = wr & 1;
	int want, ret;

	if (iova + (len - 1) < iova)
		return;
	want = expect(iova, len, write ? IODMA_PERM_WRITE : IODMA_PERM_READ, &at);
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(wr + i * 13);
	/* The host bytes the request could reach, to see that a failure copied nothing. */
	for (uint64_t i = 0; i < len; i++) {
		int k = find_map(iova + i);

		before[i] = k >= 0 ? *host_of(iova + i) : 0;
	}
	arm();
	if (write) {
		ret = iodma_write(S.d, iova, buf, len);
	} else {
		memset(buf, 0xa5, len);
		ret = iodma_read(S.d, iova, buf, len);
	}
	CHECK(ret == want);
	for (uint64_t i = 0; i < len; i++) {
		int k = find_map(iova + i);

		if (ret == 0 && write)
			CHECK(*host_of(iova + i) == (uint8_t)(wr + i * 13));
		else if (ret == 0)
			CHECK(buf[i] == *host_of(iova + i));
		else if (k >= 0)
			CHECK(*host_of(iova + i) == before[i]);
	}
	if (ret == 0) {
		fd_stats.copies_ok++;
		if (write)
			mark_written(iova, len, true);
	}
}

static void op_alloc(void)
{
	uint8_t n = u8(), al = u8(), lim = u8();
	uint64_t len = (uint64_t)(1 + n % 16) * S.g - (n & 0x80 ? 5 : 0);
	uint64_t align = S.g << (al % 4), limit, iova = 0, span;
	unsigned int i;
	int ret;

	if (al & 0x80)
		align = 3 * S.g; /* not a power of two */
	if (al & 0x40)
		len = 0;
	limit = lim < 0x10 ? UINT64_MAX : S.base + (uint64_t)lim * S.g - 1;
	arm();
	ret = iodma_iova_alloc(S.d, len, align, limit, &iova);
	if (len == 0 || (align & (align - 1))) {
		CHECK(ret == -EINVAL);
		return;
	}
	if (ret) {
		CHECK(ret == -ENOMEM);
		return;
	}
	span = (len + S.g - 1) / S.g * S.g;
	if (align < S.g)
		align = S.g;
	CHECK(iova % align == 0);
	CHECK(iova + span - 1 <= limit);
	CHECK(in_valid_range(iova, span));
	CHECK(!maps_inside(iova, span));
	for (i = 0; i < S.na; i++)
		CHECK(!overlap(S.a[i].iova, S.a[i].span, iova, span));
	fd_stats.allocs_ok++;
	if (S.na == MAXALLOC) {
		/* Keep the model bounded: give it back at once. */
		CHECK(iodma_iova_free(S.d, iova, len) == 0);
		return;
	}
	S.a[S.na++] = (struct alloc_rec){ iova, len, span };
}

static void op_free(void)
{
	uint8_t k = u8(), esc = u8();
	struct alloc_rec a;
	int ret;

	if (!S.na || (esc & 3) == 3) {
		/* Nothing allocated there (or a wrong start). */
		uint64_t iova = S.na ? S.a[k % S.na].iova + S.g : S.base;

		for (unsigned int i = 0; i < S.na; i++)
			if (S.a[i].iova == iova)
				return;
		CHECK(iodma_iova_free(S.d, iova, S.g) == -ENOENT);
		return;
	}
	a = S.a[k % S.na];
	ret = iodma_iova_free(S.d, a.iova, a.len);
	if (maps_inside(a.iova, a.span)) {
		CHECK(ret == -EBUSY);
		return;
	}
	CHECK(ret == 0);
	S.na--;
	S.a[k % (S.na + 1)] = S.a[S.na];
	fd_stats.frees_ok++;
	/* A second free of the same allocation is refused. */
	if (esc & 4)
		CHECK(iodma_iova_free(S.d, a.iova, a.len) == -ENOENT);
}

static void op_listener(void)
{
	uint8_t what = u8();
	int ret;

	if (S.lis) {
		iodma_domain_remove_listener(S.d, S.lis);
		S.lis = NULL;
		S.nl = 0;
		for (unsigned int i = 0; i < S.nm; i++)
			S.m[i].listener_has = false;
		return;
	}
	S.lis_reject = what & 1 && S.nm; /* reject one of the replayed maps */
	arm();
	S.lis_reject = what & 1 && S.nm;
	ret = iodma_domain_add_listener(S.d, &lis_ops, NULL, &S.lis);
	if (ret == 0) {
		CHECK(!(what & 1 && S.nm));
		for (unsigned int i = 0; i < S.nm; i++)
			S.m[i].listener_has = true;
		return;
	}
	S.lis = NULL;
	CHECK(ret == -EPERM || (ret == -ENOMEM && S.arm.alloc));
	/* Whatever was replayed was taken back. */
	CHECK(S.nl == 0);
}

static void op_dirty(void)
{
	uint8_t what = u8(), pg = u8(), n = u8();
	uint64_t bits[(NPG + 63) / 64];
	int ret;

	arm();
	switch (what % 4) {
	case 0:
		ret = iodma_dirty_log_start(S.d);
		if (S.logging) {
			CHECK(ret == -EALREADY);
		} else if (ret == 0) {
			memset(S.must, 0, sizeof(S.must));
			memset(S.may, 0, sizeof(S.may));
			S.log_lost = false;
			S.logging = true;
		} else {
			CHECK(ret == -ENOMEM && S.arm.alloc);
		}
		break;
	case 1:
		ret = iodma_dirty_log_stop(S.d);
		CHECK(ret == (S.logging ? 0 : -EINVAL));
		S.logging = false;
		break;
	default: {
		uint64_t first = pg % NPG, cnt = 1 + n % (NPG - first);

		memset(bits, 0, sizeof(bits));
		ret = iodma_dirty_get_and_clear(S.d, S.base + first * S.g, cnt * S.g, bits,
						(size_t)(cnt + 63) / 64);
		if (!S.logging) {
			CHECK(ret == -EINVAL);
			break;
		}
		CHECK(ret == 0);
		fd_stats.harvests++;
		for (uint64_t i = 0; i < cnt; i++) {
			bool set = bits[i / 64] >> (i % 64) & 1;

			/* Every page written since the last harvest... */
			if (S.must[first + i])
				CHECK(set);
			/* ...and nothing never written (unless the log was lost). */
			if (set && !S.log_lost)
				CHECK(S.may[first + i]);
			S.must[first + i] = 0;
		}
		break;
	}
	}
}

static void op_arm(void)
{
	uint8_t what = u8();

	S.arm.alloc = what & 1;
	S.arm.map = what & 2;
	S.arm.unmap = what & 4;
	S.arm_reject = what & 8;
}

/* ---- one input -------------------------------------------------------------------------- */

static int setup(uint8_t cfg)
{
	struct iodma_iova_range ranges[2];
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);

	memset(&S, 0, sizeof(S));
	S.g = cfg & 2 ? 8192 : 4096;
	S.base = 0x40000000;
	S.max_mappings = cfg & 1 ? 8 : 65535;
	ranges[0] = (struct iodma_iova_range){ S.base, HOLE_LO * S.g };
	ranges[1] = (struct iodma_iova_range){ S.base + HOLE_HI * S.g, (NPG - HOLE_HI) * S.g };
	so.alignment = S.g;
	so.nr_ranges = 2;
	so.ranges = ranges;
	so.max_mappings = cfg & 1 ? 8 : 0;
	o.backend = iodma_backend_soft();
	o.backend_config = &so;
	S.host_len = HPG * S.g;
	S.map = mmap(NULL, S.host_len + S.g, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (S.map == MAP_FAILED)
		return -1;
	/* Granule-aligned (8 KiB granule on 4 KiB pages). */
	S.host = (uint8_t *)(((uintptr_t)S.map + S.g - 1) & ~(uintptr_t)(S.g - 1));
	for (size_t i = 0; i < S.host_len; i++)
		S.host[i] = (uint8_t)(i * 31 + 7);
	CHECK(iodma_domain_create(&o, &S.d) == 0);
	CHECK(iodma_domain_max_mappings(S.d) == S.max_mappings);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	fuzz_stream = (struct fuzz_in){ data, size };
	if (setup(u8()))
		return 0;
	fd_stats.inputs++;
	while (fuzz_stream.left) {
		uint8_t op = u8();

		fd_stats.ops++;
		switch (op % 16) {
		case 0: case 1: case 2: op_map(false); break;
		case 3: op_map(true); break;
		case 4: case 5: op_unmap(false); break;
		case 6: op_unmap(true); break;
		case 7: if (op & 0xf0) op_translate(); else op_unmap_all(); break;
		case 8: case 9: op_translate(); break;
		case 10: op_copy(); break;
		case 11: op_alloc(); break;
		case 12: op_free(); break;
		case 13: op_listener(); break;
		case 14: op_dirty(); break;
		case 15: op_arm(); continue; /* armed for the next operation */
		}
		if (S.logging && S.arm.alloc)
			S.log_lost = true; /* a dirty leaf may have been lost */
		disarm();
		compare();
	}
	if (S.lis)
		iodma_domain_remove_listener(S.d, S.lis);
	iodma_domain_destroy(S.d);
	munmap(S.map, S.host_len + S.g);
	return 0;
}

/* ---- for the standalone driver ------------------------------------------------------------ */

static int fd_write_seeds(const char *dir)
{
	/* A map, translations over it, a copy, an unmap; allocations and a
	 * map inside one; a listener and a rejected map; the dirty log. */
	static const uint8_t s1[] = {
		0x00,
		0x00, 4, 3, 0, 3, 0,            /* map pg 4, 4 pages, host 0, RW */
		0x00, 8, 1, 8, 1, 0,            /* map pg 8, 2 pages, host 8, R */
		0x08, 4, 0, 2, 0x10, 0, 0x00, 0x40,   /* translate */
		0x0a, 5, 0, 1, 0x20, 0, 0x00, 0x20,   /* write */
		0x04, 4, 3, 0x80,               /* strict unmap of a picked one */
		0x06, 0, 40, 0,                 /* unmap with gaps */
	};
	static const uint8_t s2[] = {
		0x01,
		0x0b, 3, 0, 0x80,               /* alloc 4 pages */
		0x03, 0, 1, 2, 3, 0,            /* map inside it */
		0x0c, 0, 0,                     /* free: busy */
		0x04, 0, 0, 0x80,               /* unmap it */
		0x0c, 0, 4,                     /* free, then a double free */
		0x0d, 0,                        /* listener */
		0x0f, 0x0c,                     /* arm: backend unmap fails, listener rejects */
		0x00, 20, 1, 5, 3, 0,           /* -> -EUCLEAN, live */
		0x0d, 1,                        /* listener off */
	};
	static const uint8_t s3[] = {
		0x00,
		0x00, 0, 7, 0, 3, 0,
		0x0e, 0,                        /* log start */
		0x0a, 1, 0, 1, 0, 0, 0x00, 0x30,  /* write */
		0x09, 2, 0, 2, 0, 0, 0x00, 0x10,  /* write translate */
		0x0e, 2, 0, 20,                 /* harvest */
		0x0f, 0x01,                     /* arm: an allocation fails */
		0x00, 30, 3, 9, 3, 0,
		0x0e, 1,                        /* log stop */
	};

	if (fuzz_write_file(dir, "map-translate-unmap", s1, sizeof(s1)) ||
	    fuzz_write_file(dir, "alloc-listener-euclean", s2, sizeof(s2)) ||
	    fuzz_write_file(dir, "dirty-log-fail-alloc", s3, sizeof(s3)))
		return -1;
	return 3;
}

static int fd_summary(long generated)
{
	const struct fuzz_domain_stats *st = &fd_stats;

	printf("  operations %llu: maps %llu (-EUCLEAN %llu), unmaps %llu, translations %llu ok / "
	       "%llu faults, copies %llu, allocs %llu, frees %llu, harvests %llu\n",
	       (unsigned long long)st->ops, (unsigned long long)st->maps_ok,
	       (unsigned long long)st->euclean, (unsigned long long)st->unmaps_ok,
	       (unsigned long long)st->xlate_ok, (unsigned long long)st->xlate_fault,
	       (unsigned long long)st->copies_ok, (unsigned long long)st->allocs_ok,
	       (unsigned long long)st->frees_ok, (unsigned long long)st->harvests);
	if (generated >= 1000 && (!st->maps_ok || !st->unmaps_ok || !st->xlate_ok ||
				  !st->xlate_fault || !st->allocs_ok || !st->frees_ok ||
				  !st->harvests)) {
		fprintf(stderr, "fuzz-domain: the inputs reached too little state\n");
		return 1;
	}
	return 0;
}

const struct fuzz_target fuzz_target = {
	.name = "fuzz-domain",
	.count = { 20000, 1000, 300 },
	.threads = NULL,
	.write_seeds = fd_write_seeds,
	.summary = fd_summary,
};
