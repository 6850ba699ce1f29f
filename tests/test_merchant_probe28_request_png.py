"""Probe 28 of `hubi merchant request`: the image of a request that was kept.

A `request` killed (SIGKILL) after it stored its request but before it wrote the PNG left that
request open for good without an image (a receipt's image was drawn again; a request's was
not). Now the next `merchant request` or `merchant outbox` draws the image of every open,
still payable request missing from HOME/qr from the bytes kept in the outbox. And a request
whose image cannot be written is not left open: the command failed, so no one was shown it.
Real `hubi` processes killed by a real SIGKILL at the moment the PNG is opened for writing (an
audit hook in a sitecustomize on PYTHONPATH), real PNGs read back with zxing-cpp.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from hubi import qrscan
from tests.test_merchant_support import HUBI, ROOT, T0, Shop, env, hubi, hubi_json, make_shop

pytestmark = pytest.mark.xdist_group("test_merchant_probe28_request_png")

# kills the process (SIGKILL, as a power cut or the OOM killer would) when it opens a file
# whose name starts with $HUBI_PROBE28_KILL_AT: the temporary file write_atomic makes first
KILL_SITE = """
import os, signal, sys

_at = os.environ.get("HUBI_PROBE28_KILL_AT")
if _at:
    def _hook(event, args):
        if event == "open" and isinstance(args[0], str):
            if os.path.basename(args[0]).startswith(_at):
                os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(_hook)
"""


def _killed_request(tmp_path: Path, shop: Shop, *args: str) -> subprocess.CompletedProcess:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(KILL_SITE)
    e = env()
    e["PYTHONPATH"] = os.pathsep.join([str(site), e["PYTHONPATH"]])
    e["HUBI_PROBE28_KILL_AT"] = ".request-"
    cmd = [*HUBI, "merchant", "--home", str(shop.home), "request", *args, "--no-qr"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=e, cwd=ROOT)


def _requests(shop: Shop) -> list[tuple[int, str, bytes]]:
    db = sqlite3.connect(shop.home / "outbox.sqlite")
    try:
        rows = db.execute("SELECT serial, state, bytes FROM requests ORDER BY serial").fetchall()
    finally:
        db.close()
    return [(s, st, bytes(b)) for s, st, b in rows]


def test_a_request_killed_before_its_image_gets_it_drawn_again(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    home = str(shop.home)
    proc = _killed_request(tmp_path, shop, "--amount", "12.50", "--purpose", "coffee")
    assert proc.returncode == -9, proc.stdout + proc.stderr  # killed where it was meant to be
    ((serial, state, stored),) = _requests(shop)
    png = shop.home / "qr" / f"request-{serial:06d}.png"
    assert state == "open" and not png.exists()  # kept, payable, and no image: the old end

    # the cashier asks again: the new request is made and the lost one's image comes back
    code, out = hubi_json("merchant", "--home", home, "request", "--amount", "3")
    assert code == 0 and out["requests_rewritten"] == [str(png)], out
    assert qrscan.decode_image(png) == [stored]  # exactly the signed request that was kept
    new = Path(out["request"]["png"])
    assert qrscan.decode_image(new) == [bytes.fromhex(out["request"]["hex"])]

    # listing the outbox does it too, and says so; with nothing missing it says nothing
    png.unlink()
    proc = hubi("merchant", "--home", home, "outbox")
    assert proc.returncode == 0, proc.stderr
    assert (
        f"image of open request #{serial} missing from the home, drawn from the outbox: {png}"
        in proc.stderr
    )
    assert qrscan.decode_image(png) == [stored]
    proc = hubi("merchant", "--home", home, "outbox")
    assert proc.returncode == 0 and "drawn from the outbox" not in proc.stderr, proc.stderr


def test_only_requests_still_payable_are_drawn_again(tmp_path: Path) -> None:
    """An expired request, a paid one and a cancelled one get no image: it would only ask for a
    payment the scan then refuses."""
    shop = make_shop(tmp_path)
    now = int(time.time())
    with shop.merchant() as m:
        expired = m.request(100, "tea", expires=60, now=T0)  # long past
        paid = m.request(1250, "coffee", expires=600)
        cancelled = m.request(300, "cake", expires=600)
        assert m.outbox.cancel_request(cancelled.serial)
        live = m.request(400, "soup", expires=600)
        assert m.accept(shop.payer().note(1250, time=now), paid.serial).ok
    for issued in (expired, paid, cancelled, live):
        assert issued.png is not None
        issued.png.unlink()
    code, out = hubi_json("merchant", "--home", str(shop.home), "outbox")
    assert code == 0 and out["requests_rewritten"] == [str(live.png)], out
    assert qrscan.decode_image(live.png) == [live.bytes]
    assert not any(p.png.exists() for p in (expired, paid, cancelled))  # type: ignore[union-attr]


def test_a_request_whose_image_cannot_be_written_is_not_left_open(tmp_path: Path) -> None:
    """HOME/qr a plain file (the image is written after the request was kept): the command
    failed (exit 2), so no one saw the request; it stayed open all the same, and was drawn by
    the next command once HOME/qr could hold it."""
    shop = make_shop(tmp_path)
    qr = shop.home / "qr"
    if qr.exists():
        qr.rmdir()
    qr.write_text("not a folder")
    code, out = hubi_json("merchant", "--home", str(shop.home), "request", "--amount", "2")
    assert code == 2 and out["ok"] is False and out["error"] == "FileExistsError", out
    qr.unlink()
    ((_serial, state, _raw),) = _requests(shop)
    assert state == "cancelled"
    code, out = hubi_json("merchant", "--home", str(shop.home), "outbox")
    assert code == 0 and out["requests_rewritten"] == [] and out["open_request"] is None, out
