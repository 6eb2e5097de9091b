// SPDX-License-Identifier: MIT
/*
 * main.c - a vhost-user-blk back end serving a disk image file.
 *
 * One process, its own message loop: it listens on a UNIX socket, a
 * vhost-user front end (QEMU's vhost-user-blk-pci, `-chardev socket,
 * path=SOCK`) connects, and every message goes through
 * iodma_vhost_user_recv() / iodma_vhost_user_handle() /
 * iodma_vhost_user_send() (iodma/vhost-user.h): the library keeps the
 * front end's memory table, the IOTLB (a two-stage soft domain: IOVA ->
 * guest-physical -> our mapping of the front end's memfd) and the feature
 * state; this file keeps the virtqueues running.
 *
 * Each virtqueue is served by the virtio-blk device model of the demo
 * (examples/virtio-blk/device.c, the same source `make demo` runs): it
 * reads rings and buffers only through iodma translation on the library's
 * domain, inside access sections, and a translation miss becomes an IOTLB
 * MISS to the front end through the library's resolver.  A ring runs once
 * the front end has given it a size, addresses, a kick and a call eventfd
 * and enabled it; it stops on GET_VRING_BASE, on disable, and restarts
 * when its fds or addresses change.
 *
 * On exit (SIGTERM, SIGINT, or the front end disconnecting) it prints one
 * line of counters: requests, bytes, IOTLB misses, updates,
 * invalidations, page-table hits (successful translations), faults.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <iodma.h>
#include <iodma/backend.h>
#include <iodma/vhost-user.h>

#include "device.h"
#include "virtio_ring.h"

#define MAX_QUEUES	8u
#define QUEUE_NUM_MAX	1024u
#define SIZE_MAX_BYTES	(128u * 1024u)
#define SEG_MAX		126u
#define VIRTIO_BLK_F_MQ	12
#define CFG_NUM_QUEUES	34u
/* A miss released by a concurrent INVALIDATE is asked again, from a new
 * access section.  The library releases a miss only when the INVALIDATE
 * waits for its section (the request translated the invalidated range:
 * a buffer the guest unmapped under it, or the same IOVA recycled), so a
 * few retries are enough; each backs off (device.c) to let the front
 * end's UPDATEs through. */
#define XLATE_RETRIES	4u

/* Requests this file looks at before the library (spec numbering). */
#define VU_GET_VRING_BASE	11u
#define VU_SET_VRING_BASE	10u
#define VU_SET_VRING_ENABLE	18u
#define VU_SET_LOG_BASE		6u
#define VU_IOTLB_MSG		22u
#define VU_IOTLB_INVALIDATE	3u	/* struct vhost_iotlb_msg type */
#define VU_FLAGS_REPLY		(0x1u | 0x4u)	/* version 1, reply */

struct ring {
	struct iodma_vhost_user *vu;	/* for ring_thread_init() */
	uint32_t index;
	struct vblk_device *dev;
	int kick, call;			/* what the device uses (owned) */
	int new_kick, new_call;		/* arrived, not yet installed; -2 none */
	bool running;
	bool from_base;			/* next start at the front end's base */
	uint16_t last_avail;		/* where a stopped ring resumes */
	struct vblk_device_ring cfg;	/* what it runs with */
};

struct backend {
	struct iodma_vhost_user *vu;
	struct ring rings[MAX_QUEUES];
	uint32_t nq;
	uint64_t features;		/* device features offered */
	bool verbose;
	/* The isolation check (--isolation-probes N): after N INVALIDATEs
	 * that removed mappings, the device tries its own access to the
	 * first page (a translation through the same path as the device
	 * model's, the resolver included).  It must fault.
	 * --drop-invalidations is its negative control: a probed INVALIDATE
	 * is acked before it is applied, so the probe must find the stale
	 * mapping. */
	uint32_t probes_left;
	bool drop_invalidations;
	uint64_t probes, probe_faults, probe_violations;
	/* --drop-dirty: the migration check's negative control.  The log fd
	 * of SET_LOG_BASE is swapped for a private memfd of the same size
	 * before the library sees it: the library logs every device write
	 * as usual, but into a bitmap the front end never reads, so every
	 * dirty bit of the device is lost (tests/vm/vhost-user-migrate.sh
	 * must then fail). */
	bool drop_dirty;
	uint64_t logs_dropped;
};

