"""Two consortium members for one bank on one consortium state file: the first node on the
bank's database, the second given a --db of its own (a copy of the books) while its state
file stayed at the default, HOME/banks/<BANK>/consortium.db.

Both used to start and race for every log event: each event was booked in whichever member's
bank database won, so each database held part of the settled notes (in a probe, 40 interbank
debits of BKA: 27 register entries in one database, 49 in the other, both audited clean, the
consortium saying all 60 notes settled). The second member is now refused at start, naming
the node that holds the state file; the lock goes with the first node, even when killed -9.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from hubi import kmc as kmc_mod
from hubi.consortium import service
from tests.bank_nodes import REPO, NodeProcess
from tests.consortium_support import make_home

pytestmark = pytest.mark.xdist_group("test_bank_probe27_two_nodes_consortium")


def test_second_member_on_one_state_file_is_refused(tmp_path):
    home = tmp_path / "home"
    made: list[NodeProcess] = []

    def node(**kw) -> NodeProcess:
        n = NodeProcess(home, "BKA", **kw)
        made.append(n)
        return n

    try:
        first = node(name="first")
        make_home(home, ["BKA", "BKB"], accounts=1, endpoints={"BKA": [first.url]})
        log = str(home / "consortium" / "log.db")
        for bank in ("BKA", "BKB"):
            service.write_config(home, bank, service.NodeConfig("embedded", path=log))
        bdir = kmc_mod.bank_dir(home, "BKA")
        shutil.copy(bdir / "bank.db", bdir / "copy.db")
        first.start()
        twin = node(db=str(bdir / "copy.db"), name="twin")
        with pytest.raises(RuntimeError, match="bank node exited") as err:
            twin.start()
        why = str(err.value)
        assert f"pid {first.pid}" in why and str(bdir / "consortium.db") in why, why
        assert "already applies the consortium log for bank BKA" in why, why
        # killed -9, the first member leaves no lock behind
        first.kill9()
        twin.start()
        assert twin.health()["status"] == "ok"
        assert twin.stop() == 0
        r = subprocess.run(
            [str(REPO / ".venv/bin/hubi"), "audit", "verify", "--db", str(bdir / "copy.db")]
            + ["--home", str(home)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        for n in made:
            n.close()
