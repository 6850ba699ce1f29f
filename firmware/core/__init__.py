"""The token's core (pure logic) and its module loader.

A 96 KB heap cannot hold every module at once: on MicroPython the function, class and
constant objects a module creates when it is imported live in the heap even when its bytecode
runs in place from flash (ROMFS). So the token keeps only what it needs between requests
(the link, the dispatcher, the wallet's state, the screens) and imports the rest for one step
of one request: the verifier to check a payment request, the signer to sign the note, the QR
encoder to show it, the provisioning checks once. ``release()`` forgets every module imported
since ``mark_resident()`` (the end of boot), and the collector gives their memory back. Interned
names (qstrs) stay: importing a module again costs time, not heap.

Resident modules import the others inside functions, never at module level, and keep no
object of a released module's classes (that would keep the whole module alive).
On CPython these calls do nothing.
"""

import gc
import sys

_resident = None
# Modules with native (@micropython.native/viper) code are never released once loaded: their
# machine code is not in the GC heap (unix: mmap'd pages, ESP32: IRAM) and MicroPython never
# frees it, so importing them again would leak it. With the modules they import, they stay.
STICKY = (
    "hubi_core.ec",
    "hubi_core.ec_ct",
    "hubi_core.ec_vt",
    "hubi_core.suite",
    "hubi_core.aesgcm",
)


def mark_resident():
    """The modules loaded now stay for good (app.build() calls this once)."""
    global _resident
    if sys.implementation.name == "micropython":
        _resident = set(sys.modules)


def release(keep=()):
    """Drop every module imported since mark_resident() except the names in `keep`."""
    if _resident is None:
        return
    for name in list(sys.modules):
        if name in _resident or name in keep or name in STICKY:
            continue
        del sys.modules[name]
        pkg, _, leaf = name.rpartition(".")
        parent = sys.modules.get(pkg)
        if parent is not None and leaf in parent.__dict__:
            delattr(parent, leaf)  # a package keeps its imported submodules as attributes
    gc.collect()


def warm_up(*groups):
    """Import each group of module names (and what they import) once, then release them: the
    names they intern are interned now, while the heap is still empty. MicroPython keeps
    interned names in pools that only grow, each twice the size of the last (7 KB for the
    640-name pool on a 64-bit port): made in the middle of a payment, in a fragmented heap,
    such a block may not find room that would be there now. A group is what one step of a
    request loads together; groups are released one after the other."""
    if _resident is None:
        return
    for names in groups:
        for name in names:
            __import__(name)
        release()
