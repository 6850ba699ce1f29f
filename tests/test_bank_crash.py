"""Crash safety at the storage level: a real booking process is killed with SIGKILL at seeded
moments while it books a stream of notes; after each kill the database is audited, every note the
process reported booked is booked exactly once, and a new process carries on (repeating some
notes, which must replay). SQLite and a real PostgreSQL server."""

from __future__ import annotations

import hashlib
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from hubi.bank import audit
from hubi.bank import records as rec
from hubi_core import codec
from tests.test_bank_support import make_bank, make_url, postgres_server  # noqa: F401
from tests.world import make_world

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("bank-crash")]

ROOT = Path(__file__).resolve().parents[1]
ACCOUNTS = [f"BKA-k{i}" for i in range(5)]
KILLS = 12
SEED = 20240917


def _spawn(
    url: str, notes_file: Path, start: int, stop: int, batch: int
) -> tuple[subprocess.Popen, queue.Queue]:
    code = (
        "import sys; sys.path.insert(0, %r); from tests.test_bank_crash_child import child; child()"
        % str(ROOT)
    )
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT / "host"), str(ROOT / "shared"), str(ROOT)]),
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code, url, str(notes_file), str(start), str(stop), str(batch)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
        text=True,
    )
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return p, lines


def _wait_ready(p: subprocess.Popen, lines: queue.Queue) -> None:
    line = lines.get(timeout=60)
    if line != "READY":
        p.kill()
        raise AssertionError(f"child did not start: {line!r} {p.stderr.read() if p.stderr else ''}")


def _drain(lines: queue.Queue, acked: set[int]) -> bool:
    """Every line of a child that has exited (killed or not), through the end of its output:
    the reader thread may still be behind (a loaded machine), so wait for its end marker."""
    done = False
    while True:
        try:
            line = lines.get(timeout=60)
        except queue.Empty:
            raise AssertionError("the child's output did not end within 60 s") from None
        if line is None:
            return done
        if line.startswith("OK "):
            acked.add(int(line[3:]))
        elif line == "DONE":
            done = True


MEMO = audit.AuditMemo()  # what verified before need not be verified again after the next kill


def _check(url: str, notes: list[bytes], acked: set[int], trust: object, keys: rec.BookKeys) -> int:
    """Audit clean; every acknowledged note booked exactly once (one debit, one credit)."""
    report = audit.audit(url, trust=trust, keys=keys, memo=MEMO)  # type: ignore[arg-type]
    assert report.ok, [f.as_dict() for f in report.findings][:5]
    eng_store = __import__("hubi.bank.store", fromlist=["open_store"]).open_store(
        url, migrate=False
    )
    seen: Counter = Counter()
    for (body,) in eng_store.reader().all("SELECT body FROM records"):
        r = rec.Record.parse(bytes(body))
        seen[(r.kind, hashlib.sha256(r.evidence).digest())] += 1
    eng_store.close()
    for i in acked:
        d = hashlib.sha256(notes[i]).digest()
        assert seen[(rec.DEBIT, d)] == 1 and seen[(rec.CREDIT, d)] == 1, f"note {i}"
    assert all(v == 1 for v in seen.values())
    return sum(1 for (kind, _), _v in seen.items() if kind == rec.DEBIT)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_sigkill_mid_booking(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    w = make_world()
    url = make_url(kind, tmp_path, request)
    eng = make_bank(url, w, accounts=tuple(ACCOUNTS), fund=1_000_000)
    keys = eng.keys
    eng.close()
    rng = random.Random(SEED + (kind == "postgresql"))
    notes = []
    for i in range(2000):
        a, b = rng.sample(ACCOUNTS, 2)
        notes.append(
            codec.encode(w.note(a, b, rng.randint(1, 500), serial=10 + i, purpose=f"n{i}"))
        )
    notes_file = tmp_path / "notes.bin"
    notes_file.write_bytes(b"".join(len(n).to_bytes(2, "big") + n for n in notes))
    acked: set[int] = set()
    start = 0
    kills = 0
    while kills < KILLS:
        batch = rng.choice([1, 1, 4, 16])  # single bookings and group commits
        p, lines = _spawn(url, notes_file, start, len(notes), batch)
        _wait_ready(p, lines)
        time.sleep(rng.uniform(0.01, 0.2))  # the seeded kill point
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
        assert p.returncode == -signal.SIGKILL
        done = _drain(lines, acked)
        assert not done, "the stream ended before the kill: make it longer"
        kills += 1
        _check(url, notes, acked, w.trust, keys)
        # carry on a little before the last acknowledged note, so some notes are sent twice
        start = max(0, (max(acked) + 1 if acked else 0) - rng.randint(0, 6))
    # a last process carries on to a little past the last acknowledged note, and ends normally
    stop = min(len(notes), max(acked) + 40)
    p, lines = _spawn(url, notes_file, start, stop, 8)
    _wait_ready(p, lines)
    assert p.wait(timeout=300) == 0, p.stderr.read() if p.stderr else ""
    assert _drain(lines, acked)
    assert set(range(stop)) <= acked | set(range(start, stop))
    debits = _check(url, notes, set(range(stop)), w.trust, keys)
    assert debits == stop + len(ACCOUNTS)  # every note once, plus the funding notes
