"""`hubi bank ...`: a bank's database straight from the command line (no server needed).

    hubi bank init          --home HOME --bank BKA [--db URL]     database + treasury account
    hubi bank open-account  ACCOUNT --home HOME [--out DIR]        key + sealed template
    hubi bank fund          ACCOUNT AMOUNT --home HOME             treasury pays the account
    hubi bank book          FILE... --home HOME [--json]           book note files
    hubi bank show          ACCOUNT --home HOME                    head, balance, last records

Everything follows the home layout of ``hubi.kmc`` (HOME/trust, HOME/banks/<BANK>/...). The
database defaults to ``sqlite:///HOME/banks/<BANK>/bank.db``; ``--db`` takes any store URL
(``postgresql://...``). ``HUBI_HOME``, ``HUBI_BANK`` and ``HUBI_DB`` set the defaults. Keys are
written to 0600 files and never printed. ``hubi bank serve`` (the HTTP node) is added to this
group by ``hubi.bank.server``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from hubi.commands.params import MAX_AMOUNT, db_option, env_option, home_option, typed_text
from hubi.output import console, counted, err_console, print_json, styled

__all__ = ["bank", "resolve_bank", "default_db_url"]

DB_NAME = "bank.db"


def resolve_bank(home: Path, bank: str | None) -> str:
    """The bank to act for: --bank (a bank id whose keys are in HOME), or the only bank under
    HOME/banks."""
    from hubi_core import ids
    from hubi_core.errors import BadValue

    banks_dir = Path(home) / "banks"
    found = sorted(p.name for p in banks_dir.iterdir() if p.is_dir()) if banks_dir.is_dir() else []
    if bank:
        try:  # the id names a folder: '..' or 'a/b' would reach outside HOME/banks
            ids.check_bank_id(bank)
        except BadValue as exc:
            raise click.BadParameter(str(exc), param_hint="--bank") from None
        if bank not in found:
            held = f"it holds {', '.join(found)}" if found else "it holds none"
            raise click.UsageError(
                f"{home} holds no bank {bank} ({held}): a bank's keys are made by"
                " `hubi consortium init` or `hubi consortium join`"
            )
        return bank
    if len(found) == 1:
        return found[0]
    if not found:
        raise click.UsageError(
            f"no bank under {banks_dir}: make the home first (`hubi consortium init --home"
            f" {home} --banks BKA,BKB`, or `hubi demo`)"
        )
    raise click.UsageError(f"{home} holds banks {', '.join(found)}: choose one with --bank")


def default_db_url(home: Path, bank: str) -> str:
    from hubi import kmc as kmc_mod
    from hubi.bank.store import sqlite_url

    return sqlite_url((kmc_mod.bank_dir(home, bank) / DB_NAME).resolve())


def _fail(as_json: bool, exc: BaseException, code: int = 2) -> None:
    if isinstance(exc, click.UsageError):  # a usage error (--bank) stays click's own
        raise exc
    if isinstance(exc, click.ClickException):  # a refusal: its own message and exit status
        if not as_json:
            raise exc
        # stdout is a document with --json, as for every other failure
        print_json({"error": type(exc).__name__, "message": exc.format_message()})
        sys.exit(exc.exit_code)
    if as_json:
        print_json({"error": type(exc).__name__, "message": str(exc)})
    else:
        err_console.print(styled("red", f"{type(exc).__name__}: {exc}"))
    sys.exit(code)


def _engine(
    home: Path, bank: str | None, db: str | None, *, create: bool = False, **kw: Any
) -> Any:
    """The bank's engine; only `hubi bank init` (`create`) makes a database that is not there."""
    from hubi.bank.engine import BankEngine
    from hubi.bank.store import open_store

    bank = resolve_bank(home, bank)
    store = open_store(db or default_db_url(home, bank), create=create)
    return BankEngine.open(store, home=home, bank=bank, **kw)


