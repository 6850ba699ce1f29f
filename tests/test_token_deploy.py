"""Flash and deploy without a board: the .mpy bundle is built for the board's architecture and
the esptool / mpremote command lines are exactly what would run (dry runs). Nothing here
proves the firmware runs on an ESP32: docs/token.md lists what was and was not verified."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.cli import main
from hubi.token import build
from hubi.token import deploy as dep

# MicroPython's MP_NATIVE_ARCH numbers, in bits 2..5 of the .mpy header's third byte
ARCH_X64 = 2
ARCH_XTENSAWIN = 10


def _arch(mpy: bytes) -> int:
    assert mpy[0] == ord("M") and mpy[1] == 6  # .mpy version 6
    return (mpy[2] >> 2) & 0xF


def test_deploy_dry_run_builds_the_bundle(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    r = CliRunner().invoke(
        main,
        [
            "token",
            "deploy",
            "--port",
            "/dev/ttyUSB0",
            "--board",
            "m5stack_core",
            "--dry-run",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads((out / "board.json").read_text()) == {"board": "m5stack_core"}
    assert (out / "main.py").read_text().startswith('"""hubi token firmware')
    assert (out / "lib/hubi_core/p256_table.bin").stat().st_size > 60000
    mods = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mpy"))
    for m in (
        "app.mpy",
        "core/wallet.mpy",
        "ui/screens.mpy",
        "boards/m5stack_core.mpy",
        "drivers/panel.mpy",
        "lib/hubi_core/ec.mpy",
    ):
        assert m in mods
    assert not any(m.startswith("drivers/sim/") for m in mods)
    assert not list(out.rglob("*.py"))[1:]  # only main.py stays source
    # native kernels compiled for the ESP32's Xtensa (windowed ABI)
    assert _arch((out / "lib/hubi_core/ec_ct.mpy").read_bytes()) == ARCH_XTENSAWIN
    lines = [ln for ln in r.output.splitlines() if "mpremote" in ln]
    # each line pastes into a shell as the very command that would run (the exec's script
    # holds quotes and a ';')
    printed = [shlex.split(ln.removeprefix("(").removesuffix(")")) for ln in lines]
    want = dep.deploy_commands("/dev/ttyUSB0", out)
    assert printed == [["cd", str(out), "&&", *c] for c in want]
    # main.py off the board first, back last: a cut-off deploy never boots the old one
    assert want[0][1:] == ["connect", "/dev/ttyUSB0", "exec", dep.REMOVE_MAIN]
    assert (
        " ".join(want[1][1:])
        == "connect /dev/ttyUSB0 fs cp -r boards core drivers hal lib ui app.mpy :"
    )
    assert want[2][-4:] == ["cp", "main.py", "board.json", ":"] and want[3][-1] == "reset"


def test_deploy_romfs_commands(tmp_path: Path) -> None:
    bundle = dep.bundle_for("headless", tmp_path / "b")
    cmds = dep.deploy_commands("/dev/ttyACM0", bundle, romfs=True)
    assert cmds[0][-2:] == ["exec", dep.REMOVE_MAIN]
    assert cmds[1][-4:] == ["romfs", "--no-mpy", "deploy", str(tmp_path / "b-rom")]
    assert not (tmp_path / "b-rom" / "main.py").exists()


def test_sim_bundle_is_x64() -> None:
    b = build.sim_bundle()
    assert _arch((b / "lib/hubi_core/ec_ct.mpy").read_bytes()) == ARCH_X64


def test_flash_dry_run_and_image_check(tmp_path: Path) -> None:
    img = tmp_path / "ESP32_GENERIC.bin"
    img.write_bytes(b"\xe9" + b"\x00" * 4095)
    r = CliRunner().invoke(
        main, ["token", "flash", "--port", "/dev/ttyUSB0", "--firmware", str(img), "--dry-run"]
    )
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    erase, write = dep._esptool_names()
    assert lines[0].endswith(f"--chip esp32 --port /dev/ttyUSB0 {erase}")
    assert lines[1].endswith(f"{write} -z 0x1000 {img}")
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    r = CliRunner().invoke(
        main, ["token", "flash", "--port", "p", "--firmware", str(bad), "--dry-run"]
    )
    assert r.exit_code == 2 and "not an ESP firmware image" in " ".join(r.output.split())
    with pytest.raises(dep.DeployError):
        dep.flash_commands("p", img, chip="esp8266")
    # a baud rate esptool cannot use is a usage error, not a command line handed to esptool
    r = CliRunner().invoke(
        main, ["token", "flash", "-p", "p", "--firmware", str(img), "--baud", "0", "--dry-run"]
    )
    assert r.exit_code == 2 and "Invalid value for '--baud'" in r.output, r.output
