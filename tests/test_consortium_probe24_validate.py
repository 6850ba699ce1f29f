"""The peer validation route (POST /v1/consortium/validate) and the peer read routes probed with
signed hostile requests from a real peer's key, against real bank node processes over a real
etcd cluster: bodies that are no note or a note with a field of the wrong shape, numbers past
any balance, notes of other banks and of banks outside the consortium, notes reusing a serial,
replayed requests, a request that claims another bank's id. Each gets a clear 4xx or a sealed
refusal naming what is wrong (never a 5xx), and nothing is ordered or booked."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from hubi.bank.auth import Signer
from hubi_core import codec
from tests.consortium_support import FUNDS, Consortium
from tests.servers import etcd_cluster  # noqa: F401

# one worker builds the module's nodes (not each worker again)
pytestmark = pytest.mark.xdist_group("test_consortium_probe24_validate")

BANKS3 = ["BKA", "BKB", "BKC"]
PATH = "/v1/consortium/validate"


@pytest.fixture(scope="module")
def cons(etcd_cluster, tmp_path_factory) -> Consortium:  # noqa: F811
    c = Consortium(tmp_path_factory.mktemp("probe24-validate"), etcd_cluster.client_urls, BANKS3)
    c.start()
    try:
        yield c
    finally:
        c.close()


def _post(
    c: Consortium,
    to: str,
    body: bytes,
    *,
    signer: str = "BKB",
    caller: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """POST `body` to `to`'s validation route, signed with `signer`'s key as `caller`."""
    s = c.signer(signer)
    if caller is not None:
        s = Signer(caller, s.private)
    h = dict(headers) if headers is not None else s.headers(to, "POST", PATH, None, body)
    h["content-type"] = "application/octet-stream"
    r = c.http.post(c.url(to) + PATH, content=body, headers=h)
    assert r.status_code < 500, f"{to}: {r.status_code} {r.text[:300]}"
    return r.status_code, r.json()


def _refusal(doc: dict[str, Any], bank: str) -> str:
    """The reason of a sealed refusal by `bank` (checked: it is one, and the seal says so)."""
    e = codec.decode(bytes.fromhex(doc["endorsement"]), codec.ENDORSEMENT)
    assert e.signer == bank and doc["bank"] == bank
    assert doc["verdict"] == e["verdict"] == 0, doc
    assert doc["reason"] and doc["reason"] == e.get("reason"), doc
    return doc["reason"]


def _raw_note(obj: codec.Obj, **raw: bytes) -> bytes:
    """`obj`'s bytes (signed) with the wire value of each field named in `raw` replaced: what a
    hostile peer sends that no encoder makes."""
    codec.encode(obj)
    out = [obj.prefix(), obj.header_bytes()]
    for tag, name, typ, _required, signing in codec.SCHEMAS[codec.NOTE][1]:
        if name not in obj.values:
            continue
        if name in raw:
            value = raw[name]
        elif typ == codec.EMPTY:
            value = b""
        else:
            value = codec._encode_value(codec.NOTE, name, typ, obj.values[name], obj.signer)
        out.append(codec._tlv(tag, value))
        if signing in (codec.SIGNED, codec.COMPUTED):
            out.append(bytes(obj.sigs[name]))
    return b"".join(out)


def _note(c: Consortium, payer: str, payee: str, amount: int, serial: int) -> codec.Obj:
    acc = c.accounts[payer]
    obj = codec.make_note(acc.template, serial, 1_700_000_000, amount, payee, "probe")
    return codec.sign(obj, acc.key)


def _nothing_happened(c: Consortium) -> None:
    """No note entry applied at any bank, no report, every balance as funded."""
    for b in BANKS3:
        st = c.status(b)
        assert st["entries"] == {} and st["reports"] == 0, (b, st)
    for account in c.accounts:
        if not account.endswith("000000"):
            assert c.balance(account) == FUNDS, account


# (name, raw field values, what the 400 names)
BAD_SHAPES = [
    ("amount-empty", {"amount": b""}, "amount"),
    ("amount-overlong", {"amount": b"\x80" * 11 + b"\x01"}, "amount"),
    ("payee-nul", {"payee": b"BKB-000001\x00"}, "payee"),
    ("payee-not-utf8", {"payee": b"BKB-\xff\xfe0001"}, "payee"),
    ("payee-arabic-digit", {"payee": "BKB-00000١".encode()}, "payee"),
    ("purpose-not-utf8", {"purpose": b"\xc3\x28"}, "purpose"),
    ("lsum-not-empty", {"lsum": b"x"}, "lsum"),
]


@pytest.mark.parametrize(("name", "raw", "says"), BAD_SHAPES, ids=[b[0] for b in BAD_SHAPES])
def test_a_note_of_the_wrong_shape_is_a_400_naming_the_field(
    cons: Consortium, name: str, raw: dict[str, bytes], says: str
) -> None:
    body = _raw_note(_note(cons, "BKA-000001", "BKB-000001", 10, 500 + len(name)), **raw)
    for bank in BANKS3:
        status, doc = _post(cons, bank, body, signer="BKC" if bank == "BKB" else "BKB")
        assert status == 400 and doc["error"] == "bad-object", (bank, doc)
        assert says in doc["message"], (bank, doc)
    _nothing_happened(cons)


def test_bodies_that_are_no_note_are_400s(cons: Consortium) -> None:
    endorsed = _post(cons, "BKA", cons.accounts["BKA-000002"].note("BKC-000001", 5))[1]
    endorsement = bytes.fromhex(endorsed["endorsement"])
    for body, says in [
        (b"", "Truncated"),
        (b"\xff" * 64, "unknown suite"),
        (b"[" * 10_000, "over the limit 4096"),
        (endorsement, "expected a Note, got a Endorsement"),
        (endorsement[:-7], "expected a Note, got a Endorsement"),
    ]:
        status, doc = _post(cons, "BKA", body)
        assert status == 400 and doc["error"] == "bad-object" and says in doc["message"], doc
    status, doc = _post(cons, "BKA", b"\x01" * (1 << 20))
    assert status == 413 and doc["error"] == "body-too-large", doc
    _nothing_happened(cons)


def test_notes_no_bank_may_order_are_refused_with_the_reason(cons: Consortium) -> None:
    """Sealed refusals, by the payer's bank and by a third bank alike, naming the problem."""
    cases = [
        ((2**63, "BKB-000001"), "note amount 9223372036854775808 is past"),
        ((2**64 - 1, "BKB-000001"), "is past 9223372036854775807"),
        ((10, "BKZ-000001"), "bank BKZ is not in consortium"),
        ((10, "BKA-000002"), "is not an interbank note"),
    ]
    for i, ((amount, payee), says) in enumerate(cases):
        body = codec.encode(_note(cons, "BKA-000003", payee, amount, 700 + i))
        for bank in ("BKA", "BKC"):
            assert says in _refusal(_post(cons, bank, body)[1], bank), (bank, amount, payee)
    zero = codec.encode(_note(cons, "BKA-000003", "BKB-000001", 0, 720))
    assert "amount must be positive" in _refusal(_post(cons, "BKC", zero)[1], "BKC")
    # a huge serial: every applier would reject the entry
    big = codec.encode(_note(cons, "BKA-000003", "BKB-000001", 10, 2**63 + 1))
    assert "note serial" in _refusal(_post(cons, "BKA", big)[1], "BKA")
    # more than the payer has: the refusal does not tell the balance
    rich = codec.encode(_note(cons, "BKA-000003", "BKB-000001", FUNDS * 5, 730))
    reason = _refusal(_post(cons, "BKA", rich)[1], "BKA")
    assert "cannot cover" in reason and str(FUNDS) not in reason.replace(str(FUNDS * 5), "")
    _nothing_happened(cons)


