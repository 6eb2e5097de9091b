// SPDX-License-Identifier: MIT
/*
 * transport_pci.c - a virtio-pci modern device (VIRTIO 1.2, 4.1) as a
 * driver transport, through iodma's VFIO device API.
 *
 * The device's registers are four structures that vendor-specific PCI
 * capabilities (4.1.4) point at, each in some BAR at some offset:
 *   common configuration (cfg_type 1): features, status, queue setup;
 *   notifications (2): queue q's doorbell is at
 *       cap.offset + queue_notify_off(q) * notify_off_multiplier;
 *   ISR status (3): read-to-clear interrupt cause (INTx only);
 *   device configuration (4): the virtio-blk config.
 * The BARs are mmapped where VFIO allows it and accessed with volatile
 * loads and stores of the field's width; otherwise every access is a
 * pread/pwrite of the VFIO region (iodma_vfio_region_read/write), which
 * vfio-pci passes through with the same width.
 *
 * Completion: MSI-X vector 0 -> an eventfd when asked for and granted
 * (VFIO_DEVICE_SET_IRQS, queue_msix_vector = 0), else polling.  Even with
 * the interrupt, a wait never sleeps longer than IRQ_SLICE_MS, so a lost
 * interrupt costs time, not the transfer.
 */
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include <iodma.h>
#include <iodma/barrier.h>
#include <iodma/vfio.h>

#include "transport.h"
#include "virtio_ring.h"

/* PCI configuration space (PCI 3.0, 6.7). */
#define PCI_STATUS		0x06u
#define PCI_STATUS_CAP_LIST	0x10u
#define PCI_CAPABILITY_LIST	0x34u
#define PCI_CAP_ID_VNDR		0x09u

/* virtio_pci_cap (4.1.4): u8 cap_vndr, cap_next, cap_len, cfg_type, bar,
 * id, padding[2]; le32 offset, length; notify adds le32 multiplier. */
#define VIRTIO_PCI_CAP_LEN		16u
#define VIRTIO_PCI_NOTIFY_CAP_LEN	20u
#define VIRTIO_PCI_CAP_COMMON_CFG	1u
#define VIRTIO_PCI_CAP_NOTIFY_CFG	2u
#define VIRTIO_PCI_CAP_ISR_CFG		3u
#define VIRTIO_PCI_CAP_DEVICE_CFG	4u

/* virtio_pci_common_cfg (4.1.4.3). */
#define VPCI_DEVICE_FEATURE_SELECT	0x00u	/* le32 */
#define VPCI_DEVICE_FEATURE		0x04u	/* le32 */
#define VPCI_DRIVER_FEATURE_SELECT	0x08u	/* le32 */
#define VPCI_DRIVER_FEATURE		0x0cu	/* le32 */
#define VPCI_CONFIG_MSIX_VECTOR		0x10u	/* le16 */
#define VPCI_NUM_QUEUES			0x12u	/* le16 */
#define VPCI_DEVICE_STATUS		0x14u	/* u8 */
#define VPCI_CONFIG_GENERATION		0x15u	/* u8 */
#define VPCI_QUEUE_SELECT		0x16u	/* le16 */
#define VPCI_QUEUE_SIZE			0x18u	/* le16 */
#define VPCI_QUEUE_MSIX_VECTOR		0x1au	/* le16 */
#define VPCI_QUEUE_ENABLE		0x1cu	/* le16 */
#define VPCI_QUEUE_NOTIFY_OFF		0x1eu	/* le16 */
#define VPCI_QUEUE_DESC			0x20u	/* le64 */
#define VPCI_QUEUE_DRIVER		0x28u	/* le64 */
#define VPCI_QUEUE_DEVICE		0x30u	/* le64 */
#define VPCI_COMMON_MIN_LEN		0x38u

#define VIRTIO_MSI_NO_VECTOR		0xffffu
#define VIRTIO_PCI_DEVICE_ID_BLOCK	0x1042u	/* 0x1040 + device id 2 */
#define VIRTIO_PCI_VENDOR		0x1af4u

#define MAX_QUEUES	8u	/* queues whose notify offset we remember */
#define RESET_WAIT_MS	2000
#define IRQ_SLICE_MS	50	/* longest sleep on the eventfd */
#define POLL_PAUSE_NS	5000	/* a polling wait's pause */

