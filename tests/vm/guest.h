/* SPDX-License-Identifier: MIT */
/*
 * guest.h - the scaffolding every guest test program of tests/vm shares:
 * its command line, the device it looks for among the --device list, the
 * SKIP of a backend it has nothing to do with, and the domain it opens.
 *
 * init.sh runs each program as
 *
 *	NAME --backend soft
 *	NAME --backend vfio --device BDF [--device BDF]...
 *	NAME --backend iommufd --device BDF [--device BDF]...
 *
 * A program keeps one `static struct guest_args args = GUEST_ARGS_INIT(NAME)`
 * (NAME is the <binary> of its RESULT line) and goes:
 *
 *	r = guest_start(&args, argc, argv, "soft|vfio|iommufd", 0,
 *			"nvme", "needs --backend vfio or iommufd");
 *	if (r >= 0)
 *		return r;		(usage error, or SKIP + RESULT)
 *	bdf = guest_find_device(&args, 0x010802, -1, -1);
 *	if (!bdf)
 *		return guest_skip(&args, "nvme", "no NVMe controller");
 *	...
 *	r = guest_domain_create(&args, 0, &d);
 *	...
 *	return guest_result(&args);
 *
 * Header only (static inline, one includer per binary): it prints through
 * tap.h, whose counters are static to the binary's one translation unit.
 */
#ifndef IODMA_TESTS_VM_GUEST_H
#define IODMA_TESTS_VM_GUEST_H

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <iodma.h>
#include <iodma/vfio.h>

#include "os/os.h"
#include "tap.h"

#define GUEST_MAX_DEVICES 8		/* --device beyond this are dropped */
#define GUEST_SYSFS_PCI   "/sys/bus/pci/devices"

/**
 * struct guest_args - A guest program's command line.
 * @name:       the <binary> of its RESULT line.
 * @backend:    --backend: "soft" (the default), "vfio", "iommufd", ...
 * @noiommu:    --noiommu (VFIO no-IOMMU mode), when the program takes it.
 * @devices:    the --device PCI addresses, in order.
 * @nr_devices: entries in @devices.
 */
struct guest_args {
	const char *name;
	const char *backend;
	bool noiommu;
	const char *devices[GUEST_MAX_DEVICES];
	unsigned int nr_devices;
};

#define GUEST_ARGS_INIT(binary) { .name = (binary), .backend = "soft" }

/* guest_args_parse() flags. */
#define GUEST_ARGS_NOIOMMU 0x1u	/* --noiommu is an option */
#define GUEST_ARGS_LENIENT 0x2u	/* no usage error: anything unknown, a
				 * --device beyond the max included, is
				 * passed over */

/**
 * guest_args_parse() - Parse --backend X, --device BDF (repeatable) and,
 * with GUEST_ARGS_NOIOMMU, --noiommu into @a.
 * @backends: the --backend values named by the usage message.
 *
 * Return: 0; 2 (the exit status) after a usage message on stderr for an
 *         unknown argument or an option without its value.
 */
static inline int guest_args_parse(struct guest_args *a, int argc, char **argv,
				   const char *backends, unsigned int flags)
{
	bool lenient = flags & GUEST_ARGS_LENIENT;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--backend") && i + 1 < argc) {
			a->backend = argv[++i];
		} else if ((flags & GUEST_ARGS_NOIOMMU) &&
			   !strcmp(argv[i], "--noiommu")) {
			a->noiommu = true;
		} else if (!strcmp(argv[i], "--device") && i + 1 < argc &&
			   (!lenient || a->nr_devices < GUEST_MAX_DEVICES)) {
			if (a->nr_devices < GUEST_MAX_DEVICES)
				a->devices[a->nr_devices++] = argv[++i];
			else
				i++;
		} else if (!lenient) {
			fprintf(stderr, "usage: %s --backend %s [--device BDF]...\n",
				argv[0], backends);
			return 2;
		}
	}
	return 0;
}

/* A backend that programs the kernel: vfio or iommufd. */
static inline bool guest_is_kernel(const char *backend)
{
	return !strcmp(backend, "vfio") || !strcmp(backend, "iommufd");
}

/* Print the RESULT line; evaluates to the exit status. */
static inline int guest_result(const struct guest_args *a)
{
	return TAP_RESULT(a->name, a->backend);
}

/* Skip the whole program: one SKIP @test with @reason, then the RESULT
 * line.  Evaluates to the exit status. */
static inline int guest_skip(const struct guest_args *a, const char *test,
			     const char *reason)
{
	TAP_SKIP(test, reason);
	return guest_result(a);
}

