"""Benchmark crypto suite 1 on the MicroPython unix port and on CPython.

    .venv/bin/python bench/bench_suite.py              # table + JSON on stdout
    .venv/bin/python bench/bench_suite.py --runs 51 --json bench/out/suite.json

MicroPython (source modules from shared/, -X heapsize=96k): median (and min) wall time of
  sign4   suite.sign_batch(priv, 4 messages)   -- one payment note
  sign1   suite.sign(priv, msg)
  verify  suite.verify(pub65, msg, sig)
  ecdh    suite.ecdh(priv, pub65)
  pubkey  suite.public_key(priv)
  seal / open   ecies with a 16-byte plaintext
plus CPU time per op (sign4, verify, ecdh) from os.wait4 of whole runs, which other jobs on a
shared machine disturb much less than wall time, and heap figures:
  resident      gc.mem_alloc() after importing suite/ecies and one warm-up round
  alloc/sign4   bytes allocated (mostly garbage) by one sign_batch (gc disabled, 4 MB heap)
  min heap      smallest -X heapsize (1 KB steps) from which "import suite; sign_batch(4)" and the
                full workload (sign4 + verify + ecdh + ecies) succeed, from .py source and from
                .mpy files made by mpy-cross -march=x64 (what a firmware build ships)
CPython: the same timings for the 'pure' and 'openssl' back ends.
Timings are medians of --runs repetitions; machines are noisy, so nothing here is asserted.
"""

from __future__ import annotations

import argparse
import os
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
from bench.mpy import MPY_MED, compile_mpy, exe, min_heap_kb, result_lines, run_mpy  # noqa: E402
from hubi_core import ecies, suite  # noqa: E402

PRIV = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721  # RFC 6979 test key
MSGS = [b"hubi note field %d: 0123456789abcdef0123456789abcdef" % i for i in range(4)]
MODULES = ["__init__", "ct", "ec", "ec_ct", "ec_vt", "suite", "aesgcm", "ecies"]


MPY_TIMING = (
    r"""
import gc, time
from hubi_core import suite, ecies
priv = %(priv)d
msgs = %(msgs)r
pub = suite.public_key(priv)
sig = suite.sign(priv, msgs[0])
blob = ecies.seal(pub, b"0123456789abcdef")
"""
    + MPY_MED
    + r"""
assert suite.sign_batch(priv, msgs) == [suite.sign(priv, m) for m in msgs]
assert suite.verify(pub, msgs[0], sig)
gc.collect()
resident = gc.mem_alloc()
print("RESULT", "sign4", med(lambda: suite.sign_batch(priv, msgs)))
print("RESULT", "sign1", med(lambda: suite.sign(priv, msgs[0])))
print("RESULT", "verify", med(lambda: suite.verify(pub, msgs[0], sig)))
print("RESULT", "ecdh", med(lambda: suite.ecdh(priv, pub)))
print("RESULT", "pubkey", med(lambda: suite.public_key(priv)))
print("RESULT", "seal", med(lambda: ecies.seal(pub, b"0123456789abcdef")))
print("RESULT", "open", med(lambda: ecies.open_sealed(priv, blob)))
print("RESULT", "resident", resident)
"""
)

# allocation volume: gc disabled, so run in a big heap (it is garbage, not live data)
MPY_ALLOC = r"""
import gc
from hubi_core import suite
msgs = %(msgs)r
suite.sign_batch(%(priv)d, msgs)
gc.collect()
gc.disable()
a0 = gc.mem_alloc()
suite.sign_batch(%(priv)d, msgs)
print("RESULT", "alloc_sign4", gc.mem_alloc() - a0)
"""

WORKLOAD_SIGN = "from hubi_core import suite\nsuite.sign_batch(%d, %r)\n" % (PRIV, MSGS)
WORKLOAD_ALL = WORKLOAD_SIGN + (
    "from hubi_core import ecies\n"
    "p = suite.public_key(%d)\n"
    "assert suite.verify(p, b'm', suite.sign(%d, b'm'))\n"
    "suite.ecdh(%d, p)\n"
    "assert ecies.open_sealed(%d, ecies.seal(p, b'x' * 16)) == b'x' * 16\n"
) % (PRIV, PRIV, PRIV, PRIV)


def mpy_timings(runs: int) -> dict:
    code = MPY_TIMING % {"runs": runs, "priv": PRIV, "msgs": MSGS}
    lines = result_lines(run_mpy(code, SHARED, "96k", timeout=600))
    lines += result_lines(run_mpy(MPY_ALLOC % {"priv": PRIV, "msgs": MSGS}, SHARED, "4m"))
    out = {}
    for key, vals in lines:
        if len(vals) == 2:
            out[key] = float(vals[0])
            out[key + "_min"] = float(vals[1])
        else:
            out[key] = int(vals[0])
    return out


MPY_CPU = r"""
from hubi_core import suite
priv = %(priv)d
msgs = %(msgs)r
pub = suite.public_key(priv)
sig = suite.sign(priv, msgs[0])
ops = {
    "sign4": lambda: suite.sign_batch(priv, msgs),
    "verify": lambda: suite.verify(pub, msgs[0], sig),
    "ecdh": lambda: suite.ecdh(priv, pub),
}
op = ops[%(op)r]
for _ in range(%(n)d):
    op()
"""


