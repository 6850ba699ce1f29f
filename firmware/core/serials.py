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


def paid(w):
    """PAID's entries (b"" if none was written). A PAID that is there but damaged (a zero-length
    one too: writes are atomic) is the STORAGE fault naming it, never "nothing paid": that would
    let a request be paid twice and, with ctr.bin rolled back, a serial be signed twice. The
    counter cannot stand in for it: a rolled-back ctr.bin carries a good tag too. The owner
    wipes the token (WIPE passes the fault) and the bank provisions it again."""
    try:
        return w.records.get(PAID) or b""
    except Corrupt as e:  # 9: EBADF, core.fault names the file and why
        raise OSError(9, "%s damaged (%s)" % (PAID, e.why)) from None


def highest_used(w):
    """The highest serial of a note kept or of a paid request, or 0."""
    kept = w.note_serials()
    top = kept[-1] if kept else 0
    b = paid(w)
    for i in range(16, len(b) - 7, 24):  # entries: digest (16 bytes) + serial (u64)
        s = int.from_bytes(b[i : i + 8], "big")
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
