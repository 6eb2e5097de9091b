/* SPDX-License-Identifier: MIT */
/* Freestanding build: the errno values the core returns (Linux numbering,
 * so that return codes mean the same on every platform). */
#ifndef IODMA_FS_ERRNO_H
#define IODMA_FS_ERRNO_H
#define EPERM 1
#define ENOENT 2
#define EIO 5
#define E2BIG 7
#define ENOMEM 12
#define EACCES 13
#define EFAULT 14
#define EBUSY 16
#define EEXIST 17
#define EINVAL 22
#define ENOSPC 28
#define ERANGE 34
#define ENOSYS 38
#define EPROTO 71
#define EBADMSG 74
#define ENOTCONN 107
#define ETIMEDOUT 110
#define EOPNOTSUPP 95
#define EALREADY 114
#define EUCLEAN 117
#endif
