"""Benchmarks (bench/README.md). Shared here: how a benchmark reports its result."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hubi.files import write_atomic


def report(result: object, path: Path | None, indent: int | None = 1, show: bool = True) -> None:
    """Print a benchmark's result as JSON (unless it printed its own table: `show`) and, with
    ``--json PATH``, write it there too."""
    text = json.dumps(result, indent=indent)
    if show:
        print(text)
    if path is not None:  # whole or not at all: a run stopped mid-write left half a JSON file
        write_atomic(path, (text + "\n").encode())


def count(text: str) -> int:
    """An argparse type for a number of runs, notes, rounds...: 0 or less made the median of
    nothing (IndexError) or a division by zero after the set-up had run."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is too small: give 1 or more")
    return value
