/* SPDX-License-Identifier: MIT */
/*
 * fuzz_vhost_user.c - a structure-aware fuzz target for iodma/vhost-user.h.
 *
 * One input is one front end's session with a fresh back end: the first
 * byte configures iodma_vhost_user_create(), then every record is one
 * message (header + payload + fds) for iodma_vhost_user_handle(),
 * followed by what a back end's device code does between messages
 * (translate IOVAs inside an access section, read and write through the
 * slices, log used-ring writes, send IOTLB misses).  Everything is
 * destroyed at the end of the input.
 *
 * Encoding (all fields one byte unless said; an exhausted input reads 0):
 *   input  := cfg record*                        (at most MAX_MSGS records)
 *   cfg    := bits 0-1 rings - 1, 2-4 slot-count index, 5 ops callbacks,
 *             6 device feature VERSION_1, 7 a mapping limit of 3
 *   record := ctl [nth] message fds device
 *   ctl    := bits 0-1: 3 = raw message, else structured; bit 2 need_reply;
 *             bits 3-4: 2 = corrupt the size (one more byte follows the
 *             message), 3 = fail the library's nth allocation during
 *             handle() (nth follows ctl); bits 5-7: fd count: 0-4 what the
 *             request carries, 5 none, 6 one more, 7 a count byte follows
 *   structured message := request-index, then the request's fields in
 *             the order of its payload; each number is a "value":
 *   value  := s < 0xf0: a plausible value of the field's kind (page
 *             multiples near the guest RAM, the user base, existing
 *             regions and mappings); 0xf0 0, 0xf1 ~0, 0xf2 ~0 - page + 1,
 *             0xf3 + 8 bytes literal (little endian), 0xf4 + 4 bytes,
 *             0xf5 + 1 byte: plausible + that byte (misaligned), 0xf6 + 1
 *             byte: 1 << (byte % 64), others + 8 bytes literal
 *   raw message := request, flags, size, size payload bytes
 *   fds    := one kind byte per fd: < 0xc0 the request's natural kind,
 *             else kind % 8 (KIND_*)
 *   device := bits 0-1 translations, bit 2 an IOTLB miss, bit 3 a
 *             used-ring log, bit 4 a copy (iodma_read/write), bit 5 a
 *             log_write; each op reads its own bytes
 *
 * Invariants checked (abort() when broken, so libFuzzer keeps the input):
 *   - handle() returns 0 or a documented errno; -ENOTSUP only for a
 *     request this layer does not implement; the reply is well formed
 *     (IOTLB_MSG always gets its u64 = -ret, REPLY_ACK gets an ack);
 *   - a rejected message changes nothing: regions (address, size, host
 *     mapping, fd, offset), every IOTLB mapping, feature words, every
 *     ring's state and the process's open fds are as before (the one
 *     documented exception: SET_MEM_TABLE failing with -ENOMEM may drop
 *     the IOTLB mappings), and every fd it carried is closed;
 *   - a shadow model of the memory table (updated from accepted messages)
 *     equals the memory's regions; every mapping lies inside one region;
 *     the region count fits the slots, the mapping count the limit;
 *   - an accepted UPDATE translates page by page to the region its user
 *     address names, with its permission and no more; an accepted
 *     INVALIDATE leaves no mapping in its range; ring and feature
 *     messages read back as sent;
 *   - a device translation returns only memory inside a region, exactly
 *     the bytes the mapping and region name (an independent walk of the
 *     mapping list and the region table), and fails exactly where that
 *     walk finds no access; writes through the slices land in the front
 *     end's own view of its memfd at the region's offset;
 *   - while the shared log runs, every region is inside the log and each
 *     page a device write or used-ring log touched has its bit set in the
 *     front end's view of the log;
 *   - after destroy, the process has the fds it had before the input
 *     (memory leaks: ASan/LSan, valgrind).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <iodma.h>
#include <iodma/test-hooks.h> /* fault injection: tests only */

#include "vhost_user_proto.h"
#include "fuzz_vhost_user.h"

#define PG        0x1000ull
#define RAM_SIZE  (1ull << 20)          /* the guest RAM memfd */
#define LOG_SIZE  (64ull << 10)         /* the shared-log memfd */
#define SMALL_SZ  PG                    /* a memfd too short for regions */
#define UBASE     0x7f0000000000ull     /* the front end's user addresses */
#define BAD_FD    4000                  /* a number no fd has (checked) */
#define MAX_MSGS  48
#define MAX_REGS  40
#define MAX_RINGS 4
#define MSG_CAP   (12 + 512)
#define MISS_NS   1000ull               /* misses give up after 1 us */
#define MISS_NS_MT 200000ull            /* with a device thread: 200 us */

#define F_IOMMU (1ull << VU_F_IOMMU_PLATFORM)
#define F_LOG   (1ull << VU_F_LOG_ALL)
#define F_PROTO (1ull << VU_F_PROTOCOL_FEATURES)
#define F_V1    (1ull << 32)

enum { KIND_RAM, KIND_SMALL, KIND_EVENT, KIND_NEG, KIND_BADNUM, KIND_SOCK,
       KIND_LOG, KIND_RAM2 };

/* Field kinds for values. */
enum { K_GPA, K_RSIZE, K_RUADDR, K_OFF, K_IOVA, K_TLBSZ, K_UADDR, K_LOGSZ,
       K_LOGOFF, K_IDX, K_NUM, K_RING, K_FEAT, K_PROT, K_VFD, K_VFLAGS };

struct vu_fuzz_stats vu_fuzz_stats;
int vu_fuzz_threads;

/* ---- state -------------------------------------------------------------------- */

struct sreg {                   /* the shadow memory table */
	uint64_t gpa, size, uaddr, off;
	ino_t ino;
};

struct ring_snap {
	uint32_t num, base, addr_flags;
	uint64_t desc, avail, used, log_guest_addr;
	bool addr_valid, started, enabled;
	int kick, call, err;
};

struct snap {
	size_t nreg;
	struct iodma_region_info r[MAX_REGS];
	uint64_t nmaps, maphash;
	uint64_t feat, prot;
	struct ring_snap ring[MAX_RINGS];
	int nfds;
};

struct fz {
	struct fuzz_in r;
	struct iodma_vhost_user *vu;
	struct iodma_domain *dom;
	struct iodma_memory *mem;
	uint32_t rings, slots, max_maps;
	bool ops;
	int ram_fd, log_fd, sock[2];
	uint8_t *ram, *logv;
	ino_t ram_ino, log_ino, sock_ino;
	struct sreg reg[MAX_REGS];
	size_t nreg;
	bool log_set;                   /* a SET_LOG_BASE was accepted */
	ino_t log_set_ino;
	uint64_t log_off, log_bytes;
	int cb_fd[MAX_RINGS][3];        /* fds handed to ops->vring_fd */
	bool cb_refuse;
	uint8_t token;
	uint8_t chan[4096];             /* bytes read from the back-end channel */
	size_t chan_len;
	/* for messages */
	unsigned int msg;
	uint32_t req;
	int ret;
};

static struct fz *cur; /* for the failure report */

/* fuzz_fail_context: which message broke the invariant. */
static void fail_context(FILE *f)
{
	if (cur)
		fprintf(f, " (message %u, request %u, handle() = %d)", cur->msg,
			cur->req, cur->ret);
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	CHECK(d != NULL);
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;
}

static ino_t ino_of(int fd)
{
	struct stat st;

	return fd >= 0 && fstat(fd, &st) == 0 ? st.st_ino : 0;
}

/* ---- values ------------------------------------------------------------------- */

static uint64_t plausible(struct fz *z, int kind, uint8_t s)
{
	switch (kind) {
	case K_GPA:
		return (uint64_t)(s % 32) * 0x10000;
	case K_RSIZE:
		return s < 0x80 ? (1 + s % 4) * 0x10000ull : (1 + s % 16) * PG;
	case K_RUADDR:
		return UBASE + (uint64_t)(s % 32) * 0x10000;
	case K_OFF:
		return (uint64_t)(s % 16) * 0x10000;
	case K_IOVA:
		return (uint64_t)s * 0x4000;
	case K_TLBSZ:
		return s >= 0xe0 ? 0 : (1 + s % 16) * PG;
	case K_UADDR:
		/* Mostly inside a region of the shadow table. */
		if (z->nreg && s < 0xa0) {
			const struct sreg *g = &z->reg[s % z->nreg];

			return g->uaddr + ((uint64_t)(s >> 3) * PG) % g->size;
		}
		return UBASE + (uint64_t)s * PG;
	case K_LOGSZ:
		return (uint64_t[]){ 64, 128, 512, 4096, 8, 1 }[s % 6];
	case K_LOGOFF:
		return (uint64_t)(s % 4) * 8 + (s & 0x80 ? PG : 0);
	case K_IDX:
		return s % (z->rings + 1);
	case K_NUM:
		return 1ull << (s % 17);
	case K_RING:
		return s < 0x80 ? UBASE + (uint64_t)s * PG : (uint64_t)(s - 0x80) * PG;
	case K_FEAT:
		return ((s & 1) ? F_IOMMU : 0) | ((s & 2) ? F_LOG : 0) |
		       ((s & 4) ? 0 : F_PROTO) | ((s & 8) ? F_V1 : 0) |
		       ((s & 0x10) ? 1ull << (s >> 5) : 0);
	case K_PROT: {
		static const unsigned int bits[] = {
			VU_PROTOCOL_F_MQ, VU_PROTOCOL_F_LOG_SHMFD,
			VU_PROTOCOL_F_REPLY_ACK, VU_PROTOCOL_F_BACKEND_REQ,
			VU_PROTOCOL_F_CONFIG, VU_PROTOCOL_F_CONFIGURE_MEM_SLOTS };
		uint64_t v = 0;

		s ^= 0x3f; /* 0 = everything */
		for (int i = 0; i < 6; i++)
			if (s & (1u << i))
				v |= 1ull << bits[i];
		return v | ((s & 0x40) ? 1ull << 2 : 0);
	}
	case K_VFD:
		return (s % (z->rings + 1)) | ((s & 0x80) ? VU_VRING_NOFD_MASK : 0);
	case K_VFLAGS:
		return ((s & 1) ? 1u << VHOST_VRING_F_LOG : 0) |
		       ((s & 2) ? 1u << (s >> 3) : 0);
	default:
		return s;
	}
}

static uint64_t rdval(struct fz *z, int kind)
{
	uint8_t s = fuzz_u8(&z->r);

	if (s < 0xf0)
		return plausible(z, kind, s);
	switch (s) {
	case 0xf0:
		return 0;
	case 0xf1:
		return UINT64_MAX;
	case 0xf2:
		return UINT64_MAX - PG + 1;
	case 0xf4:
		return fuzz_un(&z->r, 4);
	case 0xf5: {
		uint8_t t = fuzz_u8(&z->r);

		return plausible(z, kind, t) + fuzz_u8(&z->r);
	}
	case 0xf6:
		return 1ull << (fuzz_u8(&z->r) % 64);
	default:
		return fuzz_un(&z->r, 8);
	}
}

