"""Foreign QR codes in view of the merchant's scanner, and the bounds of its collector.

A counter often shows other QR codes (the shop's web address, its Wi-Fi). From a camera or a
video each frame's codes went straight on as objects: with --count 1 the first foreign code
ended the scan as a rejected "note" before the real note was read. Frames now pass such codes
over (said once, printable and cut short); an image file named on the command line still gets
its foreign code refused as that file's result. The codes are drawn by segno (render_png) and
the firmware's encoder (render_frames) and read back by the real zxing-cpp decoder.

MultiCollector kept every message id and every error text of a run: a long camera run grew
without bound. It now keeps the most recently seen messages and error texts.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from hubi import qrscan
from hubi.merchant.scan import ForeignCode, MultiCollector, is_foreign, scan_objects, shown
from hubi_core import qrparts
from tests.test_merchant_support import T0, Shop, frames, hubi, hubi_json, make_shop

URL = b"https://shop.example.com/menu?table=7&lang=en-GB&utm_source=counter-sticker"
WIFI = b"WIFI:T:WPA;S:Counter Cafe;P:espresso-2026;;"
SIDE = 480  # every video frame is this square, white around the code


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Shop:
    return make_shop(tmp_path_factory.mktemp("foreign"))


def _canvas(path: Path) -> np.ndarray:
    """The PNG at path, centred on a white SIDE x SIDE BGR frame."""
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert img is not None and max(img.shape) <= SIDE, path
    out = np.full((SIDE, SIDE), 255, np.uint8)
    y, x = (SIDE - img.shape[0]) // 2, (SIDE - img.shape[1]) // 2
    out[y : y + img.shape[0], x : x + img.shape[1]] = img
    return cv2.cvtColor(out, cv2.COLOR_GRAY2BGR)


def _foreign_pngs(folder: Path) -> list[Path]:
    folder.mkdir(exist_ok=True)
    return [
        qrscan.render_png(URL, folder / "url.png", scale=4),
        qrscan.render_png(WIFI, folder / "wifi.png", scale=4),
    ]


def _note_and_request(shop: Shop, amount: int) -> bytes:
    note = shop.payer().note(amount, purpose="coffee")
    with shop.merchant() as m:
        m.request(amount, purpose="coffee", expires=10**6, now=T0)
    return note


def _video(path: Path, images: list[Path], repeat: int = 3) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (SIDE, SIDE))
    assert writer.isOpened()
    for img in images:
        frame = _canvas(img)
        for _ in range(repeat):  # a code stays in view a while
            writer.write(frame)
    writer.release()
    return path


def test_decoder_reads_the_foreign_codes_as_drawn(tmp_path: Path) -> None:
    """The premise: the real decoder reads the foreign codes from the video's frames."""
    url, wifi = _foreign_pngs(tmp_path)
    video = _video(tmp_path / "codes.avi", [url, wifi], repeat=1)
    got = [qrscan.decode_image(f, thorough=False) for f in qrscan.frames_from_video(video)]
    assert got == [[URL], [WIFI]]


def test_video_scan_passes_foreign_codes_over_and_reads_the_note(
    shop: Shop, tmp_path: Path
) -> None:
    note = _note_and_request(shop, 611)
    pngs = _foreign_pngs(tmp_path / "foreign") + frames(note, tmp_path)
    video = _video(tmp_path / "counter.avi", pngs)
    code, out = hubi_json(
        "merchant", "--home", str(shop.home), "scan", "--video", str(video), "--count", "1"
    )
    assert code == 0, out
    assert [r["accepted"] for r in out["results"]] == [True], out
    assert out["progress"]["foreign"] == 6  # 2 codes x 3 frames, none handed on
    with shop.merchant() as m:
        assert any(n.bytes == note for n in m.notes())


def test_video_scan_says_each_foreign_code_once_printable_and_short(
    shop: Shop, tmp_path: Path
) -> None:
    note = _note_and_request(shop, 612)
    pngs = _foreign_pngs(tmp_path / "foreign") + frames(note, tmp_path)
    video = _video(tmp_path / "counter.avi", pngs)
    proc = hubi("merchant", "--home", str(shop.home), "scan", "--video", str(video), "--no-qr")
    assert proc.returncode == 0, proc.stderr
    err = " ".join(proc.stderr.split())  # rich may wrap a long line
    said_url = shown(URL)
    assert said_url.endswith('"...')
    assert err.count(said_url) == 1, proc.stderr
    assert err.count(shown(WIFI)) == 1, proc.stderr
    assert "not a hubi code" in err
    assert URL.decode() not in proc.stderr.replace("\n", "")  # cut short


