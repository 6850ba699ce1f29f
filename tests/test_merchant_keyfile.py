"""Merchant key files: a binary key whose bytes look like whitespace is read as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubi import kmc
from hubi.merchant import Merchant
from hubi.merchant.config import MerchantError, import_identity
from hubi_core import codec
from tests.world import make_world


def test_binary_key_with_whitespace_bytes_and_hex_key(tmp_path: Path) -> None:
    w = make_world()
    trust = tmp_path / "trust"
    kmc.save_trust(trust, w.consortium, {b: k.public for b, k in w.kmcs.items()})
    # a key whose first and last bytes are newline and space (what .strip() would eat)
    key = int.from_bytes(b"\n" + b"\x42" * 30 + b" ", "big")
    priv, tpl = kmc.issue_account(w.kmcs["BKB"], w.banks["BKB"], "BKB-000000000007", 1, 0)
    assert priv != key  # the account's real key is what must round-trip; use it below
    tpl_file = tmp_path / "tpl.bin"
    tpl_file.write_bytes(codec.encode(tpl))
    for name, data in (
        ("bin", priv.to_bytes(32, "big")),
        ("hex", ("%064x\n" % priv).encode()),
    ):
        home = tmp_path / name
        key_file = tmp_path / f"key.{name}"
        key_file.write_bytes(data)
        import_identity(home, key_file, tpl_file, trust)
        with Merchant.open(home) as m:
            assert m.account == "BKB-000000000007"
            assert m.identity.private == priv
    # the whitespace-looking binary key itself is accepted as 32 bytes (then rejected as not
    # matching the template, which names the problem)
    odd = tmp_path / "odd.bin"
    odd.write_bytes(key.to_bytes(32, "big"))
    with pytest.raises(MerchantError):
        import_identity(tmp_path / "odd", odd, tpl_file, trust)
    short = tmp_path / "short.bin"
    short.write_bytes(b"\x01" * 31)
    with pytest.raises(MerchantError, match="32 bytes"):
        import_identity(tmp_path / "short", short, tpl_file, trust)
