"""Storage for the simulator with kill points (the power-cut tests).

``FaultyStorage(root, kill_at=N)`` counts every mutating step (each written chunk, sync,
rename, remove; see hal.storage). At step N it reports ``HUBI-KILLPOINT N op name`` on stderr
and stops dead; if step N is a chunk write, half of that chunk reaches the file first (a torn
write). The test harness then SIGKILLs the process, as a power cut would stop a board. With
kill_at=0 it only counts (``ops``), so a dry run tells the harness how many steps a scenario
has.
"""

import sys
import time

from hal.storage import TEAR, FsStorage


class FaultyStorage(FsStorage):
    def __init__(self, root, kill_at=0, trace=False):
        FsStorage.__init__(self, root, self._step)
        self.kill_at = kill_at
        self.trace = trace
        self.ops = 0

    def _step(self, op, name):
        if op == "torn":
            self.halt()
        self.ops += 1
        if self.trace:
            sys.stderr.write("HUBI-OP %d %s %s\n" % (self.ops, op, name))
        if self.kill_at and self.ops == self.kill_at:
            sys.stderr.write("HUBI-KILLPOINT %d %s %s\n" % (self.ops, op, name))
            if op == "write":
                return TEAR
            self.halt()
        return None

    def halt(self):
        try:
            sys.stderr.flush()
        except AttributeError:
            pass
        while True:  # wait for SIGKILL
            time.sleep_ms(1000)
