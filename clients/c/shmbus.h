/*
 * shmbus.h - C client of shmbus, the shared-memory message bus.
 *
 * Attaches to a bus made by the Go library (or the shmbus command), joins it
 * as a producer or as its consumer, and speaks segment format version 2 as
 * docs/layout.md describes it: C11 atomics, shared futexes, and System V
 * semaphores for buses in sem wake mode. Linux only.
 *
 * Every function that can fail returns a shmbus_err: SHMBUS_OK (0) or a
 * positive code. shmbus_strerror names the code; shmbus_last_error gives the
 * detail of the last failure in the calling thread ("lane 2 at position 4096:
 * record type 7"). Nothing read from the segment is trusted: a damaged or
 * hostile segment yields SHMBUS_ERR_CORRUPT, never a wild access.
 *
 * Threads: a shmbus_t may be shared by threads that each use their own
 * producer or consumer; a producer or consumer belongs to one thread at a
 * time. Close producers and the consumer (or let shmbus_close do it) only
 * when no thread is using them.
 */
#ifndef SHMBUS_H
#define SHMBUS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum shmbus_err {
	SHMBUS_OK = 0,
	SHMBUS_ERR_SYS,         /* a system call failed (errno is kept in the detail) */
	SHMBUS_ERR_BAD_NAME,    /* a bus name is not 1-200 characters of [A-Za-z0-9._-], starts with - or ., or has ".." */
	SHMBUS_ERR_NOT_EXIST,   /* no bus (file) of that name */
	SHMBUS_ERR_PERMISSION,  /* the segment's mode does not admit this process */
	SHMBUS_ERR_NOT_REGULAR, /* the path is a symbolic link, a directory, a FIFO, ... */
	SHMBUS_ERR_NOT_READY,   /* the creator did not finish initialising the segment in time */
	SHMBUS_ERR_VERSION,     /* the segment's format version is not 2 */
	SHMBUS_ERR_CORRUPT,     /* the header, a record, a position or the semaphore set is invalid */
	SHMBUS_ERR_UNSUPPORTED, /* big-endian host, 64-bit atomics that are not lock-free, or a consumer on a fan-out bus */
	SHMBUS_ERR_BUSY,        /* a live process holds the consumer (or single-producer) role */
	SHMBUS_ERR_NO_SLOT,     /* every peer slot is held by a live peer (or a dead one not yet recovered) */
	SHMBUS_ERR_PRIORITY,    /* a priority outside 0 .. shmbus_priorities()-1 */
	SHMBUS_ERR_TOO_LARGE,   /* a message larger than shmbus_max_message() */
	SHMBUS_ERR_FULL,        /* try-send (or send on a fail-fast bus): no room in the lane now */
	SHMBUS_ERR_EMPTY,       /* try-receive: no message now */
	SHMBUS_ERR_SHORT_BUFFER,/* receive: the buffer is too small; *len says how large; the message stays */
	SHMBUS_ERR_TIMEOUT,     /* a blocking call's timeout passed */
	SHMBUS_ERR_CLOSED,      /* reserved (Go's ErrClosed); not returned by this client */
	SHMBUS_ERR_INVALID,     /* an invalid argument (NULL pointer, bad fd, ...) */
	SHMBUS_ERR_NO_MEMORY,   /* malloc failed (a message being reassembled was dropped) */
	SHMBUS_ERR_PROTOCOL,    /* daemon: its reply broke docs/daemon-protocol.md (malformed, unexpected,
	                         * cut short), or it refused ours (BAD_FRAME, UNKNOWN_TYPE, BAD_VERSION, ...) */
	SHMBUS_ERR_DAEMON,      /* daemon: a refusal with no closer code (SHUTDOWN, INTERNAL, unknown codes) */
	SHMBUS_ERR_NOT_FOUND,   /* board: the key has no value (never written, or deleted) */
	SHMBUS_ERR_REVISION,    /* board compare-and-put: the key's revision is not the one given */
} shmbus_err;

/* Wake modes (shmbus_wake_mode). */
enum { SHMBUS_WAKE_FUTEX = 1, SHMBUS_WAKE_SEM = 2 };

/* Timeouts are in milliseconds: SHMBUS_FOREVER waits without a limit, 0
 * does not wait at all. */
#define SHMBUS_FOREVER (-1)

