"""A supervision pass that fails in a way nobody foresaw does not end `hubi consortium up`:
Supervisor.run used to let the exception out, and `up` then stopped every bank and etcd member
that was running fine. The pass is logged (the same failure at most once a minute) and the
next pass runs."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from hubi.consortium.supervisor import Supervisor


def test_a_failing_pass_is_logged_and_the_next_one_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sup = Supervisor(tmp_path, banks=1)
    passes: list[int] = []
    ran_on = threading.Event()

    def one_pass() -> list[str]:
        passes.append(len(passes))
        if len(passes) <= 3:
            raise KeyError("bank BKZ")  # three failures alike: one log line
        ran_on.set()
        return []

    sup.supervise_once = one_pass  # type: ignore[method-assign]
    caplog.set_level(logging.ERROR, logger="hubi")
    t = threading.Thread(target=sup.run, kwargs={"poll": 0.01}, daemon=True)
    t.start()
    try:
        assert ran_on.wait(30), "no pass ran after the failing ones"
        assert t.is_alive()
    finally:
        sup._stop.set()
        t.join(10)
    assert not t.is_alive()
    told = [r for r in caplog.records if "supervision pass failed" in r.getMessage()]
    assert len(told) == 1 and "KeyError: 'bank BKZ'" in told[0].getMessage()
    assert told[0].exc_info is not None  # with its traceback, for whoever reads the log
