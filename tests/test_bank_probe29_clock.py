"""A bank node whose wall clock steps (NTP, an operator, a resumed VM), on a real node process.

The node runs under libfaketime (preloaded, its own wall clock read from a file on each call,
monotonic time left real) and its clock is stepped while it books and answers signed requests.

Held: records and checkpoints booked while the clock steps back and forth carry times that go
backwards, and ``hubi audit verify`` finds nothing (the chain's order is the record numbers);
checkpoint cadence counts register entries, not seconds; a client a few minutes off is refused
with ``stale-timestamp`` naming how far and which way, and accepted once the node's clock is
stepped to its.

Found: the nonce cache dropped (caller, nonce) pairs by the wall clock. A forward step (clock
wrong by 20 min) purged them on the next request, and when the clock was stepped back a
request captured before was accepted again (replayed). A backward step of days left the oldest
pair "unexpired" for days: the cache stopped purging and, once full, refused every signed
request with 429 busy. Pairs are now kept for twice the window of monotonic time. And
/health's uptime was wall time since the start: after a step back of two days it read minus
two days. It is monotonic time now.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import libfaketime
import pytest

from hubi import kmc
from hubi.bank import auth
from hubi.bank.client import BankClient, BankError
from tests import bank_nodes
from tests.bank_nodes import prepare_bank

pytestmark = pytest.mark.xdist_group("test_bank_probe29_clock")

bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes

HUBI = [sys.executable, "-c", "from hubi.cli import main; main()"]
FAKETIME_SO = os.path.join(
    os.path.dirname(libfaketime.__file__), "vendor/libfaketime/src/libfaketime.so.1"
)


class Clock:
    """The node's wall clock: an offset from the real one, in a file libfaketime rereads."""

    def __init__(self, path: Path, monkeypatch: pytest.MonkeyPatch):
        self.path = path
        self.offset = 0
        self.set(0)
        # NodeProcess copies os.environ: the node (and only children started here) is faked
        monkeypatch.setenv("LD_PRELOAD", FAKETIME_SO)
        monkeypatch.setenv("DONT_FAKE_MONOTONIC", "1")
        monkeypatch.setenv("FAKETIME_NO_CACHE", "1")
        monkeypatch.setenv("FAKETIME_TIMESTAMP_FILE", str(path))

    def set(self, offset: int) -> None:
        self.offset = offset
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{offset:+d}\n")
        os.replace(tmp, self.path)  # never a half-written file under the node

    def now(self) -> int:
        return int(time.time()) + self.offset


@dataclass(repr=False)
class ClockSigner(auth.Signer):
    """A caller whose own clock is `offset` seconds off the real one."""

    offset: int = 0

    def headers(self, *args, now: float | None = None, **kw) -> dict[str, str]:  # type: ignore[override]
        return super().headers(*args, now=time.time() + self.offset if now is None else now, **kw)


def skewed(signer: auth.Signer, offset: int) -> ClockSigner:
    return ClockSigner(signer.identity, signer.private, signer.template, offset)


