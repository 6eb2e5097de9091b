/* SPDX-License-Identifier: MIT */
/*
 * test_domain.c - the domain (seed 000 PciIommu, seed 003 DmaTarget) over
 * the soft IOMMU, and the soft backend itself.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "growth.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <iodma/domain.h>
#include <iodma/memory.h>
#include <iodma/test-hooks.h> /* fault injection: tests only */

#include "domain_priv.h"

uint64_t soft_flush_count(const void *priv); /* soft.c, for tests */

#define PG 4096ull
#define BASE 0x100000ull

/* A fake host buffer address: the domain never dereferences map targets. */
#define VA(x) ((void *)(uintptr_t)(0x7f0000000000ull + (x)))

/* ---- a recording listener ----------------------------------------------- */

struct rec_ev {
	bool map;
	struct iodma_map_event ev; /* unmap: iova, len only */
};

struct recorder {
	struct rec_ev log[256];
	size_t n;
	unsigned int reject_nth;   /* 1 = the next map is rejected */
	int reject_err;
};

static int rec_map(void *arg, const struct iodma_map_event *ev)
{
	struct recorder *r = arg;

	if (r->reject_nth && --r->reject_nth == 0)
		return r->reject_err;
	assert_true(r->n < IODMA_ARRAY_SIZE(r->log));
	r->log[r->n].map = true;
	r->log[r->n++].ev = *ev;
	return 0;
}

static void rec_unmap(void *arg, uint64_t iova, uint64_t len)
{
	struct recorder *r = arg;

	assert_true(r->n < IODMA_ARRAY_SIZE(r->log));
	r->log[r->n].map = false;
	r->log[r->n].ev = (struct iodma_map_event){ .iova = iova, .len = len };
	r->n++;
}

static const struct iodma_listener_ops rec_ops = {
	.map = rec_map,
	.unmap = rec_unmap,
};

/* Net live set a listener believes in: mapped bytes minus unmapped. */
static uint64_t rec_net_bytes(const struct recorder *r)
{
	uint64_t b = 0;

	for (size_t i = 0; i < r->n; i++)
		b += r->log[i].map ? r->log[i].ev.len : -r->log[i].ev.len;
	return b;
}

/* ---- a wrapper backend: soft underneath, tweakable on top ---------------- */

static struct {
	uint32_t clear_flags;
	bool no_unmap_all;
	bool unmap_all_declines;       /* unmap_all says -EOPNOTSUPP */
	bool avail_zero;
	uint64_t caps_alignment;       /* 0 = soft's */
	bool caps_shrink;              /* drop the last range */
	bool caps_merge;               /* merge the first two ranges if they touch */
	unsigned int unmap_calls, unmap_all_calls, map_calls;
	void *last_priv;               /* the state the last map saw */
} wrap;

static int w_open(const void *c, void **p) { return iodma_backend_soft()->open(c, p); }
static void w_close(void *p) { iodma_backend_soft()->close(p); }
static int w_get_caps(void *p, struct iodma_caps *c)
{
	int err = iodma_backend_soft()->get_caps(p, c);

	c->flags &= ~wrap.clear_flags;
	if (wrap.caps_alignment)
		c->alignment = wrap.caps_alignment;
	if (wrap.caps_shrink && c->nr_ranges > 1)
		c->nr_ranges--;
	if (wrap.caps_merge && c->nr_ranges > 1 &&
	    c->ranges[0].iova + c->ranges[0].len == c->ranges[1].iova) {
		c->ranges[0].len += c->ranges[1].len;
		memmove(&c->ranges[1], &c->ranges[2],
			(c->nr_ranges - 2) * sizeof(c->ranges[0]));
		c->nr_ranges--;
	}
	return err;
}
static int w_map(void *p, const struct iodma_map_event *ev)
{
	wrap.map_calls++;
	wrap.last_priv = p;
	return iodma_backend_soft()->map(p, ev);
}
static int w_unmap(void *p, uint64_t iova, uint64_t len, uint64_t *u)
{
	wrap.unmap_calls++;
	return iodma_backend_soft()->unmap(p, iova, len, u);
}
static int w_unmap_all(void *p, uint64_t *u)
{
	wrap.unmap_all_calls++;
	if (wrap.unmap_all_declines)
		return -EOPNOTSUPP;
	return iodma_backend_soft()->unmap_all(p, u);
}
static int w_avail(void *p, uint32_t *a)
{
	if (wrap.avail_zero) {
		*a = 0;
		return 0;
	}
	return iodma_backend_soft()->avail_mappings(p, a);
}

static const struct iodma_backend_ops wrap_ops = {
	.version = IODMA_BACKEND_OPS_VERSION, .name = "wrap",
	.open = w_open, .close = w_close, .get_caps = w_get_caps,
	.map = w_map, .unmap = w_unmap, .unmap_all = w_unmap_all,
	.avail_mappings = w_avail,
};
static const struct iodma_backend_ops wrap_ops_no_all = {
	.version = IODMA_BACKEND_OPS_VERSION, .name = "wrap-no-all",
	.open = w_open, .close = w_close, .get_caps = w_get_caps,
	.map = w_map, .unmap = w_unmap, .avail_mappings = w_avail,
};

/* ---- helpers ------------------------------------------------------------ */

static struct iodma_domain *mkdomain_opts(const struct iodma_backend_ops *ops,
					  const struct iodma_soft_opts *so,
					  struct iodma_memory *mem)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_domain *d = NULL;

	o.backend = ops;
	o.backend_config = so;
	o.memory = mem;
	assert_int_equal(iodma_domain_create(&o, &d), 0);
	assert_non_null(d);
	return d;
}

static struct iodma_domain *mkdomain(void)
{
	struct iodma_domain *d = NULL;

	assert_int_equal(iodma_domain_create(NULL, &d), 0);
	return d;
}

/* iodma_backend_priv() hands a backend the state its open op stored, and
 * nothing to another backend's table or to NULL arguments. */
static void test_backend_priv_only_for_the_domains_own_backend(void **state)
{
	struct iodma_domain *d = mkdomain_opts(&wrap_ops, NULL, NULL);
	void *priv;

	(void)state;
	wrap.last_priv = NULL;
	assert_int_equal(iodma_domain_map(d, BASE, PG, VA(0), IODMA_PERM_RW), 0);
	priv = iodma_backend_priv(d, &wrap_ops);
	assert_non_null(priv);
	assert_ptr_equal(priv, wrap.last_priv);
	assert_null(iodma_backend_priv(d, iodma_backend_soft()));
	assert_null(iodma_backend_priv(d, &wrap_ops_no_all));
	assert_null(iodma_backend_priv(d, NULL));
	assert_null(iodma_backend_priv(NULL, &wrap_ops));
	assert_int_equal(iodma_domain_unmap(d, BASE, PG), 0);
	iodma_domain_destroy(d);
}

/* Everything observable about a domain's mappings, to prove "nothing
 * changed". */
struct snap {
	uint64_t nr;
	size_t n;
	struct iodma_map_event ev[64];
	struct iova_alloc_stats st;
	uint32_t avail;
};

static int snap_cb(void *arg, const struct iodma_map_event *ev)
{
	struct snap *s = arg;

	assert_true(s->n < IODMA_ARRAY_SIZE(s->ev));
	s->ev[s->n++] = *ev;
	return 0;
}

static void take_snap(struct iodma_domain *d, struct snap *s)
{
	memset(s, 0, sizeof(*s));
	s->nr = iodma_domain_nr_mappings(d);
	assert_int_equal(iodma_domain_for_each_mapping(d, 0, UINT64_MAX, snap_cb, s), 0);
	iova_alloc_get_stats(d->iova, &s->st);
	assert_int_equal(d->ops->avail_mappings(d->bpriv, &s->avail), 0);
	assert_int_equal(btree_check(&d->table), 0);
	assert_int_equal(iova_alloc_check(d->iova), 0);
}

static void assert_snap_equal(struct iodma_domain *d, const struct snap *a)
{
	struct snap b;

	take_snap(d, &b);
	assert_int_equal(a->nr, b.nr);
	assert_int_equal(a->n, b.n);
	assert_int_equal(a->nr, a->n);
	for (size_t i = 0; i < a->n; i++) {
		assert_int_equal(a->ev[i].iova, b.ev[i].iova);
		assert_int_equal(a->ev[i].len, b.ev[i].len);
		assert_ptr_equal(a->ev[i].va, b.ev[i].va);
		assert_int_equal(a->ev[i].gpa, b.ev[i].gpa);
		assert_int_equal(a->ev[i].fd, b.ev[i].fd);
		assert_int_equal(a->ev[i].offset, b.ev[i].offset);
		assert_int_equal(a->ev[i].perm, b.ev[i].perm);
	}
	assert_int_equal(a->st.live, b.st.live);
	assert_int_equal(a->st.claims, b.st.claims);
	assert_int_equal(a->st.free_bytes, b.st.free_bytes);
	/* The soft IOMMU's own book agrees with the table. */
	assert_int_equal(a->avail, b.avail);
	assert_int_equal(b.avail, 65535 - b.nr);
}

static void map_ok(struct iodma_domain *d, uint64_t iova, uint64_t len)
{
	assert_int_equal(iodma_domain_map(d, iova, len, VA(iova), IODMA_PERM_RW), 0);
}

/* ---- creation and capabilities ------------------------------------------ */

static void test_soft_defaults(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct iodma_caps c = IODMA_STRUCT_INIT(struct iodma_caps);

	assert_int_equal(iodma_domain_get_caps(d, &c), 0);
	assert_int_equal(iodma_domain_alignment(d), 4096);
	assert_int_equal(c.alignment, 4096);
	assert_int_equal(c.nr_ranges, 2);
	assert_int_equal(c.ranges[0].iova, 0x1000);
	assert_int_equal(c.ranges[0].len, 0xfee00000ull - 0x1000);
	assert_int_equal(c.ranges[1].iova, 0xfef00000ull);
	assert_int_equal(c.ranges[1].len, (1ull << 39) - 0xfef00000ull);
	assert_int_equal(c.max_mappings, 65535);
	assert_int_equal(iodma_domain_max_mappings(d), 65535);
	assert_true(c.flags & IODMA_CAP_MAP_FD);
	assert_int_equal(iodma_domain_nr_mappings(d), 0);
	assert_string_equal(d->ops->name, "soft");
	iodma_domain_destroy(d);
	iodma_domain_destroy(NULL);
}

static void expect_create_fails(const struct iodma_domain_opts *o, int err)
{
	struct iodma_domain *d = (struct iodma_domain *)0x1;

	assert_int_equal(iodma_domain_create(o, &d), err);
	assert_ptr_equal(d, (struct iodma_domain *)0x1);
}

static void test_create_rejects_bad_options(void **state)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_backend_ops bad = *iodma_backend_soft();
	struct iodma_iova_range rv = { 0, 0 };

	o.size = sizeof(o) - 1;
	expect_create_fails(&o, -EINVAL);
	o.size = sizeof(o);
	o.iotlb_entries = 3;
	expect_create_fails(&o, -EINVAL);
	o.iotlb_entries = 0;
	o.flags = 0x80;
	expect_create_fails(&o, -EINVAL);
	o.flags = IODMA_DOMAIN_DISABLED; /* disabled needs memory */
	expect_create_fails(&o, -EINVAL);
	o.flags = 0;
	bad.version = IODMA_BACKEND_OPS_VERSION + 1;
	o.backend = &bad;
	expect_create_fails(&o, -EINVAL);
	bad.version = IODMA_BACKEND_OPS_VERSION;
	bad.unmap = NULL;
	expect_create_fails(&o, -EINVAL);
	o.backend = NULL;
	o.nr_reserved = 1;
	expect_create_fails(&o, -EINVAL); /* NULL reserved */
	o.reserved = &rv;
	expect_create_fails(&o, -EINVAL); /* len 0 */
	assert_int_equal(iodma_domain_create(NULL, NULL), -EINVAL);
}

static void test_soft_opts_validated(void **state)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_iova_range r[IODMA_MAX_IOVA_RANGES + 1];

	o.backend_config = &so;
	so.size = sizeof(so) - 1;
	expect_create_fails(&o, -EINVAL);
	so.size = sizeof(so);
	so.alignment = 3 * PG;
	expect_create_fails(&o, -EINVAL);
	so.alignment = PG / 2;
	expect_create_fails(&o, -EINVAL);
	so.alignment = 0;
	so.ranges = r;
	so.nr_ranges = 2;
	r[0] = (struct iodma_iova_range){ 0x10000, 0x10000 };
	r[1] = (struct iodma_iova_range){ 0x8000, 0x1000 };   /* unsorted */
	expect_create_fails(&o, -EINVAL);
	r[1] = (struct iodma_iova_range){ 0x1f000, 0x2000 };  /* overlapping */
	expect_create_fails(&o, -EINVAL);
	r[1] = (struct iodma_iova_range){ 0x20800, 0x1000 };  /* misaligned */
	expect_create_fails(&o, -EINVAL);
	r[1] = (struct iodma_iova_range){ 0x30000, 0 };       /* empty */
	expect_create_fails(&o, -EINVAL);
	r[1] = (struct iodma_iova_range){ UINT64_MAX - 0xfff, 0x2000 }; /* wraps */
	expect_create_fails(&o, -EINVAL);
	for (int i = 0; i <= IODMA_MAX_IOVA_RANGES; i++)
		r[i] = (struct iodma_iova_range){ 0x10000ull * (i + 1), PG };
	so.nr_ranges = IODMA_MAX_IOVA_RANGES + 1;
	expect_create_fails(&o, -EINVAL);
	so.nr_ranges = 0; /* ranges without a count */
	expect_create_fails(&o, -EINVAL);

	/* And a good custom set is taken as given. */
	{
		struct iodma_domain *d = NULL;
		struct iodma_caps c = IODMA_STRUCT_INIT(struct iodma_caps);

		so.nr_ranges = IODMA_MAX_IOVA_RANGES;
		so.alignment = 2 * PG;
		for (int i = 0; i < IODMA_MAX_IOVA_RANGES; i++)
			r[i] = (struct iodma_iova_range){ 0x10000ull * (i + 1), 2 * PG };
		so.max_mappings = 7;
		assert_int_equal(iodma_domain_create(&o, &d), 0);
		assert_int_equal(iodma_domain_get_caps(d, &c), 0);
		assert_int_equal(c.alignment, 2 * PG);
		assert_int_equal(c.nr_ranges, IODMA_MAX_IOVA_RANGES);
		assert_int_equal(c.max_mappings, 7);
		assert_int_equal(iodma_domain_alignment(d), 2 * PG);
		iodma_domain_destroy(d);
	}
}

