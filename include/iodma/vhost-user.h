/* SPDX-License-Identifier: MIT */
/*
 * iodma/vhost-user.h - the IOMMU and memory half of a vhost-user back end.
 *
 * Concepts
 *   A struct iodma_vhost_user takes the messages a vhost-user front end
 *   (QEMU) sends on the main channel (QEMU docs/interop/vhost-user.rst,
 *   "the spec" below) and keeps iodma state in step with them; it tells the
 *   caller what to reply.  It does not own the socket: a back end with its
 *   own message loop calls iodma_vhost_user_handle() for every message (the
 *   helpers iodma_vhost_user_recv()/_send() read and write one), and one
 *   built on another vhost-user library passes it the messages that
 *   library hands over.  Requests this layer does not implement come back
 *   as -ENOTSUP with nothing consumed, for the caller's own handling.
 *
 *   State it owns: an iodma_memory holding the front end's memory table,
 *   keyed by guest-physical address (each region's fd mapped shared), and
 *   a two-stage soft iodma_domain over it (IOVA -> GPA -> host).  Without
 *   VIRTIO_F_IOMMU_PLATFORM the domain is disabled: translation is
 *   identity over the memory, device addresses are guest-physical.  With
 *   it, IOTLB UPDATE messages (IOVA -> front-end user address) become
 *   IOVA -> GPA mappings through a private table of the regions' user
 *   addresses, and INVALIDATE unmaps them; a translation miss sends an
 *   IOTLB MISS on the back-end request channel and waits, bounded, for the
 *   UPDATE (spec, "IOMMU support").  Device code translates device
 *   addresses through iodma_vhost_user_domain() with iodma/xlate.h.
 *
 *   Migration: with VHOST_F_LOG_ALL negotiated and a shared log received
 *   (SET_LOG_BASE, LOG_SHMFD), the memory's dirty log runs in shared mode
 *   (iodma_memory_dirty_log_start_shared()): every device write through
 *   the domain sets the front end's bit of its guest-physical page.
 *   iodma_vhost_user_log_used() logs used-ring writes at the ring's
 *   log_guest_addr (spec, "Migration").
 *
 *   Hostile input: the front end is another process.  Every message is
 *   checked (version, flags, the exact payload size of its request, fd
 *   count, ranges, overflow, overlaps) before anything changes; a bad
 *   message changes nothing, and every fd it carried is closed.  A
 *   region's fd must hold its [mmap offset, + size) when it arrives; a
 *   front end that shrinks the file afterwards can still make accesses to
 *   it raise SIGBUS here (an unsealed memfd; the spec offers no guard).
 *
 *   Locking: handle() calls are serialised by an internal lock (one
 *   message at a time, from any thread).  Translation, the miss resolver,
 *   iodma_vhost_user_log_used() and the queries run concurrently with it.
 *   The miss resolver blocks the translating thread (inside its access
 *   section) until the UPDATE arrives through handle() on another thread,
 *   the timeout passes, or handle() must wait for that section (a memory
 *   table change or a feature change waits for every section; an
 *   INVALIDATE only for those that translated an IOVA of its range, as
 *   Linux's IOTLB invalidation waits only for translations of the range;
 *   SET_VRING_ENABLE 0 and GET_VRING_BASE of a ring, see @vring_stop,
 *   release those of the threads serving that ring or none, see
 *   iodma_vhost_user_bind_vring()): then those misses give up at once and
 *   fault, so the main channel never waits for a miss, and a miss in a
 *   section the INVALIDATE does not wait for, or of another ring, keeps
 *   waiting for its UPDATE.
 */
#ifndef IODMA_VHOST_USER_H
#define IODMA_VHOST_USER_H

#include <iodma/common.h>
#include <iodma/domain.h>
#include <iodma/memory.h>
#include <iodma/xlate.h>

