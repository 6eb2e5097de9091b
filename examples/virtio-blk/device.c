// SPDX-License-Identifier: MIT
/*
 * device.c - the virtio-blk device model.
 *
 * Everything the device learns about the driver's memory comes through
 * iodma: ring fields are translated one element at a time (a descriptor,
 * a ring entry and an index never cross a page, so each is one slice and
 * one page-table walk), and request buffers are translated
 * into iovecs for preadv/pwritev.  All host pointers obtained from a
 * translation are used inside an access section, so an unmap by the driver
 * waits for the request in progress and the device cannot touch memory after
 * it was unmapped.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <endian.h>
#include <unistd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/uio.h>

#include <iodma.h>
#include <iodma/barrier.h>

#include "device.h"
#include "mmio_window.h"
#include "virtio_ring.h"

#define VBLK_ID_STRING "iodma-virtio-blk"

/* A growable iovec array: the translated slices of one direction. */
struct iovbuf {
	struct iovec *v;
	size_t n;
	size_t cap;
	uint64_t bytes;
};

struct vblk_device {
	struct vblk_device_opts o;
	void *mmio;			/* the register page */
	uint64_t features;		/* offered */
	pthread_t thread;
	bool running;
	atomic_bool stop;
	atomic_bool dump;		/* print the ring state (request_dump) */
	/* The last available indexes read, with last_avail then: printed
	 * by dump_ring() (a ring's history when it breaks). */
	struct { uint16_t idx, last_avail; } hist[8];
	unsigned int nhist;
	void (*thread_init)(void *arg);	/* ring_start's, run by the thread */
	void *thread_arg;

	/* Transport state: touched by the device thread only. */
	uint32_t dev_features_sel;
	uint32_t drv_features_sel;
	uint64_t driver_features;
	uint32_t queue_sel;
	uint32_t queue_num;
	uint64_t desc_iova, avail_iova, used_iova;
	bool queue_ready;
	bool event_idx;			/* negotiated */
	bool flush;			/* negotiated */
	bool broken;			/* NEEDS_RESET set */
	uint16_t last_avail;		/* next avail entry to consume */
	uint16_t used_idx;		/* shadow of used->idx */
	uint16_t signalled_used;	/* used idx at the last notify check */
	bool signalled_valid;		/* signalled_used is this device's own:
					 * false on a ring handed over, whose
					 * previous owner's last interrupt may
					 * have been lost with it (Linux vhost:
					 * signalled_used_valid) */
	bool sync_used;			/* take used_idx from used->idx at the
					 * next pass (a ring handed over) */

	struct vring_desc *chain;	/* the chain being served, as read once */
	struct iovbuf rd, wr;		/* per-request scratch */
	struct vblk_device_stats st;
};

uint64_t vblk_device_features(const struct vblk_device_opts *o)
{
	uint64_t f = VIRTIO_BIT(VIRTIO_F_VERSION_1) |
		     VIRTIO_BIT(VIRTIO_F_ACCESS_PLATFORM) |
		     VIRTIO_BIT(VIRTIO_BLK_F_SIZE_MAX) |
		     VIRTIO_BIT(VIRTIO_BLK_F_SEG_MAX) |
		     VIRTIO_BIT(VIRTIO_BLK_F_BLK_SIZE) |
		     VIRTIO_BIT(VIRTIO_BLK_F_FLUSH);

	if (o->event_idx)
		f |= VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX);
	return f;
}

/* Put the register page in its reset state (4.2.2: all zero but the
 * identification registers, the feature window and the config space). */
static void regs_reset(struct vblk_device *vd)
{
	uint32_t gen = mmio_read32(vd->mmio, VIRTIO_MMIO_CONFIG_GENERATION);

	for (uint32_t off = VIRTIO_MMIO_DEVICE_FEATURES;
	     off < VIRTIO_MMIO_CONFIG_GENERATION; off += 4)
		mmio_set32(vd->mmio, off, 0);
	mmio_set32(vd->mmio, VIRTIO_MMIO_MAGIC_VALUE, VIRTIO_MMIO_MAGIC);
	mmio_set32(vd->mmio, VIRTIO_MMIO_VERSION, 2);
	mmio_set32(vd->mmio, VIRTIO_MMIO_DEVICE_ID, VIRTIO_ID_BLOCK);
	mmio_set32(vd->mmio, VIRTIO_MMIO_VENDOR_ID, 0x414d4449); /* "IDMA" */
	mmio_set32(vd->mmio, VIRTIO_MMIO_DEVICE_FEATURES,
		   (uint32_t)vd->features);
	mmio_set32(vd->mmio, VIRTIO_MMIO_QUEUE_NUM_MAX, vd->o.queue_num_max);

	/* Config space: written once; bump the generation around it. */
	mmio_set32(vd->mmio, VIRTIO_MMIO_CONFIG_GENERATION, gen + 1);
	mmio_set32(vd->mmio, VIRTIO_MMIO_CONFIG + VIRTIO_BLK_CFG_CAPACITY,
		   htole32((uint32_t)vd->o.capacity));
	mmio_set32(vd->mmio, VIRTIO_MMIO_CONFIG + VIRTIO_BLK_CFG_CAPACITY + 4,
		   htole32((uint32_t)(vd->o.capacity >> 32)));
	mmio_set32(vd->mmio, VIRTIO_MMIO_CONFIG + VIRTIO_BLK_CFG_SIZE_MAX,
		   htole32(vd->o.size_max));
	mmio_set32(vd->mmio, VIRTIO_MMIO_CONFIG + VIRTIO_BLK_CFG_SEG_MAX,
		   htole32(vd->o.seg_max));
	mmio_set32(vd->mmio, VIRTIO_MMIO_CONFIG + VIRTIO_BLK_CFG_BLK_SIZE,
		   htole32(VIRTIO_BLK_SECTOR_SIZE));

	vd->dev_features_sel = 0;
	vd->drv_features_sel = 0;
	vd->driver_features = 0;
	vd->queue_sel = 0;
	vd->queue_num = 0;
	vd->desc_iova = vd->avail_iova = vd->used_iova = 0;
	vd->queue_ready = false;
	vd->event_idx = false;
	vd->flush = false;
	vd->broken = false;
	vd->last_avail = 0;
	vd->used_idx = 0;
	vd->signalled_used = 0;
	vd->signalled_valid = true;	/* a new ring: nothing signalled yet */
}

