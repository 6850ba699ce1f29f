"""`hubi merchant upload` against a real bank node process (`hubi bank serve`) over HTTP.

The bank's database is prepared with the engine (treasury, funded payer, the merchant's
account), then served by a child process; the merchant uploads with the real client. Checks:
settled / bounced / refused with the bank's signed reasons, SettlementNotices verified and
chained into the merchant's own book, idempotent re-uploads, back-off while the bank is down.
"""

from __future__ import annotations

import http.server
import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hubi import kmc
from hubi.bank.engine import BankEngine
from hubi.cli import main
from hubi.merchant import Merchant, import_identity
from hubi.merchant.upload import backoff_delay
from hubi_core import codec
from tests.bank_nodes import NodeProcess, nodes  # noqa: F401  (fixture)
from tests.http_fakes import serving
from tests.test_merchant_support import MERCHANT, T0, Payer, Shop, hubi_json, make_shop

PAYER = "BKB-000000000042"  # same bank as the merchant: booked by one node
POOR = "BKB-000000000043"  # an open account with no money: its notes bounce
STRANGER = "BKB-000000000099"  # issued by the KMC but never opened at the bank: refused
PAYER_A = "BKA-000000000042"  # interbank: payer at the other bank
POOR_A = "BKA-000000000043"


def bank_db(shop: Shop) -> str:
    return str(kmc.bank_dir(shop.bank_home, "BKB") / "bank.db")


def prepare(shop: Shop) -> dict[str, Payer]:
    """Treasury, a funded payer, a poor payer and the merchant's account at bank BKB."""
    k = kmc.load_kmc(shop.bank_home, "BKB")
    payers = {}
    with BankEngine.open(bank_db(shop), home=shop.bank_home, bank="BKB") as eng:
        tkey = eng.setup_treasury(k)
        kmc.write_secret(
            kmc.bank_dir(shop.bank_home, "BKB") / "treasury.secret", tkey.to_bytes(32, "big")
        )
        eng.open_account((shop.home / "template.bin").read_bytes())
        for acct, funds in ((PAYER, 1_000_000), (POOR, 0)):
            priv, tpl = eng.issue_account(k, acct)
            if funds:
                assert eng.fund(acct, funds).ok
            payers[acct] = Payer(acct, priv, tpl)
    payers[STRANGER] = shop.payer(STRANGER)
    return payers


def pay(m: Merchant, payer: Payer, amount: int) -> bytes:
    """The whole offline step: a request, the payer's note, the merchant accepts it."""
    m.request(amount, "coffee", expires=10**6, now=T0)
    note = payer.note(amount)
    res = m.accept(note, now=T0 + 1)
    assert res.ok, res.verdict.message()
    return note


@pytest.fixture
def shop(tmp_path: Path) -> Shop:
    return make_shop(tmp_path)


def test_upload_settles_bounces_refuses_and_books_notices(shop: Shop, nodes) -> None:  # noqa: F811
    payers = prepare(shop)
    node = nodes(shop.bank_home, "BKB").start()
    with shop.merchant() as m:
        good = [pay(m, payers[PAYER], 1250 + i) for i in range(3)]
        poor = pay(m, payers[POOR], 500)
        stranger = pay(m, payers[STRANGER], 700)
        assert m.outbox.counts()["pending"] == 5

    code, out = hubi_json("merchant", "--home", str(shop.home), "upload", "--bank", node.url)
    assert code == 0, out
    assert out["counts"] == {"booked": 3, "bounced": 1, "refused": 1, "pending": 0}
    by_id = {it["note_id"]: it for it in out["items"]}
    with shop.merchant() as m:
        rows = {r.bytes: r for r in m.notes()}
        assert set(rows) == {*good, poor, stranger}  # exact bytes kept, nothing lost
        for raw in good:
            row = rows[raw]
            assert row.state == "booked" and row.notice is not None
            notice = codec.decode(row.notice, codec.SETTLEMENT)
            assert notice.signer == "BKB" and notice["payee"] == MERCHANT
            assert by_id[row.note_id.hex()]["notice"] is True
        assert rows[poor].state == "bounced"
        assert "insufficient" in rows[poor].outcome["reason"]
        assert codec.decode(rows[poor].refusal, codec.REFUSAL)["payee"] == MERCHANT
        assert rows[stranger].state == "refused"
        assert rows[stranger].outcome["reason"].startswith("unknown-account")
        # the merchant's own book: one record per notice, every link holds
        book = m.book()
        assert [e.record.delta for e in book] == [codec.decode(g)["amount"] for g in good]
        assert m.book_balance() == sum(codec.decode(g)["amount"] for g in good)
        assert m.audit_book() == []

    # idempotent: uploading again sends nothing; re-posting a booked note gets its first answer
    code, again = hubi_json("merchant", "--home", str(shop.home), "upload", "--bank", node.url)
    assert code == 0 and again["items"] == []
    from hubi.bank.client import BankClient

    with BankClient(node.url) as c:
        res = c.upload(good[0])
        assert res.outcome == "booked" and res.duplicate
    with BankEngine.open(bank_db(shop), home=shop.bank_home, bank="BKB") as eng:
        assert eng.balance(MERCHANT) == sum(codec.decode(g)["amount"] for g in good)
        assert len(eng.records(MERCHANT)) == 3


