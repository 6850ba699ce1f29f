"""The end-to-end story `make demo` tells, on one machine with the embedded defaults.

KMCs and two banks (BKA, BKB) with a signed consortium file and the embedded orderer; both bank
nodes run as real `hubi bank serve` processes; the payer's token is the real firmware in the
MicroPython simulator, provisioned over a pseudo-terminal; the merchant asks for payment, the
token draws its note as animated QR frames (PNG), the merchant scans those images offline,
uploads, the banks settle the interbank note, notices flow back, and every book audits clean.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from rich.markup import escape

from hubi import kmc as kmc_mod
from hubi import qrscan
from hubi_core import codec, qr

PAYER = "BKA-000000000042"
MERCHANT = "BKB-000000000007"
BANKS = ("BKA", "BKB")
PIN = "2468"
OPENING_BALANCE = 50_000  # 500.00 CNY from BKA's treasury
ALLOWANCE = 20_000  # the token may sign 200.00 CNY offline
PRICE = 1250
PURPOSE = "coffee+cake"
PROFILE = "esp32_st7789_240"  # 240x240 screen: the note is shown as animated QR frames

MARKER = ".hubi-demo"

Say = Callable[[str], None]  # takes rich markup: text from elsewhere (a path) is escaped


class DemoError(RuntimeError):
    """A step of the story did not turn out as it must, or failed (`step` names which; "":
    before the story began). An unexpected failure is this error's __cause__."""

    def __init__(self, message: str, step: str | None = None):
        super().__init__(message)
        self.step = step


class DemoInterrupted(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C) in `step`; the bank nodes and the token were stopped
    on the way out."""

    def __init__(self, step: str, workdir: Path):
        super().__init__(step)
        self.step = step
        self.workdir = workdir


class _Steps:
    """The step of the story under way, for the one line a failure is told in."""

    def __init__(self, say: Say):
        self.say = say
        self.now = "0 (making the demo's folder)"
        self.lock: int | None = None

    def hold(self, fd: int) -> None:
        """Keep the folder's lock (a file descriptor) until the run ends."""
        self.lock = fd

    def begin(self, now: str, header: str) -> None:
        self.now = now
        self.say(header)


def _logs(workdir: Path) -> str:
    """Where a failed run's logs are (the bank nodes', the token's), or its folder if none yet."""
    try:
        logs = sorted(workdir.glob("run/*.log")) + sorted(workdir.glob("token/*.log"))
    except OSError:  # the folder itself gone bad: name it
        logs = []
    return "logs: " + ", ".join(map(str, logs)) if logs else f"no logs yet; files in {workdir}"


def _one_line(exc: BaseException) -> str:
    """An unexpected exception as one line: its type, its message's first line and, of more,
    the last (a node that did not start adds its log's tail, whose last line is the cause)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0].rstrip(":") + (f" … {lines[-1]}" if len(lines) > 1 else "")
    return f"{type(exc).__name__}: {text}"


def _write(path: Path, data: bytes) -> str:
    kmc_mod.write_atomic(path, data)
    return str(path)


@contextmanager
def _bank_nodes(home: Path, run_dir: Path, ports: dict[str, int]) -> Iterator[dict[str, Any]]:
    from hubi.consortium.supervisor import BankProcess

    # each node finds its own books in `home` (BankProcess drops a HUBI_DB left in the shell)
    nodes = {b: BankProcess(b, ports[b], home, run_dir) for b in BANKS}
    try:
        for node in nodes.values():
            node.spawn()
        for node in nodes.values():
            node.wait_ready(60.0)
        yield nodes
    finally:
        for node in nodes.values():
            node.stop()


def _lock(workdir: Path) -> int:
    """The folder's lock, held for the whole run: a second demo on the same --workdir would
    empty it under the first one's nodes and token (both then failed, naming neither)."""
    from hubi.locks import Held, hold_folder

    try:
        return hold_folder(workdir)
    except Held:
        raise DemoError(
            f"another hubi demo is running in {workdir}; wait for it or pick another --workdir",
            step="",
        ) from None


def _empty(workdir: Path) -> None:
    """Remove a previous run's files but its marker, the folder itself kept (its lock is on
    it): a run killed while emptying leaves a folder the next run still knows as its own."""
    for entry in workdir.iterdir():
        if entry.name == MARKER:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _pick_ports() -> dict[str, int]:
    """A free port for each bank node; a bad HUBI_PORT_RANGE or a full range is a DemoError
    naming it, not a traceback."""
    from hubi.infra.ports import PortRangeExhausted, free_ports

    try:
        return dict(zip(BANKS, free_ports(len(BANKS))))
    except (ValueError, PortRangeExhausted) as exc:
        raise DemoError(f"no ports for the bank nodes: {exc}", step="") from None


