/* SPDX-License-Identifier: MIT */
/* errno.h - the core's freestanding errno values plus the few more the
 * virtio-blk driver returns (Linux's numbers, as everywhere in iodma). */
#ifndef BM_ERRNO_H
#define BM_ERRNO_H
#include_next <errno.h>
#ifndef ENODEV
#define ENODEV 19
#endif
#ifndef ENOTSUP
#define ENOTSUP 95
#endif
#ifndef EAGAIN
#define EAGAIN 11
#endif
#endif
