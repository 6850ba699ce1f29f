"""Hostile input to the merchant's commands and `hubi note show`: images that blow up when
enlarged or read, files that are not files, terminal escapes from a bank, deeply nested JSON,
damaged outbox rows. Each must end in a clear error naming what is wrong: no traceback, no
hang, no memory without bound, and nothing already accepted lost.

Everything is real: PNGs written with the project's own PNG writer and decoded by the real
scanner, FIFOs, `hubi` child processes, a real HTTP server playing the bank.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import segno

from hubi import qrscan
from hubi.merchant import upload as up
from hubi.objects import is_image
from hubi_core import png
from tests.test_merchant_support import ROOT, Shop, env, hubi, hubi_json, make_shop

ESC = "\x1b]0;PWNED\x07\x1b[2J\x1b[31mRED\u202eevil"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Shop:
    return make_shop(tmp_path_factory.mktemp("hostile"))


def _home(shop: Shop, tmp_path: Path, name: str = "home") -> Path:
    home = tmp_path / name
    shutil.copytree(shop.home, home)
    return home


def _pending(shop: Shop, home: Path, n: int) -> list[bytes]:
    """n notes accepted into the outbox of `home` (pending), their bytes."""
    from hubi.merchant import Merchant

    notes = []
    with Merchant.open(home) as m:
        for i in range(n):
            m.request(700 + i, "tea", 3600)
            raw = shop.payer().note(700 + i, purpose="tea", time=int(time.time()))
            assert m.accept(raw).ok
            notes.append(raw)
    return notes


def _no_trace(proc: subprocess.CompletedProcess) -> str:
    said = proc.stdout + proc.stderr
    assert "Traceback" not in said, said
    return " ".join(said.split())


# ----------------------------------------------------------------------- images and files
# The child's own peak (VmHWM of its process image, written at exit). Not wait4's ru_maxrss:
# Linux carries the spawning process's peak over into the child at exec (subprocess uses
# vfork), so a child of a pytest worker grown to 700 MB reported 700 MB however little it used.
_PEAK_WRAPPER = """
import atexit, os, runpy, sys

def _peak():
    with open("/proc/self/status") as f:
        kb = next(ln.split()[1] for ln in f if ln.startswith("VmHWM:"))
    with open(os.environ["HUBI_TEST_PEAK_FILE"], "w") as out:
        out.write(kb)

atexit.register(_peak)
sys.argv[0] = "hubi"
runpy.run_module("hubi.cli", run_name="__main__")
"""


def _wait(proc: subprocess.Popen, timeout: float, peak_file: Path) -> tuple[int, float]:
    """Wait status and peak resident memory (MB) of a child run with _PEAK_WRAPPER."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pid, status, _usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped: Popen must not wait
            return status, int(peak_file.read_text()) / 1024
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise AssertionError(f"still running after {timeout} s")


def test_a_thin_strip_png_is_not_enlarged_past_the_pixel_cap(tmp_path: Path) -> None:
    """A blank 100,000 x 50 PNG (800 bytes) was enlarged eightfold in two copies (and float
    copies of those): 320 megapixels a copy, an OpenCV out-of-memory traceback (a 999,999 x 50
    one under the default cap took 9.9 GB). The cap is lowered to 5 megapixels to keep the test
    small; the enlargement must stay under it, and the child's peak memory with it."""
    strip = tmp_path / "strip.png"
    with open(strip, "wb") as f:
        png.write(f, 100_000, 50, (b"\xff" * 12_500 for _ in range(50)), png.GREY1)
    out_file, err_file = tmp_path / "out", tmp_path / "err"
    with open(out_file, "w") as out, open(err_file, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", _PEAK_WRAPPER, "note", "show", str(strip), "--json"],
            stdout=out,
            stderr=err,
            cwd=ROOT,
            env={
                **env(),
                "OPENCV_IO_MAX_IMAGE_PIXELS": "5000000",
                "HUBI_TEST_PEAK_FILE": str(tmp_path / "peak"),
            },
        )
    status, peak_mb = _wait(proc, 60, tmp_path / "peak")
    out, err = out_file.read_text(), err_file.read_text()
    assert "Traceback" not in err, err
    assert os.waitstatus_to_exitcode(status) == 2, (out, err)
    assert "no QR code found" in json.loads(out)["message"], out
    assert peak_mb < 600, f"peak {peak_mb:.0f} MB"


