"""Canonical binary codec for every hubi object (DESIGN §1, §3). Byte layout: docs/protocol.md.

    object = suite(1) kind(1) version(1) header field*
    header = signer(str8) serial(varint) time(u32)
    field  = tag(1) len(varint) value [sig(64) when the kind's schema signs the tag]

Tags appear at most once and in increasing order. Every field signature covers a domain tag, the
suite, the kind, the version, the header and the field's tag and value, so a field cannot be cut
from one object and pasted into another, yet each field stands alone as evidence. Two fields are
special:
- ``seal`` (templates, endorsements, checkpoints): one signature over all the fields before it.
- ``lsum`` (notes): carries no value on the wire; its signature covers the linear sum of the
  note's fields (see ``lsum.py``), which anyone recomputes.

A note embeds its payer's template in compact form (bank, serial, time, currency and the bank's
seal): the account is the note's signer, and the separating public key is recovered from the
payer's signatures and checked against the bank's seal (see ``verify.py``). That keeps a typical
note near 400 bytes, within one QR code.
"""

import sys

from hubi_core import ec, ids, suite
from hubi_core import errors as E
from hubi_core.wire import Reader, utf8_text, varint

_MPY = sys.implementation.name == "micropython"

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_HOST_NAMES = ("_T_", "_REASON_", "_STATUS_", "_VERDICT_")  # public on the host only

SUITE = 1
VERSION = 1
SIG_LEN = 64
SIG_DOMAIN = b"hubi/sig/1\x00"
MAX_OBJECT = 4096

# ---------------------------------------------------------------------------------------- kinds
TEMPLATE = 1
REQUEST = 2
NOTE = 3
SETTLEMENT = 4
BALANCE = 5
RECEIPT = 6
ALLOWANCE = 7
REFUSAL = 8
ENDORSEMENT = 9
CHECKPOINT = 10

KIND_NAMES = {
    TEMPLATE: "Template",
    REQUEST: "Request",
    NOTE: "Note",
    SETTLEMENT: "SettlementNotice",
    BALANCE: "BalanceNotice",
    RECEIPT: "Receipt",
    ALLOWANCE: "OfflineAllowance",
    REFUSAL: "Refusal",
    ENDORSEMENT: "Endorsement",
    CHECKPOINT: "Checkpoint",
}

# ----------------------------------------------------------------------------------------- tags
# One number per meaning across all kinds (the linear sum digests use the same numbers).
_T_SIGNER = const(0x01)  # header pseudo-tags, used by lsum only
_T_SERIAL = const(0x02)
_T_TIME = const(0x03)
_T_TEMPLATE = const(0x08)
_T_AMOUNT = const(0x10)
_T_PURPOSE = const(0x11)
_T_PAYEE = const(0x12)
_T_PAYER = const(0x13)
_T_ACCOUNT = const(0x14)
_T_CURRENCY = const(0x15)
_T_KEY = const(0x16)
_T_EXPIRY = const(0x17)
_T_NOTE_ID = const(0x18)
_T_BALANCE = const(0x19)
_T_STATUS = const(0x1A)
_T_REASON_CODE = const(0x1B)
_T_REASON = const(0x1C)
_T_FIRST_SERIAL = const(0x1D)
_T_ALLOWANCE = const(0x1E)
_T_NOTE_DIGEST = const(0x20)
_T_VERDICT = const(0x21)
_T_TREE_SIZE = const(0x22)
_T_ROOT = const(0x23)
_T_SEAL = const(0x3E)
_T_LSUM = const(0x3F)

# ---------------------------------------------------------------------------------- value types
TEXT = "text"
ACCOUNT = "account"
BANK = "bank"
UINT = "uint"
TIME = "time"
POINT = "point"
CURRENCY = "currency"
DIGEST = "digest"
BLOB = "blob"
TEMPLATE_FULL = "template"
TEMPLATE_STUB = "template-stub"
EMPTY = "empty"

