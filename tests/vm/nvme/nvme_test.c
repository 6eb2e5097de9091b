// SPDX-License-Identifier: MIT
/*
 * nvme_test.c - the examples/nvme driver against QEMU's NVMe controller.
 *
 *   nvme_test --backend soft|vfio|iommufd [--device BDF]...
 *
 * vfio and iommufd: the controller (PCI class 0x010802 among the --device
 * list) is opened, reset and enabled; IDENTIFY must report serial
 * "deadbeef" and a 64 MiB namespace; blocks are written and read back from
 * registered memory (maps are lookups: no new domain mapping, no ioctl) and
 * from heap buffers through streaming maps, with transfers of one block,
 * two pages (PRP2), many pages (a PRP list), a whole max transfer and an
 * unaligned start; then a real file of the initramfs (/bin/busybox) is
 * copied both ways and its SHA-256 compared, the figures printed as TAP
 * comments.  iodma_vfio_get_stats() is checked too: one MAP_DMA /
 * IOAS_MAP per domain map, one unmap ioctl per unmap, -EINVAL for a soft
 * domain.  soft: nothing to do (SKIP).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <iodma.h>
#include <iodma/vfio.h>

#include "guest.h"
#include "nvme.h"
#include "tap.h"

#define REAL_FILE   "/bin/busybox"

static struct guest_args args = GUEST_ARGS_INIT("nvme_test");

static void fill(uint8_t *p, size_t len, uint32_t seed)
{
	for (size_t i = 0; i < len; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (uint8_t)(seed >> 16);
	}
}

static int sha256(const void *buf, size_t len, unsigned char out[32])
{
	unsigned int n = 0;

	return EVP_Digest(buf, len, out, &n, EVP_sha256(), NULL) == 1 && n == 32 ? 0 : -1;
}

/* Write @len bytes from @w at @lba and read them into @r, through one map
 * of each buffer; true when the data came back. */
static bool round_trip(struct nvme_ctrl *c, struct iodma_dev *data, uint8_t *w,
		       uint8_t *r, size_t len, uint64_t lba, uint32_t seed,
		       const char *what)
{
	uint64_t wi, ri;
	int err;

	fill(w, len, seed);
	memset(r, 0x5a, len);
	err = iodma_map_single(data, w, len, IODMA_TO_DEVICE, &wi);
	if (err) {
		TAP_DIAG("%s: map write buffer: %d", what, err);
		return false;
	}
	err = nvme_rw(c, true, lba, wi, len);
	iodma_unmap_single(data, wi, len, IODMA_TO_DEVICE);
	if (err) {
		TAP_DIAG("%s: write: %d %s", what, err, nvme_last_error());
		return false;
	}
	err = iodma_map_single(data, r, len, IODMA_FROM_DEVICE, &ri);
	if (err) {
		TAP_DIAG("%s: map read buffer: %d", what, err);
		return false;
	}
	err = nvme_rw(c, false, lba, ri, len);
	iodma_unmap_single(data, ri, len, IODMA_FROM_DEVICE);
	if (err) {
		TAP_DIAG("%s: read: %d %s", what, err, nvme_last_error());
		return false;
	}
	return memcmp(w, r, len) == 0;
}

struct xfer {
	const char *name;
	size_t off;	/* start offset in the buffer */
	size_t len;	/* 0: the controller's max transfer */
};

static const struct xfer xfers[] = {
	{ "one_block", 0, 512 },
	{ "two_pages_prp2", 0, 8192 },
	{ "prp_list_64k", 0, 65536 },
	{ "prp_list_unaligned_start", 512, 3 * 4096 },
	{ "max_transfer", 0, 0 },
	{ "multi_command_1m", 0, 1 << 20 },
};

