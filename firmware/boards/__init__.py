"""Boards: one module per board wires HAL drivers to pins (DESIGN section 7).

Every board module has ``NAME``, ``SETTINGS`` (screen size, QR level and minimum module size,
KDF cost, PIN back-off, ...; importable anywhere, no ``machine``) and ``make(config)`` which
builds the drivers and returns a ``Board``. The simulator emulates a board's SETTINGS with its
own drivers (boards.sim).
"""

BOARDS = ("esp32_st7789_240", "m5stack_core", "headless", "sim")

DEFAULTS = {
    "width": None,  # None: no screen (headless)
    "height": None,
    "qr_level": "M",
    "qr_min_px": 2,
    "qr_frame_ms": 400,
    "kdf_iterations": 10000,
    "pin_backoff_ms": 1000,
    "poll_ms": 20,
    "max_message": 65536,
}


class Board:
    """What main.py wires: drivers for each HAL interface plus the settings."""

    def __init__(
        self, name, settings, storage, transport, clock, rng, display=None, inp=None, log=None
    ):
        self.name = name
        self.settings = settings
        self.storage = storage
        self.transport = transport
        self.clock = clock
        self.rng = rng
        self.display = display
        self.input = inp
        self.log = log or (lambda *a: None)


def settings_of(name, overrides=None):
    mod = module(name)
    s = dict(DEFAULTS)
    s.update(mod.SETTINGS)
    if overrides:
        unknown = [k for k in overrides if k not in s]
        if unknown:  # a misspelt setting would otherwise be ignored without a word
            raise ValueError(
                "unknown setting(s) %s; known: %s" % (", ".join(unknown), ", ".join(sorted(s)))
            )
        s.update(overrides)
    return s


def module(name):
    if name not in BOARDS:
        raise ValueError("unknown board %r (known: %s)" % (name, ", ".join(BOARDS)))
    return __import__("boards." + name, None, None, ("make",))


def load(name, config=None):
    return module(name).make(config or {})
