"""Offline verification of hubi objects (DESIGN §3).

A verifier needs only the KMC public matrices, the consortium file and the object itself: no
certificates, no network. Each check is reported per field, so a merchant's screen or an auditor's
report can say exactly which field failed.

Keys: a bank's key = its combined point (from its own KMC matrix) + its separating public key
(consortium file). An account's key = its combined point (from its bank's matrix) + the
separating public key in its bank-sealed template. A note carries its template without that key:
it is recovered from the payer's signatures (ECDSA public-key recovery) and accepted only if the
bank's seal covers it.
"""

import hashlib

from hubi_core import codec, ec, ids, suite
from hubi_core.errors import VerifyError

# Signatures tried, in order, to recover a note's payer key.
_RECOVERY_ORDER = ("lsum", "amount", "payee", "purpose", "allowance")
_NO_KEY = (
    "bank %s's seal covers no key the payer signed with (forged template or every signature bad)"
)


class Trust:
    """The offline trust anchors: consortium file plus each bank's public matrix.

    ``bank_keys`` (bank id -> 65-byte key) seeds the bank key cache. A token passes
    ``consortium=None`` with the bank keys it computed when it was provisioned (and matrices
    whose digests it checked itself): then a bank without a key is unknown."""

    __slots__ = ("consortium", "matrices", "_bank_keys", "_payer_keys")

    def __init__(self, consortium, matrices, bank_keys=None):
        self.consortium = consortium
        self.matrices = dict(matrices)
        self._bank_keys = dict(bank_keys) if bank_keys else {}
        self._payer_keys = {}
        if consortium is None:
            return
        for bank_id, m in self.matrices.items():
            entry = consortium.banks.get(bank_id)
            if entry is not None and m.digest() != entry.matrix:
                raise VerifyError(
                    "matrix", "public matrix of %s does not match the consortium file" % bank_id
                )

    def matrix(self, bank_id):
        m = self.matrices.get(bank_id)
        if m is None:
            raise VerifyError("template", "no public matrix for bank %s" % bank_id)
        return m

    def bank_key(self, bank_id):
        """65-byte public key of a bank."""
        key = self._bank_keys.get(bank_id)
        if key is None:
            if self.consortium is None:
                raise VerifyError("bank", "bank %s is not in the consortium" % bank_id)
            entry = self.consortium.bank(bank_id)
            key = self.matrix(bank_id).public_key(bank_id, entry.key)
            self._bank_keys[bank_id] = key
        return key

    def account_key(self, account, separating_key):
        return self.matrix(ids.bank_of(account)).public_key(account, separating_key)


class Report:
    """Per-field verification results of one object."""

    __slots__ = ("kind", "signer", "checks", "key")

    def __init__(self, kind, signer):
        self.kind = kind
        self.signer = signer
        self.checks = []  # [field, ok, reason]
        self.key = None  # the signer's public key, when established

    def add(self, field, ok, reason=""):
        self.checks.append([field, ok, reason])

    @property
    def ok(self):
        return bool(self.checks) and all(c[1] for c in self.checks)

    @property
    def failed(self):
        return [c[0] for c in self.checks if not c[1]]

    def first_failure(self):
        for field, ok, reason in self.checks:
            if not ok:
                return field, reason
        return None

    def raise_if_failed(self):
        bad = self.first_failure()
        if bad:
            raise VerifyError(bad[0], bad[1])

    def as_dict(self):
        return {
            "kind": codec.KIND_NAMES[self.kind],
            "signer": self.signer,
            "ok": self.ok,
            "fields": [{"field": f, "ok": ok, "reason": r} for f, ok, r in self.checks],
        }


def _template_bank_checks(tpl, trust):
    """Raise VerifyError('template', ...) if the template's bank cannot vouch for its account."""
    bank = tpl.signer
    if ids.bank_of(tpl["account"]) != bank:
        raise VerifyError(
            "template", "account %s is not an account of bank %s" % (tpl["account"], bank)
        )
    return trust.bank_key(bank)


def template_key(tpl, trust):
    """Account public key from a full template whose bank seal verifies; VerifyError otherwise."""
    bank_key = _template_bank_checks(tpl, trust)
    if not suite.verify(bank_key, codec.field_message(tpl, "seal"), tpl.sigs["seal"]):
        raise VerifyError("template", "bank %s's seal does not verify" % tpl.signer)
    return trust.account_key(tpl["account"], tpl["key"])


