/* SPDX-License-Identifier: MIT */
/*
 * info.c - `iodma info`: collect what the IOMMU and VFIO allow, print it as
 * text or JSON (see info.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <linux/vfio.h>

#include <iodma/vfio.h>
#include <json-c/json.h>

#include "info.h"

#ifndef VFIO_UNMAP_ALL
#define VFIO_UNMAP_ALL 9
#endif

#define CAP_IPC_LOCK_BIT  14
#define CAP_SYS_ADMIN_BIT 21
/* Below this, without CAP_IPC_LOCK, type1 pinning runs out quickly. */
#define MEMLOCK_LOW (64ull << 20)

/* ---- paths and small readers -------------------------------------------- */

static const char *sysfs_root(void)
{
	const char *r = getenv("IODMA_SYSFS_ROOT");

	return r && *r ? r : "/sys";
}

static const char *vfio_dir(void)
{
	const char *r = getenv("IODMA_VFIO_DEV_DIR");

	return r && *r ? r : "/dev/vfio";
}

static const char *iommu_dev(void)
{
	const char *r = getenv("IODMA_IOMMU_DEV");

	return r && *r ? r : "/dev/iommu";
}

/* Format a path into @buf (PATH_MAX bytes); a path cut short simply
 * names nothing. */
static char *pathf(char *buf, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static char *pathf(char *buf, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, PATH_MAX, fmt, ap);
	va_end(ap);
	return buf;
}

