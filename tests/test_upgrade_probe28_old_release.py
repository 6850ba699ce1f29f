"""Upgrading from an older release: a bank home, its database (schema version 1) and a merchant
outbox that the hubi of commit cfbc434 (the first release with `hubi bank`) made and left, as
tests/data/upgrade/release-cfbc434.tar.gz keeps them (made by make_release_fixture.py there).

The current hubi opens them as an operator would: a node and an upload, `audit verify`, the
outbox; a kill -9 in the middle of the migration; a migration that cannot be written."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.cli import main
from tests.bank_nodes import nodes  # noqa: F401

pytestmark = pytest.mark.xdist_group("test_upgrade_probe28_old_release")

FIXTURE = Path(__file__).parent / "data" / "upgrade" / "release-cfbc434.tar.gz"
MERCHANT = "BKB-000000000007"
OLD_RECORDS = 24  # what the old release booked: 4 books


def run(*args: str, code: int = 0) -> dict:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    return json.loads(res.output)


def unpack(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(bank home, merchant home, bank database) as the old release left them."""
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    home = tmp_path / "bankhome"
    return home, tmp_path / "merchant", home / "banks" / "BKB" / "bank.db"


def versions(db: Path) -> list[int]:
    with sqlite3.connect(db) as con:
        return [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY 1")]


def tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as con:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def audit(home: Path, db: Path, records: int) -> None:
    report = run("audit", "verify", "--db", str(db), "--home", str(home), "--json")
    assert report["ok"] and report["findings"] == [], report
    assert report["records"] == records and report["checks"]["notes"] == "verified", report


def test_an_old_release_is_served_uploaded_to_and_audited_clean(tmp_path: Path, nodes) -> None:  # noqa: F811
    home, shop, db = unpack(tmp_path)
    assert versions(db) == [1] and "merkle_nodes" not in tables(db)
    audit(home, db, OLD_RECORDS)  # the audit reads it as it is (it migrates nothing)
    assert versions(db) == [1]
    out = run("merchant", "--home", str(shop), "outbox", "--json")
    assert out["notes"] == {"pending": 2, "booked": 3, "bounced": 0, "refused": 1}, out
    before = {it["note_id"]: it["state"] for it in out["items"]}

    node = nodes(home, "BKB").start()  # the current node migrates it in place as it starts
    up = run("merchant", "--home", str(shop), "upload", "--bank", node.url, "--json")
    assert up["counts"] == {"booked": 2, "bounced": 0, "refused": 0, "pending": 0}, up
    assert node.stop() == 0
    assert "Traceback" not in node.log_text()

    assert versions(db) == [1, 2] and "merkle_nodes" in tables(db)
    audit(home, db, OLD_RECORDS + 4)  # 2 notes: a debit and a credit each
    out = run("merchant", "--home", str(shop), "outbox", "--json")
    assert out["notes"] == {"pending": 0, "booked": 5, "bounced": 0, "refused": 1}, out
    after = {it["note_id"]: it["state"] for it in out["items"]}
    assert after.keys() == before.keys()  # nothing lost, nothing added
    assert {k: v for k, v in after.items() if before[k] != "pending"} == {
        k: v for k, v in before.items() if v != "pending"
    }
    # the merchant's own book and the bank's agree: 3 old notes and the 2 uploaded now
    assert out["book"] == {"records": 5, "balance": 100 + 101 + 102 + 200 + 201}
    show = run("bank", "show", MERCHANT, "--home", str(home), "--bank", "BKB", "--json")
    assert (show["balance"], show["records"]) == (704, 5)


# Runs the real migration in a child and kills it (SIGKILL, as kill -9) right after one of the
# migration's own statements, inside its transaction, before the COMMIT.
_KILL_AFTER = """
import os, signal, sys
from hubi.bank import store
execute = store.Tx.execute
def killing(self, sql, params=()):
    out = execute(self, sql, params)
    if sql.lstrip().startswith(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
    return out
store.Tx.execute = killing
store.open_store(sys.argv[1], create=False)
print("migrated without being killed")
"""


@pytest.mark.parametrize("statement", ["CREATE TABLE merkle_nodes", "INSERT INTO schema_version"])
def test_kill_9_in_the_migration_leaves_the_old_version_and_the_next_run_completes(
    tmp_path: Path, statement: str
) -> None:
    home, _, db = unpack(tmp_path)
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_KILL_AFTER), str(db), statement],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert child.returncode == -9, (child.returncode, child.stdout, child.stderr)
    # not half migrated: still version 1 whole (the WAL holds no commit of the migration)
    assert versions(db) == [1] and "merkle_nodes" not in tables(db)
    audit(home, db, OLD_RECORDS)
    init = run("bank", "init", "--home", str(home), "--bank", "BKB", "--json")
    assert init["schema_version"] == 2 and not init["treasury_created"], init
    assert versions(db) == [1, 2] and "merkle_nodes" in tables(db)
    audit(home, db, OLD_RECORDS)


def test_a_migration_that_cannot_be_written_names_the_versions_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """The database's file capped at its size (max_bytes, as a full disk): the new table has no
    room. The refusal said only "migrating URL failed: OperationalError: database or disk is
    full"; it names the versions from and to, that nothing changed, and what to do."""
    home, _, db = unpack(tmp_path)
    capped = f"sqlite:///{db}?max_bytes={db.stat().st_size}"
    on = ["--home", str(home), "--bank", "BKB"]
    for args in (["bank", "init"], ["bank", "show", MERCHANT]):
        said = run(*args, *on, "--db", capped, "--json", code=2)["message"]
        assert "from schema version 1 to 2 failed" in said, said
        assert "database or disk is full" in said, said
        assert "nothing was changed (it is still at version 1)" in said, said
        assert "free space on its disk (or raise the URL's max_bytes)" in said, said
        assert "run `hubi bank init` again" in said, said
    assert versions(db) == [1] and "merkle_nodes" not in tables(db)
    audit(home, db, OLD_RECORDS)
    assert run("bank", "init", *on, "--json")["schema_version"] == 2  # with room: done
    assert versions(db) == [1, 2]
    audit(home, db, OLD_RECORDS)
