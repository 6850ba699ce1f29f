"""Payments: verify a payee's request offline, check the allowance, sign the note.

Imported for one step and released after it (core/__init__.py). A request is checked in two
steps so that the decoder and the curve arithmetic never share the heap:

1. ``_decode``: the shared codec (hubi_core.codec) decodes and validates the request, and the
   exact bytes each signature covers (codec.field_message) are hashed; what the next step needs
   (signer, bank, account, separating key, digests, signatures) is kept as plain values, and
   the codec is released.
2. ``_check``: the bank key cached at provisioning, the payee's key from the bank's public matrix
   (read from flash by offset), then ECDSA on the digests (suite.verify_digest): the same checks
   in the same order, with the same messages, as hubi_core.verify.verify_object.

A note is signed without the codec as well (``note_bytes``): its fields are few and fixed, and
their bytes are written as codec.encode writes them (tests compare both byte for byte; the host
verifies every note the simulator returns with the shared core).

Trust on the token: the bank keys computed at provisioning and the public matrices, each file
checked against the SHA-256 recorded with the keys before it is used (trust/keys.bin, an
authenticated record). The consortium file itself is read at provisioning only.

A payment (``prepare`` -> ``sign``) is the tuple (payee, amount, purpose, request bytes or None,
kind, expiry): no object of this module's classes outlives the step that made it.
"""

import gc
import hashlib

from core import release
from core.store import Corrupt
from core.wallet import WalletError, _u64

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# protocol.ERR_* (tests/test_token_core.py checks them against hubi_core.protocol)
_ERR_BAD_PAYLOAD = const(0x0007)
_ERR_STATE = const(0x0101)
_ERR_ALLOWANCE = const(0x0104)
_ERR_VERIFY = const(0x0105)
_ERR_PROVISION = const(0x0107)
_ERR_CODEC = const(0x0108)
_ERR_EXPIRED = const(0x010A)
_ERR_STORAGE = const(0x010B)

KEYS = "trust/keys.bin"
PAID = "hist/paid"  # digests of the last paid requests
PAID_MAX = 16
_SIG_DOMAIN = b"hubi/sig/1\x00"  # codec.SIG_DOMAIN
_NOTE_PREFIX = b"\x01\x03\x01"  # suite 1, kind Note, version 1


def _err(code, msg):
    return WalletError(code, msg)


def summary(w, p):
    """What the screen shows and the headless host confirms."""
    from core import fmt

    return {
        "payee": p[0],
        "amount": p[1],
        "amount_text": fmt.amount(p[1], w.currency),
        "purpose": p[2] or "",
        "kind": p[4],
        "expiry": p[5],
    }


def keys_record(banks):
    """trust/keys.bin body: per bank, u8 id length, id, 65-byte public key, 32-byte digest of
    its matrix file. `banks`: [(bank id, key, digest)]."""
    out = b""
    for bank, key, digest in banks:
        bid = bank.encode()
        out += bytes([len(bid)]) + bid + key + digest
    return out


def _keys(w):
    """[(bank id, 65-byte key, matrix digest)] from trust/keys.bin."""
    try:
        raw = w.records.get(KEYS)
    except Corrupt:
        raw = None
    if not raw:
        raise _err(_ERR_STATE, "no trust files on the token (provision it)")
    out = []
    p = 0
    while p < len(raw):
        n = raw[p]
        bank = bytes(raw[p + 1 : p + 1 + n]).decode()
        p += 1 + n
        out.append((bank, bytes(raw[p : p + 65]), bytes(raw[p + 65 : p + 97])))
        p += 97
    return out


def bank_ids(w):
    return sorted(b for b, _, _ in _keys(w))


def _matrices(w):
    """{bank: file-backed PublicMatrix}, each file checked against its recorded digest."""
    from hubi_core.cpk import PublicMatrix

    mats = {}
    for bank, _, digest in _keys(w):
        name = "trust/%s.pub" % bank
        if not w.storage.exists(name):
            raise _err(_ERR_PROVISION, "public matrix of bank %s missing (%s)" % (bank, name))
        m = PublicMatrix.open(w.storage.path(name))
        if m.digest() != digest:
            raise _err(_ERR_VERIFY, "public matrix of %s does not match the consortium file" % bank)
        mats[bank] = m
    return mats


def load_trust(w, matrices=True):
    """A verify.Trust from the cached bank keys and (if `matrices`) the matrix files."""
    from hubi_core.verify import Trust

    keys = {}
    for bank, key, _ in _keys(w):
        keys[bank] = key
    return Trust(None, _matrices(w) if matrices else {}, keys)