static void test_create_fail_nth_sweep(void **state)
{
	struct iodma_iova_range res = { 0x10000000, 0x1000000 };
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_domain *d = NULL;
	unsigned int n;
	int err;

	o.reserved = &res;
	o.nr_reserved = 1;
	for (n = 1;; n++) {
		d = NULL;
		iodma_test_fail_alloc(n);
		err = iodma_domain_create(&o, &d);
		if (err == 0)
			break;
		assert_int_equal(err, -ENOMEM);
		assert_null(d);
	}
	iodma_test_fail_alloc(0);
	assert_true(n > 2);
	iodma_domain_destroy(d);
}

/* ---- map validation ------------------------------------------------------ */

static void test_map_overlap_eexist(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct snap s;

	map_ok(d, BASE, 4 * PG);
	take_snap(d, &s);
	assert_int_equal(iodma_domain_map(d, BASE, PG, VA(0), IODMA_PERM_READ), -EEXIST);
	assert_int_equal(iodma_domain_map(d, BASE - PG, 2 * PG, VA(0), IODMA_PERM_READ), -EEXIST);
	assert_int_equal(iodma_domain_map(d, BASE + 3 * PG, 2 * PG, VA(0), IODMA_PERM_READ), -EEXIST);
	assert_int_equal(iodma_domain_map(d, BASE - PG, 6 * PG, VA(0), IODMA_PERM_READ), -EEXIST);
	assert_snap_equal(d, &s);
	/* Touching neighbours are fine. */
	map_ok(d, BASE - PG, PG);
	map_ok(d, BASE + 4 * PG, PG);
	assert_int_equal(iodma_domain_nr_mappings(d), 3);
	iodma_domain_destroy(d);
}

static void test_map_outside_ranges_erange(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct snap s;

	take_snap(d, &s);
	/* page 0 */
	assert_int_equal(iodma_domain_map(d, 0, PG, VA(0), IODMA_PERM_RW), -ERANGE);
	/* the MSI window, and straddling into it */
	assert_int_equal(iodma_domain_map(d, 0xfee00000, PG, VA(0), IODMA_PERM_RW), -ERANGE);
	assert_int_equal(iodma_domain_map(d, 0xfedff000, 2 * PG, VA(0), IODMA_PERM_RW), -ERANGE);
	assert_int_equal(iodma_domain_map(d, 0xfeeff000, 2 * PG, VA(0), IODMA_PERM_RW), -ERANGE);
	/* straddling both ranges (one mapping may not span two) */
	assert_int_equal(iodma_domain_map(d, 0xfedff000, 0x102000, VA(0), IODMA_PERM_RW), -ERANGE);
	/* beyond 39 bits */
	assert_int_equal(iodma_domain_map(d, 1ull << 39, PG, VA(0), IODMA_PERM_RW), -ERANGE);
	assert_int_equal(iodma_domain_map(d, (1ull << 39) - PG, 2 * PG, VA(0), IODMA_PERM_RW), -ERANGE);
	assert_snap_equal(d, &s);
	/* the edges themselves are valid */
	map_ok(d, 0x1000, PG);
	map_ok(d, 0xfedff000, PG);
	map_ok(d, 0xfef00000, PG);
	map_ok(d, (1ull << 39) - PG, PG);
	iodma_domain_destroy(d);
}

static void test_map_max_mappings_enospc(void **state)
{
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_domain *d;
	struct snap s;

	so.max_mappings = 4;
	d = mkdomain_opts(NULL, &so, NULL);
	assert_int_equal(iodma_domain_max_mappings(d), 4);
	for (int i = 0; i < 4; i++)
		map_ok(d, BASE + i * 2 * PG, PG);
	take_snap(d, &s);
	assert_int_equal(iodma_domain_map(d, BASE + 100 * PG, PG, VA(0), IODMA_PERM_RW), -ENOSPC);
	assert_int_equal(iodma_domain_nr_mappings(d), 4);
	assert_int_equal(iodma_domain_unmap(d, BASE, PG), 0);
	map_ok(d, BASE + 100 * PG, PG);
	iodma_domain_destroy(d);
	(void)s;
}

/* Near the mapping limit the backend's live count (VFIO DMA_AVAIL) is
 * asked and its 0 is -ENOSPC; far from it the backend is not asked, so a
 * type1 map stays one ioctl (the kernel refuses by itself past its limit). */
static void test_backend_avail_zero_enospc_near_the_limit(void **state)
{
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_domain *d;

	memset(&wrap, 0, sizeof(wrap));
	so.max_mappings = 100; /* within the recheck margin */
	d = mkdomain_opts(&wrap_ops, &so, NULL);
	wrap.avail_zero = true;
	assert_int_equal(iodma_domain_map(d, BASE, PG, VA(0), IODMA_PERM_RW), -ENOSPC);
	assert_int_equal(wrap.map_calls, 0);
	assert_int_equal(iodma_domain_nr_mappings(d), 0);
	wrap.avail_zero = false;
	map_ok(d, BASE, PG);
	iodma_domain_destroy(d);

	memset(&wrap, 0, sizeof(wrap));
	d = mkdomain_opts(&wrap_ops, NULL, NULL); /* 65535: far from it */
	wrap.avail_zero = true;
	map_ok(d, BASE, PG);
	assert_int_equal(wrap.map_calls, 1);
	wrap.avail_zero = false;
	iodma_domain_destroy(d);
}

static void test_misaligned_einval(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct snap s;

	take_snap(d, &s);
	assert_int_equal(iodma_domain_map(d, BASE + 1, PG, VA(0), IODMA_PERM_RW), -EINVAL);
	assert_int_equal(iodma_domain_map(d, BASE, PG + 512, VA(0), IODMA_PERM_RW), -EINVAL);
	assert_int_equal(iodma_domain_map(d, BASE, PG, VA(8), IODMA_PERM_RW), -EINVAL);
	assert_int_equal(iodma_domain_map(d, BASE, 0, VA(0), IODMA_PERM_RW), -EINVAL);
	assert_int_equal(iodma_domain_map(d, BASE, PG, NULL, IODMA_PERM_RW), -EINVAL);
	assert_int_equal(iodma_domain_map(d, BASE, PG, VA(0), 0), -EINVAL);
	assert_int_equal(iodma_domain_map(d, BASE, PG, VA(0), 0x4), -EINVAL);
	assert_int_equal(iodma_domain_map_fd(d, BASE, PG, VA(0), 3, 100, IODMA_PERM_RW), -EINVAL);
	assert_int_equal(iodma_domain_map_fd(d, BASE, PG, VA(0), -1, 0, IODMA_PERM_RW), -EINVAL);
	map_ok(d, BASE, 2 * PG);
	take_snap(d, &s);
	assert_int_equal(iodma_domain_unmap(d, BASE + 8, PG), -EINVAL);
	assert_int_equal(iodma_domain_unmap(d, BASE, PG + 1), -EINVAL);
	assert_int_equal(iodma_domain_unmap(d, BASE, 0), -EINVAL);
	assert_int_equal(iodma_domain_unmap_gaps(d, BASE + 8, PG, NULL), -EINVAL);
	assert_int_equal(iodma_domain_unmap_gaps(d, BASE, 0, NULL), -EINVAL);
	assert_snap_equal(d, &s);
	iodma_domain_destroy(d);
}

static void test_overflow_einval(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct snap s;
	uint64_t u;

	take_snap(d, &s);
	assert_int_equal(iodma_domain_map(d, UINT64_MAX - PG + 1, 2 * PG, VA(0), IODMA_PERM_RW), -EINVAL);
	assert_int_equal(iodma_domain_map(d, BASE, PG, (void *)(uintptr_t)(UINT64_MAX - PG + 1 - PG + 1), IODMA_PERM_RW), -EINVAL);
	assert_int_equal(iodma_domain_map(d, BASE, 2 * PG, (void *)(uintptr_t)(UINT64_MAX - PG + 1), IODMA_PERM_RW), -EINVAL);
	/* Host VA and fd offset ranges that wrap (domain.h: -EINVAL). */
	assert_int_equal(iodma_domain_map_fd(d, BASE, 2 * PG, VA(0), 3, UINT64_MAX - PG + 1, IODMA_PERM_RW), -EINVAL);
	assert_int_equal(iodma_domain_map_fd(d, BASE, 2 * PG, (void *)(uintptr_t)(UINT64_MAX - PG + 1), 3, 0, IODMA_PERM_RW), -EINVAL);
	assert_int_equal(iodma_domain_unmap(d, UINT64_MAX - PG + 1, 2 * PG), -EINVAL);
	assert_int_equal(iodma_domain_unmap_gaps(d, UINT64_MAX - PG + 1, 2 * PG, &u), -EINVAL);
	assert_int_equal(iodma_domain_for_each_mapping(d, UINT64_MAX, 2, snap_cb, &s), -EINVAL);
	assert_int_equal(iodma_iova_alloc(d, UINT64_MAX, PG, UINT64_MAX, &u), -EINVAL);
	assert_snap_equal(d, &s);
	iodma_domain_destroy(d);
}

/* ---- strict unmap (PciIommu) -------------------------------------------- */

static void test_pciiommu_unmap_contiguous_whole_mappings_ok(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct recorder r = { .n = 0 };
	struct iodma_listener *l;
	uint64_t f0;

	map_ok(d, BASE, PG);
	map_ok(d, BASE + PG, 2 * PG);
	map_ok(d, BASE + 3 * PG, PG);
	map_ok(d, BASE + 8 * PG, PG);
	assert_int_equal(iodma_domain_add_listener(d, &rec_ops, &r, &l), 0);
	assert_int_equal(r.n, 4);
	r.n = 0;
	f0 = soft_flush_count(d->bpriv);
	/* Three contiguous whole mappings at once. */
	assert_int_equal(iodma_domain_unmap(d, BASE, 4 * PG), 0);
	assert_int_equal(iodma_domain_nr_mappings(d), 1);
	/* One listener event for the run, one backend IOTLB flush. */
	assert_int_equal(r.n, 1);
	assert_false(r.log[0].map);
	assert_int_equal(r.log[0].ev.iova, BASE);
	assert_int_equal(r.log[0].ev.len, 4 * PG);
	assert_int_equal(soft_flush_count(d->bpriv), f0 + 1);
	/* Exactly one mapping. */
	assert_int_equal(iodma_domain_unmap(d, BASE + 8 * PG, PG), 0);
	assert_int_equal(iodma_domain_nr_mappings(d), 0);
	/* The space is free again in the backend too. */
	map_ok(d, BASE, 4 * PG);
	iodma_domain_destroy(d);
}

static void test_pciiommu_unmap_bisecting_refused(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct recorder r = { .n = 0 };
	struct iodma_listener *l;
	struct snap s;

	map_ok(d, BASE, 4 * PG);
	map_ok(d, BASE + 4 * PG, 4 * PG);
	assert_int_equal(iodma_domain_add_listener(d, &rec_ops, &r, &l), 0);
	take_snap(d, &s);
	r.n = 0;
	assert_int_equal(iodma_domain_unmap(d, BASE, PG), -EINVAL);
	assert_int_equal(iodma_domain_unmap(d, BASE + PG, 3 * PG), -EINVAL);
	assert_int_equal(iodma_domain_unmap(d, BASE, 5 * PG), -EINVAL);
	assert_int_equal(iodma_domain_unmap(d, BASE + 2 * PG, 4 * PG), -EINVAL);
	assert_int_equal(iodma_domain_unmap(d, BASE - PG, 5 * PG), -EINVAL);
	assert_snap_equal(d, &s);
	assert_int_equal(r.n, 0);
	iodma_domain_destroy(d);
}

static void test_pciiommu_unmap_with_gap_refused(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct snap s;

	map_ok(d, BASE, PG);
	map_ok(d, BASE + 2 * PG, PG);
	take_snap(d, &s);
	assert_int_equal(iodma_domain_unmap(d, BASE, 3 * PG), -EINVAL);
	/* gap at either end */
	assert_int_equal(iodma_domain_unmap(d, BASE - PG, 2 * PG), -EINVAL);
	assert_int_equal(iodma_domain_unmap(d, BASE + 2 * PG, 2 * PG), -EINVAL);
	/* nothing mapped at all */
	assert_int_equal(iodma_domain_unmap(d, BASE + PG, PG), -EINVAL);
	assert_int_equal(iodma_domain_unmap(d, 0x40000000, PG), -EINVAL);
	assert_snap_equal(d, &s);
	iodma_domain_destroy(d);
}

/* ---- unmap with gaps (DmaTarget) ------------------------------------------ */

static void test_dmatarget_unmap_gaps_returns_bytes(void **state)
{
	struct iodma_domain *d;
	struct recorder r = { .n = 0 };
	struct iodma_listener *l;
	uint64_t u = 12345;

	memset(&wrap, 0, sizeof(wrap));
	d = mkdomain_opts(&wrap_ops, NULL, NULL);
	map_ok(d, BASE, PG);
	map_ok(d, BASE + PG, 2 * PG);      /* run 1: BASE .. +3 */
	map_ok(d, BASE + 5 * PG, PG);      /* run 2 */
	map_ok(d, BASE + 20 * PG, PG);     /* outside */
	assert_int_equal(iodma_domain_add_listener(d, &rec_ops, &r, &l), 0);
	r.n = 0;
	wrap.unmap_calls = 0;
	assert_int_equal(iodma_domain_unmap_gaps(d, BASE - 4 * PG, 16 * PG, &u), 0);
	assert_int_equal(u, 4 * PG);
	assert_int_equal(iodma_domain_nr_mappings(d), 1);
	/* One backend call and one listener event per contiguous run, each
	 * clipped to the run (never covering foreign space). */
	assert_int_equal(wrap.unmap_calls, 2);
	assert_int_equal(r.n, 2);
	assert_int_equal(r.log[0].ev.iova, BASE);
	assert_int_equal(r.log[0].ev.len, 3 * PG);
	assert_int_equal(r.log[1].ev.iova, BASE + 5 * PG);
	assert_int_equal(r.log[1].ev.len, PG);
	/* Nothing there: 0 bytes, no backend or listener call. */
	r.n = 0;
	u = 777;
	assert_int_equal(iodma_domain_unmap_gaps(d, BASE, 16 * PG, &u), 0);
	assert_int_equal(u, 0);
	assert_int_equal(wrap.unmap_calls, 2);
	assert_int_equal(r.n, 0);
	assert_int_equal(iodma_domain_unmap_gaps(d, BASE, 16 * PG, NULL), 0);
	iodma_domain_destroy(d);
}

