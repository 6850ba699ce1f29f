"""``hubi consortium up``: N bank nodes and a 3-member etcd cluster on loopback, supervised.

Everything lives under one folder (the current folder for the command):

    FOLDER/hubi-consortium/
        layout.json          bank ids, their ports, the etcd layout (kept across runs)
        home/                the hubi home: trust/ (consortium file, matrices), banks/<BANK>/
                             (kmc.secret, identity.secret, treasury.secret, bank.db,
                             consortium.json, consortium.db)
        home/accounts/       <ACCOUNT>.json: account id, template and key of the demo accounts
                             (``--accounts K``; 0600; for making notes by hand — never logged)
        etcd/                the etcd cluster (cluster.json, m0/, m1/, m2/, logs)
        run/<BANK>.log       bank node logs; run/<BANK>.ready while a node listens
        up.json              what is running: supervisor pid, banks (url, pid), etcd members

The first ``up`` creates the home (one KMC and key per bank, a consortium file signed by every
founding bank listing each bank's HTTP endpoint and etcd member, orderer etcd), opens each bank's
treasury and demo accounts; later runs reuse it, with the same ports. The supervisor restarts a
bank node or etcd member that dies (after ``restart_delay``; one that dies again soon after waits
twice as long each time, and after ``quick_failures`` such deaths in a row it is given up and
shown ``failed`` with the reason, e.g. its port taken by another program; a part given up is
tried once more after ``retry_failed`` s if its ports are free by then, else when they are,
checked every ``retry_failed`` s, never signalling the program that holds them; each such try
that fails doubles the wait, up to ``max_retry_failed``; a restarted part is not waited for long:
each pass sees whether it listens, or is healthy, however late, and a death counts as quick only
before that or within ``stable_after`` s of it), and on
SIGINT/SIGTERM stops the banks (SIGTERM, they finish requests in flight), then etcd, and marks
``up.json`` stopped. A signal while it prepares or starts is acted on at once: what is made is
kept (a demo account's key is written before the account is opened) for the next run.

``status(folder)`` is ``hubi consortium status``: each bank's ``/health`` and each etcd member's
``/health``, each with ``healthy`` true or false, plus what each bank applied from the log and
the peers it finds stalled (``hubi.consortium.peers``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import httpx

from hubi import kmc as kmc_mod
from hubi.consortium import service
from hubi.infra import _process
from hubi.infra.etcd_server import EtcdCluster, EtcdStartCancelled
from hubi.infra.ports import free_port, port_taken, reserve_port
from hubi.jsonload import loads
from hubi.output import printable
from hubi_core import codec, ids
from hubi_core.errors import HubiError
from hubi_core.verify import Trust

if TYPE_CHECKING:
    from hubi.bank.engine import BankEngine

log = logging.getLogger("hubi.consortium.up")

__all__ = ["STATE_DIR", "Stopped", "Supervisor", "bank_ids", "init_home", "lock_holder", "status"]

STATE_DIR = "hubi-consortium"
PARTIAL_HOME = "home.partial"  # the first run's home while it is made (renamed once laid out)
REPO_ROOT = Path(__file__).resolve().parents[3]
# how long a pass waits for a restarted etcd member to be healthy: one joining members that run
# is healthy in a second or two; one waiting for the others (no quorum until they are back, and
# they are restarted after it) is watched by later passes, not waited for with the lock held
MEMBER_WAIT = 5.0
# how long a bank node has to stop after SIGTERM before it is killed: its own grace for the
# requests in flight (10 s, `bank serve --grace`) and its close, which may wait for one etcd
# request (5 s) when the cluster has no quorum; at 15 s such a node was killed
BANK_GRACE = 20.0


_T = TypeVar("_T")


class _Spawner:
    """Runs the calls that start bank nodes and etcd members on one thread that lives as long
    as the process. Their parent-death signal (PR_SET_PDEATHSIG, hubi.infra._process) fires
    when the *thread* that forked them exits: `run()` or `start()` on a worker thread (a
    library user's, the tests') that then returned took every node it had started with it,
    SIGKILLed, not stopped (SIGTERM) by stop(). The main thread lives as long as the process
    and forks itself."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def call(self, fn: Callable[[], _T]) -> _T:
        here = threading.current_thread()
        if here is threading.main_thread() or here is self._thread:
            return fn()
        done: Future[_T] = Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="hubi-consortium-spawner", daemon=True
                )
                self._thread.start()
        self._jobs.put((fn, done))
        return done.result()

    def _loop(self) -> None:
        while True:
            fn, done = self._jobs.get()
            try:
                done.set_result(fn())
            except BaseException as exc:  # handed to the caller, which waits for it
                done.set_exception(exc)


_SPAWNER = _Spawner()


def bank_ids(n: int) -> list[str]:
    """BKA, BKB, ... (then BK27, BK28, ... past 26)."""
    if n < 1:
        raise ValueError("a consortium needs at least one bank")
    out = []
    for i in range(n):
        out.append("BK" + chr(ord("A") + i) if i < 26 else f"BK{i + 1:02d}")
    return out


class Stopped(Exception):
    """A stop (Ctrl-C, SIGTERM) was asked for while `up` prepared or started."""


