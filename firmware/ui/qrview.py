"""The note on screen: one QR code, or an animated loop of multi-part frames.

Rule (issue 3, docs/token.md): a note is shown as ONE QR code if the smallest version that
holds it fits the screen's short side at >= ``min_px`` pixels per module with the 4-module
quiet zone on every side (``min_px`` is a board setting, 2 by default; boards with tiny pixels
raise it). Otherwise it becomes a loop of hubi_core.qrparts frames, each <= version 7, planned
by ``qrparts.plan`` (3 px per module first, then 2). All frames are encoded once (a version-7
symbol is 270 bytes of bits) and redrawn in turn every ``frame_ms``.
"""

from hal.ui import BLACK, WHITE, ticks_diff, ticks_ms

from hubi_core import qr, qrparts

QUIET = 4


def plan(nbytes, width, height, level="M", min_px=2, max_frame_version=7):
    """qrparts.Plan for a note of nbytes on a width x height screen (see the module rule)."""
    side = min(width, height)
    v = qr.min_version(nbytes, level)
    if v is not None:
        n = qr.size_of(v) + 2 * QUIET
        if n * min_px <= side:
            return qrparts.Plan(True, v, side // n, 1, 0, level)
    return qrparts.plan(nbytes, side, level, max_frame_version)


class QrView:
    """Encodes the frames of one object and draws them; ``tick()`` advances the animation."""

    def __init__(self, display, data, level="M", min_px=2, frame_ms=400, caption=True):
        self.display = display
        self.data = bytes(data)
        self.plan = plan(len(self.data), display.width, display.height, level, min_px)
        if self.plan.single:
            payloads = [self.data]
        else:
            payloads = qrparts.split(self.data, self.plan.version, level, self.plan.parity_parts)
        self.codes = []
        t0 = ticks_ms()
        for p in payloads:
            self.codes.append(qr.encode(p, level, self.plan.version))
        self.encode_ms = ticks_diff(ticks_ms(), t0)
        self.frame_ms = frame_ms
        self.caption = caption
        self.index = -1
        self.last = 0
        self.shown = 0  # frames drawn so far

    @property
    def frames(self):
        return len(self.codes)

    def draw(self, i):
        d = self.display
        code = self.codes[i]
        scale = self.plan.scale
        side = (code.size + 2 * QUIET) * scale
        x = (d.width - side) // 2
        y = (d.height - side) // 2
        spare = d.height - side
        if self.caption and len(self.codes) > 1 and spare >= 12:
            y = spare // 2 - 5 if spare // 2 >= 5 else 0
        d.fill(WHITE)
        qr.draw(code, d, x, y, scale, QUIET, BLACK, WHITE)
        if self.caption and len(self.codes) > 1 and spare >= 12:
            label = "%d/%d" % (i + 1, len(self.codes))
            d.text(label, (d.width - d.text_width(label)) // 2, y + side + 2, BLACK)
        d.show()
        self.index = i
        self.shown += 1

    def start(self, now_ms):
        self.draw(0)
        self.last = now_ms

    def tick(self, now_ms, diff):
        """Advance to the next frame when frame_ms has passed; True if a frame was drawn."""
        if len(self.codes) < 2:
            return False
        if diff(now_ms, self.last) < self.frame_ms:
            return False
        self.last = now_ms
        self.draw((self.index + 1) % len(self.codes))
        return True
