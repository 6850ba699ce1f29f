"""Benchmark: interbank settlement through the consortium, 4 bank nodes + 3 etcd members on
loopback (real processes: `hubi bank serve` ×4, etcd ×3, started as `hubi consortium up` does).

    .venv/bin/python -m bench.bench_consortium [--banks 4] [--notes 400] [--clients 1,8,32]
                                               [--no-fsync] [--json bench/out/consortium.json]

One settlement = upload of a pre-signed interbank note at the payee's bank until its reply
"booked": endorsements from every bank in parallel (policy: 3 of 4 with the payer's and the
payee's bank), claim of the note id in etcd (txn create-if-absent), the payer's bank applies it
from the log and books the debit, puts its signed BalanceNotice in the log, the payee's bank
applies that and books the credit. Payers and payees are drawn at random from 16 accounts per
bank, always at two different banks.

Phases: `clients` closed-loop client threads each upload notes back to back (1 client = the
latency of an idle consortium; more clients = throughput). Reported per phase: notes/s, latency
p50/p90/p99/max; per bank: the stage timings the nodes record (collect endorsements, claim,
wait for settlement, apply, engine debit/credit) and the CPU seconds each process used per
settled note (from /proc), which is what decides how far it scales, and the CPU per note of each
bank's log applier thread and of the thread that reads and checks the log ahead of it (every
bank runs both for every interbank note, in order, so by CPU the busier one bounds the rate
however many cores the rest gets). Machine: CPU count and load
average before/after (a shared machine: other work runs beside the benchmark).

Nothing is asserted; bench/consortium.md discusses the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import count, report  # noqa: E402
from hubi.consortium.supervisor import Supervisor, _consortium_status  # noqa: E402
from hubi.infra.etcd_client import Etcd  # noqa: E402
from hubi.infra.http_pool import HttpPool  # noqa: E402
from hubi.kmc import load_trust  # noqa: E402
from hubi_core import codec  # noqa: E402

ACCOUNTS = 16


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process (and its reaped children) in seconds, from /proc."""
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(x) for x in fields[11:15]) / ticks


