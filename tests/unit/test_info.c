/* SPDX-License-Identifier: MIT */
/*
 * test_info.c - `iodma info` (tools/info.c) against a fake sysfs tree:
 * IOMMU group 5 (one device on vfio-pci, with a VFIO cdev: viable) and
 * group 9 (a device on vfio-pci beside one on snd_hda_intel and one on a
 * driver whose name needs JSON escapes: not viable), the vfio module
 * parameters, and a /dev/vfio without or with a useless container node.
 * Also: no IOMMU at all, --device filtering, the JSON being valid (parsed by
 * python3 when the machine has it), and the usage errors.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "info.h"

static char tmpdir[256];
static char emptydir[300];

#define WEIRD_DRIVER "we\"ird\\drv\t"

static void mkdirs(const char *rel)
{
	char path[512], *p;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, rel);
	for (p = path + strlen(tmpdir) + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		mkdir(path, 0755);
		*p = '/';
	}
	mkdir(path, 0755);
}

static void put(const char *rel, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, rel);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void link_at(const char *target, const char *rel)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s", tmpdir, rel);
	assert_int_equal(symlink(target, path), 0);
}

/* A PCI device in group @group bound to @driver (NULL: none). */
static void add_dev(const char *bdf, int group, const char *vendor,
		    const char *device, const char *cls, const char *driver)
{
	char rel[256], target[256];

	snprintf(rel, sizeof(rel), "bus/pci/devices/%s", bdf);
	mkdirs(rel);
	snprintf(rel, sizeof(rel), "bus/pci/devices/%s/vendor", bdf);
	put(rel, vendor);
	snprintf(rel, sizeof(rel), "bus/pci/devices/%s/device", bdf);
	put(rel, device);
	snprintf(rel, sizeof(rel), "bus/pci/devices/%s/class", bdf);
	put(rel, cls);
	snprintf(target, sizeof(target), "../../../../kernel/iommu_groups/%d",
		 group);
	snprintf(rel, sizeof(rel), "bus/pci/devices/%s/iommu_group", bdf);
	link_at(target, rel);
	snprintf(rel, sizeof(rel), "kernel/iommu_groups/%d/devices", group);
	mkdirs(rel);
	snprintf(target, sizeof(target), "../../../../bus/pci/devices/%s", bdf);
	snprintf(rel, sizeof(rel), "kernel/iommu_groups/%d/devices/%s", group,
		 bdf);
	link_at(target, rel);
	if (driver) {
		snprintf(rel, sizeof(rel), "bus/pci/drivers/%s", driver);
		mkdirs(rel);
		snprintf(target, sizeof(target), "../../../bus/pci/drivers/%s",
			 driver);
		snprintf(rel, sizeof(rel), "bus/pci/devices/%s/driver", bdf);
		link_at(target, rel);
	}
}

