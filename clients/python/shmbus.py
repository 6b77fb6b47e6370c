"""A client of the shmbus daemon, in standard-library Python (3.8 or later).

``shmbus daemon`` serves buses over a UNIX stream socket; docs/daemon-protocol.md
in the shmbus repository is the wire protocol this module speaks (version 1).
Through a :class:`Client` a program creates, opens, lists, inspects and
removes buses, sends and receives messages through the daemon, may receive a
bus's segment descriptor to map it itself, subscribes to peer events, and
reads, writes and watches the keys of boards (shared keyed values)::

    import shmbus

    with shmbus.Client() as bus:
        bus.create("jobs", priorities=3)
        bus.send("jobs", b"page the on-call", priority=2)
        priority, message = bus.recv("jobs", timeout=1.0)

        rev = bus.board_put("cluster", "leader", b"node-1")
        value, rev = bus.board_get("cluster", "leader")
        entry = bus.board_watch("cluster", "leader", after=rev, timeout=5.0)

Every refusal by the daemon raises a subclass of :class:`ShmbusError`
carrying the protocol's error ``code`` and the daemon's ``message``. A
connection that breaks, closes early or carries something that is not the
protocol raises :class:`ConnectionError` (:class:`ProtocolError` for the
latter) and is closed: the next call raises ``ConnectionError`` too.

A client executes one request at a time. It may be shared between threads,
whose calls then take turns; a thread blocked in :meth:`Client.recv` holds up
the others, so a program that receives and sends at once uses two clients,
as the protocol itself advises.
"""

import array
import collections
import json
import os
import select
import socket
import struct
import threading
import time

__all__ = [
    "Client", "connect", "default_socket_path",
    "BusInfo", "Event", "Welcome", "BoardEntry",
    "ShmbusError", "ProtocolError",
    "BadFrame", "UnknownType", "TooLarge", "BadVersion", "HelloRequired",
    "NotFound", "Exists", "PermissionDenied", "BadName", "BadArgument",
    "Busy", "Full", "Empty", "Timeout", "NoSlot", "Corrupt", "Unsupported",
    "Shutdown", "InternalError", "ConnLimit", "Overloaded",
    "NoKey", "RevisionConflict", "BadKey",
    "MULTI_PRODUCER", "SINGLE_PRODUCER",
    "WAKE_DEFAULT", "WAKE_FUTEX", "WAKE_SEM",
    "KIND_FILE", "KIND_MEMFD",
    "JOIN", "LEAVE", "CRASH",
    "ROLE_NONE", "ROLE_PRODUCER", "ROLE_CONSUMER",
]

PROTOCOL_VERSION = 1

# Frame types (section 3), as the document numbers them. A reply's type is
# 0x8000 | its request's type, except BUS, the reply of CREATE and OPEN.
HELLO = 0x0001
CREATE = 0x0002
OPEN = 0x0003
SEND = 0x0004
RECV = 0x0005
RELEASE = 0x0006
STAT = 0x0007
LIST = 0x0008
SUBSCRIBE = 0x0009
UNSUBSCRIBE = 0x000A
REMOVE = 0x000B
BOARD_GET = 0x000C
BOARD_PUT = 0x000D
BOARD_CAS = 0x000E
BOARD_DELETE = 0x000F
BOARD_WATCH = 0x0010
OK = 0x8000
WELCOME = 0x8001
BUS = 0x8002
MESSAGE = 0x8005
STAT_REPLY = 0x8007
LIST_REPLY = 0x8008
EVENT = 0x8009
ENTRY = 0x800C  # BOARD_GET, BOARD_WATCH
REVISION = 0x800D  # BOARD_PUT, BOARD_CAS, BOARD_DELETE
ERROR = 0x80FF

