/* SPDX-License-Identifier: MIT */
/*
 * test_dma.c - the driver-side DMA API (iodma/dma.h): coherent memory,
 * streaming maps and their bounce/registered/dynamic/direct paths, sync
 * semantics, scatter-gather, registered memory, MMIO windows, VirtIoHal,
 * errors, fail-nth sweeps and a threaded bounce pool.
 *
 * The "device" is played through the soft domain (iodma_read/iodma_write
 * on the IOVA the driver got); in direct mode through a fake platform whose
 * virt_to_phys hook the tests control.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "growth.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <iodma.h>
#include <iodma/test-hooks.h> /* fault injection: tests only */

#define PG 4096u
#define MASK32 0xffffffffull
#define FAKE_HIGH (1ull << 44) /* default fake bus address = va + this */

/* ---- fake platform for direct mode ---------------------------------------- */

struct fake_region {
	uintptr_t va;
	size_t len;
	uint64_t pa;
	int mode; /* 0 linear, 1 pages reversed with gaps (discontiguous), 2 error */
};

static struct fake_region fake[8];
static unsigned int nfake;

static void fake_reset(void)
{
	nfake = 0;
}

static void fake_add(void *va, size_t len, uint64_t pa, int mode)
{
	assert_true(nfake < 8);
	fake[nfake++] = (struct fake_region){ (uintptr_t)va, len, pa, mode };
}

static int fake_v2p(void *arg, const void *va, uint64_t *pa)
{
	uintptr_t v = (uintptr_t)va;

	(void)arg;
	for (unsigned int i = 0; i < nfake; i++) {
		struct fake_region *r = &fake[i];

		if (v < r->va || v - r->va >= r->len)
			continue;
		if (r->mode == 2)
			return -EFAULT;
		if (r->mode == 1) {
			size_t npg = r->len / PG, k = (v - r->va) / PG;

			*pa = r->pa + (npg - 1 - k) * 2 * PG + (v & (PG - 1));
		} else {
			*pa = r->pa + (v - r->va);
		}
		return 0;
	}
	*pa = v + FAKE_HIGH;
	return 0;
}

/* The CPU address behind a fake bus address (the direct-mode "device"). */
static void *fake_bus_to_va(uint64_t bus)
{
	for (unsigned int i = 0; i < nfake; i++) {
		if (fake[i].mode == 0 && bus >= fake[i].pa &&
		    bus - fake[i].pa < fake[i].len)
			return (void *)(fake[i].va + (bus - fake[i].pa));
	}
	return (void *)(uintptr_t)(bus - FAKE_HIGH);
}

/* ---- helpers ---------------------------------------------------------------- */

static void *page_alloc(size_t len)
{
	void *p = NULL;

	assert_int_equal(posix_memalign(&p, PG, len), 0);
	memset(p, 0, len);
	return p;
}

static struct iodma_domain *domain_new(void)
{
	struct iodma_domain *d = NULL;

	assert_int_equal(iodma_domain_create(NULL, &d), 0);
	return d;
}

static struct iodma_dev *dev_new(struct iodma_domain *d, uint64_t mask,
				 enum iodma_bounce_policy pol, size_t pool)
{
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_dev *dev = NULL;

	o.domain = d;
	o.dma_mask = mask;
	o.bounce = pol;
	o.bounce_pool_size = pool;
	assert_int_equal(iodma_dev_create(&o, &dev), 0);
	return dev;
}

/* A direct-mode device whose bounce pool is a caller-supplied low window
 * at bus 0x100000. */
static void *low_pool;
static struct iodma_dev *direct_dev_new(uint64_t mask,
					enum iodma_bounce_policy pol,
					size_t pool)
{
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_dev *dev = NULL;

	fake_reset();
	low_pool = page_alloc(pool);
	fake_add(low_pool, pool, 0x100000, 0);
	o.dma_mask = mask;
	o.bounce = pol;
	o.bounce_pool_size = pool;
	o.bounce_pool = low_pool;
	o.bounce_pool_bus = 0x100000;
	o.virt_to_phys = fake_v2p;
	assert_int_equal(iodma_dev_create(&o, &dev), 0);
	return dev;
}

static void direct_dev_free(struct iodma_dev *dev)
{
	iodma_dev_destroy(dev);
	free(low_pool);
	low_pool = NULL;
	fake_reset();
}

static struct iodma_dev_stats stats(struct iodma_dev *dev)
{
	struct iodma_dev_stats st = IODMA_STRUCT_INIT(struct iodma_dev_stats);

	iodma_dev_get_stats(dev, &st);
	return st;
}

static void fill(void *p, size_t len, uint8_t seed)
{
	for (size_t i = 0; i < len; i++)
		((uint8_t *)p)[i] = (uint8_t)(seed + i * 7);
}

static bool check(const void *p, size_t len, uint8_t seed)
{
	for (size_t i = 0; i < len; i++) {
		if (((const uint8_t *)p)[i] != (uint8_t)(seed + i * 7))
			return false;
	}
	return true;
}

static bool all_zero(const void *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (((const uint8_t *)p)[i])
			return false;
	}
	return true;
}

/* ---- device creation ---------------------------------------------------- */

static void test_dev_create_rejects_bad_options(void **state)
{
	struct iodma_dev_opts o;
	struct iodma_dev *dev = (struct iodma_dev *)0x1;
	struct iodma_domain *d = domain_new();

	(void)state;
	assert_int_equal(iodma_dev_create(NULL, &dev), -EINVAL);
#define BAD(field, val)                                                   \
	do {                                                              \
		o = IODMA_OPTS_INIT(struct iodma_dev_opts);               \
		o.domain = d;                                             \
		o.field = val;                                            \
		assert_int_equal(iodma_dev_create(&o, &dev), -EINVAL);    \
		assert_ptr_equal(dev, (struct iodma_dev *)0x1);           \
	} while (0)
	BAD(size, 8);
	BAD(dma_mask, 0xfffe);
	BAD(min_align, 3);
	BAD(bounce, (enum iodma_bounce_policy)7);
	BAD(bounce_slot_size, 32);
	BAD(bounce_slot_size, 100);
	BAD(bounce_pool_size, 1000);        /* not a slot multiple */
	BAD(bounce_pool_size, 2048 * 3);    /* not a page multiple */
	BAD(segment_boundary, 0x1234);
	BAD(segment_boundary, 0xfff - 1);
	BAD(virt_to_phys, fake_v2p);        /* direct mode only */
#undef BAD
	o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	assert_int_equal(iodma_dev_create(&o, NULL), -EINVAL);
	assert_int_equal(iodma_domain_nr_mappings(d), 0);
	iodma_domain_destroy(d);
}

static void test_dev_create_defaults_and_pool_mapping(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_WHEN_NEEDED, 0);
	struct iodma_dev_stats st = stats(dev);

	(void)state;
	/* 4 MiB / 2048-byte slots, mapped once in the domain. */
	assert_int_equal(st.bounce_slots_total, 2048);
	assert_int_equal(st.bounce_slots_used, 0);
	assert_int_equal(st.mappings_created, 1);
	assert_int_equal(iodma_domain_nr_mappings(d), 1);
	assert_ptr_equal(iodma_dev_domain(dev), d);
	iodma_dev_destroy(dev);
	assert_int_equal(iodma_domain_nr_mappings(d), 0);
	/* NEVER: no pool at all. */
	dev = dev_new(d, MASK32, IODMA_BOUNCE_NEVER, 0);
	assert_int_equal(stats(dev).bounce_slots_total, 0);
	assert_int_equal(iodma_domain_nr_mappings(d), 0);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
}

static void test_dev_create_direct_pool_above_mask_is_enomem(void **state)
{
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_dev *dev = NULL;

	(void)state;
	fake_reset(); /* every page is at va + 2^44: above a 32-bit mask */
	o.dma_mask = MASK32;
	o.virt_to_phys = fake_v2p;
	assert_int_equal(iodma_dev_create(&o, &dev), -ENOMEM);
	assert_null(dev);
	/* With a 64-bit mask the same pool is fine. */
	o.dma_mask = 0;
	assert_int_equal(iodma_dev_create(&o, &dev), 0);
	iodma_dev_destroy(dev);
	/* A caller pool above the mask is a bad option. */
	o.dma_mask = MASK32;
	o.bounce_pool = page_alloc(1 << 16);
	o.bounce_pool_size = 1 << 16;
	o.bounce_pool_bus = 0x100000000ull;
	dev = NULL;
	assert_int_equal(iodma_dev_create(&o, &dev), -EINVAL);
	assert_null(dev);
	free(o.bounce_pool);
}

/* ---- coherent memory ------------------------------------------------------ */

static void test_coherent_zeroed_aligned_below_mask_and_device_reachable(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_WHEN_NEEDED, 0);
	uint8_t pat[300], back[300];
	void *va = NULL;
	uint64_t iova = 0;

	(void)state;
	assert_int_equal(iodma_alloc_coherent(dev, 10000, &va, &iova), 0);
	assert_true(((uintptr_t)va & (PG - 1)) == 0);
	assert_true(all_zero(va, 3 * PG));
	assert_true(iova + 3 * PG - 1 <= MASK32);
	assert_int_equal(stats(dev).coherent_allocs, 1);
	/* The device writes through the domain; the CPU sees it. */
	fill(pat, sizeof(pat), 9);
	assert_int_equal(iodma_write(d, iova + 5000, pat, sizeof(pat)), 0);
	assert_memory_equal((uint8_t *)va + 5000, pat, sizeof(pat));
	fill((uint8_t *)va + 100, 50, 3);
	assert_int_equal(iodma_read(d, iova + 100, back, 50), 0);
	assert_true(check(back, 50, 3));
	assert_int_equal(iodma_free_coherent(dev, 10000, va, iova), 0);
	assert_int_equal(stats(dev).coherent_allocs, 0);
	assert_int_equal(iodma_read(d, iova, back, 1), -EFAULT);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
}

static void test_coherent_free_errors_change_nothing(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_WHEN_NEEDED, 0);
	void *va = NULL, *out = (void *)0x1;
	uint64_t iova = 0, nr;
	uint8_t b;

	(void)state;
	assert_int_equal(iodma_alloc_coherent(dev, 0, &va, &iova), -EINVAL);
	assert_int_equal(iodma_alloc_coherent(dev, SIZE_MAX, &out, &iova), -EINVAL);
	assert_ptr_equal(out, (void *)0x1);
	assert_int_equal(iodma_alloc_coherent(dev, PG, &va, &iova), 0);
	nr = iodma_domain_nr_mappings(d);
	assert_int_equal(iodma_free_coherent(dev, PG, (uint8_t *)va + PG, iova), -EINVAL);
	assert_int_equal(iodma_free_coherent(dev, PG, va, iova + PG), -EINVAL);
	assert_int_equal(iodma_free_coherent(dev, PG + 1, va, iova), -EINVAL);
	assert_int_equal(iodma_domain_nr_mappings(d), nr);
	assert_int_equal(iodma_read(d, iova, &b, 1), 0);
	assert_int_equal(stats(dev).coherent_allocs, 1);
	assert_int_equal(iodma_free_coherent(dev, PG, va, iova), 0);
	assert_int_equal(iodma_free_coherent(dev, PG, va, iova), -EINVAL);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
}

static void test_coherent_direct_mode_bus_address_and_mask(void **state)
{
	struct iodma_dev *dev;
	void *va = NULL;
	uint64_t iova = 0;

	(void)state;
	/* 64-bit device: pages anywhere, bus = va + 2^44 (contiguous). */
	dev = direct_dev_new(0, IODMA_BOUNCE_WHEN_NEEDED, 1 << 16);
	assert_int_equal(iodma_alloc_coherent(dev, 3 * PG, &va, &iova), 0);
	assert_int_equal(iova, (uintptr_t)va + FAKE_HIGH);
	assert_true(all_zero(va, 3 * PG));
	assert_int_equal(iodma_free_coherent(dev, 3 * PG, va, iova), 0);
	direct_dev_free(dev);
	/* 32-bit device: the pages are above the mask. */
	dev = direct_dev_new(MASK32, IODMA_BOUNCE_WHEN_NEEDED, 1 << 16);
	va = NULL;
	assert_int_equal(iodma_alloc_coherent(dev, PG, &va, &iova), -ENOMEM);
	assert_null(va);
	assert_int_equal(stats(dev).coherent_allocs, 0);
	direct_dev_free(dev);
}

static void test_hal_dma_alloc_dealloc(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_WHEN_NEEDED, 0);
	uint64_t pa = 0;
	void *va = NULL;

	(void)state;
	assert_int_equal(iodma_hal_dma_alloc(dev, 0, IODMA_TO_DEVICE, &pa, &va), -EINVAL);
	assert_int_equal(iodma_hal_dma_alloc(dev, 2, IODMA_BIDIRECTIONAL, &pa, &va), 0);
	assert_true(all_zero(va, 2 * PG));
	assert_int_equal(iodma_hal_dma_dealloc(dev, pa, va, 1), -EINVAL);
	assert_int_equal(iodma_hal_dma_dealloc(dev, pa, va, 2), 0);
	assert_int_equal(iodma_hal_dma_dealloc(dev, pa, va, 2), -EINVAL);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
}

/* ---- classification --------------------------------------------------------- */

static void test_map_single_above_dma_mask_bounces(void **state)
{
	struct iodma_dev *dev = direct_dev_new(MASK32, IODMA_BOUNCE_WHEN_NEEDED,
					       1 << 16);
	uint8_t *buf = page_alloc(PG), *low = page_alloc(PG);
	uint64_t iova;

	(void)state;
	fill(buf, 1000, 1);
	assert_int_equal(iodma_map_single(dev, buf, 1000, IODMA_TO_DEVICE, &iova), 0);
	assert_true(iova >= 0x100000 && iova + 1000 <= 0x100000 + (1 << 16));
	assert_true(check(fake_bus_to_va(iova), 1000, 1));
	assert_int_equal(stats(dev).bounces, 1);
	assert_int_equal(stats(dev).bounce_bytes, 1000);
	assert_int_equal(iodma_unmap_single(dev, iova, 1000, IODMA_TO_DEVICE), 0);
	/* A buffer the device reaches goes direct: bus address, no bounce. */
	fake_add(low, PG, 0x200000, 0);
	assert_int_equal(iodma_map_single(dev, low + 16, 100, IODMA_FROM_DEVICE, &iova), 0);
	assert_int_equal(iova, 0x200010);
	assert_int_equal(stats(dev).bounces, 1);
	assert_int_equal(stats(dev).maps, 2);
	assert_int_equal(iodma_unmap_single(dev, iova, 100, IODMA_FROM_DEVICE), 0);
	/* A per-call mask below the buffer bounces it. */
	assert_int_equal(iodma_map_single_attrs(dev, low, 100, 0, 0x1fffff,
						IODMA_TO_DEVICE, &iova), 0);
	assert_true(iova >= 0x100000 && iova < 0x110000);
	assert_int_equal(iodma_unmap_single(dev, iova, 100, IODMA_TO_DEVICE), 0);
	assert_int_equal(stats(dev).bounce_slots_used, 0);
	direct_dev_free(dev);
	free(buf);
	free(low);
}

static void test_map_single_physically_discontiguous_bounces(void **state)
{
	struct iodma_dev *dev = direct_dev_new(MASK32, IODMA_BOUNCE_WHEN_NEEDED,
					       1 << 16);
	uint8_t *buf = page_alloc(2 * PG);
	uint64_t iova;

	(void)state;
	fake_add(buf, 2 * PG, 0x400000, 1); /* page 1 below page 0, with a gap */
	/* Inside one page: direct. */
	assert_int_equal(iodma_map_single(dev, buf + 10, 100, IODMA_TO_DEVICE, &iova), 0);
	assert_int_equal(iova, 0x400000 + 2 * PG + 10);
	assert_int_equal(iodma_unmap_single(dev, iova, 100, IODMA_TO_DEVICE), 0);
	/* Across the page boundary: bounce. */
	fill(buf, 2 * PG, 4);
	assert_int_equal(iodma_map_single(dev, buf + 4000, 200, IODMA_TO_DEVICE, &iova), 0);
	assert_true(iova >= 0x100000 && iova < 0x110000);
	assert_memory_equal(fake_bus_to_va(iova), buf + 4000, 200);
	assert_int_equal(stats(dev).bounces, 1);
	assert_int_equal(iodma_unmap_single(dev, iova, 200, IODMA_TO_DEVICE), 0);
	/* A failing virt_to_phys is reported. */
	fake[nfake - 1].mode = 2;
	assert_int_equal(iodma_map_single(dev, buf, 10, IODMA_TO_DEVICE, &iova), -EFAULT);
	assert_int_equal(stats(dev).maps, 2);
	direct_dev_free(dev);
	free(buf);
}

