// SPDX-License-Identifier: MIT
/*
 * driver.c - the virtio-blk driver.
 *
 * Initialisation follows VIRTIO 1.2 3.1.1 over a transport (transport.h:
 * the demo's virtio-mmio register page, or a virtio-pci device through
 * VFIO): reset, ACKNOWLEDGE, DRIVER, feature negotiation, FEATURES_OK (read
 * back), queue setup, DRIVER_OK.  The split virtqueue (2.7) lives in coherent DMA
 * memory: the descriptor table from iodma_alloc_coherent, the available and
 * used rings from iodma_hal_dma_alloc (VirtIoHal::dma_alloc).  A request is
 * a chain header (device-readable) -> data (readable for T_OUT, writable
 * for T_IN, split into descriptors of at most size_max bytes) -> status
 * (device-writable); the header and the status byte are shared with
 * iodma_hal_share, the data mapped with iodma_map_single, so each may be
 * bounced as the device's policy says.
 *
 * The driver keeps its own record of every chain it posted (which
 * descriptors, which slot) and never trusts the device's used ring beyond
 * checking the ids it returns.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <endian.h>
#include <time.h>
#include <sys/mman.h>

#include <iodma.h>
#include <iodma/barrier.h>

#include "driver.h"
#include "transport.h"
#include "virtio_ring.h"

#define WAIT_TIMEOUT_MS 10000

/* Header and status byte of one request, on separate cache lines. */
struct vblk_ctl {
	struct virtio_blk_outhdr hdr;
	uint8_t pad0[64 - sizeof(struct virtio_blk_outhdr)];
	uint8_t status;
	uint8_t pad1[63];
};

/* A data descriptor to post: where and which way. */
struct seg {
	uint64_t iova;
	uint32_t len;
	bool write;		/* device-writable */
};

struct slot {
	struct vblk_ctl *ctl;
	void *data;		/* request_size bytes */
	size_t len;		/* data bytes in this request (sector multiple) */
	size_t payload;		/* meaningful bytes (the sink's share) */
	uint64_t sector;
	enum iodma_dir dir;
	uint64_t hdr_iova, status_iova, data_iova;
	size_t data_mapped;	/* bytes mapped at data_iova, 0 = none */
	bool ctl_mapped;
	uint16_t *desc;		/* descriptors of the posted chain */
	unsigned int ndesc;
	bool posted, done;
	uint32_t used_len;
};

struct vblk_driver {
	struct vblk_driver_opts o;
	struct iodma_dev *dev;
	struct iodma_domain *domain;
	struct vblk_transport *t;
	uint64_t dev_features, features;
	uint64_t capacity;
	uint32_t size_max, seg_max, blk_size;
	bool event_idx;
	bool dev_started;	/* status written: reset at close */

	/* The split virtqueue. */
	unsigned int qsz;
	struct vring_desc *desc;
	uint8_t *avail;		/* CPU view of the driver area */
	uint8_t *used;		/* CPU view of the device area */
	uint64_t desc_iova, avail_iova, used_iova;
	size_t desc_len, ring_pages;
	uint16_t avail_idx;	/* shadow of avail->idx */
	uint16_t kicked_idx;	/* avail_idx at the last notify decision */
	uint16_t last_used;	/* next used entry to read */
	uint16_t *free_desc;	/* stack of free descriptor indices */
	unsigned int nfree;
	int *head_slot;		/* head descriptor -> slot, -1 if idle */

	/* Requests. */
	struct slot *slots;
	unsigned int nslots, max_desc;
	unsigned int *free_slot, nfree_slot;
	unsigned int *fifo, fifo_head, fifo_count;	/* issue order */
	uint8_t *area;		/* ctl array + data buffers */
	size_t area_len;
	bool area_registered;

	struct vblk_driver_info stats;
};

/* A 16-bit ring field the device may read or write at any time: volatile,
 * so every access is one load or store; ordering comes from barrier.h. */
static inline volatile uint16_t *ring16(uint8_t *base, size_t off)
{
	return (volatile uint16_t *)(base + off);
}

static uint32_t cfg32(struct vblk_driver *drv, uint32_t off)
{
	return drv->t->ops->config_read(drv->t, off, 4);
}

static uint64_t round_up(uint64_t x, uint64_t a)
{
	return (x + a - 1) / a * a;
}

/* ---- initialisation ------------------------------------------------------ */

static int set_status(struct vblk_driver *drv, uint8_t bits)
{
	const struct vblk_transport_ops *ops = drv->t->ops;

	return ops->set_status(drv->t, ops->get_status(drv->t) | bits);
}

