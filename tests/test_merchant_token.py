"""The merchant with a token attached: the real firmware in the simulator (`hubi token sim`,
MicroPython on a pseudo-terminal), the merchant's real `hubi merchant` processes on the host.

- headless token: `request --port` sends the Request over the link, the payer types the PIN on
  the merchant's terminal, the Note comes back, is verified offline and kept, and the Receipt
  goes back to the token (LOAD_NOTICE), which marks the note in its history;
- token with a 240x240 screen: the note is shown as animated QR frames that the simulator
  draws into PNG files; `scan --image` reads those frames and hands the receipt over the link.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from hubi.merchant import Merchant, init_from_bank_home
from hubi.token.client import TokenClient
from hubi.token.harness import TokenWorld
from hubi_core import codec
from tests.test_merchant_support import HUBI, ROOT, env

PAYER = "BKA-000000000042"
MERCHANT = "BKB-000000000007"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> TokenWorld:
    return TokenWorld(tmp_path_factory.mktemp("merchant-token"))


@pytest.fixture(scope="module")
def home(world: TokenWorld) -> Path:
    h = world.root / "merchant"
    init_from_bank_home(h, world.home, MERCHANT)
    return h


def test_request_over_the_link_to_a_headless_token(world: TokenWorld, home: Path) -> None:
    sim = world.sim(world.provisioned(PAYER), "headless")
    sim.start()
    try:
        sim.wait_ready()
        proc = subprocess.run(
            [*HUBI, "merchant", "--home", str(home), "request", "--amount", "25.00"]
            + ["--purpose", "coffee", "--port", sim.port, "--json"],
            input="1234\n",  # the payer types the PIN on the merchant's terminal
            capture_output=True,
            text=True,
            env=env(),
            cwd=ROOT,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr

        out = json.loads(proc.stdout)
        assert out["link"]["paid"] and out["payment"]["accepted"]
        note = bytes.fromhex(out["link"]["note"])
        assert codec.decode(note)["amount"] == 2500
        assert (
            out["link"]["receipt"]["sent"] and out["link"]["receipt"]["token"]["kind"] == "Receipt"
        )
        with TokenClient.open(sim.port) as tok:
            hist = tok.notes()
        assert hist[-1]["receipt"] is True
        with Merchant.open(home) as m:
            assert [r.bytes for r in m.notes()] == [note]
    finally:
        sim.stop()


def test_scan_the_tokens_own_animated_frames(world: TokenWorld, home: Path, tmp_path: Path) -> None:
    # another payer: a second token of PAYER would start again at serial 1, and the merchant
    # rightly refuses a second note with a serial it holds (double issuance)
    state = world.provisioned("BKA-000000000043")
    sim = world.sim(state, "esp32_st7789_240", settings={"qr_frame_ms": 60})
    sim.start()
    try:
        sim.wait_ready()
        with Merchant.open(home) as m:
            req = m.request(777, "lunch", expires=3600)
        before = set(sim.frame_files())
        with TokenClient.open(sim.port) as tok:  # the payer confirms on the device
            sim.press("confirm: ok", "pin: 1 2 3 4 enter")
            note = tok.pay(req.bytes, timeout_ms=20000).note
            shown = set(sim.frame_files())  # the loop's first frame is drawn before the reply
        assert note is not None
        sim.wait_note_frames(shown)  # every frame drawn at least once
        shots = [p for p in sim.frame_files() if p not in before]
        assert len(shots) >= 5
        proc = subprocess.run(
            [*HUBI, "merchant", "--home", str(home), "scan", "--image", *map(str, shots)]
            + ["--port", sim.port, "--json"],
            capture_output=True,
            text=True,
            env=env(),
            cwd=ROOT,
            timeout=120,
        )

        out = json.loads(proc.stdout)
        accepted = [r for r in out["results"] if r["accepted"]]
        assert len(accepted) == 1, out
        assert accepted[0]["link"]["token"]["kind"] == "Receipt"
        with Merchant.open(home) as m:
            assert note in [r.bytes for r in m.notes()]
    finally:
        sim.stop()