static void rw_tests(struct nvme_ctrl *c, struct iodma_domain *d, bool registered)
{
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_dev_stats s0 = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	struct iodma_dev_stats s1 = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	struct iodma_vfio_stats v0 = IODMA_STRUCT_INIT(struct iodma_vfio_stats);
	struct iodma_vfio_stats v1 = IODMA_STRUCT_INIT(struct iodma_vfio_stats);
	struct iodma_dev *data;
	const char *kind = registered ? "registered" : "streaming";
	size_t size = (size_t)2 << 20;
	uint8_t *w, *r;
	int err;

	o.domain = d;
	o.bounce = IODMA_BOUNCE_NEVER;
	err = iodma_dev_create(&o, &data);
	if (!TAP_OK(err == 0, "data_dev_create", "ret %d", err))
		return;
	if (registered) {
		w = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		r = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		err = w == MAP_FAILED || r == MAP_FAILED ? -ENOMEM :
		      iodma_dev_register(data, w, size, NULL);
		if (!err)
			err = iodma_dev_register(data, r, size, NULL);
		TAP_OK(err == 0, "register_buffers", "ret %d", err);
	} else {
		w = malloc(size + 4096);
		r = malloc(size + 4096);
		err = w && r ? 0 : -ENOMEM;
		TAP_OK(err == 0, "heap_buffers", "malloc");
	}
	if (err)
		goto out;
	iodma_dev_get_stats(data, &s0);
	iodma_vfio_get_stats(d, &v0);
	for (size_t i = 0; i < sizeof(xfers) / sizeof(xfers[0]); i++) {
		size_t len = xfers[i].len ? xfers[i].len : c->max_xfer;
		char name[80];

		snprintf(name, sizeof(name), "%s_%s", kind, xfers[i].name);
		TAP_OK(round_trip(c, data, w + xfers[i].off, r + xfers[i].off, len,
				  1000 + 4096 * i, (uint32_t)(i * 77 + registered), name),
		       name, "%zu bytes at offset %zu did not come back", len, xfers[i].off);
	}
	iodma_dev_get_stats(data, &s1);
	iodma_vfio_get_stats(d, &v1);
	TAP_DIAG("%s: %" PRIu64 " maps, %" PRIu64 " registered hits, %" PRIu64
		 " domain mappings created, %" PRIu64 " map / %" PRIu64 " unmap ioctls",
		 kind, s1.maps - s0.maps, s1.registered_hits - s0.registered_hits,
		 s1.mappings_created - s0.mappings_created,
		 v1.map_ioctls - v0.map_ioctls, v1.unmap_ioctls - v0.unmap_ioctls);
	if (registered)
		TAP_OK(s1.mappings_created == s0.mappings_created &&
		       s1.registered_hits - s0.registered_hits == s1.maps - s0.maps &&
		       v1.map_ioctls == v0.map_ioctls && v1.unmap_ioctls == v0.unmap_ioctls,
		       "registered_maps_are_lookups",
		       "created %" PRIu64 " hits %" PRIu64 " maps %" PRIu64 " map ioctls %" PRIu64,
		       s1.mappings_created - s0.mappings_created,
		       s1.registered_hits - s0.registered_hits, s1.maps - s0.maps,
		       v1.map_ioctls - v0.map_ioctls);
	else
		TAP_OK(s1.mappings_created - s0.mappings_created == s1.maps - s0.maps &&
		       v1.map_ioctls - v0.map_ioctls >= s1.maps - s0.maps &&
		       v1.unmap_ioctls - v0.unmap_ioctls >= s1.maps - s0.maps,
		       "streaming_maps_map_and_unmap",
		       "created %" PRIu64 " maps %" PRIu64 " ioctls %" PRIu64 "/%" PRIu64,
		       s1.mappings_created - s0.mappings_created, s1.maps - s0.maps,
		       v1.map_ioctls - v0.map_ioctls, v1.unmap_ioctls - v0.unmap_ioctls);
out:
	if (registered) {
		if (w != MAP_FAILED) {
			iodma_dev_unregister(data, w, size);
			munmap(w, size);
		}
		if (r != MAP_FAILED) {
			iodma_dev_unregister(data, r, size);
			munmap(r, size);
		}
	} else {
		free(w);
		free(r);
	}
	iodma_dev_destroy(data);
}

static uint8_t *slurp(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *buf = NULL;
	int fd = open(path, O_RDONLY);

	if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size > 0) {
		buf = malloc((size_t)st.st_size);
		if (buf && read(fd, buf, (size_t)st.st_size) != st.st_size) {
			free(buf);
			buf = NULL;
		}
		*len = (size_t)st.st_size;
	}
	if (fd >= 0)
		close(fd);
	return buf;
}

