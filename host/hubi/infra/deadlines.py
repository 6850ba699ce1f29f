"""Deadlines for whole exchanges, for clients whose library times out each read only.

A server that sends a byte now and then meets every read's timeout and holds the caller for
ever. One thread for the process runs the action of each deadline that passes (shutting the
exchange's socket down, which wakes the read blocked on it); registering a deadline is a heap
push, not a thread of its own.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable


class Deadlines:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._live: dict[int, Callable[[], None]] = {}
        self._fired: set[int] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, seconds: float, action: Callable[[], None]) -> int:
        """Run `action` in `seconds` unless :meth:`done` comes first; a token for done()."""
        at = time.monotonic() + seconds
        with self._cond:
            token = next(self._ids)
            self._live[token] = action
            first = not self._heap or at < self._heap[0][0]
            heapq.heappush(self._heap, (at, token))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hubi-deadlines")
                self._thread.daemon = True
                self._thread.start()
            elif first:
                self._cond.notify()
        return token

    def done(self, token: int) -> bool:
        """Stop watching; True if the deadline had passed and its action ran."""
        with self._cond:
            self._live.pop(token, None)
            if len(self._heap) > 2 * len(self._live) + 64:
                # an entry stays in the heap until its time comes: with a client's 300 s
                # deadline, every call of the last five minutes, however few still run
                self._heap = [e for e in self._heap if e[1] in self._live]
                heapq.heapify(self._heap)
            if token in self._fired:
                self._fired.discard(token)
                return True
            return False

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, token = heapq.heappop(self._heap)
                    action = self._live.pop(token, None)
                    if action is not None:
                        self._fired.add(token)
                        action()
                self._cond.wait(self._heap[0][0] - now if self._heap else None)


def shut(sock: socket.socket) -> None:
    """Wake any read blocked on ``sock`` (it sees the end of the stream)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # closed already
        pass


DEADLINES = Deadlines()  # the process's one deadline thread