/* ---- messages ------------------------------------------------------------------- */

static const uint32_t req_table[] = {
	VU_GET_FEATURES, VU_SET_FEATURES, VU_SET_OWNER, VU_RESET_OWNER,
	VU_SET_MEM_TABLE, VU_SET_LOG_BASE, VU_SET_LOG_FD, VU_SET_VRING_NUM,
	VU_SET_VRING_ADDR, VU_SET_VRING_BASE, VU_GET_VRING_BASE,
	VU_SET_VRING_KICK, VU_SET_VRING_CALL, VU_SET_VRING_ERR,
	VU_GET_PROTOCOL_FEATURES, VU_SET_PROTOCOL_FEATURES, VU_GET_QUEUE_NUM,
	VU_SET_VRING_ENABLE, VU_SET_BACKEND_REQ_FD, VU_IOTLB_MSG,
	VU_GET_CONFIG, VU_SET_CONFIG, VU_GET_MAX_MEM_SLOTS, VU_ADD_MEM_REG,
	VU_REM_MEM_REG, 99,
	/* the common ones again */
	VU_IOTLB_MSG, VU_IOTLB_MSG, VU_IOTLB_MSG, VU_SET_MEM_TABLE,
	VU_ADD_MEM_REG, VU_REM_MEM_REG,
};
#define NREQ (sizeof(req_table) / sizeof(req_table[0]))

struct msg {
	uint8_t buf[MSG_CAP];
	size_t len;
	uint32_t req;
	unsigned int want_fds;          /* what the request carries */
	int kind;                       /* its natural fd kind */
};

static void put(struct msg *m, size_t off, const void *v, size_t n)
{
	memcpy(m->buf + 12 + off, v, n);
}

static void put_region(struct fz *z, struct msg *m, size_t off)
{
	struct vu_mem_region g;

	g.guest_addr = rdval(z, K_GPA);
	g.size = rdval(z, K_RSIZE);
	g.user_addr = rdval(z, K_RUADDR);
	g.mmap_offset = rdval(z, K_OFF);
	put(m, off, &g, sizeof(g));
}

/* A structured message: a request of the protocol, its payload fields. */
static uint32_t build_structured(struct fz *z, struct msg *m)
{
	uint32_t req = req_table[fuzz_u8(&z->r) % NREQ], size = 0;

	m->req = req;
	m->want_fds = 0;
	m->kind = KIND_EVENT;
	switch (req) {
	case VU_SET_FEATURES:
	case VU_SET_PROTOCOL_FEATURES: {
		uint64_t v = rdval(z, req == VU_SET_FEATURES ? K_FEAT : K_PROT);

		put(m, 0, &v, 8);
		size = 8;
		break;
	}
	case VU_SET_MEM_TABLE: {
		uint8_t nb = fuzz_u8(&z->r);
		struct vu_mem_table h = { .nregions = nb < 0xf0 ? nb % 10u : nb };
		uint32_t n = h.nregions > 9 ? 9 : h.nregions;

		put(m, 0, &h, 8);
		for (uint32_t i = 0; i < n && 8 + (i + 1) * 32 <= 512; i++)
			put_region(z, m, 8 + i * 32);
		size = 8 + n * 32;
		m->want_fds = n;
		m->kind = KIND_RAM;
		break;
	}
	case VU_ADD_MEM_REG:
	case VU_REM_MEM_REG: {
		uint8_t pb = fuzz_u8(&z->r);
		uint64_t pad = 0;

		put(m, 0, &pad, 8);
		if ((pb & 0xc0) == 0xc0 && z->nreg) {
			/* An existing region: REM's natural case. */
			const struct sreg *g = &z->reg[pb % z->nreg];
			struct vu_mem_region v = { .guest_addr = g->gpa, .size = g->size,
						   .user_addr = g->uaddr,
						   .mmap_offset = g->off };

			put(m, 8, &v, sizeof(v));
		} else {
			put_region(z, m, 8);
		}
		size = 40;
		m->want_fds = req == VU_ADD_MEM_REG;
		m->kind = KIND_RAM;
		break;
	}
	case VU_SET_LOG_BASE: {
		struct vu_log_desc d;

		d.mmap_size = rdval(z, K_LOGSZ);
		d.mmap_offset = rdval(z, K_LOGOFF);
		put(m, 0, &d, sizeof(d));
		size = sizeof(d);
		m->want_fds = 1;
		m->kind = KIND_LOG;
		break;
	}
	case VU_SET_LOG_FD:
		m->want_fds = 1;
		break;
	case VU_SET_BACKEND_REQ_FD:
		m->want_fds = 1;
		m->kind = KIND_SOCK;
		break;
	case VU_SET_VRING_NUM:
	case VU_SET_VRING_BASE:
	case VU_GET_VRING_BASE:
	case VU_SET_VRING_ENABLE: {
		struct vhost_vring_state s;

		s.index = (uint32_t)rdval(z, K_IDX);
		s.num = (uint32_t)rdval(z, K_NUM);
		if (req == VU_SET_VRING_ENABLE && s.num > 2)
			s.num = s.num & 1;
		put(m, 0, &s, sizeof(s));
		size = sizeof(s);
		break;
	}
	case VU_SET_VRING_ADDR: {
		struct vhost_vring_addr a;

		a.index = (uint32_t)rdval(z, K_IDX);
		a.flags = (uint32_t)rdval(z, K_VFLAGS);
		a.desc_user_addr = rdval(z, K_RING);
		a.used_user_addr = rdval(z, K_RING);
		a.avail_user_addr = rdval(z, K_RING);
		a.log_guest_addr = rdval(z, K_GPA);
		put(m, 0, &a, sizeof(a));
		size = sizeof(a);
		break;
	}
	case VU_SET_VRING_KICK:
	case VU_SET_VRING_CALL:
	case VU_SET_VRING_ERR: {
		uint64_t v = rdval(z, K_VFD);

		put(m, 0, &v, 8);
		size = 8;
		m->want_fds = !(v & VU_VRING_NOFD_MASK);
		break;
	}
	case VU_IOTLB_MSG: {
		struct vhost_iotlb_msg t;
		uint8_t tb = fuzz_u8(&z->r), pb;

		memset(&t, 0, sizeof(t));
		t.type = tb % 8 < 5 ? VHOST_IOTLB_UPDATE :
			 tb % 8 < 7 ? VHOST_IOTLB_INVALIDATE : tb >> 3;
		t.iova = rdval(z, K_IOVA);
		t.size = rdval(z, K_TLBSZ);
		t.uaddr = rdval(z, K_UADDR);
		pb = fuzz_u8(&z->r);
		t.perm = pb < 0xf0 ? pb % 4 : fuzz_u8(&z->r);
		put(m, 0, &t, sizeof(t));
		size = sizeof(t);
		break;
	}
	case VU_GET_CONFIG:
	case VU_SET_CONFIG: {
		struct vu_config c;
		uint8_t sb;

		c.offset = fuzz_u8(&z->r);
		sb = fuzz_u8(&z->r);
		c.size = sb < 0xf0 ? sb % 24u : 250u + sb % 16u;
		c.flags = fuzz_u8(&z->r) % 3;
		put(m, 0, &c, sizeof(c));
		for (uint32_t i = 0; i < c.size && 12 + i < 500; i++)
			m->buf[12 + 12 + i] = (uint8_t)(z->token + i);
		size = 12 + (c.size < 488 ? c.size : 488);
		break;
	}
	case 99:
		size = fuzz_u8(&z->r) % 48;
		break;
	default: /* GET_*, SET_OWNER, RESET_OWNER: no payload */
		break;
	}
	return size;
}

static int natural_kind(uint32_t req)
{
	switch (req) {
	case VU_SET_MEM_TABLE:
	case VU_ADD_MEM_REG:
	case VU_REM_MEM_REG:
		return KIND_RAM;
	case VU_SET_LOG_BASE:
		return KIND_LOG;
	case VU_SET_BACKEND_REQ_FD:
		return KIND_SOCK;
	default:
		return KIND_EVENT;
	}
}

/* ---- fds ---------------------------------------------------------------------------- */

static int make_fd(struct fz *z, int kind)
{
	int fd;

	switch (kind) {
	case KIND_RAM:
	case KIND_RAM2:
		fd = dup(z->ram_fd);
		break;
	case KIND_SMALL:
		fd = memfd_create("fuzz-small", MFD_CLOEXEC);
		CHECK(fd >= 0 && ftruncate(fd, SMALL_SZ) == 0);
		return fd;
	case KIND_EVENT:
		fd = eventfd(0, EFD_CLOEXEC);
		break;
	case KIND_NEG:
		return -1;
	case KIND_BADNUM:
		return BAD_FD;
	case KIND_SOCK:
		fd = dup(z->sock[1]);
		break;
	default:
		fd = dup(z->log_fd);
		break;
	}
	CHECK(fd >= 0);
	return fd;
}

/* ---- snapshots ---------------------------------------------------------------------- */

static int hash_cb(void *arg, const struct iodma_map_event *ev)
{
	uint64_t *h = arg;
	uint64_t v[4] = { ev->iova, ev->len, ev->gpa, ev->perm };

	for (int i = 0; i < 4; i++)
		*h = (*h ^ v[i]) * 0x100000001b3ull;
	return 0;
}

static void ring_get(struct fz *z, uint32_t i, struct ring_snap *s)
{
	struct iodma_vhost_user_vring v;

	CHECK(iodma_vhost_user_get_vring(z->vu, i, &v) == 0);
	/* Field by field: the padding must compare equal too (memcmp). */
	memset(s, 0, sizeof(*s));
	s->num = v.num;
	s->base = v.base;
	s->addr_flags = v.addr_flags;
	s->desc = v.desc;
	s->avail = v.avail;
	s->used = v.used;
	s->log_guest_addr = v.log_guest_addr;
	s->addr_valid = v.addr_valid;
	s->started = v.started;
	s->enabled = v.enabled;
	s->kick = v.kick_fd;
	s->call = v.call_fd;
	s->err = v.err_fd;
}

static void snap_take(struct fz *z, struct snap *s, bool fds)
{
	memset(s, 0, sizeof(*s));
	s->nreg = iodma_memory_get_regions(z->mem, s->r, MAX_REGS);
	s->nmaps = iodma_domain_nr_mappings(z->dom);
	s->maphash = 0xcbf29ce484222325ull;
	CHECK(iodma_domain_for_each_mapping(z->dom, 0, UINT64_MAX, hash_cb,
					    &s->maphash) == 0);
	CHECK(iodma_vhost_user_get_features(z->vu, &s->feat, &s->prot) == 0);
	for (uint32_t i = 0; i < z->rings; i++)
		ring_get(z, i, &s->ring[i]);
	s->nfds = fds ? count_fds() : -1;
}

