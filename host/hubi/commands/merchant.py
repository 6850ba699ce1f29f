"""`hubi merchant`: request, scan (camera, images, video), outbox, upload — the payee's side."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.markup import escape

from hubi.commands.params import (
    EXISTING_FILE,
    HTTP_URL,
    POSITIVE_SECONDS,
    SECONDS,
    env_option,
    typed_text,
)
from hubi.output import console, err_console, print_json, printable, styled

HOME_HELP = "Merchant home folder (default: $HUBI_MERCHANT_HOME or ~/.hubi/merchant)."


def _fail(as_json: bool, exc: BaseException | str, code: int = 2, hint: str = "") -> NoReturn:
    if isinstance(exc, BaseException):
        kind, msg = type(exc).__name__, str(exc)
    else:
        kind, msg = "error", exc
    if hint:
        msg += f" ({hint})"
    if as_json:
        print_json({"ok": False, "error": kind, "message": msg})
    else:
        # a message may quote a damaged file or a bank: no terminal controls from them
        err_console.print(f"[red]error:[/red] {escape(printable(msg, 2000))}", highlight=False)
    sys.exit(code)


def _shown(text: object) -> str:
    """A path or name for rich markup: escaped, and its control characters shown as escapes
    (a file named with ESC sequences in it could otherwise drive the terminal)."""
    return escape(printable(text, 2000))


def _open(ctx: click.Context, as_json: bool, write: bool = True) -> Any:
    """The merchant of the home; write=False for a command that only reads (`outbox`), which
    a read-only home (a read-only mount, a backup copy) allows: its outbox is opened read-only."""
    from hubi.merchant import Merchant, MerchantError

    home: Path = ctx.obj["home"]
    try:
        m = Merchant.open(home)
    except (MerchantError, OSError, ValueError) as exc:
        if _read_only(home):  # SQLite's words were "unable to open database file"
            _fail(as_json, exc, hint=_READ_ONLY.format(home=home))
        _fail(as_json, exc)
    if write and m.outbox.read_only:  # refused before a note is scanned it could not keep
        where = home if _read_only(home) else m.outbox.path
        m.close()
        _fail(as_json, MerchantError(_READ_ONLY.format(home=where)))
    return m


_READ_ONLY = (
    "{home} is read-only: a merchant home must be writable to make requests, take notes or"
    " upload them (`hubi merchant outbox` lists a read-only one)"
)

# write_atomic's temporary file (".NAME.", mkstemp's 8 random characters, ".tmp"), left
# behind by a process killed while it wrote; one younger than STALE_TEMP may be another's,
# writing now
STALE_TEMP = 60.0
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def _remove_stale_temps(qr_dir: Path, now: float | None = None) -> list[Path]:
    """Remove from HOME/qr (that folder only, not below it) the regular files named as
    write_atomic's temporaries that are older than STALE_TEMP seconds; returns them."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(os.scandir(qr_dir))
    except OSError:  # no qr folder yet, or not one to read: nothing left there by hubi
        return removed
    for e in entries:
        if not _TEMP_NAME.fullmatch(e.name):
            continue
        try:
            st = e.stat(follow_symlinks=False)  # a link is never followed nor removed
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime > STALE_TEMP:
                os.unlink(e.path)
                removed.append(Path(e.path))
        except OSError:  # gone meanwhile, or not ours to remove: left as it is
            continue
    return removed


def _read_only(home: Path) -> bool:
    """True if `home` is a folder that cannot be written (a read-only mount, a backup copy):
    what stops a merchant command there, which its error did not say."""
    try:
        return home.is_dir() and not os.access(home, os.W_OK)
    except OSError:
        return False


def _errors() -> tuple[type[BaseException], ...]:
    from hubi.merchant import MerchantError
    from hubi_core.errors import HubiError

    return (MerchantError, HubiError, OSError, ValueError)


