"""The token's flash full or odd (stop 28), on the real simulator (MicroPython unix port) with its
flash folder on a real small tmpfs (tests/small_disk.py).

What was broken: a blank token on a full flash did not boot (OSError 28 out of the first write of
dev.bin); a provisioning cut by a full flash after ks.bin (the commit point) left a token that said
"blank" with no transport key, which no provisioning could get past; a state file that was there
but could not be read (no permission, a folder in its place) was read as missing: dev.bin made
anew (every record unreadable, the notes and trust files cleared), ks.bin taken as wiped, ctr.bin
as "serial 1, no allowance" and written over, hist/paid as "nothing paid", pin.cnt as "1 try
left"; a zero-length tpl.obj wiped the account key. Now such a token serves the link and every
request gets STORAGE naming the file (or the full flash), nothing is written over, and once the
file is back or room made the same running token works again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi import kmc
from hubi.cli import main
from hubi.token import provision as prov
from hubi.token.client import TokenClient
from hubi.token.harness import TokenWorld
from hubi.token.provision import make_allowance
from hubi_core import codec
from hubi_core import protocol as P
from hubi_core.errors import ErrorReply
from hubi_core.verify import verify_object
from tests.small_disk import small_disk

pytestmark = [pytest.mark.micropython, pytest.mark.xdist_group("test_token_probe28_storage")]
PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"
PAGE = 4096
DISK = 1 << 20
FULL = "the flash is full"
# the firmware without root's override of file permissions, as a board's firmware has no way
# past an unreadable file either (the tests run as root)
NO_OVERRIDE = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> TokenWorld:
    return TokenWorld(tmp_path_factory.mktemp("token-probe28-storage"))


def _fill(flash: Path, pages_free: int) -> None:
    """Leave `pages_free` pages free on the small disk at `flash` (one filler file)."""
    filler = flash / "filler"
    filler.unlink(missing_ok=True)
    st = os.statvfs(flash)
    filler.write_bytes(bytes(max(0, st.f_bfree * st.f_frsize - pages_free * PAGE)))
    assert os.statvfs(flash).f_bfree == pages_free


@contextmanager
def _on_small_disk(state: Path) -> Iterator[Path]:
    """The token's flash (state/flash, possibly not made yet) on a small disk."""
    saved = state.parent / (state.name + "-flash")
    had = (state / "flash").exists()
    if had:
        shutil.move(state / "flash", saved)
    with small_disk(state / "flash", DISK) as flash:
        if had:
            shutil.copytree(saved, flash, dirs_exist_ok=True)
        yield flash


def _storage_error(call: object) -> str:
    with pytest.raises(ErrorReply) as e:
        call()  # type: ignore[operator]
    assert e.value.code == P.ERR_STORAGE, str(e.value)
    return e.value.text


def _pays(world: TokenWorld, tok: TokenClient, serial: int, amount: int = 100) -> None:
    tok.pay(world.request(PAYEE, amount))
    note = tok.confirm_pay("1234")
    assert verify_object(note, world.trust).ok
    assert codec.decode(note, codec.NOTE).serial == serial


def test_blank_token_on_a_full_flash_boots_and_is_provisioned_once_room_is_made(
    world: TokenWorld,
) -> None:
    state = world.new_state()
    state.mkdir(parents=True)
    with _on_small_disk(state) as flash:
        _fill(flash, 0)  # not even dev.bin (device secret, transport key) fits
        with world.sim(state) as sim:
            sim.wait_ready()
            r = CliRunner().invoke(main, ["token", "info", "--port", str(sim.port)])
            assert r.exit_code == 2, r.output
            said = " ".join(r.output.split())
            assert "STORAGE" in said and FULL in said, said
            assert "storage is full or a file on it cannot be read" in said, said
        with world.running(state) as (sim, tok):
            assert FULL in _storage_error(tok.info)
            assert FULL in _storage_error(lambda: world.provision(tok, PAYER, "1234"))
            assert not (flash / "dev.bin").exists()
            (flash / "filler").unlink()
            assert tok.info()["state"] == "blank"  # the same running token, booted again
            world.provision(tok, PAYER, "1234")
            _pays(world, tok, 1)
            assert sim.running()


