"""Where the token's MicroPython heap goes: per-module import cost, boot resident, smallest heap.

    .venv/bin/python tools/token_heap.py imports                 # every firmware module
    .venv/bin/python tools/token_heap.py imports hubi_core.codec core.wallet
    .venv/bin/python tools/token_heap.py boot --profile m5stack_core
    .venv/bin/python tools/token_heap.py qstrs --profile headless  # the interned names
    .venv/bin/python tools/token_heap.py minheap --profile esp32_st7789_240 --scenario payment

Everything runs the shipped form: the x64 .mpy bundle mapped as a ROMFS image outside the heap
(hubi.token.romrun), as the simulator does, on the MicroPython unix port (64-bit).

imports   each module imported after its own dependencies, so a row is what that module adds:
          heap bytes in use after gc.collect() (function and raw-code objects, classes, dicts,
          constant objects, qstr pool growth), new qstrs, and with --drop what stays after the
          module is removed from sys.modules again (qstrs, and anything another module holds).
boot      main.build() for a board profile on a provisioned state, as the simulator boots:
          heap in use, qstr pools (qstr_info: strings live in the ROMFS image, the pools of
          pointers/hashes/lengths in the heap) and the modules left in sys.modules.
qstrs     the qstrs interned after boot (one per line), to find names worth dropping.
minheap   the smallest -X heapsize (KB granularity --step) at which a scenario completes in the
          real simulator over the pty: "payment" (boot a provisioned token, one payment: request
          verified, PIN, note signed, QR drawn, note returned), "provision" (blank token,
          provisioning, then one payment), "notice" (payment, then a Receipt and a BalanceNotice
          loaded). Bisection between --low and --high.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "host"))
sys.path.insert(0, str(ROOT / "shared"))

from hubi.token import build  # noqa: E402

PROFILES = ("headless", "esp32_st7789_240", "m5stack_core")

# The probe runs under MicroPython. It mounts the image like firmware/main.py does.
PROBE = r"""
import gc, sys, micropython, os, uctypes, vfs
addr, n = os.getenv("HUBI_ROMFS").split(":")
vfs.mount(vfs.VfsRom(memoryview(uctypes.bytearray_at(int(addr), int(n)))), "/rom")
sys.path[:0] = ["/rom", "/rom/lib"]

def mark(tag):
    gc.collect()
    print("@@", tag, gc.mem_alloc())
    micropython.qstr_info()

mode = sys.argv[1]
args = sys.argv[2:]
mark("start")
if mode == "imports":
    drop = args[0] == "1"
    for m in args[1:]:
        __import__(m)
        mark("import " + m)
        if drop:
            keep = [k for k in sys.modules if k == m or k.startswith(m + ".")]
            for k in keep:
                del sys.modules[k]
            mark("drop " + m)
            __import__(m)
elif mode == "flow":
    # a payment without the link: boot, verify the request, unlock, sign, show the QR
    import app, core
    profile, state, req_path = args[0], args[1], args[2]
    cfg = {"board": "sim", "profile": profile, "state": state, "frames": state + "/frames",
           "script": state + "/input.txt", "settings": {"kdf_iterations": 1000}}
    tok = app.build(cfg)
    mark("boot")
    w = tok.wallet
    with open(req_path, "rb") as f:
        req = f.read()
    from core import pay as P
    pay = P.prepare(w, req)
    mark("verify")
    core.release()
    mark("verify released")
    priv = w.ks.unlock("1234")
    mark("unlock")
    core.release()
    mark("unlock released")
    from core import paysign
    note = paysign.sign(w, pay, priv)
    mark("sign")
    priv = None
    core.release()
    mark("sign released")
    if tok.ui is not None:
        tok.ui.show_note(note)
        mark("qr")
        tok.ui.qr = None
        core.release()
        mark("qr released")
    print("@@done")
elif mode == "boot":
    import app
    profile, state = args[0], args[1]
    cfg = {"board": "sim", "profile": profile, "state": state, "frames": state + "/frames",
           "script": state + "/input.txt", "settings": {}}
    tok = app.build(cfg)
    mark("boot")
    print("@@modules", " ".join(sorted(sys.modules)))
    if len(args) > 2:
        micropython.qstr_info(1)
