//go:build ignore

// The line above keeps the go command from taking this file for a cgo source
// of package cclient (build.go), which compiles it with cc instead.

/*
 * shmbus.c - C client of shmbus. See shmbus.h for the API and
 * docs/layout.md (format) and docs/protocol.md (why it is correct) for the
 * rules followed here; section numbers below refer to layout.md.
 *
 * Memory orders. Every word another process reads or writes is an
 * _Atomic object in the mapping. Where Go uses an atomic operation this
 * file uses seq_cst (Go's sync/atomic is seq_cst), and where Go uses a
 * plain store to a word others load atomically it uses a relaxed store
 * (5.0). The pairs that matter:
 *   - record length store (producer, seq_cst) / length load (consumer):
 *     the meta word and payload written before are visible after;
 *   - head store after zeroing (consumer) / head load (producer): the
 *     zeroing lands before the producer's new writes;
 *   - claim Pos/End (relaxed) then tail CAS or store (seq_cst) / tail load
 *     then claim loads (consumer recovery);
 *   - doorbells: publishing store then doorbell load, and announcing CAS
 *     then condition re-check, all seq_cst (Dekker; protocol.md 3.2).
 *
 * Nothing read from the segment is used as an offset or length unchecked:
 * geometry is recomputed from the validated configuration (4.2), ring
 * offsets are always position & (C-1), and every record is validated
 * (3.8) before it is acted on.
 */
#define _GNU_SOURCE
#include "shmbus.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/sem.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

_Static_assert(ATOMIC_INT_LOCK_FREE == 2 && ATOMIC_LONG_LOCK_FREE == 2 && ATOMIC_LLONG_LOCK_FREE == 2,
               "shmbus needs lock-free 32- and 64-bit atomics: they are shared with other processes");
_Static_assert(sizeof(unsigned long) == 8 || sizeof(unsigned long long) == 8, "64-bit type");

typedef _Atomic uint32_t a32;
typedef _Atomic uint64_t a64;
#define SC memory_order_seq_cst
#define ACQ memory_order_acquire
#define RLX memory_order_relaxed

/* ---- constants of format version 2 (2.1) ---- */

enum {
	PAGE = 4096,
	HEADER_SIZE = 4096,
	CTRL_SIZE = 512,
	LANE_TABLE = 0x200,
	LANE_ENTRY = 32,
	PEER_HEADER = 128,
	CLAIM_SIZE = 32,
	MAX_LANES = 64,
	MAX_PEER_SLOTS = 4096,
	MIN_RECORD_LIMIT = 64,
	NO_PRODUCER = 0xFFFF,
	MAX_SUBSCRIPTIONS = 64,
	SUB_HEADER = 128,
	SUB_LANE = 16,
	VERSION = 2,
};
#define MIN_CAPACITY 1024ull
#define MAX_CAPACITY (1ull << 30)
#define READY_VALUE 0x59444552u
static const uint8_t MAGIC[8] = {0x89, 'S', 'H', 'M', 'B', 'U', 'S', '\n'};

/* Header offsets (3.1 - 3.4). */
enum {
	H_VERSION = 0x008, H_HEADER_SIZE = 0x00C, H_TOTAL = 0x010, H_FLAGS = 0x018,
	H_WAKE = 0x01C, H_LANES = 0x020, H_SLOTS = 0x024, H_MAX_MESSAGE = 0x028,
	H_LANE_TABLE = 0x030, H_LANE_ENTRY = 0x034, H_CTRL_SIZE = 0x038,
	H_SLOT_SIZE = 0x03C, H_PEER_TABLE = 0x040, H_SEM_ID = 0x048,
	H_SEM_COOKIE = 0x04C, H_SUB_SLOTS = 0x068, H_SUB_ENTRY = 0x06C, H_SUB_TABLE = 0x070,
	H_READY = 0x07C, H_CONSUMER = 0x080,
	H_DATA_BELL = 0x100, H_CONSUMER_SLEEPS = 0x180, H_CONSUMER_WAKES = 0x188,
	H_DROPPED = 0x190,
};
enum { FLAG_MULTI = 1, FLAG_FAIL_FAST = 2 };

/* Lane control block offsets (3.6). */
enum {
	C_TAIL = 0x000, C_SPSC_OWNER = 0x008, C_MSGS_IN = 0x010, C_BYTES_IN = 0x018,
	C_FULL = 0x020, C_HEAD = 0x080, C_MSGS_OUT = 0x088, C_BYTES_OUT = 0x090,
	C_RECOVERED = 0x098, C_RELEASING = 0x0A0, C_SPACE_BELL = 0x100,
	C_SPACE_SLEEPS = 0x180, C_SPACE_WAKES = 0x188, C_DATA_WAKES = 0x190,
};

/* Peer slot and claim record offsets (3.7). */
enum { P_OWNER = 0x00, P_PID = 0x08, P_ROLE = 0x0C, P_START = 0x10, P_JOINED = 0x18 };
enum { CL_POS = 0x00, CL_END = 0x08, CL_OK = 0x10 };
enum { ROLE_PRODUCER = 1, ROLE_CONSUMER = 2 };

/* Records (3.8). */
enum { T_DATA = 1, T_PADDING = 2, FRAG_BEGIN = 1, FRAG_END = 2, WHOLE = 3 };

enum { STATS_EVERY = 256 };
#define BACKSTOP_NS (200ll * 1000000)       /* every sleep is bounded (protocol.md 3.6) */
#define INFLIGHT_BACKSTOP_NS (20ll * 1000000) /* consumer, while a lane is claimed but unpublished */
#define RECOVER_EVERY_NS (20ll * 1000000)

/* ---- errors ---- */

static _Thread_local char errbuf[512];

const char *shmbus_last_error(void) { return errbuf; }

const char *shmbus_strerror(int err)
{
	switch (err) {
	case SHMBUS_OK: return "success";
	case SHMBUS_ERR_SYS: return "system call failed";
	case SHMBUS_ERR_BAD_NAME: return "bad bus name";
	case SHMBUS_ERR_NOT_EXIST: return "no such bus";
	case SHMBUS_ERR_PERMISSION: return "permission denied";
	case SHMBUS_ERR_NOT_REGULAR: return "not a regular file";
	case SHMBUS_ERR_NOT_READY: return "segment not ready";
	case SHMBUS_ERR_VERSION: return "unsupported segment version";
	case SHMBUS_ERR_CORRUPT: return "segment corrupt";
	case SHMBUS_ERR_UNSUPPORTED: return "unsupported platform";
	case SHMBUS_ERR_BUSY: return "role held";
	case SHMBUS_ERR_NO_SLOT: return "no free peer slot";
	case SHMBUS_ERR_PRIORITY: return "priority out of range";
	case SHMBUS_ERR_TOO_LARGE: return "message too large";
	case SHMBUS_ERR_FULL: return "lane full";
	case SHMBUS_ERR_EMPTY: return "bus empty";
	case SHMBUS_ERR_SHORT_BUFFER: return "buffer too small";
	case SHMBUS_ERR_TIMEOUT: return "timed out";
	case SHMBUS_ERR_CLOSED: return "closed";
	case SHMBUS_ERR_INVALID: return "invalid argument";
	case SHMBUS_ERR_NO_MEMORY: return "out of memory";
	case SHMBUS_ERR_PROTOCOL: return "daemon protocol error";
	case SHMBUS_ERR_DAEMON: return "daemon error";
	case SHMBUS_ERR_NOT_FOUND: return "no such key";
	case SHMBUS_ERR_REVISION: return "revision mismatch";
	}
	return "unknown error";
}

__attribute__((format(printf, 2, 3)))
static int fail(int code, const char *fmt, ...)
{
	int n = snprintf(errbuf, sizeof errbuf, "%s: ", shmbus_strerror(code));
	if (n < 0 || (size_t)n >= sizeof errbuf)
		return code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(errbuf + n, sizeof errbuf - (size_t)n, fmt, ap);
	va_end(ap);
	return code;
}

/* fail_quick sets a fixed detail without formatting, for the errors a
 * polling caller sees all the time (FULL, EMPTY). */
static int fail_quick(int code, const char *detail)
{
	size_t n = strlen(detail);
	if (n >= sizeof errbuf)
		n = sizeof errbuf - 1;
	memcpy(errbuf, detail, n);
	errbuf[n] = 0;
	return code;
}

/* fail_errno maps an errno from opening or mapping a file to a code. */
static int fail_errno(int e, const char *what, const char *path)
{
	int code = SHMBUS_ERR_SYS;
	if (e == ENOENT) code = SHMBUS_ERR_NOT_EXIST;
	else if (e == EACCES || e == EPERM) code = SHMBUS_ERR_PERMISSION;
	else if (e == ELOOP || e == EISDIR) code = SHMBUS_ERR_NOT_REGULAR;
	return fail(code, "%s %s: %s", what, path ? path : "", strerror(e));
}

/* ---- small helpers ---- */

