"""Run the benchmarks: `python -m bench [NAME ...]` (default: all, in this order).

Each benchmark is also a module of its own with options (`python -m bench.bench_bank --help`);
figures and how they were taken are in bench/README.md and the per-area pages.
"""

from __future__ import annotations

import subprocess
import sys

BENCHES = {
    "suite": "bench.bench_suite",  # crypto suite 1: sign/verify/ECDH/ECIES, heap
    "note": "bench.bench_note",  # one payment note: sign and verify, heap, size, QR versions
    "qr": "bench.bench_qr",  # QR encoder, animated parts, PNG writer on the token
    "token": "bench.bench_token",  # request -> QR on screen per board, heap, ESP32 projection
    "bank": "bench.bench_bank",  # booking vs verification bound, 10^6-record audit, recovery
    "consortium": "bench.bench_consortium",  # interbank settlement with 4 banks + 3 etcd members
    "applier": "bench.bench_applier",  # one bank catching up on the log it missed
    "http": "bench.bench_http",  # a bank node's CPU per request on its two HTTP stacks
    "gil": "bench.bench_gil",  # how long a bank node holds the GIL per interbank note
    "forget": "bench.bench_forget",  # the log forgetting a large backlog on etcd
}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        sys.stderr.write(
            f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHES)}\n"
        )
        return 2
    failed = []
    for name in names:
        print(f"\n=== {name} ({BENCHES[name]})", flush=True)
        if subprocess.run([sys.executable, "-m", BENCHES[name]]).returncode:
            failed.append(name)
    if failed:
        sys.stderr.write(f"failed: {', '.join(failed)}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
