/*
 * shmbus-c - command-line tool over the shmbus C client, for users and for
 * the interoperability tests (the _test.go files of clients/c).
 *
 *   shmbus-c send    BUS [-p N] [--timeout DUR] [--] [MESSAGE...]
 *   shmbus-c recv    BUS [-n N] [--timeout DUR]
 *   shmbus-c info    BUS
 *   shmbus-c help
 *   shmbus-c produce BUS --id K --count N [options]  (checksummed test messages, below)
 *   shmbus-c consume BUS --count N [--exact] [--log] [--timeout-ms T]
 *   shmbus-c open-many PATH...                      (attach to each, report; for corrupt-segment tests)
 *   shmbus-c daemon-open SOCKET NAME [--no-fd]      (ask the daemon for a bus, print its reply)
 *
 * BUS is a bus name (in $SHMBUS_DIR or /dev/shm), a path (anything with a
 * '/'), fd:N for an inherited file descriptor (a memfd, for example), or
 * daemon:SOCKET:NAME (daemon:NAME: the default socket) for the descriptor
 * of bus NAME from the daemon at SOCKET; the connection, the process's
 * lease on the bus, stays open until the tool exits.
 *
 * send and recv behave as `shmbus send` and `shmbus recv` (text format):
 * send sends each MESSAGE, or each line of stdin, at priority N; recv
 * prints N messages (default 1), each followed by a newline, and with -n 0
 * receives until --timeout passes (exit status 0) or until interrupted.
 * DUR is a number with a unit (500ms, 2s, 1m30s) or a plain number of
 * seconds; --timeout-ms T (milliseconds) is the older spelling.
 *
 * Exit status: 0 success, 1 runtime error, 2 usage error (also an invalid
 * bus name), 3 timeout, 130 interrupted (SIGINT or SIGTERM).
 *
 * Test messages (the same in the Go tests, clients/c/testmsg_test.go): a
 * 20-byte little-endian header {u32 producer, u32 seq, u32 size, u32 prio,
 * u32 crc32(body)} then size-20 body bytes generated from (producer, seq)
 * by xorshift64. The consumer checks every byte, the priority it arrived
 * at, that each (producer, priority) sequence grows, and that no message
 * comes twice.
 */
#define _GNU_SOURCE
#include "../shmbus.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *prog = "shmbus-c";

static const char help_text[] =
	"usage: shmbus-c COMMAND ARGS...\n"
	"\n"
	"  send BUS [-p N] [--timeout DUR] [--] [MESSAGE...]\n"
	"        send each MESSAGE (without one: each line of stdin) at priority N\n"
	"  recv BUS [-n N] [--timeout DUR]\n"
	"        print N messages (default 1), each and a newline; -n 0: until the\n"
	"        timeout (exit 0) or an interrupt\n"
	"  info BUS\n"
	"        print the bus's configuration\n"
	"  produce BUS --id K --count N [options]    send checksummed test messages\n"
	"  consume BUS --count N [--exact] [--log] [--timeout-ms T]\n"
	"        receive and verify them\n"
	"  open-many PATH...                         attach to each and report\n"
	"  daemon-open SOCKET NAME [--no-fd]         ask the daemon for a bus\n"
	"  board-get BOARD KEY                       print KEY's revision and value\n"
	"  board-put BOARD KEY VALUE [COUNT]         put (COUNT times), print the revision\n"
	"  board-cas BOARD KEY REV VALUE             compare-and-put, print the revision\n"
	"  board-rm BOARD KEY                        delete, print the tombstone's revision\n"
	"  board-watch BOARD KEY AFTER [N] [TIMEOUT_MS]\n"
	"        print N changes of KEY past revision AFTER (default 1), a line each:\n"
	"        the revision, a space, the value or \"(deleted)\"\n"
	"  board-incr BOARD KEY COUNT                add 1 COUNT times by compare-and-put\n"
	"  help                                      this text\n"
	"\n"
	"BUS is a bus name (in $SHMBUS_DIR or /dev/shm), a path (with a '/'), fd:N\n"
	"for an inherited descriptor, or daemon:[SOCKET:]NAME. DUR is a number\n"
	"with a unit (500ms, 2s, 1m30s) or a plain number of seconds.\n"
	"Exit status: 0 success, 1 runtime error, 2 usage error, 3 timeout,\n"
	"130 interrupted.\n";

/* exit_status is the exit status for a failure of the library: 2 for a bus
 * name that is not one (a usage error, as for the shmbus command), 3 for a
 * timeout, 1 for the rest. */
static int exit_status(int rc)
{
	switch (rc) {
	case SHMBUS_ERR_BAD_NAME: return 2;
	case SHMBUS_ERR_TIMEOUT: return 3;
	default: return 1;
	}
}

static int die_rc(int rc, const char *what)
{
	fprintf(stderr, "%s: %s: %s\n", prog, what, shmbus_last_error());
	return exit_status(rc);
}