"""


def run_probe(mode: str, args: list[str], heap: str = "4m") -> str:
    image = build.sim_image()
    with tempfile.TemporaryDirectory() as d:
        probe = Path(d) / "probe.py"
        probe.write_text(PROBE)
        env = dict(os.environ, MICROPYPATH=".frozen")
        cmd = [sys.executable, "-m", "hubi.token.romrun", str(image), "-X", f"heapsize={heap}"]
        cmd += [str(probe), mode, *args]
        p = subprocess.run(
            cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, cwd=d
        )
    if p.returncode != 0:
        raise SystemExit(f"probe failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr}")
    return p.stdout


QSTR_RE = re.compile(
    r"qstr pool: n_pool=(\d+), n_qstr=(\d+), n_str_data_bytes=(\d+), n_total_bytes=(\d+)"
)


def parse_marks(out: str) -> list[dict[str, object]]:
    """[{tag, alloc, n_qstr, pool_heap}] from the probe's output. pool_heap: the qstr pools'
    heap bytes (total minus string data, which stays in the ROMFS image)."""
    rows: list[dict[str, object]] = []
    for ln in out.splitlines():
        if ln.startswith("@@ "):
            tag, alloc = ln[3:].rsplit(" ", 1)
            rows.append({"tag": tag, "alloc": int(alloc)})
        m = QSTR_RE.match(ln)
        if m and rows:
            _, nq, data, total = (int(x) for x in m.groups())
            rows[-1]["n_qstr"] = nq
            rows[-1]["pool_heap"] = total - data
            rows[-1]["str_bytes"] = data
    return rows


# ------------------------------------------------------------------------ dependency order
def module_sources() -> dict[str, Path]:
    """Module name -> source file for everything in the bundle."""
    out: dict[str, Path] = {}
    for src, rel in build.sources():
        if not rel.endswith(".py") or rel == "main.py":
            continue
        name = rel[: -len(".py")].replace("/", ".")
        if name.startswith("lib."):
            name = name[len("lib.") :]
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        out[name] = src
    return out


IMPORT_RE = re.compile(r"^(?:from\s+([\w.]+)\s+import\s+([\w, ()]+)|import\s+([\w.]+))", re.M)


def top_level_imports(src: Path, known: dict[str, Path]) -> list[str]:
    """Modules of the bundle that `src` imports at module level (not inside functions)."""
    out: list[str] = []
    for m in IMPORT_RE.finditer(src.read_text()):
        if m.group(1):
            base = m.group(1)
            if base in known:
                out.append(base)
            for n in re.split(r"[,\s()]+", m.group(2)):
                if n and f"{base}.{n}" in known:
                    out.append(f"{base}.{n}")
        elif m.group(3) in known:
            out.append(m.group(3))
    return out


def dep_order(names: list[str]) -> list[str]:
    known = module_sources()
    seen: list[str] = []

    def visit(n: str, stack: tuple[str, ...]) -> None:
        if n in seen or n in stack or n not in known:
            return
        parent = n.rpartition(".")[0]
        if parent:
            visit(parent, (*stack, n))
        for d in top_level_imports(known[n], known):
            visit(d, (*stack, n))
        seen.append(n)

    for n in names:
        visit(n, ())
    return seen


DEFAULT_MODULES = [
    "hubi_core.link",
    "core.keystore",
    "core.wallet",
    "core.token",
    "ui.screens",
    "hubi_core.verify",
    "hubi_core.cpk",
    "hubi_core.consortium",
    "hubi_core.ec_vt",
    "hubi_core.ec_ct",
    "hubi_core.suite",
    "hubi_core.ecies",
    "hubi_core.tokenmsg",
    "hubi_core.qr",
    "hubi_core.qrparts",
    "hubi_core.png",
    "ui.qrview",
]


def _vuint(b: bytes, p: int) -> tuple[int, int]:
    n = 0
    while True:
        c = b[p]
        p += 1
        n = (n << 7) | (c & 0x7F)
        if not c & 0x80:
            return n, p


def mpy_qstrs(path: Path) -> list[str]:
    """The qstrs a .mpy file interns when it is loaded (its qstr table, static ones left out:
    those are in the firmware already). Layout: docs of MicroPython's .mpy format v6."""
    b = path.read_bytes()
    if b[:2] != b"M\x06":
        raise ValueError(f"{path}: not a version 6 .mpy file")
    p = 4
    nq, p = _vuint(b, p)
    _, p = _vuint(b, p)
    out = []
    for _ in range(nq):
        n, p = _vuint(b, p)
        if n & 1:
            continue  # static qstr: an index into the firmware's own table
        n >>= 1
        out.append(b[p : p + n].decode())
        p += n + 1
    return out


