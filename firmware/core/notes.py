"""Notes kept, notices and the balance, imported for one request (core/__init__.py)."""

import gc

from core import fmt
from core.hand import _json, _unlock
from core.store import Corrupt
from core.wallet import WalletError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# hubi_core.protocol's numbers (tests/test_token_core.py checks them)
_ERR_CODEC = const(0x0108)
_ERR_NOT_FOUND = const(0x0109)
_ERR_STORAGE = const(0x010B)
_ERR_VERIFY = const(0x0105)


BAL = "hist/bal"
RCPT = "hist/rcpt"
BALANCE_INFO = b"hubi/balance/1\x00"  # ECIES info prefix of a BalanceNotice's balance (+ payer)


def note(w, serial=None):
    serials = w.note_serials()
    if not serials:
        raise WalletError(_ERR_NOT_FOUND, "no notes kept on this token")
    if serial is None:
        serial = serials[-1]
    if serial not in serials:
        raise WalletError(_ERR_NOT_FOUND, "note #%d is not kept (kept: %s)" % (serial, serials))
    try:
        raw = w.records.get("hist/n%08d" % serial)
    except Corrupt as e:
        raise WalletError(_ERR_STORAGE, str(e)) from None
    return raw


def history(w):
    from hubi_core import codec
    from hubi_core.errors import CodecError

    out = []
    for s in w.note_serials():
        try:
            n = codec.decode(w.records.get("hist/n%08d" % s), codec.NOTE)
        except (Corrupt, CodecError, TypeError):
            continue
        out.append(
            {
                "serial": s,
                "time": n.time,
                "amount": n["amount"],
                "payee": n["payee"],
                "purpose": n.get("purpose") or "",
                "note_id": fmt.hexs(codec.note_id(n.signer, s)),
                "receipt": False,
            }
        )
    r = _get_obj(w, RCPT)
    if r is not None:
        rid = fmt.hexs(r["note_id"])
        for h in out:
            if h["note_id"] == rid:
                h["receipt"] = True
    return out


def _get_obj(w, name):
    from hubi_core import codec
    from hubi_core.errors import CodecError

    try:
        raw = w.records.get(name)
        return codec.decode(raw) if raw else None
    except (Corrupt, CodecError):
        return None


def load_notice(w, raw):
    """A BalanceNotice (from the payer's bank) or a Receipt (from a payee), verified: decoded
    with the codec, then checked with the codec released (core.sigcheck)."""
    from core import release

    w._need_ready()
    out, v, serial, raw = _decode_notice(w, bytes(raw))
    release(("core.notes",))
    from core import sigcheck

    balance = out["kind"] == "BalanceNotice"
    # a balance notice is the bank's: its key is cached; a receipt needs the payee's matrix
    fail = sigcheck.check(w, v, matrices=not balance)
    del v
    release(("core.notes",))
    if fail is not None:
        raise WalletError(_ERR_VERIFY, "%s not genuine: %s: %s" % (out["kind"], fail[0], fail[1]))
    if balance:
        old = _get_obj(w, BAL)
        if old is not None and old.serial > serial:
            raise WalletError(
                _ERR_VERIFY, "balance notice #%d is older than #%d" % (serial, old.serial)
            )
        del old
        w.records.put(BAL, raw)
    else:
        _match_note(w, out)  # with the receipt's codec object gone: the note is decoded
        w.records.put(RCPT, raw)
    return out


def _decode_notice(w, raw):
    """Step 1: decode and validate; (summary, sigcheck plan, serial, raw)."""
    from core.sigcheck import plan
    from hubi_core import codec, ids
    from hubi_core.errors import CodecError

    try:
        obj = codec.decode(raw)
    except CodecError as e:
        raise WalletError(_ERR_CODEC, "notice: %s" % e) from None
    if obj.kind not in (codec.BALANCE, codec.RECEIPT):
        raise WalletError(
            _ERR_CODEC, "expected a BalanceNotice or a Receipt, got a %s" % obj.kind_name
        )
    if obj["payer"] != w.account:
        raise WalletError(
            _ERR_VERIFY,
            "%s is for payer %s, not %s" % (obj.kind_name, obj["payer"], w.account),
        )
    balance = obj.kind == codec.BALANCE
    if balance and obj.signer != ids.bank_of(w.account):
        raise WalletError(_ERR_VERIFY, "balance notice signed by %s, not by our bank" % obj.signer)
    out = {
        "kind": obj.kind_name,
        "signer": obj.signer,
        "serial": obj.serial,
        "amount": obj["amount"],
        "payee": obj["payee"] if balance else obj.signer,
        "note_id": fmt.hexs(obj["note_id"]),
    }
    if not balance:
        out["purpose"] = obj.get("purpose") or ""
    return out, plan(obj), obj.serial, obj.raw


