// SPDX-License-Identifier: MIT
/*
 * nvme.c - a small user-space NVMe driver over iodma (see nvme.h).
 *
 * Register layout, command and completion formats from the NVM Express
 * Base Specification (1.4): CAP 0x00, VS 0x08, CC 0x14, CSTS 0x1c,
 * AQA 0x24, ASQ 0x28, ACQ 0x30, doorbells from 0x1000 with a stride of
 * 4 << CAP.DSTRD bytes (SQ y tail: 2y, CQ y head: 2y + 1).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <iodma/barrier.h>
#include <iodma.h>
#include <iodma/vfio.h>

#include "nvme.h"

#define REG_CAP		0x00
#define REG_VS		0x08
#define REG_CC		0x14
#define REG_CSTS	0x1c
#define REG_AQA		0x24
#define REG_ASQ		0x28
#define REG_ACQ		0x30
#define REG_DBS		0x1000

#define CC_EN		0x1u
#define CC_IOSQES(n)	((uint32_t)(n) << 16)
#define CC_IOCQES(n)	((uint32_t)(n) << 20)
#define CSTS_RDY	0x1u
#define CSTS_CFS	0x2u

#define ADM_DELETE_SQ	0x00
#define ADM_CREATE_SQ	0x01
#define ADM_DELETE_CQ	0x04
#define ADM_CREATE_CQ	0x05
#define ADM_IDENTIFY	0x06
#define IO_WRITE	0x01
#define IO_READ		0x02

#define AQ_SIZE		32u	/* admin queue entries */
#define IOQ_MAX		64u	/* I/O queue entries at most */
#define SQE_SIZE	64u
#define CQE_SIZE	16u
#define PRP_PER_PAGE	(NVME_PAGE / 8u)
#define CMD_TIMEOUT_MS	10000	/* per command; TCG is slow */

static _Thread_local char nvme_msg[256];

static void set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void set_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(nvme_msg, sizeof(nvme_msg), fmt, ap);
	va_end(ap);
}

