/* SPDX-License-Identifier: MIT */
/* Unit tests: translation racing with map/unmap and region removal.  No
 * use after unmap: memory freed right after unmap (or region removal)
 * returns is never touched by a translator (a crash or an ASan report
 * otherwise), every successful read sees one whole pattern, and unmap does
 * not return while an access section that translated the range is open. */
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

#define PG ((uint64_t)iodma_page_size())
#define IOVA0 0x40000000ull
#define NR_READERS 3
#define MAP_ROUNDS 120
#define BUF_PAGES 2

struct race {
	struct iodma_domain *d;
	struct iodma_memory *m;     /* second test: two-stage */
	atomic_bool stop;
	atomic_ulong reads_ok;      /* successful reads, all readers */
	atomic_ulong reads_failed;  /* -EFAULT: nothing mapped right now */
	atomic_ulong torn;          /* a read that mixed patterns: must be 0 */
	atomic_ulong bad_errors;    /* anything but 0 / -EFAULT: must be 0 */
	atomic_int next_id;         /* reader 0 also calls iodma_iotlb_flush */
	bool zero;                  /* memory is all zero, not a pattern */
};

/* Every byte equal and non-zero (the pattern of one mapping round), or,
 * with @zero, every byte zero. */
static bool one_pattern(const unsigned char *p, size_t len, bool zero)
{
	if (!p[0] != zero)
		return false;
	for (size_t i = 1; i < len; i++)
		if (p[i] != p[0])
			return false;
	return true;
}

static void check_result(struct race *r, int ret, const unsigned char *buf,
			 size_t len)
{
	if (ret == 0) {
		atomic_fetch_add(&r->reads_ok, 1);
		if (!one_pattern(buf, len, r->zero))
			atomic_fetch_add(&r->torn, 1);
	} else if (ret == -EFAULT) {
		atomic_fetch_add(&r->reads_failed, 1);
	} else {
		atomic_fetch_add(&r->bad_errors, 1);
	}
}

static void *reader(void *arg)
{
	struct race *r = arg;
	unsigned char buf[256];
	int id = atomic_fetch_add(&r->next_id, 1);
	unsigned long i = 0;

	while (!atomic_load(&r->stop)) {
		uint64_t off = (i * 97) % (BUF_PAGES * PG - sizeof(buf));
		struct iodma_slice s[2];
		size_t nr;
		int ret;

		iodma_access_begin();
		if (i & 1) {
			ret = iodma_read(r->d, IOVA0 + off, buf, sizeof(buf));
			check_result(r, ret, buf, sizeof(buf));
		} else {
			/* Use the slices themselves inside the section. */
			ret = iodma_translate(r->d, IOVA0 + off, sizeof(buf),
					      IODMA_PERM_READ, s, 2, &nr, NULL);
			if (ret == 0) {
				size_t done = 0;

				for (size_t k = 0; k < nr; k++) {
					memcpy(buf + done, s[k].va, s[k].len);
					done += s[k].len;
				}
			}
			check_result(r, ret, buf, sizeof(buf));
		}
		iodma_access_end();
		if (id == 0 && i % 64 == 0)
			iodma_iotlb_flush(r->d);
		i++;
	}
	iodma_fault_pop(r->d, (struct iodma_fault[1]){ { 0 } }, 1);
	return NULL;
}

/* Wait until the readers have done a few more successful reads, or give
 * up after a bounded number of yields. */
static void let_readers_run(struct race *r)
{
	unsigned long start = atomic_load(&r->reads_ok);

	for (int i = 0; i < 100000 && atomic_load(&r->reads_ok) < start + 8; i++)
		sched_yield();
}

