/* SPDX-License-Identifier: MIT */
/*
 * test_vfio_host.c - the Linux backends and VFIO device access on a host
 * with no VFIO device: argument validation, sysfs parsing against a fake
 * sysfs tree (IODMA_SYSFS_ROOT), missing /dev/vfio (IODMA_VFIO_DEV_DIR),
 * and the identity backend (a real pagemap-checked map when the process
 * may read frame numbers, -EPERM when it may not).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/vfio.h>

#include <iodma/dma.h>
#include <iodma/domain.h>
#include <iodma/vfio.h>
#include <iodma/test-hooks.h> /* fault injection: tests only */

#include "backend/linux_common.h"
#include "backend/vfio_priv.h"
#include "os/os.h"
#include "drop-cap.h"

static char tmpdir[256];

/* mkdir -p of tmpdir/rel. */
static void mkdirs(const char *rel)
{
	char path[512], *p;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, rel);
	for (p = path + strlen(tmpdir) + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			mkdir(path, 0755);
			*p = '/';
		}
	}
	mkdir(path, 0755);
}

static void link_at(const char *target, const char *rel)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s", tmpdir, rel);
	assert_int_equal(symlink(target, path), 0);
}

static int setup_tree(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/iodma-vfio-host-XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	/* 0000:00:03.0 in group 7, bound to nvme; 0000:00:04.0 in group 12;
	 * 0000:00:05.0 has no group; 0000:00:06.0's link is malformed;
	 * 10000:00:00.0 (a VMD-style 5-digit domain) in group 3. */
	mkdirs("kernel/iommu_groups/7/devices");
	mkdirs("kernel/iommu_groups/12/devices");
	mkdirs("bus/pci/devices/0000:00:03.0");
	mkdirs("bus/pci/devices/0000:00:04.0");
	mkdirs("bus/pci/devices/0000:00:05.0");
	mkdirs("bus/pci/devices/0000:00:06.0");
	mkdirs("bus/pci/devices/10000:00:00.0");
	mkdirs("bus/pci/drivers/nvme");
	link_at("../../../../kernel/iommu_groups/7",
		"bus/pci/devices/0000:00:03.0/iommu_group");
	link_at("../../../../kernel/iommu_groups/12",
		"bus/pci/devices/0000:00:04.0/iommu_group");
	link_at("../../../../kernel/iommu_groups/x7",
		"bus/pci/devices/0000:00:06.0/iommu_group");
	link_at("../../../../kernel/iommu_groups/3",
		"bus/pci/devices/10000:00:00.0/iommu_group");
	link_at("../../../../bus/pci/devices/0000:00:03.0",
		"kernel/iommu_groups/7/devices/0000:00:03.0");
	link_at("../../../bus/pci/drivers/nvme",
		"bus/pci/devices/0000:00:03.0/driver");
	mkdirs("dev-vfio-empty");
	setenv("IODMA_SYSFS_ROOT", tmpdir, 1);
	*state = NULL;
	return 0;
}

static int teardown_tree(void **state)
{
	char cmd[300];

	unsetenv("IODMA_SYSFS_ROOT");
	unsetenv("IODMA_VFIO_DEV_DIR");
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void use_empty_dev_dir(void)
{
	char path[300];

	snprintf(path, sizeof(path), "%s/dev-vfio-empty", tmpdir);
	setenv("IODMA_VFIO_DEV_DIR", path, 1);
}

/* ---- iodma_vfio_group_of ------------------------------------------------- */

static void test_group_of_reads_iommu_group_link(void **state)
{
	int g = -1;

	assert_int_equal(iodma_vfio_group_of("0000:00:03.0", &g), 0);
	assert_int_equal(g, 7);
	assert_int_equal(iodma_vfio_group_of("0000:00:04.0", &g), 0);
	assert_int_equal(g, 12);
	assert_int_equal(iodma_vfio_group_of("10000:00:00.0", &g), 0);
	assert_int_equal(g, 3);
}

static void test_group_of_rejects_malformed_addresses(void **state)
{
	static const char *const bad[] = {
		"", "00:03.0", "0000:00:03", "0000:00:03.8", "0000:00:3.0",
		"zzzz:00:03.0", "0000:00:03.0x", "0000-00:03.0", "0000:00:03:0",
		"123456789:00:03.0", "../../../etc",
	};
	int g = 42;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(iodma_vfio_group_of(bad[i], &g), -EINVAL);
		assert_int_equal(g, 42);
	}
	assert_int_equal(iodma_vfio_group_of(NULL, &g), -EINVAL);
	assert_int_equal(iodma_vfio_group_of("0000:00:03.0", NULL), -EINVAL);
	assert_int_equal(g, 42);
	assert_non_null(strstr(iodma_vfio_last_error(), "PCI address"));
}

