"""Free loopback TCP ports for servers that the tests and ``hubi consortium up`` start.

Why not just ``bind(("127.0.0.1", 0))``: the kernel hands such ports out of the ephemeral range,
the same range every outgoing connection (httpx, psycopg, etcd peers) takes its local port from.
Between closing the probe socket and the server binding the port — or while a killed etcd member
is down before its restart on the same port — an outgoing connection can grab it.

So ports come from a range *below* the kernel's ephemeral range, and each handed-out port is
reserved across processes by an exclusive ``flock`` on ``<tmp>/hubi-ports-<uid>/<port>.lock``,
held until :func:`release_port` or until the process exits (the kernel drops the lock then, so a
crashed run never leaks reservations). Two pytest-xdist workers, or two test runs side by side,
therefore never receive the same port.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import socket
import tempfile
import threading
from pathlib import Path

__all__ = [
    "PortRangeExhausted",
    "free_port",
    "free_ports",
    "port_taken",
    "release_port",
    "reserve_port",
    "reserved_ports",
]

_LOCK = threading.Lock()
_HELD: dict[int, int] = {}  # port -> fd of its lock file (kept open while reserved)
_DEFAULT_LOW = 20000


class PortRangeExhausted(RuntimeError):
    """No free port was found in the allocation range."""


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def _allocation_range() -> tuple[int, int]:
    """Half-open [low, high) range of candidate ports, outside the ephemeral range."""
    env = os.environ.get("HUBI_PORT_RANGE")  # e.g. "21000-23000"
    if env:
        return _parse_range(env)
    eph_lo, eph_hi = _ephemeral_range()
    if eph_lo - _DEFAULT_LOW >= 1000:
        return _DEFAULT_LOW, eph_lo
    if eph_lo > 2048:
        return 1024, eph_lo
    return eph_hi + 1, 65536


def _parse_range(text: str) -> tuple[int, int]:
    """HUBI_PORT_RANGE's LOW-HIGH, or ValueError naming it (a typo was `not enough values to
    unpack`, and a range from 0 handed out port 0: any port the kernel picks)."""
    lo_s, sep, hi_s = text.partition("-")
    try:
        lo, hi = int(lo_s), int(hi_s)
    except ValueError:
        lo = hi = 0
    if not sep or not 0 < lo < hi <= 65536:
        raise ValueError(
            "HUBI_PORT_RANGE=%r: expected LOW-HIGH with 1 <= LOW < HIGH <= 65536, e.g."
            " 21000-23000 (HIGH itself is not used)" % text
        )
    return lo, hi


def _lock_dir() -> Path:
    d = Path(tempfile.gettempdir()) / ("hubi-ports-%d" % os.getuid())
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # Servers (Go's net package, PostgreSQL) set SO_REUSEADDR, so sockets in TIME_WAIT
        # do not stop them; probe the same way.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _try_reserve(port: int, lock_dir: Path) -> bool:
    path = lock_dir / ("%d.lock" % port)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    _HELD[port] = fd
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """Reserve and return a TCP port that is free on ``host`` (a loopback address).

    The port stays reserved for this process until :func:`release_port` is called or the
    process exits; nothing else that uses this module is handed the same port meanwhile.
    """
    low, high = _allocation_range()
    span = high - low
    if span <= 0:
        raise PortRangeExhausted("empty port range [%d, %d)" % (low, high))
    lock_dir = _lock_dir()
    start = random.SystemRandom().randrange(span)
    with _LOCK:
        for i in range(span):
            port = low + (start + i) % span
            if port in _HELD:
                continue
            if not _try_reserve(port, lock_dir):
                continue
            if _bindable(host, port):
                return port
            _release_locked(port)
    raise PortRangeExhausted("no free TCP port on %s in [%d, %d)" % (host, low, high))


def reserve_port(port: int, host: str = "127.0.0.1") -> bool:
    """Reserve one given port (e.g. a restarted server's old one); False if taken or busy."""
    if not 0 < port < 65536:  # bind() would raise OverflowError, after the lock file is made
        raise ValueError("port %d is not 1-65535" % port)
    lock_dir = _lock_dir()
    with _LOCK:
        if port in _HELD:
            return True
        if not _try_reserve(port, lock_dir):
            return False
        if _bindable(host, port):
            return True
        _release_locked(port)
        return False


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """True if something binds `port` on `host` now (a reservation alone does not)."""
    return not _bindable(host, port)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Reserve ``count`` distinct free ports (see :func:`free_port`)."""
    return [free_port(host) for _ in range(count)]


def _release_locked(port: int) -> None:
    fd = _HELD.pop(port, None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock


def release_port(port: int) -> None:
    """Give a reserved port back (a no-op for ports this process does not hold)."""
    with _LOCK:
        _release_locked(port)


def reserved_ports() -> frozenset[int]:
    """Ports this process currently holds."""
    with _LOCK:
        return frozenset(_HELD)
