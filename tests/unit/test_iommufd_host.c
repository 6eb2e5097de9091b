/* SPDX-License-Identifier: MIT */
/*
 * test_iommufd_host.c - the iommufd backend on a host without /dev/iommu.
 *
 * Two parts:
 *   - what needs no kernel support: the uapi layouts, the -ENOENT of a
 *     missing /dev/iommu, option and argument validation;
 *   - the backend's logic against a fake kernel: this executable defines
 *     ioctl(), which the library (linked statically) calls instead of
 *     libc's.  Calls on the fake iommufd (a memfd, recognised by inode so
 *     that the backend's dup is recognised too) and on the fake VFIO cdev
 *     (another memfd) are answered by a small model of the uapi's
 *     documented behaviour; every other ioctl goes to the kernel.
 * The real kernel is exercised in the guest (tests/vm/conformance.c).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "growth.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <iodma/domain.h>
#include <iodma/vfio.h>
#include <iodma/test-hooks.h> /* fault injection: tests only */

#include "domain_priv.h"
#include "backend/iommufd_priv.h"
#include "backend/uapi_iommufd.h"

#define PG 4096ull
#define VA(x) ((void *)(uintptr_t)(0x7f0000000000ull + (x)))

/* ---- the fake kernel ------------------------------------------------------ */

#define FK_MAX_MAPS   64
#define FK_MAX_RANGES 8

struct fk_map {
	uint64_t iova, len;
	uint64_t va;		/* IOAS_MAP */
	int fd;			/* IOAS_MAP_FILE, else -1 */
	uint64_t start;
	uint32_t flags;
};

struct fk_space {
	uint32_t nr;
	uint64_t align;
	struct iommu_iova_range r[FK_MAX_RANGES];
};

static struct fake {
	bool on;
	ino_t ino;			/* the fake iommufd's inode */
	dev_t dev;
	int devfd;			/* the fake VFIO device cdev */
	bool map_file;			/* kernel has IOMMU_IOAS_MAP_FILE */
	bool unmap_all_enoent;		/* nothing mapped: ENOENT (old kernels) */
	struct fk_space base;		/* ranges of a fresh IOAS */
	struct fk_space att;		/* ranges with the device attached */
	bool race;			/* a range appears after the sizing call */
	uint32_t next_id, ioas_id, ioas_live;
	struct fk_map maps[FK_MAX_MAPS];
	unsigned int nmaps;
	bool bound, attached, legacy_open;
	uint32_t devid;
	unsigned long fail_req;		/* the next call of this request fails */
	int fail_err;
	unsigned int n_ranges, n_map, n_map_file, n_unmap, n_destroy, n_alloc;
} fk;

static bool fk_is_iommufd(int fd)
{
	struct stat st;

	return fk.on && fd >= 0 && fstat(fd, &st) == 0 &&
	       st.st_ino == fk.ino && st.st_dev == fk.dev;
}

static const struct fk_space *fk_space(void)
{
	return fk.attached ? &fk.att : &fk.base;
}

static bool fk_allowed(const struct fk_space *s, uint64_t iova, uint64_t len)
{
	for (uint32_t i = 0; i < s->nr; i++) {
		if (iova >= s->r[i].start && iova + (len - 1) <= s->r[i].last)
			return true;
	}
	return false;
}

static int fk_add_map(const struct fk_map *m)
{
	const struct fk_space *s = fk_space();

	if (!(m->flags & IOMMU_IOAS_MAP_FIXED_IOVA))
		return EINVAL;	/* iodma always gives the IOVA */
	if (!(m->flags & (IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE)))
		return EINVAL;
	if (!m->len || m->iova % s->align || m->len % s->align)
		return EINVAL;
	if (!fk_allowed(s, m->iova, m->len))
		return ENOSPC;
	for (unsigned int i = 0; i < fk.nmaps; i++) {
		const struct fk_map *o = &fk.maps[i];

		if (m->iova <= o->iova + (o->len - 1) &&
		    o->iova <= m->iova + (m->len - 1))
			return EEXIST;
	}
	if (fk.nmaps == FK_MAX_MAPS)
		return ENOMEM;
	fk.maps[fk.nmaps++] = *m;
	return 0;
}

static int fk_unmap(struct iommu_ioas_unmap *u)
{
	uint64_t last = u->iova + (u->length - 1), bytes = 0;
	unsigned int i, j;

	if (u->size < sizeof(*u) || u->ioas_id != fk.ioas_id || !u->length)
		return EINVAL;
	for (i = 0; i < fk.nmaps; i++) {
		const struct fk_map *m = &fk.maps[i];
		uint64_t mlast = m->iova + (m->len - 1);

		if (m->iova <= last && u->iova <= mlast &&
		    (m->iova < u->iova || mlast > last))
			return ENOENT;	/* would split a mapping */
	}
	for (i = j = 0; i < fk.nmaps; i++) {
		const struct fk_map *m = &fk.maps[i];

		if (m->iova >= u->iova && m->iova + (m->len - 1) <= last)
			bytes += m->len;
		else
			fk.maps[j++] = *m;
	}
	fk.nmaps = j;
	if (!bytes && !(u->iova == 0 && u->length == UINT64_MAX &&
			!fk.unmap_all_enoent))
		return ENOENT;
	u->length = bytes;
	return 0;
}

