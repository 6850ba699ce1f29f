"""Identifiers: bank ids and account ids.

A bank id is 2-16 characters [A-Z0-9]. An account id is "<bank id>-<local part>", at most 32
characters, local part [A-Za-z0-9._]; the prefix names the bank that keeps the account, so a note's
payee can be routed with nothing but the note.
"""

from hubi_core.errors import BadValue

MAX_BANK = 16
MAX_ACCOUNT = 32
_BANK_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_LOCAL_CHARS = _BANK_CHARS + "abcdefghijklmnopqrstuvwxyz._"


def check_bank_id(text, what="bank id"):
    if not (2 <= len(text) <= MAX_BANK):
        raise BadValue("%s %r must be 2-%d characters" % (what, text, MAX_BANK))
    for ch in text:
        if ch not in _BANK_CHARS:
            raise BadValue("%s %r may only use A-Z and 0-9" % (what, text))
    return text


def check_account_id(text, what="account id"):
    if len(text) > MAX_ACCOUNT:
        raise BadValue("%s %r is longer than %d characters" % (what, text, MAX_ACCOUNT))
    dash = text.find("-")
    if dash < 0:
        raise BadValue("%s %r must look like BANK-LOCAL" % (what, text))
    check_bank_id(text[:dash], what + " bank prefix")
    local = text[dash + 1 :]
    if not local:
        raise BadValue("%s %r has an empty local part" % (what, text))
    for ch in local:
        if ch not in _LOCAL_CHARS:
            raise BadValue("%s %r: local part may only use A-Z a-z 0-9 . _" % (what, text))
    return text


def bank_of(account):
    """The bank id that keeps `account`."""
    return check_account_id(account)[: account.find("-")]
