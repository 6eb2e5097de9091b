/* SPDX-License-Identifier: MIT */
/*
 * iodma/test-hooks.h - fault injection for iodma's own tests.
 *
 * NOT PART OF THE API: this header is not installed (meson.build excludes
 * it), and the functions below are not exported from libiodma.so nor
 * global in the installed libiodma.a (they lack IODMA_EXPORT, so
 * -fvisibility=hidden, the version script and objcopy --localize-hidden
 * keep them inside).  Only programs linked against the build tree's
 * internal archive (tests/, bench/, the fuzz targets) can call them.  They
 * may change or go away in any release without an ABI bump.
 *
 * Fail-nth sweeps as in SQLite's test harness and Linux's iommufd selftest
 * (tools/testing/selftests/iommu, fail_nth): run an operation once per
 * allocation or backend call it makes, failing a different one each time,
 * and check that each failure is reported and leaves the state unchanged.
 */
#ifndef IODMA_TEST_HOOKS_H
#define IODMA_TEST_HOOKS_H

#include <iodma/common.h>

#ifdef __cplusplus
extern "C" {
#endif

struct iodma_domain;

/* Which soft-backend call a fault is injected into. */
enum iodma_soft_fault_op {
	IODMA_SOFT_FAULT_MAP = 0,
	IODMA_SOFT_FAULT_UNMAP = 1,
};

/**
 * iodma_soft_inject_fault() - Make the soft backend fail a later call.
 * @d:    a domain created with the soft backend (iodma/backend.h).
 * @op:   which call fails.
 * @nth:  1 = the next such call fails, 2 = the one after, ...; 0 disarms.
 * @err:  the negative errno that call returns (e.g. -EIO).
 *
 * The fault fires once.  Used by tests to check that a backend failure
 * leaves the domain, its listeners and the IOVA allocator unchanged (and,
 * when the backend refuses to undo a map a listener rejected, that the
 * domain records the mapping as live: -EUCLEAN, iodma/domain.h).
 *
 * Context: thread-safe.
 * Return:  0; -EINVAL if @d is NULL or not a soft domain, @op is unknown or
 *          @err >= 0 (nothing armed).
 */
int iodma_soft_inject_fault(struct iodma_domain *d, enum iodma_soft_fault_op op,
			    unsigned int nth, int err);

/**
 * iodma_test_fail_alloc() - Fail the library's Nth memory allocation.
 * @nth: 1 = the next allocation made by any iodma code fails with -ENOMEM,
 *       2 = the one after, ...; 0 disarms.
 *
 * A process-wide fault-injection hook for fail-nth sweeps.  The fault fires
 * once.
 *
 * Context: thread-safe, but meant for single-threaded tests.
 * Return:  nothing.
 */
void iodma_test_fail_alloc(unsigned long nth);

#ifdef __cplusplus
}
#endif
#endif /* IODMA_TEST_HOOKS_H */