def _check(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise Stopped("stop asked for")


PARTIAL = ".init-partial"  # where init_home writes a new home first


def init_home(
    home: Path,
    banks: list[str],
    *,
    name: str = "hubi",
    endpoints: dict[str, list[str]] | None = None,
    etcd: dict[str, list[str]] | None = None,
    orderer: str | None = "etcd",
    seed: bytes | None = None,
    time_now: int | None = None,
    stop: threading.Event | None = None,
) -> Trust:
    """Create KMCs, bank keys and a consortium file signed by every founding bank (Stopped,
    before anything is written, once `stop` is set: each KMC takes a while)."""
    home = Path(home)
    if (home / "trust" / "consortium.json").exists():
        raise FileExistsError(f"{home} already holds a consortium (trust/consortium.json)")
    # never overwrite a key: a home left half made (or holding other banks' keys) is refused
    held = [
        str(p)
        for b in banks
        for p in (
            kmc_mod.bank_dir(home, b) / "kmc.secret",
            kmc_mod.bank_dir(home, b) / "identity.secret",
            home / "trust" / "matrices" / f"{b}.pub",
        )
        if p.exists() or p.is_symlink()
    ]
    if held:
        raise FileExistsError(
            f"{home} already holds bank files that would be overwritten: {', '.join(held)};"
            " move them away (keep them) or choose another home"
        )
    kmcs = {}
    for b in banks:
        _check(stop)
        kmcs[b] = kmc_mod.Kmc.create(b, None if seed is None else seed + b.encode())
    cons, identities = kmc_mod.make_consortium(
        name, kmcs, endpoints=endpoints or {}, time=int(time_now or time.time())
    )
    for b in banks:
        if etcd and etcd.get(b):
            cons.banks[b].extra["etcd"] = list(etcd[b])
    if orderer:
        cons.orderer = {"kind": orderer, "prefix": f"hubi/{name}/"}
    cons.signatures = {}
    # A new (or empty) home is written into a partial folder and moved into place at the end:
    # a kill or a full disk part-way left some banks' keys and no consortium, which every rerun
    # then refused. What such a run left holds keys of no consortium: removed. A new home is
    # the partial folder renamed; an empty one that is there (a link's target, the folder the
    # shell stands in, a mount point) is kept and filled from a partial folder inside it,
    # trust last (renamed over, a link was replaced, the shell left in a deleted folder).
    real = Path(os.path.realpath(home))
    inside = real.is_dir()
    partial = real / PARTIAL if inside else real.with_name(real.name + PARTIAL)
    fresh = not real.exists() or (inside and all(p.name == PARTIAL for p in real.iterdir()))
    into = partial if fresh else home
    if fresh:
        shutil.rmtree(into, ignore_errors=True)
    for b in banks:
        cons.sign(b, identities[b].private)
        kmcs[b].save(kmc_mod.bank_dir(into, b) / "kmc.secret")
        ident = identities[b]
        kmc_mod.write_secret(
            kmc_mod.bank_dir(into, b) / "identity.secret",
            ident.private.to_bytes(32, "big") + ident.separating_key,
        )
    kmc_mod.save_trust(into / "trust", cons, {b: k.public for b, k in kmcs.items()})
    if fresh and inside:  # trust last: a home without it is one a rerun may redo
        for entry in sorted(into.iterdir(), key=lambda e: e.name == "trust"):
            os.replace(entry, real / entry.name)
        into.rmdir()
    elif fresh:
        os.replace(into, real)
    return kmc_mod.load_trust(home / "trust")


def open_treasury(eng: BankEngine, home: Path, bank: str, kmc: Any) -> None:
    """The bank's treasury account, opened once; its key kept in HOME/banks/<BANK>/treasury.secret
    (BankEngine.open reads it from there)."""
    if eng.account(eng.treasury) is None:
        kmc_mod.open_treasury(eng, home, bank)


def setup_bank(
    home: Path,
    bank: str,
    accounts: int,
    funds: int,
    checkpoint_every: int | None = None,
    trust: Trust | None = None,
    stop: threading.Event | None = None,
) -> list[str]:
    """Open the bank's treasury and `accounts` funded accounts whose keys go to
    HOME/accounts/<ACCOUNT>.json (0600). Idempotent, and safe to kill at any point: a key is
    written before its account is opened, an account is funded until it has a record. Stopped
    (what is done is kept) once `stop` is set. Returns the account ids."""
    from hubi.bank.engine import BankEngine

    home = Path(home)
    kmc = kmc_mod.load_kmc(home, bank)
    made = []
    db = str(kmc_mod.bank_dir(home, bank) / "bank.db")
    with BankEngine.open(
        db, home=home, bank=bank, trust=trust, checkpoint_every=checkpoint_every
    ) as eng:
        open_treasury(eng, home, bank, kmc)
        for i in range(1, accounts + 1):
            _check(stop)
            acct = f"{bank}-{i:06d}"
            _open_demo_account(eng, kmc, home / "accounts" / f"{acct}.json", acct)
            if funds and eng.head(acct).n == 0:  # opened by a run killed before funding it
                out = eng.fund(acct, funds)
                if not out.ok:
                    raise RuntimeError(f"funding {acct} failed: {out.reason}")
            made.append(acct)
    return made


def _open_demo_account(eng: BankEngine, kmc: Any, path: Path, acct: str) -> None:
    """Open `acct` with its key kept in `path` first (a key is random: one the database has and
    no file keeps is lost), or with the key a killed run kept there."""
    if eng.account(acct) is not None:
        if not path.exists():  # made before keys were kept first: nothing can bring it back
            log.warning("demo account %s has no key file %s: it cannot pay", acct, path)
        return
    if path.exists():
        try:
            doc = loads(path.read_bytes(), str(path))
            priv, tpl = int(doc["key"], 16), bytes.fromhex(doc["template"])
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise RuntimeError(
                f"{path} is damaged ({type(exc).__name__}): move it away (keep it) and run"
                " `hubi consortium up` again to open a new account"
            ) from None
        try:
            eng.open_kept(priv, tpl, account=acct)
        except HubiError as exc:  # another account's or another database's key
            raise RuntimeError(f"{path}: {exc}; move it away (keep it) and run again") from None
        return

    def keep(priv: int, tpl: Any) -> None:
        doc = {
            "account": acct,
            "template": codec.encode(tpl).hex(),
            "key": "%064x" % priv,
            "next_serial": 1,
        }
        kmc_mod.write_secret(path, json.dumps(doc, indent=1).encode())

    eng.issue_account(kmc, acct, keep=keep)


def serve_argv(
    home: Path, bank: str, port: int, ready_file: Path, log_level: str, extra: Sequence[str] = ()
) -> list[str]:
    """The command line of one bank node (`hubi bank serve`, run by this interpreter)."""
    return [
        *(sys.executable, "-c", "from hubi.cli import main; main()", "bank", "serve"),
        *("--home", str(home), "--bank", bank, "--port", str(port)),
        *("--ready-file", str(ready_file), "--log-level", log_level),
        *extra,
    ]


@dataclass
class BankProcess:
    bank: str
    port: int
    home: Path
    run_dir: Path
    extra: list[str] = field(default_factory=list)
    log_level: str = "warning"
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    died_at: float | None = None
    up_since: float | None = None  # when it last listened (None: not since its last spawn)
    spawned_at: float | None = None  # when it was last started
    late_told: bool = False  # its slow start was logged (once per spawn)
    failures: int = 0  # quick deaths in a row (before listening, or soon after)
    delay: float = 0.0  # before the next restart
    failed: str | None = None  # why it is no longer restarted
    retry_at: float | None = None  # while failed: when to look at its port again
    retry_wait: float = 0.0  # after the last give-up (doubles while tries fail)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"{self.bank}.log"

    @property
    def ready_path(self) -> Path:
        return self.run_dir / f"{self.bank}.ready"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        self.ready_path.unlink(missing_ok=True)
        argv = serve_argv(
            self.home, self.bank, self.port, self.ready_path, self.log_level, self.extra
        )
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env.pop(service.ENV_CONFIG, None)
        env.pop("HUBI_DB", None)  # an operator's shell default: each node serves its own books
        # The port stays reserved by this process (flock) so that no other hubi allocator takes
        # it while the node is down between restarts; the reservation does not stop the bind.
        self.proc = _SPAWNER.call(
            partial(_process.spawn, argv, log_path=self.log_path, cwd=self.run_dir, env=env)
        )
        self.died_at = None
        self.up_since = None
        self.spawned_at, self.late_told = time.monotonic(), False

    def poll_ready(self) -> bool:
        """True (up_since set) if the node now listens: its ready file names its pid."""
        if self.proc is None or not self.ready_path.exists():
            return False
        try:
            info = loads(self.ready_path.read_bytes(), str(self.ready_path))
        except (OSError, ValueError):  # gone again, or written only in part
            return False
        if not (isinstance(info, dict) and info.get("pid") == self.proc.pid):
            return False
        self.up_since = time.monotonic()
        return True

    def wait_ready(self, timeout: float, stop: threading.Event | None = None) -> bool:
        """True once the node listens; False if `stop` is set first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                return False
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(
                    f"bank node {self.bank} {_process.exit_text(code)}; log {self.log_path}:\n"
                    + _process.log_tail(self.log_path)
                )
            if self.poll_ready():
                return True
            time.sleep(0.05)
        raise TimeoutError(
            f"bank node {self.bank} did not listen within {timeout:g} s; log {self.log_path}:\n"
            + _process.log_tail(self.log_path)
        )

    def stop(self, grace: float = BANK_GRACE) -> None:
        if self.proc is not None:
            running = self.proc.poll() is None
            code = _process.stop(self.proc, first=signal.SIGTERM, grace=grace)
            if running and code == -signal.SIGKILL:  # its requests in flight were cut off
                log.warning("bank node %s did not stop within %g s: killed", self.bank, grace)
            self.proc = None


@dataclass
class MemberWatch:
    """An etcd member's restarts, as BankProcess keeps a bank node's (see _count_death)."""

    died_at: float | None = None
    up_since: float | None = None
    failures: int = 0
    delay: float = 0.0
    failed: str | None = None
    retry_at: float | None = None
    retry_wait: float = 0.0


class Supervisor:
    """Runs a consortium on loopback under ``folder/hubi-consortium`` (see the module doc)."""

    def __init__(
        self,
        folder: Path,
        banks: int = 4,
        *,
        name: str = "hubi",
        etcd_members: int = 3,
        durable: bool = True,
        accounts: int = 0,
        funds: int = 1_000_000,
        checkpoint_every: int | None = None,
        log_level: str = "warning",
        restart: bool = True,
        restart_delay: float = 1.0,
        max_restart_delay: float = 30.0,
        quick_failures: int = 5,
        stable_after: float = 10.0,
        retry_failed: float = 30.0,
        max_retry_failed: float = 600.0,
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
        settle_timeout: float | None = None,
        ready_timeout: float = 60.0,
    ):
        self.folder = Path(folder).resolve()
        self.root = self.folder / STATE_DIR
        self.home = self.root / "home"
        self.run_dir = self.root / "run"
        self.layout_path = self.root / "layout.json"
        self.state_path = self.root / "up.json"
        self.name = name
        self.n = banks
        self.etcd_members = etcd_members
        self.durable = durable
        self.accounts = accounts
        self.funds = funds
        self.checkpoint_every = checkpoint_every
        self.log_level = log_level
        self.restart = restart
        self.restart_delay = restart_delay
        # a node that dies before it listens, or within stable_after s, waits twice as long
        # each time (up to max_restart_delay), and is given up after quick_failures in a row
        self.max_restart_delay = max_restart_delay
        self.quick_failures = quick_failures
        self.stable_after = stable_after
        # a part given up is tried again (its port freed by the program that took it, say):
        # once its ports are free, looked at every retry_failed s, waits doubling per failed try
        self.retry_failed = retry_failed
        self.max_retry_failed = max_retry_failed
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.settle_timeout = settle_timeout
        # a restarted node not listening after this long is logged (and still watched for)
        self.ready_timeout = ready_timeout
        self.cluster: EtcdCluster | None = None
        self.banks: dict[str, BankProcess] = {}
        self.members: dict[str, MemberWatch] = {}  # etcd members by name, once supervised
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._folder_lock: int | None = None  # fd holding up.lock while this supervisor runs

    # ------------------------------------------------------------------------ set-up
    def _lock_folder(self) -> None:
        """One supervisor per folder: a second `up` stops here, before it touches anything
        (it used to fail on a port later and then mark the running consortium stopped)."""
        fd = os.open(self.root / "up.lock", os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_flock(fd, fcntl.LOCK_EX):
            os.close(fd)
            pid = lock_holder(self.root)  # not up.json's: that may be a killed run's
            raise RuntimeError(
                f"a `hubi consortium up` is already running in {self.folder}"
                + (f" (supervisor pid {pid})" if pid else "")
                + ": stop it with Ctrl-C first, or pass another --dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for `status` and a second `up`
        self._folder_lock = fd

    def prepare(self) -> None:
        """Create (first run) or reload (later runs) the layout, home and configuration;
        Stopped (the folder let go; what is done is kept, and taken up by the next run) once
        stop is asked for."""
        owner = _state_owner(self.folder)
        if owner is not None:  # a typo'd --dir made a second consortium, new keys, in its files
            raise RuntimeError(
                f"{self.folder} lies inside {owner / STATE_DIR}, the state of the consortium in"
                f" {owner}: pass --dir {owner} to run that one, or a folder outside it for a new"
                " one"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        if self._folder_lock is None:
            self._lock_folder()
        try:
            self._prepare()
        except BaseException:
            self._unlock_folder()  # nothing started: the folder is free again
            raise

    def _unlock_folder(self) -> None:
        if self._folder_lock is not None:
            os.close(self._folder_lock)
            self._folder_lock = None

    def _prepare(self) -> None:
        self.run_dir.mkdir(exist_ok=True)
        layout = self._load_layout()
        cluster = EtcdCluster(
            self.root / "etcd",
            members=self.etcd_members,
            start=False,
            durable=self.durable,
            heartbeat_ms=self.heartbeat_ms,
            election_ms=self.election_ms,
        )
        self.cluster = cluster
        urls = cluster.client_urls
        partial = self.root / PARTIAL_HOME
        if layout is None:
            # Made aside and renamed once the layout is written: a first run killed half-way
            # leaves only home.partial, which never ran (no money in it), and is made again.
            if partial.exists():
                log.warning("%s is left from a first `up` that was killed; making it anew", partial)
                shutil.rmtree(partial)
            made = self.home if self.home.exists() else partial  # a home of old: init_home says
            ids_ = bank_ids(self.n)
            ports = {b: free_port() for b in ids_}
            etcd_of = {b: [urls[i % len(urls)]] for i, b in enumerate(ids_)}
            init_home(
                made,
                ids_,
                name=self.name,
                endpoints={b: [f"http://127.0.0.1:{p}"] for b, p in ports.items()},
                etcd=etcd_of,
                orderer="etcd",
                stop=self._stop,
            )
            layout = {"name": self.name, "banks": [[b, ports[b]] for b in ids_]}
            tmp = self.layout_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(layout, indent=1) + "\n")
            tmp.replace(self.layout_path)
        if not self.home.exists() and partial.exists():  # killed between layout and rename
            partial.replace(self.home)
        ids_ = [b for b, _ in layout["banks"]]
        trust = kmc_mod.load_trust(self.home / "trust")
        if trust.consortium.name != self.name:  # the home's, not this run's --name
            log.info(
                "%s holds consortium %s; --name %s ignored",
                self.root,
                trust.consortium.name,
                self.name,
            )
            self.name = trust.consortium.name
        strangers = [b for b in ids_ if b not in trust.consortium.banks]
        if strangers:
            raise RuntimeError(
                f"{self.layout_path} names {', '.join(strangers)}, not in the consortium file"
                f" {self.home / 'trust' / 'consortium.json'}: put the layout.json of this home"
                " back from a backup"
            )
        _keep_etcd_urls(cluster, trust, ids_)
        urls = cluster.client_urls
        for i, (b, port) in enumerate(layout["banks"]):
            own = urls[i % len(urls)]
            cfg = service.NodeConfig(
                "etcd",
                etcd=[own] + [u for u in urls if u != own],
                checkpoint_interval=1.0,
            )
            if self.settle_timeout is not None:
                cfg.settle_timeout = self.settle_timeout
            _check(self._stop)
            service.write_config(self.home, b, cfg)
            setup_bank(
                self.home,
                b,
                self.accounts,
                self.funds,
                self.checkpoint_every,
                trust=trust,
                stop=self._stop,
            )
            extra = []
            if self.checkpoint_every:
                extra = ["--checkpoint-every", str(self.checkpoint_every)]
            self.banks[b] = BankProcess(
                b, int(port), self.home, self.run_dir, extra, log_level=self.log_level
            )
        self.n = len(ids_)

    def _load_layout(self) -> dict[str, Any] | None:
        if not self.layout_path.exists():
            if (self.home / "trust" / "consortium.json").exists():
                raise RuntimeError(
                    f"{self.home} holds a consortium but {self.layout_path} is missing: put"
                    f" layout.json back from a backup, or move {self.root} away (keep it) to"
                    " start a new consortium"
                )
            return None
        layout = _read_doc(self.layout_path, "banks")
        if not all(
            isinstance(x, list) and len(x) == 2 and isinstance(x[0], str) and isinstance(x[1], int)
            for x in layout["banks"]
        ):
            raise RuntimeError(
                f"{self.layout_path} is damaged: banks must be pairs of a bank id and a port"
            )
        _check_layout_banks(self.layout_path, layout["banks"])
        if len(layout["banks"]) != self.n:
            log.info(
                "%s holds %d banks; --banks %d ignored", self.root, len(layout["banks"]), self.n
            )
        for b, port in layout["banks"]:
            if not reserve_port(int(port)):
                raise RuntimeError(
                    f"bank {b} of {self.root} needs its old port {port} back, which another"
                    f" program holds: stop that program (`ss -ltnp 'sport = :{port}'` names it)"
                    " and run `hubi consortium up` again"
                )
        return layout

    # --------------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 60.0) -> bool:
        """Start etcd and the banks; False (nothing more started) once stop is asked for."""
        if self.cluster is None:
            self.prepare()
        assert self.cluster is not None
        self.write_state("starting")  # `status` meanwhile: this pid, not a killed run's
        if self._stop.is_set():
            return False
        try:
            # up to 30 s: a Ctrl-C meanwhile calls it off (forks on a lasting thread: _Spawner)
            _SPAWNER.call(partial(self.cluster.start, self._stop))
        except EtcdStartCancelled:
            return False
        for bp in self.banks.values():
            if self._stop.is_set():
                return False
            bp.spawn()
        for bp in self.banks.values():
            if not self._wait_first(bp, timeout):
                return False
        self.write_state("running")
        return True

    def _wait_first(self, bp: BankProcess, timeout: float) -> bool:
        """bp.wait_ready for the first start; a node killed by a signal before it listens is
        started again (after restart_delay, doubling), up to quick_failures times in all. A
        signal comes from outside (the OOM killer, a stray kill): it ended the whole `up`,
        though `up` restarts a node that dies later. A node that exits by itself (its own
        error) still ends the start with its log, at once."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return bp.wait_ready(max(deadline - time.monotonic(), 0.1), self._stop)
            except RuntimeError:
                code = bp.proc.returncode if bp.proc is not None else None
                if code is None or code >= 0 or bp.failures + 1 >= self.quick_failures:
                    raise
                bp.failures += 1
                bp.delay = min(self.restart_delay * 2**bp.failures, self.max_restart_delay)
                log.warning(
                    "bank node %s %s before it listened; starting it again in %g s",
                    bp.bank,
                    _process.exit_text(code),
                    bp.delay,
                )
                if self._stop.wait(bp.delay):
                    return False
                bp.restarts += 1
                bp.spawn()

    def write_state(self, state: str) -> None:
        doc = {
            "state": state,
            "supervisor_pid": os.getpid(),
            "home": str(self.home),
            "consortium": self.name,
            "time": int(time.time()),
            "banks": [
                {
                    "id": b,
                    "url": bp.url,
                    "pid": bp.proc.pid if bp.running() and bp.proc else None,
                    "restarts": bp.restarts,
                    **({"failed": bp.failed} if bp.failed else {}),
                }
                for b, bp in self.banks.items()
            ],
            "etcd": [
                {"name": m.name, "url": m.client_url, "pid": m.pid, **self._failed(m.name)}
                for m in (self.cluster.members if self.cluster else [])
            ],
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        tmp.replace(self.state_path)

    def _tell_state(self, state: str) -> None:
        """write_state, an OSError (a full disk) logged: supervising, or stopping the banks
        gracefully, matters more than up.json being up to date (`status` may lag)."""
        try:
            self.write_state(state)
        except OSError as exc:
            log.error("cannot write %s (state %s): %s", self.state_path, state, exc)

    def _failed(self, member: str) -> dict[str, str]:
        w = self.members.get(member)
        return {"failed": w.failed} if w is not None and w.failed else {}

    def supervise_once(self) -> list[str]:
        """Restart whatever died (after restart_delay); returns what was restarted."""
        done = []
        now = time.monotonic()
        with self._lock:
            if self._stop.is_set():
                return done
            assert self.cluster is not None
            changed = False
            for i, m in enumerate(self.cluster.members):
                w = self.members.setdefault(m.name, MemberWatch(up_since=now))
                ports = [m.client_port, m.peer_port]
                if w.failed is not None:
                    changed |= self._try_again(w, f"etcd member {m.name}", ports, now)
                if w.failed is not None:
                    continue
                if m.running:
                    if w.up_since is None and _member_healthy(m.client_url):
                        w.up_since = time.monotonic()  # however late: a later death is timed
                        done.append(m.name)
                    continue
                if w.died_at is None:
                    w.died_at = now
                    code = m.proc.returncode if m.proc is not None else None
                    self._count_death(w, f"etcd member {m.name}", ports, code, m.log_path, now)
                    changed |= w.failed is not None
                if w.failed is not None or now - w.died_at < w.delay:
                    continue
                w.up_since = None  # until it is healthy again
                try:
                    restart = self.cluster.restart
                    _SPAWNER.call(partial(restart, i, timeout=MEMBER_WAIT, stop=self._stop))
                    w.died_at, w.up_since = None, time.monotonic()
                    done.append(m.name)
                except Exception as exc:
                    w.died_at = None  # found dead again next time: a quick failure
                    if m.running and not isinstance(exc, EtcdStartCancelled):
                        log.warning(
                            "etcd member %s restarted, not healthy yet (waiting for the others?)",
                            m.name,
                        )
                        changed = True  # its new pid, in up.json
                    elif not m.running:
                        log.error("restarting etcd member %s failed: %s", m.name, exc)
            for b, bp in self.banks.items():
                if bp.failed is not None:
                    changed |= self._try_again(bp, f"bank node {b}", [bp.port], now)
                if bp.failed is not None:
                    continue
                if bp.running():
                    if bp.up_since is None and self._came_up(bp, now):
                        done.append(b)
                    continue
                if bp.died_at is None:
                    bp.died_at = now
                    code = bp.proc.returncode if bp.proc is not None else None
                    self._count_death(bp, f"bank node {b}", [bp.port], code, bp.log_path, now)
                    changed |= bp.failed is not None
                if bp.failed is not None or now - bp.died_at < bp.delay:
                    continue
                bp.restarts += 1
                try:
                    bp.spawn()
                except OSError as exc:  # its log not writable, no fork: not the end of `up`
                    bp.died_at = None  # found dead again next time: a quick failure
                    log.error("restarting bank node %s failed: %s", b, exc)
                    continue
                changed = True  # its new pid, in up.json
                # not waited for here (the lock held the other parts' restarts and stop up
                # to a minute): a later pass sees it listen, however late, or die
            if done or changed:
                self._tell_state("running")
        return done

    def _came_up(self, bp: BankProcess, now: float) -> bool:
        """Whether a restarted node `bp`, running, listens now (its up_since set: a death long
        after is not a quick one); a node slow to listen is logged once and watched on."""
        if bp.poll_ready():
            if bp.late_told:
                log.warning("bank node %s listens at last", bp.bank)
            return True
        slow = bp.spawned_at is not None and now - bp.spawned_at > self.ready_timeout
        if slow and not bp.late_told:
            bp.late_told = True
            log.error(
                "bank node %s does not listen %g s after its restart (still waiting for it);"
                " log %s:\n%s",
                bp.bank,
                self.ready_timeout,
                bp.log_path,
                _process.log_tail(bp.log_path),
            )
        return False

    def _count_death(
        self, w: Any, what: str, ports: list[int], code: int | None, log_path: Path, now: float
    ) -> None:
        """Set when `w` (a BankProcess or MemberWatch), found dead, is restarted, or give it up
        (w.failed says why): one port taken by another program made it one restart a second
        for ever."""
        quick = w.up_since is None or now - w.up_since < self.stable_after
        w.failures = w.failures + 1 if quick else 0
        if not quick:  # it ran well: a later give-up waits retry_failed again
            w.retry_wait = 0.0
        w.delay = min(self.restart_delay * 2**w.failures, self.max_restart_delay)
        if w.failures < self.quick_failures:
            log.warning("%s %s; restarting it in %g s", what, _process.exit_text(code), w.delay)
            return
        taken = [p for p in ports if port_taken(p)]
        if taken:
            why = f"port {taken[0]} is taken by another program (`ss -ltnp 'sport = :{taken[0]}'`"
            why += " names it)"
        else:
            why = f"it {_process.exit_text(code)}; log {log_path}"
        w.retry_wait = min(w.retry_wait * 2 or self.retry_failed, self.max_retry_failed)
        w.retry_at = now + w.retry_wait
        w.failed = (
            f"not restarted after {w.failures} failed starts in a row: {why}; tried again in"
            f" {w.retry_wait:g} s, or once its port is free, if that is later"
        )
        log.error("%s %s", what, w.failed)

    def _try_again(self, w: Any, what: str, ports: list[int], now: float) -> bool:
        """Clear w.failed (True) once its retry is due and none of `ports` is taken: a node
        given up for a port another program took runs again once that program let it go,
        without `up` restarted. A port still taken is looked at again in retry_failed s (a
        bind test: the program holding it is sent nothing)."""
        if w.retry_at is None or now < w.retry_at:
            return False
        taken = [p for p in ports if port_taken(p)]
        if taken:
            w.retry_at = now + self.retry_failed
            return False
        log.warning("%s was given up; its port is free: trying it again", what)
        w.failed, w.retry_at, w.delay = None, None, 0.0
        w.failures = self.quick_failures - 1  # one more quick death gives it up again
        return True

    def run(self, poll: float = 0.5) -> None:
        """Supervise until stop() (or SIGINT/SIGTERM in the main thread). A pass that fails
        in a way nobody foresaw is logged and the next one runs: ending here would stop every
        bank and etcd member that is running fine."""
        told: dict[str, float] = {}  # each failure's text: when it was last logged
        while not self._stop.wait(poll):
            if not self.restart:
                continue
            try:
                self.supervise_once()
            except Exception as exc:  # noqa: BLE001 - see above
                what, now = f"{type(exc).__name__}: {exc}", time.monotonic()
                if now - told.get(what, -3600.0) >= 60.0:  # the same one at most once a minute
                    # forget texts not seen for a minute: a failure naming a new value each
                    # time (a path, a number) would otherwise grow this for the process's life
                    told = {k: t for k, t in told.items() if now - t < 60.0}
                    told[what] = now
                    log.exception("a supervision pass failed (the next one runs): %s", what)

    def stop(self) -> None:
        """Stop the banks (SIGTERM, requests in flight finish), then etcd; idempotent."""
        self._stop.set()
        with self._lock:
            if self._folder_lock is not None and self.state_path.exists():
                self._tell_state("stopping")  # `status` meanwhile
            procs = [bp for bp in self.banks.values() if bp.proc is not None]
            for bp in procs:
                if bp.running():
                    assert bp.proc is not None
                    _process.signal_group(bp.proc, signal.SIGTERM)
            for bp in procs:
                bp.stop(grace=BANK_GRACE)
                bp.ready_path.unlink(missing_ok=True)
            if self.cluster is not None:
                self.cluster.stop()
            if self._folder_lock is not None:  # only the folder's own supervisor says so
                if self.state_path.exists():
                    self._tell_state("stopped")
                self._unlock_folder()


def _keep_etcd_urls(cluster: EtcdCluster, trust: Trust, banks: list[str]) -> None:
    """Give a cluster that never ran the client ports the consortium file names: a first `up`
    cut off (SIGKILL, Ctrl-C) after its home was made but before etcd first started left a
    cluster.json that EtcdCluster lays out anew, and the signed file named etcd members that
    nothing served."""
    if any((m.data_dir / "member").exists() for m in cluster.members):
        return  # it ran: its ports are kept by EtcdCluster
    changed = False
    for i, b in enumerate(banks):
        m = cluster.members[i % len(cluster.members)]
        named = trust.consortium.banks[b].extra.get("etcd") or []
        port = urlsplit(named[0]).port if named and isinstance(named[0], str) else None
        if port is None or port == m.client_port:
            continue
        if not reserve_port(port):
            raise RuntimeError(
                f"etcd member {m.name} of {cluster.datadir} needs port {port} (the consortium"
                f" file names it for {b}), which another program holds: stop that program"
                f" (`ss -ltnp 'sport = :{port}'` names it) and run `hubi consortium up` again"
            )
        m.client_port, changed = port, True
    if changed:
        cluster.save_layout()  # the ports its members now have


def _state_owner(folder: Path) -> Path | None:
    """The folder whose `up` state (FOLDER/hubi-consortium, with a layout or lock in it)
    `folder` is, or lies inside; None if it is in none."""
    for p in (folder, *folder.parents):
        if p.name == STATE_DIR and any((p / f).exists() for f in ("layout.json", "up.lock")):
            return p.parent
    return None


def _check_layout_banks(path: Path, banks: list[list[Any]]) -> None:
    """RuntimeError naming `path` unless `banks` are distinct bank ids on distinct ports
    1-65535 (a hand edit: a bad port was a traceback, a bad id a path under the home)."""
    if not banks:
        raise RuntimeError(f"{path} is damaged: it lists no bank")
    for b, port in banks:
        try:
            ids.check_bank_id(b)
        except HubiError as exc:
            raise RuntimeError(f"{path} is damaged: {exc}") from None
        if isinstance(port, bool) or not 0 < port < 65536:
            raise RuntimeError(f"{path} is damaged: bank {b}'s port {port} is not 1-65535")
    for what, values in (("bank", [b for b, _ in banks]), ("port", [p for _, p in banks])):
        twice = sorted({str(v) for v in values if values.count(v) > 1})
        if twice:
            raise RuntimeError(f"{path} is damaged: {what} {', '.join(twice)} listed twice")


def _read_doc(path: Path, *keys: str) -> dict[str, Any]:
    """A state file `up` wrote (a JSON object with `keys`), or an error that names the file."""
    try:
        doc = loads(path.read_bytes(), "the text")
    except ValueError as exc:  # JsonError: not UTF-8, not JSON, too deep
        raise RuntimeError(f"{path} is damaged: not JSON ({exc})") from None
    kinds = {k: str if k == "home" else list for k in keys}  # home is a path, the rest lists
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), t) for k, t in kinds.items()):
        raise RuntimeError(f"{path} is damaged: it needs {', '.join(keys)}")
    return doc


