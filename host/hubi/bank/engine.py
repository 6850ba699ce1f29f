"""The bank's booking engine (DESIGN §4-§5): verify a note, book it into evidence-chained books in
one transaction, answer with signed notices, keep a checkpointed register.

Use::

    from hubi.bank.engine import BankEngine
    eng = BankEngine.open("sqlite:///var/hubi/bka.db", home=Path("HOME"), bank="BKA")
    # or: BankEngine(store, identity, trust, treasury_key=...)
    eng.open_account(template)                  # register an account this bank sealed
    eng.fund("BKA-000042", 10_000)              # the treasury pays the account (an ordinary note)
    out = eng.book(note_bytes)                  # same-bank note: debit + credit, one transaction
    out.status, out.settlement, out.refusal     # "booked" | "refused" | "rejected"; notice bytes
    eng.outcome(note_id); eng.notices("BKA-000042")
    eng.records("BKA-000042"); eng.head("BKA-000042"); eng.balance("BKA-000042")
    eng.checkpoints(); eng.inclusion_proof("BKA-000042", 7); eng.consistency_proof(1000, 2000)

Money. Every movement is a note. Money enters through the bank's treasury account
``<BANK>-treasury`` (role ``treasury``, allowed any negative balance): ``fund()`` has the treasury
sign an ordinary note to a customer, and that note is booked like any other, so every record in
every book is a debit or a credit justified by a payer-signed note.

Booking a same-bank note (``book``):
  1. decode (``MalformedNote`` if the bytes are not a note) and look the note id up: the same
     note again returns the stored answer (``replay=True``); a *different* note with a used payer
     serial is double issuance (step 4).
  2. verify offline (``verify_note``: every field signature, low S, the bank's seal over the
     template); a failure → status ``rejected`` with a signed Refusal (bad-signature or
     bad-template), nothing stored: a forged note must not claim its payer's serial. A note
     ``validate()`` passed moments before (a peer's endorsement, then its debit from the log)
     is not verified twice: its report is kept by the SHA-256 of its bytes and trust anchors.
  3. bind: payer and payee are accounts opened here (else ``rejected``/unknown-account),
     amount > 0, payer != payee (bad-format); the offline allowance the note spends — the one
     it names, else the payer's allowance whose serial range holds the note's serial (each
     covers the serials from its first_serial on; tokens leave the field out): issued to the
     payer, not expired at the note's time, serial >= first_serial, cap not exceeded
     (``refused``/over-allowance or expired, stored).
  4. in one transaction, with both books locked: double issuance → the second note is kept in
     ``double_issues`` with a signed Refusal (double-issuance), the payer flagged
     (``FLAG_DOUBLE_ISSUE``), nothing booked; insufficient funds → ``refused`` with a signed
     Refusal, nothing booked; otherwise a debit record in the payer's book and a credit record
     in the payee's, both heads signed (one statement), both appended to the register.
  5. notices, in the same transaction: SettlementNotice to the payee (status verified),
     BalanceNotice to the payer (new balance ECIES-sealed to the payer's key, info
     ``"hubi/balance/1\\0" || payer``, plaintext i64 big-endian), listed by ``notices()``
     (``notices="lazy"``: signed when first fetched instead). After commit, a checkpoint when
     the register crossed a multiple of ``checkpoint_every``.

Interbank notes are settled per side (issue 5): ``debit(note)`` at the payer's bank books only
the debit (status ``debited``, BalanceNotice), ``credit(note)`` at the payee's bank books only the
credit (status ``credited``, SettlementNotice with status settled). ``book`` raises ``NotLocal``
for them. ``validate(note)`` runs every check without booking (endorsements).

Concurrency: the engine is thread-safe (one connection per thread) and several processes may
share one database. Records, heads and notices are signed before the lock is taken
(optimistically, from the state as last committed) and signed again under the lock only if
something they depend on moved meanwhile. ``book_many`` books a batch in one transaction;
concurrent ``book()`` calls are combined the same way (group commit).

Cost, per booked note: the note's four payer signatures verified, four bank signatures (sig8 and
sig9 of both records) and two sealed balances, one head signature per transaction; eager notices
add ten signatures and one ECIES seal. bench/bank.md has the figures.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time as _time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hubi.bank import issuance, merkle
from hubi.bank import records as rec
from hubi.bank.records import BookKeys, Head
from hubi.bank.store import (
    BLOB_TYPES,
    Store,
    StoreConflict,
    StoreError,
    Tx,
    describe_cell,
    display_url,
    open_store,
)
from hubi_core import codec, ec, ids, lsum, suite, verify
from hubi_core.errors import CodecError, HubiError, VerifyError

log = logging.getLogger(__name__)

__all__ = [
    "AccountInfo",
    "BankEngine",
    "BankEngineError",
    "Checkpoint",
    "FLAG_DOUBLE_ISSUE",
    "MalformedNote",
    "NoticeRow",
    "NotLocal",
    "Outcome",
    "StoredRecord",
    "UnknownAccount",
    "Verdict",
]

FLAG_DOUBLE_ISSUE = 1
BALANCE_NOTICE_INFO = b"hubi/balance/1\x00"  # + payer account id (firmware/core/wallet.py)
DEFAULT_CHECKPOINT_EVERY = 1000
# Proofs: perfect subtrees of at least 2^NODE_LEVEL leaves are kept (merkle_nodes, about one row
# per 128 records); a range without a kept node is split down to runs of at most 2^NODE_LEVEL
# records, hashed from the records.
NODE_LEVEL = 8
_SERIAL_BLOCK = 64

BOOKED = "booked"
DEBITED = "debited"
CREDITED = "credited"
REFUSED = "refused"
REJECTED = "rejected"
_OK = (BOOKED, DEBITED, CREDITED)


class BankEngineError(HubiError):
    """Base of the engine's errors; the message names what is wrong."""


class BooksDamaged(BankEngineError):
    """The books lack what the next checkpoint covers (a register entry without its record):
    nothing more is booked until `hubi audit verify` locates it and `restore` puts it back."""


class MalformedNote(BankEngineError, ValueError):
    """The bytes are not a hubi Note (codec error named in the message)."""


class NotLocal(BankEngineError):
    """The note cannot be booked by this operation at this bank (wrong bank or interbank)."""


class UnknownAccount(BankEngineError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown account"


# ------------------------------------------------------------------------------------ results


@dataclass
class Outcome:
    """The bank's answer to one note. Bytes fields are encoded hubi objects (or None).

    status: ``booked`` (same bank), ``debited`` / ``credited`` (one side of an interbank note),
    ``refused`` (valid note, not booked: insufficient funds, double issuance, allowance; stored,
    so the same note gets the same answer), ``rejected`` (invalid or unbindable note: nothing
    stored)."""

    status: str
    note_id: bytes | None
    payer: str | None = None
    payee: str | None = None
    serial: int | None = None
    amount: int | None = None
    reason_code: int | None = None
    reason: str | None = None
    debit_n: int | None = None
    credit_n: int | None = None
    refusal: bytes | None = None
    settlement: bytes | None = None
    balance_notice: bytes | None = None
    replay: bool = False
    time: int | None = None
    verification: dict | None = None
    settle_status: int | None = None  # status the SettlementNotice carries (1 verified, 2 settled)

    @property
    def ok(self) -> bool:
        return self.status in _OK

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "status": self.status,
            "ok": self.ok,
            "note_id": self.note_id.hex() if self.note_id else None,
            "payer": self.payer,
            "payee": self.payee,
            "serial": self.serial,
            "amount": self.amount,
            "reason_code": self.reason_code,
            "reason": self.reason,
            "reason_name": codec.REASON_NAMES.get(self.reason_code) if self.reason_code else None,
            "debit": {"book": self.payer, "n": self.debit_n} if self.debit_n else None,
            "credit": {"book": self.payee, "n": self.credit_n} if self.credit_n else None,
            "replay": self.replay,
            "time": self.time,
        }
        for k in ("refusal", "settlement", "balance_notice"):
            v = getattr(self, k)
            d[k] = v.hex() if v else None
        if self.verification is not None:
            d["verification"] = self.verification
        return d


@dataclass(frozen=True)
class Verdict:
    """``validate()``'s answer: would this bank book the note now (its side of it)?"""

    ok: bool
    reason_code: int | None = None
    reason: str | None = None
    note_id: bytes | None = None
    verification: dict | None = None


@dataclass(frozen=True)
class AccountInfo:
    account: str
    role: str  # customer | treasury
    overdraft: int  # how far below zero the balance may go; -1 = unlimited
    flags: int
    opened_at: int
    template: bytes | None

    @property
    def flagged(self) -> bool:
        return bool(self.flags & FLAG_DOUBLE_ISSUE)

    def as_dict(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "role": self.role,
            "overdraft": self.overdraft,
            "flags": self.flags,
            "double_issue": self.flagged,
            "opened_at": self.opened_at,
            "template": self.template.hex() if self.template else None,
        }


@dataclass(frozen=True)
class StoredRecord:
    """A record as stored: its bytes (``records.Record``) and its hash-chain value."""

    book: str
    n: int
    body: bytes
    hchain: bytes

    @property
    def record(self) -> rec.Record:
        return rec.Record.parse(self.body)

    def to_json(self) -> dict[str, Any]:
        """Wire form for hot backups and restores: {book, number, body, hchain} (hex)."""
        return {
            "book": self.book,
            "number": self.n,
            "body": self.body.hex(),
            "hchain": self.hchain.hex(),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> StoredRecord:
        return cls(
            str(doc["book"]),
            int(doc["number"]),
            bytes.fromhex(doc["body"]),
            bytes.fromhex(doc["hchain"]),
        )


@dataclass(frozen=True)
class NoticeRow:
    id: int
    account: str
    kind: int  # codec.SETTLEMENT | codec.BALANCE | codec.REFUSAL
    note_id: bytes
    obj: bytes
    time: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "account": self.account,
            "kind": codec.KIND_NAMES.get(self.kind, str(self.kind)),
            "note_id": self.note_id.hex(),
            "object": self.obj.hex(),
            "time": self.time,
        }


@dataclass(frozen=True)
class Checkpoint:
    """A signed RFC 9162 tree head over the first ``tree_size`` register entries."""

    tree_size: int
    root: bytes
    obj: bytes  # codec CHECKPOINT object, sealed by the bank
    time: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "tree_size": self.tree_size,
            "root": self.root.hex(),
            "object": self.obj.hex(),
            "time": self.time,
        }


GROUP_MAX = 64  # notes per group-commit transaction
VERIFIED_MEMO = 4096  # notes validate() passed, kept for their booking (about 1 MB)


class _Slot:
    """One caller waiting for its note's outcome in a group commit."""

    __slots__ = ("raw", "done", "outcome", "error")

    def __init__(self, raw: bytes):
        self.raw = raw
        self.done = threading.Event()
        self.outcome: Outcome | None = None
        self.error: BaseException | None = None


# the largest amount or serial a book holds (its rows, and every balance, are signed 64-bit)
MAX_STORED = (1 << 63) - 1


