"""The bank node's HTTP API over real HTTP: a real `hubi bank serve` process on loopback, real
SQLite (and PostgreSQL) databases, httpx. Covers upload in every encoding, idempotency, bounce
and refusal with verifiable signed Refusals, notices, books, checkpoints and proofs, metrics,
bad input (always a 4xx JSON error, never a 5xx) and graceful shutdown.
"""

from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from hubi.bank import merkle
from hubi.bank import records as rec_mod
from hubi.bank.client import BankClient, BankError
from hubi.bank.engine import BankEngine, verify_checkpoint, verify_inclusion_proof
from hubi_core import codec, verify
from tests import bank_nodes, servers
from tests.bank_nodes import prepare_bank

# fixtures used here (pytest finds them by name in this module)
bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes
postgres_server = servers.postgres_server
postgres_db = servers.postgres_db


def _trust(world):
    from hubi import kmc

    return kmc.load_trust(world.home / "trust")


def _check_chain(book: dict) -> None:
    prev = rec_mod.ZERO32
    for r in book["records"]:
        body = bytes.fromhex(r["body"])
        assert rec_mod.chain_hash(prev, r["number"], body).hex() == r["hchain"]
        prev = bytes.fromhex(r["hchain"])


@pytest.fixture
def bka(bank_world, nodes, tmp_path):
    db = str(tmp_path / "bka.db")
    accts = prepare_bank(bank_world.home, "BKA", db, accounts=4, funds=10_000, checkpoint_every=4)
    node = nodes(bank_world.home, "BKA", db).start()
    return bank_world, node, accts, db


def test_upload_outcomes_notices_and_books(bka):
    world, node, accts, db = bka
    trust = _trust(world)
    a1, a2, a3 = accts["BKA-000001"], accts["BKA-000002"], accts["BKA-000003"]
    anyone = BankClient(node.url)

    # booked, with a SettlementNotice to the payee that verifies offline
    note = a1.note(a2.id, 2_500, serial=1, purpose="bread")
    res = anyone.upload(note)
    assert res.outcome == "booked" and not res.duplicate
    assert res.raw["debit"] == {"book": a1.id, "number": 2}
    [notice] = res.notices
    obj = codec.decode(bytes.fromhex(notice["hex"]), codec.SETTLEMENT)
    assert verify.verify_object(obj, trust).ok
    assert (obj["payee"], obj["payer"], obj["amount"]) == (a2.id, a1.id, 2_500)

    # the same note again, in every encoding: the first answer, marked duplicate
    for enc in ("raw", "hex", "base64"):
        again = anyone.upload(note, encoding=enc)
        assert again.duplicate and again.outcome == "booked"
        assert again.note_id == res.note_id and again.notices[0]["hex"] == notice["hex"]
    r = httpx.post(
        node.url + "/v1/notes", content=note.hex(), headers={"content-type": "text/plain"}
    )
    assert r.status_code == 200 and r.json()["duplicate"]

    # bounced: the payer cannot cover it; the Refusal is bank-signed and names the reason
    bounced = a3.note(a2.id, 10_001, serial=1)  # one note: another would carry a later time
    big = anyone.upload(bounced)
    assert big.outcome == "bounced" and big.reason_code == codec.REASON_INSUFFICIENT_FUNDS
    assert "10000" not in big.reason and "10,000" not in big.reason  # no balance to the payee
    ref = codec.decode(big.refusal, codec.REFUSAL)
    assert verify.verify_object(ref, trust).ok and ref["payee"] == a2.id
    assert anyone.upload(bounced).duplicate  # bounced, idempotent

    # refused: a forged field signature, and a second note with a used serial
    forged = bytearray(a1.note(a2.id, 5, serial=2))
    forged[-70] ^= 1  # inside the last field signature (lsum)
    bad = anyone.upload(bytes(forged))
    assert bad.outcome == "refused" and bad.reason_code in (
        codec.REASON_BAD_SIGNATURE,
        codec.REASON_BAD_TEMPLATE,
    )
    assert verify.verify_object(codec.decode(bad.refusal), trust).ok
    double = anyone.upload(a1.note(a3.id, 7, serial=1, purpose="again"))
    assert double.outcome == "refused" and double.reason_code == codec.REASON_DOUBLE_ISSUE

    # notices: the payer's BalanceNotice, the payee's SettlementNotice and Refusals
    payer = BankClient(node.url, a1.signer)
    kinds = [n["kind"] for n in payer.notices(a1.id)]
    assert "BalanceNotice" in kinds
    payee = BankClient(node.url, a2.signer)
    got = payee.notices(a2.id)
    settled = [n["note_id"] for n in got if n["kind"] == "SettlementNotice"]
    assert len(settled) == 2 and res.note_id in settled  # the funding note and this one
    assert "Refusal" in [n["kind"] for n in got]
    assert payee.notices(a2.id, after=got[-1]["id"]) == []

    # books: the owner reads its chain, which links record to record; balance as booked
    book = payer.book(a1.id)
    assert book["length"] == 2 and [r["record"]["kind"] for r in book["records"]] == [
        "credit",
        "debit",
    ]
    _check_chain(book)
    assert payer.account(a1.id)["balance"] == 10_000 - 2_500
    assert payer.book(a1.id, start=2, limit=1)["records"][0]["number"] == 2

    # metrics count what happened
    text = anyone.metrics()
    assert 'hubi_uploads_total{outcome="booked"}' in text
    booked = _metric(text, 'hubi_uploads_total{outcome="booked"}')
    assert booked == 5.0  # one booking + four duplicate answers
    assert _metric(text, 'hubi_uploads_total{outcome="bounced"}') == 2.0
    assert _metric(text, "hubi_booking_seconds_count") == 9  # every engine call
    assert node.health()["detail"]["register_size"] == 2 * 4 + 2


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"metric {name} not found")


