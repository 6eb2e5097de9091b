/* SPDX-License-Identifier: MIT */
/*
 * util.c - return-code texts, version, allocation with fault injection.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include <iodma/common.h>
#include <iodma/backend.h>
#include <iodma/test-hooks.h>

#include "util.h"

/* 0 = disarmed; otherwise the countdown to the allocation that fails. */
static atomic_ulong fail_alloc_countdown;

void iodma_test_fail_alloc(unsigned long nth)
{
	atomic_store(&fail_alloc_countdown, nth);
}

static bool alloc_should_fail(void)
{
	unsigned long c = atomic_load_explicit(&fail_alloc_countdown,
					       memory_order_relaxed);

	while (c != 0) {
		if (atomic_compare_exchange_weak(&fail_alloc_countdown, &c, c - 1))
			return c == 1;
	}
	return false;
}

void *iodma_malloc(size_t len)
{
	return alloc_should_fail() ? NULL : os_malloc(len);
}

void *iodma_calloc(size_t n, size_t len)
{
	return alloc_should_fail() ? NULL : os_calloc(n, len);
}

void *iodma_realloc(void *p, size_t len)
{
	return alloc_should_fail() ? NULL : os_realloc(p, len);
}

void iodma_free(void *p)
{
	os_free(p);
}

IODMA_EXPORT const char *iodma_strerror(int err)
{
	switch (err) {
	case 0:		return "success";
	case -EINVAL:	return "invalid argument (range, alignment, length or flags)";
	case -ERANGE:	return "address outside every valid IOVA range or above the DMA mask";
	case -EEXIST:	return "range overlaps a live mapping, region or registration";
	case -ENOSPC:	return "mapping limit reached (VFIO type1: raise the dma_entry_limit module parameter)";
	case -ENOMEM:	return "out of memory, IOVA space or bounce slots";
	case -ENOENT:	return "no such mapping, allocation, region or registration";
	case -EFAULT:	return "address not mapped";
	case -EACCES:	return "mapping lacks the requested permission";
	case -EBUSY:	return "resource busy";
	case -EOPNOTSUPP: return "operation not supported by this backend";
	case -E2BIG:	return "more slices needed than the caller provided";
	case -EALREADY:	return "already enabled";
	case -EIO:	return "I/O error";
	case -EPERM:	return "operation not permitted";
	case -EUCLEAN:	return "map failed and the backend refused to undo it: the mapping stays live, unmap it";
	case -EPROTO:	return "protocol error: bad message version or flags";
	case -EBADMSG:	return "message size does not match its request";
	case -ETIMEDOUT: return "timed out waiting for the peer";
	case -ENOTCONN:	return "no channel to the peer";
	default:	return "unknown error";
	}
}

IODMA_EXPORT const char *iodma_version(void)
{
#define IODMA_STR_(x) #x
#define IODMA_STR(x) IODMA_STR_(x)
	return IODMA_STR(IODMA_VERSION_MAJOR) "." IODMA_STR(IODMA_VERSION_MINOR)
		"." IODMA_STR(IODMA_VERSION_PATCH);
}

IODMA_EXPORT size_t iodma_page_size(void)
{
	return os_page_size();
}

int ext_copy(void *dst, size_t dst_size, const void *src, size_t src_size,
	     enum ext_dir dir)
{
	const unsigned char *s = src;
	unsigned char *d = dst;
	size_t n = IODMA_MIN(dst_size, src_size);

	if (dir == EXT_IN)
		for (size_t i = dst_size; i < src_size; i++)
			if (s[i])
				return -E2BIG;
	/* The size member stays the receiver's own. */
	memcpy(d + sizeof(size_t), s + sizeof(size_t), n - sizeof(size_t));
	if (dir == EXT_OUT && dst_size > src_size)
		memset(d + src_size, 0, dst_size - src_size);
	return 0;
}

int opts_copy(void *dst, size_t dst_size, const void *src, size_t min_size)
{
	size_t size;
	int err;

	if (!src)
		return 0;
	memcpy(&size, src, sizeof(size));
	if (size < min_size || size < sizeof(size_t))
		return -EINVAL;
	err = ext_copy(dst, dst_size, src, size, EXT_IN);
	if (!err)
		memcpy(dst, &dst_size, sizeof(dst_size));
	return err;
}

int out_copy(void *dst, const void *src, size_t src_size, size_t min_size)
{
	size_t size;

	memcpy(&size, dst, sizeof(size));
	if (size < min_size || size < sizeof(size_t))
		return -EINVAL;
	return ext_copy(dst, size, src, src_size, EXT_OUT);
}