# The reply each request expects.
_REPLY_OF = {
    HELLO: WELCOME, CREATE: BUS, OPEN: BUS, SEND: OK, RECV: MESSAGE,
    RELEASE: OK, STAT: STAT_REPLY, LIST: LIST_REPLY, SUBSCRIBE: OK,
    UNSUBSCRIBE: OK, REMOVE: OK, BOARD_GET: ENTRY, BOARD_PUT: REVISION,
    BOARD_CAS: REVISION, BOARD_DELETE: REVISION, BOARD_WATCH: ENTRY,
}

# CREATE and OPEN flags.
FLAG_MEMFD = 1 << 0
FLAG_FAILFAST = 1 << 1
FLAG_WANT_FD = 1 << 2
# SEND and RECV flags.
FLAG_NOWAIT = 1 << 0

MULTI_PRODUCER = 0  # any number of producers (MPSC lanes)
SINGLE_PRODUCER = 1  # one producer at a time (SPSC lanes)
WAKE_DEFAULT = 0  # the daemon's default wake mode
WAKE_FUTEX = 1
WAKE_SEM = 2  # System V semaphores
KIND_FILE = 1
KIND_MEMFD = 2

# Event kinds and peer roles.
JOIN = 1
LEAVE = 2
CRASH = 3
ROLE_NONE = 0
ROLE_PRODUCER = 1
ROLE_CONSUMER = 2
ROLE_SUBSCRIBER = 3  # fan-out buses
EVENT_NAMES = {JOIN: "JOIN", LEAVE: "LEAVE", CRASH: "CRASH"}
ROLE_NAMES = {ROLE_NONE: "none", ROLE_PRODUCER: "producer",
              ROLE_CONSUMER: "consumer", ROLE_SUBSCRIBER: "subscriber"}

# max_payload until WELCOME says otherwise: a 64 MiB message and its fields.
DEFAULT_MAX_PAYLOAD = (64 << 20) + (64 << 10)

_HEADER = struct.Struct("<IHHI")  # length, type, flags, id
_U32_MAX = 0xFFFFFFFF
_MAX_FDS = 4  # room for descriptors in one read; the daemon sends one


# Errors ---------------------------------------------------------------------

class ShmbusError(Exception):
    """The daemon refused a request (an ERROR frame).

    ``code`` is the protocol's error code, ``name`` its name (``"NOT_FOUND"``)
    and ``message`` the daemon's explanation. Each code has its own subclass;
    an unknown code raises :class:`InternalError`, as the protocol asks.
    """

    code = 0
    name = "ERROR"

    def __init__(self, message="", code=None):
        if code is not None:
            self.code = code
        self.message = message
        super().__init__(message)

    def __str__(self):
        return "%s (%d): %s" % (self.name, self.code, self.message)


class ProtocolError(ConnectionError):
    """The daemon sent something that is not protocol version 1.

    The connection cannot be trusted to be in step after that; it is closed.
    """


def _error_class(code, name, doc):
    cls = type(_class_name(name), (ShmbusError,),
               {"code": code, "name": name, "__doc__": doc})
    cls.__module__ = __name__
    return cls


def _class_name(name):
    special = {"PERMISSION": "PermissionDenied", "INTERNAL": "InternalError",
               "REVISION": "RevisionConflict"}
    if name in special:
        return special[name]
    return "".join(part.capitalize() for part in name.split("_"))


BadFrame = _error_class(
    1, "BAD_FRAME", "The frame was malformed (flags set, payload did not decode).")
UnknownType = _error_class(2, "UNKNOWN_TYPE", "No such request type.")
TooLarge = _error_class(
    3, "TOO_LARGE",
    "The frame is over max_payload, the message over the bus's max_message, "
    "or the value over the board's max_value.")
BadVersion = _error_class(
    4, "BAD_VERSION", "The daemon does not speak the protocol version asked for.")
HelloRequired = _error_class(5, "HELLO_REQUIRED", "A request came before HELLO.")
NotFound = _error_class(6, "NOT_FOUND", "No bus (or board) of that name.")
Exists = _error_class(7, "EXISTS", "CREATE: a bus of that name exists.")
PermissionDenied = _error_class(
    8, "PERMISSION",
    "The bus's owner and mode do not admit this client for this request.")
