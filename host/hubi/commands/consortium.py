"""`hubi consortium ...`: the consortium file and a consortium of bank nodes on loopback.

    hubi consortium init   --home H --banks BKA,BKB,BKC [--endpoint BKA=URL] [--etcd BKA=URL]
                           [--orderer etcd|embedded|none] [--name N]
    hubi consortium join   --home H --bank BKE [--endpoint URL] [--etcd URL]
    hubi consortium sign   --home H --bank BKA        (a founder signs a pending epoch)
    hubi consortium show   --home H [--json]          (the consortium file, checked)
    hubi consortium up     --banks N [--accounts K]   (N bank nodes + 3 etcd members, here)
    hubi consortium status [--json]                   (what `up` runs here, with `healthy`;
                                                       exit 0 healthy, 1 not, 2 error)

``init`` creates one KMC and key per founding bank and a consortium file signed by all of them.
``join`` adds a bank at the next epoch (chained to the previous one by its digest); every
founder must sign it: founders whose keys are in the home sign at once, the others later with
``sign``; the new epoch is installed when the last founder has signed. Running nodes pick up a
new epoch when restarted. Keys are written to 0600 files and never printed.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import rich.markup

from hubi.commands.params import CONSORTIUM_NAME, MAX_AMOUNT, check_url
from hubi.output import console, err_console, print_json, styled

__all__ = ["consortium"]


def _pairs(values: tuple[str, ...], what: str, banks: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for v in values:
        bank, sep, url = v.partition("=")
        bank = bank.strip()
        if not sep or not bank or not url:
            raise click.BadParameter(f"{v!r}: expected BANK=URL", param_hint=what)
        if bank not in banks:
            raise click.BadParameter(
                f"{v!r} names {bank}, which is not among the banks {', '.join(banks)}",
                param_hint=what,
            )
        out.setdefault(bank, []).append(check_url(url, what))
    for bank, urls in out.items():
        _once(urls, f"{what} {bank}")
    return out


def _once(values: list[str] | tuple[str, ...], what: str) -> None:
    """Usage error for a bank id or URL given twice: the signed file would list one bank, or
    one node, twice (and clients would ask a node twice thinking they asked two)."""
    twice = sorted({u for u in values if values.count(u) > 1})
    if twice:
        raise click.BadParameter(f"listed twice: {', '.join(twice)}", param_hint=what)


def _fail(as_json: bool, exc: BaseException, code: int = 2) -> None:
    if as_json:
        print_json({"error": type(exc).__name__, "message": str(exc)})
    else:
        err_console.print(styled("red", f"{type(exc).__name__}: {exc}"))
    sys.exit(code)


def _summary(trust: Any) -> dict[str, Any]:
    c = trust.consortium
    return {
        "name": c.name,
        "epoch": c.epoch,
        "founders": c.founders,
        "policy": c.policy,
        "quorum": c.quorum(),
        "orderer": c.orderer,
        "previous": c.previous.hex() if c.previous else None,
        "banks": [
            {
                "id": b,
                "endpoints": c.banks[b].endpoints,
                "etcd": c.banks[b].extra.get("etcd", []),
                "joined": c.banks[b].extra.get("joined"),
            }
            for b in c.bank_ids()
        ],
        "signatures": sorted(c.signatures),
    }


@click.group()
def consortium() -> None:
    """The consortium of banks: its file, and bank nodes with an etcd cluster on loopback."""


# ------------------------------------------------------------------------------ file


@consortium.command("init")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--banks", required=True, help="Founding bank ids, comma-separated (BKA,BKB,...).")
@click.option(
    "--name",
    type=CONSORTIUM_NAME,
    default="hubi",
    show_default=True,
    help="Consortium name (A-Z a-z 0-9 . _ -).",
)
@click.option("--endpoint", "endpoints", multiple=True, metavar="BANK=URL", help="Bank node URL.")
@click.option("--etcd", "etcd", multiple=True, metavar="BANK=URL", help="Bank's etcd member URL.")
@click.option(
    "--orderer",
    type=click.Choice(["etcd", "embedded", "none"]),
    default="embedded",
    show_default=True,
    help="Ordering service named in the file (embedded: one SQLite log under HOME/consortium).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def init_cmd(
    home: Path,
    banks: str,
    name: str,
    endpoints: tuple[str, ...],
    etcd: tuple[str, ...],
    orderer: str,
    as_json: bool,
) -> None:
    """Create the founding banks' keys and a consortium file signed by all of them."""
    from hubi.consortium.supervisor import init_home
    from hubi_core import ids

    try:
        ids_ = [ids.check_bank_id(b.strip()) for b in banks.split(",") if b.strip()]
        if not ids_:  # nothing written: a home without banks could not be retried
            raise click.BadParameter(
                f"{banks!r} names no bank: give bank ids, comma-separated (BKA,BKB,...)",
                param_hint="--banks",
            )
        _once(ids_, "--banks")
        eps = _pairs(endpoints, "--endpoint", ids_)
        etc = _pairs(etcd, "--etcd", ids_)
        if orderer == "etcd" and not etc:
            raise click.BadParameter("orderer etcd needs --etcd BANK=URL", param_hint="--etcd")
        trust = init_home(
            home,
            ids_,
            name=name,
            endpoints=eps,
            etcd=etc,
            orderer=None if orderer == "none" else orderer,
        )
    except (click.ClickException, click.BadParameter):
        raise
    except (OSError, ValueError) as exc:
        _fail(as_json, exc)
        return
    out = _summary(trust)
    out["home"] = str(Path(home).resolve())
    if as_json:
        print_json(out)
    else:
        console.print(
            f"consortium [bold]{name}[/bold] epoch 1: banks {', '.join(ids_)}, signed by all; "
            f"trust bundle in {rich.markup.escape(str(Path(home) / 'trust'))}"
        )


