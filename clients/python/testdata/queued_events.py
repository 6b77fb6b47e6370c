"""Events that come while the client waits for a reply are queued.

    python3 queued_events.py BUS SECONDS

Subscribes to BUS, says "subscribed", then waits SECONDS in a RECV on BUS
(the test makes a peer join meanwhile), and prints, as JSON, how many
events were queued when the RECV ended and the events themselves, read
with next_event(timeout=0): none of them is read from the socket after
the RECV.
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import shmbus  # noqa: E402


def main():
    bus, seconds = sys.argv[1], float(sys.argv[2])
    with shmbus.Client() as c:
        c.subscribe(bus)
        print("subscribed", flush=True)
        try:
            c.recv(bus, timeout=seconds)
            print(json.dumps({"error": "a message came"}))
            return 1
        except shmbus.Timeout:
            pass
        queued = c.pending_events()
        events = []
        while True:
            e = c.next_event(timeout=0)
            if e is None:
                break
            events.append({"kind": e.kind_name, "pid": e.pid,
                           "client": e.client, "role": e.role_name})
        print(json.dumps({"queued": queued, "events": events}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
