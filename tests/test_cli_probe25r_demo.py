"""Probe 25r of `hubi demo`: the bank nodes are now started with `--db sqlite:///<path>` (so a
HUBI_DB left in the shell is not served), but the path went into the URL as it was: a --workdir
holding '#', '?' or '%' (read as a fragment, a query, an escape) had each node look for another
file ("no database at .../shop ") and the demo failed at step 2. A real `hubi demo` run: bank
node processes, the token's firmware in MicroPython."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HUBI = Path(sys.executable).parent / "hubi"


def test_a_workdir_holding_url_characters_runs_the_story(tmp_path: Path) -> None:
    work = tmp_path / "shop #1 100%?x=y"
    proc = subprocess.run(
        [str(HUBI), "demo", "--json", "--workdir", str(work)],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (work / "home").is_dir()
    assert not (tmp_path / "shop ").exists()
