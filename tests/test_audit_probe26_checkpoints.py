"""Probe round 26, checkpoint rows of a damaged database: the checkpoints table rebuilt without
its key held the same signed checkpoint twice (stored again at another time), or a second,
different checkpoint for one tree size, and the audit called the register clean (only one root
per size was compared, whichever row came last). Each is now a finding at the tree size."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from hubi.bank import audit
from hubi.cli import main
from tests.servers import postgres_server  # noqa: F401
from tests.test_bank_support import BACKENDS, book_pingpong, make_bank, make_url, open_sql
from tests.world import make_world

pytestmark = pytest.mark.xdist_group("audit-probe26-checkpoints")

A, B = "BKA-alice", "BKA-bob"


def _bank(kind: str, tmp_path, request) -> str:  # noqa: ANN001 - pytest fixtures
    url = make_url(kind, tmp_path, request)
    w = make_world()
    eng = make_bank(url, w, accounts=(A, B), fund=1000, checkpoint_every=4)
    book_pingpong(eng, w, A, B, 8, batch=2)
    eng.close()
    assert audit.audit(url).ok
    return url


def _unkeyed(url: str) -> None:
    """The checkpoints table rebuilt without its key (every row kept)."""
    sql = open_sql(url)
    sql.x("CREATE TABLE c2 AS SELECT * FROM checkpoints")
    sql.x("DROP TABLE checkpoints")
    sql.x("ALTER TABLE c2 RENAME TO checkpoints")
    sql.close()


def _sizes(url: str) -> list[int]:
    sql = open_sql(url)
    try:
        return [int(r[0]) for r in sql.q("SELECT tree_size FROM checkpoints ORDER BY tree_size")]
    finally:
        sql.close()


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_checkpoint_stored_twice_is_a_finding(
    kind: str, tmp_path, request: pytest.FixtureRequest
) -> None:
    url = _bank(kind, tmp_path, request)
    size = _sizes(url)[-1]
    _unkeyed(url)
    sql = open_sql(url)
    sql.x(
        "INSERT INTO checkpoints SELECT tree_size, root, obj, frontier, time + 60 FROM checkpoints"
        " WHERE tree_size = ?",
        (size,),
    )
    sql.close()
    report = audit.audit(url)
    got = [(f.book, f.record, f.kind) for f in report.findings]
    assert got == [(audit.REGISTER, size, "duplicated")], report.findings
    assert "stored more than once" in report.findings[0].detail
    res = CliRunner().invoke(main, ["audit", "verify", "--db", url])
    assert res.exit_code == 1 and "duplicated" in res.output, res.output
    assert f"(register) #{size}" in res.output, res.output


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_second_checkpoint_for_one_size_is_a_finding(
    kind: str, tmp_path, request: pytest.FixtureRequest
) -> None:
    """Another signed checkpoint (the one over fewer entries) stored under the last size: its
    root is not the register's over that size, whichever row the database returns first."""
    url = _bank(kind, tmp_path, request)
    first, last = _sizes(url)[0], _sizes(url)[-1]
    _unkeyed(url)
    sql = open_sql(url)
    sql.x(
        "INSERT INTO checkpoints SELECT ?, root, obj, frontier, time FROM checkpoints"
        " WHERE tree_size = ?",
        (last, first),
    )
    sql.close()
    found = {(f.book, f.record, f.kind): f.detail for f in audit.audit(url).findings}
    assert (
        "different checkpoints are stored for tree size"
        in found[(audit.REGISTER, last, "checkpoint-mismatch")]
    ), found
    assert all(k[1] == last for k in found), found
    # the register itself is as signed: no entry is blamed for the extra row (review, stop 26)
    assert "changed since it was signed" not in found[(audit.REGISTER, last, "checkpoint-mismatch")]