static void test_dmatarget_unmap_bisect_refused(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct snap s;
	uint64_t u = 99;

	map_ok(d, BASE, 4 * PG);
	map_ok(d, BASE + 8 * PG, 4 * PG);
	take_snap(d, &s);
	/* crossing the start */
	assert_int_equal(iodma_domain_unmap_gaps(d, BASE + PG, 16 * PG, &u), -EINVAL);
	/* crossing the end */
	assert_int_equal(iodma_domain_unmap_gaps(d, BASE - PG, 10 * PG, &u), -EINVAL);
	/* inside one */
	assert_int_equal(iodma_domain_unmap_gaps(d, BASE + PG, PG, &u), -EINVAL);
	assert_int_equal(u, 99);
	assert_snap_equal(d, &s);
	assert_int_equal(iodma_domain_unmap_gaps(d, BASE - PG, 14 * PG, &u), 0);
	assert_int_equal(u, 8 * PG);
	iodma_domain_destroy(d);
}

static void test_unmap_all_with_and_without_backend_unmap_all(void **state)
{
	struct iodma_domain *d;
	struct recorder r = { .n = 0 };
	struct iodma_listener *l;
	uint64_t u;

	/* pass 0: unmap_all; 1: no unmap_all op; 2: unmap_all declines
	 * (-EOPNOTSUPP, as vfio does without VFIO_UNMAP_ALL): per run. */
	for (int pass = 0; pass < 3; pass++) {
		memset(&wrap, 0, sizeof(wrap));
		wrap.unmap_all_declines = pass == 2;
		d = mkdomain_opts(pass == 1 ? &wrap_ops_no_all : &wrap_ops, NULL, NULL);
		map_ok(d, BASE, PG);
		map_ok(d, BASE + PG, PG);
		map_ok(d, BASE + 4 * PG, PG);
		map_ok(d, 0xfef00000, PG);
		r.n = 0;
		assert_int_equal(iodma_domain_add_listener(d, &rec_ops, &r, &l), 0);
		r.n = 0;
		assert_int_equal(iodma_domain_unmap_all(d, &u), 0);
		assert_int_equal(u, 4 * PG);
		assert_int_equal(iodma_domain_nr_mappings(d), 0);
		if (pass == 0) {
			assert_int_equal(wrap.unmap_all_calls, 1);
			assert_int_equal(wrap.unmap_calls, 0);
		} else {
			assert_int_equal(wrap.unmap_calls, 3); /* per run */
		}
		assert_int_equal(r.n, 3);
		assert_int_equal(rec_net_bytes(&r), (uint64_t)0 - 4 * PG);
		/* empty: no call at all */
		assert_int_equal(iodma_domain_unmap_all(d, &u), 0);
		assert_int_equal(u, 0);
		assert_int_equal(r.n, 3);
		map_ok(d, BASE, PG); /* the backend really forgot */
		iodma_domain_destroy(d);
	}
}

/* ---- listeners ------------------------------------------------------------ */

static void test_listener_replay_on_register(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct recorder r = { .n = 0 };
	struct iodma_listener *l = NULL;

	map_ok(d, BASE + 8 * PG, PG);
	assert_int_equal(iodma_domain_map_fd(d, BASE, 2 * PG, VA(0x10000), 7, 3 * PG, IODMA_PERM_READ), 0);
	map_ok(d, BASE + 4 * PG, 2 * PG);
	assert_int_equal(iodma_domain_add_listener(d, &rec_ops, &r, &l), 0);
	assert_non_null(l);
	/* Replayed in IOVA order with every field. */
	assert_int_equal(r.n, 3);
	assert_true(r.log[0].map && r.log[1].map && r.log[2].map);
	assert_int_equal(r.log[0].ev.iova, BASE);
	assert_int_equal(r.log[0].ev.len, 2 * PG);
	assert_ptr_equal(r.log[0].ev.va, VA(0x10000));
	assert_int_equal(r.log[0].ev.gpa, (uintptr_t)VA(0x10000));
	assert_int_equal(r.log[0].ev.fd, 7);
	assert_int_equal(r.log[0].ev.offset, 3 * PG);
	assert_int_equal(r.log[0].ev.perm, IODMA_PERM_READ);
	assert_int_equal(r.log[1].ev.iova, BASE + 4 * PG);
	assert_int_equal(r.log[1].ev.fd, -1);
	assert_int_equal(r.log[2].ev.iova, BASE + 8 * PG);
	/* Then it sees live traffic. */
	map_ok(d, BASE + 16 * PG, PG);
	assert_int_equal(r.n, 4);
	assert_true(r.log[3].map);
	assert_int_equal(iodma_domain_unmap(d, BASE + 16 * PG, PG), 0);
	assert_int_equal(r.n, 5);
	assert_false(r.log[4].map);
	/* Removed: no more events. */
	iodma_domain_remove_listener(d, l);
	iodma_domain_remove_listener(d, NULL);
	map_ok(d, BASE + 16 * PG, PG);
	assert_int_equal(r.n, 5);
	iodma_domain_destroy(d);
}

static void test_listener_rollback_on_reject(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct recorder a = { .n = 0 }, b = { .n = 0 }, c = { .n = 0 };
	struct iodma_listener *la, *lb, *lc;
	struct snap s;

	assert_int_equal(iodma_domain_add_listener(d, &rec_ops, &a, &la), 0);
	assert_int_equal(iodma_domain_add_listener(d, &rec_ops, &b, &lb), 0);
	assert_int_equal(iodma_domain_add_listener(d, &rec_ops, &c, &lc), 0);
	map_ok(d, BASE, PG);
	take_snap(d, &s);
	a.n = b.n = c.n = 0;
	b.reject_nth = 1;
	b.reject_err = -EPERM;
	assert_int_equal(iodma_domain_map(d, BASE + PG, PG, VA(0), IODMA_PERM_RW), -EPERM);
	/* a accepted and got the unmap; b rejected; c never saw it. */
	assert_int_equal(a.n, 2);
	assert_true(a.log[0].map);
	assert_false(a.log[1].map);
	assert_int_equal(a.log[1].ev.iova, BASE + PG);
	assert_int_equal(a.log[1].ev.len, PG);
	assert_int_equal(b.n, 0);
	assert_int_equal(c.n, 0);
	assert_snap_equal(d, &s);
	/* The backend holds no trace: the same map now succeeds. */
	map_ok(d, BASE + PG, PG);
	assert_int_equal(c.n, 1);
	iodma_domain_destroy(d);
}

/* The backend's own count of live mappings (the soft IOMMU's book). */
static uint64_t backend_live(struct iodma_domain *d)
{
	uint32_t avail;

	assert_int_equal(d->ops->avail_mappings(d->bpriv, &avail), 0);
	return 65535 - (uint64_t)avail;
}

/*
 * A listener rejects a map and the backend then refuses to unmap it (the
 * undo fails): the mapping stays live and recorded, the call says so with
 * -EUCLEAN, and the table and the backend agree.  (Differential fuzzing
 * found the old code forgot the mapping: nr_mappings 0, the backend 1, and
 * the same map -EEXIST forever.)
 */
static void test_listener_reject_with_failing_undo_keeps_books_agreeing(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct recorder a = { .n = 0 }, b = { .n = 0 };
	struct iodma_listener *la, *lb;
	struct map_lookup ml;
	uint64_t u = 0;
	int err;

	assert_int_equal(iodma_domain_add_listener(d, &rec_ops, &a, &la), 0);
	assert_int_equal(iodma_domain_add_listener(d, &rec_ops, &b, &lb), 0);
	b.reject_nth = 1;
	b.reject_err = -EPERM;
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_UNMAP, 1, -EIO), 0);
	err = iodma_domain_map(d, BASE, 2 * PG, VA(0), IODMA_PERM_RW);
	/* The books agree: one live mapping, in the table and the backend. */
	assert_int_equal(backend_live(d), iodma_domain_nr_mappings(d));
	assert_int_equal(err, -EUCLEAN);
	assert_int_equal(backend_live(d), 1);
	assert_int_equal(iodma_domain_nr_mappings(d), 1);
	assert_int_equal(domain_lookup(d, BASE + PG, &ml), 0);
	assert_int_equal(ml.iova, BASE);
	assert_int_equal(ml.rec.len, 2 * PG);
	/* a accepted it and keeps it (it is live); b rejected, never saw it. */
	assert_int_equal(a.n, 1);
	assert_true(a.log[0].map);
	assert_int_equal(b.n, 0);

	/* The fuzzer's sequence: drop the rejecting listener, map again. */
	iodma_domain_remove_listener(d, lb);
	assert_int_equal(iodma_domain_map(d, BASE, 2 * PG, VA(0), IODMA_PERM_RW), -EEXIST);
	assert_int_equal(iodma_domain_map(d, BASE + PG, PG, VA(0), IODMA_PERM_RW), -EEXIST);
	assert_int_equal(iodma_domain_nr_mappings(d), 1);
	assert_int_equal(backend_live(d), 1);
	/* The caller cleans up with an ordinary unmap. */
	assert_int_equal(iodma_domain_unmap_gaps(d, BASE, 4 * PG, &u), 0);
	assert_int_equal(u, 2 * PG);
	assert_int_equal(a.n, 2);
	assert_false(a.log[1].map);
	assert_int_equal(iodma_domain_nr_mappings(d), 0);
	assert_int_equal(backend_live(d), 0);
	/* And the same map now simply works. */
	map_ok(d, BASE, 2 * PG);
	assert_int_equal(backend_live(d), 1);
	assert_int_equal(iodma_domain_unmap(d, BASE, 2 * PG), 0);
	assert_int_equal(backend_live(d), 0);
	iodma_domain_destroy(d);
}

/* -EUCLEAN means only "left live": a listener or backend that returns it
 * for its own reasons is reported as -EIO, and nothing stays mapped. */
static void test_euclean_from_a_listener_or_backend_becomes_eio(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct recorder a = { .n = 0 };
	struct iodma_listener *la;

	assert_int_equal(iodma_domain_add_listener(d, &rec_ops, &a, &la), 0);
	a.reject_nth = 1;
	a.reject_err = -EUCLEAN;
	assert_int_equal(iodma_domain_map(d, BASE, PG, VA(0), IODMA_PERM_RW), -EIO);
	assert_int_equal(iodma_domain_nr_mappings(d), 0);
	assert_int_equal(backend_live(d), 0);
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_MAP, 1, -EUCLEAN), 0);
	assert_int_equal(iodma_domain_map(d, BASE, PG, VA(0), IODMA_PERM_RW), -EIO);
	assert_int_equal(iodma_domain_nr_mappings(d), 0);
	assert_int_equal(backend_live(d), 0);
	assert_int_equal(a.n, 0);
	map_ok(d, BASE, PG);
	iodma_domain_destroy(d);
}

static void test_listener_add_replay_rejected_is_rolled_back(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct recorder r = { .n = 0 };
	struct iodma_listener *l = (struct iodma_listener *)0x1;

	map_ok(d, BASE, PG);
	map_ok(d, BASE + 2 * PG, PG);
	map_ok(d, BASE + 4 * PG, PG);
	r.reject_nth = 3;
	r.reject_err = -EIO;
	assert_int_equal(iodma_domain_add_listener(d, &rec_ops, &r, &l), -EIO);
	assert_ptr_equal(l, (struct iodma_listener *)0x1);
	assert_int_equal(r.n, 4); /* two maps, then their two unmaps */
	assert_int_equal(rec_net_bytes(&r), 0);
	assert_false(r.log[2].map);
	/* Not registered. */
	map_ok(d, BASE + 8 * PG, PG);
	assert_int_equal(r.n, 4);
	assert_int_equal(iodma_domain_add_listener(d, NULL, &r, &l), -EINVAL);
	iodma_domain_destroy(d);
}

static void test_listener_add_fail_nth_sweep(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct recorder r = { .n = 0 };
	struct iodma_listener *l;
	unsigned int n;
	int err;

	map_ok(d, BASE, PG);
	for (n = 1;; n++) {
		r.n = 0;
		iodma_test_fail_alloc(n);
		err = iodma_domain_add_listener(d, &rec_ops, &r, &l);
		if (!err)
			break;
		assert_int_equal(err, -ENOMEM);
		assert_int_equal(r.n, 0);
	}
	iodma_test_fail_alloc(0);
	assert_int_equal(r.n, 1);
	iodma_domain_destroy(d);
}

static void test_destroy_sends_one_unmap_per_mapping(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct recorder r = { .n = 0 };
	struct iodma_listener *l;

	map_ok(d, BASE, PG);
	map_ok(d, BASE + PG, PG);
	map_ok(d, BASE + 3 * PG, 2 * PG);
	assert_int_equal(iodma_domain_add_listener(d, &rec_ops, &r, &l), 0);
	r.n = 0;
	iodma_domain_destroy(d);
	assert_int_equal(r.n, 3);
	for (int i = 0; i < 3; i++)
		assert_false(r.log[i].map);
	assert_int_equal(r.log[1].ev.iova, BASE + PG);
	assert_int_equal(r.log[2].ev.len, 2 * PG);
}

/* ---- fault injection ----------------------------------------------------- */

static void test_backend_map_fault_leaves_domain_unchanged(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct recorder r = { .n = 0 };
	struct iodma_listener *l;
	struct snap s;

	assert_int_equal(iodma_domain_add_listener(d, &rec_ops, &r, &l), 0);
	map_ok(d, BASE, PG);
	take_snap(d, &s);
	r.n = 0;
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_MAP, 1, -EIO), 0);
	assert_int_equal(iodma_domain_map(d, BASE + PG, 4 * PG, VA(0), IODMA_PERM_RW), -EIO);
	assert_snap_equal(d, &s);
	assert_int_equal(r.n, 0);
	/* Fires once; the 2nd-call variant skips one. */
	map_ok(d, BASE + PG, PG);
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_MAP, 2, -EFAULT), 0);
	map_ok(d, BASE + 2 * PG, PG);
	assert_int_equal(iodma_domain_map(d, BASE + 3 * PG, PG, VA(0), IODMA_PERM_RW), -EFAULT);
	map_ok(d, BASE + 3 * PG, PG);
	/* Disarm. */
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_MAP, 1, -EIO), 0);
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_MAP, 0, -EIO), 0);
	map_ok(d, BASE + 4 * PG, PG);
	iodma_domain_destroy(d);
}