def recover_payer_key(note, trust):
    """The payer's public key for a note, or VerifyError('template', ...).

    Tries each payer signature in turn; a candidate key counts only if bank's seal over the
    template with the implied separating key verifies.
    """
    stub = note["template"]
    stub.values.pop("key", None)  # not on the wire: recovered below
    # keyed by everything the seal covers but the key: a stub with another currency or bank
    # under the same seal is another entry (it was taken for this one, unchecked)
    sealed = hashlib.sha256(stub.header_bytes() + codec.sealed_bytes(stub)).digest()
    cache_key = stub.sigs["seal"] + note.signer.encode() + sealed
    hit = trust._payer_keys.get(cache_key)
    if hit is not None:
        stub.values["key"] = hit[1]
        return hit[0]
    bank_key = _template_bank_checks(stub, trust)
    combined = trust.matrix(stub.signer).combined(note.signer)
    neg_combined = ec.point_neg(combined)
    for name in _RECOVERY_ORDER:
        sig = note.sigs.get(name)
        if sig is None:
            continue
        for cand in suite.recover(codec.field_message(note, name), sig):
            sep = ec.point_add(ec.decode_point(cand), neg_combined)
            if sep is None:
                continue
            stub.values["key"] = ec.encode_point(sep, compressed=True)
            if suite.verify(bank_key, codec.field_message(stub, "seal"), stub.sigs["seal"]):
                if len(trust._payer_keys) > 4096:
                    trust._payer_keys.clear()
                trust._payer_keys[cache_key] = (cand, stub.values["key"])
                return cand
        stub.values.pop("key", None)
    raise VerifyError("template", _NO_KEY % stub.signer)


def _check_signed_fields(obj, key, report):
    for name in codec.signed_fields(obj.kind):
        if name not in obj.values:
            continue
        sig = obj.sigs[name]
        if suite.is_high_s(sig):
            report.add(name, False, "high-S signature (not the canonical encoding)")
        elif suite.verify(key, codec.field_message(obj, name), sig):
            report.add(name, True)
        else:
            report.add(name, False, "signature does not verify")


def verify_object(obj, trust):
    """Verify every signature of obj offline; returns a Report (check .ok / .failed)."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        obj = codec.decode(obj)
    report = Report(obj.kind, obj.signer)
    try:
        if obj.kind == codec.NOTE:
            key = recover_payer_key(obj, trust)
        elif obj.kind in (codec.REQUEST, codec.RECEIPT):
            tpl = obj["template"]
            if tpl["account"] != obj.signer:
                raise VerifyError(
                    "template", "template is for %s, not %s" % (tpl["account"], obj.signer)
                )
            key = template_key(tpl, trust)
        elif obj.kind == codec.TEMPLATE:
            bank_key = _template_bank_checks(obj, trust)
            ok = suite.verify(bank_key, codec.field_message(obj, "seal"), obj.sigs["seal"])
            report.add("seal", ok, "" if ok else "bank seal does not verify")
            report.key = bank_key
            return report
        else:
            key = trust.bank_key(obj.signer)
    except VerifyError as exc:
        report.add(exc.field, False, exc.reason)
        for name in codec.signed_fields(obj.kind):
            if name in obj.values:
                report.add(name, False, "not checked: signer key unknown")
        return report
    if obj.kind in (codec.NOTE, codec.REQUEST, codec.RECEIPT):
        report.add("template", True)
    report.key = key
    _check_signed_fields(obj, key, report)
    if obj.kind == codec.NOTE and all(not c[1] for c in report.checks[1:]):
        # No payer signature verifies under the key the bank sealed: the same verdict whether
        # the key came from recovery (which then fails) or from the cache.
        report.checks[0] = ["template", False, _NO_KEY % obj["template"].signer]
    return report


def verify_note(note, matrices, consortium):
    """Check every signature of a note offline (DESIGN §3); Report says which field failed.

    `matrices` maps bank id -> PublicMatrix; `consortium` is a Consortium. Pass a Trust as
    `matrices` (and consortium=None) to reuse its key caches.
    """
    trust = matrices if isinstance(matrices, Trust) else Trust(consortium, matrices)
    if isinstance(note, (bytes, bytearray, memoryview)):
        note = codec.decode(note, codec.NOTE)
    if note.kind != codec.NOTE:
        raise VerifyError("kind", "expected a Note, got a %s" % codec.KIND_NAMES[note.kind])
    return verify_object(note, trust)
