/* SPDX-License-Identifier: MIT */
/*
 * conformance.c - one backend conformance suite for every backend.
 *
 *   conformance --backend soft|vfio|iommufd|identity [--device BDF]...
 *
 * The same checks run through the domain API against the soft IOMMU (on
 * the host, or in the guest) and against the real kernel (vfio type1v2,
 * iommufd) in a QEMU guest with an emulated IOMMU:
 *   caps      alignment, valid IOVA ranges (page 0 excluded), max
 *             mappings, printed as "# GET_INFO ..." / "# IOAS_IOVA_RANGES";
 *   map       map, double map (-EEXIST), misaligned (-EINVAL), outside
 *             the ranges (-ERANGE), DMA_AVAIL read live;
 *   unmap     strict unmap of contiguous whole mappings, bisecting unmap
 *             refused, strict unmap with a gap refused, unmap with gaps
 *             returning bytes, unmap of an empty range, unmap_all;
 *   listener  replay, and rollback when the kernel refuses: a soft
 *             "front" domain whose listener mirrors into the kernel domain,
 *             with (a) an IOVA outside the kernel's valid ranges and (b) an
 *             IOVA the kernel already has mapped (planted with a raw
 *             backend map: EEXIST at the kernel level);
 *   register  iodma_dev_register coalesces a registered range into one
 *             mapping;
 *   raw       the backend ops called directly (no domain validation): map
 *             over a mapping, unmap that bisects, unmap of an empty range,
 *             unmap covering gaps, unmap crossing an end.  The kernel's
 *             answers are printed and the soft backend's compared with them
 *             (vfio: must match, soft models type1v2; iommufd: differences
 *             are printed as "# DIFF").  With --backend soft the soft
 *             backend is compared with the type1v2 behaviour recorded from
 *             the kernel.
 * The identity backend, and vfio with --noiommu (VFIO no-IOMMU mode), run
 * the caps checks and an identity map at the physical address of a page.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <iodma.h>
#include <iodma/vfio.h>

#include "domain_priv.h"
#include "backend/vfio_priv.h"
#include "guest.h"
#include "tap.h"

#define BUF_PAGES   256

static struct guest_args args = GUEST_ARGS_INIT("conformance");
static struct iodma_vfio_device *vdevs[GUEST_MAX_DEVICES];
static unsigned int nr_vdevs;

static char *buf;		/* BUF_PAGES * PG bytes */
static uint64_t PG;		/* the domain alignment */
static uint64_t B;		/* base IOVA for the tests */

#define X(i) (B + (uint64_t)(i) * PG)	/* the i-th page of IOVA space */
#define V(i) (buf + (uint64_t)(i) * PG)	/* the i-th page of the buffer */

/* ---- domains ------------------------------------------------------------- */

/* The domain of --backend; iommufd: with every --device attached. */
static int open_domain(struct iodma_domain **d)
{
	int err;

	err = guest_domain_create(&args, GUEST_DOMAIN_DEVICES, d);
	if (err)
		return err;
	if (!strcmp(args.backend, "iommufd")) {
		for (unsigned int i = 0; i < args.nr_devices; i++) {
			err = iodma_vfio_device_open(*d, args.devices[i], &vdevs[nr_vdevs]);
			if (err) {
				while (nr_vdevs)
					iodma_vfio_device_close(vdevs[--nr_vdevs]);
				iodma_domain_destroy(*d);
				return err;
			}
			nr_vdevs++;
		}
	}
	return 0;
}

static void close_domain(struct iodma_domain *d)
{
	while (nr_vdevs)
		iodma_vfio_device_close(vdevs[--nr_vdevs]);
	iodma_domain_destroy(d);
}

/* ---- caps ----------------------------------------------------------------- */

static void print_ranges(const char *tag, const struct iodma_caps *c,
			 struct iodma_domain *d)
{
	char line[2048];
	size_t n = 0;
	struct iodma_vfio_iommu_info vi;
	uint32_t avail = 0;
	bool has_avail;