def check_spend(w, amount):
    from core import fmt

    c = w.counter
    if not c.allow_serial:
        if w.counter_damaged:
            raise _err(
                _ERR_STORAGE, "the serial counter is damaged: the bank must load a new allowance"
            )
        raise _err(_ERR_ALLOWANCE, "no offline allowance loaded: load one while online")
    if c.expiry and w.clock.is_set() and w.now() > c.expiry:
        raise _err(_ERR_ALLOWANCE, "offline allowance #%d expired" % c.allow_serial)
    if amount <= 0:
        raise _err(_ERR_BAD_PAYLOAD, "amount must be positive")
    if amount > c.left():
        raise _err(
            _ERR_ALLOWANCE,
            "amount %s exceeds the offline allowance left (%s)"
            % (fmt.amount(amount, w.currency), fmt.amount(c.left(), w.currency)),
        )


def _decode(w, raw):
    """Step 1: decode and validate the request; return the plain values step 2 needs."""
    from hubi_core import codec, ids
    from hubi_core.errors import CodecError

    try:
        req = codec.decode(raw, codec.REQUEST)
    except CodecError as e:
        raise _err(_ERR_CODEC, "request: %s" % e) from None
    if req.signer == w.account:
        raise _err(_ERR_VERIFY, "the request is from this token's own account")
    tpl = req["template"]
    if tpl["currency"] != w.currency:
        raise _err(
            _ERR_VERIFY, "request is in %s, this account holds %s" % (tpl["currency"], w.currency)
        )
    # verify_object's checks before any signature (reported after the trust files are checked)
    bank = tpl.signer
    account = tpl["account"]
    pre = None
    if account != req.signer:
        pre = ("template", "template is for %s, not %s" % (account, req.signer))
    elif ids.bank_of(account) != bank:
        pre = ("template", "account %s is not an account of bank %s" % (account, bank))
    sha = hashlib.sha256
    sigs = []
    for name in codec.signed_fields(codec.REQUEST):
        if name in req.values:
            sigs.append((name, sha(codec.field_message(req, name)).digest(), req.sigs[name]))
    seal = (sha(codec.field_message(tpl, "seal")).digest(), tpl.sigs["seal"])
    return (
        (req.signer, req["amount"], req.get("purpose"), raw, "request", req["expiry"]),
        (pre, bank, account, tpl["key"], seal, sigs),
    )


def _check(w, bank, account, sep, seal, sigs, pre):
    """Step 2: the signatures, as verify_object checks them; the first failure is reported."""
    from hubi_core import suite

    mats = _matrices(w)
    fail = pre
    if fail is None:
        bkey = None
        for b, k, _ in _keys(w):
            if b == bank:
                bkey = k
        if bkey is None:
            fail = ("bank", "bank %s is not in the consortium" % bank)
        elif not suite.verify_digest(bkey, seal[0], seal[1]):
            fail = ("template", "bank %s's seal does not verify" % bank)
        else:
            key = mats[bank].public_key(account, sep)
            del mats
            gc.collect()
            for name, digest, sig in sigs:
                if suite.is_high_s(sig):
                    fail = (name, "high-S signature (not the canonical encoding)")
                elif not suite.verify_digest(key, digest, sig):
                    fail = (name, "signature does not verify")
                if fail is not None:
                    break
    if fail is not None:
        raise _err(_ERR_VERIFY, "request not genuine: %s: %s" % fail)


def prepare(w, raw):
    """Verify a payee's Request offline; return the payment to confirm."""
    w._need_ready()
    p, v = _decode(w, bytes(raw))
    release(("core.pay",))  # the codec: the curve arithmetic needs the room
    pre, bank, account, sep, seal, sigs = v
    del v
    _check(w, bank, account, sep, seal, sigs, pre)
    release(("core.pay",))
    expiry = p[5]
    if w.clock.is_set() and w.now() > expiry:
        raise _err(_ERR_EXPIRED, "request expired at %d (now %d)" % (expiry, w.now()))
    done = paid_serial(w, p[3])
    if done is not None:
        raise _err(
            _ERR_STATE, "this request was already paid by note #%d (ask for a new one)" % done
        )
    check_spend(w, p[1])
    return p