def resolved(workdir: Path) -> Path:
    """`workdir` made absolute; a DemoError if it is relative and the current folder was
    deleted (or cannot be read) under the shell: os.getcwd() fails, and that was a traceback."""
    try:
        return Path(workdir).resolve()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise DemoError(
            f"cannot find the demo's folder {workdir}: the current folder is gone or cannot be"
            f" read ({why}); cd to a folder that exists, or give an absolute --workdir",
            step="",
        ) from None


def run_demo(workdir: Path, say: Say = print) -> dict[str, Any]:
    """Run the story in `workdir` (emptied first); returns the JSON summary. Any failure is a
    DemoError naming the step (an unexpected one keeps its exception as __cause__)."""
    steps = _Steps(say)
    workdir = resolved(workdir)
    try:
        return _story(workdir, steps)
    except KeyboardInterrupt:  # the `with` blocks have stopped the nodes and the token
        raise DemoInterrupted(steps.now, workdir) from None
    except DemoError as exc:
        if exc.step is not None:  # before the story began: nothing made, no logs
            raise
        raise DemoError(f"{exc}; {_logs(workdir)}", steps.now) from None
    except Exception as exc:  # a node that never listens, a full disk, ...: told in one line
        raise DemoError(f"{_one_line(exc)}; {_logs(workdir)}", steps.now) from exc
    finally:
        if steps.lock is not None:
            os.close(steps.lock)