def test_checkpoints_and_proofs(bka):
    world, node, accts, db = bka
    trust = _trust(world)
    a = list(accts.values())
    up = BankClient(node.url)
    for i in range(6):  # 8 funding + 12 = 20 register entries: checkpoints at 4, 8, ..., 20
        assert up.upload(a[i % 4].note(a[(i + 1) % 4].id, 10 + i, serial=i + 1)).booked
    reg = BankClient(node.url, world.regulator)
    cps = reg.checkpoints()
    assert [c["tree_size"] for c in cps] == [4, 8, 12, 16, 20]
    heads = {c["tree_size"]: verify_checkpoint(bytes.fromhex(c["object"]), trust) for c in cps}
    assert reg.latest_checkpoint()["tree_size"] == 20

    proof = reg.inclusion_proof("BKA-000002", 1)
    record = verify_inclusion_proof(proof, trust)
    assert (record.book, record.n) == ("BKA-000002", 1)
    proof8 = reg.inclusion_proof("BKA-000001", 1, tree_size=8)
    assert proof8["tree_size"] == 8 and verify_inclusion_proof(proof8, trust)

    cons = reg.consistency_proof(8, 20)
    merkle.verify_consistency(
        8, 20, [bytes.fromhex(p) for p in cons["path"]], heads[8]["root"], heads[20]["root"]
    )
    with pytest.raises(merkle.MerkleError):
        merkle.verify_consistency(
            8, 20, [bytes.fromhex(p) for p in cons["path"]], heads[4]["root"], heads[20]["root"]
        )
    with pytest.raises(BankError) as e:
        reg.consistency_proof(8, 21)
    assert e.value.status == 404 and e.value.field == "second"
    with pytest.raises(BankError) as e:
        reg.consistency_proof(9, 8)
    assert e.value.status == 422
    with pytest.raises(BankError) as e:
        reg.inclusion_proof("BKA-000001", 99)
    assert e.value.status == 404

    # the bank itself may sign a head now; the node's regulator view agrees
    me = BankClient(node.url, world.bank_signer("BKA"))
    up.upload(a[0].note(a[1].id, 1, serial=50))
    assert me.checkpoint_now()["tree_size"] == 22


