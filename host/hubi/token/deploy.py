"""Put the firmware on a real board: flash MicroPython (esptool), deploy the app (mpremote).

flash:  the user supplies a MicroPython image for the chip (e.g. ESP32_GENERIC-*.bin from
        micropython.org). ``flash_commands`` returns the exact esptool command lines:
        erase_flash, then write_flash at the chip's bootloader offset.
deploy: ``build`` compiles the bundle for the board's architecture (mpy-cross -march), then
        ``deploy_commands`` returns the mpremote command lines that copy it to the board's
        filesystem with its board.json, and reset the board. With ``romfs=True`` the modules
        go to the ROMFS partition instead (mpremote romfs deploy; MicroPython >= 1.25 with a
        ROMFS partition), where they run in place from flash and leave the heap to the data.
        The board's main.py goes first and comes back last: a deploy cut off half-way leaves
        a board that boots to the REPL, never the old main.py over a mix of old and new modules.

Both run the commands unless ``dry_run``; the tests check the bundle and the command lines
(no board is attached to CI: what was and was not verified is listed in docs/token.md).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from hubi.binaries import find_exe
from hubi.token import build

# bootloader offset of a MicroPython image, per chip (esptool write_flash address)
FLASH_OFFSET = {"esp32": 0x1000, "esp32s2": 0x1000, "esp32s3": 0x0, "esp32c3": 0x0}
CHIP_OF_BOARD = {"esp32_st7789_240": "esp32", "m5stack_core": "esp32", "headless": "esp32"}
ESP_IMAGE_MAGIC = 0xE9
# run on the board: removes main.py if there is one (mpremote's fs rm fails on a missing file,
# as on a first deploy); relative, like the `fs cp main.py :` that puts it back
REMOVE_MAIN = "import os;'main.py' in os.listdir() and os.remove('main.py')"


class DeployError(RuntimeError):
    pass


def _exe(name: str) -> str:
    found = find_exe(name)
    if found is None:
        raise DeployError(f"{name} not found (pip install {name}; pyproject lists it)")
    return found


def check_image(path: Path, chip: str) -> None:
    try:
        with open(path, "rb") as f:  # the header only: not the whole image, nor a device
            data = f.read(64)
    except OSError as e:
        raise DeployError(f"cannot read {path}: {e.strerror or e}") from None
    if not data:
        raise DeployError(f"{path}: empty file")
    if data[0] != ESP_IMAGE_MAGIC:
        raise DeployError(
            f"{path}: not an ESP firmware image (first byte 0x{data[0]:02x}, expected 0xe9); "
            "download a MicroPython .bin for your chip"
        )
    if chip not in FLASH_OFFSET:
        raise DeployError(f"unknown chip {chip!r} (one of {', '.join(FLASH_OFFSET)})")


def flash_commands(
    port: str, firmware: Path, chip: str = "esp32", baud: int = 460800, erase: bool = True
) -> list[list[str]]:
    check_image(firmware, chip)
    esptool = _exe("esptool")
    base = [esptool, "--chip", chip, "--port", port]
    erase_cmd, write_cmd = _esptool_names()
    cmds = []
    if erase:
        cmds.append(base + [erase_cmd])
    cmds.append(
        base + ["--baud", str(baud), write_cmd, "-z", hex(FLASH_OFFSET[chip]), str(firmware)]
    )
    return cmds


def _esptool_names() -> tuple[str, str]:
    """esptool 5 renamed erase_flash/write_flash to erase-flash/write-flash (the old names
    still work there, with a warning; esptool 4 knows only the old ones)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major = int(version("esptool").split(".")[0])
    except (PackageNotFoundError, ValueError):
        major = 4
    return ("erase-flash", "write-flash") if major >= 5 else ("erase_flash", "write_flash")


def bundle_for(board: str, out: Path | None = None, force: bool = False) -> Path:
    if board not in CHIP_OF_BOARD:
        raise DeployError(f"unknown board {board!r} (one of {', '.join(CHIP_OF_BOARD)})")
    march = build.ARCH_OF_BOARD[board]
    out = Path(os.path.abspath(out or build.ROOT / "build" / f"token-{board}"))
    try:
        build.build(out, march, board, force)
        (out / "board.json").write_text(json.dumps({"board": board}) + "\n")
    except build.BuildError as e:
        raise DeployError(str(e)) from None
    except OSError as e:
        raise DeployError(f"cannot build the bundle in {out}: {e.strerror or e}") from None
    return out


def deploy_commands(port: str, bundle: Path, romfs: bool = False) -> list[list[str]]:
    """mpremote command lines (run with cwd=bundle) that install the bundle on the board."""
    mp = _exe("mpremote")
    con = [mp, "connect", port]
    dirs = sorted(p.name for p in bundle.iterdir() if p.is_dir())
    dirs += sorted(p.name for p in bundle.iterdir() if p.suffix == ".mpy")  # app.mpy
    # main.py first, whichever route: the filesystem's main.py is what boots in both
    cmds = [con + ["exec", REMOVE_MAIN]]
    if romfs:
        rom = bundle.with_name(bundle.name + "-rom")
        try:
            build.check_replaceable(rom)  # a copy made here before (its .build.json), or new
            shutil.rmtree(rom, ignore_errors=True)
            shutil.copytree(bundle, rom, ignore=shutil.ignore_patterns("main.py", "board.json"))
        except build.BuildError as e:
            raise DeployError(str(e)) from None
        except OSError as e:
            raise DeployError(f"cannot copy the bundle to {rom}: {e.strerror or e}") from None
        cmds.append(con + ["romfs", "--no-mpy", "deploy", str(rom)])
    else:
        cmds.append(con + ["fs", "cp", "-r", *dirs, ":"])
    cmds.append(con + ["fs", "cp", "main.py", "board.json", ":"])
    cmds.append(con + ["reset"])
    return cmds


def run(
    cmds: list[list[str]], cwd: Path | None = None, echo: Callable[[str], None] = print
) -> None:
    for c in cmds:
        echo("$ " + shlex.join(c))
        proc = subprocess.run(c, cwd=cwd)
        if proc.returncode != 0:
            raise DeployError(f"command failed ({proc.returncode}): {' '.join(c)}")
