"""The token's clock when its host's is off, and when the simulator's own clock steps.

The real firmware on the MicroPython unix port (`hubi token sim`'s Simulator) runs under
libfaketime: its wall clock is read from a file on each call and stepped while it runs, as an
RTC that jumped would; monotonic time stays real. Hosts set the token's time over the link.

Held (docs/token.md: the wallet never lets time run backwards): after a note, no host time and
no step of the token's clock makes a later note's time earlier.

A request's expiry is the merchant's own promise: it is checked against the time the host set
in this link session (advanced by the token's own ticks since), and only without one against
the last note's time. It had been that floor, which any host's clock raises: one payment
through a merchant whose clock was a day ahead (`hubi merchant request --port` sets the
token's time) and the token refused every request made on the right clock with a shorter life
(EXPIRED, "now" a day ahead) until that day had passed (tests/test_token_probe29_expiry.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import libfaketime
import pytest

from hubi.token.client import TokenClient
from hubi.token.harness import TokenWorld
from hubi_core import codec
from hubi_core import protocol as P
from hubi_core.errors import ErrorReply

pytestmark = [pytest.mark.micropython, pytest.mark.xdist_group("test_token_probe29_clock")]
PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"
FAKETIME_SO = os.path.join(
    os.path.dirname(libfaketime.__file__), "vendor/libfaketime/src/libfaketime.so.1"
)
DAY = 86400


def note_time(note: bytes) -> int:
    return codec.decode(note, codec.NOTE).time


def expired_request(world: TokenWorld, amount: int, now: int | None = None) -> bytes:
    """A request made two hours before `now` that expired an hour before it (by default by
    the right clock)."""
    p = world.payee(PAYEE)
    now = int(time.time()) if now is None else now
    req = codec.make_request(PAYEE, 900 + amount, now - 7200, p.template, amount, now - 3600, "x")
    codec.sign(req, p.private)
    return codec.encode(req)


def refused(tok: TokenClient, request: bytes) -> ErrorReply:
    with pytest.raises(ErrorReply) as caught:
        tok.pay(request)
    return caught.value


@pytest.fixture
def world(tmp_path: Path) -> TokenWorld:
    return TokenWorld(tmp_path / "w")


def test_a_host_in_the_past_moves_no_note_back(world: TokenWorld) -> None:
    state = world.provisioned(PAYER, "1234")
    with world.running(state) as (sim, tok):
        first = world.pay(sim, tok, world.request(PAYEE, 100), "1234")
        behind = int(time.time()) - 2 * DAY
        tok.set_time(behind)  # a host whose clock is two days behind
        assert tok.info()["state"] == "ready"
        err = refused(tok, expired_request(world, 1, now=behind))
        assert err.code == P.ERR_EXPIRED, err  # expired by that host's own clock
        second = world.pay(sim, tok, world.request(PAYEE, 200), "1234")
        assert note_time(second) >= note_time(first), (note_time(first), note_time(second))


def test_a_host_a_day_ahead_then_one_on_time_moves_no_note_back(world: TokenWorld) -> None:
    state = world.provisioned(PAYER, "1234")
    with world.running(state) as (sim, tok):
        tok.set_time(int(time.time()) + DAY)
        ahead = world.pay(sim, tok, world.request(PAYEE, 100, expiry=2 * DAY), "1234")
        assert note_time(ahead) >= int(time.time()) + DAY - 60
        tok.set_time(int(time.time()))  # a host on the right clock
        later = world.pay(sim, tok, world.request(PAYEE, 200, expiry=2 * DAY), "1234")
        assert note_time(later) >= note_time(ahead), (note_time(ahead), note_time(later))


def test_the_simulators_clock_stepping_back_moves_no_note_back(
    world: TokenWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stamp = tmp_path / "faketime"
    stamp.write_text("+0\n")
    # Simulator copies os.environ: the firmware's process alone gets the stepped clock
    monkeypatch.setenv("LD_PRELOAD", FAKETIME_SO)
    monkeypatch.setenv("DONT_FAKE_MONOTONIC", "1")
    monkeypatch.setenv("FAKETIME_NO_CACHE", "1")
    monkeypatch.setenv("FAKETIME_TIMESTAMP_FILE", str(stamp))
    state = world.provisioned(PAYER, "1234")
    with world.running(state) as (sim, tok):
        first = world.pay(sim, tok, world.request(PAYEE, 100), "1234")
        stamp.write_text(f"{-2 * DAY:+d}\n")  # its RTC steps back two days, the link stays up
        err = refused(tok, expired_request(world, 2))
        assert err.code == P.ERR_EXPIRED, err
        second = world.pay(sim, tok, world.request(PAYEE, 200), "1234")
        assert note_time(second) >= note_time(first)
        stamp.write_text(f"{3 * DAY:+d}\n")  # and forward three: the token runs with it
        third = world.pay(sim, tok, world.request(PAYEE, 300, expiry=4 * DAY), "1234")
        assert note_time(third) >= int(time.time()) + 3 * DAY - 60
        assert tok.info()["allowance"]["spent"] == 600
