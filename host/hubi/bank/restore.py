"""Restoring lost records from a hot backup (DESIGN §1 热备份, §4).

``restore(store, source)`` audits the database, asks the source for exactly the records the audit
found missing or cut off (with their signatures: the bytes as booked), checks every one before it
goes back — its own numbers, the bank's sig8 and sig9, and its hash-chain links to the
neighbours already in the book (or restored with it) and to the signed head — inserts the ones
that pass, and audits again.

A source is anything with ``fetch(names) -> iterable of records`` (names are ``(book, n)``
pairs); a record is a :class:`~hubi.bank.engine.StoredRecord` or the JSON a node serves
(``{"book", "number", "body", "hchain"}`` in hex, optionally ``"seq"``, the register position).
Sources here:

- :class:`StoreRecordSource` — a database URL: another bank database (a standby copy) or a hot
  backup's replica store (table ``replica_records``);
- ``hubi.bank.client.HttpRecordSource`` — an ``http(s)://`` hot-backup node (``open_source``
  builds it; requests are signed with the bank's identity).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hubi.bank import audit as audit_mod
from hubi.bank import records as rec
from hubi.bank.store import Store, display_url, open_store
from hubi_core import verify

__all__ = [
    "RecordSource",
    "RestoreError",
    "RestoreResult",
    "StoreRecordSource",
    "open_source",
    "restore",
]


class RestoreError(RuntimeError):
    """The restore cannot run (no bank key to check records with, unreadable source, ...)."""


class RecordSource(Protocol):
    """Where lost records come from: ``fetch([(book, n), ...])`` yields the ones it has."""

    def fetch(self, names: Sequence[tuple[str, int]]) -> Iterable[Any]: ...


@dataclass(frozen=True)
class _Got:
    book: str
    n: int
    body: bytes
    hchain: bytes
    seq: int | None


@dataclass(frozen=True)
class _Row:
    """A database source's row, its cells as stored (bytes, or whatever a damaged cell holds)."""

    book: Any
    n: Any
    body: Any
    hchain: Any
    seq: Any


class _Malformed(RestoreError):
    """A record from the source that cannot be read: `name` is its (book, n) when those could
    be read (it is then refused by name), `why` says which field is wrong and how."""

    def __init__(self, name: tuple[str, int] | None, why: str):
        where = f"{name[0]}#{name[1]}: " if name else ""
        super().__init__(f"the source sent a malformed record: {where}{why}")
        self.name, self.why = name, why