static void logv(const struct backend *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void logv(const struct backend *b, const char *fmt, ...)
{
	va_list ap;

	if (!b->verbose)
		return;
	va_start(ap, fmt);
	fputs("vhost-user-blk: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* ---- the library's callbacks (run inside handle(), its lock held) ------- */

static int cb_vring_fd(void *arg, uint32_t vring, uint32_t kind, int fd)
{
	struct backend *b = arg;
	struct ring *r;
	int *slot;

	if (vring >= b->nq)
		return -EINVAL;
	r = &b->rings[vring];
	if (kind == IODMA_VHOST_USER_FD_ERR) {
		/* Nothing to report on it: the device signals errors by
		 * logging; keep no fd. */
		if (fd >= 0)
			close(fd);
		return 0;
	}
	slot = kind == IODMA_VHOST_USER_FD_KICK ? &r->new_kick : &r->new_call;
	if (*slot >= 0)
		close(*slot);
	*slot = fd;		/* -1: the front end asks us to poll: refused
				 * at start (the ring does not run) */
	return 0;
}

static void ring_stop(struct backend *b, uint32_t i);

static int cb_vring_stop(void *arg, uint32_t vring, uint32_t *avail_idx)
{
	struct backend *b = arg;

	/* The main loop asked the ring to stop before handing the message
	 * over; the library has now released the misses it may wait on
	 * (the front end answers none before this reply): wait for it.  A
	 * chain it could not translate stays out of the index replied. */
	if (vring < b->nq)
		ring_stop(b, vring);
	if (vring < b->nq && !b->rings[vring].from_base)
		*avail_idx = b->rings[vring].last_avail;
	if (vring < b->nq)
		b->rings[vring].from_base = true;
	return 0;
}

static int cb_get_config(void *arg, uint32_t offset, void *buf, uint32_t len)
{
	struct backend *b = arg;
	uint8_t cfg[256];
	int ret;

	ret = vblk_device_read_config(b->rings[0].dev, 0, cfg, sizeof(cfg));
	if (ret)
		return ret;
	if (b->nq > 1) {
		cfg[CFG_NUM_QUEUES] = (uint8_t)b->nq;
		cfg[CFG_NUM_QUEUES + 1] = (uint8_t)(b->nq >> 8);
	}
	if (offset > sizeof(cfg) || len > sizeof(cfg) - offset)
		return -EINVAL;
	memcpy(buf, cfg + offset, len);
	return 0;
}

static int cb_set_config(void *arg, uint32_t offset, const void *buf,
			 uint32_t len, uint32_t flags)
{
	(void)arg, (void)offset, (void)buf, (void)len, (void)flags;
	return -EPERM;		/* no writable field is offered (no WCE) */
}

static const struct iodma_vhost_user_ops ops = {
	.vring_fd = cb_vring_fd,
	.vring_stop = cb_vring_stop,
	.get_config = cb_get_config,
	.set_config = cb_set_config,
};

/* ---- keeping the rings in step with the front end ------------------------ */

static void ring_stop(struct backend *b, uint32_t i)
{
	struct ring *r = &b->rings[i];

	if (!r->running)
		return;
	r->last_avail = vblk_device_ring_stop(r->dev);
	r->running = false;
	r->from_base = false;
	logv(b, "ring %u stopped at avail %u", i, r->last_avail);
}

/* The device thread of a ring: its misses belong to that ring. */
static void ring_thread_init(void *arg)
{
	struct ring *r = arg;

	(void)iodma_vhost_user_bind_vring(r->vu, r->index);
}

static void ring_sync(struct backend *b, uint32_t i)
{
	struct ring *r = &b->rings[i];
	struct iodma_vhost_user_vring v;
	struct vblk_device_ring want;
	uint64_t features;
	bool run;
	int ret;

	if (iodma_vhost_user_get_vring(b->vu, i, &v) ||
	    iodma_vhost_user_get_features(b->vu, &features, NULL))
		return;
	if (r->new_kick != -2 || r->new_call != -2) {
		ring_stop(b, i);
		if (r->new_kick != -2) {
			if (r->kick >= 0)
				close(r->kick);
			r->kick = r->new_kick;
			r->new_kick = -2;
		}
		if (r->new_call != -2) {
			if (r->call >= 0)
				close(r->call);
			r->call = r->new_call;
			r->new_call = -2;
		}
	}
	/* Only the device's own bits: VHOST_F_LOG_ALL comes and goes with
	 * a migration's dirty logging (the library's business), and a
	 * restart for it would stop the ring outside GET_VRING_BASE, where
	 * nothing releases a waiting miss: the main loop would wait for
	 * the device, the device for an UPDATE only the main loop reads. */
	want = (struct vblk_device_ring){
		.features = features & b->features, .num = v.num, .desc = v.desc,
		.avail = v.avail, .used = v.used,
		.kick_fd = r->kick, .call_fd = r->call,
		.thread_init = ring_thread_init, .thread_arg = r,
	};
	run = v.started && v.enabled && v.addr_valid && v.num &&
	      r->kick >= 0 && r->call >= 0;
	if (r->running && (!run || want.num != r->cfg.num ||
			   want.desc != r->cfg.desc ||
			   want.avail != r->cfg.avail ||
			   want.used != r->cfg.used ||
			   want.features != r->cfg.features))
		ring_stop(b, i);
	if (!run || r->running)
		return;
	want.last_avail = r->from_base ? (uint16_t)v.base : r->last_avail;
	ret = vblk_device_ring_start(r->dev, &want);
	if (ret) {
		fprintf(stderr, "vhost-user-blk: ring %u cannot start: %s\n",
			i, iodma_strerror(ret));
		return;
	}
	r->cfg = want;
	r->running = true;
	logv(b, "ring %u started: num %u desc 0x%" PRIx64 " avail 0x%" PRIx64
	     " used 0x%" PRIx64 " at %u features 0x%" PRIx64, i, want.num,
	     want.desc, want.avail, want.used, want.last_avail, features);
}

/* ---- the isolation check ----------------------------------------------------- */

struct first_map {
	bool found;
	uint64_t iova;
	uint32_t perm;
};

static int first_map_cb(void *arg, const struct iodma_map_event *ev)
{
	struct first_map *f = arg;

	f->found = true;
	f->iova = ev->iova;
	f->perm = ev->perm;
	return 1;
}

/*
 * The front end has just been told that [iova, +size) is invalidated: a
 * device access to its first mapped page must fault now.  Runs on this
 * thread, before any further message is handled, so a miss cannot be
 * answered by an UPDATE of a new mapping at that IOVA: only a stale entry
 * in the page table could let the access through.
 */
static void isolation_probe(struct backend *b, const struct first_map *f)
{
	int ret = iodma_check_range(iodma_vhost_user_domain(b->vu), f->iova, 1,
				    f->perm);

	b->probes++;
	if (ret == 0) {
		b->probe_violations++;
		fprintf(stderr, "vhost-user-blk: ISOLATION VIOLATION: IOVA 0x%" PRIx64
			" still translates after INVALIDATE\n", f->iova);
	} else {
		b->probe_faults++;
		logv(b, "isolation probe of IOVA 0x%" PRIx64 ": %s", f->iova,
		     iodma_strerror(ret));
	}
}

/* ---- the message loop ------------------------------------------------------ */

static int listen_on(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int s;

	if (strlen(path) >= sizeof(a.sun_path)) {
		fprintf(stderr, "vhost-user-blk: socket path too long\n");
		return -1;
	}
	strcpy(a.sun_path, path);
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -1;
	unlink(path);
	if (bind(s, (struct sockaddr *)&a, sizeof(a)) || listen(s, 1)) {
		perror("vhost-user-blk: bind/listen");
		close(s);
		return -1;
	}
	return s;
}

/* Wait for @fd to be readable or a signal; 1 readable, 0 signal.
 * SIGUSR1 asks every running ring to print its state (a debugging aid:
 * tests/vm/vhost-user-migrate.sh sends it when the guest's I/O hangs). */
static int wait_fd(const struct backend *b, int fd, int sfd)
{
	struct pollfd p[2] = { { .fd = fd, .events = POLLIN },
			       { .fd = sfd, .events = POLLIN } };

	for (;;) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (p[1].revents) {
			struct signalfd_siginfo si;

			if (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si) &&
			    si.ssi_signo == SIGUSR1) {
				for (uint32_t i = 0; b && i < b->nq; i++)
					if (b->rings[i].running)
						vblk_device_request_dump(b->rings[i].dev);
				continue;
			}
			return 0;
		}
		if (p[0].revents)
			return 1;
	}
}

/* Serve one connection until it closes (0), a signal (1) or a broken
 * stream (-1). */
static int serve(struct backend *b, int conn, int sfd)
{
	_Alignas(8) uint8_t msg[IODMA_VHOST_USER_MSG_MAX];
	struct iodma_vhost_user_reply reply;
	int fds[IODMA_VHOST_USER_MAX_FDS];

	for (;;) {
		size_t nfds = (sizeof(fds) / sizeof(fds[0]));
		uint32_t req, size, idx, stopping = UINT32_MAX;
		int n, ret;

		ret = wait_fd(b, conn, sfd);
		if (ret <= 0)
			return ret == 0 ? 1 : -1;
		n = iodma_vhost_user_recv(conn, msg, sizeof(msg), fds, &nfds);
		if (n == -ECONNRESET)
			return 0;
		if (n < 0) {
			fprintf(stderr, "vhost-user-blk: recv: %s\n", iodma_strerror(n));
			return -1;
		}
		memcpy(&req, msg, 4);
		memcpy(&size, msg + 8, 4);
		/* A ring must be stopped before its index is replied (asked
		 * here, waited for in cb_vring_stop(), after the library
		 * released the misses the ring may wait on), and a new base
		 * applies at the next start.  A ring disabled stops likewise
		 * (asked here, the library releases its misses, ring_sync()
		 * waits): QEMU's vhost_dev_stop() disables every ring before
		 * it asks their bases, and answers no miss in between. */
		if ((req == VU_GET_VRING_BASE || req == VU_SET_VRING_BASE ||
		     req == VU_SET_VRING_ENABLE) && size >= 8) {
			uint32_t num;

			memcpy(&idx, msg + 12, 4);
			memcpy(&num, msg + 16, 4);
			if (idx < b->nq && b->rings[idx].running &&
			    (req == VU_GET_VRING_BASE ||
			     (req == VU_SET_VRING_ENABLE && num == 0))) {
				vblk_device_request_stop(b->rings[idx].dev);
				stopping = idx;
			}
			if (idx < b->nq && req == VU_SET_VRING_BASE)
				b->rings[idx].from_base = true;
		}
		/* The negative control of migration: a private log. */
		if (req == VU_SET_LOG_BASE && b->drop_dirty && size == 16 &&
		    nfds == 1) {
			uint64_t msize, moff;
			int priv;

			memcpy(&msize, msg + 12, 8);
			memcpy(&moff, msg + 20, 8);
			priv = memfd_create("vublk-dropped-log", MFD_CLOEXEC);
			if (priv >= 0 && moff <= INT64_MAX - msize &&
			    ftruncate(priv, (off_t)(moff + msize)) == 0) {
				close(fds[0]);
				fds[0] = priv;
				b->logs_dropped++;
				fprintf(stderr, "vhost-user-blk: --drop-dirty: "
					"the dirty log of %" PRIu64 " bytes "
					"goes to a private memfd\n", msize);
			} else if (priv >= 0) {
				close(priv);
			}
		}
		/* An INVALIDATE of mapped IOVAs: probe it afterwards, or (the
		 * negative control) ack it without applying it. */
		struct first_map fm = { .found = false };
		if (req == VU_IOTLB_MSG && size == 32 && nfds == 0 &&
		    (b->probes_left || b->drop_invalidations)) {
			uint64_t iova, len;

			memcpy(&iova, msg + 12, 8);
			memcpy(&len, msg + 20, 8);
			if (msg[12 + 25] == VU_IOTLB_INVALIDATE && len &&
			    len <= UINT64_MAX - iova && b->probes_left)
				(void)iodma_domain_for_each_mapping(
					iodma_vhost_user_domain(b->vu), iova,
					len, first_map_cb, &fm);
			if (fm.found && b->drop_invalidations) {
				/* The bug this control simulates: acking an
				 * INVALIDATE before it is applied.  The probe
				 * runs in between, then the library applies
				 * it (its own reply is not sent). */
				uint32_t h[3] = { req, VU_FLAGS_REPLY, 8 };
				uint8_t ack[20] = { 0 };

				memcpy(ack, h, sizeof(h));
				if (iodma_vhost_user_send(conn, ack, sizeof(ack)))
					return -1;
				b->probes_left--;
				isolation_probe(b, &fm);
				fm.found = false;
				ret = iodma_vhost_user_handle(b->vu, msg, (size_t)n,
							      fds, nfds, &reply);
				if (ret)
					fprintf(stderr, "vhost-user-blk: late INVALIDATE failed: %s\n",
						iodma_strerror(ret));
				continue;
			}
		}
		ret = iodma_vhost_user_handle(b->vu, msg, (size_t)n, fds, nfds,
					      &reply);
		logv(b, "request %u size %u fds %zu: %s%s", req, size, nfds,
		     ret ? "error " : "ok", ret ? iodma_strerror(ret) : "");
		if (ret == -ENOTSUP) {
			fprintf(stderr, "vhost-user-blk: request %u not supported\n",
				req);
			for (size_t i = 0; i < nfds; i++)
				close(fds[i]);
		} else if (ret) {
			fprintf(stderr, "vhost-user-blk: request %u failed: %s\n",
				req, iodma_strerror(ret));
		}
		if (reply.len) {
			int s = iodma_vhost_user_send(conn, reply.msg, reply.len);

			if (s) {
				fprintf(stderr, "vhost-user-blk: send: %s\n",
					iodma_strerror(s));
				return -1;
			}
		}
		if (ret == -EPROTO)
			return -1;
		if (ret == 0 && fm.found) {
			b->probes_left--;
			isolation_probe(b, &fm);
		}
		/* Asked to stop above: finish the stop even if the request
		 * failed (ring_sync() restarts it if it should still run). */
		if (stopping < b->nq)
			ring_stop(b, stopping);
		for (uint32_t i = 0; i < b->nq; i++)
			ring_sync(b, i);
	}
}

static void print_counters(struct backend *b)
{
	struct iodma_vhost_user_stats vs = IODMA_STRUCT_INIT(struct iodma_vhost_user_stats);
	struct iodma_xlate_stats xs = IODMA_STRUCT_INIT(struct iodma_xlate_stats);
	struct vblk_device_stats sum = { 0 };
	for (uint32_t i = 0; i < b->nq; i++) {
		struct vblk_device_stats st;

		vblk_device_get_stats(b->rings[i].dev, &st);
		sum.requests += st.requests;
		sum.bytes_read += st.bytes_read;
		sum.bytes_written += st.bytes_written;
		sum.ioerr += st.ioerr;
		sum.xlate_failures += st.xlate_failures;
		sum.translations += st.translations;
		sum.xlate_retries += st.xlate_retries;
		sum.requeued += st.requeued;
		sum.used_resyncs += st.used_resyncs;
		sum.doorbells += st.doorbells;
		sum.interrupts += st.interrupts;
	}
	iodma_vhost_user_get_stats(b->vu, &vs);
	iodma_xlate_get_stats(iodma_vhost_user_domain(b->vu), &xs);
	printf("VHOST-USER-BLK-COUNTERS requests=%" PRIu64 " bytes_read=%" PRIu64
	       " bytes_written=%" PRIu64 " ioerr=%" PRIu64
	       " iotlb_misses=%" PRIu64 " misses_resolved=%" PRIu64
	       " misses_released=%" PRIu64 " misses_failed=%" PRIu64
	       " misses_ahead=%" PRIu64 " iotlb_updates=%" PRIu64 " iotlb_invalidates=%" PRIu64
	       " pt_hits=%" PRIu64 " pt_misses=%" PRIu64
	       " hit_rate=%.3f device_xlates=%" PRIu64
	       " faults=%" PRIu64 " xlate_retries=%" PRIu64
	       " xlate_failures=%" PRIu64
	       " kicks=%" PRIu64 " calls=%" PRIu64
	       " isolation_probes=%" PRIu64 " isolation_faults=%" PRIu64
	       " isolation_violations=%" PRIu64 " logs_dropped=%" PRIu64
	       " requeued=%" PRIu64 " used_resyncs=%" PRIu64 "\n",
	       sum.requests, sum.bytes_read, sum.bytes_written, sum.ioerr,
	       vs.iotlb_misses, vs.misses_resolved, vs.misses_released,
	       vs.misses_failed, vs.misses_ahead, vs.iotlb_updates, vs.iotlb_invalidates,
	       xs.iotlb_hits, xs.iotlb_misses,
	       xs.iotlb_hits + xs.iotlb_misses ?
	       (double)xs.iotlb_hits / (double)(xs.iotlb_hits + xs.iotlb_misses) : 0.0,
	       sum.translations, xs.faults, sum.xlate_retries,
	       sum.xlate_failures, sum.doorbells, sum.interrupts, b->probes,
	       b->probe_faults, b->probe_violations, b->logs_dropped,
	       sum.requeued, sum.used_resyncs);
	fflush(stdout);
}

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s --socket PATH --disk IMAGE [--queues N] "
		"[--miss-timeout-ms MS] [--isolation-probes N] "
		"[--drop-invalidations] [--drop-dirty] [--verbose]\n"
		"Serves IMAGE (its size rounded down to 512 bytes) as a "
		"vhost-user-blk device on PATH.\n"
		"--isolation-probes N: after each of the first N IOTLB "
		"INVALIDATEs that removed mappings, try a device access to the "
		"first one (it must fault: counted).\n"
		"--drop-invalidations: the probes' negative control: ack the "
		"probed INVALIDATEs before applying them (UNSAFE: the probes "
		"must then report violations).\n"
		"--drop-dirty: the migration check's negative control: log "
		"device writes into a private copy of the front end's dirty "
		"log (UNSAFE: a live migration then loses them).\n", argv0);
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "disk", required_argument, NULL, 'd' },
		{ "queues", required_argument, NULL, 'q' },
		{ "miss-timeout-ms", required_argument, NULL, 't' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "isolation-probes", required_argument, NULL, 'p' },
		{ "drop-invalidations", no_argument, NULL, 'D' },
		{ "drop-dirty", no_argument, NULL, 'L' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct iodma_vhost_user_opts vopts = IODMA_OPTS_INIT(struct iodma_vhost_user_opts);
	struct backend b = { .nq = 1 };
	const char *sock_path = NULL, *disk = NULL;
	struct vblk_device_opts dopts;
	uint64_t miss_ms = 0;
	struct stat sb;
	sigset_t sigs;
	int c, disk_fd, lsock, conn, sfd, ret, rc = 0;

	while ((c = getopt_long(argc, argv, "s:d:q:t:vp:DLh", lopts, NULL)) != -1) {
		switch (c) {
		case 's': sock_path = optarg; break;
		case 'd': disk = optarg; break;
		case 'q': b.nq = (uint32_t)strtoul(optarg, NULL, 0); break;
		case 't': miss_ms = strtoull(optarg, NULL, 0); break;
		case 'v': b.verbose = true; break;
		case 'p': b.probes_left = (uint32_t)strtoul(optarg, NULL, 0); break;
		case 'D': b.drop_invalidations = true; break;
		case 'L': b.drop_dirty = true; break;
		case 'h': usage(argv[0]); return 0;
		default: usage(argv[0]); return 2;
		}
	}
	if (!sock_path || !disk || b.nq == 0 || b.nq > MAX_QUEUES) {
		usage(argv[0]);
		return 2;
	}
	disk_fd = open(disk, O_RDWR | O_CLOEXEC);
	if (disk_fd < 0 || fstat(disk_fd, &sb) || sb.st_size < 512) {
		fprintf(stderr, "vhost-user-blk: %s: %s\n", disk,
			disk_fd < 0 ? strerror(errno) : "too small");
		return 1;
	}

	/* The device threads inherit the mask: signals come through sfd. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGUSR1);
	sigprocmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
	if (sfd < 0) {
		perror("vhost-user-blk: signalfd");
		return 1;
	}

	dopts = (struct vblk_device_opts){
		.disk_fd = disk_fd, .capacity = (uint64_t)sb.st_size / 512,
		.size_max = SIZE_MAX_BYTES, .seg_max = SEG_MAX,
		.queue_num_max = QUEUE_NUM_MAX, .doorbell_fd = -1,
		.irq_fd = -1, .event_idx = true, .xlate_retries = XLATE_RETRIES,
	};
	b.features = vblk_device_features(&dopts);
	if (b.nq > 1)
		b.features |= VIRTIO_BIT(VIRTIO_BLK_F_MQ);
	vopts.device_features = b.features;
	vopts.max_vrings = b.nq;
	vopts.miss_timeout_ns = miss_ms * 1000000ull;
	vopts.ops = &ops;
	vopts.ops_arg = &b;
	ret = iodma_vhost_user_create(&vopts, &b.vu);
	if (ret) {
		fprintf(stderr, "vhost-user-blk: iodma_vhost_user_create: %s\n",
			iodma_strerror(ret));
		return 1;
	}
	dopts.domain = iodma_vhost_user_domain(b.vu);
	for (uint32_t i = 0; i < b.nq; i++) {
		struct ring *r = &b.rings[i];

		r->vu = b.vu;
		r->index = i;
		r->kick = r->call = -1;
		r->new_kick = r->new_call = -2;
		r->from_base = true;
		ret = vblk_device_create(&dopts, &r->dev);
		if (ret) {
			fprintf(stderr, "vhost-user-blk: device: %s\n",
				iodma_strerror(ret));
			return 1;
		}
	}

	lsock = listen_on(sock_path);
	if (lsock < 0)
		return 1;
	printf("vhost-user-blk: serving %s (%" PRIu64 " sectors, %u queue%s) on %s\n",
	       disk, dopts.capacity, b.nq, b.nq > 1 ? "s" : "", sock_path);
	fflush(stdout);
	ret = wait_fd(&b, lsock, sfd);
	if (ret == 1) {
		conn = accept4(lsock, NULL, NULL, SOCK_CLOEXEC);
		if (conn < 0) {
			perror("vhost-user-blk: accept");
			rc = 1;
		} else {
			ret = serve(&b, conn, sfd);
			if (ret < 0)
				rc = 1;
			printf("vhost-user-blk: %s\n", ret == 0 ? "front end disconnected"
					      : ret == 1 ? "signal" : "stream broken");
			close(conn);
		}
	}
	close(lsock);
	unlink(sock_path);
	for (uint32_t i = 0; i < b.nq; i++)
		ring_stop(&b, i);
	print_counters(&b);
	for (uint32_t i = 0; i < b.nq; i++) {
		struct ring *r = &b.rings[i];

		vblk_device_destroy(r->dev);
		if (r->kick >= 0)
			close(r->kick);
		if (r->call >= 0)
			close(r->call);
		if (r->new_kick >= 0)
			close(r->new_kick);
		if (r->new_call >= 0)
			close(r->new_call);
	}
	iodma_vhost_user_destroy(b.vu);
	close(disk_fd);
	close(sfd);
	return rc;
}
