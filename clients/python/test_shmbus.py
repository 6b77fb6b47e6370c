"""Unit tests of shmbus.py's framing, against a fake daemon on a socket pair.

Run with ``python3 -m unittest test_shmbus`` in this directory (the Go test
python_test.go does). The fake daemon writes its replies into the socket
before the client reads them, so the tests need no threads except where a
message is larger than the socket's buffer.
"""

import array
import os
import socket
import struct
import tempfile
import threading
import unittest
from unittest import mock

import shmbus

HEADER = struct.Struct("<IHHI")

# Frame types, written out from docs/daemon-protocol.md rather than taken
# from shmbus.py, so that a wrong constant there fails here.
HELLO, CREATE, OPEN, SEND, RECV, RELEASE = 0x1, 0x2, 0x3, 0x4, 0x5, 0x6
STAT, LIST, SUBSCRIBE, UNSUBSCRIBE, REMOVE = 0x7, 0x8, 0x9, 0xA, 0xB
OK, WELCOME, BUS, MESSAGE = 0x8000, 0x8001, 0x8002, 0x8005
STAT_REPLY, LIST_REPLY, EVENT, ERROR = 0x8007, 0x8008, 0x8009, 0x80FF
JOIN, LEAVE, CRASH = 1, 2, 3
BOARD_GET, BOARD_PUT, BOARD_CAS, BOARD_DELETE = 0xC, 0xD, 0xE, 0xF
BOARD_WATCH, ENTRY, REVISION = 0x10, 0x800C, 0x800D


def s(text):
    raw = text.encode("utf-8")
    return struct.pack("<H", len(raw)) + raw


def b(data):
    return struct.pack("<I", len(data)) + data


def welcome(version=1, max_payload=shmbus.DEFAULT_MAX_PAYLOAD):
    return (struct.pack("<HI", version, max_payload) + s("shmbus test")
            + struct.pack("<III", 4242, 1000, 1001))


def bus_payload(name="jobs", fd=0, kind=shmbus.KIND_FILE):
    return (s(name) + struct.pack("<BBBBHHIIQQI", kind, 0, 1, fd, 3, 0o640,
                                  1000, 1001, 3 << 20, 16 << 20, 131064))


def event_payload(kind=JOIN, bus="jobs", pid=77, slot=3,
                  role=shmbus.ROLE_PRODUCER, client=0, time_ns=123456789):
    return (struct.pack("<B", kind) + s(bus)
            + struct.pack("<IHBIQ", pid, slot, role, client, time_ns))


class FakeDaemon:
    """The daemon's end of a socket pair, and a client on the other end."""

    def __init__(self, test, welcome_payload=None):
        self.test = test
        client_end, self.sock = socket.socketpair(socket.AF_UNIX,
                                                  socket.SOCK_STREAM)
        test.addCleanup(self.sock.close)
        self.reply(WELCOME, 1, welcome_payload or welcome())
        self.client = shmbus.Client(path="fake", sock=client_end)
        test.addCleanup(self.client.close)
        ftype, fid, payload = self.read_request()
        test.assertEqual((ftype, fid), (HELLO, 1))
        test.assertEqual(payload, struct.pack("<H", 1) + s("shmbus.py"))

    def send_frame(self, ftype, fid, payload=b"", flags=0, length=None,
                   fds=None):
        if length is None:
            length = 8 + len(payload)
        data = HEADER.pack(length, ftype, flags, fid) + payload
        if fds:
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                    array.array("i", fds).tobytes())]
            sent = self.sock.sendmsg([data], anc)
            self.sock.sendall(data[sent:])
        else:
            self.sock.sendall(data)

    def reply(self, ftype, fid, payload=b"", **kw):
        self.send_frame(ftype, fid, payload, **kw)

    def read_exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError("client closed after %d of %d bytes"
                               % (len(data), n))
            data += chunk
        return data

    def read_request(self):
        length, ftype, flags, fid = HEADER.unpack(self.read_exact(12))
        self.test.assertEqual(flags, 0)
        return ftype, fid, self.read_exact(length - 8)


