"""Screens of a token with a display and buttons. They call the HAL only (Display, Input, Clock).

Three buttons (UP, DOWN, OK; a long press of OK is BACK) drive everything; digit events from a
keypad (or the simulator's keyboard) are accepted where digits are asked for. Modal screens
(confirm_payment, ask_pin, ...) poll the input and call ``self.idle()`` between polls: the
token keeps its link alive from there (core.token).

Every screen that waits for input names itself (``screen=``), so a scripted input can target
it: "confirm", "pin", "menu", "message", "qr", "text", "amount", "home", "wait".
"""

from core import fmt
from hal.ui import ACCENT, BACK, BLACK, DOWN, OK, UP, WHITE

PIN_WHEEL = "0123456789<#"  # '<' deletes the last digit, '#' finishes
TEXT_DEL = "<"
TEXT_END = "#"


class Ui:
    def __init__(self, display, inp, clock, settings=None):
        self.d = display
        self.inp = inp
        self.clock = clock
        s = settings or {}
        self.level = s.get("qr_level", "M")
        self.min_px = s.get("qr_min_px", 2)
        self.frame_ms = s.get("qr_frame_ms", 400)
        self.poll_ms = s.get("poll_ms", 20)
        self.big = 2 if display.width >= 200 else 1
        self.cols = display.width // (8 * self.big)
        self.idle = lambda: None
        self.qr = None
        self.screen = "home"
        self.menu_items = []
        self.menu_pos = 0

    # ------------------------------------------------------------------------ basics
    def event(self, screen, timeout_ms=None):
        """Wait for an input event for `screen` (None: forever), keeping the link alive."""
        self.screen = screen
        start = self.clock.ticks_ms()
        while True:
            ev = self.inp.get(self.poll_ms, screen)
            if ev is not None:
                return ev
            self.idle()
            if self.qr is not None:
                self.qr.tick(self.clock.ticks_ms(), self.clock.ticks_diff)
            if (
                timeout_ms is not None
                and self.clock.ticks_diff(self.clock.ticks_ms(), start) >= timeout_ms
            ):
                return None

    def _title(self, text):
        d = self.d
        h = 8 * self.big + 6
        d.fill(WHITE)
        d.fill_rect(0, 0, d.width, h, BLACK)
        d.text(text[: self.cols], 3, 3, WHITE, self.big)
        return h + 4

    def _lines(self, lines, y, scale=None, colour=BLACK):
        scale = scale or self.big
        cols = self.d.width // (8 * scale)
        lh = 8 * scale + 3
        for line in lines:
            for part in fmt.wrap(line, cols):
                if y + lh > self.d.height:
                    return y
                self.d.text(part, 2, y, colour, scale)
                y += lh
        return y

    def _footer(self, text):
        d = self.d
        y = d.height - 10
        d.fill_rect(0, y - 2, d.width, 12, WHITE)
        d.text(text[: d.width // 8], 2, y, ACCENT)

    # ------------------------------------------------------------------------ screens
    def message(self, title, text, wait=True, timeout_ms=None):
        self.qr = None
        y = self._title(title)
        self._lines(fmt.wrap(text, self.cols), y)
        if wait:
            self._footer("OK: continue")
        self.d.show()
        if wait:
            while True:
                ev = self.event("message", timeout_ms)
                if ev in (OK, BACK, None):
                    return

    def busy(self, title, text=""):
        self.qr = None
        y = self._title(title)
        if text:
            self._lines([text], y)
        self.d.show()

    def confirm(self, title, lines, yes="OK: confirm", no="BACK: cancel", screen="confirm"):
        self.qr = None
        y = self._title(title)
        self._lines(lines, y)
        self._footer(yes + "  " + no)
        self.d.show()
        while True:
            ev = self.event(screen)
            if ev == OK:
                return True
            if ev == BACK:
                return False

    def confirm_payment(self, summary, currency=""):
        lines = ["Pay", summary["amount_text"], "to", summary["payee"]]
        if summary.get("purpose"):
            lines += ["for", summary["purpose"]]
        if summary.get("kind") == "typed":
            lines.append("(typed on device)")
        return self.confirm("Confirm payment", lines)

    def ask_pin(self, title="Enter PIN", tries_left=None):
        """PIN entry on a digit wheel (UP/DOWN change, OK takes); digit keys type directly.
        Returns the PIN string, or None if cancelled."""
        self.qr = None
        pin = ""
        pos = 0
        while True:
            self._draw_pin(title, pin, PIN_WHEEL[pos], tries_left)
            ev = self.event("pin")
            if ev == UP:
                pos = (pos + 1) % len(PIN_WHEEL)
            elif ev == DOWN:
                pos = (pos - 1) % len(PIN_WHEEL)
            elif ev == BACK:
                if not pin:
                    return None
                pin = pin[:-1]
            elif ev is not None and len(ev) == 1 and ev in "0123456789":
                if len(pin) < 8:
                    pin += ev
            elif ev == OK:
                ch = PIN_WHEEL[pos]
                if ch == "#":
                    if len(pin) >= 4:
                        return pin
                elif ch == "<":
                    pin = pin[:-1]
                elif len(pin) < 8:
                    pin += ch
                pos = 0
            elif ev == "enter" and len(pin) >= 4:
                return pin

    def _draw_pin(self, title, pin, wheel, tries_left):
        d = self.d
        y = self._title(title)
        if tries_left is not None:
            y = self._lines(["%d tries left" % tries_left], y, 1)
        y += 4
        d.text(("*" * len(pin)) or "-", 4, y, BLACK, self.big)
        y += 8 * self.big + 10
        s = 4 if d.width >= 200 else 2
        label = {"<": "DEL", "#": "OK"}.get(wheel, wheel)
        w = d.text_width(label, s)
        d.fill_rect((d.width - w) // 2 - 6, y - 4, w + 12, 8 * s + 8, BLACK)
        d.text(label, (d.width - w) // 2, y, WHITE, s)
        self._footer("UP/DOWN digit  OK take")
        d.show()

    def wait(self, ms, why="Wrong PIN before: wait"):
        """Back-off countdown; keeps the link alive."""
        end = self.clock.ticks_ms() + ms
        last = -1
        while True:
            left = self.clock.ticks_diff(end, self.clock.ticks_ms())
            if left <= 0:
                return
            secs = (left + 999) // 1000
            if secs != last:
                last = secs
                self.busy("Please wait", "%s %d s" % (why, secs))
            self.screen = "wait"
            self.idle()
            self.clock.sleep_ms(min(left, self.poll_ms))

    # ------------------------------------------------------------------------ QR
    def show_note(self, raw, title=None):
        """Start showing raw as QR (single or animated); returns the QrView (tick animates)."""
        from ui.qrview import QrView  # loaded while a note is shown (core.token releases it)

        self.qr = None
        self.qr = QrView(self.d, raw, self.level, self.min_px, self.frame_ms)
        self.qr.start(self.clock.ticks_ms())
        self.screen = "qr"
        return self.qr

    def tick(self):
        if self.qr is not None:
            self.qr.tick(self.clock.ticks_ms(), self.clock.ticks_diff)

    # ------------------------------------------------------------------------ menus
    def menu(self, title, items, pos=0):
        """Draw a menu (non-blocking); home_event() moves in it."""
        self.qr = None
        self.menu_title = title
        self.menu_items = items
        self.menu_pos = pos
        self._draw_menu()

    def _draw_menu(self):
        d = self.d
        y = self._title(self.menu_title)
        lh = 8 * self.big + 6
        for i, (label, _) in enumerate(self.menu_items):
            if y + lh > d.height - 12:
                break
            if i == self.menu_pos:
                d.fill_rect(0, y - 2, d.width, lh, BLACK)
                d.text(label[: self.cols], 4, y, WHITE, self.big)
            else:
                d.text(label[: self.cols], 4, y, BLACK, self.big)
            y += lh
        self._footer("UP/DOWN move  OK select")
        d.show()
        self.screen = "menu"

    def menu_event(self, ev):
        """Apply ev to the shown menu; returns the chosen item's key on OK, else None."""
        if not self.menu_items:
            return None
        if ev == UP:
            self.menu_pos = (self.menu_pos - 1) % len(self.menu_items)
            self._draw_menu()
        elif ev == DOWN:
            self.menu_pos = (self.menu_pos + 1) % len(self.menu_items)
            self._draw_menu()
        elif ev == OK:
            return self.menu_items[self.menu_pos][1]
        return None

    def choose(self, title, items):
        """Blocking menu: the chosen key, or None on BACK."""
        self.menu(title, items)
        while True:
            ev = self.event("menu")
            if ev == BACK:
                return None
            k = self.menu_event(ev)
            if k is not None:
                return k

    # ------------------------------------------------------------------------ entry
    def enter_text(self, title, charset, prefix="", max_len=32, screen="text"):
        """Character wheel: UP/DOWN pick, OK takes; '<' deletes, '#' finishes."""
        wheel = charset + TEXT_DEL + TEXT_END
        text = prefix
        pos = 0
        while True:
            y = self._title(title)
            y = self._lines([text + "_"], y)
            ch = wheel[pos]
            label = {"<": "DEL", "#": "DONE"}.get(ch, ch)
            s = 3 if self.d.width >= 200 else 2
            w = self.d.text_width(label, s)
            self.d.fill_rect((self.d.width - w) // 2 - 6, y + 6, w + 12, 8 * s + 8, BLACK)
            self.d.text(label, (self.d.width - w) // 2, y + 10, WHITE, s)
            self._footer("UP/DOWN char  OK take")
            self.d.show()
            ev = self.event(screen)
            if ev == UP:
                pos = (pos + 1) % len(wheel)
            elif ev == DOWN:
                pos = (pos - 1) % len(wheel)
            elif ev == BACK:
                return None
            elif ev == OK:
                if ch == TEXT_END:
                    return text
                if ch == TEXT_DEL:
                    if len(text) > len(prefix):
                        text = text[:-1]
                elif len(text) < max_len:
                    text += ch
                pos = 0
            elif ev is not None and len(ev) == 1 and ev in charset and len(text) < max_len:
                text += ev
            elif ev == "enter":
                return text

    def enter_amount(self, currency):
        while True:
            t = self.enter_text("Amount " + currency, "0123456789.", screen="amount", max_len=12)
            if t is None:
                return None
            try:
                v = fmt.parse_amount(t)
            except ValueError as e:
                self.message("Amount", str(e))
                continue
            if v > 0:
                return v

    # ------------------------------------------------------------------------ info
    def show_lines(self, title, lines):
        self.message(title, "\n".join(lines))

    def home(self, info):
        """The idle screen: account, allowance left, and the main menu."""
        items = []
        if info.get("state") == "ready":
            items = [
                ("Pay", "pay"),
                ("Last note", "last"),
                ("History", "history"),
                ("Balance", "balance"),
                ("Info", "info"),
                ("Wipe", "wipe"),
            ]
            al = info.get("allowance")
            left = fmt.amount(al["left"], info.get("currency", "")) if al else "no allowance"
            title = info.get("account") or "hubi"
            self.menu(title[-self.cols :], items)
            self._footer(("left " + left)[: self.d.width // 8])
            self.d.show()
        else:
            items = [("Info", "info")]
            self.menu("hubi token", items)
            if info.get("fault"):  # core.wallet: a state file the token cannot use
                self.busy("Storage error", "The token cannot use its files. Connect it.")
                # its owner may still wipe it, with the PIN (core.fault.gate)
                items = [("Info", "info"), ("Wipe", "wipe")]
                self._footer("DOWN OK: wipe")
                self.d.show()
            else:
                self.busy("hubi token", "Not provisioned. Connect to the bank to load an account.")
            self.menu_items = items
            self.menu_pos = 0
        self.screen = "home"