def test_upload_keeps_notes_while_the_bank_is_down_and_retries(shop: Shop, nodes) -> None:  # noqa: F811
    payers = prepare(shop)
    node = nodes(shop.bank_home, "BKB")  # not started: connection refused
    with shop.merchant() as m:
        note = pay(m, payers[PAYER], 999)
        slept: list[float] = []
        rep = m.upload(node.url, retries=3, base_delay=0.01, max_delay=0.05, sleep=slept.append)
        assert not rep.ok and rep.stopped and "unreachable" in rep.stopped
        assert len(slept) == 3 and all(0 < d <= 0.05 for d in slept)
        (row,) = m.notes()
        assert row.state == "pending" and row.attempts == 4 and row.bytes == note
        assert "transient" in (row.last_error or "")
    code, out = hubi_json(
        "merchant",
        "--home",
        str(shop.home),
        "upload",
        "--bank",
        node.url,
        "--retries",
        "1",
        "--backoff",
        "0.01",
    )
    assert code == 1 and out["counts"]["pending"] == 1
    node.start()
    code, out = hubi_json("merchant", "--home", str(shop.home), "upload", "--bank", node.url)
    assert code == 0 and out["counts"]["booked"] == 1


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--bank", "bkb.example", "'bkb.example' is not an http:// or https:// URL"),
        ("--bank", "ftp://127.0.0.1:8080", "is not an http:// or https:// URL"),
        ("--bank", "http://127.0.0.1:99999", "a port 1-65535"),
        ("--bank", "http://[::1", "is not an http:// or https:// URL"),
        ("--backoff", "-1", "not in the range x>=0"),
        ("--max-backoff", "nan", "'nan' is not a finite number of seconds"),
        ("--timeout", "0", "not in the range x>0"),
    ],
)
def test_upload_refuses_a_bad_url_or_delay_before_it_tries(
    shop: Shop, option: str, value: str, words: str
) -> None:
    """A mistyped --bank was tried and retried as 'bank unreachable' (or crashed in httpx), and a
    negative back-off failed in the middle of the loop; now it is a usage error, nothing tried."""
    payers = prepare(shop)
    with shop.merchant() as m:
        pay(m, payers[PAYER], 500)
    args = ["merchant", "--home", str(shop.home), "upload", "--retries", "0"]
    if option != "--bank":
        args += ["--bank", "http://127.0.0.1:1"]
    result = CliRunner().invoke(main, [*args, option, value])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output and words in result.output
    with shop.merchant() as m:
        (row,) = m.notes()
        assert row.state == "pending" and row.attempts == 0


def test_backoff_is_exponential_and_capped() -> None:
    import random

    rng = random.Random(1)
    d = [backoff_delay(i, 0.5, 8.0, rng) for i in range(8)]
    assert all(0.25 * 2**i <= x <= 0.5 * 2**i for i, x in enumerate(d[:4]))
    assert max(d) <= 8.0 and d[-1] >= 4.0