MAX_TEXT = 64
MAX_BLOB = 160

# Status / verdict / reason codes carried in notices, refusals and endorsements.
_STATUS_VERIFIED = const(1)  # payer's signatures and template verified, note booked
_STATUS_SETTLED = const(2)  # interbank: validated by the consortium and settled
_VERDICT_REFUSE = const(0)
_VERDICT_ENDORSE = const(1)
_REASON_INSUFFICIENT_FUNDS = const(1)
_REASON_DOUBLE_ISSUE = const(2)
_REASON_BAD_SIGNATURE = const(3)
_REASON_BAD_TEMPLATE = const(4)
_REASON_UNKNOWN_ACCOUNT = const(5)
_REASON_ALLOWANCE = const(6)
_REASON_EXPIRED = const(7)
_REASON_FORMAT = const(8)
_REASON_CONSORTIUM = const(9)
if not _MPY:
    # The host's names: the tag, reason, status and verdict numbers as public constants (a
    # token uses them as const()s, which take no room in its heap) and the reason texts.
    globals().update({k[1:]: v for k, v in list(globals().items()) if k.startswith(_HOST_NAMES)})
    REASON_NAMES = {
        _REASON_INSUFFICIENT_FUNDS: "insufficient-funds",
        _REASON_DOUBLE_ISSUE: "double-issuance",
        _REASON_BAD_SIGNATURE: "bad-signature",
        _REASON_BAD_TEMPLATE: "bad-template",
        _REASON_UNKNOWN_ACCOUNT: "unknown-account",
        _REASON_ALLOWANCE: "over-allowance",
        _REASON_EXPIRED: "expired",
        _REASON_FORMAT: "bad-format",
        _REASON_CONSORTIUM: "consortium-refused",
    }
    # the reasons that make a refused note "bounced" (the payer could not cover it) rather than
    # "refused": one list for the bank, the consortium and the merchant
    BOUNCE_REASONS = frozenset({_REASON_INSUFFICIENT_FUNDS})

REQ = True
OPT = False
SIGNED = "sig"
PLAIN = ""
SEALED = "seal"  # covered by the seal field's signature
COMPUTED = "computed"  # lsum: value recomputed, signature on the wire

