"""The firmware build keeps compiled modules by content: a build into a new folder compiles
only what changed, and a damaged cache entry is compiled again, never shipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubi.token import build


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".build.json"
    }


def _no_compiler(*args: object, **kwargs: object) -> None:
    raise AssertionError(f"mpy-cross ran: {args}")


def test_a_second_folder_is_built_from_the_cache_with_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build, "MPY_CACHE", tmp_path / "cache")
    first = build.build(tmp_path / "a", "x64")
    compiled = [p for p in _files(first) if p.endswith(".mpy")]
    assert len(compiled) > 20
    assert len(list((tmp_path / "cache").glob("*.mpy"))) == len(compiled)
    monkeypatch.setattr(build.subprocess, "run", _no_compiler)
    second = build.build(tmp_path / "b", "x64")
    assert _files(second) == _files(first)


def test_a_damaged_entry_is_compiled_again_and_another_arch_is_not_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setattr(build, "MPY_CACHE", cache)
    fresh = _files(build.build(tmp_path / "a", "x64"))
    for entry in cache.glob("*.mpy"):
        entry.write_bytes(b"garbage, not a compiled module")
    again = _files(build.build(tmp_path / "b", "x64"))
    assert again == fresh
    assert all(e.read_bytes()[:1] == b"M" for e in cache.glob("*.mpy"))  # healed
    # the native kernels differ by architecture: an xtensawin build compiles its own
    other = _files(build.build(tmp_path / "c", "xtensawin"))
    assert other.keys() == fresh.keys() and other != fresh


def test_an_edited_module_is_compiled_and_force_compiles_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setattr(build, "MPY_CACHE", cache)
    build.build(tmp_path / "a", "x64")
    before = {p.name for p in cache.glob("*.mpy")}
    # a copy of the firmware tree with one module changed
    root = tmp_path / "tree"
    for part in ("firmware", "shared"):
        build.shutil.copytree(build.ROOT / part, root / part)
    fmt = root / "firmware" / "core" / "fmt.py"
    fmt.write_text(fmt.read_text() + "\nEDITED = 1\n")
    monkeypatch.setattr(build, "FIRMWARE", root / "firmware")
    monkeypatch.setattr(build, "SHARED", root / "shared" / "hubi_core")
    runs: list[list[str]] = []
    real_run = build.subprocess.run

    def counting(cmd: list[str], **kw: object):  # the real compiler, counted
        runs.append(cmd)
        return real_run(cmd, **kw)

    monkeypatch.setattr(build.subprocess, "run", counting)
    out = build.build(tmp_path / "b", "x64")
    assert [Path(c[-1]).name for c in runs] == ["fmt.py"]
    assert len({p.name for p in cache.glob("*.mpy")} - before) == 1
    assert b"EDITED" in (out / "core" / "fmt.mpy").read_bytes()
    runs.clear()
    build.build(tmp_path / "b", "x64", force=True)
    assert len(runs) == len([p for p in _files(out) if p.endswith(".mpy")])
