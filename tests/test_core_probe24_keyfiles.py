"""A damaged key file is named with what is wrong, never an IndexError or a codec's words.

A KMC secret cut to nothing (a full disk), or whose owner bytes are not UTF-8, made
`hubi bank init` say "IndexError: index out of range" (and `open-account` name no more than
that exception) or a UnicodeDecodeError; a bank
identity whose separating key is no point was taken as it was, to be written into the
consortium file by `hubi consortium join`. A public matrix whose owner is not UTF-8 said
nothing at all on the token (its UnicodeError has no message).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi import kmc
from hubi.cli import main
from hubi_core import cpk
from tests.mpy import run_mpy
from tests.world import make_world

SERIALS = itertools.count(1)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    h = tmp_path_factory.mktemp("home")
    res = CliRunner().invoke(main, ["consortium", "init", "--banks", "BKA,BKB", "--home", str(h)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["bank", "init", "--home", str(h), "--bank", "BKA"])
    assert res.exit_code == 0, res.output
    return h


def said(*args: str) -> str:
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code != 0, (args, res.output)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return " ".join(res.output.split())


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda raw: b"", "private matrix: 0 bytes, no owner name at its start"),
        (lambda raw: raw[:1], "private matrix: 1 bytes, no owner name at its start"),
        (lambda raw: b"\0" + raw[1:], "no owner name at its start"),
        (
            lambda raw: raw[:1] + b"\xff" + raw[2:],
            "private matrix: owner (bytes 1..3) is not UTF-8 text",
        ),
        (lambda raw: raw[:-1], "private matrix must hold 1024 32-byte scalars"),
        (lambda raw: raw[:4] + bytes(32) + raw[36:], "matrix scalar out of range [1, n-1]"),
    ],
)
def test_a_damaged_kmc_file_is_named(home: Path, damage, words: str) -> None:
    path = kmc.bank_dir(home, "BKA") / "kmc.secret"
    good = path.read_bytes()
    account = f"BKA-x{next(SERIALS)}"
    opening = ["bank", "open-account", account, "--home", str(home), "--bank", "BKA"]
    try:
        path.write_bytes(damage(good))
        out = said(*opening)
        assert f"KMC file of bank BKA ({path}) is corrupt: " in out and words in out, out
        assert good[4:36].hex() not in out  # no key material in the message
    finally:
        path.write_bytes(good)
    res = CliRunner().invoke(main, opening)
    assert res.exit_code == 0, res.output  # nothing was opened: the good file serves


@pytest.mark.parametrize(
    ("at", "value", "words"),
    [
        (32, 0x05, "point encoding: bad first byte 0x05"),
        (33, None, "point x coordinate not below the field prime"),
    ],
)
def test_a_bank_identity_whose_separating_key_is_no_point_is_refused(
    home: Path, at: int, value: int | None, words: str
) -> None:
    path = kmc.bank_dir(home, "BKA") / "identity.secret"
    good = path.read_bytes()
    bad = bytearray(good)
    if value is None:
        bad[33:65] = b"\xff" * 32
    else:
        bad[at] = value
    try:
        path.write_bytes(bytes(bad))
        with pytest.raises(ValueError) as caught:
            kmc.load_bank_identity(home, "BKA")
        assert str(caught.value) == (
            f"identity file of bank BKA is corrupt (bytes 32..64, separating key: {words})"
        )
        out = said("bank", "show", "BKA-treasury", "--home", str(home), "--bank", "BKA")
        assert "identity file of bank BKA is corrupt" in out, out
        assert good[:32].hex() not in out
    finally:
        path.write_bytes(good)
    assert kmc.load_bank_identity(home, "BKA").separating_key == good[32:]


def test_a_bank_identity_whose_key_is_out_of_range_is_named(home: Path) -> None:
    path = kmc.bank_dir(home, "BKA") / "identity.secret"
    good = path.read_bytes()
    try:
        for key in (bytes(32), b"\xff" * 32):
            path.write_bytes(key + good[32:])
            with pytest.raises(ValueError) as caught:
                kmc.load_bank_identity(home, "BKA")
            assert str(caught.value) == (
                "identity file of bank BKA is corrupt (bytes 0..31, key out of range)"
            )
    finally:
        path.write_bytes(good)


def test_a_public_matrix_owner_not_utf8_is_said_on_both(tmp_path: Path) -> None:
    raw = bytearray(make_world().kmcs["BKA"].public.to_bytes())
    raw[4] = 0xFF  # the owner's first byte
    words = "public matrix: owner (bytes 4..6) is not UTF-8 text"
    for validate in (False, True):
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
            cpk.PublicMatrix.from_bytes(bytes(raw), validate=validate)
    priv = bytearray(b"\x03\xffKA" + bytes(32 * 1024))
    spec = tmp_path / "m.json"
    spec.write_text(json.dumps([raw.hex(), priv.hex()]))
    script = tmp_path / "m.py"
    script.write_text(
        "import json, sys\nfrom hubi_core import cpk\n"
        "pub, priv = [bytes.fromhex(h) for h in json.load(open(sys.argv[1]))]\n"
        "out = []\n"
        "for f in (lambda: cpk.PublicMatrix.from_bytes(pub, validate=False),\n"
        "          lambda: cpk.PrivateMatrix.from_bytes(priv)):\n"
        "    try:\n"
        "        f()\n"
        "        out.append('accepted')\n"
        "    except ValueError as e:\n"
        "        out.append(str(e))\n"
        "print(json.dumps(out))\n"
    )
    assert json.loads(run_mpy(script=script, args=[str(spec)], heapsize="4M")) == [
        words,
        "private matrix: owner (bytes 1..3) is not UTF-8 text",
    ]


def test_a_bank_init_with_an_empty_kmc_file_says_so(home: Path) -> None:
    path = kmc.bank_dir(home, "BKB") / "kmc.secret"
    good = path.read_bytes()
    init = ["bank", "init", "--home", str(home), "--bank", "BKB"]
    try:
        path.write_bytes(b"")  # a full disk cut it
        out = said(*init)
        assert (
            f"KMC file of bank BKB ({path}) is corrupt: private matrix: 0 bytes, no owner name"
            in out
        ), out
        assert "IndexError" not in out
    finally:
        path.write_bytes(good)
    res = CliRunner().invoke(main, init)
    assert res.exit_code == 0, res.output