def _try_flock(fd: int, kind: int, tries: int = 10) -> bool:
    """Take flock `kind` on fd without blocking; a few tries, since `status` holds the lock
    shared for an instant to see whether anybody holds it."""
    for i in range(tries):
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if i + 1 < tries:
                time.sleep(0.01)
    return False


def lock_holder(root: Path) -> int | None:
    """The pid of the `up` holding root/up.lock, if it is alive (it writes it there). A lock
    file nobody holds is a killed run's: its pid may be another program's by now (a reboot)."""
    try:
        fd = os.open(root / "up.lock", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if _try_flock(fd, fcntl.LOCK_SH, tries=1):  # `up` holds it for good, or not at all
            return None  # free: no `up` holds the folder
        text = os.read(fd, 64).decode("ascii", "replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    pid = int(text) if text.isdigit() and len(text) < 10 else None
    return pid if pid and _pid_alive(pid) else None


def _reply(r: httpx.Response, what: str) -> dict[str, Any]:
    """A reply's JSON object, or JsonError/ValueError naming `what`."""
    doc = loads(r.content, what)
    if not isinstance(doc, dict):
        raise ValueError(f"{what} is {type(doc).__name__}, not an object")
    return doc


# ------------------------------------------------------------------------------ status


def _healthy_bank(http: httpx.Client, url: str) -> tuple[bool, dict[str, Any]]:
    try:
        r = http.get(url + "/health")
        doc = _reply(r, f"{url}/health's reply")
        return r.status_code == 200 and doc.get("status") == "ok", doc
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        return False, {"error": f"{type(exc).__name__}: {exc}"}


def _member_healthy(url: str) -> bool:
    """Whether the etcd member at `url` answers /health with true (asked briefly)."""
    with httpx.Client(timeout=httpx.Timeout(1.0, connect=0.5)) as http:
        return _healthy_etcd(http, url)[0]


def _healthy_etcd(http: httpx.Client, url: str) -> tuple[bool, str | None]:
    try:
        r = http.get(url + "/health")
        ok = r.status_code == 200 and _reply(r, f"{url}/health's reply").get("health") == "true"
        return ok, None if ok else r.text.strip()[:200]
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        return False, f"{type(exc).__name__}: {exc}"


def _consortium_status(url: str, home: Path, bank: str) -> dict[str, Any] | None:
    from hubi.bank.auth import bank_signer

    path = "/v1/consortium/status"
    try:
        signer = bank_signer(home, bank)
        headers = signer.headers(bank, "GET", path)
        r = httpx.get(url + path, headers=headers, timeout=3.0)
        if r.status_code == 401:  # e.g. stale-timestamp: this computer's clock or the node's
            try:
                doc = _reply(r, url + path)
            except ValueError:  # no JSON object (a proxy's page): refused all the same
                doc = {}
            said = f"{doc.get('error') or 'HTTP 401'}: {doc.get('message') or ''}".strip(": ")
            return {"refused": f"the node refused this signed status request ({printable(said)})"}
        return _reply(r, url + path) if r.status_code == 200 else None
    except (httpx.HTTPError, httpx.InvalidURL, ValueError, OSError):
        return None  # details unknown: the bank's health says the rest


def status(folder: Path, *, details: bool = True) -> dict[str, Any]:
    """What ``hubi consortium up`` started in `folder`, each part with ``healthy``."""
    root = Path(folder).resolve() / STATE_DIR
    path = root / "up.json"
    holder = lock_holder(root)
    if not path.exists() and holder is not None:
        raise FileNotFoundError(
            f"`hubi consortium up` (pid {holder}) is still setting up {Path(folder).resolve()}:"
            " ask again once it says it is up"
        )
    if not path.exists():
        owner = _state_owner(Path(folder).resolve())
        if owner is not None:  # --dir given the state folder (or a folder in it) itself
            raise FileNotFoundError(
                f"{Path(folder).resolve()} is inside the state of the consortium in {owner}:"
                f" pass --dir {owner}"
            )
        raise FileNotFoundError(
            f"no consortium in {Path(folder).resolve()} (no {STATE_DIR}/up.json): run "
            "`hubi consortium up` there first"
        )
    up = _read_doc(path, "home", "banks", "etcd")
    for part, keys in (("banks", ("id", "url")), ("etcd", ("name", "url"))):
        if not all(isinstance(x, dict) and _texts(x, *keys) for x in up[part]):
            raise RuntimeError(
                f"{path} is damaged: {part} must be objects with {' and '.join(keys)}"
            )
    home = Path(up["home"])
    sup_pid, state = up.get("supervisor_pid"), up.get("state")
    if holder is not None and holder != sup_pid:  # up.json is a previous run's: a new one starts
        sup_pid, state = holder, "starting"
    out: dict[str, Any] = {
        "folder": str(Path(folder).resolve()),
        "consortium": up.get("consortium"),
        "state": state,
        # a running `up` holds up.lock: with nobody holding it, a live process of up.json's pid
        # is another program's (the pid reused since, after a reboot), not the supervisor
        "supervisor": {"pid": sup_pid, "running": holder is not None and _pid_alive(sup_pid)},
        "banks": [],
        "etcd": [],
    }
    with httpx.Client(timeout=httpx.Timeout(2.0, connect=1.0)) as http:
        for b in up["banks"]:
            item: dict[str, Any] = {"id": b["id"], "url": b["url"], "pid": b.get("pid")}
            if isinstance(b.get("failed"), str):  # given up: its port may be another program's,
                item.update(healthy=False, failed=b["failed"], error=b["failed"])
                out["banks"].append(item)  # which is not asked (nor sent a signed request)
                continue
            ok, doc = _healthy_bank(http, b["url"])
            item["healthy"] = ok
            if not ok:
                item["error"] = doc.get("error") or doc.get("status")
            detail = doc.get("detail") if isinstance(doc.get("detail"), dict) else {}
            cons = detail.get("consortium") if detail else None  # another node's words
            clock = cons.get("clock") if isinstance(cons, dict) else None
            if isinstance(clock, dict) and isinstance(clock.get("verdict"), str):
                item["clock"] = clock["verdict"]  # peers refuse its signed requests as stale
                if clock.get("this_bank_off"):
                    item["error"] = clock["verdict"]
            if "status" in doc and details:  # it answers, even if not well
                cs = _consortium_status(b["url"], home, b["id"])
                if cs is not None and "refused" in cs:  # its figures unknown: not healthy
                    item.update(healthy=False, error=cs["refused"])
                elif cs is not None:
                    item["applied_revision"] = cs.get("applied_revision")
                    item["epoch"] = cs.get("epoch")
                    item["log_hash"] = cs.get("log_hash")
                    item["entries"] = cs.get("entries")
                    item["reports"] = cs.get("reports")
                    peers = cs.get("peers")
                    peers = peers if isinstance(peers, dict) else {}  # strange: none reported
                    stalled = [
                        p for p, d in peers.items() if isinstance(d, dict) and d.get("stalled")
                    ]
                    item["stalled_peers"] = sorted(stalled)
                    item["pruning"] = _pruning(cs.get("pruning"))
                    if cs.get("halted"):  # it answers, but applies nothing until restored
                        item["halted"] = True
                        item["error"] = cs["halted"]
            out["banks"].append(item)
        for m in up["etcd"]:
            ok, err = _healthy_etcd(http, m["url"])
            item = {"name": m["name"], "url": m["url"], "pid": m.get("pid"), "healthy": ok}
            if err:
                item["error"] = err
            if isinstance(m.get("failed"), str):  # the supervisor gave it up
                item.update(failed=m["failed"], error=m["failed"], healthy=False)
            out["etcd"].append(item)
    _mark_old_epochs(out["banks"])
    _mark_disagreements(out["banks"])
    out["healthy"] = _all_healthy(out)
    return out


def _mark_old_epochs(banks: list[dict[str, Any]]) -> None:
    """A bank node still on an older epoch of the consortium file than another (it loads a
    new epoch when restarted) is marked not healthy, saying so: until it is restarted the two
    judge entries that involve a bank that joined since differently."""
    epochs = {
        b["id"]: b["epoch"]
        for b in banks
        if isinstance(b.get("epoch"), int) and not isinstance(b["epoch"], bool)
    }
    if len(set(epochs.values())) < 2:
        return
    top = max(epochs.values())
    newer = sorted(i for i, e in epochs.items() if e == top)
    for b in banks:
        e = epochs.get(b["id"])
        if e is not None and e < top:
            b["behind_epoch"] = top
            b["healthy"] = False
            b["error"] = (
                f"runs epoch {e} of the consortium file, {', '.join(newer)} epoch {top}: restart"
                " it to load the new one (until then they judge entries that involve a bank"
                " that joined since differently)"
            )


def _mark_disagreements(banks: list[dict[str, Any]]) -> None:
    """Banks at the same applied revision with different log hashes disagree about the log
    (each chains its verdict on every event into the hash): every bank of such a revision is
    marked not healthy, naming the banks it differs from. Which one is right cannot be told
    from here; the audit of each bank's books can."""
    by_rev: dict[int, list[dict[str, Any]]] = {}
    for b in banks:
        rev, h = b.get("applied_revision"), b.get("log_hash")
        if isinstance(rev, int) and not isinstance(rev, bool) and isinstance(h, str):
            by_rev.setdefault(rev, []).append(b)
    for rev, group in by_rev.items():
        if len({b["log_hash"] for b in group}) < 2:
            continue
        for b in group:
            others = sorted(o["id"] for o in group if o["log_hash"] != b["log_hash"])
            b["disagrees_with"] = others
            b["healthy"] = False
            b["error"] = (
                f"its log hash at revision {rev} differs from {', '.join(others)}'s: the banks"
                " disagree about the log (each judged some event differently)"
            )


def _all_healthy(st: dict[str, Any]) -> bool:
    """Every bank node and etcd member healthy, in a consortium not stopped (`status`'s exit
    code: a script must tell a consortium that runs well from one that does not): whatever
    answers a stopped consortium's ports is not it, and one without banks runs nothing."""
    parts = st["banks"] + st["etcd"]
    return (
        bool(st["banks"])
        and all(x["healthy"] is True for x in parts)
        and st["state"] not in ("stopping", "stopped")
    )


def _texts(doc: dict[str, Any], *keys: str) -> bool:
    return all(isinstance(doc.get(k), str) for k in keys)


def _pruning(doc: Any) -> dict[str, Any] | None:
    """A bank's pruning report (its applied mark; how far the log forgot), None if strange."""
    if not isinstance(doc, dict):
        return None
    waiting = doc.get("waiting_for")
    if waiting is not None and not (
        isinstance(waiting, list) and all(isinstance(b, str) for b in waiting)
    ):
        return None
    return doc


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True
