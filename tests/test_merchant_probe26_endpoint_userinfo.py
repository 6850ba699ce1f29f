"""`hubi merchant upload` without --bank takes the bank's endpoint from the consortium file. It
was used as written: one holding a user name and password ("http://alice:pw@host") was shown
in the progress line and the errors (and sent as an HTTP log-in). It is now checked as --bank
is, and refused with a clear message before anything is sent; the notes stay pending.
Real consortium file signed by its founders, real merchant home, real `hubi` process."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from hubi import kmc
from hubi.merchant import Merchant, init_from_bank_home
from tests.test_merchant_support import MERCHANT, T0, Shop, frames, hubi

SECRET = "s3cretpw"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shop_with_endpoint(root: Path, url: str) -> Shop:
    """create_home's bank home, with BKB's endpoint `url` in the signed consortium file."""
    bank_home = root / "bankhome"
    kmcs = {b: kmc.Kmc.create(b, b"probe26-endpoint" + b.encode()) for b in ("BKA", "BKB")}
    consortium, identities = kmc.make_consortium("hubi", kmcs, {"BKB": [url]}, time=T0)
    for b, ident in identities.items():
        kmcs[b].save(kmc.bank_dir(bank_home, b) / "kmc.secret")
        kmc.write_secret(
            kmc.bank_dir(bank_home, b) / "identity.secret",
            ident.private.to_bytes(32, "big") + ident.separating_key,
        )
    kmc.save_trust(bank_home / "trust", consortium, {b: k.public for b, k in kmcs.items()})
    init_from_bank_home(root / "merchant", bank_home, MERCHANT, now=T0, template_serial=7)
    return Shop(root, bank_home, root / "merchant")


def test_an_endpoint_with_a_password_is_refused_not_shown(tmp_path: Path) -> None:
    url = f"http://alice:{SECRET}@127.0.0.1:{_closed_port()}"
    shop = shop_with_endpoint(tmp_path, url)
    folder = tmp_path / "f"
    folder.mkdir()
    with shop.merchant() as m:
        assert m.trust.consortium.banks["BKB"].endpoints == [url]  # signed, as it came
        m.request(500, "coffee", expires=600)
        frames(shop.payer().note(500, time=int(time.time())), folder)
        (res,) = m.scan(sorted(folder.iterdir()))
    assert res.ok, res
    proc = hubi("merchant", "--home", str(shop.home), "upload", "--retries", "0")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    said = " ".join(out.split())
    assert "the consortium file's endpoint for bank BKB cannot be used" in said, said
    assert "user name or password" in said and "pass --bank" in said, said
    assert SECRET not in out, out
    with Merchant.open(shop.home) as m:
        assert len(m.outbox.pending()) == 1  # nothing lost: it waits for a usable --bank
