"""`hubi merchant request --png PATH` writes the PNG beside PATH and renames it over PATH: a
device, a FIFO or a link to one there was replaced by a regular file (run as root,
"--png /dev/full" took the device away from the machine), and the request was signed and
kept as the open one first. Now such a PATH is refused, named, before anything is signed.
(A FIFO stands in for the device here: the old code would replace a real /dev node.)"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hubi import qrscan
from hubi.merchant import Merchant
from tests.test_merchant_support import hubi_json, make_shop


def test_a_png_path_that_is_no_regular_file_is_refused_untouched(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link.png"
    link.symlink_to(fifo)
    for target in (fifo, link):
        code, out = hubi_json(
            "merchant", "--home", str(shop.home), "request", "--amount", "1", "--png", str(target)
        )
        assert code == 2, out
        assert f"--png {target} is not a regular file" in out["message"], out
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and link.is_symlink()
    with Merchant.open(shop.home) as m:
        assert m.outbox.requests() == []  # nothing signed, no open request left behind
    # a new file, or one already there, is written as before
    old = tmp_path / "old.png"
    old.write_bytes(b"stale")
    for target in (tmp_path / "new.png", old):
        code, out = hubi_json(
            "merchant", "--home", str(shop.home), "request", "--amount", "1", "--png", str(target)
        )
        assert code == 0, out
        assert qrscan.collect([target]) == bytes.fromhex(out["request"]["hex"])


def test_render_png_refuses_a_fifo_and_leaves_a_folder_alone(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ValueError, match="is not a regular file"):
        qrscan.render_png(b"\x01abc", tmp_path / "fifo")
    assert stat.S_ISFIFO((tmp_path / "fifo").lstat().st_mode)
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        qrscan.render_png(b"\x01abc", tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "fifo"]