/* Copy @src into @dst of @len bytes, cut short if need be. */
static void copy_str(char *dst, size_t len, const char *src)
{
	size_t n = strlen(src);

	if (n >= len)
		n = len - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

static bool exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/* First line of @path into @buf without its newline.  0 or -errno. */
static int read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");
	int err = 0;

	if (!f)
		return -errno;
	if (!fgets(buf, (int)len, f))
		err = ferror(f) ? -EIO : -ENODATA;
	fclose(f);
	if (err) {
		buf[0] = '\0';
		return err;
	}
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

/* The last component of the symlink @path into @buf ("" when no link). */
static void link_base(const char *path, char *buf, size_t len)
{
	char link[PATH_MAX];
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	const char *b;

	buf[0] = '\0';
	if (n < 0)
		return;
	link[n] = '\0';
	b = strrchr(link, '/');
	copy_str(buf, len, b ? b + 1 : link);
}

/* Numeric directory entries of @path, sorted, into a malloc'd array. */
static int list_numbers(const char *path, int **out, unsigned int *nr)
{
	DIR *d = opendir(path);
	struct dirent *de;
	int *v = NULL;
	unsigned int n = 0, cap = 0;

	*out = NULL;
	*nr = 0;
	if (!d)
		return 0;
	while ((de = readdir(d)) != NULL) {
		char *end;
		long x;

		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		x = strtol(de->d_name, &end, 10);
		if (*end || x < 0 || x > INT_MAX)
			continue;
		if (n == cap) {
			int *p = realloc(v, (cap ? cap * 2 : 16) * sizeof(*v));

			if (!p) {
				free(v);
				closedir(d);
				return -ENOMEM;
			}
			v = p;
			cap = cap ? cap * 2 : 16;
		}
		v[n++] = (int)x;
	}
	closedir(d);
	for (unsigned int i = 1; i < n; i++) /* insertion sort: few entries */
		for (unsigned int j = i; j > 0 && v[j - 1] > v[j]; j--) {
			int t = v[j];

			v[j] = v[j - 1];
			v[j - 1] = t;
		}
	*out = v;
	*nr = n;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int add_hint(struct info_report *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int add_hint(struct info_report *r, const char *fmt, ...)
{
	char **p = realloc(r->hints, (r->nr_hints + 1) * sizeof(*p));
	va_list ap;
	int n;

	if (!p)
		return -ENOMEM;
	r->hints = p;
	va_start(ap, fmt);
	n = vasprintf(&p[r->nr_hints], fmt, ap);
	va_end(ap);
	if (n < 0)
		return -ENOMEM;
	r->nr_hints++;
	return 0;
}

/* ---- groups and devices ------------------------------------------------- */

static bool driver_ok_for_vfio(const char *drv)
{
	/* vfio-pci, its variant drivers (mlx5_vfio_pci, ...), pci-stub */
	return !*drv || strstr(drv, "vfio") || !strcmp(drv, "pci-stub");
}

static void read_device(const char *gdir, const char *name, int group,
			struct info_device *dv)
{
	char path[PATH_MAX], buf[64];
	unsigned long v, dev, cls;
	struct dirent *de;
	DIR *d;

	memset(dv, 0, sizeof(*dv));
	copy_str(dv->name, sizeof(dv->name), name);
	dv->group = group;
	pathf(path, "%s/devices/%s/driver", gdir, name);
	link_base(path, dv->driver, sizeof(dv->driver));
	pathf(path, "%s/devices/%s/vendor", gdir, name);
	if (read_line(path, buf, sizeof(buf)) == 0) {
		v = strtoul(buf, NULL, 16);
		pathf(path, "%s/devices/%s/device", gdir, name);
		if (read_line(path, buf, sizeof(buf)) == 0) {
			dev = strtoul(buf, NULL, 16);
			pathf(path, "%s/devices/%s/class", gdir,
				 name);
			if (read_line(path, buf, sizeof(buf)) == 0) {
				cls = strtoul(buf, NULL, 16);
				dv->vendor = (uint32_t)v;
				dv->device = (uint32_t)dev;
				dv->class_code = (uint32_t)cls;
				dv->has_ids = true;
			}
		}
	}
	pathf(path, "%s/devices/%s/vfio-dev", gdir, name);
	d = opendir(path);
	while (d && (de = readdir(d)) != NULL) {
		if (!strncmp(de->d_name, "vfio", 4) && de->d_name[4] >= '0' &&
		    de->d_name[4] <= '9') {
			/* sysfs names it even when the kernel has no
			 * CONFIG_VFIO_DEVICE_CDEV: only a node counts */
			if (exists(pathf(path, "%s/devices/%s", vfio_dir(),
					 de->d_name)))
				copy_str(dv->cdev, sizeof(dv->cdev), de->d_name);
			break;
		}
	}
	if (d)
		closedir(d);
}

static void read_resv(const char *gdir, struct info_group *g)
{
	char path[PATH_MAX], line[160];
	FILE *f;

	pathf(path, "%s/reserved_regions", gdir);
	f = fopen(path, "re");
	if (!f)
		return;
	while (g->nr_resv < INFO_MAX_RESV && fgets(line, sizeof(line), f)) {
		struct info_resv *rv = &g->resv[g->nr_resv];
		unsigned long long s, l;
		char type[24];

		if (sscanf(line, "%llx %llx %23s", &s, &l, type) != 3)
			continue;
		rv->start = s;
		rv->last = l;
		copy_str(rv->type, sizeof(rv->type), type);
		g->nr_resv++;
	}
	fclose(f);
}

/* Read group @id and its devices, appending the devices to @r. */
static int read_group(struct info_report *r, int id, struct info_group *g)
{
	char gdir[PATH_MAX], path[PATH_MAX];
	char **names = NULL;
	unsigned int n = 0;
	struct dirent *de;
	DIR *d;
	int err = 0;

	memset(g, 0, sizeof(*g));
	g->id = id;
	g->viable = true;
	pathf(gdir, "%s/kernel/iommu_groups/%d", sysfs_root(),
		 id);
	pathf(path, "%s/type", gdir);
	read_line(path, g->type, sizeof(g->type));
	read_resv(gdir, g);

	pathf(path, "%s/devices", gdir);
	d = opendir(path);
	while (d && (de = readdir(d)) != NULL) {
		char **p;

		if (de->d_name[0] == '.')
			continue;
		p = realloc(names, (n + 1) * sizeof(*p));
		if (!p || !(p[n] = strdup(de->d_name))) {
			names = p ? p : names;
			err = -ENOMEM;
			break;
		}
		names = p;
		n++;
	}
	if (d)
		closedir(d);
	if (!err && n) {
		struct info_device *dv;

		qsort(names, n, sizeof(*names), cmp_str);
		dv = realloc(r->devices, (r->nr_devices + n) * sizeof(*dv));
		if (!dv) {
			err = -ENOMEM;
		} else {
			r->devices = dv;
			g->first_dev = r->nr_devices;
			for (unsigned int i = 0; i < n; i++) {
				struct info_device *x = &dv[r->nr_devices++];

				read_device(gdir, names[i], id, x);
				if (!driver_ok_for_vfio(x->driver))
					g->viable = false;
				if (x->cdev[0])
					r->nr_cdevs++;
			}
			g->nr_devs = n;
		}
	}
	for (unsigned int i = 0; i < n; i++)
		free(names[i]);
	free(names);

	pathf(path, "%s/%d", vfio_dir(), id);
	if (exists(path)) {
		g->node = true;
	} else {
		pathf(path, "%s/noiommu-%d", vfio_dir(), id);
		g->noiommu_node = exists(path);
	}
	if (g->node || g->noiommu_node)
		g->node_access = access(path, R_OK | W_OK) == 0;
	return err;
}

static bool group_has(const struct info_report *r, const struct info_group *g,
		      const char *name)
{
	for (unsigned int i = 0; i < g->nr_devs; i++)
		if (!strcmp(r->devices[g->first_dev + i].name, name))
			return true;
	return false;
}

static int read_groups(struct info_report *r)
{
	char path[PATH_MAX];
	unsigned int nr;
	int *ids, err;

	pathf(path, "%s/kernel/iommu_groups", sysfs_root());
	err = list_numbers(path, &ids, &nr);
	if (err)
		return err;
	r->groups = calloc(nr ? nr : 1, sizeof(*r->groups));
	if (!r->groups) {
		free(ids);
		return -ENOMEM;
	}
	for (unsigned int i = 0; i < nr && !err; i++) {
		struct info_group *g = &r->groups[r->nr_groups];
		unsigned int devs_before = r->nr_devices;
		unsigned int cdevs_before = r->nr_cdevs;

		err = read_group(r, ids[i], g);
		if (err)
			break;
		if (r->only_device && !group_has(r, g, r->only_device)) {
			/* not the group asked for: forget it */
			r->nr_devices = devs_before;
			r->nr_cdevs = cdevs_before;
			continue;
		}
		if (r->only_device)
			r->device_found = true;
		r->nr_groups++;
	}
	free(ids);
	return err;
}

/* ---- VFIO, iommufd, limits ---------------------------------------------- */

static void read_vfio(struct info_report *r)
{
	char path[PATH_MAX], buf[32];
	struct dirent *de;
	DIR *d;
	int fd;

	pathf(path, "%s/module/vfio", sysfs_root());
	r->vfio_module = exists(path);
	pathf(path, "%s/bus/pci/drivers/vfio-pci", sysfs_root());
	r->vfio_pci_driver = exists(path);
	pathf(path, "%s/module/vfio_iommu_type1", sysfs_root());
	r->type1_module = exists(path);

	r->dma_entry_limit = -1;
	pathf(path,
		 "%s/module/vfio_iommu_type1/parameters/dma_entry_limit",
		 sysfs_root());
	if (read_line(path, buf, sizeof(buf)) == 0)
		r->dma_entry_limit = strtoll(buf, NULL, 10);
	r->unsafe_interrupts = -1;
	pathf(path,
		 "%s/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts",
		 sysfs_root());
	if (read_line(path, buf, sizeof(buf)) == 0)
		r->unsafe_interrupts = buf[0] == 'Y' || buf[0] == '1';
	r->noiommu_param = -1;
	pathf(path,
		 "%s/module/vfio/parameters/enable_unsafe_noiommu_mode",
		 sysfs_root());
	if (read_line(path, buf, sizeof(buf)) == 0)
		r->noiommu_param = buf[0] == 'Y' || buf[0] == '1';

	d = opendir(vfio_dir());
	while (d && (de = readdir(d)) != NULL)
		if (!strncmp(de->d_name, "noiommu-", 8))
			r->nr_noiommu_nodes++;
	if (d)
		closedir(d);

	r->api_version = -1;
	pathf(path, "%s/vfio", vfio_dir());
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		r->container_err = -errno;
	} else {
		r->container_err = 0;
		r->api_version = ioctl(fd, VFIO_GET_API_VERSION);
		r->type1v2 = ioctl(fd, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) > 0;
		r->unmap_all = ioctl(fd, VFIO_CHECK_EXTENSION, VFIO_UNMAP_ALL) > 0;
		r->noiommu_ext = ioctl(fd, VFIO_CHECK_EXTENSION, VFIO_NOIOMMU_IOMMU) > 0;
		close(fd);
	}

	fd = open(iommu_dev(), O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		r->iommufd_err = -errno;
	} else {
		r->iommufd_err = 0;
		close(fd);
	}
}

static void read_limits(struct info_report *r)
{
	struct utsname u;
	struct rlimit rl;
	char line[256];
	FILE *f;

	if (uname(&u) == 0) {
		copy_str(r->kernel, sizeof(r->kernel), u.release);
		copy_str(r->machine, sizeof(r->machine), u.machine);
	}
	if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0) {
		r->memlock_unlimited = rl.rlim_cur == RLIM_INFINITY;
		r->memlock_cur = r->memlock_unlimited ? 0 : (uint64_t)rl.rlim_cur;
		r->memlock_max_unlimited = rl.rlim_max == RLIM_INFINITY;
		r->memlock_max = r->memlock_max_unlimited ? 0 : (uint64_t)rl.rlim_max;
	}
	r->cap_sys_admin = r->cap_ipc_lock = -1;
	f = fopen("/proc/self/status", "re");
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long long eff;

		if (sscanf(line, "CapEff: %llx", &eff) == 1) {
			r->cap_sys_admin = (eff >> CAP_SYS_ADMIN_BIT) & 1;
			r->cap_ipc_lock = (eff >> CAP_IPC_LOCK_BIT) & 1;
			break;
		}
	}
	if (f)
		fclose(f);
}