/* One structure: where it lives and how to reach it. */
struct win {
	bool present;
	uint32_t bar;
	uint32_t off;		/* in the BAR */
	uint32_t len;
	volatile uint8_t *va;	/* mmapped BAR + off, NULL: region pread/pwrite */
};

struct pci_transport {
	struct vblk_transport t;
	struct iodma_vfio_device *vdev;
	struct win common, notify, isr, device;
	uint32_t notify_mult;
	uint16_t sel;			/* queue selected */
	uint16_t notify_off[MAX_QUEUES];
	int irq_fd;			/* MSI-X vector 0, -1: polling */
	bool irq_requested;
	bool bus_master;
	struct vblk_pci_info info;
};

static struct pci_transport *to_pci(struct vblk_transport *t)
{
	return (struct pci_transport *)t;
}

/* ---- register access ------------------------------------------------------ */

static uint32_t win_read(struct pci_transport *p, const struct win *w,
			 uint32_t off, unsigned int width)
{
	uint32_t v = 0;

	if (!w->present || off > w->len || width > w->len - off)
		return UINT32_MAX;
	if (w->va) {
		switch (width) {
		case 1:
			v = *(volatile uint8_t *)(w->va + off);
			break;
		case 2:
			v = le16toh(*(volatile uint16_t *)(w->va + off));
			break;
		default:
			v = le32toh(*(volatile uint32_t *)(w->va + off));
			break;
		}
		/* As readl(): the register read (ISR, a status) completes
		 * before the driver's later loads of memory the device wrote
		 * (the used ring): an I/O read barrier after it, not a full
		 * fence before it. */
		iodma_rmb();
		return v;
	}
	if (iodma_vfio_region_read(p->vdev, w->bar, (uint64_t)w->off + off, &v,
				   width))
		return UINT32_MAX;
	return width == 1 ? (uint8_t)v : width == 2 ? le16toh((uint16_t)v)
						     : le32toh(v);
}

static int win_write(struct pci_transport *p, const struct win *w,
		     uint32_t off, unsigned int width, uint32_t val)
{
	uint8_t b = (uint8_t)val;
	uint16_t h = htole16((uint16_t)val);
	uint32_t l = htole32(val);
	const void *src = width == 1 ? (const void *)&b :
			  width == 2 ? (const void *)&h : (const void *)&l;

	if (!w->present || off > w->len || width > w->len - off)
		return -EINVAL;
	/* As writel(): everything the driver wrote to memory (rings,
	 * descriptors) is visible to the device before it sees this register
	 * write (a doorbell): a write barrier that also orders memory against
	 * MMIO (dsb st / fence ow,ow), which a CPU-only fence is not. */
	iodma_wmb();
	if (w->va) {
		switch (width) {
		case 1:
			*(volatile uint8_t *)(w->va + off) = b;
			break;
		case 2:
			*(volatile uint16_t *)(w->va + off) = h;
			break;
		default:
			*(volatile uint32_t *)(w->va + off) = l;
			break;
		}
		return 0;
	}
	return iodma_vfio_region_write(p->vdev, w->bar, (uint64_t)w->off + off,
				       src, width);
}

static uint32_t cc_read(struct pci_transport *p, uint32_t off, unsigned int w)
{
	return win_read(p, &p->common, off, w);
}

static int cc_write(struct pci_transport *p, uint32_t off, unsigned int w,
		    uint32_t val)
{
	return win_write(p, &p->common, off, w, val);
}

/* 64-bit fields as two 32-bit writes, low first (4.1.3.1 allows it). */
static int cc_write64(struct pci_transport *p, uint32_t off, uint64_t val)
{
	int ret = cc_write(p, off, 4, (uint32_t)val);

	return ret ? ret : cc_write(p, off + 4, 4, (uint32_t)(val >> 32));
}

static void sleep_ns(long ns)
{
	struct timespec ts = { ns / 1000000000L, ns % 1000000000L };

	nanosleep(&ts, NULL);
}

/* ---- the ops ---------------------------------------------------------------- */

static int pci_probe(struct vblk_transport *t, const char **msg)
{
	struct pci_transport *p = to_pci(t);
	uint16_t id[2] = { 0, 0 };

	if (iodma_vfio_config_read(p->vdev, 0, id, sizeof(id)) ||
	    le16toh(id[0]) != VIRTIO_PCI_VENDOR ||
	    le16toh(id[1]) != VIRTIO_PCI_DEVICE_ID_BLOCK) {
		*msg = "not a modern virtio-blk PCI device (1af4:1042)";
		return -ENODEV;
	}
	return 0;
}