def test_a_grey_with_alpha_is_composited_on_white_without_float_copies() -> None:
    """16-bit BGRA (a code drawn on a transparent background): transparent is paper."""
    qr = segno.make_qr(b"hubi", error="m", mode="byte", boost_error=False)
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"hubi-alpha-{os.getpid()}.png"
    qr.save(str(path), kind="png", scale=6)
    try:
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    finally:
        path.unlink()
    bgra = np.zeros((*grey.shape, 4), np.uint16)  # colour black everywhere ...
    bgra[:, :, 3] = np.where(grey < 128, 65535, 0)  # ... opaque only where the modules are
    out = qrscan.load_grey(bgra)
    assert out.dtype == np.uint8 and out.shape == grey.shape
    assert (out[grey >= 128] == 255).all() and (out[grey < 128] == 0).all()
    assert qrscan.decode_image(bgra) == [b"hubi"]


def test_an_image_file_past_the_byte_cap_is_refused_unread(shop: Shop, tmp_path: Path) -> None:
    """A 3 GB file named .png was read whole (27 s, 3.2 GB) before OpenCV refused it."""
    from hubi.objects import MAX_IMAGE_FILE

    big = tmp_path / "big.png"
    with open(big, "wb") as f:  # sparse: costs no disk
        f.write(b"\x89PNG\r\n\x1a\n")
        f.truncate(MAX_IMAGE_FILE + 1)
    proc = hubi("note", "show", str(big), "--json")
    message = json.loads(proc.stdout)["message"]
    assert proc.returncode == 2 and f"{big}: {MAX_IMAGE_FILE + 1:,} bytes" in message, message
    assert "more than the 67,108,864 an image to scan may have" in message
    proc = hubi("merchant", "--home", str(shop.home), "scan", "--image", str(big))
    said = _no_trace(proc)
    assert proc.returncode == 2 and f"skipped {big}: 67,108,865 bytes, more than" in said, said


def test_a_fifo_is_refused_not_waited_on(shop: Shop, tmp_path: Path) -> None:
    """A FIFO given as a file hung `note show`, `merchant scan --image`, and as merchant.json
    every merchant command."""
    fifo = tmp_path / "note.png"
    os.mkfifo(fifo)
    proc = hubi("note", "show", str(fifo), timeout=30)
    said = _no_trace(proc)
    assert proc.returncode == 2 and f"{fifo}: a FIFO, not a file to read" in said, said
    proc = hubi("merchant", "--home", str(shop.home), "scan", "--image", str(fifo), timeout=30)
    said = _no_trace(proc)
    assert proc.returncode == 2 and f"skipped {fifo}: a FIFO" in said, said
    home = _home(shop, tmp_path)
    (home / "merchant.json").unlink()
    os.mkfifo(home / "merchant.json")
    code, out = hubi_json("merchant", "--home", str(home), "outbox", timeout=30)
    assert code == 2 and f"{home / 'merchant.json'}: a FIFO" in out["message"], out