static uint64_t align_up(uint64_t n, uint64_t a) { return (n + a - 1) & ~(a - 1); }
static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static int64_t mono_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int64_t deadline_of(int timeout_ms)
{
	if (timeout_ms < 0)
		return -1;
	return mono_ns() + (int64_t)timeout_ms * 1000000;
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__asm__ __volatile__("pause");
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

/* ---- the attachment ---- */

struct shmbus {
	uint8_t *seg;
	uint64_t total;
	uint32_t L, P;
	uint64_t C, R, max_message;
	uint32_t flags, wake;
	uint64_t slot_size, peer_table;
	uint32_t subscriptions; /* fan-out buses: subscription slots (no queue consumer); 0 = a queue */
	uint64_t data_off[MAX_LANES];
	int semid;
	uint32_t sem_cookie;
	uint32_t pid;
	uint64_t start, tag; /* this process's start time and owner tag (5.1) */
	char *path;          /* segment path if known (for ~asm files), else NULL */
	shmbus_producer_t *producers;
	shmbus_consumer_t *consumer;
};

static a32 *w32(const shmbus_t *b, uint64_t off) { return (a32 *)(void *)(b->seg + off); }
static a64 *w64(const shmbus_t *b, uint64_t off) { return (a64 *)(void *)(b->seg + off); }
static uint64_t ctrl_off(uint32_t lane) { return HEADER_SIZE + (uint64_t)lane * CTRL_SIZE; }
static uint64_t peer_off(const shmbus_t *b, uint32_t s) { return b->peer_table + (uint64_t)s * b->slot_size; }
static uint64_t claim_off(const shmbus_t *b, uint32_t s, uint32_t l)
{
	return peer_off(b, s) + PEER_HEADER + (uint64_t)l * CLAIM_SIZE;
}
static uint8_t *ring_at(const shmbus_t *b, uint32_t lane, uint64_t pos)
{
	return b->seg + b->data_off[lane] + (pos & (b->C - 1));
}

/* ---- processes: identity and proof of death (5.1) ---- */

enum { STAT_OK = 0, STAT_GONE = 1, STAT_UNKNOWN = -1 };

/* read_stat reads /proc/PID/stat: STAT_OK with the start time (field 22)
 * and state (field 3); STAT_GONE only if the kernel says there is no such
 * process (kill(pid, 0) fails with ESRCH: with hidepid another user's live
 * process has no /proc entry); STAT_UNKNOWN for anything else. */
static int read_stat(uint32_t pid, uint64_t *start, char *state)
{
	char path[64], buf[4096];
	snprintf(path, sizeof path, "/proc/%u/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		if ((e == ENOENT || e == ESRCH) && kill((pid_t)pid, 0) < 0 && errno == ESRCH)
			return STAT_GONE;
		return STAT_UNKNOWN;
	}
	size_t n = 0;
	for (;;) {
		ssize_t r = read(fd, buf + n, sizeof buf - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			close(fd);
			if (e == ESRCH && kill((pid_t)pid, 0) < 0 && errno == ESRCH)
				return STAT_GONE;
			return STAT_UNKNOWN;
		}
		if (r == 0 || n + (size_t)r >= sizeof buf - 1) {
			n += (size_t)r;
			break;
		}
		n += (size_t)r;
	}
	close(fd);
	buf[n] = 0;
	/* "pid (comm) state ppid ... starttime ...": comm may hold any byte,
	 * so the fields are taken after the LAST ')'. */
	char *lp = memchr(buf, '(', n), *rp = NULL;
	for (size_t i = n; i > 0; i--)
		if (buf[i - 1] == ')') { rp = buf + i - 1; break; }
	if (!lp || !rp || rp < lp)
		return STAT_UNKNOWN;
	uint64_t got = 0;
	bool digits = false;
	for (char *q = buf; q < lp; q++) {
		if (*q >= '0' && *q <= '9') {
			got = got * 10 + (uint64_t)(*q - '0');
			digits = true;
			if (got > UINT32_MAX) return STAT_UNKNOWN;
		} else if (*q != ' ') {
			return STAT_UNKNOWN;
		}
	}
	if (!digits || got != pid)
		return STAT_UNKNOWN;
	char *q = rp + 1, *end = buf + n;
	int field = 0;
	uint64_t st = 0;
	while (q < end) {
		while (q < end && (*q == ' ' || *q == '\n' || *q == '\t' || *q == '\r' || *q == '\v' || *q == '\f')) q++;
		if (q >= end) break;
		char *tok = q;
		while (q < end && !(*q == ' ' || *q == '\n' || *q == '\t' || *q == '\r' || *q == '\v' || *q == '\f')) q++;
		size_t len = (size_t)(q - tok);
		if (field == 0) {
			if (len != 1) return STAT_UNKNOWN;
			if (state) *state = tok[0];
		} else if (field == 19) {
			st = 0;
			for (size_t i = 0; i < len; i++) {
				if (tok[i] < '0' || tok[i] > '9') return STAT_UNKNOWN;
				uint64_t d = (uint64_t)(tok[i] - '0');
				if (st > (UINT64_MAX - d) / 10) return STAT_UNKNOWN;
				st = st * 10 + d;
			}
			if (start) *start = st;
			return STAT_OK;
		}
		field++;
	}
	return STAT_UNKNOWN;
}

/* task_count counts the threads of pid (entries of /proc/PID/task), or -1. */
static int task_count(uint32_t pid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%u/task", pid);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

enum { PEER_FREE, PEER_ALIVE, PEER_DEAD };

/* tag_state judges an owner tag: PEER_DEAD only with the kernel's proof
 * (Go: tagState, then proc.Check). */
static int tag_state(const shmbus_t *b, uint64_t tag)
{
	if (tag == 0)
		return PEER_FREE;
	if (tag == b->tag)
		return PEER_ALIVE;
	uint64_t pid64 = tag >> 32;
	if (pid64 == 0 || pid64 > INT32_MAX)
		return PEER_DEAD; /* no process can have it */
	uint32_t pid = (uint32_t)pid64;
	uint64_t start = 0, start2 = 0;
	char state = 0;
	int r = read_stat(pid, &start, NULL);
	if (r == STAT_GONE)
		return PEER_DEAD;
	if (r != STAT_OK)
		return PEER_ALIVE; /* cannot tell */
	if ((uint32_t)start != (uint32_t)tag)
		return PEER_DEAD; /* the pid was reused */
	r = read_stat(pid, &start2, &state);
	if (r == STAT_GONE)
		return PEER_DEAD;
	if (r != STAT_OK)
		return PEER_ALIVE;
	if (start2 != start)
		return PEER_DEAD;
	if (state == 'X' || state == 'x')
		return PEER_DEAD;
	if (state == 'Z')
		return task_count(pid) > 1 ? PEER_ALIVE : PEER_DEAD; /* pthread_exit'ed leader: alive */
	return PEER_ALIVE;
}

static int slot_state(const shmbus_t *b, uint32_t s)
{
	return tag_state(b, atomic_load_explicit(w64(b, peer_off(b, s) + P_OWNER), SC));
}

/* ---- attaching (4.2) ---- */

static void nap_ns(int64_t ns)
{
	struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* wait_ready waits (bounded) for the creator to set the ready word, looking
 * only with atomic loads; then it copies the header page to hp. */
static int wait_ready_kind(int fd, int wait_ms, uint8_t *hp, uint64_t *size_out, const uint8_t *magic,
                           uint32_t want_version);

static int wait_ready(int fd, int wait_ms, uint8_t *hp, uint64_t *size_out)
{
	return wait_ready_kind(fd, wait_ms, hp, size_out, MAGIC, VERSION);
}

/* wait_ready_kind waits for the segment in fd (magic magic: a bus or a
 * board) to be ready and copies its header page into hp. */
static int wait_ready_kind(int fd, int wait_ms, uint8_t *hp, uint64_t *size_out, const uint8_t *magic,
                           uint32_t want_version)
{
	int64_t wait_ns = wait_ms == 0 ? 1000ll * 1000000 : (int64_t)wait_ms * 1000000;
	int64_t deadline = mono_ns() + (wait_ms < 0 ? 0 : wait_ns);
	int64_t delay = 500 * 1000;
	uint8_t *h = MAP_FAILED;
	int rc;
	for (;;) {
		struct stat st;
		if (fstat(fd, &st) < 0) {
			rc = fail(SHMBUS_ERR_SYS, "fstat: %s", strerror(errno));
			goto out;
		}
		if (!S_ISREG(st.st_mode)) {
			rc = fail(SHMBUS_ERR_NOT_REGULAR, "mode %o", (unsigned)st.st_mode);
			goto out;
		}
		*size_out = (uint64_t)st.st_size;
		const char *why;
		uint32_t version = 0;
		if (st.st_size < HEADER_SIZE) {
			why = "file smaller than the header";
		} else {
			if (h == MAP_FAILED) {
				h = mmap(NULL, HEADER_SIZE, PROT_READ, MAP_SHARED, fd, 0);
				if (h == MAP_FAILED) {
					rc = fail(SHMBUS_ERR_SYS, "mmap header: %s", strerror(errno));
					goto out;
				}
			}
			uint8_t m[8];
			uint32_t w0 = atomic_load_explicit((a32 *)(void *)h, SC);
			uint32_t w1 = atomic_load_explicit((a32 *)(void *)(h + 4), SC);
			memcpy(m, &w0, 4);
			memcpy(m + 4, &w1, 4);
			if (memcmp(m, magic, 8) != 0) {
				for (int i = 0; i < 8; i++)
					if (m[i] != 0 && m[i] != magic[i]) {
						rc = fail(SHMBUS_ERR_CORRUPT, "bad magic %02x %02x %02x %02x %02x %02x %02x %02x",
						          m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7]);
						goto out;
					}
				why = "magic not written yet";
			} else {
				version = atomic_load_explicit((a32 *)(void *)(h + H_VERSION), SC);
				uint32_t ready = atomic_load_explicit((a32 *)(void *)(h + H_READY), SC);
				if (ready == READY_VALUE) {
					/* Ready was stored last: the header is complete. */
					memcpy(hp, h, HEADER_SIZE);
					rc = SHMBUS_OK;
					goto out;
				}
				why = "ready word not set";
			}
		}
		int64_t now = mono_ns();
		if (wait_ms < 0 || now >= deadline) {
			if (version != 0 && version != want_version)
				rc = fail(SHMBUS_ERR_VERSION, "version %u, this client reads %u (and the ready word is not set)", version,
				          want_version);
			else
				rc = fail(SHMBUS_ERR_NOT_READY, "%s (gave up after %d ms)", why, wait_ms < 0 ? 0 : (int)(wait_ns / 1000000));
			goto out;
		}
		nap_ns(delay < deadline - now ? delay : deadline - now);
		delay = delay * 2 < 20 * 1000000 ? delay * 2 : 20 * 1000000;
	}
out:
	if (h != MAP_FAILED)
		munmap(h, HEADER_SIZE);
	return rc;
}

/* validate checks the private header copy hp as Go's DecodeHeader and
 * Header.Validate do, in the same order, and fills b's geometry from the
 * placement rule (2.3). */
static int validate(shmbus_t *b, const uint8_t *hp, uint64_t file_size)
{
	if (memcmp(hp, MAGIC, 8) != 0)
		return fail(SHMBUS_ERR_CORRUPT, "bad magic");
	uint32_t version = rd32(hp + H_VERSION);
	if (version != VERSION)
		return fail(SHMBUS_ERR_VERSION, "version %u, this client reads %d", version, VERSION);
	uint32_t L = rd32(hp + H_LANES);
	if (L < 1 || L > MAX_LANES)
		return fail(SHMBUS_ERR_CORRUPT, "lane count %u", L);
	if (rd32(hp + H_READY) != READY_VALUE)
		return fail(SHMBUS_ERR_NOT_READY, "ready word %#x", rd32(hp + H_READY));
	if (rd32(hp + H_HEADER_SIZE) != HEADER_SIZE || rd32(hp + H_LANE_TABLE) != LANE_TABLE ||
	    rd32(hp + H_LANE_ENTRY) != LANE_ENTRY || rd32(hp + H_CTRL_SIZE) != CTRL_SIZE)
		return fail(SHMBUS_ERR_CORRUPT, "header size %u, lane table at %#x of %u-byte entries, control blocks of %u bytes",
		            rd32(hp + H_HEADER_SIZE), rd32(hp + H_LANE_TABLE), rd32(hp + H_LANE_ENTRY), rd32(hp + H_CTRL_SIZE));
	/* The configuration (2.2), taken from the header and lane 0. */
	uint64_t C = rd64(hp + LANE_TABLE + 16);
	uint64_t R = rd32(hp + LANE_TABLE + 24);
	uint32_t P = rd32(hp + H_SLOTS);
	uint64_t maxmsg = rd64(hp + H_MAX_MESSAGE);
	uint32_t flags = rd32(hp + H_FLAGS), wake = rd32(hp + H_WAKE);
	if (C < MIN_CAPACITY || C > MAX_CAPACITY || (C & (C - 1)) != 0)
		return fail(SHMBUS_ERR_CORRUPT, "lane capacity %llu, want a power of two in [1024, 2^30]", (unsigned long long)C);
	if (R < MIN_RECORD_LIMIT || R > C / 2 || R % 8 != 0)
		return fail(SHMBUS_ERR_CORRUPT, "record limit %llu, want a multiple of 8 in [64, %llu]",
		            (unsigned long long)R, (unsigned long long)(C / 2));
	if (P < 1 || P > MAX_PEER_SLOTS)
		return fail(SHMBUS_ERR_CORRUPT, "%u peer slots, want 1..4096", P);
	if (maxmsg < 1)
		return fail(SHMBUS_ERR_CORRUPT, "max message %llu", (unsigned long long)maxmsg);
	if (flags & ~(uint32_t)(FLAG_MULTI | FLAG_FAIL_FAST))
		return fail(SHMBUS_ERR_CORRUPT, "unknown flags %#x", flags);
	if (wake != SHMBUS_WAKE_FUTEX && wake != SHMBUS_WAKE_SEM)
		return fail(SHMBUS_ERR_CORRUPT, "wake mode %u", wake);
	/* The placement rule, and every lane entry against it. */
	uint64_t slot_size = align_up(PEER_HEADER + (uint64_t)L * CLAIM_SIZE, 128);
	uint64_t off = align_up(HEADER_SIZE + (uint64_t)L * CTRL_SIZE, PAGE);
	for (uint32_t i = 0; i < L; i++) {
		const uint8_t *e = hp + LANE_TABLE + (size_t)LANE_ENTRY * i;
		if (rd64(e) != ctrl_off(i) || rd64(e + 8) != off || rd64(e + 16) != C || rd32(e + 24) != R || rd32(e + 28) != 0)
			return fail(SHMBUS_ERR_CORRUPT, "lane %u entry {ctrl %#llx data %#llx capacity %llu limit %u flags %u}, expected {%#llx %#llx %llu %llu 0}",
			            i, (unsigned long long)rd64(e), (unsigned long long)rd64(e + 8), (unsigned long long)rd64(e + 16),
			            rd32(e + 24), rd32(e + 28), (unsigned long long)ctrl_off(i), (unsigned long long)off,
			            (unsigned long long)C, (unsigned long long)R);
		b->data_off[i] = off;
		off = align_up(off + C, PAGE);
	}
	uint64_t peer_table = off;
	uint64_t total = align_up(peer_table + (uint64_t)P * slot_size, PAGE);
	if (rd64(hp + H_PEER_TABLE) != peer_table || rd32(hp + H_SLOT_SIZE) != slot_size)
		return fail(SHMBUS_ERR_CORRUPT, "peer table at %#llx with %u-byte slots, expected %#llx and %llu",
		            (unsigned long long)rd64(hp + H_PEER_TABLE), rd32(hp + H_SLOT_SIZE),
		            (unsigned long long)peer_table, (unsigned long long)slot_size);
	/* Fan-out buses (2.3): the subscription table on the page after the peer table. */
	uint32_t S = rd32(hp + H_SUB_SLOTS);
	uint64_t sub_table = 0, sub_entry = 0;
	if (S > MAX_SUBSCRIPTIONS)
		return fail(SHMBUS_ERR_CORRUPT, "%u subscriptions, want 0..64", S);
	if (S > 0) {
		sub_table = total;
		sub_entry = align_up(SUB_HEADER + (uint64_t)L * SUB_LANE, 128);
		total = align_up(sub_table + (uint64_t)S * sub_entry, PAGE);
	}
	if (rd64(hp + H_SUB_TABLE) != sub_table || rd32(hp + H_SUB_ENTRY) != sub_entry)
		return fail(SHMBUS_ERR_CORRUPT, "subscription table at %#llx with %u-byte entries, expected %#llx and %llu",
		            (unsigned long long)rd64(hp + H_SUB_TABLE), rd32(hp + H_SUB_ENTRY),
		            (unsigned long long)sub_table, (unsigned long long)sub_entry);
	if (rd64(hp + H_TOTAL) != total)
		return fail(SHMBUS_ERR_CORRUPT, "total size %llu, layout needs %llu", (unsigned long long)rd64(hp + H_TOTAL),
		            (unsigned long long)total);
	if (file_size != total)
		return fail(SHMBUS_ERR_CORRUPT, "file is %llu bytes, header says %llu", (unsigned long long)file_size,
		            (unsigned long long)total);
	int32_t semid = (int32_t)rd32(hp + H_SEM_ID);
	if (wake == SHMBUS_WAKE_SEM && semid < 0)
		return fail(SHMBUS_ERR_CORRUPT, "sem wake mode without a semaphore set");
	if (total > (uint64_t)SIZE_MAX / 2)
		return fail(SHMBUS_ERR_CORRUPT, "total size %llu does not fit in memory", (unsigned long long)total);
	b->L = L; b->P = P; b->C = C; b->R = R; b->max_message = maxmsg;
	b->flags = flags; b->wake = wake; b->slot_size = slot_size; b->peer_table = peer_table;
	b->subscriptions = S;
	b->total = total; b->semid = wake == SHMBUS_WAKE_SEM ? semid : -1;
	b->sem_cookie = rd32(hp + H_SEM_COOKIE);
	return SHMBUS_OK;
}

static int check_sems(shmbus_t *b)
{
	struct semid_ds ds;
	union { int val; struct semid_ds *buf; } arg = {.buf = &ds};
	if (semctl(b->semid, 0, IPC_STAT, arg) < 0) {
		int e = errno;
		if (e == EINVAL || e == EIDRM)
			return fail(SHMBUS_ERR_CORRUPT, "semaphore set %d does not exist", b->semid);
		if (e == EACCES)
			return fail(SHMBUS_ERR_PERMISSION, "semaphore set %d", b->semid);
		return fail(SHMBUS_ERR_SYS, "semctl IPC_STAT %d: %s", b->semid, strerror(e));
	}
	if (ds.sem_nsems != (unsigned long)b->L + 2)
		return fail(SHMBUS_ERR_CORRUPT, "semaphore set %d has %lu semaphores, the bus needs %u", b->semid,
		            (unsigned long)ds.sem_nsems, b->L + 2);
	int v = semctl(b->semid, (int)b->L + 1, GETVAL);
	if (v < 0 || (uint32_t)v != b->sem_cookie)
		return fail(SHMBUS_ERR_CORRUPT, "semaphore set %d does not carry the bus's cookie (%d, want %u)", b->semid, v,
		            b->sem_cookie);
	return SHMBUS_OK;
}

static int attach_fd(int fd, const shmbus_open_options *o, const char *path, shmbus_t **out)
{
	if (!out)
		return fail(SHMBUS_ERR_INVALID, "NULL result pointer");
	*out = NULL;
	{
		const uint16_t probe = 1;
		uint8_t lo;
		memcpy(&lo, &probe, 1);
		if (lo != 1)
			return fail(SHMBUS_ERR_UNSUPPORTED, "big-endian host");
	}
	shmbus_t *b = calloc(1, sizeof *b);
	if (!b)
		return fail(SHMBUS_ERR_NO_MEMORY, "bus handle");
	b->semid = -1;
	uint8_t *hp = malloc(HEADER_SIZE);
	if (!hp) {
		free(b);
		return fail(SHMBUS_ERR_NO_MEMORY, "header copy");
	}
	uint64_t size = 0;
	int rc = wait_ready(fd, o ? o->wait_ms : 0, hp, &size);
	if (rc == SHMBUS_OK)
		rc = validate(b, hp, size);
	free(hp);
	if (rc != SHMBUS_OK)
		goto fail;
	b->seg = mmap(NULL, (size_t)b->total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (b->seg == MAP_FAILED) {
		b->seg = NULL;
		rc = fail_errno(errno, "mmap", path);
		goto fail;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != b->total) {
		rc = fail(SHMBUS_ERR_CORRUPT, "file changed size while being opened");
		goto fail;
	}
	if (b->wake == SHMBUS_WAKE_SEM && (rc = check_sems(b)) != SHMBUS_OK)
		goto fail;
	b->pid = (uint32_t)getpid();
	if (read_stat(b->pid, &b->start, NULL) != STAT_OK) {
		rc = fail(SHMBUS_ERR_SYS, "cannot read this process's start time from /proc/%u/stat", b->pid);
		goto fail;
	}
	b->tag = (uint64_t)b->pid << 32 | (b->start & 0xFFFFFFFFu);
	if (path && (b->path = strdup(path)) == NULL) {
		rc = fail(SHMBUS_ERR_NO_MEMORY, "path");
		goto fail;
	}
	*out = b;
	return SHMBUS_OK;
fail:
	if (b->seg)
		munmap(b->seg, (size_t)b->total);
	free(b);
	return rc;
}

int shmbus_open_path(const char *path, const shmbus_open_options *o, shmbus_t **out)
{
	if (!path || !*path)
		return fail(SHMBUS_ERR_INVALID, "empty path");
	/* O_NONBLOCK only keeps a FIFO from blocking the open. */
	int fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return fail_errno(errno, "open", path);
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	int rc = attach_fd(fd, o, path, out);
	close(fd);
	return rc;
}

static int valid_name(const char *name)
{
	size_t n = name ? strlen(name) : 0;
	/* as the Go library: no leading '-' (an option) or '.' (hidden), no ".." */
	if (n < 1 || n > 200 || name[0] == '-' || name[0] == '.' || strstr(name, ".."))
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

int shmbus_open(const char *name, const shmbus_open_options *o, shmbus_t **out)
{
	if (!valid_name(name))
		return fail(SHMBUS_ERR_BAD_NAME, "%.220s", name ? name : "(null)");
	const char *dir = o && o->dir && *o->dir ? o->dir : getenv("SHMBUS_DIR");
	if (!dir || !*dir)
		dir = "/dev/shm";
	size_t n = strlen(dir) + strlen(name) + 16;
	char *path = malloc(n);
	if (!path)
		return fail(SHMBUS_ERR_NO_MEMORY, "path");
	snprintf(path, n, "%s/shmbus.%s", dir, name);
	int rc = shmbus_open_path(path, o, out);
	free(path);
	return rc;
}

int shmbus_open_fd(int fd, const shmbus_open_options *o, shmbus_t **out)
{
	if (fd < 0)
		return fail(SHMBUS_ERR_INVALID, "fd %d", fd);
	/* The path behind the descriptor, if it has a real one, for the
	 * consumer's reassembly-file clean-up; a memfd has none. */
	char link[64], target[PATH_MAX];
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, target, sizeof target - 1);
	const char *path = NULL;
	if (n > 0) {
		target[n] = 0;
		if (target[0] == '/' && strncmp(target, "/memfd:", 7) != 0 && !strstr(target, " (deleted)"))
			path = target;
	}
	return attach_fd(fd, o, path, out);
}

int shmbus_priorities(const shmbus_t *b) { return (int)b->L; }
uint64_t shmbus_max_message(const shmbus_t *b) { return b->max_message; }
size_t shmbus_max_record_payload(const shmbus_t *b) { return (size_t)(b->R - 8); }
int shmbus_wake_mode(const shmbus_t *b) { return (int)b->wake; }
int shmbus_multi_producer(const shmbus_t *b) { return (b->flags & FLAG_MULTI) != 0; }
int shmbus_fail_fast(const shmbus_t *b) { return (b->flags & FLAG_FAIL_FAST) != 0; }
uint64_t shmbus_lane_capacity(const shmbus_t *b) { return b->C; }
int shmbus_peer_slots(const shmbus_t *b) { return (int)b->P; }

/* ---- peer slots and roles (5.1, 5.2) ---- */

/* claims_pending: a claim record of slot s may still describe space the
 * consumer has not released (head < End <= head + C, by difference). */
static bool claims_pending(const shmbus_t *b, uint32_t s)
{
	for (uint32_t l = 0; l < b->L; l++) {
		uint64_t end = atomic_load_explicit(w64(b, claim_off(b, s, l) + CL_END), SC);
		uint64_t head = atomic_load_explicit(w64(b, ctrl_off(l) + C_HEAD), SC);
		if (end - head - 1 < b->C)
			return true;
	}
	return false;
}

static int join(shmbus_t *b, uint32_t role, uint32_t *slot)
{
	for (int pass = 0; pass < 2; pass++) {
		for (uint32_t s = 0; s < b->P; s++) {
			a64 *owner = w64(b, peer_off(b, s) + P_OWNER);
			uint64_t o = atomic_load_explicit(owner, SC);
			if (o == 0)
				; /* free */
			else if (pass == 1 && o != b->tag && tag_state(b, o) == PEER_DEAD && !claims_pending(b, s))
				; /* dead owner, no evidence left to keep */
			else
				continue;
			if (!atomic_compare_exchange_strong_explicit(owner, &o, b->tag, SC, SC))
				continue;
			for (uint32_t l = 0; l < b->L; l++) { /* claim records first (pairs with recovery's re-check) */
				atomic_store_explicit(w64(b, claim_off(b, s, l) + CL_POS), 0, SC);
				atomic_store_explicit(w64(b, claim_off(b, s, l) + CL_END), 0, SC);
				atomic_store_explicit(w64(b, claim_off(b, s, l) + CL_OK), 0, SC);
			}
			struct timespec now;
			clock_gettime(CLOCK_REALTIME, &now);
			atomic_store_explicit(w32(b, peer_off(b, s) + P_PID), b->pid, SC);
			atomic_store_explicit(w64(b, peer_off(b, s) + P_START), b->start, SC);
			atomic_store_explicit(w64(b, peer_off(b, s) + P_JOINED),
			                      (uint64_t)((int64_t)now.tv_sec * 1000000000 + now.tv_nsec), SC);
			atomic_store_explicit(w32(b, peer_off(b, s) + P_ROLE), role, SC);
			*slot = s;
			return SHMBUS_OK;
		}
	}
	return fail(SHMBUS_ERR_NO_SLOT, "all %u slots are held by live peers (or by dead producers whose claims are not yet recovered)", b->P);
}

static void leave(shmbus_t *b, uint32_t s)
{
	atomic_store_explicit(w32(b, peer_off(b, s) + P_ROLE), 0, SC);
	uint64_t t = b->tag;
	atomic_compare_exchange_strong_explicit(w64(b, peer_off(b, s) + P_OWNER), &t, 0, SC, SC);
}

static int take_role(shmbus_t *b, a32 *w, uint32_t slot, uint32_t role, const char *what)
{
	for (;;) {
		uint32_t cur = atomic_load_explicit(w, SC);
		if (cur == slot + 1)
			return SHMBUS_OK;
		if (cur != 0 && cur <= b->P) {
			uint32_t holder = cur - 1;
			uint32_t hrole = atomic_load_explicit(w32(b, peer_off(b, holder) + P_ROLE), SC);
			if (slot_state(b, holder) == PEER_ALIVE && (hrole & role) != 0)
				return fail(SHMBUS_ERR_BUSY, "%s is held by pid %u", what,
				            atomic_load_explicit(w32(b, peer_off(b, holder) + P_PID), SC));
		}
		/* Free, held by a free or dead slot, by a slot reused without
		 * this role, or garbage: take it. */
		if (atomic_compare_exchange_strong_explicit(w, &cur, slot + 1, SC, SC))
			return SHMBUS_OK;
	}
}

static void drop_role(a32 *w, uint32_t slot)
{
	uint32_t cur = slot + 1;
	atomic_compare_exchange_strong_explicit(w, &cur, 0, SC, SC);
}

/* ---- doorbells (5.6) ---- */

#define RUNG (1ull << 63)
#define ONE_SLEEPER (1ull << 32)
#define SLEEPERS(w) (((w) >> 32) & 0x7FFFFFFFull)

static void bell_wake(const shmbus_t *b, a64 *db, int semnum, uint64_t n)
{
	if (b->wake == SHMBUS_WAKE_FUTEX) {
		syscall(SYS_futex, (uint32_t *)(void *)db, FUTEX_WAKE, (int)(n > INT32_MAX ? INT32_MAX : n), NULL, NULL, 0);
		return;
	}
	int v = semctl(b->semid, semnum, GETVAL);
	if (v < 0)
		return; /* set removed: sleepers have their backstop */
	int delta = (int)(n > 32767 ? 32767 : n) - v; /* raise it to n, never beyond */
	if (delta > 0) {
		struct sembuf op = {.sem_num = (unsigned short)semnum, .sem_op = (short)delta, .sem_flg = 0};
		semop(b->semid, &op, 1);
	}
}

/* bell_ring runs after a publishing store; true if it woke somebody. */
static bool bell_ring(const shmbus_t *b, a64 *db, int semnum, a64 *wakes)
{
	uint64_t w = atomic_load_explicit(db, SC); /* pairs with the announcing CAS */
	for (;;) {
		uint64_t n = SLEEPERS(w);
		if (n == 0 || (w & RUNG))
			return false;
		uint64_t nw = (w & ~0xFFFFFFFFull) | (uint32_t)(w + 1) | RUNG;
		if (atomic_compare_exchange_weak_explicit(db, &w, nw, SC, SC)) {
			atomic_fetch_add_explicit(wakes, 1, RLX);
			bell_wake(b, db, semnum, n);
			return true;
		}
	}
}

static uint32_t bell_announce(a64 *db)
{
	uint64_t w = atomic_load_explicit(db, SC), nw;
	do
		nw = (w + ONE_SLEEPER) & ~RUNG;
	while (!atomic_compare_exchange_weak_explicit(db, &w, nw, SC, SC));
	return (uint32_t)nw;
}

static void bell_withdraw(a64 *db) { atomic_fetch_sub_explicit(db, ONE_SLEEPER, SC); }

/* bell_sleep sleeps while the sequence is s, at most rel_ns. It may return
 * early for any reason; an error only when the semaphore set is gone. */
static int bell_sleep(const shmbus_t *b, a64 *db, int semnum, uint32_t s, int64_t rel_ns)
{
	if (rel_ns <= 0)
		return SHMBUS_OK;
	struct timespec rel = {(time_t)(rel_ns / 1000000000), (long)(rel_ns % 1000000000)};
	a32 *seq = (a32 *)(void *)db; /* little-endian: the low half */
	if (b->wake == SHMBUS_WAKE_FUTEX) {
		/* Shared (not _PRIVATE): sleepers and wakers are different processes.
		 * 0, EAGAIN, EINTR, ETIMEDOUT all return to the caller's loop. */
		syscall(SYS_futex, (uint32_t *)(void *)seq, FUTEX_WAIT, s, &rel, NULL, 0);
		return SHMBUS_OK;
	}
	if (atomic_load_explicit(seq, SC) != s)
		return SHMBUS_OK; /* already rung */
	struct sembuf op = {.sem_num = (unsigned short)semnum, .sem_op = -1, .sem_flg = 0};
	if (semtimedop(b->semid, &op, 1, &rel) < 0 && (errno == EIDRM || errno == EINVAL))
		return fail(SHMBUS_ERR_SYS, "semaphore set %d was removed", b->semid);
	return SHMBUS_OK;
}

typedef bool (*ready_fn)(void *arg);

/* bell_wait waits on db until ready(arg) holds, or the deadline (monotonic
 * ns, -1 none) passes. Every sleep is bounded by backstop_ns; periodic(arg),
 * if set, runs after each sleep. */
static int bell_wait(const shmbus_t *b, a64 *db, int semnum, a64 *sleeps, ready_fn ready, void *arg,
                     int64_t deadline, int64_t backstop_ns, void (*periodic)(void *), void *parg)
{
	for (int i = 0; i < 200; i++) { /* a short spin before the system calls */
		if (ready(arg))
			return SHMBUS_OK;
		cpu_relax();
	}
	for (;;) {
		uint32_t s = bell_announce(db);
		if (ready(arg)) {
			bell_withdraw(db);
			return SHMBUS_OK;
		}
		int64_t now = mono_ns();
		if (deadline >= 0 && now >= deadline) {
			bell_withdraw(db);
			return SHMBUS_ERR_TIMEOUT;
		}
		int64_t rel = backstop_ns;
		if (deadline >= 0 && deadline - now < rel)
			rel = deadline - now;
		atomic_fetch_add_explicit(sleeps, 1, RLX);
		int rc = bell_sleep(b, db, semnum, s, rel);
		bell_withdraw(db);
		if (rc != SHMBUS_OK)
			return rc;
		if (periodic)
			periodic(parg);
		if (ready(arg))
			return SHMBUS_OK;
	}
}

/* ---- producer (5.3, 5.4) ---- */

typedef struct plane {
	uint64_t cached_head;
	uint64_t rec_pos, rec_end; /* what the claim record says after the last successful claim */
	uint64_t un_msgs, un_bytes;
} plane_t;

struct shmbus_producer {
	shmbus_t *b;
	uint32_t slot;
	shmbus_producer_t *next;
	plane_t lanes[MAX_LANES];
};

static shmbus_claim_hook claim_hook;
static void *claim_hook_arg;

void shmbus_set_claim_hook(shmbus_claim_hook fn, void *arg)
{
	claim_hook = fn;
	claim_hook_arg = arg;
}

int shmbus_producer_open(shmbus_t *b, shmbus_producer_t **out)
{
	if (!b || !out)
		return fail(SHMBUS_ERR_INVALID, "NULL argument");
	*out = NULL;
	shmbus_producer_t *p = calloc(1, sizeof *p);
	if (!p)
		return fail(SHMBUS_ERR_NO_MEMORY, "producer");
	int rc = join(b, ROLE_PRODUCER, &p->slot);
	if (rc != SHMBUS_OK) {
		free(p);
		return rc;
	}
	if (!(b->flags & FLAG_MULTI)) {
		/* SPSC: every lane's owner word, in order, or none. */
		for (uint32_t i = 0; i < b->L; i++) {
			rc = take_role(b, w32(b, ctrl_off(i) + C_SPSC_OWNER), p->slot, ROLE_PRODUCER, "the producer role");
			if (rc != SHMBUS_OK) {
				for (uint32_t j = 0; j < i; j++)
					drop_role(w32(b, ctrl_off(j) + C_SPSC_OWNER), p->slot);
				leave(b, p->slot);
				free(p);
				return rc;
			}
		}
	}
	for (uint32_t i = 0; i < b->L; i++)
		p->lanes[i].cached_head = atomic_load_explicit(w64(b, ctrl_off(i) + C_HEAD), SC);
	p->b = b;
	p->next = b->producers;
	b->producers = p;
	*out = p;
	return SHMBUS_OK;
}

static void producer_flush(shmbus_producer_t *p, uint32_t lane)
{
	plane_t *pl = &p->lanes[lane];
	if (pl->un_msgs || pl->un_bytes) {
		atomic_fetch_add_explicit(w64(p->b, ctrl_off(lane) + C_MSGS_IN), pl->un_msgs, RLX);
		atomic_fetch_add_explicit(w64(p->b, ctrl_off(lane) + C_BYTES_IN), pl->un_bytes, RLX);
		pl->un_msgs = pl->un_bytes = 0;
	}
}

/* claim claims size bytes of lane (preceded by wrap padding if they would
 * cross the end of the ring) and returns the first record's position. */
static int claim(shmbus_producer_t *p, uint32_t lane, uint64_t size, uint64_t *start)
{
	shmbus_t *b = p->b;
	plane_t *pl = &p->lanes[lane];
	uint64_t C = b->C, co = ctrl_off(lane), cl = claim_off(b, p->slot, lane);
	a64 *tail = w64(b, co + C_TAIL), *head = w64(b, co + C_HEAD);
	a64 *cpos = w64(b, cl + CL_POS), *cend = w64(b, cl + CL_END), *cok = w64(b, cl + CL_OK);
	for (;;) {
		uint64_t t = atomic_load_explicit(tail, SC);
		if (t % 8 != 0)
			return fail(SHMBUS_ERR_CORRUPT, "lane %u: tail %llu is not a multiple of 8", lane, (unsigned long long)t);
		uint64_t off = t & (C - 1);
		uint64_t pad = off + size > C ? C - off : 0;
		uint64_t end = t + pad + size;
		if (end - pl->cached_head > C) {
			/* Looks full: reload the head (pairs with the consumer's
			 * head store after zeroing). */
			pl->cached_head = atomic_load_explicit(head, SC);
			if (t - pl->cached_head > C) {
				/* t may be stale: others claimed and the consumer
				 * released past it. Only a fresh tail proves corruption. */
				uint64_t t2 = atomic_load_explicit(tail, SC);
				if (t2 - pl->cached_head > C)
					return fail(SHMBUS_ERR_CORRUPT, "lane %u: tail %llu is %llu bytes past head %llu", lane,
					            (unsigned long long)t2, (unsigned long long)(t2 - pl->cached_head),
					            (unsigned long long)pl->cached_head);
				continue;
			}
			if (end - pl->cached_head > C) {
				atomic_fetch_add_explicit(w64(b, co + C_FULL), 1, RLX);
				return SHMBUS_ERR_FULL;
			}
		}
		/* 1. Say what we claim: Pos, then End (ordered before the tail move). */
		atomic_store_explicit(cpos, t, RLX);
		atomic_store_explicit(cend, end, RLX);
		/* 2. Move the tail. */
		if (b->flags & FLAG_MULTI) {
			uint64_t expect = t;
			if (!atomic_compare_exchange_strong_explicit(tail, &expect, end, SC, SC)) {
				/* Lost: put the record back to the last successful
				 * claim, End first, so it never names a span we do not
				 * own (recovery rule b, protocol.md 7.1). */
				atomic_store_explicit(cend, pl->rec_end, RLX);
				atomic_store_explicit(cpos, pl->rec_pos, RLX);
				continue;
			}
		} else {
			atomic_store_explicit(tail, end, SC); /* only the SPSC owner writes it */
		}
		if (claim_hook)
			claim_hook(SHMBUS_HOOK_TAIL_MOVED, (int)lane, claim_hook_arg);
		/* 3. Confirm. */
		atomic_store_explicit(cok, t + 1, RLX);
		pl->rec_pos = t;
		pl->rec_end = end;
		if (claim_hook)
			claim_hook(SHMBUS_HOOK_CLAIMED, (int)lane, claim_hook_arg);
		if (pad > 0) {
			/* Padding to the end of the ring, published on its own. */
			uint8_t *r = b->seg + b->data_off[lane] + off;
			atomic_store_explicit((a32 *)(void *)(r + 4), T_PADDING | p->slot << 16, RLX);
			atomic_store_explicit((a32 *)(void *)r, (uint32_t)pad, SC);
		}
		*start = t + pad;
		return SHMBUS_OK;
	}
}

struct room_arg {
	shmbus_t *b;
	uint32_t lane;
	uint64_t size;
};

static bool has_room(void *arg)
{
	struct room_arg *a = arg;
	uint64_t co = ctrl_off(a->lane), C = a->b->C;
	uint64_t t = atomic_load_explicit(w64(a->b, co + C_TAIL), SC);
	uint64_t s = a->size, off = t & (C - 1);
	if (off + s > C)
		s += C - off;
	return t + s - atomic_load_explicit(w64(a->b, co + C_HEAD), SC) <= C;
}

/* put_record sends one data record: flags, an optional 8-byte total
 * prefix (FragBegin), then n bytes of data. It claims exactly one record,
 * writes it and publishes it with one seq_cst store of its length, then
 * rings the data doorbell. No claim is ever held while waiting. */
static int put_record(shmbus_producer_t *p, uint32_t lane, uint8_t flags, const uint64_t *total, const uint8_t *data,
                      size_t n, bool may_fail_full, int64_t deadline)
{
	shmbus_t *b = p->b;
	uint64_t payload = n + (total ? 8 : 0);
	uint64_t need = align_up(payload + 8, 8);
	uint64_t start = 0;
	for (;;) {
		int rc = claim(p, lane, need, &start);
		if (rc == SHMBUS_OK)
			break;
		if (rc != SHMBUS_ERR_FULL)
			return rc;
		if (may_fail_full)
			return fail_quick(SHMBUS_ERR_FULL, "lane full: no room for the message now");
		producer_flush(p, lane); /* going idle: make the counters exact */
		struct room_arg ra = {b, lane, need};
		uint64_t co = ctrl_off(lane);
		rc = bell_wait(b, w64(b, co + C_SPACE_BELL), 1 + (int)lane, w64(b, co + C_SPACE_SLEEPS), has_room, &ra,
		               deadline, BACKSTOP_NS, NULL, NULL);
		if (rc == SHMBUS_ERR_TIMEOUT)
			return fail(rc, "no room in lane %u before the timeout", lane);
		if (rc != SHMBUS_OK)
			return rc;
	}
	uint8_t *r = ring_at(b, lane, start);
	uint32_t meta = T_DATA | (uint32_t)flags << 8 | p->slot << 16;
	memcpy(r + 4, &meta, 4); /* plain: ordered by the publishing store */
	uint8_t *d = r + 8;
	if (total) {
		memcpy(d, total, 8); /* little-endian host */
		d += 8;
	}
	if (n)
		memcpy(d, data, n);
	/* The commit: pairs with the consumer's length load. */
	atomic_store_explicit((a32 *)(void *)r, (uint32_t)(payload + 8), SC);
	plane_t *pl = &p->lanes[lane];
	if (flags & FRAG_END)
		pl->un_msgs++;
	pl->un_bytes += payload;
	if (pl->un_msgs >= STATS_EVERY)
		producer_flush(p, lane);
	if (bell_ring(b, w64(b, H_DATA_BELL), 0, w64(b, H_CONSUMER_WAKES)))
		atomic_fetch_add_explicit(w64(b, ctrl_off(lane) + C_DATA_WAKES), 1, RLX);
	return SHMBUS_OK;
}

static int send_msg(shmbus_producer_t *p, const void *msg, size_t n, int prio, bool try_only, int timeout_ms)
{
	if (!p)
		return fail(SHMBUS_ERR_INVALID, "NULL producer");
	shmbus_t *b = p->b;
	if (prio < 0 || (uint32_t)prio >= b->L)
		return b->L == 1 ? fail(SHMBUS_ERR_PRIORITY, "%d, the bus has 1 priority (0)", prio)
		                 : fail(SHMBUS_ERR_PRIORITY, "%d, the bus has %u priorities (0..%u)", prio, b->L, b->L - 1);
	if (n > b->max_message)
		return fail(SHMBUS_ERR_TOO_LARGE, "message of %zu bytes exceeds the bus's max message of %llu bytes", n,
		            (unsigned long long)b->max_message);
	if (n && !msg)
		return fail(SHMBUS_ERR_INVALID, "NULL message");
	uint32_t lane = (uint32_t)prio;
	bool fail_full = try_only || (b->flags & FLAG_FAIL_FAST);
	int64_t deadline = try_only ? -1 : deadline_of(timeout_ms);
	size_t max = (size_t)(b->R - 8);
	const uint8_t *m = msg;
	if (n <= max)
		return put_record(p, lane, WHOLE, NULL, m, n, fail_full, deadline);
	/* Fragments (3.9), as the Go producer makes them: each as large as a
	 * record allows, the first carrying the total length. */
	uint64_t total = n;
	size_t off = 0;
	for (bool first = true; off < n; first = false) {
		size_t head = first ? 8 : 0, k = max;
		uint8_t flags = first ? FRAG_BEGIN : 0;
		if (k > n - off + head)
			k = n - off + head;
		if (off + k - head == n)
			flags |= FRAG_END;
		int rc = put_record(p, lane, flags, first ? &total : NULL, m + off, k - head, first && fail_full, deadline);
		if (rc != SHMBUS_OK)
			return rc;
		off += k - head;
	}
	return SHMBUS_OK;
}

int shmbus_send(shmbus_producer_t *p, const void *msg, size_t n, int prio, int timeout_ms)
{
	return send_msg(p, msg, n, prio, timeout_ms == 0, timeout_ms);
}

int shmbus_try_send(shmbus_producer_t *p, const void *msg, size_t n, int prio)
{
	return send_msg(p, msg, n, prio, true, 0);
}

static void unlink_producer(shmbus_t *b, shmbus_producer_t *p)
{
	for (shmbus_producer_t **q = &b->producers; *q; q = &(*q)->next)
		if (*q == p) {
			*q = p->next;
			return;
		}
}

int shmbus_producer_close(shmbus_producer_t *p)
{
	if (!p)
		return SHMBUS_OK;
	shmbus_t *b = p->b;
	for (uint32_t i = 0; i < b->L; i++) {
		producer_flush(p, i);
		drop_role(w32(b, ctrl_off(i) + C_SPSC_OWNER), p->slot);
	}
	leave(b, p->slot);
	unlink_producer(b, p);
	free(p);
	return SHMBUS_OK;
}

/* ---- consumer (5.5, 3.9, 5.8) ---- */

typedef struct clane {
	uint64_t pos;      /* read position */
	uint64_t released; /* equals the shared head */
	uint64_t msgs, bytes, un_msgs, un_bytes;
} clane_t;

/* A message being reassembled from (lane, slot), in memory. */
typedef struct part {
	uint8_t *buf;
	uint64_t cap, total, filled;
	uint64_t tag; /* the producer slot's owner tag when the message began */
	bool active;  /* false: idle buffer kept for the slot's next large message */
} part_t;

struct shmbus_consumer {
	shmbus_t *b;
	uint32_t slot;
	clane_t lanes[MAX_LANES];
	part_t *parts;  /* L * P, indexed lane * P + slot */
	uint32_t nparts; /* parts with a buffer */
	uint32_t empty_looks;
	int64_t last_recover;
	uint64_t *starts; /* scratch for recovery: P claim positions */
};

/* A data record at the read position. */
typedef struct rec {
	uint64_t pos;
	uint32_t len; /* payload bytes */
	uint8_t flags;
	uint16_t producer;
	const uint8_t *payload;
} rec_t;

static int corrupt_at(uint32_t lane, uint64_t pos, const char *what)
{
	return fail(SHMBUS_ERR_CORRUPT, "lane %u at position %llu: %s", lane, (unsigned long long)pos, what);
}

/* release zeroes [released, pos) of lane, then moves the head (invariant Z),
 * then rings the lane's space doorbell. */
static void release(shmbus_consumer_t *c, uint32_t lane)
{
	clane_t *cl = &c->lanes[lane];
	if (cl->pos == cl->released)
		return;
	shmbus_t *b = c->b;
	uint64_t co = ctrl_off(lane), C = b->C;
	/* Where this release goes, before any zeroing: a successor that finds
	 * it != head finishes the release. Only a successor reads it, once
	 * this process is dead: program order suffices. */
	atomic_store_explicit(w64(b, co + C_RELEASING), cl->pos, RLX);
	uint64_t from = cl->released & (C - 1), n = cl->pos - cl->released;
	uint8_t *d = b->seg + b->data_off[lane];
	if (from + n <= C) {
		memset(d + from, 0, n);
	} else {
		memset(d + from, 0, C - from);
		memset(d, 0, n - (C - from));
	}
	/* Publishes the zeroed space: pairs with the producer's head load. */
	atomic_store_explicit(w64(b, co + C_HEAD), cl->pos, SC);
	cl->released = cl->pos;
	cl->un_msgs += cl->msgs;
	cl->un_bytes += cl->bytes;
	cl->msgs = cl->bytes = 0;
	if (cl->un_msgs >= STATS_EVERY) {
		atomic_fetch_add_explicit(w64(b, co + C_MSGS_OUT), cl->un_msgs, RLX);
		atomic_fetch_add_explicit(w64(b, co + C_BYTES_OUT), cl->un_bytes, RLX);
		cl->un_msgs = cl->un_bytes = 0;
	}
	bell_ring(b, w64(b, co + C_SPACE_BELL), 1 + (int)lane, w64(b, co + C_SPACE_WAKES));
}

static void consumer_flush(shmbus_consumer_t *c)
{
	for (uint32_t i = 0; i < c->b->L; i++) {
		clane_t *cl = &c->lanes[i];
		if (cl->un_msgs || cl->un_bytes) {
			atomic_fetch_add_explicit(w64(c->b, ctrl_off(i) + C_MSGS_OUT), cl->un_msgs, RLX);
			atomic_fetch_add_explicit(w64(c->b, ctrl_off(i) + C_BYTES_OUT), cl->un_bytes, RLX);
			cl->un_msgs = cl->un_bytes = 0;
		}
	}
}

/* remove_asm_files deletes SEGMENT~asm.* files, left by a Go consumer
 * that died in the middle of reassembling: this consumer reassembles in
 * memory and does not continue them, and a later Go consumer must not
 * append new fragments to them (layout.md 3.10). */
static void remove_asm_files(const char *path)
{
	if (!path)
		return;
	const char *slash = strrchr(path, '/');
	if (!slash)
		return;
	size_t dlen = (size_t)(slash - path);
	char dir[PATH_MAX], prefix[PATH_MAX];
	if (dlen == 0)
		dlen = 1; /* "/" */
	if (dlen >= sizeof dir || (size_t)snprintf(prefix, sizeof prefix, "%s~asm.", slash + 1) >= sizeof prefix)
		return;
	memcpy(dir, path, dlen);
	dir[dlen] = 0;
	DIR *d = opendir(dir);
	if (!d)
		return;
	size_t plen = strlen(prefix);
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, prefix, plen) != 0)
			continue;
		char full[PATH_MAX];
		if ((size_t)snprintf(full, sizeof full, "%s/%s", dir, e->d_name) < sizeof full)
			unlink(full);
	}
	closedir(d);
}

