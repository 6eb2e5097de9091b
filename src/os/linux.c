/* SPDX-License-Identifier: MIT */
/*
 * linux.c - the platform layer on Linux: pthreads, liburcu-bp, mmap/memfd,
 * /proc/self/pagemap.
 */

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sched.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "os.h"

/* Milliseconds for poll(), rounded up, capped at INT_MAX. */
#define IODMA_OS_MIN_MS(ns) \
	((ns) / 1000000u + 1 > 0x7fffffffu ? 0x7fffffffu : (ns) / 1000000u + 1)

void *os_malloc(size_t len) { return malloc(len); }
void *os_calloc(size_t n, size_t len) { return calloc(n, len); }
void *os_realloc(void *p, size_t len) { return realloc(p, len); }
void os_free(void *p) { free(p); }

#ifdef NDEBUG
void os_mutex_init(os_mutex_t *m) { pthread_mutex_init(m, NULL); }
void os_mutex_destroy(os_mutex_t *m) { pthread_mutex_destroy(m); }
void os_mutex_lock(os_mutex_t *m) { pthread_mutex_lock(m); }
void os_mutex_unlock(os_mutex_t *m) { pthread_mutex_unlock(m); }
#define OS_PMUTEX(m) (m)
#else
/* The address of a thread-local object: unique among live threads, never
 * 0. */
static _Thread_local char os_self;
#define OS_ME() ((uintptr_t)&os_self)
#define OS_PMUTEX(m) (&(m)->m)

void os_mutex_init(os_mutex_t *m)
{
	pthread_mutex_init(&m->m, NULL);
	atomic_init(&m->owner, 0);
}
void os_mutex_destroy(os_mutex_t *m)
{
	assert(atomic_load_explicit(&m->owner, memory_order_relaxed) == 0);
	pthread_mutex_destroy(&m->m);
}
void os_mutex_lock(os_mutex_t *m)
{
	pthread_mutex_lock(&m->m);
	atomic_store_explicit(&m->owner, OS_ME(), memory_order_relaxed);
}
void os_mutex_unlock(os_mutex_t *m)
{
	assert(atomic_load_explicit(&m->owner, memory_order_relaxed) == OS_ME());
	atomic_store_explicit(&m->owner, 0, memory_order_relaxed);
	pthread_mutex_unlock(&m->m);
}
/* Only the holder stores its own identity, and it stores 0 before it
 * releases: a thread reads its own identity here exactly when it holds
 * @m, whatever other threads do meanwhile. */
bool os_mutex_held(const os_mutex_t *m)
{
	return atomic_load_explicit(&m->owner, memory_order_relaxed) == OS_ME();
}
#endif

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

void os_cond_init(os_cond_t *c)
{
	pthread_condattr_t a;

	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(c, &a);
	pthread_condattr_destroy(&a);
}
void os_cond_destroy(os_cond_t *c) { pthread_cond_destroy(c); }
void os_cond_broadcast(os_cond_t *c) { pthread_cond_broadcast(c); }

uint64_t os_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A condition wait drops the mutex while it sleeps: so does the owner. */
#ifdef NDEBUG
#define OS_COND_RELEASE(m)    ((void)0)
#define OS_COND_REACQUIRED(m) ((void)0)
#else
#define OS_COND_RELEASE(m) \
	(assert(os_mutex_held(m)), \
	 atomic_store_explicit(&(m)->owner, 0, memory_order_relaxed))
#define OS_COND_REACQUIRED(m) \
	atomic_store_explicit(&(m)->owner, OS_ME(), memory_order_relaxed)
#endif

int os_cond_timedwait(os_cond_t *c, os_mutex_t *m, uint64_t deadline_ns)
{
	struct timespec ts;
	int r;

	if (deadline_ns == UINT64_MAX) {
		OS_COND_RELEASE(m);
		pthread_cond_wait(c, OS_PMUTEX(m));
		OS_COND_REACQUIRED(m);
		return 0;
	}
	if (os_now_ns() >= deadline_ns)
		return -ETIMEDOUT;
	ts.tv_sec = (time_t)(deadline_ns / 1000000000ull);
	ts.tv_nsec = (long)(deadline_ns % 1000000000ull);
	OS_COND_RELEASE(m);
	r = pthread_cond_timedwait(c, OS_PMUTEX(m), &ts);
	OS_COND_REACQUIRED(m);
	return r == ETIMEDOUT ? -ETIMEDOUT : 0;
}