def k(key):
    raw = key.encode("utf-8") if isinstance(key, str) else key
    return struct.pack("<B", len(raw)) + raw


def fd_is_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


class TestRequests(unittest.TestCase):
    """Each request's encoding and each reply's decoding."""

    def setUp(self):
        self.d = FakeDaemon(self)
        self.c = self.d.client

    def expect(self, ftype, payload):
        got = self.d.read_request()
        self.assertEqual(got[0], ftype)
        self.assertEqual(got[2], payload)
        return got[1]

    def test_welcome(self):
        self.assertEqual(self.c.welcome, shmbus.Welcome(
            1, shmbus.DEFAULT_MAX_PAYLOAD, "shmbus test", 4242, 1000, 1001))

    def test_create(self):
        self.d.reply(BUS, 2, bus_payload())
        info = self.c.create("jobs", priorities=3, producers=shmbus.SINGLE_PRODUCER,
                             wake=shmbus.WAKE_SEM, lane_capacity=1 << 16,
                             max_message=1 << 20, mode=0o640, memfd=True,
                             failfast=True)
        self.expect(CREATE, s("jobs") + struct.pack(
            "<HBBIIHB", 3, 1, 2, 1 << 16, 1 << 20, 0o640, 0b011))
        self.assertEqual(info, shmbus.BusInfo(
            "jobs", shmbus.KIND_FILE, 0, 1, 3, 0o640, 1000, 1001, 3 << 20,
            16 << 20, 131064, None))

    def test_open(self):
        self.d.reply(BUS, 2, bus_payload())
        self.assertEqual(self.c.open("jobs").name, "jobs")
        self.expect(OPEN, s("jobs") + b"\x00")

    def test_open_with_fd(self):
        with tempfile.TemporaryFile() as f:
            f.write(b"segment")
            f.flush()
            self.d.reply(BUS, 2, bus_payload(fd=1), fds=[f.fileno()])
            info = self.c.open("jobs", want_fd=True)
            self.expect(OPEN, s("jobs") + b"\x04")
            self.assertIsNotNone(info.fd)
            try:
                self.assertNotEqual(info.fd, f.fileno())
                self.assertEqual(os.fstat(info.fd).st_ino,
                                 os.fstat(f.fileno()).st_ino)
                self.assertFalse(os.get_inheritable(info.fd))
            finally:
                os.close(info.fd)

    def test_send(self):
        self.d.reply(OK, 2)
        self.c.send("jobs", b"hello", priority=2, nowait=True, timeout=0.0015)
        self.expect(SEND, s("jobs") + struct.pack("<BBI", 2, 1, 2)
                    + b(b"hello"))

    def test_send_defaults_and_bytearray(self):
        self.d.reply(OK, 2)
        self.c.send("jobs", bytearray(b"x"))
        self.expect(SEND, s("jobs") + struct.pack("<BBI", 0, 0, 0)
                    + b(b"x"))

    def test_send_empty(self):
        self.d.reply(OK, 2)
        self.c.send("jobs", b"")
        self.expect(SEND, s("jobs") + struct.pack("<BBII", 0, 0, 0, 0))

    def test_recv(self):
        self.d.reply(MESSAGE, 2, b"\x05" + b(b"payload"))
        self.assertEqual(self.c.recv("jobs", timeout=2), (5, b"payload"))
        self.expect(RECV, s("jobs") + struct.pack("<BI", 0, 2000))

    def test_board_get(self):
        self.d.reply(ENTRY, 2, struct.pack("<QB", 7, 0) + b(b"node-1"))
        self.assertEqual(self.c.board_get("cluster", "leader"), (b"node-1", 7))
        self.expect(BOARD_GET, s("cluster") + k("leader"))

    def test_board_put_bytes_key(self):
        self.d.reply(REVISION, 2, struct.pack("<Q", 9))
        self.assertEqual(self.c.board_put("cluster", b"\xff\x00", b"v"), 9)
        self.expect(BOARD_PUT, s("cluster") + k(b"\xff\x00") + b(b"v"))

    def test_board_cas(self):
        self.d.reply(REVISION, 2, struct.pack("<Q", 12))
        self.assertEqual(self.c.board_cas("cluster", "n", 11, bytearray(b"2")), 12)
        self.expect(BOARD_CAS, s("cluster") + k("n") + struct.pack("<Q", 11)
                    + b(b"2"))

    def test_board_delete(self):
        self.d.reply(REVISION, 2, struct.pack("<Q", 13))
        self.assertEqual(self.c.board_delete("cluster", "n"), 13)
        self.expect(BOARD_DELETE, s("cluster") + k("n"))

    def test_board_watch(self):
        self.d.reply(ENTRY, 2, struct.pack("<QB", 14, 1) + b(b""))
        self.assertEqual(self.c.board_watch("cluster", "n", after=13, timeout=0.5),
                         shmbus.BoardEntry(14, True, b""))
        self.expect(BOARD_WATCH, s("cluster") + k("n")
                    + struct.pack("<QI", 13, 500))

    def test_board_key_too_long_is_refused_locally(self):
        with self.assertRaises(shmbus.BadKey):
            self.c.board_get("cluster", "x" * 256)
        self.assertFalse(self.c.closed)

    def test_recv_nowait(self):
        self.d.reply(MESSAGE, 2, b"\x00" + b(b""))
        self.assertEqual(self.c.recv("jobs", nowait=True), (0, b""))
        self.expect(RECV, s("jobs") + struct.pack("<BI", 1, 0))

    def test_release_remove_subscribe_unsubscribe(self):
        for i, (call, ftype) in enumerate([
                (self.c.release, RELEASE),
                (self.c.remove, REMOVE),
                (self.c.subscribe, SUBSCRIBE),
                (self.c.unsubscribe, UNSUBSCRIBE)]):
            self.d.reply(OK, 2 + i)
            self.assertIsNone(call("jobs"))
            self.expect(ftype, s("jobs"))

    def test_subscribe_all(self):
        self.d.reply(OK, 2)
        self.c.subscribe()
        self.expect(SUBSCRIBE, s(""))

    def test_stat(self):
        doc = b'{"name": "jobs", "depth": 4, "lanes": []}'
        self.d.reply(STAT_REPLY, 2, b(doc))
        self.assertEqual(self.c.stat("jobs"),
                         {"name": "jobs", "depth": 4, "lanes": []})
        self.expect(STAT, s("jobs"))

    def test_list(self):
        self.d.reply(LIST_REPLY, 2,
                     struct.pack("<I", 3) + s("a") + s("b.c") + s("\u00e9"))
        self.assertEqual(self.c.list(), ["a", "b.c", "\u00e9"])
        self.expect(LIST, b"")

    def test_list_empty(self):
        self.d.reply(LIST_REPLY, 2, struct.pack("<I", 0))
        self.assertEqual(self.c.list(), [])

    def test_ids_increase(self):
        for i in range(3):
            self.d.reply(OK, 2 + i)
            self.c.release("jobs")
            self.assertEqual(self.d.read_request()[1], 2 + i)

    def test_ids_skip_zero(self):
        self.c._next_id = 0xFFFFFFFF
        self.d.reply(OK, 0xFFFFFFFF)
        self.d.reply(OK, 1)
        self.c.release("a")
        self.c.release("b")
        self.assertEqual(self.d.read_request()[1], 0xFFFFFFFF)
        self.assertEqual(self.d.read_request()[1], 1)

    def test_trailing_reply_bytes_ignored(self):
        # Section 6: a later version may add reply fields at the end.
        self.d.reply(MESSAGE, 2, b"\x01" + b(b"m") + b"future")
        self.assertEqual(self.c.recv("jobs"), (1, b"m"))
        self.d.reply(BUS, 3, bus_payload() + b"\x00" * 9)
        self.assertEqual(self.c.open("jobs").max_record, 131064)

    def test_large_messages(self):
        # Larger than the socket buffers: the fake daemon needs a thread.
        big = os.urandom(3 << 20)
        got = {}

        def daemon():
            got["request"] = self.d.read_request()
            self.d.reply(OK, got["request"][1])
            got["recv"] = self.d.read_request()
            self.d.reply(MESSAGE, got["recv"][1], b"\x07" + b(big))

        t = threading.Thread(target=daemon)
        t.start()
        self.c.send("big", big, priority=1)
        prio, msg = self.c.recv("big")
        t.join()
        self.assertEqual(got["request"][2],
                         s("big") + struct.pack("<BBI", 1, 0, 0) + b(big))
        self.assertEqual(prio, 7)
        self.assertTrue(msg == big, "3 MiB message differs")

    def test_too_large_for_frame_is_refused_locally(self):
        d = FakeDaemon(self, welcome(max_payload=100))
        with self.assertRaises(shmbus.TooLarge):
            d.client.send("jobs", b"x" * 100)
        self.assertFalse(d.client.closed)
        d.reply(OK, 2)
        d.client.send("jobs", b"x" * 50)
        self.assertEqual(d.read_request()[0], SEND)

    def test_argument_out_of_range(self):
        with self.assertRaises(ValueError):
            self.c.send("jobs", b"", priority=256)
        with self.assertRaises(ValueError):
            self.c.recv("jobs", timeout=-1)
        with self.assertRaises(ValueError):
            self.c.recv("jobs", timeout=5e6)
        with self.assertRaises(ValueError):
            self.c.open("x" * 70000)
        self.assertFalse(self.c.closed)

    def test_context_manager_closes(self):
        with self.c as c:
            self.assertFalse(c.closed)
        self.assertTrue(self.c.closed)
        self.assertEqual(self.d.sock.recv(1), b"")
        with self.assertRaises(ConnectionError):
            self.c.list()
        self.c.close()  # idempotent