static int usage(const char *msg)
{
	fprintf(stderr, "%s: %s (see '%s help')\n", prog, msg, prog);
	return 2;
}

/* SIGINT and SIGTERM end send and recv cleanly: what was received is
 * written out, and the exit status is 130. */
static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

static void catch_signals(void)
{
	struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: waits return */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* parse_dur reads a DUR as the shmbus command does: a number with a unit
 * (ns, us, ms, s, m, h; several in a row, as 1m30s) or a plain number of
 * seconds. *ms gets it in milliseconds, rounded up. */
static bool parse_dur(const char *s, long *ms)
{
	static const struct {
		const char *unit;
		double seconds;
	} units[] = {{"ns", 1e-9}, {"us", 1e-6}, {"ms", 1e-3}, {"s", 1}, {"m", 60}, {"h", 3600}};
	double total = 0;
	for (const char *p = s; *p;) {
		const char *q = p;
		while ((*q >= '0' && *q <= '9') || *q == '.')
			q++;
		char num[32];
		if (q == p || q - p >= (long)sizeof num)
			return false;
		memcpy(num, p, (size_t)(q - p));
		num[q - p] = 0;
		char *end;
		double v = strtod(num, &end);
		if (*end)
			return false;
		if (!*q) { /* a plain number: seconds, but only on its own */
			if (p != s)
				return false;
			total = v;
			break;
		}
		size_t k = 0, len = 0;
		for (; k < sizeof units / sizeof units[0]; k++) {
			len = strlen(units[k].unit);
			if (!strncmp(q, units[k].unit, len))
				break;
		}
		if (k == sizeof units / sizeof units[0])
			return false;
		total += v * units[k].seconds;
		p = q + len;
	}
	if (!*s || total * 1000 > 1 << 30)
		return false;
	*ms = (long)(total * 1000);
	if ((double)*ms < total * 1000)
		(*ms)++;
	return true;
}

/* The daemon connection of a bus attached as daemon:SOCKET:NAME: the
 * process's lease, held until it exits (closed at the end of main). */
static int daemon_conn = -1;
static bool via_daemon;
static shmbus_daemon_info daemon_info;

static const char *kind_name(int kind) { return kind == SHMBUS_KIND_MEMFD ? "memfd" : "file"; }

static int attach(const char *target, shmbus_t **bus)
{
	if (strncmp(target, "daemon:", 7) == 0) {
		/* daemon:NAME or daemon:SOCKET:NAME (names have no ':'; an
		 * empty SOCKET is the default rule). */
		const char *rest = target + 7, *colon = strrchr(rest, ':');
		char *sock = colon ? strndup(rest, (size_t)(colon - rest)) : NULL;
		if (colon && !sock) {
			fprintf(stderr, "%s: out of memory\n", prog);
			exit(1);
		}
		via_daemon = true;
		int rc = shmbus_daemon_attach(sock, colon ? colon + 1 : rest, NULL, bus, &daemon_conn, &daemon_info);
		free(sock);
		return rc;
	}
	if (strncmp(target, "fd:", 3) == 0) {
		char *end;
		long fd = strtol(target + 3, &end, 10);
		if (*end || fd < 0 || fd > 1 << 20)
			return shmbus_open_fd(-1, NULL, bus);
		return shmbus_open_fd((int)fd, NULL, bus);
	}
	if (strchr(target, '/'))
		return shmbus_open_path(target, NULL, bus);
	return shmbus_open(target, NULL, bus);
}

/* ---- test messages ---- */

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

static uint32_t crc_table[256];

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
}

static uint32_t crc32_ieee(const uint8_t *p, size_t n)
{
	uint32_t c = 0xFFFFFFFFu;
	for (size_t i = 0; i < n; i++)
		c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
	return c ^ 0xFFFFFFFFu;
}

/* fill_body writes n body bytes of message (k, seq). */
static void fill_body(uint8_t *p, size_t n, uint32_t k, uint32_t seq)
{
	uint64_t x = mix((uint64_t)k << 32 | seq) | 1;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(p + i, &x, 8);
	}
	if (i < n) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(p + i, &x, n - i);
	}
}

enum { TM_HEADER = 20 };

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

/* check_msg verifies one test message received at prio; NULL if good. */
static const char *check_msg(const uint8_t *m, size_t n, int prio, uint8_t **scratch, size_t *scap)
{
	static char why[160];
	if (n < TM_HEADER) {
		snprintf(why, sizeof why, "%zu-byte message, shorter than the header", n);
		return why;
	}
	uint32_t k = get32(m), seq = get32(m + 4), size = get32(m + 8), p = get32(m + 12), crc = get32(m + 16);
	if (size != n) {
		snprintf(why, sizeof why, "producer %u seq %u: size field %u, message has %zu bytes", k, seq, size, n);
		return why;
	}
	if ((int)p != prio) {
		snprintf(why, sizeof why, "producer %u seq %u: sent at priority %u, received at %d", k, seq, p, prio);
		return why;
	}
	if (crc32_ieee(m + TM_HEADER, n - TM_HEADER) != crc) {
		snprintf(why, sizeof why, "producer %u seq %u: CRC mismatch", k, seq);
		return why;
	}
	if (*scap < n) {
		free(*scratch);
		*scratch = malloc(n);
		*scap = *scratch ? n : 0;
		if (!*scratch)
			return "out of memory";
	}
	fill_body(*scratch, n - TM_HEADER, k, seq);
	if (memcmp(*scratch, m + TM_HEADER, n - TM_HEADER) != 0) {
		snprintf(why, sizeof why, "producer %u seq %u: body differs from the generator's", k, seq);
		return why;
	}
	return NULL;
}

