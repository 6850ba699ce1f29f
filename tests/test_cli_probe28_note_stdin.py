"""Probe 28 of `hubi note show -`: `-` (the usual spelling of standard input) was refused as a
missing file. Now the object may be piped in, in every form a file takes (bytes, hex text, a
QR image), read no further than a file is, and empty, oversize or closed input is said in one
line naming standard input. Real `hubi` processes fed through real pipes; real PNGs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hubi import qrscan
from tests.test_merchant_support import make_shop

pytestmark = pytest.mark.xdist_group("test_cli_probe28_note_stdin")

HUBI = Path(sys.executable).parent / "hubi"


def _env(tmp: Path) -> dict[str, str]:
    # no merchant home in the environment, nor in the HOME it runs with
    return {**os.environ, "NO_COLOR": "1", "HUBI_MERCHANT_HOME": "", "HOME": str(tmp)}


def _show(
    tmp: Path, data: bytes | None, *args: str, cwd: Path | None = None
) -> tuple[int, str, str]:
    proc = subprocess.run(
        [str(HUBI), "note", "show", "-", *args],
        input=data,
        stdin=subprocess.DEVNULL if data is None else None,
        capture_output=True,
        timeout=60,
        cwd=cwd,
        env=_env(tmp),
    )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def test_a_note_on_standard_input_in_each_form_a_file_takes(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    home = ["--home", str(shop.home)]
    note = shop.payer().note(1250, purpose="tea")
    png = tmp_path / "note.png"
    qrscan.render_png(note, png)
    forms = {
        "bytes": note,
        "hex text": note.hex().encode() + b"\n",  # as `hubi token note` prints it
        "QR image": png.read_bytes(),
    }
    for form, data in forms.items():
        code, out, err = _show(tmp_path, data, *home, "--json")
        assert code == 0, (form, out, err)
        info = json.loads(out)
        assert info["kind"] == "Note" and info["fields"]["amount"] == 1250, (form, info)
        assert info["size"] == len(note) and info["verification"]["ok"] is True, (form, info)
    # an altered byte is caught as it is from a file
    bad = bytearray(note)
    bad[-1] ^= 1
    code, out, err = _show(tmp_path, bytes(bad), *home, "--json")
    assert code == 1 and json.loads(out)["verification"]["ok"] is False, out + err


def test_a_trust_bundle_in_the_working_folder_is_not_taken_for_one_beside_the_input(
    tmp_path: Path,
) -> None:
    """A file's folder is searched for a bundle to name (never to trust); a pipe has none, and
    the working folder is not it."""
    shop = make_shop(tmp_path)
    code, out, err = _show(
        tmp_path, shop.payer().note(5), "--json", cwd=shop.home
    )  # trust/ is there
    assert code == 0, out + err
    reason = json.loads(out)["verification"]["reason"]
    assert "beside the file" not in reason, reason


def test_empty_oversize_and_closed_input_are_said(tmp_path: Path) -> None:
    code, out, err = _show(tmp_path, None)  # /dev/null: the same, as one line
    assert code == 2 and out == "" and "standard input is empty" in err, err
    assert len(err.strip().splitlines()) == 1, err
    code, out, err = _show(tmp_path, b"0" * 70_000, "--json")  # hex-looking, past any object's size
    said = json.loads(out)["message"]
    assert code == 2 and "standard input: more than 65,536 bytes and not an image" in said, said
    big = b"\x89PNG\r\n\x1a\n" + bytes(64 * 1024 * 1024)  # an "image" past the 64 MiB cap
    code, out, err = _show(tmp_path, big, "--json")
    said = json.loads(out)["message"]
    assert code == 2 and "standard input: an image of more than 67,108,864 bytes" in said, said
    proc = subprocess.run(  # started with standard input closed, as `<&-` does
        f"'{HUBI}' note show - --json <&-",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(tmp_path),
    )
    said = json.loads(proc.stdout)["message"]
    assert proc.returncode == 2 and "standard input is closed" in said, said
