"""Review of this stop's token change: a request's expiry by the host's time, once the
token's millisecond ticks came round.

The firmware's own core.wallet under the real MicroPython unix port, its Clock given the
ESP32's ticks: there small ints are 30 bits, so time.ticks_ms comes round every 2**30 ms (12.4
days) and ticks_diff is signed modulo that. (This unix port's ints are 62 bits: its ticks do
not come round for the age of the universe, so the board's ticks are written out here.) Found:
`request_now` took the wrapped ticks for the time since the host's SET_TIME; 12.5 days on it
answered a time 12.4 days early, and a request that had expired by the token's own clock and
the right one was paid. Past 5 days since SET_TIME the token's own clock decides, as `now()`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.mpy import run_mpy

pytestmark = [pytest.mark.micropython, pytest.mark.xdist_group("test_review_probe29b_token")]

_SCRIPT = """
import json
from core.wallet import Wallet
from hal import Clock

PERIOD = 1 << 30  # MICROPY_PY_TIME_TICKS_PERIOD with 30-bit small ints (ESP32)


class Esp32Clock(Clock):
    # the wall clock and the ticks run on together by run_ms, as on a board left powered
    def __init__(self):
        Clock.__init__(self)
        self.run_ms = 0

    def _raw(self):
        return 1800000000 + self.run_ms // 1000

    def ticks_ms(self):
        return (987654 + self.run_ms) & (PERIOD - 1)

    def ticks_diff(self, a, b):  # MicroPython's: signed, modulo the period
        return ((a - b + PERIOD // 2) & (PERIOD - 1)) - PERIOD // 2


class NoKeys:
    on_wipe = None


clock = Esp32Clock()
w = Wallet(None, NoKeys(), clock)
w.set_time(1800000000)
out = []
for hours in (0, 1, 24, 100, 140, 150, 200, 298, 299, 300, 310, 400, 600, 900):
    clock.run_ms = hours * 3600 * 1000 + 1500
    out.append([hours, clock.time(), w.request_now()])
print(json.dumps(out))
"""


def test_request_now_runs_on_past_a_round_of_the_ticks(tmp_path: Path) -> None:
    script = tmp_path / "ticks.py"
    script.write_text(_SCRIPT)
    got = json.loads(run_mpy(script=script))
    for hours, wall, now in got:
        assert abs(now - wall) <= 1, got  # no host reset it: the time since SET_TIME
        assert now >= 1800000000 + hours * 3600, got
