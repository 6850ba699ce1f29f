"""The embedded consortium reads each bank's kept treasury key as `hubi bank serve` does: a
damaged `treasury.secret` (cut short, a byte too many) is named when the treasury pays, and
nothing is signed. It was read as "its first 32 bytes as a number": a short file gave a wrong
key, whose notes the bank then refused as forged; a long one was used silently."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubi import kmc as kmc_mod
from hubi.bank.engine import BankEngineError
from hubi.consortium import service
from tests.consortium_support import BANKS4, close_embedded, load_trust, make_home


@pytest.mark.parametrize("damage", ["cut", "longer"])
def test_a_damaged_treasury_key_is_named_by_the_embedded_consortium(
    tmp_path: Path, damage: str
) -> None:
    home = tmp_path / "home"
    accounts = make_home(home, BANKS4)
    path = kmc_mod.bank_dir(home, "BKA") / "treasury.secret"
    raw = path.read_bytes()
    path.write_bytes(raw[:20] if damage == "cut" else raw + b"\n")
    payee = next(a.id for a in accounts.values() if a.id.startswith("BKA"))
    other = next(a.id for a in accounts.values() if a.id.startswith("BKB"))
    ec = service.EmbeddedConsortium(
        home, prune_interval=None, checkpoint_interval=3600.0, trust=load_trust(home)
    )
    ec.start()
    try:
        engine = ec.engine("BKA")
        before = engine.head(payee)
        with pytest.raises(BankEngineError, match=f"{path}.* not a 32-byte key"):
            engine.fund(payee, 500)
        assert engine.head(payee) == before  # nothing booked
        # the other banks' keys are untouched
        assert ec.engine("BKB").fund(other, 500).status == "booked"
    finally:
        close_embedded(ec)