def hubi(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # the auditor's real clock
    return subprocess.run([*HUBI, *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture
def clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(tmp_path / "faketime", monkeypatch)


def test_clock_steps_while_booking_leave_an_audit_without_findings(
    bank_world, nodes, tmp_path, clock
) -> None:
    db = str(tmp_path / "bka.db")
    a = list(prepare_bank(bank_world.home, "BKA", db, accounts=2, checkpoint_every=3).values())
    n = nodes(bank_world.home, "BKA", db, name="bka").start()
    up = BankClient(n.url)
    serial = 0
    steps = [0, -2 * 86400, -3600, 3 * 86400, -600, 0]
    uptimes = []
    for offset in steps:
        clock.set(offset)
        uptimes.append(n.health()["uptime"])
        for _ in range(2):
            serial += 1
            note = a[0].note(a[1].id, 10, serial=serial, t=clock.now())
            assert up.upload(note).booked
    # /health's uptime counts real seconds: two days back is not a negative uptime
    assert uptimes[0] >= 0 and uptimes == sorted(uptimes) and uptimes[-1] < 600, uptimes
    bank = BankClient(n.url, skewed(bank_world.bank_signer("BKA"), 0))
    times = [r["record"]["time"] for r in bank.book_all(a[0].id)]
    assert any(b < x for x, b in zip(times, times[1:])), times  # the times did go backwards
    cps = bank.with_signer(skewed(bank_world.bank_signer("BKA"), clock.offset)).checkpoints()
    sizes = [c["tree_size"] for c in cps]
    stamps = [c["time"] for c in cps]
    assert any(b < x for x, b in zip(stamps, stamps[1:])), stamps  # checkpoints' too
    # cadence is by register entries: one checkpoint per 3, whatever the clock did
    assert sizes == sorted(sizes) and all(s % 3 == 0 for s in sizes), cps
    assert len(sizes) >= (len(steps) * 2 * 2) // 3 - 1, cps  # no stall after a backward step
    n.stop()
    res = hubi("audit", "verify", "--db", db, "--home", str(bank_world.home), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["ok"], res.stdout


@pytest.fixture
def node(bank_world, nodes, tmp_path, clock) -> tuple[bank_nodes.NodeProcess, list]:
    db = str(tmp_path / "bka.db")
    a = list(prepare_bank(bank_world.home, "BKA", db, accounts=1).values())
    return nodes(bank_world.home, "BKA", db, name="bka").start(), a


def test_a_skewed_client_is_told_the_skew_and_let_in_once_the_node_agrees(node, clock) -> None:
    n, a = node
    slow = BankClient(n.url, skewed(a[0].signer, -420))  # the customer's clock 7 min behind
    with pytest.raises(BankError) as caught:
        slow.notices(a[0].id)
    err = caught.value
    assert err.status == 401 and err.code == "stale-timestamp", err
    assert "behind the node's clock" in str(err) and "allowed: 300 s" in str(err), err
    fast = BankClient(n.url, skewed(a[0].signer, 420))
    with pytest.raises(BankError) as caught:
        fast.book(a[0].id)
    assert caught.value.code == "stale-timestamp" and "ahead of" in str(caught.value)
    clock.set(-400)  # the node's clock stepped back: the slow client is now within 20 s
    assert slow.notices(a[0].id)[0]["account"] == a[0].id  # its funding
    assert slow.book(a[0].id)["records"]
    with pytest.raises(BankError) as caught:
        fast.book(a[0].id)
    assert caught.value.code == "stale-timestamp"


def test_a_captured_request_stays_refused_after_a_forward_then_back_step(
    bank_world, node, clock
) -> None:
    n, _a = node
    reg = bank_world.regulator
    url = n.url + "/v1/checkpoints"
    captured = reg.headers("BKA", "GET", "/v1/checkpoints")
    assert httpx.get(url, headers=captured, timeout=30).status_code == 200
    assert httpx.get(url, headers=captured, timeout=30).json()["error"] == "replayed-nonce"
    clock.set(1200)  # the node's clock jumps 20 min ahead; a client on its time comes by
    later = skewed(reg, 1200).headers("BKA", "GET", "/v1/checkpoints")
    assert httpx.get(url, headers=later, timeout=30).status_code == 200
    assert httpx.get(url, headers=captured, timeout=30).json()["error"] == "stale-timestamp"
    clock.set(0)  # NTP steps it back: the captured request is inside the window again
    got = httpx.get(url, headers=captured, timeout=30)
    assert got.status_code == 401 and got.json()["error"] == "replayed-nonce", got.text


def test_a_backward_step_of_days_does_not_jam_the_nonce_cache(bank_world) -> None:
    """The node's wall clock is the Authenticator's clock; the cache is full of pairs signed
    before a step back of two days. Once twice the window has passed (monotonic), they go."""
    trust = kmc.load_trust(bank_world.home / "trust")
    wall = [float(int(time.time()))]
    checker = auth.Authenticator("BKA", trust, window=1, clock=lambda: wall[0], max_nonces=2)
    reg = bank_world.regulator
    path = "/v1/checkpoints"

    def send() -> auth.Caller:
        h = reg.headers("BKA", "GET", path, now=wall[0])
        return checker.authenticate("GET", path, "", {k.lower(): v for k, v in h.items()}, b"")

    send()
    send()
    with pytest.raises(auth.AuthError) as caught:
        send()  # full inside the window: refused, as before
    assert caught.value.code == "busy"
    time.sleep(2.1)  # twice the window, of real time
    wall[0] -= 2 * 86400
    assert send().role == auth.Role.REGULATOR
    assert send().role == auth.Role.REGULATOR
