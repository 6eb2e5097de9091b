/* SPDX-License-Identifier: MIT */
/*
 * virtio_ring.h - the parts of VIRTIO 1.2 the demo needs: the split
 * virtqueue (2.7), the device status and feature bits (2.1, 2.2, 6), the
 * virtio-blk request format and configuration layout (5.2), and the
 * register layout of a virtio-mmio (version 2) transport (4.2.2), which is
 * what the device's MMIO window looks like.
 *
 * Everything the driver and device exchange is little-endian (VIRTIO 1.x).
 * The ring indices are free-running 16-bit counters; an entry lives at
 * index % queue_size.
 */
#ifndef VIRTIO_RING_H
#define VIRTIO_RING_H

#include <stdint.h>
#include <stdbool.h>

/* ---- device status (2.1) ------------------------------------------------ */
#define VIRTIO_STATUS_ACKNOWLEDGE	1u
#define VIRTIO_STATUS_DRIVER		2u
#define VIRTIO_STATUS_DRIVER_OK		4u
#define VIRTIO_STATUS_FEATURES_OK	8u
#define VIRTIO_STATUS_NEEDS_RESET	64u
#define VIRTIO_STATUS_FAILED		128u

/* ---- feature bits (2.2, 5.2.3, 6) -------------------------------------- */
#define VIRTIO_BLK_F_SIZE_MAX		1   /* config.size_max is valid */
#define VIRTIO_BLK_F_SEG_MAX		2   /* config.seg_max is valid */
#define VIRTIO_BLK_F_RO			5   /* read-only disk */
#define VIRTIO_BLK_F_BLK_SIZE		6   /* config.blk_size is valid */
#define VIRTIO_BLK_F_FLUSH		9   /* T_FLUSH supported */
#define VIRTIO_RING_F_INDIRECT_DESC	28
#define VIRTIO_RING_F_EVENT_IDX		29  /* used_event / avail_event */
#define VIRTIO_F_VERSION_1		32
#define VIRTIO_F_ACCESS_PLATFORM	33  /* the device goes through an IOMMU */

#define VIRTIO_BIT(b) (UINT64_C(1) << (b))

/* ---- split virtqueue (2.7) --------------------------------------------- */
#define VRING_DESC_F_NEXT	1u  /* the chain continues in .next */
#define VRING_DESC_F_WRITE	2u  /* device-writable (else device-readable) */
#define VRING_DESC_F_INDIRECT	4u  /* .addr is a table of descriptors */

#define VRING_AVAIL_F_NO_INTERRUPT 1u /* driver: do not notify me */
#define VRING_USED_F_NO_NOTIFY	   1u /* device: do not kick me */

/* Descriptor table entry: alignment 16. */
struct vring_desc {
	uint64_t addr;	/* le64: IOVA of the buffer */
	uint32_t len;	/* le32: bytes */
	uint16_t flags;	/* le16: VRING_DESC_F_* */
	uint16_t next;	/* le16: next descriptor when F_NEXT */
};

/* Driver area (available ring): alignment 2.
 *   le16 flags; le16 idx; le16 ring[queue_size]; le16 used_event; */
struct vring_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[];
};

struct vring_used_elem {
	uint32_t id;	/* le32: head of the completed chain */
	uint32_t len;	/* le32: bytes the device wrote into the chain */
};

/* Device area (used ring): alignment 4.
 *   le16 flags; le16 idx; struct vring_used_elem ring[queue_size];
 *   le16 avail_event; */
struct vring_used {
	uint16_t flags;
	uint16_t idx;
	struct vring_used_elem ring[];
};

#define VRING_DESC_ALIGN	16u
#define VRING_AVAIL_ALIGN	2u
#define VRING_USED_ALIGN	4u

static inline uint64_t vring_desc_size(unsigned int qsz)
{
	return 16ull * qsz;
}

static inline uint64_t vring_avail_size(unsigned int qsz)
{
	return 6ull + 2ull * qsz;	/* flags, idx, ring, used_event */
}

static inline uint64_t vring_used_size(unsigned int qsz)
{
	return 6ull + 8ull * qsz;	/* flags, idx, ring, avail_event */
}

