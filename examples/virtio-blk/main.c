// SPDX-License-Identifier: MIT
/*
 * main.c - the platform of the virtio-blk demo.
 *
 * Plays the part of the VMM and the bus: creates the soft IOMMU domain,
 * the device model (its thread, its register page), the driver's DMA
 * context (an iodma_dev on the domain, with the register page declared as
 * an MMIO window, as a BAR), and the two eventfds; then runs the driver on
 * this thread: copy an input to the disk and back, compare SHA-256 sums,
 * print what iodma did.  The protocol and isolation checks of the same
 * driver and device live in tests/virtio-blk/.
 *
 * With --pci BDF the same driver runs against a real virtio-blk-pci device
 * bound to vfio-pci (QEMU's, in the test bed's guest) through the
 * virtio-pci transport, its DMA through the kernel's IOMMU (VFIO type1 or
 * iommufd): the input goes to the device's disk from sector 0 and back.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/stat.h>

#include <openssl/evp.h>

#include <iodma.h>

#include "device.h"
#include "driver.h"
#include "mmio_window.h"
#include "transport.h"
#include "virtio_ring.h"

#define DEFAULT_INPUT		"/usr/bin/perl"
#define MMIO_PADDR		0xfebf0000ull	/* where the "BAR" sits */
#define DEVICE_QUEUE_MAX	1024u
#define DEVICE_SIZE_MAX		(64u * 1024u)
#define DEVICE_SEG_MAX		254u

struct options {
	const char *input;
	const char *disk;
	uint64_t self_test_size;
	bool self_test;
	unsigned int queue_size;
	size_t request_size;
	enum iodma_bounce_policy bounce;
	bool registered;
	bool event_idx;
	bool quiet;
	const char *pci;	/* BDF: a virtio-blk-pci device through VFIO */
	const char *backend;	/* vfio | iommufd */
	bool poll;		/* no MSI-X: poll the used ring */
};

/* The input: a file, or deterministic pseudo-random bytes. */
struct source {
	int fd;
	uint64_t rng;		/* xorshift64* state */
	uint64_t word;
	unsigned int word_left;	/* unused bytes of word */
	EVP_MD_CTX *sha;
};

struct sink {
	EVP_MD_CTX *sha;
};

static const char *bounce_name(enum iodma_bounce_policy p)
{
	switch (p) {
	case IODMA_BOUNCE_NEVER:	return "never";
	case IODMA_BOUNCE_ALWAYS:	return "always";
	default:			return "when-needed";
	}
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: virtio-blk-demo [options] [INPUT]\n"
"\n"
"A virtio-blk driver writes INPUT to a disk served by a virtio-blk device\n"
"model and reads it back; the two meet only through an iodma soft IOMMU\n"
"domain, an MMIO window and two eventfds.  Exit status 0 only if the\n"
"SHA-256 sums match and the device saw no fault and no failed request.\n"
"\n"
"  INPUT                  file to copy (default " DEFAULT_INPUT ")\n"
"  --self-test-size BYTES generate BYTES of deterministic pseudo-random\n"
"                         input in memory instead of reading a file\n"
"  --disk PATH            disk image (default: a temporary file, deleted)\n"
"  --queue-size N         virtqueue size, power of two, 8..%u (default 128)\n"
"  --request-size BYTES   bytes per request, multiple of 512, >= 4096\n"
"                         (default 256K; K and M suffixes accepted)\n"
"  --bounce=POLICY        never | when-needed | always (default when-needed;\n"
"                         always: every request buffer is bounced, as in a\n"
"                         confidential VM)\n"
"  --registered           request buffers come from registered memory\n"
"                         (iodma_dev_register: each map is a lookup)\n"
"  --no-event-idx         do not negotiate VIRTIO_RING_F_EVENT_IDX\n"
"  --quiet                print only the summary\n"
"  --pci BDF              drive a real virtio-blk-pci device bound to\n"
"                         vfio-pci instead of the device model: INPUT goes\n"
"                         to its disk from sector 0 and back\n"
"  --backend vfio|iommufd the IOMMU interface for --pci (default vfio)\n"
"  --poll                 --pci: poll the used ring, no MSI-X interrupt\n"
"  -h, --help             this text\n", DEVICE_QUEUE_MAX);
}

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || s[0] == '-')
		return -1;
	if (*end == 'K' || *end == 'k') {
		v <<= 10;
		end++;
	} else if (*end == 'M' || *end == 'm') {
		v <<= 20;
		end++;
	} else if (*end == 'G' || *end == 'g') {
		v <<= 30;
		end++;
	}
	if (*end == 'i' && end[1] == 'B')
		end += 2;
	if (*end)
		return -1;
	*out = v;
	return 0;
}

