"""SPI TFT panels with the MIPI-DCS command set: ST7789 (240 x 240), ILI9341 / ILI9342 (320 x 240).

The driver draws straight to the panel's memory: no frame buffer (a 320 x 240 RGB565 frame is
150 KB, more than the heap). fill_rect sets a window (CASET/RASET) and streams one colour from
a 512-byte line buffer; text renders each glyph of the built-in 8 x 8 font, scaled, into a
small RGB565 cell buffer and writes it in one window. QR codes arrive as fill_rect runs
(hubi_core.qr.draw), so a version-15 note at 2 px per module is a few hundred transfers.

``spi``, ``dc``, ``cs`` (may be None), ``rst`` (may be None) and ``bl`` (backlight, may be None)
are objects with the machine.SPI / machine.Pin interface; boards build them, tests pass fakes
that record the bus (tests/test_firmware_panel.py).
"""

import framebuf
from hal.ui import ACCENT, BLACK, WHITE, Display

try:
    from time import sleep_ms
except ImportError:  # CPython (tests)
    from time import sleep as _s

    def sleep_ms(ms):
        _s(ms / 1000)


SWRESET = 0x01
SLPOUT = 0x11
NORON = 0x13
INVOFF = 0x20
INVON = 0x21
DISPON = 0x29
CASET = 0x2A
RASET = 0x2B
RAMWR = 0x2C
MADCTL = 0x36
COLMOD = 0x3A

# colours as RGB565 big-endian (the byte order the panels take)
RGB = {BLACK: 0x0000, WHITE: 0xFFFF, ACCENT: 0x041F}

# (command, data, delay ms) per controller
INIT = {
    "st7789": (
        (SWRESET, b"", 150),
        (SLPOUT, b"", 120),
        (COLMOD, b"\x55", 10),  # 16 bits per pixel
        (MADCTL, b"\x00", 0),
        (INVON, b"", 10),  # the common 240x240 IPS modules need inversion on
        (NORON, b"", 10),
        (DISPON, b"", 50),
    ),
    "ili9341": (
        (SWRESET, b"", 150),
        (0xCF, b"\x00\xc1\x30", 0),  # power control B
        (0xED, b"\x64\x03\x12\x81", 0),  # power on sequence
        (0xE8, b"\x85\x00\x78", 0),  # driver timing A
        (0xCB, b"\x39\x2c\x00\x34\x02", 0),  # power control A
        (0xF7, b"\x20", 0),  # pump ratio
        (0xEA, b"\x00\x00", 0),  # driver timing B
        (0xC0, b"\x23", 0),  # power control 1
        (0xC1, b"\x10", 0),  # power control 2
        (0xC5, b"\x3e\x28", 0),  # VCOM 1
        (0xC7, b"\x86", 0),  # VCOM 2
        (MADCTL, b"\x48", 0),  # column order BGR, portrait
        (COLMOD, b"\x55", 0),
        (0xB1, b"\x00\x18", 0),  # frame rate
        (0xB6, b"\x08\x82\x27", 0),  # display function
        (SLPOUT, b"", 120),
        (DISPON, b"", 50),
    ),
}
INIT["ili9342"] = (
    INIT["ili9341"][:11] + ((MADCTL, b"\x08", 0),) + INIT["ili9341"][12:] + ((INVON, b"", 10),)
)


class Panel(Display):
    def __init__(
        self,
        spi,
        dc,
        cs,
        rst,
        width,
        height,
        controller="st7789",
        x_off=0,
        y_off=0,
        bl=None,
        madctl=None,
    ):
        if controller not in INIT:
            raise ValueError("unknown panel controller %r" % controller)
        self.spi = spi
        self.dc = dc
        self.cs = cs
        self.rst = rst
        self.bl = bl
        self.width = width
        self.height = height
        self.controller = controller
        self.x_off = x_off
        self.y_off = y_off
        self.madctl = madctl
        self._line = bytearray(512)
        self._line_colour = -1
        self._cmd = bytearray(1)
        self._win = bytearray(4)
        self._cell = bytearray(8 * 4 * 8 * 4 * 2)  # one glyph at scale 4, RGB565
        self._gbuf = bytearray(8)
        self._glyph = framebuf.FrameBuffer(self._gbuf, 8, 8, framebuf.MONO_HLSB)
        self.init()

    # ----------------------------------------------------------------------- bus
    def _select(self, on):
        if self.cs is not None:
            self.cs.value(0 if on else 1)

    def command(self, cmd, data=b""):
        self._select(True)
        self.dc.value(0)
        self._cmd[0] = cmd
        self.spi.write(self._cmd)
        if data:
            self.dc.value(1)
            self.spi.write(data)
        self._select(False)

    def init(self):
        if self.rst is not None:
            self.rst.value(1)
            sleep_ms(5)
            self.rst.value(0)
            sleep_ms(20)
            self.rst.value(1)
            sleep_ms(150)
        for cmd, data, delay in INIT[self.controller]:
            if cmd == MADCTL and self.madctl is not None:
                data = bytes([self.madctl])
            self.command(cmd, data)
            if delay:
                sleep_ms(delay)
        if self.bl is not None:
            self.bl.value(1)

    def window(self, x, y, w, h):
        x0 = x + self.x_off
        y0 = y + self.y_off
        b = self._win
        b[0] = x0 >> 8
        b[1] = x0 & 0xFF
        b[2] = (x0 + w - 1) >> 8
        b[3] = (x0 + w - 1) & 0xFF
        self.command(CASET, b)
        b[0] = y0 >> 8
        b[1] = y0 & 0xFF
        b[2] = (y0 + h - 1) >> 8
        b[3] = (y0 + h - 1) & 0xFF
        self.command(RASET, b)

    # ----------------------------------------------------------------------- drawing
    def fill_rect(self, x, y, w, h, c):
        if x < 0:
            w += x
            x = 0
        if y < 0:
            h += y
            y = 0
        if x + w > self.width:
            w = self.width - x
        if y + h > self.height:
            h = self.height - y
        if w <= 0 or h <= 0:
            return
        v = RGB.get(c, c)
        line = self._line
        if v != self._line_colour:  # refill the 512-byte line only when the colour changes
            hi = v >> 8
            lo = v & 0xFF
            for i in range(0, len(line), 2):
                line[i] = hi
                line[i + 1] = lo
            self._line_colour = v
        self.window(x, y, w, h)
        self._select(True)
        self.dc.value(0)
        self._cmd[0] = RAMWR
        self.spi.write(self._cmd)
        self.dc.value(1)
        left = w * h * 2
        mv = memoryview(line)
        while left > 0:
            k = left if left < len(line) else len(line)
            self.spi.write(mv[:k])
            left -= k
        self._select(False)

    def text(self, s, x, y, c=BLACK, scale=1):
        if scale > 4:
            scale = 4
        fg = RGB.get(c, c)
        bg = RGB[WHITE] if c != WHITE else RGB[BLACK]
        cw = 8 * scale
        n = cw * cw * 2
        cell = self._cell
        mv = memoryview(cell)
        for ch in s:
            if x + cw > self.width:
                break
            self._glyph.fill(0)
            self._glyph.text(ch, 0, 0, 1)
            o = 0
            for gy in range(8):
                row = self._gbuf[gy]
                for _ in range(scale):
                    for gx in range(8):
                        v = fg if row & (0x80 >> gx) else bg
                        for _ in range(scale):
                            cell[o] = v >> 8
                            cell[o + 1] = v & 0xFF
                            o += 2
            self.window(x, y, cw, cw)
            self.command(RAMWR, mv[:n])
            x += cw
