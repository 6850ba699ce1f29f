"""Hostile inputs to `hubi token deploy` / `flash` and to the firmware's board file: a build
folder that holds the user's files, "." as the folder, a folder that cannot be written, a
firmware image that cannot be read, a damaged /board.json (real MicroPython)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.cli import main
from hubi.token import deploy as dep
from tests.mpy import FIRMWARE, micropython_exe, mpy_env


def _deploy(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(
        main, ["token", "deploy", "--port", "/dev/ttyUSB0", "--board", "headless", *args]
    )
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exc_info
    return r.exit_code, " ".join(r.output.split())


def test_deploy_out_never_deletes_the_users_files(tmp_path: Path) -> None:
    # `--out ~/project` deleted the whole folder and put the bundle in its place
    mine = tmp_path / "project"
    (mine / "src").mkdir(parents=True)
    (mine / "thesis.txt").write_text("four years of work")
    (mine / "src" / "a.py").write_text("print(1)")
    code, out = _deploy("--dry-run", "--out", str(mine))
    assert code == 2, out
    assert str(mine) in out and "holds other files" in out and "nothing was changed" in out
    assert (mine / "thesis.txt").read_text() == "four years of work"
    assert sorted(p.name for p in mine.rglob("*")) == ["a.py", "src", "thesis.txt"]
    # a new folder, an empty one, and a bundle built before are fine (built again in place)
    for folder in (tmp_path / "new", tmp_path / "empty", tmp_path / "new"):
        folder.mkdir(exist_ok=True)
        code, out = _deploy("--dry-run", "--out", str(folder))
        assert code == 0, out
        assert json.loads((folder / "board.json").read_text()) == {"board": "headless"}
        assert (folder / "core" / "wallet.mpy").is_file()


def test_deploy_out_dot_and_unwritable_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `--out .` was a ValueError traceback (and, with a name, the build deleted the folder
    # the shell stands in); a folder that cannot be written was an OSError traceback
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    for out_dir in (".", "..", str(here)):
        code, out = _deploy("--dry-run", "--out", out_dir)
        assert code == 2 and "is the current folder or holds it" in out, out
    assert here.is_dir() and not any(here.iterdir())
    code, out = _deploy("--dry-run", "--out", "sub")  # a new folder under "." is fine
    assert code == 0 and (here / "sub" / "app.mpy").is_file(), out
    code, out = _deploy("--dry-run", "--out", "/proc/hubi-bundle")
    assert code == 2 and "cannot build the bundle in /proc/hubi-bundle" in out, out


def test_deploy_romfs_keeps_a_users_rom_folder(tmp_path: Path) -> None:
    # the ROMFS copy goes beside the bundle (OUT-rom): a folder of that name that is not such
    # a copy was deleted
    bundle = tmp_path / "b"
    rom = tmp_path / "b-rom"
    rom.mkdir()
    (rom / "photos.txt").write_text("mine")
    code, out = _deploy("--dry-run", "--romfs", "--out", str(bundle))
    assert code == 2 and str(rom) in out and "holds other files" in out, out
    assert (rom / "photos.txt").read_text() == "mine"
    (rom / "photos.txt").unlink()
    code, out = _deploy("--dry-run", "--romfs", "--out", str(bundle))
    assert code == 0 and "romfs --no-mpy deploy" in out, out
    code, out = _deploy("--dry-run", "--romfs", "--out", str(bundle))  # its own copy: again
    assert code == 0, out
    assert (rom / "core" / "wallet.mpy").is_file() and not (rom / "main.py").exists()


def test_flash_image_that_cannot_be_read() -> None:
    r = CliRunner().invoke(
        main, ["token", "flash", "--port", "p", "--firmware", "/proc/self/mem", "--dry-run"]
    )
    assert r.exit_code == 2, r.output
    assert "cannot read /proc/self/mem" in " ".join(r.output.split())
    with pytest.raises(dep.DeployError, match="cannot read"):
        dep.check_image(Path("/proc/self/mem"), "esp32")


@pytest.mark.micropython
@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('{"board": "headl', "is damaged (syntax error in JSON)"),
        ("", "is damaged"),
        ('["headless"]', "is not a JSON object"),
        ('"headless"', "is not a JSON object"),
    ],
)
def test_damaged_board_file_is_named(tmp_path: Path, text: str, said: str) -> None:
    # the firmware's config (/board.json on a board, the simulator's config file) damaged:
    # a bare "ValueError: syntax error in JSON" or an AttributeError said nothing useful
    cfg = tmp_path / "board.json"
    cfg.write_text(text)
    proc = subprocess.run(
        [micropython_exe(), str(FIRMWARE / "main.py"), str(cfg)],
        env=mpy_env(),
        capture_output=True,
        timeout=120,
    )
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert f"ValueError: {cfg} {said}" in err and "hubi token deploy" in err, err


def _sims_on(state: Path) -> list[int]:
    """Processes whose command line names `state` (a simulator started on it)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if str(state).encode() in cmd:
                out.append(int(d.name))
    return out


@pytest.mark.micropython
def test_sim_port_file_that_cannot_be_written(tmp_path: Path) -> None:
    # the port file was written after the simulator started: an OSError traceback, and the
    # simulator went on running with no one to stop it
    state = tmp_path / "state"
    r = CliRunner().invoke(
        main,
        ["token", "sim", "--state", str(state), "--profile", "headless", "--no-keyboard",
         "--port-file", "/proc/hubi-port"],
    )  # fmt: skip
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.exc_info
    assert "token sim: No such file or directory: /proc/hubi-port" in r.output
    assert _sims_on(state) == []
    r = CliRunner().invoke(main, ["token", "sim", "--state", "/proc/hubi-state", "--no-keyboard"])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.exc_info
    assert "token sim: No such file or directory: /proc/hubi-state" in r.output
