"""The token's state files damaged or its flash full (stop 29), on the real simulator (MicroPython
unix port), a full flash being a real small tmpfs (tests/small_disk.py).

What was broken: a zero-length hist/paid (files are written atomically, so that is damage) read as
"nothing paid": a request already paid was paid again; a zero-length trust/keys.bin read as "no
trust files on the token (provision it)", which a provisioned token cannot do. At the first
payment a flash with one page free took the counter and the paid request, and the note went out
with no copy kept (a stray empty hist/n00000001.tmp). A wipe stopped after the key went left the
running token blank with a transport key that was on no flash, while the next boot said otherwise.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from hubi.token.client import TokenClient
from hubi.token.harness import TokenWorld
from hubi_core import codec
from hubi_core import protocol as P
from hubi_core.errors import ErrorReply
from hubi_core.verify import verify_object
from tests.test_token_probe28_storage import _fill, _on_small_disk

pytestmark = [pytest.mark.micropython, pytest.mark.xdist_group("test_token_probe29_flash")]
PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"
FULL = "the flash is full"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> TokenWorld:
    return TokenWorld(tmp_path_factory.mktemp("token-probe29-flash"))


def _refused(call: object, code: int = P.ERR_STORAGE) -> str:
    with pytest.raises(ErrorReply) as e:
        call()  # type: ignore[operator]
    assert e.value.code == code, str(e.value)
    return e.value.text


def _digests(flash: Path) -> dict[str, str]:
    return {
        str(p.relative_to(flash)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(flash.rglob("*"))
        if p.is_file()
    }


def _pay(world: TokenWorld, tok: TokenClient, request: bytes) -> bytes:
    tok.pay(request)
    note = tok.confirm_pay("1234")
    assert verify_object(note, world.trust).ok
    return note


def test_zero_length_paid_history_stops_the_token_until_it_is_back(world: TokenWorld) -> None:
    """A damaged hist/paid is the STORAGE fault naming it: the request it lists is never paid
    again, nothing on the flash is written over, and with the file back the token pays on."""
    state = world.provisioned(PAYER)
    req = world.request(PAYEE, 100)
    with world.running(state) as (_sim, tok):
        assert codec.decode(_pay(world, tok, req), codec.NOTE).serial == 1
    paid = state / "flash" / "hist" / "paid"
    original = paid.read_bytes()
    paid.write_bytes(b"")
    kept = _digests(state / "flash")
    with world.running(state) as (_sim, tok):
        for call in (tok.info, lambda: tok.pay(req), lambda: tok.note(1)):
            text = _refused(call)
            assert "hist/paid damaged" in text and "0 bytes" in text, text
        assert _digests(state / "flash") == kept
        paid.write_bytes(original)
        assert tok.info()["state"] == "ready"  # the same running token, file back
        assert "already paid by note #1" in _refused(lambda: tok.pay(req), P.ERR_STATE)
        n = codec.decode(_pay(world, tok, world.request(PAYEE, 5)), codec.NOTE)
        assert n.serial == 2


def test_zero_length_trust_keys_is_a_storage_error_not_provision_it(world: TokenWorld) -> None:
    """A damaged trust/keys.bin refuses what needs trust with STORAGE naming the file (never
    "provision it": a provisioned token cannot be), the rest of the token works."""
    state = world.provisioned(PAYER)
    keys = state / "flash" / "trust" / "keys.bin"
    original = keys.read_bytes()
    keys.write_bytes(b"")
    with world.running(state) as (_sim, tok):
        assert tok.info()["state"] == "ready"
        text = _refused(lambda: tok.pay(world.request(PAYEE, 100)))
        assert "trust/keys.bin damaged" in text and "0 bytes" in text, text
        assert tok.info()["next_serial"] == 1
        keys.unlink()
        assert "trust/keys.bin missing" in _refused(lambda: tok.pay(world.request(PAYEE, 100)))
        keys.write_bytes(original)
        assert codec.decode(_pay(world, tok, world.request(PAYEE, 100)), codec.NOTE).serial == 1


def test_first_payment_on_a_flash_that_cannot_keep_the_note_signs_nothing(
    world: TokenWorld,
) -> None:
    """One page free at the first payment: the counter and the paid request fit, the note's copy
    would not. The payment is refused STORAGE with nothing spent and no file left behind; with
    one more page the note comes out and is kept, and so is every later note."""
    state = world.provisioned(PAYER)
    with _on_small_disk(state) as flash, world.running(state) as (sim, tok):
        req = world.request(PAYEE, 100)
        _fill(flash, 1)
        before = _digests(flash)
        tok.pay(req)
        assert FULL in _refused(lambda: tok.confirm_pay("1234"))
        info = tok.info()
        assert (info["next_serial"], info["allowance"]["spent"], info["notes"]) == (1, 0, 0)
        empty = hashlib.sha256(b"").hexdigest()  # a failed write's temp file (hal.storage)
        after = {k: v for k, v in _digests(flash).items() if k != "pin.cnt"}  # the PIN try
        assert {k: v for k, v in after.items() if v != empty} == {
            k: v for k, v in before.items() if k != "pin.cnt"
        }
        _fill(flash, 2)
        note = _pay(world, tok, req)
        assert codec.decode(note, codec.NOTE).serial == 1
        assert tok.note(1) == note and tok.info()["allowance"]["spent"] == 100
        for pages in (1, 2, 1, 0, 2):  # later payments: every note that comes out is kept
            _fill(flash, pages)
            before_info = tok.info()
            try:
                note = _pay(world, tok, world.request(PAYEE, 7))
            except ErrorReply as e:
                assert e.code == P.ERR_STORAGE and FULL in e.text, str(e)
                after_info = tok.info()
                assert after_info["next_serial"] == before_info["next_serial"]
                assert after_info["allowance"] == before_info["allowance"]
                continue
            n = codec.decode(note, codec.NOTE)
            assert n.serial == before_info["next_serial"]
            assert tok.note(n.serial) == note
        assert not [p for p in (flash / "hist").iterdir() if p.name.endswith(".tmp")]
        assert sim.running()


def test_paid_request_that_does_not_fit_after_the_counter_gives_the_serial_back(
    world: TokenWorld,
) -> None:
    """ctr.bin hard-linked (a second name on the same disk): its old copy keeps its page, so
    with two pages free the note's room and the new counter take both and the paid request
    finds none. Nothing was signed with the serial: the counter goes back to what it was on
    flash too (a restart says the same), and with room the same request pays with serial 1."""
    state = world.provisioned(PAYER)
    with _on_small_disk(state) as flash:
        (flash / "keep").mkdir()
        os.link(flash / "ctr.bin", flash / "keep" / "ctr.bin")
        req = world.request(PAYEE, 100)
        with world.running(state) as (_sim, tok):
            _fill(flash, 2)
            tok.pay(req)
            assert FULL in _refused(lambda: tok.confirm_pay("1234"))
            info = tok.info()
            assert (info["next_serial"], info["allowance"]["spent"], info["notes"]) == (1, 0, 0)
        with world.running(state) as (_sim, tok):
            info = tok.info()
            assert (info["next_serial"], info["allowance"]["spent"]) == (1, 0)
            shutil.rmtree(flash / "keep")
            (flash / "filler").unlink()
            note = _pay(world, tok, req)
            assert codec.decode(note, codec.NOTE).serial == 1 and tok.note(1) == note


def test_wipe_of_a_blank_token_on_a_full_flash_keeps_the_transport_key_on_flash(
    world: TokenWorld,
) -> None:
    """The wipe cannot write its new transport key: it says the wipe is not finished, and the
    running token offers the key its flash holds, the one the next boot offers too."""
    state = world.new_state()
    state.mkdir(parents=True)
    with _on_small_disk(state) as flash:
        with world.running(state) as (_sim, tok):
            key = tok.info()["transport_key"]
            _fill(flash, 0)
            text = _refused(lambda: tok.wipe())
            info = tok.info()
            assert (info["state"], info["transport_key"]) == ("blank", key)
            assert "wipe not finished" in text and FULL in text, text
        with world.running(state) as (_sim, tok):
            assert tok.info()["transport_key"] == key


def test_wipe_stopped_after_the_key_went_agrees_with_the_next_boot(world: TokenWorld) -> None:
    """A provisioned token whose new transport key cannot be written (dev.bin.tmp a folder: the
    flash refuses the write): the key and the account's files are gone, the running token is
    in the STORAGE fault exactly as a restarted one is, and once the flash takes the file it is
    blank, provisioned again and pays."""
    state = world.provisioned(PAYER)
    with world.running(state) as (_sim, tok):
        _pay(world, tok, world.request(PAYEE, 100))
    stuck = state / "flash" / "dev.bin.tmp"
    stuck.mkdir()
    (stuck / "x").write_bytes(b"x")
    with world.running(state) as (_sim, tok):
        text = _refused(lambda: tok.wipe("1234"))
        said = _refused(tok.info)
        assert "wipe not finished" in text and "a flash error" in text, text
        assert not (state / "flash" / "ks.bin").exists()
        assert not (state / "flash" / "hist").exists()
    with world.running(state) as (_sim, tok):
        assert _refused(tok.info) == said  # the next boot says the same
        shutil.rmtree(stuck)
        info = tok.info()
        assert info["state"] == "blank" and info["transport_key"], info
        world.provision(tok, PAYER, "1234")
        n = codec.decode(_pay(world, tok, world.request(PAYEE, 9)), codec.NOTE)
        assert n.serial == 2  # ctr.bin survives a wipe: the serials go on


def test_tenth_wrong_pin_wipe_stopped_by_the_flash_agrees_with_the_next_boot(
    world: TokenWorld,
) -> None:
    """The wipe of the tenth wrong PIN stopped after the key went (dev.bin.tmp a folder): the
    reply still says WIPED, and the running token says STORAGE as a restarted one does (it was
    "blank" with a transport key on no flash, and the reply a bare STORAGE)."""
    state = world.provisioned(PAYER)
    stuck = state / "flash" / "dev.bin.tmp"
    stuck.mkdir()
    (stuck / "x").write_bytes(b"x")
    with world.running(state, settings={"pin_backoff_ms": 1}) as (_sim, tok):
        tok.pay(world.request(PAYEE, 100))
        for _ in range(9):
            _refused(lambda: tok.confirm_pay("0000"), P.ERR_PIN_WRONG)
        _refused(lambda: tok.confirm_pay("0000"), P.ERR_WIPED)
        said = _refused(tok.info)
        assert "a flash error" in said and not (state / "flash" / "ks.bin").exists()
    with world.running(state) as (_sim, tok):
        assert _refused(tok.info) == said
        shutil.rmtree(stuck)
        info = tok.info()
        assert info["state"] == "blank" and info["transport_key"], info


def test_wipe_on_the_device_stopped_by_the_flash_leaves_the_token_as_its_flash(
    world: TokenWorld,
) -> None:
    """The same stopped wipe from a screen board's menu: the firmware keeps running, shows the
    refusal, and its link says STORAGE, as after a restart; it was "blank" before."""
    board = "m5stack_core"
    state = world.provisioned(PAYER, profile=board)
    stuck = state / "flash" / "dev.bin.tmp"
    stuck.mkdir()
    (stuck / "x").write_bytes(b"x")
    with world.running(state, board) as (sim, tok):
        sim.press("home: up", "menu: ok", "confirm: ok", "pin: 1 2 3 4 enter")

        def stopped() -> bool:
            try:
                tok.info()
            except ErrorReply as e:
                return e.code == P.ERR_STORAGE
            return False

        sim.wait_for(lambda: not (state / "flash" / "ks.bin").exists(), 60, "the wipe")
        sim.wait_for(stopped, 20, "the STORAGE fault after the stopped wipe")
        said = _refused(tok.info)
        sim.press("message: ok")
        assert sim.running()
    with world.running(state, board) as (_sim, tok):
        assert _refused(tok.info) == said