BAD_INPUTS = [
    # (content-type, body, status, error code, field)
    ("application/json", b'{"hex": "zz"}', 400, "bad-hex", "hex"),
    ("application/json", b'{"hex": "abc"}', 400, "bad-hex", "hex"),
    ("application/json", b'{"hex": 5}', 400, "bad-hex", "hex"),
    ("application/json", b'{"base64": "!!!"}', 400, "bad-base64", "base64"),
    ("application/json", b'{"hex": "00", "base64": "AA=="}', 400, "bad-json", None),
    ("application/json", b'{"note": "00"}', 400, "bad-json", "note"),
    ("application/json", b"[1, 2]", 400, "bad-json", None),
    ("application/json", b"{nope", 400, "bad-json", None),
    ("application/json", b"[" * 30_000 + b"]" * 30_000, 400, "bad-json", None),  # was 500
    ("application/octet-stream", b"", 400, "empty-body", None),
    ("application/octet-stream", b"\x01\x63\x01", 400, "unknown-kind", None),
    ("application/octet-stream", b"\x07\x03\x01", 400, "bad-object", None),
    ("application/octet-stream", b"\x01\x03\x01\x05BKA-1", 400, "bad-object", None),
    ("text/plain", b"not hex", 400, "bad-hex", None),
    ("image/png", b"\x89PNG", 415, "unsupported-media-type", "Content-Type"),
]


def test_bad_input_is_a_clear_4xx(bka):
    world, node, accts, db = bka
    with httpx.Client(base_url=node.url, timeout=10) as http:
        for ctype, body, status, code, fld in BAD_INPUTS:
            r = http.post("/v1/notes", content=body, headers={"content-type": ctype})
            assert r.status_code == status, (ctype, body, r.text)
            doc = r.json()
            assert doc["error"] == code and doc["message"], (body, doc)
            assert doc["field"] == fld, (body, doc)
        # a Template is a valid object but not something one uploads
        tpl = codec.encode(accts["BKA-000001"].template)
        r = http.post("/v1/notes", content=tpl)
        assert r.status_code == 400 and r.json()["error"] == "unsupported-kind"
        # an interbank note: not this endpoint's business before the consortium path
        other = accts["BKA-000001"].note("BKB-000001", 5, serial=9)
        r = http.post("/v1/notes", content=other)
        assert r.status_code == 409 and r.json()["error"] == "not-local"
        # oversize: declared, and streamed without a Content-Length
        r = http.post("/v1/notes", content=b"\x01" * 70_000)
        assert r.status_code == 413 and r.json()["error"] == "body-too-large"

        def chunks():
            for _ in range(40):
                yield b"\x01" * 4096

        r = http.post("/v1/notes", content=chunks())
        assert r.status_code == 413 and r.json()["error"] == "body-too-large"
        # routes and methods that do not exist, parameters out of range
        r = http.get("/v1/nothing")
        assert r.status_code == 404 and r.json()["error"] == "not-found"
        r = http.delete("/v1/notes")
        assert r.status_code == 405 and r.json()["error"] == "method-not-allowed"
        r = http.get("/v1/accounts/BKA-000001/book", params={"limit": "0"})
        assert r.status_code == 401 and r.json()["error"] == "unsigned"
        reg = BankClient(node.url, world.regulator)
        with pytest.raises(BankError) as e:
            reg.book("BKA-000001", limit=0)
        assert (e.value.status, e.value.code, e.value.field) == (422, "bad-parameter", "limit")
        with pytest.raises(BankError) as e:
            reg.book("not-an account")
        assert (e.value.status, e.value.field) == (422, "account")
        # nothing above was a server error
        text = http.get("/metrics").text
        assert 'hubi_http_errors_total{code="internal"}' not in text
        assert _metric(text, 'hubi_uploads_total{outcome="invalid"}') >= 8
    assert "Traceback" not in node.log_text()


