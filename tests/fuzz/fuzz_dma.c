/* SPDX-License-Identifier: MIT */
/*
 * fuzz_dma.c - a fuzz target for the driver-side API (iodma/dma.h): a
 * device on a soft domain, with its constraints drawn from the input
 * (dma_mask, min_align, max_segment_size, segment_boundary, bounce
 * policy and pool size), driven by a stream of operations on buffers in
 * a host arena cut in 16 slots of 64 KiB (one buffer per slot at a time,
 * so that no two live maps share bytes):
 *
 *   map_single / map_single_attrs (any offset, length, direction, a
 *   per-call alignment and mask), unmap_single (also of nothing, twice),
 *   sync_for_cpu / sync_for_device (also outside any map), the device
 *   reading and writing through the domain (iodma_read / iodma_write at
 *   the IOVAs it was given), the CPU writing a TO_DEVICE buffer and
 *   syncing it, map_sg / unmap_sg of up to 6 elements, coherent
 *   allocations, registered slots, and armed faults for the next
 *   operation (the library's Nth allocation, the soft backend's next map
 *   or unmap).
 *
 * What is checked, from dma.h and Linux's DMA API contract: a map either
 * succeeds or fails with an error the header lists (and then leaves the
 * domain's mapping count as it was); every IOVA handed out lies below the
 * mask asked for and has the alignment asked for; the device reads, at
 * the IOVA, the buffer as it was at map time (or at the last
 * sync_for_device); what the device wrote is in the buffer after
 * sync_for_cpu or unmap (FROM_DEVICE, BIDIRECTIONAL); a TO_DEVICE
 * buffer is never written by an unmap; a map of registered memory is the
 * registration's IOVA plus the offset when it needs no bounce; an unmap of
 * a buffer that was neither bounced nor registered leaves its IOVAs
 * faulting; scatter-gather segments cover the elements in order, each
 * within max_segment_size and not crossing a segment_boundary line;
 * coherent memory is zeroed and shared both ways at once; unmaps, syncs
 * and frees of anything not live are -EINVAL and change nothing.  At the
 * end every bounce slot is free again and only the pool's mapping is
 * left.  abort() on any difference.
 *
 * Encoding: bytes 0-2 pick the device options; then each operation is an
 * opcode byte and up to 8 argument bytes (missing bytes read as 0).
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
#include <iodma/dma.h>
#include <iodma/domain.h>
#include <iodma/xlate.h>

#include "fuzz_target.h"

#define NSLOT   16u
#define SLOT    65536u
#define PG      4096u
#define MAXSG   6u

enum slot_use { FREE, SINGLE, SG, COHERENT, REGISTERED,
		LEFT_LIVE /* -EUCLEAN: the device may still reach it; never reused */ };

struct slot {
	enum slot_use use;
	/* SINGLE: one map.  SG: elements.  REGISTERED: the whole slot. */
	uint8_t *va;
	size_t len;
	enum iodma_dir dir;
	uint64_t iova;
	bool bounced, registered_hit;
	uint8_t *dev_view;      /* what the device must read (SINGLE) */
	bool dev_wrote;         /* the device wrote since the last sync_for_cpu */
	uint8_t *dev_data;      /* what it wrote (SINGLE, len bytes), else NULL */
	struct iodma_sg sg[MAXSG];
	size_t nents;
	/* COHERENT */
	void *cva;
	uint64_t ciova;
	size_t clen;
	/* REGISTERED */
	uint64_t reg_iova;
};

static struct {
	uint8_t *arena;
	struct iodma_domain *d;
	struct iodma_dev *dev;
	uint64_t mask, min_align, max_seg, boundary;
	enum iodma_bounce_policy policy;
	struct slot s[NSLOT];
	struct fuzz_faults arm;	/* for the next operation */
	bool left_live;         /* a -EUCLEAN left mappings the model does not know */
} S;

