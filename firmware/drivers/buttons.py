"""Buttons on GPIO pins: UP, DOWN, OK (a long press of OK is BACK). Active low.

Polled, debounced (an edge counts after ``debounce_ms`` of a stable level); OK fires on release
(short press) or once when held for ``long_ms`` (BACK). Pins are objects with ``value()``
(machine.Pin, or fakes in tests).
"""

from hal.ui import BACK, DOWN, OK, UP, Input, ticks_diff, ticks_ms

try:
    from time import sleep_ms
except ImportError:  # CPython (tests)
    from time import sleep as _s

    def sleep_ms(ms):
        _s(ms / 1000)


class Buttons(Input):
    def __init__(self, up, down, ok, debounce_ms=25, long_ms=800, active_low=True):
        self.pins = ((up, UP), (down, DOWN), (ok, OK))
        self.debounce_ms = debounce_ms
        self.long_ms = long_ms
        self.active = 0 if active_low else 1
        self.state = [False, False, False]
        self.since = [0, 0, 0]
        self.ok_down = None
        self.ok_long = False

    def _pressed(self, i):
        return self.pins[i][0].value() == self.active

    def _scan(self):
        now = ticks_ms()
        for i in range(3):
            p = self._pressed(i)
            if p != self.state[i]:
                if ticks_diff(now, self.since[i]) < self.debounce_ms:
                    continue
                self.state[i] = p
                self.since[i] = now
                name = self.pins[i][1]
                if name == OK:
                    if p:
                        self.ok_down = now
                        self.ok_long = False
                    else:
                        self.ok_down = None
                        if not self.ok_long:
                            return OK
                elif p:
                    return name
        if (
            self.ok_down is not None
            and not self.ok_long
            and ticks_diff(now, self.ok_down) >= self.long_ms
        ):
            self.ok_long = True
            return BACK
        return None

    def get(self, timeout_ms=0, screen=None):
        start = ticks_ms()
        while True:
            ev = self._scan()
            if ev is not None:
                return ev
            if ticks_diff(ticks_ms(), start) >= timeout_ms:
                return None
            sleep_ms(5)

    def held(self, name=OK):
        """True if the button is down right now (maintenance mode check at boot)."""
        for i, (_, n) in enumerate(self.pins):
            if n == name:
                return self._pressed(i)
        return False