def _restore_images(
    m: Any,
    as_json: bool,
    kind: str,
    restore: Callable[[], tuple[list[Any], int]],
    said: Callable[[Any], tuple[str, Path]],
) -> dict[str, Any]:
    """Write again the `kind` images missing from HOME/qr with `restore` (a command killed
    between storing its object and writing the PNG): each said (`said` gives the line and the
    path), and returned for the JSON output under `<kind>s_...`."""
    if m.outbox.read_only:  # a read-only home is listed as it is
        return {}
    _remove_stale_temps(m.home.qr_dir)
    key = kind + "s"
    try:
        written, left = restore()
    except (OSError, sqlite3.DatabaseError) as exc:  # the command's own work goes on
        if not as_json:
            err_console.print(
                styled("yellow", printable(f"missing {kind} images not written: {exc}", 2000))
            )
        return {f"{key}_rewritten": [], f"{key}_error": f"{type(exc).__name__}: {exc}"}
    lines = [said(item) for item in written]
    if not as_json:
        for line, _path in lines:
            err_console.print(line)
        if left:
            err_console.print(f"{left} more {kind} image(s) missing: run this again for them")
    out: dict[str, Any] = {f"{key}_rewritten": [str(path) for _line, path in lines]}
    if left:
        out[f"{key}_missing"] = left
    return out


def _restore_receipts(m: Any, as_json: bool) -> dict[str, Any]:
    """The receipt images missing from HOME/qr (a scan killed between keeping a note and
    writing its receipt's PNG), written again from the outbox."""
    return _restore_images(
        m,
        as_json,
        "receipt",
        m.restore_receipt_pngs,
        lambda path: (f"receipt image written again from the outbox: {_shown(path)}", path),
    )


def _restore_requests(m: Any, as_json: bool) -> dict[str, Any]:
    """The images of the requests still open missing from HOME/qr (a `request` killed between
    storing its request and writing its PNG), drawn again from the outbox."""
    return _restore_images(
        m,
        as_json,
        "request",
        m.restore_request_pngs,
        lambda item: (
            f"image of open request #{item[0]} missing from the home, drawn from the outbox:"
            f" {_shown(item[1])}",
            item[1],
        ),
    )


@click.group()
@env_option(
    "--home",
    envvar="HUBI_MERCHANT_HOME",
    type=click.Path(file_okay=False, path_type=Path),
    help=HOME_HELP,
)
@click.pass_context
def merchant(ctx: click.Context, home: Path | None) -> None:
    """The merchant: ask for payment, scan notes offline, keep them, upload them to the bank."""
    from hubi.merchant import default_home

    ctx.ensure_object(dict)
    ctx.obj["home"] = home or default_home()


# ------------------------------------------------------------------------------------ init
@merchant.command()
@click.option(
    "--bank-home",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A bank home folder (hubi.kmc layout): issue the account with that bank's KMC.",
)
@click.option("--account", help="Account id to issue, e.g. BKB-000000000007 (with --bank-home).")
@click.option("--currency", default="CNY", show_default=True, help="Currency of a new account.")
@click.option(
    "--key",
    "key_file",
    type=EXISTING_FILE,
    help="Import: the account's private key file (32 bytes or 64 hex digits).",
)
@click.option(
    "--template",
    "template_file",
    type=EXISTING_FILE,
    help="Import: the account's bank-sealed Template (binary, or its hex as text).",
)
@click.option(
    "--trust",
    "trust_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Import: trust bundle folder (consortium.json + matrices/).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def init(
    ctx: click.Context,
    bank_home: Path | None,
    account: str | None,
    currency: str,
    key_file: Path | None,
    template_file: Path | None,
    trust_dir: Path | None,
    as_json: bool,
) -> None:
    """Set up a merchant home: from a bank home (demo/tests) or from an issued key + template."""
    from hubi import merchant as m

    home: Path = ctx.obj["home"]
    try:
        if bank_home is not None:
            if not account:
                raise m.MerchantError("--bank-home needs --account")
            m.init_from_bank_home(home, bank_home, account, currency)
        elif key_file and template_file and trust_dir:
            m.import_identity(home, key_file, template_file, trust_dir)
        else:
            raise m.MerchantError(
                "pass --bank-home DIR --account ID, or --key FILE --template FILE --trust DIR"
            )
        mh = m.MerchantHome.open(home)
    except _errors() as exc:
        _fail(as_json, exc)
    info = {"ok": True, "home": str(home), "account": mh.account, "currency": mh.currency}
    if as_json:
        print_json(info)
    else:
        console.print(f"merchant {mh.account} ({mh.currency}) set up in {_shown(home)}")


# --------------------------------------------------------------------------------- request
MAX_AMOUNT_TEXT = 64  # characters: "9,223,372,036,854,775.807" is 25
# A request is for one sale at the counter: a day covers one printed for the day's stall. A
# longer one (ten years were taken) stays payable long after the price or the cashier changed.
MAX_EXPIRES = 86400


