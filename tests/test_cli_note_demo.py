"""`hubi note show` and `hubi demo --json` on real files (binary and QR images)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi import kmc, qrscan
from hubi.cli import main
from hubi_core import codec, qr
from tests.world import make_world

PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a trust bundle, a note (binary + PNG) and a tampered note."""
    d = tmp_path_factory.mktemp("notes")
    w = make_world()
    w.open_account(PAYER)
    w.open_account(PAYEE)
    kmc.save_trust(d / "trust", w.consortium, {b: k.public for b, k in w.kmcs.items()})
    note = codec.encode(w.note(PAYER, PAYEE, 1250))
    (d / "note.bin").write_bytes(note)
    qrscan.render_png(note, d / "note.png")
    bad = codec.decode(note)
    bad.values["payee"] = "BKA-000000000042"
    (d / "tampered.bin").write_bytes(codec.encode(bad))
    (d / "garbage.bin").write_bytes(note[:-20])
    return d


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize("name", ["note.bin", "note.png"])
def test_note_show_json_binary_and_png(bundle: Path, name: str) -> None:
    code, out = run("note", "show", str(bundle / name), "--json")
    assert code == 0, out
    info = json.loads(out)
    note = (bundle / "note.bin").read_bytes()
    assert info["kind"] == "Note"
    assert info["size"] == len(note)
    assert info["fields"]["payee"] == PAYEE and info["fields"]["amount"] == 1250
    assert info["qr_version"] == {
        "L": qr.min_version(len(note), "L"),
        "M": qr.min_version(len(note), "M"),
    }
    assert info["qr_version"]["L"] <= info["qr_version"]["M"]
    ver = info["verification"]
    assert ver["ok"] is True
    assert [f["field"] for f in ver["fields"]] == ["template", "amount", "purpose", "payee", "lsum"]


def test_note_show_names_the_failing_field(bundle: Path) -> None:
    code, out = run("note", "show", str(bundle / "tampered.bin"), "--json")
    assert code == 1
    failed = [f["field"] for f in json.loads(out)["verification"]["fields"] if not f["ok"]]
    assert failed == ["payee", "lsum"]
    code, out = run("note", "show", str(bundle / "tampered.bin"))
    assert code == 1 and "FAILED" in out and "payee" in out


def test_note_show_rejects_garbage_with_clear_error(bundle: Path) -> None:
    code, out = run("note", "show", str(bundle / "garbage.bin"), "--json")
    assert code == 2
    err = json.loads(out)
    assert err["error"] == "Truncated" and "signature" in err["message"]


def test_note_show_without_trust_says_so(tmp_path: Path, bundle: Path) -> None:
    lone = tmp_path / "n.bin"
    lone.write_bytes((bundle / "note.bin").read_bytes())
    code, out = run("note", "show", str(lone), "--json")
    assert code == 0
    assert json.loads(out)["verification"]["ok"] is None


def test_demo_json_summary(tmp_path: Path) -> None:
    hubi = Path(sys.executable).parent / "hubi"
    proc = subprocess.run(
        [str(hubi), "demo", "--workdir", str(tmp_path / "demo"), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["ok"] is True
    files = summary["files"]
    note = Path(files["note"]).read_bytes()
    assert codec.decode(note, codec.NOTE)
    # the PNG the demo left decodes to exactly the note's bytes
    assert qrscan.collect([Path(files["note_png"])]) == note
    code, out = run("note", "show", files["note_png"], "--json")
    assert code == 0 and json.loads(out)["verification"]["ok"] is True