def _home_option(f: Any) -> Any:
    f = db_option("Store URL (default sqlite:///HOME/banks/<BANK>/bank.db).")(f)
    bank_help = "Bank id (default: the only bank in HOME)."
    f = env_option("--bank", envvar="HUBI_BANK", help=bank_help)(f)
    f = home_option("hubi home (HOME/trust, HOME/banks/<BANK>/...).", required=True)(f)
    return f


@click.group()
def bank() -> None:
    """A bank's books: init, accounts, funding, booking notes (and `serve` for HTTP)."""


@bank.command("init")
@_home_option
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=None,
    help="Register entries per signed checkpoint (default 1000).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def init_cmd(
    home: Path, bank: str | None, db: str | None, checkpoint_every: int | None, as_json: bool
) -> None:
    """Create (or migrate) the bank's database and open its treasury account."""
    from hubi import kmc as kmc_mod

    try:
        bank = resolve_bank(home, bank)
        url = db or default_db_url(home, bank)
        secret = kmc_mod.bank_dir(home, bank) / kmc_mod.TREASURY_SECRET
        _check_init_target(url)
        eng = _engine(home, bank, url, create=True, checkpoint_every=checkpoint_every)
        created = False
        with eng, _keys_lock(secret.parent, "the treasury's key"):
            if eng.account(eng.treasury) is None:
                tpl_file = secret.with_name(kmc_mod.TREASURY_TEMPLATE)
                try:
                    _check_files(secret, tpl_file)
                    if kmc_mod.kept(secret, tpl_file):
                        # read here: kmc's own reading names neither file nor what is wrong
                        _open_kept(eng, eng.treasury, secret, tpl_file, treasury=True)
                    else:
                        created = kmc_mod.open_treasury(eng, home, bank)
                except kmc_mod.KeyKept as exc:
                    raise click.ClickException(
                        f"{exc}: {_display(url)} was left as it is"
                    ) from None
            elif not secret.exists():
                raise click.ClickException(
                    f"{eng.treasury} is open in {url} but {secret} is missing: restore it from backup"
                )
            # a database migrated from version 1: its older records get their kept subtrees
            kept, unkept = eng.keep_subtrees()
            info = {
                "bank": bank,
                "database": _display(url),
                "schema_version": eng.store.schema_version(),
                "treasury": eng.treasury,
                "treasury_created": created,
                "checkpoint_every": eng.checkpoint_every,
                "kept_subtrees_added": kept,
                "kept_subtrees_not_added": unkept,
            }
    except Exception as exc:  # noqa: BLE001 - any failure is reported with its type and message
        _fail(as_json, exc)
    if as_json:
        print_json(info)
    else:
        console.print(
            f"bank [bold]{bank}[/bold]: database {escape(info['database'])} (schema {info['schema_version']}), "
            f"treasury {info['treasury']}{' opened' if created else ''}, "
            f"checkpoint every {counted(info['checkpoint_every'], 'record')}"
        )
        if info["kept_subtrees_added"]:
            console.print(
                f"kept {counted(info['kept_subtrees_added'], 'subtree')} of the register for proofs"
            )
        if info["kept_subtrees_not_added"]:
            err_console.print(
                styled("yellow", f"no subtrees kept: {info['kept_subtrees_not_added']}")
            )


def _check_init_target(url: str) -> None:
    """Refuse, before anything is made, a database that keeps nothing (SQLite ``:memory:``)."""
    from hubi.bank.store import parse_url

    loc = parse_url(url)
    # refusals of the URL given, so a usage error (exit 2) like a URL that does not parse
    if loc.dialect == "sqlite" and Path(loc.target).name == ":memory:":
        raise click.BadParameter(
            f"database {_display(url)!r} is an in-memory SQLite database: `hubi bank init`"
            " needs a database file that keeps the books (give --db sqlite:///PATH)",
            param_hint="--db",
        )
    if loc.dialect == "postgresql" and not _names_database(loc.target):
        # libpq would take the user's own database (often the server's `postgres`)
        raise click.BadParameter(
            f"database URL {_display(url)!r} names no database: the books would go into the"
            " user's default database; give it, as in postgresql://USER@HOST/DBNAME",
            param_hint="--db",
        )


