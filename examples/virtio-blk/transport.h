/* SPDX-License-Identifier: MIT */
/*
 * transport.h - how the virtio-blk driver reaches its device's registers.
 *
 * The driver (driver.c) speaks VIRTIO 1.2 in terms of the fields every
 * transport has (device/driver features, device status, queue select /
 * size / enable / addresses, queue notify, device configuration) and leaves
 * where those fields live to a transport:
 *
 *   - transport_mmio.c: the demo's in-process register page, laid out as a
 *     virtio-mmio version 2 transport (4.2.2), reached through
 *     iodma_mmio_phys_to_virt, with trapped writes and eventfds
 *     (mmio_window.h);
 *   - transport_pci.c: a virtio-pci modern device (4.1) opened through
 *     iodma's VFIO device API: the common, notify, ISR and device
 *     configuration structures found through the PCI capability list, in
 *     mmapped BARs (or through pread/pwrite of the VFIO regions).
 *
 * Every op acts on the queue last selected with queue_select where it
 * concerns a queue.  Ops that write (and the feature read, which selects
 * a window first) return 0 or -errno; plain reads cannot fail (a transport
 * that cannot read returns all ones, as a dead PCI device does).  Single-threaded: the driver's thread alone calls them.
 */
#ifndef VBLK_TRANSPORT_H
#define VBLK_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct iodma_dev;
struct iodma_dev_opts;
struct iodma_domain;
struct iodma_vfio_device;
struct vblk_transport;

struct vblk_transport_ops {
	const char *name;		/* "virtio-mmio", "virtio-pci" */
	/* Is there a virtio-blk device behind the transport?  0, or -ENODEV
	 * with *msg saying why not. */
	int (*probe)(struct vblk_transport *t, const char **msg);
	/* Device status (2.1).  set_status(0) is a reset: it returns once
	 * the device reads back 0 (-ETIMEDOUT if it never does). */
	uint8_t (*get_status)(struct vblk_transport *t);
	int (*set_status)(struct vblk_transport *t, uint8_t status);
	/* All 64 feature bits, offered / accepted. */
	int (*get_device_features)(struct vblk_transport *t, uint64_t *features);
	int (*set_driver_features)(struct vblk_transport *t, uint64_t features);
	/* Device configuration: generation counter, and a read of 1, 2 or 4
	 * bytes at @off of the device-specific configuration (little-endian
	 * value returned in host order). */
	uint32_t (*config_generation)(struct vblk_transport *t);
	uint32_t (*config_read)(struct vblk_transport *t, uint32_t off,
				unsigned int width);
	/* Virtqueues. */
	int (*queue_select)(struct vblk_transport *t, uint16_t index);
	uint32_t (*queue_size_max)(struct vblk_transport *t);	/* 0 = none */
	int (*queue_set_size)(struct vblk_transport *t, uint32_t size);
	int (*queue_set_addrs)(struct vblk_transport *t, uint64_t desc,
			       uint64_t driver, uint64_t device);
	int (*queue_enable)(struct vblk_transport *t);
	bool (*queue_enabled)(struct vblk_transport *t);
	/* Available buffers on queue @index (the doorbell). */
	int (*notify)(struct vblk_transport *t, uint16_t index);
	/* Wait for a used-buffer notification for at most @timeout_ms.
	 * Returns 1 when an interrupt arrived, 0 when the wait ended without
	 * one (timeout, or a polling transport's short pause: the driver
	 * looks at the used ring again either way), or -errno. */
	int (*wait)(struct vblk_transport *t, int timeout_ms);
	/* Free the transport (not the device it talks to). */
	void (*destroy)(struct vblk_transport *t);
};

/* Every transport starts with this. */
struct vblk_transport {
	const struct vblk_transport_ops *ops;
};

/**
 * vblk_mmio_transport_create() - The demo's register page as a transport.
 * @dev:         the driver's iodma_dev, with the page declared as an MMIO
 *               window (iodma_dev_add_mmio).
 * @mmio_paddr:  bus address of the page.
 * @doorbell_fd: eventfd behind QueueNotify and the trapped register writes.
 * @irq_fd:      eventfd the device signals (non-blocking).
 * @out:         receives the transport.
 *
 * Return: 0; the iodma_mmio_phys_to_virt error; -ENOMEM.
 */
