"""Provisioning bundles with odd fields, on the real simulator: a bundle time before 2020 set
the token's clock to one that reads as "never set", so no allowance or request expired any
more (SET_TIME refuses such a time); the refusal leaves the token blank and provisionable."""

from __future__ import annotations

import time

import pytest

from hubi.token import provision as prov
from hubi.token.harness import TokenWorld
from hubi_core import protocol as P
from hubi_core.errors import ErrorReply

pytestmark = pytest.mark.micropython
PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> TokenWorld:
    return TokenWorld(tmp_path_factory.mktemp("token-probe24-prov"))


@pytest.mark.parametrize("when", [0, 1, 1577836799])
def test_bundle_time_before_2020_is_refused(world: TokenWorld, when: int) -> None:
    state = world.new_state()
    with world.running(state) as (_sim, tok):
        with pytest.raises(ErrorReply) as e:
            prov.provision(tok, world.home, PAYER, "1234", 5000, now=when)
        assert e.value.code == P.ERR_PROVISION
        assert f"time {when} is before 1577836800 (2020)" in e.value.text
        info = tok.info()
        assert info["state"] == "blank" and info["clock_set"]
        # nothing installed: the same token takes a bundle with the right time
        out = prov.provision(tok, world.home, PAYER, "1234", 5000)
        assert out["state"] == "ready" and out["allowance"]["cap"] == 5000
        assert tok.info()["clock_set"] and abs(tok.info()["time"] - time.time()) < 600
        tok.pay(world.request(PAYEE, 100))
        assert tok.confirm_pay("1234")