def consortium_home(home: Path, urls: dict[str, str]) -> None:
    """Two banks whose consortium file lists their node URLs, sharing an embedded orderer."""
    from hubi.consortium import service

    kmcs = {b: kmc.Kmc.create(b, seed=b"merchant-interbank-" + b.encode()) for b in urls}
    cons, idents = kmc.make_consortium(
        "test", kmcs, endpoints={b: [u] for b, u in urls.items()}, time=T0
    )
    for b, k in kmcs.items():
        k.save(kmc.bank_dir(home, b) / "kmc.secret")
        ident = idents[b]
        kmc.write_secret(
            kmc.bank_dir(home, b) / "identity.secret",
            ident.private.to_bytes(32, "big") + ident.separating_key,
        )
        log = str(home / "consortium" / "log.db")
        service.write_config(home, b, service.NodeConfig("embedded", path=log))
    kmc.save_trust(home / "trust", cons, {b: k.public for b, k in kmcs.items()})


@pytest.mark.slow
def test_interbank_upload_through_the_consortium(tmp_path: Path, nodes) -> None:  # noqa: F811
    """Payer at BKA, merchant at BKB: two real `hubi bank serve` processes and the embedded
    orderer. The merchant uploads to its own bank (the endpoint in the consortium file), which
    has BKA validate the note, orders it and answers with its SettlementNotice."""
    home = tmp_path / "home"
    bka = nodes(home, "BKA", name="bka")
    bkb = nodes(home, "BKB", name="bkb")
    consortium_home(home, {"BKA": bka.url, "BKB": bkb.url})
    payers = {}
    for bank, accts in (("BKB", [(MERCHANT, 0)]), ("BKA", [(PAYER_A, 100_000), (POOR_A, 0)])):
        k = kmc.load_kmc(home, bank)
        db = str(kmc.bank_dir(home, bank) / "bank.db")
        with BankEngine.open(db, home=home, bank=bank) as eng:
            tkey = eng.setup_treasury(k)
            kmc.write_secret(kmc.bank_dir(home, bank) / "treasury.secret", tkey.to_bytes(32, "big"))
            for acct, funds in accts:
                priv, tpl = eng.issue_account(k, acct)
                if funds:
                    assert eng.fund(acct, funds).ok
                payers[acct] = Payer(acct, priv, tpl)
    shop_home = tmp_path / "shop"
    key_file = tmp_path / "merchant.key"
    key_file.write_bytes(payers[MERCHANT].private.to_bytes(32, "big"))
    tpl_file = tmp_path / "merchant.template"
    tpl_file.write_bytes(codec.encode(payers[MERCHANT].template))
    import_identity(shop_home, key_file, tpl_file, home / "trust")
    bka.start()
    bkb.start()
    with Merchant.open(shop_home) as m:
        rich = pay(m, payers[PAYER_A], 1250)
        poor = pay(m, payers[POOR_A], 300)
    code, out = hubi_json("merchant", "--home", str(shop_home), "upload")  # URL from the file
    assert code == 0, out
    assert out["bank"] == bkb.url
    assert out["counts"] == {"booked": 1, "bounced": 1, "refused": 0, "pending": 0}
    with Merchant.open(shop_home) as m:
        rows = {r.bytes: r for r in m.notes()}
        notice = codec.decode(rows[rich].notice, codec.SETTLEMENT)
        assert notice.signer == "BKB" and notice["status"] == codec.STATUS_SETTLED
        assert rows[poor].state == "bounced" and "insufficient" in rows[poor].outcome["reason"]
        assert m.book_balance() == 1250 and m.audit_book() == []


def _upload_to(shop: Shop, handler: type, times: int = 1, **kw: Any) -> list:
    """Pay one note into the shop and upload it `times` to a server run by `handler` (a bank
    URL answered by something else); the note's outbox row after each upload. `kw`: more
    arguments of the upload (its timeout)."""
    payers = prepare(shop)
    with shop.merchant() as m:
        pay(m, payers[PAYER], 700)
    rows = []
    with serving(handler) as url:
        for _ in range(times):
            with shop.merchant() as m:
                rep = m.upload(
                    url, retries=0, base_delay=0.01, max_delay=0.01, sleep=lambda _s: None, **kw
                )
                assert not rep.ok
                (row,) = m.notes()
            rows.append(row)
    return rows