# kind -> (signer type, fields); field = (tag, name, type, required, signing)
SCHEMAS = {
    TEMPLATE: (
        BANK,
        (
            (_T_ACCOUNT, "account", ACCOUNT, REQ, SEALED),
            (_T_CURRENCY, "currency", CURRENCY, REQ, SEALED),
            (_T_KEY, "key", POINT, REQ, SEALED),
            (_T_SEAL, "seal", EMPTY, REQ, SIGNED),
        ),
    ),
    REQUEST: (
        ACCOUNT,
        (
            (_T_TEMPLATE, "template", TEMPLATE_FULL, REQ, PLAIN),
            (_T_AMOUNT, "amount", UINT, REQ, SIGNED),
            (_T_PURPOSE, "purpose", TEXT, OPT, SIGNED),
            (_T_EXPIRY, "expiry", TIME, REQ, SIGNED),
        ),
    ),
    NOTE: (
        ACCOUNT,
        (
            (_T_TEMPLATE, "template", TEMPLATE_STUB, REQ, PLAIN),
            (_T_AMOUNT, "amount", UINT, REQ, SIGNED),
            (_T_PURPOSE, "purpose", TEXT, OPT, SIGNED),
            (_T_PAYEE, "payee", ACCOUNT, REQ, SIGNED),
            (_T_ALLOWANCE, "allowance", UINT, OPT, SIGNED),
            (_T_LSUM, "lsum", EMPTY, REQ, COMPUTED),
        ),
    ),
    SETTLEMENT: (
        BANK,
        (
            (_T_AMOUNT, "amount", UINT, REQ, SIGNED),
            (_T_PAYEE, "payee", ACCOUNT, REQ, SIGNED),
            (_T_PAYER, "payer", ACCOUNT, REQ, SIGNED),
            (_T_NOTE_ID, "note_id", DIGEST, REQ, SIGNED),
            (_T_STATUS, "status", UINT, REQ, SIGNED),
        ),
    ),
    BALANCE: (
        BANK,
        (
            (_T_AMOUNT, "amount", UINT, REQ, SIGNED),
            (_T_PAYEE, "payee", ACCOUNT, REQ, SIGNED),
            (_T_PAYER, "payer", ACCOUNT, REQ, SIGNED),
            (_T_NOTE_ID, "note_id", DIGEST, REQ, SIGNED),
            (_T_BALANCE, "balance", BLOB, REQ, SIGNED),
        ),
    ),
    RECEIPT: (
        ACCOUNT,
        (
            (_T_TEMPLATE, "template", TEMPLATE_FULL, REQ, PLAIN),
            (_T_AMOUNT, "amount", UINT, REQ, SIGNED),
            (_T_PURPOSE, "purpose", TEXT, OPT, SIGNED),
            (_T_PAYER, "payer", ACCOUNT, REQ, SIGNED),
            (_T_NOTE_ID, "note_id", DIGEST, REQ, SIGNED),
        ),
    ),
    ALLOWANCE: (
        BANK,
        (
            (_T_AMOUNT, "amount", UINT, REQ, SIGNED),
            (_T_ACCOUNT, "account", ACCOUNT, REQ, SIGNED),
            (_T_EXPIRY, "expiry", TIME, REQ, SIGNED),
            (_T_FIRST_SERIAL, "first_serial", UINT, REQ, SIGNED),
        ),
    ),
    REFUSAL: (
        BANK,
        (
            (_T_PAYEE, "payee", ACCOUNT, REQ, SIGNED),
            (_T_PAYER, "payer", ACCOUNT, REQ, SIGNED),
            (_T_NOTE_ID, "note_id", DIGEST, REQ, SIGNED),
            (_T_REASON_CODE, "reason_code", UINT, REQ, SIGNED),
            (_T_REASON, "reason", TEXT, OPT, SIGNED),
        ),
    ),
    ENDORSEMENT: (
        BANK,
        (
            (_T_NOTE_ID, "note_id", DIGEST, REQ, SEALED),
            (_T_REASON_CODE, "reason_code", UINT, OPT, SEALED),
            (_T_REASON, "reason", TEXT, OPT, SEALED),
            (_T_NOTE_DIGEST, "note_digest", DIGEST, REQ, SEALED),
            (_T_VERDICT, "verdict", UINT, REQ, SEALED),
            (_T_SEAL, "seal", EMPTY, REQ, SIGNED),
        ),
    ),
    CHECKPOINT: (
        BANK,
        (
            (_T_TREE_SIZE, "tree_size", UINT, REQ, SEALED),
            (_T_ROOT, "root", DIGEST, REQ, SEALED),
            (_T_SEAL, "seal", EMPTY, REQ, SIGNED),
        ),
    ),
}

if _MPY:
    # A token looks fields up in the schema itself (at most six per kind): twenty index dicts
    # would take about 3.5 KB of its heap while a request is decoded.

    def _by_tag(kind, tag):
        for f in SCHEMAS[kind][1]:
            if f[0] == tag:
                return f
        return None

    def _by_name(kind, name):
        for f in SCHEMAS[kind][1]:
            if f[1] == name:
                return f
        raise KeyError(name)

else:
    _BY_NAME = {}
    _BY_TAG = {}
    for _kind, (_st, _fields) in SCHEMAS.items():
        _BY_NAME[_kind] = {f[1]: f for f in _fields}
        _BY_TAG[_kind] = {f[0]: f for f in _fields}

    def _by_tag(kind, tag):
        return _BY_TAG[kind].get(tag)

    def _by_name(kind, name):
        return _BY_NAME[kind][name]


def kind_name(kind):
    return KIND_NAMES.get(kind, "kind %d" % kind)


