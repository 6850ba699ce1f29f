"""Another program holds the outbox's write lock (a `sqlite3` shell left in a transaction, a
second tool) past the busy wait while a scan runs: `hubi merchant scan --json` ended in a
traceback of sqlite3.OperationalError ("database is locked"), printed no JSON, and exited 1, the
status of "some note refused". Every outbox write now names the outbox instead (MerchantError,
which the commands report; exit status 2).

The CLI's wait is 30 s (measured: the scan's traceback came at 34 s), too long for a test: the
same real connection is given a short busy wait here, and the lock is held by another SQLite
connection, as another process would hold it."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from hubi.merchant import MerchantError

from .test_merchant_support import make_shop

pytestmark = pytest.mark.xdist_group("test_merchant_probe27_locked_outbox")


def test_a_write_lock_held_elsewhere_is_named_not_a_traceback(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    payer = shop.payer()
    now = int(time.time())
    with shop.merchant() as m:
        serial = m.request(1250, purpose="coffee", expires=600, now=now - 5).serial
        m.outbox.db.execute("PRAGMA busy_timeout = 200")
        holder = sqlite3.connect(str(m.outbox.path), isolation_level=None, timeout=0.1)
        holder.execute("BEGIN IMMEDIATE")  # the other program's write transaction
        try:
            note = payer.note(1250, time=now)
            with pytest.raises(MerchantError) as err:
                m.accept(note)
            said = str(err.value)
            assert str(m.outbox.path) in said and "database is locked" in said, said
            assert "write lock for 0.2 s" in said, said
            with pytest.raises(MerchantError, match="cannot write to the outbox"):
                m.request(100)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        res = m.accept(note)  # the lock gone, the same note is kept: nothing was half-written
        assert res.ok and res.request_serial == serial, res.verdict.reason
        assert m.outbox.reject_count() == 0