def _install(home: Path, cons: Any, trust: Any, kmc_mod: Any, matrices: dict[str, Any]) -> None:
    """Archive the current epoch and install `cons` (fully signed) as the consortium file.

    `cons` is checked first (every signature, the matrices it pins, the chain to the current
    epoch): one that does not verify leaves the installed consortium file as it was. Each file
    is written atomically (a temporary file in the same folder, then os.replace)."""
    from hubi_core.verify import Trust

    prev = trust.consortium
    cons.check_successor(prev)
    cons.check_signatures(Trust(cons, matrices))
    archive = Path(home) / "trust" / "epochs" / f"{prev.epoch}.json"
    kmc_mod.write_atomic(archive, prev.to_json().encode())
    kmc_mod.save_trust(Path(home) / "trust", cons, matrices)
    (Path(home) / "trust" / f"pending-{cons.epoch}.json").unlink(missing_ok=True)


@contextlib.contextmanager
def _trust_lock(home: Path) -> Iterator[None]:
    """Held by `join` and `sign` from reading the installed and pending epochs until their files
    are written: two at once each read the same epoch and the last write won (a founder's
    signature dropped from the pending file, a bank told it joined left out of the installed
    epoch, a joining bank's keys written twice). The second run now reads the first's files."""
    from hubi.locks import folder_lock

    with contextlib.ExitStack() as held:
        # no trust folder: nothing to guard, and load_trust says what is wrong
        with contextlib.suppress(OSError):
            held.enter_context(folder_lock(Path(home) / "trust"))
        yield


def _pending(home: Path) -> list[Path]:
    return sorted((Path(home) / "trust").glob("pending-*.json"))


def _drop_installed(home: Path, installed: Any) -> None:
    """Remove pending files that are the installed epoch itself: what `sign` killed between
    writing consortium.json and removing the pending file leaves (it held up join and sign)."""
    for path in _pending(home):
        try:
            cons = _read_consortium_file(path)
        except (OSError, ValueError):
            continue  # not this leftover: the commands name it as before
        if cons.signing_bytes() == installed.signing_bytes():
            path.unlink(missing_ok=True)


def _check_present(path: Path, nxt: Any, trust: Any, home: Path) -> None:
    """Every signature already on the pending epoch `nxt` verifies (ValueError naming `path`
    otherwise): a file edited after founders signed it must not gather more signatures. A new
    bank's signature is checked when its matrix is in this home (else at install)."""
    from hubi import kmc as kmc_mod
    from hubi.objects import read_regular
    from hubi_core import cpk, suite

    msg = nxt.signing_bytes()
    for signer in sorted(nxt.signatures):
        if signer not in nxt.banks:
            raise ValueError(f"{path}: signature of {signer}, who is not a member (nothing signed)")
        if signer in trust.consortium.banks:  # founders and kept banks: keys unchanged
            key = trust.bank_key(signer)
        else:
            mpath = Path(home) / "trust" / "matrices" / f"{signer}.pub"
            if not mpath.is_file():
                continue
            raw = read_regular(mpath, kmc_mod.MAX_TRUST_FILE, "a public matrix")
            matrix = cpk.PublicMatrix.from_bytes(raw)
            if matrix.digest() != nxt.banks[signer].matrix:
                raise ValueError(f"{path}: {mpath} is not the matrix {signer} joined with")
            key = matrix.public_key(signer, nxt.banks[signer].key)
        if not suite.verify(key, msg, nxt.signatures[signer]):
            raise ValueError(
                f"{path}: signature of {signer} does not verify: the file changed after"
                " it signed (nothing signed)"
            )


