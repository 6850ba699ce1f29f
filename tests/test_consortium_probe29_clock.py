"""A consortium bank node whose wall clock steps or is skewed, on real processes.

Four real bank node processes over a real etcd member; BKC runs under libfaketime (preloaded,
its wall clock read from a file on each call, monotonic time left real) and its clock is
skewed, then stepped back an hour, back two days, forward a day and put right, while interbank
notes settle through it (as payer's bank, payee's bank, submitter, third bank).

Held: no wait or retry in the consortium runs on the wall clock. Every bank applies every
event with the same verdict (the log hashes never differ), BKC keeps marking its applied
revision and the log keeps forgetting, no peer is marked stalled, and a refused note is refused
at once (no endorse timeout waited for). Within the signed request window (5 min) a skewed
clock changes nothing; outside it BKC is cut off from validation both ways (its peers refuse
its requests as ``stale-timestamp``, it refuses theirs), and notes it is party to fail with 503
naming the clock, until it is put right: then they settle at once.

Found: nothing but each refused note said so. The node's ``/health`` read "ok", and ``hubi
consortium status`` "healthy", while BKC could settle nothing. The peer transport now notes the
peers that refuse a bank's signed requests as stale, and ``/health`` names them under
``consortium.clock`` with whose clock is off (BKC's own, when most of its peers refuse it).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libfaketime
import pytest

from hubi.bank import auth
from hubi.bank.auth import bank_signer
from hubi.consortium import supervisor
from tests.consortium_support import Consortium
from tests.servers import etcd_single  # noqa: F401

pytestmark = pytest.mark.xdist_group("test_consortium_probe29_clock")

FAKETIME_SO = os.path.join(
    os.path.dirname(libfaketime.__file__), "vendor/libfaketime/src/libfaketime.so.1"
)
SKEWED = "BKC"


@dataclass(repr=False)
class ClockSigner(auth.Signer):
    """A caller whose own clock is `offset` seconds off the real one."""

    offset: int = 0

    def headers(self, *args: Any, now: float | None = None, **kw: Any) -> dict[str, str]:  # type: ignore[override]
        return super().headers(*args, now=time.time() + self.offset if now is None else now, **kw)


class Clock:
    """BKC's wall clock: an offset from the real one, in a file libfaketime rereads."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.set(0)

    def set(self, offset: int) -> None:
        self.offset = offset
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{offset:+d}\n")
        os.replace(tmp, self.path)  # never a half-written file under the node

    def env(self) -> dict[str, str]:
        return {
            "LD_PRELOAD": FAKETIME_SO,
            "DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_TIMESTAMP_FILE": str(self.path),
        }


class SkewedConsortium(Consortium):
    """The consortium with BKC's node under libfaketime; GETs to BKC signed at its time."""

    def __init__(self, root: Path, urls: list[str], clock: Clock, **kw: Any):
        super().__init__(root, urls, **kw)
        self.clock = clock

    def start(self) -> SkewedConsortium:
        saved = {k: os.environ.get(k) for k in self.clock.env()}
        try:
            for b, n in self.nodes.items():
                if b == SKEWED:
                    os.environ.update(self.clock.env())
                n.spawn()
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            for n in self.nodes.values():
                n.wait_ready()
        except BaseException:
            for n in self.nodes.values():
                n.kill9()
            raise
        return self

    def signer(self, bank: str) -> auth.Signer:
        s = bank_signer(self.home, bank)
        if bank != SKEWED:
            return s
        return ClockSigner(s.identity, s.private, s.template, self.clock.offset)


def _health(c: Consortium, bank: str) -> dict[str, Any]:
    r = c.http.get(c.url(bank) + "/health")
    assert r.status_code == 200, r.text
    return r.json()["detail"]["consortium"]


