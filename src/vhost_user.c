/* SPDX-License-Identifier: MIT */
/*
 * vhost_user.c - the IOMMU and memory half of a vhost-user back end
 * (iodma/vhost-user.h), written from the spec (QEMU
 * docs/interop/vhost-user.rst).
 *
 * Fds: handle() copies the message's fds into a local array; a request
 * handler "takes" an fd by setting its slot to -1 (it is then kept, or
 * handed to the caller's callback); every slot still set when the handler
 * returns is closed, on success and on every error.  Only -ENOTSUP (a
 * request not implemented here) leaves the fds to the caller.
 *
 * Locks:
 *   lock       serialises handle() and guards the regions, the rings and
 *              the log; never taken on the translation path.
 *   miss_lock  guards the back-end channel (fd, busy token), the list of
 *              waiting misses and the quiesce count; miss_cond signals
 *              their changes.  Taken inside lock, never the reverse.
 * Order against the domain: handle() takes lock, then calls the domain
 * and the memory, which may wait for access sections.  A miss waits
 * inside the translating thread's section for an UPDATE that only
 * handle() can install, so before any call that waits for sections
 * handle() raises the quiesce count with the range it will wait for:
 * the waiting misses whose section that wait covers (as
 * xlate_wait_sections() decides it) give up and fault, new ones in such a
 * section fail at once, and the wait ends.  A miss in a section the unmap
 * does not wait for keeps waiting for its UPDATE: an invalidation of an
 * unrelated range does not cost a request a retry.
 *
 * No system call here: mmap and sockets go through src/os/.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include <iodma/vhost-user.h>
#include <iodma/backend.h>

#include "domain_priv.h"
#include "memory_priv.h"
#include "util.h"
#include "vhost_user_proto.h"

#define DEFAULT_SLOTS      32u
#define DEFAULT_TIMEOUT_NS 1000000000ull
/* Misses sent ahead for the rest of a buffer (see vu_resolver), and the
 * misses awaiting their UPDATE that the layer remembers. */
#define MISS_AHEAD   64u
#define MISS_PENDING 128u
#define MAX_VRING_NUM      32768u
#define VU_ANY_VRING       IODMA_VHOST_USER_ANY_VRING
#define VRING_LOG_BIT      (1u << VHOST_VRING_F_LOG)

/* One region of the front end's memory table. */
struct vu_region {
	uint64_t gpa;
	uint64_t size;
	uint64_t uaddr;
	uint64_t mmap_offset;
	void *va;               /* our mapping of [mmap_offset, + size) */
	int fd;                 /* kept open: the memory's regions carry it */
};

/* The shared log (SET_LOG_BASE), published for log_used() by RCU. */
struct vu_shlog {
	void *bits;             /* byte 0 logs guest-physical page 0 */
	uint64_t bytes;
	void *map;              /* what to unmap */
	uint64_t map_len;
};

struct vu_vring {
	uint32_t num;
	uint32_t base;
	struct vhost_vring_addr addr;
	bool addr_set;
	bool started;
	bool enabled;
	bool miss_off;                  /* miss_lock: disabled or stopped:
					 * misses of threads bound to it
					 * fail at once (vring_misses_off()) */
	int fd[3];                      /* kick, call, err, when kept */
	/* Read by log_used() without the lock. */
	_Atomic uint32_t log_num;       /* num */
	_Atomic uint64_t log_addr;      /* log_guest_addr */
	_Atomic uint64_t log_used_iova; /* used_user_addr (an IOVA with the IOMMU) */
	_Atomic bool log_on;            /* VHOST_VRING_F_LOG */
};

/* A translation waiting for its UPDATE (on the waiter's stack). */
struct vu_waiter {
	uint64_t iova;
	uint32_t perm;
	bool resolved;
	bool released;          /* a quiesce waits for its section, or
				 * its ring stops */
	uint32_t vring;         /* the thread's ring, or VU_ANY_VRING */
	const void *sect;       /* xlate_section_self() of the waiter */
	struct vu_waiter *next;
};

struct iodma_vhost_user {
	/* Immutable after create. */
	struct iodma_memory *mem;
	struct iodma_domain *dom;
	const struct iodma_vhost_user_ops *ops;
	void *ops_arg;
	uint64_t device_features;
	uint32_t max_vrings;
	uint32_t max_slots;
	uint64_t timeout_ns;

	os_mutex_t lock;                /* serialises handle(); guards below */
	_Atomic uint64_t features;      /* SET_FEATURES (read lock-free) */
	_Atomic uint64_t protocol;      /* SET_PROTOCOL_FEATURES */
	bool owner;
	struct vu_region *regions;      /* max_slots entries, nregions used */
	size_t nregions;
	struct vu_vring *vrings;
	_Atomic(struct vu_shlog *) log;   /* RCU for log_used() */
	bool logging;                   /* the memory's shared log runs */
	int log_fd;                     /* SET_LOG_FD */

	os_mutex_t miss_lock;           /* guards below */
	os_cond_t miss_cond;
	int backend_fd;                 /* SET_BACKEND_REQ_FD, or -1 */
	bool chan_busy;                 /* a miss is being sent / acked */
	bool chan_noack;                /* an ack timed out: ask no more */
	unsigned int quiesce;           /* handle() waits for sections */
	unsigned int ring_stopping;     /* a vring_stop callback runs: the
					 * misses of unbound threads fail */
	bool q_all;                     /* ... for every section, or only */
	uint64_t q_first, q_last;       /* for those over this IOVA range */
	struct vu_waiter *waiters;
	/* MISS messages sent and not yet answered by an UPDATE, nor expired:
	 * a miss inside one waits for that UPDATE instead of asking again. */
	struct vu_pending {
		uint64_t iova;          /* page */
		uint32_t perm;
		uint64_t deadline;      /* os_now_ns() after which it is dropped */
		uint32_t vring;         /* the asking thread's ring */
	} pending[MISS_PENDING];
	unsigned int npending;
	uint64_t update_size;           /* the last UPDATE's size: the front
					 * end's IOTLB entry size, the stride
					 * of misses sent ahead */

	/* Counters (iodma_vhost_user_get_stats()), relaxed atomics. */
	_Atomic uint64_t st_updates;
	_Atomic uint64_t st_invalidates;
	_Atomic uint64_t st_misses;
	_Atomic uint64_t st_miss_resolved;
	_Atomic uint64_t st_miss_failed;
	_Atomic uint64_t st_miss_released;
	_Atomic uint64_t st_miss_ahead;
};