	for (uint32_t i = 0; i < c->nr_ranges && n < sizeof(line) - 64; i++)
		n += (size_t)snprintf(line + n, sizeof(line) - n, "%s%#" PRIx64 "-%#" PRIx64,
				      i ? "," : "", c->ranges[i].iova,
				      range_last(c->ranges[i].iova, c->ranges[i].len));
	has_avail = d->ops->avail_mappings &&
		    d->ops->avail_mappings(d->bpriv, &avail) == 0;
	if (!strcmp(args.backend, "vfio") && !args.noiommu && iodma_vfio_get_iommu_info(d, &vi) == 0) {
		TAP_DIAG("%s iova_pgsizes=%#" PRIx64 " ranges=%s avail=%u max=%u migration=%s",
			 tag, vi.iova_pgsizes, line, vi.dma_avail, c->max_mappings,
			 vi.migration ? "yes" : "no");
	} else {
		char av[16] = "n/a";

		if (has_avail)
			snprintf(av, sizeof(av), "%u", avail);
		TAP_DIAG("%s alignment=%#" PRIx64 " ranges=%s avail=%s max=%u flags=%#x",
			 tag, c->alignment, line, av, c->max_mappings, c->flags);
	}
}

static bool caps_section(struct iodma_domain *d)
{
	struct iodma_caps c = IODMA_STRUCT_INIT(struct iodma_caps);
	bool ok = true, page0 = false;
	const char *tag = !strcmp(args.backend, "vfio") ? "GET_INFO" :
			  !strcmp(args.backend, "iommufd") ? "IOAS_IOVA_RANGES" : "CAPS";

	TAP_OK(iodma_domain_get_caps(d, &c) == 0, "caps_get", "get_caps failed");
	print_ranges(tag, &c, d);
	ok &= TAP_OK(c.alignment >= iodma_page_size() && is_pow2(c.alignment),
		     "caps_alignment_pow2_ge_page", "alignment %#" PRIx64, c.alignment);
	ok &= TAP_OK(c.nr_ranges >= 1 && c.nr_ranges <= IODMA_MAX_IOVA_RANGES,
		     "caps_ranges_count", "nr_ranges %u", c.nr_ranges);
	for (uint32_t i = 0; i < c.nr_ranges; i++) {
		if (c.ranges[i].iova == 0)
			page0 = true;
		if (!is_aligned(c.ranges[i].iova | c.ranges[i].len, c.alignment))
			ok = false;
	}
	ok &= TAP_OK(!page0, "caps_page0_excluded", "a range starts at IOVA 0");
	ok &= TAP_OK(c.max_mappings > 0, "caps_max_mappings", "max %u", c.max_mappings);
	TAP_OK(iodma_domain_max_mappings(d) == c.max_mappings &&
	       iodma_domain_alignment(d) == c.alignment, "caps_queries_agree",
	       "max %u/%u align %#" PRIx64 "/%#" PRIx64, iodma_domain_max_mappings(d),
	       c.max_mappings, iodma_domain_alignment(d), c.alignment);
	PG = c.alignment;
	/* Base: 1 MiB (or the first range's start) with room for the tests. */
	B = 0;
	for (uint32_t i = 0; i < c.nr_ranges && !B; i++) {
		uint64_t lo = align_up(IODMA_MAX(c.ranges[i].iova, 0x100000ull), PG);

		if (lo && range_contains(c.ranges[i].iova, c.ranges[i].len, lo,
					 64 * PG))
			B = lo;
	}
	ok &= TAP_OK(B != 0, "caps_room_for_tests", "no range with 64 pages");
	return ok;
}

/* ---- map / unmap ----------------------------------------------------------- */