static int setup_tree(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/iodma-info-XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	add_dev("0000:01:00.0", 5, "0x1b36\n", "0x0010\n", "0x010802\n",
		"vfio-pci");
	mkdirs("bus/pci/devices/0000:01:00.0/vfio-dev/vfio0");
	put("kernel/iommu_groups/5/type", "DMA-FQ\n");
	put("kernel/iommu_groups/5/reserved_regions",
	    "0x00000000fee00000 0x00000000feefffff msi\n");
	add_dev("0000:02:00.0", 9, "0x8086\n", "0x1533\n", "0x020000\n",
		"vfio-pci");
	add_dev("0000:02:00.1", 9, "0x8086\n", "0xa0c8\n", "0x040300\n",
		"snd_hda_intel");
	add_dev("0000:02:00.2", 9, "0x8086\n", "0x1534\n", "0x0c0330\n",
		WEIRD_DRIVER);
	/* sysfs names a cdev the kernel did not create (no
	 * CONFIG_VFIO_DEVICE_CDEV): no node, so no cdev */
	mkdirs("bus/pci/devices/0000:02:00.0/vfio-dev/vfio3");
	put("kernel/iommu_groups/9/type", "DMA\n");
	put("kernel/iommu_groups/9/reserved_regions",
	    "0x0000000000000000 0x0000000000ffffff direct-relaxable\n"
	    "0x00000000fee00000 0x00000000feefffff msi\n");
	mkdirs("module/vfio/parameters");
	put("module/vfio/parameters/enable_unsafe_noiommu_mode", "N\n");
	mkdirs("module/vfio_iommu_type1/parameters");
	put("module/vfio_iommu_type1/parameters/dma_entry_limit", "65535\n");
	put("module/vfio_iommu_type1/parameters/allow_unsafe_interrupts", "N\n");
	/* /dev/vfio with the group nodes but no container */
	mkdirs("dev-vfio");
	put("dev-vfio/5", "");
	put("dev-vfio/9", "");
	mkdirs("dev-vfio/devices");
	put("dev-vfio/devices/vfio0", "");
	snprintf(emptydir, sizeof(emptydir), "%s/empty", tmpdir);
	mkdirs("empty");
	setenv("IODMA_SYSFS_ROOT", tmpdir, 1);
	{
		char path[300];

		snprintf(path, sizeof(path), "%s/dev-vfio", tmpdir);
		setenv("IODMA_VFIO_DEV_DIR", path, 1);
		snprintf(path, sizeof(path), "%s/no-dev-iommu", tmpdir);
		setenv("IODMA_IOMMU_DEV", path, 1);
	}
	*state = NULL;
	return 0;
}

static int teardown_tree(void **state)
{
	char cmd[300];

	unsetenv("IODMA_SYSFS_ROOT");
	unsetenv("IODMA_VFIO_DEV_DIR");
	unsetenv("IODMA_IOMMU_DEV");
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static struct info_report *collect(const char *device)
{
	struct info_opts o = { .device = device, .probe = true };
	struct info_report *r = NULL;

	assert_int_equal(info_collect(&o, &r), 0);
	assert_non_null(r);
	return r;
}

static const char *hint_with(const struct info_report *r, const char *s)
{
	for (unsigned int i = 0; i < r->nr_hints; i++)
		if (strstr(r->hints[i], s))
			return r->hints[i];
	return NULL;
}

static char *render(const struct info_report *r, bool json)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	if (json)
		assert_int_equal(info_print_json(f, r), 0);
	else
		info_print_text(f, r);
	fclose(f);
	assert_non_null(buf);
	return buf;
}

/* ---- the report --------------------------------------------------------- */

static void test_groups_and_devices_are_listed_from_sysfs(void **state)
{
	struct info_report *r = collect(NULL);
	const struct info_device *d;

	assert_int_equal(r->nr_groups, 2);
	assert_int_equal(r->groups[0].id, 5);
	assert_int_equal(r->groups[1].id, 9);
	assert_string_equal(r->groups[0].type, "DMA-FQ");
	assert_string_equal(r->groups[1].type, "DMA");
	assert_int_equal(r->groups[0].nr_devs, 1);
	assert_int_equal(r->groups[1].nr_devs, 3);
	assert_int_equal(r->nr_devices, 4);

	d = &r->devices[r->groups[0].first_dev];
	assert_string_equal(d->name, "0000:01:00.0");
	assert_true(d->has_ids);
	assert_int_equal(d->vendor, 0x1b36);
	assert_int_equal(d->device, 0x0010);
	assert_int_equal(d->class_code, 0x010802);
	assert_string_equal(d->driver, "vfio-pci");
	assert_string_equal(d->cdev, "vfio0");
	assert_int_equal(d->group, 5);

	d = &r->devices[r->groups[1].first_dev];	/* sorted by name */
	assert_string_equal(d[0].name, "0000:02:00.0");
	assert_string_equal(d[1].name, "0000:02:00.1");
	assert_string_equal(d[1].driver, "snd_hda_intel");
	assert_string_equal(d[2].driver, WEIRD_DRIVER);
	assert_string_equal(d[0].cdev, "");	/* vfio-dev/vfio3 but no node */
	assert_string_equal(d[1].cdev, "");
	assert_int_equal(r->nr_cdevs, 1);
	info_free(r);
}