/* ---- probes: open a domain and read its caps ---------------------------- */

static void probe_fail(struct info_probe *p, int err)
{
	p->err = err;
	copy_str(p->msg, sizeof(p->msg),
		 *iodma_vfio_last_error() ? iodma_vfio_last_error() :
					    iodma_strerror(err));
}

static void probe_type1(struct info_group *g)
{
	struct iodma_vfio_opts vo = IODMA_OPTS_INIT(struct iodma_vfio_opts);
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct info_probe *p = &g->type1;
	struct iodma_domain *d = NULL;
	int err;

	p->tried = true;
	p->noiommu = g->noiommu_node;
	vo.nr_groups = 1;
	vo.groups = &g->id;
	vo.noiommu = g->noiommu_node;
	o.backend = iodma_backend_vfio();
	o.backend_config = &vo;
	err = iodma_domain_create(&o, &d);
	if (err) {
		probe_fail(p, err);
		return;
	}
	p->caps = IODMA_STRUCT_INIT(struct iodma_caps);
	err = iodma_domain_get_caps(d, &p->caps);
	if (err) {
		probe_fail(p, err);
	} else if (!vo.noiommu) {
		struct iodma_vfio_iommu_info vi;

		/* The kernel's own figures beside the caps made of them; a
		 * failure here leaves them unknown, not the probe failed. */
		if (iodma_vfio_get_iommu_info(d, &vi) == 0) {
			p->pgsizes = vi.iova_pgsizes;
			p->has_avail = vi.has_dma_avail;
			p->avail = vi.dma_avail;
		}
	}
	iodma_domain_destroy(d);
}

static void probe_iommufd(struct info_device *dv)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct info_probe *p = &dv->iommufd;
	struct iodma_vfio_device *vd = NULL;
	struct iodma_domain *d = NULL;
	int err;

	p->tried = true;
	o.backend = iodma_backend_iommufd();
	err = iodma_domain_create(&o, &d);
	if (err) {
		probe_fail(p, err);
		return;
	}
	err = iodma_vfio_device_open(d, dv->name, &vd);
	if (err) {
		probe_fail(p, err);
	} else {
		p->caps = IODMA_STRUCT_INIT(struct iodma_caps);
		iodma_domain_get_caps(d, &p->caps);
		iodma_vfio_device_close(vd);
	}
	iodma_domain_destroy(d);
}

static void run_probes(struct info_report *r)
{
	/* type1 first: every legacy container must be closed before an
	 * iommufd bind of a device of the same group (else EBUSY). */
	for (unsigned int i = 0; i < r->nr_groups; i++) {
		struct info_group *g = &r->groups[i];

		if (!g->viable || !g->node_access || !g->nr_devs ||
		    r->container_err)
			continue;
		if (g->node ? !r->type1v2 : !r->noiommu_ext)
			continue;
		probe_type1(g);
	}
	if (r->iommufd_err)
		return;
	for (unsigned int i = 0; i < r->nr_devices; i++) {
		struct info_device *dv = &r->devices[i];

		if (dv->cdev[0] && strstr(dv->driver, "vfio"))
			probe_iommufd(dv);
	}
}

/* ---- hints -------------------------------------------------------------- */

static void fmt_size(char *buf, size_t len, uint64_t v)
{
	static const char *const unit[] = { "bytes", "KiB", "MiB", "GiB",
					    "TiB", "PiB", "EiB" };
	unsigned int u = 0;

	while (u < 6 && v >= 1024 && v % 1024 == 0) {
		v /= 1024;
		u++;
	}
	snprintf(buf, len, "%" PRIu64 " %s", v, unit[u]);
}

/* Does a device of @g sit on a VFIO driver (so the group is in use)? */
static bool group_uses_vfio(const struct info_report *r,
			    const struct info_group *g)
{
	for (unsigned int i = 0; i < g->nr_devs; i++)
		if (strstr(r->devices[g->first_dev + i].driver, "vfio"))
			return true;
	return false;
}

#define BIND_RECIPE \
	"echo vfio-pci > /sys/bus/pci/devices/BDF/driver_override; " \
	"echo BDF > /sys/bus/pci/devices/BDF/driver/unbind; " \
	"echo BDF > /sys/bus/pci/drivers_probe"