def cmd_census(a: argparse.Namespace) -> None:
    """qstrs each module adds, in dependency order, read from the compiled bundle (no run):
    the union over a session decides the qstr pools (they only grow)."""
    bundle = build.sim_bundle()
    names = dep_order(a.modules or DEFAULT_MODULES)
    seen: set[str] = set()
    print(f"{'module':32} {'qstrs':>6} {'new':>5} {'total':>6}")
    for name in names:
        rel = name.replace(".", "/")
        cands = [bundle / (rel + ".mpy"), bundle / rel / "__init__.mpy"]
        cands += [bundle / "lib" / (rel + ".mpy"), bundle / "lib" / rel / "__init__.mpy"]
        path = next((c for c in cands if c.exists()), None)
        if path is None:
            continue
        qs = mpy_qstrs(path)
        qs.append("/rom/" + path.relative_to(bundle).as_posix())  # __file__, interned on import
        new = [q for q in qs if q not in seen]
        seen.update(qs)
        print(f"{name:32} {len(qs):6d} {len(new):5d} {len(seen):6d}")
        if a.verbose:
            print("    " + " ".join(new))


def cmd_imports(a: argparse.Namespace) -> None:
    names = dep_order(a.modules or DEFAULT_MODULES)
    rows = parse_marks(run_probe("imports", ["1" if a.drop else "0", *names]))
    prev = rows[0]
    print(f"{'module':32} {'heap':>8} {'qstrs':>6} {'pools':>7}" + ("  kept" if a.drop else ""))
    tot = 0
    i = 1
    while i < len(rows):
        r = rows[i]
        name = str(r["tag"]).split(" ", 1)[1]
        d_alloc = int(r["alloc"]) - int(prev["alloc"])
        d_q = int(r["n_qstr"]) - int(prev["n_qstr"])
        d_pool = int(r["pool_heap"]) - int(prev["pool_heap"])
        tot += d_alloc
        line = f"{name:32} {d_alloc:8d} {d_q:6d} {d_pool:7d}"
        if a.drop:
            dr = rows[i + 1]
            line += f"  {int(dr['alloc']) - int(prev['alloc']):6d}"
            i += 1
            # the module was imported again after the drop: the next row starts from here
            prev = {"alloc": int(prev["alloc"]) + d_alloc, "n_qstr": r["n_qstr"]}
            prev["pool_heap"] = r["pool_heap"]
        else:
            prev = r
        print(line)
        i += 1
    last = rows[-1]
    print(
        f"{'total':32} {tot:8d} {int(last['n_qstr']) - int(rows[0]['n_qstr']):6d} "
        f"{int(last['pool_heap']):7d}   (qstr string data in ROM: {last['str_bytes']} bytes)"
    )


def cmd_flow(a: argparse.Namespace) -> None:
    """Heap in use after each step of a payment run in-process; with --min, the smallest
    heap for the flow (bisection) and the step that fails just below it."""
    from hubi.token.harness import TokenWorld

    root = Path(tempfile.mkdtemp(prefix="token-heap-"))
    world = TokenWorld(root)
    req = root / "request.bin"
    req.write_bytes(world.request("BKB-000000000007", 12345, "coffee+cake!"))
    snap = world.provisioned("BKA-000000000042", cap=10**9)
    import shutil

    def run(profile: str, heap: str) -> tuple[bool, str]:
        state = world.new_state()
        shutil.copytree(snap / "flash", state / "flash")
        (state / "frames").mkdir(parents=True, exist_ok=True)
        try:
            return True, run_probe("flow", [profile, str(state), str(req)], heap)
        except SystemExit as e:
            return False, str(e)

    for profile in a.profile or PROFILES:
        ok, out = run(profile, "4m")
        if not ok:
            print(out)
            continue
        rows = parse_marks(out)
        print(f"{profile}:")
        for r in rows:
            print(f"  {r['tag']:18} {r['alloc']:7d} bytes in use, {r['n_qstr']} qstrs")
        if a.min:
            lo, hi = a.low, a.high
            while hi - lo > a.step:
                mid = (lo + hi) // 2 // a.step * a.step
                if mid <= lo:
                    break
                if run(profile, f"{mid}k")[0]:
                    hi = mid
                else:
                    lo = mid
            fail = run(profile, f"{lo}k")[1]
            last = [ln for ln in fail.splitlines() if ln.startswith("@@ ")]
            err = [ln for ln in fail.splitlines() if "Error" in ln]
            print(
                f"  smallest heap {hi} KB; at {lo} KB it fails after "
                f"{last[-1][3:] if last else 'nothing'}: {err[-1] if err else fail[-300:]}"
            )


def provisioned_state(profile: str = "headless") -> Path:
    from hubi.token.harness import TokenWorld

    root = Path(tempfile.mkdtemp(prefix="token-heap-"))
    return TokenWorld(root).provisioned("BKA-000000000042", cap=10**9, profile=profile)