const char *nvme_last_error(void)
{
	return nvme_msg;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* ---- registers ------------------------------------------------------------ */

static uint32_t rd32(struct nvme_ctrl *c, uint32_t off)
{
	uint32_t v = *(volatile uint32_t *)(c->bar + off);

	/* As readl(): the register read completes before later loads of
	 * memory the controller wrote (CSTS, then what it set up). */
	iodma_rmb();
	return v;
}

/* 64-bit registers as two 32-bit accesses (low first): not every model
 * takes 8-byte MMIO. */
static uint64_t rd64(struct nvme_ctrl *c, uint32_t off)
{
	return rd32(c, off) | (uint64_t)rd32(c, off + 4) << 32;
}

static void wr32(struct nvme_ctrl *c, uint32_t off, uint32_t v)
{
	/* As writel(): the queue entries written to memory before must be
	 * visible to the controller before the doorbell reaches it; a write
	 * barrier ordering memory stores before the MMIO store (dsb st /
	 * fence ow,ow), where a CPU-only fence does not order MMIO on Arm. */
	iodma_wmb();
	*(volatile uint32_t *)(c->bar + off) = v;
}

static void wr64(struct nvme_ctrl *c, uint32_t off, uint64_t v)
{
	wr32(c, off, (uint32_t)v);
	wr32(c, off + 4, (uint32_t)(v >> 32));
}

static void sq_doorbell(struct nvme_ctrl *c, uint32_t qid, uint16_t tail)
{
	wr32(c, REG_DBS + (2 * qid) * c->dstrd, tail);
}

static void cq_doorbell(struct nvme_ctrl *c, uint32_t qid, uint16_t head)
{
	wr32(c, REG_DBS + (2 * qid + 1) * c->dstrd, head);
}

/* Wait for CSTS.RDY == @want within CAP.TO.  0, -ETIMEDOUT or -EIO (the
 * controller reports a fatal status or is gone). */
static int wait_ready(struct nvme_ctrl *c, uint32_t want)
{
	uint64_t end = now_ms() + c->timeout_ms;

	for (;;) {
		uint32_t csts = rd32(c, REG_CSTS);

		if (csts == 0xffffffffu) {
			set_error("nvme: CSTS reads all ones (device gone?)");
			return -EIO;
		}
		if ((csts & CSTS_RDY) == want)
			return 0;
		if (want && (csts & CSTS_CFS)) {
			set_error("nvme: controller fatal status (CSTS %#x)", csts);
			return -EIO;
		}
		if (now_ms() > end) {
			set_error("nvme: CSTS.RDY did not become %u within %u ms (CSTS %#x)",
				  want, c->timeout_ms, csts);
			return -ETIMEDOUT;
		}
		sleep_ms(1);
	}
}

/* ---- admin queue ----------------------------------------------------------- */

/* A command did not complete in time: it may still be in flight, and its
 * buffers must not be unmapped and reused while the device can write them.
 * Disable the controller (CC.EN = 0 aborts every outstanding command and
 * stops its DMA once CSTS.RDY reads 0) and refuse every later command. */
static void ctrl_fail(struct nvme_ctrl *c)
{
	c->failed = true;
	wr32(c, REG_CC, rd32(c, REG_CC) & ~CC_EN);
	(void)wait_ready(c, 0);
}

/* Submit @cmd on the admin queue and wait for its completion: the status
 * field (>= 0; 0 = success) or -ETIMEDOUT.  @dw0 receives completion
 * dword 0 when not NULL. */
static int admin_cmd(struct nvme_ctrl *c, uint32_t cmd[16], uint32_t *dw0)
{
	volatile uint32_t *cqe;
	uint16_t cid = c->next_cid++;
	uint64_t end;

	if (c->failed)
		return -EIO;
	cmd[0] = (cmd[0] & 0xffffu) | (uint32_t)cid << 16;
	memcpy((uint8_t *)c->asq + (size_t)c->asq_tail * SQE_SIZE, cmd, SQE_SIZE);
	c->asq_tail = (uint16_t)((c->asq_tail + 1) % c->aq_size);
	sq_doorbell(c, 0, c->asq_tail);
	cqe = (volatile uint32_t *)((uint8_t *)c->acq + (size_t)c->acq_head * CQE_SIZE);
	end = now_ms() + CMD_TIMEOUT_MS;
	while (((cqe[3] >> 16) & 1) != c->acq_phase) {
		if (now_ms() > end) {
			set_error("nvme: admin command %#x timed out", cmd[0] & 0xff);
			ctrl_fail(c);
			return -ETIMEDOUT;
		}
	}
	/* The phase bit before the entry's other fields and the data the
	 * controller wrote: loads of DMA memory, Linux nvme's dma_rmb(). */
	iodma_dma_rmb();
	{
		uint32_t d3 = cqe[3], d0 = cqe[0];

		if (++c->acq_head == c->aq_size) {
			c->acq_head = 0;
			c->acq_phase ^= 1;
		}
		cq_doorbell(c, 0, c->acq_head);
		if (dw0)
			*dw0 = d0;
		if ((d3 & 0xffffu) != cid) {
			/* A completion of another command: the queue is out of
			 * step; its status is not ours to return. */
			set_error("nvme: admin completion for cid %u, want %u",
				  d3 & 0xffffu, cid);
			ctrl_fail(c);
			return -EIO;
		}
		return (int)(d3 >> 17);
	}
}

int nvme_identify(struct nvme_ctrl *c, uint32_t cns, uint32_t nsid,
		  uint64_t iova)
{
	uint32_t cmd[16] = { 0 };

	cmd[0] = ADM_IDENTIFY;
	cmd[1] = nsid;
	cmd[6] = (uint32_t)iova;
	cmd[7] = (uint32_t)(iova >> 32);
	cmd[10] = cns;
	return admin_cmd(c, cmd, NULL);
}

/* Copy an ASCII identify field, trailing blanks dropped. */
static void copy_field(char *dst, const uint8_t *src, size_t n)
{
	memcpy(dst, src, n);
	dst[n] = '\0';
	while (n && (dst[n - 1] == ' ' || dst[n - 1] == '\0'))
		dst[--n] = '\0';
}

static int identify_all(struct nvme_ctrl *c)
{
	uint8_t *id;
	uint64_t iova;
	int st, err;

	err = iodma_alloc_coherent(c->dev, NVME_PAGE, (void **)&id, &iova);
	if (err) {
		set_error("nvme: coherent identify buffer: %s", iodma_strerror(err));
		return err;
	}
	st = nvme_identify(c, 1, 0, iova);
	if (st) {
		if (st > 0)
			set_error("nvme: IDENTIFY controller: status %#x", st);
		err = st < 0 ? st : -EIO;
		goto out;
	}
	copy_field(c->serial, id + 4, 20);
	copy_field(c->model, id + 24, 40);
	copy_field(c->firmware, id + 64, 8);
	if (id[77] && id[77] < 20) {	/* larger: 2^20 pages, treat as none */
		uint64_t mpsmin = 4096ull << ((c->cap >> 48) & 0xf);
		uint64_t m = mpsmin << id[77];

		c->mdts_bytes = m > UINT32_MAX ? UINT32_MAX : (uint32_t)m;
	}

	memset(id, 0, NVME_PAGE);
	st = nvme_identify(c, 0, c->nsid, iova);
	if (st) {
		if (st > 0)
			set_error("nvme: IDENTIFY namespace %u: status %#x", c->nsid, st);
		err = st < 0 ? st : -EIO;
		goto out;
	}
	{
		uint64_t nsze;
		uint32_t lbaf;
		unsigned int fmt = id[26] & 0xf, lbads;

		memcpy(&nsze, id, 8);
		memcpy(&lbaf, id + 128 + 4 * fmt, 4);
		lbads = (lbaf >> 16) & 0xff;
		if (nsze == 0 || lbads < 9 || lbads > 12) {
			set_error("nvme: namespace %u: size %llu, LBA format %u (LBADS %u) unusable",
				  c->nsid, (unsigned long long)nsze, fmt, lbads);
			err = -ENODEV;
			goto out;
		}
		c->nr_lbas = nsze;
		c->lba_size = 1u << lbads;
	}
out:
	iodma_free_coherent(c->dev, NVME_PAGE, id, iova);
	return err;
}

static int create_io_queues(struct nvme_ctrl *c)
{
	uint32_t cmd[16] = { 0 };
	int st;

	cmd[0] = ADM_CREATE_CQ;
	cmd[6] = (uint32_t)c->iocq_iova;
	cmd[7] = (uint32_t)(c->iocq_iova >> 32);
	cmd[10] = (uint32_t)(c->ioq_size - 1) << 16 | 1;	/* size, qid 1 */
	cmd[11] = 1;						/* PC, no IEN */
	st = admin_cmd(c, cmd, NULL);
	if (st) {
		set_error("nvme: CREATE I/O CQ: %s %#x", st < 0 ? "error" : "status", st);
		return st < 0 ? st : -EIO;
	}
	memset(cmd, 0, sizeof(cmd));
	cmd[0] = ADM_CREATE_SQ;
	cmd[6] = (uint32_t)c->iosq_iova;
	cmd[7] = (uint32_t)(c->iosq_iova >> 32);
	cmd[10] = (uint32_t)(c->ioq_size - 1) << 16 | 1;
	cmd[11] = 1u << 16 | 1;					/* CQ 1, PC */
	st = admin_cmd(c, cmd, NULL);
	if (st) {
		set_error("nvme: CREATE I/O SQ: %s %#x", st < 0 ? "error" : "status", st);
		return st < 0 ? st : -EIO;
	}
	c->ioq_created = true;
	return 0;
}

/* ---- open / close ----------------------------------------------------------- */

static int alloc_q(struct nvme_ctrl *c, size_t len, void **va, uint64_t *iova)
{
	int err = iodma_alloc_coherent(c->dev, len, va, iova);

	if (err)
		set_error("nvme: coherent allocation of %zu bytes: %s", len,
			  iodma_strerror(err));
	return err;
}

int nvme_open(struct nvme_ctrl *c, struct iodma_domain *d, const char *bdf,
	      uint32_t nsid)
{
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	void *bar;
	uint32_t mqes;
	int err;

	memset(c, 0, sizeof(*c));
	c->domain = d;
	c->nsid = nsid;
	err = iodma_vfio_device_open(d, bdf, &c->vdev);
	if (err) {
		set_error("nvme: open %s: %s", bdf, iodma_vfio_last_error());
		return err;
	}
	err = iodma_vfio_map_bar(c->vdev, 0, &bar, &c->bar_len);
	if (err) {
		set_error("nvme: map BAR0 of %s: %s", bdf, iodma_strerror(err));
		goto fail;
	}
	c->bar = bar;
	if (c->bar_len < REG_DBS + 8 * 4) {
		set_error("nvme: BAR0 of %s is only %#llx bytes", bdf,
			  (unsigned long long)c->bar_len);
		err = -ENODEV;
		goto fail;
	}
	o.domain = d;
	o.bounce = IODMA_BOUNCE_NEVER;
	err = iodma_dev_create(&o, &c->dev);
	if (err) {
		set_error("nvme: iodma_dev_create: %s", iodma_strerror(err));
		goto fail;
	}
	err = iodma_vfio_set_bus_master(c->vdev, true);
	if (err) {
		set_error("nvme: bus master: %s", iodma_strerror(err));
		goto fail;
	}

	c->cap = rd64(c, REG_CAP);
	if (c->cap == UINT64_MAX || ((c->cap >> 37) & 1) == 0) {
		set_error("nvme: CAP %#llx: no NVM command set",
			  (unsigned long long)c->cap);
		err = -ENODEV;
		goto fail;
	}
	if (((c->cap >> 48) & 0xf) != 0) {
		set_error("nvme: CAP.MPSMIN > 4 KiB is not supported");
		err = -EOPNOTSUPP;
		goto fail;
	}
	c->dstrd = 4u << ((c->cap >> 32) & 0xf);
	/* Doorbells of queues 0 and 1 (SQ and CQ each) must lie inside BAR0. */
	if (REG_DBS + 4ull * c->dstrd > c->bar_len) {
		set_error("nvme: BAR0 of %s (%#llx bytes) is too small for doorbell stride %u",
			  bdf, (unsigned long long)c->bar_len, c->dstrd);
		err = -ENODEV;
		goto fail;
	}
	c->timeout_ms = (uint32_t)((c->cap >> 24) & 0xff) * 500u;
	if (c->timeout_ms < 1000)
		c->timeout_ms = 1000;
	mqes = (uint32_t)(c->cap & 0xffff) + 1;

	/* Reset: CC.EN = 0, wait for CSTS.RDY = 0. */
	wr32(c, REG_CC, rd32(c, REG_CC) & ~CC_EN);
	err = wait_ready(c, 0);
	if (err)
		goto fail;

	c->aq_size = (uint16_t)(mqes < AQ_SIZE ? mqes : AQ_SIZE);
	err = alloc_q(c, (size_t)c->aq_size * SQE_SIZE, &c->asq, &c->asq_iova);
	if (!err)
		err = alloc_q(c, (size_t)c->aq_size * CQE_SIZE, &c->acq, &c->acq_iova);
	if (err)
		goto fail;
	c->acq_phase = 1;
	wr32(c, REG_AQA, (uint32_t)(c->aq_size - 1) << 16 | (uint32_t)(c->aq_size - 1));
	wr64(c, REG_ASQ, c->asq_iova);
	wr64(c, REG_ACQ, c->acq_iova);
	/* NVM command set, 4 KiB pages (MPS 0), round robin, 64-byte SQEs,
	 * 16-byte CQEs. */
	wr32(c, REG_CC, CC_IOCQES(4) | CC_IOSQES(6) | CC_EN);
	err = wait_ready(c, 1);
	if (err)
		goto fail;

	err = identify_all(c);
	if (err)
		goto fail;

	c->ioq_size = (uint16_t)(mqes < IOQ_MAX ? mqes : IOQ_MAX);
	c->qd = c->ioq_size - 1u < NVME_MAX_QD ? c->ioq_size - 1u : NVME_MAX_QD;
	err = alloc_q(c, (size_t)c->ioq_size * SQE_SIZE, &c->iosq, &c->iosq_iova);
	if (!err)
		err = alloc_q(c, (size_t)c->ioq_size * CQE_SIZE, &c->iocq, &c->iocq_iova);
	if (!err)
		err = alloc_q(c, (size_t)c->qd * NVME_PAGE, &c->prp, &c->prp_iova);
	if (err)
		goto fail;
	c->iocq_phase = 1;
	err = create_io_queues(c);
	if (err)
		goto fail;

	/* One PRP list page per command: 1 + PRP_PER_PAGE pages at most, so
	 * PRP_PER_PAGE full pages whatever PRP1's offset. */
	c->max_xfer = PRP_PER_PAGE * NVME_PAGE;
	if (c->mdts_bytes && c->mdts_bytes < c->max_xfer)
		c->max_xfer = c->mdts_bytes;
	c->max_xfer -= c->max_xfer % c->lba_size;
	return 0;

fail:
	nvme_close(c);
	return err;
}

static void free_q(struct nvme_ctrl *c, void **va, uint64_t iova, size_t len)
{
	if (*va)
		iodma_free_coherent(c->dev, len, *va, iova);
	*va = NULL;
}

void nvme_close(struct nvme_ctrl *c)
{
	if (c->bar) {
		/* Controller reset drops the queues; then no more DMA. */
		wr32(c, REG_CC, rd32(c, REG_CC) & ~CC_EN);
		wait_ready(c, 0);
	}
	if (c->vdev)
		iodma_vfio_set_bus_master(c->vdev, false);
	if (c->dev) {
		free_q(c, &c->prp, c->prp_iova, (size_t)c->qd * NVME_PAGE);
		free_q(c, &c->iocq, c->iocq_iova, (size_t)c->ioq_size * CQE_SIZE);
		free_q(c, &c->iosq, c->iosq_iova, (size_t)c->ioq_size * SQE_SIZE);
		free_q(c, &c->acq, c->acq_iova, (size_t)c->aq_size * CQE_SIZE);
		free_q(c, &c->asq, c->asq_iova, (size_t)c->aq_size * SQE_SIZE);
		iodma_dev_destroy(c->dev);
	}
	iodma_vfio_device_close(c->vdev);
	memset(c, 0, sizeof(*c));
}

/* ---- I/O queue ------------------------------------------------------------- */

/* PRP1 / PRP2 for [iova, iova + len), IOVA-contiguous, using PRP list page
 * @slot when more than two pages are touched.  PRP1 may carry an offset;
 * every later entry is page aligned. */
static void build_prps(struct nvme_ctrl *c, unsigned int slot, uint64_t iova,
		       size_t len, uint64_t *prp1, uint64_t *prp2)
{
	uint64_t off = iova & (NVME_PAGE - 1), next = iova - off + NVME_PAGE;
	uint64_t first = NVME_PAGE - off, *list;
	size_t rest, n;

	*prp1 = iova;
	*prp2 = 0;
	if (len <= first)
		return;
	rest = len - first;
	if (rest <= NVME_PAGE) {
		*prp2 = next;
		return;
	}
	list = (uint64_t *)((uint8_t *)c->prp + (size_t)slot * NVME_PAGE);
	n = (rest + NVME_PAGE - 1) / NVME_PAGE;
	for (size_t i = 0; i < n; i++)
		list[i] = next + i * NVME_PAGE;
	*prp2 = c->prp_iova + (uint64_t)slot * NVME_PAGE;
}

static void io_push(struct nvme_ctrl *c, const uint32_t cmd[16])
{
	memcpy((uint8_t *)c->iosq + (size_t)c->iosq_tail * SQE_SIZE, cmd, SQE_SIZE);
	c->iosq_tail = (uint16_t)((c->iosq_tail + 1) % c->ioq_size);
}

/* Reap one I/O completion if there is one: 1 and its cid and status, or 0. */
static int io_reap(struct nvme_ctrl *c, uint16_t *cid, int *status)
{
	volatile uint32_t *cqe = (volatile uint32_t *)((uint8_t *)c->iocq +
						       (size_t)c->iocq_head * CQE_SIZE);
	uint32_t d3 = cqe[3];

	if (((d3 >> 16) & 1) != c->iocq_phase)
		return 0;
	/* As in admin_cmd(): phase bit, then the rest (dma_rmb). */
	iodma_dma_rmb();
	d3 = cqe[3];
	*cid = (uint16_t)(d3 & 0xffff);
	*status = (int)(d3 >> 17);
	if (++c->iocq_head == c->ioq_size) {
		c->iocq_head = 0;
		c->iocq_phase ^= 1;
	}
	return 1;
}

int nvme_io_batch(struct nvme_ctrl *c, struct nvme_io *ios, size_t n)
{
	struct nvme_io *slot_io[NVME_MAX_QD] = { 0 };
	uint32_t free_slots[NVME_MAX_QD], nfree = c->qd;
	size_t next = 0, done = 0;
	uint64_t end;
	int ret = 0;

	if (c->failed)
		return -EIO;
	for (size_t i = 0; i < n; i++) {
		uint64_t blocks = ios[i].len / c->lba_size;

		if (!ios[i].len || ios[i].len % c->lba_size || ios[i].len > c->max_xfer ||
		    (ios[i].iova & 3) || ios[i].lba >= c->nr_lbas ||
		    blocks > c->nr_lbas - ios[i].lba) {
			set_error("nvme: bad request %zu: lba %llu len %zu iova %#llx",
				  i, (unsigned long long)ios[i].lba, ios[i].len,
				  (unsigned long long)ios[i].iova);
			return -EINVAL;
		}
	}
	for (uint32_t i = 0; i < c->qd; i++)
		free_slots[i] = c->qd - 1 - i;
	end = now_ms() + CMD_TIMEOUT_MS;
	while (done < n) {
		bool pushed = false;
		uint16_t cid;
		int st, reaped = 0;

		while (next < n && nfree) {
			struct nvme_io *io = &ios[next++];
			uint32_t slot = free_slots[--nfree], cmd[16] = { 0 };
			uint64_t prp1, prp2;
			uint32_t nlb = (uint32_t)(io->len / c->lba_size) - 1;

			build_prps(c, slot, io->iova, io->len, &prp1, &prp2);
			cmd[0] = (io->write ? IO_WRITE : IO_READ) | slot << 16;
			cmd[1] = c->nsid;
			cmd[6] = (uint32_t)prp1;
			cmd[7] = (uint32_t)(prp1 >> 32);
			cmd[8] = (uint32_t)prp2;
			cmd[9] = (uint32_t)(prp2 >> 32);
			cmd[10] = (uint32_t)io->lba;
			cmd[11] = (uint32_t)(io->lba >> 32);
			cmd[12] = nlb;
			io->status = -ETIMEDOUT;
			slot_io[slot] = io;
			io_push(c, cmd);
			pushed = true;
		}
		if (pushed)
			sq_doorbell(c, 1, c->iosq_tail);
		while (io_reap(c, &cid, &st)) {
			reaped++;
			if (cid >= c->qd || !slot_io[cid]) {
				set_error("nvme: completion for unknown cid %u", cid);
				ret = -EIO;
				continue;
			}
			slot_io[cid]->status = st;
			if (st && !ret) {
				set_error("nvme: %s lba %llu: status %#x (SCT %u SC %#x)",
					  slot_io[cid]->write ? "WRITE" : "READ",
					  (unsigned long long)slot_io[cid]->lba, st,
					  (st >> 8) & 7, st & 0xff);
				ret = -EIO;
			}
			slot_io[cid] = NULL;
			free_slots[nfree++] = cid;
			done++;
			c->commands++;
		}
		if (reaped) {
			cq_doorbell(c, 1, c->iocq_head);
			end = now_ms() + CMD_TIMEOUT_MS;
		} else if (now_ms() > end) {
			set_error("nvme: I/O timed out with %zu of %zu commands done",
				  done, n);
			ctrl_fail(c);
			return -ETIMEDOUT;
		}
	}
	return ret;
}

int nvme_rw(struct nvme_ctrl *c, bool write, uint64_t lba, uint64_t iova,
	    size_t len)
{
	struct nvme_io ios[NVME_MAX_QD];
	size_t off = 0;

	while (off < len) {
		size_t n = 0;
		int err;

		while (off < len && n < NVME_MAX_QD) {
			size_t l = len - off < c->max_xfer ? len - off : c->max_xfer;

			ios[n].write = write;
			ios[n].lba = lba + off / c->lba_size;
			ios[n].iova = iova + off;
			ios[n].len = l;
			n++;
			off += l;
		}
		err = nvme_io_batch(c, ios, n);
		if (err)
			return err;
	}
	return 0;
}

int nvme_io_raw(struct nvme_ctrl *c, const uint32_t cmd_in[16])
{
	uint32_t cmd[16];
	uint64_t end = now_ms() + CMD_TIMEOUT_MS;
	uint16_t cid;
	int st;

	if (c->failed)
		return -EIO;
	memcpy(cmd, cmd_in, sizeof(cmd));
	cmd[0] = (cmd[0] & 0xffffu) | (uint32_t)0 << 16;	/* slot 0 */
	io_push(c, cmd);
	sq_doorbell(c, 1, c->iosq_tail);
	while (!io_reap(c, &cid, &st)) {
		if (now_ms() > end) {
			set_error("nvme: raw I/O command timed out");
			ctrl_fail(c);
			return -ETIMEDOUT;
		}
	}
	cq_doorbell(c, 1, c->iocq_head);
	c->commands++;
	return st;
}

/* ---- copy ------------------------------------------------------------------- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A data buffer of @len bytes: registered (page-aligned mmap, registered
 * with @data) or from the heap.  NULL on failure. */
static uint8_t *buf_alloc(struct iodma_dev *data, size_t len, bool registered)
{
	uint8_t *p;
	int err;

	if (!registered) {
		p = malloc(len);
		if (!p)
			set_error("nvme: malloc %zu bytes failed", len);
		return p;
	}
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		 -1, 0);
	if (p == MAP_FAILED) {
		set_error("nvme: mmap %zu bytes: %s", len, strerror(errno));
		return NULL;
	}
	err = iodma_dev_register(data, p, len, NULL);
	if (err) {
		set_error("nvme: iodma_dev_register %zu bytes: %s", len, iodma_strerror(err));
		munmap(p, len);
		return NULL;
	}
	return p;
}

