#!/usr/bin/env python3
"""shmbus_cli.py: a small command line over shmbus.py, for users and tests.

    shmbus_cli.py [--socket PATH] COMMAND ...

Commands: hello, ls, create, rm, stat, open, send, recv, events, produce/consume,
which send and verify checksummed test messages (see checked_message), and
board get/put/cas/rm/watch, which read and write a board's keys through the
daemon as ``shmbus board`` does through the mapping.

Values follow the shmbus command's conventions: a SIZE is a whole number of
bytes, optionally followed by k, M, G or T (also KiB, MiB, GiB, TiB; powers
of 1024; any case) or B; a DUR is a number with a unit (500ms, 2s, 1m30s)
or a plain number of seconds (2, 0.5). JSON output is one compact object
per line, with modes in octal ("0600") and wake modes, producer modes and
kinds by name ("futex", "multi", "file"), as ``shmbus stat --json``.

Errors are one line on stderr naming the exception class, e.g.
``shmbus_cli.py: recv jobs: NotFound: no bus "jobs"``.
Exit status: 0 success, 1 error or failed verification, 2 usage error
(also a bus name the daemon calls invalid, a board key it calls invalid,
and a configuration it refuses in create), 3 timeout (Timeout, or Empty with --nowait), 130 interrupted.
"""

import argparse
import base64
import json
import os
import re
import struct
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shmbus  # noqa: E402  (found beside this file)

PROG = "shmbus_cli.py"

# A checked message: this header, then the body checked_body makes.
CHECK_HEADER = struct.Struct("<IIHHI")  # producer, seq, priority, 0, crc32(body)
PATTERN_PERIOD = 251  # a prime, so that no fragment size is a multiple of it


class VerifyError(Exception):
    """A received message is not the one that was sent."""


def checked_body(producer, seq, size):
    """The body of message seq of producer: size bytes of a pattern that
    depends on both. The Go tests (python_test.go) make the same bytes."""
    block = bytes((j * 167 + seq * 31 + producer * 97 + 1) & 0xFF
                  for j in range(PATTERN_PERIOD))
    return (block * (size // PATTERN_PERIOD + 1))[:size]


def checked_message(producer, seq, priority, size):
    """Message seq of producer: a 16-byte header (producer, seq, priority,
    CRC-32 of the body) and a body of size bytes."""
    body = checked_body(producer, seq, size)
    return CHECK_HEADER.pack(producer, seq, priority, 0, zlib.crc32(body)) + body


def verify_message(priority, msg):
    """Check a received checked message; return (producer, seq, body size)."""
    if len(msg) < CHECK_HEADER.size:
        raise VerifyError("message of %d bytes is shorter than its header"
                          % len(msg))
    producer, seq, sent_prio, zero, crc = CHECK_HEADER.unpack_from(msg)
    body = msg[CHECK_HEADER.size:]
    what = "message %d of producer %d" % (seq, producer)
    if zero != 0:
        raise VerifyError("%s: header padding is %d" % (what, zero))
    if zlib.crc32(body) != crc:
        raise VerifyError("%s: CRC-32 of the %d-byte body differs"
                          % (what, len(body)))
    if body != checked_body(producer, seq, len(body)):
        raise VerifyError("%s: body differs from the pattern" % what)
    if priority != sent_prio:
        raise VerifyError("%s: sent at priority %d, received at %d"
                          % (what, sent_prio, priority))
    return producer, seq, len(body)


SIZE_UNITS = {"": 0, "b": 0, "k": 10, "kib": 10, "m": 20, "mib": 20,
              "g": 30, "gib": 30, "t": 40, "tib": 40}
SIZE_RE = re.compile(r"^([0-9]+)([A-Za-z]*)$")
DURATION_RE = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|\u00b5s|ms|s|m|h)")
DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1.0,
                  "m": 60.0, "h": 3600.0}


def parse_size(text):
    """A SIZE, as the shmbus command reads it: '4096', '64k', '64KiB',
    '3M', '1B' -> bytes. 0 is allowed (a default, or an empty body)."""
    m = SIZE_RE.match(text)
    unit = m and m.group(2).lower()
    if not m or unit not in SIZE_UNITS:
        if m and len(unit) == 2 and unit[1] == "b" and unit[0] in "kmgt":
            raise argparse.ArgumentTypeError(
                "invalid size %r: %s may mean powers of 1000 or of 1024: write "
                "%s or %siB" % (text, m.group(2), m.group(2)[0],
                                m.group(2)[0].upper()))
        raise argparse.ArgumentTypeError(
            "invalid size %r: use a whole number of bytes, optionally followed "
            "by k, M, G or T (or KiB, MiB, GiB, TiB: powers of 1024)" % text)
    return int(m.group(1)) << SIZE_UNITS[unit]