static int fk_ranges(struct iommu_ioas_iova_ranges *q)
{
	const struct fk_space *s = fk_space();
	struct iommu_iova_range *out = (void *)(uintptr_t)q->allowed_iovas;
	uint32_t max = q->num_iovas;

	if (q->size < sizeof(*q) || q->__reserved)
		return EINVAL;
	if (q->ioas_id != fk.ioas_id || !fk.ioas_live)
		return ENOENT;
	if (fk.race && max) {
		/* A device attached between the sizing call and this one. */
		fk.race = false;
		assert_true(fk.base.nr < FK_MAX_RANGES);
		fk.base.r[fk.base.nr].start = 0xf000000000000000ull;
		fk.base.r[fk.base.nr++].last = 0xf0000000ffffffffull;
	}
	for (uint32_t i = 0; i < s->nr && i < max; i++)
		out[i] = s->r[i];
	q->num_iovas = s->nr;
	q->out_iova_alignment = s->align;
	return s->nr > max ? EMSGSIZE : 0;
}

static int fk_iommufd(unsigned long req, void *arg)
{
	switch (req) {
	case IOMMU_IOAS_ALLOC: {
		struct iommu_ioas_alloc *a = arg;

		if (a->size < sizeof(*a) || a->flags)
			return EINVAL;
		fk.n_alloc++;
		a->out_ioas_id = fk.ioas_id = ++fk.next_id;
		fk.ioas_live++;
		return 0;
	}
	case IOMMU_DESTROY: {
		struct iommu_destroy *d = arg;

		fk.n_destroy++;
		if (d->id != fk.ioas_id || !fk.ioas_live)
			return ENOENT;
		if (fk.attached)
			return EBUSY;
		fk.ioas_live--;
		fk.nmaps = 0;
		return 0;
	}
	case IOMMU_IOAS_IOVA_RANGES:
		fk.n_ranges++;
		return fk_ranges(arg);
	case IOMMU_IOAS_MAP: {
		struct iommu_ioas_map *m = arg;
		struct fk_map r = {
			.iova = m->iova, .len = m->length, .va = m->user_va,
			.fd = -1, .flags = m->flags,
		};

		fk.n_map++;
		if (m->size < sizeof(*m) || m->ioas_id != fk.ioas_id)
			return EINVAL;
		return fk_add_map(&r);
	}
	case IOMMU_IOAS_MAP_FILE: {
		struct iommu_ioas_map_file *m = arg;
		struct fk_map r = {
			.iova = m->iova, .len = m->length, .fd = m->fd,
			.start = m->start, .flags = m->flags,
		};

		if (!fk.map_file)
			return ENOTTY;
		fk.n_map_file++;
		if (m->size < sizeof(*m) || m->ioas_id != fk.ioas_id)
			return EINVAL;
		if (!(m->flags & (IOMMU_IOAS_MAP_READABLE |
				  IOMMU_IOAS_MAP_WRITEABLE)))
			return EINVAL;
		if (m->fd < 0 || fcntl(m->fd, F_GETFD) < 0)
			return EBADF;
		if (fcntl(m->fd, F_GET_SEALS) < 0)
			return EINVAL;	/* only memfds are pinned by file */
		return fk_add_map(&r);
	}
	case IOMMU_IOAS_UNMAP:
		fk.n_unmap++;
		return fk_unmap(arg);
	default:
		return ENOTTY;
	}
}

static int fk_vfio(unsigned long req, void *arg)
{
	switch (req) {
	case VFIO_DEVICE_BIND_IOMMUFD: {
		struct vfio_device_bind_iommufd *b = arg;

		if (b->argsz < 16 || b->flags)
			return EINVAL;
		if (!fk_is_iommufd(b->iommufd))
			return EBADF;
		if (fk.legacy_open)
			return EBUSY;
		if (fk.bound)
			return EINVAL;
		fk.bound = true;
		b->out_devid = fk.devid;
		return 0;
	}
	case VFIO_DEVICE_ATTACH_IOMMUFD_PT: {
		struct vfio_device_attach_iommufd_pt *a = arg;

		if (a->argsz < 12 || a->flags || !fk.bound)
			return EINVAL;
		if (a->pt_id != fk.ioas_id)
			return ENOENT;
		/* The device's reserved regions must be free in the IOAS. */
		for (unsigned int i = 0; i < fk.nmaps; i++) {
			if (!fk_allowed(&fk.att, fk.maps[i].iova,
					fk.maps[i].len))
				return EADDRINUSE;
		}
		fk.attached = true;
		a->pt_id = 1000;	/* the HWPT the kernel made */
		return 0;
	}
	case VFIO_DEVICE_DETACH_IOMMUFD_PT: {
		struct vfio_device_detach_iommufd_pt *d = arg;

		if (d->argsz < 8 || d->flags || !fk.attached)
			return EINVAL;
		fk.attached = false;
		return 0;
	}
	default:
		return ENOTTY;
	}
}

/* Replaces libc's ioctl() for the whole executable (library included). */
int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	void *arg;
	int err;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (fk_is_iommufd(fd) || (fk.on && fd == fk.devfd)) {
		if (fk.fail_req == req) {
			fk.fail_req = 0;
			err = fk.fail_err;
		} else {
			err = fk_is_iommufd(fd) ? fk_iommufd(req, arg) :
			      fk_vfio(req, arg);
		}
		if (err) {
			errno = err;
			return -1;
		}
		return 0;
	}
	return (int)syscall(SYS_ioctl, fd, req, arg);
}

