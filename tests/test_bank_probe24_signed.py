"""Signed requests with hostile parameters and bodies against a real node (SQLite and PostgreSQL).

schemathesis follows the OpenAPI description; these requests are signed by the bank itself, a
regulator or a customer and carry what the description does not foresee: repeated parameters,
NUL and other control characters, lone UTF-16 surrogates in JSON, huge and negative numbers,
ranges reversed or past the end. Every reply must be a 2xx or a JSON 4xx that names its code
(and, for a bad parameter, the field); never a 5xx.

Found: a book name holding NUL (PostgreSQL refuses it: DataError) or a lone surrogate (neither
store can encode it) reached the database from /v1/backup/records and /v1/audit?book= and the
node answered 500 internal. A book name that is not an account id is now answered without a
look-up (missing, for hot-backup records; 422 naming ``book`` for the audit), and a name that is
not text at all is a 422 naming the record.
"""

from __future__ import annotations

import json
from urllib.parse import quote, unquote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import bank_nodes
from tests.bank_nodes import prepare_bank
from tests.servers import postgres_db  # noqa: F401  (fixture)

bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes

BIG = 2**62

NUMBERS = st.one_of(
    st.sampled_from(
        ["0", "-1", "1", "2", "3", str(BIG), str(BIG + 1), str(2**64), "9" * 40, "1e3", "0x10"]
    ),
    st.sampled_from(["", " 1", "1 ", "+1", "١", "1.0", "NaN", "true", "null", "%00", "1%00"]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)
BOOKS = st.one_of(
    st.sampled_from(["BKA-000001", "BKA-000002", "BKA-treasury", "BKA-999999", "BKB-000001"]),
    st.sampled_from(["", "%00", "A%00B", "BKA-000001%00", "%ED%A0%80", "%FF", "x" * 300, "ö"]),
    st.text(max_size=20).map(lambda t: quote(t, safe="")),
)


def _query(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{k}={v}" for k, v in pairs)  # values arrive already percent-encoded


def _params(names: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[str]:
    """Query strings over `names`: any subset, any order, some names repeated."""
    pair = st.sampled_from(sorted(names)).flatmap(lambda k: names[k].map(lambda v: (k, v)))
    return st.lists(pair, max_size=5).map(_query)


GET_ROUTES: dict[str, dict[str, st.SearchStrategy[str]]] = {
    "/v1/accounts/BKA-000001/notices": {"after": NUMBERS, "limit": NUMBERS},
    "/v1/accounts/BKA-000001/book": {"from": NUMBERS, "limit": NUMBERS},
    "/v1/accounts/BKA-000002": {"x": NUMBERS},
    "/v1/audit": {"book": BOOKS, "chain_only": st.sampled_from(["1", "0", "yes", "x", "%00"])},
    "/v1/checkpoints": {"after": NUMBERS, "limit": NUMBERS},
    "/v1/checkpoints/latest": {"x": NUMBERS},
    "/v1/proofs/inclusion": {"book": BOOKS, "number": NUMBERS, "tree_size": NUMBERS},
    "/v1/proofs/consistency": {"first": NUMBERS, "second": NUMBERS},
    "/v1/replication/log": {"from": NUMBERS, "limit": NUMBERS},
}

JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12),
        st.sampled_from(["BKA-000001", "A\x00B", "\ud800", "BKA-000001\n", "BKA-\udfff"]),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
RECORD = st.fixed_dictionaries(
    {"book": JSON_VALUES | BOOKS.map(unquote), "number": JSON_VALUES | st.integers(-5, 2**64)}
)
BODIES = st.one_of(
    st.builds(lambda rs: {"records": rs}, st.lists(RECORD | JSON_VALUES, max_size=4)),
    st.builds(lambda t: {"template": t}, JSON_VALUES),
    JSON_VALUES,
)
POST_ROUTES = ["/v1/backup/records", "/v1/accounts"]


def _encode(doc: object) -> bytes:
    # json.dumps writes a lone surrogate as "\\ud800" (say): exactly what a hostile client sends
    return json.dumps(doc).encode()


def _check(resp: httpx.Response, what: str) -> None:
    assert resp.status_code < 500, f"{what}: {resp.status_code} {resp.text[:300]}"
    if resp.status_code >= 400:
        doc = resp.json()
        assert isinstance(doc.get("error"), str) and doc["error"], what
        assert isinstance(doc.get("message"), str) and doc["message"], what
        if doc["error"] == "bad-parameter":
            assert doc.get("field"), f"{what}: 422 names no field: {doc}"


def _probe(world, url: str, accts: list) -> None:
    signers = [world.regulator, world.bank_signer("BKA"), accts[0].signer]
    client = httpx.Client(base_url=url, timeout=60)

    def send(signer, method: str, path: str, query: str, body: bytes) -> httpx.Response:
        h = signer.headers("BKA", method, unquote(path), query, body)
        if body:
            h["Content-Type"] = "application/json"
        target = path + ("?" + query if query else "")
        return client.request(method, target, content=body, headers=h)

    @settings(
        max_examples=120,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(
        who=st.integers(0, 2),
        route=st.sampled_from(sorted(GET_ROUTES)).flatmap(
            lambda r: _params(GET_ROUTES[r]).map(lambda q: (r, q))
        ),
    )
    def gets(who: int, route: tuple[str, str]) -> None:
        path, query = route
        _check(send(signers[who], "GET", path, query, b""), f"GET {path}?{query}")

    @settings(
        max_examples=120,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(who=st.integers(0, 2), path=st.sampled_from(POST_ROUTES), doc=BODIES)
    def posts(who: int, path: str, doc: object) -> None:
        body = _encode(doc)
        _check(send(signers[who], "POST", path, "", body), f"POST {path} {body[:200]!r}")

    try:
        gets()
        posts()
    finally:
        client.close()


def _named(world, url: str) -> None:
    """The cases that gave 500, each with the reply it must get now."""
    reg, me = world.regulator, world.bank_signer("BKA")

    def post(doc: object) -> httpx.Response:
        body = _encode(doc)
        h = me.headers("BKA", "POST", "/v1/backup/records", "", body)
        h["Content-Type"] = "application/json"
        return httpx.post(url + "/v1/backup/records", content=body, headers=h, timeout=60)

    r = post({"records": [{"book": "A\x00B", "number": 1}, {"book": "BKA-000001", "number": 1}]})
    assert r.status_code == 200, r.text
    assert [x["book"] for x in r.json()["records"]] == ["BKA-000001"]
    assert r.json()["missing"] == [{"book": "A\x00B", "number": 1}]
    r = post({"records": [{"book": "BKA-000001", "number": 1}, {"book": "\ud800", "number": 1}]})
    assert r.status_code == 422 and r.json()["field"] == "records.1", r.text
    for q in ("book=%00", "book=BKA-000001&book=A%00B", "book=%ED%A0%80"):
        h = reg.headers("BKA", "GET", "/v1/audit", q)
        r = httpx.get(url + "/v1/audit?" + q, headers=h, timeout=60)
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "bad-parameter" and r.json()["field"] == "book"
    h = reg.headers("BKA", "GET", "/v1/audit", "book=BKA-000001")
    r = httpx.get(url + "/v1/audit?book=BKA-000001", headers=h, timeout=60)
    assert r.status_code == 200 and r.json()["ok"], r.text


def _node(world, nodes, db: str):
    accts = list(prepare_bank(world.home, "BKA", db, accounts=3, checkpoint_every=2).values())
    n = nodes(world.home, "BKA", db, name="bka").start()
    for i in range(3):
        note = accts[i].note(accts[(i + 1) % 3].id, 10 + i, serial=1)
        httpx.post(n.url + "/v1/notes", content=note, timeout=60).raise_for_status()
    return n, accts


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_signed_hostile_requests_never_get_a_5xx(bank_world, nodes, tmp_path, request, store):
    db = f"sqlite:///{tmp_path / 'bka.db'}"
    if store == "postgresql":
        db = request.getfixturevalue("postgres_db")
    n, accts = _node(bank_world, nodes, db)
    _named(bank_world, n.url)
    _probe(bank_world, n.url, accts)
    assert "Traceback" not in n.log_text()
    assert n.health()["status"] == "ok"
