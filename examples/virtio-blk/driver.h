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

struct iodma_dev;
struct vblk_driver;
struct vblk_transport;

/**
 * struct vblk_driver_opts - How the platform hands the device to the driver.
 * @dev:          the device's DMA context: an iodma_dev with a domain, or in
 *                direct mode (IOVA = physical, examples/baremetal) without;
 *                vblk_driver_checks() needs a domain (-EINVAL without).
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

/*
 * Protocol and isolation checks, using the disk sectors
 * [scratch, scratch + 16) freely.  Prints one line per check unless
 * @quiet.  Returns the number of checks that failed (0 = all held), or
 * -errno when the checks could not run.  The isolation checks read the
 * faults a soft domain records (iodma_fault_pop): they are meant for the
 * demo's device model, not for a device behind a real IOMMU.
 */
int vblk_driver_checks(struct vblk_driver *drv, uint64_t scratch, bool quiet);

/* Reset the device and free everything. */
void vblk_driver_close(struct vblk_driver *drv);

#endif /* VBLK_DRIVER_H */