def test_openapi_and_health(bka):
    world, node, accts, db = bka
    doc = httpx.get(node.url + "/openapi.json").json()
    paths = set(doc["paths"])
    for p in (
        "/v1/notes",
        "/v1/accounts/{account}/notices",
        "/v1/accounts/{account}/book",
        "/v1/audit",
        "/v1/checkpoints",
        "/v1/proofs/inclusion",
        "/v1/proofs/consistency",
        "/v1/backup/records",
        "/v1/replication/log",
        "/health",
        "/metrics",
    ):
        assert p in paths, p
    upload = doc["paths"]["/v1/notes"]["post"]["requestBody"]["content"]
    assert {"application/octet-stream", "application/json"} <= set(upload)
    h = node.health()
    assert h["status"] == "ok" and h["bank"] == "BKA" and h["role"] == "primary"
    assert h["detail"]["store"] == "sqlite" and h["detail"]["checkpoint_every"] == 4
    # --checkpoint-every is kept in the database: a restart with the flag changes it
    assert node.stop() == 0
    node.extra = ["--checkpoint-every", "3"]
    node.start()
    assert node.health()["detail"]["checkpoint_every"] == 3


def test_postgres_node_and_graceful_shutdown(bank_world, nodes, postgres_db):
    accts = prepare_bank(bank_world.home, "BKA", postgres_db, accounts=3, funds=1_000)
    node = nodes(bank_world.home, "BKA", postgres_db).start()
    a1, a2 = accts["BKA-000001"], accts["BKA-000002"]
    c = BankClient(node.url)
    assert c.health()["detail"]["store"] == "postgresql"
    assert "***" in c.health()["detail"]["database"] or "@" not in postgres_db
    note = a1.note(a2.id, 400, serial=1)  # one note: another would carry a later time
    first = c.upload(note)
    assert first.booked
    assert c.upload(note).duplicate
    assert c.upload(a1.note(a2.id, 700, serial=2)).outcome == "bounced"

    # SIGTERM while uploads are in flight: every answered upload is booked, exit status 0
    answered: list[str] = []
    stop = threading.Event()

    def stream(payer, payee, base):
        cl = BankClient(node.url, timeout=10)
        for k in range(base, base + 200):
            if stop.is_set():
                return
            try:
                r = cl.upload(payer.note(payee.id, 1, serial=k))
            except Exception:
                return
            if r.booked:
                answered.append(r.note_id)

    t = threading.Thread(target=stream, args=(a2, a1, 10))
    t.start()
    deadline = time.monotonic() + 60  # uploads under way, some answered (a loaded machine is slow)
    while not answered and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert answered, "no upload was answered before the shutdown"
    assert node.stop() == 0
    stop.set()
    t.join(10)
    assert answered, "no upload was answered before the shutdown"
    assert "stopped (SIGTERM)" in node.log_text()
    assert "Traceback" not in node.log_text()
    with BankEngine.open(postgres_db, home=bank_world.home, bank="BKA") as eng:
        for nid in answered:
            assert eng.outcome(bytes.fromhex(nid)).ok
    node.start()
    assert BankClient(node.url, a2.signer).book(a2.id)["length"] == 2 + len(answered)


def test_upload_json_base64_roundtrip(bka):
    world, node, accts, db = bka
    note = accts["BKA-000001"].note("BKA-000002", 3, serial=1)
    r = httpx.post(node.url + "/v1/notes", json={"base64": base64.b64encode(note).decode()})
    assert r.status_code == 200 and r.json()["outcome"] == "booked"
    assert Path(db).exists()


