"""Endorsements (DESIGN §6): a bank's signed verdict on one interbank note.

An Endorsement (``codec.ENDORSEMENT``, docs/protocol.md §4) names the note by id and by the
SHA-256 of its exact bytes, carries a verdict (1 endorse, 0 refuse) and, for a refusal, a reason
code and text; the validating bank seals it with its identity key. The header serial is the
bank's endorsement counter, the time its clock.

:class:`EndorsementVerifier` checks one endorsement against the note it is supposed to be about
and never raises: it returns an :class:`EndorsementCheck` whose ``problem`` says what is wrong
(a forged seal, a different note, a signer outside the consortium). :func:`evaluate` applies the
consortium's validation policy to a set of checks. The same two functions serve the bank that
collects endorsements and every bank that applies the ordered log, so both decide alike.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from hubi.bank.records import BookKeys, BookVerifier
from hubi_core import codec
from hubi_core.consortium import Consortium
from hubi_core.errors import CodecError, HubiError
from hubi_core.verify import Trust

__all__ = [
    "EndorsementCheck",
    "EndorsementVerifier",
    "Evaluation",
    "evaluate",
    "make_endorsement",
    "note_digest",
]


def note_digest(raw: bytes) -> bytes:
    """SHA-256 of a note's exact bytes: what an endorsement is about."""
    return hashlib.sha256(raw).digest()


def make_endorsement(
    keys: BookKeys,
    serial: int,
    time: int,
    note_id: bytes,
    digest: bytes,
    verdict: bool,
    reason_code: int | None = None,
    reason: str | None = None,
) -> bytes:
    """Encode an Endorsement sealed with the bank's key (``keys.keeper`` is the bank id)."""
    values: dict[str, object] = {
        "note_id": note_id,
        "note_digest": digest,
        "verdict": codec.VERDICT_ENDORSE if verdict else codec.VERDICT_REFUSE,
        "seal": b"",
    }
    if not verdict:
        values["reason_code"] = reason_code or codec.REASON_CONSORTIUM
        if reason:
            values["reason"] = _clip(reason)
    obj = codec.Obj(codec.ENDORSEMENT, keys.keeper, serial, time, values)
    return codec.encode(keys.sign_obj(obj))


def _clip(text: str) -> str:
    """Reason texts are at most 64 bytes of printable text on the wire."""
    out = "".join(ch if 0x20 <= ord(ch) < 0x7F else "?" for ch in text)
    return out if len(out) <= codec.MAX_TEXT else out[: codec.MAX_TEXT - 3] + "..."


@dataclass(frozen=True)
class EndorsementCheck:
    """One endorsement as checked. ``valid``: the seal verifies under the named bank's key and the
    endorsement is about this note; ``endorses``: valid and the verdict is "endorse"."""

    bank: str  # the signer named in the endorsement ("?" if undecodable)
    valid: bool
    verdict: int | None = None
    reason_code: int | None = None
    reason: str | None = None
    problem: str | None = None  # why it is not valid (forged seal, other note, ...)
    raw: bytes = b""

    @property
    def endorses(self) -> bool:
        return self.valid and self.verdict == codec.VERDICT_ENDORSE

    def as_dict(self) -> dict[str, object]:
        return {
            "bank": self.bank,
            "valid": self.valid,
            "verdict": self.verdict,
            "reason_code": self.reason_code,
            "reason_name": codec.REASON_NAMES.get(self.reason_code) if self.reason_code else None,
            "reason": self.reason,
            "problem": self.problem,
        }


