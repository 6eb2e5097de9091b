/* SPDX-License-Identifier: MIT */
/*
 * os.h - the platform layer: the only place the core reaches the OS.
 *
 * The core (domain, mapping table, IOVA allocator, IOTLB, bounce pool,
 * dma.c) calls these and nothing else of the platform, so it builds with
 * -ffreestanding.  Two implementations:
 *   src/os/linux.c         pthreads, liburcu (bullet-proof flavour: threads
 *                          register themselves on first use), mmap/memfd,
 *                          /proc/self/pagemap;
 *   src/os/freestanding.c  caller-supplied hooks (bare metal).
 */
#ifndef IODMA_OS_H
#define IODMA_OS_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdatomic.h>

/*
 * os_mutex_t carries, in debug builds (NDEBUG undefined), who holds it, so
 * that a helper that must run under a lock can assert it
 * (os_mutex_assert_held(), the *_locked helpers; Linux's
 * lockdep_assert_held() in iova.c and the iommu drivers).  Release builds
 * (NDEBUG) have the bare lock and no check: zero cost.
 */
#if defined(IODMA_FREESTANDING)
/* A spinning lock: bare-metal code has no scheduler to sleep on.  Without
 * a thread identity the debug check is "held by someone". */
#ifdef NDEBUG
typedef struct { atomic_flag f; } os_mutex_t;
#else
typedef struct { atomic_flag f; atomic_bool held; } os_mutex_t;
#endif
typedef struct { atomic_int v; } os_rwlock_t; /* >0 readers, -1 writer */
typedef struct { atomic_uint seq; } os_cond_t;  /* spins: no scheduler */
#else
#include <pthread.h>
#ifdef NDEBUG
typedef pthread_mutex_t os_mutex_t;
#else
/* @owner: the holder's thread identity, 0 when free (atomic: another
 * thread's assertion reads it while the holder writes it). */
typedef struct { pthread_mutex_t m; _Atomic uintptr_t owner; } os_mutex_t;
#endif
typedef pthread_rwlock_t os_rwlock_t;
typedef pthread_cond_t os_cond_t;
#endif

/* ---- memory for the library's own objects ------------------------------- */
void *os_malloc(size_t len);
void *os_calloc(size_t n, size_t len);
void *os_realloc(void *p, size_t len);
void os_free(void *p);

/* ---- locks ---------------------------------------------------------------- */
void os_mutex_init(os_mutex_t *m);
void os_mutex_destroy(os_mutex_t *m);
void os_mutex_lock(os_mutex_t *m);
void os_mutex_unlock(os_mutex_t *m);
/* os_mutex_assert_held(@m): abort (assert) unless the calling thread holds
 * @m (freestanding: unless someone holds it).  At the top of every
 * *_locked helper.  Compiled out with NDEBUG. */
#ifdef NDEBUG
#define os_mutex_assert_held(m) ((void)(m))
#else
#include <assert.h>
bool os_mutex_held(const os_mutex_t *m);
#define os_mutex_assert_held(m) assert(os_mutex_held(m))
#endif
void os_rwlock_init(os_rwlock_t *l);
void os_rwlock_destroy(os_rwlock_t *l);
void os_rwlock_rdlock(os_rwlock_t *l);
void os_rwlock_wrlock(os_rwlock_t *l);
void os_rwlock_unlock(os_rwlock_t *l);

/* Condition variables on the monotonic clock.  os_cond_timedwait() waits
 * until signalled or until os_now_ns() >= @deadline_ns (UINT64_MAX = no
 * deadline); it may wake spuriously, so callers loop on their predicate.
 * Returns 0, or -ETIMEDOUT once the deadline has passed.  Freestanding:
 * there is no clock, so a wait drops and retakes the mutex once and
 * reports -ETIMEDOUT unless @deadline_ns is UINT64_MAX. */
void os_cond_init(os_cond_t *c);
void os_cond_destroy(os_cond_t *c);
void os_cond_broadcast(os_cond_t *c);
int os_cond_timedwait(os_cond_t *c, os_mutex_t *m, uint64_t deadline_ns);
/* Monotonic time in ns (freestanding: 0). */
uint64_t os_now_ns(void);

/* ---- RCU: access sections ------------------------------------------------- */
/* Waits until every read-side section open at the call has ended.
 * Must not be called inside a read-side section. */
void os_synchronize_rcu(void);

/* ---- waiting on a word ---------------------------------------------------- */
/* os_wait_on(): returns once *@addr may differ from @val: at once if it
 * already does, else after an os_wake_all(@addr) or spuriously (callers
 * re-check in a loop).  Linux: FUTEX_WAIT_PRIVATE, no timeout; freestanding:
 * spins with the platform's relax hook until the word changes.
 * os_wake_all(): wakes every thread in os_wait_on(@addr) (Linux:
 * FUTEX_WAKE_PRIVATE; freestanding: nothing to do).  @addr is 4-byte
 * aligned and shared only within the process. */
