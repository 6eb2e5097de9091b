/* SPDX-License-Identifier: MIT */
/*
 * freestanding.c - the platform layer with no OS: caller-supplied hooks
 * (iodma/platform.h), spinning locks, and access sections as a global
 * reader count that os_synchronize_rcu() waits to drain.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include <iodma/platform.h>

#include "os.h"
#include "../util.h"

static struct iodma_platform_ops plat;
static atomic_long rcu_readers;        /* open read-side sections, all CPUs */
static _Thread_local unsigned int rcu_nesting; /* per-CPU nesting depth */

IODMA_EXPORT int iodma_platform_init(const struct iodma_platform_ops *ops)
{
	struct iodma_platform_ops o = IODMA_OPTS_INIT(struct iodma_platform_ops);
	int err;

	if (!ops)
		return -EINVAL;
	err = opts_copy(&o, sizeof(o), ops,
			IODMA_OFFSETOFEND(struct iodma_platform_ops, relax));
	if (err)
		return err;
	if (!o.malloc || !o.free || !o.pages_alloc || !o.pages_free ||
	    o.page_size == 0 || (o.page_size & (o.page_size - 1)))
		return -EINVAL;
	plat = o;
	return 0;
}

static void relax(void)
{
	if (plat.relax)
		plat.relax();
}

void *os_malloc(size_t len) { return plat.malloc(len); }
void *os_realloc(void *p, size_t len) { return plat.realloc ? plat.realloc(p, len) : NULL; }
void os_free(void *p) { if (p) plat.free(p); }

void *os_calloc(size_t n, size_t len)
{
	void *p;

	if (len && n > (size_t)-1 / len)
		return NULL;
	p = plat.malloc(n * len);
	if (p)
		memset(p, 0, n * len);
	return p;
}

void os_mutex_init(os_mutex_t *m)
{
	atomic_flag_clear(&m->f);
#ifndef NDEBUG
	atomic_init(&m->held, false);
#endif
}
void os_mutex_destroy(os_mutex_t *m) { (void)m; }
void os_mutex_lock(os_mutex_t *m)
{
	while (atomic_flag_test_and_set_explicit(&m->f, memory_order_acquire))
		relax();
#ifndef NDEBUG
	atomic_store_explicit(&m->held, true, memory_order_relaxed);
#endif
}
void os_mutex_unlock(os_mutex_t *m)
{
#ifndef NDEBUG
	assert(atomic_load_explicit(&m->held, memory_order_relaxed));
	atomic_store_explicit(&m->held, false, memory_order_relaxed);
#endif
	atomic_flag_clear_explicit(&m->f, memory_order_release);
}
#ifndef NDEBUG
/* No thread identity without an OS: "held by someone". */
bool os_mutex_held(const os_mutex_t *m)
{
	return atomic_load_explicit(&m->held, memory_order_relaxed);
}
#endif

void os_rwlock_init(os_rwlock_t *l) { atomic_init(&l->v, 0); }
void os_rwlock_destroy(os_rwlock_t *l) { (void)l; }
void os_rwlock_rdlock(os_rwlock_t *l)
{
	for (;;) {
		int v = atomic_load_explicit(&l->v, memory_order_relaxed);

		if (v >= 0 && atomic_compare_exchange_weak_explicit(&l->v, &v, v + 1,
				memory_order_acquire, memory_order_relaxed))
			return;
		relax();
	}
}
void os_rwlock_wrlock(os_rwlock_t *l)
{
	for (;;) {
		int v = 0;

		if (atomic_compare_exchange_weak_explicit(&l->v, &v, -1,
				memory_order_acquire, memory_order_relaxed))
			return;
		relax();
	}
}
void os_rwlock_unlock(os_rwlock_t *l)
{
	if (atomic_load_explicit(&l->v, memory_order_relaxed) == -1)
		atomic_store_explicit(&l->v, 0, memory_order_release);
	else
		atomic_fetch_sub_explicit(&l->v, 1, memory_order_release);
}

void os_rcu_read_lock(void)
{
	if (rcu_nesting++ == 0)
		atomic_fetch_add_explicit(&rcu_readers, 1, memory_order_seq_cst);
}

void os_rcu_read_unlock(void)
{
	if (--rcu_nesting == 0)
		atomic_fetch_sub_explicit(&rcu_readers, 1, memory_order_seq_cst);
}

