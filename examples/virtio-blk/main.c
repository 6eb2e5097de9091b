// SPDX-License-Identifier: MIT
/*
 * main.c - the platform of the virtio-blk demo.
 *
 * Plays the part of the VMM and the bus: creates the soft IOMMU domain,
 * the device model (its thread, its register page), the driver's DMA
 * context (an iodma_dev on the domain, with the register page declared as
 * an MMIO window, as a BAR), and the two eventfds; then runs the driver on
 * this thread: copy an input to the disk and back, compare SHA-256 sums,
 * run the protocol and isolation checks, print what iodma did.
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
#define SCRATCH_SECTORS		16u

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
	bool isolation_only;
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
"domain, an MMIO window and two eventfds.  Then protocol and isolation\n"
"checks run (DMA to never-mapped, unmapped and read-only IOVAs must fail).\n"
"Exit status 0 only if the SHA-256 sums match and every check holds.\n"
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
"  --isolation-only       skip the copy, run only the checks\n"
"  --quiet                print only the summary\n"
"  --pci BDF              drive a real virtio-blk-pci device bound to\n"
"                         vfio-pci instead of the device model: INPUT goes\n"
"                         to its disk from sector 0 and back (no checks)\n"
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
	       OPT_NOEI, OPT_ISO, OPT_QUIET, OPT_PCI, OPT_BACKEND, OPT_POLL };
	static const struct option longopts[] = {
		{ "self-test-size", required_argument, NULL, OPT_SELF },
		{ "disk", required_argument, NULL, OPT_DISK },
		{ "queue-size", required_argument, NULL, OPT_QS },
		{ "request-size", required_argument, NULL, OPT_RS },
		{ "bounce", required_argument, NULL, OPT_BOUNCE },
		{ "registered", no_argument, NULL, OPT_REG },
		{ "no-event-idx", no_argument, NULL, OPT_NOEI },
		{ "isolation-only", no_argument, NULL, OPT_ISO },
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
		case OPT_ISO:
			o->isolation_only = true;
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
	if (o->pci && (o->isolation_only || o->disk)) {
		fprintf(stderr, "--pci copies to the device's own disk: no --disk, no --isolation-only\n");
		return -1;
	}
	if (!o->input && !o->self_test && !o->isolation_only)
		o->input = DEFAULT_INPUT;
	/* A request's chain (header + data + status + 2 for the checks)
	 * must fit the queue. */
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
 * and status byte, the data rounded up), plus 1 MiB for the checks. */
static size_t bounce_pool_size(const struct options *o, size_t size_max)
{
	size_t nseg = (o->request_size + size_max - 1) / size_max;
	size_t inflight = o->queue_size / (nseg + 4);

	return (inflight * ((o->request_size + 2047) / 2048 + 2) * 2048 +
		(1u << 20) + (1u << 20) - 1) & ~(size_t)((1u << 20) - 1);
}