static void test_map_single_misaligned_buffer_bounces(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_WHEN_NEEDED, 0);
	uint8_t *buf = page_alloc(2 * PG);
	uint64_t iova, nr;

	(void)state;
	fill(buf, 2 * PG, 2);
	nr = iodma_domain_nr_mappings(d);
	/* align 64, buffer at +3: bounce, the bounce IOVA has the alignment. */
	assert_int_equal(iodma_map_single_attrs(dev, buf + 3, 500, 64, 0,
						IODMA_TO_DEVICE, &iova), 0);
	assert_true((iova & 63) == 0);
	assert_int_equal(stats(dev).bounces, 1);
	assert_int_equal(iodma_domain_nr_mappings(d), nr);
	assert_int_equal(iodma_unmap_single(dev, iova, 500, IODMA_TO_DEVICE), 0);
	/* align 4096 bigger than a slot: still an aligned bounce. */
	assert_int_equal(iodma_map_single_attrs(dev, buf + 64, 500, 4096, 0,
						IODMA_TO_DEVICE, &iova), 0);
	assert_true((iova & 4095) == 0);
	assert_int_equal(iodma_unmap_single(dev, iova, 500, IODMA_TO_DEVICE), 0);
	/* Aligned: a dynamic mapping, iova keeps the page offset. */
	assert_int_equal(iodma_map_single_attrs(dev, buf + 64, 500, 64, 0,
						IODMA_TO_DEVICE, &iova), 0);
	assert_int_equal(iova & (PG - 1), 64);
	assert_int_equal(iodma_domain_nr_mappings(d), nr + 1);
	assert_int_equal(stats(dev).bounces, 2);
	assert_int_equal(iodma_unmap_single(dev, iova, 500, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_domain_nr_mappings(d), nr);
	iodma_dev_destroy(dev);

	/* The device's min_align applies to every map. */
	{
		struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);

		o.domain = d;
		o.min_align = 512;
		assert_int_equal(iodma_dev_create(&o, &dev), 0);
		assert_int_equal(iodma_map_single(dev, buf + 256, 100,
						  IODMA_TO_DEVICE, &iova), 0);
		assert_true((iova & 511) == 0);
		assert_int_equal(stats(dev).bounces, 1);
		assert_int_equal(iodma_unmap_single(dev, iova, 100, IODMA_TO_DEVICE), 0);
		iodma_dev_destroy(dev);
	}
	iodma_domain_destroy(d);
	free(buf);
}

static void test_dynamic_map_permissions_follow_direction(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_WHEN_NEEDED, 0);
	uint8_t *buf = page_alloc(3 * PG), b[16] = { 0 };
	uint64_t iova;

	(void)state;
	assert_int_equal(iodma_map_single(dev, buf + 100, 2 * PG, IODMA_TO_DEVICE, &iova), 0);
	assert_true(iova + 2 * PG - 1 <= MASK32);
	assert_int_equal(iodma_read(d, iova, b, 16), 0);
	assert_int_equal(iodma_write(d, iova, b, 16), -EACCES);
	assert_int_equal(iodma_unmap_single(dev, iova, 2 * PG, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_map_single(dev, buf, 16, IODMA_FROM_DEVICE, &iova), 0);
	assert_int_equal(iodma_read(d, iova, b, 16), -EACCES);
	fill(b, 16, 8);
	assert_int_equal(iodma_write(d, iova, b, 16), 0);
	assert_true(check(buf, 16, 8));
	assert_int_equal(iodma_unmap_single(dev, iova, 16, IODMA_FROM_DEVICE), 0);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

static void test_after_unmap_single_device_cannot_reach_buffer(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_WHEN_NEEDED, 0);
	uint8_t *buf = page_alloc(PG), b[8];
	uint64_t iova;

	(void)state;
	assert_int_equal(iodma_map_single(dev, buf, 64, IODMA_BIDIRECTIONAL, &iova), 0);
	assert_int_equal(iodma_read(d, iova, b, 8), 0);
	assert_int_equal(iodma_unmap_single(dev, iova, 64, IODMA_BIDIRECTIONAL), 0);
	assert_int_equal(iodma_read(d, iova, b, 8), -EFAULT);
	assert_int_equal(iodma_write(d, iova, b, 8), -EFAULT);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

/* ---- bounce copy directions (VirtIoHal share/unshare) ------------------------ */

struct share_case {
	enum iodma_dir dir;
	bool copied_back;
};

static void share_unshare_case(const struct share_case *c)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_ALWAYS, 1 << 16);
	uint8_t *buf = page_alloc(PG), seen[777], devdata[777];
	uint64_t pa;

	fill(buf, 777, 11);
	assert_int_equal(iodma_hal_share(dev, buf, 777, c->dir, &pa), 0);
	assert_int_equal(stats(dev).bounces, 1);
	/* The device reads the bounce slot: every map copied the buffer in. */
	assert_int_equal(iodma_read(d, pa, seen, 777), 0);
	assert_true(check(seen, 777, 11));
	/* The device writes its answer into the slot. */
	fill(devdata, 777, 99);
	assert_int_equal(iodma_write(d, pa, devdata, 777), 0);
	assert_true(check(buf, 777, 11)); /* the buffer is untouched meanwhile */
	assert_int_equal(iodma_hal_unshare(dev, pa, buf, 777, c->dir), 0);
	if (c->copied_back)
		assert_true(check(buf, 777, 99));
	else
		assert_true(check(buf, 777, 11));
	assert_int_equal(stats(dev).bounce_slots_used, 0);
	assert_int_equal(stats(dev).bounce_bytes,
			 777 + (c->copied_back ? 777 : 0)); /* always copied in */
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

static void test_share_to_device_copies_in_not_back(void **state)
{
	static const struct share_case c = { IODMA_TO_DEVICE, false };

	(void)state;
	share_unshare_case(&c);
}

/* FROM_DEVICE copies back at unshare.  It also copies in at share (Linux's
 * swiotlb info-leak fix): the device never sees another mapping's stale
 * slot contents, and bytes it does not write come back unchanged. */
static void test_share_from_device_copies_back_and_leaks_no_stale_data(void **state)
{
	static const struct share_case c = { IODMA_FROM_DEVICE, true };
	struct iodma_domain *d;
	struct iodma_dev *dev;
	uint8_t *buf, *other, seen[512], devdata[256];
	uint64_t pa;

	(void)state;
	share_unshare_case(&c);

	d = domain_new();
	dev = dev_new(d, MASK32, IODMA_BOUNCE_ALWAYS, 1 << 16);
	buf = page_alloc(PG);
	other = page_alloc(PG);
	/* Another mapping leaves its data (pattern 55) in the slots. */
	fill(other, 512, 55);
	assert_int_equal(iodma_hal_share(dev, other, 512, IODMA_TO_DEVICE, &pa), 0);
	assert_int_equal(iodma_hal_unshare(dev, pa, other, 512, IODMA_TO_DEVICE), 0);
	/* A FROM_DEVICE share of buf (pattern 11) lands in the same slots. */
	fill(buf, 512, 11);
	assert_int_equal(iodma_hal_share(dev, buf, 512, IODMA_FROM_DEVICE, &pa), 0);
	assert_int_equal(iodma_read(d, pa, seen, 512), 0);
	assert_true(check(seen, 512, 11));
	/* The device writes only the first half. */
	fill(devdata, 256, 99);
	assert_int_equal(iodma_write(d, pa, devdata, 256), 0);
	assert_int_equal(iodma_hal_unshare(dev, pa, buf, 512, IODMA_FROM_DEVICE), 0);
	assert_true(check(buf, 256, 99));
	assert_memory_equal(buf + 256, seen + 256, 256); /* still pattern 11 */
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
	free(other);
}

static void test_share_bidirectional_copies_both_ways(void **state)
{
	static const struct share_case c = { IODMA_BIDIRECTIONAL, true };

	(void)state;
	share_unshare_case(&c);
}

static void test_hal_unshare_wrong_buffer_is_einval(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_ALWAYS, 1 << 16);
	uint8_t *buf = page_alloc(PG), *other = page_alloc(PG);
	uint64_t pa;

	(void)state;
	assert_int_equal(iodma_hal_share(dev, buf, 100, IODMA_FROM_DEVICE, &pa), 0);
	assert_int_equal(iodma_hal_unshare(dev, pa, other, 100, IODMA_FROM_DEVICE), -EINVAL);
	assert_int_equal(iodma_hal_unshare(dev, pa, NULL, 100, IODMA_FROM_DEVICE), -EINVAL);
	assert_int_equal(stats(dev).bounce_slots_used, 1);
	assert_int_equal(iodma_hal_unshare(dev, pa, buf, 100, IODMA_FROM_DEVICE), 0);
	/* Same check on a non-bounced (dynamic) share. */
	iodma_dev_destroy(dev);
	dev = dev_new(d, MASK32, IODMA_BOUNCE_WHEN_NEEDED, 1 << 16);
	assert_int_equal(iodma_hal_share(dev, buf, 100, IODMA_TO_DEVICE, &pa), 0);
	assert_int_equal(iodma_hal_unshare(dev, pa, other, 100, IODMA_TO_DEVICE), -EINVAL);
	assert_int_equal(iodma_hal_unshare(dev, pa, buf, 100, IODMA_TO_DEVICE), 0);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
	free(other);
}

static void test_policy_always_bounces_everything(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_ALWAYS, 1 << 20);
	uint8_t *buf = page_alloc(16 * PG);
	uint64_t iova[4], nr;
	struct iodma_dev_stats st = IODMA_STRUCT_INIT(struct iodma_dev_stats);

	(void)state;
	assert_int_equal(iodma_dev_register(dev, buf, 16 * PG, NULL), 0);
	nr = iodma_domain_nr_mappings(d);
	/* Aligned, registered, large: all bounce, no new mapping. */
	assert_int_equal(iodma_map_single(dev, buf, PG, IODMA_TO_DEVICE, &iova[0]), 0);
	assert_int_equal(iodma_map_single(dev, buf + PG, 3 * PG, IODMA_FROM_DEVICE, &iova[1]), 0);
	assert_int_equal(iodma_map_single(dev, buf + 5 * PG + 1, 10, IODMA_BIDIRECTIONAL, &iova[2]), 0);
	assert_int_equal(iodma_map_single_attrs(dev, buf + 8 * PG, 64, 4096, 0,
						IODMA_TO_DEVICE, &iova[3]), 0);
	st = stats(dev);
	assert_int_equal(st.bounces, 4);
	assert_int_equal(st.maps, 4);
	assert_int_equal(st.registered_hits, 0);
	assert_int_equal(iodma_domain_nr_mappings(d), nr);
	assert_int_equal(iodma_unmap_single(dev, iova[0], PG, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_unmap_single(dev, iova[1], 3 * PG, IODMA_FROM_DEVICE), 0);
	assert_int_equal(iodma_unmap_single(dev, iova[2], 10, IODMA_BIDIRECTIONAL), 0);
	assert_int_equal(iodma_unmap_single(dev, iova[3], 64, IODMA_TO_DEVICE), 0);
	assert_int_equal(stats(dev).bounce_slots_used, 0);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

static void test_policy_never_refuses_with_erange_or_einval(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_NEVER, 0);
	uint8_t *buf = page_alloc(2 * PG);
	uint64_t iova = 0x5a5a, nr = iodma_domain_nr_mappings(d);

	(void)state;
	assert_int_equal(iodma_map_single_attrs(dev, buf + 3, 100, 64, 0,
						IODMA_TO_DEVICE, &iova), -EINVAL);
	assert_int_equal(iova, 0x5a5a);
	assert_int_equal(iodma_domain_nr_mappings(d), nr);
	assert_int_equal(stats(dev).maps, 0);
	/* Aligned buffers still map. */
	assert_int_equal(iodma_map_single(dev, buf, 100, IODMA_TO_DEVICE, &iova), 0);
	assert_int_equal(iodma_unmap_single(dev, iova, 100, IODMA_TO_DEVICE), 0);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);

	/* Direct mode: above the mask and discontiguous are -ERANGE. */
	{
		struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);

		fake_reset();
		o.dma_mask = MASK32;
		o.bounce = IODMA_BOUNCE_NEVER;
		o.virt_to_phys = fake_v2p;
		assert_int_equal(iodma_dev_create(&o, &dev), 0);
		assert_int_equal(iodma_map_single(dev, buf, 100, IODMA_TO_DEVICE, &iova), -ERANGE);
		fake_add(buf, 2 * PG, 0x400000, 1);
		assert_int_equal(iodma_map_single(dev, buf + 4000, 200, IODMA_TO_DEVICE, &iova), -ERANGE);
		assert_int_equal(iodma_map_single_attrs(dev, buf + 8, 100, 16, 0,
							IODMA_TO_DEVICE, &iova), -EINVAL);
		assert_int_equal(iodma_map_single(dev, buf + 8, 100, IODMA_TO_DEVICE, &iova), 0);
		assert_int_equal(iodma_unmap_single(dev, iova, 100, IODMA_TO_DEVICE), 0);
		assert_int_equal(stats(dev).bounces, 0);
		iodma_dev_destroy(dev);
		fake_reset();
	}
	free(buf);
}

/* ---- sync ----------------------------------------------------------------------- */

static void test_sync_for_cpu_copies_device_writes_mid_mapping(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_ALWAYS, 1 << 16);
	uint8_t *buf = page_alloc(PG), x[100];
	uint64_t iova;

	(void)state;
	assert_int_equal(iodma_map_single(dev, buf, 1000, IODMA_FROM_DEVICE, &iova), 0);
	fill(x, 100, 42);
	assert_int_equal(iodma_write(d, iova + 200, x, 100), 0);
	assert_true(all_zero(buf, 1000));
	/* Sync only [250, 300): exactly that part reaches the buffer. */
	assert_int_equal(iodma_sync_for_cpu(dev, iova + 250, 50, IODMA_FROM_DEVICE), 0);
	assert_true(all_zero(buf, 250));
	assert_memory_equal(buf + 250, x + 50, 50);
	assert_true(all_zero(buf + 300, 700));
	/* sync_for_device of a FROM_DEVICE map copies nothing in. */
	memset(buf, 0xee, 10);
	assert_int_equal(iodma_sync_for_device(dev, iova, 10, IODMA_FROM_DEVICE), 0);
	assert_int_equal(iodma_read(d, iova, x, 10), 0);
	assert_true(all_zero(x, 10));
	assert_int_equal(iodma_unmap_single(dev, iova, 1000, IODMA_FROM_DEVICE), 0);
	assert_true(all_zero(buf, 10)); /* unmap copied the slot back */
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