class TestErrors(unittest.TestCase):
    """ERROR frames become the exception of their code."""

    CODES = {
        1: shmbus.BadFrame, 2: shmbus.UnknownType, 3: shmbus.TooLarge,
        4: shmbus.BadVersion, 5: shmbus.HelloRequired, 6: shmbus.NotFound,
        7: shmbus.Exists, 8: shmbus.PermissionDenied, 9: shmbus.BadName,
        10: shmbus.BadArgument, 11: shmbus.Busy, 12: shmbus.Full,
        13: shmbus.Empty, 14: shmbus.Timeout, 15: shmbus.NoSlot,
        16: shmbus.Corrupt, 17: shmbus.Unsupported, 18: shmbus.Shutdown,
        19: shmbus.InternalError, 20: shmbus.ConnLimit, 21: shmbus.Overloaded,
        22: shmbus.NoKey, 23: shmbus.RevisionConflict, 24: shmbus.BadKey,
    }

    def test_every_code(self):
        d = FakeDaemon(self)
        for i, (code, cls) in enumerate(sorted(self.CODES.items())):
            d.reply(ERROR, 2 + i,
                    struct.pack("<H", code) + s("because %d" % code))
            with self.assertRaises(cls) as cm:
                d.client.recv("jobs")
            e = cm.exception
            self.assertIsInstance(e, shmbus.ShmbusError)
            self.assertEqual(e.code, code)
            self.assertEqual(e.message, "because %d" % code)
            self.assertIn(e.name, str(e))
            self.assertFalse(d.client.closed, "an ERROR closed the client")
        self.assertEqual(len(set(self.CODES.values())), 24)

    def test_unknown_code_is_internal(self):
        d = FakeDaemon(self)
        d.reply(ERROR, 2, struct.pack("<H", 999) + s("new"))
        with self.assertRaises(shmbus.InternalError) as cm:
            d.client.list()
        self.assertEqual(cm.exception.code, 999)
        self.assertEqual(cm.exception.message, "new")

    def test_error_with_id_zero_fails_the_request(self):
        d = FakeDaemon(self)
        d.reply(ERROR, 0, struct.pack("<H", 18) + s("bye"))
        with self.assertRaises(shmbus.Shutdown):
            d.client.recv("jobs")

    def test_class_names(self):
        self.assertEqual(shmbus.NotFound.__name__, "NotFound")
        self.assertEqual(shmbus.PermissionDenied.__name__, "PermissionDenied")
        self.assertEqual(shmbus.InternalError.__name__, "InternalError")
        for name in shmbus.__all__:
            self.assertTrue(hasattr(shmbus, name), name)