/* iodma_vfio_bdf_valid() is the syntax every @bdf argument is held to:
 * true exactly where iodma_vfio_group_of() gets past its -EINVAL. */
static void test_bdf_valid_is_the_syntax_the_calls_use(void **state)
{
	static const char *const good[] = {
		"0000:00:03.0", "0000:00:1f.7", "ABCD:EF:1f.0", "10000:00:00.0",
		"12345678:00:00.0",
	};
	static const char *const bad[] = {
		"", "00:03.0", "0000:00:03", "0000:00:03.8", "0000:00:3.0",
		"zzzz:00:03.0", "0000:00:03.0x", "0000-00:03.0", "0000:00:03:0",
		"123456789:00:03.0", "../../../etc", "000:00:03.0",
		"0000:00:03.0\n", " 0000:00:03.0", "0000:00:0g.0",
	};
	int g;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		assert_true(iodma_vfio_bdf_valid(good[i]));
		assert_int_not_equal(iodma_vfio_group_of(good[i], &g), -EINVAL);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_false(iodma_vfio_bdf_valid(bad[i]));
		assert_int_equal(iodma_vfio_group_of(bad[i], &g), -EINVAL);
	}
	assert_false(iodma_vfio_bdf_valid(NULL));
}

static void test_group_of_missing_device_or_group_is_enoent(void **state)
{
	int g = 42;

	assert_int_equal(iodma_vfio_group_of("0000:00:1f.7", &g), -ENOENT);
	assert_int_equal(iodma_vfio_group_of("0000:00:05.0", &g), -ENOENT);
	assert_int_equal(g, 42);
	assert_non_null(strstr(iodma_vfio_last_error(), "iommu_group"));
}

static void test_group_of_malformed_link_is_eproto(void **state)
{
	int g = 42;

	assert_int_equal(iodma_vfio_group_of("0000:00:06.0", &g), -EPROTO);
	assert_int_equal(g, 42);
}

static void test_not_viable_message_names_unbound_devices(void **state)
{
	vfio_explain_not_viable(7);
	assert_non_null(strstr(iodma_vfio_last_error(), "group 7 is not viable"));
	assert_non_null(strstr(iodma_vfio_last_error(), "0000:00:03.0 (nvme)"));
	vfio_explain_not_viable(12); /* no device listed */
	assert_non_null(strstr(iodma_vfio_last_error(), "could not list"));
}

/* ---- GET_INFO parsing (synthetic kernel answers) ---------------------------- */

/* A GET_INFO answer: header, then IOVA_RANGE (nr ranges), MIGRATION and
 * DMA_AVAIL capabilities, chained in that order. */
struct fake_info {
	uint8_t b[8192];
	uint32_t len;
};

static void fake_info_build(struct fake_info *f, uint64_t pgsizes,
			    const struct vfio_iova_range *r, uint32_t nr,
			    bool migration, bool avail, uint32_t avail_n)
{
	struct vfio_iommu_type1_info *h = (void *)f->b;
	struct vfio_info_cap_header *prev = NULL;
	uint32_t off = sizeof(*h);

	memset(f, 0, sizeof(*f));
	h->flags = VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS;
	h->iova_pgsizes = pgsizes;
	if (nr) {
		struct vfio_iommu_type1_info_cap_iova_range *c = (void *)(f->b + off);

		c->header.id = VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE;
		c->header.version = 1;
		c->nr_iovas = nr;
		memcpy(c->iova_ranges, r, nr * sizeof(*r));
		h->cap_offset = off;
		prev = &c->header;
		off += sizeof(*c) + nr * sizeof(*r);
		off = (off + 7) & ~7u;
	}
	if (migration) {
		struct vfio_iommu_type1_info_cap_migration *c = (void *)(f->b + off);

		c->header.id = VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION;
		c->header.version = 1;
		if (prev)
			prev->next = off;
		else
			h->cap_offset = off;
		prev = &c->header;
		off += sizeof(*c);
	}
	if (avail) {
		struct vfio_iommu_type1_info_dma_avail *c = (void *)(f->b + off);

		c->header.id = VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL;
		c->header.version = 1;
		c->avail = avail_n;
		if (prev)
			prev->next = off;
		else
			h->cap_offset = off;
		off += sizeof(*c);
	}
	h->argsz = off;
	f->len = off;
	assert_true(off <= sizeof(f->b));
}

