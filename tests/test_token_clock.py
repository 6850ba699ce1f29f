"""SET_TIME before 2020 on the real firmware (MicroPython simulator). The token reads a clock
before 2020 as "never set" and then checks no request's or allowance's expiry: a host that set
such a time could have the token pay a request long expired. Such a time is refused now, and
the expiry is still checked after it."""

from __future__ import annotations

import time

import pytest

from hubi.token.harness import TokenWorld
from hubi_core import codec
from hubi_core import protocol as P
from hubi_core.errors import ErrorReply

pytestmark = pytest.mark.micropython
PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> TokenWorld:
    return TokenWorld(tmp_path_factory.mktemp("token-clock"))


def test_a_time_before_2020_is_refused_and_expiry_still_checked(world: TokenWorld) -> None:
    state = world.provisioned(PAYER)
    with world.running(state, "headless") as (_sim, tok):
        req = world.request(PAYEE, 700, expiry=300)
        expiry = codec.decode(req, codec.REQUEST)["expiry"]
        tok.set_time(expiry + 600)  # the request has expired
        for t in (0, 1, 946_684_800, 1_577_836_799):  # 1970, 2000, a second before 2020
            with pytest.raises(ErrorReply) as e:
                tok.set_time(t)
            assert e.value.code == P.ERR_BAD_PAYLOAD, e.value
            assert f"SET_TIME {t} is before 1577836800 (2020)" in e.value.text
        assert tok.info()["clock_set"] is True
        with pytest.raises(ErrorReply) as e:
            tok.pay(req)
        assert e.value.code == P.ERR_EXPIRED, e.value
        tok.set_time(1_577_836_800)  # 2020 itself is a time
        tok.set_time(int(time.time()))
        assert tok.pay(world.request(PAYEE, 800, expiry=300)).summary is not None
        n = codec.decode(tok.confirm_pay("1234"), codec.NOTE)
        assert (n.serial, n["amount"]) == (1, 800)
