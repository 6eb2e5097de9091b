/* SPDX-License-Identifier: MIT */
/*
 * vhost_user_proto.h - the wire format of vhost-user, as the spec
 * (QEMU docs/interop/vhost-user.rst, "Message Specification") describes
 * it.  Written from the spec's tables, including the three payloads the
 * spec borrows from the kernel's vhost ioctls (vring state, vring address,
 * IOTLB message): they are declared here under the kernel's names and
 * layouts (asserted below), so the core includes no Linux header.
 * All numbers are in the machine's byte order (spec: "native").
 */
#ifndef IODMA_VHOST_USER_PROTO_H
#define IODMA_VHOST_USER_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* "Vring state description": index, number. */
struct vhost_vring_state {
	unsigned int index;
	unsigned int num;
};

/* "Vring address description": index, flags, then the user addresses of
 * the descriptor, used and available rings and the log's guest address. */
struct vhost_vring_addr {
	unsigned int index;
	unsigned int flags;		/* VHOST_VRING_F_LOG */
	uint64_t desc_user_addr;
	uint64_t used_user_addr;
	uint64_t avail_user_addr;
	uint64_t log_guest_addr;
};
#define VHOST_VRING_F_LOG       0	/* flags bit: log writes to the used ring */

/* "IOTLB message": IOVA, size, user address, permissions, type. */
struct vhost_iotlb_msg {
	uint64_t iova;
	uint64_t size;
	uint64_t uaddr;
	uint8_t perm;			/* VHOST_ACCESS_* */
	uint8_t type;			/* VHOST_IOTLB_* */
};
#define VHOST_ACCESS_RO         0x1
#define VHOST_ACCESS_WO         0x2
#define VHOST_ACCESS_RW         0x3
#define VHOST_IOTLB_MISS        1
#define VHOST_IOTLB_UPDATE      2
#define VHOST_IOTLB_INVALIDATE  3
#define VHOST_IOTLB_ACCESS_FAIL 4

/* Header flags ("Header"). */
#define VU_VERSION          0x1u
#define VU_VERSION_MASK     0x3u
#define VU_FLAG_REPLY       (1u << 2)
#define VU_FLAG_NEED_REPLY  (1u << 3)

/* Front-end requests ("Front-end message types"). */
enum {
	VU_GET_FEATURES = 1,
	VU_SET_FEATURES = 2,
	VU_SET_OWNER = 3,
	VU_RESET_OWNER = 4,
	VU_SET_MEM_TABLE = 5,
	VU_SET_LOG_BASE = 6,
	VU_SET_LOG_FD = 7,
	VU_SET_VRING_NUM = 8,
	VU_SET_VRING_ADDR = 9,
	VU_SET_VRING_BASE = 10,
	VU_GET_VRING_BASE = 11,
	VU_SET_VRING_KICK = 12,
	VU_SET_VRING_CALL = 13,
	VU_SET_VRING_ERR = 14,
	VU_GET_PROTOCOL_FEATURES = 15,
	VU_SET_PROTOCOL_FEATURES = 16,
	VU_GET_QUEUE_NUM = 17,
	VU_SET_VRING_ENABLE = 18,
	VU_SET_BACKEND_REQ_FD = 21,
	VU_IOTLB_MSG = 22,
	VU_GET_CONFIG = 24,
	VU_SET_CONFIG = 25,
	VU_GET_MAX_MEM_SLOTS = 36,
	VU_ADD_MEM_REG = 37,
	VU_REM_MEM_REG = 38,
};

/* Back-end requests ("Back-end message types"). */
#define VU_BACKEND_IOTLB_MSG 1

/* Protocol feature bits ("Protocol features"). */
#define VU_PROTOCOL_F_MQ                   0
#define VU_PROTOCOL_F_LOG_SHMFD            1
#define VU_PROTOCOL_F_REPLY_ACK            3
#define VU_PROTOCOL_F_BACKEND_REQ          5 /* SLAVE_REQ in older texts */
#define VU_PROTOCOL_F_CONFIG               9
#define VU_PROTOCOL_F_CONFIGURE_MEM_SLOTS 15

