"""A Display over a MicroPython framebuf (1 bit per pixel: 7.2 KB for 240 x 240).

Used by the simulator (which saves the buffer as PNG) and usable for any monochrome panel.
Logical colours: WHITE -> 1, BLACK and ACCENT -> 0. Text at scale > 1 is drawn from the
built-in 8 x 8 font one glyph at a time through an 8-byte glyph buffer.
"""

import framebuf
from hal.ui import WHITE, Display


class FbDisplay(Display):
    def __init__(self, width, height):
        self.width = width
        self.height = height
        self.stride = (width + 7) // 8 * 8
        self.buf = bytearray(self.stride // 8 * height)
        self.fb = framebuf.FrameBuffer(self.buf, width, height, framebuf.MONO_HLSB, self.stride)
        self._gbuf = bytearray(8)
        self._glyph = framebuf.FrameBuffer(self._gbuf, 8, 8, framebuf.MONO_HLSB)

    @staticmethod
    def colour(c):
        return 1 if c == WHITE or c == 0xFFFF else 0

    def fill(self, c):
        self.fb.fill(self.colour(c))

    def fill_rect(self, x, y, w, h, c):
        self.fb.fill_rect(x, y, w, h, self.colour(c))

    def text(self, s, x, y, c=0, scale=1):
        col = self.colour(c)
        if scale == 1:
            self.fb.text(s, x, y, col)
            return
        g = self._glyph
        fr = self.fb.fill_rect
        for ch in s:
            g.fill(0)
            g.text(ch, 0, 0, 1)
            for gy in range(8):
                row = self._gbuf[gy]
                if not row:
                    continue
                gx = 0
                while gx < 8:
                    if row & (0x80 >> gx):
                        run = gx
                        while gx < 8 and row & (0x80 >> gx):
                            gx += 1
                        fr(x + run * scale, y + gy * scale, (gx - run) * scale, scale, col)
                    else:
                        gx += 1
            x += 8 * scale

    def pixel(self, x, y):
        return self.fb.pixel(x, y)
