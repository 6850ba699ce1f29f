"""A wipe the flash does not let remove the key, and the room held for a note's copy (stop 29).

The real firmware on the MicroPython unix port: the simulator for the wipe, whose ks.bin is a
read-only bind mount of itself (tests/small_disk.py `read_only`: the folder stays writable, the
key's file can be neither written, renamed over nor removed); the firmware's own modules under
`micropython` for the note's room.

What was broken: hal.storage.remove answers False when it fails and keystore.wipe went on, so the
tenth wrong PIN answered WIPED and deleted the PIN counter while the key stayed on the flash (the
next boot found the key with fresh tries), and the owner's WIPE said the token was blank. The
room held for a note's copy before its serial is used was 512 bytes, less than the record of a
note with the longest purpose and long account ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hubi.token.harness import TokenWorld
from hubi_core import codec
from hubi_core import protocol as P
from hubi_core.errors import ErrorReply
from tests.mpy import run_mpy
from tests.small_disk import read_only

pytestmark = [pytest.mark.micropython, pytest.mark.xdist_group("test_token_probe29_wipe")]
PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"
KEPT = "ks.bin could not be removed"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> TokenWorld:
    return TokenWorld(tmp_path_factory.mktemp("token-probe29-wipe"))


def _refused(call: object, code: int = P.ERR_STORAGE) -> str:
    with pytest.raises(ErrorReply) as e:
        call()  # type: ignore[operator]
    assert e.value.code == code, str(e.value)
    return e.value.text


def test_tenth_wrong_pin_that_cannot_remove_the_key_tries_no_pin_again(
    world: TokenWorld,
) -> None:
    """STORAGE "wipe not finished", never WIPED: the counter stays at its maximum, the right PIN
    is not tried (nothing signed), a restart stays in the STORAGE fault, and once the flash
    lets the key go the token wipes it before anything else and is blank."""
    state = world.provisioned(PAYER)
    ks = state / "flash" / "ks.bin"
    key = ks.read_bytes()
    with read_only(ks):
        with world.running(state, settings={"pin_backoff_ms": 1}) as (_sim, tok):
            tok.pay(world.request(PAYEE, 100))
            for _ in range(9):
                _refused(lambda: tok.confirm_pay("0000"), P.ERR_PIN_WRONG)
            text = _refused(lambda: tok.confirm_pay("0000"))
            assert "wipe not finished" in text and KEPT in text, text
            assert ks.read_bytes() == key
            info = tok.info()
            assert (info["pin_tries_left"], info["next_serial"]) == (0, 1), info
            text = _refused(lambda: tok.confirm_pay("1234"))  # the right PIN: not tried
            assert KEPT in text, text
            assert tok.info()["allowance"]["spent"] == 0
        with world.running(state) as (_sim, tok):
            said = _refused(tok.info)
            assert KEPT in said, said
            assert KEPT in _refused(lambda: tok.pay(world.request(PAYEE, 100)))
            assert ks.read_bytes() == key
            with read_only(state / "flash"):  # the counter can't be reset by a reboot either
                assert KEPT in _refused(tok.info)
        with world.running(state) as (_sim, tok):
            assert KEPT in _refused(tok.info)
    with world.running(state) as (_sim, tok):
        info = tok.info()
        assert info["state"] == "blank" and info["transport_key"], info
        assert not ks.exists()


def test_owner_wipe_that_cannot_remove_the_key_is_not_finished(world: TokenWorld) -> None:
    """WIPE with the right PIN: STORAGE "wipe not finished" (it said the token was blank), the
    token refuses payments from then on, and the next request after the flash lets go wipes."""
    state = world.provisioned(PAYER)
    ks = state / "flash" / "ks.bin"
    with read_only(ks), world.running(state) as (_sim, tok):
        text = _refused(lambda: tok.wipe("1234"))
        assert "wipe not finished" in text and KEPT in text, text
        assert KEPT in _refused(lambda: tok.pay(world.request(PAYEE, 100)))
        assert ks.exists() and (state / "flash" / "tpl.obj").exists()
    with world.running(state) as (_sim, tok):
        assert tok.info()["state"] == "blank"
        assert not ks.exists() and not (state / "flash" / "tpl.obj").exists()
        world.provision(tok, PAYER, "1234")
        note = tok.pay(world.request(PAYEE, 9)) and tok.confirm_pay("1234")
        assert codec.decode(note, codec.NOTE).serial == 1


_ROOM = """
import json, sys
from core import paysign
from core.store import seal_record
from hal.storage import FsStorage
from hubi_core import suite
root = sys.argv[1]
with open(sys.argv[2], "rb") as f:  # a file: a long argv stops this unix port (FATAL NLR)
    tpl = f.read()
stub = paysign.template_stub(tpl)
priv = suite.generate_private()
st = FsStorage(root)
out = []
for payer, payee, purpose, serial, amount in (
    ("BKA-000000000042", "BKB-000000000007", "coffee", 1, 100),
    ("BKA-000000000042", "BKB-000000000007", None, 300, 5),
    ("BKA-" + "a" * 28, "BKB-" + "b" * 28, "x" * 64, (1 << 63) + 5, (1 << 63) - 1),
):
    t = 1700000000
    n = paysign.kept_size(payer, serial, t, stub, amount, payee, purpose)
    raw = paysign.note_bytes(payer, serial, t, stub, amount, payee, purpose, priv)
    paysign._reserve(st, n)
    held = st.size(paysign.ROOM)
    st.remove(paysign.ROOM)
    out.append([n, len(seal_record(b"k" * 32, "hist/n1", raw)), held])
print(json.dumps(out))
"""


def test_room_held_for_a_notes_copy_is_the_size_of_the_note_kept(
    world: TokenWorld, tmp_path: Path
) -> None:
    """Under MicroPython: the room held before the serial is used is the record the note is
    kept in, byte for byte, also for the largest note the codec allows (64-byte purpose,
    32-character accounts, a 64-bit serial and amount: 519 bytes, over the old 512)."""
    tpl = tmp_path / "tpl.obj"
    tpl.write_bytes(codec.encode(world.payee(PAYER).template))
    script = tmp_path / "room.py"
    script.write_text(_ROOM)
    out = run_mpy(script=script, args=[str(tmp_path / "flash"), str(tpl)])
    got = json.loads(out)
    for size, record, held in got:
        assert size == record == held, got
    assert got[-1][1] > 512