/*
 * --pci: the same driver, a real virtio-blk-pci device through VFIO.
 * Returns the exit status.
 */
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
	char in_hex[65], out_hex[65];
	bool verified = false;
	double t0, t1, t2;
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
		printf("virtio-blk-demo (iodma %s): input %s, %" PRIu64 " bytes\n",
		       iodma_version(), o->self_test ? "(generated)" : o->input, size);
		printf("device %s through %s, transport virtio-pci: common BAR%u+%#x, "
		       "notify BAR%u+%#x (x%u), device config BAR%u+%#x, %s; %s\n",
		       o->pci, !strcmp(o->backend, "vfio") ? "VFIO type1" : "iommufd",
		       pi.common_bar, pi.common_off, pi.notify_bar, pi.notify_off,
		       pi.notify_mult, pi.device_bar, pi.device_off,
		       pi.mmapped ? "mmapped" : "pread/pwrite",
		       pi.msix ? "MSI-X -> eventfd" : "polling");
		printf("disk %" PRIu64 " sectors of %u bytes\n", info.capacity,
		       info.blk_size);
		printf("queue %u, %u requests in flight of up to %zu bytes, size_max %u, seg_max %u\n",
		       info.queue_size, info.slots, o->request_size, info.size_max,
		       info.seg_max);
		printf("bounce %s (pool %zu KiB), registered %s\n",
		       bounce_name(o->bounce), devopts.bounce_pool_size >> 10,
		       o->registered ? "yes" : "no");
		printf("features offered:  ");
		print_features(info.device_features);
		printf("features accepted: ");
		print_features(info.driver_features);
	}
	iodma_dev_get_stats(h.dev, &ds0);
	t0 = now_s();
	ret = vblk_driver_write(drv, 0, size, source_read, src);
	t1 = now_s();
	if (ret)
		fprintf(stderr, "write: %s\n", iodma_strerror(ret));
	else if ((ret = vblk_driver_read(drv, 0, size, sink_write, snk)))
		fprintf(stderr, "read back: %s\n", iodma_strerror(ret));
	t2 = now_s();
	iodma_dev_get_stats(h.dev, &ds1);
	sha_hex(src->sha, in_hex);
	sha_hex(snk->sha, out_hex);
	verified = !ret && !strcmp(in_hex, out_hex);
	vblk_driver_get_info(drv, &info);
	vblk_pci_transport_info(h.transport, &pi);

	printf("sha256 in : %s\n", in_hex);
	printf("sha256 out: %s\n", out_hex);
	printf("%s\n", verified ? "verified" : "MISMATCH: the data read back differs");
	printf("moved %" PRIu64 " bytes (written %" PRIu64 ", read back %" PRIu64
	       ") in %.4f s: %.1f MiB/s (write %.1f, read %.1f)\n",
	       2 * size, size, size, t2 - t0,
	       t2 > t0 ? 2.0 * size / (t2 - t0) / 1048576.0 : 0.0,
	       t1 > t0 ? size / (t1 - t0) / 1048576.0 : 0.0,
	       t2 > t1 ? size / (t2 - t1) / 1048576.0 : 0.0);
	printf("copy: mappings made %" PRIu64 ", maps %" PRIu64 " (%" PRIu64
	       " from registered memory), bounces %" PRIu64 " (%" PRIu64
	       " bytes); %" PRIu64 " requests, %" PRIu64 " kicks, %" PRIu64
	       " interrupts, %" PRIu64 " polls\n",
	       ds1.mappings_created - ds0.mappings_created, ds1.maps - ds0.maps,
	       ds1.registered_hits - ds0.registered_hits,
	       ds1.bounces - ds0.bounces, ds1.bounce_bytes - ds0.bounce_bytes,
	       info.requests, info.kicks, info.interrupts, pi.polls);
	status = verified ? 0 : 1;
out:
	vblk_driver_close(drv);
	vblk_pci_host_close(&h);
	return status;
}

