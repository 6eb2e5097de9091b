/* SPDX-License-Identifier: MIT */
/* Freestanding build: assert() traps. */
#ifndef IODMA_FS_ASSERT_H
#define IODMA_FS_ASSERT_H
#ifdef NDEBUG
#define assert(e) ((void)0)
#else
#define assert(e) ((e) ? (void)0 : __builtin_trap())
#endif
#define static_assert _Static_assert
#endif
