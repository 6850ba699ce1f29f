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

from hubi_core import ec, ids, lsum, suite
from hubi_core.errors import (
    BadPoint,
    BadValue,
    CodecError,
    DuplicateTag,
    HighS,
    MissingField,
    Oversize,
    TagOrder,
    TrailingBytes,
    Truncated,
    UnknownKind,
    UnknownSuite,
    UnknownTag,
    UnknownVersion,
)
from hubi_core.wire import Reader, utf8_text, varint

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
T_SIGNER = 0x01  # header pseudo-tags, used by lsum only
T_SERIAL = 0x02
T_TIME = 0x03
T_TEMPLATE = 0x08
T_AMOUNT = 0x10
T_PURPOSE = 0x11
T_PAYEE = 0x12
T_PAYER = 0x13
T_ACCOUNT = 0x14
T_CURRENCY = 0x15
T_KEY = 0x16
T_EXPIRY = 0x17
T_NOTE_ID = 0x18
T_BALANCE = 0x19
T_STATUS = 0x1A
T_REASON_CODE = 0x1B
T_REASON = 0x1C
T_FIRST_SERIAL = 0x1D
T_ALLOWANCE = 0x1E
T_NOTE_DIGEST = 0x20
T_VERDICT = 0x21
T_TREE_SIZE = 0x22
T_ROOT = 0x23
T_SEAL = 0x3E
T_LSUM = 0x3F

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
STATUS_VERIFIED = 1  # payer's signatures and template verified, note booked
STATUS_SETTLED = 2  # interbank: validated by the consortium and settled
VERDICT_REFUSE = 0
VERDICT_ENDORSE = 1
REASON_INSUFFICIENT_FUNDS = 1
REASON_DOUBLE_ISSUE = 2
REASON_BAD_SIGNATURE = 3
REASON_BAD_TEMPLATE = 4
REASON_UNKNOWN_ACCOUNT = 5
REASON_ALLOWANCE = 6
REASON_EXPIRED = 7
REASON_FORMAT = 8
REASON_CONSORTIUM = 9
REASON_NAMES = {
    REASON_INSUFFICIENT_FUNDS: "insufficient-funds",
    REASON_DOUBLE_ISSUE: "double-issuance",
    REASON_BAD_SIGNATURE: "bad-signature",
    REASON_BAD_TEMPLATE: "bad-template",
    REASON_UNKNOWN_ACCOUNT: "unknown-account",
    REASON_ALLOWANCE: "over-allowance",
    REASON_EXPIRED: "expired",
    REASON_FORMAT: "bad-format",
    REASON_CONSORTIUM: "consortium-refused",
}

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
            (T_ACCOUNT, "account", ACCOUNT, REQ, SEALED),
            (T_CURRENCY, "currency", CURRENCY, REQ, SEALED),
            (T_KEY, "key", POINT, REQ, SEALED),
            (T_SEAL, "seal", EMPTY, REQ, SIGNED),
        ),
    ),
    REQUEST: (
        ACCOUNT,
        (
            (T_TEMPLATE, "template", TEMPLATE_FULL, REQ, PLAIN),
            (T_AMOUNT, "amount", UINT, REQ, SIGNED),
            (T_PURPOSE, "purpose", TEXT, OPT, SIGNED),
            (T_EXPIRY, "expiry", TIME, REQ, SIGNED),
        ),
    ),
    NOTE: (
        ACCOUNT,
        (
            (T_TEMPLATE, "template", TEMPLATE_STUB, REQ, PLAIN),
            (T_AMOUNT, "amount", UINT, REQ, SIGNED),
            (T_PURPOSE, "purpose", TEXT, OPT, SIGNED),
            (T_PAYEE, "payee", ACCOUNT, REQ, SIGNED),
            (T_ALLOWANCE, "allowance", UINT, OPT, SIGNED),
            (T_LSUM, "lsum", EMPTY, REQ, COMPUTED),
        ),
    ),
    SETTLEMENT: (
        BANK,
        (
            (T_AMOUNT, "amount", UINT, REQ, SIGNED),
            (T_PAYEE, "payee", ACCOUNT, REQ, SIGNED),
            (T_PAYER, "payer", ACCOUNT, REQ, SIGNED),
            (T_NOTE_ID, "note_id", DIGEST, REQ, SIGNED),
            (T_STATUS, "status", UINT, REQ, SIGNED),
        ),
    ),
    BALANCE: (
        BANK,
        (
            (T_AMOUNT, "amount", UINT, REQ, SIGNED),
            (T_PAYEE, "payee", ACCOUNT, REQ, SIGNED),
            (T_PAYER, "payer", ACCOUNT, REQ, SIGNED),
            (T_NOTE_ID, "note_id", DIGEST, REQ, SIGNED),
            (T_BALANCE, "balance", BLOB, REQ, SIGNED),
        ),
    ),
    RECEIPT: (
        ACCOUNT,
        (
            (T_TEMPLATE, "template", TEMPLATE_FULL, REQ, PLAIN),
            (T_AMOUNT, "amount", UINT, REQ, SIGNED),
            (T_PURPOSE, "purpose", TEXT, OPT, SIGNED),
            (T_PAYER, "payer", ACCOUNT, REQ, SIGNED),
            (T_NOTE_ID, "note_id", DIGEST, REQ, SIGNED),
        ),
    ),
    ALLOWANCE: (
        BANK,
        (
            (T_AMOUNT, "amount", UINT, REQ, SIGNED),
            (T_ACCOUNT, "account", ACCOUNT, REQ, SIGNED),
            (T_EXPIRY, "expiry", TIME, REQ, SIGNED),
            (T_FIRST_SERIAL, "first_serial", UINT, REQ, SIGNED),
        ),
    ),
    REFUSAL: (
        BANK,
        (
            (T_PAYEE, "payee", ACCOUNT, REQ, SIGNED),
            (T_PAYER, "payer", ACCOUNT, REQ, SIGNED),
            (T_NOTE_ID, "note_id", DIGEST, REQ, SIGNED),
            (T_REASON_CODE, "reason_code", UINT, REQ, SIGNED),
            (T_REASON, "reason", TEXT, OPT, SIGNED),
        ),
    ),
    ENDORSEMENT: (
        BANK,
        (
            (T_NOTE_ID, "note_id", DIGEST, REQ, SEALED),
            (T_REASON_CODE, "reason_code", UINT, OPT, SEALED),
            (T_REASON, "reason", TEXT, OPT, SEALED),
            (T_NOTE_DIGEST, "note_digest", DIGEST, REQ, SEALED),
            (T_VERDICT, "verdict", UINT, REQ, SEALED),
            (T_SEAL, "seal", EMPTY, REQ, SIGNED),
        ),
    ),
    CHECKPOINT: (
        BANK,
        (
            (T_TREE_SIZE, "tree_size", UINT, REQ, SEALED),
            (T_ROOT, "root", DIGEST, REQ, SEALED),
            (T_SEAL, "seal", EMPTY, REQ, SIGNED),
        ),
    ),
}