static int make_hints(struct info_report *r)
{
	bool any_vfio = false;
	int err = 0;

	if (r->only_device && !r->device_found) {
		char path[PATH_MAX];

		pathf(path, "%s/bus/pci/devices/%s",
			 sysfs_root(), r->only_device);
		err |= add_hint(r, exists(path) ?
				"%s is in no IOMMU group: the IOMMU is off (boot with intel_iommu=on / amd_iommu=on) or no driver probed the device yet" :
				"%s: no such PCI device (see lspci -D)",
				r->only_device);
	}
	if (!r->only_device && r->nr_groups == 0) {
		if (r->noiommu_param == 1)
			err |= add_hint(r, "no IOMMU groups, VFIO no-IOMMU mode is on: bind a device to vfio-pci to get /dev/vfio/noiommu-N (no DMA isolation: testing only)");
		else
			err |= add_hint(r, "no IOMMU groups: boot with intel_iommu=on / amd_iommu=on (and VT-d / AMD-Vi enabled in the firmware), or enable VFIO no-IOMMU mode for testing with modprobe vfio enable_unsafe_noiommu_mode=1");
	}
	if (r->container_err == -ENOENT && !r->vfio_module)
		err |= add_hint(r, "VFIO is not loaded (no %s/vfio): modprobe vfio-pci",
				vfio_dir());
	else if (r->container_err == -ENOENT)
		err |= add_hint(r, "no %s/vfio although the vfio module is loaded: check devtmpfs / udev",
				vfio_dir());
	else if (r->container_err == -EACCES || r->container_err == -EPERM)
		err |= add_hint(r, "no permission on %s/vfio: run as root or give your user access to it",
				vfio_dir());
	else if (r->container_err)
		err |= add_hint(r, "cannot open %s/vfio: %s", vfio_dir(),
				strerror(-r->container_err));
	if (r->vfio_module && !r->vfio_pci_driver)
		err |= add_hint(r, "the vfio-pci driver is not loaded: modprobe vfio-pci");
	if (!r->container_err && !r->type1v2 && !r->noiommu_ext)
		err |= add_hint(r, "VFIO has no TYPE1v2 IOMMU: modprobe vfio_iommu_type1");
	if (r->iommufd_err == -EACCES || r->iommufd_err == -EPERM)
		err |= add_hint(r, "no permission on %s: run as root", iommu_dev());

	for (unsigned int i = 0; i < r->nr_groups; i++) {
		struct info_group *g = &r->groups[i];
		char bad[512] = "";
		size_t used = 0;

		if (group_uses_vfio(r, g))
			any_vfio = true;
		if (!g->viable && (group_uses_vfio(r, g) || r->only_device)) {
			for (unsigned int j = 0; j < g->nr_devs; j++) {
				struct info_device *dv = &r->devices[g->first_dev + j];

				if (driver_ok_for_vfio(dv->driver))
					continue;
				if (used < sizeof(bad))
					used += (size_t)snprintf(bad + used, sizeof(bad) - used,
								 "%s%s (%s)", used ? ", " : "",
								 dv->name, dv->driver);
			}
			err |= add_hint(r, "group %d is not viable: %s: bind them to vfio-pci: " BIND_RECIPE,
					g->id, bad);
			continue;
		}
		if (g->viable && r->only_device && !group_uses_vfio(r, g))
			err |= add_hint(r, "%s is not bound to vfio-pci: " BIND_RECIPE,
					r->only_device);
		if ((g->node || g->noiommu_node) && !g->node_access)
			err |= add_hint(r, "no permission on %s/%s%d: run as root or chown it to your user",
					vfio_dir(), g->node ? "" : "noiommu-", g->id);
		if (g->type1.tried && g->type1.err == -EPERM && r->unsafe_interrupts != 1)
			err |= add_hint(r, "group %d: VFIO refused (EPERM): if the IOMMU has no interrupt remapping (virtio-iommu), modprobe vfio_iommu_type1 allow_unsafe_interrupts=1",
					g->id);
		else if (g->type1.tried && g->type1.err)
			err |= add_hint(r, "group %d: opening a VFIO domain failed: %s",
					g->id, g->type1.msg);
	}
	if (r->nr_groups && !any_vfio && !r->only_device)
		err |= add_hint(r, "no device is bound to vfio-pci yet: to give one to VFIO: " BIND_RECIPE);
	for (unsigned int i = 0; i < r->nr_devices; i++) {
		struct info_device *dv = &r->devices[i];

		if (!r->iommufd_err && !dv->cdev[0] && strstr(dv->driver, "vfio"))
			err |= add_hint(r, "%s has no VFIO device cdev in %s/devices (kernel without CONFIG_VFIO_DEVICE_CDEV): iommufd cannot attach it, use VFIO type1",
					dv->name, vfio_dir());
		if (dv->iommufd.tried && dv->iommufd.err)
			err |= add_hint(r, "%s: iommufd attach failed: %s",
					dv->name, dv->iommufd.msg);
	}
	if (r->cap_ipc_lock != 1 && !r->memlock_unlimited &&
	    r->memlock_cur < MEMLOCK_LOW) {
		char s[32];

		fmt_size(s, sizeof(s), r->memlock_cur);
		err |= add_hint(r, "RLIMIT_MEMLOCK is %s and no CAP_IPC_LOCK: VFIO pins every mapped page against it; raise it (ulimit -l unlimited, or memlock in /etc/security/limits.conf)",
				s);
	}
	return err ? -ENOMEM : 0;
}

/* ---- collect ------------------------------------------------------------ */

int info_collect(const struct info_opts *o, struct info_report **out)
{
	struct info_report *r = calloc(1, sizeof(*r));
	int err;

	if (!r)
		return -ENOMEM;
	r->only_device = o ? o->device : NULL;
	err = read_groups(r);
	if (!err) {
		read_vfio(r);
		read_limits(r);
		if (o && o->probe)
			run_probes(r);
		err = make_hints(r);
	}
	if (err) {
		info_free(r);
		return err;
	}
	*out = r;
	return 0;
}

