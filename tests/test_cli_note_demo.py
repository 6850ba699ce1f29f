"""`hubi note show` and `hubi demo --json` on real files (binary and QR images)."""

from __future__ import annotations

import json
import os
import shutil
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
    code, out = run("note", "show", str(bundle / name), "--trust", str(bundle / "trust"), "--json")
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
    code, out = run(
        "note", "show", str(bundle / "tampered.bin"), "--trust", str(bundle / "trust"), "--json"
    )
    assert code == 1
    failed = [f["field"] for f in json.loads(out)["verification"]["fields"] if not f["ok"]]
    assert failed == ["payee", "lsum"]
    code, out = run("note", "show", str(bundle / "tampered.bin"), "--trust", str(bundle / "trust"))
    assert code == 1 and "FAILED" in out and "payee" in out


def test_note_show_prints_a_purpose_as_it_is_not_as_markup(tmp_path: Path) -> None:
    """The purpose is whatever the payer's token signed. Rich took '[/x]' for a closing tag
    and 'note show' died with a MarkupError; '[red]…[/red]' would have been styled away."""
    w = make_world()
    w.open_account(PAYER)
    w.open_account(PAYEE)
    kmc.save_trust(tmp_path / "trust", w.consortium, {b: k.public for b, k in w.kmcs.items()})
    purpose = "[/x] [red]FREE[/red]"
    (tmp_path / "n.bin").write_bytes(codec.encode(w.note(PAYER, PAYEE, 5, purpose=purpose)))
    code, out = run("note", "show", str(tmp_path / "n.bin"), "--trust", str(tmp_path / "trust"))
    assert code == 0 and purpose in out and "verified offline" in out, out


def test_note_show_reads_a_note_as_hex_text(bundle: Path, tmp_path: Path) -> None:
    """`hubi token note` prints a note as hex: saved to a file, it reads like the binary one."""
    note = (bundle / "note.bin").read_bytes()
    text = bundle / "note.hex"
    text.write_text(note.hex()[:100] + "\n" + note.hex()[100:] + "\n")
    code, out = run("note", "show", str(text), "--trust", str(bundle / "trust"), "--json")
    assert code == 0 and json.loads(out)["verification"]["ok"] is True, out
    assert json.loads(out)["size"] == len(note)
    (tmp_path / "odd.hex").write_text(note.hex()[:-1])
    code, out = run("note", "show", str(tmp_path / "odd.hex"), "--json")
    assert code == 2 and "hex text that does not make whole bytes" in json.loads(out)["message"]


