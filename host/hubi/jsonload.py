"""JSON from outside (a peer's reply, an upload, a log entry, a file a person can edit), read
with one set of guarantees: the document, or a :class:`JsonError` whose message names what was
read and says why it is not JSON; never a RecursionError or a UnicodeDecodeError from inside."""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["MAX_DEPTH", "JsonError", "loads"]

# Every document hubi reads is a few levels deep. A fixed limit well below the parser's own
# (the interpreter's stack, about 1,000 levels less however deep the caller already is) gives
# a hostile document the same verdict wherever it is read.
MAX_DEPTH = 64

_ONE_KIND = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKET = bytes(c for c in range(256) if c not in b"[]{}")


class JsonError(ValueError):
    """A document that is not JSON hubi can read; the message names it and says why. A
    ValueError, so that callers catching ValueError go on catching it."""


def loads(data: bytes | str, what: str, max_depth: int | None = MAX_DEPTH) -> Any:
    """`data` parsed, or JsonError("<what> is ..."): not UTF-8 (a leading byte-order mark is
    skipped, as json.loads skips it), empty, not JSON, nested deeper than `max_depth` levels
    (None: as deep as the parser goes), or holding an integer past Python's digit limit."""
    if isinstance(data, str):
        text = data
    else:
        try:
            text = data.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError as exc:
            raise JsonError(f"{what} is not UTF-8 text (byte {exc.start} of {len(data)})") from None
    if not text or text.isspace():
        raise JsonError(f"{what} is empty, not JSON")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:  # its message gives the line and column
        raise JsonError(f"{what} is not valid JSON ({exc})") from None
    except ValueError:  # the only other one: int() of more digits than the interpreter allows
        digits = sys.get_int_max_str_digits()
        raise JsonError(f"{what} holds an integer of more than {digits} digits") from None
    except RecursionError:
        raise JsonError(_too_deep(what, max_depth)) from None
    if max_depth is not None and _deeper_than(text, max_depth):
        raise JsonError(_too_deep(what, max_depth))
    return doc


def _too_deep(what: str, max_depth: int | None) -> str:
    levels = "" if max_depth is None else f": more than {max_depth} levels"
    return f"{what} is not valid JSON (nested too deeply{levels})"


def _deeper_than(text: str, max_depth: int) -> bool:
    """Whether the valid JSON `text` nests more than `max_depth` arrays and objects, found with
    byte operations in C: a walk of the parsed document in Python cost more than the parse."""
    if text.count("[") + text.count("{") <= max_depth:
        return False  # too few brackets to nest that deep: most documents stop here
    data = text.encode("utf-8", "surrogatepass")
    if b"\\" in data:  # an escaped quote neither ends a string nor starts one
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")  # pairs from the left
    # what lies between quotes is a string's; of the rest only the brackets count, all one kind
    nest = b"".join(data.split(b'"')[::2]).translate(_ONE_KIND, _NOT_BRACKET)
    for _ in range(max_depth):
        if not nest:
            return False
        nest = nest.replace(b"[]", b"")  # each pass takes one level off every innermost pair
    return bool(nest)