/* Copy /bin/busybox with @io_size bytes per command (0: the max). */
static void copy_file(struct nvme_ctrl *c, struct iodma_domain *d, bool registered,
		      uint32_t io_size)
{
	uint32_t max_xfer = c->max_xfer;
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_vfio_stats v0 = IODMA_STRUCT_INIT(struct iodma_vfio_stats);
	struct iodma_vfio_stats v1 = IODMA_STRUCT_INIT(struct iodma_vfio_stats);
	struct iodma_dev_stats ds = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	struct nvme_copy_result r;
	struct iodma_dev *data;
	unsigned char h0[32], h1[32];
	const char *kind = registered ? "registered" : "streaming";
	char name[64];
	uint8_t *file;
	size_t len = 0;
	uint64_t blen;
	int err;

	snprintf(name, sizeof(name), "nvme_copy_%s_%s_sha256", kind,
		 io_size ? "4k" : "max");
	if (io_size)
		c->max_xfer = io_size;
	file = slurp(REAL_FILE, &len);
	if (!TAP_OK(file && len >= 200 * 1024, name, "%s: %zu bytes", REAL_FILE, len))
		goto out_file;
	o.domain = d;
	o.bounce = IODMA_BOUNCE_NEVER;
	err = iodma_dev_create(&o, &data);
	if (!TAP_OK(err == 0, name, "dev create %d", err))
		goto out_file;
	iodma_vfio_get_stats(d, &v0);
	err = nvme_copy(c, data, file, len, 8192, registered, &r);
	iodma_vfio_get_stats(d, &v1);
	if (!TAP_OK(err == 0, name, "copy: %d %s", err, nvme_last_error()))
		goto out_dev;
	iodma_dev_get_stats(data, &ds);
	TAP_OK(r.verified && sha256(file, len, h0) == 0 &&
	       sha256(r.readback, r.bytes, h1) == 0 && !memcmp(h0, h1, 32),
	       name, "read-back SHA-256 differs");
	blen = (r.bytes + c->lba_size - 1) / c->lba_size * c->lba_size;
	TAP_DIAG("nvme-copy: %s %" PRIu64 " bytes (%s buffers, %u bytes per command), sha256 %02x%02x%02x%02x...: "
		 "write %" PRIu64 " cmds %.0f IOPS %.2f MiB/s, read %" PRIu64
		 " cmds %.0f IOPS %.2f MiB/s, mappings: %" PRIu64 " maps %" PRIu64
		 " registered hits %" PRIu64 " domain mappings created, ioctls: %"
		 PRIu64 " map %" PRIu64 " unmap %" PRIu64 " other",
		 REAL_FILE, r.bytes, kind, c->max_xfer, h0[0], h0[1], h0[2], h0[3],
		 r.write_cmds, r.write_cmds / (r.write_s > 0 ? r.write_s : 1e-9),
		 blen / (r.write_s > 0 ? r.write_s : 1e-9) / 1048576.0,
		 r.read_cmds, r.read_cmds / (r.read_s > 0 ? r.read_s : 1e-9),
		 blen / (r.read_s > 0 ? r.read_s : 1e-9) / 1048576.0,
		 ds.maps, ds.registered_hits, ds.mappings_created,
		 v1.map_ioctls - v0.map_ioctls, v1.unmap_ioctls - v0.unmap_ioctls,
		 v1.other_ioctls - v0.other_ioctls);
	nvme_copy_release(data, &r);
out_dev:
	iodma_dev_destroy(data);
out_file:
	c->max_xfer = max_xfer;
	free(file);
}

