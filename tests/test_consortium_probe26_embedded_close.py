"""EmbeddedConsortium.close() stopped at the first bank whose close raised (round 26): the banks
after it kept their books open (file descriptors on their bank.db, their WAL) and the error
named no bank. Now every bank is closed, then a ConsortiumError names the first that failed.

Real banks on real SQLite files; the one failure is a close that raises on ONE engine object
(the stores' own closes are best effort and never raise, so there is no real way to make one
fail). The test looks at the files the process holds open."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hubi.consortium.errors import ConsortiumError
from hubi.consortium.service import EmbeddedConsortium
from tests.consortium_support import BANKS4, load_trust, make_home


def _open_under(root: Path) -> list[str]:
    """The files under `root` that this process holds open."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own fd)
            continue
        if target.startswith(str(root.resolve()) + os.sep):
            out.append(target)
    return sorted(out)


def test_close_closes_every_bank_past_one_that_fails_and_names_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_home(home, BANKS4)
    ec = EmbeddedConsortium(home, prune_interval=None, trust=load_trust(home)).start()
    for b in BANKS4:  # each bank's books are open (a connection in this thread)
        assert ec.engine(b).account(ec.engine(b).treasury) is not None
    held = _open_under(home)
    for b in BANKS4:
        assert any(f"/banks/{b}/bank.db" in p for p in held), held

    bkb = ec.engine("BKB")
    real_close = bkb.close

    def failing_close() -> None:
        raise OSError(5, "Input/output error")

    bkb.close = failing_close  # type: ignore[method-assign]
    with pytest.raises(ConsortiumError) as info:
        ec.close()
    said = str(info.value)
    assert said.startswith("bank BKB: closing it in the embedded consortium failed"), said
    assert "OSError" in said and "Input/output error" in said, said
    # every other bank is closed: its books, its consortium state, its threads
    left = _open_under(home)
    assert [p for p in left if "/banks/BKB/bank.db" not in p] == [], left
    assert all(not n.started for n in ec.nodes.values())
    real_close()
    assert _open_under(home) == []
    # and the home opens again, every bank in it
    with EmbeddedConsortium(home, prune_interval=None, trust=load_trust(home)) as again:
        assert set(again.nodes) == set(BANKS4)
    assert _open_under(home) == []