/* urcu-bp registers a thread on its first read-side lock and unregisters it
 * when the thread exits, so callers never register anything.  The read
 * side is inline in os.h. */
#if defined(__SANITIZE_THREAD__)
char os_rcu_tsan_hb; /* see os_rcu_read_unlock() */

void os_synchronize_rcu(void)
{
	urcu_bp_synchronize_rcu();
	__tsan_acquire(&os_rcu_tsan_hb);
}
#else
void os_synchronize_rcu(void) { urcu_bp_synchronize_rcu(); }
#endif

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

/* 0 unknown, 1 usable, -1 not available (ENOSYS / EINVAL / EPERM). */
static _Atomic int membarrier_state;

int os_membarrier(void)
{
	int st = atomic_load_explicit(&membarrier_state, memory_order_acquire);

	if (st == 0) {
		/* Registration is idempotent: racing first callers are fine. */
		st = syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
			     0, 0) == 0 ? 1 : -1;
		atomic_store_explicit(&membarrier_state, st, memory_order_release);
	}
	if (st < 0)
		return -ENOSYS;
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0) {
		/* Registered, so this cannot fail but for a broken seccomp
		 * filter: say so once and for all (callers then fence). */
		atomic_store_explicit(&membarrier_state, -1, memory_order_release);
		return -ENOSYS;
	}
	return 0;
}

void os_yield(void)
{
	sched_yield();
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

_Thread_local unsigned int os_tls_slot __attribute__((tls_model("initial-exec")));

unsigned int os_thread_slot_assign(void)
{
	static atomic_ullong next;
	unsigned long long n = atomic_fetch_add_explicit(&next, 1, memory_order_relaxed);
	/* Numbers are never handed out twice (OS_THREAD_SLOT_UNIQUE): after
	 * 2^32 - 2 threads every new one shares the last number. */
	unsigned int slot = n < UINT_MAX - 1 ? (unsigned int)n : UINT_MAX - 1;

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
 * up every page: an open and a close each time doubled the syscalls).
 * "self" is resolved at open: a forked child inherits a descriptor that
 * reads its parent's page table (with the parent's credentials), so the
 * child forgets it and opens its own. */
static atomic_int pagemap_cached = -1;

static void pagemap_forget_in_child(void)
{
	int fd = atomic_exchange(&pagemap_cached, -1);

	if (fd >= 0)
		close(fd);
}

static void pagemap_atfork(void)
{
	pthread_atfork(NULL, NULL, pagemap_forget_in_child);
}

static int pagemap_fd(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	atomic_int *cached = &pagemap_cached;
	int fd = atomic_load_explicit(cached, memory_order_acquire);
	int expected = -1;

	if (fd >= 0)
		return fd;
	pthread_once(&once, pagemap_atfork);
	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (!atomic_compare_exchange_strong(cached, &expected, fd)) {
		close(fd); /* another thread won */
		fd = expected;
	}
	return fd;
}

/*
 * Fault [page, page + len) in writable where it can be.  A private page
 * never written is the kernel's shared zero page until its first write:
 * reading it in would report that frame, and a device would then write
 * into memory every process reads as zeros.  MADV_POPULATE_WRITE (5.14+)
 * breaks the sharing without touching the data; before it, mlock does (for
 * a private writable mapping it faults for write), and the pages stay
 * locked, which direct-mode DMA wants anyway.  A read-only page can only be
 * a DMA source: there a read fault (the madvise says EINVAL, mlock faults
 * it for read), and the zero page's zeros are its contents.  A range
 * madvise cannot take whole (a read-only or unmapped page in it) is done
 * page by page.  Returns 0, or -EFAULT with *@failed for an unmapped page
 * (madvise's ENOMEM: nothing there to touch).
 */
