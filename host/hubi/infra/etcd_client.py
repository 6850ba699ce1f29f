"""A small etcd v3 client over etcd's JSON gateway (``/v3/...``), with member failover.

Keys and values are bytes (a ``str`` is encoded as UTF-8); on the wire they travel base64-coded
as the gateway wants. Every call tries the preferred member first and moves on to the next one
on connection errors, timeouts and "no leader"-type answers, round after round with a short
back-off, until ``retry_deadline`` seconds have passed; then it raises :class:`EtcdUnavailable`
naming every endpoint and what went wrong there. Reads are linearizable (etcd's default).

The consortium's note claim is :meth:`Etcd.create_if_absent`: one transaction that puts the key
only if it has never existed (``create_revision == 0``), else returns the existing value. Its
revision is the global order of the claim.

    etcd = Etcd(["http://127.0.0.1:2379", "http://127.0.0.1:22379"])
    created, revision, value = etcd.create_if_absent(b"notes/" + note_id, b"bank-7")
    for event in etcd.watch(b"notes/", prefix=True, start_revision=revision):
        ...
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeVar

import httpx

from hubi.infra._closing import Closing
from hubi.infra.http_pool import HttpFailure, HttpPool, HttpReplyTooLarge, HttpTimeout
from hubi.jsonload import JsonError, loads

__all__ = [
    "ClaimResult",
    "Etcd",
    "EtcdBadReply",
    "EtcdCompacted",
    "EtcdError",
    "EtcdNoSpace",
    "EtcdRequestError",
    "EtcdUnavailable",
    "EndpointStatus",
    "KeyValue",
    "Member",
    "RangeResult",
    "WatchEvent",
    "prefix_end",
]

KeyLike = bytes | str
_T = TypeVar("_T")

# etcd's answer to a write once the database has reached its quota (gRPC code 8, like "too many
# requests", which is worth retrying; this is not)
_NO_SPACE = "database space exceeded"
# gRPC status codes that mean "this member cannot answer now, ask another".
_RETRYABLE_GRPC = {4, 8, 10, 14}  # DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, UNAVAILABLE
_RETRYABLE_TEXT = (
    "no leader",
    "leader changed",
    "timed out",
    "timeout",
    "not capable",
    "too many requests",
    "stopped",
    "unhealthy cluster",
    "server is not ready",
)


# ---------------------------------------------------------------------------- errors
class EtcdError(Exception):
    """Base class of this module's errors."""


class EtcdUnavailable(EtcdError):
    """No etcd member answered the request before the retry deadline."""

    def __init__(self, what: str, errors: dict[str, str]) -> None:
        self.what = what
        self.errors = dict(errors)
        detail = "; ".join("%s: %s" % (ep, err) for ep, err in self.errors.items())
        super().__init__("no etcd member answered %s (%s)" % (what, detail or "no endpoints"))


class EtcdRequestError(EtcdError):
    """An etcd member answered with an error that retrying elsewhere will not fix."""

    def __init__(self, endpoint: str, what: str, status: int, code: int | None, message: str):
        self.endpoint = endpoint
        self.what = what
        self.status = status
        self.code = code
        self.message = message
        super().__init__(
            "etcd %s failed at %s: HTTP %d, grpc code %s: %s"
            % (what, endpoint, status, code, message)
        )


class EtcdNoSpace(EtcdRequestError):
    """The cluster's database has reached its space quota (etcd's NOSPACE alarm): every member
    refuses writes until an operator frees space, so no retry elsewhere can help. Reads go on."""

    def __init__(self, endpoint: str, what: str, status: int, code: int | None, message: str):
        super().__init__(endpoint, what, status, code, message)
        self.args = (
            "etcd %s refused at %s: the cluster's database is full (%s). Writes stay refused "
            "until an operator frees space (delete keys, compact, defragment the members) or "
            "restarts the members with a larger --quota-backend-bytes, and then runs "
            "`etcdctl alarm disarm`" % (what, endpoint, message),
        )


class EtcdBadReply(EtcdError):
    """A member answered a write with something etcd does not send; the write may or may not
    have been applied, so it is not repeated elsewhere."""

    def __init__(self, endpoint: str, what: str, problem: str) -> None:
        self.endpoint = endpoint
        self.what = what
        self.problem = problem
        super().__init__("etcd %s at %s: malformed reply: %s" % (what, endpoint, problem))


