"""Errors of the consortium layer; every message names the bank, note or key at fault."""

from __future__ import annotations

from hubi_core.errors import HubiError

__all__ = [
    "ConsortiumError",
    "EntryError",
    "LogForgotten",
    "MarkFell",
    "NotEndorsed",
    "OrdererError",
    "PeerError",
]


class ConsortiumError(HubiError):
    """Base of the consortium layer's errors."""


class OrdererError(ConsortiumError):
    """The ordering service (etcd or the embedded SQLite orderer) could not do what was asked."""


class MarkFell(OrdererError):
    """A bank's applied mark fell below what the log was forgetting (its state was restored from
    an older backup): the forgetting stopped there. ``gone``: keys forgotten before it stopped."""

    def __init__(self, mark: bytes, through: int, gone: int):
        super().__init__(
            f"{mark.decode('ascii', 'replace')} no longer stands at or past revision {through} "
            f"(that bank's state went back?): the log stopped forgetting there, after {gone} keys"
        )
        self.gone = gone


class LogForgotten(ConsortiumError):
    """The log has forgotten entries that this bank has not applied: it cannot go on."""


class PeerError(ConsortiumError):
    """A peer bank did not answer a validation request usefully (down, error, forged answer).

    ``replied`` is False when nothing came back at all (timeout, unreachable). An error reply
    of the peer's HTTP API sets ``status``, ``code`` (its ``error``) and ``said`` (its
    ``message``)."""

    def __init__(
        self,
        bank: str,
        message: str,
        *,
        forged: bool = False,
        replied: bool = True,
        status: int | None = None,
        code: str | None = None,
        said: str = "",
    ):
        super().__init__(f"bank {bank}: {message}")
        self.bank = bank
        self.forged = forged
        self.replied = replied
        self.status, self.code, self.said = status, code, said


class NotEndorsed(ConsortiumError):
    """Not enough banks endorsed a note; `refusals` maps bank -> (reason_code, reason)."""

    def __init__(self, message: str, refusals: dict[str, tuple[int | None, str]] | None = None):
        super().__init__(message)
        self.refusals = dict(refusals or {})


class EntryError(ConsortiumError):
    """An ordered log entry that fails its checks (bad format, forged or too few endorsements)."""
