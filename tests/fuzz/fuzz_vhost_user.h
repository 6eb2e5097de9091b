/* SPDX-License-Identifier: MIT */
/*
 * fuzz_vhost_user.h - the vhost-user fuzz target (fuzz_vhost_user.c),
 * shared by its two drivers: libFuzzer's (clang -fsanitize=fuzzer) and
 * the standalone one (fuzz_driver.c) that `make check` runs.
 */
#ifndef IODMA_FUZZ_VHOST_USER_H
#define IODMA_FUZZ_VHOST_USER_H

#include <stddef.h>
#include <stdint.h>

#include "fuzz_target.h" /* LLVMFuzzerTestOneInput(): one input = one fresh
			  * back end fed a stream of messages */

/* Write the seed corpus (inputs in the target's encoding) into @dir as
 * files named after what they do.  Returns the number written, or -1. */
int vu_fuzz_write_seeds(const char *dir);

/* Non-zero: every input also runs a device thread that translates and
 * reads guest memory while the messages are handled (set by the driver's
 * --threads; libFuzzer runs stay single-threaded and reproducible). */
extern int vu_fuzz_threads;

/* Counters over every input run so far (for the drivers' summaries). */
struct vu_fuzz_stats {
	uint64_t inputs;
	uint64_t messages;
	uint64_t handled_ok;      /* handle() returned 0 */
	uint64_t rejected;        /* returned an error (not -ENOTSUP) */
	uint64_t ok_mem_table;    /* successful SET_MEM_TABLE with >= 1 region */
	uint64_t ok_add_reg;
	uint64_t ok_rem_reg;
	uint64_t ok_update;       /* successful IOTLB UPDATEs */
	uint64_t ok_invalidate;
	uint64_t ok_log_base;
	uint64_t xlate_ok;        /* device translations that succeeded */
	uint64_t xlate_fault;
	uint64_t dirty_checked;   /* pages whose shared-log bit was checked */
	uint64_t enomem;          /* injected allocation failures seen */
	uint64_t thread_xlates;   /* translations of the device thread */
};

extern struct vu_fuzz_stats vu_fuzz_stats;

#endif /* IODMA_FUZZ_VHOST_USER_H */
