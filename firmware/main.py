"""hubi token firmware entry point: mount the code image (simulator) and run app.run().

    micropython main.py CONFIG.json      the simulator (hubi token sim writes CONFIG.json)
    main.py on a board                   reads /board.json ({"board": "m5stack_core", ...})
                                         written by `hubi token deploy`

MicroPython compiles this file from source into the heap at boot: it stays this small, and
the application itself (app.py) is compiled with the rest of the bundle and runs from flash.
"""

import sys


def _mount_rom():
    """Simulator: mount the ROMFS image the launcher mapped outside the heap (hubi.token.romrun),
    as MicroPython mounts a board's ROMFS partition at /rom."""
    import os

    spec = os.getenv("HUBI_ROMFS") if hasattr(os, "getenv") else None
    if not spec:
        return
    import uctypes
    import vfs

    addr, n = spec.split(":")
    vfs.mount(vfs.VfsRom(memoryview(uctypes.bytearray_at(int(addr), int(n)))), "/rom")
    sys.path[:0] = ["/rom", "/rom/lib"]


if __name__ == "__main__":
    _mount_rom()
    del _mount_rom
    from app import run

    run()