def parse_duration(text):
    """A DUR, as the shmbus command reads it: a Go duration ('1s', '100ms',
    '1m30s') or a plain number of seconds ('1', '0.5') -> seconds."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
        parts = DURATION_RE.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            seconds = sum(float(n) * DURATION_UNITS[u] for n, u in parts)
    if seconds is None or seconds != seconds or seconds in (float("inf"),):
        raise argparse.ArgumentTypeError(
            "invalid duration %r: use a number with a unit (500ms, 2s, 1m30s) "
            "or a number of seconds" % text)
    if seconds < 0:
        raise argparse.ArgumentTypeError(
            "invalid duration %r: must not be negative" % text)
    return seconds


def format_seconds(seconds):
    """Seconds as the shmbus command writes a duration: 300ms, 1s, 1m30s."""
    if seconds < 1:
        return "%gms" % round(seconds * 1000, 3)
    if seconds < 60:
        return "%gs" % round(seconds, 3)
    m, s = divmod(seconds, 60)
    return "%dm%gs" % (m, round(s, 3))


def int_list(text):
    return [int(v) for v in text.split(",")]


def size_list(text):
    return [parse_size(v) for v in text.split(",")]


def emit(obj):
    """Print one JSON object as a compact line, as the shmbus command does,
    at once (tests read it live)."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def bus_info_json(info):
    """A BusInfo as JSON in the shmbus command's vocabulary: names for the
    kind, producer and wake modes, the mode in octal."""
    out = info._asdict()
    out["kind"] = {shmbus.KIND_FILE: "file",
                   shmbus.KIND_MEMFD: "memfd"}.get(info.kind, str(info.kind))
    out["producers"] = {shmbus.MULTI_PRODUCER: "multi",
                        shmbus.SINGLE_PRODUCER: "single"}.get(
                            info.producers, str(info.producers))
    out["wake"] = {shmbus.WAKE_FUTEX: "futex",
                   shmbus.WAKE_SEM: "sem"}.get(info.wake, str(info.wake))
    out["mode"] = "%04o" % info.mode
    return out


# Commands ---------------------------------------------------------------

def cmd_hello(c, args):
    emit(c.welcome._asdict())


def cmd_ls(c, args):
    for name in c.list():
        print(name)


def cmd_create(c, args):
    info = c.create(args.name, priorities=args.priorities,
                    producers=(shmbus.SINGLE_PRODUCER if args.single_producer
                               else shmbus.MULTI_PRODUCER),
                    wake={"default": shmbus.WAKE_DEFAULT,
                          "futex": shmbus.WAKE_FUTEX,
                          "sem": shmbus.WAKE_SEM}[args.wake],
                    lane_capacity=args.capacity, max_message=args.max_message,
                    mode=int(args.mode, 8), memfd=args.memfd,
                    failfast=args.failfast)
    emit(bus_info_json(info))


def cmd_rm(c, args):
    for name in args.names:
        c.remove(name)


def cmd_stat(c, args):
    emit(c.stat(args.name))


def cmd_open(c, args):
    """Open a bus, with its descriptor if asked; describe what came."""
    info = c.open(args.name, want_fd=args.fd)
    out = bus_info_json(info)
    if info.fd is not None:
        st = os.fstat(info.fd)
        out["fd_size"] = st.st_size
        out["fd_magic"] = os.pread(info.fd, 8, 0).hex()
        os.close(info.fd)
        out["fd"] = True
    emit(out)


def cmd_send(c, args):
    messages = args.messages
    if not messages:
        messages = [line.rstrip("\n") for line in sys.stdin]
    for m in messages:
        c.send(args.name, m.encode("utf-8"), priority=args.priority,
               nowait=args.nowait, timeout=args.timeout)


def cmd_recv(c, args):
    for _ in range(args.count):
        priority, msg = c.recv(args.name, nowait=args.nowait,
                               timeout=args.timeout)
        if args.json:
            emit({"priority": priority, "size": len(msg),
                  "data": msg.decode("latin-1")})
        else:
            sys.stdout.write(msg.decode("utf-8", "replace") + "\n")
            sys.stdout.flush()


