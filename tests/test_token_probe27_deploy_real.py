"""`hubi token deploy`'s real mpremote command lines against a real MicroPython (the unix port on
a pseudo-terminal, tests/mpy_board.py): the board's folder ends up holding the bundle byte for
byte, and a re-deploy cut off after the modules' copy leaves no main.py to boot a mix of old
and new modules.

The last command, mpremote `reset`, is never run here: it is a hard reset (machine.reset()),
which the unix port has no counterpart for. `romfs deploy` cannot run either (the unix port has
no ROMFS partition); its route shares the main.py removal that is run here.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubi.token import deploy as dep
from tests.mpy import micropython_exe
from tests.mpy_board import PtyBoard

pytestmark = pytest.mark.xdist_group("test_token_probe27_deploy_real")

OLD_MAIN = b"print('old firmware')\n"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dep.bundle_for("headless", tmp_path_factory.mktemp("deploy") / "bundle")


@pytest.fixture
def board(tmp_path: Path) -> Iterator[PtyBoard]:
    root = tmp_path / "board"
    root.mkdir()
    with PtyBoard(micropython_exe(), root) as b:
        yield b


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _deployed(bundle: Path) -> dict[str, bytes]:
    # everything but the build's own record of what it built
    files = _files(bundle)
    del files[".build.json"]
    return files


def _run(cmds: list[list[str]], cwd: Path) -> None:
    for c in cmds:
        r = subprocess.run(c, cwd=cwd, capture_output=True, timeout=60)
        assert r.returncode == 0, (c, r.stdout[-2000:], r.stderr[-2000:])


def _without_reset(cmds: list[list[str]]) -> list[list[str]]:
    assert cmds[-1][-1] == "reset"  # the board's hard reset: not on the unix port
    return cmds[:-1]


def _old_firmware(bundle: Path, dest: Path) -> Path:
    """The bundle as an older release: another main.py, every module different."""
    shutil.copytree(bundle, dest)
    (dest / "main.py").write_bytes(OLD_MAIN)
    for m in dest.rglob("*.mpy"):
        m.write_bytes(m.read_bytes() + b"old")
    return dest


def _first_module_copy(cmds: list[list[str]]) -> int:
    return next(i for i, c in enumerate(cmds) if "-r" in c or "romfs" in c)


def test_first_deploy_to_a_board_without_main_py(bundle: Path, board: PtyBoard) -> None:
    assert _files(board.root) == {}
    cmds = _without_reset(dep.deploy_commands(board.port, bundle))
    _run(cmds, bundle)  # the removal of a main.py that is not there does not fail
    assert _files(board.root) == _deployed(bundle)
    assert "main.py" in _deployed(bundle) and "lib/hubi_core/p256_table.bin" in _deployed(bundle)
    assert board.soft_resets == len(cmds)  # each mpremote run soft-resets the board first


def test_redeploy_cut_off_after_the_modules_boots_no_old_main(
    bundle: Path, board: PtyBoard, tmp_path: Path
) -> None:
    # an older firmware on the board, deployed the same way
    old = _old_firmware(bundle, tmp_path / "old")
    _run(_without_reset(dep.deploy_commands(board.port, old)), old)
    assert (board.root / "main.py").read_bytes() == OLD_MAIN

    # the new one, cut off (cable pulled) once the modules are copied
    cmds = dep.deploy_commands(board.port, bundle)
    cut = _first_module_copy(cmds)
    _run(cmds[: cut + 1], bundle)
    assert (board.root / "core/wallet.mpy").read_bytes() == (
        bundle / "core/wallet.mpy"
    ).read_bytes()
    # an old main.py would boot over the new modules; without one the board boots to the REPL
    assert not (board.root / "main.py").exists()

    # the full deploy again puts everything back
    _run(_without_reset(cmds), bundle)
    assert _files(board.root) == _deployed(bundle)


def test_romfs_route_removes_main_py_first(bundle: Path, board: PtyBoard) -> None:
    plain = dep.deploy_commands(board.port, bundle)
    rom = dep.deploy_commands(board.port, bundle, romfs=True)
    assert [c[3] for c in rom] == ["exec", "romfs", "fs", "reset"]
    assert rom[0] == plain[0]
    # the filesystem's main.py boots over the ROMFS modules: the removal comes before them
    assert _first_module_copy(rom) == 1
    (board.root / "main.py").write_bytes(OLD_MAIN)
    (board.root / "board.json").write_bytes(b'{"board": "headless"}\n')
    _run(rom[:1], bundle)
    assert _files(board.root) == {"board.json": b'{"board": "headless"}\n'}


def test_redeploy_killed_during_the_copy(bundle: Path, board: PtyBoard, tmp_path: Path) -> None:
    # the older firmware already on the board; mpremote killed (SIGKILL) mid-copy, the board
    # left wherever it was in the raw REPL
    old = _old_firmware(bundle, tmp_path / "old")
    shutil.copytree(
        old, board.root, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".build.json")
    )
    cmds = dep.deploy_commands(board.port, bundle)
    cut = _first_module_copy(cmds)
    _run(cmds[:cut], bundle)
    new_wallet = (bundle / "core/wallet.mpy").read_bytes()
    copying = subprocess.Popen(cmds[cut], cwd=bundle, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while (board.root / "core/wallet.mpy").read_bytes() != new_wallet:
            assert copying.poll() is None and time.monotonic() < deadline
            time.sleep(0.002)
    finally:
        copying.kill()
        copying.wait()
    board_files = _files(board.root)
    # half old, half new modules, and nothing to boot them
    assert board_files["boards/headless.mpy"] == (bundle / "boards/headless.mpy").read_bytes()
    assert board_files["ui/screens.mpy"] == (old / "ui/screens.mpy").read_bytes()
    assert "main.py" not in board_files
    # the next deploy gets through the board's leftover state and puts everything back
    _run(_without_reset(cmds), bundle)
    assert _files(board.root) == _deployed(bundle)