def load_accounts(home: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for p in sorted((home / "accounts").glob("*.json")):
        d = json.loads(p.read_text())
        d["tpl"] = codec.decode(bytes.fromhex(d["template"]), codec.TEMPLATE)
        d["priv"] = int(d["key"], 16)
        d["serial"] = 0
        out[d["account"]] = d
    return out


def make_notes(accounts: dict[str, dict[str, Any]], n: int, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    ids = sorted(accounts)
    out = []
    while len(out) < n:
        payer, payee = rng.sample(ids, 2)
        if payer[:3] == payee[:3]:
            continue
        a = accounts[payer]
        a["serial"] += 1
        obj = codec.make_note(a["tpl"], a["serial"], int(time.time()), rng.randint(1, 99), payee)
        out.append((payee[:3], codec.encode(codec.sign(obj, a["priv"]))))
    return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def run_phase(urls: dict[str, str], notes: list[tuple[str, bytes]], clients: int) -> dict[str, Any]:
    lat: list[float] = []
    outcomes: dict[str, int] = {}
    lock = threading.Lock()
    it = iter(notes)
    # the load generator shares the machine's cores: keep its own cost per upload small
    pools = {b: HttpPool(u, timeout=60.0) for b, u in urls.items()}
    headers = {"Content-Type": "application/octet-stream"}

    def worker() -> None:
        while True:
            with lock:
                job = next(it, None)
            if job is None:
                break
            bank, note = job
            t = time.perf_counter()
            r = pools[bank].post("/v1/notes", note, headers)
            dt = time.perf_counter() - t
            key = json.loads(r.body).get("outcome") if r.status == 200 else f"http-{r.status}"
            with lock:
                lat.append(dt)
                outcomes[key] = outcomes.get(key, 0) + 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for pool in pools.values():
        pool.close()
    return {
        "clients": clients,
        "notes": len(lat),
        "seconds": round(wall, 3),
        "notes_per_s": round(len(lat) / wall, 1),
        "latency_ms": {
            "p50": round(pct(lat, 50) * 1000, 1),
            "p90": round(pct(lat, 90) * 1000, 1),
            "p99": round(pct(lat, 99) * 1000, 1),
            "max": round(max(lat) * 1000, 1),
            "mean": round(statistics.fmean(lat) * 1000, 1),
        },
        "outcomes": outcomes,
    }


def applier_cpu(status: dict[str, Any]) -> tuple[float, float]:
    """CPU seconds a bank's log applier thread, and the thread that reads and checks the log
    ahead of it, have used so far, from its consortium status."""
    a = status["applier"]
    return float(a["cpu_s"]), float(a.get("read_ahead_cpu_s", 0.0))


def appliers(urls: dict[str, str], home: Path) -> dict[str, tuple[float, float]]:
    """:func:`applier_cpu` of every bank."""
    out = {}
    for b, u in urls.items():
        st = _consortium_status(u, home, b)
        if st is None or "applier" not in st:
            raise SystemExit(f"bank {b}: no consortium status at {u}")
        out[b] = applier_cpu(st)
    return out


def catch_up(
    sup: Supervisor, urls: dict[str, str], accounts: dict[str, dict[str, Any]], n: int
) -> dict[str, Any]:
    """How fast a bank that was away catches up: the last bank's process is paused (SIGSTOP)
    while the others settle `n` notes among themselves, then resumed; timed until its applied
    revision reaches theirs. The other banks are idle meanwhile. To tell the node's pace from
    etcd's, the CPU the paused bank and the etcd members used while it caught up is reported,
    and afterwards a bare watch replays the same revisions to this process, timed alone
    (bench_applier.py times the node alone, on the embedded orderer)."""
    lag = sorted(urls)[-1]
    proc = sup.banks[lag].proc
    assert proc is not None
    others = {b: u for b, u in urls.items() if b != lag}
    mine = {a: d for a, d in accounts.items() if a[:3] != lag}
    notes = make_notes(mine, n, seed=99)
    before = _consortium_status(urls[lag], sup.home, lag) or {}
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        phase = run_phase(others, notes, 8)
        head = max(
            (_consortium_status(u, sup.home, b) or {}).get("applied_revision", 0)
            for b, u in others.items()
        )
    finally:
        assert sup.cluster is not None
        etcd_pids = [m.pid for m in sup.cluster.members]
        cpu0 = cpu_seconds(proc.pid), sum(cpu_seconds(p) for p in etcd_pids)
        os.kill(proc.pid, signal.SIGCONT)
    t0 = time.perf_counter()
    while True:
        st = _consortium_status(urls[lag], sup.home, lag) or {}
        if st.get("applied_revision", 0) >= head:
            break
        if time.perf_counter() - t0 > 600:
            raise SystemExit(f"bank {lag} did not catch up to revision {head}")
        time.sleep(0.02)
    seconds = time.perf_counter() - t0
    node_cpu = cpu_seconds(proc.pid) - cpu0[0]
    etcd_cpu = sum(cpu_seconds(p) for p in etcd_pids) - cpu0[1]
    events = st["applier"]["events"] - before["applier"]["events"]
    (apply1, read1), (apply0, read0) = applier_cpu(st), applier_cpu(before)
    prefix = load_trust(sup.home / "trust").consortium.log_prefix().encode() + b"log/"
    with sup.cluster.client() as etcd:
        replay = bare_replay(etcd, prefix, before["applied_revision"], head)
    return {
        "bank": lag,
        "notes_settled_meanwhile": phase["outcomes"].get("booked", 0),
        "meanwhile": {k: phase[k] for k in ("seconds", "notes_per_s", "latency_ms")},
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds, 1),
        "applier_cpu_ms_per_event": round((apply1 - apply0) / events * 1000, 3),
        "read_ahead_cpu_ms_per_event": round((read1 - read0) / events * 1000, 3),
        "node_cpu_ms_per_event": round(node_cpu / events * 1000, 3),
        "etcd_cpu_ms_per_event": round(etcd_cpu / events * 1000, 3),
        "bare_watch_replay": replay,
        # what the paused bank did with the validation requests that waited for it, and what
        # the others made of it (requests sent, notes for which it was skipped as stalled)
        "validations": {
            k: n - before["validations"][k] for k, n in st.get("validations", {}).items()
        },
        "asked_by_others": {
            b: (_consortium_status(u, sup.home, b) or {}).get("peers", {}).get(lag)
            for b, u in others.items()
        },
    }


def etcd_member_stopped(
    sup: Supervisor, urls: dict[str, str], accounts: dict[str, dict[str, Any]], n: int
) -> dict[str, Any]:
    """What the consortium does while one etcd member hangs: the first member's process is
    stopped (SIGSTOP; it is the own member of the first bank, tried first by it) during two
    phases of `n` notes at 8 clients, then resumed. The first phase includes the clients'
    fail-over to the other members, the second runs on two members."""
    assert sup.cluster is not None
    member = sup.cluster.members[0]
    assert member.pid is not None
    out: dict[str, Any] = {"member": member.name}
    os.kill(member.pid, signal.SIGSTOP)
    try:
        for i, name in enumerate(("first", "second")):
            phase = run_phase(urls, make_notes(accounts, n, seed=200 + i), 8)
            out[name] = {k: phase[k] for k in ("notes_per_s", "latency_ms", "outcomes")}
    finally:
        os.kill(member.pid, signal.SIGCONT)
    return out


def bare_replay(etcd: Etcd, prefix: bytes, after: int, head: int) -> dict[str, Any]:
    """Time etcd replaying the log's revisions (after, head] to a bare watch in this process
    (JSON decoding included, nothing else): what etcd alone delivers to a bank catching up."""
    n = 0
    t0 = time.perf_counter()
    for ev in etcd.watch(prefix, prefix=True, start_revision=after + 1):
        n += 1
        if ev.revision >= head:
            break
    seconds = time.perf_counter() - t0
    return {"events": n, "seconds": round(seconds, 3), "events_per_s": round(n / seconds, 1)}


def etcd_size(sup: Supervisor, urls: dict[str, str]) -> dict[str, Any]:
    """What the log holds in etcd now: keys, the members' database files (largest) and the part
    of them in use, and how far the lowest bank has had the log forget (DESIGN §6: it forgets
    what every bank has applied)."""
    assert sup.cluster is not None
    with Etcd(sup.cluster.client_urls) as etcd:
        keys = etcd.range(b"", keys_only=True, limit=1).count
        st = [m for m in etcd.status().values() if m.ok]
    low = min(urls)
    pruning = (_consortium_status(urls[low], sup.home, low) or {}).get("pruning") or {}
    return {
        "keys": keys,
        "db_bytes": max((m.db_size for m in st), default=None),
        "db_bytes_in_use": max((m.db_size_in_use for m in st), default=None),
        "revision": max((m.revision for m in st), default=None),
        "forgot_through": pruning.get("through"),
        "forgot_keys": pruning.get("keys"),
    }


class EtcdSampler:
    """Samples :func:`etcd_size` every second while a phase runs: the most keys and the most
    database in use etcd held during it (between two forgettings the log grows)."""

    def __init__(self, sup: Supervisor, urls: dict[str, str]):
        self.sup, self.urls = sup, urls
        self.peak = {"keys": 0, "db_bytes_in_use": 0, "samples": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                now = etcd_size(self.sup, self.urls)
            except Exception:  # noqa: BLE001 - a sample lost to a busy member is no figure
                continue
            self.peak["samples"] += 1
            for k in ("keys", "db_bytes_in_use"):
                self.peak[k] = max(self.peak[k], now[k] or 0)

    def __enter__(self) -> EtcdSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--banks", type=count, default=4)
    ap.add_argument("--notes", type=count, default=400, help="notes per phase")
    ap.add_argument("--clients", default="1,8,32", help="client threads per phase")
    ap.add_argument("--no-fsync", action="store_true", help="etcd without fsync (not durable)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here too")
    ap.add_argument("--keep", action="store_true", help="keep the state folder")
    ap.add_argument(
        "--catch-up",
        type=int,
        default=0,
        metavar="N",
        help="then pause one bank while the others settle N notes, and time its catching up",
    )
    ap.add_argument(
        "--stop-etcd-member",
        type=int,
        default=0,
        metavar="N",
        help="then stop one etcd member for two phases of N notes (8 clients)",
    )
    args = ap.parse_args()
    phases = [int(x) for x in args.clients.split(",")]

    folder = Path(tempfile.mkdtemp(prefix="hubi-bench-consortium-"))
    sup = Supervisor(
        folder,
        args.banks,
        accounts=ACCOUNTS,
        funds=10_000_000,
        durable=not args.no_fsync,
        restart=False,
        checkpoint_every=1000,
        log_level="warning",
    )
    result: dict[str, Any] = {
        "banks": args.banks,
        "etcd_members": 3,
        "etcd_fsync": not args.no_fsync,
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
        "phases": [],
    }
    try:
        t0 = time.perf_counter()
        sup.prepare()
        sup.start()
        result["startup_s"] = round(time.perf_counter() - t0, 1)
        urls = {b: bp.url for b, bp in sup.banks.items()}
        accounts = load_accounts(sup.home)
        warm = make_notes(accounts, 40, seed=0)
        run_phase(urls, warm, 4)  # caches (payer keys, connections) warm
        pids = {f"bank {b}": bp.proc.pid for b, bp in sup.banks.items() if bp.proc}
        assert sup.cluster is not None
        pids.update({f"etcd {m.name}": m.pid for m in sup.cluster.members})
        for i, clients in enumerate(phases):
            notes = make_notes(accounts, args.notes, seed=1 + i)
            applier0 = appliers(urls, sup.home)
            cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
            own0 = time.process_time()
            with EtcdSampler(sup, urls) as sampler:
                phase = run_phase(urls, notes, clients)
            phase["etcd_peak"] = sampler.peak
            own = time.process_time() - own0
            cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
            applier1 = appliers(urls, sup.home)
            settled = max(1, phase["outcomes"].get("booked", 0))
            phase["cpu_ms_per_note"] = {
                k: round((cpu1[k] - cpu0[k]) / settled * 1000, 2) for k in pids
            }
            phase["cpu_ms_per_note_total"] = round(sum(phase["cpu_ms_per_note"].values()), 1)
            # not in the total: the uploading clients (this process) stand for the merchants
            phase["client_cpu_ms_per_note"] = round(own / settled * 1000, 2)
            # every bank applies every interbank note, in order: one thread reads and checks
            # the log ahead, one applies it. The busier of the two bounds the consortium's
            # rate however many cores the rest of the node gets
            phase["applier_cpu_ms_per_note"] = {
                b: round((applier1[b][0] - applier0[b][0]) / settled * 1000, 3) for b in urls
            }
            phase["read_ahead_cpu_ms_per_note"] = {
                b: round((applier1[b][1] - applier0[b][1]) / settled * 1000, 3) for b in urls
            }
            worst = max(
                max(phase["applier_cpu_ms_per_note"].values()),
                max(phase["read_ahead_cpu_ms_per_note"].values()),
            )
            phase["applier_bound_notes_per_s"] = round(1000 / worst) if worst > 0 else None
            phase["etcd"] = etcd_size(sup, urls)
            result["phases"].append(phase)
            print(json.dumps(phase), flush=True)
        if args.catch_up:
            result["catch_up"] = catch_up(sup, urls, accounts, args.catch_up)
            print(json.dumps({"catch_up": result["catch_up"]}), flush=True)
        if args.stop_etcd_member:
            stopped = etcd_member_stopped(sup, urls, accounts, args.stop_etcd_member)
            result["etcd_member_stopped"] = stopped
            print(json.dumps({"etcd_member_stopped": stopped}), flush=True)
        # the log forgets behind the banks' marks (every 10 s): wait for it to pass this head
        head = max(
            (_consortium_status(u, sup.home, b) or {}).get("applied_revision", 0)
            for b, u in urls.items()
        )
        deadline = time.monotonic() + 60
        result["etcd"] = etcd_size(sup, urls)
        while (result["etcd"]["forgot_through"] or 0) < head and time.monotonic() < deadline:
            time.sleep(1.0)
            result["etcd"] = etcd_size(sup, urls)
        print(json.dumps({"etcd_after_forgetting": result["etcd"]}), flush=True)
        result["stages"] = {
            b: (_consortium_status(u, sup.home, b) or {}).get("timings") for b, u in urls.items()
        }
        statuses = {b: _consortium_status(u, sup.home, b) or {} for b, u in urls.items()}
        result["log_hash_agree"] = len({s.get("log_hash") for s in statuses.values()}) == 1
        result["entries"] = {b: s.get("entries") for b, s in statuses.items()}
    finally:
        result["load_after"] = os.getloadavg()
        sup.stop()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    report(result, args.json)
    print()
    print(
        "| clients | notes/s | p50 ms | p90 ms | p99 ms | CPU ms/note (all processes) "
        "| log applier / reader CPU ms/note (busiest bank) | bound notes/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for p in result["phases"]:
        lm = p["latency_ms"]
        busiest = max(p["applier_cpu_ms_per_note"], key=p["applier_cpu_ms_per_note"].get)
        print(
            f"| {p['clients']} | {p['notes_per_s']} | {lm['p50']} | {lm['p90']} | {lm['p99']} "
            f"| {p['cpu_ms_per_note_total']} | {p['applier_cpu_ms_per_note'][busiest]} / "
            f"{p['read_ahead_cpu_ms_per_note'][busiest]} | {p['applier_bound_notes_per_s']} |"
        )


if __name__ == "__main__":
    main()