int shmbus_consumer_open(shmbus_t *b, shmbus_consumer_t **out)
{
	if (!b || !out)
		return fail(SHMBUS_ERR_INVALID, "NULL argument");
	*out = NULL;
	if (b->consumer)
		return fail(SHMBUS_ERR_BUSY, "this process already has a consumer on the bus");
	if (b->subscriptions)
		return fail(SHMBUS_ERR_UNSUPPORTED, "a fan-out bus (%u subscriptions) has no queue consumer; this client does not subscribe",
		            b->subscriptions);
	shmbus_consumer_t *c = calloc(1, sizeof *c);
	if (!c)
		return fail(SHMBUS_ERR_NO_MEMORY, "consumer");
	c->parts = calloc((size_t)b->L * b->P, sizeof *c->parts);
	c->starts = calloc(b->P, sizeof *c->starts);
	if (!c->parts || !c->starts) {
		free(c->parts);
		free(c->starts);
		free(c);
		return fail(SHMBUS_ERR_NO_MEMORY, "consumer tables");
	}
	c->b = b;
	int rc = join(b, ROLE_CONSUMER, &c->slot);
	if (rc != SHMBUS_OK)
		goto fail_free;
	rc = take_role(b, w32(b, H_CONSUMER), c->slot, ROLE_CONSUMER, "the consumer role");
	if (rc != SHMBUS_OK)
		goto fail_leave;
	for (uint32_t i = 0; i < b->L; i++) {
		uint64_t co = ctrl_off(i);
		uint64_t h = atomic_load_explicit(w64(b, co + C_HEAD), SC);
		uint64_t t = atomic_load_explicit(w64(b, co + C_TAIL), SC);
		if (t - h > b->C || h % 8 != 0) {
			rc = fail(SHMBUS_ERR_CORRUPT, "lane %u: head %llu, tail %llu", i, (unsigned long long)h, (unsigned long long)t);
			goto fail_role;
		}
		c->lanes[i].pos = c->lanes[i].released = h;
		uint64_t r = atomic_load_explicit(w64(b, co + C_RELEASING), SC);
		if (r != h) {
			/* The previous consumer died inside a release: finish it. */
			if (r - h > t - h || r % 8 != 0) {
				rc = fail(SHMBUS_ERR_CORRUPT, "lane %u: release in progress to %llu, head %llu, tail %llu", i,
				          (unsigned long long)r, (unsigned long long)h, (unsigned long long)t);
				goto fail_role;
			}
			c->lanes[i].pos = r;
			release(c, i);
		}
	}
	remove_asm_files(b->path);
	b->consumer = c;
	*out = c;
	return SHMBUS_OK;
fail_role:
	drop_role(w32(b, H_CONSUMER), c->slot);
fail_leave:
	leave(b, c->slot);
fail_free:
	free(c->parts);
	free(c->starts);
	free(c);
	return rc;
}

