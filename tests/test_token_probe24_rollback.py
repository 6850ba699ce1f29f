"""A ctr.bin rolled back to an older copy of its own carries a good tag: the token must not
sign a serial it already used. The notes it keeps (hist/) and the requests it paid show the
serials used; at boot the counter moves past them (and the log says so), and a counter read
as damaged never restarts below them. Real simulator (MicroPython unix port)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hubi import kmc
from hubi.token.harness import TokenWorld
from hubi.token.provision import make_allowance
from hubi_core import codec
from hubi_core import protocol as P
from hubi_core.errors import ErrorReply
from hubi_core.verify import verify_object
from tests.mpy import run_mpy

pytestmark = pytest.mark.micropython
PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> TokenWorld:
    return TokenWorld(tmp_path_factory.mktemp("token-probe24-rollback"))


def _serial(world: TokenWorld, note: bytes) -> int:
    assert verify_object(note, world.trust).ok
    return codec.decode(note, codec.NOTE).serial


def test_rolled_back_counter_moves_past_the_kept_notes(world: TokenWorld) -> None:
    state = world.provisioned(PAYER)
    ctr = state / "flash" / "ctr.bin"
    first_copy = ctr.read_bytes()  # as provisioned: next serial 1
    notes = []
    with world.running(state) as (_sim, tok):
        tok.pay(world.request(PAYEE, 100))
        notes.append(tok.confirm_pay("1234"))
        second_copy = ctr.read_bytes()  # after note 1: next serial 2
        for amount in (200, 300):
            tok.pay(world.request(PAYEE, amount))
            notes.append(tok.confirm_pay("1234"))
    assert [_serial(world, n) for n in notes] == [1, 2, 3]
    for old in (second_copy, first_copy):
        ctr.write_bytes(old)  # the owner restores an older copy of the token's own file
        with world.running(state) as (sim, tok):
            assert tok.info()["next_serial"] == len(notes) + 1
            tok.pay(world.request(PAYEE, 50))
            notes.append(tok.confirm_pay("1234"))
            assert "moved to #%d" % (len(notes)) in sim.tail(10**6)
            # nothing already signed is lost
            assert [h["serial"] for h in tok.notes()] == list(range(1, len(notes) + 1))
            for n in notes:
                assert tok.note(codec.decode(n).serial) == n
    serials = [_serial(world, n) for n in notes]
    assert serials == [1, 2, 3, 4, 5] and len(set(serials)) == len(serials)
    with world.running(state) as (sim, tok):  # moved for good: no second move
        assert tok.info()["next_serial"] == 6
        assert "moved to" not in sim.tail(10**6)


def test_damaged_counter_and_a_low_first_serial_sign_no_kept_serial(world: TokenWorld) -> None:
    # notes 1-3 are on the token, not yet uploaded; ctr.bin is damaged; the bank, which knows
    # only note 1, loads an allowance from serial 2: serials 2 and 3 must not be signed again
    state = world.provisioned(PAYER)
    notes = []
    with world.running(state) as (_sim, tok):
        for amount in (100, 200, 300):
            tok.pay(world.request(PAYEE, amount))
            notes.append(tok.confirm_pay("1234"))
    ctr = state / "flash" / "ctr.bin"
    raw = bytearray(ctr.read_bytes())
    raw[12] ^= 0x40
    ctr.write_bytes(bytes(raw))
    with world.running(state) as (_sim, tok):
        with pytest.raises(ErrorReply) as e:
            tok.pay(world.request(PAYEE, 100))
        assert e.value.code == P.ERR_STORAGE and "serial counter is damaged" in e.value.text
        bank = kmc.load_bank_identity(world.home, "BKA")
        a = make_allowance(bank, PAYER, 5000, 2, int(time.time()) + 3600, serial=1 << 41)
        tok.load_allowance(codec.encode(a))
        assert tok.info()["next_serial"] == 4
        tok.pay(world.request(PAYEE, 40))
        notes.append(tok.confirm_pay("1234"))
        assert [h["serial"] for h in tok.notes()] == [1, 2, 3, 4]
    assert [_serial(world, n) for n in notes] == [1, 2, 3, 4]


def test_paid_requests_count_as_used_serials(world: TokenWorld) -> None:
    # a power cut after the paid request was recorded but before the note was kept leaves the
    # serial only in the paid list: a rolled-back counter must not sign it again
    state = world.provisioned(PAYER)
    ctr = state / "flash" / "ctr.bin"
    before = ctr.read_bytes()
    with world.running(state) as (_sim, tok):
        tok.pay(world.request(PAYEE, 100))
        first = tok.confirm_pay("1234")
    for p in (state / "flash" / "hist").glob("n*"):
        p.unlink()  # the note itself is gone; hist/paid still names serial 1
    assert (state / "flash" / "hist" / "paid").exists()
    ctr.write_bytes(before)
    with world.running(state) as (_sim, tok):
        tok.pay(world.request(PAYEE, 20))
        assert _serial(world, tok.confirm_pay("1234")) == 2
    assert _serial(world, first) == 1


def test_planted_note_names_do_not_break_the_counter(world: TokenWorld) -> None:
    # names that are not u64 serials (too big, negative, not numbers) are not serials used:
    # the token boots and pays, and a name past 2^64 does not overflow ctr.bin
    state = world.provisioned(PAYER)
    hist = state / "flash" / "hist"
    hist.mkdir(exist_ok=True)
    for name in ("n" + "9" * 25, "n-5", "nabc", "n18446744073709551615"):
        (hist / name).write_bytes(b"junk")
    with world.running(state) as (_sim, tok):
        assert tok.info()["next_serial"] == 1
        tok.pay(world.request(PAYEE, 20))
        assert _serial(world, tok.confirm_pay("1234")) == 1


_SIGN_AFTER_RUNTIME_ROLLBACK = """
import sys
from hal import Clock, Rng
from hal.storage import FsStorage
from core.keystore import Keystore
from core.wallet import Wallet
from core import pay, paysign

st = FsStorage(sys.argv[1])
w = Wallet(st, Keystore(st, Rng(), Clock(), 1000, 40), Clock(), {})
w.boot()
w.counter.next_serial = 2  # the counter went back while the token runs
p = pay.prepare_typed(w, sys.argv[2], 10)
raw = paysign.sign(w, p, w.ks.unlock("1234"))
print(raw.hex())
print(w.counter.next_serial)
"""


def test_sign_never_uses_a_kept_serial(world: TokenWorld, tmp_path: Path) -> None:
    # the last guard, in the signer itself: whatever the counter says, no serial at or
    # below one this token keeps is signed (the firmware core, under MicroPython)
    state = world.provisioned(PAYER)
    with world.running(state) as (_sim, tok):
        for amount in (100, 200, 300):
            tok.pay(world.request(PAYEE, amount))
            tok.confirm_pay("1234")
    script = tmp_path / "sign.py"
    script.write_text(_SIGN_AFTER_RUNTIME_ROLLBACK)
    out = run_mpy(script=script, args=[str(state / "flash"), PAYEE]).splitlines()
    assert _serial(world, bytes.fromhex(out[0])) == 4
    assert out[1] == "5"
    with world.running(state) as (_sim, tok):
        assert [h["serial"] for h in tok.notes()] == [1, 2, 3, 4]
        assert tok.info()["next_serial"] == 5