static void test_sync_for_device_hands_cpu_writes_to_device(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_ALWAYS, 1 << 16);
	uint8_t *buf = page_alloc(PG), x[64];
	uint64_t iova;

	(void)state;
	fill(buf, 512, 1);
	assert_int_equal(iodma_map_single(dev, buf, 512, IODMA_TO_DEVICE, &iova), 0);
	fill(buf + 64, 64, 77);             /* the CPU updates the buffer */
	assert_int_equal(iodma_read(d, iova + 64, x, 64), 0);
	assert_false(check(x, 64, 77));     /* the device still sees the old data */
	assert_int_equal(iodma_sync_for_device(dev, iova + 64, 64, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_read(d, iova + 64, x, 64), 0);
	assert_true(check(x, 64, 77));
	/* sync_for_cpu of a TO_DEVICE map copies nothing back. */
	memset(x, 0x33, 64);
	assert_int_equal(iodma_write(d, iova, x, 64), 0);
	assert_int_equal(iodma_sync_for_cpu(dev, iova, 64, IODMA_TO_DEVICE), 0);
	assert_true(check(buf, 64, 1));
	assert_int_equal(iodma_unmap_single(dev, iova, 512, IODMA_TO_DEVICE), 0);
	assert_true(check(buf, 64, 1));
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

static void test_sync_rejects_unknown_ranges_and_directions(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_WHEN_NEEDED, 1 << 16);
	uint8_t *buf = page_alloc(2 * PG);
	uint64_t bio, dio;

	(void)state;
	assert_int_equal(iodma_map_single_attrs(dev, buf + 1, 100, 64, 0,
						IODMA_BIDIRECTIONAL, &bio), 0);
	assert_int_equal(iodma_map_single(dev, buf + PG, 100, IODMA_FROM_DEVICE, &dio), 0);
	for (int k = 0; k < 2; k++) {
		int (*fn)(struct iodma_dev *, uint64_t, size_t, enum iodma_dir) =
			k ? iodma_sync_for_device : iodma_sync_for_cpu;

		assert_int_equal(fn(dev, bio, 100, IODMA_BIDIRECTIONAL), 0);
		assert_int_equal(fn(dev, bio + 10, 90, IODMA_BIDIRECTIONAL), 0);
		assert_int_equal(fn(dev, bio, 101, IODMA_BIDIRECTIONAL), -EINVAL);
		assert_int_equal(fn(dev, bio, 100, IODMA_TO_DEVICE), -EINVAL);
		assert_int_equal(fn(dev, bio, 0, IODMA_BIDIRECTIONAL), -EINVAL);
		assert_int_equal(fn(dev, bio, 10, (enum iodma_dir)0), -EINVAL);
		assert_int_equal(fn(dev, dio, 100, IODMA_FROM_DEVICE), 0);
		assert_int_equal(fn(dev, dio + 50, 50, IODMA_FROM_DEVICE), 0);
		assert_int_equal(fn(dev, dio + 50, 51, IODMA_FROM_DEVICE), -EINVAL);
		assert_int_equal(fn(dev, dio, 100, IODMA_BIDIRECTIONAL), -EINVAL);
		assert_int_equal(fn(dev, 0x1000, 1, IODMA_FROM_DEVICE), -EINVAL);
	}
	assert_int_equal(iodma_unmap_single(dev, bio, 100, IODMA_BIDIRECTIONAL), 0);
	assert_int_equal(iodma_unmap_single(dev, dio, 100, IODMA_FROM_DEVICE), 0);
	/* After unmap the addresses are unknown. */
	assert_int_equal(iodma_sync_for_cpu(dev, bio, 100, IODMA_BIDIRECTIONAL), -EINVAL);
	assert_int_equal(iodma_sync_for_device(dev, dio, 100, IODMA_FROM_DEVICE), -EINVAL);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

/* ---- errors ------------------------------------------------------------------------ */

static void test_map_single_argument_errors_change_nothing(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, 0xffffffffffull, IODMA_BOUNCE_WHEN_NEEDED, 1 << 16);
	uint8_t *buf = page_alloc(PG);
	uint64_t iova = 7, nr = iodma_domain_nr_mappings(d);

	(void)state;
	assert_int_equal(iodma_map_single(dev, buf, 0, IODMA_TO_DEVICE, &iova), -EINVAL);
	assert_int_equal(iodma_map_single(dev, NULL, 10, IODMA_TO_DEVICE, &iova), -EINVAL);
	assert_int_equal(iodma_map_single(dev, buf, 10, (enum iodma_dir)0, &iova), -EINVAL);
	assert_int_equal(iodma_map_single(dev, buf, 10, (enum iodma_dir)4, &iova), -EINVAL);
	assert_int_equal(iodma_map_single(dev, buf, SIZE_MAX, IODMA_TO_DEVICE, &iova), -EINVAL);
	assert_int_equal(iodma_map_single(dev, buf, 10, IODMA_TO_DEVICE, NULL), -EINVAL);
	assert_int_equal(iodma_map_single_attrs(dev, buf, 10, 3, 0, IODMA_TO_DEVICE, &iova), -EINVAL);
	assert_int_equal(iodma_map_single_attrs(dev, buf, 10, 0, 0x1ffffffffffull,
						IODMA_TO_DEVICE, &iova), -EINVAL);
	assert_int_equal(iodma_map_single_attrs(dev, buf, 10, 0, 0xfff,
						IODMA_TO_DEVICE, &iova), -EINVAL);
	assert_int_equal(iova, 7);
	assert_int_equal(iodma_domain_nr_mappings(d), nr);
	assert_int_equal(stats(dev).maps, 0);
	assert_int_equal(stats(dev).bounce_slots_used, 0);
	/* The per-call mask is honoured: 32 bits on a 40-bit device. */
	assert_int_equal(iodma_map_single_attrs(dev, buf, 10, 0, MASK32,
						IODMA_TO_DEVICE, &iova), 0);
	assert_true(iova <= MASK32);
	assert_int_equal(iodma_unmap_single(dev, iova, 10, IODMA_TO_DEVICE), 0);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

static void test_unmap_single_unknown_map_is_einval_and_map_stays(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_WHEN_NEEDED, 1 << 16);
	uint8_t *buf = page_alloc(PG), b;
	uint64_t dio, bio;

	(void)state;
	assert_int_equal(iodma_map_single(dev, buf, 100, IODMA_TO_DEVICE, &dio), 0);
	assert_int_equal(iodma_map_single_attrs(dev, buf + 1, 100, 8, 0,
						IODMA_TO_DEVICE, &bio), 0);
	for (int k = 0; k < 2; k++) {
		uint64_t io = k ? bio : dio;

		assert_int_equal(iodma_unmap_single(dev, io + 1, 100, IODMA_TO_DEVICE), -EINVAL);
		assert_int_equal(iodma_unmap_single(dev, io, 99, IODMA_TO_DEVICE), -EINVAL);
		assert_int_equal(iodma_unmap_single(dev, io, 100, IODMA_FROM_DEVICE), -EINVAL);
		assert_int_equal(iodma_unmap_single(dev, io, 0, IODMA_TO_DEVICE), -EINVAL);
		assert_int_equal(iodma_unmap_single(dev, io, 100, (enum iodma_dir)9), -EINVAL);
		assert_int_equal(iodma_read(d, io, &b, 1), 0);
	}
	assert_int_equal(iodma_unmap_single(dev, 0x12345000, 100, IODMA_TO_DEVICE), -EINVAL);
	assert_int_equal(iodma_unmap_single(dev, dio, 100, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_unmap_single(dev, bio, 100, IODMA_TO_DEVICE), 0);
	/* Twice: -EINVAL. */
	assert_int_equal(iodma_unmap_single(dev, dio, 100, IODMA_TO_DEVICE), -EINVAL);
	assert_int_equal(iodma_unmap_single(dev, bio, 100, IODMA_TO_DEVICE), -EINVAL);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

static void test_unmap_single_backend_failure_keeps_map(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_WHEN_NEEDED, 1 << 16);
	uint8_t *buf = page_alloc(PG), b;
	uint64_t iova;

	(void)state;
	assert_int_equal(iodma_map_single(dev, buf, 100, IODMA_TO_DEVICE, &iova), 0);
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_UNMAP, 1, -EIO), 0);
	assert_int_equal(iodma_unmap_single(dev, iova, 100, IODMA_TO_DEVICE), -EIO);
	assert_int_equal(iodma_read(d, iova, &b, 1), 0);
	assert_int_equal(iodma_unmap_single(dev, iova, 100, IODMA_TO_DEVICE), 0);
	/* A failing domain map leaves nothing. */
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_MAP, 1, -EIO), 0);
	assert_int_equal(iodma_map_single(dev, buf, 100, IODMA_TO_DEVICE, &iova), -EIO);
	assert_int_equal(iodma_domain_nr_mappings(d), 1);
	assert_int_equal(stats(dev).maps, 1);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

/* ---- bounce pool exhaustion --------------------------------------------------------- */