/* peek returns the next data record of lane without taking it, taking
 * padding on the way: SHMBUS_OK, SHMBUS_ERR_EMPTY or SHMBUS_ERR_CORRUPT. */
static int peek(shmbus_consumer_t *c, uint32_t lane, rec_t *out)
{
	shmbus_t *b = c->b;
	clane_t *cl = &c->lanes[lane];
	uint64_t C = b->C;
	for (;;) {
		if (cl->pos - cl->released >= C)
			return SHMBUS_ERR_EMPTY; /* a whole lap taken, not released */
		uint64_t off = cl->pos & (C - 1);
		uint8_t *r = b->seg + b->data_off[lane] + off;
		uint32_t n = atomic_load_explicit((a32 *)(void *)r, SC); /* pairs with the producer's commit */
		if (n == 0)
			return SHMBUS_ERR_EMPTY;
		uint32_t meta = rd32(r + 4);
		uint8_t type = (uint8_t)meta, flags = (uint8_t)(meta >> 8);
		uint64_t span = align_up(n, 8);
		char why[96];
		if (type == T_PADDING) {
			if (n < 8 || span > C - off || flags != 0 || n != span) {
				snprintf(why, sizeof why, "padding record of length %u, flags %u, at ring offset %llu", n, flags,
				         (unsigned long long)off);
				return corrupt_at(lane, cl->pos, why);
			}
		} else if (type == T_DATA) {
			if (n < 8 || n > b->R || span > C - off || (flags & ~3u) != 0) {
				snprintf(why, sizeof why, "data record of length %u, flags %#x, at ring offset %llu", n, flags,
				         (unsigned long long)off);
				return corrupt_at(lane, cl->pos, why);
			}
		} else {
			snprintf(why, sizeof why, "record type %u", type);
			return corrupt_at(lane, cl->pos, why);
		}
		if (cl->pos + span - cl->released > C)
			return corrupt_at(lane, cl->pos, "record runs past the lap");
		if (type == T_PADDING) {
			cl->pos += span;
			continue;
		}
		out->pos = cl->pos;
		out->len = n - 8;
		out->flags = flags;
		out->producer = (uint16_t)(meta >> 16);
		out->payload = r + 8;
		return SHMBUS_OK;
	}
}

