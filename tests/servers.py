"""Server fixtures for the test suites: real etcd and PostgreSQL, started by the tests themselves.

Import the fixtures you use into your test module (pytest finds fixtures by name there):

    from tests.servers import etcd_cluster, postgres_url  # noqa: F401

Fixtures
- ``etcd_cluster`` (session): a real 3-member :class:`EtcdCluster`, shared by the worker.
- ``etcd_single`` (session): a real 1-member cluster, shared by the worker.
- ``etcd`` (function): an :class:`Etcd` client over ``etcd_cluster``'s members.
- ``etcd_prefix`` (function): a key prefix unique to the test (``b"t/<test>/<hex>/"``): the
  cluster is shared, so put your keys under it.
- ``postgres_server`` (session): a real :class:`PostgresServer`, shared by the worker.
- ``postgres_url`` (session): URL of database ``hubi`` on that server (shared by the worker).
- ``postgres_db`` (function): URL of a fresh empty database for one test, dropped afterwards.

Each pytest-xdist worker gets one server of each kind, started on first use. The servers are
per-process singletons, not per fixture definition: importing a session fixture into several
modules makes pytest build one fixture per module, and they all return the same server. They
stop when the worker exits (atexit), and die with it even if it is killed (parent-death signal).
Never kill or stop members of the shared cluster; fault tests make their own ``EtcdCluster``.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hubi.infra.etcd_client import Etcd
from hubi.infra.etcd_server import EtcdCluster
from hubi.infra.postgres_server import PostgresServer

__all__ = [
    "etcd",
    "etcd_cluster",
    "etcd_prefix",
    "etcd_single",
    "FAST_ELECTION_MS",
    "FAST_HEARTBEAT_MS",
    "fast_etcd_cluster",
    "member_health",
    "postgres_db",
    "postgres_server",
    "postgres_url",
    "shared_etcd_cluster",
    "shared_postgres",
]

_LOCK = threading.Lock()
_SHARED: dict[str, EtcdCluster | PostgresServer] = {}
KEEP = os.environ.get("HUBI_KEEP_SERVER_DIRS") == "1"  # keep data dirs and logs after the run
# Raft timing for test clusters: loopback round trips are microseconds, so a 50 ms heartbeat and
# a 500 ms election timeout (still 10x) halve start-up and failover times of etcd's defaults.
FAST_HEARTBEAT_MS = 50
FAST_ELECTION_MS = 500


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def _tempdir(kind: str) -> Path:
    # Directly under the system temp dir (world-traversable), not pytest's private tree.
    path = Path(tempfile.mkdtemp(prefix="hubi-%s-%s-" % (kind, _worker())))

    def cleanup() -> None:
        server = _SHARED.pop(kind, None)
        if isinstance(server, EtcdCluster):
            server.stop()
        elif isinstance(server, PostgresServer):
            server.close()
        if not KEEP:
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(cleanup)
    return path


def fast_etcd_cluster(datadir: Path, members: int = 3, **kw: Any) -> EtcdCluster:
    """A test's own etcd cluster: no fsync, fast Raft timing; ``kw`` goes to EtcdCluster."""
    kw.setdefault("start_timeout", 90.0)  # 30 s by default: short for 3 members on a loaded CI
    return EtcdCluster(
        datadir,
        members=members,
        durable=False,
        heartbeat_ms=FAST_HEARTBEAT_MS,
        election_ms=FAST_ELECTION_MS,
        **kw,
    )


def member_health(client: Etcd, want: bool, timeout: float = 30.0) -> dict[str, bool]:
    """Each member's ``/health``, asked again until all say ``want`` or ``timeout`` passes. An
    alarm (raised or disarmed) reaches each member when it applies the Raft entry, not at once."""
    deadline = time.monotonic() + timeout
    while True:
        health = client.health()
        if all(v == want for v in health.values()) or time.monotonic() > deadline:
            return health
        time.sleep(0.1)


def shared_etcd_cluster(members: int = 3) -> EtcdCluster:
    """This process's shared etcd cluster of ``members`` (3 or 1) members, started on first use.

    A member found dead (it should not be) is restarted before the cluster is handed out.
    """
    kind = "etcd%d" % members
    with _LOCK:
        cluster = _SHARED.get(kind)
        if cluster is None:
            cluster = fast_etcd_cluster(_tempdir(kind), members)
            _SHARED[kind] = cluster
        assert isinstance(cluster, EtcdCluster)
        for i, m in enumerate(cluster.members):
            if not m.running:
                cluster.restart(i)
        return cluster


def shared_postgres() -> PostgresServer:
    """This process's shared PostgreSQL server, started on first use."""
    with _LOCK:
        server = _SHARED.get("pg")
        if server is None:
            server = PostgresServer(_tempdir("pg"), durable=False)
            _SHARED["pg"] = server
        assert isinstance(server, PostgresServer)
        if not server.running:
            server.start()
        return server


@pytest.fixture(scope="session")
def etcd_cluster() -> EtcdCluster:
    """A real 3-member etcd cluster (shared by this worker; do not kill its members)."""
    return shared_etcd_cluster(3)


@pytest.fixture(scope="session")
def etcd_single() -> EtcdCluster:
    """A real single-member etcd cluster (shared by this worker)."""
    return shared_etcd_cluster(1)


@pytest.fixture
def etcd() -> Iterator[Etcd]:
    """A client over all members of the shared 3-member cluster."""
    client = shared_etcd_cluster(3).client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def etcd_prefix(request: pytest.FixtureRequest) -> bytes:
    """A key prefix no other test uses."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:60]
    return ("t/%s/%s/" % (name, uuid.uuid4().hex[:8])).encode()


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """A real PostgreSQL server (shared by this worker)."""
    return shared_postgres()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """psycopg URL of database ``hubi`` on the shared server (shared by this worker)."""
    return shared_postgres().create_database("hubi", exist_ok=True)


@pytest.fixture
def postgres_db(request: pytest.FixtureRequest) -> Iterator[str]:
    """psycopg URL of a fresh, empty database for this test only."""
    server = shared_postgres()
    base = re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower())[:40]
    name = "t_%s_%s" % (base, uuid.uuid4().hex[:8])
    url = server.create_database(name)
    try:
        yield url
    finally:
        server.drop_database(name)