void info_free(struct info_report *r)
{
	if (!r)
		return;
	for (unsigned int i = 0; i < r->nr_hints; i++)
		free(r->hints[i]);
	free(r->hints);
	free(r->groups);
	free(r->devices);
	free(r);
}

/* ---- text --------------------------------------------------------------- */

#define LBL "  %-26s"

/* "4 KiB, 2 MiB, 1 GiB"; a run of three or more consecutive page sizes
 * (virtio-iommu allows every power of two) as "4 KiB to 8 EiB (every power
 * of two)". */
static void fmt_pgsizes(char *buf, size_t len, uint64_t pgsizes)
{
	size_t used = 0;

	buf[0] = '\0';
	for (unsigned int b = 0; b < 64 && used < len; b++) {
		unsigned int e = b;
		char lo[32], hi[32];

		if (!(pgsizes >> b & 1))
			continue;
		while (e < 63 && (pgsizes >> (e + 1) & 1))
			e++;
		if (e - b < 2)
			e = b;
		fmt_size(lo, sizeof(lo), 1ull << b);
		fmt_size(hi, sizeof(hi), 1ull << e);
		if (e == b)
			used += (size_t)snprintf(buf + used, len - used, "%s%s",
						 used ? ", " : "", lo);
		else
			used += (size_t)snprintf(buf + used, len - used,
						 "%s%s to %s (every power of two)",
						 used ? ", " : "", lo, hi);
		b = e;
	}
}

static void print_ranges(FILE *f, const struct iodma_caps *c)
{
	for (uint32_t i = 0; i < c->nr_ranges; i++) {
		if (i)
			fprintf(f, "    " LBL, "");
		uint64_t end = c->ranges[i].iova + c->ranges[i].len;

		if (end)
			fprintf(f, "[0x%" PRIx64 ", 0x%" PRIx64 ")\n",
				c->ranges[i].iova, end);
		else	/* the range reaches the top of the space */
			fprintf(f, "[0x%" PRIx64 ", 2^64)\n", c->ranges[i].iova);
	}
}

static void print_probe_text(FILE *f, const char *what,
			     const struct info_probe *p)
{
	char s[128];

	if (!p->tried)
		return;
	if (p->err) {
		fprintf(f, "    " LBL "%s (%s)\n", what, "failed", p->msg);
		return;
	}
	fmt_size(s, sizeof(s), p->caps.alignment);
	fprintf(f, "    " LBL "%s\n", what, p->noiommu ? "VFIO no-IOMMU" : "ok");
	fprintf(f, "    " LBL "%s\n", "  alignment", s);
	if (p->pgsizes) {
		fmt_pgsizes(s, sizeof(s), p->pgsizes);
		fprintf(f, "    " LBL "%s\n", "  page sizes", s);
	} else {
		fmt_size(s, sizeof(s), p->caps.alignment);
		fprintf(f, "    " LBL "%s (the alignment)\n", "  page sizes", s);
	}
	fprintf(f, "    " LBL, "  IOVA ranges");
	print_ranges(f, &p->caps);
	fprintf(f, "    " LBL "%" PRIu32 "%s\n", "  max mappings",
		p->caps.max_mappings,
		p->has_avail ? " (VFIO DMA_AVAIL)" :
		p->caps.max_mappings == UINT32_MAX ? " (no limit)" : "");
	snprintf(s, sizeof(s), "%s%s%s",
		 p->caps.flags & IODMA_CAP_UNMAP_ALL ? " unmap-all" : "",
		 p->caps.flags & IODMA_CAP_DIRTY_TRACKING ? " dirty-tracking" : "",
		 p->caps.flags & IODMA_CAP_MAP_FD ? " map-fd" : "");
	fprintf(f, "    " LBL "%s\n", "  flags", s[0] ? s + 1 : "none");
}

static const char *yes_no(int v)
{
	return v < 0 ? "unknown" : v ? "yes" : "no";
}

static const char *errtext(int err)
{
	return err == -ENOENT ? "absent" : strerror(-err);
}