#ifdef __cplusplus
extern "C" {
#endif

struct iodma_vhost_user;

/* Which eventfd of a virtqueue a SET_VRING_KICK/CALL/ERR carried. */
#define IODMA_VHOST_USER_FD_KICK 0u
#define IODMA_VHOST_USER_FD_CALL 1u
#define IODMA_VHOST_USER_FD_ERR  2u

/* Most virtqueues (SET_VRING_KICK/CALL/ERR index the ring in 8 bits). */
#define IODMA_VHOST_USER_MAX_VRINGS 256u
/* iodma_vhost_user_bind_vring(): a thread that serves no one ring. */
#define IODMA_VHOST_USER_ANY_VRING  0xffffffffu
/* Most memory slots (QEMU's VHOST_USER_MAX_RAM_SLOTS). */
#define IODMA_VHOST_USER_MAX_SLOTS  512u
/* Largest reply: header (12) + config header (12) + 256 config bytes. */
#define IODMA_VHOST_USER_REPLY_MAX  280u
/* Largest message iodma_vhost_user_handle() accepts (a GET/SET_CONFIG of
 * 256 bytes; a memory table of 8 regions is 276). */
#define IODMA_VHOST_USER_MSG_MAX    280u
/* Most fds one message may carry (spec: a memory table's 8). */
#define IODMA_VHOST_USER_MAX_FDS    8u

/**
 * struct iodma_vhost_user_ops - The caller's part, all optional.
 * @vring_fd:    SET_VRING_KICK/CALL/ERR for ring @vring: @kind is
 *               IODMA_VHOST_USER_FD_*, @fd the eventfd or -1 (the spec's
 *               "invalid FD" flag: poll instead).  Return 0 to take @fd
 *               (the callee owns it from then on, and closes the one it
 *               replaces), or a negative errno to refuse it (the library
 *               closes it and the request fails with that error).  NULL:
 *               the library keeps the fds itself (closing the one each
 *               replaces); read them with iodma_vhost_user_get_vring().
 * @vring_stop:  GET_VRING_BASE stopped ring @vring: stop processing it and
 *               store its next available index in *@avail_idx (preset to
 *               the last SET_VRING_BASE value).  Return 0 or a negative
 *               errno (the request fails with it).  NULL: the preset value
 *               is replied.  Before it runs, the translation misses
 *               waiting for an UPDATE on threads bound to @vring
 *               (iodma_vhost_user_bind_vring()) or to no ring are
 *               released, and new ones of those threads fail at once
 *               (-EAGAIN from the resolver; the front end, e.g. QEMU's
 *               vhost_dev_stop(), serves misses on the thread that waits
 *               for this reply): a chain whose translation failed then
 *               must be left un-consumed, the index stored excluding it,
 *               so that the front end (or a migration destination)
 *               resubmits it, as for requests in flight in Linux vhost;
 *               chains completed before must have their writes and
 *               used-ring update logged already.  SET_VRING_ENABLE 0
 *               releases the same misses (QEMU sends it first, and the
 *               back end should stop the ring there).  Threads bound to
 *               @vring ask no miss until the ring runs again
 *               (SET_VRING_ENABLE 1, or SET_VRING_KICK of an enabled
 *               ring or without PROTOCOL_FEATURES); misses of threads
 *               bound to other rings keep waiting.
 * @get_config:  GET_CONFIG: fill @len bytes of the device config space at
 *               @offset into @buf.  Return 0 or a negative errno.  When
 *               set, the CONFIG protocol feature is offered.
 * @set_config:  SET_CONFIG: @flags is the spec's (0 writable fields, 1
 *               migration).  Return 0 or a negative errno.
 *
 * The callbacks run inside iodma_vhost_user_handle(), with its lock held:
 * from them call only translation and the lock-free queries
 * (iodma_vhost_user_domain(), _memory(), _log_used(), _log_write()).
 */
struct iodma_vhost_user_ops {
	int (*vring_fd)(void *arg, uint32_t vring, uint32_t kind, int fd);
	int (*vring_stop)(void *arg, uint32_t vring, uint32_t *avail_idx);
	int (*get_config)(void *arg, uint32_t offset, void *buf, uint32_t len);
	int (*set_config)(void *arg, uint32_t offset, const void *buf,
			  uint32_t len, uint32_t flags);
};

/**
 * struct iodma_vhost_user_opts - How to create the vhost-user state.
 * @size:            IODMA_OPTS_INIT().
 * @device_features: virtio feature bits of the device, offered by
 *                   GET_FEATURES besides the ones this layer implements
 *                   (VIRTIO_F_IOMMU_PLATFORM 33, VHOST_F_LOG_ALL 26,
 *                   VHOST_USER_F_PROTOCOL_FEATURES 30); e.g.
 *                   VIRTIO_F_VERSION_1 (32).
 * @max_vrings:      virtqueues, 1..256; 0 = 1.  Replied to GET_QUEUE_NUM.
 * @max_mem_slots:   memory regions at once, 1..512; 0 = 32.  Replied to
 *                   GET_MAX_MEM_SLOTS; SET_MEM_TABLE carries at most 8.
 * @miss_timeout_ns: how long a translation miss waits for the front end's
 *                   UPDATE (and its ack); 0 = 1 s.
 * @max_mappings:    IOTLB entries (domain mappings) at once; 0 = 65535.
 * @flags:           reserved, 0.
 * @ops:             callbacks, or NULL; must outlive the object.
 * @ops_arg:         passed to them.
 *
 * The object always creates and owns its iodma_memory and domain (soft
 * backend, alignment the host page size, one valid IOVA range
 * [0, 2^64 - page)); callers reach them with iodma_vhost_user_memory()
 * and iodma_vhost_user_domain() and may add listeners to the domain.
 */
struct iodma_vhost_user_opts {
	size_t size;
	uint64_t device_features;
	uint32_t max_vrings;
	uint32_t max_mem_slots;
	uint64_t miss_timeout_ns;
	uint32_t max_mappings;
	uint32_t flags;
	const struct iodma_vhost_user_ops *ops;
	void *ops_arg;
};

/**
 * struct iodma_vhost_user_reply - What to send back for one message.
 * @len: bytes of @msg to send on the main channel; 0 = send nothing.
 * @msg: a complete vhost-user message (header + payload), no fds.
 */
struct iodma_vhost_user_reply {
	uint32_t len;
	IODMA_ALIGNAS(8) uint8_t msg[IODMA_VHOST_USER_REPLY_MAX];
};

/**
 * struct iodma_vhost_user_vring - One virtqueue as the front end set it up.
 * @num:            SET_VRING_NUM (0 = not set).
 * @base:           the last SET_VRING_BASE, or the index GET_VRING_BASE
 *                  replied.
 * @addr_flags:     SET_VRING_ADDR flags (bit VHOST_VRING_F_LOG).
 * @desc:           descriptor table, as a device address: an IOVA when
 *                  VIRTIO_F_IOMMU_PLATFORM is negotiated, else the
 *                  guest-physical address of the front end's user address
 *                  (spec, "A vring address description"); translate it
 *                  through iodma_vhost_user_domain() either way.
 * @avail:          available ring, likewise.
 * @used:           used ring, likewise.
 * @log_guest_addr: guest-physical address the used ring is logged at.
 * @addr_valid:     SET_VRING_ADDR was received and, without the IOMMU,
 *                  its user addresses lie inside the current memory table.
 * @started:        SET_VRING_KICK received since the last GET_VRING_BASE.
 * @enabled:        SET_VRING_ENABLE state (enabled from the start when
 *                  VHOST_USER_F_PROTOCOL_FEATURES is not negotiated).
 * @kick_fd:        eventfds kept by the library (no @vring_fd callback),
 * @call_fd:        still owned by it: use, do not close; -1 if none.
 * @err_fd:
 */
struct iodma_vhost_user_vring {
	uint32_t num;
	uint32_t base;
	uint32_t addr_flags;
	uint64_t desc;
	uint64_t avail;
	uint64_t used;
	uint64_t log_guest_addr;
	bool addr_valid;
	bool started;
	bool enabled;
	int kick_fd;
	int call_fd;
	int err_fd;
};

/**
 * iodma_vhost_user_create() - Create the back-end state.
 * @opts: options (IODMA_OPTS_INIT then fill), or NULL for defaults.
 * @out:  receives the object.
 *
 * Context: thread-safe.
 * Return:  0; -EINVAL bad opts (size below the first version, max_vrings >
 *          256, max_mem_slots > 512, flags not 0); -E2BIG @opts is longer
 *          than this library knows and a byte past its end is non-zero
 *          (growth rule, iodma/common.h); -ENOMEM; or the memory's or
 *          domain's creation error.  *@out unchanged on error, nothing
 *          left allocated.
 */
IODMA_EXPORT int iodma_vhost_user_create(const struct iodma_vhost_user_opts *opts,
					 struct iodma_vhost_user **out);

/**
 * iodma_vhost_user_destroy() - Free everything.
 * @vu: object, or NULL.
 *
 * Destroys the domain (unmapping every IOTLB mapping), removes and unmaps
 * every region and the shared log, and closes every fd it kept (regions,
 * log, log eventfd, back-end channel, ring eventfds it kept).
 *
 * Context: not thread-safe against any other use of @vu; no translation
 *          through its domain may still run.
 * Return:  nothing.
 */
IODMA_EXPORT void iodma_vhost_user_destroy(struct iodma_vhost_user *vu);

/**
 * iodma_vhost_user_domain() - The two-stage domain device code translates
 *                             through.
 * @vu: object.
 *
 * Context: thread-safe, lock-free.
 * Return:  the domain (owned by @vu), or NULL for a NULL @vu.
 */
IODMA_EXPORT struct iodma_domain *iodma_vhost_user_domain(struct iodma_vhost_user *vu);

/**
 * iodma_vhost_user_memory() - The memory holding the front end's regions.
 * @vu: object.
 *
 * Context: thread-safe, lock-free.
 * Return:  the memory (owned by @vu), or NULL for a NULL @vu.
 */
IODMA_EXPORT struct iodma_memory *iodma_vhost_user_memory(struct iodma_vhost_user *vu);

/**
 * iodma_vhost_user_handle() - Process one message from the front end.
 * @vu:    object.
 * @msg:   the whole message: 12-byte header (request, flags, size) and
 *         payload, native byte order (spec, "Message Specification");
 *         any alignment.
 * @len:   bytes in @msg; must be exactly 12 + the header's size.
 * @fds:   the fds received with it (SCM_RIGHTS), @nfds of them.
 * @nfds:  at most IODMA_VHOST_USER_MAX_FDS.
 * @reply: receives what to send back (@reply->len 0: nothing); set on
 *         every return, errors included, when not NULL.
 *
 * Handles GET/SET_FEATURES, GET/SET_PROTOCOL_FEATURES (offering MQ,
 * LOG_SHMFD, REPLY_ACK, BACKEND_REQ, CONFIGURE_MEM_SLOTS, and CONFIG when
 * @ops->get_config is set), SET_OWNER, RESET_OWNER (disables every ring,
 * as the spec recommends), SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG,
 * GET_MAX_MEM_SLOTS, GET_QUEUE_NUM, SET_LOG_BASE, SET_LOG_FD,
 * SET_VRING_NUM/ADDR/BASE, GET_VRING_BASE, SET_VRING_KICK/CALL/ERR,
 * SET_VRING_ENABLE, SET_BACKEND_REQ_FD, IOTLB_MSG, and GET/SET_CONFIG when
 * the callbacks are set.
 *
 * Replies: the request's own reply where the spec defines one (GET_*,
 * SET_LOG_BASE, IOTLB_MSG's u64); otherwise, with REPLY_ACK negotiated and
 * need_reply set, an ack whose u64 is 0 or the positive errno (spec,
 * "REPLY_ACK").  On an error, a request with a reply body of its own gets
 * the ack only under REPLY_ACK + need_reply (GET_CONFIG: an empty payload,
 * as the spec asks): the caller should then close the connection.
 *
 * Memory table: regions must be page aligned in guest address, size and
 * mmap offset, non-empty, free of overflow and of overlap (in guest and in
 * user address), one fd each, and fit @max_mem_slots.  SET_MEM_TABLE
 * replaces the table in this order: the new regions are validated and
 * mapped; waiting misses are released; every IOTLB mapping is unmapped
 * from the domain (they were made through the old table's user
 * addresses; the front end answers the misses that follow); the old
 * regions leave the memory (waiting for access sections that could see
 * them), are unmapped and their fds closed; the new ones are added.
 * REM_MEM_REG unmaps the IOTLB mappings into the region first, then
 * removes it.  While the shared log runs, a region past the log's end is
 * refused.
 *
 * IOTLB (spec, "IOMMU support"): iova, size and uaddr must be multiples
 * of the host page size (the domain's alignment).  UPDATE maps
 * [iova, iova + size) to the
 * guest-physical addresses of its user addresses, split where the user
 * range crosses regions that are not contiguous in guest-physical space;
 * permissions 1 read, 2 write, 3 both.  The user range must lie wholly
 * inside the regions (-EFAULT, nothing mapped).  An UPDATE equal to what
 * is mapped is a no-op (two misses of one page get two UPDATEs); one that
 * overlaps a different mapping is -EEXIST.  INVALIDATE removes every
 * mapping that overlaps [iova, iova + size) (whole mappings, as the
 * kernel's vhost IOTLB does) with iodma_domain_unmap_gaps(), which returns
 * only when no access section can still use them; size 0 at iova 0 means
 * the whole space (QEMU sends addr_mask + 1, which wraps for a full
 * invalidation).  MISS, ACCESS_FAIL and other types are -EINVAL.
 *
 * Context: thread-safe (serialised); may block (waits for access
 *          sections, mmap); must not be called inside an access section.
 * Return:  0 handled (@reply may hold a reply); -ENOTSUP a well-formed
 *          request this layer does not implement: nothing was consumed,
 *          the caller owns @fds and handles it (with REPLY_ACK and
 *          need_reply, @reply holds a ready error ack it may send);
 *          otherwise every fd in @fds was consumed (kept, handed to
 *          @ops->vring_fd, or closed) and the errors are:
 *          -EINVAL NULL argument, @nfds too large, a bad value (zero
 *          size, overflow, misalignment, permission or IOTLB type, fd
 *          count, vring index or ring size, unknown feature bits);
 *          -EPROTO bad version, reply flag or unknown flag bits (the
 *          stream cannot be trusted: close it); -EBADMSG @len < 12, @len
 *          not 12 + size, or size not what the request carries; -EEXIST
 *          region overlap, or an UPDATE overlapping a different mapping;
 *          -ENOSPC more regions than slots, or the domain's mapping limit;
 *          -EFAULT an UPDATE (or ring) outside the regions; -ENOENT
 *          REM_MEM_REG of no region; -ERANGE the shared log does not
 *          cover a region or a logged used ring; -EPERM the request needs
 *          a feature the front end did not negotiate; -ENOMEM; or the
 *          error of mmap (e.g. a region's fd shorter than its offset +
 *          size), of the domain, or of a callback.  On every error the
 *          state is as before the message (a SET_MEM_TABLE that fails
 *          with -ENOMEM after the old regions went restores them but not
 *          the IOTLB mappings).
 */
IODMA_EXPORT int iodma_vhost_user_handle(struct iodma_vhost_user *vu,
					 const void *msg, size_t len,
					 const int *fds, size_t nfds,
					 struct iodma_vhost_user_reply *reply);

/**
 * iodma_vhost_user_iotlb_miss() - Tell the front end about an IOTLB miss.
 * @vu:   object.
 * @iova: the device address that missed.
 * @perm: IODMA_PERM_READ and/or IODMA_PERM_WRITE.
 *
 * Sends VHOST_USER_BACKEND_IOTLB_MSG (type MISS) on the back-end request
 * channel (SET_BACKEND_REQ_FD).  With REPLY_ACK negotiated it sets
 * need_reply and waits, at most @miss_timeout_ns, for the front end's ack,
 * which comes once it has sent (and had acknowledged) the UPDATE, or sent
 * nothing for an invalid address (spec, "IOMMU support").  After an ack
 * timed out the channel no longer asks for acks (a late one would pair
 * with the wrong request).  Misses on one channel are sent one at a time.
 *
 * The domain's resolver (installed by iodma_vhost_user_create()) sends
 * the same MISS (without need_reply) on every translation miss while the
 * IOMMU is negotiated, then waits for an UPDATE covering @iova with @perm,
 * bounded by the same timeout; on a timeout the translation faults and the
 * domain records the fault.  In the same burst it also asks for the rest
 * of the buffer being translated, one MISS per front-end IOTLB entry (the
 * size of the last UPDATE, else a page) that is neither mapped nor already
 * asked for, at most 64: a strict-mode guest maps every request anew, and
 * the UPDATEs then come back-to-back instead of one round trip per page.
 * A miss inside an entry already asked for waits for that UPDATE.  Nothing
 * outside the buffer the device was given is asked for (QEMU's
 * vhost_device_iotlb_miss() answers an address it cannot translate with
 * nothing; such a request expires after the timeout).
 *
 * Context: thread-safe; blocks up to the timeout.  Call it outside access
 *          sections: handle() may be waiting for them while the front end
 *          waits for handle() before it acks (the wait would last the
 *          timeout).
 * Return:  0 sent (and acked with 0); -EINVAL bad @perm; -ENOTCONN no
 *          back-end channel; -EPERM VIRTIO_F_IOMMU_PLATFORM or
 *          BACKEND_REQ not negotiated; -ETIMEDOUT the channel stayed busy
 *          or no ack came in time; -EIO the front end acked with non-zero;
 *          -EPROTO a malformed ack; or the socket's errno.
 */
IODMA_EXPORT int iodma_vhost_user_iotlb_miss(struct iodma_vhost_user *vu,
					     uint64_t iova, uint32_t perm);

/**
 * iodma_vhost_user_log_used() - Log a write to a used ring.
 * @vu:     object.
 * @vring:  ring index.
 * @offset: byte offset of the write in the used ring.
 * @len:    bytes written; > 0.
 *
 * Call after writing the used ring.  When VHOST_F_LOG_ALL is negotiated,
 * the shared log is set and the ring's VHOST_VRING_F_LOG flag is on, the
 * 4 KiB pages of [log_guest_addr + offset, + len) are set in the shared
 * log (spec, "Migration"); otherwise nothing happens.  The used ring's
 * extent (6 + 8 * num bytes) was checked against the log when the ring
 * address, size or log arrived, so a logged ring never reaches past it.
 * With VIRTIO_F_IOMMU_PLATFORM the used ring's address is an IOVA and
 * log_guest_addr is no guest-physical address (QEMU 7.2 sends the used
 * ring's IOVA there and sizes the log by the memory table only): the
 * write is logged at the guest-physical pages [used IOVA + offset, + len)
 * translates to, as iodma_vhost_user_log_write() does (kernel vhost
 * logs a used ring through its IOTLB likewise, drivers/vhost/vhost.c
 * log_used()), and log_guest_addr is neither checked nor used.
 *
 * Context: thread-safe, lock-free.
 * Return:  0; -EINVAL NULL @vu, ring index out of range, @len 0, or
 *          [offset, offset + len) outside the used ring (or the ring's
 *          size not set); -ERANGE the write's pages lie beyond the log
 *          (nothing marked; a defence only: handle() refuses every ring
 *          address, ring size and log that would allow it); with the
 *          IOMMU, -EFAULT / -EACCES the used ring's IOVA is not mapped
 *          writable (nothing marked, a fault recorded).
 */
IODMA_EXPORT int iodma_vhost_user_log_used(struct iodma_vhost_user *vu,
					   uint32_t vring, uint64_t offset,
					   uint64_t len);

/**
 * iodma_vhost_user_log_write() - Log a device write made through slices.
 * @vu:   object.
 * @iova: device address of the first byte written.
 * @len:  bytes; > 0, no overflow.
 *
 * iodma_write() marks the shared log after its copy, and a write
 * translation made inside an access section is marked again when the
 * section ends (iodma/xlate.h), after the caller's writes through its
 * slices.  A translation made outside any section marks only when it
 * translates, before the caller writes, and the front end may harvest in
 * between: call this after writing through such slices.  It translates
 * again and marks the pages (kernel vhost logs after the copy too).  Does
 * nothing while the log is off.
 *
 * Context: thread-safe.
 * Return:  0; -EINVAL bad arguments; -EFAULT / -EACCES the range is not
 *          mapped writable any more (a fault is recorded).
 */
IODMA_EXPORT int iodma_vhost_user_log_write(struct iodma_vhost_user *vu,
					    uint64_t iova, uint64_t len);

/**
 * iodma_vhost_user_bind_vring() - Say which ring the calling thread serves.
 * @vu:    object.
 * @vring: index, < max_vrings; or IODMA_VHOST_USER_ANY_VRING (the
 *         default of every thread): it serves several rings or none.
 *
 * A ring's stop (SET_VRING_ENABLE 0, GET_VRING_BASE) releases the misses
 * of the threads bound to it and of the unbound ones, not those of threads
 * bound to another ring (a multiqueue back end with a thread per ring:
 * stopping one ring costs the others nothing).  A thread bound to a
 * stopped or disabled ring asks no miss until the ring runs again, as the
 * front end would answer none (QEMU's "Unexpected IOTLB message when
 * virtio device is stopped"); an unbound one only while @vring_stop runs.
 * Linux vhost has a worker per device and flushes it on every ring stop;
 * libvhost-user serves all rings on one thread: the binding is this
 * library's.
 *
 * Context: the calling thread only (thread-local); any time, also inside
 *          an access section (it applies to the next miss).
 * Return:  0; -EINVAL NULL @vu or @vring out of range (nothing changed).
 */
IODMA_EXPORT int iodma_vhost_user_bind_vring(struct iodma_vhost_user *vu,
					     uint32_t vring);

/**
 * iodma_vhost_user_get_vring() - Read a virtqueue's state.
 * @vu:    object.
 * @vring: index, < max_vrings.
 * @out:   receives the state (a snapshot).
 *
 * Context: thread-safe; takes the handle lock (not from an ops callback).
 * Return:  0; -EINVAL NULL argument or index out of range.
 */
IODMA_EXPORT int iodma_vhost_user_get_vring(struct iodma_vhost_user *vu,
					    uint32_t vring,
					    struct iodma_vhost_user_vring *out);

/**
 * iodma_vhost_user_get_features() - The negotiated feature words.
 * @vu:       object.
 * @features: if not NULL, receives SET_FEATURES' value (0 before it).
 * @protocol: if not NULL, receives SET_PROTOCOL_FEATURES' value.
 *
 * Context: thread-safe, lock-free.
 * Return:  0; -EINVAL NULL @vu.
 */
IODMA_EXPORT int iodma_vhost_user_get_features(struct iodma_vhost_user *vu,
					       uint64_t *features,
					       uint64_t *protocol);

/**
 * struct iodma_vhost_user_stats - What the IOTLB layer did (monotonic).
 * @size:              IODMA_STRUCT_INIT(); see iodma_vhost_user_get_stats().
 * @iotlb_updates:     IOTLB UPDATE messages applied (a repeat of what is
 *                     mapped counts; a refused one does not).
 * @iotlb_invalidates: IOTLB INVALIDATE messages applied (also those that
 *                     covered no mapping).
 * @iotlb_misses:      MISS messages the domain's resolver sent.
 * @misses_resolved:   resolver calls an UPDATE answered in time.
 * @misses_released:   resolver calls given up because handle() had to
 *                     wait for their access section (an INVALIDATE of a
 *                     range it translated, a memory table change, a ring
 *                     stop) while they waited: the translation
 *                     faulted, but asked again from a new section it may
 *                     succeed (a race with the front end, not a bad
 *                     address: QEMU's strict-mode invalidations make it
 *                     happen under load).
 * @misses_failed:     resolver calls that failed otherwise: no channel,
 *                     a send error, or no UPDATE before the timeout (the
 *                     front end found no mapping: a real fault).
 * @misses_ahead:      of @iotlb_misses, those sent ahead for the rest of
 *                     the buffer whose translation missed (see
 *                     iodma_vhost_user_iotlb_miss()).
 */
struct iodma_vhost_user_stats {
	size_t size;
	uint64_t iotlb_updates;
	uint64_t iotlb_invalidates;
	uint64_t iotlb_misses;
	uint64_t misses_resolved;
	uint64_t misses_released;
	uint64_t misses_failed;
	uint64_t misses_ahead;
};

/**
 * iodma_vhost_user_get_stats() - Read the IOTLB counters.
 * @vu: object.
 * @st: receives them (each read atomically; together a near snapshot);
 *      its @size set by IODMA_STRUCT_INIT(struct iodma_vhost_user_stats)
 *      (growth rule of iodma/common.h, Linux's copy_struct_to_user()).
 *
 * Translations that hit the page table are not counted here: the device
 * code sees those (every successful iodma_translate()).
 *
 * Context: thread-safe, lock-free.
 * Return:  0 and min(st->size, sizeof(struct iodma_vhost_user_stats)) bytes
 *          filled, the caller's bytes past the library's struct zeroed;
 *          -EINVAL NULL argument, or st->size smaller than the first
 *          version of struct iodma_vhost_user_stats (*@st unchanged).
 */
IODMA_EXPORT int iodma_vhost_user_get_stats(struct iodma_vhost_user *vu,
					    struct iodma_vhost_user_stats *st);

/**
 * iodma_vhost_user_recv() - Read one message from a vhost-user socket.
 * @fd:   connected AF_UNIX stream socket.
 * @buf:  receives header + payload.
 * @cap:  bytes in @buf; at least 12.
 * @fds:  receives the fds that came with it (close-on-exec).
 * @nfds: in: entries in @fds; out: fds received.
 *
 * Reads the 12-byte header, then exactly its size in payload.  Blocks.
 *
 * Context: thread-safe (one reader per socket).  Linux only.
 * Return:  the message length (12 + size); -ECONNRESET the peer closed;
 *          -EMSGSIZE the payload does not fit @cap or more fds came than
 *          fit (the connection is then out of sync: close it); -EINVAL bad
 *          arguments; or the socket's errno.  On error no fd is left open
 *          and *@nfds is 0.
 */
IODMA_EXPORT int iodma_vhost_user_recv(int fd, void *buf, size_t cap,
				       int *fds, size_t *nfds);

/**
 * iodma_vhost_user_send() - Write one message (e.g. a reply) to a socket.
 * @fd:   connected AF_UNIX stream socket.
 * @msg:  header + payload.
 * @len:  bytes; at least 12.
 *
 * Context: thread-safe (one writer per socket).  Never raises SIGPIPE.
 *          Linux only.
 * Return:  0; -EINVAL bad arguments; or the socket's errno.
 */
IODMA_EXPORT int iodma_vhost_user_send(int fd, const void *msg, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* IODMA_VHOST_USER_H */
