"""One bank's part in the consortium (DESIGN §6): validate, order, apply.

:class:`ConsortiumNode` lives inside a bank node (or in-process, for the embedded set-up) next to
the bank's :class:`~hubi.bank.engine.BankEngine`:

Validation pool (execute). ``validate(note)`` is what a peer bank asks: this bank checks the note
(signatures, format, template; as the payer's bank also balance, allowance and serial; as the
payee's bank the payee's account) and answers with an Endorsement sealed by its key, endorsing
or refusing with a reason. ``submit(note)`` is the upload path of an interbank note: the bank
asks every other bank at once and stops waiting as soon as the policy is met (more than half of
the banks, always the payer's bank; this bank also insists on the payee's bank, whose customer
is to be credited). A forged answer (seal that does not verify, other note, other signer) is not
counted and is reported.

Ordering. With enough endorsements the note is claimed in the ordered log under its note id,
create-if-absent: it is ordered at most once across the consortium. A loser learns who won: the
same note (then it gets the winner's outcome) or another note with the same payer serial
(double issuance, refused).

Applying (validate). One thread per bank applies the log in revision order from the revision
after the last one it applied (so it resumes there after a restart). A second thread reads the
log ahead of it and does what depends only on an entry's bytes (decoding, endorsement seals, the
debit result's signatures), so that the signature checks run beside the booking:

- ``n/<note id>``: re-check the entry: the note decodes and has this id, every endorsement is
  valid (one forged endorsement rejects the whole entry: an honest submitter never includes
  one) and together they meet the policy. Rejected entries are reported, by every bank alike.
  The payer's bank then books the debit (``engine.debit``; it may still bounce if the payer's
  balance fell meanwhile) and puts its signed result in the log: ``d/<note id>/<bank>``
  (its BalanceNotice, or its Refusal).
- ``d/<note id>/<bank>``: the payer's bank's result, checked (signed by the payer's bank, about
  this note and amount). A BalanceNotice settles the note (the payee's bank books the credit,
  ``engine.credit``, and issues the SettlementNotice); a Refusal bounces it.
- ``c/<bank>/<size>``: a bank's checkpoint (signed Merkle tree head), checked and kept.

Forgetting. Every bank puts the revision through which it has applied the log under
``applied/<bank>`` every ``prune_interval`` seconds; the bank with the lowest id then has the log
forget (``orderer.forget``) every key created at or before the lowest of those marks, so that
the log holds only what some bank has still to apply. A note id is then free in the log again,
but every bank keeps it in its state: a second claim of it (only a submission already under way
when its key went can make one) settles nothing, and every bank reports it alike. A bank whose
state went back (restored from an older backup) puts its lower mark before it applies anything,
which stops any forgetting past it, and then refuses to apply if the log already forgot what it
has still to apply (``forgotten``, written with every deletion): it would miss those entries.

Every bank reaches the same verdict on every event (the verdicts depend only on the log and the
consortium file), and chains them into ``log_hash``: two banks at the same applied revision with
different hashes disagree about the log, which the tests check.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from hubi.bank import engine as eng_mod
from hubi.bank.engine import BankEngine
from hubi.bank.issuance import same_issuance, same_issuance_bytes
from hubi.consortium import entries as ent
from hubi.consortium.endorse import (
    EndorsementCheck,
    EndorsementVerifier,
    Evaluation,
    evaluate,
    make_endorsement,
    note_digest,
)
from hubi.consortium.errors import (
    ConsortiumError,
    EntryError,
    LogForgotten,
    MarkFell,
    NotEndorsed,
    OrdererError,
    PeerError,
)
from hubi.consortium.orderer import Claim, LogEvent, Orderer, read_revision, revision_value
from hubi.consortium.peers import DEFAULT_STALL_AFTER, NoThread, PeerHealth, PeerThreads
from hubi.consortium.state import (
    BOUNCED,
    ORDERED,
    REJECTED,
    SETTLED,
    ConsortiumState,
    EntryRow,
)
from hubi_core import codec, ids, lsum, verify
from hubi_core.errors import CodecError, HubiError
from hubi_core.verify import Trust

log = logging.getLogger("hubi.consortium")

__all__ = ["ConsortiumNode", "NodeFenced", "PeerTransport", "SubmitResult"]

DEFAULT_ENDORSE_TIMEOUT = 5.0
DEFAULT_SETTLE_TIMEOUT = 10.0
DEFAULT_HEDGE_DELAY = 0.25
DEFAULT_PRUNE_INTERVAL = 10.0
READ_AHEAD = 256  # log events read and checked ahead of the applier
STUCK_AFTER = 5.0  # seconds of applier failures, no event applied, before /health says degraded
# seconds a log read runs without error or event before it counts as working: longer than the
# etcd client's retry deadline (15 s), after which a watch no member serves raises
QUIET_AFTER = 20.0
_DEBIT_ERROR = "publishing a debit result"
I64_MAX = eng_mod.MAX_STORED  # an amount, serial or reason code the state (SQLite) holds


class PeerTransport(Protocol):
    """How a bank reaches its peers' validation endpoints."""

    def validate(self, bank: str, note: bytes, timeout: float) -> bytes:
        """The peer's encoded Endorsement of `note`; PeerError if it gives none."""
        ...

    def close(self) -> None: ...


@dataclass
class SubmitResult:
    """The answer to an interbank note's upload, shaped like the bank API's upload reply."""

    note_id: bytes
    outcome: str  # booked | bounced | refused | pending
    status: str  # settled | bounced | rejected | double-issue | pending | not-endorsed
    reason_code: int | None = None
    reason: str | None = None
    refusal: bytes | None = None
    duplicate: bool = False
    payer: str | None = None
    payee: str | None = None
    amount: int | None = None
    revision: int | None = None
    submitter: str | None = None
    endorsers: list[str] = field(default_factory=list)
    notices: list[dict[str, Any]] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "note_id": self.note_id.hex(),
            "kind": "Note",
            "outcome": self.outcome,
            "status": self.status,
            "reason_code": self.reason_code,
            "reason": self.reason,
            "reason_name": codec.REASON_NAMES.get(self.reason_code) if self.reason_code else None,
            "refusal": self.refusal.hex() if self.refusal else None,
            "duplicate": self.duplicate,
            "payer": self.payer,
            "payee": self.payee,
            "amount": self.amount,
            "notices": self.notices,
            "consortium": {
                "revision": self.revision,
                "submitter": self.submitter,
                "endorsers": self.endorsers,
                "evaluation": self.evaluation,
            },
        }


class _Stop(Exception):
    pass


class NodeFenced(ConsortiumError):
    """This bank's node lost its database lock (hubi.bank.server fences it): it validates
    nothing for its peers until it has the lock again (a peer's route answers 503)."""


class _NoteCheck(NamedTuple):
    """A note entry as its bytes show it (``ConsortiumNode._check_note_entry``)."""

    entry: ent.NoteEntry | None
    note: codec.Obj | None
    problem: str | None  # None: a valid entry
    report_kind: str
    evaluation: Evaluation | None


class _DebitRead(NamedTuple):
    """A debit result entry as its bytes show it (``ConsortiumNode._read_debit``)."""

    entry: ent.DebitEntry | None
    result: codec.Obj | None
    problem: str | None  # why it does not decode
    checked_for: str | None = None  # the bank whose key the signatures were checked under
    signatures: str | None = None  # and what failed there (None: every one verifies)


class _CheckpointCheck(NamedTuple):
    """A checkpoint entry as its bytes show it (``ConsortiumNode._check_checkpoint``)."""

    checkpoint: codec.Obj | None  # the verified Checkpoint, or None with the problem
    problem: str | None


Precheck = _NoteCheck | _DebitRead | _CheckpointCheck | None  # what ConsortiumNode._precheck finds


