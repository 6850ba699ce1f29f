"""A peer pool whose thread would not start (round 26): the system refused the thread (too many
threads: RuntimeError "can't start new thread") but the pool counted it, so it believed it had a
worker it never got. With one worker allowed, no thread ever ran and every job waited for ever.
Now a thread that did not start is not counted: a job the pool has no thread for fails at once
naming the pool, and the next submit starts a thread and runs. A job that raises fails its own
future and the worker runs the next one.

The refusal is real: a huge thread stack size makes pthread_create fail, in a child interpreter
(the stack size is the whole process's)."""

from __future__ import annotations

import subprocess
import sys

from hubi.consortium.peers import PeerThreads

SCRIPT = r"""
import concurrent.futures as cf
import threading
from hubi.consortium.peers import PeerThreads

pool = PeerThreads("BKA", per_peer=1)
threading.stack_size(1 << 46)  # no thread can get such a stack: start() raises
try:
    first = pool.submit("BKB", lambda: "first")
except RuntimeError as exc:  # the thread's own error, not the pool's: taken as "shut down"
    first = None
    print("first: submit raised", exc)
threading.stack_size(0)
try:
    if first is not None:
        print("first:", first.result(timeout=5))
except cf.TimeoutError:
    print("first: still waiting")
except RuntimeError as exc:
    print("first failed:", exc)
second = pool.submit("BKB", lambda: "second")
try:
    print("second:", second.result(timeout=20))
except cf.TimeoutError:
    print("second: still waiting")
pool.shutdown()
"""


def test_a_thread_that_does_not_start_is_not_counted() -> None:
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    # the job with no thread to run it fails clearly, at once, naming the pool
    assert lines[0].startswith("first failed: hubi-BKA-to-BKB: cannot start a thread"), r.stdout
    # the failed thread left no phantom worker: the next job gets a thread and runs
    assert lines[1] == "second: second", r.stdout


def test_a_job_that_raises_fails_its_future_and_the_worker_goes_on() -> None:
    pool = PeerThreads("BKA", per_peer=1)
    try:

        def boom() -> None:
            raise ValueError("bad answer")

        bad = pool.submit("BKB", boom)
        good = pool.submit("BKB", lambda: 42)
        err = bad.exception(timeout=60)
        assert isinstance(err, ValueError) and str(err) == "bad answer"
        assert good.result(timeout=60) == 42
        assert pool.submit("BKB", lambda: "again").result(timeout=60) == "again"
    finally:
        pool.shutdown()


def test_a_job_never_sent_does_not_count_as_the_peers_reply() -> None:
    # a peer taken for stalled stays so when the pool had no thread to ask it: nothing went out,
    # so nothing came back (a plain RuntimeError counted as a reply and cleared the mark)
    import concurrent.futures as cf

    from hubi.consortium.node import _replied
    from hubi.consortium.peers import NoThread, PeerHealth

    now = [0.0]
    health = PeerHealth(stall_after=1.0, clock=lambda: now[0])
    first = health.try_send("BKB")
    now[0] = 5.0
    assert first is not None and health.try_send("BKB") is None  # stalled, its probe open
    health.done("BKB", first, replied=False)
    probe = health.try_send("BKB")
    assert probe is not None
    fut: cf.Future[bytes] = cf.Future()
    fut.set_exception(NoThread("hubi-BKA-to-BKB: cannot start a thread to run the job"))
    health.done("BKB", probe, replied=_replied(fut))
    assert "no reply" in health.why_not("BKB") and " since " not in health.why_not("BKB")
    answered: cf.Future[bytes] = cf.Future()
    answered.set_result(b"endorsement")
    assert _replied(answered)
