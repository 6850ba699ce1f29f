"""Notes kept, notices and the balance, imported for one request (core/__init__.py)."""

from core import fmt
from core.store import Corrupt
from core.wallet import WalletError
from hubi_core import protocol as P

BAL = "hist/bal"
RCPT = "hist/rcpt"
BALANCE_INFO = b"hubi/balance/1\x00"  # ECIES info prefix of a BalanceNotice's balance (+ payer)


def note(w, serial=None):
    serials = w.note_serials()
    if not serials:
        raise WalletError(P.ERR_NOT_FOUND, "no notes kept on this token")
    if serial is None:
        serial = serials[-1]
    if serial not in serials:
        raise WalletError(P.ERR_NOT_FOUND, "note #%d is not kept (kept: %s)" % (serial, serials))
    try:
        raw = w.records.get("hist/n%08d" % serial)
    except Corrupt as e:
        raise WalletError(P.ERR_STORAGE, str(e)) from None
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
    """A BalanceNotice (from the payer's bank) or a Receipt (from a payee), verified."""
    from core.pay import load_trust
    from hubi_core import codec, ids
    from hubi_core.errors import CodecError
    from hubi_core.verify import verify_object

    w._need_ready()
    try:
        obj = codec.decode(bytes(raw))
    except CodecError as e:
        raise WalletError(P.ERR_CODEC, "notice: %s" % e) from None
    if obj.kind not in (codec.BALANCE, codec.RECEIPT):
        raise WalletError(
            P.ERR_CODEC, "expected a BalanceNotice or a Receipt, got a %s" % obj.kind_name
        )
    if obj["payer"] != w.account:
        raise WalletError(
            P.ERR_VERIFY,
            "%s is for payer %s, not %s" % (obj.kind_name, obj["payer"], w.account),
        )
    balance = obj.kind == codec.BALANCE
    if balance and obj.signer != ids.bank_of(w.account):
        raise WalletError(P.ERR_VERIFY, "balance notice signed by %s, not by our bank" % obj.signer)
    # a balance notice is the bank's: its key is cached; a receipt needs the payee's matrix
    rep = verify_object(obj, load_trust(w, matrices=not balance))
    if not rep.ok:
        f = rep.first_failure()
        raise WalletError(P.ERR_VERIFY, "%s not genuine: %s: %s" % (obj.kind_name, f[0], f[1]))
    out = {
        "kind": obj.kind_name,
        "signer": obj.signer,
        "serial": obj.serial,
        "amount": obj["amount"],
        "payee": obj["payee"] if balance else obj.signer,
        "note_id": fmt.hexs(obj["note_id"]),
    }
    if balance:
        old = _get_obj(w, BAL)
        if old is not None and old.serial > obj.serial:
            raise WalletError(
                P.ERR_VERIFY, "balance notice #%d is older than #%d" % (obj.serial, old.serial)
            )
        w.records.put(BAL, obj.raw)
    else:
        out["purpose"] = obj.get("purpose") or ""
        w.records.put(RCPT, obj.raw)
    return out


def balance(w, priv):
    """Decrypt the latest BalanceNotice's balance with the account key."""
    from hubi_core import ecies

    n = _get_obj(w, BAL)
    if n is None:
        raise WalletError(P.ERR_NOT_FOUND, "no balance notice loaded")
    blob = n["balance"]
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
            P.ERR_VERIFY,
            "the balance in notice #%d does not open with this account's key" % n.serial,
        )
    return {
        "balance": value,
        "balance_text": fmt.amount(value, w.currency),
        "notice_serial": n.serial,
        "bank": n.signer,
        "debited": n["amount"],
        "payee": n["payee"],
        "time": n.time,
    }


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