def _child_cpu_seconds(code: str, heap: str) -> float:
    """user + system CPU time of one micropython run (os.wait4: immune to waiting for a core)."""
    env = dict(os.environ, MICROPYPATH=str(SHARED))
    proc = subprocess.Popen(
        [exe("micropython"), "-X", "heapsize=" + heap, "-c", code],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tempfile.gettempdir(),
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit("micropython failed: " + proc.stderr.read().decode())
    return usage.ru_utime + usage.ru_stime


def mpy_cpu_ms(op: str, n: int) -> float:
    """CPU milliseconds per op in a 96 KB heap: (run with n ops - run with 0 ops) / n, best of 3.

    Wall-clock medians suffer when other jobs share the cores; process CPU time much less."""
    fill = {"priv": PRIV, "msgs": MSGS, "op": op}
    base = min(_child_cpu_seconds(MPY_CPU % dict(fill, n=0), "96k") for _ in range(3))
    full = min(_child_cpu_seconds(MPY_CPU % dict(fill, n=n), "96k") for _ in range(3))
    return round((full - base) / n * 1000, 3)


def cpython_timings(runs: int) -> dict:
    out = {}
    before = suite.backend()
    pub = suite.public_key(PRIV)
    for backend in ("pure", "openssl"):
        suite.use_backend(backend)
        sig = suite.sign(PRIV, MSGS[0])
        blob = ecies.seal(pub, b"0123456789abcdef")
        cases = {
            "sign4": lambda: suite.sign_batch(PRIV, MSGS),
            "sign1": lambda s=sig: suite.sign(PRIV, MSGS[0]),
            "verify": lambda s=sig: suite.verify(pub, MSGS[0], s),
            "ecdh": lambda: suite.ecdh(PRIV, pub),
            "pubkey": lambda: suite.public_key(PRIV),
            "seal": lambda: ecies.seal(pub, b"0123456789abcdef"),
            "open": lambda b=blob: ecies.open_sealed(PRIV, b),
        }
        res = {}
        for name, fn in cases.items():
            fn()
            ts = []
            for _ in range(runs):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            res[name] = round(statistics.median(ts) * 1000, 3)
            res[name + "_min"] = round(min(ts) * 1000, 3)
        out[backend] = res
    suite.use_backend(before)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="crypto suite 1 benchmark")
    ap.add_argument("--runs", type=count, default=21, help="repetitions per timing (median)")
    ap.add_argument("--json", type=Path, help="also write the JSON here")
    ap.add_argument("--no-heap-search", action="store_true", help="skip the min-heap bisection")
    args = ap.parse_args(argv)

    result = {
        "micropython": {"heap": "96k", "ms": {}, "bytes": {}, "min_heap_kb": {}},
        "cpython_ms": {},
    }
    mp = mpy_timings(args.runs)
    result["micropython"]["bytes"] = {
        "resident_after_warmup": mp.pop("resident"),
        "alloc_per_sign4": mp.pop("alloc_sign4"),
    }
    result["micropython"]["ms"] = mp
    result["micropython"]["cpu_ms"] = {
        op: mpy_cpu_ms(op, n) for op, n in (("sign4", 100), ("verify", 100), ("ecdh", 50))
    }
    if not args.no_heap_search:
        mins = {}
        mins["source_sign4"] = min_heap_kb(WORKLOAD_SIGN, SHARED, lo=8, margin=8)
        mins["source_all"] = min_heap_kb(WORKLOAD_ALL, SHARED, lo=8, margin=8)
        with tempfile.TemporaryDirectory() as tmp:
            path = compile_mpy(Path(tmp), MODULES)
            mins["mpy_sign4"] = min_heap_kb(WORKLOAD_SIGN, path, lo=8, margin=8)
            mins["mpy_all"] = min_heap_kb(WORKLOAD_ALL, path, lo=8, margin=8)
        result["micropython"]["min_heap_kb"] = mins
    result["cpython_ms"] = cpython_timings(args.runs)
    result["runs"] = args.runs
    result["micropython_version"] = (
        subprocess.run(
            [exe("micropython"), "-c", "import sys; print(sys.version)"],
            capture_output=True,
        )
        .stdout.decode()
        .strip()
    )
    result["cpython_version"] = sys.version.split()[0]

    report(result, args.json, indent=2)

    ms = result["micropython"]["ms"]
    cp = result["cpython_ms"]
    print()
    print("median (min) in ms, %d runs each" % args.runs)
    print("%-8s %18s %18s %18s" % ("op", "micropython 96k", "cpython pure", "cpython openssl"))
    for name in ("sign4", "sign1", "verify", "ecdh", "pubkey", "seal", "open"):
        cells = [(ms[name], ms[name + "_min"])]
        cells += [(cp[b][name], cp[b][name + "_min"]) for b in ("pure", "openssl")]
        print("%-8s" % name + "".join("%10.3f (%6.3f)" % c for c in cells))
    cpu = result["micropython"]["cpu_ms"]
    print(
        "micropython CPU time per op (96 KB heap): sign4 %.3f ms, verify %.3f ms, ecdh %.3f ms"
        % (cpu["sign4"], cpu["verify"], cpu["ecdh"])
    )
    b = result["micropython"]["bytes"]
    print("resident heap after warm-up: %d bytes" % b["resident_after_warmup"])
    print("allocated per sign_batch(4): %d bytes" % b["alloc_per_sign4"])
    for key, val in result["micropython"]["min_heap_kb"].items():
        print("min heap %-12s %d KB" % (key, val))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