BadName = _error_class(9, "BAD_NAME", "The name is not a valid bus name.")
BadArgument = _error_class(
    10, "BAD_ARGUMENT",
    "A value is out of range (priority, configuration, flags).")
Busy = _error_class(
    11, "BUSY", "The role is held by another live process or connection.")
Full = _error_class(
    12, "FULL",
    "SEND with nowait: no room now; board_put, board_cas: no free key cell.")
Empty = _error_class(13, "EMPTY", "RECV with nowait: no message now.")
Timeout = _error_class(14, "TIMEOUT", "The request's timeout passed.")
NoSlot = _error_class(15, "NO_SLOT", "Every peer slot of the bus is held.")
Corrupt = _error_class(16, "CORRUPT", "The segment is damaged.")
Unsupported = _error_class(
    17, "UNSUPPORTED", "The request needs something the system lacks.")
Shutdown = _error_class(18, "SHUTDOWN", "The daemon is shutting down.")
InternalError = _error_class(
    19, "INTERNAL", "Anything else (also any error code this client does not know).")
ConnLimit = _error_class(
    20, "CONN_LIMIT",
    "The daemon has as many connections open as it allows (in all, or for "
    "this user); the connection is closed.")
Overloaded = _error_class(
    21, "OVERLOADED",
    "The daemon's memory budget had no room for the request; try again later.")
NoKey = _error_class(
    22, "NO_KEY",
    "board_get, board_delete: the key has no value (never written, or deleted).")
RevisionConflict = _error_class(
    23, "REVISION",
    "board_cas: the key's revision is not the one given; nothing was written.")
BadKey = _error_class(24, "BAD_KEY", "A board key is 1 to 255 bytes.")

ERRORS = {cls.code: cls for cls in (
    BadFrame, UnknownType, TooLarge, BadVersion, HelloRequired, NotFound,
    Exists, PermissionDenied, BadName, BadArgument, Busy, Full, Empty,
    Timeout, NoSlot, Corrupt, Unsupported, Shutdown, InternalError,
    ConnLimit, Overloaded, NoKey, RevisionConflict, BadKey)}


def error_from(code, message):
    """Return the exception for an ERROR frame's code and message."""
    cls = ERRORS.get(code)
    if cls is None:
        return InternalError(message, code=code)
    return cls(message)


# Replies and events ---------------------------------------------------------

Welcome = collections.namedtuple(
    "Welcome", "version max_payload server pid uid gid")
Welcome.__doc__ = """The daemon's WELCOME: its protocol version, the largest
frame payload it accepts, its name and version, and this client's pid, uid and
gid as the kernel told the daemon."""

BusInfo = collections.namedtuple(
    "BusInfo",
    "name kind producers wake priorities mode uid gid size max_message "
    "max_record fd")
BusInfo.__doc__ = """A BUS reply (CREATE, OPEN). ``kind`` is KIND_FILE or
KIND_MEMFD, ``producers`` MULTI_PRODUCER or SINGLE_PRODUCER, ``wake``
WAKE_FUTEX or WAKE_SEM, ``size`` the segment's size in bytes. ``fd`` is the
segment's descriptor when it was asked for (``want_fd=True``), else None; the
caller owns it and closes it with os.close."""

Event = collections.namedtuple(
    "Event", "kind bus pid slot role client time_ns")
Event.__doc__ = """A peer event: ``kind`` is JOIN, LEAVE or CRASH; ``pid`` the
process holding (or that held) the peer ``slot``; ``role`` ROLE_PRODUCER,
ROLE_CONSUMER or ROLE_NONE; ``client`` the pid of the daemon client a slot is
held for (0 if none); ``time_ns`` the Unix time of the observation."""


BoardEntry = collections.namedtuple("BoardEntry", "revision deleted value")
BoardEntry.__doc__ = """A board key's entry (board_watch): its value at
``revision``, or, with ``deleted`` True, the tombstone of its deletion (an
empty ``value``)."""


