"""Signed requests and roles against a real bank node process (DESIGN §5).

A customer reads its own book and notices only; a regulator reads any book and runs audits but
writes nothing; a peer bank reads no books; the bank itself may do operator writes. Unsigned,
forged, replayed, stale, misaddressed and unknown-caller requests are refused with a 4xx JSON
error that names the problem.
"""

from __future__ import annotations

import hashlib
import time

import httpx
import pytest

from hubi.bank import auth
from hubi.bank.auth import Signer
from hubi.bank.client import BankClient, BankError
from hubi_core import codec, suite
from tests.bank_nodes import NodeProcess, copy_world, prepare_bank

# one worker builds the module's nodes (not each worker again)
pytestmark = pytest.mark.xdist_group("test_bank_roles")

BOOK = "/v1/accounts/{}/book"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """One node for the module (its state only grows: tests read, and write only where the
    role is refused, or checkpoints)."""
    base = tmp_path_factory.mktemp("roles")
    world = copy_world(base / "home")
    db = str(base / "bka.db")
    accts = prepare_bank(world.home, "BKA", db, accounts=3, funds=5_000)
    n = NodeProcess(world.home, "BKA", db, extra=["--access-log"]).start()
    c = BankClient(n.url)
    assert c.upload(accts["BKA-000001"].note("BKA-000002", 100, serial=1)).booked
    yield world, n, accts
    n.close()


def _err(fn, *args, **kw) -> BankError:
    with pytest.raises(BankError) as e:
        fn(*args, **kw)
    return e.value


def test_customer_sees_only_its_own_book_and_notices(node):
    world, n, accts = node
    a1, a2 = accts["BKA-000001"], accts["BKA-000002"]
    me = BankClient(n.url, a1.signer)
    assert me.book(a1.id)["length"] == 2
    assert me.notices(a1.id)
    assert me.account(a1.id)["balance"] == 4_900
    for call in (me.book, me.notices, me.account):
        e = _err(call, a2.id)
        assert (e.status, e.code) == (403, "role-denied")
        assert a1.id in e.message and a2.id in e.message
    # customers write nothing and read nothing bank-wide
    assert _err(me.audit).code == "role-denied"
    assert _err(me.records, [(a1.id, 1)]).code == "role-denied"
    assert _err(me.replication_log, 0).code == "role-denied"
    assert _err(me.checkpoint_now).code == "role-denied"
    assert _err(me.open_account, codec.encode(a2.template)).code == "role-denied"


def test_regulator_reads_any_book_but_cannot_write(node):
    world, n, accts = node
    reg = BankClient(n.url, world.regulator)
    for acct in accts:
        assert reg.book(acct)["records"]
        assert reg.account(acct)["account"] == acct
    assert reg.records([("BKA-000001", 1)])[0]["number"] == 1  # hot-backup records: allowed
    report = reg.audit()  # verify chains: every link of every book
    assert report["ok"] and report["records"] >= 8, report["summary"]
    assert reg.audit(books=["BKA-000001"], chain_only=True)["ok"]
    # writes: refused by role, whatever they carry
    e = _err(reg.checkpoint_now)
    assert (e.status, e.code) == (403, "role-denied") and "regulator" in e.message
    assert _err(reg.open_account, codec.encode(accts["BKA-000003"].template)).code == "role-denied"
    assert _err(reg.replication_log, 0).code == "role-denied"  # the bank's own backup only
    # a regulator reads no one's notices (those are the customer's)
    assert _err(reg.notices, "BKA-000001").code == "role-denied"


def test_peer_bank_and_self(node):
    world, n, accts = node
    peer = BankClient(n.url, world.bank_signer("BKB"))
    e = _err(peer.book, "BKA-000001")
    assert (e.status, e.code) == (403, "role-denied") and "peer-bank" in e.message
    assert _err(peer.records, [("BKA-000001", 1)]).code == "role-denied"
    me = BankClient(n.url, world.bank_signer("BKA"))
    assert me.book("BKA-000001")["length"] == 2
    assert me.replication_log(0)["records"]
    assert me.checkpoint_now()["tree_size"] >= 8


