"""schemathesis against the OpenAPI description of a real bank node process: no 5xx, ever.

Every operation of /openapi.json gets generated requests (valid and invalid by the schema) over
real HTTP, twice: signed with the bank's own key (so the checks reach past authentication into
parameters, bodies and the engine) and as generated (unsigned or with made-up X-Hubi-* headers).
Besides "not a server error", replies must use documented status codes and content types.
Bounded: a fixed number of examples per operation, no deadline.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import checks as st_checks

from hubi.bank import auth
from tests.bank_nodes import NodeProcess, copy_world, prepare_bank

# one worker builds the module's nodes (not each worker again)
pytestmark = pytest.mark.xdist_group("test_bank_schemathesis")

EXAMPLES = 12


class SignedAuth(requests.auth.AuthBase):
    """Signs each prepared request exactly as it goes on the wire (docs/bank-api.md)."""

    def __init__(self, signer: auth.Signer, bank: str):
        self.signer = signer
        self.bank = bank

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        url = urlsplit(r.url or "")
        body = r.body or b""
        if isinstance(body, str):
            body = body.encode()
        for k in list(r.headers):
            if k.lower().startswith("x-hubi-"):
                del r.headers[k]
        r.headers.update(
            self.signer.headers(self.bank, r.method or "GET", unquote(url.path), url.query, body)
        )
        return r


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    base = tmp_path_factory.mktemp("schemathesis")
    home = copy_world(base / "home").home
    db = f"sqlite:///{base / 'bka.db'}"
    accts = prepare_bank(home, "BKA", db, accounts=3, funds=10_000, checkpoint_every=2)
    n = NodeProcess(home, "BKA", db).start()
    import httpx

    a = list(accts.values())
    for i in range(3):  # some records, notices and checkpoints to serve
        note = a[i].note(a[(i + 1) % 3].id, 10 + i, serial=1)
        httpx.post(n.url + "/v1/notes", content=note).raise_for_status()
    yield n
    n.close()
    if not (Path(home) / "keep").exists():
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def api_schema(node):
    return schemathesis.openapi.from_url(node.url + "/openapi.json")


CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
]


def operations(schema) -> list:
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) >= 15, [o.label for o in ops]
    return ops


def fuzz(op, mode, run_case) -> None:
    """Run `run_case` on EXAMPLES generated cases of one operation (hypothesis, derandomized)."""

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case) -> None:
        run_case(case)

    try:
        run()
    except Unsatisfiable:  # nothing of this mode to generate (e.g. no parameters to break)
        assert mode == schemathesis.GenerationMode.NEGATIVE, op.label


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
def test_signed_requests_never_5xx(api_schema, node, mode):
    """Requests signed by the bank itself: past authentication, into parameters and the engine."""
    session = requests.Session()
    session.auth = SignedAuth(auth.bank_signer(node.home, "BKA"), "BKA")
    for op in operations(api_schema):
        fuzz(
            op,
            mode,
            lambda c: c.call_and_validate(base_url=node.url, session=session, checks=CHECKS),
        )


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
def test_generated_requests_never_5xx(api_schema, node, mode):
    """Requests as generated: unsigned, or with made-up X-Hubi-* headers."""
    for op in operations(api_schema):
        fuzz(op, mode, lambda c: c.call_and_validate(base_url=node.url, checks=CHECKS))


def test_node_log_has_no_traceback(node):
    text = node.log_text()
    assert "Traceback" not in text and "internal error" not in text


# ------------------------------------------------------------------ a consortium member
@pytest.fixture(scope="module")
def member(tmp_path_factory):
    """BKA and BKB nodes of one consortium over the embedded orderer; BKA is fuzzed, BKB is
    there so that BKA has a peer (and an interbank note settles first, to have an entry)."""
    from tests.consortium_support import make_home

    base = tmp_path_factory.mktemp("schemathesis-consortium")
    nodes = {b: NodeProcess(base / "home", b, name=b) for b in ("BKA", "BKB")}
    accounts = make_home(
        base / "home",
        ["BKA", "BKB"],
        endpoints={b: [n.url] for b, n in nodes.items()},
        orderer="embedded",
    )
    for n in nodes.values():
        n.start()
    import httpx

    payer = accounts["BKA-000001"]
    reply = httpx.post(
        nodes["BKA"].url + "/v1/notes", content=payer.note("BKB-000001", 25), timeout=30
    )
    assert reply.status_code == 200 and reply.json()["outcome"] == "booked", reply.text
    yield nodes["BKA"]
    for n in nodes.values():
        n.close()
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
@pytest.mark.parametrize("signer", ["BKB", None], ids=["signed-by-a-peer", "as-generated"])
def test_consortium_routes_never_5xx(member, mode, signer):
    """The /v1/consortium/* routes of a member node (in its OpenAPI description only when the
    node is in a consortium): signed by a peer bank, and as generated."""
    schema = schemathesis.openapi.from_url(member.url + "/openapi.json")
    ops = [o for o in operations(schema) if o.path.startswith("/v1/consortium/")]
    assert len(ops) == 5, [o.label for o in ops]
    fuzz_node(member, ops, mode, signer)


def fuzz_node(node, ops, mode, signer: str | None) -> None:
    """Every operation in `ops` against `node`, signed by `signer` (or as generated), and no
    traceback in the node's log after."""
    session = requests.Session()
    if signer:
        session.auth = SignedAuth(auth.bank_signer(node.home, signer), "BKA")
    for op in ops:
        fuzz(
            op,
            mode,
            lambda c: c.call_and_validate(base_url=node.url, session=session, checks=CHECKS),
        )
    text = node.log_text()
    assert "Traceback" not in text and "internal error" not in text


@pytest.fixture(scope="module")
def replica(node, tmp_path_factory):
    """A hot backup of the fuzzed node."""
    base = tmp_path_factory.mktemp("schemathesis-replica")
    rep = NodeProcess(
        node.home, "BKA", str(base / "rep.db"), extra=["--replica-of", node.url], name="replica"
    ).start()
    yield rep
    rep.close()


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
@pytest.mark.parametrize("signer", ["BKA", None], ids=["signed-by-the-bank", "as-generated"])
def test_hot_backup_routes_never_5xx(replica, mode, signer):
    """A hot backup's own description (health, metrics, named records): signed by the bank,
    and as generated."""
    schema = schemathesis.openapi.from_url(replica.url + "/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    assert "POST /v1/backup/records" in [o.label for o in ops], [o.label for o in ops]
    fuzz_node(replica, ops, mode, signer)
