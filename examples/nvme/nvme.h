/* SPDX-License-Identifier: MIT */
/*
 * nvme.h - a small user-space NVMe driver over iodma (examples/nvme).
 *
 * The controller is a PCI function bound to vfio-pci and opened through an
 * iodma vfio or iommufd domain (iodma/vfio.h).  BAR0 is mmapped; the admin
 * queue pair, one I/O queue pair and one PRP list page per I/O slot live
 * in coherent memory of an iodma_dev over the domain.  Data buffers are
 * given by their IOVA: the caller maps them (iodma_map_single(), which is
 * a lookup for registered memory) and the driver only builds PRPs, so a
 * buffer must be contiguous in IOVA space (one streaming map, or one
 * registration).  Completions are polled (phase tag).
 *
 * Single-threaded: one caller at a time per controller.
 */
#ifndef IODMA_EXAMPLES_NVME_H
#define IODMA_EXAMPLES_NVME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct iodma_domain;
struct iodma_dev;
struct iodma_vfio_device;

#define NVME_PAGE	4096u	/* controller memory page size (CC.MPS = 0) */
#define NVME_MAX_QD	32u	/* I/O commands in flight at most */

/* One I/O command of a batch (nvme_io_batch()). */
struct nvme_io {
	bool write;		/* true: WRITE (device reads memory) */
	uint64_t lba;		/* first block */
	uint64_t iova;		/* device address of the buffer's first byte */
	size_t len;		/* bytes; multiple of the LBA size, <= max_xfer */
	int status;		/* out: NVMe status field (0 = success), or
				 * -ETIMEDOUT */
};

struct nvme_ctrl {
	struct iodma_domain *domain;
	struct iodma_vfio_device *vdev;
	struct iodma_dev *dev;		/* coherent memory for the queues */
	volatile uint8_t *bar;		/* BAR0 */
	uint64_t bar_len;
	uint64_t cap;			/* CAP register */
	uint32_t dstrd;			/* doorbell stride: 4 << CAP.DSTRD bytes */
	uint32_t timeout_ms;		/* CAP.TO * 500 */

	/* admin queue pair */
	void *asq, *acq;
	uint64_t asq_iova, acq_iova;
	uint16_t aq_size, asq_tail, acq_head;
	uint8_t acq_phase;

	/* I/O queue pair 1 */
	void *iosq, *iocq;
	uint64_t iosq_iova, iocq_iova;
	uint16_t ioq_size, iosq_tail, iocq_head;
	uint8_t iocq_phase;
	bool ioq_created;
	bool failed;			/* a command timed out: the controller
					 * was disabled, every command is -EIO */

	/* PRP list pages, one per in-flight slot */
	void *prp;
	uint64_t prp_iova;
	uint32_t qd;			/* commands in flight at most */

	/* identify data */
	char model[41], serial[21], firmware[9];
	uint32_t mdts_bytes;		/* 0 = no limit reported */
	uint32_t max_xfer;		/* bytes per command the driver uses */
	uint32_t nsid;
	uint32_t lba_size;
	uint64_t nr_lbas;

	/* counters */
	uint64_t commands;		/* I/O commands completed */
	uint16_t next_cid;
};

/*
 * nvme_open() - Open, reset and enable a controller, identify it and its
 * namespace @nsid, create I/O queue pair 1.
 * @c:      zeroed controller state to fill.
 * @d:      a vfio or iommufd domain.
 * @bdf:    PCI address bound to vfio-pci.
 * @nsid:   namespace (1).
 *
 * Return: 0, or a negative errno (-ETIMEDOUT: the controller did not
 * become ready; -EIO: an admin command failed); @c is closed on error.
 * nvme_last_error() says why.
 */
int nvme_open(struct nvme_ctrl *c, struct iodma_domain *d, const char *bdf,
	      uint32_t nsid);

/* Disable the controller, free the queues, close the device.  No-op on a
 * zeroed @c. */
void nvme_close(struct nvme_ctrl *c);

/* A sentence about the last failure of this driver. */
const char *nvme_last_error(void);

/*
 * nvme_io_batch() - Run @n I/O commands, up to c->qd in flight, polling.
 * Return: 0 when every command completed with status 0; -EIO when one
 * completed with an error status (see ios[i].status); -ETIMEDOUT; -EINVAL
 * a bad request (length not a block multiple, over max_xfer, past the end
 * of the namespace, iova not dword aligned).
 */
int nvme_io_batch(struct nvme_ctrl *c, struct nvme_io *ios, size_t n);

/*
 * nvme_rw() - Read or write @len bytes at block @lba from/to the
 * IOVA-contiguous buffer at @iova, split into max_xfer commands.
 */
int nvme_rw(struct nvme_ctrl *c, bool write, uint64_t lba, uint64_t iova,
	    size_t len);

/*
 * nvme_identify() - IDENTIFY with CNS @cns into a 4 KiB buffer at @iova
 * (for tests that want to aim the device elsewhere).  Returns the status
 * (>= 0) or -ETIMEDOUT.
 */
int nvme_identify(struct nvme_ctrl *c, uint32_t cns, uint32_t nsid,
		  uint64_t iova);

/* Submit one raw I/O command (64 bytes) on the I/O queue and wait for it:
 * for the isolation tests, which aim PRP1 at unmapped IOVAs.  Returns the
 * status (>= 0) or -ETIMEDOUT. */
int nvme_io_raw(struct nvme_ctrl *c, const uint32_t cmd[16]);

/* What nvme_copy() did. */
struct nvme_copy_result {
	uint64_t bytes;			/* payload (the source length) */
	uint64_t write_cmds, read_cmds;	/* I/O commands */
	double write_s, read_s;		/* wall time of each phase */
	uint64_t maps;			/* iodma_map_single() calls */
	bool verified;			/* read-back equals the source */
	uint8_t *readback;		/* the data read back, @bytes long */
	/* private: how readback was allocated */
	size_t alloc_len;
	bool registered;
};

/*
 * nvme_copy() - Write @len bytes of @src to the namespace from block @lba,
 * read them back and compare.
 * @c:          open controller.
 * @data:       the iodma_dev data buffers are mapped through (same domain).
 * @registered: true: the write and read buffers are mmapped and registered
 *              with iodma_dev_register() (each map is a lookup); false:
 *              ordinary heap buffers (malloc), one streaming map per
 *              command (iodma_map_single() / iodma_unmap_single()).
 * @r:          receives figures and the read-back buffer; release it with
 *              nvme_copy_release().
 *
 * The tail is padded with zeros to a whole block.  Up to c->qd commands of
 * c->max_xfer bytes are in flight.
 * Return: 0 (check r->verified), or a negative errno (nothing to release).
 */
int nvme_copy(struct nvme_ctrl *c, struct iodma_dev *data, const void *src,
	      size_t len, uint64_t lba, bool registered,
	      struct nvme_copy_result *r);
void nvme_copy_release(struct iodma_dev *data, struct nvme_copy_result *r);

#endif /* IODMA_EXAMPLES_NVME_H */
