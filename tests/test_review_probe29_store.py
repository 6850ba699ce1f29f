"""Review of the store's WaitWatch (hubi.bank.store): a healthy wait is never cut.

The watchdog cut any wait whose session pg_stat_activity did not show 'active'. Where
track_activities is off (ALTER DATABASE/ROLE ... SET, a common tuning), every session shows
'disabled': a booking waiting 5 s for a row lock another transaction held was cut (a 503 for
a healthy answer). Now only the idle states (or a session gone) count as a lost answer.

A look whose own connection the server refused (full: "too many clients", a role's connection
limit) was taken for a server that cannot be reached: psycopg gives a refused connection no
SQLSTATE, so every wait older than 3 s was cut at the first look, while the server was busy and
well. Now the server's own words (libpq's "FATAL:") say that it answered: nothing is cut.

A large read whose rows take the client seconds to turn into Python objects (JSON: psycopg's
loader runs in Python, so the watchdog runs meanwhile) leaves its session idle on the server
and its socket quiet: the watchdog cut it, the read itself returned (its answer was in), and
the next statement of the snapshot failed (503). Now a wait whose answer libpq has in full
(PQtransactionStatus not ACTIVE) is never cut.

The watchdog looks sooner here than in a node (0.5 s, then every 0.2 s: the module's own
settings, read at each look), so that each case takes a few seconds.

Real parts: a real PostgreSQL server, real connections, a real row lock.
"""

from __future__ import annotations

import threading
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from hubi.bank import store as store_mod
from hubi.bank.store import Store
from tests import servers

pytestmark = pytest.mark.xdist_group("test_review_probe29_store")

postgres_db = servers.postgres_db

LOOK_AFTER, LOOK_EVERY = 0.5, 0.2  # seconds (a node: 3 s, then every 1 s)
HOLD = 2.5  # seconds: past the first look and the looks that cut (~1 s)


@pytest.fixture(autouse=True)
def _quick_looks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "WAIT_LOOK_AFTER", LOOK_AFTER)
    monkeypatch.setattr(store_mod, "WAIT_LOOK_EVERY", LOOK_EVERY)


def _wait_for_row_lock(store: Store, holder: psycopg.Connection, hold: float) -> float:
    """Seconds the store's transaction waited for the row `holder` holds for `hold` s."""
    release = threading.Timer(hold, holder.rollback)
    release.start()
    t0 = time.monotonic()
    try:
        with store.transaction() as tx:
            row = tx.one("SELECT k FROM t FOR UPDATE")
    finally:
        release.join()
    took = time.monotonic() - t0
    assert row == (1,)
    assert took >= hold - 0.5, took  # it did wait for the lock
    assert store._waits is not None and store._waits.cuts == 0
    return took


def test_a_lock_wait_is_not_cut_where_track_activities_is_off(postgres_db):
    name = urlsplit(postgres_db).path.lstrip("/")
    with psycopg.connect(postgres_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        c.execute("INSERT INTO t VALUES (1)")
        c.execute(f'ALTER DATABASE "{name}" SET track_activities = off')
    with Store(postgres_db) as store, psycopg.connect(postgres_db) as other:
        other.execute("SELECT k FROM t FOR UPDATE")  # held until the rollback below
        # the server tells nothing of what its sessions do: the setting took effect
        state = other.execute(
            "SELECT state FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        ).fetchone()
        assert state == ("disabled",), state
        took = _wait_for_row_lock(store, other, HOLD)
        print(f"lock wait of {took:.2f} s answered, no cut")


def test_a_lock_wait_is_not_cut_when_the_server_refuses_the_watchdogs_look(postgres_db):
    role = "r29_" + uuid.uuid4().hex[:10]
    u = urlsplit(postgres_db)
    as_role = urlunsplit(u._replace(netloc=f"{role}:pw-{role}@{u.hostname}:{u.port}"))
    with psycopg.connect(postgres_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        c.execute("INSERT INTO t VALUES (1)")
        # one connection for the role: the store's own; the watchdog's look is refused
        c.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}' CONNECTION LIMIT 1")
        c.execute(f"GRANT ALL ON t TO {role}")
        c.execute(f"GRANT ALL ON SCHEMA public TO {role}")  # the store migrates its tables
    try:
        with Store(as_role) as store, psycopg.connect(postgres_db) as other:
            other.execute("SELECT k FROM t FOR UPDATE")
            store.reader().one("SELECT 1")  # the role's one connection is the store's
            with pytest.raises(psycopg.OperationalError, match="too many connections"):
                psycopg.connect(as_role).close()
            took = _wait_for_row_lock(store, other, HOLD)
            print(f"lock wait of {took:.2f} s answered with the server full, no cut")
    finally:
        with psycopg.connect(postgres_db, autocommit=True) as c:
            c.execute(f"DROP OWNED BY {role}")  # its grants and the store's tables
            c.execute(f"DROP ROLE {role}")


def test_a_large_read_is_not_cut_while_its_rows_are_turned_into_objects(postgres_db):
    n = 600_000
    with Store(postgres_db) as store:
        with store.snapshot() as tx:
            t0 = time.monotonic()
            rows = tx.all(
                "SELECT jsonb_build_object('n', g, 'pad', repeat('x', 20)) "
                f"FROM generate_series(1, {n}) g"
            )
            took = time.monotonic() - t0
            assert len(rows) == n and rows[-1][0]["n"] == n
            # the connection is whole: the snapshot goes on
            assert tx.scalar("SELECT count(*) FROM generate_series(1, 3)") == 3
        assert store._waits is not None and store._waits.cuts == 0
    # the read lasted past the looks that cut (else this proves nothing on a fast host)
    assert took > LOOK_AFTER + 4 * LOOK_EVERY, took
    print(f"{n} JSON rows read in {took:.2f} s, no cut")