def _names_database(target: str) -> bool:
    from psycopg.conninfo import conninfo_to_dict

    try:
        given = conninfo_to_dict(target)
    except Exception:  # noqa: BLE001 - a malformed URL: connecting says what is wrong with it
        return True
    return bool(given.get("dbname") or os.environ.get("PGDATABASE"))


def _check_key_folder(folder: Path, key: Path) -> None:
    """Before an account is opened: its key file must not exist yet (a key is never
    overwritten), and `folder` must be a folder the key can be written to."""
    import tempfile

    if key.exists() or key.is_symlink():
        raise click.ClickException(
            f"{key} already exists: it holds the key of an account opened before (never"
            " overwritten); choose another --out folder or move that file away (keep it)"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".hubi-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise click.ClickException(
            f"cannot write the account's key to {folder}: {why}; nothing was opened"
        ) from None


@contextlib.contextmanager
def _keys_lock(folder: Path, what: str) -> Iterator[None]:
    """Held while a key file is looked for, written and its account opened: two runs at once
    each found no key, and the second's files replaced the first's, whose account the database
    kept (its key lost for good). The second run now finds the first's files."""
    from hubi.locks import folder_lock

    with contextlib.ExitStack() as held:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            held.enter_context(folder_lock(folder))
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise click.ClickException(
                f"cannot write {what} to {folder}: {why}; nothing was opened"
            ) from None
        yield


def _display(url: str) -> str:
    from hubi.bank.store import display_url

    return display_url(url)


class KeptFileError(ValueError):
    """A key or template kept by an earlier open-account cannot be used as it is."""


def _load_kmc(home: Path, bank: str) -> Any:
    """The bank's KMC; a damaged matrix file is named (its reader's errors name no file)."""
    from hubi import kmc as kmc_mod

    path = kmc_mod.bank_dir(home, bank) / "kmc.secret"
    try:
        return kmc_mod.load_kmc(home, bank)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, IndexError) as exc:
        why = getattr(exc, "strerror", None) or f"{type(exc).__name__}: {exc}"
        raise click.ClickException(
            f"{path} is not a usable KMC private matrix ({why}): restore it from a backup;"
            " nothing was opened"
        ) from None


def _check_files(*paths: Path) -> None:
    """KeptFileError for a kept key or template that is there but is no file (a folder, a
    dangling link): not to be taken for "no key kept" nor for "a key with no template"."""
    for p in paths:
        if (p.exists() or p.is_symlink()) and not p.is_file():
            raise KeptFileError(
                f"{p} is there but is not a file (a folder or a dangling link): put the kept"
                " file back from a backup, or move it away (keep it) and run again"
            )


def _open_kept(
    eng: Any, account: str, key_file: Path, tpl_file: Path, treasury: bool = False
) -> Any:
    """Open `account` (or the treasury) with its kept key and template; KeptFileError naming
    the file at fault and what to do (the engine's and codec's own errors name neither file)."""
    from hubi import kmc as kmc_mod
    from hubi.bank.engine import BankEngineError
    from hubi_core import codec, suite
    from hubi_core.errors import CodecError

    fix = (
        f"restore both files from a backup; if {account} is open in no database of this bank,"
        f" move {key_file.name} and {tpl_file.name} away (keep them) and run again for a new key"
    )
    raw: dict[Path, bytes] = {}
    for f in (key_file, tpl_file):
        try:
            raw[f] = f.read_bytes()
        except OSError as exc:  # a read error's own message has no file name
            why = exc.strerror or str(exc)
            raise KeptFileError(f"cannot read {f}: {why}: make it readable, or {fix}") from None
    raw_key = raw[key_file]
    try:
        tpl = codec.decode(raw[tpl_file], codec.TEMPLATE)
    except CodecError as exc:
        why = f"{type(exc).__name__}: {exc}"
        raise KeptFileError(f"{tpl_file} is not a whole template ({why}): {fix}") from None
    if len(raw_key) != 32:
        raise KeptFileError(f"{key_file} holds {len(raw_key)} bytes, not a 32-byte key: {fix}")
    key = kmc_mod.read_key(key_file)
    try:
        suite.check_private(key)
    except ValueError:
        raise KeptFileError(f"{key_file} holds no usable key (out of range): {fix}") from None
    try:
        if treasury:
            return eng.open_kept(key, tpl, treasury=True)
        return eng.open_kept(key, tpl, account=account).template
    except BankEngineError as exc:  # the key is not the template's, or the template another's
        raise KeptFileError(f"{exc} ({key_file}, {tpl_file}): {fix}") from None


