"""`hubi bank serve --help` said `--request-timeout` drops a request that does not arrive in
time (408), with any `--http-impl`; only the httptools stack enforces it, and `--http-impl
plain` (asyncio + h11, there to compare with) holds a silent connection as long as the client
likes. The help now says so."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from hubi.cli import main

pytestmark = pytest.mark.xdist_group("cli-serve-help")


def test_request_timeout_help_says_plain_does_not_enforce_it() -> None:
    res = CliRunner().invoke(main, ["bank", "serve", "--help"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    start = text.index("--request-timeout")
    about = text[start : text.index("--log-level", start)]
    assert "Enforced with --http-impl auto (httptools) only: with plain it has no effect" in about
