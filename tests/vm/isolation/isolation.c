// SPDX-License-Identifier: MIT
/*
 * isolation.c - device isolation through the IOMMU, proved with QEMU's NVMe
 * controller and the examples/nvme driver.
 *
 *   isolation --backend soft|vfio|iommufd [--device BDF]...
 *
 * The controller is told to write host memory (an NVMe READ: the device
 * writes the blocks it read into PRP1) at
 *   (a) an IOVA that was never mapped (reserved, not mapped);
 *   (b) an IOVA just unmapped (a READ through it worked a moment before);
 *   (c) a read-only mapping (IODMA_PERM_READ: the device may read it, as
 *       a WRITE command from it proves, but not write it);
 * and each time the host buffer behind (or formerly behind) the IOVA must
 * keep its canary, the guest kernel must log an IOMMU fault (read from
 * /dev/kmsg after the command; QEMU completes the command with status 0
 * anyway), and nothing else of the process may change: the domain's live
 * mappings, the iodma_dev counters, the map/unmap ioctl counts.  Fault
 * messages are rate-limited (about 10 per 5 s): each check waits 5.5 s
 * first.  (d) unmap-then-reuse: an IOVA unmapped and remapped to a new
 * buffer: the device's write lands in the new buffer, never in the old.
 * soft: nothing to do (SKIP).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <iodma.h>
#include <iodma/vfio.h>

#include "guest.h"
#include "nvme.h"
#include "tap.h"

#define PATTERN_LBA 20000u	/* where the READs read from */
#define SCRATCH_LBA 30000u	/* where the read-only buffer is written */
#define CANARY_OLD  0xa5
#define CANARY_NEW  0x3c

static struct guest_args args = GUEST_ARGS_INIT("isolation");
static uint64_t pg;
static uint8_t pattern[4096];	/* what PATTERN_LBA holds */

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static bool all_bytes(const uint8_t *p, size_t len, uint8_t v)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != v)
			return false;
	return true;
}

/* ---- the kernel log ---------------------------------------------------------- */

/* /dev/kmsg positioned at its end: later reads return only new records. */
static int kmsg_open(void)
{
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);

	if (fd >= 0)
		lseek(fd, 0, SEEK_END);
	return fd;
}

static bool is_fault_line(const char *msg)
{
	return strcasestr(msg, "DMAR") || strcasestr(msg, "DMA fault") ||
	       strcasestr(msg, "virtio_iommu") || strcasestr(msg, "viommu") ||
	       strcasestr(msg, "fault");
}

/* Does @msg name an address in [lo, lo + len)?  (DMAR: "fault addr
 * 0x7ffffdb000"; virtio-iommu: "page fault from EP 16 at 0xfffffffff000".) */
static bool names_address(const char *msg, uint64_t lo, uint64_t len)
{
	for (const char *p = strstr(msg, "0x"); p; p = strstr(p + 2, "0x")) {
		uint64_t a = strtoull(p, NULL, 16);

		if (a >= lo && a - lo < len)
			return true;
	}
	return false;
}

static void copy_line(char *dst, size_t size, const char *msg)
{
	size_t l = strlen(msg) < size ? strlen(msg) : size - 1;

	memcpy(dst, msg, l);
	dst[l] = '\0';
}

/* Read new records for up to @ms milliseconds, looking for a fault line
 * that names an address in [iova, iova + len): true when one was seen,
 * copied to @line.  Otherwise @line receives the first fault-like line
 * (e.g. "callbacks suppressed"), if any. */