def test_empty_tiff_and_webp_files(shop: Shop, tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.touch()
    code, out = hubi_json("note", "show", str(empty))
    assert code == 2 and f"{empty}: empty file" in out["message"], out  # was "object truncated"
    assert is_image(b"II*\x00....") and is_image(b"MM\x00*....")
    assert is_image(b"RIFF\x10\x00\x00\x00WEBPVP8 ") and not is_image(b"RIFF\x10\x00\x00\x00WAVE")
    # a note's QR saved as WebP and TIFF reads back (they were taken for binary objects)
    note = shop.payer().note(123, purpose="tea")
    src = tmp_path / "n.png"
    qrscan.render_png(note, src, scale=4)
    grey = cv2.imread(str(src), cv2.IMREAD_GRAYSCALE)
    for ext in ("webp", "tiff"):
        path = tmp_path / f"n.{ext}"
        params = [cv2.IMWRITE_WEBP_QUALITY, 101] if ext == "webp" else []
        assert cv2.imwrite(str(path), grey, params)
        code, out = hubi_json("note", "show", str(path))
        assert code == 0 and out["kind"] == "Note" and out["fields"]["amount"] == 123, out


# ------------------------------------------------------------------- nested JSON, options
def test_deeply_nested_json_is_named_not_a_recursion_error(shop: Shop, tmp_path: Path) -> None:
    home = _home(shop, tmp_path)
    (home / "merchant.json").write_text("[" * 200_000 + "]" * 200_000)
    code, out = hubi_json("merchant", "--home", str(home), "outbox")
    assert code == 2 and out["error"] == "MerchantError", out
    assert (
        f"{home / 'merchant.json'} is damaged: it is not valid JSON (nested too deeply"
        in out["message"]
    )
    # the same in the trust bundle a note is checked with
    note = tmp_path / "note.bin"
    note.write_bytes(shop.payer().note(5))
    trust = tmp_path / "trust"
    shutil.copytree(shop.home / "trust", trust)
    (trust / "consortium.json").write_text("[" * 200_000)
    proc = hubi("note", "show", str(note), "--trust", str(trust))
    said = _no_trace(proc)
    assert (
        proc.returncode == 2
        and f"trust bundle {trust}: consortium.json is not valid JSON (nested too" in said
    )


def test_a_negative_camera_and_a_bad_bank_url_are_usage_errors(shop: Shop) -> None:
    """--camera -1 crashed inside OpenCV (SIGSEGV); port 0 and a space in the host were taken
    as URLs."""
    proc = hubi("merchant", "--home", str(shop.home), "scan", "--camera", "-1")
    assert proc.returncode == 2 and "Invalid value for '--camera'" in proc.stderr, proc.stderr
    for url in ("http://127.0.0.1:0", "http://exa mple.com"):
        proc = hubi("merchant", "--home", str(shop.home), "upload", "--bank", url)
        assert proc.returncode == 2 and "Invalid value for '--bank'" in proc.stderr, proc.stderr
    long = "1" * 100_000
    code, out = hubi_json("merchant", "--home", str(shop.home), "request", "--amount", long)
    assert code == 2 and "too long" in out["message"] and len(out["message"]) < 200, out


# ----------------------------------------------------------------- a bank that says things
def test_the_banks_words_cannot_drive_the_terminal(shop: Shop, tmp_path: Path, fake_bank) -> None:
    url, handler = fake_bank
    home = _home(shop, tmp_path)
    _pending(shop, home, 1)
    handler.answer = (400, {"error": "bad-note", "message": ESC + "x" * 5000})
    proc = hubi("merchant", "--home", str(home), "upload", "--bank", url, "--retries", "0")
    said = _no_trace(proc)
    assert proc.returncode == 1 and len(handler.got) == 1, said
    assert "\x1b" not in said and "\u202e" not in said and "\\x1b]0;PWNED" in said, said
    db = sqlite3.connect(home / "outbox.sqlite")
    try:
        (stored,) = db.execute("SELECT last_error FROM notes").fetchone()
    finally:
        db.close()
    assert "\x1b" not in stored and "\u202e" not in stored and len(stored) <= 300, stored
    # the bank says "not settled yet" with escapes: kept and told escaped too
    handler.answer = (200, {"outcome": "pending", "reason": ESC})
    from hubi.merchant import Merchant

    lines: list[str] = []
    with Merchant.open(home) as m:
        report = up.upload(m, url, retries=0, say=lines.append, settle_wait=0)
        (row,) = m.outbox.pending()
    assert "\\x1b]0;PWNED\\x07" in report.items[0].detail, report.items[0].detail
    assert not any("\x1b" in line for line in lines) and "\x1b" not in row.last_error
    proc = hubi("merchant", "--home", str(home), "outbox")
    said = _no_trace(proc)
    assert proc.returncode == 0 and "\x1b" not in said and "\\x1b" in said, said


def test_printable() -> None:
    from hubi.output import printable

    assert printable("a\x1b[2Jb\u202ec\x00\x85") == "a\\x1b[2Jb\\u202ec\\x00\\x85"
    assert printable("x" * 1000) == "x" * 299 + "…" and printable("é ok") == "é ok"


# ------------------------------------------------------------------- damaged outbox rows
def _sql(home: Path, *statements: str) -> None:
    db = sqlite3.connect(home / "outbox.sqlite")
    try:
        for s in statements:
            db.execute(s)
        db.commit()
    finally:
        db.close()


def test_a_damaged_row_is_named_and_the_others_still_go_up(
    shop: Shop, tmp_path: Path, fake_bank
) -> None:
    """One row with garbage note bytes stopped the whole upload ("expected a Note, got a
    Request", naming no note), and rows with an id stored as text, an amount as text or an
    outcome that is not JSON were tracebacks in `outbox` and `upload`."""
    url, handler = fake_bank
    home = _home(shop, tmp_path)
    notes = _pending(shop, home, 5)
    with sqlite3.connect(home / "outbox.sqlite") as db:
        req = db.execute("SELECT bytes FROM requests LIMIT 1").fetchone()[0]
        rowids = [r[0] for r in db.execute("SELECT rowid FROM notes ORDER BY rowid")]
    db.close()
    _sql(
        home,
        f"UPDATE notes SET bytes = x'{req.hex()}' WHERE rowid = {rowids[0]}",
        f"UPDATE notes SET note_id = 'abc' WHERE rowid = {rowids[1]}",
        f"UPDATE notes SET amount = 'lots' WHERE rowid = {rowids[2]}",
        f"UPDATE notes SET outcome = '{{not json', purpose = 'a' || char(0) || 'b' WHERE rowid = {rowids[3]}",
    )
    proc = hubi("merchant", "--home", str(home), "upload", "--bank", url, "--retries", "0")
    said = _no_trace(proc)
    assert proc.returncode == 1, said
    assert handler.got == [notes[4]], said  # the intact note was uploaded, only it
    assert f"damaged outbox row {rowids[0]}: the note's bytes do not decode" in said, said
    assert f"damaged outbox row {rowids[1]}: note_id is 'abc', not bytes" in said, said
    assert f"damaged outbox row {rowids[2]}: amount is 'lots', not an integer" in said, said
    assert f"damaged outbox row {rowids[3]}: outcome is not JSON" in said, said
    code, out = hubi_json("merchant", "--home", str(home), "outbox")
    assert code == 0 and len(out["items"]) == 5, out
    damaged = [it.get("damaged") for it in out["items"]]
    assert damaged[4] is None and all(damaged[1:4]), damaged
    proc = hubi("merchant", "--home", str(home), "outbox")
    said = _no_trace(proc)
    assert proc.returncode == 0 and said.count("DAMAGED") == 3, said
    # nothing was changed in the damaged rows
    with sqlite3.connect(home / "outbox.sqlite") as db:
        kept = db.execute(f"SELECT amount, attempts FROM notes WHERE rowid = {rowids[2]}")
        assert kept.fetchone() == ("lots", 0)
    db.close()


def test_a_table_of_the_wrong_shape_names_the_outbox(shop: Shop, tmp_path: Path) -> None:
    home = _home(shop, tmp_path)
    _pending(shop, home, 1)  # the outbox made (the shop's may not be yet, whatever ran first)
    _sql(
        home,
        "ALTER TABLE requests RENAME TO requests_old",
        "CREATE TABLE requests (serial INTEGER PRIMARY KEY)",
    )
    for command in ("outbox", "upload"):
        code, out = hubi_json("merchant", "--home", str(home), command)
        assert code == 2 and out["error"] == "MerchantError", out
        assert (
            f"the outbox {home / 'outbox.sqlite'} is damaged: its table requests"
            in (out["message"])
        ), out


def test_a_damaged_counter_and_escapes_in_merchant_json_are_named(
    shop: Shop, tmp_path: Path
) -> None:
    """A serial counter stored as text was a TypeError traceback in `merchant request`; an
    account in merchant.json holding ESC sequences was printed raw in the error."""
    home = _home(shop, tmp_path)
    _pending(shop, home, 1)
    _sql(home, "UPDATE counter SET serial = 'x'")
    proc = hubi("merchant", "--home", str(home), "request", "--amount", "1", "--no-qr")
    said = _no_trace(proc)
    assert proc.returncode == 2 and f"the outbox {home / 'outbox.sqlite'} is damaged" in said
    assert "the serial counter of BKB-000000000007 is 'x'" in said, said
    home = _home(shop, tmp_path, "esc")
    cfg = json.loads((home / "merchant.json").read_text())
    (home / "merchant.json").write_text(json.dumps({**cfg, "account": "BKB-" + ESC}))
    proc = hubi("merchant", "--home", str(home), "request", "--amount", "1", "--no-qr")
    said = _no_trace(proc)
    assert proc.returncode == 2 and "merchant.json says BKB-\\x1b]0;PWNED\\x07" in said, said
    assert "\x1b" not in said and "\u202e" not in said
