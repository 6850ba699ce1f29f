"""The consortium file (DESIGN §6): which banks exist, their keys, matrices and endpoints.

It is JSON so operators can read it; the founding banks sign its canonical form (sorted keys, no
whitespace, ASCII), which both interpreters produce with ``canonical_json``. Public matrices are
separate files; the consortium file pins each by its SHA-256.
"""

import json

from hubi_core import ids, suite
from hubi_core.errors import BadValue, VerifyError

FORMAT = "hubi-consortium/1"
SIG_DOMAIN = b"hubi/consortium/1\x00"
DEFAULT_POLICY = {"rule": "majority", "include_payer_bank": True}


def canonical_json(value):
    """Deterministic JSON: sorted keys, no spaces, ASCII only; ints, strings, bools, lists, dicts."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        for ch in value:
            if ord(ch) < 0x20 or ord(ch) > 0x7E or ch in '"\\':
                raise BadValue(
                    "canonical JSON strings must be printable ASCII without quotes or backslashes"
                )
        return '"' + value + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(canonical_json(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value.keys())
        return (
            "{" + ",".join(canonical_json(k) + ":" + canonical_json(value[k]) for k in keys) + "}"
        )
    raise BadValue("canonical JSON cannot hold %r" % (value,))


def _unhex(text, n, what):
    try:
        raw = bytes.fromhex(text)
    except (ValueError, TypeError):
        raise BadValue("%s is not hex" % what) from None
    if len(raw) != n:
        raise BadValue("%s must be %d bytes" % (what, n))
    return raw


class BankEntry:
    __slots__ = ("id", "key", "matrix", "endpoints", "extra")

    def __init__(self, bank_id, key, matrix, endpoints=(), extra=None):
        self.id = ids.check_bank_id(bank_id)
        self.key = key  # 33-byte separating public key of the bank
        self.matrix = matrix  # SHA-256 of the bank's KMC public matrix file
        self.endpoints = list(endpoints)
        self.extra = extra or {}

    def to_doc(self):
        doc = dict(self.extra)
        doc.update(
            {
                "id": self.id,
                "key": self.key.hex(),
                "matrix": self.matrix.hex(),
                "endpoints": self.endpoints,
            }
        )
        return doc

    @classmethod
    def from_doc(cls, doc):
        known = ("id", "key", "matrix", "endpoints")
        extra = {k: v for k, v in doc.items() if k not in known}
        return cls(
            doc["id"],
            _unhex(doc["key"], 33, "bank %s key" % doc.get("id")),
            _unhex(doc["matrix"], 32, "bank %s matrix digest" % doc.get("id")),
            doc.get("endpoints", []),
            extra,
        )


class Consortium:
    __slots__ = ("name", "epoch", "time", "policy", "banks", "founders", "signatures")

    def __init__(self, name, banks, founders=None, epoch=1, time=0, policy=None, signatures=None):
        self.name = name
        self.epoch = epoch
        self.time = time
        self.policy = dict(policy or DEFAULT_POLICY)
        self.banks = {}
        for b in banks:
            if b.id in self.banks:
                raise BadValue("bank %s listed twice" % b.id)
            self.banks[b.id] = b
        self.founders = list(founders if founders is not None else [b.id for b in banks])
        self.signatures = dict(signatures or {})

    # -------------------------------------------------------------------------------- queries
    def bank(self, bank_id):
        entry = self.banks.get(bank_id)
        if entry is None:
            raise VerifyError("bank", "bank %s is not in consortium %s" % (bank_id, self.name))
        return entry

    def bank_ids(self):
        return sorted(self.banks)

    def quorum(self):
        """Endorsements needed: more than half of the banks (the policy's default)."""
        rule = self.policy.get("rule", "majority")
        n = len(self.banks)
        if rule == "majority":
            return n // 2 + 1
        if rule == "all":
            return n
        if isinstance(rule, int):
            return rule
        raise BadValue("unknown validation policy rule %r" % (rule,))

    # ---------------------------------------------------------------------------- encoding
    def body(self):
        doc = {
            "format": FORMAT,
            "name": self.name,
            "epoch": self.epoch,
            "time": self.time,
            "policy": self.policy,
            "founders": self.founders,
            "banks": [self.banks[b].to_doc() for b in sorted(self.banks)],
        }
        return doc

    def signing_bytes(self):
        return SIG_DOMAIN + canonical_json(self.body()).encode()

    def to_json(self):
        doc = self.body()
        doc["signatures"] = {k: v.hex() for k, v in sorted(self.signatures.items())}
        return canonical_json(doc)

    @classmethod
    def from_json(cls, text):
        try:
            doc = json.loads(text)
        except ValueError:
            raise BadValue("consortium file is not JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise BadValue("consortium file format must be %s" % FORMAT)
        banks = [BankEntry.from_doc(b) for b in doc.get("banks", [])]
        sigs = {
            k: _unhex(v, 64, "signature of %s" % k) for k, v in doc.get("signatures", {}).items()
        }
        return cls(
            doc["name"],
            banks,
            doc.get("founders"),
            doc.get("epoch", 1),
            doc.get("time", 0),
            doc.get("policy"),
            sigs,
        )

    # -------------------------------------------------------------------------- signatures
    def sign(self, bank_id, priv):
        self.signatures[bank_id] = suite.sign(priv, self.signing_bytes())

    def check_signatures(self, trust):
        """Every founder signed this exact body. Raises VerifyError naming the first gap."""
        msg = self.signing_bytes()
        for founder in self.founders:
            sig = self.signatures.get(founder)
            if sig is None:
                raise VerifyError("consortium", "founder %s has not signed" % founder)
            if not suite.verify(trust.bank_key(founder), msg, sig):
                raise VerifyError("consortium", "signature of founder %s does not verify" % founder)
        return True
