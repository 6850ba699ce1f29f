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
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = ["DEFAULT_STALL_AFTER", "NoThread", "PeerHealth", "PeerThreads"]

T = TypeVar("T")

log = logging.getLogger("hubi.consortium.peers")

DEFAULT_STALL_AFTER = 1.0  # s without a reply to a request sent that long ago


class NoThread(RuntimeError):
    """A job's future fails so when no thread could be started to run it (nothing was sent)."""


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


class _DaemonPool:
    """What :class:`PeerThreads` needs of a ThreadPoolExecutor (submit, shutdown), on daemon
    threads: concurrent.futures joins its threads when the interpreter exits, so a peer that
    accepts a request and never answers held the process up until the request timed out."""

    def __init__(self, max_workers: int, name: str):
        self.max_workers = max_workers
        self.name = name
        self._jobs: queue.SimpleQueue[
            tuple[cf.Future[Any], Callable[..., Any], tuple[Any, ...]] | None
        ]
        self._jobs = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for a job
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., T], *args: Any) -> cf.Future[T]:
        fut: cf.Future[T] = cf.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name}: shut down")
            if self._idle == 0 and len(self._threads) < self.max_workers:
                if not self._start_worker() and not self._threads:
                    # no thread at all would ever take the job: it fails now, not never
                    fut.set_exception(
                        NoThread(f"{self.name}: cannot start a thread to run the job")
                    )
                    return fut
            else:
                self._idle = max(0, self._idle - 1)  # that thread will take this job
            self._jobs.put((fut, fn, args))
        return fut

    def _start_worker(self) -> bool:
        """Start one more worker (lock held); False if the system would not start it (too many
        threads): it is not counted, so the next submit tries again (a worker counted but never
        started left the pool short, or with no worker at all and jobs waiting for ever)."""
        t = threading.Thread(
            target=self._work, name=f"{self.name}_{len(self._threads)}", daemon=True
        )
        try:
            t.start()
        except RuntimeError as exc:  # can't start new thread
            log.warning(
                "%s: cannot start a thread (%s); %d running", self.name, exc, len(self._threads)
            )
            return False
        self._threads.append(t)
        return True

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fut, fn, args = job
            del job
            if fut.set_running_or_notify_cancel():  # else cancelled while queued
                try:
                    result = fn(*args)
                except BaseException as exc:
                    fut.set_exception(exc)
                else:
                    fut.set_result(result)
            del fut, fn, args
            with self._lock:
                self._idle += 1

    def shutdown(self) -> None:
        """Cancel the jobs not started and let the threads go (those under way end when their
        request does: closing the transport ends them at once)."""
        queued = []
        with self._lock:
            self._closed = True
            while True:  # no more submits: what is queued now is all there will be
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    queued.append(job[0])
            for _ in self._threads:  # each thread ends when it next looks for a job
                self._jobs.put(None)
        for fut in queued:  # outside the lock: the futures' callbacks run here
            fut.cancel()


class PeerThreads:
    """A small pool of threads per peer bank, so that requests to a peer that does not answer
    wait behind each other and never in front of requests to the others. Threads start when
    needed and are daemon threads (a hung peer does not hold up the process's exit);
    :meth:`shutdown` cancels what has not started, and later submits raise RuntimeError, as a
    shut-down executor's do."""

    def __init__(self, owner: str, per_peer: int = 8):
        self.owner = owner
        self.per_peer = per_peer
        self._pools: dict[str, _DaemonPool] = {}
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, bank: str, fn: Callable[..., T], *args: Any) -> cf.Future[T]:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the peer threads of {self.owner} are shut down")
            pool = self._pools.get(bank)
            if pool is None:
                pool = self._pools[bank] = _DaemonPool(
                    self.per_peer, f"hubi-{self.owner}-to-{bank}"
                )
        return pool.submit(fn, *args)

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            pools, self._pools = dict(self._pools), {}
        for pool in pools.values():
            pool.shutdown()
