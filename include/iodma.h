/* SPDX-License-Identifier: MIT */
/*
 * iodma.h - umbrella header of iodma, a C11 library for DMA mapping and
 * IOMMU management.  Include this, or the module headers you need:
 *
 *   iodma/common.h   return codes, ranges, permissions, options convention
 *   iodma/backend.h  the backend ops table and the soft IOMMU
 *   iodma/domain.h   a domain: IOVA space, mappings, unmap modes, listeners,
 *                    IOVA allocator                    (pci-driver, OpenVMM)
 *   iodma/memory.h   guest/physical memory regions    (vm-memory backend)
 *   iodma/xlate.h    device-side translation, IOTLB, faults, dirty log,
 *                    access sections                   (vm-memory)
 *   iodma/dma.h      driver-side DMA: coherent, streaming, bounce, sg,
 *                    registered memory, VirtIoHal      (virtio-drivers, dma-api)
 *   iodma/cache.h    cache maintenance                 (dma-api crate)
 *   iodma/barrier.h  I/O barriers for drivers: dma_wmb/dma_rmb, wmb/rmb/mb
 *                    before/after MMIO, ring index release/acquire
 *   iodma/vfio.h     VFIO type1 / iommufd / identity backends, VFIO PCI
 *                    device access: BARs, config, reset, IRQs (virtio-drivers)
 *   iodma/vhost-user.h  the IOMMU and memory half of a vhost-user back end:
 *                    mem table, IOTLB update/invalidate/miss, shared log
 */
#ifndef IODMA_H
#define IODMA_H

#include <iodma/common.h>
#include <iodma/backend.h>
#include <iodma/domain.h>
#include <iodma/xlate.h>
#include <iodma/memory.h>
#include <iodma/dma.h>
#include <iodma/cache.h>
#include <iodma/barrier.h>
#include <iodma/vfio.h>
#include <iodma/vhost-user.h>

#endif /* IODMA_H */
