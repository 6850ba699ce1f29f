"""Wiring the consortium into a bank node (``hubi bank serve``) and into one process (embedded).

A bank node takes part in the consortium when ``HOME/banks/<BANK>/consortium.json`` exists
(``hubi consortium up`` and ``init`` write it) or the consortium file names an orderer. That node
configuration says where the log is and how to reach the peers:

    {"orderer": "etcd", "etcd": ["http://127.0.0.1:2379", ...],   # own member first
     "peers": {"BKB": "http://127.0.0.1:8702", ...},              # default: consortium file
     "state": "consortium.db",                                    # relative to the bank's folder
     "endorse_timeout": 5.0, "settle_timeout": 10.0, "checkpoint_interval": 1.0,
     "hedge_delay": 0.25,                # ask more peers if the first have not answered
     "stall_after": 1.0,                 # a peer silent that long is asked only once at a time
     "prune_interval": 10.0}             # mark the applied revision, forget what all applied
    {"orderer": "embedded", "path": "../../consortium/log.db"}    # one machine, no etcd

``attach(node, ...)`` (called from ``hubi.bank.server.build_node``) builds a
:class:`ConsortiumNode` for the bank, routes interbank uploads to it (same-bank notes still go to
the engine), adds the ``/v1/consortium/*`` routes, and starts/stops the log applier with the node.

``EmbeddedConsortium`` runs several banks' engines and consortium nodes in one process over the
SQLite orderer, with in-process validation: the same code path without a cluster or HTTP.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hubi import jsonload
from hubi import kmc as kmc_mod
from hubi.bank.engine import BankEngine, kept_treasury_key
from hubi.consortium.errors import ConsortiumError, NotEndorsed, OrdererError, PeerError
from hubi.consortium.node import DEFAULT_PRUNE_INTERVAL, ConsortiumNode
from hubi.consortium.orderer import Orderer, SqliteOrderer
from hubi.consortium.state import ConsortiumState
from hubi.consortium.transport import HttpPeerTransport, LocalPeerTransport
from hubi_core import codec, ids
from hubi_core.errors import CodecError, HubiError
from hubi_core.verify import Trust

log = logging.getLogger("hubi.consortium")

__all__ = [
    "CONFIG_NAME",
    "ConsortiumBackend",
    "EmbeddedConsortium",
    "NodeConfig",
    "attach",
    "build_node",
    "config_path",
    "load_config",
    "open_orderer",
    "write_config",
]

CONFIG_NAME = "consortium.json"
ENV_CONFIG = "HUBI_CONSORTIUM_CONFIG"


@dataclass
class NodeConfig:
    """Where one bank finds the log and its peers (``HOME/banks/<BANK>/consortium.json``)."""

    orderer: str = "embedded"  # etcd | embedded
    etcd: list[str] = field(default_factory=list)
    path: str | None = None  # embedded orderer file (relative to the bank's folder)
    prefix: str | None = None  # default: the consortium file's log prefix
    peers: dict[str, str] = field(default_factory=dict)
    state: str = "consortium.db"
    endorse_timeout: float = 5.0
    settle_timeout: float = 10.0
    checkpoint_interval: float = 1.0
    hedge_delay: float = 0.25
    stall_after: float = 1.0
    prune_interval: float = DEFAULT_PRUNE_INTERVAL

    def to_json(self) -> str:
        doc = {k: v for k, v in self.__dict__.items() if v not in (None, [], {})}
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: bytes | str, where: str) -> NodeConfig:
        try:
            doc = jsonload.loads(text, where)
        except jsonload.JsonError as exc:
            raise ConsortiumError(str(exc)) from None
        if not isinstance(doc, dict):
            raise ConsortiumError(f"{where} must hold a JSON object")
        unknown = sorted(set(doc) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConsortiumError(f"{where}: unknown setting(s) {', '.join(unknown)}")
        cfg = cls(**doc)
        if not isinstance(cfg.etcd, list):
            raise ConsortiumError(f"{where}: etcd must be a list of http(s) client URLs")
        for i, u in enumerate(cfg.etcd):
            _check_url(u, f"{where}: etcd must be a list of http(s) client URLs: etcd[{i}]")
        if not isinstance(cfg.peers, dict):
            raise ConsortiumError(f"{where}: peers must map bank ids to http(s) node URLs")
        for b, u in cfg.peers.items():
            _check_url(
                u, f"{where}: peers must map bank ids to http(s) node URLs: peers[{_shown(b)}]"
            )
        for name in ("path", "prefix", "state"):
            v = getattr(cfg, name)
            if not (v is None and name != "state") and not (isinstance(v, str) and v):
                raise ConsortiumError(
                    f"{where}: {name} must be a non-empty string, not {_shown(v)}"
                )
        for name in _SECONDS:
            v = getattr(cfg, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < 3600:
                raise ConsortiumError(
                    f"{where}: {name} must be seconds in (0, 3600), not {_shown(v)}"
                )
        if cfg.orderer not in ("etcd", "embedded"):
            raise ConsortiumError(
                f"{where}: orderer must be 'etcd' or 'embedded', not {_shown(cfg.orderer)}"
            )
        if cfg.orderer == "etcd" and not cfg.etcd:
            raise ConsortiumError(f"{where}: orderer etcd needs 'etcd' client URLs")
        return cfg


def _shown(v: Any) -> str:
    """A value of a damaged file as an error names it: short, whatever it holds."""
    try:
        text = repr(v)
    except (RecursionError, ValueError):
        text = f"a {type(v).__name__}"
    return text if len(text) <= 60 else text[:59] + "…"


def _check_url(url: Any, what: str) -> None:
    """An http(s) URL with a host and a valid port; ConsortiumError naming ``what`` if not."""
    if not isinstance(url, str):
        raise ConsortiumError(f"{what} is {_shown(url)}, not a URL")
    if "@" in url.partition("://")[2]:  # first: the checks below show the URL, password too
        raise ConsortiumError(
            f"{what} holds a user name or password before '@' (hubi nodes take signed"
            " requests, not HTTP log-ins)"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise ConsortiumError(f"{what} is {_shown(url)}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConsortiumError(f"{what} is {_shown(url)}, not an http(s) URL with a host")


_SECONDS = (
    "endorse_timeout",
    "settle_timeout",
    "checkpoint_interval",
    "hedge_delay",
    "stall_after",
    "prune_interval",
)


def config_path(home: Path, bank: str) -> Path:
    return kmc_mod.bank_dir(home, bank) / CONFIG_NAME


def write_config(home: Path, bank: str, cfg: NodeConfig) -> Path:
    path = config_path(home, bank)
    kmc_mod.write_atomic(path, cfg.to_json().encode())
    return path


def load_config(home: Path, bank: str, trust: Trust) -> NodeConfig | None:
    """The bank's node configuration, or None if this node is not in a consortium set-up."""
    env = os.environ.get(ENV_CONFIG)
    path = Path(env) if env else config_path(home, bank)
    if env and not path.exists():  # a typo must not silently fall back to another orderer
        raise ConsortiumError(
            f"{ENV_CONFIG} names {path}, which does not exist: point it at the node"
            f" configuration file, or unset it to use {config_path(home, bank)}"
        )
    if path.exists():
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConsortiumError(f"cannot read {path}: {exc.strerror or exc}") from None
        return NodeConfig.from_json(raw, str(path))
    cons = trust.consortium
    if cons.orderer:
        kind = cons.orderer.get("kind", "etcd")
        if kind == "etcd":
            eps = cons.etcd_endpoints()
            own = cons.bank(bank).extra.get("etcd", [])
            eps = list(own) + [e for e in eps if e not in own]
            return NodeConfig("etcd", etcd=eps)
        return NodeConfig("embedded", path=str(Path(home).resolve() / "consortium" / "log.db"))
    return None