int vblk_device_create(const struct vblk_device_opts *opts,
		       struct vblk_device **out)
{
	struct vblk_device *vd;

	if (!opts || !opts->domain || opts->disk_fd < 0 ||
	    opts->doorbell_fd < -1 || opts->irq_fd < -1 ||
	    opts->queue_num_max == 0 || opts->queue_num_max > 32768 ||
	    opts->size_max < VIRTIO_BLK_SECTOR_SIZE || opts->seg_max == 0)
		return -EINVAL;
	vd = calloc(1, sizeof(*vd));
	if (!vd)
		return -ENOMEM;
	vd->mmio = mmap(NULL, VBLK_MMIO_SIZE, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (vd->mmio == MAP_FAILED) {
		free(vd);
		return -ENOMEM;
	}
	vd->chain = calloc(opts->queue_num_max, sizeof(*vd->chain));
	if (!vd->chain) {
		munmap(vd->mmio, VBLK_MMIO_SIZE);
		free(vd);
		return -ENOMEM;
	}
	vd->o = *opts;
	vd->features = vblk_device_features(opts);
	atomic_init(&vd->stop, false);
	regs_reset(vd);
	*out = vd;
	return 0;
}

void *vblk_device_mmio(struct vblk_device *vd)
{
	return vd->mmio;
}

void vblk_device_get_stats(const struct vblk_device *vd,
			   struct vblk_device_stats *st)
{
	*st = vd->st;
}

void vblk_device_destroy(struct vblk_device *vd)
{
	if (!vd)
		return;
	if (vd->running)
		vblk_device_stop(vd);
	munmap(vd->mmio, VBLK_MMIO_SIZE);
	free(vd->chain);
	free(vd->rd.v);
	free(vd->wr.v);
	free(vd);
}

/* ---- notifications ------------------------------------------------------ */

static void raise_irq(struct vblk_device *vd, uint32_t why)
{
	atomic_fetch_or_explicit(mmio_reg(vd->mmio, VIRTIO_MMIO_INTERRUPT_STATUS),
				 why, memory_order_release);
	if (eventfd_write(vd->o.irq_fd, 1) == 0)
		vd->st.interrupts++;
}

/* Something is wrong with the rings themselves: stop using them and tell
 * the driver (2.1.2: DEVICE_NEEDS_RESET, config change interrupt). */
static void dump_ring(struct vblk_device *vd);

static void set_broken(struct vblk_device *vd, const char *why)
{
	uint32_t status = mmio_read32(vd->mmio, VIRTIO_MMIO_STATUS);

	fprintf(stderr, "virtio-blk device: %s: device needs reset\n", why);
	if (vd->queue_num)
		dump_ring(vd);
	vd->broken = true;
	mmio_set32(vd->mmio, VIRTIO_MMIO_STATUS,
		   status | VIRTIO_STATUS_NEEDS_RESET);
	raise_irq(vd, 2);
}

/* ---- register writes (the trapped MMIO) --------------------------------- */

static uint64_t reg_pair(struct vblk_device *vd, uint32_t lo_off)
{
	return (uint64_t)mmio_read32(vd->mmio, lo_off) |
	       (uint64_t)mmio_read32(vd->mmio, lo_off + 4) << 32;
}

static void queue_enable(struct vblk_device *vd)
{
	vd->desc_iova = reg_pair(vd, VIRTIO_MMIO_QUEUE_DESC_LOW);
	vd->avail_iova = reg_pair(vd, VIRTIO_MMIO_QUEUE_DRIVER_LOW);
	vd->used_iova = reg_pair(vd, VIRTIO_MMIO_QUEUE_DEVICE_LOW);
	vd->queue_num = mmio_read32(vd->mmio, VIRTIO_MMIO_QUEUE_NUM);
	if (vd->queue_num == 0 || vd->queue_num > vd->o.queue_num_max ||
	    vd->desc_iova % VRING_DESC_ALIGN ||
	    vd->avail_iova % VRING_AVAIL_ALIGN ||
	    vd->used_iova % VRING_USED_ALIGN) {
		set_broken(vd, "bad queue configuration");
		return;
	}
	vd->queue_ready = true;
	vd->last_avail = 0;
	vd->used_idx = 0;
	vd->signalled_used = 0;
	vd->signalled_valid = true;	/* a new ring: nothing signalled yet */
	mmio_set32(vd->mmio, VIRTIO_MMIO_QUEUE_READY, 1);
}

static void write_status(struct vblk_device *vd, uint32_t val)
{
	uint32_t old = mmio_read32(vd->mmio, VIRTIO_MMIO_STATUS);
	uint64_t need = VIRTIO_BIT(VIRTIO_F_VERSION_1) |
			VIRTIO_BIT(VIRTIO_F_ACCESS_PLATFORM);

	if (val == 0) {
		regs_reset(vd);
		return;
	}
	if ((val & VIRTIO_STATUS_FEATURES_OK) &&
	    !(old & VIRTIO_STATUS_FEATURES_OK)) {
		/* Accept only a subset of what was offered, with the two
		 * bits this device cannot work without: it is a modern
		 * device and its DMA always goes through the IOMMU. */
		if ((vd->driver_features & ~vd->features) ||
		    (vd->driver_features & need) != need) {
			val &= ~VIRTIO_STATUS_FEATURES_OK;
		} else {
			vd->event_idx = vd->driver_features &
					VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX);
			vd->flush = vd->driver_features &
				    VIRTIO_BIT(VIRTIO_BLK_F_FLUSH);
		}
	}
	if ((old & VIRTIO_STATUS_FEATURES_OK) && !vd->broken)
		val |= old & VIRTIO_STATUS_FEATURES_OK;
	mmio_set32(vd->mmio, VIRTIO_MMIO_STATUS, val | (old & VIRTIO_STATUS_NEEDS_RESET));
}