class EtcdCompacted(EtcdError):
    """A watch asked for a revision that has been compacted away."""

    def __init__(self, requested: int, compact_revision: int) -> None:
        self.requested = requested
        self.compact_revision = compact_revision
        super().__init__(
            "etcd watch from revision %d impossible: history compacted up to revision %d"
            % (requested, compact_revision)
        )


class _Retryable(Exception):
    """Internal: this endpoint failed in a way another endpoint may not."""


class _Malformed(_Retryable):
    """Internal: a reply etcd would not send (a field of the wrong type, a bad message)."""


class _Refused(_Retryable):
    """Internal: a member refused a watch (an error reply) or canceled it without compaction:
    asking it again at once would only get the same answer."""


def _refused(ep: str, status: int, content: bytes) -> None:
    """Raise what `content`, an error reply to a watch, means: _Retryable if etcd says "try
    another member", else _Refused (another member may serve the watch)."""
    try:
        Etcd._decode(ep, "/v3/watch", status, content)
    except EtcdRequestError as exc:
        raise _Refused("watch refused: HTTP %d: %s" % (status, exc.message)) from None


# ---------------------------------------------------------------------------- results
class KeyValue(NamedTuple):
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class RangeResult:
    kvs: list[KeyValue]
    revision: int  # store revision the range was served at
    count: int  # number of keys in the range (may exceed len(kvs) with a limit)
    more: bool  # True if a limit cut the result


class ClaimResult(NamedTuple):
    """Outcome of :meth:`Etcd.create_if_absent`.

    ``created``: this call created the key. ``revision``: the key's create revision (the
    claim's place in the global order) — ours if created, the winner's otherwise. ``value``: the
    value now stored (ours if created, the existing one otherwise).
    """

    created: bool
    revision: int
    value: bytes


class WatchEvent(NamedTuple):
    type: Literal["PUT", "DELETE"]
    key: bytes
    value: bytes  # empty for DELETE
    revision: int  # mod_revision of the change
    create_revision: int
    version: int


class Member(NamedTuple):
    id: int
    name: str
    peer_urls: list[str]
    client_urls: list[str]
    is_learner: bool


@dataclass(frozen=True)
class EndpointStatus:
    """/v3/maintenance/status of one endpoint (``error`` set if it did not answer)."""

    endpoint: str
    member_id: int = 0
    leader: int = 0
    raft_term: int = 0
    raft_index: int = 0
    raft_applied_index: int = 0
    revision: int = 0
    version: str = ""
    db_size: int = 0  # bytes of the member's database file
    db_size_in_use: int = 0  # of those, bytes in use (the rest is free for reuse)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def is_leader(self) -> bool:
        return self.ok and self.member_id != 0 and self.member_id == self.leader


# ---------------------------------------------------------------------------- helpers
def _b(x: KeyLike) -> bytes:
    return x.encode("utf-8") if isinstance(x, str) else bytes(x)


def _enc(x: bytes) -> str:
    return base64.b64encode(x).decode("ascii")


def _kind(x: Any) -> str:
    return "missing" if x is None else type(x).__name__


def _dec(d: dict[str, Any], name: str) -> bytes:
    s = d.get(name)
    if not s:
        return b""
    if not isinstance(s, str):
        raise _Malformed("%s is %s, not base64 text" % (name, _kind(s)))
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise _Malformed("%s %.40r is not base64" % (name, s)) from None


def _int(d: dict[str, Any], name: str) -> int:
    v = d.get(name) or 0
    # the gateway sends 64-bit integers as decimal text, others as numbers
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise _Malformed("%s is %s, not an integer" % (name, _kind(v)))
    try:
        return int(v)
    except ValueError:
        raise _Malformed("%s %.40r is not an integer" % (name, v)) from None


def _obj(d: Any, what: str) -> dict[str, Any]:
    """`d` if an object (None: an empty one, as the gateway leaves empty fields out)."""
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise _Malformed("%s is %s, not an object" % (what, _kind(d)))
    return d


