"""Secrets on disk and in output, checked on the real commands run under `umask 000`.

A key file was always made 0600, but the folders made for it (and those of the trust bundle)
were made 0777 less the umask: under `umask 000` anyone could swap a bank's KMC matrix, its
identity key or the consortium file for their own. A kept treasury key file cut short or grown
by a byte was taken for a key all the same (its first 32 bytes, or a smaller number).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hubi import kmc
from hubi.bank.engine import BankEngine
from hubi.files import write_secret
from hubi_core import ec

pytestmark = pytest.mark.xdist_group("test_security_probe28_secret_files")

HUBI = str(Path(sys.executable).with_name("hubi"))


def _umask0() -> None:
    os.umask(0)


def hubi(*args: str, env: dict[str, str] | None = None, code: int = 0) -> str:
    """`hubi ARGS` in a child process under umask 000: stdout and stderr together."""
    res = subprocess.run(
        [HUBI, *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        preexec_fn=_umask0,
        env={**os.environ, **(env or {})},
    )
    out = res.stdout + res.stderr
    assert res.returncode == code, (args, out)
    assert "Traceback" not in out, out
    return out


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def secrets_in(root: Path) -> dict[str, bytes]:
    """Every private scalar kept under `root`: the 32-byte keys and each cell of a KMC matrix."""
    found: dict[str, bytes] = {}
    for p in root.rglob("*.secret"):
        raw = p.read_bytes()
        if p.name == "kmc.secret":
            body = raw[1 + raw[0] :]
            for i in range(0, len(body), 32):
                found[f"{p}#{i // 32}"] = body[i : i + 32]
        else:
            found[str(p)] = raw[:32]
    return found


def forms(key: bytes) -> list[bytes]:
    """How a scalar could be written out: its bytes, its hex either case, its decimal."""
    return [key, key.hex().encode(), key.hex().upper().encode(), str(int.from_bytes(key)).encode()]


def assert_no_secret(secrets: dict[str, bytes], text: bytes, where: str) -> None:
    for name, key in secrets.items():
        for form in forms(key):
            assert form not in text, f"{name} in {where}"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A bank home, a merchant home and every output of the commands that made them, each run
    under umask 000: consortium init, bank init, open-account, merchant init, consortium join."""
    top = tmp_path_factory.mktemp("umask0")
    home, mhome = top / "home", top / "merchant"
    h = str(home)
    outs = [
        hubi("consortium", "init", "--banks", "BKA,BKB", "--home", h, "--json"),
        hubi("bank", "init", "--home", h, "--bank", "BKA", "--json"),
        hubi("bank", "open-account", "BKA-c1", "--home", h, "--bank", "BKA", "--json"),
        hubi(
            "merchant",
            "init",
            "--bank-home",
            h,
            "--account",
            "BKA-m1",
            "--json",
            env={"HUBI_MERCHANT_HOME": str(mhome)},
        ),  # fmt: skip
        hubi("consortium", "join", "--home", h, "--bank", "BKC", "--json"),
    ]
    return home, mhome, "\n".join(outs)


def test_key_files_and_their_folders_under_umask_000(made: tuple[Path, Path, str]) -> None:
    """Every key file 0600; no folder it lies in, up to the test's own, nor a folder of the
    trust bundle, is writable by others (they were 0777)."""
    home, mhome, _ = made
    keys = sorted([*home.rglob("*.secret"), *mhome.rglob("*.secret")])
    names = {p.name for p in keys}
    assert {"kmc.secret", "identity.secret", "treasury.secret", "BKA-c1.secret"} <= names
    assert {"account.secret"} <= names, names
    stop = home.parent.parent
    for key in keys:
        assert mode(key) == 0o600, (key, oct(mode(key)))
        d = key.parent
        while d != stop:
            assert not mode(d) & 0o002, f"{d} is writable by anyone ({oct(mode(d))})"
            d = d.parent
    for d in (home / "trust", home / "trust" / "matrices"):
        assert not mode(d) & 0o002, f"{d} is writable by anyone ({oct(mode(d))})"
    for p in [mhome / "trust", *(mhome / "trust").rglob("*")]:  # the merchant's copy
        assert not mode(p) & 0o002, f"{p} is writable by anyone ({oct(mode(p))})"
    assert not [p for p in [*home.rglob("*.tmp"), *mhome.rglob("*.tmp")]]  # none left behind


def test_the_merchants_copy_of_a_bundle_anyone_may_write_is_not(tmp_path: Path) -> None:
    """shutil.copytree copies the modes: a bank's bundle left writable by anyone (made by an
    older release under umask 000) gave the merchant a copy anyone could replace."""
    from hubi.merchant.config import _copy_trust

    src = tmp_path / "src"
    (src / "matrices").mkdir(parents=True)
    (src / "consortium.json").write_text("{}")
    (src / "matrices" / "BKA.pub").write_bytes(b"x")
    for p in [src, *src.rglob("*")]:
        p.chmod(0o777 if p.is_dir() else 0o666)
    _copy_trust(src, tmp_path / "copy")
    for p in [tmp_path / "copy", *(tmp_path / "copy").rglob("*")]:
        assert not mode(p) & 0o002, f"{p} is writable by anyone ({oct(mode(p))})"


