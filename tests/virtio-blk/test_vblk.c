/* SPDX-License-Identifier: MIT */
/*
 * test_vblk.c - protocol and isolation checks of the virtio-blk example.
 *
 * The example's driver, device model and MMIO transport
 * (examples/virtio-blk/) meet as in the demo: a soft IOMMU domain, the
 * device's register page declared to the driver's iodma_dev as an MMIO
 * window, two eventfds.  Then the driver submits single requests
 * (vblk_driver_request) and the tests look at what the device did:
 *
 *  - protocol: T_GET_ID, T_FLUSH, an unknown type (S_UNSUPP), reads and
 *    writes at, across and far beyond the end of the disk (S_IOERR);
 *  - isolation: the device aimed at a never-mapped IOVA, a stale one
 *    (mapped then unmapped), a read-only mapping, a chain whose second
 *    buffer is bad (all or nothing), a stale and a TO_DEVICE streaming map:
 *    each must fail with S_IOERR and a fault recorded at that IOVA (soft
 *    domain: iodma_fault_pop), and the memory behind it must be untouched;
 *    a bounced streaming map instead hands the device a bounce-pool IOVA,
 *    so the request may succeed but must not reach the buffer (what a
 *    confidential VM relies on);
 *  - the scratch sectors every failed request pointed at are unchanged;
 *  - vblk_driver_request's own errors.
 *
 * Options pick the configuration the demo's tests run the copy with:
 * --bounce=never|when-needed|always, --registered, --no-event-idx,
 * --queue-size N, --request-size BYTES.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include <iodma.h>

#include "device.h"
#include "driver.h"
#include "mmio_window.h"
#include "transport.h"
#include "virtio_ring.h"

#define MMIO_PADDR	0xfebf0000ull
#define DEVICE_SIZE_MAX	(64u * 1024u)
#define DEVICE_SEG_MAX	254u
#define DEVICE_QUEUE_MAX 1024u
#define DISK_SECTORS	256u
#define SCRATCH		16u		/* first scratch sector */
#define SCRATCH_LEN	(8u * VIRTIO_BLK_SECTOR_SIZE)
#define CANARY_LEN	(16u * 1024u)
#define CANARY_BYTE	0xa5u
#define BUF_LEN		(64u * 1024u)

struct config {
	enum iodma_bounce_policy bounce;
	bool registered;
	bool event_idx;
	unsigned int queue_size;
	size_t request_size;
};

static struct config cfg = {
	.bounce = IODMA_BOUNCE_WHEN_NEEDED, .event_idx = true,
	.queue_size = 128, .request_size = 256 * 1024,
};

/* Everything the tests share: built once by setup_group. */
struct bed {
	int disk_fd, doorbell, irq;
	struct iodma_domain *domain;
	struct vblk_device *vd;
	struct iodma_dev *dev;
	struct vblk_transport *transport;
	struct vblk_driver *drv;
	struct vblk_driver_info info;
	size_t align;
	uint8_t *buf;		/* BUF_LEN bytes for the driver's own data */
	uint8_t *canary;	/* CANARY_LEN bytes of CANARY_BYTE */
	uint64_t hole;		/* CANARY_LEN of IOVA space reserved, never mapped */
	uint64_t spare;		/* CANARY_LEN of IOVA space reserved for the tests */
};

static struct bed bed = { .disk_fd = -1, .doorbell = -1, .irq = -1 };

