"""`hubi demo`: the end-to-end story on one machine (what `make demo` runs)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape

from hubi.output import console, err_console, print_json, styled


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
        if as_json:
            print_json({"ok": False, "error": str(exc)})
        else:
            # to stderr, unwrapped: the path in it must stay whole to be copied
            err_console.print(styled("red", f"demo failed: {exc}"))
        sys.exit(1)
    if as_json:
        print_json(summary)
    else:
        console.print(f"\nFiles are in {escape(str(workdir.resolve()))}", soft_wrap=True)
    sys.exit(0 if summary["ok"] else 1)
