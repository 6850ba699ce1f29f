"""Probe 28, second round: merchant scanning and the outbox, with real `hubi` processes.

Found and fixed: a folder given to `scan --image` was read for six suffixes only (TIFF, JPEG
2000, PNM... which OpenCV reads were skipped); an empty image file was "not an image OpenCV
can read (!buf.empty())"; `scan --video` of an empty or non-video file said only "cannot open
video X"; a read-only merchant home could not even be listed (`merchant outbox`), the outbox
always opening read-write in WAL mode; temporary files of a process killed while it wrote an
image stayed in HOME/qr for ever.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from hubi import qrscan
from hubi.merchant import scan as scan_mod
from tests.small_disk import read_only
from tests.test_merchant_support import T0, Shop, env, hubi, hubi_json, make_shop

pytestmark = pytest.mark.xdist_group("test_merchant_probe28b_followups")


def _pay(shop: Shop, amounts: list[int]) -> None:
    with shop.merchant() as m:
        for amount in amounts:
            m.request(amount, "coffee", expires=10**6, now=T0)
            assert m.accept(shop.payer().note(amount), now=T0 + 1).ok


def _files(folder: Path) -> dict[str, tuple[int, float]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime)
        for p in folder.rglob("*")
        if p.is_file()
    }


# ------------------------------------------------------------ 1. a folder of any OpenCV image
def test_a_folder_is_read_for_every_image_format_opencv_reads(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    with shop.merchant() as m:
        m.request(300, "coffee", expires=600)
    note = shop.payer().note(300, time=int(time.time()))
    png = tmp_path / "note.png"
    qrscan.render_png(note, png)
    colour = cv2.imread(str(png), cv2.IMREAD_COLOR)
    grey = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    # `scan` of a folder holding only a TIFF takes the note in it
    tiff = tmp_path / "scans"
    tiff.mkdir()
    cv2.imwrite(str(tiff / "counter.tiff"), colour)
    code, out = hubi_json("merchant", "--home", str(shop.home), "scan", "--image", str(tiff))
    assert code == 0 and out["accepted"] == 1, out
    every = tmp_path / "every"
    every.mkdir()
    for suffix in qrscan.IMAGE_SUFFIXES:  # each one listed is one OpenCV reads back here
        path = every / f"note{suffix.upper() if suffix == '.tif' else suffix}"
        assert cv2.imwrite(str(path), grey if suffix in (".pbm", ".pgm") else colour), suffix
        assert qrscan.decode_image(path) == [note], suffix
    (every / "readme.txt").write_text("not an image")
    listed = scan_mod.image_paths([every])
    assert sorted(p.name.lower() for p in listed) == sorted(
        f"note{s}" for s in qrscan.IMAGE_SUFFIXES
    )


# ------------------------------------------------------- 2. and 3. empty images, odd videos
def test_an_empty_image_says_so(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    home = str(shop.home)
    empty = tmp_path / "empty é.png"
    empty.write_bytes(b"")
    proc = hubi("merchant", "--home", home, "scan", "--image", str(empty), "--no-qr")
    assert proc.returncode == 2, proc
    assert f"skipped {empty}: empty file, not an image" in proc.stderr, proc.stderr
    assert "buf.empty" not in proc.stderr
    with pytest.raises(ValueError, match="empty file, not an image"):
        qrscan.decode_image(empty)


def test_videos_that_are_none_say_why(tmp_path: Path) -> None:
    home = str(make_shop(tmp_path).home)
    video = tmp_path / "till.mp4"
    video.write_bytes(b"")
    code, out = hubi_json("merchant", "--home", home, "scan", "--video", str(video))
    assert code == 2 and out["message"] == f"cannot open video {video}: empty file, not a video"
    text = tmp_path / "cut.mp4"  # an MP4 cut short after its first box
    text.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    code, out = hubi_json("merchant", "--home", home, "scan", "--video", str(text))
    assert code == 2, out
    assert out["message"].startswith(f"cannot open video {text}: not a video OpenCV can read"), out
    assert "FFMPEG" in out["message"], out  # the backends it tried are named
    # a folder or a FIFO given to the library (the command line refuses a folder itself): said
    # at once, and the FIFO is not opened (no writer: OpenCV would wait for ever)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path, said in ((tmp_path, "a folder"), (fifo, "a FIFO")):
        with pytest.raises(
            OSError, match=f"^cannot open video {re.escape(str(path))}: {said}, not a file"
        ):
            qrscan.frames_from_video(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        qrscan.frames_from_video(tmp_path / "gone.mp4")


# ---------------------------------------------------------------- 4. a read-only merchant home
_KILLED_WRITER = """
import os, sys
from pathlib import Path
from hubi.merchant import Merchant
T0 = int(sys.argv[2])
m = Merchant.open(Path(sys.argv[1]))
m.outbox.db.execute("PRAGMA wal_autocheckpoint=0")  # the note stays in the -wal file
m.request(700, "tea", expires=10**6, now=T0)
print(m.request(701, "tea", expires=10**6, now=T0).serial, flush=True)
os._exit(0)  # killed: no checkpoint, the -wal and -shm files stay
"""


def _outbox(home: Path) -> tuple[int, dict]:
    return hubi_json("merchant", "--home", str(home), "outbox")


def test_a_read_only_home_is_listed_with_or_without_its_wal_files(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    home = shop.home
    _pay(shop, [100, 200])
    ob = home / "outbox.sqlite"
    wal, shm = Path(f"{ob}-wal"), Path(f"{ob}-shm")
    assert not wal.exists() and not shm.exists()  # closed cleanly: all in the file
    before = _files(home)
    with read_only(home):
        code, out = _outbox(home)
        assert code == 0 and out["read_only"] is True, out
        assert [i["amount"] for i in out["items"]] == [100, 200], out
        assert out["notes"]["pending"] == 2 and "receipts_rewritten" not in out, out
        proc = hubi("merchant", "--home", str(home), "outbox")
        assert proc.returncode == 0 and "read-only home" in proc.stdout, proc.stderr
        # a command that would write is refused before it reads a note it could not keep
        png = tmp_path / "note.png"
        qrscan.render_png(shop.payer().note(5), png)
        code, out = hubi_json("merchant", "--home", str(home), "scan", "--image", str(png))
        assert code == 2 and out["error"] == "MerchantError", out
        assert f"{home} is read-only: a merchant home must be writable" in out["message"], out
    assert _files(home) == before  # nothing written, no -wal or -shm made

    # a writer killed with its last writes in the -wal file: the -wal and -shm are read too
    run = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(home), str(T0)],
        capture_output=True, text=True, env=env(), cwd=Path(__file__).resolve().parents[1],
        timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert wal.stat().st_size > 0 and shm.exists()
    with read_only(home):
        code, out = _outbox(home)
        assert code == 0 and out["open_request"]["amount"] == 701, out
    # the -shm gone as well (copied without it): the -wal cannot be read, and that is said
    shm.unlink()
    with read_only(home):
        code, out = _outbox(home)
        assert code == 2 and "outbox.sqlite-wal holds writes not yet in the file" in out["message"]
    # opened writable once, everything is back in the file: a stale -shm alone is no matter
    code, out = _outbox(home)
    assert code == 0 and out["open_request"]["amount"] == 701 and not out["read_only"], out
    shm.write_bytes(b"\0" * 32768)
    with read_only(home):
        code, out = _outbox(home)
        assert code == 0 and out["open_request"]["amount"] == 701, out
        assert len(out["items"]) == 2, out


# ----------------------------------------------------- 5. temporaries a killed writer left
def test_stale_temporaries_in_home_qr_are_removed_and_nothing_else(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    _pay(shop, [100])
    qr = shop.home / "qr"
    old = time.time() - 3600
    stale = qr / ".receipt-000002.png.k3j_9zq1.tmp"
    young = qr / ".request-000009.png.abcd1234.tmp"  # another process may be writing it now
    below = qr / "kept" / ".receipt-000001.png.abcd1234.tmp"
    beside = shop.home / ".config.json.abcd1234.tmp"
    other = qr / "notes.tmp"
    outside = tmp_path / "precious.png.abcd1234.tmp"
    link = qr / ".link.png.zzzz9999.tmp"
    below.parent.mkdir(parents=True)
    for p in (stale, young, below, beside, other, outside):
        p.write_bytes(b"\x89PNG half")
    link.symlink_to(outside)
    for p in (stale, below, beside, other, outside):
        os.utime(p, (old, old))
    os.utime(link, (old, old), follow_symlinks=False)
    code, out = _outbox(shop.home)
    assert code == 0, out
    assert not stale.exists()
    for p in (young, below, beside, other, outside, link):
        assert os.path.lexists(p), p
    # `scan` (it draws receipts) tidies too
    os.utime(young, (old, old))
    png = tmp_path / "none.png"
    png.write_bytes(b"not an image")
    proc = hubi("merchant", "--home", str(shop.home), "scan", "--image", str(png), "--no-qr")
    assert proc.returncode == 2 and not young.exists(), proc.stderr
