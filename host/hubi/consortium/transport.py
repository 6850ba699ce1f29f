"""How a bank reaches its peers' validation endpoints: over HTTP, or in-process.

:class:`HttpPeerTransport` POSTs the note's bytes to ``<peer>/v1/consortium/validate`` as a
signed request (the bank's identity key, role "peer bank" at the other end) and returns the
Endorsement bytes from the JSON reply. Failures raise :class:`PeerError` naming the bank and what
went wrong (refused connection, timeout, an error reply with its code).

:class:`LocalPeerTransport` calls other in-process :class:`ConsortiumNode` objects directly (the
embedded, one-process set-up and unit tests).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from hubi import jsonload
from hubi.bank.auth import Signer
from hubi.consortium.errors import PeerError
from hubi.infra.http_pool import HttpFailure, HttpPool, HttpReplyTooLarge, HttpTimeout
from hubi.output import printable
from hubi_core.errors import CodecError, HubiError

if TYPE_CHECKING:
    from hubi.consortium.node import ConsortiumNode

__all__ = ["VALIDATE_PATH", "HttpPeerTransport", "LocalPeerTransport"]

VALIDATE_PATH = "/v1/consortium/validate"
# A validation reply is a few hundred bytes of JSON (a sealed Endorsement, a reason of at most
# a few hundred characters); a peer that sends more is not read further.
MAX_VALIDATE_REPLY = 64 * 1024
# what of a peer's error reply goes into the error (and so into a merchant's 503 and the logs):
# its text with control and bidirectional characters escaped, cut to this many characters
MAX_PEER_TEXT = 200


class HttpPeerTransport:
    """Signed HTTP validation requests to peer bank nodes (one keep-alive pool per peer; a
    validation request is safe to repeat, as :class:`HttpPool` may on a stale connection)."""

    def __init__(self, signer: Signer, endpoints: Mapping[str, str]):
        self.signer = signer
        self.endpoints = {b: url.rstrip("/") for b, url in endpoints.items()}
        self._pools: dict[str, HttpPool] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HttpPeerTransport(as={self.signer.identity!r}, peers={sorted(self.endpoints)})"

    def _pool(self, bank: str) -> HttpPool:
        with self._lock:
            pool = self._pools.get(bank)
            if pool is None:
                url = self.endpoints.get(bank)
                if url is None:
                    raise PeerError(bank, "no endpoint known for this bank (consortium file)")
                pool = self._pools[bank] = HttpPool(url, timeout=10.0, connect_timeout=1.0)
            return pool

    def validate(self, bank: str, note: bytes, timeout: float) -> bytes:
        pool = self._pool(bank)
        headers = self.signer.headers(bank, "POST", VALIDATE_PATH, None, note)
        headers["Content-Type"] = "application/octet-stream"
        try:
            r = pool.post(
                VALIDATE_PATH, note, headers, timeout=timeout, max_reply=MAX_VALIDATE_REPLY
            )
        except HttpReplyTooLarge as exc:
            raise PeerError(bank, f"reply too large: {exc}", forged=True) from None
        except HttpTimeout:
            raise PeerError(bank, f"no answer within {timeout:g} s", replied=False) from None
        except HttpFailure as exc:
            raise PeerError(bank, f"unreachable: {exc}", replied=False) from None
        try:
            doc = jsonload.loads(r.body, "the reply")
        except jsonload.JsonError:  # no answer a node gives: shown below as text
            doc = None
        if r.status != 200 or not isinstance(doc, dict):
            code = doc.get("error") if isinstance(doc, dict) else None
            msg = (
                doc.get("message")
                if isinstance(doc, dict)
                else r.body[: MAX_PEER_TEXT * 4].decode("utf-8", "replace")
            )
            said = printable(msg, MAX_PEER_TEXT)
            raise PeerError(
                bank,
                f"validation request failed: HTTP {r.status} {printable(code, 40)}: {said}",
                status=r.status,
                code=code if isinstance(code, str) else None,
                said=said,
            )
        try:
            return bytes.fromhex(str(doc.get("endorsement", "")))
        except ValueError:
            raise PeerError(bank, "reply carries no hex endorsement", forged=True) from None

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


class LocalPeerTransport:
    """Validation by in-process nodes (the embedded consortium)."""

    def __init__(self, own_bank: str, nodes: Mapping[str, ConsortiumNode] | None = None):
        self.own_bank = own_bank
        self.nodes: dict[str, ConsortiumNode] = dict(nodes or {})
        self.down: set[str] = set()  # banks to treat as unreachable (tests)

    def validate(self, bank: str, note: bytes, timeout: float) -> bytes:
        node = self.nodes.get(bank)
        if node is None or bank in self.down:
            raise PeerError(bank, "not reachable in this process", replied=False)
        try:
            return node.validate(note, self.own_bank)
        except (CodecError, HubiError) as exc:
            raise PeerError(bank, f"validation failed: {exc}") from None

    def close(self) -> None:
        pass
