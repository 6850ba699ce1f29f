"""The consortium file (DESIGN §6): which banks exist, their keys, matrices and endpoints.

It is JSON so operators can read it; the founding banks sign its canonical form (sorted keys, no
whitespace, ASCII), which both interpreters produce with ``canonical_json``. Public matrices are
separate files; the consortium file pins each by its SHA-256.

Epochs. A bank joins by a new file at ``epoch + 1`` whose ``previous`` field is the SHA-256 of
the previous epoch's signed body (``digest()``); the founders sign every epoch, so the chain of
files is checkable from the first one (``check_successor``). Optional fields appear in the body
only when set, so files written before they existed keep their signatures:

    "previous": hex SHA-256 of the previous epoch's signing bytes       (epoch > 1)
    "orderer":  {"kind": "etcd" | "embedded", "prefix": "hubi/<name>/"} (the ordering service)
    banks[i].etcd: ["http://127.0.0.1:2379", ...]  client URLs of the etcd member a bank runs
    banks[i].joined: epoch at which the bank joined                    (absent for founders)

Validation policy (``policy``): ``rule`` is "majority" (more than half of the banks), "all",
or an integer count; ``include_payer_bank`` (default true) makes the payer's bank's endorsement
mandatory; ``include_payee_bank`` (default false) the payee's bank's too. ``quorum_ok`` applies
it to a set of endorsing banks.

This module runs on MicroPython too (the token reads the file): no typing, no dataclasses.
"""

import hashlib
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


MAX_JSON_DEPTH = 64
_WS = b" \t\n\r"
_ESC = b'"\\/bfnrtu'
_HEX = b"0123456789abcdefABCDEF"
_DIGITS = b"0123456789"


def _number_end(b, i):
    """End of the JSON number at b[i], or -1 if none is there (RFC 8259 grammar)."""
    n = len(b)
    if i < n and b[i] == 45:  # -
        i += 1
    if i < n and b[i] == 48:  # a lone 0: no leading zeros
        i += 1
    elif i < n and b[i] in _DIGITS:
        while i < n and b[i] in _DIGITS:
            i += 1
    else:
        return -1
    if i < n and b[i] == 46:  # .
        i += 1
        if not (i < n and b[i] in _DIGITS):
            return -1
        while i < n and b[i] in _DIGITS:
            i += 1
    if i < n and b[i] in b"eE":
        i += 1
        if i < n and b[i] in b"+-":
            i += 1
        if not (i < n and b[i] in _DIGITS):
            return -1
        while i < n and b[i] in _DIGITS:
            i += 1
    return i


def _string_end(b, i):
    """End of the JSON string whose opening quote is b[i], or -1 (raw control character,
    bad escape or no closing quote)."""
    j = b.find(b'"', i + 1)
    if j < 0:
        return -1
    part = b[i + 1 : j]
    if 92 not in part:  # no escape (most strings): checked in C, which pays for the name check
        return -1 if part and min(part) < 0x20 else j + 1
    n = len(b)
    i += 1
    while i < n:
        c = b[i]
        if c == 34:
            return i + 1
        if c < 0x20:
            return -1
        if c == 92:
            i += 1
            if i >= n or b[i] not in _ESC:
                return -1
            if b[i] == 117:  # "\u" and four hex digits
                if i + 4 >= n:
                    return -1
                for h in b[i + 1 : i + 5]:
                    if h not in _HEX:
                        return -1
                i += 4
        i += 1
    return -1


_ESCAPED = {
    34: b'"',
    92: b"\\",
    47: b"/",
    98: b"\b",
    102: b"\f",
    110: b"\n",
    114: b"\r",
    116: b"\t",
}


