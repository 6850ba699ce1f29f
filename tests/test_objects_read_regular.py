"""objects.read_regular: the one bounded read of a small file (trust bundles, a merchant's
key, template and settings, consortium files). A FIFO must not hang it, /dev/zero must not
fill memory, and a file one byte past the limit is refused, naming the file and its use."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from hubi import objects


def test_a_file_up_to_the_limit_is_read_whole(tmp_path: Path) -> None:
    f = tmp_path / "k"
    f.write_bytes(b"x" * 100)
    assert objects.read_regular(f, 100, "a key") == b"x" * 100


def test_one_byte_past_the_limit_is_refused_by_name(tmp_path: Path) -> None:
    f = tmp_path / "k"
    f.write_bytes(b"x" * 101)
    with pytest.raises(objects.FileTooLong) as e:
        objects.read_regular(f, 100, "a key")
    assert str(e.value) == f"{f}: more than 100 bytes, too long for a key"


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_what_is_not_a_regular_file_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    path = {"fifo": tmp_path / "p", "device": Path("/dev/zero"), "folder": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    done: list[BaseException] = []

    def read() -> None:
        try:
            objects.read_regular(path, 1 << 20, "a key")
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            done.append(exc)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    assert done, f"read_regular of a {kind} hangs"
    assert isinstance(done[0], ValueError) and not isinstance(done[0], objects.FileTooLong)
    assert str(path) in str(done[0]) and "not a file to read" in str(done[0])
