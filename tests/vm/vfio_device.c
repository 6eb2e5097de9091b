/* SPDX-License-Identifier: MIT */
/*
 * vfio_device.c - VFIO device access against a real kernel.
 *
 *   vfio_device --backend vfio|iommufd --device BDF [--device BDF]...
 *
 * For each device: region info of every region, config space (vendor and
 * device id, a writable register's round trip), BAR0 mapped and a register
 * read (NVMe: CAP must be plausible; virtio: its BARs), bus master on/off,
 * reset, interrupt info and MSI-X / MSI / INTx delivery to eventfds enabled
 * and disabled, iodma_vfio_register_bars() + iodma_mmio_phys_to_virt()
 * bounded by the BAR size.  For an NVMe controller, a real DMA: the admin
 * queues and an Identify buffer are mapped through the domain, Identify
 * Controller is submitted, and the serial number must arrive in host
 * memory; after the buffer is unmapped a second Identify must not reach it.
 * Soft and identity backends have no device: every test is skipped.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <iodma.h>
#include <iodma/vfio.h>

#include "guest.h"
#include "tap.h"

static struct guest_args args = GUEST_ARGS_INIT("vfio_device");

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static uint32_t mmio_r32(void *bar, uint32_t off)
{
	return *(volatile uint32_t *)((char *)bar + off);
}

static uint64_t mmio_r64(void *bar, uint32_t off)
{
	/* Two 32-bit reads: not every device model takes 64-bit accesses. */
	return mmio_r32(bar, off) | ((uint64_t)mmio_r32(bar, off + 4) << 32);
}

static void mmio_w32(void *bar, uint32_t off, uint32_t v)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	*(volatile uint32_t *)((char *)bar + off) = v;
}

static void mmio_w64(void *bar, uint32_t off, uint64_t v)
{
	mmio_w32(bar, off, (uint32_t)v);
	mmio_w32(bar, off + 4, (uint32_t)(v >> 32));
}

/* Wait until (CSTS & 1) == want, up to ~10 s (TCG is slow). */
static bool nvme_wait_ready(void *bar, uint32_t want)
{
	for (int i = 0; i < 1000; i++) {
		uint32_t csts = mmio_r32(bar, 0x1c);

		if (csts == 0xffffffffu)
			return false;
		if ((csts & 1) == want)
			return true;
		sleep_ms(10);
	}
	return false;
}

/* Submit one admin command in slot @slot and wait for its completion.
 * Returns the status field, or -1 on timeout. */
static int nvme_admin(void *bar, uint32_t dstrd, uint8_t *sq, uint8_t *cq,
		      unsigned int slot, const uint32_t cmd[16])
{
	volatile uint32_t *cqe = (volatile uint32_t *)(cq + slot * 16);

	memcpy(sq + slot * 64, cmd, 64);
	mmio_w32(bar, 0x1000, slot + 1);		/* SQ0 tail */
	for (int i = 0; i < 1000; i++) {
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (cqe[3] & 0x10000) {			/* phase 1 */
			mmio_w32(bar, 0x1000 + (4u << dstrd), slot + 1); /* CQ0 head */
			return (int)((cqe[3] >> 17) & 0x7fff);
		}
		sleep_ms(10);
	}
	return -1;
}

/* Map page @i of @mem for the device: at base + i pages, or (no-IOMMU) at
 * its physical address.  Returns the IOVA, or 0 on failure. */
static uint64_t map_page(struct iodma_domain *d, uint8_t *mem, uint64_t base,
			 unsigned int i)
{
	uint64_t pg = iodma_page_size(), iova;

	iova = args.noiommu ? guest_phys_of(mem + i * pg) : base + i * pg;
	if (!iova || iodma_domain_map(d, iova, pg, mem + i * pg, IODMA_PERM_RW))
		return 0;
	return iova;
}

