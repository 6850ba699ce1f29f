"""Running a bank node: one process, uvicorn, graceful shutdown (``hubi bank serve``).

    hubi bank serve --home DIR --bank BKA [--db URL] [--host H] [--port P]
                    [--checkpoint-every N] [--replica-of URL] [--ready-file F]
                    [--request-timeout S] [--max-connections N]

Data: the home folder of ``hubi.kmc`` (trust bundle in HOME/trust, the bank's secrets in
HOME/banks/<BANK>/). The database defaults to SQLite at HOME/banks/<BANK>/bank.db (a hot backup:
HOME/banks/<BANK>/replica.db). SIGTERM or SIGINT stops accepting connections, lets requests in
flight finish (up to ``--grace`` seconds), closes the database and exits 0.

Logs name the bank, the database (password masked), the address and each request's route and
status — never keys, request bodies or signature headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hubi.commands.params import HTTP_URL, POSITIVE_SECONDS, SECONDS, in_existing_folder

if TYPE_CHECKING:  # the web stack loads only when a node runs, not on every `hubi` call
    from hubi.bank import api

log = logging.getLogger("hubi.bank.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8700
DEFAULT_MAX_BODY = 64 * 1024  # = api.DEFAULT_MAX_BODY
DEFAULT_AUTH_WINDOW = 300  # = auth.DEFAULT_WINDOW
DEFAULT_MAX_CONNECTIONS = 1000


def default_max_connections() -> int:
    """DEFAULT_MAX_CONNECTIONS, or half the process's open-file limit when that is lower: the
    database, the log and the peers need descriptors too, and a node out of them fails its
    requests with "too many open files" instead of a 503 that says to come back later."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CONNECTIONS
    return max(1, min(DEFAULT_MAX_CONNECTIONS, soft // 2))


@dataclass
class ServeConfig:
    home: Path
    bank: str
    db: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    checkpoint_every: int | None = None
    replica_of: str | None = None
    ready_file: Path | None = None
    grace: float = 10.0
    max_body: int = DEFAULT_MAX_BODY
    auth_window: int = DEFAULT_AUTH_WINDOW
    log_level: str = "info"
    access_log: bool = False
    http_impl: str = "auto"  # "auto": uvloop + httptools when installed; "plain": asyncio + h11
    request_timeout: float = 30.0  # seconds a request may take to arrive, head and body
    max_connections: int | None = None  # None: default_max_connections()

    def db_url(self) -> str:
        from hubi import kmc as kmc_mod
        from hubi.bank.store import sqlite_url

        if self.db:
            return self.db
        name = "replica.db" if self.replica_of else "bank.db"
        return sqlite_url((kmc_mod.bank_dir(self.home, self.bank) / name).resolve())


# uvicorn's event loop and HTTP parser: "auto" takes uvloop and httptools (C) when they are
# installed, as they are with hubi; "plain" is pure-Python asyncio and h11, for comparison
HTTP_IMPLS: dict[str, dict[str, str]] = {
    "auto": {"loop": "auto", "http": "auto"},
    "plain": {"loop": "asyncio", "http": "h11"},
}


# A request's line and headers (the X-Hubi-* of a signed request, a template: well under 4 KiB).
# uvicorn's h11 parser caps them itself; httptools (llhttp) buffers a header however long it is,
# so one client sending an endless header filled the node's memory (a 200 MB header: +250 MB).
MAX_HEAD = 64 * 1024


class _RequestDeadline:
    """What both bounded protocols share: a timer armed while a request is arriving, which
    answers 408 (when no app has started on the request) and closes the connection when it
    fires. A subclass sets `request_timeout` and says whether the answer is still its own."""

    request_timeout: float
    _answer_is_ours: Callable[[], bool]  # no app has started on the request yet
    _deadline: asyncio.TimerHandle | None = None
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    logger: logging.Logger

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.request_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        self.logger.warning(
            "closed a connection whose request did not arrive within %g s", self.request_timeout
        )
        if self._answer_is_ours():
            msg = b"request not received within %g s" % self.request_timeout
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\n"
                b"content-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(msg), msg)
            )
        self.transport.close()


def _bounded_httptools(request_timeout: float) -> type:
    """uvicorn's httptools protocol, answering 431 and closing the connection when a request's
    line and headers pass MAX_HEAD bytes, and 408 when a request has not arrived whole within
    `request_timeout` seconds of its first byte (or of the connection, for the first request).
    uvicorn times out only an idle kept-alive connection: a client that sends its head a byte
    at a time, or connects and says nothing, held its connection for good (slowloris)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedHttpTools(_RequestDeadline, HttpToolsProtocol):
        _head = 0  # bytes received since the last request's headers ended
        _in_body = False

        def _answer_is_ours(self) -> bool:
            return not self._in_body  # the app has not started on the request

        def on_message_begin(self) -> None:
            self._arm()
            super().on_message_begin()

        def data_received(self, data: bytes) -> None:
            # a chunk may hold the head and part of the body: the parser gets the head's share
            # first (up to the cap), and what follows once it has seen the head end
            while data and not self._in_body:
                room = MAX_HEAD - self._head
                if room <= 0:
                    self._too_large()
                    return
                part, data = data[:room], data[room:]
                self._head += len(part)
                super().data_received(part)
                if self.transport.is_closing():
                    return
            if data:
                super().data_received(data)

        def on_headers_complete(self) -> None:
            self._in_body, self._head = True, 0
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_body = False
            self._disarm()
            super().on_message_complete()

        def _too_large(self) -> None:
            msg = b"request headers over %d bytes" % MAX_HEAD
            self.logger.warning(
                "closed a connection whose request headers passed %d bytes", MAX_HEAD
            )
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(msg), msg)
            )
            self.transport.close()

    BoundedHttpTools.request_timeout = request_timeout
    return BoundedHttpTools


def _bounded_h11(request_timeout: float) -> type:
    """uvicorn's h11 protocol, answering 408 and closing the connection when a request has not
    arrived whole within `request_timeout` seconds of its first byte (or of the connection, for
    the first request), as :func:`_bounded_httptools` does: h11 has no read timeout, and uvicorn
    times out only an idle kept-alive connection (the head's size h11 bounds itself)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class BoundedH11(_RequestDeadline, H11Protocol):
        def _answer_is_ours(self) -> bool:
            return self.conn.their_state is h11.IDLE  # no head yet

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            # IDLE after new bytes: a head begun, not ended (cheaper than trailing_data,
            # which copies what is buffered on every read)
            self._track(self.conn.their_state is h11.IDLE)

        def on_response_complete(self) -> None:
            super().on_response_complete()  # the next pipelined request's bytes, if any
            self._track(bool(self.conn.trailing_data[0]))

        def _track(self, head_begun: bool) -> None:
            """The deadline runs while a request is under way: part of its head taken or its
            body being sent; not once it is in, nor between requests (uvicorn's keep-alive
            timeout applies there)."""
            if self.conn.their_state is h11.SEND_BODY or head_begun:
                self._arm()
            else:
                self._disarm()

    BoundedH11.request_timeout = request_timeout
    return BoundedH11


def _uvicorn_stack(impl: str, request_timeout: float) -> dict[str, Any]:
    """uvicorn.Config's loop and http for `impl`, with the request head and the time a request
    takes to arrive bounded either way."""
    import importlib.util

    stack: dict[str, Any] = dict(HTTP_IMPLS[impl], h11_max_incomplete_event_size=MAX_HEAD)
    if impl == "auto" and importlib.util.find_spec("httptools") is not None:
        stack["http"] = _bounded_httptools(request_timeout)
    else:
        stack["http"] = _bounded_h11(request_timeout)
    return stack


def http_stack(impl: str) -> str:
    """What uvicorn will run with `impl`: "uvloop + httptools" or "asyncio + h11"."""
    import importlib.util

    def have(name: str) -> bool:
        return impl == "auto" and importlib.util.find_spec(name) is not None

    loop = "uvloop" if have("uvloop") else "asyncio"
    return f"{loop} + {'httptools' if have('httptools') else 'h11'}"


def display_url(url: str) -> str:
    """A database URL with its password masked (for logs)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return parts._replace(
            netloc=parts.netloc.replace(":" + parts.password + "@", ":***@")
        ).geturl()
    return url


def build_node(cfg: ServeConfig) -> api.Node:
    """Load trust and the bank's identity, open the database, wire the backend and auth."""
    from hubi import kmc as kmc_mod
    from hubi.bank import api, auth

    trust = kmc_mod.load_trust(Path(cfg.home) / "trust")
    trust.consortium.bank(cfg.bank)  # VerifyError if the bank is not in the consortium
    identity = kmc_mod.load_bank_identity(cfg.home, cfg.bank)
    if cfg.replica_of:
        from hubi.bank.replica import Replica, ReplicaStore

        store = ReplicaStore(cfg.db_url())
        replica = Replica(
            cfg.bank,
            cfg.replica_of,
            store,
            auth.Signer(cfg.bank, identity.private),
            trust.bank_key(cfg.bank),
        )
        authenticator = auth.Authenticator(cfg.bank, trust, None, window=cfg.auth_window)
        node = api.Node(cfg.bank, replica, authenticator, role="replica", max_body=cfg.max_body)
        replica.on_records.append(lambda n: node.metrics.replicated.inc(n))
        node.on_startup.append(replica.start)
        node.on_shutdown.append(replica.close)
        return node
    from hubi.bank.backend import EngineBackend
    from hubi.bank.store import open_store

    # the books must be there (`hubi bank init`): a mistyped --db must not serve empty books
    store = open_store(cfg.db_url(), create=False)
    backend = EngineBackend.open(
        cfg.home, cfg.bank, store, trust, identity, checkpoint_every=cfg.checkpoint_every
    )
    # a database migrated from version 1 lacks the kept subtrees of its older records (proofs
    # over them would read the records): kept here once, as `hubi bank init` does
    kept, unkept = backend.engine.keep_subtrees()
    if kept:
        log.info("kept %d subtrees of the register that the database lacked", kept)
    if unkept:
        log.warning("no subtrees kept for proofs: %s", unkept)
    authenticator = auth.Authenticator(cfg.bank, trust, backend.template_of, window=cfg.auth_window)
    node = api.Node(cfg.bank, backend, authenticator, role="primary", max_body=cfg.max_body)
    node.on_shutdown.append(backend.close)
    # issue 5: interbank notes settle through the consortium when the home configures one
    from hubi.consortium.service import attach as attach_consortium

    attach_consortium(node, cfg.home, trust, identity)
    return node


class NodeAlreadyRunning(RuntimeError):
    """Another node serves the database: `hubi bank serve` started twice for one bank."""


class NodeLockLost(RuntimeError):
    """The node's lock on its database is not its own: its PostgreSQL session ended and the
    lock is not taken again yet (the node books nothing: uploads 503 node-lock-lost, /health
    degraded), or another node took it meanwhile (the node stops, exit status 1)."""


# the PostgreSQL advisory lock ("hubinode") a node holds on its database for its whole life;
# advisory locks are per database, so nodes of other banks on one server do not meet
NODE_LOCK_KEY = 0x6875_6269_6E6F_6465
NODE_LOCK_WAIT = 3.0  # seconds: a node killed -9 just now may not have lost its session yet
# seconds between two looks at the lock's session: a session that ended (pg_terminate_backend,
# a server restart) took the lock with it, and a second node could start beside this one
NODE_LOCK_CHECK = 1.0
NODE_LOCK_CONNECT_TIMEOUT = 5  # seconds: a server that does not answer must not stall the look
# seconds one look at the lock may take: on a cut network a query waited for its answer for
# minutes (TCP retransmits) while the server dropped the session, and the lock, in ~25 s; a look
# not answered by then cuts the connection, and the node is fenced until it has the lock again
NODE_LOCK_QUERY_TIMEOUT = 3.0
_TWICE = (
    "two nodes booking into one database serve the same books twice over (each its own "
    "consortium applier, nonces and caches): stop the other one first"
)


class NodeLock:
    """The database's node lock, held while the node runs. SQLite's (a flock) cannot go while
    the process lives; PostgreSQL's (:class:`PgNodeLock`) goes with its session."""

    lost_to: str | None = None  # who holds the lock now, once another node took it
    stopped_why: str | None = None  # why the lock stopped the node (it then exits non-zero)

    def watch(self, fence: Callable[[str | None], None], stop: Callable[[], None]) -> None:
        """Start looking after the lock: `fence(why)` when the node must stop booking,
        `fence(None)` when it may book again, `stop()` once another node holds the lock."""

    def release(self) -> None:
        """Let the lock go."""


class _FlockNodeLock(NodeLock):
    def __init__(self, fd: int | None):
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@contextlib.contextmanager
def node_lock(cfg: ServeConfig) -> Iterator[NodeLock]:
    """Hold the database's node lock while the node runs, or NodeAlreadyRunning: a second
    `hubi bank serve` on the same database (two terminals, a service manager plus a manual
    start, a second host pointed at the primary's PostgreSQL) started and booked beside the
    first, unnoticed. The kernel (SQLite: a flock on DB-node.lock) or the server (PostgreSQL:
    a session advisory lock) drops the lock when the node dies, even by SIGKILL. Other
    commands (init, fund, audit) open the database without it, as before."""
    from hubi.bank.store import parse_url

    loc = parse_url(cfg.db_url())
    lock: NodeLock
    if loc.dialect == "sqlite":
        lock = _FlockNodeLock(_lock_sqlite(Path(loc.target), replica=bool(cfg.replica_of)))
    else:
        lock = PgNodeLock(loc.target, cfg.db_url(), cfg.bank)
    try:
        yield lock
    finally:
        lock.release()


def _lock_sqlite(db: Path, replica: bool) -> int | None:
    if not (db.is_file() or (replica and db.parent.is_dir())):
        return None  # no books there: the store refuses them, naming the path
    from hubi.locks import Held, hold_lock_file

    lock = Path(str(db.resolve()) + "-node.lock")  # resolved: two spellings of one file
    try:
        return hold_lock_file(lock)
    except Held as held:
        raise NodeAlreadyRunning(
            f"node {held.holder} already serves {db} (it holds {lock}); {_TWICE}"
        ) from None


class PgNodeLock(NodeLock):
    """The session advisory lock NODE_LOCK_KEY on the node's PostgreSQL database, on a
    connection of its own. The server drops it with the session: a watchdog thread looks at
    the session every NODE_LOCK_CHECK seconds and takes the lock again on a new one; while it
    cannot, the node is fenced (books nothing), and once another node holds the lock this one
    stops (``lost_to`` names the other)."""

    def __init__(self, target: str, url: str, bank: str):
        self.target, self.url = target, url
        self.me = f"hubi bank serve {bank} pid {os.getpid()} on {socket.gethostname()}"[:63]
        self.conn: Any = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self.retaken = 0  # times the lock was taken again on a new session
        conn = self._connect()
        if conn is None:
            return  # the store cannot connect either, and says why
        try:
            deadline = time.monotonic() + NODE_LOCK_WAIT
            while not self._try(conn):
                if time.monotonic() > deadline:
                    raise NodeAlreadyRunning(
                        f"{self._holder(conn)} already serves {display_url(url)} (it holds "
                        f"advisory lock {NODE_LOCK_KEY}); {_TWICE}"
                    )
                time.sleep(0.1)
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def _connect(self) -> Any:
        import psycopg

        from hubi.bank.store import PG_KEEPALIVES

        try:
            conn = psycopg.connect(
                self.target,
                autocommit=True,
                application_name=self.me,
                connect_timeout=NODE_LOCK_CONNECT_TIMEOUT,
                **PG_KEEPALIVES,
            )
        except psycopg.Error:
            return None
        try:
            # the server drops the session (and the lock) of a node whose host died within
            # ~25 s, not after the kernel's two hours; a look it is slow to answer ends too
            settings = {
                "tcp_keepalives_idle": "10",
                "tcp_keepalives_interval": "5",
                "tcp_keepalives_count": "3",
                "statement_timeout": str(int(NODE_LOCK_QUERY_TIMEOUT * 1000)),
            }
            sets = ", ".join("set_config(%s, %s, false)" for _ in settings)
            args = [x for kv in settings.items() for x in kv]
            _bounded(conn, lambda c: c.execute("SELECT " + sets, args).fetchone())
        except psycopg.Error:
            conn.close()
            return None
        return conn

    @staticmethod
    def _try(conn: Any) -> bool:
        return bool(
            _bounded(
                conn,
                lambda c: c.execute("SELECT pg_try_advisory_lock(%s)", (NODE_LOCK_KEY,)).fetchone(),
            )[0]
        )

    @staticmethod
    def _holder_row(conn: Any) -> Any:
        """(application name, client address, server pid) of the session holding the lock,
        or None (no one holds it now)."""
        return _bounded(
            conn,
            lambda c: c.execute(
                "SELECT a.application_name, a.client_addr, a.pid FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                "AND l.granted AND l.objsubid = 1 AND l.classid = %s AND l.objid = %s "
                "AND l.database = (SELECT oid FROM pg_database "
                "WHERE datname = current_database())",
                (NODE_LOCK_KEY >> 32, NODE_LOCK_KEY & 0xFFFFFFFF),
            ).fetchone(),
        )

    @staticmethod
    def _holder_text(row: Any) -> str:
        if not row:
            return "another session"
        return f"{row[0] or 'a session'} (from {row[1] or 'local socket'}, server pid {row[2]})"

    @classmethod
    def _holder(cls, conn: Any) -> str:
        return cls._holder_text(cls._holder_row(conn))

    def _held(self) -> bool:
        """Whether this node's session is alive and holds the lock (a closed session: no)."""
        import psycopg

        if self.conn is None:
            return False
        try:
            row = _bounded(
                self.conn,
                lambda c: c.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND objsubid = 1 AND classid = %s AND objid = %s "
                    "AND pid = pg_backend_pid()",
                    (NODE_LOCK_KEY >> 32, NODE_LOCK_KEY & 0xFFFFFFFF),
                ).fetchone(),
            )
        except psycopg.Error:
            return False
        return bool(row and row[0])

    def watch(self, fence: Callable[[str | None], None], stop: Callable[[], None]) -> None:
        if self._thread is not None:
            return
        fenced = self.conn is None
        if fenced:
            # the lock's connection failed at start, yet the store opened after it (a server
            # restarting, its connection slots full for a moment): the node would book with
            # no lock, unwatched; it books nothing until the watchdog has taken the lock
            log.error(
                "the node lock on %s could not be taken at start (no connection): booking "
                "nothing until it is",
                display_url(self.url),
            )
            fence(
                f"the node has not taken its lock on {display_url(self.url)} yet (its database "
                "refused the connection): it books nothing until it has"
            )
        self._thread = threading.Thread(
            target=self._watch, args=(fence, stop, fenced), name="node-lock", daemon=True
        )
        self._thread.start()

    def _watch(
        self, fence: Callable[[str | None], None], stop: Callable[[], None], fenced: bool
    ) -> None:
        try:
            self._watch_lock(fence, stop, fenced)
        except Exception as exc:  # a watchdog that died would leave the node booking unwatched
            log.error("the node lock's watchdog failed (%s: %s): stopping", type(exc).__name__, exc)
            fence(f"the node's lock watchdog failed ({type(exc).__name__}): the node is stopping")
            self.stopped_why = (
                f"the watchdog of the node lock on {display_url(self.url)} failed "
                f"({type(exc).__name__}: {exc}): the node stopped rather than book unwatched"
            )
            stop()

    def _watch_lock(
        self, fence: Callable[[str | None], None], stop: Callable[[], None], fenced: bool
    ) -> None:
        import psycopg

        wait = 0.0 if fenced else NODE_LOCK_CHECK  # a lock never taken: tried at once
        waiting_own = False  # said once: the lock held by a session of this node's gone before
        while not self._done.wait(wait):
            wait = NODE_LOCK_CHECK
            if self._held():
                continue
            if not fenced:  # fail closed first: another node may be booking already
                log.error(
                    "lost the node lock on %s (its session ended or did not answer within "
                    "%g s): booking nothing until it is taken again",
                    display_url(self.url),
                    NODE_LOCK_QUERY_TIMEOUT,
                )
                fence(
                    f"the node lost its lock on {display_url(self.url)} (its database session "
                    f"ended or did not answer within {NODE_LOCK_QUERY_TIMEOUT:g} s) and has "
                    "not taken it again: it books nothing until it has"
                )
                fenced = True
            if self.conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self.conn.close()
            self.conn = self._connect()
            if self.conn is None:
                continue  # the server is away: looked at again in NODE_LOCK_CHECK seconds
            try:
                if self._try(self.conn):
                    self.retaken += 1
                    waiting_own = False
                    log.warning("took the node lock on %s again", display_url(self.url))
                    fence(None)
                    fenced = False
                    continue
                row = self._holder_row(self.conn)
            except psycopg.Error:
                continue
            if not row:  # let go between the two looks: taken at the next one
                continue
            if row[0] == self.me:
                # this node's own earlier session, which the server has not dropped yet (the
                # connection broke on the way, not at the server: dropped within ~25 s by its
                # keepalives); it was taken for another node, and the node stopped
                if not waiting_own:
                    log.warning(
                        "the node lock on %s is still held by this node's earlier session "
                        "(server pid %s): waiting for the server to drop it",
                        display_url(self.url),
                        row[2],
                    )
                    waiting_own = True
                continue
            holder = self._holder_text(row)
            self.lost_to = holder
            self.stopped_why = (
                f"{holder} took the node lock on {display_url(self.url)} while this node's "
                f"database session was gone (or before it had one); this node stopped. {_TWICE}"
            )
            log.error(
                "%s took the node lock on %s while this node's session was gone (or before it "
                "had one): stopping (%s)",
                holder,
                display_url(self.url),
                _TWICE,
            )
            fence(f"{holder} serves {display_url(self.url)} now: this node is stopping")
            stop()
            return

    def release(self) -> None:
        self._done.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            # one pass at worst: a connect and four queries, each bounded (and a margin)
            self._thread.join(
                NODE_LOCK_CHECK + NODE_LOCK_CONNECT_TIMEOUT + 5 * NODE_LOCK_QUERY_TIMEOUT
            )
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _bounded(conn: Any, query: Callable[[Any], Any]) -> Any:
    """query(conn) on the lock's connection, cut if not answered within
    NODE_LOCK_QUERY_TIMEOUT s (hubi.bank.store.bounded)."""
    from hubi.bank.store import bounded

    return bounded(conn, query, NODE_LOCK_QUERY_TIMEOUT)


def configure_logging(level: str) -> None:
    chosen = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(
        level=chosen,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request at INFO: a hot backup's pulls (five a second while idle, about
    # 430,000 lines a day) and a node's calls to its peers; they are for debugging only
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(chosen if chosen <= logging.DEBUG else logging.WARNING)


def _server_class() -> Any:
    import uvicorn

    class _Server(uvicorn.Server):
        """uvicorn.Server that writes a ready file (url, pid) once its socket listens, and that
        exits normally (status 0) after a graceful shutdown on SIGTERM/SIGINT instead of re-raising
        the signal (uvicorn's default, which would skip our own clean-up)."""

        ready_file: Path | None = None
        url: str | None = None
        stopped_by: list[int] | None = None

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            await super().shutdown(sockets)
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                self.stopped_by = list(captured)
                captured.clear()

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.should_exit:
                return
            host, port = self.config.host, self.config.port
            for server in getattr(self, "servers", []):
                for sock in server.sockets:
                    host, port = sock.getsockname()[:2]
                    break
            self.url = f"http://{host}:{port}"
            log.info("listening on %s (pid %d)", self.url, os.getpid())
            if self.ready_file is not None:
                tmp = self.ready_file.with_suffix(".tmp")
                tmp.write_text(json.dumps({"url": self.url, "pid": os.getpid()}))
                os.replace(tmp, self.ready_file)

    return _Server


def serve(cfg: ServeConfig) -> int:
    """Run the node until SIGTERM/SIGINT, holding the database's node lock; returns the exit
    status."""
    configure_logging(cfg.log_level)
    with node_lock(cfg) as lock:
        status = _serve(cfg, lock)
    if lock.stopped_why:  # exits non-zero: a service manager must not take it for a clean stop
        raise NodeLockLost(lock.stopped_why)
    return status


def _serve(cfg: ServeConfig, lock: NodeLock | None = None) -> int:
    import uvicorn

    from hubi.bank import api

    lock = lock or NodeLock()
    node = build_node(cfg)
    log.info(
        "bank %s (%s) database %s%s; HTTP on %s",
        cfg.bank,
        node.role,
        display_url(cfg.db_url()),
        f", replicating {cfg.replica_of}" if cfg.replica_of else "",
        http_stack(cfg.http_impl),
    )
    app = api.create_app(node)
    config = uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.port,
        log_level=cfg.log_level,
        access_log=cfg.access_log,
        lifespan="on",
        timeout_graceful_shutdown=cfg.grace,
        server_header=False,
        proxy_headers=False,
        # uvicorn answers 503 to a request when this many connections (its own among them) or
        # requests are open: +1 so that max_connections connections are served
        limit_concurrency=(cfg.max_connections or default_max_connections()) + 1,
        **_uvicorn_stack(cfg.http_impl, cfg.request_timeout),
    )
    server = _server_class()(config)
    server.ready_file = cfg.ready_file
    fence = getattr(node.backend, "fence", None)

    def stop() -> None:  # from the lock's watchdog thread: uvicorn looks at it every 0.1 s
        server.should_exit = True

    lock.watch(fence or (lambda why: None), stop)
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits when it cannot listen; say where it tried
        if server.started:
            raise
        log.error(
            "bank %s could not listen on %s port %d (see above)", cfg.bank, cfg.host, cfg.port
        )
        return exc.code if isinstance(exc.code, int) and exc.code else 1
    finally:
        if cfg.ready_file is not None:
            cfg.ready_file.unlink(missing_ok=True)
        if server.started and not node.stopped:
            # a second Ctrl-C forces the quit and uvicorn skips the app's shutdown: without
            # it the consortium's asks to a hung peer, and the requests waiting on them, kept
            # the process alive until they timed out (minutes); the database is closed too
            log.warning("bank %s: forced to quit; closing what the node had open", cfg.bank)
            asyncio.run(api.shut_down(node))
    how = ", ".join(signal.Signals(s).name for s in server.stopped_by or []) or "request"
    log.info("bank %s stopped (%s)", cfg.bank, how)
    return 0 if server.started else 1


# ------------------------------------------------------------------------------- the command


@click.command("serve")
@click.option(
    "--home",
    envvar="HUBI_HOME",
    show_envvar=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    required=True,
    help="hubi home folder (trust/ and banks/<BANK>/).",
)
@click.option(
    "--bank",
    envvar="HUBI_BANK",
    show_envvar=True,
    required=True,
    help="Bank id this node serves (BKA).",
)
@click.option(
    "--db",
    default=None,
    envvar="HUBI_DB",
    show_envvar=True,
    help="Database URL: sqlite:///path, a file path or postgresql://... "
    "(default: HOME/banks/<BANK>/bank.db, or replica.db for a hot backup). "
    "Env HUBI_DB keeps a password off the command line.",
)
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port (0: any free port).",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=None,
    help="Sign a Merkle tree head every N register entries (kept in the database; default 1000).",
)
@click.option(
    "--replica-of",
    type=HTTP_URL,
    default=None,
    metavar="URL",
    help="Run as the hot backup of the primary node at URL (copies its records).",
)
@click.option(
    "--ready-file",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=in_existing_folder,
    default=None,
    help="Write {url, pid} as JSON here once listening (removed on exit).",
)
@click.option(
    "--grace",
    type=SECONDS,
    default=10.0,
    show_default=True,
    help="Seconds requests in flight get to finish on SIGTERM/SIGINT.",
)
@click.option(
    "--max-body",
    type=click.IntRange(min=1024),
    default=DEFAULT_MAX_BODY,
    show_default=True,
    help="Largest request body accepted, in bytes.",
)
@click.option(
    "--request-timeout",
    type=POSITIVE_SECONDS,
    default=30.0,
    show_default=True,
    help="Seconds a request may take to arrive, from the connection or its first byte "
    "(408 and the connection closed after; a body still arriving: the connection closed).",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=None,
    help=f"Connections served at a time; a request on another gets 503 (retry later). "
    f"Default: {DEFAULT_MAX_CONNECTIONS}, or half the open-file limit if lower.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@click.option("--access-log/--no-access-log", default=False, help="Log every request line.")
@click.option(
    "--http-impl",
    type=click.Choice(sorted(HTTP_IMPLS)),
    default="auto",
    show_default=True,
    help="auto: uvloop and httptools when installed; plain: asyncio and h11 (pure Python).",
)
def serve_command(
    home: Path,
    bank: str,
    db: str | None,
    host: str,
    port: int,
    checkpoint_every: int | None,
    replica_of: str | None,
    ready_file: Path | None,
    grace: float,
    max_body: int,
    request_timeout: float,
    max_connections: int | None,
    log_level: str,
    access_log: bool,
    http_impl: str,
) -> None:
    """Run the bank node (HTTP API, docs/bank-api.md) until SIGTERM or SIGINT."""
    from hubi_core.errors import HubiError

    cfg = ServeConfig(
        home=home,
        bank=bank,
        db=db,
        host=host,
        port=port,
        checkpoint_every=checkpoint_every,
        replica_of=replica_of,
        ready_file=ready_file,
        grace=grace,
        max_body=max_body,
        request_timeout=request_timeout,
        max_connections=max_connections,
        log_level=log_level,
        access_log=access_log,
        http_impl=http_impl,
    )
    try:
        status = serve(cfg)
    except (HubiError, OSError, ValueError, RuntimeError) as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    sys.exit(status)


if __name__ == "__main__":  # python -m hubi.bank.server --home ... --bank ...
    serve_command()