void os_wait_on(_Atomic uint32_t *addr, uint32_t val);
void os_wake_all(_Atomic uint32_t *addr);
/* os_membarrier(): make every other running thread of the process execute
 * a full memory barrier before this returns (Linux: membarrier(2)
 * MEMBARRIER_CMD_PRIVATE_EXPEDITED, registered on the first call, as
 * liburcu's memb flavour does).  The writer's half of an asymmetric fence:
 * readers then need only a compiler barrier.  Returns 0, or -ENOSYS when
 * the kernel (or the tool running us: valgrind) lacks it, in which case
 * the readers must fence themselves; once it has failed it keeps failing.
 * Freestanding: -ENOSYS. */
int os_membarrier(void);
/* os_yield(): give the CPU to another runnable thread (sched_yield;
 * freestanding: a pause hint). */
void os_yield(void);
/* A pause hint for short spins (x86 pause, arm64 yield; a compiler barrier
 * elsewhere). */
static inline void os_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

/* ---- threads -------------------------------------------------------------- */
/* os_thread_on_exit(): run @fn(@arg) when the calling thread exits
 * (Linux: a pthread key destructor; freestanding: never, a "thread" is a
 * CPU that does not go away).  One registration per thread, always with
 * the same @fn; a second call replaces @arg.  Returns 0 or -ENOMEM / -EAGAIN
 * (nothing registered). */
int os_thread_on_exit(void (*fn)(void *arg), void *arg);

/* ---- threads -------------------------------------------------------------- */
/* os_thread_slot(): a small per-thread number, stable for the thread's
 * life, used to pick a shard (stats, IOVA caches, bounce areas).  Threads
 * are numbered in the order they first ask, so the first 64 threads get
 * distinct numbers. */

#if defined(IODMA_FREESTANDING)
void os_rcu_read_lock(void);
void os_rcu_read_unlock(void);
unsigned int os_thread_slot(void);
#else
/*
 * liburcu is LGPL-2.1 and iodma is MIT, so no liburcu code is inlined into
 * the library: _LGPL_SOURCE is never defined here, and urcu_bp_read_lock()
 * and urcu_bp_read_unlock() are calls into liburcu-bp's shared object (two
 * calls per access section, and per region lookup in memory.c).
 * URCU_INLINE_SMALL_FUNCTIONS is liburcu's license-neutral inlining (its
 * README: "does *not* make the application a derived work"); in liburcu
 * 0.13 it inlines only urcu/pointer.h's rcu_dereference() family, never the
 * bp read side.  The translation fast path (the IO page table walk, xlate.c)
 * takes no liburcu lock at all.  Leaving _LGPL_SOURCE out keeps a static
 * libiodma.a free of LGPL code; what a static linker of liburcu-bp takes on is
 * in the README ("License").
 */
#if defined(_LGPL_SOURCE)
#error "iodma is MIT: do not inline liburcu's LGPL code (_LGPL_SOURCE)"
#endif
#if defined(__riscv) && defined(__GNUC__) && !defined(__clang__) && \
	(__GNUC__ * 100 + __GNUC_MINOR__ < 1303)
/*
 * liburcu 0.14+'s headers refuse GCC before 13.3 on RISC-V (its atomics
 * there were not sequentially consistent; found cross-building with
 * Debian 12's gcc-riscv64-linux-gnu 12).  Call the library's exported,
 * out-of-line read side and grace period (built by a newer compiler)
 * instead of including the headers; these are the bullet-proof flavour's
 * ABI (urcu/urcu-bp.h).
 */
void urcu_bp_read_lock(void);
void urcu_bp_read_unlock(void);
void urcu_bp_synchronize_rcu(void);
#else
#ifndef URCU_INLINE_SMALL_FUNCTIONS
#define URCU_INLINE_SMALL_FUNCTIONS
#endif
#include <urcu/urcu-bp.h>
#endif

#if defined(__SANITIZE_THREAD__)
/* ThreadSanitizer cannot see liburcu's grace periods (the read side is a
 * plain TLS store, the writer uses membarrier): every section end releases
 * one token that os_synchronize_rcu() acquires once the grace period is
 * over, which is exactly the order the grace period guarantees. */
#include <sanitizer/tsan_interface.h>
extern char os_rcu_tsan_hb;
static inline void os_rcu_read_lock(void) { urcu_bp_read_lock(); }
static inline void os_rcu_read_unlock(void)
{
	__tsan_release(&os_rcu_tsan_hb);
	urcu_bp_read_unlock();
}
#else
static inline void os_rcu_read_lock(void) { urcu_bp_read_lock(); }
static inline void os_rcu_read_unlock(void) { urcu_bp_read_unlock(); }
#endif

/* slot + 1; 0 = none yet.  Initial-exec: one %fs-relative load from the
 * shared library too, instead of a __tls_get_addr() call. */