MAX_CONSORTIUM_FILE = 1 << 20  # a consortium file is a few KiB; past this it is not one


def _read_consortium_file(path: Path) -> Any:
    """The consortium file at `path`, parsed: a regular file (a FIFO would block for ever) of at
    most MAX_CONSORTIUM_FILE bytes, UTF-8 JSON; ValueError naming the file otherwise."""
    from hubi import jsonload
    from hubi.objects import read_regular
    from hubi_core.consortium import Consortium
    from hubi_core.errors import HubiError

    raw = read_regular(path, MAX_CONSORTIUM_FILE, "a consortium file")
    try:  # read here first for the guarantees the shared parser (MicroPython's too) lacks
        jsonload.loads(raw, str(path))
    except jsonload.JsonError as exc:
        raise ValueError(f"{exc}, not a consortium file") from None
    try:
        return Consortium.from_json(raw.decode("utf-8"))
    except (ValueError, HubiError) as exc:
        raise ValueError(f"{path}: {exc}") from None


@consortium.command("join")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--bank", required=True, help="Id of the bank that joins.")
@click.option("--endpoint", "endpoints", multiple=True, metavar="URL", help="Its node URL.")
@click.option("--etcd", "etcd", multiple=True, metavar="URL", help="Its etcd member URL.")
@click.option("--json", "as_json", is_flag=True)
def join_cmd(
    home: Path, bank: str, endpoints: tuple[str, ...], etcd: tuple[str, ...], as_json: bool
) -> None:
    """Add a bank at the next epoch; founders whose keys are in HOME sign at once."""
    from hubi import kmc as kmc_mod
    from hubi_core import ids
    from hubi_core.consortium import BankEntry
    from hubi_core.errors import HubiError

    endpoints = tuple(check_url(u, "--endpoint") for u in endpoints)
    etcd = tuple(check_url(u, "--etcd") for u in etcd)
    _once(endpoints, "--endpoint")
    _once(etcd, "--etcd")
    try:
        ids.check_bank_id(bank)
        with _trust_lock(home):
            trust = kmc_mod.load_trust(Path(home) / "trust")
            cons = trust.consortium
            if bank in cons.banks:
                raise ValueError(f"bank {bank} is already in consortium {cons.name}")
            _drop_installed(home, cons)
            pending = _pending(home)
            if pending:  # its signatures would be lost: one epoch at a time
                raise ValueError(
                    f"epoch pending in {pending[-1]}: the founders finish it first (`hubi consortium"
                    f" sign --home {home} --bank FOUNDER`), or drop it by deleting that file, before"
                    " another bank joins"
                )
            kdir = kmc_mod.bank_dir(home, bank)
            if (kdir / "identity.secret").exists():
                kmc = kmc_mod.load_kmc(home, bank)
                ident = kmc_mod.load_bank_identity(home, bank)
            else:
                kmc = kmc_mod.Kmc.create(bank)
                kmc.save(kdir / "kmc.secret")
                priv, sep = kmc.issue(bank)
                ident = kmc_mod.BankIdentity(bank, priv, sep)
                kmc_mod.write_secret(kdir / "identity.secret", priv.to_bytes(32, "big") + sep)
            entry = BankEntry(bank, ident.separating_key, kmc.public.digest(), list(endpoints))
            if etcd:
                entry.extra["etcd"] = list(etcd)
            nxt = cons.with_bank(entry, int(time.time()))
            matrices = dict(trust.matrices)
            matrices[bank] = kmc.public
            signed = []
            for f in nxt.founders:
                if (kmc_mod.bank_dir(home, f) / "identity.secret").exists():
                    nxt.sign(f, kmc_mod.load_bank_identity(home, f).private)
                    signed.append(f)
            nxt.sign(bank, ident.private)
            kmc_mod.write_atomic(
                Path(home) / "trust" / "matrices" / f"{bank}.pub", kmc.public.to_bytes()
            )
            missing = nxt.missing_signatures()
            if missing:
                pending = Path(home) / "trust" / f"pending-{nxt.epoch}.json"
                kmc_mod.write_atomic(pending, nxt.to_json().encode())
                result = {
                    "installed": False,
                    "epoch": nxt.epoch,
                    "pending": str(pending),
                    "signed": signed + [bank],
                    "missing": missing,
                }
            else:
                try:
                    _install(home, nxt, trust, kmc_mod, matrices)
                except HubiError as exc:
                    raise ValueError(
                        f"epoch {nxt.epoch} not installed ({Path(home) / 'trust' / 'consortium.json'}"
                        f" left as it was): {exc}"
                    ) from None
                result = {"installed": True, "epoch": nxt.epoch, "signed": signed + [bank]}
    except (OSError, ValueError, HubiError) as exc:
        _fail(as_json, exc)
        return
    if as_json:
        print_json(result)
    elif result["installed"]:
        console.print(f"bank {bank} joined: epoch {result['epoch']}, signed by all founders")
    else:
        console.print(
            f"epoch {result['epoch']} with {bank} is pending in {rich.markup.escape(str(result['pending']))}:"
            " founders "
            f"{', '.join(result['missing'])} must sign it (hubi consortium sign)"
        )