static void test_backend_unmap_fault_leaves_domain_unchanged(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct recorder r = { .n = 0 };
	struct iodma_listener *l;
	struct snap s;
	uint64_t u = 5;

	map_ok(d, BASE, PG);
	map_ok(d, BASE + 2 * PG, PG);
	map_ok(d, BASE + 4 * PG, PG);
	assert_int_equal(iodma_domain_add_listener(d, &rec_ops, &r, &l), 0);
	take_snap(d, &s);
	r.n = 0;
	/* strict, single run */
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_UNMAP, 1, -EIO), 0);
	assert_int_equal(iodma_domain_unmap(d, BASE, PG), -EIO);
	assert_snap_equal(d, &s);
	/* gaps, the third run fails: the first two are re-mapped */
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_UNMAP, 3, -EIO), 0);
	assert_int_equal(iodma_domain_unmap_gaps(d, BASE, 8 * PG, &u), -EIO);
	assert_int_equal(u, 5);
	assert_snap_equal(d, &s);
	/* unmap_all */
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_UNMAP, 1, -EIO), 0);
	assert_int_equal(iodma_domain_unmap_all(d, &u), -EIO);
	assert_snap_equal(d, &s);
	assert_int_equal(r.n, 0);
	/* And afterwards the books and the backend still agree. */
	assert_int_equal(iodma_domain_unmap_gaps(d, BASE, 8 * PG, &u), 0);
	assert_int_equal(u, 3 * PG);
	assert_int_equal(r.n, 3);
	take_snap(d, &s);
	assert_int_equal(s.avail, 65535);
	iodma_domain_destroy(d);
}

static void test_soft_inject_fault_rejects_bad_args(void **state)
{
	struct iodma_domain *d = mkdomain(), *w;

	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_MAP, 1, 0), -EINVAL);
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_MAP, 1, 5), -EINVAL);
	assert_int_equal(iodma_soft_inject_fault(d, (enum iodma_soft_fault_op)7, 1, -EIO), -EINVAL);
	assert_int_equal(iodma_soft_inject_fault(NULL, IODMA_SOFT_FAULT_MAP, 1, -EIO), -EINVAL);
	w = mkdomain_opts(&wrap_ops, NULL, NULL);
	assert_int_equal(iodma_soft_inject_fault(w, IODMA_SOFT_FAULT_MAP, 1, -EIO), -EINVAL);
	iodma_domain_destroy(w);
	map_ok(d, BASE, PG); /* nothing was armed */
	iodma_domain_destroy(d);
}

static void test_map_fail_nth_sweep(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct recorder r = { .n = 0 };
	struct iodma_listener *l;
	struct snap s;
	unsigned int n;
	int err;

	assert_int_equal(iodma_domain_add_listener(d, &rec_ops, &r, &l), 0);
	/* Enough mappings that the table (and the soft book) must split. */
	for (uint64_t i = 0; i < 40; i++) {
		for (n = 1;; n++) {
			take_snap(d, &s);
			r.n = 0;
			iodma_test_fail_alloc(n);
			err = iodma_domain_map(d, BASE + i * 2 * PG, PG, VA(0), IODMA_PERM_RW);
			iodma_test_fail_alloc(0);
			if (!err)
				break;
			assert_int_equal(err, -ENOMEM);
			assert_int_equal(r.n, 0);
			assert_snap_equal(d, &s);
		}
		assert_int_equal(r.n, 1);
	}
	assert_int_equal(iodma_domain_nr_mappings(d), 40);
	/* Unmap never allocates. */
	iodma_test_fail_alloc(1);
	assert_int_equal(iodma_domain_unmap_all(d, NULL), 0);
	iodma_test_fail_alloc(0);
	iodma_domain_destroy(d);
}

/* ---- fd, GPA, two stages -------------------------------------------------- */

static void test_map_fd_events_carry_fd_offset_va(void **state)
{
	struct iodma_domain *d = mkdomain(), *w;
	struct recorder r = { .n = 0 };
	struct iodma_listener *l;
	struct map_lookup ml;

	assert_int_equal(iodma_domain_add_listener(d, &rec_ops, &r, &l), 0);
	assert_int_equal(iodma_domain_map_fd(d, BASE, 2 * PG, VA(0x4000), 9, 0x10000, IODMA_PERM_WRITE), 0);
	assert_int_equal(r.log[0].ev.fd, 9);
	assert_int_equal(r.log[0].ev.offset, 0x10000);
	assert_ptr_equal(r.log[0].ev.va, VA(0x4000));
	assert_int_equal(r.log[0].ev.perm, IODMA_PERM_WRITE);
	/* fd only: the soft IOMMU can take it (IODMA_CAP_MAP_FD). */
	assert_int_equal(iodma_domain_map_fd(d, BASE + 4 * PG, PG, NULL, 9, 0, IODMA_PERM_READ), 0);
	assert_null(r.log[1].ev.va);
	assert_int_equal(r.log[1].ev.fd, 9);
	assert_int_equal(domain_lookup(d, BASE + 4 * PG + 5, &ml), 0);
	assert_true(ml.rec.flags & MAP_F_NO_VA);
	assert_int_equal(ml.iova, BASE + 4 * PG);
	assert_int_equal(domain_lookup(d, BASE + PG + 100, &ml), 0);
	assert_int_equal(ml.rec.target, (uintptr_t)VA(0x4000));
	assert_int_equal(ml.rec.fd, 9);
	assert_int_equal(domain_lookup(d, BASE + 2 * PG, &ml), -ENOENT);
	assert_int_equal(domain_lookup(d, BASE - 1, &ml), -ENOENT);
	iodma_domain_destroy(d);

	/* A backend without IODMA_CAP_MAP_FD refuses fd-only maps. */
	memset(&wrap, 0, sizeof(wrap));
	wrap.clear_flags = IODMA_CAP_MAP_FD;
	w = mkdomain_opts(&wrap_ops, NULL, NULL);
	assert_int_equal(iodma_domain_map_fd(w, BASE, PG, NULL, 9, 0, IODMA_PERM_READ), -EOPNOTSUPP);
	assert_int_equal(iodma_domain_nr_mappings(w), 0);
	assert_int_equal(wrap.map_calls, 0);
	assert_int_equal(iodma_domain_map_fd(w, BASE, PG, VA(0), 9, 0, IODMA_PERM_READ), 0);
	iodma_domain_destroy(w);
}

static void test_map_gpa_events_carry_region_fd_offset_va(void **state)
{
	struct iodma_memory *m;
	struct iodma_domain *d;
	struct recorder r = { .n = 0 };
	struct iodma_listener *l;
	void *va0 = NULL;
	char host[4 * 4096] __attribute__((aligned(4096)));
	struct iodma_region_info ri;

	assert_int_equal(iodma_memory_create(NULL, &m), 0);
	assert_int_equal(iodma_memory_add_region(m, 0x100000, 16 * PG, 0, &va0), 0);
	assert_int_equal(iodma_memory_find(m, 0x100000, &ri), 0);
	assert_int_equal(iodma_memory_add_region_host(m, 0x100000 + 16 * PG, 4 * PG, host, -1, 0), 0);
	d = mkdomain_opts(NULL, NULL, m);
	assert_int_equal(iodma_domain_add_listener(d, &rec_ops, &r, &l), 0);
	/* map on a two-stage domain is refused; map_gpa elsewhere too */
	assert_int_equal(iodma_domain_map(d, BASE, PG, VA(0), IODMA_PERM_RW), -EINVAL);
	assert_int_equal(iodma_domain_map_fd(d, BASE, PG, VA(0), 3, 0, IODMA_PERM_RW), -EINVAL);
	/* inside the memfd region */
	assert_int_equal(iodma_domain_map_gpa(d, BASE, 2 * PG, 0x100000 + 3 * PG, IODMA_PERM_RW), 0);
	assert_int_equal(r.n, 1);
	assert_ptr_equal(r.log[0].ev.va, (char *)va0 + 3 * PG);
	assert_int_equal(r.log[0].ev.gpa, 0x100000 + 3 * PG);
	assert_int_equal(r.log[0].ev.fd, ri.fd);
	assert_true(ri.fd >= 0);
	assert_int_equal(r.log[0].ev.offset, ri.offset + 3 * PG);
	/* inside the caller's anonymous region: va, no fd */
	assert_int_equal(iodma_domain_map_gpa(d, BASE + 4 * PG, PG, 0x100000 + 17 * PG, IODMA_PERM_READ), 0);
	assert_ptr_equal(r.log[1].ev.va, host + PG);
	assert_int_equal(r.log[1].ev.fd, -1);
	/* across the two regions, and unbacked: no va, no fd */
	assert_int_equal(iodma_domain_map_gpa(d, BASE + 8 * PG, 2 * PG, 0x100000 + 15 * PG, IODMA_PERM_READ), 0);
	assert_null(r.log[2].ev.va);
	assert_int_equal(r.log[2].ev.fd, -1);
	assert_int_equal(r.log[2].ev.gpa, 0x100000 + 15 * PG);
	assert_int_equal(iodma_domain_map_gpa(d, BASE + 12 * PG, PG, 0x40000000, IODMA_PERM_READ), 0);
	assert_null(r.log[3].ev.va);
	/* misaligned / overflowing gpa */
	assert_int_equal(iodma_domain_map_gpa(d, BASE + 16 * PG, PG, 0x100001, IODMA_PERM_READ), -EINVAL);
	assert_int_equal(iodma_domain_map_gpa(d, BASE + 16 * PG, 2 * PG, UINT64_MAX - PG + 1, IODMA_PERM_READ), -EINVAL);
	/* set_enabled works with memory */
	assert_int_equal(iodma_domain_set_enabled(d, false), 0);
	assert_false(atomic_load(&d->enabled));
	assert_int_equal(iodma_domain_set_enabled(d, true), 0);
	assert_true(atomic_load(&d->enabled));
	iodma_domain_destroy(d);
	iodma_memory_destroy(m);

	/* map_gpa needs a memory */
	d = mkdomain();
	assert_int_equal(iodma_domain_map_gpa(d, BASE, PG, 0x1000, IODMA_PERM_READ), -EINVAL);
	assert_int_equal(iodma_domain_set_enabled(d, false), -EINVAL);
	assert_int_equal(iodma_domain_set_enabled(d, true), 0);
	iodma_domain_destroy(d);
}

/* ---- IOVA allocation ------------------------------------------------------- */

static void test_iova_alloc_avoids_mappings_and_reserved(void **state)
{
	struct iodma_iova_range range = { 0x100000, 64 * PG };
	struct iodma_iova_range res = { 0x100000 + 40 * PG, 8 * PG };
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_domain *d = NULL;
	uint64_t got[64], iova;
	int n = 0;

	so.ranges = &range;
	so.nr_ranges = 1;
	o.backend_config = &so;
	o.reserved = &res;
	o.nr_reserved = 1;
	assert_int_equal(iodma_domain_create(&o, &d), 0);
	map_ok(d, 0x100000 + 60 * PG, 4 * PG);  /* the top */
	map_ok(d, 0x100000 + 10 * PG, 2 * PG);
	while (iodma_iova_alloc(d, PG, 1, UINT64_MAX, &iova) == 0) {
		assert_true(n < 64);
		got[n++] = iova;
		assert_true(range_contains(range.iova, range.len, iova, PG));
		assert_false(ranges_overlap(iova, PG, res.iova, res.len));
		assert_false(ranges_overlap(iova, PG, 0x100000 + 60 * PG, 4 * PG));
		assert_false(ranges_overlap(iova, PG, 0x100000 + 10 * PG, 2 * PG));
	}
	assert_int_equal(n, 64 - 8 - 4 - 2);
	/* A mapping over an allocation's space is fine; its IOVAs come back. */
	map_ok(d, got[0], PG);
	assert_int_equal(iodma_domain_unmap(d, got[0], PG), 0);
	for (int i = 0; i < n; i++)
		assert_int_equal(iodma_iova_free(d, got[i], PG), 0);
	assert_int_equal(iodma_iova_free(d, got[0], PG), -ENOENT);
	assert_int_equal(iodma_iova_free(d, got[0], 0), -ENOENT);
	/* Below a limit, with alignment raised and len rounded. */
	assert_int_equal(iodma_iova_alloc(d, 100, 16 * PG, 0x100000 + 32 * PG - 1, &iova), 0);
	assert_true(is_aligned(iova, 16 * PG));
	assert_true(iova + PG - 1 <= 0x100000 + 32 * PG - 1);
	assert_int_equal(iodma_iova_free(d, iova, 100), 0);
	assert_int_equal(iodma_iova_alloc(d, 0, PG, UINT64_MAX, &iova), -EINVAL);
	assert_int_equal(iodma_iova_alloc(d, PG, 3 * PG, UINT64_MAX, &iova), -EINVAL);
	assert_int_equal(iodma_iova_alloc(d, 128 * PG, PG, UINT64_MAX, &iova), -ENOMEM);
	iodma_domain_destroy(d);
}

static void test_map_inside_allocation_ok_straddling_eexist(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct snap s;
	uint64_t iova;

	assert_int_equal(iodma_iova_alloc(d, 8 * PG, PG, 0xffffffff, &iova), 0);
	assert_true(iova + 8 * PG - 1 <= 0xffffffff);
	take_snap(d, &s);
	/* straddling either edge of the allocation */
	assert_int_equal(iodma_domain_map(d, iova - PG, 2 * PG, VA(0), IODMA_PERM_RW), -EEXIST);
	assert_int_equal(iodma_domain_map(d, iova + 7 * PG, 2 * PG, VA(0), IODMA_PERM_RW), -EEXIST);
	assert_snap_equal(d, &s);
	/* inside: allowed, claims nothing */
	map_ok(d, iova, 4 * PG);
	map_ok(d, iova + 4 * PG, 4 * PG);
	{
		struct map_lookup ml;

		assert_int_equal(domain_lookup(d, iova, &ml), 0);
		assert_false(ml.rec.flags & MAP_F_CLAIMED);
	}
	assert_int_equal(iodma_domain_unmap(d, iova, 8 * PG), 0);
	assert_int_equal(iodma_iova_free(d, iova, 8 * PG), 0);
	/* A fixed map elsewhere claims, and the claim goes with the unmap. */
	take_snap(d, &s);
	map_ok(d, BASE, 2 * PG);
	{
		struct iova_alloc_stats st;

		iova_alloc_get_stats(d->iova, &st);
		assert_int_equal(st.claims, s.st.claims + 1);
	}
	assert_int_equal(iodma_domain_unmap(d, BASE, 2 * PG), 0);
	assert_snap_equal(d, &s);
	iodma_domain_destroy(d);
}

