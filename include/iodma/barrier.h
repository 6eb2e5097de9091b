/* SPDX-License-Identifier: MIT */
/*
 * iodma/barrier.h - I/O memory barriers for drivers of real devices.
 *
 * Concepts
 *   C11 atomics order memory for other CPUs (the inner shareable domain on
 *   Arm); a device that reads descriptors from RAM, or an MMIO register that
 *   starts it, is outside that.  These are the barriers Linux's
 *   Documentation/memory-barriers.txt ("DEVICE I/O" and "dma_wmb()/dma_rmb()"
 *   sections) defines, with the instructions each architecture's
 *   arch/<arch>/include/asm/barrier.h picks for them:
 *
 *                      x86-64    aarch64     riscv64
 *     iodma_dma_wmb()  compiler  dmb oshst   fence w,w     RAM stores seen by a device in order
 *     iodma_dma_rmb()  compiler  dmb oshld   fence r,r     RAM loads of what a device wrote in order
 *     iodma_wmb()      sfence    dsb st      fence ow,ow   RAM stores done before an MMIO store (doorbell)
 *     iodma_rmb()      lfence    dsb ld      fence ir,ir   an MMIO load (status) before later RAM loads
 *     iodma_mb()       mfence    dsb sy      fence iorw,iorw  all of the above, loads and stores
 *
 *   The dma_ pair is for memory shared with a device (coherent DMA memory:
 *   virtqueues, NVMe submission/completion queues); the plain ones order
 *   memory accesses against MMIO accesses.  On x86-64 RAM is ordered TSO for
 *   devices too, so the dma_ pair is only a compiler barrier (as Linux's).
 *
 *   Ring indexes (VIRTIO 1.2 2.7.13 "the driver MUST perform a suitable
 *   memory barrier before the idx update"; the device's used index in
 *   2.7.8 likewise) are published with iodma_store_release_u16/u32: every
 *   earlier load and store of the caller is ordered before the index store
 *   for a device as well as for other CPUs.  iodma_load_acquire_u16 reads an
 *   index and orders every later load and store after it (VIRTIO 2.7.14:
 *   read the used index, then the used ring entries).  The value is stored
 *   and loaded as is: convert with htole16/le16toh first where the ring is
 *   little-endian.  Accesses are single, naturally aligned, untorn.
 *
 *   Header only, no library symbol: usable freestanding (the core, bare
 *   metal) and from C++.  Other architectures get a sequentially consistent
 *   fence for each, which orders CPUs but may not order a device.
 *   All are thread-safe, never fail and never block.
 */
#ifndef IODMA_BARRIER_H
#define IODMA_BARRIER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Keeps the compiler from moving memory accesses across it; no instruction. */
#define iodma_compiler_barrier() __asm__ __volatile__("" ::: "memory")

#if defined(__x86_64__)
#define IODMA_BARRIER_DMA_WMB_ iodma_compiler_barrier()
#define IODMA_BARRIER_DMA_RMB_ iodma_compiler_barrier()
#define IODMA_BARRIER_WMB_ __asm__ __volatile__("sfence" ::: "memory")
#define IODMA_BARRIER_RMB_ __asm__ __volatile__("lfence" ::: "memory")
#define IODMA_BARRIER_MB_ __asm__ __volatile__("mfence" ::: "memory")
/* TSO: a store is never seen before an earlier load or store. */
#define IODMA_BARRIER_RELEASE_ iodma_compiler_barrier()
#define IODMA_BARRIER_ACQUIRE_ iodma_compiler_barrier()
#elif defined(__aarch64__)
#define IODMA_BARRIER_DMA_WMB_ __asm__ __volatile__("dmb oshst" ::: "memory")
#define IODMA_BARRIER_DMA_RMB_ __asm__ __volatile__("dmb oshld" ::: "memory")
#define IODMA_BARRIER_WMB_ __asm__ __volatile__("dsb st" ::: "memory")
#define IODMA_BARRIER_RMB_ __asm__ __volatile__("dsb ld" ::: "memory")
#define IODMA_BARRIER_MB_ __asm__ __volatile__("dsb sy" ::: "memory")
/* Release for a device: dmb osh (the outer shareable domain, where a
 * device observes) orders earlier loads and stores before the plain index
 * store.  Linux's virtqueue, for a device that is real hardware, puts
 * virtio_wmb() = dma_wmb() before its index store; this also orders the
 * earlier loads (a buffer read before it is handed back).  Acquire: dmb
 * oshld orders the index load before later loads and stores, as the
 * virtio_rmb() = dma_rmb() Linux puts after reading the used index. */