static uint8_t pci_get_status(struct vblk_transport *t)
{
	return (uint8_t)cc_read(to_pci(t), VPCI_DEVICE_STATUS, 1);
}

static int pci_set_status(struct vblk_transport *t, uint8_t status)
{
	struct pci_transport *p = to_pci(t);
	int ret = cc_write(p, VPCI_DEVICE_STATUS, 1, status);

	if (ret || status)
		return ret;
	/* A reset is complete once device_status reads 0 (4.1.4.3.2). */
	for (int ms = 0; ms < RESET_WAIT_MS; ms++) {
		if (cc_read(p, VPCI_DEVICE_STATUS, 1) == 0)
			return 0;
		sleep_ns(1000000L);
	}
	return -ETIMEDOUT;
}

static int pci_get_device_features(struct vblk_transport *t, uint64_t *f)
{
	struct pci_transport *p = to_pci(t);
	int ret;

	*f = 0;
	for (uint32_t sel = 0; sel < 2; sel++) {
		uint32_t w;

		if ((ret = cc_write(p, VPCI_DEVICE_FEATURE_SELECT, 4, sel)))
			return ret;
		/* All ones is what a failed region read returns (and what a
		 * PCI read of a vanished device returns): not a feature set. */
		w = cc_read(p, VPCI_DEVICE_FEATURE, 4);
		if (w == UINT32_MAX) {
			*f = 0;
			return -EIO;
		}
		*f |= (uint64_t)w << (32 * sel);
	}
	return 0;
}

static int pci_set_driver_features(struct vblk_transport *t, uint64_t f)
{
	struct pci_transport *p = to_pci(t);
	int ret;

	for (uint32_t sel = 0; sel < 2; sel++) {
		if ((ret = cc_write(p, VPCI_DRIVER_FEATURE_SELECT, 4, sel)) ||
		    (ret = cc_write(p, VPCI_DRIVER_FEATURE, 4,
				    (uint32_t)(f >> (32 * sel)))))
			return ret;
	}
	return 0;
}

static uint32_t pci_config_generation(struct vblk_transport *t)
{
	return cc_read(to_pci(t), VPCI_CONFIG_GENERATION, 1);
}

static uint32_t pci_config_read(struct vblk_transport *t, uint32_t off,
				unsigned int width)
{
	return win_read(to_pci(t), &to_pci(t)->device, off, width);
}

static int pci_queue_select(struct vblk_transport *t, uint16_t index)
{
	struct pci_transport *p = to_pci(t);
	int ret = cc_write(p, VPCI_QUEUE_SELECT, 2, index);

	if (!ret)
		p->sel = index;
	return ret;
}

static uint32_t pci_queue_size_max(struct vblk_transport *t)
{
	/* Before the driver writes it, queue_size holds the maximum. */
	uint32_t v = cc_read(to_pci(t), VPCI_QUEUE_SIZE, 2);

	return v == UINT32_MAX ? 0 : v;
}

static int pci_queue_set_size(struct vblk_transport *t, uint32_t size)
{
	return cc_write(to_pci(t), VPCI_QUEUE_SIZE, 2, size);
}

static int pci_queue_set_addrs(struct vblk_transport *t, uint64_t desc,
			       uint64_t driver, uint64_t device)
{
	struct pci_transport *p = to_pci(t);
	int ret;

	if ((ret = cc_write64(p, VPCI_QUEUE_DESC, desc)) ||
	    (ret = cc_write64(p, VPCI_QUEUE_DRIVER, driver)) ||
	    (ret = cc_write64(p, VPCI_QUEUE_DEVICE, device)))
		return ret;
	return 0;
}

/* Route the selected queue to MSI-X vector 0, or fall back to polling
 * when the device has no vector to give (reads back NO_VECTOR). */
static void route_irq(struct pci_transport *p)
{
	if (p->irq_fd < 0)
		return;
	if (cc_write(p, VPCI_CONFIG_MSIX_VECTOR, 2, VIRTIO_MSI_NO_VECTOR) ||
	    cc_write(p, VPCI_QUEUE_MSIX_VECTOR, 2, 0) ||
	    cc_read(p, VPCI_QUEUE_MSIX_VECTOR, 2) != 0) {
		iodma_vfio_irq_disable(p->vdev);
		close(p->irq_fd);
		p->irq_fd = -1;
		p->info.msix = false;
	}
}

