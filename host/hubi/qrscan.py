"""Host-side QR: scan payloads from images, video and cameras; render QR codes as PNG.

    payloads = decode_image("note.png")            # list[bytes], every QR code in the image
    note = collect(["frame1.png", "frame2.png"])   # one object, single QR or animated parts
    note = collect(frames_from_video("loop.mp4"))
    render_png(note, "note.png", scale=6)          # byte mode, decodes back to the same bytes

Decoding uses zxing-cpp and takes ``Barcode.bytes`` (the raw byte-mode content, no text
transcoding), so binary objects round-trip exactly. Hard camera images go through OpenCV
fallbacks, cheapest first, until one yields a code: upscaling of small images, CLAHE,
contrast stretch, sharpening (unsharp mask, against blur), denoising (median, bilateral),
Otsu and adaptive thresholds, morphological closing/opening, smoothing followed by CLAHE or
an adaptive threshold (dim, noisy photos), and zxing's other binarizers.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import segno
import zxingcpp

from hubi.files import check_write_target, write_atomic
from hubi_core import qrparts
from hubi_core.qrparts import Collector, Incomplete

# OpenCV's own warnings ("[ WARN:0@0.1] global grfmt_png.cpp ... libpng error") went to stderr
# before hubi's message naming the file: only its errors are shown
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

__all__ = [
    "Collector",
    "check_png_target",
    "Incomplete",
    "collect",
    "decode_image",
    "frames_from_camera",
    "frames_from_video",
    "load_grey",
    "render_frames",
    "render_png",
]

_FORMATS = (zxingcpp.BarcodeFormat.QRCode, zxingcpp.BarcodeFormat.MicroQRCode)

ImageSource = str | os.PathLike | bytes | np.ndarray | Any

# File name endings of the image formats OpenCV decodes (cv2.imdecode, checked in the tests):
# the one list of what a folder given to a scan is read for
IMAGE_SUFFIXES = (
    ".avif", ".bmp", ".dib", ".gif", ".hdr", ".jp2", ".jpe", ".jpeg", ".jpg", ".pbm", ".pfm",
    ".pgm", ".pic", ".png", ".pnm", ".ppm", ".ras", ".sr", ".tif", ".tiff", ".webp",
)  # fmt: skip


def load_grey(image: ImageSource) -> np.ndarray:
    """A 2-D uint8 grey image from a path, encoded image bytes, an ndarray or a PIL image.

    A path must be a regular file of at most ``hubi.objects.MAX_IMAGE_FILE`` bytes (ValueError
    naming it otherwise: checked before anything is read)."""
    if isinstance(image, str | os.PathLike):
        from hubi.objects import read_image_file

        data = read_image_file(image)
        arr = _decode(np.frombuffer(data, dtype=np.uint8), str(image))
        del data
    elif isinstance(image, bytes | bytearray | memoryview):
        arr = _decode(np.frombuffer(image, dtype=np.uint8), "image bytes")
    elif isinstance(image, np.ndarray):
        arr = image
    elif hasattr(image, "convert"):  # PIL.Image
        arr = np.asarray(image.convert("L"))
    else:
        raise TypeError(f"cannot read an image from {type(image).__name__}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:  # straight to 8 bits: no wide intermediate copy
        arr = cv2.normalize(arr, None, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U)
    if arr.ndim == 3:
        if arr.shape[2] == 4:
            arr = _on_white(arr)
        elif arr.shape[2] == 3:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGR2GRAY)
        elif arr.shape[2] == 1:
            arr = arr[:, :, 0]
        else:
            raise ValueError(f"image with {arr.shape[2]} channels")
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"image of shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _on_white(bgra: np.ndarray) -> np.ndarray:
    """Grey of a BGRA image composited on white (transparent areas are paper).

    Grey first, then grey * alpha / 255 + (255 - alpha): the same as compositing each colour
    (grey is linear in them), in uint8 planes the size of the image, not float copies of all
    four channels."""
    grey = cv2.cvtColor(bgra, cv2.COLOR_BGRA2GRAY)
    alpha = cv2.extractChannel(bgra, 3)
    cv2.multiply(grey, alpha, dst=grey, scale=1 / 255)
    return cv2.add(grey, cv2.bitwise_not(alpha, dst=alpha), dst=grey)


def _pixel_cap() -> int:
    """The most pixels an image or video frame to scan may have (see ``hubi.MAX_IMAGE_PIXELS``)."""
    from hubi import MAX_IMAGE_PIXELS

    try:
        return int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS))
    except ValueError:
        return MAX_IMAGE_PIXELS


def _too_large(name: str, what: str = "an image") -> str:
    return f"{name}: {what} of more than {_pixel_cap():,} pixels, the most a scan reads"


def _decode(data: np.ndarray, name: str) -> np.ndarray:
    """OpenCV's decoding of an encoded image, or ValueError naming what is wrong with it."""
    if data.size == 0:  # OpenCV's own words were "(!buf.empty())"
        raise ValueError(f"{name}: empty file, not an image")
    try:
        arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # its size check failed: refused before the pixels are made
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):
            raise ValueError(_too_large(name)) from None
        raise ValueError(f"{name}: not an image OpenCV can read ({exc.err})") from None
    if arr is None:
        raise ValueError(f"{name}: not an image OpenCV can read")
    return arr


