/* SPDX-License-Identifier: MIT */
/*
 * iodma/platform.h - hooks for a freestanding (bare-metal) build.
 *
 * Concepts
 *   On Linux the library uses pthreads, liburcu, mmap and /proc/self/pagemap
 *   (src/os/linux.c) and this header is not needed.  Built with
 *   -DIODMA_FREESTANDING (src/os/freestanding.c) it has no OS at all: the
 *   integrator supplies memory, pages and address translation through
 *   iodma_platform_init() before any other call.  Locks then spin and access
 *   sections are a global reader count that a grace period waits to drain,
 *   which is correct on any number of cores but meant for few.
 */
#ifndef IODMA_PLATFORM_H
#define IODMA_PLATFORM_H

#include <iodma/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * struct iodma_platform_ops - What a bare-metal platform provides.
 * @size:         IODMA_OPTS_INIT().
 * @page_size:    bytes; a power of two.
 * @malloc:       allocate @len bytes, or NULL.
 * @realloc:      resize, or NULL on failure (old block kept).
 * @free:         release (NULL is a no-op).
 * @pages_alloc:  allocate @len bytes (page multiple) of zeroed, page-aligned
 *                memory; *fd = -1; return 0 or a negative errno.
 * @pages_free:   release memory from @pages_alloc.
 * @virt_to_phys: bus address of a CPU address; 0 or a negative errno.
 * @thread_slot:  a small number per CPU/thread (NULL: always 0).
 * @relax:        called while spinning (e.g. a pause/wfe), may be NULL.
 */
struct iodma_platform_ops {
	size_t size;
	size_t page_size;
	void *(*malloc)(size_t len);
	void *(*realloc)(void *p, size_t len);
	void (*free)(void *p);
	int (*pages_alloc)(size_t len, uint32_t flags, void **va, int *fd);
	void (*pages_free)(void *va, size_t len, int fd);
	int (*virt_to_phys)(const void *va, uint64_t *pa);
	unsigned int (*thread_slot)(void);
	void (*relax)(void);
};

/**
 * iodma_platform_init() - Install the platform hooks (freestanding builds).
 * @ops: hooks; copied.  @malloc, @free, @pages_alloc, @pages_free and a
 *       power-of-two @page_size are required.
 *
 * Context: call once, before any other iodma function, on one CPU.
 * Return:  0; -EINVAL a required hook is missing or size is below the
 *          first version; -E2BIG @ops is longer than this library knows
 *          and a byte past its end is non-zero (growth rule,
 *          iodma/common.h).  Nothing installed on error.
 */
IODMA_EXPORT int iodma_platform_init(const struct iodma_platform_ops *ops);

#ifdef __cplusplus
}
#endif
#endif /* IODMA_PLATFORM_H */
