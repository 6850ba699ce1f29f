"""Link test peer: a Server on stdin/stdout (the pseudo-terminal master), run by MicroPython.

    micropython -X heapsize=96k link_peer.py [--versions 1,2] [--store PATH]
                [--max-message N] [--name NAME]

Handlers: peerlib.install (echo, store/load through a file, fault injection, sleep, ...).
Diagnostics go to stderr; stdout is the link.
"""

import gc
import sys

import peerlib as L

from hubi_core import link
from hubi_core import protocol as P
from hubi_core.errors import LinkClosed


def opt(name, default):
    a = sys.argv
    for i in range(len(a) - 1):
        if a[i] == name:
            return a[i + 1]
    return default


versions = tuple(int(v) for v in opt("--versions", "1").split(","))
faulty = L.FaultyTransport(link.StreamTransport(sys.stdin.buffer, sys.stdout.buffer))
srv = link.Server(
    faulty,
    versions=versions,
    name=opt("--name", "link-peer"),
    max_message=int(opt("--max-message", str(P.MAX_MESSAGE))),
)
L.install(srv, faulty, opt("--store", "/tmp/hubi-link-peer.bin"))


def log_event(ev):
    print("link-peer event: %s" % ev, file=sys.stderr)


srv.on_event = log_event
gc.collect()
print("link-peer ready, versions %s, free heap %d" % (versions, gc.mem_free()), file=sys.stderr)
try:
    srv.serve_forever()
except LinkClosed as e:
    print("link-peer: %s" % e, file=sys.stderr)
