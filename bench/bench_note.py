"""Benchmark: sign and verify one payment note, on the MicroPython unix port and on CPython.

A note = 4 payer signatures (amount, purpose, payee, lsum) over canonical field messages, plus the
linear sum and the encoding. Verification = payer-key recovery against the bank's seal (first
time a template is seen), CPK key derivation from the bank's public matrix, 4 field signatures.

    .venv/bin/python -m bench.bench_note [--runs N] [--json FILE]

Prints JSON, then a table. Nothing here is asserted in tests (shared machines are noisy).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import count, report  # noqa: E402
from bench.mpy import MPY_MED, compile_mpy, min_heap_kb, result_lines, run_mpy  # noqa: E402
from hubi_core import codec, qr, suite, verify  # noqa: E402
from tests.world import make_world  # noqa: E402

PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"

# Signing imports only what a token's signing step needs (codec + suite); verification loads the
# verifier, CPK and consortium modules (a token does that for a Request, in its own step).
MPY_SIGN_SETUP = r"""
import gc, json, time
from hubi_core import codec
with open(%(spec)r) as f:
    spec = json.load(f)
priv = int(spec["priv"], 16)
tpl = codec.decode(bytes.fromhex(spec["template"]), codec.TEMPLATE)
note_bytes = bytes.fromhex(spec["note"])
spec = None
def sign_note():
    n = codec.make_note(tpl, 7, 1760000107, 123456, %(payee)r, "coffee+cake!")
    codec.sign(n, priv)
    return codec.encode(n)
"""

MPY_VERIFY_SETUP = r"""
import gc, json, time
from hubi_core import codec, cpk, verify
from hubi_core.consortium import Consortium
with open(%(spec)r) as f:
    spec = json.load(f)
note_bytes = bytes.fromhex(spec["note"])
cons = Consortium.from_json(spec["consortium"])
matrices = {b: cpk.PublicMatrix.open(p) for b, p in spec["matrices"].items()}
spec = None
"""


MPY_SIGN_TIMING = (
    MPY_SIGN_SETUP
    + MPY_MED
    + r"""
assert sign_note() == note_bytes
print("RESULT", "sign_note", med(sign_note))
"""
)

MPY_VERIFY_TIMING = (
    MPY_VERIFY_SETUP
    + MPY_MED
    + r"""
trust = verify.Trust(cons, matrices)
assert verify.verify_note(note_bytes, trust, None).ok
print("RESULT", "verify_first", med(lambda: verify.verify_note(note_bytes, verify.Trust(cons, matrices), None)))
print("RESULT", "verify_cached", med(lambda: verify.verify_note(note_bytes, trust, None)))
"""
)

MPY_SIGN_ONLY = MPY_SIGN_SETUP + "assert sign_note() == note_bytes\n"
MPY_VERIFY_ONLY = (
    MPY_VERIFY_SETUP
    + "assert verify.verify_note(note_bytes, verify.Trust(cons, matrices), None).ok\n"
)
VERIFY_HEAP = "256k"


def build(tmp: Path) -> tuple[Path, bytes]:
    w = make_world()
    payer = w.open_account(PAYER)
    w.open_account(PAYEE)
    note = codec.make_note(payer.template, 7, 1760000107, 123456, PAYEE, "coffee+cake!")
    codec.sign(note, payer.private)
    note_bytes = codec.encode(note)
    paths = {}
    for b, k in w.kmcs.items():
        p = tmp / f"{b}.pub"
        p.write_bytes(k.public.to_bytes())
        paths[b] = str(p)
    spec = {
        "priv": hex(payer.private),
        "template": codec.encode(payer.template).hex(),
        "note": note_bytes.hex(),
        "consortium": w.consortium.to_json(),
        "matrices": paths,
    }
    spec_path = tmp / "spec.json"
    spec_path.write_text(json.dumps(spec))
    return spec_path, note_bytes


def med_ms(fn, runs: int) -> tuple[float, float]:
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1000)
    return statistics.median(ts), min(ts)


def cpython(spec_path: Path, note_bytes: bytes, runs: int) -> dict:
    spec = json.loads(spec_path.read_text())
    from hubi_core import cpk
    from hubi_core.consortium import Consortium

    tpl = codec.decode(bytes.fromhex(spec["template"]), codec.TEMPLATE)
    priv = int(spec["priv"], 16)
    cons = Consortium.from_json(spec["consortium"])
    matrices = {
        b: cpk.PublicMatrix.from_bytes(Path(p).read_bytes()) for b, p in spec["matrices"].items()
    }

    def sign_note() -> bytes:
        n = codec.make_note(tpl, 7, 1760000107, 123456, PAYEE, "coffee+cake!")
        codec.sign(n, priv)
        return codec.encode(n)

    out = {}
    for backend in ("openssl", "pure"):
        suite.use_backend(backend)
        assert sign_note() == note_bytes
        trust = verify.Trust(cons, matrices)
        verify.verify_note(note_bytes, trust, None)
        out[backend] = {
            "sign_note": med_ms(sign_note, runs),
            "verify_first": med_ms(
                lambda: verify.verify_note(note_bytes, verify.Trust(cons, matrices), None), runs
            ),
            "verify_cached": med_ms(lambda t=trust: verify.verify_note(note_bytes, t, None), runs),
        }
    suite.use_backend("openssl")
    return out


def micropython(spec_path: Path, runs: int, heap_search: bool) -> dict:
    """Timings in a 96 KB heap, from .mpy files (what a firmware build ships: compiling the
    sources on the device would take more heap than the whole payment flow)."""
    out: dict = {}
    with tempfile.TemporaryDirectory() as d:
        mpy_path = compile_mpy(Path(d))
        fmt = {"spec": str(spec_path), "payee": PAYEE, "runs": runs}
        for code, heap in ((MPY_SIGN_TIMING % fmt, "96k"), (MPY_VERIFY_TIMING % fmt, VERIFY_HEAP)):
            for name, (a, b) in result_lines(run_mpy(code, mpy_path, heap, timeout=900)):
                out[name] = (float(a), float(b))
        if heap_search:
            for name, body in (("sign", MPY_SIGN_ONLY), ("verify", MPY_VERIFY_ONLY)):
                src = body % {"spec": str(spec_path), "payee": PAYEE}
                out[f"min_heap_kb_{name}_mpy"] = min_heap_kb(src, mpy_path, lo=8, margin=8)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=count, default=21)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-heap-search", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        spec_path, note_bytes = build(Path(d))
        result = {
            "note_bytes": len(note_bytes),
            "qr_version": {lvl: qr.min_version(len(note_bytes), lvl) for lvl in ("L", "M")},
            "micropython": micropython(spec_path, args.runs, not args.no_heap_search),
            "cpython": cpython(spec_path, note_bytes, args.runs),
        }
    report(result, args.json, indent=2)
    mp = result["micropython"]
    print(
        f"\nnote: {result['note_bytes']} bytes, QR version L {result['qr_version']['L']}, M {result['qr_version']['M']}"
    )
    print(f"{'ms, median (min)':<22}{'MicroPython':>18}{'CPython OpenSSL':>18}{'CPython pure':>18}")
    for k in ("sign_note", "verify_first", "verify_cached"):
        cells = [mp[k], result["cpython"]["openssl"][k], result["cpython"]["pure"][k]]
        print(f"{k:<22}" + "".join(f"{a:>10.2f} ({b:.2f})" for a, b in cells))
    for k in ("min_heap_kb_sign_mpy", "min_heap_kb_verify_mpy"):
        if k in mp:
            print(f"{k}: {mp[k]} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