_BY_NAME = {}
_BY_TAG = {}
for _kind, (_st, _fields) in SCHEMAS.items():
    _BY_NAME[_kind] = {f[1]: f for f in _fields}
    _BY_TAG[_kind] = {f[0]: f for f in _fields}


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
            raise UnknownKind("unknown object kind %d" % kind)
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
        raise BadValue("%s.%s: signature r or s out of range" % (KIND_NAMES[kind], name))
    if s > suite.HALF_N:
        raise HighS(
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
            raise BadValue("%s: time out of range" % name)
        return value.to_bytes(4, "big")
    if typ == POINT:
        if len(value) != 33:
            raise BadPoint("%s: point must be 33 bytes compressed" % name)
        try:
            ec.decode_point(value)
        except ValueError as exc:
            raise BadPoint("%s: %s" % (name, exc)) from None
        return bytes(value)
    if typ == CURRENCY:
        raw = value.encode()
        _check_currency(raw, name)
        return raw
    if typ == DIGEST:
        if len(value) != 32:
            raise BadValue("%s: digest must be 32 bytes" % name)
        return bytes(value)
    if typ == BLOB:
        if len(value) > MAX_BLOB:
            raise Oversize("%s: %d bytes, over the limit %d" % (name, len(value), MAX_BLOB))
        return bytes(value)
    if typ == TEMPLATE_FULL:
        return encode(value)
    if typ == TEMPLATE_STUB:
        return _encode_stub(value, signer)
    if typ == EMPTY:
        return b""
    raise BadValue("unknown value type %s" % typ)


def _check_currency(raw, name):
    if len(raw) != 3:
        raise BadValue("%s: currency must be 3 letters A-Z" % name)
    for b in raw:
        if not (65 <= b <= 90):
            raise BadValue("%s: currency must be 3 letters A-Z" % name)


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
            raise BadValue("%s.%s: bytes after the number" % (KIND_NAMES[kind], name))
        return n
    if typ == TIME:
        if len(raw) != 4:
            raise BadValue("%s.%s: time must be 4 bytes" % (KIND_NAMES[kind], name))
        return int.from_bytes(raw, "big")
    if typ == POINT:
        if len(raw) != 33:
            raise BadPoint("%s.%s: point must be 33 bytes compressed" % (KIND_NAMES[kind], name))
        try:
            ec.decode_point(raw)
        except ValueError as exc:
            raise BadPoint("%s.%s: %s" % (KIND_NAMES[kind], name, exc)) from None
        return raw
    if typ == CURRENCY:
        _check_currency(raw, name)
        return raw.decode()
    if typ == DIGEST:
        if len(raw) != 32:
            raise BadValue("%s.%s: digest must be 32 bytes" % (KIND_NAMES[kind], name))
        return raw
    if typ == BLOB:
        if len(raw) > MAX_BLOB:
            raise Oversize(
                "%s.%s: %d bytes, over the limit %d" % (KIND_NAMES[kind], name, len(raw), MAX_BLOB)
            )
        return raw
    if typ == TEMPLATE_FULL:
        return decode(raw, TEMPLATE)
    if typ == TEMPLATE_STUB:
        return _decode_stub(raw, signer)
    if typ == EMPTY:
        if raw:
            raise BadValue("%s.%s: must be empty on the wire" % (KIND_NAMES[kind], name))
        return b""
    raise BadValue("unknown value type %s" % typ)


# The compact template inside a note: bank(str8) serial(varint) time(u32) currency(3) seal-sig(64).
def _encode_stub(tpl, account):
    if tpl.kind != TEMPLATE:
        raise BadValue("note.template must be a Template")
    if tpl["account"] != account:
        raise BadValue("note.template is for %s, not for the payer %s" % (tpl["account"], account))
    sig = tpl.sigs.get("seal")
    if sig is None:
        raise MissingField("note.template has no bank seal")
    return tpl.header_bytes() + tpl["currency"].encode() + sig


def _decode_stub(raw, account):
    r = Reader(raw, "Note.template")
    n = r.u8("bank length")
    if n == 0 or n > ids.MAX_BANK:
        raise Oversize("Note.template: bank id length %d out of range" % n)
    bank = ids.check_bank_id(utf8_text(r.take(n, "bank id"), "template bank", ids.MAX_BANK))
    serial = r.varint("template serial")
    time = r.u32("template time")
    cur = r.take(3, "currency")
    _check_currency(cur, "Note.template.currency")
    sig = r.take(SIG_LEN, "template seal")
    if r.remaining():
        raise TrailingBytes("Note.template: %d bytes after the seal" % r.remaining())
    _check_sig(sig, TEMPLATE, "seal")
    # The separating key is not carried: verify.recover_payer_key() restores it.
    return Obj(
        TEMPLATE, bank, serial, time, {"account": account, "currency": cur.decode()}, {"seal": sig}
    )


# ----------------------------------------------------------------------------- signing messages


def _tlv(tag, raw):
    return bytes([tag]) + varint(len(raw)) + raw


def field_message(obj, name, value_bytes=None):
    """The exact bytes a field's signature covers."""
    tag, _, typ, _, signing = _BY_NAME[obj.kind][name]
    if signing == COMPUTED:
        value = lsum.of_note(obj)
    elif signing == SIGNED and typ == EMPTY:  # seal: covers every sealed field before it
        value = b"".join(
            _tlv(f[0], _encode_value(obj.kind, f[1], f[2], obj.values[f[1]], obj.signer))
            for f in SCHEMAS[obj.kind][1]
            if f[4] == SEALED and f[1] in obj.values
        )
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
        raise BadValue("serial out of range")
    if not (0 <= time < 1 << 32):
        raise BadValue("time out of range")


def encode(obj):
    """Canonical bytes of obj; every signed field must already carry its signature."""
    kind = obj.kind
    _check_header(kind, obj.signer, obj.serial, obj.time)
    out = [obj.prefix(), obj.header_bytes()]
    for tag, name, typ, required, signing in SCHEMAS[kind][1]:
        if name not in obj.values:
            if required:
                raise MissingField("%s: required field %s missing" % (KIND_NAMES[kind], name))
            continue
        raw = b"" if typ == EMPTY else _encode_value(kind, name, typ, obj.values[name], obj.signer)
        out.append(_tlv(tag, raw))
        if signing in (SIGNED, COMPUTED):
            sig = obj.sigs.get(name)
            if sig is None or len(sig) != SIG_LEN:
                raise MissingField(
                    "%s.%s: signature missing (sign the object first)" % (KIND_NAMES[kind], name)
                )
            out.append(bytes(sig))
    data = b"".join(out)
    if len(data) > MAX_OBJECT:
        raise Oversize(
            "%s is %d bytes, over the limit %d" % (KIND_NAMES[kind], len(data), MAX_OBJECT)
        )
    obj.raw = data
    return data


def decode(data, expect=None):
    """Parse and validate bytes into an Obj. Raises a CodecError subclass naming what is wrong."""
    try:
        data = bytes(data)
    except (TypeError, ValueError):
        raise BadValue("object must be bytes") from None
    if len(data) > MAX_OBJECT:
        raise Oversize("object is %d bytes, over the limit %d" % (len(data), MAX_OBJECT))
    r = Reader(data, "object")
    s = r.u8("suite")
    if s != SUITE:
        raise UnknownSuite("unknown suite %d (this build knows suite %d)" % (s, SUITE))
    kind = r.u8("kind")
    if kind not in SCHEMAS:
        raise UnknownKind("unknown object kind %d" % kind)
    what = KIND_NAMES[kind]
    if expect is not None and kind != expect:
        raise UnknownKind("expected a %s, got a %s" % (KIND_NAMES[expect], what))
    v = r.u8("version")
    if v != VERSION:
        raise UnknownVersion(
            "%s version %d is unknown (this build knows version %d)" % (what, v, VERSION)
        )
    r.what = what
    n = r.u8("signer length")
    if n == 0 or n > ids.MAX_ACCOUNT:
        raise Oversize("%s: signer length %d out of range" % (what, n))
    signer = utf8_text(r.take(n, "signer"), what + ".signer", ids.MAX_ACCOUNT)
    serial = r.varint("serial")
    time = r.u32("time")
    try:
        _check_header(kind, signer, serial, time)
    except BadValue as exc:
        raise BadValue("%s: %s" % (what, exc)) from None
    obj = Obj(kind, signer, serial, time)
    by_tag = _BY_TAG[kind]
    last = -1
    while r.remaining():
        at = r.pos
        tag = r.u8("tag")
        spec = by_tag.get(tag)
        if spec is None:
            raise UnknownTag("%s: unknown tag 0x%02x at offset %d" % (what, tag, at))
        if tag == last:
            raise DuplicateTag("%s: field %s appears twice (offset %d)" % (what, spec[1], at))
        if tag < last:
            raise TagOrder("%s: field %s out of order (offset %d)" % (what, spec[1], at))
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
            raise MissingField("%s: required field %s missing" % (what, spec[1]))
    obj.raw = data
    return obj


def peek_kind(data):
    """Kind of an encoded object without a full decode (for routing); CodecError if unreadable."""
    if len(data) < 3:
        raise Truncated("object shorter than its 3-byte prefix")
    if data[0] != SUITE:
        raise UnknownSuite("unknown suite %d" % data[0])
    if data[1] not in SCHEMAS:
        raise UnknownKind("unknown object kind %d" % data[1])
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
    return lsum.note_id(payer, serial)


def is_codec_error(exc):
    return isinstance(exc, CodecError)
