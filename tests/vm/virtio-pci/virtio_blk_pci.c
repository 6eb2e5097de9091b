/* SPDX-License-Identifier: MIT */
/*
 * virtio_blk_pci.c - the demo's virtio-blk driver on QEMU's virtio-blk-pci.
 *
 *   virtio_blk_pci --backend vfio|iommufd --device BDF [--device BDF]...
 *
 * Finds the modern virtio-blk device (1af4:1042) among the --device list,
 * and moves a real file of the initramfs (/bin/busybox) through it with the
 * very driver the demo runs against its in-process device model
 * (examples/virtio-blk/driver.c) over the virtio-pci transport
 * (transport_pci.c): the rings in coherent memory of an iodma_dev on a
 * VFIO type1 or iommufd domain, the request buffers through streaming maps,
 * the device's DMA through the vIOMMU (QEMU: iommu_platform=on).  Each pass
 * first fills its own region of the disk with the file's complement (and
 * reads that back: the disk image outlives a boot and a backend, so a write
 * that silently did nothing must not pass), then writes the file there,
 * reads it back into a zeroed buffer and compares (memcmp and SHA-256).
 * Passes: bounce policy when-needed and always with MSI-X, when-needed from
 * registered memory with polling, and always with every register access
 * through VFIO region pread/pwrite (the fallback for a BAR that cannot be
 * mmapped).  Figures (MiB/s, mappings, bounces, kicks, interrupts) go out
 * as TAP comments.  Soft: nothing to do, SKIP.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <iodma.h>
#include <iodma/vfio.h>

#include "driver.h"
#include "guest.h"
#include "tap.h"
#include "transport.h"
#include "virtio_ring.h"

#define NAME		"virtio_blk_pci"
#define INPUT		"/bin/busybox"
#define QUEUE_SIZE	128u
#define REQUEST_SIZE	(256u * 1024u)
#define REGION_BYTES	(4u << 20)

static struct guest_args args = GUEST_ARGS_INIT(NAME);

/* A buffer as a driver source or sink: a cursor into memory. */
struct cursor {
	uint8_t *p;
	size_t off, len;
};

static int src_fn(void *arg, void *buf, size_t len)
{
	struct cursor *c = arg;

	if (len > c->len - c->off)
		return -EIO;
	memcpy(buf, c->p + c->off, len);
	c->off += len;
	return 0;
}

