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
 *
 * A transport that configures the virtqueue itself (the vhost-user back
 * end, examples/vhost-user-blk: the front end sets the ring up with
 * messages, not register writes) leaves the register page alone and hands
 * the device a ready ring with vblk_device_ring_start(): the same thread
 * and the same request code then serve it, waking on the ring's kick
 * eventfd and signalling its call eventfd.
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
 * @doorbell_fd:   eventfd the driver rings (register writes, QueueNotify);
 *                 -1 when only vblk_device_ring_start() will run it.
 * @irq_fd:        eventfd the device rings (used buffers, config change);
 *                 -1 likewise.
 * @event_idx:     offer VIRTIO_RING_F_EVENT_IDX.
 * @xlate_retries: times a request whose descriptors or buffers fail
 *                 translation is served again, each from a new access
 *                 section, before it fails (0: fail at once).  A vhost-user
 *                 IOTLB miss waiting inside a section is released (and
 *                 faults) when an invalidation must wait for that section
 *                 (it translated the invalidated range); a retry asks
 *                 again.  Once a stop is requested, a chain whose
 *                 translation fails is not retried nor completed: it is
 *                 left available (see vblk_device_request_stop()).
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
	unsigned int xlate_retries;
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
	uint64_t translations;	/* successful translations (ring elements
				 * and buffers): page-table walks that hit */
	uint64_t xlate_retries;	/* requests served again after a failed
				 * translation (opts.xlate_retries) */
	uint64_t requeued;	/* chains left available by a stop whose
				 * translation it had released */
	uint64_t used_resyncs;	/* ring starts whose used->idx differed
				 * from the base: the index was taken from
				 * the ring (vblk_device_ring_start()) */
};

/**
 * struct vblk_device_ring - A virtqueue set up by the transport.
 * @features:   the driver's accepted feature bits (bits the device did not
 *              offer are ignored).
 * @num:        ring size, 1..queue_num_max.
 * @desc:       device addresses (IOVAs through the domain) of the
 * @avail:      descriptor table, the available and the used ring.
 * @used:
 * @last_avail: the next available entry to consume (vhost-user
 *              SET_VRING_BASE).  At its first pass the device reads the
 *              ring's used->idx, as Linux vhost and libvhost-user do; if
 *              it differs, both indexes restart there (the device
 *              completes in order): chains consumed but never completed
 *              are served again, chains the driver saw completed never
 *              are (stats: used_resyncs).  Whether the ring's previous
 *              owner delivered its last interrupt is not known either
 *              (a migration may lose it): the first pass interrupts
 *              unless the driver has seen every used entry (EVENT_IDX:
 *              used_event == used->idx), and the first completion
 *              interrupts whatever the event index says (Linux vhost's
 *              signalled_used_valid; libvhost-user signals a new ring).
 * @kick_fd:    eventfd the driver kicks (replaces @doorbell_fd); not owned.
 * @call_fd:    eventfd the device signals (replaces @irq_fd); not owned.
 * @thread_init: if not NULL, run by the device thread with @thread_arg
 *              before it serves the ring (the vhost-user back end binds
 *              the thread to its ring: iodma_vhost_user_bind_vring()).
 */
struct vblk_device_ring {
	uint64_t features;
	uint32_t num;
	uint64_t desc, avail, used;
	uint16_t last_avail;
	int kick_fd;
	int call_fd;
	void (*thread_init)(void *arg);
	void *thread_arg;
};

/* Returns 0 or -errno; *out unchanged on error. */
int vblk_device_create(const struct vblk_device_opts *opts,
		       struct vblk_device **out);

/* The register page (VBLK_MMIO_SIZE bytes, page aligned). */
void *vblk_device_mmio(struct vblk_device *vd);

/* Start / stop the device thread. 0 or -errno. */
int vblk_device_start(struct vblk_device *vd);
void vblk_device_stop(struct vblk_device *vd);

/* Ask the device thread to stop without waiting for it (any thread); the
 * stop completes with vblk_device_stop() / vblk_device_ring_stop().  From
 * now on a chain whose translation fails (a vhost-user miss released by
 * GET_VRING_BASE) is left available, the index the stop returns excluding
 * it, instead of completing with an error. */
void vblk_device_request_stop(struct vblk_device *vd);

/* Ask the device thread to print its ring state (its indexes and the
 * ring's, read through iodma) on stderr, once; any thread.  A debugging
 * aid: the vhost-user back end does it on SIGUSR1. */
void vblk_device_request_dump(struct vblk_device *vd);

/* The feature bits a device with these options offers. */
uint64_t vblk_device_features(const struct vblk_device_opts *opts);

/* Copy @len bytes of the config space (virtio-blk's struct
 * virtio_blk_config, little endian) at @offset; bytes past the fields the
 * device fills read 0.  0, or -EINVAL beyond 256 bytes. */
int vblk_device_read_config(const struct vblk_device *vd, uint32_t offset,
			    void *buf, uint32_t len);

/* Serve a ring the transport configured, in the device thread (started
 * here).  0; -EBUSY the thread runs; -EINVAL bad size, alignment or fds. */
int vblk_device_ring_start(struct vblk_device *vd,
			   const struct vblk_device_ring *ring);

/* Stop the device thread after the chain in progress; returns the next
 * available index to consume (vhost-user GET_VRING_BASE). */
uint16_t vblk_device_ring_stop(struct vblk_device *vd);

/* Counters; read after vblk_device_stop() for exact figures. */
void vblk_device_get_stats(const struct vblk_device *vd,
			   struct vblk_device_stats *st);

void vblk_device_destroy(struct vblk_device *vd);

#endif /* VBLK_DEVICE_H */