class _NotABank(http.server.BaseHTTPRequestHandler):
    """A captive portal: 200 and a page, whatever is asked."""

    def do_POST(self) -> None:  # noqa: N802 - the handler's API
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b"<html><body><h1>Welcome</h1> to the hotel wifi</body></html>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("handler", "words"),
    [
        # Python's file server answers POST with a 501 page; it was stored whole, many lines
        (http.server.SimpleHTTPRequestHandler, "Unsupported method"),
        # a portal answers 200 with a page; the upload stopped on "Expecting value: line 1"
        (_NotABank, "Welcome to the hotel wifi"),
    ],
)
def test_upload_to_a_server_that_is_no_bank_keeps_the_note_and_says_so_briefly(
    shop: Shop, handler: type, words: str
) -> None:
    """--bank pointing at some other web server: the note stays pending, and the error is one
    short line that says what answered, not the whole page, nor a JSON decoding error."""
    (row,) = _upload_to(shop, handler)
    assert row.state == "pending", row
    error = row.last_error or ""
    assert "not a hubi bank node's answer (text/html)" in error and words in error, error
    assert "\n" not in error and len(error) < 300, error


class _Flood(http.server.BaseHTTPRequestHandler):
    """A server gone wrong: 200 and an endless JSON-looking body, chunked or with a length."""

    protocol_version = "HTTP/1.1"
    asked: list[str] = []
    sent: list[int] = []

    def do_POST(self) -> None:  # noqa: N802 - the handler's API
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.asked.append(self.path)
        chunked = len(self.asked) % 2 == 1  # the first ask chunked, the second with a length
        self.send_response(200)
        self.send_header("content-type", "application/json")
        if chunked:
            self.send_header("transfer-encoding", "chunked")
        else:
            self.send_header("content-length", str(1 << 40))
        self.end_headers()
        block = b'{"outcome": "' + b"x" * (1 << 20)
        sent = 0
        try:
            while sent < 1 << 30:  # 1 GiB at most, should the client read on
                self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
                sent += len(block)
        except OSError:  # the client hung up: what is asserted
            pass
        self.sent.append(sent)
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def test_a_reply_that_never_ends_is_not_read_past_the_cap_and_the_note_stays(shop: Shop) -> None:
    """A bank URL answered by a server gone wrong (or a hostile one) with gigabytes: the
    merchant's upload read the whole reply into memory. It now stops at 64 MiB, drops the
    connection, and keeps the note pending with one line that says why; chunked or not."""
    from hubi.bank.client import MAX_REPLY

    _Flood.asked, _Flood.sent = [], []
    for row in _upload_to(shop, _Flood, times=2):  # chunked, then with a Content-Length of 1 TiB
        assert row.state == "pending", row
        error = row.last_error or ""
        assert f"longer than {MAX_REPLY:,} bytes" in error and "not read further" in error
        assert "\n" not in error and len(error) < 300, error
    assert _Flood.asked == ["/v1/notes"] * 2 and len(_Flood.sent) == 2
    # the server stopped at the client's hang-up, a little past the cap (socket buffers)
    assert all(MAX_REPLY <= s < MAX_REPLY + (16 << 20) for s in _Flood.sent), _Flood.sent


class _Trickle(http.server.BaseHTTPRequestHandler):
    """A server that meets every read timeout: 200, a length of 1 MB, then a byte now and then."""

    def do_POST(self) -> None:  # noqa: N802 - the handler's API
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(1 << 20))
        self.end_headers()
        try:
            for _ in range(200):  # 40 s at most, should the client wait on
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:  # the client hung up: what is asserted
            pass

    def log_message(self, *args: object) -> None:
        pass


