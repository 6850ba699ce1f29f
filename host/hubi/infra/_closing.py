"""`with` support shared by the etcd client and the server launchers (private)."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self


class Closing(abc.ABC):
    """`with x:` gives x and closes it however the block ends (an error, Ctrl-C): the client's
    connections, the servers' processes."""

    @abc.abstractmethod
    def close(self) -> None:
        """Let go of what the object holds; a second call does nothing."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