static void stat_inc(_Atomic uint64_t *c)
{
	atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* The message's fds, as handlers see them: take one by setting it -1. */
struct vu_fds {
	int fd[IODMA_VHOST_USER_MAX_FDS];
	size_t n;
};

static void fds_close(struct vu_fds *f)
{
	for (size_t i = 0; i < f->n; i++) {
		os_close(f->fd[i]);
		f->fd[i] = -1;
	}
}

static int fds_take(struct vu_fds *f, size_t i)
{
	int fd = f->fd[i];

	f->fd[i] = -1;
	return fd;
}

static bool has_feature(const struct iodma_vhost_user *vu, unsigned int bit)
{
	return atomic_load_explicit(&((struct iodma_vhost_user *)vu)->features,
				    memory_order_acquire) & (1ull << bit);
}

static bool has_protocol(const struct iodma_vhost_user *vu, unsigned int bit)
{
	return atomic_load_explicit(&((struct iodma_vhost_user *)vu)->protocol,
				    memory_order_acquire) & (1ull << bit);
}

static uint64_t offered_features(const struct iodma_vhost_user *vu)
{
	return vu->device_features | (1ull << VU_F_IOMMU_PLATFORM) |
	       (1ull << VU_F_LOG_ALL) | (1ull << VU_F_PROTOCOL_FEATURES);
}

static uint64_t offered_protocol(const struct iodma_vhost_user *vu)
{
	uint64_t p = (1ull << VU_PROTOCOL_F_MQ) | (1ull << VU_PROTOCOL_F_LOG_SHMFD) |
		     (1ull << VU_PROTOCOL_F_REPLY_ACK) |
		     (1ull << VU_PROTOCOL_F_BACKEND_REQ) |
		     (1ull << VU_PROTOCOL_F_CONFIGURE_MEM_SLOTS);

	if (vu->ops && vu->ops->get_config)
		p |= 1ull << VU_PROTOCOL_F_CONFIG;
	return p;
}

/* ---- replies ---------------------------------------------------------------- */

static void reply_put(struct iodma_vhost_user_reply *r, uint32_t request,
		      const void *payload, uint32_t size)
{
	struct vu_header h = { .request = request,
			       .flags = VU_VERSION | VU_FLAG_REPLY,
			       .size = size };

	memcpy(r->msg, &h, sizeof(h));
	if (size)
		memcpy(r->msg + sizeof(h), payload, size);
	r->len = (uint32_t)sizeof(h) + size;
}

static void reply_u64(struct iodma_vhost_user_reply *r, uint32_t request,
		      uint64_t v)
{
	reply_put(r, request, &v, sizeof(v));
}

/* ---- misses: quiesce, waiters ---------------------------------------------- */

/* Does the quiesce under way wait for @w's section?  miss_lock held. */
static bool quiesce_hits(const struct iodma_vhost_user *vu,
			 const struct vu_waiter *w)
{
	return vu->quiesce &&
	       (vu->q_all || xlate_section_touches(w->sect, vu->dom, vu->q_first,
						   vu->q_last));
}

/* handle() is about to wait for the access sections that recorded
 * [first, last] of the domain (@all: for every section, a grace period):
 * release the misses that wait inside one of them, and refuse new ones
 * there until unquiesce().  A section that recorded nothing of the range
 * is not waited for, so its miss keeps waiting for its UPDATE. */
static void quiesce_range(struct iodma_vhost_user *vu, bool all,
			  uint64_t first, uint64_t last)
{
	os_mutex_lock(&vu->miss_lock);
	if (vu->quiesce++) {
		vu->q_all = true; /* nested: the union, widened to all */
	} else {
		vu->q_all = all;
		vu->q_first = first;
		vu->q_last = last;
	}
	for (struct vu_waiter *w = vu->waiters; w; w = w->next)
		if (!w->resolved && quiesce_hits(vu, w))
			w->released = true;
	os_cond_broadcast(&vu->miss_cond);
	os_mutex_unlock(&vu->miss_lock);
}

static void quiesce(struct iodma_vhost_user *vu)
{
	quiesce_range(vu, true, 0, 0);
}

static void unquiesce(struct iodma_vhost_user *vu)
{
	os_mutex_lock(&vu->miss_lock);
	vu->quiesce--;
	os_mutex_unlock(&vu->miss_lock);
}

/* The ring the calling thread serves (iodma_vhost_user_bind_vring()). */
static _Thread_local struct {
	const struct iodma_vhost_user *vu;
	uint32_t vring;
} vu_tls;

static uint32_t thread_vring(const struct iodma_vhost_user *vu)
{
	return vu_tls.vu == vu ? vu_tls.vring : VU_ANY_VRING;
}

/* Does a stopped ring refuse @w's miss?  A thread bound to a ring that is
 * disabled or stopped asks nothing (the front end answers no miss of a
 * ring it stops, and is told nothing more about one it stopped); an
 * unbound one while a vring_stop callback runs.  miss_lock held. */
static bool ring_refuses(const struct iodma_vhost_user *vu,
			 const struct vu_waiter *w)
{
	if (w->vring == VU_ANY_VRING)
		return vu->ring_stopping != 0;
	return vu->vrings[w->vring].miss_off;
}

/* Ring @idx stops (SET_VRING_ENABLE 0, GET_VRING_BASE; @off) or runs
 * again (SET_VRING_ENABLE 1, SET_VRING_KICK).  Stopping releases at once
 * the misses waiting for an UPDATE on threads bound to it or to no ring,
 * and forgets the MISS messages they sent; those of threads bound to
 * other rings keep waiting (multiqueue: another ring's request is not
 * failed by this ring's stop).  miss_lock not held. */
static void vring_misses_off(struct iodma_vhost_user *vu, uint32_t idx, bool off)
{
	os_mutex_lock(&vu->miss_lock);
	vu->vrings[idx].miss_off = off;
	if (off) {
		unsigned int i = 0;

		for (struct vu_waiter *w = vu->waiters; w; w = w->next)
			if (!w->resolved && (w->vring == idx || w->vring == VU_ANY_VRING))
				w->released = true;
		/* The front end drops the misses of a device it stops: those
		 * sent for this ring will not be answered, and a later miss
		 * must not wait for them. */
		while (i < vu->npending) {
			if (vu->pending[i].vring == idx ||
			    vu->pending[i].vring == VU_ANY_VRING)
				vu->pending[i] = vu->pending[--vu->npending];
			else
				i++;
		}
		os_cond_broadcast(&vu->miss_cond);
	}
	os_mutex_unlock(&vu->miss_lock);
}

IODMA_EXPORT int iodma_vhost_user_bind_vring(struct iodma_vhost_user *vu,
					     uint32_t vring)
{
	if (!vu || (vring != VU_ANY_VRING && vring >= vu->max_vrings))
		return -EINVAL;
	vu_tls.vu = vring == VU_ANY_VRING ? NULL : vu;
	vu_tls.vring = vring;
	return 0;
}

/* Forget pending misses that [iova, iova + size) with @perm answers, and
 * those past their deadline (the front end answers nothing for an address
 * it cannot translate).  miss_lock held. */
static void pending_prune(struct iodma_vhost_user *vu, uint64_t iova,
			  uint64_t size, uint32_t perm, uint64_t now)
{
	unsigned int i = 0;

	while (i < vu->npending) {
		struct vu_pending *p = &vu->pending[i];

		if (p->deadline < now ||
		    (p->iova >= iova && p->iova - iova < size &&
		     (p->perm & ~perm) == 0))
			*p = vu->pending[--vu->npending];
		else
			i++;
	}
}

/* Is a miss for @iova with @perm already on its way?  miss_lock held. */
static bool pending_has(const struct iodma_vhost_user *vu, uint64_t iova,
			uint32_t perm, uint64_t pg, uint64_t now)
{
	for (unsigned int i = 0; i < vu->npending; i++) {
		const struct vu_pending *p = &vu->pending[i];

		if (p->deadline >= now && p->iova == (iova & ~(pg - 1)) &&
		    (perm & ~p->perm) == 0)
			return true;
	}
	return false;
}

static void pending_add(struct iodma_vhost_user *vu, uint64_t iova,
			uint32_t perm, uint64_t pg, uint64_t deadline,
			uint32_t vring)
{
	if (vu->npending < MISS_PENDING)
		vu->pending[vu->npending++] = (struct vu_pending){
			.iova = iova & ~(pg - 1), .perm = perm, .deadline = deadline,
			.vring = vring };
}

/* An UPDATE mapped [iova, iova + size) with @perm: wake its waiters. */
static void waiters_resolve(struct iodma_vhost_user *vu, uint64_t iova,
			    uint64_t size, uint32_t perm)
{
	os_mutex_lock(&vu->miss_lock);
	vu->update_size = size;
	pending_prune(vu, iova, size, perm, os_now_ns());
	for (struct vu_waiter *w = vu->waiters; w; w = w->next) {
		if (w->iova >= iova && w->iova - iova < size &&
		    (w->perm & ~perm) == 0)
			w->resolved = true;
	}
	os_cond_broadcast(&vu->miss_cond);
	os_mutex_unlock(&vu->miss_lock);
}

/* Take the channel's busy token by @deadline.  miss_lock held.  Returns
 * the channel fd, or -ENOTCONN / -ETIMEDOUT / -EAGAIN (@w, when given,
 * was released by a quiesce). */
static int chan_acquire(struct iodma_vhost_user *vu, uint64_t deadline,
			const struct vu_waiter *w)
{
	for (;;) {
		if (w && w->released)
			return -EAGAIN;
		if (vu->backend_fd < 0)
			return -ENOTCONN;
		if (!vu->chan_busy)
			break;
		if (os_cond_timedwait(&vu->miss_cond, &vu->miss_lock, deadline))
			return -ETIMEDOUT;
	}
	vu->chan_busy = true;
	return vu->backend_fd;
}

static void chan_release(struct iodma_vhost_user *vu)
{
	vu->chan_busy = false;
	os_cond_broadcast(&vu->miss_cond);
}

static int perm_to_vhost(uint32_t perm)
{
	if (perm == 0 || (perm & ~IODMA_PERM_RW))
		return -EINVAL;
	/* VHOST_ACCESS_RO = read = 1, WO = write = 2: the same bits. */
	return (int)perm;
}

/* Send a MISS on @fd (need_reply when @ack). */
static int send_miss(int fd, uint64_t iova, uint32_t perm, bool ack)
{
	struct {
		struct vu_header h;
		struct vhost_iotlb_msg m;
	} __attribute__((packed)) msg;

	memset(&msg, 0, sizeof(msg));
	msg.h.request = VU_BACKEND_IOTLB_MSG;
	msg.h.flags = VU_VERSION | (ack ? VU_FLAG_NEED_REPLY : 0);
	msg.h.size = sizeof(msg.m);
	msg.m.iova = iova;
	msg.m.perm = (uint8_t)perm;
	msg.m.type = VHOST_IOTLB_MISS;
	return os_unix_send(fd, &msg, sizeof(msg), NULL, 0, true);
}

IODMA_EXPORT int iodma_vhost_user_iotlb_miss(struct iodma_vhost_user *vu,
					     uint64_t iova, uint32_t perm)
{
	uint64_t deadline;
	bool ack;
	int fd, ret;

	if (!vu || perm_to_vhost(perm) < 0)
		return -EINVAL;
	if (!has_feature(vu, VU_F_IOMMU_PLATFORM) ||
	    !has_protocol(vu, VU_PROTOCOL_F_BACKEND_REQ))
		return -EPERM;
	deadline = os_now_ns() + vu->timeout_ns;
	os_mutex_lock(&vu->miss_lock);
	fd = chan_acquire(vu, deadline, NULL);
	ack = has_protocol(vu, VU_PROTOCOL_F_REPLY_ACK) && !vu->chan_noack;
	os_mutex_unlock(&vu->miss_lock);
	if (fd < 0)
		return fd;
	ret = send_miss(fd, iova, perm, ack);
	if (ret == 0 && ack) {
		struct {
			struct vu_header h;
			uint64_t v;
		} __attribute__((packed)) r;
		int rfds[IODMA_VHOST_USER_MAX_FDS];
		size_t nr = 0;

		ret = os_unix_recv(fd, &r, sizeof(r.h), rfds, IODMA_ARRAY_SIZE(rfds),
				   &nr, deadline, NULL);
		if (ret == 0 && (r.h.request != VU_BACKEND_IOTLB_MSG ||
				 r.h.flags != (VU_VERSION | VU_FLAG_REPLY) ||
				 r.h.size != sizeof(r.v)))
			ret = -EPROTO;
		if (ret == 0)
			ret = os_unix_recv(fd, &r.v, sizeof(r.v), rfds,
					   IODMA_ARRAY_SIZE(rfds), &nr, deadline,
					   NULL);
		while (nr)
			os_close(rfds[--nr]);
		if (ret == 0 && r.v != 0)
			ret = -EIO;
		if (ret == -ETIMEDOUT || ret == -EPROTO) {
			os_mutex_lock(&vu->miss_lock);
			vu->chan_noack = true;
			os_mutex_unlock(&vu->miss_lock);
		}
	}
	os_mutex_lock(&vu->miss_lock);
	chan_release(vu);
	os_mutex_unlock(&vu->miss_lock);
	return ret;
}

/* The stride of misses sent ahead: the front end's IOTLB entry size as the
 * last UPDATE showed it (a power of two; QEMU sends one entry per MISS),
 * else the page size.  miss_lock held. */
static uint64_t ahead_stride(const struct iodma_vhost_user *vu, uint64_t pg)
{
	uint64_t sz = vu->update_size;

	if (sz > pg && sz <= (1ull << 30) && (sz & (sz - 1)) == 0)
		return sz;
	return pg;
}

/*
 * The domain's resolver: send a MISS (no ack asked: the UPDATE itself is
 * the answer) and wait for an UPDATE covering @iova with @perm, the
 * timeout, or a quiesce that waits for this thread's access section (the
 * miss runs inside it; see quiesce_range()).
 *
 * A buffer the front end just mapped misses on every one of its IOTLB
 * entries (strict-mode guests map each request anew), and each MISS is a
 * round trip through the front end's main loop.  So the first miss of a
 * translation also asks, in the same burst, for the entries of the rest
 * of the buffer that are neither mapped nor already asked for (at most
 * MISS_AHEAD, by xlate_miss_left()); their UPDATEs arrive while this one
 * is consumed, and a later miss on one of them waits for its UPDATE
 * instead of asking again.  Only addresses inside the buffer the device
 * was given are asked for: nothing a correct driver did not map.
 */
static int vu_resolver(void *arg, struct iodma_domain *d, uint64_t iova,
		       uint32_t perm)
{
	struct iodma_vhost_user *vu = arg;
	struct vu_waiter w = { .iova = iova, .perm = perm,
			       .vring = thread_vring(vu) }, **pp;
	uint64_t pg = os_page_size(), left = xlate_miss_left();
	uint64_t ahead[MISS_AHEAD], now, deadline;
	unsigned int nahead = 0, sent = 0;
	int fd, ret = 0;

	if (!has_feature(vu, VU_F_IOMMU_PLATFORM) || perm_to_vhost(perm) < 0)
		return -ENOENT;
	now = os_now_ns();
	deadline = now + vu->timeout_ns;
	os_mutex_lock(&vu->miss_lock);
	w.sect = xlate_section_self();
	w.next = vu->waiters;
	vu->waiters = &w;
	if (quiesce_hits(vu, &w) || ring_refuses(vu, &w)) {
		ret = -EAGAIN;
		goto out;
	}
	pending_prune(vu, 0, 0, 0, now); /* the expired ones */
	if (!pending_has(vu, iova, perm, pg, now)) {
		uint64_t stride, next, last;

		fd = chan_acquire(vu, deadline, &w);
		if (fd < 0) {
			ret = fd;
			goto out;
		}
		pending_add(vu, iova, perm, pg, deadline, w.vring);
		stride = ahead_stride(vu, pg);
		next = (iova & ~(stride - 1)) + stride;
		last = left > 1 && iova + (left - 1) > iova ? iova + (left - 1) : iova;
		for (; nahead < MISS_AHEAD && next > iova && next <= last &&
		       vu->npending < MISS_PENDING; next += stride) {
			if (pending_has(vu, next, perm, pg, now) ||
			    xlate_mapped(d, next, perm))
				continue;
			ahead[nahead++] = next;
			pending_add(vu, next, perm, pg, deadline, w.vring);
		}
		os_mutex_unlock(&vu->miss_lock);
		ret = send_miss(fd, iova, perm, false);
		if (ret == 0) {
			stat_inc(&vu->st_misses);
			for (; sent < nahead; sent++) {
				if (send_miss(fd, ahead[sent], perm, false))
					break;
				stat_inc(&vu->st_misses);
				stat_inc(&vu->st_miss_ahead);
			}
		}
		os_mutex_lock(&vu->miss_lock);
		/* What was not sent is not on its way. */
		if (ret)
			pending_prune(vu, iova & ~(pg - 1), pg, perm, now);
		for (unsigned int i = sent; i < nahead; i++)
			pending_prune(vu, ahead[i] & ~(pg - 1), pg, perm, now);
		chan_release(vu);
	}
	while (ret == 0 && !w.resolved) {
		/* Released by a quiesce that waits for this section (marked
		 * under miss_lock, so seen even when it is already over). */
		if (w.released)
			ret = -EAGAIN;
		else if (os_cond_timedwait(&vu->miss_cond, &vu->miss_lock, deadline))
			ret = w.resolved ? 0 : -ETIMEDOUT;
	}
out:
	for (pp = &vu->waiters; *pp != &w; pp = &(*pp)->next)
		;
	*pp = w.next;
	os_mutex_unlock(&vu->miss_lock);
	stat_inc(ret == 0 ? &vu->st_miss_resolved :
		 ret == -EAGAIN ? &vu->st_miss_released : &vu->st_miss_failed);
	return ret;
}

/* ---- regions ------------------------------------------------------------------ */

/* Checks one region on its own. */
static int region_check(const struct vu_mem_region *r)
{
	uint64_t pg = os_page_size();

	if (!range_valid(r->guest_addr, r->size) ||
	    !range_valid(r->user_addr, r->size) ||
	    !range_valid(r->mmap_offset, r->size) || r->size > SIZE_MAX)
		return -EINVAL;
	if (!is_aligned(r->guest_addr, pg) || !is_aligned(r->size, pg) ||
	    !is_aligned(r->mmap_offset, pg))
		return -EINVAL;
	return 0;
}

static bool regions_clash(uint64_t g1, uint64_t u1, uint64_t s1, uint64_t g2,
			  uint64_t u2, uint64_t s2)
{
	return ranges_overlap(g1, s1, g2, s2) || ranges_overlap(u1, s1, u2, s2);
}

/* Does the log cover guest-physical [gpa, gpa + len)? */
static bool log_covers(const struct vu_shlog *l, uint64_t gpa, uint64_t len)
{
	return (range_last(gpa, len) / VU_LOG_PAGE) / 8 < l->bytes;
}

/* The region holding user address @uaddr, or NULL. */
static const struct vu_region *region_by_uaddr(const struct iodma_vhost_user *vu,
					       uint64_t uaddr)
{
	for (size_t i = 0; i < vu->nregions; i++) {
		const struct vu_region *r = &vu->regions[i];

		if (uaddr >= r->uaddr && uaddr - r->uaddr < r->size)
			return r;
	}
	return NULL;
}

/* [uaddr, uaddr + len) inside one region: its guest-physical address. */
static int uaddr_to_gpa(const struct iodma_vhost_user *vu, uint64_t uaddr,
			uint64_t len, uint64_t *gpa)
{
	const struct vu_region *r = region_by_uaddr(vu, uaddr);

	if (!r || !range_valid(uaddr, len) ||
	    !range_contains(r->uaddr, r->size, uaddr, len))
		return -EFAULT;
	*gpa = r->gpa + (uaddr - r->uaddr);
	return 0;
}

static void region_unmap(struct vu_region *r)
{
	os_unmap(r->va, r->size);
	os_close(r->fd);
	r->va = NULL;
	r->fd = -1;
}

/* Map the fds of @n checked regions into @out; all or none. */
static int regions_map(const struct vu_mem_region *in, size_t n,
		       struct vu_fds *f, size_t first_fd, struct vu_region *out)
{
	for (size_t i = 0; i < n; i++) {
		int ret;

		out[i] = (struct vu_region){ .gpa = in[i].guest_addr,
					     .size = in[i].size,
					     .uaddr = in[i].user_addr,
					     .mmap_offset = in[i].mmap_offset,
					     .fd = f->fd[first_fd + i] };
		ret = os_map_fd_shared(out[i].fd, out[i].mmap_offset,
				       out[i].size, &out[i].va);
		if (ret) {
			while (i--)
				os_unmap(out[i].va, out[i].size);
			return ret;
		}
	}
	return 0;
}

/* Walk state for the mapping helpers below. */
struct map_walk {
	uint64_t gpa, len;        /* region (unmap_into) or piece (same) */
	uint64_t iova;
	uint32_t perm;
	uint64_t covered;         /* bytes of identical mappings */
	bool differs;
	uint64_t lo, hi;          /* unmap_into: current run, hi inclusive */
	bool have;
	struct iodma_domain *dom;
	int err;
};

/* Unmap every domain mapping whose guest-physical range meets the
 * region [w->gpa, + len): consecutive ones in IOVA order are unmapped
 * together (gaps allowed), so one grace period serves a run. */
static int unmap_into_cb(void *arg, const struct iodma_map_event *ev)
{
	struct map_walk *w = arg;

	if (ranges_overlap(ev->gpa, ev->len, w->gpa, w->len)) {
		if (!w->have)
			w->lo = ev->iova;
		w->hi = range_last(ev->iova, ev->len);
		w->have = true;
	} else if (w->have) {
		return 1; /* a run ends: unmap it, then walk on */
	}
	return 0;
}

static int unmap_into_region(struct iodma_vhost_user *vu, uint64_t gpa,
			     uint64_t len)
{
	uint64_t from = 0;

	for (;;) {
		struct map_walk w = { .gpa = gpa, .len = len };
		int ret = iodma_domain_for_each_mapping(vu->dom, from,
							UINT64_MAX - from,
							unmap_into_cb, &w);

		if (ret < 0)
			return ret;
		if (!w.have)
			return 0;
		ret = iodma_domain_unmap_gaps(vu->dom, w.lo, w.hi - w.lo + 1, NULL);
		if (ret)
			return ret;
		if (w.hi >= UINT64_MAX - 1)
			return 0;
		from = w.hi + 1;
	}
}

static int handle_mem_table(struct iodma_vhost_user *vu, const uint8_t *p,
			    uint32_t size, struct vu_fds *f)
{
	struct vu_region staged[VU_MEM_TABLE_MAX];
	struct vu_mem_region in[VU_MEM_TABLE_MAX];
	struct vu_shlog *log = atomic_load_explicit(&vu->log, memory_order_relaxed);
	struct vu_mem_table t;
	size_t n, i, j, added = 0;
	int ret;

	if (size < sizeof(t))
		return -EBADMSG;
	memcpy(&t, p, sizeof(t));
	n = t.nregions;
	if (n > VU_MEM_TABLE_MAX || size != sizeof(t) + n * sizeof(in[0]))
		return -EBADMSG;
	if (f->n != n)
		return -EINVAL;
	memcpy(in, p + sizeof(t), n * sizeof(in[0]));
	for (i = 0; i < n; i++) {
		ret = region_check(&in[i]);
		if (ret)
			return ret;
		for (j = 0; j < i; j++)
			if (regions_clash(in[i].guest_addr, in[i].user_addr,
					  in[i].size, in[j].guest_addr,
					  in[j].user_addr, in[j].size))
				return -EEXIST;
	}
	if (n > vu->max_slots)
		return -ENOSPC;
	for (i = 0; vu->logging && i < n; i++)
		if (!log_covers(log, in[i].guest_addr, in[i].size))
			return -ERANGE;
	ret = regions_map(in, n, f, 0, staged);
	if (ret)
		return ret;

	/* Commit, in the order the header spells out. */
	quiesce(vu);
	ret = iodma_domain_unmap_all(vu->dom, NULL);
	if (ret)
		goto undo_maps;
	for (i = 0; i < vu->nregions; i++)
		iodma_memory_remove_region(vu->mem, vu->regions[i].gpa);
	for (added = 0; added < n; added++) {
		ret = iodma_memory_add_region_host(vu->mem, staged[added].gpa,
						   staged[added].size,
						   staged[added].va,
						   staged[added].fd,
						   staged[added].mmap_offset);
		if (ret)
			goto restore;
	}
	for (i = 0; i < vu->nregions; i++)
		region_unmap(&vu->regions[i]);
	for (i = 0; i < n; i++) {
		fds_take(f, i);
		vu->regions[i] = staged[i];
	}
	vu->nregions = n;
	unquiesce(vu);
	return 0;

restore:
	while (added--)
		iodma_memory_remove_region(vu->mem, staged[added].gpa);
	for (i = j = 0; i < vu->nregions; i++) {
		struct vu_region *r = &vu->regions[i];

		if (iodma_memory_add_region_host(vu->mem, r->gpa, r->size, r->va,
						 r->fd, r->mmap_offset) == 0)
			vu->regions[j++] = *r;
		else
			region_unmap(r); /* no memory left to put it back */
	}
	vu->nregions = j;
undo_maps:
	for (i = 0; i < n; i++)
		os_unmap(staged[i].va, staged[i].size);
	unquiesce(vu);
	return ret;
}

static int handle_add_reg(struct iodma_vhost_user *vu, const uint8_t *p,
			  uint32_t size, struct vu_fds *f)
{
	struct vu_shlog *log = atomic_load_explicit(&vu->log, memory_order_relaxed);
	struct vu_single_region s;
	struct vu_region r;
	int ret;

	if (!has_protocol(vu, VU_PROTOCOL_F_CONFIGURE_MEM_SLOTS))
		return -EPERM;
	if (size != sizeof(s))
		return -EBADMSG;
	if (f->n != 1)
		return -EINVAL;
	memcpy(&s, p, sizeof(s));
	ret = region_check(&s.region);
	if (ret)
		return ret;
	for (size_t i = 0; i < vu->nregions; i++)
		if (regions_clash(s.region.guest_addr, s.region.user_addr,
				  s.region.size, vu->regions[i].gpa,
				  vu->regions[i].uaddr, vu->regions[i].size))
			return -EEXIST;
	if (vu->nregions == vu->max_slots)
		return -ENOSPC;
	if (vu->logging && !log_covers(log, s.region.guest_addr, s.region.size))
		return -ERANGE;
	ret = regions_map(&s.region, 1, f, 0, &r);
	if (ret)
		return ret;
	quiesce(vu); /* adding a region waits for a grace period */
	ret = iodma_memory_add_region_host(vu->mem, r.gpa, r.size, r.va, r.fd,
					   r.mmap_offset);
	unquiesce(vu);
	if (ret) {
		os_unmap(r.va, r.size);
		return ret;
	}
	fds_take(f, 0);
	vu->regions[vu->nregions++] = r;
	return 0;
}

static int handle_rem_reg(struct iodma_vhost_user *vu, const uint8_t *p,
			  uint32_t size, struct vu_fds *f)
{
	struct vu_single_region s;
	size_t i;
	int ret;

	if (!has_protocol(vu, VU_PROTOCOL_F_CONFIGURE_MEM_SLOTS))
		return -EPERM;
	if (size != sizeof(s))
		return -EBADMSG;
	/* Spec: no fd SHOULD come; one MAY, and is closed unused. */
	if (f->n > 1)
		return -EINVAL;
	memcpy(&s, p, sizeof(s));
	for (i = 0; i < vu->nregions; i++) {
		struct vu_region *r = &vu->regions[i];

		if (r->gpa == s.region.guest_addr && r->size == s.region.size &&
		    r->uaddr == s.region.user_addr)
			break;
	}
	if (i == vu->nregions)
		return -ENOENT;
	quiesce(vu);
	/* The IOTLB mappings into the region first, then the region. */
	ret = unmap_into_region(vu, vu->regions[i].gpa, vu->regions[i].size);
	if (ret == 0)
		ret = iodma_memory_remove_region(vu->mem, vu->regions[i].gpa);
	unquiesce(vu);
	if (ret)
		return ret;
	region_unmap(&vu->regions[i]);
	memmove(&vu->regions[i], &vu->regions[i + 1],
		(vu->nregions - i - 1) * sizeof(vu->regions[0]));
	vu->nregions--;
	return 0;
}

/* ---- IOTLB -------------------------------------------------------------------- */

/* Compare the mappings in a piece's IOVA range with the piece. */
static int same_cb(void *arg, const struct iodma_map_event *ev)
{
	struct map_walk *w = arg;
	uint64_t lo = IODMA_MAX(ev->iova, w->iova);
	uint64_t hi = IODMA_MIN(range_last(ev->iova, ev->len),
				range_last(w->iova, w->len));

	if (ev->gpa - ev->iova != w->gpa - w->iova || ev->perm != w->perm) {
		w->differs = true;
		return 1;
	}
	w->covered += hi - lo + 1;
	return 0;
}

struct piece {
	uint64_t iova, gpa, len;
};

static int iotlb_update(struct iodma_vhost_user *vu,
			const struct vhost_iotlb_msg *m)
{
	struct piece stack[VU_MEM_TABLE_MAX], *pc = stack;
	uint64_t pg = os_page_size(), cur = m->uaddr, left = m->size;
	size_t n = 0, mapped = 0, i;
	int ret = 0;

	if (m->perm == 0 || (m->perm & ~VHOST_ACCESS_RW) ||
	    !range_valid(m->iova, m->size) || !range_valid(m->uaddr, m->size) ||
	    !is_aligned(m->iova, pg) || !is_aligned(m->size, pg) ||
	    !is_aligned(m->uaddr, pg))
		return -EINVAL;
	if (vu->nregions > IODMA_ARRAY_SIZE(stack)) {
		pc = iodma_malloc(vu->nregions * sizeof(*pc));
		if (!pc)
			return -ENOMEM;
	}
	/* User addresses -> guest-physical pieces; each region at most once,
	 * as the regions do not overlap in user address. */
	while (left) {
		const struct vu_region *r = region_by_uaddr(vu, cur);
		uint64_t run, gpa;

		if (!r) {
			ret = -EFAULT;
			goto out;
		}
		run = IODMA_MIN(left, r->size - (cur - r->uaddr));
		gpa = r->gpa + (cur - r->uaddr);
		if (n && pc[n - 1].gpa + pc[n - 1].len == gpa) {
			pc[n - 1].len += run;
		} else {
			assert(n < vu->nregions);
			pc[n++] = (struct piece){ .iova = m->iova + (cur - m->uaddr),
						  .gpa = gpa, .len = run };
		}
		cur += run;
		left -= run;
	}
	for (i = 0; i < n; i++) {
		struct map_walk w = { .iova = pc[i].iova, .gpa = pc[i].gpa,
				      .len = pc[i].len, .perm = m->perm };

		ret = iodma_domain_for_each_mapping(vu->dom, pc[i].iova, pc[i].len,
						    same_cb, &w);
		if (ret < 0)
			break;
		ret = 0;
		if (!w.differs && w.covered == pc[i].len) {
			pc[i].len = 0; /* already there: not ours to undo */
			continue;
		}
		if (w.differs || w.covered) {
			ret = -EEXIST;
			break;
		}
		ret = iodma_domain_map_gpa(vu->dom, pc[i].iova, pc[i].len,
					   pc[i].gpa, m->perm);
		if (ret)
			break;
		mapped = i + 1;
	}
	if (ret) {
		quiesce(vu);
		for (i = 0; i < mapped; i++)
			if (pc[i].len)
				iodma_domain_unmap(vu->dom, pc[i].iova, pc[i].len);
		unquiesce(vu);
		goto out;
	}
	waiters_resolve(vu, m->iova, m->size, m->perm);
out:
	if (pc != stack)
		iodma_free(pc);
	return ret;
}

static int span_cb(void *arg, const struct iodma_map_event *ev)
{
	struct map_walk *w = arg;

	if (!w->have)
		w->lo = ev->iova;
	w->hi = range_last(ev->iova, ev->len);
	w->have = true;
	return 0;
}

static int iotlb_invalidate(struct iodma_vhost_user *vu,
			    const struct vhost_iotlb_msg *m)
{
	struct map_walk w = { 0 };
	int ret;

	if (m->size == 0 && m->iova == 0) {
		quiesce(vu);
		ret = iodma_domain_unmap_all(vu->dom, NULL);
		unquiesce(vu);
		return ret;
	}
	if (!range_valid(m->iova, m->size))
		return -EINVAL;
	/* Every mapping the range touches goes whole. */
	ret = iodma_domain_for_each_mapping(vu->dom, m->iova, m->size, span_cb, &w);
	if (ret < 0)
		return ret;
	if (!w.have)
		return 0;
	quiesce_range(vu, false, w.lo, w.hi);
	ret = iodma_domain_unmap_gaps(vu->dom, w.lo, w.hi - w.lo + 1, NULL);
	unquiesce(vu);
	return ret;
}

static int handle_iotlb(struct iodma_vhost_user *vu, const uint8_t *p,
			uint32_t size, struct vu_fds *f)
{
	struct vhost_iotlb_msg m;
	int ret;

	if (size != sizeof(m))
		return -EBADMSG;
	if (f->n)
		return -EINVAL;
	if (!has_feature(vu, VU_F_IOMMU_PLATFORM))
		return -EPERM;
	memcpy(&m, p, sizeof(m));
	switch (m.type) {
	case VHOST_IOTLB_UPDATE:
		ret = iotlb_update(vu, &m);
		if (ret == 0)
			stat_inc(&vu->st_updates);
		return ret;
	case VHOST_IOTLB_INVALIDATE:
		ret = iotlb_invalidate(vu, &m);
		if (ret == 0)
			stat_inc(&vu->st_invalidates);
		return ret;
	default: /* MISS and ACCESS_FAIL go the other way */
		return -EINVAL;
	}
}

/* ---- the log ------------------------------------------------------------------ */

static uint64_t used_ring_len(uint32_t num)
{
	return 6 + 8 * (uint64_t)num; /* flags, idx, ring[num], avail_event */
}

/*
 * Is a logged used ring inside @log?  With IOMMU_PLATFORM the ring is
 * logged through its IOVA (log_used()), and log_guest_addr is no GPA:
 * QEMU sends the used ring's IOVA there and sizes the log by the memory
 * table only (hw/virtio/vhost.c, vhost_get_log_size()), and kernel vhost
 * ignores it when it has an IOTLB (drivers/vhost/vhost.c, log_used()):
 * nothing to check.
 */
static bool vring_log_ok(const struct iodma_vhost_user *vu,
			 const struct vu_shlog *log, uint32_t num,
			 uint32_t flags, uint64_t log_addr)
{
	if (!log || !(flags & VRING_LOG_BIT) || num == 0 ||
	    has_feature(vu, VU_F_IOMMU_PLATFORM))
		return true;
	return log_covers(log, log_addr, used_ring_len(num));
}

static int vu_log_switch(struct iodma_vhost_user *vu, struct vu_shlog *next,
			 bool want)
{
	struct vu_shlog *old;
	int ret = 0;

	quiesce(vu);
	if (want && next)
		ret = iodma_memory_dirty_log_start_shared(vu->mem, next->bits,
							  next->bytes);
	else if (vu->logging)
		ret = iodma_memory_dirty_log_stop(vu->mem);
	if (ret) {
		unquiesce(vu);
		return ret;
	}
	vu->logging = want && next;
	old = atomic_exchange_explicit(&vu->log, next, memory_order_acq_rel);
	if (old && old != next) {
		os_synchronize_rcu(); /* no log_used() still writes it */
		os_unmap(old->map, old->map_len);
		iodma_free(old);
	}
	unquiesce(vu);
	return 0;
}

static int handle_log_base(struct iodma_vhost_user *vu, const uint8_t *p,
			   uint32_t size, struct vu_fds *f,
			   struct iodma_vhost_user_reply *reply)
{
	uint64_t pg = os_page_size(), delta, base;
	struct vu_shlog l, *next;
	struct vu_log_desc d;
	void *map;
	int ret;

	if (!has_protocol(vu, VU_PROTOCOL_F_LOG_SHMFD))
		return -EPERM;
	if (size != sizeof(d))
		return -EBADMSG;
	if (f->n != 1)
		return -EINVAL;
	memcpy(&d, p, sizeof(d));
	if (!range_valid(d.mmap_offset, d.mmap_size) || d.mmap_size > SIZE_MAX ||
	    d.mmap_size > UINT64_MAX / 8 / VU_LOG_PAGE)
		return -EINVAL;
	base = align_down(d.mmap_offset, pg);
	delta = d.mmap_offset - base;
	l = (struct vu_shlog){ .bytes = d.mmap_size };
	for (size_t i = 0; i < vu->nregions; i++)
		if (!log_covers(&l, vu->regions[i].gpa, vu->regions[i].size))
			return -ERANGE;
	for (uint32_t i = 0; i < vu->max_vrings; i++) {
		const struct vu_vring *vr = &vu->vrings[i];

		if (vr->addr_set && !vring_log_ok(vu, &l, vr->num, vr->addr.flags,
						  vr->addr.log_guest_addr))
			return -ERANGE;
	}
	next = iodma_malloc(sizeof(*next));
	if (!next)
		return -ENOMEM;
	ret = os_map_fd_shared(f->fd[0], base, d.mmap_size + delta, &map);
	if (ret) {
		iodma_free(next);
		return ret;
	}
	*next = (struct vu_shlog){ .bits = (char *)map + delta,
				 .bytes = d.mmap_size, .map = map,
				 .map_len = d.mmap_size + delta };
	ret = vu_log_switch(vu, next, has_feature(vu, VU_F_LOG_ALL));
	if (ret) {
		os_unmap(map, next->map_len);
		iodma_free(next);
		return ret;
	}
	/* The mapping holds the memory; the fd is closed by the caller's
	 * common path.  LOG_SHMFD asks for a reply. */
	reply_u64(reply, VU_SET_LOG_BASE, 0);
	return 0;
}

/* ---- features ------------------------------------------------------------------ */

static int handle_set_features(struct iodma_vhost_user *vu, uint64_t v)
{
	struct vu_shlog *log = atomic_load_explicit(&vu->log, memory_order_relaxed);
	uint64_t old = atomic_load_explicit(&vu->features, memory_order_relaxed);
	bool want_log = (v >> VU_F_LOG_ALL) & 1;
	int ret;

	if (v & ~offered_features(vu))
		return -EINVAL;
	if (want_log && log && !vu->logging) {
		for (size_t i = 0; i < vu->nregions; i++)
			if (!log_covers(log, vu->regions[i].gpa, vu->regions[i].size))
				return -ERANGE;
	}
	if (want_log != vu->logging && (!want_log || log)) {
		ret = vu_log_switch(vu, log, want_log);
		if (ret)
			return ret;
	}
	atomic_store_explicit(&vu->features, v, memory_order_release);
	if ((old ^ v) & (1ull << VU_F_IOMMU_PLATFORM)) {
		quiesce(vu);
		ret = iodma_domain_set_enabled(vu->dom,
					       (v >> VU_F_IOMMU_PLATFORM) & 1);
		unquiesce(vu);
		assert(ret == 0); /* the domain has a memory */
	}
	return 0;
}

/* ---- rings ---------------------------------------------------------------------- */

static int vring_fd_msg(struct iodma_vhost_user *vu, uint32_t kind,
			const uint8_t *p, uint32_t size, struct vu_fds *f)
{
	struct vu_vring *vr;
	uint64_t v;
	uint32_t idx;
	bool nofd;
	int fd, ret;

	if (size != sizeof(v))
		return -EBADMSG;
	memcpy(&v, p, sizeof(v));
	idx = (uint32_t)(v & VU_VRING_IDX_MASK);
	nofd = v & VU_VRING_NOFD_MASK;
	if ((v & ~(uint64_t)(VU_VRING_IDX_MASK | VU_VRING_NOFD_MASK)) ||
	    idx >= vu->max_vrings || f->n != (nofd ? 0u : 1u))
		return -EINVAL;
	vr = &vu->vrings[idx];
	fd = nofd ? -1 : f->fd[0];
	if (vu->ops && vu->ops->vring_fd) {
		ret = vu->ops->vring_fd(vu->ops_arg, idx, kind, fd);
		if (ret)
			return ret > 0 ? -EINVAL : ret;
		if (!nofd)
			fds_take(f, 0);
	} else {
		os_close(vr->fd[kind]);
		vr->fd[kind] = nofd ? -1 : fds_take(f, 0);
	}
	if (kind == IODMA_VHOST_USER_FD_KICK) {
		vr->started = true;
		/* Runs again (without PROTOCOL_FEATURES a started ring is
		 * enabled; with them SET_VRING_ENABLE 1 follows). */
		if (!has_feature(vu, VU_F_PROTOCOL_FEATURES) || vr->enabled)
			vring_misses_off(vu, idx, false);
	}
	return 0;
}

static int vring_state_get(struct iodma_vhost_user *vu, const uint8_t *p,
			   uint32_t size, struct vhost_vring_state *s)
{
	if (size != sizeof(*s))
		return -EBADMSG;
	memcpy(s, p, sizeof(*s));
	return s->index < vu->max_vrings ? 0 : -EINVAL;
}

static int handle_vring_addr(struct iodma_vhost_user *vu, const uint8_t *p,
			     uint32_t size)
{
	const struct vu_shlog *log = atomic_load_explicit(&vu->log, memory_order_relaxed);
	struct vhost_vring_addr a;
	struct vu_vring *vr;
	uint64_t g;

	if (size != sizeof(a))
		return -EBADMSG;
	memcpy(&a, p, sizeof(a));
	if (a.index >= vu->max_vrings || (a.flags & ~VRING_LOG_BIT))
		return -EINVAL;
	vr = &vu->vrings[a.index];
	if ((a.flags & VRING_LOG_BIT) &&
	    !range_valid(a.log_guest_addr, used_ring_len(vr->num ? vr->num : MAX_VRING_NUM)))
		return -EINVAL;
	if (!vring_log_ok(vu, log, vr->num, a.flags, a.log_guest_addr))
		return -ERANGE;
	/* Without the IOMMU the addresses are user addresses (spec, "A vring
	 * address description"): they must lie in the table now. */
	if (!has_feature(vu, VU_F_IOMMU_PLATFORM)) {
		uint64_t n = vr->num ? vr->num : 1;

		if (uaddr_to_gpa(vu, a.desc_user_addr, 16 * n, &g) ||
		    uaddr_to_gpa(vu, a.avail_user_addr, 6 + 2 * n, &g) ||
		    uaddr_to_gpa(vu, a.used_user_addr, used_ring_len((uint32_t)n), &g))
			return -EFAULT;
	}
	vr->addr = a;
	vr->addr_set = true;
	atomic_store_explicit(&vr->log_addr, a.log_guest_addr, memory_order_relaxed);
	atomic_store_explicit(&vr->log_used_iova, a.used_user_addr, memory_order_relaxed);
	atomic_store_explicit(&vr->log_on, (a.flags & VRING_LOG_BIT) != 0,
			      memory_order_release);
	return 0;
}

static int handle_vring_num(struct iodma_vhost_user *vu, const uint8_t *p,
			    uint32_t size)
{
	const struct vu_shlog *log = atomic_load_explicit(&vu->log, memory_order_relaxed);
	struct vhost_vring_state s;
	struct vu_vring *vr;
	int ret = vring_state_get(vu, p, size, &s);

	if (ret)
		return ret;
	if (s.num == 0 || s.num > MAX_VRING_NUM)
		return -EINVAL;
	vr = &vu->vrings[s.index];
	if (vr->addr_set && !vring_log_ok(vu, log, s.num, vr->addr.flags,
					  vr->addr.log_guest_addr))
		return -ERANGE;
	vr->num = s.num;
	atomic_store_explicit(&vr->log_num, s.num, memory_order_release);
	return 0;
}

/* ---- config ---------------------------------------------------------------------- */

static int handle_config(struct iodma_vhost_user *vu, uint32_t req,
			 const uint8_t *p, uint32_t size, struct vu_fds *f,
			 struct iodma_vhost_user_reply *reply)
{
	struct {
		struct vu_config c;
		uint8_t data[VU_CONFIG_MAX];
	} cfg;
	int ret;

	if (!vu->ops || (req == VU_GET_CONFIG ? !vu->ops->get_config :
						!vu->ops->set_config))
		return -ENOTSUP;
	if (size < sizeof(cfg.c))
		return -EBADMSG;
	memcpy(&cfg.c, p, sizeof(cfg.c));
	if (cfg.c.size > VU_CONFIG_MAX || size != sizeof(cfg.c) + cfg.c.size)
		return -EBADMSG;
	if (f->n || cfg.c.size == 0 ||
	    cfg.c.offset > UINT32_MAX - cfg.c.size)
		return -EINVAL;
	memcpy(cfg.data, p + sizeof(cfg.c), cfg.c.size);
	if (req == VU_GET_CONFIG) {
		ret = vu->ops->get_config(vu->ops_arg, cfg.c.offset, cfg.data,
					  cfg.c.size);
		if (ret)
			reply_put(reply, VU_GET_CONFIG, NULL, 0); /* spec: error */
		else
			reply_put(reply, VU_GET_CONFIG, &cfg,
				  (uint32_t)sizeof(cfg.c) + cfg.c.size);
		return ret > 0 ? -EINVAL : ret;
	}
	if (cfg.c.flags > 1)
		return -EINVAL;
	ret = vu->ops->set_config(vu->ops_arg, cfg.c.offset, cfg.data, cfg.c.size,
				  cfg.c.flags);
	return ret > 0 ? -EINVAL : ret;
}

/* ---- dispatch ---------------------------------------------------------------------- */

static int expect(uint32_t size, uint32_t want, const struct vu_fds *f,
		  size_t nfds)
{
	if (size != want)
		return -EBADMSG;
	return f->n == nfds ? 0 : -EINVAL;
}

static int dispatch(struct iodma_vhost_user *vu, uint32_t req, const uint8_t *p,
		    uint32_t size, struct vu_fds *f,
		    struct iodma_vhost_user_reply *reply)
{
	struct vhost_vring_state s;
	uint64_t v;
	int ret;

	switch (req) {
	case VU_GET_FEATURES:
		if ((ret = expect(size, 0, f, 0)))
			return ret;
		reply_u64(reply, req, offered_features(vu));
		return 0;
	case VU_SET_FEATURES:
		if ((ret = expect(size, 8, f, 0)))
			return ret;
		memcpy(&v, p, 8);
		return handle_set_features(vu, v);
	case VU_GET_PROTOCOL_FEATURES:
		if ((ret = expect(size, 0, f, 0)))
			return ret;
		reply_u64(reply, req, offered_protocol(vu));
		return 0;
	case VU_SET_PROTOCOL_FEATURES:
		if ((ret = expect(size, 8, f, 0)))
			return ret;
		memcpy(&v, p, 8);
		if (v & ~offered_protocol(vu))
			return -EINVAL;
		atomic_store_explicit(&vu->protocol, v, memory_order_release);
		return 0;
	case VU_SET_OWNER:
		if ((ret = expect(size, 0, f, 0)))
			return ret;
		vu->owner = true;
		return 0;
	case VU_RESET_OWNER:
		if ((ret = expect(size, 0, f, 0)))
			return ret;
		for (uint32_t i = 0; i < vu->max_vrings; i++) {
			vu->vrings[i].enabled = false;
			vu->vrings[i].started = false;
		}
		return 0;
	case VU_SET_MEM_TABLE:
		return handle_mem_table(vu, p, size, f);
	case VU_ADD_MEM_REG:
		return handle_add_reg(vu, p, size, f);
	case VU_REM_MEM_REG:
		return handle_rem_reg(vu, p, size, f);
	case VU_GET_MAX_MEM_SLOTS:
		if ((ret = expect(size, 0, f, 0)))
			return ret;
		if (!has_protocol(vu, VU_PROTOCOL_F_CONFIGURE_MEM_SLOTS))
			return -EPERM;
		reply_u64(reply, req, vu->max_slots);
		return 0;
	case VU_GET_QUEUE_NUM:
		if ((ret = expect(size, 0, f, 0)))
			return ret;
		reply_u64(reply, req, vu->max_vrings);
		return 0;
	case VU_SET_LOG_BASE:
		return handle_log_base(vu, p, size, f, reply);
	case VU_SET_LOG_FD:
		if ((ret = expect(size, 0, f, 1)))
			return ret;
		os_close(vu->log_fd);
		vu->log_fd = fds_take(f, 0);
		return 0;
	case VU_SET_VRING_NUM:
		if (f->n)
			return size != sizeof(s) ? -EBADMSG : -EINVAL;
		return handle_vring_num(vu, p, size);
	case VU_SET_VRING_ADDR:
		if (f->n)
			return size != sizeof(struct vhost_vring_addr) ? -EBADMSG : -EINVAL;
		return handle_vring_addr(vu, p, size);
	case VU_SET_VRING_BASE:
	case VU_GET_VRING_BASE:
	case VU_SET_VRING_ENABLE:
		if ((ret = vring_state_get(vu, p, size, &s)))
			return ret;
		if (f->n)
			return -EINVAL;
		if (req == VU_SET_VRING_BASE) {
			vu->vrings[s.index].base = s.num;
			return 0;
		}
		if (req == VU_SET_VRING_ENABLE) {
			if (!has_feature(vu, VU_F_PROTOCOL_FEATURES))
				return -EPERM;
			if (s.num > 1)
				return -EINVAL;
			/* Disabled: QEMU's vhost_dev_stop() sends this first,
			 * then GET_VRING_BASE, and serves no miss before the
			 * last reply: a miss of this ring waiting now would
			 * wait for its timeout.  Release it (the back end
			 * leaves its chain available) and ask no more. */
			vring_misses_off(vu, s.index, s.num == 0);
			vu->vrings[s.index].enabled = s.num;
			return 0;
		}
		s.num = vu->vrings[s.index].base;
		/* The ring stops: its misses and those of unbound threads are
		 * released and new ones fail (the front end serves misses on
		 * the thread that now waits for this reply, e.g. QEMU's
		 * vhost_dev_stop(), so none can be answered before it).  The
		 * back end leaves a chain whose translation failed so
		 * un-consumed (the base it reports excludes it): the
		 * destination resubmits it, as Linux vhost does for requests
		 * in flight.  The ring asks nothing more until it runs
		 * again (SET_VRING_KICK, SET_VRING_ENABLE 1). */
		vring_misses_off(vu, s.index, true);
		if (vu->ops && vu->ops->vring_stop) {
			os_mutex_lock(&vu->miss_lock);
			vu->ring_stopping++;
			os_mutex_unlock(&vu->miss_lock);
			ret = vu->ops->vring_stop(vu->ops_arg, s.index, &s.num);
			os_mutex_lock(&vu->miss_lock);
			vu->ring_stopping--;
			os_mutex_unlock(&vu->miss_lock);
			if (ret)
				return ret > 0 ? -EINVAL : ret;
		}
		vu->vrings[s.index].base = s.num;
		vu->vrings[s.index].started = false;
		reply_put(reply, req, &s, sizeof(s));
		return 0;
	case VU_SET_VRING_KICK:
		return vring_fd_msg(vu, IODMA_VHOST_USER_FD_KICK, p, size, f);
	case VU_SET_VRING_CALL:
		return vring_fd_msg(vu, IODMA_VHOST_USER_FD_CALL, p, size, f);
	case VU_SET_VRING_ERR:
		return vring_fd_msg(vu, IODMA_VHOST_USER_FD_ERR, p, size, f);
	case VU_SET_BACKEND_REQ_FD: {
		int old;

		if ((ret = expect(size, 0, f, 1)))
			return ret;
		if (!has_protocol(vu, VU_PROTOCOL_F_BACKEND_REQ))
			return -EPERM;
		/* Wait for the miss on the old channel (bounded by its own
		 * deadline), then swap. */
		os_mutex_lock(&vu->miss_lock);
		while (vu->chan_busy)
			os_cond_timedwait(&vu->miss_cond, &vu->miss_lock, UINT64_MAX);
		old = vu->backend_fd;
		vu->backend_fd = fds_take(f, 0);
		vu->chan_noack = false;
		os_mutex_unlock(&vu->miss_lock);
		os_close(old);
		return 0;
	}
	case VU_IOTLB_MSG:
		return handle_iotlb(vu, p, size, f);
	case VU_GET_CONFIG:
	case VU_SET_CONFIG:
		return handle_config(vu, req, p, size, f, reply);
	default:
		return -ENOTSUP;
	}
}

IODMA_EXPORT int iodma_vhost_user_handle(struct iodma_vhost_user *vu,
					 const void *msg, size_t len,
					 const int *fds, size_t nfds,
					 struct iodma_vhost_user_reply *reply)
{
	_Alignas(8) uint8_t payload[IODMA_VHOST_USER_MSG_MAX];
	struct vu_fds f = { .n = 0 };
	struct vu_header h;
	bool need_ack;
	int ret;

	if (reply)
		reply->len = 0; /* on every return: a reused struct sends nothing stale */
	if (nfds && !fds)
		return -EINVAL;
	for (size_t i = 0; i < nfds && i < IODMA_VHOST_USER_MAX_FDS; i++)
		f.fd[f.n++] = fds[i];
	if (nfds > IODMA_VHOST_USER_MAX_FDS) {
		for (size_t i = IODMA_VHOST_USER_MAX_FDS; i < nfds; i++)
			os_close(fds[i]);
		fds_close(&f);
		return -EINVAL;
	}
	if (!vu || !reply || (len && !msg)) {
		fds_close(&f);
		return -EINVAL;
	}
	if (len < sizeof(h)) {
		fds_close(&f);
		return -EBADMSG;
	}
	memcpy(&h, msg, sizeof(h));
	if ((h.flags & VU_VERSION_MASK) != VU_VERSION ||
	    (h.flags & ~(VU_VERSION_MASK | VU_FLAG_NEED_REPLY))) {
		fds_close(&f);
		return -EPROTO;
	}
	if (len != sizeof(h) + (uint64_t)h.size ||
	    h.size > sizeof(payload) - sizeof(h)) {
		fds_close(&f);
		return -EBADMSG;
	}
	memcpy(payload, (const uint8_t *)msg + sizeof(h), h.size);
	need_ack = (h.flags & VU_FLAG_NEED_REPLY) &&
		   has_protocol(vu, VU_PROTOCOL_F_REPLY_ACK);

	os_mutex_lock(&vu->lock);
	ret = dispatch(vu, h.request, payload, h.size, &f, reply);
	os_mutex_unlock(&vu->lock);
	if (ret == -ENOTSUP) {
		/* Not ours: the fds stay the caller's; a ready nack. */
		if (need_ack)
			reply_u64(reply, h.request, (uint64_t)ENOTSUP);
		return ret;
	}
	fds_close(&f);
	/* IOTLB_MSG always answers with its u64 (spec, "VHOST_USER_IOTLB_MSG");
	 * other requests with their own reply have it; REPLY_ACK covers the
	 * rest, and errors of the former. */
	if (h.request == VU_IOTLB_MSG || (need_ack && reply->len == 0))
		reply_u64(reply, h.request, ret ? (uint64_t)-ret : 0);
	return ret;
}

/* ---- lock-free entry points ------------------------------------------------------ */

IODMA_EXPORT int iodma_vhost_user_log_used(struct iodma_vhost_user *vu,
					   uint32_t vring, uint64_t offset,
					   uint64_t len)
{
	struct vu_vring *vr;
	struct vu_shlog *log;
	uint64_t ulen, gpa;
	uint32_t num;
	int ret = 0;

	if (!vu || vring >= vu->max_vrings || len == 0)
		return -EINVAL;
	vr = &vu->vrings[vring];
	num = atomic_load_explicit(&vr->log_num, memory_order_acquire);
	/* No size, no used ring: the log checks (SET_VRING_ADDR, _NUM,
	 * SET_LOG_BASE) pass a logged ring without one. */
	if (num == 0)
		return -EINVAL;
	ulen = used_ring_len(num);
	if (offset >= ulen || len > ulen - offset)
		return -EINVAL;
	if (!has_feature(vu, VU_F_LOG_ALL) ||
	    !atomic_load_explicit(&vr->log_on, memory_order_acquire))
		return 0;
	/* With the IOMMU the used ring is at an IOVA: log the GPA it
	 * translates to (kernel vhost does the same through its IOTLB). */
	if (has_feature(vu, VU_F_IOMMU_PLATFORM))
		return iodma_vhost_user_log_write(vu,
			atomic_load_explicit(&vr->log_used_iova, memory_order_relaxed) + offset,
			len);
	gpa = atomic_load_explicit(&vr->log_addr, memory_order_relaxed) + offset;
	if (!range_valid(gpa, len))
		return -ERANGE;
	os_rcu_read_lock();
	log = atomic_load_explicit(&vu->log, memory_order_acquire);
	if (log && !log_covers(log, gpa, len))
		ret = -ERANGE;
	else if (log)
		memory_shared_log_mark(log->bits, log->bytes, gpa, len);
	os_rcu_read_unlock();
	return ret;
}

IODMA_EXPORT int iodma_vhost_user_log_write(struct iodma_vhost_user *vu,
					    uint64_t iova, uint64_t len)
{
	struct iodma_xlate_iter it = IODMA_STRUCT_INIT(struct iodma_xlate_iter);
	struct iodma_slice s;
	int ret;

	if (!vu || !range_valid(iova, len))
		return -EINVAL;
	ret = iodma_xlate_begin(&it, vu->dom, iova, len, IODMA_PERM_WRITE);
	while (ret == 0 && (ret = iodma_xlate_next(&it, &s)) == 1)
		ret = 0;
	return ret;
}

IODMA_EXPORT int iodma_vhost_user_get_vring(struct iodma_vhost_user *vu,
					    uint32_t vring,
					    struct iodma_vhost_user_vring *out)
{
	struct vu_vring *vr;
	bool iommu;

	if (!vu || !out || vring >= vu->max_vrings)
		return -EINVAL;
	os_mutex_lock(&vu->lock);
	vr = &vu->vrings[vring];
	iommu = has_feature(vu, VU_F_IOMMU_PLATFORM);
	*out = (struct iodma_vhost_user_vring){
		.num = vr->num, .base = vr->base, .addr_flags = vr->addr.flags,
		.log_guest_addr = vr->addr.log_guest_addr,
		.started = vr->started,
		.enabled = vr->enabled || !has_feature(vu, VU_F_PROTOCOL_FEATURES),
		.kick_fd = vr->fd[0], .call_fd = vr->fd[1], .err_fd = vr->fd[2] };
	if (vr->addr_set && iommu) {
		out->desc = vr->addr.desc_user_addr;
		out->avail = vr->addr.avail_user_addr;
		out->used = vr->addr.used_user_addr;
		out->addr_valid = true;
	} else if (vr->addr_set) {
		uint64_t n = vr->num ? vr->num : 1;

		out->addr_valid =
			!uaddr_to_gpa(vu, vr->addr.desc_user_addr, 16 * n, &out->desc) &&
			!uaddr_to_gpa(vu, vr->addr.avail_user_addr, 6 + 2 * n, &out->avail) &&
			!uaddr_to_gpa(vu, vr->addr.used_user_addr,
				      used_ring_len((uint32_t)n), &out->used);
	}
	os_mutex_unlock(&vu->lock);
	return 0;
}

IODMA_EXPORT int iodma_vhost_user_get_features(struct iodma_vhost_user *vu,
					       uint64_t *features,
					       uint64_t *protocol)
{
	if (!vu)
		return -EINVAL;
	if (features)
		*features = atomic_load_explicit(&vu->features, memory_order_acquire);
	if (protocol)
		*protocol = atomic_load_explicit(&vu->protocol, memory_order_acquire);
	return 0;
}

IODMA_EXPORT int iodma_vhost_user_get_stats(struct iodma_vhost_user *vu,
					    struct iodma_vhost_user_stats *st)
{
	struct iodma_vhost_user_stats s;

	if (!vu || !st)
		return -EINVAL;
	s = (struct iodma_vhost_user_stats){
		.size = sizeof(s),
		.iotlb_updates = atomic_load_explicit(&vu->st_updates, memory_order_relaxed),
		.iotlb_invalidates = atomic_load_explicit(&vu->st_invalidates, memory_order_relaxed),
		.iotlb_misses = atomic_load_explicit(&vu->st_misses, memory_order_relaxed),
		.misses_resolved = atomic_load_explicit(&vu->st_miss_resolved, memory_order_relaxed),
		.misses_released = atomic_load_explicit(&vu->st_miss_released, memory_order_relaxed),
		.misses_failed = atomic_load_explicit(&vu->st_miss_failed, memory_order_relaxed),
		.misses_ahead = atomic_load_explicit(&vu->st_miss_ahead, memory_order_relaxed),
	};
	return out_copy(st, &s, sizeof(s),
			IODMA_OFFSETOFEND(struct iodma_vhost_user_stats, misses_ahead));
}

IODMA_EXPORT struct iodma_domain *iodma_vhost_user_domain(struct iodma_vhost_user *vu)
{
	return vu ? vu->dom : NULL;
}

IODMA_EXPORT struct iodma_memory *iodma_vhost_user_memory(struct iodma_vhost_user *vu)
{
	return vu ? vu->mem : NULL;
}

/* ---- create / destroy -------------------------------------------------------------- */

IODMA_EXPORT int iodma_vhost_user_create(const struct iodma_vhost_user_opts *opts,
					 struct iodma_vhost_user **out)
{
	struct iodma_vhost_user_opts o = IODMA_OPTS_INIT(struct iodma_vhost_user_opts);
	struct iodma_domain_opts dopts = IODMA_OPTS_INIT(struct iodma_domain_opts);
	struct iodma_soft_opts sopts = IODMA_OPTS_INIT(struct iodma_soft_opts);
	struct iodma_iova_range range;
	struct iodma_vhost_user *vu;
	int ret;

	if (!out)
		return -EINVAL;
	ret = opts_copy(&o, sizeof(o), opts,
			IODMA_OFFSETOFEND(struct iodma_vhost_user_opts, ops_arg));
	if (ret)
		return ret;
	if (o.max_vrings > IODMA_VHOST_USER_MAX_VRINGS ||
	    o.max_mem_slots > IODMA_VHOST_USER_MAX_SLOTS || o.flags)
		return -EINVAL;
	vu = iodma_calloc(1, sizeof(*vu));
	if (!vu)
		return -ENOMEM;
	vu->ops = o.ops;
	vu->ops_arg = o.ops_arg;
	/* What this layer implements is offered anyway; keep the device's
	 * own bits only. */
	vu->device_features = o.device_features;
	vu->max_vrings = o.max_vrings ? o.max_vrings : 1;
	vu->max_slots = o.max_mem_slots ? o.max_mem_slots : DEFAULT_SLOTS;
	vu->timeout_ns = o.miss_timeout_ns ? o.miss_timeout_ns : DEFAULT_TIMEOUT_NS;
	vu->log_fd = -1;
	vu->backend_fd = -1;
	atomic_init(&vu->features, 0);
	atomic_init(&vu->protocol, 0);
	atomic_init(&vu->log, NULL);
	vu->regions = iodma_calloc(vu->max_slots, sizeof(vu->regions[0]));
	vu->vrings = iodma_calloc(vu->max_vrings, sizeof(vu->vrings[0]));
	if (!vu->regions || !vu->vrings) {
		ret = -ENOMEM;
		goto fail;
	}
	for (uint32_t i = 0; i < vu->max_vrings; i++) {
		struct vu_vring *vr = &vu->vrings[i];

		vr->fd[0] = vr->fd[1] = vr->fd[2] = -1;
		atomic_init(&vr->log_num, 0);
		atomic_init(&vr->log_addr, 0);
		atomic_init(&vr->log_used_iova, 0);
		atomic_init(&vr->log_on, false);
	}
	ret = iodma_memory_create(NULL, &vu->mem);
	if (ret)
		goto fail;
	/* IOVAs are whatever the guest's IOMMU hands out: the whole space
	 * but its last page (a range's end may not wrap). */
	range.iova = 0;
	range.len = 0 - (uint64_t)os_page_size();
	sopts.nr_ranges = 1;
	sopts.ranges = &range;
	sopts.max_mappings = o.max_mappings;
	dopts.backend = iodma_backend_soft();
	dopts.backend_config = &sopts;
	dopts.memory = vu->mem;
	dopts.flags = IODMA_DOMAIN_DISABLED; /* until IOMMU_PLATFORM */
	ret = iodma_domain_create(&dopts, &vu->dom);
	if (ret)
		goto fail;
	os_mutex_init(&vu->lock);
	os_mutex_init(&vu->miss_lock);
	os_cond_init(&vu->miss_cond);
	iodma_xlate_set_resolver(vu->dom, vu_resolver, vu);
	*out = vu;
	return 0;
fail:
	iodma_memory_destroy(vu->mem);
	iodma_free(vu->vrings);
	iodma_free(vu->regions);
	iodma_free(vu);
	return ret;
}

IODMA_EXPORT void iodma_vhost_user_destroy(struct iodma_vhost_user *vu)
{
	struct vu_shlog *log;

	if (!vu)
		return;
	iodma_xlate_set_resolver(vu->dom, NULL, NULL);
	iodma_domain_destroy(vu->dom);
	if (vu->logging)
		iodma_memory_dirty_log_stop(vu->mem);
	for (size_t i = 0; i < vu->nregions; i++) {
		iodma_memory_remove_region(vu->mem, vu->regions[i].gpa);
		region_unmap(&vu->regions[i]);
	}
	iodma_memory_destroy(vu->mem);
	log = atomic_load_explicit(&vu->log, memory_order_relaxed);
	if (log) {
		os_unmap(log->map, log->map_len);
		iodma_free(log);
	}
	for (uint32_t i = 0; i < vu->max_vrings; i++)
		for (int k = 0; k < 3; k++)
			os_close(vu->vrings[i].fd[k]);
	os_close(vu->log_fd);
	os_close(vu->backend_fd);
	os_cond_destroy(&vu->miss_cond);
	os_mutex_destroy(&vu->miss_lock);
	os_mutex_destroy(&vu->lock);
	iodma_free(vu->vrings);
	iodma_free(vu->regions);
	iodma_free(vu);
}

/* ---- socket helpers ------------------------------------------------------------------ */

IODMA_EXPORT int iodma_vhost_user_recv(int fd, void *buf, size_t cap,
				       int *fds, size_t *nfds)
{
	struct vu_header h;
	size_t max, n = 0;
	int ret;

	if (fd < 0 || !buf || cap < sizeof(h) || !nfds || (*nfds && !fds) ||
	    cap > INT32_MAX)
		return -EINVAL;
	max = *nfds;
	*nfds = 0;
	ret = os_unix_recv(fd, buf, sizeof(h), fds, max, &n, UINT64_MAX, NULL);
	if (ret)
		return ret;
	memcpy(&h, buf, sizeof(h));
	if (h.size > cap - sizeof(h))
		ret = -EMSGSIZE;
	else if (h.size)
		ret = os_unix_recv(fd, (char *)buf + sizeof(h), h.size, fds, max,
				   &n, UINT64_MAX, NULL);
	if (ret) {
		while (n)
			os_close(fds[--n]);
		return ret;
	}
	*nfds = n;
	return (int)(sizeof(h) + h.size);
}

IODMA_EXPORT int iodma_vhost_user_send(int fd, const void *msg, size_t len)
{
	if (fd < 0 || !msg || len < sizeof(struct vu_header))
		return -EINVAL;
	return os_unix_send(fd, msg, len, NULL, 0, false);
}