/* ---- produce ---- */

struct stop_at {
	bool armed;
	int stage;
};
static struct stop_at stopper;

static void claim_hook(int stage, int lane, void *arg)
{
	(void)arg;
	if (!stopper.armed || stage != stopper.stage)
		return;
	stopper.armed = false;
	printf("stopping pid %d lane %d stage %d\n", (int)getpid(), lane, stage);
	fflush(stdout);
	raise(SIGSTOP);
}

static long argl(const char *s, const char *name, long lo, long hi, bool *bad)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 0);
	if (errno || *end || !*s || v < lo || v > hi) {
		if (errno == ERANGE)
			fprintf(stderr, "%s: invalid %s \"%s\": too large\n", prog, name, s);
		else if (errno || *end || !*s)
			fprintf(stderr, "%s: invalid %s \"%s\": not a number\n", prog, name, s);
		else
			fprintf(stderr, "%s: invalid %s \"%s\": want %ld to %ld\n", prog, name, s, lo, hi);
		*bad = true;
	}
	return v;
}

static int cmd_produce(int argc, char **argv)
{
	if (argc < 1)
		return usage("produce: no bus");
	const char *target = argv[0];
	long id = 0, count = 0, start = 0, minsz = TM_HEADER, maxsz = 200, big_every = 0, big_size = 0;
	long pause_every = 0, pause_us = 0, stop_at = -1, timeout_ms = 60000;
	const char *prio_spec = "0";
	int stop_stage = SHMBUS_HOOK_CLAIMED;
	bool bad = false, try_send = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--try")) { try_send = true; continue; }
		if (!v) return usage("produce: option without a value");
		i++;
		if (!strcmp(a, "--id")) id = argl(v, a, 0, 1 << 30, &bad);
		else if (!strcmp(a, "--count")) count = argl(v, a, 0, 1L << 40, &bad);
		else if (!strcmp(a, "--start")) start = argl(v, a, 0, 1L << 31, &bad);
		else if (!strcmp(a, "--min")) minsz = argl(v, a, TM_HEADER, 1L << 40, &bad);
		else if (!strcmp(a, "--max")) maxsz = argl(v, a, TM_HEADER, 1L << 40, &bad);
		else if (!strcmp(a, "--big-every")) big_every = argl(v, a, 0, 1L << 40, &bad);
		else if (!strcmp(a, "--big-size")) big_size = argl(v, a, 0, 1L << 40, &bad);
		else if (!strcmp(a, "--pause-every")) pause_every = argl(v, a, 0, 1L << 40, &bad);
		else if (!strcmp(a, "--pause-us")) pause_us = argl(v, a, 0, 10000000, &bad);
		else if (!strcmp(a, "--stop-at")) stop_at = argl(v, a, 0, 1L << 40, &bad);
		else if (!strcmp(a, "--timeout-ms")) timeout_ms = argl(v, a, -1, 1 << 30, &bad);
		else if (!strcmp(a, "--prio")) prio_spec = v;
		else if (!strcmp(a, "--stop-stage")) {
			if (!strcmp(v, "tail")) stop_stage = SHMBUS_HOOK_TAIL_MOVED;
			else if (!strcmp(v, "claim")) stop_stage = SHMBUS_HOOK_CLAIMED;
			else return usage("produce: --stop-stage is tail or claim");
		} else {
			fprintf(stderr, "%s: produce: unknown option %s\n", prog, a);
			return 2;
		}
	}
	if (bad || maxsz < minsz || (big_every > 0 && big_size < TM_HEADER))
		return usage("produce: bad options");
	shmbus_t *bus;
	int rc = attach(target, &bus);
	if (rc)
		return die_rc(rc, "attach");
	int L = shmbus_priorities(bus);
	long fixed = -1;
	if (strcmp(prio_spec, "cycle") && strcmp(prio_spec, "rand")) {
		fixed = argl(prio_spec, "--prio", 0, 1000, &bad);
		if (bad)
			return usage("produce: --prio is a number, cycle or rand");
	}
	shmbus_producer_t *p;
	if ((rc = shmbus_producer_open(bus, &p)))
		return die_rc(rc, "producer");
	shmbus_set_claim_hook(claim_hook, NULL);
	size_t cap = (size_t)(big_size > maxsz ? big_size : maxsz);
	uint8_t *buf = malloc(cap);
	if (!buf)
		return die_rc(SHMBUS_ERR_NO_MEMORY, "buffer");
	for (long s = start; s < start + count; s++) {
		uint32_t seq = (uint32_t)s, k = (uint32_t)id;
		uint64_t h = mix((uint64_t)k << 32 | seq);
		size_t n = big_every > 0 && s % big_every == big_every - 1 ? (size_t)big_size
		                                                          : (size_t)minsz + (size_t)(h % (uint64_t)(maxsz - minsz + 1));
		int prio = fixed >= 0 ? (int)fixed : !strcmp(prio_spec, "cycle") ? (int)(s % L) : (int)((h >> 32) % (uint64_t)L);
		fill_body(buf + TM_HEADER, n - TM_HEADER, k, seq);
		put32(buf, k);
		put32(buf + 4, seq);
		put32(buf + 8, (uint32_t)n);
		put32(buf + 12, (uint32_t)prio);
		put32(buf + 16, crc32_ieee(buf + TM_HEADER, n - TM_HEADER));
		if (s == stop_at) {
			stopper.armed = true;
			stopper.stage = stop_stage;
		}
		rc = try_send ? shmbus_try_send(p, buf, n, prio) : shmbus_send(p, buf, n, prio, (int)timeout_ms);
		if (rc) {
			char what[64];
			snprintf(what, sizeof what, "send seq %ld", s);
			return die_rc(rc, what);
		}
		if (pause_every > 0 && s % pause_every == pause_every - 1) {
			struct timespec ts = {pause_us / 1000000, (pause_us % 1000000) * 1000};
			nanosleep(&ts, NULL);
		}
	}
	free(buf);
	shmbus_producer_close(p);
	shmbus_close(bus);
	printf("sent %ld\n", count);
	return 0;
}