static int pci_queue_enable(struct vblk_transport *t)
{
	struct pci_transport *p = to_pci(t);
	uint32_t noff = cc_read(p, VPCI_QUEUE_NOTIFY_OFF, 2);

	if (p->sel >= MAX_QUEUES || noff == UINT32_MAX)
		return -EINVAL;
	p->notify_off[p->sel] = (uint16_t)noff;
	route_irq(p);
	return cc_write(p, VPCI_QUEUE_ENABLE, 2, 1);
}

static bool pci_queue_enabled(struct vblk_transport *t)
{
	uint32_t v = cc_read(to_pci(t), VPCI_QUEUE_ENABLE, 2);

	return v != 0 && v != UINT32_MAX;
}

static int pci_notify(struct vblk_transport *t, uint16_t index)
{
	struct pci_transport *p = to_pci(t);

	if (index >= MAX_QUEUES)
		return -EINVAL;
	p->info.notifies++;
	/* Without VIRTIO_F_NOTIFICATION_DATA the doorbell carries the
	 * queue index (4.1.5.2). */
	return win_write(p, &p->notify,
			 (uint32_t)p->notify_off[index] * p->notify_mult, 2,
			 index);
}

static int pci_wait(struct vblk_transport *t, int timeout_ms)
{
	struct pci_transport *p = to_pci(t);

	if (p->irq_fd >= 0) {
		struct pollfd pfd = { .fd = p->irq_fd, .events = POLLIN };
		eventfd_t v;
		int r = poll(&pfd, 1, timeout_ms < IRQ_SLICE_MS ? timeout_ms
								: IRQ_SLICE_MS);

		if (r < 0)
			return errno == EINTR ? 0 : -errno;
		if (r > 0 && eventfd_read(p->irq_fd, &v) == 0)
			return 1;
		p->info.polls++;
		return 0;
	}
	sleep_ns(POLL_PAUSE_NS);
	p->info.polls++;
	return 0;
}

static void pci_destroy(struct vblk_transport *t)
{
	struct pci_transport *p = to_pci(t);

	if (!p)
		return;
	if (p->common.present)
		(void)pci_set_status(t, 0);	/* no DMA after this */
	if (p->irq_requested)
		iodma_vfio_irq_disable(p->vdev);
	if (p->irq_fd >= 0)
		close(p->irq_fd);
	if (p->bus_master)
		iodma_vfio_set_bus_master(p->vdev, false);
	free(p);
}

static const struct vblk_transport_ops pci_ops = {
	.name = "virtio-pci",
	.probe = pci_probe,
	.get_status = pci_get_status,
	.set_status = pci_set_status,
	.get_device_features = pci_get_device_features,
	.set_driver_features = pci_set_driver_features,
	.config_generation = pci_config_generation,
	.config_read = pci_config_read,
	.queue_select = pci_queue_select,
	.queue_size_max = pci_queue_size_max,
	.queue_set_size = pci_queue_set_size,
	.queue_set_addrs = pci_queue_set_addrs,
	.queue_enable = pci_queue_enable,
	.queue_enabled = pci_queue_enabled,
	.notify = pci_notify,
	.wait = pci_wait,
	.destroy = pci_destroy,
};

/* ---- discovery -------------------------------------------------------------- */

/* Walk the capability list; record the first usable capability of each
 * virtio structure type (4.1.4: the driver uses the first it can). */