def test_a_reply_trickled_a_byte_at_a_time_ends_at_the_deadline(shop: Shop) -> None:
    """httpx's timeout holds for each read, so a server sending a byte every 0.2 s held
    `merchant upload` for ever (1 MB: 58 hours). One exchange now ends at ten times the
    timeout, and the note stays pending."""
    started = time.monotonic()
    (row,) = _upload_to(shop, _Trickle, timeout=0.5)
    took = time.monotonic() - started
    assert row.state == "pending", row
    assert "no whole answer within 5 s" in (row.last_error or ""), row.last_error
    assert 5 <= took < 30, took


def _answering(doc: object, status: int = 200) -> type:
    """A server answering every POST with 200 and `doc` as JSON: a bank node gone wrong."""
    body = json.dumps(doc).encode()

    class Odd(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the handler's API
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Odd


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ({"outcome": "refused", "refusal": "zz"}, "refusal is not hex"),
        ({"outcome": "booked", "notices": 5}, "notices is not a list"),
        (
            {"outcome": "booked", "duplicate": "yes", "notices": []},
            "duplicate is not true or false",
        ),
        ({"outcome": "refused", "reason_code": "two"}, "reason_code is not a number"),
    ],
)
def test_an_answer_of_the_wrong_shape_keeps_the_note_and_says_what_is_wrong(
    shop: Shop, doc: dict, words: str
) -> None:
    """A JSON answer with an outcome but fields of the wrong type stopped the whole upload with
    a ValueError or TypeError traceback. The note now stays pending with one line naming the
    field."""
    (row,) = _upload_to(shop, _answering(doc))
    assert row.state == "pending", row
    error = row.last_error or ""
    assert "not a hubi bank node's answer" in error and words in error, error


class _Portal(_NotABank):
    """A page with terminal escape sequences in it (retitle the window, clear the screen)."""

    def do_POST(self) -> None:  # noqa: N802 - the handler's API
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b"captive \x1b]0;PWNED\x07\x1b[2J\x1b[1;31m log in \xe2\x80\xae"
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.parametrize(
    "handler",
    [
        _Portal,
        _answering({"error": "bad\x1b[2J", "message": "\x1b]0;PWNED\x07" + "m" * 100_000}, 400),
    ],
)
def test_a_servers_words_reach_the_outbox_and_terminal_escaped_and_short(
    shop: Shop, handler: type
) -> None:
    """Text from the server (a portal's page, an error's message) went into the outbox and onto
    the merchant's terminal as sent: escape sequences retitled the window, cleared the screen;
    a 100 KB message was kept and printed whole. Control and bidi characters are now shown as
    escapes, and the text is cut short."""
    (row,) = _upload_to(shop, handler)
    error = row.last_error or ""
    assert row.state == "pending" and error, row
    assert not any(c in error for c in "\x1b\x07\u202e"), repr(error)
    assert "\\x1b" in error and len(error) < 600, error


def test_outbox_shows_the_newest_notes_and_says_how_many_there_are(shop: Shop) -> None:
    """A shop's outbox grows for ever, and `merchant outbox` printed every note it ever took.
    The table now shows the newest 50 (`--last N`; 0: all) and says how many there are; JSON
    still lists them all unless asked."""
    payers = prepare(shop)
    with shop.merchant() as m:
        for i in range(7):
            pay(m, payers[PAYER], 100 + i)
    base = ["merchant", "--home", str(shop.home), "outbox"]

    def outbox(*args: str) -> str:
        r = CliRunner().invoke(main, [*base, *args])
        assert r.exit_code == 0, r.output
        return r.output

    said = " ".join(outbox("--last", "3").split())
    assert "the newest 3 of 7 shown (--last 0: all)" in said, said
    assert all(f"1.0{i} CNY" in said for i in (4, 5, 6)) and "1.03 CNY" not in said, said
    said = " ".join(outbox("--state", "pending", "--last", "2").split())
    assert "the newest 2 of 7 shown" in said and "7 pending" in said, said
    said = " ".join(outbox().split())  # 7 < 50: all of them, and no "newest" line
    assert "newest" not in said and all(f"1.0{i} CNY" in said for i in range(7)), said
    assert len(json.loads(outbox("--json"))["items"]) == 7
    assert [i["amount"] for i in json.loads(outbox("--json", "--last", "2"))["items"]] == [105, 106]
