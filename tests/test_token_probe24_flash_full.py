"""The token's flash full (a real tmpfs of a fixed size under the simulator's flash folder):
a flow on the device's buttons ended the firmware with "OSError: 28"; over the link the note,
signed and its serial used, was lost with "OSError ... 28" while its request counted as paid
(and, with one page left, went out with no copy kept: now refused before it is signed).
Real simulator (MicroPython unix port)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hubi.token.harness import TokenWorld
from hubi.token.sim import Simulator
from hubi_core import codec
from hubi_core import protocol as P
from hubi_core.errors import ErrorReply
from hubi_core.verify import verify_object
from tests.small_disk import resize, small_disk

pytestmark = pytest.mark.micropython
PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"
PAGE = 4096
DISK = 1 << 20


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> TokenWorld:
    return TokenWorld(tmp_path_factory.mktemp("token-probe24-full"))


@contextmanager
def _full_flash(state: Path, pages_free: int) -> Iterator[Path]:
    """The token's flash (state/flash) moved onto a small disk with `pages_free` pages left."""
    saved = state.parent / (state.name + "-flash")
    shutil.move(state / "flash", saved)
    with small_disk(state / "flash", DISK) as flash:
        shutil.copytree(saved, flash, dirs_exist_ok=True)
        st = os.statvfs(flash)
        (flash / "filler").write_bytes(bytes(st.f_bfree * st.f_frsize - pages_free * PAGE))
        assert os.statvfs(flash).f_bfree == pages_free
        yield flash


def _typed_payment(sim: Simulator, amount: str) -> None:
    sim.press(
        "home: ok",  # Pay
        "menu: down ok",  # bank BKB
        "text: 0 0 0 0 0 0 0 0 0 0 0 7 enter",
        "amount: " + " ".join(amount) + " enter",
        "confirm: ok",
        "pin: 1 2 3 4 enter",
    )


def test_flash_full_on_the_device_keeps_the_token_running(world: TokenWorld) -> None:
    state = world.provisioned(PAYER, profile="m5stack_core")
    with _full_flash(state, 0) as flash, world.running(state, "m5stack_core") as (sim, tok):
        before = tok.info()
        _typed_payment(sim, "12")
        # the PIN try cannot be counted: nothing is checked, nothing signed; the owner sees
        # an error on the screen and the token goes on serving
        sim.wait_for((flash / "pin.cnt.tmp").exists, 60, "the PIN try's failed write")
        info = tok.info()  # GET_INFO is answered while the error is on the screen
        assert info["next_serial"] == before["next_serial"] == 1
        assert info["pin_tries_left"] == 10 and info["notes"] == 0
        sim.press("message: ok")
        resize(flash, DISK + 16 * PAGE)  # room again: the same flow signs note #1
        _typed_payment(sim, "13")
        sim.wait_for(lambda: tok.info()["notes"] == 1, 60, "the typed payment")
        note = tok.note()
        assert verify_object(note, world.trust).ok
        n = codec.decode(note, codec.NOTE)
        assert (n.serial, n["amount"], n["payee"]) == (1, 1300, PAYEE)  # typed in major units
        assert sim.running()


def test_flash_full_over_the_link_names_it_and_never_loses_a_signed_note(
    world: TokenWorld,
) -> None:
    state = world.provisioned(PAYER)
    with _full_flash(state, 0) as flash, world.running(state) as (sim, tok):
        req = world.request(PAYEE, 100)
        tok.pay(req)
        with pytest.raises(ErrorReply) as e:
            tok.confirm_pay("1234")
        assert e.value.code == P.ERR_STORAGE and "the flash is full" in e.value.text
        assert tok.info()["next_serial"] == 1
        # one page: the counter and the paid request fit, this token's copy of the note not;
        # the note went out with no copy kept (it had been lost with INTERNAL "OSError 28"):
        # now the room for the note is held before its serial is used, and nothing is signed
        (flash / "filler").unlink()
        st = os.statvfs(flash)
        (flash / "filler").write_bytes(bytes(st.f_bfree * st.f_frsize - PAGE))
        with pytest.raises(ErrorReply) as e:
            tok.confirm_pay("1234")  # the payment still waits for its PIN
        assert e.value.code == P.ERR_STORAGE and "flash is full" in e.value.text
        info = tok.info()
        assert info["next_serial"] == 1 and info["allowance"]["spent"] == 0, info
        resize(flash, DISK + 16 * PAGE)
        tok.pay(req)  # that refusal ended the payment: the request is not paid, asked again
        note = tok.confirm_pay("1234")
        assert verify_object(note, world.trust).ok
        n = codec.decode(note, codec.NOTE)
        assert (n.serial, n["amount"]) == (1, 100)
        assert tok.info()["allowance"]["spent"] == 100
        with pytest.raises(ErrorReply) as e:
            tok.pay(req)
        assert "already paid by note #1" in e.value.text
        tok.pay(world.request(PAYEE, 20))
        n2 = codec.decode(tok.confirm_pay("1234"), codec.NOTE)
        assert n2.serial == 2
        assert [h["serial"] for h in tok.notes()] == [1, 2]
        assert sim.running()