def _signed_get(n, signer: Signer, path: str, bank: str = "BKA", **over) -> httpx.Response:
    h = signer.headers(bank, "GET", path)
    h.update(over)
    return httpx.get(n.url + path, headers=h, timeout=10)


def test_unsigned_forged_replayed_stale_requests(node):
    world, n, accts = node
    a1, a2 = accts["BKA-000001"], accts["BKA-000002"]
    path = BOOK.format(a1.id)

    def expect(r: httpx.Response, status: int, code: str, field: str | None = None) -> dict:
        assert r.status_code == status, r.text
        doc = r.json()
        assert doc["error"] == code, doc
        if field is not None:
            assert doc["field"] == field, doc
        return doc

    # unsigned, or partly signed
    doc = expect(httpx.get(n.url + path), 401, "unsigned", "X-Hubi-Caller")
    assert "X-Hubi-Signature" in doc["message"]
    h = a1.signer.headers("BKA", "GET", path)
    del h["X-Hubi-Nonce"]
    expect(httpx.get(n.url + path, headers=h), 401, "unsigned", "X-Hubi-Nonce")

    # malformed headers
    expect(_signed_get(n, a1.signer, path, **{"X-Hubi-Signature": "zz"}), 400, "bad-header")
    expect(_signed_get(n, a1.signer, path, **{"X-Hubi-Nonce": "short"}), 400, "bad-header")
    expect(_signed_get(n, a1.signer, path, **{"X-Hubi-Time": "yesterday"}), 400, "bad-header")
    # '²' (latin-1 0xB2) is a digit to str.isdigit() and not to int(): that answered 500
    expect(_signed_get(n, a1.signer, path, **{"X-Hubi-Time": b"\xb2"}), 400, "bad-header")

    # forged: signed by someone else's key, a tampered signature, another path than signed
    thief = Signer(a1.id, a2.private)
    expect(_signed_get(n, thief, path), 401, "bad-signature", "X-Hubi-Signature")
    h = a1.signer.headers("BKA", "GET", path)
    sig = bytearray(bytes.fromhex(h["X-Hubi-Signature"]))
    sig[5] ^= 0x40
    h["X-Hubi-Signature"] = sig.hex()
    expect(httpx.get(n.url + path, headers=h), 401, "bad-signature")
    h = a1.signer.headers("BKA", "GET", path)
    expect(httpx.get(n.url + BOOK.format(a2.id), headers=h), 401, "bad-signature")
    h = a1.signer.headers("BKA", "GET", path, "from=1")
    expect(httpx.get(n.url + path, params={"from": "2"}, headers=h), 401, "bad-signature")

    # misaddressed: a request signed for bank BKB is not valid at BKA
    expect(_signed_get(n, a1.signer, path, bank="BKB"), 401, "bad-signature")

    # replayed: the same signed request twice
    h = a1.signer.headers("BKA", "GET", path)
    assert httpx.get(n.url + path, headers=h).status_code == 200
    expect(httpx.get(n.url + path, headers=h), 401, "replayed-nonce", "X-Hubi-Nonce")

    # stale or from the future
    old = a1.signer.headers("BKA", "GET", path, now=time.time() - 3600)
    doc = expect(httpx.get(n.url + path, headers=old), 401, "stale-timestamp", "X-Hubi-Time")
    assert "behind" in doc["message"]
    future = a1.signer.headers("BKA", "GET", path, now=time.time() + 3600)
    assert (
        "ahead"
        in expect(httpx.get(n.url + path, headers=future), 401, "stale-timestamp")["message"]
    )

    # unknown callers: an account the bank never opened, a made-up bank
    stranger = Signer("BKA-999999", a1.private)
    expect(_signed_get(n, stranger, BOOK.format("BKA-999999")), 401, "unknown-caller")
    expect(_signed_get(n, Signer("ZZZ", a1.private), path), 401, "unknown-caller")
    expect(_signed_get(n, Signer("bad id!", a1.private), path), 401, "unknown-caller")

    # a body signed over other bytes
    body = b'{"records": [{"book": "BKA-000001", "number": 1}]}'
    me = world.bank_signer("BKA")
    h = me.headers("BKA", "POST", "/v1/backup/records", body=body + b" ")
    h["content-type"] = "application/json"
    expect(httpx.post(n.url + "/v1/backup/records", content=body, headers=h), 401, "bad-signature")
    h = me.headers("BKA", "POST", "/v1/backup/records", body=body)
    h["content-type"] = "application/json"
    assert httpx.post(n.url + "/v1/backup/records", content=body, headers=h).status_code == 200
    huge = b'{"records": [{"book": "BKA-000001", "number": %d}]}' % 2**63  # was 500
    h = me.headers("BKA", "POST", "/v1/backup/records", body=huge)
    h["content-type"] = "application/json"
    r = httpx.post(n.url + "/v1/backup/records", content=huge, headers=h)
    assert "1 <= n <= 2^62" in expect(r, 422, "bad-parameter", "records.0")["message"]
    assert "Traceback" not in n.log_text()