static bool kmsg_fault(int fd, long ms, uint64_t iova, uint64_t len,
		       char *line, size_t size)
{
	char rec[1024];
	bool any = false;

	line[0] = '\0';
	if (fd < 0)
		return false;
	for (long waited = 0; waited <= ms; waited += 50) {
		for (;;) {
			ssize_t n = read(fd, rec, sizeof(rec) - 1);
			char *msg;

			if (n < 0 && errno == EPIPE)
				continue;	/* overwritten records: go on */
			if (n <= 0)
				break;
			rec[n] = '\0';
			msg = strchr(rec, ';');
			msg = msg ? msg + 1 : rec;
			msg[strcspn(msg, "\n")] = '\0';
			if (!is_fault_line(msg))
				continue;
			if (names_address(msg, iova, len)) {
				copy_line(line, size, msg);
				return true;
			}
			if (!any)
				copy_line(line, size, msg);
			any = true;
		}
		sleep_ms(50);
	}
	return false;
}

/* ---- state that must not change ------------------------------------------------ */

struct snapshot {
	uint64_t nr_mappings;
	struct iodma_dev_stats ctrl, data;
	struct iodma_vfio_stats ioctls;
};

static void snap(struct snapshot *s, struct iodma_domain *d, struct nvme_ctrl *c,
		 struct iodma_dev *data)
{
	memset(s, 0, sizeof(*s));
	s->ctrl = s->data = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	s->ioctls = IODMA_STRUCT_INIT(struct iodma_vfio_stats);
	s->nr_mappings = iodma_domain_nr_mappings(d);
	iodma_dev_get_stats(c->dev, &s->ctrl);
	iodma_dev_get_stats(data, &s->data);
	iodma_vfio_get_stats(d, &s->ioctls);
}

static bool same(const struct snapshot *a, const struct snapshot *b)
{
	return a->nr_mappings == b->nr_mappings &&
	       !memcmp(&a->ctrl, &b->ctrl, sizeof(a->ctrl)) &&
	       !memcmp(&a->data, &b->data, sizeof(a->data)) &&
	       a->ioctls.map_ioctls == b->ioctls.map_ioctls &&
	       a->ioctls.unmap_ioctls == b->ioctls.unmap_ioctls;
}

/* ---- commands ---------------------------------------------------------------------- */

/* NVMe READ of one page from PATTERN_LBA into @iova: the device writes
 * host memory at @iova.  Returns the completion status. */
static int device_write_to(struct nvme_ctrl *c, uint64_t iova)
{
	uint32_t cmd[16] = { 0 };

	cmd[0] = 0x02;
	cmd[1] = c->nsid;
	cmd[6] = (uint32_t)iova;
	cmd[7] = (uint32_t)(iova >> 32);
	cmd[10] = PATTERN_LBA;
	cmd[12] = 4096 / c->lba_size - 1;
	return nvme_io_raw(c, cmd);
}

/* NVMe WRITE of one page at @iova to SCRATCH_LBA: the device reads it. */
static int device_read_from(struct nvme_ctrl *c, uint64_t iova)
{
	uint32_t cmd[16] = { 0 };

	cmd[0] = 0x01;
	cmd[1] = c->nsid;
	cmd[6] = (uint32_t)iova;
	cmd[7] = (uint32_t)(iova >> 32);
	cmd[10] = SCRATCH_LBA;
	cmd[12] = 4096 / c->lba_size - 1;
	return nvme_io_raw(c, cmd);
}

/* One blocked device write: wait out the log rate limit, aim the READ at
 * @iova, then check @buf kept @canary, a fault was logged and the snapshot
 * did not move. */