static void test_get_info_intel_figures_become_caps(void **state)
{
	static const struct vfio_iova_range r[] = {
		{ 0, 0xfedfffff }, { 0xfef00000, 0x7fffffffff },
	};
	struct fake_info f;
	struct iodma_caps c = IODMA_STRUCT_INIT(struct iodma_caps);

	fake_info_build(&f, 0x40201000, r, 2, true, true, 65000);
	assert_int_equal(vfio_caps_from_info(f.b, f.len, 65535, true, &c), 0);
	assert_int_equal(c.alignment, 0x1000);
	assert_int_equal(c.nr_ranges, 2);
	assert_int_equal(c.ranges[0].iova, 0x1000);		/* page 0 dropped */
	assert_int_equal(c.ranges[0].len, 0xfee00000 - 0x1000);
	assert_int_equal(c.ranges[1].iova, 0xfef00000);
	assert_int_equal(c.ranges[1].len, 0x8000000000 - 0xfef00000);
	assert_int_equal(c.max_mappings, 65535);		/* avail + live */
	assert_true(c.flags & IODMA_CAP_DIRTY_TRACKING);
	assert_true(c.flags & IODMA_CAP_UNMAP_ALL);
}

static void test_get_info_range_to_2_64_loses_its_top_unit(void **state)
{
	static const struct vfio_iova_range r[] = {
		{ 0, 0xfedfffff }, { 0xfef00000, UINT64_MAX },
	};
	struct fake_info f;
	struct iodma_caps c = IODMA_STRUCT_INIT(struct iodma_caps);

	fake_info_build(&f, 0xfffffffffffff000ull, r, 2, false, false, 0);
	assert_int_equal(vfio_caps_from_info(f.b, f.len, 0, false, &c), 0);
	assert_int_equal(c.nr_ranges, 2);
	assert_int_equal(c.ranges[1].iova + c.ranges[1].len, 0ull - 0x1000);
	assert_int_equal(c.max_mappings, 65535);		/* no DMA_AVAIL */
	assert_false(c.flags & (IODMA_CAP_DIRTY_TRACKING | IODMA_CAP_UNMAP_ALL));
}

static void test_get_info_alignment_is_lowest_pgsize_ranges_shrink_inwards(void **state)
{
	static const struct vfio_iova_range r[] = {
		{ 0x100000, 0x3fffff },		/* 1M..4M: holds one 2M unit */
		{ 0x500000, 0x5fffff },		/* no whole 2M unit: dropped */
		{ 0x800000, 0xa00fff },		/* end not aligned: cut */
	};
	struct fake_info f;
	struct iodma_caps c = IODMA_STRUCT_INIT(struct iodma_caps);

	fake_info_build(&f, 0x40200000, r, 3, false, true, 10);
	assert_int_equal(vfio_caps_from_info(f.b, f.len, 10, false, &c), 0);
	assert_int_equal(c.alignment, 0x200000);
	assert_int_equal(c.nr_ranges, 2);
	assert_int_equal(c.ranges[0].iova, 0x200000);
	assert_int_equal(c.ranges[0].len, 0x200000);
	assert_int_equal(c.ranges[1].iova, 0x800000);
	assert_int_equal(c.ranges[1].len, 0x200000);
	assert_int_equal(c.max_mappings, 10);
}

