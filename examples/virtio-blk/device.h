/* SPDX-License-Identifier: MIT */
/*
 * device.h - a virtio-blk device model (the VMM side).
 *
 * The device serves a disk image file.  It owns one page of virtio-mmio
 * registers (mmio_window.h) and one split virtqueue, and reaches the
 * driver's memory (the rings and the request buffers) ONLY through iodma
 * translation on its domain: every descriptor is translated with the
 * permission its flags ask for (WRITE -> IODMA_PERM_WRITE, else
 * IODMA_PERM_READ), and the data moves with preadv/pwritev straight into the
 * translated slices inside an access section.  A request whose buffers fail
 * translation completes with VIRTIO_BLK_S_IOERR before any byte moves (the
 * fault is recorded by iodma).
 *
 * The device runs in its own thread.  It wakes on the doorbell eventfd
 * (trapped register writes and QueueNotify) and signals used buffers on the
 * interrupt eventfd.
 */
#ifndef VBLK_DEVICE_H
#define VBLK_DEVICE_H

#include <stdbool.h>
#include <stdint.h>

struct iodma_domain;
struct vblk_device;

/**
 * struct vblk_device_opts - What the platform wires the device to.
 * @domain:        the IOMMU domain the device's DMA goes through.
 * @disk_fd:       the disk image, open read/write; at least capacity * 512
 *                 bytes long.
 * @capacity:      disk size in 512-byte sectors.
 * @size_max:      longest data descriptor the driver may use (bytes).
 * @seg_max:       most data descriptors in one request.
 * @queue_num_max: the largest queue the device offers (<= 32768).
 * @doorbell_fd:   eventfd the driver rings (register writes, QueueNotify).
 * @irq_fd:        eventfd the device rings (used buffers, config change).
 * @event_idx:     offer VIRTIO_RING_F_EVENT_IDX.
 */
struct vblk_device_opts {
	struct iodma_domain *domain;
	int disk_fd;
	uint64_t capacity;
	uint32_t size_max;
	uint32_t seg_max;
	uint16_t queue_num_max;
	int doorbell_fd;
	int irq_fd;
	bool event_idx;
};

/**
 * struct vblk_device_stats - What the device did.
 */
struct vblk_device_stats {
	uint64_t requests;	/* chains completed */
	uint64_t bytes_read;	/* disk -> memory (T_IN) */
	uint64_t bytes_written;	/* memory -> disk (T_OUT) */
	uint64_t ioerr;		/* requests completed with S_IOERR */
	uint64_t unsupp;	/* requests completed with S_UNSUPP */
	uint64_t xlate_failures; /* descriptors that failed translation */
	uint64_t doorbells;	/* wake-ups on the doorbell */
	uint64_t interrupts;	/* used-buffer notifications sent */
};

/* Returns 0 or -errno; *out unchanged on error. */
int vblk_device_create(const struct vblk_device_opts *opts,
		       struct vblk_device **out);

/* The register page (VBLK_MMIO_SIZE bytes, page aligned). */
void *vblk_device_mmio(struct vblk_device *vd);

/* Start / stop the device thread. 0 or -errno. */
int vblk_device_start(struct vblk_device *vd);
void vblk_device_stop(struct vblk_device *vd);

/* Counters; read after vblk_device_stop() for exact figures. */
void vblk_device_get_stats(const struct vblk_device *vd,
			   struct vblk_device_stats *st);

void vblk_device_destroy(struct vblk_device *vd);

#endif /* VBLK_DEVICE_H */