static struct {
	uint64_t inputs, ops, maps_ok, bounced, reg_hits, unmaps_ok, sg_ok, sg_segments,
		 coherent_ok, dev_reads, dev_writes, syncs, refused;
} fs;

/* ---- helpers ---------------------------------------------------------------------- */

static uint8_t *slot_base(unsigned int k)
{
	return S.arena + (size_t)k * SLOT;
}

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed + i * 29 + (i >> 8));
}

static void arm(void)
{
	fuzz_arm(S.d, &S.arm);
}

static void disarm(void)
{
	fuzz_disarm(S.d, &S.arm);
}

/* An error a map may return although its arguments are good: no bounce
 * slot or IOVA space (-ENOMEM), or an armed backend failure. */
static bool map_error_ok(int ret)
{
	return ret == -ENOMEM || (ret == -EIO && S.arm.map);
}

static void dev_read_check(uint64_t iova, const uint8_t *want, size_t len)
{
	uint8_t *got = malloc(len);

	int ret;

	CHECK(got);
	ret = iodma_read(S.d, iova, got, len);
	if (ret)
		fprintf(stderr, "fuzz-dma: device read of %#llx +%zu: %d\n",
			(unsigned long long)iova, len, ret);
	CHECK(ret == 0);
	CHECK(memcmp(got, want, len) == 0);
	free(got);
	fs.dev_reads++;
}

static struct iodma_dev_stats stats(void)
{
	struct iodma_dev_stats st = IODMA_STRUCT_INIT(struct iodma_dev_stats);

	iodma_dev_get_stats(S.dev, &st);
	return st;
}

/* ---- streaming maps -------------------------------------------------------------------- */

static void op_map(bool attrs)
{
	uint8_t k = u8() % NSLOT, dirb = u8(), al = u8(), mk = u8();
	uint16_t off = u16(), ln = u16();
	struct slot *s = &S.s[k];
	enum iodma_dir dir = (enum iodma_dir)(1 + dirb % 3);
	uint64_t align = 0, mask = 0, iova = 0, want_align, want_mask;
	uint64_t nmap0 = iodma_domain_nr_mappings(S.d);
	struct iodma_dev_stats b = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	struct iodma_dev_stats a = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	size_t len;
	uint8_t *va;
	int ret;

	if (s->use != FREE && s->use != REGISTERED)
		return;
	off %= SLOT;
	len = 1 + ln % (SLOT - off);
	va = slot_base(k) + off;
	if (attrs) {
		align = al & 0x80 ? 0 : 1ull << (al % 13);
		mask = mk & 0x80 ? 0 : S.mask >> (mk % 8);
		if (mask && mask < 0xffff)
			mask = 0;
	}
	if (dirb & 0x80)
		dir = (enum iodma_dir)(dirb & 0x40 ? 0 : 4); /* bad */
	fill(va, len, (uint8_t)(off + ln));
	b = stats();
	arm();
	ret = attrs ? iodma_map_single_attrs(S.dev, va, len, align, mask, dir, &iova) :
		      iodma_map_single(S.dev, va, len, dir, &iova);
	a = stats();
	if (dir < IODMA_TO_DEVICE || dir > IODMA_BIDIRECTIONAL) {
		CHECK(ret == -EINVAL);
		return;
	}
	want_align = attrs && align ? align : S.min_align ? S.min_align : 1;
	want_mask = attrs && mask ? mask : S.mask;
	if (ret) {
		bool misaligned = (uintptr_t)va % want_align != 0;

		CHECK(map_error_ok(ret) ||
		      (ret == -EINVAL && S.policy == IODMA_BOUNCE_NEVER && misaligned));
		CHECK(iodma_domain_nr_mappings(S.d) == nmap0);
		fs.refused++;
		return;
	}
	fs.maps_ok++;
	CHECK(iova + (len - 1) <= want_mask);
	CHECK(iova % want_align == 0);
	s->bounced = a.bounces > b.bounces;
	s->registered_hit = a.registered_hits > b.registered_hits;
	fs.bounced += s->bounced;
	fs.reg_hits += s->registered_hit;
	CHECK(!s->bounced || S.policy != IODMA_BOUNCE_NEVER);
	CHECK(s->bounced || S.policy != IODMA_BOUNCE_ALWAYS);
	if (s->registered_hit) {
		CHECK(s->use == REGISTERED);
		CHECK(iova == s->reg_iova + (uint64_t)(va - s->va));
	} else if (s->use == REGISTERED && !s->bounced) {
		/* Mapped on its own only when the registration's IOVA does not
		 * meet this call's mask or alignment. */
		uint64_t r = s->reg_iova + (uint64_t)(va - s->va);

		CHECK(r + (len - 1) > want_mask || r % want_align);
	}
	/* The device reads the buffer as it was at map time; a FROM_DEVICE
	 * map is write-only to it (IOMMU_WRITE alone, as Linux maps it)
	 * unless it went through the pool or registered memory (mapped
	 * read/write once for all). */
	if (dir != IODMA_FROM_DEVICE) {
		dev_read_check(iova, va, len);
	} else if (!s->bounced && !s->registered_hit) {
		uint8_t probe;

		CHECK(iodma_read(S.d, iova, &probe, 1) == -EACCES);
	}
	if (s->use == REGISTERED) {
		/* Keep the registration: the map lives in a copy of the slot. */
		struct slot r = *s;

		s->use = SINGLE;
		s->reg_iova = r.reg_iova;
		s->cva = r.va; /* the registration's start, while the map lives */
		s->clen = r.len;
	} else {
		s->use = SINGLE;
		s->cva = NULL;
	}
	s->va = va;
	s->len = len;
	s->dir = dir;
	s->iova = iova;
	s->dev_view = malloc(len);
	s->dev_data = malloc(len);
	CHECK(s->dev_view && s->dev_data);
	memcpy(s->dev_view, va, len);
	memcpy(s->dev_data, va, len);
	s->dev_wrote = false;
}

