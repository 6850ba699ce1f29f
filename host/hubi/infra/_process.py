"""Child-process helpers shared by the etcd and PostgreSQL launchers (private).

Every server runs in its own process group (so a stop reaches its helpers too), with its output
appended to a log file (so a failed start can show the log tail), and optionally with a
parent-death signal so that it cannot outlive the Python process that started it, even when that
process is killed with SIGKILL and has no chance to run its finalizers.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1

try:
    _libc: ctypes.CDLL | None = (
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if sys.platform.startswith("linux")
        else None
    )
except OSError:  # pragma: no cover - exotic libc
    _libc = None


def _pdeathsig_preexec(sig: int) -> Callable[[], None] | None:
    """A preexec_fn that asks Linux to send ``sig`` to the child when its parent thread exits.

    preexec_fn runs after Popen has switched user, so the setting survives the credential change
    (which would clear it). Note: the signal fires when the *thread* that spawned the child
    exits; start servers from a long-lived thread (the main thread in pytest and the CLI).
    """
    if _libc is None:
        return None
    prctl = _libc.prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # parent already gone before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """The preexec_fn :func:`spawn` uses, for a child started with subprocess.Popen directly
    (the token simulator's, on a pseudo-terminal): without it a SIGKILLed `hubi demo` left
    its simulator running for ever. None where Linux's prctl is missing."""
    return _pdeathsig_preexec(sig)


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
    die_with_parent: bool = True,
    pdeath_signal: int = signal.SIGKILL,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session/process group, output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(
            # UTC and the argv's own bytes: a path the locale could not decode (LANG=C and a
            # folder "Zürich") was a UnicodeEncodeError here, and the time read by TZ
            (
                "\n--- %s UTC starting: %s\n"
                % (time.strftime("%H:%M:%S", time.gmtime()), " ".join(argv))
            ).encode("utf-8", "surrogateescape")
        )
        log.flush()
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(cwd),
            env=dict(env) if env is not None else None,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_pdeathsig_preexec(pdeath_signal) if die_with_parent else None,
            user=user,
            group=_primary_group(user) if user is not None else None,
            extra_groups=[] if user is not None else None,
        )


def _primary_group(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to the child's process group (ignoring one that is already gone)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def stop(proc: subprocess.Popen[bytes], *, first: int = signal.SIGTERM, grace: float = 10.0) -> int:
    """Send ``first`` to the process group, wait up to ``grace`` s, then SIGKILL the group.

    Returns the exit code. Always reaps the child so no zombie is left.
    """
    if proc.poll() is None:
        signal_group(proc, first)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    # Kill whatever is left in the group (also helpers of a leader that already exited).
    signal_group(proc, signal.SIGKILL)
    return proc.wait()


def stop_all(
    procs: Sequence[subprocess.Popen[bytes]], *, first: int = signal.SIGTERM, grace: float = 10.0
) -> None:
    """:func:`stop` for several children at once: signal all, then wait (``grace`` s in total)."""
    for p in procs:
        if p.poll() is None:
            signal_group(p, first)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        signal_group(p, signal.SIGKILL)
        p.wait()


def kill9(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole process group and reap the leader."""
    signal_group(proc, signal.SIGKILL)
    proc.wait()


def exit_text(code: int | None) -> str:
    """How a child ended, in words: "exited with 3", or "was killed by SIGTERM" for Popen's
    negative return codes (a bare -15 in a log told nobody that a signal ended it)."""
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with {code}"


def log_size(path: Path) -> int:
    """Current size of a log file (0 if missing): pass it to :func:`log_tail` as ``since``."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def log_tail(path: Path, lines: int = 40, since: int = 0) -> str:
    """The last ``lines`` lines of a log file, written after byte offset ``since``."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(since, size - 64 * 1024, 0))
            data = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return "(no log at %s: %s)" % (path, exc)
    return "\n".join(data.splitlines()[-lines:])
