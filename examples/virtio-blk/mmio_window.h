/* SPDX-License-Identifier: MIT */
/*
 * mmio_window.h - how the demo's "bus" carries MMIO accesses.
 *
 * The device exposes one page of registers, laid out as a virtio-mmio
 * version 2 transport (virtio_ring.h).  The platform (main.c) declares the
 * page as an MMIO window of the driver's iodma_dev (iodma_dev_add_mmio), and
 * the driver finds it with iodma_mmio_phys_to_virt, as a PCI driver finds a
 * BAR.  Real MMIO traps into the VMM on every access; here:
 *   - reads are plain loads of the register page (no register of ours has a
 *     read side effect: the device updates the page when a write needs it);
 *   - a write is trapped: the driver puts (offset, value) in the trap
 *     mailbox past the registers, bumps its sequence number, rings the
 *     doorbell eventfd and waits until the device acknowledges the same
 *     sequence number, so the write has taken effect when it returns;
 *   - QueueNotify is an ioeventfd, as in KVM: writing it only rings the
 *     doorbell, without waiting.
 * Only one thread (the driver's) writes registers.
 */
#ifndef MMIO_WINDOW_H
#define MMIO_WINDOW_H

#include <stdint.h>
#include <stdatomic.h>
#include <errno.h>
#include <sched.h>
#include <time.h>
#include <sys/eventfd.h>

#define VBLK_MMIO_SIZE		4096u
#define VBLK_TRAP_OFFSET	0x800u	/* u32 offset, u32 value, u32 seq, u32 ack */
#define VBLK_TRAP_OFF_OFFSET	(VBLK_TRAP_OFFSET + 0u)
#define VBLK_TRAP_OFF_VALUE	(VBLK_TRAP_OFFSET + 4u)
#define VBLK_TRAP_OFF_SEQ	(VBLK_TRAP_OFFSET + 8u)
#define VBLK_TRAP_OFF_ACK	(VBLK_TRAP_OFFSET + 12u)

static inline _Atomic uint32_t *mmio_reg(void *base, uint32_t off)
{
	return (_Atomic uint32_t *)((char *)base + off);
}

static inline uint32_t mmio_read32(void *base, uint32_t off)
{
	return atomic_load_explicit(mmio_reg(base, off), memory_order_acquire);
}

/* Device side: update a register the driver reads. */
static inline void mmio_set32(void *base, uint32_t off, uint32_t val)
{
	atomic_store_explicit(mmio_reg(base, off), val, memory_order_release);
}

/*
 * mmio_write32() - A trapped register write (driver side).  Returns 0 once
 * the device has handled it, -ETIMEDOUT if the device did not within 5 s,
 * or -errno from the doorbell.
 */
static inline int mmio_write32(void *base, int doorbell_fd, uint32_t off,
			       uint32_t val)
{
	uint32_t seq = mmio_read32(base, VBLK_TRAP_OFF_SEQ) + 1;
	struct timespec start, now;

	atomic_store_explicit(mmio_reg(base, VBLK_TRAP_OFF_OFFSET), off,
			      memory_order_relaxed);
	atomic_store_explicit(mmio_reg(base, VBLK_TRAP_OFF_VALUE), val,
			      memory_order_relaxed);
	atomic_store_explicit(mmio_reg(base, VBLK_TRAP_OFF_SEQ), seq,
			      memory_order_release);
	if (eventfd_write(doorbell_fd, 1) < 0)
		return -errno;
	clock_gettime(CLOCK_MONOTONIC, &start);
	while (mmio_read32(base, VBLK_TRAP_OFF_ACK) != seq) {
		sched_yield();
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - start.tv_sec > 5)
			return -ETIMEDOUT;
	}
	return 0;
}

/* QueueNotify: an ioeventfd, the doorbell alone. */
static inline int mmio_queue_notify(int doorbell_fd)
{
	return eventfd_write(doorbell_fd, 1) < 0 ? -errno : 0;
}

#endif /* MMIO_WINDOW_H */
