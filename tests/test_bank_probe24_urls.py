"""Odd PostgreSQL URLs given to `hubi bank init`.

A URL with no database name (``postgresql://user:pw@host:port``, the name forgotten) made libpq
take the user's own database, usually the server's maintenance database ``postgres``, and
`hubi bank init` created the bank's books there without a word. It now refuses, naming what is
missing, before anything is made; the password is never printed. (Wrong password, missing
database, unreachable host, socket paths and bad query parameters already gave one clear line:
kept here so they stay so.)
"""

from __future__ import annotations

from urllib.parse import urlsplit

from click.testing import CliRunner

from hubi.cli import main
from tests import bank_nodes, servers

bank_world = bank_nodes.bank_world
postgres_server = servers.postgres_server


def _init(home, url: str) -> tuple[int, str]:  # noqa: ANN001
    res = CliRunner().invoke(
        main,
        ["bank", "init", "--home", str(home), "--bank", "BKA", "--db", url],
        catch_exceptions=False,
        env={"PGDATABASE": None},  # for the command only: no default database from outside
    )
    return res.exit_code, " ".join(res.output.split())


def _hubi_tables(server, dbname: str) -> list[str]:  # noqa: ANN001
    with server.connect(dbname) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE tablename IN ('meta', 'records', 'register')"
        ).fetchall()
    return [r[0] for r in rows]


def test_bank_init_refuses_a_postgresql_url_without_a_database(bank_world, postgres_server):
    good = postgres_server.create_database("p24_urls_books", exist_ok=True)
    u = urlsplit(good)
    base = f"postgresql://{u.username}:{u.password}@{u.hostname}:{u.port}"
    try:
        for url in (base, base + "/", base + "?sslmode=disable"):
            code, out = _init(bank_world.home, url)
            assert code == 2 and "names no database" in out, out  # a usage error
            assert "postgresql://USER@HOST/DBNAME" in out and u.password not in out, out
            assert "Traceback" not in out
        assert _hubi_tables(postgres_server, "postgres") == []  # nothing made anywhere
        cases = {
            f"{base}/p24_no_such_db": 'database "p24_no_such_db" does not exist',
            f"postgresql://{u.username}:wrong-pw@{u.hostname}:{u.port}/p24_urls_books": "password",
            f"postgresql://{u.username}:{u.password}@127.0.0.1:1/p24_urls_books": "refused",
            f"postgresql:///p24_urls_books?host=/nonexistent&password={u.password}": "socket",
            f"{good}?sslmode=bogus": "sslmode",
        }
        for url, said in cases.items():
            code, out = _init(bank_world.home, url)
            assert code != 0 and "cannot connect to PostgreSQL" in out and said in out, out
            assert u.password not in out and "wrong-pw" not in out and "Traceback" not in out
        # the database named: the books are made there
        code, out = _init(bank_world.home, good)
        assert code == 0, out
        assert sorted(_hubi_tables(postgres_server, "p24_urls_books")) == [
            "meta",
            "records",
            "register",
        ]
    finally:
        postgres_server.drop_database("p24_urls_books")