/* True when no live mapping overlaps [iova, iova + len). */
static bool clear_of_mappings(struct iodma_domain *d, uint64_t iova, uint64_t len)
{
	struct map_lookup ml;

	for (uint64_t off = 0; off < len; off += PG)
		if (domain_lookup(d, iova + off, &ml) == 0)
			return false;
	return true;
}

/*
 * No IOVA space is handed out twice: an allocation with a live mapping
 * inside cannot be freed (-EBUSY, still allocated), so the next allocation
 * never lands on the mapping.  (Differential fuzzing found alloc X, map X,
 * free X = 0, alloc = X again over the live mapping.)
 */
static void test_iova_free_refused_while_a_mapping_lies_inside(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct iova_alloc_stats st;
	uint64_t x, y, z;
	int err;

	/* One page: the rcache size classes, where the bug lived. */
	assert_int_equal(iodma_iova_alloc(d, PG, PG, UINT64_MAX, &x), 0);
	map_ok(d, x, PG);
	err = iodma_iova_free(d, x, PG);
	assert_int_equal(iodma_iova_alloc(d, PG, PG, UINT64_MAX, &y), 0);
	assert_true(clear_of_mappings(d, y, PG));
	assert_int_equal(err, -EBUSY);
	iova_alloc_get_stats(d->iova, &st);
	assert_int_equal(st.live, 2);
	/* Unmapped, it frees (and not twice). */
	assert_int_equal(iodma_domain_unmap(d, x, PG), 0);
	assert_int_equal(iodma_iova_free(d, x, PG), 0);
	assert_int_equal(iodma_iova_free(d, x, PG), -ENOENT);
	assert_int_equal(iodma_iova_free(d, y, PG), 0);

	/* Several mappings inside one allocation: busy until the last goes. */
	assert_int_equal(iodma_iova_alloc(d, 8 * PG, PG, UINT64_MAX, &x), 0);
	map_ok(d, x, 2 * PG);
	map_ok(d, x + 4 * PG, PG);
	assert_int_equal(iodma_iova_free(d, x, 8 * PG), -EBUSY);
	assert_int_equal(iodma_domain_unmap(d, x, 2 * PG), 0);
	assert_int_equal(iodma_iova_free(d, x, 8 * PG), -EBUSY);
	/* A map refused by the backend adds nothing to the count. */
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_MAP, 1, -EIO), 0);
	assert_int_equal(iodma_domain_map(d, x + 6 * PG, PG, VA(0), IODMA_PERM_RW), -EIO);
	assert_int_equal(iodma_domain_unmap_all(d, NULL), 0);
	assert_int_equal(iodma_iova_free(d, x, 8 * PG), 0);

	/* Beyond the rcache sizes (tree path), and a mapping left live by a
	 * failed undo (-EUCLEAN) keeps its allocation busy too. */
	{
		struct recorder r = { .n = 0 };
		struct iodma_listener *l;

		assert_int_equal(iodma_iova_alloc(d, 64 * PG, PG, UINT64_MAX, &z), 0);
		assert_int_equal(iodma_domain_add_listener(d, &rec_ops, &r, &l), 0);
		r.reject_nth = 1;
		r.reject_err = -EPERM;
		assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_UNMAP, 1, -EIO), 0);
		assert_int_equal(iodma_domain_map(d, z, 64 * PG, VA(0), IODMA_PERM_RW), -EUCLEAN);
		assert_int_equal(iodma_iova_free(d, z, 64 * PG), -EBUSY);
		assert_int_equal(iodma_domain_unmap(d, z, 64 * PG), 0);
		assert_int_equal(iodma_iova_free(d, z, 64 * PG), 0);
		iodma_domain_remove_listener(d, l);
	}
	iova_alloc_get_stats(d->iova, &st);
	assert_int_equal(st.live, 0);
	assert_int_equal(iova_alloc_check(d->iova), 0);
	iodma_domain_destroy(d);
}

/* A map may lie inside one allocation, not across two.  Only possible once
 * refresh_caps merged two touching valid ranges into one (the allocator
 * keeps serving them apart, so each holds one of the allocations). */
static void test_map_across_two_allocations_eexist(void **state)
{
	struct iodma_iova_range rr[2] = { { 0x100000, 4 * PG }, { 0x100000 + 4 * PG, 4 * PG } };
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_domain *d;
	struct snap s;
	uint64_t lo, hi;

	memset(&wrap, 0, sizeof(wrap));
	so.ranges = rr;
	so.nr_ranges = 2;
	d = mkdomain_opts(&wrap_ops, &so, NULL);
	/* Top-down: range 1 first, then range 0. */
	assert_int_equal(iodma_iova_alloc(d, 4 * PG, PG, UINT64_MAX, &hi), 0);
	assert_int_equal(iodma_iova_alloc(d, 4 * PG, PG, UINT64_MAX, &lo), 0);
	assert_int_equal(hi, 0x100000 + 4 * PG);
	assert_int_equal(lo, 0x100000);
	/* Before the merge no valid range holds the span at all. */
	assert_int_equal(iodma_domain_map(d, lo + 2 * PG, 4 * PG, VA(0), IODMA_PERM_RW), -ERANGE);
	wrap.caps_merge = true;
	assert_int_equal(iodma_domain_refresh_caps(d), 0);
	take_snap(d, &s);
	assert_int_equal(iodma_domain_map(d, lo + 2 * PG, 4 * PG, VA(0), IODMA_PERM_RW), -EEXIST);
	assert_snap_equal(d, &s);
	/* Either one alone is fine, and both free once unmapped. */
	map_ok(d, lo + 2 * PG, 2 * PG);
	map_ok(d, hi, 2 * PG);
	assert_int_equal(iodma_iova_free(d, lo, 4 * PG), -EBUSY);
	assert_int_equal(iodma_domain_unmap_all(d, NULL), 0);
	assert_int_equal(iodma_iova_free(d, lo, 4 * PG), 0);
	assert_int_equal(iodma_iova_free(d, hi, 4 * PG), 0);
	assert_int_equal(iova_alloc_check(d->iova), 0);
	iodma_domain_destroy(d);
	memset(&wrap, 0, sizeof(wrap));
}

/* Threads each allocate, map inside, try to free while mapped, allocate
 * again: no allocation may ever overlap a live mapping. */
struct churn_ctx {
	struct iodma_domain *d;
	atomic_ulong over_live;   /* allocations that overlapped a mapping */
	atomic_ulong bad;         /* unexpected return codes */
};

static void *churn_thread(void *arg)
{
	struct churn_ctx *cx = arg;

	for (int k = 0; k < 2000; k++) {
		uint64_t len = (1ull << (k % 4)) * PG, x, y;
		int ferr;

		if (iodma_iova_alloc(cx->d, len, PG, UINT64_MAX, &x)) {
			atomic_fetch_add(&cx->bad, 1);
			continue;
		}
		if (!clear_of_mappings(cx->d, x, len))
			atomic_fetch_add(&cx->over_live, 1);
		if (iodma_domain_map(cx->d, x, len, VA(0), IODMA_PERM_RW)) {
			atomic_fetch_add(&cx->bad, 1);
			continue;
		}
		ferr = iodma_iova_free(cx->d, x, len);
		if (iodma_iova_alloc(cx->d, len, PG, UINT64_MAX, &y) == 0) {
			if (!clear_of_mappings(cx->d, y, len))
				atomic_fetch_add(&cx->over_live, 1);
			if (iodma_iova_free(cx->d, y, len))
				atomic_fetch_add(&cx->bad, 1);
		}
		if (iodma_domain_unmap(cx->d, x, len))
			atomic_fetch_add(&cx->bad, 1);
		if (ferr == -EBUSY && iodma_iova_free(cx->d, x, len))
			atomic_fetch_add(&cx->bad, 1);
	}
	return NULL;
}

static void test_iova_never_handed_out_over_a_live_mapping_concurrently(void **state)
{
	struct churn_ctx cx = { .d = mkdomain() };
	pthread_t th[4];

	atomic_init(&cx.over_live, 0);
	atomic_init(&cx.bad, 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&th[i], NULL, churn_thread, &cx), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(atomic_load(&cx.over_live), 0);
	assert_int_equal(atomic_load(&cx.bad), 0);
	assert_int_equal(iodma_domain_nr_mappings(cx.d), 0);
	assert_int_equal(iova_alloc_check(cx.d->iova), 0);
	iodma_domain_destroy(cx.d);
}

/* Fixed maps claim allocator space only once the allocator is used: the
 * first allocation claims every live mapping, so it never lands on one. */
static void test_first_allocation_claims_existing_fixed_maps(void **state)
{
	struct iodma_iova_range rr = { 0x100000, 8 * PG };
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_domain *d;
	struct map_lookup ml;
	struct iova_alloc_stats st;
	uint64_t iova;

	so.ranges = &rr;
	so.nr_ranges = 1;
	d = mkdomain_opts(NULL, &so, NULL);
	/* The top four pages (where top-down allocation starts) are mapped. */
	map_ok(d, 0x100000 + 4 * PG, 2 * PG);
	map_ok(d, 0x100000 + 6 * PG, 2 * PG);
	assert_int_equal(domain_lookup(d, 0x100000 + 4 * PG, &ml), 0);
	assert_false(ml.rec.flags & MAP_F_CLAIMED);
	iova_alloc_get_stats(d->iova, &st);
	assert_int_equal(st.claims, 0);

	/* fail-nth over the first allocation: -ENOMEM leaves no claim. */
	for (unsigned long n = 1;; n++) {
		int err;

		iodma_test_fail_alloc(n);
		err = iodma_iova_alloc(d, 4 * PG, PG, UINT64_MAX, &iova);
		iodma_test_fail_alloc(0);
		if (!err)
			break;
		assert_int_equal(err, -ENOMEM);
		iova_alloc_get_stats(d->iova, &st);
		assert_int_equal(st.claims, 0);
		assert_int_equal(st.live, 0);
		assert_int_equal(domain_lookup(d, 0x100000 + 6 * PG, &ml), 0);
		assert_false(ml.rec.flags & MAP_F_CLAIMED);
		assert_int_equal(iova_alloc_check(d->iova), 0);
	}
	assert_int_equal(iova, 0x100000); /* below the two mappings */
	iova_alloc_get_stats(d->iova, &st);
	assert_int_equal(st.claims, 2);
	assert_int_equal(domain_lookup(d, 0x100000 + 4 * PG, &ml), 0);
	assert_true(ml.rec.flags & MAP_F_CLAIMED);
	assert_int_equal(iodma_iova_alloc(d, PG, PG, UINT64_MAX, &iova), -ENOMEM);
	/* Unmapping releases the claims the first allocation made. */
	assert_int_equal(iodma_domain_unmap(d, 0x100000 + 4 * PG, 4 * PG), 0);
	iova_alloc_get_stats(d->iova, &st);
	assert_int_equal(st.claims, 0);
	assert_int_equal(iodma_iova_alloc(d, 4 * PG, PG, UINT64_MAX, &iova), 0);
	assert_int_equal(iova, 0x100000 + 4 * PG);
	assert_int_equal(iova_alloc_check(d->iova), 0);
	iodma_domain_destroy(d);
}

/* ---- refresh_caps, for_each --------------------------------------------- */

static void test_refresh_caps_compatible_only(void **state)
{
	struct iodma_domain *d;
	struct iodma_caps c = IODMA_STRUCT_INIT(struct iodma_caps);

	struct iodma_iova_range rr[2] = { { 0x100000, 0x100000 },
					  { 0x400000, 0x100000 } };
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);

	so.ranges = rr;
	so.nr_ranges = 2;
	memset(&wrap, 0, sizeof(wrap));
	d = mkdomain_opts(&wrap_ops, &so, NULL);
	map_ok(d, BASE, PG);
	assert_int_equal(iodma_domain_refresh_caps(d), 0);
	wrap.caps_alignment = 2 * PG;
	assert_int_equal(iodma_domain_refresh_caps(d), -EBUSY);
	wrap.caps_alignment = 3 * PG;
	assert_int_equal(iodma_domain_refresh_caps(d), -EINVAL);
	wrap.caps_alignment = 0;
	wrap.clear_flags = IODMA_CAP_MAP_FD;
	assert_int_equal(iodma_domain_refresh_caps(d), 0);
	assert_int_equal(iodma_domain_get_caps(d, &c), 0);
	assert_false(c.flags & IODMA_CAP_MAP_FD);
	iodma_domain_destroy(d);
}

/* iommufd re-reads its ranges after an attach and they may shrink: the
 * lost space leaves the allocator for good, unless something lives there. */
