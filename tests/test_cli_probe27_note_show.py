"""Probe 27 of `hubi note show`: a $HUBI_MERCHANT_HOME naming a folder that holds no merchant
was passed over as if unset; the note came out "not verified ... set up a merchant home
(--home)", exit 0, as though the person had named no home at all, where `--home` with that
folder (and every `hubi merchant` command) says what is wrong. A real `hubi` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hubi_core import codec
from tests.world import make_world

pytestmark = pytest.mark.xdist_group("test_cli_probe27_note_show")

HUBI = Path(sys.executable).parent / "hubi"


def _show(path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HUBI), "note", "show", str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_COLOR": "1", **env},
    )


def test_a_merchant_home_named_in_the_environment_but_not_set_up_is_said(
    tmp_path: Path,
) -> None:
    w = make_world()
    w.open_account("BKA-000000000042")
    w.open_account("BKB-000000000007")
    note = tmp_path / "note.bin"
    note.write_bytes(codec.encode(w.note("BKA-000000000042", "BKB-000000000007", 1250)))
    wrong = tmp_path / "not-a-merchant"
    wrong.mkdir()
    env = {"HUBI_MERCHANT_HOME": str(wrong), "HOME": str(tmp_path)}

    proc = _show(note, env, "--json")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    told = json.loads(proc.stdout)
    assert told["error"] == "MerchantError"
    assert str(wrong) in told["message"] and "HUBI_MERCHANT_HOME" in told["message"], told

    text = _show(note, env)
    assert text.returncode == 2, text.stdout + text.stderr
    assert "HUBI_MERCHANT_HOME" in text.stderr and "not verified" not in text.stdout

    # unset, with no home set up anywhere: still "not verified", exit 0, as the README says
    plain = _show(note, {"HUBI_MERCHANT_HOME": "", "HOME": str(tmp_path)}, "--json")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert json.loads(plain.stdout)["verification"]["ok"] is None


def test_hex_text_with_a_byte_order_mark_is_read_as_hex(tmp_path: Path) -> None:
    """Some editors save text with a UTF-8 byte order mark: the hex of a note was then taken
    for binary, "unknown suite 239", with no hint that it was text."""
    w = make_world()
    w.open_account("BKA-000000000042")
    raw = codec.encode(w.note("BKA-000000000042", "BKB-000000000007", 1250))
    path = tmp_path / "note.txt"
    path.write_bytes(b"\xef\xbb\xbf" + raw.hex().encode() + b"\r\n")
    proc = _show(path, {"HOME": str(tmp_path), "HUBI_MERCHANT_HOME": ""}, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["kind"] == "Note"


def test_a_broken_png_is_named_without_opencvs_own_warnings(tmp_path: Path) -> None:
    """OpenCV printed "[ WARN:0@0.02] global grfmt_png.cpp ... PNG input buffer is incomplete"
    on stderr before hubi's line naming the file."""
    path = tmp_path / "cut.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + bytes(8) + b"\x08\x02\x00\x00\x00")
    proc = _show(path, {"HOME": str(tmp_path), "HUBI_MERCHANT_HOME": ""})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert str(path) in proc.stderr and "WARN" not in proc.stderr, proc.stderr