static void buf_free(struct iodma_dev *data, uint8_t *p, size_t len,
		     bool registered)
{
	if (!p)
		return;
	if (!registered) {
		free(p);
		return;
	}
	iodma_dev_unregister(data, p, len);
	munmap(p, len);
}

/* Move [buf, buf + len) to or from the namespace at @lba: batches of up to
 * c->qd commands, each chunk mapped with iodma_map_single() before the
 * batch and unmapped after it. */
static int copy_phase(struct nvme_ctrl *c, struct iodma_dev *data, bool write,
		      uint8_t *buf, size_t len, uint64_t lba, uint64_t *cmds,
		      uint64_t *maps)
{
	enum iodma_dir dir = write ? IODMA_TO_DEVICE : IODMA_FROM_DEVICE;
	struct nvme_io ios[NVME_MAX_QD];
	size_t off = 0;
	int err = 0;

	while (off < len && !err) {
		size_t n = 0;

		while (off < len && n < c->qd) {
			size_t l = len - off < c->max_xfer ? len - off : c->max_xfer;

			err = iodma_map_single(data, buf + off, l, dir, &ios[n].iova);
			if (err) {
				set_error("nvme: iodma_map_single %zu bytes: %s", l,
					  iodma_strerror(err));
				break;
			}
			(*maps)++;
			ios[n].write = write;
			ios[n].lba = lba + off / c->lba_size;
			ios[n].len = l;
			n++;
			off += l;
		}
		if (!err && n) {
			err = nvme_io_batch(c, ios, n);
			*cmds += n;
		}
		for (size_t i = 0; i < n; i++)
			iodma_unmap_single(data, ios[i].iova, ios[i].len, dir);
	}
	return err;
}

