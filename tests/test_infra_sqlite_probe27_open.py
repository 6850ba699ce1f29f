"""Processes opening one new SQLite database at the same moment (the demo's two bank nodes on
one embedded orderer log): SQLite answers the switch to WAL "database is locked" at once,
without its busy wait, and `make demo` failed one run in four in step 2. connect_wal now tries
the switch again until its timeout."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest

from hubi.infra.sqlite import connect_wal

pytestmark = pytest.mark.xdist_group("test_infra_sqlite_probe27_open")

PROCS, ROUNDS = 6, 20


def _open(args: tuple[str, float]) -> str:
    path, start = args
    while time.time() < start:  # all at once
        pass
    try:
        c = connect_wal(path, timeout=10)
        c.execute("CREATE TABLE IF NOT EXISTS t (x)")
        mode = c.execute("PRAGMA journal_mode").fetchone()[0]
        c.close()
        return "" if mode == "wal" else f"journal mode {mode}"
    except Exception as exc:  # noqa: BLE001 - reported by the test
        return repr(exc)


def test_processes_opening_a_new_database_together_all_get_it(tmp_path: Path) -> None:
    errors: list[str] = []
    with mp.get_context("fork").Pool(PROCS) as pool:
        for r in range(ROUNDS):
            path = str(tmp_path / f"{r}.db")
            start = time.time() + 0.1
            errors += [e for e in pool.map(_open, [(path, start)] * PROCS) if e]
    assert not errors, f"{len(errors)} of {PROCS * ROUNDS} opens failed: {errors[:3]}"