static int populate(uintptr_t page, size_t npages, size_t pg, size_t *failed)
{
	if (madvise((void *)page, npages * pg, MADV_POPULATE_WRITE) == 0)
		return 0;
	for (size_t i = 0; i < npages; i++) {
		void *p = (void *)(page + i * pg);

		if (madvise(p, pg, MADV_POPULATE_WRITE) == 0)
			continue;
		if (errno == ENOMEM) {
			*failed = i;
			return -EFAULT;
		}
		if (errno != EINVAL || mlock(p, pg) != 0)
			(void)*(const volatile char *)p;
	}
	return 0;
}

/* Read @n pagemap entries from index @first into @out (pread may stop
 * short of the whole request: continue where it stopped). */
static int pagemap_read(int fd, uint64_t first, size_t n, uint64_t *out)
{
	size_t want = n * sizeof(*out), got = 0;

	while (got < want) {
		ssize_t r = pread(fd, (char *)out + got, want - got,
				  (off_t)(first * sizeof(*out) + got));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EIO;
		got += (size_t)r;
	}
	return 0;
}

#define PM_PRESENT  (1ull << 63)
#define PM_PFN_MASK ((1ull << 55) - 1) /* PFN bits 0-54 */

int os_virt_to_phys_range(const void *va, size_t npages, uint64_t *out,
			  size_t *failed)
{
	size_t pg = os_page_size(), bad = 0;
	uintptr_t page = (uintptr_t)va & ~(uintptr_t)(pg - 1);
	uint64_t first = page / pg;
	bool retried = false;
	int fd, err;

	if (!npages || !out || npages - 1 > (UINTPTR_MAX - page) / pg)
		return -EINVAL;
	fd = pagemap_fd();
	if (fd < 0)
		return fd;
	err = populate(page, npages, pg, &bad);
	if (err)
		goto fail;
again:
	err = pagemap_read(fd, first, npages, out);
	if (err)
		return err;
	for (size_t i = 0; i < npages; i++) {
		if (out[i] & PM_PRESENT)
			continue;
		/*
		 * madvise can return 0 without faulting anything in: qemu-user
		 * accepts advice it does not pass to the kernel (found running
		 * the unit suite under qemu-aarch64).  Pages still not present
		 * get the mlock route, then one more look.
		 */
		if (retried) {
			bad = i;
			err = -EFAULT;
			goto fail;
		}
		for (size_t j = i; j < npages; j++) {
			void *p = (void *)(page + j * pg);

			if ((out[j] & PM_PRESENT) || mlock(p, pg) == 0)
				continue;
			/* Not mapped at all (qemu-user's madvise said 0 for
			 * it too): msync(2) says so without a SIGSEGV. */
			if (msync(p, pg, MS_ASYNC) != 0 && errno == ENOMEM) {
				bad = j;
				err = -EFAULT;
				goto fail;
			}
			(void)*(const volatile char *)p;
		}
		retried = true;
		goto again;
	}
	for (size_t i = 0; i < npages; i++) {
		uint64_t pfn = out[i] & PM_PFN_MASK;

		if (pfn == 0) {
			bad = i;
			err = -EPERM; /* PFNs hidden without CAP_SYS_ADMIN */
			goto fail;
		}
		out[i] = pfn * pg;
	}
	return 0;
fail:
	if (failed)
		*failed = bad;
	return err;
}

int os_virt_to_phys(const void *va, uint64_t *pa)
{
	uint64_t page;
	int err = os_virt_to_phys_range(va, 1, &page, NULL);

	if (err)
		return err;
	*pa = page + ((uintptr_t)va & (os_page_size() - 1));
	return 0;
}

