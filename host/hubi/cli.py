"""The one `hubi` command: kmc, token, merchant, bank, consortium, audit, note, demo, bench."""

from __future__ import annotations

import click

from hubi.commands import audit as audit_cmd
from hubi.commands import bank as bank_cmd
from hubi.commands import consortium as consortium_cmd
from hubi.commands import demo as demo_cmd
from hubi.commands import merchant as merchant_cmd
from hubi.commands import note as note_cmd
from hubi.commands import token as token_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