@pytest.mark.parametrize(
    ("impl", "stack"), [("auto", "uvloop + httptools"), ("plain", "asyncio + h11")]
)
def test_both_http_stacks_serve_the_api(bank_world, nodes, tmp_path, impl, stack):
    """`--http-impl auto` runs on uvloop and httptools (installed with hubi), `plain` on asyncio
    and h11; the API answers the same on both, keep-alive and bad requests included."""
    db = str(tmp_path / "bka.db")
    accts = prepare_bank(bank_world.home, "BKA", db, accounts=2, funds=1_000)
    node = nodes(bank_world.home, "BKA", db, extra=["--http-impl", impl]).start()
    assert f"HTTP on {stack}" in node.log_text()
    a1 = accts["BKA-000001"]
    with httpx.Client(base_url=node.url, timeout=10) as c:  # one keep-alive connection
        for k in range(1, 4):
            r = c.post(
                "/v1/notes",
                content=a1.note("BKA-000002", 10 * k, serial=k),
                headers={"content-type": "application/octet-stream"},
            )
            assert r.status_code == 200 and r.json()["outcome"] == "booked", r.text
        bad = c.post(
            "/v1/notes",
            content=b"\x01garbage",
            headers={"content-type": "application/octet-stream"},
        )
        assert bad.status_code == 400 and bad.json()["message"], bad.text
        assert c.get("/health").json()["status"] == "ok"
    with BankEngine.open(db, home=bank_world.home, bank="BKA") as eng:
        assert eng.balance("BKA-000002") == 1_000 + 60
    # a request whose header never ends: httptools buffered it all (a 200 MB header took 250 MB
    # of the node's memory); both stacks now refuse it past 64 KiB and close the connection
    rss = _rss_kb(node.pid)
    status = _endless_header(node.port, megabytes=64)
    assert status == (b"431" if impl == "auto" else b"400"), status
    assert _rss_kb(node.pid) - rss < 16 * 1024, (rss, _rss_kb(node.pid))
    with httpx.Client(base_url=node.url, timeout=10) as c:  # a long but bounded one is served
        ok = c.get("/health", headers={"x-hubi-template": "a" * 30_000})
        assert ok.status_code == 200 and ok.json()["status"] == "ok"
    # a body that arrives in one chunk with the head is not part of the head (it was counted
    # as one: an 80 KB upload got "431 request headers over 65536 bytes", not 413)
    body = b"\x01" * 80_000
    head = b"POST /v1/notes HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
    assert _status_of(node.port, head + b"Content-Length: 80000\r\n\r\n" + body) == b"413"


def test_a_request_that_does_not_arrive_in_time_is_dropped(bank_world, nodes, tmp_path):
    """uvicorn times out only idle kept-alive connections: a client that connected and said
    nothing, or sent its head a byte at a time (slowloris), held its connection for good (1,000
    such held 1,000 of the node's descriptors). A request now has --request-timeout seconds to
    arrive: 408 and the connection closed; a request in time is served as before."""
    import socket

    db = str(tmp_path / "bka.db")
    prepare_bank(bank_world.home, "BKA", db, accounts=1, funds=1_000)
    node = nodes(bank_world.home, "BKA", db, extra=["--request-timeout", "1"]).start()

    def held(first: bytes, then: bytes = b"", every: float = 0.3) -> tuple[bytes, float]:
        """What the node says to a client that sends `first`, then a byte of `then` every
        `every` seconds, and how long until it closed the connection."""
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", node.port), timeout=10) as s:
            s.sendall(first)
            said = b""
            s.settimeout(every)
            for i in range(100):
                try:
                    got = s.recv(4096)
                except TimeoutError:
                    if i < len(then):
                        s.sendall(then[i : i + 1])
                    continue
                if not got:
                    break
                said += got
            return said, time.monotonic() - t0

    # without the limit each exchange lasts the client's 100 x 0.3 s = 30 s; 15 s leaves room
    # for a loaded machine
    def in_time() -> str:
        with httpx.Client(base_url=node.url, timeout=10) as c:  # in time: served, kept alive
            assert c.get("/health").json()["status"] == "ok"
            time.sleep(1.5)  # idle between requests is uvicorn's keep-alive (5 s), not ours
            return c.get("/health").json()["status"]

    # the clients at once (each connection's timeout is its own): one wait, not four
    with ThreadPoolExecutor(4) as pool:
        silent = pool.submit(held, b"")  # connected, said nothing
        slowloris = pool.submit(held, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"a" * 100)
        # a body that trickles: the app has the request already, so no answer, just the close
        trickle = pool.submit(
            held, b"POST /v1/notes HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", b"x" * 100
        )
        served = pool.submit(in_time)
        said, took = silent.result()
        assert said.startswith(b"HTTP/1.1 408 ") and 0.9 < took < 15, (said, took)
        said, took = slowloris.result()
        assert said.startswith(b"HTTP/1.1 408 ") and 0.9 < took < 15, (said, took)
        said, took = trickle.result()
        assert said == b"" and 0.9 < took < 15, (said, took)
        assert served.result() == "ok"
    assert "did not arrive within 1 s" in node.log_text()