def test_provisioning_cut_by_a_full_flash_at_every_step(world: TokenWorld) -> None:
    """The public files staged with room, then the commit with 0, 1, 2, ... pages free: each
    attempt provisions, or is refused STORAGE and leaves a token that is blank with a transport
    key (the next provisioning can start) or, past the commit point, one that says STORAGE
    until room is made and is then ready; never "blank" without a transport key, which no
    provisioning could get past (the old end when dev.bin could not drop that key)."""
    files = prov.trust_files(world.home)
    issued = prov.issue(world.home, PAYER)
    bank = kmc.load_bank_identity(world.home, "BKA")
    state = world.new_state()
    state.mkdir(parents=True)
    seen = []
    with _on_small_disk(state) as flash, world.running(state) as (_sim, tok):
        for pages in range(12):
            (flash / "filler").unlink(missing_ok=True)
            info = tok.info()
            assert info["state"] == "blank" and info["transport_key"], (pages, info)
            for name, data in files.items():
                tok.upload_file(name, data)
            _fill(flash, pages)
            now = int(time.time())
            allowance = make_allowance(bank, PAYER, 100000, 1, now + 86400, now=now)
            tk = bytes.fromhex(info["transport_key"])
            blob = prov.seal_bundle(tk, issued, "1234", files["consortium.json"], allowance, now)
            try:
                tok.provision_commit(blob)
            except ErrorReply as e:
                assert e.code == P.ERR_STORAGE and FULL in e.text, str(e)
            else:
                seen.append("provisioned")
                break
            try:
                tok.info()
            except ErrorReply as e:
                assert e.code == P.ERR_STORAGE and FULL in e.text, str(e)
                seen.append("committed")
                (flash / "filler").unlink()
                break
            seen.append("blank")
        info = tok.info()
        assert info["state"] == "ready" and info["transport_key"] is None, info
        _pays(world, tok, 1)
    # every step of the install was cut once: the key committed and its transport key not
    # dropped is the last one before it all fits
    assert seen[-1] == "committed" and seen.count("blank") >= 5, seen


def test_allowance_and_payments_on_a_full_flash_never_reuse_a_serial(world: TokenWorld) -> None:
    """Between payments, with 0 to 2 pages free: a payment is refused STORAGE with nothing
    spent, or its note comes out with the next serial and its spending counted; an allowance
    is refused and the old one kept; with room again the token goes on above every serial."""
    state = world.provisioned(PAYER)
    bank = kmc.load_bank_identity(world.home, "BKA")
    with _on_small_disk(state) as flash, world.running(state) as (sim, tok):
        _pays(world, tok, 1, 10)
        serials = [1]
        spent = 10
        for pages in (0, 1, 2, 0, 1):
            _fill(flash, pages)
            before = tok.info()
            try:
                tok.pay(world.request(PAYEE, 7))
                note = tok.confirm_pay("1234")
            except ErrorReply as e:
                assert e.code == P.ERR_STORAGE and FULL in e.text, str(e)
                after = tok.info()
                assert after["next_serial"] == before["next_serial"]
                assert after["allowance"] == before["allowance"]
                continue
            assert verify_object(note, world.trust).ok
            n = codec.decode(note, codec.NOTE)
            assert n.serial == before["next_serial"] > serials[-1]
            serials.append(n.serial)
            spent += 7
            assert tok.info()["allowance"]["spent"] == spent
        _fill(flash, 0)
        a = make_allowance(
            bank, PAYER, 5000, tok.info()["next_serial"], int(time.time()) + 86400, 1 << 40
        )
        old = tok.info()["allowance"]
        assert FULL in _storage_error(lambda: tok.load_allowance(codec.encode(a)))
        assert tok.info()["allowance"] == old
        (flash / "filler").unlink()
        assert tok.load_allowance(codec.encode(a))["cap"] == 5000
        _pays(world, tok, max(serials) + 1)
        assert sim.running()