/* ---- consume ---- */

typedef struct seen {
	uint8_t *bits; /* seqs received */
	size_t nbits;
	uint64_t count;
	int64_t last[64]; /* last seq per priority */
} seen_t;

static int cmd_consume(int argc, char **argv)
{
	if (argc < 1)
		return usage("consume: no bus");
	const char *target = argv[0];
	long count = -1, timeout_ms = 30000;
	bool bad = false, exact = false, logm = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--exact")) { exact = true; continue; }
		if (!strcmp(a, "--log")) { logm = true; continue; }
		if (!v) return usage("consume: option without a value");
		i++;
		if (!strcmp(a, "--count")) count = argl(v, a, 0, 1L << 40, &bad);
		else if (!strcmp(a, "--timeout-ms")) timeout_ms = argl(v, a, -1, 1 << 30, &bad);
		else {
			fprintf(stderr, "%s: consume: unknown option %s\n", prog, a);
			return 2;
		}
	}
	if (bad || count < 0)
		return usage("consume: --count N is required");
	shmbus_t *bus;
	int rc = attach(target, &bus);
	if (rc)
		return die_rc(rc, "attach");
	shmbus_consumer_t *c;
	if ((rc = shmbus_consumer_open(bus, &c)))
		return die_rc(rc, "consumer");
	enum { MAXK = 256 };
	seen_t *seen = calloc(MAXK, sizeof *seen);
	size_t cap = 1 << 16;
	uint8_t *buf = malloc(cap), *scratch = NULL;
	size_t scap = 0;
	if (!seen || !buf)
		return die_rc(SHMBUS_ERR_NO_MEMORY, "buffers");
	for (int k = 0; k < MAXK; k++)
		for (int l = 0; l < 64; l++)
			seen[k].last[l] = -1;
	uint64_t bytes = 0;
	int status = 0;
	for (long got = 0; got < count;) {
		size_t n;
		int prio;
		rc = shmbus_receive(c, buf, cap, &n, &prio, (int)timeout_ms);
		if (rc == SHMBUS_ERR_SHORT_BUFFER) {
			free(buf);
			cap = n;
			if (!(buf = malloc(cap)))
				return die_rc(SHMBUS_ERR_NO_MEMORY, "buffer");
			continue;
		}
		if (rc) {
			fprintf(stderr, "%s: receive after %ld of %ld messages: %s\n", prog, got, count, shmbus_last_error());
			return rc == SHMBUS_ERR_TIMEOUT ? 3 : 1;
		}
		const char *why = check_msg(buf, n, prio, &scratch, &scap);
		if (why) {
			fprintf(stderr, "%s: message %ld: %s\n", prog, got, why);
			return 1;
		}
		uint32_t k = get32(buf), seq = get32(buf + 4);
		if (k >= MAXK) {
			fprintf(stderr, "%s: producer id %u out of range\n", prog, k);
			return 1;
		}
		seen_t *s = &seen[k];
		if (seq >= s->nbits * 8) {
			size_t nb = (seq / 8 + 1) * 2;
			uint8_t *nbits = realloc(s->bits, nb);
			if (!nbits)
				return die_rc(SHMBUS_ERR_NO_MEMORY, "bitmap");
			memset(nbits + s->nbits, 0, nb - s->nbits);
			s->bits = nbits;
			s->nbits = nb;
		}
		if (s->bits[seq / 8] & (1u << (seq % 8))) {
			fprintf(stderr, "%s: producer %u seq %u received twice\n", prog, k, seq);
			return 1;
		}
		s->bits[seq / 8] |= (uint8_t)(1u << (seq % 8));
		if ((int64_t)seq <= s->last[prio]) {
			fprintf(stderr, "%s: producer %u priority %d: seq %u after %lld\n", prog, k, prio, seq,
			        (long long)s->last[prio]);
			return 1;
		}
		s->last[prio] = seq;
		s->count++;
		bytes += n;
		got++;
		if (logm)
			printf("msg %u %u %d %zu\n", k, seq, prio, n);
	}
	for (uint32_t k = 0; k < MAXK; k++) {
		seen_t *s = &seen[k];
		if (!s->count)
			continue;
		bool complete = true;
		for (uint64_t q = 0; q < s->count; q++)
			if (!(s->bits[q / 8] & (1u << (q % 8))))
				complete = false;
		printf("producer %u count %llu %s\n", k, (unsigned long long)s->count, complete ? "complete" : "gaps");
		if (exact && !complete) {
			fprintf(stderr, "%s: producer %u: messages missing\n", prog, k);
			status = 1;
		}
		free(s->bits);
	}
	printf("ok msgs=%ld bytes=%llu\n", count, (unsigned long long)bytes);
	free(seen);
	free(buf);
	free(scratch);
	shmbus_consumer_close(c);
	shmbus_close(bus);
	return status;
}

