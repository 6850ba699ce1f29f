#!/usr/bin/env python3
"""Seeded generator of camera-like photos of note QR codes shown on a token's screen.

Every image starts from a real, signed note and the frames the token firmware would show for
it: ``hubi_core.qrparts.frames`` plans single QR or animated parts for the screen, and the
frames are drawn with the firmware's own encoder and PNG writer (``hubi_core.qr``,
``hubi_core.png``). Each frame is then "photographed":

* the screen (backlit: dark modules are not black) sits in a dark bezel on a textured table;
* scale: the code lands at 2.8-6.5 camera pixels per module;
* rotation up to 30 degrees either way; perspective (corners jittered up to 10 %);
* Gaussian or motion blur, sensor noise, low contrast, a glare spot, JPEG compression;
* animated notes: the camera sees the loop in shuffled order, each frame two or three
  times (about two turns of the loop), one frame never, and a thumb partially covers a
  quarter of the captures.

The same seed gives the same images. Used by tests/test_scan_robustness.py at test time (the
images are not stored); run it by hand to look at the images:

    python tools/gen_camera_images.py --seed 7 --notes 20 --out /tmp/cam
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "host", ROOT / "shared"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from hubi import kmc  # noqa: E402
from hubi_core import codec, png, qr, qrparts  # noqa: E402

T0 = 1_760_000_000
CAMERA = (640, 480)  # width, height of a VGA camera frame
M_LO = 2.8  # fewest camera pixels per QR module
SEEN = (2, 3, 3)  # how often the camera catches each frame of an animated loop
OCCLUDED = 0.25  # share of animated captures with a finger over part of the code
PURPOSES = [
    None,
    "coffee",
    "coffee+cake!",
    "bus fare",
    "groceries 2x milk, bread",
    "rent share October",
    "lunch set B with tea",
    "books: 3 titles (receipt #20931)",
]


@dataclass
class Capture:
    """One camera image and what it shows."""

    image: np.ndarray  # BGR uint8, JPEG-compressed and decoded back
    frame: int  # index of the token frame photographed
    effects: dict[str, Any]


@dataclass
class Case:
    """One note and the camera images taken of it."""

    index: int
    note: bytes
    animated: bool
    frames: int  # frames the token shows (1 for a single QR)
    screen_px: int
    plan: str
    captures: list[Capture] = field(default_factory=list)
    dropped: int | None = None  # token frame the camera never saw

    def meta(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "note_bytes": len(self.note),
            "animated": self.animated,
            "frames": self.frames,
            "screen_px": self.screen_px,
            "plan": self.plan,
            "dropped": self.dropped,
            "captures": [{"frame": c.frame, **c.effects} for c in self.captures],
        }


# ------------------------------------------------------------------------------- the notes
class Payers:
    """A deterministic bank world that signs real notes."""

    def __init__(self, seed: int) -> None:
        kmcs = {b: kmc.Kmc.create(b, seed=f"camera-{seed}-{b}".encode()) for b in ("BKA", "BKB")}
        _cons, banks = kmc.make_consortium(
            "camera", kmcs, time=T0, separating={"BKA": 1001, "BKB": 1002}
        )
        self.accounts = []
        for i, acct in enumerate(("BKA-000000000042", "BKB-7731", "BKA-shop.counter_12")):
            bank = acct.split("-")[0]
            priv, tpl = kmc.issue_account(kmcs[bank], banks[bank], acct, i + 1, T0)
            self.accounts.append((priv, tpl))

    def note(self, rng: random.Random, serial: int) -> bytes:
        """A note with a random payer, payee, amount and purpose (so sizes vary)."""
        priv, tpl = rng.choice(self.accounts)
        payee = rng.choice(["BKB-000000000007", "BKA-000000000100", "BKB-cafe.main"])
        amount = rng.choice([1, 99, 1250, 4_999, 123_456, 10_000_000, rng.randrange(1, 10**9)])
        n = codec.make_note(tpl, serial, T0 + serial, amount, payee, rng.choice(PURPOSES))
        return codec.encode(codec.sign(n, priv))


# ------------------------------------------------------------------------ drawing the screen
def token_frame(payload: bytes, plan: qrparts.Plan) -> np.ndarray:
    """The frame as the firmware draws it: its QR encoder, 1-bit PNG rows, decoded to grey."""
    code = qr.encode(payload, plan.level, version=plan.version)
    side = (code.size + 8) * plan.scale
    buf = io.BytesIO()
    png.write(buf, side, side, qr.bitmap_rows(code, plan.scale), png.GREY1)
    img = cv2.imdecode(np.frombuffer(buf.getvalue(), np.uint8), cv2.IMREAD_GRAYSCALE)
    assert img is not None and img.shape == (side, side)
    return img


def _device(frame: np.ndarray, screen_px: int, rng: random.Random) -> tuple[np.ndarray, float]:
    """Screen (backlit, not pure black/white) in a bezel; returns (image, bezel px)."""
    dark = rng.uniform(8, 45)
    light = rng.uniform(200, 250)
    screen = np.full((screen_px, screen_px), light, np.float32)
    s = frame.shape[0]
    off = (screen_px - s) // 2
    screen[off : off + s, off : off + s] = np.where(frame > 127, light, dark)
    bezel = int(screen_px * rng.uniform(0.06, 0.16))
    body = rng.uniform(25, 70)
    dev = np.full((screen_px + 2 * bezel,) * 2, body, np.float32)
    dev[bezel : bezel + screen_px, bezel : bezel + screen_px] = screen
    return dev, float(bezel + off)


def _background(rng: random.Random, nprng: np.random.Generator) -> np.ndarray:
    w, h = CAMERA
    base = rng.uniform(70, 190)
    low = nprng.normal(base, rng.uniform(10, 35), (h // 40 + 2, w // 40 + 2)).astype(np.float32)
    return cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)


def photograph(
    frame: np.ndarray,
    modules: int,
    screen_px: int,
    rng: random.Random,
    occlude: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """One camera image of a token frame; returns (BGR image, effects applied)."""
    nprng = np.random.default_rng(rng.randrange(1 << 32))
    w, h = CAMERA
    dev, qr_off = _device(frame, screen_px, rng)
    side_px = frame.shape[0]
    per_module_src = side_px / (modules + 8)
    angle = rng.uniform(-30, 30)
    rad = math.radians(angle)
    # scale so the code gets 2.6-6.5 camera px per module, and the device stays in the frame
    fit = 0.92 * min(w, h) / (dev.shape[0] * (abs(math.cos(rad)) + abs(math.sin(rad))) * 1.1)
    m_hi = min(6.5, fit * per_module_src)
    m = rng.uniform(M_LO, max(M_LO, m_hi))
    k = m / per_module_src
    persp = rng.uniform(0.0, 0.10)
    dside = dev.shape[0]
    src = np.float32([[0, 0], [dside, 0], [dside, dside], [0, dside]])
    c = dside / 2
    dst = []
    for x, y in src:
        dx, dy = (x - c) * k, (y - c) * k
        rx = dx * math.cos(rad) - dy * math.sin(rad)
        ry = dx * math.sin(rad) + dy * math.cos(rad)
        jx = rng.uniform(-persp, persp) * dside * k
        jy = rng.uniform(-persp, persp) * dside * k
        dst.append([rx + jx, ry + jy])
    dst_a = np.float32(dst)
    span = dst_a.max(axis=0) - dst_a.min(axis=0)
    cx = rng.uniform(span[0] / 2 + 4, max(span[0] / 2 + 5, w - span[0] / 2 - 4))
    cy = rng.uniform(span[1] / 2 + 4, max(span[1] / 2 + 5, h - span[1] / 2 - 4))
    dst_a = dst_a - (dst_a.min(axis=0) + span / 2) + np.float32([cx, cy])
    hmat = cv2.getPerspectiveTransform(src, dst_a)
    img = _background(rng, nprng)
    warped = cv2.warpPerspective(dev, hmat, (w, h), flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(np.ones_like(dev), hmat, (w, h), flags=cv2.INTER_LINEAR)
    img += (warped - img) * mask
    effects: dict[str, Any] = {
        "px_per_module": round(m, 2),
        "angle": round(angle, 1),
        "perspective": round(persp, 3),
    }
    # where the code is, in camera coordinates
    q0, q1 = qr_off, qr_off + side_px
    code_quad = cv2.perspectiveTransform(
        np.float32([[[q0, q0], [q1, q0], [q1, q1], [q0, q1]]]), hmat
    )[0]
    code_c = code_quad.mean(axis=0)
    code_side = float(np.linalg.norm(code_quad[1] - code_quad[0]))
    if occlude:  # a finger over part of the code, coming in from one side
        a = rng.uniform(0, 2 * math.pi)
        reach = rng.uniform(0.10, 0.25) * code_side
        tip = code_c + np.float32([math.cos(a), math.sin(a)]) * (code_side / 2 - reach)
        axes = (int(code_side * rng.uniform(0.18, 0.32)), int(code_side))  # a thumb
        far = tip + np.float32([math.cos(a), math.sin(a)]) * axes[1]
        finger = np.zeros((h, w), np.float32)
        cv2.ellipse(
            finger,
            (int(far[0]), int(far[1])),
            axes,
            math.degrees(a) + 90,
            0,
            360,
            1.0,
            -1,
        )
        finger = cv2.GaussianBlur(finger, (0, 0), 3)
        img += (np.float32(rng.uniform(110, 180)) - img) * finger
        effects["occluded"] = round(reach / code_side, 2)
    if rng.random() < 0.35:  # glare spot on the screen
        r = code_side * rng.uniform(0.06, 0.18)
        gx, gy = code_c + nprng.uniform(-0.35, 0.35, 2).astype(np.float32) * code_side
        strength = rng.uniform(50, 140)
        x0, x1 = max(0, int(gx - 4 * r)), min(w, int(gx + 4 * r) + 1)
        y0, y1 = max(0, int(gy - 4 * r)), min(h, int(gy + 4 * r) + 1)
        if x1 > x0 and y1 > y0:
            yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            img[y0:y1, x0:x1] += strength * np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * r * r))
        effects["glare"] = round(strength)
    if rng.random() < 0.35:  # low contrast (dim screen, bright room)
        lo, hi = rng.uniform(40, 90), rng.uniform(140, 190)
        img = cv2.convertScaleAbs(img, alpha=(hi - lo) / 255.0, beta=lo).astype(np.float32)
        effects["contrast"] = round(hi - lo)
    if m >= 3.2 and rng.random() < 0.2:  # motion blur (hand shake), under a module long
        n = 5 if m >= 5.5 else 3
        kern = np.zeros((n, n), np.float32)
        kern[n // 2, :] = 1.0 / n
        rot = cv2.getRotationMatrix2D((n / 2 - 0.5, n / 2 - 0.5), rng.uniform(0, 180), 1.0)
        kern = cv2.warpAffine(kern, rot, (n, n))
        kern /= max(kern.sum(), 1e-6)
        img = cv2.filter2D(img, -1, kern)
        effects["motion_blur"] = n
    sigma = rng.uniform(0.3, min(1.3, 0.22 * m + 0.15))  # focus
    img = cv2.GaussianBlur(img, (0, 0), sigma)
    effects["blur"] = round(sigma, 2)
    noise = rng.uniform(1.5, 9.0)
    grain = np.empty(img.shape, np.float32)
    cv2.randn(grain, 0.0, noise)
    img = img + grain
    effects["noise"] = round(noise, 1)
    grey = cv2.convertScaleAbs(img)  # saturating to uint8
    bgr = cv2.merge(  # a colour camera's white balance is never quite grey
        [
            cv2.convertScaleAbs(grey, alpha=rng.uniform(0.85, 1.1)),
            grey,
            cv2.convertScaleAbs(grey, alpha=rng.uniform(0.85, 1.1)),
        ]
    )
    quality = rng.randrange(70, 96)
    ok, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    effects["jpeg"] = quality
    return cv2.imdecode(jpg, cv2.IMREAD_COLOR), effects


# ---------------------------------------------------------------------------------- cases
def generate(
    seed: int,
    notes: int,
    animated_share: float = 0.5,
    make_note: Callable[[random.Random, int], bytes] | None = None,
) -> Iterator[Case]:
    """Yield `notes` cases (about animated_share of them animated), reproducibly from seed.

    make_note(rng, serial) -> note bytes replaces the built-in payers (e.g. notes signed for
    a test's own merchant, so the images can go through `hubi merchant scan`).
    """
    rng = random.Random(seed)
    if make_note is None:
        make_note = Payers(seed).note
    for i in range(notes):
        note = make_note(rng, i + 1)
        animated = rng.random() < animated_share
        if animated:
            screen_px = rng.choice([240, 240, 200])  # 240x240 / 320x240 TFT, small OLED
        else:
            screen_px = rng.choice([320, 360, 400, 480])  # bigger screen or the host's display
        plan, payloads = qrparts.frames(note, screen_px)
        if animated and plan.single:  # a short note fits one QR even on the small screen
            plan, payloads = qrparts.frames(note, screen_px, max_frame_version=4)
            if plan.single:
                animated = False
        case = Case(i, note, not plan.single, plan.frames, screen_px, repr(plan))
        frames = [token_frame(p, plan) for p in payloads]
        if plan.single:
            case.captures.append(_capture(frames[0], 0, plan, screen_px, rng, False))
        else:
            n = len(frames)
            # the camera watches the loop about twice: each frame seen two or three times, in
            # shuffled order, and one frame never
            dropped = rng.randrange(n)
            order = [j for j in range(n) if j != dropped for _ in range(rng.choice(SEEN))]
            rng.shuffle(order)
            case.dropped = dropped
            for j in order:
                occlude = rng.random() < OCCLUDED
                case.captures.append(_capture(frames[j], j, plan, screen_px, rng, occlude))
        yield case


def _capture(
    frame: np.ndarray,
    index: int,
    plan: qrparts.Plan,
    screen_px: int,
    rng: random.Random,
    occlude: bool,
) -> Capture:
    image, effects = photograph(frame, qr.size_of(plan.version), screen_px, rng, occlude)
    return Capture(image, index, effects)


def write_case(case: Case, out: Path) -> list[Path]:
    """Save one case as out/note-NNNN/{note.bin, cap-NNN.jpg, case.json}; return the images."""
    d = out / f"note-{case.index:04d}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "note.bin").write_bytes(case.note)
    paths = []
    for j, cap in enumerate(case.captures):
        p = d / f"cap-{j:03d}.jpg"
        cv2.imwrite(str(p), cap.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        paths.append(p)
    (d / "case.json").write_text(json.dumps(case.meta(), indent=1))
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--notes", type=int, default=20)
    ap.add_argument("--animated-share", type=float, default=0.5)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    total = 0
    for case in generate(args.seed, args.notes, args.animated_share):
        total += len(write_case(case, args.out))
    print(f"{args.notes} notes, {total} images in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