/* The device writes part of a FROM_DEVICE / BIDIRECTIONAL map. */
static void op_dev_write(void)
{
	uint8_t k = u8() % NSLOT, seed = u8();
	uint16_t off = u16(), ln = u16();
	struct slot *s = &S.s[k];
	size_t o, n;

	if (s->use != SINGLE || s->dir == IODMA_TO_DEVICE)
		return;
	o = off % s->len;
	n = 1 + ln % (s->len - o);
	fill(s->dev_data + o, n, seed);
	CHECK(iodma_write(S.d, s->iova + o, s->dev_data + o, n) == 0);
	memcpy(s->dev_view + o, s->dev_data + o, n);
	s->dev_wrote = true;
	fs.dev_writes++;
}

/* The CPU rewrites a TO_DEVICE / BIDIRECTIONAL buffer and syncs it. */
static void op_cpu_write(void)
{
	uint8_t k = u8() % NSLOT, seed = u8();
	struct slot *s = &S.s[k];

	if (s->use != SINGLE || s->dir == IODMA_FROM_DEVICE || s->dev_wrote)
		return;
	fill(s->va, s->len, seed);
	CHECK(iodma_sync_for_device(S.dev, s->iova, s->len, s->dir) == 0);
	memcpy(s->dev_view, s->va, s->len);
	memcpy(s->dev_data, s->va, s->len);
	dev_read_check(s->iova, s->va, s->len);
	fs.syncs++;
}