static void test_refresh_caps_shrink_takes_lost_space_from_allocator(void **state)
{
	struct iodma_iova_range rr[2] = { { 0x100000, 0x100000 },
					  { 0x400000, 0x100000 } };
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_domain *d;
	struct iodma_caps c = IODMA_STRUCT_INIT(struct iodma_caps);
	uint64_t iova;

	so.ranges = rr;
	so.nr_ranges = 2;
	memset(&wrap, 0, sizeof(wrap));
	d = mkdomain_opts(&wrap_ops, &so, NULL);

	/* An allocation in the range that goes away blocks the refresh. */
	assert_int_equal(iodma_iova_alloc(d, PG, PG, UINT64_MAX, &iova), 0);
	assert_true(iova >= 0x400000); /* top-down */
	wrap.caps_shrink = true;
	assert_int_equal(iodma_domain_refresh_caps(d), -EBUSY);
	assert_int_equal(iodma_domain_get_caps(d, &c), 0);
	assert_int_equal(c.nr_ranges, 2); /* old caps kept */
	assert_int_equal(iodma_iova_free(d, iova, PG), 0);

	/* So does a live mapping there. */
	map_ok(d, 0x400000, PG);
	assert_int_equal(iodma_domain_refresh_caps(d), -EBUSY);
	assert_int_equal(iodma_domain_unmap(d, 0x400000, PG), 0);

	/* Empty: accepted; the allocator stops serving the lost range. */
	assert_int_equal(iodma_domain_refresh_caps(d), 0);
	assert_int_equal(iodma_domain_get_caps(d, &c), 0);
	assert_int_equal(c.nr_ranges, 1);
	assert_int_equal(iova_alloc_check(d->iova), 0);
	assert_int_equal(iodma_iova_alloc(d, PG, PG, UINT64_MAX, &iova), 0);
	assert_true(iova >= 0x100000 && iova < 0x200000);
	assert_int_equal(iodma_iova_free(d, iova, PG), 0);
	assert_int_equal(iodma_iova_alloc(d, 0x100000, PG, UINT64_MAX, &iova), 0);
	assert_int_equal(iodma_iova_alloc(d, PG, PG, UINT64_MAX, &iova), -ENOMEM);
	assert_int_equal(iodma_domain_map(d, 0x400000, PG, VA(0), IODMA_PERM_RW), -ERANGE);
	/* Refreshing again with the same caps changes nothing. */
	assert_int_equal(iodma_domain_refresh_caps(d), 0);
	assert_int_equal(iova_alloc_check(d->iova), 0);
	iodma_domain_destroy(d);
}

/* The allocator claims in granules of the creation-time alignment: a
 * refresh may raise the alignment but not lower it below that. */
static void test_refresh_caps_alignment_below_creation_ebusy(void **state)
{
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_domain *d;
	struct iodma_caps c = IODMA_STRUCT_INIT(struct iodma_caps);

	struct iodma_iova_range rr = { 0x100000, 0x100000 }; /* 16 KiB aligned */

	(void)state;
	memset(&wrap, 0, sizeof(wrap));
	so.alignment = 2 * PG;
	so.ranges = &rr;
	so.nr_ranges = 1;
	d = mkdomain_opts(&wrap_ops, &so, NULL);
	wrap.caps_alignment = PG;
	assert_int_equal(iodma_domain_refresh_caps(d), -EBUSY);
	assert_int_equal(iodma_domain_alignment(d), 2 * PG);
	wrap.caps_alignment = 4 * PG;
	assert_int_equal(iodma_domain_refresh_caps(d), 0);
	assert_int_equal(iodma_domain_get_caps(d, &c), 0);
	assert_int_equal(c.alignment, 4 * PG);
	assert_int_equal(iodma_domain_alignment(d), 4 * PG);
	iodma_domain_destroy(d);
}

/* ---- young records (domain_priv.h) ---------------------------------------- */

/* Counts of single-page mappings around DOMAIN_YOUNG_MAX: all young, the
 * array full, and more (the map that finds it full moves them into the
 * table first). */
static const unsigned int young_counts[] = {
	1, DOMAIN_YOUNG_MAX - 1, DOMAIN_YOUNG_MAX, DOMAIN_YOUNG_MAX + 1,
	3 * DOMAIN_YOUNG_MAX + 2,
};

/* A domain with @k single-page mappings at BASE + 2 i pages, made by maps
 * alone: no reader of the book ran in between, so the latest ones are
 * young.  @r (may be NULL) listens from the start. */
static struct iodma_domain *young_domain(unsigned int k, struct recorder *r)
{
	struct iodma_domain *d = mkdomain();
	struct iodma_listener *l;

	if (r)
		assert_int_equal(iodma_domain_add_listener(d, &rec_ops, r, &l), 0);
	for (unsigned int i = 0; i < k; i++)
		map_ok(d, BASE + 2 * i * PG, PG);
	assert_true(d->nr_young > 0 && d->nr_young <= DOMAIN_YOUNG_MAX);
	return d;
}

static int count_cb(void *arg, const struct iodma_map_event *ev)
{
	(*(unsigned int *)arg)++;
	(void)ev;
	return 0;
}

/* The end of a young-record test: @n mappings in the book and in the
 * backend, a sound table; then destroy @d. */
static void young_end(struct iodma_domain *d, unsigned int n)
{
	unsigned int seen = 0;

	assert_int_equal(iodma_domain_for_each_mapping(d, 0, UINT64_MAX, count_cb,
						       &seen), 0);
	assert_int_equal(seen, n);
	assert_int_equal(backend_live(d), n);
	assert_int_equal(btree_check(&d->table), 0);
	iodma_domain_destroy(d);
}

/* Every reader of the book sees the young records: the mapping walk, a
 * listener's replay, the table lookup, the first IOVA allocation (which
 * claims every live mapping), destroy (one unmap event each), unmap_gaps
 * and unmap_all.  (refresh_caps: test_refresh_caps_compatible_only's
 * mapping is young.) */
static void test_young_records_seen_by_every_reader(void **state)
{
	for (size_t c = 0; c < IODMA_ARRAY_SIZE(young_counts); c++) {
		unsigned int k = young_counts[c], seen = 0;
		struct recorder r = { .n = 0 };
		struct iodma_listener *l;
		struct iodma_domain *d;
		struct map_lookup ml;
		uint64_t iova, u = 0;

		d = young_domain(k, NULL);
		assert_int_equal(iodma_domain_for_each_mapping(d, 0, UINT64_MAX,
							       count_cb, &seen), 0);
		assert_int_equal(seen, k);
		assert_int_equal(d->nr_young, 0);
		assert_int_equal(btree_count(&d->table), k);
		assert_int_equal(btree_check(&d->table), 0);
		iodma_domain_destroy(d);

		d = young_domain(k, NULL);
		assert_int_equal(iodma_domain_add_listener(d, &rec_ops, &r, &l), 0);
		assert_int_equal(r.n, k);
		assert_int_equal(rec_net_bytes(&r), k * PG);
		iodma_domain_destroy(d);

		d = young_domain(k, NULL);
		for (unsigned int i = 0; i < k; i++) {
			assert_int_equal(domain_lookup(d, BASE + 2 * i * PG + 8, &ml), 0);
			assert_int_equal(ml.iova, BASE + 2 * i * PG);
			assert_int_equal(ml.rec.len, PG);
		}
		iodma_domain_destroy(d);

		d = young_domain(k, NULL);
		assert_int_equal(iodma_iova_alloc(d, PG, PG, UINT64_MAX, &iova), 0);
		for (unsigned int i = 0; i < k; i++) {
			assert_int_equal(domain_lookup(d, BASE + 2 * i * PG, &ml), 0);
			assert_true(ml.rec.flags & MAP_F_CLAIMED);
		}
		assert_true(clear_of_mappings(d, iova, PG));
		iodma_domain_destroy(d);

		memset(&r, 0, sizeof(r));
		d = young_domain(k, &r);
		assert_int_equal(r.n, k);
		iodma_domain_destroy(d);
		assert_int_equal(r.n, 2 * k);
		assert_int_equal(rec_net_bytes(&r), 0);

		d = young_domain(k, NULL);
		assert_int_equal(iodma_domain_unmap_gaps(d, BASE, 2 * k * PG, &u), 0);
		assert_int_equal(u, k * PG);
		assert_int_equal(iodma_domain_nr_mappings(d), 0);
		assert_int_equal(backend_live(d), 0);
		iodma_domain_destroy(d);

		d = young_domain(k, NULL);
		assert_int_equal(iodma_domain_unmap_all(d, &u), 0);
		assert_int_equal(u, k * PG);
		assert_int_equal(backend_live(d), 0);
		assert_false(xlate_mapped(d, BASE, IODMA_PERM_READ));
		iodma_domain_destroy(d);
	}
}

/* A map's overlap check with young records is the page table's, and it
 * comes before the mapping limit, as the table's did (-EEXIST, not
 * -ENOSPC); strict unmaps that are not exactly one young record go to the
 * table and keep its rules. */
static void test_young_overlap_limit_and_strict_rules(void **state)
{
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_domain *d;
	uint32_t avail;

	so.max_mappings = 2;
	d = mkdomain_opts(NULL, &so, NULL);
	map_ok(d, BASE, 2 * PG);
	map_ok(d, BASE + 2 * PG, PG);
	assert_int_equal(d->nr_young, 2);
	assert_int_equal(iodma_domain_map(d, BASE + PG, PG, VA(0), IODMA_PERM_RW), -EEXIST);
	assert_int_equal(iodma_domain_map(d, BASE - PG, 2 * PG, VA(0), IODMA_PERM_RW), -EEXIST);
	assert_int_equal(iodma_domain_map(d, BASE + 2 * PG, 4 * PG, VA(0), IODMA_PERM_RW), -EEXIST);
	assert_int_equal(iodma_domain_map(d, BASE + 8 * PG, PG, VA(0), IODMA_PERM_RW), -ENOSPC);
	assert_int_equal(d->nr_young, 2);
	assert_int_equal(iodma_domain_nr_mappings(d), 2);
	/* Part of a young record, and one reaching past the range: -EINVAL. */
	assert_int_equal(iodma_domain_unmap(d, BASE, PG), -EINVAL);
	assert_int_equal(iodma_domain_unmap(d, BASE + PG, 2 * PG), -EINVAL);
	assert_int_equal(iodma_domain_unmap(d, BASE, 4 * PG), -EINVAL);
	assert_int_equal(iodma_domain_nr_mappings(d), 2);
	assert_true(xlate_mapped(d, BASE + PG, IODMA_PERM_RW));
	/* Two contiguous young records, exactly: fine. */
	assert_int_equal(iodma_domain_unmap(d, BASE, 3 * PG), 0);
	assert_int_equal(iodma_domain_nr_mappings(d), 0);
	assert_int_equal(d->ops->avail_mappings(d->bpriv, &avail), 0);
	assert_int_equal(avail, 2); /* the soft IOMMU holds none either */
	map_ok(d, BASE + PG, PG);
	iodma_domain_destroy(d);
}

/* The backend refuses the unmap of a young record: it stays mapped,
 * translatable and young, and the next unmap takes it. */
static void test_young_unmap_backend_fault_keeps_it(void **state)
{
	struct iodma_domain *d = mkdomain();

	map_ok(d, BASE, PG);
	map_ok(d, BASE + 4 * PG, PG);
	assert_int_equal(d->nr_young, 2);
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_UNMAP, 1, -EIO), 0);
	assert_int_equal(iodma_domain_unmap(d, BASE, PG), -EIO);
	assert_int_equal(d->nr_young, 2);
	assert_int_equal(iodma_domain_nr_mappings(d), 2);
	assert_int_equal(backend_live(d), 2);
	assert_true(xlate_mapped(d, BASE, IODMA_PERM_RW));
	assert_int_equal(iodma_domain_map(d, BASE, PG, VA(0), IODMA_PERM_RW), -EEXIST);
	assert_int_equal(iodma_domain_unmap(d, BASE, PG), 0);
	assert_false(xlate_mapped(d, BASE, IODMA_PERM_READ));
	assert_int_equal(iodma_domain_nr_mappings(d), 1);
	assert_int_equal(backend_live(d), 1);
	assert_int_equal(iodma_domain_unmap(d, BASE + 4 * PG, PG), 0);
	assert_int_equal(backend_live(d), 0);
	iodma_domain_destroy(d);
}

/* The exact unmap of a record of the table (an older mapping) leaves the
 * young records young: a strict guest's unmaps of its latest maps still
 * find them there (a settle on every table unmap moved them all). */
static void test_young_stay_across_a_table_unmap(void **state)
{
	const unsigned int k = DOMAIN_YOUNG_MAX + 3;
	struct iodma_domain *d = mkdomain();

	for (unsigned int i = 0; i < k; i++)
		map_ok(d, BASE + 2 * i * PG, PG);
	assert_int_equal(d->nr_young, 3);
	assert_int_equal(btree_count(&d->table), DOMAIN_YOUNG_MAX);
	assert_int_equal(iodma_domain_unmap(d, BASE, PG), 0);
	assert_int_equal(d->nr_young, 3);
	assert_int_equal(btree_count(&d->table), DOMAIN_YOUNG_MAX - 1);
	assert_false(xlate_mapped(d, BASE, IODMA_PERM_READ));
	assert_int_equal(iodma_domain_unmap(d, BASE + 2 * (k - 1) * PG, PG), 0);
	assert_int_equal(d->nr_young, 2);
	young_end(d, k - 2);
}

/* An unmap with gaps allowed that starts inside a young record (no
 * record of the table there) must not bisect it: -EINVAL and nothing
 * changed, found after the young records join the table. */
static void test_young_gaps_unmap_crossing_start_einval(void **state)
{
	struct iodma_domain *d = mkdomain();
	uint64_t u = 1;

	map_ok(d, BASE, 2 * PG);
	map_ok(d, BASE + 2 * PG, PG);
	assert_int_equal(d->nr_young, 2);
	assert_int_equal(iodma_domain_unmap_gaps(d, BASE + PG, 2 * PG, &u), -EINVAL);
	assert_int_equal(iodma_domain_nr_mappings(d), 2);
	assert_int_equal(backend_live(d), 2);
	assert_true(xlate_mapped(d, BASE + PG, IODMA_PERM_RW));
	assert_true(xlate_mapped(d, BASE + 2 * PG, IODMA_PERM_RW));
	assert_int_equal(iodma_domain_unmap_gaps(d, BASE, 3 * PG, &u), 0);
	assert_int_equal(u, 3 * PG);
	iodma_domain_destroy(d);
}

/* Fail-nth over maps with young records present and none of the book's
 * readers in between (take_snap would settle them): each failure is
 * -ENOMEM with nothing changed, including the maps that find the young
 * array full and move it into the table; unmaps of young records and of
 * table records allocate nothing. */