def _name(raw):
    """The UTF-8 of the member name a key's bytes (between its quotes) stand for: escapes
    decoded and a surrogate pair joined (MicroPython's json keeps "\\ud83d\\ude00" as two
    characters, CPython's joins them), so "a" and "\\u0061" are one name."""
    out = bytearray()
    i = 0
    n = len(raw)
    while i < n:
        j = raw.find(b"\\", i)
        if j < 0:
            j = n
        out += raw[i:j]
        if j >= n:
            break
        c = raw[j + 1]
        if c != 117:  # a one-letter escape (_string_end checked it)
            out += _ESCAPED[c]
            i = j + 2
            continue
        cp = int(raw[j + 2 : j + 6], 16)
        i = j + 6
        if 0xD800 <= cp < 0xDC00 and raw[i : i + 2] == b"\\u":
            low = int(raw[i + 2 : i + 6], 16)
            if 0xDC00 <= low < 0xE000:
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00)
                i += 6
        # a lone surrogate (from "\\ud800") as three bytes too, alike on both interpreters
        out += chr(cp).encode("utf-8", "surrogatepass")
    return bytes(out)


def json_problem(text):
    """Why text is not strict JSON (RFC 8259, nested at most MAX_JSON_DEPTH levels), or None.

    MicroPython's json module takes what CPython's refuses (a missing comma, a raw control
    character in a string, a trailing comma) and recurses without bound: this check first
    gives the consortium file one verdict on the token and the host. A name twice in one
    object is refused too: both json modules keep its last value, while a person reading the
    file (or another parser) takes the first."""
    b = text.encode() if isinstance(text, str) else bytes(text)
    n = len(b)
    stack = bytearray()  # open containers: '[' or '{'
    names = []  # per open object: the member names it has had so far
    i = 0
    want = 0  # 0: a value, 1: ',' or close, 2: a key (or '}' right after '{'), 3: ':'
    first = False  # just after '[' or '{': a close is allowed instead of a value or key
    while True:
        while i < n and b[i] in _WS:
            i += 1
        if i >= n:
            if stack or want != 1:
                return "ends early"
            return None
        c = b[i]
        if want == 1 and not stack:
            return "text after the document at byte %d" % i
        if want in (0, 2) and first and c == (93 if stack[-1] == 91 else 125):
            if c == 125:
                names.pop()
            stack = stack[:-1]
            i += 1
            want = 1
            first = False
            continue
        first = False
        if want == 0:
            if c in b"[{":
                if len(stack) >= MAX_JSON_DEPTH:
                    return "nested more than %d levels at byte %d" % (MAX_JSON_DEPTH, i)
                stack.append(c)
                if c == 123:
                    names.append(set())
                i += 1
                want = 0 if c == 91 else 2
                first = True
                continue
            if c == 34:
                end = _string_end(b, i)
            elif b[i : i + 4] in (b"true", b"null"):
                end = i + 4
            elif b[i : i + 5] == b"false":
                end = i + 5
            else:
                end = _number_end(b, i)
            if end < 0:
                return "bad value at byte %d" % i
            i = end
            want = 1
        elif want == 2:
            if c != 34:
                return "expected a key at byte %d" % i
            end = _string_end(b, i)
            if end < 0:
                return "bad key at byte %d" % i
            name = b[i + 1 : end - 1]
            if 92 in name:  # a backslash: compared as the name it stands for
                name = _name(name)
            seen = names[-1]
            if name in seen:
                try:
                    shown = _said(name.decode("utf-8", "surrogatepass")) + " "
                except UnicodeError:  # no UTF-8 (text given as bytes): not shown
                    shown = ""
                return "duplicate name %sat byte %d" % (shown, i)
            seen.add(name)
            i = end
            want = 3
        elif want == 3:
            if c != 58:
                return "expected ':' at byte %d" % i
            i += 1
            want = 0
        else:
            top = stack[-1]
            if c == 44:
                want = 0 if top == 91 else 2
            elif c == (93 if top == 91 else 125):
                if c == 125:
                    names.pop()
                stack = stack[:-1]
            else:
                return "expected ',' or a close at byte %d" % i
            i += 1


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
        if not isinstance(doc, dict):
            raise BadValue("a bank entry must be an object, not %s" % _kind(doc))
        bank_id = doc.get("id")
        if bank_id is None:
            raise BadValue("a bank entry has no id")
        if not isinstance(bank_id, str):
            raise BadValue("a bank entry's id must be a string, not %s" % _kind(bank_id))
        for field in ("key", "matrix"):
            if field not in doc:
                raise BadValue("bank %s has no %s" % (bank_id, field))
        for field in ("endpoints", "etcd"):
            _strings(doc.get(field, []), "bank %s %s" % (bank_id, field))
        known = ("id", "key", "matrix", "endpoints")
        extra = {k: v for k, v in doc.items() if k not in known}
        return cls(
            bank_id,
            _unhex(doc["key"], 33, "bank %s key" % bank_id),
            _unhex(doc["matrix"], 32, "bank %s matrix digest" % bank_id),
            doc.get("endpoints", []),
            extra,
        )