/* ---- helpers -------------------------------------------------------------- */

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		n++;
	closedir(d);
	return n;
}

static int fk_iommufd_fd;

/* A fake kernel with a fresh IOAS space [0, U64_MAX], alignment 1 (as
 * Linux reports before any device is attached), and an intel-iommu-like
 * device that removes the MSI window and limits to 39 bits. */
static int fk_setup(void **state)
{
	struct stat st;

	memset(&fk, 0, sizeof(fk));
	fk_iommufd_fd = memfd_create("fake-iommufd", MFD_CLOEXEC);
	assert_true(fk_iommufd_fd >= 0);
	assert_int_equal(fstat(fk_iommufd_fd, &st), 0);
	fk.ino = st.st_ino;
	fk.dev = st.st_dev;
	fk.devfd = memfd_create("fake-vfio-cdev", MFD_CLOEXEC);
	assert_true(fk.devfd >= 0);
	fk.devid = 42;
	fk.base.nr = 1;
	fk.base.align = 1;
	fk.base.r[0].start = 0;
	fk.base.r[0].last = UINT64_MAX;
	fk.att.nr = 2;
	fk.att.align = PG;
	fk.att.r[0].start = 0;
	fk.att.r[0].last = 0xfedfffffull;
	fk.att.r[1].start = 0xfef00000ull;
	fk.att.r[1].last = 0x7fffffffffull;
	fk.on = true;
	(void)state;
	return 0;
}

static int fk_teardown(void **state)
{
	fk.on = false;
	close(fk_iommufd_fd);
	close(fk.devfd);
	iodma_test_fail_alloc(0);
	(void)state;
	return 0;
}

static int fk_domain(struct iodma_domain **d)
{
	struct iodma_iommufd_opts io = IODMA_OPTS_INIT(struct iodma_iommufd_opts);
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);

	io.iommufd = fk_iommufd_fd;
	o.backend = iodma_backend_iommufd();
	o.backend_config = &io;
	return iodma_domain_create(&o, d);
}

static void caps_equal(const struct iodma_caps *a, const struct iodma_caps *b)
{
	assert_int_equal(a->alignment, b->alignment);
	assert_int_equal(a->nr_ranges, b->nr_ranges);
	assert_int_equal(a->max_mappings, b->max_mappings);
	assert_int_equal(a->flags, b->flags);
	assert_memory_equal(a->ranges, b->ranges,
			    a->nr_ranges * sizeof(a->ranges[0]));
}

/* ---- no kernel support needed -------------------------------------------- */

static void test_uapi_layouts_match_the_documented_abi(void **state)
{
	/* The _Static_asserts in uapi_iommufd.h compiled; spot-check the
	 * numbers the guest kernel will see. */
	assert_int_equal(IOMMU_IOAS_ALLOC, _IO(';', 0x81));
	assert_int_equal(IOMMU_IOAS_IOVA_RANGES, _IO(';', 0x84));
	assert_int_equal(IOMMU_IOAS_MAP_FILE, _IO(';', 0x8f));
	assert_int_equal(VFIO_DEVICE_BIND_IOMMUFD, _IO(';', 118));
	assert_int_equal(sizeof(struct iommu_ioas_iova_ranges), 32);
	assert_int_equal(sizeof(struct iommu_ioas_map), 40);
	assert_int_equal(IODMA_VFIO_BIND_IOMMUFD_MINSZ, 16);
	assert_int_equal(IODMA_VFIO_ATTACH_PT_MINSZ, 12);
	assert_int_equal(IODMA_VFIO_DETACH_PT_MINSZ, 8);
	(void)state;
}

static void test_create_without_dev_iommu_is_enoent(void **state)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_domain *d = (void *)&o;
	int fds = count_fds();

	if (access("/dev/iommu", F_OK) == 0)
		skip();
	o.backend = iodma_backend_iommufd();
	/* NULL config and a zeroed one both mean "open /dev/iommu". */
	assert_int_equal(iodma_domain_create(&o, &d), -ENOENT);
	assert_ptr_equal(d, &o);
	assert_non_null(strstr(iodma_vfio_last_error(), "/dev/iommu"));
	struct iodma_iommufd_opts io = IODMA_OPTS_INIT(struct iodma_iommufd_opts);

	o.backend_config = &io;
	assert_int_equal(iodma_domain_create(&o, &d), -ENOENT);
	io.iommufd = -1;
	assert_int_equal(iodma_domain_create(&o, &d), -ENOENT);
	assert_ptr_equal(d, &o);
	assert_int_equal(count_fds(), fds);
	(void)state;
}

static void test_bad_opts_are_einval(void **state)
{
	struct iodma_iommufd_opts io = IODMA_OPTS_INIT(struct iodma_iommufd_opts);
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_domain *d = NULL;
	int fds = count_fds();

	o.backend = iodma_backend_iommufd();
	o.backend_config = &io;
	io.size = 0;
	assert_int_equal(iodma_domain_create(&o, &d), -EINVAL);
	io.size = offsetof(struct iodma_iommufd_opts, iommufd);
	assert_int_equal(iodma_domain_create(&o, &d), -EINVAL);
	io.size = sizeof(io);
	io.iommufd = -2;
	assert_int_equal(iodma_domain_create(&o, &d), -EINVAL);
	assert_null(d);
	assert_int_equal(count_fds(), fds);
	(void)state;
}