/* ---- send, recv, info, open-many ---- */

/* timeout_opt reads the value of --timeout DUR or --timeout-ms T into
 * *ms and *shown (the timeout as error messages write it). */
static bool timeout_opt(const char *opt, const char *v, long *ms, char *shown, size_t n)
{
	bool bad = false;
	if (!strcmp(opt, "--timeout-ms")) {
		*ms = argl(v, "timeout", 0, 1 << 30, &bad);
		snprintf(shown, n, "%ldms", *ms);
		return !bad;
	}
	if (!parse_dur(v, ms)) {
		fprintf(stderr, "%s: invalid duration \"%s\" for --timeout: use a number with a unit (500ms, 2s, 1m30s) or a number of seconds\n",
		        prog, v);
		return false;
	}
	snprintf(shown, n, "%s", v);
	return true;
}

static int cmd_send(int argc, char **argv)
{
	if (argc < 1)
		return usage("send: missing bus name");
	const char *target = argv[0];
	int prio = 0, first = 1;
	long timeout_ms = 0;
	char shown[40] = "";
	bool bad = false;
	for (; first < argc && argv[first][0] == '-' && argv[first][1]; first++) {
		const char *a = argv[first];
		if (!strcmp(a, "--")) {
			first++;
			break;
		}
		if (first + 1 >= argc)
			return usage("send: option without a value");
		if (!strcmp(a, "-p") || !strcmp(a, "--priority"))
			prio = (int)argl(argv[++first], "priority", 0, 63, &bad);
		else if (!strcmp(a, "--timeout") || !strcmp(a, "--timeout-ms"))
			bad |= !timeout_opt(a, argv[++first], &timeout_ms, shown, sizeof shown);
		else
			return usage("send: unknown option");
	}
	if (bad)
		return 2;
	int wait = timeout_ms > 0 ? (int)timeout_ms : SHMBUS_FOREVER;
	shmbus_t *bus;
	int rc = attach(target, &bus);
	if (rc)
		return die_rc(rc, "attach");
	shmbus_producer_t *p;
	if ((rc = shmbus_producer_open(bus, &p)))
		return die_rc(rc, "producer");
	long sent = 0;
	char *line = NULL;
	size_t lcap = 0;
	for (int i = first;; i++) {
		const char *msg;
		size_t n;
		if (first < argc) {
			if (i >= argc)
				break;
			msg = argv[i], n = strlen(argv[i]);
		} else {
			ssize_t got = getline(&line, &lcap, stdin);
			if (got < 0)
				break;
			if (got > 0 && line[got - 1] == '\n')
				got--;
			msg = line, n = (size_t)got;
		}
		if ((rc = shmbus_send(p, msg, n, prio, wait))) {
			if (rc == SHMBUS_ERR_TIMEOUT)
				fprintf(stderr, "%s: send to bus \"%s\": timed out after %s waiting for room (%ld message(s) sent before)\n",
				        prog, target, shown, sent);
			else
				fprintf(stderr, "%s: send to bus \"%s\": message %ld: %s\n", prog, target, sent + 1, shmbus_last_error());
			free(line);
			return exit_status(rc);
		}
		sent++;
	}
	free(line);
	shmbus_producer_close(p);
	shmbus_close(bus);
	return 0;
}

