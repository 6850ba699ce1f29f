"""`hubi audit ...`: check a bank database link by link, locate and name lost records, restore
them from a hot backup.

    hubi audit verify  --db URL [--home HOME | --trust DIR] [--chain-only] [--book B] [--json]
    hubi audit locate  --db URL --book B [--home HOME] [--json]
    hubi audit recover --db URL --book B --payees FILE --purposes FILE [--home HOME] [--json]
    hubi audit restore --db URL --backup URL [--home HOME | --trust DIR] [--json]

Keys: ``--home`` gives the trust bundle (HOME/trust) and the bank's private key (balances are
opened and added up); ``--trust`` alone checks every signature but not balances; neither: the
bank key stored in the database is used (and reported as such). Exit status: 0 clean, 1 findings
(or nothing recovered/restored), 2 the command could not run.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from hubi.commands.params import EXISTING_FILE, MAX_AMOUNT, check_url, db_option, home_option
from hubi.output import console, counted, err_console, print_json, printable, styled

__all__ = ["audit"]

NAME_SHOWN = 80  # characters of a book, bank or account name read from a database or a file
NAME_HASH = 8  # hex digits of the hash that tells a cut name from another alike in its head
DETAIL_SHOWN = 1000  # characters of a finding's or a refusal's detail
MAX_LINES = 1000  # finding lines a text report prints (runs of alike findings are one line)


def _shown(value: object, limit: int | None = None) -> str:
    """Text read from a database, a backup or a candidates file, for a text line: a damaged or
    hostile cell's control and right-to-left marks are shown escaped (a finding line must not lie
    about which book it names), '[...]' is not markup. A name (no `limit`) too long to show whole
    keeps its head and a short hash of the whole: two long names alike in their head were cut
    to the same text, and a finding could not say which of them it was about."""
    if limit is not None:
        return escape(printable(value, limit))
    return escape(_cut(str(value)))


def _cut(text: str) -> str:
    """A name as a text line shows it (before markup escaping): whole, or cut with its hash."""
    whole = printable(text, len(text) * 6)  # every character escaped takes at most 6
    if len(whole) <= NAME_SHOWN:
        return whole
    tag = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:NAME_HASH]
    return f"{whole[: NAME_SHOWN - NAME_HASH - 2]}…#{tag}"


_CUT_FORM = re.compile(rf"…#[0-9a-f]{{{NAME_HASH}}}")


def _book_arg(store: Any, book: str) -> str:
    """`--book` as given, or the one whole name in the database that a text line printed as
    `book` (pasted back from an audit's output): cut with its hash, or with its control
    characters escaped. PrintedName when a cut form stands for no book, or when the printed
    form stands for several."""
    cut = len(book) == NAME_SHOWN and _CUT_FORM.fullmatch(book, NAME_SHOWN - NAME_HASH - 2)
    if not cut and "\\" not in book:  # not a printed form: taken as given
        return book
    tx = store.reader()
    for table in ("books", "records"):
        if tx.one(f"SELECT 1 FROM {table} WHERE book = ? LIMIT 1", (book,)) is not None:
            return book  # a book that is really named so
    # a cut name was longer than the head shown (escapes only lengthen a name)
    shortest = (NAME_SHOWN - NAME_HASH - 2) // 6 if cut else 0
    sql = (
        "SELECT book FROM books WHERE length(book) > ?"
        " UNION SELECT DISTINCT book FROM records WHERE length(book) > ?"
    )
    names = {b for (b,) in tx.all(sql, (shortest, shortest)) if isinstance(b, str)}
    hits = sorted(b for b in names if _cut(b) == book)
    if len(hits) == 1:
        return hits[0]
    if not hits and not cut:
        return book  # a name with a backslash in it: the command says it has no such book
    why = f"{counted(len(hits), 'book') if hits else 'no book'} in the database"
    raise PrintedName(
        f"--book {printable(book, NAME_SHOWN)} is a name {'cut' if cut else 'escaped'} for "
        f"printing, and {why} is printed so (--json names every book whole)"
    )


class PrintedName(ValueError):
    """A `--book` given as printed that stands for no stored name, or for several (exit 2, and
    JSON with --json, as any other failure of the command)."""


def _fail(as_json: bool, exc: BaseException) -> None:
    if as_json:
        print_json({"error": type(exc).__name__, "message": str(exc)})
    else:
        err_console.print(styled("red", f"{type(exc).__name__}: {printable(exc, DETAIL_SHOWN)}"))
    sys.exit(2)


@contextlib.contextmanager
def _opened(db: str, home: Path | None, trust_dir: Path | None) -> Iterator[tuple[Any, Any, Any]]:
    """(store, trust or None, BookKeys or None) for an audit of `db`. The store is closed on the
    way out, whatever happened: a refused trust bundle or `--book` left it open."""
    from hubi.bank.store import open_store

    store = open_store(db, create=False, migrate=False)
    try:
        yield (store, *_keys(store, db, home, trust_dir))
    finally:
        store.close()


def _keys(store: Any, db: str, home: Path | None, trust_dir: Path | None) -> tuple[Any, Any]:
    """(trust or None, BookKeys or None) for an audit of `store` (opened from `db`)."""
    from hubi import kmc as kmc_mod
    from hubi.bank import records as rec
    from hubi.bank.audit import bank_of

    trust = keys = None
    if trust_dir is not None:
        trust = kmc_mod.load_trust(trust_dir)
    if home is not None:
        bank = bank_of(store.reader())  # first: a damaged id is named before any file is read
        trust = trust or kmc_mod.load_trust(Path(home) / "trust")
        if not bank:
            raise click.ClickException(f"{db} is not a bank database (no bank id in it)")
        ident = kmc_mod.load_bank_identity(home, bank)
        keys = rec.BookKeys(bank, ident.private)
    return trust, keys


def _db_option(f: Any) -> Any:
    f = click.option("--json", "as_json", is_flag=True, help="Print JSON.")(f)
    f = click.option(
        "--trust",
        "trust_dir",
        type=click.Path(file_okay=False, exists=True, path_type=Path),
        help="Trust bundle (consortium.json + matrices/): check notes and the bank key.",
    )(f)
    f = home_option("hubi home: trust bundle plus the bank's private key (balances).")(f)
    f = db_option("Bank database URL (sqlite:///... or postgresql://...).", required=True)(f)
    return f


@click.group()
def audit() -> None:
    """Audit bank books: verify every link, locate, recover and restore lost records."""


@audit.command("verify")
@_db_option
@click.option(
    "--chain-only",
    is_flag=True,
    help="Numbering, hash chain, XOR chain and heads only (fast; no signatures).",
)
@click.option(
    "--book",
    "books",
    multiple=True,
    help="Only these books (repeatable); default all plus the register.",
)
def verify_cmd(
    db: str,
    home: Path | None,
    trust_dir: Path | None,
    as_json: bool,
    chain_only: bool,
    books: tuple[str, ...],
) -> None:
    """Check every record of every book; exit 0 only when nothing is wrong."""
    from rich.progress import Progress, TextColumn

    from hubi.bank import audit as audit_mod

    try:
        with _opened(db, home, trust_dir) as (store, trust, keys):
            t0 = time.perf_counter()
            with Progress(
                TextColumn("{task.description}"),
                console=err_console,
                disable=as_json,
                transient=True,
            ) as prog:
                task = prog.add_task("auditing")

                def progress(n: int) -> None:
                    prog.update(task, description=f"auditing: {counted(n, 'record')}")

                report = audit_mod.audit(
                    store,
                    trust=trust,
                    keys=keys,
                    level="chain" if chain_only else "full",
                    books=[_book_arg(store, b) for b in books] or None,
                    progress=progress,
                )
    except click.ClickException:
        raise
    except Exception as exc:  # noqa: BLE001 - reported with its type and message
        _fail(as_json, exc)
    doc = report.as_dict()
    doc["seconds"] = round(time.perf_counter() - t0, 3)
    doc["not_checked"] = _not_checked(doc)
    if as_json:
        print_json(doc)
    else:
        _print_report(doc)
    sys.exit(0 if report.ok else 1)


def _not_checked(doc: dict[str, Any]) -> list[str]:
    """What this audit did not check (the keys or the level it ran with left it out)."""
    checks = doc["checks"]
    if doc["level"] != "full":
        return ["signatures", "notes", "balances"]
    out = ["signatures"] if "signatures" in checks else []  # no bank key anywhere
    if checks.get("notes") != "verified":
        out.append("notes")
    if checks.get("balances") != "checked":
        out.append("balances")
    return out


def _clean_line(doc: dict[str, Any]) -> str:
    """The closing line of a clean audit: it says what was not checked, so "clean" is never
    read as more than it is."""
    missing = doc["not_checked"]
    if not missing:
        return "clean: every link checks out"
    if doc["level"] != "full":
        how = "--chain-only"
    elif missing == ["balances"]:
        how = "give --home"
    else:
        how = "give --home or --trust"
    what = missing[-1] if len(missing) == 1 else f"{', '.join(missing[:-1])} and {missing[-1]}"
    return f"clean: every link checks out ({what} not checked: {how})"


def _print_report(doc: dict[str, Any]) -> None:
    checks = doc["checks"]
    console.print(
        f"bank {_shown(doc['bank'])}: {counted(doc['books'], 'book')}, "
        f"{counted(doc['records'], 'record')}, level {doc['level']} "
        f"({doc['seconds']} s); bank key from {_shown(checks.get('bank_key', 'nowhere'), DETAIL_SHOWN)}; notes {checks.get('notes')}; "
        f"balances {checks.get('balances')}",
        highlight=False,
    )
    if doc["ok"]:
        console.print(f"[green]{_clean_line(doc)}[/green]", highlight=False)
        return
    # runs of consecutive records with the same kind print as one line
    runs: list[list[dict[str, Any]]] = []
    for f in doc["findings"]:
        last = runs[-1][-1] if runs else None
        if (
            last
            and last["book"] == f["book"]
            and last["kind"] == f["kind"]
            and last["record"] + 1 == f["record"]
        ):
            runs[-1].append(f)
        else:
            runs.append([f])
    for run in runs[:MAX_LINES]:
        a, b = run[0], run[-1]
        where = (
            f"#{a['record']}" if len(run) == 1 else f"#{a['record']}..#{b['record']} ({len(run)})"
        )
        console.print(
            f"[red]{a['kind']:<19}[/red] {_shown(a['book'])} {where}: "
            f"{_shown(a['detail'], DETAIL_SHOWN)}",
            highlight=False,
        )
    omitted = doc.get("findings_omitted", 0)
    if len(runs) > MAX_LINES:  # a database damaged in every row: the summary counts them all
        rest = sum(len(r) for r in runs[MAX_LINES:])
        console.print(
            f"[red]… {rest:,} more finding(s) in {len(runs) - MAX_LINES:,} more lines not "
            f"shown[/red] (--json lists {'those kept' if omitted else 'them'})",
            highlight=False,
        )
    if omitted:
        kept = _shown(checks.get("findings_kept", ""), DETAIL_SHOWN)
        console.print(f"[red]{omitted:,} more finding(s) not listed[/red]: {kept}", highlight=False)
    console.print(
        f"[red]{sum(doc['summary'].values()):,} finding(s)[/red]: "
        + ", ".join(f"{v:,} {k}" for k, v in doc["summary"].items()),
        highlight=False,
    )


@audit.command("locate")
@_db_option
@click.option("--book", required=True, help="Book (account id).")
@click.option(
    "--record", "number", type=int, help="Record number (default: the book's one lost record)."
)
def locate_cmd(
    db: str, home: Path | None, trust_dir: Path | None, as_json: bool, book: str, number: int | None
) -> None:
    """What the chains say about a lost record: its linear sum and (with --home) its amount."""
    from hubi.bank import recover as rec_mod

    try:
        with _opened(db, home, trust_dir) as (store, _trust, keys):
            lost = rec_mod.locate(store, _book_arg(store, book), number, keys)
    except click.ClickException:
        raise
    except Exception as exc:  # noqa: BLE001
        _fail(as_json, exc)
    doc = {
        "book": lost.book,
        "record": lost.n,
        "lsum": lost.lsum.hex(),
        "delta": lost.delta,
        "kind": None if lost.delta is None else ("debit" if lost.delta < 0 else "credit"),
    }
    if as_json:
        print_json(doc)
    else:
        console.print(
            f"{_shown(book)} #{lost.n}: lsum {doc['lsum']}"
            + (
                f", {doc['kind']} of {abs(lost.delta)}"
                if lost.delta is not None
                else " (amount: pass --home)"
            ),
            highlight=False,
        )


MAX_SERIALS = 1_000_000  # serials one recovery tries (each is a row of the search's table)


def _serial_range(text: str | None) -> range | None:
    if not text:
        return None
    try:
        a, _, b = text.partition("-")
        lo, hi = int(a), int(b or a)
    except ValueError:
        raise click.BadParameter(
            "serials must look like A-B (or one number)", param_hint="--serials"
        ) from None
    if not 0 <= lo <= hi < 1 << 64:
        raise click.BadParameter("serials must be 0 <= A <= B < 2^64", param_hint="--serials")
    if hi - lo >= MAX_SERIALS:
        raise click.BadParameter(
            f"a range of {hi - lo + 1:,} serials: at most {MAX_SERIALS:,} are tried at once",
            param_hint="--serials",
        )
    return range(lo, hi + 1)


def _candidates(flag: str, dest: str, help: str) -> Callable[[Any], Any]:
    """A file of candidates for `recover` to try, one a line (required)."""
    return click.option(flag, dest, required=True, type=EXISTING_FILE, help=help)


@audit.command("recover")
@_db_option
@click.option("--book", required=True, help="Book (account id) that lost a record.")
@_candidates(
    "--payees",
    "payees_file",
    "Candidate counterparties, one account id a line (payee of a debit, payer of a credit).",
)
@_candidates(
    "--purposes", "purposes_file", "Candidate purposes, one a line (an empty line: no purpose)."
)
@click.option(
    "--record", "number", type=int, help="Record number (default: the book's one lost record)."
)
@click.option(
    "--serials",
    help="Serial range A-B, at most 10^6 serials (needed for a credit; a debit's is derived).",
)
@click.option(
    "--amount",
    type=click.IntRange(1, MAX_AMOUNT),
    help="The amount, when the bank key is not at hand.",
)
@click.option(
    "--kind",
    type=click.Choice(["debit", "credit"]),
    help="Debit or credit, when the bank key is not at hand.",
)
def recover_cmd(
    db: str,
    home: Path | None,
    trust_dir: Path | None,
    as_json: bool,
    book: str,
    payees_file: Path,
    purposes_file: Path,
    number: int | None,
    serials: str | None,
    amount: int | None,
    kind: str | None,
) -> None:
    """Name the fields of a lost record by meet-in-the-middle on its linear sum."""
    from hubi.bank import recover as rec_mod

    try:
        with _opened(db, home, trust_dir) as (store, _trust, keys):
            hits = rec_mod.recover(
                store,
                _book_arg(store, book),
                rec_mod.read_payees(payees_file),
                rec_mod.read_purposes(purposes_file),
                n=number,
                keys=keys,
                amount=amount,
                kind=kind,
                serials=_serial_range(serials),
            )
    except click.ClickException:
        raise
    except Exception as exc:  # noqa: BLE001
        _fail(as_json, exc)
    docs = [h.as_dict() for h in hits]
    if as_json:
        print_json({"found": len(docs), "candidates": docs})
    elif not docs:
        console.print("[red]no combination of the candidates fits the record's linear sum[/red]")
    else:
        for d in docs:
            console.print(
                f"{_shown(d['book'])} #{d['record']}: {d['kind']} {_shown(d['payer'])} -> "
                f"{_shown(d['payee'])} amount {d['amount']} "
                f"serial {d['serial']} purpose {escape(repr(d['purpose']))} (note {d['note_id'][:16]}…"
                f"{', in the note index' if d['note_in_db'] else ''}; {d['seconds']} s)",
                highlight=False,
            )
    sys.exit(0 if len(docs) == 1 else 1)


def _backup_source(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """A node's URL is checked as a URL, its scheme in lower case (what the restore looks for:
    'HTTP://node' was taken for a database URL); anything else is a database URL (the store
    checks it)."""
    if not value.strip().lower().startswith(("http://", "https://")):
        return value
    scheme, sep, rest = check_url(value, "'--backup'").partition("://")
    return scheme.lower() + sep + rest


@audit.command("restore")
@_db_option
@click.option(
    "--backup",
    required=True,
    callback=_backup_source,
    help="Hot backup: a database URL (replica or standby) or http(s)://node.",
)
def restore_cmd(
    db: str, home: Path | None, trust_dir: Path | None, as_json: bool, backup: str
) -> None:
    """Fetch exactly the lost records, with their signatures, from a hot backup and put them back."""
    from hubi import kmc as kmc_mod
    from hubi.bank import restore as restore_mod
    from hubi.bank.audit import bank_of

    try:
        with _opened(db, home, trust_dir) as (store, trust, keys):
            signer = None
            bank = bank_of(store.reader())
            if backup.startswith(("http://", "https://")) and home is not None:
                from hubi.bank.auth import Signer

                signer = Signer(bank, kmc_mod.load_bank_identity(home, bank).private)
            source = restore_mod.open_source(backup, signer=signer, bank=bank)
            try:
                result = restore_mod.restore(store, source, trust=trust, keys=keys)
            finally:
                close = getattr(source, "close", None)
                if close:
                    close()
    except click.ClickException:
        raise
    except Exception as exc:  # noqa: BLE001
        _fail(as_json, exc)
    doc = result.as_dict()
    if as_json:
        print_json(doc)
    else:
        console.print(
            f"lost {len(result.wanted)}, restored {len(result.restored)}, not in the backup "
            f"{len(result.unavailable)}, refused {len(result.rejected) + len(result.malformed)}",
            highlight=False,
        )
        for b, n, why in result.rejected[:MAX_LINES]:
            console.print(
                f"[red]refused[/red] {_shown(b)} #{n}: {_shown(why, DETAIL_SHOWN)}", highlight=False
            )
        _more(result.rejected, "refused")
        for why in result.malformed[:MAX_LINES]:
            console.print(f"[red]refused[/red] {_shown(why, DETAIL_SHOWN)}", highlight=False)
        _more(result.malformed, "refused")
        for b, n in result.unavailable[:MAX_LINES]:
            console.print(f"[yellow]not in the backup[/yellow] {_shown(b)} #{n}", highlight=False)
        _more(result.unavailable, "not in the backup")
        if not result.ok:
            console.print("[red]the audit still has findings[/red]")
        elif result.wanted:
            console.print("[green]audit clean again[/green]")
        else:
            console.print("[green]nothing was lost: the audit is clean[/green]")
    sys.exit(0 if result.ok else 1)


def _more(items: list, what: str) -> None:
    """The line closing a list cut at MAX_LINES (a restore may name 10^5 records)."""
    if len(items) > MAX_LINES:
        console.print(
            f"… {len(items) - MAX_LINES:,} more {what} not shown (--json lists them)",
            highlight=False,
        )