static void test_reserved_regions_are_parsed(void **state)
{
	struct info_report *r = collect(NULL);
	const struct info_group *g = &r->groups[1];

	assert_int_equal(r->groups[0].nr_resv, 1);
	assert_int_equal(g->nr_resv, 2);
	assert_int_equal(g->resv[0].start, 0);
	assert_int_equal(g->resv[0].last, 0xffffff);
	assert_string_equal(g->resv[0].type, "direct-relaxable");
	assert_int_equal(g->resv[1].start, 0xfee00000);
	assert_int_equal(g->resv[1].last, 0xfeefffff);
	assert_string_equal(g->resv[1].type, "msi");
	info_free(r);
}

static void test_viable_group_and_not_viable_group_named_with_drivers(void **state)
{
	struct info_report *r = collect(NULL);
	const char *h;

	assert_true(r->groups[0].viable);
	assert_true(r->groups[0].node);
	assert_false(r->groups[1].viable);
	h = hint_with(r, "group 9 is not viable");
	assert_non_null(h);
	assert_non_null(strstr(h, "0000:02:00.1 (snd_hda_intel)"));
	assert_non_null(strstr(h, "0000:02:00.2 (" WEIRD_DRIVER ")"));
	assert_null(strstr(h, "0000:02:00.0"));	/* it is on vfio-pci */
	assert_non_null(strstr(h, "bind them to vfio-pci: echo vfio-pci > /sys/bus/pci/devices/BDF/driver_override"));
	assert_null(hint_with(r, "group 5"));
	info_free(r);
}

static void test_module_parameters_and_missing_container(void **state)
{
	struct info_report *r = collect(NULL);

	assert_int_equal(r->dma_entry_limit, 65535);
	assert_int_equal(r->noiommu_param, 0);
	assert_int_equal(r->unsafe_interrupts, 0);
	assert_true(r->vfio_module);
	assert_true(r->type1_module);
	assert_int_equal(r->container_err, -ENOENT);
	assert_int_equal(r->iommufd_err, -ENOENT);
	assert_false(r->groups[0].type1.tried);	/* nothing to open */
	assert_false(r->devices[0].iommufd.tried);
	assert_non_null(hint_with(r, "/vfio although the vfio module is loaded"));
	info_free(r);
}

static void test_container_without_type1_says_modprobe_type1(void **state)
{
	struct info_report *r;
	char rel[64];

	snprintf(rel, sizeof(rel), "dev-vfio/vfio");
	put(rel, "");		/* opens, but answers no VFIO ioctl */
	r = collect(NULL);
	assert_int_equal(r->container_err, 0);
	assert_false(r->type1v2);
	assert_int_equal(r->api_version, -1);
	assert_non_null(hint_with(r, "modprobe vfio_iommu_type1"));
	assert_false(r->groups[0].type1.tried);
	info_free(r);
	{
		char path[512];

		snprintf(path, sizeof(path), "%s/dev-vfio/vfio", tmpdir);
		assert_int_equal(unlink(path), 0);
	}
}

static void test_no_iommu_explains_how_to_get_one(void **state)
{
	struct info_report *r;
	char *text;

	setenv("IODMA_SYSFS_ROOT", emptydir, 1);
	setenv("IODMA_VFIO_DEV_DIR", emptydir, 1);
	r = collect(NULL);
	assert_int_equal(r->nr_groups, 0);
	assert_non_null(hint_with(r, "no IOMMU groups: boot with intel_iommu=on / amd_iommu=on"));
	assert_non_null(hint_with(r, "modprobe vfio enable_unsafe_noiommu_mode=1"));
	assert_non_null(hint_with(r, "VFIO is not loaded"));
	assert_non_null(hint_with(r, "modprobe vfio-pci"));
	assert_int_equal(r->dma_entry_limit, -1);
	assert_int_equal(r->noiommu_param, -1);
	text = render(r, false);
	assert_non_null(strstr(text, "IOMMU groups: 0"));
	assert_non_null(strstr(text, "intel_iommu=on"));
	free(text);
	info_free(r);
	setenv("IODMA_SYSFS_ROOT", tmpdir, 1);
	{
		char path[300];

		snprintf(path, sizeof(path), "%s/dev-vfio", tmpdir);
		setenv("IODMA_VFIO_DEV_DIR", path, 1);
	}
}