void info_print_text(FILE *f, const struct info_report *r)
{
	char s[64];

	fprintf(f, "iodma info: kernel %s (%s)\n\n", r->kernel, r->machine);
	fprintf(f, "IOMMU groups: %u%s%s\n", r->nr_groups,
		r->only_device ? " (with " : "",
		r->only_device ? r->only_device : "");
	if (r->only_device)
		fprintf(f, ")\n");
	for (unsigned int i = 0; i < r->nr_groups; i++) {
		const struct info_group *g = &r->groups[i];

		fprintf(f, "  group %d: type %s, %s, ", g->id,
			g->type[0] ? g->type : "unknown",
			g->viable ? "viable" : "NOT viable");
		if (g->node || g->noiommu_node)
			fprintf(f, "%s/%s%d%s\n", vfio_dir(),
				g->node ? "" : "noiommu-", g->id,
				g->node_access ? "" : " (no access)");
		else
			fprintf(f, "not used by VFIO\n");
		for (unsigned int j = 0; j < g->nr_devs; j++) {
			const struct info_device *dv = &r->devices[g->first_dev + j];
			char ids[24] = "-", cls[12] = "-";

			if (dv->has_ids) {
				snprintf(ids, sizeof(ids), "%04x:%04x",
					 dv->vendor, dv->device);
				snprintf(cls, sizeof(cls), "%06x", dv->class_code);
			}
			fprintf(f, "    %-14s %-10s class %-7s driver ", dv->name,
				ids, cls);
			if (dv->cdev[0])
				fprintf(f, "%-12s cdev %s\n",
					dv->driver[0] ? dv->driver : "(none)",
					dv->cdev);
			else
				fprintf(f, "%s\n",
					dv->driver[0] ? dv->driver : "(none)");
		}
		for (unsigned int j = 0; j < g->nr_resv; j++) {
			const struct info_resv *rv = &g->resv[j];

			fprintf(f, "    " LBL "[0x%" PRIx64 ", 0x%" PRIx64 "] %s\n",
				j ? "" : "reserved", rv->start, rv->last,
				rv->type);
		}
		print_probe_text(f, "VFIO domain", &g->type1);
	}
	for (unsigned int i = 0; i < r->nr_devices; i++) {
		const struct info_device *dv = &r->devices[i];

		if (!dv->iommufd.tried)
			continue;
		fprintf(f, "  iommufd %s:\n", dv->name);
		print_probe_text(f, "IOAS attach", &dv->iommufd);
	}

	fprintf(f, "\nVFIO\n");
	snprintf(s, sizeof(s), "type1 (%s/vfio)", vfio_dir());
	if (r->container_err)
		fprintf(f, LBL "no (%s)\n", s, errtext(r->container_err));
	else
		fprintf(f, LBL "%s: API version %d, TYPE1v2 %s, UNMAP_ALL %s\n",
			s, r->type1v2 ? "yes" : "no", r->api_version,
			yes_no(r->type1v2), yes_no(r->unmap_all));
	snprintf(s, sizeof(s), "iommufd (%s)", iommu_dev());
	fprintf(f, LBL "%s\n", s,
		r->iommufd_err ? errtext(r->iommufd_err) : "yes");
	fprintf(f, LBL "%u (%s/devices/vfioN)\n", "device cdevs", r->nr_cdevs,
		vfio_dir());
	fprintf(f, LBL "%s, %u noiommu group(s)%s\n",
		"no-IOMMU mode",
		r->noiommu_param >= 0 ? (r->noiommu_param ? "ON" : "off") :
		r->vfio_module ? "not built (CONFIG_VFIO_NOIOMMU off)" :
				 "unknown (vfio not loaded)",
		r->nr_noiommu_nodes,
		r->container_err ? "" : r->noiommu_ext ? ", extension yes" :
							 ", extension no");
	if (r->dma_entry_limit >= 0)
		fprintf(f, LBL "%" PRId64 "\n", "type1 dma_entry_limit",
			r->dma_entry_limit);
	else
		fprintf(f, LBL "unknown (vfio_iommu_type1 not loaded)\n",
			"type1 dma_entry_limit");
	fprintf(f, LBL "%s\n", "allow_unsafe_interrupts",
		yes_no(r->unsafe_interrupts));

	fprintf(f, "\nProcess\n");
	if (r->memlock_unlimited) {
		snprintf(s, sizeof(s), "unlimited");
	} else {
		char h[32];

		fmt_size(h, sizeof(h), r->memlock_cur);
		snprintf(s, sizeof(s), "%" PRIu64 " bytes (%s)", r->memlock_cur, h);
	}
	fprintf(f, LBL "%s", "RLIMIT_MEMLOCK", s);
	if (r->memlock_max_unlimited) {
		fprintf(f, ", hard unlimited\n");
	} else {
		fmt_size(s, sizeof(s), r->memlock_max);
		fprintf(f, ", hard %s\n", s);
	}
	fprintf(f, LBL "%s\n", "CAP_SYS_ADMIN", yes_no(r->cap_sys_admin));
	fprintf(f, LBL "%s\n", "CAP_IPC_LOCK", yes_no(r->cap_ipc_lock));

	fprintf(f, "\n");
	if (!r->nr_hints) {
		fprintf(f, "Nothing missing.\n");
		return;
	}
	fprintf(f, "What is missing, and what to do:\n");
	for (unsigned int i = 0; i < r->nr_hints; i++)
		fprintf(f, "  - %s\n", r->hints[i]);
}

/* ---- JSON --------------------------------------------------------------- */

/*
 * The JSON text is json-c's (escapes, nesting, numbers); what is ours is
 * the report's shape and making every string valid UTF-8 first: sysfs and
 * uname text are bytes, and each byte that starts no well-formed UTF-8
 * sequence becomes U+FFFD, instead of a JSON text no strict parser
 * accepts.  json-c copies its input and reports allocation
 * failure by a NULL object or a -1; struct jctx remembers any so that the
 * whole report fails rather than comes out with members missing.
 */
struct jctx {
	bool failed;
};

/* Length of the well-formed UTF-8 sequence at @p (@n bytes left), 0 if
 * none starts there (Unicode 15, table 3-7: no overlongs, no surrogates,
 * nothing above U+10FFFF). */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		len = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		len = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		len = 4;
	else
		return 0;
	if (p[0] == 0xe0)
		lo = 0xa0;
	else if (p[0] == 0xed)
		hi = 0x9f;
	else if (p[0] == 0xf0)
		lo = 0x90;
	else if (p[0] == 0xf4)
		hi = 0x8f;
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return len;
}

/* A JSON string of @s (NULL: JSON null), ill-formed UTF-8 replaced. */
static struct json_object *j_str(struct jctx *c, const char *s)
{
	static const char repl[] = "\xef\xbf\xbd"; /* U+FFFD */
	const unsigned char *p = (const unsigned char *)s;
	struct json_object *v;
	size_t n, i, k, out = 0;
	char *buf;

	if (!s)
		return NULL;
	n = strlen(s);
	for (i = 0; i < n && (k = utf8_seq(p + i, n - i)) != 0; i += k)
		;
	if (i == n) {
		v = json_object_new_string_len(s, (int)n);
	} else {
		buf = malloc(3 * n + 1);	/* each byte at worst U+FFFD */
		if (!buf) {
			c->failed = true;
			return NULL;
		}
		for (i = 0; i < n; i += k) {
			k = utf8_seq(p + i, n - i);
			if (k) {
				memcpy(buf + out, s + i, k);
				out += k;
			} else {
				memcpy(buf + out, repl, 3);
				out += 3;
				k = 1;
			}
		}
		v = json_object_new_string_len(buf, (int)out);
		free(buf);
	}
	if (!v)
		c->failed = true;
	return v;
}

static struct json_object *j_new(struct jctx *c, struct json_object *v)
{
	if (!v)
		c->failed = true;
	return v;
}

static struct json_object *j_u64(struct jctx *c, uint64_t v)
{
	return j_new(c, json_object_new_uint64(v));
}

static struct json_object *j_i64(struct jctx *c, int64_t v)
{
	return j_new(c, json_object_new_int64(v));
}

