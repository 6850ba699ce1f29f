"""Probe 28 (second round) of the `hubi` command in the environments people run it in: real
`hubi` processes, a home in a folder named "Zürich", a note whose purpose is "café".

- stdout that cannot take UTF-8 (PYTHONIOENCODING=ascii; LC_ALL=C with PYTHONUTF8=0): every
  table (its '—' and '…') and every non-ASCII path was a UnicodeEncodeError traceback halfway
  through the output. Such characters are now written as escapes (\\xfc); JSON stays ASCII.
- LC_ALL=C with PYTHONUTF8=0 and a home under "Zürich": every `hubi bank` command failed with
  "UnicodeEncodeError: ... surrogates not allowed" (the default database URL), and
  `--purpose café` was refused as "not UTF-8 text" though the bytes typed were UTF-8.
- stdout closed (`>&-`): --json was an AttributeError traceback; stdout a full disk
  (`> /dev/full`): an OSError traceback. Both are now one line on stderr.
- `hubi demo` from a folder deleted under the shell: a FileNotFoundError traceback from
  os.getcwd(); now a failure naming the current folder, as JSON with --json.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from hubi import objects
from hubi.commands.bank import default_db_url
from hubi_core import codec
from tests.bank_nodes import copy_world, prepare_bank

pytestmark = pytest.mark.xdist_group("test_cli_probe28b_env")

HUBI = str(Path(sys.executable).parent / "hubi")
PURPOSE = "café"
C_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}  # no UTF-8 anywhere
ASCII_OUT = {"PYTHONIOENCODING": "ascii"}


@dataclass
class Place:
    home: Path
    account: str
    note: Path


@pytest.fixture(scope="module")
def zurich(tmp_path_factory: pytest.TempPathFactory) -> Place:
    folder = tmp_path_factory.mktemp("env") / "Zürich"
    world = copy_world(folder / "home")
    accounts = prepare_bank(world.home, "BKA", default_db_url(world.home, "BKA"), 1)
    account = next(iter(accounts.values()))
    note = folder / "note.bin"
    note.write_bytes(account.note("BKB-000007", 1250, 1, purpose=PURPOSE))
    return Place(world.home, account.id, note)


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "PYTHONIO"))}
    env.pop("PYTHONUTF8", None)
    return {**env, "NO_COLOR": "1", "LANG": "C.UTF-8", **extra}


def _hubi(
    *args: str,
    env: dict[str, str] | None = None,
    stdout: int | None = subprocess.PIPE,
    preexec: Callable[[], None] | None = None,
    cwd: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HUBI, *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        encoding="utf-8",
        errors="surrogateescape",
        timeout=60,
        env=_env(env or {}),
        preexec_fn=preexec,
        cwd=cwd,
    )


def _no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in (proc.stdout or "") + proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("env", [ASCII_OUT, C_LOCALE], ids=["ascii", "C"])
def test_tables_and_paths_reach_a_stream_that_cannot_take_utf8(zurich: Place, env) -> None:
    trust = str(zurich.home / "trust")
    shown = _hubi("note", "show", str(zurich.note), "--trust", trust, env=env)
    _no_traceback(shown)
    assert shown.returncode == 0, shown.stderr
    assert "verified offline" in shown.stdout and "Note" in shown.stdout
    assert PURPOSE not in shown.stdout  # not raw UTF-8: the stream would not take it
    if env is ASCII_OUT:
        assert "caf\\xe9" in shown.stdout and "Z\\xfcrich" in shown.stdout, shown.stdout

    doc = _hubi("note", "show", str(zurich.note), "--trust", trust, "--json", env=env)
    _no_traceback(doc)
    assert doc.returncode == 0 and doc.stdout.isascii(), doc.stdout
    assert json.loads(doc.stdout)["fields"]["purpose"] == PURPOSE


def test_bank_commands_under_a_c_locale_in_a_non_ascii_folder(zurich: Place) -> None:
    home = ["--home", str(zurich.home), "--bank", "BKA"]
    shown = _hubi("bank", "show", zurich.account, *home, "--json", env=C_LOCALE)
    _no_traceback(shown)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    before = json.loads(shown.stdout)["balance"]

    funded = _hubi(
        "bank", "fund", zurich.account, "5", "--purpose", PURPOSE, *home, "--json", env=C_LOCALE
    )
    assert funded.returncode == 0, funded.stdout + funded.stderr
    doc = json.loads(funded.stdout)
    assert doc["status"] == "booked", doc
    db = zurich.home / "banks" / "BKA" / "bank.db"
    with sqlite3.connect(db) as con:
        raw = con.execute(
            "SELECT note FROM notes WHERE note_id = ?", (bytes.fromhex(doc["note_id"]),)
        ).fetchone()[0]
    assert objects.obj_to_dict(codec.decode(raw))["fields"]["purpose"] == PURPOSE

    after = _hubi("bank", "show", zurich.account, *home, env=C_LOCALE)
    assert after.returncode == 0, after.stderr
    assert f"balance {before + 5}" in after.stdout, after.stdout

    # bytes that are not UTF-8 (a Latin-1 terminal) are still refused, by the option
    latin = os.fsdecode(b"caf\xe9")
    refused = _hubi("bank", "fund", zurich.account, "5", "--purpose", latin, *home, env=C_LOCALE)
    assert refused.returncode == 2 and "not UTF-8 text" in refused.stderr, refused.stderr


def test_stdout_closed_or_full_is_one_line_not_a_traceback(zurich: Place) -> None:
    show = ["bank", "show", zurich.account, "--home", str(zurich.home), "--bank", "BKA"]

    closed = _hubi(*show, "--json", stdout=subprocess.DEVNULL, preexec=lambda: os.close(1))
    _no_traceback(closed)
    assert closed.returncode == 0  # the command did its work; only its output is lost
    assert "standard output is closed" in closed.stderr, closed.stderr

    with open("/dev/full", "w") as full:
        for extra in ([], ["--json"]):
            proc = _hubi(*show, *extra, stdout=full.fileno())
            _no_traceback(proc)
            assert proc.returncode == 1, proc.stderr
            assert proc.stderr.strip() == "hubi: cannot write the output: No space left on device"


def test_demo_from_a_deleted_folder_says_so(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()

    def leave() -> None:  # the shell's folder removed under it, as `rm -r` from elsewhere does
        os.chdir(gone)
        os.rmdir(gone)

    for extra in ([], ["--json"]):
        proc = _hubi("demo", *extra, preexec=leave)
        _no_traceback(proc)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        told = json.loads(proc.stdout)["error"] if extra else proc.stderr
        assert "current folder is gone" in told and "--workdir" in told, told
        gone.mkdir()


def test_a_path_the_locale_could_not_decode_makes_a_url_and_a_log_line(tmp_path: Path) -> None:
    """A folder name in bytes that are not UTF-8 (or UTF-8 under LANG=C, PYTHONUTF8=0) is held
    as lone surrogates: sqlite_url and a spawned node's log header both raised
    UnicodeEncodeError on it (`hubi demo --workdir Zürich` failed at step 2)."""
    from hubi.bank.store import Store, parse_url, sqlite_url
    from hubi.infra._process import spawn

    folder = Path(os.fsdecode(bytes(tmp_path) + b"/Z\xfcrich"))
    folder.mkdir()
    db = folder / "bank.db"
    url = sqlite_url(db)
    assert url.isascii() and "Z%FCrich" in url, url
    assert parse_url(url).target == str(db)
    assert parse_url(sqlite_url(tmp_path / "Zürich é #1" / "x.db")).target == str(
        tmp_path / "Zürich é #1" / "x.db"
    )
    Store(url).close()  # the very file: made under its own bytes
    assert (bytes(tmp_path) + b"/Z\xfcrich/bank.db") in [os.fsencode(p) for p in folder.iterdir()]

    log = folder / "node.log"
    proc = spawn([sys.executable, "-c", "pass", str(folder)], log_path=log, cwd=tmp_path)
    assert proc.wait(30) == 0
    head = log.read_bytes()
    assert b"UTC starting:" in head and b"/Z\xfcrich" in head, head
