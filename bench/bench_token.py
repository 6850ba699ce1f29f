"""Benchmark the token: one payment note on the MicroPython unix port, and the ESP32 projection.

    .venv/bin/python bench/bench_token.py                 # tables on stdout
    .venv/bin/python bench/bench_token.py --json bench/out/token.json --notes 5

What it measures (results and method: bench/token.md):
  timing    the simulator (real firmware, ROMFS-mapped .mpy bundle, the profile's SIM_HEAPS heap) per board
            profile: the firmware's own ticks_ms split of one payment, logged as "timing":
            verify (decode + offline verification of the Request), unlock (PIN KDF + attempt
            counter writes), sign (persist counter, sign 5 fields, encode, keep in history),
            qr (plan + encode every frame + draw the first + the simulator's PNG write),
            qr_encode (the QR encoding alone). request->QR = verify + unlock + sign + qr
            (the person's confirm and PIN typing excluded). Median of --notes payments.
  frames    frames per board for the note (single QR or multi-part loop).
  heap      GC heap in use after boot and after a payment (gc.mem_alloc), and per profile the
            smallest -X heapsize (4 KB steps) at which a payment, provisioning + a payment, and a
            payment + a Receipt + a BalanceNotice complete (tools/token_heap.py minheap).
  projection instructions per note step counted with valgrind --tool=callgrind on the unix port
            (difference of runs with 3 and 1 iterations, so start-up cancels), turned into ESP32
            seconds with the factors documented in bench/token.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "host", ROOT / "shared"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench import count, report  # noqa: E402
from hubi.token import build  # noqa: E402
from hubi.token.harness import TokenWorld  # noqa: E402
from hubi.token.sim import SIM_HEAPS, Simulator  # noqa: E402

PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"
PROFILES = ("m5stack_core", "esp32_st7789_240", "headless")
SCREENS = {"esp32_st7789_240": (240, 240, 3), "m5stack_core": (320, 240, 2)}
# ESP32 (Xtensa LX6, 240 MHz) projection factors, bench/token.md "Projection"
ESP32_HZ = 240e6
F_ISA = 1.3  # Xtensa instructions per x86-64 instruction for the interpreter's C code
F_CPI = 1.6  # cycles per instruction: in-order core, code and .mpy executed from flash cache
F_MPZ = 3.0  # extra for big-integer work: 16-bit mpz digits on 32-bit ports vs 32-bit on x64


def timings(sim: Simulator) -> list[dict[str, int]]:
    out = []
    for ln in sim.tail(10**7).splitlines():
        if ln.startswith("hubi-sim: timing "):
            out.append(json.loads(ln[len("hubi-sim: timing ") :]))
    return out


def bench_profile(world: TokenWorld, profile: str, n: int) -> dict[str, object]:
    state = world.provisioned(PAYER, cap=10**9)
    rows = []
    walls = []
    with world.running(state, profile, settings={"kdf_iterations": 10000}) as (sim, tok):
        boot_used = _heap_used(tok.info(), sim.heapsize)
        for _ in range(n):
            req = world.request(PAYEE, 12345, "coffee+cake!")
            t0 = time.perf_counter()
            if profile == "headless":
                tok.pay(req)
                note = tok.confirm_pay("1234")
            else:
                note = world.pay(sim, tok, req, "1234", wheel=False)
            walls.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.2)
        merged: dict[str, int] = {}
        for t in timings(sim):
            merged.update(t)
            if "sign_ms" in t:
                rows.append(dict(merged))
                merged = {}
        after_used = _heap_used(tok.info(), sim.heapsize)
    keys = ["verify_ms", "unlock_ms", "sign_ms", "qr_ms", "qr_encode_ms"]
    med = {k: statistics.median(r.get(k, 0) for r in rows) for k in keys}
    med["request_to_qr_ms"] = med["verify_ms"] + med["unlock_ms"] + med["sign_ms"] + med["qr_ms"]
    med["host_wall_ms"] = statistics.median(walls)
    return {
        "profile": profile,
        "notes": len(rows),
        "note_bytes": len(note),
        "frames": rows[-1].get("frames", 0),
        "median": med,
        "heap_used_boot": boot_used,
        "heap_used_after_payment": after_used,
    }


def _heap_used(info: dict[str, object], heap: str) -> int | None:
    free = info.get("heap_free")
    if not isinstance(free, int):
        return None
    return _kb(heap) - free


def _kb(spec: str) -> int:
    return int(spec.rstrip("kK")) * 1024


def min_heaps(world: TokenWorld) -> dict[str, dict[str, int | None]]:
    """Smallest -X heapsize (KB, 4 KB steps, bisection: tools/token_heap.py) per profile for:
    payment (a provisioned token boots and pays), provision (a blank token is provisioned, then
    pays), notice (pays, then loads a Receipt and a BalanceNotice), in the real simulator."""
    sys.path.insert(0, str(ROOT / "tools"))
    import token_heap

    return {
        p: {k: token_heap.min_heap(p, k, 48, 320, 4, world) for k in SCENARIOS} for p in PROFILES
    }


SCENARIOS = ("payment", "provision", "notice")


def frames_per_board(nbytes: int) -> dict[str, str]:
    from hubi.token.sim import FIRMWARE

    sys.path.insert(0, str(FIRMWARE))
    from ui.qrview import plan

    out = {}
    for board, (w, h, min_px) in SCREENS.items():
        p = plan(nbytes, w, h, "M", min_px)
        out[board] = repr(p)
    out["headless"] = "no screen: the host shows the note"
    return out


CALLGRIND_SCRIPT = """
import sys
from core.keystore import Keystore
from core.wallet import Wallet
from drivers.fbdisplay import FbDisplay
from hal import Clock, Rng
from hal.storage import FsStorage
from ui.qrview import QrView
step, n, state, req_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
with open(req_path, "rb") as f:
    req = f.read()