static void test_bounce_pool_exhaustion_enomem_then_recovery(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_ALWAYS, 1 << 16);
	uint8_t *buf = page_alloc(PG);
	uint64_t iova[40], extra = 0x77;
	int n = 0;

	(void)state;
	/* 64 KiB of 2 KiB slots: 16 maps of 4 KiB fit. */
	while (n < 40 && iodma_map_single(dev, buf, PG, IODMA_TO_DEVICE, &iova[n]) == 0)
		n++;
	assert_int_equal(n, 16);
	assert_int_equal(stats(dev).bounce_full, 1);
	assert_int_equal(stats(dev).bounce_slots_used, 32);
	assert_int_equal(iodma_map_single(dev, buf, 1, IODMA_TO_DEVICE, &extra), -ENOMEM);
	assert_int_equal(extra, 0x77);
	assert_int_equal(stats(dev).bounce_full, 2);
	assert_int_equal(stats(dev).maps, 16);
	/* Free one in the middle: a map fits again. */
	assert_int_equal(iodma_unmap_single(dev, iova[7], PG, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_map_single(dev, buf, PG, IODMA_TO_DEVICE, &iova[7]), 0);
	for (int i = 0; i < n; i++)
		assert_int_equal(iodma_unmap_single(dev, iova[i], PG, IODMA_TO_DEVICE), 0);
	assert_int_equal(stats(dev).bounce_slots_used, 0);
	/* Larger than the pool: -ENOMEM, never a crash. */
	{
		uint8_t *big = page_alloc(1 << 17);

		assert_int_equal(iodma_map_single(dev, big, 1 << 17, IODMA_TO_DEVICE, &extra), -ENOMEM);
		assert_int_equal(iodma_map_single(dev, big, 1 << 16, IODMA_TO_DEVICE, &extra), 0);
		assert_int_equal(iodma_unmap_single(dev, extra, 1 << 16, IODMA_TO_DEVICE), 0);
		free(big);
	}
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

/* ---- registered memory ----------------------------------------------------------------- */

static void test_registered_map_is_a_lookup_without_new_mapping(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_WHEN_NEEDED, 1 << 16);
	size_t len = 64 * PG;
	uint8_t *buf = page_alloc(len), x[32];
	uint64_t reg_iova, iova, io2, nr;
	struct iodma_dev_stats st = IODMA_STRUCT_INIT(struct iodma_dev_stats);

	(void)state;
	assert_int_equal(iodma_dev_register(dev, buf, len, &reg_iova), 0);
	assert_true(reg_iova + len - 1 <= MASK32);
	nr = iodma_domain_nr_mappings(d);
	assert_int_equal(iodma_map_single(dev, buf + 5 * PG + 17, 3 * PG,
					  IODMA_TO_DEVICE, &iova), 0);
	assert_int_equal(iova, reg_iova + 5 * PG + 17);
	assert_int_equal(iodma_domain_nr_mappings(d), nr);
	st = stats(dev);
	assert_int_equal(st.registered_hits, 1);
	assert_int_equal(st.bounces, 0);
	assert_int_equal(iodma_va_to_iova(dev, buf + 5 * PG + 17, 3 * PG, &io2), 0);
	assert_int_equal(io2, iova);
	fill(buf + 5 * PG + 17, 32, 5);
	assert_int_equal(iodma_read(d, iova, x, 32), 0);
	assert_true(check(x, 32, 5));
	/* The same buffer mapped twice: two live maps, one IOVA. */
	assert_int_equal(iodma_map_single(dev, buf + 5 * PG + 17, 3 * PG,
					  IODMA_TO_DEVICE, &io2), 0);
	assert_int_equal(io2, iova);
	assert_int_equal(iodma_sync_for_device(dev, iova + 8, 8, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_unmap_single(dev, iova, 3 * PG, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_unmap_single(dev, iova, 3 * PG, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_unmap_single(dev, iova, 3 * PG, IODMA_TO_DEVICE), -EINVAL);
	/* Registered memory stays reachable after the streaming unmap. */
	assert_int_equal(iodma_read(d, iova, x, 32), 0);
	assert_int_equal(iodma_dev_unregister(dev, buf, len), 0);
	assert_int_equal(iodma_domain_nr_mappings(d), nr - 1);
	assert_int_equal(iodma_read(d, iova, x, 32), -EFAULT);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

static void test_register_errors_eexist_enoent_ebusy(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_WHEN_NEEDED, 1 << 16);
	uint8_t *buf = page_alloc(32 * PG);
	uint64_t io, iova, nr;

	(void)state;
	assert_int_equal(iodma_dev_register(dev, buf + 1, PG, NULL), -EINVAL);
	assert_int_equal(iodma_dev_register(dev, buf, PG + 1, NULL), -EINVAL);
	assert_int_equal(iodma_dev_register(dev, buf, 0, NULL), -EINVAL);
	assert_int_equal(iodma_dev_register(dev, NULL, PG, NULL), -EINVAL);
	assert_int_equal(iodma_dev_register(dev, (void *)(uintptr_t)(1ull << 48), PG, NULL), -EINVAL);
	assert_int_equal(iodma_dev_register(dev, buf + 8 * PG, 8 * PG, NULL), 0);
	nr = iodma_domain_nr_mappings(d);
	assert_int_equal(iodma_dev_register(dev, buf, 9 * PG, NULL), -EEXIST);
	assert_int_equal(iodma_dev_register(dev, buf + 15 * PG, 2 * PG, NULL), -EEXIST);
	assert_int_equal(iodma_dev_register(dev, buf + 10 * PG, PG, NULL), -EEXIST);
	assert_int_equal(iodma_domain_nr_mappings(d), nr);
	/* Adjacent is fine. */
	assert_int_equal(iodma_dev_register(dev, buf, 8 * PG, NULL), 0);
	assert_int_equal(iodma_dev_register(dev, buf + 16 * PG, 8 * PG, NULL), 0);
	assert_int_equal(iodma_dev_unregister(dev, buf + 24 * PG, PG), -ENOENT);
	assert_int_equal(iodma_dev_unregister(dev, buf + 8 * PG, 4 * PG), -ENOENT);
	assert_int_equal(iodma_dev_unregister(dev, buf + 9 * PG, 7 * PG), -ENOENT);
	/* A live streaming map inside: -EBUSY, still registered. */
	assert_int_equal(iodma_map_single(dev, buf + 9 * PG, 100, IODMA_FROM_DEVICE, &iova), 0);
	assert_int_equal(iodma_dev_unregister(dev, buf + 8 * PG, 8 * PG), -EBUSY);
	assert_int_equal(iodma_va_to_iova(dev, buf + 9 * PG, 100, &io), 0);
	assert_int_equal(io, iova);
	assert_int_equal(iodma_unmap_single(dev, iova, 100, IODMA_FROM_DEVICE), 0);
	assert_int_equal(iodma_dev_unregister(dev, buf + 8 * PG, 8 * PG), 0);
	assert_int_equal(iodma_dev_unregister(dev, buf + 8 * PG, 8 * PG), -ENOENT);
	assert_int_equal(iodma_va_to_iova(dev, buf + 9 * PG, 100, &io), -ENOENT);
	assert_int_equal(iodma_dev_unregister(dev, buf, 8 * PG), 0);
	assert_int_equal(iodma_dev_unregister(dev, buf + 16 * PG, 8 * PG), 0);
	assert_int_equal(iodma_domain_nr_mappings(d), 1); /* the bounce pool */
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

static void test_va_to_iova_needs_whole_contiguous_registration(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_WHEN_NEEDED, 1 << 16);
	uint8_t *buf = page_alloc(8 * PG);
	uint64_t a, b, io;

	(void)state;
	assert_int_equal(iodma_dev_register(dev, buf, 4 * PG, &a), 0);
	assert_int_equal(iodma_dev_register(dev, buf + 4 * PG, 4 * PG, &b), 0);
	assert_int_equal(iodma_va_to_iova(dev, buf + 4 * PG - 1, 1, &io), 0);
	assert_int_equal(io, a + 4 * PG - 1);
	assert_int_equal(iodma_va_to_iova(dev, buf + 4 * PG, PG, &io), 0);
	assert_int_equal(io, b);
	/* Two registrations are adjacent in VA but not in IOVA (top-down). */
	if (b != a + 4 * PG)
		assert_int_equal(iodma_va_to_iova(dev, buf + 4 * PG - 1, 2, &io), -ENOENT);
	assert_int_equal(iodma_va_to_iova(dev, buf + 8 * PG - 1, 2, &io), -ENOENT);
	assert_int_equal(iodma_va_to_iova(dev, buf, 0, &io), -ENOENT);
	assert_int_equal(iodma_va_to_iova(dev, buf - 1, 1, &io), -ENOENT);
	/* A map spanning both registrations is not a registered hit. */
	if (b != a + 4 * PG) {
		assert_int_equal(iodma_map_single(dev, buf + 3 * PG, 2 * PG,
						  IODMA_TO_DEVICE, &io), 0);
		assert_int_equal(stats(dev).registered_hits, 0);
		assert_int_equal(iodma_unmap_single(dev, io, 2 * PG, IODMA_TO_DEVICE), 0);
	}
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

static void test_register_direct_mode_records_bus_pages(void **state)
{
	struct iodma_dev *dev = direct_dev_new(MASK32, IODMA_BOUNCE_WHEN_NEEDED,
					       1 << 16);
	uint8_t *low = page_alloc(4 * PG), *scat = page_alloc(2 * PG),
		*high = page_alloc(PG);
	uint64_t io;

	(void)state;
	fake_add(low, 4 * PG, 0x800000, 0);
	fake_add(scat, 2 * PG, 0xa00000, 1);
	assert_int_equal(iodma_dev_register(dev, low, 4 * PG, &io), 0);
	assert_int_equal(io, 0x800000);
	assert_int_equal(iodma_va_to_iova(dev, low + 2 * PG + 5, 100, &io), 0);
	assert_int_equal(io, 0x800000 + 2 * PG + 5);
	assert_int_equal(iodma_dev_register(dev, high, PG, &io), -ERANGE);
	assert_int_equal(iodma_va_to_iova(dev, high, 1, &io), -ENOENT);
	/* Discontiguous pages: each page looks up, a range across them not. */
	assert_int_equal(iodma_dev_register(dev, scat, 2 * PG, NULL), 0);
	assert_int_equal(iodma_va_to_iova(dev, scat + PG, 10, &io), 0);
	assert_int_equal(io, 0xa00000);
	assert_int_equal(iodma_va_to_iova(dev, scat + 4000, 200, &io), -ENOENT);
	assert_int_equal(iodma_map_single(dev, low + 10, 10, IODMA_TO_DEVICE, &io), 0);
	assert_int_equal(io, 0x80000a);
	assert_int_equal(stats(dev).registered_hits, 1);
	assert_int_equal(iodma_unmap_single(dev, io, 10, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_dev_unregister(dev, low, 4 * PG), 0);
	assert_int_equal(iodma_dev_unregister(dev, scat, 2 * PG), 0);
	direct_dev_free(dev);
	free(low);
	free(scat);
	free(high);
}

/* ---- scatter-gather ------------------------------------------------------------------- */

static void test_sg_merges_page_contiguous_elements_into_segments(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_WHEN_NEEDED, 1 << 16);
	uint8_t *a = page_alloc(PG), *b = page_alloc(2 * PG), *c = page_alloc(PG);
	uint8_t *all = malloc(4 * PG);
	struct iodma_sg sg[4];
	int n;

	(void)state;
	fill(a, PG, 1);
	fill(b, 2 * PG, 2);
	fill(c, PG, 3);
	memset(sg, 0, sizeof(sg));
	sg[0].va = a; sg[0].len = PG;
	sg[1].va = b; sg[1].len = 2 * PG;
	sg[2].va = c; sg[2].len = PG;
	n = iodma_map_sg(dev, sg, 3, IODMA_TO_DEVICE);
	assert_int_equal(n, 1);
	assert_int_equal(sg[0].seg_len, 4 * PG);
	assert_int_equal(sg[0].seg_iova, sg[0].iova);
	assert_true(sg[0].seg_iova + 4 * PG - 1 <= MASK32);
	/* The device reads the list as one segment. */
	assert_int_equal(iodma_read(d, sg[0].seg_iova, all, 4 * PG), 0);
	assert_memory_equal(all, a, PG);
	assert_memory_equal(all + PG, b, 2 * PG);
	assert_memory_equal(all + 3 * PG, c, PG);
	assert_int_equal(stats(dev).maps, 3);
	assert_int_equal(iodma_sync_sg_for_device(dev, sg, 3, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_sync_sg_for_cpu(dev, sg, 3, IODMA_TO_DEVICE), 0);
	/* An element of the list cannot be unmapped alone. */
	assert_int_equal(iodma_unmap_single(dev, sg[1].iova, 2 * PG, IODMA_TO_DEVICE), -EINVAL);
	/* Nor a partial list. */
	assert_int_equal(iodma_unmap_sg(dev, sg, 2, IODMA_TO_DEVICE), -EINVAL);
	assert_int_equal(iodma_unmap_sg(dev, sg, 3, IODMA_FROM_DEVICE), -EINVAL);
	assert_int_equal(iodma_unmap_sg(dev, sg, 3, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_read(d, sg[0].seg_iova, all, 1), -EFAULT);
	assert_int_equal(iodma_domain_nr_mappings(d), 1);
	assert_int_equal(iodma_unmap_sg(dev, sg, 3, IODMA_TO_DEVICE), -EINVAL);
	iodma_dev_destroy(dev);

	/* max_segment_size 8 KiB: [a b0] [b1 c]... b is 8 KiB: a|b|c. */
	{
		struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);

		o.domain = d;
		o.max_segment_size = 2 * PG;
		assert_int_equal(iodma_dev_create(&o, &dev), 0);
		memset(sg, 0, sizeof(sg));
		sg[0].va = a; sg[0].len = PG;
		sg[1].va = b; sg[1].len = 2 * PG;
		sg[2].va = c; sg[2].len = PG;
		sg[3].va = a; sg[3].len = PG;
		n = iodma_map_sg(dev, sg, 4, IODMA_TO_DEVICE);
		assert_int_equal(n, 3);
		assert_int_equal(sg[0].seg_len, PG);
		assert_int_equal(sg[1].seg_len, 2 * PG);
		assert_int_equal(sg[2].seg_len, 2 * PG);
		assert_int_equal(iodma_unmap_sg(dev, sg, 4, IODMA_TO_DEVICE), 0);
		/* An element longer than max_segment_size is a bad list. */
		sg[0].len = 3 * PG;
		sg[0].va = all;
		assert_int_equal(iodma_map_sg(dev, sg, 1, IODMA_TO_DEVICE), -EINVAL);
		iodma_dev_destroy(dev);
	}
	/* Offsets break merging: a tail ending mid-page does not merge. */
	dev = dev_new(d, MASK32, IODMA_BOUNCE_WHEN_NEEDED, 1 << 16);
	memset(sg, 0, sizeof(sg));
	sg[0].va = a; sg[0].len = 100;
	sg[1].va = b + 8; sg[1].len = 100;
	n = iodma_map_sg(dev, sg, 2, IODMA_FROM_DEVICE);
	assert_int_equal(n, 2);
	assert_int_equal(sg[1].seg_iova, sg[1].iova);
	assert_int_equal(sg[1].iova & (PG - 1), 8);
	assert_int_equal(iodma_unmap_sg(dev, sg, 2, IODMA_FROM_DEVICE), 0);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(a); free(b); free(c); free(all);
}

static void test_sg_respects_segment_boundary(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_dev *dev;
	uint8_t *buf = page_alloc(16 * PG);
	struct iodma_sg sg[6];
	int n;

	(void)state;
	o.domain = d;
	o.segment_boundary = 4 * PG - 1;  /* 16 KiB windows */
	assert_int_equal(iodma_dev_create(&o, &dev), 0);
	memset(sg, 0, sizeof(sg));
	for (int i = 0; i < 6; i++) {
		sg[i].va = buf + (size_t)i * 2 * PG + (i == 1 ? 0 : 0);
		sg[i].len = i == 1 ? 3 * PG : PG;
	}
	n = iodma_map_sg(dev, sg, 6, IODMA_BIDIRECTIONAL);
	assert_true(n >= 1);
	for (int i = 0; i < n; i++) {
		uint64_t s = sg[i].seg_iova, e = s + sg[i].seg_len - 1;

		assert_int_equal(s / (4 * PG), e / (4 * PG));
	}
	for (int i = 0; i < 6; i++) {
		uint64_t s = sg[i].iova, e = s + sg[i].len - 1;

		assert_int_equal(s / (4 * PG), e / (4 * PG));
	}
	assert_int_equal(iodma_unmap_sg(dev, sg, 6, IODMA_BIDIRECTIONAL), 0);
	/* An element longer than the boundary window is a bad list. */
	sg[0].len = 5 * PG;
	assert_int_equal(iodma_map_sg(dev, sg, 1, IODMA_BIDIRECTIONAL), -EINVAL);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

/* Does [iova, iova + len) cross a multiple of @mask + 1? */
static bool crosses_boundary(uint64_t iova, uint64_t len, uint64_t mask)
{
	return (iova & ~mask) != ((iova + len - 1) & ~mask);
}

/* With a domain, an element no longer than the boundary window whose
 * offset in its page puts it across a line wherever its pages are mapped
 * (offset + len > window) is bounced whole (found by fuzz-dma: it was
 * refused with -EINVAL); under BOUNCE_NEVER it is refused. */
static void test_sg_element_across_every_placement_bounces(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_dev *dev;
	uint8_t *buf = page_alloc(8 * PG), *back = page_alloc(8 * PG);
	struct iodma_sg sg[2];
	int n;

	(void)state;
	o.domain = d;
	o.segment_boundary = 4 * PG - 1;  /* 16 KiB windows */
	assert_int_equal(iodma_dev_create(&o, &dev), 0);
	memset(sg, 0, sizeof(sg));
	sg[0].va = buf;
	sg[0].len = PG;
	sg[1].va = buf + 2 * PG + 0x661;  /* 0x661 + 0x3f3f > 0x4000 */
	sg[1].len = 0x3f3f;
	fill(buf, 8 * PG, 9);
	n = iodma_map_sg(dev, sg, 2, IODMA_TO_DEVICE);
	assert_true(n >= 1);
	for (int i = 0; i < n; i++)
		assert_false(crosses_boundary(sg[i].seg_iova, sg[i].seg_len, 4 * PG - 1));
	assert_false(crosses_boundary(sg[1].iova, sg[1].len, 4 * PG - 1));
	assert_int_equal(stats(dev).bounces, 1);
	assert_int_equal(iodma_read(d, sg[1].iova, back, sg[1].len), 0);
	assert_memory_equal(back, sg[1].va, sg[1].len);
	assert_int_equal(iodma_unmap_sg(dev, sg, 2, IODMA_TO_DEVICE), 0);
	iodma_dev_destroy(dev);
	o.bounce = IODMA_BOUNCE_NEVER;
	assert_int_equal(iodma_dev_create(&o, &dev), 0);
	assert_int_equal(iodma_map_sg(dev, sg, 2, IODMA_TO_DEVICE), -EINVAL);
	assert_int_equal(iodma_domain_nr_mappings(d), 0);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
	free(back);
}


/* Every segment map_sg hands out respects the segment boundary, however
 * its elements were mapped.  Differential fuzzing found the registered
 * branch skipping the check: a 2-page element straddling a 64 KiB line
 * inside 256 KiB of registered memory came back as one crossing segment. */
static void test_sg_boundary_holds_for_registered_elements(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_dev *dev = NULL;
	size_t len = 64 * PG;	/* 256 KiB */
	uint8_t *buf = page_alloc(len), x[2 * PG];
	uint64_t reg_iova, off, hits;
	struct iodma_sg sg[3];
	int n;

	(void)state;
	o.domain = d;
	o.dma_mask = MASK32;
	o.segment_boundary = 0xffff;
	o.bounce_pool_size = 1 << 16;
	assert_int_equal(iodma_dev_create(&o, &dev), 0);
	assert_int_equal(iodma_dev_register(dev, buf, len, &reg_iova), 0);
	/* The page below a 64 KiB line of the registration's IOVA space. */
	off = ((reg_iova + PG + 0xffff) & ~0xffffull) - PG - reg_iova;
	assert_true(off + 3 * PG <= len);
	memset(sg, 0, sizeof(sg));
	sg[0].va = buf + off;
	sg[0].len = 2 * PG;
	fill(sg[0].va, 2 * PG, 9);
	n = iodma_map_sg(dev, sg, 1, IODMA_TO_DEVICE);
	assert_int_equal(n, 1);
	assert_false(crosses_boundary(sg[0].seg_iova, sg[0].seg_len, 0xffff));
	assert_false(crosses_boundary(sg[0].iova, sg[0].len, 0xffff));
	/* The device still reads the element's bytes there. */
	assert_int_equal(iodma_read(d, sg[0].iova, x, 2 * PG), 0);
	assert_true(check(x, 2 * PG, 9));
	assert_int_equal(iodma_unmap_sg(dev, sg, 1, IODMA_TO_DEVICE), 0);

	/* Registered elements that fit keep the registered IOVA; one that
	 * would cross is mapped elsewhere; no segment crosses. */
	hits = stats(dev).registered_hits;
	memset(sg, 0, sizeof(sg));
	sg[0].va = buf + off + PG;	/* at the line: a registered hit */
	sg[0].len = PG;
	sg[1].va = buf + off;		/* straddles */
	sg[1].len = 2 * PG;
	sg[2].va = buf + off + 2 * PG;	/* after the line: a hit */
	sg[2].len = PG;
	n = iodma_map_sg(dev, sg, 3, IODMA_BIDIRECTIONAL);
	assert_true(n >= 1);
	for (int i = 0; i < n; i++)
		assert_false(crosses_boundary(sg[i].seg_iova, sg[i].seg_len, 0xffff));
	for (int i = 0; i < 3; i++)
		assert_false(crosses_boundary(sg[i].iova, sg[i].len, 0xffff));
	assert_int_equal(sg[0].iova, reg_iova + off + PG);
	assert_int_equal(sg[2].iova, reg_iova + off + 2 * PG);
	assert_int_equal(stats(dev).registered_hits, hits + 2);
	assert_int_equal(iodma_unmap_sg(dev, sg, 3, IODMA_BIDIRECTIONAL), 0);
	assert_int_equal(iodma_dev_unregister(dev, buf, len), 0);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

/* Direct mode: an element whose bus address crosses the boundary, in
 * registered memory or not, bounces (WHEN_NEEDED) or is refused (NEVER). */
static void test_sg_boundary_holds_for_direct_elements(void **state)
{
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_dev *dev = NULL;
	uint8_t *low = page_alloc(2 * PG), *reg = page_alloc(2 * PG);
	struct iodma_sg sg[2];
	int n;

	(void)state;
	fake_reset();
	low_pool = page_alloc(1 << 16);
	fake_add(low_pool, 1 << 16, 0x100000, 0);
	fake_add(low, 2 * PG, 0x80f000, 0);	/* crosses 0x810000 */
	fake_add(reg, 2 * PG, 0x90f000, 0);	/* crosses 0x910000 */
	o.dma_mask = MASK32;
	o.segment_boundary = 0xffff;
	o.bounce_pool_size = 1 << 16;
	o.bounce_pool = low_pool;
	o.bounce_pool_bus = 0x100000;
	o.virt_to_phys = fake_v2p;
	assert_int_equal(iodma_dev_create(&o, &dev), 0);
	assert_int_equal(iodma_dev_register(dev, reg, 2 * PG, NULL), 0);
	memset(sg, 0, sizeof(sg));
	sg[0].va = low; sg[0].len = 2 * PG;
	sg[1].va = reg; sg[1].len = 2 * PG;
	fill(low, 2 * PG, 3);
	n = iodma_map_sg(dev, sg, 2, IODMA_TO_DEVICE);
	assert_true(n >= 1);
	for (int i = 0; i < n; i++)
		assert_false(crosses_boundary(sg[i].seg_iova, sg[i].seg_len, 0xffff));
	for (int i = 0; i < 2; i++)
		assert_false(crosses_boundary(sg[i].iova, sg[i].len, 0xffff));
	assert_int_equal(stats(dev).bounces, 2);
	assert_true(check(fake_bus_to_va(sg[0].iova), 2 * PG, 3));
	assert_int_equal(iodma_unmap_sg(dev, sg, 2, IODMA_TO_DEVICE), 0);
	/* A direct element that fits is still direct. */
	sg[0].va = low + PG; sg[0].len = PG;
	assert_int_equal(iodma_map_sg(dev, sg, 1, IODMA_TO_DEVICE), 1);
	assert_int_equal(sg[0].iova, 0x810000);
	assert_int_equal(iodma_unmap_sg(dev, sg, 1, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_dev_unregister(dev, reg, 2 * PG), 0);
	iodma_dev_destroy(dev);

	/* NEVER: refused with -EINVAL, nothing mapped. */
	o.bounce = IODMA_BOUNCE_NEVER;
	o.bounce_pool = NULL;
	o.bounce_pool_size = 0;
	o.bounce_pool_bus = 0;
	assert_int_equal(iodma_dev_create(&o, &dev), 0);
	sg[0].va = low; sg[0].len = 2 * PG;
	sg[0].iova = 0;
	assert_int_equal(iodma_map_sg(dev, sg, 1, IODMA_TO_DEVICE), -EINVAL);
	assert_int_equal(sg[0].iova, 0);
	assert_int_equal(stats(dev).maps, 0);
	assert_int_equal(iodma_dev_register(dev, reg, 2 * PG, NULL), 0);
	sg[0].va = reg;
	assert_int_equal(iodma_map_sg(dev, sg, 1, IODMA_TO_DEVICE), -EINVAL);
	assert_int_equal(stats(dev).maps, 0);
	assert_int_equal(iodma_dev_unregister(dev, reg, 2 * PG), 0);
	iodma_dev_destroy(dev);
	free(low_pool);
	low_pool = NULL;
	fake_reset();
	free(low);
	free(reg);
}

static void test_sg_all_or_nothing_when_third_element_fails(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_WHEN_NEEDED, 1 << 16);
	uint8_t *buf = page_alloc(8 * PG), x;
	struct iodma_sg sg[5];
	struct iodma_dev_stats st = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	uint64_t nr = iodma_domain_nr_mappings(d);

	(void)state;
	memset(sg, 0, sizeof(sg));
	sg[0].va = buf;               sg[0].len = PG;
	sg[1].va = buf + 2 * PG + 1;  sg[1].len = 100;
	sg[2].va = buf + 4 * PG;      sg[2].len = PG;
	sg[3].va = buf + 6 * PG;      sg[3].len = PG;
	sg[4].va = buf + 7 * PG;      sg[4].len = 10;
	/* Dynamic elements 0, 1, 2, 3, 4: the 3rd domain map fails. */
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_MAP, 3, -EIO), 0);
	assert_int_equal(iodma_map_sg(dev, sg, 5, IODMA_TO_DEVICE), -EIO);
	assert_int_equal(iodma_domain_nr_mappings(d), nr);
	for (int i = 0; i < 5; i++)
		assert_int_equal(sg[i].iova, 0);
	st = stats(dev);
	assert_int_equal(st.maps, 0);
	assert_int_equal(st.bounce_slots_used, 0);
	/* The two maps made and rolled back are not counted: only the pool's
	 * mapping stayed. */
	assert_int_equal(st.mappings_created, 1);
	/* Segments: [0] [1 (offset 1)] [2 3 4 (page-contiguous)]. */
	assert_int_equal(iodma_map_sg(dev, sg, 5, IODMA_TO_DEVICE), 3);
	assert_int_equal(stats(dev).mappings_created, 1 + 5); /* one per element */
	assert_int_equal(sg[2].seg_iova, sg[2].iova);
	assert_int_equal(sg[2].seg_len, 2 * PG + 10);
	assert_int_equal(iodma_read(d, sg[2].iova, &x, 1), 0);
	assert_int_equal(iodma_unmap_sg(dev, sg, 5, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_domain_nr_mappings(d), nr);
	iodma_dev_destroy(dev);

	/* Mixed with bounced elements (align 512): the bounces are undone. */
	{
		struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);

		o.domain = d;
		o.min_align = 512;
		o.bounce_pool_size = 1 << 16;
		assert_int_equal(iodma_dev_create(&o, &dev), 0);
		nr = iodma_domain_nr_mappings(d);
		/* elements 1 and 4 bounce; 0, 2, 3 map: the 3rd map is sg[3]. */
		sg[4].va = buf + 7 * PG + 8;
		assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_MAP, 3, -EIO), 0);
		assert_int_equal(iodma_map_sg(dev, sg, 5, IODMA_BIDIRECTIONAL), -EIO);
		assert_int_equal(iodma_domain_nr_mappings(d), nr);
		assert_int_equal(stats(dev).bounce_slots_used, 0);
		assert_true(iodma_map_sg(dev, sg, 5, IODMA_BIDIRECTIONAL) >= 3);
		assert_int_equal(stats(dev).bounces, 2);
		assert_int_equal(stats(dev).bounce_slots_used, 2);
		assert_int_equal(iodma_unmap_sg(dev, sg, 5, IODMA_BIDIRECTIONAL), 0);
		assert_int_equal(stats(dev).bounce_slots_used, 0);
		assert_int_equal(iodma_domain_nr_mappings(d), nr);
		iodma_dev_destroy(dev);
	}
	iodma_domain_destroy(d);
	free(buf);
}

static void test_sg_bounced_elements_copy_back_at_unmap(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_ALWAYS, 1 << 16);
	uint8_t *buf = page_alloc(2 * PG), x[50];
	struct iodma_sg sg[2];

	(void)state;
	memset(sg, 0, sizeof(sg));
	sg[0].va = buf; sg[0].len = 50;
	sg[1].va = buf + PG; sg[1].len = 50;
	assert_true(iodma_map_sg(dev, sg, 2, IODMA_FROM_DEVICE) >= 1);
	fill(x, 50, 6);
	assert_int_equal(iodma_write(d, sg[1].iova, x, 50), 0);
	assert_int_equal(iodma_sync_sg_for_cpu(dev, sg, 2, IODMA_FROM_DEVICE), 0);
	assert_true(check(buf + PG, 50, 6));
	fill(x, 50, 7);
	assert_int_equal(iodma_write(d, sg[0].iova, x, 50), 0);
	assert_int_equal(iodma_unmap_sg(dev, sg, 2, IODMA_FROM_DEVICE), 0);
	assert_true(check(buf, 50, 7));
	assert_int_equal(iodma_sync_sg_for_cpu(dev, sg, 2, IODMA_FROM_DEVICE), -EINVAL);
	assert_int_equal(iodma_map_sg(dev, NULL, 1, IODMA_TO_DEVICE), -EINVAL);
	assert_int_equal(iodma_map_sg(dev, sg, 0, IODMA_TO_DEVICE), -EINVAL);
	sg[1].len = 0;
	assert_int_equal(iodma_map_sg(dev, sg, 2, IODMA_TO_DEVICE), -EINVAL);
	assert_int_equal(stats(dev).bounce_slots_used, 0);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

static void test_sg_direct_mode_merges_physically_contiguous(void **state)
{
	struct iodma_dev *dev = direct_dev_new(MASK32, IODMA_BOUNCE_WHEN_NEEDED,
					       1 << 16);
	uint8_t *low = page_alloc(4 * PG), *high = page_alloc(PG);
	struct iodma_sg sg[3];

	(void)state;
	fake_add(low, 4 * PG, 0x800000, 0);
	memset(sg, 0, sizeof(sg));
	sg[0].va = low; sg[0].len = PG;
	sg[1].va = low + PG; sg[1].len = 2 * PG;
	sg[2].va = high; sg[2].len = 64; /* above the mask: bounced */
	assert_int_equal(iodma_map_sg(dev, sg, 3, IODMA_TO_DEVICE), 2);
	assert_int_equal(sg[0].seg_iova, 0x800000);
	assert_int_equal(sg[0].seg_len, 3 * PG);
	assert_true(sg[1].seg_iova >= 0x100000 && sg[1].seg_iova < 0x110000);
	assert_int_equal(stats(dev).bounces, 1);
	assert_int_equal(iodma_unmap_sg(dev, sg, 3, IODMA_TO_DEVICE), 0);
	assert_int_equal(stats(dev).bounce_slots_used, 0);
	direct_dev_free(dev);
	free(low);
	free(high);
}

static void test_no_iova_space_below_mask_is_enomem(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_dev *dev = NULL;
	uint8_t *buf = page_alloc(32 * PG);
	uint64_t iova = 0;
	void *va = NULL;

	(void)state;
	/* A 16-bit device: 15 usable pages below 64 KiB (page 0 is out). */
	o.domain = d;
	o.dma_mask = 0xffff;
	assert_int_equal(iodma_dev_create(&o, &dev), -ENOMEM); /* 4 MiB pool */
	assert_null(dev);
	assert_int_equal(iodma_domain_nr_mappings(d), 0);
	o.bounce_pool_size = 4 * PG;
	assert_int_equal(iodma_dev_create(&o, &dev), 0);
	assert_int_equal(iodma_alloc_coherent(dev, 16 * PG, &va, &iova), -ENOMEM);
	assert_null(va);
	assert_int_equal(iodma_dev_register(dev, buf, 16 * PG, &iova), -ENOMEM);
	assert_int_equal(iodma_va_to_iova(dev, buf, 1, &iova), -ENOENT);
	assert_int_equal(iodma_map_single(dev, buf, 16 * PG, IODMA_TO_DEVICE, &iova), -ENOMEM);
	assert_int_equal(iodma_domain_nr_mappings(d), 1);
	assert_int_equal(iodma_alloc_coherent(dev, 8 * PG, &va, &iova), 0);
	assert_true(iova + 8 * PG - 1 <= 0xffff);
	assert_int_equal(iodma_free_coherent(dev, 8 * PG, va, iova), 0);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

static void test_domain_map_errors_propagate_and_leave_nothing(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_dev *dev = NULL;
	uint8_t *buf = page_alloc(8 * PG);
	uint64_t iova = 0;
	void *va = NULL;
	struct iodma_sg sg[1];

	(void)state;
	o.domain = d;
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_MAP, 1, -EIO), 0);
	assert_int_equal(iodma_dev_create(&o, &dev), -EIO); /* the pool map */
	assert_null(dev);
	assert_int_equal(iodma_dev_create(&o, &dev), 0);
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_MAP, 1, -EIO), 0);
	assert_int_equal(iodma_alloc_coherent(dev, PG, &va, &iova), -EIO);
	assert_int_equal(stats(dev).coherent_allocs, 0);
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_MAP, 1, -EIO), 0);
	assert_int_equal(iodma_dev_register(dev, buf, 8 * PG, NULL), -EIO);
	assert_int_equal(iodma_va_to_iova(dev, buf, 1, &iova), -ENOENT);
	assert_int_equal(iodma_domain_nr_mappings(d), 1);
	/* Unregister whose domain unmap fails: still registered. */
	assert_int_equal(iodma_dev_register(dev, buf, 8 * PG, NULL), 0);
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_UNMAP, 1, -EIO), 0);
	assert_int_equal(iodma_dev_unregister(dev, buf, 8 * PG), -EIO);
	assert_int_equal(iodma_va_to_iova(dev, buf + PG, 1, &iova), 0);
	assert_int_equal(iodma_map_single(dev, buf, 8, IODMA_TO_DEVICE, &iova), 0);
	assert_int_equal(stats(dev).registered_hits, 1);
	assert_int_equal(iodma_unmap_single(dev, iova, 8, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_dev_unregister(dev, buf, 8 * PG), 0);
	/* Coherent free whose unmap fails: still allocated. */
	assert_int_equal(iodma_alloc_coherent(dev, PG, &va, &iova), 0);
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_UNMAP, 1, -EIO), 0);
	assert_int_equal(iodma_free_coherent(dev, PG, va, iova), -EIO);
	assert_int_equal(stats(dev).coherent_allocs, 1);
	assert_int_equal(iodma_free_coherent(dev, PG, va, iova), 0);
	/* VirtIoHal::dma_dealloc is the same call. */
	assert_int_equal(iodma_hal_dma_alloc(dev, 1, IODMA_BIDIRECTIONAL, &iova, &va), 0);
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_UNMAP, 1, -EIO), 0);
	assert_int_equal(iodma_hal_dma_dealloc(dev, iova, va, 1), -EIO);
	assert_int_equal(stats(dev).coherent_allocs, 1);
	assert_int_equal(iodma_hal_dma_dealloc(dev, iova, va, 1), 0);
	/* unmap_sg whose unmap fails: the list stays mapped. */
	memset(sg, 0, sizeof(sg));
	sg[0].va = buf; sg[0].len = PG;
	assert_int_equal(iodma_map_sg(dev, sg, 1, IODMA_TO_DEVICE), 1);
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_UNMAP, 1, -EIO), 0);
	assert_int_equal(iodma_unmap_sg(dev, sg, 1, IODMA_TO_DEVICE), -EIO);
	assert_int_equal(iodma_sync_sg_for_cpu(dev, sg, 1, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_unmap_sg(dev, sg, 1, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_domain_nr_mappings(d), 1);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

/* A backend whose unmaps fail while flaky_unmaps > 0 (soft underneath),
 * and a listener that rejects its next map: together they make a domain
 * map fail and its undo fail too (-EUCLEAN, domain.h). */
static unsigned int flaky_unmaps;

static int fl_open(const void *c, void **p) { return iodma_backend_soft()->open(c, p); }
static void fl_close(void *p) { iodma_backend_soft()->close(p); }
static int fl_get_caps(void *p, struct iodma_caps *c) { return iodma_backend_soft()->get_caps(p, c); }
static int fl_map(void *p, const struct iodma_map_event *ev) { return iodma_backend_soft()->map(p, ev); }
static int fl_unmap(void *p, uint64_t iova, uint64_t len, uint64_t *u)
{
	if (flaky_unmaps > 0) {
		flaky_unmaps--;
		return -EIO;
	}
	return iodma_backend_soft()->unmap(p, iova, len, u);
}

static const struct iodma_backend_ops flaky_ops = {
	.version = IODMA_BACKEND_OPS_VERSION, .name = "flaky",
	.open = fl_open, .close = fl_close, .get_caps = fl_get_caps,
	.map = fl_map, .unmap = fl_unmap,
};

static unsigned int reject_next; /* 1 = the next map is rejected */

static int rj_map(void *arg, const struct iodma_map_event *ev)
{
	(void)arg; (void)ev;
	if (reject_next && --reject_next == 0)
		return -EPERM;
	return 0;
}

static void rj_unmap(void *arg, uint64_t iova, uint64_t len)
{
	(void)arg; (void)iova; (void)len;
}

static const struct iodma_listener_ops rj_ops = { .map = rj_map, .unmap = rj_unmap };

/* The DMA layer never passes a domain's -EUCLEAN on while it can take the
 * mapping back itself: one more unmap, then -EIO and nothing mapped.  Only
 * when the backend refuses again does it report -EUCLEAN, and then it keeps
 * the memory the device may still reach (coherent pages are not freed). */
static void test_domain_map_left_live_is_taken_back_or_reported(void **state)
{
	struct iodma_domain_opts dopt = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_domain *d = NULL;
	struct iodma_dev *dev;
	struct iodma_listener *l;
	uint8_t *buf = page_alloc(8 * PG);
	struct iodma_sg sg[2];
	uint64_t iova = 0, nr, created;
	void *va = NULL;

	(void)state;
	dopt.backend = &flaky_ops;
	assert_int_equal(iodma_domain_create(&dopt, &d), 0);
	dev = dev_new(d, MASK32, IODMA_BOUNCE_WHEN_NEEDED, 1 << 16);
	assert_int_equal(iodma_domain_add_listener(d, &rj_ops, NULL, &l), 0);
	nr = iodma_domain_nr_mappings(d);
	created = stats(dev).mappings_created;

	/* The domain's undo fails once, the DMA layer's retry works: -EIO. */
	reject_next = 1; flaky_unmaps = 1;
	assert_int_equal(iodma_map_single(dev, buf, 100, IODMA_TO_DEVICE, &iova), -EIO);
	assert_int_equal(iodma_domain_nr_mappings(d), nr);
	reject_next = 1; flaky_unmaps = 1;
	assert_int_equal(iodma_alloc_coherent(dev, PG, &va, &iova), -EIO);
	assert_null(va);
	assert_int_equal(iodma_domain_nr_mappings(d), nr);
	reject_next = 1; flaky_unmaps = 1;
	assert_int_equal(iodma_dev_register(dev, buf, 8 * PG, &iova), -EIO);
	assert_int_equal(iodma_va_to_iova(dev, buf, 1, &iova), -ENOENT);
	assert_int_equal(iodma_domain_nr_mappings(d), nr);
	/* sg: the 2nd element's map is rejected and left live; the group
	 * unmap takes both back. */
	memset(sg, 0, sizeof(sg));
	sg[0].va = buf; sg[0].len = PG;
	sg[1].va = buf + 2 * PG; sg[1].len = PG;
	reject_next = 2; flaky_unmaps = 1;
	assert_int_equal(iodma_map_sg(dev, sg, 2, IODMA_TO_DEVICE), -EIO);
	assert_int_equal(iodma_domain_nr_mappings(d), nr);
	assert_int_equal(stats(dev).mappings_created, created);
	assert_int_equal(stats(dev).maps, 0);
	/* And everything works afterwards, in the IOVA space given back. */
	assert_int_equal(iodma_map_sg(dev, sg, 2, IODMA_TO_DEVICE), 1);
	assert_int_equal(iodma_unmap_sg(dev, sg, 2, IODMA_TO_DEVICE), 0);

	/* The backend refuses twice: -EUCLEAN, the mapping is live. */
	reject_next = 1; flaky_unmaps = 2;
	assert_int_equal(iodma_map_single(dev, buf, 100, IODMA_TO_DEVICE, &iova), -EUCLEAN);
	assert_int_equal(iodma_domain_nr_mappings(d), nr + 1);
	reject_next = 1; flaky_unmaps = 2;
	assert_int_equal(iodma_alloc_coherent(dev, PG, &va, &iova), -EUCLEAN);
	assert_null(va);
	assert_int_equal(iodma_domain_nr_mappings(d), nr + 2);
	reject_next = 2; flaky_unmaps = 2;
	assert_int_equal(iodma_map_sg(dev, sg, 2, IODMA_TO_DEVICE), -EUCLEAN);
	assert_int_equal(iodma_domain_nr_mappings(d), nr + 4);
	assert_int_equal(stats(dev).maps, 2); /* the good sg only */
	reject_next = 1; flaky_unmaps = 2;
	assert_int_equal(iodma_dev_register(dev, buf + 4 * PG, 4 * PG, &iova), -EUCLEAN);
	assert_int_equal(iodma_va_to_iova(dev, buf + 4 * PG, 1, &iova), -ENOENT);
	assert_int_equal(iodma_domain_nr_mappings(d), nr + 5);
	assert_int_equal(stats(dev).mappings_created, created + 2);
	assert_int_equal(flaky_unmaps, 0);
	iodma_domain_remove_listener(d, l);
	iodma_dev_destroy(dev);
	/* The domain still holds what the device can reach; destroy unmaps. */
	assert_int_equal(iodma_domain_nr_mappings(d), nr + 5 - 1);
	iodma_domain_destroy(d);
	free(buf);
}

/* ---- MMIO ----------------------------------------------------------------------------- */

static void test_mmio_windows_translate_and_reject(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, 0, IODMA_BOUNCE_NEVER, 0);
	static uint8_t bar[2][4096];
	void *va = NULL;

	(void)state;
	assert_int_equal(iodma_dev_add_mmio(dev, 0xfe000000, 4096, bar[0]), 0);
	assert_int_equal(iodma_dev_add_mmio(dev, 0xfe001000, 4096, bar[1]), 0);
	assert_int_equal(iodma_dev_add_mmio(dev, 0xfe000800, 16, bar[1]), -EEXIST);
	assert_int_equal(iodma_dev_add_mmio(dev, 0x1000, 0, bar[1]), -EINVAL);
	assert_int_equal(iodma_dev_add_mmio(dev, UINT64_MAX, 2, bar[1]), -EINVAL);
	assert_int_equal(iodma_dev_add_mmio(dev, 0x1000, 16, NULL), -EINVAL);
	assert_int_equal(iodma_mmio_phys_to_virt(dev, 0xfe000010, 16, &va), 0);
	assert_ptr_equal(va, bar[0] + 16);
	assert_int_equal(iodma_mmio_phys_to_virt(dev, 0xfe001ff0, 16, &va), 0);
	assert_ptr_equal(va, bar[1] + 0xff0);
	va = NULL;
	assert_int_equal(iodma_mmio_phys_to_virt(dev, 0xfe000ff0, 32, &va), -EFAULT);
	assert_int_equal(iodma_mmio_phys_to_virt(dev, 0xfd000000, 4, &va), -EFAULT);
	assert_int_equal(iodma_mmio_phys_to_virt(dev, 0xfe000000, 0, &va), -EFAULT);
	assert_null(va);
	for (int i = 2; i < 16; i++)
		assert_int_equal(iodma_dev_add_mmio(dev, 0x10000000ull * (uint64_t)i,
						    4096, bar[0]), 0);
	assert_int_equal(iodma_dev_add_mmio(dev, 0x200000000ull, 4096, bar[0]), -ENOSPC);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
}

/* ---- destroy ----------------------------------------------------------------------------- */

static void test_dev_destroy_releases_everything_live(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_WHEN_NEEDED, 1 << 16);
	uint8_t *buf = page_alloc(16 * PG);
	struct iodma_sg sg[2];
	uint64_t io;
	void *va;

	(void)state;
	assert_int_equal(iodma_dev_register(dev, buf, 4 * PG, NULL), 0);
	assert_int_equal(iodma_map_single(dev, buf, 10, IODMA_TO_DEVICE, &io), 0);
	assert_int_equal(iodma_map_single(dev, buf + 5 * PG, 10, IODMA_TO_DEVICE, &io), 0);
	assert_int_equal(iodma_map_single_attrs(dev, buf + 6 * PG + 1, 10, 4, 0,
						IODMA_TO_DEVICE, &io), 0);
	assert_int_equal(iodma_alloc_coherent(dev, PG, &va, &io), 0);
	memset(sg, 0, sizeof(sg));
	sg[0].va = buf + 8 * PG; sg[0].len = PG;
	sg[1].va = buf + 9 * PG; sg[1].len = PG;
	assert_int_equal(iodma_map_sg(dev, sg, 2, IODMA_TO_DEVICE), 1);
	assert_true(iodma_domain_nr_mappings(d) > 1);
	iodma_dev_destroy(dev);
	assert_int_equal(iodma_domain_nr_mappings(d), 0);
	iodma_dev_destroy(NULL);
	iodma_domain_destroy(d);
	free(buf);
}