/* take moves past the record r (peeked at the read position). */
static void take(shmbus_consumer_t *c, uint32_t lane, const rec_t *r)
{
	clane_t *cl = &c->lanes[lane];
	cl->pos = r->pos + align_up((uint64_t)r->len + 8, 8);
	if (r->flags & FRAG_END)
		cl->msgs++;
	cl->bytes += r->len;
}

static void part_drop(shmbus_consumer_t *c, part_t *x) { (void)c; x->active = false; }

static void part_free(shmbus_consumer_t *c, part_t *x)
{
	if (x->buf) {
		free(x->buf);
		c->nparts--;
	}
	memset(x, 0, sizeof *x);
}

/* A complete message: a record in the ring or a reassembled part. */
typedef struct msg {
	const uint8_t *data;
	uint64_t len;
	rec_t rec;   /* its last (or only) record */
	part_t *part;
} msg_t;

/* next finds the next complete message of lane, absorbing (and releasing)
 * fragments of larger messages on the way (Go: Consumer.next). */
static int next_msg(shmbus_consumer_t *c, uint32_t lane, msg_t *m)
{
	shmbus_t *b = c->b;
	for (;;) {
		rec_t r;
		int rc = peek(c, lane, &r);
		if (rc != SHMBUS_OK)
			return rc;
		uint32_t slot = r.producer;
		bool whole = r.flags == WHOLE;
		if (!whole && slot >= b->P) {
			char why[64];
			snprintf(why, sizeof why, "fragment from producer slot %u of %u", slot, b->P);
			return corrupt_at(lane, r.pos, why);
		}
		if (whole) {
			if (slot < b->P)
				part_drop(c, &c->parts[(size_t)lane * b->P + slot]); /* its producer gave up on an earlier message */
			m->data = r.payload;
			m->len = r.len;
			m->rec = r;
			m->part = NULL;
			return SHMBUS_OK;
		}
		part_t *x = &c->parts[(size_t)lane * b->P + slot];
		int err = SHMBUS_OK;
		switch (r.flags) {
		case FRAG_BEGIN: {
			if (r.len < 8)
				return corrupt_at(lane, r.pos, "first fragment shorter than its 8-byte total");
			uint64_t total = rd64(r.payload);
			if (total > b->max_message || total < (uint64_t)r.len - 8) {
				char why[96];
				snprintf(why, sizeof why, "message of %llu bytes (limit %llu)", (unsigned long long)total,
				         (unsigned long long)b->max_message);
				return corrupt_at(lane, r.pos, why);
			}
			x->active = false;
			if (!x->buf || x->cap < total) {
				uint8_t *nb = malloc(total ? total : 1);
				if (!nb) {
					/* Drop the message: its later fragments are orphans. */
					atomic_fetch_add_explicit(w64(b, H_DROPPED), 1, RLX);
					err = fail(SHMBUS_ERR_NO_MEMORY, "lane %u: %llu bytes to reassemble a message; dropped", lane,
					           (unsigned long long)total);
					break;
				}
				if (x->buf)
					free(x->buf);
				else
					c->nparts++;
				x->buf = nb;
				x->cap = total ? total : 1;
			}
			x->active = true;
			x->total = total;
			x->tag = atomic_load_explicit(w64(b, peer_off(b, slot) + P_OWNER), SC);
			x->filled = r.len - 8;
			memcpy(x->buf, r.payload + 8, r.len - 8);
			break;
		}
		case 0:
			if (x->active) { /* else an orphan: its first fragment was lost */
				if (x->filled > x->total || r.len > x->total - x->filled) {
					part_drop(c, x);
				} else {
					memcpy(x->buf + x->filled, r.payload, r.len);
					x->filled += r.len;
				}
			}
			break;
		case FRAG_END:
			if (!x->active)
				break; /* orphan */
			if (x->filled > x->total || x->total - x->filled != r.len) {
				part_drop(c, x);
				break;
			}
			/* Copied, not absorbed: the record stays until delivery. */
			memcpy(x->buf + x->filled, r.payload, r.len);
			m->data = x->buf;
			m->len = x->total;
			m->rec = r;
			m->part = x;
			return SHMBUS_OK;
		}
		/* Skip: take the fragment and release it at once. */
		take(c, lane, &r);
		release(c, lane);
		if (err != SHMBUS_OK)
			return err;
	}
}

/* lane_ready: a published record (or padding) waits at lane's read position. */
static bool lane_ready(shmbus_consumer_t *c, uint32_t lane)
{
	clane_t *cl = &c->lanes[lane];
	if (cl->pos - cl->released >= c->b->C)
		return false;
	return atomic_load_explicit((a32 *)(void *)ring_at(c->b, lane, cl->pos), SC) != 0;
}

static bool any_ready(void *arg)
{
	shmbus_consumer_t *c = arg;
	for (uint32_t i = 0; i < c->b->L; i++)
		if (lane_ready(c, i))
			return true;
	return false;
}

/* in_flight: space at the read position is claimed but not published. */
static bool in_flight(shmbus_consumer_t *c, uint32_t lane)
{
	uint64_t t = atomic_load_explicit(w64(c->b, ctrl_off(lane) + C_TAIL), SC);
	return t != c->lanes[lane].pos &&
	       atomic_load_explicit((a32 *)(void *)ring_at(c->b, lane, c->lanes[lane].pos), SC) == 0;
}

/* pad_span publishes [from, to) of lane as padding, split at the ring's end. */
static void pad_span(shmbus_t *b, uint32_t lane, uint64_t from, uint64_t to)
{
	while (from != to) {
		uint64_t off = from & (b->C - 1);
		uint64_t n = to - from < b->C - off ? to - from : b->C - off;
		uint8_t *r = b->seg + b->data_off[lane] + off;
		atomic_store_explicit((a32 *)(void *)(r + 4), (uint32_t)NO_PRODUCER << 16 | T_PADDING, RLX);
		atomic_store_explicit((a32 *)(void *)r, (uint32_t)n, SC);
		from += n;
	}
}

/* recover_lane pads over a provably dead producer's unpublished claim at
 * the read position (5.8; Go: ring.Consumer.Recover). */
static int recover_lane(shmbus_consumer_t *c, uint32_t lane)
{
	shmbus_t *b = c->b;
	clane_t *cl = &c->lanes[lane];
	uint64_t C = b->C, c0 = cl->pos;
	a32 *len0 = (a32 *)(void *)ring_at(b, lane, c0);
	if (c0 - cl->released >= C || atomic_load_explicit(len0, SC) != 0)
		return 0;
	uint64_t t = atomic_load_explicit(w64(b, ctrl_off(lane) + C_TAIL), SC); /* after the length load */
	if (t == c0)
		return 0;
	if (t - c0 > C)
		return fail(SHMBUS_ERR_CORRUPT, "lane %u: tail %llu is %llu bytes past the read position %llu", lane,
		            (unsigned long long)t, (unsigned long long)(t - c0), (unsigned long long)c0);
	bool live_at = false;
	uint32_t nstarts = 0, ncand = 0;
	uint64_t cand_end[8];
	uint32_t cand_slot[8];
	bool too_many = false;
	for (uint32_t s = 0; s < b->P; s++) {
		int st = slot_state(b, s);
		if (st == PEER_FREE)
			continue;
		uint64_t co = claim_off(b, s, lane);
		uint64_t pos = atomic_load_explicit(w64(b, co + CL_POS), SC);
		c->starts[nstarts++] = pos;
		if (st != PEER_DEAD) {
			/* Only a possible span can be the claimant's. */
			uint64_t end = atomic_load_explicit(w64(b, co + CL_END), SC);
			if (pos == c0 && end - pos - 1 < C)
				live_at = true;
			continue;
		}
		uint64_t end = atomic_load_explicit(w64(b, co + CL_END), SC);
		uint64_t ok = atomic_load_explicit(w64(b, co + CL_OK), SC);
		if (end - pos > C || end == pos || end % 8 != 0 || end - c0 > t - c0)
			continue; /* not a claim that can lie between c0 and t */
		if (ok == pos + 1 && c0 - pos < end - pos) {
			/* Rule (a). Re-check: the slot may have been taken over. */
			if (slot_state(b, s) != PEER_DEAD)
				return 0;
			if (atomic_load_explicit(len0, SC) != 0)
				return 0; /* published meanwhile, by a claimant now dead */
			pad_span(b, lane, c0, end);
			atomic_fetch_add_explicit(w64(b, ctrl_off(lane) + C_RECOVERED), 1, RLX);
			return 1;
		}
		if (ok != pos + 1 && pos == c0) {
			if (ncand < 8) {
				cand_end[ncand] = end;
				cand_slot[ncand] = s;
				ncand++;
			} else {
				too_many = true;
			}
		}
	}
	/* Rule (b). */
	if (live_at || ncand == 0 || too_many)
		return 0;
	uint64_t pick = 0;
	int found = 0;
	for (uint32_t i = 0; i < ncand; i++) {
		uint64_t e = cand_end[i];
		bool consistent = e == t || atomic_load_explicit((a32 *)(void *)ring_at(b, lane, e), SC) != 0;
		for (uint32_t k = 0; k < nstarts && !consistent; k++)
			consistent = c->starts[k] == e;
		if (!consistent)
			continue;
		if (found == 0) {
			pick = e;
			found = 1;
		} else if (e != pick) {
			found = 2;
		}
	}
	if (found != 1)
		return 0;
	for (uint32_t i = 0; i < ncand; i++)
		if (slot_state(b, cand_slot[i]) != PEER_DEAD)
			return 0; /* taken over meanwhile: look again later */
	if (atomic_load_explicit(len0, SC) != 0)
		return 0;
	pad_span(b, lane, c0, pick);
	atomic_fetch_add_explicit(w64(b, ctrl_off(lane) + C_RECOVERED), 1, RLX);
	return 1;
}

/* collect frees the reassembly state of lane whose producer is gone (slot
 * free, dead, or owned by another process now). Only when the lane has
 * nothing published at the read position: a dead producer's last
 * fragments may still be waiting there. */
static void collect(shmbus_consumer_t *c, uint32_t lane)
{
	shmbus_t *b = c->b;
	for (uint32_t s = 0; s < b->P; s++) {
		part_t *x = &c->parts[(size_t)lane * b->P + s];
		if (!x->buf)
			continue;
		uint64_t owner = atomic_load_explicit(w64(b, peer_off(b, s) + P_OWNER), SC);
		if (owner != x->tag || tag_state(b, owner) == PEER_DEAD)
			part_free(c, x);
	}
}

/* recover_all runs after every sleep (and now and then when a lane is
 * found empty while others keep the consumer busy), at most every 20 ms:
 * proving death reads /proc. */
static void recover_all(void *arg)
{
	shmbus_consumer_t *c = arg;
	int64_t now = mono_ns();
	if (c->last_recover != 0 && now - c->last_recover < RECOVER_EVERY_NS)
		return;
	c->last_recover = now;
	for (uint32_t i = 0; i < c->b->L; i++) {
		if (in_flight(c, i))
			recover_lane(c, i); /* an error (a corrupt tail) shows again at the next read */
		if (c->nparts > 0 && !lane_ready(c, i))
			collect(c, i);
	}
}

static int receive_now(shmbus_consumer_t *c, void *buf, size_t cap, size_t *len, int *prio)
{
	shmbus_t *b = c->b;
	for (int i = (int)b->L - 1; i >= 0; i--) {
		uint32_t lane = (uint32_t)i;
		msg_t m = {0};
		int rc = next_msg(c, lane, &m);
		if (rc == SHMBUS_ERR_EMPTY) {
			release(c, lane); /* padding skipped on the way */
			if (++c->empty_looks % 1024 == 0 && in_flight(c, lane))
				recover_all(c);
			continue;
		}
		if (rc != SHMBUS_OK)
			return rc;
		if (prio)
			*prio = i;
		if (len)
			*len = (size_t)m.len;
		if (m.len > cap)
			return fail(SHMBUS_ERR_SHORT_BUFFER, "message needs %llu bytes, buffer has %zu", (unsigned long long)m.len, cap);
		if (m.len)
			memcpy(buf, m.data, (size_t)m.len);
		take(c, lane, &m.rec);
		release(c, lane);
		if (m.part)
			part_drop(c, m.part);
		return SHMBUS_OK;
	}
	consumer_flush(c); /* idle: make the shared counters exact */
	return SHMBUS_ERR_EMPTY;
}

