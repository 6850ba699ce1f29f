"""What the HTTP layer (``api``) asks of a primary bank node, on top of ``engine.BankEngine``.

Every method returns plain JSON-able values and turns the engine's errors into ``ApiError``s with
a 4xx status and a code (unknown account → 404 not-found, a note the engine cannot parse → 400
bad-object, an interbank note before issue 5's consortium path → 409 not-local, ...). Outcomes
are named for the merchant:

    engine status        reply outcome
    booked               booked    (+ the payee's SettlementNotice)
    refused, funds       bounced   (+ the bank-signed Refusal)
    refused, other       refused   (double issuance, allowance, expiry; + Refusal)
    rejected             refused   (bad signature, bad template, unknown account; + Refusal)
    debited / credited   booked    (one side of an interbank note, issue 5)
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from hubi.bank import engine as eng_mod
from hubi.bank import merkle
from hubi.bank import records as rec
from hubi.bank.api import ApiError, store_error
from hubi.bank.replica import record_json
from hubi.bank.store import Store, display_url, down_errors
from hubi.output import counted
from hubi_core import codec, ecies, ids
from hubi_core.errors import CodecError

# a book's stored head or record that cannot be read (a damaged row: `hubi audit verify` names
# it): the notes on that book cannot be booked, and no other's booking should fail with them
DAMAGED = (rec.ChainError, rec.RecordFormatError, ecies.EciesError)
# the crypto library failed (out of memory): nothing is wrong with the books, and the same
# request may succeed in a moment, so a 503 to retry, never 409 book-damaged
TRANSIENT = (rec.CryptoFailure, MemoryError)
# the most notes one group commit books: a transaction has a fixed cost (the commit, the heads'
# signature; bench/bank.md), and a batch's notes all wait for its slowest
MAX_BATCH = 64
log = logging.getLogger("hubi.bank.backend")


class GroupCommit:
    """One booking thread per node: uploads arriving together are booked together.

    Request threads hand their note to :meth:`submit` and wait; the booking thread takes
    everything queued (up to ``max_batch``) and books it with ``engine.book_many`` — one
    transaction, one answer per note, exactly the answers booking them one by one would give.
    A lone upload is a batch of one (no waiting for company), so latency stays that of
    ``engine.book``; under load, fewer and larger transactions raise throughput. One writer per
    node also keeps SQLite's single write lock uncontended within the process.
    """

    def __init__(self, engine: eng_mod.BankEngine, max_batch: int = MAX_BATCH):
        self.engine = engine
        self.max_batch = max_batch
        self._q: queue.SimpleQueue[tuple[bytes, Future[eng_mod.Outcome]] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0
        self.notes = 0

    def submit(self, data: bytes, timeout: float | None = None) -> eng_mod.Outcome:
        fut: Future[eng_mod.Outcome] = Future()
        with self._lock:
            if self._closed:
                raise ApiError(503, "shutting-down", "the node is shutting down")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="booking", daemon=True)
                self._thread.start()
            self._q.put((data, fut))
        return fut.result(timeout)

    def _loop(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._book(batch)
            if stop:
                return

    def _book(self, batch: list[tuple[bytes, Future[eng_mod.Outcome]]]) -> None:
        self.batches += 1
        self.notes += len(batch)
        try:
            outs = self.engine.book_many([d for d, _ in batch])
        except DAMAGED as exc:  # one book's stored head: its notes fail, not their neighbours'
            if len(batch) > 1:  # the batch's transaction rolled back; each on its own
                for item in batch:
                    self._book([item])
                return
            log.error("booking a note failed on a damaged book: %s: %s", type(exc).__name__, exc)
            batch[0][1].set_exception(exc)
            return
        except Exception as exc:  # the store failed: every waiting upload gets the error
            log.error("booking a batch of %d failed: %s: %s", len(batch), type(exc).__name__, exc)
            for _, fut in batch:
                fut.set_exception(exc)
            return
        for (_, fut), out in zip(batch, outs):
            fut.set_result(out)

    def close(self) -> None:
        """Book what is queued, then stop the booking thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._q.put(None)
            thread.join(60)


def _transient(exc: BaseException) -> ApiError:
    log.error("crypto library failure: %s: %s", type(exc).__name__, exc)
    return ApiError(
        503,
        "crypto-unavailable",
        f"the node's crypto library failed ({type(exc).__name__}: {exc}); the books are not "
        "damaged and nothing was stored: send it again",
    )