class TestEvents(unittest.TestCase):

    def setUp(self):
        self.d = FakeDaemon(self)
        self.c = self.d.client

    def test_events_queued_while_waiting_for_reply(self):
        self.d.reply(OK, 2)
        self.c.subscribe("jobs")
        self.d.reply(EVENT, 0, event_payload(JOIN, pid=10))
        self.d.reply(EVENT, 0, event_payload(CRASH, pid=11,
                                                    client=99))
        self.d.reply(MESSAGE, 3, b"\x00" + b(b"m"))
        self.assertEqual(self.c.recv("jobs"), (0, b"m"))
        self.assertEqual(self.c.pending_events(), 2)
        e1 = self.c.next_event(timeout=0)
        e2 = self.c.next_event(timeout=0)
        self.assertEqual(e1, shmbus.Event(JOIN, "jobs", 10, 3,
                                          shmbus.ROLE_PRODUCER, 0, 123456789))
        self.assertEqual((e1.kind_name, e1.role_name), ("JOIN", "producer"))
        self.assertEqual((e2.kind_name, e2.pid, e2.client), ("CRASH", 11, 99))
        self.assertIsNone(self.c.next_event(timeout=0.02))

    def test_next_event_reads_the_socket(self):
        self.d.reply(EVENT, 0, event_payload(LEAVE, bus="b"))
        e = self.c.next_event(timeout=5)
        self.assertEqual((e.kind, e.bus), (LEAVE, "b"))

    def test_events_iterator_stops_after_timeout(self):
        for pid in (1, 2, 3):
            self.d.reply(EVENT, 0, event_payload(pid=pid))
        self.assertEqual([e.pid for e in self.c.events(timeout=0.05)],
                         [1, 2, 3])

    def test_unknown_event_kind_ignored(self):
        self.d.reply(EVENT, 0, b"\x09whatever a later version says")
        self.d.reply(EVENT, 0, event_payload(pid=5))
        self.assertEqual(self.c.next_event(timeout=5).pid, 5)

    def test_event_blocked_in_next_event_wakes(self):
        t = threading.Timer(0.05, self.d.reply,
                            (EVENT, 0, event_payload(pid=8)))
        t.start()
        try:
            self.assertEqual(self.c.next_event().pid, 8)
        finally:
            t.join()

    def test_error_with_id_zero_while_waiting_for_events(self):
        self.d.reply(ERROR, 0, struct.pack("<H", 18) + s("stopping"))
        with self.assertRaises(shmbus.Shutdown):
            self.c.next_event(timeout=5)

    def test_reply_while_no_request(self):
        self.d.reply(OK, 5)
        with self.assertRaises(shmbus.ProtocolError):
            self.c.next_event(timeout=5)
        self.assertTrue(self.c.closed)

    def test_closed_by_daemon_while_waiting(self):
        self.d.sock.close()
        with self.assertRaises(ConnectionError):
            self.c.next_event(timeout=5)
        self.assertTrue(self.c.closed)