static void handle_reg_write(struct vblk_device *vd, uint32_t off, uint32_t val)
{
	uint32_t status = mmio_read32(vd->mmio, VIRTIO_MMIO_STATUS);

	switch (off) {
	case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
		vd->dev_features_sel = val;
		mmio_set32(vd->mmio, off, val);
		mmio_set32(vd->mmio, VIRTIO_MMIO_DEVICE_FEATURES,
			   val < 2 ? (uint32_t)(vd->features >> (32 * val)) : 0);
		break;
	case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
		vd->drv_features_sel = val;
		mmio_set32(vd->mmio, off, val);
		break;
	case VIRTIO_MMIO_DRIVER_FEATURES:
		/* Features are frozen once FEATURES_OK is set. */
		if (vd->drv_features_sel < 2 &&
		    !(status & VIRTIO_STATUS_FEATURES_OK)) {
			unsigned int sh = 32 * vd->drv_features_sel;

			vd->driver_features &= ~((uint64_t)UINT32_MAX << sh);
			vd->driver_features |= (uint64_t)val << sh;
		}
		mmio_set32(vd->mmio, off, val);
		break;
	case VIRTIO_MMIO_QUEUE_SEL:
		/* One queue: every other selector reads QueueNumMax 0. */
		vd->queue_sel = val;
		mmio_set32(vd->mmio, off, val);
		mmio_set32(vd->mmio, VIRTIO_MMIO_QUEUE_NUM_MAX,
			   val == 0 ? vd->o.queue_num_max : 0);
		mmio_set32(vd->mmio, VIRTIO_MMIO_QUEUE_READY,
			   val == 0 && vd->queue_ready);
		break;
	case VIRTIO_MMIO_QUEUE_NUM:
	case VIRTIO_MMIO_QUEUE_DESC_LOW:
	case VIRTIO_MMIO_QUEUE_DESC_HIGH:
	case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
	case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
	case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
	case VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
		if (vd->queue_sel == 0 && !vd->queue_ready)
			mmio_set32(vd->mmio, off, val);
		break;
	case VIRTIO_MMIO_QUEUE_READY:
		if (vd->queue_sel == 0 && val == 1 && !vd->queue_ready)
			queue_enable(vd);
		break;
	case VIRTIO_MMIO_INTERRUPT_ACK:
		atomic_fetch_and_explicit(mmio_reg(vd->mmio,
						   VIRTIO_MMIO_INTERRUPT_STATUS),
					  ~val, memory_order_release);
		break;
	case VIRTIO_MMIO_STATUS:
		write_status(vd, val);
		break;
	default:
		break;	/* read-only or unknown: ignored, as hardware does */
	}
}

/* Handle a pending trapped write, if any. */
static void handle_trap(struct vblk_device *vd)
{
	uint32_t seq = mmio_read32(vd->mmio, VBLK_TRAP_OFF_SEQ);

	if (seq == mmio_read32(vd->mmio, VBLK_TRAP_OFF_ACK))
		return;
	handle_reg_write(vd, mmio_read32(vd->mmio, VBLK_TRAP_OFF_OFFSET),
			 mmio_read32(vd->mmio, VBLK_TRAP_OFF_VALUE));
	mmio_set32(vd->mmio, VBLK_TRAP_OFF_ACK, seq);
}

/* ---- ring access through iodma ------------------------------------------ */

/*
 * The host address of one ring element of @len bytes at @iova, with the
 * permission the access needs; NULL when it does not translate (the fault
 * is recorded by iodma).  Call inside an access section.
 */
static void *ring_ptr(struct vblk_device *vd, uint64_t iova, uint64_t len,
		      uint32_t perm)
{
	struct iodma_slice s;
	size_t nr = 0;

	if (iodma_translate(vd->o.domain, iova, len, perm, &s, 1, &nr, NULL) ||
	    nr != 1 || s.len != len)
		return NULL;
	vd->st.translations++;
	return s.va;
}

static int avail_idx(struct vblk_device *vd, uint16_t *idx)
{
	const volatile uint16_t *p = ring_ptr(vd, vd->avail_iova + VRING_AVAIL_IDX_OFF,
					      2, IODMA_PERM_READ);

	if (!p)
		return -EFAULT;
	/* Acquire: the ring entries and descriptors the driver wrote before
	 * publishing this index are visible (2.7.13.3).  The same ring
	 * accessor the driver uses (its peer here is a CPU, for which this
	 * is at least as strong as a C11 acquire). */
	*idx = le16toh(iodma_load_acquire_u16(p));
	vd->hist[vd->nhist % 8].idx = *idx;
	vd->hist[vd->nhist % 8].last_avail = vd->last_avail;
	vd->nhist++;
	return 0;
}