def _bytes_field(name: str, v: Any, hex_ok: bool) -> bytes:
    """A record's bytes field: bytes, or (`hex_ok`: the JSON a node sends) hex."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    if not (hex_ok and isinstance(v, str)):
        raise ValueError(f"its {name} is {audit_mod._what(v)}, not bytes")
    if len(v) % 2:
        raise ValueError(f"its {name} is {len(v)} hex digits, an odd number (cut short?)")
    try:
        return bytes.fromhex(v)
    except ValueError:
        raise ValueError(f"its {name} is not hex: {v[:40]!r}") from None


def _coerce(item: Any) -> _Got:
    """`item` as a record; _Malformed naming the field that is wrong (never the whole restore:
    one bad record from a backup must not stop the good ones going back)."""
    hex_ok = isinstance(item, dict)
    if hex_ok:
        get = item.get
        book, n = get("book"), get("number", get("n"))
    elif not hasattr(item, "book"):
        raise _Malformed(None, f"{str(item)[:40]!r}, not a record")
    else:  # a StoredRecord or a row of a database source
        book, n = getattr(item, "book", None), getattr(item, "n", None)
        item = {k: getattr(item, k, None) for k in ("body", "hchain", "seq")}
        get = item.get
    if not isinstance(book, str) or not book:
        raise _Malformed(None, f"a record whose book is {audit_mod._what(book)}")
    num = audit_mod._int(n)
    if num is None:
        raise _Malformed(None, f"a record of {book} whose number is {audit_mod._what(n)}")
    raw_seq = get("seq")
    seq = audit_mod._int(raw_seq)
    if isinstance(raw_seq, str):  # a number as text (an untyped column) is still a number
        with contextlib.suppress(ValueError):
            seq = int(raw_seq)
    try:
        if raw_seq is not None and seq is None:
            raise ValueError(f"its register position is {audit_mod._what(raw_seq)}, not a number")
        body, hchain = (_bytes_field(k, get(k), hex_ok) for k in ("body", "hchain"))
    except ValueError as exc:
        raise _Malformed((book, num), str(exc)) from None
    return _Got(book, num, body, hchain, seq)


class StoreRecordSource:
    """Records from another database: a bank database (``records``) or a replica store
    (``replica_records``, as ``hubi bank serve --replica-of`` keeps it)."""

    def __init__(self, url: str):
        self.url = url
        self.store = open_store(url, create=False, migrate=False, books=False)  # a replica's too
        tx = self.store.reader()
        self.table = None
        for table in ("replica_records", "records"):
            try:  # autocommit: a failed probe leaves the connection usable
                tx.one(f"SELECT book, n, body, hchain FROM {table} LIMIT 1")
            except Exception:
                continue
            self.table = table
            break
        if self.table is None:
            self.store.close()
            raise RestoreError(
                f"{display_url(url)} holds no records table (not a bank or replica database)"
            )

    def fetch(self, names: Sequence[tuple[str, int]]) -> list[_Row]:
        tx = self.store.reader()
        out = []
        seq_col = "seq" if self.table == "replica_records" else None
        for book, n in names:
            if seq_col:
                row = tx.one(
                    f"SELECT book, n, body, hchain, seq FROM {self.table} WHERE book = ? AND n = ?",
                    (book, n),
                )
            else:
                row = tx.one(
                    "SELECT r.book, r.n, r.body, r.hchain, g.seq FROM records r LEFT JOIN register g "
                    "ON g.book = r.book AND g.n = r.n WHERE r.book = ? AND r.n = ?",
                    (book, n),
                )
            if row is not None:  # cells as stored: a damaged one is named by _coerce
                out.append(_Row(*row))
        return out

    def close(self) -> None:
        self.store.close()


def open_source(url: str, *, signer: Any = None, bank: str | None = None) -> RecordSource:
    """A record source for a backup URL: ``http(s)://`` node (needs the bank's request
    `signer`, ``hubi.bank.auth.Signer``) or a database URL."""
    if url.startswith(("http://", "https://")):
        if signer is None:
            raise RestoreError(
                "a hot-backup node only answers requests signed by the bank: pass --home"
            )
        from hubi.bank.client import HttpRecordSource

        return HttpRecordSource(url, signer, bank=bank)
    return StoreRecordSource(url)


@dataclass
class RestoreResult:
    wanted: list[tuple[str, int]]
    restored: list[tuple[str, int]] = field(default_factory=list)
    unavailable: list[tuple[str, int]] = field(default_factory=list)
    rejected: list[tuple[str, int, str]] = field(default_factory=list)
    # records the source sent that name no book and number (what is wrong with each)
    malformed: list[str] = field(default_factory=list)
    before: audit_mod.AuditReport | None = None
    after: audit_mod.AuditReport | None = None

    @property
    def ok(self) -> bool:
        return self.after is not None and self.after.ok

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "wanted": [{"book": b, "record": n} for b, n in self.wanted],
            "restored": [{"book": b, "record": n} for b, n in self.restored],
            "unavailable": [{"book": b, "record": n} for b, n in self.unavailable],
            "rejected": [{"book": b, "record": n, "reason": r} for b, n, r in self.rejected],
            "malformed": list(self.malformed),
            "before": self.before.as_dict() if self.before else None,
            "after": self.after.as_dict() if self.after else None,
        }


def restore(
    store: Store,
    source: RecordSource,
    *,
    trust: verify.Trust | None = None,
    keys: rec.BookKeys | None = None,
    names: Sequence[tuple[str, int]] | None = None,
    memo: audit_mod.AuditMemo | None = None,
) -> RestoreResult:
    """Fetch exactly the lost records (``names``, default: what a full audit finds missing or
    truncated) from `source`, check and re-insert them, audit again."""
    memo = memo or audit_mod.AuditMemo()
    before = audit_mod.audit(store, trust=trust, keys=keys, memo=memo)
    wanted = list(names) if names is not None else before.lost()
    unlisted: set[tuple[str, int]] = set()
    if names is None and any(
        f.book == audit_mod.REGISTER and f.kind == "missing" for f in before.findings
    ):
        unlisted = _unregistered(store, set(wanted))
        wanted += sorted(unlisted)
    result = RestoreResult(wanted, before=before)
    if not wanted:
        result.after = before
        return result
    tx = store.reader()
    bank = (tx.meta("bank") or b"").decode()
    key = (
        trust.bank_key(bank)
        if (trust is not None and bank in trust.consortium.banks)
        else tx.meta("bank_key")
    )
    if key is None:
        raise RestoreError("no bank key to check restored records with (pass the trust bundle)")
    verifier = rec.BookVerifier(bank, key)
    tried: set[tuple[str, int]] = set()
    batch = wanted
    while True:
        tried.update(batch)
        done = len(result.restored)
        _put_back(store, source, verifier, batch, result, unlisted)
        result.after = audit_mod.audit(store, trust=trust, keys=keys, memo=memo)
        # records lost with their register rows: the audit names them one by one only as far
        # as the rows left account for them, so each round back may bring more into view
        more = [] if names is not None else [w for w in result.after.lost() if w not in tried]
        if not more or len(result.restored) == done:
            return result
        result.wanted += more
        batch = more


def _unregistered(store: Store, have: set[tuple[str, int]]) -> set[tuple[str, int]]:
    """Records in their books (1..head) that no register row names: rows lost without their
    records, which the audit names only by position. The backup gives each one's position."""
    rows = store.reader().all(
        "SELECT r.book, r.n FROM records r JOIN books b ON b.book = r.book "
        "LEFT JOIN register g ON g.book = r.book AND g.n = r.n "
        "WHERE g.seq IS NULL AND r.n >= 1 AND r.n <= b.n LIMIT ?",
        (audit_mod.MAX_LOST,),
    )
    out = {(b, n) for b, n in rows if isinstance(b, str) and isinstance(n, int)}
    return out - have


