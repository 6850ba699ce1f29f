"""`hubi token ...` against the simulator, the way a user runs it (headless profile: the PIN is
given on the command line; screen boards take it on the device)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.cli import main
from hubi.token.harness import TokenWorld
from hubi_core import codec
from hubi_core.verify import verify_object

pytestmark = pytest.mark.micropython
PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"


def run(*args: str) -> tuple[int, str]:
    """Exit code and stdout (JSON commands), or all the terminal output otherwise."""
    r = CliRunner().invoke(main, ["token", *args])
    return r.exit_code, r.stdout if "--json" in args else r.output


def test_cli_provision_pay_info(tmp_path: Path) -> None:
    world = TokenWorld(tmp_path / "w")
    state = world.new_state()
    sim = world.sim(state, "headless").start()
    try:
        sim.wait_ready()
        port = str(sim.port)
        code, out = run("info", "--port", port, "--json")
        assert code == 0 and json.loads(out)["state"] == "blank"
        code, out = run(
            "provision", "--port", port, "--home", str(world.home), "--account", PAYER,
            "--pin", "2468", "--allowance", "50000", "--json",
        )  # fmt: skip
        assert code == 0, out
        info = json.loads(out)
        assert info["state"] == "ready" and info["allowance"]["cap"] == 50000
        assert "2468" not in out  # the PIN is never echoed
        req = tmp_path / "req.bin"
        req.write_bytes(world.request(PAYEE, 4321, "books"))
        note_file = tmp_path / "note.bin"
        code, out = run(
            "pay", "--port", port, "--request", str(req), "--pin", "2468", "--yes",
            "--out", str(note_file), "--json",
        )  # fmt: skip
        assert code == 0, out
        note = note_file.read_bytes()
        assert json.loads(out)["note"] == note.hex()
        assert verify_object(note, world.trust).ok
        assert codec.decode(note)["amount"] == 4321
        code, out = run("notes", "--port", port, "--json")
        assert code == 0 and json.loads(out)[0]["amount"] == 4321
        code, out = run("note", "--port", port)
        assert code == 0 and out.strip() == note.hex()
        # without --json, notes, notices and the balance are told in words (they were JSON)
        code, out = run("notes", "--port", port)
        assert code == 0 and "43.21 CNY" in out and "books" in out and PAYEE in out, out
        assert not out.lstrip().startswith("["), out
        files = {"notice.bin": world.balance_notice(note, 123_456), "rc.bin": world.receipt(note)}
        for name, data in files.items():
            (tmp_path / name).write_bytes(data)
        code, out = run("notice", "--port", port, str(tmp_path / "notice.bin"))
        assert code == 0 and "loaded balance notice #9 of bank BKA: 43.21 to " + PAYEE in out, out
        code, out = run("notice", "--port", port, str(tmp_path / "rc.bin"))
        flat = " ".join(out.split())
        assert code == 0 and f"loaded the receipt #3 of {PAYEE}: 43.21" in flat, out
        assert "for 'books'" in flat, out
        code, out = run("balance", "--port", port, "--pin", "2468")
        flat = " ".join(out.split())
        assert code == 0 and "balance 1,234.56 CNY (balance notice #9 of bank BKA" in flat, out
        code, out = run("info", "--port", port)
        assert code == 0 and "allowance #" in out and "456.79 of 500.00 CNY left" in out, out
        # a refusal is a clear message and a non-zero exit
        req.write_bytes(world.request(PAYEE, 10**6))
        code, out = run("pay", "--port", port, "--request", str(req), "--pin", "2468", "--yes")
        assert code == 2 and "exceeds the offline allowance" in " ".join(out.split())
        code, out = run("wipe", "--port", port, "--pin", "2468")
        assert code == 0
        code, out = run("info", "--port", port, "--json")
        assert json.loads(out)["state"] == "blank"
    finally:
        sim.stop()
    code, out = run("info", "--port", str(tmp_path / "no-such-port"))
    assert code == 2 and "cannot talk to the token" in out


def test_cli_provision_refuses_bad_values_before_the_token_gets_anything(tmp_path: Path) -> None:
    """A PIN the token would refuse was found out only at the commit, after 68 KB of trust
    files; a negative allowance after them too; --days -1 gave a token an expired allowance, and
    --days 99999999 an expiry no 32-bit time holds (refused after the uploads). Now each is
    refused first: exit 2, the reason, nothing uploaded, the token still blank."""
    world = TokenWorld(tmp_path / "w")
    sim = world.sim(world.new_state(), "headless").start()
    try:
        sim.wait_ready()
        port = str(sim.port)
        base = ["provision", "--port", port, "--home", str(world.home)]
        cases = [
            (["--account", PAYER, "--pin", "12"], "PIN must be 4 to 8 digits"),
            (["--account", PAYER, "--pin", "123456789"], "PIN must be 4 to 8 digits"),
            (["--account", PAYER, "--pin", "12a4"], "PIN must be digits only"),
            (["--account", PAYER, "--pin", "2468", "--days", "-1"], "'--days': -1 is not in"),
            (["--account", PAYER, "--pin", "2468", "--allowance", "-5"], "'--allowance': -5"),
            (["--account", PAYER, "--pin", "2468", "--first-serial", "0"], "'--first-serial'"),
            # past what the allowance's fields hold: the codec refused it after the uploads
            (["--account", PAYER, "--pin", "2468", "--days", "99999999"], "'--days': 99999999"),
            (["--account", PAYER, "--pin", "2468", "--allowance", "9" * 20], "'--allowance'"),
            (["--account", PAYER, "--pin", "2468", "--first-serial", "9" * 20], "'--first-s"),
            (["--account", "BKZ-000000000001", "--pin", "2468"], "bank BKZ has no KMC in home"),
        ]
        for args, words in cases:
            code, out = run(*base, *args)
            flat = " ".join(out.split())
            assert code == 2 and words in flat, (args, out)
            assert "uploaded" not in flat, (args, out)
            code, out = run("info", "--port", port, "--json")
            assert json.loads(out)["state"] == "blank", args
        # --allowance 0: no allowance; the summary has no 'None' for what provisioning omits
        code, out = run(*base, "--account", PAYER, "--pin", "2468", "--allowance", "0")
        assert code == 0 and "state: ready" in out and "None" not in out, out
        assert "allowance" not in out.split("state: ready", 1)[1]
        # the allowance command: a home without the bank's key is named (it was a traceback);
        # what the token loaded is printed in words (it was a Python dict)
        code, out = run("allowance", "--port", port, "--home", str(tmp_path), "--amount", "700")
        assert code == 2 and "bank BKA has no identity key in home" in " ".join(out.split())
        code, out = run("allowance", "--port", port, "--home", str(world.home), "--amount", "700")
        assert code == 0 and "7.00 of 7.00 left" in out and "from note serial 1" in out, out
        # pay --out into a folder that is not there: refused before the token signs anything
        req = tmp_path / "req.bin"
        req.write_bytes(world.request(PAYEE, 300, "tea"))
        lost = tmp_path / "no-such-folder" / "note.bin"
        code, out = run(
            "pay", "--port", port, "--request", str(req), "--pin", "2468", "--yes",
            "--out", str(lost),
        )  # fmt: skip
        assert code == 2 and "no folder" in out, out
        code, out = run("info", "--port", port, "--json")
        assert json.loads(out)["notes"] == 0 and json.loads(out)["next_serial"] == 1
    finally:
        sim.stop()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--settings", "{bad"], "'--settings': not JSON"),
        (["--settings", "[1]"], "'--settings': a JSON object"),
        (["--heapsize", "96 KB"], "'--heapsize': '96 KB': bytes, or a number of k or M"),
    ],
)
def test_sim_refuses_bad_settings_and_heap_sizes(tmp_path: Path, args: list[str], words: str):
    code, out = run("sim", "--state", str(tmp_path / "t"), "--board", "headless", *args)
    assert code == 2 and words in " ".join(out.split()), out


def test_the_firmware_refuses_a_setting_it_does_not_have(tmp_path: Path) -> None:
    """A misspelt setting was ignored (the simulator ran on, with the default). Run as a
    process with a time limit: a firmware that takes the setting runs until it is killed."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "hubi.cli", "token", "sim", "--state", str(tmp_path / "t"),
         "--board", "headless", "--no-keyboard", "--settings", '{"kdf_iteration": 5}'],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    said = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 2, said
    assert "unknown setting(s) kdf_iteration; known:" in said and "kdf_iterations" in said


def test_sim_command_keyboard_mode(tmp_path: Path) -> None:
    """`hubi token sim` on a terminal: prints the pty path, forwards key presses to the
    firmware's input, q quits and stops the firmware."""
    import os
    import pty
    import subprocess
    import sys
    import time

    master, slave = pty.openpty()
    state = tmp_path / "tok"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hubi.cli", "token", "sim", "--state", str(state),
         "--profile", "m5stack_core", "--keyboard"],
        stdin=slave, stdout=slave, stderr=subprocess.PIPE,
    )  # fmt: skip
    os.close(slave)
    try:
        out = b""
        deadline = time.monotonic() + 30
        while b"keys:" not in out and time.monotonic() < deadline:  # keyboard mode is on
            out += os.read(master, 1024)
        assert b"token simulator (m5stack_core) on /dev/pts/" in out
        for key in (b"\x1b[B", b"\r", b"7", b"\x7f"):
            os.write(master, key)
            time.sleep(0.15)
        os.write(master, b"q")
        assert proc.wait(20) == 0
        events = (state / "input.txt").read_text().split()
        assert events == ["down", "ok", "7", "back"]
        log = (state / "sim.log").read_text()
        assert "ready: sim:m5stack_core" in log
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