static int read_desc(struct vblk_device *vd, uint16_t i, struct vring_desc *d)
{
	const struct vring_desc *p = ring_ptr(vd, vd->desc_iova + 16ull * i,
					      16, IODMA_PERM_READ);

	if (!p)
		return -EFAULT;
	/* Read each field once: the driver could change them under us. */
	d->addr = le64toh(p->addr);
	d->len = le32toh(p->len);
	d->flags = le16toh(p->flags);
	d->next = le16toh(p->next);
	return 0;
}

static int push_used(struct vblk_device *vd, uint16_t head, uint32_t len)
{
	uint16_t slot = vd->used_idx % vd->queue_num;
	struct vring_used_elem *e;
	volatile uint16_t *idx;

	e = ring_ptr(vd, vd->used_iova + VRING_USED_RING_OFF(slot), 8,
		     IODMA_PERM_WRITE);
	idx = ring_ptr(vd, vd->used_iova + VRING_USED_IDX_OFF, 2,
		       IODMA_PERM_WRITE);
	if (!e || !idx)
		return -EFAULT;
	e->id = htole32(head);
	e->len = htole32(len);
	vd->used_idx++;
	/* Release: the element (and the data written into the driver's
	 * buffers) is visible before the index that covers it (2.7.8.2). */
	iodma_store_release_u16(idx, htole16(vd->used_idx));
	return 0;
}

/* After a batch: notify the driver unless it asked not to be (2.7.10). */
static void notify_used(struct vblk_device *vd)
{
	bool need;

	/* The used idx store must be ordered before the read of the
	 * driver's suppression field (2.7.10: full barrier).  Kept a C11
	 * seq_cst fence, not iodma_mb(): this device model runs on a CPU
	 * and its driver on CPUs, and a store-load order between CPUs is
	 * what the fence gives (Linux's vhost: smp_mb()); no MMIO is
	 * involved, so dsb sy / fence iorw,iorw would only cost more. */
	atomic_thread_fence(memory_order_seq_cst);
	if (vd->event_idx) {
		_Atomic uint16_t *ev = ring_ptr(vd, vd->avail_iova +
						VRING_USED_EVENT_OFF(vd->queue_num),
						2, IODMA_PERM_READ);
		uint16_t e = ev ? le16toh(atomic_load_explicit(ev, memory_order_relaxed)) : 0;

		/* A ring handed over: interrupt unless the driver has seen
		 * every used entry (used_event == used->idx). */
		need = !ev || (vd->signalled_valid
			       ? vring_need_event(e, vd->used_idx, vd->signalled_used)
			       : e != vd->used_idx);
	} else {
		const uint16_t *fl = ring_ptr(vd, vd->avail_iova, 2,
					      IODMA_PERM_READ);

		need = !fl || !(le16toh(*fl) & VRING_AVAIL_F_NO_INTERRUPT);
	}
	vd->signalled_used = vd->used_idx;
	vd->signalled_valid = true;
	if (need)
		raise_irq(vd, 1);
}

/* ---- requests ------------------------------------------------------------ */