static int cmd_recv(int argc, char **argv)
{
	if (argc < 1)
		return usage("recv: missing bus name");
	const char *target = argv[0];
	long count = 1, timeout_ms = 0;
	char shown[40] = "";
	bool bad = false;
	for (int i = 1; i < argc; i += 2) {
		if (i + 1 >= argc)
			return usage("recv: option without a value");
		if (!strcmp(argv[i], "-n") || !strcmp(argv[i], "--count"))
			count = argl(argv[i + 1], "count", 0, 1L << 40, &bad);
		else if (!strcmp(argv[i], "--timeout") || !strcmp(argv[i], "--timeout-ms"))
			bad |= !timeout_opt(argv[i], argv[i + 1], &timeout_ms, shown, sizeof shown);
		else
			return usage("recv: unknown option");
	}
	if (bad)
		return 2;
	catch_signals(); /* before the consumer role is visible to others */
	shmbus_t *bus;
	int rc = attach(target, &bus);
	if (rc)
		return die_rc(rc, "attach");
	shmbus_consumer_t *c;
	if ((rc = shmbus_consumer_open(bus, &c)))
		return die_rc(rc, "consumer");
	int64_t deadline = timeout_ms > 0 ? now_ms() + timeout_ms : -1;
	size_t cap = 1 << 16;
	uint8_t *buf = malloc(cap);
	long got = 0;
	int status = 0;
	while (buf && (count == 0 || got < count)) {
		/* Wait in slices, so that an interrupt or the deadline ends the wait. */
		int64_t left = deadline < 0 ? 100 : deadline - now_ms();
		if (interrupted) {
			rc = -1;
		} else if (left <= 0) {
			rc = SHMBUS_ERR_TIMEOUT;
		} else {
			size_t n;
			rc = shmbus_receive(c, buf, cap, &n, NULL, (int)(left < 100 ? left : 100));
			if (rc == SHMBUS_ERR_TIMEOUT)
				continue; /* a slice, not the deadline: look again */
			if (rc == SHMBUS_ERR_SHORT_BUFFER) {
				free(buf);
				buf = malloc(cap = n);
				continue;
			}
			if (rc == SHMBUS_OK) {
				fwrite(buf, 1, n, stdout);
				putchar('\n');
				got++;
				continue;
			}
		}
		char want[32] = "";
		if (count > 0)
			snprintf(want, sizeof want, " of %ld", count);
		if (rc == SHMBUS_ERR_TIMEOUT && count == 0)
			break; /* -n 0 ends at the timeout */
		if (rc == SHMBUS_ERR_TIMEOUT) {
			fprintf(stderr, "%s: recv from bus \"%s\": timed out after %s: received %ld%s message(s)\n", prog, target, shown,
			        got, want);
			status = 3;
		} else if (rc == -1) {
			fprintf(stderr, "%s: recv from bus \"%s\": interrupted: received %ld%s message(s)\n", prog, target, got, want);
			status = 130;
		} else {
			fprintf(stderr, "%s: recv from bus \"%s\": %s (after %ld message(s))\n", prog, target, shmbus_last_error(), got);
			status = exit_status(rc);
		}
		break;
	}
	if (!buf)
		return die_rc(SHMBUS_ERR_NO_MEMORY, "buffer");
	free(buf);
	shmbus_consumer_close(c);
	shmbus_close(bus);
	return status;
}

static int cmd_info(int argc, char **argv)
{
	if (argc != 1)
		return usage("info: one bus");
	shmbus_t *bus;
	int rc = attach(argv[0], &bus);
	if (rc)
		return die_rc(rc, "attach");
	printf("priorities=%d capacity=%llu record_payload=%zu max_message=%llu slots=%d wake=%s multi=%d failfast=%d\n",
	       shmbus_priorities(bus), (unsigned long long)shmbus_lane_capacity(bus), shmbus_max_record_payload(bus),
	       (unsigned long long)shmbus_max_message(bus), shmbus_peer_slots(bus),
	       shmbus_wake_mode(bus) == SHMBUS_WAKE_SEM ? "sem" : "futex", shmbus_multi_producer(bus), shmbus_fail_fast(bus));
	if (via_daemon)
		printf("daemon kind=%s size=%llu mode=%04o uid=%u gid=%u max_record=%u\n", kind_name(daemon_info.kind),
		       (unsigned long long)daemon_info.size, daemon_info.mode, daemon_info.uid, daemon_info.gid,
		       daemon_info.max_record);
	shmbus_close(bus);
	return 0;
}

/* open-many attaches to each path, then (if that works) drains it as a
 * consumer with try-receive, reporting what happened; it must never crash,
 * whatever the files hold. */
