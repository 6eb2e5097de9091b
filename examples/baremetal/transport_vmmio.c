// SPDX-License-Identifier: MIT
/*
 * transport_vmmio.c - a real virtio-mmio version 2 device (VIRTIO 1.2
 * 4.2.2, QEMU's virtio-mmio with force-legacy=false) as a transport of the
 * virtio-blk driver.  Every register is a 32-bit little-endian device
 * access, except the device configuration space, read at its own width
 * (4.2.2: "the driver MUST use ... accesses of the field's size").
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "../virtio-blk/transport.h"
#include "../virtio-blk/virtio_ring.h"
#include "bm.h"
#include "board.h"

#define RESET_TIMEOUT_TICKS(hz)	((hz) / 10)	/* 100 ms */

struct vmmio {
	struct vblk_transport t;
	uintptr_t base;
	struct vblk_vmmio_counts n;
};

static struct vmmio *to_vmmio(struct vblk_transport *t)
{
	return (struct vmmio *)t;
}

static uint32_t rd(struct vblk_transport *t, uint32_t off)
{
	return *(volatile uint32_t *)(to_vmmio(t)->base + off);
}

static void wr(struct vblk_transport *t, uint32_t off, uint32_t val)
{
	*(volatile uint32_t *)(to_vmmio(t)->base + off) = val;
}

static int vm_probe(struct vblk_transport *t, const char **msg)
{
	if (rd(t, VIRTIO_MMIO_MAGIC_VALUE) != VIRTIO_MMIO_MAGIC) {
		*msg = "no virtio-mmio magic";
		return -ENODEV;
	}
	if (rd(t, VIRTIO_MMIO_VERSION) != 2) {
		*msg = "virtio-mmio version 1 (legacy): run QEMU with -global virtio-mmio.force-legacy=false";
		return -ENODEV;
	}
	if (rd(t, VIRTIO_MMIO_DEVICE_ID) != VIRTIO_ID_BLOCK) {
		*msg = "not a block device";
		return -ENODEV;
	}
	return 0;
}

static uint8_t vm_get_status(struct vblk_transport *t)
{
	return (uint8_t)rd(t, VIRTIO_MMIO_STATUS);
}

/* A reset is complete when Status reads back 0 (4.2.3.1.1... 2.4.1). */
static int vm_set_status(struct vblk_transport *t, uint8_t status)
{
	uint64_t start = board_ticks();

	bm_mb();
	wr(t, VIRTIO_MMIO_STATUS, status);
	if (status)
		return 0;
	while (rd(t, VIRTIO_MMIO_STATUS)) {
		if (board_ticks() - start > RESET_TIMEOUT_TICKS(board_tick_hz()))
			return -ETIMEDOUT;
	}
	return 0;
}

static int vm_get_device_features(struct vblk_transport *t, uint64_t *features)
{
	uint64_t lo, hi;

	wr(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	lo = rd(t, VIRTIO_MMIO_DEVICE_FEATURES);
	wr(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	hi = rd(t, VIRTIO_MMIO_DEVICE_FEATURES);
	*features = lo | hi << 32;
	return 0;
}

static int vm_set_driver_features(struct vblk_transport *t, uint64_t features)
{
	wr(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	wr(t, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)features);
	wr(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	wr(t, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(features >> 32));
	return 0;
}

static uint32_t vm_config_generation(struct vblk_transport *t)
{
	return rd(t, VIRTIO_MMIO_CONFIG_GENERATION);
}

static uint32_t vm_config_read(struct vblk_transport *t, uint32_t off,
			       unsigned int width)
{
	uintptr_t a = to_vmmio(t)->base + VIRTIO_MMIO_CONFIG + off;

	switch (width) {
	case 1:
		return *(volatile uint8_t *)a;
	case 2:
		return *(volatile uint16_t *)a;
	default:
		return *(volatile uint32_t *)a;
	}
}

static int vm_queue_select(struct vblk_transport *t, uint16_t index)
{
	wr(t, VIRTIO_MMIO_QUEUE_SEL, index);
	return 0;
}

static uint32_t vm_queue_size_max(struct vblk_transport *t)
{
	return rd(t, VIRTIO_MMIO_QUEUE_NUM_MAX);
}

static int vm_queue_set_size(struct vblk_transport *t, uint32_t size)
{
	wr(t, VIRTIO_MMIO_QUEUE_NUM, size);
	return 0;
}

static int vm_queue_set_addrs(struct vblk_transport *t, uint64_t desc,
			      uint64_t driver, uint64_t device)
{
	wr(t, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)desc);
	wr(t, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
	wr(t, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)driver);
	wr(t, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, (uint32_t)(driver >> 32));
	wr(t, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)device);
	wr(t, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, (uint32_t)(device >> 32));
	return 0;
}

static int vm_queue_enable(struct vblk_transport *t)
{
	/* The rings the device is about to read were written first. */
	bm_dma_wmb();
	wr(t, VIRTIO_MMIO_QUEUE_READY, 1);
	return 0;
}

static bool vm_queue_enabled(struct vblk_transport *t)
{
	return rd(t, VIRTIO_MMIO_QUEUE_READY) == 1;
}

static int vm_notify(struct vblk_transport *t, uint16_t index)
{
	/* The available ring stores before the doorbell (Linux: writel's
	 * __iowmb before the store). */
	bm_dma_wmb();
	wr(t, VIRTIO_MMIO_QUEUE_NOTIFY, index);
	to_vmmio(t)->n.notifies++;
	return 0;
}

static int vm_wait(struct vblk_transport *t, int timeout_ms)
{
	uint32_t isr = rd(t, VIRTIO_MMIO_INTERRUPT_STATUS);
	uint64_t until;

	if (isr) {
		wr(t, VIRTIO_MMIO_INTERRUPT_ACK, isr);
		/* The used ring after the register that announced it. */
		bm_dma_rmb();
		to_vmmio(t)->n.interrupts++;
		return 1;
	}
	/* A short pause (at most 20 us, or the caller's timeout): the
	 * driver looks at the used ring again either way. */
	until = board_tick_hz() / 50000;
	if (timeout_ms >= 0 && (uint64_t)timeout_ms * board_tick_hz() / 1000 < until)
		until = (uint64_t)timeout_ms * board_tick_hz() / 1000;
	until += board_ticks();
	while (board_ticks() < until)
		;
	bm_dma_rmb();
	to_vmmio(t)->n.polls++;
	return 0;
}

static void vm_destroy(struct vblk_transport *t)
{
	free(t);
}

static const struct vblk_transport_ops vmmio_ops = {
	.name = "virtio-mmio",
	.probe = vm_probe,
	.get_status = vm_get_status,
	.set_status = vm_set_status,
	.get_device_features = vm_get_device_features,
	.set_driver_features = vm_set_driver_features,
	.config_generation = vm_config_generation,
	.config_read = vm_config_read,
	.queue_select = vm_queue_select,
	.queue_size_max = vm_queue_size_max,
	.queue_set_size = vm_queue_set_size,
	.queue_set_addrs = vm_queue_set_addrs,
	.queue_enable = vm_queue_enable,
	.queue_enabled = vm_queue_enabled,
	.notify = vm_notify,
	.wait = vm_wait,
	.destroy = vm_destroy,
};

int vblk_vmmio_transport_create(uintptr_t base, struct vblk_transport **out)
{
	struct vmmio *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	m->t.ops = &vmmio_ops;
	m->base = base;
	*out = &m->t;
	return 0;
}

void vblk_vmmio_transport_counts(struct vblk_transport *t,
				 struct vblk_vmmio_counts *out)
{
	*out = to_vmmio(t)->n;
}
