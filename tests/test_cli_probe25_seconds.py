"""Probe round 25, options in seconds: any finite number passed (`--timeout 1e12`), then the
first wait on it (a socket's timeout, a deadline thread, a sleep between retries) was an
OverflowError traceback, "timestamp out of range for platform time_t", in the middle of an
upload. Now more than a year is a usage error naming the option, and nothing is tried."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.cli import main
from tests.test_merchant_support import make_shop
from tests.test_merchant_upload import PAYER, pay, prepare

YEAR = 365 * 86400


@pytest.mark.parametrize(
    "args",
    [
        ["--timeout", "1e12"],
        ["--backoff", "1e12", "--max-backoff", "1e12", "--retries", "1"],
        ["--timeout", str(YEAR + 1)],
    ],
)
def test_upload_refuses_a_wait_past_a_year_and_keeps_the_note(tmp_path: Path, args) -> None:
    shop = make_shop(tmp_path)
    payers = prepare(shop)
    with shop.merchant() as m:
        pay(m, payers[PAYER], 500)
    res = CliRunner().invoke(
        main,
        ["merchant", "--home", str(shop.home), "upload", "--bank", "http://127.0.0.1:1", *args],
    )
    assert res.exit_code == 2, (res.output, res.exception)
    assert "Invalid value for '--" in res.output, res.output
    assert f"is more than {YEAR} seconds (a year)" in res.output, res.output
    with shop.merchant() as m:  # the note is still waiting in the outbox
        assert len(m.outbox.pending()) == 1


def test_a_year_itself_still_passes(tmp_path: Path) -> None:
    """The cap refuses only what no clock can wait for: a year is taken (here the upload then
    finds the bank unreachable, nothing else)."""
    shop = make_shop(tmp_path)
    payers = prepare(shop)
    with shop.merchant() as m:
        pay(m, payers[PAYER], 500)
    res = CliRunner().invoke(
        main,
        ["merchant", "--home", str(shop.home), "upload", "--bank", "http://127.0.0.1:1"]
        + ["--timeout", str(YEAR), "--retries", "0"],
    )
    assert res.exit_code == 1 and "1 still pending" in res.output, (res.output, res.exception)


def test_serve_refuses_a_grace_past_a_year(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main, ["bank", "serve", "--home", str(tmp_path), "--bank", "BKA", "--grace", "1e12"]
    )
    assert res.exit_code == 2, res.output
    assert "Invalid value for '--grace'" in res.output and "(a year)" in res.output, res.output