#define IODMA_BARRIER_RELEASE_ __asm__ __volatile__("dmb osh" ::: "memory")
#define IODMA_BARRIER_ACQUIRE_ __asm__ __volatile__("dmb oshld" ::: "memory")
#elif defined(__riscv) && __riscv_xlen == 64
#define IODMA_BARRIER_DMA_WMB_ __asm__ __volatile__("fence w,w" ::: "memory")
#define IODMA_BARRIER_DMA_RMB_ __asm__ __volatile__("fence r,r" ::: "memory")
#define IODMA_BARRIER_WMB_ __asm__ __volatile__("fence ow,ow" ::: "memory")
#define IODMA_BARRIER_RMB_ __asm__ __volatile__("fence ir,ir" ::: "memory")
#define IODMA_BARRIER_MB_ __asm__ __volatile__("fence iorw,iorw" ::: "memory")
/* RVWMO: fence rw,w before the store is a release, fence r,rw after the
 * load an acquire (the mappings Linux's smp_store_release and
 * smp_load_acquire use; a device reading RAM is one more observer). */
#define IODMA_BARRIER_RELEASE_ __asm__ __volatile__("fence rw,w" ::: "memory")
#define IODMA_BARRIER_ACQUIRE_ __asm__ __volatile__("fence r,rw" ::: "memory")
#else
#define IODMA_BARRIER_DMA_WMB_ __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define IODMA_BARRIER_DMA_RMB_ __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define IODMA_BARRIER_WMB_ __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define IODMA_BARRIER_RMB_ __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define IODMA_BARRIER_MB_ __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define IODMA_BARRIER_RELEASE_ __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define IODMA_BARRIER_ACQUIRE_ __atomic_thread_fence(__ATOMIC_SEQ_CST)
#endif

/**
 * iodma_dma_wmb() - Order stores to memory shared with a device (Linux dma_wmb).
 *
 * Context: any; never fails or blocks.
 * Return:  nothing.  Every store before it is seen by a device before any
 *          store after it (e.g. descriptor fields before the flag or index
 *          that hands the descriptor over).
 */
static inline void iodma_dma_wmb(void) { IODMA_BARRIER_DMA_WMB_; }

/**
 * iodma_dma_rmb() - Order loads from memory shared with a device (Linux dma_rmb).
 *
 * Context: any; never fails or blocks.
 * Return:  nothing.  Every load before it (e.g. an NVMe completion's phase
 *          bit) completes before any load after it (the completion's other
 *          fields, the data the device wrote).
 */
static inline void iodma_dma_rmb(void) { IODMA_BARRIER_DMA_RMB_; }

/**
 * iodma_wmb() - Order memory stores before a later MMIO store (Linux wmb).
 *
 * Context: any; never fails or blocks.
 * Return:  nothing.  Stores to RAM before it are visible to devices before
 *          an MMIO store after it reaches the device: use it before a
 *          doorbell write (memory-barriers.txt: writel() contains it).
 */
static inline void iodma_wmb(void) { IODMA_BARRIER_WMB_; }

/**
 * iodma_rmb() - Order an MMIO load before later memory loads (Linux rmb).
 *
 * Context: any; never fails or blocks.
 * Return:  nothing.  A device register read before it completes before RAM
 *          loads after it (read a status register, then the data the device
 *          wrote; memory-barriers.txt: readl() contains it).
 */
static inline void iodma_rmb(void) { IODMA_BARRIER_RMB_; }

/**
 * iodma_mb() - Full I/O barrier: every load and store, RAM or MMIO (Linux mb).
 *
 * Context: any; never fails or blocks.
 * Return:  nothing.  Every access before it completes before any after it,
 *          including a store before a later load (which no other barrier
 *          here orders).
 */
static inline void iodma_mb(void) { IODMA_BARRIER_MB_; }

/**
 * iodma_store_release_u16() - Publish a 16-bit ring index to a device.
 * @p: the index; naturally aligned, in memory the device reads.
 * @v: the value, already in the ring's byte order.
 *
 * Context: any; never fails or blocks.
 * Return:  nothing.  Every load and store before it is ordered before the
 *          store of @v, for a device and for other CPUs (VIRTIO 1.2 2.7.13:
 *          the avail ring entries before the avail index).
 */
static inline void iodma_store_release_u16(volatile uint16_t *p, uint16_t v)
{
	IODMA_BARRIER_RELEASE_;
	*p = v;
}

/**
 * iodma_store_release_u32() - Publish a 32-bit index or flag to a device.
 * @p: the location; naturally aligned, in memory the device reads.
 * @v: the value, already in the device's byte order.
 *
 * Context: any; never fails or blocks.
 * Return:  nothing; ordering as iodma_store_release_u16().
 */
static inline void iodma_store_release_u32(volatile uint32_t *p, uint32_t v)
{
	IODMA_BARRIER_RELEASE_;
	*p = v;
}

/**
 * iodma_load_acquire_u16() - Read a 16-bit ring index a device publishes.
 * @p: the index; naturally aligned, in memory the device writes.
 *
 * Context: any; never fails or blocks.
 * Return:  the value as stored (the ring's byte order).  Every load and
 *          store after it is ordered after this load (VIRTIO 1.2 2.7.14:
 *          the used index before the used ring entries it covers).
 */
static inline uint16_t iodma_load_acquire_u16(const volatile uint16_t *p)
{
	uint16_t v = *p;

	IODMA_BARRIER_ACQUIRE_;
	return v;
}

#ifdef __cplusplus
}
#endif

#endif /* IODMA_BARRIER_H */
