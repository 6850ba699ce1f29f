"""A token whose flash cannot give back or take its state files at boot (core.wallet), imported
only then (a module of its own: core.hand is in the heap at every request)."""

from hubi_core.errors import ErrorReply

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_ERR_STORAGE = const(0x010B)
_EBADF = const(9)  # core.wallet: a state file damaged (its name and why in args[1])
_ENOSPC = const(28)


def boot(w):
    """wallet.boot, then the counter moved past the serials kept (core.serials); what to log.
    A state file the flash cannot give back (read error, a folder in its place) or take (full
    at the first boot) leaves the wallet in `fault`, never taken as missing, which would wipe
    the keys or restart the serials: every request then gets STORAGE saying why (gate)."""
    if w.fault is not None:
        w.fault = None
    try:
        if w.boot():
            from core.serials import past_kept

            return past_kept(w)
    except OSError as e:
        w.account = None
        w.pending = None
        w.fault = e
    return None


def gate(w, wipe=False):
    """A token in fault boots again first (room made, the file put back: it works again);
    else the request gets the STORAGE error saying why. A WIPE (`wipe`) goes on to its handler
    when the keystore itself boots (dev.bin, ks.bin, pin.cnt read): the owner can then wipe a
    token whose other state is damaged, with the PIN checked against ks.bin as ever."""
    if w.fault is None:
        return
    boot(w)
    if w.fault is None:
        return
    if wipe:
        try:
            if w.ks.boot():
                return
        except OSError:
            pass
    raise ErrorReply(_ERR_STORAGE, storage_text(w.fault))


def storage_text(e):
    """What a STORAGE error says: a full flash, or which file cannot be used."""
    a = e.args
    n = a[0] if a else None
    if n == _ENOSPC:
        return "the token could not write its files: the flash is full (free space, then retry)"
    if len(a) > 1 and n == _EBADF:
        return "the token cannot use its files: %s" % (a[1],)
    if len(a) > 1:  # hal.storage: a state file there but not readable
        return "the token cannot read its file %s: a flash error (%s)" % (a[1], n)
    return "the token could not write its files: a flash error (%s)" % (n,)
