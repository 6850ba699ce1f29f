"""`hubi token` run twice at once: two simulators on one state folder, two commands on one port,
two allowances in one second (the real simulator over a pty, the real CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.cli import main
from hubi.token.client import PayResult, TokenClient
from hubi.token.harness import TokenWorld
from hubi.token.sim import SimError
from hubi_core import codec
from hubi_core.verify import verify_object

pytestmark = [pytest.mark.micropython, pytest.mark.xdist_group("test_token_probe27_concurrency")]
PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"


def run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["token", *args])
    return r.exit_code, r.stdout if "--json" in args else r.output


def test_two_simulators_on_one_state_folder_refused(tmp_path: Path) -> None:
    """Two firmwares on one flash each kept the counter and allowance in memory: with a cap of
    1000.00 each spent it, and the flash said 2.00 spent after 3.00 were signed."""
    world = TokenWorld(tmp_path / "w")
    state = world.provisioned(PAYER, "1234")
    first = world.sim(state).start()
    try:
        first.wait_ready()
        second = world.sim(state)
        with pytest.raises(SimError, match=f"state folder {state} is in use by another"):
            second.start()
        assert not second.running()
        # `hubi token sim` says so and exits, rather than running a second firmware
        cmd = [sys.executable, "-m", "hubi.cli", "token", "sim", "--state", str(state)]
        p = subprocess.Popen(
            [*cmd, "--profile", "headless", "--no-keyboard"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            out, err = p.communicate(timeout=20)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert p.returncode == 2, out + err
        assert "is in use by another token simulator" in err and "Traceback" not in err, err
        # the first one still pays, alone on its flash
        with TokenClient.open(str(first.port)) as tok:
            note = world.pay(first, tok, world.request(PAYEE, 300), "1234")
            assert verify_object(note, world.trust).ok
            assert tok.info()["allowance"]["spent"] == 300
    finally:
        first.stop()
    # stopped, the folder is free again (the lock went with the firmware)
    with world.running(state) as (_sim, tok):
        assert tok.info()["allowance"]["spent"] == 300


def test_second_command_on_a_busy_port_is_told_at_once(tmp_path: Path) -> None:
    """A payment waits for the owner on a screen token; `hubi token info` on the same port
    used to read the token's WAIT frames away from it and fail 15 s later with "no reply to
    HELLO" (or break the payment). Now it is refused at once, naming the cause, and the
    payment goes through."""
    world = TokenWorld(tmp_path / "w")
    profile = "m5stack_core"
    state = world.provisioned(PAYER, "1234", profile=profile)
    sim = world.sim(state, profile).start()
    try:
        sim.wait_ready()
        port = str(sim.port)
        request = world.request(PAYEE, 777, "tea")
        got: dict[str, PayResult | BaseException] = {}

        def pay() -> None:
            try:
                with TokenClient.open(port) as tok:
                    got["r"] = tok.pay(request, timeout_ms=20000)
            except BaseException as e:  # shown by the assertion below
                got["r"] = e

        t = threading.Thread(target=pay)
        t.start()
        time.sleep(1.0)  # the payment waits for the owner, its host reading WAIT frames
        t0 = time.monotonic()
        code, out = run("info", "--port", port)
        took = time.monotonic() - t0
        said = " ".join(out.split())
        assert code == 2 and f"serial port {port} is in use by another program" in said, said
        sim.press("confirm: ok", "pin: 1 2 3 4 enter")
        t.join(60)
        r = got.get("r")
        assert isinstance(r, PayResult) and r.note is not None, r
        assert codec.decode(r.note, codec.NOTE)["amount"] == 777
        assert took < 3, took
        r2 = CliRunner().invoke(main, ["token", "info", "--port", port])
        assert r2.exit_code == 0, r2.output  # free again once the payment's host let go
    finally:
        sim.stop()


def test_busy_port_message(tmp_path: Path) -> None:
    world = TokenWorld(tmp_path / "w")
    with world.running(world.new_state()) as (sim, _tok):
        r = CliRunner().invoke(main, ["token", "info", "--port", str(sim.port)])
        assert r.exit_code == 2, r.output
        said = " ".join(r.output.split())
        assert f"serial port {sim.port} is in use by another program" in said, said
        assert "Traceback" not in r.output


def test_allowance_twice_in_one_second(tmp_path: Path) -> None:
    """Two `hubi token allowance` runs in one second: the second was refused as a replay
    (both were signed with serial = the current second)."""
    world = TokenWorld(tmp_path / "w")
    state = world.provisioned(PAYER, "1234")
    with world.running(state) as (sim, tok):
        tok.close()  # the port is the CLI's now
        port, home = str(sim.port), str(world.home)
        for _ in range(5):  # both runs inside one second (a run takes ~0.3 s)
            while time.time() % 1 > 0.05:
                time.sleep(0.01)
            start = int(time.time())
            a = run("allowance", "--port", port, "--home", home, "--amount", "500", "--json")
            b = run("allowance", "--port", port, "--home", home, "--amount", "700", "--json")
            if int(time.time()) == start:
                break
        else:
            pytest.fail("never two allowance runs within one second")
        assert a[0] == 0, a[1]
        assert b[0] == 0, b[1]
        first, second = json.loads(a[1]), json.loads(b[1])
        assert second["serial"] > first["serial"] and second["cap"] == 700
        code, out = run("info", "--port", port, "--json")
        assert code == 0 and json.loads(out)["allowance"]["cap"] == 700
