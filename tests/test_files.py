"""hubi.files: whole or not at all, a temporary file of its own per write, none left behind."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from hubi import qrscan
from hubi.files import write_atomic, write_secret


def test_two_writers_of_one_file_never_collide(tmp_path: Path) -> None:
    """With one fixed temporary name (OUT.tmp) two writers renamed each other's half-written
    file, or found theirs gone (FileNotFoundError); each write now has its own."""
    out = tmp_path / "note.png"
    errors: list[BaseException] = []
    blobs = [bytes([i]) * 200_000 for i in range(4)]

    def write(data: bytes) -> None:
        try:
            for _ in range(25):
                write_atomic(out, data)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(b,)) for b in blobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert out.read_bytes() in blobs  # one writer's bytes, whole
    assert [p.name for p in tmp_path.iterdir()] == ["note.png"]


def test_a_write_that_fails_leaves_no_temporary_file(tmp_path: Path) -> None:
    """OUT a folder: the rename fails, and the temporary file goes with it (it was left
    behind beside OUT, where the next run of the same command failed the same way)."""
    out = tmp_path / "receipt.png"
    out.mkdir()
    with pytest.raises(IsADirectoryError):
        qrscan.render_png(b"hubi", out)
    assert [p.name for p in tmp_path.iterdir()] == ["receipt.png"] and out.is_dir()


def test_modes_secret_for_the_owner_only_public_as_usual(tmp_path: Path) -> None:
    write_secret(tmp_path / "k" / "a.secret", b"\x01" * 32)
    write_atomic(tmp_path / "t" / "a.template", b"tpl")
    assert stat.S_IMODE((tmp_path / "k" / "a.secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "t" / "a.template").stat().st_mode) == 0o644
    write_secret(tmp_path / "k" / "a.secret", b"\x02" * 32)  # replacing keeps the mode
    assert (tmp_path / "k" / "a.secret").read_bytes() == b"\x02" * 32
    assert stat.S_IMODE((tmp_path / "k" / "a.secret").stat().st_mode) == 0o600
