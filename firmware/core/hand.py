"""The link request handlers, imported for one request and released after it (core.token).

Every handler takes the Token (tok) and the request payload and returns the reply (bytes); a
refusal raises, and run() turns it into a clear ERROR reply.
"""

import gc
import json

from core.keystore import NotProvisioned, Wiped, WrongPin
from core.wallet import WalletError
from hubi_core.errors import ErrorReply, HubiError

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# hubi_core.protocol's numbers (tests/test_token_core.py checks them)
_CHANGE_PIN = const(0x38)
_ERR_BAD_PAYLOAD = const(0x0007)
_ERR_BUSY = const(0x000B)
_ERR_CANCELLED = const(0x0106)
_ERR_CODEC = const(0x0108)
_ERR_PIN_WRONG = const(0x0102)
_ERR_STATE = const(0x0101)
_ERR_WIPED = const(0x0103)
_GET_INFO = const(0x20)
_LOAD_ALLOWANCE = const(0x24)
_LOAD_NOTICE = const(0x30)
_NOTE_GET = const(0x2B)
_NOTE_LIST = const(0x2C)
_PAY_CANCEL = const(0x2A)
_PAY_CONFIRM = const(0x29)
_PAY_REQUEST = const(0x28)
_PROVISION_COMMIT = const(0x23)
_SET_TIME = const(0x21)
_SHOW_BALANCE = const(0x31)

VERSION = "hubi-token 0.1"


def _json(obj):
    return json.dumps(obj).encode()


def err(e):
    """The ERROR reply for a refusal raised by the wallet, the keystore or the codec."""
    if isinstance(e, WalletError):
        return ErrorReply(e.code, str(e))
    if isinstance(e, WrongPin):
        return ErrorReply(_ERR_PIN_WRONG, str(e))
    if isinstance(e, Wiped):
        return ErrorReply(_ERR_WIPED, str(e))
    if isinstance(e, NotProvisioned):
        return ErrorReply(_ERR_STATE, str(e))
    if isinstance(e, HubiError):
        return ErrorReply(_ERR_CODEC, "%s: %s" % (e.__class__.__name__, e))
    return None


def _busy():
    return ErrorReply(_ERR_BUSY, "the token is busy with the user on the device")


def dispatch(tok, t, payload):
    if t == _GET_INFO:
        fn = h_info
    elif t == _SET_TIME:
        fn = h_set_time
    elif t == _PROVISION_COMMIT:
        fn = h_prov_commit
    elif t == _LOAD_ALLOWANCE:
        fn = h_allowance
    elif t == _PAY_REQUEST:
        fn = h_pay_request
    elif t == _PAY_CONFIRM:
        fn = h_pay_confirm
    elif t == _PAY_CANCEL:
        fn = h_pay_cancel
    elif t == _NOTE_GET:
        fn = h_note_get
    elif t == _NOTE_LIST:
        fn = h_note_list
    elif t == _LOAD_NOTICE:
        fn = h_notice
    elif t == _SHOW_BALANCE:
        fn = h_balance
    elif t == _CHANGE_PIN:
        fn = h_change_pin
    else:
        fn = h_wipe
    # GET_INFO and SET_TIME are answered even while the person uses the device
    return run(tok, fn, payload, t in (_GET_INFO, _SET_TIME))


def run(tok, fn, payload, always=False):
    if tok.busy and not always:
        raise _busy()
    tok.in_handler = True
    try:
        return fn(tok, payload)
    except ErrorReply:
        raise
    except Exception as e:  # noqa: BLE001 - every failure becomes a clear ERROR reply
        r = err(e)
        if r is None:
            raise
        raise r from None
    finally:
        tok.in_handler = False
        tok.release()


class _Sink:
    """A provisioning upload sink whose refusals become clear ERROR replies."""

    def __init__(self, sink):
        self.sink = sink

    def write(self, chunk):
        try:
            self.sink.write(chunk)
        except Exception as e:  # noqa: BLE001
            r = err(e)
            if r is None:
                raise
            raise r from None

    def finish(self):
        return self.sink.finish()


def prov_sink(tok, total):
    if tok.busy:
        raise _busy()
    try:
        from core import prov

        return _Sink(prov.stage_sink(tok.wallet, total))
    except Exception as e:  # noqa: BLE001
        r = err(e)
        if r is None:
            raise
        raise r from None


def wait(tok, ms):
    """Back-off wait of a PIN check: the screen counts down, or the link keeps the host waiting."""
    if tok.ui is not None:
        tok.ui.wait(ms)
        return
    clock = tok.clock
    end = clock.ticks_ms() + ms
    while clock.ticks_diff(end, clock.ticks_ms()) > 0:
        tok.server.keepalive()
        clock.sleep_ms(50)


def _ms(tok, t0):
    return tok.clock.ticks_diff(tok.clock.ticks_ms(), t0) if tok.clock else 0


def timing(tok, **kw):
    t = tok.timing or {}
    t.update(kw)
    tok.timing = t
    gc.collect()
    try:
        t["heap_used"] = gc.mem_alloc()
    except AttributeError:
        pass
    tok.log("timing " + json.dumps(t))


def _unlock(tok, pin):
    w = tok.wallet
    return w.ks.unlock(pin, lambda ms: wait(tok, ms))