def cmd_boot(a: argparse.Namespace, dump: bool = False) -> None:
    state = Path(a.state) if a.state else provisioned_state()
    for profile in a.profile or PROFILES:
        out = run_probe("boot", [profile, str(state)] + (["1"] if dump else []))
        rows = parse_marks(out)
        if dump:
            for ln in out.splitlines():
                if ln.startswith("Q("):
                    print(ln[2:-1])
            continue
        start, boot = rows[0], rows[-1]
        mods = next(ln for ln in out.splitlines() if ln.startswith("@@modules")).split()[1:]
        print(
            f"{profile}: heap in use after boot {boot['alloc']} bytes (interpreter start "
            f"{start['alloc']}), qstrs {boot['n_qstr']} in pools of {boot['pool_heap']} heap "
            f"bytes; {len(mods)} modules: {' '.join(mods)}"
        )


def scenario(profile: str, kind: str, heap_kb: int, world: object) -> bool:
    from hubi.token.client import TokenClient

    w = world  # TokenWorld
    payer, payee = "BKA-000000000042", "BKB-000000000007"
    if kind == "provision":
        state = w.new_state()  # type: ignore[attr-defined]
    else:
        state = w.provisioned(payer, cap=10**9)  # type: ignore[attr-defined]
    sim = w.sim(state, profile, heapsize=f"{heap_kb}k")  # type: ignore[attr-defined]
    try:
        sim.start()
        sim.wait_ready(20)
        with TokenClient.open(sim.port, timeout_ms=10000, retries=0) as tok:
            if kind == "provision":
                w.provision(tok, payer, "1234")  # type: ignore[attr-defined]
            req = w.request(payee, 100)  # type: ignore[attr-defined]
            note = w.pay(sim, tok, req, "1234", wheel=False)  # type: ignore[attr-defined]
            if kind == "notice":
                tok.load_notice(w.receipt(note))  # type: ignore[attr-defined]
                tok.load_notice(w.balance_notice(note, 97500))  # type: ignore[attr-defined]
            tok.info()
        return sim.running()
    except Exception:  # noqa: BLE001 - a MemoryError on the token shows as any link error
        return False
    finally:
        sim.stop()


def min_heap(profile: str, kind: str, low: int, high: int, step: int, world: object) -> int | None:
    """Smallest heap in KB (multiple of `step`) where the scenario completes, by bisection
    (assumes success is monotonic in the heap size)."""
    if not scenario(profile, kind, high, world):
        return None
    lo, hi = low, high  # lo may fail, hi succeeds
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if mid <= lo:
            break
        if scenario(profile, kind, mid, world):
            hi = mid
        else:
            lo = mid
    return hi


def cmd_minheap(a: argparse.Namespace) -> None:
    from hubi.token.harness import TokenWorld

    world = TokenWorld(Path(tempfile.mkdtemp(prefix="token-heap-")))
    for profile in a.profile or PROFILES:
        for kind in a.scenario or ["payment"]:
            kb = min_heap(profile, kind, a.low, a.high, a.step, world)
            print(f"{profile:18} {kind:10} " + (f"{kb} KB" if kb else f"> {a.high} KB"))
            sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("imports")
    p.add_argument("modules", nargs="*")
    p.add_argument("--drop", action="store_true", help="also measure what a drop gives back")
    for name in ("boot", "qstrs"):
        p = sub.add_parser(name)
        p.add_argument("--profile", action="append", choices=PROFILES)
        p.add_argument("--state", help="a provisioned token's state folder (default: made)")
    p = sub.add_parser("census")
    p.add_argument("modules", nargs="*")
    p.add_argument("-v", "--verbose", action="store_true", help="list each module's new qstrs")
    p = sub.add_parser("flow")
    p.add_argument("--profile", action="append", choices=PROFILES)
    p.add_argument("--min", action="store_true", help="also bisect the smallest heap")
    p.add_argument("--low", type=int, default=48)
    p.add_argument("--high", type=int, default=320)
    p.add_argument("--step", type=int, default=2)
    p = sub.add_parser("minheap")
    p.add_argument("--profile", action="append", choices=PROFILES)
    p.add_argument("--scenario", action="append", choices=("payment", "provision", "notice"))
    p.add_argument("--low", type=int, default=48)
    p.add_argument("--high", type=int, default=320)
    p.add_argument("--step", type=int, default=4)
    a = ap.parse_args(argv)
    if a.cmd == "imports":
        cmd_imports(a)
    elif a.cmd == "boot":
        cmd_boot(a)
    elif a.cmd == "qstrs":
        cmd_boot(a, dump=True)
    elif a.cmd == "census":
        cmd_census(a)
    elif a.cmd == "flow":
        cmd_flow(a)
    else:
        cmd_minheap(a)


if __name__ == "__main__":
    main()