def cmd_events(c, args):
    c.subscribe(args.name)
    emit({"subscribed": args.name})
    seen = 0
    for e in c.events(timeout=args.timeout):
        out = e._asdict()
        out["kind"] = e.kind_name
        out["role"] = e.role_name
        emit(out)
        seen += 1
        if seen == args.count:
            return
    if args.count:
        raise shmbus.Timeout("%d of %d event(s) in %gs"
                             % (seen, args.count, args.timeout or 0))


def entry_json(key, value, rev, deleted=False):
    """A board entry as ``shmbus board ... --json`` prints it: the value as
    "value" when it is UTF-8 text, else as "value_base64"."""
    out = {"key": key, "rev": rev}
    try:
        text = value.decode("utf-8")
        if text:
            out["value"] = text
    except UnicodeDecodeError:
        out["value_base64"] = base64.b64encode(value).decode("ascii")
    out["size"] = len(value)
    if deleted:
        out["deleted"] = True
    return out


def print_value(value):
    """A value as a line (a newline added unless it ends with one)."""
    out = sys.stdout.buffer
    out.write(value if value.endswith(b"\n") else value + b"\n")
    out.flush()


def read_value(arg):
    """VALUE, or all of standard input for "-"."""
    if arg == "-":
        return sys.stdin.buffer.read()
    return arg.encode("utf-8")


def print_rev(args, rev):
    if args.json:
        emit({"key": args.key, "rev": rev})
    else:
        print(rev, flush=True)


def cmd_board_get(c, args):
    value, rev = c.board_get(args.name, args.key)
    if args.json:
        emit(entry_json(args.key, value, rev))
        return
    if args.rev:
        sys.stdout.write("%d " % rev)
        sys.stdout.flush()
    print_value(value)


def cmd_board_put(c, args):
    print_rev(args, c.board_put(args.name, args.key, read_value(args.value)))


def cmd_board_cas(c, args):
    print_rev(args, c.board_cas(args.name, args.key, args.revision,
                                read_value(args.value)))


def cmd_board_rm(c, args):
    print_rev(args, c.board_delete(args.name, args.key))


def cmd_board_watch(c, args):
    """Print each new value of the key as it comes (a deletion as an empty
    line); with -n, stop after that many."""
    after, seen = args.after, 0
    while args.count == 0 or seen < args.count:
        e = c.board_watch(args.name, args.key, after=after,
                          timeout=args.timeout)
        if args.json:
            emit(entry_json(args.key, e.value, e.revision, e.deleted))
        else:
            print_value(e.value)
        after = e.revision
        seen += 1


def cmd_produce(c, args):
    """Send count checked messages as producer k: message seq has priority
    priorities[seq % len] and a body of sizes[seq % len] bytes."""
    total = 0
    for seq in range(args.count):
        prio = args.priorities[seq % len(args.priorities)]
        msg = checked_message(args.producer, seq, prio,
                              args.sizes[seq % len(args.sizes)])
        c.send(args.name, msg, priority=prio, timeout=args.timeout)
        total += len(msg)
    emit({"sent": args.count, "bytes": total, "producer": args.producer})


def cmd_consume(c, args):
    """Receive count messages from each of producers 0..P-1 and verify them:
    content, checksum, priority, no loss, no duplicate, order per producer
    and priority; with --priority-order also that priorities never rise
    (true when every message was queued before the first recv)."""
    expected = args.count * args.producers
    seen = {k: set() for k in range(args.producers)}
    last = {}  # (producer, priority) -> last seq
    by_prio = {}
    total = 0
    prev_prio = None
    for i in range(expected):
        priority, msg = c.recv(args.name, timeout=args.timeout)
        k, seq, _ = verify_message(priority, msg)
        if k not in seen or seq >= args.count:
            raise VerifyError("message %d of producer %d was not expected"
                              % (seq, k))
        if seq in seen[k]:
            raise VerifyError("message %d of producer %d came twice" % (seq, k))
        seen[k].add(seq)
        if last.get((k, priority), -1) > seq:
            raise VerifyError("message %d of producer %d came after %d at "
                              "priority %d" % (seq, k, last[(k, priority)],
                                               priority))
        last[(k, priority)] = seq
        if args.priority_order and prev_prio is not None and priority > prev_prio:
            raise VerifyError("message %d (#%d received) at priority %d came "
                              "after one at priority %d"
                              % (seq, i, priority, prev_prio))
        prev_prio = priority
        by_prio[priority] = by_prio.get(priority, 0) + 1
        total += len(msg)
    extra = None
    if args.expect_empty:
        try:
            _, msg = c.recv(args.name, nowait=True)
            extra = len(msg)
        except shmbus.Empty:
            pass
        if extra is not None:
            raise VerifyError("a message of %d bytes more than expected" % extra)
    emit({"received": expected, "bytes": total,
          "by_priority": {str(p): n for p, n in sorted(by_prio.items())}})


