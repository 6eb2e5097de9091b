/* SPDX-License-Identifier: MIT */
/*
 * test_vfio_info.c - iodma_vfio_get_iommu_info() against a fake VFIO
 * type1 kernel.
 *
 * This executable defines ioctl(), which the library (linked statically)
 * calls instead of libc's (as test_iommufd_host.c does for iommufd).  The
 * fake container and group nodes are empty files in a temporary directory
 * named by IODMA_VFIO_DEV_DIR, recognised by inode; their ioctls are
 * answered by a small model of the VFIO uapi (<linux/vfio.h>): API version,
 * extensions, group status and container, SET_IOMMU, and a GET_INFO whose
 * answer carries iova_pgsizes and a capability chain (IOVA ranges,
 * migration, DMA_AVAIL) as vfio_iommu_type1.c builds it, including its
 * "argsz too small: here is the size I need" reply.  Every other ioctl goes
 * to the kernel.  The real kernel is exercised in the guest
 * (tests/vm/info, tests/vm/conformance.c).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/vfio.h>

#include <iodma/domain.h>
#include <iodma/vfio.h>
#include <iodma/test-hooks.h> /* fault injection: tests only */

#ifndef VFIO_UNMAP_ALL
#define VFIO_UNMAP_ALL 9
#endif
#ifndef VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL
#define VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL 3
struct vfio_iommu_type1_info_dma_avail {
	struct vfio_info_cap_header header;
	uint32_t avail;
};
#endif

/* ---- the fake kernel ------------------------------------------------------ */

static struct {
	char dir[64];
	ino_t container_ino, group_ino, noiommu_group_ino;
	dev_t dev;
	unsigned long model;		/* VFIO_SET_IOMMU's, 0 = none */
	bool group_set;			/* the group is in the container */
	/* what GET_INFO reports */
	uint64_t pgsizes;		/* 0: VFIO_IOMMU_INFO_PGSIZES clear */
	bool migration;
	uint64_t dirty_pgsizes;
	bool has_avail;
	uint32_t avail;
	uint32_t pad;			/* extra bytes the answer needs */
	bool always_more;		/* ask for 8 more bytes every time */
	int fail_info;			/* errno of the next GET_INFO, once */
	unsigned int nr_info;		/* GET_INFO calls answered */
} fk;

static bool fk_is(int fd, ino_t ino)
{
	struct stat st;

	return ino && fd >= 0 && fstat(fd, &st) == 0 && st.st_ino == ino &&
	       st.st_dev == fk.dev;
}

/* The GET_INFO answer: the base struct, then the IOVA-range capability
 * (one range below 2^48), the migration capability, DMA_AVAIL, padding. */
static uint32_t fk_info_size(void)
{
	return (uint32_t)(sizeof(struct vfio_iommu_type1_info) +
			  sizeof(struct vfio_iommu_type1_info_cap_iova_range) +
			  sizeof(struct vfio_iova_range) +
			  sizeof(struct vfio_iommu_type1_info_cap_migration) +
			  sizeof(struct vfio_iommu_type1_info_dma_avail)) +
	       fk.pad;
}

static int fk_get_info(struct vfio_iommu_type1_info *info)
{
	uint32_t need = fk_info_size(), off;
	char *base = (char *)info;
	struct vfio_info_cap_header *prev = NULL;

	fk.nr_info++;
	if (fk.fail_info) {
		int e = fk.fail_info;

		fk.fail_info = 0;
		return e;
	}
	if (!fk.model || info->argsz < sizeof(*info))
		return EINVAL;
	if (fk.always_more)
		need = info->argsz + 8;
	info->flags = fk.pgsizes ? VFIO_IOMMU_INFO_PGSIZES : 0;
	info->iova_pgsizes = fk.pgsizes;
	info->flags |= VFIO_IOMMU_INFO_CAPS;
	info->cap_offset = 0;
	if (info->argsz < need) {
		/* vfio_iommu_type1: no chain, argsz says how much is needed */
		info->argsz = need;
		return 0;
	}
	info->argsz = need;
	off = sizeof(*info);
	{
		struct vfio_iommu_type1_info_cap_iova_range *c =
			(void *)(base + off);

		c->header.id = VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE;
		c->header.version = 1;
		c->nr_iovas = 1;
		c->iova_ranges[0].start = 0;
		c->iova_ranges[0].end = (1ull << 48) - 1;
		info->cap_offset = off;
		prev = &c->header;
		off += sizeof(*c) + sizeof(c->iova_ranges[0]);
	}
	if (fk.migration) {
		struct vfio_iommu_type1_info_cap_migration *c =
			(void *)(base + off);

		c->header.id = VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION;
		c->header.version = 1;
		c->flags = 0;
		c->pgsize_bitmap = fk.dirty_pgsizes;
		c->max_dirty_bitmap_size = 256ull << 20;
		prev->next = off;
		prev = &c->header;
		off += sizeof(*c);
	}
	if (fk.has_avail) {
		struct vfio_iommu_type1_info_dma_avail *c = (void *)(base + off);

		c->header.id = VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL;
		c->header.version = 1;
		c->avail = fk.avail;
		prev->next = off;
		prev = &c->header;
		off += sizeof(*c);
	}
	prev->next = 0;
	return 0;
}