int main(int argc, char **argv)
{
	struct options o;
	struct source src = { .fd = -1, .rng = 0x9e3779b97f4a7c15ull };
	struct sink snk = { 0 };
	struct iodma_domain *domain = NULL;
	struct iodma_dev *dev = NULL;
	struct vblk_device *vd = NULL;
	struct vblk_driver *drv = NULL;
	struct vblk_transport *transport = NULL;
	struct vblk_driver_info info;
	struct vblk_device_stats dst;
	struct iodma_xlate_stats xs0 = IODMA_STRUCT_INIT(struct iodma_xlate_stats);
	struct iodma_xlate_stats xs1 = IODMA_STRUCT_INIT(struct iodma_xlate_stats);
	struct iodma_xlate_stats xs_end = IODMA_STRUCT_INIT(struct iodma_xlate_stats);
	struct iodma_dev_stats ds0 = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	struct iodma_dev_stats ds1 = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	struct iodma_dev_stats ds_end = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	uint64_t size = 0, data_sectors, capacity = 0;
	int disk_fd = -1, doorbell = -1, irq = -1;
	bool verified = false, copy_ok = true;
	int checks_failed = -1, ret, status = 1;
	double t0 = 0, t1 = 0, t2 = 0;
	const char *msg;
	char in_hex[65] = "", out_hex[65] = "";

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (parse_args(argc, argv, &o)) {
		usage(stderr);
		return 2;
	}

	/* Input. */
	if (o.isolation_only) {
		size = 0;
	} else if (o.self_test) {
		size = o.self_test_size;
	} else {
		struct stat st;

		src.fd = open(o.input, O_RDONLY | O_CLOEXEC);
		if (src.fd < 0 || fstat(src.fd, &st) < 0) {
			fprintf(stderr, "%s: %s\n", o.input, strerror(errno));
			return 1;
		}
		if (!S_ISREG(st.st_mode)) {
			fprintf(stderr, "%s: not a regular file\n", o.input);
			close(src.fd);
			return 1;
		}
		size = (uint64_t)st.st_size;
	}
	src.sha = EVP_MD_CTX_new();
	snk.sha = EVP_MD_CTX_new();
	if (!src.sha || !snk.sha ||
	    EVP_DigestInit_ex(src.sha, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestInit_ex(snk.sha, EVP_sha256(), NULL) != 1) {
		fprintf(stderr, "OpenSSL: cannot set up SHA-256\n");
		goto out;
	}
	if (o.pci) {
		status = run_pci(&o, &src, &snk, size);
		goto out;
	}

	/* The disk: the data, then scratch sectors for the checks. */
	data_sectors = (size + VIRTIO_BLK_SECTOR_SIZE - 1) / VIRTIO_BLK_SECTOR_SIZE;
	disk_fd = open_disk(o.disk, data_sectors + SCRATCH_SECTORS, &capacity);
	if (disk_fd < 0)
		goto out;

	/* The wires: doorbell (driver -> device), interrupt (device -> driver). */
	doorbell = eventfd(0, EFD_CLOEXEC);
	irq = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (doorbell < 0 || irq < 0) {
		fprintf(stderr, "eventfd: %s\n", strerror(errno));
		goto out;
	}

	/* The IOMMU: a soft domain with its defaults (39-bit IOVA space). */
	ret = iodma_domain_create(NULL, &domain);
	if (ret) {
		fprintf(stderr, "iodma_domain_create: %s\n", iodma_strerror(ret));
		goto out;
	}

	/* The device model and its thread. */
	struct vblk_device_opts dopts = {
		.domain = domain, .disk_fd = disk_fd, .capacity = capacity,
		.size_max = DEVICE_SIZE_MAX, .seg_max = DEVICE_SEG_MAX,
		.queue_num_max = DEVICE_QUEUE_MAX, .doorbell_fd = doorbell,
		.irq_fd = irq, .event_idx = true,
	};
	ret = vblk_device_create(&dopts, &vd);
	if (!ret)
		ret = vblk_device_start(vd);
	if (ret) {
		fprintf(stderr, "device: %s\n", iodma_strerror(ret));
		goto out;
	}

	/* The driver's view: a DMA context on the domain, the BAR. */
	struct iodma_dev_opts devopts = IODMA_OPTS_INIT(struct iodma_dev_opts);

	devopts.domain = domain;
	devopts.bounce = o.bounce;
	devopts.bounce_pool_size = bounce_pool_size(&o, DEVICE_SIZE_MAX);
	ret = iodma_dev_create(&devopts, &dev);
	if (ret) {
		fprintf(stderr, "iodma_dev_create: %s\n", iodma_strerror(ret));
		goto out;
	}
	ret = iodma_dev_add_mmio(dev, MMIO_PADDR, VBLK_MMIO_SIZE,
				 vblk_device_mmio(vd));
	if (ret) {
		fprintf(stderr, "iodma_dev_add_mmio: %s\n", iodma_strerror(ret));
		goto out;
	}

	ret = vblk_mmio_transport_create(dev, MMIO_PADDR, doorbell, irq,
					 &transport);
	if (ret) {
		fprintf(stderr, "driver: iodma_mmio_phys_to_virt (register window): %s\n",
			iodma_strerror(ret));
		goto out;
	}

	struct vblk_driver_opts drvopts = {
		.dev = dev, .transport = transport, .queue_size = o.queue_size,
		.request_size = o.request_size, .registered = o.registered,
		.event_idx = o.event_idx,
	};
	ret = vblk_driver_open(&drvopts, &drv, &msg);
	if (ret) {
		fprintf(stderr, "driver: %s: %s\n", msg, iodma_strerror(ret));
		goto out;
	}
	vblk_driver_get_info(drv, &info);
	if (!o.quiet) {
		printf("virtio-blk-demo (iodma %s): input %s, %" PRIu64 " bytes\n",
		       iodma_version(),
		       o.isolation_only ? "(none)" : o.self_test ? "(generated)" : o.input,
		       size);
		printf("disk %s, %" PRIu64 " sectors of %u bytes\n",
		       o.disk ? o.disk : "(temporary)", info.capacity, info.blk_size);
		printf("queue %u, %u requests in flight of up to %zu bytes, size_max %u, seg_max %u\n",
		       info.queue_size, info.slots, o.request_size, info.size_max,
		       info.seg_max);
		printf("bounce %s (pool %zu KiB), registered %s\n",
		       bounce_name(o.bounce), devopts.bounce_pool_size >> 10,
		       o.registered ? "yes" : "no");
		printf("features offered:  ");
		print_features(info.device_features);
		printf("features accepted: ");
		print_features(info.driver_features);
	}

	/* The copy. */
	if (!o.isolation_only) {
		iodma_xlate_get_stats(domain, &xs0);
		iodma_dev_get_stats(dev, &ds0);
		t0 = now_s();
		ret = vblk_driver_write(drv, 0, size, source_read, &src);
		t1 = now_s();
		if (ret) {
			fprintf(stderr, "write: %s\n", iodma_strerror(ret));
			copy_ok = false;
		} else {
			ret = vblk_driver_read(drv, 0, size, sink_write, &snk);
			if (ret) {
				fprintf(stderr, "read back: %s\n", iodma_strerror(ret));
				copy_ok = false;
			}
		}
		t2 = now_s();
		iodma_xlate_get_stats(domain, &xs1);
		iodma_dev_get_stats(dev, &ds1);
		sha_hex(src.sha, in_hex);
		sha_hex(snk.sha, out_hex);
		verified = copy_ok && !strcmp(in_hex, out_hex);
	}

	/* The summary. */
	if (!o.isolation_only) {
		uint64_t hits = xs1.iotlb_hits - xs0.iotlb_hits;
		uint64_t misses = xs1.iotlb_misses - xs0.iotlb_misses;
		double secs = t2 - t0;

		printf("sha256 in : %s\n", in_hex);
		printf("sha256 out: %s\n", out_hex);
		printf("%s\n", verified ? "verified" : "MISMATCH: the data read back differs");
		printf("moved %" PRIu64 " bytes (written %" PRIu64 ", read back %" PRIu64
		       ") in %.4f s: %.1f MiB/s (write %.1f, read %.1f)\n",
		       2 * size, size, size, secs,
		       secs > 0 ? 2.0 * size / secs / 1048576.0 : 0.0,
		       t1 > t0 ? size / (t1 - t0) / 1048576.0 : 0.0,
		       t2 > t1 ? size / (t2 - t1) / 1048576.0 : 0.0);
		printf("copy: page-table walks %" PRIu64 " hits, %" PRIu64 " misses (%.2f%% hits); "
		       "mappings made %" PRIu64 ", maps %" PRIu64 " (%" PRIu64
		       " from registered memory), bounces %" PRIu64 " (%" PRIu64 " bytes)\n",
		       hits, misses, hits + misses ? 100.0 * hits / (hits + misses) : 0.0,
		       ds1.mappings_created - ds0.mappings_created,
		       ds1.maps - ds0.maps, ds1.registered_hits - ds0.registered_hits,
		       ds1.bounces - ds0.bounces, ds1.bounce_bytes - ds0.bounce_bytes);
	}
	/* The checks (always). */
	checks_failed = vblk_driver_checks(drv, data_sectors, o.quiet);
	if (checks_failed < 0)
		fprintf(stderr, "checks could not run: %s\n",
			iodma_strerror(checks_failed));
	vblk_driver_get_info(drv, &info);
	vblk_driver_close(drv);
	drv = NULL;
	vblk_device_stop(vd);
	vblk_device_get_stats(vd, &dst);
	iodma_xlate_get_stats(domain, &xs_end);
	iodma_dev_get_stats(dev, &ds_end);

	printf("total: page-table hits %.2f%%, mappings made %" PRIu64 ", bounces %" PRIu64
	       ", faults %" PRIu64 " (dropped %" PRIu64 "); device: %" PRIu64
	       " requests, %" PRIu64 " IOERR, %" PRIu64 " UNSUPP; %" PRIu64
	       " kicks, %" PRIu64 " interrupts\n",
	       xs_end.iotlb_hits + xs_end.iotlb_misses ?
		100.0 * xs_end.iotlb_hits / (xs_end.iotlb_hits + xs_end.iotlb_misses) : 0.0,
	       ds_end.mappings_created, ds_end.bounces, xs_end.faults,
	       xs_end.faults_dropped, dst.requests, dst.ioerr, dst.unsupp,
	       info.kicks, dst.interrupts);
	if (checks_failed >= 0)
		printf("checks: %s\n", checks_failed ? "FAILED" : "all held");
	status = (o.isolation_only || verified) && checks_failed == 0 ? 0 : 1;
out:
	vblk_driver_close(drv);
	if (transport)
		transport->ops->destroy(transport);
	iodma_dev_destroy(dev);
	vblk_device_destroy(vd);	/* stops the thread if still running */
	iodma_domain_destroy(domain);
	if (doorbell >= 0)
		close(doorbell);
	if (irq >= 0)
		close(irq);
	if (disk_fd >= 0)
		close(disk_fd);
	if (src.fd >= 0)
		close(src.fd);
	EVP_MD_CTX_free(src.sha);
	EVP_MD_CTX_free(snk.sha);
	return status;
}