def test_foreign_image_file_is_still_refused_by_name(shop: Shop, tmp_path: Path) -> None:
    """A file given on its own that holds a web address: its refusal says so."""
    url, _ = _foreign_pngs(tmp_path)
    _note_and_request(shop, 613)
    code, out = hubi_json("merchant", "--home", str(shop.home), "scan", "--image", str(url))
    assert code == 1, out
    (res,) = out["results"]
    assert not res["accepted"]
    assert "text, not a hubi object" in str(res), res


def test_scan_objects_on_frames_skips_foreign_and_reports_once(tmp_path: Path) -> None:
    """The scan loop itself over decoded frames: a camera's endless foreign frames, then a
    note's frames; with limit=1 the note (not the URL) is what comes out."""
    url, wifi = _foreign_pngs(tmp_path)
    msg = b"\x01" + bytes((i * 7 + 3) % 256 for i in range(300))
    note_pngs = qrscan.render_frames(msg, tmp_path / "note", 240)
    seq = [_canvas(p) for p in [url, wifi, url, wifi, url] + note_pngs + note_pngs]
    told: list[tuple[object, Exception]] = []
    got = list(
        scan_objects(seq, thorough=False, limit=1, on_frame_error=lambda s, e: told.append((s, e)))
    )
    assert got == [msg]
    assert [e.payload for _, e in told if isinstance(e, ForeignCode)] == [URL, WIFI]
    assert all(isinstance(e, ForeignCode) for _, e in told)


def test_what_counts_as_foreign() -> None:
    note = b"\x01\x02\x01" + bytes(20)
    part = qrparts.frames(b"\x01" + bytes(range(256)) * 3, 240)[1][0]
    assert not is_foreign(note) and not is_foreign(part) and not is_foreign(b"")
    assert not is_foreign(b"\x02future suite")  # a newer suite: accept() names it
    for x in (URL, WIFI, b"\nline", b"\xe2\x82\xac5 coffee", b"\x00\x00binary"):
        assert is_foreign(x), x
    said = str(ForeignCode(b"http://x/\x1b]0;owned\x07" + b"A" * 100))
    assert "\x1b" not in said and "\x07" not in said and "\\x1b" in said
    assert said.endswith('"...') and len(said) < 120


def _part0(i: int) -> bytes:
    """The first part of a distinct animated message number i."""
    msg = b"\x01" + i.to_bytes(4, "big") + bytes(600)
    plan, payloads = qrparts.frames(msg, 240)
    assert not plan.single
    return payloads[0]


def test_multicollector_is_bounded_over_a_long_run() -> None:
    col = MultiCollector()
    msg = b"\x01" + b"the note being shown" + bytes(580)
    plan, parts = qrparts.frames(msg, 240)
    assert not plan.single and len(parts) >= 3
    done = None
    n = 0
    for i in range(1000):  # strangers' first parts, the note's parts among them now and then
        assert col.add(_part0(i)) is None
        if i % 50 == 0 and n < len(parts):
            done = col.add(parts[n]) or done
            n += 1
        assert len(col.collectors) <= MultiCollector.MAX_MESSAGES
    while done is None and n < len(parts):
        done = col.add(parts[n])
        n += 1
    assert done == msg  # the message seen recently was kept while older strangers were dropped
    assert col.dropped >= 1000 - MultiCollector.MAX_MESSAGES
    for i in range(1000):
        assert col.add(b"\xa5" + i.to_bytes(4, "big") + bytes(20)) is None  # bad CRC
    assert len(col.errors) <= MultiCollector.MAX_ERRORS
    assert col.error_count == 1000
    assert "CRC" in col.errors[-1]


def test_scan_progress_counts_every_bad_frame_though_texts_are_bounded(tmp_path: Path) -> None:
    bad = b"\xa5" + bytes(30)  # a part-looking payload with a wrong CRC
    img = _canvas(qrscan.render_png(bad, tmp_path / "bad.png", scale=4))
    seen = []
    assert (
        list(scan_objects([img] * 150, lambda p: seen.append(p.bad_frames), thorough=False)) == []
    )
    assert seen[-1] == 150
