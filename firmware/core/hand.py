"""The link requests' dispatcher and the handlers' helpers, imported for one request and
released after it (core.token).

The handlers live with the work they do: core.pay (PAY_REQUEST, PAY_CONFIRM, PAY_CANCEL),
core.notes (LOAD_NOTICE, NOTE_GET, NOTE_LIST, SHOW_BALANCE), core.handx (the others), so a
payment or a notice loads no other handler code. Every handler takes the Token (tok) and the
request payload and returns the reply (bytes); a refusal raises, and run() turns it into a
clear ERROR reply.
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
_ERR_STORAGE = const(0x010B)
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
_WIPE = const(0x39)

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
    if isinstance(e, OSError):  # the flash: full, or failing
        from core.fault import storage_text

        return ErrorReply(_ERR_STORAGE, storage_text(e))
    return None


def _busy():
    return ErrorReply(_ERR_BUSY, "the token is busy with the user on the device")


def dispatch(tok, t, payload):
    """The handler of request type t, from the module that does the work (so that a payment or
    a notice loads no other handler), run as run() says."""
    # GET_INFO and SET_TIME are answered even while the person uses the device
    always = t in (_GET_INFO, _SET_TIME)
    if tok.busy and not always:
        raise _busy()  # before the import: the flow on the device needs the heap
    if tok.wallet.fault is not None and t != _SET_TIME:
        from core.fault import gate

        gate(tok.wallet, t == _WIPE)
    if t in (_PAY_REQUEST, _PAY_CONFIRM, _PAY_CANCEL):
        from core import pay as m
    elif t in (_LOAD_NOTICE, _NOTE_GET, _NOTE_LIST, _SHOW_BALANCE):
        from core import notes as m
    else:
        from core import handx as m
    return run(tok, m.handler(t), payload, always)


def run(tok, fn, payload, always=False):
    if tok.busy and not always:
        raise _busy()
    outer = tok.in_handler  # GET_INFO from a new host while a flow waits (Token._idle)
    tok.in_handler = True
    try:
        return fn(tok, payload)
    except Exception as e:  # noqa: BLE001 - every failure becomes a clear ERROR reply
        if isinstance(e, Wiped):  # the keys went: the wallet as its flash is now, blank or
            from core.fault import boot  # STORAGE if the wipe stopped (keystore._wiped)

            boot(tok.wallet)
        if not always:
            tok.refresh()  # not the PIN or "Checking..." screen of the failed flow
        if isinstance(e, ErrorReply):
            raise
        r = err(e)
        if r is None:
            raise
        raise r from None
    finally:
        tok.in_handler = outer
        if not outer:
            tok.release()


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
