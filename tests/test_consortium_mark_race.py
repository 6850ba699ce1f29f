"""A bank's applied mark never goes back. The applier (before it reads the log) and the
forgetting loop both put the mark; unlocked, a mark read earlier could be put after a later
one: the loop reads revision R1, the applier applies on and puts R2, then the loop's put of R1
lands (the log then holds back, or a lower mark stops a round of forgetting)."""

from __future__ import annotations

import threading

from hubi.consortium import entries as ent
from hubi.consortium.orderer import read_revision
from tests.test_consortium_embedded import wait_all, world  # noqa: F401


def test_a_mark_read_earlier_is_never_put_after_a_later_one(world) -> None:  # noqa: F811
    ec, acc = world
    node = ec.nodes["BKB"]
    first = node.mark_applied()
    real_put = node.orderer.put
    later_done = threading.Event()
    slowed: list[bytes] = []

    def put(key: bytes, value: bytes) -> int:
        if key == ent.applied_key("BKB") and not slowed:  # the loop's put, held back
            slowed.append(value)
            later_done.wait(5)  # unlocked: the later mark is put meanwhile
        return real_put(key, value)

    node.orderer.put = put  # type: ignore[method-assign]
    node.pruning["marked"] = None  # so that the loop's mark is put again
    loop = threading.Thread(target=node.mark_applied)
    loop.start()
    while not slowed:  # the loop has read its revision and is in its put
        threading.Event().wait(0.01)
    assert ec.submit("BKB", acc["BKA-000001"].note("BKB-000001", 5))["outcome"] == "booked"
    head = wait_all(ec)
    assert head > first
    assert node.mark_applied() == head  # the applier's later mark
    later_done.set()
    loop.join(30)
    assert not loop.is_alive()
    got = node.orderer.get(ent.applied_key("BKB"))
    assert got is not None and read_revision(got.value) == head, got