/* Virtio / vhost feature bits. */
#define VU_F_LOG_ALL            26
#define VU_F_PROTOCOL_FEATURES  30
#define VU_F_IOMMU_PLATFORM     33 /* ACCESS_PLATFORM in VIRTIO 1.1+ */

/* The spec's tables: a memory table carries at most 8 regions. */
#define VU_MEM_TABLE_MAX        8
/* SET_VRING_KICK/CALL/ERR: bits 0-7 the index, bit 8 "no fd". */
#define VU_VRING_IDX_MASK       0xffu
#define VU_VRING_NOFD_MASK      (1u << 8)
/* VHOST_LOG_PAGE ("Migration"). */
#define VU_LOG_PAGE             0x1000u
/* Largest config space access we move (QEMU's VHOST_USER_MAX_CONFIG_SIZE). */
#define VU_CONFIG_MAX           256u

struct vu_header {
	uint32_t request;
	uint32_t flags;
	uint32_t size;     /* bytes of payload after the header */
};

/* "Memory regions description": one region. */
struct vu_mem_region {
	uint64_t guest_addr;
	uint64_t size;
	uint64_t user_addr;
	uint64_t mmap_offset;
};

/* "Memory regions description": the table (SET_MEM_TABLE). */
struct vu_mem_table {
	uint32_t nregions;
	uint32_t padding;
	struct vu_mem_region regions[]; /* nregions entries */
};

/* "Single memory region description" (ADD_MEM_REG, REM_MEM_REG). */
struct vu_single_region {
	uint64_t padding;
	struct vu_mem_region region;
};

/* "Log description" (SET_LOG_BASE with LOG_SHMFD). */
struct vu_log_desc {
	uint64_t mmap_size;
	uint64_t mmap_offset;
};

/* "Virtio device config space" (GET_CONFIG, SET_CONFIG). */
struct vu_config {
	uint32_t offset;
	uint32_t size;
	uint32_t flags;
	uint8_t payload[]; /* size bytes */
};

_Static_assert(sizeof(struct vu_header) == 12, "header: 3 x u32");
_Static_assert(offsetof(struct vu_header, size) == 8, "header size at 8");
_Static_assert(sizeof(struct vu_mem_region) == 32, "region: 4 x u64");
_Static_assert(offsetof(struct vu_mem_region, mmap_offset) == 24,
	       "mmap offset last");
_Static_assert(sizeof(struct vu_mem_table) == 8, "table header: 2 x u32");
_Static_assert(offsetof(struct vu_mem_table, regions) == 8,
	       "regions after nregions + padding");
_Static_assert(sizeof(struct vu_single_region) == 40, "u64 padding + region");
_Static_assert(offsetof(struct vu_single_region, region) == 8,
	       "region after the padding");
_Static_assert(sizeof(struct vu_log_desc) == 16, "log: size, offset");
_Static_assert(sizeof(struct vu_config) == 12, "config header: 3 x u32");
/* The kernel structs, as the vhost-user payloads use them. */
_Static_assert(sizeof(struct vhost_vring_state) == 8, "vring state: 2 x u32");
_Static_assert(sizeof(struct vhost_vring_addr) == 40, "vring addr: 2 x u32 + 4 x u64");
_Static_assert(offsetof(struct vhost_vring_addr, log_guest_addr) == 32,
	       "log address last");
_Static_assert(sizeof(struct vhost_iotlb_msg) == 32, "IOTLB message: 3 x u64 + 2 x u8, padded");
_Static_assert(offsetof(struct vhost_iotlb_msg, perm) == 24, "perm after uaddr");
_Static_assert(offsetof(struct vhost_iotlb_msg, type) == 25, "type after perm");

#endif /* IODMA_VHOST_USER_PROTO_H */