/**
 * guest_start() - guest_args_parse(), TAP_PLAN(), and when @test is not
 * NULL and the backend is not vfio or iommufd, guest_skip(@test, @reason).
 *
 * Return: -1 when the program goes on; else the exit status to return
 *         (2: usage error, or the RESULT of the skip).
 */
static inline int guest_start(struct guest_args *a, int argc, char **argv,
			      const char *backends, unsigned int flags,
			      const char *test, const char *reason)
{
	int r = guest_args_parse(a, argc, argv, backends, flags);

	if (r)
		return r;
	TAP_PLAN();
	if (test && !guest_is_kernel(a->backend))
		return guest_skip(a, test, reason);
	return -1;
}

/* The sysfs file @attr ("class", "vendor", "device") of PCI device @bdf
 * as a hex number, or -1 when it cannot be read. */
static inline long guest_sysfs_id(const char *bdf, const char *attr)
{
	char path[256], buf[32] = "";
	FILE *f;

	snprintf(path, sizeof(path), GUEST_SYSFS_PCI "/%s/%s", bdf, attr);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = 0;
	fclose(f);
	return buf[0] ? strtol(buf, NULL, 16) : -1;
}

/**
 * guest_find_device() - The first --device whose PCI class, vendor and
 * device ids (from sysfs) are @class, @vendor and @device; -1 matches any.
 *
 * Return: its address, or NULL when none matches.
 */
static inline const char *guest_find_device(const struct guest_args *a,
					    long class, long vendor, long device)
{
	for (unsigned int i = 0; i < a->nr_devices; i++) {
		const char *bdf = a->devices[i];

		if ((class < 0 || guest_sysfs_id(bdf, "class") == class) &&
		    (vendor < 0 || guest_sysfs_id(bdf, "vendor") == vendor) &&
		    (device < 0 || guest_sysfs_id(bdf, "device") == device))
			return bdf;
	}
	return NULL;
}

/**
 * guest_backend_domain() - Open a domain of @backend: "soft", "identity"
 * (default options), "vfio" (@vo, or a new container with no group when
 * NULL) or "iommufd" (default options: devices are attached later).
 *
 * Return: 0; -EINVAL another backend name; iodma_domain_create()'s error.
 */
static inline int guest_backend_domain(const char *backend,
				       const struct iodma_vfio_opts *vo,
				       struct iodma_domain **d)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_vfio_opts dvo = IODMA_OPTS_INIT(struct iodma_vfio_opts);
	struct iodma_iommufd_opts io = IODMA_OPTS_INIT(struct iodma_iommufd_opts);

	if (!strcmp(backend, "soft")) {
		o.backend = iodma_backend_soft();
	} else if (!strcmp(backend, "identity")) {
		o.backend = iodma_backend_identity();
	} else if (!strcmp(backend, "vfio")) {
		o.backend = iodma_backend_vfio();
		o.backend_config = vo ? vo : &dvo;
	} else if (!strcmp(backend, "iommufd")) {
		o.backend = iodma_backend_iommufd();
		o.backend_config = &io;
	} else {
		return -EINVAL;
	}
	return iodma_domain_create(&o, d);
}

/* guest_domain_create() flags. */
#define GUEST_DOMAIN_DEVICES 0x1u	/* vfio: add the --device list's
					 * groups at creation */

/**
 * guest_domain_create() - Open a domain of @a's --backend.  vfio: in
 * no-IOMMU mode with --noiommu; no group unless GUEST_DOMAIN_DEVICES
 * (iodma_vfio_device_open() adds them, and narrows the placeholder caps
 * to the kernel's).  iommufd: no device attached.
 *
 * Return: as guest_backend_domain().
 */
static inline int guest_domain_create(const struct guest_args *a,
				      unsigned int flags, struct iodma_domain **d)
{
	struct iodma_vfio_opts vo = IODMA_OPTS_INIT(struct iodma_vfio_opts);

	vo.noiommu = a->noiommu;
	if (flags & GUEST_DOMAIN_DEVICES) {
		vo.nr_devices = a->nr_devices;
		vo.devices = a->devices;
	}
	return guest_backend_domain(a->backend, &vo, d);
}

/* The physical address of the page of @va (the library's pagemap lookup:
 * needs CAP_SYS_ADMIN), or 0 when hidden. */
static inline uint64_t guest_phys_of(void *va)
{
	uint64_t pg = iodma_page_size(), pa;

	return os_virt_to_phys((void *)((uintptr_t)va & ~(uintptr_t)(pg - 1)), &pa) ? 0 : pa;
}

#endif /* IODMA_TESTS_VM_GUEST_H */
