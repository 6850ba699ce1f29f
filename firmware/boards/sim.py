"""The simulator board (MicroPython unix port), started by ``hubi token sim``.

It emulates another board's SETTINGS (``profile``: esp32_st7789_240, m5stack_core or headless)
with simulator drivers: display -> PNG frames, input -> script file, storage -> a folder with
kill points, link -> the pseudo-terminal master on stdin/stdout.

Config (JSON file named on the command line, see host/hubi/token/sim.py):
    state     folder for the token's flash (required)
    frames    folder for PNG frames (default STATE/frames)
    script    input file (default STATE/input.txt; read as it grows)
    profile   board whose settings are emulated (default esp32_st7789_240)
    settings  overrides, e.g. {"kdf_iterations": 2000, "pin_backoff_ms": 50}
    kill_at   storage step at which to stop dead (power-cut tests), 0 = never
    trace     log every storage step on stderr
"""

import sys

from hal import Clock, Rng

NAME = "sim"
SETTINGS = {}


def make(config):
    from drivers.sim import log
    from drivers.sim.storage import FaultyStorage

    from boards import Board, settings_of
    from hubi_core.link import StreamTransport

    state = config["state"]
    profile = config.get("profile", "esp32_st7789_240")
    if profile == "sim":
        raise ValueError("the simulator emulates a real board's settings, not itself")
    settings = settings_of(profile, config.get("settings"))
    storage = FaultyStorage(state + "/flash", config.get("kill_at", 0), config.get("trace", False))
    stdin = getattr(sys.stdin, "buffer", sys.stdin)
    stdout = getattr(sys.stdout, "buffer", sys.stdout)
    transport = StreamTransport(stdin, stdout)
    display = inp = None
    if settings["width"]:
        from drivers.sim.display import SimDisplay
        from drivers.sim.input import ScriptInput

        display = SimDisplay(
            settings["width"], settings["height"], config.get("frames", state + "/frames")
        )
        inp = ScriptInput(config.get("script", state + "/input.txt"), log)
    return Board("sim:" + profile, settings, storage, transport, Clock(), Rng(), display, inp, log)
