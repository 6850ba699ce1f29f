"""A damaged treasury key file, met by `hubi bank fund` and `hubi bank serve`.

The engine read HOME/banks/<BANK>/treasury.secret as "its first 32 bytes, as a number" whatever
the file held. A truncated or hand-edited file (or another key put in its place) gave a wrong
key: `hubi bank fund` signed a treasury note with it, the bank's own checks refused the note as
forged ("forged template or every signature bad"), and the operator was left looking for a
forger instead of a damaged file; an empty file gave "private key must be an integer in
[1, n-1]" with no file named. Now the file must hold exactly a 32-byte key in range and be the
key the treasury's template seals; otherwise `fund` says which file is wrong and what to do,
before anything is signed or stored. The node (which never needs the treasury key) still serves.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
from click.testing import CliRunner

from hubi.bank.engine import BankEngine
from hubi.cli import main
from tests import bank_nodes
from tests.bank_nodes import prepare_bank

bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes


def _fund(home: Path, db: str) -> tuple[int, str]:
    res = CliRunner().invoke(
        main,
        ["bank", "fund", "BKA-000001", "5", "--home", str(home), "--bank", "BKA", "--db", db],
        catch_exceptions=False,
    )
    return res.exit_code, " ".join(res.output.split())


def _state(home: Path, db: str) -> tuple[int, int, int, int, list]:
    """Balance and book length of BKA-000001, register size, notes kept, serial counters."""
    with BankEngine.open(db, home=home, bank="BKA") as eng:
        tx = eng.store.reader()
        return (
            eng.balance("BKA-000001"),
            eng.head("BKA-000001").n,
            eng.register_size(),
            int(tx.scalar("SELECT count(*) FROM notes")),
            sorted(tuple(r) for r in tx.all("SELECT name, value FROM counters")),
        )


def test_a_damaged_treasury_key_is_named_and_nothing_is_signed(bank_world, nodes, tmp_path):
    home = bank_world.home
    db = f"sqlite:///{tmp_path / 'bka.db'}"
    accts = prepare_bank(home, "BKA", db, accounts=2, funds=100)
    secret = home / "banks" / "BKA" / "treasury.secret"
    kept = secret.read_bytes()
    other = accts["BKA-000002"].private.to_bytes(32, "big")  # a good key, but not the treasury's
    before = _state(home, db)
    damages = {
        "empty": (b"", "holds 0 bytes, not a 32-byte key"),
        "truncated": (kept[:10], "holds 10 bytes, not a 32-byte key"),
        "a newline added": (kept + b"\n", "holds 33 bytes, not a 32-byte key"),
        "zeros": (bytes(32), "holds no usable key (out of range)"),
        "another key": (other, "is not the one BKA-treasury's template seals"),
    }
    for what, (data, said) in damages.items():
        secret.write_bytes(data)
        code, out = _fund(home, db)
        assert code != 0 and said in out, (what, out)
        if what != "another key":
            assert str(secret) in out, (what, out)
        assert "Traceback" not in out and kept.hex() not in out, (what, out)
        assert _state(home, db) == before, what  # nothing booked, no evidence of a "forgery"
    # a folder where the file should be: named, no traceback
    secret.unlink()
    secret.mkdir()
    code, out = _fund(home, db)
    assert code != 0 and f"cannot read the treasury key {secret}" in out, out
    secret.rmdir()
    # the node never needs the treasury key: it serves with a damaged one
    secret.write_bytes(kept[:10])
    os.chmod(secret, 0o600)
    n = nodes(home, "BKA", db, name="bka").start()
    a = list(accts.values())
    r = httpx.post(n.url + "/v1/notes", content=a[0].note(a[1].id, 7, serial=1), timeout=60)
    assert r.status_code == 200 and r.json()["outcome"] == "booked", r.text
    n.stop()
    # the key put back: funding works again
    secret.write_bytes(kept)
    code, out = _fund(home, db)
    assert code == 0 and "booked" in out, out
    assert _state(home, db)[0] == before[0] - 7 + 5


def _cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, " ".join(res.output.split())


def test_bank_init_names_a_damaged_kept_treasury_file(bank_world, tmp_path):
    """`hubi bank init` of another database opens the treasury with the kept key and template.
    A damaged key file gave "private key must be an integer in [1, n-1]" (no file named) or "the
    kept key of BKA-treasury is not the one its template seals", a key with a byte appended was
    taken as it was, and a folder in place of either file was called "the treasury key of
    another database, with no treasury.template beside it"."""
    home = bank_world.home
    h = ["--home", str(home), "--bank", "BKA"]
    assert _cli("bank", "init", *h, "--db", str(tmp_path / "first.db"))[0] == 0
    secret = home / "banks" / "BKA" / "treasury.secret"
    template = secret.with_name("treasury.template")
    kept = {secret: secret.read_bytes(), template: template.read_bytes()}
    damages = [
        (secret, b"", "treasury.secret holds 0 bytes, not a 32-byte key"),
        (secret, kept[secret][:10], "treasury.secret holds 10 bytes, not a 32-byte key"),
        (secret, kept[secret] + b"\n", "treasury.secret holds 33 bytes, not a 32-byte key"),
        (secret, bytes(32), "treasury.secret holds no usable key (out of range)"),
        (template, kept[template][:20], "treasury.template is not a whole template"),
        (secret, None, "treasury.secret is there but is not a file"),
        (template, None, "treasury.template is there but is not a file"),
    ]
    for i, (f, data, said) in enumerate(damages):
        if data is None:
            f.unlink()
            f.mkdir()
        else:
            f.write_bytes(data)
        code, out = _cli("bank", "init", *h, "--db", str(tmp_path / f"db{i}.db"))
        assert code != 0 and said in out, (f.name, data, out)
        assert kept[secret].hex() not in out, out
        if data is None:
            f.rmdir()
        f.write_bytes(kept[f])
        os.chmod(f, 0o600)
    # the files put back: another database opens the treasury with the very same key
    code, out = _cli("bank", "init", *h, "--db", str(tmp_path / "again.db"), "--json")
    assert code == 0 and '"treasury_created": false' in out, out
    assert secret.read_bytes() == kept[secret]


