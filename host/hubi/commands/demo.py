"""`hubi demo`: the end-to-end story on one machine (what `make demo` runs)."""

from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.markup import escape

from hubi.output import console, err_console, print_json, printable, styled

if TYPE_CHECKING:
    from hubi.demo import DemoError

DEBUG_SHOWN = 4000  # characters of a failure's line: its paths must stay whole


INTERRUPTED = 130  # 128 + SIGINT: what shells report for a run stopped by Ctrl-C


class _Interrupt:
    """SIGINT while the demo runs: the first raises KeyboardInterrupt, so the story stops and
    its bank nodes and token are stopped on the way out; a second one meanwhile is only noted
    (raised, it would cut that clean-up short and leave the nodes running). `seen` also tells a
    failure caused by the Ctrl-C (a child process it stopped first) from one of its own."""

    def __init__(self) -> None:
        self.seen = False
        self.checked = False

    def __call__(self, _signum: int, _frame: object) -> None:
        if self.seen:
            return
        self.seen = True
        raise KeyboardInterrupt

    def unraisable(self, info: Any) -> None:
        """sys.unraisablehook: a swallowed Ctrl-C is raised again by check(), not printed as
        a traceback; anything else is printed as Python would."""
        if isinstance(info.exc_value, KeyboardInterrupt) and self.seen:
            return
        sys.__unraisablehook__(info)

    def check(self) -> None:
        """Raise again a Ctrl-C that was swallowed: the handler runs wherever the interpreter
        is, also in a callback whose exceptions Python only prints ("Exception ignored in"),
        such as logging's after-fork hook while the demo starts a node or the token."""
        if self.seen and not self.checked:
            self.checked = True
            raise KeyboardInterrupt


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
    interrupt = _Interrupt()
    # the process's own, put back however the demo ends (a caller that runs the command
    # in-process, a test or `standalone_mode=False`, keeps its Ctrl-C and its hook)
    old_int = signal.getsignal(signal.SIGINT)
    old_hook = sys.unraisablehook
    try:
        signal.signal(signal.SIGINT, interrupt)
        sys.unraisablehook = interrupt.unraisable
        summary: dict[str, Any] | None = None
        failure: DemoError | None = None
        stopped: list[str | None] = []  # the step a Ctrl-C stopped (None: before the story)
        try:
            from hubi.demo import DemoError, run_demo

            def say(msg: str) -> None:  # at every step, and often within one
                interrupt.check()
                if not as_json:
                    console.print(msg)

            try:
                summary = run_demo(workdir, say)
            except DemoError as exc:
                failure = exc
            interrupt.check()  # swallowed after the last step: still a run the person stopped
        except KeyboardInterrupt as exc:
            stopped.append(getattr(exc, "step", None))
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the answer is written whole, then exit
        if failure is not None and interrupt.seen:  # a node or the token the same Ctrl-C stopped
            stopped.append(failure.step)
        if stopped:
            # the step a swallowed Ctrl-C stopped is the failure's: check() knows none
            _interrupted(next((s for s in stopped if s), None), workdir, as_json)
        if failure is not None:
            _failed(failure, as_json)
        assert summary is not None
        if as_json:
            print_json(summary)
        else:
            console.print(f"\nFiles are in {escape(str(_absolute(workdir)))}", soft_wrap=True)
        sys.exit(0 if summary["ok"] else 1)
    finally:
        # None: a handler not set from Python, which cannot be put back; the default then
        signal.signal(signal.SIGINT, old_int if old_int is not None else signal.SIG_DFL)
        sys.unraisablehook = old_hook


def _absolute(workdir: Path) -> Path:
    """`workdir` made absolute, or as given if the current folder is gone (os.getcwd fails)."""
    try:
        return workdir.resolve()
    except OSError:
        return workdir


def _interrupted(step: str | None, workdir: Path, as_json: bool) -> NoReturn:
    """One JSON document, or one line, naming the step the Ctrl-C stopped; exit 130."""
    where = f" in step {step}" if step else ""
    folder = _absolute(workdir)
    if as_json:
        print_json(
            {
                "ok": False,
                "interrupted": True,
                "signal": "SIGINT",
                "step": step or None,
                "error": f"interrupted (Ctrl-C){where}",
                "workdir": str(folder),
            }
        )
    else:
        err_console.print(
            styled("yellow", f"demo interrupted (Ctrl-C){where}; files so far in {folder}"),
            soft_wrap=True,
        )
    sys.exit(INTERRUPTED)


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