int nvme_copy(struct nvme_ctrl *c, struct iodma_dev *data, const void *src,
	      size_t len, uint64_t lba, bool registered,
	      struct nvme_copy_result *r)
{
	size_t blocks_len, alloc_len;
	uint8_t *wbuf = NULL, *rbuf = NULL;
	double t0;
	int err;

	memset(r, 0, sizeof(*r));
	if (!len)
		return -EINVAL;
	blocks_len = (len + c->lba_size - 1) / c->lba_size * c->lba_size;
	if (blocks_len / c->lba_size > c->nr_lbas - lba || lba >= c->nr_lbas) {
		set_error("nvme: %zu bytes do not fit the namespace (%llu blocks of %u)",
			  len, (unsigned long long)c->nr_lbas, c->lba_size);
		return -EFBIG;
	}
	alloc_len = (blocks_len + NVME_PAGE - 1) / NVME_PAGE * NVME_PAGE;
	wbuf = buf_alloc(data, alloc_len, registered);
	rbuf = wbuf ? buf_alloc(data, alloc_len, registered) : NULL;
	if (!rbuf) {
		buf_free(data, wbuf, alloc_len, registered);
		return -ENOMEM;
	}
	memcpy(wbuf, src, len);
	memset(wbuf + len, 0, alloc_len - len);
	memset(rbuf, 0, alloc_len);

	t0 = now_s();
	err = copy_phase(c, data, true, wbuf, blocks_len, lba, &r->write_cmds,
			 &r->maps);
	r->write_s = now_s() - t0;
	if (!err) {
		t0 = now_s();
		err = copy_phase(c, data, false, rbuf, blocks_len, lba,
				 &r->read_cmds, &r->maps);
		r->read_s = now_s() - t0;
	}
	buf_free(data, wbuf, alloc_len, registered);
	if (err) {
		buf_free(data, rbuf, alloc_len, registered);
		return err;
	}
	r->bytes = len;
	r->verified = memcmp(rbuf, src, len) == 0;
	r->readback = rbuf;
	r->alloc_len = alloc_len;
	r->registered = registered;
	return 0;
}

void nvme_copy_release(struct iodma_dev *data, struct nvme_copy_result *r)
{
	buf_free(data, r->readback, r->alloc_len, r->registered);
	r->readback = NULL;
}
