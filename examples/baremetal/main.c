// SPDX-License-Identifier: MIT
/*
 * main.c - the virtio-blk demo driver on bare metal.
 *
 * Boots on QEMU's virt board (start_*.S), installs the iodma platform
 * hooks (the heap, identity virt_to_phys), finds a virtio-blk device in
 * the virtio-mmio slots, and runs the demo's driver (examples/virtio-blk/
 * driver.c, unchanged in its I/O path) over a virtio-mmio transport with
 * an iodma_dev in direct mode: IOVA = physical address, as for a device
 * without an IOMMU (Linux dma-direct).  It writes BM_PATTERN_MIB MiB of a
 * test pattern, reads them back, verifies them and prints one result line
 * with the cache maintenance iodma issued.  Built twice per board: the
 * device declared coherent (syncs do nothing) and non-coherent
 * (BM_NONCOHERENT: every map and sync cleans/invalidates the buffer's
 * lines, Linux's arch_sync_dma_for_device/for_cpu).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <iodma.h>
#include <iodma/platform.h>

#include "../virtio-blk/driver.h"
#include "../virtio-blk/transport.h"
#include "bm.h"
#include "board.h"
#include "dma_priv.h"

#ifndef BM_NONCOHERENT
#define BM_NONCOHERENT 0
#endif
#ifndef BM_PATTERN_MIB
#define BM_PATTERN_MIB 8
#endif
#if defined(__aarch64__)
#define CACHE_INSNS	" of dc cvac/ivac/civac"
#elif defined(__riscv_zicbom)
#define CACHE_INSNS	" of cbo.clean/inval/flush"
#else
#define CACHE_INSNS	"; no Zicbom: a fence per call, no cbo"
#endif
#define REQUEST_SIZE	(64u * 1024)
#define QUEUE_SIZE	128u

/* ---- platform hooks ------------------------------------------------------ */

static int pages_alloc(size_t len, uint32_t flags, void **va, int *fd)
{
	(void)flags;
	if (fd)		/* the core may pass NULL */
		*fd = -1;
	*va = bm_pages_alloc(len);
	return *va ? 0 : -ENOMEM;
}

static void pages_free(void *va, size_t len, int fd)
{
	(void)fd;
	bm_pages_free(va, len);
}

/* Identity map (start_aarch64.S) or no MMU (riscv64 M-mode). */
static int virt_to_phys(const void *va, uint64_t *pa)
{
	*pa = (uintptr_t)va;
	return 0;
}

/* ---- counting the cache lines (the linker's --wrap) ---------------------- */

struct line_counts {
	uint64_t clean, invalidate, clean_invalidate;
};
static struct line_counts lines;

void __real_iodma_cache_clean(const void *va, size_t len);
void __real_iodma_cache_invalidate(const void *va, size_t len);
void __real_iodma_cache_clean_invalidate(const void *va, size_t len);

static uint64_t nlines(const void *va, size_t len)
{
	uintptr_t l = iodma_cache_line_size(), a = (uintptr_t)va;

#if defined(__riscv) && !defined(__riscv_zicbom)
	/* Built without Zicbom: src/cache.c issues one fence, no cbo.* */
	(void)a;
	(void)l;
	return 0;
#else
	if (!len)
		return 0;
	return ((a + len - 1) / l) - (a / l) + 1;
#endif
}

void __wrap_iodma_cache_clean(const void *va, size_t len)
{
	lines.clean += nlines(va, len);
	__real_iodma_cache_clean(va, len);
}

void __wrap_iodma_cache_invalidate(const void *va, size_t len)
{
	lines.invalidate += nlines(va, len);
	__real_iodma_cache_invalidate(va, len);
}

void __wrap_iodma_cache_clean_invalidate(const void *va, size_t len)
{
	lines.clean_invalidate += nlines(va, len);
	__real_iodma_cache_clean_invalidate(va, len);
}

/* ---- the pattern --------------------------------------------------------- */

