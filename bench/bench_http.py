"""CPU a bank node spends per HTTP request, on its two HTTP stacks.

    .venv/bin/python -m bench.bench_http [--requests 1500 --rounds 3 --json bench/out/http.json]

One `hubi bank serve` process (SQLite, eager notices) per stack and round, alternating
``--http-impl auto`` (uvloop + httptools, installed with hubi) and ``--http-impl plain`` (asyncio +
h11, pure Python). One keep-alive client sends --requests ``GET /health`` and then as many
``POST /v1/notes`` (same-bank notes among 40 funded accounts, signed beforehand), one at a time.
The figure is the node process's CPU time (user + system, from /proc) per request, so the
client's own work and the neighbours' load stay out of it; each round's ratio auto / plain
compares two processes measured minutes apart at most.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "host", ROOT / "shared"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench import count, report  # noqa: E402
from hubi.bank.server import http_stack  # noqa: E402
from tests.bank_nodes import NodeProcess, copy_world, prepare_bank  # noqa: E402

ACCOUNTS = 40
IMPLS = ("auto", "plain")


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _one(impl: str, requests: int, work: Path) -> dict[str, float]:
    """Server CPU ms per request for /health and for uploads, on a fresh node."""
    world = copy_world(work / "home")
    db = f"sqlite:///{work}/bka.db"
    accts = prepare_bank(world.home, "BKA", db, ACCOUNTS)
    ids = sorted(accts)
    notes = [
        accts[ids[i % ACCOUNTS]].note(ids[(i + 1) % ACCOUNTS], 1, serial=1 + i // ACCOUNTS)
        for i in range(requests)
    ]
    node = NodeProcess(world.home, "BKA", db, extra=["--http-impl", impl]).start()
    try:
        pid = node.pid
        assert pid is not None
        conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
        for _ in range(100):  # warm: imports, first connections, caches
            conn.request("GET", "/health")
            conn.getresponse().read()
        t0 = _proc_cpu(pid)
        for _ in range(requests):
            conn.request("GET", "/health")
            r = conn.getresponse()
            r.read()
            assert r.status == 200
        health = (_proc_cpu(pid) - t0) / requests * 1000
        t0 = _proc_cpu(pid)
        for raw in notes:
            conn.request(
                "POST", "/v1/notes", body=raw, headers={"content-type": "application/octet-stream"}
            )
            r = conn.getresponse()
            body = r.read()
            if r.status != 200 or json.loads(body)["outcome"] != "booked":
                raise RuntimeError(f"upload failed: {r.status} {body[:200]!r}")
        upload = (_proc_cpu(pid) - t0) / requests * 1000
        conn.close()
    finally:
        node.close()
    return {"health_ms": round(health, 3), "upload_ms": round(upload, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=count, default=1500, help="requests of each kind per node")
    ap.add_argument("--rounds", type=count, default=3, help="pairs of nodes (auto, plain)")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()
    stacks = {impl: http_stack(impl) for impl in IMPLS}
    rounds: list[dict[str, Any]] = []
    for k in range(args.rounds):
        row: dict[str, Any] = {}
        for impl in IMPLS:
            work = Path(tempfile.mkdtemp(prefix=f"hubi-bench-http-{impl}-"))
            try:
                row[impl] = _one(impl, args.requests, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        row["ratio"] = {key: round(row["auto"][key] / row["plain"][key], 3) for key in row["auto"]}
        rounds.append(row)
        print(f"round {k + 1}: {json.dumps(row)}", flush=True)
        time.sleep(0.5)
    print(f"\nnode CPU ms per request, {args.requests} of each per node, {args.rounds} rounds")
    print(
        "| request | auto: " + stacks["auto"] + " | plain: " + stacks["plain"] + " | auto / plain |"
    )
    print("|---|---|---|---|")
    summary: dict[str, Any] = {}
    for key, label in (("health_ms", "GET /health"), ("upload_ms", "POST /v1/notes")):
        a = [r["auto"][key] for r in rounds]
        b = [r["plain"][key] for r in rounds]
        q = [r["ratio"][key] for r in rounds]
        summary[key] = {"auto": a, "plain": b, "ratio": q}
        print(
            f"| {label} | {statistics.median(a):.3f} ({min(a):.3f}–{max(a):.3f}) "
            f"| {statistics.median(b):.3f} ({min(b):.3f}–{max(b):.3f}) "
            f"| {statistics.median(q):.2f} ({min(q):.2f}–{max(q):.2f}) |"
        )
    out = {"stacks": stacks, "requests": args.requests, "rounds": rounds, "summary": summary}
    report(out, args.json, show=False)


if __name__ == "__main__":
    main()
