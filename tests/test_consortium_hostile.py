"""Hostile inputs to the consortium: values in the ordered log that a writer with etcd access
puts there (deeply nested JSON, entries that are no note, overwrites), a bank's damaged state
and configuration files, a peer that dribbles or sends hostile error text, and command-line
input that names no bank. Real etcd, real bank node processes, real files and sockets."""

from __future__ import annotations

import json
import secrets
import socket
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hubi.bank.auth import bank_signer
from hubi.cli import main
from hubi.consortium import entries as ent
from hubi.consortium import service
from hubi.consortium.errors import ConsortiumError, PeerError
from hubi.consortium.state import ConsortiumState
from hubi.consortium.transport import HttpPeerTransport
from hubi.infra.etcd_client import Etcd
from hubi.infra.http_pool import HttpFailure, HttpPool, HttpReplyTooLarge, HttpTimeout
from hubi_core import codec, lsum
from hubi_core.consortium import Consortium as ConsortiumFile
from hubi_core.errors import BadValue
from tests.consortium_support import Consortium, make_home
from tests.servers import etcd_cluster  # noqa: F401

# one worker builds the module's nodes (not each worker again)
pytestmark = pytest.mark.xdist_group("test_consortium_hostile")

BANKS3 = ["BKA", "BKB", "BKC"]


@pytest.fixture(scope="module")
def cons(etcd_cluster, tmp_path_factory) -> Consortium:  # noqa: F811
    c = Consortium(tmp_path_factory.mktemp("hostile"), etcd_cluster.client_urls, BANKS3)
    c.start()
    try:
        yield c
    finally:
        c.close()


def _nid(note: bytes) -> bytes:
    obj = codec.decode(note, codec.NOTE)
    return lsum.note_id(obj.signer, obj.serial)


def _put_first(c: Consortium, key: bytes, value: bytes) -> int:
    """What a hostile writer with etcd access does: take a log key first."""
    with Etcd(c.etcd_urls) as etcd:
        res = etcd.create_if_absent(c.prefix + key, value)
        assert res.created
        return res.revision