def signed_fields(kind):
    """Names of the fields that carry a signature on the wire, in wire order."""
    return [f[1] for f in SCHEMAS[kind][1] if f[4] in (SIGNED, COMPUTED)]


# --------------------------------------------------------------------------------------- object


class Obj:
    """A decoded (or to-be-encoded) hubi object: header plus named field values and signatures."""

    __slots__ = ("kind", "signer", "serial", "time", "values", "sigs", "raw")

    def __init__(self, kind, signer, serial, time, values=None, sigs=None, raw=None):
        if kind not in SCHEMAS:
            raise E.UnknownKind("unknown object kind %d" % kind)
        self.kind = kind
        self.signer = signer
        self.serial = serial
        self.time = time
        self.values = values if values is not None else {}
        self.sigs = sigs if sigs is not None else {}
        self.raw = raw

    @property
    def kind_name(self):
        return KIND_NAMES[self.kind]

    def __getitem__(self, name):
        return self.values[name]

    def get(self, name, default=None):
        return self.values.get(name, default)

    def __repr__(self):
        return "<%s %s #%d>" % (KIND_NAMES[self.kind], self.signer, self.serial)

    def header_bytes(self):
        s = self.signer.encode()
        return bytes([len(s)]) + s + varint(self.serial) + self.time.to_bytes(4, "big")

    def prefix(self):
        return bytes([SUITE, self.kind, VERSION])


# ------------------------------------------------------------------------------- value encoding


def _check_sig(sig, kind, name):
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    if not (1 <= r < ec.N and 1 <= s < ec.N):
        raise E.BadValue("%s.%s: signature r or s out of range" % (KIND_NAMES[kind], name))
    if s > suite.HALF_N:
        raise E.HighS(
            "%s.%s: signature has high S (notes must have one encoding)" % (KIND_NAMES[kind], name)
        )


def _encode_value(kind, name, typ, value, signer):
    if typ == TEXT:
        raw = value.encode()
        utf8_text(raw, name, MAX_TEXT)
        return raw
    if typ == ACCOUNT:
        return ids.check_account_id(value, name).encode()
    if typ == BANK:
        return ids.check_bank_id(value, name).encode()
    if typ == UINT:
        return varint(value)
    if typ == TIME:
        if not (0 <= value < 1 << 32):
            raise E.BadValue("%s: time out of range" % name)
        return value.to_bytes(4, "big")
    if typ == POINT:
        if len(value) != 33:
            raise E.BadPoint("%s: point must be 33 bytes compressed" % name)
        try:
            ec.decode_point(value)
        except ValueError as exc:
            raise E.BadPoint("%s: %s" % (name, exc)) from None
        return bytes(value)
    if typ == CURRENCY:
        raw = value.encode()
        _check_currency(raw, name)
        return raw
    if typ == DIGEST:
        if len(value) != 32:
            raise E.BadValue("%s: digest must be 32 bytes" % name)
        return bytes(value)
    if typ == BLOB:
        if len(value) > MAX_BLOB:
            raise E.Oversize("%s: %d bytes, over the limit %d" % (name, len(value), MAX_BLOB))
        return bytes(value)
    if typ == TEMPLATE_FULL:
        return encode(value)
    if typ == TEMPLATE_STUB:
        return _encode_stub(value, signer)
    if typ == EMPTY:
        return b""
    raise E.BadValue("unknown value type %s" % typ)


def _check_currency(raw, name):
    if len(raw) != 3:
        raise E.BadValue("%s: currency must be 3 letters A-Z" % name)
    for b in raw:
        if not (65 <= b <= 90):
            raise E.BadValue("%s: currency must be 3 letters A-Z" % name)