/* Word i of the pattern: a 64-bit mix of i (splitmix64's finaliser). */
static uint64_t pattern_word(uint64_t i)
{
	uint64_t z = i + 0x9e3779b97f4a7c15ull;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

struct stream {
	uint64_t off;		/* bytes so far */
	uint64_t bad;		/* 8-byte words that differed */
	uint64_t first_bad;	/* byte offset of the first, or UINT64_MAX */
};

static int source(void *arg, void *buf, size_t len)
{
	struct stream *s = arg;
	uint64_t *w = buf;

	for (size_t i = 0; i < len / 8; i++)
		w[i] = pattern_word(s->off / 8 + i);
	s->off += len;
	return 0;
}

static int sink(void *arg, const void *buf, size_t len)
{
	struct stream *s = arg;
	const uint64_t *w = buf;

	for (size_t i = 0; i < len / 8; i++) {
		uint64_t want = pattern_word(s->off / 8 + i);

#ifdef BM_SABOTAGE
		/* Proves the check sharp: one word of the read is taken as
		 * changed, so the run must report it. */
		if (s->off / 8 + i == 12345)
			want ^= 1;
#endif
		if (w[i] != want) {
			if (!s->bad)
				s->first_bad = s->off + i * 8;
			s->bad++;
		}
	}
	s->off += len;
	return 0;
}

/* ---- main ---------------------------------------------------------------- */

static struct vblk_transport *find_device(uintptr_t *where)
{
	for (unsigned int i = 0; i < board.vmmio_slots; i++) {
		uintptr_t base = board.vmmio_base + i * board.vmmio_stride;
		struct vblk_transport *t;
		const char *msg = "";

		if (vblk_vmmio_transport_create(base, &t))
			return NULL;
		if (!t->ops->probe(t, &msg)) {
			*where = base;
			return t;
		}
		if (*(volatile uint32_t *)(base + 8) != 0)	/* DeviceID 0: empty slot */
			printf("baremetal: slot %u at 0x%llx: %s\n", i,
			       (unsigned long long)base, msg);
		t->ops->destroy(t);
	}
	return NULL;
}

static uint64_t cycles_ms(uint64_t t0)
{
	return (board_ticks() - t0) * 1000 / board_tick_hz();
}

int bm_main(void)
{
	struct iodma_platform_ops plat = IODMA_OPTS_INIT(struct iodma_platform_ops);
	struct iodma_dev_opts devopts = IODMA_OPTS_INIT(struct iodma_dev_opts);
	const uint64_t len = (uint64_t)BM_PATTERN_MIB << 20;
	struct stream wr = { 0 }, rd = { .first_bad = UINT64_MAX };
	struct vblk_driver_opts dopts = { 0 };
	struct vblk_driver_info info;
	struct vblk_vmmio_counts vc;
	struct dma_cache_counts cc;
	struct iodma_dev_stats ds = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	struct bm_heap_stats hs;
	struct vblk_transport *t;
	struct vblk_driver *drv;
	struct iodma_dev *dev;
	const char *msg;
	uintptr_t where = 0;
	uint64_t t0, wms, rms;
	int ret;

	printf("baremetal: iodma virtio-blk on %s, device %s\n", board.name,
	       BM_NONCOHERENT ? "non-coherent" : "coherent");
	plat.page_size = 4096;
	plat.malloc = malloc;
	plat.realloc = realloc;
	plat.free = free;
	plat.pages_alloc = pages_alloc;
	plat.pages_free = pages_free;
	plat.virt_to_phys = virt_to_phys;
	ret = iodma_platform_init(&plat);
	if (ret) {
		printf("baremetal: iodma_platform_init: %s\n", iodma_strerror(ret));
		return 2;
	}
	t = find_device(&where);
	if (!t) {
		printf("baremetal: no virtio-blk device in %u virtio-mmio slots\n",
		       board.vmmio_slots);
		return 2;
	}
	printf("baremetal: virtio-blk at 0x%llx, cache line %zu bytes\n",
	       (unsigned long long)where, iodma_cache_line_size());

	devopts.noncoherent = BM_NONCOHERENT;
	devopts.bounce_pool_size = 256u * 1024;
	ret = iodma_dev_create(&devopts, &dev);
	if (ret) {
		printf("baremetal: iodma_dev_create: %s\n", iodma_strerror(ret));
		return 2;
	}
	dopts.dev = dev;
	dopts.transport = t;
	dopts.queue_size = QUEUE_SIZE;
	dopts.request_size = REQUEST_SIZE;
	ret = vblk_driver_open(&dopts, &drv, &msg);
	if (ret) {
		printf("baremetal: vblk_driver_open: %s: %s\n", msg, iodma_strerror(ret));
		return 2;
	}
	vblk_driver_get_info(drv, &info);
	printf("baremetal: capacity %llu sectors, queue %u, %u requests of %u KiB in flight\n",
	       (unsigned long long)info.capacity, info.queue_size, info.slots,
	       REQUEST_SIZE / 1024);
	if (info.capacity * 512 < len) {
		printf("baremetal: disk smaller than the %d MiB pattern\n", BM_PATTERN_MIB);
		return 2;
	}

	t0 = board_ticks();
	ret = vblk_driver_write(drv, 0, len, source, &wr);
	wms = cycles_ms(t0);
	if (ret) {
		printf("baremetal: write: %s\n", iodma_strerror(ret));
		return 1;
	}
	t0 = board_ticks();
	ret = vblk_driver_read(drv, 0, len, sink, &rd);
	rms = cycles_ms(t0);
	if (ret) {
		printf("baremetal: read: %s\n", iodma_strerror(ret));
		return 1;
	}
	vblk_driver_get_info(drv, &info);
	dma_dev_cache_counts(dev, &cc);
	iodma_dev_get_stats(dev, &ds);
	vblk_vmmio_transport_counts(t, &vc);
	vblk_driver_close(drv);
	t->ops->destroy(t);
	printf("baremetal: %llu requests, %llu kicks, %llu used-ring polls, %llu interrupts seen; write %llu ms, read %llu ms\n",
	       (unsigned long long)info.requests, (unsigned long long)vc.notifies,
	       (unsigned long long)vc.polls, (unsigned long long)vc.interrupts,
	       (unsigned long long)wms, (unsigned long long)rms);
	printf("baremetal: iodma maps %llu, bounces %llu\n",
	       (unsigned long long)ds.maps, (unsigned long long)ds.bounces);
	printf("baremetal: cache ops (calls/lines): clean %llu/%llu, invalidate %llu/%llu, clean+invalidate %llu/%llu\n",
	       (unsigned long long)cc.clean, (unsigned long long)lines.clean,
	       (unsigned long long)cc.invalidate, (unsigned long long)lines.invalidate,
	       (unsigned long long)cc.clean_invalidate,
	       (unsigned long long)lines.clean_invalidate);
	iodma_dev_destroy(dev);
	bm_heap_stats(&hs);
	printf("baremetal: after close: %llu heap blocks, %llu page bytes still allocated\n",
	       (unsigned long long)hs.live, (unsigned long long)hs.pages_live);
	if (rd.bad || rd.off != len || wr.off != len) {
		printf("baremetal: RESULT %s %s: %d MiB written, read back %llu bytes, verify FAILED: %llu words differ, first at byte %llu\n",
		       board.name, BM_NONCOHERENT ? "non-coherent" : "coherent",
		       BM_PATTERN_MIB, (unsigned long long)rd.off,
		       (unsigned long long)rd.bad, (unsigned long long)rd.first_bad);
		return 1;
	}
	printf("baremetal: RESULT %s %s: %d MiB written, read back and verified OK; cache ops clean %llu, invalidate %llu, clean+invalidate %llu (lines %llu/%llu/%llu%s)\n",
	       board.name, BM_NONCOHERENT ? "non-coherent" : "coherent",
	       BM_PATTERN_MIB, (unsigned long long)cc.clean,
	       (unsigned long long)cc.invalidate,
	       (unsigned long long)cc.clean_invalidate,
	       (unsigned long long)lines.clean, (unsigned long long)lines.invalidate,
	       (unsigned long long)lines.clean_invalidate, CACHE_INSNS);
	return 0;
}