def prepare_typed(w, payee, amount, purpose=None):
    """A payment typed on the device (no signed request): payee and amount checked."""
    from hubi_core import ids
    from hubi_core.errors import CodecError

    w._need_ready()
    try:
        ids.check_account_id(payee, "payee")
    except CodecError as e:
        raise _err(_ERR_VERIFY, str(e)) from None
    if payee == w.account:
        raise _err(_ERR_VERIFY, "cannot pay this token's own account")
    bank = ids.bank_of(payee)
    if bank not in bank_ids(w):
        raise _err(_ERR_VERIFY, "bank %s is not in the consortium" % bank)
    check_spend(w, amount)
    return (payee, amount, purpose, None, "typed", 0)


# -------------------------------------------------------------------------------- the note
def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if not n:
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def _tlv(tag, raw):
    return bytes([tag]) + _varint(len(raw)) + raw


def template_stub(tpl):
    """The compact template a note carries (codec's note.template), from the account's encoded
    Template: its header (bank, serial, time), currency and the bank's seal."""
    p = 4 + tpl[3]  # suite, kind, version, bank length, bank
    while tpl[p] & 0x80:  # serial (varint)
        p += 1
    hend = p + 5  # + time (u32)
    p = hend
    cur = None
    while cur is None:  # fields: tag, length (< 128 in a template), value
        n = tpl[p + 1]
        if tpl[p] == 0x15:
            cur = tpl[p + 2 : p + 2 + n]
        p += 2 + n
    return bytes(tpl[3:hend]) + bytes(cur) + bytes(tpl[-64:])


def note_bytes(payer, serial, t, stub, amount, payee, purpose, priv):
    """The signed Note, as codec.encode(codec.sign(codec.make_note(...), priv)) writes it."""
    from hubi_core import lsum, suite

    a = payer.encode()
    head = bytes([len(a)]) + a + _varint(serial) + t.to_bytes(4, "big")
    fields = [_tlv(0x10, _varint(amount))]
    if purpose:
        fields.append(_tlv(0x11, purpose.encode()))
    fields.append(_tlv(0x12, payee.encode()))
    fields.append(_tlv(0x3F, lsum.to_bytes(lsum.lsum(payer, serial, amount, purpose, payee))))
    msgs = [_SIG_DOMAIN + _NOTE_PREFIX + head + f for f in fields]
    sigs = suite.sign_batch(priv, msgs)
    del msgs
    fields[-1] = b"\x3f\x00"  # lsum: signed, but its value is not on the wire
    out = _NOTE_PREFIX + head + _tlv(0x08, stub)
    for f, s in zip(fields, sigs):
        out += f + s
    return out


def sign(w, p, priv):
    """Persist serial + 1 and the allowance decrement, THEN sign; returns the note bytes."""
    from core.wallet import TPL

    w._need_ready()
    payee, amount, purpose, request = p[0], p[1], p[2], p[3]
    check_spend(w, amount)
    stub = template_stub(w.records.get(TPL))
    c = w._copy_counter()
    serial = c.next_serial if c.next_serial >= c.first else c.first
    t = w.now()
    c.next_serial = serial + 1
    c.spent += amount
    c.last_time = t
    w._save_counter(c)  # <- the point of no return: this serial is used up
    gc.collect()
    # no allowance field: the bank finds the allowance a note spends from its serial (each
    # allowance covers the serials from its first_serial on), which keeps notes ~70 bytes
    # shorter (one QR version less)
    raw = note_bytes(w.account, serial, t, stub, amount, payee, purpose, priv)
    priv = None
    gc.collect()
    _keep_note(w, serial, raw)
    if request is not None:
        _remember_request(w, request, serial)
    gc.collect()
    return raw


def _keep_note(w, serial, raw):
    from core.wallet import HISTORY

    w.records.put("hist/n%08d" % serial, raw)
    names = [n for n in w.storage.listdir("hist") if n[0] == "n" and not n.endswith(".tmp")]
    for n in names[:-HISTORY]:
        w.records.delete("hist/" + n)


# -------------------------------------------------------------- paid requests
def _paid(w):
    try:
        return w.records.get(PAID) or b""
    except Corrupt:
        return b""


def _remember_request(w, request, serial):
    """Keep the digests of the last PAID_MAX paid requests (16 bytes + serial each), so
    the same Request shown twice is not paid twice by mistake."""
    entry = hashlib.sha256(bytes(request)).digest()[:16] + _u64(serial)
    w.records.put(PAID, (_paid(w) + entry)[-24 * PAID_MAX :])


def paid_serial(w, request):
    """Serial of the note that already paid this request, or None."""
    from hubi_core import ct

    d = hashlib.sha256(bytes(request)).digest()[:16]
    b = _paid(w)
    for i in range(0, len(b), 24):
        if ct.equal(b[i : i + 16], d):
            return int.from_bytes(b[i + 16 : i + 24], "big")
    return None
