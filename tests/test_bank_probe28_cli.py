"""`hubi bank` and `hubi audit restore` run as an operator runs them, with inputs and timings
earlier probes did not try.

- `hubi bank fund` of an account that is not open (a typo) signed a treasury note and had it
  rejected: a treasury serial used up for nothing, exit 1 with the engine's words. It is now
  refused before anything is signed, naming the account; the treasury's next serial is the same.
- Two `hubi audit restore` runs at once each listed every record that came back under
  `restored`, the other run's too; on PostgreSQL the second insert of a row failed on the key
  and that run ended with a StoreConflict. Each now lists only what it inserted itself.
- `hubi bank open-account` of another bank's account, or with a currency that is not one
  (`--currency cny`), made its --out folder and then failed with the engine's or the codec's
  words (exit 2 as a failure to run). Both are refused first now, as `fund` refuses them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from hubi.bank.engine import BankEngine
from hubi.cli import main
from tests import bank_nodes, servers
from tests.bank_nodes import REPO, prepare_bank

pytestmark = pytest.mark.xdist_group("test_bank_probe28_cli")

bank_world = bank_nodes.bank_world
postgres_server = servers.postgres_server

HUBI = [sys.executable, "-c", "from hubi.cli import main; main()"]


def _hubi(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HUBI, *args], capture_output=True, text=True, timeout=120, cwd=REPO, env=env
    )


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`hubi ARGS` in this process (a subprocess costs a second and a half of imports)."""
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return subprocess.CompletedProcess(list(args), res.exit_code, res.stdout, res.stderr)


def _counter(db: Path, name: str) -> int | None:
    import sqlite3

    con = sqlite3.connect(db)
    try:
        row = con.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
    finally:
        con.close()
    return None if row is None else int(row[0])


def test_fund_of_an_account_not_open_uses_no_treasury_serial(bank_world) -> None:
    home = bank_world.home
    db = home / "banks" / "BKA" / "bank.db"
    prepare_bank(home, "BKA", f"sqlite:///{db}", accounts=1, funds=100)
    before = _counter(db, "treasury-note")
    assert before == 1  # the one fund of prepare_bank
    common = ["--home", str(home), "--bank", "BKA"]
    for account, words in (
        ("BKA-000009", "account BKA-000009 is not open at BKA"),
        ("BKA-treasury", "BKA-treasury is bank BKA's treasury: the treasury cannot fund"),
    ):
        r = _cli("bank", "fund", account, "5", *common)
        assert r.returncode == 1, r.stdout + r.stderr
        assert words in " ".join(r.stderr.split()), r.stderr
        assert "Traceback" not in r.stderr and "rejected" not in r.stdout
        r = _cli("bank", "fund", account, "5", *common, "--json")
        assert r.returncode == 1 and words in json.loads(r.stdout)["message"], r.stdout
    assert _counter(db, "treasury-note") == before  # no serial spent on a refused fund
    r = _cli("bank", "fund", "BKA-000001", "7", *common, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "booked", r.stdout
    assert _counter(db, "treasury-note") == before + 1
    with BankEngine.open(f"sqlite:///{db}", home=home, bank="BKA") as eng:
        assert eng.balance("BKA-000001") == 107


def _waiting_on_lock(server, dbname: str) -> int:
    with server.connect(autocommit=True) as con:
        row = con.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            (dbname,),
        ).fetchone()
    return int(row[0])


def test_two_restores_at_once_each_list_only_their_own(bank_world, postgres_server) -> None:
    home = bank_world.home
    name = f"p28r_{uuid.uuid4().hex[:8]}"
    url = postgres_server.create_database(name)
    backup = f"{name}_bk"
    try:
        accts = list(prepare_bank(home, "BKA", url, accounts=4, funds=10**6).values())
        with BankEngine.open(url, home=home, bank="BKA") as eng:
            for i in range(40):
                note = accts[i % 4].note(accts[(i + 1) % 4].id, 1 + i, serial=1 + i // 4)
                assert eng.book(note).ok
        with postgres_server.connect(autocommit=True) as con:  # the hot backup: a copy
            con.execute(f'CREATE DATABASE "{backup}" TEMPLATE "{name}"')
        lost = sorted([(a.id, n) for a in accts[:3] for n in (3, 4, 7)] + [(accts[3].id, 2)])
        with psycopg.connect(url, autocommit=True) as con:
            for book, n in lost:
                con.execute("DELETE FROM records WHERE book = %s AND n = %s", (book, n))
        args = ["audit", "restore", "--db", url, "--home", str(home), "--json"]
        args += ["--backup", postgres_server.url_for(backup)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # both runs audit while the table is locked against writes, and so both find every
        # record lost; their inserts wait until both are there, then go in together
        gate = psycopg.connect(url)
        gate.execute("LOCK TABLE records IN EXCLUSIVE MODE")
        runs = [
            subprocess.Popen(
                [*HUBI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
            for _ in range(2)
        ]
        try:
            deadline = time.monotonic() + 90
            while _waiting_on_lock(postgres_server, name) < 2:
                assert time.monotonic() < deadline, "the restores never reached their inserts"
                assert all(r.poll() is None for r in runs), [r.communicate() for r in runs]
                time.sleep(0.05)
        finally:
            gate.commit()
            gate.close()
        outs = [r.communicate(timeout=120) for r in runs]
        docs = []
        for r, (out, err) in zip(runs, outs):
            assert r.returncode == 0, out[-3000:] + err[-3000:]
            assert "Traceback" not in err
            docs.append(json.loads(out))
        lists = [{(x["book"], x["record"]) for x in d["restored"]} for d in docs]
        assert all(d["ok"] and sorted((w["book"], w["record"]) for w in d["wanted"]) == lost
                   for d in docs)  # fmt: skip
        assert not lists[0] & lists[1], lists  # no record claimed by both
        assert sorted(lists[0] | lists[1]) == lost, lists
        v = _hubi("audit", "verify", "--db", url, "--home", str(home), "--json")
        assert v.returncode == 0 and json.loads(v.stdout)["ok"], v.stdout[-2000:]
    finally:
        postgres_server.drop_database(backup)
        postgres_server.drop_database(name)


def test_open_account_refuses_another_banks_account_and_a_bad_currency(
    bank_world, tmp_path: Path
) -> None:
    home = bank_world.home
    prepare_bank(home, "BKA", f"sqlite:///{home / 'banks' / 'BKA' / 'bank.db'}", accounts=0)
    common = ["--home", str(home), "--bank", "BKA"]
    cases = [
        (["BKB-x"], "BKB-x is an account of bank BKB: bank BKA opens its own accounts only"),
        (["BKA-x", "--currency", "cny"], "'cny' is not a currency code: 3 letters A-Z"),
        (["BKA-x", "--currency", "EURO"], "'EURO' is not a currency code"),
        (["bka-x"], "Invalid value for ACCOUNT: account id bank prefix 'bka'"),
    ]
    for i, (args, words) in enumerate(cases):
        out = tmp_path / f"keys{i}"
        r = _cli("bank", "open-account", *args, *common, "--out", str(out))
        assert r.returncode == 2, r.stdout + r.stderr  # a usage error
        assert words in " ".join(r.stderr.split()), r.stderr
        assert not out.exists()  # nothing made for a refused account
    r = _cli("bank", "open-account", "BKA-x", "--currency", "EUR", *common, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["account"] == "BKA-x", r.stderr