static void test_closed_fd_is_ebadf(void **state)
{
	struct iodma_iommufd_opts io = IODMA_OPTS_INIT(struct iodma_iommufd_opts);
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_domain *d = NULL;
	int fd = memfd_create("x", MFD_CLOEXEC), fds;

	assert_true(fd >= 0);
	close(fd);
	fds = count_fds();
	o.backend = iodma_backend_iommufd();
	o.backend_config = &io;
	io.iommufd = fd;
	assert_int_equal(iodma_domain_create(&o, &d), -EBADF);
	assert_null(d);
	assert_int_equal(count_fds(), fds);
	(void)state;
}

/* The error an iommufd ioctl on a file that is not an iommufd gets from
 * below the library: ENOTTY from a kernel; ENOSYS under qemu-user, whose
 * ioctl emulation knows no iommufd command and answers without asking the
 * kernel (the cross tier runs this suite there). */
static int unknown_ioctl_errno(void)
{
	struct iommu_ioas_alloc a = { .size = sizeof(a) };
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	long r;

	assert_true(fd >= 0);
	r = syscall(SYS_ioctl, fd, IOMMU_IOAS_ALLOC, &a);
	close(fd);
	return r < 0 ? errno : 0;
}

static void test_fd_not_an_iommufd_is_enotty(void **state)
{
	struct iodma_iommufd_opts io = IODMA_OPTS_INIT(struct iodma_iommufd_opts);
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_domain *d = NULL;
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC), fds;

	assert_true(fd >= 0);
	fds = count_fds();
	o.backend = iodma_backend_iommufd();
	o.backend_config = &io;
	io.iommufd = fd;
	if (unknown_ioctl_errno() == ENOSYS) {
		close(fd);
		print_message("skip: the emulator answers iommufd ioctls ENOSYS without the kernel\n");
		skip();
	}
	assert_int_equal(iodma_domain_create(&o, &d), -ENOTTY);
	assert_null(d);
	assert_int_equal(count_fds(), fds);
	assert_true(fcntl(fd, F_GETFD) >= 0);	/* the caller's fd stays open */
	close(fd);
	(void)state;
}

static void test_iommufd_domain_is_false_for_soft_and_null(void **state)
{
	struct iodma_domain *d;

	assert_int_equal(iodma_domain_create(NULL, &d), 0);
	assert_false(iommufd_domain_is(d));
	assert_false(iommufd_domain_is(NULL));
	iodma_domain_destroy(d);
	(void)state;
}

static void test_attach_bad_fd_or_domain_changes_nothing(void **state)
{
	struct iodma_domain *d;
	struct iodma_caps before = IODMA_STRUCT_INIT(struct iodma_caps);
	struct iodma_caps after = IODMA_STRUCT_INIT(struct iodma_caps);
	uint32_t id = 0xdead;
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(iodma_domain_create(NULL, &d), 0);
	iodma_domain_get_caps(d, &before);
	assert_int_equal(iommufd_domain_attach_device(d, -1, &id), -EBADF);
	assert_int_equal(iommufd_domain_attach_device(NULL, -1, &id), -EBADF);
	assert_int_equal(iommufd_domain_attach_device(d, fd, &id), -EINVAL);
	assert_int_equal(iommufd_domain_attach_device(NULL, fd, &id), -EINVAL);
	assert_int_equal(id, 0xdead);
	iommufd_domain_detach_device(d, fd, id);	/* ignored: not iommufd */
	iommufd_domain_detach_device(NULL, -1, id);
	iodma_domain_get_caps(d, &after);
	caps_equal(&before, &after);
	iodma_domain_destroy(d);
	close(fd);
	(void)state;
}

/* ---- against the fake kernel ---------------------------------------------- */

static void test_caps_exclude_page0_and_report_no_mapping_limit(void **state)
{
	struct iodma_domain *d;
	struct iodma_caps c = IODMA_STRUCT_INIT(struct iodma_caps);

	assert_int_equal(fk_domain(&d), 0);
	assert_int_equal(fk.n_alloc, 1);
	iodma_domain_get_caps(d, &c);
	assert_int_equal(c.alignment, PG);	/* 1 raised to the page size */
	assert_int_equal(c.nr_ranges, 1);
	assert_int_equal(c.ranges[0].iova, PG);
	assert_int_equal(c.ranges[0].len, 0 - 2 * PG);	/* one page short of 2^64 */
	assert_int_equal(c.max_mappings, UINT32_MAX);
	assert_int_equal(c.flags, IODMA_CAP_UNMAP_ALL);	/* no MAP_FILE */
	iodma_domain_destroy(d);
	(void)state;
}

