"""One issuance or two: is a second note under a note id the payer's note again?

Each signed field of a Note carries its own signature, so whoever holds a note can drop its
optional signed fields (``purpose``, ``allowance``) and what is left still verifies: a second
encoding under the same note id that the payer never signed separately. Double issuance means the
*payer* signed two different notes with one serial; a copy with fields removed is not that.
"""

from __future__ import annotations

from hubi_core import codec
from hubi_core.errors import CodecError

__all__ = ["same_issuance", "same_issuance_bytes"]


def _same_field(a: codec.Obj, b: codec.Obj, name: str) -> bool:
    va, vb = a.values[name], b.values[name]
    if isinstance(va, codec.Obj) or isinstance(vb, codec.Obj):
        # a nested object (the note's template stub): compare its encoding, which is what the
        # wire carries (a verifier may have added what the wire leaves out, e.g. the key)
        try:
            return codec.field_message(a, name) == codec.field_message(b, name)
        except (CodecError, KeyError, AttributeError):
            return False
    if isinstance(va, (bytes, bytearray, memoryview)) and isinstance(
        vb, (bytes, bytearray, memoryview)
    ):
        return bytes(va) == bytes(vb)
    return type(va) is type(vb) and va == vb


def same_issuance(a: codec.Obj, b: codec.Obj) -> bool:
    """True if `a` and `b` are one issuance by their signer: the same kind and header (signer,
    serial, time), and every field one carries is carried by the other with the same value and
    the same signature (one is the other with signed fields removed, or they are equal).

    Depends on the two objects only, so every bank decides alike from the same bytes."""
    if (a.kind, a.signer, a.serial, a.time) != (b.kind, b.signer, b.serial, b.time):
        return False
    small, big = (a, b) if len(a.values) <= len(b.values) else (b, a)
    if set(small.sigs) - set(small.values) or set(big.sigs) - set(big.values):
        return False  # a signature without its field: not a note as decoded
    for name in small.values:
        if name not in big.values or not _same_field(small, big, name):
            return False
        sa, sb = small.sigs.get(name), big.sigs.get(name)
        if (sa is None) != (sb is None) or (sa is not None and bytes(sa) != bytes(sb)):
            return False
    return True


def same_issuance_bytes(a: bytes, b: bytes) -> bool:
    """:func:`same_issuance` of two encoded Notes; False if either does not decode."""
    try:
        return same_issuance(codec.decode(a, codec.NOTE), codec.decode(b, codec.NOTE))
    except CodecError:
        return False
