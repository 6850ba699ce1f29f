"""The ordering service on a real etcd cluster (DESIGN §6).

Every bank runs (or points at) a member of one etcd cluster. A claim is one etcd transaction
(``create_revision(key) == 0`` → put, else → range; :meth:`Etcd.create_if_absent`), so a key is
created once across the cluster and its create revision is its place in the global order. Raft
replicates it to a majority of members before the transaction answers: with 3 members, one may
be down (or killed) and claims still go through.

The log is read with an etcd watch from a revision: etcd replays history from there and then
streams new changes in revision order; the client resumes a broken stream on another member
from the revision after the last one delivered. Only creations count (a key's first version);
an overwrite or a delete under the log prefix is not part of the order and is reported by the
applier.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from hubi.consortium.errors import OrdererError
from hubi.consortium.orderer import Claim, LogEvent
from hubi.infra.etcd_client import Etcd, EtcdCompacted, EtcdError

__all__ = ["EtcdOrderer"]


class EtcdOrderer:
    """:class:`~hubi.consortium.orderer.Orderer` over an etcd cluster's JSON gateway.

    ``endpoints``: client URLs (the bank's own member first: it is tried first). ``prefix``: the
    consortium's key prefix (``Consortium.log_prefix()``), so several consortia (or tests) can
    share one cluster.
    """

    kind = "etcd"

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        prefix: bytes,
        *,
        timeout: float = 5.0,
        retry_deadline: float = 15.0,
        client: Etcd | None = None,
    ):
        self.prefix = prefix
        self._own_client = client is None
        self.etcd = client or Etcd(endpoints, timeout=timeout, retry_deadline=retry_deadline)
        self.description = f"etcd {','.join(self.etcd.endpoints)} prefix {prefix.decode()}"
        self.last_events: list[str] = []  # anomalies seen by events() (overwrites, deletes)

    def __repr__(self) -> str:
        return f"EtcdOrderer({self.etcd.endpoints!r}, prefix={self.prefix!r})"

    def _k(self, key: bytes) -> bytes:
        return self.prefix + key

    def claim(self, key: bytes, value: bytes) -> Claim:
        try:
            res = self.etcd.create_if_absent(self._k(key), value)
        except EtcdError as exc:
            raise OrdererError(f"claim of {key.decode(errors='replace')} failed: {exc}") from None
        if not res.created and res.value == value:
            # our own transaction went through but its answer was lost; the retry found it
            return Claim(True, res.revision, res.value)
        return Claim(res.created, res.revision, res.value)

    def get(self, key: bytes) -> Claim | None:
        try:
            kv = self.etcd.get(self._k(key))
        except EtcdError as exc:
            raise OrdererError(f"get of {key.decode(errors='replace')} failed: {exc}") from None
        return None if kv is None else Claim(False, kv.create_revision, kv.value)

    def put(self, key: bytes, value: bytes) -> int:
        try:
            return self.etcd.put(self._k(key), value)
        except EtcdError as exc:
            raise OrdererError(f"put of {key.decode(errors='replace')} failed: {exc}") from None

    def scan(self, prefix: bytes) -> list[tuple[bytes, bytes, int]]:
        n = len(self.prefix)
        out: list[tuple[bytes, bytes, int]] = []
        start = self._k(prefix)
        from hubi.infra.etcd_client import prefix_end

        end = prefix_end(start)
        try:
            while True:
                page = self.etcd.range(start, range_end=end, limit=1000)
                for kv in page.kvs:
                    out.append((kv.key[n:], kv.value, kv.create_revision))
                if not page.more or not page.kvs:
                    break
                start = page.kvs[-1].key + b"\0"
        except EtcdError as exc:
            raise OrdererError(f"scan of {prefix!r} failed: {exc}") from None
        return out

    def revision(self) -> int:
        try:
            return self.etcd.range(self._k(b"\xff"), limit=1).revision
        except EtcdError as exc:
            raise OrdererError(f"reading the store revision failed: {exc}") from None

    def events(
        self, after: int, stop: threading.Event, prefix: bytes = b"log/"
    ) -> Iterator[LogEvent]:
        n = len(self.prefix)
        try:
            for ev in self.etcd.watch(
                self._k(prefix),
                prefix=True,
                start_revision=after + 1,
                stop=stop,
                idle_timeout=1.0,
            ):
                if ev.type != "PUT" or ev.version != 1:
                    self.last_events.append(
                        f"revision {ev.revision}: {ev.type} of {ev.key!r} (version {ev.version})"
                        " is not a creation; ignored"
                    )
                    del self.last_events[:-100]
                    continue
                yield LogEvent(ev.revision, ev.key[n:], ev.value)
        except EtcdCompacted as exc:
            raise OrdererError(
                f"cannot resume the log after revision {after}: {exc} (restore this bank's "
                "consortium state from a peer or replay from a snapshot)"
            ) from None
        except EtcdError as exc:
            raise OrdererError(f"watching the log failed: {exc}") from None

    def health(self) -> dict[str, bool]:
        return self.etcd.health(timeout=1.0)

    def close(self) -> None:
        if self._own_client:
            self.etcd.close()
