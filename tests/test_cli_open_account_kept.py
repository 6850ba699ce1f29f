"""`hubi bank open-account` rerun with the key and template an earlier run kept: a damaged
kept file gave an error naming neither file nor a way out ("Truncated: Template truncated: key
needs 33 bytes at offset 28, 22 left", "ValueError: private key must be an integer in [1,
n-1]"). Each now names the file and what to do, exit status 2 as the command's other errors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi.cli import main

pytestmark = pytest.mark.xdist_group("cli-open-account-kept")

AMY = "BKA-amy"
WHAT_TO_DO = f"move {AMY}.secret and {AMY}.template away (keep them) and run again for a new key"


def cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, " ".join(res.output.split())


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose BKA has two databases: AMY open in bank.db, not yet in other.db (so a
    rerun for other.db opens AMY with the kept files); BKA-bo open too (another's template)."""
    root = tmp_path_factory.mktemp("kept")
    home = root / "home"
    for args in (
        ["consortium", "init", "--home", str(home), "--banks", "BKA,BKB"],
        ["bank", "init", "--home", str(home), "--bank", "BKA"],
        ["bank", "init", "--home", str(home), "--bank", "BKA", "--db", str(root / "other.db")],
        ["bank", "open-account", AMY, "--home", str(home), "--bank", "BKA"],
        ["bank", "open-account", "BKA-bo", "--home", str(home), "--bank", "BKA"],
    ):
        code, out = cli(*args)
        assert code == 0, out
    return root


@pytest.fixture
def root(made: Path, tmp_path: Path) -> Path:
    r = tmp_path / "r"
    shutil.copytree(made, r, symlinks=True)
    return r


def _truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[:50])


def _unreadable(f: Path) -> None:  # readable by no one, root included: EIO on read
    f.unlink()
    f.symlink_to("/proc/self/mem")


CASES: list[tuple[str, str, Callable[[Path], None], str]] = [
    ("template-truncated", "template", _truncate, "{f} is not a whole template (Truncated:"),
    ("template-garbage", "template", lambda f: f.write_bytes(b"garbage\n"),
     "{f} is not a whole template (UnknownSuite:"),
    ("template-of-another", "template",
     lambda f: f.write_bytes((f.parent / "BKA-bo.template").read_bytes()),
     f"the kept template is of BKA-bo, not {AMY} ({{k}}, {{f}})"),
    ("key-empty", "secret", lambda f: f.write_bytes(b""), "{f} holds 0 bytes, not a 32-byte key"),
    ("key-short", "secret", lambda f: f.write_bytes(b"\x01" * 7),
     "{f} holds 7 bytes, not a 32-byte key"),
    ("key-out-of-range", "secret", lambda f: f.write_bytes(b"\xff" * 32),
     "{f} holds no usable key (out of range)"),
    ("key-another", "secret", lambda f: f.write_bytes((f.parent / "BKA-bo.secret").read_bytes()),
     f"the kept key of {AMY} is not the one its template seals ({{f}}, {{t}})"),
    ("key-unreadable", "secret", _unreadable, "cannot read {f}: Input/output error: make it readable"),
]  # fmt: skip


@pytest.mark.parametrize("suffix, damage, said", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_damaged_kept_file_is_named_with_what_to_do(
    root: Path, suffix: str, damage: Callable[[Path], None], said: str
) -> None:
    accounts = root / "home" / "accounts"
    key, tpl = accounts / f"{AMY}.secret", accounts / f"{AMY}.template"
    kept = {p: p.read_bytes() for p in (key, tpl)}
    f = accounts / f"{AMY}.{suffix}"
    damage(f)
    args = ["bank", "open-account", AMY, "--home", str(root / "home"), "--bank", "BKA", "--db",
            str(root / "other.db")]  # fmt: skip
    code, out = cli(*args)
    assert code == 2, out
    assert out.startswith("KeptFileError: ") and said.format(f=f, k=key, t=tpl) in out, out
    assert WHAT_TO_DO in out, out
    code, out = cli(*args, "--json")
    assert code == 2 and json.loads(out)["error"] == "KeptFileError", out
    assert said.format(f=f, k=key, t=tpl) in json.loads(out)["message"]
    # the files restored: the rerun opens AMY with them, the key kept as it was
    for p, raw in kept.items():
        p.unlink()
        p.write_bytes(raw)
    code, out = cli(*args, "--fund", "3")
    assert code == 0 and f"opened {AMY} at BKA" in out, out
    assert key.read_bytes() == kept[key]