# ---------------------------------------------------------------------------- handlers
def h_info(tok, payload):
    w = tok.wallet
    info = w.info()
    info["firmware"] = VERSION
    info["board"] = tok.board
    info["screen"] = [tok.ui.d.width, tok.ui.d.height] if tok.ui else None
    p = w.pending
    if p is not None:
        from core.pay import summary

        p = summary(w, p)
    info["pending"] = p
    gc.collect()
    try:
        info["heap_free"] = gc.mem_free()
    except AttributeError:
        info["heap_free"] = None
    try:
        from micropython import mem_peak

        info["heap_peak"] = mem_peak()
    except ImportError:  # CPython
        info["heap_peak"] = None
    return _json(info)


def h_set_time(tok, payload):
    if len(payload) != 4:
        raise ErrorReply(_ERR_BAD_PAYLOAD, "SET_TIME needs a 4-byte Unix time")
    tok.wallet.set_time(int.from_bytes(bytes(payload), "big"))
    return b""


def h_prov_file(tok, sink):
    return sink.finish()


def h_prov_commit(tok, payload):
    from core import prov

    if tok.ui is not None:
        tok.ui.busy("Provisioning", "Checking the bank's bundle...")
    try:
        info = prov.provision(tok.wallet, payload)
    finally:
        tok.refresh()
    return _json(info)


def h_allowance(tok, payload):
    from core import prov

    out = prov.load_allowance(tok.wallet, payload)
    tok.refresh()
    return _json(out)


def h_pay_request(tok, payload):
    w = tok.wallet
    w.pending = None
    ui = tok.ui
    if ui is not None and ui.qr is not None:
        ui.busy("Payment request", "Checking...")  # a new request replaces the note
        tok.release()
    t0 = tok.clock.ticks_ms() if tok.clock else 0
    from core import pay

    p = pay.prepare(w, payload)
    tok.timing = {"verify_ms": _ms(tok, t0)}
    if ui is None:
        w.pending = p
        from core.pay import summary

        return bytes([2]) + _json(summary(w, p))
    tok.release()  # the verifier: the signer and the screens need the room
    from core import tui

    return bytes([1]) + tui.pay_on_device(tok, p)


def h_pay_confirm(tok, payload):
    w = tok.wallet
    if tok.ui is not None:
        raise ErrorReply(
            _ERR_STATE, "this token takes the PIN on its own keypad, not over the link"
        )
    p = w.pending
    if p is None:
        raise ErrorReply(_ERR_STATE, "no payment is waiting for confirmation (send PAY_REQUEST)")
    pin = bytes(payload).decode()
    t0 = tok.clock.ticks_ms()
    try:
        priv = _unlock(tok, pin)
    except Wiped:
        w.pending = None
        w.boot()
        raise
    t1 = tok.clock.ticks_ms()
    w.pending = None
    tok.release()
    from core import pay

    try:
        note = pay.sign(w, p, priv)
    finally:
        priv = None
    tok.last_note = note
    timing(tok, unlock_ms=tok.clock.ticks_diff(t1, t0), sign_ms=_ms(tok, t1), frames=0,
           note_bytes=len(note))  # fmt: skip
    return note


def h_pay_cancel(tok, payload):
    tok.wallet.pending = None
    return b""


def h_note_get(tok, payload):
    from core import notes

    serial = None
    if len(payload):
        from hubi_core.wire import Reader

        serial = Reader(bytes(payload), "NOTE_GET").varint("serial")
    return notes.note(tok.wallet, serial)


def h_note_list(tok, payload):
    from core import notes

    return _json(notes.history(tok.wallet))


def h_notice(tok, payload):
    from core import notes

    w = tok.wallet
    out = notes.load_notice(w, payload)
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
        priv = _unlock(tok, bytes(payload).decode())
    else:
        from core import tui

        priv = tui.ask_pin_loop(tok, "PIN for balance")
    tok.release()
    from core import notes

    try:
        out = notes.balance(w, priv)
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


def h_change_pin(tok, payload):
    w = tok.wallet
    w._need_ready()
    ui = tok.ui
    if ui is None:
        raw = bytes(payload)
        if raw.count(b"\x00") != 1:
            raise ErrorReply(_ERR_BAD_PAYLOAD, "CHANGE_PIN needs old PIN, 0x00, new PIN")
        old, new = raw.decode().split("\x00")
    else:
        old = ui.ask_pin("Current PIN", w.ks.tries_left())
        new = ui.ask_pin("New PIN") if old is not None else None
        again = ui.ask_pin("New PIN again") if new is not None else None
        if old is None or new is None or new != again:
            tok.refresh()
            raise WalletError(_ERR_CANCELLED, "PIN change cancelled or the new PINs differ")
    try:
        w.ks.change_pin(old, new, lambda ms: wait(tok, ms))
    except ValueError as e:
        raise ErrorReply(_ERR_BAD_PAYLOAD, str(e)) from None
    except Wiped:
        w.boot()
        raise
    tok.refresh()
    return b""


def h_wipe(tok, payload):
    w = tok.wallet
    if tok.ui is not None:
        if not tok.ui.confirm(
            "Wipe token?",
            ["Erase the account key,", "history and trust files."],
            screen="confirm",
        ):
            tok.refresh()
            raise WalletError(_ERR_CANCELLED, "wipe declined on the device")
    elif w.provisioned:
        _unlock(tok, bytes(payload).decode())
    w.wipe()
    tok.refresh()
    return b""
