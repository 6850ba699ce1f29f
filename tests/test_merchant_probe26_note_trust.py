"""`hubi note show FILE` verified against a trust bundle found next to FILE: a forged note
shipped with a forged consortium file (real, signed by the forger's own founders) checked out,
the output only naming the file it used. Now it verifies against a trusted bundle: one given
with --trust, else the merchant home's own; one beside the note is named, never used unasked.
Real `hubi` processes, real KMCs, real signed notes and consortium files."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_merchant_support import HUBI, ROOT, Shop, env, make_shop


def note_show(*args: str, home: Path | None, user_home: Path) -> tuple[int, str, str]:
    e = env()
    e["HOME"] = str(user_home)  # no ~/.hubi/merchant of the machine's user
    if home is not None:
        e["HUBI_MERCHANT_HOME"] = str(home)
    proc = subprocess.run(
        [*HUBI, "note", "show", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=e,
        cwd=ROOT,
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Shop, Path, Path, Path]:
    """The merchant's shop; a forged note beside the forger's consortium; a genuine note."""
    root = tmp_path_factory.mktemp("note-trust")
    shop = make_shop(root / "shop")
    forger = make_shop(root / "forger", seed=b"someone else's founders")
    got = root / "got"
    got.mkdir()
    shutil.copytree(forger.bank_home / "trust", got / "trust")
    (got / "note.bin").write_bytes(forger.payer().note(500_000))
    genuine = root / "genuine.bin"
    genuine.write_bytes(shop.payer().note(1250))
    user = root / "user"
    user.mkdir()
    return shop, got, genuine, user


def test_a_forged_consortium_beside_a_forged_note_does_not_vouch_for_it(world) -> None:
    shop, got, _, user = world
    forged_trust = json.loads((got / "trust" / "consortium.json").read_text())
    own_trust = json.loads((shop.home / "trust" / "consortium.json").read_text())
    assert forged_trust["signatures"] and forged_trust != own_trust  # a real, signed file
    note = str(got / "note.bin")
    # the default: the merchant's own consortium, which the forged note fails
    code, out, err = note_show(note, "--json", home=shop.home, user_home=user)
    ver = json.loads(out)["verification"]
    assert code == 1 and ver["ok"] is False, out + err
    assert ver["trust"] == str(shop.home / "trust") and ver["trust_from"] == "merchant home"
    code, out, _ = note_show(note, home=shop.home, user_home=user)
    said = " ".join(out.split())
    assert code == 1 and "verification failed against the trust bundle" in said, said
    assert f"{shop.home / 'trust'} (from merchant home)" in said and "verified offline" not in said
    # the same with --home naming the merchant
    code, out, _ = note_show(note, "--home", str(shop.home), "--json", home=None, user_home=user)
    assert code == 1 and json.loads(out)["verification"]["ok"] is False


def test_without_a_merchant_the_bundle_beside_the_note_is_named_not_used(world) -> None:
    _, got, _, user = world
    code, out, err = note_show(str(got / "note.bin"), "--json", home=None, user_home=user)
    ver = json.loads(out)["verification"]
    assert code == 0 and ver["ok"] is None, out + err
    assert f"the trust bundle {got / 'trust'} beside the file" in ver["reason"]
    assert "pass --trust DIR" in ver["reason"]
    code, out, _ = note_show(str(got / "note.bin"), home=None, user_home=user)
    said = " ".join(out.split())
    assert "not verified: no trusted consortium" in said and "verified offline" not in said


def test_a_bundle_given_explicitly_is_used_and_named(world) -> None:
    shop, got, genuine, user = world
    code, out, _ = note_show(
        str(got / "note.bin"), "--trust", str(got / "trust"), home=shop.home, user_home=user
    )
    said = " ".join(out.split())
    assert code == 0 and f"against the trust bundle {got / 'trust'} (from --trust)" in said, said
    # a genuine note checks out against the merchant's own bundle by default
    code, out, _ = note_show(str(genuine), "--json", home=shop.home, user_home=user)
    ver = json.loads(out)["verification"]
    assert code == 0 and ver["ok"] is True and ver["trust_from"] == "merchant home", out


def test_a_merchant_home_named_but_missing_is_an_error(world, tmp_path: Path) -> None:
    _, _, genuine, user = world
    code, out, _ = note_show(
        str(genuine), "--home", str(tmp_path / "none"), "--json", home=None, user_home=user
    )
    err = json.loads(out)
    assert code == 2 and err["error"] == "MerchantError", err
    assert f"no merchant in {tmp_path / 'none'}" in err["message"]