static void test_caps_clip_ranges_to_alignment(void **state)
{
	struct iodma_domain *d;
	struct iodma_caps c = IODMA_STRUCT_INIT(struct iodma_caps);

	fk.base.nr = 4;
	fk.base.align = 2 * PG;			/* above the page size: kept */
	fk.base.r[0] = (struct iommu_iova_range){ 0, 0x5fff };
	fk.base.r[1] = (struct iommu_iova_range){ 0x7000, 0x7fff }; /* < align */
	fk.base.r[2] = (struct iommu_iova_range){ 0x9000, 0x20000 };
	fk.base.r[3] = (struct iommu_iova_range){ 0x100000, 0xfffffffffffull };
	assert_int_equal(fk_domain(&d), 0);
	iodma_domain_get_caps(d, &c);
	assert_int_equal(c.alignment, 2 * PG);
	assert_int_equal(c.nr_ranges, 3);
	assert_int_equal(c.ranges[0].iova, 0x2000);	/* page 0 excluded */
	assert_int_equal(c.ranges[0].len, 0x4000);
	assert_int_equal(c.ranges[1].iova, 0xa000);
	assert_int_equal(c.ranges[1].len, 0x20000 - 0xa000);
	assert_int_equal(c.ranges[2].iova, 0x100000);
	assert_int_equal(c.ranges[2].len, 0x100000000000ull - 0x100000);
	/* Sized in two calls: count (-EMSGSIZE), then fill. */
	assert_int_equal(fk.n_ranges, 2);
	iodma_domain_destroy(d);
	(void)state;
}

static void test_ranges_reread_when_they_grow_between_calls(void **state)
{
	struct iodma_domain *d;
	struct iodma_caps c = IODMA_STRUCT_INIT(struct iodma_caps);

	fk.race = true;
	fk.base.r[0].last = 0xefffffffffffffffull;
	assert_int_equal(fk_domain(&d), 0);
	assert_int_equal(fk.n_ranges, 3);	/* count, too small, fill */
	iodma_domain_get_caps(d, &c);
	assert_int_equal(c.nr_ranges, 2);
	assert_int_equal(c.ranges[1].iova, 0xf000000000000000ull);
	assert_int_equal(c.ranges[1].len, 0x100000000ull);
	iodma_domain_destroy(d);
	(void)state;
}

static void test_map_is_fixed_iova_with_perm_flags(void **state)
{
	struct iodma_domain *d;

	assert_int_equal(fk_domain(&d), 0);
	assert_int_equal(iodma_domain_map(d, 0x10000, 2 * PG, VA(0x10000),
					  IODMA_PERM_READ), 0);
	assert_int_equal(iodma_domain_map(d, 0x20000, PG, VA(0x20000),
					  IODMA_PERM_WRITE), 0);
	assert_int_equal(iodma_domain_map(d, 0x30000, PG, VA(0x30000),
					  IODMA_PERM_RW), 0);
	assert_int_equal(fk.nmaps, 3);
	assert_int_equal(fk.maps[0].iova, 0x10000);
	assert_int_equal(fk.maps[0].len, 2 * PG);
	assert_int_equal(fk.maps[0].va, (uintptr_t)VA(0x10000));
	assert_int_equal(fk.maps[0].flags,
			 IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE);
	assert_int_equal(fk.maps[1].flags,
			 IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE);
	assert_int_equal(fk.maps[2].flags, IOMMU_IOAS_MAP_FIXED_IOVA |
			 IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE);
	iodma_domain_destroy(d);
	assert_int_equal(fk.nmaps, 0);
	(void)state;
}

static void test_map_fd_without_map_file_uses_va_or_eopnotsupp(void **state)
{
	struct iodma_domain *d;
	int mfd = memfd_create("mem", MFD_CLOEXEC);

	assert_true(mfd >= 0);
	assert_int_equal(fk_domain(&d), 0);
	assert_int_equal(iodma_domain_map_fd(d, 0x10000, PG, VA(0x10000), mfd,
					     PG, IODMA_PERM_RW), 0);
	assert_int_equal(fk.n_map_file, 0);
	assert_int_equal(fk.maps[0].va, (uintptr_t)VA(0x10000));
	assert_int_equal(fk.maps[0].fd, -1);
	/* No VA and no MAP_FILE: refused, nothing mapped. */
	assert_int_equal(iodma_domain_map_fd(d, 0x20000, PG, NULL, mfd, 0,
					     IODMA_PERM_RW), -EOPNOTSUPP);
	assert_int_equal(fk.nmaps, 1);
	assert_int_equal(iodma_domain_nr_mappings(d), 1);
	iodma_domain_destroy(d);
	close(mfd);
	(void)state;
}

