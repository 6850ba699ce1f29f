"""Reading notes from images, videos and cameras: one or many objects, single or animated QR.

zxing-cpp (``hubi.qrscan.decode_image``) finds the QR payloads in each frame; a ``Collector``
(``hubi_core.qrparts``) per message reassembles animated notes from parts in any order, with
repeated frames and lost frames covered by parity. Several notes can be in one batch of images:
payloads are grouped by message id, and each object is handed on as soon as it is whole.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubi import objects, qrscan
from hubi_core import qrparts
from hubi_core.qrparts import Collector, PartError


@dataclass
class Progress:
    """What a scan has seen so far (passed to the progress callback after every frame)."""

    frames: int = 0  # images / video frames looked at
    codes: int = 0  # QR payloads decoded
    bad_frames: int = 0  # payloads that were not usable parts
    foreign: int = 0  # frame payloads passed over as not hubi (a web address, a Wi-Fi code)
    have: int = 0  # parts of the message being collected (present or recoverable)
    need: int = 0  # data parts of that message (0: nothing started)
    done: int = 0  # objects completed

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


ProgressCb = Callable[[Progress], Any]


class MultiCollector:
    """Reassemble every object whose QR payloads show up, grouped by message id."""

    # a long camera run sees many message ids (other screens, a note abandoned half-way): keep
    # the most recently seen ones, dropping the least recently seen incomplete one
    MAX_MESSAGES = 64
    MAX_ERRORS = 100  # the most recent error texts kept (error_count counts them all)

    def __init__(self) -> None:
        self.collectors: dict[bytes, Collector] = {}  # least recently seen first
        self.done: set[bytes] = set()
        self.last: bytes | None = None  # message id of the last payload
        self.errors: deque[str] = deque(maxlen=self.MAX_ERRORS)
        self.error_count = 0
        self.dropped = 0  # incomplete messages dropped to make room

    def _error(self, text: str) -> None:
        self.errors.append(text)
        self.error_count += 1

    def add(self, payload: bytes) -> bytes | None:
        """Feed one QR payload; returns an object when this payload completes one."""
        payload = bytes(payload)
        if not payload:
            return None
        try:
            mid = (
                qrparts.parse(payload).mid
                if qrparts.is_part(payload)
                else qrparts.message_id(payload)
            )
        except PartError as exc:
            self._error(str(exc))
            return None
        self.last = mid
        if mid in self.done:
            return None  # a repeat of a frame of an object already handed on
        col = self.collectors.pop(mid, None)
        if col is None:
            col = Collector()
            while len(self.collectors) >= self.MAX_MESSAGES:
                del self.collectors[next(iter(self.collectors))]
                self.dropped += 1
        self.collectors[mid] = col  # now the most recently seen
        try:
            col.add(payload)
        except PartError as exc:  # a frame contradicting earlier ones: counted, and kept
            # by the collector (it may be the genuine copy after a forged one), so it can
            # complete the object: the last file of a batch must not be passed over
            self._error(str(exc))
        if not col.complete:  # complete: some choice of the copies kept hashes to the id
            return None
        message = col.message()
        del self.collectors[mid]
        self.done.add(mid)
        return message

    def progress(self) -> tuple[int, int]:
        """(have, need) of the message most recently seen (0, 0 when none is in progress)."""
        if self.last is None or self.last in self.done:
            return (0, 0)
        col = self.collectors.get(self.last)
        return col.progress if col is not None else (0, 0)

    def incomplete(self) -> list[dict[str, Any]]:
        out = []
        for mid, col in self.collectors.items():
            have, need = col.progress
            out.append({"message": mid.hex(), "have": have, "need": need, "missing": col.missing()})
        return out


Source = str | os.PathLike | Any


def scan_objects(
    sources: Iterable[Source],
    progress: ProgressCb | None = None,
    thorough: bool = True,
    limit: int | None = None,
    collector: MultiCollector | None = None,
    on_frame_error: Callable[[Any, Exception], Any] | None = None,
) -> Iterator[bytes]:
    """Yield each object whose QR frames appear in sources (paths, arrays, video frames).

    A frame (anything but a path: camera and video frames) may show other QR codes, a web
    address or a Wi-Fi code at a counter: their payloads are passed over, each said once to
    on_frame_error as a ForeignCode, and the scan goes on until a hubi object is read. An image
    file named on its own is handed on whatever it holds (its refusal names that file).

    limit: stop after this many objects (a live camera: 1). thorough=False skips zxing's
    OpenCV fallbacks (live frames come fast; a later frame will do). With thorough=True and
    a list of sources (files), a quick pass reads every image first and the slow fallbacks
    run only on the images it could not read, and only while some object is still incomplete
    (or nothing was found at all): an animated note whose other frames cover a hard one costs
    no more than the easy frames.
    """
    col = collector if collector is not None else MultiCollector()
    p = Progress()
    found = 0
    two_pass = thorough and isinstance(sources, (list, tuple))
    hard: list[Any] = []
    said: set[bytes] = set()

    def foreign(src: Any, payloads: list[bytes]) -> list[bytes]:
        if isinstance(src, str | os.PathLike):
            return payloads
        keep = [x for x in payloads if not is_foreign(x)]
        for x in payloads:
            if is_foreign(x):
                p.foreign += 1
                if x not in said and len(said) < MultiCollector.MAX_MESSAGES:
                    said.add(x)
                    if on_frame_error is not None:
                        on_frame_error(src, ForeignCode(x))
        return keep

    def read(src: Any, slow: bool, count: bool) -> list[bytes]:
        if count:
            p.frames += 1
        try:
            saved = _object_file(src)
            if saved is not None:  # a note saved as a file (`hubi token pay --out`), not a QR
                return [saved]
            payloads = qrscan.decode_image(src, thorough=slow)
        except (OSError, ValueError) as exc:
            if on_frame_error is None:
                raise
            on_frame_error(src, exc)
            return []
        payloads = foreign(src, payloads)
        if not payloads and two_pass and not slow:
            hard.append(src)
        return payloads

    def feed(payloads: list[bytes]) -> list[bytes]:
        p.codes += len(payloads)
        completed = [m for m in (col.add(x) for x in payloads) if m is not None]
        p.bad_frames = col.error_count
        p.have, p.need = col.progress()
        p.done += len(completed)
        if progress is not None:
            progress(p)
        return completed

    for src in sources:
        for msg in feed(read(src, thorough and not two_pass, True)):
            yield msg
            found += 1
            if limit is not None and found >= limit:
                return
    if two_pass and hard and (col.collectors or found == 0):
        for src in hard:
            for msg in feed(read(src, True, False)):
                yield msg
                found += 1
                if limit is not None and found >= limit:
                    return
            if not col.collectors and found:
                return


class ForeignCode(ValueError):
    """A QR code in a frame that is not hubi's (passed over; the scan goes on)."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        super().__init__(f"not a hubi code, passed over: {shown(payload)}")