static int cmd_open_many(int argc, char **argv)
{
	shmbus_open_options o = {.wait_ms = -1};
	size_t cap = 1 << 20;
	uint8_t *buf = malloc(cap);
	if (!buf)
		return die_rc(SHMBUS_ERR_NO_MEMORY, "buffer");
	for (int i = 0; i < argc; i++) {
		shmbus_t *bus;
		int rc = shmbus_open_path(argv[i], &o, &bus);
		if (rc) {
			printf("%s: open: %s\n", argv[i], shmbus_last_error());
			continue;
		}
		shmbus_consumer_t *c;
		rc = shmbus_consumer_open(bus, &c);
		if (rc) {
			printf("%s: consumer: %s\n", argv[i], shmbus_last_error());
			shmbus_close(bus);
			continue;
		}
		long got = 0;
		size_t n;
		while ((rc = shmbus_try_receive(c, buf, cap, &n, NULL)) == SHMBUS_OK && got < 100000)
			got++;
		printf("%s: ok: %ld message(s), then %s\n", argv[i], got, rc ? shmbus_last_error() : "stop");
		shmbus_close(bus);
	}
	free(buf);
	return 0;
}

/* daemon-open SOCKET NAME [--no-fd]: shmbus_daemon_open alone, printing
 * the BUS reply ("" for SOCKET: the default rule). */
static int cmd_daemon_open(int argc, char **argv)
{
	if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "--no-fd")))
		return usage("daemon-open SOCKET NAME [--no-fd]");
	int want_fd = argc == 2, fd = -1, conn = -1;
	shmbus_daemon_info in;
	int rc = shmbus_daemon_open(argv[0], argv[1], want_fd, &fd, &conn, &in);
	if (rc)
		return die_rc(rc, "daemon-open");
	printf("kind=%s priorities=%d multi=%d wake=%s size=%llu max_message=%llu fd=%s\n", kind_name(in.kind),
	       in.priorities, in.multi_producer, in.wake == SHMBUS_WAKE_SEM ? "sem" : "futex",
	       (unsigned long long)in.size, (unsigned long long)in.max_message, fd >= 0 ? "yes" : "no");
	if (fd >= 0)
		close(fd);
	shmbus_daemon_close(conn);
	return 0;
}

/* board-get BOARD KEY: print KEY's revision, a space and its value.
 * board-put BOARD KEY VALUE [COUNT]: put VALUE (COUNT times), print the last
 * revision. */
static int cmd_board_get(int argc, char **argv)
{
	if (argc != 2)
		return usage("board-get: BOARD KEY");
	shmbus_board_t *b;
	int rc = shmbus_board_open(argv[0], NULL, &b);
	if (rc)
		return die_rc(rc, "board-get");
	char buf[1 << 16];
	size_t n = 0;
	uint64_t rev = 0;
	rc = shmbus_board_get(b, argv[1], strlen(argv[1]), buf, sizeof buf, &n, &rev);
	if (rc) {
		shmbus_board_close(b);
		return die_rc(rc, "board-get");
	}
	printf("%llu %.*s\n", (unsigned long long)rev, (int)n, buf);
	shmbus_board_close(b);
	return 0;
}

static int cmd_board_put(int argc, char **argv)
{
	if (argc != 3 && argc != 4)
		return usage("board-put: BOARD KEY VALUE [COUNT]");
	long count = argc == 4 ? atol(argv[3]) : 1;
	shmbus_board_t *b;
	int rc = shmbus_board_open(argv[0], NULL, &b);
	if (rc)
		return die_rc(rc, "board-put");
	uint64_t rev = 0;
	for (long i = 0; i < count; i++) {
		rc = shmbus_board_put(b, argv[1], strlen(argv[1]), argv[2], strlen(argv[2]), &rev);
		if (rc) {
			shmbus_board_close(b);
			return die_rc(rc, "board-put");
		}
	}
	printf("%llu\n", (unsigned long long)rev);
	shmbus_board_close(b);
	return 0;
}

/* board-cas BOARD KEY REV VALUE: compare-and-put, print the new revision;
 * on a mismatch exit 4 and print the key's revision. */
static int cmd_board_cas(int argc, char **argv)
{
	if (argc != 4)
		return usage("board-cas: BOARD KEY REV VALUE");
	shmbus_board_t *b;
	int rc = shmbus_board_open(argv[0], NULL, &b);
	if (rc)
		return die_rc(rc, "board-cas");
	uint64_t rev = 0;
	rc = shmbus_board_cas(b, argv[1], strlen(argv[1]), strtoull(argv[2], NULL, 10), argv[3], strlen(argv[3]), &rev);
	shmbus_board_close(b);
	if (rc == SHMBUS_ERR_REVISION) {
		printf("%llu\n", (unsigned long long)rev);
		fprintf(stderr, "%s: board-cas: %s\n", prog, shmbus_last_error());
		return 4;
	}
	if (rc)
		return die_rc(rc, "board-cas");
	printf("%llu\n", (unsigned long long)rev);
	return 0;
}

/* board-rm BOARD KEY: delete KEY, print the tombstone's revision. */
static int cmd_board_rm(int argc, char **argv)
{
	if (argc != 2)
		return usage("board-rm: BOARD KEY");
	shmbus_board_t *b;
	int rc = shmbus_board_open(argv[0], NULL, &b);
	if (rc)
		return die_rc(rc, "board-rm");
	uint64_t rev = 0;
	rc = shmbus_board_delete(b, argv[1], strlen(argv[1]), &rev);
	shmbus_board_close(b);
	if (rc)
		return die_rc(rc, "board-rm");
	printf("%llu\n", (unsigned long long)rev);
	return 0;
}