/* sync_for_cpu of a part, or of something that is no map. */
static void op_sync_cpu(void)
{
	uint8_t k = u8() % NSLOT, how = u8();
	uint16_t off = u16(), ln = u16();
	struct slot *s = &S.s[k];
	size_t o, n;

	if (s->use != SINGLE) {
		uint64_t iova = 0x1000ull * (off + 1);

		/* Not inside a live map (the slot's own IOVAs are free now
		 * or belong to nothing streaming of ours): -EINVAL. */
		for (unsigned int i = 0; i < NSLOT; i++) {
			const struct slot *t = &S.s[i];

			if (t->use == SINGLE && iova >= t->iova && iova - t->iova < t->len)
				return;
			for (size_t e = 0; t->use == SG && e < t->nents; e++)
				if (iova >= t->sg[e].iova && iova - t->sg[e].iova < t->sg[e].len)
					return;
		}
		CHECK(iodma_sync_for_cpu(S.dev, iova, 1, IODMA_FROM_DEVICE) == -EINVAL);
		return;
	}
	o = off % s->len;
	n = 1 + ln % (s->len - o);
	if (how & 1) {
		/* Past the end of the map. */
		CHECK(iodma_sync_for_cpu(S.dev, s->iova + o, s->len - o + 1, s->dir) == -EINVAL);
		return;
	}
	CHECK(iodma_sync_for_cpu(S.dev, s->iova + o, n, s->dir) == 0);
	if (s->dir != IODMA_TO_DEVICE && s->dev_wrote && o == 0 && n == s->len) {
		CHECK(memcmp(s->va, s->dev_data, s->len) == 0);
		s->dev_wrote = false;
	}
	fs.syncs++;
}

static void op_unmap(void)
{
	uint8_t k = u8() % NSLOT, how = u8();
	struct slot *s = &S.s[k];
	uint64_t nmap0 = iodma_domain_nr_mappings(S.d);
	uint8_t *before;
	uint8_t probe;
	int ret;

	if (s->use != SINGLE) {
		CHECK(iodma_unmap_single(S.dev, 0x7000ull + k * 0x10000, 16, IODMA_TO_DEVICE) == -EINVAL);
		return;
	}
	if (how & 1) {
		/* A wrong length or direction is no live map. */
		CHECK(iodma_unmap_single(S.dev, s->iova, s->len + 1, s->dir) == -EINVAL);
		return;
	}
	before = malloc(s->len);
	CHECK(before);
	memcpy(before, s->va, s->len);
	arm();
	ret = iodma_unmap_single(S.dev, s->iova, s->len, s->dir);
	if (ret) {
		/* Only the backend's unmap error; the map stays live. */
		CHECK(ret == -EIO && S.arm.unmap && !s->bounced && !s->registered_hit);
		CHECK(iodma_domain_nr_mappings(S.d) == nmap0);
		CHECK(memcmp(before, s->va, s->len) == 0);
		free(before);
		if (s->dir != IODMA_FROM_DEVICE)
			dev_read_check(s->iova, s->dev_view, s->len);
		return;
	}
	if (s->dir == IODMA_TO_DEVICE)
		CHECK(memcmp(before, s->va, s->len) == 0); /* never written back */
	else
		CHECK(memcmp(s->va, s->dev_data, s->len) == 0);
	free(before);
	if (!s->bounced && !s->registered_hit)
		CHECK(iodma_read(S.d, s->iova, &probe, 1) == -EFAULT);
	/* A second unmap of the same map is no live map. */
	if (how & 2)
		CHECK(iodma_unmap_single(S.dev, s->iova, s->len, s->dir) == -EINVAL);
	fs.unmaps_ok++;
	free(s->dev_view);
	free(s->dev_data);
	s->dev_view = s->dev_data = NULL;
	if (s->cva) {
		/* Back to the registration it lives in. */
		s->use = REGISTERED;
		s->va = s->cva;
		s->len = s->clen;
		s->cva = NULL;
	} else {
		s->use = FREE;
	}
}

/* ---- scatter-gather -------------------------------------------------------------------------- */