typedef struct shmbus shmbus_t;
typedef struct shmbus_producer shmbus_producer_t;
typedef struct shmbus_consumer shmbus_consumer_t;

typedef struct shmbus_open_options {
	const char *dir; /* shmbus_open only: NULL or "" means $SHMBUS_DIR, else /dev/shm */
	int wait_ms;     /* wait for the creator to finish: 0 means 1000 ms, < 0 not at all */
} shmbus_open_options;

/* The name of an error code ("segment corrupt", ...). Never NULL. */
const char *shmbus_strerror(int err);

/* The detail of the last error returned to the calling thread. Never NULL. */
const char *shmbus_last_error(void);

/* Attach to the bus called name: DIR/shmbus.NAME (docs/layout.md 1.1). */
int shmbus_open(const char *name, const shmbus_open_options *opts, shmbus_t **bus);

/* Attach to the segment file at path. Symbolic links are never followed. */
int shmbus_open_path(const char *path, const shmbus_open_options *opts, shmbus_t **bus);

/* Attach to the segment behind an open file descriptor (a file, or a memfd
 * received over SCM_RIGHTS, sealed or not). It is mapped with the size
 * fstat reports, never resized. The descriptor stays the caller's: it may
 * be closed once this returns. */
int shmbus_open_fd(int fd, const shmbus_open_options *opts, shmbus_t **bus);

/* Detach: closes every producer and the consumer still open on bus (as
 * their own close functions do), unmaps the segment and frees bus. The bus
 * itself stays for others. */
int shmbus_close(shmbus_t *bus);

int shmbus_priorities(const shmbus_t *bus);          /* lanes: priorities 0 (least urgent) .. n-1 */
uint64_t shmbus_max_message(const shmbus_t *bus);    /* largest message, bytes */
size_t shmbus_max_record_payload(const shmbus_t *bus); /* largest message sent as one record */
int shmbus_wake_mode(const shmbus_t *bus);           /* SHMBUS_WAKE_FUTEX or SHMBUS_WAKE_SEM */
int shmbus_multi_producer(const shmbus_t *bus);      /* 1 for MPSC lanes, 0 for SPSC */
int shmbus_fail_fast(const shmbus_t *bus);           /* 1 if a full lane fails shmbus_send at once */
uint64_t shmbus_lane_capacity(const shmbus_t *bus);
int shmbus_peer_slots(const shmbus_t *bus);

/* Join as a producer (takes a peer slot; on a single-producer bus also the
 * producer role of every lane, or SHMBUS_ERR_BUSY). */
int shmbus_producer_open(shmbus_t *bus, shmbus_producer_t **p);

/* Send msg (n bytes, 0 .. shmbus_max_message) at priority prio, waiting up
 * to timeout_ms for room (SHMBUS_ERR_TIMEOUT). On a fail-fast bus a full
 * lane gives SHMBUS_ERR_FULL at once. A message larger than one record goes
 * as fragments; once the first is sent the rest wait for room (until the
 * timeout: a message cut short is dropped by the consumer). */
int shmbus_send(shmbus_producer_t *p, const void *msg, size_t n, int prio, int timeout_ms);

/* Send if there is room now, else SHMBUS_ERR_FULL. For a fragmented
 * message only the first fragment may fail so; the rest wait for room. */
int shmbus_try_send(shmbus_producer_t *p, const void *msg, size_t n, int prio);

/* Add the producer's statistics to the bus, give back its role and slot,
 * free p. Nothing is ever left unpublished (sends publish before returning). */
int shmbus_producer_close(shmbus_producer_t *p);

/* Take the bus's consumer role (SHMBUS_ERR_BUSY while a live process holds
 * it). Resumes after the last message a previous consumer released. A
 * fan-out bus (made with subscriptions) has no consumer:
 * SHMBUS_ERR_UNSUPPORTED. A producer works on either kind of bus; on a
 * fan-out bus, space is freed by the Go peers (subscribers and producers),
 * so a C producer whose lane is full waits until one of them cleans it. */
int shmbus_consumer_open(shmbus_t *bus, shmbus_consumer_t **c);

/* Copy the oldest message of the highest priority into buf (cap bytes),
 * waiting up to timeout_ms (SHMBUS_ERR_TIMEOUT). *len gets its size and
 * *prio (may be NULL) its priority. A buffer too small gets
 * SHMBUS_ERR_SHORT_BUFFER with *len set to the size needed; the message
 * stays. */