/* iodma_vfio_get_stats(): counts move with maps, refuses other domains. */
static void stats_tests(struct iodma_domain *d)
{
	struct iodma_domain_opts so = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_vfio_stats a = IODMA_STRUCT_INIT(struct iodma_vfio_stats);
	struct iodma_vfio_stats b = IODMA_STRUCT_INIT(struct iodma_vfio_stats);
	struct iodma_vfio_stats cst = IODMA_STRUCT_INIT(struct iodma_vfio_stats);
	struct iodma_domain *soft;
	uint64_t pg = iodma_page_size(), iova = 0;
	void *buf;
	int r;

	r = iodma_vfio_get_stats(d, &a);
	TAP_OK(r == 0 && a.other_ioctls > 0, "vfio_stats_other_ioctls_counted",
	       "ret %d other %" PRIu64, r, a.other_ioctls);
	buf = mmap(NULL, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	r = iodma_iova_alloc(d, 4 * pg, pg, UINT64_MAX >> 16, &iova);
	if (!TAP_OK(buf != MAP_FAILED && r == 0, "vfio_stats_setup", "ret %d", r))
		return;
	iodma_vfio_get_stats(d, &a);
	r = iodma_domain_map(d, iova, pg, buf, IODMA_PERM_RW);
	r |= iodma_domain_map(d, iova + pg, 3 * pg, (char *)buf + pg, IODMA_PERM_READ);
	iodma_vfio_get_stats(d, &b);
	TAP_OK(r == 0 && b.map_ioctls == a.map_ioctls + 2 && b.unmap_ioctls == a.unmap_ioctls,
	       "vfio_stats_one_map_ioctl_per_map", "ret %d map %" PRIu64 " -> %" PRIu64,
	       r, a.map_ioctls, b.map_ioctls);
	r = iodma_domain_map(d, iova, pg, buf, IODMA_PERM_RW);
	iodma_vfio_get_stats(d, &cst);
	TAP_OK(r == -EEXIST && cst.map_ioctls == b.map_ioctls,
	       "vfio_stats_refused_overlap_no_ioctl",
	       "ret %d map %" PRIu64 " -> %" PRIu64, r, b.map_ioctls, cst.map_ioctls);
	r = iodma_domain_unmap(d, iova, 4 * pg);
	iodma_vfio_get_stats(d, &cst);
	TAP_OK(r == 0 && cst.unmap_ioctls > b.unmap_ioctls &&
	       cst.map_ioctls == b.map_ioctls, "vfio_stats_unmap_counted",
	       "ret %d unmap %" PRIu64 " -> %" PRIu64, r, b.unmap_ioctls,
	       cst.unmap_ioctls);
	TAP_DIAG("unmap of 2 mappings: %" PRIu64 " unmap ioctls",
		 cst.unmap_ioctls - b.unmap_ioctls);
	iodma_iova_free(d, iova, 4 * pg);
	munmap(buf, 4 * pg);

	TAP_OK(iodma_vfio_get_stats(d, NULL) == -EINVAL &&
	       iodma_vfio_get_stats(NULL, &a) == -EINVAL,
	       "vfio_stats_null_einval", "NULL accepted");
	if (iodma_domain_create(&so, &soft) == 0) {
		TAP_OK(iodma_vfio_get_stats(soft, &a) == -EINVAL,
		       "vfio_stats_soft_domain_einval", "soft domain accepted");
		iodma_domain_destroy(soft);
	}
}

int main(int argc, char **argv)
{
	struct iodma_vfio_stats vs = IODMA_STRUCT_INIT(struct iodma_vfio_stats);
	struct iodma_domain *d;
	struct nvme_ctrl c;
	const char *bdf;
	int r;

	r = guest_start(&args, argc, argv, "soft|vfio|iommufd", 0, "nvme",
			"needs --backend vfio or iommufd (no NVMe model in-process)");
	if (r >= 0)
		return r;
	bdf = guest_find_device(&args, 0x010802, -1, -1);
	if (!bdf)
		return guest_skip(&args, "nvme",
				  "no NVMe controller (class 0x010802) in --device");
	r = guest_domain_create(&args, 0, &d);
	if (!TAP_OK(r == 0, "domain_create", "ret %d: %s", r, iodma_vfio_last_error()))
		return guest_result(&args);
	r = nvme_open(&c, d, bdf, 1);
	if (TAP_OK(r == 0, "nvme_open_reset_enable", "%s: ret %d: %s", bdf, r,
		   nvme_last_error())) {
		TAP_DIAG("%s: model '%s' serial '%s' fw '%s', ns 1: %" PRIu64
			 " x %u bytes, MDTS %u, max transfer %u, queue depth %u",
			 bdf, c.model, c.serial, c.firmware, c.nr_lbas, c.lba_size,
			 c.mdts_bytes, c.max_xfer, c.qd);
		TAP_OK(!strcmp(c.serial, "deadbeef"), "identify_controller_serial",
		       "serial '%s'", c.serial);
		TAP_OK((uint64_t)c.nr_lbas * c.lba_size == 64ull << 20,
		       "identify_namespace_64mib", "%" PRIu64 " x %u", c.nr_lbas,
		       c.lba_size);
		rw_tests(&c, d, true);
		rw_tests(&c, d, false);
		copy_file(&c, d, true, 0);
		copy_file(&c, d, false, 0);
		copy_file(&c, d, true, 4096);
		copy_file(&c, d, false, 4096);
		stats_tests(d);
		nvme_close(&c);
	}
	if (iodma_vfio_get_stats(d, &vs) == 0)
		TAP_DIAG("ioctls of this %s domain in all: %" PRIu64 " map, %" PRIu64
			 " unmap, %" PRIu64 " other", args.backend, vs.map_ioctls,
			 vs.unmap_ioctls, vs.other_ioctls);
	iodma_domain_destroy(d);
	return guest_result(&args);
}