extern _Thread_local unsigned int os_tls_slot
	__attribute__((tls_model("initial-exec")));
unsigned int os_thread_slot_assign(void);

/* Here no two threads ever get the same number below UINT_MAX - 1 (the
 * counter stops there): a shard picked by a number below a bound is
 * written by one thread only, without atomic read-modify-writes (see
 * shard_own() in util.h).  The freestanding hook promises no such thing. */
#define OS_THREAD_SLOT_UNIQUE 1

static inline unsigned int os_thread_slot(void)
{
	unsigned int s = os_tls_slot;

	return s ? s - 1 : os_thread_slot_assign();
}
#endif

/* ---- pages ---------------------------------------------------------------- */
size_t os_page_size(void);

#define OS_PAGES_SHARED  0x1u /* memfd-backed, MAP_SHARED: has an fd */
#define OS_PAGES_HUGETLB 0x2u /* 2 MiB pages (implies SHARED) */
#define OS_PAGES_LOCKED  0x4u /* mlock the pages */
/* Allocates zeroed, page-aligned memory of @len bytes (a page multiple).
 * With OS_PAGES_SHARED *fd receives the memfd (else -1).  Returns 0 and
 * *va, or a negative errno. */
int os_pages_alloc(size_t len, uint32_t flags, void **va, int *fd);
void os_pages_free(void *va, size_t len, int fd);

/* Bus/physical address of @va: os_virt_to_phys_range() of its one page,
 * plus @va's offset in it.  Same errors. */
int os_virt_to_phys(const void *va, uint64_t *pa);

/* Bus addresses of @npages consecutive pages, the first being the page
 * holding @va (@va need not be aligned): @out[i] receives the page-aligned
 * bus address of page i.  Linux reads /proc/self/pagemap once for the
 * whole range (one pread of @npages entries, Documentation/admin-guide/mm/
 * pagemap.rst); freestanding builds call the platform's single-page
 * virt_to_phys hook per page.  The pages are faulted in writable first
 * where they can be (MADV_POPULATE_WRITE, else mlock), so a never-written
 * page does not report the kernel's shared zero page; read-only pages are
 * faulted for read.  Returns 0; -EINVAL @npages is 0, @out is NULL or the
 * range runs past the end of the address space (nothing written); -EFAULT
 * a page is not mapped or not present; -EPERM the kernel hides frame
 * numbers (pagemap without CAP_SYS_ADMIN: every PFN reads 0); -EIO a short
 * read; -EOPNOTSUPP freestanding without a virt_to_phys hook; or the
 * negative errno of open/pread.  On -EFAULT and -EPERM, *@failed (when not
 * NULL) is the index of the first page at fault.  On any error @out's
 * contents are unspecified.  Thread-safe. */
int os_virt_to_phys_range(const void *va, size_t npages, uint64_t *out,
			  size_t *failed);

/* ---- memory shared with another process (vhost-user) ---------------------- */
/* Map @len bytes of @fd at @offset (both page multiples, len > 0) shared and
 * writable.  A regular file or memfd must hold [offset, offset + len): a
 * mapping past its end would raise SIGBUS on access (-EINVAL then).
 * Returns 0 and *@va, or a negative errno (-ENOSYS freestanding). */
int os_map_fd_shared(int fd, uint64_t offset, uint64_t len, void **va);
/* Undo os_map_fd_shared(). */
void os_unmap(void *va, uint64_t len);
/* Close a file descriptor received from another process (< 0: no-op). */
void os_close(int fd);

/* ---- AF_UNIX messages with SCM_RIGHTS (vhost-user) ------------------------ */
/* Send all @len bytes of @buf on the stream socket @fd, with @nfds fds (at
 * most 8) attached to the first byte.  Never raises SIGPIPE.  With
 * @nonblock a full socket is -EAGAIN before any byte went (a message
 * begun is finished blocking).  Returns 0 or a negative errno (-ENOSYS
 * freestanding). */
int os_unix_send(int fd, const void *buf, size_t len, const int *fds,
		 size_t nfds, bool nonblock);
/* Receive exactly @len bytes into @buf from the stream socket @fd, waiting
 * until os_now_ns() >= @deadline_ns at most (UINT64_MAX = no limit).  Fds
 * that arrive with the bytes are stored in @fds (up to @max_fds; received
 * close-on-exec) and counted in *@nfds (which the caller initialises; it
 * is added to).  More fds than fit, or truncated control data: every fd
 * received by this call is closed and -EMSGSIZE returned.  Returns 0;
 * -ECONNRESET the peer closed the stream (*@got, if not NULL, says how many
 * bytes came first); -ETIMEDOUT; or a negative errno (fds received by this
 * call closed). */
int os_unix_recv(int fd, void *buf, size_t len, int *fds, size_t max_fds,
		 size_t *nfds, uint64_t deadline_ns, size_t *got);

#endif /* IODMA_OS_H */
