/* SPDX-License-Identifier: MIT */
/*
 * memory_priv.h - what xlate.c and domain.c need of an iodma_memory.
 *
 * The regions are an immutable sorted array published through an RCU
 * pointer: lookups are lock-free binary searches and must run inside a
 * read-side section (os_rcu_read_lock or an access section) when regions
 * may be removed concurrently.  Every add/remove publishes a new array,
 * bumps the generation, waits a grace period, then frees the old array.
 */
#ifndef IODMA_MEMORY_PRIV_H
#define IODMA_MEMORY_PRIV_H

#include <stdbool.h>
#include <stdint.h>
#include <iodma/memory.h>

/* Region holding @gpa, copied into *@out.  Caller is inside a read-side
 * section.  Returns 0 or -ENOENT. */
int memory_lookup(const struct iodma_memory *m, uint64_t gpa,
		  struct iodma_region_info *out);

/* The memory's generation: even, bumped by 2 on every region change
 * (before the old array can be freed). */
uint64_t memory_generation(const struct iodma_memory *m);

/* Mark the log pages of [gpa, gpa + len) dirty in the GPA dirty log, if
 * it runs; parts outside every region are ignored.  Caller is inside a
 * read-side section.  Lock-free. */
void memory_dirty_mark(const struct iodma_memory *m, uint64_t gpa, uint64_t len);

/* The GPA dirty log's harvest word: harvests started << 32 | harvests
 * under way (seq_cst load).  A get-and-clear adds (1 << 32) + 1 before it
 * clears any bit and subtracts 1 after the last, then fences. */
uint64_t memory_dirty_harvest(const struct iodma_memory *m);

/* True while the memory's dirty log runs (either mode). */
bool memory_dirty_logging(const struct iodma_memory *m);

/* True while the memory's log is shared (someone else harvests it, with
 * no harvest word to look at). */
bool memory_dirty_shared(const struct iodma_memory *m);

/* A write whose pages could not be kept for re-marking: every later
 * get-and-clear reports every page dirty until the log stops. */
void memory_dirty_set_lost(struct iodma_memory *m);

/* Set the bits of the 4 KiB pages of [gpa, gpa + len) in a shared log of
 * @bytes bytes at @log (vhost-user: bit page % 8 of byte page / 8), with
 * atomic byte ORs after a full fence; pages past the log are skipped.
 * Lock-free; the caller keeps @log mapped. */
void memory_shared_log_mark(void *log, uint64_t bytes, uint64_t gpa,
			    uint64_t len);

#endif /* IODMA_MEMORY_PRIV_H */