int shmbus_receive(shmbus_consumer_t *c, void *buf, size_t cap, size_t *len, int *prio, int timeout_ms);

/* shmbus_receive without waiting: SHMBUS_ERR_EMPTY if there is nothing now. */
int shmbus_try_receive(shmbus_consumer_t *c, void *buf, size_t cap, size_t *len, int *prio);

/* Release what was taken, add the statistics to the bus, give back the
 * consumer role and slot, free c. Messages still being reassembled are lost
 * (see README: limitations). */
int shmbus_consumer_close(shmbus_consumer_t *c);

/* ---- through the daemon (docs/daemon-protocol.md) ----
 *
 * A bus's descriptor can come from the shmbus daemon: it is the only way to
 * reach a memfd bus, and the way to reach a file bus one may not open
 * directly. The connection that brought the descriptor is the process's
 * lease on the slots it takes on that bus: keep it open as long as the bus
 * is used. When it ends (closed, or by the process's death: the kernel
 * closes it), the daemon watches the process and, once it has exited,
 * releases what it still held and tells subscribers (CRASH). It is
 * close-on-exec.
 *
 * Every exchange with the daemon (connect, HELLO, OPEN) is bounded by
 * SHMBUS_DAEMON_TIMEOUT_MS in all (SHMBUS_ERR_TIMEOUT). Nothing the daemon
 * sends is trusted: lengths are checked before use, descriptors that should
 * not have come are closed, and a malformed reply is SHMBUS_ERR_PROTOCOL.
 * A daemon ERROR maps to the code of the same meaning (NOT_FOUND ->
 * SHMBUS_ERR_NOT_EXIST, PERMISSION -> SHMBUS_ERR_PERMISSION, ...) and
 * shmbus_last_error() keeps the daemon's message, e.g.
 * "no such bus: daemon NOT_FOUND: shmbus: open bus \"x\": no such bus". Failures of the
 * socket itself (no daemon listening, ...) are SHMBUS_ERR_SYS. */

#define SHMBUS_DAEMON_TIMEOUT_MS 10000

/* Bus kinds in shmbus_daemon_info. */
enum { SHMBUS_KIND_FILE = 1, SHMBUS_KIND_MEMFD = 2 };

/* What the daemon's BUS reply says about a bus. */
typedef struct shmbus_daemon_info {
	int kind;             /* SHMBUS_KIND_FILE or SHMBUS_KIND_MEMFD (sealed) */
	int multi_producer;   /* 1 MPSC, 0 SPSC */
	int wake;             /* SHMBUS_WAKE_FUTEX or SHMBUS_WAKE_SEM */
	int priorities;
	unsigned mode;        /* permission bits */
	uint32_t uid, gid;    /* the bus's owner */
	uint64_t size;        /* segment size: the descriptor's size, checked */
	uint64_t max_message;
	uint32_t max_record;  /* largest message that fits one record */
} shmbus_daemon_info;

/* The daemon's socket path by the default rule: $SHMBUS_SOCKET, else (when
 * not root) $XDG_RUNTIME_DIR/shmbus.sock, else /run/shmbus/shmbus.sock.
 * Written to buf (cap bytes, NUL-terminated); SHMBUS_ERR_INVALID if it does
 * not fit. */
int shmbus_daemon_socket_path(char *buf, size_t cap);

/* Ask the daemon at socket_path (NULL or "": the default rule) for the bus
 * called name: connect, HELLO (version 1), OPEN. With want_fd, the
 * segment's descriptor (close-on-exec, opened read-write) is stored in
 * *fd_out, for shmbus_open_fd, and the connection, the lease, in *conn_out;
 * both are the caller's to close (the descriptor may be closed as soon as
 * shmbus_open_fd returns; the connection when the bus is no longer used,
 * with shmbus_daemon_close). Without want_fd only the bus's existence and
 * read permission are checked: *fd_out (may be NULL) gets -1, and conn_out
 * may be NULL to close the connection at once. info (may be NULL) gets the
 * reply's description of the bus. On failure *fd_out and *conn_out are -1
 * and nothing is left open. */
int shmbus_daemon_open(const char *socket_path, const char *name, int want_fd, int *fd_out, int *conn_out,
                       shmbus_daemon_info *info);