/* A real DMA through the domain: NVMe Identify Controller. */
static void nvme_identify(struct iodma_domain *d, struct iodma_vfio_device *vd,
			  void *bar)
{
	uint64_t cap = mmio_r64(bar, 0), pg = iodma_page_size();
	uint32_t dstrd = (uint32_t)(cap >> 32) & 0xf, cmd[16];
	uint64_t base = 0, bytes, iova[3] = { 0 };
	uint8_t *mem;
	int r, st;

	mem = mmap(NULL, 3 * pg, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!TAP_OK(mem != MAP_FAILED, "nvme_dma_buffers", "mmap"))
		return;
	memset(mem, 0, 2 * pg);
	memset(mem + 2 * pg, 0xaa, pg);
	if (!args.noiommu) {
		r = iodma_iova_alloc(d, 3 * pg, pg, 0xffffffffffffull, &base);
		if (!TAP_OK(r == 0, "nvme_iova_alloc", "ret %d", r))
			goto out_unmap_mem;
	}
	for (unsigned int i = 0; i < 3; i++)
		iova[i] = map_page(d, mem, base, i);
	if (!TAP_OK(iova[0] && iova[1] && iova[2], "nvme_map_queues_and_buffer",
		    "%s", iodma_vfio_last_error()))
		goto out_domain;
	TAP_DIAG("NVMe ASQ %#" PRIx64 " ACQ %#" PRIx64 " data %#" PRIx64,
		 iova[0], iova[1], iova[2]);
	iodma_vfio_set_bus_master(vd, true);
	mmio_w32(bar, 0x14, 0);				/* CC.EN = 0 */
	if (!TAP_OK(nvme_wait_ready(bar, 0), "nvme_disable", "CSTS %#x",
		    mmio_r32(bar, 0x1c)))
		goto out_domain;
	mmio_w32(bar, 0x24, (15u << 16) | 15u);		/* AQA: 16 entries */
	mmio_w64(bar, 0x28, iova[0]);			/* ASQ */
	mmio_w64(bar, 0x30, iova[1]);			/* ACQ */
	mmio_w32(bar, 0x14, (4u << 20) | (6u << 16) | 1u); /* CQES, SQES, EN */
	if (!TAP_OK(nvme_wait_ready(bar, 1), "nvme_enable", "CSTS %#x",
		    mmio_r32(bar, 0x1c)))
		goto out_domain;
	memset(cmd, 0, sizeof(cmd));
	cmd[0] = 0x06 | (1u << 16);			/* Identify, cid 1 */
	cmd[6] = (uint32_t)iova[2];			/* PRP1 */
	cmd[7] = (uint32_t)(iova[2] >> 32);
	cmd[10] = 1;					/* CNS: controller */
	st = nvme_admin(bar, dstrd, mem, mem + pg, 0, cmd);
	TAP_OK(st == 0, "nvme_identify_completes", "status %d", st);
	TAP_OK(memmem(mem + 2 * pg + 4, 20, "deadbeef", 8) != NULL,
	       "nvme_identify_dma_reached_host_memory",
	       "SN '%.20s' VID %#x", (char *)mem + 2 * pg + 4,
	       mem[2 * pg] | mem[2 * pg + 1] << 8);
	TAP_DIAG("NVMe identify: VID %#x SN '%.20s' MN '%.16s'",
		 mem[2 * pg] | mem[2 * pg + 1] << 8, (char *)mem + 2 * pg + 4,
		 (char *)mem + 2 * pg + 24);

	/* Unmap the data page: the device must no longer reach it (QEMU
	 * completes the command anyway; the host page must stay untouched).
	 * Without an IOMMU nothing can block it: not checked. */
	r = iodma_domain_unmap_gaps(d, iova[2], pg, &bytes);
	TAP_OK(r == 0 && bytes == pg, "nvme_unmap_data_page", "ret %d", r);
	iova[2] = 0;
	if (!args.noiommu) {
		bool untouched = true;

		memset(mem + 2 * pg, 0xaa, pg);
		cmd[0] = 0x06 | (2u << 16);
		st = nvme_admin(bar, dstrd, mem, mem + pg, 1, cmd);
		TAP_DIAG("identify into an unmapped IOVA: status %d", st);
		for (uint64_t i = 0; i < pg; i++)
			untouched &= mem[2 * pg + i] == 0xaa;
		TAP_OK(untouched, "nvme_dma_blocked_after_unmap",
		       "the device wrote to a page no longer mapped");
	}
	mmio_w32(bar, 0x14, 0);
	nvme_wait_ready(bar, 0);
out_domain:
	iodma_vfio_set_bus_master(vd, false);
	for (unsigned int i = 0; i < 3; i++)
		if (iova[i])
			iodma_domain_unmap(d, iova[i], pg);
	if (!args.noiommu)
		iodma_iova_free(d, base, 3 * pg);
out_unmap_mem:
	munmap(mem, 3 * pg);
}