def parser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--socket", help="the daemon's socket (default: "
                   "$SHMBUS_SOCKET, $XDG_RUNTIME_DIR/shmbus.sock, "
                   "/run/shmbus/shmbus.sock)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def cmd(name, func, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=func)
        return sp

    def waiting(sp):
        sp.add_argument("--nowait", action="store_true")
        sp.add_argument("--timeout", type=parse_duration, default=None,
                        metavar="DUR",
                        help="how long to wait: 1s, 100ms, or a number of "
                        "seconds (default: no limit)")

    cmd("hello", cmd_hello, "print the daemon's WELCOME as JSON")
    cmd("ls", cmd_ls, "list the daemon's buses")
    sp = cmd("create", cmd_create, "create a bus")
    sp.add_argument("name")
    sp.add_argument("--priorities", type=int, default=1)
    sp.add_argument("--single-producer", action="store_true")
    sp.add_argument("--wake", choices=["default", "futex", "sem"],
                    default="default")
    sp.add_argument("--capacity", type=parse_size, default=0,
                    help="bytes per lane (default 1MiB)")
    sp.add_argument("--max-message", type=parse_size, default=0)
    sp.add_argument("--mode", default="600", help="octal permission bits")
    sp.add_argument("--memfd", action="store_true")
    sp.add_argument("--failfast", action="store_true")
    sp = cmd("rm", cmd_rm, "remove buses")
    sp.add_argument("names", nargs="+")
    sp = cmd("stat", cmd_stat, "print a bus's statistics as JSON")
    sp.add_argument("name")
    sp = cmd("open", cmd_open, "describe a bus (with --fd: receive and "
             "check its descriptor)")
    sp.add_argument("name")
    sp.add_argument("--fd", action="store_true")
    sp = cmd("send", cmd_send, "send messages (arguments, or stdin lines)")
    sp.add_argument("name")
    sp.add_argument("messages", nargs="*")
    sp.add_argument("-p", "--priority", type=int, default=0)
    waiting(sp)
    sp = cmd("recv", cmd_recv, "receive messages and print them")
    sp.add_argument("name")
    sp.add_argument("-n", "--count", type=int, default=1)
    sp.add_argument("--json", action="store_true",
                    help="one JSON object per message (data as latin-1)")
    waiting(sp)
    sp = cmd("events", cmd_events, "subscribe and print peer events as "
             "JSON lines")
    sp.add_argument("name", nargs="?", default="", help="bus (default: all)")
    sp.add_argument("-n", "--count", type=int, default=0,
                    help="stop after this many events (0: never)")
    sp.add_argument("--timeout", type=parse_duration, default=None,
                    metavar="DUR",
                    help="stop when no event came for DUR (1s, 100ms, or "
                    "seconds)")
    sp = cmd("produce", cmd_produce, "send checksummed test messages")
    sp.add_argument("name")
    sp.add_argument("-n", "--count", type=int, required=True)
    sp.add_argument("-k", "--producer", type=int, default=0,
                    help="producer number written into the messages")
    sp.add_argument("--sizes", type=size_list, default=[100],
                    help="body sizes, cycled (e.g. 0,100,3MiB)")
    sp.add_argument("--priorities", type=int_list, default=[0],
                    help="priorities, cycled (e.g. 0,2,1)")
    sp.add_argument("--timeout", type=parse_duration, default=None,
                    metavar="DUR", help="wait at most DUR for room for each "
                    "message")
    sp = cmd("consume", cmd_consume, "receive and verify checksummed test "
             "messages")
    sp.add_argument("name")
    sp.add_argument("-n", "--count", type=int, required=True,
                    help="messages per producer")
    sp.add_argument("--producers", type=int, default=1,
                    help="producers 0..N-1 sent count messages each")
    sp.add_argument("--priority-order", action="store_true",
                    help="require priorities never to rise")
    sp.add_argument("--expect-empty", action="store_true",
                    help="require the bus to be empty afterwards")
    sp.add_argument("--timeout", type=parse_duration, default=10.0,
                    metavar="DUR",
                    help="wait at most DUR for each message (default 10s)")

    board = cmd("board", None, "read and write a board's keys")
    bsub = board.add_subparsers(dest="board_command", metavar="BOARD_COMMAND")
    bsub.required = True

    def bcmd(name, func, help_, *positional):
        sp = bsub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=func)
        sp.add_argument("name", help="the board")
        sp.add_argument("key")
        for arg in positional:
            sp.add_argument(arg[0], **arg[1])
        sp.add_argument("--json", action="store_true",
                        help="print a JSON object, as shmbus board --json")
        return sp

    sp = bcmd("get", cmd_board_get, "print a key's value")
    sp.add_argument("--rev", action="store_true",
                    help="print the revision before the value")
    bcmd("put", cmd_board_put, "set a key's value; print its revision",
         ("value", {"help": 'the value ("-": standard input)'}))
    bcmd("cas", cmd_board_cas, "set a key's value if its revision is still "
         "REVISION (0: no value); print the new revision",
         ("revision", {"type": int}),
         ("value", {"help": 'the value ("-": standard input)'}))
    bcmd("rm", cmd_board_rm, "delete a key's value; print the tombstone's "
         "revision")
    sp = bcmd("watch", cmd_board_watch, "print each new value of a key as "
              "it comes")
    sp.add_argument("-n", "--count", type=int, default=0,
                    help="stop after this many values (0: never)")
    sp.add_argument("--after", type=int, default=0, metavar="REV",
                    help="print values past this revision (default 0: the "
                    "current one first, if any)")
    sp.add_argument("--timeout", type=parse_duration, default=None,
                    metavar="DUR", help="give up when no new value came for "
                    "DUR (default: no limit)")
    return p


