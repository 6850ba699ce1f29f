"""The token application's resident part: the link dispatcher and the main loop.

``Token(wallet, server, ui, clock)``: ``ui`` is a ui.screens.Ui for boards with a screen and
buttons, or None for the headless (smart-card class) profile. With a screen the user confirms
and types the PIN on the device while the host waits (the handler sends WAIT frames); headless,
PAY_REQUEST answers with the summary and the host sends the PIN in PAY_CONFIRM.

Payment, in order (DESIGN section 2 link 2):
  request -> wallet.prepare (offline verification, expiry, allowance) -> confirm -> PIN ->
  keystore.unlock (attempt counted first) -> wallet.sign (serial and allowance persisted,
  then signed) -> QR on the screen -> reply with the note.

Only the dispatcher stays in the heap: the handlers (core.hand for a payment, core.handx for
the rest) and the screen flows (core.tui)
are imported for one request or one button event and released after it (core/__init__.py).
"""

from core import release

# the requests core.hand serves (one dispatcher: a closure per type would cost heap);
# PROVISION_FILE (0x22) streams to flash and is registered apart
_TYPES = b"\x20\x21\x23\x24\x28\x29\x2a\x2b\x2c\x30\x31\x38\x39"
# what a note on screen needs between requests (the animation redraws its frames)
_QR = ("ui.qrview", "hubi_core.qr", "hubi_core.qrparts")


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
        self.timing = None
        server.handle_all(_TYPES, self._dispatch)
        server.handle(0x22, self._prov_file, sink=self._prov_sink)
        if ui is not None:
            ui.idle = self._idle

    def _dispatch(self, t, payload):
        if not self.in_handler:  # inside one, its flow still runs the modules it loaded
            self.release()  # what the link loaded since the last request (HELLO, bulk transfers)
        from core import hand

        return hand.dispatch(self, t, payload)

    def _prov_sink(self, total):
        from core import handx

        return handx.prov_sink(self, total)

    def _prov_file(self, sink):
        from core import hand, handx

        return hand.run(self, handx.h_prov_file, sink)

    def release(self):
        """Forget the modules this request loaded (core.release), but not a shown QR's."""
        release(_QR if self.ui is not None and self.ui.qr is not None else ())

    def _idle(self):
        was = self.busy
        if self.in_handler:
            # a request's flow waits for the owner: its host is kept waiting, and another
            # host (the first one died) gets HELLO and GET_INFO answered, BUSY for the rest
            self.server.keepalive()
            self.busy = True
        try:
            self.server.serve_once(0)
        finally:
            self.busy = was

    def refresh(self):
        if self.ui is not None and not self.busy and self.ui.qr is None:
            self.ui.home(self.wallet.info())

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
                from core import tui

                tui.on_event(self, ev)
            ui.tick()
