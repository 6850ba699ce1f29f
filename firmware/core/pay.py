"""Payments: verify a payee's request offline, check the allowance, sign the note.

Imported for one step and released after it (core/__init__.py): ``prepare`` loads the verifier
(hubi_core.verify, cpk, the public-data kernels), ``sign`` the signer (codec, suite, the
secret-scalar kernels); neither stays in the heap while the person confirms or the QR shows.

Trust on the token: the bank keys computed at provisioning and the public matrices, each file
checked against the SHA-256 recorded with the keys before it is used (trust/keys.bin, an
authenticated record). The consortium file itself is read at provisioning only.
"""

import gc
import hashlib

from core import fmt
from core.store import Corrupt
from core.wallet import Payment, WalletError, _u64
from hubi_core import protocol as P

KEYS = "trust/keys.bin"
PAID = "hist/paid"  # digests of the last paid requests
PAID_MAX = 16


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
        raise WalletError(P.ERR_STATE, "no trust files on the token (provision it)")
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


def load_trust(w, matrices=True):
    """A verify.Trust from the cached bank keys and (if `matrices`) the matrix files."""
    from hubi_core.cpk import PublicMatrix
    from hubi_core.verify import Trust

    mats = {}
    keys = {}
    for bank, key, digest in _keys(w):
        keys[bank] = key
        if not matrices:
            continue
        name = "trust/%s.pub" % bank
        if not w.storage.exists(name):
            raise WalletError(
                P.ERR_PROVISION, "public matrix of bank %s missing (%s)" % (bank, name)
            )
        m = PublicMatrix.open(w.storage.path(name))
        if m.digest() != digest:
            raise WalletError(
                P.ERR_VERIFY, "public matrix of %s does not match the consortium file" % bank
            )
        mats[bank] = m
    return Trust(None, mats, keys)


def check_spend(w, amount):
    c = w.counter
    if not c.allow_serial:
        if w.counter_damaged:
            raise WalletError(
                P.ERR_STORAGE,
                "the serial counter is damaged: the bank must load a new allowance",
            )
        raise WalletError(P.ERR_ALLOWANCE, "no offline allowance loaded: load one while online")
    if c.expiry and w.clock.is_set() and w.now() > c.expiry:
        raise WalletError(P.ERR_ALLOWANCE, "offline allowance #%d expired" % c.allow_serial)
    if amount <= 0:
        raise WalletError(P.ERR_BAD_PAYLOAD, "amount must be positive")
    if amount > c.left():
        raise WalletError(
            P.ERR_ALLOWANCE,
            "amount %s exceeds the offline allowance left (%s)"
            % (fmt.amount(amount, w.currency), fmt.amount(c.left(), w.currency)),
        )


def prepare(w, raw):
    """Verify a payee's Request offline; return the Payment to confirm."""
    from hubi_core import codec
    from hubi_core.errors import CodecError
    from hubi_core.verify import verify_object

    w._need_ready()
    try:
        req = codec.decode(bytes(raw), codec.REQUEST)
    except CodecError as e:
        raise WalletError(P.ERR_CODEC, "request: %s" % e) from None
    if req.signer == w.account:
        raise WalletError(P.ERR_VERIFY, "the request is from this token's own account")
    tpl = req["template"]
    if tpl["currency"] != w.currency:
        raise WalletError(
            P.ERR_VERIFY,
            "request is in %s, this account holds %s" % (tpl["currency"], w.currency),
        )
    rep = verify_object(req, load_trust(w))
    if not rep.ok:
        f = rep.first_failure()
        raise WalletError(P.ERR_VERIFY, "request not genuine: %s: %s" % (f[0], f[1]))
    del rep
    gc.collect()
    if w.clock.is_set() and w.now() > req["expiry"]:
        raise WalletError(
            P.ERR_EXPIRED, "request expired at %d (now %d)" % (req["expiry"], w.now())
        )
    done = paid_serial(w, req.raw)
    if done is not None:
        raise WalletError(
            P.ERR_STATE, "this request was already paid by note #%d (ask for a new one)" % done
        )
    amount = req["amount"]
    check_spend(w, amount)
    return Payment(
        req.signer, amount, req.get("purpose"), w.currency, req.raw, "request", req["expiry"]
    )


def prepare_typed(w, payee, amount, purpose=None):
    """A payment typed on the device (no signed request): payee and amount checked."""
    from hubi_core import ids
    from hubi_core.errors import CodecError

    w._need_ready()
    try:
        ids.check_account_id(payee, "payee")
    except CodecError as e:
        raise WalletError(P.ERR_VERIFY, str(e)) from None
    if payee == w.account:
        raise WalletError(P.ERR_VERIFY, "cannot pay this token's own account")
    bank = ids.bank_of(payee)
    if bank not in bank_ids(w):
        raise WalletError(P.ERR_VERIFY, "bank %s is not in the consortium" % bank)
    check_spend(w, amount)
    return Payment(payee, amount, purpose, w.currency, None, "typed")


def sign(w, pay, priv):
    """Persist serial + 1 and the allowance decrement, THEN sign; returns the note bytes."""
    from core.wallet import TPL
    from hubi_core import codec

    w._need_ready()
    check_spend(w, pay.amount)
    template = codec.decode(w.records.get(TPL), codec.TEMPLATE)
    c = w._copy_counter()
    serial = c.next_serial if c.next_serial >= c.first else c.first
    t = w.now()
    c.next_serial = serial + 1
    c.spent += pay.amount
    c.last_time = t
    w._save_counter(c)  # <- the point of no return: this serial is used up
    # no allowance field: the bank finds the allowance a note spends from its serial (each
    # allowance covers the serials from its first_serial on), which keeps notes ~70 bytes
    # shorter (one QR version less)
    note = codec.make_note(template, serial, t, pay.amount, pay.payee, pay.purpose)
    codec.sign(note, priv)
    raw = codec.encode(note)
    del note, template
    _keep_note(w, serial, raw)
    if pay.request is not None:
        _remember_request(w, pay.request, serial)
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
