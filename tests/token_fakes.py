"""A fake token for the host's tests: the real link Server on a pseudo-terminal, with handlers
that answer what the test says (type -> bytes, or callable(payload) -> bytes), and the payloads
it was sent. No tests here."""

from __future__ import annotations

import os
import pty
import threading
import time
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from click.testing import CliRunner

from hubi.cli import main
from hubi_core import link
from hubi_core import protocol as P

__all__ = ["FakeToken", "fake_token", "run"]


class FakeToken:
    """The real link Server on a pty; handlers answer from `replies`; payloads are kept."""

    def __init__(self, replies: dict[int, bytes | Callable[[bytes], bytes]]) -> None:
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        r = os.fdopen(os.dup(self.master), "rb", buffering=0)
        w = os.fdopen(os.dup(self.master), "wb", buffering=0)
        self.streams = (r, w)
        self.srv = link.Server(link.StreamTransport(r, w), name="fake-token")
        self.got: list[tuple[int, bytes]] = []
        self.stop = threading.Event()
        for t, reply in {P.SET_TIME: b"", **replies}.items():
            self.srv.handle(t, self._handler(t, reply))
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _handler(self, t: int, reply: bytes | Callable[[bytes], bytes]) -> Callable:
        def handle(payload: memoryview) -> bytes:
            self.got.append((t, bytes(payload)))
            return reply(bytes(payload)) if callable(reply) else reply

        return handle

    def _serve(self) -> None:
        while not self.stop.is_set():
            self.srv.serve_once(50)

    def wait_forever(self, _payload: bytes) -> bytes:
        """WAIT every 250 ms (for 8 s: longer than the host's limit in the test, and then the
        next host is served)."""
        end = time.monotonic() + 8
        while not self.stop.is_set() and time.monotonic() < end:
            self.srv.keepalive()
            time.sleep(0.05)
        return b""

    def types(self) -> list[int]:
        return [t for t, _ in self.got]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for s in self.streams:
            s.close()
        os.close(self.master)
        os.close(self.slave)


@contextmanager
def fake_token(replies: dict[int, bytes | Callable[[bytes], bytes]]) -> Iterator[FakeToken]:
    f = FakeToken(replies)
    f.thread.start()
    try:
        yield f
    finally:
        f.close()


def run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["token", *args])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r.exit_code, " ".join(r.output.split())