def _story(workdir: Path, steps: _Steps) -> dict[str, Any]:
    from hubi.bank.audit import audit
    from hubi.bank.auth import bank_signer
    from hubi.bank.client import BankClient
    from hubi.bank.engine import BankEngine
    from hubi.bank.store import sqlite_url
    from hubi.consortium.supervisor import init_home
    from hubi.merchant import Merchant, init_from_bank_home
    from hubi.token import provision as prov
    from hubi.token.client import TokenClient
    from hubi.token.sim import Simulator

    say = steps.say
    ports = _pick_ports()  # before the folder is emptied: a bad HUBI_PORT_RANGE loses nothing
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        steps.hold(_lock(workdir))
        if any(workdir.iterdir()):
            if not (workdir / MARKER).exists():
                raise DemoError(
                    f"{workdir} is not empty and was not made by hubi demo; pick another --workdir"
                )
            _empty(workdir)  # a previous demo run: start afresh
        (workdir / MARKER).write_text("made by hubi demo; the next run empties this folder\n")
    except OSError as exc:  # a file on the way, a folder we may not write, /proc, ...
        why = exc.strerror or type(exc).__name__
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(workdir) else ""
        raise DemoError(
            f"cannot make the demo's folder {workdir}: {why}{where}; pick another --workdir",
            step="",
        ) from None
    home = workdir / "home"
    files: dict[str, Any] = {}
    t_start = time.monotonic()

    # 1 ---------------------------------------------------------------------------- banks
    steps.begin(
        "1 (the banks' keys)",
        "[bold]1. Two banks set up their KMCs and sign a consortium file.[/bold]",
    )
    trust = init_home(
        home,
        list(BANKS),
        name="hubi-demo",
        endpoints={b: [f"http://127.0.0.1:{p}"] for b, p in ports.items()},
        orderer="embedded",
    )
    files["trust"] = str(home / "trust")
    files["consortium"] = str(home / "trust" / "consortium.json")
    say("   each bank: a 32x32 CPK matrix, its own key; one embedded orderer (SQLite) for both")

    # 2 ------------------------------------------------------------------------- accounts
    steps.begin(
        "2 (opening the accounts)",
        f"[bold]2. BKA opens the payer's account {PAYER} and funds it; BKB opens the "
        f"merchant's account {MERCHANT}.[/bold]",
    )
    bank_db = {b: str(kmc_mod.bank_dir(home, b) / "bank.db") for b in BANKS}
    ident = {b: kmc_mod.load_bank_identity(home, b) for b in BANKS}
    with BankEngine(bank_db["BKA"], ident["BKA"], trust) as eng:
        tkey = eng.setup_treasury(kmc_mod.load_kmc(home, "BKA"))
        kmc_mod.write_secret(
            kmc_mod.bank_dir(home, "BKA") / "treasury.secret", tkey.to_bytes(32, "big")
        )
        priv, tpl = eng.issue_account(kmc_mod.load_kmc(home, "BKA"), PAYER)
        payer = prov.Issued(PAYER, priv, tpl)
        funded = eng.fund(PAYER, OPENING_BALANCE, "opening balance")
        if not funded.ok:
            raise DemoError(f"funding the payer failed: {funded.reason}")
        allowance = codec.decode(
            eng.issue_allowance(PAYER, ALLOWANCE, int(time.time()) + 30 * 86400, 1), codec.ALLOWANCE
        )
    merchant_home = workdir / "merchant"
    init_from_bank_home(merchant_home, home, MERCHANT)
    with Merchant.open(merchant_home) as m, BankEngine(bank_db["BKB"], ident["BKB"], trust) as eng:
        eng.open_account(m.template_bytes)
    say(
        f"   payer balance {OPENING_BALANCE / 100:.2f} CNY; offline allowance {ALLOWANCE / 100:.2f} CNY"
    )

    with ExitStack() as stack:
        steps.now = "2 (starting the bank nodes)"
        nodes = stack.enter_context(_bank_nodes(home, workdir / "run", ports))
        say(f"   bank nodes listening: BKA {nodes['BKA'].url}, BKB {nodes['BKB'].url}")

        # 3 -------------------------------------------------------------------- token
        steps.begin(
            "3 (provisioning the token)",
            f"[bold]3. The payer's token (firmware in the MicroPython simulator, {PROFILE}) is "
            "provisioned over its serial link.[/bold]",
        )
        state = workdir / "token"
        sim = Simulator(state, PROFILE, {"qr_frame_ms": 60})
        sim.start()
        stack.callback(sim.stop)
        sim.wait_ready()
        tok = stack.enter_context(TokenClient.open(sim.port))
        prov.provision(tok, home, PAYER, PIN, issued=payer, allowance=allowance)
        info = tok.info()
        say(
            f"   link {sim.port}: token holds {info['account']}, state {info['state']}; "
            "the key travelled ECIES-sealed to the token's transport key"
        )

        # 4 ----------------------------------------------------------------- request
        steps.begin(
            "4 (the merchant's request)",
            f"[bold]4. The merchant asks for {PRICE / 100:.2f} CNY for '{PURPOSE}'.[/bold]",
        )
        with Merchant.open(merchant_home) as m:
            req = m.request(PRICE, PURPOSE, expires=600)
        files["request"] = _write(workdir / "request.bin", req.bytes)
        files["request_png"] = str(qrscan.render_png(req.bytes, workdir / "request.png"))

        # 5 ---------------------------------------------------------------------- pay
        steps.begin(
            "5 (paying with the token)",
            "[bold]5. The token checks the request offline, the payer confirms and types the "
            "PIN, the token signs the note and shows it.[/bold]",
        )
        before = set(sim.frame_files())
        sim.press("confirm: ok", "pin: " + " ".join(PIN) + " enter")
        paid = tok.pay(req.bytes, timeout_ms=30000)
        shown = set(sim.frame_files())
        note = paid.note
        if note is None:
            raise DemoError("the token did not return a note")
        files["note"] = _write(workdir / "note.bin", note)
        files["note_png"] = str(qrscan.render_png(note, workdir / "note.png"))
        sim.wait_note_frames(shown)  # the frames cycle every 60 ms: each drawn at least once
        frames_dir = workdir / "frames"
        frames_dir.mkdir()
        shots = []
        for p in sorted(set(sim.frame_files()) - before):
            dest = frames_dir / p.name
            shutil.copy(p, dest)
            shots.append(dest)
        files["frames"] = [str(p) for p in shots]
        versions = {lvl: qr.min_version(len(note), lvl) for lvl in ("L", "M")}
        say(
            f"   note: {len(note)} bytes (QR version {versions['L']} at L, {versions['M']} at M); "
            f"the 240-px screen animated its QR parts: {len(shots)} screenshots in {escape(str(frames_dir))}"
        )

        # 6 --------------------------------------------------------------------- scan
        steps.begin(
            "6 (the merchant's scan)",
            "[bold]6. The merchant scans the frames (any order), verifies the note offline and "
            "hands back a receipt.[/bold]",
        )
        with Merchant.open(merchant_home) as m:
            results = m.scan(list(reversed(shots)))
        accepted = [r for r in results if r.ok]
        if len(accepted) != 1 or accepted[0].note_bytes != note:
            raise DemoError(
                f"the merchant did not accept the token's note: {[r.as_dict() for r in results]}"
            )
        scan_result = accepted[0]
        checks = scan_result.verdict.as_dict()["checks"]
        say(
            "   checked offline, field by field: "
            + ", ".join(f"{c['field']} {'ok' if c['ok'] else 'FAILED'}" for c in checks)
        )
        receipt = scan_result.receipt
        files["receipt"] = _write(workdir / "receipt.bin", receipt)
        if scan_result.receipt_png:
            files["receipt_png"] = str(scan_result.receipt_png)
        tok.load_notice(receipt)
        say("   accepted offline; the receipt went back to the token over the link")

        # 7 ------------------------------------------------------------------- upload
        steps.begin(
            "7 (the upload)",
            "[bold]7. Later, online: the merchant uploads its outbox to BKB; the banks settle "
            "the interbank note through the consortium.[/bold]",
        )
        with Merchant.open(merchant_home) as m:
            report = m.upload(nodes["BKB"].url)
            counts = report.counts()
            book_entries = len(m.book())
            merchant_findings = m.audit_book()
        if counts.get("booked") != 1:
            raise DemoError(f"upload did not book the note: {report.as_dict()}")
        say(
            f"   booked; BKB's SettlementNotice is record {book_entries} of the merchant's own book"
        )

        # 8 ------------------------------------------------------------------ notices
        steps.begin(
            "8 (the balance notice)",
            "[bold]8. BKA's BalanceNotice (new balance sealed to the payer's key) goes to the "
            "token.[/bold]",
        )
        with BankClient(nodes["BKA"].url, signer=bank_signer(home, "BKA")) as bka:
            notices = [n for n in bka.notices(PAYER) if n["kind"] == "BalanceNotice"]
        if not notices:
            raise DemoError("BKA sent no BalanceNotice for the payer")
        balance_notice = bytes.fromhex(notices[-1]["hex"])
        files["balance_notice"] = _write(workdir / "balance-notice.bin", balance_notice)
        tok.load_notice(balance_notice)
        sim.press("pin: " + " ".join(PIN) + " enter")  # the payer unlocks the key on the device
        shown = tok.balance().get("balance")
        if shown != OPENING_BALANCE - PRICE:
            raise DemoError(f"the token shows balance {shown}, expected {OPENING_BALANCE - PRICE}")
        say(f"   the token opened it with the payer's key: balance {shown / 100:.2f} CNY")
        steps.now = "8 (stopping the token and the bank nodes)"  # what leaving `with` does

    # 9 --------------------------------------------------------------------------- audit
    steps.begin(
        "9 (the audit)",
        "[bold]9. Every book is audited: XOR codes, hash chains, signatures, balances, "
        "checkpoints.[/bold]",
    )
    audits = {}
    for b in BANKS:
        rep = audit(bank_db[b], trust=trust)
        audits[b] = rep.as_dict()
        say(
            f"   {b}: {_count(rep.books, 'book')}, {_count(rep.records, 'record')}, "
            + ("[green]clean[/green]" if rep.ok else f"[red]{escape(str(rep.by_kind()))}[/red]")
        )
    say(
        "   merchant's book: "
        + (
            "[green]clean[/green]"
            if not merchant_findings
            else f"[red]{escape(str(merchant_findings))}[/red]"
        )
    )
    audit_ok = all(a["ok"] for a in audits.values()) and not merchant_findings

    files["bank_db"] = {b: sqlite_url(bank_db[b]) for b in BANKS}
    files["merchant_outbox"] = str(merchant_home)
    files["token_state"] = str(state)
    ok = audit_ok and counts.get("booked") == 1 and isinstance(shown, int)
    return {
        "ok": ok,
        "notes_signed": 1,
        "notes_accepted": len(accepted),
        "notes_booked": counts.get("booked", 0),
        "upload": counts,
        "payer_balance_shown_by_token": shown,
        "note": {"bytes": len(note), "qr_version": versions, "frames": len(shots)},
        "audit": {
            "ok": audit_ok,
            "banks": {b: a["ok"] for b, a in audits.items()},
            "merchant_book": not merchant_findings,
            "details": audits,
        },
        "seconds": round(time.monotonic() - t_start, 1),
        "files": files,
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