def _currency_code(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """A template's currency, refused at the option (the template's own check came after the
    --out folder was made, and exited 2 as a failure to run)."""
    if len(value) != 3 or not all("A" <= c <= "Z" for c in value):
        raise click.BadParameter(f"{value!r} is not a currency code: 3 letters A-Z, as CNY")
    return value


@bank.command("open-account")
@click.argument("account")
@_home_option
@click.option(
    "--currency",
    default="CNY",
    show_default=True,
    callback=_currency_code,
    help="ISO 4217 code, 3 letters A-Z.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write ACCOUNT.secret (key, 0600) and ACCOUNT.template here (default HOME/accounts).",
)
@click.option(
    "--fund",
    "fund_amount",
    type=click.IntRange(1, MAX_AMOUNT),
    help="Then have the treasury pay this much.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def open_account_cmd(
    account: str,
    home: Path,
    bank: str | None,
    db: str | None,
    currency: str,
    out: Path | None,
    fund_amount: int | None,
    as_json: bool,
) -> None:
    """Issue ACCOUNT's key from the bank's KMC, seal its template and open its book."""
    from hubi import kmc as kmc_mod

    try:
        bank = resolve_bank(home, bank)
        from hubi_core import ids
        from hubi_core.errors import BadValue

        try:
            owner = ids.bank_of(ids.check_account_id(account))  # before its name is a file's
        except BadValue as exc:
            raise click.BadParameter(str(exc), param_hint="ACCOUNT") from None
        if owner != bank:  # refused before its --out folder is made, as `fund` refuses it
            raise click.UsageError(
                f"{account} is an account of bank {owner}: bank {bank} opens its own accounts"
                f" only (open it with --bank {owner})"
            )
        folder = out or Path(home) / "accounts"
        key_file, tpl_file = folder / f"{account}.secret", folder / f"{account}.template"
        with _engine(home, bank, db) as eng, _keys_lock(folder, "the account's key"):
            if eng.account(account) is not None:  # first: "choose another --out" led nowhere
                raise click.ClickException(
                    f"account {account} is already open at {bank}: a second key is never"
                    " issued (its key was kept in the folder it was opened with, by default"
                    " HOME/accounts)"
                )
            if kmc_mod.kept(key_file, tpl_file):
                # kept by an open-account killed before its commit (or for another database
                # of this bank): opened with that key, never a new one over it
                tpl = _open_kept(eng, account, key_file, tpl_file)
            else:
                _check_key_folder(folder, key_file)
                if fund_amount:  # before the account is opened, not after
                    eng.treasury_key()
                _, tpl = eng.issue_account(
                    _load_kmc(home, bank),
                    account,
                    currency,
                    keep=lambda priv, tpl: kmc_mod.keep_key(key_file, tpl_file, priv, tpl),
                )
            from hubi_core import codec

            raw = tpl if isinstance(tpl, bytes) else codec.encode(tpl)
            funded = eng.fund(account, fund_amount).as_dict() if fund_amount else None
            info = {
                "account": account,
                "bank": bank,
                "template": raw.hex(),
                "template_file": str(folder / f"{account}.template"),
                "key_file": str(folder / f"{account}.secret"),
                "funding": funded,
            }
    except Exception as exc:  # noqa: BLE001
        _fail(as_json, exc)
    if as_json:
        print_json(info)
    else:
        console.print(
            f"opened [bold]{account}[/bold] at {bank}; template {escape(info['template_file'])},"
            f" key {escape(info['key_file'])} (0600)"
        )
        if funded:
            console.print(f"funded with {fund_amount}: {funded['status']}")


def _purpose_text(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """A note's purpose as the note will take it (UTF-8, at most 64 bytes, no control
    characters), refused at the option: the note's own check named only 'purpose'."""
    from hubi_core import codec
    from hubi_core.errors import HubiError
    from hubi_core.wire import utf8_text

    text = typed_text(value)  # "café" under LANG=C came as surrogates: read from its bytes
    if text is None:
        raise click.BadParameter("not UTF-8 text (check the locale)")
    raw = text.encode("utf-8")
    try:
        return utf8_text(raw, "the purpose", codec.MAX_TEXT)
    except HubiError as exc:
        raise click.BadParameter(str(exc)) from None


@bank.command("fund")
@click.argument("account")
@click.argument("amount", type=click.IntRange(1, MAX_AMOUNT))
@_home_option
@click.option("--purpose", default="funding", show_default=True, callback=_purpose_text)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def fund_cmd(
    account: str,
    amount: int,
    home: Path,
    bank: str | None,
    db: str | None,
    purpose: str,
    as_json: bool,
) -> None:
    """The bank's treasury pays AMOUNT (minor units) to ACCOUNT with an ordinary booked note."""
    from hubi_core import ids
    from hubi_core.errors import BadValue

    bank = resolve_bank(home, bank)
    try:
        owner = ids.bank_of(ids.check_account_id(account))
    except BadValue as exc:
        raise click.BadParameter(str(exc), param_hint="ACCOUNT") from None
    if owner != bank:  # the treasury pays its own bank's accounts: no interbank note
        raise click.UsageError(
            f"{account} is an account of bank {owner}: bank {bank}'s treasury funds its own"
            f" accounts only (fund it with --bank {owner})"
        )
    try:
        with _engine(home, bank, db) as eng:
            # checked before fund(): it takes a treasury serial and signs a note first, so a
            # typo used up a serial on a note the engine then rejected
            if account == eng.treasury:
                raise click.ClickException(
                    f"{account} is bank {bank}'s treasury: the treasury cannot fund itself"
                )
            if eng.account(account) is None:
                raise click.ClickException(
                    f"account {account} is not open at {bank} (open it first: hubi bank "
                    f"open-account {account}); nothing was booked"
                )
            out = eng.fund(account, amount, purpose)
            doc = out.as_dict()
    except Exception as exc:  # noqa: BLE001
        _fail(as_json, exc)
    if as_json:
        print_json(doc)
    else:
        console.print(
            f"{doc['status']}: {eng.treasury} -> {account} {amount}"
            + (f" ({escape(doc['reason'])})" if doc["reason"] else "")
        )
    sys.exit(0 if out.ok else 1)


def _note_files(paths: tuple[Path, ...]) -> Iterator[Path]:
    for p in paths:
        if p.is_dir():
            # all but subfolders: a FIFO or device there is named as refused, not passed over
            yield from sorted(q for q in p.iterdir() if not q.is_dir())
        else:
            yield p


@bank.command("book")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@_home_option
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Notes per transaction (group commit).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one outcome per file).")
def book_cmd(
    files: tuple[Path, ...], home: Path, bank: str | None, db: str | None, batch: int, as_json: bool
) -> None:
    """Book note FILES (binary notes, their hex as text, or QR images; folders are read whole)
    into the bank's database, each file one note: the frames of an animated QR code are
    gathered into one note by `hubi merchant scan --image DIR`. Exit status 0 when every note
    is booked (or was already), 1 otherwise."""
    from rich.progress import Progress

    from hubi import objects

    paths = list(_note_files(files))
    if not paths:  # folders with no files in them: nothing booked is not a success
        raise click.UsageError(
            f"no note files in {', '.join(str(f) for f in files)}", click.get_current_context()
        )
    results: list[dict[str, Any]] = []
    try:
        with (
            _engine(home, bank, db) as eng,
            Progress(
                console=err_console, disable=as_json or len(paths) < 2, transient=True
            ) as prog,
        ):
            task = prog.add_task("booking", total=len(paths))
            for i in range(0, len(paths), batch):
                chunk = paths[i : i + batch]
                # None marks a file that could not be read (b"" is an empty file: a bad note)
                datas: list[bytes | None] = []
                unreadable: dict[Path, dict[str, Any]] = {}
                for p in chunk:
                    try:
                        datas.append(objects.read_object_bytes(p))
                    except Exception as exc:  # noqa: BLE001 - an unreadable file is one result
                        datas.append(None)
                        unreadable[p] = {
                            "file": str(p),
                            "status": "rejected",
                            "ok": False,
                            "reason": f"{type(exc).__name__}: {exc}",
                        }
                outs = iter(eng.book_many([d for d in datas if d is not None]))
                for p, d in zip(chunk, datas):  # one result per file, in the files' order
                    if d is None:
                        results.append(unreadable[p])
                    else:
                        results.append({**next(outs).as_dict(), "file": str(p)})
                prog.advance(task, len(chunk))
    except Exception as exc:  # noqa: BLE001
        _fail(as_json, exc)
    ok = all(r.get("ok") for r in results)
    if as_json:
        print_json({"ok": ok, "count": len(results), "outcomes": results})
    else:
        for r in results:
            line = f"{r['file']}: {r['status']}"
            if r.get("debit") or r.get("credit"):
                line += f" ({r.get('payer')} -> {r.get('payee')} {r.get('amount')})"
            if r.get("replay"):
                line += " [already booked]"
            if r.get("reason"):
                line += f" — {r['reason']}"
            console.print(line, highlight=False, markup=False)
        counts: dict[str, int] = {}
        for r in results:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        console.print(", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    sys.exit(0 if ok else 1)


@bank.command("show")
@click.argument("account")
@_home_option
@click.option(
    "--last", type=click.IntRange(min=0), default=5, show_default=True, help="Records to list."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_cmd(
    account: str, home: Path, bank: str | None, db: str | None, last: int, as_json: bool
) -> None:
    """An account: role, flags, balance, signed head and its last records."""
    from hubi_core import ids
    from hubi_core.errors import BadValue

    try:
        ids.check_account_id(account)  # "not open" would send the operator looking for it
    except BadValue as exc:
        raise click.BadParameter(str(exc), param_hint="ACCOUNT") from None
    try:
        with _engine(home, bank, db) as eng:
            info = eng.account(account)
            if info is None:
                raise click.ClickException(f"account {account} is not open at {eng.bank}")
            head = eng.head(account)
            recs = eng.records(account, max(1, head.n - last + 1)) if last else []
            doc = info.as_dict()
            doc.update(
                {
                    "balance": eng.balance(account),
                    "records": head.n,
                    "head": {"n": head.n, "hchain": head.hchain.hex(), "ecode": head.ecode.hex()},
                    "last": [
                        {
                            "n": r.n,
                            "kind": r.record.kind_name,
                            "delta": r.record.delta,
                            "time": r.record.time,
                        }
                        for r in recs
                    ],
                }
            )
    except Exception as exc:  # noqa: BLE001
        _fail(as_json, exc)
    if as_json:
        print_json(doc)
        return
    console.print(
        f"[bold]{account}[/bold] ({doc['role']}) balance {doc['balance']}, {counted(doc['records'], 'record')}"
        + (" [red]FLAGGED: double issuance[/red]" if doc["double_issue"] else "")
    )
    for r in doc["last"]:
        console.print(f"  #{r['n']:<6} {r['kind']:<7} {r['delta']:>+12}  t={r['time']}")


# `hubi bank serve`: the HTTP node (hubi.bank.server; it loads the web stack only when run).
from hubi.bank.server import serve_command  # noqa: E402

bank.add_command(serve_command)
