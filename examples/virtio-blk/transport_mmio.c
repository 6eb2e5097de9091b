// SPDX-License-Identifier: MIT
/*
 * transport_mmio.c - the demo's register page (virtio-mmio version 2,
 * 4.2.2) as a driver transport: reads are loads of the page, writes are
 * trapped (mmio_window.h), QueueNotify and the interrupt are eventfds.
 */
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include <iodma.h>

#include "mmio_window.h"
#include "transport.h"
#include "virtio_ring.h"

struct mmio_transport {
	struct vblk_transport t;
	void *mmio;		/* the register page (CPU view of the BAR) */
	int doorbell_fd;	/* trapped writes and QueueNotify */
	int irq_fd;		/* the device's interrupt */
};

static struct mmio_transport *to_mmio(struct vblk_transport *t)
{
	return (struct mmio_transport *)t;
}

static uint32_t rd(struct vblk_transport *t, uint32_t off)
{
	return mmio_read32(to_mmio(t)->mmio, off);
}

static int wr(struct vblk_transport *t, uint32_t off, uint32_t val)
{
	return mmio_write32(to_mmio(t)->mmio, to_mmio(t)->doorbell_fd, off, val);
}

static int mmio_probe(struct vblk_transport *t, const char **msg)
{
	if (rd(t, VIRTIO_MMIO_MAGIC_VALUE) != VIRTIO_MMIO_MAGIC ||
	    rd(t, VIRTIO_MMIO_VERSION) != 2 ||
	    rd(t, VIRTIO_MMIO_DEVICE_ID) != VIRTIO_ID_BLOCK) {
		*msg = "no virtio-mmio v2 block device in the window";
		return -ENODEV;
	}
	return 0;
}

static uint8_t mmio_get_status(struct vblk_transport *t)
{
	return (uint8_t)rd(t, VIRTIO_MMIO_STATUS);
}

/* A trapped write has taken effect when it returns: a reset is complete. */
static int mmio_set_status(struct vblk_transport *t, uint8_t status)
{
	return wr(t, VIRTIO_MMIO_STATUS, status);
}

static int mmio_get_device_features(struct vblk_transport *t, uint64_t *f)
{
	int ret;

	*f = 0;
	for (uint32_t sel = 0; sel < 2; sel++) {
		if ((ret = wr(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel)))
			return ret;
		*f |= (uint64_t)rd(t, VIRTIO_MMIO_DEVICE_FEATURES) << (32 * sel);
	}
	return 0;
}

static int mmio_set_driver_features(struct vblk_transport *t, uint64_t f)
{
	int ret;

	for (uint32_t sel = 0; sel < 2; sel++) {
		if ((ret = wr(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel)) ||
		    (ret = wr(t, VIRTIO_MMIO_DRIVER_FEATURES,
			      (uint32_t)(f >> (32 * sel)))))
			return ret;
	}
	return 0;
}

static uint32_t mmio_config_generation(struct vblk_transport *t)
{
	return rd(t, VIRTIO_MMIO_CONFIG_GENERATION);
}

/* The page holds 32-bit little-endian words: narrower fields are taken
 * out of the word that contains them. */
static uint32_t mmio_config_read(struct vblk_transport *t, uint32_t off,
				 unsigned int width)
{
	uint32_t word = le32toh(rd(t, VIRTIO_MMIO_CONFIG + (off & ~3u)));

	word >>= 8 * (off & 3u);
	return width >= 4 ? word : word & ((1u << (8 * width)) - 1);
}

static int mmio_queue_select(struct vblk_transport *t, uint16_t index)
{
	return wr(t, VIRTIO_MMIO_QUEUE_SEL, index);
}

static uint32_t mmio_queue_size_max(struct vblk_transport *t)
{
	return rd(t, VIRTIO_MMIO_QUEUE_NUM_MAX);
}

static int mmio_queue_set_size(struct vblk_transport *t, uint32_t size)
{
	return wr(t, VIRTIO_MMIO_QUEUE_NUM, size);
}

static int mmio_queue_set_addrs(struct vblk_transport *t, uint64_t desc,
				uint64_t driver, uint64_t device)
{
	int ret;

	if ((ret = wr(t, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)desc)) ||
	    (ret = wr(t, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32))) ||
	    (ret = wr(t, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)driver)) ||
	    (ret = wr(t, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, (uint32_t)(driver >> 32))) ||
	    (ret = wr(t, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)device)) ||
	    (ret = wr(t, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, (uint32_t)(device >> 32))))
		return ret;
	return 0;
}

static int mmio_queue_enable(struct vblk_transport *t)
{
	return wr(t, VIRTIO_MMIO_QUEUE_READY, 1);
}

static bool mmio_queue_enabled(struct vblk_transport *t)
{
	return rd(t, VIRTIO_MMIO_QUEUE_READY) != 0;
}

/* QueueNotify is an ioeventfd: the doorbell alone. */
static int mmio_notify(struct vblk_transport *t, uint16_t index)
{
	(void)index;
	return mmio_queue_notify(to_mmio(t)->doorbell_fd);
}

static int mmio_wait(struct vblk_transport *t, int timeout_ms)
{
	struct pollfd p = { .fd = to_mmio(t)->irq_fd, .events = POLLIN };
	eventfd_t v;
	int r = poll(&p, 1, timeout_ms);

	if (r < 0)
		return errno == EINTR ? 0 : -errno;
	return r > 0 && eventfd_read(to_mmio(t)->irq_fd, &v) == 0 ? 1 : 0;
}

static void mmio_destroy(struct vblk_transport *t)
{
	free(t);
}

static const struct vblk_transport_ops mmio_ops = {
	.name = "virtio-mmio",
	.probe = mmio_probe,
	.get_status = mmio_get_status,
	.set_status = mmio_set_status,
	.get_device_features = mmio_get_device_features,
	.set_driver_features = mmio_set_driver_features,
	.config_generation = mmio_config_generation,
	.config_read = mmio_config_read,
	.queue_select = mmio_queue_select,
	.queue_size_max = mmio_queue_size_max,
	.queue_set_size = mmio_queue_set_size,
	.queue_set_addrs = mmio_queue_set_addrs,
	.queue_enable = mmio_queue_enable,
	.queue_enabled = mmio_queue_enabled,
	.notify = mmio_notify,
	.wait = mmio_wait,
	.destroy = mmio_destroy,
};

int vblk_mmio_transport_create(struct iodma_dev *dev, uint64_t mmio_paddr,
			       int doorbell_fd, int irq_fd,
			       struct vblk_transport **out)
{
	struct mmio_transport *m = calloc(1, sizeof(*m));
	int ret;

	if (!m)
		return -ENOMEM;
	/* Find the BAR, as VirtIoHal::mmio_phys_to_virt does. */
	ret = iodma_mmio_phys_to_virt(dev, mmio_paddr, VBLK_MMIO_SIZE, &m->mmio);
	if (ret) {
		free(m);
		return ret;
	}
	m->t.ops = &mmio_ops;
	m->doorbell_fd = doorbell_fd;
	m->irq_fd = irq_fd;
	*out = &m->t;
	return 0;
}
