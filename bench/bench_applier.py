"""Benchmark: how fast one bank applies the part of the log it missed (its log applier and the
reader ahead of it, with the machine to themselves), on the embedded SQLite orderer.

    .venv/bin/python -m bench.bench_applier [--notes 600] [--rounds 7] [--json FILE]

Four banks in one process (`EmbeddedConsortium`). The fourth bank's node is closed while the
other three settle `--notes` interbank notes among themselves; then a new node on its state
catches up, and is timed until it has applied the whole log. It books nothing (it is neither
payer's nor payee's bank of these notes): every event is decoded, its signatures checked (three
endorsement seals, or five field signatures of a BalanceNotice) and committed to the state, so
this is the part of applying that every bank does for every interbank note. Each round starts a
new node on a copy of the lagging state, so the rounds time the same backlog. The embedded
orderer hands the backlog over as fast as it is read, unlike an etcd watch that resumes from an
old revision (`bench_consortium.py --catch-up`). Reported per round and as the median: events/s,
the process CPU per event, and the CPU per event of the applier thread and of its reader.

Nothing is asserted; bench/consortium.md discusses the figures.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import count, report  # noqa: E402
from bench.bench_consortium import applier_cpu, load_accounts, make_notes  # noqa: E402
from hubi import kmc as kmc_mod  # noqa: E402
from hubi.consortium.node import ConsortiumNode  # noqa: E402
from hubi.consortium.orderer import SqliteOrderer  # noqa: E402
from hubi.consortium.service import EmbeddedConsortium  # noqa: E402
from hubi.consortium.state import ConsortiumState  # noqa: E402
from hubi.consortium.supervisor import init_home, setup_bank  # noqa: E402
from hubi.consortium.transport import LocalPeerTransport  # noqa: E402

BANKS = ["BKA", "BKB", "BKC", "BKD"]
LAG = "BKD"


def copy_db(src: Path, dst: Path) -> None:
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        a.backup(b)
    finally:
        a.close()
        b.close()


def catch_up(ec: EmbeddedConsortium, trust: Any, state_path: Path, head: int) -> dict[str, Any]:
    """A new node for the lagging bank on `state_path`, timed until it applied up to `head`."""
    prefix = trust.consortium.log_prefix().encode()
    state = ConsortiumState(state_path, f"embedded:{prefix.decode()}")
    start = state.applied_revision()
    node = ConsortiumNode(
        ec.nodes[LAG].engine,
        trust,
        SqliteOrderer(ec.orderer_path, prefix=prefix),
        LocalPeerTransport(LAG, ec.nodes),
        state,
    )
    cpu0, t0 = time.process_time(), time.perf_counter()
    node.start()
    try:
        if not node.wait_applied(head, 600):
            raise SystemExit(f"{LAG} did not catch up to revision {head}")
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        apply_cpu, read_cpu = applier_cpu(node.status())
    finally:
        node.close()
    events = head - start
    return {
        "events": events,
        "seconds": round(wall, 3),
        "events_per_s": round(events / wall),
        "process_cpu_ms_per_event": round(cpu / events * 1000, 3),
        "applier_cpu_ms_per_event": round(apply_cpu / events * 1000, 3),
        "read_ahead_cpu_ms_per_event": round(read_cpu / events * 1000, 3),
    }


def run(notes: int, rounds: int, folder: Path) -> dict[str, Any]:
    home = folder / "home"
    trust = init_home(home, BANKS, name="bench-applier", orderer=None)
    for b in BANKS:
        setup_bank(home, b, 4, 10_000_000, trust=trust)
    trust = kmc_mod.load_trust(home / "trust")
    accounts = {a: d for a, d in load_accounts(home).items() if a[:3] != LAG}
    ec = EmbeddedConsortium(home, settle_timeout=10.0, trust=trust)
    ec.start()
    try:
        lag = ec.nodes[LAG]
        lag.close()
        for tr in ec.transports.values():
            tr.down.add(LAG)
        t = time.perf_counter()
        for payee_bank, note in make_notes(accounts, notes, seed=7):
            out = ec.submit(payee_bank, note)
            if out.get("outcome") != "booked":
                raise SystemExit(f"a note did not settle: {out}")
        settle_s = time.perf_counter() - t
        prefix = trust.consortium.log_prefix().encode()
        head_orderer = SqliteOrderer(ec.orderer_path, prefix=prefix)
        head = head_orderer.revision()
        head_orderer.close()
        lagging = folder / "lagging.db"
        copy_db(kmc_mod.bank_dir(home, LAG) / "consortium.db", lagging)
        runs = []
        for r in range(rounds):
            copy_db(lagging, folder / f"round{r}.db")
            runs.append(catch_up(ec, trust, folder / f"round{r}.db", head))
            print(json.dumps(runs[-1]), flush=True)
    finally:
        ec.close()
    med = {
        k: statistics.median(x[k] for x in runs) for k in runs[0] if k not in ("events", "seconds")
    }
    return {"notes": notes, "settle_s": round(settle_s, 1), "rounds": runs, "median": med}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--notes", type=count, default=600, help="notes the bank misses")
    ap.add_argument("--rounds", type=count, default=7, help="catch-ups of the same backlog")
    ap.add_argument("--json", type=Path, default=None, help="write the result here too")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hubi-bench-applier-") as tmp:
        result = run(args.notes, args.rounds, Path(tmp))
    report(result, args.json, indent=None)


if __name__ == "__main__":
    main()