# (submitting bank, payer, payee): BKC as payer's bank, as submitter and payee's bank, as
# submitter of a note between two other banks, and a note it may only be asked about
NOTES = [
    ("BKA", "BKC-000001", "BKA-000001"),
    ("BKC", "BKA-000001", "BKC-000001"),
    ("BKC", "BKB-000001", "BKD-000001"),
    ("BKD", "BKB-000002", "BKD-000002"),
]
HOUR, DAY = 3600, 86400


def test_a_bank_whose_clock_steps_agrees_and_says_its_clock_is_off(
    etcd_single,  # noqa: F811
    tmp_path: Path,
) -> None:
    clock = Clock(tmp_path / "faketime")
    clock.set(200)  # skewed, within the signed request window
    c = SkewedConsortium(tmp_path / "c", etcd_single.client_urls, clock, prune_interval=0.2)
    c.start()
    try:
        acc = c.accounts
        head = 0
        forgot = 0
        # skewed; back an hour; back two days; forward a day; right; skewed the other way
        for off in [200, 200 - HOUR, 200 - HOUR - 2 * DAY, 200 - HOUR - DAY, 0, -200]:
            clock.set(off)
            within = abs(off) <= 300
            for submit, payer, payee in NOTES:
                t0 = time.monotonic()
                r = c.upload(submit, acc[payer].note(payee, 5))
                took = time.monotonic() - t0
                # a refusal comes at once: no wait for the endorse timeout (5 s)
                assert took < 3.0, (off, submit, payer, payee, took, r.text[:300])
                involved = SKEWED in (submit, payer[:3])
                if within or not involved:
                    assert r.status_code == 200, (off, submit, payer, payee, r.text[:400])
                    assert r.json()["status"] == "settled", r.text[:400]
                else:
                    assert r.status_code == 503, (off, submit, payer, payee, r.text[:400])
                    assert "stale-timestamp" in r.text, r.text[:400]
            # the log hashes agree (wait_caught_up asserts it) whatever BKC's clock
            head = c.wait_caught_up(timeout=20, at_least=head + 1)
            st = {b: c.status(b) for b in c.banks}
            assert not any(p["stalled"] for s in st.values() for p in s["peers"].values()), st
            # BKC marks its applied revision and the log forgets what all four applied
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                pruning = c.status("BKA")["pruning"]
                if pruning["through"] >= head and c.status(SKEWED)["pruning"]["marked"] >= head:
                    break
                time.sleep(0.1)
            assert pruning["through"] >= head > forgot, (off, pruning, head)
            forgot = pruning["through"]

            own, other = _health(c, SKEWED), _health(c, "BKA")
            statuses = {b: c.http.get(c.url(b) + "/health").json()["status"] for b in c.nodes}
            # an operator's `status` (this computer's clock is right) asks the node signed
            asked = supervisor._consortium_status(c.url(SKEWED), c.home, SKEWED)
            if within:
                assert "clock" not in own, own
                assert "clock" not in other, other
                assert set(statuses.values()) == {"ok"}, statuses
                assert asked is not None and "refused" not in asked, asked
                continue
            # BKC's node says degraded (the others ok), and refuses `status`, which says so
            assert statuses == {b: "degraded" if b == SKEWED else "ok" for b in c.nodes}, statuses
            assert asked is not None and "stale-timestamp" in asked["refused"], asked
            # BKC's health says its clock is off, naming the peers that refuse it and how far
            assert own["clock"]["this_bank_off"] is True, own
            refused = own["clock"]["refused_by"]
            assert {"BKA", "BKB"} <= set(refused), own
            way = "behind" if off < 0 else "ahead"
            assert all(way in v["said"] for v in refused.values()), own
            assert own["clock"]["verdict"].startswith("this bank's clock is off"), own
            # BKA's health names BKC's clock as the one off, not its own
            assert other["clock"]["this_bank_off"] is False, other
            assert set(other["clock"]["refused_by"]) == {SKEWED}, other
            assert other["clock"]["verdict"].startswith("the clock of BKC is off"), other
    finally:
        c.close()