int shmbus_try_receive(shmbus_consumer_t *c, void *buf, size_t cap, size_t *len, int *prio)
{
	return shmbus_receive(c, buf, cap, len, prio, 0);
}

int shmbus_receive(shmbus_consumer_t *c, void *buf, size_t cap, size_t *len, int *prio, int timeout_ms)
{
	if (!c || (!buf && cap))
		return fail(SHMBUS_ERR_INVALID, "NULL argument");
	shmbus_t *b = c->b;
	int64_t deadline = deadline_of(timeout_ms);
	for (;;) {
		int rc = receive_now(c, buf, cap, len, prio);
		if (rc != SHMBUS_ERR_EMPTY)
			return rc;
		if (timeout_ms == 0)
			return fail_quick(SHMBUS_ERR_EMPTY, "bus empty: no message now");
		consumer_flush(c);
		int64_t backstop = BACKSTOP_NS;
		for (uint32_t i = 0; i < b->L; i++)
			if (in_flight(c, i))
				backstop = INFLIGHT_BACKSTOP_NS;
		rc = bell_wait(b, w64(b, H_DATA_BELL), 0, w64(b, H_CONSUMER_SLEEPS), any_ready, c, deadline, backstop,
		               recover_all, c);
		if (rc == SHMBUS_ERR_TIMEOUT)
			return fail(rc, "no message within %d ms", timeout_ms);
		if (rc != SHMBUS_OK)
			return rc;
	}
}

int shmbus_consumer_close(shmbus_consumer_t *c)
{
	if (!c)
		return SHMBUS_OK;
	shmbus_t *b = c->b;
	for (uint32_t i = 0; i < b->L; i++)
		release(c, i);
	consumer_flush(c);
	drop_role(w32(b, H_CONSUMER), c->slot);
	leave(b, c->slot);
	for (size_t i = 0; i < (size_t)b->L * b->P; i++)
		if (c->parts[i].buf)
			free(c->parts[i].buf);
	free(c->parts);
	free(c->starts);
	if (b->consumer == c)
		b->consumer = NULL;
	free(c);
	return SHMBUS_OK;
}

int shmbus_close(shmbus_t *b)
{
	if (!b)
		return SHMBUS_OK;
	while (b->producers)
		shmbus_producer_close(b->producers);
	if (b->consumer)
		shmbus_consumer_close(b->consumer);
	munmap(b->seg, (size_t)b->total);
	free(b->path);
	free(b);
	return SHMBUS_OK;
}

/* ---- through the daemon (docs/daemon-protocol.md) ----
 *
 * One short conversation: connect, HELLO, OPEN, with the BUS reply's
 * descriptor taken from SCM_RIGHTS. Everything the daemon sends is
 * checked before it is used: frame lengths against D_MAX_REPLY, every field
 * against the bytes left in its payload, descriptors against what the reply
 * says came (the others are closed). The socket stays in blocking mode for
 * the caller; each step here waits with poll against one deadline and reads
 * or writes with MSG_DONTWAIT. */

enum {
	DT_HELLO = 0x0001, DT_OPEN = 0x0003,
	DT_WELCOME = 0x8001, DT_BUS = 0x8002, DT_EVENT = 0x8009, DT_ERROR = 0x80FF,
	DF_WANT_FD = 1 << 2,
	D_HEADER = 12,
	D_MAX_FDS = 8,        /* descriptors kept per frame; more is a protocol error */
	D_PROTO_VERSION = 1,
};
/* Largest reply payload accepted. The replies read here are far smaller (a
 * WELCOME or ERROR has one str: < 64 KiB + 16); later versions may add
 * fields, hence the slack. */
#define D_MAX_REPLY (1u << 20)

typedef struct dconn {
	int fd;
	int64_t deadline;      /* mono_ns */
	int fds[D_MAX_FDS];    /* descriptors received with the frame being read */
	int nfds;
} dconn_t;

static void d_drop_fds(dconn_t *c)
{
	for (int i = 0; i < c->nfds; i++)
		close(c->fds[i]);
	c->nfds = 0;
}

static int d_timeout(void)
{
	return fail(SHMBUS_ERR_TIMEOUT, "the daemon did not answer within %d ms", SHMBUS_DAEMON_TIMEOUT_MS);
}

/* d_wait waits until the socket is ready for ev (or has failed or hung
 * up: the next read or write says which), or the deadline passes. */
static int d_wait(dconn_t *c, short ev)
{
	for (;;) {
		int64_t left = c->deadline - mono_ns();
		if (left <= 0)
			return d_timeout();
		struct pollfd p = {.fd = c->fd, .events = ev};
		int n = poll(&p, 1, (int)((left + 999999) / 1000000));
		if (n > 0)
			return SHMBUS_OK;
		if (n < 0 && errno != EINTR)
			return fail(SHMBUS_ERR_SYS, "poll on the daemon's socket: %s", strerror(errno));
	}
}

static int d_write(dconn_t *c, const uint8_t *p, size_t n)
{
	while (n > 0) {
		int rc = d_wait(c, POLLOUT);
		if (rc)
			return rc;
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
				continue;
			return fail(SHMBUS_ERR_SYS, "send to the daemon: %s", strerror(errno));
		}
		p += w;
		n -= (size_t)w;
	}
	return SHMBUS_OK;
}

/* d_read reads exactly n bytes into p, keeping the descriptors that come
 * with them in c->fds. A frame is read from its first byte by reads of its
 * own, so the descriptors collected while reading one are that frame's. */
static int d_read(dconn_t *c, uint8_t *p, size_t n)
{
	while (n > 0) {
		int rc = d_wait(c, POLLIN);
		if (rc)
			return rc;
		union {
			struct cmsghdr h;
			char b[CMSG_SPACE(D_MAX_FDS * sizeof(int))];
		} cm;
		memset(&cm, 0, sizeof cm);
		struct iovec iov = {.iov_base = p, .iov_len = n};
		struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof cm.b};
		ssize_t r = recvmsg(c->fd, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
				continue;
			return fail(SHMBUS_ERR_SYS, "receive from the daemon: %s", strerror(errno));
		}
		bool extra = (m.msg_flags & MSG_CTRUNC) != 0;
		const char *end = cm.b + (m.msg_controllen < sizeof cm.b ? m.msg_controllen : sizeof cm.b);
		for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h)) {
			if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS || h->cmsg_len < CMSG_LEN(0))
				continue;
			const unsigned char *data = CMSG_DATA(h);
			size_t k = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			if ((size_t)(end - (const char *)data) / sizeof(int) < k)
				k = (size_t)(end - (const char *)data) / sizeof(int);
			for (size_t i = 0; i < k; i++) {
				int fd;
				memcpy(&fd, data + i * sizeof(int), sizeof fd);
				if (c->nfds < D_MAX_FDS)
					c->fds[c->nfds++] = fd;
				else {
					close(fd);
					extra = true;
				}
			}
		}
		if (extra)
			return fail(SHMBUS_ERR_PROTOCOL, "more than %d descriptors came with one reply", D_MAX_FDS);
		if (r == 0)
			return fail(SHMBUS_ERR_PROTOCOL, "the daemon closed the connection (a reply missing or cut short)");
		p += r;
		n -= (size_t)r;
	}
	return SHMBUS_OK;
}

/* d_frame reads the next frame: its type, id and payload (malloc'd, *len
 * bytes; free it). Descriptors left from an earlier frame are closed. */
static int d_frame(dconn_t *c, uint16_t *type, uint32_t *id, uint8_t **payload, uint32_t *len)
{
	*payload = NULL;
	d_drop_fds(c);
	uint8_t h[D_HEADER];
	int rc = d_read(c, h, sizeof h);
	if (rc)
		return rc;
	uint32_t length = rd32(h);
	uint16_t flags;
	memcpy(type, h + 4, 2);
	memcpy(&flags, h + 6, 2);
	*id = rd32(h + 8);
	if (length < 8 || length - 8 > D_MAX_REPLY)
		return fail(SHMBUS_ERR_PROTOCOL, "reply frame length %u outside 8..%u", length, 8 + D_MAX_REPLY);
	if (flags)
		return fail(SHMBUS_ERR_PROTOCOL, "reply frame with flags %#x", flags);
	*len = length - 8;
	*payload = malloc(*len ? *len : 1);
	if (!*payload)
		return fail(SHMBUS_ERR_NO_MEMORY, "%u-byte reply", *len);
	if ((rc = d_read(c, *payload, *len)) != SHMBUS_OK) {
		free(*payload);
		*payload = NULL;
	}
	return rc;
}

/* dec reads the fields of a payload; reading past its end sets bad and
 * yields zeros. */
typedef struct dec {
	const uint8_t *p;
	size_t n, off;
	bool bad;
} dec_t;

static uint64_t dec_uint(dec_t *d, size_t w)
{
	if (d->bad || d->n - d->off < w) {
		d->bad = true;
		return 0;
	}
	uint64_t v = 0;
	for (size_t i = 0; i < w; i++)
		v |= (uint64_t)d->p[d->off + i] << (8 * i);
	d->off += w;
	return v;
}

static const uint8_t *dec_str(dec_t *d, size_t *len)
{
	size_t n = (size_t)dec_uint(d, 2);
	if (d->bad || d->n - d->off < n) {
		d->bad = true;
		*len = 0;
		return (const uint8_t *)"";
	}
	const uint8_t *s = d->p + d->off;
	d->off += n;
	*len = n;
	return s;
}

/* printable copies a string from the daemon for an error message: at most
 * 300 bytes, control characters as '?'. */
static void printable(char *dst, size_t cap, const uint8_t *s, size_t n)
{
	size_t i = 0;
	for (; i < n && i + 1 < cap && i < 300; i++)
		dst[i] = s[i] < 0x20 || s[i] == 0x7F ? '?' : (char)s[i];
	dst[i] = 0;
}

static int daemon_error(const uint8_t *payload, uint32_t len)
{
	static const struct { int code; const char *name; } codes[] = {
		{SHMBUS_ERR_PROTOCOL, NULL},       {SHMBUS_ERR_PROTOCOL, "BAD_FRAME"},
		{SHMBUS_ERR_PROTOCOL, "UNKNOWN_TYPE"}, {SHMBUS_ERR_TOO_LARGE, "TOO_LARGE"},
		{SHMBUS_ERR_PROTOCOL, "BAD_VERSION"},   {SHMBUS_ERR_PROTOCOL, "HELLO_REQUIRED"},
		{SHMBUS_ERR_NOT_EXIST, "NOT_FOUND"},   {SHMBUS_ERR_DAEMON, "EXISTS"},
		{SHMBUS_ERR_PERMISSION, "PERMISSION"}, {SHMBUS_ERR_BAD_NAME, "BAD_NAME"},
		{SHMBUS_ERR_INVALID, "BAD_ARGUMENT"},  {SHMBUS_ERR_BUSY, "BUSY"},
		{SHMBUS_ERR_FULL, "FULL"},             {SHMBUS_ERR_EMPTY, "EMPTY"},
		{SHMBUS_ERR_TIMEOUT, "TIMEOUT"},       {SHMBUS_ERR_NO_SLOT, "NO_SLOT"},
		{SHMBUS_ERR_CORRUPT, "CORRUPT"},       {SHMBUS_ERR_UNSUPPORTED, "UNSUPPORTED"},
		{SHMBUS_ERR_DAEMON, "SHUTDOWN"},       {SHMBUS_ERR_DAEMON, "INTERNAL"},
		{SHMBUS_ERR_BUSY, "CONN_LIMIT"},       {SHMBUS_ERR_BUSY, "OVERLOADED"},
	};
	dec_t d = {.p = payload, .n = len};
	unsigned code = (unsigned)dec_uint(&d, 2);
	size_t n;
	const uint8_t *msg = dec_str(&d, &n);
	if (d.bad)
		return fail(SHMBUS_ERR_PROTOCOL, "malformed ERROR reply (%u bytes)", len);
	char text[320];
	printable(text, sizeof text, msg, n);
	if (code == 0 || code >= sizeof codes / sizeof codes[0])
		return fail(SHMBUS_ERR_DAEMON, "daemon code %u: %s", code, text);
	return fail(codes[code].code, "daemon %s: %s", codes[code].name, text);
}

static int d_request(dconn_t *c, uint16_t type, uint32_t id, const uint8_t *payload, size_t n)
{
	uint8_t f[D_HEADER + 256];
	if (n > sizeof f - D_HEADER)
		return fail(SHMBUS_ERR_INVALID, "request too long");
	uint32_t length = (uint32_t)(8 + n);
	uint16_t flags = 0;
	memcpy(f, &length, 4);
	memcpy(f + 4, &type, 2);
	memcpy(f + 6, &flags, 2);
	memcpy(f + 8, &id, 4);
	memcpy(f + D_HEADER, payload, n);
	return d_write(c, f, D_HEADER + n);
}

/* d_reply reads the reply to request id, of type want (or ERROR, mapped to
 * a code). Events are skipped. */
static int d_reply(dconn_t *c, uint32_t id, uint16_t want, uint8_t **payload, uint32_t *len)
{
	for (;;) {
		uint16_t type;
		uint32_t fid;
		int rc = d_frame(c, &type, &fid, payload, len);
		if (rc)
			return rc;
		if (type == DT_EVENT && fid == 0) {
			free(*payload);
			continue;
		}
		if (type == DT_ERROR && (fid == id || fid == 0)) {
			rc = daemon_error(*payload, *len);
		} else if (fid != id) {
			rc = fail(SHMBUS_ERR_PROTOCOL, "reply to request %u while waiting for %u", fid, id);
		} else if (type != want) {
			rc = fail(SHMBUS_ERR_PROTOCOL, "reply of type %#06x to request %u, want %#06x", type, id, want);
		} else
			return SHMBUS_OK;
		free(*payload);
		*payload = NULL;
		return rc;
	}
}

int shmbus_daemon_socket_path(char *buf, size_t cap)
{
	if (!buf || !cap)
		return fail(SHMBUS_ERR_INVALID, "no buffer for the socket path");
	const char *s = getenv("SHMBUS_SOCKET"), *x = getenv("XDG_RUNTIME_DIR");
	int n;
	if (s && *s)
		n = snprintf(buf, cap, "%s", s);
	else if (geteuid() != 0 && x && *x)
		n = snprintf(buf, cap, "%s/shmbus.sock", x);
	else
		n = snprintf(buf, cap, "/run/shmbus/shmbus.sock");
	if (n < 0 || (size_t)n >= cap) {
		buf[0] = 0;
		return fail(SHMBUS_ERR_INVALID, "the daemon's socket path is longer than %zu bytes", cap - 1);
	}
	return SHMBUS_OK;
}

