/* SPDX-License-Identifier: MIT */
/*
 * iodma/common.h - types and conventions shared by every iodma module.
 *
 * Concepts
 *   Every function returns 0 (or a count) on success and a negative errno on
 *   failure; objects are opaque, created through an out-parameter and freed by
 *   their own function.  A range is [iova, iova + len) with len > 0; a range
 *   whose end would pass 2^64 is -EINVAL everywhere.  "len" is always bytes,
 *   "pages" is pages, "last" is an inclusive end and appears only where a
 *   kernel uapi uses one.  Options structs, and the output structs a caller
 *   allocates, start with a size_t set by IODMA_STRUCT_INIT() so that new
 *   fields can be added at their end without breaking callers built against
 *   an older header.
 *
 * Growth rule (options structs; the rule of Linux's copy_struct_from_user()
 * for openat2/clone3):
 *   - The library reads min(opts->size, its sizeof): a caller built against
 *     an older header passes a shorter struct and the fields it lacks take
 *     their defaults (0 = default for every option).
 *   - A caller built against a newer header passes a longer struct; it is
 *     accepted if every byte past the library's sizeof is zero (it uses no
 *     option this library does not know), else the call fails with -E2BIG
 *     and changes nothing.
 *   - A size smaller than the struct's first version is -EINVAL.
 *   - Fields are only ever added at the end, never into what was tail
 *     padding of an earlier version, and without implicit padding of their
 *     own (explicit reserved fields instead), so that the zero-tail test is
 *     not defeated by uninitialised padding.
 *   Output structs a caller allocates and the library fills (struct
 *   iodma_caps, iodma_dev_stats, iodma_xlate_stats, iodma_vfio_stats,
 *   iodma_vhost_user_stats) and the iterator state struct iodma_xlate_iter
 *   start with the same size_t size, set by IODMA_STRUCT_INIT() to the size
 *   the caller was built with (the rule of Linux's copy_struct_to_user()):
 *   - The library fills min(size, its sizeof) bytes: a caller built against
 *     an older header gets the prefix it knows, and the fields added since
 *     are not written.
 *   - A caller built against a newer header gets its bytes past the
 *     library's sizeof zeroed (0 for every field this library lacks).
 *   - A size smaller than the struct's first version is -EINVAL and nothing
 *     is written.  .size itself is never written by the library.
 *   - struct iodma_xlate_iter holds private state the library needs whole:
 *     its first version carries reserved room for later fields, so its
 *     size never grows past that of the first version; a smaller size is
 *     -EINVAL.
 *   Array elements (struct iodma_sg, iodma_slice, iodma_fault,
 *   iodma_region_info, like struct iovec) cannot carry a size: a caller
 *   and a library that disagree on the element size would stride the
 *   array differently.  Their layout is frozen for the soname; a new field
 *   means a new struct, new functions and a new soname.  Structs the
 *   library allocates and hands to a callback (iodma_map_event,
 *   iodma_vhost_user_reply) grow only at their end: a caller reads the
 *   prefix it knows.  The remaining single output structs
 *   (iodma_vfio_region_info, iodma_vhost_user_vring) are frozen for the
 *   soname in 0.x.
 *
 *   Permissions are the device's view: IODMA_PERM_READ lets the device read
 *   host memory (a to-device transfer), IODMA_PERM_WRITE lets it write.
 */
#ifndef IODMA_COMMON_H
#define IODMA_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(IODMA_BUILDING_LIBRARY) && defined(__GNUC__)
#define IODMA_EXPORT __attribute__((visibility("default")))
#else
#define IODMA_EXPORT
#endif

/* Alignment of a struct member, spelled for C11 and C++11. */
#ifdef __cplusplus
#define IODMA_ALIGNAS(n) alignas(n)
#else
#define IODMA_ALIGNAS(n) _Alignas(n)
#endif

#define IODMA_VERSION_MAJOR 0
#define IODMA_VERSION_MINOR 2
#define IODMA_VERSION_PATCH 0

/**
 * IODMA_STRUCT_INIT() - Initializer for an extensible struct.
 * @type: the struct type, e.g. struct iodma_domain_opts or struct
 *        iodma_dev_stats.
 *
 * An expression of type @type whose leading .size member is sizeof(type)
 * and every other member 0, which is each option's documented default.  Use
 * as ``struct iodma_dev_stats st = IODMA_STRUCT_INIT(struct iodma_dev_stats);``
 * for every struct that starts with size_t size: options (input) and
 * caps, stats and iterators (output), see the growth rule above.
 * In C it is a compound literal; C++17 has neither compound literals nor
 * designated initializers, so there it is an immediately invoked lambda
 * returning a value-initialised (all-zero) struct with .size set.  Valid C11
 * and C++17 (g++/clang++ -pedantic-errors, tests/cxx/test_headers.cpp).
 */
#ifdef __cplusplus
#define IODMA_STRUCT_INIT(type)                                                \
	([]() {                                                                \
		type iodma_struct_{};                                          \
		iodma_struct_.size = sizeof(type);                             \
		return iodma_struct_;                                          \
	}())
#else
#define IODMA_STRUCT_INIT(type) ((type){ .size = sizeof(type) })
#endif

/**
 * IODMA_OPTS_INIT() - Initializer for an options struct.
 * @type: the struct type, e.g. struct iodma_domain_opts.
 *
 * The same as IODMA_STRUCT_INIT(), under the name options have always used.
 */
#define IODMA_OPTS_INIT(type) IODMA_STRUCT_INIT(type)

/* Device access permissions (what the device may do to host memory). */
#define IODMA_PERM_READ  0x1u /* device reads memory: DMA to the device */
#define IODMA_PERM_WRITE 0x2u /* device writes memory: DMA from the device */
#define IODMA_PERM_RW    (IODMA_PERM_READ | IODMA_PERM_WRITE)

/**
 * struct iodma_iova_range - A half-open IOVA range [iova, iova + len).
 * @iova: first byte.
 * @len:  bytes; > 0 and iova + len does not overflow 2^64.
 */
struct iodma_iova_range {
	uint64_t iova;
	uint64_t len;
};

/**
 * iodma_strerror() - Describe an iodma return code.
 * @err: a value returned by an iodma function (negative errno), or 0.
 *
 * Context: thread-safe; never fails.
 * Return:  a static string describing @err in the words of this library
 *          (e.g. -EEXIST: "range overlaps a live mapping"); unknown codes get
 *          a generic text.  The string must not be freed.
 */
IODMA_EXPORT const char *iodma_strerror(int err);

/**
 * iodma_version() - Version of the library actually linked.
 *
 * Context: thread-safe.
 * Return:  a static string "MAJOR.MINOR.PATCH".
 */
IODMA_EXPORT const char *iodma_version(void);

/**
 * iodma_page_size() - The host page size the library was initialised with.
 *
 * Context: thread-safe.
 * Return:  the host page size in bytes (a power of two, usually 4096).
 *          dma-api crate DmaOp::page_size.
 */
IODMA_EXPORT size_t iodma_page_size(void);

#ifdef __cplusplus
}
#endif
#endif /* IODMA_COMMON_H */