static int negotiate(struct vblk_driver *drv, const char **msg)
{
	uint64_t want = VIRTIO_BIT(VIRTIO_F_VERSION_1) |
			VIRTIO_BIT(VIRTIO_F_ACCESS_PLATFORM) |
			VIRTIO_BIT(VIRTIO_BLK_F_SIZE_MAX) |
			VIRTIO_BIT(VIRTIO_BLK_F_SEG_MAX) |
			VIRTIO_BIT(VIRTIO_BLK_F_BLK_SIZE) |
			VIRTIO_BIT(VIRTIO_BLK_F_FLUSH);
	const struct vblk_transport_ops *ops = drv->t->ops;
	uint32_t gen;
	int ret;

	if ((ret = ops->probe(drv->t, msg)))
		return ret;
	drv->dev_started = true;
	if ((ret = ops->set_status(drv->t, 0)) ||
	    (ret = set_status(drv, VIRTIO_STATUS_ACKNOWLEDGE)) ||
	    (ret = set_status(drv, VIRTIO_STATUS_DRIVER))) {
		*msg = "device does not answer register writes";
		return ret;
	}
	if ((ret = ops->get_device_features(drv->t, &drv->dev_features))) {
		*msg = "reading the device features";
		return ret;
	}
	if (drv->o.event_idx)
		want |= VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX);
	drv->features = drv->dev_features & want;
	if (!(drv->features & VIRTIO_BIT(VIRTIO_F_VERSION_1))) {
		*msg = "device lacks VIRTIO_F_VERSION_1 (a legacy device)";
		(void)set_status(drv, VIRTIO_STATUS_FAILED);
		return -ENOTSUP;
	}
	if (drv->domain &&
	    !(drv->features & VIRTIO_BIT(VIRTIO_F_ACCESS_PLATFORM))) {
		/* Without ACCESS_PLATFORM the device would bypass the
		 * IOMMU: refuse, as Linux does for a restricted-DMA guest.
		 * In direct mode there is no IOMMU: physical addresses are
		 * what the device uses either way. */
		*msg = "device lacks VIRTIO_F_ACCESS_PLATFORM (its DMA would bypass the IOMMU; QEMU: iommu_platform=on)";
		(void)set_status(drv, VIRTIO_STATUS_FAILED);
		return -ENOTSUP;
	}
	if ((ret = ops->set_driver_features(drv->t, drv->features)))
		return ret;
	if ((ret = set_status(drv, VIRTIO_STATUS_FEATURES_OK)))
		return ret;
	if (!(ops->get_status(drv->t) & VIRTIO_STATUS_FEATURES_OK)) {
		*msg = "device refused the negotiated features";
		(void)set_status(drv, VIRTIO_STATUS_FAILED);
		return -ENOTSUP;
	}
	drv->event_idx = drv->features & VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX);

	/* Device configuration, consistent across a generation (2.5.1). */
	do {
		gen = ops->config_generation(drv->t);
		drv->capacity = (uint64_t)cfg32(drv, VIRTIO_BLK_CFG_CAPACITY) |
			(uint64_t)cfg32(drv, VIRTIO_BLK_CFG_CAPACITY + 4) << 32;
		drv->size_max = cfg32(drv, VIRTIO_BLK_CFG_SIZE_MAX);
		drv->seg_max = cfg32(drv, VIRTIO_BLK_CFG_SEG_MAX);
		drv->blk_size = cfg32(drv, VIRTIO_BLK_CFG_BLK_SIZE);
	} while (gen != ops->config_generation(drv->t));
	if (!(drv->features & VIRTIO_BIT(VIRTIO_BLK_F_SIZE_MAX)) ||
	    drv->size_max < VIRTIO_BLK_SECTOR_SIZE)
		drv->size_max = 1u << 20;
	drv->size_max -= drv->size_max % VIRTIO_BLK_SECTOR_SIZE;
	if (!(drv->features & VIRTIO_BIT(VIRTIO_BLK_F_SEG_MAX)) ||
	    drv->seg_max == 0)
		drv->seg_max = 1;
	return 0;
}

static int setup_queue(struct vblk_driver *drv, const char **msg)
{
	const struct vblk_transport_ops *ops = drv->t->ops;
	unsigned int max;
	int ret;

	if ((ret = ops->queue_select(drv->t, 0)))
		return ret;
	if (ops->queue_enabled(drv->t)) {
		*msg = "queue 0 already live after reset";
		return -EBUSY;
	}
	max = ops->queue_size_max(drv->t);
	if (max == 0) {
		*msg = "device has no queue 0";
		return -ENODEV;
	}
	drv->qsz = drv->o.queue_size < max ? drv->o.queue_size : max;

	/* Descriptor table: iodma_alloc_coherent.  Driver and device areas:
	 * one VirtIoHal::dma_alloc, the used ring on its own page-aligned
	 * part (its alignment is 4, a page keeps it off the avail lines). */
	drv->desc_len = vring_desc_size(drv->qsz);
	ret = iodma_alloc_coherent(drv->dev, drv->desc_len,
				   (void **)&drv->desc, &drv->desc_iova);
	if (ret) {
		*msg = "iodma_alloc_coherent (descriptor table)";
		return ret;
	}
	size_t page = iodma_page_size();
	size_t avail_pages = round_up(vring_avail_size(drv->qsz), page) / page;
	size_t used_pages = round_up(vring_used_size(drv->qsz), page) / page;
	uint8_t *rings;
	uint64_t rings_iova;

	drv->ring_pages = avail_pages + used_pages;
	ret = iodma_hal_dma_alloc(drv->dev, drv->ring_pages,
				  IODMA_BIDIRECTIONAL, &rings_iova,
				  (void **)&rings);
	if (ret) {
		*msg = "iodma_hal_dma_alloc (available and used rings)";
		iodma_free_coherent(drv->dev, drv->desc_len, drv->desc, drv->desc_iova);
		drv->desc = NULL;
		return ret;
	}
	drv->avail = rings;
	drv->avail_iova = rings_iova;
	drv->used = rings + avail_pages * page;
	drv->used_iova = rings_iova + avail_pages * page;

	if ((ret = ops->queue_set_size(drv->t, drv->qsz)) ||
	    (ret = ops->queue_set_addrs(drv->t, drv->desc_iova, drv->avail_iova,
					drv->used_iova)) ||
	    (ret = ops->queue_enable(drv->t)))
		return ret;
	if (!ops->queue_enabled(drv->t)) {
		*msg = "device refused the queue";
		return -EIO;
	}

	drv->free_desc = calloc(drv->qsz, sizeof(*drv->free_desc));
	drv->head_slot = calloc(drv->qsz, sizeof(*drv->head_slot));
	if (!drv->free_desc || !drv->head_slot)
		return -ENOMEM;
	for (unsigned int i = 0; i < drv->qsz; i++) {
		drv->free_desc[i] = (uint16_t)(drv->qsz - 1 - i);
		drv->head_slot[i] = -1;
	}
	drv->nfree = drv->qsz;
	return 0;
}