static int parse_args(int argc, char **argv, struct options *o)
{
	enum { OPT_SELF = 256, OPT_DISK, OPT_QS, OPT_RS, OPT_BOUNCE, OPT_REG,
	       OPT_NOEI, OPT_QUIET, OPT_PCI, OPT_BACKEND, OPT_POLL };
	static const struct option longopts[] = {
		{ "self-test-size", required_argument, NULL, OPT_SELF },
		{ "disk", required_argument, NULL, OPT_DISK },
		{ "queue-size", required_argument, NULL, OPT_QS },
		{ "request-size", required_argument, NULL, OPT_RS },
		{ "bounce", required_argument, NULL, OPT_BOUNCE },
		{ "registered", no_argument, NULL, OPT_REG },
		{ "no-event-idx", no_argument, NULL, OPT_NOEI },
		{ "quiet", no_argument, NULL, OPT_QUIET },
		{ "pci", required_argument, NULL, OPT_PCI },
		{ "backend", required_argument, NULL, OPT_BACKEND },
		{ "poll", no_argument, NULL, OPT_POLL },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	int c;

	*o = (struct options){ .queue_size = 128, .request_size = 256 * 1024,
			       .bounce = IODMA_BOUNCE_WHEN_NEEDED,
			       .event_idx = true, .backend = "vfio" };
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_SELF:
			if (parse_size(optarg, &v)) {
				fprintf(stderr, "--self-test-size: not a size: %s\n", optarg);
				return -1;
			}
			o->self_test = true;
			o->self_test_size = v;
			break;
		case OPT_DISK:
			o->disk = optarg;
			break;
		case OPT_QS:
			if (parse_size(optarg, &v) || v < 8 || v > DEVICE_QUEUE_MAX ||
			    (v & (v - 1))) {
				fprintf(stderr, "--queue-size: want a power of two in 8..%u, got %s\n",
					DEVICE_QUEUE_MAX, optarg);
				return -1;
			}
			o->queue_size = (unsigned int)v;
			break;
		case OPT_RS:
			if (parse_size(optarg, &v) || v < 4096 || v % 512 ||
			    v > (uint64_t)DEVICE_SIZE_MAX * 64) {
				fprintf(stderr, "--request-size: want a multiple of 512 in 4096..%u, got %s\n",
					DEVICE_SIZE_MAX * 64, optarg);
				return -1;
			}
			o->request_size = (size_t)v;
			break;
		case OPT_BOUNCE:
			if (!strcmp(optarg, "never"))
				o->bounce = IODMA_BOUNCE_NEVER;
			else if (!strcmp(optarg, "when-needed"))
				o->bounce = IODMA_BOUNCE_WHEN_NEEDED;
			else if (!strcmp(optarg, "always"))
				o->bounce = IODMA_BOUNCE_ALWAYS;
			else {
				fprintf(stderr, "--bounce: want never, when-needed or always, got %s\n",
					optarg);
				return -1;
			}
			break;
		case OPT_REG:
			o->registered = true;
			break;
		case OPT_NOEI:
			o->event_idx = false;
			break;
		case OPT_QUIET:
			o->quiet = true;
			break;
		case OPT_PCI:
			o->pci = optarg;
			break;
		case OPT_BACKEND:
			if (strcmp(optarg, "vfio") && strcmp(optarg, "iommufd")) {
				fprintf(stderr, "--backend: want vfio or iommufd, got %s\n",
					optarg);
				return -1;
			}
			o->backend = optarg;
			break;
		case OPT_POLL:
			o->poll = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			return -1;
		}
	}
	if (optind < argc)
		o->input = argv[optind++];
	if (optind < argc) {
		fprintf(stderr, "unexpected argument: %s\n", argv[optind]);
		return -1;
	}
	if (o->input && o->self_test) {
		fprintf(stderr, "give either INPUT or --self-test-size, not both\n");
		return -1;
	}
	if (o->pci && o->disk) {
		fprintf(stderr, "--pci copies to the device's own disk: no --disk\n");
		return -1;
	}
	if (!o->input && !o->self_test)
		o->input = DEFAULT_INPUT;
	/* A request slot (header + data + status + 2 spare: driver.c
	 * setup_slots) must fit the queue. */
	if ((o->request_size + DEVICE_SIZE_MAX - 1) / DEVICE_SIZE_MAX + 4 >
	    o->queue_size) {
		fprintf(stderr, "--request-size %zu needs more descriptors than a queue of %u holds\n",
			o->request_size, o->queue_size);
		return -1;
	}
	return 0;
}

