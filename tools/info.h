/* SPDX-License-Identifier: MIT */
/*
 * info.h - `iodma info`: what the IOMMU and VFIO of this machine allow.
 *
 * Concepts
 *   info_collect() reads sysfs (the IOMMU groups, their devices, drivers,
 *   types and reserved regions; the vfio and vfio_iommu_type1 module
 *   parameters), /dev/vfio and /dev/iommu, the process limits and
 *   capabilities, and, when asked to probe, opens an iodma domain per
 *   viable group (vfio backend) and per VFIO device cdev (iommufd backend)
 *   to read the capabilities the library will really work with.  The report
 *   ends with hints: what is missing and what to do about it.  It is then
 *   printed as aligned text or as JSON.
 *
 *   Paths follow the library: $IODMA_SYSFS_ROOT replaces /sys and
 *   $IODMA_VFIO_DEV_DIR replaces /dev/vfio (tests point them at a fake
 *   tree); $IODMA_IOMMU_DEV replaces /dev/iommu (this tool only).
 *
 *   Single-threaded; uses system calls (a tool, not library code).
 */
#ifndef IODMA_TOOLS_INFO_H
#define IODMA_TOOLS_INFO_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <iodma.h>

#define INFO_MAX_RESV 32

/* The result of opening a domain to read its capabilities. */
struct info_probe {
	bool tried;		/* a domain was opened (or attempted) */
	int err;		/* 0, or the negative errno of the open */
	char msg[256];		/* iodma_vfio_last_error() when err != 0 */
	struct iodma_caps caps;	/* iodma_domain_get_caps() when err == 0 */
	uint64_t pgsizes;	/* raw VFIO iova_pgsizes; 0 = unknown */
	bool has_avail;		/* the DMA_AVAIL capability was read */
	uint32_t avail;		/* its value */
	bool noiommu;		/* opened in VFIO no-IOMMU mode */
};

/* One device of an IOMMU group. */
struct info_device {
	char name[64];		/* PCI address "DDDD:BB:DD.F", or the sysfs name */
	int group;		/* its IOMMU group */
	bool has_ids;		/* vendor, device, class were read */
	uint32_t vendor, device, class_code;
	char driver[64];	/* bound driver, "" = none */
	char cdev[32];		/* VFIO device cdev "vfioN", "" = none */
	struct info_probe iommufd; /* iommufd attach of this device */
};

/* One reserved region of a group (reserved_regions: start last type). */
struct info_resv {
	uint64_t start;
	uint64_t last;		/* inclusive, as sysfs prints it */
	char type[24];
};

struct info_group {
	int id;
	char type[24];		/* DMA, DMA-FQ, identity, blocked, or "" */
	unsigned int first_dev;	/* index of its first device in report devices */
	unsigned int nr_devs;
	unsigned int nr_resv;
	struct info_resv resv[INFO_MAX_RESV];
	bool viable;		/* every device on vfio-pci or no driver */
	bool node;		/* /dev/vfio/N exists */
	bool noiommu_node;	/* /dev/vfio/noiommu-N exists */
	bool node_access;	/* that node is readable and writable by us */
	struct info_probe type1; /* vfio (type1v2 / no-IOMMU) domain open */
};

struct info_report {
	char kernel[128];	/* uname release */
	char machine[32];	/* uname machine */
	const char *only_device; /* --device, or NULL */
	bool device_found;	/* only_device is in some IOMMU group */

	struct info_group *groups;
	unsigned int nr_groups;
	struct info_device *devices;
	unsigned int nr_devices;

	/* VFIO type1 */
	bool vfio_module;	/* /sys/module/vfio */
	bool vfio_pci_driver;	/* /sys/bus/pci/drivers/vfio-pci */
	bool type1_module;	/* /sys/module/vfio_iommu_type1 */
	int container_err;	/* open of /dev/vfio/vfio: 0 or -errno */
	int api_version;	/* VFIO_GET_API_VERSION, -1 unknown */
	bool type1v2, unmap_all, noiommu_ext;
	int64_t dma_entry_limit; /* -1 unknown */
	int unsafe_interrupts;	/* type1 allow_unsafe_interrupts, -1 unknown */

	/* iommufd and no-IOMMU */
	int iommufd_err;	/* open of /dev/iommu: 0 or -errno */
	int noiommu_param;	/* enable_unsafe_noiommu_mode: 1, 0, -1 unknown */
	unsigned int nr_noiommu_nodes; /* /dev/vfio/noiommu-N */
	unsigned int nr_cdevs;	/* devices with a VFIO cdev node */

	/* limits and privileges */
	bool memlock_unlimited;
	uint64_t memlock_cur;	/* bytes (RLIMIT_MEMLOCK soft limit) */
	bool memlock_max_unlimited;
	uint64_t memlock_max;
	int cap_sys_admin;	/* 1, 0, -1 unknown */
	int cap_ipc_lock;

	/* what is missing and what to do */
	char **hints;
	unsigned int nr_hints;
};

struct info_opts {
	const char *device;	/* restrict to this device's group; NULL = all */
	bool probe;		/* open domains to read caps (needs VFIO access) */
};

/* Build the report.  0 and *@out (free with info_free()); -ENOMEM. */
int info_collect(const struct info_opts *o, struct info_report **out);
void info_free(struct info_report *r);

/* The report as aligned text. */
void info_print_text(FILE *f, const struct info_report *r);

/* The report as one JSON object (json-c's text, 2-space indents, then a
 * newline), every string valid UTF-8: ill-formed bytes from sysfs become
 * U+FFFD.  0; -ENOMEM (nothing written); -EIO writing @f failed. */
int info_print_json(FILE *f, const struct info_report *r);

/* `iodma info [--json] [--device BDF] [--no-probe]`: @argv[0] is "info".
 * Returns the exit status: 0 ok (also without an IOMMU), 1 the --device
 * was not found or the report could not be built, 2 usage error. */
int info_main(int argc, char **argv, FILE *out, FILE *err);

#endif /* IODMA_TOOLS_INFO_H */
