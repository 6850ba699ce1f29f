"""A request's expiry on the token after a host whose clock was a day ahead (stop 29).

The real firmware on the MicroPython unix port (`hubi token sim`'s Simulator). The last note's
time is a floor for the next note's time (time never goes back on the token, the allowance
relies on it). What was broken: that floor was also the clock a payee's request expired by, so
one payment through a terminal a day fast refused EXPIRED every request made on the right clock
that expired within the day. Now a request's expiry is checked against the time the host set in
this session (SET_TIME, run on by the token); with no SET_TIME since boot, against the floor as
before.
"""

from __future__ import annotations

import time

import pytest

from hubi.token.client import TokenClient
from hubi.token.harness import TokenWorld
from hubi_core import codec
from hubi_core import protocol as P
from hubi_core.errors import ErrorReply

pytestmark = [pytest.mark.micropython, pytest.mark.xdist_group("test_token_probe29_expiry")]
PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"
DAY = 86400


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> TokenWorld:
    return TokenWorld(tmp_path_factory.mktemp("token-probe29-expiry"))


def _time(note: bytes) -> int:
    return codec.decode(note, codec.NOTE).time


def _refused(tok: TokenClient, request: bytes) -> ErrorReply:
    with pytest.raises(ErrorReply) as e:
        tok.pay(request)
    return e.value


def _expired(world: TokenWorld) -> bytes:
    """A request made two hours ago that expired an hour ago (by the right clock)."""
    p = world.payee(PAYEE)
    now = int(time.time())
    req = codec.make_request(PAYEE, 901, now - 7200, p.template, 3, now - 3600, "late")
    codec.sign(req, p.private)
    return codec.encode(req)


def test_after_a_host_a_day_ahead_a_host_on_time_pays_a_request_of_an_hour(
    world: TokenWorld,
) -> None:
    state = world.provisioned(PAYER)
    with world.running(state) as (sim, tok):
        tok.set_time(int(time.time()) + DAY)  # a merchant terminal a day fast
        ahead = world.pay(sim, tok, world.request(PAYEE, 100, expiry=2 * DAY), "1234")
        assert _time(ahead) >= int(time.time()) + DAY - 60
        tok.set_time(int(time.time()))  # the next host, on the right clock
        on_time = world.pay(sim, tok, world.request(PAYEE, 200, expiry=3600), "1234")
        assert _time(on_time) >= _time(ahead)  # the note's own time keeps the floor
        err = _refused(tok, _expired(world))  # expired by this host's clock: still refused
        assert err.code == P.ERR_EXPIRED, err
        now = int(time.time())
        said = int(err.text.rsplit("(now ", 1)[1].rstrip(")"))
        assert now - 5 <= said <= now + 5, err.text  # the host's time, not the floor
        assert tok.info()["allowance"]["spent"] == 300


def test_with_no_time_set_since_boot_the_floor_still_counts(world: TokenWorld) -> None:
    """No host sent SET_TIME to this running token: requests expire by the last note's time,
    as before (the token's clock alone is not a host's word)."""
    state = world.provisioned(PAYER)
    with world.running(state) as (sim, tok):
        tok.set_time(int(time.time()) + DAY)
        world.pay(sim, tok, world.request(PAYEE, 100, expiry=2 * DAY), "1234")
    sim = world.sim(state)
    sim.start()
    try:
        sim.wait_ready()
        tok = TokenClient.open(sim.port, set_time=False)
        try:
            err = _refused(tok, world.request(PAYEE, 200, expiry=3600))
            assert err.code == P.ERR_EXPIRED, err
            tok.set_time(int(time.time()))  # a host says the time: its clock counts now
            note = world.pay(sim, tok, world.request(PAYEE, 200, expiry=3600), "1234")
            assert _time(note) >= int(time.time()) + DAY - 60
        finally:
            tok.close()
    finally:
        sim.stop()