static void map_section(struct iodma_domain *d)
{
	struct iodma_caps c = IODMA_STRUCT_INIT(struct iodma_caps);
	uint32_t a0 = 0, a1 = 0;
	uint64_t bytes;
	int r;

	iodma_domain_get_caps(d, &c);
	r = iodma_domain_map(d, X(0), 4 * PG, V(0), IODMA_PERM_RW);
	TAP_OK(r == 0 && iodma_domain_nr_mappings(d) == 1, "map", "ret %d", r);
	r = iodma_domain_map(d, X(0), 4 * PG, V(0), IODMA_PERM_RW);
	TAP_OK(r == -EEXIST, "map_twice_eexist", "ret %d", r);
	r = iodma_domain_map(d, X(2), 4 * PG, V(2), IODMA_PERM_READ);
	TAP_OK(r == -EEXIST && iodma_domain_nr_mappings(d) == 1,
	       "map_overlapping_eexist", "ret %d", r);
	r = iodma_domain_map(d, X(8) + 512, PG, V(8), IODMA_PERM_RW);
	TAP_OK(r == -EINVAL, "map_misaligned_einval", "ret %d", r);
	r = iodma_domain_map(d, 0, PG, V(8), IODMA_PERM_RW);
	TAP_OK(r == -ERANGE, "map_page0_erange", "ret %d", r);
	r = iodma_domain_map(d, X(8), PG, V(8), 0);
	TAP_OK(r == -EINVAL, "map_no_perm_einval", "ret %d", r);

	/* DMA_AVAIL read live: one more mapping, one fewer available. */
	if (d->ops->avail_mappings &&
	    d->ops->avail_mappings(d->bpriv, &a0) == 0) {
		r = iodma_domain_map(d, X(8), PG, V(8), IODMA_PERM_WRITE);
		d->ops->avail_mappings(d->bpriv, &a1);
		TAP_OK(r == 0 && a1 + 1 == a0, "avail_read_live",
		       "ret %d avail %u -> %u", r, a0, a1);
		TAP_OK(iodma_domain_max_mappings(d) == c.max_mappings,
		       "max_mappings_constant", "%u -> %u", c.max_mappings,
		       iodma_domain_max_mappings(d));
		iodma_domain_unmap(d, X(8), PG);
	} else {
		TAP_SKIP("avail_read_live", "backend has no avail_mappings");
	}
	r = iodma_domain_unmap(d, X(0), 4 * PG);
	TAP_OK(r == 0 && iodma_domain_nr_mappings(d) == 0, "unmap", "ret %d", r);

	/* Strict unmap of contiguous whole mappings. */
	r = iodma_domain_map(d, X(0), 2 * PG, V(0), IODMA_PERM_RW);
	r |= iodma_domain_map(d, X(2), 2 * PG, V(2), IODMA_PERM_RW);
	r |= iodma_domain_map(d, X(4), 1 * PG, V(4), IODMA_PERM_RW);
	TAP_OK(r == 0, "map_three_adjacent", "ret %d", r);
	r = iodma_domain_unmap(d, X(0), 5 * PG);
	TAP_OK(r == 0 && iodma_domain_nr_mappings(d) == 0,
	       "unmap_strict_contiguous_whole", "ret %d nr %" PRIu64, r,
	       iodma_domain_nr_mappings(d));

	/* Bisecting unmaps are refused, nothing changes. */
	r = iodma_domain_map(d, X(0), 4 * PG, V(0), IODMA_PERM_RW);
	TAP_OK(r == 0, "map_for_bisect", "ret %d", r);
	r = iodma_domain_unmap(d, X(0), 2 * PG);
	TAP_OK(r == -EINVAL, "unmap_strict_bisect_einval", "ret %d", r);
	r = iodma_domain_unmap_gaps(d, X(2), 4 * PG, &bytes);
	TAP_OK(r == -EINVAL, "unmap_gaps_bisect_end_einval", "ret %d", r);
	r = iodma_domain_unmap_gaps(d, X(0) - PG, 2 * PG, &bytes);
	TAP_OK(r == -EINVAL, "unmap_gaps_bisect_start_einval", "ret %d", r);
	r = iodma_domain_map(d, X(0), 4 * PG, V(0), IODMA_PERM_RW);
	TAP_OK(r == -EEXIST && iodma_domain_nr_mappings(d) == 1,
	       "bisect_refusal_left_mapping", "ret %d", r);

	/* Strict unmap with a gap, or of nothing: refused. */
	r = iodma_domain_map(d, X(6), 2 * PG, V(6), IODMA_PERM_RW);
	TAP_OK(r == 0, "map_after_gap", "ret %d", r);
	r = iodma_domain_unmap(d, X(0), 8 * PG);
	TAP_OK(r == -EINVAL && iodma_domain_nr_mappings(d) == 2,
	       "unmap_strict_gap_einval", "ret %d", r);
	r = iodma_domain_unmap(d, X(20), 2 * PG);
	TAP_OK(r == -EINVAL, "unmap_strict_nothing_einval", "ret %d", r);

	/* Gaps allowed: bytes of the mappings inside. */
	bytes = 0;
	r = iodma_domain_unmap_gaps(d, X(0), 10 * PG, &bytes);
	TAP_OK(r == 0 && bytes == 6 * PG && iodma_domain_nr_mappings(d) == 0,
	       "unmap_gaps_returns_bytes", "ret %d bytes %#" PRIx64, r, bytes);
	bytes = 1;
	r = iodma_domain_unmap_gaps(d, X(0), 10 * PG, &bytes);
	TAP_OK(r == 0 && bytes == 0, "unmap_gaps_empty_zero_bytes",
	       "ret %d bytes %#" PRIx64, r, bytes);

	/* The kernel really dropped them: the same IOVAs map again. */
	r = iodma_domain_map(d, X(0), 8 * PG, V(0), IODMA_PERM_RW);
	TAP_OK(r == 0, "remap_after_unmap", "ret %d", r);
	r |= iodma_domain_map(d, X(10), PG, V(10), IODMA_PERM_RW);
	r |= iodma_domain_map(d, X(12), 3 * PG, V(12), IODMA_PERM_RW);
	bytes = 0;
	r = iodma_domain_unmap_all(d, &bytes);
	TAP_OK(r == 0 && bytes == 12 * PG && iodma_domain_nr_mappings(d) == 0,
	       "unmap_all", "ret %d bytes %#" PRIx64, r, bytes);
	r = iodma_domain_map(d, X(0), 8 * PG, V(0), IODMA_PERM_RW);
	TAP_OK(r == 0, "remap_after_unmap_all", "ret %d", r);
	iodma_domain_unmap_all(d, NULL);

	/* The top of the space: the last page of the last range maps and
	 * unmaps (type1 before 6.18 cannot unmap a mapping ending at 2^64). */
	{
		const struct iodma_iova_range *l = &c.ranges[c.nr_ranges - 1];
		uint64_t top = l->iova + (l->len - PG);

		r = iodma_domain_map(d, top, PG, V(0), IODMA_PERM_RW);
		TAP_OK(r == 0, "map_top_page", "iova %#" PRIx64 " ret %d: %s", top, r,
		       iodma_vfio_last_error());
		bytes = 0;
		if (r == 0)
			r = iodma_domain_unmap_gaps(d, top, PG, &bytes);
		TAP_OK(r == 0 && bytes == PG && iodma_domain_nr_mappings(d) == 0,
		       "unmap_top_page", "ret %d bytes %#" PRIx64 ": %s", r, bytes,
		       iodma_vfio_last_error());
	}
}

