"""A key learnt from a presented Template must not outlive the account's opening.

A caller the node does not know may sign with the key of a Template it presents in
X-Hubi-Template. The node cached that key under the account id, and later requests without the
header took the cached key without looking at the books: once the bank opened the account under
another Template it sealed (a re-issue after a lost key), the holder of the older key still read
the account's notices and book, and its owner, signing with the opened Template's key, was
refused (bad-signature) until the node restarted."""

from __future__ import annotations

import time

import pytest

from hubi import kmc as kmc_mod
from hubi.bank import auth
from hubi.bank.client import BankClient, BankError
from hubi_core import codec
from tests import bank_nodes
from tests.bank_nodes import prepare_bank

pytestmark = pytest.mark.xdist_group("test_bank_probe27_key_cache")

bank_world = bank_nodes.bank_world
nodes = bank_nodes.nodes

ACCOUNT = "BKA-000078"


def test_presented_template_key_is_not_kept_past_the_opening(bank_world, nodes, tmp_path):
    home = bank_world.home
    db = str(tmp_path / "bka.db")
    prepare_bank(home, "BKA", db, accounts=1, funds=0)
    node = nodes(home, "BKA", db).start()
    kmc = kmc_mod.load_kmc(home, "BKA")
    ident = kmc_mod.load_bank_identity(home, "BKA")
    now = int(time.time())
    # two Templates the bank sealed for one account: the first one's keeper lost it, the
    # account is opened under the second
    old_key, old_tpl = kmc_mod.issue_account(kmc, ident, ACCOUNT, 900, now)
    new_key, new_tpl = kmc_mod.issue_account(kmc, ident, ACCOUNT, 901, now)
    presenting = BankClient(node.url, auth.Signer(ACCOUNT, old_key, codec.encode(old_tpl)))
    assert presenting.notices(ACCOUNT) == []  # not open yet: its Template is accepted

    BankClient(node.url, bank_world.bank_signer("BKA")).open_account(codec.encode(new_tpl))
    # its owner gets in (the cached old key refused it: bad-signature)
    owner = BankClient(node.url, auth.Signer(ACCOUNT, new_key))
    assert owner.account(ACCOUNT)["length"] == 0

    # the old key, with or without its Template, is not the open account's key any more
    for signer in (
        auth.Signer(ACCOUNT, old_key),
        auth.Signer(ACCOUNT, old_key, codec.encode(old_tpl)),
    ):
        with pytest.raises(BankError) as err:
            BankClient(node.url, signer).notices(ACCOUNT)
        assert (err.value.status, err.value.code) == (401, "bad-signature"), err.value
        with pytest.raises(BankError) as err:
            BankClient(node.url, signer).book(ACCOUNT)
        assert (err.value.status, err.value.code) == (401, "bad-signature"), err.value
    assert owner.notices(ACCOUNT) == []