def test_a_forged_note_of_other_banks_is_refused_by_a_third_bank(cons: Consortium) -> None:
    """BKB asks BKA about a note from BKC's account to BKB's: BKA checks the payer's signature
    and refuses a note whose amount was changed after signing."""
    obj = _note(cons, "BKC-000001", "BKB-000002", 10, 800)
    good = codec.encode(obj)
    changed = _raw_note(obj, amount=codec.varint(11))
    assert _post(cons, "BKA", good)[1]["verdict"] == 1
    reason = _refusal(_post(cons, "BKA", changed)[1], "BKA")
    assert "amount" in reason or "signature" in reason, reason
    _nothing_happened(cons)


def test_a_second_note_with_the_same_serial_is_refused_by_the_payers_bank(
    cons: Consortium,
) -> None:
    first = codec.encode(_note(cons, "BKA-000002", "BKB-000003", 10, 900))
    second = codec.encode(_note(cons, "BKA-000002", "BKC-000003", 10, 900))
    assert _post(cons, "BKA", first)[1]["verdict"] == 1
    assert _post(cons, "BKA", first, signer="BKC")[1]["verdict"] == 1  # the same note again
    reason = _refusal(_post(cons, "BKA", second, signer="BKC")[1], "BKA")
    assert "serial 900 of BKA-000002 already endorsed for another note" in reason
    _nothing_happened(cons)


