"""The screen token's buttons, pressed oddly: UP OK OK from the home menu wiped the token
without its PIN (Wipe is one UP away), Balance asked for the PIN with nothing to open, a
script line that is not UTF-8 ended the simulator; random presses never end the firmware.
Real simulator (MicroPython unix port, m5stack_core profile)."""

from __future__ import annotations

import random
import re

import pytest

from hubi.token.harness import TokenWorld
from hubi.token.sim import Simulator
from hubi_core import codec
from hubi_core import protocol as P
from hubi_core.errors import ErrorReply
from hubi_core.verify import verify_object

pytestmark = pytest.mark.micropython
PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"
BOARD = "m5stack_core"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> TokenWorld:
    return TokenWorld(tmp_path_factory.mktemp("token-probe24-ui"))


def _taken(sim: Simulator) -> int:
    """Events the scripted input took so far (the driver logs it when its queue is empty)."""
    found = re.findall(r"script: all (\d+) events taken", sim.tail(10**7))
    return int(found[-1]) if found else 0


def _press(sim: Simulator, total: int, *lines: str) -> None:
    """Press, and wait until the firmware took every event pressed so far (`total`)."""
    sim.press(*lines)
    sim.wait_for(lambda: _taken(sim) >= total, 60, f"{total} events taken")


def test_wipe_from_the_menu_needs_the_pin(world: TokenWorld) -> None:
    state = world.provisioned(PAYER, profile=BOARD)
    with world.running(state, BOARD) as (sim, tok):
        _press(sim, 4, "home: up", "menu: ok", "confirm: ok", "pin: back")  # PIN asked: cancelled
        info = tok.info()
        assert info["state"] == "ready" and info["pin_tries_left"] == 10
        _press(sim, 13, "home: up", "menu: ok", "confirm: ok", "pin: 9 9 9 9 enter", "pin: back")
        info = tok.info()
        assert info["state"] == "ready" and info["pin_tries_left"] == 9
        # the owner's PIN wipes
        sim.press("home: up", "menu: ok", "confirm: ok", "pin: 1 2 3 4 enter")
        sim.wait_for(lambda: tok.info()["state"] == "blank", 60, "the wipe")
        assert tok.info()["notes"] == 0


def test_wipe_over_the_link_on_a_screen_token_needs_the_pin(world: TokenWorld) -> None:
    state = world.provisioned(PAYER, profile=BOARD)
    with world.running(state, BOARD) as (sim, tok):
        sim.press("confirm: ok", "pin: back")
        with pytest.raises(ErrorReply) as e:
            tok.wipe()
        assert e.value.code == P.ERR_CANCELLED
        assert tok.info()["state"] == "ready"
        sim.press("confirm: ok", "pin: 1 2 3 4 enter")
        tok.wipe()
        assert tok.info()["state"] == "blank"


def test_balance_without_a_notice_does_not_ask_for_the_pin(world: TokenWorld) -> None:
    state = world.provisioned(PAYER, profile=BOARD)
    with world.running(state, BOARD) as (sim, tok):
        # Balance is the fourth item; the owner reads "no balance notice loaded" and goes on
        _press(sim, 5, "home: down", "menu: down down ok", "message: ok")
        sim.wait_for(lambda: _notes_answered(tok), 60, "the token free again")
        assert tok.info()["pin_tries_left"] == 10


def _notes_answered(tok) -> bool:  # noqa: ANN001 - a TokenClient
    """NOTE_LIST is refused BUSY while a flow on the buttons waits (the PIN wheel)."""
    try:
        return tok.notes() == []
    except ErrorReply as e:
        assert e.code == P.ERR_BUSY, e
        return False


def test_a_script_line_that_is_not_utf8_is_skipped(world: TokenWorld) -> None:
    state = world.provisioned(PAYER, profile=BOARD)
    with world.running(state, BOARD) as (sim, tok):
        with open(sim.script, "ab") as f:
            f.write("# caf\u00e9 au lait\n".encode("latin-1"))
        sim.press("confirm: ok", "pin: 1 2 3 4 enter")
        note = tok.pay(world.request(PAYEE, 250), timeout_ms=60000).note
        assert note is not None and verify_object(note, world.trust).ok
        assert "not UTF-8 ignored" in sim.tail(10**6)
        assert sim.running()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_presses_never_end_the_firmware(world: TokenWorld, seed: int) -> None:
    rng = random.Random(seed)
    events = ["up", "down", "ok", "back", "enter", *"0123456789"]
    state = world.provisioned(PAYER, profile=BOARD)
    with world.running(state, BOARD) as (sim, tok):
        presses = [rng.choice(events) for _ in range(500)]
        for i in range(0, len(presses), 25):
            sim.press(" ".join(presses[i : i + 25]))
        sim.wait_for(lambda: _taken(sim) == len(presses), 60, "every press taken")
        assert sim.running() and "Traceback" not in sim.tail(10**7)
        info = tok.info()
        # 500 presses may pay (typed payments need the PIN: never guessed here) or wipe
        # (ten wrong PINs); whatever they did, the token is consistent
        if info["state"] == "ready":
            assert info["next_serial"] == 1 and info["notes"] == 0
            assert info["pin_tries_left"] >= 1
        else:
            assert info["state"] == "blank" and info["notes"] == 0


def test_notes_survive_odd_presses_around_a_payment(world: TokenWorld) -> None:
    # presses that arrive while a note is on screen, and BACK/OK storms after it
    state = world.provisioned(PAYER, profile=BOARD)
    with world.running(state, BOARD) as (sim, tok):
        note = world.pay(sim, tok, world.request(PAYEE, 10), "1234")
        # ignored on the note's screen, BACK closes it, OK opens Pay, BACK leaves the bank list
        odd = "down down up 5 enter back ok back back"
        _press(sim, _taken(sim) + len(odd.split()), odd)
        sim.wait_for(lambda: _notes_answered_one(tok), 60, "the token free again")
        assert codec.decode(tok.note(), codec.NOTE).serial == 1
        assert tok.note() == note
        assert tok.info()["next_serial"] == 2


def _notes_answered_one(tok) -> bool:  # noqa: ANN001 - a TokenClient
    try:
        return [h["serial"] for h in tok.notes()] == [1]
    except ErrorReply as e:
        assert e.code == P.ERR_BUSY, e
        return False
