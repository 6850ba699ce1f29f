"""The ordering service on a real etcd cluster (DESIGN §6).

Every bank runs (or points at) a member of one etcd cluster. A claim is one etcd transaction
(``create_revision(key) == 0`` → put, else → range; :meth:`Etcd.create_if_absent`), so a key is
created once across the cluster and its create revision is its place in the global order. Raft
replicates it to a majority of members before the transaction answers: with 3 members, one may
be down (or killed) and claims still go through.

The log is read with an etcd watch from a revision: etcd replays history from there and then
streams new changes in revision order; the client resumes a broken stream on another member
from the revision after the last one delivered. Only creations count (a key's first version).
A delete under the log prefix is how the log forgets what every bank has applied
(:meth:`EtcdOrderer.forget`) and is passed over; an overwrite is not part of the order: it is
passed over and handed to ``on_overwrite`` (the node logs and reports it). If an operator has compacted etcd's history past where a watch stands, the keys created
since are read from the store, in creation order, and the watch goes on from the compaction: the
log's keys are created once and never changed, so compaction loses none of its creations (a key
overwritten in the compacted stretch has lost its first value, and that is an error).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence

from hubi.consortium.errors import MarkFell, OrdererError
from hubi.consortium.orderer import Claim, LogEvent, mark_stands, read_revision, revision_value
from hubi.infra.etcd_client import (
    Etcd,
    EtcdCompacted,
    EtcdError,
    EtcdRequestError,
    KeyValue,
    prefix_end,
)

__all__ = ["EtcdOrderer"]

# keys deleted per etcd transaction: etcd's --max-txn-ops (128 by default) bounds its compares
# (one per key, one per bank's mark) and its operations (one per key, the record)
_DELETES_PER_TXN = 100
_ETCD_MAX_TXN_OPS = 128
_READS_PER_TXN = 100  # values read per transaction when the log is replayed from the store


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
        self.last_events: list[str] = []  # anomalies seen by events(): overwrites
        # called with (revision, key relative to the prefix, version) for each overwrite seen
        self.on_overwrite: Callable[[int, bytes, int], None] | None = None

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

    def _pages(
        self, prefix: bytes, *, keys_only: bool = False, revision: int | None = None
    ) -> Iterator[list[KeyValue]]:
        """The keys under ``prefix`` (at ``revision``), 1,000 at a time in key order. Each page
        is read when the caller asks for it, so the caller may delete what it got before the
        next is read."""
        start = self._k(prefix)
        end = prefix_end(start)
        while True:
            page = self.etcd.range(
                start, range_end=end, keys_only=keys_only, limit=1000, revision=revision
            )
            if page.kvs:
                yield page.kvs
            if not page.more or not page.kvs:
                return
            start = page.kvs[-1].key + b"\0"

    def scan(self, prefix: bytes) -> list[tuple[bytes, bytes, int]]:
        n = len(self.prefix)
        try:
            return [
                (kv.key[n:], kv.value, kv.create_revision)
                for page in self._pages(prefix)
                for kv in page
            ]
        except EtcdError as exc:
            raise OrdererError(f"scan of {prefix!r} failed: {exc}") from None

    def revision(self) -> int:
        try:
            return self.etcd.range(self._k(b"\xff"), limit=1).revision
        except EtcdError as exc:
            raise OrdererError(f"reading the store revision failed: {exc}") from None

    def events(
        self, after: int, stop: threading.Event, prefix: bytes = b"log/"
    ) -> Iterator[LogEvent]:
        n = len(self.prefix)
        while True:
            try:
                for ev in self.etcd.watch(
                    self._k(prefix),
                    prefix=True,
                    start_revision=after + 1,
                    stop=stop,
                    idle_timeout=1.0,
                ):
                    if ev.type == "DELETE":  # the log forgetting applied keys (forget())
                        continue
                    if ev.version != 1:
                        self.last_events.append(
                            f"revision {ev.revision}: PUT of {ev.key!r} (version {ev.version}) "
                            "is not a creation; ignored"
                        )
                        del self.last_events[:-100]
                        if self.on_overwrite is not None:
                            self.on_overwrite(ev.revision, ev.key[n:], ev.version)
                        continue
                    after = ev.revision
                    yield LogEvent(ev.revision, ev.key[n:], ev.value)
                return
            except EtcdCompacted as exc:
                # An operator compacted etcd past where this watch stood. The log's keys are
                # created once and never changed, so no creation was lost: the keys created
                # since are all still there, with their create revisions. Replay them, then
                # watch on from the compaction.
                yield from self._created_since(after, exc.compact_revision, prefix)
                after = exc.compact_revision
            except EtcdError as exc:
                raise OrdererError(f"watching the log failed: {exc}") from None

    def _created_since(self, after: int, compacted: int, prefix: bytes) -> Iterator[LogEvent]:
        """The log's creations in (after, compacted], in order, read at revision `compacted`:
        first the keys alone in key order, sorted here by creation, then their values
        ``_READS_PER_TXN`` at a time. Pages that etcd sorts by creation would each read the
        whole rest of the log (quadratic on a long one: the first version did that)."""
        n = len(self.prefix)
        try:
            created = sorted(
                (kv.create_revision, kv.version, kv.key)
                for page in self._pages(prefix, keys_only=True, revision=compacted)
                for kv in page
                if kv.create_revision > after
            )
            for i in range(0, len(created), _READS_PER_TXN):
                chunk = created[i : i + _READS_PER_TXN]
                values = self.etcd.get_many([key for _, _, key in chunk], revision=compacted)
                for (rev, version, key), kv in zip(chunk, values, strict=True):
                    if version != 1:  # overwritten: its first value is gone with the history
                        raise OrdererError(
                            f"cannot replay the log after revision {after}: {key!r}, created "
                            f"at revision {rev}, was overwritten and etcd compacted its "
                            f"history up to revision {compacted} (restore this bank's "
                            f"consortium state from a backup taken at or after revision "
                            f"{compacted})"
                        )
                    if kv is None or kv.create_revision != rev:  # one revision: cannot happen
                        raise OrdererError(f"{key!r} changed at revision {compacted} while read")
                    yield LogEvent(rev, key[n:], kv.value)
        except EtcdError as exc:
            raise OrdererError(
                f"replaying the log after revision {after} (etcd compacted up to revision "
                f"{compacted}) failed: {exc}"
            ) from None

    def forget(
        self,
        through: int,
        prefix: bytes = b"log/",
        *,
        marks: Sequence[bytes] = (),
        record: bytes | None = None,
    ) -> int:
        """Delete the log's keys created at or before revision ``through`` and compact etcd's
        history there; returns how many keys went. Every bank must have applied ``through``
        (the caller's job), so every bank's watch stands after it and none is cancelled: a
        bank catching up a long backlog would otherwise have to read it from the store again
        at every round. The space of this round's deletions (made after ``through``) is freed
        by the next round's compaction.

        Each transaction of deletions also compares every key of ``marks`` with ``through``
        and puts under ``record`` the newest create revision forgotten so far (see
        :meth:`Orderer.forget`): a mark that falls during the round stops it
        (:class:`MarkFell`, nothing compacted) before one more key goes."""
        at_least = [(self._k(m), revision_value(through - 1)) for m in marks]
        per_txn = min(_DELETES_PER_TXN, _ETCD_MAX_TXN_OPS - len(at_least) - 1)
        if per_txn < 1:
            raise OrdererError(f"{len(marks)} marks leave no room for deletions in a transaction")
        newest = 0  # the newest creation forgotten, as `record` holds it

        def recorded() -> int:
            kv = None if record is None else self.etcd.get(self._k(record))
            return (read_revision(kv.value) or 0) if kv is not None else 0

        def delete(chunk: list[tuple[bytes, int]]) -> bool:
            nonlocal newest
            top = max([newest, *(rev for _, rev in chunk)])
            put = None if record is None else (self._k(record), revision_value(top))
            done = self.etcd.delete_created(chunk, values_above=at_least, then_put=put)
            if done:
                newest = top
            return done

        gone = 0
        try:
            newest = recorded()  # only the lowest bank writes it, and never lower
            # pages in key order, filtered here: etcd's own filter by create revision reads
            # the whole rest of the range for every page (quadratic after a long outage:
            # 200,000 keys took 48 s)
            for page in self._pages(prefix, keys_only=True):
                old = [(kv.key, kv.create_revision) for kv in page if kv.create_revision <= through]
                for i in range(0, len(old), per_txn):
                    chunk = old[i : i + per_txn]
                    if delete(chunk):
                        gone += len(chunk)
                        continue
                    self._check_marks(marks, through, gone)
                    # A key went since it was read (and maybe was claimed again), or a member
                    # applied this very transaction and its answer was lost, so the client's
                    # retry failed: `record` may hold more than we know, and must not go back.
                    newest = max(newest, recorded())
                    for key, rev in chunk:  # each on its own; one that is gone went
                        if delete([(key, rev)]) or self.etcd.get(key) is None:
                            gone += 1
                        else:  # claimed again, or a mark fell meanwhile: then stop here
                            self._check_marks(marks, through, gone)
            try:
                self.etcd.compact(through)
            except EtcdRequestError as exc:
                if "compacted" not in exc.message:  # compacted there or later already
                    raise
        except EtcdError as exc:
            raise OrdererError(
                f"forgetting the log through revision {through} failed: {exc}"
            ) from None
        return gone

    def _check_marks(self, marks: Sequence[bytes], through: int, gone: int) -> None:
        for mark in marks:
            kv = self.etcd.get(self._k(mark))
            if not mark_stands(None if kv is None else kv.value, through):
                raise MarkFell(mark, through, gone)

    def health(self) -> dict[str, bool]:
        return self.etcd.health(timeout=1.0)

    def halt(self, on: bool = True) -> None:
        """Have calls give up at their next try (on) or retry again (off): set while the
        owning node stops, so that its threads are not held by a cluster without quorum."""
        if self._own_client:  # a client shared with others is theirs to halt
            (self.etcd.halted.set if on else self.etcd.halted.clear)()

    def close(self) -> None:
        if self._own_client:
            self.etcd.close()