def _wait_applied(c: Consortium, revision: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        st = {b: c.status(b) for b in c.banks}
        if all(s["applied_revision"] >= revision for s in st.values()):
            return
        assert time.monotonic() < deadline, {
            b: (s["applied_revision"], s["last_error"]) for b, s in st.items()
        }
        time.sleep(0.2)


# ------------------------------------------------------------------ the ordered log


def test_deeply_nested_entries_are_rejected_and_every_bank_goes_on(cons: Consortium) -> None:
    """b"[" * 5000 under one note key and endorsements nested 3,000 deep under another: every
    bank rejects both as bad entries (it used to retry them for ever, RecursionError), reports
    them alike, stays healthy, and the next note settles."""
    deep = secrets.token_bytes(32)
    rev1 = _put_first(cons, ent.note_key(deep), b"[" * 5000)
    other = secrets.token_bytes(32)
    nested = b'{"v":1,"type":"note","endorsements":' + b"[" * 3000 + b"]" * 3000 + b"}"
    rev2 = _put_first(cons, ent.note_key(other), nested)
    _wait_applied(cons, rev2)
    note = cons.accounts["BKA-000001"].note("BKB-000001", 5)
    r = cons.upload("BKB", note)
    assert r.status_code == 200 and r.json()["outcome"] == "booked", r.text
    cons.wait_caught_up()
    for b in cons.banks:
        reports = {(x["revision"], x["kind"]) for x in cons.reports(b)}
        assert (rev1, "bad-entry") in reports and (rev2, "bad-entry") in reports, (b, reports)
        row = cons.get(b, f"/v1/consortium/entries/{deep.hex()}")
        assert row["state"] == "rejected" and "nested too deep" in row["reason"], row
        health = cons.http.get(cons.url(b) + "/health").json()
        assert health["status"] == "ok", health
        assert health["detail"]["consortium"]["last_error"] is None, health


def test_a_note_key_taken_by_what_is_no_note_burns_the_id_for_good(cons: Consortium) -> None:
    """`{}` under a real note's key, and deep JSON under another's: the upload is answered as
    every bank applies the entry (refused, the id burnt, naming why), not as a double issue by
    "?" and not with HTTP 500; every bank keeps the id as rejected, so the answer stays the
    same after the log forgets the bad key."""
    acc = cons.accounts
    note = acc["BKA-000002"].note("BKB-000002", 43)
    nid = _nid(note)
    rev = _put_first(cons, ent.note_key(nid), b"{}")
    before = cons.balance("BKA-000002")
    r = cons.upload("BKB", note)
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["outcome"] == "refused" and first["status"] == "rejected", first
    assert "double issuance" not in first["reason"] and "version" in first["reason"], first
    _wait_applied(cons, rev)  # the upload is answered by BKB; the others apply in their time
    for b in cons.banks:
        row = cons.get(b, f"/v1/consortium/entries/{nid.hex()}")
        assert row["state"] == "rejected" and row["revision"] == rev, (b, row)
    # the log forgets the bad key (every bank applied it): the id stays burnt
    with Etcd(cons.etcd_urls) as etcd:
        deadline = time.monotonic() + 60
        while etcd.get(cons.prefix + ent.note_key(nid)) is not None:
            assert time.monotonic() < deadline, "the log did not forget the key"
            time.sleep(0.3)
    again = cons.upload("BKB", note).json()
    assert (again["outcome"], again["status"]) == ("refused", "rejected"), again
    assert again["reason"] == first["reason"], again
    assert cons.balance("BKA-000002") == before

    deep_note = acc["BKA-000003"].note("BKB-000003", 4)
    _put_first(cons, ent.note_key(_nid(deep_note)), b"[" * 5000)
    r = cons.upload("BKB", deep_note)
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "refused" and "nested too deep" in r.json()["reason"], r.text
    cons.wait_caught_up()


def test_an_overwritten_log_key_is_reported_by_every_bank(cons: Consortium) -> None:
    key = ent.note_key(secrets.token_bytes(32))
    _put_first(cons, key, b'{"v":1,"type":"note"}')
    with Etcd(cons.etcd_urls) as etcd:
        rev2 = etcd.put(cons.prefix + key, b'{"v":1,"type":"note","again":1}')
    deadline = time.monotonic() + 60
    for b in cons.banks:
        while not any(
            x["kind"] == "overwritten-key" and x["revision"] == rev2 for x in cons.reports(b)
        ):
            assert time.monotonic() < deadline, (b, cons.reports(b)[-5:])
            time.sleep(0.2)
    assert "written again" in cons.nodes["BKA"].log_text()


# ------------------------------------------------------------------ damaged files


def _state(tmp_path: Path) -> Path:
    path = tmp_path / "consortium.db"
    st = ConsortiumState(path, "etcd:hubi/x/")
    with st.apply(1, b"log/n/00", b"{}", "n:rejected") as tx:
        tx.report(1, "bad-entry", "?", None, "test")
    st.close()
    return path


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ("UPDATE meta SET value = 'abc' WHERE key = 'applied_revision'", "applied_revision"),
        ("UPDATE meta SET value = 'zz' WHERE key = 'log_hash'", "log_hash"),
        ("DROP TABLE entries", "entries missing"),
        (
            "INSERT INTO entries VALUES (x'01', 1, x'02', 'a', 'b', 1, 1, 'BKA', '[x', "
            "'settled', NULL, NULL, NULL, NULL, NULL, x'00', 1)",
            "entry 01",
        ),
    ],
)
def test_a_damaged_consortium_state_is_refused_naming_the_file(
    tmp_path: Path, damage: str, named: str
) -> None:
    path = _state(tmp_path)
    with sqlite3.connect(path) as db:
        db.execute(damage)
    with pytest.raises(ConsortiumError) as exc:
        ConsortiumState(path, "etcd:hubi/x/")
    assert str(path) in str(exc.value) and named in str(exc.value), exc.value
    with sqlite3.connect(path) as db:  # nothing was re-created over the damage
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    assert ("entries" in tables) == ("DROP" not in damage)


@pytest.mark.parametrize(
    ("orderer", "named"),
    [
        ({"kind": "etcd", "prefix": 123}, "prefix must be a string"),
        ({"kind": "bogus"}, "kind must be"),
        ({"kind": "etcd", "extra": 1}, "unknown key"),
    ],
)
def test_the_consortium_files_orderer_is_checked(orderer: dict, named: str) -> None:
    with pytest.raises(BadValue, match=named):
        ConsortiumFile("x", [], orderer=orderer)


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b'{"orderer": "etcd", "etcd": ' + b"[" * 5000 + b"}", "nested too deep"),
        (b"\xff\xfe\x00binary", "not UTF-8"),
        (b'{"orderer": "etcd", "etcd": ["http://127.0.0.1:99999"]}', "etcd[0]"),
        (b'{"orderer": "etcd", "etcd": ["http://"]}', "etcd[0]"),
        (b'{"orderer": "etcd", "etcd": ["http://a"], "peers": {"BKB": "http:///x"}}', "BKB"),
    ],
)
def test_a_damaged_node_config_names_the_file_and_field(
    tmp_path: Path, content: bytes, named: str
) -> None:
    make_home(tmp_path / "home", BANKS3)
    path = service.config_path(tmp_path / "home", "BKA")
    path.write_bytes(content)
    with pytest.raises(ConsortiumError) as exc:
        service.load_config(tmp_path / "home", "BKA", None)  # type: ignore[arg-type]
    assert str(path) in str(exc.value) and named in str(exc.value), exc.value