static void test_get_info_too_many_ranges_keeps_largest_and_says_so(void **state)
{
	struct vfio_iova_range r[100];
	struct fake_info f;
	struct iodma_caps c = IODMA_STRUCT_INIT(struct iodma_caps);

	/* Range i: [i * 1G, i * 1G + (i + 1) pages). */
	for (int i = 0; i < 100; i++) {
		r[i].start = (uint64_t)(i + 1) << 30;
		r[i].end = r[i].start + (uint64_t)(i + 1) * 0x1000 - 1;
	}
	fake_info_build(&f, 0x1000, r, 100, false, false, 0);
	assert_int_equal(vfio_caps_from_info(f.b, f.len, 0, false, &c), 0);
	assert_int_equal(c.nr_ranges, IODMA_MAX_IOVA_RANGES);
	/* The 64 largest are the last 64, still in address order. */
	for (uint32_t i = 0; i < c.nr_ranges; i++) {
		assert_int_equal(c.ranges[i].iova, (uint64_t)(i + 37) << 30);
		assert_int_equal(c.ranges[i].len, (uint64_t)(i + 37) * 0x1000);
	}
	assert_non_null(strstr(iodma_vfio_last_error(), "kept the 64 largest"));
}

static void test_get_info_without_caps_or_ranges(void **state)
{
	struct vfio_iommu_type1_info h = {
		.argsz = sizeof(h), .flags = VFIO_IOMMU_INFO_PGSIZES,
		.iova_pgsizes = 0x1000,
	};
	static const struct vfio_iova_range page0[] = { { 0, 0xfff } };
	struct fake_info f;
	struct iodma_caps c = IODMA_STRUCT_INIT(struct iodma_caps);

	/* An old kernel: no capability chain, the whole space minus page 0
	 * and the top unit. */
	assert_int_equal(vfio_caps_from_info(&h, sizeof(h), 0, false, &c), 0);
	assert_int_equal(c.nr_ranges, 1);
	assert_int_equal(c.ranges[0].iova, 0x1000);
	assert_int_equal(c.ranges[0].len, 0ull - 0x2000);
	/* Only page 0 valid: nothing usable. */
	fake_info_build(&f, 0x1000, page0, 1, false, false, 0);
	assert_int_equal(vfio_caps_from_info(f.b, f.len, 0, false, &c), -ERANGE);
	assert_int_equal(vfio_caps_from_info(NULL, 64, 0, false, &c), -EINVAL);
	assert_int_equal(vfio_caps_from_info(&h, 4, 0, false, &c), -EINVAL);
}

static void test_get_info_chain_loop_and_truncation_are_safe(void **state)
{
	static const struct vfio_iova_range r[] = { { 0x1000, 0xffffff } };
	struct vfio_iommu_type1_info *h;
	struct vfio_iommu_type1_info_cap_iova_range *cr;
	struct fake_info f;
	struct iodma_caps c = IODMA_STRUCT_INIT(struct iodma_caps);

	fake_info_build(&f, 0x1000, r, 1, false, true, 7);
	h = (void *)f.b;
	cr = (void *)(f.b + h->cap_offset);
	cr->header.next = h->cap_offset;	/* points at itself */
	assert_int_equal(vfio_caps_from_info(f.b, f.len, 7, false, &c), 0);
	assert_int_equal(c.nr_ranges, 1);
	assert_int_equal(c.max_mappings, 65535); /* DMA_AVAIL not reached */
	/* nr_iovas larger than the buffer: only what is there is read. */
	fake_info_build(&f, 0x1000, r, 1, false, false, 0);
	cr = (void *)(f.b + ((struct vfio_iommu_type1_info *)f.b)->cap_offset);
	cr->nr_iovas = 1000;
	assert_int_equal(vfio_caps_from_info(f.b, f.len, 0, false, &c), 0);
	assert_int_equal(c.nr_ranges, 1);
	assert_int_equal(c.ranges[0].len, 0xfff000);
}

/* ---- the vfio backend without VFIO ---------------------------------------- */

static void test_vfio_domain_without_dev_vfio_is_enoent(void **state)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_domain *d = (void *)0x1;

	use_empty_dev_dir();
	o.backend = iodma_backend_vfio();
	assert_int_equal(iodma_domain_create(&o, &d), -ENOENT);
	assert_ptr_equal(d, (void *)0x1);
	assert_non_null(strstr(iodma_vfio_last_error(), "dev-vfio-empty/vfio"));
	unsetenv("IODMA_VFIO_DEV_DIR");
	/* The real /dev/vfio: this host has no VFIO loaded, or it does. */
	if (access("/dev/vfio/vfio", F_OK) != 0)
		assert_int_equal(iodma_domain_create(&o, &d), -ENOENT);
	assert_ptr_equal(d, (void *)0x1);
}

