"""Benchmarks (bench/README.md). Shared here: how a benchmark reports its result."""

from __future__ import annotations

import json
from pathlib import Path


def report(result: object, path: Path | None, indent: int | None = 1, show: bool = True) -> None:
    """Print a benchmark's result as JSON (unless it printed its own table: `show`) and, with
    ``--json PATH``, write it there too."""
    text = json.dumps(result, indent=indent)
    if show:
        print(text)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