@pytest.mark.parametrize("banks", ["", ",,,"])
def test_init_without_banks_is_a_usage_error_and_writes_nothing(tmp_path: Path, banks: str) -> None:
    home = tmp_path / "home"
    r = CliRunner().invoke(main, ["consortium", "init", "--home", str(home), "--banks", banks])
    assert r.exit_code == 2 and "--banks" in r.output and "names no bank" in r.output, r.output
    assert not home.exists() or not any(home.iterdir())


def test_init_names_the_bank_listed_twice(tmp_path: Path) -> None:
    home = tmp_path / "home"
    r = CliRunner().invoke(
        main, ["consortium", "init", "--home", str(home), "--banks", "BKB,BKA,BKC,BKA"]
    )
    assert r.exit_code == 2 and "listed twice: BKA" in r.output, r.output
    assert not home.exists() or not any(home.iterdir())


# ------------------------------------------------------------------ peers


class _Dribble(BaseHTTPRequestHandler):
    """A peer that answers one byte every 0.3 s, for 30 s."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "100")
        self.end_headers()
        for _ in range(100):
            try:
                self.wfile.write(b" ")
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.3)

    def log_message(self, *args: Any) -> None:
        pass


class _Hostile(BaseHTTPRequestHandler):
    """A peer whose error reply carries 60 KB of text with terminal escapes."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", 0)))
        msg = "\x1b]0;pwned\x07\x1b[2J" + "A" * 60_000 + "\u202e"
        body = json.dumps({"error": "bad\x1b[31m", "message": msg}).encode()
        self.send_response(500)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def test_a_dribbling_peer_is_given_up_at_the_deadline(tmp_path: Path) -> None:
    """The timeout is for the whole exchange, not per read; closing the pool wakes an
    exchange still under way (a stopping node does not wait for it)."""
    server = _serve(_Dribble)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        pool = HttpPool(url)
        t0 = time.monotonic()
        with pytest.raises(HttpTimeout):
            pool.post("/v1/consortium/validate", b"n", {}, timeout=1.5)
        # per read, the exchange would last the peer's 30 s; 10 s is room for a loaded machine
        assert time.monotonic() - t0 < 10.0

        make_home(tmp_path / "home", BANKS3)
        transport = HttpPeerTransport(bank_signer(tmp_path / "home", "BKA"), {"BKB": url})
        done: list[BaseException] = []

        def ask() -> None:
            try:
                transport.validate("BKB", b"note", 60.0)
            except BaseException as exc:  # noqa: BLE001
                done.append(exc)

        t = threading.Thread(target=ask)
        t.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        transport.close()
        t.join(20.0)
        # not woken, the exchange would last until the peer's 30 s are over
        assert not t.is_alive() and time.monotonic() - t0 < 10.0
        assert isinstance(done[0], PeerError), done
    finally:
        server.shutdown()
        server.server_close()


def test_a_peers_error_text_is_cut_and_escaped(tmp_path: Path) -> None:
    server = _serve(_Hostile)
    try:
        make_home(tmp_path / "home", BANKS3)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        transport = HttpPeerTransport(bank_signer(tmp_path / "home", "BKA"), {"BKB": url})
        with pytest.raises(PeerError) as exc:
            transport.validate("BKB", b"note", 5.0)
        text = str(exc.value)
        assert len(text) < 400, len(text)
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text, text
        assert "\\x1b" in text and "HTTP 500" in text, text
        transport.close()
    finally:
        server.shutdown()
        server.server_close()


def test_a_streamed_line_past_the_cap_is_an_error_not_memory() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve() -> None:
        c, _ = srv.accept()
        c.recv(65536)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3000000\r\n\r\n")
        try:
            c.sendall(b"x" * 3_000_000)
        except OSError:
            pass
        c.close()

    threading.Thread(target=serve, daemon=True).start()
    pool = HttpPool(f"http://127.0.0.1:{srv.getsockname()[1]}")
    with (
        pool.stream("/", b"", {}, idle_timeout=5.0) as resp,
        pytest.raises(HttpReplyTooLarge, match="line of more than"),
    ):
        for _ in resp.lines(max_line=1_000_000):
            pass
    srv.close()
    assert issubclass(HttpReplyTooLarge, HttpFailure)
