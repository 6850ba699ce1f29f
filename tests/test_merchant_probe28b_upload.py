"""Probe 28, second round: `hubi merchant upload` against banks that answer badly.

Real `hubi` processes upload to real HTTP(S) servers playing a bank that is slow, answers
garbage, redirects, fails with 500/502, asks to wait (429 with Retry-After), or shows a
certificate that does not verify. Found and fixed: a slow bank was called "unreachable"; a
server that is no bank node (garbage, a portal page) got every note of the outbox, one by one;
a redirect was "302 not-a-bank" with no word of where it pointed; Retry-After was ignored (the
retries came 0.1 s apart); a certificate that does not verify was "unreachable", tried again
and again. Each is named, nothing leaves the outbox, and a real bank node books every note
afterwards.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hubi.merchant import upload as up
from tests.bank_nodes import nodes  # noqa: F401  (fixture)
from tests.test_merchant_support import Shop, hubi_json, make_shop
from tests.test_merchant_upload import PAYER, pay, prepare

pytestmark = pytest.mark.xdist_group("test_merchant_probe28b_upload")


class Bad(BaseHTTPRequestHandler):
    """A bank gone wrong in the way `mode` says; keeps the time of every POST it got."""

    mode = ""
    hits: list[float] = []

    def do_POST(self) -> None:  # noqa: N802 - the handler's API
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.hits.append(time.monotonic())
        rate = json.dumps({"error": "rate-limited", "message": "slow down"}).encode()
        answers = {
            "garbage": (200, b"\x00\xffhello \x1b[31mgarbage", "text/plain", ()),
            "redirect": (307, b"", "text/plain", (("Location", "http://10.9.9.9/v1/notes"),)),
            "500": (500, b"Internal Server Error", "text/plain", ()),
            "502": (502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html", ()),
            "429": (429, rate, "application/json", (("Retry-After", "1"),)),
            "429-long": (429, rate, "application/json", (("Retry-After", "120"),)),
        }
        if self.mode == "slow":
            time.sleep(1.5)
            return
        status, body, kind, extra = answers[self.mode]
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, ssl.SSLError):  # the client hung up or refused the certificate
            pass


@contextmanager
def _serve(tls: ssl.SSLContext | None = None) -> Iterator[tuple[str, type[Bad]]]:
    handler = type("Bank", (Bad,), {"hits": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    scheme = "https" if tls is not None else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def _self_signed(folder: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return ctx


def _upload(shop: Shop, url: str, *opts: str) -> tuple[int, dict]:
    return hubi_json("merchant", "--home", str(shop.home), "upload", "--bank", url, *opts)


FAST = ("--retries", "2", "--backoff", "0.05", "--max-backoff", "0.1", "--timeout", "0.5")


def test_each_bad_bank_is_named_nothing_is_lost_and_retry_after_is_honoured(
    tmp_path: Path,
    nodes,  # noqa: F811
) -> None:
    shop = make_shop(tmp_path)
    payers = prepare(shop)
    with shop.merchant() as m:
        notes = [pay(m, payers[PAYER], 100 + i) for i in range(2)]

    def said(mode: str, *opts: str) -> tuple[dict, list[float]]:
        with _serve() as (url, bank):
            bank.mode = mode
            code, rep = _upload(shop, url, *(opts or FAST))
        assert code == 1 and rep["counts"]["pending"] == 2 and rep["stopped"], rep
        # the notes after the first are not sent, and carry the same reason
        assert rep["items"][1]["attempts"] == 0, rep
        assert rep["items"][1]["detail"] == rep["stopped"], rep
        return rep, bank.hits

    # slow: the bank took the connection, no answer came: not "unreachable"
    rep, hits = said("slow")
    assert rep["stopped"].startswith("the bank is too slow to answer"), rep
    assert "--timeout 0.5 s" in rep["stopped"] and "unreachable" not in rep["stopped"], rep
    assert len(hits) == 3 and rep["items"][0]["attempts"] == 3, rep  # retried: it may settle
    # garbage, controls and all: no bank node there, so one note was sent, not every one
    rep, hits = said("garbage")
    assert "is not a hubi bank node" in rep["stopped"], rep
    assert "\x1b" not in json.dumps(rep) and "garbage" in rep["stopped"], rep
    assert len(hits) == 1, hits
    # a redirect: where it points is said, and the note is not sent on there
    rep, hits = said("redirect")
    assert "answered 307, a redirect to http://10.9.9.9/v1/notes" in rep["stopped"], rep
    assert len(hits) == 1, hits
    # 500 and 502 (a proxy's page): retried with back-off, then the run stops, named
    for mode, words in (("500", "500 http-500"), ("502", "502 http-502")):
        rep, hits = said(mode)
        assert rep["stopped"].startswith(f"the bank cannot take notes now: {words}"), rep
        assert mode != "502" or "Bad Gateway" in rep["stopped"], rep
        assert len(hits) == 3, hits
    # 429 asking for 1 s: the retry waits at least that (back-off alone: 0.05 s)
    rep, hits = said("429", "--retries", "1", "--backoff", "0.05", "--max-backoff", "5")
    assert len(hits) == 2 and hits[1] - hits[0] >= 1.0, hits
    assert "429 rate-limited: slow down" in rep["stopped"], rep
    # asking for longer than --max-backoff: not asked again sooner, nor waited for here
    rep, hits = said("429-long", "--retries", "3", "--backoff", "0.05", "--max-backoff", "5")
    assert len(hits) == 1, hits
    assert "asks to wait 2 minutes before sending again (Retry-After)" in rep["stopped"], rep
    # a certificate that does not verify: said as such, not tried again, nothing sent
    with _serve(_self_signed(tmp_path)) as (url, bank):
        bank.mode = "500"
        code, rep = _upload(shop, url, *FAST)
    assert code == 1 and rep["counts"]["pending"] == 2, rep
    assert rep["stopped"].startswith(f"the TLS certificate of {url} does not verify"), rep
    assert "self-signed certificate" in rep["stopped"] and not bank.hits, rep
    assert rep["items"][0]["attempts"] == 1, rep
    # ... and trusted as the message says (SSL_CERT_FILE), the same server is reached
    with _serve(_self_signed(tmp_path)) as (url, bank), pytest.MonkeyPatch.context() as mp:
        mp.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))
        bank.mode = "502"
        code, rep = _upload(shop, url, *FAST)
    assert code == 1 and rep["stopped"].startswith("the bank cannot take notes now: 502"), rep
    assert len(bank.hits) == 3, bank.hits

    # nothing was lost: both notes still pending, byte for byte, and a real bank books them
    with shop.merchant() as m:
        rows = m.notes()
    assert [r.bytes for r in rows] == notes and {r.state for r in rows} == {"pending"}
    node = nodes(shop.bank_home, "BKB").start()
    code, rep = _upload(shop, node.url)
    assert code == 0 and rep["counts"]["booked"] == 2, rep


def test_retry_after_as_seconds_or_a_date() -> None:
    now = 1_760_000_000.0
    assert up.retry_after("7", now) == 7.0
    assert up.retry_after(" 120 ", now) == 120.0
    when = datetime.datetime.fromtimestamp(now + 90, datetime.UTC)
    assert up.retry_after(when.strftime("%a, %d %b %Y %H:%M:%S GMT"), now) == 90.0
    assert up.retry_after("Mon, 01 Jan 2001 00:00:00 GMT", now) == 0.0  # past: no wait
    assert up.retry_after("99999999999999999999999", now) == up.MAX_RETRY_AFTER
    for text in (None, "", "soon", "-5", "1.5"):
        assert up.retry_after(text, now) is None, text