static void test_map_fd_with_map_file_maps_by_fd(void **state)
{
	struct iodma_domain *d;
	struct iodma_caps c = IODMA_STRUCT_INIT(struct iodma_caps);
	int mfd = memfd_create("mem", MFD_CLOEXEC);
	int nfd = open("/dev/null", O_RDWR | O_CLOEXEC);

	assert_true(mfd >= 0 && nfd >= 0);
	fk.map_file = true;
	assert_int_equal(fk_domain(&d), 0);
	iodma_domain_get_caps(d, &c);
	assert_true(c.flags & IODMA_CAP_MAP_FD);
	/* fd only: IOAS_MAP_FILE with the offset as start. */
	assert_int_equal(iodma_domain_map_fd(d, 0x10000, PG, NULL, mfd,
					     3 * PG, IODMA_PERM_READ), 0);
	assert_int_equal(fk.nmaps, 1);
	assert_int_equal(fk.maps[0].fd, mfd);
	assert_int_equal(fk.maps[0].start, 3 * PG);
	/* A file the kernel cannot pin by fd, with a VA: by VA instead. */
	assert_int_equal(iodma_domain_map_fd(d, 0x20000, PG, VA(0x20000), nfd,
					     0, IODMA_PERM_READ), 0);
	assert_int_equal(fk.nmaps, 2);
	assert_int_equal(fk.maps[1].fd, -1);
	assert_int_equal(fk.maps[1].va, (uintptr_t)VA(0x20000));
	/* ... and without a VA: the kernel's error, nothing mapped. */
	assert_int_equal(iodma_domain_map_fd(d, 0x30000, PG, NULL, nfd, 0,
					     IODMA_PERM_READ), -EINVAL);
	assert_int_equal(fk.nmaps, 2);
	assert_int_equal(iodma_domain_nr_mappings(d), 2);
	iodma_domain_destroy(d);
	close(mfd);
	close(nfd);
	(void)state;
}

static void test_unmap_reports_kernel_bytes_and_unmap_all_empties(void **state)
{
	struct iodma_domain *d;
	uint64_t bytes = 0;

	assert_int_equal(fk_domain(&d), 0);
	for (uint64_t i = 0; i < 4; i++)
		assert_int_equal(iodma_domain_map(d, 0x10000 + i * 0x10000, PG,
						  VA(i * PG), IODMA_PERM_RW), 0);
	assert_int_equal(iodma_domain_unmap_gaps(d, 0x10000, 0x20000, &bytes), 0);
	assert_int_equal(bytes, 2 * PG);
	assert_int_equal(fk.nmaps, 2);
	assert_int_equal(iodma_domain_unmap(d, 0x30000, PG), 0);
	assert_int_equal(fk.nmaps, 1);
	assert_int_equal(iodma_domain_unmap_all(d, &bytes), 0);
	assert_int_equal(bytes, PG);
	assert_int_equal(fk.nmaps, 0);
	/* Nothing left: an old kernel's ENOENT is not an error. */
	fk.unmap_all_enoent = true;
	assert_int_equal(iodma_domain_unmap_all(d, &bytes), 0);
	assert_int_equal(bytes, 0);
	iodma_domain_destroy(d);
	(void)state;
}

static void test_kernel_error_leaves_domain_unchanged(void **state)
{
	struct iodma_domain *d;

	assert_int_equal(fk_domain(&d), 0);
	fk.fail_req = IOMMU_IOAS_MAP;
	fk.fail_err = ENOMEM;	/* RLIMIT_MEMLOCK reached */
	assert_int_equal(iodma_domain_map(d, 0x10000, PG, VA(0), IODMA_PERM_RW),
			 -ENOMEM);
	assert_int_equal(iodma_domain_nr_mappings(d), 0);
	assert_int_equal(fk.nmaps, 0);
	assert_int_equal(iodma_domain_map(d, 0x10000, PG, VA(0), IODMA_PERM_RW),
			 0);
	fk.fail_req = IOMMU_IOAS_UNMAP;
	fk.fail_err = EIO;
	assert_int_equal(iodma_domain_unmap(d, 0x10000, PG), -EIO);
	assert_int_equal(iodma_domain_nr_mappings(d), 1);
	assert_int_equal(fk.nmaps, 1);
	fk.fail_req = IOMMU_IOAS_IOVA_RANGES;
	fk.fail_err = EFAULT;
	assert_int_equal(iodma_domain_refresh_caps(d), -EFAULT);
	iodma_domain_destroy(d);
	(void)state;
}

static void test_destroy_frees_ioas_and_closes_only_its_fd(void **state)
{
	struct iodma_domain *d;
	int fds = count_fds();

	assert_int_equal(fk_domain(&d), 0);
	assert_int_equal(count_fds(), fds + 1);	/* its dup */
	assert_int_equal(fk.ioas_live, 1);
	assert_int_equal(iodma_domain_map(d, 0x10000, PG, VA(0), IODMA_PERM_RW),
			 0);
	iodma_domain_destroy(d);
	assert_int_equal(fk.ioas_live, 0);
	assert_int_equal(fk.nmaps, 0);
	assert_int_equal(count_fds(), fds);
	assert_true(fcntl(fk_iommufd_fd, F_GETFD) >= 0);
	(void)state;
}

static void test_failed_ioas_alloc_closes_dup(void **state)
{
	struct iodma_domain *d = NULL;
	int fds = count_fds();

	fk.fail_req = IOMMU_IOAS_ALLOC;
	fk.fail_err = ENOMEM;
	assert_int_equal(fk_domain(&d), -ENOMEM);
	assert_null(d);
	assert_int_equal(count_fds(), fds);
	assert_int_equal(fk.ioas_live, 0);
	(void)state;
}

static void test_create_fail_nth_leaves_nothing(void **state)
{
	struct iodma_domain *d = NULL;
	int fds = count_fds(), err;
	unsigned long n;

	for (n = 1; n < 100; n++) {
		iodma_test_fail_alloc(n);
		err = fk_domain(&d);
		if (err == 0)
			break;
		assert_int_equal(err, -ENOMEM);
		assert_null(d);
		assert_int_equal(fk.ioas_live, 0);
		assert_int_equal(count_fds(), fds);
	}
	iodma_test_fail_alloc(0);
	assert_int_equal(err, 0);
	assert_true(n > 2);	/* domain, backend state, ranges array */
	iodma_domain_destroy(d);
	assert_int_equal(count_fds(), fds);
	(void)state;
}

