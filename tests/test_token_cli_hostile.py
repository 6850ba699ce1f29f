"""`hubi token ...` given bad files and unwritable outputs: a clear error naming the file, never
a traceback, and a note the token signed is never lost from sight."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.cli import main
from hubi.token.harness import TokenWorld

PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"


def run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["token", *args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, " ".join(r.output.split())


def test_notice_reads_its_file_before_the_port(tmp_path: Path) -> None:
    """A truncated PNG or an odd hex file was a ValueError traceback, and only after the port
    was opened: with no token attached, the bad file is named all the same."""
    files = {"trunc.png": b"\x89PNG\r\n\x1a\n\x00\x00", "odd.hex": b"0102030"}
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        code, out = run("notice", "--port", str(tmp_path / "no-such-port"), str(path))
        assert code == 2 and f"cannot read {path}: " in out, out
        assert "cannot talk to the token" not in out


def test_note_serial_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    for serial in ("-1", "0", str(2**64)):
        code, out = run("note", "--port", str(tmp_path / "p"), "--serial", serial)
        assert code == 2 and "Invalid value for '--serial'" in out, out


@pytest.mark.micropython
def test_pay_to_an_unwritable_file_still_shows_the_note(tmp_path: Path) -> None:
    """`pay --out /dev/full` was an OSError traceback after the token had signed, and the
    note was printed neither as hex nor as QR."""
    world = TokenWorld(tmp_path / "w")
    sim = world.sim(world.new_state(), "headless").start()
    try:
        sim.wait_ready()
        port = str(sim.port)
        code, out = run(
            "provision", "--port", port, "--home", str(world.home), "--account", PAYER,
            "--pin", "2468", "--allowance", "50000", "--json",
        )  # fmt: skip
        assert code == 0, out
        req = tmp_path / "req.bin"
        req.write_bytes(world.request(PAYEE, 1234, "tea"))
        r = CliRunner().invoke(
            main,
            ["token", "pay", "--port", port, "--request", str(req), "--pin", "2468", "--yes",
             "--out", "/dev/full", "--json"],
        )  # fmt: skip
        assert r.exit_code == 1, r.output
        info = json.loads(r.stdout)
        said = " ".join(r.stderr.split())
        assert "cannot write the note to /dev/full" in info["error"], info
        assert "the note is kept on the token" in said and "hubi token note" in said, said
        code, out = run("note", "--port", port)
        assert code == 0 and out == info["note"]  # the same note, fetched again
        # for people: the hex of the note, then the error and where to find the note again
        req.write_bytes(world.request(PAYEE, 99, "tea"))
        code, out = run(
            "pay", "--port", port, "--request", str(req), "--pin", "2468", "--yes",
            "--out", "/proc/version",
        )  # fmt: skip
        assert code == 1 and "cannot write the note to /proc/version" in out, out
        code, last = run("note", "--port", port)
        assert code == 0 and last in out.replace(" ", ""), out
        code, out = run("note", "--port", port, "--out", "/dev/full")
        assert code == 2 and "cannot write the note to /dev/full" in out, out
    finally:
        sim.stop()
