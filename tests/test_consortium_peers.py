"""PeerHealth: which peer banks answer validation requests (a clock the test moves);
PeerThreads: a hung peer's requests wait on threads of their own; the node configuration's checks
of its time settings."""

from __future__ import annotations

import json
import threading
import time

import pytest

from hubi.consortium.errors import ConsortiumError
from hubi.consortium.peers import PeerHealth, PeerThreads
from hubi.consortium.service import NodeConfig


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_peer_silent_past_the_limit_is_stalled_and_gets_one_probe_at_a_time() -> None:
    clock = Clock()
    h = PeerHealth(stall_after=1.0, clock=clock)
    first = h.try_send("BKD")
    second = h.try_send("BKD")
    assert first is not None and second is not None and first != second
    clock.t += 0.9
    assert not h.status()["BKD"]["stalled"]
    assert h.try_send("BKD") is not None  # within the limit: still asked
    clock.t += 0.2  # the first request is now 1.1 s old, nothing came back
    assert h.try_send("BKD") is None
    assert h.status()["BKD"] == {"open": 3, "sent": 3, "stalled": True, "stalls": 1, "skipped": 1}
    assert h.why_not("BKD") == "not asked: stalled (no reply; 3 ask(s) still open)"
    # the open requests time out one by one: while any is open, nothing more goes
    h.done("BKD", first, replied=False)
    h.done("BKD", second, replied=False)
    assert h.try_send("BKD") is None
    h.done("BKD", first + 2, replied=False)
    probe = h.try_send("BKD")  # none open: the next note sends the probe
    assert probe is not None
    assert h.try_send("BKD") is None  # and only one
    st = h.status()["BKD"]
    assert st["stalled"] and st["open"] == 1 and st["skipped"] == 3 and st["stalls"] == 1
    # the peer answers the probe: asked again, as often as needed
    h.done("BKD", probe, replied=True)
    assert not h.status()["BKD"]["stalled"]
    assert h.try_send("BKD") is not None and h.try_send("BKD") is not None


def test_a_busy_peer_that_keeps_replying_is_not_stalled() -> None:
    clock = Clock()
    h = PeerHealth(stall_after=1.0, clock=clock)
    slow = h.try_send("BKB")  # a long request...
    for _ in range(5):  # ...while others come back
        clock.t += 0.5
        t = h.try_send("BKB")
        assert t is not None
        h.done("BKB", t, replied=True)
    assert clock.t - 1000.0 > 1.0 and not h.status()["BKB"]["stalled"]
    h.done("BKB", slow, replied=True)
    # then it goes silent: stalled once a request waited past the limit
    clock.t += 0.1
    t = h.try_send("BKB")
    clock.t += 1.1
    assert h.try_send("BKB") is None
    h.done("BKB", t, replied=True)  # an HTTP error or a refusal is a reply too
    assert not h.status()["BKB"]["stalled"]


def test_stalled_peers_with_a_probe_open_go_last_among_third_banks() -> None:
    clock = Clock()
    h = PeerHealth(stall_after=1.0, clock=clock)
    t = h.try_send("BKC")
    clock.t += 1.5
    assert h.answering_first(["BKC", "BKD", "BKE"]) == ["BKD", "BKE", "BKC"]
    h.done("BKC", t, replied=False)  # timed out: no probe open, it keeps its turn to be probed
    assert h.answering_first(["BKC", "BKD", "BKE"]) == ["BKC", "BKD", "BKE"]
    assert h.status()["BKC"]["stalled"]


def test_stall_after_must_be_positive() -> None:
    with pytest.raises(ValueError, match="stall_after must be positive"):
        PeerHealth(stall_after=0)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("stall_after", 0),
        ("endorse_timeout", -1),
        ("hedge_delay", "0.25"),
        ("settle_timeout", True),
    ],
)
def test_node_config_refuses_time_settings_that_are_not_seconds(
    setting: str, value: object
) -> None:
    doc = f'{{"orderer": "embedded", "{setting}": {value!r}}}'.replace("'", '"')
    doc = doc.replace("True", "true")
    with pytest.raises(ConsortiumError, match=f"cfg.json: {setting} must be seconds"):
        NodeConfig.from_json(doc, "cfg.json")
    assert (
        NodeConfig.from_json('{"orderer": "embedded", "stall_after": 2.5}', "x").stall_after == 2.5
    )


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ({"orderer": "etcd", "etcd": "http://127.0.0.1:2379"}, "etcd must be a list of http(s)"),
        ({"orderer": "etcd", "etcd": ["127.0.0.1:2379"]}, "etcd must be a list of http(s)"),
        ({"peers": ["http://x"]}, "peers must map bank ids to http(s) node URLs"),
        ({"peers": {"BKB": 8700}}, "peers must map bank ids to http(s) node URLs"),
        ({"path": 5}, "path must be a non-empty string, not 5"),
        ({"state": ""}, "state must be a non-empty string, not ''"),
        ({"prefix": ["hubi/"]}, "prefix must be a non-empty string, not ['hubi/']"),
    ],
)
def test_node_config_refuses_settings_of_the_wrong_shape(doc: dict, words: str) -> None:
    """A bank's consortium.json edited by hand: an etcd URL given as a string was read as a
    list of one-letter endpoints, a peers list or a numeric path failed deep in the node."""
    with pytest.raises(ConsortiumError) as caught:
        NodeConfig.from_json(json.dumps(doc), "cfg.json")
    assert str(caught.value).startswith(f"cfg.json: {words}"), caught.value


def test_peer_threads_keep_a_hung_peer_apart_and_refuse_work_once_shut_down() -> None:
    threads = PeerThreads("BKA", per_peer=2)
    release = threading.Event()
    try:
        hung = [threads.submit("BKD", release.wait, 30) for _ in range(3)]  # 2 run, 1 queues
        deadline = time.monotonic() + 10  # both threads started (a loaded machine is slow to)
        while not (hung[0].running() and hung[1].running()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert hung[0].running() and hung[1].running(), hung
        # BKD's threads are all taken; BKB's request runs on threads of its own
        assert threads.submit("BKB", lambda: "endorsed").result(timeout=5) == "endorsed"
        assert hung[2].cancel()  # the queued one was never started: it can be withdrawn
        assert not hung[0].cancel()  # the running ones cannot
    finally:
        release.set()
        threads.shutdown()
    assert all(f.result(timeout=5) for f in hung[:2])
    with pytest.raises(RuntimeError, match="peer threads of BKA are shut down"):
        threads.submit("BKB", lambda: None)