class EndorsementVerifier:
    """Checks endorsements against the trust bundle, with one OpenSSL key per bank (thread-safe)."""

    def __init__(self, trust: Trust):
        self.trust = trust
        self._keys: dict[str, BookVerifier] = {}
        self._lock = threading.Lock()

    def _verifier(self, bank: str) -> BookVerifier:
        with self._lock:
            v = self._keys.get(bank)
        if v is None:
            v = BookVerifier(bank, self.trust.bank_key(bank))
            with self._lock:
                self._keys[bank] = v
        return v

    def bank_verifier(self, bank: str) -> BookVerifier:
        """Signature verifier for a bank's identity key (VerifyError if not a member)."""
        return self._verifier(bank)

    def check(
        self, raw: bytes, note_id: bytes, digest: bytes, expect_bank: str | None = None
    ) -> EndorsementCheck:
        try:
            obj = codec.decode(raw, codec.ENDORSEMENT)
        except (CodecError, ValueError) as exc:
            return EndorsementCheck(
                expect_bank or "?", False, problem=f"not an Endorsement: {exc}", raw=raw
            )
        bank = obj.signer
        fields = {
            "verdict": obj.get("verdict"),
            "reason_code": obj.get("reason_code"),
            "reason": obj.get("reason"),
        }
        problem = None
        if expect_bank is not None and bank != expect_bank:
            problem = f"asked {expect_bank}, the endorsement names {bank} as its signer"
        elif bank not in self.trust.consortium.banks:
            problem = f"{bank} is not a bank of consortium {self.trust.consortium.name}"
        elif obj["note_id"] != note_id:
            problem = f"endorsement of {bank} is about note {obj['note_id'].hex()[:16]}…"
        elif obj["note_digest"] != digest:
            problem = f"endorsement of {bank} is about other bytes under the same note id"
        elif fields["verdict"] not in (codec.VERDICT_ENDORSE, codec.VERDICT_REFUSE):
            problem = f"endorsement of {bank} has unknown verdict {fields['verdict']}"
        else:
            try:
                verifier = self._verifier(bank)
            except HubiError as exc:
                problem = f"no key for {bank}: {exc}"
            else:
                if not verifier.verify(codec.field_message(obj, "seal"), obj.sigs["seal"]):
                    problem = f"seal of {bank} does not verify (forged endorsement)"
        if problem is not None:
            return EndorsementCheck(bank, False, problem=problem, raw=raw, **fields)
        return EndorsementCheck(bank, True, raw=raw, **fields)


@dataclass(frozen=True)
class Evaluation:
    """The validation policy applied to a set of endorsement checks."""

    ok: bool
    reason: str
    endorsers: list[str]  # banks with a valid "endorse" verdict, sorted
    refusers: dict[str, tuple[int | None, str]]  # bank -> (reason code, reason) of valid refusals
    forged: dict[str, str]  # bank named -> problem, for endorsements that are not valid

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "reason": self.reason,
            "endorsers": self.endorsers,
            "refusers": {b: {"reason_code": c, "reason": r} for b, (c, r) in self.refusers.items()},
            "forged": self.forged,
        }


def evaluate(
    consortium: Consortium,
    payer_bank: str,
    payee_bank: str,
    checks: Iterable[EndorsementCheck],
    *,
    require_payee: bool = False,
) -> Evaluation:
    """Do `checks` satisfy the consortium's policy for a note from payer_bank to payee_bank?

    A bank counts once; a bank with two endorsements that disagree counts as a refusal (it
    cannot endorse both ways). ``require_payee``: the collecting bank's stricter local rule."""
    endorsers: set[str] = set()
    refusers: dict[str, tuple[int | None, str]] = {}
    forged: dict[str, str] = {}
    for c in checks:
        if not c.valid:
            forged[c.bank] = c.problem or "invalid"
            continue
        if c.verdict == codec.VERDICT_ENDORSE:
            endorsers.add(c.bank)
        else:
            refusers[c.bank] = (c.reason_code, c.reason or "")
    endorsers -= set(refusers)
    ok, why = consortium.quorum_ok(sorted(endorsers), payer_bank, payee_bank)
    if ok and require_payee and payee_bank not in endorsers:
        ok, why = False, f"no endorsement of the payee's bank {payee_bank}"
    if not ok and forged:
        why += "; invalid endorsements: " + "; ".join(
            f"{b}: {p}" for b, p in sorted(forged.items())
        )
    return Evaluation(ok, why, sorted(endorsers), refusers, forged)