static int setup_slots(struct vblk_driver *drv, const char **msg)
{
	size_t page = drv->domain ? (size_t)iodma_domain_alignment(drv->domain) :
				    iodma_page_size();
	unsigned int nseg = (unsigned int)((drv->o.request_size + drv->size_max - 1) /
					   drv->size_max);
	size_t ctl_len, stride;
	int ret;

	if (nseg > drv->seg_max) {
		*msg = "request size needs more data descriptors than seg_max";
		return -EINVAL;
	}
	/* A chain: header + data + status; the checks add up to 2 more. */
	drv->max_desc = nseg + 4;
	if (drv->max_desc > drv->qsz) {
		*msg = "queue too small for one request of that size";
		return -EINVAL;
	}
	drv->nslots = drv->qsz / drv->max_desc;
	drv->slots = calloc(drv->nslots, sizeof(*drv->slots));
	drv->free_slot = calloc(drv->nslots, sizeof(*drv->free_slot));
	drv->fifo = calloc(drv->nslots, sizeof(*drv->fifo));
	if (!drv->slots || !drv->free_slot || !drv->fifo)
		return -ENOMEM;

	ctl_len = round_up(drv->nslots * sizeof(struct vblk_ctl), page);
	stride = round_up(drv->o.request_size, page);
	drv->area_len = ctl_len + drv->nslots * stride;
	drv->area = mmap(NULL, drv->area_len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (drv->area == MAP_FAILED) {
		drv->area = NULL;
		return -ENOMEM;
	}
	/* mmap gives page alignment; the domain may want more. */
	if ((uintptr_t)drv->area % page) {
		*msg = "buffer area not aligned to the domain alignment";
		return -EINVAL;
	}
	if (drv->o.registered) {
		ret = iodma_dev_register(drv->dev, drv->area, drv->area_len, NULL);
		if (ret) {
			*msg = "iodma_dev_register";
			return ret;
		}
		drv->area_registered = true;
	}
	for (unsigned int i = 0; i < drv->nslots; i++) {
		struct slot *s = &drv->slots[i];

		s->ctl = (struct vblk_ctl *)drv->area + i;
		s->data = drv->area + ctl_len + i * stride;
		s->desc = calloc(drv->max_desc, sizeof(*s->desc));
		if (!s->desc)
			return -ENOMEM;
		drv->free_slot[i] = drv->nslots - 1 - i;
	}
	drv->nfree_slot = drv->nslots;
	return 0;
}

int vblk_driver_open(const struct vblk_driver_opts *opts,
		     struct vblk_driver **out, const char **err_msg)
{
	struct vblk_driver *drv;
	const char *msg = "out of memory";
	int ret;

	*err_msg = "invalid driver options";
	if (!opts || !opts->dev || !opts->transport || opts->queue_size < 2 ||
	    opts->queue_size > 32768 ||
	    (opts->queue_size & (opts->queue_size - 1)) ||
	    opts->request_size < VIRTIO_BLK_SECTOR_SIZE ||
	    opts->request_size % VIRTIO_BLK_SECTOR_SIZE ||
	    opts->request_size > UINT32_MAX)
		return -EINVAL;
	drv = calloc(1, sizeof(*drv));
	if (!drv) {
		*err_msg = msg;
		return -ENOMEM;
	}
	drv->o = *opts;
	drv->dev = opts->dev;
	drv->t = opts->transport;
	/* NULL in direct mode (IOVA = physical, a bare-metal board): the
	 * driver runs, only the isolation checks need a domain. */
	drv->domain = iodma_dev_domain(opts->dev);
	ret = negotiate(drv, &msg);
	if (!ret)
		ret = setup_queue(drv, &msg);
	if (!ret)
		ret = setup_slots(drv, &msg);
	if (!ret)
		ret = set_status(drv, VIRTIO_STATUS_DRIVER_OK);
	if (ret) {
		*err_msg = msg;
		vblk_driver_close(drv);
		return ret;
	}
	*out = drv;
	return 0;
}

void vblk_driver_get_info(const struct vblk_driver *drv,
			  struct vblk_driver_info *info)
{
	*info = drv->stats;
	info->device_features = drv->dev_features;
	info->driver_features = drv->features;
	info->capacity = drv->capacity;
	info->size_max = drv->size_max;
	info->seg_max = drv->seg_max;
	info->blk_size = drv->blk_size;
	info->queue_size = drv->qsz;
	info->slots = drv->nslots;
}

/* ---- the virtqueue --------------------------------------------------------- */

/* Unmap whatever the slot has mapped (copying back bounced FROM_DEVICE
 * data).  Returns the first error. */
static int slot_unmap(struct vblk_driver *drv, struct slot *s)
{
	int ret = 0, r;

	if (s->ctl_mapped) {
		r = iodma_hal_unshare(drv->dev, s->status_iova, &s->ctl->status,
				      1, IODMA_FROM_DEVICE);
		ret = ret ? ret : r;
		r = iodma_hal_unshare(drv->dev, s->hdr_iova, &s->ctl->hdr,
				      sizeof(s->ctl->hdr), IODMA_TO_DEVICE);
		ret = ret ? ret : r;
		s->ctl_mapped = false;
	}
	if (s->data_mapped) {
		r = iodma_unmap_single(drv->dev, s->data_iova, s->data_mapped,
				       s->dir);
		ret = ret ? ret : r;
		s->data_mapped = 0;
	}
	return ret;
}

/* Fill the header and map header, status and (if @len) @data. */
static int slot_map(struct vblk_driver *drv, struct slot *s, uint32_t type,
		    uint64_t sector, void *data, size_t len, enum iodma_dir dir)
{
	int ret;

	s->ctl->hdr.type = htole32(type);
	s->ctl->hdr.reserved = 0;
	s->ctl->hdr.sector = htole64(sector);
	s->ctl->status = 0xff;
	ret = iodma_hal_share(drv->dev, &s->ctl->hdr, sizeof(s->ctl->hdr),
			      IODMA_TO_DEVICE, &s->hdr_iova);
	if (ret)
		return ret;
	ret = iodma_hal_share(drv->dev, &s->ctl->status, 1, IODMA_FROM_DEVICE,
			      &s->status_iova);
	if (ret) {
		iodma_hal_unshare(drv->dev, s->hdr_iova, &s->ctl->hdr,
				  sizeof(s->ctl->hdr), IODMA_TO_DEVICE);
		return ret;
	}
	s->ctl_mapped = true;
	s->dir = dir;
	if (len) {
		ret = iodma_map_single(drv->dev, data, len, dir, &s->data_iova);
		if (ret) {
			slot_unmap(drv, s);
			return ret;
		}
		s->data_mapped = len;
	}
	return 0;
}

/* Build the chain header -> @segs -> status and make it available.
 * The caller kicks. */
static int slot_post(struct vblk_driver *drv, struct slot *s,
		     const struct seg *segs, unsigned int nsegs)
{
	unsigned int n = nsegs + 2;
	uint16_t head;

	if (n > drv->max_desc || n > drv->nfree)
		return -ENOSPC;
	for (unsigned int i = 0; i < n; i++)
		s->desc[i] = drv->free_desc[--drv->nfree];
	s->ndesc = n;
	for (unsigned int i = 0; i < n; i++) {
		struct vring_desc *d = &drv->desc[s->desc[i]];
		uint64_t addr;
		uint32_t len;
		uint16_t flags = i + 1 < n ? VRING_DESC_F_NEXT : 0;

		if (i == 0) {
			addr = s->hdr_iova;
			len = sizeof(struct virtio_blk_outhdr);
		} else if (i == n - 1) {
			addr = s->status_iova;
			len = 1;
			flags |= VRING_DESC_F_WRITE;
		} else {
			addr = segs[i - 1].iova;
			len = segs[i - 1].len;
			if (segs[i - 1].write)
				flags |= VRING_DESC_F_WRITE;
		}
		d->addr = htole64(addr);
		d->len = htole32(len);
		d->flags = htole16(flags);
		d->next = htole16(i + 1 < n ? s->desc[i + 1] : 0);
	}
	head = s->desc[0];
	drv->head_slot[head] = (int)(s - drv->slots);
	s->posted = true;
	s->done = false;
	s->used_len = 0;

	*(uint16_t *)(drv->avail + VRING_AVAIL_RING_OFF(drv->avail_idx % drv->qsz)) =
		htole16(head);
	drv->avail_idx++;
	/* Release for a device: descriptors and ring entry before the index
	 * (2.7.13.3); the device may be real hardware (transport_pci.c), which
	 * a C11 release (ordering for CPUs only) does not cover on Arm. */
	iodma_store_release_u16(ring16(drv->avail, VRING_AVAIL_IDX_OFF),
				htole16(drv->avail_idx));
	return 0;
}

/* Split a mapped data buffer into descriptors of at most size_max. */
static unsigned int data_segs(const struct vblk_driver *drv, uint64_t iova,
			      size_t len, bool write, struct seg *segs)
{
	unsigned int n = 0;

	while (len) {
		size_t l = len < drv->size_max ? len : drv->size_max;

		segs[n++] = (struct seg){ iova, (uint32_t)l, write };
		iova += l;
		len -= l;
	}
	return n;
}

/* Notify the device of new buffers unless it asked not to be (2.7.13.4). */
static int kick(struct vblk_driver *drv)
{
	bool need;
	uint16_t old = drv->kicked_idx;

	if (drv->avail_idx == old)
		return 0;
	/* The avail idx store before the load of the suppression field
	 * (2.7.13.4): a store then a load, which only a full barrier orders;
	 * Linux's virtqueue_kick_prepare uses virtio_mb() here, mb() for a
	 * hardware device. */
	iodma_mb();
	if (drv->event_idx) {
		uint16_t ev = le16toh(*ring16(drv->used,
					      VRING_AVAIL_EVENT_OFF(drv->qsz)));

		need = vring_need_event(ev, drv->avail_idx, old);
	} else {
		need = !(le16toh(*ring16(drv->used, 0)) & VRING_USED_F_NO_NOTIFY);
	}
	drv->kicked_idx = drv->avail_idx;
	if (!need)
		return 0;
	drv->stats.kicks++;
	return drv->t->ops->notify(drv->t, 0);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Collect used buffers; with @wait, wait through the transport (an
 * interrupt, or polling) until at least one arrives.  Returns how many
 * completed, or -errno (-EIO: the device returned an id it was not given
 * or needs a reset; -ETIMEDOUT: nothing in WAIT_TIMEOUT_MS).
 */
static int reap(struct vblk_driver *drv, bool wait)
{
	int64_t deadline = 0;
	int n = 0;

	for (;;) {
		/* Acquire: the used index before the elements it covers and
		 * the data the device wrote (2.7.14; Linux: virtio_rmb()). */
		uint16_t idx = le16toh(iodma_load_acquire_u16(
			ring16(drv->used, VRING_USED_IDX_OFF)));

		if ((uint16_t)(idx - drv->last_used) > drv->qsz) {
			fprintf(stderr, "virtio-blk driver: used index jumped\n");
			return -EIO;
		}
		while (drv->last_used != idx) {
			const struct vring_used_elem *e = (const void *)(drv->used +
				VRING_USED_RING_OFF(drv->last_used % drv->qsz));
			uint32_t id = le32toh(e->id);
			struct slot *s;

			if (id >= drv->qsz || drv->head_slot[id] < 0) {
				fprintf(stderr, "virtio-blk driver: device returned unknown id %u\n",
					id);
				return -EIO;
			}
			s = &drv->slots[drv->head_slot[id]];
			drv->head_slot[id] = -1;
			for (unsigned int i = 0; i < s->ndesc; i++)
				drv->free_desc[drv->nfree++] = s->desc[i];
			s->ndesc = 0;
			s->posted = false;
			s->done = true;
			s->used_len = le32toh(e->len);
			drv->last_used++;
			drv->stats.requests++;
			n++;
		}
		if (n || !wait)
			return n;
		if (drv->event_idx) {
			/* Ask for an interrupt at the next completion, then
			 * look again before sleeping. */
			*ring16(drv->avail, VRING_USED_EVENT_OFF(drv->qsz)) =
				htole16(drv->last_used);
			/* used_event store before the used idx load: store
			 * then load, a full barrier (Linux: virtio_mb() in
			 * virtqueue_enable_cb_delayed). */
			iodma_mb();
			if (le16toh(iodma_load_acquire_u16(
				    ring16(drv->used, VRING_USED_IDX_OFF))) !=
			    drv->last_used)
				continue;
		}
		if (drv->t->ops->get_status(drv->t) & VIRTIO_STATUS_NEEDS_RESET) {
			fprintf(stderr, "virtio-blk driver: device needs reset\n");
			return -EIO;
		}
		int64_t left;
		int r;

		if (!deadline)
			deadline = now_ms() + WAIT_TIMEOUT_MS;
		left = deadline - now_ms();
		if (left <= 0) {
			fprintf(stderr, "virtio-blk driver: no completion in %d ms\n",
				WAIT_TIMEOUT_MS);
			return -ETIMEDOUT;
		}
		r = drv->t->ops->wait(drv->t, (int)left);
		if (r < 0)
			return r;
		if (r > 0)
			drv->stats.interrupts++;
	}
}

/* ---- bulk transfers ------------------------------------------------------ */

struct xfer {
	bool write;
	uint64_t sector;	/* of the next request */
	uint64_t left;		/* bytes not yet assigned to a request */
	vblk_source_fn src;
	vblk_sink_fn sink;
	void *arg;
};

/* Complete the oldest requests that are done, in issue order. */
static int retire(struct vblk_driver *drv, struct xfer *x)
{
	int ret = 0;

	while (drv->fifo_count) {
		unsigned int id = drv->fifo[drv->fifo_head];
		struct slot *s = &drv->slots[id];
		int r;

		if (!s->done)
			break;
		drv->fifo_head = (drv->fifo_head + 1) % drv->nslots;
		drv->fifo_count--;
		s->done = false;
		r = slot_unmap(drv, s);		/* copies back bounced data */
		if (r && !ret) {
			fprintf(stderr, "virtio-blk driver: unmap: %s\n",
				iodma_strerror(r));
			ret = r;
		}
		if (!ret && s->ctl->status != VIRTIO_BLK_S_OK) {
			fprintf(stderr, "virtio-blk driver: %s at sector %llu failed with status %u\n",
				x->write ? "write" : "read",
				(unsigned long long)s->sector, s->ctl->status);
			ret = -EIO;
		}
		if (!ret && !x->write) {
			if (s->used_len != s->len + 1) {
				fprintf(stderr, "virtio-blk driver: read at sector %llu: used len %u, expected %zu\n",
					(unsigned long long)s->sector,
					s->used_len, s->len + 1);
				ret = -EIO;
			} else {
				ret = x->sink(x->arg, s->data, s->payload);
			}
		}
		drv->free_slot[drv->nfree_slot++] = id;
	}
	return ret;
}

static int transfer(struct vblk_driver *drv, struct xfer *x)
{
	struct slot *pending = NULL;
	unsigned int pending_id = 0;
	struct seg *segs;
	int ret = 0;

	segs = calloc(drv->max_desc, sizeof(*segs));
	if (!segs)
		return -ENOMEM;
	while (!ret && (x->left || pending || drv->fifo_count)) {
		/* Fill the queue. */
		while (x->left || pending) {
			struct slot *s = pending;
			unsigned int id = pending_id;

			if (!s) {
				if (!drv->nfree_slot)
					break;
				id = drv->free_slot[--drv->nfree_slot];
				s = &drv->slots[id];
				s->payload = x->left < drv->o.request_size ?
					     x->left : drv->o.request_size;
				s->len = round_up(s->payload, VIRTIO_BLK_SECTOR_SIZE);
				s->sector = x->sector;
				x->sector += s->len / VIRTIO_BLK_SECTOR_SIZE;
				x->left -= s->payload;
				if (x->write) {
					ret = x->src(x->arg, s->data, s->payload);
					if (ret) {
						drv->free_slot[drv->nfree_slot++] = id;
						break;
					}
					memset((char *)s->data + s->payload, 0,
					       s->len - s->payload);
				}
			}
			ret = slot_map(drv, s, x->write ? VIRTIO_BLK_T_OUT
							: VIRTIO_BLK_T_IN,
				       s->sector, s->data, s->len,
				       x->write ? IODMA_TO_DEVICE
						: IODMA_FROM_DEVICE);
			if (ret == -ENOMEM && drv->fifo_count) {
				/* Bounce pool or IOVA space full: wait for
				 * completions to give some back. */
				pending = s;
				pending_id = id;
				ret = 0;
				break;
			}
			if (ret) {
				fprintf(stderr, "virtio-blk driver: mapping a request: %s\n",
					iodma_strerror(ret));
				drv->free_slot[drv->nfree_slot++] = id;
				break;
			}
			pending = NULL;
			ret = slot_post(drv, s, segs,
					data_segs(drv, s->data_iova, s->len,
						  !x->write, segs));
			if (ret) {
				slot_unmap(drv, s);
				drv->free_slot[drv->nfree_slot++] = id;
				break;
			}
			drv->fifo[(drv->fifo_head + drv->fifo_count) % drv->nslots] = id;
			drv->fifo_count++;
		}
		if (!ret)
			ret = kick(drv);
		if (ret || !drv->fifo_count)
			break;
		ret = reap(drv, true);
		if (ret >= 0)
			ret = retire(drv, x);
	}
	free(segs);
	if (pending)
		drv->free_slot[drv->nfree_slot++] = pending_id;
	/* On error, wait for what is still in flight so the buffers can be
	 * unmapped safely (close resets the device if it never answers). */
	while (ret && drv->fifo_count) {
		int r = reap(drv, true);

		if (r < 0)
			break;
		while (drv->fifo_count &&
		       drv->slots[drv->fifo[drv->fifo_head]].done) {
			unsigned int id = drv->fifo[drv->fifo_head];

			drv->fifo_head = (drv->fifo_head + 1) % drv->nslots;
			drv->fifo_count--;
			drv->slots[id].done = false;
			slot_unmap(drv, &drv->slots[id]);
			drv->free_slot[drv->nfree_slot++] = id;
		}
	}
	return ret;
}

int vblk_driver_write(struct vblk_driver *drv, uint64_t sector, uint64_t len,
		      vblk_source_fn src, void *arg)
{
	struct xfer x = { .write = true, .sector = sector, .left = len,
			  .src = src, .arg = arg };

	return transfer(drv, &x);
}

int vblk_driver_read(struct vblk_driver *drv, uint64_t sector, uint64_t len,
		     vblk_sink_fn sink, void *arg)
{
	struct xfer x = { .write = false, .sector = sector, .left = len,
			  .sink = sink, .arg = arg };

	return transfer(drv, &x);
}

/* ---- one request at a time, for the checks -------------------------------- */

struct result {
	uint8_t status;
	uint32_t used_len;
};

/*
 * Submit one request with optional driver-mapped @data (mapped here with
 * @dir, posted as device-writable for FROM_DEVICE) followed by @raw
 * descriptors exactly as given, and wait for it.
 */
static int one_request(struct vblk_driver *drv, uint32_t type, uint64_t sector,
		       void *data, size_t len, enum iodma_dir dir,
		       const struct seg *raw, unsigned int nraw,
		       struct result *res)
{
	struct seg segs[16];
	unsigned int n = 0, id;
	struct slot *s;
	int ret;

	if (drv->fifo_count || !drv->nfree_slot)
		return -EBUSY;
	id = drv->free_slot[drv->nfree_slot - 1];
	s = &drv->slots[id];
	ret = slot_map(drv, s, type, sector, data, len, dir);
	if (ret)
		return ret;
	if (len) {
		if ((len + drv->size_max - 1) / drv->size_max > 8) {
			slot_unmap(drv, s);
			return -EINVAL;
		}
		n = data_segs(drv, s->data_iova, len, dir != IODMA_TO_DEVICE,
			      segs);
	}
	for (unsigned int i = 0; i < nraw && n < 16; i++)
		segs[n++] = raw[i];
	ret = slot_post(drv, s, segs, n);
	if (!ret)
		ret = kick(drv);
	while (!ret && !s->done) {
		ret = reap(drv, true);
		if (ret > 0)
			ret = 0;
	}
	s->done = false;
	if (ret) {
		/* Leave the buffers mapped: the device may still use them. */
		return ret;
	}
	ret = slot_unmap(drv, s);
	res->status = s->ctl->status;
	res->used_len = s->used_len;
	return ret;
}

/* ---- protocol and isolation checks ---------------------------------------- */

#define CANARY_LEN	(16u * 1024u)
#define CANARY_BYTE	0xa5u

struct checks {
	struct vblk_driver *drv;
	bool quiet;
	int failed;
	int run;
};

static const char *status_name(uint8_t st)
{
	switch (st) {
	case VIRTIO_BLK_S_OK:		return "OK";
	case VIRTIO_BLK_S_IOERR:	return "IOERR";
	case VIRTIO_BLK_S_UNSUPP:	return "UNSUPP";
	default:			return "?";
	}
}

static const char *reason_name(uint32_t r)
{
	switch (r) {
	case IODMA_FAULT_NOT_MAPPED:	return "not mapped";
	case IODMA_FAULT_PERMISSION:	return "permission";
	case IODMA_FAULT_NO_HOST:	return "no host memory";
	default:			return "none";
	}
}

static void report(struct checks *c, bool ok, const char *what,
		   const char *detail)
{
	c->run++;
	if (!ok)
		c->failed++;
	if (!c->quiet || !ok)
		printf("  [%s] %s%s%s\n", ok ? " ok " : "FAIL", what,
		       detail[0] ? ": " : "", detail);
}

static void drain_faults(struct vblk_driver *drv)
{
	struct iodma_fault f[16];

	while (iodma_fault_pop(drv->domain, f, 16) == 16)
		;
}

/* Pop the recorded faults and look for one at @iova with @perm/@reason;
 * describe it in @buf. */
static bool expect_fault(struct vblk_driver *drv, uint64_t iova, uint32_t perm,
			 uint32_t reason, char *buf, size_t len)
{
	struct iodma_fault f[16];
	size_t n = iodma_fault_pop(drv->domain, f, 16);

	for (size_t i = 0; i < n; i++) {
		if (iova >= f[i].iova && iova - f[i].iova < f[i].len &&
		    (f[i].perm & perm) && f[i].reason == reason) {
			snprintf(buf, len, "fault iova 0x%llx len %llu perm %s%s reason %s",
				 (unsigned long long)f[i].iova,
				 (unsigned long long)f[i].len,
				 f[i].perm & IODMA_PERM_READ ? "R" : "",
				 f[i].perm & IODMA_PERM_WRITE ? "W" : "",
				 reason_name(f[i].reason));
			return true;
		}
	}
	snprintf(buf, len, "%zu fault record(s), none at iova 0x%llx with reason %s",
		 n, (unsigned long long)iova, reason_name(reason));
	return false;
}

static bool canary_intact(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != CANARY_BYTE)
			return false;
	return true;
}

/*
 * A T_IN (device writes @len bytes) or T_OUT (device reads) whose data
 * descriptor points at @iova, which must fail: status IOERR and a fault
 * recorded at @iova with @reason.  @canary, if given, must be untouched.
 */
static void bad_dma(struct checks *c, const char *what, bool device_writes,
		    uint64_t sector, uint64_t iova, uint32_t len,
		    uint32_t reason, const uint8_t *canary)
{
	struct vblk_driver *drv = c->drv;
	struct seg sg = { iova, len, device_writes };
	struct result r = { 0xff, 0 };
	char fault[160], detail[320];
	bool ok, faulted = false, intact = true;
	int ret;

	drain_faults(drv);
	ret = one_request(drv, device_writes ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT,
			  sector, NULL, 0, IODMA_TO_DEVICE, &sg, 1, &r);
	if (ret) {
		snprintf(detail, sizeof(detail), "request failed: %s",
			 iodma_strerror(ret));
		report(c, false, what, detail);
		return;
	}
	faulted = expect_fault(drv, iova, device_writes ? IODMA_PERM_WRITE
							: IODMA_PERM_READ,
			       reason, fault, sizeof(fault));
	if (canary)
		intact = canary_intact(canary, len);
	ok = r.status == VIRTIO_BLK_S_IOERR && faulted && intact;
	snprintf(detail, sizeof(detail), "status %s, %s%s", status_name(r.status),
		 fault, canary ? (intact ? "; canary intact" : "; CANARY CHANGED")
			       : "");
	report(c, ok, what, detail);
}

/* Fill the scratch sectors with a pattern (T_OUT) / compare them (T_IN). */
static int scratch_io(struct vblk_driver *drv, uint64_t sector, bool write,
		      bool *same)
{
	struct slot *s = &drv->slots[drv->free_slot[drv->nfree_slot - 1]];
	uint8_t *buf = s->data;
	struct result r;
	size_t len = 8 * VIRTIO_BLK_SECTOR_SIZE;
	int ret;

	if (len > drv->o.request_size)
		len = drv->o.request_size;
	if (write)
		for (size_t i = 0; i < len; i++)
			buf[i] = (uint8_t)(i * 7 + 3);
	else
		memset(buf, 0, len);
	ret = one_request(drv, write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN,
			  sector, buf, len,
			  write ? IODMA_TO_DEVICE : IODMA_FROM_DEVICE, NULL, 0, &r);
	if (ret)
		return ret;
	if (r.status != VIRTIO_BLK_S_OK)
		return -EIO;
	if (!write) {
		*same = true;
		for (size_t i = 0; i < len; i++)
			if (buf[i] != (uint8_t)(i * 7 + 3))
				*same = false;
	}
	return 0;
}

static void simple_check(struct checks *c, const char *what, uint32_t type,
			 uint64_t sector, size_t len, enum iodma_dir dir,
			 uint8_t want)
{
	struct vblk_driver *drv = c->drv;
	struct slot *s = &drv->slots[drv->free_slot[drv->nfree_slot - 1]];
	struct result r = { 0xff, 0 };
	char detail[160];
	int ret;

	memset(s->data, 0, len ? len : 1);
	ret = one_request(drv, type, sector, s->data, len, dir, NULL, 0, &r);
	if (ret) {
		snprintf(detail, sizeof(detail), "request failed: %s",
			 iodma_strerror(ret));
		report(c, false, what, detail);
		return;
	}
	if (type == VIRTIO_BLK_T_GET_ID && r.status == VIRTIO_BLK_S_OK) {
		char id[VIRTIO_BLK_ID_BYTES + 1] = { 0 };

		memcpy(id, s->data, VIRTIO_BLK_ID_BYTES);
		snprintf(detail, sizeof(detail), "status %s, id \"%s\", used len %u",
			 status_name(r.status), id, r.used_len);
		report(c, id[0] != 0 && r.used_len == VIRTIO_BLK_ID_BYTES + 1,
		       what, detail);
		return;
	}
	snprintf(detail, sizeof(detail), "status %s (want %s)",
		 status_name(r.status), status_name(want));
	report(c, r.status == want, what, detail);
}

static uint8_t *canary_alloc(size_t align)
{
	uint8_t *p = aligned_alloc(align, CANARY_LEN);

	if (p)
		memset(p, CANARY_BYTE, CANARY_LEN);
	return p;
}

int vblk_driver_checks(struct vblk_driver *drv, uint64_t scratch, bool quiet)
{
	struct checks c = { .drv = drv, .quiet = quiet };
	size_t align = (size_t)iodma_domain_alignment(drv->domain);
	struct iodma_dev_stats before = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	struct iodma_dev_stats after = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	uint8_t *canary = NULL, *canary2 = NULL;
	uint64_t hole = 0, iova = 0;
	char detail[320];
	bool same = false;
	int ret;

	if (!drv->domain) {
		fprintf(stderr, "checks need a device behind an IOMMU domain\n");
		return -EINVAL;
	}
	if (!quiet)
		printf("checks (protocol, then isolation):\n");
	if (drv->o.request_size < 4096) {
		fprintf(stderr, "checks need a request size of at least 4096\n");
		return -EINVAL;
	}
	canary = canary_alloc(align);
	canary2 = canary_alloc(align);
	if (!canary || !canary2) {
		ret = -ENOMEM;
		goto out;
	}

	/* Protocol. */
	simple_check(&c, "T_GET_ID", VIRTIO_BLK_T_GET_ID, 0,
		     VIRTIO_BLK_ID_BYTES, IODMA_FROM_DEVICE, VIRTIO_BLK_S_OK);
	simple_check(&c, "T_FLUSH", VIRTIO_BLK_T_FLUSH, 0, 0,
		     IODMA_TO_DEVICE, VIRTIO_BLK_S_OK);
	simple_check(&c, "unsupported request type 99 -> S_UNSUPP", 99, 0, 0,
		     IODMA_TO_DEVICE, VIRTIO_BLK_S_UNSUPP);
	simple_check(&c, "T_IN at sector == capacity -> S_IOERR",
		     VIRTIO_BLK_T_IN, drv->capacity, 4096, IODMA_FROM_DEVICE,
		     VIRTIO_BLK_S_IOERR);
	simple_check(&c, "T_OUT across the end of the disk -> S_IOERR",
		     VIRTIO_BLK_T_OUT, drv->capacity - 1, 4096, IODMA_TO_DEVICE,
		     VIRTIO_BLK_S_IOERR);
	simple_check(&c, "T_IN at sector 2^64-1 (overflow) -> S_IOERR",
		     VIRTIO_BLK_T_IN, UINT64_MAX, 4096, IODMA_FROM_DEVICE,
		     VIRTIO_BLK_S_IOERR);

	/* The scratch region: its contents must survive every check below. */
	ret = scratch_io(drv, scratch, true, NULL);
	if (ret) {
		fprintf(stderr, "checks: writing the scratch region: %s\n",
			iodma_strerror(ret));
		goto out;
	}

	/* IOVA space that is never mapped: reserved from the allocator so
	 * nothing else lands there while the checks run. */
	ret = iodma_iova_alloc(drv->domain, CANARY_LEN, align, UINT64_MAX, &hole);
	if (ret) {
		fprintf(stderr, "checks: iodma_iova_alloc: %s\n", iodma_strerror(ret));
		goto out;
	}
	ret = iodma_iova_alloc(drv->domain, CANARY_LEN, align, UINT64_MAX, &iova);
	if (ret) {
		fprintf(stderr, "checks: iodma_iova_alloc: %s\n", iodma_strerror(ret));
		iodma_iova_free(drv->domain, hole, CANARY_LEN);
		goto out;
	}

	bad_dma(&c, "T_IN into a never-mapped IOVA", true, scratch, hole,
		4096, IODMA_FAULT_NOT_MAPPED, NULL);
	bad_dma(&c, "T_OUT from a never-mapped IOVA", false, scratch, hole,
		4096, IODMA_FAULT_NOT_MAPPED, NULL);

	/* Stale IOVA: map the canary, unmap it, use the old address. */
	ret = iodma_domain_map(drv->domain, iova, CANARY_LEN, canary,
			       IODMA_PERM_RW);
	if (!ret)
		ret = iodma_domain_unmap(drv->domain, iova, CANARY_LEN);
	if (ret) {
		snprintf(detail, sizeof(detail), "map/unmap: %s", iodma_strerror(ret));
		report(&c, false, "T_IN into a stale (unmapped) IOVA", detail);
	} else {
		bad_dma(&c, "T_IN into a stale (unmapped) IOVA", true, scratch,
			iova, CANARY_LEN, IODMA_FAULT_NOT_MAPPED, canary);
	}

	/* Read-only mapping used for a device write. */
	ret = iodma_domain_map(drv->domain, iova, CANARY_LEN, canary,
			       IODMA_PERM_READ);
	if (ret) {
		snprintf(detail, sizeof(detail), "map: %s", iodma_strerror(ret));
		report(&c, false, "T_IN into a read-only mapping", detail);
	} else {
		bad_dma(&c, "T_IN into a read-only mapping", true, scratch,
			iova, 4096, IODMA_FAULT_PERMISSION, canary);
		iodma_domain_unmap(drv->domain, iova, CANARY_LEN);
	}

	/* A chain whose first data buffer is fine and second is not: the
	 * device must not have written the first one either. */
	ret = iodma_domain_map(drv->domain, iova, CANARY_LEN, canary2,
			       IODMA_PERM_RW);
	if (ret) {
		snprintf(detail, sizeof(detail), "map: %s", iodma_strerror(ret));
		report(&c, false, "T_IN, valid + never-mapped buffers", detail);
	} else {
		struct seg sg[2] = { { iova, 4096, true }, { hole, 4096, true } };
		struct result r = { 0xff, 0 };
		char fault[160];
		bool faulted;

		drain_faults(drv);
		ret = one_request(drv, VIRTIO_BLK_T_IN, scratch, NULL, 0,
				  IODMA_TO_DEVICE, sg, 2, &r);
		faulted = !ret && expect_fault(drv, hole, IODMA_PERM_WRITE,
					       IODMA_FAULT_NOT_MAPPED, fault,
					       sizeof(fault));
		snprintf(detail, sizeof(detail), "status %s, %s, valid buffer %s",
			 status_name(r.status), faulted ? fault : "no fault",
			 canary_intact(canary2, 4096) ? "untouched" : "WRITTEN");
		report(&c, !ret && r.status == VIRTIO_BLK_S_IOERR && faulted &&
		       canary_intact(canary2, 4096),
		       "T_IN, valid + never-mapped buffers (all or nothing)",
		       detail);
		iodma_domain_unmap(drv->domain, iova, CANARY_LEN);
	}
	iodma_iova_free(drv->domain, iova, CANARY_LEN);

	/* The same through the streaming DMA API.  A bounced map hands the
	 * device a bounce-pool IOVA that stays mapped after unmap: the
	 * request may then succeed, but it lands in the pool, never in the
	 * buffer (what a confidential VM relies on). */
	iodma_dev_get_stats(drv->dev, &before);
	ret = iodma_map_single(drv->dev, canary, CANARY_LEN,
			       IODMA_BIDIRECTIONAL, &iova);
	iodma_dev_get_stats(drv->dev, &after);
	if (!ret)
		ret = iodma_unmap_single(drv->dev, iova, CANARY_LEN,
					 IODMA_BIDIRECTIONAL);
	if (ret) {
		snprintf(detail, sizeof(detail), "map_single/unmap_single: %s",
			 iodma_strerror(ret));
		report(&c, false, "T_IN into a stale streaming-map IOVA", detail);
	} else if (after.bounces == before.bounces) {
		bad_dma(&c, "T_IN into a stale streaming-map IOVA", true,
			scratch, iova, 4096, IODMA_FAULT_NOT_MAPPED, canary);
	} else {
		struct seg sg = { iova, 4096, true };
		struct result r = { 0xff, 0 };

		ret = one_request(drv, VIRTIO_BLK_T_IN, scratch, NULL, 0,
				  IODMA_TO_DEVICE, &sg, 1, &r);
		snprintf(detail, sizeof(detail), "bounced map: status %s, canary %s",
			 status_name(r.status),
			 canary_intact(canary, CANARY_LEN) ? "intact" : "CHANGED");
		report(&c, !ret && canary_intact(canary, CANARY_LEN),
		       "T_IN into a stale streaming-map IOVA", detail);
		drain_faults(drv);
	}

	/* A TO_DEVICE streaming map is read-only for the device. */
	iodma_dev_get_stats(drv->dev, &before);
	ret = iodma_map_single(drv->dev, canary, CANARY_LEN, IODMA_TO_DEVICE,
			       &iova);
	iodma_dev_get_stats(drv->dev, &after);
	if (ret) {
		snprintf(detail, sizeof(detail), "map_single: %s", iodma_strerror(ret));
		report(&c, false, "T_IN into a TO_DEVICE streaming map", detail);
	} else if (after.bounces == before.bounces) {
		bad_dma(&c, "T_IN into a TO_DEVICE streaming map", true,
			scratch, iova, 4096, IODMA_FAULT_PERMISSION, canary);
		iodma_unmap_single(drv->dev, iova, CANARY_LEN, IODMA_TO_DEVICE);
	} else {
		struct seg sg = { iova, 4096, true };
		struct result r = { 0xff, 0 };

		drain_faults(drv);
		ret = one_request(drv, VIRTIO_BLK_T_IN, scratch, NULL, 0,
				  IODMA_TO_DEVICE, &sg, 1, &r);
		iodma_unmap_single(drv->dev, iova, CANARY_LEN, IODMA_TO_DEVICE);
		snprintf(detail, sizeof(detail), "bounced map: status %s, canary %s",
			 status_name(r.status),
			 canary_intact(canary, CANARY_LEN) ? "intact" : "CHANGED");
		report(&c, !ret && canary_intact(canary, CANARY_LEN),
		       "T_IN into a TO_DEVICE streaming map", detail);
		drain_faults(drv);
	}

	/* And the disk region every failed T_IN/T_OUT pointed at. */
	ret = scratch_io(drv, scratch, false, &same);
	snprintf(detail, sizeof(detail), "%s", ret ? iodma_strerror(ret) :
		 same ? "unchanged" : "CHANGED");
	report(&c, !ret && same, "disk region of the failed requests", detail);
	ret = 0;
out:
	free(canary);
	free(canary2);
	if (ret)
		return ret;
	if (!quiet || c.failed)
		printf("checks: %d run, %d failed\n", c.run, c.failed);
	return c.failed;
}

/* ---- teardown ---------------------------------------------------------------- */

void vblk_driver_close(struct vblk_driver *drv)
{
	if (!drv)
		return;
	/* Reset first: once the write returns, the device no longer touches
	 * the rings or the buffers, and they can be unmapped. */
	if (drv->dev_started && drv->t->ops->set_status(drv->t, 0))
		fprintf(stderr, "virtio-blk driver: device did not acknowledge reset\n");
	for (unsigned int i = 0; drv->slots && i < drv->nslots; i++) {
		slot_unmap(drv, &drv->slots[i]);
		free(drv->slots[i].desc);
	}
	if (drv->area_registered)
		iodma_dev_unregister(drv->dev, drv->area, drv->area_len);
	if (drv->area)
		munmap(drv->area, drv->area_len);
	if (drv->avail)
		iodma_hal_dma_dealloc(drv->dev, drv->avail_iova, drv->avail,
				      drv->ring_pages);
	if (drv->desc)
		iodma_free_coherent(drv->dev, drv->desc_len, drv->desc, drv->desc_iova);
	free(drv->free_desc);
	free(drv->head_slot);
	free(drv->slots);
	free(drv->free_slot);
	free(drv->fifo);
	free(drv);
}
