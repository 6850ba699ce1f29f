"""The screen boards' flows: payment confirmed and PIN typed on the device, the device menu.

Imported for one request or one button event and released after it (core.token).
"""

from core import fmt
from core.hand import err, timing, wait
from core.keystore import Wiped, WrongPin
from core.wallet import WalletError
from hubi_core.errors import ErrorReply

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# hubi_core.protocol's numbers (tests/test_token_core.py checks them)
_ERR_CANCELLED = const(0x0106)
_ERR_STORAGE = const(0x010B)


def pay_on_device(tok, pay):
    """Confirm, PIN, sign, show. Raises WalletError(CANCELLED) if the user declines."""
    from core.pay import summary

    ui = tok.ui
    w = tok.wallet
    if not ui.confirm_payment(summary(w, pay)):
        tok.refresh()
        raise WalletError(_ERR_CANCELLED, "payment declined on the device")
    priv = ask_pin_loop(tok, "PIN to pay")
    ui.busy("Signing", "serial %d" % max(w.counter.next_serial, w.counter.first))
    clock = tok.clock
    t0 = clock.ticks_ms()
    from core import paysign

    try:
        note = paysign.sign(w, pay, priv)
    finally:
        priv = None
        tok.release()  # the signer: the QR encoder needs the room
    t1 = clock.ticks_ms()
    tok.last_note = note
    view = ui.show_note(note)
    timing(
        tok,
        sign_ms=clock.ticks_diff(t1, t0),
        qr_ms=clock.ticks_diff(clock.ticks_ms(), t1),
        qr_encode_ms=view.encode_ms,
        frames=view.frames,
        note_bytes=len(note),
    )
    return note


def ask_pin_loop(tok, title):
    ui = tok.ui
    w = tok.wallet
    ks = w.ks
    clock = tok.clock
    while True:
        pin = ui.ask_pin(title, ks.tries_left())
        if pin is None:
            tok.refresh()
            raise WalletError(_ERR_CANCELLED, "PIN entry cancelled on the device")
        try:
            t0 = clock.ticks_ms()
            priv = ks.unlock(pin, lambda ms: wait(tok, ms))
            timing(tok, unlock_ms=clock.ticks_diff(clock.ticks_ms(), t0))
            return priv
        except WrongPin as e:
            ui.message("Wrong PIN", "%d tries left" % e.left, timeout_ms=3000)
        except Wiped:
            from core.fault import boot

            boot(w)  # the wallet as its flash is now: blank, or STORAGE if the wipe stopped
            ui.message("Wiped", "10 wrong PINs: the keys were erased.", timeout_ms=3000)
            tok.refresh()
            raise


def on_event(tok, ev):
    ui = tok.ui
    if ui.qr is not None:
        if ev in ("ok", "back"):
            ui.qr = None
            tok.release()
            tok.refresh()
        return
    key = ui.menu_event(ev)
    if key is None:
        return
    tok.busy = True
    try:
        _menu(tok, key)
    except WalletError as e:
        if e.code != _ERR_CANCELLED:  # a wipe the flash stopped (core.wallet) is STORAGE
            ui.message("Storage error" if e.code == _ERR_STORAGE else "Refused", str(e))
    except (WrongPin, Wiped) as e:
        ui.message("PIN", str(e))
    except ErrorReply as e:  # core.fault.gate: the storage fault, said as the link says it
        ui.message("Storage error" if e.code == _ERR_STORAGE else "Error", e.text)
    except Exception as e:  # noqa: BLE001 - the flash, a bug: never the end of the token
        r = err(e)
        ui.message("Error", r.text if r is not None else "%s: %s" % (e.__class__.__name__, e))
    finally:
        tok.busy = False
        tok.release()
    if ui.qr is None:
        tok.refresh()


def _menu(tok, key):
    ui = tok.ui
    w = tok.wallet
    if w.fault is not None:  # boots again, or says why it cannot (a wipe may go on: gate)
        from core.fault import gate

        gate(w, key == "wipe")
    if key == "pay":
        pay = _typed_payment(tok)
        if pay is not None:
            tok.release()
            pay_on_device(tok, pay)
    elif key == "last":
        from core import notes

        ui.show_note(notes.note(w))
    elif key == "history":
        from core import notes

        items = notes.history(w)
        if not items:
            ui.message("History", "no notes yet")
            return
        lines = []
        for h in items[::-1]:
            mark = " R" if h["receipt"] else ""
            lines.append("#%d %s %s%s" % (h["serial"], fmt.amount(h["amount"]), h["payee"], mark))
        ui.show_lines("History", lines)
    elif key == "balance":
        from core import notes

        if not w.storage.exists(notes.BAL):  # nothing to open: the PIN is not asked for
            ui.message("Balance", "no balance notice loaded")
            return
        priv = ask_pin_loop(tok, "PIN for balance")
        try:
            out = notes.balance(w, priv)
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
    elif key == "wipe" and confirm_wipe(tok):
        w.wipe()


def confirm_wipe(tok):
    """Confirm, then the PIN, as a headless token asks it: UP OK OK from the home menu (Wipe
    is one UP away) erased the account key and the notes without it."""
    if not tok.ui.confirm("Wipe token?", ["Erase the account key,", "history and trust files."]):
        return False
    if tok.wallet.ks.provisioned:  # the keystore's: in a storage fault the wallet says blank
        ask_pin_loop(tok, "PIN to wipe")  # the key itself is not needed: dropped at once
    return True


def _typed_payment(tok):
    from core import pay

    ui = tok.ui
    w = tok.wallet
    from core.trust import bank_ids

    banks = bank_ids(w)
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
    return pay.prepare_typed(w, bank + "-" + local, amount)
