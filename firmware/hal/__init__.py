"""Hardware abstraction: one small interface per device function (DESIGN section 7).

``core`` and ``ui`` talk to the device only through these contracts; a board module
(``boards/``) builds concrete drivers (``drivers/``) and hands them over. Nothing here touches
``machine``: every class is importable on the MicroPython unix port and on CPython.

    Display  (hal.ui) width, height, fill(c), fill_rect(x, y, w, h, c), text(s, x, y, c,
             scale), show()                colours: BLACK / WHITE / ACCENT (driver maps them)
    Input    (hal.ui) get(timeout_ms, screen) -> event name or None
             events: "up", "down", "ok", "back", "0".."9"
    Storage  see hal.storage (files with atomic replace)
    Link     a transport for hubi_core.link: write(data), readinto(buf, timeout_ms)
    Clock    time() (Unix seconds), ticks_ms(), sleep_ms(ms), set_time(t), is_set()
    Rng      bytes(n) (os.urandom on every port; the ESP32's is the hardware RNG)
"""

try:
    from time import sleep_ms as _sleep_ms
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython
    import time as _t

    def ticks_ms():
        return int(_t.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

    def _sleep_ms(ms):
        _t.sleep(ms / 1000)


class Clock:
    """Wall clock (set by the host over the link; the ESP32 RTC keeps it across resets)."""

    EPOCH_OK = 1577836800  # 2020-01-01: earlier readings mean "never set"

    def __init__(self):
        self._offset = 0

    def _raw(self):
        import time

        return int(time.time())

    def time(self):
        return self._raw() + self._offset

    def set_time(self, t):
        self._offset = int(t) - self._raw()

    def is_set(self):
        return self.time() >= self.EPOCH_OK

    def ticks_ms(self):
        return ticks_ms()

    def ticks_diff(self, a, b):
        return ticks_diff(a, b)

    def sleep_ms(self, ms):
        _sleep_ms(ms)


class Rng:
    """Random bytes for keys and nonces."""

    def bytes(self, n):
        import os

        return os.urandom(n)
