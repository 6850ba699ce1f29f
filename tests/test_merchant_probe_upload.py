"""Two `hubi merchant upload` runs at once on one home, against a real bank node process.

The first upload is caught mid-exchange by a stalled node (SIGSTOP); a second one started then
must not send the same notes again: it says another upload is running and leaves the notes to
the first, which books each once when the node goes on.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from pathlib import Path

from tests.bank_nodes import nodes  # noqa: F401  (fixture)
from tests.test_merchant_support import HUBI, ROOT, env, hubi_json, make_shop
from tests.test_merchant_upload import PAYER, pay, prepare


def _locked(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_second_upload_at_once_sends_nothing_and_says_why(tmp_path: Path, nodes) -> None:  # noqa: F811
    shop = make_shop(tmp_path)
    payers = prepare(shop)
    node = nodes(shop.bank_home, "BKB").start()
    n = 4
    with shop.merchant() as m:
        for i in range(n):
            pay(m, payers[PAYER], 100 + i)
    home = str(shop.home)
    node.pause()  # the first upload's POST hangs until the node goes on
    first = subprocess.Popen(
        [*HUBI, "merchant", "--home", home, "upload", "--bank", node.url, "--json"]
        + ["--timeout", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        cwd=ROOT,
    )
    try:
        lock = shop.home / "upload.lock"
        deadline = time.monotonic() + 60
        while not (lock.exists() and _locked(lock)) and time.monotonic() < deadline:
            assert first.poll() is None, first.communicate()
            time.sleep(0.05)
        # stalled in its first exchange (or, before the lock existed, never locking anything)
        time.sleep(0.5)
        code, out = hubi_json(
            "merchant", "--home", home, "upload", "--bank", node.url, "--retries", "0",
            "--timeout", "2",
        )  # fmt: skip
        assert code == 1, out
        assert out["ok"] is False and "another upload" in out.get("message", ""), out
        with shop.merchant() as m:
            assert all(r.attempts == 0 and r.last_error is None for r in m.notes())
    finally:
        node.resume()
    stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stdout + stderr
    report = json.loads(stdout)
    assert report["counts"]["booked"] == n
    assert not any(it["duplicate"] for it in report["items"])  # nobody sent them before
    with shop.merchant() as m:
        assert m.outbox.counts()["booked"] == n and len(m.book()) == n and m.audit_book() == []
    # the lock died with the first upload: the next one runs (nothing is left to send)
    code, again = hubi_json("merchant", "--home", home, "upload", "--bank", node.url)
    assert code == 0 and again["items"] == [], again