def _decode_entry(r):
    rev, deleted, value = r.u64(), r.u8(), r.bytes()
    return BoardEntry(rev, deleted != 0, value)


def _key(key):
    """A board key (str, as UTF-8, or bytes) as the protocol's key field.
    The empty key goes to the daemon, which refuses it (BadKey); one over
    255 bytes cannot be said and is refused here, with the same class."""
    raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if len(raw) > 0xFF:
        raise BadKey("key of %d bytes; a board key is 1 to 255 bytes" % len(raw))
    return _pack("<B", len(raw)) + raw


def _event_kind_name(self):
    return EVENT_NAMES.get(self.kind, str(self.kind))


def _event_role_name(self):
    return ROLE_NAMES.get(self.role, str(self.role))


Event.kind_name = property(_event_kind_name, doc="JOIN, LEAVE or CRASH.")
Event.role_name = property(_event_role_name,
                           doc="producer, consumer or none.")


class _Reader:
    """Decodes a payload's fields; running past the end is a ProtocolError."""

    def __init__(self, data, what):
        self._data = memoryview(data)
        self._pos = 0
        self._what = what

    def _take(self, n):
        end = self._pos + n
        if end > len(self._data):
            raise ProtocolError("%s: payload of %d bytes ends inside a field"
                                % (self._what, len(self._data)))
        chunk = self._data[self._pos:end]
        self._pos = end
        return chunk

    def u8(self):
        return self._take(1)[0]

    def u16(self):
        return struct.unpack("<H", self._take(2))[0]

    def u32(self):
        return struct.unpack("<I", self._take(4))[0]

    def u64(self):
        return struct.unpack("<Q", self._take(8))[0]

    def str(self):
        raw = self._take(self.u16())
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("%s: a string is not UTF-8" % self._what) from None

    def bytes(self):
        return bytes(self._take(self.u32()))

    def remaining(self):
        return len(self._data) - self._pos


def _str(value, what="string"):
    raw = value.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("%s of %d bytes is too long" % (what, len(raw)))
    return _pack("<H", len(raw)) + raw


def _pack(fmt, *values):
    """struct.pack, with a value out of its field's range a ValueError."""
    try:
        return struct.pack(fmt, *values)
    except struct.error as e:
        raise ValueError("value out of range: %s" % e) from None


def _timeout_ms(timeout):
    """Seconds (None: no limit) to the protocol's timeout_ms (0: no limit)."""
    if timeout is None:
        return 0
    if timeout < 0:
        raise ValueError("timeout must not be negative")
    ms = int(timeout * 1000)
    if ms < timeout * 1000:
        ms += 1
    if ms > _U32_MAX:
        raise ValueError("timeout %r is too long" % timeout)
    return max(ms, 1)


def default_socket_path():
    """Where the daemon listens, by the rule `shmbus daemon` follows too:
    $SHMBUS_SOCKET, else (for a user other than root)
    $XDG_RUNTIME_DIR/shmbus.sock, else /run/shmbus/shmbus.sock."""
    path = os.environ.get("SHMBUS_SOCKET")
    if path:
        return path
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.geteuid() != 0:
        return os.path.join(runtime, "shmbus.sock")
    return "/run/shmbus/shmbus.sock"


# The client -----------------------------------------------------------------