int vblk_mmio_transport_create(struct iodma_dev *dev, uint64_t mmio_paddr,
			       int doorbell_fd, int irq_fd,
			       struct vblk_transport **out);

/* What the PCI transport found and how it talks to the device. */
struct vblk_pci_info {
	uint32_t common_bar, common_off;	/* where each structure is */
	uint32_t notify_bar, notify_off, notify_mult;
	uint32_t isr_bar, isr_off;
	uint32_t device_bar, device_off;
	bool mmapped;		/* every structure through an mmapped BAR */
	bool msix;		/* interrupts through MSI-X into an eventfd */
	uint16_t num_queues;
	uint64_t notifies;	/* doorbell writes */
	uint64_t polls;		/* waits that ended without an interrupt */
};

/* vblk_pci_transport_create() flags */
#define VBLK_PCI_MSIX		1u	/* MSI-X vector 0 -> an eventfd for
					 * queue 0; polling if the device or
					 * kernel refuses it */
#define VBLK_PCI_NO_MMAP	2u	/* every register access through the
					 * VFIO region (pread/pwrite), as for
					 * a BAR that cannot be mmapped */

/**
 * vblk_pci_transport_create() - A virtio-pci modern device as a transport.
 * @vdev:    the device, opened with iodma_vfio_device_open().
 * @flags:   VBLK_PCI_*; 0 = mmapped BARs where possible, polling.
 * @out:     receives the transport.
 * @msg:     receives a static string saying what failed.
 *
 * Walks the capability list in config space for the vendor-specific
 * capabilities (common 1, notify 2, ISR 3, device 4), maps the BARs they
 * point into (falling back to region pread/pwrite when a BAR cannot be
 * mmapped) and enables bus mastering.  The device is not reset here: the
 * driver resets it first thing.  Bus mastering is turned off again and
 * interrupts disabled by destroy.
 *
 * Return: 0; -ENODEV no virtio-pci modern capabilities; -EINVAL a
 *         capability points outside its BAR; -ENOMEM; or the VFIO error.
 */
int vblk_pci_transport_create(struct iodma_vfio_device *vdev,
			      unsigned int flags, struct vblk_transport **out,
			      const char **msg);

/* The PCI transport's findings and counters (@t must be a PCI transport). */
void vblk_pci_transport_info(struct vblk_transport *t,
			     struct vblk_pci_info *info);

/*
 * Everything a user-space driver of one VFIO device holds: an IOMMU domain
 * (VFIO type1 container or iommufd IOAS), the device opened through it, the
 * device's DMA context (iodma_dev: rings, streaming maps, bounce pool) and
 * the transport.
 */
struct vblk_pci_host {
	struct iodma_domain *domain;
	struct iodma_vfio_device *vdev;
	struct iodma_dev *dev;
	struct vblk_transport *transport;
};

/**
 * vblk_pci_host_open() - Open a virtio-pci device for the driver.
 * @bdf:     PCI address, bound to vfio-pci.
 * @backend: "vfio" (type1) or "iommufd".
 * @devopts: options of the iodma_dev (its domain is filled in here).
 * @flags:   VBLK_PCI_*, see vblk_pci_transport_create().
 * @h:       receives the four objects.
 * @msg:     receives a static string saying what failed (for VFIO errors
 *           iodma_vfio_last_error() has more).
 *
 * Return: 0 or -errno; nothing is left open on error.
 */
int vblk_pci_host_open(const char *bdf, const char *backend,
		       const struct iodma_dev_opts *devopts, unsigned int flags,
		       struct vblk_pci_host *h, const char **msg);

/* Close what vblk_pci_host_open() opened (the driver must be closed). */
void vblk_pci_host_close(struct vblk_pci_host *h);

#endif /* VBLK_TRANSPORT_H */