static int sink_fn(void *arg, const void *buf, size_t len)
{
	struct cursor *c = arg;

	if (len > c->len - c->off)
		return -EIO;
	memcpy(c->p + c->off, buf, len);
	c->off += len;
	return 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sha256_hex(const void *buf, size_t len, char hex[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	hex[0] = 0;
	if (EVP_Digest(buf, len, md, &n, EVP_sha256(), NULL) != 1)
		return;
	for (unsigned int i = 0; i < n && i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

static int read_file(const char *path, uint8_t **out, size_t *len)
{
	struct stat st;
	uint8_t *p;
	size_t done = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || st.st_size <= 0) {
		close(fd);
		return -EINVAL;
	}
	p = malloc((size_t)st.st_size);
	if (!p) {
		close(fd);
		return -ENOMEM;
	}
	while (done < (size_t)st.st_size) {
		ssize_t r = read(fd, p + done, (size_t)st.st_size - done);

		if (r <= 0) {
			free(p);
			close(fd);
			return r < 0 ? -errno : -EIO;
		}
		done += (size_t)r;
	}
	close(fd);
	*out = p;
	*len = done;
	return 0;
}

struct pass {
	const char *name;		/* test name prefix */
	enum iodma_bounce_policy bounce;
	unsigned int flags;		/* VBLK_PCI_* */
	bool registered;
};

static void copy_pass(const char *bdf, const struct pass *ps,
		      uint64_t sector, const uint8_t *data, size_t len)
{
	struct iodma_dev_opts dopts = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct vblk_pci_host h;
	struct vblk_driver *drv = NULL;
	struct vblk_driver_info info, i0;
	struct vblk_pci_info pi, pi0;
	struct iodma_dev_stats s0 = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	struct iodma_dev_stats s1 = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	struct cursor src = { (uint8_t *)data, 0, len };
	struct cursor dst = { NULL, 0, len };
	uint8_t *inv = NULL;
	const char *msg = "";
	char name[96], hin[65], hout[65];
	double t0, t1, t2;
	uint64_t want;
	int r;

	TAP_DIAG("pass %s: bounce %s, %s, %s, %s, sector %" PRIu64, ps->name,
		 ps->bounce == IODMA_BOUNCE_ALWAYS ? "always" : "when-needed",
		 ps->flags & VBLK_PCI_MSIX ? "MSI-X" : "polling",
		 ps->flags & VBLK_PCI_NO_MMAP ? "registers by pread/pwrite" : "mmapped BARs",
		 ps->registered ? "registered buffers" : "heap buffers",
		 sector);
	dopts.bounce = ps->bounce;
	/* Every request of a full queue bounced (2 KiB slots), and slack. */
	dopts.bounce_pool_size = (size_t)(QUEUE_SIZE / 5 + 1) *
				 (REQUEST_SIZE / 2048 + 2) * 2048 + (1u << 20);
	dopts.bounce_pool_size = (dopts.bounce_pool_size + (1u << 20) - 1) &
				 ~(size_t)((1u << 20) - 1);
	snprintf(name, sizeof(name), "%s_open", ps->name);
	r = vblk_pci_host_open(bdf, args.backend, &dopts, ps->flags, &h, &msg);
	if (!TAP_OK(r == 0, name, "%s: %s: %s", msg, iodma_strerror(r),
		    iodma_vfio_last_error()))
		return;
	vblk_pci_transport_info(h.transport, &pi);
	TAP_DIAG("virtio-pci caps: common BAR%u+%#x, notify BAR%u+%#x x%u, ISR BAR%d+%#x, "
		 "device BAR%u+%#x; %s; %u queue(s); interrupts %s",
		 pi.common_bar, pi.common_off, pi.notify_bar, pi.notify_off,
		 pi.notify_mult, (int)pi.isr_bar, pi.isr_off, pi.device_bar,
		 pi.device_off, pi.mmapped ? "BARs mmapped" : "region pread/pwrite",
		 pi.num_queues, pi.msix ? "MSI-X -> eventfd" : "polled");

	struct vblk_driver_opts o = {
		.dev = h.dev, .transport = h.transport, .queue_size = QUEUE_SIZE,
		.request_size = REQUEST_SIZE, .registered = ps->registered,
		.event_idx = true,
	};
	snprintf(name, sizeof(name), "%s_driver_open", ps->name);
	r = vblk_driver_open(&o, &drv, &msg);
	if (!TAP_OK(r == 0, name, "%s: %s", msg, iodma_strerror(r)))
		goto out;
	vblk_driver_get_info(drv, &info);
	want = VIRTIO_BIT(VIRTIO_F_VERSION_1) | VIRTIO_BIT(VIRTIO_F_ACCESS_PLATFORM);
	snprintf(name, sizeof(name), "%s_negotiated_version_1_access_platform",
		 ps->name);
	TAP_OK((info.driver_features & want) == want, name,
	       "offered %#" PRIx64 " accepted %#" PRIx64, info.device_features,
	       info.driver_features);
	TAP_DIAG("features offered %#" PRIx64 " accepted %#" PRIx64
		 "; capacity %" PRIu64 " sectors, size_max %u, seg_max %u, queue %u, %u in flight",
		 info.device_features, info.driver_features, info.capacity,
		 info.size_max, info.seg_max, info.queue_size, info.slots);
	snprintf(name, sizeof(name), "%s_fits_disk", ps->name);
	if (!TAP_OK(sector * VIRTIO_BLK_SECTOR_SIZE + len <=
		    info.capacity * VIRTIO_BLK_SECTOR_SIZE, name,
		    "%zu bytes at sector %" PRIu64 ", capacity %" PRIu64,
		    len, sector, info.capacity))
		goto out;
	dst.p = calloc(1, len);
	inv = malloc(len);
	snprintf(name, sizeof(name), "%s_buffers", ps->name);
	if (!TAP_OK(dst.p && inv, name, "out of memory"))
		goto out;

	/* The complement first. */
	for (size_t i = 0; i < len; i++)
		inv[i] = (uint8_t)~data[i];
	src = (struct cursor){ inv, 0, len };
	r = vblk_driver_write(drv, sector, len, src_fn, &src);
	if (!r)
		r = vblk_driver_read(drv, sector, len, sink_fn, &dst);
	snprintf(name, sizeof(name), "%s_complement_round_trip", ps->name);
	if (!TAP_OK(r == 0 && memcmp(inv, dst.p, len) == 0, name, "%s",
		    r ? iodma_strerror(r) : "data read back differs"))
		goto out;
	memset(dst.p, 0, len);
	src = (struct cursor){ (uint8_t *)data, 0, len };
	dst.off = 0;

	iodma_dev_get_stats(h.dev, &s0);
	vblk_driver_get_info(drv, &i0);
	vblk_pci_transport_info(h.transport, &pi0);
	t0 = now_s();
	r = vblk_driver_write(drv, sector, len, src_fn, &src);
	t1 = now_s();
	snprintf(name, sizeof(name), "%s_write", ps->name);
	if (!TAP_OK(r == 0 && src.off == len, name, "%s", iodma_strerror(r)))
		goto out;
	r = vblk_driver_read(drv, sector, len, sink_fn, &dst);
	t2 = now_s();
	snprintf(name, sizeof(name), "%s_read_back", ps->name);
	if (!TAP_OK(r == 0 && dst.off == len, name, "%s", iodma_strerror(r)))
		goto out;
	iodma_dev_get_stats(h.dev, &s1);
	vblk_driver_get_info(drv, &info);
	vblk_pci_transport_info(h.transport, &pi);

	sha256_hex(data, len, hin);
	sha256_hex(dst.p, len, hout);
	TAP_DIAG("sha256 in  %s  %s", hin, INPUT);
	TAP_DIAG("sha256 out %s", hout);
	snprintf(name, sizeof(name), "%s_byte_exact", ps->name);
	TAP_OK(memcmp(data, dst.p, len) == 0 && hin[0] && !strcmp(hin, hout),
	       name, "the data read back differs from %s", INPUT);
	snprintf(name, sizeof(name), "%s_register_access_as_asked", ps->name);
	TAP_OK(pi.mmapped == !(ps->flags & VBLK_PCI_NO_MMAP), name,
	       "registers %s", pi.mmapped ? "mmapped" : "by pread/pwrite");
	TAP_DIAG("%s %s: %zu bytes each way in %.3f s: %.1f MiB/s (write %.1f, read %.1f)",
		 args.backend, ps->name, len, t2 - t0,
		 t2 > t0 ? 2.0 * len / (t2 - t0) / 1048576.0 : 0.0,
		 t1 > t0 ? len / (t1 - t0) / 1048576.0 : 0.0,
		 t2 > t1 ? len / (t2 - t1) / 1048576.0 : 0.0);
	TAP_DIAG("%s %s: mappings made %" PRIu64 ", maps %" PRIu64 " (%" PRIu64
		 " registered lookups), bounces %" PRIu64 " (%" PRIu64 " bytes); %"
		 PRIu64 " requests, %" PRIu64 " kicks, %" PRIu64 " interrupts, %"
		 PRIu64 " polls",
		 args.backend, ps->name, s1.mappings_created - s0.mappings_created,
		 s1.maps - s0.maps, s1.registered_hits - s0.registered_hits,
		 s1.bounces - s0.bounces, s1.bounce_bytes - s0.bounce_bytes,
		 info.requests - i0.requests, info.kicks - i0.kicks,
		 info.interrupts - i0.interrupts, pi.polls - pi0.polls);
	snprintf(name, sizeof(name), "%s_bounce_policy_held", ps->name);
	if (ps->bounce == IODMA_BOUNCE_ALWAYS)
		TAP_OK(s1.bounces - s0.bounces >=
		       2 * ((len + REQUEST_SIZE - 1) / REQUEST_SIZE) &&
		       s1.bounce_bytes - s0.bounce_bytes >= 2 * len, name,
		       "%" PRIu64 " bounces of %" PRIu64 " bytes for %zu bytes each way",
		       s1.bounces - s0.bounces, s1.bounce_bytes - s0.bounce_bytes, len);
	else
		TAP_OK(s1.bounces == s0.bounces, name,
		       "%" PRIu64 " bounces although every buffer is reachable",
		       s1.bounces - s0.bounces);
	if (ps->registered) {
		snprintf(name, sizeof(name), "%s_registered_maps_are_lookups",
			 ps->name);
		TAP_OK(s1.registered_hits - s0.registered_hits > 0 &&
		       s1.mappings_created == s0.mappings_created, name,
		       "%" PRIu64 " registered hits, %" PRIu64 " mappings made",
		       s1.registered_hits - s0.registered_hits,
		       s1.mappings_created - s0.mappings_created);
	}
out:
	free(dst.p);
	free(inv);
	vblk_driver_close(drv);
	vblk_pci_host_close(&h);
}

int main(int argc, char **argv)
{
	static const struct pass passes[] = {
		{ "when_needed_msix", IODMA_BOUNCE_WHEN_NEEDED, VBLK_PCI_MSIX, false },
		{ "always_msix", IODMA_BOUNCE_ALWAYS, VBLK_PCI_MSIX, false },
		{ "registered_polled", IODMA_BOUNCE_WHEN_NEEDED, 0, true },
		{ "always_pread_pwrite_polled", IODMA_BOUNCE_ALWAYS,
		  VBLK_PCI_NO_MMAP, false },
	};
	unsigned int region;
	const char *bdf;
	uint8_t *data = NULL;
	size_t len = 0;
	int r;

	r = guest_start(&args, argc, argv, "vfio|iommufd", 0, NAME,
			"needs a device behind a real IOMMU: --backend vfio or iommufd");
	if (r >= 0)
		return r;
	/* Each pass of each backend on its own 4 MiB of the disk. */
	region = strcmp(args.backend, "vfio") ? sizeof(passes) / sizeof(passes[0]) : 0;
	bdf = guest_find_device(&args, -1, 0x1af4, 0x1042);
	if (!TAP_OK(bdf != NULL, "find_virtio_blk_device",
		    "no 1af4:1042 among %u --device", args.nr_devices))
		return guest_result(&args);
	TAP_DIAG("virtio-blk-pci at %s, backend %s", bdf, args.backend);
	r = read_file(INPUT, &data, &len);
	if (!TAP_OK(r == 0, "read_input_file", "%s: %s", INPUT, strerror(-r)))
		return guest_result(&args);
	TAP_DIAG("input %s, %zu bytes", INPUT, len);
	if (!TAP_OK(len <= REGION_BYTES, "input_fits_a_region",
		    "%zu bytes > %u", len, REGION_BYTES)) {
		free(data);
		return guest_result(&args);
	}
	for (size_t i = 0; i < sizeof(passes) / sizeof(passes[0]); i++)
		copy_pass(bdf, &passes[i],
			  (uint64_t)(region + i) * (REGION_BYTES / VIRTIO_BLK_SECTOR_SIZE),
			  data, len);
	free(data);
	return guest_result(&args);
}
