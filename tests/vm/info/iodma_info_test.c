/* SPDX-License-Identifier: MIT */
/*
 * iodma_info_test.c - `iodma info` against a real kernel (guest program).
 *
 *   iodma_info_test --backend soft|vfio|iommufd [--device BDF]...
 *
 * Builds the report the way the tool does (tools/info.c, probes on) and
 * checks it: every --device is listed with driver vfio-pci and a class and
 * id read from sysfs; vfio: type1 is available, each device's group is
 * viable and its probe succeeded, and the alignment, IOVA ranges and max
 * mappings it reports equal iodma_domain_get_caps() of a vfio domain opened
 * here for that group (the raw iova_pgsizes' lowest bit = the alignment);
 * iommufd: /dev/iommu is available, each device has a cdev whose IOAS
 * attach probe succeeded with the caps of an iommufd domain opened here.
 * --device filtering keeps exactly that device's group.  The JSON form must
 * be balanced and the text report is printed as TAP comments.  soft: SKIP.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <iodma.h>
#include <iodma/vfio.h>

#include "guest.h"
#include "info.h"
#include "tap.h"

static struct guest_args args = GUEST_ARGS_INIT("iodma_info_test");

static char *render(const struct info_report *r, bool json)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return NULL;
	if (json)
		info_print_json(f, r);
	else
		info_print_text(f, r);
	fclose(f);
	return buf;
}

/* Braces and brackets balance outside strings, escapes are well formed,
 * and the text is one object. */
static bool json_balanced(const char *s)
{
	int depth = 0;
	bool in_str = false;

	while (*s == ' ' || *s == '\n')
		s++;
	if (*s != '{')
		return false;
	for (; *s; s++) {
		if (in_str) {
			if (*s == '\\') {
				s++;
				if (!*s || !strchr("\"\\/bfnrtu", *s))
					return false;
			} else if (*s == '"') {
				in_str = false;
			} else if ((unsigned char)*s < 0x20) {
				return false;
			}
			continue;
		}
		if (*s == '"')
			in_str = true;
		else if (*s == '{' || *s == '[')
			depth++;
		else if (*s == '}' || *s == ']')
			if (--depth < 0)
				return false;
		if (depth == 0 && *s == '}')
			return s[1] == '\n' && s[2] == '\0';
	}
	return false;
}

static const struct info_device *find_dev(const struct info_report *r,
					  const char *bdf)
{
	for (unsigned int i = 0; i < r->nr_devices; i++)
		if (!strcmp(r->devices[i].name, bdf))
			return &r->devices[i];
	return NULL;
}

static const struct info_group *find_group(const struct info_report *r, int id)
{
	for (unsigned int i = 0; i < r->nr_groups; i++)
		if (r->groups[i].id == id)
			return &r->groups[i];
	return NULL;
}

static bool caps_equal(const struct iodma_caps *a, const struct iodma_caps *b)
{
	if (a->alignment != b->alignment || a->nr_ranges != b->nr_ranges ||
	    a->max_mappings != b->max_mappings || a->flags != b->flags)
		return false;
	for (uint32_t i = 0; i < a->nr_ranges; i++)
		if (a->ranges[i].iova != b->ranges[i].iova ||
		    a->ranges[i].len != b->ranges[i].len)
			return false;
	return true;
}

static void diag_caps(const char *who, const struct iodma_caps *c)
{
	TAP_DIAG("%s: alignment %#llx, %u ranges, first [%#llx, +%#llx), max_mappings %u, flags %#x",
		 who, (unsigned long long)c->alignment, c->nr_ranges,
		 (unsigned long long)(c->nr_ranges ? c->ranges[0].iova : 0),
		 (unsigned long long)(c->nr_ranges ? c->ranges[0].len : 0),
		 c->max_mappings, c->flags);
}

static void check_type1(const struct info_report *r)
{
	int done[GUEST_MAX_DEVICES];
	unsigned int nr_done = 0;

	TAP_OK(r->container_err == 0 && r->type1v2 && r->api_version >= 0,
	       "type1_available", "container err %d, TYPE1v2 %d, API %d",
	       r->container_err, r->type1v2, r->api_version);
	TAP_OK(r->dma_entry_limit > 0, "type1_dma_entry_limit_read",
	       "%lld", (long long)r->dma_entry_limit);
	for (unsigned int i = 0; i < args.nr_devices; i++) {
		struct iodma_vfio_opts vo = IODMA_OPTS_INIT(struct iodma_vfio_opts);
		const struct info_group *g;
		struct iodma_domain *d = NULL;
		struct iodma_caps caps = IODMA_STRUCT_INIT(struct iodma_caps);
		bool seen = false;
		int group = -1, err;

		if (iodma_vfio_group_of(args.devices[i], &group))
			continue;
		for (unsigned int j = 0; j < nr_done; j++)
			seen |= done[j] == group;
		if (seen)
			continue;
		done[nr_done++] = group;
		g = find_group(r, group);
		if (!TAP_OK(g, "group_listed", "group %d of %s", group, args.devices[i]))
			continue;
		TAP_OK(g->viable && g->node && g->node_access, "group_viable",
		       "group %d viable %d node %d access %d", group, g->viable,
		       g->node, g->node_access);
		if (!TAP_OK(g->type1.tried && g->type1.err == 0, "group_probe_ok",
			    "group %d tried %d err %d %s", group, g->type1.tried,
			    g->type1.err, g->type1.msg))
			continue;
		vo.nr_groups = 1;
		vo.groups = &group;
		err = guest_backend_domain("vfio", &vo, &d);
		if (!TAP_OK(err == 0, "own_vfio_domain", "%d %s", err,
			    iodma_vfio_last_error()))
			continue;
		iodma_domain_get_caps(d, &caps);
		diag_caps("report", &g->type1.caps);
		diag_caps("domain", &caps);
		TAP_OK(caps_equal(&caps, &g->type1.caps),
		       "type1_caps_match_get_caps", "group %d differs", group);
		TAP_OK(g->type1.pgsizes &&
		       (g->type1.pgsizes & -g->type1.pgsizes) == caps.alignment,
		       "type1_pgsizes_lowest_is_alignment", "pgsizes %#llx",
		       (unsigned long long)g->type1.pgsizes);
		TAP_OK(g->type1.has_avail && g->type1.avail == caps.max_mappings,
		       "type1_dma_avail_is_max_mappings", "avail %u max %u",
		       g->type1.avail, caps.max_mappings);
		iodma_domain_destroy(d);
	}
}