def _put_back(
    store: Store,
    source: RecordSource,
    verifier: rec.BookVerifier,
    wanted: list[tuple[str, int]],
    result: RestoreResult,
    unlisted: frozenset[tuple[str, int]] | set[tuple[str, int]] = frozenset(),
) -> None:
    """Fetch `wanted` from `source`, check each record and insert the ones that fit (one
    transaction); what was restored, unavailable or rejected goes into `result`. A record of
    `unlisted` is here already: only its register row goes back, so the source must give it."""
    tx = store.reader()
    got: dict[tuple[str, int], _Got] = {}
    bad: dict[tuple[str, int], str] = {}
    want_set = set(wanted)
    for item in source.fetch(wanted):
        try:
            g = _coerce(item)
        except _Malformed as exc:  # refused on its own: the good records still go back
            if exc.name is None:
                result.malformed.append(exc.why)
            elif exc.name in want_set:
                bad[exc.name] = f"the source sent it malformed: {exc.why}"
            continue
        if (g.book, g.n) in want_set:
            got[(g.book, g.n)] = g
    result.rejected += [(b, n, why) for (b, n), why in bad.items() if (b, n) not in got]
    result.unavailable += [w for w in wanted if w not in got and w not in bad]
    by_book: dict[str, list[_Got]] = {}
    for g in got.values():
        by_book.setdefault(g.book, []).append(g)
    accepted: list[_Got] = []
    raw_size = tx.scalar("SELECT size FROM register_head WHERE id = 1", default=0)
    size = audit_mod._int(raw_size)
    if size is None or size < 0:  # no bound to check a position against: named, not a traceback
        size = f"the register's size is {audit_mod._what(raw_size)}, not a count"
    for book, items in sorted(by_book.items()):
        items.sort(key=lambda g: g.n)
        head = tx.one("SELECT n, hchain FROM books WHERE book = ?", (book,))
        restored_here: dict[int, bytes] = {}
        for g in items:
            why = _check(tx, verifier, g, restored_here, head) or _check_seq(tx, g, size)
            if not why and g.seq is None and (g.book, g.n) in unlisted:
                why = "the source gives no register position for it (its register row is lost)"
            if why:
                result.rejected.append((g.book, g.n, why))
            else:
                accepted.append(g)
                restored_here[g.n] = g.hchain
    accepted = _one_per_position(accepted, result)
    mine: list[tuple[str, int]] = []  # what this run put back, not a restore running beside it
    with store.transaction() as wtx:  # reported once committed
        for g in accepted:
            put = False
            # looked up, not ON CONFLICT alone: a records table rebuilt without its key (which
            # the audit names) has no conflict target, and the restore failed on it; DO NOTHING
            # still: another restore's insert of the same row (PostgreSQL, READ COMMITTED) waits
            # for it to commit and then inserts nothing, where it failed on the key
            if wtx.one("SELECT 1 FROM records WHERE book = ? AND n = ?", (g.book, g.n)) is None:
                cur = wtx.execute(
                    "INSERT INTO records (book, n, body, hchain) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (g.book, g.n, g.body, g.hchain),
                )
                put = cur.rowcount > 0
            if (
                g.seq is not None
                and wtx.one("SELECT 1 FROM register WHERE seq = ?", (g.seq,)) is None
            ):
                cur = wtx.execute(
                    "INSERT INTO register (seq, book, n) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    (g.seq, g.book, g.n),
                )
                put = put or cur.rowcount > 0
            if put:
                mine.append((g.book, g.n))
    result.restored += mine