static int make_disk(void)
{
	const char *dir = getenv("TMPDIR");
	char tmpl[4096];
	int fd;

	snprintf(tmpl, sizeof(tmpl), "%s/test-vblk.XXXXXX",
		 dir && *dir ? dir : "/tmp");
	fd = mkostemp(tmpl, O_CLOEXEC);
	if (fd < 0)
		return -1;
	unlink(tmpl);
	if (ftruncate(fd, (off_t)DISK_SECTORS * VIRTIO_BLK_SECTOR_SIZE) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static uint8_t pattern(size_t i)
{
	return (uint8_t)(i * 7 + 3);
}

static int setup_group(void **state)
{
	struct iodma_dev_opts devopts = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct vblk_result r;
	const char *msg = "";
	int ret;

	(void)state;
	bed.disk_fd = make_disk();
	bed.doorbell = eventfd(0, EFD_CLOEXEC);
	bed.irq = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (bed.disk_fd < 0 || bed.doorbell < 0 || bed.irq < 0)
		return -1;
	if (iodma_domain_create(NULL, &bed.domain))
		return -1;
	struct vblk_device_opts dopts = {
		.domain = bed.domain, .disk_fd = bed.disk_fd,
		.capacity = DISK_SECTORS, .size_max = DEVICE_SIZE_MAX,
		.seg_max = DEVICE_SEG_MAX, .queue_num_max = DEVICE_QUEUE_MAX,
		.doorbell_fd = bed.doorbell, .irq_fd = bed.irq,
		.event_idx = true,
	};
	if (vblk_device_create(&dopts, &bed.vd) || vblk_device_start(bed.vd))
		return -1;
	devopts.domain = bed.domain;
	devopts.bounce = cfg.bounce;
	devopts.bounce_pool_size = 2u << 20;
	if (iodma_dev_create(&devopts, &bed.dev) ||
	    iodma_dev_add_mmio(bed.dev, MMIO_PADDR, VBLK_MMIO_SIZE,
			       vblk_device_mmio(bed.vd)) ||
	    vblk_mmio_transport_create(bed.dev, MMIO_PADDR, bed.doorbell,
				       bed.irq, &bed.transport))
		return -1;
	struct vblk_driver_opts drvopts = {
		.dev = bed.dev, .transport = bed.transport,
		.queue_size = cfg.queue_size, .request_size = cfg.request_size,
		.registered = cfg.registered, .event_idx = cfg.event_idx,
	};
	ret = vblk_driver_open(&drvopts, &bed.drv, &msg);
	if (ret) {
		fprintf(stderr, "vblk_driver_open: %s: %s\n", msg,
			iodma_strerror(ret));
		return -1;
	}
	vblk_driver_get_info(bed.drv, &bed.info);
	bed.align = (size_t)iodma_domain_alignment(bed.domain);
	bed.buf = aligned_alloc(bed.align, BUF_LEN);
	bed.canary = aligned_alloc(bed.align, CANARY_LEN);
	if (!bed.buf || !bed.canary)
		return -1;
	/* IOVA space nothing else lands in while the tests run. */
	if (iodma_iova_alloc(bed.domain, CANARY_LEN, bed.align, UINT64_MAX,
			     &bed.hole) ||
	    iodma_iova_alloc(bed.domain, CANARY_LEN, bed.align, UINT64_MAX,
			     &bed.spare))
		return -1;
	/* The scratch region: every failed request below points at it, and
	 * test_scratch_unchanged (the last test) reads it back. */
	for (size_t i = 0; i < SCRATCH_LEN; i++)
		bed.buf[i] = pattern(i);
	ret = vblk_driver_request(bed.drv, VIRTIO_BLK_T_OUT, SCRATCH, bed.buf,
				  SCRATCH_LEN, IODMA_TO_DEVICE, NULL, 0, &r);
	if (ret || r.status != VIRTIO_BLK_S_OK) {
		fprintf(stderr, "writing the scratch region: %s, status %u\n",
			iodma_strerror(ret), r.status);
		return -1;
	}
	return 0;
}

static int teardown_group(void **state)
{
	(void)state;
	if (bed.hole)
		iodma_iova_free(bed.domain, bed.hole, CANARY_LEN);
	if (bed.spare)
		iodma_iova_free(bed.domain, bed.spare, CANARY_LEN);
	vblk_driver_close(bed.drv);
	if (bed.transport)
		bed.transport->ops->destroy(bed.transport);
	iodma_dev_destroy(bed.dev);
	vblk_device_destroy(bed.vd);
	iodma_domain_destroy(bed.domain);
	free(bed.buf);
	free(bed.canary);
	if (bed.disk_fd >= 0)
		close(bed.disk_fd);
	if (bed.doorbell >= 0)
		close(bed.doorbell);
	if (bed.irq >= 0)
		close(bed.irq);
	return 0;
}

/* Each test starts with no fault recorded and an intact canary. */
static int setup_test(void **state)
{
	struct iodma_fault f[16];

	(void)state;
	while (iodma_fault_pop(bed.domain, f, 16) == 16)
		;
	memset(bed.canary, CANARY_BYTE, CANARY_LEN);
	return 0;
}

/* A failed test must not leave the tests' IOVA space mapped. */
static int teardown_test(void **state)
{
	(void)state;
	iodma_domain_unmap(bed.domain, bed.spare, CANARY_LEN);	/* -ENOENT if clean */
	return 0;
}

static bool canary_intact(size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (bed.canary[i] != CANARY_BYTE)
			return false;
	return true;
}

/* Whether a fault at @iova with @perm and @reason was recorded. */
static bool faulted_at(uint64_t iova, uint32_t perm, uint32_t reason)
{
	struct iodma_fault f[16];
	size_t n = iodma_fault_pop(bed.domain, f, 16);

	for (size_t i = 0; i < n; i++)
		if (iova >= f[i].iova && iova - f[i].iova < f[i].len &&
		    (f[i].perm & perm) && f[i].reason == reason)
			return true;
	return false;
}

/*
 * A T_IN (the device writes @len bytes) or T_OUT (it reads) whose data
 * descriptor points at @iova: it must end in S_IOERR with a fault at
 * @iova for @reason.
 */
static void bad_dma(bool device_writes, uint64_t iova, uint32_t len,
		    uint32_t reason)
{
	struct vblk_seg sg = { iova, len, device_writes };
	struct vblk_result r = { 0xff, 0 };

	assert_int_equal(vblk_driver_request(bed.drv, device_writes ?
					     VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT,
					     SCRATCH, NULL, 0, IODMA_TO_DEVICE,
					     &sg, 1, &r), 0);
	assert_int_equal(r.status, VIRTIO_BLK_S_IOERR);
	assert_true(faulted_at(iova, device_writes ? IODMA_PERM_WRITE
						   : IODMA_PERM_READ, reason));
}

/* One request with the driver's own data buffer; returns the status. */
static uint8_t simple(uint32_t type, uint64_t sector, size_t len,
		      enum iodma_dir dir, struct vblk_result *r)
{
	memset(bed.buf, 0, BUF_LEN);
	*r = (struct vblk_result){ 0xff, 0 };
	assert_int_equal(vblk_driver_request(bed.drv, type, sector,
					     len ? bed.buf : NULL, len, dir,
					     NULL, 0, r), 0);
	return r->status;
}

/* ---- protocol -------------------------------------------------------------- */

static void test_get_id(void **state)
{
	struct vblk_result r;

	(void)state;
	assert_int_equal(simple(VIRTIO_BLK_T_GET_ID, 0, VIRTIO_BLK_ID_BYTES,
				IODMA_FROM_DEVICE, &r), VIRTIO_BLK_S_OK);
	assert_true(bed.buf[0] != 0);
	/* The id and the status byte. */
	assert_int_equal(r.used_len, VIRTIO_BLK_ID_BYTES + 1);
}

static void test_flush(void **state)
{
	struct vblk_result r;

	(void)state;
	assert_int_equal(simple(VIRTIO_BLK_T_FLUSH, 0, 0, IODMA_TO_DEVICE, &r),
			 VIRTIO_BLK_S_OK);
}

static void test_unsupported_type(void **state)
{
	struct vblk_result r;

	(void)state;
	assert_int_equal(simple(99, 0, 0, IODMA_TO_DEVICE, &r),
			 VIRTIO_BLK_S_UNSUPP);
}

static void test_in_at_capacity(void **state)
{
	struct vblk_result r;

	(void)state;
	assert_int_equal(simple(VIRTIO_BLK_T_IN, bed.info.capacity, 4096,
				IODMA_FROM_DEVICE, &r), VIRTIO_BLK_S_IOERR);
}

static void test_out_across_end(void **state)
{
	struct vblk_result r;

	(void)state;
	assert_int_equal(simple(VIRTIO_BLK_T_OUT, bed.info.capacity - 1, 4096,
				IODMA_TO_DEVICE, &r), VIRTIO_BLK_S_IOERR);
}

static void test_in_sector_overflow(void **state)
{
	struct vblk_result r;

	(void)state;
	assert_int_equal(simple(VIRTIO_BLK_T_IN, UINT64_MAX, 4096,
				IODMA_FROM_DEVICE, &r), VIRTIO_BLK_S_IOERR);
}

/* ---- isolation --------------------------------------------------------------- */

static void test_in_never_mapped(void **state)
{
	(void)state;
	bad_dma(true, bed.hole, 4096, IODMA_FAULT_NOT_MAPPED);
}

static void test_out_never_mapped(void **state)
{
	(void)state;
	bad_dma(false, bed.hole, 4096, IODMA_FAULT_NOT_MAPPED);
}

/* Map the canary, unmap it, hand the device the old address. */
static void test_in_stale_iova(void **state)
{
	(void)state;
	assert_int_equal(iodma_domain_map(bed.domain, bed.spare, CANARY_LEN,
					  bed.canary, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_domain_unmap(bed.domain, bed.spare, CANARY_LEN), 0);
	bad_dma(true, bed.spare, CANARY_LEN, IODMA_FAULT_NOT_MAPPED);
	assert_true(canary_intact(CANARY_LEN));
}

static void test_in_read_only(void **state)
{
	(void)state;
	assert_int_equal(iodma_domain_map(bed.domain, bed.spare, CANARY_LEN,
					  bed.canary, IODMA_PERM_READ), 0);
	bad_dma(true, bed.spare, 4096, IODMA_FAULT_PERMISSION);
	assert_int_equal(iodma_domain_unmap(bed.domain, bed.spare, CANARY_LEN), 0);
	assert_true(canary_intact(CANARY_LEN));
}

/* A chain whose first data buffer is fine and whose second is not: the
 * device must not have written the first one either. */
static void test_in_all_or_nothing(void **state)
{
	struct vblk_seg sg[2] = { { bed.spare, 4096, true },
				  { bed.hole, 4096, true } };
	struct vblk_result r = { 0xff, 0 };

	(void)state;
	assert_int_equal(iodma_domain_map(bed.domain, bed.spare, CANARY_LEN,
					  bed.canary, IODMA_PERM_RW), 0);
	assert_int_equal(vblk_driver_request(bed.drv, VIRTIO_BLK_T_IN, SCRATCH,
					     NULL, 0, IODMA_TO_DEVICE, sg, 2,
					     &r), 0);
	assert_int_equal(iodma_domain_unmap(bed.domain, bed.spare, CANARY_LEN), 0);
	assert_int_equal(r.status, VIRTIO_BLK_S_IOERR);
	assert_true(faulted_at(bed.hole, IODMA_PERM_WRITE,
			       IODMA_FAULT_NOT_MAPPED));
	assert_true(canary_intact(4096));
}

/*
 * The same through the streaming DMA API.  A direct map's IOVA is gone
 * after unmap: the device faults.  A bounced map hands the device a
 * bounce-pool IOVA that stays mapped after unmap: the request may then
 * succeed, but it lands in the pool, never in the buffer.
 */
static void test_in_stale_streaming_map(void **state)
{
	struct iodma_dev_stats before = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	struct iodma_dev_stats after = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	uint64_t iova;

	(void)state;
	iodma_dev_get_stats(bed.dev, &before);
	assert_int_equal(iodma_map_single(bed.dev, bed.canary, CANARY_LEN,
					  IODMA_BIDIRECTIONAL, &iova), 0);
	iodma_dev_get_stats(bed.dev, &after);
	assert_int_equal(iodma_unmap_single(bed.dev, iova, CANARY_LEN,
					    IODMA_BIDIRECTIONAL), 0);
	if (after.bounces == before.bounces) {
		bad_dma(true, iova, 4096, IODMA_FAULT_NOT_MAPPED);
	} else {
		struct vblk_seg sg = { iova, 4096, true };
		struct vblk_result r = { 0xff, 0 };

		assert_int_equal(vblk_driver_request(bed.drv, VIRTIO_BLK_T_IN,
						     SCRATCH, NULL, 0,
						     IODMA_TO_DEVICE, &sg, 1,
						     &r), 0);
	}
	assert_true(canary_intact(CANARY_LEN));
}

/* A TO_DEVICE streaming map is read-only for the device. */
static void test_in_to_device_streaming_map(void **state)
{
	struct iodma_dev_stats before = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	struct iodma_dev_stats after = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	struct vblk_seg sg;
	struct vblk_result r = { 0xff, 0 };
	uint64_t iova;

	(void)state;
	iodma_dev_get_stats(bed.dev, &before);
	assert_int_equal(iodma_map_single(bed.dev, bed.canary, CANARY_LEN,
					  IODMA_TO_DEVICE, &iova), 0);
	iodma_dev_get_stats(bed.dev, &after);
	if (after.bounces == before.bounces) {
		bad_dma(true, iova, 4096, IODMA_FAULT_PERMISSION);
	} else {
		sg = (struct vblk_seg){ iova, 4096, true };
		assert_int_equal(vblk_driver_request(bed.drv, VIRTIO_BLK_T_IN,
						     SCRATCH, NULL, 0,
						     IODMA_TO_DEVICE, &sg, 1,
						     &r), 0);
	}
	assert_int_equal(iodma_unmap_single(bed.dev, iova, CANARY_LEN,
					    IODMA_TO_DEVICE), 0);
	assert_true(canary_intact(CANARY_LEN));
}

/* ---- vblk_driver_request's own errors ----------------------------------------- */

static void test_request_einval(void **state)
{
	struct vblk_seg sg[VBLK_REQUEST_SEGS_MAX + 1] = { { 0 } };
	struct vblk_result r = { 0xee, 0xeeee };
	struct vblk_driver_info now;

	(void)state;
	vblk_driver_get_info(bed.drv, &bed.info);
	assert_int_equal(vblk_driver_request(NULL, VIRTIO_BLK_T_FLUSH, 0, NULL,
					     0, IODMA_TO_DEVICE, NULL, 0, &r),
			 -EINVAL);
	assert_int_equal(vblk_driver_request(bed.drv, VIRTIO_BLK_T_FLUSH, 0,
					     NULL, 0, IODMA_TO_DEVICE, NULL, 0,
					     NULL), -EINVAL);
	assert_int_equal(vblk_driver_request(bed.drv, VIRTIO_BLK_T_IN, 0, NULL,
					     4096, IODMA_FROM_DEVICE, NULL, 0,
					     &r), -EINVAL);
	assert_int_equal(vblk_driver_request(bed.drv, VIRTIO_BLK_T_IN, 0, NULL,
					     0, IODMA_FROM_DEVICE, NULL, 1, &r),
			 -EINVAL);
	assert_int_equal(vblk_driver_request(bed.drv, VIRTIO_BLK_T_IN, 0, NULL,
					     0, IODMA_FROM_DEVICE, sg,
					     VBLK_REQUEST_SEGS_MAX + 1, &r),
			 -EINVAL);
	/* More data than VBLK_REQUEST_SEGS_MAX descriptors of size_max. */
	assert_int_equal(vblk_driver_request(bed.drv, VIRTIO_BLK_T_IN, 0,
					     bed.buf, (size_t)bed.info.size_max *
					     VBLK_REQUEST_SEGS_MAX + 1,
					     IODMA_FROM_DEVICE, NULL, 0, &r),
			 -EINVAL);
	assert_int_equal(vblk_driver_request(bed.drv, VIRTIO_BLK_T_IN, 0,
					     bed.buf, 4096, (enum iodma_dir)7,
					     NULL, 0, &r), -EINVAL);
	/* Nothing was posted, nothing written. */
	vblk_driver_get_info(bed.drv, &now);
	assert_int_equal(now.kicks, bed.info.kicks);
	assert_int_equal(now.requests, bed.info.requests);
	assert_int_equal(r.status, 0xee);
}

/* A chain longer than a request slot's descriptors (request_size/size_max
 * + 4): nothing is posted and the driver stays usable. */
static void test_request_enospc(void **state)
{
	struct vblk_seg sg[VBLK_REQUEST_SEGS_MAX];
	struct vblk_result r = { 0xee, 0 };
	struct vblk_driver_info now;

	(void)state;
	vblk_driver_get_info(bed.drv, &bed.info);
	if ((cfg.request_size + bed.info.size_max - 1) / bed.info.size_max + 4 >=
	    VBLK_REQUEST_SEGS_MAX + 2)
		skip();	/* the longest chain fits this configuration's slots */
	for (unsigned int i = 0; i < VBLK_REQUEST_SEGS_MAX; i++)
		sg[i] = (struct vblk_seg){ bed.hole, 512, true };
	assert_int_equal(vblk_driver_request(bed.drv, VIRTIO_BLK_T_IN, SCRATCH,
					     NULL, 0, IODMA_TO_DEVICE, sg,
					     VBLK_REQUEST_SEGS_MAX, &r),
			 -ENOSPC);
	vblk_driver_get_info(bed.drv, &now);
	assert_int_equal(now.requests, bed.info.requests);
	assert_int_equal(r.status, 0xee);
	/* And the next request goes through. */
	assert_int_equal(simple(VIRTIO_BLK_T_FLUSH, 0, 0, IODMA_TO_DEVICE, &r),
			 VIRTIO_BLK_S_OK);
}

/* ---- last: the disk region every failed request pointed at ------------------- */

static void test_scratch_unchanged(void **state)
{
	struct vblk_result r;

	(void)state;
	assert_int_equal(simple(VIRTIO_BLK_T_IN, SCRATCH, SCRATCH_LEN,
				IODMA_FROM_DEVICE, &r), VIRTIO_BLK_S_OK);
	for (size_t i = 0; i < SCRATCH_LEN; i++)
		if (bed.buf[i] != pattern(i))
			fail_msg("scratch byte %zu is %#x, want %#x", i,
				 bed.buf[i], pattern(i));
}

/* ---- options ------------------------------------------------------------------ */

static int parse_args(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--bounce=never"))
			cfg.bounce = IODMA_BOUNCE_NEVER;
		else if (!strcmp(a, "--bounce=when-needed"))
			cfg.bounce = IODMA_BOUNCE_WHEN_NEEDED;
		else if (!strcmp(a, "--bounce=always"))
			cfg.bounce = IODMA_BOUNCE_ALWAYS;
		else if (!strcmp(a, "--registered"))
			cfg.registered = true;
		else if (!strcmp(a, "--no-event-idx"))
			cfg.event_idx = false;
		else if (!strcmp(a, "--queue-size") && i + 1 < argc)
			cfg.queue_size = (unsigned int)strtoul(argv[++i], NULL, 0);
		else if (!strcmp(a, "--request-size") && i + 1 < argc)
			cfg.request_size = (size_t)strtoull(argv[++i], NULL, 0);
		else {
			fprintf(stderr, "test_vblk: unknown option %s\n", a);
			return -1;
		}
	}
	return 0;
}

/* ---- a ring handed over (vhost-user SET_VRING_BASE) ------------------------ */

/* Two chains (heads 0 and 3: header, one sector, status) in 4 pages at
 * HO_IOVA, of which the previous owner of the ring completed @used_idx,
 * the driver saw @used_event completed (EVENT_IDX), @avail_idx are
 * available; the device started at @base.  Device only: no driver, no
 * MMIO. */
#define HO_IOVA 0x100000ull
#define HO_NUM  8

struct handover {
	struct iodma_domain *d;
	struct vblk_device *vd;
	uint8_t *mem;
	int disk, kick, call;
	struct vring_avail *avail;
	struct vring_used *used;
};

static void handover_start(struct handover *h, uint16_t avail_idx,
			   uint16_t used_idx, uint16_t used_event, uint16_t base)
{
	const uint64_t buf_iova = HO_IOVA + 12288;
	struct vring_desc *desc;

	h->mem = aligned_alloc(4096, 4 * 4096);
	h->disk = make_disk();
	h->kick = eventfd(0, EFD_CLOEXEC);
	h->call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	assert_non_null(h->mem);
	assert_true(h->disk >= 0 && h->kick >= 0 && h->call >= 0);
	memset(h->mem, 0, 4 * 4096);
	desc = (struct vring_desc *)h->mem;
	h->avail = (struct vring_avail *)(h->mem + 4096);
	h->used = (struct vring_used *)(h->mem + 8192);
	for (uint16_t c = 0; c < 2; c++) {
		struct virtio_blk_outhdr *hd =
			(struct virtio_blk_outhdr *)(h->mem + 12288 + 1024 * c);
		uint64_t b = buf_iova + 1024u * c;

		hd->type = htole32(VIRTIO_BLK_T_IN);
		hd->sector = htole64(c);
		desc[3 * c] = (struct vring_desc){ htole64(b), htole32(16),
			htole16(VRING_DESC_F_NEXT), htole16((uint16_t)(3 * c + 1)) };
		desc[3 * c + 1] = (struct vring_desc){ htole64(b + 64),
			htole32(VIRTIO_BLK_SECTOR_SIZE),
			htole16(VRING_DESC_F_NEXT | VRING_DESC_F_WRITE),
			htole16((uint16_t)(3 * c + 2)) };
		desc[3 * c + 2] = (struct vring_desc){ htole64(b + 64 +
			VIRTIO_BLK_SECTOR_SIZE), htole32(1),
			htole16(VRING_DESC_F_WRITE), 0 };
		h->avail->ring[c] = htole16((uint16_t)(3 * c));
	}
	h->avail->idx = htole16(avail_idx);
	h->avail->ring[HO_NUM] = htole16(used_event);	/* used_event */
	for (uint16_t k = 0; k < used_idx; k++)
		h->used->ring[k] = (struct vring_used_elem){ htole32(3u * k), htole32(513) };
	h->used->idx = htole16(used_idx);

	assert_int_equal(iodma_domain_create(NULL, &h->d), 0);
	assert_int_equal(iodma_domain_map(h->d, HO_IOVA, 4 * 4096, h->mem,
					  IODMA_PERM_RW), 0);
	struct vblk_device_opts o = {
		.domain = h->d, .disk_fd = h->disk, .capacity = DISK_SECTORS,
		.size_max = DEVICE_SIZE_MAX, .seg_max = DEVICE_SEG_MAX,
		.queue_num_max = DEVICE_QUEUE_MAX, .doorbell_fd = -1, .irq_fd = -1,
		.event_idx = true,
	};
	assert_int_equal(vblk_device_create(&o, &h->vd), 0);
	struct vblk_device_ring r = {
		.features = vblk_device_features(&o), .num = HO_NUM,
		.desc = HO_IOVA, .avail = HO_IOVA + 4096, .used = HO_IOVA + 8192,
		.last_avail = base, .kick_fd = h->kick, .call_fd = h->call,
	};
	assert_true(r.features & VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX));
	assert_int_equal(vblk_device_ring_start(h->vd, &r), 0);
}

/* Wait (5 s at most) for used->idx to reach @want, stop the ring. */
static uint16_t handover_stop(struct handover *h, uint16_t want)
{
	for (int i = 0; i < 5000 && le16toh(__atomic_load_n(&h->used->idx,
							     __ATOMIC_ACQUIRE)) != want; i++)
		usleep(1000);
	return vblk_device_ring_stop(h->vd);
}

/* Interrupts the device raised (the call eventfd's count, cleared). */
static uint64_t handover_calls(struct handover *h)
{
	uint64_t n = 0;

	if (read(h->call, &n, sizeof(n)) != (ssize_t)sizeof(n))
		return 0;
	return n;
}

static void handover_end(struct handover *h)
{
	vblk_device_destroy(h->vd);
	iodma_domain_unmap(h->d, HO_IOVA, 4 * 4096);
	iodma_domain_destroy(h->d);
	close(h->disk);
	close(h->kick);
	close(h->call);
	free(h->mem);
}

/*
 * A ring handed over with a stale base (vhost-user SET_VRING_BASE after a
 * migration whose source completed one more chain than the base it
 * reported): the device resumes at the ring's used->idx, as Linux vhost
 * and libvhost-user do, so the chain the driver saw completed is not
 * served again (a second used entry for a head the driver no longer owns
 * marks Linux's ring broken).
 */
static void test_ring_start_resumes_at_the_used_index(void **state)
{
	struct handover h;
	struct vblk_device_stats st;
	uint64_t one = 1;

	(void)state;
	/* The previous owner completed chain 0 and reported base 0. */
	handover_start(&h, 2, 1, 0, 0);
	assert_int_equal(write(h.kick, &one, sizeof(one)), (ssize_t)sizeof(one));
	assert_int_equal(handover_stop(&h, 2), 2);
	vblk_device_get_stats(h.vd, &st);
	assert_int_equal(le16toh(h.used->idx), 2);
	assert_int_equal(le32toh(h.used->ring[1].id), 3);	/* chain 1, not 0 again */
	assert_int_equal(st.requests, 1);
	assert_int_equal(st.used_resyncs, 1);
	handover_end(&h);
}

/*
 * The previous owner completed chain 0 and its interrupt was lost in the
 * handover (a migration: the driver's used_event is still 0, below
 * used->idx 1).  The device's first completion, chain 1, must interrupt
 * although the event-index rule alone (used_event 0, old 1, new 2) says
 * the driver was told already: Linux vhost starts every ring with
 * signalled_used_valid false.  Without it the guest waits for ever (seen
 * in the migration check: vblk-ring used_event=169 used.idx=171
 * interrupts=0).
 */
static void test_ring_start_interrupts_for_the_previous_owner(void **state)
{
	struct handover h;
	uint64_t one = 1;

	(void)state;
	handover_start(&h, 2, 1, 0, 1);
	assert_int_equal(write(h.kick, &one, sizeof(one)), (ssize_t)sizeof(one));
	assert_int_equal(handover_stop(&h, 2), 2);
	assert_int_equal(le16toh(h.used->idx), 2);
	assert_true(handover_calls(&h) >= 1);
	handover_end(&h);
}

/*
 * The same lost interrupt with nothing left to serve (the previous owner
 * completed every available chain): the device's first pass interrupts
 * once, as libvhost-user signals a ring's new call fd once, so the driver
 * takes the completions it has not been told of.  And a driver that saw
 * every completion (used_event == used->idx) gets no interrupt.
 */
static void test_ring_start_interrupts_with_nothing_new(void **state)
{
	struct handover h;
	uint16_t *avail_event;

	(void)state;
	/* The first pass runs at start, without a kick. */
	handover_start(&h, 2, 2, 1, 2);
	assert_int_equal(poll(&(struct pollfd){ .fd = h.call, .events = POLLIN },
			      1, 5000), 1);
	assert_int_equal(handover_stop(&h, 2), 2);
	assert_int_equal(handover_calls(&h), 1);
	handover_end(&h);

	/* Its end is seen by the avail_event it then writes (the index it
	 * wants a kick at: 2). */
	handover_start(&h, 2, 2, 2, 2);
	avail_event = (uint16_t *)&h.used->ring[HO_NUM];
	for (int i = 0; i < 5000 && le16toh(__atomic_load_n(avail_event,
							     __ATOMIC_ACQUIRE)) != 2; i++)
		usleep(1000);
	assert_int_equal(le16toh(*avail_event), 2);
	assert_int_equal(handover_stop(&h, 2), 2);
	assert_int_equal(handover_calls(&h), 0);
	handover_end(&h);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_get_id, setup_test, teardown_test),
		cmocka_unit_test_setup_teardown(test_flush, setup_test, teardown_test),
		cmocka_unit_test_setup_teardown(test_unsupported_type, setup_test, teardown_test),
		cmocka_unit_test_setup_teardown(test_in_at_capacity, setup_test, teardown_test),
		cmocka_unit_test_setup_teardown(test_out_across_end, setup_test, teardown_test),
		cmocka_unit_test_setup_teardown(test_in_sector_overflow, setup_test, teardown_test),
		cmocka_unit_test_setup_teardown(test_in_never_mapped, setup_test, teardown_test),
		cmocka_unit_test_setup_teardown(test_out_never_mapped, setup_test, teardown_test),
		cmocka_unit_test_setup_teardown(test_in_stale_iova, setup_test, teardown_test),
		cmocka_unit_test_setup_teardown(test_in_read_only, setup_test, teardown_test),
		cmocka_unit_test_setup_teardown(test_in_all_or_nothing, setup_test, teardown_test),
		cmocka_unit_test_setup_teardown(test_in_stale_streaming_map, setup_test, teardown_test),
		cmocka_unit_test_setup_teardown(test_in_to_device_streaming_map, setup_test, teardown_test),
		cmocka_unit_test_setup_teardown(test_request_einval, setup_test, teardown_test),
		cmocka_unit_test_setup_teardown(test_request_enospc, setup_test, teardown_test),
		cmocka_unit_test_setup_teardown(test_scratch_unchanged, setup_test, teardown_test),
		cmocka_unit_test(test_ring_start_resumes_at_the_used_index),
		cmocka_unit_test(test_ring_start_interrupts_for_the_previous_owner),
		cmocka_unit_test(test_ring_start_interrupts_with_nothing_new),
	};

	if (parse_args(argc, argv))
		return 2;
	return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