class _NotFounder(ValueError):
    """`sign` asked of a bank that is not a founder: refused (exit 1), nothing signed."""


def _not_founder(bank: str, cons: Any) -> _NotFounder:
    return _NotFounder(
        f"{bank} is not a founder of {cons.name} (founders: {', '.join(cons.founders)}):"
        " only a founder signs a new epoch; nothing was signed"
    )


@consortium.command("sign")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--bank", required=True, help="The founder that signs (its key is in HOME).")
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True)
def sign_cmd(home: Path, bank: str, file: Path | None, as_json: bool) -> None:
    """Sign a pending epoch as a founder; installs it when every founder has signed."""
    from hubi import kmc as kmc_mod
    from hubi_core import cpk
    from hubi_core.errors import HubiError

    try:
        with _trust_lock(home):
            trust = kmc_mod.load_trust(Path(home) / "trust")
            path = file
            if path is None:
                found = _pending(home)
                if not found:
                    raise FileNotFoundError(f"no pending epoch in {Path(home) / 'trust'}")
                path = found[-1]
            nxt = _read_consortium_file(path)
            cur = trust.consortium
            if nxt.signing_bytes() == cur.signing_bytes():  # installed by a sign killed after it
                if bank not in cur.founders:
                    raise _not_founder(bank, cur)
                _drop_installed(home, cur)
                result = {"installed": True, "epoch": cur.epoch}
                if as_json:
                    print_json(result)
                else:
                    console.print(f"epoch {cur.epoch} is already installed")
                return
            try:
                nxt.check_successor(trust.consortium)
            except HubiError as exc:
                raise ValueError(f"{path}: {exc}") from None
            if bank not in nxt.founders:
                raise _not_founder(bank, nxt)
            _check_present(path, nxt, trust, home)
            nxt.sign(bank, kmc_mod.load_bank_identity(home, bank).private)
            missing = nxt.missing_signatures()
            if missing:
                kmc_mod.write_atomic(path, nxt.to_json().encode())
                result = {"installed": False, "epoch": nxt.epoch, "missing": missing}
            else:
                matrices = {}
                for b in nxt.bank_ids():
                    mpath = Path(home) / "trust" / "matrices" / f"{b}.pub"
                    if (
                        not mpath.exists()
                    ):  # the joining bank's matrix stays in the home it joined in
                        raise FileNotFoundError(
                            f"{mpath} is missing: copy {b}.pub from trust/matrices/ of the home"
                            f" where {b} joined, then sign again (nothing was installed)"
                        )
                    matrices[b] = cpk.PublicMatrix.from_bytes(mpath.read_bytes())
                try:
                    _install(home, nxt, trust, kmc_mod, matrices)
                except HubiError as exc:
                    raise ValueError(f"{path}: {exc}") from None
                result = {"installed": True, "epoch": nxt.epoch}
    except _NotFounder as exc:  # a refusal of what was asked, not a mistyped command
        _fail(as_json, ValueError(str(exc)), 1)
        return
    except (OSError, ValueError, HubiError) as exc:
        _fail(as_json, exc)
        return
    if as_json:
        print_json(result)
    elif result["installed"]:
        console.print(f"epoch {result['epoch']} installed: every founder signed")
    else:
        console.print(f"signed; still missing: {', '.join(result['missing'])}")