/* ---- fail-nth sweeps ----------------------------------------------------------------------- */

static void test_fail_nth_dev_create(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_dev *dev;
	unsigned long n;
	int ret;

	(void)state;
	o.domain = d;
	o.dma_mask = MASK32;
	for (n = 1;; n++) {
		dev = NULL;
		iodma_test_fail_alloc(n);
		ret = iodma_dev_create(&o, &dev);
		iodma_test_fail_alloc(0);
		if (ret == 0)
			break;
		assert_int_equal(ret, -ENOMEM);
		assert_null(dev);
		assert_int_equal(iodma_domain_nr_mappings(d), 0);
	}
	assert_true(n > 1);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
}

static void sweep_map_single(struct iodma_domain *d, struct iodma_dev *dev,
			     void *va, size_t len, uint64_t align)
{
	struct iodma_dev_stats before = stats(dev);
	struct iodma_dev_stats st = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	uint64_t nr = iodma_domain_nr_mappings(d), iova = 0;
	unsigned long n;
	int ret;

	for (n = 1;; n++) {
		iodma_test_fail_alloc(n);
		ret = iodma_map_single_attrs(dev, va, len, align, 0,
					     IODMA_BIDIRECTIONAL, &iova);
		iodma_test_fail_alloc(0);
		if (ret == 0)
			break;
		assert_int_equal(ret, -ENOMEM);
		assert_int_equal(iodma_domain_nr_mappings(d), nr);
		st = stats(dev);
		assert_int_equal(st.maps, before.maps);
		assert_int_equal(st.bounce_slots_used, before.bounce_slots_used);
	}
	assert_int_equal(iodma_unmap_single(dev, iova, len, IODMA_BIDIRECTIONAL), 0);
}

