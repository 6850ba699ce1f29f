"""EmbeddedConsortium opens each bank's engine, orderer connection and consortium state in turn.
When a later bank failed to open (its database damaged), the banks opened before it were left
open: their SQLite files stayed open in the process (file descriptors, and the embedded
orderer's log) until the garbage collector found them, and the error did not say which bank
failed. Now what was opened is closed, and the error names the bank.

Real files, real SQLite: the test looks at the process's own open file descriptors."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

import pytest

from hubi.consortium.errors import ConsortiumError
from hubi.consortium.service import EmbeddedConsortium
from tests.consortium_support import BANKS4, load_trust, make_home


def _open_under(root: Path, but: Path | None = None) -> list[str]:
    """The files under `root` that this process holds open (but `but`, even deleted)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own fd)
            continue
        if but is not None and target.startswith(str(but.resolve())):
            continue
        if target.startswith(str(root.resolve()) + os.sep):
            out.append(target)
    return sorted(out)


@pytest.mark.parametrize("bad", ["bank.db", "consortium.db"])
def test_a_bank_that_fails_to_open_closes_the_banks_opened_before_and_is_named(
    tmp_path: Path, bad: str
) -> None:
    home = tmp_path / "home"
    make_home(home, BANKS4)
    last = BANKS4[-1]
    broken = home / "banks" / last / bad
    broken.unlink(missing_ok=True)
    broken.write_bytes(b"this is not a SQLite database, it is some other file " * 100)
    assert _open_under(home) == []
    with pytest.raises(ConsortiumError) as info:
        EmbeddedConsortium(home, prune_interval=None, trust=load_trust(home))
    # the exception (and its traceback) is still held here, as a caller's handler holds it;
    # the broken file is closed too (hubi.infra.sqlite.connect_wal closes a connection whose
    # first PRAGMA fails instead of leaving it to the garbage collector)
    assert _open_under(home) == [], str(info.value)
    assert f"bank {last}" in str(info.value), str(info.value)
    # and the same home opens once the file is put right (nothing left half-open or locked)
    broken.unlink()
    if bad == "bank.db":  # the books are gone: the other banks open, this one cannot be made
        return
    with EmbeddedConsortium(home, prune_interval=None, trust=load_trust(home)) as ec:
        assert set(ec.nodes) == set(BANKS4)
    assert _open_under(home, but=broken) == []


def test_a_bank_that_fails_to_start_stops_the_banks_started_before_and_is_named(
    tmp_path: Path,
) -> None:
    """`with EmbeddedConsortium(...)`: the nodes start in turn when the block is entered. A
    later one that failed (a damaged debit result kept in its state: a bare ValueError) left
    the earlier ones running their loops, with their databases open, and `with` does not call
    __exit__ when __enter__ fails."""
    home = tmp_path / "home"
    make_home(home, BANKS4)
    last = BANKS4[-1]
    EmbeddedConsortium(home, prune_interval=None, trust=load_trust(home)).close()
    nid = "ab" * 32
    with contextlib.closing(sqlite3.connect(home / "banks" / last / "consortium.db")) as db:
        db.execute(
            "INSERT INTO entries (note_id, revision, digest, payer, payee, amount, serial,"
            " submitter, endorsers, state, local, note, time)"
            " VALUES (?, 1, x'00', ?, 'BKA-000001', 5, 1, ?, '[]', 'ordered', ?, x'00', 0)",
            (bytes.fromhex(nid), f"{last}-000001", last, '{"result": "zz"}'),
        )
        db.commit()
    assert _open_under(home) == []
    with (
        pytest.raises(ConsortiumError) as info,
        EmbeddedConsortium(home, prune_interval=None, trust=load_trust(home)),
    ):
        raise AssertionError("started with a damaged state")
    assert _open_under(home) == [], str(info.value)
    assert f"bank {last}" in str(info.value) and nid in str(info.value), str(info.value)
    assert "not hex" in str(info.value)
