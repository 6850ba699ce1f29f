"""Options that take their default from the environment say so in --help and in the error for
a missing one: `hubi audit verify` alone said "Missing option '--db'" though HUBI_DB would do."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from hubi.cli import main


@pytest.mark.parametrize(
    ("command", "names"),
    [
        (["audit", "verify"], ["HUBI_DB", "HUBI_HOME"]),
        (["bank", "book"], ["HUBI_DB", "HUBI_BANK", "HUBI_HOME"]),
        (["bank", "serve"], ["HUBI_DB", "HUBI_BANK", "HUBI_HOME"]),
        (["merchant"], ["HUBI_MERCHANT_HOME"]),
    ],
)
def test_help_names_the_environment_variables(command: list[str], names: list[str]) -> None:
    r = CliRunner().invoke(main, [*command, "--help"], env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())  # help text wraps anywhere
    for name in names:
        assert f"env var: {name}" in said, (name, said)


def test_a_missing_db_names_its_environment_variable() -> None:
    r = CliRunner().invoke(main, ["audit", "verify"], env={"HUBI_DB": None, "HUBI_HOME": None})
    assert r.exit_code == 2
    assert "Missing option '--db'" in r.output and "HUBI_DB" in r.output, r.output
