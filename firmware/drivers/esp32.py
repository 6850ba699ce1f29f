"""ESP32 services shared by the boards: flash storage, RTC clock, the USB/UART link.

Storage: the internal flash's littlefs (MicroPython's default on ESP32), folder /hubi.
littlefs renames atomically and is power-loss resilient; with flash encryption enabled
(hardware/flash-encryption.md) its blocks are encrypted with the eFuse key.
Clock: machine.RTC keeps time across soft resets and deep sleep, not across power loss; the
host sets it on every connection (SET_TIME) and the wallet never lets it run backwards.
Link: the USB-UART bridge (or USB-CDC) that also carries the REPL: sys.stdin/stdout buffers,
with Ctrl-C disabled so 0x03 is data.
"""

import time

from hal import Clock
from hal.storage import FsStorage

# MicroPython ports before v1.22 count from 2000-01-01 on the ESP32
_EPOCH_SHIFT = 946684800 if time.gmtime(0)[0] == 2000 else 0


def default_storage(root="/hubi"):
    return FsStorage(root)


class Esp32Clock(Clock):
    def __init__(self):
        Clock.__init__(self)

    def _raw(self):
        return int(time.time()) + _EPOCH_SHIFT

    def set_time(self, t):
        import machine

        tm = time.gmtime(int(t) - _EPOCH_SHIFT)
        machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0))
        self._offset = 0


def usb_link():
    import sys

    import micropython

    from hubi_core.link import StreamTransport

    micropython.kbd_intr(-1)  # 0x03 on the link is data, not Ctrl-C
    return StreamTransport(sys.stdin.buffer, sys.stdout.buffer)