static int iov_push(struct iovbuf *b, void *va, uint64_t len)
{
	if (b->n == b->cap) {
		size_t cap = b->cap ? 2 * b->cap : 64;
		struct iovec *v = realloc(b->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		b->v = v;
		b->cap = cap;
	}
	b->v[b->n].iov_base = va;
	b->v[b->n].iov_len = len;
	b->n++;
	b->bytes += len;
	return 0;
}

/* Translate [iova, iova + len) with @perm and append its slices. */
static int iov_translate(struct vblk_device *vd, struct iovbuf *b,
			 uint64_t iova, uint64_t len, uint32_t perm)
{
	struct iodma_xlate_iter it = IODMA_STRUCT_INIT(struct iodma_xlate_iter);
	struct iodma_slice s;
	int ret;

	if (len == 0)
		return 0;
	ret = iodma_xlate_begin(&it, vd->o.domain, iova, len, perm);
	if (ret)
		return ret;
	while ((ret = iodma_xlate_next(&it, &s)) == 1) {
		vd->st.translations++;
		ret = iov_push(b, s.va, s.len);
		if (ret)
			return ret;
	}
	return ret;
}

/* Drop the first @skip bytes of an iovec array (in place). */
static void iov_skip(struct iovbuf *b, uint64_t skip)
{
	size_t i = 0;

	b->bytes -= b->bytes < skip ? b->bytes : skip;
	while (i < b->n && skip >= b->v[i].iov_len)
		skip -= b->v[i++].iov_len;
	memmove(b->v, b->v + i, (b->n - i) * sizeof(*b->v));
	b->n -= i;
	if (b->n && skip) {
		b->v[0].iov_base = (char *)b->v[0].iov_base + skip;
		b->v[0].iov_len -= skip;
	}
}

/* Copy the first @len bytes of the slices to @buf; false if too short. */
static bool iov_copy_out(const struct iovbuf *b, void *buf, size_t len)
{
	char *p = buf;

	for (size_t i = 0; i < b->n && len; i++) {
		size_t n = b->v[i].iov_len < len ? b->v[i].iov_len : len;

		memcpy(p, b->v[i].iov_base, n);
		p += n;
		len -= n;
	}
	return len == 0;
}

static size_t iov_copy_in(const struct iovbuf *b, const void *buf, size_t len)
{
	const char *p = buf;
	size_t done = 0;

	for (size_t i = 0; i < b->n && done < len; i++) {
		size_t n = b->v[i].iov_len < len - done ? b->v[i].iov_len
							 : len - done;

		memcpy(b->v[i].iov_base, p + done, n);
		done += n;
	}
	return done;
}

/* preadv/pwritev the whole array at @off, IOV_MAX entries at a time,
 * resuming after short transfers.  0 or -errno (-EIO at end of file). */
static int iov_io(int fd, struct iovbuf *b, uint64_t off, bool write)
{
	struct iovec *v = b->v;
	size_t n = b->n;

	while (n) {
		int cnt = n > IOV_MAX ? IOV_MAX : (int)n;
		ssize_t r = write ? pwritev(fd, v, cnt, (off_t)off)
				  : preadv(fd, v, cnt, (off_t)off);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -EIO;
		off += (uint64_t)r;
		while (n && (size_t)r >= v->iov_len) {
			r -= (ssize_t)v->iov_len;
			v++;
			n--;
		}
		if (n && r) {
			v->iov_base = (char *)v->iov_base + r;
			v->iov_len -= (size_t)r;
		}
	}
	return 0;
}

/* Execute a parsed request: data in vd->rd (after the header) / vd->wr
 * (before the status byte).  Returns the status and, in *written, the bytes
 * put into device-writable buffers other than the status byte. */
static uint8_t execute(struct vblk_device *vd,
		       const struct virtio_blk_outhdr *h, uint32_t *written)
{
	uint32_t type = le32toh(h->type);
	uint64_t sector = le64toh(h->sector);
	struct iovbuf *data = type == VIRTIO_BLK_T_OUT ? &vd->rd : &vd->wr;
	uint64_t sectors;

	*written = 0;
	switch (type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT:
		if (data->bytes % VIRTIO_BLK_SECTOR_SIZE)
			return VIRTIO_BLK_S_IOERR;
		sectors = data->bytes / VIRTIO_BLK_SECTOR_SIZE;
		if (sector > vd->o.capacity ||
		    sectors > vd->o.capacity - sector)
			return VIRTIO_BLK_S_IOERR;	/* out of range */
		if (iov_io(vd->o.disk_fd, data,
			   sector * VIRTIO_BLK_SECTOR_SIZE,
			   type == VIRTIO_BLK_T_OUT))
			return VIRTIO_BLK_S_IOERR;
		if (type == VIRTIO_BLK_T_IN) {
			*written = (uint32_t)data->bytes;
			vd->st.bytes_read += data->bytes;
		} else {
			vd->st.bytes_written += data->bytes;
		}
		return VIRTIO_BLK_S_OK;
	case VIRTIO_BLK_T_FLUSH:
		if (!vd->flush)
			return VIRTIO_BLK_S_UNSUPP;
		return fdatasync(vd->o.disk_fd) ? VIRTIO_BLK_S_IOERR
						: VIRTIO_BLK_S_OK;
	case VIRTIO_BLK_T_GET_ID: {
		char id[VIRTIO_BLK_ID_BYTES] = VBLK_ID_STRING;

		*written = (uint32_t)iov_copy_in(&vd->wr, id, sizeof(id));
		return VIRTIO_BLK_S_OK;
	}
	default:
		return VIRTIO_BLK_S_UNSUPP;
	}
}

/*
 * Serve the chain starting at @head.  Returns the used length (bytes
 * written into the chain), or -EFAULT when the descriptor table itself
 * cannot be read (the ring is broken).  With @may_retry, a translation
 * failure (of the table or of a buffer) returns -EAGAIN instead, before
 * any byte moved: the caller leaves its access section and serves the
 * chain again.  Runs inside an access section.
 */
static int64_t process_chain(struct vblk_device *vd, uint16_t head,
			     bool may_retry)
{
	const struct vring_desc *last;
	struct virtio_blk_outhdr h;
	uint8_t *status = NULL;
	uint8_t st = VIRTIO_BLK_S_IOERR;
	uint32_t written = 0;
	bool seen_write = false, bad = false;
	uint16_t i = head;
	uint32_t n;

	vd->rd.n = vd->wr.n = 0;
	vd->rd.bytes = vd->wr.bytes = 0;

	/* Walk the chain once, keeping a copy of each descriptor (the driver
	 * could rewrite the table under us), and check its shape: readable
	 * descriptors first, then writable ones (2.7.4.2). */
	for (n = 0;; n++) {
		struct vring_desc *d = &vd->chain[n];

		if (n >= vd->queue_num || i >= vd->queue_num)
			return -EINVAL;		/* loop or bad index */
		if (read_desc(vd, i, d))
			return may_retry ? -EAGAIN : -EFAULT;
		if (d->flags & VRING_DESC_F_INDIRECT)
			return -EINVAL;		/* not negotiated */
		if (d->flags & VRING_DESC_F_WRITE)
			seen_write = true;
		else if (seen_write)
			return -EINVAL;		/* readable after writable */
		if (!(d->flags & VRING_DESC_F_NEXT))
			break;
		i = d->next;
	}
	last = &vd->chain[n];
	if (!(last->flags & VRING_DESC_F_WRITE) || last->len == 0)
		return -EINVAL;			/* no room for the status */

	/* The status byte first: without it no error can be reported. */
	status = ring_ptr(vd, last->addr + last->len - 1, 1, IODMA_PERM_WRITE);
	if (!status && may_retry)
		return -EAGAIN;
	if (!status) {
		vd->st.xlate_failures++;
		vd->st.ioerr++;
		return 0;
	}

	/* Translate every buffer with the permission its flags give the
	 * device, before any byte moves: a request that fails translation
	 * anywhere has no effect on memory or disk. */
	for (uint32_t k = 0; k <= n; k++) {
		const struct vring_desc *d = &vd->chain[k];
		uint64_t len = k == n ? d->len - 1u : d->len;	/* status */
		int ret;

		if (d->flags & VRING_DESC_F_WRITE)
			ret = iov_translate(vd, &vd->wr, d->addr, len,
					    IODMA_PERM_WRITE);
		else
			ret = iov_translate(vd, &vd->rd, d->addr, len,
					    IODMA_PERM_READ);
		if (ret && may_retry)
			return -EAGAIN;
		if (ret) {
			vd->st.xlate_failures++;
			bad = true;
			break;
		}
	}

	if (!bad && iov_copy_out(&vd->rd, &h, sizeof(h))) {
		iov_skip(&vd->rd, sizeof(h));
		st = execute(vd, &h, &written);
	}
	*status = st;
	if (st == VIRTIO_BLK_S_IOERR)
		vd->st.ioerr++;
	else if (st == VIRTIO_BLK_S_UNSUPP)
		vd->st.unsupp++;
	return (int64_t)written + 1;
}

/*
 * A translation failed: may it be asked again (opts.xlate_retries)?  A
 * failure may be transient (a vhost-user IOTLB miss released by an
 * invalidation that had to wait for this section): leave the section and
 * enter a new one, as a PCIe ATS device re-requests a translation an
 * invalidation raced.  Every pointer from the old section is dead.
 */
static bool retry_section(struct vblk_device *vd, unsigned int *tries)
{
	struct timespec ts = { 0, 0 };

	/* Stopping (vhost-user GET_VRING_BASE): the front end answers no
	 * miss before the ring has stopped; the caller leaves the chain. */
	if (*tries >= vd->o.xlate_retries || atomic_load(&vd->stop))
		return false;
	(*tries)++;
	vd->st.xlate_retries++;
	iodma_access_end();
	/* Back off before the new section: the invalidation that released
	 * the miss waited for this section because it translated the
	 * invalidated range; one re-entered at once records that range again
	 * before it misses and could be released by the next invalidation
	 * of a lazy guest's flush batch.  Giving the front end's main loop
	 * time to send the UPDATEs the guest has queued keeps a few retries
	 * enough.  50 us, doubling, at most 5 ms. */
	ts.tv_nsec = 50000L << (*tries < 7 ? *tries - 1 : 6);
	nanosleep(&ts, NULL);
	iodma_access_begin();
	return true;
}

/* Consume every available chain.  Returns how many were completed. */
/*
 * A ring handed over by another owner (vhost-user: SET_VRING_BASE after a
 * migration or a back-end restart) resumes at the used index in the ring,
 * as Linux vhost (vhost_vq_init_access()) and libvhost-user do, not at the
 * base alone: the base counts what the previous owner consumed, used->idx
 * what the driver has seen completed.  This device completes in order, so
 * chains between the two were consumed but never completed: serve them
 * again (a block read or write repeated is the same request), and never
 * serve again a chain the driver saw completed.  -EFAULT: used ring not
 * translatable (yet).
 */
static int sync_used_idx(struct vblk_device *vd)
{
	const volatile uint16_t *p = ring_ptr(vd, vd->used_iova + VRING_USED_IDX_OFF,
					      2, IODMA_PERM_READ);
	uint16_t used;

	if (!p)
		return -EFAULT;
	used = le16toh(iodma_load_acquire_u16(p));
	if (used != vd->last_avail || used != vd->used_idx) {
		fprintf(stderr, "vblk: ring resumes at used->idx %u, not at base %u\n",
			used, vd->last_avail);
		vd->st.used_resyncs++;
		vd->last_avail = used;
		vd->used_idx = used;
		vd->signalled_used = used;
	}
	vd->sync_used = false;
	return 0;
}

static unsigned int process_queue(struct vblk_device *vd)
{
	unsigned int done = 0, tries = 0;
	uint16_t idx;

	iodma_access_begin();
	while (vd->sync_used && sync_used_idx(vd)) {
		if (retry_section(vd, &tries))
			continue;
		if (!atomic_load(&vd->stop))
			set_broken(vd, "used ring not readable");
		goto out;
	}
	tries = 0;
	while (avail_idx(vd, &idx)) {
		if (retry_section(vd, &tries))
			continue;
		if (!atomic_load(&vd->stop))
			set_broken(vd, "available ring not readable");
		goto out;
	}
	if ((uint16_t)(idx - vd->last_avail) > vd->queue_num) {
		set_broken(vd, "available index moved too far");
		goto out;
	}
	while (vd->last_avail != idx) {
		const uint16_t *e;
		uint16_t head;
		int64_t used;

		/* Asked to stop (vhost-user SET_VRING_ENABLE 0 or
		 * GET_VRING_BASE): consume no further chain.  The index the
		 * stop returns is the first chain not consumed. */
		if (atomic_load(&vd->stop))
			break;

		tries = 0;
		while (!(e = ring_ptr(vd, vd->avail_iova +
				      VRING_AVAIL_RING_OFF(vd->last_avail % vd->queue_num),
				      2, IODMA_PERM_READ))) {
			if (retry_section(vd, &tries))
				continue;
			if (!atomic_load(&vd->stop))
				set_broken(vd, "available ring not readable");
			goto out;
		}
		head = le16toh(*e);
		vd->last_avail++;
		tries = 0;
		/* While stopping, a failed translation never completes the
		 * chain with an error: it stays available (below). */
		do {
			used = process_chain(vd, head,
					     tries < vd->o.xlate_retries ||
					     atomic_load(&vd->stop));
		} while (used == -EAGAIN && retry_section(vd, &tries));
		if (used == -EAGAIN) {
			/* Released by the ring stop before any byte moved:
			 * un-consume it, so the index the stop reports
			 * excludes it and the next owner of the ring (a
			 * migration destination) serves it again. */
			vd->last_avail--;
			vd->st.requeued++;
			goto out;
		}
		if (used < 0) {
			set_broken(vd, used == -EFAULT ? "descriptor table not readable"
						       : "malformed descriptor chain");
			goto out;
		}
		tries = 0;
		while (push_used(vd, head, (uint32_t)used)) {
			if (retry_section(vd, &tries))
				continue;
			if (atomic_load(&vd->stop)) {
				/* Executed but not reported: leave it
				 * available, served again (a block read or
				 * write repeated is the same request). */
				vd->last_avail--;
				vd->st.requeued++;
				goto out;
			}
			set_broken(vd, "used ring not writable");
			goto out;
		}
		vd->st.requests++;
		done++;
		/* One access section per chain: once its used entry is
		 * published the driver may unmap the chain's buffers, and
		 * that invalidation must neither wait for the chains that
		 * follow nor release their IOTLB misses (a batch-long
		 * section did both: under a strict-mode guest's unmaps a
		 * later chain's miss was released until its retries ran out,
		 * an I/O error).  No pointer outlives the section: each use
		 * below translates again. */
		iodma_access_end();
		iodma_access_begin();
		if (done % 32 == 0)
			notify_used(vd);	/* let the driver refill early */
		if (vd->last_avail == idx && avail_idx(vd, &idx) == 0 &&
		    (uint16_t)(idx - vd->last_avail) > vd->queue_num) {
			set_broken(vd, "available index moved too far");
			goto out;
		}
	}
out:
	/* After a start, the first pass also tells the driver of used
	 * entries the ring's previous owner may not have (its interrupt
	 * lost in the handover), even with nothing new. */
	if ((done || !vd->signalled_valid) && !vd->broken && !vd->sync_used)
		notify_used(vd);
	iodma_access_end();
	return done;
}

/*
 * Before sleeping with EVENT_IDX: ask for a kick at the next addition,
 * then look again (the driver may have added in between).  Returns true
 * when there is work and the device must not sleep.
 */
static bool arm_kick(struct vblk_device *vd)
{
	_Atomic uint16_t *ev;
	uint16_t idx;
	bool work;

	if (!vd->event_idx)
		return false;
	iodma_access_begin();
	ev = ring_ptr(vd, vd->used_iova + VRING_AVAIL_EVENT_OFF(vd->queue_num),
		      2, IODMA_PERM_WRITE);
	if (ev)
		atomic_store_explicit(ev, htole16(vd->last_avail),
				      memory_order_relaxed);
	/* avail_event store before the avail idx load: CPU to CPU, a C11
	 * seq_cst fence (smp_mb), as in notify_used(). */
	atomic_thread_fence(memory_order_seq_cst);
	work = avail_idx(vd, &idx) == 0 && idx != vd->last_avail;
	iodma_access_end();
	return work;
}

/* Read a 16-bit ring field for dump_ring(): its value, or -1. */
static int ring_u16(struct vblk_device *vd, uint64_t iova)
{
	const volatile uint16_t *p = ring_ptr(vd, iova, 2, IODMA_PERM_READ);

	return p ? le16toh(iodma_load_acquire_u16(p)) : -1;
}

/* The ring as this device and the driver's memory see it, on stderr
 * (vblk_device_request_dump()).  Device thread. */
static void dump_ring(struct vblk_device *vd)
{
	iodma_access_begin();
	fprintf(stderr, "vblk-ring: last_avail=%u used_idx=%u signalled_used=%u"
		" avail.flags=%d avail.idx=%d used_event=%d used.flags=%d"
		" used.idx=%d avail_event=%d event_idx=%d broken=%d"
		" requests=%llu doorbells=%llu interrupts=%llu\n",
		vd->last_avail, vd->used_idx, vd->signalled_used,
		ring_u16(vd, vd->avail_iova), ring_u16(vd, vd->avail_iova + VRING_AVAIL_IDX_OFF),
		ring_u16(vd, vd->avail_iova + VRING_USED_EVENT_OFF(vd->queue_num)),
		ring_u16(vd, vd->used_iova), ring_u16(vd, vd->used_iova + VRING_USED_IDX_OFF),
		ring_u16(vd, vd->used_iova + VRING_AVAIL_EVENT_OFF(vd->queue_num)),
		vd->event_idx, vd->broken, (unsigned long long)vd->st.requests,
		(unsigned long long)vd->st.doorbells,
		(unsigned long long)vd->st.interrupts);
	fprintf(stderr, "vblk-ring: avail reads (idx/last_avail), oldest first:");
	for (unsigned int i = vd->nhist > 8 ? vd->nhist - 8 : 0; i < vd->nhist; i++)
		fprintf(stderr, " %u/%u", vd->hist[i % 8].idx, vd->hist[i % 8].last_avail);
	fprintf(stderr, " (%u reads)\nvblk-ring: avail.ring[last_avail-12 ..]:", vd->nhist);
	for (int k = -12; k < 4; k++)
		fprintf(stderr, " %d", ring_u16(vd, vd->avail_iova + VRING_AVAIL_RING_OFF(
			(uint16_t)(vd->last_avail + k) % vd->queue_num)));
	fprintf(stderr, "\nvblk-ring: used.ring[used_idx-12 ..].id:");
	for (int k = -12; k < 4; k++)
		fprintf(stderr, " %d", ring_u16(vd, vd->used_iova + VRING_USED_RING_OFF(
			(uint16_t)(vd->used_idx + k) % vd->queue_num)));
	/* The chain at last_avail - 1 (the last consumed), as the table
	 * holds it now: addr/len/flags/next per descriptor. */
	{
		int h = ring_u16(vd, vd->avail_iova + VRING_AVAIL_RING_OFF(
			(uint16_t)(vd->last_avail - 1) % vd->queue_num));
		struct vring_desc d;

		fprintf(stderr, "\nvblk-ring: chain %d:", h);
		for (int n = 0; h >= 0 && n < 8 && (uint32_t)h < vd->queue_num &&
		     read_desc(vd, (uint16_t)h, &d) == 0; n++) {
			fprintf(stderr, " [%d] 0x%llx/%u/%x/%u", h,
				(unsigned long long)d.addr, d.len, d.flags, d.next);
			if (!(d.flags & VRING_DESC_F_NEXT))
				break;
			h = d.next;
		}
	}
	fputc('\n', stderr);
	iodma_access_end();
}

static void *device_thread(void *arg)
{
	struct vblk_device *vd = arg;
	eventfd_t v;

	if (vd->thread_init)
		vd->thread_init(vd->thread_arg);
	for (;;) {
		handle_trap(vd);
		if (atomic_exchange(&vd->dump, false) && vd->queue_ready)
			dump_ring(vd);
		if (atomic_load(&vd->stop))
			break;
		if (vd->queue_ready && !vd->broken &&
		    (mmio_read32(vd->mmio, VIRTIO_MMIO_STATUS) &
		     VIRTIO_STATUS_DRIVER_OK)) {
			if (process_queue(vd) || arm_kick(vd))
				continue;
		}
		/* Wait for the doorbell.  poll() first: a transport's eventfd
		 * may be non-blocking (QEMU makes its vhost-user kick fds
		 * EFD_NONBLOCK, and the flag belongs to the open file, which
		 * it shares), where a bare read would return EAGAIN at once
		 * and this loop would spin. */
		if (poll(&(struct pollfd){ .fd = vd->o.doorbell_fd,
					   .events = POLLIN }, 1, -1) < 0)
			continue;
		if (eventfd_read(vd->o.doorbell_fd, &v) == 0)
			vd->st.doorbells++;
	}
	return NULL;
}

int vblk_device_start(struct vblk_device *vd)
{
	int ret;

	if (vd->running)
		return -EBUSY;
	if (vd->o.doorbell_fd < 0 || vd->o.irq_fd < 0)
		return -EINVAL;
	atomic_store(&vd->stop, false);
	ret = pthread_create(&vd->thread, NULL, device_thread, vd);
	if (ret)
		return -ret;
	vd->running = true;
	return 0;
}

void vblk_device_request_stop(struct vblk_device *vd)
{
	if (!vd->running)
		return;
	atomic_store(&vd->stop, true);
	(void)eventfd_write(vd->o.doorbell_fd, 1);
}

void vblk_device_request_dump(struct vblk_device *vd)
{
	if (!vd->running)
		return;
	atomic_store(&vd->dump, true);
	(void)eventfd_write(vd->o.doorbell_fd, 1);
}

void vblk_device_stop(struct vblk_device *vd)
{
	if (!vd->running)
		return;
	vblk_device_request_stop(vd);
	pthread_join(vd->thread, NULL);
	vd->running = false;
}

/* ---- a ring configured by the transport (vhost-user) --------------------- */

int vblk_device_read_config(const struct vblk_device *vd, uint32_t offset,
			    void *buf, uint32_t len)
{
	if (offset > 256 || len > 256 - offset)
		return -EINVAL;
	memcpy(buf, (const char *)vd->mmio + VIRTIO_MMIO_CONFIG + offset, len);
	return 0;
}

int vblk_device_ring_start(struct vblk_device *vd,
			   const struct vblk_device_ring *r)
{
	uint64_t f = r->features & vd->features;

	if (vd->running)
		return -EBUSY;
	if (r->num == 0 || r->num > vd->o.queue_num_max ||
	    r->desc % VRING_DESC_ALIGN || r->avail % VRING_AVAIL_ALIGN ||
	    r->used % VRING_USED_ALIGN || r->kick_fd < 0 || r->call_fd < 0)
		return -EINVAL;
	vd->o.doorbell_fd = r->kick_fd;
	vd->o.irq_fd = r->call_fd;
	vd->thread_init = r->thread_init;
	vd->thread_arg = r->thread_arg;
	vd->driver_features = f;
	vd->event_idx = f & VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX);
	vd->flush = f & VIRTIO_BIT(VIRTIO_BLK_F_FLUSH);
	vd->queue_num = r->num;
	vd->desc_iova = r->desc;
	vd->avail_iova = r->avail;
	vd->used_iova = r->used;
	vd->last_avail = r->last_avail;
	vd->used_idx = r->last_avail;
	vd->signalled_used = r->last_avail;
	/* Whether the ring's previous owner (the other end of a migration,
	 * a back end that restarted) delivered the interrupt for its last
	 * completions is not known here: under EVENT_IDX the driver may
	 * still wait for it (used_event below used->idx), and a completion
	 * of ours that follows would not interrupt again by the event-index
	 * rule.  So the first notify after a start interrupts unless the
	 * driver has seen every used entry (used_event == used->idx), as
	 * Linux vhost's first does (vhost_vq_init_access() clears
	 * signalled_used_valid) and libvhost-user's (vu_set_vring_base). */
	vd->signalled_valid = false;
	vd->sync_used = true;	/* checked against used->idx at the first pass */
	vd->nhist = 0;
	vd->broken = false;
	vd->queue_ready = true;
	mmio_set32(vd->mmio, VIRTIO_MMIO_STATUS,
		   VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
		   VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK);
	return vblk_device_start(vd);
}

uint16_t vblk_device_ring_stop(struct vblk_device *vd)
{
	vblk_device_stop(vd);
	vd->queue_ready = false;
	return vd->last_avail;
}