static void test_fail_nth_map_single_every_kind(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_WHEN_NEEDED, 1 << 16);
	uint8_t *buf = page_alloc(8 * PG);

	(void)state;
	sweep_map_single(d, dev, buf + 100, 3000, 0);      /* dynamic */
	sweep_map_single(d, dev, buf + 101, 3000, 4);      /* bounce */
	assert_int_equal(iodma_dev_register(dev, buf + 4 * PG, 4 * PG, NULL), 0);
	sweep_map_single(d, dev, buf + 4 * PG + 8, 100, 0); /* registered */
	assert_int_equal(iodma_dev_unregister(dev, buf + 4 * PG, 4 * PG), 0);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

static void test_fail_nth_alloc_coherent(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_WHEN_NEEDED, 1 << 16);
	uint64_t nr = iodma_domain_nr_mappings(d), iova;
	unsigned long n;
	void *va;
	int ret;

	(void)state;
	for (n = 1;; n++) {
		va = NULL;
		iodma_test_fail_alloc(n);
		ret = iodma_alloc_coherent(dev, 3 * PG, &va, &iova);
		iodma_test_fail_alloc(0);
		if (ret == 0)
			break;
		assert_int_equal(ret, -ENOMEM);
		assert_null(va);
		assert_int_equal(iodma_domain_nr_mappings(d), nr);
		assert_int_equal(stats(dev).coherent_allocs, 0);
	}
	assert_int_equal(iodma_free_coherent(dev, 3 * PG, va, iova), 0);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
}

static void test_fail_nth_register(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_WHEN_NEEDED, 1 << 16);
	uint8_t *buf = page_alloc(16 * PG);
	uint64_t nr = iodma_domain_nr_mappings(d), io;
	unsigned long n;
	int ret;

	(void)state;
	/* A first registration elsewhere so the registry array exists too. */
	for (n = 1;; n++) {
		iodma_test_fail_alloc(n);
		ret = iodma_dev_register(dev, buf, 16 * PG, NULL);
		iodma_test_fail_alloc(0);
		if (ret == 0)
			break;
		assert_int_equal(ret, -ENOMEM);
		assert_int_equal(iodma_domain_nr_mappings(d), nr);
		assert_int_equal(iodma_va_to_iova(dev, buf, 1, &io), -ENOENT);
		/* and the range is still free to register */
	}
	assert_int_equal(iodma_va_to_iova(dev, buf + 15 * PG, PG, &io), 0);
	assert_int_equal(iodma_dev_unregister(dev, buf, 16 * PG), 0);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

