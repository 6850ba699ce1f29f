"""Benchmark: how long the log takes to forget a large backlog on etcd (`EtcdOrderer.forget`).

    .venv/bin/python -m bench.bench_forget [--keys 50000,200000] [--json FILE]

A bank that was down for an hour at 85 notes/s holds the log back by about 600,000 keys; once
it has caught up, the lowest bank forgets them in one round. For each size this fills a fresh
single-member etcd (no fsync) with that many log keys (random note ids, 200-byte values, 100 per
transaction), then times `forget` through the last of them. As a reference, measured in the same
run on a second fill of the same size: the first version of `forget`, which let etcd filter each
page by create revision (`max_create_revision`); etcd then reads the whole rest of the range for
every page of 1,000. Both delete with conditional transactions of 100 keys; `forget` runs as the
lowest bank runs it, comparing four banks' marks in each transaction and writing `forgotten`.

On the first fill, before it is forgotten, it also times the replay a bank makes when an operator
has compacted etcd past its watch (`_created_since`: every key, in creation order), against its
first version, which had etcd sort each page of 1,000 by creation.

Nothing is asserted; bench/consortium.md discusses the figures.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))

from bench import report  # noqa: E402
from hubi.consortium.etcd_orderer import EtcdOrderer  # noqa: E402
from hubi.consortium.orderer import revision_value  # noqa: E402
from hubi.infra.etcd_client import prefix_end  # noqa: E402
from hubi.infra.etcd_server import EtcdCluster  # noqa: E402

PREFIX = b"hubi/bench/"
MARKS = [b"applied/BK%s" % x for x in (b"A", b"B", b"C", b"D")]  # four banks' marks


def _enc(b: bytes) -> str:
    return base64.b64encode(b).decode()


def fill(o: EtcdOrderer, n: int, salt: bytes) -> int:
    """n log keys, 100 per transaction; returns the revision of the last."""
    for i in range(0, n, 100):
        ops = [
            {
                "request_put": {
                    "key": _enc(
                        PREFIX + b"log/n/" + hashlib.sha256(salt + b"%d" % j).hexdigest().encode()
                    ),
                    "value": _enc(b"x" * 200),
                }
            }
            for j in range(i, min(n, i + 100))
        ]
        o.etcd._call("/v3/kv/txn", {"compare": [], "success": ops})
    return o.revision()


def forget_filtered_by_etcd(o: EtcdOrderer, through: int) -> int:
    """The reference: pages that etcd filters by create revision, then the same deletions."""
    start = PREFIX + b"log/"
    end = prefix_end(start)
    gone = 0
    while True:
        body = {
            "key": _enc(start),
            "range_end": _enc(end),
            "keys_only": True,
            "limit": "1000",
            "max_create_revision": str(through),
        }
        out = o.etcd._call("/v3/kv/range", body)
        kvs = out.get("kvs") or []
        keys = [(base64.b64decode(kv["key"]), int(kv["create_revision"])) for kv in kvs]
        for i in range(0, len(keys), 100):
            if o.etcd.delete_created(keys[i : i + 100]):
                gone += len(keys[i : i + 100])
        if not out.get("more") or not keys:
            return gone
        start = keys[-1][0] + b"\0"


def replay_sorted_by_etcd(o: EtcdOrderer, compacted: int) -> int:
    """The reference replay (the first version of ``_created_since``): pages of 1,000 that etcd
    sorts by creation, from the last one's create revision on."""
    start = PREFIX + b"log/"
    since, events = 0, 0
    while True:
        body = {
            "key": _enc(start),
            "range_end": _enc(prefix_end(start)),
            "revision": str(compacted),
            "limit": "1000",
            "min_create_revision": str(since + 1),
            "sort_order": "ASCEND",
            "sort_target": "CREATE",
        }
        out = o.etcd._call("/v3/kv/range", body)
        kvs = out.get("kvs") or []
        for kv in kvs:
            since = int(kv["create_revision"])
            events += 1
        if not out.get("more"):
            return events


def time_replays(o: EtcdOrderer, n: int, through: int) -> dict[str, Any]:
    """The log's replay after a compaction (every key, in creation order), both ways."""
    out: dict[str, Any] = {}
    for name in ("replay", "replay_reference"):
        t0 = time.perf_counter()
        if name == "replay":
            revs = [ev.revision for ev in o._created_since(0, through, b"log/")]
            assert len(revs) == n and revs == sorted(revs), (len(revs), n)
        else:
            assert replay_sorted_by_etcd(o, through) == n
        seconds = time.perf_counter() - t0
        out[name] = {"seconds": round(seconds, 2), "keys_per_s": round(n / seconds)}
    out["replay_reference_over_replay"] = round(
        out["replay_reference"]["seconds"] / out["replay"]["seconds"], 2
    )
    return out


def measure(n: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="hubi-bench-forget-") as d,
        EtcdCluster(Path(d), members=1, durable=False, quota_bytes=8 * 2**30) as cluster,
    ):
        o = EtcdOrderer(cluster.client_urls, PREFIX)
        try:
            out: dict[str, Any] = {"keys": n}
            for name in ("forget", "reference"):
                through = fill(o, n, name.encode())
                for m in MARKS:
                    o.put(m, revision_value(through))
                o.claim(b"log/n/after", name.encode())  # created after: must stay
                if name == "forget":
                    out.update(time_replays(o, n, through))
                t0 = time.perf_counter()
                if name == "forget":
                    gone = o.forget(through, marks=MARKS, record=b"forgotten")
                else:
                    gone = forget_filtered_by_etcd(o, through)
                seconds = time.perf_counter() - t0
                left = [k for k, _, _ in o.scan(b"log/")]
                assert gone == n and left == [b"log/n/after"], (name, gone, left[:3])
                out[name] = {"seconds": round(seconds, 2), "keys_per_s": round(n / seconds)}
                o.etcd.delete(PREFIX + b"log/n/after")
            out["reference_over_forget"] = round(
                out["reference"]["seconds"] / out["forget"]["seconds"], 2
            )
            return out
        finally:
            o.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", default="50000,200000", help="backlog sizes, comma-separated")
    ap.add_argument("--json", type=Path, default=None, help="write the results here too")
    args = ap.parse_args()
    result = {"runs": []}
    for n in (int(x) for x in args.keys.split(",")):
        run = measure(n)
        result["runs"].append(run)
        print(json.dumps(run), flush=True)
    report(result, args.json)


if __name__ == "__main__":
    main()