def _digests(flash: Path) -> dict[str, str]:
    return {
        str(p.relative_to(flash)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(flash.rglob("*"))
        if p.is_file()
    }


# (file, how it is made odd): each was read as missing, or damaged into a wipe, before
ODD = [
    ("dev.bin", "unreadable"),
    ("ks.bin", "unreadable"),
    ("ks.bin", "folder"),
    ("ctr.bin", "unreadable"),
    ("ctr.bin", "folder"),
    ("pin.cnt", "unreadable"),
    ("hist/paid", "unreadable"),
    ("tpl.obj", "empty"),
]


@pytest.mark.parametrize(("name", "how"), ODD, ids=[f"{n}-{h}" for n, h in ODD])
def test_odd_state_file_stops_the_token_and_keeps_its_state(
    world: TokenWorld, name: str, how: str
) -> None:
    state = world.provisioned(PAYER)
    with world.running(state) as (_sim, tok):
        _pays(world, tok, 1)
    flash = state / "flash"
    path = flash / name
    original = path.read_bytes()
    if how == "unreadable":
        path.chmod(0)
    elif how == "folder":
        path.unlink()
        path.mkdir()
        (path / "x").write_bytes(b"x")
    else:
        path.write_bytes(b"")
    kept = _digests(flash)
    sim = world.sim(state, wrapper=NO_OVERRIDE)
    with sim:
        sim.wait_ready()
        tok = TokenClient.open(sim.port)
        try:
            for call in (tok.info, lambda: tok.pay(world.request(PAYEE, 5))):
                assert name in _storage_error(call)
            assert _digests(flash) == kept  # nothing written over, nothing cleared
            if how == "folder":
                shutil.rmtree(path)
            path.write_bytes(original)
            path.chmod(0o600)
            info = tok.info()  # the same running token: put back, it works again
            assert info["state"] == "ready" and info["pin_tries_left"] == 10, info
            assert info["allowance"]["spent"] == 100
            _pays(world, tok, 2)
        finally:
            tok.close()


def test_screen_token_with_an_unreadable_key_store_says_so_and_recovers(world: TokenWorld) -> None:
    """A screen board in fault: its home screen and its menu say "Storage error" (the button
    flow boots again first, as a link request does), the firmware keeps running, and with the
    file back the owner pays on the device."""
    state = world.provisioned(PAYER, profile="m5stack_core")
    ks = state / "flash" / "ks.bin"
    ks.chmod(0)
    with world.running(state, "m5stack_core", wrapper=NO_OVERRIDE) as (sim, tok):
        assert "ks.bin" in _storage_error(tok.info)
        drawn = len(sim.frame_files())
        sim.press("home: ok")  # Info, the one item of a token that is not ready
        sim.wait_for(lambda: len(sim.frame_files()) > drawn, 20, "the storage error on screen")
        ks.chmod(0o600)
        sim.press("message: ok")
        note = world.pay(sim, tok, world.request(PAYEE, 300), "1234")
        assert verify_object(note, world.trust).ok
        assert codec.decode(note, codec.NOTE).serial == 1
        assert sim.running()


def test_fault_module_numbers_are_the_protocols_and_the_os() -> None:
    """core.fault keeps its numbers as const()s (tests/test_token_core.py checks the other
    modules'): the STORAGE code and the errno values it tells apart."""
    import errno
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware"))
    from core import fault

    assert fault._ERR_STORAGE == P.ERR_STORAGE
    assert (fault._ENOSPC, fault._EBADF) == (errno.ENOSPC, errno.EBADF)
