"""Probes of the token as its owner and a hostile host use it, on the real simulator: notes
kept past serial 10^8, power cut in the middle of a wipe, on-device flows."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from hubi import kmc
from hubi.token.client import TokenClient
from hubi.token.harness import TokenWorld
from hubi.token.provision import make_allowance
from hubi_core import codec
from hubi_core import protocol as P
from hubi_core.errors import ErrorReply, LinkError
from tests.test_token_kill import PowerCut, ops_of

pytestmark = pytest.mark.micropython
PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> TokenWorld:
    return TokenWorld(tmp_path_factory.mktemp("token-probe-flows"))


def _copy(world: TokenWorld, state: Path) -> Path:
    d = world.new_state()
    shutil.copytree(state / "flash", d / "flash")
    return d


def _allowance(world: TokenWorld, tok: TokenClient, first: int, serial: int) -> None:
    bank = kmc.load_bank_identity(world.home, "BKA")
    a = make_allowance(bank, PAYER, 100000, first, int(time.time()) + 86400, serial=serial)
    tok.load_allowance(codec.encode(a))


def test_notes_kept_by_serial_past_ten_to_the_eighth(world: TokenWorld) -> None:
    # the bank may start an allowance at any serial; the note files are named n%08d, whose
    # text order is not the serials' once they pass 10^8: the newest notes were deleted
    state = world.provisioned(PAYER)
    with world.running(state) as (_sim, tok):
        _allowance(world, tok, 99_999_995, 1 << 40)
        serials = []
        for i in range(10):
            tok.pay(world.request(PAYEE, 10 + i))
            serials.append(codec.decode(tok.confirm_pay("1234")).serial)
        assert serials == list(range(99_999_995, 100_000_005))
        assert [h["serial"] for h in tok.notes()] == serials[-8:]
        assert codec.decode(tok.note()).serial == serials[-1]
        for s in serials[-8:]:
            assert codec.decode(tok.note(s)).serial == s


def test_wipe_cut_after_the_key_leaves_no_notes(world: TokenWorld) -> None:
    state = world.provisioned(PAYER)
    with world.running(state) as (_sim, tok):
        tok.pay(world.request(PAYEE, 10))
        tok.confirm_pay("1234")
    dry = _copy(world, state)
    sim = world.sim(dry, "headless", trace=True).start()
    try:
        sim.wait_ready()
        with TokenClient.open(sim.port) as tok:
            tok.wipe("1234")
        ops = ops_of(sim)
    finally:
        sim.stop()
    # the step right after ks.bin is gone: the key is destroyed, the rest not yet
    k = next(n for n, op, name in ops if op == "remove" and name == "ks.bin.tmp") + 1
    cut = _copy(world, state)
    sim = world.sim(cut, "headless", kill_at=k).start()
    with PowerCut(sim) as pc:
        sim.wait_ready(60)
        with (
            TokenClient.open(sim.port, timeout_ms=60000, retries=0) as tok,
            pytest.raises((LinkError, OSError)),
        ):
            tok.wipe("1234")
        assert pc.cut.wait(60)
    with world.running(cut) as (_sim, tok):
        info = tok.info()
        assert info["state"] == "blank" and info["notes"] == 0
        assert tok.notes() == []
        with pytest.raises(ErrorReply) as e:
            tok.note()
        assert e.value.code == P.ERR_NOT_FOUND
    flash = cut / "flash"
    assert not (flash / "tpl.obj").exists() and not (flash / "hist").exists()
    assert not (flash / "trust").exists()


def test_screen_goes_home_after_a_refused_request(world: TokenWorld) -> None:
    # a request that failed left its flow's screen up (the PIN wheel, "Checking..."), dead to
    # the buttons; SHOW_BALANCE asked for the PIN before finding there was nothing to open
    state = world.provisioned(PAYER, profile="m5stack_core")
    with world.running(state, "m5stack_core") as (sim, tok):
        screen = sim.frames / "screen.png"
        sim.wait_for(screen.exists, 60, "the home screen")
        tok.info()
        home = screen.read_bytes()
        sim.press("pin: back")  # for the PIN change below; the balance must not take it
        with pytest.raises(ErrorReply) as e:
            tok.balance()
        assert e.value.code == P.ERR_NOT_FOUND
        assert screen.read_bytes() == home
        with pytest.raises(ErrorReply) as e:
            tok.change_pin()  # cancelled at "Current PIN"
        assert e.value.code == P.ERR_CANCELLED
        assert screen.read_bytes() == home
        sim.press("pin: 9 9 9 9 enter", "pin: 5 5 5 5 enter", "pin: 5 5 5 5 enter")
        with pytest.raises(ErrorReply) as e:
            tok.change_pin()
        assert e.value.code == P.ERR_PIN_WRONG
        assert screen.read_bytes() == home
        assert tok.info()["pin_tries_left"] == 9
        world.pay(sim, tok, world.request(PAYEE, 10), "1234")  # its QR stays on screen
        bad = bytearray(world.request(PAYEE, 11))
        bad[-1] ^= 1
        with pytest.raises(ErrorReply) as e:
            tok.pay(bytes(bad))
        assert e.value.code == P.ERR_VERIFY
        after = screen.read_bytes()
        sim.press("pin: back")
        with pytest.raises(ErrorReply) as e:
            tok.change_pin()  # its cancel draws the home screen
        assert e.value.code == P.ERR_CANCELLED
        assert after == screen.read_bytes()


def _receipt(world: TokenWorld, note: bytes, signer: str, amount: int | None = None) -> bytes:
    n = codec.decode(note, codec.NOTE)
    p = world.payee(signer)
    values = {
        "template": p.template,
        "amount": amount or n["amount"],
        "purpose": n.get("purpose"),
        "payer": n.signer,
        "note_id": codec.note_id(n.signer, n.serial),
    }
    rc = codec.Obj(codec.RECEIPT, signer, 5, int(time.time()), values)
    codec.sign(rc, p.private)
    return codec.encode(rc)


def test_receipt_only_from_the_notes_payee(world: TokenWorld) -> None:
    # any consortium account could sign a "receipt" for this token's note, and the note was
    # then listed as received by its payee
    state = world.provisioned(PAYER)
    with world.running(state) as (_sim, tok):
        tok.pay(world.request(PAYEE, 10))
        note = tok.confirm_pay("1234")
        for signer, amount, why in (
            ("BKB-000000000008", None, "is signed by BKB-000000000008, but the note pays"),
            (PAYEE, 999, "names another amount"),
        ):
            with pytest.raises(ErrorReply) as e:
                tok.load_notice(_receipt(world, note, signer, amount))
            assert e.value.code == P.ERR_VERIFY and why in e.value.text
            assert tok.notes()[0]["receipt"] is False
        assert tok.load_notice(_receipt(world, note, PAYEE))["kind"] == "Receipt"
        assert tok.notes()[0]["receipt"] is True


def test_power_cut_while_storing_a_note_does_not_pay_the_request_twice(world: TokenWorld) -> None:
    # the paid request was remembered after the note was stored: a cut in between, and the
    # same request (the host retries) was paid again with a second note and a second debit
    state = world.provisioned(PAYER)
    req = world.request(PAYEE, 10)
    dry = _copy(world, state)
    sim = world.sim(dry, "headless", trace=True).start()
    try:
        sim.wait_ready(60)
        with TokenClient.open(sim.port) as tok:
            tok.pay(req)
            tok.confirm_pay("1234")
        ops = ops_of(sim)
    finally:
        sim.stop()
    k = next(n for n, op, name in ops if op == "write" and name.startswith("hist/n"))
    cut = _copy(world, state)
    sim = world.sim(cut, "headless", kill_at=k).start()
    with PowerCut(sim) as pc:
        sim.wait_ready(60)
        with TokenClient.open(sim.port, timeout_ms=60000, retries=0) as tok:
            tok.pay(req)
            with pytest.raises((LinkError, OSError)):
                tok.confirm_pay("1234")
        assert pc.cut.wait(60)
    with world.running(cut) as (_sim, tok):
        info = tok.info()
        assert info["next_serial"] == 2 and info["allowance"]["spent"] == 10
        with pytest.raises(ErrorReply) as e:
            tok.pay(req)
        assert e.value.code == P.ERR_STATE and "already paid by note #1" in e.value.text
        tok.pay(world.request(PAYEE, 20))
        assert codec.decode(tok.confirm_pay("1234")).serial == 2


def test_damaged_files_between_runs(world: TokenWorld) -> None:
    # a removed pin.cnt read as "no failed tries": the attempt counter was reset to 10;
    # a damaged matrix header was an INTERNAL ValueError instead of naming the file
    state = world.provisioned(PAYER)
    with world.running(state) as (_sim, tok):
        tok.pay(world.request(PAYEE, 10))
        for _ in range(4):
            with pytest.raises(ErrorReply):
                tok.confirm_pay("0000")
        assert tok.info()["pin_tries_left"] == 6
    flash = state / "flash"
    (flash / "pin.cnt").unlink()
    mat = flash / "trust" / "BKB.pub"
    mat.write_bytes(mat.read_bytes()[:100])
    with world.running(state) as (_sim, tok):
        assert tok.info()["pin_tries_left"] == 1
        with pytest.raises(ErrorReply) as e:
            tok.pay(world.request(PAYEE, 10))
        assert e.value.code == P.ERR_VERIFY and "trust/BKB.pub" in e.value.text
        assert "damaged" in e.value.text
        tok.change_pin("1234", "1234")  # the right PIN still opens the key and resets
        assert tok.info()["pin_tries_left"] == 10
