"""Requests shmbus.Client never makes, sent to the real daemon to see the
errors they get arrive as their exception classes.

    python3 raw_errors.py     (the socket is $SHMBUS_SOCKET)

Prints one JSON object: case -> exception class name (or "ok"); for the
frames that cannot be read, also the id the ERROR carried and whether the
daemon then closed the connection.
"""

import json
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import shmbus  # noqa: E402


class RawClient(shmbus.Client):
    """A client that skips HELLO, or says it with another version."""

    def __init__(self, version=None):
        self._hello_version = version
        super().__init__()

    def _hello(self, client_name):
        if self._hello_version is None:
            return None
        payload = struct.pack("<H", self._hello_version) + b"\0\0"
        return self._request(shmbus.HELLO, payload,
                             decode=shmbus._decode_welcome)


def outcome(call):
    try:
        call()
    except shmbus.ShmbusError as e:
        return type(e).__name__
    except ConnectionError as e:
        return "%s: %s" % (type(e).__name__, e)
    return "ok"


def main():
    out = {}
    with shmbus.Client() as c:
        out["unknown type"] = outcome(lambda: c._request(0x0042, b""))
        # A str whose length runs past the payload.
        out["field past end"] = outcome(
            lambda: c._request(shmbus.STAT, b"\x09\x00abc"))
        # Bytes left over after the fields.
        out["bytes left over"] = outcome(
            lambda: c._request(shmbus.LIST, b"\x00"))
        out["not utf-8"] = outcome(
            lambda: c._request(shmbus.STAT, b"\x02\x00\xff\xfe"))
        out["usable after"] = outcome(c.list)
    try:
        RawClient(version=2)
        out["bad version"] = "ok"
    except shmbus.ShmbusError as e:
        out["bad version"] = type(e).__name__
    with RawClient() as c:
        out["hello required"] = outcome(c.list)
    for case, length, flags in [("flags set", 8, 1),
                                ("too long", 8 + (1 << 31), 0)]:
        with shmbus.Client() as c:
            c._sock.sendall(struct.pack("<IHHI", length, shmbus.LIST, flags, 77))
            ftype, fid, body, _ = c._read_frame()
            result = "type 0x%04x id %d" % (ftype, fid)
            if ftype == shmbus.ERROR:
                e = c._decode_error(body)
                result = "%s id %d" % (type(e).__name__, fid)
            try:
                c._read_frame()
                result += ", then more"
            except ConnectionError:
                result += ", then closed"
            out[case] = result
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