int os_map_fd_shared(int fd, uint64_t offset, uint64_t len, void **va)
{
	struct stat st;
	void *p;

	if (fd < 0 || len == 0 || len > SIZE_MAX || offset > (uint64_t)INT64_MAX ||
	    len > (uint64_t)INT64_MAX - offset)
		return -EINVAL;
	if (fstat(fd, &st) < 0)
		return -errno;
	/* Touching a shared mapping past the end of its file raises SIGBUS:
	 * refuse what is visibly short now (a hostile peer may still shrink
	 * an unsealed file later). */
	if (S_ISREG(st.st_mode) && (uint64_t)st.st_size < offset + len)
		return -EINVAL;
	p = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		 (off_t)offset);
	if (p == MAP_FAILED)
		return -errno;
	*va = p;
	return 0;
}

void os_unmap(void *va, uint64_t len)
{
	if (va)
		munmap(va, (size_t)len);
}

void os_close(int fd)
{
	if (fd >= 0)
		close(fd);
}

#define OS_UNIX_MAX_FDS 8

int os_unix_send(int fd, const void *buf, size_t len, const int *fds,
		 size_t nfds, bool nonblock)
{
	union {
		char buf[CMSG_SPACE(OS_UNIX_MAX_FDS * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	const char *p = buf;
	size_t off = 0;

	if (fd < 0 || (len && !buf) || nfds > OS_UNIX_MAX_FDS || (nfds && !fds) ||
	    (nfds && !len))
		return -EINVAL;
	while (off < len) {
		struct iovec iov = { .iov_base = (void *)(p + off),
				     .iov_len = len - off };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		ssize_t n;

		if (off == 0 && nfds) {
			struct cmsghdr *c;

			memset(&ctl, 0, sizeof(ctl));
			mh.msg_control = ctl.buf;
			mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
			c = CMSG_FIRSTHDR(&mh);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
			memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
		}
		n = sendmsg(fd, &mh, MSG_NOSIGNAL |
			    (nonblock && off == 0 ? MSG_DONTWAIT : 0));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		off += (size_t)n;
	}
	return 0;
}

/* Close the fds of every SCM_RIGHTS block in @mh. */
static void cmsg_close_all(struct msghdr *mh)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		size_t n;
		int v;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			memcpy(&v, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			close(v);
		}
	}
}

int os_unix_recv(int fd, void *buf, size_t len, int *fds, size_t max_fds,
		 size_t *nfds, uint64_t deadline_ns, size_t *got)
{
	/* Room for more fds than anyone may send, so that an excess is seen
	 * (and closed) rather than truncated by the kernel. */
	union {
		char buf[CMSG_SPACE(4 * OS_UNIX_MAX_FDS * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	size_t first = *nfds, off = 0;
	char *p = buf;
	int ret = 0;

	if (got)
		*got = 0;
	while (off < len) {
		struct iovec iov = { .iov_base = p + off, .iov_len = len - off };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
				     .msg_control = ctl.buf,
				     .msg_controllen = sizeof(ctl.buf) };
		ssize_t n;

		if (deadline_ns != UINT64_MAX) {
			struct pollfd pfd = { .fd = fd, .events = POLLIN };
			uint64_t now = os_now_ns();
			int r;

			if (now >= deadline_ns) {
				ret = -ETIMEDOUT;
				break;
			}
			r = poll(&pfd, 1, (int)IODMA_OS_MIN_MS(deadline_ns - now));
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0) {
				ret = -errno;
				break;
			}
			if (r == 0)
				continue; /* the deadline check above ends it */
		}
		n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			break;
		}
		if (n == 0) {
			cmsg_close_all(&mh);
			ret = -ECONNRESET;
			break;
		}
		if (mh.msg_flags & MSG_CTRUNC) {
			cmsg_close_all(&mh);
			ret = -EMSGSIZE;
			break;
		}
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c;
		     c = CMSG_NXTHDR(&mh, c)) {
			size_t k;

			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < k; i++) {
				int v;

				memcpy(&v, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
				if (*nfds < max_fds) {
					fds[(*nfds)++] = v;
				} else {
					close(v);
					ret = -EMSGSIZE;
				}
			}
		}
		off += (size_t)n;
		if (ret)
			break;
	}
	if (got)
		*got = off;
	if (ret) {
		while (*nfds > first)
			close(fds[--*nfds]);
	}
	return ret;
}
