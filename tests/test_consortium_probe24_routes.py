"""The /v1/consortium/* routes of a real bank node process (over a real etcd cluster) whose
consortium state file was removed or replaced while it ran: every thread that opens the state
after that refuses it (hubi.consortium.state._StateDb.same_file), and each route said so with a
bare "500 internal error". They now answer 503 consortium-unavailable naming the file, and
/health, which said "store unavailable" of the bank's (sound) store, names the state file.

Deterministic: the node's request threads have not opened the state before the file is moved
(no request reached a consortium route), so the first request's thread opens it afresh."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.consortium_support import Consortium, copy_sqlite
from tests.servers import etcd_cluster  # noqa: F401

BANK = "BKB"
ZERO_ID = "00" * 32


def _signed(c: Consortium, asker: str, method: str, path: str, body: bytes = b"") -> Any:
    h = c.signer(asker).headers(BANK, method, path, None, body)
    if method == "POST":
        h["content-type"] = "application/octet-stream"
    return c.http.request(method, c.url(BANK) + path, content=body or None, headers=h)


def _requests(c: Consortium) -> list[tuple[str, httpx.Response]]:
    """Each consortium route once: the reads by the bank itself, validate by its peer."""
    note = c.accounts["BKA-000001"].note("BKB-000001", 5)
    out = [
        (p, _signed(c, BANK, "GET", p))
        for p in (
            "/v1/consortium/status",
            f"/v1/consortium/entries/{ZERO_ID}",
            "/v1/consortium/reports",
            "/v1/consortium/checkpoints",
        )
    ]
    out.append(("validate", _signed(c, "BKA", "POST", "/v1/consortium/validate", note)))
    return out


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_moved_state_file_gets_503_naming_it_on_every_consortium_route(
    etcd_cluster,  # noqa: F811
    tmp_path: Path,
    how: str,
) -> None:
    with Consortium(tmp_path / "c", etcd_cluster.client_urls, banks=["BKA", BANK]) as c:
        state = c.home / "banks" / BANK / "consortium.db"
        aside = tmp_path / "aside.db"
        if how == "removed":
            os.rename(state, aside)
        else:  # an operator's restore of a backup without stopping the node
            copy_sqlite(state, aside)
            os.replace(aside, state)
        for path, r in _requests(c):
            assert r.status_code == 503, (path, r.status_code, r.text[:300])
            body = r.json()
            assert body["error"] == "consortium-unavailable", (path, body)
            assert "replaced or removed" in body["message"], (path, body)
            assert str(state) in body["message"] and body["field"] is None, (path, body)
        # /health: degraded, naming the consortium state, not "store unavailable"
        h = c.http.get(c.url(BANK) + "/health")
        assert h.status_code == 200, h.text[:300]
        doc = h.json()
        assert doc["status"] == "degraded", doc
        assert "replaced or removed" in str(doc["detail"]["consortium"]["halted"]), doc
        assert "store" not in doc["detail"] or "unavailable" not in str(doc["detail"]["store"])
        # the node itself is up: its own book answers
        acct = c.get(BANK, "/v1/accounts/BKB-000001")
        assert int(acct["balance"]) > 0, acct
        if how == "removed":  # the file put back: the same routes answer again, nothing lost
            os.rename(aside, state)
            for path, r in _requests(c):
                want = 404 if "/entries/" in path else 200  # no entry for that id: as before
                assert r.status_code == want, (path, r.status_code, r.text[:300])
            assert r.json()["bank"] == BANK and r.json()["endorsement"], r.json()
