"""Signing a note, imported for one step and released after it (core/__init__.py).

The note is written without the codec (``note_bytes``): its fields are few and fixed, and their
bytes are written as codec.encode writes them (tests/test_token_core.py compares both byte for
byte; the host verifies every note the simulator returns with the shared core). The serial
and the allowance are persisted BEFORE the note is signed.
"""

import gc
import hashlib

from core.pay import PAID_MAX, _paid, recheck
from core.wallet import PAID, _u64

_SIG_DOMAIN = b"hubi/sig/1\x00"  # codec.SIG_DOMAIN
_NOTE_PREFIX = b"\x01\x03\x01"  # suite 1, kind Note, version 1
ROOM = "hist/room.tmp"  # _reserve
_SIG = 64  # suite.SIG_LEN: raw r||s
_RECORD = 23  # core.store: header (7) and tag (16) around a record's body


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if not n:
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def _tlv(tag, raw):
    return bytes([tag]) + _varint(len(raw)) + raw


def template_stub(tpl):
    """The compact template a note carries (codec's note.template), from the account's encoded
    Template: its header (bank, serial, time), currency and the bank's seal."""
    p = 4 + tpl[3]  # suite, kind, version, bank length, bank
    while tpl[p] & 0x80:  # serial (varint)
        p += 1
    hend = p + 5  # + time (u32)
    p = hend
    cur = None
    while cur is None:  # fields: tag, length (< 128 in a template), value
        n = tpl[p + 1]
        if tpl[p] == 0x15:
            cur = tpl[p + 2 : p + 2 + n]
        p += 2 + n
    return bytes(tpl[3:hend]) + bytes(cur) + bytes(tpl[-64:])


def _head(payer, serial, t):
    a = payer.encode()
    return bytes([len(a)]) + a + _varint(serial) + t.to_bytes(4, "big")


def _fields(amount, purpose, payee):
    fields = [_tlv(0x10, _varint(amount))]
    if purpose:
        fields.append(_tlv(0x11, purpose.encode()))
    fields.append(_tlv(0x12, payee.encode()))
    return fields


def kept_size(payer, serial, t, stub, amount, payee, purpose):
    """Bytes of the record that keeps this note (hist/nNNNNNNNN), known before it is signed:
    what note_bytes writes, with a signature of each field and the lsum's value left out."""
    fields = _fields(amount, purpose, payee)
    n = len(_NOTE_PREFIX) + len(_head(payer, serial, t)) + len(_tlv(0x08, stub)) + 2  # lsum
    for f in fields:
        n += len(f) + _SIG
    return n + _SIG + _RECORD  # + the lsum's signature, + the record around the note


def note_bytes(payer, serial, t, stub, amount, payee, purpose, priv):
    """The signed Note, as codec.encode(codec.sign(codec.make_note(...), priv)) writes it."""
    from hubi_core import lsum, suite

    head = _head(payer, serial, t)
    fields = _fields(amount, purpose, payee)
    fields.append(_tlv(0x3F, lsum.to_bytes(lsum.lsum(payer, serial, amount, purpose, payee))))
    msgs = [_SIG_DOMAIN + _NOTE_PREFIX + head + f for f in fields]
    sigs = suite.sign_batch(priv, msgs)
    del msgs
    fields[-1] = b"\x3f\x00"  # lsum: signed, but its value is not on the wire
    out = _NOTE_PREFIX + head + _tlv(0x08, stub)
    for f, s in zip(fields, sigs):
        out += f + s
    return out


def sign(w, p, priv):
    """Persist serial + 1 and the allowance decrement, THEN sign; returns the note bytes."""
    from core.wallet import TPL

    w._need_ready()
    payee, amount, purpose, request = p[0], p[1], p[2], p[3]
    recheck(w, p)  # expiry, paid requests, allowance: as now, not as when it was checked
    stub = template_stub(w.records.get(TPL))
    c = w._copy_counter()
    serial = c.next_serial if c.next_serial >= c.first else c.first
    from core.serials import highest_used

    top = highest_used(w)
    if serial <= top:  # the counter went back: never sign a serial this token used
        serial = top + 1
    t = w.now()
    c.next_serial = serial + 1
    c.spent += amount
    c.last_time = t
    old = w.counter
    _reserve(w.storage, kept_size(w.account, serial, t, stub, amount, payee, purpose))
    try:
        w._save_counter(c)  # <- the point of no return: this serial is used up
        if request is not None:  # before the note: a power cut must not let it be paid twice
            _remember_request(w, request, serial)
    except OSError:  # refused, nothing signed: the serial and the allowance as they were
        w.storage.remove(ROOM)
        if w.counter is not old:
            try:
                w._save_counter(old)  # safe: no note carries this serial
            except OSError:
                pass  # the serial stays skipped and the amount counted: never signed twice
        raise
    gc.collect()
    # no allowance field: the bank finds the allowance a note spends from its serial (each
    # allowance covers the serials from its first_serial on), which keeps notes ~70 bytes
    # shorter (one QR version less)
    raw = note_bytes(w.account, serial, t, stub, amount, payee, purpose, priv)
    priv = None
    gc.collect()
    w.storage.remove(ROOM)  # its room goes to the note's copy
    try:
        _keep_note(w, serial, raw)
    except OSError:  # flash full: the note is signed and its serial used, so it goes out
        pass  # all the same (only this token's copy of it is missing)
    gc.collect()
    return raw


def _reserve(st, n):
    """Take the room of this token's copy of the note (ROOM) before its serial is used, and
    give it to the note once signed. A flash that cannot keep the note then refuses the
    payment (STORAGE) with nothing signed or spent; without it, a flash with one page free
    took the counter and the paid request, and the note went out with no copy kept. A power
    cut leaves ROOM (a .tmp: no record), written over by the next payment. Its size is the
    note's own (kept_size): a fixed 512 bytes left a note with a long purpose and long account
    ids (519 bytes kept) without its copy on a flash with 512 bytes free."""
    try:
        with st.open(ROOM, "wb") as f:
            f.write(bytes(n))
    except OSError:
        st.remove(ROOM)
        raise


def _keep_note(w, serial, raw):
    from core.wallet import HISTORY

    w.records.put("hist/n%08d" % serial, raw)
    for s in w.note_serials()[:-HISTORY]:  # the oldest by serial, not by name
        w.records.delete("hist/n%08d" % s)


def _remember_request(w, request, serial):
    """Keep the digests of the last PAID_MAX paid requests (16 bytes + serial each), so
    the same Request shown twice is not paid twice by mistake."""
    entry = hashlib.sha256(bytes(request)).digest()[:16] + _u64(serial)
    w.records.put(PAID, (_paid(w) + entry)[-24 * PAID_MAX :])
