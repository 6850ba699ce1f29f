"""The process's deadline heap kept an entry for every exchange until its time came, long
after the exchange was done: 100,000 client calls within a deadline's 300 s left 100,000."""

from __future__ import annotations

import threading

import pytest

from hubi.infra.deadlines import Deadlines

pytestmark = pytest.mark.xdist_group("test_infra_probe28_deadlines")


def test_done_deadlines_do_not_pile_up() -> None:
    d = Deadlines()
    for _ in range(20_000):
        d.done(d.watch(300.0, lambda: None))
    assert len(d._heap) <= 200, len(d._heap)


def test_a_live_deadline_still_fires_after_the_heap_is_trimmed() -> None:
    d = Deadlines()
    fired = threading.Event()
    token = d.watch(0.3, fired.set)
    for _ in range(5_000):  # trims the heap many times over while `token` is live
        d.done(d.watch(300.0, lambda: None))
    assert fired.wait(5.0)
    assert d.done(token) is True