static void test_fail_nth_map_sg(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_dev *dev;
	uint8_t *buf = page_alloc(8 * PG);
	struct iodma_sg sg[4];
	uint64_t nr;
	unsigned long n;
	int ret;

	(void)state;
	o.domain = d;
	o.min_align = 8;
	o.bounce_pool_size = 1 << 16;
	assert_int_equal(iodma_dev_create(&o, &dev), 0);
	assert_int_equal(iodma_dev_register(dev, buf + 6 * PG, 2 * PG, NULL), 0);
	nr = iodma_domain_nr_mappings(d);
	memset(sg, 0, sizeof(sg));
	sg[0].va = buf; sg[0].len = PG;              /* dynamic */
	sg[1].va = buf + 2 * PG + 3; sg[1].len = 9;  /* bounce */
	sg[2].va = buf + 4 * PG; sg[2].len = PG;     /* dynamic */
	sg[3].va = buf + 6 * PG; sg[3].len = PG;     /* registered */
	for (n = 1;; n++) {
		iodma_test_fail_alloc(n);
		ret = iodma_map_sg(dev, sg, 4, IODMA_TO_DEVICE);
		iodma_test_fail_alloc(0);
		if (ret > 0)
			break;
		assert_int_equal(ret, -ENOMEM);
		assert_int_equal(iodma_domain_nr_mappings(d), nr);
		assert_int_equal(stats(dev).bounce_slots_used, 0);
		assert_int_equal(stats(dev).maps, 0);
	}
	assert_int_equal(stats(dev).registered_hits, 1);
	assert_int_equal(iodma_dev_unregister(dev, buf + 6 * PG, 2 * PG), -EBUSY);
	assert_int_equal(iodma_unmap_sg(dev, sg, 4, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_dev_unregister(dev, buf + 6 * PG, 2 * PG), 0);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

/* ---- threads ------------------------------------------------------------------------------ */

struct thr_arg {
	struct iodma_domain *d;
	struct iodma_dev *dev;
	uint8_t seed;
	int errors;
};

static void *bounce_thread(void *p)
{
	struct thr_arg *a = p;
	size_t len = 3000;
	uint8_t *buf = malloc(len), *seen = malloc(len), *ans = malloc(len);

	for (int it = 0; it < 400; it++) {
		uint8_t s = (uint8_t)(a->seed + it);
		uint64_t iova;

		fill(buf, len, s);
		if (iodma_map_single(a->dev, buf, len, IODMA_BIDIRECTIONAL, &iova)) {
			a->errors++;
			continue;
		}
		if (iodma_read(a->d, iova, seen, len) || !check(seen, len, s))
			a->errors++;
		fill(ans, len, (uint8_t)(s ^ 0x5a));
		if (iodma_write(a->d, iova, ans, len))
			a->errors++;
		if (iodma_unmap_single(a->dev, iova, len, IODMA_BIDIRECTIONAL) ||
		    !check(buf, len, (uint8_t)(s ^ 0x5a)))
			a->errors++;
	}
	free(buf);
	free(seen);
	free(ans);
	return NULL;
}

static void test_bounce_pool_four_threads_keep_their_data(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_ALWAYS, 1 << 20);
	pthread_t t[4];
	struct thr_arg a[4];

	(void)state;
	for (int i = 0; i < 4; i++) {
		a[i] = (struct thr_arg){ d, dev, (uint8_t)(i * 61), 0 };
		assert_int_equal(pthread_create(&t[i], NULL, bounce_thread, &a[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(a[i].errors, 0);
	}
	assert_int_equal(stats(dev).bounces, 1600);
	assert_int_equal(stats(dev).bounce_slots_used, 0);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
}

/* Two threads unmap the same bounce map at the same moment, many times,
 * neither of them the thread that mapped it: exactly one gets 0 and the
 * other -EINVAL (the claim of another thread's run is one
 * compare-and-swap, bounce_claim_fast()), and no slot is freed twice
 * (nothing in use at the end).  The main thread maps and releases both
 * racers each round; each racer waits a varying few nanoseconds after
 * the start signal so that, whatever the signal's latency, some rounds
 * collide.  (Races that involve the mapping thread itself:
 * test_bounce_owner_racing_another_unmap_exactly_one_wins.) */
struct race_ctl {
	struct iodma_dev *dev;
	_Atomic uint64_t iova;
	_Atomic int go;      /* round number released */
	_Atomic int done;    /* racer rounds finished (all racers) */
	_Atomic int wins;
	int rounds;
	enum iodma_dir dir; /* of every map and unmap */
};

static void *race_unmap_thread(void *p)
{
	struct race_ctl *c = p;

	for (int r = 1; r <= c->rounds; r++) {
		for (unsigned int spin = 0; atomic_load(&c->go) < r; spin++)
			if (spin > 2000)
				sched_yield();
		for (volatile int k = 0; k < (r * 7) % 61; k++)
			;
		if (iodma_unmap_single(c->dev, atomic_load(&c->iova), PG,
				       c->dir) == 0)
			atomic_fetch_add(&c->wins, 1);
		atomic_fetch_add(&c->done, 1);
	}
	return NULL;
}

/* Run @rounds of: map a page of @buf with @dir (the device writes @ans
 * over its first bytes when @ans), release @nracers racers and, when
 * @main_races, unmap it here too; check that @want(wins this round) and
 * the buffer got the device's bytes. */
static void race_rounds(struct iodma_domain *d, struct race_ctl *c,
			uint8_t *buf, int nracers, bool main_races)
{
	uint8_t *ref = page_alloc(PG), ans[64];

	for (int r = 1; r <= c->rounds; r++) {
		int before = atomic_load(&c->wins);
		uint64_t io;

		fill(buf, PG, (uint8_t)r);
		assert_int_equal(iodma_map_single(c->dev, buf, PG, c->dir, &io), 0);
		fill(ans, sizeof(ans), (uint8_t)(r ^ 0xa5));
		if (c->dir != IODMA_TO_DEVICE)
			assert_int_equal(iodma_write(d, io, ans, sizeof(ans)), 0);
		atomic_store(&c->iova, io);
		atomic_store(&c->go, r);
		if (main_races) {
			for (volatile int k = 0; k < r % 97; k++)
				;
			if (iodma_unmap_single(c->dev, io, PG, c->dir) == 0)
				atomic_fetch_add(&c->wins, 1);
		}
		for (unsigned int spin = 0;
		     atomic_load(&c->done) < r * nracers; spin++)
			if (spin > 2000)
				sched_yield();
		assert_int_equal(atomic_load(&c->wins) - before, 1);
		/* The device's 64 bytes, then the driver's own. */
		fill(ref, PG, (uint8_t)r);
		if (c->dir != IODMA_TO_DEVICE)
			memcpy(ref, ans, sizeof(ans));
		assert_memory_equal(buf, ref, PG);
	}
	free(ref);
}

static void race_test(enum iodma_dir dir, int nracers, bool main_races)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_ALWAYS, 1 << 20);
	uint8_t *buf = page_alloc(PG);
	struct race_ctl *c = calloc(1, sizeof(*c));
	pthread_t t[2];
	const int rounds = 20000;

	c->dev = dev;
	c->rounds = rounds;
	c->dir = dir;
	for (int i = 0; i < nracers; i++)
		assert_int_equal(pthread_create(&t[i], NULL, race_unmap_thread, c), 0);
	race_rounds(d, c, buf, nracers, main_races);
	for (int i = 0; i < nracers; i++)
		pthread_join(t[i], NULL);
	/* No slot freed twice: nothing in use, and the pool still gives out
	 * distinct runs for as many pages as it holds. */
	assert_int_equal(stats(dev).bounce_slots_used, 0);
	assert_int_equal(stats(dev).bounces, rounds);
	assert_int_equal(stats(dev).bounce_bytes,
				 (dir == IODMA_TO_DEVICE ? 1ull : 2ull) *
					 rounds * PG);
	free(c);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

static void test_bounce_racing_double_unmap_exactly_one_wins(void **state)
{
	(void)state;
	race_test(IODMA_TO_DEVICE, 2, false);
}

/* The same race with BIDIRECTIONAL maps, whose unmap copies back (and
 * frees the run into the winner's stash before its copy): still exactly
 * one winner per round, the buffer gets the device's bytes once, and no
 * slot is freed twice. */
static void test_bounce_racing_double_unmap_bidir_exactly_one_wins(void **state)
{
	(void)state;
	race_test(IODMA_BIDIRECTIONAL, 2, false);
}

/* The mapping thread unmaps its run while another thread unmaps it too
 * (the caller's bug: two unmaps of one map at once).  The mapping
 * thread's unmap is one compare-and-swap too (bounce_unmap_lent(), or
 * bounce_claim_fast() for another of its runs), so exactly one wins, only the winner copies back,
 * and the slots are put away once: nothing in use at the end.  (With a
 * plain store there, which saves ~6 ns a 4 KiB bounce, this test failed:
 * both won, and a run freed twice left bounce_slots_used at -10.) */
static void test_bounce_owner_racing_another_unmap_exactly_one_wins(void **state)
{
	(void)state;
	race_test(IODMA_TO_DEVICE, 1, true);
}

/* The same with BIDIRECTIONAL maps: the winner alone copies back. */
static void
test_bounce_owner_racing_another_unmap_bidir_exactly_one_wins(void **state)
{
	(void)state;
	race_test(IODMA_BIDIRECTIONAL, 1, true);
}

/* The mapping thread's own unmap, one compare-and-swap
 * (bounce_unmap_lent()), still refuses a second unmap of the same map and
 * unmaps with the wrong length or direction, and changes nothing: the run
 * is not put back twice, so two maps after it get two runs, and the live
 * map is still unmapped once with the right arguments. */
static void test_bounce_own_unmap_twice_is_einval_run_kept_once(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_ALWAYS, 1 << 20);
	uint8_t *a = page_alloc(PG), *b = page_alloc(PG), *c = page_alloc(PG);
	uint8_t seen[PG];
	uint64_t io, io2, iob, ioc;

	(void)state;
	/* Warm up: the run goes to this thread's stash, and the stash into
	 * the thread's cache (bounce_tls): the next map takes the fast path. */
	for (int i = 0; i < 3; i++) {
		assert_int_equal(iodma_map_single(dev, a, PG, IODMA_BIDIRECTIONAL, &io), 0);
		assert_int_equal(iodma_unmap_single(dev, io, PG, IODMA_BIDIRECTIONAL), 0);
	}
	fill(a, PG, 1);
	assert_int_equal(iodma_map_single(dev, a, PG, IODMA_BIDIRECTIONAL, &io2), 0);
	assert_int_equal(io2, io); /* the run freed last */
	/* Wrong length, wrong direction, a byte in: -EINVAL, still live. */
	assert_int_equal(iodma_unmap_single(dev, io, PG - 1, IODMA_BIDIRECTIONAL), -EINVAL);
	assert_int_equal(iodma_unmap_single(dev, io, PG, IODMA_TO_DEVICE), -EINVAL);
	assert_int_equal(iodma_unmap_single(dev, io, PG, IODMA_FROM_DEVICE), -EINVAL);
	assert_int_equal(iodma_unmap_single(dev, io + 64, 64, IODMA_BIDIRECTIONAL), -EINVAL);
	assert_int_equal(stats(dev).bounce_slots_used, 2);
	assert_int_equal(iodma_read(d, io, seen, PG), 0);
	assert_true(check(seen, PG, 1));
	fill(seen, PG, 2);
	assert_int_equal(iodma_write(d, io, seen, PG), 0);
	assert_int_equal(iodma_unmap_single(dev, io, PG, IODMA_BIDIRECTIONAL), 0);
	assert_true(check(a, PG, 2));
	/* Again: the map is gone, nothing changes (no copy back either). */
	fill(a, PG, 3);
	assert_int_equal(iodma_unmap_single(dev, io, PG, IODMA_BIDIRECTIONAL), -EINVAL);
	assert_true(check(a, PG, 3));
	assert_int_equal(stats(dev).bounce_slots_used, 0);
	/* Put back once: two live maps get two runs, each with its data. */
	fill(b, PG, 4);
	fill(c, PG, 5);
	assert_int_equal(iodma_map_single(dev, b, PG, IODMA_BIDIRECTIONAL, &iob), 0);
	assert_int_equal(iodma_map_single(dev, c, PG, IODMA_BIDIRECTIONAL, &ioc), 0);
	assert_true(iob != ioc);
	assert_int_equal(iodma_read(d, iob, seen, PG), 0);
	assert_true(check(seen, PG, 4));
	assert_int_equal(iodma_read(d, ioc, seen, PG), 0);
	assert_true(check(seen, PG, 5));
	assert_int_equal(iodma_unmap_single(dev, iob, PG, IODMA_BIDIRECTIONAL), 0);
	assert_int_equal(iodma_unmap_single(dev, ioc, PG, IODMA_BIDIRECTIONAL), 0);
	assert_int_equal(iodma_unmap_single(dev, iob, PG, IODMA_BIDIRECTIONAL), -EINVAL);
	assert_int_equal(stats(dev).bounce_slots_used, 0);
	assert_int_equal(stats(dev).maps, 6);
	assert_int_equal(stats(dev).bounces, 6);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(a);
	free(b);
	free(c);
}

/* No slot handed out twice while threads map, unmap their own runs and
 * unmap each other's: every live run's slots are claimed in a shared
 * table when mapped (a slot found claimed: two live runs share it) and
 * released just before the unmap.  Sizes vary so that the stash hit, the
 * stash's other runs and the areas all serve maps; a quarter of the maps
 * are unmapped by the other thread (its compare-and-swap claim).  Under
 * TSan it also shows the copies of one run's slots never race. */
#define SLOT_TAB 4096u
struct share_ctl {
	struct iodma_domain *d;
	struct iodma_dev *dev;
	_Atomic int owner[SLOT_TAB]; /* slot (iova / 2048 % SLOT_TAB) -> 1 + thread */
	_Atomic uint64_t handoff[2]; /* 1 + iova left for the other thread */
	_Atomic size_t handoff_len[2];
	_Atomic int errors;
};

struct share_arg {
	struct share_ctl *c;
	int me;
};

static bool share_claim(struct share_ctl *c, uint64_t iova, size_t len,
			int who)
{
	bool ok = true;

	for (uint64_t s = iova / 2048; s <= (iova + len - 1) / 2048; s++) {
		int prev = atomic_exchange(&c->owner[s % SLOT_TAB], who);

		if (prev != 0 && who != 0)
			ok = false;
	}
	return ok;
}

static void share_unmap(struct share_ctl *c, uint64_t iova, size_t len,
			uint8_t seed, int *errs)
{
	uint8_t seen[8192];

	if (iodma_read(c->d, iova, seen, len) || !check(seen, len, seed))
		(*errs)++;
	share_claim(c, iova, len, 0);
	if (iodma_unmap_single(c->dev, iova, len, IODMA_TO_DEVICE))
		(*errs)++;
}

static void *share_thread(void *p)
{
	struct share_arg *a = p;
	struct share_ctl *c = a->c;
	static const size_t sizes[4] = { 1500, PG, 2 * PG, 100 };
	uint8_t *buf = page_alloc(2 * PG);
	int errs = 0;

	for (int it = 0; it < 3000; it++) {
		uint64_t io[3];
		size_t len[3];
		uint64_t h;

		for (int k = 0; k < 3; k++) {
			len[k] = sizes[(it + k * a->me + k) % 4];
			fill(buf, len[k], (uint8_t)len[k]);
			if (iodma_map_single(c->dev, buf, len[k], IODMA_TO_DEVICE, &io[k])) {
				errs++;
				len[k] = 0;
				continue;
			}
			if (!share_claim(c, io[k], len[k], 1 + a->me))
				errs++;
		}
		/* The other thread's run, if it left one. */
		h = atomic_exchange(&c->handoff[a->me], 0);
		if (h) {
			size_t hl = atomic_load(&c->handoff_len[a->me]);

			share_unmap(c, h - 1, hl, (uint8_t)hl, &errs);
		}
		for (int k = 0; k < 3; k++) {
			if (!len[k])
				continue;
			if (k == 0 && it % 4 == 0 &&
			    !atomic_load(&c->handoff[1 - a->me])) {
				atomic_store(&c->handoff_len[1 - a->me], len[k]);
				atomic_store(&c->handoff[1 - a->me], io[k] + 1);
				continue;
			}
			share_unmap(c, io[k], len[k], (uint8_t)len[k], &errs);
		}
	}
	atomic_fetch_add(&c->errors, errs);
	free(buf);
	return NULL;
}

static void test_bounce_two_threads_no_slot_handed_out_twice(void **state)
{
	struct share_ctl *c = calloc(1, sizeof(*c));
	struct share_arg a[2];
	pthread_t t[2];

	(void)state;
	c->d = domain_new();
	c->dev = dev_new(c->d, MASK32, IODMA_BOUNCE_ALWAYS, 1 << 20);
	for (int i = 0; i < 2; i++) {
		a[i] = (struct share_arg){ c, i };
		assert_int_equal(pthread_create(&t[i], NULL, share_thread, &a[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(atomic_load(&c->errors), 0);
	/* Runs left for a thread that had finished: unmap them here. */
	for (int i = 0; i < 2; i++) {
		uint64_t h = atomic_load(&c->handoff[i]);

		if (h)
			assert_int_equal(iodma_unmap_single(c->dev, h - 1,
							    atomic_load(&c->handoff_len[i]),
							    IODMA_TO_DEVICE), 0);
	}
	assert_int_equal(stats(c->dev).bounce_slots_used, 0);
	assert_int_equal(stats(c->dev).bounces, 2 * 3000 * 3);
	iodma_dev_destroy(c->dev);
	iodma_domain_destroy(c->d);
	free(c);
}

/* Threads that exit with runs in their stashes: the runs are free (not
 * counted in use), the pool serves the other threads, and destroying the
 * device frees them with the pool (no leak under valgrind, nothing
 * counted as leaked).  A dead thread's stash keeps its runs until then
 * (no thread-exit hook for it: bounce.h), at most its budget. */
static void *exit_thread(void *p)
{
	struct iodma_dev *dev = p;
	uint8_t *buf = page_alloc(2 * PG);
	uint64_t io[2];

	for (int i = 0; i < 4; i++) {
		/* Two live at once: both runs go to the stash. */
		if (iodma_map_single(dev, buf, PG, IODMA_BIDIRECTIONAL, &io[0]) ||
		    iodma_map_single(dev, buf + PG, PG, IODMA_BIDIRECTIONAL, &io[1]) ||
		    iodma_unmap_single(dev, io[1], PG, IODMA_BIDIRECTIONAL) ||
		    iodma_unmap_single(dev, io[0], PG, IODMA_BIDIRECTIONAL)) {
			free(buf);
			return (void *)1;
		}
	}
	free(buf);
	return NULL;
}

static void test_bounce_thread_exit_with_stashed_runs(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_ALWAYS, 1 << 20);
	uint8_t *buf = page_alloc(PG);
	pthread_t t;
	void *ret;
	uint64_t io;

	(void)state;
	for (int i = 0; i < 8; i++) {
		assert_int_equal(pthread_create(&t, NULL, exit_thread, dev), 0);
		pthread_join(t, &ret);
		assert_null(ret);
		assert_int_equal(stats(dev).bounce_slots_used, 0);
	}
	assert_int_equal(stats(dev).bounces, 8 * 4 * 2);
	fill(buf, PG, 9);
	assert_int_equal(iodma_map_single(dev, buf, PG, IODMA_BIDIRECTIONAL, &io), 0);
	assert_int_equal(stats(dev).bounce_slots_used, 2);
	assert_int_equal(iodma_unmap_single(dev, io, PG, IODMA_BIDIRECTIONAL), 0);
	assert_true(check(buf, PG, 9));
	assert_int_equal(stats(dev).leaked, 0);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

/* A map gets the run its thread freed last (the stash is last in, first
 * out): its slots are the ones still in the cache from that run's copies.
 * Two runs freed A then B: the next map gets B, the one after A. */
static void test_bounce_map_reuses_the_run_freed_last(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_ALWAYS, 1 << 20);
	uint8_t *a = page_alloc(PG), *b = page_alloc(PG);
	uint64_t ia, ib, io, io2;

	(void)state;
	assert_int_equal(iodma_map_single(dev, a, PG, IODMA_TO_DEVICE, &ia), 0);
	assert_int_equal(iodma_map_single(dev, b, PG, IODMA_TO_DEVICE, &ib), 0);
	assert_true(ia != ib);
	assert_int_equal(iodma_unmap_single(dev, ia, PG, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_unmap_single(dev, ib, PG, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_map_single(dev, a, PG, IODMA_TO_DEVICE, &io), 0);
	assert_int_equal(io, ib);
	assert_int_equal(iodma_map_single(dev, b, PG, IODMA_TO_DEVICE, &io2), 0);
	assert_int_equal(io2, ia);
	/* And a map + unmap loop stays on one run. */
	assert_int_equal(iodma_unmap_single(dev, io2, PG, IODMA_TO_DEVICE), 0);
	for (int i = 0; i < 8; i++) {
		assert_int_equal(iodma_map_single(dev, a, PG, IODMA_BIDIRECTIONAL, &io2), 0);
		assert_int_equal(io2, ia);
		assert_int_equal(iodma_unmap_single(dev, io2, PG, IODMA_BIDIRECTIONAL), 0);
	}
	assert_int_equal(iodma_unmap_single(dev, io, PG, IODMA_TO_DEVICE), 0);
	assert_int_equal(stats(dev).bounce_slots_used, 0);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(a);
	free(b);
}

/* The run a thread freed last is reused only if it meets the new map's
 * alignment: the device's min_align (here larger than the slots': a map
 * with a smaller explicit alignment can leave a run that does not meet
 * it) and a page for a map of a page or more (Linux's swiotlb). */
static void test_bounce_stash_run_meets_alignment(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_dev *dev = NULL;
	uint8_t *buf = page_alloc(2 * PG);
	uint64_t io, keep[2];

	(void)state;
	o.domain = d;
	o.dma_mask = MASK32;
	o.bounce = IODMA_BOUNCE_ALWAYS;
	o.bounce_pool_size = 1 << 20;
	o.min_align = 4 * PG;
	assert_int_equal(iodma_dev_create(&o, &dev), 0);
	/* Two 2 KiB slots side by side, the second freed last. */
	assert_int_equal(iodma_map_single_attrs(dev, buf, 100, 64, 0,
						IODMA_TO_DEVICE, &keep[0]), 0);
	assert_int_equal(iodma_map_single_attrs(dev, buf, 100, 64, 0,
						IODMA_TO_DEVICE, &keep[1]), 0);
	assert_int_equal(keep[1] - keep[0], 2048);
	assert_true(keep[1] % (4 * PG) != 0);
	assert_int_equal(iodma_unmap_single(dev, keep[1], 100, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_map_single(dev, buf, 100, IODMA_TO_DEVICE, &io), 0);
	assert_int_equal(io % (4 * PG), 0);
	assert_int_equal(iodma_unmap_single(dev, io, 100, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_unmap_single(dev, keep[0], 100, IODMA_TO_DEVICE), 0);
	assert_int_equal(stats(dev).bounce_slots_used, 0);
	iodma_dev_destroy(dev);

	/* Default device: a 3000-byte run (two slots) at an odd slot, freed
	 * last; a 4 KiB map takes as many slots but must start on a page. */
	dev = dev_new(d, MASK32, IODMA_BOUNCE_ALWAYS, 1 << 20);
	assert_int_equal(iodma_map_single(dev, buf, 100, IODMA_TO_DEVICE, &keep[0]), 0);
	assert_int_equal(iodma_map_single(dev, buf, 3000, IODMA_TO_DEVICE, &keep[1]), 0);
	assert_int_equal(keep[1] - keep[0], 2048);
	assert_true(keep[1] % PG != 0);
	assert_int_equal(iodma_unmap_single(dev, keep[1], 3000, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_map_single(dev, buf, PG, IODMA_TO_DEVICE, &io), 0);
	assert_int_equal(io % PG, 0);
	assert_int_equal(iodma_unmap_single(dev, io, PG, IODMA_TO_DEVICE), 0);
	/* The 3000-byte run is still there for a map of its size. */
	assert_int_equal(iodma_map_single(dev, buf, 3000, IODMA_TO_DEVICE, &io), 0);
	assert_int_equal(iodma_unmap_single(dev, io, 3000, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_unmap_single(dev, keep[0], 100, IODMA_TO_DEVICE), 0);
	assert_int_equal(stats(dev).bounce_slots_used, 0);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

/* A driver maps on its submission thread and unmaps on its completion
 * thread: runs freed on one thread are kept there, the other maps from
 * the areas; data goes both ways intact and every counter adds up. */
struct xthr {
	struct iodma_domain *d;
	struct iodma_dev *dev;
	uint64_t ring[64];
	uint8_t *bufs[64];
	unsigned int head, tail; /* under mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int errors;
	int n;
};

static void *xthr_completer(void *p)
{
	struct xthr *x = p;
	size_t len = 1500;

	for (int i = 0; i < x->n; i++) {
		uint64_t iova;
		uint8_t *b, ans[1500];

		pthread_mutex_lock(&x->mu);
		while (x->head == x->tail)
			pthread_cond_wait(&x->cv, &x->mu);
		iova = x->ring[x->tail % 64];
		b = x->bufs[x->tail % 64];
		pthread_mutex_unlock(&x->mu);
		fill(ans, len, (uint8_t)(i ^ 0x33));
		if (iodma_write(x->d, iova, ans, len))
			x->errors++;
		if (iodma_unmap_single(x->dev, iova, len, IODMA_BIDIRECTIONAL) ||
		    !check(b, len, (uint8_t)(i ^ 0x33)))
			x->errors++;
		pthread_mutex_lock(&x->mu);
		x->tail++;
		pthread_cond_signal(&x->cv);
		pthread_mutex_unlock(&x->mu);
	}
	return NULL;
}

static void test_bounce_map_on_one_thread_unmap_on_another(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_ALWAYS, 1 << 20);
	struct xthr *x = calloc(1, sizeof(*x));
	pthread_t t;
	size_t len = 1500;
	uint8_t seen[1500];

	(void)state;
	x->d = d;
	x->dev = dev;
	x->n = 4000;
	pthread_mutex_init(&x->mu, NULL);
	pthread_cond_init(&x->cv, NULL);
	for (int i = 0; i < 64; i++)
		x->bufs[i] = page_alloc(PG);
	assert_int_equal(pthread_create(&t, NULL, xthr_completer, x), 0);
	for (int i = 0; i < x->n; i++) {
		uint8_t *b;
		uint64_t iova;

		pthread_mutex_lock(&x->mu);
		while (x->head - x->tail == 64)
			pthread_cond_wait(&x->cv, &x->mu);
		b = x->bufs[x->head % 64];
		pthread_mutex_unlock(&x->mu);
		fill(b, len, (uint8_t)i);
		assert_int_equal(iodma_map_single(dev, b, len, IODMA_BIDIRECTIONAL, &iova), 0);
		assert_int_equal(iodma_read(d, iova, seen, len), 0);
		assert_true(check(seen, len, (uint8_t)i));
		pthread_mutex_lock(&x->mu);
		x->ring[x->head % 64] = iova;
		x->head++;
		pthread_cond_signal(&x->cv);
		pthread_mutex_unlock(&x->mu);
	}
	pthread_join(t, NULL);
	assert_int_equal(x->errors, 0);
	assert_int_equal(stats(dev).bounces, 4000);
	assert_int_equal(stats(dev).maps, 4000);
	assert_int_equal(stats(dev).bounce_bytes, 2 * 4000 * 1500);
	assert_int_equal(stats(dev).bounce_slots_used, 0);
	for (int i = 0; i < 64; i++)
		free(x->bufs[i]);
	pthread_mutex_destroy(&x->mu);
	pthread_cond_destroy(&x->cv);
	free(x);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
}

/* Runs a thread keeps for its next maps go back when the pool is full:
 * the thread can still map the whole pool at once. */
static void test_bounce_full_pool_takes_back_own_kept_runs(void **state)
{
	struct iodma_domain *d = domain_new();
	/* 512 KiB of 2 KiB slots: one area of 256 slots. */
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_ALWAYS, 1 << 19);
	uint8_t *buf = page_alloc(PG), *big = page_alloc(1 << 19);
	uint64_t iova[128], io;
	int n = 0;

	(void)state;
	while (n < 128 && iodma_map_single(dev, buf, PG, IODMA_TO_DEVICE, &iova[n]) == 0)
		n++;
	assert_int_equal(n, 128);
	assert_int_equal(iodma_map_single(dev, buf, 1, IODMA_TO_DEVICE, &io), -ENOMEM);
	for (int i = 0; i < n; i++)
		assert_int_equal(iodma_unmap_single(dev, iova[i], PG, IODMA_TO_DEVICE), 0);
	assert_int_equal(stats(dev).bounce_slots_used, 0);
	/* The last unmaps were kept by this thread; a map of the whole pool
	 * needs them back. */
	assert_int_equal(iodma_map_single(dev, big, 1 << 19, IODMA_TO_DEVICE, &io), 0);
	assert_int_equal(stats(dev).bounce_slots_used, 256);
	assert_int_equal(iodma_unmap_single(dev, io, 1 << 19, IODMA_TO_DEVICE), 0);
	/* And a kept run serves the next small map: same IOVA as just freed
	 * small runs, the pool stays consistent. */
	assert_int_equal(iodma_map_single(dev, buf, PG, IODMA_TO_DEVICE, &iova[0]), 0);
	assert_int_equal(iodma_unmap_single(dev, iova[0], PG, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_map_single(dev, buf, PG, IODMA_TO_DEVICE, &io), 0);
	assert_int_equal(io, iova[0]);
	assert_int_equal(iodma_unmap_single(dev, io, PG, IODMA_TO_DEVICE), 0);
	assert_int_equal(iodma_unmap_single(dev, io, PG, IODMA_TO_DEVICE), -EINVAL);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
	free(big);
}

/* More threads than statistics shards: the threads past the 64th share
 * one counter block with atomic adds; no count is lost. */
#define NSTAT_THR 80

struct stat_thr {
	struct iodma_dev *dev;
	pthread_barrier_t *bar;
	int errors;
};

static void *stat_thread(void *p)
{
	struct stat_thr *a = p;
	uint8_t buf[64];

	pthread_barrier_wait(a->bar);
	for (int i = 0; i < 1000; i++) {
		uint64_t iova;

		if (iodma_map_single(a->dev, buf, sizeof(buf), IODMA_TO_DEVICE, &iova) ||
		    iodma_unmap_single(a->dev, iova, sizeof(buf), IODMA_TO_DEVICE))
			a->errors++;
	}
	return NULL;
}

static void test_stats_exact_with_more_threads_than_shards(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, MASK32, IODMA_BOUNCE_ALWAYS, 1 << 20);
	pthread_t t[NSTAT_THR];
	struct stat_thr a[NSTAT_THR];
	pthread_barrier_t bar;

	(void)state;
	pthread_barrier_init(&bar, NULL, NSTAT_THR);
	for (int i = 0; i < NSTAT_THR; i++) {
		a[i] = (struct stat_thr){ dev, &bar, 0 };
		assert_int_equal(pthread_create(&t[i], NULL, stat_thread, &a[i]), 0);
	}
	for (int i = 0; i < NSTAT_THR; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(a[i].errors, 0);
	}
	pthread_barrier_destroy(&bar);
	assert_int_equal(stats(dev).maps, NSTAT_THR * 1000);
	assert_int_equal(stats(dev).bounces, NSTAT_THR * 1000);
	assert_int_equal(stats(dev).bounce_bytes, NSTAT_THR * 1000 * 64);
	assert_int_equal(stats(dev).bounce_slots_used, 0);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
}

/* The bounce pool's own map, rejected by a listener: taken back (-EIO,
 * nothing left), or kept when the backend refuses twice (-EUCLEAN: the
 * device may still reach the pool, so its mapping and pages stay). */
static void test_bounce_pool_map_left_live_is_taken_back_or_kept(void **state)
{
	struct iodma_domain_opts dopt = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_domain *d = NULL;
	struct iodma_dev *dev = NULL;
	struct iodma_listener *l;

	(void)state;
	dopt.backend = &flaky_ops;
	assert_int_equal(iodma_domain_create(&dopt, &d), 0);
	assert_int_equal(iodma_domain_add_listener(d, &rj_ops, NULL, &l), 0);
	o.domain = d;
	o.dma_mask = MASK32;
	o.bounce = IODMA_BOUNCE_ALWAYS;
	o.bounce_pool_size = 1 << 16;

	reject_next = 1; flaky_unmaps = 1;
	assert_int_equal(iodma_dev_create(&o, &dev), -EIO);
	assert_null(dev);
	assert_int_equal(iodma_domain_nr_mappings(d), 0);

	reject_next = 1; flaky_unmaps = 2;
	assert_int_equal(iodma_dev_create(&o, &dev), -EUCLEAN);
	assert_null(dev);
	assert_int_equal(iodma_domain_nr_mappings(d), 1);

	/* Clean up the kept mapping, then everything works. */
	reject_next = 0; flaky_unmaps = 0;
	assert_int_equal(iodma_domain_unmap_all(d, NULL), 0);
	assert_int_equal(iodma_dev_create(&o, &dev), 0);
	iodma_dev_destroy(dev);
	iodma_domain_remove_listener(d, l);
	iodma_domain_destroy(d);
}

/* Growth rule of common.h for struct iodma_dev_opts, whose first version
 * ended at platform_arg (bounce_pool and bounce_pool_bus came later): an
 * older caller's struct works and the later fields keep their defaults. */
static void test_opts_growth(void **state)
{
	struct {
		struct iodma_dev_opts o;
		uint64_t newer;
	} w;
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = NULL;

	(void)state;
	memset(&w, 0, sizeof(w));
	w.o.domain = d;
	w.o.size = offsetof(struct iodma_dev_opts, platform_arg) +
		   sizeof(w.o.platform_arg);
	w.o.bounce_pool = (void *)0x1; /* past an old caller's size: unread */
	w.o.bounce_pool_bus = 0x1000;
	assert_int_equal(iodma_dev_create(&w.o, &dev), 0);
	iodma_dev_destroy(dev);
	dev = NULL;
	w.o.bounce_pool = NULL;
	w.o.bounce_pool_bus = 0;
	w.o.size = sizeof(w);
	assert_int_equal(iodma_dev_create(&w.o, &dev), 0);
	iodma_dev_destroy(dev);
	dev = NULL;
	w.newer = 1;
	assert_int_equal(iodma_dev_create(&w.o, &dev), -E2BIG);
	assert_null(dev);
	w.newer = 0;
	w.o.size = offsetof(struct iodma_dev_opts, platform_arg);
	assert_int_equal(iodma_dev_create(&w.o, &dev), -EINVAL);
	assert_null(dev);
	iodma_domain_destroy(d);
}

/* Growth rule of common.h for the output struct iodma_dev_stats. */
static int get_dev_stats(void *ctx, void *out)
{
	return iodma_dev_get_stats(ctx, out);
}

static void test_dev_stats_growth_rule(void **state)
{
	struct iodma_domain *d = domain_new();
	struct iodma_dev *dev = dev_new(d, UINT64_MAX, IODMA_BOUNCE_WHEN_NEEDED, 0);
	struct iodma_dev_stats st = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	void *buf = page_alloc(PG);
	uint64_t iova;

	(void)state;
	assert_int_equal(iodma_map_single(dev, buf, 64, IODMA_TO_DEVICE, &iova), 0);
	check_output_growth(sizeof(struct iodma_dev_stats), get_dev_stats, dev);
	assert_int_equal(iodma_dev_get_stats(dev, &st), 0);
	assert_int_equal(st.maps, 1);
	assert_int_equal(iodma_dev_get_stats(NULL, &st), -EINVAL);
	assert_int_equal(iodma_dev_get_stats(dev, NULL), -EINVAL);
	iodma_unmap_single(dev, iova, 64, IODMA_TO_DEVICE);
	iodma_dev_destroy(dev);
	iodma_domain_destroy(d);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dev_stats_growth_rule),
		cmocka_unit_test(test_opts_growth),
		cmocka_unit_test(test_dev_create_rejects_bad_options),
		cmocka_unit_test(test_dev_create_defaults_and_pool_mapping),
		cmocka_unit_test(test_dev_create_direct_pool_above_mask_is_enomem),
		cmocka_unit_test(test_coherent_zeroed_aligned_below_mask_and_device_reachable),
		cmocka_unit_test(test_coherent_free_errors_change_nothing),
		cmocka_unit_test(test_coherent_direct_mode_bus_address_and_mask),
		cmocka_unit_test(test_hal_dma_alloc_dealloc),
		cmocka_unit_test(test_map_single_above_dma_mask_bounces),
		cmocka_unit_test(test_map_single_physically_discontiguous_bounces),
		cmocka_unit_test(test_map_single_misaligned_buffer_bounces),
		cmocka_unit_test(test_dynamic_map_permissions_follow_direction),
		cmocka_unit_test(test_after_unmap_single_device_cannot_reach_buffer),
		cmocka_unit_test(test_share_to_device_copies_in_not_back),
		cmocka_unit_test(test_share_from_device_copies_back_and_leaks_no_stale_data),
		cmocka_unit_test(test_share_bidirectional_copies_both_ways),
		cmocka_unit_test(test_hal_unshare_wrong_buffer_is_einval),
		cmocka_unit_test(test_policy_always_bounces_everything),
		cmocka_unit_test(test_policy_never_refuses_with_erange_or_einval),
		cmocka_unit_test(test_sync_for_cpu_copies_device_writes_mid_mapping),
		cmocka_unit_test(test_sync_for_device_hands_cpu_writes_to_device),
		cmocka_unit_test(test_sync_rejects_unknown_ranges_and_directions),
		cmocka_unit_test(test_map_single_argument_errors_change_nothing),
		cmocka_unit_test(test_unmap_single_unknown_map_is_einval_and_map_stays),
		cmocka_unit_test(test_unmap_single_backend_failure_keeps_map),
		cmocka_unit_test(test_bounce_pool_exhaustion_enomem_then_recovery),
		cmocka_unit_test(test_registered_map_is_a_lookup_without_new_mapping),
		cmocka_unit_test(test_register_errors_eexist_enoent_ebusy),
		cmocka_unit_test(test_va_to_iova_needs_whole_contiguous_registration),
		cmocka_unit_test(test_register_direct_mode_records_bus_pages),
		cmocka_unit_test(test_sg_merges_page_contiguous_elements_into_segments),
		cmocka_unit_test(test_sg_respects_segment_boundary),
		cmocka_unit_test(test_sg_element_across_every_placement_bounces),
		cmocka_unit_test(test_sg_boundary_holds_for_registered_elements),
		cmocka_unit_test(test_sg_boundary_holds_for_direct_elements),
		cmocka_unit_test(test_sg_all_or_nothing_when_third_element_fails),
		cmocka_unit_test(test_sg_bounced_elements_copy_back_at_unmap),
		cmocka_unit_test(test_sg_direct_mode_merges_physically_contiguous),
		cmocka_unit_test(test_no_iova_space_below_mask_is_enomem),
		cmocka_unit_test(test_domain_map_errors_propagate_and_leave_nothing),
		cmocka_unit_test(test_domain_map_left_live_is_taken_back_or_reported),
		cmocka_unit_test(test_bounce_pool_map_left_live_is_taken_back_or_kept),
		cmocka_unit_test(test_mmio_windows_translate_and_reject),
		cmocka_unit_test(test_dev_destroy_releases_everything_live),
		cmocka_unit_test(test_fail_nth_dev_create),
		cmocka_unit_test(test_fail_nth_map_single_every_kind),
		cmocka_unit_test(test_fail_nth_alloc_coherent),
		cmocka_unit_test(test_fail_nth_register),
		cmocka_unit_test(test_fail_nth_map_sg),
		cmocka_unit_test(test_bounce_pool_four_threads_keep_their_data),
		cmocka_unit_test(test_bounce_racing_double_unmap_exactly_one_wins),
		cmocka_unit_test(test_bounce_racing_double_unmap_bidir_exactly_one_wins),
		cmocka_unit_test(test_bounce_owner_racing_another_unmap_exactly_one_wins),
		cmocka_unit_test(test_bounce_owner_racing_another_unmap_bidir_exactly_one_wins),
		cmocka_unit_test(test_bounce_own_unmap_twice_is_einval_run_kept_once),
		cmocka_unit_test(test_bounce_two_threads_no_slot_handed_out_twice),
		cmocka_unit_test(test_bounce_thread_exit_with_stashed_runs),
		cmocka_unit_test(test_bounce_map_reuses_the_run_freed_last),
		cmocka_unit_test(test_bounce_stash_run_meets_alignment),
		cmocka_unit_test(test_bounce_map_on_one_thread_unmap_on_another),
		cmocka_unit_test(test_bounce_full_pool_takes_back_own_kept_runs),
		cmocka_unit_test(test_stats_exact_with_more_threads_than_shards),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
