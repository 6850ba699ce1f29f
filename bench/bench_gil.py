"""Benchmark: how much of a bank node's time one note holds the GIL, under interbank load.

    .venv/bin/python -m bench.bench_gil [--notes 1600] [--clients 32] [--seconds 10]

Starts what `hubi consortium up --banks 4` starts (4 bank node processes, 3 etcd members),
uploads interbank notes from closed-loop clients, and meanwhile samples two bank nodes with
py-spy's `--gil` mode (only the thread holding the GIL is recorded; a dev dependency). A bank
node is one Python process: the GIL-held time per note bounds one process's rate of notes
however many cores it gets, 1000 / (GIL ms per note) notes/s. Beside it, the process's CPU per
note from /proc. Where the node shares its cores with other processes, a thread can be preempted
while it holds the GIL, so the held time can exceed the CPU time. On cores of its own the held
time is at most the CPU time (OpenSSL's verification runs without the GIL), so
1000 / (CPU ms per note) is a floor of the bound there.

Nothing is asserted; bench/consortium.md discusses the figures.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import count, report  # noqa: E402
from bench.bench_consortium import (  # noqa: E402
    ACCOUNTS,
    Supervisor,
    cpu_seconds,
    load_accounts,
    make_notes,
    run_phase,
)

RATE = 250  # samples per second


def py_spy() -> str:
    exe = Path(sysconfig.get_path("scripts")) / "py-spy"
    found = exe if exe.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("bench_gil needs py-spy: .venv/bin/pip install py-spy (in .[dev])")
    return str(found)


def held_samples(raw: Path) -> int:
    """Samples in a py-spy raw (collapsed stacks) file: each line ends with its count."""
    if not raw.exists():
        return 0
    return sum(int(line.rsplit(" ", 1)[1]) for line in raw.read_text().splitlines() if line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--notes", type=count, default=1600, help="notes uploaded meanwhile")
    ap.add_argument("--clients", type=count, default=32)
    ap.add_argument("--seconds", type=float, default=10.0, help="sampling window")
    ap.add_argument("--banks", default="BKA,BKB", help="bank nodes to sample")
    ap.add_argument("--json", type=Path, default=None, help="write the results here too")
    args = ap.parse_args()
    spy = py_spy()
    folder = Path(tempfile.mkdtemp(prefix="hubi-bench-gil-"))
    sup = Supervisor(
        folder,
        4,
        accounts=ACCOUNTS,
        funds=10_000_000,
        restart=False,
        checkpoint_every=1000,
        log_level="warning",
    )
    result: dict[str, Any] = {"clients": args.clients, "banks": {}}
    try:
        sup.prepare()
        sup.start()
        urls = {b: bp.url for b, bp in sup.banks.items()}
        accounts = load_accounts(sup.home)
        run_phase(urls, make_notes(accounts, 100, seed=0), 8)  # caches warm
        pids = {b: bp.proc.pid for b, bp in sup.banks.items() if bp.proc}
        sampled = [b for b in args.banks.split(",") if b in pids]
        phase: dict[str, Any] = {}
        load = threading.Thread(
            target=lambda: phase.update(
                run_phase(urls, make_notes(accounts, args.notes, seed=1), args.clients)
            )
        )
        load.start()
        time.sleep(2.0)  # into the steady state
        spies = {}
        for b in sampled:
            raw = folder / f"gil-{b}.raw"
            argv = [spy, "record", "--gil", "--nonblocking", "-r", str(RATE)]
            argv += ["-d", str(int(args.seconds)), "-p", str(pids[b]), "-f", "raw", "-o", str(raw)]
            spies[b] = (
                raw,
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
            )
        cpu0 = {b: cpu_seconds(pids[b]) for b in sampled}
        t0 = time.perf_counter()
        for _, proc in spies.values():
            proc.wait()
        window = time.perf_counter() - t0
        cpu1 = {b: cpu_seconds(pids[b]) for b in sampled}
        load.join()
        if phase.get("outcomes", {}).get("booked") != args.notes:
            raise SystemExit(f"not every note settled: {phase.get('outcomes')}")
        if phase["seconds"] < window + 2.5:  # the load must cover the whole sampling window
            raise SystemExit(f"the notes took only {phase['seconds']} s: raise --notes")
        result["notes_per_s"] = phase["notes_per_s"]
        notes = phase["notes_per_s"] * window  # settled during the sampling window
        for b, (raw, proc) in spies.items():
            n = held_samples(raw)
            if not n:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise SystemExit(f"py-spy recorded nothing for bank {b}: {err.strip()[:300]}")
            held = n / RATE  # seconds some thread of the node held the GIL
            gil_ms = held / notes * 1000
            cpu_ms = (cpu1[b] - cpu0[b]) / notes * 1000
            result["banks"][b] = {
                "gil_held_fraction": round(held / window, 3),
                "gil_ms_per_note": round(gil_ms, 2),
                "cpu_ms_per_note": round(cpu_ms, 2),
                "bound_notes_per_s_here": round(1000 / gil_ms),
                "bound_notes_per_s_own_cores_at_least": round(1000 / cpu_ms),
            }
    finally:
        sup.stop()
        shutil.rmtree(folder, ignore_errors=True)
    report(result, args.json)


if __name__ == "__main__":
    main()