static void test_vfio_opts_errors_are_einval(void **state)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_vfio_opts v = IODMA_OPTS_INIT(struct iodma_vfio_opts);
	struct iodma_domain *d = (void *)0x1;
	static const int neg[] = { -3 };
	static const char *const badbdf[] = { "0000:00:03" };
	static const char *const nullbdf[] = { NULL };

	use_empty_dev_dir();
	o.backend = iodma_backend_vfio();
	o.backend_config = &v;
	/* Shorter than the first version (which ended at noiommu). */
	v.size = offsetof(struct iodma_vfio_opts, noiommu);
	assert_int_equal(iodma_domain_create(&o, &d), -EINVAL);
	v.size = sizeof(v);
	v.nr_groups = 1;
	assert_int_equal(iodma_domain_create(&o, &d), -EINVAL);
	v.groups = neg;
	assert_int_equal(iodma_domain_create(&o, &d), -EINVAL);
	v.nr_groups = 0;
	v.groups = NULL;
	v.nr_devices = 1;
	assert_int_equal(iodma_domain_create(&o, &d), -EINVAL);
	v.devices = badbdf;
	assert_int_equal(iodma_domain_create(&o, &d), -EINVAL);
	v.devices = nullbdf;
	assert_int_equal(iodma_domain_create(&o, &d), -EINVAL);
	assert_ptr_equal(d, (void *)0x1);
	unsetenv("IODMA_VFIO_DEV_DIR");
}

static void test_vfio_noiommu_without_dev_vfio_is_enoent(void **state)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_vfio_opts v = IODMA_OPTS_INIT(struct iodma_vfio_opts);
	struct iodma_domain *d = (void *)0x1;

	use_empty_dev_dir();
	v.noiommu = true;
	o.backend = iodma_backend_vfio();
	o.backend_config = &v;
	assert_int_equal(iodma_domain_create(&o, &d), -ENOENT);
	assert_ptr_equal(d, (void *)0x1);
	unsetenv("IODMA_VFIO_DEV_DIR");
}

static void test_vfio_open_fail_nth_allocation_is_enomem(void **state)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_vfio_opts v = IODMA_OPTS_INIT(struct iodma_vfio_opts);
	struct iodma_domain *d = (void *)0x1;
	int err;

	use_empty_dev_dir();
	v.noiommu = true; /* allocates the identity book too */
	o.backend = iodma_backend_vfio();
	o.backend_config = &v;
	for (unsigned long n = 1;; n++) {
		iodma_test_fail_alloc(n);
		err = iodma_domain_create(&o, &d);
		if (err != -ENOMEM)
			break;
		assert_ptr_equal(d, (void *)0x1);
		assert_true(n < 50);
	}
	iodma_test_fail_alloc(0);
	assert_int_equal(err, -ENOENT); /* got as far as /dev/vfio */
	assert_ptr_equal(d, (void *)0x1);
	unsetenv("IODMA_VFIO_DEV_DIR");
}

static void test_add_group_needs_a_vfio_domain(void **state)
{
	struct iodma_domain *d;

	assert_int_equal(iodma_vfio_add_group(NULL, 1), -EINVAL);
	assert_int_equal(iodma_domain_create(NULL, &d), 0); /* soft */
	assert_int_equal(iodma_vfio_add_group(d, 1), -EINVAL);
	assert_false(vfio_domain_is(d));
	assert_false(vfio_domain_is(NULL));
	assert_int_equal(vfio_domain_add_group(d, 0), -EINVAL);
	assert_int_equal(iodma_domain_nr_mappings(d), 0);
	iodma_domain_destroy(d);
}

/* ---- device access argument errors --------------------------------------- */

static void test_device_open_argument_errors(void **state)
{
	struct iodma_vfio_device *vd = (void *)0x1;
	struct iodma_domain *d;

	assert_int_equal(iodma_domain_create(NULL, &d), 0); /* soft */
	assert_int_equal(iodma_vfio_device_open(NULL, "0000:00:03.0", &vd), -EINVAL);
	assert_int_equal(iodma_vfio_device_open(d, NULL, &vd), -EINVAL);
	assert_int_equal(iodma_vfio_device_open(d, "00:03.0", &vd), -EINVAL);
	assert_int_equal(iodma_vfio_device_open(d, "0000:00:03.0", NULL), -EINVAL);
	/* A soft domain has no kernel IOMMU to attach a device to. */
	assert_int_equal(iodma_vfio_device_open(d, "0000:00:03.0", &vd), -EINVAL);
	assert_ptr_equal(vd, (void *)0x1);
	iodma_domain_destroy(d);
}

