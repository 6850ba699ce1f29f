"""The firmware build keeps compiled modules by content: a build into a new folder compiles
only what changed, and a damaged cache entry is compiled again, never shipped."""

from __future__ import annotations

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