def _list(d: dict[str, Any], name: str) -> list[Any]:
    v = d.get(name)
    if v is None:
        return []
    if not isinstance(v, list):
        raise _Malformed("%s is %s, not a list" % (name, _kind(v)))
    return v


def _strs(d: dict[str, Any], name: str) -> list[str]:
    v = _list(d, name)
    if not all(isinstance(x, str) for x in v):
        raise _Malformed("%s holds something other than text" % name)
    return v


def prefix_end(prefix: bytes) -> bytes:
    """The range end that selects every key starting with ``prefix`` (etcd's convention)."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return b"\0"  # empty prefix or all 0xff: to the end of the keyspace


def _kv(d: Any) -> KeyValue:
    d = _obj(d, "kv")
    return KeyValue(
        key=_dec(d, "key"),
        value=_dec(d, "value"),
        create_revision=_int(d, "create_revision"),
        mod_revision=_int(d, "mod_revision"),
        version=_int(d, "version"),
        lease=_int(d, "lease"),
    )


def _header_revision(d: dict[str, Any]) -> int:
    """The store revision a reply was served at: etcd's start at 1 and every reply says it."""
    rev = _int(_obj(d.get("header"), "header"), "revision")
    if rev < 1:
        raise _Malformed("header revision is %s" % (rev or "missing"))
    return rev


def _range(d: dict[str, Any]) -> list[Any]:
    """The kvs of a range (or txn) reply, once its header is found sound."""
    _header_revision(d)
    return _list(d, "kvs")


def _first_kv(kvs: list[Any]) -> KeyValue | None:
    return _kv(kvs[0]) if kvs else None


def _range_kvs(response: Any) -> list[Any]:
    """The kvs of one response of a txn of ranges."""
    return _list(_obj(_obj(response, "response").get("response_range"), "response_range"), "kvs")


def _watch_events(result: dict[str, Any], low: int) -> list[WatchEvent]:
    """The events of one watch message, every one checked before any is delivered: revisions
    from `low` on (etcd never sends older ones), never going back."""
    out = []
    for ev in _list(result, "events"):
        ev = _obj(ev, "event")
        kind = ev.get("type") or "PUT"  # the gateway leaves PUT (0) out
        if kind not in ("PUT", "DELETE"):
            raise _Malformed("event type %.40r is neither PUT nor DELETE" % (kind,))
        kv = _kv(ev.get("kv"))
        if kv.mod_revision < max(low, 1):
            raise _Malformed(
                "event of revision %d where %d or later was due" % (kv.mod_revision, low)
            )
        low = kv.mod_revision
        out.append(WatchEvent(kind, kv.key, kv.value, low, kv.create_revision, kv.version))
    return out


_JSON_HEADERS = {"Content-Type": "application/json"}
# A watch asks its member to have a leader (gRPC metadata "hasleader", passed by the gateway).
# Without it, a member cut off from the others accepts the watch and then says nothing, for
# ever, while the rest of the cluster moves on; with it, that member refuses the watch, and ends
# a running one a few election timeouts after it loses its leader, so the watch moves on.
_WATCH_HEADERS = {**_JSON_HEADERS, "Grpc-Metadata-Hasleader": "true"}


def _normalise(endpoint: str) -> str:
    ep = endpoint.strip().rstrip("/")
    if "://" not in ep:
        ep = "http://" + ep
    return ep


