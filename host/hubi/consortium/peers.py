"""Which peer banks are answering validation requests, so that a hung one costs little.

A bank node whose process has stopped (a stalled VM, a debugger, SIGSTOP) still has a kernel
that accepts connections: requests to it do not fail, they wait for the whole endorsement
timeout, each holding a peer thread of the asking node. Notes that picked it as a third bank
wait for the hedge, and notes whose payer it serves wait for the timeout.

:class:`PeerHealth` tracks the requests open to each peer. A peer becomes *stalled* when a
request has been open for more than ``stall_after`` seconds with nothing back from the peer
since it was sent, and stays stalled until the peer replies again. While it is stalled only one
request at a time goes to it, the probe: while the probe is open, the peer is asked last among
the third banks, and notes that need it count it as not answering at once
(``ConsortiumNode.collect``) instead of waiting for it. When the probe times out, the next note
that would ask the peer sends the next probe.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = ["DEFAULT_STALL_AFTER", "PeerHealth", "PeerThreads"]

T = TypeVar("T")

DEFAULT_STALL_AFTER = 1.0  # s without a reply to a request sent that long ago


class _Peer:
    __slots__ = ("open", "last_reply", "stalled", "sent", "skipped", "stalls")

    def __init__(self) -> None:
        self.open: dict[int, float] = {}  # request token -> when it was sent (monotonic)
        self.last_reply = float("-inf")
        self.stalled = False
        self.sent = 0
        self.skipped = 0  # notes for which it was not asked because it was stalled
        self.stalls = 0  # times it went from answering to stalled


class PeerHealth:
    """Open validation requests per peer bank and whether each peer answers (thread-safe)."""

    def __init__(
        self, stall_after: float = DEFAULT_STALL_AFTER, clock: Callable[[], float] = time.monotonic
    ):
        if stall_after <= 0:
            raise ValueError(f"stall_after must be positive, got {stall_after}")
        self.stall_after = stall_after
        self.clock = clock
        self._peers: dict[str, _Peer] = {}
        self._lock = threading.Lock()
        self._tokens = 0

    def _peer(self, bank: str, now: float) -> _Peer:
        """The peer's record, its stalled flag brought up to date (lock held)."""
        p = self._peers.get(bank)
        if p is None:
            p = self._peers[bank] = _Peer()
        if not p.stalled and p.open:
            oldest = min(p.open.values())
            if now - oldest > self.stall_after and p.last_reply < oldest:
                p.stalled = True
                p.stalls += 1
        return p

    def try_send(self, bank: str) -> int | None:
        """A token for a request to ``bank`` that goes out now (give it back to :meth:`done`),
        or None when the peer is stalled and its probe is still open: do not ask it."""
        with self._lock:
            now = self.clock()
            p = self._peer(bank, now)
            if p.stalled and p.open:
                p.skipped += 1
                return None
            self._tokens += 1
            p.open[self._tokens] = now
            p.sent += 1
            return self._tokens

    def done(self, bank: str, token: int, *, replied: bool) -> None:
        """The request ended: ``replied`` if the peer sent anything back (an endorsement, a
        refusal, an HTTP error), not if it timed out or could not be reached."""
        with self._lock:
            now = self.clock()
            p = self._peer(bank, now)
            p.open.pop(token, None)
            if replied:
                p.last_reply = now
                p.stalled = False

    def why_not(self, bank: str) -> str:
        """Why ``bank`` was not asked (after :meth:`try_send` said no), for the note's record."""
        with self._lock:
            now = self.clock()
            p = self._peer(bank, now)
            since = "" if p.last_reply == float("-inf") else f" since {now - p.last_reply:.1f} s"
            return f"not asked: stalled (no reply{since}; {len(p.open)} ask(s) still open)"

    def answering_first(self, banks: Iterable[str]) -> list[str]:
        """``banks`` with the stalled ones whose probe is open moved to the end (the order is
        otherwise kept: a stalled peer with no probe open keeps its turn, to be probed)."""
        banks = list(banks)
        with self._lock:
            now = self.clock()
            late = {b for b in banks if (p := self._peer(b, now)).stalled and p.open}
        return [b for b in banks if b not in late] + [b for b in banks if b in late]

    def status(self) -> dict[str, dict[str, object]]:
        """Per peer: requests open and sent, stalled or not, how often, notes it was skipped for."""
        with self._lock:
            now = self.clock()
            return {
                b: {
                    "open": len(p.open),
                    "sent": p.sent,
                    "stalled": self._peer(b, now).stalled,
                    "stalls": p.stalls,
                    "skipped": p.skipped,
                }
                for b, p in sorted(self._peers.items())
            }


class PeerThreads:
    """A small pool of threads per peer bank, so that requests to a peer that does not answer
    wait behind each other and never in front of requests to the others. Threads start when
    needed; :meth:`shutdown` cancels what has not started, and later submits raise
    RuntimeError, as a shut-down executor's do."""

    def __init__(self, owner: str, per_peer: int = 8):
        self.owner = owner
        self.per_peer = per_peer
        self._pools: dict[str, cf.ThreadPoolExecutor] = {}
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, bank: str, fn: Callable[..., T], *args: Any) -> cf.Future[T]:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the peer threads of {self.owner} are shut down")
            pool = self._pools.get(bank)
            if pool is None:
                pool = self._pools[bank] = cf.ThreadPoolExecutor(
                    max_workers=self.per_peer, thread_name_prefix=f"hubi-{self.owner}-to-{bank}"
                )
        return pool.submit(fn, *args)

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
