"""Console output shared by the commands: rich for people, JSON for programs."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape


def _drop_bad_size(name: str) -> None:
    """rich reads COLUMNS and LINES with str.isdigit and int: 0 (as some CI runners set it) drew
    nothing at all, every message and error lost, and '²' (a digit to isdigit, not to int) was a
    traceback from every command. Such a value is dropped: the terminal's own size is used."""
    value = os.environ.get(name)
    if value is not None and not (value.isascii() and value.isdigit() and int(value) > 0):
        del os.environ[name]


_drop_bad_size("COLUMNS")
_drop_bad_size("LINES")
MIN_WIDTH = 40  # columns: narrower (COLUMNS=1, a squeezed pane), the story came out a letter a line


def _at_least(con: Console, width: int = MIN_WIDTH) -> Console:
    """`con`, drawing at least `width` columns wide whatever COLUMNS or the terminal say: a line
    a little too long for a tiny terminal still reads; one cut to a letter per line does not."""
    if con.width < width:
        con.width = width
    return con


console = _at_least(Console(stderr=False, highlight=False))
# Errors are not wrapped: a path or URL broken across lines cannot be copied (nor matched).
err_console = _at_least(Console(stderr=True, highlight=False, soft_wrap=True))


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def styled(style: str, text: object) -> str:
    """`text` in a rich style, escaped: a message may hold '[...]' (a path, a list) that rich
    would otherwise take for markup and drop."""
    return f"[{style}]{escape(str(text))}[/{style}]"


# C0, DEL, C1 (a terminal acts on them: ESC starts a sequence that can retitle the window or
# rewrite the screen), line and paragraph separators, and the bidirectional controls that
# reorder what a screen shows (hubi_core.wire refuses the same in signed text).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
MAX_SHOWN = 300  # characters of someone else's text (a bank's reply, a stored error) shown


def printable(text: object, limit: int = MAX_SHOWN) -> str:
    """`text` safe for a terminal and for keeping: every control or bidirectional character
    shown as a Python-style escape (\\x1b, \\u202e), cut to `limit` characters with '…'.
    For text from elsewhere (a bank's reply, a damaged file), never for our own markup."""
    safe = _UNSAFE.sub(lambda m: repr(m.group())[1:-1], str(text))
    if len(safe) > limit:
        safe = safe[: max(0, limit - 1)] + "…"
    return safe