@consortium.command("show")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--json", "as_json", is_flag=True)
def show_cmd(home: Path, as_json: bool) -> None:
    """The consortium file (signatures and matrices checked)."""
    from hubi import kmc as kmc_mod

    try:
        trust = kmc_mod.load_trust(Path(home) / "trust")
    except (OSError, ValueError) as exc:
        _fail(as_json, exc)
        return
    out = _summary(trust)
    out["pending"] = [str(p) for p in _pending(home)]  # an epoch waiting for founders' signatures
    if as_json:
        print_json(out)
        return
    console.print(
        f"consortium [bold]{out['name']}[/bold] epoch {out['epoch']}, quorum {out['quorum']} "
        f"of {len(out['banks'])} (payer's bank always), orderer {_orderer_text(out['orderer'])}"
    )
    for b in out["banks"]:
        # URLs are escaped: rich would take the host of http://[fe80::1]:8700 for markup
        endpoints = rich.markup.escape(", ".join(b["endpoints"]) or "-")
        console.print(
            f"  {b['id']}: {endpoints}  etcd {rich.markup.escape(', '.join(b['etcd']) or '-')}"
        )
    for p in out["pending"]:
        console.print(
            f"[yellow]pending: {rich.markup.escape(p)} waits for founders' signatures"
            " (`hubi consortium sign`)[/yellow]"
        )


def _orderer_text(orderer: dict[str, Any] | None) -> str:
    """'etcd (log prefix hubi/x/)', or 'none' for a file that names no ordering service."""
    if not orderer:
        return "none"
    prefix = orderer.get("prefix")
    kind = rich.markup.escape(str(orderer.get("kind")))
    return f"{kind} (log prefix {rich.markup.escape(str(prefix))})" if prefix else kind


# ------------------------------------------------------------------------- up/status


@consortium.command("up")
@click.option("--banks", "n", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder for all state (default: the current folder).",
)
@click.option("--name", type=CONSORTIUM_NAME, default="hubi", show_default=True)
@click.option(
    "--accounts",
    type=click.IntRange(0, 100000),
    default=2,
    show_default=True,
    help="Funded demo accounts per bank (keys in hubi-consortium/home/accounts/).",
)
@click.option(
    "--funds",
    type=click.IntRange(0, MAX_AMOUNT),
    default=1_000_000,
    show_default=True,
    help="Minor units each demo account is funded with.",
)
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=None)
@click.option(
    "--restart/--no-restart",
    default=True,
    show_default=True,
    help="Restart a bank node or etcd member that dies.",
)
@click.option(
    "--fsync/--no-fsync",
    default=True,
    show_default=True,
    help="etcd fsyncs its log (--no-fsync: faster, not crash-safe).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
    help="Bank nodes' log level.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the started layout as JSON.")
def up_cmd(
    n: int,
    folder: Path,
    name: str,
    accounts: int,
    funds: int,
    checkpoint_every: int | None,
    restart: bool,
    fsync: bool,
    log_level: str,
    as_json: bool,
) -> None:
    """Start N bank nodes and a 3-member etcd cluster on loopback; Ctrl-C stops them cleanly."""
    import logging

    from hubi.consortium.supervisor import Stopped, Supervisor, status

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sup = Supervisor(
        folder,
        n,
        name=name,
        accounts=accounts,
        funds=funds,
        checkpoint_every=checkpoint_every,
        restart=restart,
        durable=fsync,
        log_level=log_level,
    )

    got: list[int] = []  # the signals that asked for the stop, named in the last words

    def on_signal(signum: int, frame: object) -> None:
        got.append(signum)
        sup._stop.set()

    def by() -> str:
        return f" by {signal.Signals(got[0]).name}" if got else ""

    # SIGHUP too: a closed terminal stops the banks cleanly rather than kill them with us
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        sup.prepare()
        started = not sup._stop.is_set() and sup.start()
    except Stopped:  # a signal while it prepared: what is made is kept for the next run
        started = False
    except BaseException as exc:
        sup.stop()
        if isinstance(exc, (OSError, RuntimeError, TimeoutError, ValueError)):
            _fail(as_json, exc)
        raise
    if not started or sup._stop.is_set():  # a signal during start-up: stop what started
        sup.stop()
        msg = "stopped during start-up: nothing is left running; run `hubi consortium up` again"
        msg += f" (stopped{by()})" if got else ""
        if as_json:
            print_json({"stopped": True, "message": msg})
        else:
            console.print(msg)
        return
    try:
        st = status(folder, details=False)
        if as_json:
            print_json(st)
        else:
            console.print(
                f"consortium [bold]{sup.name}[/bold] up in {rich.markup.escape(str(sup.root))}"
            )
            for b in st["banks"]:
                console.print(f"  bank {b['id']}  {b['url']}  pid {b['pid']}")
            for m in st["etcd"]:
                console.print(f"  etcd {m['name']}  {m['url']}  pid {m['pid']}")
            console.print("Ctrl-C stops everything; `hubi consortium status` shows health.")
        sys.stdout.flush()
        sup.run()
    finally:
        sup.stop()
        if not as_json:  # every bank node and etcd member has exited by now (reaped)
            console.print(f"consortium stopped{by()}")