def _check(
    tx: Any, verifier: rec.BookVerifier, g: _Got, restored: dict[int, bytes], head: tuple | None
) -> str | None:
    """Why a fetched record must not go back in (None: it fits). A neighbour or head cell that
    is damaged (the audit names it) links nothing, as a neighbour that is not there."""
    try:
        r = rec.Record.parse(g.body)
    except rec.RecordFormatError as exc:
        return f"does not parse: {exc}"
    if (r.book, r.n) != (g.book, g.n):
        return f"the bytes are record {r.book}#{r.n}, not {g.book}#{g.n}"
    bad = verifier.check_record(r)
    if bad:
        return " and ".join(bad) + " do not verify under the bank's key"
    if g.n == 1:
        prev = rec.ZERO32
    elif g.n - 1 in restored:
        prev = restored[g.n - 1]
    else:
        row = tx.one("SELECT hchain FROM records WHERE book = ? AND n = ?", (g.book, g.n - 1))
        prev = audit_mod._blob(row[0]) if row else None
    if prev is not None and rec.chain_hash(prev, g.n, g.body) != g.hchain:
        return f"does not chain onto record {g.n - 1}"
    nxt = tx.one("SELECT body, hchain FROM records WHERE book = ? AND n = ?", (g.book, g.n + 1))
    nxt_body, nxt_hc = (audit_mod._blob(v) for v in nxt) if nxt else (None, None)
    if (
        nxt_body is not None
        and nxt_hc is not None
        and rec.chain_hash(g.hchain, g.n + 1, nxt_body) != nxt_hc
    ):
        return f"record {g.n + 1} does not chain onto it"
    head_n, head_hc = (audit_mod._int(head[0]), audit_mod._blob(head[1])) if head else (None, None)
    if head_n == g.n and head_hc is not None and head_hc != g.hchain:
        return "its hash chain value is not the one the signed head names"
    return None


def _check_seq(tx: Any, g: _Got, size: int | str) -> str | None:
    """Why the register position the source gives must not be written (None: it fits). The
    position is not signed: one at or past the register's end would take the place of the next
    booking (whose insert then fails: the bank could book nothing more). `size` is the
    register's size, or why it cannot be read."""
    if g.seq is None:
        return None
    if isinstance(size, str):
        return f"its register position {g.seq} cannot be checked: {size}"
    if g.seq < 0:
        return f"its register position {g.seq} is negative"
    if g.seq >= size:
        return f"its register position {g.seq} is not below the register's size {size}"
    have = tx.one("SELECT book, n FROM register WHERE seq = ?", (g.seq,))
    if have is not None and (have[0], audit_mod._int(have[1])) != (g.book, g.n):
        return f"its register position {g.seq} holds {have[0]}#{have[1]}"
    at = tx.one("SELECT seq FROM register WHERE book = ? AND n = ?", (g.book, g.n))
    if at is not None and audit_mod._int(at[0]) != g.seq:
        return f"the register has it at position {audit_mod._what(at[0])}, not {g.seq}"
    return None


def _one_per_position(accepted: list[_Got], result: RestoreResult) -> list[_Got]:
    """`accepted` less the records whose position the source gives to another record too:
    positions are not signed, so neither claim can be trusted, and the register row a record
    goes back without is never brought back (the record stays lost: a sound backup can)."""
    claims: dict[int, list[_Got]] = {}
    for g in accepted:
        if g.seq is not None:
            claims.setdefault(g.seq, []).append(g)
    out = []
    for g in accepted:
        same = claims.get(g.seq, []) if g.seq is not None else []
        if len(same) > 1:
            others = ", ".join(f"{o.book}#{o.n}" for o in same if o is not g)
            result.rejected.append(
                (
                    g.book,
                    g.n,
                    f"its register position {g.seq} is the one the source gives {others} too",
                )
            )
        else:
            out.append(g)
    return out