def _decode_value(kind, name, typ, raw, signer):
    if typ == TEXT:
        return utf8_text(raw, name, MAX_TEXT)
    if typ == ACCOUNT:
        return ids.check_account_id(utf8_text(raw, name, ids.MAX_ACCOUNT), name)
    if typ == BANK:
        return ids.check_bank_id(utf8_text(raw, name, ids.MAX_BANK), name)
    if typ == UINT:
        r = Reader(raw, KIND_NAMES[kind] + "." + name)
        n = r.varint(name)
        if r.remaining():
            raise E.BadValue("%s.%s: bytes after the number" % (KIND_NAMES[kind], name))
        return n
    if typ == TIME:
        if len(raw) != 4:
            raise E.BadValue("%s.%s: time must be 4 bytes" % (KIND_NAMES[kind], name))
        return int.from_bytes(raw, "big")
    if typ == POINT:
        if len(raw) != 33:
            raise E.BadPoint("%s.%s: point must be 33 bytes compressed" % (KIND_NAMES[kind], name))
        try:
            ec.decode_point(raw)
        except ValueError as exc:
            raise E.BadPoint("%s.%s: %s" % (KIND_NAMES[kind], name, exc)) from None
        return raw
    if typ == CURRENCY:
        _check_currency(raw, name)
        return raw.decode()
    if typ == DIGEST:
        if len(raw) != 32:
            raise E.BadValue("%s.%s: digest must be 32 bytes" % (KIND_NAMES[kind], name))
        return raw
    if typ == BLOB:
        if len(raw) > MAX_BLOB:
            raise E.Oversize(
                "%s.%s: %d bytes, over the limit %d" % (KIND_NAMES[kind], name, len(raw), MAX_BLOB)
            )
        return raw
    if typ == TEMPLATE_FULL:
        return decode(raw, TEMPLATE)
    if typ == TEMPLATE_STUB:
        return _decode_stub(raw, signer)
    if typ == EMPTY:
        if raw:
            raise E.BadValue("%s.%s: must be empty on the wire" % (KIND_NAMES[kind], name))
        return b""
    raise E.BadValue("unknown value type %s" % typ)


# The compact template inside a note: bank(str8) serial(varint) time(u32) currency(3) seal-sig(64).
def _encode_stub(tpl, account):
    if tpl.kind != TEMPLATE:
        raise E.BadValue("note.template must be a Template")
    if tpl["account"] != account:
        raise E.BadValue(
            "note.template is for %s, not for the payer %s" % (tpl["account"], account)
        )
    sig = tpl.sigs.get("seal")
    if sig is None:
        raise E.MissingField("note.template has no bank seal")
    return tpl.header_bytes() + tpl["currency"].encode() + sig


def _decode_stub(raw, account):
    r = Reader(raw, "Note.template")
    n = r.u8("bank length")
    if n == 0 or n > ids.MAX_BANK:
        raise E.Oversize("Note.template: bank id length %d out of range" % n)
    bank = ids.check_bank_id(utf8_text(r.take(n, "bank id"), "template bank", ids.MAX_BANK))
    serial = r.varint("template serial")
    time = r.u32("template time")
    cur = r.take(3, "currency")
    _check_currency(cur, "Note.template.currency")
    sig = r.take(SIG_LEN, "template seal")
    if r.remaining():
        raise E.TrailingBytes("Note.template: %d bytes after the seal" % r.remaining())
    _check_sig(sig, TEMPLATE, "seal")
    # The separating key is not carried: verify.recover_payer_key() restores it.
    return Obj(
        TEMPLATE, bank, serial, time, {"account": account, "currency": cur.decode()}, {"seal": sig}
    )


# ----------------------------------------------------------------------------- signing messages


def _tlv(tag, raw):
    return bytes([tag]) + varint(len(raw)) + raw


def sealed_bytes(obj, skip=()):
    """The sealed fields of obj as its seal covers them, leaving out those named in `skip`
    (a note's template stub before its key is known: encoding a key decodes its point)."""
    return b"".join(
        _tlv(f[0], _encode_value(obj.kind, f[1], f[2], obj.values[f[1]], obj.signer))
        for f in SCHEMAS[obj.kind][1]
        if f[4] == SEALED and f[1] in obj.values and f[1] not in skip
    )