void os_synchronize_rcu(void)
{
	/* Every section open now has ended once the count has been zero once. */
	while (atomic_load_explicit(&rcu_readers, memory_order_seq_cst) != 0)
		relax();
}

void os_wait_on(_Atomic uint32_t *addr, uint32_t val)
{
	/* No scheduler to sleep in: spin until the word changes. */
	while (atomic_load_explicit(addr, memory_order_acquire) == val)
		relax();
}

void os_wake_all(_Atomic uint32_t *addr)
{
	(void)addr; /* spinning waiters see the change by themselves */
}

int os_membarrier(void)
{
	return -ENOSYS; /* readers fence for themselves */
}

void os_yield(void)
{
	relax();
}

int os_thread_on_exit(void (*fn)(void *arg), void *arg)
{
	(void)fn; /* a CPU never exits: its records live as long as the image */
	(void)arg;
	return 0;
}

unsigned int os_thread_slot(void)
{
	return plat.thread_slot ? plat.thread_slot() : 0;
}

size_t os_page_size(void)
{
	return plat.page_size;
}

int os_pages_alloc(size_t len, uint32_t flags, void **va, int *fd)
{
	(void)flags; /* no fds, no huge pages, nothing to lock without an OS */
	if (fd)
		*fd = -1;
	return plat.pages_alloc(len, flags, va, fd);
}

void os_pages_free(void *va, size_t len, int fd)
{
	plat.pages_free(va, len, fd);
}

int os_virt_to_phys(const void *va, uint64_t *pa)
{
	return plat.virt_to_phys ? plat.virt_to_phys(va, pa) : -EOPNOTSUPP;
}

/* No pagemap to batch: the platform's single-page hook, page by page. */
int os_virt_to_phys_range(const void *va, size_t npages, uint64_t *out,
			  size_t *failed)
{
	size_t pg = os_page_size();
	uintptr_t page = (uintptr_t)va & ~(uintptr_t)(pg - 1);

	if (!npages || !out || npages - 1 > (UINTPTR_MAX - page) / pg)
		return -EINVAL;
	for (size_t i = 0; i < npages; i++) {
		int err = os_virt_to_phys((const void *)(page + i * pg), &out[i]);

		if (err) {
			if (failed && (err == -EFAULT || err == -EPERM))
				*failed = i;
			return err;
		}
		out[i] &= ~(uint64_t)(pg - 1);
	}
	return 0;
}

/* No scheduler: waiting is spinning, and without a clock a bounded wait
 * cannot be measured, so it gives up at once (os.h). */
void os_cond_init(os_cond_t *c) { atomic_init(&c->seq, 0); }
void os_cond_destroy(os_cond_t *c) { (void)c; }
void os_cond_broadcast(os_cond_t *c)
{
	atomic_fetch_add_explicit(&c->seq, 1, memory_order_release);
}
int os_cond_timedwait(os_cond_t *c, os_mutex_t *m, uint64_t deadline_ns)
{
	unsigned int s = atomic_load_explicit(&c->seq, memory_order_acquire);

	os_mutex_unlock(m);
	if (deadline_ns == UINT64_MAX) {
		while (atomic_load_explicit(&c->seq, memory_order_acquire) == s)
			relax();
	}
	os_mutex_lock(m);
	return deadline_ns == UINT64_MAX ? 0 : -ETIMEDOUT;
}
uint64_t os_now_ns(void) { return 0; }

/* No processes, no fds: nothing to share memory or messages with. */
int os_map_fd_shared(int fd, uint64_t offset, uint64_t len, void **va)
{
	(void)fd; (void)offset; (void)len; (void)va;
	return -ENOSYS;
}
void os_unmap(void *va, uint64_t len) { (void)va; (void)len; }
void os_close(int fd) { (void)fd; }
int os_unix_send(int fd, const void *buf, size_t len, const int *fds,
		 size_t nfds, bool nonblock)
{
	(void)fd; (void)buf; (void)len; (void)fds; (void)nfds; (void)nonblock;
	return -ENOSYS;
}
int os_unix_recv(int fd, void *buf, size_t len, int *fds, size_t max_fds,
		 size_t *nfds, uint64_t deadline_ns, size_t *got)
{
	(void)fd; (void)buf; (void)len; (void)fds; (void)max_fds; (void)nfds;
	(void)deadline_ns;
	if (got)
		*got = 0;
	return -ENOSYS;
}