static void test_device_filter_keeps_only_its_group(void **state)
{
	struct info_report *r = collect("0000:02:00.1");

	assert_true(r->device_found);
	assert_int_equal(r->nr_groups, 1);
	assert_int_equal(r->groups[0].id, 9);
	assert_int_equal(r->nr_devices, 3);
	assert_int_equal(r->nr_cdevs, 0);
	assert_non_null(hint_with(r, "group 9 is not viable"));
	info_free(r);

	r = collect("0000:01:00.0");
	assert_true(r->device_found);
	assert_int_equal(r->nr_groups, 1);
	assert_int_equal(r->groups[0].id, 5);
	assert_string_equal(r->devices[0].name, "0000:01:00.0");
	info_free(r);

	r = collect("0000:7f:00.0");
	assert_false(r->device_found);
	assert_int_equal(r->nr_groups, 0);
	assert_int_equal(r->nr_devices, 0);
	assert_non_null(hint_with(r, "0000:7f:00.0: no such PCI device"));
	info_free(r);
}

static void test_rlimit_memlock_is_reported(void **state)
{
	struct rlimit old, low;
	struct info_report *r;

	assert_int_equal(getrlimit(RLIMIT_MEMLOCK, &old), 0);
	low = old;
	low.rlim_cur = 1 << 20;
	if (old.rlim_max != RLIM_INFINITY && old.rlim_max < low.rlim_cur)
		low.rlim_cur = old.rlim_max;
	assert_int_equal(setrlimit(RLIMIT_MEMLOCK, &low), 0);
	r = collect(NULL);
	assert_false(r->memlock_unlimited);
	assert_int_equal(r->memlock_cur, low.rlim_cur);
	assert_true(r->cap_ipc_lock == 0 || r->cap_ipc_lock == 1);
	/* the ulimit hint exactly when pinning is limited */
	if (r->cap_ipc_lock == 1)
		assert_null(hint_with(r, "ulimit -l"));
	else
		assert_non_null(hint_with(r, "ulimit -l"));
	info_free(r);
	assert_int_equal(setrlimit(RLIMIT_MEMLOCK, &old), 0);
}

/* ---- output ------------------------------------------------------------- */

static void test_text_report_names_groups_devices_and_limits(void **state)
{
	struct info_report *r = collect(NULL);
	char *text = render(r, false);

	assert_non_null(strstr(text, "IOMMU groups: 2"));
	assert_non_null(strstr(text, "group 5: type DMA-FQ, viable"));
	assert_non_null(strstr(text, "group 9: type DMA, NOT viable"));
	assert_non_null(strstr(text, "0000:01:00.0   1b36:0010  class 010802  driver vfio-pci     cdev vfio0"));
	assert_non_null(strstr(text, "[0xfee00000, 0xfeefffff] msi"));
	assert_non_null(strstr(text, "type1 dma_entry_limit     65535"));
	assert_non_null(strstr(text, "RLIMIT_MEMLOCK"));
	assert_non_null(strstr(text, "CAP_IPC_LOCK"));
	assert_non_null(strstr(text, "What is missing, and what to do:"));
	free(text);
	info_free(r);
}

/* Run python3 on @json with @check (argv[1] is the JSON file, written as
 * @stem.json in the test's directory) and assert it exits 0.  Returns
 * false when the machine has no python3 (the caller frees, then skips). */
static bool python_check(const char *json, const char *check,
			 const char *stem)
{
	char jpath[320], ppath[320], cmd[1100];
	FILE *f;
	int st;

	snprintf(jpath, sizeof(jpath), "%s/%s.json", tmpdir, stem);
	snprintf(ppath, sizeof(ppath), "%s/%s.py", tmpdir, stem);
	f = fopen(jpath, "w");
	assert_non_null(f);
	fputs(json, f);
	fclose(f);
	f = fopen(ppath, "w");
	assert_non_null(f);
	fputs(check, f);
	fclose(f);
	if (system("command -v python3 >/dev/null 2>&1") != 0)
		return false;
	snprintf(cmd, sizeof(cmd), "python3 '%s' '%s'", ppath, jpath);
	st = system(cmd);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	return true;
}