def field_message(obj, name, value_bytes=None):
    """The exact bytes a field's signature covers."""
    tag, _, typ, _, signing = _by_name(obj.kind, name)
    if signing == COMPUTED:
        from hubi_core import lsum  # notes only: a token decoding a request does without

        value = lsum.of_note(obj)
    elif signing == SIGNED and typ == EMPTY:  # seal: covers every sealed field before it
        value = sealed_bytes(obj)
    elif value_bytes is not None:
        value = value_bytes
    else:
        value = _encode_value(obj.kind, name, typ, obj.values[name], obj.signer)
    return SIG_DOMAIN + obj.prefix() + obj.header_bytes() + _tlv(tag, value)


def sign(obj, priv):
    """Sign every signed field present in obj with priv (one batch: the device's hot path)."""
    names = [n for n in signed_fields(obj.kind) if n in obj.values]
    msgs = [field_message(obj, n) for n in names]
    batch = getattr(suite, "sign_batch", None)
    sigs = batch(priv, msgs) if batch else [suite.sign(priv, m) for m in msgs]
    for n, s in zip(names, sigs):
        obj.sigs[n] = s
    obj.raw = None
    return obj


# ------------------------------------------------------------------------------ encode / decode


def _check_header(kind, signer, serial, time):
    st = SCHEMAS[kind][0]
    if st == BANK:
        ids.check_bank_id(signer, "signer")
    else:
        ids.check_account_id(signer, "signer")
    if not (0 <= serial < 1 << 64):
        raise E.BadValue("serial out of range")
    if not (0 <= time < 1 << 32):
        raise E.BadValue("time out of range")


def encode(obj):
    """Canonical bytes of obj; every signed field must already carry its signature."""
    kind = obj.kind
    _check_header(kind, obj.signer, obj.serial, obj.time)
    out = [obj.prefix(), obj.header_bytes()]
    for tag, name, typ, required, signing in SCHEMAS[kind][1]:
        if name not in obj.values:
            if required:
                raise E.MissingField("%s: required field %s missing" % (KIND_NAMES[kind], name))
            continue
        raw = b"" if typ == EMPTY else _encode_value(kind, name, typ, obj.values[name], obj.signer)
        out.append(_tlv(tag, raw))
        if signing in (SIGNED, COMPUTED):
            sig = obj.sigs.get(name)
            if sig is None or len(sig) != SIG_LEN:
                raise E.MissingField(
                    "%s.%s: signature missing (sign the object first)" % (KIND_NAMES[kind], name)
                )
            out.append(bytes(sig))
    data = b"".join(out)
    if len(data) > MAX_OBJECT:
        raise E.Oversize(
            "%s is %d bytes, over the limit %d" % (KIND_NAMES[kind], len(data), MAX_OBJECT)
        )
    obj.raw = data
    return data


