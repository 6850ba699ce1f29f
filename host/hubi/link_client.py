"""Host end of the serial link: a pyserial transport and ``connect()``.

The session itself (``Client``: requests, retries, bulk transfer, version negotiation) is
shared code (``hubi_core.link`` / ``hubi_core.link_client``, the same code the token runs), so this module only adapts pyserial to
the link's transport interface (``write(data)``, ``read(max_n, timeout_ms)``,
``readinto(buf, timeout_ms)``). Works with a board's UART or USB-CDC port and with the
simulator's pseudo-terminal path alike, and with pyserial URLs (``loop://``,
``socket://host:port``, ``rfc2217://...``).

    from hubi.link_client import connect
    with connect("/dev/ttyUSB0") as link:       # opens the port and says HELLO
        print(link.peer)                         # {"version": 1, "max_payload": 1024, ...}
        reply = link.call(MY_REQUEST, payload)   # bytes; raises hubi_core.errors.LinkError
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable, Iterable
from typing import Any

import serial

from hubi_core import protocol as P
from hubi_core.errors import LinkClosed, LinkError
from hubi_core.link_client import Client

__all__ = ["SerialTransport", "connect", "Client"]


class SerialTransport:
    """Link transport over a pyserial port (device path or pyserial URL).

    The port runs with ``timeout=0`` (non-blocking reads); waiting is done with select() on
    the port's file descriptor where there is one, else by polling ``in_waiting``. Errors of
    the port (unplugged board, simulator exited) become ``LinkClosed``.
    """

    def __init__(
        self,
        port: str | serial.SerialBase,
        baudrate: int = 115200,
        *,
        exclusive: bool | None = None,
        **serial_kwargs: Any,
    ) -> None:
        if isinstance(port, serial.SerialBase):
            self.serial = port
            self.serial.timeout = 0
        else:
            if exclusive is not None:
                serial_kwargs["exclusive"] = exclusive
            try:
                self.serial = serial.serial_for_url(
                    port, baudrate=baudrate, timeout=0, **serial_kwargs
                )
            except (serial.SerialException, OSError, ValueError) as e:
                raise LinkClosed(f"cannot open serial port {port!r}: {e}") from e
        self.port = getattr(self.serial, "port", None) or str(port)
        self._fd: int | None
        try:
            self._fd = self.serial.fileno()
        except (AttributeError, OSError, ValueError, serial.SerialException):
            self._fd = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            n = self.serial.write(data)
        except (serial.SerialException, OSError) as e:
            raise LinkClosed(f"serial port {self.port}: write failed: {e}") from e
        if n is not None and n != len(data):
            raise LinkClosed(f"serial port {self.port}: wrote {n} of {len(data)} bytes")

    def read(self, max_n: int, timeout_ms: int) -> bytes:
        """What the port has (at most max_n bytes), waiting up to timeout_ms for the first."""
        try:
            data = self.serial.read(max_n)
            if data or timeout_ms <= 0:
                return data
            if self._fd is not None:
                ready, _, _ = select.select([self._fd], [], [], timeout_ms / 1000)
                return self.serial.read(max_n) if ready else b""
            deadline = time.monotonic() + timeout_ms / 1000
            while time.monotonic() < deadline:
                if self.serial.in_waiting:
                    return self.serial.read(max_n)
                time.sleep(0.001)
            return b""
        except (serial.SerialException, OSError) as e:
            raise LinkClosed(f"serial port {self.port}: {e}") from e

    def readinto(self, buf: memoryview, timeout_ms: int) -> int:
        data = self.read(len(buf), timeout_ms)
        n = len(data)
        if n:
            buf[:n] = data
        return n

    def close(self) -> None:
        try:
            self.serial.close()
        except (serial.SerialException, OSError):
            pass

    def __repr__(self) -> str:
        return f"SerialTransport({self.port!r})"


def connect(
    port: str | serial.SerialBase,
    baudrate: int = 115200,
    *,
    hello: bool = True,
    versions: Iterable[int] = P.SUPPORTED_VERSIONS,
    timeout_ms: int = P.DEFAULT_TIMEOUT_MS,
    retries: int = P.DEFAULT_RETRIES,
    name: str = "hubi-host",
    max_message: int = P.MAX_MESSAGE,
    frame_timeout_ms: int = P.FRAME_TIMEOUT_MS,
    on_event: Callable[[LinkError], None] | None = None,
    wrap: Callable[[SerialTransport], Any] | None = None,
) -> Client:
    """Open the port, build a ``Client`` and (by default) negotiate with HELLO.

    ``on_event`` receives every framing problem the host's decoder sees (garbage, bad CRC,
    ...); ``wrap`` can wrap the transport (logging, fault injection in tests). The port is
    closed again if HELLO fails.
    """
    transport = SerialTransport(port, baudrate)
    try:
        client = Client(
            wrap(transport) if wrap is not None else transport,
            versions=tuple(versions),
            timeout_ms=timeout_ms,
            retries=retries,
            name=name,
            max_message=max_message,
            frame_timeout_ms=frame_timeout_ms,
        )
        client.on_event = on_event
        if hello:
            client.hello()
    except BaseException:
        transport.close()
        raise
    return client
