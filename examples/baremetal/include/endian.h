/* SPDX-License-Identifier: MIT */
/* endian.h - both boards (aarch64 and riscv64 virt) run little-endian. */
#ifndef BM_ENDIAN_H
#define BM_ENDIAN_H
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "examples/baremetal assumes a little-endian CPU"
#endif
#define htole16(x) ((uint16_t)(x))
#define htole32(x) ((uint32_t)(x))
#define htole64(x) ((uint64_t)(x))
#define le16toh(x) ((uint16_t)(x))
#define le32toh(x) ((uint32_t)(x))
#define le64toh(x) ((uint64_t)(x))
#endif
