"""Offline refusals: a forged, altered, expired, wrong-payee or wrong-amount note is refused
without any network, and the reason names the field (DESIGN §2 link 3, issue 6)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hubi_core import codec, lsum, suite
from tests.test_merchant_support import (
    MERCHANT,
    PAYER,
    T0,
    Shop,
    frames,
    hubi_json,
    make_shop,
)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Shop:
    return make_shop(tmp_path_factory.mktemp("refusals"))


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline means offline: any attempt to open a connection fails the test."""

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("the merchant tried to use the network while verifying offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _altered(note: bytes, name: str, value: object) -> bytes:
    """The note with one field value changed, every original signature kept."""
    obj = codec.decode(note, codec.NOTE)
    obj.values[name] = value
    return codec.encode(obj)


def bad_notes(shop: Shop) -> dict[str, tuple[bytes, str, str]]:
    """name -> (note bytes, expected category, expected field). The open request asks 12.50
    CNY for 'coffee', made at T0, payable until T0 + 600."""
    payer = shop.payer()
    good = payer.note(1250)
    attacker_priv = suite.generate_private()
    forged = codec.make_note(payer.template, 900, T0 + 100, 1250, MERCHANT, "coffee")
    codec.sign(forged, attacker_priv)  # the payer's template, someone else's key
    # a template the attacker seals himself for the payer's account
    fake_tpl = codec.make_template(
        "BKA", 5, T0, PAYER, "CNY", suite.public_key(attacker_priv, compressed=True)
    )
    codec.sign(fake_tpl, attacker_priv)
    forged_tpl = codec.make_note(fake_tpl, 901, T0 + 100, 1250, MERCHANT, "coffee")
    codec.sign(forged_tpl, attacker_priv)
    bad_sig = bytearray(good)
    bad_sig[-10] ^= 0x01  # inside the lsum signature (its S half)
    usd = shop.payer("BKA-usd.wallet", currency="USD")
    return {
        "forged-key": (codec.encode(forged), "forged", "template"),
        "forged-template": (codec.encode(forged_tpl), "forged", "template"),
        "altered-amount": (_altered(payer.note(1250), "amount", 125000), "altered", "amount"),
        "altered-purpose": (_altered(payer.note(1250), "purpose", "coffee!"), "altered", "purpose"),
        "altered-payee": (
            _altered(payer.note(1250, payee="BKB-9"), "payee", MERCHANT),
            "altered",
            "payee",
        ),
        "altered-signature": (bytes(bad_sig), "altered", "lsum"),
        "expired": (payer.note(1250, time=T0 + 601), "expired", "expiry"),
        "wrong-payee": (payer.note(1250, payee="BKB-000000000008"), "wrong-payee", "payee"),
        "wrong-amount": (payer.note(1200), "wrong-amount", "amount"),
        "wrong-purpose": (payer.note(1250, purpose="tea"), "wrong-purpose", "purpose"),
        "wrong-currency": (usd.note(1250), "wrong-currency", "currency"),
        "truncated": (payer.note(1250)[:-5], "format", "lsum"),
    }


@pytest.fixture(scope="module")
def cases(shop: Shop) -> dict[str, tuple[bytes, str, str]]:
    return bad_notes(shop)


def test_each_bad_note_is_refused_naming_the_field(shop: Shop, cases: dict) -> None:
    with shop.merchant() as m:
        kept = [r.bytes for r in m.notes()]  # the shop is the module's: another test may add
        req = m.request(1250, "coffee", expires=600, now=T0)
        for name, (raw, category, fld) in cases.items():
            res = m.accept(raw, now=T0 + 700)
            v = res.verdict
            assert not res.ok, name
            assert (v.category, v.field) == (category, fld), (name, v.message())
            assert fld in v.reason or v.field in v.reason, (name, v.reason)
            assert v.message().startswith(f"{fld}: "), v.message()
        # nothing was stored, the request is still open, every refusal is logged as evidence
        assert sorted(r.bytes for r in m.notes()) == sorted(kept)
        assert m.open_request().serial == req.serial
        log = m.outbox.rejects()
        assert [r["field"] for r in log[-len(cases) :]] == [c[2] for c in cases.values()]
        assert all(r["bytes"] > 0 for r in log[-len(cases) :])
        # and the right note is then accepted
        good = shop.payer().note(1250)
        ok = m.accept(good, now=T0 + 100)
        assert ok.ok, ok.verdict.message()
        assert sorted(r.bytes for r in m.notes()) == sorted([*kept, good])
        # paying the same note again is a duplicate; another note with its serial is double issuance
        again = m.accept(good)
        assert (again.verdict.category, again.verdict.field) == ("duplicate", "note_id")
        m.request(1250, "coffee", expires=600, now=T0)
        twin = shop.payer().note(1250, serial=codec.decode(good).serial, time=T0 + 101)
        dbl = m.accept(twin, now=T0 + 100)
        assert (dbl.verdict.category, dbl.verdict.field) == ("double-issuance", "serial")


def test_reason_for_forged_and_altered_names_the_failing_signature(shop: Shop, cases) -> None:
    with shop.merchant() as m:
        v = m.check(cases["altered-amount"][0])
        assert "field amount" in v.reason and "lsum" in v.reason  # lsum covers the amount too
        v = m.check(cases["forged-key"][0])
        assert "template" in v.message() and "seal" in v.reason
        failed = [c["field"] for c in v.checks if not c["ok"]]
        assert failed[0] == "template"


def test_no_request_and_not_a_note(shop: Shop, tmp_path: Path) -> None:
    with shop.merchant() as m:
        while m.open_request() is not None:
            m.outbox.cancel_request(m.open_request().serial)
        v = m.check(shop.payer().note(1250))
        assert (v.category, v.field) == ("no-request", "request")
        req = m.request(1250, "coffee", now=T0)
        v = m.check(req.bytes)  # someone scanned the merchant's own request
        assert (v.category, v.field) == ("kind", "kind") and "Request" in v.reason


def test_cli_scan_refuses_offline_with_field_in_json(shop: Shop, tmp_path: Path, cases) -> None:
    """A real `hubi merchant scan` reads PNG frames of every bad note (animated where the token
    would animate) and reports each refusal with its field; then accepts the good note."""
    with shop.merchant() as m:
        m.request(1250, "coffee", expires=600, now=T0)
    folder = tmp_path / "frames"
    folder.mkdir()
    names = list(cases)
    for i, name in enumerate(names):
        frames(cases[name][0], folder, prefix=f"{i:02d}-{name}-")
    good = shop.payer().note(1250, time=T0 + 300)
    frames(good, folder, prefix="99-good-")
    code, out = hubi_json("merchant", "--home", str(shop.home), "scan", "--image", str(folder))
    assert code == 1  # some refused
    got = [(r["category"], r["field"], r["accepted"]) for r in out["results"]]
    want = [(cases[n][1], cases[n][2], False) for n in names] + [("accepted", None, True)]
    assert got == want
    for r in out["results"][:-1]:
        assert r["field"] in r["reason"], r
    last = out["results"][-1]
    assert last["note"]["note_id"] == lsum.note_id(PAYER, codec.decode(good).serial).hex()
    receipt = codec.decode(bytes.fromhex(last["receipt"]["hex"]), codec.RECEIPT)
    assert receipt["payer"] == PAYER and receipt["amount"] == 1250
    assert Path(last["receipt"]["png"]).exists()