static void op_sg(void)
{
	uint8_t k = u8() % NSLOT, n = 1 + u8() % MAXSG, dirb = u8();
	struct slot *s = &S.s[k];
	enum iodma_dir dir = (enum iodma_dir)(1 + dirb % 3);
	uint64_t nmap0 = iodma_domain_nr_mappings(S.d), total = 0, segsum = 0;
	size_t at = 0;
	int ret;

	if (s->use == SG) {
		/* Unmap it; the device's view of each element was its data. */
		CHECK(iodma_unmap_sg(S.dev, s->sg, s->nents, s->dir) == 0);
		s->use = FREE;
		return;
	}
	if (s->use != FREE)
		return;
	memset(s->sg, 0, sizeof(s->sg));
	for (unsigned int i = 0; i < n; i++) {
		uint16_t gap = u8() & 1 ? 0 : u8(), ln = u16();
		size_t len;

		at += gap;
		if (at >= SLOT - 1)
			break;
		len = 1 + ln % ((SLOT - at) / (n - i) > 1 ? (SLOT - at) / (n - i) : 1);
		if (u8() & 1) {
			/* Page-sized, page-aligned pieces: they merge. */
			at = (at + PG - 1) / PG * PG;
			if (at + PG > SLOT)
				break;
			len = PG;
		}
		s->sg[i].va = slot_base(k) + at;
		s->sg[i].len = len;
		fill(s->sg[i].va, len, (uint8_t)(i * 17 + dirb));
		at += len;
		total += len;
		s->nents = i + 1;
	}
	if (!s->nents)
		return;
	arm();
	ret = iodma_map_sg(S.dev, s->sg, s->nents, dir);
	if (ret == -EUCLEAN) {
		/* Something failed and the rollback's unmap too (armed). */
		CHECK(S.arm.unmap);
		s->use = LEFT_LIVE;
		S.left_live = true;
		return;
	}
	if (ret < 0) {
		bool too_long = false; /* or misaligned under NEVER */

		for (size_t i = 0; i < s->nents; i++)
			too_long |= (S.max_seg && s->sg[i].len > S.max_seg) ||
				    (S.boundary && s->sg[i].len > S.boundary + 1) ||
				    (S.policy == IODMA_BOUNCE_NEVER && S.min_align &&
				     (uintptr_t)s->sg[i].va % S.min_align) ||
				    (S.policy == IODMA_BOUNCE_NEVER && S.boundary &&
				     (uintptr_t)s->sg[i].va % PG + s->sg[i].len > S.boundary + 1);
		if (!(map_error_ok(ret) || (ret == -EINVAL && too_long)))
			fprintf(stderr, "fuzz-dma: map_sg of %zu: %d (policy %d, max_seg %#llx, boundary %#llx)\n",
				s->nents, ret, S.policy, (unsigned long long)S.max_seg,
				(unsigned long long)S.boundary);
		for (size_t i = 0; i < s->nents && !(map_error_ok(ret) || too_long); i++)
			fprintf(stderr, "  element %zu: va %p len %#zx min_align %#llx\n", i,
				s->sg[i].va, s->sg[i].len, (unsigned long long)S.min_align);
		CHECK(map_error_ok(ret) || (ret == -EINVAL && too_long));
		CHECK(iodma_domain_nr_mappings(S.d) == nmap0);
		fs.refused++;
		return;
	}
	CHECK(ret >= 1 && (size_t)ret <= s->nents);
	/* Segments: in bounds of the device's limits, covering the elements. */
	for (int i = 0; i < ret; i++) {
		uint64_t a = s->sg[i].seg_iova, l = s->sg[i].seg_len;

		CHECK(l > 0 && a + (l - 1) <= S.mask);
		CHECK(!S.max_seg || l <= S.max_seg);
		CHECK(!S.boundary || (a & ~S.boundary) == ((a + l - 1) & ~S.boundary));
		segsum += l;
	}
	CHECK(segsum == total);
	for (size_t i = 0; i < s->nents; i++) {
		bool covered = false;

		for (int j = 0; j < ret && !covered; j++)
			covered = s->sg[i].iova >= s->sg[j].seg_iova &&
				  s->sg[i].iova + s->sg[i].len <= s->sg[j].seg_iova + s->sg[j].seg_len;
		CHECK(covered);
		CHECK((s->sg[i].iova + (s->sg[i].len - 1)) <= S.mask);
		if (dir != IODMA_FROM_DEVICE)
			dev_read_check(s->sg[i].iova, s->sg[i].va, s->sg[i].len);
	}
	s->use = SG;
	s->dir = dir;
	fs.sg_ok++;
	fs.sg_segments += (uint64_t)ret;
}

