"""Token follow-ups of stop 28 (second round), each on the real simulator (MicroPython unix port)
or the real `hubi token` command.

What was broken: the simulator's flash files (device secret, PIN-sealed key, PIN tries) and its
input.txt (the token's keys) were made 0644 or, under `umask 000`, 0666 in a folder every user
could enter; `--pin` was the only way to give a headless token its PIN without a terminal, and
it is in /proc/PID/cmdline for every local user; `pay` on a headless token said "confirm the
payment on the token" though there is nothing to confirm there; `token sim` showed a MicroPython
traceback for an unknown setting and named a frames folder a headless profile never makes; a
token whose tpl.obj (or another state file) was damaged refused even WIPE, so its owner could not
start again.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.cli import main
from hubi.token.client import TokenClient
from hubi.token.harness import TokenWorld
from hubi_core import codec
from hubi_core import protocol as P
from hubi_core.errors import ErrorReply
from hubi_core.verify import verify_object

pytestmark = [pytest.mark.micropython, pytest.mark.xdist_group("test_token_probe28b_fixes")]
PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"
# another local user (the tests run as root: without its capabilities too)
NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> TokenWorld:
    return TokenWorld(tmp_path_factory.mktemp("token-probe28b"))


def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["token", *args], env=env, input=stdin)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r.exit_code, " ".join(r.output.split())


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every user may enter (unlike pytest's tmp_path, 0700), as a user's home or /tmp
    is: what is in it is then protected by its own modes only."""
    d = Path(tempfile.mkdtemp(prefix="p28b-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _as_nobody(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NOBODY, *cmd], capture_output=True, text=True, timeout=30)


def test_state_files_are_private_under_umask_000(world: TokenWorld, open_dir: Path) -> None:
    fresh = open_dir / "new" / "tok"  # made by the simulator
    old = open_dir / "old"  # an existing folder of ours, open to all
    old.mkdir()
    old.chmod(0o777)
    was = os.umask(0)
    try:
        for state in (fresh, old):
            with world.running(state) as (sim, tok):
                world.provision(tok, PAYER, "1234")  # ks.bin, pin.cnt besides dev.bin
                flash = state / "flash"
                for name in ("dev.bin", "ks.bin", "pin.cnt"):
                    assert (flash / name).is_file(), name
                assert stat.S_IMODE(state.stat().st_mode) == 0o700, oct(state.stat().st_mode)
                made = [p for p in flash.rglob("*")] + [flash, sim.script, state / "sim.json"]
                for p in [*made, sim.log_path]:
                    mode = stat.S_IMODE(p.stat().st_mode)
                    assert mode & 0o077 == 0, (str(p), oct(mode))
                # another local user reads no secret and presses no key
                r = _as_nobody("cat", str(flash / "dev.bin"))
                assert r.returncode != 0 and "Permission denied" in r.stderr, r
                r = _as_nobody("sh", "-c", f"echo 'confirm: ok' >> {sim.script}")
                assert r.returncode != 0 and "Permission denied" in r.stderr, r
                assert sim.script.read_text() == ""
                assert tok.info()["state"] == "ready"
    finally:
        os.umask(was)


PIN_COMMANDS = ("provision", "pay", "balance", "wipe")


@pytest.mark.parametrize("command", PIN_COMMANDS)
def test_help_names_hubi_pin_and_says_the_option_is_visible(command: str) -> None:
    r = CliRunner().invoke(main, ["token", command, "--help"], env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())
    assert "env var: HUBI_PIN" in said, said
    assert "visible to other local users" in said and "a dash ('-') to be asked" in said, said


def test_pin_from_the_environment_or_asked_and_no_confirm_line_headless(
    world: TokenWorld, tmp_path: Path
) -> None:
    """HUBI_PIN gives the PIN with nothing on the command line; `--pin -` asks for it, and so do
    `wipe` and `balance` of a headless token without one (an empty PIN cost one of its tries).
    A headless payment says nothing of confirming "on the token"."""
    req = tmp_path / "req.bin"
    req.write_bytes(world.request(PAYEE, 321, "tea"))
    home = ["--home", str(world.home), "--account", PAYER]
    with world.running(world.new_state()) as (sim, _tok):
        _tok.close()  # every command below opens the port itself
        port = str(sim.port)
        pin = {"HUBI_PIN": "2468"}
        code, out = run("provision", "--port", port, *home, env=pin)
        assert code == 0 and "state: ready" in out, out
        code, out = run("pay", "--port", port, "--request", str(req), "--yes", "--no-qr", env=pin)
        assert code == 0 and "note #1" in out, out
        assert "confirm the payment on the token" not in out, out
        code, out = run("info", "--port", port)
        assert "PIN tries left 10" in out, out
        # asked: the wrong one is counted, the right one taken
        code, out = run("balance", "--port", port, "--pin", "-", stdin="1357\n")
        assert code == 2 and "wrong PIN" in out and "9 tries left" in out, out
        code, out = run("balance", "--port", port, stdin="2468\n")
        assert code == 2 and "no balance notice" in out, out
        code, out = run("info", "--port", port)
        assert "PIN tries left 10" in out, out  # the good PIN reset the count
        code, out = run("wipe", "--port", port, stdin="2468\n")
        assert code == 0 and "wiped" in out, out
        code, out = run("provision", "--port", port, *home, "--pin", "-", stdin="1357\n")
        assert code == 0 and "state: ready" in out, out
        req.write_bytes(world.request(PAYEE, 55, "tea"))
        code, out = run(
            "pay", "--port", port, "--request", str(req), "--yes", "--pin", "-", "--no-qr",
            stdin="1357\n",
        )  # fmt: skip
        assert code == 0 and "note #2" in out, out
        code, out = run("wipe", "--port", port, env={"HUBI_PIN": "1357"})
        assert code == 0 and "wiped" in out, out


def test_sim_names_an_unknown_setting_without_a_traceback(tmp_path: Path) -> None:
    code, out = run(
        "sim", "--state", str(tmp_path / "t"), "--profile", "headless", "--no-keyboard",
        "--settings", '{"bogus": 1, "kdf_iterations": 1000}',
    )  # fmt: skip
    assert code == 2, out
    assert "'--settings': unknown setting(s) bogus; known:" in out, out
    assert "kdf_iterations" in out and "pin_backoff_ms" in out, out
    assert "Traceback" not in out and "ValueError" not in out, out
    assert not (tmp_path / "t").exists()  # refused before anything was made


@pytest.mark.parametrize(("profile", "frames"), [("headless", False), ("m5stack_core", True)])
def test_sim_names_a_frames_folder_only_where_frames_are_drawn(
    tmp_path: Path, profile: str, frames: bool
) -> None:
    state = tmp_path / "tok"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hubi.cli", "token", "sim", "--state", str(state),
         "--profile", profile, "--no-keyboard", "--settings", '{"kdf_iterations": 1000}'],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert f"token simulator ({profile}) on /dev/pts/" in first, first
        second = proc.stdout.readline()
        assert "log:" in second and "input:" in second, second
        assert ("frames:" in second) is frames, second
        if frames:  # the folder named is there once the first frame is drawn
            deadline = time.monotonic() + 20
            while not list((state / "frames").glob("*.png")) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert list((state / "frames").glob("*.png")), second
        else:
            assert not (state / "frames").exists()
        time.sleep(0.5)  # (a SIGTERM at any moment of start-up is handled: probe29_sigterm)
        assert not (state / "frames").exists() or frames
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0, proc.returncode


def test_damaged_template_token_wipes_with_its_pin_only(world: TokenWorld) -> None:
    """tpl.obj damaged: every request gets STORAGE, but WIPE is let through to its handler,
    which checks the PIN against ks.bin (wrong or missing: refused and counted); the right PIN
    wipes, and the blank token is provisioned again and pays."""
    state = world.provisioned(PAYER, "1234")
    tpl = state / "flash" / "tpl.obj"
    tpl.write_bytes(b"\x00" * 40)
    with world.running(state) as (sim, tok):
        for call in (tok.info, lambda: tok.pay(world.request(PAYEE, 5))):
            with pytest.raises(ErrorReply) as e:
                call()
            assert e.value.code == P.ERR_STORAGE and "tpl.obj" in e.value.text, str(e.value)
        with pytest.raises(ErrorReply) as e:
            tok.wipe("9999")
        assert e.value.code == P.ERR_PIN_WRONG and "9 tries left" in e.value.text, str(e.value)
        with pytest.raises(ErrorReply) as e:
            tok.wipe(None)  # no PIN at all: never a wipe without it
        assert e.value.code == P.ERR_PIN_WRONG and "8 tries left" in e.value.text, str(e.value)
        assert (state / "flash" / "ks.bin").exists() and tpl.exists()
        with pytest.raises(ErrorReply) as e:
            tok.info()  # still the fault
        assert e.value.code == P.ERR_STORAGE
        tok.close()
        # the owner's command, with the PIN from the environment
        code, out = run("wipe", "--port", str(sim.port), env={"HUBI_PIN": "1234"})
        assert code == 0 and "wiped" in out, out
        assert not (state / "flash" / "ks.bin").exists() and not tpl.exists()
        code, out = run("info", "--port", str(sim.port))
        assert code == 0 and "state: blank" in out and "transport key" in out, out
    with world.running(state) as (_sim, tok):
        world.provision(tok, PAYER, "4321")
        info = tok.info()
        assert info["state"] == "ready" and info["pin_tries_left"] == 10, info
        tok.pay(world.request(PAYEE, 77))
        note = tok.confirm_pay("4321")
        assert verify_object(note, world.trust).ok
        assert codec.decode(note, codec.NOTE)["amount"] == 77


def _state_or_error(tok: TokenClient) -> str:
    try:
        return str(tok.info()["state"])
    except ErrorReply as e:
        return f"error {e.code:#06x}"


def test_damaged_template_screen_token_wipes_from_the_link_and_the_menu(
    world: TokenWorld,
) -> None:
    """The same on a screen token: a WIPE over the link, and Wipe in its menu, are confirmed
    and the PIN typed on the device (cancelled: nothing wiped); the owner's PIN wipes."""
    board = "m5stack_core"
    state = world.provisioned(PAYER, "1234", profile=board)
    ks = state / "flash" / "ks.bin"
    (state / "flash" / "tpl.obj").write_bytes(b"")
    with world.running(state, board) as (sim, tok):
        with pytest.raises(ErrorReply) as e:
            tok.info()
        assert e.value.code == P.ERR_STORAGE and "tpl.obj" in e.value.text, str(e.value)
        sim.press("confirm: ok", "pin: 9 9 9 9 enter", "pin: back")
        with pytest.raises(ErrorReply) as e:
            tok.wipe()
        assert e.value.code == P.ERR_CANCELLED, str(e.value)
        assert ks.exists()
        sim.press("home: down", "menu: ok", "confirm: ok", "pin: 1 2 3 4 enter")
        sim.wait_for(lambda: _state_or_error(tok) == "blank", 60, "the wipe from the menu")
        assert not ks.exists()
        world.provision(tok, PAYER, "1234")
        info = tok.info()
        assert info["state"] == "ready" and info["pin_tries_left"] == 10, info