static void test_device_calls_reject_null_device(void **state)
{
	struct iodma_vfio_region_info ri;
	uint32_t a = 7, b = 7;
	void *va = (void *)0x1;
	uint64_t len = 7;
	char buf[4];
	int efd = 0;

	iodma_vfio_device_close(NULL); /* no-op */
	assert_int_equal(iodma_vfio_device_fd(NULL), -EINVAL);
	assert_int_equal(iodma_vfio_device_counts(NULL, &a, &b), -EINVAL);
	assert_int_equal(iodma_vfio_region_info(NULL, 0, &ri), -EINVAL);
	assert_int_equal(iodma_vfio_map_bar(NULL, 0, &va, &len), -EINVAL);
	assert_int_equal(iodma_vfio_region_read(NULL, 0, 0, buf, 4), -EINVAL);
	assert_int_equal(iodma_vfio_region_write(NULL, 0, 0, buf, 4), -EINVAL);
	assert_int_equal(iodma_vfio_config_read(NULL, 0, buf, 4), -EINVAL);
	assert_int_equal(iodma_vfio_config_write(NULL, 0, buf, 4), -EINVAL);
	assert_int_equal(iodma_vfio_set_bus_master(NULL, true), -EINVAL);
	assert_int_equal(iodma_vfio_reset(NULL), -EINVAL);
	assert_int_equal(iodma_vfio_irq_info(NULL, IODMA_VFIO_IRQ_MSIX, &a), -EINVAL);
	assert_int_equal(iodma_vfio_irq_enable(NULL, IODMA_VFIO_IRQ_AUTO, 1, &efd, NULL),
			 -EINVAL);
	assert_int_equal(iodma_vfio_irq_disable(NULL), -EINVAL);
	assert_int_equal(iodma_vfio_register_bars(NULL, NULL), -EINVAL);
	assert_int_equal(a, 7);
	assert_int_equal(b, 7);
	assert_ptr_equal(va, (void *)0x1);
	assert_int_equal(len, 7);
}

/* ---- identity backend ----------------------------------------------------- */

static void test_identity_caps_are_documented_ones(void **state)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_domain *d;
	struct iodma_caps c = IODMA_STRUCT_INIT(struct iodma_caps);
	uint64_t pg = iodma_page_size();

	o.backend = iodma_backend_identity();
	assert_int_equal(iodma_domain_create(&o, &d), 0);
	assert_int_equal(iodma_domain_get_caps(d, &c), 0);
	assert_int_equal(c.alignment, pg);
	assert_int_equal(c.nr_ranges, 1);
	assert_int_equal(c.ranges[0].iova, pg);
	assert_int_equal(c.ranges[0].len, (1ull << 52) - pg);
	assert_int_equal(c.max_mappings, 65535);
	assert_true(c.flags & IODMA_CAP_UNMAP_ALL);
	iodma_domain_destroy(d);
}

static void test_identity_config_must_be_null(void **state)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_domain *d = (void *)0x1;
	int dummy = 0;

	o.backend = iodma_backend_identity();
	o.backend_config = &dummy;
	assert_int_equal(iodma_domain_create(&o, &d), -EINVAL);
	assert_ptr_equal(d, (void *)0x1);
}

static void test_identity_create_fail_nth_is_enomem(void **state)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_domain *d = (void *)0x1;
	int err;

	o.backend = iodma_backend_identity();
	for (unsigned long n = 1;; n++) {
		iodma_test_fail_alloc(n);
		err = iodma_domain_create(&o, &d);
		if (err != -ENOMEM)
			break;
		assert_ptr_equal(d, (void *)0x1);
		assert_true(n < 100);
	}
	iodma_test_fail_alloc(0);
	assert_int_equal(err, 0);
	iodma_domain_destroy(d);
}

