"""A peer that streams bytes for ever without a frame in them (the real link Client and Server).

The decoder reports skipped garbage only when a sync byte or a quiet spell ends the run, and
receive() returned only when a read brought nothing: a token sending garbage without pause hung
every host command (and a host doing so froze a token's serve loop). Both ends now give up at
their timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from hubi_core import link
from hubi_core import protocol as P
from hubi_core.errors import LinkTimeout
from hubi_core.link_client import Client


class Firehose:
    """A link transport whose peer never stops sending: every read brings bytes, none of them
    a frame (what a serial port gives when the far end pours garbage faster than it is read)."""

    def __init__(self, junk: bytes) -> None:
        self.junk = junk * (512 // len(junk))
        self.reads = 0

    def write(self, data: bytes) -> None:
        pass

    def read(self, max_n: int, timeout_ms: int) -> bytes:
        self.reads += 1
        return self.junk[:max_n]

    def readinto(self, buf: memoryview, timeout_ms: int) -> int:
        data = self.read(len(buf), timeout_ms)
        buf[: len(data)] = data
        return len(data)


def _ends(fn: Callable[[], object], limit: float = 60.0) -> list[object]:
    """Run fn in a thread; what it returned or raised, or fail if it is still running."""
    out: list[object] = []

    def go() -> None:
        try:
            out.append(fn())
        except Exception as e:  # noqa: BLE001 - the outcome is what is checked
            out.append(e)

    th = threading.Thread(target=go, daemon=True)
    th.start()
    th.join(limit)
    assert out, f"still running after {limit} s"
    return out


@pytest.mark.parametrize("junk", [b"\x00", b"garbage!"])
def test_a_token_streaming_garbage_does_not_hang_the_host(junk: bytes) -> None:
    c = Client(Firehose(junk), timeout_ms=300, retries=1)
    (got,) = _ends(lambda: c.call(P.PING, b"x"))
    assert isinstance(got, LinkTimeout), got
    assert "no reply to PING (0x02)" in str(got) and "(2 attempts)" in str(got), got


def test_a_host_streaming_garbage_does_not_freeze_the_serve_loop() -> None:
    srv = link.Server(Firehose(b"\x00\x01\x02"), name="token")
    (got,) = _ends(lambda: srv.serve_once(300))
    assert got is False, got
