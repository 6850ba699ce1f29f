"""Heap use of the token side of the link, run under MicroPython (-X heapsize=96k).

stdin: a file of request frames (written by the test); stdout: the replies (the test reads
them back). With the garbage collector off, measures how many heap bytes the Server
allocates per 1 KB frame, read through StreamTransport byte by byte: a per-byte allocation
would show up as thousands of bytes per frame.
"""

import gc
import sys

from hubi_core import link

n_frames = int(sys.argv[1])
gc.collect()
t = link.StreamTransport(sys.stdin.buffer, sys.stdout.buffer)
srv = link.Server(t)
gc.collect()
gc.disable()
before = gc.mem_alloc()
handled = 0
while handled < n_frames:
    if srv.serve_once(1000):
        handled += 1
after = gc.mem_alloc()
gc.enable()
print("alloc-per-frame %d" % ((after - before) // n_frames), file=sys.stderr)
