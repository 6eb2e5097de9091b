/* SPDX-License-Identifier: MIT */
/*
 * barrier_probe.c - one out-of-line function per iodma/barrier.h barrier,
 * compiled for each architecture by scripts/check-barriers.sh, which reads
 * the disassembly of each function and asserts its instruction.  Built
 * freestanding, and as C++ too, as the header promises.
 */
#include <iodma/barrier.h>

#ifdef __cplusplus
extern "C" {
#endif
void probe_dma_wmb(void);
void probe_dma_rmb(void);
void probe_wmb(void);
void probe_rmb(void);
void probe_mb(void);
void probe_store_release_u16(volatile uint16_t *p, uint16_t v);
void probe_store_release_u32(volatile uint32_t *p, uint32_t v);
uint16_t probe_load_acquire_u16(const volatile uint16_t *p);
#ifdef __cplusplus
}
#endif

void probe_dma_wmb(void) { iodma_dma_wmb(); }
void probe_dma_rmb(void) { iodma_dma_rmb(); }
void probe_wmb(void) { iodma_wmb(); }
void probe_rmb(void) { iodma_rmb(); }
void probe_mb(void) { iodma_mb(); }
void probe_store_release_u16(volatile uint16_t *p, uint16_t v) { iodma_store_release_u16(p, v); }
void probe_store_release_u32(volatile uint32_t *p, uint32_t v) { iodma_store_release_u32(p, v); }
uint16_t probe_load_acquire_u16(const volatile uint16_t *p) { return iodma_load_acquire_u16(p); }
