// SPDX-License-Identifier: MIT
/*
 * nvme-copy: write a file to an NVMe namespace through iodma, read it back,
 * compare SHA-256.
 *
 *   nvme-copy --device BDF [--backend vfio|iommufd] [--registered]
 *             [--lba N] [--io-size BYTES] FILE
 *
 * The controller must be bound to vfio-pci.  Prints the controller and
 * namespace, IOPS and MiB/s of each phase, the mappings made (the data
 * device's streaming maps, registered hits and domain mappings created)
 * and the ioctls the domain issued; exits 0 only when the read-back
 * SHA-256 equals the file's ("verified").
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <iodma.h>
#include <iodma/vfio.h>

#include "nvme.h"

static void usage(const char *argv0)
{
	fprintf(stderr, "usage: %s --device BDF [--backend vfio|iommufd] [--registered] [--lba N] [--io-size BYTES] FILE\n",
		argv0);
}

static int sha256(const void *buf, size_t len, unsigned char out[32])
{
	unsigned int n = 0;

	return EVP_Digest(buf, len, out, &n, EVP_sha256(), NULL) == 1 && n == 32 ? 0 : -1;
}

static void hex(const unsigned char *h, char *out)
{
	for (int i = 0; i < 32; i++)
		sprintf(out + 2 * i, "%02x", h[i]);
}

static uint8_t *read_file(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *buf;
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0 || st.st_size <= 0) {
		fprintf(stderr, "nvme-copy: %s: %s\n", path,
			fd < 0 || errno ? strerror(errno) : "empty file");
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	buf = malloc((size_t)st.st_size);
	while (buf && got < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);

		if (r <= 0) {
			fprintf(stderr, "nvme-copy: read %s: %s\n", path,
				r < 0 ? strerror(errno) : "short read");
			free(buf);
			buf = NULL;
			break;
		}
		got += (size_t)r;
	}
	close(fd);
	*len = got;
	return buf;
}

static void phase(const char *name, uint64_t cmds, uint64_t bytes, double s)
{
	if (s <= 0)
		s = 1e-9;
	printf("%-5s %8" PRIu64 " commands %10" PRIu64 " bytes %8.3f s %10.0f IOPS %9.2f MiB/s\n",
	       name, cmds, bytes, s, (double)cmds / s, (double)bytes / s / 1048576.0);
}

int main(int argc, char **argv)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_vfio_opts vo = IODMA_OPTS_INIT(struct iodma_vfio_opts);
	struct iodma_iommufd_opts io = IODMA_OPTS_INIT(struct iodma_iommufd_opts);
	struct iodma_dev_opts dopts = IODMA_OPTS_INIT(struct iodma_dev_opts);
	const char *bdf = NULL, *backend = "vfio", *path = NULL;
	struct iodma_vfio_stats vs0 = IODMA_STRUCT_INIT(struct iodma_vfio_stats);
	struct iodma_vfio_stats vs1 = IODMA_STRUCT_INIT(struct iodma_vfio_stats);
	struct iodma_dev_stats ds = IODMA_STRUCT_INIT(struct iodma_dev_stats);
	struct nvme_copy_result r;
	struct iodma_domain *d = NULL;
	struct iodma_dev *data = NULL;
	struct nvme_ctrl c;
	unsigned char h0[32], h1[32];
	char x0[65], x1[65];
	bool registered = false, verified = false;
	uint64_t lba = 0, io_size = 0;
	uint8_t *file;
	size_t len = 0;
	int err;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--device") && i + 1 < argc) {
			bdf = argv[++i];
		} else if (!strcmp(argv[i], "--backend") && i + 1 < argc) {
			backend = argv[++i];
		} else if (!strcmp(argv[i], "--registered")) {
			registered = true;
		} else if (!strcmp(argv[i], "--lba") && i + 1 < argc) {
			lba = strtoull(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--io-size") && i + 1 < argc) {
			io_size = strtoull(argv[++i], NULL, 0);
		} else if (argv[i][0] != '-' && !path) {
			path = argv[i];
		} else {
			usage(argv[0]);
			return 2;
		}
	}
	if (!bdf || !path || (strcmp(backend, "vfio") && strcmp(backend, "iommufd"))) {
		usage(argv[0]);
		return 2;
	}
	file = read_file(path, &len);
	if (!file)
		return 1;

	if (!strcmp(backend, "vfio")) {
		o.backend = iodma_backend_vfio();
		o.backend_config = &vo;
	} else {
		o.backend = iodma_backend_iommufd();
		o.backend_config = &io;
	}
	err = iodma_domain_create(&o, &d);
	if (err) {
		fprintf(stderr, "nvme-copy: %s domain: %s: %s\n", backend,
			iodma_strerror(err), iodma_vfio_last_error());
		free(file);
		return 1;
	}
	err = nvme_open(&c, d, bdf, 1);
	if (err) {
		fprintf(stderr, "nvme-copy: %s: %s\n", bdf, nvme_last_error());
		goto out_domain;
	}
	printf("controller %s: model '%s' serial '%s' firmware '%s'\n", bdf,
	       c.model, c.serial, c.firmware);
	if (io_size) {
		if (io_size % c.lba_size || io_size > c.max_xfer) {
			fprintf(stderr, "nvme-copy: --io-size must be a multiple of %u up to %u\n",
				c.lba_size, c.max_xfer);
			err = -EINVAL;
			goto out_ctrl;
		}
		c.max_xfer = (uint32_t)io_size;
	}
	printf("namespace %u: %" PRIu64 " blocks of %u bytes (%.1f MiB); "
	       "MDTS %u bytes, %u bytes per command, %u in flight\n",
	       c.nsid, c.nr_lbas, c.lba_size,
	       (double)c.nr_lbas * c.lba_size / 1048576.0, c.mdts_bytes,
	       c.max_xfer, c.qd);

	dopts.domain = d;
	dopts.bounce = IODMA_BOUNCE_NEVER;
	err = iodma_dev_create(&dopts, &data);
	if (err) {
		fprintf(stderr, "nvme-copy: iodma_dev_create: %s\n", iodma_strerror(err));
		goto out_ctrl;
	}
	iodma_vfio_get_stats(d, &vs0);
	err = nvme_copy(&c, data, file, len, lba, registered, &r);
	iodma_vfio_get_stats(d, &vs1);
	if (err) {
		fprintf(stderr, "nvme-copy: %s\n", nvme_last_error());
		goto out_dev;
	}
	iodma_dev_get_stats(data, &ds);
	phase("write", r.write_cmds, (r.bytes + c.lba_size - 1) / c.lba_size * c.lba_size,
	      r.write_s);
	phase("read", r.read_cmds, (r.bytes + c.lba_size - 1) / c.lba_size * c.lba_size,
	      r.read_s);
	printf("mappings: %s buffers, %" PRIu64 " maps, %" PRIu64 " registered hits, "
	       "%" PRIu64 " domain mappings created, %" PRIu64 " live in the domain now\n",
	       registered ? "registered" : "streaming (heap)", ds.maps,
	       ds.registered_hits, ds.mappings_created, iodma_domain_nr_mappings(d));
	printf("ioctls during the copy: %" PRIu64 " map, %" PRIu64 " unmap, %" PRIu64
	       " other; since the domain was created: %" PRIu64 " map, %" PRIu64
	       " unmap, %" PRIu64 " other\n",
	       vs1.map_ioctls - vs0.map_ioctls, vs1.unmap_ioctls - vs0.unmap_ioctls,
	       vs1.other_ioctls - vs0.other_ioctls, vs1.map_ioctls,
	       vs1.unmap_ioctls, vs1.other_ioctls);
	if (sha256(file, len, h0) == 0 && sha256(r.readback, r.bytes, h1) == 0) {
		hex(h0, x0);
		hex(h1, x1);
		printf("sha256 %s  %s\nsha256 %s  (read back, %" PRIu64 " bytes)\n",
		       x0, path, x1, r.bytes);
		verified = r.verified && !memcmp(h0, h1, 32);
	}
	printf("%s\n", verified ? "verified" : "MISMATCH");
	nvme_copy_release(data, &r);
out_dev:
	iodma_dev_destroy(data);
out_ctrl:
	nvme_close(&c);
out_domain:
	iodma_domain_destroy(d);
	free(file);
	return verified ? 0 : 1;
}