class TestMalformed(unittest.TestCase):
    """Replies that are not the protocol: ProtocolError (a ConnectionError),
    and the client closes the connection."""

    def setUp(self):
        self.d = FakeDaemon(self)
        self.c = self.d.client

    def assertBroken(self, call, exc=shmbus.ProtocolError):
        with self.assertRaises(exc):
            call()
        self.assertTrue(self.c.closed, "connection left open")
        with self.assertRaises(ConnectionError):
            self.c.list()

    def test_field_runs_past_end(self):
        self.d.reply(MESSAGE, 2, b"\x01" + struct.pack("<I", 10) + b"abc")
        self.assertBroken(lambda: self.c.recv("jobs"))

    def test_empty_payload(self):
        self.d.reply(MESSAGE, 2, b"")
        self.assertBroken(lambda: self.c.recv("jobs"))

    def test_length_below_8(self):
        self.d.reply(OK, 2, length=7)
        self.assertBroken(lambda: self.c.release("jobs"))

    def test_length_over_max_payload(self):
        self.d.reply(OK, 2, length=8 + shmbus.DEFAULT_MAX_PAYLOAD + 1)
        self.assertBroken(lambda: self.c.release("jobs"))

    def test_flags_set(self):
        self.d.reply(OK, 2, flags=1)
        self.assertBroken(lambda: self.c.release("jobs"))

    def test_wrong_id(self):
        self.d.reply(OK, 3)
        self.assertBroken(lambda: self.c.release("jobs"))

    def test_wrong_type(self):
        self.d.reply(MESSAGE, 2, b"\x00" + b(b""))
        self.assertBroken(lambda: self.c.release("jobs"))

    def test_not_utf8(self):
        self.d.reply(LIST_REPLY, 2, struct.pack("<IH", 1, 2) + b"\xff\xfe")
        self.assertBroken(self.c.list)

    def test_list_count_too_large(self):
        self.d.reply(LIST_REPLY, 2, struct.pack("<I", 1 << 30))
        self.assertBroken(self.c.list)

    def test_stat_not_json(self):
        self.d.reply(STAT_REPLY, 2, b(b"{nope"))
        self.assertBroken(lambda: self.c.stat("jobs"))

    def test_truncated_error(self):
        self.d.reply(ERROR, 2, b"\x06")
        self.assertBroken(lambda: self.c.stat("jobs"))

    def test_truncated_event(self):
        self.d.reply(EVENT, 0, event_payload()[:-1])
        self.assertBroken(lambda: self.c.next_event(timeout=5))

    def test_short_read_in_header(self):
        self.d.sock.sendall(HEADER.pack(8, OK, 0, 2)[:5])
        self.d.sock.shutdown(socket.SHUT_WR)
        self.assertBroken(lambda: self.c.release("jobs"), ConnectionError)

    def test_short_read_in_payload(self):
        self.d.sock.sendall(HEADER.pack(8 + 20, MESSAGE, 0, 2) + b"\x00ab")
        self.d.sock.shutdown(socket.SHUT_WR)
        with self.assertRaises(ConnectionError) as cm:
            self.c.recv("jobs")
        self.assertNotIsInstance(cm.exception, shmbus.ProtocolError)
        self.assertIn("after 3 of 20 bytes", str(cm.exception))
        self.assertTrue(self.c.closed)

    def test_closed_before_reply(self):
        self.d.sock.shutdown(socket.SHUT_WR)
        self.assertBroken(lambda: self.c.recv("jobs"), ConnectionError)

    def test_welcome_bad_version(self):
        with self.assertRaises(shmbus.ProtocolError):
            FakeDaemon(self, welcome(version=2))

    def test_welcome_refused(self):
        a, b_ = socket.socketpair()
        self.addCleanup(b_.close)
        b_.sendall(HEADER.pack(8 + 2 + 2 + 4, ERROR, 0, 1)
                   + struct.pack("<H", 4) + s("v1?!"))
        with self.assertRaises(shmbus.BadVersion):
            shmbus.Client(sock=a)
        self.assertEqual(a.fileno(), -1, "socket of a failed client left open")