/* ---- listeners -------------------------------------------------------------- */

struct recorder {
	unsigned int maps, unmaps;
	uint64_t mapped, unmapped;	/* bytes */
};

static int rec_map(void *arg, const struct iodma_map_event *ev)
{
	struct recorder *r = arg;

	r->maps++;
	r->mapped += ev->len;
	return 0;
}

static void rec_unmap(void *arg, uint64_t iova, uint64_t len)
{
	struct recorder *r = arg;

	r->unmaps++;
	r->unmapped += len;
}

static const struct iodma_listener_ops rec_ops = { rec_map, rec_unmap };

/* Mirror into another domain (the kernel's). */
static int mirror_map(void *arg, const struct iodma_map_event *ev)
{
	return iodma_domain_map(arg, ev->iova, ev->len, ev->va, ev->perm);
}

static void mirror_unmap(void *arg, uint64_t iova, uint64_t len)
{
	iodma_domain_unmap_gaps(arg, iova, len, NULL);
}

static const struct iodma_listener_ops mirror_ops = { mirror_map, mirror_unmap };

static struct iodma_map_event ev_of(uint64_t iova, uint64_t len, void *va)
{
	struct iodma_map_event ev = {
		.iova = iova, .len = len, .va = va, .gpa = (uintptr_t)va,
		.fd = -1, .offset = 0, .perm = IODMA_PERM_RW,
	};
	return ev;
}

/* An aligned IOVA outside every range of @k but inside a range of @f. */
static uint64_t iova_outside(struct iodma_domain *k, struct iodma_domain *f)
{
	struct iodma_caps kc = IODMA_STRUCT_INIT(struct iodma_caps);
	struct iodma_caps fc = IODMA_STRUCT_INIT(struct iodma_caps);

	iodma_domain_get_caps(k, &kc);
	iodma_domain_get_caps(f, &fc);
	for (uint32_t i = 0; i + 1 < kc.nr_ranges; i++) {
		uint64_t gap = kc.ranges[i].iova + kc.ranges[i].len;

		for (uint32_t j = 0; j < fc.nr_ranges; j++)
			if (range_contains(fc.ranges[j].iova, fc.ranges[j].len, gap, PG))
				return gap;
	}
	{
		const struct iodma_iova_range *l = &kc.ranges[kc.nr_ranges - 1];
		uint64_t end = l->iova + l->len;

		for (uint32_t j = 0; end && j < fc.nr_ranges; j++)
			if (range_contains(fc.ranges[j].iova, fc.ranges[j].len, end, PG))
				return end;
	}
	return 0;
}