def test_replays_and_borrowed_identities_are_refused(cons: Consortium) -> None:
    note = codec.encode(_note(cons, "BKA-000001", "BKC-000002", 10, 950))
    h = cons.signer("BKB").headers("BKA", "POST", PATH, None, note)
    assert _post(cons, "BKA", note, headers=h)[0] == 200
    status, doc = _post(cons, "BKA", note, headers=h)  # the same request again
    assert (status, doc["error"]) == (401, "replayed-nonce"), doc
    status, doc = _post(cons, "BKC", note, headers=h)  # signed for BKA, sent to BKC
    assert (status, doc["error"]) == (401, "bad-signature"), doc
    other = codec.encode(_note(cons, "BKA-000001", "BKC-000002", 10, 951))
    status, doc = _post(cons, "BKA", other, headers=h)  # another body under that signature
    assert status == 401 and doc["error"] in ("bad-signature", "replayed-nonce"), doc
    for caller, code in [("BKC", "bad-signature"), ("BKA", "bad-signature")]:
        status, doc = _post(cons, "BKA", note, caller=caller)  # BKB's key, another's name
        assert (status, doc["error"]) == (401, code), (caller, doc)
        assert caller in doc["message"]
    status, doc = _post(cons, "BKA", note, caller="BKZ")
    assert (status, doc["error"]) == (401, "unknown-caller") and "BKZ" in doc["message"], doc
    # an account of the bank, with its own key: not a peer
    acc = cons.accounts["BKA-000001"]
    s = Signer("BKA-000001", acc.key, codec.encode(acc.template))
    status, doc = _post(cons, "BKA", note, headers=s.headers("BKA", "POST", PATH, None, note))
    assert (status, doc["error"]) == (403, "role-denied"), doc
    _nothing_happened(cons)


def test_mutated_notes_never_get_a_5xx(cons: Consortium) -> None:
    """Notes with random bytes changed, put in or cut out, to the payer's, the payee's and a
    third bank: a 400 or a sealed answer each time; nothing ordered."""
    rng = random.Random(24)
    seeds = [codec.encode(_note(cons, "BKA-000004", "BKB-000004", 3, 990 + i)) for i in range(3)]
    seen: dict[int, int] = {}
    for i in range(150):
        b = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            op = rng.random()
            if op < 0.6:
                b[rng.randrange(len(b))] = rng.randrange(256)
            elif op < 0.8:
                b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
            else:
                del b[rng.randrange(len(b))]
        status, doc = _post(cons, BANKS3[i % 3], bytes(b), signer="BKC" if i % 3 == 1 else "BKB")
        assert status in (200, 400), doc
        if status == 200:
            codec.decode(bytes.fromhex(doc["endorsement"]), codec.ENDORSEMENT)
        seen[status] = seen.get(status, 0) + 1
    assert seen.get(400, 0) > 0, seen
    _nothing_happened(cons)


def test_the_read_routes_answer_bad_parameters_with_a_4xx(cons: Consortium) -> None:
    for path, query, status, says in [
        ("/v1/consortium/entries/zz", "", 400, "note id must be hex"),
        ("/v1/consortium/entries/" + "ab" * 2000, "", 404, "no log entry"),
        ("/v1/consortium/reports", "after=-1", 422, "after"),
        ("/v1/consortium/reports", "after=" + "9" * 40, 422, "after"),
        ("/v1/consortium/reports", "limit=1e3", 422, "limit"),
        ("/v1/consortium/checkpoints", "limit=5001", 422, "limit"),
        ("/v1/consortium/checkpoints", "after=%ff", 422, "after"),
    ]:
        h = cons.signer("BKB").headers("BKA", "GET", path, query or None)
        r = cons.http.get(cons.url("BKA") + path + ("?" + query if query else ""), headers=h)
        assert r.status_code == status and says in r.text, (path, query, r.text[:300])
    # a bank name that is none, as a filter: no checkpoints, no error
    path, query = "/v1/consortium/checkpoints", "bank=" + "B" * 3000
    h = cons.signer("BKB").headers("BKA", "GET", path, query)
    r = cons.http.get(cons.url("BKA") + path + "?" + query, headers=h)
    assert r.status_code == 200 and json.loads(r.text) == {"checkpoints": []}


def test_nothing_reached_the_log(cons: Consortium) -> None:
    """After every probe above (in any order): no bank applied, reported or booked anything."""
    _nothing_happened(cons)


def test_the_payees_bank_answers_a_peer_about_its_own_accounts(cons: Consortium) -> None:
    """A note to one of its accounts: endorsed; to an account it does not have, or of the
    largest amount: refused with the reason, or endorsed, but never a 5xx; nothing booked."""
    good = codec.encode(_note(cons, "BKA-000003", "BKB-000002", 10, 1000))
    assert _post(cons, "BKB", good, signer="BKC")[1]["verdict"] == 1
    nobody = codec.encode(_note(cons, "BKA-000003", "BKB-999999", 10, 1001))
    assert "BKB-999999" in _refusal(_post(cons, "BKB", nobody, signer="BKC")[1], "BKB")
    top = codec.encode(_note(cons, "BKA-000003", "BKB-000002", 2**63 - 1, 1002))
    for bank, signer in [("BKA", "BKB"), ("BKB", "BKC"), ("BKC", "BKB")]:
        status, doc = _post(cons, bank, top, signer=signer)
        assert status == 200 and doc["verdict"] in (0, 1), (bank, doc)
        if bank == "BKA":
            assert "cannot cover" in _refusal(doc, "BKA")
    _nothing_happened(cons)
