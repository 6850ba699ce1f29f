"""`hubi token pay --out FILE` always drew the note's QR in the terminal, whatever else the user
wanted; `--no-qr` leaves it out, as `merchant request` and `scan` have (real simulator)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.cli import main
from hubi.token.harness import TokenWorld
from hubi_core import codec

pytestmark = pytest.mark.micropython
PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"
BLOCKS = set("▀▄█")  # what a compact terminal QR is drawn with


def test_pay_draws_the_qr_unless_told_not_to(tmp_path: Path) -> None:
    world = TokenWorld(tmp_path / "w")
    sim = world.sim(world.new_state(), "headless").start()
    try:
        sim.wait_ready()
        port = str(sim.port)
        r = CliRunner().invoke(main, ["token", "provision", "--port", port, "--home",
                                      str(world.home), "--account", PAYER, "--pin", "2468"])  # fmt: skip
        assert r.exit_code == 0, r.output
        outs = {}
        for i, extra in enumerate(([], ["--no-qr"])):
            req, note = tmp_path / f"req{i}.bin", tmp_path / f"note{i}.bin"
            req.write_bytes(world.request(PAYEE, 100 + i, "books"))
            r = CliRunner().invoke(main, ["token", "pay", "--port", port, "--request", str(req),
                                          "--pin", "2468", "--yes", "--out", str(note), *extra])  # fmt: skip
            assert r.exit_code == 0, r.output
            assert codec.decode(note.read_bytes())["amount"] == 100 + i
            outs[bool(extra)] = r.output
        assert BLOCKS & set(outs[False]), outs[False]
        assert not BLOCKS & set(outs[True]) and "note #" in outs[True], outs[True]
    finally:
        sim.stop()