/* board-watch BOARD KEY AFTER [N] [TIMEOUT_MS]: N changes past AFTER. */
static int cmd_board_watch(int argc, char **argv)
{
	if (argc < 3 || argc > 5)
		return usage("board-watch: BOARD KEY AFTER [N] [TIMEOUT_MS]");
	uint64_t after = strtoull(argv[2], NULL, 10);
	long count = argc >= 4 ? atol(argv[3]) : 1;
	int timeout = argc == 5 ? atoi(argv[4]) : SHMBUS_FOREVER;
	shmbus_board_t *b;
	int rc = shmbus_board_open(argv[0], NULL, &b);
	if (rc)
		return die_rc(rc, "board-watch");
	static char buf[1 << 20];
	for (long i = 0; i < count; i++) {
		size_t n = 0;
		int dead = 0;
		rc = shmbus_board_watch(b, argv[1], strlen(argv[1]), after, timeout, buf, sizeof buf, &n, &after, &dead);
		if (rc) {
			shmbus_board_close(b);
			return die_rc(rc, "board-watch");
		}
		if (dead)
			printf("%llu (deleted)\n", (unsigned long long)after);
		else
			printf("%llu %.*s\n", (unsigned long long)after, (int)n, buf);
		fflush(stdout);
	}
	shmbus_board_close(b);
	return 0;
}

/* board-incr BOARD KEY COUNT: COUNT times, read KEY as a decimal number
 * (none: 0) and compare-and-put it plus one, again on a conflict; print
 * the conflicts met. */
static int cmd_board_incr(int argc, char **argv)
{
	if (argc != 3)
		return usage("board-incr: BOARD KEY COUNT");
	long count = atol(argv[2]);
	shmbus_board_t *b;
	int rc = shmbus_board_open(argv[0], NULL, &b);
	if (rc)
		return die_rc(rc, "board-incr");
	const char *k = argv[1];
	long conflicts = 0;
	for (long i = 0; i < count;) {
		char buf[32], out[32];
		size_t n = 0;
		uint64_t rev = 0, v = 0;
		rc = shmbus_board_get(b, k, strlen(k), buf, sizeof buf - 1, &n, &rev);
		if (rc == SHMBUS_OK) {
			buf[n] = 0;
			v = strtoull(buf, NULL, 10);
		} else if (rc != SHMBUS_ERR_NOT_FOUND) {
			shmbus_board_close(b);
			return die_rc(rc, "board-incr get");
		}
		int m = snprintf(out, sizeof out, "%llu", (unsigned long long)(v + 1));
		rc = shmbus_board_cas(b, k, strlen(k), rev, out, (size_t)m, NULL);
		if (rc == SHMBUS_ERR_REVISION) {
			conflicts++;
			continue;
		}
		if (rc) {
			shmbus_board_close(b);
			return die_rc(rc, "board-incr cas");
		}
		i++;
	}
	shmbus_board_close(b);
	printf("%ld\n", conflicts);
	return 0;
}

static int run(int argc, char **argv)
{
	crc_init();
	if (argc < 2)
		return usage("missing command");
	const char *cmd = argv[1];
	if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
		fputs(help_text, stdout);
		return 0;
	}
	argc -= 2;
	argv += 2;
	if (!strcmp(cmd, "send")) return cmd_send(argc, argv);
	if (!strcmp(cmd, "recv")) return cmd_recv(argc, argv);
	if (!strcmp(cmd, "info")) return cmd_info(argc, argv);
	if (!strcmp(cmd, "produce")) return cmd_produce(argc, argv);
	if (!strcmp(cmd, "consume")) return cmd_consume(argc, argv);
	if (!strcmp(cmd, "open-many")) return cmd_open_many(argc, argv);
	if (!strcmp(cmd, "daemon-open")) return cmd_daemon_open(argc, argv);
	if (!strcmp(cmd, "board-get")) return cmd_board_get(argc, argv);
	if (!strcmp(cmd, "board-put")) return cmd_board_put(argc, argv);
	if (!strcmp(cmd, "board-cas")) return cmd_board_cas(argc, argv);
	if (!strcmp(cmd, "board-rm")) return cmd_board_rm(argc, argv);
	if (!strcmp(cmd, "board-watch")) return cmd_board_watch(argc, argv);
	if (!strcmp(cmd, "board-incr")) return cmd_board_incr(argc, argv);
	fprintf(stderr, "%s: unknown command \"%s\" (see '%s help')\n", prog, cmd, prog);
	return 2;
}

int main(int argc, char **argv)
{
	int rc = run(argc, argv);
	if (daemon_conn >= 0)
		shmbus_daemon_close(daemon_conn);
	return rc;
}
