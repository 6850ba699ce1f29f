"""The one `hubi` command: kmc, token, merchant, bank, consortium, audit, note, demo, bench."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from hubi.commands import audit as audit_cmd
from hubi.commands import bank as bank_cmd
from hubi.commands import consortium as consortium_cmd
from hubi.commands import demo as demo_cmd
from hubi.commands import merchant as merchant_cmd
from hubi.commands import note as note_cmd
from hubi.commands import token as token_cmd

LOST_OUTPUT = 1  # what click exits with when stdout is a pipe closed early


class _JsonUsageError(click.UsageError):
    """A usage error of a command run with --json: shown as the JSON its other failures are,
    so a script reading stdout gets a document, not click's usage text (still exit 2)."""

    def show(self, file: Any = None) -> None:
        from hubi.output import print_json

        print_json({"error": "UsageError", "message": self.format_message()})


class _Hubi(click.Group):
    """The top group: remembers whether --json was asked for, for the usage errors raised
    while a sub-command's options are parsed (before that option could be read)."""

    wants_json = False

    def main(self, args: Sequence[str] | None = None, *a: Any, **kw: Any) -> Any:
        from hubi.output import output_lost, report_lost_output, safe_streams

        safe_streams()
        self.wants_json = _asks_json(self, sys.argv[1:] if args is None else list(args))
        try:
            return super().main(args, *a, **kw)
        except OSError as exc:  # click itself takes EPIPE (`| head`): exit 1, quietly
            if not output_lost(exc):
                raise
            report_lost_output(exc)
            sys.exit(LOST_OUTPUT)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            if not self.wants_json or isinstance(exc, _JsonUsageError):
                raise
            raise _JsonUsageError(exc.format_message(), exc.ctx) from None


def _asks_json(cmd: click.Command, args: list[str]) -> bool:
    """True if `args` give the command they name its --json flag: the words are walked down
    the sub-commands, an option's value ("--purpose --json") and all after "--" passed over."""
    words = iter(args)
    for word in words:
        if word == "--":
            return False
        if isinstance(cmd, click.Group) and word in cmd.commands:
            cmd = cmd.commands[word]
            continue
        name = word.split("=", 1)[0]
        opt = next((p for p in cmd.params if isinstance(p, click.Option) and name in p.opts), None)
        if opt is None:
            continue
        if word == "--json" and opt.is_flag:
            return True
        if not opt.is_flag and not opt.count and "=" not in word:
            next(words, None)  # its value, whatever it looks like
    return False


@click.group(cls=_Hubi, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hubi")
def main() -> None:
    """hubi: digital account money on a handheld token."""


main.add_command(note_cmd.note)
main.add_command(consortium_cmd.consortium)
main.add_command(demo_cmd.demo)
main.add_command(merchant_cmd.merchant)
main.add_command(token_cmd.token)
main.add_command(bank_cmd.bank)
main.add_command(audit_cmd.audit)

if __name__ == "__main__":  # pragma: no cover
    main()
