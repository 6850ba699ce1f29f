"""The token's own byte paths (firmware core.pay) against the shared codec, on CPython.

The token signs a note without hubi_core.codec (its fields are few and fixed, and the codec's
tables would share the heap with the signer): the bytes must be exactly what codec.encode
writes. Its request check hashes codec.field_message in one step and checks the signatures
in the next: the digests must be the messages' and the verdict verify_object's.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from hubi.token.harness import TokenWorld
from hubi_core import codec, lsum, suite
from hubi_core import protocol as P

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "firmware"))

from core import pay, paysign  # noqa: E402

PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> TokenWorld:
    return TokenWorld(tmp_path_factory.mktemp("token-core"))


def test_constants_match_the_protocol() -> None:
    """The token's modules keep protocol numbers as MicroPython const()s (no heap, no
    interned name): each is hubi_core.protocol's."""
    from core import hand, handx, notes, prov, sigcheck, trust, tui, wallet

    from hubi_core import link

    seen = 0
    for mod in (pay, hand, handx, notes, prov, sigcheck, trust, tui, wallet, link):
        for name in dir(mod):
            if name.startswith("_") and name[1:].isupper() and hasattr(P, name[1:]):
                assert getattr(mod, name) == getattr(P, name[1:]), (mod.__name__, name)
                seen += 1
    assert seen > 50


@pytest.mark.parametrize(
    ("serial", "amount", "purpose"),
    [(1, 12345, "coffee+cake!"), (300, 5, None), (2**40, 10**12, ""), (77, 100, "x" * 64)],
)
def test_note_bytes_are_the_codecs(world: TokenWorld, serial: int, amount: int, purpose) -> None:
    payer = world.payee(PAYER)  # an issued account: its template and key
    tpl = payer.template
    t = 1_700_000_123
    want = codec.make_note(tpl, serial, t, amount, PAYEE, purpose)
    codec.sign(want, payer.private)
    stub = paysign.template_stub(codec.encode(tpl))
    assert stub == codec._encode_stub(tpl, PAYER)
    got = paysign.note_bytes(PAYER, serial, t, stub, amount, PAYEE, purpose, payer.private)
    assert got == codec.encode(want)
    n = codec.decode(got, codec.NOTE)
    assert n.sigs["lsum"] == want.sigs["lsum"] and lsum.of_note(n) == lsum.of_note(want)


def test_verify_digest_is_verify(world: TokenWorld) -> None:
    req = codec.decode(world.request(PAYEE, 100, "lunch"))
    key = codec.decode(codec.encode(req["template"]))
    msg = codec.field_message(req, "amount")
    d = hashlib.sha256(msg).digest()
    p = world.payee(PAYEE)
    pub = suite.public_key(p.private)
    for sig in (req.sigs["amount"], req.sigs["expiry"], bytes(64)):
        assert suite.verify_digest(pub, d, sig) == suite.verify(pub, msg, sig)
    assert key.kind == codec.TEMPLATE


class _Records:
    def __init__(self, body: bytes):
        self.body = body

    def get(self, name: str) -> bytes:
        return self.body


class _Storage:
    """The token's trust/<bank>.pub names over the home's matrices/ folder."""

    def __init__(self, folder: Path):
        self.folder = folder

    def path(self, name: str) -> str:
        return str(self.folder / "matrices" / name.split("/")[-1])

    def exists(self, name: str) -> bool:
        return Path(self.path(name)).exists()


class _Wallet:
    def __init__(self, world: TokenWorld):
        from core import trust

        banks = sorted(world.trust.matrices)
        rows = [(b, world.trust.bank_key(b), world.trust.matrices[b].digest()) for b in banks]
        self.records = _Records(trust.keys_record(rows))
        self.storage = _Storage(world.home / "trust")


def _resigned(obj: codec.Obj, field: str, value, priv: int | None = None) -> bytes:
    """obj with one value changed; signatures kept unless `priv` re-signs the whole object."""
    values = dict(obj.values)
    values[field] = value
    out = codec.Obj(obj.kind, obj.signer, obj.serial, obj.time, values)
    out.sigs.update(obj.sigs)
    if priv is not None:
        codec.sign(out, priv)
    return codec.encode(out)


def test_sigcheck_agrees_with_verify_object(world: TokenWorld) -> None:
    """The token's two-step check (core.sigcheck) gives verify_object's verdict and first
    failure on genuine and broken requests, receipts and balance notices."""
    from core import sigcheck

    from hubi_core import verify

    w = _Wallet(world)
    req = codec.decode(world.request(PAYEE, 100, "lunch"))
    payer = world.payee(PAYER)
    note = codec.make_note(payer.template, 5, int(req.time), 100, PAYEE, "lunch")
    codec.sign(note, payer.private)
    receipt = codec.decode(world.receipt(codec.encode(note)))
    notice = codec.decode(world.balance_notice(codec.encode(note), 900))
    stranger = suite.generate_private()
    other_tpl = world.payee("BKA-000000000099").template
    cases = {
        "genuine request": codec.encode(req),
        "request amount altered": _resigned(req, "amount", 101),
        "request purpose altered": _resigned(req, "purpose", "dinner"),
        "request signed by a stranger": _resigned(req, "amount", 100, stranger),
        "request carrying another account's template": _resigned(req, "template", other_tpl),
        "genuine receipt": codec.encode(receipt),
        "receipt signed by a stranger": _resigned(receipt, "amount", receipt["amount"], stranger),
        "genuine balance notice": codec.encode(notice),
        "balance notice signed by a stranger": _resigned(
            notice, "balance", notice["balance"], stranger
        ),
    }
    verdicts = {}
    for name, raw in cases.items():
        obj = codec.decode(raw)
        want = verify.verify_object(obj, world.trust).first_failure()
        got = sigcheck.check(w, sigcheck.plan(codec.decode(raw)))
        assert got == want, name
        verdicts[name] = got is None
    assert verdicts == {name: name.startswith("genuine") for name in cases}
