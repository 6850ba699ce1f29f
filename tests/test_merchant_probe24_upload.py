"""Probe 24 of `hubi merchant upload`: what the bank's reply may decide, and how long it takes.

Real notes, real bank-signed Refusals (signed here with the bank's key from the bank home, as a
node signs them), a real outbox, and real HTTP servers that play a bank which lies in its
unsigned JSON, keeps answering "pending", or runs on another clock.
"""

from __future__ import annotations

import json
import threading
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from hubi import kmc
from hubi_core import codec, lsum, suite
from tests.bank_nodes import nodes  # noqa: F401  (fixture)
from tests.http_fakes import RecordingBank, serving
from tests.test_merchant_support import MERCHANT, T0, Shop, hubi, hubi_json, make_shop


@pytest.fixture
def shop(tmp_path: Path) -> Shop:
    return make_shop(tmp_path)


def paid(shop: Shop, n: int, amount: int = 500) -> list[bytes]:
    """n notes of the BKA payer, each paying an open request of the merchant (the whole
    offline step of a shop)."""
    out = []
    with shop.merchant() as m:
        for _ in range(n):
            m.request(amount, "coffee", expires=10**6, now=T0)
            note = shop.payer().note(amount)
            res = m.accept(note, now=T0 + 1)
            assert res.ok, res.verdict.message()
            out.append(note)
    return out


def refusal(
    shop: Shop,
    note: bytes,
    code: int,
    why: str = "",
    bank: str = "BKB",
    key: int | None = None,
    at: float | None = None,
) -> bytes:
    """A Refusal of `note` to the merchant, signed by `bank` (or by `key`, claiming `bank`)."""
    obj = codec.decode(note, codec.NOTE)
    vals: dict[str, Any] = {
        "payee": MERCHANT,
        "payer": obj.signer,
        "note_id": lsum.note_id(obj.signer, obj.serial),
        "reason_code": code,
    }
    if why:
        vals["reason"] = why
    ref = codec.Obj(codec.REFUSAL, bank, obj.serial, int(time.time() if at is None else at), vals)
    if key is None:
        key = kmc.load_bank_identity(shop.bank_home, bank).private
    return codec.encode(codec.sign(ref, key))


def upload(shop: Shop, url: str, **kw: Any) -> Any:
    kw = {"retries": 0, "base_delay": 0.01, "max_delay": 0.01, **kw}
    with shop.merchant() as m:
        return m.upload(url, **kw)


def rows(shop: Shop) -> dict[bytes, Any]:
    with shop.merchant() as m:
        return {r.bytes: r for r in m.notes()}


# ------------------------------------------------------- 1. the signed Refusal decides the state
@pytest.mark.parametrize(
    ("said", "code", "state", "words"),
    [
        ("refused", codec.REASON_INSUFFICIENT_FUNDS, "bounced", "insufficient-funds"),
        ("bounced", codec.REASON_DOUBLE_ISSUE, "refused", "double-issuance"),
        ("bounced", codec.REASON_EXPIRED, "refused", "expired"),
    ],
)
def test_the_signed_reason_code_decides_bounced_or_refused_not_the_json(
    shop: Shop, fake_bank: tuple[str, type[RecordingBank]], said: str, code: int, state: str,
    words: str,
) -> None:  # fmt: skip
    """A bank (or anything between it and the shop) answering "refused" around a signed
    insufficient-funds Refusal turned a bounce into a refusal in the outbox, and the other way
    round: the state came from the unsigned JSON. The signed reason code now decides."""
    (note,) = paid(shop, 1)
    url, bank = fake_bank
    ref = refusal(shop, note, code, "as signed")
    bank.answer = (200, {"outcome": said, "reason_code": 0, "refusal": ref.hex()})
    rep = upload(shop, url)
    (item,) = rep.items
    assert item.state == state and words in item.detail, item
    row = rows(shop)[note]
    assert row.state == state and row.refusal == ref, row
    assert row.outcome["reason_code"] == code and row.outcome["reason"] == f"{words}: as signed"
    assert row.outcome["reply_said"] == said  # what the reply claimed stays as evidence