static void test_no_use_after_unmap_under_concurrent_translation(void **state)
{
	struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);
	static struct race r;
	pthread_t t[NR_READERS];

	(void)state;
	memset(&r, 0, sizeof(r));
	o.fault_log_entries = 16;
	assert_int_equal(iodma_domain_create(&o, &r.d), 0);
	for (int i = 0; i < NR_READERS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, reader, &r), 0);

	for (int round = 0; round < MAP_ROUNDS; round++) {
		size_t len = BUF_PAGES * PG;
		unsigned char *buf = mmap(NULL, len, PROT_READ | PROT_WRITE,
					  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		assert_true(buf != MAP_FAILED);
		memset(buf, 1 + round % 255, len);
		assert_int_equal(iodma_domain_map(r.d, IOVA0, len, buf, IODMA_PERM_READ), 0);
		/* Let the readers use it (bounded wait). */
		let_readers_run(&r);
		assert_int_equal(iodma_domain_unmap(r.d, IOVA0, len), 0);
		/* After unmap returns nobody may touch it. */
		assert_int_equal(munmap(buf, len), 0);
	}
	atomic_store(&r.stop, true);
	for (int i = 0; i < NR_READERS; i++)
		pthread_join(t[i], NULL);
	print_message("reads ok %lu, not mapped %lu\n", atomic_load(&r.reads_ok),
		      atomic_load(&r.reads_failed));
	assert_int_equal(atomic_load(&r.torn), 0);
	assert_int_equal(atomic_load(&r.bad_errors), 0);
	assert_true(atomic_load(&r.reads_ok) + atomic_load(&r.reads_failed) > 0);
	iodma_domain_destroy(r.d);
}

/* Two-stage: regions the library allocated are freed by remove_region
 * while translators read through them. */
static void test_no_use_after_region_removal(void **state)
{
	struct iodma_memory *m;
	static struct race r;
	pthread_t t[NR_READERS];
	const uint64_t gpa = 0x100000;

	(void)state;
	memset(&r, 0, sizeof(r));
	r.zero = true; /* fresh regions are zeroed; nobody writes them */
	assert_int_equal(iodma_memory_create(NULL, &m), 0);
	{
		struct iodma_domain_opts o = IODMA_OPTS_INIT(struct iodma_domain_opts);

		o.memory = m;
		o.fault_log_entries = 16;
		assert_int_equal(iodma_domain_create(&o, &r.d), 0);
	}
	assert_int_equal(iodma_domain_map_gpa(r.d, IOVA0, BUF_PAGES * PG, gpa,
					      IODMA_PERM_READ), 0);
	for (int i = 0; i < NR_READERS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, reader, &r), 0);
	for (int round = 0; round < MAP_ROUNDS / 2; round++) {
		assert_int_equal(iodma_memory_add_region(m, gpa, BUF_PAGES * PG,
							 round & 1 ? IODMA_REGION_ANON : 0,
							 NULL), 0);
		let_readers_run(&r);
		/* Frees (munmaps) the pages before it returns. */
		assert_int_equal(iodma_memory_remove_region(m, gpa), 0);
	}
	atomic_store(&r.stop, true);
	for (int i = 0; i < NR_READERS; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(atomic_load(&r.torn), 0);
	assert_int_equal(atomic_load(&r.bad_errors), 0);
	assert_true(atomic_load(&r.reads_ok) + atomic_load(&r.reads_failed) > 0);
	iodma_domain_destroy(r.d);
	iodma_memory_destroy(m);
}

/* ---- unmap waits for an open section ------------------------------------ */

struct waiter {
	struct iodma_domain *d;
	atomic_int in_section;     /* reader translated inside its section */
	atomic_int unmap_started;  /* main thread is about to unmap */
	atomic_int unmap_returned; /* unmap returned */
	atomic_int seen_returned_before_end; /* must stay 0 */
	atomic_int section_ended;
	int translate_ret;
};

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

static void *section_holder(void *arg)
{
	struct waiter *w = arg;
	struct iodma_slice s;
	size_t nr;

	iodma_access_begin();
	w->translate_ret = iodma_translate(w->d, IOVA0, 8, IODMA_PERM_READ,
					   &s, 1, &nr, NULL);
	atomic_store(&w->in_section, 1);
	/* Bounded wait for the unmapper to start, then give it time to get
	 * as far as it can (it must stop at the grace period). */
	for (int i = 0; i < 2000 && !atomic_load(&w->unmap_started); i++)
		sleep_ms(1);
	sleep_ms(100);
	if (atomic_load(&w->unmap_returned))
		atomic_store(&w->seen_returned_before_end, 1);
	/* The slice is still usable: the unmapper cannot have freed it. */
	(void)*(volatile char *)s.va;
	atomic_store(&w->section_ended, 1);
	iodma_access_end();
	return NULL;
}

