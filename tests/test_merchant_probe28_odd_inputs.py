"""Probe 28: `hubi merchant` commands end to end with odd inputs.

Found and fixed: a template file that was empty, an image or another object was refused as
"object truncated: suite needs 1 bytes at offset 0" or "expected a Template, got a Note",
naming no file; a home on a read-only folder stopped every command (even `outbox`) with
SQLite's "unable to open database file", not saying why; file names holding ESC sequences were
echoed raw to the terminal by `scan` and `request`; `scan --image` of a folder without images
said "no complete note in 0 image(s)". Real `hubi` processes, a real read-only bind mount.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hubi import kmc, qrscan
from hubi_core import codec
from tests.small_disk import read_only
from tests.test_merchant_support import T0, hubi, hubi_json, make_shop

pytestmark = pytest.mark.xdist_group("test_merchant_probe28_odd_inputs")

ESC = "\x1b]0;PWNED\x07"  # retitles a terminal window if printed raw


def test_a_wrong_template_file_is_named(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    priv, tpl = kmc.issue_account(
        kmc.load_kmc(shop.bank_home, "BKB"),
        kmc.load_bank_identity(shop.bank_home, "BKB"),
        "BKB-000000000021",
        21,
        T0,
        "CNY",
    )
    key = tmp_path / "k.secret"
    key.write_bytes(priv.to_bytes(32, "big"))
    image = tmp_path / "template.png"  # the template's QR code, not its bytes
    qrscan.render_png(codec.encode(tpl), image)
    files = {
        "empty file (an account template)": b"",
        "an image, not an account template": image.read_bytes(),
        "not an account template: expected a Template, got a Note": shop.payer().note(5),
    }
    for n, (said, data) in enumerate(files.items()):
        path = tmp_path / f"template {n} é.bin"
        path.write_bytes(data)
        home = tmp_path / f"home{n}"
        code, out = hubi_json("merchant", "--home", str(home), "init", "--key", str(key),
                              "--template", str(path), "--trust", str(shop.home / "trust"))  # fmt: skip
        assert code == 2 and out["message"].startswith(f"{path}: {said}"), out
        assert not home.exists()


def test_a_home_on_a_read_only_folder_says_so(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    with shop.merchant() as m:
        m.request(100, "tea", expires=600)
    with read_only(shop.home) as home:
        code, out = hubi_json("merchant", "--home", str(home), "request", "--amount", "1")
        assert code == 2 and out["error"] == "MerchantError", out
        assert f"{home} is read-only: a merchant home must be writable" in out["message"], out
        # listing only reads: it works, and says the home is read-only
        code, out = hubi_json("merchant", "--home", str(home), "outbox")
        assert code == 0 and out["read_only"] and out["open_request"]["amount"] == 100, out
        proc = hubi("merchant", "--home", str(home), "outbox")
        assert proc.returncode == 0 and "read-only" in proc.stdout, proc.stdout
        assert "Traceback" not in proc.stderr
    code, out = hubi_json("merchant", "--home", str(home), "outbox")  # writable again: listed
    assert code == 0 and out["open_request"]["amount"] == 100, out


def test_names_with_escapes_spaces_and_accents_are_shown_not_obeyed(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    # a home with spaces and accents works end to end: init, request, scan, outbox
    home = tmp_path / "the shop é ü"
    code, out = hubi_json("merchant", "--home", str(home), "init",
                          "--bank-home", str(shop.bank_home), "--account", "BKB-000000000009")  # fmt: skip
    assert code == 0, out
    png = tmp_path / f"request {ESC}.png"
    proc = hubi("merchant", "--home", str(home), "request", "--amount", "1.25", "--png", str(png),
                "--no-qr")  # fmt: skip
    assert proc.returncode == 0 and "\x1b" not in proc.stdout + proc.stderr, proc
    assert "request \\x1b]0;PWNED\\x07.png" in proc.stdout.replace("\n", ""), proc.stdout
    assert qrscan.decode_image(png)  # written under its odd name all the same
    bad = tmp_path / f"not a note {ESC}.png"
    bad.write_text("hello")
    proc = hubi("merchant", "--home", str(home), "scan", "--image", str(bad), "--no-qr")
    assert proc.returncode == 2 and "\x1b" not in proc.stdout + proc.stderr, proc
    assert "skipped" in proc.stderr and "\\x1b]0;PWNED\\x07" in proc.stderr, proc.stderr
    # a folder with no image in it is said as such, not "no complete note in 0 image(s)"
    empty = tmp_path / "no images é"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    code, out = hubi_json("merchant", "--home", str(home), "scan", "--image", str(empty))
    assert code == 2 and out["message"].startswith(f"no image file in {empty}"), out
    code, out = hubi_json("merchant", "--home", str(home), "outbox")
    assert code == 0 and out["open_request"]["amount"] == 125, json.dumps(out)