@consortium.command("status")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True)
def status_cmd(folder: Path, as_json: bool) -> None:
    """Health of what `hubi consortium up` runs in this folder: banks and etcd members.

    Exit status: 0 when every bank node and etcd member is running and healthy; 1 when any is
    down, failed, halted or unreachable, or the consortium is stopped (`healthy` in --json);
    2 for a usage error, or when there is nothing to judge: no consortium here, one still
    being set up, or damaged state files (the error names them).
    """
    from hubi.consortium.supervisor import status

    try:
        st = status(folder)
    except (OSError, ValueError, RuntimeError) as exc:
        _fail(as_json, exc)
        return
    if as_json:
        print_json(st)
    else:
        _print_status(st)
    sys.exit(0 if st["healthy"] else 1)  # scripts tell a healthy consortium from a broken one


def _print_status(st: dict[str, Any]) -> None:
    gone = not st["supervisor"]["running"]
    console.print(
        f"consortium {st['consortium']} ({st['state']}), supervisor pid "
        f"{st['supervisor']['pid']} {'gone' if gone else 'running'}"
    )
    if gone and st["state"] != "stopped":  # killed (SIGKILL, power cut): up.json is stale
        console.print(
            "[yellow]its `hubi consortium up` was killed without stopping: run it again"
            " here to bring the consortium back[/yellow]"
        )
    for b in st["banks"]:
        answers = "applied_revision" in b  # healthy, or up but not well (halted, store down)
        mark = "[green]healthy[/green]" if b["healthy"] else "[red]down[/red]"
        if b.get("halted"):
            mark = "[red]halted[/red]"
        if b.get("failed"):  # given up by the supervisor: the error says why
            mark = "[red]failed[/red]"
        if b.get("behind_epoch"):  # runs an older consortium file than another bank
            mark = f"[red]epoch {b['epoch']} < {b['behind_epoch']}[/red]"
        if b.get("disagrees_with"):  # answers and applies, but judged the log otherwise
            mark = "[red]disagrees[/red]"
        extra = f"  applied revision {b['applied_revision']}" if answers else ""
        if b.get("stalled_peers"):
            extra += f"  [yellow]finds stalled: {', '.join(b['stalled_peers'])}[/yellow]"
        pruning = b.get("pruning") or {}
        if pruning.get("pruner") == b["id"]:  # the bank that has the log forget
            extra += f"  log forgotten through revision {pruning.get('through')}"
            if pruning.get("waiting_for"):
                extra += f" [yellow](waits for {', '.join(pruning['waiting_for'])})[/yellow]"
        console.print(f"  bank {b['id']}  {b['url']}  {mark}{extra}")
        if not b["healthy"] and b.get("error"):
            console.print(f"    [red]{rich.markup.escape(str(b['error']))}[/red]")
        elif b.get("clock"):  # a peer's clock is off, as this bank sees it
            console.print(f"    [yellow]{rich.markup.escape(str(b['clock']))}[/yellow]")
    for m in st["etcd"]:
        mark = "[green]healthy[/green]" if m["healthy"] else "[red]down[/red]"
        if m.get("failed"):  # given up by the supervisor
            mark = f"[red]failed[/red]\n    [red]{rich.markup.escape(str(m['failed']))}[/red]"
        console.print(f"  etcd {m['name']}  {m['url']}  {mark}")


_ = json  # JSON output goes through hubi.output.print_json