static int find_caps(struct pci_transport *p, const char **msg)
{
	struct iodma_vfio_region_info cfg;
	uint16_t status = 0;
	uint8_t ptr = 0;
	int ret;

	if ((ret = iodma_vfio_region_info(p->vdev, IODMA_VFIO_REGION_CONFIG, &cfg)) ||
	    (ret = iodma_vfio_config_read(p->vdev, PCI_STATUS, &status, 2)) ||
	    (ret = iodma_vfio_config_read(p->vdev, PCI_CAPABILITY_LIST, &ptr, 1))) {
		*msg = "reading PCI config space";
		return ret;
	}
	if (!(le16toh(status) & PCI_STATUS_CAP_LIST)) {
		*msg = "the device has no PCI capability list";
		return -ENODEV;
	}
	/* At most 48 capabilities fit in 192 bytes: a longer walk loops. */
	for (int n = 0; ptr >= 0x40 && n < 48; n++) {
		uint8_t cap[VIRTIO_PCI_NOTIFY_CAP_LEN] = { 0 };
		struct win *w = NULL;
		uint32_t off, len;

		ptr &= ~3u;
		if ((uint64_t)ptr + VIRTIO_PCI_CAP_LEN > cfg.size)
			break;
		if ((ret = iodma_vfio_config_read(p->vdev, ptr, cap,
						  VIRTIO_PCI_CAP_LEN))) {
			*msg = "reading a PCI capability";
			return ret;
		}
		if (cap[0] == PCI_CAP_ID_VNDR && cap[2] >= VIRTIO_PCI_CAP_LEN &&
		    cap[4] < IODMA_VFIO_NR_BARS) {
			switch (cap[3]) {
			case VIRTIO_PCI_CAP_COMMON_CFG: w = &p->common; break;
			case VIRTIO_PCI_CAP_NOTIFY_CFG: w = &p->notify; break;
			case VIRTIO_PCI_CAP_ISR_CFG:	w = &p->isr; break;
			case VIRTIO_PCI_CAP_DEVICE_CFG: w = &p->device; break;
			default: break;
			}
		}
		if (w && !w->present) {
			memcpy(&off, cap + 8, 4);
			memcpy(&len, cap + 12, 4);
			if (w == &p->notify) {
				uint32_t mult;

				if (cap[2] < VIRTIO_PCI_NOTIFY_CAP_LEN ||
				    (uint64_t)ptr + VIRTIO_PCI_NOTIFY_CAP_LEN > cfg.size ||
				    iodma_vfio_config_read(p->vdev, ptr + 16u,
							   &mult, 4)) {
					w = NULL;
				} else {
					p->notify_mult = le32toh(mult);
				}
			}
			if (w) {
				w->present = true;
				w->bar = cap[4];
				w->off = le32toh(off);
				w->len = le32toh(len);
			}
		}
		ptr = cap[1];
	}
	if (!p->common.present || !p->notify.present || !p->device.present) {
		*msg = "no virtio-pci modern capabilities (common, notify, device config)";
		return -ENODEV;
	}
	if (p->common.len < VPCI_COMMON_MIN_LEN) {
		*msg = "virtio common configuration structure too short";
		return -EINVAL;
	}
	return 0;
}

/* Reach a structure: through its mmapped BAR, or the region. */
static int map_win(struct pci_transport *p, struct win *w, unsigned int flags,
		   const char **msg)
{
	struct iodma_vfio_region_info ri;
	void *va = NULL;
	uint64_t len = 0;
	int ret;

	if (!w->present)
		return 0;
	ret = flags & VBLK_PCI_NO_MMAP ? -EOPNOTSUPP :
	      iodma_vfio_map_bar(p->vdev, w->bar, &va, &len);
	if (ret == -EOPNOTSUPP) {
		ret = iodma_vfio_region_info(p->vdev, w->bar, &ri);
		if (ret) {
			*msg = "VFIO region info of a virtio BAR";
			return ret;
		}
		va = NULL;
		len = ri.size;
		p->info.mmapped = false;
	} else if (ret) {
		*msg = "mapping a virtio BAR";
		return ret;
	}
	if ((uint64_t)w->off + w->len > len) {
		*msg = "a virtio capability points past the end of its BAR";
		return -EINVAL;
	}
	w->va = va ? (volatile uint8_t *)va + w->off : NULL;
	return 0;
}

/* MSI-X vector 0 into an eventfd; quietly nothing if it cannot be had. */
static void setup_irq(struct pci_transport *p)
{
	uint32_t count = 0;
	int fd;

	if (iodma_vfio_irq_info(p->vdev, IODMA_VFIO_IRQ_MSIX, &count) || !count)
		return;
	fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (fd < 0)
		return;
	if (iodma_vfio_irq_enable(p->vdev, IODMA_VFIO_IRQ_MSIX, 1, &fd, NULL)) {
		close(fd);
		return;
	}
	p->irq_fd = fd;
	p->irq_requested = true;
	p->info.msix = true;
}