static int fk_container(unsigned long req, void *arg, long *ret)
{
	switch (req) {
	case VFIO_GET_API_VERSION:
		*ret = VFIO_API_VERSION;
		return 0;
	case VFIO_CHECK_EXTENSION:
		*ret = (unsigned long)arg == VFIO_TYPE1v2_IOMMU ||
		       (unsigned long)arg == VFIO_NOIOMMU_IOMMU ||
		       (unsigned long)arg == VFIO_UNMAP_ALL;
		return 0;
	case VFIO_SET_IOMMU:
		if (!fk.group_set || fk.model)
			return EINVAL;
		fk.model = (unsigned long)arg;
		return 0;
	case VFIO_IOMMU_GET_INFO:
		if (fk.model == VFIO_NOIOMMU_IOMMU)
			return ENOTTY;
		return fk_get_info(arg);
	case VFIO_IOMMU_UNMAP_DMA: {
		struct vfio_iommu_type1_dma_unmap *u = arg;

		if (!fk.model)
			return EINVAL;
		u->size = 0;	/* nothing was mapped */
		return 0;
	}
	default:
		return ENOTTY;
	}
}

static int fk_group(unsigned long req, void *arg)
{
	switch (req) {
	case VFIO_GROUP_GET_STATUS: {
		struct vfio_group_status *st = arg;

		st->flags = VFIO_GROUP_FLAGS_VIABLE |
			    (fk.group_set ? VFIO_GROUP_FLAGS_CONTAINER_SET : 0);
		return 0;
	}
	case VFIO_GROUP_SET_CONTAINER:
		if (fk.group_set || !fk_is(*(int *)arg, fk.container_ino))
			return EINVAL;
		fk.group_set = true;
		return 0;
	case VFIO_GROUP_UNSET_CONTAINER:
		if (!fk.group_set)
			return EINVAL;
		fk.group_set = false;
		fk.model = 0;	/* the container's last group took it */
		return 0;
	default:
		return ENOTTY;
	}
}

/* Replaces libc's ioctl() for the whole executable (library included). */
int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	void *arg;
	long ret = 0;
	int err;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (fk_is(fd, fk.container_ino))
		err = fk_container(req, arg, &ret);
	else if (fk_is(fd, fk.group_ino) || fk_is(fd, fk.noiommu_group_ino))
		err = fk_group(req, arg);
	else
		return (int)syscall(SYS_ioctl, fd, req, arg);
	if (err) {
		errno = err;
		return -1;
	}
	return (int)ret;
}

static ino_t make_node(const char *name)
{
	char path[128];
	struct stat st;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", fk.dir, name);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	close(fd);
	fk.dev = st.st_dev;
	return st.st_ino;
}

static int setup(void **state)
{
	snprintf(fk.dir, sizeof(fk.dir), "/tmp/iodma-vfio-info-XXXXXX");
	if (!mkdtemp(fk.dir))
		return -1;
	fk.container_ino = make_node("vfio");
	fk.group_ino = make_node("7");
	fk.noiommu_group_ino = make_node("noiommu-7");
	setenv("IODMA_VFIO_DEV_DIR", fk.dir, 1);
	*state = NULL;
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	unsetenv("IODMA_VFIO_DEV_DIR");
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fk.dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Every test starts from a container without a model and a group outside
 * it, reporting 4 KiB | 2 MiB | 1 GiB pages, migration and DMA_AVAIL. */
static int reset(void **state)
{
	fk.model = 0;
	fk.group_set = false;
	fk.pgsizes = 0x40201000;
	fk.migration = true;
	fk.dirty_pgsizes = 0x1000;
	fk.has_avail = true;
	fk.avail = 65000;
	fk.pad = 0;
	fk.always_more = false;
	fk.fail_info = 0;
	fk.nr_info = 0;
	iodma_test_fail_alloc(0);
	return 0;
}

static struct iodma_domain *vfio_domain(bool with_group, bool noiommu)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_vfio_opts v = IODMA_OPTS_INIT(struct iodma_vfio_opts);
	static const int group[] = { 7 };
	struct iodma_domain *d = NULL;

	v.nr_groups = with_group ? 1 : 0;
	v.groups = group;
	v.noiommu = noiommu;
	o.backend = iodma_backend_vfio();
	o.backend_config = &v;
	assert_int_equal(iodma_domain_create(&o, &d), 0);
	assert_non_null(d);
	return d;
}