static void test_refresh_fail_nth_keeps_caps(void **state)
{
	struct iodma_domain *d;
	struct iodma_caps before = IODMA_STRUCT_INIT(struct iodma_caps);
	struct iodma_caps after = IODMA_STRUCT_INIT(struct iodma_caps);
	unsigned long n;
	int err;

	assert_int_equal(fk_domain(&d), 0);
	iodma_domain_get_caps(d, &before);
	for (n = 1; n < 100; n++) {
		iodma_test_fail_alloc(n);
		err = iodma_domain_refresh_caps(d);
		if (err == 0)
			break;
		assert_int_equal(err, -ENOMEM);
		iodma_domain_get_caps(d, &after);
		caps_equal(&before, &after);
	}
	iodma_test_fail_alloc(0);
	assert_int_equal(err, 0);
	assert_true(n > 1);
	iodma_domain_destroy(d);
	(void)state;
}

static void test_attach_binds_attaches_and_keeps_same_ranges(void **state)
{
	struct iodma_domain *d;
	struct iodma_caps before = IODMA_STRUCT_INIT(struct iodma_caps);
	struct iodma_caps after = IODMA_STRUCT_INIT(struct iodma_caps);
	uint32_t id = 0;

	fk.att = fk.base;	/* a device that reserves nothing */
	assert_int_equal(fk_domain(&d), 0);
	iodma_domain_get_caps(d, &before);
	assert_true(iommufd_domain_is(d));
	assert_int_equal(iommufd_domain_attach_device(d, fk.devfd, &id), 0);
	assert_int_equal(id, 42);
	assert_true(fk.bound && fk.attached);
	iodma_domain_get_caps(d, &after);
	caps_equal(&before, &after);
	iommufd_domain_detach_device(d, fk.devfd, id);
	assert_false(fk.attached);
	iodma_domain_destroy(d);
	(void)state;
}

/* Needs the domain to accept ranges that shrink (issue 3, domain.c). */
static void test_attach_shrinks_ranges_and_detach_widens(void **state)
{
	struct iodma_domain *d;
	struct iodma_caps c = IODMA_STRUCT_INIT(struct iodma_caps);
	uint32_t id = 0;
	unsigned int reads;

	assert_int_equal(fk_domain(&d), 0);
	assert_int_equal(iodma_domain_map(d, 0x10000, PG, VA(0), IODMA_PERM_RW),
			 0);
	reads = fk.n_ranges;
	assert_int_equal(iommufd_domain_attach_device(d, fk.devfd, &id), 0);
	assert_true(fk.n_ranges > reads);	/* re-read after the attach */
	iodma_domain_get_caps(d, &c);
	assert_int_equal(c.nr_ranges, 2);
	assert_int_equal(c.ranges[0].iova, PG);
	assert_int_equal(c.ranges[0].len, 0xfee00000ull - PG);
	assert_int_equal(c.ranges[1].iova, 0xfef00000ull);
	assert_int_equal(c.ranges[1].len, 0x8000000000ull - 0xfef00000ull);
	/* A map in the removed MSI window is refused by the domain. */
	assert_int_equal(iodma_domain_map(d, 0xfee00000ull, PG, VA(0),
					  IODMA_PERM_RW), -ERANGE);
	iommufd_domain_detach_device(d, fk.devfd, id);
	iodma_domain_get_caps(d, &c);
	assert_int_equal(c.nr_ranges, 1);
	assert_int_equal(c.ranges[0].len, 0 - 2 * PG);
	iodma_domain_destroy(d);
	(void)state;
}

static void test_attach_refused_by_kernel_changes_nothing(void **state)
{
	struct iodma_domain *d;
	struct iodma_caps before = IODMA_STRUCT_INIT(struct iodma_caps);
	struct iodma_caps after = IODMA_STRUCT_INIT(struct iodma_caps);
	uint32_t id = 7;

	assert_int_equal(fk_domain(&d), 0);
	iodma_domain_get_caps(d, &before);
	/* The legacy group is still open: BIND says EBUSY. */
	fk.legacy_open = true;
	assert_int_equal(iommufd_domain_attach_device(d, fk.devfd, &id), -EBUSY);
	assert_false(fk.bound);
	fk.legacy_open = false;
	/* A live mapping in the device's reserved window: ATTACH refused. */
	assert_int_equal(iodma_domain_map(d, 0xfee00000ull, PG, VA(0),
					  IODMA_PERM_RW), 0);
	assert_int_equal(iommufd_domain_attach_device(d, fk.devfd, &id),
			 -EADDRINUSE);
	assert_false(fk.attached);
	assert_int_equal(id, 7);
	iodma_domain_get_caps(d, &after);
	caps_equal(&before, &after);
	assert_int_equal(iodma_domain_nr_mappings(d), 1);
	/* Not a VFIO cdev at all. */
	int nfd = open("/dev/null", O_RDWR | O_CLOEXEC);

	assert_true(nfd >= 0);
	assert_int_equal(iommufd_domain_attach_device(d, nfd, &id),
			 -unknown_ioctl_errno());
	close(nfd);
	iodma_domain_destroy(d);
	(void)state;
}

