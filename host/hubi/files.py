"""Files written whole or not at all: a process killed mid-write leaves the old file (or none),
never one cut short. The bytes go to a temporary file of a name of its own in the same folder
(two writers never share one), are synced, and replace the target in one rename; a write that
fails removes its temporary file."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["check_write_target", "write_atomic", "write_secret"]


def check_write_target(path: str | os.PathLike) -> Path:
    """`path` as a Path if write_atomic may write there, else an OSError naming it.

    write_atomic writes beside `path` and renames over it, so a device, FIFO or socket at
    `path`, or a link to anything but a regular file (a device, a folder, nothing), would be
    replaced, not written to: `--out /dev/stdout` run as root took the system's link away. A
    folder itself is left to the rename, which fails on it."""
    path = Path(path)
    # one lstat, then a stat only for a link: three checks in turn (is_file, is_symlink,
    # exists) took a regular file that another writer's rename put there between them for
    # "not a regular file"
    try:
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            mode = os.stat(path).st_mode
            ok = stat.S_ISREG(mode)
        else:
            ok = stat.S_ISREG(mode) or stat.S_ISDIR(mode)
    except FileNotFoundError:  # nothing there (or a link to nothing: refused below)
        ok = not path.is_symlink()
    if not ok:
        raise OSError(
            errno.EINVAL,
            "not a regular file (a device, FIFO or socket, or a link to one, to a folder or to"
            " nothing), which writing here would replace",
            str(path),
        )
    return path


def write_atomic(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    """`data` into `path` atomically, the file given `mode` (folders made as needed); what
    check_write_target refuses is refused."""
    path = check_write_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:  # named by the file asked for, not the temporary one never made
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        os.fchmod(fd, mode)  # mkstemp makes it 0600: a public file keeps the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_secret(path: str | os.PathLike, data: bytes) -> None:
    """Secret bytes into `path` atomically, readable by the owner only (from its first byte)."""
    write_atomic(path, data, mode=0o600)
