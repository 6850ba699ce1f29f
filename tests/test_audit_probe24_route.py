"""`GET /v1/audit?book=...` on a real node: a book named many times is walked once, and one
request names at most MAX_AUDIT_BOOKS distinct books.

Found: nothing bounded the books one request named; each is looked up (two queries for one the
database does not hold) and walked, so one signed request could name thousands. Past the bound
the node now answers a 422 naming ``book`` and the bound, before touching the database.
"""

from __future__ import annotations

import httpx
import pytest

from hubi.bank.api import MAX_AUDIT_BOOKS
from tests import bank_nodes
from tests.bank_nodes import prepare_bank

pytestmark = pytest.mark.xdist_group("audit-probe24-route")

bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes


def test_audit_books_are_walked_once_and_bounded(bank_world, nodes, tmp_path) -> None:  # noqa: ANN001
    db = f"sqlite:///{tmp_path / 'bka.db'}"
    accts = list(prepare_bank(bank_world.home, "BKA", db, accounts=2).values())
    n = nodes(bank_world.home, "BKA", db, name="bka").start()
    reg = bank_world.regulator

    def get(q: str) -> httpx.Response:
        h = reg.headers("BKA", "GET", "/v1/audit", q)
        return httpx.get(n.url + "/v1/audit?" + q, headers=h, timeout=60)

    a, b = accts[0].id, accts[1].id
    once = get(f"book={a}&book={b}")
    assert once.status_code == 200 and once.json()["ok"], once.text
    # named 3 * MAX_AUDIT_BOOKS times: two distinct books, each walked once
    many = get("&".join(f"book={x}" for x in [a, b, a] * MAX_AUDIT_BOOKS))
    assert many.status_code == 200, many.text
    assert many.json()["books"] == 2 and many.json()["records"] == once.json()["records"]
    # exactly at the bound: names held and unknown alike are looked up (the unknown one: 404)
    at = [a, b] + [f"BKA-n{i}" for i in range(MAX_AUDIT_BOOKS - 2)]
    r = get("&".join(f"book={x}" for x in at))
    assert r.status_code == 404 and r.json()["field"] == "book", r.text
    past = get("&".join(f"book={x}" for x in at + ["BKA-onemore", a]))
    assert past.status_code == 422, past.text
    assert past.json()["error"] == "bad-parameter" and past.json()["field"] == "book"
    assert str(MAX_AUDIT_BOOKS) in past.json()["message"], past.text
    assert "Traceback" not in n.log_text()
    assert n.health()["status"] == "ok"
