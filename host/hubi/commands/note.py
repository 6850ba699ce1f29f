"""`hubi note show`: decode any hubi object, from bytes or from a PNG of its QR code."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, BinaryIO

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


def describe(
    data: bytes, trust_dir: Path | None, source: str = "--trust", beside: Path | None = None
) -> dict[str, Any]:
    """The object as a dict, verified against trust_dir (which came from `source`)."""
    obj = codec.decode(data)
    out = objects.obj_to_dict(obj)
    out["size"] = len(data)
    out["qr_version"] = qr_versions(len(data))
    if trust_dir is None:
        reason = "no trusted consortium: pass --trust DIR, or set up a merchant home (--home)"
        if beside is not None:
            reason += (
                f"; the trust bundle {beside} beside the file came with it and vouches for"
                " nothing by itself (anyone can sign one): pass it with --trust if you trust it"
            )
        out["verification"] = {"ok": None, "reason": reason}
    else:
        out["verification"] = verify.verify_object(obj, kmc.load_trust(trust_dir)).as_dict()
        out["verification"]["trust"] = str(trust_dir)
        out["verification"]["trust_from"] = source
    return out


def trusted_bundle(trust_dir: Path | None, home: Path | None) -> tuple[Path | None, str]:
    """The trust bundle to verify against and where it came from: --trust, else the merchant
    home's own (--home, $HUBI_MERCHANT_HOME or the default home), else none. Never one found
    next to the file: a forged note would come with the forger's consortium file."""
    from hubi.merchant import config

    if trust_dir is not None:
        return trust_dir, "--trust"
    env_home = os.environ.get(config.ENV_HOME, "")
    if home is None and env_home:  # named like --home: one not set up is said, not passed over
        try:
            return config.MerchantHome.open(Path(env_home)).trust_dir, "merchant home"
        except config.MerchantError as exc:
            raise config.MerchantError(f"{exc} (from ${config.ENV_HOME})") from None
    if home is None and not (config.default_home() / config.CONFIG).exists():
        return None, ""  # no merchant set up here: nothing trusted to check against
    mh = config.MerchantHome.open(home)
    return mh.trust_dir, "merchant home"


STDIN = Path("-")  # `hubi note show -`: the object on standard input
STDIN_NAME = "standard input"


def read_stdin(stream: BinaryIO | None) -> bytes:
    """The object piped in, in any form a file takes (bytes, hex text, a QR image), read no
    further than such a file is: a hubi object's bytes or hex past objects.MAX_OBJECT_FILE, an
    image past objects.MAX_IMAGE_FILE. ValueError naming standard input otherwise."""
    if stream is None:  # started with standard input closed
        raise ValueError(f"{STDIN_NAME} is closed: pipe an object in, or name its file")
    data = stream.read(objects.MAX_OBJECT_FILE + 1)
    if not data:
        raise ValueError(f"{STDIN_NAME} is empty: pipe an object in, e.g. `... | hubi note show -`")
    if objects.is_image(data):
        data += stream.read(objects.MAX_IMAGE_FILE + 1 - len(data))
        if len(data) > objects.MAX_IMAGE_FILE:
            raise ValueError(
                f"{STDIN_NAME}: an image of more than {objects.MAX_IMAGE_FILE:,} bytes, the most"
                " a scan reads (not read further)"
            )
        from hubi import qrscan

        return qrscan.collect([data])
    if len(data) > objects.MAX_OBJECT_FILE:
        raise ValueError(
            f"{STDIN_NAME}: more than {objects.MAX_OBJECT_FILE:,} bytes and not an image: a hubi"
            f" object is at most {codec.MAX_OBJECT:,} bytes (not read further)"
        )
    return objects.from_hex_text(data, Path(STDIN_NAME))


@click.group()
def note() -> None:
    """Inspect notes and other hubi objects."""


@note.command("show")
@click.argument(
    "file", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path)
)
@click.option(
    "--trust",
    "trust_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Trust bundle (consortium.json + matrices/) to verify against; default: the merchant"
    " home's. One lying beside FILE is used only when given here.",
)
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    help="Merchant home whose trust bundle to verify against (default: $HUBI_MERCHANT_HOME or"
    " ~/.hubi/merchant, if set up).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(file: Path, trust_dir: Path | None, home: Path | None, as_json: bool) -> None:
    """Decode FILE (binary object, its hex as text, or QR image; - for standard input) and
    verify it offline, field by field."""
    from hubi.merchant.config import MerchantError

    piped = file == STDIN
    name = STDIN_NAME if piped else str(file)
    try:
        trusted, source = trusted_bundle(trust_dir, home)
    except MerchantError as exc:  # the home asked for cannot vouch: say so, not "unverified"
        _fail(as_json, type(exc).__name__, f"cannot verify {name}: {exc}")
    try:
        if piped:
            stdin = sys.stdin.buffer if sys.stdin is not None else None
            data = read_stdin(stdin)
            beside = None  # no folder: nothing lies beside a pipe
        else:
            data = objects.read_object_bytes(file)
            beside = None if trusted is not None else kmc.find_trust(file.parent)
        info = describe(data, trusted, source, beside)
    except kmc.TrustBundleError as exc:  # the note may be fine; the bundle to check it is not
        _fail(as_json, type(exc).__name__, f"cannot verify {name}: {exc}")
    except (HubiError, ValueError, OSError) as exc:
        _fail(as_json, type(exc).__name__, f"cannot read {name}: {type(exc).__name__}: {exc}")
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
        console.print(styled("yellow", f"not verified: {printable(ver['reason'], 2000)}"))
        return
    for f in ver["fields"]:
        mark = "[green]ok[/green]" if f["ok"] else f"[red]FAILED[/red] {escape(f['reason'])}"
        console.print(f"  {escape(f['field']):<10} {mark}")
    # against which consortium, and who chose it: a verdict is only as good as that bundle
    against = escape(printable(ver.get("trust", "?"), 300))
    source = escape(printable(ver.get("trust_from", "?"), 300))
    console.print(
        f"[green]verified offline[/green] against the trust bundle {against} (from {source})"
        if ver["ok"]
        else f"[red]verification failed[/red] against the trust bundle {against} (from {source})"
    )