static int d_connect(dconn_t *c, const char *path)
{
	struct sockaddr_un a;
	memset(&a, 0, sizeof a);
	a.sun_family = AF_UNIX;
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof a.sun_path)
		return fail(SHMBUS_ERR_INVALID, "socket path of %zu bytes (1..%zu)", n, sizeof a.sun_path - 1);
	memcpy(a.sun_path, path, n);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return fail(SHMBUS_ERR_SYS, "socket: %s", strerror(errno));
	if (connect(c->fd, (struct sockaddr *)&a, sizeof a) == 0)
		return SHMBUS_OK;
	int e = errno;
	if (e == EINTR) {
		/* The connection goes on asynchronously: wait for its outcome. */
		int rc = d_wait(c, POLLOUT);
		socklen_t sl = sizeof e;
		if (rc)
			return rc;
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &sl) < 0)
			e = errno;
		if (e == 0)
			return SHMBUS_OK;
	}
	return fail(SHMBUS_ERR_SYS, "connect to the daemon at %.300s: %s", path, strerror(e));
}

int shmbus_daemon_open(const char *socket_path, const char *name, int want_fd, int *fd_out, int *conn_out,
                       shmbus_daemon_info *info)
{
	if (fd_out)
		*fd_out = -1;
	if (conn_out)
		*conn_out = -1;
	if (want_fd && (!fd_out || !conn_out))
		return fail(SHMBUS_ERR_INVALID, "want_fd needs fd_out and conn_out");
	if (!valid_name(name))
		return fail(SHMBUS_ERR_BAD_NAME, "%.220s", name ? name : "(null)");
	char def[sizeof(((struct sockaddr_un *)0)->sun_path)];
	if (!socket_path || !*socket_path) {
		int rc = shmbus_daemon_socket_path(def, sizeof def);
		if (rc)
			return rc;
		socket_path = def;
	}
	dconn_t c = {.fd = -1, .deadline = mono_ns() + (int64_t)SHMBUS_DAEMON_TIMEOUT_MS * 1000000};
	uint8_t req[256], *pl = NULL;
	uint32_t len;
	int rc = d_connect(&c, socket_path);
	if (rc)
		goto out;

	/* HELLO: u16 version, str client. */
	static const char me[] = "shmbus-c";
	req[0] = D_PROTO_VERSION, req[1] = 0;
	req[2] = sizeof me - 1, req[3] = 0;
	memcpy(req + 4, me, sizeof me - 1);
	if ((rc = d_request(&c, DT_HELLO, 1, req, 4 + sizeof me - 1)) || (rc = d_reply(&c, 1, DT_WELCOME, &pl, &len)))
		goto out;
	/* WELCOME: u16 version, u32 max_payload, str server, u32 pid, uid, gid
	 * (later versions may add fields). */
	dec_t d = {.p = pl, .n = len};
	unsigned version = (unsigned)dec_uint(&d, 2);
	uint32_t max_payload = (uint32_t)dec_uint(&d, 4);
	size_t sn;
	dec_str(&d, &sn);
	dec_uint(&d, 4), dec_uint(&d, 4), dec_uint(&d, 4);
	if (d.bad) {
		rc = fail(SHMBUS_ERR_PROTOCOL, "malformed WELCOME (%u bytes)", len);
		goto out;
	}
	if (version != D_PROTO_VERSION) {
		rc = fail(SHMBUS_ERR_PROTOCOL, "the daemon answered HELLO for protocol version %u with version %u",
		          D_PROTO_VERSION, version);
		goto out;
	}
	size_t nn = strlen(name); /* 1..200: valid_name */
	if (max_payload < 2 + nn + 1) {
		rc = fail(SHMBUS_ERR_PROTOCOL, "WELCOME: max_payload %u", max_payload);
		goto out;
	}
	if (c.nfds) {
		rc = fail(SHMBUS_ERR_PROTOCOL, "a descriptor came with WELCOME");
		goto out;
	}
	free(pl);
	pl = NULL;

	/* OPEN: str name, u8 flags. */
	req[0] = (uint8_t)nn, req[1] = 0;
	memcpy(req + 2, name, nn);
	req[2 + nn] = want_fd ? DF_WANT_FD : 0;
	if ((rc = d_request(&c, DT_OPEN, 2, req, 3 + nn)) || (rc = d_reply(&c, 2, DT_BUS, &pl, &len)))
		goto out;
	/* BUS: str name, u8 kind, producers, wake, fd, u16 priorities, mode,
	 * u32 uid, gid, u64 size, max_message, u32 max_record. */
	d = (dec_t){.p = pl, .n = len};
	size_t bn;
	const uint8_t *bname = dec_str(&d, &bn);
	shmbus_daemon_info in;
	memset(&in, 0, sizeof in);
	in.kind = (int)dec_uint(&d, 1);
	unsigned producers = (unsigned)dec_uint(&d, 1);
	in.wake = (int)dec_uint(&d, 1);
	unsigned has_fd = (unsigned)dec_uint(&d, 1);
	in.priorities = (int)dec_uint(&d, 2);
	in.mode = (unsigned)dec_uint(&d, 2);
	in.uid = (uint32_t)dec_uint(&d, 4);
	in.gid = (uint32_t)dec_uint(&d, 4);
	in.size = dec_uint(&d, 8);
	in.max_message = dec_uint(&d, 8);
	in.max_record = (uint32_t)dec_uint(&d, 4);
	in.multi_producer = producers == 0;
	if (d.bad) {
		rc = fail(SHMBUS_ERR_PROTOCOL, "malformed BUS reply (%u bytes)", len);
		goto out;
	}
	if (bn != nn || memcmp(bname, name, nn) != 0) {
		char got[320];
		printable(got, sizeof got, bname, bn);
		rc = fail(SHMBUS_ERR_PROTOCOL, "BUS reply for bus \"%s\", asked for \"%s\"", got, name);
		goto out;
	}
	if ((in.kind != SHMBUS_KIND_FILE && in.kind != SHMBUS_KIND_MEMFD) || producers > 1 ||
	    (in.wake != SHMBUS_WAKE_FUTEX && in.wake != SHMBUS_WAKE_SEM)) {
		rc = fail(SHMBUS_ERR_PROTOCOL, "BUS reply: kind %d, producers %u, wake %d", in.kind, producers, in.wake);
		goto out;
	}
	if (has_fd != (want_fd ? 1u : 0u) || (unsigned)c.nfds != has_fd) {
		rc = fail(SHMBUS_ERR_PROTOCOL, "BUS reply says fd=%u, %d descriptor(s) came, %s asked for", has_fd, c.nfds,
		          want_fd ? "one" : "none");
		goto out;
	}
	if (want_fd) {
		struct stat st;
		if (fstat(c.fds[0], &st) < 0) {
			rc = fail(SHMBUS_ERR_SYS, "fstat of the daemon's descriptor: %s", strerror(errno));
			goto out;
		}
		if (!S_ISREG(st.st_mode)) {
			rc = fail(SHMBUS_ERR_PROTOCOL, "the daemon's descriptor is not a regular file (mode %#o)",
			          (unsigned)st.st_mode);
			goto out;
		}
		if ((uint64_t)st.st_size != in.size) {
			rc = fail(SHMBUS_ERR_PROTOCOL, "the daemon's descriptor has %lld bytes; the reply says a segment of %llu",
			          (long long)st.st_size, (unsigned long long)in.size);
			goto out;
		}
		*fd_out = c.fds[0];
		c.nfds = 0;
	}
	if (info)
		*info = in;
	if (conn_out)
		*conn_out = c.fd;
	else
		close(c.fd);
	c.fd = -1;
out:
	free(pl);
	d_drop_fds(&c);
	if (c.fd >= 0)
		close(c.fd);
	return rc;
}

int shmbus_daemon_attach(const char *socket_path, const char *name, const shmbus_open_options *opts, shmbus_t **bus,
                         int *conn_out, shmbus_daemon_info *info)
{
	if (!bus || !conn_out)
		return fail(SHMBUS_ERR_INVALID, "NULL result pointer");
	*bus = NULL;
	int fd, conn;
	int rc = shmbus_daemon_open(socket_path, name, 1, &fd, &conn, info);
	if (rc)
		return rc;
	rc = shmbus_open_fd(fd, opts, bus);
	close(fd);
	if (rc) {
		close(conn);
		return rc;
	}
	*conn_out = conn;
	return SHMBUS_OK;
}

int shmbus_daemon_close(int conn)
{
	if (conn < 0)
		return fail(SHMBUS_ERR_INVALID, "connection %d", conn);
	if (close(conn) < 0 && errno != EINTR)
		return fail(SHMBUS_ERR_SYS, "close: %s", strerror(errno));
	return SHMBUS_OK;
}

/* ---- boards (docs/layout.md, section 7) ---- */

static const uint8_t BOARD_MAGIC[8] = {0x89, 'S', 'H', 'M', 'B', 'R', 'D', '\n'};

enum {
	B_VERSION = 1,
	BH_TOTAL = 0x010, BH_FLAGS = 0x018, BH_WAKE = 0x01C, BH_CELLS = 0x020, BH_MAX_VALUE = 0x024,
	BH_CELL_SIZE = 0x028, BH_COPY_SIZE = 0x02C, BH_CELL_TABLE = 0x030, BH_SEM_ID = 0x038,
	BH_SEM_COOKIE = 0x03C, BH_REVISION = 0x080, BH_BELL = 0x100, BH_CONFLICTS = 0x188, BH_RECOVERIES = 0x190,
	BH_SLEEPS = 0x198, BH_WAKES = 0x1A0,
	CELL_STATE = 0x000, CELL_KEY_LEN = 0x004, CELL_HASH = 0x008, CELL_LOCK = 0x010, CELL_CURRENT = 0x018,
	CELL_KEY = 0x040, CELL_COPIES = 0x140,
	COPY_SEQ = 0x00, COPY_REV = 0x08, COPY_LEN = 0x10, COPY_FLAGS = 0x14, COPY_DATA = 0x20,
	COPY_TOMBSTONE = 1,
	MAX_KEY = 255, MAX_CELLS = 1 << 20, MAX_VALUE = 1 << 20,
};

struct shmbus_board {
	shmbus_t base; /* seg, total, wake, semid (a set of 2: L = 0), tag: what the shared helpers need */
	uint32_t cells, max_value;
	uint64_t cell_size, copy_size;
};

static uint64_t fnv1a(const uint8_t *k, size_t n)
{
	uint64_t h = 14695981039346656037ull;
	for (size_t i = 0; i < n; i++) {
		h ^= k[i];
		h *= 1099511628211ull;
	}
	return h;
}

static uint64_t cell_off(const shmbus_board_t *b, uint32_t i) { return HEADER_SIZE + (uint64_t)i * b->cell_size; }
static uint64_t copy_off(const shmbus_board_t *b, uint32_t i, uint32_t c)
{
	return cell_off(b, i) + CELL_COPIES + (uint64_t)c * b->copy_size;
}

/* board_validate is layout.BoardHeader.Validate (7.2, 7.3). */
static int board_validate(shmbus_board_t *b, const uint8_t *hp, uint64_t file_size)
{
	uint32_t version = rd32(hp + H_VERSION);
	if (version != B_VERSION)
		return fail(SHMBUS_ERR_VERSION, "board version %u, this client reads %d", version, B_VERSION);
	if (rd32(hp + H_HEADER_SIZE) != HEADER_SIZE || rd64(hp + BH_CELL_TABLE) != HEADER_SIZE || rd32(hp + BH_FLAGS) != 0)
		return fail(SHMBUS_ERR_CORRUPT, "board header size, cell table or flags");
	uint32_t k = rd32(hp + BH_CELLS), v = rd32(hp + BH_MAX_VALUE), wake = rd32(hp + BH_WAKE);
	if (k < 1 || k > MAX_CELLS || v > MAX_VALUE || (wake != SHMBUS_WAKE_FUTEX && wake != SHMBUS_WAKE_SEM))
		return fail(SHMBUS_ERR_CORRUPT, "board of %u cells, values up to %u, wake mode %u", k, v, wake);
	uint64_t copy = align_up(COPY_DATA + (uint64_t)v, 64);
	uint64_t cell = align_up(CELL_COPIES + 2 * copy, 128);
	uint64_t total = align_up(HEADER_SIZE + (uint64_t)k * cell, HEADER_SIZE);
	if (rd32(hp + BH_CELL_SIZE) != cell || rd32(hp + BH_COPY_SIZE) != copy || rd64(hp + BH_TOTAL) != total)
		return fail(SHMBUS_ERR_CORRUPT, "board cell size, copy size or total size disagree with the layout");
	if (total > (1ull << 36) || file_size != total)
		return fail(SHMBUS_ERR_CORRUPT, "file is %llu bytes, the board needs %llu", (unsigned long long)file_size,
		            (unsigned long long)total);
	int32_t semid = (int32_t)rd32(hp + BH_SEM_ID);
	if (wake == SHMBUS_WAKE_SEM && semid < 0)
		return fail(SHMBUS_ERR_CORRUPT, "sem wake mode without a semaphore set");
	b->cells = k;
	b->max_value = v;
	b->copy_size = copy;
	b->cell_size = cell;
	b->base.total = total;
	b->base.wake = wake;
	b->base.semid = wake == SHMBUS_WAKE_SEM ? semid : -1;
	b->base.sem_cookie = rd32(hp + BH_SEM_COOKIE);
	b->base.L = 0;
	return SHMBUS_OK;
}