/* 1 true, 0 false, negative: unknown (null). */
static struct json_object *j_bool(struct jctx *c, int v)
{
	return v < 0 ? NULL : j_new(c, json_object_new_boolean(v != 0));
}

/* Addresses as "0x..." strings: JSON numbers lose bits above 2^53 in
 * many parsers. */
static struct json_object *j_hex(struct jctx *c, uint64_t v)
{
	char s[24];

	snprintf(s, sizeof(s), "0x%" PRIx64, v);
	return j_str(c, s);
}

/* An error as its strerror() text; no error: null. */
static struct json_object *j_err(struct jctx *c, int err)
{
	return j_str(c, err ? strerror(-err) : NULL);
}

/* @obj[@key] = @v (NULL @v: null).  @v is dropped when @obj is NULL (its
 * allocation failed, already noted) or the member cannot be added. */
static void j_set(struct jctx *c, struct json_object *obj, const char *key,
		  struct json_object *v)
{
	if (!obj || json_object_object_add(obj, key, v) < 0) {
		if (obj)
			c->failed = true;
		json_object_put(v);
	}
}

/* Append @v to the array @arr, on the same terms as j_set(). */
static void j_push(struct jctx *c, struct json_object *arr,
		   struct json_object *v)
{
	if (!arr || json_object_array_add(arr, v) < 0) {
		if (arr)
			c->failed = true;
		json_object_put(v);
	}
}

static struct json_object *json_probe(struct jctx *c, const struct info_probe *p)
{
	struct json_object *o, *a;

	if (!p->tried)
		return NULL;
	o = j_new(c, json_object_new_object());
	j_set(c, o, "ok", j_bool(c, !p->err));
	if (p->err) {
		j_set(c, o, "errno", j_i64(c, -p->err));
		j_set(c, o, "error", j_str(c, p->msg));
		return o;
	}
	j_set(c, o, "noiommu", j_bool(c, p->noiommu));
	j_set(c, o, "alignment", j_u64(c, p->caps.alignment));
	a = j_new(c, json_object_new_array());
	for (unsigned int b = 0; b < 64; b++)
		if (p->pgsizes ? p->pgsizes >> b & 1 :
				 (1ull << b) == p->caps.alignment)
			j_push(c, a, j_u64(c, 1ull << b));
	j_set(c, o, "page_sizes", a);
	j_set(c, o, "page_sizes_from_kernel", j_bool(c, p->pgsizes != 0));
	a = j_new(c, json_object_new_array());
	for (uint32_t i = 0; i < p->caps.nr_ranges; i++) {
		struct json_object *r = j_new(c, json_object_new_object());

		j_set(c, r, "iova", j_hex(c, p->caps.ranges[i].iova));
		j_set(c, r, "len", j_hex(c, p->caps.ranges[i].len));
		j_push(c, a, r);
	}
	j_set(c, o, "iova_ranges", a);
	j_set(c, o, "max_mappings", j_u64(c, p->caps.max_mappings));
	j_set(c, o, "dma_avail", p->has_avail ? j_u64(c, p->avail) : NULL);
	j_set(c, o, "unmap_all",
	      j_bool(c, !!(p->caps.flags & IODMA_CAP_UNMAP_ALL)));
	j_set(c, o, "dirty_tracking",
	      j_bool(c, !!(p->caps.flags & IODMA_CAP_DIRTY_TRACKING)));
	j_set(c, o, "map_fd", j_bool(c, !!(p->caps.flags & IODMA_CAP_MAP_FD)));
	return o;
}

static struct json_object *json_device(struct jctx *c,
				       const struct info_device *dv)
{
	struct json_object *o = j_new(c, json_object_new_object());
	char s[16];

	j_set(c, o, "name", j_str(c, dv->name));
	if (dv->has_ids) {
		snprintf(s, sizeof(s), "%04x", dv->vendor);
		j_set(c, o, "vendor", j_str(c, s));
		snprintf(s, sizeof(s), "%04x", dv->device);
		j_set(c, o, "device", j_str(c, s));
		snprintf(s, sizeof(s), "%06x", dv->class_code);
		j_set(c, o, "class", j_str(c, s));
	}
	j_set(c, o, "driver", j_str(c, dv->driver[0] ? dv->driver : NULL));
	j_set(c, o, "cdev", j_str(c, dv->cdev[0] ? dv->cdev : NULL));
	j_set(c, o, "iommufd", json_probe(c, &dv->iommufd));
	return o;
}

static struct json_object *json_group(struct jctx *c,
				      const struct info_report *r,
				      const struct info_group *g)
{
	struct json_object *o = j_new(c, json_object_new_object()), *a;

	j_set(c, o, "group", j_i64(c, g->id));
	j_set(c, o, "type", j_str(c, g->type[0] ? g->type : NULL));
	j_set(c, o, "viable", j_bool(c, g->viable));
	j_set(c, o, "vfio_node", j_bool(c, g->node));
	j_set(c, o, "noiommu_node", j_bool(c, g->noiommu_node));
	j_set(c, o, "node_access", j_bool(c, g->node_access));
	a = j_new(c, json_object_new_array());
	for (unsigned int j = 0; j < g->nr_devs; j++)
		j_push(c, a, json_device(c, &r->devices[g->first_dev + j]));
	j_set(c, o, "devices", a);
	a = j_new(c, json_object_new_array());
	for (unsigned int j = 0; j < g->nr_resv; j++) {
		struct json_object *e = j_new(c, json_object_new_object());

		j_set(c, e, "start", j_hex(c, g->resv[j].start));
		j_set(c, e, "last", j_hex(c, g->resv[j].last));
		j_set(c, e, "type", j_str(c, g->resv[j].type));
		j_push(c, a, e);
	}
	j_set(c, o, "reserved_regions", a);
	j_set(c, o, "vfio", json_probe(c, &g->type1));
	return o;
}

