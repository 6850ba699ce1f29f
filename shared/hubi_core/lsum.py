"""Linear sum (lsum) of a record's fields and note ids (DESIGN §4).

lsum = sum over (tag, value) of the first 128 bits of SHA-256(domain || tag || value), mod 2^128,
for account, serial, amount, purpose and counterparty (time is left out so a lost record's fields
stay enumerable). Linear on purpose: with all but one field known, the missing field's digest is a
subtraction, and two unknown fields meet in the middle.
"""

import hashlib

LSUM_DOMAIN = b"hubi/lsum/1\x00"
NOTE_ID_DOMAIN = b"hubi/note-id/1\x00"
MASK = (1 << 128) - 1

# Same numbers as codec's tags (kept here so lsum has no import cycle).
T_SERIAL = 0x02
T_AMOUNT = 0x10
T_PURPOSE = 0x11
T_PAYEE = 0x12
T_ACCOUNT = 0x14


def digest(tag, value):
    """128-bit digest of one (tag, value) pair, as an int."""
    h = hashlib.sha256(LSUM_DOMAIN + bytes([tag]) + value).digest()
    return int.from_bytes(h[:16], "big")


def account_digest(account):
    return digest(T_ACCOUNT, account.encode())


def serial_digest(serial):
    return digest(T_SERIAL, serial.to_bytes(8, "big"))


def amount_digest(amount):
    return digest(T_AMOUNT, amount.to_bytes(8, "big"))


def purpose_digest(purpose):
    return digest(T_PURPOSE, (purpose or "").encode())


def counterparty_digest(account):
    return digest(T_PAYEE, account.encode())


def lsum(account, serial, amount, purpose, counterparty):
    """The linear sum as an int in [0, 2^128)."""
    return (
        account_digest(account)
        + serial_digest(serial)
        + amount_digest(amount)
        + purpose_digest(purpose)
        + counterparty_digest(counterparty)
    ) & MASK


def to_bytes(value):
    return value.to_bytes(16, "big")


def of_note(note):
    """16-byte lsum of a note: payer account, serial, amount, purpose, payee."""
    return to_bytes(
        lsum(note.signer, note.serial, note["amount"], note.get("purpose"), note["payee"])
    )


def note_id(payer, serial):
    """32-byte note id: SHA-256 of the payer account and serial."""
    return hashlib.sha256(
        NOTE_ID_DOMAIN + payer.encode() + b"\x00" + serial.to_bytes(8, "big")
    ).digest()