static void blocked_write(const char *tag, struct iodma_domain *d,
			  struct nvme_ctrl *c, struct iodma_dev *data,
			  uint64_t iova, const uint8_t *buf, uint8_t canary)
{
	struct snapshot s0, s1;
	char name[80], line[512];
	bool logged;
	int fd, st;

	sleep_ms(5500);
	snap(&s0, d, c, data);
	fd = kmsg_open();
	st = device_write_to(c, iova);
	logged = kmsg_fault(fd, 3000, iova, pg, line, sizeof(line));
	if (fd >= 0)
		close(fd);
	snap(&s1, d, c, data);
	TAP_DIAG("%s: READ into IOVA %#" PRIx64 ": completion status %#x", tag, iova, st);
	snprintf(name, sizeof(name), "%s_host_buffer_untouched", tag);
	TAP_OK(all_bytes(buf, pg, canary), name, "the device wrote the host buffer");
	snprintf(name, sizeof(name), "%s_kernel_logged_fault", tag);
	TAP_OK(logged, name, "no DMAR / virtio-iommu fault at IOVA %#" PRIx64
	       " in /dev/kmsg%s; first fault-like line: '%s'", iova,
	       fd < 0 ? " (cannot open it)" : "", line);
	if (logged)
		TAP_DIAG("%s: kernel: %s", tag, line);
	snprintf(name, sizeof(name), "%s_nothing_else_changed", tag);
	TAP_OK(same(&s0, &s1), name,
	       "mappings %" PRIu64 " -> %" PRIu64 ", map ioctls %" PRIu64 " -> %" PRIu64,
	       s0.nr_mappings, s1.nr_mappings, s0.ioctls.map_ioctls, s1.ioctls.map_ioctls);
}

static uint8_t *page_buf(uint8_t fillv)
{
	uint8_t *p = mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			  -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	memset(p, fillv, pg);
	return p;
}

