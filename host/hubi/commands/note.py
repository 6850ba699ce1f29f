"""`hubi note show`: decode any hubi object, from bytes or from a PNG of its QR code."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from hubi import kmc, objects
from hubi.output import console, err_console, print_json, printable, styled
from hubi_core import codec, qr, verify
from hubi_core.errors import HubiError


def qr_versions(size: int) -> dict[str, int | None]:
    """Smallest QR version (1-40 by the standard tables; None if over 20) per level."""
    return {level: qr.min_version(size, level) for level in ("L", "M")}


def describe(data: bytes, trust_dir: Path | None) -> dict[str, Any]:
    obj = codec.decode(data)
    out = objects.obj_to_dict(obj)
    out["size"] = len(data)
    out["qr_version"] = qr_versions(len(data))
    if trust_dir is None:
        out["verification"] = {"ok": None, "reason": "no trust bundle found (pass --trust DIR)"}
    else:
        out["verification"] = verify.verify_object(obj, kmc.load_trust(trust_dir)).as_dict()
        out["verification"]["trust"] = str(trust_dir)
    return out


@click.group()
def note() -> None:
    """Inspect notes and other hubi objects."""


@note.command("show")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--trust",
    "trust_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Trust bundle (consortium.json + matrices/); default: nearest one above FILE.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(file: Path, trust_dir: Path | None, as_json: bool) -> None:
    """Decode FILE (binary object, its hex as text, or QR image) and verify it offline, field by field."""
    try:
        data = objects.read_object_bytes(file)
        info = describe(data, trust_dir or kmc.find_trust(file.parent))
    except kmc.TrustBundleError as exc:  # the note may be fine; the bundle to check it is not
        _fail(as_json, type(exc).__name__, f"cannot verify {file}: {exc}")
    except (HubiError, ValueError, OSError) as exc:
        _fail(as_json, type(exc).__name__, f"cannot read {file}: {type(exc).__name__}: {exc}")
    if as_json:
        print_json(info)
    else:
        _print_human(info)
    ver = info["verification"]
    sys.exit(0 if ver["ok"] is not False else 1)


def _fail(as_json: bool, error: str, message: str) -> None:
    if as_json:
        print_json({"error": error, "message": message})
    else:
        err_console.print(styled("red", printable(message, 2000)))  # names a file: escaped
    sys.exit(2)


def _print_human(info: dict[str, Any]) -> None:
    # values are Text, never markup: a purpose is whatever the payer's token signed
    table = Table(title=Text(f"{info['kind']} — {info['size']} bytes"), show_header=True)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for key in ("signer", "serial", "time"):
        table.add_row(key, Text(str(info[key])))
    for key, value in info["fields"].items():
        if isinstance(value, dict):
            value = f"{value['kind']} of {value['signer']} #{value['serial']}"
        table.add_row(key, Text(str(value)))
    if "note_id" in info:
        table.add_row("note id", info["note_id"])
    qrv = info["qr_version"]
    table.add_row("QR version", f"L: {qrv['L']}  M: {qrv['M']}")
    console.print(table)
    ver = info["verification"]
    if ver["ok"] is None:
        console.print(styled("yellow", f"not verified: {ver['reason']}"))
        return
    for f in ver["fields"]:
        mark = "[green]ok[/green]" if f["ok"] else f"[red]FAILED[/red] {escape(f['reason'])}"
        console.print(f"  {escape(f['field']):<10} {mark}")
    # against which consortium: a bundle found next to FILE came with it, and anyone can make
    # one (a forged note verifies against its forger's own bundle)
    against = escape(printable(ver.get("trust", "?"), 300))
    console.print(
        f"[green]verified offline[/green] against the trust bundle {against}"
        if ver["ok"]
        else f"[red]verification failed[/red] against the trust bundle {against}"
    )