/* Physical address of @va's page (the library's pagemap lookup), or 0
 * when frame numbers are hidden. */
static uint64_t phys_of(void *va)
{
	uint64_t pg = iodma_page_size(), pa;

	return os_virt_to_phys((void *)((uintptr_t)va & ~(uintptr_t)(pg - 1)), &pa) ? 0 : pa;
}

static uint64_t vm_locked_kb(void)
{
	char line[256];
	unsigned long long kb = 0;
	FILE *f = fopen("/proc/self/status", "r");

	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "VmLck: %llu kB", &kb) == 1)
			break;
	}
	if (f)
		fclose(f);
	return kb;
}

/* Does mlock show in VmLck here?  (ASan intercepts mlock as a no-op.) */
static bool mlock_visible(void)
{
	uint64_t pg = iodma_page_size(), before = vm_locked_kb();
	void *p = mmap(NULL, pg, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	bool seen;

	assert_true(p != MAP_FAILED);
	seen = mlock(p, pg) == 0 && vm_locked_kb() == before + pg / 1024;
	munlock(p, pg);
	munmap(p, pg);
	return seen;
}

#define assert_locked_kb(kb) \
	do { if (lck_seen) assert_int_equal(vm_locked_kb(), (kb)); } while (0)

static void test_identity_maps_only_at_the_physical_address(void **state)
{
	bool lck_seen = mlock_visible();

	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	uint64_t pg = iodma_page_size(), pa, lck0, unmapped = 0;
	struct iodma_domain *d;
	char *buf;

	buf = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(buf != MAP_FAILED);
	buf[0] = 1;
	buf[pg] = 1;
	pa = phys_of(buf);
	if (pa == 0) {
		munmap(buf, 2 * pg);
		skip(); /* PFNs hidden: covered by the -EPERM test */
	}
	o.backend = iodma_backend_identity();
	assert_int_equal(iodma_domain_create(&o, &d), 0);
	lck0 = vm_locked_kb();

	/* Wrong IOVA: not where the memory is. */
	assert_int_equal(iodma_domain_map(d, pa + pg, pg, buf, IODMA_PERM_RW), -EINVAL);
	assert_non_null(strstr(iodma_vfio_last_error(), "physical"));
	assert_int_equal(iodma_domain_nr_mappings(d), 0);
	assert_locked_kb(lck0);

	/* Right IOVA: mapped and mlocked. */
	assert_int_equal(iodma_domain_map(d, pa, pg, buf, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_domain_nr_mappings(d), 1);
	assert_locked_kb(lck0 + pg / 1024);
	assert_int_equal(iodma_domain_map(d, pa, pg, buf, IODMA_PERM_RW), -EEXIST);

	/* Two pages: only if physically contiguous. */
	if (phys_of(buf + pg) == pa + pg) {
		assert_int_equal(iodma_domain_unmap(d, pa, pg), 0);
		assert_int_equal(iodma_domain_map(d, pa, 2 * pg, buf, IODMA_PERM_RW), 0);
		assert_int_equal(iodma_domain_unmap_gaps(d, pa, 2 * pg, &unmapped), 0);
		assert_int_equal(unmapped, 2 * pg);
	} else {
		uint64_t pa1 = phys_of(buf + pg);

		assert_int_equal(iodma_domain_map(d, pa1 - pg, 2 * pg, buf, IODMA_PERM_RW),
				 pa1 - pg == pa ? -EEXIST : -EINVAL);
		assert_int_equal(iodma_domain_unmap(d, pa, pg), 0);
	}
	assert_int_equal(iodma_domain_nr_mappings(d), 0);
	assert_locked_kb(lck0);

	/* unmap_all munlocks too. */
	assert_int_equal(iodma_domain_map(d, pa, pg, buf, IODMA_PERM_READ), 0);
	assert_int_equal(iodma_domain_unmap_all(d, &unmapped), 0);
	assert_int_equal(unmapped, pg);
	assert_locked_kb(lck0);

	/* destroy with a live mapping munlocks. */
	assert_int_equal(iodma_domain_map(d, pa, pg, buf, IODMA_PERM_READ), 0);
	iodma_domain_destroy(d);
	assert_locked_kb(lck0);
	munmap(buf, 2 * pg);
}

static void test_identity_without_cap_sys_admin_is_eperm(void **state)
{
	pid_t pid;
	int status;

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
		uint64_t pg = iodma_page_size();
		struct iodma_domain *d;
		char *buf;
		int err;

		if (drop_sys_admin() != 0)
			_exit(10);
		buf = mmap(NULL, pg, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (buf == MAP_FAILED)
			_exit(11);
		buf[0] = 1;
		if (phys_of(buf) != 0)
			_exit(12); /* PFNs still visible: cannot test */
		o.backend = iodma_backend_identity();
		if (iodma_domain_create(&o, &d))
			_exit(13);
		err = iodma_domain_map(d, 0x100000, pg, buf, IODMA_PERM_RW);
		if (err != -EPERM || iodma_domain_nr_mappings(d) != 0 ||
		    !strstr(iodma_vfio_last_error(), "CAP_SYS_ADMIN"))
			_exit(14);
		iodma_domain_destroy(d);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 12 || WEXITSTATUS(status) == 10)
		skip();
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_identity_backend_rejects_fd_only_maps(void **state)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_domain *d;

	o.backend = iodma_backend_identity();
	assert_int_equal(iodma_domain_create(&o, &d), 0);
	/* No IODMA_CAP_MAP_FD: the domain refuses before the backend. */
	assert_int_equal(iodma_domain_map_fd(d, 0x100000, 4096, NULL, 0, 0,
					     IODMA_PERM_RW), -EOPNOTSUPP);
	assert_int_equal(iodma_domain_nr_mappings(d), 0);
	iodma_domain_destroy(d);
}

/* Growth rule of common.h for struct iodma_vfio_opts: unknown non-zero
 * tail is -E2BIG before any file is opened. */
static void test_opts_growth(void **state)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct {
		struct iodma_vfio_opts v;
		uint64_t newer;
	} w;
	struct iodma_domain *d = NULL;

	(void)state;
	use_empty_dev_dir();
	memset(&w, 0, sizeof(w));
	w.v.size = sizeof(w);
	w.newer = 1;
	o.backend = iodma_backend_vfio();
	o.backend_config = &w.v;
	assert_int_equal(iodma_domain_create(&o, &d), -E2BIG);
	assert_null(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_opts_growth),
		cmocka_unit_test(test_group_of_reads_iommu_group_link),
		cmocka_unit_test(test_group_of_rejects_malformed_addresses),
		cmocka_unit_test(test_bdf_valid_is_the_syntax_the_calls_use),
		cmocka_unit_test(test_group_of_missing_device_or_group_is_enoent),
		cmocka_unit_test(test_group_of_malformed_link_is_eproto),
		cmocka_unit_test(test_not_viable_message_names_unbound_devices),
		cmocka_unit_test(test_get_info_intel_figures_become_caps),
		cmocka_unit_test(test_get_info_range_to_2_64_loses_its_top_unit),
		cmocka_unit_test(test_get_info_alignment_is_lowest_pgsize_ranges_shrink_inwards),
		cmocka_unit_test(test_get_info_too_many_ranges_keeps_largest_and_says_so),
		cmocka_unit_test(test_get_info_without_caps_or_ranges),
		cmocka_unit_test(test_get_info_chain_loop_and_truncation_are_safe),
		cmocka_unit_test(test_vfio_domain_without_dev_vfio_is_enoent),
		cmocka_unit_test(test_vfio_opts_errors_are_einval),
		cmocka_unit_test(test_vfio_noiommu_without_dev_vfio_is_enoent),
		cmocka_unit_test(test_vfio_open_fail_nth_allocation_is_enomem),
		cmocka_unit_test(test_add_group_needs_a_vfio_domain),
		cmocka_unit_test(test_device_open_argument_errors),
		cmocka_unit_test(test_device_calls_reject_null_device),
		cmocka_unit_test(test_identity_caps_are_documented_ones),
		cmocka_unit_test(test_identity_config_must_be_null),
		cmocka_unit_test(test_identity_create_fail_nth_is_enomem),
		cmocka_unit_test(test_identity_maps_only_at_the_physical_address),
		cmocka_unit_test(test_identity_without_cap_sys_admin_is_eperm),
		cmocka_unit_test(test_identity_backend_rejects_fd_only_maps),
	};

	return cmocka_run_group_tests(tests, setup_tree, teardown_tree);
}