def _rss_kb(pid: int | None) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _status_of(port: int, request: bytes) -> bytes:
    """The status code the node answers to `request`, sent in one write."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(request)
        return s.recv(200).split(b" ")[1]


def _endless_header(port: int, megabytes: int) -> bytes:
    """Send a request whose one header is `megabytes` long (or until the node hangs up); the
    status code the node answered."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(megabytes):
                s.sendall(b"a" * (1 << 20))
        except OSError:  # the node closed the connection: what is asserted
            pass
        try:
            return s.recv(200).split(b" ")[1]
        except (OSError, IndexError):
            return b"no answer"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--port", "99999"], "'--port': 99999 is not in the range 0<=x<=65535"),
        (["--port", "-1"], "'--port': -1 is not in the range"),
        (["--grace", "nan"], "'--grace': 'nan' is not a finite number of seconds"),
        (["--grace", "-1"], "'--grace': -1.0 is not in the range x>=0.0"),
        (["--replica-of", "primary:8700"], "is not an http:// or https:// URL"),
    ],
)
def test_serve_refuses_a_bad_option_before_it_starts(bank_world, args, words):
    """--port 99999 listened on 34463 (the kernel keeps 16 bits) while uvicorn announced 99999;
    a replica of 'primary:8700' ran and failed every pull. Now each is a usage error."""
    from click.testing import CliRunner

    from hubi.bank.server import serve_command

    home = ["--home", str(bank_world.home), "--bank", "BKA"]
    result = CliRunner().invoke(serve_command, [*home, *args])
    assert result.exit_code == 2 and words in result.output, result.output


def test_serve_names_the_address_it_cannot_listen_on(bank_world, nodes, tmp_path):
    """A port already taken: the node exits non-zero, says which address, writes no ready file."""
    import subprocess

    db = str(tmp_path / "bka.db")
    prepare_bank(bank_world.home, "BKA", db, accounts=1, funds=0)
    first = nodes(bank_world.home, "BKA", db).start()
    other = str(tmp_path / "bka-other.db")  # its own books: one node serves a database
    prepare_bank(bank_world.home, "BKA", other, accounts=1, funds=0)
    ready = tmp_path / "second.json"
    argv = bank_nodes.serve_argv(bank_world.home, "BKA", first.port, ready, "info", [])
    proc = subprocess.run(
        [*argv, "--db", other],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode != 0
    assert f"bank BKA could not listen on 127.0.0.1 port {first.port}" in proc.stderr
    assert "address already in use" in proc.stderr and not ready.exists()
    assert httpx.get(f"{first.url}/health", timeout=10).json()["status"] == "ok"