static void snap_same(const struct snap *a, const struct snap *b, bool maps)
{
	CHECK(a->nreg == b->nreg, "%zu regions, then %zu", a->nreg, b->nreg);
	for (size_t i = 0; i < a->nreg && i < MAX_REGS; i++) {
		CHECK(a->r[i].gpa == b->r[i].gpa && a->r[i].len == b->r[i].len &&
		      a->r[i].va == b->r[i].va && a->r[i].fd == b->r[i].fd &&
		      a->r[i].offset == b->r[i].offset, "region %zu changed", i);
	}
	if (maps)
		CHECK(a->nmaps == b->nmaps && a->maphash == b->maphash,
		      "mappings changed: %llu -> %llu", (unsigned long long)a->nmaps,
		      (unsigned long long)b->nmaps);
	CHECK(a->feat == b->feat && a->prot == b->prot);
	for (size_t i = 0; i < MAX_RINGS; i++)
		CHECK(memcmp(&a->ring[i], &b->ring[i], sizeof(a->ring[i])) == 0,
		      "ring %zu changed", i);
	if (a->nfds >= 0 && b->nfds >= 0)
		CHECK(a->nfds == b->nfds, "%d fds before, %d after", a->nfds, b->nfds);
}

/* ---- the oracle: what a translation must give -------------------------------------- */

struct one_map {
	struct iodma_map_event ev;
	bool found;
};

static int find_cb(void *arg, const struct iodma_map_event *ev)
{
	struct one_map *m = arg;

	m->ev = *ev;
	m->found = true;
	return 1;
}

static bool iommu_on(struct fz *z)
{
	uint64_t f = 0;

	iodma_vhost_user_get_features(z->vu, &f, NULL);
	return f & F_IOMMU;
}

/* The guest-physical address @iova reaches with @perm, from the mapping
 * list (not the page table translation walks); false if none. */
static bool oracle_gpa(struct fz *z, uint64_t iova, uint32_t perm, uint64_t *gpa)
{
	struct one_map m = { .found = false };

	if (!iommu_on(z)) {
		*gpa = iova;
		return true;
	}
	if (iodma_domain_for_each_mapping(z->dom, iova, 1, find_cb, &m) != 1 ||
	    !m.found || (m.ev.perm & perm) != perm)
		return false;
	*gpa = m.ev.gpa + (iova - m.ev.iova);
	return true;
}

static uint8_t *oracle(struct fz *z, uint64_t iova, uint32_t perm, uint64_t *gpa_out)
{
	struct iodma_region_info info;
	uint64_t gpa;

	if (!oracle_gpa(z, iova, perm, &gpa) || iodma_memory_find(z->mem, gpa, &info))
		return NULL;
	if (gpa_out)
		*gpa_out = gpa;
	return (uint8_t *)info.va + (gpa - info.gpa);
}

/* The front end's own view of guest-physical @gpa (NULL: not in its RAM
 * memfd, or not in a region). */
static uint8_t *fe_view(struct fz *z, uint64_t gpa)
{
	struct iodma_region_info info;
	uint64_t off;

	if (iodma_memory_find(z->mem, gpa, &info) || ino_of(info.fd) != z->ram_ino)
		return NULL;
	off = info.offset + (gpa - info.gpa);
	return off < RAM_SIZE ? z->ram + off : NULL;
}

/* ---- the shared log, as the front end sees it ------------------------------------ */

static bool logging(struct fz *z)
{
	uint64_t f = 0;

	iodma_vhost_user_get_features(z->vu, &f, NULL);
	return z->log_set && (f & F_LOG);
}

/* The front end's view of the log, if it can check bits there: the log is
 * its log memfd and no region writes into that memfd. */
static uint8_t *log_view(struct fz *z)
{
	if (!logging(z) || z->log_set_ino != z->log_ino ||
	    z->log_off + z->log_bytes > LOG_SIZE)
		return NULL;
	for (size_t i = 0; i < z->nreg; i++)
		if (z->reg[i].ino == z->log_ino)
			return NULL;
	return z->logv + z->log_off;
}

static void check_logged(struct fz *z, uint64_t gpa, uint64_t len)
{
	uint8_t *log = log_view(z);

	if (!log)
		return;
	for (uint64_t p = gpa / VU_LOG_PAGE; p <= (gpa + len - 1) / VU_LOG_PAGE; p++) {
		CHECK(p / 8 < z->log_bytes, "page %llu beyond the log",
		      (unsigned long long)p);
		CHECK(log[p / 8] & (1u << (p % 8)), "gpa page %#llx not logged",
		      (unsigned long long)p * VU_LOG_PAGE);
		vu_fuzz_stats.dirty_checked++;
	}
}

static void harvest(struct fz *z)
{
	uint8_t *log = log_view(z);

	if (log)
		memset(log, 0, z->log_bytes); /* the front end read and cleared it */
}

/* ---- global invariants -------------------------------------------------------------- */

struct in_walk {
	struct iodma_region_info *r;
	size_t nr;
	uint64_t n;
};

static int inside_cb(void *arg, const struct iodma_map_event *ev)
{
	struct in_walk *w = arg;
	bool ok = false;

	for (size_t i = 0; i < w->nr; i++)
		if (ev->gpa >= w->r[i].gpa && ev->len <= w->r[i].len &&
		    ev->gpa - w->r[i].gpa <= w->r[i].len - ev->len)
			ok = true;
	CHECK(ok, "mapping iova %#llx len %#llx -> gpa %#llx outside every region",
	      (unsigned long long)ev->iova, (unsigned long long)ev->len,
	      (unsigned long long)ev->gpa);
	CHECK(ev->perm && !(ev->perm & ~IODMA_PERM_RW));
	w->n++;
	return 0;
}

static void check_state(struct fz *z)
{
	struct iodma_region_info r[MAX_REGS];
	struct in_walk w = { .r = r };
	size_t n = iodma_memory_get_regions(z->mem, r, MAX_REGS);

	/* The shadow table and the memory agree. */
	CHECK(n == z->nreg, "memory has %zu regions, the front end sent %zu", n, z->nreg);
	CHECK(n <= z->slots);
	for (size_t i = 0; i < z->nreg; i++) {
		const struct sreg *g = &z->reg[i];
		bool found = false;

		for (size_t j = 0; j < n; j++)
			if (r[j].gpa == g->gpa && r[j].len == g->size &&
			    r[j].offset == g->off && ino_of(r[j].fd) == g->ino)
				found = true;
		CHECK(found, "region gpa %#llx missing or different",
		      (unsigned long long)g->gpa);
	}
	for (size_t i = 1; i < n; i++)
		CHECK(r[i - 1].gpa + r[i - 1].len <= r[i].gpa);
	w.nr = n;
	CHECK(iodma_domain_for_each_mapping(z->dom, 0, UINT64_MAX, inside_cb, &w) == 0);
	CHECK(w.n == iodma_domain_nr_mappings(z->dom));
	if (z->max_maps)
		CHECK(w.n <= z->max_maps);
	/* While the shared log runs it covers every region. */
	if (logging(z))
		for (size_t i = 0; i < z->nreg; i++)
			CHECK(((z->reg[i].gpa + z->reg[i].size - 1) / VU_LOG_PAGE) / 8 <
			      z->log_bytes, "region %#llx beyond the log",
			      (unsigned long long)z->reg[i].gpa);
}

/* ---- the back-end channel ---------------------------------------------------------- */

static void drain_channel(struct fz *z)
{
	for (;;) {
		ssize_t n = recv(z->sock[0], z->chan + z->chan_len,
				 sizeof(z->chan) - z->chan_len, MSG_DONTWAIT);

		if (n <= 0)
			break;
		z->chan_len += (size_t)n;
	}
	/* Whole messages: every one is an IOTLB MISS (spec, "IOMMU support"). */
	while (z->chan_len >= 12 + sizeof(struct vhost_iotlb_msg)) {
		struct vu_header h;
		struct vhost_iotlb_msg m;

		memcpy(&h, z->chan, 12);
		memcpy(&m, z->chan + 12, sizeof(m));
		CHECK(h.request == VU_BACKEND_IOTLB_MSG && h.size == sizeof(m) &&
		      (h.flags == VU_VERSION ||
		       h.flags == (VU_VERSION | VU_FLAG_NEED_REPLY)),
		      "back-end message %u/%#x/%u", h.request, h.flags, h.size);
		CHECK(m.type == VHOST_IOTLB_MISS && m.perm >= 1 && m.perm <= 3);
		memmove(z->chan, z->chan + 12 + sizeof(m),
			z->chan_len - 12 - sizeof(m));
		z->chan_len -= 12 + sizeof(m);
	}
}

/* ---- the device side --------------------------------------------------------------- */

struct map_list {
	struct iodma_map_event ev[64];
	size_t n;
};

static int list_cb(void *arg, const struct iodma_map_event *ev)
{
	struct map_list *l = arg;

	if (l->n < 64)
		l->ev[l->n++] = *ev;
	return 0;
}

/* A device address: inside a mapping / region most of the time. */
static uint64_t dev_addr(struct fz *z, uint8_t sel, uint8_t ob)
{
	if (iommu_on(z) && (sel & 0xc0) == 0xc0) {
		struct map_list l = { .n = 0 };

		iodma_domain_for_each_mapping(z->dom, 0, UINT64_MAX, list_cb, &l);
		if (l.n) {
			const struct iodma_map_event *e = &l.ev[sel % l.n];

			return e->iova + ((uint64_t)ob * 61) % e->len;
		}
	}
	if (!iommu_on(z) && (sel & 0x80) && z->nreg) {
		const struct sreg *g = &z->reg[sel % z->nreg];

		return g->gpa + ((uint64_t)ob * 61) % g->size;
	}
	return plausible(z, iommu_on(z) ? K_IOVA : K_GPA, sel) + ob;
}

static void drain_faults(struct fz *z)
{
	struct iodma_fault f[16];

	while (iodma_fault_pop(z->dom, f, 16))
		;
}

/* Does the oracle give every byte of [iova, iova + len) with @perm? */
static bool oracle_all(struct fz *z, uint64_t iova, uint64_t len, uint32_t perm)
{
	for (uint64_t a = iova;; a = (a | (PG - 1)) + 1) {
		if (!oracle(z, a, perm, NULL))
			return false;
		if ((a | (PG - 1)) >= iova + len - 1)
			return true;
	}
}