static void listener_section(struct iodma_domain *k)
{
	struct iodma_domain_opts fo = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_iova_range wide = { .iova = 0x1000, .len = (1ull << 48) - 0x1000 };
	struct iodma_listener *lr = NULL, *lm = NULL;
	struct recorder rec = { 0 }, rec2 = { 0 };
	struct iodma_map_event ev;
	struct iodma_domain *f;
	uint64_t out, bytes;
	int r;

	/* Replay on a kernel domain. */
	r = iodma_domain_map(k, X(0), 2 * PG, V(0), IODMA_PERM_RW);
	r |= iodma_domain_map(k, X(4), 2 * PG, V(4), IODMA_PERM_RW);
	r |= iodma_domain_add_listener(k, &rec_ops, &rec, &lr);
	TAP_OK(r == 0 && rec.maps == 2 && rec.mapped == 4 * PG,
	       "listener_replayed", "ret %d maps %u", r, rec.maps);
	r = iodma_domain_map(k, X(8), PG, V(8), IODMA_PERM_READ);
	TAP_OK(r == 0 && rec.maps == 3, "listener_sees_map", "ret %d", r);
	r = iodma_domain_unmap_gaps(k, X(0), 16 * PG, &bytes);
	TAP_OK(r == 0 && rec.unmapped == 5 * PG, "listener_sees_unmap",
	       "ret %d unmapped %#" PRIx64, r, rec.unmapped);
	iodma_domain_remove_listener(k, lr);

	/* A soft front domain mirrored into the kernel domain. */
	so.nr_ranges = 1;
	so.ranges = &wide;
	so.alignment = PG;
	fo.backend = iodma_backend_soft();
	fo.backend_config = &so;
	if (!TAP_OK(iodma_domain_create(&fo, &f) == 0, "front_domain", "create"))
		return;
	r = iodma_domain_add_listener(f, &rec_ops, &rec2, &lr);
	r |= iodma_domain_add_listener(f, &mirror_ops, k, &lm);
	TAP_OK(r == 0, "mirror_listener_added", "ret %d", r);
	r = iodma_domain_map(f, X(0), 2 * PG, V(0), IODMA_PERM_RW);
	TAP_OK(r == 0 && iodma_domain_nr_mappings(k) == 1, "mirror_maps_into_kernel",
	       "ret %d k has %" PRIu64, r, iodma_domain_nr_mappings(k));

	/* (a) outside the kernel's valid ranges. */
	out = iova_outside(k, f);
	if (out) {
		rec2 = (struct recorder){ 0 };
		r = iodma_domain_map(f, out, PG, V(20), IODMA_PERM_RW);
		TAP_OK(r == -ERANGE && iodma_domain_nr_mappings(f) == 1 &&
		       iodma_domain_nr_mappings(k) == 1 && rec2.maps == rec2.unmaps,
		       "mirror_rollback_outside_kernel_range",
		       "iova %#" PRIx64 " ret %d f %" PRIu64 " maps %u unmaps %u", out, r,
		       iodma_domain_nr_mappings(f), rec2.maps, rec2.unmaps);
	} else {
		TAP_SKIP("mirror_rollback_outside_kernel_range",
			 "the kernel's ranges cover the front domain's");
	}

	/* (b) EEXIST from the kernel itself: plant a raw mapping. */
	ev = ev_of(X(10), 2 * PG, V(10));
	r = k->ops->map(k->bpriv, &ev);
	TAP_OK(r == 0, "raw_plant_mapping", "ret %d", r);
	rec2 = (struct recorder){ 0 };
	r = iodma_domain_map(f, X(10), 2 * PG, V(10), IODMA_PERM_RW);
	TAP_OK(r == -EEXIST && iodma_domain_nr_mappings(f) == 1 &&
	       iodma_domain_nr_mappings(k) == 1 && rec2.maps == rec2.unmaps,
	       "mirror_rollback_kernel_eexist", "ret %d maps %u unmaps %u", r,
	       rec2.maps, rec2.unmaps);

	/* Replay refused by the kernel: the listener is not added and what it
	 * had replayed is unmapped again. */
	iodma_domain_remove_listener(f, lm);
	iodma_domain_unmap_gaps(k, X(0), 4 * PG, NULL);
	r = iodma_domain_map(f, X(10), 2 * PG, V(10), IODMA_PERM_RW);
	TAP_OK(r == 0, "front_map_without_mirror", "ret %d", r);
	lm = (void *)0x1;
	r = iodma_domain_add_listener(f, &mirror_ops, k, &lm);
	TAP_OK(r == -EEXIST && lm == (void *)0x1 && iodma_domain_nr_mappings(k) == 0,
	       "replay_rollback_kernel_eexist", "ret %d k has %" PRIu64, r,
	       iodma_domain_nr_mappings(k));
	/* The rolled-back replay left nothing in the kernel at X(0). */
	r = iodma_domain_map(k, X(0), 2 * PG, V(0), IODMA_PERM_RW);
	TAP_OK(r == 0, "replay_rollback_left_kernel_clean", "ret %d", r);
	iodma_domain_unmap(k, X(0), 2 * PG);
	r = k->ops->unmap(k->bpriv, X(10), 2 * PG, &bytes);
	TAP_OK(r == 0 && bytes == 2 * PG, "raw_remove_planted", "ret %d", r);
	iodma_domain_remove_listener(f, lr);
	iodma_domain_destroy(f);
}