/* Byte offsets inside the areas. */
#define VRING_AVAIL_IDX_OFF		2u
#define VRING_AVAIL_RING_OFF(i)		(4u + 2u * (i))
#define VRING_USED_EVENT_OFF(qsz)	(4u + 2u * (qsz))  /* in the avail area */
#define VRING_USED_IDX_OFF		2u
#define VRING_USED_RING_OFF(i)		(4u + 8u * (i))
#define VRING_AVAIL_EVENT_OFF(qsz)	(4u + 8u * (qsz))  /* in the used area */

/*
 * vring_need_event() - With VIRTIO_RING_F_EVENT_IDX: must the other side be
 * notified after moving an index from @old to @new_idx, given that it asked
 * to be notified once the index passes @event?  (2.7.10: true when @event
 * lies in [old, new_idx), all modulo 2^16.)
 */
static inline bool vring_need_event(uint16_t event, uint16_t new_idx,
				    uint16_t old)
{
	return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

/* ---- virtio-blk (5.2) --------------------------------------------------- */
#define VIRTIO_ID_BLOCK		2u
#define VIRTIO_BLK_SECTOR_SIZE	512u	/* request sectors are always 512 B */
#define VIRTIO_BLK_ID_BYTES	20u

#define VIRTIO_BLK_T_IN		0u
#define VIRTIO_BLK_T_OUT	1u
#define VIRTIO_BLK_T_FLUSH	4u
#define VIRTIO_BLK_T_GET_ID	8u

#define VIRTIO_BLK_S_OK		0u
#define VIRTIO_BLK_S_IOERR	1u
#define VIRTIO_BLK_S_UNSUPP	2u

/* The device-readable header that starts every request. */
struct virtio_blk_outhdr {
	uint32_t type;		/* le32: VIRTIO_BLK_T_* */
	uint32_t reserved;
	uint64_t sector;	/* le64: in 512-byte units */
};

/* Configuration space layout (offsets into the device-specific config). */
#define VIRTIO_BLK_CFG_CAPACITY		0x00u	/* le64, 512-byte sectors */
#define VIRTIO_BLK_CFG_SIZE_MAX		0x08u	/* le32 */
#define VIRTIO_BLK_CFG_SEG_MAX		0x0cu	/* le32 */
#define VIRTIO_BLK_CFG_GEOMETRY		0x10u	/* le16 cyl, u8 heads, u8 sect */
#define VIRTIO_BLK_CFG_BLK_SIZE		0x14u	/* le32 */
#define VIRTIO_BLK_CFG_SIZE		0x18u

/* ---- virtio-mmio version 2 registers (4.2.2) ---------------------------- */
#define VIRTIO_MMIO_MAGIC_VALUE		0x000u	/* "virt" = 0x74726976 */
#define VIRTIO_MMIO_VERSION		0x004u	/* 2 */
#define VIRTIO_MMIO_DEVICE_ID		0x008u
#define VIRTIO_MMIO_VENDOR_ID		0x00cu
#define VIRTIO_MMIO_DEVICE_FEATURES	0x010u
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL	0x014u
#define VIRTIO_MMIO_DRIVER_FEATURES	0x020u
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL	0x024u
#define VIRTIO_MMIO_QUEUE_SEL		0x030u
#define VIRTIO_MMIO_QUEUE_NUM_MAX	0x034u
#define VIRTIO_MMIO_QUEUE_NUM		0x038u
#define VIRTIO_MMIO_QUEUE_READY		0x044u
#define VIRTIO_MMIO_QUEUE_NOTIFY	0x050u
#define VIRTIO_MMIO_INTERRUPT_STATUS	0x060u
#define VIRTIO_MMIO_INTERRUPT_ACK	0x064u
#define VIRTIO_MMIO_STATUS		0x070u
#define VIRTIO_MMIO_QUEUE_DESC_LOW	0x080u
#define VIRTIO_MMIO_QUEUE_DESC_HIGH	0x084u
#define VIRTIO_MMIO_QUEUE_DRIVER_LOW	0x090u
#define VIRTIO_MMIO_QUEUE_DRIVER_HIGH	0x094u
#define VIRTIO_MMIO_QUEUE_DEVICE_LOW	0x0a0u
#define VIRTIO_MMIO_QUEUE_DEVICE_HIGH	0x0a4u
#define VIRTIO_MMIO_CONFIG_GENERATION	0x0fcu
#define VIRTIO_MMIO_CONFIG		0x100u

#define VIRTIO_MMIO_MAGIC		0x74726976u

#endif /* VIRTIO_RING_H */