static void irq_tests(struct iodma_vfio_device *vd)
{
	static const char *const kind[] = { "intx", "msi", "msix" };
	uint32_t count[3] = { 0 };
	enum iodma_vfio_irq_type used = IODMA_VFIO_IRQ_AUTO;
	int efd[4], r;

	for (int t = 0; t < 3; t++) {
		r = iodma_vfio_irq_info(vd, (enum iodma_vfio_irq_type)t, &count[t]);
		TAP_OK(r == 0, "irq_info", "%s: ret %d", kind[t], r);
	}
	TAP_DIAG("IRQs: INTx %u MSI %u MSI-X %u", count[0], count[1], count[2]);
	for (int i = 0; i < 4; i++)
		efd[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	r = iodma_vfio_irq_enable(vd, IODMA_VFIO_IRQ_AUTO, 4, efd, &used);
	TAP_OK(r == 0 && (int)used == (count[2] ? 2 : count[1] ? 1 : 0),
	       "irq_enable_auto_prefers_msix", "ret %d used %d: %s", r, used,
	       iodma_vfio_last_error());
	r = iodma_vfio_irq_disable(vd);
	TAP_OK(r == 0, "irq_disable", "ret %d", r);
	for (int t = 2; t >= 0; t--) {
		char name[40];

		snprintf(name, sizeof(name), "irq_enable_%s", kind[t]);
		if (!count[t]) {
			TAP_SKIP(name, "the device has none");
			continue;
		}
		r = iodma_vfio_irq_enable(vd, (enum iodma_vfio_irq_type)t, 2, efd, &used);
		TAP_OK(r == 0 && (int)used == t, name, "ret %d: %s", r,
		       iodma_vfio_last_error());
		r = iodma_vfio_irq_disable(vd);
		snprintf(name, sizeof(name), "irq_disable_%s", kind[t]);
		TAP_OK(r == 0, name, "ret %d", r);
	}
	r = iodma_vfio_irq_enable(vd, IODMA_VFIO_IRQ_MSIX, 1, (int[]){ -1 }, NULL);
	TAP_OK(r == -EINVAL, "irq_enable_bad_eventfd_einval", "ret %d", r);
	for (int i = 0; i < 4; i++)
		close(efd[i]);
}

static void device_tests(struct iodma_domain *d, const char *bdf)
{
	struct iodma_vfio_device *vd;
	struct iodma_vfio_region_info ri;
	struct iodma_dev_opts dopts = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_dev *dev;
	uint32_t nr_regions = 0, nr_irqs = 0, id = 0, class = 0, bar0 = 0;
	uint16_t cmd = 0;
	uint8_t cls = 0, v;
	void *bar = NULL, *va;
	uint64_t barlen = 0, bar_addr;
	bool nvme, ok;
	int r;

	TAP_DIAG("device %s", bdf);
	r = iodma_vfio_device_open(d, bdf, &vd);
	if (!TAP_OK(r == 0, "device_open", "%s: ret %d: %s", bdf, r,
		    iodma_vfio_last_error()))
		return;
	TAP_OK(iodma_vfio_device_fd(vd) >= 0, "device_fd", "fd");
	r = iodma_vfio_device_counts(vd, &nr_regions, &nr_irqs);
	TAP_OK(r == 0 && nr_regions >= 9 && nr_irqs >= 3, "device_counts",
	       "regions %u irqs %u", nr_regions, nr_irqs);
	ok = true;
	for (uint32_t i = 0; i < nr_regions; i++) {
		r = iodma_vfio_region_info(vd, i, &ri);
		ok &= r == 0;
		if (r == 0 && ri.size)
			TAP_DIAG("region %u: size %#" PRIx64 " offset %#" PRIx64 " flags %s%s%s",
				 i, ri.size, ri.offset,
				 ri.flags & IODMA_VFIO_REGION_READ ? "r" : "-",
				 ri.flags & IODMA_VFIO_REGION_WRITE ? "w" : "-",
				 ri.flags & IODMA_VFIO_REGION_MMAP ? "m" : "-");
	}
	TAP_OK(ok, "region_info_all", "a region query failed");
	TAP_OK(iodma_vfio_region_info(vd, nr_regions, &ri) == -EINVAL,
	       "region_info_bad_index_einval", "index %u", nr_regions);

	/* Config space. */
	r = iodma_vfio_config_read(vd, 0, &id, 4);
	r |= iodma_vfio_config_read(vd, 8, &class, 4);
	TAP_OK(r == 0 && (id & 0xffff) != 0xffff && (id & 0xffff) != 0,
	       "config_read_ids", "ret %d id %#x", r, id);
	class >>= 8;
	nvme = class == 0x010802;
	TAP_DIAG("vendor %#06x device %#06x class %#08x", id & 0xffff, id >> 16, class);
	if (!nvme)
		TAP_OK((id & 0xffff) == 0x1af4, "virtio_vendor_id",
		       "vendor %#x is neither NVMe class nor virtio", id & 0xffff);
	r = iodma_vfio_config_read(vd, 0x0c, &cls, 1);
	v = 0x10;
	r |= iodma_vfio_config_write(vd, 0x0c, &v, 1);
	v = 0;
	r |= iodma_vfio_config_read(vd, 0x0c, &v, 1);
	TAP_OK(r == 0 && v == 0x10, "config_write_round_trip",
	       "cache line size wrote 0x10 read %#x (ret %d)", v, r);
	iodma_vfio_config_write(vd, 0x0c, &cls, 1);
	TAP_OK(iodma_vfio_config_read(vd, 4096, &id, 4) == -EINVAL,
	       "config_read_past_end_einval", "offset 4096");

	/* Bus master. */
	r = iodma_vfio_set_bus_master(vd, true);
	r |= iodma_vfio_config_read(vd, 4, &cmd, 2);
	TAP_OK(r == 0 && (cmd & 4), "bus_master_on", "cmd %#x", cmd);
	r = iodma_vfio_set_bus_master(vd, false);
	r |= iodma_vfio_config_read(vd, 4, &cmd, 2);
	TAP_OK(r == 0 && !(cmd & 4), "bus_master_off", "cmd %#x", cmd);

	/* BAR0. */
	r = iodma_vfio_map_bar(vd, 0, &bar, &barlen);
	if (r == -EOPNOTSUPP || r == -ENOENT) {
		r = iodma_vfio_region_read(vd, 0, 0, &bar0, 4);
		TAP_OK(r == 0 || r == -EINVAL, "bar0_not_mappable_region_read",
		       "ret %d", r);
	} else {
		void *again = NULL;

		TAP_OK(r == 0 && bar && barlen >= 0x1000, "map_bar0",
		       "ret %d len %#" PRIx64 ": %s", r, barlen, iodma_vfio_last_error());
		TAP_OK(iodma_vfio_map_bar(vd, 0, &again, NULL) == 0 && again == bar,
		       "map_bar0_twice_same", "%p %p", bar, again);
		if (nvme && bar) {
			uint64_t cap = mmio_r64(bar, 0);
			uint32_t vs = mmio_r32(bar, 8), rd = 0;

			TAP_DIAG("NVMe CAP %#" PRIx64 " VS %#x", cap, vs);
			TAP_OK(cap != 0 && cap != UINT64_MAX && (cap & 0xffff) >= 1 &&
			       ((cap >> 37) & 1) && ((cap >> 24) & 0xff) != 0,
			       "nvme_cap_plausible", "CAP %#" PRIx64, cap);
			TAP_OK(vs >= 0x10000, "nvme_version_plausible", "VS %#x", vs);
			r = iodma_vfio_region_read(vd, 0, 8, &rd, 4);
			TAP_OK(r == 0 && rd == vs, "bar0_pread_matches_mmio",
			       "ret %d %#x vs %#x", r, rd, vs);
		}
	}
	TAP_OK(iodma_vfio_map_bar(vd, 6, &va, NULL) == -EINVAL, "map_bar_bad_index_einval",
	       "bar 6");

	/* Reset. */
	r = iodma_vfio_reset(vd);
	if (r == -EOPNOTSUPP)
		TAP_SKIP("device_reset", "no reset method");
	else
		TAP_OK(r == 0, "device_reset", "ret %d: %s", r, iodma_vfio_last_error());

	irq_tests(vd);

	/* BARs as MMIO windows of the device's iodma_dev. */
	dopts.domain = d;
	dopts.bounce = IODMA_BOUNCE_NEVER;
	r = iodma_dev_create(&dopts, &dev);
	if (TAP_OK(r == 0, "iodma_dev_create", "ret %d", r)) {
		r = iodma_vfio_register_bars(vd, dev);
		TAP_OK(r >= 1 || (!nvme && r >= 0), "register_bars", "ret %d: %s", r,
		       iodma_vfio_last_error());
		iodma_vfio_config_read(vd, 0x10, &bar0, 4);
		bar_addr = bar0 & ~0xfull;
		if ((bar0 & 6) == 4) {
			uint32_t hi = 0;

			iodma_vfio_config_read(vd, 0x14, &hi, 4);
			bar_addr |= (uint64_t)hi << 32;
		}
		if (bar && !(bar0 & 1)) {
			TAP_DIAG("BAR0 bus address %#" PRIx64 " size %#" PRIx64, bar_addr, barlen);
			va = NULL;
			r = iodma_mmio_phys_to_virt(dev, bar_addr, 4, &va);
			TAP_OK(r == 0 && va == bar, "mmio_phys_to_virt_bar0", "ret %d", r);
			r = iodma_mmio_phys_to_virt(dev, bar_addr + barlen - 4, 4, &va);
			TAP_OK(r == 0 && va == (char *)bar + barlen - 4,
			       "mmio_phys_to_virt_bar0_last_word", "ret %d", r);
			r = iodma_mmio_phys_to_virt(dev, bar_addr + barlen - 2, 4, &va);
			TAP_OK(r == -EFAULT, "mmio_phys_to_virt_past_bar_efault", "ret %d", r);
			r = iodma_mmio_phys_to_virt(dev, bar_addr + barlen, 4, &va);
			TAP_OK(r == -EFAULT, "mmio_phys_to_virt_after_bar_efault", "ret %d", r);
		}
		iodma_dev_destroy(dev);
	}

	if (nvme && bar)
		nvme_identify(d, vd, bar);
	iodma_vfio_device_close(vd);
}

int main(int argc, char **argv)
{
	struct iodma_domain *d;
	int r;

	r = guest_start(&args, argc, argv, "vfio|iommufd", GUEST_ARGS_NOIOMMU,
			"vfio_device", "needs --backend vfio or iommufd");
	if (r >= 0)
		return r;
	if (args.nr_devices == 0)
		return guest_skip(&args, "vfio_device", "no --device given");
	/* vfio: no group at creation: device_open adds them (and narrows the
	 * placeholder caps to the kernel's). */
	r = guest_domain_create(&args, 0, &d);
	if (!TAP_OK(r == 0, "domain_create", "ret %d: %s", r, iodma_vfio_last_error()))
		return guest_result(&args);
	for (unsigned int i = 0; i < args.nr_devices; i++)
		device_tests(d, args.devices[i]);
	iodma_domain_destroy(d);
	return guest_result(&args);
}
