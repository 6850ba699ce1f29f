"""The token application: link handlers, the payment flow and the main loop.

``Token(wallet, server, ui, clock)``: ``ui`` is a ui.screens.Ui for boards with a screen and
buttons, or None for the headless (smart-card class) profile. With a screen the user confirms
and types the PIN on the device while the host waits (the handler sends WAIT frames); headless,
PAY_REQUEST answers with the summary and the host sends the PIN in PAY_CONFIRM.

Payment, in order (DESIGN section 2 link 2):
  request -> wallet.prepare (offline verification, expiry, allowance) -> confirm -> PIN ->
  keystore.unlock (attempt counted first) -> wallet.sign (serial and allowance persisted,
  then signed) -> QR on the screen -> reply with the note.
"""

import gc
import json

from core import fmt, release
from core.keystore import NotProvisioned, Wiped, WrongPin
from core.wallet import WalletError
from hubi_core import protocol as P
from hubi_core.errors import ErrorReply, HubiError

try:
    from micropython import mem_peak
except ImportError:  # CPython
    mem_peak = None

VERSION = "hubi-token 0.1"
# request type -> handler method (one dispatcher: a closure per type would cost heap)
_HANDLERS = {
    P.GET_INFO: "h_info",
    P.SET_TIME: "h_set_time",
    P.PROVISION_COMMIT: "h_prov_commit",
    P.LOAD_ALLOWANCE: "h_allowance",
    P.PAY_REQUEST: "h_pay_request",
    P.PAY_CONFIRM: "h_pay_confirm",
    P.PAY_CANCEL: "h_pay_cancel",
    P.NOTE_GET: "h_note_get",
    P.NOTE_LIST: "h_note_list",
    P.LOAD_NOTICE: "h_notice",
    P.SHOW_BALANCE: "h_balance",
    P.CHANGE_PIN: "h_change_pin",
    P.WIPE: "h_wipe",
}
_ALWAYS = (P.GET_INFO, P.SET_TIME)  # answered even while the person uses the device
# what a note on screen needs between requests (the animation redraws its frames)
_QR = ("ui.qrview", "hubi_core.qr", "hubi_core.qrparts")


def _json(obj):
    return json.dumps(obj).encode()


def _err(e):
    if isinstance(e, WalletError):
        return ErrorReply(e.code, str(e))
    if isinstance(e, WrongPin):
        return ErrorReply(P.ERR_PIN_WRONG, str(e))
    if isinstance(e, Wiped):
        return ErrorReply(P.ERR_WIPED, str(e))
    if isinstance(e, NotProvisioned):
        return ErrorReply(P.ERR_STATE, str(e))
    if isinstance(e, HubiError):
        return ErrorReply(P.ERR_CODEC, "%s: %s" % (e.__class__.__name__, e))
    return None


class _Sink:
    """A provisioning upload sink whose refusals become clear ERROR replies."""

    def __init__(self, sink):
        self.sink = sink

    def write(self, chunk):
        try:
            self.sink.write(chunk)
        except Exception as e:  # noqa: BLE001
            r = _err(e)
            if r is None:
                raise
            raise r from None

    def finish(self):
        return self.sink.finish()