/* ---- registration coalescing -------------------------------------------------- */

static void register_section(struct iodma_domain *d)
{
	struct iodma_dev_opts o = IODMA_OPTS_INIT(struct iodma_dev_opts);
	struct iodma_dev *dev;
	uint64_t iova = 0, before;
	int r;

	o.domain = d;
	r = iodma_dev_create(&o, &dev);
	if (!TAP_OK(r == 0, "dev_create", "ret %d (%s)", r, iodma_strerror(r)))
		return;
	before = iodma_domain_nr_mappings(d);
	r = iodma_dev_register(dev, V(64), 64 * PG, &iova);
	TAP_OK(r == 0 && iodma_domain_nr_mappings(d) == before + 1,
	       "register_coalesces_to_one_mapping", "ret %d mappings %" PRIu64 " -> %" PRIu64,
	       r, before, iodma_domain_nr_mappings(d));
	TAP_DIAG("registered at IOVA %#" PRIx64, iova);
	if (r == 0) {
		r = iodma_dev_unregister(dev, V(64), 64 * PG);
		TAP_OK(r == 0, "unregister", "ret %d", r);
	}
	before = iodma_domain_nr_mappings(d);
	iodma_dev_destroy(dev);
	TAP_OK(iodma_domain_nr_mappings(d) == before - 1 || before == 0,
	       "dev_destroy_unmaps_bounce_pool", "%" PRIu64 " -> %" PRIu64 ": %s",
	       before, iodma_domain_nr_mappings(d), iodma_vfio_last_error());
}

static int print_mapping(void *arg, const struct iodma_map_event *ev)
{
	TAP_DIAG("left: iova %#" PRIx64 " len %#" PRIx64, ev->iova, ev->len);
	return 0;
}

/* ---- raw backend behaviour --------------------------------------------------- */

struct raw_result {
	int ret;		/* 0, or -errno (vfio's -EIO size check: see below) */
	uint64_t bytes;		/* unmap: bytes the IOMMU removed */
};

#define NR_RAW 7
static const char *const raw_names[NR_RAW] = {
	"raw_map_over_mapping",
	"raw_unmap_bisect_start",
	"raw_unmap_bisect_end",
	"raw_unmap_empty",
	"raw_unmap_gaps",
	"raw_unmap_two_adjacent",
	"raw_map_adjacent",
};

/* The type1v2 answers observed from the kernel (see the report of
 * issue 3); used when the suite runs against soft alone. */
static const struct raw_result type1_expected[NR_RAW] = {
	{ -EEXIST, 0 }, { -EINVAL, 0 }, { -EINVAL, 0 }, { 0, 0 },
	{ 0, 4 }, { 0, 4 }, { 0, 0 },
};