# Commands that take a role on their bus, which they give back at the end:
# the daemon would too when the connection closes, but only once it has
# noticed, and the next command may come before that.
TAKES_ROLE = {cmd_send, cmd_recv, cmd_produce, cmd_consume}


def run(c, args):
    takes_role = args.func in TAKES_ROLE
    try:
        args.func(c, args)
    except BaseException:
        if takes_role and not c.closed:
            try:
                c.release(args.name)
            except (shmbus.ShmbusError, ConnectionError):
                pass  # e.g. NotFound: the error that matters is raised
        raise
    if takes_role:
        c.release(args.name)


def main(argv=None):
    p = parser()
    # argparse gives a '*' positional only the words before the first
    # option (send NAME -p 2 MESSAGE): the messages after it come back
    # unrecognized, and are taken here.
    args, extra = p.parse_known_args(argv)
    if extra and (args.command != "send" or any(w.startswith("-") for w in extra)):
        p.error("unrecognized arguments: %s" % " ".join(extra))
    if extra:
        args.messages += extra
    words = [args.command]
    if getattr(args, "board_command", None):
        words.append(args.board_command)
    if getattr(args, "name", ""):
        words.append(args.name)
    if getattr(args, "key", None) is not None:
        words.append(args.key)
    what = " ".join(words)
    try:
        with shmbus.Client(args.socket, client_name=PROG) as c:
            run(c, args)
    except (shmbus.ShmbusError, VerifyError, OSError) as e:
        print(error_line(what, args, e), file=sys.stderr)
        return exit_status(args, e)
    except KeyboardInterrupt:
        return 130
    return 0


def error_line(what, args, e):
    """The one line on stderr for e: the command, the exception class and
    what went wrong, without the protocol's code."""
    text = e.message if isinstance(e, shmbus.ShmbusError) else str(e)
    timeout = getattr(args, "timeout", None)
    if isinstance(e, shmbus.Timeout) and timeout is not None:
        text = "timed out after %s" % format_seconds(timeout)
    return "%s: %s: %s: %s" % (PROG, what, type(e).__name__,
                               " ".join(str(text).split()))


def exit_status(args, e):
    """The exit status for e, as the shmbus command's: 3 for a timeout, 2
    for what is wrong with the command line, 1 for the rest."""
    if isinstance(e, (shmbus.Timeout, shmbus.Empty)):
        return 3
    if isinstance(e, (shmbus.BadName, shmbus.BadKey)):
        return 2
    if isinstance(e, shmbus.BadArgument) and args.command == "create":
        return 2  # the configuration given: the shmbus command's usage error
    return 1


if __name__ == "__main__":
    sys.exit(main())