class _Item:
    """One note on its way through a booking batch."""

    __slots__ = ("raw", "obj", "nid", "digest", "payer", "payee", "amount", "serial",
                 "allowance", "named_allowance", "payer_key", "outcome", "_lsum")  # fmt: skip

    def __init__(self, raw: bytes, obj: codec.Obj | None):
        self.raw = raw
        self.obj = obj
        self.payer_key: bytes | None = None
        self.outcome: Outcome | None = None
        self._lsum: bytes | None = None
        if obj is None:
            self.nid = self.digest = b""
            self.payer = self.payee = ""
            self.amount = self.serial = 0
            self.allowance = self.named_allowance = None
            return
        self.payer = obj.signer
        self.payee = obj["payee"]
        self.amount = obj["amount"]
        self.serial = obj.serial
        self.named_allowance = obj.get("allowance")
        self.allowance = self.named_allowance  # or inferred from the serial (_load_state)
        self.nid = lsum.note_id(obj.signer, obj.serial)
        self.digest = hashlib.sha256(raw).digest()

    def lsum(self, digests: dict[tuple[int, str], int]) -> bytes:
        """``lsum.of_note`` of the note, the account digests taken from `digests` (a cache)."""
        if self._lsum is None:
            assert self.obj is not None
            a = digests.get((lsum.T_ACCOUNT, self.payer))
            if a is None:
                a = digests[(lsum.T_ACCOUNT, self.payer)] = lsum.account_digest(self.payer)
            c = digests.get((lsum.T_PAYEE, self.payee))
            if c is None:
                c = digests[(lsum.T_PAYEE, self.payee)] = lsum.counterparty_digest(self.payee)
            total = (
                a
                + lsum.serial_digest(self.serial)
                + lsum.amount_digest(self.amount)
                + lsum.purpose_digest(self.obj.get("purpose"))
                + c
            )
            self._lsum = lsum.to_bytes(total & lsum.MASK)
        return self._lsum

    @classmethod
    def from_outcome(cls, out: Outcome) -> _Item:
        it = cls(b"", None)
        it.nid = out.note_id or b""
        it.payer, it.payee = out.payer or "", out.payee or ""
        it.amount, it.serial = out.amount or 0, out.serial or 0
        return it

    def base(self, status: str, t: int) -> Outcome:
        return Outcome(status, self.nid, self.payer, self.payee, self.serial, self.amount, time=t)


@dataclass
class _State:
    """What a booking batch's decisions depend on (compared again under the lock)."""

    heads: dict[str, tuple]  # book -> (book, n, ecode, hchain, coded_bal, last_kind, last_lsum)
    notes: dict[bytes, tuple]
    dups: dict[bytes, tuple]
    allowances: dict[tuple[str, int], tuple[int, int, int, int]]
    # note id -> the booked note's bytes, read only where a batch's note under that id differs
    # from it (is it the same issuance with signed fields removed? ``issuance.same_issuance``)
    firsts: dict[bytes, bytes] = field(default_factory=dict)

    def copy(self) -> _State:
        return _State(
            dict(self.heads),
            dict(self.notes),
            dict(self.dups),
            dict(self.allowances),
            dict(self.firsts),
        )


@dataclass
class _Seen:
    """Step 1's reads (note and double-issue rows of a batch's notes) and the database's
    change counter just before them (``Tx.data_version``; None where there is none)."""

    version: int | None
    notes: dict[bytes, tuple]
    dups: dict[bytes, tuple]


@dataclass
class _Plan:
    """Everything one booking transaction writes, signed in advance."""

    outcomes: list[Outcome] = field(default_factory=list)
    # book, n, body, hchain
    records: list[tuple[str, int, bytes, bytes]] = field(default_factory=list)
    heads: list[tuple] = field(default_factory=list)  # n, ecode, hchain, coded_bal, ..., book
    notes: list[tuple[tuple, int | None, bytes]] = field(default_factory=list)
    dups: list[tuple] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)
    allowances: dict[tuple[str, int], int] = field(default_factory=dict)
    notices: list[tuple[str, int, bytes, bytes, int]] = field(default_factory=list)
    balances: dict[str, tuple[int, bytes, int]] = field(
        default_factory=dict
    )  # book -> n, hchain, balance


# ------------------------------------------------------------------------------------- engine