def test_no_secret_in_outputs_or_other_files(made: tuple[Path, Path, str]) -> None:
    """No private scalar in what the commands printed (JSON too) nor in any file but its own
    (the database, templates, the trust bundle, the merchant's files)."""
    home, mhome, out = made
    secrets = {**secrets_in(home), **secrets_in(mhome)}
    assert len(secrets) > 3 * 1024, len(secrets)  # three KMC matrices and the keys
    assert_no_secret(secrets, out.encode(), "the commands' output")
    for p in [*home.rglob("*"), *mhome.rglob("*")]:
        if p.is_file():
            own = {n: k for n, k in secrets.items() if n.split("#")[0] != str(p)}
            assert_no_secret(own, p.read_bytes(), str(p))


def test_a_damaged_key_file_is_named_without_its_bytes(
    made: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """A key file grown by a byte makes the command fail naming it, never printing the key."""
    home, _, _ = made
    key = home / "banks" / "BKA" / "identity.secret"
    good = key.read_bytes()
    try:
        key.write_bytes(good + b"\x01")
        out = hubi("bank", "open-account", "BKA-c9", "--home", str(home), "--bank", "BKA", code=2)
        assert "identity file of bank BKA is corrupt (66 bytes)" in " ".join(out.split()), out
        assert_no_secret({"identity": good[:32]}, out.encode(), "the error")
    finally:
        key.write_bytes(good)


def _kept_treasury(made: tuple[Path, Path, str], tmp_path: Path, raw: bytes) -> str:
    """kmc.open_treasury (as `consortium up` runs it) on a new database of BKA, whose kept
    treasury key file holds `raw`: what it raised."""
    home = tmp_path / "home"
    src = made[0]
    subprocess.run(["cp", "-a", str(src), str(home)], check=True, timeout=60)
    (kmc.bank_dir(home, "BKA") / kmc.TREASURY_SECRET).write_bytes(raw)
    with BankEngine.open(f"sqlite:///{tmp_path}/new.db", home=home, bank="BKA") as eng:
        with pytest.raises(ValueError) as err:
            kmc.open_treasury(eng, home, "BKA")
        assert eng.account(eng.treasury) is None  # nothing opened with it
    return str(err.value)


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda good: good + b"\x00", "holds 33 bytes, not a 32-byte key"),
        (lambda good: good[:31], "holds 31 bytes, not a 32-byte key"),
        (lambda good: b"", "holds 0 bytes, not a 32-byte key"),
        (lambda good: ec.N.to_bytes(32, "big"), "holds no usable key (out of range)"),
    ],
)
def test_a_kept_treasury_key_of_the_wrong_size_is_refused(
    made: tuple[Path, Path, str], tmp_path: Path, damage, words: str
) -> None:
    """A kept treasury key grown by a byte opened the treasury with its first 32 bytes; one cut
    short was taken for a smaller number. Now each is refused, naming the file, not the key."""
    good = (kmc.bank_dir(made[0], "BKA") / kmc.TREASURY_SECRET).read_bytes()
    said = _kept_treasury(made, tmp_path, damage(good))
    assert f"{kmc.TREASURY_SECRET} {words}" in said, said
    assert_no_secret({"treasury": good}, said.encode(), "the error")


_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from hubi import files
    real = os.fsync
    def held(fd):  # the bytes are in the temporary file: say so, and wait to be killed
        real(fd)
        sys.stdout.write("written\\n"); sys.stdout.flush()
        time.sleep(60)
    os.fsync = held
    os.umask(0)
    files.write_secret(sys.argv[1], b"\\x5a" * 32)
    """
)


def test_a_secret_killed_mid_write_is_never_readable_by_others(tmp_path: Path) -> None:
    """SIGKILL while the secret is in its temporary file, under umask 000: that file is 0600
    from its first byte and stays so, the folders made for it are not writable by others (the
    new one is the owner's only), and no target file is there."""
    target = tmp_path / "a" / "b" / "kmc.secret"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "written\n"
        tmps = list(target.parent.glob(".kmc.secret.*.tmp"))
        assert len(tmps) == 1 and mode(tmps[0]) == 0o600, tmps
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert not target.exists()
    assert mode(tmps[0]) == 0o600 and tmps[0].read_bytes() == b"\x5a" * 32
    assert mode(target.parent) == 0o700, oct(mode(target.parent))
    assert mode(target.parent.parent) == 0o775, oct(mode(target.parent.parent))


def test_a_folder_anyone_may_write_to(tmp_path: Path) -> None:
    """A world-writable folder of ours (made under umask 000) loses that bit before a secret is
    written in it, up the tree; one of another user's gets no secret at all."""
    assert os.geteuid() == 0, "run the tests as root (a folder of another user is made here)"
    ours = tmp_path / "ours" / "keys"
    ours.mkdir(parents=True)
    for d in (ours, ours.parent):
        d.chmod(0o777)
    write_secret(ours / "k.secret", b"\x01" * 32)
    assert mode(ours) == 0o775 and mode(ours.parent) == 0o775
    assert mode(ours / "k.secret") == 0o600

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    theirs.chmod(0o777)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(OSError) as err:
        write_secret(theirs / "k.secret", b"\x01" * 32)
    assert err.value.filename == str(theirs) and "anyone may write to" in str(err.value)
    assert list(theirs.iterdir()) == [] and mode(theirs) == 0o777

    sticky = tmp_path / "sticky"  # like /tmp: only a file's owner may rename or remove it
    sticky.mkdir()
    sticky.chmod(0o1777)
    write_secret(sticky / "k.secret", b"\x01" * 32)
    assert mode(sticky) == 0o1777 and mode(sticky / "k.secret") == 0o600
