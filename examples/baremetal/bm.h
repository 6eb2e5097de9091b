/* SPDX-License-Identifier: MIT */
/* bm.h - the bare-metal program's own pieces: the heap's page allocator
 * (bm_libc.c) and the virtio-mmio transport (transport_vmmio.c). */
#ifndef BM_H
#define BM_H
#include <stddef.h>
#include <stdint.h>

struct vblk_transport;

struct bm_heap_stats {
	uint64_t live;		/* malloc blocks not freed */
	uint64_t pages_live;	/* bytes of pages not freed */
	uintptr_t small_limit, page_limit;
};

/* Zeroed, 4 KiB-aligned pages; NULL when the heap is spent. */
void *bm_pages_alloc(size_t len);
void bm_pages_free(void *p, size_t len);
void bm_heap_stats(struct bm_heap_stats *out);

/**
 * vblk_vmmio_transport_create() - A virtio-mmio version 2 slot (VIRTIO 1.2
 * 4.2.2) as a transport of the virtio-blk driver (transport.h).
 * @base: the slot's registers (identity-mapped, device memory).
 * @out:  receives the transport.
 *
 * Polls for completions (the board's interrupt controller is not set up):
 * wait() reads and acknowledges InterruptStatus and returns 1 if it was
 * set, else spins a short while and returns 0.
 *
 * Context: one CPU, no interrupts.
 * Return:  0; -ENOMEM.
 */
int vblk_vmmio_transport_create(uintptr_t base, struct vblk_transport **out);

/* Register reads/writes the transport issued (counted for the report). */
struct vblk_vmmio_counts {
	uint64_t notifies, polls, interrupts;
};
void vblk_vmmio_transport_counts(struct vblk_transport *t,
				 struct vblk_vmmio_counts *out);
#endif