/* ---- coherent memory and registration -------------------------------------------------------- */

static void op_coherent(void)
{
	uint8_t k = u8() % NSLOT, seed = u8();
	uint16_t ln = u16();
	struct slot *s = &S.s[k];
	uint64_t nmap0 = iodma_domain_nr_mappings(S.d);
	size_t len = 1 + ln % (4 * PG);
	void *va = NULL;
	uint64_t iova = 0;
	uint8_t buf[64];
	int ret;

	if (s->use == COHERENT) {
		if (seed & 1)
			CHECK(iodma_free_coherent(S.dev, s->clen, s->cva, s->ciova + PG) == -EINVAL);
		CHECK(iodma_free_coherent(S.dev, s->clen, s->cva, s->ciova) == 0);
		CHECK(iodma_read(S.d, s->ciova, buf, 1) == -EFAULT);
		s->use = FREE;
		return;
	}
	if (s->use != FREE)
		return;
	arm();
	ret = iodma_alloc_coherent(S.dev, len, &va, &iova);
	if (ret) {
		CHECK(map_error_ok(ret));
		CHECK(iodma_domain_nr_mappings(S.d) == nmap0);
		return;
	}
	CHECK(iova + (len - 1) <= S.mask);
	CHECK((uintptr_t)va % PG == 0);
	for (size_t i = 0; i < len; i++)
		CHECK(((uint8_t *)va)[i] == 0);
	/* Shared both ways, no sync. */
	fill(va, len, seed);
	dev_read_check(iova, va, len);
	fill(buf, sizeof(buf), (uint8_t)~seed);
	CHECK(iodma_write(S.d, iova, buf, len < sizeof(buf) ? len : sizeof(buf)) == 0);
	CHECK(memcmp(va, buf, len < sizeof(buf) ? len : sizeof(buf)) == 0);
	s->use = COHERENT;
	s->cva = va;
	s->ciova = iova;
	s->clen = len;
	fs.coherent_ok++;
}

static void op_register(void)
{
	uint8_t k = u8() % NSLOT;
	struct slot *s = &S.s[k];
	uint64_t iova = 0, nmap0 = iodma_domain_nr_mappings(S.d);
	int ret;

	if (s->use == REGISTERED) {
		CHECK(iodma_dev_unregister(S.dev, s->va, s->len) == 0);
		CHECK(iodma_dev_unregister(S.dev, s->va, s->len) == -ENOENT);
		s->use = FREE;
		return;
	}
	if (s->use == SINGLE && s->cva) {
		/* A streaming map served by the registration lives: busy.  A
		 * bounced one does not use it. */
		if (s->registered_hit) {
			CHECK(iodma_dev_unregister(S.dev, s->cva, s->clen) == -EBUSY);
		} else {
			CHECK(iodma_dev_unregister(S.dev, s->cva, s->clen) == 0);
			s->cva = NULL;
		}
		return;
	}
	if (s->use != FREE)
		return;
	arm();
	ret = iodma_dev_register(S.dev, slot_base(k), SLOT, &iova);
	if (ret) {
		CHECK(map_error_ok(ret));
		CHECK(iodma_domain_nr_mappings(S.d) == nmap0);
		return;
	}
	CHECK(iova + (SLOT - 1) <= S.mask);
	{
		uint64_t got;

		CHECK(iodma_va_to_iova(S.dev, slot_base(k) + 100, 200, &got) == 0);
		CHECK(got == iova + 100);
	}
	s->use = REGISTERED;
	s->va = slot_base(k);
	s->len = SLOT;
	s->reg_iova = iova;
}

static void op_arm(void)
{
	uint8_t what = u8();

	S.arm.alloc = what & 1;
	S.arm.map = what & 2;
	S.arm.unmap = what & 4;
}

