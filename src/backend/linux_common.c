/* SPDX-License-Identifier: MIT */
/*
 * linux_common.c - what the Linux backends (vfio.c, iommufd.c, identity)
 * and the VFIO device layer (vfio_device.c) share: the per-thread error
 * text of iodma_vfio_last_error(), the sysfs and /dev/vfio roots (overridable
 * for tests), PCI address syntax and the IOMMU-group lookups in sysfs.
 * Kept apart so that no backend includes another backend's header.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <iodma/vfio.h>

#include "../util.h"
#include "linux_common.h"

static _Thread_local char vfio_msg[512];

void vfio_set_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(vfio_msg, sizeof(vfio_msg), fmt, ap);
	va_end(ap);
}

IODMA_EXPORT const char *iodma_vfio_last_error(void)
{
	return vfio_msg;
}

const char *vfio_sysfs_root(void)
{
	const char *r = getenv("IODMA_SYSFS_ROOT");

	return r && *r ? r : "/sys";
}

const char *vfio_dev_dir(void)
{
	const char *r = getenv("IODMA_VFIO_DEV_DIR");

	return r && *r ? r : "/dev/vfio";
}

static bool is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
	       (c >= 'A' && c <= 'F');
}

bool vfio_bdf_valid(const char *bdf)
{
	size_t n = 0, len;

	if (!bdf)
		return false;
	len = strnlen(bdf, 32);
	while (n < len && is_hex(bdf[n]))
		n++;
	/* domain: 4..8 hex digits, then "BB:DD.F" */
	if (n < 4 || n > 8 || len != n + 8)
		return false;
	bdf += n;
	return bdf[0] == ':' && is_hex(bdf[1]) && is_hex(bdf[2]) &&
	       bdf[3] == ':' && is_hex(bdf[4]) && is_hex(bdf[5]) &&
	       bdf[6] == '.' && bdf[7] >= '0' && bdf[7] <= '7';
}

IODMA_EXPORT bool iodma_vfio_bdf_valid(const char *bdf)
{
	return vfio_bdf_valid(bdf);
}

IODMA_EXPORT int iodma_vfio_group_of(const char *bdf, int *group)
{
	char path[PATH_MAX], link[PATH_MAX], *base, *end;
	ssize_t n;
	long nr;

	if (!bdf || !group || !vfio_bdf_valid(bdf)) {
		vfio_set_error("vfio: '%s' is not a PCI address DDDD:BB:DD.F",
			       bdf ? bdf : "(null)");
		return -EINVAL;
	}
	snprintf(path, sizeof(path), "%s/bus/pci/devices/%s/iommu_group",
		 vfio_sysfs_root(), bdf);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0) {
		int err = errno == ENOENT || errno == ENOTDIR ? -ENOENT : -errno;

		vfio_set_error("vfio: %s: %s (no such device, no IOMMU, or no driver probed it yet)",
			       path, strerror(errno));
		return err;
	}
	link[n] = '\0';
	base = strrchr(link, '/');
	base = base ? base + 1 : link;
	errno = 0;
	nr = strtol(base, &end, 10);
	if (end == base || *end || errno || nr < 0 || nr > INT_MAX) {
		vfio_set_error("vfio: %s -> '%s' does not name a group number",
			       path, link);
		return -EPROTO;
	}
	*group = (int)nr;
	return 0;
}

/* List, in the error text, the devices of @group not bound to vfio-pci. */
void vfio_explain_not_viable(int group)
{
	char path[PATH_MAX], link[PATH_MAX], bad[384] = "";
	size_t used = 0;
	struct dirent *de;
	DIR *dir;

	snprintf(path, sizeof(path), "%s/kernel/iommu_groups/%d/devices",
		 vfio_sysfs_root(), group);
	dir = opendir(path);
	while (dir && (de = readdir(dir)) != NULL) {
		const char *drv = "no driver";
		ssize_t n;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path),
			 "%s/kernel/iommu_groups/%d/devices/%s/driver",
			 vfio_sysfs_root(), group, de->d_name);
		n = readlink(path, link, sizeof(link) - 1);
		if (n >= 0) {
			link[n] = '\0';
			drv = strrchr(link, '/') ? strrchr(link, '/') + 1 : link;
			if (!strcmp(drv, "vfio-pci") || !strcmp(drv, "pci-stub"))
				continue;
		}
		if (used < sizeof(bad))
			used += (size_t)snprintf(bad + used, sizeof(bad) - used,
						 "%s%s (%s)", used ? ", " : "",
						 de->d_name, drv);
	}
	if (dir)
		closedir(dir);
	vfio_set_error("vfio: group %d is not viable: bind every device of it to vfio-pci: %s",
		       group, used ? bad : "(could not list its devices)");
}