def kept_treasury_key(path: Path) -> dict[str, Any]:
    """BankEngine keywords from a kept treasury key file: ``treasury_key``, or for a damaged
    file ``treasury_problem`` (only ``fund()`` needs the key, so only it fails, naming the file).
    Nothing for no file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        return {"treasury_problem": f"cannot read the treasury key {path}: {exc.strerror or exc}"}
    fix = "restore it from backup"
    if len(raw) != 32:
        return {"treasury_problem": f"{path} holds {len(raw)} bytes, not a 32-byte key: {fix}"}
    key = int.from_bytes(raw, "big")
    if not 1 <= key < ec.N:
        return {"treasury_problem": f"{path} holds no usable key (out of range): {fix}"}
    return {"treasury_key": key}


class BankEngine:
    """One bank's books. Thread-safe; several processes may share one database.

    ``store``: an open :class:`Store` (or a URL); ``identity``: the bank's ``BankIdentity``
    (its private key signs records, heads, notices, checkpoints); ``trust``: the offline trust
    bundle (``verify.Trust``) notes are verified against; ``treasury_key``: private key of
    ``<BANK>-treasury`` (only ``fund()`` needs it); ``checkpoint_every``: register entries per
    checkpoint; ``notices``: ``"eager"`` signs notices right after booking, ``"lazy"`` when first
    asked for (``outcome()`` / ``notices()``); ``clock``: Unix-seconds source (tests);
    ``group_commit``: concurrent ``book()`` calls share transactions (one head signature and one
    commit per batch; each caller still gets exactly its own outcome). ``stats`` counts
    outcomes (booked, refused, rejected, replayed) and booking transactions since start."""

    def __init__(
        self,
        store: Store | str,
        identity: Any,
        trust: verify.Trust,
        *,
        treasury_key: int | None = None,
        treasury_problem: str | None = None,
        checkpoint_every: int | None = None,
        notices: str = "eager",
        clock: Callable[[], float] | None = None,
        group_commit: bool = True,
    ):
        self.store = store if isinstance(store, Store) else open_store(store)
        self.group_commit = group_commit
        self._gc_lock = threading.Lock()
        self._gc_queue: list[_Slot] = []
        self._gc_busy = False
        self.stats: dict[str, int] = {
            "transactions": 0,
            "booked": 0,
            "refused": 0,
            "rejected": 0,
            "replayed": 0,
        }
        self._stats_lock = threading.Lock()
        self.bank = ids.check_bank_id(identity.bank)
        self.trust = trust
        self.keys = BookKeys(self.bank, identity.private)
        self._treasury_key = treasury_key
        self._treasury_problem = treasury_problem  # why there is no key (a damaged file)
        self._treasury_checked = False
        if notices not in ("eager", "lazy"):
            raise ValueError("notices must be 'eager' or 'lazy'")
        self.notice_mode = notices
        self._clock = clock or _time.time
        self._serial_lock = threading.Lock()
        self._serials: dict[str, list[int]] = {}
        self._ckpt_lock = threading.Lock()
        self._last_size = threading.local()
        self.checkpoint_error: str | None = None  # why the checkpoint due could not be made
        # record bytes this process committed, by register position, until a checkpoint covers
        # them (the checkpoint then hashes them without reading them back)
        self._leaves: dict[int, bytes] = {}
        self._leaves_lock = threading.Lock()
        self._has_nodes: bool | None = None  # merkle_nodes in this database (schema 2)
        self.proof_leaves = 0  # records hashed for proofs (tests, bench)
        self._digests: dict[tuple[int, str], int] = {}  # lsum digests of account ids
        self._accounts: dict[str, AccountInfo] = {}
        self._balances: dict[str, tuple[int, bytes, int]] = {}
        # passing verification reports of notes validate() checked, by SHA-256 of their bytes,
        # for the booking that follows (a peer's endorsement, then its debit from the log)
        self._verified: OrderedDict[bytes, tuple[verify.Trust, verify.Report]] = OrderedDict()
        self._verified_lock = threading.Lock()
        expected = trust.bank_key(self.bank) if self.bank in trust.consortium.banks else None
        if expected is not None and expected != self.keys.public_key:
            raise BankEngineError(
                f"the identity given is not bank {self.bank}'s key in the consortium file"
            )
        self._init_meta(checkpoint_every)

    @classmethod
    def open(
        cls,
        url: str | Store,
        *,
        home: Path,
        bank: str,
        trust_dir: Path | None = None,
        trust: verify.Trust | None = None,
        **kw: Any,
    ) -> BankEngine:
        """Engine for `bank` from a hubi home (HOME/banks/<BANK>/identity.secret, HOME/trust
        unless `trust` is given, HOME/banks/<BANK>/treasury.secret if present)."""
        from hubi import kmc as kmc_mod

        identity = kmc_mod.load_bank_identity(home, bank)
        trust = trust or kmc_mod.load_trust(trust_dir or Path(home) / "trust")
        if "treasury_key" not in kw:
            kw.update(kept_treasury_key(kmc_mod.bank_dir(home, bank) / "treasury.secret"))
        return cls(url, identity, trust, **kw)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> BankEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BankEngine(bank={self.bank!r}, store={self.store!r})"

    # ---------------------------------------------------------------------------- set-up
    def _init_meta(self, checkpoint_every: int | None) -> None:
        where = display_url(self.store.url)  # for the errors: the URL, password masked
        with self.store.transaction() as tx:
            have = tx.meta("bank")
            if have is None:
                tx.set_meta("bank", self.bank.encode())
                tx.set_meta("bank_key", self.keys.public_key)
            elif have.decode() != self.bank:
                raise BankEngineError(
                    f"database {where} belongs to bank {have.decode()}, not {self.bank}"
                )
            elif tx.meta("bank_key") != self.keys.public_key:
                raise BankEngineError(
                    f"database {where} was written under another key of {self.bank}"
                )
            if checkpoint_every is not None:
                if checkpoint_every < 1:
                    raise ValueError("checkpoint_every must be >= 1")
                tx.set_meta("checkpoint_every", str(checkpoint_every).encode())
            elif tx.meta("checkpoint_every") is None:
                tx.set_meta("checkpoint_every", str(DEFAULT_CHECKPOINT_EVERY).encode())
            self.checkpoint_every = int(tx.meta("checkpoint_every") or b"1000")

    @property
    def treasury(self) -> str:
        """Account id of the bank's treasury (``<BANK>-treasury``)."""
        return f"{self.bank}-treasury"

    def now(self) -> int:
        return int(self._clock())

    def next_serial(self, name: str) -> int:
        """Next serial for bank-signed objects of one kind (blocks reserved in the database).

        The block is reserved without holding the pool's lock: a thread inside a booking
        transaction may need a serial while another waits for the database."""
        while True:
            with self._serial_lock:
                pool = self._serials.get(name)
                if pool and pool[0] <= pool[1]:
                    value = pool[0]
                    pool[0] += 1
                    return value
            first = self.store.reserve(name, _SERIAL_BLOCK)
            with self._serial_lock:
                pool = self._serials.get(name)
                if not pool or pool[0] > pool[1]:
                    self._serials[name] = [first, first + _SERIAL_BLOCK - 1]

    # -------------------------------------------------------------------------- accounts
    def open_account(
        self, template: codec.Obj | bytes, *, role: str = "customer", overdraft: int = 0
    ) -> AccountInfo:
        """Register an account whose Template this bank sealed. Idempotent for the same template;
        BankEngineError if the account is already open under another template."""
        raw = template if isinstance(template, (bytes, bytearray)) else codec.encode(template)
        raw = bytes(raw)
        tpl = codec.decode(raw, codec.TEMPLATE)
        if tpl.signer != self.bank:
            raise BankEngineError(
                f"template of {tpl['account']} is sealed by {tpl.signer}, not {self.bank}"
            )
        report = verify.verify_object(tpl, self.trust)
        if not report.ok:
            raise BankEngineError(f"template of {tpl['account']}: {report.first_failure()}")
        if role not in ("customer", "treasury"):
            raise ValueError("role must be customer or treasury")
        account = tpl["account"]
        with self.store.transaction() as tx:
            row = tx.one("SELECT template FROM accounts WHERE account = ?", (account,))
            if row is not None:
                if bytes(row[0] or b"") != raw:
                    raise BankEngineError(
                        f"account {account} is already open under another template"
                    )
            else:
                tx.execute(
                    "INSERT INTO accounts (account, template, role, overdraft, flags, opened_at) "
                    "VALUES (?, ?, ?, ?, 0, ?)",
                    (account, raw, role, overdraft, self.now()),
                )
                self._create_book(tx, account)
        info = self.account(account)
        assert info is not None
        return info

    def issue_account(
        self,
        kmc: Any,
        account: str,
        currency: str = "CNY",
        keep: Callable[[int, codec.Obj], None] | None = None,
    ) -> tuple[int, codec.Obj]:
        """Issue an account key from this bank's KMC, seal its Template and open the account.

        Returns (private key, template); the caller hands the key to the token, never logs it.
        `keep(key, template)` runs before the account is opened: a key is random, so one the
        database has and its keeper lost (a process killed between the two) is lost for good."""
        from hubi import kmc as kmc_mod

        ids.check_account_id(account)
        if ids.bank_of(account) != self.bank:
            raise BankEngineError(f"account {account} does not belong to bank {self.bank}")
        if self.account(account) is not None:
            raise BankEngineError(f"account {account} is already open")
        identity = _Identity(self.bank, self.keys._priv)
        priv, tpl = kmc_mod.issue_account(
            kmc, identity, account, self.next_serial("template"), self.now(), currency
        )
        if keep is not None:
            keep(priv, tpl)
        self.open_account(tpl)
        return priv, tpl

    def open_kept(
        self,
        private: int,
        template: codec.Obj | bytes,
        *,
        treasury: bool = False,
        account: str | None = None,
    ) -> AccountInfo:
        """Open an account from a key and Template kept earlier (an `issue_account` or
        `setup_treasury` killed after `keep`, or another database of this bank): the key must be
        the one the Template's seal covers, and the Template `account`'s when it is named (the
        files are found by that name: a copy of another account's must not open that one)."""
        tpl = (
            template if isinstance(template, codec.Obj) else codec.decode(template, codec.TEMPLATE)
        )
        want = self.treasury if treasury else (account or tpl["account"])
        if tpl["account"] != want:
            raise BankEngineError(f"the kept template is of {tpl['account']}, not {want}")
        sealed = ec.encode_point(ec.decode_point(verify.template_key(tpl, self.trust)), True)
        if sealed != suite.public_key(private, compressed=True):
            raise BankEngineError(f"the kept key of {want} is not the one its template seals")
        if not treasury:
            return self.open_account(tpl)
        info = self.open_account(tpl, role="treasury", overdraft=-1)
        self._treasury_key = private
        return info

    def setup_treasury(
        self,
        kmc: Any,
        currency: str = "CNY",
        keep: Callable[[int, codec.Obj], None] | None = None,
    ) -> int:
        """Open ``<BANK>-treasury`` (unlimited overdraft) and return its private key (store it
        0600, e.g. HOME/banks/<BANK>/treasury.secret); the engine keeps it for ``fund()``.
        `keep(key, template)` runs before the account is opened (see issue_account)."""
        from hubi import kmc as kmc_mod

        identity = _Identity(self.bank, self.keys._priv)
        priv, tpl = kmc_mod.issue_account(
            kmc, identity, self.treasury, self.next_serial("template"), self.now(), currency
        )
        if keep is not None:
            keep(priv, tpl)
        self.open_account(tpl, role="treasury", overdraft=-1)
        self._treasury_key = priv
        return priv

    def _create_book(self, tx: Tx, book: str) -> None:
        statement, sig = rec.sign_heads(self.keys, self.now(), [(book, 0, rec.ZERO32)])
        tx.execute(
            "INSERT INTO books (book, n, ecode, hchain, coded_bal, last_kind, last_lsum, statement, sig) "
            "VALUES (?, 0, ?, ?, NULL, 0, ?, ?, ?) ON CONFLICT (book) DO NOTHING",
            (book, rec.ZERO16, rec.ZERO32, rec.ZERO16, statement, sig),
        )

    def account(self, account: str) -> AccountInfo | None:
        row = self.store.reader().one(
            "SELECT account, role, overdraft, flags, opened_at, template FROM accounts WHERE account = ?",
            (account,),
        )
        return None if row is None else _account_info(row)

    def accounts(self) -> list[AccountInfo]:
        rows = self.store.reader().all(
            "SELECT account, role, overdraft, flags, opened_at, template FROM accounts ORDER BY account"
        )
        return [_account_info(r) for r in rows]

    def template(self, account: str) -> codec.Obj:
        info = self.account(account)
        if info is None or info.template is None:
            raise UnknownAccount(f"account {account} is not open at bank {self.bank}")
        return codec.decode(info.template, codec.TEMPLATE)

    def account_key(self, account: str) -> bytes:
        """Public key of an account of this bank (from its sealed template)."""
        tpl = self.template(account)
        return self.trust.account_key(account, tpl["key"])

    # ----------------------------------------------------------------------------- books
    def head(self, book: str, tx: Tx | None = None) -> Head:
        """Current signed head of a book (UnknownAccount if there is no such book)."""
        row = (tx or self.store.reader()).one(
            "SELECT book, n, ecode, hchain, coded_bal, last_kind, last_lsum, statement, sig "
            "FROM books WHERE book = ?",
            (book,),
        )
        if row is None:
            raise UnknownAccount(f"no book {book} at bank {self.bank}")
        return _head(row)

    def balance(self, book: str) -> int:
        """Current balance (decrypted with the bank's key)."""
        return self.keys.balance_of(self.head(book))

    def records(self, book: str, start: int = 1, end: int | None = None) -> list[StoredRecord]:
        """Records start..end (inclusive; default: to the last) of a book, in number order."""
        sql = "SELECT book, n, body, hchain FROM records WHERE book = ? AND n >= ?"
        params: list[Any] = [book, start]
        if end is not None:
            sql += " AND n <= ?"
            params.append(end)
        rows = self.store.reader().all(sql + " ORDER BY n", params)
        return [StoredRecord(r[0], int(r[1]), bytes(r[2]), bytes(r[3])) for r in rows]

    def records_by_name(self, names: Iterable[tuple[str, int]]) -> list[StoredRecord]:
        """The named records that exist (a hot backup serves these to ``audit restore``)."""
        out = []
        tx = self.store.reader()
        for book, n in names:
            r = tx.one(
                "SELECT book, n, body, hchain FROM records WHERE book = ? AND n = ?", (book, int(n))
            )
            if r is not None:
                out.append(StoredRecord(r[0], int(r[1]), bytes(r[2]), bytes(r[3])))
        return out

    def register_size(self) -> int:
        return int(
            self.store.reader().scalar("SELECT size FROM register_head WHERE id = 1", default=0)
        )

    # ------------------------------------------------------------------------- funding
    def treasury_key(self) -> int:
        """The treasury's private key, checked once against its template (a wrong key would
        sign notes the bank books as forged); BankEngineError saying why there is none."""
        if self._treasury_key is None:
            raise BankEngineError(
                self._treasury_problem
                or f"no treasury key for {self.treasury}: run setup_treasury() or `hubi bank init`"
            )
        if not self._treasury_checked:
            tpl = self.template(self.treasury)
            sealed = ec.encode_point(ec.decode_point(verify.template_key(tpl, self.trust)), True)
            if sealed != suite.public_key(self._treasury_key, compressed=True):
                raise BankEngineError(
                    f"the treasury key in use is not the one {self.treasury}'s template seals:"
                    " restore treasury.secret from backup"
                )
            self._treasury_checked = True
        return self._treasury_key

    def fund(self, account: str, amount: int, purpose: str = "funding") -> Outcome:
        """The treasury pays `amount` to `account` with an ordinary, booked note."""
        key = self.treasury_key()
        tpl = self.template(self.treasury)
        serial = self.store.reserve("treasury-note", 1)  # committed before signing: never reused
        note = codec.make_note(tpl, serial, self.now(), amount, account, purpose)
        tkeys = BookKeys(self.treasury, key)
        tkeys.sign_obj(note)
        return self.book(codec.encode(note))

    # ------------------------------------------------------------------------- booking
    def book(self, note: bytes | codec.Obj) -> Outcome:
        """Book a same-bank note: debit the payer, credit the payee, one transaction.

        MalformedNote if the bytes are not a note; NotLocal if payer or payee is at another bank
        (interbank notes settle per side with debit()/credit())."""
        if not self.group_commit:
            return self._run([note], "book", codec.STATUS_VERIFIED, single=True)[0]
        raw, obj = _decode_note(note)  # errors belong to this caller, not to a batch
        err = self._route(obj, "book")
        if err:
            raise NotLocal(err)
        return self._combined(raw)

    def _combined(self, raw: bytes) -> Outcome:
        """Group commit for concurrent callers: whoever finds no batch running books everything
        queued (up to ``GROUP_MAX`` per transaction) and hands each caller its own outcome."""
        slot = _Slot(raw)
        with self._gc_lock:
            self._gc_queue.append(slot)
            leader = not self._gc_busy
            if leader:
                self._gc_busy = True
        if leader:
            while True:
                with self._gc_lock:
                    batch = self._gc_queue[:GROUP_MAX]
                    del self._gc_queue[:GROUP_MAX]
                    if not batch:
                        self._gc_busy = False
                        break
                try:
                    outs = self._run([x.raw for x in batch], "book", codec.STATUS_VERIFIED)
                except BaseException as exc:  # noqa: BLE001 - every caller of the batch learns it
                    for x in batch:
                        x.error = exc
                        x.done.set()
                    continue
                for x, out in zip(batch, outs):
                    x.outcome = out
                    x.done.set()
        slot.done.wait()
        if slot.error is not None:
            raise slot.error
        assert slot.outcome is not None
        return slot.outcome

    def book_many(self, notes: Sequence[bytes | codec.Obj]) -> list[Outcome]:
        """Book several same-bank notes in one transaction (group commit), one answer each, in
        order. Exactly the answers booking them one by one would give; a malformed or
        non-local note gets a ``rejected`` outcome instead of an exception."""
        return self._run(list(notes), "book", codec.STATUS_VERIFIED)

    def debit(self, note: bytes | codec.Obj) -> Outcome:
        """Payer's bank side of an interbank note: book only the debit (status ``debited``) and
        issue the BalanceNotice. NotLocal unless the payer is here and the payee is not."""
        return self._run([note], "debit", codec.STATUS_SETTLED, single=True)[0]

    def credit(self, note: bytes | codec.Obj, status: int = codec.STATUS_SETTLED) -> Outcome:
        """Payee's bank side of an interbank note: book only the credit (status ``credited``)
        and issue the SettlementNotice carrying `status` (default: settled). The payer's bank
        checked the funds; this side checks signatures, the payee binding and the note id."""
        return self._run([note], "credit", status, single=True)[0]

    def debit_many(self, notes: Sequence[bytes | codec.Obj]) -> list[Outcome]:
        return self._run(list(notes), "debit", codec.STATUS_SETTLED)

    def credit_many(
        self, notes: Sequence[bytes | codec.Obj], status: int = codec.STATUS_SETTLED
    ) -> list[Outcome]:
        return self._run(list(notes), "credit", status)

    def validate(self, note: bytes | codec.Obj) -> Verdict:
        """Every check booking would make for this bank's side(s) of the note, booking nothing:
        signatures, accounts, note id / serial and (payer's bank) allowance and funds."""
        raw, obj = _decode_note(note)
        payer_here = ids.bank_of(obj.signer) == self.bank
        payee_here = ids.bank_of(obj["payee"]) == self.bank
        mode = "book" if payer_here and payee_here else "debit" if payer_here else "credit"
        it = _Item(raw, obj)
        if not (payer_here or payee_here):
            return Verdict(
                False, codec.REASON_UNKNOWN_ACCOUNT, f"neither account is at {self.bank}", it.nid
            )
        report = self._verify(it)
        if not report.ok:
            code, why = _verify_reason(report)
            return Verdict(False, code, why, it.nid, report.as_dict())
        with self._verified_lock:
            self._verified[it.digest] = (self.trust, report)
            while len(self._verified) > VERIFIED_MEMO:
                self._verified.popitem(last=False)
        bad = self._bind(it, mode)
        if bad:
            return Verdict(False, bad[0], bad[1], it.nid, report.as_dict())
        books = self._books_of([it], mode)
        state = self._load_state(self.store.reader(), [it], books)
        plan = self._plan_batch([it], state, mode, codec.STATUS_VERIFIED, self.now(), dry=True)
        out = plan.outcomes[0]
        if out.status == REFUSED and not out.replay:
            return Verdict(False, out.reason_code, out.reason, it.nid, report.as_dict())
        if out.replay and out.status == REFUSED:
            return Verdict(False, out.reason_code, out.reason, it.nid, report.as_dict())
        return Verdict(True, None, None, it.nid, report.as_dict())

    def _verify(self, it: _Item) -> verify.Report:
        """``verify_note`` of the item, or the passing report validate() made of the very same
        bytes under the same trust anchors (verification depends on nothing else)."""
        with self._verified_lock:
            memo = self._verified.pop(it.digest, None)
        if memo is not None and memo[0] is self.trust:
            return memo[1]
        assert it.obj is not None
        return verify.verify_note(it.obj, self.trust, None)

    def _route(self, obj: codec.Obj, mode: str) -> str | None:
        payer, payee = obj.signer, obj["payee"]
        payer_here = ids.bank_of(payer) == self.bank
        payee_here = ids.bank_of(payee) == self.bank
        if mode == "book" and not (payer_here and payee_here):
            return (
                f"note {payer} -> {payee} is not a same-bank note of {self.bank}: interbank "
                "notes settle through the consortium (debit() at the payer's bank, credit() at "
                "the payee's)"
            )
        if mode == "debit" and (not payer_here or payee_here):
            return (
                f"debit() is for interbank notes whose payer is at {self.bank}; "
                f"this one is {payer} -> {payee}"
            )
        if mode == "credit" and (not payee_here or payer_here):
            return (
                f"credit() is for interbank notes whose payee is at {self.bank}; "
                f"this one is {payer} -> {payee}"
            )
        return None

    def _run(
        self, notes: list[bytes | codec.Obj], mode: str, status: int, single: bool = False
    ) -> list[Outcome]:
        items: list[_Item] = []
        for note in notes:
            try:
                raw, obj = _decode_note(note)
            except MalformedNote as exc:
                if single:
                    raise
                it = _Item(b"", None)
                it.outcome = Outcome(
                    REJECTED,
                    None,
                    reason_code=codec.REASON_FORMAT,
                    reason=str(exc),
                    time=self.now(),
                )
                items.append(it)
                continue
            it = _Item(raw, obj)
            items.append(it)
            err = self._route(obj, mode)
            if err:
                if single:
                    raise NotLocal(err)
                it.outcome = it.base(REJECTED, self.now())
                it.outcome.reason_code = codec.REASON_UNKNOWN_ACCOUNT
                it.outcome.reason = err
        # 1. the same note again: the stored answer, without verifying it again
        pending = [it for it in items if it.outcome is None]
        seen: _Seen | None = None
        if pending:
            reader = self.store.reader()
            version = reader.data_version()  # before the reads: what they saw is this or newer
            known = self._note_rows(reader, [it.nid for it in pending])
            dups = self._dup_rows(reader, [it.digest for it in pending])
            seen = _Seen(version, known, dups)
            for it in pending:
                row = known.get(it.nid)
                if row is not None and bytes(row[1]) == it.digest:
                    it.outcome = self._with_notices(_outcome(row, replay=True))
                elif it.digest in dups:
                    it.outcome = _dup_outcome(dups[it.digest])
        # 2. verify offline, 3. bind to accounts here
        for it in items:
            if it.outcome is not None:
                continue
            report = self._verify(it)
            if not report.ok:
                code, why = _verify_reason(report)
                it.outcome = self._rejected(it.base(REJECTED, self.now()), code, why)
                it.outcome.verification = report.as_dict()
                continue
            it.payer_key = report.key
            bad = self._bind(it, mode)
            if bad:
                it.outcome = self._rejected(it.base(REJECTED, self.now()), bad[0], bad[1])
        # 4. plan (sign) outside the lock, commit under it
        active = [it for it in items if it.outcome is None]
        if active:
            self._commit_batch(active, mode, status, seen)
            self._maybe_checkpoint()
        out = []
        counts: dict[str, int] = {}
        for it in items:
            assert it.outcome is not None
            out.append(it.outcome)
            key = (
                "replayed"
                if it.outcome.replay
                else "booked"
                if it.outcome.ok
                else it.outcome.status
            )
            counts[key] = counts.get(key, 0) + 1
        with self._stats_lock:
            for k, v in counts.items():
                self.stats[k] = self.stats.get(k, 0) + v
            self.stats["transactions"] += 1 if active else 0
        return out

    def _bind(self, it: _Item, mode: str) -> tuple[int, str] | None:
        payer, payee, amount = it.payer, it.payee, it.amount
        if amount <= 0:
            return codec.REASON_FORMAT, "amount must be positive"
        for name, n in (("amount", amount), ("serial", it.serial)):
            if n > MAX_STORED:  # the wire allows 2^64 - 1; a book's row stopped on it (500)
                return codec.REASON_FORMAT, f"note {name} {n} is past {MAX_STORED}"
        if payer == payee:
            return codec.REASON_FORMAT, f"payer and payee are the same account {payer}"
        for who, needed in ((payer, mode != "credit"), (payee, mode != "debit")):
            if needed and self._info(who) is None:
                return (
                    codec.REASON_UNKNOWN_ACCOUNT,
                    f"account {who} is not open at bank {self.bank}",
                )
        return None

    def _info(self, account: str) -> AccountInfo | None:
        """Account info, cached (role, overdraft and template never change once open)."""
        info = self._accounts.get(account)
        if info is None:
            info = self.account(account)
            if info is not None:
                self._accounts[account] = info
        return info

    def _rejected(self, out: Outcome, code: int, why: str) -> Outcome:
        out.status = REJECTED
        out.reason_code, out.reason = code, why
        out.refusal = self._refusal(
            out.payee or "", out.payer or "", out.note_id or bytes(32), code, why, out.time
        )
        return out

    def _refusal(
        self, payee: str, payer: str, nid: bytes, code: int, why: str, t: int | None
    ) -> bytes:
        obj = codec.Obj(
            codec.REFUSAL,
            self.bank,
            self.next_serial("refusal"),
            t if t is not None else self.now(),
            {
                "payee": payee,
                "payer": payer,
                "note_id": nid,
                "reason_code": code,
                "reason": _clip(why),
            },
        )
        return codec.encode(self.keys.sign_obj(obj))

    # ----------------------------------------------------------------------- the commit
    @staticmethod
    def _books_of(items: Sequence[_Item], mode: str) -> list[str]:
        books: set[str] = set()
        for it in items:
            if mode != "credit":
                books.add(it.payer)
            if mode != "debit":
                books.add(it.payee)
        return sorted(books)

    def _note_rows(self, tx: Tx, nids: Sequence[bytes]) -> dict[bytes, tuple]:
        return {bytes(r[0]): tuple(r) for r in tx.all_among(_NOTE_SELECT, "note_id", nids)}

    def _dup_rows(self, tx: Tx, digests: Sequence[bytes]) -> dict[bytes, tuple]:
        return {bytes(r[0]): tuple(r) for r in tx.all_among(_DUP_SELECT, "digest", digests)}

    def _load_state(
        self,
        tx: Tx,
        items: Sequence[_Item],
        books: Sequence[str],
        seen: _Seen | None = None,
        head_rows: list[tuple] | None = None,
    ) -> _State:
        """What the batch's decisions depend on, read through `tx`; the note and double-issue
        rows from `seen` (step 1's reads) and the head rows from `head_rows` when given."""
        heads: dict[str, tuple] = {}
        if head_rows is None:
            head_rows = tx.all_among(_HEAD_STATE_SELECT, "book", books)
        for r in head_rows:
            heads[r[0]] = _head_state(r)
        for b in books:
            if b not in heads:
                raise UnknownAccount(f"no book {b} at bank {self.bank}")
        # allowances: the one a note names, else the one its serial falls in (an allowance
        # covers the payer's serials from its first_serial up to the next allowance's)
        allowances: dict[tuple[str, int], tuple[int, int, int, int]] = {}
        payers = sorted({it.payer for it in items if it.obj is not None})
        issued: dict[str, list[tuple[int, int, int, int, int]]] = {}
        for acct, serial, cap, expiry, first, spent in tx.all_among(
            "SELECT account, serial, cap, expiry, first_serial, spent FROM allowances",
            "account",
            payers,
        ):
            issued.setdefault(acct, []).append(
                (int(first), int(serial), int(cap), int(expiry), int(spent))
            )
        for it in items:
            if it.obj is None:
                continue
            mine = issued.get(it.payer, [])
            if it.named_allowance is not None:
                it.allowance = it.named_allowance
            else:
                covering = [a for a in mine if a[0] <= it.serial]
                it.allowance = max(covering)[1] if covering else None
            for first, serial, cap, expiry, spent in mine:
                if serial == it.allowance:
                    allowances[(it.payer, serial)] = (cap, expiry, first, spent)
        if seen is not None:
            notes = {it.nid: seen.notes[it.nid] for it in items if it.nid in seen.notes}
            dups = {it.digest: seen.dups[it.digest] for it in items if it.digest in seen.dups}
        else:
            notes = self._note_rows(tx, [it.nid for it in items])
            dups = self._dup_rows(tx, [it.digest for it in items])
        # rare: a note under a booked id with other bytes (double issuance, or the same note
        # with signed fields removed): the booked note's bytes, to tell which
        other = [
            it.nid
            for it in items
            if it.nid in notes and bytes(notes[it.nid][1]) != it.digest and it.digest not in dups
        ]
        firsts: dict[bytes, bytes] = {}
        if other:
            for r in tx.all_among("SELECT note_id, note FROM notes", "note_id", other):
                firsts[bytes(r[0])] = bytes(r[1])
        return _State(heads, notes, dups, allowances, firsts)

    def _allowance_check(self, state: _State, it: _Item) -> tuple[int, str] | None:
        serial = it.allowance
        if serial is None:
            return None
        row = state.allowances.get((it.payer, serial))
        if row is None:
            return codec.REASON_ALLOWANCE, f"allowance #{serial} was not issued to {it.payer}"
        cap, expiry, first, spent = row
        assert it.obj is not None
        if it.obj.time > expiry:
            return (
                codec.REASON_EXPIRED,
                f"allowance #{serial} expired at {expiry}, the note was signed at {it.obj.time}",
            )
        if it.serial < first:
            return (
                codec.REASON_ALLOWANCE,
                f"note serial {it.serial} is below allowance #{serial}'s first serial {first}",
            )
        if spent + it.amount > cap:
            return (
                codec.REASON_ALLOWANCE,
                f"allowance #{serial}: {spent} spent + {it.amount} exceeds the cap {cap}",
            )
        return None

    def _plan_batch(
        self,
        items: Sequence[_Item],
        state: _State,
        mode: str,
        status: int,
        t: int,
        dry: bool = False,
        cache: dict[tuple, Any] | None = None,
    ) -> _Plan:
        """Decide and (unless dry) sign everything one batch writes, from a state snapshot.

        The batch's records (and eager notices) are drafted first and signed together
        (``BookKeys.sign_many``); then the record bytes and hash chains are made in order.
        `cache` keeps what an earlier plan of the same batch signed, keyed by everything it
        depends on (for a record: its number, its evidence code, the balance it builds on), so
        planning again under the lock signs only what another booking moved."""
        state = state.copy()
        memo: dict[tuple, Any] = {} if cache is None else cache
        keys = self.keys
        keeper = keys.keeper
        heads = state.heads

        def signed(key: tuple, make: Callable[[], Any]) -> Any:
            hit = memo.get(key)
            if hit is None:
                hit = memo[key] = make()
            return hit

        plan = _Plan()
        balances: dict[str, int] = {}
        tips: dict[str, tuple[int, bytes]] = {}  # book -> (n, ecode) of its newest draft
        # [book, n, kind, delta, lsum, ecode, coded, evidence, sig8, sig9]
        drafts: list[list[Any]] = []
        unsigned: list[tuple[list[Any], tuple]] = []  # drafts without signatures, memo key
        notice_objs: list[tuple[codec.Obj, tuple]] = []  # eager notices to sign, memo key
        rows: dict[bytes, Any] = {}  # note rows this batch writes (notices filled in at the end)
        answers: list[Any] = []  # per item: an Outcome, or (note id, replay) of a row
        debit, credit = mode != "credit", mode != "debit"
        st = BOOKED if (debit and credit) else DEBITED if debit else CREDITED
        eager = self.notice_mode == "eager" and not dry
        cached = self._balances

        def bal(book: str) -> int:
            b = balances.get(book)
            if b is None:
                h = heads[book]
                hit = cached.get(book)
                if hit is not None and hit[0] == h[1] and hit[1] == h[3]:
                    b = hit[2]
                else:
                    b = keys.balance_of(Head(*h))
                balances[book] = b
            return b

        def draft(book: str, kind: int, delta: int, it: _Item, ls: bytes) -> int:
            tip = tips.get(book)
            if tip is None:
                h = heads[book]
                tip = (h[1], h[2])
            n = tip[0] + 1
            ecode = rec.xor16(tip[1], ls)
            tips[book] = (n, ecode)
            b0 = bal(book)
            balances[book] = b0 + delta
            if dry:
                return n
            key = ("record", book, n, ecode, kind, it.digest, b0)
            hit = memo.get(key)
            if hit is None:
                coded = keys.seal_balance(rec.balance_info(book, n, kind, ls), b0 + delta)
                d = [book, n, kind, delta, ls, ecode, coded, it.raw, None, None]
                unsigned.append((d, key))
            else:
                d = [book, n, kind, delta, ls, ecode, hit[0], it.raw, hit[1], hit[2]]
            drafts.append(d)
            return n

        def notice(key: tuple, make: Callable[[], codec.Obj]) -> Any:
            hit = memo.get(key)
            if hit is not None:
                return hit
            obj = make()
            notice_objs.append((obj, key))
            return key  # replaced by the signed bytes at the end

        planned: dict[bytes, codec.Obj] = {}  # note id -> the note this batch booked under it

        def same_issuance(it: _Item) -> bool:
            """`it` is the note booked under its id with signed fields removed (or added)."""
            assert it.obj is not None
            first = planned.get(it.nid)
            if first is None:
                raw = state.firsts.get(it.nid)
                if raw is None:
                    return False
                try:
                    first = codec.decode(raw, codec.NOTE)
                except CodecError:
                    return False
            return issuance.same_issuance(first, it.obj)

        for it in items:
            assert it.obj is not None
            row = state.notes.get(it.nid)
            if row is not None:
                if bytes(row[1]) == it.digest:
                    answers.append((it.nid, True))
                elif it.digest in state.dups:
                    answers.append(_dup_outcome(state.dups[it.digest]))
                elif same_issuance(it):  # one issuance by the payer: a duplicate, no flag
                    answers.append((it.nid, True))
                else:  # double issuance: keep the second note as evidence, refuse it, flag
                    why = _double_reason(it.payer, it.serial)
                    refusal = (
                        b""
                        if dry
                        else signed(
                            ("refusal", it.digest, codec.REASON_DOUBLE_ISSUE, why),
                            lambda it=it, why=why: self._refusal(
                                it.payee, it.payer, it.nid, codec.REASON_DOUBLE_ISSUE, why, t
                            ),
                        )
                    )
                    dup = (it.digest, it.nid, it.payer, it.serial, it.payee, refusal, t)
                    state.dups[it.digest] = dup
                    plan.dups.append(dup + (it.raw,))
                    if ids.bank_of(it.payer) == self.bank:
                        plan.flags.add(it.payer)
                    plan.notices.append((it.payee, codec.REFUSAL, it.nid, refusal, t))
                    answers.append(_dup_outcome(dup, replay=False))
                continue
            bad = None
            if debit:
                bad = self._allowance_check(state, it)
                if bad is None:
                    info = self._info(it.payer)
                    assert info is not None
                    have = bal(it.payer)
                    if not _covers(info, have, it.amount):
                        bad = (
                            codec.REASON_INSUFFICIENT_FUNDS,
                            _funds_reason(it.payer, have, it.amount),
                        )
                    elif have - it.amount < rec.I64_MIN:  # unlimited overdraft
                        bad = _out_of_range(it.amount, "payer")
            if bad is None and credit and bal(it.payee) + it.amount > rec.I64_MAX:
                bad = _out_of_range(it.amount, "payee")
            if bad is not None:
                refusal = (
                    b""
                    if dry
                    else signed(
                        ("refusal", it.digest, bad[0], bad[1]),
                        lambda it=it, bad=bad: self._refusal(
                            it.payee, it.payer, it.nid, bad[0], bad[1], t
                        ),
                    )
                )
                row = (
                    it.nid, it.digest, it.payer, it.serial, it.payee, it.amount, REFUSED,
                    bad[0], bad[1], None, None, t, refusal, None, None, None,
                )  # fmt: skip
                state.notes[it.nid] = rows[it.nid] = row
                planned[it.nid] = it.obj
                plan.notes.append((it.nid, it.allowance, it.raw))
                plan.notices.append((it.payee, codec.REFUSAL, it.nid, refusal, t))
                answers.append((it.nid, False))
                continue
            debit_n = credit_n = None
            settlement = balance_notice = None
            if len(self._digests) > 100_000:
                self._digests.clear()
            ls = it.lsum(self._digests)
            if debit:
                debit_n = draft(it.payer, rec.DEBIT, -it.amount, it, ls)
                if it.allowance is not None:
                    cap, expiry, first, spent = state.allowances[(it.payer, it.allowance)]
                    state.allowances[(it.payer, it.allowance)] = (
                        cap,
                        expiry,
                        first,
                        spent + it.amount,
                    )
                    plan.allowances[(it.payer, it.allowance)] = spent + it.amount
                if eager:
                    nb = balances[it.payer]
                    balance_notice = notice(
                        ("balance", it.digest, nb),
                        lambda it=it, nb=nb: self._balance_obj(it, nb, t),
                    )
            if credit:
                credit_n = draft(it.payee, rec.CREDIT, it.amount, it, ls)
                if eager:
                    settlement = notice(
                        ("settlement", it.digest, status),
                        lambda it=it: self._settlement_obj(it, status, t),
                    )
            row = [
                it.nid, it.digest, it.payer, it.serial, it.payee, it.amount, st, None, None,
                debit_n, credit_n, t, None, settlement, balance_notice, status if credit else None,
            ]  # fmt: skip
            state.notes[it.nid] = rows[it.nid] = row
            planned[it.nid] = it.obj
            plan.notes.append((it.nid, it.allowance, it.raw))
            if settlement is not None:
                plan.notices.append([it.payee, codec.SETTLEMENT, it.nid, settlement, t])
            if balance_notice is not None:
                plan.notices.append([it.payer, codec.BALANCE, it.nid, balance_notice, t])
            answers.append((it.nid, False))
        # sign every record and notice of the batch at once
        msgs: list[bytes] = []
        sig8_message, sig9_message = rec.sig8_message, rec.sig9_message
        for d, _key in unsigned:
            msgs.append(sig8_message(keeper, d[0], d[1], d[5]))
            msgs.append(sig9_message(keeper, d[0], d[1], d[6]))
        fields: list[tuple[codec.Obj, str]] = []
        for obj, _key in notice_objs:
            for name in codec.signed_fields(obj.kind):
                if name in obj.values:
                    fields.append((obj, name))
                    msgs.append(codec.field_message(obj, name))
        if msgs:
            sigs = keys.sign_many(msgs)
            i = 0
            for d, key in unsigned:
                d[8], d[9] = sigs[i], sigs[i + 1]
                memo[key] = (d[6], d[8], d[9])
                i += 2
            for obj, name in fields:
                obj.sigs[name] = sigs[i]
                i += 1
            for obj, key in notice_objs:
                obj.raw = None
                memo[key] = codec.encode(obj)
        if notice_objs:  # the signed notice bytes where the plan holds their memo keys
            for row in rows.values():
                if isinstance(row, list):
                    for j in (13, 14):
                        if isinstance(row[j], tuple):
                            row[j] = memo[row[j]]
            for ntc in plan.notices:
                if isinstance(ntc[3], tuple):
                    ntc[3] = memo[ntc[3]]
        # record bytes and hash chains, book by book in order
        chain: dict[str, bytes] = {}
        last: dict[str, list[Any]] = {}
        body_of = rec.record_body
        sha256 = hashlib.sha256
        for d in drafts:
            book, n = d[0], d[1]
            body = body_of(keeper, book, n, d[2], t, d[3], d[4], d[5], d[6], d[7], d[8], d[9])
            prev = chain.get(book)
            if prev is None:
                prev = heads[book][3]
            hc = chain[book] = sha256(prev + n.to_bytes(8, "big") + body).digest()
            plan.records.append((book, n, body, hc))
            last[book] = d
        # one signature covers every head this batch moves (a Merkle root over them; each head
        # row keeps its own inclusion path)
        books = list(last)
        if books:
            signed_heads = rec.sign_heads_many(keys, t, [(b, last[b][1], chain[b]) for b in books])
            for b, (statement, sig) in zip(books, signed_heads):
                d = last[b]  # the UPDATE's parameters, book last
                plan.heads.append((d[1], d[5], chain[b], d[6], d[2], d[4], statement, sig, b))
        plan.balances = {b: (last[b][1], chain[b], balances[b]) for b in books}
        for nid, row in rows.items():
            if isinstance(row, list):
                rows[nid] = state.notes[nid] = tuple(row)
        plan.notes = [(rows[nid], allowance, raw) for nid, allowance, raw in plan.notes]
        plan.notices = [tuple(x) for x in plan.notices]
        for a in answers:
            if isinstance(a, Outcome):
                plan.outcomes.append(a)
            else:
                nid, replay = a
                plan.outcomes.append(_outcome(state.notes[nid], replay=replay))
        return plan

    def _settlement_obj(self, it: _Item, status: int, t: int) -> codec.Obj:
        return codec.Obj(
            codec.SETTLEMENT,
            self.bank,
            self.next_serial("settlement"),
            t,
            {
                "amount": it.amount,
                "payee": it.payee,
                "payer": it.payer,
                "note_id": it.nid,
                "status": status,
            },
        )

    def _settlement(self, it: _Item, status: int, t: int) -> bytes:
        return codec.encode(self.keys.sign_obj(self._settlement_obj(it, status, t)))

    def _balance_obj(self, it: _Item, new_balance: int, t: int) -> codec.Obj:
        key = it.payer_key or self.account_key(it.payer)
        blob = rec.seal_to(
            key,
            new_balance.to_bytes(8, "big", signed=True),
            BALANCE_NOTICE_INFO + it.payer.encode(),
        )
        return codec.Obj(
            codec.BALANCE,
            self.bank,
            self.next_serial("balance"),
            t,
            {
                "amount": it.amount,
                "payee": it.payee,
                "payer": it.payer,
                "note_id": it.nid,
                "balance": blob,
            },
        )

    def _balance_notice(self, it: _Item, new_balance: int, t: int) -> bytes:
        return codec.encode(self.keys.sign_obj(self._balance_obj(it, new_balance, t)))

    def _commit_batch(
        self, items: list[_Item], mode: str, status: int, seen: _Seen | None = None
    ) -> None:
        t = self.now()
        signed: dict[tuple, Any] = {}
        try:
            plan, span = self._commit_once(items, mode, status, t, signed, seen)
        except StoreConflict:
            # PostgreSQL: another connection booked one of these notes (or recorded one of
            # these double issues) after step 1 read them; decide again on reads under the lock
            with self._stats_lock:
                self.stats["conflicts"] = self.stats.get("conflicts", 0) + 1
            plan, span = self._commit_once(items, mode, status, t, signed, None)
        # committed: remember the new balances (opening a sealed balance costs an AES-GCM and
        # an HKDF; the cache is keyed by the head it belongs to, so a stale entry never applies)
        if len(self._balances) > 200_000:
            self._balances.clear()
        self._balances.update(plan.balances)
        self._last_size.value = span
        if span is not None:
            with self._leaves_lock:
                if len(self._leaves) > 4 * self.checkpoint_every + 4096:
                    self._leaves.clear()  # checkpoints are made elsewhere: read them back then
                self._leaves.update(zip(range(span[0], span[1]), (r[2] for r in plan.records)))
        for it, out in zip(items, plan.outcomes):
            it.outcome = out

    def _commit_once(
        self,
        items: list[_Item],
        mode: str,
        status: int,
        t: int,
        signed: dict[tuple, Any],
        seen: _Seen | None,
    ) -> tuple[_Plan, tuple[int, int] | None]:
        """One booking transaction for the batch: (its plan, the register span it appended)."""
        books = self._books_of(items, mode)
        pg = self.store.dialect == "postgresql"
        # SQLite: plan (sign) before taking the database's one write lock. PostgreSQL locks
        # only these books' rows, so planning under the lock blocks no one else and saves the
        # optimistic round of reads.
        state = plan = None
        if not pg:
            state = self._load_state(self.store.reader(), items, books, seen)
            plan = self._plan_batch(items, state, mode, status, t, cache=signed)
        with self.store.transaction(pipeline=True) as tx:
            heads = tx.lock_books(books, _HEAD_STATE_COLUMNS)
            if pg:
                # step 1's note reads stand: a note or double issue another connection records
                # meanwhile fails this transaction's insert on its unique key (StoreConflict)
                fresh = seen is not None
            else:  # no other connection committed since step 1 read the notes
                fresh = seen is not None and seen.version is not None
                fresh = fresh and tx.data_version() == seen.version
            if state is not None and fresh:
                now = state
            else:
                now = self._load_state(tx, items, books, seen if fresh else None, heads)
            if plan is None:
                plan = self._plan_batch(items, now, mode, status, t, cache=signed)
            elif now != state:  # something moved meanwhile: decide again under the lock,
                # signing only what depends on what moved
                plan = self._plan_batch(items, now, mode, status, t, cache=signed)
                with self._stats_lock:
                    self.stats["replans"] = self.stats.get("replans", 0) + 1
            span = self._write(tx, plan)
        return plan, span

    def _write(self, tx: Tx, plan: _Plan) -> tuple[int, int] | None:
        """Everything a plan writes, one statement per table (PostgreSQL: over arrays); the
        register's size before and after, if it grew."""
        tx.insert_many("records", ("book", "n", "body", "hchain"), _RECORD_TYPES, plan.records)
        tx.update_many("books", "book", _HEAD_COLUMNS, _HEAD_TYPES, plan.heads)
        tx.insert_many(
            "notes",
            _NOTE_COLUMNS,
            _NOTE_TYPES,
            [row + (allowance, raw) for row, allowance, raw in plan.notes],
        )
        tx.insert_many("double_issues", _DUP_COLUMNS, _DUP_TYPES, plan.dups)
        for account in sorted(plan.flags):
            tx.execute(
                "UPDATE accounts SET flags = flags | ? WHERE account = ?",
                (FLAG_DOUBLE_ISSUE, account),
            )
        for (account, serial), spent in plan.allowances.items():
            tx.execute(
                "UPDATE allowances SET spent = ? WHERE account = ? AND serial = ?",
                (spent, account, serial),
            )
        tx.insert_many("notices", _NOTICE_COLUMNS, _NOTICE_TYPES, plan.notices)
        # last: the register (PostgreSQL: its head row is locked only until commit)
        if not plan.records:
            return None
        size = tx.append_register([(r[0], r[1]) for r in plan.records])
        return size - len(plan.records), size

    def double_issues(self, account: str | None = None) -> list[dict[str, Any]]:
        """Evidence of double issuance: each second note with a used serial, with the first."""
        sql = "SELECT digest, note_id, payer, serial, payee, refusal, time, note FROM double_issues"
        params: tuple = ()
        if account:
            sql += " WHERE payer = ?"
            params = (account,)
        out = []
        reader = self.store.reader()
        for r in reader.all(sql + " ORDER BY time, payer, serial", params):
            first = reader.one("SELECT note FROM notes WHERE note_id = ?", (bytes(r[1]),))
            out.append(
                {
                    "note_id": bytes(r[1]).hex(),
                    "payer": r[2],
                    "serial": int(r[3]),
                    "payee": r[4],
                    "refusal": bytes(r[5]).hex(),
                    "time": int(r[6]),
                    "second_note": bytes(r[7]).hex(),
                    "first_note": bytes(first[0]).hex() if first else None,
                }
            )
        return out

    # --------------------------------------------------------------------------- notices
    def outcome(self, note_id: bytes) -> Outcome | None:
        """The stored answer for a note id (notices issued now if still missing)."""
        row = self.store.reader().one(_NOTE_SELECT + " WHERE note_id = ?", (note_id,))
        if row is None:
            return None
        return self._with_notices(_outcome(row, replay=True))

    def notices(self, account: str, after: int = 0, limit: int = 100) -> list[NoticeRow]:
        """Notices for an account (SettlementNotice as payee, BalanceNotice as payer, Refusal as
        payee), oldest first, with ids > `after` (a cursor)."""
        if self.notice_mode == "lazy":
            rows = self.store.reader().all(
                _NOTE_SELECT + " WHERE (payee = ? AND settlement IS NULL AND credit_n IS NOT NULL) "
                "OR (payer = ? AND balance_notice IS NULL AND debit_n IS NOT NULL)",
                (account, account),
            )
            for r in rows:
                self._with_notices(_outcome(r, replay=True))
        rows = self.store.reader().all(
            "SELECT id, account, kind, note_id, obj, time FROM notices WHERE account = ? AND id > ? "
            "ORDER BY id LIMIT ?",
            (account, after, limit),
        )
        return [
            NoticeRow(int(r[0]), r[1], int(r[2]), bytes(r[3]), bytes(r[4]), int(r[5])) for r in rows
        ]

    def _with_notices(self, out: Outcome) -> Outcome:
        """Sign and store the notices a booked outcome still lacks (lazy mode, or booked before
        a crash in lazy mode); returns the outcome completed."""
        need_settle = out.credit_n is not None and out.settlement is None
        need_balance = out.debit_n is not None and out.balance_notice is None
        if not out.ok or not (need_settle or need_balance):
            return out
        assert out.note_id is not None and out.payer and out.payee and out.amount is not None
        t = self.now()
        it = _Item.from_outcome(out)
        settle = bal_notice = None
        if need_settle:
            settle = self._settlement(it, out.settle_status or codec.STATUS_VERIFIED, t)
        if need_balance:
            found = self.records_by_name([(out.payer, out.debit_n)])
            if not found:
                raise BankEngineError(
                    f"debit record {out.payer}#{out.debit_n} is missing: run `hubi audit verify`"
                )
            r = found[0].record
            new_bal = self.keys.open_balance(
                rec.balance_info(r.book, r.n, r.kind, r.lsum), r.coded_bal
            )
            bal_notice = self._balance_notice(it, new_bal, t)
        with self.store.transaction() as tx:
            if settle is not None:
                cur = tx.execute(
                    "UPDATE notes SET settlement = ? WHERE note_id = ? AND settlement IS NULL",
                    (settle, out.note_id),
                )
                if cur.rowcount == 1:
                    self._insert_notice(tx, out.payee, codec.SETTLEMENT, out.note_id, settle, t)
            if bal_notice is not None:
                cur = tx.execute(
                    "UPDATE notes SET balance_notice = ? WHERE note_id = ? AND balance_notice IS NULL",
                    (bal_notice, out.note_id),
                )
                if cur.rowcount == 1:
                    self._insert_notice(tx, out.payer, codec.BALANCE, out.note_id, bal_notice, t)
            row = tx.one(
                "SELECT settlement, balance_notice FROM notes WHERE note_id = ?", (out.note_id,)
            )
        assert row is not None
        out.settlement = bytes(row[0]) if row[0] is not None else None
        out.balance_notice = bytes(row[1]) if row[1] is not None else None
        return out

    def _insert_notice(
        self, tx: Tx, account: str, kind: int, nid: bytes, obj: bytes, t: int
    ) -> None:
        tx.execute(
            "INSERT INTO notices (account, kind, note_id, obj, time) VALUES (?, ?, ?, ?, ?)",
            (account, kind, nid, obj, t),
        )

    # ------------------------------------------------------------------------ allowances
    def issue_allowance(self, account: str, cap: int, expiry: int, first_serial: int) -> bytes:
        """Sign an OfflineAllowance voucher for an account of this bank and remember it; notes
        naming its serial are held to its cap, expiry and first serial."""
        if self.account(account) is None:
            raise UnknownAccount(f"account {account} is not open at bank {self.bank}")
        serial = self.next_serial("allowance")
        obj = codec.Obj(
            codec.ALLOWANCE,
            self.bank,
            serial,
            self.now(),
            {"amount": cap, "account": account, "expiry": expiry, "first_serial": first_serial},
        )
        raw = codec.encode(self.keys.sign_obj(obj))
        with self.store.transaction() as tx:
            tx.execute(
                "INSERT INTO allowances (account, serial, cap, expiry, first_serial, obj, spent) VALUES (?, ?, ?, ?, ?, ?, 0)",
                (account, serial, cap, expiry, first_serial, raw),
            )
        return raw

    # ----------------------------------------------------------------------- checkpoints
    def _maybe_checkpoint(self) -> None:
        span = getattr(self._last_size, "value", None)
        self._last_size.value = None
        if span is None:
            return
        before, size = span
        every = self.checkpoint_every
        if size // every == before // every and self.checkpoint_error is None:
            return  # this commit crossed no multiple, and no checkpoint is owed
        try:
            self.checkpoint()
        except BooksDamaged as exc:
            # the commit stands (the notes are booked): failing it here answered the uploader
            # with an error for a note that was booked. The head waits, named in /health,
            # until the record is restored; the next commit past a multiple tries again.
            if self.checkpoint_error != str(exc):
                log.error("bank %s: the checkpoint due cannot be made: %s", self.bank, exc)
            self.checkpoint_error = str(exc)
            return
        self.checkpoint_error = None

    def checkpoint(self, tree_size: int | None = None) -> Checkpoint | None:
        """Sign tree heads at every multiple of ``checkpoint_every`` not yet signed, up to the
        register's size, and return the newest (None if there is none); with `tree_size`, the
        checkpoint at exactly that size (signed now unless it exists)."""
        with self._ckpt_lock:
            size = self.register_size()
            every = self.checkpoint_every
            if tree_size is not None:
                if not 0 < tree_size <= size:
                    raise BankEngineError(f"tree size {tree_size} not in 1..{size}")
                have = self.checkpoint_at(tree_size)
                return have if have is not None else self._make_checkpoint(tree_size)
            last = self.latest_checkpoint()
            done = last.tree_size if last else 0
            made = last
            for target in range((done // every + 1) * every, size + 1, every):
                made = self._make_checkpoint(target)
            return made

    def checkpoint_at(self, size: int) -> Checkpoint | None:
        """The signed checkpoint of tree size `size`, if there is one (reads; signs nothing)."""
        r = self.store.reader().one(
            "SELECT tree_size, root, obj, time FROM checkpoints WHERE tree_size = ?", (size,)
        )
        return None if r is None else Checkpoint(int(r[0]), bytes(r[1]), bytes(r[2]), int(r[3]))

    def _frontier_at(
        self, tx: Tx, size: int, nodes: list[tuple[int, int, bytes]] | None = None
    ) -> merkle.Frontier:
        row = tx.one(
            "SELECT frontier FROM checkpoints WHERE tree_size <= ? ORDER BY tree_size DESC LIMIT 1",
            (size,),
        )
        f = merkle.Frontier.from_bytes(bytes(row[0])) if row else merkle.Frontier()
        with self._leaves_lock:
            mine = [self._leaves.get(i) for i in range(f.size, size)]
            for i in [i for i in self._leaves if i < size]:
                del self._leaves[i]  # covered by this checkpoint from now on
        if all(b is not None for b in mine):  # this process committed them all
            hashes = [merkle.leaf_hash(b) for b in mine if b is not None]
        else:
            hashes = self._leaf_hashes(tx, f.size, size)
        keep = _keeper(nodes) if nodes is not None else None
        for h in hashes:
            f.append_hash(h, keep)
        return f

    def _leaf_hashes(self, tx: Tx, start: int, end: int) -> list[bytes]:
        """Leaf hashes of register entries [start, end); BankEngineError if one is missing."""
        if end <= start:
            return []
        rows = tx.all(
            "SELECT g.seq, r.body FROM register g LEFT JOIN records r ON r.book = g.book AND r.n = g.n "
            "WHERE g.seq >= ? AND g.seq < ? ORDER BY g.seq",
            (start, end),
        )
        out = []
        expect = start
        for seq, body in rows:
            if int(seq) != expect or body is None:
                raise BooksDamaged(
                    f"register entry {expect} has no record: run `hubi audit verify` and restore it"
                )
            out.append(merkle.leaf_hash(bytes(body)))
            expect += 1
        if expect != end:
            raise BooksDamaged(
                f"register ends at {expect}, expected {end}: run `hubi audit verify` and restore it"
            )
        return out

    def _make_checkpoint(self, size: int) -> Checkpoint:
        t = self.now()
        nodes: list[tuple[int, int, bytes]] = []
        with self.store.snapshot() as tx:
            f = self._frontier_at(tx, size, nodes)
        root = f.root()
        obj = codec.Obj(
            codec.CHECKPOINT, self.bank, size, t, {"tree_size": size, "root": root, "seal": b""}
        )
        raw = codec.encode(self.keys.sign_obj(obj))
        with self.store.transaction() as tx:
            tx.execute(
                "INSERT INTO checkpoints (tree_size, root, obj, frontier, time) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (tree_size) DO NOTHING",
                (size, root, raw, f.to_bytes(), t),
            )
            if nodes and self._keeps_nodes():
                _keep_nodes(tx, nodes)
            row = tx.one(
                "SELECT tree_size, root, obj, time FROM checkpoints WHERE tree_size = ?", (size,)
            )
        assert row is not None
        return Checkpoint(int(row[0]), bytes(row[1]), bytes(row[2]), int(row[3]))

    def checkpoints(self, after: int = 0, limit: int | None = None) -> list[Checkpoint]:
        """Checkpoints of tree size above `after`, oldest first (at most `limit`): read from
        the database as asked, not all of them (one per `checkpoint_every` records)."""
        sql = "SELECT tree_size, root, obj, time FROM checkpoints WHERE tree_size > ?"
        sql += " ORDER BY tree_size" + (" LIMIT ?" if limit is not None else "")
        params = (after,) if limit is None else (after, limit)
        rows = self.store.reader().all(sql, params)
        return [Checkpoint(int(r[0]), bytes(r[1]), bytes(r[2]), int(r[3])) for r in rows]

    def latest_checkpoint(self) -> Checkpoint | None:
        r = self.store.reader().one(
            "SELECT tree_size, root, obj, time FROM checkpoints ORDER BY tree_size DESC LIMIT 1"
        )
        return None if r is None else Checkpoint(int(r[0]), bytes(r[1]), bytes(r[2]), int(r[3]))

    def register_position(self, book: str, n: int) -> int:
        seq = self.store.reader().scalar(
            "SELECT seq FROM register WHERE book = ? AND n = ?", (book, n)
        )
        if seq is None:
            raise BankEngineError(f"record {book}#{n} is not in the register")
        return int(seq)

    def inclusion_proof(self, book: str, n: int, tree_size: int | None = None) -> dict[str, Any]:
        """RFC 9162 inclusion proof of record (book, n) in the checkpoint of `tree_size` (default:
        the newest checkpoint that contains it). Verify with ``verify_inclusion_proof``."""
        seq = self.register_position(book, n)
        if tree_size is None:
            cp = self.latest_checkpoint()
            if cp is None or cp.tree_size <= seq:
                raise BankEngineError(
                    f"record {book}#{n} (register {seq}) is not under a checkpoint yet"
                )
        else:
            cp = self.checkpoint_at(tree_size)
            if cp is None:
                raise BankEngineError(f"no checkpoint of tree size {tree_size}")
        tree_size = cp.tree_size
        with self.store.snapshot() as tx:
            proof = merkle.inclusion_proof_by(self._subtrees(tx), seq, tree_size)
            body = tx.scalar("SELECT body FROM records WHERE book = ? AND n = ?", (book, n))
        return {
            "book": book,
            "n": n,
            "index": seq,
            "tree_size": tree_size,
            "record": bytes(body).hex(),
            "path": [p.hex() for p in proof],
            "checkpoint": cp.obj.hex(),
        }

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """RFC 9162 consistency proof between the register's first `first` and `second` entries."""
        with self.store.snapshot() as tx:
            return merkle.consistency_proof_by(self._subtrees(tx), first, second)

    def keep_subtrees(self) -> tuple[int, str | None]:
        """Keep the perfect subtrees of the register up to its latest checkpoint that are not
        kept yet (a database migrated from version 1 has none for its older records), hashing
        the records once; they are kept only if the tree they make is the signed one. Returns
        (rows added, None) or (0, why nothing was kept)."""
        last = self.latest_checkpoint()
        if last is None or not self._keeps_nodes():
            return 0, None
        with self.store.snapshot() as tx:
            want = last.tree_size >> NODE_LEVEL
            have = tx.scalar(
                "SELECT COUNT(*) FROM merkle_nodes WHERE level = ? AND idx < ?", (NODE_LEVEL, want)
            )
            if int(have or 0) >= want:
                return 0, None
            nodes: list[tuple[int, int, bytes]] = []
            keep = _keeper(nodes)
            f = merkle.Frontier()
            run = 1 << 12  # records read at a time: bounded memory at any register size
            for start in range(0, last.tree_size, run):
                for h in self._leaf_hashes(tx, start, min(start + run, last.tree_size)):
                    f.append_hash(h, keep)
        if f.root() != last.root:
            return 0, (
                f"the register differs from the signed checkpoint of tree size {last.tree_size}:"
                " run `hubi audit verify`"
            )
        with self.store.transaction() as tx:
            _keep_nodes(tx, nodes)
        return len(nodes), None

    def _keeps_nodes(self) -> bool:
        """The database has merkle_nodes (schema version 2; an audit may open an older one)."""
        if self._has_nodes is None:
            self._has_nodes = self.store.schema_version() >= 2
        return self._has_nodes

    def _subtrees(self, tx: Tx) -> merkle.SubtreeHash:
        """MTH of register ranges for the proofs: a perfect subtree of at least 2^NODE_LEVEL
        leaves from merkle_nodes when a checkpoint stored it; any other range split as RFC 9162
        splits it, down to runs of at most 2^NODE_LEVEL leaves hashed from the records. A proof
        reads O(log n) nodes and fewer than 2 * 2^NODE_LEVEL records, not the whole register (a
        database from before the nodes, or a range past the last checkpoint, is read in runs)."""
        keeps = self._keeps_nodes()

        def mth(a: int, b: int) -> bytes:
            n = b - a
            if n <= 0:
                return merkle.EMPTY_ROOT
            if keeps and n & (n - 1) == 0 and a % n == 0 and n >= 1 << NODE_LEVEL:
                level = n.bit_length() - 1
                h = tx.scalar(
                    "SELECT hash FROM merkle_nodes WHERE level = ? AND idx = ?", (level, a >> level)
                )
                if h is not None:
                    return bytes(h)
            if n <= 1 << NODE_LEVEL:  # below the kept subtrees: from the records
                self.proof_leaves += n
                return merkle.root_of_hashes(self._leaf_hashes(tx, a, b))
            k = merkle.split(n)
            return merkle.node_hash(mth(a, a + k), mth(a + k, b))

        return mth


def _keeper(nodes: list[tuple[int, int, bytes]]) -> Callable[[int, int, bytes], None]:
    """A Frontier.append_hash callback that collects the subtrees proofs keep."""

    def keep(level: int, idx: int, h: bytes) -> None:
        if level >= NODE_LEVEL:
            nodes.append((level, idx, h))

    return keep


def _keep_nodes(tx: Tx, nodes: list[tuple[int, int, bytes]]) -> None:
    tx.executemany(
        "INSERT INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?) "
        "ON CONFLICT (level, idx) DO NOTHING",
        nodes,
    )


# ----------------------------------------------------------------------- proof verifiers


def verify_checkpoint(obj: bytes, trust: verify.Trust, bank: str | None = None) -> codec.Obj:
    """Decode a Checkpoint and check the bank's seal; VerifyError naming the failure."""
    cp = codec.decode(obj, codec.CHECKPOINT)
    if bank is not None and cp.signer != bank:
        raise VerifyError("signer", f"checkpoint signed by {cp.signer}, expected {bank}")
    report = verify.verify_object(cp, trust)
    report.raise_if_failed()
    if cp.serial != cp["tree_size"]:
        raise VerifyError("serial", "checkpoint serial differs from its tree size")
    return cp


def verify_inclusion_proof(proof: dict[str, Any], trust: verify.Trust) -> rec.Record:
    """Check an ``inclusion_proof()`` answer end to end (bank seal on the tree head, RFC 9162
    path); returns the proven record. Raises VerifyError / merkle.MerkleError."""
    cp = verify_checkpoint(bytes.fromhex(proof["checkpoint"]), trust)
    body = bytes.fromhex(proof["record"])
    if cp["tree_size"] != proof["tree_size"]:
        raise VerifyError("tree_size", "proof and checkpoint name different tree sizes")
    merkle.verify_inclusion(
        merkle.leaf_hash(body),
        int(proof["index"]),
        cp["tree_size"],
        [bytes.fromhex(p) for p in proof["path"]],
        cp["root"],
    )
    record = rec.Record.parse(body)
    if (record.book, record.n) != (proof["book"], proof["n"]):
        raise VerifyError("record", "the proven record is not the one named")
    return record


# ---------------------------------------------------------------------------------- helpers

_NOTE_SELECT = (
    "SELECT note_id, digest, payer, serial, payee, amount, status, reason_code, reason, debit_n, credit_n, "
    "time, refusal, settlement, balance_notice, settle_status FROM notes"
)


def _outcome(row: Sequence[Any], replay: bool) -> Outcome:
    def b(v: Any) -> bytes | None:
        return None if v is None else bytes(v)

    status = row[6]
    return Outcome(
        status,
        bytes(row[0]),
        row[2],
        row[4],
        int(row[3]),
        int(row[5]),
        reason_code=int(row[7]) if (row[7] is not None and status == REFUSED) else None,
        reason=row[8] if status == REFUSED else None,
        debit_n=int(row[9]) if row[9] is not None else None,
        credit_n=int(row[10]) if row[10] is not None else None,
        time=int(row[11]),
        refusal=b(row[12]),
        settlement=b(row[13]),
        balance_notice=b(row[14]),
        replay=replay,
        settle_status=None if row[15] is None else int(row[15]),
    )


_HEAD_SELECT = (
    "SELECT book, n, ecode, hchain, coded_bal, last_kind, last_lsum, statement, sig FROM books"
)
_RECORD_TYPES = ("text", "bigint", "bytea", "bytea")
_HEAD_COLUMNS = ("n", "ecode", "hchain", "coded_bal", "last_kind", "last_lsum", "statement", "sig")
_HEAD_TYPES = ("bigint", "bytea", "bytea", "bytea", "integer", "bytea", "bytea", "bytea", "text")
_NOTE_COLUMNS = (
    "note_id", "digest", "payer", "serial", "payee", "amount", "status", "reason_code", "reason",
    "debit_n", "credit_n", "time", "refusal", "settlement", "balance_notice", "settle_status",
    "allowance", "note",
)  # fmt: skip
_NOTE_TYPES = (
    "bytea", "bytea", "text", "bigint", "text", "bigint", "text", "integer", "text", "bigint",
    "bigint", "bigint", "bytea", "bytea", "bytea", "integer", "bigint", "bytea",
)  # fmt: skip
_DUP_COLUMNS = ("digest", "note_id", "payer", "serial", "payee", "refusal", "time", "note")
_DUP_TYPES = ("bytea", "bytea", "text", "bigint", "text", "bytea", "bigint", "bytea")
_NOTICE_COLUMNS = ("account", "kind", "note_id", "obj", "time")
_NOTICE_TYPES = ("text", "integer", "bytea", "bytea", "bigint")
_HEAD_STATE_COLUMNS = "book, n, ecode, hchain, coded_bal, last_kind, last_lsum"
_HEAD_STATE_SELECT = f"SELECT {_HEAD_STATE_COLUMNS} FROM books"
_DUP_SELECT = "SELECT digest, note_id, payer, serial, payee, refusal, time FROM double_issues"


def _dup_outcome(row: Sequence[Any], replay: bool = True) -> Outcome:
    return Outcome(
        REFUSED,
        bytes(row[1]),
        row[2],
        row[4],
        int(row[3]),
        None,
        reason_code=codec.REASON_DOUBLE_ISSUE,
        reason=_double_reason(row[2], int(row[3])),
        refusal=bytes(row[5]),
        replay=replay,
        time=int(row[6]),
    )


def _blob(v: Any, size: int | None) -> bool:
    return isinstance(v, BLOB_TYPES) and (size is None or len(v) == size)


def _whole(v: Any) -> bool:
    return type(v) is int and v >= 0


def _head_state(row: Sequence[Any]) -> tuple:
    """(book, n, ecode, hchain, coded_bal, last_kind, last_lsum) of a head row. ChainError
    naming each damaged cell: the next record is built on them and signed (a 1-byte hchain
    or ecode was booked on, and every later record chained onto the damage)."""
    book, n, ecode, hchain, coded, kind, last_lsum = row[:7]
    if not (  # one test on the booking path; the names only when something is wrong
        _whole(n)
        and _blob(ecode, 16)
        and _blob(hchain, 32)
        and (coded is None or _blob(coded, None))
        and _whole(kind)
        and _blob(last_lsum, 16)
    ):
        cells = (
            ("record count", n, _whole(n)),
            ("ecode", ecode, _blob(ecode, 16)),
            ("hchain", hchain, _blob(hchain, 32)),
            ("coded_bal", coded, coded is None or _blob(coded, None)),
            ("last_kind", kind, _whole(kind)),
            ("last_lsum", last_lsum, _blob(last_lsum, 16)),
        )
        bad = [f"{name} is {describe_cell(v)}" for name, v, ok in cells if not ok]
        raise rec.ChainError(
            f"book {book}'s head row is damaged: its {' and its '.join(bad)} "
            "(hubi audit verify names it, hubi audit restore brings the records back)"
        )
    return (
        book, n, bytes(ecode), bytes(hchain),
        None if coded is None else bytes(coded), kind, bytes(last_lsum),
    )  # fmt: skip


def _head(row: Sequence[Any]) -> Head:
    bad = [
        f"{c} is {describe_cell(v)}"
        for c, v in zip(("statement", "sig"), row[7:9])
        if not isinstance(v, BLOB_TYPES)
    ]
    if bad:
        raise rec.ChainError(f"book {row[0]}'s head row is damaged: its {' and its '.join(bad)}")
    return Head(*_head_state(row), bytes(row[7]), bytes(row[8]))


def _account_info(row: Sequence[Any]) -> AccountInfo:
    return AccountInfo(
        row[0],
        row[1],
        int(row[2]),
        int(row[3]),
        int(row[4]),
        None if row[5] is None else bytes(row[5]),
    )


def _covers(info: AccountInfo, balance: int, amount: int) -> bool:
    if info.overdraft < 0:
        return True
    return balance - amount >= -info.overdraft


def _out_of_range(amount: int, side: str) -> tuple[int, str]:
    """A refusal for a note that would take a balance past the signed 64-bit range of a book
    (only accounts with an unlimited overdraft get near it); the balance is not told."""
    return (
        codec.REASON_FORMAT,
        f"amount {amount} would take the {side}'s balance past the 64-bit range of a book",
    )


def _funds_reason(account: str, balance: int, amount: int) -> str:
    """The Refusal goes to the payee (and the upload answer to anyone): it never tells the
    payer's balance."""
    del balance
    return f"insufficient funds: {account} cannot cover {amount}"


def _double_reason(payer: str, serial: int) -> str:
    return f"double issuance: {payer} already used serial {serial} for another note"


def _verify_reason(report: verify.Report) -> tuple[int, str]:
    bad = report.first_failure() or ("note", "did not verify")
    code = codec.REASON_BAD_TEMPLATE if bad[0] == "template" else codec.REASON_BAD_SIGNATURE
    return code, f"{bad[0]}: {bad[1]}"


def _clip(text: str) -> str:
    raw = text.encode()[: codec.MAX_TEXT]
    return raw.decode(errors="ignore")


def _decode_note(note: bytes | codec.Obj) -> tuple[bytes, codec.Obj]:
    try:
        if isinstance(note, codec.Obj):
            raw = note.raw if note.raw is not None else codec.encode(note)
            obj = codec.decode(raw, codec.NOTE)
        else:
            raw = bytes(note)
            obj = codec.decode(raw, codec.NOTE)
    except CodecError as exc:
        raise MalformedNote(f"not a valid note: {type(exc).__name__}: {exc}") from None
    return raw, obj


@dataclass(frozen=True)
class _Identity:
    """What kmc.issue_account needs from a bank identity."""

    bank: str
    private: int

    def __repr__(self) -> str:
        return f"_Identity(bank={self.bank!r}, key=<secret>)"


def copy_outcome(out: Outcome, **changes: Any) -> Outcome:
    return replace(out, **changes)


__all__ += ["StoreError", "verify_checkpoint", "verify_inclusion_proof"]
