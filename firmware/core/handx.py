"""The link handlers a payment does not use (provisioning, allowances, notes, notices, balance,
PIN change, wipe), imported for one request and released after it (core.hand dispatches)."""

import gc

from core.hand import VERSION, _busy, _json, _unlock, err, wait
from core.keystore import check_pin
from core.wallet import WalletError
from hubi_core.errors import ErrorReply

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# hubi_core.protocol's numbers (tests/test_token_core.py checks them)
_ERR_BAD_PAYLOAD = const(0x0007)
_ERR_CANCELLED = const(0x0106)


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
    if tok.wallet.fault is not None:  # it stages nothing (it may hold a key it cannot read)
        from core.fault import gate

        gate(tok.wallet)
    try:
        from core import prov

        return _Sink(prov.stage_sink(tok.wallet, total))
    except Exception as e:  # noqa: BLE001
        r = err(e)
        if r is None:
            raise
        raise r from None


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


def h_change_pin(tok, payload):
    w = tok.wallet
    w._need_ready()
    ui = tok.ui
    if ui is None:
        raw = bytes(payload)
        if raw.count(b"\x00") != 1:
            raise ErrorReply(_ERR_BAD_PAYLOAD, "CHANGE_PIN needs old PIN, 0x00, new PIN")
        old, new = raw.split(b"\x00")
        try:
            new = check_pin(new)  # before the old PIN is tried: a bad new PIN costs no try
        except ValueError as e:
            raise ErrorReply(_ERR_BAD_PAYLOAD, "new PIN: %s" % e) from None
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
    tok.refresh()
    return b""


def h_wipe(tok, payload):
    w = tok.wallet
    # the keystore's word, not the wallet's: in a storage fault (core.fault.gate lets only a
    # WIPE through, and only with ks.bin read) the wallet says "not provisioned"
    if tok.ui is not None:
        from core import tui

        if not tui.confirm_wipe(tok):  # a PIN cancelled raises CANCELLED itself
            tok.refresh()
            raise WalletError(_ERR_CANCELLED, "wipe declined on the device")
    elif w.ks.provisioned:
        _unlock(tok, bytes(payload))  # the keystore checks the PIN's form (counted)
    w.wipe()
    tok.refresh()
    return b""


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
    t = int.from_bytes(bytes(payload), "big")
    ok = tok.wallet.clock.EPOCH_OK
    if t < ok:  # would read as "never set", and requests and allowances as never expiring
        raise ErrorReply(_ERR_BAD_PAYLOAD, "SET_TIME %d is before %d (2020)" % (t, ok))
    tok.wallet.set_time(t)
    return b""


def handler(t):
    if t == 0x20:  # GET_INFO
        return h_info
    if t == 0x21:  # SET_TIME
        return h_set_time
    if t == 0x23:  # PROVISION_COMMIT
        return h_prov_commit
    if t == 0x24:  # LOAD_ALLOWANCE
        return h_allowance
    if t == 0x38:  # CHANGE_PIN
        return h_change_pin
    return h_wipe
