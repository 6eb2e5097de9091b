/* SPDX-License-Identifier: MIT */
/*
 * linux.c - the platform layer on Linux: pthreads, liburcu-bp, mmap/memfd,
 * /proc/self/pagemap.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "os.h"

void *os_malloc(size_t len) { return malloc(len); }
void *os_calloc(size_t n, size_t len) { return calloc(n, len); }
void *os_realloc(void *p, size_t len) { return realloc(p, len); }
void os_free(void *p) { free(p); }

void os_mutex_init(os_mutex_t *m) { pthread_mutex_init(m, NULL); }
void os_mutex_destroy(os_mutex_t *m) { pthread_mutex_destroy(m); }
void os_mutex_lock(os_mutex_t *m) { pthread_mutex_lock(m); }
void os_mutex_unlock(os_mutex_t *m) { pthread_mutex_unlock(m); }

void os_rwlock_init(os_rwlock_t *l)
{
	pthread_rwlockattr_t a;

	pthread_rwlockattr_init(&a);
	/* Writers (map/unmap) must not starve behind a stream of translation
	 * misses. */
	pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(l, &a);
	pthread_rwlockattr_destroy(&a);
}
void os_rwlock_destroy(os_rwlock_t *l) { pthread_rwlock_destroy(l); }
void os_rwlock_rdlock(os_rwlock_t *l) { pthread_rwlock_rdlock(l); }
void os_rwlock_wrlock(os_rwlock_t *l) { pthread_rwlock_wrlock(l); }
void os_rwlock_unlock(os_rwlock_t *l) { pthread_rwlock_unlock(l); }

/* urcu-bp registers a thread on its first read-side lock and unregisters it
 * when the thread exits, so callers never register anything.  The read
 * side is inline in os.h. */
void os_synchronize_rcu(void) { urcu_bp_synchronize_rcu(); }

/* Futexes: the waiter sleeps in the kernel only while the word still holds
 * @val (the kernel compares under its own lock, so a wake that follows a
 * change of the word is never lost); EINTR and EAGAIN just return. */
void os_wait_on(_Atomic uint32_t *addr, uint32_t val)
{
	syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

void os_wake_all(_Atomic uint32_t *addr)
{
	syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* One key for the process; its destructor runs the hook with the value the
 * exiting thread registered (glibc runs destructors before TLS goes). */
static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;
static int exit_key_err;
static void (*_Atomic exit_fn)(void *arg);

static void exit_trampoline(void *arg)
{
	void (*fn)(void *) = atomic_load(&exit_fn);

	if (fn && arg)
		fn(arg);
}

static void exit_key_create(void)
{
	exit_key_err = pthread_key_create(&exit_key, exit_trampoline);
}

int os_thread_on_exit(void (*fn)(void *arg), void *arg)
{
	pthread_once(&exit_once, exit_key_create);
	if (exit_key_err)
		return -exit_key_err;
	atomic_store(&exit_fn, fn);
	return -pthread_setspecific(exit_key, arg);
}

_Thread_local unsigned int os_tls_slot;

unsigned int os_thread_slot_assign(void)
{
	static atomic_uint next;
	unsigned int slot = atomic_fetch_add_explicit(&next, 1, memory_order_relaxed);

	/* slot + 1 wraps to 0 only after 2^32 threads: then stay unassigned
	 * and take a fresh number each time, which is still correct. */
	os_tls_slot = slot + 1;
	return slot;
}

size_t os_page_size(void)
{
	static atomic_size_t cached;
	size_t p = atomic_load_explicit(&cached, memory_order_relaxed);

	if (!p) {
		long v = sysconf(_SC_PAGESIZE);
		p = v > 0 ? (size_t)v : 4096;
		atomic_store_explicit(&cached, p, memory_order_relaxed);
	}
	return p;
}

int os_pages_alloc(size_t len, uint32_t flags, void **va, int *fd)
{
	int mfd = -1;
	void *p;

	if (flags & OS_PAGES_HUGETLB)
		flags |= OS_PAGES_SHARED;
	if (flags & OS_PAGES_SHARED) {
		unsigned int mflags = MFD_CLOEXEC;

		if (flags & OS_PAGES_HUGETLB)
			mflags |= MFD_HUGETLB;
		mfd = memfd_create("iodma", mflags);
		if (mfd < 0)
			return -errno;
		if (ftruncate(mfd, (off_t)len) < 0) {
			int e = -errno;
			close(mfd);
			return e;
		}
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	} else {
		p = mmap(NULL, len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	}
	if (p == MAP_FAILED) {
		int e = -errno;
		if (mfd >= 0)
			close(mfd);
		return e;
	}
	if ((flags & OS_PAGES_LOCKED) && mlock(p, len) < 0) {
		int e = -errno;
		munmap(p, len);
		if (mfd >= 0)
			close(mfd);
		return e;
	}
	*va = p;
	if (fd)
		*fd = mfd;
	else if (mfd >= 0)
		close(mfd);
	return 0;
}

void os_pages_free(void *va, size_t len, int fd)
{
	if (va)
		munmap(va, len);
	if (fd >= 0)
		close(fd);
}

/* /proc/self/pagemap, opened once for the process (direct-mode maps look
 * up every page: an open and a close each time doubled the syscalls). */
static int pagemap_fd(void)
{
	static atomic_int cached = -1;
	int fd = atomic_load_explicit(&cached, memory_order_acquire);
	int expected = -1;

	if (fd >= 0)
		return fd;
	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (!atomic_compare_exchange_strong(&cached, &expected, fd)) {
		close(fd); /* another thread won */
		fd = expected;
	}
	return fd;
}

int os_virt_to_phys(const void *va, uint64_t *pa)
{
	size_t pg = os_page_size();
	uint64_t entry;
	uintptr_t v = (uintptr_t)va;
	off_t off = (off_t)(v / pg * sizeof(entry));
	int fd = pagemap_fd();
	ssize_t n;

	if (fd < 0)
		return fd;
	/*
	 * Fault the page in writable.  A private page never written is the
	 * kernel's shared zero page until its first write: reading it in would
	 * report that frame, and a device would then write into memory every
	 * process reads as zeros.  MADV_POPULATE_WRITE (5.14+) breaks the
	 * sharing without touching the data; before it, mlock does (for a
	 * private writable mapping it faults for write), and the page stays
	 * locked, which direct-mode DMA wants anyway.  A read-only page can
	 * only be a DMA source: there a read fault, and the zero page's zeros
	 * are its contents.
	 */
	if (madvise((void *)(v & ~(uintptr_t)(pg - 1)), pg, MADV_POPULATE_WRITE) != 0) {
		if (errno != EINVAL ||
		    mlock((const void *)(v & ~(uintptr_t)(pg - 1)), pg) != 0)
			(void)*(const volatile char *)va;
	}
	n = pread(fd, &entry, sizeof(entry), off);
	if (n != (ssize_t)sizeof(entry))
		return n < 0 ? -errno : -EIO;
	if (!(entry & (1ull << 63)))
		return -EFAULT; /* not present */
	entry &= (1ull << 55) - 1; /* PFN bits 0-54 */
	if (entry == 0)
		return -EPERM; /* PFNs hidden without CAP_SYS_ADMIN */
	*pa = entry * pg + (v & (pg - 1));
	return 0;
}