class TestDescriptors(unittest.TestCase):
    """Descriptors are the caller's only when a BUS reply says fd=1."""

    def setUp(self):
        self.d = FakeDaemon(self)
        self.c = self.d.client
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        self.pipe = r

    def received_fd_closed(self, call, exc):
        # The next descriptor number the client would get is what
        # os.dup returns now; the client must have closed it again.
        probe = os.dup(self.pipe)
        os.close(probe)
        with self.assertRaises(exc):
            call()
        self.assertFalse(fd_is_open(probe), "descriptor %d leaked" % probe)

    def test_fd_with_non_bus_reply(self):
        self.d.reply(OK, 2, fds=[self.pipe])
        self.received_fd_closed(lambda: self.c.release("jobs"),
                                shmbus.ProtocolError)

    def test_fd_not_asked_for(self):
        self.d.reply(BUS, 2, bus_payload(fd=1), fds=[self.pipe])
        self.received_fd_closed(lambda: self.c.open("jobs"),
                                shmbus.ProtocolError)

    def test_fd_flag_without_fd(self):
        self.d.reply(BUS, 2, bus_payload(fd=1))
        self.received_fd_closed(lambda: self.c.open("jobs", want_fd=True),
                                shmbus.ProtocolError)

    def test_fd_without_fd_flag(self):
        self.d.reply(BUS, 2, bus_payload(fd=0), fds=[self.pipe])
        self.received_fd_closed(lambda: self.c.open("jobs", want_fd=True),
                                shmbus.ProtocolError)

    def test_fd_asked_for_but_refused(self):
        self.d.reply(ERROR, 2, struct.pack("<H", 8) + s("rw needed"))
        self.received_fd_closed(lambda: self.c.open("jobs", want_fd=True),
                                shmbus.PermissionDenied)

    def test_fd_with_event(self):
        self.d.reply(EVENT, 0, event_payload(), fds=[self.pipe])
        self.d.reply(OK, 2)
        probe = os.dup(self.pipe)
        os.close(probe)
        self.c.release("jobs")
        self.assertFalse(fd_is_open(probe))
        self.assertEqual(self.c.next_event(timeout=0).pid, 77)

    def test_too_many_fds(self):
        self.d.reply(BUS, 2, bus_payload(fd=1),
                     fds=[self.pipe] * (shmbus._MAX_FDS + 4))
        with self.assertRaises(shmbus.ProtocolError):
            self.c.open("jobs", want_fd=True)
        self.assertTrue(self.c.closed)