static void check_iommufd(const struct info_report *r)
{
	TAP_OK(r->iommufd_err == 0, "iommufd_available", "err %d",
	       r->iommufd_err);
	for (unsigned int i = 0; i < args.nr_devices; i++) {
		const struct info_device *dv = find_dev(r, args.devices[i]);
		struct iodma_vfio_device *vd = NULL;
		struct iodma_domain *d = NULL;
		struct iodma_caps caps = IODMA_STRUCT_INIT(struct iodma_caps);
		int err;

		if (!dv)
			continue;
		TAP_OK(dv->cdev[0], "device_cdev_listed", "%s", dv->name);
		if (!TAP_OK(dv->iommufd.tried && dv->iommufd.err == 0,
			    "iommufd_probe_ok", "%s tried %d err %d %s", dv->name,
			    dv->iommufd.tried, dv->iommufd.err, dv->iommufd.msg))
			continue;
		err = guest_backend_domain("iommufd", NULL, &d);
		if (!TAP_OK(err == 0, "own_iommufd_domain", "%d", err))
			continue;
		err = iodma_vfio_device_open(d, dv->name, &vd);
		if (TAP_OK(err == 0, "own_iommufd_attach", "%d %s", err,
			   iodma_vfio_last_error())) {
			iodma_domain_get_caps(d, &caps);
			diag_caps("report", &dv->iommufd.caps);
			diag_caps("domain", &caps);
			TAP_OK(caps_equal(&caps, &dv->iommufd.caps),
			       "iommufd_caps_match_get_caps", "%s differs",
			       dv->name);
			iodma_vfio_device_close(vd);
		}
		iodma_domain_destroy(d);
	}
}

int main(int argc, char **argv)
{
	struct info_opts opts = { .device = NULL, .probe = true };
	struct info_report *r = NULL, *one = NULL;
	char *text, *json;
	int err;

	err = guest_start(&args, argc, argv, "soft|vfio|iommufd", GUEST_ARGS_LENIENT,
			  "info_report", "no VFIO under this backend");
	if (err >= 0)
		return err;

	err = info_collect(&opts, &r);
	if (!TAP_OK(err == 0, "info_collect", "%d", err))
		return guest_result(&args);
	text = render(r, false);
	TAP_OK(text && strstr(text, "IOMMU groups:"), "text_report", "%s",
	       text ? "no header" : "no memory");
	for (char *line = text, *nl; line && *line; line = nl + 1) {
		nl = strchr(line, '\n');
		if (!nl)
			break;
		*nl = '\0';
		TAP_DIAG("%s", line);
	}
	free(text);
	json = render(r, true);
	TAP_OK(json && json_balanced(json), "json_report_well_formed", "%.200s",
	       json ? json : "(null)");
	free(json);

	TAP_OK(r->nr_groups >= args.nr_devices && args.nr_devices > 0, "groups_listed",
	       "%u groups, %u devices asked", r->nr_groups, args.nr_devices);
	for (unsigned int i = 0; i < args.nr_devices; i++) {
		const struct info_device *dv = find_dev(r, args.devices[i]);

		if (!TAP_OK(dv, "device_listed", "%s", args.devices[i]))
			continue;
		TAP_OK(!strcmp(dv->driver, "vfio-pci"), "device_on_vfio_pci",
		       "%s driver '%s'", dv->name, dv->driver);
		TAP_OK(dv->has_ids && dv->vendor && dv->class_code,
		       "device_ids_read", "%s %04x:%04x class %06x", dv->name,
		       dv->vendor, dv->device, dv->class_code);
	}
	{
		const char *bad = NULL;

		for (unsigned int i = 0; i < r->nr_hints && !bad; i++)
			if (strstr(r->hints[i], "not viable") ||
			    strstr(r->hints[i], "no IOMMU groups") ||
			    strstr(r->hints[i], "not loaded"))
				bad = r->hints[i];
		TAP_OK(!bad, "no_unexpected_hint", "%s", bad);
	}
	if (!strcmp(args.backend, "vfio"))
		check_type1(r);
	else
		check_iommufd(r);

	if (args.nr_devices) {
		opts.device = args.devices[0];
		opts.probe = false;
		err = info_collect(&opts, &one);
		TAP_OK(err == 0 && one->device_found && one->nr_groups == 1 &&
		       find_dev(one, args.devices[0]), "device_filter_keeps_its_group",
		       "err %d groups %u", err, one ? one->nr_groups : 0);
		info_free(one);
	}
	info_free(r);
	return guest_result(&args);
}