def test_open_account_names_a_damaged_kmc_and_funds_nothing_half(bank_world, tmp_path):
    """A damaged kmc.secret gave `open-account` "IndexError: index out of range" (empty file);
    `open-account --fund` with a damaged treasury key opened the account, wrote its key, and
    only then failed (or, with a wrong key, tried to fund it with a note the bank refused as
    forged)."""
    home = bank_world.home
    db = str(tmp_path / "bka.db")
    h = ["--home", str(home), "--bank", "BKA", "--db", db]
    assert _cli("bank", "init", *h)[0] == 0
    kmc_file = home / "banks" / "BKA" / "kmc.secret"
    matrix = kmc_file.read_bytes()
    for data in (b"", matrix[:100]):
        kmc_file.write_bytes(data)
        code, out = _cli("bank", "open-account", "BKA-amy", *h, "--out", str(tmp_path / "k"))
        assert code != 0 and f"{kmc_file} is not a usable KMC private matrix" in out, out
        assert "nothing was opened" in out and not (tmp_path / "k" / "BKA-amy.secret").exists()
    kmc_file.write_bytes(matrix)
    secret = home / "banks" / "BKA" / "treasury.secret"
    kept = secret.read_bytes()
    secret.write_bytes(kept[:31])
    code, out = _cli(
        "bank", "open-account", "BKA-bob", *h, "--out", str(tmp_path / "k"), "--fund", "9"
    )
    assert code != 0 and "treasury.secret holds 31 bytes" in out, out
    assert not (tmp_path / "k" / "BKA-bob.secret").exists()
    with BankEngine.open(db, home=home, bank="BKA") as eng:
        assert eng.account("BKA-bob") is None
    secret.write_bytes(kept)
    code, out = _cli(
        "bank", "open-account", "BKA-bob", *h, "--out", str(tmp_path / "k"), "--fund", "9"
    )
    assert code == 0, out
    with BankEngine.open(db, home=home, bank="BKA") as eng:
        assert eng.balance("BKA-bob") == 9