static void test_attach_refresh_failure_detaches(void **state)
{
	struct iodma_domain *d;
	struct iodma_caps before = IODMA_STRUCT_INIT(struct iodma_caps);
	struct iodma_caps after = IODMA_STRUCT_INIT(struct iodma_caps);
	uint32_t id = 7;

	/* The device needs a larger alignment than a live mapping has. */
	fk.att = fk.base;
	fk.att.align = 2 * PG;
	assert_int_equal(fk_domain(&d), 0);
	assert_int_equal(iodma_domain_map(d, 0x11000, PG, VA(0), IODMA_PERM_RW),
			 0);
	iodma_domain_get_caps(d, &before);
	assert_int_equal(iommufd_domain_attach_device(d, fk.devfd, &id), -EBUSY);
	assert_false(fk.attached);	/* detached again */
	assert_int_equal(id, 7);
	iodma_domain_get_caps(d, &after);
	caps_equal(&before, &after);
	iodma_domain_destroy(d);
	(void)state;
}

static void test_destroy_with_device_attached_still_closes(void **state)
{
	struct iodma_domain *d;
	uint32_t id;
	int fds = count_fds();

	fk.att = fk.base;
	assert_int_equal(fk_domain(&d), 0);
	assert_int_equal(iommufd_domain_attach_device(d, fk.devfd, &id), 0);
	iodma_domain_destroy(d);	/* IOMMU_DESTROY answers EBUSY */
	assert_int_equal(count_fds(), fds);
	(void)state;
}

#define FK_TEST(f) cmocka_unit_test_setup_teardown(f, fk_setup, fk_teardown)

/* Growth rule of common.h for struct iodma_iommufd_opts: unknown non-zero
 * tail is -E2BIG and no descriptor is opened. */
static void test_opts_growth(void **state)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct {
		struct iodma_iommufd_opts io;
		uint64_t newer;
	} w;
	struct iodma_domain *d = NULL;
	int fds = count_fds();

	(void)state;
	memset(&w, 0, sizeof(w));
	w.io.size = sizeof(w);
	w.newer = 1;
	o.backend = iodma_backend_iommufd();
	o.backend_config = &w.io;
	assert_int_equal(iodma_domain_create(&o, &d), -E2BIG);
	assert_null(d);
	assert_int_equal(count_fds(), fds);
}

/* Growth rule of common.h for the output struct iodma_vfio_stats, on an
 * iommufd domain of the fake kernel. */
static int get_vfio_stats(void *ctx, void *out)
{
	return iodma_vfio_get_stats(ctx, out);
}

static void test_vfio_stats_growth_rule(void **state)
{
	struct iodma_vfio_stats st = IODMA_STRUCT_INIT(struct iodma_vfio_stats);
	struct iodma_domain *d;

	(void)state;
	assert_int_equal(fk_domain(&d), 0);
	check_output_growth(sizeof(struct iodma_vfio_stats), get_vfio_stats, d);
	assert_int_equal(iodma_vfio_get_stats(d, &st), 0);
	assert_true(st.other_ioctls > 0);
	iodma_domain_destroy(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		FK_TEST(test_vfio_stats_growth_rule),
		cmocka_unit_test(test_opts_growth),
		cmocka_unit_test(test_uapi_layouts_match_the_documented_abi),
		cmocka_unit_test(test_create_without_dev_iommu_is_enoent),
		cmocka_unit_test(test_bad_opts_are_einval),
		cmocka_unit_test(test_closed_fd_is_ebadf),
		cmocka_unit_test(test_fd_not_an_iommufd_is_enotty),
		cmocka_unit_test(test_iommufd_domain_is_false_for_soft_and_null),
		cmocka_unit_test(test_attach_bad_fd_or_domain_changes_nothing),
		FK_TEST(test_caps_exclude_page0_and_report_no_mapping_limit),
		FK_TEST(test_caps_clip_ranges_to_alignment),
		FK_TEST(test_ranges_reread_when_they_grow_between_calls),
		FK_TEST(test_map_is_fixed_iova_with_perm_flags),
		FK_TEST(test_map_fd_without_map_file_uses_va_or_eopnotsupp),
		FK_TEST(test_map_fd_with_map_file_maps_by_fd),
		FK_TEST(test_unmap_reports_kernel_bytes_and_unmap_all_empties),
		FK_TEST(test_kernel_error_leaves_domain_unchanged),
		FK_TEST(test_destroy_frees_ioas_and_closes_only_its_fd),
		FK_TEST(test_failed_ioas_alloc_closes_dup),
		FK_TEST(test_create_fail_nth_leaves_nothing),
		FK_TEST(test_refresh_fail_nth_keeps_caps),
		FK_TEST(test_attach_binds_attaches_and_keeps_same_ranges),
		FK_TEST(test_attach_shrinks_ranges_and_detach_widens),
		FK_TEST(test_attach_refused_by_kernel_changes_nothing),
		FK_TEST(test_attach_refresh_failure_detaches),
		FK_TEST(test_destroy_with_device_attached_still_closes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
