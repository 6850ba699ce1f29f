"""Receipts (QR5, DESIGN §2 link 6): the merchant's signed acknowledgement to the payer."""

from __future__ import annotations

from hubi_core import codec, lsum

from .config import Identity


def make_receipt(identity: Identity, note: codec.Obj, serial: int, now: int) -> bytes:
    """Receipt for `note`: both accounts, amount, purpose, note id, signed by the merchant."""
    obj = codec.Obj(
        codec.RECEIPT,
        identity.account,
        serial,
        now,
        {
            "template": identity.template,
            "amount": note["amount"],
            "payer": note.signer,
            "note_id": lsum.note_id(note.signer, note.serial),
        },
    )
    if note.get("purpose"):
        obj.values["purpose"] = note["purpose"]
    codec.sign(obj, identity.private)
    return codec.encode(obj)