def test_a_refused_reply_without_a_valid_signed_refusal_keeps_the_note_pending(
    shop: Shop, fake_bank: tuple[str, type[RecordingBank]]
) -> None:
    """ "refused" in the JSON with a Refusal no bank signed (a forger's key under the bank's
    name), one about another note, or none at all: the good note stays pending, the error says
    what is wrong, and an honest answer later settles it."""
    good, other = paid(shop, 2)
    url, bank = fake_bank
    forged = refusal(shop, good, codec.REASON_DOUBLE_ISSUE, key=suite.generate_private())
    tries = [
        (forged.hex(), "refusal: bank signature of field"),
        (refusal(shop, other, codec.REASON_DOUBLE_ISSUE).hex(), "refusal: field note_id is"),
        (None, "the bank says refused but sent no signed Refusal"),
        ("00" * 40, "refusal unreadable"),
    ]
    for ref, words in tries:
        bank.answer = (200, {"outcome": "refused", "reason_code": 2, "refusal": ref})
        rep = upload(shop, url)
        by = {it.note_id: it for it in rep.items}
        item = by[lsum.note_id(*_who(good))]
        assert item.state == "pending" and words in item.detail, (words, item.detail)
        row = rows(shop)[good]
        assert row.state == "pending" and row.refusal is None and row.outcome is None
        assert words in (row.last_error or ""), row.last_error
        assert not rep.ok
    # the bank's true word, signed: the note settles as what the signature says
    ref = refusal(shop, good, codec.REASON_INSUFFICIENT_FUNDS)
    bank.answer = (200, {"outcome": "bounced", "refusal": ref.hex()})
    upload(shop, url)
    assert rows(shop)[good].state == "bounced"


def test_a_refusal_signed_by_a_bank_not_party_to_the_note_keeps_it_pending(
    shop: Shop, fake_bank: tuple[str, type[RecordingBank]]
) -> None:
    """A same-bank note (payer and shop both at BKB) "bounced" with a Refusal that BKA signed:
    a bank of the consortium, so it verified, and the note was closed as bounced though its
    bank never refused it. Only the payee's or the payer's bank may refuse it."""
    payer = shop.payer("BKB-000000000042")
    with shop.merchant() as m:
        m.request(500, "coffee", expires=10**6, now=T0)
        note = payer.note(500)
        assert m.accept(note, now=T0 + 1).ok
    url, bank = fake_bank
    third = refusal(shop, note, codec.REASON_INSUFFICIENT_FUNDS, bank="BKA")
    bank.answer = (200, {"outcome": "bounced", "refusal": third.hex()})
    (item,) = upload(shop, url).items
    assert item.state == "pending", item
    assert "refusal signed by BKA, neither this shop's bank BKB nor the payer's bank BKB" in (
        item.detail
    )
    assert rows(shop)[note].state == "pending"
    # BKB's own refusal of it counts
    bank.answer = (200, {"outcome": "bounced", "refusal": refusal(shop, note, 1, bank="BKB").hex()})
    (item,) = upload(shop, url).items
    assert item.state == "bounced" and rows(shop)[note].state == "bounced"


def _who(note: bytes) -> tuple[str, int]:
    obj = codec.decode(note, codec.NOTE)
    return obj.signer, obj.serial