# ---------------------------------------------------------------------------- client
class Etcd(Closing):
    """etcd v3 client over the JSON gateway of one or more members (failover in order).

    ``timeout``: seconds for one HTTP request to one member. ``first_try``: the patience with
    each member on the first pass over them of a call that may be repeated (reads, the
    create-if-absent transaction, which finds its own value if it went through, watches): a
    member that hangs, or a follower whose request waits on a leader that hangs, would otherwise
    hold every such call in flight for the whole ``timeout``. Writes whose repetition would
    answer differently (put, delete, compaction, lease grant) wait the whole ``timeout``.
    ``connect_timeout``: seconds to connect to one member. ``retry_deadline``: total seconds a
    call keeps trying the members (long enough to ride out a leader election) before
    :class:`EtcdUnavailable`.

    Thread-safe: one client may be shared by threads (both connection pools are).
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        timeout: float = 5.0,
        first_try: float = 1.0,
        connect_timeout: float = 1.0,
        retry_deadline: float = 15.0,
    ) -> None:
        eps = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        eps = [_normalise(e) for ep in eps for e in ep.split(",") if e.strip()]
        if not eps:
            raise ValueError("Etcd needs at least one endpoint")
        self._endpoints = eps
        self._preferred = 0
        self.timeout = timeout
        self.first_try = min(first_try, timeout)
        self.connect_timeout = connect_timeout
        self.retry_deadline = retry_deadline
        # set by an owner that stops (a bank node's shutdown): calls give up at their next try
        # instead of retrying for retry_deadline; cleared to use the client again
        self.halted = threading.Event()
        # calls and watches on stdlib connections: about half of httpx's CPU per request;
        # health and status (a few per minute) stay on httpx
        self._pools = {
            ep: HttpPool(ep, timeout=timeout, connect_timeout=connect_timeout) for ep in eps
        }
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    @property
    def endpoints(self) -> list[str]:
        return list(self._endpoints)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._http.close()

    def __repr__(self) -> str:
        return "Etcd(%r)" % (self._endpoints,)

    # ------------------------------------------------------------------ transport
    def _order(self) -> list[int]:
        n = len(self._endpoints)
        start = self._preferred % n
        return [(start + i) % n for i in range(n)]

    def _post_one(
        self, endpoint: str, path: str, body: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        data = json.dumps(body, separators=(",", ":")).encode()
        try:
            r = self._pools[endpoint].post(path, data, _JSON_HEADERS, timeout=timeout)
        except HttpFailure as exc:
            raise _Retryable("%s: %s" % (type(exc).__name__, exc)) from exc
        return self._decode(endpoint, path, r.status, r.body)

    @staticmethod
    def _decode(endpoint: str, path: str, status: int, content: bytes) -> dict[str, Any]:
        try:
            data = loads(content, "the reply") if content else {}
        except JsonError as exc:  # not JSON, too deep: an error reply's text is shown below
            if status == 200:
                raise _Malformed(str(exc)) from None
            data = None
        if status == 200 and not isinstance(data, dict):
            raise _Malformed("the reply is %s, not an object" % _kind(data))
        if status == 200 and "error" not in data:
            return data
        if isinstance(data, dict):
            msg = str(data.get("message") or data.get("error") or data)[:500]
            code = data.get("code")
            if not isinstance(code, int) or isinstance(code, bool):
                code = None  # a strange code is no code (and a list one is not hashable)
        else:
            msg, code = content[:200].decode("utf-8", "replace"), None
        if _NO_SPACE in msg.lower():  # cluster-wide (an alarm): before the retryable code 8
            raise EtcdNoSpace(endpoint, path, status, code, msg)
        if (
            status in (502, 503, 504)
            or code in _RETRYABLE_GRPC
            or any(t in msg.lower() for t in _RETRYABLE_TEXT)
        ):
            raise _Retryable("HTTP %d: %s" % (status, msg))
        raise EtcdRequestError(endpoint, path, status, code, msg)

    def _call(
        self,
        path: str,
        body: dict[str, Any],
        parse: Callable[[dict[str, Any]], _T],
        *,
        repeatable: bool = True,
    ) -> _T:
        """``parse`` of the reply to POST ``body`` to ``path`` on the first member that answers;
        fail over on errors (after ``first_try`` on the first pass if the call is
        ``repeatable``). A reply ``parse`` finds malformed counts against its member if the
        call is repeatable, else it is :class:`EtcdBadReply` (the write may have happened)."""
        deadline = time.monotonic() + self.retry_deadline
        errors: dict[str, str] = {}
        delay = 0.05
        patience = self.first_try if repeatable else self.timeout
        while True:
            for i in self._order():
                if self.halted.is_set():  # a cluster without quorum held a stop up to 20 s
                    raise EtcdUnavailable("POST " + path, {**errors, "client": "halted"})
                ep = self._endpoints[i]
                try:
                    out = parse(self._post_one(ep, path, body, patience))
                except _Malformed as exc:
                    if not repeatable:
                        raise EtcdBadReply(ep, "POST " + path, str(exc)) from None
                    errors[ep] = "malformed reply: %s" % exc
                    continue
                except _Retryable as exc:
                    errors[ep] = str(exc)
                    continue
                self._preferred = i
                return out
            if time.monotonic() + delay >= deadline:
                raise EtcdUnavailable("POST " + path, errors)
            self.halted.wait(delay)
            delay = min(delay * 2, 0.5)
            patience = self.timeout

    # ------------------------------------------------------------------ key-value
    def get(self, key: KeyLike, *, revision: int | None = None) -> KeyValue | None:
        """The key's current value (or at ``revision``), or None if it does not exist."""
        body: dict[str, Any] = {"key": _enc(_b(key))}
        if revision:
            body["revision"] = str(revision)
        return self._call("/v3/kv/range", body, lambda out: _first_kv(_range(out)))

    def get_many(
        self, keys: Sequence[KeyLike], *, revision: int | None = None
    ) -> list[KeyValue | None]:
        """Each key's value (or at ``revision``), None where it does not exist, in one
        transaction: at most ``--max-txn-ops`` keys (128 by default)."""
        ranges: list[dict[str, Any]] = []
        for key in keys:
            one: dict[str, Any] = {"key": _enc(_b(key))}
            if revision:
                one["revision"] = str(revision)
            ranges.append({"request_range": one})
        if not ranges:
            return []

        def parse(out: dict[str, Any]) -> list[KeyValue | None]:
            _header_revision(out)
            responses = _list(out, "responses")
            if len(responses) != len(ranges):
                raise _Malformed(f"{len(responses)} answers to {len(ranges)} reads")
            return [_first_kv(_range_kvs(r)) for r in responses]

        return self._call("/v3/kv/txn", {"compare": [], "success": ranges}, parse)

    def range(
        self,
        prefix: KeyLike,
        *,
        range_end: KeyLike | None = None,
        revision: int | None = None,
        limit: int = 0,
        keys_only: bool = False,
    ) -> RangeResult:
        """All keys starting with ``prefix`` (or in ``[prefix, range_end)``), sorted by key.

        ``revision`` reads the store as it was at that revision (a consistent snapshot).
        """
        start = _b(prefix)
        end = _b(range_end) if range_end is not None else prefix_end(start)
        if not start:  # etcd wants a key: "\0" .. "\0" means the whole keyspace
            start = b"\0"
        body: dict[str, Any] = {"key": _enc(start), "range_end": _enc(end)}
        if revision:
            body["revision"] = str(revision)
        if limit:
            body["limit"] = str(limit)
        if keys_only:
            body["keys_only"] = True

        def parse(out: dict[str, Any]) -> RangeResult:
            return RangeResult(
                kvs=[_kv(d) for d in _range(out)],
                revision=_header_revision(out),
                count=_int(out, "count"),
                more=bool(out.get("more")),
            )

        return self._call("/v3/kv/range", body, parse)

    def put(self, key: KeyLike, value: KeyLike, *, lease: int | None = None) -> int:
        """Set ``key`` to ``value``; returns the new store revision."""
        body: dict[str, Any] = {"key": _enc(_b(key)), "value": _enc(_b(value))}
        if lease:
            body["lease"] = str(lease)
        return self._call("/v3/kv/put", body, _header_revision, repeatable=False)

    def delete(self, key: KeyLike, *, prefix: bool = False) -> int:
        """Delete ``key`` (or every key under it with ``prefix=True``); returns how many."""
        k = _b(key)
        body: dict[str, Any] = {"key": _enc(k)}
        if prefix:
            body["range_end"] = _enc(prefix_end(k))
        return self._call(
            "/v3/kv/deleterange", body, lambda out: _int(out, "deleted"), repeatable=False
        )

    def delete_created(
        self,
        keys: Sequence[tuple[KeyLike, int]],
        *,
        values_above: Sequence[tuple[KeyLike, KeyLike]] = (),
        then_put: tuple[KeyLike, KeyLike] | None = None,
    ) -> bool:
        """Delete every key of ``keys`` (key, create revision) in one transaction, only if each
        still has that create revision (a key deleted and created again since it was read is
        another key and stays) and each key of ``values_above`` (key, value) exists with a value
        above that value in byte order; puts ``then_put`` (key, value) with the deletions. True
        if they went, False if any compare failed (nothing changed). etcd allows
        ``--max-txn-ops`` (default 128) compares and as many operations per call."""
        compare = [
            {"key": _enc(_b(k)), "result": "EQUAL", "target": "CREATE", "create_revision": str(r)}
            for k, r in keys
        ]
        # a VALUE compare of a key that does not exist fails: a missing mark stops it too
        compare += [
            {"key": _enc(_b(k)), "result": "GREATER", "target": "VALUE", "value": _enc(_b(v))}
            for k, v in values_above
        ]
        success: list[dict[str, Any]] = [
            {"request_delete_range": {"key": _enc(_b(k))}} for k, _ in keys
        ]
        if then_put is not None:
            success.append(
                {"request_put": {"key": _enc(_b(then_put[0])), "value": _enc(_b(then_put[1]))}}
            )
        body = {"compare": compare, "success": success}
        return self._call("/v3/kv/txn", body, lambda out: bool(out.get("succeeded")))

    def create_if_absent(
        self, key: KeyLike, value: KeyLike, *, lease: int | None = None
    ) -> ClaimResult:
        """Atomically put ``key`` = ``value`` only if the key does not exist.

        One etcd transaction: compare ``create_revision(key) == 0`` → put, else → get. Of any
        number of concurrent callers across the cluster exactly one gets ``created=True``.

        Caveat of every client that fails over: if a member accepted our transaction but the
        answer was lost (timeout), the retry on another member reports ``created=False`` with
        ``value`` equal to ours. Callers that need to tell "ours" from "theirs" put something
        unique to themselves in ``value`` and compare.
        """
        k, v = _b(key), _b(value)
        put: dict[str, Any] = {"key": _enc(k), "value": _enc(v)}
        if lease:
            put["lease"] = str(lease)
        body = {
            "compare": [
                {"key": _enc(k), "result": "EQUAL", "target": "CREATE", "create_revision": "0"}
            ],
            "success": [{"request_put": put}],
            "failure": [{"request_range": {"key": _enc(k)}}],
        }

        def parse(out: dict[str, Any]) -> ClaimResult:
            rev = _header_revision(out)
            if out.get("succeeded"):
                return ClaimResult(True, rev, v)
            existing = _first_kv(_range_kvs((_list(out, "responses") or [{}])[0]))
            if existing is None:  # deleted between compare and range cannot happen in one txn
                raise EtcdError("etcd txn on %r failed its compare but returned no value" % k)
            return ClaimResult(False, existing.create_revision, existing.value)

        return self._call("/v3/kv/txn", body, parse)

    def compact(self, revision: int, *, physical: bool = False) -> None:
        """Discard history before ``revision`` (watches from older revisions then fail)."""
        self._call(
            "/v3/kv/compaction",
            {"revision": str(revision), "physical": physical},
            lambda out: None,
            repeatable=False,
        )

    # ------------------------------------------------------------------ watch
    def watch(
        self,
        key: KeyLike,
        *,
        prefix: bool = False,
        start_revision: int | None = None,
        stop: threading.Event | None = None,
        idle_timeout: float = 5.0,
    ) -> Generator[WatchEvent, None, None]:
        """Yield changes of ``key`` (or of every key under it) in revision order, forever.

        ``start_revision``: first revision to deliver (history included); default: changes
        after the watch starts. If the member serving the stream fails, the watch resumes on
        another member from the revision after the last one delivered, so no event is lost or
        repeated. A member that does not confirm a new watch within
        ``max(idle_timeout, first_try)`` (at most ``timeout``) is passed over for the next: a
        hung member's kernel still accepts the connection, and waiting the whole request timeout
        there would hold the stream up for that long. To resume a watch yourself later, pass the
        last revision you fully processed plus one (all events of one revision come together).

        The generator ends when ``stop`` is set (checked at least every ``idle_timeout`` s) or
        when it is closed. Raises :class:`EtcdCompacted` if the start revision was compacted,
        :class:`EtcdUnavailable` if no member can serve the watch within ``retry_deadline``.
        """
        k = _b(key)
        # fragment: etcd splits a message of many events (history replayed to a watch that
        # starts far back) into messages of at most its request size limit (1.5 MiB by
        # default); unsplit, a log of large values came as one message of 100 MB and more
        create: dict[str, Any] = {"key": _enc(k), "fragment": True}
        if prefix:
            create["range_end"] = _enc(prefix_end(k))
        next_rev = start_revision or 0
        # events of revision next_rev delivered already: a message split in fragments may end
        # within a revision, and a resume from that revision must not deliver them again
        seen = 0
        create_timeout = min(self.timeout, max(idle_timeout, self.first_try))
        errors: dict[str, str] = {}
        deadline = time.monotonic() + self.retry_deadline
        delay = 0.05
        while stop is None or not stop.is_set():
            served = False
            for i in self._order():
                if stop is not None and stop.is_set():
                    return
                ep = self._endpoints[i]
                body = dict(create)
                if next_rev:
                    body["start_revision"] = str(next_rev)
                request = json.dumps({"create_request": body}).encode()
                asked, skip = next_rev, seen
                sent = 0  # events of revision `asked` this member sent
                delivered = 0  # revision of the last event this member sent
                fresh = False  # this stream yielded an event not yielded before
                try:
                    with self._pools[ep].stream(
                        "/v3/watch",
                        request,
                        _WATCH_HEADERS,
                        idle_timeout=idle_timeout,
                        timeout=create_timeout,
                    ) as resp:
                        if resp.status != 200:
                            _refused(ep, resp.status, resp.read())
                        for line in resp.lines():
                            if not line.strip():
                                continue
                            msg = _obj(loads(line, "the message"), "the message")
                            if "error" in msg:
                                _refused(ep, 500, json.dumps(msg["error"]).encode())
                            result = msg.get("result")
                            if not isinstance(result, dict):
                                raise _Malformed("result is %s, not an object" % _kind(result))
                            if result.get("canceled"):
                                compact = _int(result, "compact_revision")
                                if compact and compact <= next_rev:  # nothing asked is gone
                                    raise _Malformed(
                                        "watch from revision %d canceled as compacted up to "
                                        "revision %d" % (next_rev, compact)
                                    )
                                if compact:
                                    raise EtcdCompacted(next_rev, compact)
                                raise _Refused(
                                    "watch canceled: %.200s" % result.get("cancel_reason", "")
                                )
                            if result.get("created"):
                                served = True
                                self._preferred = i
                                if not next_rev:  # pin "now" so a resume misses nothing
                                    next_rev = _header_revision(result) + 1
                            # a message is checked whole before any of it is delivered; a
                            # fragment may end within a revision (the rest comes next)
                            last = 0
                            for ev in _watch_events(result, delivered or next_rev):
                                delivered = last = ev.revision
                                if ev.revision == asked:
                                    sent += 1
                                    if sent <= skip:
                                        continue  # delivered before the last stream broke
                                seen = seen + 1 if ev.revision == next_rev else 1
                                next_rev, fresh = ev.revision, True
                                yield ev
                            if last and result.get("fragment") is not True:
                                next_rev, seen = last + 1, 0  # that revision came whole
                            if stop is not None and stop.is_set():
                                return
                except HttpReplyTooLarge as exc:
                    # reopening would read the same message again: say so, do not loop
                    raise EtcdError(
                        "watch %r from revision %d: %s (a member that does not split its "
                        "messages: etcd 3.4 or later splits them)" % (k, next_rev, exc)
                    ) from None
                except HttpTimeout:
                    # Idle: nothing changed for idle_timeout s. Re-open on the same member.
                    if served:
                        break
                    errors[ep] = "ReadTimeout before the watch was created"
                    continue
                except (_Malformed, _Refused, JsonError) as exc:
                    # This member does not serve the watch: the next one goes on from next_rev
                    # (never this one again at once, which may send the same again and again).
                    bad = "" if isinstance(exc, _Refused) else "malformed watch message: "
                    errors[ep] = bad + str(exc)
                    served = False
                    if fresh:  # it did serve until then: the deadline counts from here
                        deadline = time.monotonic() + self.retry_deadline
                        delay = 0.05
                    else:
                        next_rev, seen = asked, skip  # a pin of "now" by a broken member undone
                    if self._preferred == i:
                        self._preferred = (i + 1) % len(self._endpoints)
                    continue
                except (HttpFailure, _Retryable) as exc:
                    errors[ep] = "%s: %s" % (type(exc).__name__, exc)
                    if served and fresh:
                        break  # member died mid-stream: resume at once from next_rev
                else:
                    if served and fresh:
                        break  # stream ended cleanly (member shutting down): resume
                    errors[ep] = "watch stream ended before it %s" % (
                        "delivered anything new" if served else "was created"
                    )
                # Created and gone before any new event (none, or only those delivered before):
                # a member that does so every time would be asked again at once, for ever; it
                # counts against it, as no answer does.
                served = False
                if self._preferred == i:
                    self._preferred = (i + 1) % len(self._endpoints)
            if served:  # a member served the watch: the deadline counts from now
                errors.clear()
                deadline = time.monotonic() + self.retry_deadline
                delay = 0.05
                continue
            if time.monotonic() + delay >= deadline:
                raise EtcdUnavailable("watch " + repr(k), errors)
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    # ------------------------------------------------------------------ leases
    def lease_grant(self, ttl: int) -> int:
        """Grant a lease of ``ttl`` seconds; returns its id."""
        body = {"TTL": str(ttl)}
        return self._call("/v3/lease/grant", body, lambda out: _int(out, "ID"), repeatable=False)

    def lease_keepalive(self, lease_id: int) -> int:
        """Refresh a lease once; returns its new TTL in seconds (0 if it has expired)."""
        body = {"ID": str(lease_id)}
        return self._call(
            "/v3/lease/keepalive", body, lambda out: _int(_obj(out.get("result"), "result"), "TTL")
        )

    def lease_revoke(self, lease_id: int) -> None:
        """Revoke a lease (deleting every key attached to it)."""
        self._call("/v3/lease/revoke", {"ID": str(lease_id)}, lambda out: None)

    # ------------------------------------------------------------------ cluster
    def member_list(self) -> list[Member]:
        """The cluster's members as seen by the first member that answers."""

        def member(m: Any) -> Member:
            m = _obj(m, "member")
            return Member(
                id=_int(m, "ID"),
                name=str(m.get("name") or ""),
                peer_urls=_strs(m, "peerURLs"),
                client_urls=_strs(m, "clientURLs"),
                is_learner=bool(m.get("isLearner")),
            )

        return self._call(
            "/v3/cluster/member/list", {}, lambda out: [member(m) for m in _list(out, "members")]
        )

    def health(self, timeout: float = 2.0) -> dict[str, bool]:
        """``/health`` of every endpoint: True if that member is healthy and has a leader."""
        result: dict[str, bool] = {}
        for ep in self._endpoints:
            try:
                r = self._http.get(ep + "/health", timeout=timeout)
                doc = loads(r.content, "health") if r.status_code == 200 else None
                result[ep] = isinstance(doc, dict) and doc.get("health") == "true"
            except (httpx.HTTPError, ValueError):
                result[ep] = False
        return result

    def status(self, timeout: float = 2.0) -> dict[str, EndpointStatus]:
        """``/v3/maintenance/status`` of every endpoint (no failover: one answer each)."""
        result: dict[str, EndpointStatus] = {}
        for ep in self._endpoints:
            try:
                r = self._http.post(ep + "/v3/maintenance/status", json={}, timeout=timeout)
                d = self._decode(ep, "/v3/maintenance/status", r.status_code, r.content)
                hdr = _obj(d.get("header"), "header")
                result[ep] = EndpointStatus(
                    endpoint=ep,
                    member_id=_int(hdr, "member_id"),
                    leader=_int(d, "leader"),
                    raft_term=_int(d, "raftTerm"),
                    raft_index=_int(d, "raftIndex"),
                    raft_applied_index=_int(d, "raftAppliedIndex"),
                    revision=_int(hdr, "revision"),
                    version=str(d.get("version", "")),
                    db_size=_int(d, "dbSize"),
                    db_size_in_use=_int(d, "dbSizeInUse"),
                )
            except (httpx.HTTPError, _Retryable, EtcdRequestError) as exc:
                name = "malformed reply" if isinstance(exc, _Malformed) else type(exc).__name__
                result[ep] = EndpointStatus(ep, error="%s: %s" % (name, exc))
        return result

    def leader_endpoint(self) -> str | None:
        """The client URL of the current leader, if one of our endpoints is it."""
        for ep, st in self.status().items():
            if st.is_leader:
                return ep
        return None
