"""`hubi token ...` against a token that answers a payment with the wrong note, and PINs the
token cannot take.

A fake token on a real pty, served by the real hubi_core.link.Server, answers PAY_REQUEST with a
genuine, signed note of another payment: `pay` printed it as the note of the request sent and
wrote it to --out. A PIN with a space or full-width digits went over the link, and the token
counts a PIN that breaks its rule as a wrong try (the last one wipes its keys): the host now
refuses it before sending.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hubi.merchant import Merchant
from hubi.token.client import TokenClient
from hubi_core import protocol as P
from hubi_core.errors import HubiError
from tests.test_merchant_support import MERCHANT, Shop, make_shop
from tests.token_fakes import fake_token, run


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Shop:
    return make_shop(tmp_path_factory.mktemp("token-probe"))


def _request(shop: Shop, amount: int, purpose: str) -> bytes:
    with Merchant.open(shop.home) as m:
        return m.request(amount, purpose, 3600).bytes


SUMMARY = b'\x02{"payee": "P", "amount": 700, "amount_text": "7.00"}'


@pytest.mark.parametrize(
    "how, said",
    [
        ({"amount": 70000}, "its amount is 70000, the request's 700"),
        ({"payee": "BKB-000000000099"}, "its payee is 'BKB-000000000099', the request's"),
        ({"purpose": "gift"}, "its purpose is 'gift', the request's 'tea'"),
    ],
)
def test_a_note_that_pays_another_request_is_not_taken(
    shop: Shop, tmp_path: Path, how: dict, said: str
) -> None:
    """The token answered the request with a genuine note of another payment (another amount,
    payee or purpose: an earlier note, or what a hostile token signed instead): `pay` said
    'note #N' and wrote it to --out as the payment of this request."""
    req = tmp_path / "req.bin"
    req.write_bytes(_request(shop, 700, "tea"))
    kw = {"amount": 700, "payee": MERCHANT, "purpose": "tea", **how}
    other = shop.payer().note(kw["amount"], payee=kw["payee"], purpose=kw["purpose"])
    out_file = tmp_path / "note.bin"
    for headless in (False, True):
        replies = (
            {P.PAY_REQUEST: SUMMARY, P.PAY_CONFIRM: other}
            if headless
            else {P.PAY_REQUEST: b"\x01" + other}
        )
        with fake_token(replies) as f:
            code, out = run(
                "pay", "--port", f.port, "--request", str(req), "--out", str(out_file),
                "--yes", "--pin", "1234",
            )  # fmt: skip
        assert code == 2, out
        assert "is not a note for this request" in out and said in out, out
        assert not out_file.exists(), out
        assert (tmp_path / "note.bin.not-a-note").read_bytes() == other
    # the right note is still taken
    right = shop.payer().note(700, purpose="tea")
    with fake_token({P.PAY_REQUEST: b"\x01" + right}) as f:
        code, out = run("pay", "--port", f.port, "--request", str(req), "--out", str(out_file))
    assert code == 0 and out_file.read_bytes() == right, out


@pytest.mark.parametrize("pin", [" 1234", "1234 ", "１２３４", "12 34", "123", "123456789"])
def test_a_pin_the_token_cannot_take_is_not_sent(tmp_path: Path, pin: str) -> None:
    """A PIN with a space, full-width digits, or of the wrong length went to the token, which
    counts it as a wrong try (and wipes its keys at the last one)."""
    req = tmp_path / "req.bin"
    req.write_bytes(b"\x01\x02\x03")
    replies = {P.PAY_REQUEST: SUMMARY, P.PAY_CONFIRM: b"", P.SHOW_BALANCE: b"", P.WIPE: b""}
    with fake_token(replies) as f:
        code, out = run("pay", "--port", f.port, "--request", str(req), "--yes", "--pin", pin)
        assert code == 2 and "PIN not sent: PIN must be" in out, out
        assert "would count it as a wrong try" in out, out
        code, out = run("balance", "--port", f.port, "--pin", pin)
        assert code == 2 and "PIN not sent" in out, out
        code, out = run("wipe", "--port", f.port, "--pin", pin)
        assert code == 2 and "PIN not sent" in out, out
        with TokenClient.open(f.port) as tok:
            with pytest.raises(HubiError, match="current PIN not sent"):
                tok.change_pin(pin, "5678")
            with pytest.raises(HubiError, match="new PIN not sent"):
                tok.change_pin("1234", pin)
        sent = f.types()
    assert P.PAY_REQUEST in sent, sent
    for t in (P.PAY_CONFIRM, P.SHOW_BALANCE, P.WIPE, P.CHANGE_PIN):
        assert t not in sent, (P.type_name(t), sent)