def test_a_file_too_long_for_an_object_is_not_read_whole(tmp_path: Path) -> None:
    """A file that is not an image was read whole: `hubi note show /dev/zero` never ended, and
    a large file of hex digits was decoded in full before the codec refused it. Past 64 KiB (a
    hubi object is at most 4 KiB) it is refused, naming the file."""
    from hubi.objects import MAX_OBJECT_FILE

    big = tmp_path / "big.hex"
    big.write_text("0123456789abcdef" * (MAX_OBJECT_FILE // 16 + 1))
    for path in (str(big), "/dev/zero"):
        r = subprocess.run(
            [sys.executable, "-m", "hubi.cli", "note", "show", path, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2, (path, r.stdout, r.stderr)
        message = json.loads(r.stdout)["message"]
        assert f"{path}: more than 65,536 bytes and not an image" in message, message
        assert "a hubi object is at most 4,096 bytes" in message


def test_a_qr_code_of_a_web_address_is_said_to_be_text(tmp_path: Path) -> None:
    """A QR code of another app (a payment link) read as "unknown suite 104", which tells a
    merchant nothing; it now says the code holds text, and which."""
    import segno

    segno.make("https://pay.example/x?id=42", error="m").save(tmp_path / "url.png", scale=6)
    code, out = run("note", "show", str(tmp_path / "url.png"), "--json")
    message = json.loads(out)["message"]
    assert (
        code == 2
        and 'these bytes are text, not a hubi object: "https://pay.example/x?id=42"' in message
    )


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


def _broken_bundles(good: Path, root: Path) -> dict[str, tuple[Path, str]]:
    """Trust bundles each wrong in one way, with the words the error must say."""

    def copy(name: str) -> Path:
        shutil.copytree(good, root / name)
        return root / name

    no_file, not_json, no_matrix, short, unsigned = (
        copy(n) for n in ("no-file", "not-json", "no-matrix", "short-matrix", "unsigned")
    )
    (no_file / "consortium.json").unlink()
    (not_json / "consortium.json").write_text("{bad")
    (no_matrix / "matrices" / "BKB.pub").unlink()
    matrix = short / "matrices" / "BKA.pub"
    matrix.write_bytes(matrix.read_bytes()[:100])
    doc = json.loads((good / "consortium.json").read_text())
    doc["signatures"] = {}
    (unsigned / "consortium.json").write_text(json.dumps(doc))
    return {
        "missing": (root / "nowhere", "no such folder"),
        "no-file": (no_file, "no consortium.json in it"),
        "not-json": (not_json, "consortium.json is not valid JSON (Expecting"),
        "no-matrix": (no_matrix, "public matrix of bank BKB missing"),
        "short-matrix": (short, "matrices/BKA.pub: public matrix: expected"),
        "unsigned": (unsigned, "has not signed"),
    }


def test_note_show_names_a_broken_trust_bundle_not_the_note(tmp_path: Path, bundle: Path) -> None:
    """The note is fine; the bundle given to check it is not. The error says which, and where."""
    for case, (trust, words) in _broken_bundles(bundle / "trust", tmp_path).items():
        code, out = run("note", "show", str(bundle / "note.bin"), "--trust", str(trust), "--json")
        assert code == 2, (case, out)
        err = json.loads(out)
        assert err["error"] == "TrustBundleError", (case, err)
        assert f"trust bundle {trust}: " in err["message"] and words in err["message"], (case, err)
    # people read the same words: a folder named like rich markup ("[old]") is printed as it is
    odd = tmp_path / "[old]"
    odd.mkdir()
    code, out = run("note", "show", str(bundle / "note.bin"), "--trust", str(odd))
    assert code == 2 and f"trust bundle {odd}: no consortium.json" in " ".join(out.split()), out


@pytest.mark.slow
def test_demo_json_summary(tmp_path: Path) -> None:
    """`hubi demo --json` from the command line: the whole story on the embedded defaults."""
    hubi = Path(sys.executable).parent / "hubi"
    workdir = tmp_path / "demo"
    proc = subprocess.run(
        [str(hubi), "demo", "--workdir", str(workdir), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["ok"] is True
    assert summary["notes_signed"] == summary["notes_accepted"] == summary["notes_booked"] == 1
    assert summary["audit"]["ok"] is True and summary["audit"]["banks"] == {
        "BKA": True,
        "BKB": True,
    }
    assert summary["payer_balance_shown_by_token"] == 50_000 - 1250
    files = summary["files"]
    note = Path(files["note"]).read_bytes()
    obj = codec.decode(note, codec.NOTE)
    assert obj["amount"] == 1250 and obj["payee"] == "BKB-000000000007"
    assert len(note) <= 420
    # the PNG the demo left, and the token's own animated frames in any order, give the note
    assert qrscan.collect([Path(files["note_png"])]) == note
    frames = [Path(p) for p in files["frames"]]
    assert len(frames) >= 2 and all(p.exists() for p in frames)
    assert qrscan.collect(frames[::-1]) == note
    assert qrscan.collect(frames[len(frames) // 2 :] + frames[: len(frames) // 2]) == note
    code, out = run("note", "show", files["note_png"], "--trust", files["trust"], "--json")
    assert code == 0 and json.loads(out)["verification"]["ok"] is True
    # every bank's database audits clean from the command line too
    assert set(files["bank_db"]) == {"BKA", "BKB"}
    for url in files["bank_db"].values():
        code, out = run("audit", "verify", "--db", url, "--trust", files["trust"], "--json")
        assert code == 0, out
        assert json.loads(out)["ok"] is True
    # a second run reuses the folder; a foreign non-empty folder is refused untouched
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    bad = subprocess.run(
        [str(hubi), "demo", "--workdir", str(foreign), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert bad.returncode == 1 and "not made by hubi demo" in json.loads(bad.stdout)["error"]
    assert (foreign / "keep.txt").read_text() == "mine"


def test_note_show_names_its_trust_bundle_and_reads_it_bounded(
    bundle: Path, tmp_path: Path
) -> None:
    """The trust bundle is found next to FILE: the human output now says which one a verdict
    was made against (anyone can make a bundle under which a forged note verifies). A FIFO as
    its consortium.json hung `note show`, and a link to /dev/zero filled its memory; a file
    name with escape sequences reached the terminal raw in the error."""
    code, out = run("note", "show", str(bundle / "note.bin"), "--trust", str(bundle / "trust"))
    said = " ".join(out.split())  # the console wraps a long line
    assert code == 0 and f"verified offline against the trust bundle {bundle / 'trust'}" in said
    for name, make in (("fifo", os.mkfifo), ("zero", lambda p: p.symlink_to("/dev/zero"))):
        d = tmp_path / name
        (d / "trust").mkdir(parents=True)
        shutil.copytree(bundle / "trust" / "matrices", d / "trust" / "matrices")
        make(d / "trust" / "consortium.json")
        shutil.copy(bundle / "note.bin", d / "note.bin")
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "hubi.cli",
                "note",
                "show",
                str(d / "note.bin"),
                "--trust",
                str(d / "trust"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, (name, proc.stdout, proc.stderr)
        assert "consortium.json" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    odd = tmp_path / "x\x1b]0;PWNED\x07.bin"
    odd.write_bytes(b"\x01\x63")
    code, out = run("note", "show", str(odd))
    assert code == 2 and "\x1b" not in out and "\\x1b]0;PWNED\\x07" in out, repr(out)