class Client:
    """A connection to ``shmbus daemon``.

    ``Client(path)`` connects to the daemon's socket (default:
    :func:`default_socket_path`) and says HELLO; ``client_name`` is free
    text for the daemon's logs. The connection is the client's lease on the
    roles it holds and the descriptors it received: closing it (or exiting)
    ends them. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, path=None, client_name="shmbus.py", sock=None):
        self.path = path if path is not None else default_socket_path()
        self._lock = threading.RLock()
        self._events = collections.deque()
        self._frame_fds = []
        self._next_id = 1
        self._max_payload = DEFAULT_MAX_PAYLOAD
        self._ancsize = socket.CMSG_SPACE(_MAX_FDS * array.array("i").itemsize)
        self._recv_flags = getattr(socket, "MSG_CMSG_CLOEXEC", 0)
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.path)
            except OSError as e:
                sock.close()
                raise type(e)(e.errno, "connect to the shmbus daemon at %s: %s"
                              % (self.path, e.strerror)) from None
            except BaseException:
                sock.close()
                raise
        self._sock = sock
        try:
            self.welcome = self._hello(client_name)
        except BaseException:
            self.close()
            raise

    # Lifetime.

    def close(self):
        """Close the connection, ending its lease. Idempotent."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        self._close_fds(self._frame_fds)

    @property
    def closed(self):
        """True once the connection is closed."""
        return self._sock is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_sock", None) is not None:
            self.close()

    # Requests.

    def _hello(self, client_name):
        payload = _pack("<H", PROTOCOL_VERSION) + _str(client_name, "client name")
        welcome = self._request(HELLO, payload, decode=_decode_welcome)
        self._max_payload = welcome.max_payload
        return welcome

    def create(self, name, priorities=1, producers=MULTI_PRODUCER,
               wake=WAKE_DEFAULT, lane_capacity=0, max_message=0, mode=0o600,
               memfd=False, failfast=False, want_fd=False):
        """Create a bus owned by this client's uid and gid; return its BusInfo.

        ``priorities`` 1..64; ``producers`` MULTI_PRODUCER or
        SINGLE_PRODUCER; ``wake`` WAKE_DEFAULT, WAKE_FUTEX or WAKE_SEM;
        ``lane_capacity`` a power of two (0: 1 MiB); ``max_message`` (0: 16
        MiB); ``mode`` permission bits (0 means 0o600). ``memfd`` makes an
        anonymous sealed memfd bus that lives only in the daemon and in the
        peers holding its descriptor; ``failfast`` makes a full lane fail
        sends; ``want_fd`` returns the segment's descriptor in ``fd``.
        Raises Exists, BadName, BadArgument, Unsupported.
        """
        flags = ((FLAG_MEMFD if memfd else 0) | (FLAG_FAILFAST if failfast else 0)
                 | (FLAG_WANT_FD if want_fd else 0))
        payload = _str(name, "name") + _pack(
            "<HBBIIHB", priorities, producers, wake, lane_capacity,
            max_message, mode, flags)
        return self._bus(CREATE, payload, want_fd)

    def open(self, name, want_fd=False):
        """Describe the bus ``name`` (BusInfo); with ``want_fd`` also pass
        its segment's descriptor, for the caller to map (docs/layout.md).

        Opening with ``want_fd`` needs read and write permission and starts
        a lease: the daemon releases what this process holds in the bus when
        the process exits after the connection ends. Raises NotFound,
        PermissionDenied, BadName.
        """
        payload = _str(name, "name") + _pack(
            "<B", FLAG_WANT_FD if want_fd else 0)
        return self._bus(OPEN, payload, want_fd)

    def _bus(self, ftype, payload, want_fd):
        return self._request(ftype, payload, keep_fds=True,
                             decode=lambda r, fds: _decode_bus(r, fds, want_fd))

    def send(self, name, data, priority=0, nowait=False, timeout=None):
        """Send ``data`` (a bytes-like object) on bus ``name`` at ``priority``.

        Waits for room in the lane unless ``nowait`` (then Full) or until
        ``timeout`` seconds pass (then Timeout; None waits as long as it
        takes). Messages one client sends on one bus arrive in the order
        sent. Raises NotFound, PermissionDenied, BadArgument (priority),
        TooLarge, Busy (a single-producer bus's role is held), NoSlot.
        """
        data = memoryview(data).cast("B")
        fields = _str(name, "name") + _pack(
            "<BBII", priority, FLAG_NOWAIT if nowait else 0,
            _timeout_ms(timeout), len(data))
        if len(fields) + len(data) > self._max_payload:
            raise TooLarge("message of %d bytes does not fit the daemon's "
                           "frame limit of %d bytes" % (len(data), self._max_payload))
        self._request(SEND, fields, data)

    def recv(self, name, nowait=False, timeout=None):
        """Receive the next message of bus ``name``: (priority, bytes).

        The first recv on a bus makes this client its consumer (Busy if
        another process or client is). Messages come oldest of the highest
        priority first. Waits for a message unless ``nowait`` (then Empty)
        or until ``timeout`` seconds pass (then Timeout; None: no limit).
        """
        payload = _str(name, "name") + _pack(
            "<BI", FLAG_NOWAIT if nowait else 0, _timeout_ms(timeout))
        return self._request(RECV, payload,
                             decode=lambda r: (r.u8(), r.bytes()))

    def release(self, name):
        """Give back the producer and consumer roles this client holds on
        bus ``name`` and end its lease on it."""
        self._request(RELEASE, _str(name, "name"))

    def stat(self, name):
        """The statistics of bus ``name`` as a dict, the document ``shmbus
        stat --json NAME`` prints."""
        return self._request(STAT, _str(name, "name"), decode=_decode_stat)

    def list(self):
        """The names of the daemon's buses, sorted."""
        return self._request(LIST, b"", decode=_decode_list)

    def remove(self, name):
        """Delete bus ``name`` (its file or memfd and semaphore set). Only
        its owner or root may: otherwise PermissionDenied."""
        self._request(REMOVE, _str(name, "name"))

    # Boards ------------------------------------------------------------
    #
    # Keys are str (sent as UTF-8) or bytes, 1 to 255 bytes; values are
    # bytes-like, up to the board's max_value. Revisions are the board's:
    # unique, increasing with every write.

    def board_get(self, board, key):
        """The latest value of ``key`` on ``board`` and its revision:
        (bytes, int). NoKey if the key has no value (never written, or
        deleted); NotFound if there is no such board."""
        entry = self._request(BOARD_GET, _str(board, "board") + _key(key),
                              decode=_decode_entry)
        return entry.value, entry.revision

    def board_put(self, board, key, value):
        """Make ``value`` the value of ``key`` (last writer wins); return
        its revision. TooLarge over the board's max_value, Full when every
        key cell holds another key."""
        return self._board_write(BOARD_PUT, board, key, b"", value)

    def board_cas(self, board, key, revision, value):
        """Compare-and-put: make ``value`` the value of ``key`` only if
        its revision is still ``revision`` (0: the key has no value); return
        the new revision. RevisionConflict otherwise, and nothing is
        written."""
        return self._board_write(BOARD_CAS, board, key,
                                 _pack("<Q", revision), value)

    def board_delete(self, board, key):
        """Delete the value of ``key``; return the tombstone's revision.
        NoKey if it had none."""
        return self._request(BOARD_DELETE, _str(board, "board") + _key(key),
                             decode=lambda r: r.u64())

    def board_watch(self, board, key, after=0, timeout=None):
        """Wait until the revision of ``key`` is past ``after``, then return
        its :class:`BoardEntry` at the latest revision (a value, or a
        deletion). Writes faster than the watcher are coalesced: the latest
        value, never a stale one. Timeout after ``timeout`` seconds (None:
        no limit). Like recv, it holds up this client's other calls."""
        payload = _str(board, "board") + _key(key) + _pack(
            "<QI", after, _timeout_ms(timeout))
        return self._request(BOARD_WATCH, payload, decode=_decode_entry)

    def _board_write(self, ftype, board, key, fields, value):
        value = memoryview(value).cast("B")
        head = _str(board, "board") + _key(key) + fields + _pack(
            "<I", len(value))
        if len(head) + len(value) > self._max_payload:
            raise TooLarge("value of %d bytes does not fit the daemon's "
                           "frame limit of %d bytes" % (len(value), self._max_payload))
        return self._request(ftype, head, value, decode=lambda r: r.u64())

    def subscribe(self, name=""):
        """Receive peer events of bus ``name`` ("": every bus this client may
        read, now and later). Read them with :meth:`next_event` or
        :meth:`events`."""
        self._request(SUBSCRIBE, _str(name, "name"))

    def unsubscribe(self, name=""):
        """Stop the events of a :meth:`subscribe` with the same ``name``.
        Events that arrived before are still returned by next_event."""
        self._request(UNSUBSCRIBE, _str(name, "name"))

    # Events.

    def next_event(self, timeout=None):
        """Return the next peer event, or None if none comes within
        ``timeout`` seconds (None: wait as long as it takes).

        Events that arrived while the client waited for a reply were queued
        and come first, in order.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._events:
                sock = self._socket()
                wait = None
                if deadline is not None:
                    wait = max(0.0, deadline - time.monotonic())
                if not self._readable(sock, wait):
                    return None
                self._guarded(self._read_unsolicited)
            return self._events.popleft()

    def events(self, timeout=None):
        """Iterate over peer events as they come; stop when none has come
        for ``timeout`` seconds (None: never stop)."""
        while True:
            event = self.next_event(timeout)
            if event is None:
                return
            yield event

    def pending_events(self):
        """How many events are queued (received but not yet returned)."""
        return len(self._events)

    # Framing.

    def _socket(self):
        if self._sock is None:
            raise ConnectionError("shmbus client: connection closed")
        return self._sock

    @staticmethod
    def _readable(sock, wait):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(None if wait is None else wait * 1000))

    def _guarded(self, func, *args):
        """Run func; anything but a refusal by the daemon closes the
        connection, since the frames are then out of step."""
        try:
            return func(*args)
        except ShmbusError:
            raise
        except BaseException:
            self.close()
            raise

    def _request(self, ftype, payload, data=None, decode=None, keep_fds=False):
        """Send a request and wait for its reply; return decode(reader) (or
        decode(reader, fds) with keep_fds), or None without decode."""
        with self._lock:
            return self._guarded(self._exchange, ftype, payload, data, decode,
                                 keep_fds)

    def _exchange(self, ftype, payload, data, decode, keep_fds):
        sock = self._socket()
        fid = self._next_id
        self._next_id = self._next_id % _U32_MAX + 1
        size = len(payload) + (len(data) if data is not None else 0)
        sock.sendall(_HEADER.pack(8 + size, ftype, 0, fid) + payload)
        if data is not None and len(data):
            sock.sendall(data)
        want = _REPLY_OF.get(ftype)  # None: any reply (a raw request)
        while True:
            rtype, rid, body, fds = self._read_frame()
            if rtype == EVENT and rid == 0:
                self._close_fds(fds)
                self._queue_event(body)
                continue
            if rtype == ERROR and rid in (fid, 0):
                self._close_fds(fds)
                raise self._decode_error(body)
            if rid != fid:
                self._close_fds(fds)
                raise ProtocolError("reply id %d (type 0x%04x) to request %d"
                                    % (rid, rtype, fid))
            if want is not None and rtype != want:
                self._close_fds(fds)
                raise ProtocolError("reply type 0x%04x to request type 0x%04x"
                                    % (rtype, ftype))
            if fds and not keep_fds:
                self._close_fds(fds)
                raise ProtocolError("descriptor(s) with a reply of type 0x%04x"
                                    % rtype)
            r = _Reader(body, "reply 0x%04x" % rtype)
            if keep_fds:
                return decode(r, fds)
            return decode(r) if decode is not None else None

    def _read_unsolicited(self):
        rtype, rid, body, fds = self._read_frame()
        self._close_fds(fds)
        if rtype == EVENT and rid == 0:
            self._queue_event(body)
        elif rtype == ERROR and rid == 0:
            raise self._decode_error(body)
        else:
            raise ProtocolError("frame of type 0x%04x, id %d, while no "
                                "request was waiting" % (rtype, rid))

    def _queue_event(self, body):
        r = _Reader(body, "EVENT")
        kind = r.u8()
        if kind not in EVENT_NAMES:
            return  # a later version's event: ignored, as section 6 says
        bus = r.str()
        event = Event(kind, bus, r.u32(), r.u16(), r.u8(), r.u32(), r.u64())
        self._events.append(event)

    @staticmethod
    def _decode_error(body):
        r = _Reader(body, "ERROR")
        code = r.u16()
        return error_from(code, r.str())

    def _read_frame(self):
        """Read one frame: (type, id, payload, descriptors that came with it)."""
        header = self._read_exact(_HEADER.size)
        length, ftype, flags, fid = _HEADER.unpack(header)
        try:
            if length < 8 or length - 8 > self._max_payload:
                raise ProtocolError("frame length %d outside 8..%d"
                                    % (length, 8 + self._max_payload))
            if flags != 0:
                raise ProtocolError("frame flags 0x%04x" % flags)
            payload = self._read_exact(length - 8)
        except BaseException:
            self._close_fds(self._frame_fds)
            raise
        fds, self._frame_fds = self._frame_fds, []
        return ftype, fid, payload, fds

    def _read_exact(self, n):
        """Read exactly n bytes, collecting descriptors passed with them.

        The descriptors come with a frame's first byte, and a frame is read
        from its first byte with a read of its own, so those collected while
        reading a frame are that frame's.
        """
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        sock = self._sock
        while got < n:
            nbytes, ancdata, msg_flags, _ = sock.recvmsg_into(
                [view[got:]], self._ancsize, self._recv_flags)
            for level, kind, data in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
                    self._frame_fds.extend(fds)
            if msg_flags & socket.MSG_CTRUNC:
                raise ProtocolError("more descriptors than expected came "
                                    "with a frame")
            if nbytes == 0:
                raise ConnectionError("shmbus daemon closed the connection "
                                      "after %d of %d bytes" % (got, n))
            got += nbytes
        return buf

    @staticmethod
    def _close_fds(fds):
        while fds:
            try:
                os.close(fds.pop())
            except OSError:
                pass


# Reply decoders. Each reads the fields it knows and ignores any after them
# (section 6: a later version may add fields at the end).

def _decode_welcome(r):
    version, max_payload = r.u16(), r.u32()
    server = r.str()
    pid, uid, gid = r.u32(), r.u32(), r.u32()
    if version != PROTOCOL_VERSION:
        raise ProtocolError("WELCOME for version %d, asked for %d"
                            % (version, PROTOCOL_VERSION))
    if max_payload < 8:
        raise ProtocolError("WELCOME: max_payload %d" % max_payload)
    return Welcome(version, max_payload, server, pid, uid, gid)


def _decode_bus(r, fds, want_fd):
    """Decode a BUS reply; fds are the descriptors that came with it."""
    try:
        info = [r.str()]
        info += [r.u8() for _ in range(4)]  # kind, producers, wake, fd
        info += [r.u16(), r.u16(), r.u32(), r.u32(), r.u64(), r.u64(), r.u32()]
        has_fd = info[4]
        if has_fd != len(fds) or has_fd != (1 if want_fd else 0):
            raise ProtocolError(
                "BUS reply says fd=%d, %d descriptor(s) came, %s asked for"
                % (has_fd, len(fds), "one" if want_fd else "none"))
    except BaseException:
        Client._close_fds(fds)
        raise
    del info[4]
    return BusInfo(*info, fd=fds[0] if fds else None)


def _decode_stat(r):
    doc = r.bytes()
    try:
        return json.loads(doc.decode("utf-8"))
    except ValueError as e:
        raise ProtocolError("STAT reply is not JSON: %s" % e) from None


def _decode_list(r):
    count = r.u32()
    if count * 2 > r.remaining():
        raise ProtocolError("LIST reply: %d names in %d bytes"
                            % (count, r.remaining()))
    return [r.str() for _ in range(count)]


def connect(path=None, client_name="shmbus.py"):
    """Connect to the daemon at ``path`` (default: default_socket_path())."""
    return Client(path, client_name)