def _damaged(exc: Exception) -> ApiError:
    return ApiError(
        409,
        "book-damaged",
        f"a book this needs cannot be read: {type(exc).__name__}: {exc} (the bank's operator: "
        "hubi audit verify names the record, hubi audit restore brings it back)",
    )


def outcome_name(out: eng_mod.Outcome) -> str:
    if out.ok:
        return "booked"
    if out.status == eng_mod.REFUSED and out.reason_code in codec.BOUNCE_REASONS:
        return "bounced"
    return "refused"


def durability_warning(store: Store) -> str | None:
    """The warning (logged here, shown in /health's detail) for a database server set to lose
    acknowledged commits in a crash: every note the node answered "booked" since the server's
    last WAL write may be gone after it, and the merchant was told it was booked. None when
    it is set safely, or cannot be asked now (the node's own checks say so then)."""
    try:
        risks = store.durability_risks()
    except down_errors():
        return None
    if not risks:
        return None
    why = (
        f"the database server runs with {', '.join(risks)}: a crash of it or of its host can "
        "lose notes the node already answered as booked (turn "
        + ("it" if len(risks) == 1 else "them")
        + " on in postgresql.conf)"
    )
    log.warning("%s", why)
    return why


class EngineBackend:
    """A primary node's backend: one BankEngine (thread-safe) behind the API."""

    UPLOAD_KINDS: frozenset[int] = frozenset({codec.NOTE})

    def __init__(self, engine: eng_mod.BankEngine, max_batch: int = MAX_BATCH):
        self.engine = engine
        self.bank = engine.bank
        self.commits = GroupCommit(engine, max_batch)
        # why the node must not book now (its database lock is not its own: hubi.bank.server)
        self.fenced: str | None = None
        self.durability = durability_warning(engine.store)

    def fence(self, why: str | None) -> None:
        """Stop booking, saying `why` (uploads and writes get 503 node-lock-lost, /health is
        degraded), or book again (None)."""
        self.fenced = why

    def check_fence(self) -> None:
        """ApiError 503 node-lock-lost while fenced (a write must not start then)."""
        why = self.fenced
        if why is not None:
            raise ApiError(503, "node-lock-lost", f"{why}; nothing was stored: send it again")

    @classmethod
    def open(
        cls,
        home: Path,
        bank: str,
        url: str | Store,
        trust: Any = None,
        identity: Any = None,
        checkpoint_every: int | None = None,
    ) -> EngineBackend:
        if identity is not None and trust is not None:
            from hubi import kmc as kmc_mod

            kw: dict[str, Any] = {"checkpoint_every": checkpoint_every}
            kw.update(eng_mod.kept_treasury_key(kmc_mod.bank_dir(home, bank) / "treasury.secret"))
            return cls(eng_mod.BankEngine(url, identity, trust, **kw))
        return cls(
            eng_mod.BankEngine.open(url, home=home, bank=bank, checkpoint_every=checkpoint_every)
        )

    def close(self) -> None:
        self.commits.close()
        self.engine.close()

    # ------------------------------------------------------------------------ helpers
    def template_of(self, account: str) -> bytes | None:
        """The Template this bank issued to `account` (None if it has no such account)."""
        info = self.engine.account(account)
        return None if info is None else info.template

    def health(self) -> dict[str, Any]:
        why = self.fenced
        if why is None:
            return self._figures()
        # named as such (the route answers "degraded"), with the figures when the store gives
        # them: a fenced node's store is often fine, and "store: unavailable" would lie
        out: dict[str, Any] = {"node_lock": why}
        try:
            out.update(self._figures())
        except Exception as exc:  # noqa: BLE001 - the store down as well: said as the route does
            out["store"] = f"unavailable ({type(exc).__name__})"
        return out

    def _figures(self) -> dict[str, Any]:
        e = self.engine
        last = e.latest_checkpoint()
        extra = {"durability": self.durability} if self.durability else {}
        return extra | {
            "store": e.store.dialect,
            "database": display_url(e.store.url),
            "register_size": e.register_size(),
            "checkpoint_every": e.checkpoint_every,
            "latest_checkpoint": last.tree_size if last else None,
            "checkpoint_error": e.checkpoint_error,
            "booking": {"batches": self.commits.batches, "notes": self.commits.notes},
        }

    # ------------------------------------------------------------------------- upload
    def upload(self, data: bytes) -> dict[str, Any]:
        """Book one uploaded note (through the group commit); JSON answer or ApiError."""
        try:
            obj = codec.decode(data, codec.NOTE)
        except CodecError as exc:
            raise ApiError(
                400, "bad-object", f"not a valid note: {type(exc).__name__}: {exc}"
            ) from None
        try:
            banks = {ids.bank_of(obj.signer), ids.bank_of(obj["payee"])}
        except CodecError as exc:
            raise ApiError(400, "bad-object", str(exc)) from None
        if banks != {self.bank}:
            raise ApiError(
                409,
                "not-local",
                f"note {obj.signer} -> {obj['payee']} is not a same-bank note of {self.bank}: "
                "interbank notes settle through the consortium",
            )
        self.check_fence()
        try:
            out = self.commits.submit(data)
        except down_errors() as exc:  # 503, not a bug (a 500 is kept for those)
            raise store_error(exc, f"{type(exc).__name__}: {exc}", note=True) from None
        except eng_mod.MalformedNote as exc:
            raise ApiError(400, "bad-object", str(exc)) from None
        except eng_mod.NotLocal as exc:
            raise ApiError(409, "not-local", str(exc)) from None
        except TRANSIENT as exc:
            raise _transient(exc) from None
        except DAMAGED as exc:
            raise _damaged(exc) from None
        return self.outcome_json(out)

    @staticmethod
    def outcome_json(out: eng_mod.Outcome) -> dict[str, Any]:
        notices = []
        if out.settlement:
            notices.append(
                {
                    "kind": "SettlementNotice",
                    "account": out.payee,
                    "note_id": out.note_id.hex() if out.note_id else None,
                    "hex": out.settlement.hex(),
                }
            )
        return {
            "note_id": out.note_id.hex() if out.note_id else "",
            "kind": "Note",
            "outcome": outcome_name(out),
            "status": out.status,
            "reason_code": out.reason_code,
            "reason": _public_reason(out),
            "reason_name": codec.REASON_NAMES.get(out.reason_code) if out.reason_code else None,
            "refusal": out.refusal.hex() if out.refusal else None,
            "duplicate": bool(out.replay),
            "payer": out.payer,
            "payee": out.payee,
            "amount": out.amount,
            "debit": {"book": out.payer, "number": out.debit_n} if out.debit_n else None,
            "credit": {"book": out.payee, "number": out.credit_n} if out.credit_n else None,
            "notices": notices,
        }

    # ----------------------------------------------------------------- accounts/books
    def notices(self, account: str, after: int, limit: int) -> list[dict[str, Any]]:
        rows = self.engine.notices(account, after, limit)
        return [
            {
                "id": r.id,
                "kind": codec.kind_name(r.kind),
                "account": r.account,
                "note_id": r.note_id.hex(),
                "hex": r.obj.hex(),
                "time": r.time,
            }
            for r in rows
        ]

    def book(self, account: str, start: int, limit: int) -> dict[str, Any] | None:
        e = self.engine
        try:
            head = e.head(account)
        except eng_mod.UnknownAccount:
            return None
        except DAMAGED as exc:
            raise _damaged(exc) from None
        recs = e.records(account, start, start + limit - 1)
        return {
            "account": account,
            "length": head.n,
            "head": {
                "n": head.n,
                "hchain": head.hchain.hex(),
                "ecode": head.ecode.hex(),
                "statement": head.statement.hex(),
                "sig": head.sig.hex(),
            },
            "records": [_stored_json(r) for r in recs],
        }

    def account_info(self, account: str) -> dict[str, Any] | None:
        e = self.engine
        info = e.account(account)
        if info is None:
            return None
        out = info.as_dict()
        try:  # the head row itself may be the damaged part
            head = e.head(account)
            out["length"] = head.n
            out["balance"] = e.keys.balance_of(head)
        except TRANSIENT as exc:
            raise _transient(exc) from None
        except DAMAGED as exc:
            raise _damaged(exc) from None
        return out

    def open_account(self, template: bytes) -> dict[str, Any]:
        self.check_fence()
        try:
            info = self.engine.open_account(template)
        except CodecError as exc:
            raise ApiError(400, "bad-object", f"template: {type(exc).__name__}: {exc}") from None
        except eng_mod.BankEngineError as exc:
            raise ApiError(409, "conflict", str(exc), "template") from None
        return info.as_dict()

    def checkpoint_now(self) -> dict[str, Any]:
        self.check_fence()
        e = self.engine
        size = e.register_size()
        last = e.latest_checkpoint()
        if size == 0:
            raise ApiError(409, "conflict", "the register is empty: nothing to checkpoint")
        if last is None or last.tree_size < size:
            try:
                made = e.checkpoint(size)
            except eng_mod.BankEngineError as exc:
                raise ApiError(409, "register-damaged", str(exc)) from None
            assert made is not None
            return made.as_dict()
        return last.as_dict()

    # -------------------------------------------------------------------------- audit
    def audit(self, books: list[str] | None, chain_only: bool) -> dict[str, Any]:
        try:
            from hubi.bank import audit as audit_mod
        except ImportError:
            raise ApiError(404, "not-found", "this node has no audit library") from None
        return audit_mod.api_audit(self.engine, books=books, chain_only=chain_only)

    # --------------------------------------------------------------- checkpoints/proofs
    def checkpoints(self, after: int, limit: int) -> list[dict[str, Any]]:
        return [c.as_dict() for c in self.engine.checkpoints(after, limit)]

    def latest_checkpoint(self) -> dict[str, Any] | None:
        c = self.engine.latest_checkpoint()
        return None if c is None else c.as_dict()

    def record_body(self, book: str, number: int) -> bytes | None:
        """The stored bytes of record (book, number), or None."""
        got = self.engine.records_by_name([(book, number)])
        return got[0].body if got else None

    def inclusion_proof(self, tree_size: int | None, book: str, number: int) -> dict[str, Any]:
        try:
            return self.engine.inclusion_proof(book, number, tree_size)
        except eng_mod.BankEngineError as exc:
            raise ApiError(404, "not-found", str(exc)) from None
        except merkle.MerkleError as exc:
            raise ApiError(422, "bad-parameter", str(exc)) from None

    def consistency_proof(self, first: int, second: int) -> dict[str, Any]:
        size = self.engine.register_size()
        if second > size:
            raise ApiError(
                404,
                "not-found",
                f"the register has {counted(size, 'entry', 'entries')}, fewer than {second}",
                "second",
            )
        try:
            path = self.engine.consistency_proof(first, second)
        except eng_mod.BankEngineError as exc:
            raise ApiError(409, "register-damaged", str(exc)) from None
        except merkle.MerkleError as exc:
            raise ApiError(422, "bad-parameter", str(exc)) from None
        cps = {size: self.engine.checkpoint_at(size) for size in (first, second)}
        return {
            "first": first,
            "second": second,
            "path": [p.hex() for p in path],
            "first_checkpoint": cps[first].obj.hex() if cps[first] else None,
            "second_checkpoint": cps[second].obj.hex() if cps[second] else None,
        }

    # ------------------------------------------------------------- hot backup records
    def records(
        self, names: Sequence[tuple[str, int]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        got = {(r.book, r.n): r for r in self.engine.records_by_name(names)}
        found, missing = [], []
        reader = self.engine.store.reader()
        for book, n in names:
            r = got.get((book, n))
            if r is None:
                missing.append({"book": book, "number": n})
                continue
            seq = reader.scalar("SELECT seq FROM register WHERE book = ? AND n = ?", (book, n))
            found.append(
                record_json(-1 if seq is None else int(seq), r.book, r.n, r.body, r.hchain)
            )
        return found, missing

    def log(self, start: int, limit: int) -> dict[str, Any]:
        """Register entries seq >= start with their records, in register order."""
        # one snapshot: a booking committed between the rows and the size showed a backup no
        # rows and a larger register, which it takes for a record lost at the primary
        with self.engine.store.snapshot() as tx:
            rows = tx.all(
                "SELECT g.seq, g.book, g.n, r.body, r.hchain FROM register g "
                "JOIN records r ON r.book = g.book AND r.n = g.n "
                "WHERE g.seq >= ? ORDER BY g.seq LIMIT ?",
                (start, limit),
            )
            size = int(tx.scalar("SELECT size FROM register_head WHERE id = 1", default=0))
        return {
            "from": start,
            "register_size": size,
            "records": [
                record_json(int(s), b, int(n), bytes(body), bytes(h)) for s, b, n, body, h in rows
            ],
        }


def _public_reason(out: eng_mod.Outcome) -> str | None:
    """The refusal reason as told to whoever uploaded: never the payer's balance."""
    if out.reason_code == codec.REASON_INSUFFICIENT_FUNDS:
        return f"insufficient funds: {out.payer} cannot cover {out.amount}"
    return out.reason


def _stored_json(r: eng_mod.StoredRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "book": r.book,
        "number": r.n,
        "body": r.body.hex(),
        "hchain": r.hchain.hex(),
    }
    with contextlib.suppress(ValueError):
        out["record"] = r.record.to_json()
    return out
