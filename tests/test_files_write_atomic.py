"""write_atomic writes beside its target and renames over it: a device, FIFO or socket there
(or a link to one) was replaced, not written to; run as root, a link to /dev/null given as an
output file took the link (or the device node itself) away. Such a target is now an OSError
naming it, and it is left as it was."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from hubi.files import write_atomic, write_secret


def test_a_device_fifo_or_socket_target_is_refused_and_left_alone(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    to_null = tmp_path / "null-link"
    to_null.symlink_to("/dev/null")
    sock_path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        for target, kind in (
            (fifo, stat.S_ISFIFO),
            (to_null, stat.S_ISCHR),
            (sock_path, stat.S_ISSOCK),
        ):
            for write in (write_atomic, write_secret):
                with pytest.raises(OSError) as caught:
                    write(target, b"data")
                assert caught.value.filename == str(target)
                assert "not a regular file" in str(caught.value)
                assert kind(os.stat(target).st_mode)  # still what it was
        assert to_null.is_symlink() and os.readlink(to_null) == "/dev/null"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "null-link", "sock"]
    finally:
        sock.close()


def test_regular_files_and_links_to_them_are_written(tmp_path: Path) -> None:
    write_atomic(tmp_path / "new" / "a.bin", b"one")
    assert (tmp_path / "new" / "a.bin").read_bytes() == b"one"
    write_atomic(tmp_path / "new" / "a.bin", b"two")  # replaced whole
    assert (tmp_path / "new" / "a.bin").read_bytes() == b"two"
    with pytest.raises(IsADirectoryError):  # a folder: the rename says so
        write_atomic(tmp_path / "new", b"x")


def test_a_link_to_a_folder_or_to_nothing_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    for name, target in (("to-folder", tmp_path / "folder"), ("dangling", tmp_path / "none")):
        link = tmp_path / name
        link.symlink_to(target)
        with pytest.raises(OSError) as caught:
            write_atomic(link, b"data")
        assert caught.value.filename == str(link) and "not a regular file" in str(caught.value)
        assert link.is_symlink() and os.readlink(link) == str(target)
    assert not (tmp_path / "none").exists() and not any((tmp_path / "folder").iterdir())
    real = tmp_path / "real.txt"  # a link to a regular file: the link is replaced, as before
    real.write_bytes(b"old")
    (tmp_path / "to-file").symlink_to(real)
    write_atomic(tmp_path / "to-file", b"new")
    assert (tmp_path / "to-file").read_bytes() == b"new"
