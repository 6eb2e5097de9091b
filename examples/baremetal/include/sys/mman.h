/* SPDX-License-Identifier: MIT */
/* sys/mman.h - anonymous mappings are zeroed, page-aligned heap pages
 * (bm_libc.c); nothing else of mmap exists without an OS. */
#ifndef BM_SYS_MMAN_H
#define BM_SYS_MMAN_H
#include <stddef.h>

#define PROT_READ	1
#define PROT_WRITE	2
#define MAP_PRIVATE	0x02
#define MAP_ANONYMOUS	0x20
#define MAP_FAILED	((void *)-1)
void *mmap(void *addr, size_t len, int prot, int flags, int fd, long off);
int munmap(void *addr, size_t len);
#endif