int vblk_pci_transport_create(struct iodma_vfio_device *vdev,
			      unsigned int flags, struct vblk_transport **out,
			      const char **msg)
{
	struct pci_transport *p;
	int ret;

	*msg = "out of memory";
	if (!vdev || !out) {
		*msg = "invalid arguments";
		return -EINVAL;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->t.ops = &pci_ops;
	p->vdev = vdev;
	p->irq_fd = -1;
	p->info.mmapped = !(flags & VBLK_PCI_NO_MMAP);
	ret = find_caps(p, msg);
	if (!ret)
		ret = map_win(p, &p->common, flags, msg);
	if (!ret)
		ret = map_win(p, &p->notify, flags, msg);
	if (!ret)
		ret = map_win(p, &p->isr, flags, msg);
	if (!ret)
		ret = map_win(p, &p->device, flags, msg);
	if (!ret && (uint64_t)p->notify_mult * 0xffffu >= UINT32_MAX) {
		*msg = "notify_off_multiplier out of range";
		ret = -EINVAL;
	}
	if (!ret) {
		ret = iodma_vfio_set_bus_master(vdev, true);
		if (ret)
			*msg = "enabling bus mastering";
		else
			p->bus_master = true;
	}
	if (ret) {
		p->common.present = false;	/* never touched: no reset */
		pci_destroy(&p->t);
		return ret;
	}
	if (flags & VBLK_PCI_MSIX)
		setup_irq(p);
	p->info.common_bar = p->common.bar;
	p->info.common_off = p->common.off;
	p->info.notify_bar = p->notify.bar;
	p->info.notify_off = p->notify.off;
	p->info.notify_mult = p->notify_mult;
	p->info.isr_bar = p->isr.present ? p->isr.bar : UINT32_MAX;
	p->info.isr_off = p->isr.off;
	p->info.device_bar = p->device.bar;
	p->info.device_off = p->device.off;
	p->info.num_queues = (uint16_t)cc_read(p, VPCI_NUM_QUEUES, 2);
	*out = &p->t;
	return 0;
}

void vblk_pci_transport_info(struct vblk_transport *t,
			     struct vblk_pci_info *info)
{
	*info = to_pci(t)->info;
}

/* ---- the host side: domain, device, DMA context ----------------------------- */

int vblk_pci_host_open(const char *bdf, const char *backend,
		       const struct iodma_dev_opts *devopts, unsigned int flags,
		       struct vblk_pci_host *h, const char **msg)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_vfio_opts vo = IODMA_OPTS_INIT(struct iodma_vfio_opts);
	struct iodma_iommufd_opts io = IODMA_OPTS_INIT(struct iodma_iommufd_opts);
	struct iodma_dev_opts dopts = *devopts;
	int ret;

	memset(h, 0, sizeof(*h));
	if (!strcmp(backend, "vfio")) {
		/* No group yet: opening the device adds it. */
		o.backend = iodma_backend_vfio();
		o.backend_config = &vo;
	} else if (!strcmp(backend, "iommufd")) {
		o.backend = iodma_backend_iommufd();
		o.backend_config = &io;
	} else {
		*msg = "backend must be vfio or iommufd";
		return -EINVAL;
	}
	ret = iodma_domain_create(&o, &h->domain);
	if (ret) {
		*msg = "iodma_domain_create";
		return ret;
	}
	ret = iodma_vfio_device_open(h->domain, bdf, &h->vdev);
	if (ret) {
		*msg = "iodma_vfio_device_open";
		goto fail;
	}
	/* After the open: the domain's caps are the kernel's now, and the
	 * bounce pool lands in a valid IOVA range. */
	dopts.domain = h->domain;
	/*
	 * Keep the device's IOVAs below 2^48 unless the caller set a mask.
	 * Seen in the test bed (Linux 6.12 iommufd on QEMU 7.2's
	 * virtio-iommu, whose IOVA space reaches 2^64): with a mapping that
	 * ends at 2^64 (where the IOVA allocator puts the bounce pool), the
	 * device's DMA to most of it (past its first 256 KiB) went astray, with
	 * no fault logged.  The vfio backend already stops short of 2^64.
	 */
	if (!dopts.dma_mask)
		dopts.dma_mask = (UINT64_C(1) << 48) - 1;
	ret = iodma_dev_create(&dopts, &h->dev);
	if (ret) {
		*msg = "iodma_dev_create";
		goto fail;
	}
	ret = vblk_pci_transport_create(h->vdev, flags, &h->transport, msg);
	if (ret)
		goto fail;
	return 0;
fail:
	vblk_pci_host_close(h);
	return ret;
}

void vblk_pci_host_close(struct vblk_pci_host *h)
{
	/* The device stops DMA (reset, bus master off) before its memory
	 * goes; the device closes before its domain. */
	if (h->transport)
		h->transport->ops->destroy(h->transport);
	iodma_dev_destroy(h->dev);
	iodma_vfio_device_close(h->vdev);
	iodma_domain_destroy(h->domain);
	memset(h, 0, sizeof(*h));
}