static void test_young_map_fail_nth_sweep(void **state)
{
	const unsigned int k = 3 * DOMAIN_YOUNG_MAX + 2;
	struct iodma_domain *d = mkdomain();
	unsigned int n;
	int err;

	for (unsigned int i = 0; i < k; i++) {
		uint64_t iova = BASE + 2 * i * PG;

		for (n = 1;; n++) {
			uint64_t nr = iodma_domain_nr_mappings(d);

			iodma_test_fail_alloc(n);
			err = iodma_domain_map(d, iova, PG, VA(0), IODMA_PERM_RW);
			iodma_test_fail_alloc(0);
			if (!err)
				break;
			assert_int_equal(err, -ENOMEM);
			assert_int_equal(iodma_domain_nr_mappings(d), nr);
			assert_int_equal(backend_live(d), nr);
			assert_false(xlate_mapped(d, iova, IODMA_PERM_READ));
		}
	}
	assert_int_equal(iodma_domain_nr_mappings(d), k);
	assert_int_equal(backend_live(d), k);
	/* Unmap the young ones and one from the table, allocating nothing. */
	iodma_test_fail_alloc(1);
	for (unsigned int i = k; i-- > k - 3;)
		assert_int_equal(iodma_domain_unmap(d, BASE + 2 * i * PG, PG), 0);
	assert_int_equal(iodma_domain_unmap(d, BASE, PG), 0);
	iodma_test_fail_alloc(0);
	young_end(d, k - 4);
}

static void test_queries_of_null_domain(void **state)
{
	struct iodma_caps c = IODMA_STRUCT_INIT(struct iodma_caps);

	(void)state;
	assert_int_equal(iodma_domain_get_caps(NULL, &c), -EINVAL);
	assert_int_equal(iodma_domain_alignment(NULL), 0);
	assert_int_equal(iodma_domain_max_mappings(NULL), 0);
	assert_int_equal(iodma_domain_nr_mappings(NULL), 0);
	assert_int_equal(iodma_domain_refresh_caps(NULL), -EINVAL);
}

static int stop_at_second(void *arg, const struct iodma_map_event *ev)
{
	int *n = arg;

	return ++*n == 2 ? 42 : 0;
}

static void test_for_each_mapping_visits_overlapping_in_order(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct snap s;
	int n = 0;

	map_ok(d, BASE, 4 * PG);
	map_ok(d, BASE + 8 * PG, PG);
	map_ok(d, BASE + 16 * PG, PG);
	memset(&s, 0, sizeof(s));
	/* unaligned range overlapping the first two partly */
	assert_int_equal(iodma_domain_for_each_mapping(d, BASE + 3 * PG + 5, 5 * PG, snap_cb, &s), 0);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.ev[0].iova, BASE);
	assert_int_equal(s.ev[1].iova, BASE + 8 * PG);
	assert_int_equal(iodma_domain_for_each_mapping(d, 0, UINT64_MAX, stop_at_second, &n), 42);
	assert_int_equal(n, 2);
	assert_int_equal(iodma_domain_for_each_mapping(d, 0, 0, snap_cb, &s), -EINVAL);
	iodma_domain_destroy(d);
}

/* ---- the soft backend on its own ------------------------------------------ */

static void test_soft_backend_behaves_like_type1(void **state)
{
	const struct iodma_backend_ops *ops = iodma_backend_soft();
	struct iodma_soft_opts so = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_map_event ev = { .va = VA(0), .fd = -1, .perm = IODMA_PERM_RW };
	uint64_t u = 0;
	uint32_t avail;
	void *p;

	so.max_mappings = 3;
	assert_int_equal(ops->version, IODMA_BACKEND_OPS_VERSION);
	assert_string_equal(ops->name, "soft");
	assert_int_equal(ops->open(&so, &p), 0);
	ev.iova = BASE;
	ev.len = 2 * PG;
	assert_int_equal(ops->map(p, &ev), 0);
	assert_int_equal(ops->map(p, &ev), -EEXIST);
	ev.iova = BASE + PG;
	ev.len = PG;
	assert_int_equal(ops->map(p, &ev), -EEXIST);
	ev.iova = BASE + 2 * PG;
	assert_int_equal(ops->map(p, &ev), 0);
	ev.iova = BASE + 8 * PG;
	assert_int_equal(ops->map(p, &ev), 0);
	assert_int_equal(ops->avail_mappings(p, &avail), 0);
	assert_int_equal(avail, 0);
	ev.iova = BASE + 16 * PG;
	assert_int_equal(ops->map(p, &ev), -ENOSPC);
	/* bisecting either end */
	assert_int_equal(ops->unmap(p, BASE + PG, 4 * PG, &u), -EINVAL);
	assert_int_equal(ops->unmap(p, BASE, PG, &u), -EINVAL);
	/* gaps inside are fine, bytes reported */
	assert_int_equal(ops->unmap(p, BASE, 6 * PG, &u), 0);
	assert_int_equal(u, 3 * PG);
	assert_int_equal(ops->avail_mappings(p, &avail), 0);
	assert_int_equal(avail, 2);
	assert_int_equal(ops->unmap_all(p, &u), 0);
	assert_int_equal(u, PG);
	ops->flush_iotlb(p, BASE, PG);
	assert_int_equal(soft_flush_count(p), 1);
	ops->close(p);
}

/* ---- threads ------------------------------------------------------------- */

struct lookup_ctx {
	struct iodma_domain *d;
	atomic_bool stop;
	atomic_ulong bad;
	atomic_ulong lookups;
};

static void *lookup_thread(void *arg)
{
	struct lookup_ctx *cx = arg;
	struct map_lookup ml;
	uint64_t i = 0;

	while (!atomic_load(&cx->stop)) {
		/* The stable mapping is always found, whole and unchanged. */
		if (domain_lookup(cx->d, BASE + 3 * PG + (i % PG), &ml) != 0 ||
		    ml.iova != BASE || ml.rec.len != 4 * PG ||
		    ml.rec.target != (uintptr_t)VA(BASE))
			atomic_fetch_add(&cx->bad, 1);
		/* A churning one is either absent or exactly right. */
		if (domain_lookup(cx->d, BASE + 64 * PG + (i % 32) * PG, &ml) == 0 &&
		    (ml.rec.len != PG || ml.rec.target != (uintptr_t)VA(ml.iova)))
			atomic_fetch_add(&cx->bad, 1);
		i++;
		atomic_fetch_add_explicit(&cx->lookups, 1, memory_order_relaxed);
	}
	return NULL;
}

/* ---- the backend's dirty log (a VFIO-like device that writes) ----------- */

#define DL_PAGES 4096

/* The "kernel" of a backend whose device writes by itself: one bit per
 * page from BASE, set by the test, reported and cleared by dirty_get or
 * unmap_dirty, the way VFIO type1 does. */
static struct {
	bool on, start_fails;
	uint64_t pgsize;
	unsigned int starts, stops, gets, unmap_dirties;
	uint64_t last_get_iova, last_get_len;
	bool written[DL_PAGES];
} dlk;

static int dl_start(void *p, uint64_t pgsize)
{
	(void)p;
	if (dlk.start_fails)
		return -EOPNOTSUPP;
	dlk.on = true;
	dlk.pgsize = pgsize;
	dlk.starts++;
	return 0;
}

static void dl_stop(void *p)
{
	(void)p;
	dlk.on = false;
	dlk.stops++;
}

/* Report and forget the written pages of [iova, iova + len) into @bm. */
static void dl_report(uint64_t iova, uint64_t len, uint64_t *bm)
{
	for (uint64_t i = 0; i < len / dlk.pgsize; i++) {
		uint64_t pg = (iova - BASE) / PG + i;

		if (iova >= BASE && pg < DL_PAGES && dlk.written[pg]) {
			bm[i / 64] |= 1ull << (i % 64);
			dlk.written[pg] = false;
		}
	}
}

/* VFIO's GET_BITMAP rule: the range covers whole mappings. */
static bool covers_whole_mappings(void *p, uint64_t iova, uint64_t len)
{
	(void)p;
	/* The test keeps its mappings at BASE + 4 * PG * k, 4 pages each. */
	return (iova - BASE) % (4 * PG) == 0 && len % (4 * PG) == 0;
}

static int dl_get(void *p, uint64_t iova, uint64_t len, uint64_t pgsize,
		  uint64_t *bm)
{
	assert_true(dlk.on);
	assert_int_equal(pgsize, dlk.pgsize);
	assert_true(covers_whole_mappings(p, iova, len));
	dlk.gets++;
	dlk.last_get_iova = iova;
	dlk.last_get_len = len;
	dl_report(iova, len, bm);
	return 0;
}

static int dl_unmap_dirty(void *p, uint64_t iova, uint64_t len, uint64_t pgsize,
			  uint64_t *bm, uint64_t *u)
{
	int err;

	assert_true(dlk.on);
	assert_int_equal(pgsize, dlk.pgsize);
	err = iodma_backend_soft()->unmap(p, iova, len, u);
	if (err == 0) {
		dlk.unmap_dirties++;
		dl_report(iova, len, bm);
	}
	return err;
}

static int dl_unmap(void *p, uint64_t iova, uint64_t len, uint64_t *u)
{
	if (dlk.on) /* a plain unmap drops what the kernel logged */
		for (uint64_t i = 0; i < len / PG; i++)
			if ((iova - BASE) / PG + i < DL_PAGES)
				dlk.written[(iova - BASE) / PG + i] = false;
	return iodma_backend_soft()->unmap(p, iova, len, u);
}

static const struct iodma_backend_ops dlog_ops = {
	.version = IODMA_BACKEND_OPS_VERSION, .name = "dlog",
	.open = w_open, .close = w_close, .get_caps = w_get_caps,
	.map = w_map, .unmap = dl_unmap,
	.dirty_start = dl_start, .dirty_stop = dl_stop, .dirty_get = dl_get,
	.unmap_dirty = dl_unmap_dirty,
};

static const struct iodma_backend_ops dlog_half_ops = {
	.version = IODMA_BACKEND_OPS_VERSION, .name = "dlog-half",
	.open = w_open, .close = w_close, .get_caps = w_get_caps,
	.map = w_map, .unmap = dl_unmap,
	.dirty_start = dl_start, .dirty_stop = dl_stop, /* no get, no unmap_dirty */
};

static bool bit(const uint64_t *bm, uint64_t i)
{
	return bm[i / 64] & (1ull << (i % 64));
}

/* A device that writes by itself (passthrough behind VFIO): the domain's
 * log is the backend's log plus what translations marked; queries are
 * widened to whole mappings; an unmap hands its pages over; a backend that
 * cannot log refuses the start. */
static void test_backend_dirty_log_is_merged(void **state)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_domain *d;
	uint64_t bm[2];
	size_t nr;
	struct iodma_slice sl;

	(void)state;
	memset(&dlk, 0, sizeof(dlk));
	o.backend = &dlog_half_ops;
	assert_int_equal(iodma_domain_create(&o, &d), -EINVAL);
	d = mkdomain_opts(&dlog_ops, NULL, NULL);
	for (uint64_t k = 0; k < 4; k++)
		map_ok(d, BASE + 4 * PG * k, 4 * PG);

	/* A backend that cannot log: no log at all. */
	dlk.start_fails = true;
	assert_int_equal(iodma_dirty_log_start(d), -EOPNOTSUPP);
	assert_int_equal(iodma_dirty_get_and_clear(d, BASE, 16 * PG, bm, 2), -EINVAL);
	dlk.start_fails = false;

	assert_int_equal(iodma_dirty_log_start(d), 0);
	assert_int_equal(dlk.starts, 1);
	assert_int_equal(dlk.pgsize, PG);
	/* The device wrote pages 1 and 6; a device model wrote page 9. */
	dlk.written[1] = dlk.written[6] = true;
	assert_int_equal(iodma_translate(d, BASE + 9 * PG, 8, IODMA_PERM_WRITE, &sl, 1, &nr, NULL), 0);
	/* A window that bisects two mappings: asked as [0, 12) pages. */
	memset(bm, 0xff, sizeof(bm));
	assert_int_equal(iodma_dirty_get_and_clear(d, BASE + 2 * PG, 8 * PG, bm, 1), 0);
	assert_int_equal(dlk.last_get_iova, BASE);
	assert_int_equal(dlk.last_get_len, 12 * PG);
	assert_int_equal(bm[0], (1ull << (6 - 2)) | (1ull << (9 - 2)));
	/* Page 1 lay outside the window: reported by the kernel, not to us
	 * (the kernel forgot it: type1's GET_BITMAP clears the whole query). */
	/* Reported once. */
	assert_int_equal(iodma_dirty_get_and_clear(d, BASE, 16 * PG, bm, 1), 0);
	assert_int_equal(bm[0], 0);

	/* An unmap while logging hands the device's pages over. */
	dlk.written[12] = dlk.written[14] = true;
	assert_int_equal(iodma_domain_unmap(d, BASE + 12 * PG, 4 * PG), 0);
	assert_int_equal(dlk.unmap_dirties, 1);
	assert_int_equal(iodma_dirty_get_and_clear(d, BASE, 16 * PG, bm, 1), 0);
	assert_true(bit(bm, 12) && bit(bm, 14));
	assert_false(bit(bm, 13));

	/* No memory for the unmap's bitmap: the whole range counts as
	 * written (more is safe), and the unmap still succeeds. */
	iodma_test_fail_alloc(1);
	assert_int_equal(iodma_domain_unmap(d, BASE + 8 * PG, 4 * PG), 0);
	iodma_test_fail_alloc(0);
	assert_int_equal(iodma_dirty_get_and_clear(d, BASE, 16 * PG, bm, 1), 0);
	assert_int_equal(bm[0], 0xfull << 8);

	/* unmap_all during logging goes run by run through unmap_dirty. */
	dlk.written[4] = true;
	assert_int_equal(iodma_domain_unmap_all(d, NULL), 0);
	assert_int_equal(iodma_dirty_get_and_clear(d, BASE, 16 * PG, bm, 1), 0);
	assert_true(bit(bm, 4));

	assert_int_equal(iodma_dirty_log_stop(d), 0);
	assert_int_equal(dlk.stops, 1);
	assert_false(dlk.on);
	iodma_domain_destroy(d);
}

/* ---- the IO page table's memory ------------------------------------------ */

#define BLK (2ull << 20)

/* A guest that maps and unmaps one page in ever new 2 MiB blocks makes the
 * table install a node per block; the unmaps prune them, so the table
 * stays within about twice what the live mappings need. */