/* Run the raw script on a domain's backend.  bytes are in pages. */
static void raw_script(struct iodma_domain *d, struct raw_result *res)
{
	const struct iodma_backend_ops *ops = d->ops;
	void *p = d->bpriv;
	struct iodma_map_event ev;
	uint64_t bytes;
	int r;

	/* [0,2) and [4,6) mapped. */
	ev = ev_of(X(0), 2 * PG, V(0));
	ops->map(p, &ev);
	ev = ev_of(X(4), 2 * PG, V(4));
	ops->map(p, &ev);

	ev = ev_of(X(1), 2 * PG, V(1));
	res[0].ret = ops->map(p, &ev);
	res[0].bytes = 0;
	if (res[0].ret == 0)
		ops->unmap(p, X(1), 2 * PG, &bytes);

#define RAW_UNMAP(i, a, n) do { \
		bytes = 0; \
		r = ops->unmap(p, X(a), (n) * PG, &bytes); \
		/* vfio checks UNMAP_DMA's size: -EIO carries the bytes */ \
		res[i].ret = (r == -EIO && !strcmp(ops->name, "vfio")) ? 0 : r; \
		res[i].bytes = bytes / PG; \
	} while (0)

	RAW_UNMAP(1, 0, 1);	/* first half of [0,2) */
	RAW_UNMAP(2, 1, 2);	/* [1,3): second half of [0,2) and a gap */
	RAW_UNMAP(3, 8, 4);	/* nothing there */
	RAW_UNMAP(4, 0, 8);	/* [0,2) gap [4,6) gap: both */
	/* Two adjacent mappings removed by one call. */
	ev = ev_of(X(0), 2 * PG, V(0));
	ops->map(p, &ev);
	ev = ev_of(X(2), 2 * PG, V(2));
	res[6].ret = ops->map(p, &ev);	/* adjacent to [0,2) */
	res[6].bytes = 0;
	RAW_UNMAP(5, 0, 4);
#undef RAW_UNMAP
	/* Clean whatever is left. */
	ops->unmap(p, X(0), 16 * PG, &bytes);
}

static void raw_section(struct iodma_domain *k)
{
	struct raw_result kern[NR_RAW], soft[NR_RAW];
	struct iodma_domain *s;
	bool strict = !strcmp(args.backend, "vfio") || !strcmp(args.backend, "soft");

	if (strcmp(args.backend, "soft")) {
		raw_script(k, kern);
		for (int i = 0; i < NR_RAW; i++)
			TAP_DIAG("RAW %s %s: ret=%d (%s) bytes=%" PRIu64 " pages", args.backend,
				 raw_names[i], kern[i].ret, strerror(-kern[i].ret),
				 kern[i].bytes);
	} else {
		memcpy(kern, type1_expected, sizeof(kern));
	}
	if (!TAP_OK(guest_backend_domain("soft", NULL, &s) == 0, "raw_soft_domain", "create"))
		return;
	raw_script(s, soft);
	for (int i = 0; i < NR_RAW; i++) {
		bool same = soft[i].ret == kern[i].ret && soft[i].bytes == kern[i].bytes;
		char name[80];

		snprintf(name, sizeof(name), "%s_soft_matches_%s", raw_names[i],
			 strcmp(args.backend, "soft") ? args.backend : "type1");
		if (!same)
			TAP_DIAG("DIFF %s: soft ret=%d bytes=%" PRIu64 ", %s ret=%d bytes=%" PRIu64,
				 raw_names[i], soft[i].ret, soft[i].bytes,
				 strcmp(args.backend, "soft") ? args.backend : "type1",
				 kern[i].ret, kern[i].bytes);
		if (strict)
			TAP_OK(same, name, "soft ret=%d bytes=%" PRIu64 " vs ret=%d bytes=%" PRIu64,
			       soft[i].ret, soft[i].bytes, kern[i].ret, kern[i].bytes);
		else
			TAP_OK(true, name, "recorded");
	}
	iodma_domain_destroy(s);
}

/* ---- dirty tracking ---------------------------------------------------------- */

/* The domain's dirty API on each backend: type1 logs the device's writes
 * in the kernel (a device that pins nothing gets every page of a mapping
 * reported dirty at each harvest: the kernel's real semantics), and an
 * unmap during logging hands its pages over; iommufd without a
 * dirty-tracking HWPT refuses; the soft IOMMU logs translations only. */
