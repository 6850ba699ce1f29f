"""What the ordered log holds: keys and entry values.

All keys live under the consortium's log prefix (``Consortium.log_prefix()`` + ``log/``), so one
watch of that prefix in revision order is the global order every bank applies:

    log/n/<note id hex>              NoteEntry: the note, its endorsements, the submitting bank.
                                     Claimed with create-if-absent: a note id is ordered once.
    log/d/<note id hex>/<bank>       DebitEntry: the payer's bank's signed result of booking the
                                     debit (its BalanceNotice, or its Refusal when the payer could
                                     not cover the note by then). Credit follows only a notice.
                                     The bank is in the key so that no other bank can take the
                                     key first (a forged result there is reported and ignored).
    log/c/<bank>/<tree size, 16 digits>  CheckpointEntry: a bank's signed Merkle tree head.

Entry values are canonical JSON (sorted keys, no spaces) with binary objects as hex; ``v`` is
the entry format version (1). Beside the log, not part of the order: reports (what a bank found
wrong in the log) under ``reports/<reporting bank>/<revision>``, each bank's applied mark
under ``applied/<bank>`` (the revision through which it has applied the log, 20 ASCII digits),
and ``forgotten`` (the revision through which the log has forgotten): the log forgets what
every bank's mark has passed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hubi import jsonload
from hubi.consortium.errors import EntryError
from hubi_core import ids

__all__ = [
    "CheckpointEntry",
    "DebitEntry",
    "LOG",
    "NoteEntry",
    "REPORTS",
    "APPLIED",
    "FORGOTTEN",
    "applied_key",
    "checkpoint_key",
    "debit_key",
    "decode_entry",
    "note_key",
    "parse_key",
]

LOG = b"log/"
REPORTS = b"reports/"
APPLIED = b"applied/"
FORGOTTEN = b"forgotten"
VERSION = 1
MAX_ENDORSEMENTS = 64


def note_key(note_id: bytes) -> bytes:
    return LOG + b"n/" + note_id.hex().encode()


def debit_key(note_id: bytes, bank: str) -> bytes:
    return LOG + b"d/" + note_id.hex().encode() + b"/" + bank.encode()


def checkpoint_key(bank: str, tree_size: int) -> bytes:
    return LOG + b"c/" + bank.encode() + b"/" + b"%016d" % tree_size


def applied_key(bank: str) -> bytes:
    return APPLIED + bank.encode()


def parse_key(key: bytes) -> tuple[str, Any]:
    """('n', note_id) | ('d', (note_id, bank)) | ('c', (bank, tree_size)); EntryError
    otherwise."""
    if not key.startswith(LOG):
        raise EntryError(f"key {key[:80]!r} is not under {LOG.decode()}")
    rest = key[len(LOG) :]
    try:
        kind, _, tail = rest.partition(b"/")
        if kind == b"n":
            nid = bytes.fromhex(tail.decode("ascii"))
            if len(nid) != 32:
                raise ValueError("note id must be 32 bytes")
            return "n", nid
        if kind == b"d":
            hexid, _, bank = tail.decode("ascii").partition("/")
            nid = bytes.fromhex(hexid)
            if len(nid) != 32:
                raise ValueError("note id must be 32 bytes")
            return "d", (nid, ids.check_bank_id(bank))
        if kind == b"c":
            bank, _, size = tail.decode("ascii").partition("/")
            ids.check_bank_id(bank)
            if len(size) != 16 or not size.isdigit():
                raise ValueError("tree size must be 16 digits")
            return "c", (bank, int(size))
    except (ValueError, UnicodeDecodeError) as exc:
        raise EntryError(f"log key {key[:80]!r}: {exc}") from None
    raise EntryError(f"log key {key[:80]!r}: unknown entry kind {kind[:8]!r}")


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _hex(doc: dict[str, Any], name: str, what: str) -> bytes:
    v = doc.get(name)
    if not isinstance(v, str):
        raise EntryError(f"{what}: field {name!r} missing or not a string")
    try:
        return bytes.fromhex(v)
    except ValueError:
        raise EntryError(f"{what}: field {name!r} is not hex") from None


def _bank(doc: dict[str, Any], name: str, what: str) -> str:
    v = doc.get(name)
    if not isinstance(v, str):
        raise EntryError(f"{what}: field {name!r} missing or not a string")
    if len(v) > 64:  # the error would quote it whole
        raise EntryError(f"{what}: field {name!r} is not a bank id ({len(v)} characters)")
    try:
        return ids.check_bank_id(v)
    except ValueError as exc:
        raise EntryError(f"{what}: field {name!r}: {exc}") from None


@dataclass(frozen=True)
class NoteEntry:
    note: bytes
    endorsements: list[bytes]
    submitter: str
    time: int = 0

    def encode(self) -> bytes:
        return _dump(
            {
                "v": VERSION,
                "type": "note",
                "note": self.note.hex(),
                "endorsements": [e.hex() for e in self.endorsements],
                "submitter": self.submitter,
                "time": self.time,
            }
        )


@dataclass(frozen=True)
class DebitEntry:
    bank: str  # the payer's bank
    result: bytes  # its BalanceNotice (debited) or Refusal (bounced)
    time: int = 0

    def encode(self) -> bytes:
        return _dump(
            {
                "v": VERSION,
                "type": "debit",
                "bank": self.bank,
                "result": self.result.hex(),
                "time": self.time,
            }
        )


@dataclass(frozen=True)
class CheckpointEntry:
    bank: str
    checkpoint: bytes  # codec CHECKPOINT object
    extra: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return _dump(
            {
                "v": VERSION,
                "type": "checkpoint",
                "bank": self.bank,
                "checkpoint": self.checkpoint.hex(),
            }
        )


def _shown(v: Any) -> str:
    """A value from a hostile entry as an error names it: short, whatever its depth."""
    try:
        text = repr(v)
    except (RecursionError, ValueError):  # nested too deep; an int past repr's digit limit
        text = f"a {type(v).__name__}"
    return text if len(text) <= 40 else text[:39] + "…"


def decode_entry(value: bytes) -> NoteEntry | DebitEntry | CheckpointEntry:
    """Parse an entry value; EntryError naming the field at fault.

    Whatever the bytes (anyone with write access to etcd can put them there), the outcome is an
    entry or an EntryError, never another exception: the applier rejects what does not decode
    and goes on, and every bank rejects it alike."""
    try:
        # What parses is part of the log's rule, the same at every bank: bytes decoded as
        # json.loads decodes them (UTF-16 and -32 too), at most MAX_DEPTH levels deep. The
        # parser's own limit is the stack left to it, which differs with the caller and the
        # Python version: a bank checking from a deeper call rejected what another accepted.
        text = value.decode(json.detect_encoding(value), "surrogatepass")
        doc = jsonload.loads(text, "log entry")
    except jsonload.JsonError as exc:
        raise EntryError(str(exc)) from None
    except (ValueError, TypeError, AttributeError):  # UnicodeDecodeError; a value not bytes
        raise EntryError("log entry is not JSON") from None
    try:
        return _decode_doc(doc)
    except RecursionError:
        raise EntryError("log entry holds a value nested too deep") from None


def _decode_doc(doc: Any) -> NoteEntry | DebitEntry | CheckpointEntry:
    if not isinstance(doc, dict):
        raise EntryError("log entry is not a JSON object")
    if doc.get("v") != VERSION:
        raise EntryError(f"log entry version {_shown(doc.get('v'))} is not {VERSION}")
    kind = doc.get("type")
    t = doc.get("time", 0)
    if not isinstance(t, int) or isinstance(t, bool):
        raise EntryError("log entry: field 'time' must be an integer")
    if kind == "note":
        ends = doc.get("endorsements")
        if not isinstance(ends, list) or len(ends) > MAX_ENDORSEMENTS:
            raise EntryError(
                f"note entry: endorsements must be a list of at most {MAX_ENDORSEMENTS}"
            )
        out = []
        for i, e in enumerate(ends):
            if not isinstance(e, str):
                raise EntryError(f"note entry: endorsements[{i}] is not a string")
            try:
                out.append(bytes.fromhex(e))
            except ValueError:
                raise EntryError(f"note entry: endorsements[{i}] is not hex") from None
        return NoteEntry(
            _hex(doc, "note", "note entry"), out, _bank(doc, "submitter", "note entry"), t
        )
    if kind == "debit":
        return DebitEntry(_bank(doc, "bank", "debit entry"), _hex(doc, "result", "debit entry"), t)
    if kind == "checkpoint":
        return CheckpointEntry(
            _bank(doc, "bank", "checkpoint entry"), _hex(doc, "checkpoint", "checkpoint entry")
        )
    raise EntryError(f"log entry type {_shown(kind)} is unknown")
