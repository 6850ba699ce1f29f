"""The merchant's scan loop (hubi.merchant.scan) over real QR images: frames drawn with the
token's own encoder (hubi_core.qr, hubi_core.png) as ``hubi.qrscan.render_frames`` draws them,
read back by the real decoder (zxing-cpp).

A forged copy of a part seen before the genuine one: the collector keeps both copies and
completes with the genuine one, but it reports that copy as ConflictingPart, and the scan loop
took that as "skip the frame" without asking whether the object was now whole. When the
genuine copy was the last image of a batch, the note was never handed on."""

from __future__ import annotations

from pathlib import Path

from hubi import qrscan
from hubi.merchant.scan import MultiCollector, scan_objects
from hubi_core import png, qr, qrparts

SCREEN = 240
SCALE = 4


def _message() -> bytes:
    # note-sized and starting with the suite byte, as a note does: several frames at 240 px
    return b"\x01" + bytes((i * 37 + 11) % 256 for i in range(439))


def _draw(payload: bytes, version: int, path: Path) -> Path:
    """One frame as render_frames draws it."""
    code = qr.encode(payload, "M", version=version)
    side = (code.size + 8) * SCALE
    with open(path, "wb") as f:
        png.write(f, side, side, qr.bitmap_rows(code, SCALE), png.GREY1)
    return path


def _forged(part: bytes) -> bytes:
    """A well-formed part (valid CRC and counts) of the same message and index, another body."""
    p = qrparts.parse(part)
    body = bytes(b ^ 0x5A for b in p.body)
    return qrparts._pack(p.mid, p.index, p.k, p.g, p.total, body)


def _frames(tmp_path: Path) -> tuple[bytes, list[Path], Path]:
    """(message, genuine frame images, an image of a forged copy of part 0)."""
    msg = _message()
    plan, payloads = qrparts.frames(msg, SCREEN)
    assert not plan.single and plan.data_parts >= 2, plan
    paths = qrscan.render_frames(msg, tmp_path / "frames", SCREEN)
    assert len(paths) == len(payloads)
    forged = _draw(_forged(payloads[0]), plan.version, tmp_path / "forged.png")
    assert qrscan.decode_image(forged) == [_forged(payloads[0])]  # the decoder reads it
    return msg, paths, forged


def test_the_genuine_copy_last_in_a_batch_completes_the_note(tmp_path: Path) -> None:
    msg, paths, forged = _frames(tmp_path)
    batch = [forged, *paths[1:], paths[0]]  # the genuine part 0 comes last
    seen = []
    got = list(scan_objects(batch, progress=seen.append))
    assert got == [msg]
    assert seen[-1].done == 1 and seen[-1].bad_frames == 1, seen[-1]
    assert seen[-1].frames == len(batch)


def test_the_genuine_copy_completes_even_when_parity_already_covered_the_part(
    tmp_path: Path,
) -> None:
    """Every other frame (parity too) first: the forged part 0 made the parts whole and failed
    the hash; the genuine copy then completes it, the forged one named in the errors."""
    msg, paths, forged = _frames(tmp_path)
    col = MultiCollector()
    got = list(scan_objects([forged, *paths[1:]], collector=col))
    assert got == [] and len(col.incomplete()) == 1, col.incomplete()
    assert list(scan_objects([paths[0]], collector=col)) == [msg]
    assert col.incomplete() == [] and len(col.errors) == 1
    assert "body differs" in col.errors[0], col.errors
    assert list(scan_objects(paths, collector=col)) == []  # repeats of a note handed on


def test_a_single_frame_note_after_a_forged_layout_is_handed_on(tmp_path: Path) -> None:
    """A forged frame claiming other part counts for the note's id first; then the note's own
    frames, the first of which (other counts than the forged one) is reported as conflicting."""
    msg, paths, _ = _frames(tmp_path)
    first = qrparts.parse(qrparts.frames(msg, SCREEN)[1][0])
    # one data part and one parity part: a layout the genuine frames do not have
    odd = qrparts._pack(first.mid, 0, 1, 1, 5, b"\x00" * 5)
    plan = qrparts.frames(msg, SCREEN)[0]
    odd_png = _draw(odd, plan.version, tmp_path / "odd.png")
    col = MultiCollector()
    got = list(scan_objects([odd_png, *paths], collector=col))
    assert got == [msg]
    assert len(col.errors) == 1 and "earlier 1+1 of 5" in col.errors[0], col.errors
