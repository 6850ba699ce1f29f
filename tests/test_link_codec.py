"""Frame codec: the pure checks of tests/peers/codec_checks.py on CPython and MicroPython."""

from __future__ import annotations

import pytest

from tests.mpy import run_mpy
from tests.peers import codec_checks
from tests.peers.harness import PEERS


@pytest.mark.parametrize("check", codec_checks.CHECKS, ids=lambda c: c.__name__)
def test_codec_cpython(check) -> None:
    check()


@pytest.mark.micropython
def test_codec_micropython() -> None:
    out = run_mpy(
        code="import codec_checks; codec_checks.run_all()", extra_path=[PEERS], timeout=120
    )
    assert "all %d codec checks passed" % len(codec_checks.CHECKS) in out, out