def open_orderer(cfg: NodeConfig, prefix: bytes, bank_dir: Path) -> Orderer:
    if cfg.orderer == "etcd":
        from hubi.consortium.etcd_orderer import EtcdOrderer

        return EtcdOrderer(cfg.etcd, prefix)
    path = Path(cfg.path) if cfg.path else Path("..") / ".." / "consortium" / "log.db"
    if not path.is_absolute():
        path = (bank_dir / path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteOrderer(path, prefix=prefix)


def peer_endpoints(trust: Trust, cfg: NodeConfig) -> dict[str, str]:
    out = {}
    for b in trust.consortium.bank_ids():
        eps = trust.consortium.banks[b].endpoints
        if eps:
            out[b] = eps[0]
    out.update(cfg.peers)
    return out


def state_file(home: Path, bank: str, cfg: NodeConfig) -> Path:
    """The bank's consortium state file (``state`` is relative to the bank's folder)."""
    path = Path(cfg.state)
    return path if path.is_absolute() else kmc_mod.bank_dir(home, bank) / path


def lock_state(path: Path, bank: str) -> int:
    """Hold the state file's member lock (a flock on STATE-node.lock; the kernel drops it when
    the node dies, even by SIGKILL); returns its descriptor, to close when the node stops.
    Two members of one bank on one state file raced for every log event: each event was booked
    in whichever member's bank database won, so with two databases (a --db of its own, the
    state file left at the default) each held part of the settled notes, every audit clean."""
    from hubi.locks import Held, hold_lock_file

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = Path(str(path.resolve()) + "-node.lock")  # resolved: two spellings of one file
    try:
        return hold_lock_file(lock)
    except Held as held:
        raise ConsortiumError(
            f"node {held.holder} already applies the consortium log for bank {bank} into "
            f"{path} (it holds {lock}): two members on one state file book each event into "
            "whichever bank database wins the race; stop the other node first"
        ) from None


def build_node(
    home: Path, engine: BankEngine, trust: Trust, cfg: NodeConfig, signer: Any
) -> ConsortiumNode:
    """A ConsortiumNode for `engine`'s bank, talking HTTP to its peers."""
    bank = engine.bank
    bdir = kmc_mod.bank_dir(home, bank)
    prefix = (cfg.prefix or trust.consortium.log_prefix()).encode()
    orderer = open_orderer(cfg, prefix, bdir)
    state_path = state_file(home, bank, cfg)
    orderer_id = f"{orderer.kind}:{prefix.decode()}"
    state = ConsortiumState(state_path, orderer_id)
    transport = ClockWatch(HttpPeerTransport(signer, peer_endpoints(trust, cfg)))
    return ConsortiumNode(
        engine,
        trust,
        orderer,
        transport,
        state,
        endorse_timeout=cfg.endorse_timeout,
        settle_timeout=cfg.settle_timeout,
        checkpoint_interval=cfg.checkpoint_interval,
        hedge_delay=cfg.hedge_delay,
        stall_after=cfg.stall_after,
        prune_interval=cfg.prune_interval,
    )


# ------------------------------------------------------------------------------ clocks
class ClockWatch:
    """A peer transport that remembers which peers refuse this bank's signed validation
    requests as stale (``stale-timestamp``: the two clocks are further apart than the signed
    request window) until that peer answers again, or `forget` seconds pass without a refusal.

    A bank whose wall clock is off by more than the window (5 min) is cut off from validation
    both ways: it endorses nothing for its peers and gets no endorsement from them, so every
    note it is party to fails with 503. Only each note's error said why; ``/health`` said "ok"
    and ``hubi consortium status`` "healthy". :meth:`clock` names the refusing peers and says
    whose clock is the odd one out."""

    def __init__(self, inner: Any, forget: float = 600.0):
        self.inner = inner
        self.forget = forget  # seconds a refusal is remembered without a new request
        self._lock = threading.Lock()
        self._refused: dict[str, tuple[float, str]] = {}  # bank -> (monotonic, peer's words)
        self._answered: set[str] = set()  # peers that took a signed request since the start

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def validate(self, bank: str, note: bytes, timeout: float) -> bytes:
        try:
            out = self.inner.validate(bank, note, timeout)
        except PeerError as exc:
            with self._lock:  # a peer's auth layer refuses an X-Hubi-Time outside its window
                if exc.status == 401 and exc.code == "stale-timestamp":
                    self._refused[bank] = (time.monotonic(), exc.said)
                elif exc.replied and exc.status is not None and exc.status != 401:
                    # it read the signed request (an error reply of another kind)
                    self._refused.pop(bank, None)
                    self._answered.add(bank)
            raise
        with self._lock:
            self._refused.pop(bank, None)
            self._answered.add(bank)
        return out

    def clock(self) -> dict[str, Any] | None:
        """None while no peer refuses this bank's requests as stale; else the refusing peers
        (what each said, how long ago) and a verdict: this bank's clock is off when more than
        half of the peers it asked refuse it, else the refusing peers' clocks are."""
        with self._lock:
            now = time.monotonic()
            for bank in [b for b, (t, _) in self._refused.items() if now - t > self.forget]:
                # not asked since: a clock put right must not leave /health degraded for
                # ever (a balancer that skips a degraded node would send no note to clear it)
                del self._refused[bank]
            refused = dict(self._refused)
            asked = len(set(refused) | self._answered)
        if not refused:
            return None
        ours = len(refused) * 2 > asked
        names = ", ".join(sorted(refused))
        if asked < 2:  # one peer heard from: which of the two clocks is off cannot be told
            verdict = f"this bank's clock or {names}'s is off: {names} refuses its signed requests"
        elif ours:
            verdict = f"this bank's clock is off: {names} refuse its signed requests as stale"
        else:
            verdict = f"the clock of {names} is off: it refuses this bank's signed requests"
        return {
            "verdict": verdict,
            "this_bank_off": ours and asked >= 2,
            "refused_by": {
                b: {"said": said, "seconds_ago": round(now - t, 1)}
                for b, (t, said) in sorted(refused.items())
            },
        }

    def close(self) -> None:
        self.inner.close()


# ------------------------------------------------------------------------------ bank node


class ConsortiumBackend:
    """The bank node's backend with interbank uploads routed to the consortium."""

    def __init__(self, inner: Any, cnode: ConsortiumNode):
        self._inner = inner
        self.consortium = cnode

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def fence(self, why: str | None) -> None:
        """The inner backend's fence, the consortium applier's too: a node whose database
        lock is not its own books nothing, interbank notes included."""
        self._inner.fence(why)
        self.consortium.fenced = why

    def upload(self, data: bytes) -> dict[str, Any]:
        from hubi.bank.api import ApiError

        try:
            obj = codec.decode(data, codec.NOTE)
            payer_bank, payee_bank = ids.bank_of(obj.signer), ids.bank_of(obj["payee"])
        except (CodecError, ValueError):
            return self._inner.upload(data)  # the engine names what is wrong
        if payer_bank == payee_bank:
            return self._inner.upload(data)
        self._inner.check_fence()  # not ordered: this node's applier would not book it now
        try:
            return self.consortium.submit(data).as_json()
        except NotEndorsed as exc:
            raise ApiError(503, "consortium-unavailable", str(exc)) from None
        except OrdererError as exc:
            raise ApiError(503, "orderer-unavailable", str(exc)) from None
        except ConsortiumError as exc:
            # the state file moved under the node, or the node stopping: retry later (a 4xx
            # is final to the merchant, which would never upload the note again)
            why = self.consortium.unavailable()
            if why is not None:
                raise ApiError(503, "consortium-unavailable", why) from None
            raise ApiError(409, "consortium", str(exc)) from None

    def health(self) -> dict[str, Any]:
        out = dict(self._inner.health())
        c = self.consortium
        unreadable: str | None = None
        try:
            c.check_state()  # this thread may hold a connection to a file moved since
            applied: int | None = c.state.applied_revision()
        except ConsortiumError as exc:  # its state file replaced or removed under the node:
            applied, unreadable = None, str(exc)  # name it (not "store unavailable")
        out["consortium"] = {
            "applied_revision": applied,
            "orderer": c.orderer.kind,
            "applying": c.applying,
            "last_error": c.last_error or unreadable,
            # set: it applies nothing until its state is restored, or its applier has failed
            # on every try for a while (then /health says degraded, not ok)
            "halted": c.halted or unreadable or c.stuck(),
        }
        transport = c.transport
        if isinstance(transport, ClockWatch):  # peers refusing signed requests as stale
            clock = transport.clock()
            if clock is not None:
                out["consortium"]["clock"] = clock
        return out


def attach(node: Any, home: Path, trust: Trust, identity: Any) -> ConsortiumNode | None:
    """Make a primary bank node a consortium member if its home configures one (see module
    docstring); returns the ConsortiumNode, or None when not configured."""
    from hubi.bank.auth import Signer

    if node.role != "primary":
        return None
    cfg = load_config(home, node.bank, trust)
    if cfg is None:
        return None
    backend = node.backend
    engine = backend.engine
    held = lock_state(state_file(home, node.bank, cfg), node.bank)
    try:
        cnode = build_node(home, engine, trust, cfg, Signer(node.bank, identity.private))
    except BaseException:
        os.close(held)
        raise
    node.backend = ConsortiumBackend(backend, cnode)
    node.on_startup.append(cnode.start)
    node.on_shutdown.insert(0, cnode.close)
    node.on_shutdown.insert(1, lambda: os.close(held))  # once the applier has stopped
    extensions = getattr(node, "extensions", None)
    if extensions is not None:
        extensions.append(routes(cnode, node))
    log.info(
        "bank %s is a member of consortium %s (orderer: %s)",
        node.bank,
        trust.consortium.name,
        cnode.orderer.description,
    )
    return cnode


def routes(cnode: ConsortiumNode, node: Any) -> Callable[[Any], None]:
    """A function that adds the /v1/consortium/* routes to a FastAPI app."""
    from hubi.consortium.routes import add_routes

    return lambda app: add_routes(app, cnode, node.authenticator)


# ------------------------------------------------------------------------------ embedded


class EmbeddedConsortium:
    """Several banks in one process over the embedded SQLite orderer (no etcd, no HTTP).

    with EmbeddedConsortium(home, ["BKA", "BKB", "BKC"]) as ec:
        ec.engine("BKA").fund(...)
        ec.submit("BKB", note_bytes)      # upload at the payee's bank
    """

    def __init__(
        self,
        home: Path,
        banks: list[str] | None = None,
        *,
        orderer_path: Path | None = None,
        settle_timeout: float = 10.0,
        checkpoint_interval: float = 1.0,
        prune_interval: float | None = DEFAULT_PRUNE_INTERVAL,
        engine_kw: dict[str, Any] | None = None,
        trust: Trust | None = None,
    ):
        self.home = Path(home)
        self.trust = trust or kmc_mod.load_trust(self.home / "trust")
        self.banks = banks or self.trust.consortium.bank_ids()
        prefix = self.trust.consortium.log_prefix().encode()
        path = orderer_path or self.home / "consortium" / "log.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.orderer_path = path
        self.nodes: dict[str, ConsortiumNode] = {}
        self.transports: dict[str, LocalPeerTransport] = {}
        opts = {
            "settle_timeout": settle_timeout,
            "checkpoint_interval": checkpoint_interval,
            "prune_interval": prune_interval,
        }
        for b in self.banks:
            try:
                self.nodes[b] = self._open_bank(b, prefix, engine_kw or {}, opts)
            except (HubiError, OSError, RuntimeError, sqlite3.Error, ValueError) as exc:
                self._close_quietly()  # the banks opened before it: not left to the GC
                raise ConsortiumError(
                    f"bank {b}: cannot open it in the embedded consortium: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            except BaseException:
                self._close_quietly()
                raise
        for tr in self.transports.values():
            tr.nodes.update(self.nodes)

    def _open_bank(
        self, b: str, prefix: bytes, engine_kw: dict[str, Any], opts: dict[str, Any]
    ) -> ConsortiumNode:
        """Bank `b`'s engine, orderer client and state as a node (what it opened is closed
        again if a later step fails)."""
        bdir = kmc_mod.bank_dir(self.home, b)
        with contextlib.ExitStack() as opened:
            kw = dict(engine_kw)
            if "treasury_key" not in kw:  # a damaged file is named by fund(), as in serve
                kw.update(kept_treasury_key(bdir / "treasury.secret"))
            engine = BankEngine(
                str(bdir / "bank.db"), kmc_mod.load_bank_identity(self.home, b), self.trust, **kw
            )
            opened.callback(engine.close)
            orderer = SqliteOrderer(self.orderer_path, prefix=prefix)
            opened.callback(orderer.close)
            state = ConsortiumState(bdir / "consortium.db", f"embedded:{prefix.decode()}")
            opened.callback(state.close)
            tr = LocalPeerTransport(b)
            node = ConsortiumNode(engine, self.trust, orderer, tr, state, **opts)
            self.transports[b] = tr
            opened.pop_all()
        return node

    def engine(self, bank: str) -> BankEngine:
        return self.nodes[bank].engine

    def start(self) -> EmbeddedConsortium:
        try:
            for n in self.nodes.values():
                n.start()
        except BaseException:
            self._close_quietly()  # `with` does not call __exit__ when __enter__ fails
            raise
        return self

    def submit(self, bank: str, note: bytes) -> dict[str, Any]:
        """Upload a note at `bank`: same-bank notes book locally, interbank ones settle."""
        obj = codec.decode(note, codec.NOTE)
        if ids.bank_of(obj.signer) == ids.bank_of(obj["payee"]) == bank:
            return self.engine(bank).book(note).as_dict()
        return self.nodes[bank].submit(note).as_json()

    def close(self) -> None:
        """Close every bank, even past one whose close fails (the others were left open, their
        threads running); then ConsortiumError naming the first bank that failed."""
        failed: list[tuple[str, BaseException]] = []
        for step in ("node", "engine"):  # every node stops before any engine's books close
            for b, n in self.nodes.items():
                try:
                    (n.close if step == "node" else n.engine.close)()
                except Exception as exc:
                    log.error("bank %s: closing its %s failed: %r", b, step, exc)
                    failed.append((b, exc))
        if failed:
            b, exc = failed[0]
            raise ConsortiumError(
                f"bank {b}: closing it in the embedded consortium failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _close_quietly(self) -> None:
        """close() on the way out of a failure: that failure is the one to tell (a failed
        close is logged by close())."""
        with contextlib.suppress(ConsortiumError):
            self.close()

    def __enter__(self) -> EmbeddedConsortium:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