def test_presented_template(node):
    """A caller may present its Template; it must be sealed by a consortium bank and match."""
    world, n, accts = node
    a1 = accts["BKA-000001"]
    presenting = Signer(a1.id, a1.private, codec.encode(a1.template))
    assert BankClient(n.url, presenting).book(a1.id)["length"] == 2
    # a template for another account does not vouch for this caller
    other = Signer(a1.id, a1.private, codec.encode(accts["BKA-000002"].template))
    r = _signed_get(n, other, BOOK.format(a1.id))
    assert r.status_code == 200  # the bank's own record of a1's template wins
    # an account the bank does not know, with a forged (self-made) template
    fake = codec.make_template("BKA", 1, 0, "BKA-777777", "CNY", a1.template["key"])
    fake.sigs["seal"] = suite.sign(a1.private, codec.field_message(fake, "seal"))
    forged = Signer("BKA-777777", a1.private, codec.encode(fake))
    r = _signed_get(n, forged, BOOK.format("BKA-777777"))
    assert r.status_code == 401 and r.json()["error"] == "bad-template"
    r = _signed_get(
        n, Signer("BKA-777777", a1.private), BOOK.format("BKA-777777"), **{"X-Hubi-Template": "zz"}
    )
    assert r.status_code == 400 and r.json()["error"] == "bad-template"


def test_canonical_request_is_stable():
    """The string a client signs, as documented in docs/bank-api.md."""
    msg = auth.canonical_request(
        "BKA",
        "get",
        "/v1/accounts/BKA-000001/book",
        "limit=5&from=1&x=a b",
        hashlib.sha256(b"").hexdigest(),
        "1760000000",
        "0123456789abcdef",
        "BKA-000001",
    )
    assert msg == (
        b"hubi-request/1\nBKA\nGET\n/v1/accounts/BKA-000001/book\nfrom=1&limit=5&x=a%20b\n"
        b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n1760000000\n"
        b"0123456789abcdef\nBKA-000001"
    )


def test_logs_hold_no_keys_nor_signatures(node):
    """The node's log (with the access log on) never shows keys, signatures or bodies."""
    world, n, accts = node
    me = BankClient(n.url, accts["BKA-000001"].signer)
    h = accts["BKA-000001"].signer.headers("BKA", "GET", BOOK.format("BKA-000001"))
    assert httpx.get(n.url + BOOK.format("BKA-000001"), headers=h).status_code == 200
    me.book("BKA-000001")
    text = n.log_text()
    assert "GET /v1/accounts/BKA-000001/book" in text  # the access log is on
    secrets = [a.private.to_bytes(32, "big").hex() for a in accts.values()]
    secrets += [
        world.bank_signer("BKA").private.to_bytes(32, "big").hex(),
        world.regulator.private.to_bytes(32, "big").hex(),
        (world.home / "banks" / "BKA" / "treasury.secret").read_bytes()[:32].hex(),
    ]
    for s in secrets + [h["X-Hubi-Signature"], h["X-Hubi-Nonce"]]:
        assert s not in text and s.upper() not in text
    assert str(int.from_bytes(bytes.fromhex(secrets[0]), "big")) not in text