static void test_unmap_waits_for_an_open_access_section(void **state)
{
	struct waiter w;
	pthread_t t;
	char *buf = mmap(NULL, PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	(void)state;
	memset(&w, 0, sizeof(w));
	assert_true(buf != MAP_FAILED);
	assert_int_equal(iodma_domain_create(NULL, &w.d), 0);
	assert_int_equal(iodma_domain_map(w.d, IOVA0, PG, buf, IODMA_PERM_READ), 0);
	assert_int_equal(pthread_create(&t, NULL, section_holder, &w), 0);
	for (int i = 0; i < 5000 && !atomic_load(&w.in_section); i++)
		sleep_ms(1);
	assert_int_equal(atomic_load(&w.in_section), 1);
	assert_int_equal(w.translate_ret, 0);
	atomic_store(&w.unmap_started, 1);
	assert_int_equal(iodma_domain_unmap(w.d, IOVA0, PG), 0);
	/* Order of events: the section ended before unmap returned. */
	assert_int_equal(atomic_load(&w.section_ended), 1);
	atomic_store(&w.unmap_returned, 1);
	pthread_join(t, NULL);
	assert_int_equal(atomic_load(&w.seen_returned_before_end), 0);
	munmap(buf, PG);
	iodma_domain_destroy(w.d);
}

/* ---- dirty logging under concurrent writes ------------------------------ */

#define DIRTY_WRITERS 3
#define DIRTY_PAGES   2048 /* per writer */

struct dirty_race {
	struct iodma_domain *d;
	atomic_int next_id;
	atomic_int done;
	atomic_int errors;
};

static void *dirty_writer(void *arg)
{
	struct dirty_race *r = arg;
	int id = atomic_fetch_add(&r->next_id, 1);

	/* Each page of this writer's share is written exactly once. */
	for (uint64_t j = 0; j < DIRTY_PAGES; j++) {
		uint64_t page = (uint64_t)id * DIRTY_PAGES + j;

		if (iodma_write(r->d, IOVA0 + page * PG + (j % 64), "w", 1))
			atomic_fetch_add(&r->errors, 1);
	}
	atomic_fetch_add(&r->done, 1);
	return NULL;
}

static void test_dirty_get_and_clear_loses_no_concurrent_write(void **state)
{
	const uint64_t pages = (uint64_t)DIRTY_WRITERS * DIRTY_PAGES;
	const size_t words = pages / 64;
	uint64_t *acc = calloc(words, sizeof(uint64_t));
	uint64_t *bm = calloc(words, sizeof(uint64_t));
	char *buf = mmap(NULL, pages * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	struct dirty_race r;
	pthread_t t[DIRTY_WRITERS];
	bool last = false;

	(void)state;
	memset(&r, 0, sizeof(r));
	assert_true(buf != MAP_FAILED);
	assert_int_equal(iodma_domain_create(NULL, &r.d), 0);
	assert_int_equal(iodma_domain_map(r.d, IOVA0, pages * PG, buf, IODMA_PERM_RW), 0);
	assert_int_equal(iodma_dirty_log_start(r.d), 0);
	for (int i = 0; i < DIRTY_WRITERS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, dirty_writer, &r), 0);
	/* Harvest while they write; one more pass after they finished. */
	while (!last) {
		last = atomic_load(&r.done) == DIRTY_WRITERS;
		assert_int_equal(iodma_dirty_get_and_clear(r.d, IOVA0, pages * PG,
							   bm, words), 0);
		/* A page may come twice: a write whose section overlapped a
		 * harvest is re-marked for the next one (xlate.h). */
		for (size_t w = 0; w < words; w++)
			acc[w] |= bm[w];
	}
	for (int i = 0; i < DIRTY_WRITERS; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(atomic_load(&r.errors), 0);
	for (size_t w = 0; w < words; w++)
		assert_int_equal(acc[w], ~0ull);
	assert_int_equal(iodma_dirty_log_stop(r.d), 0);
	iodma_domain_destroy(r.d);
	munmap(buf, pages * PG);
	free(acc);
	free(bm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unmap_waits_for_an_open_access_section),
		cmocka_unit_test(test_no_use_after_unmap_under_concurrent_translation),
		cmocka_unit_test(test_no_use_after_region_removal),
		cmocka_unit_test(test_dirty_get_and_clear_loses_no_concurrent_write),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