def _expires(_ctx: click.Context, _param: click.Parameter, value: int) -> int:
    if value > MAX_EXPIRES:
        raise click.BadParameter(
            f"{value} seconds is more than a day ({MAX_EXPIRES}): a request is for one sale;"
            " sign a new one when it runs out"
        )
    return value


@merchant.command("request")
@click.option("--amount", required=True, help="Amount in major units, e.g. 12.50.")
@click.option("--purpose", default=None, help="What the payment is for (at most 64 bytes).")
@click.option(
    "--expires",
    default=300,
    show_default=True,
    type=click.IntRange(1),
    callback=_expires,
    help="Seconds payable, 1 to 86400 (a day: a request printed for the day's stall).",
)
@click.option(
    "--png",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to save the QR (default HOME/qr/request-NNNNNN.png).",
)
@click.option(
    "--port",
    help="Serial port of an attached token (or the simulator's pty): send the request over the"
    " link, take the note back, accept it and hand over the receipt.",
)
@click.option("--no-qr", is_flag=True, help="Do not draw the QR in the terminal.")
@click.option(
    "--clock-is-right",
    is_flag=True,
    help="This computer's clock is right: forget a later time the outbox wrote (the clock was"
    " once set ahead, and every request warned that it is behind).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (no terminal QR).")
@click.pass_context
def request_cmd(
    ctx: click.Context,
    amount: str,
    purpose: str | None,
    expires: int,
    png: Path | None,
    port: str | None,
    no_qr: bool,
    clock_is_right: bool,
    as_json: bool,
) -> None:
    """Sign a payment request, show it as QR (terminal + PNG), optionally send it to a token."""
    from hubi.merchant import format_amount, parse_amount
    from hubi.merchant import request as req_mod

    if len(amount) > MAX_AMOUNT_TEXT:  # the error would quote it all
        _fail(as_json, f"--amount {printable(amount, 24)!r}: not an amount (too long)")
    try:
        minor = parse_amount(amount)
    except ValueError as exc:
        _fail(as_json, exc)
    if purpose is not None:  # "café" under LANG=C came as surrogates: read from its bytes
        text = typed_text(purpose)
        if text is None:  # bytes that are not UTF-8 (a Latin-1 terminal)
            _fail(
                as_json, f"--purpose {printable(purpose, 40)!r}: not UTF-8 text (check the locale)"
            )
        purpose = text
    with _open(ctx, as_json) as m:
        restored = _restore_requests(m, as_json)  # an earlier request killed before its PNG
        try:
            issued = m.request(minor, purpose, expires, png=png, clock_is_right=clock_is_right)
        except _errors() as exc:
            _fail(as_json, exc)
        out: dict[str, Any] = {
            "ok": True,
            "account": m.account,
            "request": issued.as_dict(),
            "link": None,
            **restored,
        }
        if issued.clock_warning is not None:  # named before the QR is shown to anyone
            out["warnings"] = [issued.clock_warning]
            if not as_json:
                err_console.print(styled("yellow", f"warning: {issued.clock_warning}"))
        if not as_json:
            if not no_qr:
                sys.stdout.write(req_mod.terminal_qr(issued.bytes))
            console.print(
                f"request #{issued.serial}: pay {format_amount(minor, m.currency)} to {m.account}"
                + (f" for {escape(repr(issued.purpose))}" if issued.purpose else "")
                + f", payable for {expires} s  ({len(issued.bytes)} bytes,"
                + f" PNG {_shown(issued.png)})"
            )
        if port:
            out["link"], res = _pay_over_link(m, port, issued, as_json, no_qr)
            if res is not None:
                out["payment"] = res.as_dict()
                out["ok"] = res.ok
            else:
                out["ok"] = False
    if as_json:
        print_json(out)
    sys.exit(0 if out["ok"] else 1)


def _pay_over_link(
    m: Any, port: str, issued: Any, as_json: bool, no_qr: bool
) -> tuple[dict[str, Any], Any]:
    """Request -> token (PAY_REQUEST), note <- token, accept offline, receipt -> token."""
    from hubi.merchant import format_amount, link
    from hubi.merchant import request as req_mod

    def ask_pin(summary: dict[str, Any]) -> str | None:
        amount = format_amount(issued.amount, issued.currency)
        err_console.print(
            f"the token on {_shown(port)} asks its owner's PIN to pay {amount} to {m.account}"
        )
        return click.prompt(
            "payer's PIN", hide_input=True, default="", show_default=False, err=True
        )

    if not as_json:
        console.print(
            f"sending request #{issued.serial} to the token on {_shown(port)};"
            " the payer confirms there"
        )
    try:
        note, info = link.pay(port, issued.bytes, ask_pin)
    except _errors() as exc:
        if not as_json:
            err_console.print(styled("red", printable(f"link {port}: no note: {exc}", 2000)))
        return {"port": port, "paid": False, "error": f"{type(exc).__name__}: {exc}"}, None
    res = m.accept(note, request_serial=issued.serial)
    out: dict[str, Any] = {"port": port, "paid": True, **info, "note": note.hex()}
    if not as_json:
        _print_result(res, no_qr, req_mod)
    if res.receipt is not None:
        out["receipt"] = _send_link(port, "receipt", res.receipt, as_json)
    return out, res