/* ---- one input ---------------------------------------------------------------------------------- */

static void release_all(void)
{
	for (unsigned int k = 0; k < NSLOT; k++) {
		struct slot *s = &S.s[k];

		switch (s->use) {
		case SINGLE:
			CHECK(iodma_unmap_single(S.dev, s->iova, s->len, s->dir) == 0);
			free(s->dev_view);
			free(s->dev_data);
			if (s->cva)
				CHECK(iodma_dev_unregister(S.dev, s->cva, s->clen) == 0);
			break;
		case SG:
			CHECK(iodma_unmap_sg(S.dev, s->sg, s->nents, s->dir) == 0);
			break;
		case COHERENT:
			CHECK(iodma_free_coherent(S.dev, s->clen, s->cva, s->ciova) == 0);
			break;
		case REGISTERED:
			CHECK(iodma_dev_unregister(S.dev, s->va, s->len) == 0);
			break;
		case FREE:
		case LEFT_LIVE:
			break;
		}
		s->use = FREE;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	static const uint64_t masks[4] = { 0, 0xffffffffull, 0xfffffffffull, 0x7fffffffull };
	struct iodma_dev_stats st = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	uint8_t c0, c1, c2;
	uint64_t pool_maps;

	static int trace = -1;

	if (trace < 0)
		trace = getenv("IODMA_FUZZ_TRACE") != NULL;
	if (size < 3)
		return 0;
	fuzz_stream = (struct fuzz_in){ data, size };
	c0 = u8();
	c1 = u8();
	c2 = u8();
	memset(&S, 0, sizeof(S));
	S.arena = mmap(NULL, NSLOT * SLOT, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	if (S.arena == MAP_FAILED)
		return 0;
	CHECK(iodma_domain_create(NULL, &S.d) == 0);
	S.mask = masks[c0 & 3] ? masks[c0 & 3] : UINT64_MAX;
	S.min_align = c0 & 4 ? 1ull << (c1 % 10) : 0;
	S.max_seg = c0 & 8 ? (uint64_t)PG << (c1 >> 4 & 3) : 0;
	S.boundary = c0 & 16 ? ((uint64_t)PG << (c2 & 3) << 2) - 1 : 0;
	S.policy = (enum iodma_bounce_policy)((c0 >> 5) % 3);
	o.domain = S.d;
	o.dma_mask = masks[c0 & 3];
	o.min_align = S.min_align;
	o.max_segment_size = S.max_seg;
	o.segment_boundary = S.boundary;
	o.bounce = S.policy;
	o.bounce_pool_size = c2 & 0x80 ? 64 * 1024 : 0;
	o.bounce_slot_size = c2 & 0x40 ? 512 : 0;
	CHECK(iodma_dev_create(&o, &S.dev) == 0);
	pool_maps = iodma_domain_nr_mappings(S.d);
	fs.inputs++;
	while (fuzz_stream.left) {
		uint8_t op = u8();

		fs.ops++;
		if (trace)
			fprintf(stderr, "op %u (%zu bytes left)\n", op % 12, fuzz_stream.left);
		switch (op % 12) {
		case 0: case 1: op_map(false); break;
		case 2: op_map(true); break;
		case 3: case 4: op_unmap(); break;
		case 5: op_dev_write(); break;
		case 6: op_cpu_write(); break;
		case 7: op_sync_cpu(); break;
		case 8: op_sg(); break;
		case 9: op_coherent(); break;
		case 10: op_register(); break;
		case 11: op_arm(); continue;
		}
		disarm();
	}
	release_all();
	st = stats();
	if (!S.left_live) {
		CHECK(st.bounce_slots_used == 0);
		CHECK(iodma_domain_nr_mappings(S.d) == pool_maps);
	}
	iodma_dev_destroy(S.dev);
	if (!S.left_live)
		CHECK(iodma_domain_nr_mappings(S.d) == 0);
	iodma_domain_destroy(S.d);
	munmap(S.arena, NSLOT * SLOT);
	return 0;
}

/* ---- for the standalone driver ---------------------------------------------------------------- */

static int fdma_write_seeds(const char *dir)
{
	static const uint8_t s1[] = {           /* 32-bit mask, aligned 64 B */
		0x05, 0x06, 0x00,
		0x00, 1, 2, 0, 0, 0x10, 0x00, 0x00, 0x20,      /* map FROM_DEVICE */
		0x05, 1, 0x33, 0, 0, 0x00, 0x10,               /* device writes */
		0x07, 1, 0, 0, 0, 0xff, 0xff,                  /* sync for cpu */
		0x03, 1, 2,                                    /* unmap, unmap again */
		0x00, 2, 0, 0, 0, 0x01, 0x00, 0x00, 0x30,      /* map TO_DEVICE */
		0x06, 2, 0x44,                                 /* cpu writes + sync */
		0x03, 2, 0,
	};
	static const uint8_t s2[] = {           /* bounce always, 512 B slots */
		0x40, 0x00, 0x40,
		0x00, 3, 0, 0, 0, 0x00, 0x00, 0x00, 0x08,
		0x08, 4, 3, 2, 1, 0x00, 0x10, 1, 0, 0x00, 0x10, 1, 1, 0x00, 0x30, 0,
		0x08, 4,                                       /* unmap the list */
		0x03, 3, 0,
		0x09, 5, 0x11, 0x00, 0x20,                     /* coherent */
		0x09, 5, 0x01,                                 /* freed */
	};
	static const uint8_t s3[] = {           /* segment limits, registration */
		0x19, 0x10, 0x01,
		0x0a, 6,                                       /* register slot 6 */
		0x00, 6, 2, 0, 0, 0x00, 0x02, 0x00, 0x08,
		0x0a, 6,                                       /* busy */
		0x03, 6, 0,
		0x0a, 6,                                       /* unregister */
		0x0b, 0x02,                                    /* arm: backend map fails */
		0x00, 7, 0, 0, 0, 0x00, 0x00, 0x00, 0x40,
		0x08, 8, 5, 0, 0, 0x00, 0x40, 1, 0, 0x00, 0x40, 1, 0, 0x00, 0x40, 1,
	};

	if (fuzz_write_file(dir, "map-write-sync-unmap", s1, sizeof(s1)) ||
	    fuzz_write_file(dir, "bounce-sg-coherent", s2, sizeof(s2)) ||
	    fuzz_write_file(dir, "limits-register-faults", s3, sizeof(s3)))
		return -1;
	return 3;
}

static int fdma_summary(long generated)
{
	printf("  operations %llu: maps %llu (bounced %llu, registered %llu, refused %llu), "
	       "unmaps %llu, sg lists %llu (%llu segments), coherent %llu, device reads %llu / "
	       "writes %llu, syncs %llu\n",
	       (unsigned long long)fs.ops, (unsigned long long)fs.maps_ok,
	       (unsigned long long)fs.bounced, (unsigned long long)fs.reg_hits,
	       (unsigned long long)fs.refused, (unsigned long long)fs.unmaps_ok,
	       (unsigned long long)fs.sg_ok, (unsigned long long)fs.sg_segments,
	       (unsigned long long)fs.coherent_ok, (unsigned long long)fs.dev_reads,
	       (unsigned long long)fs.dev_writes, (unsigned long long)fs.syncs);
	if (generated >= 1000 && (!fs.maps_ok || !fs.bounced || !fs.reg_hits || !fs.unmaps_ok ||
				  !fs.sg_ok || !fs.coherent_ok || !fs.dev_writes)) {
		fprintf(stderr, "fuzz-dma: the inputs reached too little state\n");
		return 1;
	}
	return 0;
}

const struct fuzz_target fuzz_target = {
	.name = "fuzz-dma",
	.count = { 20000, 1000, 300 },
	.threads = NULL,
	.write_seeds = fdma_write_seeds,
	.summary = fdma_summary,
};