int shmbus_board_open(const char *name, const shmbus_open_options *o, shmbus_board_t **out)
{
	if (!out)
		return fail(SHMBUS_ERR_INVALID, "NULL result pointer");
	*out = NULL;
	if (!valid_name(name))
		return fail(SHMBUS_ERR_BAD_NAME, "%.220s", name ? name : "(null)");
	const uint16_t probe = 1;
	uint8_t lo;
	memcpy(&lo, &probe, 1);
	if (lo != 1)
		return fail(SHMBUS_ERR_UNSUPPORTED, "big-endian host");
	const char *dir = o && o->dir && *o->dir ? o->dir : getenv("SHMBUS_DIR");
	if (!dir || !*dir)
		dir = "/dev/shm";
	char path[PATH_MAX];
	if ((size_t)snprintf(path, sizeof path, "%s/shmbus-board.%s", dir, name) >= sizeof path)
		return fail(SHMBUS_ERR_INVALID, "path too long");
	int fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return fail_errno(errno, "open", path);
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	shmbus_board_t *b = calloc(1, sizeof *b);
	uint8_t *hp = malloc(HEADER_SIZE);
	int rc = SHMBUS_OK;
	if (!b || !hp) {
		rc = fail(SHMBUS_ERR_NO_MEMORY, "board handle");
		goto fail;
	}
	uint64_t size = 0;
	rc = wait_ready_kind(fd, o ? o->wait_ms : 0, hp, &size, BOARD_MAGIC, B_VERSION);
	if (rc == SHMBUS_OK)
		rc = board_validate(b, hp, size);
	if (rc != SHMBUS_OK)
		goto fail;
	b->base.seg = mmap(NULL, (size_t)b->base.total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (b->base.seg == MAP_FAILED) {
		b->base.seg = NULL;
		rc = fail_errno(errno, "mmap", path);
		goto fail;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != b->base.total) {
		rc = fail(SHMBUS_ERR_CORRUPT, "file changed size while being opened");
		goto fail;
	}
	if (b->base.wake == SHMBUS_WAKE_SEM && (rc = check_sems(&b->base)) != SHMBUS_OK)
		goto fail;
	b->base.pid = (uint32_t)getpid();
	if (read_stat(b->base.pid, &b->base.start, NULL) != STAT_OK) {
		rc = fail(SHMBUS_ERR_SYS, "cannot read this process's start time");
		goto fail;
	}
	b->base.tag = (uint64_t)b->base.pid << 32 | (b->base.start & 0xFFFFFFFFu);
	free(hp);
	close(fd);
	*out = b;
	return SHMBUS_OK;
fail:
	if (b && b->base.seg)
		munmap(b->base.seg, (size_t)b->base.total);
	free(b);
	free(hp);
	close(fd);
	return rc;
}

int shmbus_board_close(shmbus_board_t *b)
{
	if (!b)
		return SHMBUS_OK;
	int rc = SHMBUS_OK;
	if (b->base.seg && munmap(b->base.seg, (size_t)b->base.total) < 0)
		rc = fail(SHMBUS_ERR_SYS, "munmap: %s", strerror(errno));
	free(b);
	return rc;
}

/* board_find is 7.5: the cell of key, or -1 (never written); -2 corrupt. */
static int64_t board_find(const shmbus_board_t *b, const uint8_t *key, size_t n, uint64_t h)
{
	uint32_t home = (uint32_t)(h % b->cells);
	for (uint32_t k = 0; k < b->cells; k++) {
		uint32_t i = home + k < b->cells ? home + k : home + k - b->cells;
		uint64_t c = cell_off(b, i);
		uint32_t st = atomic_load_explicit(w32(&b->base, c + CELL_STATE), SC);
		if (st == 0)
			return -1;
		if (st != 1)
			return fail(SHMBUS_ERR_CORRUPT, "cell %u: state %u", i, st), -2;
		uint32_t kl = atomic_load_explicit(w32(&b->base, c + CELL_KEY_LEN), SC);
		if (kl == 0 || kl > MAX_KEY)
			return fail(SHMBUS_ERR_CORRUPT, "cell %u: key length %u", i, kl), -2;
		if (kl == n && atomic_load_explicit(w64(&b->base, c + CELL_HASH), SC) == h &&
		    memcmp(b->base.seg + c + CELL_KEY, key, n) == 0)
			return i;
	}
	return -1;
}

/* board_read is 7.6 for cell i: its latest complete value into buf (cap
 * bytes), *len its length, *rev its revision, *dead whether it is a
 * tombstone. SHMBUS_ERR_NOT_FOUND for a cell never written. */
static int board_read(const shmbus_board_t *b, uint32_t i, void *buf, size_t cap, size_t *len, uint64_t *rev,
                      int *dead)
{
	a64 *cur = w64(&b->base, cell_off(b, i) + CELL_CURRENT);
	for (long tries = 0;; tries++) {
		uint64_t cw = atomic_load_explicit(cur, SC);
		if (cw == 0)
			return fail_quick(SHMBUS_ERR_NOT_FOUND, "never written");
		uint64_t cp = copy_off(b, i, (uint32_t)(cw & 1));
		a64 *seq = w64(&b->base, cp + COPY_SEQ);
		uint64_t s1 = atomic_load_explicit(seq, SC);
		if (!(s1 & 1)) {
			const uint8_t *c = b->base.seg + cp;
			uint64_t crev = rd64(c + COPY_REV);
			uint32_t n = rd32(c + COPY_LEN), flags = rd32(c + COPY_FLAGS);
			if (n <= b->max_value && n <= cap)
				memcpy(buf, c + COPY_DATA, n);
			atomic_thread_fence(memory_order_acquire); /* the copy before the second load */
			if (atomic_load_explicit(seq, SC) == s1 && crev == cw >> 1) {
				if (n > b->max_value || (flags & ~(uint32_t)COPY_TOMBSTONE) || ((flags & COPY_TOMBSTONE) && n))
					return fail(SHMBUS_ERR_CORRUPT, "cell %u: copy of %u bytes, flags %#x", i, n, flags);
				*rev = crev;
				*dead = (flags & COPY_TOMBSTONE) != 0;
				*len = n;
				if (n > cap)
					return fail_quick(SHMBUS_ERR_SHORT_BUFFER, "value larger than the buffer");
				return SHMBUS_OK;
			}
		}
		if (tries > 100000 && atomic_load_explicit(cur, SC) == cw)
			return fail(SHMBUS_ERR_CORRUPT, "cell %u: the current copy never settles", i);
		cpu_relax();
	}
}

int shmbus_board_get(shmbus_board_t *b, const void *key, size_t klen, void *buf, size_t cap, size_t *len,
                     uint64_t *rev)
{
	if (!b || !key || klen < 1 || klen > MAX_KEY || (!buf && cap > 0))
		return fail(SHMBUS_ERR_INVALID, "key of %zu bytes", klen);
	int64_t i = board_find(b, key, klen, fnv1a(key, klen));
	if (i == -2)
		return SHMBUS_ERR_CORRUPT;
	if (i < 0)
		return fail_quick(SHMBUS_ERR_NOT_FOUND, "never written");
	size_t n = 0;
	uint64_t r = 0;
	int dead = 0;
	int rc = board_read(b, (uint32_t)i, buf, cap, &n, &r, &dead);
	if (rc == SHMBUS_OK || rc == SHMBUS_ERR_SHORT_BUFFER) {
		if (rev)
			*rev = r;
		if (dead)
			return fail_quick(SHMBUS_ERR_NOT_FOUND, "deleted");
		if (len)
			*len = n;
	}
	return rc;
}

/* board_lock takes cell i's lock: free, or from a holder proven dead. */
static void board_lock(shmbus_board_t *b, uint32_t i)
{
	a64 *l = w64(&b->base, cell_off(b, i) + CELL_LOCK);
	for (long spins = 0;; spins++) {
		uint64_t o = atomic_load_explicit(l, SC);
		if (o == 0) {
			if (atomic_compare_exchange_strong_explicit(l, &o, b->base.tag, SC, SC))
				return;
			continue;
		}
		if (o == b->base.tag)
			return; /* left by this process */
		if (spins > 100 && spins % 100 == 0 && tag_state(&b->base, o) == PEER_DEAD &&
		    atomic_compare_exchange_strong_explicit(l, &o, b->base.tag, SC, SC)) {
			atomic_fetch_add_explicit(w64(&b->base, BH_RECOVERIES), 1, RLX);
			/* Kick: the dead writer may have published without ringing. */
			a64 *db = w64(&b->base, BH_BELL);
			uint64_t w = atomic_load_explicit(db, SC), nw;
			do
				nw = (w & ~0xFFFFFFFFull) | (uint32_t)(w + 1);
			while (!atomic_compare_exchange_weak_explicit(db, &w, nw, SC, SC));
			if (SLEEPERS(nw))
				bell_wake(&b->base, db, 0, SLEEPERS(nw));
			return;
		}
		if (spins > 100)
			nap_ns(spins > 1000 ? 1000000 : 10000);
		else
			cpu_relax();
	}
}

enum { OP_PUT, OP_CAS, OP_DELETE };

/* board_refuse fails a compare-and-put (counted as a conflict) or a delete
 * that does not apply to the key's revision cur. */
static int board_refuse(shmbus_board_t *b, int op, uint64_t expect, uint64_t cur, uint64_t *rev)
{
	if (rev)
		*rev = cur;
	if (op == OP_DELETE)
		return fail_quick(SHMBUS_ERR_NOT_FOUND, "no value to delete");
	atomic_fetch_add_explicit(w64(&b->base, BH_CONFLICTS), 1, RLX);
	return fail(SHMBUS_ERR_REVISION, "the key has revision %llu, expected %llu", (unsigned long long)cur,
	            (unsigned long long)expect);
}

/* board_write is 7.7: put, compare-and-put (expect) or delete of key. */
static int board_write(shmbus_board_t *b, const void *key, size_t klen, const void *val, size_t n, int op,
                       uint64_t expect, uint64_t *rev)
{
	if (!b || !key || klen < 1 || klen > MAX_KEY || (!val && n > 0))
		return fail(SHMBUS_ERR_INVALID, "key of %zu bytes", klen);
	if (n > b->max_value)
		return fail(SHMBUS_ERR_TOO_LARGE, "%zu bytes, the board holds at most %u", n, b->max_value);
	uint64_t h = fnv1a(key, klen);
	int64_t found = board_find(b, key, klen, h);
	if (found == -2)
		return SHMBUS_ERR_CORRUPT;
	uint32_t i = 0;
	if (found >= 0) {
		i = (uint32_t)found;
		board_lock(b, i);
	} else if (op == OP_DELETE || (op == OP_CAS && expect != 0)) {
		return board_refuse(b, op, expect, 0, rev); /* never written: bind no cell for it */
	} else {
		/* 7.7 step 2: bind a free cell on the probe path. */
		uint32_t home = (uint32_t)(h % b->cells), k;
		for (k = 0; k < b->cells; k++) {
			i = home + k < b->cells ? home + k : home + k - b->cells;
			uint64_t c = cell_off(b, i);
			uint32_t st = atomic_load_explicit(w32(&b->base, c + CELL_STATE), SC);
			if (st == 1) {
				uint32_t kl = atomic_load_explicit(w32(&b->base, c + CELL_KEY_LEN), SC);
				if (kl == klen && atomic_load_explicit(w64(&b->base, c + CELL_HASH), SC) == h &&
				    memcmp(b->base.seg + c + CELL_KEY, key, klen) == 0) {
					board_lock(b, i);
					break;
				}
				continue;
			}
			if (st != 0)
				return fail(SHMBUS_ERR_CORRUPT, "cell %u: state %u", i, st);
			board_lock(b, i);
			if (atomic_load_explicit(w32(&b->base, c + CELL_STATE), SC) == 1) {
				uint32_t kl = atomic_load_explicit(w32(&b->base, c + CELL_KEY_LEN), SC);
				if (kl == klen && memcmp(b->base.seg + c + CELL_KEY, key, klen) == 0)
					break;
				atomic_store_explicit(w64(&b->base, c + CELL_LOCK), 0, SC);
				continue;
			}
			memcpy(b->base.seg + c + CELL_KEY, key, klen);
			atomic_store_explicit(w32(&b->base, c + CELL_KEY_LEN), (uint32_t)klen, SC);
			atomic_store_explicit(w64(&b->base, c + CELL_HASH), h, SC);
			atomic_store_explicit(w32(&b->base, c + CELL_STATE), 1, SC);
			break;
		}
		if (k == b->cells)
			return fail(SHMBUS_ERR_FULL, "no free key cell");
	}
	uint64_t c = cell_off(b, i);
	a64 *cur = w64(&b->base, c + CELL_CURRENT);
	uint64_t cw = atomic_load_explicit(cur, SC);
	/* 7.7 step 3. The current copy: only a lock holder writes a copy, and
	 * never the one current names. */
	int live = cw != 0 && !(rd32(b->base.seg + copy_off(b, i, (uint32_t)(cw & 1)) + COPY_FLAGS) & COPY_TOMBSTONE);
	if ((op == OP_DELETE && !live) ||
	    (op == OP_CAS && !((expect == 0 && !live) || (expect != 0 && expect == cw >> 1)))) {
		atomic_store_explicit(w64(&b->base, c + CELL_LOCK), 0, SC);
		return board_refuse(b, op, expect, cw >> 1, rev);
	}
	if (op == OP_DELETE)
		n = 0;
	uint32_t spare = 1 - (uint32_t)(cw & 1);
	uint64_t r = atomic_fetch_add_explicit(w64(&b->base, BH_REVISION), 1, SC) + 1;
	uint64_t cp = copy_off(b, i, spare);
	a64 *seq = w64(&b->base, cp + COPY_SEQ);
	uint64_t q = (atomic_load_explicit(seq, SC) | 1) + 2;
	atomic_store_explicit(seq, q, SC);
	atomic_thread_fence(memory_order_release); /* the opening store before the contents */
	uint8_t *p = b->base.seg + cp;
	uint32_t n32 = (uint32_t)n, flags = op == OP_DELETE ? COPY_TOMBSTONE : 0;
	memcpy(p + COPY_REV, &r, 8);
	memcpy(p + COPY_LEN, &n32, 4);
	memcpy(p + COPY_FLAGS, &flags, 4);
	if (n)
		memcpy(p + COPY_DATA, val, n);
	atomic_store_explicit(seq, q + 1, SC);
	atomic_store_explicit(cur, r << 1 | spare, SC); /* published */
	atomic_store_explicit(w64(&b->base, c + CELL_LOCK), 0, SC);
	bell_ring(&b->base, w64(&b->base, BH_BELL), 0, w64(&b->base, BH_WAKES));
	if (rev)
		*rev = r;
	return SHMBUS_OK;
}

int shmbus_board_put(shmbus_board_t *b, const void *key, size_t klen, const void *val, size_t n, uint64_t *rev)
{
	return board_write(b, key, klen, val, n, OP_PUT, 0, rev);
}

int shmbus_board_cas(shmbus_board_t *b, const void *key, size_t klen, uint64_t expect, const void *val, size_t n,
                     uint64_t *rev)
{
	return board_write(b, key, klen, val, n, OP_CAS, expect, rev);
}

int shmbus_board_delete(shmbus_board_t *b, const void *key, size_t klen, uint64_t *rev)
{
	return board_write(b, key, klen, NULL, 0, OP_DELETE, 0, rev);
}

/* A watch's condition (7.8): the key's cell, once it has one, holds a
 * revision past after. */
typedef struct board_watch {
	shmbus_board_t *b;
	const uint8_t *key;
	size_t klen;
	uint64_t hash, after;
	int64_t cell; /* -1 while the key was never written */
	int err;
} board_watch_t;

static bool board_changed(void *arg)
{
	board_watch_t *w = arg;
	if (w->cell < 0) {
		w->cell = board_find(w->b, w->key, w->klen, w->hash);
		if (w->cell == -2) {
			w->err = SHMBUS_ERR_CORRUPT;
			return true;
		}
		if (w->cell < 0)
			return false;
	}
	uint64_t cw = atomic_load_explicit(w64(&w->b->base, cell_off(w->b, (uint32_t)w->cell) + CELL_CURRENT), SC);
	return cw >> 1 > w->after;
}

/* Go's watchers sleep at most ring.Backstop at a time; a writer killed
 * between publishing and ringing is seen this late. */
#define BOARD_BACKSTOP_NS 200000000

int shmbus_board_watch(shmbus_board_t *b, const void *key, size_t klen, uint64_t after_rev, int timeout_ms,
                       void *buf, size_t cap, size_t *len, uint64_t *rev, int *deleted)
{
	if (!b || !key || klen < 1 || klen > MAX_KEY || (!buf && cap > 0) || !len || !rev)
		return fail(SHMBUS_ERR_INVALID, "key of %zu bytes", klen);
	board_watch_t w = {.b = b, .key = key, .klen = klen, .hash = fnv1a(key, klen), .after = after_rev, .cell = -1};
	int rc = bell_wait(&b->base, w64(&b->base, BH_BELL), 0, w64(&b->base, BH_SLEEPS), board_changed, &w,
	                   deadline_of(timeout_ms), BOARD_BACKSTOP_NS, NULL, NULL);
	if (rc == SHMBUS_ERR_TIMEOUT)
		return fail_quick(SHMBUS_ERR_TIMEOUT, "no new revision");
	if (rc != SHMBUS_OK)
		return rc;
	if (w.err != SHMBUS_OK)
		return w.err;
	int dead = 0;
	rc = board_read(b, (uint32_t)w.cell, buf, cap, len, rev, &dead);
	if (deleted)
		*deleted = dead;
	return rc;
}