class ConsortiumNode:
    """A bank's consortium member: validation pool, orderer client and log applier."""

    def __init__(
        self,
        engine: BankEngine,
        trust: Trust,
        orderer: Orderer,
        transport: PeerTransport,
        state: ConsortiumState,
        *,
        endorse_timeout: float = DEFAULT_ENDORSE_TIMEOUT,
        settle_timeout: float = DEFAULT_SETTLE_TIMEOUT,
        hedge_delay: float = DEFAULT_HEDGE_DELAY,
        stall_after: float = DEFAULT_STALL_AFTER,
        checkpoint_interval: float = 1.0,
        prune_interval: float | None = DEFAULT_PRUNE_INTERVAL,
        require_payee: bool = True,
        clock: Callable[[], float] = time.time,
    ):
        self.engine = engine
        self.bank = engine.bank
        self.trust = trust
        self.consortium = trust.consortium
        self.orderer = orderer
        self.transport = transport
        self.state = state
        self.endorse_timeout = endorse_timeout
        self.hedge_delay = hedge_delay
        self._rotation = itertools.count()
        self.settle_timeout = settle_timeout
        self.checkpoint_interval = checkpoint_interval
        self.prune_interval = prune_interval  # None: neither mark nor forget (tests)
        self.pruner = min(self.consortium.bank_ids())  # the bank that has the log forget
        # the applier (before it reads the log) and the forgetting loop both mark: one at a
        # time, or a mark read earlier could be put after a later one (the mark going back)
        self._mark_lock = threading.Lock()
        self.pruning: dict[str, Any] = {
            "marked": None,  # the applied revision this bank last put under applied/<bank>
            "through": 0,  # the log forgot the keys created up to here (pruner only)
            "keys": 0,  # keys it forgot, since this node started (pruner only)
            "waiting_for": [],  # banks with no applied mark yet (pruner only)
            "forgotten": 0,  # how far the log had forgotten when this bank last began reading
        }
        self.require_payee = require_payee
        self.clock = clock
        self.verifier = EndorsementVerifier(trust)
        self.peer_health = PeerHealth(stall_after)
        self._peers: PeerThreads | None = PeerThreads(self.bank)
        # peers' validation requests this bank answered, and those it dropped because the asking
        # bank had hung up before they were read (it gave up on them: a stall here, its timeout)
        self.validations = {"answered": 0, "caller_gone": 0}
        self._vlock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._waiters: dict[bytes, threading.Event] = {}
        self._wlock = threading.Lock()
        self._applied = threading.Condition()
        self.last_error: str | None = None
        # since when the applier has failed without applying an event in between (None: it
        # has not): a streak longer than STUCK_AFTER makes /health say degraded
        self.failing_since: float | None = None
        self.halted: str | None = None  # why this bank stopped applying for good (LogForgotten)
        # why this bank's database is not its own now (a PostgreSQL node that lost its node
        # lock, hubi.bank.server): the applier books nothing until it is None again
        self.fenced: str | None = None
        self.published_checkpoint = 0
        self.started = False
        self._timings: dict[str, deque[float]] = {}
        # CPU seconds of the applier thread, the log events it applied, and the CPU seconds of
        # the thread that reads and checks the log ahead of it: both are serial, so the busier
        # one bounds a bank's rate of interbank notes
        self.applier_cpu = 0.0
        self.applier_events = 0
        self.read_ahead_cpu = 0.0
        # None is stop()'s wake-up call: the loop blocked on an empty queue for up to 0.5 s
        self._debits: queue.Queue[tuple[bytes, bytes] | None] = queue.Queue()
        # the applier's read-ahead queue while it reads the log: stop() wakes it with None
        self._ahead: queue.Queue[Any] | None = None
        if hasattr(orderer, "on_overwrite"):  # etcd: a log key put again is reported
            orderer.on_overwrite = self._overwritten

    # ------------------------------------------------------------------------- timings
    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Record how long a stage took (the last 2000 per stage; see ``timings()``)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            q = self._timings.get(stage)
            if q is None:
                q = self._timings.setdefault(stage, deque(maxlen=2000))
            q.append(time.perf_counter() - t0)

    def timings(self) -> dict[str, dict[str, float]]:
        """Per stage: count, p50 and p99 in milliseconds over the last 2000 runs."""
        out = {}
        for stage, q in sorted(self._timings.items()):
            xs = sorted(q)
            if xs:
                out[stage] = {
                    "n": len(xs),
                    "p50_ms": round(xs[len(xs) // 2] * 1000, 2),
                    "p99_ms": round(xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000, 2),
                }
        return out

    def __repr__(self) -> str:
        return f"ConsortiumNode(bank={self.bank!r}, orderer={self.orderer!r})"

    # ------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self.started:
            return
        for row in self.state.entries(ORDERED, limit=1_000_000):
            res = row.local.get("result") if isinstance(row.local, dict) else None
            if ids.bank_of(row.payer) == self.bank and res:
                entry = ent.DebitEntry(self.bank, self._kept_result(row.note_id, res), row.time)
                self._debits.put((row.note_id, entry.encode()))
        self.started = True  # only now: a start that failed above may be tried again
        self._stop.clear()
        self._halt_orderer(False)
        if self._peers is None:  # stopped before: stop() shut the last threads down
            self._peers = PeerThreads(self.bank)
        loops = [
            ("apply", self._apply_loop),
            ("checkpoints", self._publish_loop),
            ("debits", self._debit_loop),
        ]
        if self.prune_interval:
            loops.append(("prune", self._prune_loop))
        for name, target in loops:
            t = threading.Thread(target=target, name=f"hubi-{self.bank}-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def _kept_result(self, nid: bytes, res: object) -> bytes:
        """A debit result kept in the state to be put in the log again; ConsortiumError naming
        the entry if it is not hex (a damaged state: a bare ValueError said nothing)."""
        if isinstance(res, str):
            with contextlib.suppress(ValueError):
                return bytes.fromhex(res)
        raise ConsortiumError(
            f"bank {self.bank}: consortium state {self.state.path}: entry {nid.hex()} keeps a "
            f"debit result that is not hex ({str(res)[:40]!r}): restore the state from a backup"
        )

    def _halt_orderer(self, on: bool) -> None:
        halt = getattr(self.orderer, "halt", None)  # the etcd orderer's; SQLite's never waits
        if halt is not None:
            halt(on)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        # a thread in an etcd call (a mark, a checkpoint, a debit result) gives up at its next
        # try: with the cluster's quorum gone it retried 15 s, and the join waited for it
        self._halt_orderer(True)
        with self._applied:
            self._applied.notify_all()
        if self._threads:  # wake the debit publisher (what is queued stays for a restart)
            self._debits.put(None)
        ahead = self._ahead
        if ahead is not None:  # and the applier, waiting for the log's next event
            with contextlib.suppress(queue.Full):  # full: its next get returns at once
                ahead.put_nowait(None)
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()
        if self._peers is not None:
            self._peers.shutdown()
            self._peers = None
        self.started = False

    def close(self) -> None:
        self.stop()
        self.transport.close()
        self.orderer.close()
        self.state.close()

    # --------------------------------------------------------------------- validation
    def validate(self, note: bytes, requester: str | None = None) -> bytes:
        """This bank's Endorsement of an interbank note (endorse or refuse, sealed).

        CodecError if `note` is not a Note at all (there is no note id to endorse)."""
        why = self.fenced
        if why is not None:
            # its books may be another node's now (it applies nothing meanwhile): no verdict
            # from them, and no serial block reserved in a database it may not write
            raise NodeFenced(f"bank {self.bank} validates no note while its node is fenced: {why}")
        if requester is not None:
            with self._vlock:
                self.validations["answered"] += 1
        obj = codec.decode(note, codec.NOTE)
        nid = lsum.note_id(obj.signer, obj.serial)
        digest = note_digest(note)
        self.check_state()  # no endorsement from a state this bank no longer applies to
        ok, code, why = self._judge(note, obj, nid, digest)
        if not ok:
            log.info(
                "bank %s refuses note %s for %s: %s",
                self.bank,
                nid.hex()[:16],
                requester or "itself",
                why,
            )
        return make_endorsement(
            self.engine.keys,
            self.engine.next_serial("endorsement"),
            int(self.clock()),
            nid,
            digest,
            ok,
            code,
            why,
        )

    def caller_gone(self, requester: str) -> None:
        """Count a validation request not answered because ``requester`` hung up before it was
        read: it gave up on it, so checking the note would only delay the requests after it."""
        with self._vlock:
            self.validations["caller_gone"] += 1
        log.info("bank %s: %s hung up before its validation request was read", self.bank, requester)

    def _judge(
        self, raw: bytes, obj: codec.Obj, nid: bytes, digest: bytes
    ) -> tuple[bool, int | None, str | None]:
        payer, payee = obj.signer, obj["payee"]
        payer_bank, payee_bank = ids.bank_of(payer), ids.bank_of(payee)
        if payer_bank == payee_bank:
            return False, codec.REASON_FORMAT, f"{payer} -> {payee} is not an interbank note"
        for b in (payer_bank, payee_bank):
            if b not in self.consortium.banks:
                return (
                    False,
                    codec.REASON_UNKNOWN_ACCOUNT,
                    f"bank {b} is not in consortium {self.consortium.name}",
                )
        for name, n in (("amount", obj["amount"]), ("serial", obj.serial)):
            if n > I64_MAX:  # every applier would reject the entry: not for the log
                return False, codec.REASON_FORMAT, f"note {name} {n} is past {I64_MAX}"
        row = self.state.entry(nid)
        if row is not None and not row.digest:  # burnt by an entry that is no note (§4)
            return False, codec.REASON_CONSORTIUM, f"note id burnt: {row.reason}"
        if row is not None and row.digest != digest and not _one_issuance(row.note, obj):
            return (
                False,
                codec.REASON_DOUBLE_ISSUE,
                f"serial {obj.serial} of {payer} was ordered with another note (rev {row.revision})",
            )
        if self.bank in (payer_bank, payee_bank):
            try:
                v = self.engine.validate(raw)
            except eng_mod.MalformedNote as exc:
                return False, codec.REASON_FORMAT, str(exc)
            if not v.ok:
                if v.reason_code == codec.REASON_INSUFFICIENT_FUNDS:
                    # the engine's text names the balance: not for peers and merchants
                    return False, v.reason_code, f"{payer} cannot cover {obj['amount']}"
                return False, v.reason_code, v.reason
            if self.bank == payer_bank:
                other = self.state.endorse_once(nid, digest)
                if other is not None and not (
                    row is not None and other == row.digest and _one_issuance(row.note, obj)
                ):
                    return (
                        False,
                        codec.REASON_DOUBLE_ISSUE,
                        f"serial {obj.serial} of {payer} already endorsed for another note",
                    )
            return True, None, None
        if obj["amount"] <= 0:
            return False, codec.REASON_FORMAT, "amount must be positive"
        report = verify.verify_note(obj, self.trust, None)
        if not report.ok:
            field_name, why = report.first_failure() or ("note", "does not verify")
            code = (
                codec.REASON_BAD_TEMPLATE
                if field_name == "template"
                else codec.REASON_BAD_SIGNATURE
            )
            return False, code, f"{field_name}: {why}"
        return True, None, None

    # ----------------------------------------------------------------- collecting
    def peer_order(self, payer_bank: str, payee_bank: str) -> list[str]:
        """Peers to ask, in order: the payer's bank, the payee's bank, then the others in a
        rotating order (so that the load of validation spreads over the third banks), the
        stalled ones last."""
        first = [b for b in (payer_bank, payee_bank) if b != self.bank]
        others = [b for b in self.consortium.bank_ids() if b != self.bank and b not in first]
        if others:
            k = next(self._rotation) % len(others)
            others = others[k:] + others[:k]
        return first + self.peer_health.answering_first(others)

    def _ask(self, pool: PeerThreads, bank: str, raw: bytes) -> cf.Future[bytes] | None:
        """Send a validation request to ``bank`` on its own threads; None if it is stalled."""
        token = self.peer_health.try_send(bank)
        if token is None:
            return None
        try:
            fut = pool.submit(bank, self.transport.validate, bank, raw, self.endorse_timeout)
        except RuntimeError:  # stop() shut the threads down meanwhile
            self.peer_health.done(bank, token, replied=False)
            raise ConsortiumError(f"bank {self.bank}: the consortium node is stopped") from None
        fut.add_done_callback(lambda f: self.peer_health.done(bank, token, replied=_replied(f)))
        return fut

    def collect(self, raw: bytes, obj: codec.Obj) -> tuple[Evaluation, list[EndorsementCheck]]:
        """Gather endorsements: this bank's own, and its peers' over the transport.

        Hedged: first only as many peers as the policy needs (the payer's and the payee's bank
        first), in parallel; one more for every peer that fails, refuses or answers with a
        forgery; all the others if the first ones have not answered within ``hedge_delay``. A
        stalled peer (:mod:`hubi.consortium.peers`) with its probe open is not asked at all.
        Returns as soon as the policy is met, when it can no longer be met, or after
        ``endorse_timeout``."""
        pool = self._peers
        if pool is None:
            raise ConsortiumError(f"bank {self.bank}: the consortium node is stopped")
        nid = lsum.note_id(obj.signer, obj.serial)
        digest = note_digest(raw)
        payer_bank, payee_bank = ids.bank_of(obj.signer), ids.bank_of(obj["payee"])
        order = self.peer_order(payer_bank, payee_bank)
        named = [b for b in order if b in (payer_bank, payee_bank)]
        need = max(self.consortium.quorum() - 1, len(named))
        futures: dict[cf.Future[bytes], str] = {}
        waiting = list(order)

        checks: list[EndorsementCheck] = []
        problems: dict[str, str] = {}

        def ask(n: int) -> None:
            while n > 0 and waiting:
                b = waiting.pop(0)
                f = self._ask(pool, b, raw)
                if f is None:
                    problems[b] = self.peer_health.why_not(b)
                    continue
                futures[f] = b
                n -= 1

        ask(need)
        own = self.validate(raw)
        checks.append(self.verifier.check(own, nid, digest, self.bank))
        ev = self._eval(payer_bank, payee_bank, checks)
        now = time.monotonic()
        deadline = now + self.endorse_timeout
        hedge_at = now + self.hedge_delay
        processed: set[cf.Future[bytes]] = set()
        pending = set(futures)
        unanswered = "no answer in time"  # what the banks still open are told, if ev fails
        while not ev.ok and (pending or waiting):
            open_banks = {futures[f] for f in pending} | set(waiting)
            if self._hopeless(ev, payer_bank, payee_bank, open_banks):
                unanswered = "not waited for (the policy could no longer be met)"
                break
            now = time.monotonic()
            if now >= deadline:
                break
            if waiting and (now >= hedge_at or not pending):
                ask(len(waiting))
                pending = set(futures) - processed
            until = hedge_at if waiting else deadline
            done, _ = cf.wait(
                pending,
                timeout=max(0.0, min(until, deadline) - now),
                return_when=cf.FIRST_COMPLETED,
            )
            for f in done:
                processed.add(f)
                bank = futures[f]
                try:
                    answer = f.result()
                except PeerError as exc:
                    problems[bank] = str(exc)
                    if exc.forged:  # an answer no honest node gives, reported like a forgery
                        self._report_forged(bank, nid, str(exc))
                    ask(1)
                    continue
                except Exception as exc:  # a transport bug must not hang the upload
                    problems[bank] = f"{type(exc).__name__}: {exc}"
                    ask(1)
                    continue
                c = self.verifier.check(answer, nid, digest, bank)
                if not c.valid:
                    self._report_forged(bank, nid, c.problem or "invalid endorsement")
                if not c.endorses:
                    ask(1)
                checks.append(c)
            pending = set(futures) - processed
            ev = self._eval(payer_bank, payee_bank, checks)
        for bank in waiting:
            if not ev.ok:
                problems.setdefault(bank, "not asked (the policy could no longer be met)")
        for f in pending:
            bank = futures[f]
            if f.cancel():  # still waiting for a thread: never sent, and no longer needed
                problems.setdefault(bank, unanswered)
                continue
            if ev.ok:
                # not needed any more, but a forged late answer is still reported
                f.add_done_callback(lambda fut, b=bank: self._late(fut, b, nid, digest))
            else:
                problems.setdefault(bank, unanswered)
        if not ev.ok and problems:
            ev = Evaluation(
                ev.ok,
                ev.reason + "; " + "; ".join(f"{b}: {p}" for b, p in sorted(problems.items())),
                ev.endorsers,
                ev.refusers,
                ev.forged,
            )
        return ev, checks

    def _late(self, fut: cf.Future[bytes], bank: str, nid: bytes, digest: bytes) -> None:
        """Check an endorsement that came after the policy was met (reports forgeries)."""
        try:
            answer = fut.result()
        except Exception:
            return
        c = self.verifier.check(answer, nid, digest, bank)
        if not c.valid:
            self._report_forged(bank, nid, c.problem or "invalid endorsement")

    def _eval(self, payer_bank: str, payee_bank: str, checks: list[EndorsementCheck]) -> Evaluation:
        return evaluate(
            self.consortium,
            payer_bank,
            payee_bank,
            checks,
            require_payee=self.require_payee,
        )

    def _hopeless(
        self, ev: Evaluation, payer_bank: str, payee_bank: str, open_banks: set[str]
    ) -> bool:
        """True if the policy can no longer be met whatever the banks still open answer."""
        if payer_bank in ev.refusers or (self.require_payee and payee_bank in ev.refusers):
            return True
        possible = set(ev.endorsers) | open_banks
        ok, _ = self.consortium.quorum_ok(sorted(possible), payer_bank, payee_bank)
        if ok and self.require_payee and payee_bank not in possible:
            return True
        return not ok

    def _report_forged(self, bank: str, nid: bytes, problem: str) -> None:
        log.warning("bank %s returned an invalid endorsement: %s", bank, problem)
        self.state.add_report("forged-endorsement", bank, nid, problem)
        self._publish_report("forged-endorsement", bank, nid, problem)

    def _publish_report(self, kind: str, subject: str, nid: bytes | None, detail: str) -> None:
        import json

        key = (
            ent.REPORTS
            + (
                f"{self.bank}/{int(self.clock() * 1000):015d}-{hashlib.sha256(detail.encode()).hexdigest()[:8]}"
            ).encode()
        )
        doc = {
            "reporter": self.bank,
            "kind": kind,
            "subject": subject,
            "note_id": nid.hex() if nid else None,
            "detail": detail,
        }
        try:
            self.orderer.put(key, json.dumps(doc, sort_keys=True).encode())
        except HubiError as exc:
            log.warning("could not publish report %s: %s", kind, exc)

    # --------------------------------------------------------------------- submitting
    def submit(self, raw: bytes) -> SubmitResult:
        """Settle an interbank note uploaded here: endorse, order, wait for the log to settle it.

        Raises CodecError for bytes that are not a Note, NotEndorsed when the policy cannot be
        met for lack of answers (banks down: retry later), OrdererError if the log is down."""
        obj = codec.decode(raw, codec.NOTE)
        nid = lsum.note_id(obj.signer, obj.serial)
        digest = note_digest(raw)
        payer_bank, payee_bank = ids.bank_of(obj.signer), ids.bank_of(obj["payee"])
        base = SubmitResult(
            nid, "refused", "rejected", payer=obj.signer, payee=obj["payee"], amount=obj["amount"]
        )
        if payer_bank == payee_bank:
            raise ConsortiumError(f"note {obj.signer} -> {obj['payee']} is not interbank")
        self.check_state()
        row = self.state.entry(nid)
        if row is not None:
            return self._known(base, obj, row, digest)
        with self.timed("collect"):
            ev, checks = self.collect(raw, obj)
        base.evaluation = ev.as_dict()
        if not ev.ok:
            row = self.state.entry(nid)  # applied here meanwhile: the log may have forgotten it
            if row is not None:
                return self._known(base, obj, row, digest)
            taken = self._ordered_meanwhile(nid)
            if taken is not None:
                # a race lost while the peers were asked: banks that applied the other note
                # refuse this one, and the policy fails before the payer's bank answers
                return self._claimed(base, obj, taken, digest)
            return self._not_endorsed(base, ev, payer_bank, payee_bank)
        entry = ent.NoteEntry(
            raw, [c.raw for c in checks if c.endorses], self.bank, int(self.clock())
        )
        self.check_state()  # not ordered when this bank could not apply it (moved meanwhile)
        with self.timed("claim"):
            claim = self.orderer.claim(ent.note_key(nid), entry.encode())
        if claim.created:
            with self.timed("settle"):
                return self._answer(nid, base, duplicate=False, revision=claim.revision)
        return self._claimed(base, obj, claim, digest)

    def check_state(self) -> None:
        """ConsortiumError naming the file if this bank's state file was replaced or removed
        under the running node: a request thread that opened it before would go on reading
        the old file, and a note ordered then would be answered pending, never applied here."""
        self.state.check_same_file()

    def unavailable(self) -> str | None:
        """Why this bank cannot settle notes now but may later, once its operator restores the
        state file or restarts the node (None: it can)."""
        if self._peers is None:
            return f"bank {self.bank}: the consortium node is stopped"
        if self.fenced is not None:
            return f"bank {self.bank}: the node is fenced: {self.fenced}"
        try:
            self.check_state()
        except ConsortiumError as exc:
            return str(exc)
        return None

    def _known(
        self, base: SubmitResult, obj: codec.Obj, row: EntryRow, digest: bytes
    ) -> SubmitResult:
        """The answer for a note id this bank has applied: a duplicate of that note's
        settlement, or a double issue when another note holds the id."""
        if row.digest and row.digest != digest and not _one_issuance(row.note, obj):
            return self._double(base, obj, row.revision, row.submitter)
        return self._answer(base.note_id, base, duplicate=bool(row.digest))

    def _ordered_meanwhile(self, nid: bytes) -> Claim | None:
        """The log's entry for a note id, if one was ordered (None: none, or the log is down,
        so what the peers said stands)."""
        try:
            return self.orderer.get(ent.note_key(nid))
        except OrdererError as exc:
            log.warning("bank %s: cannot look the note id up in the log: %s", self.bank, exc)
            return None

    def _claimed(
        self, base: SubmitResult, obj: codec.Obj, claim: Claim, digest: bytes
    ) -> SubmitResult:
        """The answer for a note whose id another entry holds in the log: the same note's
        settlement (a duplicate), or a double issue when it is another note."""
        other = _note_entry(claim.value)
        if other is None:
            # no note at all under the id: every bank rejects it and burns the id (§4); answer
            # as this bank's applier decides, as every later upload of this note is answered
            with self.timed("settle"):
                return self._answer(base.note_id, base, duplicate=False, revision=claim.revision)
        if note_digest(other.note) != digest and not _one_issuance(other.note, obj):
            return self._double(base, obj, claim.revision, other.submitter)
        with self.timed("settle"):
            return self._answer(base.note_id, base, duplicate=True, revision=claim.revision)

    def _double(self, base: SubmitResult, obj: codec.Obj, revision: int, who: str) -> SubmitResult:
        why = (
            f"double issuance: serial {obj.serial} of {obj.signer} was ordered first with "
            f"another note (log revision {revision}, submitted by {who})"
        )
        base.status = "double-issue"
        base.reason_code, base.reason = codec.REASON_DOUBLE_ISSUE, why
        base.revision, base.submitter = revision, who
        base.refusal = self._refusal(
            obj.signer, obj["payee"], base.note_id, codec.REASON_DOUBLE_ISSUE, why
        )
        return base

    def _not_endorsed(
        self, base: SubmitResult, ev: Evaluation, payer_bank: str, payee_bank: str
    ) -> SubmitResult:
        decisive = None
        for b in (payer_bank, payee_bank):
            if b in ev.refusers:
                decisive = b
                break
        if decisive is None:
            raise NotEndorsed(
                f"note {base.note_id.hex()[:16]} cannot be settled now: {ev.reason}",
                ev.refusers,
            )
        code, why = ev.refusers[decisive]
        code = code or codec.REASON_CONSORTIUM
        why = f"{decisive} refused: {why}"
        base.status = "not-endorsed"
        base.outcome = "bounced" if code in codec.BOUNCE_REASONS else "refused"
        base.reason_code, base.reason = code, why
        base.refusal = self._refusal(base.payer or "", base.payee or "", base.note_id, code, why)
        return base

    def _refusal(self, payer: str, payee: str, nid: bytes, code: int, why: str) -> bytes:
        from hubi.consortium.endorse import _clip

        obj = codec.Obj(
            codec.REFUSAL,
            self.bank,
            self.engine.next_serial("refusal"),
            int(self.clock()),
            {
                "payee": payee,
                "payer": payer,
                "note_id": nid,
                "reason_code": code,
                "reason": _clip(why),
            },
        )
        return codec.encode(self.engine.keys.sign_obj(obj))

    def wait_final(self, nid: bytes, timeout: float) -> EntryRow | None:
        """The note's entry once it is settled, bounced or rejected here (None on timeout)."""
        deadline = time.monotonic() + timeout
        with self._wlock:
            ev = self._waiters.get(nid)
            if ev is None:
                ev = self._waiters[nid] = threading.Event()
        try:
            while True:
                row = self.state.entry(nid)
                if row is not None and row.final:
                    return row
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return row
                ev.wait(min(left, 0.5))
                ev.clear()
        finally:
            with self._wlock:
                self._waiters.pop(nid, None)

    def _answer(
        self, nid: bytes, base: SubmitResult, *, duplicate: bool, revision: int | None = None
    ) -> SubmitResult:
        row = self.wait_final(nid, self.settle_timeout)
        base.duplicate = duplicate
        if row is None:
            base.outcome, base.status = "pending", "pending"
            base.revision = revision
            base.reason = f"ordered at log revision {revision}; this bank has not applied it yet"
            return base
        base.revision, base.submitter, base.endorsers = row.revision, row.submitter, row.endorsers
        if row.state == SETTLED:
            base.outcome, base.status = "booked", "settled"
            base.reason_code = base.reason = None
            base.notices = self._notices(row)
        elif row.state == BOUNCED:
            base.status = "bounced"
            base.outcome = "bounced" if row.reason_code in codec.BOUNCE_REASONS else "refused"
            base.reason_code, base.reason = row.reason_code, row.reason
            base.refusal = row.debit_result
        elif row.state == REJECTED:
            base.outcome, base.status = "refused", "rejected"
            base.reason_code, base.reason = codec.REASON_CONSORTIUM, row.reason
            base.refusal = self._refusal(
                row.payer or base.payer or "",
                row.payee or base.payee or "",
                nid,
                codec.REASON_CONSORTIUM,
                row.reason or "rejected",
            )
        else:
            base.outcome, base.status = "pending", "pending"
            base.reason = (
                f"ordered at log revision {row.revision}; waiting for the payer's bank "
                f"{ids.bank_of(row.payer)} to book the debit"
            )
        return base

    def _notices(self, row: EntryRow) -> list[dict[str, Any]]:
        out = []
        local = row.local or {}
        if local.get("settlement"):
            out.append(
                {
                    "kind": "SettlementNotice",
                    "account": row.payee,
                    "note_id": row.note_id.hex(),
                    "hex": local["settlement"],
                }
            )
        if row.debit_result and ids.bank_of(row.payer) == self.bank:
            out.append(
                {
                    "kind": "BalanceNotice",
                    "account": row.payer,
                    "note_id": row.note_id.hex(),
                    "hex": row.debit_result.hex(),
                }
            )
        return out

    # ------------------------------------------------------------------------ applying
    def applied_revision(self) -> int:
        return self.state.applied_revision()

    def wait_applied(self, revision: int, timeout: float) -> bool:
        """Block until this bank applied the log up to `revision` (True) or timeout (False)."""
        deadline = time.monotonic() + timeout
        with self._applied:
            while self.state.applied_revision() < revision:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return False
                self._applied.wait(min(left, 0.2))
        return True

    def _apply_loop(self) -> None:
        delay = 0.05
        cpu0 = time.thread_time() - self.applier_cpu  # carries on across restarts of the thread
        while not self._stop.is_set():
            if self.fenced is not None:  # read again from the state once the lock is back
                self._stop.wait(0.2)
                continue
            try:
                after = self.state.applied_revision()
                self._refuse_if_forgotten(after)
                events = self._read_ahead(after)
                try:
                    for ev, pre in events:
                        if self.fenced is not None:
                            break
                        self._apply(ev, pre)
                        self.applier_cpu = time.thread_time() - cpu0
                        self.applier_events += 1
                        delay = 0.05
                        self._recovered()
                finally:
                    events.close()  # its reader stopped now, not when the generator is freed
            except LogForgotten as exc:  # lasts until the state is restored: no retry
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.halted = str(exc)
                log.error("bank %s: %s", self.bank, exc)
                return
            except Exception as exc:
                if self._stop.is_set():
                    return
                self.last_error = f"{type(exc).__name__}: {str(exc)[:500]}"
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                log.warning("bank %s: applying the log paused: %s", self.bank, self.last_error)
                self._stop.wait(delay)
                delay = min(delay * 2, 2.0)

    def _recovered(self) -> None:
        """The applier works again (an event applied, or the log read quietly): forget the
        error it met, so that status and /health do not show one that has passed."""
        if self.failing_since is not None or self.last_error is not None:
            self.failing_since = None
            self.last_error = None

    def stuck(self) -> str | None:
        """Why the applier has applied nothing for at least ``STUCK_AFTER`` s, failing on
        every try (None: it is not)."""
        since = self.failing_since
        if since is None or time.monotonic() - since < STUCK_AFTER:
            return None
        return (
            f"applying the log has failed for {time.monotonic() - since:.0f} s: {self.last_error}"
        )

    def _read_ahead(self, after: int) -> Iterator[tuple[LogEvent, Precheck]]:
        """The log's events after revision `after`, in order, each with what :meth:`_precheck`
        found in its bytes.

        A reader thread follows the log up to ``READ_AHEAD`` events ahead of the applier and
        prechecks each event as it arrives. OpenSSL releases the GIL while it verifies, so the
        next entries' signatures are checked on another core while the applier books this one,
        and the applier, which every bank runs for every interbank note, does about half the
        work it did alone. An error of the log reaches the applier after the events before it,
        as when the applier read the log itself."""
        halt = threading.Event()
        items: queue.Queue[tuple[LogEvent, Precheck] | BaseException | None] = queue.Queue(
            maxsize=READ_AHEAD
        )

        def hand_over(item: tuple[LogEvent, Precheck] | BaseException | None) -> bool:
            while not halt.is_set():
                try:
                    items.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False

        def read() -> None:
            end: BaseException | None = None
            cpu0 = time.thread_time() - self.read_ahead_cpu
            try:
                for ev in self.orderer.events(after, halt):
                    try:
                        pre = self._precheck(ev)
                    except Exception:  # noqa: BLE001 - a bug there: _apply checks it all itself
                        pre = None
                    self.read_ahead_cpu = time.thread_time() - cpu0
                    if not hand_over((ev, pre)):
                        return
            except BaseException as exc:  # handed to the applier, which logs and retries
                end = exc
            hand_over(end)

        reader = threading.Thread(target=read, name=f"hubi-{self.bank}-log", daemon=True)
        reader.start()
        self._ahead = items
        began = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    item = items.get(timeout=0.2)
                except queue.Empty:
                    if time.monotonic() - began >= QUIET_AFTER:  # a log with nothing new
                        self._recovered()
                    continue
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            halt.set()
            reader.join(timeout=5.0)

    def _precheck(self, ev: LogEvent) -> Precheck:
        """What an event's bytes alone say, this bank's state aside (so that it can be worked
        out before the applier gets to the event): for a note entry, :meth:`_check_note_entry`;
        for a debit result, :meth:`_read_debit`; for a checkpoint, :meth:`_check_checkpoint`.
        The applier decides with it as it would have with its own."""
        try:
            kind, what = ent.parse_key(ev.key)
        except EntryError:
            return None
        if kind == "n":
            return _bytes_check(self._check_note_entry, ev, what, _bad_note)
        if kind == "d":
            return _bytes_check(self._read_debit, ev, what, _bad_debit)
        return _bytes_check(self._check_checkpoint, ev, what, _bad_checkpoint)

    def _apply(self, ev: LogEvent, pre: Precheck = None) -> None:
        """Apply one event; `pre` is what :meth:`_precheck` found in its bytes, if it ran."""
        try:
            kind, what = ent.parse_key(ev.key)
        except EntryError as exc:
            with self.state.apply(ev.revision, ev.key, ev.value, "x:bad-key") as tx:
                tx.report(ev.revision, "bad-key", "?", None, str(exc))
            self._applied_now()
            return
        with self.timed("apply-" + kind):
            if kind == "n":
                if not isinstance(pre, _NoteCheck):
                    pre = _bytes_check(self._check_note_entry, ev, what, _bad_note)
                self._apply_note(ev, what, pre)
            elif kind == "d":
                if not isinstance(pre, _DebitRead):
                    pre = _bytes_check(self._read_debit, ev, what, _bad_debit)
                self._apply_debit(ev, what, pre)
            else:
                if not isinstance(pre, _CheckpointCheck):
                    pre = _bytes_check(self._check_checkpoint, ev, what, _bad_checkpoint)
                self._apply_checkpoint(ev, what[0], what[1], pre)
        self._applied_now()

    def _applied_now(self) -> None:
        with self._applied:
            self._applied.notify_all()

    def _notify(self, nid: bytes) -> None:
        with self._wlock:
            w = self._waiters.get(nid)
        if w is not None:
            w.set()

    # n/<note id>
    def _overwritten(self, revision: int, key: bytes, version: int) -> None:
        """A log key put again (only a hostile or mistaken writer does that): not part of the
        order, so nothing is applied, but logged and reported once (a watch that resumes from
        before it sees it again)."""
        try:
            kind, what = ent.parse_key(key)
            nid = what if kind == "n" else what[0] if kind == "d" else None
        except EntryError:
            nid = None
        detail = (
            f"log revision {revision}: {key[:120]!r} written again (version {version}); a log "
            "key is created once, so the new value is ignored"
        )
        try:
            if not self.state.add_report_once(revision, "overwritten-key", "?", nid, detail):
                return
        except HubiError as exc:  # the report is lost, the log read goes on
            log.warning("bank %s: could not record %s: %s", self.bank, detail, exc)
        log.warning("bank %s: %s", self.bank, detail)
        self._publish_report("overwritten-key", "?", nid, detail)

    def _check_note_entry(self, ev: LogEvent, nid: bytes) -> _NoteCheck:
        """(entry, note, problem, report kind, evaluation): problem None = valid entry. From
        the event's bytes and the consortium file only, not from this bank's state."""
        try:
            entry = ent.decode_entry(ev.value)
        except EntryError as exc:
            return _NoteCheck(None, None, str(exc), "bad-entry", None)
        if not isinstance(entry, ent.NoteEntry):
            return _NoteCheck(
                None, None, f"a {type(entry).__name__} under a note key", "bad-entry", None
            )
        try:
            obj = codec.decode(entry.note, codec.NOTE)
        except CodecError as exc:
            return _NoteCheck(entry, None, f"note does not decode: {exc}", "bad-entry", None)
        if lsum.note_id(obj.signer, obj.serial) != nid:
            return _NoteCheck(
                entry, obj, "note id of the key is not the note's id", "bad-entry", None
            )
        for name, n in (("amount", obj["amount"]), ("serial", obj.serial)):
            if n > I64_MAX:  # no balance holds it, and the state's row could not: the id burns
                return _NoteCheck(
                    entry, None, f"note {name} {n} is past {I64_MAX}", "bad-entry", None
                )
        payer_bank, payee_bank = ids.bank_of(obj.signer), ids.bank_of(obj["payee"])
        if payer_bank == payee_bank:
            return _NoteCheck(entry, obj, "not an interbank note", "bad-entry", None)
        for b in (payer_bank, payee_bank, entry.submitter):
            if b not in self.consortium.banks:
                return _NoteCheck(entry, obj, f"bank {b} is not a member", "bad-entry", None)
        digest = note_digest(entry.note)
        checks = [self.verifier.check(e, nid, digest) for e in entry.endorsements]
        evl = evaluate(self.consortium, payer_bank, payee_bank, checks)
        if evl.forged:
            detail = "; ".join(f"endorsement named {b}: {p}" for b, p in sorted(evl.forged.items()))
            return _NoteCheck(
                entry, obj, f"forged endorsement(s) — {detail}", "forged-endorsement", evl
            )
        if not evl.ok:
            return _NoteCheck(
                entry, obj, f"too few endorsements — {evl.reason}", "too-few-endorsements", evl
            )
        return _NoteCheck(entry, obj, None, "", evl)

    def _apply_note(self, ev: LogEvent, nid: bytes, pre: _NoteCheck) -> None:
        entry, obj, problem, rkind, evl = pre
        first = self.state.entry(nid)
        if first is not None:
            self._ordered_again(ev, nid, entry, first)
            return
        now = int(self.clock())
        if problem is not None:
            submitter = entry.submitter if entry else "?"
            detail = f"log revision {ev.revision}, submitted by {submitter}: {problem}"
            log.warning("bank %s rejects note entry %s: %s", self.bank, nid.hex()[:16], detail)
            with self.state.apply(ev.revision, ev.key, ev.value, "n:rejected") as tx:
                if entry is not None and obj is not None:
                    tx.add_entry(
                        _entry_row(
                            nid, ev.revision, entry, obj, evl.endorsers if evl else [], now,
                            REJECTED, codec.REASON_CONSORTIUM, problem[:500],
                        )
                    )  # fmt: skip
                else:  # no note to keep, but the id is burnt all the same, at every bank
                    tx.add_entry(_burnt_row(nid, ev.revision, submitter, problem[:500], now))
                tx.report(ev.revision, rkind, submitter, nid, detail)
            self._publish_report(rkind, submitter, nid, detail)
            self._notify(nid)
            return
        assert entry is not None and obj is not None and evl is not None
        payer_bank = ids.bank_of(obj.signer)
        local = None
        if payer_bank == self.bank:
            with self.timed("engine-debit"):
                out = self.engine.debit(entry.note)
            result = self._debit_result(out, obj, nid)
            local = _local(out)
            local["result"] = result.hex()
        with self.state.apply(ev.revision, ev.key, ev.value, "n:ordered") as tx:
            tx.add_entry(
                _entry_row(nid, ev.revision, entry, obj, evl.endorsers, now, ORDERED, local=local)
            )
        if local is not None:
            # the signed result goes to the log from the debit publisher, so that applying the
            # next events does not wait for this etcd round trip (start() re-queues results of
            # entries still ordered, after a crash between here and the claim)
            self._debits.put((nid, ent.DebitEntry(self.bank, result, now).encode()))

    def _ordered_again(
        self, ev: LogEvent, nid: bytes, entry: ent.NoteEntry | None, first: EntryRow
    ) -> None:
        """A note id claimed a second time, after the log forgot its first claim: the first
        stands and this one books nothing. Every bank holds the first (the log forgets only what
        all have applied), so every bank decides alike."""
        submitter = entry.submitter if entry else "?"
        if entry is None:
            what = "an entry that does not decode, under that note id,"
        elif note_digest(entry.note) == first.digest:
            what = "the same note"
        elif _one_issuance(first.note, entry.note):
            what = "the same note with signed fields removed or added (one issuance)"
        else:
            what = "another note with the same payer serial (double issuance)"
        detail = (
            f"log revision {ev.revision}, submitted by {submitter}: {what} ordered again; the "
            f"note id was ordered at revision {first.revision} ({first.state}), which stands"
        )
        log.warning("bank %s ignores note entry %s: %s", self.bank, nid.hex()[:16], detail)
        with self.state.apply(ev.revision, ev.key, ev.value, "n:again") as tx:
            tx.report(ev.revision, "ordered-again", submitter, nid, detail)
        self._notify(nid)

    def _debit_loop(self) -> None:
        """Put this bank's debit results into the log, retrying until the log takes them."""
        while not self._stop.is_set():
            item = self._debits.get()
            if item is None:  # stop()'s wake-up (or one left by an earlier stop: ignored)
                continue
            nid, value = item
            delay = 0.05
            while not self._stop.is_set():
                try:
                    with self.timed("claim-debit"):
                        claim = self.orderer.claim(ent.debit_key(nid, self.bank), value)
                    if (self.last_error or "").startswith(_DEBIT_ERROR):
                        self.last_error = None
                    if not claim.created and claim.value != value:
                        detail = f"the debit key of note {nid.hex()[:16]} under {self.bank} holds another value"
                        log.error("bank %s: %s", self.bank, detail)
                        self.state.add_report("debit-key-taken", self.bank, nid, detail)
                    break
                except Exception as exc:
                    self.last_error = f"{_DEBIT_ERROR}: {type(exc).__name__}: {exc}"
                    log.warning("bank %s: %s", self.bank, self.last_error)
                    self._stop.wait(delay)
                    delay = min(delay * 2, 2.0)

    def _debit_result(self, out: eng_mod.Outcome, obj: codec.Obj, nid: bytes) -> bytes:
        """The payer's bank's signed result: its BalanceNotice if debited, else its Refusal."""
        if out.ok:
            if out.balance_notice is None:
                again = self.engine.outcome(nid)
                if again is not None and again.balance_notice is not None:
                    return again.balance_notice
                raise ConsortiumError(f"debit of {nid.hex()[:16]} booked but has no BalanceNotice")
            return out.balance_notice
        if out.reason_code == codec.REASON_INSUFFICIENT_FUNDS:
            # the engine's Refusal names the payer's balance; the log is read by every bank
            why = f"{obj.signer} cannot cover {obj['amount']}"
            return self._refusal(obj.signer, obj["payee"], nid, out.reason_code, why)
        if out.refusal is not None:
            return out.refusal
        return self._refusal(
            obj.signer,
            obj["payee"],
            nid,
            out.reason_code or codec.REASON_CONSORTIUM,
            out.reason or out.status,
        )

    # d/<note id>/<bank>
    def _read_debit(self, ev: LogEvent, what: tuple[bytes, str]) -> _DebitRead:
        """Decode a debit result entry and check the signatures of its result under the key of
        the bank that signed it (whether that is the payer's bank, the applier asks the state).
        From the event's bytes and the consortium file only."""
        named = what[1]
        entry = None
        try:
            entry = ent.decode_entry(ev.value)
            if not isinstance(entry, ent.DebitEntry):
                raise EntryError(f"a {type(entry).__name__} under a debit key")
            if entry.bank != named:
                raise EntryError(f"entry names bank {entry.bank}, key names {named}")
            result = codec.decode(entry.result)
        except (EntryError, CodecError) as exc:
            return _DebitRead(entry, None, str(exc), None)
        if result.signer not in self.consortium.banks:
            return _DebitRead(entry, result, None)
        try:
            signatures = self._result_signatures(result, result.signer)
        except HubiError:  # no key for the signer: _check_result meets it, if it matters
            return _DebitRead(entry, result, None)
        return _DebitRead(entry, result, None, result.signer, signatures)

    def _apply_debit(self, ev: LogEvent, what: tuple[bytes, str], pre: _DebitRead) -> None:
        nid, named = what
        row = self.state.entry(nid)
        kind, verdict = "bad-debit", "d:ignored"
        entry, result, problem = pre.entry, pre.result, pre.problem
        if problem is None:
            assert entry is not None and result is not None
            if row is None:
                problem = "no note entry with this id was ordered before"
            elif row.state != ORDERED:
                problem = f"the note is {row.state}, not awaiting a debit"
            elif entry.bank != ids.bank_of(row.payer):
                problem = f"{entry.bank} is not the payer's bank {ids.bank_of(row.payer)}"
                kind = "debit-not-by-payer-bank"
            else:
                problem = self._check_result(result, row, pre)
                if problem is None:
                    verdict = "d:settled" if result.kind == codec.BALANCE else "d:bounced"
                else:
                    kind = "forged-debit-result"
        local = None
        if verdict == "d:settled" and row is not None and ids.bank_of(row.payee) == self.bank:
            with self.timed("engine-credit"):
                out = self.engine.credit(row.note)
            local = _local(out)
            if not out.ok:
                log.error(
                    "bank %s could not credit settled note %s: %s",
                    self.bank,
                    nid.hex()[:16],
                    out.reason,
                )
        with self.state.apply(ev.revision, ev.key, ev.value, verdict) as tx:
            if problem is not None:
                subject = entry.bank if entry is not None else named
                detail = f"log revision {ev.revision}: debit result from {subject}: {problem}"
                tx.report(ev.revision, kind, subject, nid, detail)
                log.warning("bank %s ignores %s", self.bank, detail)
            elif row is not None and result is not None:
                cols: dict[str, Any] = {
                    "debit_revision": ev.revision,
                    "debit_result": entry.result if entry else None,
                }
                if result.kind == codec.BALANCE:
                    cols["state"] = SETTLED
                else:
                    cols["state"] = BOUNCED
                    cols["reason_code"] = result.get("reason_code")
                    cols["reason"] = (
                        f"{result.signer} refused the debit: {result.get('reason', '')}"
                    )
                if local is not None:
                    cols["local"] = local
                    if not local.get("ok"):
                        tx.report(
                            ev.revision,
                            "credit-failed",
                            self.bank,
                            nid,
                            f"settled note could not be credited here: {local.get('reason')}",
                        )
                tx.update_entry(nid, **cols)
        self._notify(nid)

    def _check_result(self, result: codec.Obj, row: EntryRow, pre: _DebitRead) -> str | None:
        payer_bank = ids.bank_of(row.payer)
        if result.signer != payer_bank:
            return f"signed by {result.signer}, not by the payer's bank {payer_bank}"
        if result.kind not in (codec.BALANCE, codec.REFUSAL):
            return f"a {codec.kind_name(result.kind)} is neither a BalanceNotice nor a Refusal"
        if result["note_id"] != row.note_id:
            return "result is about another note"
        if result["payer"] != row.payer or result["payee"] != row.payee:
            return "result names other accounts"
        if result.kind == codec.BALANCE and result["amount"] != row.amount:
            return f"BalanceNotice amount {result['amount']} is not the note's {row.amount}"
        if (result.get("reason_code") or 0) > I64_MAX:  # the state's row could not hold it
            return f"Refusal reason code {result['reason_code']} is past {I64_MAX}"
        if pre.checked_for == payer_bank:
            return pre.signatures
        return self._result_signatures(result, payer_bank)

    def _result_signatures(self, result: codec.Obj, bank: str) -> str | None:
        """None if every signed field of a debit result verifies under `bank`'s key."""
        v = self.verifier.bank_verifier(bank)
        for name in codec.signed_fields(result.kind):
            if name in result.values and not v.verify(
                codec.field_message(result, name), result.sigs[name]
            ):
                return f"signature of field {name} does not verify (forged)"
        return None

    # c/<bank>/<tree size>
    def _check_checkpoint(self, ev: LogEvent, what: tuple[str, int]) -> _CheckpointCheck:
        """The bank's seal and the tree size of a checkpoint entry, from its bytes alone."""
        bank, size = what
        try:
            entry = ent.decode_entry(ev.value)
            if not isinstance(entry, ent.CheckpointEntry) or entry.bank != bank:
                raise EntryError("not a checkpoint entry of " + bank)
            cp = eng_mod.verify_checkpoint(entry.checkpoint, self.trust, bank)
            if cp["tree_size"] != size:
                raise EntryError(f"tree size {cp['tree_size']} differs from the key's {size}")
        except (EntryError, CodecError, HubiError) as exc:
            return _CheckpointCheck(None, str(exc))
        return _CheckpointCheck(cp, None)

    def _apply_checkpoint(self, ev: LogEvent, bank: str, size: int, pre: _CheckpointCheck) -> None:
        cp, problem = pre
        verdict = "c:ok" if problem is None else "c:bad"
        with self.state.apply(ev.revision, ev.key, ev.value, verdict) as tx:
            if problem is not None or cp is None:
                tx.report(
                    ev.revision,
                    "bad-checkpoint",
                    bank,
                    None,
                    f"log revision {ev.revision}: checkpoint {size} of {bank}: {problem}",
                )
            else:
                tx.add_checkpoint(bank, size, cp["root"], ev.revision, cp.raw or b"")

    # -------------------------------------------------------------- checkpoint publishing
    def publish_checkpoints(self) -> int:
        """Put this bank's checkpoints that are not in the log yet into it; returns how many."""
        made = 0
        for cp in self.engine.checkpoints(after=self.published_checkpoint):
            self.orderer.claim(
                ent.checkpoint_key(self.bank, cp.tree_size),
                ent.CheckpointEntry(self.bank, cp.obj).encode(),
            )
            self.published_checkpoint = cp.tree_size
            made += 1
        return made

    def _publish_loop(self) -> None:
        self.published_checkpoint = self.state.last_checkpoint(self.bank)
        while not self._stop.wait(self.checkpoint_interval):
            try:
                self.publish_checkpoints()
            except Exception as exc:
                log.warning("bank %s: publishing checkpoints failed: %s", self.bank, exc)

    # ------------------------------------------------------------------------ forgetting
    def mark_applied(self) -> int:
        """Put this bank's applied revision under ``applied/<bank>`` if it moved; returns it.
        The first mark after a start is put even if lower than the one in the log (a state
        restored from a backup): the log must not forget what this bank has to apply again."""
        with self._mark_lock:
            rev = self.state.applied_revision()
            if rev != self.pruning["marked"]:
                self.orderer.put(ent.applied_key(self.bank), revision_value(rev))
                self.pruning["marked"] = rev
            return rev

    def _refuse_if_forgotten(self, applied: int) -> None:
        """Before reading the log from ``applied``: mark it (with forgetting on), which stops any
        forgetting past it (each deletion compares every mark), then check that the log has not
        already forgotten past it; raises :class:`LogForgotten` if it has."""
        if self.prune_interval is not None:
            self.mark_applied()
        got = self.orderer.get(ent.FORGOTTEN)
        forgotten = (read_revision(got.value) or 0) if got is not None else 0
        self.pruning["forgotten"] = forgotten
        if applied < forgotten:
            raise LogForgotten(
                f"this bank's consortium state stands at revision {applied}, but the log has "
                f"forgotten entries created as late as revision {forgotten}: entries this bank "
                "has not applied are gone, so it applies nothing (it would disagree with every "
                "other bank). Restore its consortium state from a backup taken at or after "
                f"revision {forgotten} and start it again"
            )

    def applied_marks(self) -> dict[str, int]:
        """Every member bank's applied mark found in the orderer (a mark that is not digits, or
        of a bank outside the consortium, is left out and logged)."""
        out: dict[str, int] = {}
        banks = set(self.consortium.bank_ids())
        for key, value, _ in self.orderer.scan(ent.APPLIED):
            bank = key[len(ent.APPLIED) :].decode("ascii", "replace")
            rev = read_revision(value)
            if bank in banks and rev is not None:
                out[bank] = rev
            else:
                log.warning("bank %s: ignoring applied mark %r = %r", self.bank, key, value[:40])
        return out

    def prune_log(self) -> int:
        """Have the log forget what every member bank has applied; returns how many keys went.
        Nothing goes while a bank has no mark (it never started, or runs an older version)."""
        marks = self.applied_marks()
        self.pruning["waiting_for"] = sorted(set(self.consortium.bank_ids()) - set(marks))
        if self.pruning["waiting_for"]:
            return 0
        # never past what this bank applied: a mark is only what someone wrote under the key
        # (a forged one past the head, even past SQLite's 64 bits, would have the log forget
        # what this bank has still to apply, or fail every round)
        through = min(*marks.values(), self.state.applied_revision())
        if through <= self.pruning["through"]:
            return 0
        try:
            gone = self.orderer.forget(
                through,
                marks=[ent.applied_key(b) for b in sorted(marks)],
                record=ent.FORGOTTEN,
            )
        except MarkFell as exc:  # the next round reads the lower mark and forgets nothing
            self.pruning["keys"] += exc.gone
            log.warning("bank %s: %s", self.bank, exc)
            return exc.gone
        self.pruning["through"] = through
        self.pruning["keys"] += gone
        log.info(
            "bank %s: the log forgot %d keys created through revision %d", self.bank, gone, through
        )
        return gone

    def _prune_loop(self) -> None:
        while True:  # the first mark goes out at start: the lowest bank need not wait a round
            try:
                self.mark_applied()
                if self.bank == self.pruner:
                    self.prune_log()
            except Exception as exc:
                log.warning("bank %s: marking or forgetting the log failed: %s", self.bank, exc)
            if self._stop.wait(self.prune_interval):
                return

    # ------------------------------------------------------------------------- status
    @property
    def applying(self) -> bool:
        """Started, not stopped, and not halted (LogForgotten)."""
        return self.started and not self._stop.is_set() and self.halted is None

    def status(self) -> dict[str, Any]:
        return {
            "bank": self.bank,
            "consortium": self.consortium.name,
            "epoch": self.consortium.epoch,
            "orderer": {"kind": self.orderer.kind, "description": self.orderer.description},
            "applied_revision": self.state.applied_revision(),
            "log_hash": self.state.log_hash().hex(),
            "entries": self.state.counts(),
            "positions": self.state.positions(),
            "published_checkpoint": self.published_checkpoint,
            "pruning": {"pruner": self.pruner, **self.pruning},
            "reports": self.state.report_count(),
            "applying": self.applying,
            "last_error": self.last_error,
            "halted": self.halted,
            "timings": self.timings(),
            "peers": self.peer_health.status(),
            "validations": dict(self.validations),
            "applier": {
                "events": self.applier_events,
                "cpu_s": round(self.applier_cpu, 4),
                "read_ahead_cpu_s": round(self.read_ahead_cpu, 4),
            },
        }


def _one_issuance(first: bytes, other: bytes | codec.Obj) -> bool:
    """`other` is the note `first` (bytes every bank holds) with signed fields removed or added:
    one issuance by the payer, not a double issuance. From the two notes' bytes only, so every
    bank decides alike."""
    if not first:
        return False
    if not isinstance(other, codec.Obj):
        return same_issuance_bytes(first, other)
    try:
        return same_issuance(codec.decode(first, codec.NOTE), other)
    except CodecError:
        return False


def _replied(fut: cf.Future[bytes]) -> bool:
    """Whether a finished validation request got anything back from the peer."""
    if fut.cancelled():
        return False
    exc = fut.exception()
    if isinstance(exc, NoThread):  # never sent
        return False
    return exc is None or not isinstance(exc, PeerError) or exc.replied


def _local(out: eng_mod.Outcome) -> dict[str, Any]:
    """What this bank booked for its side, kept with the entry (JSON)."""
    return {
        "ok": out.ok,
        "status": out.status,
        "reason_code": out.reason_code,
        "reason": out.reason,
        "debit_n": out.debit_n,
        "credit_n": out.credit_n,
        "settlement": out.settlement.hex() if out.settlement else None,
        "balance_notice": out.balance_notice.hex() if out.balance_notice else None,
    }


def _entry_row(
    nid: bytes,
    revision: int,
    entry: ent.NoteEntry,
    obj: codec.Obj,
    endorsers: list[str],
    now: int,
    state: str,
    reason_code: int | None = None,
    reason: str | None = None,
    local: dict[str, Any] | None = None,
) -> EntryRow:
    """The state row of an ordered note entry as this bank applied it (no debit result yet)."""
    return EntryRow(
        nid, revision, note_digest(entry.note), obj.signer, obj["payee"], obj["amount"],
        obj.serial, entry.submitter, endorsers, state, reason_code, reason, None, None, local,
        entry.note, now,
    )  # fmt: skip


def _burnt_row(nid: bytes, revision: int, submitter: str, reason: str, now: int) -> EntryRow:
    """The state row of a note id whose entry holds no note: rejected, no digest (no note can
    match it), so that every later upload of a note with this id gets the same answer."""
    return EntryRow(
        nid, revision, b"", "", "", 0, 0, submitter, [], REJECTED, codec.REASON_CONSORTIUM,
        reason, None, None, None, b"", now,
    )  # fmt: skip


def _note_entry(value: bytes) -> ent.NoteEntry | None:
    """The note entry in a log value, if it is one whose note decodes (None: no note there)."""
    try:
        entry = ent.decode_entry(value)
        if isinstance(entry, ent.NoteEntry):
            codec.decode(entry.note, codec.NOTE)
            return entry
    except (EntryError, CodecError, ValueError, RecursionError):
        pass
    return None


def _bytes_check(
    check: Callable[[LogEvent, Any], Precheck],
    ev: LogEvent,
    what: Any,
    failed: Callable[[str], Precheck],
) -> Precheck:
    """One of the checks that depend on an event's bytes alone. A failure there that is not an
    entry's own error (a decoder meeting bytes it was never meant to see) is the same at every
    bank and on every retry: the entry gets ``failed(problem)``, it is not retried for ever."""
    try:
        return check(ev, what)
    except (MemoryError, OSError):  # this machine's trouble, not the bytes': retried
        raise
    except Exception as exc:  # noqa: BLE001 - any other exception: the same at every bank
        problem = f"entry cannot be checked: {type(exc).__name__}: {str(exc)[:200]}"
        log.warning("log revision %d: %s", ev.revision, problem)
        return failed(problem)


def _bad_note(problem: str) -> _NoteCheck:
    return _NoteCheck(None, None, problem, "bad-entry", None)


def _bad_debit(problem: str) -> _DebitRead:
    return _DebitRead(None, None, problem)


def _bad_checkpoint(problem: str) -> _CheckpointCheck:
    return _CheckpointCheck(None, problem)
