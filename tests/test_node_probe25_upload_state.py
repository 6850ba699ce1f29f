"""An interbank note uploaded to a real bank node process (over a real etcd cluster) whose
consortium state file was removed or replaced while it ran. The read routes answered 503
consortium-unavailable naming the file; the upload answered 409 "consortium", which the merchant
takes as final (a 4xx note stays pending, never retried). It must be the same 503 (retry later),
with nothing booked or ordered, /health saying the same, and the note settles once the file is
back (removed case) and it is uploaded again.

The state is read by a request thread before the file is moved, so a thread that still holds a
connection to the old file must not answer from it either."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from hubi_core import codec, lsum
from tests.consortium_support import Consortium, copy_sqlite
from tests.servers import etcd_cluster  # noqa: F401

PAYEE_BANK = "BKB"


def _validate(c: Consortium, asker: str, note: bytes) -> httpx.Response:
    path = "/v1/consortium/validate"
    h = c.signer(asker).headers(PAYEE_BANK, "POST", path, None, note)
    h["content-type"] = "application/octet-stream"
    return c.http.post(c.url(PAYEE_BANK) + path, content=note, headers=h)


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_an_upload_to_a_node_whose_state_file_moved_gets_503_and_loses_nothing(
    etcd_cluster,  # noqa: F811
    tmp_path: Path,
    how: str,
) -> None:
    with Consortium(tmp_path / "c", etcd_cluster.client_urls, banks=["BKA", PAYEE_BANK]) as c:
        payer, payee = "BKA-000001", "BKB-000001"
        before = {a: c.balance(a) for a in (payer, payee)}
        c.status(PAYEE_BANK)  # a request thread opens the state before it moves
        state = c.home / "banks" / PAYEE_BANK / "consortium.db"
        aside = tmp_path / "aside.db"
        if how == "removed":
            os.rename(state, aside)
        else:  # an operator's restore of a backup without stopping the node
            copy_sqlite(state, aside)
            os.replace(aside, state)
        note = c.accounts[payer].note(payee, 7)
        for _ in range(3):  # every try, on whichever request thread
            r = c.upload(PAYEE_BANK, note)
            assert r.status_code == 503, (r.status_code, r.text[:400])
            body = r.json()
            assert body["error"] == "consortium-unavailable", body
            assert "replaced or removed" in body["message"], body
            assert str(state) in body["message"], body
        # a peer's validation request for it: no endorsement from the old file either
        for _ in range(3):
            r = _validate(c, "BKA", note)
            assert r.status_code == 503, (r.status_code, r.text[:400])
            assert r.json()["error"] == "consortium-unavailable", r.json()
        # /health says the same of the consortium
        doc = c.http.get(c.url(PAYEE_BANK) + "/health").json()
        assert doc["status"] == "degraded", doc
        assert "replaced or removed" in str(doc["detail"]["consortium"]["halted"]), doc
        # nothing booked at either bank, nothing ordered: the payer's bank has no entry for it
        assert {a: c.balance(a) for a in (payer, payee)} == before
        obj = codec.decode(note, codec.NOTE)
        nid = lsum.note_id(obj.signer, obj.serial).hex()
        path = f"/v1/consortium/entries/{nid}"
        r = c.http.get(c.url("BKA") + path, headers=c.signer("BKA").headers("BKA", "GET", path))
        assert r.status_code == 404, (r.status_code, r.text[:300])
        if how == "removed":  # the file put back: the same note uploaded again settles
            os.rename(aside, state)
            r = c.upload(PAYEE_BANK, note)
            assert r.status_code == 200, (r.status_code, r.text[:400])
            assert r.json()["outcome"] == "booked", r.json()
            c.wait_caught_up()
            assert c.balance(payer) == before[payer] - 7
            assert c.balance(payee) == before[payee] + 7
