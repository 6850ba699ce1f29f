"""`hubi bank serve --help` once said `--request-timeout` had no effect with `--http-impl
plain`; both stacks enforce it now (tests/test_node_probe25_connections.py drives them with raw
sockets). The help must say what the timeout and the connection cap do, for either stack."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from hubi.cli import main

pytestmark = pytest.mark.xdist_group("cli-serve-help")


def _about(text: str, option: str, following: str) -> str:
    start = text.index(option)
    return text[start : text.index(following, start)]


def test_serve_help_says_what_the_timeout_and_the_connection_cap_do() -> None:
    res = CliRunner().invoke(main, ["bank", "serve", "--help"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    timeout = _about(text, "--request-timeout", "--max-connections")
    assert "408" in timeout and "no effect" not in timeout, timeout
    cap = _about(text, "--max-connections", "--log-level")
    assert "503" in cap, cap