/* Run python3 on the JSON: it must parse and hold what the report holds,
 * the escaped driver name included. */
static void test_json_is_valid_and_escaped(void **state)
{
	static const char check[] =
		"import json,sys\n"
		"d=json.load(open(sys.argv[1]))\n"
		"g=d['iommu_groups']\n"
		"assert [x['group'] for x in g]==[5,9]\n"
		"assert g[0]['viable'] and not g[1]['viable']\n"
		"assert g[0]['type']=='DMA-FQ'\n"
		"assert g[0]['devices'][0]['driver']=='vfio-pci'\n"
		"assert g[0]['devices'][0]['class']=='010802'\n"
		"assert g[0]['devices'][0]['cdev']=='vfio0'\n"
		"assert g[1]['devices'][2]['driver']=='we\"ird\\\\drv\\t'\n"
		"assert g[1]['reserved_regions'][1]=={'start':'0xfee00000','last':'0xfeefffff','type':'msi'}\n"
		"assert d['vfio']['dma_entry_limit']==65535\n"
		"assert d['vfio']['type1_available'] is False\n"
		"assert d['iommufd']['available'] is False\n"
		"assert any('not viable' in h for h in d['hints'])\n";
	struct info_report *r = collect(NULL);
	char *json = render(r, true);
	bool ran;

	assert_int_equal(json[0], '{');
	assert_non_null(strstr(json, "\"we\\\"ird\\\\drv\\t\""));
	ran = python_check(json, check, "report");
	free(json);
	info_free(r);
	if (!ran)
		skip();
}

static int run_main(int argc, char **argv)
{
	FILE *out = fopen("/dev/null", "w"), *err = fopen("/dev/null", "w");
	int ret;

	assert_non_null(out);
	assert_non_null(err);
	ret = info_main(argc, argv, out, err);
	fclose(out);
	fclose(err);
	return ret;
}

static void test_exit_codes(void **state)
{
	char *ok[] = { "info", NULL };
	char *json[] = { "info", "--json", NULL };
	char *help[] = { "info", "--help", NULL };
	char *bogus[] = { "info", "--bogus", NULL };
	char *noarg[] = { "info", "--device", NULL };
	char *extra[] = { "info", "extra", NULL };
	char *badbdf[] = { "info", "--device", "00:01.0", NULL };
	char *absent[] = { "info", "--device", "0000:7f:00.0", NULL };
	char *present[] = { "info", "--device", "0000:01:00.0", "--json", NULL };

	assert_int_equal(run_main(1, ok), 0);
	assert_int_equal(run_main(2, json), 0);
	assert_int_equal(run_main(2, help), 0);
	assert_int_equal(run_main(2, bogus), 2);
	assert_int_equal(run_main(2, noarg), 2);
	assert_int_equal(run_main(2, extra), 2);
	assert_int_equal(run_main(3, badbdf), 2);
	assert_int_equal(run_main(3, absent), 1);
	assert_int_equal(run_main(4, present), 0);
}

/* sysfs and uname text are bytes: UTF-8 in them comes out as the same
 * characters (not one U+00XX per byte), and bytes that are not UTF-8 come
 * out as U+FFFD (one per byte that starts no well-formed sequence), so that the whole text is UTF-8 a strict parser takes. */