/* An info struct that no successful call would leave. */
static void poison(struct iodma_vfio_iommu_info *vi)
{
	memset(vi, 0xa5, sizeof(*vi));
}

static void assert_poisoned(const struct iodma_vfio_iommu_info *vi)
{
	struct iodma_vfio_iommu_info p;

	poison(&p);
	assert_memory_equal(vi, &p, sizeof(p));
}

/* ---- the figures ------------------------------------------------------------ */

static void test_figures_are_the_kernels(void **state)
{
	struct iodma_domain *d = vfio_domain(true, false);
	struct iodma_vfio_iommu_info vi;
	struct iodma_vfio_stats before = IODMA_STRUCT_INIT(struct iodma_vfio_stats);
	struct iodma_vfio_stats after = IODMA_STRUCT_INIT(struct iodma_vfio_stats);
	struct iodma_caps caps = IODMA_STRUCT_INIT(struct iodma_caps);

	assert_int_equal(iodma_vfio_get_stats(d, &before), 0);
	fk.nr_info = 0;
	fk.avail = 64990;	/* someone else mapped 10 meanwhile */
	poison(&vi);
	assert_int_equal(iodma_vfio_get_iommu_info(d, &vi), 0);
	assert_int_equal(fk.nr_info, 1);	/* asked the kernel now */
	assert_int_equal(vi.iova_pgsizes, 0x40201000);
	assert_int_equal(vi.dirty_pgsizes, 0x1000);
	assert_true(vi.migration);
	assert_true(vi.has_dma_avail);
	assert_int_equal(vi.dma_avail, 64990);
	/* the caps are made of the same figures */
	assert_int_equal(iodma_domain_get_caps(d, &caps), 0);
	assert_int_equal(caps.alignment, vi.iova_pgsizes & -vi.iova_pgsizes);
	assert_true(caps.flags & IODMA_CAP_DIRTY_TRACKING);
	/* one more ioctl, counted as "other" */
	assert_int_equal(iodma_vfio_get_stats(d, &after), 0);
	assert_true(after.other_ioctls > before.other_ioctls);
	assert_int_equal(after.map_ioctls, before.map_ioctls);
	iodma_domain_destroy(d);
}

/* A kernel before 5.10 (no DMA_AVAIL), without migration support, and one
 * that does not report page sizes: zeros and false, not stale values. */
static void test_missing_capabilities_are_zero_and_false(void **state)
{
	struct iodma_domain *d;
	struct iodma_vfio_iommu_info vi;

	fk.migration = false;
	fk.has_avail = false;
	d = vfio_domain(true, false);
	poison(&vi);
	assert_int_equal(iodma_vfio_get_iommu_info(d, &vi), 0);
	assert_int_equal(vi.iova_pgsizes, 0x40201000);
	assert_false(vi.migration);
	assert_int_equal(vi.dirty_pgsizes, 0);
	assert_false(vi.has_dma_avail);
	assert_int_equal(vi.dma_avail, 0);
	fk.pgsizes = 0;
	poison(&vi);
	assert_int_equal(iodma_vfio_get_iommu_info(d, &vi), 0);
	assert_int_equal(vi.iova_pgsizes, 0);
	iodma_domain_destroy(d);
}

/* ---- the errors ------------------------------------------------------------- */

static void test_not_a_type1_domain_is_einval(void **state)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_vfio_iommu_info vi;
	struct iodma_domain *d;

	poison(&vi);
	assert_int_equal(iodma_vfio_get_iommu_info(NULL, &vi), -EINVAL);
	assert_non_null(strstr(iodma_vfio_last_error(), "vfio domain"));
	/* a soft domain */
	assert_int_equal(iodma_domain_create(NULL, &d), 0);
	assert_int_equal(iodma_vfio_get_iommu_info(d, &vi), -EINVAL);
	iodma_domain_destroy(d);
	/* an identity domain: no IOMMU, no container */
	o.backend = iodma_backend_identity();
	assert_int_equal(iodma_domain_create(&o, &d), 0);
	assert_int_equal(iodma_vfio_get_iommu_info(d, &vi), -EINVAL);
	iodma_domain_destroy(d);
	assert_poisoned(&vi);
	/* a vfio domain, but nowhere to put the figures */
	d = vfio_domain(true, false);
	assert_int_equal(iodma_vfio_get_iommu_info(d, NULL), -EINVAL);
	iodma_domain_destroy(d);
}

