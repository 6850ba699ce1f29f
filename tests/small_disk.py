"""A small real disk for tests of a full one: a tmpfs of a given size mounted on a directory (as
root), so that writes past its size fail with ENOSPC exactly as on a full disk, and ``resize``
makes room again without touching what is on it."""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["mount", *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )


@contextlib.contextmanager
def small_disk(path: Path, size: int, owner: str | None = None) -> Iterator[Path]:
    """`path` as a tmpfs of `size` bytes (its root owned by system user `owner`), unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size},mode=0700"
    if owner is not None:
        pw = pwd.getpwnam(owner)
        opts += f",uid={pw.pw_uid},gid={pw.pw_gid}"
    res = _mount("-t", "tmpfs", "-o", opts, "hubi-small-disk", str(path))
    if res.returncode != 0:  # mounting needs root with CAP_SYS_ADMIN, as the test machines have
        pytest.fail(
            f"cannot mount a tmpfs on {path} (uid {os.geteuid()}; run the tests as root with "
            f"CAP_SYS_ADMIN): {res.stderr.strip()}"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], capture_output=True, timeout=30)


def used(path: Path) -> int:
    """Bytes in use on the disk mounted at `path`."""
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def resize(path: Path, size: int) -> None:
    """Give the tmpfs at `path` a new size (not below what it holds)."""
    res = _mount("-o", f"remount,size={size}", str(path))
    assert res.returncode == 0, f"cannot resize {path} to {size} bytes: {res.stderr.strip()}"


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """`folder` bind-mounted read-only onto itself (root ignores mode bits), unmounted after."""
    res = _mount("--bind", str(folder), str(folder))
    if res.returncode != 0:  # needs root with CAP_SYS_ADMIN, as the test machines have
        pytest.fail(f"cannot bind-mount {folder}: {res.stderr.strip()}")
    try:
        res = _mount("-o", "remount,bind,ro", str(folder))
        assert res.returncode == 0, res.stderr
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True, timeout=30)