/* shmbus_daemon_open with want_fd, then shmbus_open_fd: *bus is attached,
 * *conn_out is its lease (close it after shmbus_close(*bus), with
 * shmbus_daemon_close). info may be NULL. */
int shmbus_daemon_attach(const char *socket_path, const char *name, const shmbus_open_options *opts, shmbus_t **bus,
                         int *conn_out, shmbus_daemon_info *info);

/* Close a connection made by shmbus_daemon_open (ending its lease). */
int shmbus_daemon_close(int conn);

/* Test hook: fn is called by every producer of the process at two points of
 * each claim: stage SHMBUS_HOOK_TAIL_MOVED (the lane's tail moved, the claim
 * record is not yet confirmed) and SHMBUS_HOOK_CLAIMED (confirmed, nothing
 * written yet). Tests stop or kill the process there to exercise recovery.
 * NULL clears it. Not for production use. */
enum { SHMBUS_HOOK_TAIL_MOVED = 1, SHMBUS_HOOK_CLAIMED = 2 };
typedef void (*shmbus_claim_hook)(int stage, int lane, void *arg);
void shmbus_set_claim_hook(shmbus_claim_hook fn, void *arg);

/* ---- boards (docs/layout.md, section 7) ----
 *
 * A board's keyed values, read and written in the segment. Keys are 1..255
 * bytes. Writes are Go's Put (last writer wins); a cell lock left by a
 * dead writer is taken over only on proof of death. One handle per thread. */
typedef struct shmbus_board shmbus_board_t;

/* Attach to board NAME ($SHMBUS_DIR or opts->dir, file shmbus-board.NAME). */
int shmbus_board_open(const char *name, const shmbus_open_options *opts, shmbus_board_t **board);
int shmbus_board_close(shmbus_board_t *board);

/* The latest complete value of key into buf (cap bytes): *len its length,
 * *rev its revision. SHMBUS_ERR_NOT_FOUND without a value (*rev is the
 * tombstone's revision if it was deleted); SHMBUS_ERR_SHORT_BUFFER if cap is
 * too small (*len says how large). Never waits for a writer. */
int shmbus_board_get(shmbus_board_t *board, const void *key, size_t klen, void *buf, size_t cap, size_t *len,
                     uint64_t *rev);

/* Make val (n bytes) key's value; *rev (if not NULL) is its revision.
 * SHMBUS_ERR_TOO_LARGE, SHMBUS_ERR_FULL (no free key cell). */
int shmbus_board_put(shmbus_board_t *board, const void *key, size_t klen, const void *val, size_t n, uint64_t *rev);

/* Make val key's value only if key's revision is still expect (as get
 * returned it; 0: the key has no value, never written or deleted).
 * SHMBUS_ERR_REVISION otherwise, and nothing is written; *rev (if not NULL)
 * is then the key's revision (0 if it was never written). */
int shmbus_board_cas(shmbus_board_t *board, const void *key, size_t klen, uint64_t expect, const void *val, size_t n,
                     uint64_t *rev);

/* Delete key's value: a tombstone at a new revision (*rev), which watchers
 * see. SHMBUS_ERR_NOT_FOUND if it has no value (nothing is written). */
int shmbus_board_delete(shmbus_board_t *board, const void *key, size_t klen, uint64_t *rev);

/* Block until key's revision passes after_rev (timeout_ms: SHMBUS_FOREVER,
 * or 0 not to sleep at all), then read its latest value as get does: *rev
 * is its revision, *deleted (if not NULL) 1 for a tombstone (then *len is
 * 0). Writes faster than the watcher are coalesced: the latest value, never
 * an older one. Sleeps on the board's doorbell (futex or semaphore 0 of the
 * set, as the board's wake mode says), each sleep bounded. SHMBUS_ERR_TIMEOUT,
 * SHMBUS_ERR_SHORT_BUFFER (*len says how large; *rev is set: watch again
 * from *rev - 1 with a larger buffer). */
int shmbus_board_watch(shmbus_board_t *board, const void *key, size_t klen, uint64_t after_rev, int timeout_ms,
                       void *buf, size_t cap, size_t *len, uint64_t *rev, int *deleted);

#ifdef __cplusplus
}
#endif

#endif /* SHMBUS_H */