static void isolation_tests(struct iodma_domain *d, struct nvme_ctrl *c)
{
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_dev *data;
	uint8_t *ba, *bb, *bc, *bold, *bnew, *tmp;
	uint64_t ia = 0, ib = 0, ic = 0, idd = 0, it;
	int r, st;

	o.domain = d;
	o.bounce = IODMA_BOUNCE_NEVER;
	r = iodma_dev_create(&o, &data);
	if (!TAP_OK(r == 0, "data_dev_create", "ret %d", r))
		return;
	ba = page_buf(CANARY_OLD);
	bb = page_buf(CANARY_OLD);
	bc = page_buf(CANARY_OLD);
	bold = page_buf(CANARY_OLD);
	bnew = page_buf(CANARY_NEW);
	tmp = page_buf(0);
	if (!TAP_OK(ba && bb && bc && bold && bnew && tmp, "buffers", "mmap"))
		goto out;

	/* The blocks every READ returns: a pattern with no canary byte. */
	for (size_t i = 0; i < sizeof(pattern); i++)
		pattern[i] = (uint8_t)(0x11 + i % 0x80);
	memcpy(tmp, pattern, sizeof(pattern));
	r = iodma_map_single(data, tmp, pg, IODMA_TO_DEVICE, &it);
	if (!r) {
		r = nvme_rw(c, true, PATTERN_LBA, it, 4096);
		iodma_unmap_single(data, it, pg, IODMA_TO_DEVICE);
	}
	if (!TAP_OK(r == 0, "write_pattern_blocks", "ret %d %s", r, nvme_last_error()))
		goto out;

	/* IOVA reservations: nothing else will be mapped there. */
	r = iodma_iova_alloc(d, pg, pg, UINT64_MAX >> 16, &ia);
	r |= iodma_iova_alloc(d, pg, pg, UINT64_MAX >> 16, &ib);
	r |= iodma_iova_alloc(d, pg, pg, UINT64_MAX >> 16, &ic);
	r |= iodma_iova_alloc(d, pg, pg, UINT64_MAX >> 16, &idd);
	if (!TAP_OK(r == 0, "iova_reservations", "ret %d", r))
		goto out;

	/* (a) never mapped. */
	blocked_write("never_mapped", d, c, data, ia, ba, CANARY_OLD);

	/* (b) just unmapped: first show that the IOVA worked. */
	r = iodma_domain_map(d, ib, pg, bb, IODMA_PERM_RW);
	st = r ? -1 : device_write_to(c, ib);
	TAP_OK(r == 0 && st == 0 && !memcmp(bb, pattern, sizeof(pattern)),
	       "mapped_iova_reaches_buffer", "map %d status %d", r, st);
	memset(bb, CANARY_OLD, pg);
	r = iodma_domain_unmap(d, ib, pg);
	TAP_OK(r == 0, "unmap", "ret %d", r);
	blocked_write("just_unmapped", d, c, data, ib, bb, CANARY_OLD);

	/* (c) read-only for the device: it may not write; afterwards a WRITE
	 * command from the buffer (the device reads it) shows the mapping was
	 * live.  The blocked write comes first: QEMU's VT-d model refuses an
	 * access through a cached IOTLB entry without recording a fault. */
	r = iodma_domain_map(d, ic, pg, bc, IODMA_PERM_READ);
	TAP_OK(r == 0, "map_read_only", "ret %d", r);
	if (r == 0)
		blocked_write("read_only_mapping", d, c, data, ic, bc, CANARY_OLD);
	st = r ? -1 : device_read_from(c, ic);
	memset(tmp, 0, pg);
	if (r == 0 && st == 0 && iodma_map_single(data, tmp, pg, IODMA_FROM_DEVICE, &it) == 0) {
		if (nvme_rw(c, false, SCRATCH_LBA, it, 4096))
			st = -2;
		iodma_unmap_single(data, it, pg, IODMA_FROM_DEVICE);
	}
	TAP_OK(r == 0 && st == 0 && all_bytes(tmp, 4096, CANARY_OLD),
	       "read_only_mapping_readable_by_device", "map %d status %d", r, st);
	if (r == 0)
		iodma_domain_unmap(d, ic, pg);

	/* (d) unmap, then remap the IOVA to a new buffer. */
	r = iodma_domain_map(d, idd, pg, bold, IODMA_PERM_RW);
	r |= iodma_domain_unmap(d, idd, pg);
	r |= iodma_domain_map(d, idd, pg, bnew, IODMA_PERM_RW);
	st = r ? -1 : device_write_to(c, idd);
	TAP_OK(r == 0 && st == 0 && !memcmp(bnew, pattern, sizeof(pattern)),
	       "reused_iova_reaches_new_buffer", "map %d status %d", r, st);
	TAP_OK(all_bytes(bold, pg, CANARY_OLD), "reused_iova_never_reaches_old_buffer",
	       "the old buffer was written");
	if (r == 0)
		iodma_domain_unmap(d, idd, pg);

	iodma_iova_free(d, ia, pg);
	iodma_iova_free(d, ib, pg);
	iodma_iova_free(d, ic, pg);
	iodma_iova_free(d, idd, pg);
out:
	{
		uint8_t *bufs[] = { ba, bb, bc, bold, bnew, tmp };

		for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
			if (bufs[i])
				munmap(bufs[i], pg);
	}
	iodma_dev_destroy(data);
}

int main(int argc, char **argv)
{
	struct iodma_domain *d;
	struct nvme_ctrl c;
	const char *bdf;
	int r;

	pg = iodma_page_size();
	r = guest_start(&args, argc, argv, "soft|vfio|iommufd", 0, "isolation",
			"needs --backend vfio or iommufd (a real IOMMU)");
	if (r >= 0)
		return r;
	bdf = guest_find_device(&args, 0x010802, -1, -1);
	if (!bdf)
		return guest_skip(&args, "isolation",
				  "no NVMe controller (class 0x010802) in --device");
	r = guest_domain_create(&args, 0, &d);
	if (!TAP_OK(r == 0, "domain_create", "ret %d: %s", r, iodma_vfio_last_error()))
		return guest_result(&args);
	r = nvme_open(&c, d, bdf, 1);
	if (TAP_OK(r == 0, "nvme_open", "%s: ret %d: %s", bdf, r, nvme_last_error())) {
		isolation_tests(d, &c);
		nvme_close(&c);
	}
	iodma_domain_destroy(d);
	return guest_result(&args);
}
