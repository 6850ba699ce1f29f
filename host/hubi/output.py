"""Console output shared by the commands: rich for people, JSON for programs."""

from __future__ import annotations

import codecs
import json
import os
import re
import sys
from typing import Any, TextIO

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


ESCAPE_ERRORS = "hubi-escape"


def _escape_unencodable(exc: UnicodeError) -> tuple[str | bytes, int]:
    """Encoding error handler for stdout and stderr: a character the stream cannot take (an
    'ü' under LANG=C or PYTHONIOENCODING=ascii, rich's '…' or '—') is written as its escape
    (\\xfc), a byte a file name held that the locale could not decode (surrogateescape's
    U+DC80-U+DCFF) as that byte again, the way `ls` would show it."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    chars = exc.object[exc.start : exc.end]
    if all("\udc80" <= c <= "\udcff" for c in chars):
        return bytes(ord(c) - 0xDC00 for c in chars), exc.end
    return codecs.backslashreplace_errors(exc)


codecs.register_error(ESCAPE_ERRORS, _escape_unencodable)


def safe_streams() -> None:
    """Let stdout and stderr take any text: under LANG=C, PYTHONIOENCODING=ascii or with a
    file name in bytes the locale cannot read, a table, a path or a purpose was a
    UnicodeEncodeError traceback halfway through the output. JSON is ASCII (escaped) anyway.
    Standard output closed (`>&-`) is said once and written to /dev/null: --json was an
    AttributeError traceback, the rest silently lost; the exit status still tells the outcome.
    Standard error closed (`2>&-`) is written to /dev/null too: click printed its usage errors
    to stdout instead, plain text where a script reads the command's output. Each /dev/null
    is put on the closed descriptor itself (1, 2), so that no file the command opens later gets
    descriptor 2 and what C code writes to its stderr: with stdin closed too, the lowest free
    descriptors were 0 and 1, and the next file opened was descriptor 2. A closed stdin gets a
    /dev/null descriptor too (sys.stdin stays None): a file opened on 0 was every child's input."""
    if sys.stdin is None:
        _null_fd(0, os.O_RDONLY)
    if sys.stdout is None:
        sys.stdout = _devnull(1)
        _say_stderr("hubi: standard output is closed: what this command prints is lost")
    if sys.stderr is None:
        sys.stderr = _devnull(2)
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and getattr(stream, "errors", None) != ESCAPE_ERRORS:
            try:
                reconfigure(errors=ESCAPE_ERRORS)
            except (ValueError, OSError):  # closed, or not reconfigurable here: as it is
                pass


def _null_fd(fd: int, flags: int) -> int:
    """A descriptor of /dev/null, `fd` itself if that is free (kept open to the end)."""
    null = os.open(os.devnull, flags)
    if null != fd:
        try:
            os.fstat(fd)  # in use by then (a file opened since start-up): not taken from it
        except OSError:
            os.dup2(null, fd)
            os.close(null)
            null = fd
    return null


def _devnull(fd: int) -> TextIO:
    """/dev/null for writing, on descriptor `fd` if that is free (kept to the end)."""
    return open(_null_fd(fd, os.O_WRONLY), "w", encoding="utf-8")  # noqa: SIM115


def _say_stderr(line: str) -> None:
    """One line to stderr if it can take it (it may be closed, or full, too)."""
    try:
        if sys.stderr is not None:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
    except (OSError, ValueError):
        pass


def output_lost(exc: BaseException) -> bool:
    """True if `exc` was raised writing a command's output (rich's or print_json's write): a
    full disk (> /dev/full), an I/O error, not a failure of the command itself."""
    writers = {Console._write_buffer.__code__, print_json.__code__}
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code in writers:
            return True
        tb = tb.tb_next
    return False


def report_lost_output(exc: OSError) -> None:
    """Say on stderr that the output could not be written (why), in place of a traceback."""
    why = exc.strerror or str(exc) or type(exc).__name__
    _say_stderr(f"hubi: cannot write the output: {why}")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and its noun agreeing, thousands grouped: "1 book", "2 books", "1,000 records"
    (the messages said "1 books")."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


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