static void test_json_keeps_utf8_and_replaces_ill_formed_bytes(void **state)
{
	static const char check[] =
		"import json,sys\n"
		"raw=open(sys.argv[1],'rb').read()\n"
		"d=json.loads(raw.decode('utf-8'))\n"	/* strict */
		"g=d['iommu_groups']\n"
		"assert g[1]['devices'][1]['driver']=='pilote-\\u00e9\\u20ac\\U0001f600', g[1]['devices'][1]['driver']\n"
		"assert g[1]['type']=='DMA\\ufffd\\ufffd(\\ufffd\\ufffd', g[1]['type']\n"
		"assert d['kernel']=='6.1-\\u00fc'+'\\ufffd'*5, d['kernel']\n"
		"assert g[1]['devices'][2]['driver']=='we\"ird\\\\drv\\t'\n"
		"assert 'pilote-\\u00e9\\u20ac\\U0001f600'.encode() in raw\n";
	struct info_report *r = collect(NULL);
	char *json;
	bool ran;

	/* a driver named in UTF-8: 2-, 3- and 4-byte sequences */
	snprintf(r->devices[r->groups[1].first_dev + 1].driver,
		 sizeof(r->devices[0].driver), "%s",
		 "pilote-\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
	/* a stray byte, a lead byte before ASCII, a cut 3-byte sequence */
	snprintf(r->groups[1].type, sizeof(r->groups[1].type), "%s",
		 "DMA\xff\xc3(\xe2\x82");
	/* an overlong '/' and a surrogate half are not UTF-8 either */
	snprintf(r->kernel, sizeof(r->kernel), "%s",
		 "6.1-\xc3\xbc\xc0\xaf\xed\xa0\x80");
	json = render(r, true);
	assert_non_null(strstr(json, "pilote-\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));
	ran = python_check(json, check, "utf8");
	free(json);
	info_free(r);
	if (!ran)
		skip();
}

/* Linked with -Wl,--wrap=malloc: the malloc() calls of this executable's
 * own objects (info.c's) come here; fail_malloc makes the next one fail. */
void *__real_malloc(size_t len);
void *__wrap_malloc(size_t len);
static bool fail_malloc;

void *__wrap_malloc(size_t len)
{
	if (fail_malloc) {
		fail_malloc = false;
		return NULL;
	}
	return __real_malloc(len);
}

/* Out of memory while building the JSON (here: making an ill-formed
 * string valid) is -ENOMEM with nothing written, not a report with a
 * member missing. */
static void test_json_out_of_memory_is_enomem_and_writes_nothing(void **state)
{
	struct info_report *r = collect(NULL);
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	snprintf(r->groups[0].type, sizeof(r->groups[0].type), "%s", "DMA\xff");
	fail_malloc = true;
	assert_int_equal(info_print_json(f, r), -ENOMEM);
	assert_false(fail_malloc);	/* the failure was met */
	fclose(f);
	assert_int_equal(len, 0);
	free(buf);
	info_free(r);
}

/* A write error is -EIO, and `iodma info --json` then exits 1. */
static void test_json_write_error_is_eio(void **state)
{
	struct info_report *r = collect(NULL);
	char *argv[] = { "info", "--json", NULL };
	FILE *full = fopen("/dev/full", "w"), *err = fopen("/dev/null", "w");

	if (!full) {
		info_free(r);
		skip();
		return;
	}
	assert_non_null(err);
	setvbuf(full, NULL, _IONBF, 0);
	assert_int_equal(info_print_json(full, r), -EIO);
	assert_int_equal(info_main(2, argv, full, err), 1);
	fclose(full);
	fclose(err);
	info_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_groups_and_devices_are_listed_from_sysfs),
		cmocka_unit_test(test_reserved_regions_are_parsed),
		cmocka_unit_test(test_viable_group_and_not_viable_group_named_with_drivers),
		cmocka_unit_test(test_module_parameters_and_missing_container),
		cmocka_unit_test(test_container_without_type1_says_modprobe_type1),
		cmocka_unit_test(test_no_iommu_explains_how_to_get_one),
		cmocka_unit_test(test_device_filter_keeps_only_its_group),
		cmocka_unit_test(test_rlimit_memlock_is_reported),
		cmocka_unit_test(test_text_report_names_groups_devices_and_limits),
		cmocka_unit_test(test_json_is_valid_and_escaped),
		cmocka_unit_test(test_exit_codes),
		cmocka_unit_test(test_json_keeps_utf8_and_replaces_ill_formed_bytes),
		cmocka_unit_test(test_json_out_of_memory_is_enomem_and_writes_nothing),
		cmocka_unit_test(test_json_write_error_is_eio),
	};

	return cmocka_run_group_tests(tests, setup_tree, teardown_tree);
}
