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
    """`data` into `path` atomically, the file given `mode` (folders made as needed, never
    writable by others); what check_write_target refuses is refused."""
    _write(check_write_target(path), data, mode, _PUBLIC_FOLDER)


def write_secret(path: str | os.PathLike, data: bytes) -> None:
    """Secret bytes into `path` atomically, readable by the owner only (from its first byte).

    A folder made for it is the owner's only; the folders it lies in may not be writable by
    anyone (under `umask 000` they were made 0777, and anyone could swap the key file for one
    of their own, or the folder holding it): each of ours that is loses that bit, and one of
    another user's is refused."""
    path = check_write_target(path)
    _make_folders(path.parent, _SECRET_FOLDER)
    _guard_folders(path.parent)  # before the write: a refused folder gets no secret
    _write(path, data, 0o600, _SECRET_FOLDER)


# mkdir modes, narrowed by the umask: a public file's folders never writable by others
_PUBLIC_FOLDER = 0o775
_SECRET_FOLDER = 0o700


def _write(path: Path, data: bytes, mode: int, folder_mode: int) -> None:
    _make_folders(path.parent, folder_mode)
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


def _make_folders(folder: Path, mode: int) -> None:
    """`folder` and the folders above it that are missing: the innermost with `mode`, the rest
    with _PUBLIC_FOLDER (Path.mkdir(parents=True) makes those 0777 less the umask)."""
    if folder.is_dir():
        return
    missing = []
    for d in [folder, *folder.parents]:
        if d.is_dir():
            break
        missing.append(d)
    for d in reversed(missing):
        try:
            os.mkdir(d, mode if d == folder else _PUBLIC_FOLDER)
        except FileExistsError:  # another writer made it meanwhile
            if not d.is_dir():
                raise


def _guard_folders(folder: Path) -> None:
    """No folder from `folder` up to / is writable by anyone (sticky ones like /tmp aside:
    there only a file's owner may rename or remove it). The run of such folders from `folder`
    up (made under umask 000 with it) loses that bit where it is ours; another user's is an
    OSError, and so is any such folder above the first one others cannot write to (not
    changed from here: it may be shared on purpose), since anyone could rename the folders
    below it away and put their own, with their own key, in its place. Looked at as written
    and with its links resolved."""
    uid = os.geteuid()
    seen: set[Path] = set()
    for start in (folder.absolute(), folder.resolve()):
        near = True  # in the run of folders anyone may write to that starts at `folder`
        for d in [start, *start.parents]:
            if d in seen:
                near = False
                continue
            seen.add(d)
            st = os.stat(d)
            if not st.st_mode & stat.S_IWOTH or st.st_mode & stat.S_ISVTX:
                near = False
                continue
            if st.st_uid != uid:
                raise OSError(
                    errno.EPERM,
                    "a folder anyone may write to, and not ours to change: a secret kept under"
                    " it could be swapped or removed by anyone",
                    str(d),
                )
            if not near:
                raise OSError(
                    errno.EPERM,
                    "a folder anyone may write to above the secret's: anyone could swap the"
                    " folders below it, and the secret with them (`chmod o-w` it first)",
                    str(d),
                )
            os.chmod(d, stat.S_IMODE(st.st_mode) & ~stat.S_IWOTH)
