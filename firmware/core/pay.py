"""Payments: verify a payee's request offline, check the allowance (core.paysign signs the note).

Imported for one step and released after it (core/__init__.py). A request is checked in two
steps so that the decoder and the curve arithmetic never share the heap:

1. ``_decode``: the shared codec (hubi_core.codec) decodes and validates the request, and the
   exact bytes each signature covers (codec.field_message) are hashed; what the next step needs
   (signer, bank, account, separating key, digests, signatures) is kept as plain values, and
   the codec is released.
2. ``_check``: the bank key cached at provisioning, the payee's key from the bank's public matrix
   (read from flash by offset), then ECDSA on the digests (suite.verify_digest): the same checks
   in the same order, with the same messages, as hubi_core.verify.verify_object.

Trust on the token: core.trust (bank keys cached at provisioning, matrices checked against
their recorded digests).

A payment (``prepare`` -> ``sign``) is the tuple (payee, amount, purpose, request bytes or None,
kind, expiry): no object of this module's classes outlives the step that made it.
"""

import hashlib

from core import release
from core.store import Corrupt
from core.wallet import PAID, WalletError

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

PAID_MAX = 16  # PAID (core.wallet) keeps the digests of the last paid requests


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
    from hubi_core import codec
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
    from core.sigcheck import plan

    return (
        (req.signer, req["amount"], req.get("purpose"), raw, "request", req["expiry"]),
        plan(req),
    )


def prepare(w, raw):
    """Verify a payee's Request offline; return the payment to confirm."""
    w._need_ready()
    p, v = _decode(w, bytes(raw))
    release(("core.pay",))  # the codec: the curve arithmetic needs the room
    from core import sigcheck

    fail = sigcheck.check(w, v)
    del v
    release(("core.pay",))
    if fail is not None:
        raise _err(_ERR_VERIFY, "request not genuine: %s: %s" % fail)
    recheck(w, p)
    return p


def recheck(w, p):
    """What ``prepare`` checked that can change between the request and the signature (the
    clock, the allowance, the paid requests): run again before the PIN is taken and again
    by paysign.sign, with the same errors, so a request that expired while it waited for
    its confirmation is refused as it would be if sent now."""
    request = p[3]
    if request is not None:
        expiry = p[5]
        now = w.request_now()  # the host's clock, not the last note's floor (core.wallet)
        if w.clock.is_set() and now > expiry:
            raise _err(_ERR_EXPIRED, "request expired at %d (now %d)" % (expiry, now))
        done = paid_serial(w, request)
        if done is not None:
            raise _err(
                _ERR_STATE, "this request was already paid by note #%d (ask for a new one)" % done
            )
    check_spend(w, p[1])


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
    from core.trust import bank_ids

    if bank not in bank_ids(w):
        raise _err(_ERR_VERIFY, "bank %s is not in the consortium" % bank)
    check_spend(w, amount)
    return (payee, amount, purpose, None, "typed", 0)


# -------------------------------------------------------------- paid requests
def _paid(w):
    """As core.serials.paid (not imported: the verifier needs the heap): damage is STORAGE."""
    try:
        return w.records.get(PAID) or b""
    except Corrupt as e:  # 9: EBADF, core.fault names the file and why
        raise OSError(9, "%s damaged (%s)" % (PAID, e.why)) from None


def paid_serial(w, request):
    """Serial of the note that already paid this request, or None."""
    from hubi_core import ct

    d = hashlib.sha256(bytes(request)).digest()[:16]
    b = _paid(w)
    for i in range(0, len(b), 24):
        if ct.equal(b[i : i + 16], d):
            return int.from_bytes(b[i + 16 : i + 24], "big")
    return None


# ------------------------------------------------------------------ link handlers (core.hand)
def handler(t):
    if t == 0x28:  # PAY_REQUEST
        return h_pay_request
    if t == 0x29:  # PAY_CONFIRM
        return h_pay_confirm
    return h_pay_cancel


def h_pay_request(tok, payload):
    from core.hand import _json, _ms

    w = tok.wallet
    w.pending = None
    ui = tok.ui
    if ui is not None and ui.qr is not None:
        ui.busy("Payment request", "Checking...")  # a new request replaces the note
        tok.release()
    t0 = tok.clock.ticks_ms() if tok.clock else 0
    p = prepare(w, payload)
    tok.timing = {"verify_ms": _ms(tok, t0)}
    if ui is None:
        w.pending = p
        return bytes([2]) + _json(summary(w, p))
    tok.release()  # the verifier: the signer and the screens need the room
    from core import tui

    return bytes([1]) + tui.pay_on_device(tok, p)


def h_pay_confirm(tok, payload):
    from core.hand import _ms, _unlock, timing
    from core.keystore import Wiped
    from hubi_core.errors import ErrorReply

    w = tok.wallet
    if tok.ui is not None:
        raise ErrorReply(
            _ERR_STATE, "this token takes the PIN on its own keypad, not over the link"
        )
    p = w.pending
    if p is None:
        raise ErrorReply(_ERR_STATE, "no payment is waiting for confirmation (send PAY_REQUEST)")
    try:
        recheck(w, p)  # before the PIN: an expired request costs no try and signs nothing
    except WalletError:
        w.pending = None
        raise
    t0 = tok.clock.ticks_ms()
    try:
        priv = _unlock(tok, bytes(payload))  # the keystore checks the PIN's form (counted)
    except Wiped:
        w.pending = None  # core.hand.run boots the wallet again
        raise
    t1 = tok.clock.ticks_ms()
    w.pending = None
    tok.release()
    from core import paysign

    try:
        note = paysign.sign(w, p, priv)
    finally:
        priv = None
    tok.last_note = note
    timing(tok, unlock_ms=tok.clock.ticks_diff(t1, t0), sign_ms=_ms(tok, t1), frames=0,
           note_bytes=len(note))  # fmt: skip
    return note


def h_pay_cancel(tok, payload):
    tok.wallet.pending = None
    return b""
