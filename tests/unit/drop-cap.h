/* SPDX-License-Identifier: MIT */
/*
 * drop-cap.h - the unit tests' one way to lose CAP_SYS_ADMIN.
 *
 * Tests of "what an unprivileged process sees" (pagemap frame numbers read
 * as 0 without CAP_SYS_ADMIN) run in a forked child that drops the
 * capability from its effective set, so they hold when the suite runs as
 * root too; as a user the drop is a no-op.
 */
#ifndef IODMA_TESTS_DROP_CAP_H
#define IODMA_TESTS_DROP_CAP_H

#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Drop CAP_SYS_ADMIN from the effective set: 0, or -1 with errno. */
static inline int drop_sys_admin(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct c[2];

	if (syscall(SYS_capget, &h, c) != 0)
		return -1;
	c[CAP_SYS_ADMIN / 32].effective &= ~(1u << (CAP_SYS_ADMIN % 32));
	return (int)syscall(SYS_capset, &h, c);
}

#endif
