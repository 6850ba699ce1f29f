"""`consortium init` writes a fresh home beside itself and renames it into place (15375d5).
A --home that is a symbolic link to an empty folder (a home kept on another disk) was set up
in that folder before; the rename now lands on the link itself: the init failed with
"Not a directory" and left HOME.init-partial beside the link, holding the banks' secret keys.
Real `hubi consortium init` process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("test_review27_consortium_init_symlink")

HUBI = [sys.executable, "-m", "hubi.cli"]


def test_init_through_a_link_to_an_empty_folder_sets_up_that_folder(tmp_path: Path) -> None:
    target = tmp_path / "disk" / "hubi-home"
    target.mkdir(parents=True)
    link = tmp_path / "home"
    link.symlink_to(target)
    proc = subprocess.run(
        [*HUBI, "consortium", "init", "--home", str(link), "--banks", "BKA,BKB", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "error" not in json.loads(proc.stdout), proc.stdout
    assert link.is_symlink(), "the link was replaced by a folder"
    assert (target / "trust" / "consortium.json").is_file()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["disk", "home"], left  # no HOME.init-partial with keys in it


def test_init_of_the_empty_folder_it_runs_in_keeps_that_folder(tmp_path: Path) -> None:
    """`cd new-folder; hubi consortium init --home .` failed: "PosixPath('.') has an empty
    name"; with the folder's full path it replaced the folder the shell stood in (the shell
    then in a deleted folder, its `ls` empty)."""
    here = tmp_path / "new-consortium"
    here.mkdir()
    inode = here.stat().st_ino
    proc = subprocess.run(
        [*HUBI, "consortium", "init", "--home", ".", "--banks", "BKA,BKB", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=here,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "error" not in json.loads(proc.stdout), proc.stdout
    assert here.stat().st_ino == inode, "the folder run in was replaced by another"
    assert (here / "trust" / "consortium.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new-consortium"]