static void dev_translate(struct fz *z)
{
	uint8_t sel = fuzz_u8(&z->r), ob = fuzz_u8(&z->r), lb = fuzz_u8(&z->r), pb = fuzz_u8(&z->r);
	uint32_t perm = 1 + pb % 3;
	uint64_t iova = dev_addr(z, sel, ob), len = 1 + ((uint64_t)lb * 97) % (3 * PG);
	struct iodma_region_info r[MAX_REGS];
	struct iodma_slice s[8];
	struct iodma_fault f = { 0 };
	uint64_t at = iova;
	size_t nr = 0, nreg;
	int ret;

	if (iova > UINT64_MAX - len)
		return;
	iodma_access_begin();
	ret = iodma_translate(z->dom, iova, len, perm, s, 8, &nr, &f);
	CHECK(ret == 0 || ret == -EFAULT || ret == -EACCES || ret == -E2BIG,
	      "translate: %d", ret);
	CHECK(nr <= 8);
	nreg = iodma_memory_get_regions(z->mem, r, MAX_REGS);
	for (size_t i = 0; i < nr; i++) {
		bool in = false;

		CHECK(s[i].len > 0 && s[i].len <= iova + len - at);
		/* Inside one region's host mapping... */
		for (size_t j = 0; j < nreg && j < MAX_REGS; j++)
			if ((uint8_t *)s[i].va >= (uint8_t *)r[j].va &&
			    (uint8_t *)s[i].va + s[i].len <= (uint8_t *)r[j].va + r[j].len)
				in = true;
		CHECK(in, "slice %p+%#llx outside every region", s[i].va,
		      (unsigned long long)s[i].len);
		/* ... exactly where the mapping and the region say, page by page. */
		for (uint64_t off = 0; off < s[i].len; off = ((at + off) | (PG - 1)) + 1 - at) {
			uint64_t gpa;
			uint8_t *want = oracle(z, at + off, perm, &gpa);
			uint8_t *view;

			CHECK(want == (uint8_t *)s[i].va + off,
			      "iova %#llx: slice gives %p, mapping says %p",
			      (unsigned long long)(at + off),
			      (void *)((uint8_t *)s[i].va + off), (void *)want);
			if (perm & IODMA_PERM_WRITE) {
				/* The device writes; the front end sees it. */
				*want = ++z->token;
				view = fe_view(z, gpa);
				if (view)
					CHECK(*view == z->token, "write not in the memfd");
				check_logged(z, gpa, 1);
			} else {
				volatile uint8_t x = *want;

				(void)x;
			}
		}
		at += s[i].len;
	}
	if (ret == 0) {
		CHECK(at == iova + len);
		vu_fuzz_stats.xlate_ok++;
	} else if (ret == -E2BIG) {
		CHECK(nr == 8);
	} else {
		vu_fuzz_stats.xlate_fault++;
		CHECK(f.iova == at, "fault at %#llx, slices end at %#llx",
		      (unsigned long long)f.iova, (unsigned long long)at);
		CHECK(!oracle(z, f.iova, perm, NULL), "translation of %#llx failed (%d)"
		      " but the mapping allows it", (unsigned long long)f.iova, ret);
	}
	iodma_access_end();
	drain_faults(z);
}

