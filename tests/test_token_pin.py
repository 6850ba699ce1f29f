"""PIN: wrong PINs back off (the delay doubles after three free tries), the tenth wipes; the
attempt counter is written before the PIN is checked (a kill mid-check still counts)."""

from __future__ import annotations

import time

import pytest

from hubi.token.harness import TokenWorld
from hubi_core import protocol as P
from hubi_core.errors import ErrorReply

pytestmark = pytest.mark.micropython
PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"
BACKOFF = 40  # ms: the simulator's back-off base in these tests (boards use 1000)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> TokenWorld:
    return TokenWorld(tmp_path_factory.mktemp("token-pin"))


def test_backoff_and_wipe_at_tenth(world: TokenWorld) -> None:
    state = world.provisioned(PAYER)
    with world.running(state, "headless") as (_sim, tok):
        tk_before = tok.info()["transport_key"]
        assert tk_before is None
        tok.pay(world.request(PAYEE, 100))
        times = []
        for attempt in range(1, 10):
            t0 = time.monotonic()
            with pytest.raises(ErrorReply) as e:
                tok.confirm_pay("0000")
            times.append(time.monotonic() - t0)
            assert e.value.code == P.ERR_PIN_WRONG
            assert f"{10 - attempt} tr" in e.value.text
            assert tok.info()["pin_tries_left"] == 10 - attempt
        # attempts 4..9 waited 40, 80, ... ms before the check
        for k, t in enumerate(times[3:]):
            assert t >= BACKOFF * (1 << k) / 1000 * 0.9, (k, times)
        with pytest.raises(ErrorReply) as e:
            tok.confirm_pay("0000")
        assert e.value.code == P.ERR_WIPED
        info = tok.info()
        assert info["state"] == "blank" and info["account"] is None
        assert info["transport_key"] and info["allowance"] is None and info["notes"] == 0
        with pytest.raises(ErrorReply) as e:
            tok.pay(world.request(PAYEE, 100))
        assert e.value.code == P.ERR_STATE
    flash = state / "flash"
    assert not (flash / "ks.bin").exists() and not (flash / "trust").exists()
    # the same account can be provisioned again; serials keep counting (ctr.bin survives)
    with world.running(state, "headless") as (_sim, tok):
        world.provision(tok, PAYER, "4321")
        assert tok.info()["state"] == "ready"


def test_good_pin_resets_the_counter(world: TokenWorld) -> None:
    state = world.provisioned(PAYER)
    with world.running(state, "headless") as (_sim, tok):
        tok.pay(world.request(PAYEE, 100))
        for _ in range(5):
            with pytest.raises(ErrorReply):
                tok.confirm_pay("1111")
        assert tok.info()["pin_tries_left"] == 5
        tok.confirm_pay("1234")
        assert tok.info()["pin_tries_left"] == 10


def test_counter_written_before_the_check(world: TokenWorld) -> None:
    """Kill the token right after it stored the incremented counter, before the PIN check:
    after the restart the attempt is counted, even though the PIN was the right one."""
    state = world.provisioned(PAYER)
    sim = world.sim(state, "headless", trace=True)
    sim.start()
    try:
        sim.wait_ready()
        from hubi.token.client import TokenClient

        tok = TokenClient.open(sim.port)
        tok.pay(world.request(PAYEE, 100))
        log0 = len(sim.tail(10**7))
        # find the storage step that renames pin.cnt: the next run stops there
        tok.confirm_pay("1234")
        ops = sim.tail(10**7)[log0:]
        tok.close()
    finally:
        sim.stop()
    lines = [ln.split() for ln in ops.splitlines() if ln.startswith("HUBI-OP")]
    assert lines, "trace shows the storage steps"
    first_pin = next(int(ln[1]) for ln in lines if ln[2] == "rename" and ln[3] == "pin.cnt")
    # replay on a fresh copy (steps count from the process start, the runs are identical):
    # stop at the step after the counter's rename, i.e. inside the PIN check
    state2 = world.provisioned(PAYER)
    sim = world.sim(state2, "headless", kill_at=first_pin + 1)
    sim.start()
    try:
        sim.wait_ready()
        from hubi.token.client import TokenClient

        tok = TokenClient.open(sim.port)
        tok.pay(world.request(PAYEE, 100))
        with pytest.raises(Exception):  # noqa: B017 - the token stops dead mid-request
            tok.link.call(P.PAY_CONFIRM, b"1234", timeout_ms=1500, retries=0)
        sim.wait_for(lambda: "HUBI-KILLPOINT" in sim.tail(), 10, "the kill point")
        tok.close()
    finally:
        sim.kill()
    with world.running(state2, "headless") as (_sim, tok):
        assert tok.info()["pin_tries_left"] == 9