class TestDefaults(unittest.TestCase):

    def test_constants_are_the_documents(self):
        self.assertEqual(
            (shmbus.FLAG_MEMFD, shmbus.FLAG_FAILFAST, shmbus.FLAG_WANT_FD,
             shmbus.FLAG_NOWAIT), (1, 2, 4, 1))
        self.assertEqual((shmbus.MULTI_PRODUCER, shmbus.SINGLE_PRODUCER), (0, 1))
        self.assertEqual((shmbus.WAKE_DEFAULT, shmbus.WAKE_FUTEX,
                          shmbus.WAKE_SEM), (0, 1, 2))
        self.assertEqual((shmbus.KIND_FILE, shmbus.KIND_MEMFD), (1, 2))
        self.assertEqual((shmbus.JOIN, shmbus.LEAVE, shmbus.CRASH), (1, 2, 3))
        self.assertEqual((shmbus.ROLE_NONE, shmbus.ROLE_PRODUCER,
                          shmbus.ROLE_CONSUMER), (0, 1, 2))
        self.assertEqual(shmbus.DEFAULT_MAX_PAYLOAD, 64 * 2**20 + 64 * 2**10)

    def test_default_socket_path(self):
        cases = [
            ({"SHMBUS_SOCKET": "/a/s", "XDG_RUNTIME_DIR": "/r"}, "/a/s"),
            ({"XDG_RUNTIME_DIR": "/r"}, "/r/shmbus.sock"),
            ({"SHMBUS_SOCKET": "", "XDG_RUNTIME_DIR": ""},
             "/run/shmbus/shmbus.sock"),
            ({}, "/run/shmbus/shmbus.sock"),
        ]
        for env, want in cases:
            with mock.patch.dict(os.environ, env, clear=True), \
                    mock.patch.object(os, "geteuid", return_value=1000):
                self.assertEqual(shmbus.default_socket_path(), want, env)
        # Root's daemon is the system one, whatever XDG_RUNTIME_DIR says.
        with mock.patch.dict(os.environ, {"XDG_RUNTIME_DIR": "/r"}, clear=True), \
                mock.patch.object(os, "geteuid", return_value=0):
            self.assertEqual(shmbus.default_socket_path(), "/run/shmbus/shmbus.sock")

    def test_timeout_ms(self):
        for timeout, want in [(None, 0), (0, 1), (0.0001, 1), (0.0015, 2),
                              (1, 1000), (2.5, 2500)]:
            self.assertEqual(shmbus._timeout_ms(timeout), want, timeout)

    def test_connect_refused(self):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(OSError):
                shmbus.connect(os.path.join(d, "no.sock"))


if __name__ == "__main__":
    unittest.main()
