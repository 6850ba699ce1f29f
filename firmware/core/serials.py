"""Serials this token already used, imported for one step (core/__init__.py).

ctr.bin rolled back to an older copy of its own carries a good tag, so its note serial could
go back and a serial be signed twice. The notes the token keeps (hist/) and the requests it
paid (core.wallet.PAID) show the serials it used: at boot the counter moves past them
(``past_kept``), and the signer never signs one of them (core.paysign). A copy of every file
cannot be told from the original: software alone cannot do more.
"""

from core.store import Corrupt
from core.wallet import PAID

_LAST = 0xFFFFFFFFFFFFFFFF  # u64 (codec, ctr.bin): no serial at or past it is kept


def highest_used(w):
    """The highest serial of a note kept or of a paid request, or 0."""
    kept = w.note_serials()
    top = kept[-1] if kept else 0
    try:
        paid = w.records.get(PAID) or b""
    except Corrupt:
        paid = b""
    for i in range(16, len(paid) - 7, 24):  # entries: digest (16 bytes) + serial (u64)
        s = int.from_bytes(paid[i : i + 8], "big")
        if top < s < _LAST:
            top = s
    return top


def past_kept(w):
    """Boot: move a counter that is not above every used serial past them; what to log."""
    c = w.counter
    top = highest_used(w)
    now = max(c.next_serial, c.first)
    if top < now:
        return None
    c = w._copy_counter()
    c.next_serial = top + 1
    if w.counter_damaged:  # no allowance: nothing signs; loading one saves the counter
        w.counter = c
    else:
        w._save_counter(c)
    return "ctr.bin: next serial #%d is not above #%d, kept on this token: moved to #%d" % (
        now,
        top,
        top + 1,
    )
