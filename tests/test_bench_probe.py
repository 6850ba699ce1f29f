"""The benchmarks given counts of 0 or less: refused as a usage error (exit 2) before any work,
not an IndexError or ZeroDivisionError after the set-up had run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "args",
    [
        ["bench.bench_suite", "--runs", "0", "--no-heap-search"],
        ["bench.bench_note", "--runs", "-3", "--no-heap-search"],
        ["bench.bench_qr", "--runs", "0", "--no-heap-search"],
        ["bench.bench_bank", "--only", "recover", "--candidates", "5", "--purposes", "0"],
        ["bench.bench_bank", "--only", "audit", "--audit-records", "10", "--audit-books", "0"],
    ],
)
def test_a_count_below_one_is_a_usage_error(args: list[str]) -> None:
    res = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "is too small: give 1 or more" in res.stderr and "Traceback" not in res.stderr