# ------------------------------------------- 2. the outbox is walked in pages, in full, in order
class _RefusingBank(RecordingBank):
    """A bank that bounces every note with a Refusal it signs for that note (the key is the
    class's), and keeps the order the notes came in."""

    key = 0
    shop: Shop | None = None

    def do_POST(self) -> None:  # noqa: N802 - the handler's API
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.got.append(raw)
        assert self.shop is not None
        ref = refusal(self.shop, raw, codec.REASON_INSUFFICIENT_FUNDS, key=self.key)
        body = json.dumps({"outcome": "bounced", "refusal": ref.hex()}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_large_outbox_uploads_in_full_and_in_scan_order_a_page_at_a_time(shop: Shop) -> None:
    """`merchant upload` read every pending row (each note's bytes) into memory at once. It now
    reads 500 at a time; 2,600 notes scanned out of order in time (many in the same second)
    still all go up, each once, in the order the outbox lists them."""
    n = 2600
    payer = shop.payer()
    made: list[bytes] = []
    with shop.merchant() as m:
        for i in range(n):
            raw = payer.note(100 + i)
            made.append(raw)
            obj = codec.decode(raw, codec.NOTE)
            info = {
                "note_id": lsum.note_id(obj.signer, obj.serial),
                "payer": obj.signer,
                "serial": obj.serial,
                "payee": MERCHANT,
                "amount": obj["amount"],
                "currency": "CNY",
                "purpose": obj.get("purpose"),
                "time": obj.time,
            }
            m.outbox.accept(info, raw, MERCHANT, None, None, now=T0 + (i * 37) % 101)
        want = [r.bytes for r in m.outbox.pending()]
        count, pages = m.outbox.pending_walk()
        sizes = [len(p) for p in pages]
        assert count == n and sizes == [500] * 5 + [100], sizes
        # pages of 7 (a page boundary inside a run of equal scan times) list the same rows
        _, small = m.outbox.pending_walk(7)
        assert [r.bytes for p in small for r in p] == want
    assert want == made  # the order the notes were kept, whatever their scan times say
    handler = type(
        "Bank",
        (_RefusingBank,),
        {"got": [], "shop": shop, "key": kmc.load_bank_identity(shop.bank_home, "BKB").private},
    )
    with serving(handler) as url:
        rep = upload(shop, url)
    assert handler.got == want  # every note once, in order
    assert rep.ok and rep.counts()["bounced"] == n
    assert [it.note_id for it in rep.items] == [lsum.note_id(*_who(w)) for w in want]
    with shop.merchant() as m:
        assert m.outbox.counts() == {"pending": 0, "booked": 0, "bounced": n, "refused": 0}


def test_the_walk_keeps_rows_with_damaged_scan_times_in_the_listing_order(shop: Shop) -> None:
    """Scan times edited by hand into text, a fraction or bytes: the pages still hold every
    pending row once, in the order `pending()` lists them, whatever the page size."""
    import sqlite3

    paid(shop, 9)
    with shop.merchant() as m:
        path = m.outbox.path
    db = sqlite3.connect(path)
    with db:
        ids_ = [r[0] for r in db.execute("SELECT rowid FROM notes ORDER BY rowid")]
        for rowid, value in zip(ids_[::2], ["late", 1.5, b"\x00", "late", T0 - 5], strict=True):
            db.execute("UPDATE notes SET scanned_at = ? WHERE rowid = ?", (value, rowid))
    db.close()
    with shop.merchant() as m:
        want = [(r.rowid, r.damage) for r in m.outbox.pending()]
        assert sum(1 for _, d in want if d) == 4, want  # all but the integer one are damage
        for size in (1, 2, 3, 500):
            count, pages = m.outbox.pending_walk(size)
            got = [(r.rowid, r.damage) for p in pages for r in p]
            assert count == 9 and got == want, (size, got)


# ----------------------------------------- 3. one shared deadline for the notes not settled yet
class _SlowConsortium(RecordingBank):
    """Answers "pending" for every note until it has been asked `settle_after` times, then
    bounces it with a signed Refusal; counts the asks per note."""

    settle_after: dict[bytes, int] = {}
    asks: dict[bytes, int] = {}
    key = 0
    shop: Shop | None = None
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 - the handler's API
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        with self.lock:
            self.asks[raw] = self.asks.get(raw, 0) + 1
            asked = self.asks[raw]
        if asked > self.settle_after.get(raw, 10**9):
            assert self.shop is not None
            ref = refusal(self.shop, raw, codec.REASON_INSUFFICIENT_FUNDS, key=self.key)
            doc: dict[str, Any] = {"outcome": "bounced", "refusal": ref.hex()}
        else:
            doc = {"outcome": "pending", "reason": "waiting for endorsements"}
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _slow(shop: Shop, settle_after: dict[bytes, int]) -> type[_SlowConsortium]:
    key = kmc.load_bank_identity(shop.bank_home, "BKB").private
    return type(
        "Bank",
        (_SlowConsortium,),
        {"asks": {}, "settle_after": settle_after, "shop": shop, "key": key},
    )


def test_unsettled_notes_share_one_deadline_instead_of_waiting_one_after_another(
    shop: Shop,
) -> None:
    """Each note the bank answered "pending" was asked about for up to settle_wait on its own,
    one after another: 100 of them held an upload for 25 minutes. They now share one deadline
    and are asked about in rounds: 20 notes and a settle_wait of 2 s take about 2 s, not 40."""
    n, wait = 20, 2.0
    notes = paid(shop, n)
    handler = _slow(shop, {})
    said: list[str] = []
    with serving(handler) as url:
        started = time.monotonic()
        rep = upload(shop, url, settle_wait=wait, base_delay=0.1, say=said.append)
        took = time.monotonic() - started
    assert took < n * wait / 2, took  # serially it is n * wait: 40 s
    assert took >= wait * 0.9, took  # and the deadline was waited for
    assert not rep.ok and rep.counts()["pending"] == n
    for it in rep.items:
        assert it.detail == "not settled yet (waiting for endorsements): upload again later", it
    # every note was asked about again, in rounds, not only the first one
    assert set(handler.asks) == set(notes) and all(k >= 2 for k in handler.asks.values())
    assert all(r.state == "pending" and r.attempts >= 2 for r in rows(shop).values())
    assert sum(1 for s in said if "upload again later" in s) == n


def test_notes_settled_in_a_later_round_are_kept_with_their_signed_answer(shop: Shop) -> None:
    """Notes that settle while the upload waits are booked as the bank's signed answer says, and
    the run's report and lines keep each note's place; one that never settles stays pending."""
    notes = paid(shop, 4)
    later = {notes[0]: 1, notes[1]: 3, notes[2]: 0}  # notes[3]: never
    handler = _slow(shop, later)
    said: list[str] = []
    with serving(handler) as url:
        rep = upload(shop, url, settle_wait=3.0, base_delay=0.1, say=said.append)
    states = [it.state for it in rep.items]
    assert states == ["bounced", "bounced", "bounced", "pending"], states
    assert [it.note_id for it in rep.items] == [lsum.note_id(*_who(x)) for x in notes]
    assert [handler.asks[x] for x in notes[:3]] == [2, 4, 1]
    got = rows(shop)
    assert [got[x].state for x in notes] == states
    assert any(s.startswith("[2/4]") and "bounced" in s for s in said), said
    assert any(s.startswith("[4/4]") and "upload again later" in s for s in said), said


# ----------------------------------------------------- 4. 'expired' with the clocks far apart
class _OtherClock(RecordingBank):
    """A bank whose HTTP Date header says its clock is `skew` seconds from ours."""

    skew = 0.0
    date: str | None = None  # a Date header as sent, instead of the clock's

    def date_time_string(self, timestamp: float | None = None) -> str:
        if self.date is not None:
            return self.date
        return formatdate(time.time() + self.skew, usegmt=True)


def _clocked(skew: float, date: str | None = None) -> type[_OtherClock]:
    return type("Bank", (_OtherClock,), {"got": [], "skew": skew, "date": date})


@pytest.mark.parametrize(
    ("skew", "code", "date", "words"),
    [
        (
            3 * 86400,
            codec.REASON_EXPIRED,
            None,
            "this computer's clock is 3 days behind the bank's",
        ),
        (-5 * 3600, codec.REASON_EXPIRED, None, "this computer's clock is 5 hours ahead of"),
        (30, codec.REASON_EXPIRED, None, None),  # close enough: nothing about the clock
        (3 * 86400, codec.REASON_DOUBLE_ISSUE, None, None),  # not about time at all
        # no usable Date: the time in the header of the bank's fresh signed Refusal
        (2 * 86400, codec.REASON_EXPIRED, "yesterday-ish", "clock is 2 days behind the bank's"),
    ],
)
def test_an_expired_refusal_says_when_the_clocks_are_far_apart(
    shop: Shop, skew: float, code: int, date: str | None, words: str | None
) -> None:
    """A shop whose clock is days off saw every note come back 'expired' and nothing about the
    clock. When the bank's clock (its Date header, else its fresh Refusal's time) is far from
    this computer's, the expired note's message now says so."""
    (note,) = paid(shop, 1)
    handler = _clocked(skew, date)
    ref = refusal(shop, note, code, "allowance #1 expired", at=time.time() + skew)
    handler.answer = (200, {"outcome": "refused", "refusal": ref.hex()})
    with serving(handler) as url:
        rep = upload(shop, url)
    (item,) = rep.items
    row = rows(shop)[note]
    assert item.state == row.state == "refused", item
    if words is None:
        assert "clock" not in item.detail and "clock" not in row.outcome, item.detail
    else:
        assert words in item.detail and words in row.outcome["clock"], item.detail
        assert "UTC" in row.outcome["clock"]


def test_the_clock_hint_reaches_the_command_line(shop: Shop) -> None:
    """`hubi merchant upload --json` carries the hint in the note's detail; `hubi merchant
    outbox` shows it with the refusal's reason."""
    (note,) = paid(shop, 1)
    handler = _clocked(-40 * 86400)
    ref = refusal(shop, note, codec.REASON_EXPIRED, at=time.time() - 40 * 86400)
    handler.answer = (200, {"outcome": "refused", "refusal": ref.hex()})
    with serving(handler) as url:
        code, out = hubi_json("merchant", "--home", str(shop.home), "upload", "--bank", url)
    assert code == 0, out
    (item,) = out["items"]
    assert item["state"] == "refused" and "40 days ahead of the bank's" in item["detail"], item
    # and `hubi merchant outbox` shows it beside the bank's reason, not the reason alone
    table = hubi("merchant", "--home", str(shop.home), "outbox", check=True).stdout
    said = " ".join(w for w in table.split() if w not in "│┃┡┩└┘┌┐━─")
    assert "expired" in said and "clock is 40 days ahead of the bank's" in said, table


# ------------------------------------------------- 5. a damaged own book does not stop the upload
def test_a_damaged_own_book_keeps_the_booked_note_pending_and_the_upload_going(
    tmp_path: Path,
    nodes,  # noqa: F811
) -> None:
    """The bank booked the note, but the shop's own book (in its outbox) had a damaged head:
    `merchant upload` stopped there (an error exit naming only the coded balance, or a traceback
    for a TypeError or IntegrityError) and the notes after it were not sent. The note now stays pending with a line that says what is
    wrong, the others go up, and once the book is restored the bank's first answer books it."""
    import sqlite3

    from tests.test_merchant_upload import PAYER, POOR, pay, prepare

    shop = make_shop(tmp_path)
    payers = prepare(shop)
    node = nodes(shop.bank_home, "BKB").start()
    with shop.merchant() as m:
        good = pay(m, payers[PAYER], 1250)
        poor = pay(m, payers[POOR], 300)
        path = m.outbox.path
    db = sqlite3.connect(path)
    with db:  # a head row (of 3 records) whose coded balance is cut short
        db.execute(
            "INSERT INTO book_head VALUES (?, 3, ?, ?, x'0102', 1, ?, x'00', x'00')",
            (MERCHANT, bytes(16), bytes(32), bytes(16)),
        )
    db.close()
    code, out = hubi_json("merchant", "--home", str(shop.home), "upload", "--bank", node.url)
    assert code == 1, out
    assert out["counts"] == {"booked": 0, "bounced": 1, "refused": 0, "pending": 1}, out
    first = out["items"][0]
    assert first["state"] == "pending", first
    assert "the bank booked it" in first["detail"] and "own book" in first["detail"], first
    assert "coded balance" in first["detail"], first
    got = rows(shop)
    assert got[good].state == "pending" and got[good].notice is None
    assert got[poor].state == "bounced"
    with shop.merchant() as m:
        assert m.book() == []  # nothing half-written
    db = sqlite3.connect(path)
    with db:  # the book restored: an empty book has no head row
        db.execute("DELETE FROM book_head")
    db.close()
    code, out = hubi_json("merchant", "--home", str(shop.home), "upload", "--bank", node.url)
    assert code == 0, out
    (item,) = out["items"]
    assert item["state"] == "booked" and item["duplicate"] is True, item
    with shop.merchant() as m:
        assert [e.record.delta for e in m.book()] == [1250] and m.audit_book() == []
