"""`hubi consortium join/sign` run at the same moment on one home, as real processes. Each run
read the installed and pending epochs, added to them and wrote them back, so the last write
won: two founders signing one pending epoch both exited 0 and one signature was gone (the epoch
never installed); two banks joining were both told "joined: epoch 2" and one was not in it; two
joins of one bank both exited 0, the second writing the bank's keys again. Homes are made by the
real commands; several homes run in one wave so that the runs overlap."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi import kmc as kmc_mod
from hubi.cli import main

pytestmark = pytest.mark.xdist_group("test_cli_probe27_consortium_race")

# Homes raced at once: on a busy machine a run may not get a core until the other is done (the
# old code then went through unharmed); with two homes per wave it failed in (nearly) every run.
HOMES = 2


def cli(*args: str) -> dict:
    res = CliRunner().invoke(main, [*args, "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


# The `hubi` script's own lines, run once stdin closes: the imports (half a second) are done
# before, so the runs of a wave start within a millisecond of each other, not one after another.
START = (
    "import sys\n"
    "from hubi.cli import main\n"
    "sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.read()\n"
    "sys.argv[0] = 'hubi'\n"
    "sys.exit(main())\n"
)


def wave(runs: list[list[str]]) -> list[tuple[int, dict]]:
    """Run every `hubi consortium ARGS --json` at once; (exit code, JSON answer) of each."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", START, "consortium", *args, "--json"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for args in runs
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline() == b"ready\n"
        for p in procs:  # the start signal
            assert p.stdin is not None
            p.stdin.close()
        out = []
        for p in procs:
            assert p.stdout is not None and p.stderr is not None
            stdout, stderr = p.stdout.read(), p.stderr.read()
            p.wait(timeout=60)
            assert p.returncode in (0, 2) and not stderr, (p.returncode, stdout, stderr)
            out.append((p.returncode, json.loads(stdout)))
    finally:
        for p in procs:  # none left waiting for a start signal when a run failed
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HOME/full: founders BKA, BKB, BKC, every key in it. HOME/pending: the same where BKE
    joined while BKB's and BKC's keys were elsewhere (epoch 2 pends, missing both), keys back.
    HOME/away: founders whose BKC key is elsewhere, nothing pending."""
    root = tmp_path_factory.mktemp("race")
    full = root / "full"
    cli("consortium", "init", "--home", str(full), "--banks", "BKA,BKB,BKC")
    pend = root / "pending"
    shutil.copytree(full, pend)
    shutil.move(pend / "banks" / "BKB", root / "BKB")
    shutil.move(pend / "banks" / "BKC", root / "BKC")
    away = root / "away"
    shutil.copytree(pend, away)
    shutil.copytree(root / "BKB", away / "banks" / "BKB")
    assert cli("consortium", "join", "--home", str(pend), "--bank", "BKE")["missing"] == [
        "BKB",
        "BKC",
    ]
    shutil.move(root / "BKB", pend / "banks" / "BKB")
    shutil.move(root / "BKC", pend / "banks" / "BKC")
    return root


def homes(base: Path, which: str, tmp_path: Path, n: int = HOMES) -> list[Path]:
    out = [tmp_path / f"{which}{i}" for i in range(n)]
    for h in out:
        shutil.copytree(base / which, h)
    return out


def installed(home: Path) -> dict:
    return json.loads((home / "trust" / "consortium.json").read_bytes())


def test_two_founders_signing_at_once_both_count(base: Path, tmp_path: Path) -> None:
    hs = homes(base, "pending", tmp_path)
    epoch1 = (hs[0] / "trust" / "consortium.json").read_bytes()
    runs = [["sign", "--home", str(h), "--bank", b] for h in hs for b in ("BKB", "BKC")]
    answers = wave(runs)
    for h, pair in zip(hs, zip(answers[0::2], answers[1::2], strict=True), strict=True):
        assert [code for code, _ in pair] == [0, 0], pair
        # one of them signed first, the other found its signature and installed the epoch
        assert sorted(a["installed"] for _, a in pair) == [False, True], (h, pair)
        assert not list((h / "trust").glob("pending-*")), h
        cons = installed(h)
        assert cons["epoch"] == 2 and sorted(cons["signatures"]) == ["BKA", "BKB", "BKC", "BKE"]
        assert (h / "trust" / "epochs" / "1.json").read_bytes() == epoch1
        kmc_mod.load_trust(h / "trust")  # every signature verifies


def test_two_banks_joining_at_once_are_both_members(base: Path, tmp_path: Path) -> None:
    hs = homes(base, "full", tmp_path)
    answers = wave([["join", "--home", str(h), "--bank", b] for h in hs for b in ("BKE", "BKF")])
    for h, pair in zip(hs, zip(answers[0::2], answers[1::2], strict=True), strict=True):
        assert [code for code, _ in pair] == [0, 0], pair
        # each was told it joined: each is in the epoch it was told of, and both in the last
        assert sorted(a["epoch"] for _, a in pair) == [2, 3], (h, pair)
        for (_, a), bank in zip(pair, ("BKE", "BKF"), strict=True):
            n = a["epoch"]
            cons = installed(h) if n == 3 else json.loads((h / "trust/epochs/2.json").read_bytes())
            assert bank in [b["id"] for b in cons["banks"]], (h, n, bank)
        assert [b["id"] for b in installed(h)["banks"]] == ["BKA", "BKB", "BKC", "BKE", "BKF"]
        kmc_mod.load_trust(h / "trust")


def test_two_banks_joining_at_once_with_a_founder_away_one_pends(
    base: Path, tmp_path: Path
) -> None:
    """A pending epoch is written by one join; the other is refused, not written over it."""
    # the shortest window (no install): the old code got through unharmed more often here
    hs = homes(base, "away", tmp_path, 4)
    answers = wave([["join", "--home", str(h), "--bank", b] for h in hs for b in ("BKE", "BKF")])
    for h, pair in zip(hs, zip(answers[0::2], answers[1::2], strict=True), strict=True):
        assert sorted(code for code, _ in pair) == [0, 2], (h, pair)
        (_, ok), (_, refused) = sorted(pair, key=lambda r: r[0])
        assert "epoch pending in" in refused["message"], refused
        pend = json.loads((h / "trust" / "pending-2.json").read_bytes())
        joined = [b["id"] for b in pend["banks"] if b["id"] not in ("BKA", "BKB", "BKC")]
        assert joined == [ok["signed"][-1]] and ok["missing"] == ["BKC"], (h, ok, pend)


def test_one_bank_joining_twice_at_once_joins_once(base: Path, tmp_path: Path) -> None:
    hs = homes(base, "full", tmp_path)
    answers = wave([["join", "--home", str(h), "--bank", "BKE"] for h in hs for _ in (1, 2)])
    for h, pair in zip(hs, zip(answers[0::2], answers[1::2], strict=True), strict=True):
        assert sorted(code for code, _ in pair) == [0, 2], (h, pair)
        refused = max(pair, key=lambda r: r[0])[1]
        assert "already in consortium" in refused["message"], refused
        # the keys in the home are those of the installed epoch
        trust = kmc_mod.load_trust(h / "trust")
        entry = trust.consortium.banks["BKE"]
        assert kmc_mod.load_kmc(h, "BKE").public.digest() == entry.matrix
        assert kmc_mod.load_bank_identity(h, "BKE").separating_key == entry.key
