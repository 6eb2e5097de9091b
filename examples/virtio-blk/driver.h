/* SPDX-License-Identifier: MIT */
/*
 * driver.h - a virtio-blk driver over a split virtqueue (VIRTIO 1.2).
 *
 * The driver sees its device the way a guest or user-space PCI driver does:
 * an iodma_dev (its DMA API: the rings come from coherent allocations, the
 * request buffers go through streaming maps / VirtIoHal share) and a
 * transport (transport.h) that carries its register accesses, doorbells
 * and interrupts: the demo's MMIO window with its eventfds, or a real
 * virtio-pci device through VFIO.  It shares nothing else with the device.
 */
#ifndef VBLK_DRIVER_H
#define VBLK_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <iodma/dma.h>

struct iodma_dev;
struct vblk_driver;
struct vblk_transport;

/**
 * struct vblk_driver_opts - How the platform hands the device to the driver.
 * @dev:          the device's DMA context: an iodma_dev with a domain, or in
 *                direct mode (IOVA = physical, examples/baremetal) without.
 * @transport:    the device's registers (transport.h); the caller keeps it
 *                until after vblk_driver_close().
 * @queue_size:   wanted queue size (clamped to QueueNumMax); power of two.
 * @request_size: bytes per read/write request; multiple of 512.
 * @registered:   take every request buffer from one registered area
 *                (iodma_dev_register: each map is a lookup).
 * @event_idx:    accept VIRTIO_RING_F_EVENT_IDX if the device offers it.
 */
struct vblk_driver_opts {
	struct iodma_dev *dev;
	struct vblk_transport *transport;
	unsigned int queue_size;
	size_t request_size;
	bool registered;
	bool event_idx;
};

/* What was negotiated. */
struct vblk_driver_info {
	uint64_t device_features;
	uint64_t driver_features;
	uint64_t capacity;		/* sectors */
	uint32_t size_max;
	uint32_t seg_max;
	uint32_t blk_size;
	unsigned int queue_size;
	unsigned int slots;		/* requests in flight at most */
	uint64_t kicks;			/* QueueNotify doorbells rung */
	uint64_t interrupts;		/* waits ended by an interrupt */
	uint64_t requests;		/* requests completed */
};

/* Fill @buf with the next @len bytes of input: 0 or -errno. */
typedef int (*vblk_source_fn)(void *arg, void *buf, size_t len);
/* Consume the next @len bytes read back: 0 or -errno. */
typedef int (*vblk_sink_fn)(void *arg, const void *buf, size_t len);

/* Negotiate, set up the queue, allocate buffers.  0 or -errno; on error
 * the device was reset and nothing is left allocated.  @err_msg receives a
 * static string saying what failed. */
int vblk_driver_open(const struct vblk_driver_opts *opts,
		     struct vblk_driver **out, const char **err_msg);

void vblk_driver_get_info(const struct vblk_driver *drv,
			  struct vblk_driver_info *info);

/* Write @len bytes from @src at @sector (the last request is padded to a
 * sector with zeros), keeping as many requests in flight as the queue
 * holds.  0 or -errno (-EIO: a request did not complete with S_OK). */
int vblk_driver_write(struct vblk_driver *drv, uint64_t sector, uint64_t len,
		      vblk_source_fn src, void *arg);

/* Read @len bytes at @sector, handing them to @sink in order. */
int vblk_driver_read(struct vblk_driver *drv, uint64_t sector, uint64_t len,
		     vblk_sink_fn sink, void *arg);

/* Most data descriptors of one vblk_driver_request(): the driver's own,
 * and the raw ones, each. */
#define VBLK_REQUEST_SEGS_MAX 8u

/* A data descriptor exactly as vblk_driver_request() posts it. */
struct vblk_seg {
	uint64_t iova;
	uint32_t len;
	bool device_writes;	/* VRING_DESC_F_WRITE */
};

/* How a request completed: its status byte (VIRTIO_BLK_S_*) and the used
 * length the device reported. */
struct vblk_result {
	uint8_t status;
	uint32_t used_len;
};

/**
 * vblk_driver_request() - Submit one request and wait for it.
 * @drv:    an open driver with no bulk transfer in flight.
 * @type:   VIRTIO_BLK_T_*, or any other value (the device answers S_UNSUPP).
 * @sector: the header's sector (not checked against the capacity: the
 *          device answers S_IOERR).
 * @data:   @len bytes the driver maps with @dir (iodma_map_single) and
 *          posts in descriptors of at most size_max bytes, device-writable
 *          unless @dir is IODMA_TO_DEVICE; NULL if @len is 0.
 * @len:    bytes of @data; at most VBLK_REQUEST_SEGS_MAX descriptors' worth.
 * @dir:    IODMA_TO_DEVICE, IODMA_FROM_DEVICE or IODMA_BIDIRECTIONAL.
 * @raw:    @nraw data descriptors posted after @data's exactly as given:
 *          their IOVAs are not mapped or checked by the driver.  This is
 *          what a buggy or hostile driver hands its device; the tests
 *          (tests/virtio-blk/) aim the device at never-mapped, stale and
 *          read-only IOVAs with it.  NULL if @nraw is 0.
 * @nraw:   at most VBLK_REQUEST_SEGS_MAX.
 * @res:    receives the status byte and the used length.
 *
 * The chain is header -> @data -> @raw -> status, as VIRTIO 1.2 5.2.6
 * lays out a request; the data are unmapped (bounced data copied back)
 * once the device has used the chain.
 *
 * Context: the driver's thread (the driver is not thread-safe).
 * Return: 0 when the device used the chain (@res says how it went);
 * -EINVAL for a NULL @drv or @res, @len without @data, @nraw without
 * @raw, too many descriptors or an unknown @dir, with nothing posted;
 * -EBUSY if a bulk transfer is in flight or an earlier request never
 * completed; -ENOSPC if the chain does not fit the free descriptors;
 * the error of iodma_hal_share()/iodma_map_single() with nothing mapped;
 * -EIO or -ETIMEDOUT if the device misbehaved or never answered (the
 * buffers then stay mapped, the request outstanding); or the error of
 * iodma_unmap_single()/iodma_hal_unshare() after completion.
 */
int vblk_driver_request(struct vblk_driver *drv, uint32_t type,
			uint64_t sector, void *data, size_t len,
			enum iodma_dir dir, const struct vblk_seg *raw,
			unsigned int nraw, struct vblk_result *res);

/* Reset the device and free everything. */
void vblk_driver_close(struct vblk_driver *drv);

#endif /* VBLK_DRIVER_H */
