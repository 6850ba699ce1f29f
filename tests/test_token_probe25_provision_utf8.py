"""A provisioning bundle whose consortium.json is not UTF-8 (the bundle seals its digest, so
only a damaged or hostile provisioning host can send one): the host's loader refuses such a
file by name; the token said only "consortium file: " with an empty reason. It now names it,
and stays blank and provisionable."""

from __future__ import annotations

import time

import pytest

from hubi.token import provision as prov
from hubi.token.harness import TokenWorld
from hubi_core import protocol as P
from hubi_core.errors import ErrorReply

pytestmark = pytest.mark.micropython
PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"


def test_a_consortium_file_that_is_not_utf8_is_named(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    world = TokenWorld(tmp_path_factory.mktemp("token-probe25-utf8"))
    state = world.new_state()
    with world.running(state) as (_sim, tok):
        files = prov.trust_files(world.home)
        bad = b"\xff" + files["consortium.json"]  # a stray byte before the JSON
        for name, data in {**files, "consortium.json": bad}.items():
            tok.upload_file(name, data)
        issued = prov.issue(world.home, PAYER)
        tk = bytes.fromhex(tok.info()["transport_key"])
        blob = prov.seal_bundle(tk, issued, "1234", bad, None, int(time.time()))
        with pytest.raises(ErrorReply) as e:
            tok.provision_commit(blob)
        assert e.value.code == P.ERR_PROVISION
        assert e.value.text == "consortium file is not UTF-8 text"
        assert tok.info()["state"] == "blank"
        # nothing was installed: the right files make the same token ready
        out = prov.provision(tok, world.home, PAYER, "1234", 5000)
        assert out["state"] == "ready"
        tok.pay(world.request(PAYEE, 100))
        assert tok.confirm_pay("1234")
