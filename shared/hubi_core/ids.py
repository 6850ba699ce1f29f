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
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def shown(text, limit=48):
    """text quoted as CPython's ascii() does: the same words on the token (whose repr keeps or
    escapes other characters than CPython's) and no look-alike letters in an error. Text over
    `limit` characters is cut (with "..."): a huge id must not make a huge message."""
    more = "..." if len(text) > limit else ""
    text = text[:limit]
    quote = '"' if "'" in text and '"' not in text else "'"
    out = []
    for ch in text:
        o = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch == quote:
            out.append("\\" + ch)
        elif 0x20 <= o < 0x7F:
            out.append(ch)
        elif o < 0x100:
            out.append("\\x%02x" % o)
        elif o < 0x10000:
            out.append("\\u%04x" % o)
        else:
            out.append("\\U%08x" % o)
    return quote + "".join(out) + quote + more


def check_bank_id(text, what="bank id"):
    if not (2 <= len(text) <= MAX_BANK):
        raise BadValue("%s %s must be 2-%d characters" % (what, shown(text), MAX_BANK))
    for ch in text:
        if ch not in _BANK_CHARS:
            raise BadValue("%s %s may only use A-Z and 0-9" % (what, shown(text)))
    return text


def check_account_id(text, what="account id"):
    if len(text) > MAX_ACCOUNT:
        raise BadValue("%s %s is longer than %d characters" % (what, shown(text), MAX_ACCOUNT))
    dash = text.find("-")
    if dash < 0:
        raise BadValue("%s %s must look like BANK-LOCAL" % (what, shown(text)))
    check_bank_id(text[:dash], what + " bank prefix")
    local = text[dash + 1 :]
    if not local:
        raise BadValue("%s %s has an empty local part" % (what, shown(text)))
    for ch in local:
        if ch not in _LOCAL_CHARS:
            raise BadValue("%s %s: local part may only use A-Z a-z 0-9 . _" % (what, shown(text)))
    return text


def bank_of(account):
    """The bank id that keeps `account`."""
    return check_account_id(account)[: account.find("-")]