/* ---- input and hashing ------------------------------------------------------ */

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

static int source_read(void *arg, void *buf, size_t len)
{
	struct source *src = arg;
	uint8_t *p = buf;

	if (src->fd >= 0) {
		size_t done = 0;

		while (done < len) {
			ssize_t r = read(src->fd, p + done, len - done);

			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0)
				return -errno;
			if (r == 0) {
				fprintf(stderr, "input ended early (file shrank?)\n");
				return -EIO;
			}
			done += (size_t)r;
		}
	} else {
		for (size_t i = 0; i < len; i++) {
			if (!src->word_left) {
				src->word = rng_next(&src->rng);
				src->word_left = 8;
			}
			p[i] = (uint8_t)src->word;
			src->word >>= 8;
			src->word_left--;
		}
	}
	return EVP_DigestUpdate(src->sha, buf, len) == 1 ? 0 : -EIO;
}

static int sink_write(void *arg, const void *buf, size_t len)
{
	struct sink *snk = arg;

	return EVP_DigestUpdate(snk->sha, buf, len) == 1 ? 0 : -EIO;
}

static void sha_hex(EVP_MD_CTX *ctx, char hex[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	EVP_DigestFinal_ex(ctx, md, &n);
	for (unsigned int i = 0; i < n && i < 32; i++)
		sprintf(hex + 2 * i, "%02x", md[i]);
	hex[64] = 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- the disk --------------------------------------------------------------- */

static int open_disk(const char *path, uint64_t want_sectors, uint64_t *sectors)
{
	struct stat st;
	int fd;

	if (path) {
		fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (fd < 0) {
			fprintf(stderr, "--disk %s: %s\n", path, strerror(errno));
			return -1;
		}
	} else {
		const char *dir = getenv("TMPDIR");
		char tmpl[4096];

		snprintf(tmpl, sizeof(tmpl), "%s/virtio-blk-demo.XXXXXX",
			 dir && *dir ? dir : "/tmp");
		fd = mkostemp(tmpl, O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "temporary disk %s: %s\n", tmpl, strerror(errno));
			return -1;
		}
		unlink(tmpl);	/* gone when we exit, however we exit */
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		fprintf(stderr, "disk: not a regular file\n");
		close(fd);
		return -1;
	}
	if ((uint64_t)st.st_size < want_sectors * VIRTIO_BLK_SECTOR_SIZE) {
		if (ftruncate(fd, (off_t)(want_sectors * VIRTIO_BLK_SECTOR_SIZE)) < 0) {
			fprintf(stderr, "disk: cannot grow to %" PRIu64 " bytes: %s\n",
				want_sectors * VIRTIO_BLK_SECTOR_SIZE, strerror(errno));
			close(fd);
			return -1;
		}
		*sectors = want_sectors;
	} else {
		*sectors = (uint64_t)st.st_size / VIRTIO_BLK_SECTOR_SIZE;
	}
	return fd;
}

static void print_features(uint64_t f)
{
	static const struct { int bit; const char *name; } names[] = {
		{ VIRTIO_BLK_F_SIZE_MAX, "SIZE_MAX" },
		{ VIRTIO_BLK_F_SEG_MAX, "SEG_MAX" },
		{ VIRTIO_BLK_F_BLK_SIZE, "BLK_SIZE" },
		{ VIRTIO_BLK_F_FLUSH, "FLUSH" },
		{ VIRTIO_RING_F_EVENT_IDX, "RING_EVENT_IDX" },
		{ VIRTIO_F_VERSION_1, "VERSION_1" },
		{ VIRTIO_F_ACCESS_PLATFORM, "ACCESS_PLATFORM" },
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (f & VIRTIO_BIT(names[i].bit))
			printf(" %s", names[i].name);
	printf("\n");
}

/* Enough bounce slots for a full queue (2 KiB slots: one for each header
 * and status byte, the data rounded up), plus 1 MiB of headroom. */
static size_t bounce_pool_size(const struct options *o, size_t size_max)
{
	size_t nseg = (o->request_size + size_max - 1) / size_max;
	size_t inflight = o->queue_size / (nseg + 4);

	return (inflight * ((o->request_size + 2047) / 2048 + 2) * 2048 +
		(1u << 20) + (1u << 20) - 1) & ~(size_t)((1u << 20) - 1);
}

/* ---- the copy, shared by both platforms ------------------------------------ */

struct copy_result {
	double t0, t1, t2;	/* start, write done, read done */
	char in_hex[65], out_hex[65];
	bool verified;
};

/* Write @size bytes of @src at sector 0, read them back into @snk, compare
 * the SHA-256 sums. */
static void copy(struct vblk_driver *drv, uint64_t size, struct source *src,
		 struct sink *snk, struct copy_result *cr)
{
	int ret;

	cr->t0 = now_s();
	ret = vblk_driver_write(drv, 0, size, source_read, src);
	cr->t1 = now_s();
	if (ret)
		fprintf(stderr, "write: %s\n", iodma_strerror(ret));
	else if ((ret = vblk_driver_read(drv, 0, size, sink_write, snk)))
		fprintf(stderr, "read back: %s\n", iodma_strerror(ret));
	cr->t2 = now_s();
	sha_hex(src->sha, cr->in_hex);
	sha_hex(snk->sha, cr->out_hex);
	cr->verified = !ret && !strcmp(cr->in_hex, cr->out_hex);
}

static void print_copy(uint64_t size, const struct copy_result *cr)
{
	double secs = cr->t2 - cr->t0;

	printf("sha256 in : %s\n", cr->in_hex);
	printf("sha256 out: %s\n", cr->out_hex);
	printf("%s\n", cr->verified ? "verified" : "MISMATCH: the data read back differs");
	printf("moved %" PRIu64 " bytes (written %" PRIu64 ", read back %" PRIu64
	       ") in %.4f s: %.1f MiB/s (write %.1f, read %.1f)\n",
	       2 * size, size, size, secs,
	       secs > 0 ? 2.0 * size / secs / 1048576.0 : 0.0,
	       cr->t1 > cr->t0 ? size / (cr->t1 - cr->t0) / 1048576.0 : 0.0,
	       cr->t2 > cr->t1 ? size / (cr->t2 - cr->t1) / 1048576.0 : 0.0);
}

/* What the driver negotiated; the platform printed its own lines first. */
static void print_driver(const struct options *o,
			 const struct vblk_driver_info *info, size_t pool)
{
	printf("queue %u, %u requests in flight of up to %zu bytes, size_max %u, seg_max %u\n",
	       info->queue_size, info->slots, o->request_size, info->size_max,
	       info->seg_max);
	printf("bounce %s (pool %zu KiB), registered %s\n",
	       bounce_name(o->bounce), pool >> 10, o->registered ? "yes" : "no");
	printf("features offered:  ");
	print_features(info->device_features);
	printf("features accepted: ");
	print_features(info->driver_features);
}

/* ---- --pci: a real virtio-blk-pci device through VFIO -------------------------- */

static void print_pci_setup(const struct options *o, uint64_t size,
			    const struct vblk_pci_info *pi,
			    const struct vblk_driver_info *info)
{
	printf("virtio-blk-demo (iodma %s): input %s, %" PRIu64 " bytes\n",
	       iodma_version(), o->self_test ? "(generated)" : o->input, size);
	printf("device %s through %s, transport virtio-pci: common BAR%u+%#x, "
	       "notify BAR%u+%#x (x%u), device config BAR%u+%#x, %s; %s\n",
	       o->pci, !strcmp(o->backend, "vfio") ? "VFIO type1" : "iommufd",
	       pi->common_bar, pi->common_off, pi->notify_bar, pi->notify_off,
	       pi->notify_mult, pi->device_bar, pi->device_off,
	       pi->mmapped ? "mmapped" : "pread/pwrite",
	       pi->msix ? "MSI-X -> eventfd" : "polling");
	printf("disk %" PRIu64 " sectors of %u bytes\n", info->capacity,
	       info->blk_size);
}

/* Returns the exit status. */
static int run_pci(const struct options *o, struct source *src,
		   struct sink *snk, uint64_t size)
{
	struct iodma_dev_opts devopts = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct vblk_pci_host h;
	struct vblk_driver *drv = NULL;
	struct vblk_driver_info info;
	struct vblk_pci_info pi;
	struct iodma_dev_stats ds0 = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	struct iodma_dev_stats ds1 = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	struct copy_result cr;
	const char *msg = "";
	int ret, status = 1;

	devopts.bounce = o->bounce;
	/* size_max is unknown until negotiation: size the pool for the most
	 * requests in flight (one data descriptor each). */
	devopts.bounce_pool_size = bounce_pool_size(o, o->request_size);
	ret = vblk_pci_host_open(o->pci, o->backend, &devopts,
				 o->poll ? 0 : VBLK_PCI_MSIX, &h, &msg);
	if (ret) {
		fprintf(stderr, "%s (%s): %s: %s%s%s\n", o->pci, o->backend, msg,
			iodma_strerror(ret), *iodma_vfio_last_error() ? ": " : "",
			iodma_vfio_last_error());
		return 1;
	}
	struct vblk_driver_opts drvopts = {
		.dev = h.dev, .transport = h.transport,
		.queue_size = o->queue_size, .request_size = o->request_size,
		.registered = o->registered, .event_idx = o->event_idx,
	};
	ret = vblk_driver_open(&drvopts, &drv, &msg);
	if (ret) {
		fprintf(stderr, "driver: %s: %s\n", msg, iodma_strerror(ret));
		goto out;
	}
	vblk_driver_get_info(drv, &info);
	vblk_pci_transport_info(h.transport, &pi);
	if (size > info.capacity * VIRTIO_BLK_SECTOR_SIZE) {
		fprintf(stderr, "input of %" PRIu64 " bytes does not fit the disk (%" PRIu64
			" sectors)\n", size, info.capacity);
		goto out;
	}
	if (!o->quiet) {
		print_pci_setup(o, size, &pi, &info);
		print_driver(o, &info, devopts.bounce_pool_size);
	}
	iodma_dev_get_stats(h.dev, &ds0);
	copy(drv, size, src, snk, &cr);
	iodma_dev_get_stats(h.dev, &ds1);
	vblk_driver_get_info(drv, &info);
	vblk_pci_transport_info(h.transport, &pi);

	print_copy(size, &cr);
	printf("copy: mappings made %" PRIu64 ", maps %" PRIu64 " (%" PRIu64
	       " from registered memory), bounces %" PRIu64 " (%" PRIu64
	       " bytes); %" PRIu64 " requests, %" PRIu64 " kicks, %" PRIu64
	       " interrupts, %" PRIu64 " polls\n",
	       ds1.mappings_created - ds0.mappings_created, ds1.maps - ds0.maps,
	       ds1.registered_hits - ds0.registered_hits,
	       ds1.bounces - ds0.bounces, ds1.bounce_bytes - ds0.bounce_bytes,
	       info.requests, info.kicks, info.interrupts, pi.polls);
	status = cr.verified ? 0 : 1;
out:
	vblk_driver_close(drv);
	vblk_pci_host_close(&h);
	return status;
}

/* ---- the soft platform: a device model behind a soft IOMMU ------------------- */

/* The VMM's and the bus's part: what the driver is handed. */
struct platform {
	int disk_fd, doorbell, irq;
	struct iodma_domain *domain;
	struct vblk_device *vd;
	struct iodma_dev *dev;
	struct vblk_transport *transport;
	size_t bounce_pool;
};

static void platform_destroy(struct platform *p)
{
	if (p->transport)
		p->transport->ops->destroy(p->transport);
	iodma_dev_destroy(p->dev);
	vblk_device_destroy(p->vd);	/* stops the thread if still running */
	iodma_domain_destroy(p->domain);
	if (p->doorbell >= 0)
		close(p->doorbell);
	if (p->irq >= 0)
		close(p->irq);
	if (p->disk_fd >= 0)
		close(p->disk_fd);
}

/* 0, or -1 after saying what failed (then platform_destroy cleans up). */
static int platform_create(const struct options *o, uint64_t size,
			   struct platform *p)
{
	struct iodma_dev_opts devopts = IODMA_OPTS_INIT(struct iodma_dev_opts);
	uint64_t capacity;
	int ret;

	*p = (struct platform){ .disk_fd = -1, .doorbell = -1, .irq = -1 };
	p->disk_fd = open_disk(o->disk, (size + VIRTIO_BLK_SECTOR_SIZE - 1) /
				VIRTIO_BLK_SECTOR_SIZE, &capacity);
	if (p->disk_fd < 0)
		return -1;

	/* The wires: doorbell (driver -> device), interrupt (device -> driver). */
	p->doorbell = eventfd(0, EFD_CLOEXEC);
	p->irq = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (p->doorbell < 0 || p->irq < 0) {
		fprintf(stderr, "eventfd: %s\n", strerror(errno));
		return -1;
	}

	/* The IOMMU: a soft domain with its defaults (39-bit IOVA space). */
	ret = iodma_domain_create(NULL, &p->domain);
	if (ret) {
		fprintf(stderr, "iodma_domain_create: %s\n", iodma_strerror(ret));
		return -1;
	}

	/* The device model and its thread. */
	struct vblk_device_opts dopts = {
		.domain = p->domain, .disk_fd = p->disk_fd, .capacity = capacity,
		.size_max = DEVICE_SIZE_MAX, .seg_max = DEVICE_SEG_MAX,
		.queue_num_max = DEVICE_QUEUE_MAX, .doorbell_fd = p->doorbell,
		.irq_fd = p->irq, .event_idx = true,
	};
	ret = vblk_device_create(&dopts, &p->vd);
	if (!ret)
		ret = vblk_device_start(p->vd);
	if (ret) {
		fprintf(stderr, "device: %s\n", iodma_strerror(ret));
		return -1;
	}

	/* The driver's view: a DMA context on the domain, the BAR. */
	devopts.domain = p->domain;
	devopts.bounce = o->bounce;
	devopts.bounce_pool_size = bounce_pool_size(o, DEVICE_SIZE_MAX);
	p->bounce_pool = devopts.bounce_pool_size;
	ret = iodma_dev_create(&devopts, &p->dev);
	if (ret) {
		fprintf(stderr, "iodma_dev_create: %s\n", iodma_strerror(ret));
		return -1;
	}
	ret = iodma_dev_add_mmio(p->dev, MMIO_PADDR, VBLK_MMIO_SIZE,
				 vblk_device_mmio(p->vd));
	if (ret) {
		fprintf(stderr, "iodma_dev_add_mmio: %s\n", iodma_strerror(ret));
		return -1;
	}
	ret = vblk_mmio_transport_create(p->dev, MMIO_PADDR, p->doorbell,
					 p->irq, &p->transport);
	if (ret) {
		fprintf(stderr, "driver: iodma_mmio_phys_to_virt (register window): %s\n",
			iodma_strerror(ret));
		return -1;
	}
	return 0;
}

/* Returns the exit status: 0 if the copy verified and the device saw no
 * fault and failed no request. */
static int run_soft(const struct options *o, struct source *src,
		    struct sink *snk, uint64_t size)
{
	struct platform p;
	struct vblk_driver *drv = NULL;
	struct vblk_driver_info info;
	struct vblk_device_stats dst;
	struct iodma_xlate_stats xs0 = IODMA_STRUCT_INIT(struct iodma_xlate_stats);
	struct iodma_xlate_stats xs1 = IODMA_STRUCT_INIT(struct iodma_xlate_stats);
	struct iodma_dev_stats ds0 = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	struct iodma_dev_stats ds1 = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	struct copy_result cr;
	uint64_t hits, misses;
	const char *msg;
	int ret, status = 1;

	if (platform_create(o, size, &p))
		goto out;
	struct vblk_driver_opts drvopts = {
		.dev = p.dev, .transport = p.transport, .queue_size = o->queue_size,
		.request_size = o->request_size, .registered = o->registered,
		.event_idx = o->event_idx,
	};
	ret = vblk_driver_open(&drvopts, &drv, &msg);
	if (ret) {
		fprintf(stderr, "driver: %s: %s\n", msg, iodma_strerror(ret));
		goto out;
	}
	vblk_driver_get_info(drv, &info);
	if (!o->quiet) {
		printf("virtio-blk-demo (iodma %s): input %s, %" PRIu64 " bytes\n",
		       iodma_version(), o->self_test ? "(generated)" : o->input,
		       size);
		printf("disk %s, %" PRIu64 " sectors of %u bytes\n",
		       o->disk ? o->disk : "(temporary)", info.capacity,
		       info.blk_size);
		print_driver(o, &info, p.bounce_pool);
	}

	iodma_xlate_get_stats(p.domain, &xs0);
	iodma_dev_get_stats(p.dev, &ds0);
	copy(drv, size, src, snk, &cr);
	iodma_xlate_get_stats(p.domain, &xs1);
	iodma_dev_get_stats(p.dev, &ds1);
	vblk_driver_get_info(drv, &info);
	vblk_driver_close(drv);
	drv = NULL;
	vblk_device_stop(p.vd);
	vblk_device_get_stats(p.vd, &dst);

	hits = xs1.iotlb_hits - xs0.iotlb_hits;
	misses = xs1.iotlb_misses - xs0.iotlb_misses;
	print_copy(size, &cr);
	printf("copy: page-table walks %" PRIu64 " hits, %" PRIu64 " misses (%.2f%% hits); "
	       "mappings made %" PRIu64 ", maps %" PRIu64 " (%" PRIu64
	       " from registered memory), bounces %" PRIu64 " (%" PRIu64 " bytes)\n",
	       hits, misses, hits + misses ? 100.0 * hits / (hits + misses) : 0.0,
	       ds1.mappings_created - ds0.mappings_created,
	       ds1.maps - ds0.maps, ds1.registered_hits - ds0.registered_hits,
	       ds1.bounces - ds0.bounces, ds1.bounce_bytes - ds0.bounce_bytes);
	printf("device: %" PRIu64 " requests, %" PRIu64 " IOERR, %" PRIu64
	       " UNSUPP; faults %" PRIu64 " (dropped %" PRIu64 "); %" PRIu64
	       " kicks, %" PRIu64 " interrupts\n",
	       dst.requests, dst.ioerr, dst.unsupp, xs1.faults,
	       xs1.faults_dropped, info.kicks, dst.interrupts);
	/* A clean copy: the driver mapped everything it handed the device. */
	if (cr.verified && (xs1.faults || dst.ioerr || dst.unsupp))
		printf("FAILED: the device faulted or failed a request\n");
	status = cr.verified && !xs1.faults && !dst.ioerr && !dst.unsupp ? 0 : 1;
out:
	vblk_driver_close(drv);
	platform_destroy(&p);
	return status;
}

/* ---- main -------------------------------------------------------------------- */

/* Open INPUT (or not, for --self-test-size) and set up both SHA-256
 * contexts.  0, or -1 after saying what failed. */
static int open_input(const struct options *o, struct source *src,
		      struct sink *snk, uint64_t *size)
{
	if (o->self_test) {
		*size = o->self_test_size;
	} else {
		struct stat st;

		src->fd = open(o->input, O_RDONLY | O_CLOEXEC);
		if (src->fd < 0 || fstat(src->fd, &st) < 0) {
			fprintf(stderr, "%s: %s\n", o->input, strerror(errno));
			return -1;
		}
		if (!S_ISREG(st.st_mode)) {
			fprintf(stderr, "%s: not a regular file\n", o->input);
			return -1;
		}
		*size = (uint64_t)st.st_size;
	}
	src->sha = EVP_MD_CTX_new();
	snk->sha = EVP_MD_CTX_new();
	if (!src->sha || !snk->sha ||
	    EVP_DigestInit_ex(src->sha, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestInit_ex(snk->sha, EVP_sha256(), NULL) != 1) {
		fprintf(stderr, "OpenSSL: cannot set up SHA-256\n");
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct options o;
	struct source src = { .fd = -1, .rng = 0x9e3779b97f4a7c15ull };
	struct sink snk = { 0 };
	uint64_t size = 0;
	int status = 1;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (parse_args(argc, argv, &o)) {
		usage(stderr);
		return 2;
	}
	if (!open_input(&o, &src, &snk, &size))
		status = o.pci ? run_pci(&o, &src, &snk, size)
			       : run_soft(&o, &src, &snk, size);
	if (src.fd >= 0)
		close(src.fd);
	EVP_MD_CTX_free(src.sha);
	EVP_MD_CTX_free(snk.sha);
	return status;
}