def _said(value):
    """value for an error: a string quoted as on CPython and cut at 40 characters (a token's
    repr escapes other characters), anything else as its repr."""
    return ids.shown(value, 40) if isinstance(value, str) else repr(value)


def _kind(value):
    """A JSON value's kind, for errors."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), "null")


def _strings(value, what):
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadValue("%s must be a list of strings" % what)
    return value


def _count(value, what, least):
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise BadValue(
            "%s must be a whole number of at least %d, not %s" % (what, least, _said(value))
        )
    return value


_POLICY_FLAGS = ("include_payer_bank", "include_payee_bank")


def check_policy(policy, banks):
    """The validation policy, checked: a rule the banks can meet, and flags that are booleans.
    An unknown key is refused: a build that ignored it would validate by other rules."""
    if not isinstance(policy, dict):
        raise BadValue("policy must be an object, not %s" % _kind(policy))
    for key in policy:
        if key != "rule" and key not in _POLICY_FLAGS:
            raise BadValue("policy has an unknown key %s" % _said(key))
    rule = policy.get("rule", "majority")
    if rule not in ("majority", "all"):
        if isinstance(rule, bool) or not isinstance(rule, int):
            raise BadValue('policy rule must be "majority", "all" or a count, not %s' % _said(rule))
        if not 1 <= rule <= banks:
            raise BadValue("policy rule %d must be a count of 1 to %d (the banks)" % (rule, banks))
    for flag in _POLICY_FLAGS:
        if not isinstance(policy.get(flag, False), bool):
            raise BadValue("policy %s must be true or false" % flag)
    return policy


ORDERER_KINDS = ("etcd", "embedded")
MAX_PREFIX = 128


def check_orderer(orderer):
    """The orderer's fields, checked: a known kind (a node that did not know it would order
    with another one) and a prefix that is printable ASCII ending in '/'. An unknown key is
    refused, as in the policy."""
    if not isinstance(orderer, dict):
        raise BadValue("orderer must be an object, not %s" % _kind(orderer))
    for key in orderer:
        if key not in ("kind", "prefix"):
            raise BadValue("orderer has an unknown key %s" % _said(key))
    kind = orderer.get("kind", "etcd")
    if kind not in ORDERER_KINDS:
        raise BadValue(
            'orderer kind must be "etcd" or "embedded", not %s'
            % (_said(kind) if isinstance(kind, str) else _kind(kind))
        )
    prefix = orderer.get("prefix")
    if prefix is not None:
        if not isinstance(prefix, str):
            raise BadValue("orderer prefix must be a string, not %s" % _kind(prefix))
        if not 1 <= len(prefix) <= MAX_PREFIX or prefix[-1] != "/":
            raise BadValue(
                "orderer prefix must be 1-%d characters ending in '/', not %s"
                % (MAX_PREFIX, _said(prefix))
            )
        for ch in prefix:
            if ord(ch) <= 0x20 or ord(ch) > 0x7E or ch in '"\\':
                raise BadValue("orderer prefix %s may only use printable ASCII" % _said(prefix))
    return orderer


MAX_NAME = 32
_NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"


def check_name(text):
    """A consortium's name: 1-32 characters A-Z a-z 0-9 . _ -. It makes the log's key prefix
    hubi/<name>/, so a '/' would put one consortium's log inside another's on one etcd."""
    if not isinstance(text, str) or not 1 <= len(text) <= MAX_NAME:
        raise BadValue("consortium name %s must be 1-%d characters" % (_said(text), MAX_NAME))
    for ch in text:
        if ch not in _NAME_CHARS:
            raise BadValue("consortium name %s may only use A-Z a-z 0-9 . _ -" % _said(text))
    return text


class Consortium:
    __slots__ = (
        "name",
        "epoch",
        "time",
        "policy",
        "banks",
        "founders",
        "signatures",
        "previous",
        "orderer",
    )

    def __init__(
        self,
        name,
        banks,
        founders=None,
        epoch=1,
        time=0,
        policy=None,
        signatures=None,
        previous=None,
        orderer=None,
    ):
        self.name = check_name(name)
        self.epoch = _count(epoch, "epoch", 1)
        self.time = _count(time, "time", 0)
        self.previous = previous  # 32-byte digest of the previous epoch, or None
        if orderer is not None:
            check_orderer(orderer)
        self.orderer = dict(orderer) if orderer else None
        self.banks = {}
        for b in banks:
            if b.id in self.banks:
                raise BadValue("bank %s listed twice" % b.id)
            self.banks[b.id] = b
        self.policy = dict(check_policy(policy or DEFAULT_POLICY, len(self.banks)))
        founders = _strings(founders if founders is not None else [b.id for b in banks], "founders")
        for f in founders:
            if f not in self.banks:
                raise BadValue("founder %s is not one of the banks" % (f,))
        self.founders = list(founders)
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
        raise BadValue("unknown validation policy rule %s" % _said(rule))

    def quorum_ok(self, endorsers, payer_bank, payee_bank=None):
        """(True, "") if the banks in `endorsers` satisfy the validation policy, else (False, why).

        Unknown bank ids in `endorsers` do not count (and are named in the reason)."""
        got = []
        strangers = []
        for b in endorsers:
            if b in self.banks:
                if b not in got:
                    got.append(b)
            else:
                strangers.append(b)
        need = self.quorum()
        if self.policy.get("include_payer_bank", True) and payer_bank not in got:
            return False, "no endorsement of the payer's bank %s (endorsed by %s)" % (
                payer_bank,
                ", ".join(sorted(got)) or "nobody",
            )
        if (
            self.policy.get("include_payee_bank", False)
            and payee_bank is not None
            and payee_bank not in got
        ):
            return False, "no endorsement of the payee's bank %s" % payee_bank
        if len(got) < need:
            why = "%d of %d banks endorsed (%s); the policy needs %d" % (
                len(got),
                len(self.banks),
                ", ".join(sorted(got)) or "none",
                need,
            )
            if strangers:
                why += "; not consortium members: " + ", ".join(sorted(strangers))
            return False, why
        return True, ""

    def etcd_endpoints(self):
        """Client URLs of every bank's etcd member, in bank order, without repeats."""
        out = []
        for b in self.bank_ids():
            for url in self.banks[b].extra.get("etcd", []):
                if url not in out:
                    out.append(url)
        return out

    def log_prefix(self):
        """Key prefix of this consortium's ordered log (orderer.prefix, or hubi/<name>/)."""
        if self.orderer and self.orderer.get("prefix"):
            return self.orderer["prefix"]
        return "hubi/" + self.name + "/"

    def digest(self):
        """SHA-256 of the signing bytes: what the next epoch's ``previous`` names."""
        return hashlib.sha256(self.signing_bytes()).digest()

    # ---------------------------------------------------------------------------- epochs
    def successor(self, time, banks=None, policy=None, orderer=None):
        """An unsigned copy at epoch + 1 chained to this one (banks/policy/orderer replaced
        when given). The founders sign it with ``sign``."""
        nxt = Consortium.from_json(self.to_json())
        nxt.signatures = {}
        nxt.epoch = self.epoch + 1
        nxt.time = time
        nxt.previous = self.digest()
        if banks is not None:
            nxt.banks = {}
            for b in banks:
                if b.id in nxt.banks:
                    raise BadValue("bank %s listed twice" % b.id)
                nxt.banks[b.id] = b
        if policy is not None:
            nxt.policy = dict(policy)
        if orderer is not None:
            nxt.orderer = dict(orderer)
        return nxt

    def with_bank(self, entry, time):
        """Successor with one more bank (its entry records the epoch it joined)."""
        if entry.id in self.banks:
            raise BadValue("bank %s is already in consortium %s" % (entry.id, self.name))
        entry.extra["joined"] = self.epoch + 1
        banks = [self.banks[b] for b in self.bank_ids()] + [entry]
        return self.successor(time, banks=banks)

    def check_successor(self, prev):
        """Raise VerifyError unless this file is the next epoch of `prev` (same name, founders
        and kept banks' keys; epoch + 1; ``previous`` = prev.digest()). Signatures are checked
        separately (``check_signatures``)."""
        if self.name != prev.name:
            raise VerifyError("consortium", "name %s differs from %s" % (self.name, prev.name))
        if self.epoch != prev.epoch + 1:
            raise VerifyError(
                "consortium", "epoch %d does not follow epoch %d" % (self.epoch, prev.epoch)
            )
        if self.previous != prev.digest():
            raise VerifyError("consortium", "previous digest does not name epoch %d" % prev.epoch)
        if self.founders != prev.founders:
            raise VerifyError("consortium", "founders changed between epochs")
        for b in prev.bank_ids():
            old = prev.banks[b]
            new = self.banks.get(b)
            if new is None:
                continue
            if new.key != old.key or new.matrix != old.matrix:
                raise VerifyError("consortium", "bank %s changed its key or matrix" % b)
        return True

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
        if self.previous is not None:
            doc["previous"] = self.previous.hex()
        if self.orderer:
            doc["orderer"] = self.orderer
        return doc

    def signing_bytes(self):
        return SIG_DOMAIN + canonical_json(self.body()).encode()

    def to_json(self):
        doc = self.body()
        doc["signatures"] = {k: v.hex() for k, v in sorted(self.signatures.items())}
        return canonical_json(doc)

    @classmethod
    def from_json(cls, text):
        why = json_problem(text)
        if why is not None:
            raise BadValue("consortium file is not JSON (%s)" % why)
        try:
            doc = json.loads(text)
        except ValueError:
            raise BadValue("consortium file is not JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise BadValue("consortium file format must be %s" % FORMAT)
        if not isinstance(doc.get("banks"), list) or not doc["banks"]:
            raise BadValue("consortium file must list its banks")
        banks = [BankEntry.from_doc(b) for b in doc["banks"]]
        signed = doc.get("signatures", {})
        if not isinstance(signed, dict):
            raise BadValue("signatures must be an object, not %s" % _kind(signed))
        # in key order: a token's dict has another order, and the first error is the one said
        sigs = {k: _unhex(signed[k], 64, "signature of %s" % k) for k in sorted(signed)}
        prev = doc.get("previous")
        return cls(
            doc.get("name"),
            banks,
            doc.get("founders"),
            doc.get("epoch", 1),
            doc.get("time", 0),
            doc.get("policy"),
            sigs,
            _unhex(prev, 32, "previous epoch digest") if prev is not None else None,
            doc.get("orderer"),
        )

    # -------------------------------------------------------------------------- signatures
    def sign(self, bank_id, priv):
        self.signatures[bank_id] = suite.sign(priv, self.signing_bytes())

    def check_signatures(self, trust):
        """Every founder signed this exact body, and every other signature present verifies.
        Raises VerifyError naming the first gap."""
        msg = self.signing_bytes()
        for founder in self.founders:
            sig = self.signatures.get(founder)
            if sig is None:
                raise VerifyError("consortium", "founder %s has not signed" % founder)
            if not suite.verify(trust.bank_key(founder), msg, sig):
                raise VerifyError("consortium", "signature of founder %s does not verify" % founder)
        for signer in sorted(self.signatures):
            if signer in self.founders:
                continue
            if signer not in self.banks:
                raise VerifyError("consortium", "signature of %s, who is not a member" % signer)
            if not suite.verify(trust.bank_key(signer), msg, self.signatures[signer]):
                raise VerifyError("consortium", "signature of %s does not verify" % signer)
        return True

    def missing_signatures(self):
        """Founders who have not signed this epoch yet."""
        return [f for f in self.founders if f not in self.signatures]