def decode(data, expect=None):
    """Parse and validate bytes into an Obj. Raises a CodecError subclass naming what is wrong."""
    try:
        data = bytes(data)
    except (TypeError, ValueError):
        raise E.BadValue("object must be bytes") from None
    if len(data) > MAX_OBJECT:
        raise E.Oversize("object is %d bytes, over the limit %d" % (len(data), MAX_OBJECT))
    r = Reader(data, "object")
    s = r.u8("suite")
    if s != SUITE:
        raise E.UnknownSuite(_unknown_suite(data))
    kind = r.u8("kind")
    if kind not in SCHEMAS:
        raise E.UnknownKind("unknown object kind %d" % kind)
    what = KIND_NAMES[kind]
    if expect is not None and kind != expect:
        raise E.UnknownKind("expected a %s, got a %s" % (KIND_NAMES[expect], what))
    v = r.u8("version")
    if v != VERSION:
        raise E.UnknownVersion(
            "%s version %d is unknown (this build knows version %d)" % (what, v, VERSION)
        )
    r.what = what
    n = r.u8("signer length")
    if n == 0 or n > ids.MAX_ACCOUNT:
        raise E.Oversize("%s: signer length %d out of range" % (what, n))
    signer = utf8_text(r.take(n, "signer"), what + ".signer", ids.MAX_ACCOUNT)
    serial = r.varint("serial")
    time = r.u32("time")
    try:
        _check_header(kind, signer, serial, time)
    except E.BadValue as exc:
        raise E.BadValue("%s: %s" % (what, exc)) from None
    obj = Obj(kind, signer, serial, time)
    last = -1
    while r.remaining():
        at = r.pos
        tag = r.u8("tag")
        spec = _by_tag(kind, tag)
        if spec is None:
            raise E.UnknownTag("%s: unknown tag 0x%02x at offset %d" % (what, tag, at))
        if tag == last:
            raise E.DuplicateTag("%s: field %s appears twice (offset %d)" % (what, spec[1], at))
        if tag < last:
            raise E.TagOrder("%s: field %s out of order (offset %d)" % (what, spec[1], at))
        last = tag
        _, name, typ, _, signing = spec
        length = r.varint(name + " length", MAX_OBJECT)
        raw = r.take(length, name)
        obj.values[name] = _decode_value(kind, name, typ, raw, signer)
        if signing in (SIGNED, COMPUTED):
            sig = r.take(SIG_LEN, name + " signature")
            _check_sig(sig, kind, name)
            obj.sigs[name] = sig
    for spec in SCHEMAS[kind][1]:
        if spec[3] and spec[1] not in obj.values:
            raise E.MissingField("%s: required field %s missing" % (what, spec[1]))
    obj.raw = data
    return obj


def _unknown_suite(data):
    """The refusal of bytes whose first is not a suite this build knows. A QR code of a web
    address or of another app's payment (text) gets said as such: 'unknown suite 104' alone
    tells a merchant nothing."""
    why = "unknown suite %d (this build knows suite %d)" % (data[0], SUITE)
    head = bytes(data[:40])
    if len(head) >= 4 and all(32 <= b < 127 or b in _SPACES for b in head):
        more = "..." if len(data) > len(head) else ""
        shown = " ".join(head.decode().split())  # a typed file's newline: one line still
        why += '; these bytes are text, not a hubi object: "%s%s"' % (shown, more)
    return why


_SPACES = b"\t\n\r"


def peek_kind(data):
    """Kind of an encoded object without a full decode (for routing); CodecError if unreadable."""
    if len(data) < 3:
        raise E.Truncated("object shorter than its 3-byte prefix")
    if data[0] != SUITE:
        raise E.UnknownSuite(_unknown_suite(data))
    if data[1] not in SCHEMAS:
        raise E.UnknownKind("unknown object kind %d" % data[1])
    return data[1]


# ------------------------------------------------------------------------------- constructors


def make_template(bank, serial, time, account, currency, key):
    return Obj(
        TEMPLATE,
        bank,
        serial,
        time,
        {"account": account, "currency": currency, "key": key, "seal": b""},
    )


def make_request(payee, serial, time, template, amount, expiry, purpose=None):
    vals = {"template": template, "amount": amount, "expiry": expiry}
    if purpose:
        vals["purpose"] = purpose
    return Obj(REQUEST, payee, serial, time, vals)


def make_note(template, serial, time, amount, payee, purpose=None, allowance=None):
    vals = {"template": template, "amount": amount, "payee": payee, "lsum": b""}
    if purpose:
        vals["purpose"] = purpose
    if allowance is not None:
        vals["allowance"] = allowance
    return Obj(NOTE, template["account"], serial, time, vals)


def note_id(payer, serial):
    """Identity of a note: hash of payer account and serial (DESIGN §5)."""
    from hubi_core import lsum

    return lsum.note_id(payer, serial)


def is_codec_error(exc):
    return isinstance(exc, E.CodecError)