/* VFIO no-IOMMU mode has no IOMMU to ask: -EINVAL before any ioctl. */
static void test_noiommu_domain_is_einval(void **state)
{
	struct iodma_domain *d = vfio_domain(true, true);
	struct iodma_vfio_iommu_info vi;

	assert_int_equal(fk.model, VFIO_NOIOMMU_IOMMU);
	fk.nr_info = 0;
	poison(&vi);
	assert_int_equal(iodma_vfio_get_iommu_info(d, &vi), -EINVAL);
	assert_int_equal(fk.nr_info, 0);
	assert_poisoned(&vi);
	assert_non_null(strstr(iodma_vfio_last_error(), "no-IOMMU"));
	iodma_domain_destroy(d);
}

/* A container without a group has no IOMMU model yet: -ENODEV, and the
 * same domain answers once a group is added. */
static void test_no_group_yet_is_enodev(void **state)
{
	struct iodma_domain *d = vfio_domain(false, false);
	struct iodma_vfio_iommu_info vi;

	poison(&vi);
	assert_int_equal(iodma_vfio_get_iommu_info(d, &vi), -ENODEV);
	assert_int_equal(fk.nr_info, 0);
	assert_poisoned(&vi);
	assert_non_null(strstr(iodma_vfio_last_error(), "no group"));
	assert_int_equal(iodma_vfio_add_group(d, 7), 0);
	assert_int_equal(iodma_vfio_get_iommu_info(d, &vi), 0);
	assert_int_equal(vi.dma_avail, 65000);
	iodma_domain_destroy(d);
}

/* The ioctl's own error comes back as it is. */
static void test_kernel_error_passes_through(void **state)
{
	struct iodma_domain *d = vfio_domain(true, false);
	struct iodma_vfio_iommu_info vi;

	fk.fail_info = EFAULT;
	poison(&vi);
	assert_int_equal(iodma_vfio_get_iommu_info(d, &vi), -EFAULT);
	assert_poisoned(&vi);
	assert_non_null(strstr(iodma_vfio_last_error(), "VFIO_IOMMU_GET_INFO"));
	/* nothing was left broken: the next call answers */
	assert_int_equal(iodma_vfio_get_iommu_info(d, &vi), 0);
	iodma_domain_destroy(d);
}

/* The answer grew (say, more IOVA ranges) and the larger buffer cannot be
 * had: -ENOMEM; then it can, and the call answers. */
static void test_larger_answer_without_memory_is_enomem(void **state)
{
	struct iodma_domain *d = vfio_domain(true, false);
	struct iodma_vfio_iommu_info vi;

	fk.pad = 4096;
	iodma_test_fail_alloc(1);
	poison(&vi);
	assert_int_equal(iodma_vfio_get_iommu_info(d, &vi), -ENOMEM);
	iodma_test_fail_alloc(0);
	assert_poisoned(&vi);
	assert_int_equal(iodma_vfio_get_iommu_info(d, &vi), 0);
	assert_int_equal(vi.dma_avail, 65000);
	iodma_domain_destroy(d);
}

/* A kernel that asks for more room at every try: -EIO, not a loop. */
static void test_ever_growing_answer_is_eio(void **state)
{
	struct iodma_domain *d = vfio_domain(true, false);
	struct iodma_vfio_iommu_info vi;

	fk.always_more = true;
	fk.nr_info = 0;
	poison(&vi);
	assert_int_equal(iodma_vfio_get_iommu_info(d, &vi), -EIO);
	assert_true(fk.nr_info > 1 && fk.nr_info < 10);
	assert_poisoned(&vi);
	assert_non_null(strstr(iodma_vfio_last_error(), "more room"));
	fk.always_more = false;
	iodma_domain_destroy(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_figures_are_the_kernels, reset),
		cmocka_unit_test_setup(test_missing_capabilities_are_zero_and_false, reset),
		cmocka_unit_test_setup(test_not_a_type1_domain_is_einval, reset),
		cmocka_unit_test_setup(test_noiommu_domain_is_einval, reset),
		cmocka_unit_test_setup(test_no_group_yet_is_enodev, reset),
		cmocka_unit_test_setup(test_kernel_error_passes_through, reset),
		cmocka_unit_test_setup(test_larger_answer_without_memory_is_enomem, reset),
		cmocka_unit_test_setup(test_ever_growing_answer_is_eio, reset),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