def is_foreign(payload: bytes) -> bool:
    """True for a payload that is plainly neither a hubi object nor a part of one: a part starts
    with qrparts.MAGIC and an object with its suite byte (a small binary number), while text
    (a web address, "WIFI:...") starts with a printable character or a line break."""
    if not payload or qrparts.is_part(payload):
        return False
    return not (1 <= payload[0] < 0x20) or payload[0] in b"\t\n\r"


def shown(payload: bytes, limit: int = 40) -> str:
    """A foreign payload as a short printable quote (anything outside printable ASCII escaped:
    a code's bytes must not drive the terminal)."""
    head = payload[:limit]
    text = "".join(chr(b) if 32 <= b < 127 else f"\\x{b:02x}" for b in head)
    return f'"{text}"' + ("..." if len(payload) > limit else "")


def _object_file(src: Any) -> bytes | None:
    """The object in a file that holds one as bytes or hex text (it starts with the suite byte,
    0x01, as no image does), or None: an image, or anything else, is read as an image."""
    if not isinstance(src, str | os.PathLike):
        return None
    path = Path(src)
    with objects.open_regular(path) as f:  # a FIFO given as an image must not hang the scan
        head = f.read(2)
    if head[:1] != b"\x01" and head.lower() != b"01":
        return None
    data = objects.read_object_bytes(path)
    return data if data[:1] == b"\x01" else None


def image_paths(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand directories into their image files (sorted): those named as a format OpenCV
    reads (qrscan.IMAGE_SUFFIXES: TIFF, JPEG 2000, PNM... too); keep files as given."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in qrscan.IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out
