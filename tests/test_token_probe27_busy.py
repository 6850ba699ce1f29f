"""A screen payment whose host died while the owner had not acted: a new host is answered at
once (the real simulator over a pty, the real CLI in a SIGKILLed process and in this one).

The token used to keep the dead host waiting with WAIT frames without reading the link: a new
`hubi token info` got no reply to HELLO for 15 s, until the owner confirmed or declined."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.cli import main
from hubi.token.harness import TokenWorld

pytestmark = [
    pytest.mark.micropython,
    pytest.mark.xdist_group("test_token_probe27_busy"),
    pytest.mark.timeout(60),  # the old firmware hung here for minutes
]
PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"


def run(*args: str) -> tuple[int, str, float]:
    t0 = time.monotonic()
    r = CliRunner().invoke(main, ["token", *args])
    return r.exit_code, " ".join(r.output.split()), time.monotonic() - t0


def test_new_host_answered_while_the_owner_has_not_acted(tmp_path: Path) -> None:
    world = TokenWorld(tmp_path / "w")
    state = world.provisioned(PAYER, "1234", profile="m5stack_core")
    sim = world.sim(state, "m5stack_core").start()
    dead = None
    try:
        sim.wait_ready()
        port = str(sim.port)
        req = tmp_path / "req.bin"
        req.write_bytes(world.request(PAYEE, 450, "tea"))
        # the first host: a real `hubi token pay`, killed while the token asks its owner
        cmd = [sys.executable, "-m", "hubi.cli", "token", "pay", "--port", port]
        dead = subprocess.Popen(
            [*cmd, "--request", str(req), "--no-qr"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert dead.stdout is not None
        line = dead.stdout.readline().decode()  # printed just before PAY_REQUEST goes out
        assert "confirm the payment on the token" in line, line
        time.sleep(1.5)  # the request is verified; the confirm screen waits for the owner
        assert dead.poll() is None, dead.stdout.read().decode()
        os.kill(dead.pid, signal.SIGKILL)
        dead.wait(10)

        # a new host learns the state at once (HELLO and GET_INFO answered)
        code, out, took = run("info", "--port", port)
        assert code == 0, out
        assert "state: ready" in out and f"account {PAYER}" in out, out
        assert took < 4, (took, out)
        # its payment is refused at once: the owner is busy with the first one
        code, out, took = run("pay", "--port", port, "--request", str(req), "--no-qr")
        assert code == 2, out
        assert "the token is busy with the user on the device" in out, out
        assert took < 4, (took, out)

        # the flow on the device went on: the owner confirms and types the PIN, the note is
        # signed and kept, though its host is gone
        sim.press("confirm: ok", "pin: 1 2 3 4 enter")
        sim.wait_for(lambda: re.search(rb'"frames": \d+', sim._log_bytes()), 30, "the note")
        code, out, _ = run("pay", "--port", port, "--request", str(req), "--no-qr")
        assert code == 2 and "this request was already paid by note #" in out, out
        code, out, _ = run("notes", "--port", port, "--json")
        assert code == 0 and '"amount": 450' in out, out
    finally:
        if dead is not None and dead.poll() is None:
            dead.kill()
            dead.wait()
        sim.stop()
