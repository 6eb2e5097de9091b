/* SPDX-License-Identifier: MIT */
/* Unit tests: access sections as per-thread records.  An unmap waits for
 * the sections of other threads that translated a piece of its range, and
 * for no other: a section open on another range, or in another domain, does
 * not delay it.  The dirty log loses no write made through a slice across a
 * harvest.  No timing threshold decides a result: "unmap is waiting" is
 * observed through the section's waiter count (the unmapper sleeps on the
 * section's futex), "unmap returned" through a flag. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <iodma.h>
#include <iodma/test-hooks.h> /* fault injection: tests only */

#include "domain_priv.h"

#define PG ((uint64_t)iodma_page_size())
#define IOVA_A 0x40000000ull
#define IOVA_B 0x50000000ull
#define SPIN_LIMIT 20000000L /* yields before a handshake gives up */

static void *page_alloc(size_t pages)
{
	void *p = mmap(NULL, pages * PG, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	assert_true(p != MAP_FAILED);
	memset(p, 0x5a, pages * PG);
	return p;
}

/* ---- a section holder on its own thread --------------------------------- */

struct holder {
	struct iodma_domain *d;     /* domain it translates in */
	uint64_t iova;              /* range it translates (one page) */
	int nest;                   /* extra inner begin/end around the translate */
	bool exit_inside;           /* leave the thread with the section open */
	atomic_int ready;           /* translated, section open */
	atomic_int release;         /* main: end the section now */
	atomic_int waited_on;       /* an unmapper slept on this section */
	atomic_int unmap_returned;  /* set by the unmapper thread */
	atomic_int returned_while_open; /* must stay 0 where unmap must wait */
	atomic_int ended;
	int translate_ret;
	uint64_t len;               /* bytes translated at iova (0: 8) */
	int expect_ret;             /* holder_start() checks translate_ret */
	int fail_op;                /* FAIL_*: a failing call in the section */
	bool fail_first;            /* ... before the translation at iova */
	uint64_t fail_iova;         /* where it fails (nothing mapped there) */
	int fail_ret;
};

/* The entry points that record a range in the section before looking. */
enum { FAIL_NONE, FAIL_TRANSLATE, FAIL_CHECK, FAIL_NEXT, FAIL_READ };

static int fail_call(struct holder *h)
{
	struct iodma_xlate_iter it = { .size = sizeof(it) };
	struct iodma_slice s;
	char buf[8];
	size_t nr = 99;
	int ret;

	switch (h->fail_op) {
	case FAIL_TRANSLATE:
		ret = iodma_translate(h->d, h->fail_iova, 8, IODMA_PERM_READ, &s, 1,
				      &nr, NULL);
		assert_int_equal(nr, 0);
		return ret;
	case FAIL_CHECK:
		return iodma_check_range(h->d, h->fail_iova, 8, IODMA_PERM_READ);
	case FAIL_NEXT:
		assert_int_equal(iodma_xlate_begin(&it, h->d, h->fail_iova, 8,
						   IODMA_PERM_READ), 0);
		return iodma_xlate_next(&it, &s);
	default:
		return iodma_read(h->d, h->fail_iova, buf, sizeof(buf));
	}
}

static void *holder_main(void *arg)
{
	struct holder *h = arg;
	struct iodma_slice s;
	size_t nr = 0;

	iodma_access_begin();
	for (int i = 0; i < h->nest; i++)
		iodma_access_begin();
	if (h->fail_op && h->fail_first)
		h->fail_ret = fail_call(h);
	h->translate_ret = iodma_translate(h->d, h->iova, h->len ? h->len : 8,
					   IODMA_PERM_READ, &s, 1, &nr, NULL);
	if (h->fail_op && !h->fail_first)
		h->fail_ret = fail_call(h);
	for (int i = 0; i < h->nest; i++)
		iodma_access_end(); /* inner ends: the outer one still holds */
	atomic_store(&h->ready, 1);
	if (h->exit_inside)
		return NULL; /* the thread-exit hook must close the section */
	/* Until released, or until an unmapper sleeps on this section (then
	 * check it has not returned, and end). */
	for (long i = 0; i < SPIN_LIMIT && !atomic_load(&h->release); i++) {
		if (xlate_test_section_waiters()) {
			atomic_store(&h->waited_on, 1);
			break;
		}
		if (atomic_load(&h->unmap_returned))
			break;
		sched_yield();
	}
	if (atomic_load(&h->unmap_returned))
		atomic_store(&h->returned_while_open, 1);
	if (h->translate_ret == 0 || nr)
		(void)*(volatile char *)s.va; /* still mapped: nobody freed it */
	atomic_store(&h->ended, 1);
	iodma_access_end();
	return NULL;
}

static void holder_start(struct holder *h, pthread_t *t)
{
	assert_int_equal(pthread_create(t, NULL, holder_main, h), 0);
	for (long i = 0; i < SPIN_LIMIT && !atomic_load(&h->ready); i++)
		sched_yield();
	assert_int_equal(atomic_load(&h->ready), 1);
	assert_int_equal(h->translate_ret, h->expect_ret);
}

enum { OP_UNMAP, OP_UNMAP_ALL, OP_DISABLE };

struct unmapper {
	struct iodma_domain *d;
	uint64_t iova, len;
	int op;
	struct holder *h;
	int ret;
};

static void *unmapper_main(void *arg)
{
	struct unmapper *u = arg;

	switch (u->op) {
	case OP_UNMAP:
		u->ret = iodma_domain_unmap(u->d, u->iova, u->len);
		break;
	case OP_UNMAP_ALL:
		u->ret = iodma_domain_unmap_all(u->d, NULL);
		break;
	default:
		u->ret = iodma_domain_set_enabled(u->d, false);
		break;
	}
	atomic_store(&u->h->unmap_returned, 1);
	return NULL;
}

/* Run @op from another thread; the holder sees it sleeping on its section
 * and never sees it returned before the section ends. */
static void op_must_wait(struct holder *h, struct iodma_domain *d, int op,
			 uint64_t iova, uint64_t len)
{
	struct unmapper u = { .d = d, .iova = iova, .len = len, .op = op, .h = h };
	pthread_t t;

	assert_int_equal(pthread_create(&t, NULL, unmapper_main, &u), 0);
	pthread_join(t, NULL);
	assert_int_equal(u.ret, 0);
	assert_int_equal(atomic_load(&h->ended), 1);
	assert_int_equal(atomic_load(&h->waited_on), 1);
	assert_int_equal(atomic_load(&h->returned_while_open), 0);
}

static void unmap_must_wait(struct holder *h, struct iodma_domain *d,
			    uint64_t iova, uint64_t len)
{
	op_must_wait(h, d, OP_UNMAP, iova, len);
}

static void test_unmap_of_another_range_is_not_delayed(void **state)
{
	struct iodma_domain *d;
	char *a = page_alloc(1), *b = page_alloc(1);
	struct holder h = { 0 };
	pthread_t t;

	(void)state;
	assert_int_equal(iodma_domain_create(NULL, &d), 0);
	assert_int_equal(iodma_domain_map(d, IOVA_A, PG, a, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_domain_map(d, IOVA_B, PG, b, IODMA_PERM_RW), 0);
	h.d = d;
	h.iova = IOVA_A;
	holder_start(&h, &t);
	/* B returns while the section on A is still open. */
	assert_int_equal(iodma_domain_unmap(d, IOVA_B, PG), 0);
	assert_int_equal(atomic_load(&h.ended), 0);
	assert_int_equal(atomic_load(&h.waited_on), 0);
	munmap(b, PG);
	/* And the unmap of A waits for it. */
	unmap_must_wait(&h, d, IOVA_A, PG);
	pthread_join(t, NULL);
	munmap(a, PG);
	iodma_domain_destroy(d);
}

static void test_section_in_another_domain_does_not_delay(void **state)
{
	struct iodma_domain *d1, *d2;
	char *a = page_alloc(1), *a2 = page_alloc(1);
	struct holder h = { 0 };
	pthread_t t;

	(void)state;
	assert_int_equal(iodma_domain_create(NULL, &d1), 0);
	assert_int_equal(iodma_domain_create(NULL, &d2), 0);
	assert_int_equal(iodma_domain_map(d1, IOVA_A, PG, a, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_domain_map(d2, IOVA_A, PG, a2, IODMA_PERM_RW), 0);
	h.d = d2;
	h.iova = IOVA_A; /* same IOVA, other domain */
	holder_start(&h, &t);
	assert_int_equal(iodma_domain_unmap(d1, IOVA_A, PG), 0);
	assert_int_equal(atomic_load(&h.ended), 0);
	/* unmap_all of d1 (whole-domain wait) does not wait either. */
	assert_int_equal(iodma_domain_map(d1, IOVA_B, PG, a, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_domain_unmap_all(d1, NULL), 0);
	assert_int_equal(atomic_load(&h.ended), 0);
	atomic_store(&h.release, 1);
	pthread_join(t, NULL);
	assert_int_equal(iodma_domain_unmap(d2, IOVA_A, PG), 0);
	munmap(a, PG);
	munmap(a2, PG);
	iodma_domain_destroy(d1);
	iodma_domain_destroy(d2);
}

static void test_nested_sections_hold_until_the_outermost_end(void **state)
{
	struct iodma_domain *d;
	char *a = page_alloc(1);
	struct holder h = { 0 };
	pthread_t t;

	(void)state;
	assert_int_equal(iodma_domain_create(NULL, &d), 0);
	assert_int_equal(iodma_domain_map(d, IOVA_A, PG, a, IODMA_PERM_RW), 0);
	h.d = d;
	h.iova = IOVA_A;
	h.nest = 2; /* translated in the innermost, which has ended */
	holder_start(&h, &t);
	unmap_must_wait(&h, d, IOVA_A, PG);
	pthread_join(t, NULL);
	munmap(a, PG);
	iodma_domain_destroy(d);
}

static void test_unmap_all_waits_for_a_section_of_its_domain(void **state)
{
	struct iodma_domain *d;
	char *a = page_alloc(1), *b = page_alloc(1);
	struct holder h = { 0 };
	pthread_t t;

	(void)state;
	assert_int_equal(iodma_domain_create(NULL, &d), 0);
	assert_int_equal(iodma_domain_map(d, IOVA_A, PG, a, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_domain_map(d, IOVA_B, PG, b, IODMA_PERM_RW), 0);
	h.d = d;
	h.iova = IOVA_B;
	holder_start(&h, &t);
	op_must_wait(&h, d, OP_UNMAP_ALL, 0, 0);
	pthread_join(t, NULL);
	assert_int_equal(iodma_domain_nr_mappings(d), 0);
	munmap(a, PG);
	munmap(b, PG);
	iodma_domain_destroy(d);
}

/* Disabling the IOMMU waits for the sections that translated in it. */
static void test_set_enabled_waits_for_a_section_of_its_domain(void **state)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_memory *m;
	struct iodma_domain *d;
	struct holder h = { 0 };
	pthread_t t;

	(void)state;
	assert_int_equal(iodma_memory_create(NULL, &m), 0);
	assert_int_equal(iodma_memory_add_region(m, 0x100000, PG, 0, NULL), 0);
	o.memory = m;
	assert_int_equal(iodma_domain_create(&o, &d), 0);
	assert_int_equal(iodma_domain_map_gpa(d, IOVA_A, PG, 0x100000, IODMA_PERM_RW), 0);
	h.d = d;
	h.iova = IOVA_A;
	holder_start(&h, &t);
	op_must_wait(&h, d, OP_DISABLE, 0, 0);
	pthread_join(t, NULL);
	iodma_domain_destroy(d);
	iodma_memory_destroy(m);
}

/* ---- overflow: a section that touches too many domains ------------------- */

#define NR_DOMS 18 /* 16 ranges fit, the 17th overflows, the 18th untouched */

struct many {
	struct iodma_domain *d[NR_DOMS];
	struct holder h;
};

static void *many_main(void *arg)
{
	struct many *m = arg;
	struct iodma_slice s;
	size_t nr;

	iodma_access_begin();
	for (int i = 0; i < NR_DOMS - 1; i++)
		if (iodma_translate(m->d[i], IOVA_A, 8, IODMA_PERM_WRITE, &s, 1, &nr, NULL))
			m->h.translate_ret = -1;
	atomic_store(&m->h.ready, 1);
	for (long i = 0; i < SPIN_LIMIT && !xlate_test_section_waiters() &&
			 !atomic_load(&m->h.unmap_returned); i++)
		sched_yield();
	atomic_store(&m->h.waited_on, xlate_test_section_waiters() != 0);
	if (atomic_load(&m->h.unmap_returned))
		atomic_store(&m->h.returned_while_open, 1);
	atomic_store(&m->h.ended, 1);
	iodma_access_end();
	return NULL;
}

static void test_overflowed_section_counts_as_touching_everything(void **state)
{
	static struct many m;
	char *buf = page_alloc(1);
	uint64_t bm[1];
	pthread_t t;

	(void)state;
	memset(&m, 0, sizeof(m));
	for (int i = 0; i < NR_DOMS; i++) {
		assert_int_equal(iodma_domain_create(NULL, &m.d[i]), 0);
		assert_int_equal(iodma_domain_map(m.d[i], IOVA_A, PG, buf, IODMA_PERM_RW), 0);
		assert_int_equal(iodma_dirty_log_start(m.d[i]), 0);
	}
	assert_int_equal(pthread_create(&t, NULL, many_main, &m), 0);
	for (long i = 0; i < SPIN_LIMIT && !atomic_load(&m.h.ready); i++)
		sched_yield();
	assert_int_equal(m.h.translate_ret, 0);
	/* The 18th domain was never touched, yet its unmap waits. */
	op_must_wait(&m.h, m.d[NR_DOMS - 1], OP_UNMAP, IOVA_A, PG);
	pthread_join(t, NULL);
	/* The 17th domain's write could not be kept for re-marking: its log
	 * reports everything from now on (lost); the 16th's is exact. */
	assert_int_equal(iodma_dirty_get_and_clear(m.d[NR_DOMS - 2], IOVA_A + 64 * PG,
						   4 * PG, bm, 1), 0);
	assert_int_equal(bm[0], 0xf);
	assert_int_equal(iodma_dirty_get_and_clear(m.d[NR_DOMS - 3], IOVA_A + 64 * PG,
						   4 * PG, bm, 1), 0);
	assert_int_equal(bm[0], 0);
	for (int i = 0; i < NR_DOMS; i++)
		iodma_domain_destroy(m.d[i]);
	munmap(buf, PG);
}

/* ---- threads that exit -------------------------------------------------- */

static void *short_section(void *arg)
{
	struct iodma_domain *d = arg;
	struct iodma_slice s;
	size_t nr;

	iodma_access_begin();
	assert_int_equal(iodma_translate(d, IOVA_A, 8, IODMA_PERM_READ, &s, 1, &nr, NULL), 0);
	iodma_access_end();
	return NULL;
}

static void test_thread_exit_gives_back_its_record(void **state)
{
	struct iodma_domain *d;
	char *a = page_alloc(1);
	struct holder h = { 0 };
	pthread_t t;
	size_t before, after;

	(void)state;
	assert_int_equal(iodma_domain_create(NULL, &d), 0);
	assert_int_equal(iodma_domain_map(d, IOVA_A, PG, a, IODMA_PERM_RW), 0);
	/* One at a time: each exiting thread's record serves the next. */
	assert_int_equal(pthread_create(&t, NULL, short_section, d), 0);
	pthread_join(t, NULL);
	before = xlate_test_records();
	for (int i = 0; i < 20; i++) {
		assert_int_equal(pthread_create(&t, NULL, short_section, d), 0);
		pthread_join(t, NULL);
	}
	after = xlate_test_records();
	assert_int_equal(after, before);
	/* A thread that exits with its section open: the exit closes it, so
	 * the unmap does not wait for ever. */
	h.d = d;
	h.iova = IOVA_A;
	h.exit_inside = true;
	holder_start(&h, &t);
	pthread_join(t, NULL);
	assert_int_equal(iodma_domain_unmap(d, IOVA_A, PG), 0);
	munmap(a, PG);
	iodma_domain_destroy(d);
}

/* ---- no record (out of memory): the grace-period fallback ---------------- */

struct anon {
	struct iodma_domain *d;
	atomic_int ready, unmap_returned, returned_while_open, ended;
	bool had_record, has_record_later;
	int ret;
};

static void *anon_main(void *arg)
{
	struct anon *x = arg;
	struct iodma_slice s;
	size_t nr;

	iodma_test_fail_alloc(1); /* the record of this new thread */
	iodma_access_begin();
	iodma_test_fail_alloc(0);
	x->had_record = xlate_test_has_record();
	x->ret = iodma_translate(x->d, IOVA_A, 8, IODMA_PERM_WRITE, &s, 1, &nr, NULL);
	atomic_store(&x->ready, 1);
	/* The unmapper has no record to sleep on: give it time to get as far
	 * as it can (it must stop at the grace period). */
	for (int i = 0; i < 200 && !atomic_load(&x->unmap_returned); i++) {
		struct timespec ts = { 0, 1000000 };

		nanosleep(&ts, NULL);
	}
	if (atomic_load(&x->unmap_returned))
		atomic_store(&x->returned_while_open, 1);
	memset(s.va, 1, 8); /* still mapped */
	atomic_store(&x->ended, 1);
	iodma_access_end();
	iodma_access_begin(); /* memory is back: now it gets a record */
	x->has_record_later = xlate_test_has_record();
	iodma_access_end();
	return NULL;
}

static void test_section_without_a_record_is_waited_for(void **state)
{
	struct iodma_domain *d;
	char *a = page_alloc(4);
	struct anon x;
	uint64_t bm[1];
	pthread_t t;

	(void)state;
	memset(&x, 0, sizeof(x));
	assert_int_equal(iodma_domain_create(NULL, &d), 0);
	assert_int_equal(iodma_domain_map(d, IOVA_A, PG, a, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_domain_map(d, IOVA_A + PG, 3 * PG, a + PG, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_dirty_log_start(d), 0);
	x.d = d;
	assert_int_equal(pthread_create(&t, NULL, anon_main, &x), 0);
	for (long i = 0; i < SPIN_LIMIT && !atomic_load(&x.ready); i++)
		sched_yield();
	assert_false(x.had_record);
	assert_int_equal(x.ret, 0);
	assert_int_equal(iodma_domain_unmap(d, IOVA_A, PG), 0);
	atomic_store(&x.unmap_returned, 1);
	assert_int_equal(atomic_load(&x.ended), 1);
	pthread_join(t, NULL);
	assert_int_equal(atomic_load(&x.returned_while_open), 0);
	assert_true(x.has_record_later);
	/* Its write could not be tracked: every granule reports dirty. */
	assert_int_equal(iodma_dirty_get_and_clear(d, IOVA_A + PG, 3 * PG, bm, 1), 0);
	assert_int_equal(bm[0], 0x7);
	iodma_domain_destroy(d);
	munmap(a, 4 * PG);
}

/* ---- bug 4: the range stops translating before anyone is told ------------ */

struct xl_listener {
	struct iodma_domain *d;
	int calls;
	int ret_check[4];
	int ret_translate[4];
};

static int xl_map(void *arg, const struct iodma_map_event *ev)
{
	(void)arg;
	(void)ev;
	return 0;
}

static void xl_unmap(void *arg, uint64_t iova, uint64_t len)
{
	struct xl_listener *l = arg;
	struct iodma_slice s;
	size_t nr;

	if (l->calls < 4) {
		l->ret_check[l->calls] = iodma_check_range(l->d, iova, len, IODMA_PERM_READ);
		iodma_access_begin();
		l->ret_translate[l->calls] = iodma_translate(l->d, iova, 8, IODMA_PERM_READ,
							     &s, 1, &nr, NULL);
		iodma_access_end();
	}
	l->calls++;
}

static const struct iodma_listener_ops xl_ops = { .map = xl_map, .unmap = xl_unmap };

static void test_listener_unmap_event_cannot_translate_the_range(void **state)
{
	struct iodma_domain *d;
	struct iodma_listener *li;
	struct xl_listener l = { 0 };
	char *a = page_alloc(4);
	struct iodma_slice s;
	size_t nr;
	uint64_t u;

	(void)state;
	assert_int_equal(iodma_domain_create(NULL, &d), 0);
	l.d = d;
	assert_int_equal(iodma_domain_add_listener(d, &xl_ops, &l, &li), 0);
	assert_int_equal(iodma_domain_map(d, IOVA_A, PG, a, IODMA_PERM_RW), 0);
	/* Translated once before: the leaf must be gone too. */
	assert_int_equal(iodma_translate(d, IOVA_A, 8, IODMA_PERM_READ, &s, 1, &nr, NULL), 0);
	assert_int_equal(iodma_domain_unmap(d, IOVA_A, PG), 0);
	assert_int_equal(l.calls, 1);
	assert_int_equal(l.ret_check[0], -EFAULT);
	assert_int_equal(l.ret_translate[0], -EFAULT);
	/* Several records (unmap_gaps over two runs): the same. */
	assert_int_equal(iodma_domain_map(d, IOVA_A, PG, a, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_domain_map(d, IOVA_A + 2 * PG, 2 * PG, a + 2 * PG,
					  IODMA_PERM_RW), 0);
	assert_int_equal(iodma_translate(d, IOVA_A + 3 * PG, 8, IODMA_PERM_READ, &s, 1, &nr, NULL), 0);
	l.calls = 0;
	assert_int_equal(iodma_domain_unmap_gaps(d, IOVA_A, 4 * PG, &u), 0);
	assert_int_equal(u, 3 * PG);
	assert_int_equal(l.calls, 2);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(l.ret_check[i], -EFAULT);
		assert_int_equal(l.ret_translate[i], -EFAULT);
	}
	iodma_fault_pop(d, (struct iodma_fault[8]){ { 0 } }, 8);
	iodma_domain_remove_listener(d, li);
	iodma_domain_destroy(d);
	munmap(a, 4 * PG);
}

/* A backend that refuses the unmap: the records come back exactly, and the
 * range translates again. */
static void test_failed_unmap_restores_translation(void **state)
{
	struct iodma_domain *d;
	char *a = page_alloc(4);
	struct iodma_slice s;
	size_t nr;
	uint64_t u;

	(void)state;
	assert_int_equal(iodma_domain_create(NULL, &d), 0);
	assert_int_equal(iodma_domain_map(d, IOVA_A, PG, a, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_domain_map(d, IOVA_A + 2 * PG, 2 * PG, a + 2 * PG,
					  IODMA_PERM_RW), 0);
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_UNMAP, 1, -EIO), 0);
	assert_int_equal(iodma_domain_unmap(d, IOVA_A, PG), -EIO);
	assert_int_equal(iodma_translate(d, IOVA_A, 8, IODMA_PERM_READ, &s, 1, &nr, NULL), 0);
	assert_ptr_equal(s.va, a);
	assert_int_equal(iodma_soft_inject_fault(d, IODMA_SOFT_FAULT_UNMAP, 2, -EIO), 0);
	assert_int_equal(iodma_domain_unmap_gaps(d, IOVA_A, 4 * PG, &u), -EIO);
	assert_int_equal(iodma_domain_nr_mappings(d), 2);
	assert_int_equal(iodma_translate(d, IOVA_A, 8, IODMA_PERM_READ, &s, 1, &nr, NULL), 0);
	assert_ptr_equal(s.va, a);
	assert_int_equal(iodma_translate(d, IOVA_A + 3 * PG, 8, IODMA_PERM_READ, &s, 1, &nr, NULL), 0);
	assert_ptr_equal(s.va, a + 3 * PG);
	assert_int_equal(iodma_domain_unmap_gaps(d, IOVA_A, 4 * PG, &u), 0);
	assert_int_equal(u, 3 * PG);
	iodma_domain_destroy(d);
	munmap(a, 4 * PG);
}

/* Unmap never fails for lack of memory (the record it may not preload is
 * marked dying instead), whichever allocation fails. */
static void test_unmap_needs_no_memory(void **state)
{
	struct iodma_domain *d;
	char *a = page_alloc(1);

	(void)state;
	assert_int_equal(iodma_domain_create(NULL, &d), 0);
	for (unsigned long n = 1; n <= 4; n++) {
		struct iodma_slice s;
		size_t nr;

		assert_int_equal(iodma_domain_map(d, IOVA_A, PG, a, IODMA_PERM_RW), 0);
		iodma_test_fail_alloc(n);
		assert_int_equal(iodma_domain_unmap(d, IOVA_A, PG), 0);
		iodma_test_fail_alloc(0);
		assert_int_equal(iodma_domain_nr_mappings(d), 0);
		assert_int_equal(iodma_translate(d, IOVA_A, 8, IODMA_PERM_READ, &s, 1,
						 &nr, NULL), -EFAULT);
	}
	iodma_fault_pop(d, (struct iodma_fault[8]){ { 0 } }, 8);
	iodma_domain_destroy(d);
	munmap(a, PG);
}

/* A domain unmapped and destroyed inside the caller's own section (after
 * a write translation with logging on): the section's end must not touch
 * it (ASan reports a use after free otherwise). */
static void test_destroy_inside_own_section(void **state)
{
	struct iodma_domain *d, *d2;
	char *a = page_alloc(1);
	struct iodma_slice s;
	uint64_t bm[1];
	size_t nr;

	(void)state;
	assert_int_equal(iodma_domain_create(NULL, &d), 0);
	assert_int_equal(iodma_domain_create(NULL, &d2), 0);
	assert_int_equal(iodma_domain_map(d, IOVA_A, PG, a, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_domain_map(d2, IOVA_A, PG, a, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_dirty_log_start(d), 0);
	assert_int_equal(iodma_dirty_log_start(d2), 0);
	iodma_access_begin();
	assert_int_equal(iodma_translate(d, IOVA_A, 8, IODMA_PERM_WRITE, &s, 1, &nr, NULL), 0);
	assert_int_equal(iodma_translate(d2, IOVA_A, 8, IODMA_PERM_WRITE, &s, 1, &nr, NULL), 0);
	assert_int_equal(iodma_dirty_get_and_clear(d2, IOVA_A, PG, bm, 1), 0);
	assert_int_equal(bm[0], 1);
	/* Unmapping inside one's own section does not wait for itself (a
	 * destroy with mappings left would: it waits a grace period). */
	assert_int_equal(iodma_domain_unmap(d, IOVA_A, PG), 0);
	iodma_domain_destroy(d);
	iodma_access_end(); /* d2's range is still re-marked */
	assert_int_equal(iodma_dirty_get_and_clear(d2, IOVA_A, PG, bm, 1), 0);
	assert_int_equal(bm[0], 1);
	iodma_domain_destroy(d2);
	munmap(a, PG);
}

/* ---- dirty: a write through a slice across a harvest --------------------- */

static void test_write_after_harvest_through_held_slice_is_reported(void **state)
{
	struct iodma_domain *d;
	char *a = page_alloc(4);
	struct iodma_slice s;
	uint64_t bm[1];
	size_t nr;

	(void)state;
	assert_int_equal(iodma_domain_create(NULL, &d), 0);
	assert_int_equal(iodma_domain_map(d, IOVA_A, 4 * PG, a, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_dirty_log_start(d), 0);
	/* The device model translates for write (page 1 marked)... */
	iodma_access_begin();
	assert_int_equal(iodma_translate(d, IOVA_A + PG + 16, 8, IODMA_PERM_WRITE,
					 &s, 1, &nr, NULL), 0);
	/* ...the VMM harvests (page 1 reported, its copy sent)... */
	assert_int_equal(iodma_dirty_get_and_clear(d, IOVA_A, 4 * PG, bm, 1), 0);
	assert_int_equal(bm[0], 0x2);
	/* ...then the device writes through the slice it still holds. */
	memset(s.va, 0x77, 8);
	iodma_access_end();
	/* The next round must send page 1 again. */
	assert_int_equal(iodma_dirty_get_and_clear(d, IOVA_A, 4 * PG, bm, 1), 0);
	assert_int_equal(bm[0], 0x2);
	/* And a section that saw no harvest re-marks nothing extra. */
	iodma_access_begin();
	assert_int_equal(iodma_translate(d, IOVA_A + 2 * PG, 8, IODMA_PERM_WRITE,
					 &s, 1, &nr, NULL), 0);
	memset(s.va, 0x78, 8);
	iodma_access_end();
	assert_int_equal(iodma_dirty_get_and_clear(d, IOVA_A, 4 * PG, bm, 1), 0);
	assert_int_equal(bm[0], 0x4);
	assert_int_equal(iodma_dirty_get_and_clear(d, IOVA_A, 4 * PG, bm, 1), 0);
	assert_int_equal(bm[0], 0);
	iodma_domain_destroy(d);
	munmap(a, 4 * PG);
}

#define DS_PAGES  1024
#define DS_ROUNDS 16

/* Under valgrind (one thread runs at a time) the spinning harvester would
 * take minutes: fewer rounds there, and it gives way while it waits. */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifdef RUNNING_ON_VALGRIND
#define DS_UNDER_VALGRIND() (RUNNING_ON_VALGRIND != 0)
#else
#define DS_UNDER_VALGRIND() 0
#endif

struct dstress {
	struct iodma_domain *d;
	atomic_int round_done;  /* rounds the writer has finished */
	atomic_int round_go;    /* rounds the harvester has checked */
	atomic_int errors;
	int rounds;             /* DS_ROUNDS, fewer under valgrind */
};

/* Each round writes every page once (value round * DS_PAGES + page + 1),
 * in a scattered order, each through a slice translated in its own
 * section. */
static void *dstress_writer(void *arg)
{
	struct dstress *x = arg;
	struct iodma_slice s;
	size_t nr;

	for (int r = 0; r < x->rounds; r++) {
		while (atomic_load(&x->round_go) < r)
			sched_yield();
		for (uint64_t j = 0; j < DS_PAGES; j++) {
			uint64_t page = (j * 389) % DS_PAGES;

			iodma_access_begin();
			if (iodma_translate(x->d, IOVA_A + page * PG, 8, IODMA_PERM_WRITE,
					    &s, 1, &nr, NULL) == 0) {
				/* The device gives way between translating
				 * and writing, so that a harvest falls in
				 * the window even on one free core (it
				 * decides nothing: any order is legal). */
				sched_yield();
				atomic_store_explicit((_Atomic uint64_t *)s.va,
						      (uint64_t)r * DS_PAGES + page + 1,
						      memory_order_relaxed);
			} else {
				atomic_fetch_add(&x->errors, 1);
			}
			iodma_access_end();
		}
		atomic_store(&x->round_done, r + 1);
	}
	return NULL;
}

/* Migration in miniature: the harvester "sends" (copies) every page a
 * harvest reports, racing with the writer; when a round of writes is over,
 * one final harvest.  Every page's sent copy must then equal its content:
 * no write was lost between a harvest and the slice's use. */
static void test_dirty_harvest_racing_writer_loses_no_write(void **state)
{
	static uint64_t sent[DS_PAGES], bm[DS_PAGES / 64];
	struct dstress x;
	char *a = page_alloc(DS_PAGES);
	unsigned long rounds = 0, lost = 0;
	pthread_t t;
	int nrounds = DS_UNDER_VALGRIND() ? 2 : DS_ROUNDS;

	(void)state;
	memset(&x, 0, sizeof(x));
	x.rounds = nrounds;
	for (int p = 0; p < DS_PAGES; p++) {
		atomic_store((_Atomic uint64_t *)(a + p * PG), 0);
		sent[p] = 0;
	}
	assert_int_equal(iodma_domain_create(NULL, &x.d), 0);
	assert_int_equal(iodma_domain_map(x.d, IOVA_A, DS_PAGES * PG, a, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_dirty_log_start(x.d), 0);
	assert_int_equal(pthread_create(&t, NULL, dstress_writer, &x), 0);
	for (int r = 0; r < nrounds; r++) {
		bool last = false;

		while (!last) {
			last = atomic_load(&x.round_done) > r;
			if (DS_UNDER_VALGRIND())
				sched_yield();
			assert_int_equal(iodma_dirty_get_and_clear(x.d, IOVA_A, DS_PAGES * PG,
								   bm, DS_PAGES / 64), 0);
			for (int p = 0; p < DS_PAGES; p++)
				if (bm[p / 64] & (1ull << (p % 64)))
					sent[p] = atomic_load_explicit(
						(_Atomic uint64_t *)(a + p * PG),
						memory_order_relaxed);
			rounds++;
		}
		for (int p = 0; p < DS_PAGES; p++)
			lost += sent[p] != atomic_load((_Atomic uint64_t *)(a + p * PG));
		atomic_store(&x.round_go, r + 1);
	}
	pthread_join(t, NULL);
	print_message("%lu harvests, %lu writes lost\n", rounds, lost);
	assert_int_equal(atomic_load(&x.errors), 0);
	assert_int_equal(lost, 0);
	iodma_domain_destroy(x.d);
	munmap(a, DS_PAGES * PG);
}

/* ---- failed translations ------------------------------------------------ */

/* A call that records its range and then fails having given nothing (no
 * slice, no byte copied, no successful check) takes the range back: an
 * unmap there, once the range is mapped, does not wait for the rest of the
 * section, which still holds the range it did translate. */
static void failed_call_does_not_delay(int op, bool first)
{
	struct iodma_domain *d;
	char *a = page_alloc(1), *b = page_alloc(1);
	struct holder h = { 0 };
	pthread_t t;

	assert_int_equal(iodma_domain_create(NULL, &d), 0);
	assert_int_equal(iodma_domain_map(d, IOVA_A, PG, a, IODMA_PERM_RW), 0);
	h.d = d;
	h.iova = IOVA_A;
	h.fail_op = op;
	h.fail_first = first;
	h.fail_iova = IOVA_B;
	holder_start(&h, &t);
	assert_int_equal(h.fail_ret, -EFAULT);
	/* Mapped after the failure (a guest maps, then the device retries). */
	assert_int_equal(iodma_domain_map(d, IOVA_B, PG, b, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_domain_unmap(d, IOVA_B, PG), 0);
	assert_int_equal(atomic_load(&h.ended), 0);
	assert_int_equal(atomic_load(&h.waited_on), 0);
	/* The range it did translate is still waited for. */
	unmap_must_wait(&h, d, IOVA_A, PG);
	pthread_join(t, NULL);
	munmap(a, PG);
	munmap(b, PG);
	iodma_domain_destroy(d);
}

static void test_failed_translation_does_not_delay_an_unmap(void **state)
{
	(void)state;
	failed_call_does_not_delay(FAIL_TRANSLATE, false);
	failed_call_does_not_delay(FAIL_TRANSLATE, true);
	failed_call_does_not_delay(FAIL_CHECK, false);
	failed_call_does_not_delay(FAIL_NEXT, false);
	failed_call_does_not_delay(FAIL_READ, false);
	failed_call_does_not_delay(FAIL_READ, true);
}

/* A translation that failed part way gave its first slices: its range
 * stays recorded, and an unmap of what it gave waits. */
static void test_partly_failed_translation_still_holds(void **state)
{
	struct iodma_domain *d;
	char *a = page_alloc(1);
	struct holder h = { 0 };
	pthread_t t;

	(void)state;
	assert_int_equal(iodma_domain_create(NULL, &d), 0);
	assert_int_equal(iodma_domain_map(d, IOVA_A, PG, a, IODMA_PERM_RW), 0);
	h.d = d;
	h.iova = IOVA_A;
	h.len = 2 * PG; /* the second page is not mapped */
	h.expect_ret = -EFAULT;
	holder_start(&h, &t);
	unmap_must_wait(&h, d, IOVA_A, PG);
	pthread_join(t, NULL);
	munmap(a, PG);
	iodma_domain_destroy(d);
}

/* An unmapper already asleep on a section whose translation then fails
 * is woken and returns while the section stays open.  The translation is
 * held inside its resolver until the unmapper sleeps. */
struct slow_fail {
	struct iodma_domain *d;
	atomic_int in_resolver;
	atomic_int saw_waiter;
	struct holder h;
};

static int slow_fail_resolver(void *arg, struct iodma_domain *d, uint64_t iova,
			      uint32_t perm)
{
	struct slow_fail *x = arg;

	(void)d;
	(void)iova;
	(void)perm;
	atomic_store(&x->in_resolver, 1);
	for (long i = 0; i < SPIN_LIMIT && !xlate_test_section_waiters(); i++)
		sched_yield();
	atomic_store(&x->saw_waiter, xlate_test_section_waiters() != 0);
	return -ENOENT;
}

static void *slow_fail_main(void *arg)
{
	struct slow_fail *x = arg;
	struct iodma_slice s;
	size_t nr;

	iodma_access_begin();
	x->h.translate_ret = iodma_translate(x->d, IOVA_A, 8, IODMA_PERM_READ,
					    &s, 1, &nr, NULL);
	/* [B, B + 2 pages): B misses (the resolver runs), B + 1 page is
	 * mapped, and the unmapper unmaps that page. */
	x->h.fail_ret = iodma_translate(x->d, IOVA_B, 2 * PG, IODMA_PERM_READ,
					&s, 1, &nr, NULL);
	for (long i = 0; i < SPIN_LIMIT && !atomic_load(&x->h.unmap_returned); i++)
		sched_yield();
	atomic_store(&x->h.returned_while_open, atomic_load(&x->h.unmap_returned));
	atomic_store(&x->h.ended, 1);
	iodma_access_end();
	return NULL;
}

static void test_failed_translation_wakes_a_waiting_unmap(void **state)
{
	static struct slow_fail x;
	char *a = page_alloc(1), *b = page_alloc(1);
	struct unmapper u = { .iova = IOVA_B + PG, .len = PG, .op = OP_UNMAP };
	pthread_t t, tu;

	(void)state;
	memset(&x, 0, sizeof(x));
	assert_int_equal(iodma_domain_create(NULL, &x.d), 0);
	assert_int_equal(iodma_domain_map(x.d, IOVA_A, PG, a, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_domain_map(x.d, IOVA_B + PG, PG, b, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_xlate_set_resolver(x.d, slow_fail_resolver, &x), 0);
	assert_int_equal(pthread_create(&t, NULL, slow_fail_main, &x), 0);
	for (long i = 0; i < SPIN_LIMIT && !atomic_load(&x.in_resolver); i++)
		sched_yield();
	assert_int_equal(atomic_load(&x.in_resolver), 1);
	u.d = x.d;
	u.h = &x.h;
	assert_int_equal(pthread_create(&tu, NULL, unmapper_main, &u), 0);
	pthread_join(tu, NULL);
	assert_int_equal(u.ret, 0);
	pthread_join(t, NULL);
	assert_int_equal(x.h.translate_ret, 0);
	assert_int_equal(x.h.fail_ret, -EFAULT);
	assert_int_equal(atomic_load(&x.saw_waiter), 1);        /* it slept */
	assert_int_equal(atomic_load(&x.h.returned_while_open), 1); /* and woke */
	/* The section held A throughout; A is still mapped and unmaps now. */
	assert_int_equal(iodma_domain_unmap(x.d, IOVA_A, PG), 0);
	iodma_domain_destroy(x.d);
	munmap(a, PG);
	munmap(b, PG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		/* First: no thread has given back a record yet, so the new
		 * thread there must allocate one (and is made to fail). */
		cmocka_unit_test(test_section_without_a_record_is_waited_for),
		cmocka_unit_test(test_unmap_of_another_range_is_not_delayed),
		cmocka_unit_test(test_section_in_another_domain_does_not_delay),
		cmocka_unit_test(test_nested_sections_hold_until_the_outermost_end),
		cmocka_unit_test(test_unmap_all_waits_for_a_section_of_its_domain),
		cmocka_unit_test(test_set_enabled_waits_for_a_section_of_its_domain),
		cmocka_unit_test(test_overflowed_section_counts_as_touching_everything),
		cmocka_unit_test(test_thread_exit_gives_back_its_record),
		cmocka_unit_test(test_listener_unmap_event_cannot_translate_the_range),
		cmocka_unit_test(test_failed_unmap_restores_translation),
		cmocka_unit_test(test_unmap_needs_no_memory),
		cmocka_unit_test(test_destroy_inside_own_section),
		cmocka_unit_test(test_write_after_harvest_through_held_slice_is_reported),
		cmocka_unit_test(test_dirty_harvest_racing_writer_loses_no_write),
		cmocka_unit_test(test_failed_translation_does_not_delay_an_unmap),
		cmocka_unit_test(test_partly_failed_translation_still_holds),
		cmocka_unit_test(test_failed_translation_wakes_a_waiting_unmap),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