static void test_page_table_memory_stays_bounded(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct iodma_slice sl;
	struct iopt_stats st;
	size_t nr;

	(void)state;
	map_ok(d, BASE, PG); /* one live mapping all along */
	for (uint64_t k = 1; k <= 4096; k++) {
		map_ok(d, BASE + k * BLK, PG);
		assert_int_equal(iodma_domain_unmap(d, BASE + k * BLK, PG), 0);
		os_mutex_lock(&d->map_lock);
		iopt_get_stats(&d->pt, &st);
		os_mutex_unlock(&d->map_lock);
		/* The live mapping needs 2 nodes; 64 empty ones are allowed
		 * before a prune, which keeps at most twice what is left. */
		assert_true(st.nodes <= 2 * 64 + 2);
	}
	assert_true(atomic_load(&d->pt_nodes_freed) >= 4096 - 2 * 64);
	assert_int_equal(st.leaves, 1);
	/* Translation went on through every prune. */
	assert_int_equal(iodma_translate(d, BASE + 8, 8, IODMA_PERM_READ, &sl, 1, &nr, NULL), 0);
	assert_ptr_equal(sl.va, (char *)VA(BASE) + 8);
	/* A 2 MiB mapping over the block where the first 4 KiB one was: one
	 * leaf again (that node went in the first prune). */
	assert_int_equal(iodma_domain_map(d, BLK, BLK, VA(0x40000000),
					  IODMA_PERM_RW), 0);
	os_mutex_lock(&d->map_lock);
	iopt_get_stats(&d->pt, &st);
	os_mutex_unlock(&d->map_lock);
	assert_int_equal(st.leaves, 2);
	iodma_domain_destroy(d);
}

/* Failed maps leave the nodes their reserve installed; they are pruned
 * like the rest (a hostile front end cannot grow the table that way). */
static void test_failed_maps_do_not_grow_the_page_table(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct iopt_stats st;

	(void)state;
	for (uint64_t k = 1; k <= 1024; k++) {
		assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_MAP, 1, -EIO), 0);
		assert_int_equal(iodma_domain_map(d, BASE + k * BLK, PG, VA(0),
						  IODMA_PERM_RW), -EIO);
		os_mutex_lock(&d->map_lock);
		iopt_get_stats(&d->pt, &st);
		os_mutex_unlock(&d->map_lock);
		assert_true(st.nodes <= 2 * 64 + 2);
	}
	assert_int_equal(st.leaves, 0);
	assert_int_equal(iodma_domain_nr_mappings(d), 0);
	iodma_domain_destroy(d);
}

struct walk_hold {
	struct iodma_domain *d;
	bool fast;      /* a fast path's walk (the shard's counter) */
	atomic_int held, release, done;
};

static void *walk_holder(void *arg)
{
	struct walk_hold *w = arg;

	if (w->fast)
		assert_true(xlate_test_fast_walk_begin(w->d));
	else
		xlate_test_walk_begin();
	atomic_store(&w->held, 1);
	while (!atomic_load(&w->release))
		sched_yield();
	if (w->fast)
		xlate_test_fast_walk_end(w->d);
	else
		xlate_test_walk_end();
	return NULL;
}

static void *walk_waiter(void *arg)
{
	struct walk_hold *w = arg;

	assert_true(xlate_wait_walks(w->d));
	atomic_store(&w->done, 1);
	return NULL;
}

/* Run one round: a walk of @d's table held on one thread (a full path's
 * or, @fast, a fast path's), xlate_wait_walks() on another.  Returns
 * whether the wait returned while the walk was still held. */
static bool wait_returned_during_walk(struct iodma_domain *d, bool fast)
{
	struct walk_hold w = { .d = d, .fast = fast };
	pthread_t h, t;
	bool early;

	assert_int_equal(pthread_create(&h, NULL, walk_holder, &w), 0);
	while (!atomic_load(&w.held))
		sched_yield();
	assert_int_equal(pthread_create(&t, NULL, walk_waiter, &w), 0);
	for (int i = 0; i < 20000 && !atomic_load(&w.done); i++)
		sched_yield();
	early = atomic_load(&w.done);
	atomic_store(&w.release, 1);
	pthread_join(h, NULL);
	pthread_join(t, NULL);
	assert_int_equal(atomic_load(&w.done), 1);
	return early;
}

/* Nodes are freed only after every walk that may be inside them: a walk
 * under way (a translator preempted between two loads) holds the free
 * back.  With the mechanism switched off the same round shows the wait
 * returning at once, so this test sees the difference. */
static void test_node_free_waits_for_a_walk_under_way(void **state)
{
	struct iodma_domain *d = mkdomain();

	(void)state;
	for (int fast = 0; fast < 2; fast++) {
		assert_false(wait_returned_during_walk(d, fast));
		atomic_store(&xlate_test_skip_walk_wait, true);
		assert_true(wait_returned_during_walk(d, fast));
		atomic_store(&xlate_test_skip_walk_wait, false);
	}
	iodma_domain_destroy(d);
}

struct prune_ctx {
	struct iodma_domain *d;
	atomic_bool stop;
	atomic_ulong walks, bad;
};

static void *prune_walker(void *arg)
{
	struct prune_ctx *cx = arg;
	uint64_t x = 0x9e3779b97f4a7c15ull;

	while (!atomic_load_explicit(&cx->stop, memory_order_relaxed)) {
		struct iodma_slice sl;
		uint64_t k, iova;
		size_t nr;
		int ret;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		k = x % 512;
		iova = BASE + k * BLK + ((x >> 32) % 4) * PG + 8;
		ret = iodma_translate(cx->d, iova, 8, IODMA_PERM_READ, &sl, 1, &nr, NULL);
		/* Mapped: exactly its page; else not mapped. */
		if ((ret == 0 && sl.va != VA(iova)) ||
		    (ret != 0 && ret != -EFAULT))
			atomic_fetch_add(&cx->bad, 1);
		atomic_fetch_add_explicit(&cx->walks, 1, memory_order_relaxed);
	}
	return NULL;
}

/* Walkers translate across 512 blocks while a mapper maps and unmaps
 * there, so nodes are installed, pruned and freed under them all along
 * (ASan reports a walk into a freed node). */
static void test_walkers_survive_node_pruning(void **state)
{
	struct prune_ctx cx = { .d = mkdomain() };
	pthread_t th[2];

	(void)state;
	atomic_init(&cx.stop, false);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, prune_walker, &cx), 0);
	while (atomic_load(&cx.walks) < 2)
		sched_yield();
	for (uint64_t n = 0; n < 20000; n++) {
		uint64_t k = (n * 7919) % 512;

		map_ok(cx.d, BASE + k * BLK, PG);
		assert_int_equal(iodma_domain_unmap(cx.d, BASE + k * BLK, PG), 0);
	}
	atomic_store(&cx.stop, true);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(atomic_load(&cx.bad), 0);
	assert_true(atomic_load(&cx.d->pt_nodes_freed) > 0);
	iodma_domain_destroy(cx.d);
}

static void test_lookups_run_concurrently_with_map_unmap(void **state)
{
	struct lookup_ctx cx = { .d = mkdomain() };
	pthread_t th[2];

	atomic_init(&cx.stop, false);
	atomic_init(&cx.bad, 0);
	atomic_init(&cx.lookups, 0);
	map_ok(cx.d, BASE, 4 * PG);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, lookup_thread, &cx), 0);
	/* Start churning only once the readers run (no timing assumption). */
	while (atomic_load(&cx.lookups) < 2)
		sched_yield();
	for (int k = 0; k < 3000; k++) {
		uint64_t iova = BASE + 64 * PG + (k % 32) * PG;

		map_ok(cx.d, iova, PG);
		if (k % 3 == 0)
			assert_int_equal(iodma_domain_unmap(cx.d, iova, PG), 0);
		else
			assert_int_equal(iodma_domain_unmap_gaps(cx.d, iova - PG, 3 * PG, NULL), 0);
	}
	atomic_store(&cx.stop, true);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(atomic_load(&cx.bad), 0);
	assert_true(atomic_load(&cx.lookups) > 0);
	assert_int_equal(iodma_domain_nr_mappings(cx.d), 1);
	iodma_domain_destroy(cx.d);
}

/* Options structs follow the growth rule of common.h: a struct from a newer
 * header works if the fields this library does not know are zero, -E2BIG if
 * not; a size below the first version is -EINVAL.  Same for the soft
 * backend's struct iodma_soft_opts. */
static void test_opts_growth_domain_and_soft(void **state)
{
	struct {
		struct iodma_domain_opts o;
		uint64_t newer;
	} w;
	struct {
		struct iodma_soft_opts o;
		uint64_t newer;
	} s;
	struct iodma_domain *d = NULL;

	(void)state;
	memset(&w, 0, sizeof(w));
	w.o.size = sizeof(w);
	assert_int_equal(iodma_domain_create(&w.o, &d), 0);
	iodma_domain_destroy(d);
	d = NULL;
	w.newer = 1;
	assert_int_equal(iodma_domain_create(&w.o, &d), -E2BIG);
	assert_null(d);
	w.newer = 0;
	w.o.size = offsetof(struct iodma_domain_opts, reserved);
	assert_int_equal(iodma_domain_create(&w.o, &d), -EINVAL);
	assert_null(d);

	memset(&s, 0, sizeof(s));
	s.o.size = sizeof(s);
	w.o.size = sizeof(w.o);
	w.o.backend = iodma_backend_soft();
	w.o.backend_config = &s.o;
	assert_int_equal(iodma_domain_create(&w.o, &d), 0);
	iodma_domain_destroy(d);
	d = NULL;
	s.newer = 1;
	assert_int_equal(iodma_domain_create(&w.o, &d), -E2BIG);
	assert_null(d);
	s.newer = 0;
	s.o.size = offsetof(struct iodma_soft_opts, ranges);
	assert_int_equal(iodma_domain_create(&w.o, &d), -EINVAL);
	assert_null(d);
}

/* Growth rule of common.h for the output struct iodma_caps. */
static int get_caps(void *ctx, void *out)
{
	return iodma_domain_get_caps(ctx, out);
}

static void test_get_caps_growth_rule(void **state)
{
	struct iodma_domain *d = mkdomain();
	struct iodma_caps c = IODMA_STRUCT_INIT(struct iodma_caps);

	(void)state;
	check_output_growth(sizeof(struct iodma_caps), get_caps, d);
	assert_int_equal(iodma_domain_get_caps(d, NULL), -EINVAL);
	assert_int_equal(iodma_domain_get_caps(d, &c), 0);
	assert_int_equal(c.size, sizeof(c));
	assert_int_equal(c.alignment, 4096);
	iodma_domain_destroy(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get_caps_growth_rule),
		cmocka_unit_test(test_opts_growth_domain_and_soft),
		cmocka_unit_test(test_soft_defaults),
		cmocka_unit_test(test_create_rejects_bad_options),
		cmocka_unit_test(test_soft_opts_validated),
		cmocka_unit_test(test_create_fail_nth_sweep),
		cmocka_unit_test(test_map_overlap_eexist),
		cmocka_unit_test(test_map_outside_ranges_erange),
		cmocka_unit_test(test_map_max_mappings_enospc),
		cmocka_unit_test(test_backend_avail_zero_enospc_near_the_limit),
		cmocka_unit_test(test_misaligned_einval),
		cmocka_unit_test(test_overflow_einval),
		cmocka_unit_test(test_pciiommu_unmap_contiguous_whole_mappings_ok),
		cmocka_unit_test(test_pciiommu_unmap_bisecting_refused),
		cmocka_unit_test(test_pciiommu_unmap_with_gap_refused),
		cmocka_unit_test(test_dmatarget_unmap_gaps_returns_bytes),
		cmocka_unit_test(test_dmatarget_unmap_bisect_refused),
		cmocka_unit_test(test_unmap_all_with_and_without_backend_unmap_all),
		cmocka_unit_test(test_listener_replay_on_register),
		cmocka_unit_test(test_listener_rollback_on_reject),
		cmocka_unit_test(test_listener_reject_with_failing_undo_keeps_books_agreeing),
		cmocka_unit_test(test_euclean_from_a_listener_or_backend_becomes_eio),
		cmocka_unit_test(test_listener_add_replay_rejected_is_rolled_back),
		cmocka_unit_test(test_listener_add_fail_nth_sweep),
		cmocka_unit_test(test_destroy_sends_one_unmap_per_mapping),
		cmocka_unit_test(test_backend_map_fault_leaves_domain_unchanged),
		cmocka_unit_test(test_backend_unmap_fault_leaves_domain_unchanged),
		cmocka_unit_test(test_soft_inject_fault_rejects_bad_args),
		cmocka_unit_test(test_map_fail_nth_sweep),
		cmocka_unit_test(test_map_fd_events_carry_fd_offset_va),
		cmocka_unit_test(test_map_gpa_events_carry_region_fd_offset_va),
		cmocka_unit_test(test_iova_alloc_avoids_mappings_and_reserved),
		cmocka_unit_test(test_map_inside_allocation_ok_straddling_eexist),
		cmocka_unit_test(test_first_allocation_claims_existing_fixed_maps),
		cmocka_unit_test(test_iova_free_refused_while_a_mapping_lies_inside),
		cmocka_unit_test(test_map_across_two_allocations_eexist),
		cmocka_unit_test(test_iova_never_handed_out_over_a_live_mapping_concurrently),
		cmocka_unit_test(test_refresh_caps_compatible_only),
		cmocka_unit_test(test_refresh_caps_alignment_below_creation_ebusy),
		cmocka_unit_test(test_young_records_seen_by_every_reader),
		cmocka_unit_test(test_young_overlap_limit_and_strict_rules),
		cmocka_unit_test(test_young_unmap_backend_fault_keeps_it),
		cmocka_unit_test(test_young_map_fail_nth_sweep),
		cmocka_unit_test(test_young_stay_across_a_table_unmap),
		cmocka_unit_test(test_young_gaps_unmap_crossing_start_einval),
		cmocka_unit_test(test_queries_of_null_domain),
		cmocka_unit_test(test_refresh_caps_shrink_takes_lost_space_from_allocator),
		cmocka_unit_test(test_for_each_mapping_visits_overlapping_in_order),
		cmocka_unit_test(test_soft_backend_behaves_like_type1),
		cmocka_unit_test(test_lookups_run_concurrently_with_map_unmap),
		cmocka_unit_test(test_backend_dirty_log_is_merged),
		cmocka_unit_test(test_page_table_memory_stays_bounded),
		cmocka_unit_test(test_failed_maps_do_not_grow_the_page_table),
		cmocka_unit_test(test_node_free_waits_for_a_walk_under_way),
		cmocka_unit_test(test_walkers_survive_node_pruning),
		cmocka_unit_test(test_backend_priv_only_for_the_domains_own_backend),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
