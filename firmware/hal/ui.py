"""The screen and buttons contracts (hal): only boards with a screen import them."""

from hal import ticks_diff, ticks_ms  # noqa: F401 - the drivers' clock helpers

BLACK = 0
WHITE = 1
ACCENT = 2

UP = "up"
DOWN = "down"
OK = "ok"
BACK = "back"
DIGITS = "0123456789"
EVENTS = (UP, DOWN, OK, BACK) + tuple(DIGITS)


class Display:
    """A screen. Coordinates in pixels, (0, 0) top left. A driver provides the two primitives,
    ``fill_rect(x, y, w, h, c)`` and ``text(s, x, y, c=BLACK, scale=1)`` (drivers.fbdisplay
    over a framebuf, drivers.panel on SPI panels); the rest is built on them."""

    width = 0
    height = 0
    font = 8  # the built-in framebuf font is 8 x 8 pixels

    def fill(self, c):
        self.fill_rect(0, 0, self.width, self.height, c)

    def show(self):
        """Make what was drawn visible (a no-op on displays that draw directly)."""

    def text_width(self, s, scale=1):
        return len(s) * self.font * scale


class Input:
    """Buttons, keys or a script. A driver provides ``get(timeout_ms=0, screen=None)``: the
    next event in ``EVENTS``, or None after `timeout_ms`; ``screen`` names the screen asking
    (scripts may match it). drivers.buttons on a board, drivers.sim.input in the simulator."""