static void dirty_section(struct iodma_domain *d)
{
	uint64_t bm[1] = { 0 }, bytes = 0;
	int r;

	r = iodma_domain_map(d, B, 8 * PG, V(0), IODMA_PERM_RW);
	if (!TAP_OK(r == 0, "dirty_map", "ret %d", r))
		return;
	r = iodma_dirty_log_start(d);
	if (!strcmp(args.backend, "iommufd")) {
		TAP_OK(r == -EOPNOTSUPP, "dirty_iommufd_eopnotsupp", "ret %d: %s", r,
		       iodma_vfio_last_error());
		iodma_domain_unmap(d, B, 8 * PG);
		return;
	}
	if (!TAP_OK(r == 0, "dirty_start", "ret %d: %s", r, iodma_vfio_last_error())) {
		iodma_domain_unmap(d, B, 8 * PG);
		return;
	}
	/* A window inside the mapping: the kernel is asked for the whole
	 * mapping and the window is cut out of its answer. */
	r = iodma_dirty_get_and_clear(d, B + 2 * PG, 4 * PG, bm, 1);
	if (!strcmp(args.backend, "vfio"))
		TAP_OK(r == 0 && bm[0] == 0xf, "dirty_type1_reports_pinned_pages",
		       "ret %d bitmap %#" PRIx64 ": %s", r, bm[0], iodma_vfio_last_error());
	else
		TAP_OK(r == 0 && bm[0] == 0, "dirty_soft_nothing_written",
		       "ret %d bitmap %#" PRIx64, r, bm[0]);
	/* Unmapped while logging: its pages are still reported after. */
	r = iodma_domain_unmap_gaps(d, B, 8 * PG, &bytes);
	TAP_OK(r == 0 && bytes == 8 * PG, "dirty_unmap_while_logging", "ret %d: %s", r,
	       iodma_vfio_last_error());
	r = iodma_dirty_get_and_clear(d, B, 8 * PG, bm, 1);
	if (!strcmp(args.backend, "vfio"))
		TAP_OK(r == 0 && bm[0] == 0xff, "dirty_unmap_hands_over_pages",
		       "ret %d bitmap %#" PRIx64 ": %s", r, bm[0], iodma_vfio_last_error());
	r = iodma_dirty_log_stop(d);
	TAP_OK(r == 0, "dirty_stop", "ret %d", r);
}

/* ---- identity --------------------------------------------------------------- */

static void identity_section(struct iodma_domain *d)
{
	uint64_t pa, bytes = 0;
	int r;

	V(0)[0] = 1;
	pa = guest_phys_of(V(0));
	if (!pa) {
		r = iodma_domain_map(d, 0x100000, PG, V(0), IODMA_PERM_RW);
		TAP_OK(r == -EPERM, "identity_pfns_hidden_eperm", "ret %d", r);
		return;
	}
	r = iodma_domain_map(d, pa + PG, PG, V(0), IODMA_PERM_RW);
	TAP_OK(r == -EINVAL, "identity_wrong_iova_einval", "ret %d", r);
	r = iodma_domain_map(d, pa, PG, V(0), IODMA_PERM_RW);
	TAP_OK(r == 0, "identity_map_at_phys", "ret %d: %s", r, iodma_vfio_last_error());
	r = iodma_domain_map(d, pa, PG, V(0), IODMA_PERM_RW);
	TAP_OK(r == -EEXIST, "identity_map_twice_eexist", "ret %d", r);
	r = iodma_domain_unmap_gaps(d, pa, PG, &bytes);
	TAP_OK(r == 0 && bytes == PG, "identity_unmap", "ret %d", r);
}

/* ---- main ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
	struct iodma_domain *d;
	int r;

	r = guest_start(&args, argc, argv, "soft|vfio|iommufd|identity",
			GUEST_ARGS_NOIOMMU, NULL, NULL);
	if (r >= 0)
		return r;
	TAP_DIAG("conformance --backend %s%s, %u device(s)", args.backend,
		 args.noiommu ? " --noiommu" : "", args.nr_devices);
	buf = mmap(NULL, BUF_PAGES * 0x10000ull, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!TAP_OK(buf != MAP_FAILED, "buffer", "mmap failed"))
		return guest_result(&args);
	memset(buf, 0x5a, BUF_PAGES * 0x10000ull);

	if (guest_is_kernel(args.backend) && args.nr_devices == 0)
		return guest_skip(&args, "domain_open", "no --device given");
	r = open_domain(&d);
	if (!TAP_OK(r == 0, "domain_open", "ret %d (%s): %s", r, iodma_strerror(r),
		    iodma_vfio_last_error()))
		return guest_result(&args);
	if (caps_section(d) && PG <= 0x10000) {
		if (!strcmp(args.backend, "identity") || args.noiommu) {
			identity_section(d);
		} else {
			map_section(d);
			listener_section(d);
			register_section(d);
			dirty_section(d);
			if (!TAP_OK(iodma_domain_nr_mappings(d) == 0, "no_mapping_left",
				    "%" PRIu64, iodma_domain_nr_mappings(d)))
				iodma_domain_for_each_mapping(d, 0, UINT64_MAX,
							      print_mapping, NULL);
			raw_section(d);
		}
	}
	close_domain(d);
	return guest_result(&args);
}