static struct json_object *json_report(struct jctx *c,
				       const struct info_report *r)
{
	struct json_object *root = j_new(c, json_object_new_object()), *o;

	j_set(c, root, "kernel", j_str(c, r->kernel));
	j_set(c, root, "machine", j_str(c, r->machine));
	j_set(c, root, "device", j_str(c, r->only_device));
	o = j_new(c, json_object_new_array());
	for (unsigned int i = 0; i < r->nr_groups; i++)
		j_push(c, o, json_group(c, r, &r->groups[i]));
	j_set(c, root, "iommu_groups", o);

	o = j_new(c, json_object_new_object());
	j_set(c, o, "type1_available",
	      j_bool(c, !r->container_err && r->type1v2));
	j_set(c, o, "container_error", j_err(c, r->container_err));
	j_set(c, o, "api_version",
	      r->api_version >= 0 ? j_i64(c, r->api_version) : NULL);
	j_set(c, o, "type1v2", j_bool(c, r->type1v2));
	j_set(c, o, "unmap_all", j_bool(c, r->unmap_all));
	j_set(c, o, "noiommu_extension", j_bool(c, r->noiommu_ext));
	j_set(c, o, "vfio_module", j_bool(c, r->vfio_module));
	j_set(c, o, "vfio_pci_driver", j_bool(c, r->vfio_pci_driver));
	j_set(c, o, "type1_module", j_bool(c, r->type1_module));
	j_set(c, o, "dma_entry_limit",
	      r->dma_entry_limit >= 0 ? j_i64(c, r->dma_entry_limit) : NULL);
	j_set(c, o, "allow_unsafe_interrupts", j_bool(c, r->unsafe_interrupts));
	j_set(c, o, "noiommu_mode", j_bool(c, r->noiommu_param));
	j_set(c, o, "noiommu_groups", j_u64(c, r->nr_noiommu_nodes));
	j_set(c, o, "device_cdevs", j_u64(c, r->nr_cdevs));
	j_set(c, root, "vfio", o);

	o = j_new(c, json_object_new_object());
	j_set(c, o, "available", j_bool(c, !r->iommufd_err));
	j_set(c, o, "error", j_err(c, r->iommufd_err));
	j_set(c, root, "iommufd", o);

	o = j_new(c, json_object_new_object());
	j_set(c, o, "rlimit_memlock",
	      r->memlock_unlimited ? j_str(c, "unlimited") :
				     j_u64(c, r->memlock_cur));
	j_set(c, o, "rlimit_memlock_max",
	      r->memlock_max_unlimited ? j_str(c, "unlimited") :
					 j_u64(c, r->memlock_max));
	j_set(c, o, "cap_sys_admin", j_bool(c, r->cap_sys_admin));
	j_set(c, o, "cap_ipc_lock", j_bool(c, r->cap_ipc_lock));
	j_set(c, root, "process", o);

	o = j_new(c, json_object_new_array());
	for (unsigned int i = 0; i < r->nr_hints; i++)
		j_push(c, o, j_str(c, r->hints[i]));
	j_set(c, root, "hints", o);
	return root;
}

int info_print_json(FILE *f, const struct info_report *r)
{
	struct jctx c = { .failed = false };
	struct json_object *root = json_report(&c, r);
	const char *text = NULL;
	int err = 0;

	if (!c.failed)
		text = json_object_to_json_string_ext(root,
			JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
			JSON_C_TO_STRING_NOSLASHESCAPE);
	if (!text)
		err = -ENOMEM;
	else if (fputs(text, f) == EOF || fputc('\n', f) == EOF)
		err = -EIO;
	json_object_put(root);
	return err;
}

/* ---- command line ------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: iodma info [--json] [--device BDF] [--no-probe]\n"
		"\n"
		"Report the IOMMU groups and their devices, whether VFIO type1,\n"
		"iommufd and VFIO no-IOMMU mode are available, the IOVA ranges,\n"
		"page sizes and DMA mappings each viable group or VFIO device\n"
		"allows, the type1 dma_entry_limit, RLIMIT_MEMLOCK and privileges,\n"
		"and what to do about whatever is missing.\n"
		"\n"
		"  --json          one JSON object instead of text\n"
		"  --device BDF    only the IOMMU group of this PCI device (DDDD:BB:DD.F)\n"
		"  --no-probe      do not open VFIO / iommufd domains to read their caps\n"
		"  -h, --help      this text\n"
		"\n"
		"Environment: IODMA_SYSFS_ROOT (instead of /sys), IODMA_VFIO_DEV_DIR\n"
		"(instead of /dev/vfio), IODMA_IOMMU_DEV (instead of /dev/iommu).\n"
		"Exit status: 0 report printed (also when there is no IOMMU),\n"
		"1 --device names no device in an IOMMU group, 2 usage error.\n");
}

int info_main(int argc, char **argv, FILE *out, FILE *err)
{
	static const struct option lopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "device", required_argument, NULL, 'd' },
		{ "no-probe", no_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct info_opts o = { .device = NULL, .probe = true };
	struct info_report *r = NULL;
	bool json = false;
	int c, ret;

	optind = 0;	/* glibc: rescan from scratch (tests call us again) */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+hjd:", lopts, NULL)) != -1) {
		switch (c) {
		case 'j':
			json = true;
			break;
		case 'd':
			o.device = optarg;
			break;
		case 'n':
			o.probe = false;
			break;
		case 'h':
			usage(out);
			return 0;
		default:
			fprintf(err, "iodma info: %s '%s'\n",
				optopt ? "option needs an argument or is unknown:" :
					 "unknown option",
				argv[optind - 1]);
			usage(err);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(err, "iodma info: unexpected argument '%s'\n", argv[optind]);
		usage(err);
		return 2;
	}
	if (o.device && !iodma_vfio_bdf_valid(o.device)) {
		fprintf(err, "iodma info: '%s' is not a PCI address DDDD:BB:DD.F\n",
			o.device);
		return 2;
	}
	ret = info_collect(&o, &r);
	if (ret) {
		fprintf(err, "iodma info: %s\n", strerror(-ret));
		return 1;
	}
	if (json) {
		ret = info_print_json(out, r);
		if (ret) {
			fprintf(err, "iodma info: the JSON report: %s\n",
				strerror(-ret));
			info_free(r);
			return 1;
		}
	} else {
		info_print_text(out, r);
	}
	ret = o.device && !r->device_found ? 1 : 0;
	info_free(r);
	return ret;
}
