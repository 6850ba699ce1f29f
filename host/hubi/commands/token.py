"""`hubi token ...`: simulate, provision, pay, inspect, flash and deploy a token.

Every command that talks to a token takes --port: a board's serial port (/dev/ttyUSB0) or the
pseudo-terminal path `hubi token sim` prints. Errors from the token carry its reason.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from hubi.amounts import format_amount
from hubi.commands.params import EXISTING_FILE, MAX_AMOUNT, env_option, in_existing_folder
from hubi.files import write_atomic
from hubi.output import console, counted, err_console, print_json, printable, styled
from hubi.token import deploy as dep
from hubi.token import provision as prov
from hubi.token.client import BadReply, TokenClient
from hubi.token.sim import (
    PROFILES,
    SIM_HEAPS,
    SimError,
    Simulator,
    run_forever,
    settings_problem,
)
from hubi_core import codec
from hubi_core.errors import ErrorReply, HubiError
from hubi_core.protocol import ERR_STORAGE

port_opt = click.option("--port", "-p", required=True, help="Serial port or simulator pty path.")
json_opt = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
# a PIN on the command line is in /proc/PID/cmdline, which every local user may read
PIN_VISIBLE = (
    " On the command line it is visible to other local users: prefer the environment"
    " variable, or a dash ('-') to be asked."
)


def pin_opt(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return env_option("--pin", envvar="HUBI_PIN", metavar="PIN|-", help=what + PIN_VISIBLE)


def _ask_pin(prompt: str = "PIN") -> str:
    return click.prompt(prompt, hide_input=True, err=True)


def _pin_for(tok: TokenClient, pin: str | None, unknown_asks: bool = False) -> str | None:
    """The PIN to send with BALANCE or WIPE: '-' asks it here; none given, a provisioned token
    without a screen has it asked here too (an empty PIN would cost one of its tries), and a
    token with one asks its owner on the device. `unknown_asks` (WIPE): a token that answers
    GET_INFO with an error (a storage fault, which lets only WIPE through) may be either, so
    the PIN is asked here, an empty answer leaving it to a screen."""
    if pin is None:
        info = _info_or_none(tok)
        if info is None:
            if unknown_asks:
                typed = click.prompt(
                    "PIN (a token with a screen asks for it itself: press Enter)",
                    hide_input=True,
                    err=True,
                    default="",
                    show_default=False,
                )
                return typed or None
        elif info.get("screen", 0) is None and info["state"] == "ready":
            return _ask_pin()
    return _ask_pin() if pin == "-" else pin


def _has_screen(tok: TokenClient) -> bool:
    info = _info_or_none(tok)
    return info is not None and info.get("screen") is not None


def _info_or_none(tok: TokenClient) -> dict[str, Any] | None:
    """GET_INFO, or None where it is not answered (a token in a storage fault answers it with
    STORAGE; the request itself then gets that error) or not as it should be."""
    try:
        return tok.info()
    except (ErrorReply, BadReply):
        return None


def _fail(msg: str, code: int = 2) -> None:
    err_console.print(styled("red", msg))
    sys.exit(code)


# what the token says (its error texts fit one frame) is shown escaped: no markup, no control
# or bidirectional characters reach the terminal
ERROR_SHOWN = 1100


def _t(value: object, limit: int = 200) -> str:
    """A value the token sent, for console.print: control characters escaped, cut, no markup."""
    return escape(printable(value, limit))


@contextmanager
def _token(port: str) -> Iterator[TokenClient]:
    try:
        tok = TokenClient.open(port)
    except HubiError as e:
        _fail(f"cannot talk to the token on {port}: {printable(e, ERROR_SHOWN)}")
    try:
        yield tok
    except HubiError as e:
        _fail(f"token: {printable(e, ERROR_SHOWN)}{_storage_hint(e)}")
    finally:
        tok.close()


def _storage_hint(e: HubiError) -> str:
    """What a STORAGE error means, from its code (the token's own text may say little)."""
    if isinstance(e, ErrorReply) and e.code == ERR_STORAGE:
        return (
            "\nthe token's storage is full or a file on it cannot be read: it signs nothing"
            " until room is made or the file is put back (a simulator's is STATE/flash)"
        )
    return ""


def _out(data: Any, as_json: bool, human: Callable[[Any], None] | None = None) -> None:
    if as_json or human is None:
        print_json(data)
    else:
        human(data)


@click.group()
def token() -> None:
    """The customer's token: simulator, provisioning, payments, flashing, deployment."""


# Checked before the token is touched: past these the codec refuses the allowance, which used to
# happen after the trust files (68 KB) had gone over the link.
MAX_SERIAL = (1 << 63) - 1  # a bank refuses a note past it (a book's row is signed 64-bit)
DAYS = click.IntRange(1, 3660)  # an expiry is a 32-bit time; ten years is plenty for a voucher
DAYS_HELP = "Days the allowance is valid (at most ten years)."
# a note written to a file: its folder is checked before the token signs, not after
OUT_FILE = click.Path(dir_okay=False, path_type=Path)


def _heapsize(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """MicroPython's -X heapsize: a number of bytes, or of k or M (it refuses anything else)."""
    if value is not None and not re.fullmatch(r"[0-9]+[kKmM]?", value):
        raise click.BadParameter(f"{value!r}: bytes, or a number of k or M (e.g. 96k)")
    return value


@token.command("sim")
@click.option("--state", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--profile", "--board", type=click.Choice(PROFILES), default="esp32_st7789_240")
@click.option("--script", type=EXISTING_FILE)
@click.option(
    "--heapsize",
    default=None,
    callback=_heapsize,
    help="MicroPython heap (default per profile: "
    + ", ".join(f"{p} {h}" for p, h in SIM_HEAPS.items())
    + ").",
)
@click.option("--settings", "settings_json", help='Overrides, e.g. {"kdf_iterations": 2000}.')
@click.option("--keyboard/--no-keyboard", default=None, help="Forward key presses (default: tty).")
@click.option(
    "--port-file", type=click.Path(dir_okay=False, path_type=Path), callback=in_existing_folder
)
def sim_cmd(
    state: Path,
    profile: str,
    script: Path | None,
    heapsize: str | None,
    settings_json: str | None,
    keyboard: bool | None,
    port_file: Path | None,
) -> None:
    """Run the firmware under the MicroPython unix port; print the pty path to use as --port.

    A screen profile's frames are written to STATE/frames/*.png; input comes from --script and
    from the keyboard (arrows/w/s, Enter = OK, Backspace = BACK, digits; q quits). STATE is
    made private to this user (0700), as are the firmware's files in it."""
    try:
        settings = json.loads(settings_json) if settings_json else {}
    except ValueError as e:
        raise click.BadParameter(f"not JSON: {e}", param_hint="'--settings'") from None
    if not isinstance(settings, dict):
        raise click.BadParameter(
            'a JSON object, e.g. {"kdf_iterations": 2000}', param_hint="'--settings'"
        )
    problem = settings_problem(profile, settings)
    if problem:  # said here: the firmware refuses it with a MicroPython traceback
        raise click.BadParameter(problem, param_hint="'--settings'")
    sim = Simulator(state, profile, settings, heapsize=heapsize, script=script)
    try:
        sim.start()
        sim.wait_ready()
        if port_file:  # whole or not at all: a script polling it never reads half a path
            write_atomic(port_file, (str(sim.port) + "\n").encode())
    except (SimError, OSError) as e:
        sim.stop()  # a simulator left running with no one to stop it held its pty for good
        _fail(str(e) if isinstance(e, SimError) else f"token sim: {e.strerror or e}: {e.filename}")
    click.echo(f"token simulator ({profile}) on {sim.port}")
    # a headless profile draws nothing: no frames folder to look in
    frames = f"frames: {sim.frames}   " if sim.draws_frames else ""
    click.echo(f"{frames}log: {sim.log_path}   input: {sim.script}")
    sys.stdout.flush()
    if keyboard is None:
        keyboard = sys.stdin.isatty()
    try:
        code = run_forever(sim, keyboard)
    finally:
        # a stale file would name a pty that a later simulator (or terminal) may get
        if port_file and _names(port_file, sim.port):
            port_file.unlink(missing_ok=True)
    sys.exit(code)


def _names(port_file: Path, port: str) -> bool:
    """`port_file` still holds `port` (not another simulator's since)."""
    try:
        return port_file.read_text().strip() == port
    except (OSError, UnicodeDecodeError):
        return False


@token.command("info")
@port_opt
@json_opt
def info_cmd(port: str, as_json: bool) -> None:
    """State, account, serial, allowance, PIN tries, board."""
    with _token(port) as tok:
        _out(tok.info(), as_json, _print_info)


def _print_info(i: dict[str, Any]) -> None:
    # provisioning's reply has no board or firmware: print what the token said, no "None"
    # (TokenClient checked the keys and types used here; the strings are the token's: escaped)
    head = _t(" ".join(str(i[k]) for k in ("board", "firmware") if i.get(k)), 120)
    state = _t(i["state"])
    console.print(f"[bold]{head}[/bold]  state: {state}" if head else f"state: {state}")
    if i["state"] == "ready":
        console.print(
            f"account {_t(i['account'])} ({_t(i['currency'])})  next serial {i['next_serial']}"
        )
        al = i.get("allowance")
        if al:
            left = escape(format_amount(al["left"]))
            cap = escape(format_amount(al["cap"], printable(i["currency"], 16)))
            console.print(f"allowance #{al['serial']}: {left} of {cap} left")
        console.print(f"PIN tries left {i['pin_tries_left']}, notes kept {i['notes']}")
    else:
        console.print(f"transport key {_t(i.get('transport_key'))}")


@token.command("provision")
@port_opt
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--account", required=True)
@pin_opt("Initial PIN (4-8 digits); asked if not given.")
@click.option(
    "--allowance",
    "cap",
    type=click.IntRange(0, MAX_AMOUNT),
    default=100000,
    show_default=True,
    help="Minor units (0: none).",
)
@click.option("--days", type=DAYS, default=30, show_default=True, help=DAYS_HELP)
@click.option("--first-serial", type=click.IntRange(1, MAX_SERIAL), default=1, show_default=True)
@json_opt
def provision_cmd(
    port: str,
    home: Path,
    account: str,
    pin: str | None,
    cap: int,
    days: int,
    first_serial: int,
    as_json: bool,
) -> None:
    """Issue ACCOUNT from the bank's KMC in HOME and load it into a blank token."""
    if pin is None or pin == "-":
        pin = _ask_pin("initial PIN")
    with _token(port) as tok:
        try:
            out = prov.provision(
                tok,
                home,
                account,
                pin,
                cap or None,
                days,
                first_serial,
                progress=None if as_json else _upload_progress,
            )
        except (RuntimeError, OSError, ValueError) as e:
            _fail(str(e))
        _out(out, as_json, _print_info)


def _upload_progress(name: str, done: int, total: int) -> None:
    if done == total:
        err_console.print(f"uploaded {name} ({counted(total, 'byte')})")


@token.command("allowance")
@port_opt
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option(
    "--amount", type=click.IntRange(1, MAX_AMOUNT), required=True, help="Cap in minor units."
)
@click.option("--days", type=DAYS, default=30, show_default=True, help=DAYS_HELP)
@json_opt
def allowance_cmd(port: str, home: Path, amount: int, days: int, as_json: bool) -> None:
    """Load a new bank-signed offline allowance (the old one is replaced)."""
    from hubi import kmc
    from hubi_core import ids

    with _token(port) as tok:
        i = tok.info()
        if i["state"] != "ready":
            _fail("token not provisioned")
        try:
            bank = kmc.load_bank_identity(home, ids.bank_of(i["account"]))
            now = int(time.time())
            expiry = now + days * 86400
            # the token takes only a newer serial: a second run in the same second was refused
            # as a replay
            serial = max(now, (i["allowance"] or {}).get("serial", 0) + 1)
            a = prov.make_allowance(
                bank, i["account"], amount, i["next_serial"], expiry, serial=serial, now=now
            )
        except (OSError, ValueError) as e:
            _fail(str(e))
        _out(tok.load_allowance(codec.encode(a)), as_json, _print_allowance)


def _print_allowance(a: dict[str, Any]) -> None:
    console.print(
        f"allowance #{a['serial']}: {format_amount(a['left'])} of {format_amount(a['cap'])} left,"
        f" from note serial {a['first_serial']}, expires {_utc(a['expiry'])} UTC",
        markup=False,
    )


@token.command("pay")
@port_opt
@click.option(
    "--request",
    "request_file",
    type=EXISTING_FILE,
    required=True,
)
@pin_opt("Headless tokens: the PIN (asked if not given).")
@click.option("--out", "out_file", type=OUT_FILE, callback=in_existing_folder)
@click.option("--yes", is_flag=True, help="Headless: do not ask for confirmation.")
@click.option("--no-qr", is_flag=True, help="Do not draw the note's QR in the terminal.")
@json_opt
def pay_cmd(
    port: str,
    request_file: Path,
    pin: str | None,
    out_file: Path | None,
    yes: bool,
    no_qr: bool,
    as_json: bool,
) -> None:
    """Send a payee's Request; confirm on the token (or here, for headless ones); get the note."""
    from hubi import objects

    try:
        raw = objects.read_object_bytes(request_file)
    except (HubiError, OSError, ValueError) as e:
        _fail(f"cannot read {request_file}: {e}")
    with _token(port) as tok:
        if not as_json and _has_screen(tok):  # a headless token's payment is confirmed here
            console.print("confirm the payment on the token...")
        r = tok.pay(raw, timeout_ms=10000)
        note = r.note
        if note is None:
            s = r.summary or {}
            (err_console if as_json else console).print(
                f"pay [bold]{_t(s.get('amount_text'))}[/bold] to"
                f" {_t(s.get('payee'))} {_t(s.get('purpose') or '')}"
            )
            if not yes and not click.confirm("confirm?", default=False):
                tok.cancel_pay()
                _fail("cancelled", 1)
            note = tok.confirm_pay(pin if pin and pin != "-" else _ask_pin())
            said = "PAY_CONFIRM"
        else:
            said = "PAY_REQUEST"
        # the token has signed: from here on the note is shown whatever else fails. Decoded
        # first: bytes that are not a note are kept apart, never in the note's file
        try:
            n = codec.decode(note, codec.NOTE)
        except HubiError as e:
            _not_a_note(said, note, e, out_file, port)
        other = _pays_other(raw, n)
        if other is not None:  # a note for another payment (an earlier one, another payee)
            _not_a_note(said, note, other, out_file, port, "a note for this request")
        unsaved = _save(note, out_file) if out_file else None
        info = {
            "serial": n.serial,
            "amount": n["amount"],
            "payee": n["payee"],
            "size": len(note),
            "note": note.hex(),
        }
        if unsaved is not None:
            info["error"] = unsaved
        if as_json:
            print_json(info)
        else:
            saved = f" -> {escape(str(out_file))}" if out_file and unsaved is None else ""
            console.print(f"note #{n.serial}: {len(note)} bytes{saved}")
            if unsaved is not None:
                console.print(note.hex(), soft_wrap=True)
            if not no_qr:
                _terminal_qr(note)
    if unsaved is not None:
        _fail(
            f"{unsaved}; the note is kept on the token (`hubi token note --port {port}`"
            f" shows it again)",
            1,
        )


def _pays_other(request: bytes, n: codec.Obj) -> str | None:
    """How the signed note differs from the Request sent (payee, amount, purpose), or None."""
    try:
        req = codec.decode(request, codec.REQUEST)
    except HubiError:  # not a Request: a token refuses it, it signs nothing for it
        return None
    for name, want, got in (
        ("payee", req.signer, n["payee"]),
        ("amount", req["amount"], n["amount"]),
        ("purpose", req.get("purpose") or None, n.get("purpose") or None),
    ):
        if want != got:
            return f"its {name} is {got!r}, the request's {want!r}"
    return None


def _not_a_note(
    said: str,
    reply: bytes,
    e: object,
    out_file: Path | None,
    port: str,
    what: str = "a note",
) -> None:
    """The token's reply to a payment is not a note (for this request): say so, and keep its
    bytes (the token may have used up a serial for them) in OUT.not-a-note, never in OUT."""
    msg = f"token: the reply to {said} is not {what} ({printable(e)})"
    if out_file is not None:
        raw = out_file.with_name(out_file.name + ".not-a-note")
        unsaved = _save(reply, raw)
        if unsaved is None:
            msg += f"; its {len(reply)} bytes were written to {raw} (not to {out_file})"
        else:
            msg += f"; {unsaved.replace('the note', 'its bytes')}"
    _fail(f"{msg}; `hubi token note --port {port}` shows what the token kept")


def _save(note: bytes, out_file: Path) -> str | None:
    """Write the note to out_file; None, or what went wrong (naming the file)."""
    try:
        out_file.write_bytes(note)
    except OSError as e:
        return f"cannot write the note to {out_file}: {e.strerror or e}"
    return None


def _terminal_qr(data: bytes) -> None:
    import segno

    segno.make(data, error="m", boost_error=False).terminal(compact=True)


@token.command("note")
@port_opt
@click.option("--serial", type=click.IntRange(1, MAX_SERIAL), help="Default: the last note.")
@click.option("--out", "out_file", type=OUT_FILE, callback=in_existing_folder)
def note_cmd(port: str, serial: int | None, out_file: Path | None) -> None:
    """Fetch a kept note (default: the last one)."""
    with _token(port) as tok:
        note = tok.note(serial)
    if out_file:
        unsaved = _save(note, out_file)
        if unsaved is not None:
            _fail(unsaved)
    else:
        click.echo(note.hex())


@token.command("notes")
@port_opt
@json_opt
def notes_cmd(port: str, as_json: bool) -> None:
    """The notes kept on the token."""
    with _token(port) as tok:
        notes = tok.notes()
        currency = None if as_json or not notes else tok.info().get("currency")
    _out(notes, as_json, lambda n: _print_notes(n, currency))


def _print_notes(notes: list[dict[str, Any]], currency: str | None) -> None:
    if not notes:
        console.print("no notes kept on this token")
    for n in notes:  # a line each: a table squeezes account ids at 80 columns
        purpose = f" for {n['purpose']!r}" if n.get("purpose") else ""  # as the token signed it
        receipt = "receipt kept" if n.get("receipt") else "no receipt"
        console.print(
            escape(
                printable(
                    f"#{n['serial']}  {_utc(n['time'])} UTC  {format_amount(n['amount'], currency)}"
                    f" to {n['payee']}{purpose}  ({receipt}; note {str(n['note_id'])[:16]}…)",
                    600,
                )
            ),
            soft_wrap=True,
        )


def _utc(t: int) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))
    except (OverflowError, OSError, ValueError):  # a time no calendar here holds
        return f"{t} (Unix time)"


@token.command("notice")
@port_opt
@click.argument("file", type=EXISTING_FILE)
@json_opt
def notice_cmd(port: str, file: Path, as_json: bool) -> None:
    """Load a BalanceNotice or Receipt into the token (verified there)."""
    from hubi import objects

    try:  # before the port is opened: a bad file is named, the token is not touched
        raw = objects.read_object_bytes(file)
    except (HubiError, OSError, ValueError) as e:
        _fail(f"cannot read {file}: {e}")
    with _token(port) as tok:
        loaded = tok.load_notice(raw)
    _out(loaded, as_json, _print_notice)


def _print_notice(n: dict[str, Any]) -> None:
    paid = f"{format_amount(n['amount'])} to {n['payee']}, note {str(n['note_id'])[:16]}…"
    if n["kind"] == "BalanceNotice":
        console.print(
            f"loaded balance notice #{n['serial']} of bank {_t(n['signer'])}: {_t(paid, 400)}"
            " (`hubi token balance` opens the new balance)"
        )
    else:
        purpose = f" for {n['purpose']!r}" if n.get("purpose") else ""
        console.print(
            f"loaded the receipt #{n['serial']} of {_t(n['signer'])}: {_t(paid + purpose, 600)}"
        )


@token.command("balance")
@port_opt
@pin_opt("Headless tokens: the PIN (asked if not given).")
@json_opt
def balance_cmd(port: str, pin: str | None, as_json: bool) -> None:
    """Decrypt the last balance notice (PIN on the token, or --pin for headless ones)."""
    with _token(port) as tok:
        _out(tok.balance(_pin_for(tok, pin)), as_json, _print_balance)


def _print_balance(b: dict[str, Any]) -> None:
    console.print(
        f"balance [bold]{_t(b['balance_text'])}[/bold] (balance notice #{b['notice_serial']}"
        f" of bank {_t(b['bank'])}, {_utc(b['time'])} UTC: {format_amount(b['debited'])} to"
        f" {_t(b['payee'])})"
    )


@token.command("wipe")
@port_opt
@pin_opt("Headless tokens: the PIN (asked if not given).")
def wipe_cmd(port: str, pin: str | None) -> None:
    """Erase the account key, history and trust files (confirm on the token)."""
    with _token(port) as tok:
        tok.wipe(_pin_for(tok, pin, unknown_asks=True))
    click.echo("wiped")


@token.command("flash")
@port_opt
@click.option("--firmware", type=EXISTING_FILE, required=True)
@click.option(
    "--chip", type=click.Choice(sorted(dep.FLASH_OFFSET)), default="esp32", show_default=True
)
@click.option("--baud", type=click.IntRange(min=1), default=460800, show_default=True)
@click.option("--no-erase", is_flag=True)
@click.option("--dry-run", is_flag=True, help="Print the esptool commands only.")
def flash_cmd(
    port: str, firmware: Path, chip: str, baud: int, no_erase: bool, dry_run: bool
) -> None:
    """Write a MicroPython image (supplied by you) to the board with esptool."""
    try:
        cmds = dep.flash_commands(port, firmware, chip, baud, not no_erase)
        if dry_run:
            for c in cmds:
                click.echo(shlex.join(c))
            return
        dep.run(cmds, echo=click.echo)
    except dep.DeployError as e:
        _fail(str(e))


@token.command("deploy")
@port_opt
@click.option("--board", type=click.Choice(sorted(dep.CHIP_OF_BOARD)), required=True)
@click.option("--romfs", is_flag=True, help="Modules into the ROMFS partition (run in place).")
@click.option("--dry-run", is_flag=True, help="Build the bundle, print the mpremote commands only.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path))
def deploy_cmd(port: str, board: str, romfs: bool, dry_run: bool, out_dir: Path | None) -> None:
    """Compile the firmware with mpy-cross for BOARD and copy it to the board with mpremote."""
    try:
        bundle = dep.bundle_for(board, out_dir)
        cmds = dep.deploy_commands(port, bundle, romfs)
        click.echo(f"bundle: {bundle} ({sum(1 for _ in bundle.rglob('*.mpy'))} modules)")
        if dry_run:
            for c in cmds:
                click.echo(f"(cd {shlex.quote(str(bundle))} && {shlex.join(c)})")  # pasteable
            return
        dep.run(cmds, cwd=bundle, echo=click.echo)
    except dep.DeployError as e:
        _fail(str(e))
