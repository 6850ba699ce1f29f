"""Locks between processes, for the runs that may meet on one folder or file (two terminals, a
retried script, a service manager plus a manual start). Each is an ``flock``: the kernel drops
it when its process dies, even by SIGKILL, so none outlives a killed command. The descriptors
are close-on-exec: no child process (a bank node, etcd, the simulator) keeps one by accident."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

__all__ = ["Held", "folder_lock", "hold_folder", "hold_lock_file"]


class Held(Exception):
    """The lock is another process's; ``holder`` is what that process wrote in the lock file."""

    def __init__(self, lock: Path, holder: str):
        super().__init__(f"{holder} holds {lock}")
        self.lock = lock
        self.holder = holder


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """An exclusive lock on `folder` itself, waited for and held through the block: a second run
    that looks for a file, then writes it, finds the first run's file instead of writing over it.
    OSError if the folder cannot be opened."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def hold_folder(folder: str | os.PathLike) -> int:
    """An exclusive lock on `folder` itself, taken without waiting (for a lock held for a whole
    run, over a folder whose files the run replaces); the descriptor to close to let go. Held
    if another process has it."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Held(Path(folder), "another process") from None
    return fd


def hold_lock_file(lock: str | os.PathLike) -> int:
    """An exclusive lock on the file `lock` (made if need be), taken without waiting, its holder
    ("pid N on HOST") written into it for whoever is refused; the descriptor to close to let go.
    Held if another process has it."""
    lock = Path(lock)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "a process"
        os.close(fd)
        raise Held(lock, holder) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
    return fd