def _read(grey: np.ndarray, binarizer=None) -> list[bytes]:
    kw = {} if binarizer is None else {"binarizer": binarizer}
    try:
        found = zxingcpp.read_barcodes(grey, formats=_FORMATS, **kw)
    except (ValueError, RuntimeError):
        return []
    return [bytes(b.bytes) for b in found if b.valid]


def _bases(grey: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """The image, then resized copies of it, made one at a time (each can be large)."""
    yield "", grey
    h, w = grey.shape
    short = min(h, w)
    if short < 500:  # small or distant codes: give zxing more pixels per module
        f = min(8, max(2, int(np.ceil(800 / short))))
        # a thin strip would grow past the pixel cap (999,999 x 50 by 8: 3.2 gigapixels):
        # enlarge as far as the cap allows, or not at all
        f = min(f, math.isqrt(_pixel_cap() // (h * w)))
        if f >= 2:
            for tag, how in (("n", cv2.INTER_NEAREST), ("c", cv2.INTER_CUBIC)):
                yield f"x{f}{tag}", cv2.resize(grey, None, fx=f, fy=f, interpolation=how)
    elif short > 2000:
        f = 1500 / short
        yield "down", cv2.resize(grey, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)


def _percentiles(grey: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """np.percentile(grey, qs) (linear interpolation) from a histogram: no flattened copy."""
    cum = np.cumsum(cv2.calcHist([grey], [0], None, [256], [0, 256]).ravel().astype(np.int64))
    n = int(cum[-1])

    def kth(k: int) -> int:  # the k-th smallest value (0-based)
        return int(np.searchsorted(cum, k, side="right"))

    out = []
    for q in qs:
        pos = q / 100 * (n - 1)
        lo = math.floor(pos)
        a, b = kth(lo), kth(min(lo + 1, n - 1))
        out.append(a + (pos - lo) * (b - a))
    return out


def _variants(grey: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """Preprocessed versions of a hard image, cheapest and most likely first."""
    clahe = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8))
    for tag, g in _bases(grey):
        if tag:
            yield tag, g
        yield tag + "+clahe", clahe.apply(g)
        lo, hi = _percentiles(g, (2, 98))
        if hi - lo >= 4:  # a lookup table: no float copy of the image
            lut = np.clip((np.arange(256, dtype=np.float32) - lo) * (255.0 / (hi - lo)), 0, 255)
            yield tag + "+stretch", cv2.LUT(g, lut.astype(np.uint8))
        blur = cv2.GaussianBlur(g, (0, 0), 3)
        yield tag + "+sharpen", cv2.addWeighted(g, 2.0, blur, -1.0, 0)
        yield tag + "+median", cv2.medianBlur(g, 5)
        yield tag + "+bilateral", cv2.bilateralFilter(g, 9, 75, 75)
        smooth = cv2.GaussianBlur(g, (5, 5), 0)
        _, otsu = cv2.threshold(smooth, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        yield tag + "+otsu", otsu
        for block in (31, 61, 121):
            if block < min(g.shape):
                yield (
                    f"{tag}+adaptive{block}",
                    cv2.adaptiveThreshold(
                        smooth, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, block, 5
                    ),
                )
        kernel = np.ones((3, 3), np.uint8)
        yield tag + "+close", cv2.morphologyEx(otsu, cv2.MORPH_CLOSE, kernel)
        yield tag + "+open", cv2.morphologyEx(otsu, cv2.MORPH_OPEN, kernel)
        # noisy and dim: smooth first, then local contrast
        for sigma in (1.5, 3.0):
            soft = cv2.GaussianBlur(g, (0, 0), sigma)
            yield f"{tag}+gauss{sigma}+clahe", clahe.apply(soft)
            yield (
                f"{tag}+gauss{sigma}+adaptive",
                cv2.adaptiveThreshold(
                    soft, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, 61, 3
                ),
            )
        yield tag + "+median+clahe", clahe.apply(cv2.medianBlur(g, 5))


def decode_image(image: ImageSource, thorough: bool = True) -> list[bytes]:
    """Payloads (raw bytes) of every QR code found in an image, without duplicates.

    image: a path, encoded image bytes, a BGR/BGRA/grey ndarray or a PIL image.
    thorough: when plain zxing finds nothing, try the OpenCV fallbacks (slower: use False on
    live camera frames).
    """
    try:
        return _decode_image(image, thorough)
    except (MemoryError, cv2.error) as exc:
        # a big image's working copies (or OpenCV's) did not fit: say so, not a traceback
        name = str(image) if isinstance(image, str | os.PathLike) else "the image"
        why = "not enough memory" if isinstance(exc, MemoryError) else exc.err
        raise ValueError(f"{name}: too large or too odd to scan ({why})") from None


def _decode_image(image: ImageSource, thorough: bool) -> list[bytes]:
    grey = load_grey(image)
    found = _read(grey)
    if not found and thorough:
        for _tag, variant in _variants(grey):
            found = _read(variant)
            if found:
                break
        else:
            for binarizer in (
                zxingcpp.Binarizer.GlobalHistogram,
                zxingcpp.Binarizer.FixedThreshold,
            ):
                found = _read(grey, binarizer)
                if found:
                    break
    out: list[bytes] = []
    for p in found:
        if p not in out:
            out.append(p)
    return out


def _as_sources(sources: ImageSource | Iterable[ImageSource]) -> Iterable[ImageSource]:
    if isinstance(sources, str | os.PathLike | bytes | bytearray | np.ndarray):
        return [sources]
    if hasattr(sources, "convert"):  # one PIL image
        return [sources]
    return sources


def collect(
    sources: ImageSource | Iterable[ImageSource],
    progress: Callable[[int, int], Any] | None = None,
    thorough: bool = True,
    collector: Collector | None = None,
) -> bytes:
    """Read images (paths, arrays, video frames...) until one object is complete; return it.

    A single QR carries the raw object; animated frames carry parts (hubi_core.qrparts) that
    may come in any order, repeated, with lost frames covered by parity. progress(have, need)
    is called after every accepted payload. Frames of another message raise
    qrparts.MixedMessages; running out of sources raises qrparts.Incomplete (or the BadPart
    of an unusable frame, when nothing else was found; such frames are skipped otherwise). A
    frame contradicting an earlier one is kept as another copy of its part (qrparts.Collector)
    and the copy that hashes to the message id wins: one forged frame does not stop the scan.
    """
    col = collector if collector is not None else Collector()
    seen = 0
    bad: qrparts.BadPart | None = None  # the first unusable payload: said if nothing else came
    for src in _as_sources(sources):
        seen += 1
        # every code of the image is added before one is returned: an image that holds two
        # objects (two notes, a note beside a web address) is refused, not read as the first
        for payload in decode_image(src, thorough=thorough):
            try:
                have, need = col.add(payload)
            except qrparts.MixedMessages as exc:
                name = str(src) if isinstance(src, str | os.PathLike) else f"image {seen}"
                raise qrparts.MixedMessages(
                    f"{name}: QR codes of more than one object ({exc}); show one at a time"
                ) from None
            except qrparts.ConflictingPart:
                # kept as another copy of its part: the one that checks out wins
                have, need = col.progress
            except qrparts.BadPart as exc:
                # a damaged or stray frame in view must not end a scan the others can finish
                bad = bad or exc
                continue
            if progress is not None:
                progress(have, need)
        if col.complete:
            return col.message()
    have, need = col.progress
    if need == 0 and bad is not None:
        raise bad
    if need == 0:
        raise Incomplete(f"no QR code found in {seen} image(s)")
    try:  # every part is there, none of their copies hashes to the id: say so
        col.message()  # (progress then counts one short: the forged part lacks its genuine)
    except Incomplete:
        pass
    raise Incomplete(
        f"{have} of {need} parts after {seen} image(s); missing data parts {col.missing()}"
    )


def _opened(cap: cv2.VideoCapture, what: str, why: str = "") -> cv2.VideoCapture:
    if not cap.isOpened():
        cap.release()
        raise OSError(f"cannot open {what}" + (f": {why}" if why else ""))
    return cap


def _video_file(path: str | os.PathLike) -> None:
    """OSError saying why `path` is no video file to open, before OpenCV tries it (its only
    answer is "not opened"): missing, a folder, a FIFO or device (opening one could block),
    empty, or unreadable."""
    from hubi.objects import open_regular

    what = f"video {path}"
    try:
        with open_regular(path) as f:
            empty = not f.read(1)
    except FileNotFoundError:
        raise FileNotFoundError(f"cannot open {what}: no such file") from None
    except ValueError as exc:  # "PATH: a folder, not a file to read"
        raise OSError(f"cannot open {what}: {str(exc).removeprefix(f'{path}: ')}") from None
    except OSError as exc:
        raise OSError(f"cannot open {what}: {exc.strerror or exc}") from None
    if empty:
        raise OSError(f"cannot open {what}: empty file, not a video")


def _frames(cap: cv2.VideoCapture, max_frames: int | None, step: int) -> Iterator[np.ndarray]:
    try:
        n = 0
        i = 0
        while max_frames is None or n < max_frames:
            ok, frame = cap.read()
            if not ok or frame is None:
                return
            i += 1
            if (i - 1) % step:
                continue
            n += 1
            yield frame
    finally:
        cap.release()


def frames_from_video(
    path: str | os.PathLike, step: int = 1, max_frames: int | None = None
) -> Iterator[np.ndarray]:
    """BGR frames of a video file (every step-th frame), released when the iterator ends.

    Raises FileNotFoundError / OSError at once, saying why, if the file is missing, is no
    regular file, is empty, or holds nothing OpenCV reads as a video.
    """
    _video_file(path)
    cap = _opened(
        cv2.VideoCapture(str(path)),
        f"video {path}",
        "not a video OpenCV can read (a damaged file, or a format none of its"
        f" backends ({', '.join(_video_backends())}) decodes)",
    )
    size = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) * int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if size > _pixel_cap():  # each frame would be decoded whole, as an image is
        cap.release()
        raise ValueError(_too_large(f"video {path}", "frames"))
    return _frames(cap, max_frames, max(1, step))


def _video_backends() -> list[str]:
    from cv2 import videoio_registry as reg

    return [reg.getBackendName(b) for b in reg.getStreamBackends()]


def frames_from_camera(
    index: int = 0,
    max_frames: int | None = None,
    width: int | None = None,
    height: int | None = None,
) -> Iterator[np.ndarray]:
    """BGR frames from camera `index` (OpenCV VideoCapture) until max_frames or a read fails.

    Raises OSError at once if the camera cannot be opened. For a live scan:
    collect(frames_from_camera(0), thorough=False, progress=...).
    """
    cap = _opened(cv2.VideoCapture(index), f"camera {index}")
    if width:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
    if height:
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
    return _frames(cap, max_frames, 1)


def check_png_target(path: str | os.PathLike) -> Path:
    """`path` if a PNG may be written there (files.check_write_target: a device or FIFO there
    would be replaced, not written to), else ValueError naming it: checked before a request is
    signed. A folder is left to the rename, which fails on it (IsADirectoryError)."""
    try:
        return check_write_target(path)
    except OSError:
        raise ValueError(f"{path} is not a regular file: give a file name for the PNG") from None


def render_png(
    data: bytes, path: str | os.PathLike, scale: int = 6, level: str = "M", border: int = 4
) -> Path:
    """Render data as one byte-mode QR code (no ECI header) into a PNG; return the path.

    level is exact (segno's error-level boost is off); data beyond version 40 raises
    segno's DataOverflowError. zxing-cpp decodes ``Barcode.bytes`` back to exactly data.
    """
    out = check_png_target(path)
    qr = segno.make_qr(bytes(data), error=level.lower(), mode="byte", boost_error=False)
    buf = io.BytesIO()
    qr.save(buf, kind="png", scale=scale, border=border)
    write_atomic(out, buf.getvalue())  # a process killed while writing left a PNG cut short
    return out


def render_frames(
    message: bytes,
    directory: str | os.PathLike,
    screen_px: int | tuple[int, int] = 240,
    level: str = "M",
    scale: int = 4,
) -> list[Path]:
    """Render what a token with this screen shows for message: one PNG per frame, drawn with
    the token's own encoder (hubi_core.qr) and plan (qrparts.plan): a single QR or its parts.
    """
    from hubi_core import png, qr

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    plan, payloads = qrparts.frames(message, screen_px, level)
    out = []
    for i, payload in enumerate(payloads):
        code = qr.encode(payload, level, version=plan.version)
        side = (code.size + 8) * scale
        p = directory / f"frame-{i:03d}.png"
        with open(p, "wb") as f:
            png.write(f, side, side, qr.bitmap_rows(code, scale), png.GREY1)
        out.append(p)
    return out