def _send_link(port: str, what: str, data: bytes, as_json: bool) -> dict[str, Any]:
    from hubi.merchant import link

    try:
        res = link.send(port, what, data)
    except _errors() as exc:
        if not as_json:
            err_console.print(
                styled("yellow", printable(f"link {port}: {what} not sent: {exc}", 2000))
            )
        return {"port": port, "sent": False, "error": f"{type(exc).__name__}: {exc}"}
    if not as_json:
        console.print(f"{what} handed to the token on {_shown(port)}")
    return {"port": port, "sent": True, **res}


# ------------------------------------------------------------------------------------ scan
@merchant.command()
@click.option(
    "--camera",
    type=click.IntRange(0),  # OpenCV crashes the process on a negative index
    default=None,
    help="Scan from camera index N (OpenCV).",
)
@click.option(
    "--image",
    "images",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Image file(s) or folder(s); more files may follow as arguments.",
)
@click.option("--video", type=EXISTING_FILE, help="A video file.")
@click.argument("more", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--request", "request_serial", type=int, help="Match this request (default: latest).")
@click.option(
    "--count",
    type=click.IntRange(1),
    default=None,
    help="Stop after this many notes (camera default: 1; images/video: all).",
)
@click.option(
    "--timeout",
    type=POSITIVE_SECONDS,
    default=120.0,
    show_default=True,
    help="Camera: give up after this many seconds.",
)
@click.option("--port", help="Serial port of an attached token: send the receipt over the link.")
@click.option("--no-qr", is_flag=True, help="Do not draw the receipt QR in the terminal.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def scan(
    ctx: click.Context,
    camera: int | None,
    images: tuple[Path, ...],
    video: Path | None,
    more: tuple[Path, ...],
    request_serial: int | None,
    count: int | None,
    timeout: float,
    port: str | None,
    no_qr: bool,
    as_json: bool,
) -> None:
    """Read notes (single or animated QR), verify them offline, keep them, hand back receipts.

    Nothing goes over the network. A rejected note is reported with the field that is wrong
    (forged template, altered field, expiry, payee, amount, ...). Exit status 0 if every note
    read was accepted, 1 if any was rejected, 2 if no note could be read.
    """
    from hubi import qrscan
    from hubi.merchant import request as req_mod
    from hubi.merchant import scan as scan_mod

    chosen = sum(x is not None and x != () for x in (camera, images or more or None, video))
    if chosen != 1:
        _fail(as_json, "choose exactly one of --camera N, --image FILE..., --video FILE")
    sources: Iterator[Any] | list[Any]
    thorough = True
    try:
        if camera is not None:
            sources = _deadline(qrscan.frames_from_camera(camera), timeout)
            thorough = False
            count = count or 1
            what = f"camera {camera}"
        elif video is not None:
            sources = qrscan.frames_from_video(video)
            what = str(video)
        else:
            sources = scan_mod.image_paths([*images, *more])
            if not sources:  # only folders, none holding an image: "no note in 0 image(s)"
                names = ", ".join(str(p) for p in (*images, *more))
                kinds = ", ".join(qrscan.IMAGE_SUFFIXES)
                _fail(as_json, f"no image file in {names} (a folder is read for {kinds} files)")
            what = f"{len(sources)} image(s)"
    except _errors() as exc:
        _fail(as_json, exc)

    results: list[Any] = []
    last_prog: dict[str, int] = {}
    status = None if as_json else err_console.status(f"scanning {_shown(what)} …")

    def progress(p: scan_mod.Progress) -> None:
        last_prog.update(p.as_dict())
        if status is not None:
            parts = f"parts {p.have}/{p.need}" if p.need > 1 else "waiting for a note"
            status.update(f"scanning {_shown(what)}: frame {p.frames}, {parts}, notes {p.done}")

    def on_result(res: Any) -> None:
        if as_json:
            return
        if status is not None:
            status.stop()
        _print_result(res, no_qr, req_mod)
        if port and res.receipt is not None:
            res.extra["link"] = _send_link(port, "receipt", res.receipt, as_json)
        if status is not None:
            status.start()

    def frame_error(src: Any, exc: Exception) -> None:
        if as_json:
            return
        if isinstance(exc, scan_mod.ForeignCode):  # a web address or Wi-Fi code in view
            err_console.print(styled("yellow", printable(f"{what}: {exc}", 2000)))
            return
        where = src if isinstance(src, str | os.PathLike) else what  # a frame: no name
        said = str(exc)  # the image reader's own words often name the file already
        text = said if said.startswith(f"{where}:") else f"{where}: {said}"
        err_console.print(styled("yellow", printable(f"skipped {text}", 2000)))

    with _open(ctx, as_json) as m:
        restored = _restore_receipts(m, as_json)
        try:
            if status is not None:
                status.start()
            results = m.scan(
                sources,
                progress=progress,
                thorough=thorough,
                limit=count,
                request_serial=request_serial,
                on_result=on_result,
                on_frame_error=frame_error,
            )
        except _errors() as exc:
            if status is not None:
                status.stop()
            _fail(as_json, exc)
        finally:
            if status is not None:
                status.stop()
        if as_json and port:
            for res in results:
                if res.receipt is not None:
                    res.extra["link"] = _send_link(port, "receipt", res.receipt, as_json)
    accepted = sum(1 for r in results if r.ok)
    out = {
        "ok": bool(results) and accepted == len(results),
        "accepted": accepted,
        "rejected": len(results) - accepted,
        "results": [r.as_dict() for r in results],
        "frames": last_prog.get("frames", 0),
        "progress": last_prog,
        **restored,
    }
    if not results:
        out["error"] = "no note found"
    if as_json:
        print_json(out)
    elif not results:
        err_console.print(
            f"[red]no complete note in {_shown(what)}[/red] (frames {last_prog.get('frames', 0)}, "
            f"parts {last_prog.get('have', 0)}/{last_prog.get('need', 0)})"
        )
    sys.exit(0 if out["ok"] else (1 if results else 2))


def _deadline(frames: Iterator[Any], seconds: float) -> Iterator[Any]:
    end = time.monotonic() + seconds
    for f in frames:
        yield f
        if time.monotonic() > end:
            return


def _print_result(res: Any, no_qr: bool, req_mod: Any) -> None:
    from hubi.merchant import format_amount

    v = res.verdict
    info = v.note_info()
    if res.ok:
        console.print(
            f"[green]ACCEPTED[/green] {format_amount(info['amount'], info['currency'])} from"
            f" {info['payer']} (serial {info['serial']}), note {info['note_id'][:16]}…,"
            f" request #{res.request_serial}"
        )
        if res.receipt is not None:
            if not no_qr:
                sys.stdout.write(req_mod.terminal_qr(res.receipt))
            console.print(f"receipt #{res.receipt_serial}: {_shown(res.receipt_png)}")
            if "receipt_png_error" in res.extra:  # written again by the next command
                err_console.print(styled("yellow", printable(res.extra["receipt_png_error"], 2000)))
    else:
        who = f" from {info['payer']} serial {info['serial']}" if info else ""
        field, reason = escape(str(v.field)), escape(str(v.reason))
        console.print(f"[red]REJECTED[/red]{escape(who)}: [bold]{field}[/bold] — {reason}")


# ---------------------------------------------------------------------------------- upload
@merchant.command()
@click.option(
    "--bank", "bank_url", type=HTTP_URL, help="Bank node URL (default: the consortium's endpoint)."
)
@click.option("--retries", default=6, show_default=True, type=click.IntRange(0), help="Per note.")
@click.option("--backoff", default=0.5, show_default=True, type=SECONDS, help="First delay (s).")
@click.option("--max-backoff", default=30.0, show_default=True, type=SECONDS, help="Delay cap (s).")
@click.option(
    "--timeout", default=10.0, show_default=True, type=POSITIVE_SECONDS, help="HTTP timeout (s)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def upload(
    ctx: click.Context,
    bank_url: str | None,
    retries: int,
    backoff: float,
    max_backoff: float,
    timeout: float,
    as_json: bool,
) -> None:
    """Upload every pending note to the bank; keep each until the bank gives a final answer.

    Idempotent: a note the bank has seen gets its first answer again. Network errors and 5xx,
    408, 425 and 429 replies are retried with exponential back-off. Exit status 0 when nothing
    is left pending, 1 otherwise.
    """
    from hubi.merchant import upload as up

    with _open(ctx, as_json) as m:
        restored = _restore_receipts(m, as_json)
        try:
            url = bank_url or up.bank_url_of(m)
        except _errors() as exc:
            _fail(as_json, exc)
        say: Callable[[str], None] = (lambda _s: None) if as_json else _say
        try:
            report = up.upload(
                m,
                url,
                retries=retries,
                base_delay=backoff,
                max_delay=max_backoff,
                timeout=timeout,
                say=say,
            )
        except up.UploadBusy as exc:  # the notes are in the other upload's hands: not usage
            _fail(as_json, exc, 1)
        except _errors() as exc:
            _fail(as_json, exc)
    if as_json:
        print_json({**report.as_dict(), **restored})
    else:
        _print_upload(report)
    sys.exit(0 if report.ok else 1)


def _say(text: str) -> None:
    # lines carry the bank's words: no terminal controls (upload escapes them; so does this)
    console.print(printable(text, 1000), markup=False, highlight=False)


def _print_upload(report: Any) -> None:
    c = report.counts()
    if report.stopped:
        err_console.print(styled("yellow", f"stopped: {printable(report.stopped)}"))
    console.print(
        f"uploaded to {escape(report.bank_url)}: {c['booked']} settled, {c['bounced']} bounced,"
        f" {c['refused']} refused, {c['pending']} still pending"
    )


# ---------------------------------------------------------------------------------- outbox
@merchant.command()
@click.option(
    "--state", type=click.Choice(["pending", "booked", "bounced", "refused"]), default=None
)
@click.option(
    "--last",
    type=click.IntRange(0),
    default=None,
    help="Only the newest N notes (default: 50 in the table, all in JSON; 0: all).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def outbox(ctx: click.Context, state: str | None, last: int | None, as_json: bool) -> None:
    """List the notes in the outbox and what the bank said about them."""
    from rich.table import Table
    from rich.text import Text

    from hubi.merchant import format_amount

    if last is None:  # a shop's outbox grows for ever: a terminal gets the newest
        last = 0 if as_json else 50
    with _open(ctx, as_json, write=False) as m:
        restored = {**_restore_receipts(m, as_json), **_restore_requests(m, as_json)}
        read_only = m.outbox.read_only
        try:
            rows = m.notes(state, last or None)
            status = m.status()
            if as_json:
                rejects = m.outbox.rejects(last or None)
            else:
                rejected = m.outbox.reject_count()
        except (sqlite3.DatabaseError, TypeError, ValueError) as exc:  # a table edited by hand
            _fail(as_json, f"cannot read the outbox {m.outbox.path}: {printable(exc)}")
    if as_json:
        print_json(
            {
                **status,
                "items": [r.as_dict() for r in rows],
                "reject_log": rejects,
                **restored,
                "read_only": read_only,
                "ok": True,
            }
        )
        return
    table = Table(title=f"outbox of {status['account']}")
    for col in ("note", "payer", "serial", "amount", "state", "detail"):
        table.add_column(col)
    for r in rows:
        said = r.outcome or {}
        detail = r.last_error or "; ".join(str(said[k]) for k in ("reason", "clock") if said.get(k))
        if r.state == "booked" and r.notice is not None:
            detail = "SettlementNotice verified and in the book"
        if r.damage is not None:
            detail = f"DAMAGED outbox row {r.rowid}: {r.damage}"
        table.add_row(
            r.note_id.hex()[:16] + "…" if r.note_id else f"row {r.rowid}",
            Text(printable(r.payer, 40)),
            str(r.serial),
            format_amount(r.amount, printable(r.currency, 8)),
            "settled" if r.state == "booked" else printable(r.state, 20),
            Text(printable(detail)),  # the bank's words, or an error: never markup nor controls
        )
    console.print(table)
    n = status["notes"]
    held = n[state] if state else sum(n.values())
    if len(rows) < held:
        console.print(f"the newest {len(rows)} of {held} shown (--last 0: all)")
    console.print(
        f"{n['pending']} pending, {n['booked']} settled, {n['bounced']} bounced,"
        f" {n['refused']} refused; {rejected} rejected scan(s)"
    )
    if read_only:
        console.print(f"read-only home {_shown(m.home.path)}: listed as it is, nothing written")
