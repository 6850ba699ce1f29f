"""`hubi consortium init` cut off part-way (killed, or a disk that fills up) left some banks'
keys and no consortium file in the new home, and every rerun was refused ("already holds bank
files that would be overwritten") until the operator moved the keys away by hand. A new home is
now written beside itself and renamed into place when complete: the rerun, once there is room,
just works. Run on a real full disk (a small tmpfs; root with CAP_SYS_ADMIN, as CI runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.cli import main
from tests.small_disk import resize, small_disk

pytestmark = pytest.mark.xdist_group("test_cli_probe27_consortium_init_full")


def _init(home: Path) -> tuple[int, str]:
    res = CliRunner().invoke(
        main, ["consortium", "init", "--home", str(home), "--banks", "BKA,BKB", "--json"]
    )
    assert "Traceback" not in res.output, res.output
    return res.exit_code, res.output


def test_an_init_cut_off_by_a_full_disk_can_be_run_again(tmp_path: Path) -> None:
    # room for both banks' KMC keys (32 KiB each) but not for the trust bundle after them
    with small_disk(tmp_path / "disk", 96 * 1024) as disk:
        home = disk / "home"
        code, out = _init(home)
        assert code == 2 and "No space left" in out, out
        assert not (home / "banks").exists(), "a half-made home is left"
        resize(disk, 4 << 20)
        code, out = _init(home)
        assert code == 0, out
        assert json.loads(out)["epoch"] == 1
        assert sorted(p.name for p in disk.iterdir()) == ["home"]  # nothing left beside it
        for b in ("BKA", "BKB"):
            assert (home / "banks" / b / "kmc.secret").stat().st_size > 30_000
        code, out = _init(home)  # a home that holds a consortium is still never written over
        assert code == 2 and "already holds a consortium" in out, out