st = FsStorage(state)
ks = Keystore(st, Rng(), Clock(), 10000, 1000)
w = Wallet(st, ks, Clock(), {})
w.boot()
pay = w.prepare(req)
priv = ks.unlock("1234")
if step != "verify":  # a request that was paid is refused when shown again
    note = w.sign(pay, priv)
d = FbDisplay(240, 240)
for i in range(n):
    if step == "verify":
        w.prepare(req)
    elif step == "unlock":
        ks.unlock("1234")
    elif step == "sign":
        w.sign(pay, priv)
    elif step == "qr_single":
        QrView(d, note, "M", 2).draw(0)
    elif step == "qr_parts":
        QrView(d, note, "M", 3).draw(0)
"""


def callgrind(world: TokenWorld, tmp: Path) -> dict[str, object]:
    if not shutil.which("valgrind"):
        return {"error": "valgrind not installed (apt-get install valgrind)"}
    state = world.provisioned(PAYER, cap=10**9)
    req = tmp / "req.bin"
    req.write_bytes(world.request(PAYEE, 12345, "coffee+cake!"))
    script = tmp / "cg.py"
    script.write_text(CALLGRIND_SCRIPT)
    bundle = build.sim_bundle()
    env = dict(os.environ)
    env["MICROPYPATH"] = build.micropath(bundle)
    mp = str(Path(sys.executable).parent / "micropython")
    out: dict[str, object] = {}

    def count(step: str, n: int) -> int:
        st = tmp / f"st-{step}-{n}"
        shutil.rmtree(st, ignore_errors=True)
        shutil.copytree(state / "flash", st)
        cg = tmp / f"cg-{step}-{n}.out"
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}", mp, "-X", "heapsize=4m",
             str(script), step, str(n), str(st), str(req)],
            env=env, capture_output=True, check=True, timeout=1200,
        )  # fmt: skip
        m = re.search(rb"^(?:summary|totals): (\d+)", cg.read_bytes(), re.M)
        assert m, "no callgrind total"
        return int(m.group(1))

    bigint = {"verify": True, "unlock": False, "sign": True, "qr_single": False, "qr_parts": False}
    for step in ("verify", "unlock", "sign", "qr_single", "qr_parts"):
        per = (count(step, 3) - count(step, 1)) // 2
        f = F_ISA * F_CPI * (F_MPZ if bigint[step] else 1.0)
        out[step] = {"x64_instructions": per, "esp32_s_projected": round(per * f / ESP32_HZ, 2)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--notes", type=count, default=5)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--no-minheap", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hubi-bench-token-"))
    try:
        world = TokenWorld(tmp / "world")
        res: dict[str, object] = {"sim_heaps": SIM_HEAPS, "profiles": []}
        for prof in PROFILES:
            r = bench_profile(world, prof, args.notes)
            res["profiles"].append(r)  # type: ignore[union-attr]
            m = r["median"]
            print(
                f"{prof:18} note {r['note_bytes']} B  frames {r['frames']}  verify {m['verify_ms']:.0f} ms  "
                f"unlock {m['unlock_ms']:.0f}  sign {m['sign_ms']:.0f}  qr {m['qr_ms']:.0f} "
                f"(encode {m['qr_encode_ms']:.0f})  request->QR {m['request_to_qr_ms']:.0f} ms  "
                f"heap boot {r['heap_used_boot']} after {r['heap_used_after_payment']}"
            )
        res["frames"] = frames_per_board(401)
        for k, v in res["frames"].items():  # type: ignore[union-attr]
            print(f"frames {k:18} {v}")
        if not args.no_minheap:
            res["min_heap_kb"] = min_heaps(world)
            for p, v in res["min_heap_kb"].items():  # type: ignore[union-attr]
                print(f"smallest heap ({p}): " + ", ".join(f"{k} {kb} KB" for k, kb in v.items()))
        if not args.no_callgrind:
            res["callgrind"] = callgrind(world, tmp)
            for k, v in res["callgrind"].items():  # type: ignore[union-attr]
                print(f"callgrind {k:10} {v}")
        report(res, args.json, indent=2, show=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