class Token:
    def __init__(self, wallet, server, ui=None, clock=None, board="", log=None):
        self.wallet = wallet
        self.server = server
        self.ui = ui
        self.clock = clock
        self.board = board
        self.log = log or (lambda *a: None)
        self.busy = False  # a device-side flow is running: the link answers BUSY
        self.in_handler = False
        self.last_note = None
        server.handle_all(_HANDLERS, self._dispatch)
        server.handle(P.PROVISION_FILE, self._prov_file, sink=self._prov_sink)
        if ui is not None:
            ui.idle = self._idle

    # ------------------------------------------------------------------------ plumbing
    def _dispatch(self, t, payload):
        return self._run(getattr(self, _HANDLERS[t]), payload, t in _ALWAYS)

    def _prov_file(self, sink):
        return self._run(self.h_prov_file, sink)

    def _run(self, fn, payload, always=False):
        if self.busy and not always:
            raise ErrorReply(P.ERR_BUSY, "the token is busy with the user on the device")
        self.in_handler = True
        try:
            return fn(payload)
        except ErrorReply:
            raise
        except Exception as e:  # noqa: BLE001 - every failure becomes a clear ERROR reply
            r = _err(e)
            if r is None:
                raise
            raise r from None
        finally:
            self.in_handler = False
            self.release()

    def release(self):
        """Forget the modules this request loaded (core.release), but not a shown QR's."""
        release(_QR if self.ui is not None and self.ui.qr is not None else ())

    def _idle(self):
        if self.in_handler:
            self.server.keepalive()
        else:
            self.server.serve_once(0)

    def _wait(self, ms):
        if self.ui is not None:
            self.ui.wait(ms)
        else:
            end = self.clock.ticks_ms() + ms
            while self.clock.ticks_diff(end, self.clock.ticks_ms()) > 0:
                self.server.keepalive()
                self.clock.sleep_ms(50)

    def refresh(self):
        if self.ui is not None and not self.busy and self.ui.qr is None:
            self.ui.home(self.wallet.info())

    # ------------------------------------------------------------------------ handlers
    def h_info(self, payload):
        info = self.wallet.info()
        info["firmware"] = VERSION
        info["board"] = self.board
        info["screen"] = [self.ui.d.width, self.ui.d.height] if self.ui else None
        info["pending"] = self.wallet.pending.summary() if self.wallet.pending else None
        gc.collect()
        try:
            info["heap_free"] = gc.mem_free()
        except AttributeError:
            info["heap_free"] = None
        info["heap_peak"] = mem_peak() if mem_peak else None
        return _json(info)

    def h_set_time(self, payload):
        if len(payload) != 4:
            raise ErrorReply(P.ERR_BAD_PAYLOAD, "SET_TIME needs a 4-byte Unix time")
        self.wallet.set_time(int.from_bytes(bytes(payload), "big"))
        return b""

    def _prov_sink(self, total):
        if self.busy:
            raise ErrorReply(P.ERR_BUSY, "the token is busy with the user on the device")
        try:
            return _Sink(self.wallet.stage_sink(total))
        except Exception as e:  # noqa: BLE001
            r = _err(e)
            if r is None:
                raise
            raise r from None

    def h_prov_file(self, sink):
        return sink.finish()

    def h_prov_commit(self, payload):
        if self.ui is not None:
            self.ui.busy("Provisioning", "Checking the bank's bundle...")
        try:
            info = self.wallet.provision(payload)
        finally:
            self.refresh()
        return _json(info)

    def h_allowance(self, payload):
        out = self.wallet.load_allowance(payload)
        self.refresh()
        return _json(out)

    def _ms(self, t0):
        return self.clock.ticks_diff(self.clock.ticks_ms(), t0) if self.clock else 0

    def h_pay_request(self, payload):
        w = self.wallet
        w.pending = None
        if self.ui is not None and self.ui.qr is not None:
            self.ui.busy("Payment request", "Checking...")  # a new request replaces the note
            self.release()
        t0 = self.clock.ticks_ms() if self.clock else 0
        pay = w.prepare(payload)
        self.timing = {"verify_ms": self._ms(t0)}
        self.release()  # the verifier: the signer needs the room
        if self.ui is None:
            w.pending = pay
            return bytes([2]) + _json(pay.summary())
        note = self._pay_on_device(pay)
        return bytes([1]) + note

    def _pay_on_device(self, pay):
        """Confirm, PIN, sign, show. Raises WalletError(CANCELLED) if the user declines."""
        ui = self.ui
        w = self.wallet
        if not ui.confirm_payment(pay.summary()):
            self.refresh()
            raise WalletError(P.ERR_CANCELLED, "payment declined on the device")
        priv = self._ask_pin_loop("PIN to pay")
        ui.busy("Signing", "serial %d" % max(w.counter.next_serial, w.counter.first))
        t0 = self.clock.ticks_ms()
        try:
            note = w.sign(pay, priv)
        finally:
            priv = None
            self.release()  # the signer: the QR encoder needs the room
        t1 = self.clock.ticks_ms()
        self.last_note = note
        view = ui.show_note(note)
        self._timing(
            sign_ms=self.clock.ticks_diff(t1, t0),
            qr_ms=self._ms(t1),
            qr_encode_ms=view.encode_ms,
            frames=view.frames,
            note_bytes=len(note),
        )
        return note

    def _timing(self, **kw):
        t = getattr(self, "timing", None) or {}
        t.update(kw)
        self.timing = t
        gc.collect()
        try:
            t["heap_used"] = gc.mem_alloc()
        except AttributeError:
            pass
        self.log("timing " + json.dumps(t))

    def _ask_pin_loop(self, title):
        ui = self.ui
        ks = self.wallet.ks
        while True:
            pin = ui.ask_pin(title, ks.tries_left())
            if pin is None:
                self.refresh()
                raise WalletError(P.ERR_CANCELLED, "PIN entry cancelled on the device")
            try:
                t0 = self.clock.ticks_ms()
                priv = ks.unlock(pin, self._wait)
                self._timing(unlock_ms=self._ms(t0))
                self.release()
                return priv
            except WrongPin as e:
                ui.message("Wrong PIN", "%d tries left" % e.left, timeout_ms=3000)
            except Wiped:
                self.wallet.boot()
                ui.message("Wiped", "10 wrong PINs: the keys were erased.", timeout_ms=3000)
                self.refresh()
                raise

    def h_pay_confirm(self, payload):
        w = self.wallet
        if self.ui is not None:
            raise ErrorReply(
                P.ERR_STATE, "this token takes the PIN on its own keypad, not over the link"
            )
        pay = w.pending
        if pay is None:
            raise ErrorReply(
                P.ERR_STATE, "no payment is waiting for confirmation (send PAY_REQUEST)"
            )
        pin = bytes(payload).decode()
        t0 = self.clock.ticks_ms()
        try:
            priv = w.ks.unlock(pin, self._wait)
        except Wiped:
            w.pending = None
            w.boot()
            raise
        t1 = self.clock.ticks_ms()
        w.pending = None
        self.release()
        try:
            note = w.sign(pay, priv)
        finally:
            priv = None
            self.release()
        self.last_note = note
        self._timing(
            unlock_ms=self.clock.ticks_diff(t1, t0),
            sign_ms=self._ms(t1),
            frames=0,
            note_bytes=len(note),
        )
        return note

    def h_pay_cancel(self, payload):
        self.wallet.pending = None
        return b""

    def h_note_get(self, payload):
        serial = None
        if len(payload):
            from hubi_core.wire import Reader

            serial = Reader(bytes(payload), "NOTE_GET").varint("serial")
        return self.wallet.note(serial)

    def h_note_list(self, payload):
        return _json(self.wallet.history())

    def h_notice(self, payload):
        out = self.wallet.load_notice(payload)
        if self.ui is not None:
            self.ui.message(
                out["kind"],
                "%s\n%s\nto %s"
                % (out["signer"], fmt.amount(out["amount"], self.wallet.currency), out["payee"]),
                wait=False,
            )
        return _json(out)

    def h_balance(self, payload):
        w = self.wallet
        w._need_ready()
        if self.ui is None:
            priv = w.ks.unlock(bytes(payload).decode(), self._wait)
        else:
            priv = self._ask_pin_loop("PIN for balance")
        try:
            out = w.balance(priv)
        finally:
            priv = None
            gc.collect()
        if self.ui is not None:
            self.ui.message(
                "Balance",
                "%s\nnotice #%d of %s" % (out["balance_text"], out["notice_serial"], out["bank"]),
                wait=False,
            )
        return _json(out)

    def h_change_pin(self, payload):
        w = self.wallet
        w._need_ready()
        if self.ui is None:
            raw = bytes(payload)
            if raw.count(b"\x00") != 1:
                raise ErrorReply(P.ERR_BAD_PAYLOAD, "CHANGE_PIN needs old PIN, 0x00, new PIN")
            old, new = raw.decode().split("\x00")
        else:
            old = self.ui.ask_pin("Current PIN", w.ks.tries_left())
            new = self.ui.ask_pin("New PIN") if old is not None else None
            again = self.ui.ask_pin("New PIN again") if new is not None else None
            if old is None or new is None or new != again:
                self.refresh()
                raise WalletError(P.ERR_CANCELLED, "PIN change cancelled or the new PINs differ")
        try:
            w.ks.change_pin(old, new, self._wait)
        except ValueError as e:
            raise ErrorReply(P.ERR_BAD_PAYLOAD, str(e)) from None
        except Wiped:
            w.boot()
            raise
        self.refresh()
        return b""

    def h_wipe(self, payload):
        w = self.wallet
        if self.ui is not None:
            if not self.ui.confirm(
                "Wipe token?",
                ["Erase the account key,", "history and trust files."],
                screen="confirm",
            ):
                self.refresh()
                raise WalletError(P.ERR_CANCELLED, "wipe declined on the device")
        elif w.provisioned:
            w.ks.unlock(bytes(payload).decode(), self._wait)
        w.wipe()
        self.refresh()
        return b""

    # ------------------------------------------------------------------------ device menu
    def on_event(self, ev):
        ui = self.ui
        if ui.qr is not None:
            if ev in ("ok", "back"):
                ui.qr = None
                self.release()
                self.refresh()
            return
        key = ui.menu_event(ev)
        if key is None:
            return
        self.busy = True
        try:
            self._menu(key)
        except WalletError as e:
            if e.code != P.ERR_CANCELLED:
                ui.message("Refused", str(e))
        except (WrongPin, Wiped) as e:
            ui.message("PIN", str(e))
        except HubiError as e:
            ui.message("Error", str(e))
        finally:
            self.busy = False
            self.release()
        if ui.qr is None:
            self.refresh()

    def _menu(self, key):
        ui = self.ui
        w = self.wallet
        if key == "pay":
            pay = self._typed_payment()
            if pay is not None:
                self._pay_on_device(pay)
        elif key == "last":
            ui.show_note(w.note())
        elif key == "history":
            items = w.history()
            if not items:
                ui.message("History", "no notes yet")
                return
            lines = []
            for h in items[::-1]:
                mark = " R" if h["receipt"] else ""
                lines.append(
                    "#%d %s %s%s" % (h["serial"], fmt.amount(h["amount"]), h["payee"], mark)
                )
            ui.show_lines("History", lines)
        elif key == "balance":
            priv = self._ask_pin_loop("PIN for balance")
            try:
                out = w.balance(priv)
            finally:
                priv = None
            ui.message("Balance", "%s\nnotice #%d" % (out["balance_text"], out["notice_serial"]))
        elif key == "info":
            i = w.info()
            lines = [i["account"] or "not provisioned", "next serial %s" % i["next_serial"]]
            if i["allowance"]:
                lines.append("left %s" % fmt.amount(i["allowance"]["left"], i["currency"]))
            lines.append("PIN tries %s" % i["pin_tries_left"])
            ui.show_lines("Info", lines)
        elif key == "wipe" and ui.confirm(
            "Wipe token?", ["Erase the account key,", "history and trust files."]
        ):
            w.wipe()

    def _typed_payment(self):
        ui = self.ui
        w = self.wallet
        banks = w.bank_ids()
        bank = ui.choose("Payee bank", [(b, b) for b in banks])
        if bank is None:
            return None
        local = ui.enter_text(
            "Payee " + bank + "-",
            "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ._abcdefghijklmnopqrstuvwxyz",
            max_len=31 - len(bank),
        )
        if not local:
            return None
        amount = ui.enter_amount(w.currency)
        if amount is None:
            return None
        return w.prepare_typed(bank + "-" + local, amount)

    # ------------------------------------------------------------------------ main loop
    def run(self, steps=None):
        """Serve the link and the buttons forever (or `steps` loop turns, for tests)."""
        self.refresh()
        n = 0
        ui = self.ui
        while steps is None or n < steps:
            n += 1
            if ui is None:
                self.server.serve_once(1000)
                continue
            self.server.serve_once(ui.poll_ms if ui.qr is None or ui.qr.frames < 2 else 5)
            ev = ui.inp.get(0, ui.screen)
            if ev is not None:
                self.on_event(ev)
            ui.tick()
