"""Keep-alive HTTP/1.1 POSTs on the standard library, for the per-note calls between processes.

A bank node makes a few requests for every interbank note: etcd claims through the JSON gateway
and signed validation requests to its peers, and it reads every log entry from an etcd watch
stream. An etcd put through ``httpx`` costs about 670 µs of client CPU on loopback here, through
a reused ``http.client`` connection about 310 µs (bench/consortium.md). This module is the part of
a client those calls need: a pool of idle connections to one server, timeouts, a reply read
line by line as it arrives, and errors that say what failed.

A connection taken from the pool is first checked with a zero-timeout ``select``: an idle
socket that is readable has been closed by the server (or holds garbage), so it is dropped
instead of failing the request. If a reused connection still turns out closed before any reply
arrives, the request is sent once more on a new connection: callers use this only for requests
that are safe to repeat (an etcd create-if-absent, a validation request).

A POST's timeout is a deadline for the whole exchange, not for each read: a server that sends a
byte now and then would otherwise hold the request open for ever. The process's deadline thread
(``deadlines``) shuts down the socket of an exchange whose deadline has passed, which wakes the read
blocked on it. :meth:`HttpPool.close` shuts down the sockets of exchanges still under way, so
that a thread waiting for a server that does not answer does not hold up its process's exit.
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple
from urllib.parse import urlsplit

from hubi.infra.deadlines import DEADLINES, shut

__all__ = ["HttpFailure", "HttpPool", "HttpReply", "HttpReplyTooLarge", "HttpStream", "HttpTimeout"]


class HttpFailure(Exception):
    """No reply: the connection could not be made, or broke before the reply was read."""


class HttpTimeout(HttpFailure):
    """No reply within the timeout."""


class HttpReplyTooLarge(HttpFailure):
    """A reply longer than the caller's ``max_reply``: not read further (the server answered,
    but with more than any answer it should give)."""


MAX_LINE = 64 * 1024 * 1024  # a streamed reply's line (an etcd watch message) is held whole


class HttpReply(NamedTuple):
    status: int
    body: bytes


class HttpStream:
    """A reply read as it arrives (see :meth:`HttpPool.stream`)."""

    def __init__(self, origin: str, resp: http.client.HTTPResponse, idle_timeout: float):
        self.origin = origin
        self.status = resp.status
        self._resp = resp
        self._idle = idle_timeout

    def read(self) -> bytes:
        """The rest of the reply (for an error reply's body)."""
        return self._read(self._resp.read)

    def lines(self, max_line: int = MAX_LINE) -> Iterator[bytes]:
        """The reply's lines as they come; ends when the server ends the reply. Raises
        :class:`HttpTimeout` when no byte came for ``idle_timeout`` s, and
        :class:`HttpReplyTooLarge` for a line longer than ``max_line`` bytes (not read
        further: it would be held whole in memory)."""
        resp = self._resp
        while True:
            line = self._read(lambda: resp.readline(max_line + 1))
            if not line:
                return
            if len(line) > max_line and not line.endswith(b"\n"):
                raise HttpReplyTooLarge(
                    f"{self.origin}: a line of more than {max_line} bytes in a streamed reply"
                )
            yield line

    def _read(self, fn: Callable[[], bytes]) -> bytes:
        try:
            return fn()
        except TimeoutError:
            raise HttpTimeout(f"{self.origin}: nothing for {self._idle:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise HttpFailure(f"{self.origin}: {type(exc).__name__}: {exc}") from None


def _body(resp: http.client.HTTPResponse, max_reply: int | None) -> bytes | None:
    """The reply's body, or None when it is longer than ``max_reply`` bytes: by its
    Content-Length (then nothing is read), or once that much has been read."""
    if max_reply is None:
        return resp.read()
    if (resp.length or 0) > max_reply:
        return None
    data = resp.read(max_reply + 1)
    return None if len(data) > max_reply else data


# a reused connection that fails like this was closed by the server while idle
_CLOSED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class HttpPool:
    """Idle keep-alive connections to one server, shared by threads. ``base_url`` is
    ``http(s)://host:port`` with an optional path that every request path is appended to."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 1.0,
        max_idle: int = 16,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self._prefix = parts.path.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self._idle: list[http.client.HTTPConnection] = []
        self._busy: set[socket.socket] = set()  # sockets of exchanges under way
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"HttpPool({self.origin!r}, idle={len(self._idle)})"

    def _new(self, timeout: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=min(self.connect_timeout, timeout))
        conn.connect()
        return conn

    def _take(self) -> http.client.HTTPConnection | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            sock = conn.sock
            if sock is not None and not select.select([sock], [], [], 0)[0]:
                return conn
            conn.close()

    def _give(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def post(
        self,
        path: str,
        body: bytes,
        headers: dict[str, str],
        *,
        timeout: float | None = None,
        max_reply: int | None = None,
    ) -> HttpReply:
        """POST ``body`` to ``path``; the reply's status and body. Raises :class:`HttpTimeout`
        or :class:`HttpFailure` (naming the origin and the error) when there is no reply, and
        :class:`HttpReplyTooLarge` for a body over ``max_reply`` bytes (read no further: a
        server that sends gigabytes would otherwise fill this process's memory)."""
        limit = self.timeout if timeout is None else timeout
        end = time.monotonic() + limit
        conn = self._take()
        reused = conn is not None
        while True:
            token, sock = None, None
            try:
                if conn is None:
                    conn = self._new(max(0.001, end - time.monotonic()))
                sock = conn.sock
                assert sock is not None
                sock.settimeout(max(0.001, end - time.monotonic()))
                token = self._begin(sock, end)
                if token is None:
                    conn.close()
                    raise HttpFailure(f"{self.origin}: the client was closed")
                conn.request("POST", self._prefix + path, body=body, headers=headers)
                resp = conn.getresponse()
                data = _body(resp, max_reply)
            except (OSError, http.client.HTTPException) as exc:
                late = self._end(sock, token)
                if conn is not None:
                    conn.close()
                if late or isinstance(exc, TimeoutError):
                    raise HttpTimeout(f"{self.origin}: timed out after {limit:g} s") from None
                if self._closed:
                    raise HttpFailure(f"{self.origin}: the client was closed") from None
                if isinstance(exc, _CLOSED) and reused:
                    # closed while idle, just after the check: once more, on a new one
                    conn, reused = None, False
                    continue
                if isinstance(exc, _CLOSED):
                    raise HttpFailure(
                        f"{self.origin}: connection closed before the reply"
                    ) from None
                raise HttpFailure(f"{self.origin}: {type(exc).__name__}: {exc}") from None
            late = self._end(sock, token)  # shut down as the reply came in: not reused
            if data is None:
                conn.close()  # the rest of the reply is still on the line
                raise HttpReplyTooLarge(
                    f"{self.origin}: a reply of more than {max_reply} bytes (HTTP {resp.status})"
                )
            if late or resp.will_close:
                conn.close()
            else:
                self._give(conn)
            return HttpReply(resp.status, data)

    def _begin(self, sock: socket.socket, end: float) -> int | None:
        """Watch an exchange on ``sock`` until ``end`` (monotonic), and let :meth:`close` wake
        it; None if the pool is closed."""
        with self._lock:
            if self._closed:
                return None
            self._busy.add(sock)
        return DEADLINES.watch(max(0.0, end - time.monotonic()), lambda: shut(sock))

    def _end(self, sock: socket.socket | None, token: int | None) -> bool:
        """The exchange is over; True if its deadline had passed and its socket was shut."""
        if sock is None or token is None:
            return False
        with self._lock:
            self._busy.discard(sock)
        return DEADLINES.done(token)

    @contextmanager
    def stream(
        self,
        path: str,
        body: bytes,
        headers: dict[str, str],
        *,
        idle_timeout: float,
        timeout: float | None = None,
    ) -> Iterator[HttpStream]:
        """POST on a connection of its own and read the reply as it arrives (a watch). Until
        the reply's headers: ``timeout`` and :class:`HttpFailure`; after them, each read waits
        up to ``idle_timeout``. The connection is closed when the block ends."""
        limit = self.timeout if timeout is None else timeout
        conn = None
        try:
            conn = self._new(limit)
            sock = conn.sock  # kept: a reply read until close takes it from the connection
            assert sock is not None
            sock.settimeout(limit)
            conn.request("POST", self._prefix + path, body=body, headers=headers)
            resp = conn.getresponse()
            sock.settimeout(idle_timeout)
        except (OSError, http.client.HTTPException) as exc:
            if conn is not None:
                conn.close()
            raise HttpFailure(f"{self.origin}: {type(exc).__name__}: {exc}") from None
        try:
            yield HttpStream(self.origin, resp, idle_timeout)
        finally:
            conn.close()

    def close(self) -> None:
        """Close the idle connections and wake the exchanges under way (they fail at once)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            busy, self._busy = list(self._busy), set()
        for conn in idle:
            conn.close()
        for sock in busy:
            shut(sock)
