"""`hubi demo`: the end-to-end story on one machine (what `make demo` runs)."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click
from rich.markup import escape

from hubi.output import console, err_console, print_json, printable, styled

if TYPE_CHECKING:
    from hubi.demo import DemoError

DEBUG_SHOWN = 4000  # characters of a failure's line: its paths must stay whole


@click.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-out"),
    show_default=True,
    help="Folder for the demo's files (PNG, notes, databases).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary instead of the story.")
def demo(workdir: Path, as_json: bool) -> None:
    """Run the end-to-end demo on the embedded defaults."""
    from hubi.demo import DemoError, run_demo

    say = (lambda _msg: None) if as_json else console.print
    try:
        summary = run_demo(workdir, say)
    except DemoError as exc:
        _failed(exc, as_json)
    if as_json:
        print_json(summary)
    else:
        console.print(f"\nFiles are in {escape(str(workdir.resolve()))}", soft_wrap=True)
    sys.exit(0 if summary["ok"] else 1)


def _failed(exc: DemoError, as_json: bool) -> NoReturn:
    """One line naming the step and the logs; an unexpected failure's traceback only with
    HUBI_DEBUG=1 (for a developer: to the person running the demo it says nothing more)."""
    error = printable(exc, DEBUG_SHOWN)
    if exc.__cause__ is not None:
        if os.environ.get("HUBI_DEBUG", "") not in ("", "0"):
            traceback.print_exception(exc.__cause__, file=sys.stderr)
        else:
            error += " (HUBI_DEBUG=1 shows the traceback)"
    if as_json:
        print_json({"ok": False, "step": exc.step or None, "error": error})
    else:
        where = f" in step {exc.step}" if exc.step else ""
        # to stderr, unwrapped: the path in it must stay whole to be copied
        err_console.print(styled("red", f"demo failed{where}: {error}"))
    sys.exit(1)