static void dev_copy(struct fz *z)
{
	uint8_t sel = fuzz_u8(&z->r), ob = fuzz_u8(&z->r), lb = fuzz_u8(&z->r), wb = fuzz_u8(&z->r);
	uint64_t iova = dev_addr(z, sel, ob), len = 1 + ((uint64_t)lb * 53) % (3 * PG);
	bool write = wb & 1;
	uint32_t perm = write ? IODMA_PERM_WRITE : IODMA_PERM_READ;
	static uint8_t buf[3 * PG], back[3 * PG];
	bool ok;
	int ret;

	if (iova > UINT64_MAX - len)
		return;
	ok = oracle_all(z, iova, len, perm);
	for (uint64_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(z->token + i * 7);
	z->token++;
	ret = write ? iodma_write(z->dom, iova, buf, len) :
		      iodma_read(z->dom, iova, back, len);
	CHECK(ret == 0 || ret == -EFAULT || ret == -EACCES || ret == -ENOMEM,
	      "copy: %d", ret);
	CHECK((ret == 0) == ok || (ret == -ENOMEM && ok),
	      "copy of %#llx+%#llx: %d, the mappings say %s", (unsigned long long)iova,
	      (unsigned long long)len, ret, ok ? "yes" : "no");
	if (ret == 0) {
		/* Read what the oracle names; a write landed there (the last
		 * page written to a host page wins: IOVAs may alias) and is
		 * logged. */
		uint8_t *host[8];
		uint64_t at[8], gpa[8];
		size_t n = 0;

		for (uint64_t a = iova; a - iova < len && n < 8; a = (a | (PG - 1)) + 1) {
			host[n] = oracle(z, a, perm, &gpa[n]);
			CHECK(host[n] != NULL);
			at[n++] = a;
		}
		for (size_t i = 0; i < n; i++) {
			bool later = false;

			for (size_t j = i + 1; j < n; j++)
				if (((uintptr_t)host[j] & ~(PG - 1)) ==
				    ((uintptr_t)host[i] & ~(PG - 1)))
					later = true;
			if (!write)
				CHECK(back[at[i] - iova] == *host[i], "read the wrong bytes");
			else if (!later)
				CHECK(*host[i] == buf[at[i] - iova], "write went elsewhere");
			if (write)
				check_logged(z, gpa[i], 1);
		}
	}
	drain_faults(z);
}

static void dev_log_used(struct fz *z)
{
	uint32_t ring = fuzz_u8(&z->r) % (z->rings + 1);
	uint64_t off = (uint64_t)fuzz_u8(&z->r) * 8, len = 1 + fuzz_u8(&z->r) % 16;
	int ret = iodma_vhost_user_log_used(z->vu, ring, off, len);
	struct ring_snap s;

	/* -ERANGE is "a defence only": handle() refuses every ring and log
	 * that would allow it.  With the IOMMU the used ring is logged
	 * through its IOVA, which may not be mapped (-EFAULT / -EACCES). */
	CHECK(ret == 0 || ret == -EINVAL ||
	      (iommu_on(z) && (ret == -EFAULT || ret == -EACCES)),
	      "log_used: %d", ret);
	drain_faults(z);
	if (ret || ring >= z->rings || iommu_on(z))
		return;
	ring_get(z, ring, &s);
	if (s.addr_flags & (1u << VHOST_VRING_F_LOG))
		check_logged(z, s.log_guest_addr + off, len);
}

static void dev_log_write(struct fz *z)
{
	uint8_t sel = fuzz_u8(&z->r), ob = fuzz_u8(&z->r), lb = fuzz_u8(&z->r);
	uint64_t iova = dev_addr(z, sel, ob), len = 1 + lb * 31u, gpa;
	int ret = iodma_vhost_user_log_write(z->vu, iova, len);

	CHECK(ret == 0 || ret == -EINVAL || ret == -EFAULT || ret == -EACCES,
	      "log_write: %d", ret);
	if (ret == 0 && oracle(z, iova, IODMA_PERM_WRITE, &gpa))
		check_logged(z, gpa, 1);
	drain_faults(z);
}

static void dev_miss(struct fz *z)
{
	uint8_t sel = fuzz_u8(&z->r), ab = fuzz_u8(&z->r);
	uint64_t iova = dev_addr(z, sel, 0);
	uint32_t perm = 1 + ab % 3;
	int ret;

	if (ab & 0x80) {
		/* The front end acks ahead of time (0 or an error, or junk). */
		struct {
			struct vu_header h;
			uint64_t v;
		} __attribute__((packed)) a = {
			{ VU_BACKEND_IOTLB_MSG, (ab & 0x40) ? 0x7 : VU_VERSION | VU_FLAG_REPLY, 8 },
			(ab & 0x20) ? 5 : 0 };

		CHECK(send(z->sock[0], &a, sizeof(a), MSG_DONTWAIT | MSG_NOSIGNAL) ==
		      (ssize_t)sizeof(a));
	}
	ret = iodma_vhost_user_iotlb_miss(z->vu, iova, perm);
	CHECK(ret == 0 || ret == -EINVAL || ret == -ENOTCONN || ret == -EPERM ||
	      ret == -ETIMEDOUT || ret == -EIO || ret == -EPROTO || ret == -ENOTSOCK ||
	      ret == -EPIPE || ret == -ECONNRESET || ret == -EAGAIN || ret == -EBADF,
	      "miss: %d", ret);
}

static void device(struct fz *z)
{
	uint8_t d = fuzz_u8(&z->r);

	for (int i = 0; i < (d & 3); i++)
		dev_translate(z);
	if (d & 4)
		dev_miss(z);
	if (d & 8)
		dev_log_used(z);
	if (d & 0x10)
		dev_copy(z);
	if (d & 0x20)
		dev_log_write(z);
	drain_channel(z);
	if (d & 0x40)
		harvest(z);
}

/* ---- callbacks ------------------------------------------------------------------------ */

static int cb_vring_fd(void *arg, uint32_t vring, uint32_t kind, int fd)
{
	struct fz *z = arg;

	CHECK(vring < z->rings && kind < 3);
	if (z->cb_refuse)
		return -EBUSY;
	if (z->cb_fd[vring][kind] >= 0)
		close(z->cb_fd[vring][kind]);
	z->cb_fd[vring][kind] = fd == BAD_FD ? -1 : fd;
	return 0;
}

static int cb_vring_stop(void *arg, uint32_t vring, uint32_t *avail)
{
	struct fz *z = arg;

	CHECK(vring < z->rings);
	if (z->cb_refuse)
		return -EBUSY;
	*avail += 1;
	return 0;
}

static int cb_get_config(void *arg, uint32_t off, void *buf, uint32_t len)
{
	struct fz *z = arg;

	CHECK(len > 0 && len <= VU_CONFIG_MAX);
	if (off + len > 64 || z->cb_refuse)
		return -EINVAL;
	memset(buf, (int)off, len);
	return 0;
}

static int cb_set_config(void *arg, uint32_t off, const void *buf, uint32_t len,
			 uint32_t flags)
{
	struct fz *z = arg;

	CHECK(len > 0 && len <= VU_CONFIG_MAX && flags <= 1 && buf);
	return off + len > 64 || z->cb_refuse ? -EINVAL : 0;
}

static const struct iodma_vhost_user_ops fuzz_ops = {
	.vring_fd = cb_vring_fd, .vring_stop = cb_vring_stop,
	.get_config = cb_get_config, .set_config = cb_set_config,
};

/* ---- one message ------------------------------------------------------------------------ */

static bool implemented(struct fz *z, uint32_t req)
{
	switch (req) {
	case VU_GET_FEATURES: case VU_SET_FEATURES: case VU_SET_OWNER:
	case VU_RESET_OWNER: case VU_SET_MEM_TABLE: case VU_SET_LOG_BASE:
	case VU_SET_LOG_FD: case VU_SET_VRING_NUM: case VU_SET_VRING_ADDR:
	case VU_SET_VRING_BASE: case VU_GET_VRING_BASE: case VU_SET_VRING_KICK:
	case VU_SET_VRING_CALL: case VU_SET_VRING_ERR:
	case VU_GET_PROTOCOL_FEATURES: case VU_SET_PROTOCOL_FEATURES:
	case VU_GET_QUEUE_NUM: case VU_SET_VRING_ENABLE:
	case VU_SET_BACKEND_REQ_FD: case VU_IOTLB_MSG: case VU_GET_MAX_MEM_SLOTS:
	case VU_ADD_MEM_REG: case VU_REM_MEM_REG:
		return true;
	case VU_GET_CONFIG: case VU_SET_CONFIG:
		return z->ops;
	default:
		return false;
	}
}

static bool has_own_reply(uint32_t req)
{
	return req == VU_GET_FEATURES || req == VU_GET_PROTOCOL_FEATURES ||
	       req == VU_GET_QUEUE_NUM || req == VU_GET_MAX_MEM_SLOTS ||
	       req == VU_GET_VRING_BASE || req == VU_SET_LOG_BASE ||
	       req == VU_IOTLB_MSG || req == VU_GET_CONFIG;
}

static bool documented_error(int ret)
{
	switch (-ret) {
	case EINVAL: case EPROTO: case EBADMSG: case EEXIST: case ENOSPC:
	case EFAULT: case ENOENT: case ERANGE: case EPERM: case ENOMEM:
	case ENOTSUP:
	/* mmap's (bad fd, not mappable, too short), the callbacks' */
	case EBADF: case ENODEV: case EACCES: case EOVERFLOW: case EBUSY:
		return true;
	default:
		return false;
	}
}

static uint64_t u64_at(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

/* What an accepted message must have done (the payload as sent). */
static void check_accepted(struct fz *z, uint32_t req, const uint8_t *p,
			   uint32_t size, const ino_t *ino, const struct snap *before)
{
	switch (req) {
	case VU_SET_FEATURES:
	case VU_SET_PROTOCOL_FEATURES: {
		uint64_t f, pr;

		iodma_vhost_user_get_features(z->vu, &f, &pr);
		CHECK((req == VU_SET_FEATURES ? f : pr) == u64_at(p));
		break;
	}
	case VU_SET_MEM_TABLE: {
		struct vu_mem_table t;

		memcpy(&t, p, 8);
		CHECK(iodma_domain_nr_mappings(z->dom) == 0, "IOTLB kept over a new table");
		z->nreg = 0;
		for (uint32_t i = 0; i < t.nregions; i++) {
			struct vu_mem_region g;

			memcpy(&g, p + 8 + 32 * i, 32);
			z->reg[z->nreg++] = (struct sreg){ g.guest_addr, g.size,
							   g.user_addr, g.mmap_offset,
							   ino[i] };
		}
		if (t.nregions)
			vu_fuzz_stats.ok_mem_table++;
		break;
	}
	case VU_ADD_MEM_REG: {
		struct vu_mem_region g;

		memcpy(&g, p + 8, 32);
		CHECK(z->nreg < MAX_REGS);
		z->reg[z->nreg++] = (struct sreg){ g.guest_addr, g.size, g.user_addr,
						   g.mmap_offset, ino[0] };
		vu_fuzz_stats.ok_add_reg++;
		break;
	}
	case VU_REM_MEM_REG: {
		struct vu_mem_region g;
		struct map_list l = { .n = 0 };
		size_t i;

		memcpy(&g, p + 8, 32);
		for (i = 0; i < z->nreg; i++)
			if (z->reg[i].gpa == g.guest_addr && z->reg[i].size == g.size &&
			    z->reg[i].uaddr == g.user_addr)
				break;
		CHECK(i < z->nreg, "removed a region the front end never added");
		z->reg[i] = z->reg[--z->nreg];
		/* No mapping into it is left. */
		iodma_domain_for_each_mapping(z->dom, 0, UINT64_MAX, list_cb, &l);
		for (size_t k = 0; k < l.n; k++)
			CHECK(l.ev[k].gpa + l.ev[k].len <= g.guest_addr ||
			      l.ev[k].gpa >= g.guest_addr + g.size);
		vu_fuzz_stats.ok_rem_reg++;
		break;
	}
	case VU_SET_LOG_BASE: {
		struct vu_log_desc d;

		memcpy(&d, p, sizeof(d));
		z->log_set = true;
		z->log_set_ino = ino[0];
		z->log_off = d.mmap_offset;
		z->log_bytes = d.mmap_size;
		vu_fuzz_stats.ok_log_base++;
		break;
	}
	case VU_IOTLB_MSG: {
		struct vhost_iotlb_msg m;

		memcpy(&m, p, sizeof(m));
		if (m.type == VHOST_IOTLB_UPDATE) {
			/* Page by page: to the region of its user address, with
			 * its permission. */
			uint64_t pages = m.size / PG, step = pages > 8 ? pages / 8 : 1;

			for (uint64_t i = 0; i < pages; i += step) {
				uint64_t ua = m.uaddr + i * PG, gpa = 0, g2;
				struct iodma_region_info info;
				struct iodma_slice s;
				size_t nr;
				bool found = false;

				for (size_t k = 0; k < z->nreg; k++)
					if (ua >= z->reg[k].uaddr &&
					    ua - z->reg[k].uaddr < z->reg[k].size) {
						gpa = z->reg[k].gpa + (ua - z->reg[k].uaddr);
						found = true;
					}
				CHECK(found, "UPDATE of user %#llx outside every region",
				      (unsigned long long)ua);
				CHECK(oracle_gpa(z, m.iova + i * PG, m.perm, &g2) && g2 == gpa,
				      "iova %#llx maps to gpa %#llx, user address says %#llx",
				      (unsigned long long)(m.iova + i * PG),
				      (unsigned long long)g2, (unsigned long long)gpa);
				CHECK(iodma_memory_find(z->mem, gpa, &info) == 0);
				iodma_access_begin();
				CHECK(iodma_translate(z->dom, m.iova + i * PG, 1, m.perm, &s, 1,
						      &nr, NULL) == 0 && nr == 1 &&
				      s.va == (uint8_t *)info.va + (gpa - info.gpa));
				iodma_access_end();
				if (m.perm != IODMA_PERM_RW)
					CHECK(iodma_check_range(z->dom, m.iova + i * PG, 1,
								IODMA_PERM_RW ^ m.perm) == -EACCES);
			}
			vu_fuzz_stats.ok_update++;
		} else {
			struct map_list l = { .n = 0 };

			if (m.size == 0 && m.iova == 0)
				CHECK(iodma_domain_nr_mappings(z->dom) == 0);
			else
				iodma_domain_for_each_mapping(z->dom, m.iova, m.size,
							      list_cb, &l);
			CHECK(l.n == 0, "INVALIDATE left %zu mappings in its range", l.n);
			vu_fuzz_stats.ok_invalidate++;
		}
		drain_faults(z);
		break;
	}
	case VU_SET_VRING_NUM:
	case VU_SET_VRING_BASE:
	case VU_SET_VRING_ENABLE:
	case VU_GET_VRING_BASE: {
		struct vhost_vring_state s;
		struct ring_snap r;

		memcpy(&s, p, sizeof(s));
		CHECK(s.index < z->rings);
		ring_get(z, s.index, &r);
		if (req == VU_SET_VRING_NUM)
			CHECK(r.num == s.num);
		else if (req == VU_SET_VRING_BASE)
			CHECK(r.base == s.num);
		else if (req == VU_SET_VRING_ENABLE)
			CHECK(r.enabled == (s.num || !(before->feat & F_PROTO)));
		else
			CHECK(!r.started);
		break;
	}
	case VU_SET_VRING_ADDR: {
		struct vhost_vring_addr a;
		struct ring_snap r;

		memcpy(&a, p, sizeof(a));
		CHECK(a.index < z->rings);
		ring_get(z, a.index, &r);
		CHECK(r.addr_flags == a.flags && r.log_guest_addr == a.log_guest_addr);
		CHECK(r.addr_valid, "ring %u: address accepted but not valid", a.index);
		if (iommu_on(z))
			CHECK(r.desc == a.desc_user_addr && r.used == a.used_user_addr);
		break;
	}
	case VU_SET_VRING_KICK: {
		struct ring_snap r;
		uint32_t idx = (uint32_t)(u64_at(p) & VU_VRING_IDX_MASK);

		CHECK(idx < z->rings);
		ring_get(z, idx, &r);
		CHECK(r.started);
		break;
	}
	default:
		break;
	}
	(void)size;
}

/* Send the message over a socketpair as a front end does and receive it
 * with iodma_vhost_user_recv(), as a back end's loop does: the fds become
 * the received copies (ours are closed).  Fds that cannot travel (-1, the
 * bad number) keep the message off the socket. */
static int through_socket(struct fz *z, struct msg *m, int *fds, int nfds)
{
	union {
		char buf[CMSG_SPACE(8 * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = m->buf, .iov_len = m->len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	uint8_t in[MSG_CAP];
	int got[IODMA_VHOST_USER_MAX_FDS], sv[2], n;
	size_t ngot = IODMA_VHOST_USER_MAX_FDS;
	/* Sometimes a buffer one byte short of the payload. */
	size_t cap = z->msg % 8 == 7 && m->len > 12 ? m->len - 1 : sizeof(in);

	for (int i = 0; i < nfds; i++)
		if (fds[i] < 0 || fds[i] == BAD_FD)
			return nfds;
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	if (nfds) {
		struct cmsghdr *c;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
	}
	CHECK(sendmsg(sv[0], &mh, MSG_NOSIGNAL) == (ssize_t)m->len);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	n = iodma_vhost_user_recv(sv[1], in, cap, got, &ngot);
	close(sv[0]);
	close(sv[1]);
	if (n < 0) {
		/* Too big for the buffer: no fd left open, nothing to handle. */
		CHECK(n == -EMSGSIZE && cap < m->len && ngot == 0, "recv: %d", n);
		memset(m->buf, 0, 12);
		m->len = 0;
		return 0;
	}
	CHECK((size_t)n == m->len && ngot == (size_t)nfds &&
	      memcmp(in, m->buf, m->len) == 0, "recv: %d, %zu fds", n, ngot);
	for (int i = 0; i < nfds; i++)
		fds[i] = got[i];
	return nfds;
}

static int trace = -1; /* IODMA_FUZZ_TRACE set: print every message */

static void one_message(struct fz *z)
{
	struct msg m;
	struct snap before, after;
	uint8_t ctl = fuzz_u8(&z->r);
	int fds[16], nfds = 0;
	ino_t ino[16];
	unsigned long nth = 0;
	uint32_t size;
	struct vu_header h;
	struct iodma_vhost_user_reply reply;
	bool need_ack, header_ok;
	unsigned int fdmode = ctl >> 5, x = (ctl >> 3) & 3;
	int ret;

	memset(&m, 0, sizeof(m));
	if (x == 3)
		nth = 1 + fuzz_u8(&z->r) % 32;
	if ((ctl & 3) == 3) {
		/* Raw: the header as the input says. */
		m.req = fuzz_u8(&z->r) % 40;
		h.flags = fuzz_u8(&z->r) % 16;
		size = fuzz_u8(&z->r);
		for (uint32_t i = 0; i < size; i++)
			m.buf[12 + i] = fuzz_u8(&z->r);
		m.want_fds = 0;
		m.kind = natural_kind(m.req);
	} else {
		size = build_structured(z, &m);
		h.flags = VU_VERSION | ((ctl & 4) ? VU_FLAG_NEED_REPLY : 0);
		m.kind = natural_kind(m.req);
	}
	h.request = m.req;
	h.size = size;
	m.len = 12 + size;
	if (x == 2) {
		/* A size that does not match: in the header or in the length. */
		uint8_t d = fuzz_u8(&z->r);
		int64_t delta = (int64_t)(d >> 1) - 64;

		if (d & 1) {
			int64_t s = (int64_t)size + delta;

			h.size = (uint32_t)(s < 0 ? 0 : s > 500 ? 500 : s);
		} else {
			int64_t l = (int64_t)m.len + (delta % 9);

			m.len = (size_t)(l < 0 ? 0 : l > MSG_CAP ? MSG_CAP : l);
		}
	}
	memcpy(m.buf, &h, 12);
	z->req = m.req;

	switch (fdmode) {
	case 5:
		nfds = 0;
		break;
	case 6:
		nfds = (int)m.want_fds + 1;
		break;
	case 7:
		nfds = fuzz_u8(&z->r) % 11;
		break;
	default:
		nfds = (int)m.want_fds;
		break;
	}
	if (nfds > 10)
		nfds = 10;
	snap_take(z, &before, true);
	for (int i = 0; i < nfds; i++) {
		uint8_t k = fuzz_u8(&z->r);
		int kind = k < 0xc0 ? m.kind : k % 8;

		fds[i] = make_fd(z, kind);
		ino[i] = ino_of(fds[i]);
	}
	if (x == 1 && m.len == 12 + (uint64_t)h.size && nfds <= 8)
		nfds = through_socket(z, &m, fds, nfds);
	need_ack = (h.flags & VU_FLAG_NEED_REPLY) &&
		   (before.prot & (1ull << VU_PROTOCOL_F_REPLY_ACK));
	header_ok = m.len >= 12 && (h.flags & 3) == VU_VERSION && !(h.flags & ~0xbu) &&
		    m.len == 12 + (uint64_t)h.size && h.size <= IODMA_VHOST_USER_MSG_MAX - 12 &&
		    nfds <= (int)IODMA_VHOST_USER_MAX_FDS;

	z->cb_refuse = x == 1 && (z->token & 1);
	memset(&reply, 0xa5, sizeof(reply));
	if (nth)
		iodma_test_fail_alloc(nth);
	ret = iodma_vhost_user_handle(z->vu, m.buf, m.len, fds, (size_t)nfds, &reply);
	iodma_test_fail_alloc(0);
	z->ret = ret;
	vu_fuzz_stats.messages++;

	if (trace < 0)
		trace = getenv("IODMA_FUZZ_TRACE") != NULL;
	if (trace)
		fprintf(stderr, "  #%u request %u flags %#x size %u len %zu fds %d -> %d\n",
			z->msg, m.req, h.flags, h.size, m.len, nfds, ret);
	if (trace) {
		for (uint32_t i = 0; i + 8 <= size; i += 8)
			fprintf(stderr, "%s%#llx", i ? " " : "    ",
				(unsigned long long)u64_at(m.buf + 12 + i));
		if (size >= 8)
			fprintf(stderr, "\n");
	}
	CHECK(ret == 0 || documented_error(ret), "undocumented error");
	if (ret == -ENOTSUP) {
		CHECK(header_ok && !implemented(z, m.req), "-ENOTSUP for a request it has");
		for (int i = 0; i < nfds; i++)
			if (fds[i] >= 0 && fds[i] != BAD_FD)
				close(fds[i]);
	}
	/* The reply. */
	CHECK(reply.len <= IODMA_VHOST_USER_REPLY_MAX);
	if (reply.len) {
		struct vu_header rh;

		CHECK(reply.len >= 12);
		memcpy(&rh, reply.msg, 12);
		CHECK(rh.request == m.req && rh.flags == (VU_VERSION | VU_FLAG_REPLY) &&
		      rh.size == reply.len - 12, "reply %u/%#x/%u", rh.request, rh.flags,
		      rh.size);
	}
	if (header_ok && m.req == VU_IOTLB_MSG)
		CHECK(reply.len == 20 && u64_at(reply.msg + 12) == (uint64_t)-ret,
		      "IOTLB_MSG reply");
	if (header_ok && need_ack)
		CHECK(reply.len > 0, "REPLY_ACK asked, nothing to send");
	if (ret == 0 && has_own_reply(m.req))
		CHECK(reply.len > 0);
	if (!header_ok)
		CHECK(ret == -EBADMSG || ret == -EPROTO || ret == -EINVAL);

	if (ret) {
		vu_fuzz_stats.rejected += ret != -ENOTSUP;
		vu_fuzz_stats.enomem += ret == -ENOMEM;
		/* Nothing changed, every fd it carried is closed (the
		 * documented exception: a table that failed for memory after
		 * the old one went loses the IOTLB mappings). */
		snap_take(z, &after, true);
		snap_same(&before, &after,
			  !(ret == -ENOMEM && m.req == VU_SET_MEM_TABLE));
	} else {
		vu_fuzz_stats.handled_ok++;
		check_accepted(z, m.req, m.buf + 12, h.size, ino, &before);
		/* The GET_* replies say what the object was made with. */
		if (m.req == VU_GET_FEATURES)
			CHECK(reply.len == 20 && (u64_at(reply.msg + 12) &
			      (F_IOMMU | F_LOG | F_PROTO)) == (F_IOMMU | F_LOG | F_PROTO));
		if (m.req == VU_GET_PROTOCOL_FEATURES)
			CHECK(reply.len == 20 && !!(u64_at(reply.msg + 12) &
			      (1ull << VU_PROTOCOL_F_CONFIG)) == z->ops);
		if (m.req == VU_GET_QUEUE_NUM)
			CHECK(reply.len == 20 && u64_at(reply.msg + 12) == z->rings);
		if (m.req == VU_GET_MAX_MEM_SLOTS)
			CHECK(reply.len == 20 && u64_at(reply.msg + 12) == z->slots);
		if (m.req == VU_GET_VRING_BASE && reply.len == 20) {
			struct vhost_vring_state s;

			memcpy(&s, reply.msg + 12, 8);
			CHECK(s.index < z->rings);
		}
	}
	check_state(z);
	device(z);
}

/* ---- a concurrent device (vu_fuzz_threads) --------------------------------------------- */

/*
 * A second thread translates while the main thread handles messages, as a
 * back end's queue thread does: device reads through slices inside access
 * sections (a slice of memory unmapped under it faults: SIGSEGV, ASan), and
 * misses that wait in the resolver for an UPDATE the main thread may send
 * (or for a quiesce to release them).  It only reads guest memory and never
 * maps, so the main thread's checks stay exact.
 */
struct devthr {
	struct iodma_domain *dom;
	atomic_bool stop;
	uint64_t rng;
	uint64_t runs;
	pthread_t t;
};

/* Guest memory races with the main thread's device writes by nature (it
 * is DMA): keep these reads out of ThreadSanitizer's view; the library's
 * own accesses stay checked. */
#if defined(__SANITIZE_THREAD__)
#define NO_TSAN __attribute__((no_sanitize_thread))
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define NO_TSAN __attribute__((no_sanitize("thread")))
#endif
#endif
#ifndef NO_TSAN
#define NO_TSAN
#endif

NO_TSAN static void touch(const struct iodma_slice *s)
{
	volatile const uint8_t *p = s->va;

	(void)p[0];
	(void)p[s->len - 1];
}

static void *dev_thread(void *arg)
{
	struct devthr *d = arg;

	while (!atomic_load(&d->stop)) {
		struct iodma_slice s[8];
		struct map_list l = { .n = 0 };
		uint64_t r, iova, len;
		size_t nr = 0;

		d->rng ^= d->rng >> 12;
		d->rng ^= d->rng << 25;
		d->rng ^= d->rng >> 27;
		r = d->rng * 0x2545f4914f6cdd1dull;
		iova = ((r >> 8) % 256) * 0x4000;
		len = 1 + (r >> 32) % (2 * PG);
		if (r & 1) {
			iodma_domain_for_each_mapping(d->dom, 0, UINT64_MAX, list_cb, &l);
			if (l.n) {
				const struct iodma_map_event *e = &l.ev[(r >> 8) % l.n];

				iova = e->iova + (r >> 20) % e->len;
			}
		}
		iodma_access_begin();
		iodma_translate(d->dom, iova, len, IODMA_PERM_READ, s, 8, &nr, NULL);
		for (size_t i = 0; i < nr; i++)
			touch(&s[i]);
		iodma_access_end();
		d->runs++;
		if ((r & 0x30) == 0)
			sched_yield();
	}
	return NULL;
}

/* ---- one input -------------------------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint32_t slots[] = { 1, 2, 3, 4, 6, 8, 16, 32 };
	struct iodma_vhost_user_opts o = IODMA_OPTS_INIT(struct iodma_vhost_user_opts);
	struct devthr dt;
	struct fz z;
	uint8_t cfg;
	int base;

	if (size == 0)
		return 0;
	CHECK(fcntl(BAD_FD, F_GETFD) == -1); /* the "bad number" is no fd */
	base = count_fds();
	memset(&z, 0, sizeof(z));
	cur = &z;
	fuzz_fail_context = fail_context;
	z.r = (struct fuzz_in){ data, size };
	cfg = fuzz_u8(&z.r);
	z.rings = 1 + (cfg & 3);
	z.slots = slots[(cfg >> 2) & 7];
	z.ops = cfg & 0x20;
	z.max_maps = (cfg & 0x80) ? 3 : 0;
	for (int i = 0; i < MAX_RINGS; i++)
		z.cb_fd[i][0] = z.cb_fd[i][1] = z.cb_fd[i][2] = -1;
	o.max_vrings = z.rings;
	o.max_mem_slots = z.slots;
	o.max_mappings = z.max_maps;
	o.device_features = (cfg & 0x40) ? F_V1 : 0;
	o.miss_timeout_ns = vu_fuzz_threads ? MISS_NS_MT : MISS_NS;
	o.ops = z.ops ? &fuzz_ops : NULL;
	o.ops_arg = &z;
	CHECK(iodma_vhost_user_create(&o, &z.vu) == 0);
	z.dom = iodma_vhost_user_domain(z.vu);
	z.mem = iodma_vhost_user_memory(z.vu);

	z.ram_fd = memfd_create("fuzz-ram", MFD_CLOEXEC);
	z.log_fd = memfd_create("fuzz-log", MFD_CLOEXEC);
	CHECK(z.ram_fd >= 0 && z.log_fd >= 0);
	CHECK(ftruncate(z.ram_fd, RAM_SIZE) == 0 && ftruncate(z.log_fd, LOG_SIZE) == 0);
	z.ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, z.ram_fd, 0);
	z.logv = mmap(NULL, LOG_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, z.log_fd, 0);
	CHECK(z.ram != MAP_FAILED && z.logv != MAP_FAILED);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, z.sock) == 0);
	z.ram_ino = ino_of(z.ram_fd);
	z.log_ino = ino_of(z.log_fd);
	z.sock_ino = ino_of(z.sock[1]);

	if (vu_fuzz_threads) {
		dt.dom = z.dom;
		dt.rng = 0x9e3779b97f4a7c15ull ^ size;
		for (size_t i = 0; i < size && i < 64; i++)
			dt.rng = (dt.rng ^ data[i]) * 0x100000001b3ull;
		dt.rng |= 1;
		atomic_init(&dt.stop, false);
		dt.runs = 0;
		CHECK(pthread_create(&dt.t, NULL, dev_thread, &dt) == 0);
	}
	for (z.msg = 0; z.msg < MAX_MSGS && z.r.left; z.msg++)
		one_message(&z);
	if (vu_fuzz_threads) {
		atomic_store(&dt.stop, true);
		CHECK(pthread_join(dt.t, NULL) == 0);
		vu_fuzz_stats.thread_xlates += dt.runs;
		drain_faults(&z);
	}

	iodma_vhost_user_destroy(z.vu);
	for (int i = 0; i < MAX_RINGS; i++)
		for (int k = 0; k < 3; k++)
			if (z.cb_fd[i][k] >= 0)
				close(z.cb_fd[i][k]);
	munmap(z.ram, RAM_SIZE);
	munmap(z.logv, LOG_SIZE);
	close(z.ram_fd);
	close(z.log_fd);
	close(z.sock[0]);
	close(z.sock[1]);
	CHECK(count_fds() == base, "%d fds before the input, %d after", base, count_fds());
	vu_fuzz_stats.inputs++;
	cur = NULL;
	return 0;
}

/* ---- seeds ---------------------------------------------------------------------------------- */

/* An encoder for the format above, to write the seed corpus. */
struct enc {
	uint8_t b[2048];
	size_t n;
};

static void e8(struct enc *e, unsigned int v)
{
	if (e->n < sizeof(e->b))
		e->b[e->n++] = (uint8_t)v;
}

static void elit(struct enc *e, uint64_t v)
{
	e8(e, 0xf3);
	for (int i = 0; i < 8; i++)
		e8(e, (uint8_t)(v >> (8 * i)));
}

static unsigned int ereq(uint32_t req)
{
	for (unsigned int i = 0; i < NREQ; i++)
		if (req_table[i] == req)
			return i;
	abort();
}

/* ctl bits every structured record gets (0x08: through the socket). */
static unsigned int ectl;

/* Start a structured record: ctl (fd mode "natural", need_reply), request. */
static void emsg(struct enc *e, uint32_t req, bool need)
{
	e8(e, (need ? 4 : 0) | ectl);
	e8(e, ereq(req));
}

static void eregion(struct enc *e, uint64_t gpa, uint64_t size, uint64_t uaddr,
		    uint64_t off)
{
	elit(e, gpa);
	elit(e, size);
	elit(e, uaddr);
	elit(e, off);
}

/* The fds' kind bytes (0: natural) and the device byte. */
static void eend(struct enc *e, unsigned int nfds, unsigned int dev)
{
	for (unsigned int i = 0; i < nfds; i++)
		e8(e, 0);
	e8(e, dev);
}

static void eu64msg(struct enc *e, uint32_t req, uint64_t v, unsigned int dev)
{
	emsg(e, req, true);
	elit(e, v);
	eend(e, 0, dev);
}

static void eiotlb(struct enc *e, bool update, uint64_t iova, uint64_t size,
		   uint64_t uaddr, unsigned int perm, unsigned int dev)
{
	emsg(e, VU_IOTLB_MSG, true);
	e8(e, update ? 0 : 5);
	elit(e, iova);
	elit(e, size);
	elit(e, uaddr);
	e8(e, perm);
	eend(e, 0, dev);
}

static void evring(struct enc *e, uint32_t req, uint32_t idx, uint32_t num)
{
	emsg(e, req, true);
	elit(e, idx);
	elit(e, num);
	eend(e, 0, 0);
}

static void eaddr(struct enc *e, uint32_t idx, uint32_t flags, uint64_t desc,
		  uint64_t used, uint64_t avail, uint64_t log)
{
	emsg(e, VU_SET_VRING_ADDR, true);
	elit(e, idx);
	elit(e, flags);
	elit(e, desc);
	elit(e, used);
	elit(e, avail);
	elit(e, log);
	eend(e, 0, 0);
}

/* A device byte with one translation of a mapped address, then its
 * four bytes (select a mapping, offset, length, perm = RW). */
static void edev_xlate(struct enc *e, unsigned int extra)
{
	e->n--; /* replace the device byte eend() wrote */
	e8(e, 1 | extra);
	e8(e, 0xc0);
	e8(e, 0x10);
	e8(e, 0x40);
	e8(e, 2);
	if (extra & 4) {            /* a miss: address, perm read, acked ahead */
		e8(e, 0x20);
		e8(e, 0x80);
	}
	if (extra & 8) {            /* log_used: ring 0, offset, len */
		e8(e, 0);
		e8(e, 1);
		e8(e, 4);
	}
	if (extra & 0x10) {         /* a write copy */
		e8(e, 0xc0);
		e8(e, 0x20);
		e8(e, 0x80);
		e8(e, 1);
	}
}

static void etable(struct enc *e, bool need, unsigned int n, const uint64_t (*r)[4],
		   int fds_mode)
{
	e8(e, (need ? 4 : 0) | (fds_mode << 5) | ectl);
	e8(e, ereq(VU_SET_MEM_TABLE));
	e8(e, n);
	for (unsigned int i = 0; i < n; i++)
		eregion(e, r[i][0], r[i][1], r[i][2], r[i][3]);
}

static int save(const char *dir, const char *name, const struct enc *e)
{
	return fuzz_write_file(dir, name, e->b, e->n);
}

/* Features with the IOMMU, every protocol feature, a two-region table. */
static void setup(struct enc *e, uint8_t cfg, uint64_t features)
{
	static const uint64_t r2[2][4] = {
		{ 0x100000, 0x10000, UBASE, 0 },
		{ 0x400000, 0x20000, UBASE + 0x10000, 0x10000 },
	};

	e->n = 0;
	e8(e, cfg);
	emsg(e, VU_GET_FEATURES, false);
	eend(e, 0, 0);
	eu64msg(e, VU_SET_FEATURES, features, 0);
	emsg(e, VU_GET_PROTOCOL_FEATURES, false);
	eend(e, 0, 0);
	eu64msg(e, VU_SET_PROTOCOL_FEATURES,
		(1ull << VU_PROTOCOL_F_MQ) | (1ull << VU_PROTOCOL_F_LOG_SHMFD) |
		(1ull << VU_PROTOCOL_F_REPLY_ACK) | (1ull << VU_PROTOCOL_F_BACKEND_REQ) |
		(1ull << VU_PROTOCOL_F_CONFIGURE_MEM_SLOTS), 0);
	emsg(e, VU_SET_OWNER, false);
	eend(e, 0, 0);
	etable(e, true, 2, r2, 0);
	eend(e, 2, 0);
}

int vu_fuzz_write_seeds(const char *dir)
{
	struct enc e;
	int n = 0;

#define SAVE(name) do { if (save(dir, name, &e)) return -1; n++; } while (0)
	/* 1. The QEMU-like session: features, table, IOTLB, rings; then the
	 * same through the socket and iodma_vhost_user_recv(). */
	for (int sock = 0; sock < 2; sock++) {
	ectl = sock ? 0x08 : 0;
	setup(&e, 0x49, F_IOMMU | F_PROTO | F_V1);
	emsg(&e, VU_SET_BACKEND_REQ_FD, true);
	eend(&e, 1, 0);
	evring(&e, VU_SET_VRING_NUM, 0, 256);
	eiotlb(&e, true, 0x7000000, 0x4000, UBASE + 0x2000, 3, 0);
	edev_xlate(&e, 0);
	eiotlb(&e, true, 0x7004000, 0x1000, UBASE + 0x10000, 1, 0);
	edev_xlate(&e, 4);
	eaddr(&e, 0, 0, 0x7000000, 0x7001000, 0x7002000, 0x100000);
	evring(&e, VU_SET_VRING_BASE, 0, 0);
	emsg(&e, VU_SET_VRING_CALL, true);
	elit(&e, 0);
	eend(&e, 1, 0);
	emsg(&e, VU_SET_VRING_KICK, true);
	elit(&e, 0);
	eend(&e, 1, 0);
	evring(&e, VU_SET_VRING_ENABLE, 0, 1);
	eiotlb(&e, false, 0x7000000, 0x1000, 0, 0, 0);
	edev_xlate(&e, 0x10);
	evring(&e, VU_GET_VRING_BASE, 0, 0);
	eiotlb(&e, false, 0, 0, 0, 0, 0);
	SAVE(sock ? "session-iommu-socket" : "session-iommu");
	}
	ectl = 0;

	/* 2. Without the IOMMU: vring addresses are user addresses. */
	setup(&e, 0x49, F_PROTO | F_V1);
	evring(&e, VU_SET_VRING_NUM, 1, 64);
	eaddr(&e, 1, 0, UBASE + 0x1000, UBASE + 0x2000, UBASE + 0x3000, 0x101000);
	edev_xlate(&e, 0x10);
	emsg(&e, VU_SET_VRING_KICK, false);
	elit(&e, 1 | VU_VRING_NOFD_MASK);
	eend(&e, 0, 0);
	SAVE("session-no-iommu");

	/* 3. Migration: the shared log, LOG_ALL, device writes, used ring. */
	setup(&e, 0x0d, F_IOMMU | F_PROTO);
	emsg(&e, VU_SET_LOG_BASE, true);
	elit(&e, 4096);
	elit(&e, 64);
	eend(&e, 1, 0);
	eu64msg(&e, VU_SET_FEATURES, F_IOMMU | F_PROTO | F_LOG, 0);
	eiotlb(&e, true, 0x8000000, 0x8000, UBASE + 0x10000, 3, 0);
	edev_xlate(&e, 0);
	evring(&e, VU_SET_VRING_NUM, 0, 128);
	eaddr(&e, 0, 1u << VHOST_VRING_F_LOG, 0x8000000, 0x8001000, 0x8002000, 0x402000);
	edev_xlate(&e, 0x18);
	eu64msg(&e, VU_SET_FEATURES, F_IOMMU | F_PROTO, 0x40);
	SAVE("migration-log");

	/* 4. Memory slots: add, update into it, remove (which unmaps). */
	setup(&e, 0x1e, F_IOMMU | F_PROTO);
	emsg(&e, VU_GET_MAX_MEM_SLOTS, true);
	eend(&e, 0, 0);
	emsg(&e, VU_ADD_MEM_REG, true);
	e8(&e, 0);
	eregion(&e, 0x800000, 0x10000, UBASE + 0x80000, 0x80000);
	eend(&e, 1, 0);
	eiotlb(&e, true, 0x9000000, 0x10000, UBASE + 0x80000, 2, 0);
	edev_xlate(&e, 0);
	emsg(&e, VU_REM_MEM_REG, true);
	e8(&e, 0);
	eregion(&e, 0x800000, 0x10000, UBASE + 0x80000, 0x80000);
	eend(&e, 0, 0);
	edev_xlate(&e, 0);
	SAVE("mem-slots");

	/* 5. Malformed tables: overlap in guest and in user address, a
	 * missing fd, a size that does not match, a fd too short. */
	setup(&e, 0x09, F_IOMMU | F_PROTO);
	{
		static const uint64_t gov[2][4] = {
			{ 0x800000, 0x10000, UBASE + 0x80000, 0 },
			{ 0x808000, 0x10000, UBASE + 0xa0000, 0x20000 } };
		static const uint64_t uov[2][4] = {
			{ 0x800000, 0x10000, UBASE + 0x80000, 0 },
			{ 0x900000, 0x10000, UBASE + 0x88000, 0x20000 } };
		static const uint64_t one[1][4] = { { 0x800000, 0x10000, UBASE, 0 } };

		etable(&e, true, 2, gov, 0);
		eend(&e, 2, 0);
		etable(&e, true, 2, uov, 0);
		eend(&e, 2, 0);
		etable(&e, true, 2, gov, 7);       /* fd count byte: 1 */
		e8(&e, 1);
		eend(&e, 1, 0);
		etable(&e, true, 1, one, 0);
		e8(&e, 0xc0 | KIND_SMALL);         /* a 4 KiB memfd */
		e8(&e, 0);
		/* size corruption: header says 20 bytes fewer */
		e8(&e, 0x10 | 4);
		e8(&e, ereq(VU_SET_MEM_TABLE));
		e8(&e, 1);
		eregion(&e, 0x800000, 0x10000, UBASE + 0x80000, 0);
		e8(&e, (uint8_t)(((64 - 20) << 1) | 1));
		eend(&e, 1, 0);
	}
	/* Three slots: one more region fits, the next does not. */
	for (int i = 0; i < 2; i++) {
		emsg(&e, VU_ADD_MEM_REG, true);
		e8(&e, 0);
		eregion(&e, 0x800000 + i * 0x100000, 0x10000, UBASE + 0x80000 + i * 0x10000,
			0x80000 + i * 0x10000);
		eend(&e, 1, 0);
	}
	edev_xlate(&e, 0);
	SAVE("bad-tables");

	/* 6. Malformed IOTLB: outside memory, overlap, bad perm/type, an
	 * fd where none belongs, a short payload. */
	setup(&e, 0x09, F_IOMMU | F_PROTO);
	eiotlb(&e, true, 0x7000000, 0x1000, UBASE + 0x80000, 3, 0);
	eiotlb(&e, true, 0x7000000, 0x30000, UBASE + 0x20000, 3, 0);
	eiotlb(&e, true, 0x7000000, 0x2000, UBASE, 3, 0);
	eiotlb(&e, true, 0x7001000, 0x2000, UBASE + 0x4000, 3, 0);
	eiotlb(&e, true, 0x7000000, 0x2000, UBASE, 1, 0);
	eiotlb(&e, true, 0x7100000, 0x1000, UBASE, 0, 0);
	/* Two pieces (two regions); the second overlaps another mapping:
	 * the first is unmapped again. */
	eiotlb(&e, true, 0x7300000, 0x1000, UBASE + 0x20000, 3, 0);
	eiotlb(&e, true, 0x72f0000, 0x11000, UBASE, 3, 0);
	emsg(&e, VU_IOTLB_MSG, true);
	e8(&e, 7 | (4 << 3));                   /* type 4: ACCESS_FAIL */
	elit(&e, 0x7000000);
	elit(&e, 0x1000);
	elit(&e, UBASE);
	e8(&e, 3);
	eend(&e, 0, 0);
	e8(&e, 6 << 5 | 4);                      /* one fd too many */
	e8(&e, ereq(VU_IOTLB_MSG));
	e8(&e, 0);
	elit(&e, 0x7200000);
	elit(&e, 0x1000);
	elit(&e, UBASE);
	e8(&e, 3);
	eend(&e, 1, 0);
	e8(&e, 0x10 | 4);                        /* 8 bytes short */
	e8(&e, ereq(VU_IOTLB_MSG));
	e8(&e, 0);
	elit(&e, 0x7200000);
	elit(&e, 0x1000);
	elit(&e, UBASE);
	e8(&e, 3);
	e8(&e, (uint8_t)(((64 - 8) << 1) | 1));
	eend(&e, 0, 0);
	edev_xlate(&e, 0x10);
	SAVE("bad-iotlb");

	/* 7. Fault injection: a table, an UPDATE and a log that each meet
	 * a failing allocation. */
	setup(&e, 0x09, F_IOMMU | F_PROTO);
	eiotlb(&e, true, 0x7000000, 0x1000, UBASE, 3, 0);
	{
		static const uint64_t r1[1][4] = { { 0x200000, 0x10000, UBASE + 0x40000, 0x40000 } };

		e8(&e, 0x18 | 4);
		e8(&e, 0);                      /* nth 1 */
		e8(&e, ereq(VU_SET_MEM_TABLE));
		e8(&e, 1);
		eregion(&e, r1[0][0], r1[0][1], r1[0][2], r1[0][3]);
		eend(&e, 1, 0);
	}
	e8(&e, 0x18 | 4);
	e8(&e, 1);                              /* nth 2 */
	e8(&e, ereq(VU_IOTLB_MSG));
	e8(&e, 0);
	elit(&e, 0x7100000);
	elit(&e, 0x2000);
	elit(&e, UBASE + 0x10000);
	e8(&e, 3);
	eend(&e, 0, 0);
	edev_xlate(&e, 0);
	SAVE("fail-alloc");

	/* 8. Raw headers: bad version, reply flag, unknown request with fds. */
	e.n = 0;
	e8(&e, 0x01);
	e8(&e, 3);  e8(&e, VU_SET_OWNER);  e8(&e, 2);  e8(&e, 0); e8(&e, 0);
	e8(&e, 3);  e8(&e, VU_SET_OWNER);  e8(&e, 5);  e8(&e, 0); e8(&e, 0);
	e8(&e, 7 << 5 | 3); e8(&e, 33); e8(&e, 1); e8(&e, 4);
	e8(&e, 1); e8(&e, 2); e8(&e, 3); e8(&e, 4);
	e8(&e, 2); e8(&e, 0); e8(&e, 0); e8(&e, 0);
	SAVE("raw-headers");

	/* 9. Ring fds, config space and callbacks (cfg bit 5: ops). */
	setup(&e, 0x2d, F_PROTO);
	emsg(&e, VU_SET_VRING_ERR, true);
	elit(&e, 1);
	eend(&e, 1, 0);
	emsg(&e, VU_SET_LOG_FD, true);
	eend(&e, 1, 0);
	emsg(&e, VU_GET_CONFIG, true);
	e8(&e, 4); e8(&e, 8); e8(&e, 0);
	eend(&e, 0, 0);
	emsg(&e, VU_SET_CONFIG, true);
	e8(&e, 0); e8(&e, 4); e8(&e, 1);
	eend(&e, 0, 0);
	emsg(&e, VU_RESET_OWNER, true);
	eend(&e, 0, 0);
	emsg(&e, VU_GET_QUEUE_NUM, false);
	eend(&e, 0, 0);
	SAVE("rings-config");
#undef SAVE
	return n;
}

/* ---- for the standalone driver (fuzz_target.h) ------------------------------------------ */

static const long *vu_threads(void)
{
	/* Slower per input (a thread, its waits): fewer by default. */
	static const long counts[3] = { 3000, 600, 200 };

	vu_fuzz_threads = 1;
	return counts;
}

static int vu_summary(long generated)
{
	const struct vu_fuzz_stats *st = &vu_fuzz_stats;

	printf("  messages %llu: accepted %llu, rejected %llu, injected -ENOMEM %llu\n",
	       (unsigned long long)st->messages, (unsigned long long)st->handled_ok,
	       (unsigned long long)st->rejected, (unsigned long long)st->enomem);
	printf("  accepted: %llu tables, %llu ADD_MEM_REG, %llu REM_MEM_REG, %llu UPDATE, "
	       "%llu INVALIDATE, %llu SET_LOG_BASE\n",
	       (unsigned long long)st->ok_mem_table, (unsigned long long)st->ok_add_reg,
	       (unsigned long long)st->ok_rem_reg, (unsigned long long)st->ok_update,
	       (unsigned long long)st->ok_invalidate, (unsigned long long)st->ok_log_base);
	printf("  device: %llu translations, %llu faults, %llu shared-log bits checked\n",
	       (unsigned long long)st->xlate_ok, (unsigned long long)st->xlate_fault,
	       (unsigned long long)st->dirty_checked);
	if (vu_fuzz_threads)
		printf("  device thread: %llu translations\n",
		       (unsigned long long)st->thread_xlates);
	/* A run that never got a table or an UPDATE through tested little. */
	if (generated >= 1000 && (!st->ok_mem_table || !st->ok_update || !st->dirty_checked)) {
		fprintf(stderr, "fuzz-vhost-user: the inputs reached too little state\n");
		return 1;
	}
	return 0;
}

const struct fuzz_target fuzz_target = {
	.name = "fuzz-vhost-user",
	.count = { 20000, 2000, 500 },
	.threads = vu_threads,
	.write_seeds = vu_fuzz_write_seeds,
	.summary = vu_summary,
};