def _match_note(w, out):
    """A receipt for a note this token keeps must be signed by that note's payee and name its
    amount and purpose: anyone else's receipt would mark the note as received."""
    from hubi_core import codec
    from hubi_core.errors import CodecError

    for s in w.note_serials():
        if fmt.hexs(codec.note_id(w.account, s)) != out["note_id"]:
            continue
        try:
            n = codec.decode(w.records.get("hist/n%08d" % s), codec.NOTE)
        except (Corrupt, CodecError, TypeError):  # a damaged copy cannot be compared
            return
        if n["payee"] != out["signer"]:
            why = "is signed by %s, but the note pays %s" % (out["signer"], n["payee"])
        elif n["amount"] != out["amount"] or (n.get("purpose") or "") != out["purpose"]:
            why = "names another amount or purpose than the note"
        else:
            return
        raise WalletError(_ERR_VERIFY, "receipt for note #%d %s" % (s, why))


def balance(w, priv):
    """Decrypt the latest BalanceNotice's balance with the account key."""
    from core import release

    n = _get_obj(w, BAL)
    if n is None:
        raise WalletError(_ERR_NOT_FOUND, "no balance notice loaded")
    blob = n["balance"]
    out = {
        "balance": None,
        "balance_text": None,
        "notice_serial": n.serial,
        "bank": n.signer,
        "debited": n["amount"],
        "payee": n["payee"],
        "time": n.time,
    }
    del n
    release(("core.notes",))  # the codec: ECDH needs the room
    from hubi_core import ecies

    value = None
    for info in (BALANCE_INFO + w.account.encode(), b""):
        try:
            plain = ecies.open_sealed(priv, blob, info)
        except ValueError:
            continue
        value = _balance_value(plain)
        break
    if value is None:
        raise WalletError(
            _ERR_VERIFY,
            "the balance in notice #%d does not open with this account's key"
            % out["notice_serial"],
        )
    out["balance"] = value
    out["balance_text"] = fmt.amount(value, w.currency)
    return out


def _balance_value(plain):
    """The balance plaintext: 8-byte big-endian signed minor units (the bank node's format,
    host/hubi/bank/engine.py), else a varint or ASCII digits."""
    if len(plain) == 8:
        v = int.from_bytes(plain, "big")
        return v - (1 << 64) if v >= 1 << 63 else v
    try:
        s = bytes(plain).decode()
        if s and s.isdigit():
            return int(s)
    except UnicodeError:
        pass
    from hubi_core.wire import Reader

    return Reader(plain, "balance").varint("balance")


# ------------------------------------------------------------------ link handlers (core.hand)
def handler(t):
    if t == 0x30:  # LOAD_NOTICE
        return h_notice
    if t == 0x2B:  # NOTE_GET
        return h_note_get
    if t == 0x2C:  # NOTE_LIST
        return h_note_list
    return h_balance


def h_note_get(tok, payload):
    serial = None
    if len(payload):
        from hubi_core.wire import Reader

        serial = Reader(bytes(payload), "NOTE_GET").varint("serial")
    return note(tok.wallet, serial)


def h_note_list(tok, payload):
    return _json(history(tok.wallet))


def h_notice(tok, payload):
    w = tok.wallet
    out = load_notice(w, payload)
    if tok.ui is not None:
        from core import fmt

        tok.ui.message(
            out["kind"],
            "%s\n%s\nto %s" % (out["signer"], fmt.amount(out["amount"], w.currency), out["payee"]),
            wait=False,
        )
    return _json(out)


def h_balance(tok, payload):
    w = tok.wallet
    w._need_ready()
    if tok.ui is None:
        priv = _unlock(tok, bytes(payload))  # the keystore checks the PIN's form
    elif not w.storage.exists(BAL):  # nothing to open: the owner is not asked for the PIN
        raise WalletError(_ERR_NOT_FOUND, "no balance notice loaded")
    else:
        from core import tui

        priv = tui.ask_pin_loop(tok, "PIN for balance")
    tok.release()
    try:
        out = balance(w, priv)
    finally:
        priv = None
        gc.collect()
    if tok.ui is not None:
        tok.ui.message(
            "Balance",
            "%s\nnotice #%d of %s" % (out["balance_text"], out["notice_serial"], out["bank"]),
            wait=False,
        )
    return _json(out)
