"""End to end: the real firmware under the MicroPython unix port, over a pseudo-terminal, with
pyserial on the host side; notes verified with the shared core; the PNG frames the simulator
drew decoded with zxing-cpp (single QR and animated multi-part QR)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image

from hubi import kmc
from hubi.token.harness import TokenWorld
from hubi.token.sim import PAYMENT_HEAP, sim_heap
from hubi_core import codec, ecies, qrparts, suite
from hubi_core import protocol as P
from hubi_core.errors import ErrorReply
from hubi_core.verify import verify_note, verify_object

pytestmark = pytest.mark.micropython
PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> TokenWorld:
    return TokenWorld(tmp_path_factory.mktemp("token-sim"))


def qr_payloads(path: Path) -> list[bytes]:
    img = Image.open(path).convert("L")
    found = zxingcpp.read_barcodes(img, formats=zxingcpp.BarcodeFormat.QRCode)
    if not found:  # small modules: let the reader see them larger
        img = img.resize((img.width * 2, img.height * 2), Image.NEAREST)
        found = zxingcpp.read_barcodes(img, formats=zxingcpp.BarcodeFormat.QRCode)
    return [bytes(b.bytes) for b in found]


def check_note(
    world: TokenWorld, note: bytes, amount: int, serial: int, payee: str = PAYEE
) -> None:
    rep = verify_object(note, world.trust)
    assert rep.ok, rep.as_dict()
    n = codec.decode(note, codec.NOTE)
    assert (n.signer, n.serial, n["amount"], n["payee"]) == (PAYER, serial, amount, payee)


def test_payment_single_qr_on_320x240(world: TokenWorld) -> None:
    """m5stack_core profile: the note fits one QR at >= 2 px per module; the frame the
    simulator drew decodes to exactly the note's bytes."""
    state = world.provisioned(PAYER)
    with world.running(state, "m5stack_core") as (sim, tok):
        assert sim.heapsize == sim_heap("m5stack_core")
        before = set(sim.frame_files())
        note = world.pay(sim, tok, world.request(PAYEE, 12345), "1234", wheel=True)
        check_note(world, note, 12345, 1)
        new = [p for p in sim.frame_files() if p not in before]
        decoded = [qr_payloads(p) for p in new]
        shown = [d for d in decoded if d]
        assert shown and shown[-1] == [note], "the last QR frame drawn is the note"
        info = tok.info()
        assert info["allowance"]["spent"] == 12345
        assert info["next_serial"] == 2
        assert tok.note() == note
        assert [h["serial"] for h in tok.notes()] == [1]


def test_payment_animated_qr_on_240x240(world: TokenWorld) -> None:
    """esp32_st7789_240 profile (>= 3 px per module): the note goes out as multi-part frames
    <= version 7; the frames, shuffled with one repeated, reassemble to the note."""
    state = world.provisioned(PAYER)
    with world.running(state, "esp32_st7789_240", settings={"qr_frame_ms": 60}) as (sim, tok):
        before = set(sim.frame_files())
        note = world.pay(sim, tok, world.request(PAYEE, 777, "lunch"), "1234", wheel=False)
        check_note(world, note, 777, 1)
        plan = qrparts.plan(len(note), 240, "M")
        assert not plan.single and plan.version <= 7
        # decode the frames as the loop draws them, until every part was seen
        parts: dict[int, bytes] = {}
        seen: set[Path] = set(before)
        deadline = time.monotonic() + 30
        while len(parts) < plan.frames and time.monotonic() < deadline:
            for p in sim.frame_files():
                if p in seen:
                    continue
                seen.add(p)
                for d in qr_payloads(p):
                    if qrparts.is_part(d):
                        parts[qrparts.parse(d).index] = d
            time.sleep(0.05)
        assert sorted(parts) == list(range(plan.frames))
        frames = list(parts.values())
        rng = random.Random(7)
        rng.shuffle(frames)
        frames.insert(3, frames[1])  # one frame seen twice
        col = qrparts.Collector()
        for f in frames:
            col.add(f)
        assert col.complete and col.message() == note
        # without one data part (parity recovers it)
        col2 = qrparts.Collector()
        for f in frames[1:]:
            col2.add(f)
        assert col2.message() == note


def test_headless_payment_and_refusals(world: TokenWorld) -> None:
    state = world.provisioned(PAYER, cap=20000)
    with world.running(state, "headless") as (_sim, tok):
        assert tok.info()["screen"] is None
        first = world.request(PAYEE, 5000)
        r = tok.pay(first)
        assert r.note is None and r.summary["payee"] == PAYEE and r.summary["amount"] == 5000
        with pytest.raises(ErrorReply) as e:
            tok.confirm_pay("9999")
        assert e.value.code == P.ERR_PIN_WRONG and "9 tries left" in e.value.text
        note = tok.confirm_pay("1234")
        check_note(world, note, 5000, 1)
        # the same request again is not paid twice
        with pytest.raises(ErrorReply) as e:
            tok.pay(first)
        assert e.value.code == P.ERR_STATE and "already paid by note #1" in e.value.text
        # no pending request any more
        with pytest.raises(ErrorReply) as e:
            tok.confirm_pay("1234")
        assert e.value.code == P.ERR_STATE
        # over the allowance (15,000 left)
        with pytest.raises(ErrorReply) as e:
            tok.pay(world.request(PAYEE, 15001))
        assert e.value.code == P.ERR_ALLOWANCE and "exceeds the offline allowance" in e.value.text
        # expired request
        with pytest.raises(ErrorReply) as e:
            tok.pay(world.request(PAYEE, 100, expiry=-10))
        assert e.value.code == P.ERR_EXPIRED
        # a forged request: amount changed after the payee signed it
        req = codec.decode(world.request(PAYEE, 100))
        req.values["amount"] = 90
        with pytest.raises(ErrorReply) as e:
            tok.pay(codec.encode(req))
        assert e.value.code == P.ERR_VERIFY and "amount" in e.value.text
        with pytest.raises(ErrorReply) as e:
            tok.pay(b"\x01\x02garbage")
        assert e.value.code == P.ERR_CODEC
        # exactly the rest of the allowance still works
        tok.pay(world.request(PAYEE, 15000))
        note2 = tok.confirm_pay("1234")
        check_note(world, note2, 15000, 2)
        assert tok.info()["allowance"]["left"] == 0
        assert [h["serial"] for h in tok.notes()] == [1, 2]
        assert tok.note(1) == note


def test_headless_payment_in_96k(world: TokenWorld) -> None:
    """The issue's target: the headless profile boots and pays in a 96 KB heap
    (micropython -X heapsize=96k). The request goes over the pseudo-terminal with pyserial and
    is verified offline on the token, the PIN goes over the link, the note is signed and
    returned; the host verifies it with the shared core against the trust bundle."""
    assert PAYMENT_HEAP == "96k"
    state = world.provisioned(PAYER)
    with world.running(state, "headless", heapsize=PAYMENT_HEAP) as (sim, tok):
        assert sim.heapsize == "96k"
        r = tok.pay(world.request(PAYEE, 4321, "coffee+cake!"))
        assert r.note is None and r.summary["payee"] == PAYEE and r.summary["amount"] == 4321
        note = tok.confirm_pay("1234")
        rep = verify_note(note, world.trust, None)
        assert rep.ok, rep.as_dict()
        check_note(world, note, 4321, 1)
        info = tok.info()
        assert info["next_serial"] == 2 and info["allowance"]["spent"] == 4321
        assert sim.running()


def test_notices_balance_and_receipt(world: TokenWorld) -> None:
    state = world.provisioned(PAYER)
    with world.running(state, "headless") as (_sim, tok):
        tok.pay(world.request(PAYEE, 2500))
        note = tok.confirm_pay("1234")
        n = codec.decode(note)
        nid = codec.note_id(PAYER, n.serial)
        bank = kmc.load_bank_identity(world.home, "BKA")
        payer_key = verify_object(note, world.trust).key
        blob = ecies.seal(
            payer_key, (97500).to_bytes(8, "big"), b"hubi/balance/1\x00" + PAYER.encode()
        )
        bn = codec.Obj(
            codec.BALANCE,
            "BKA",
            9,
            int(time.time()),
            {"amount": 2500, "payee": PAYEE, "payer": PAYER, "note_id": nid, "balance": blob},
        )
        codec.sign(bn, bank.private)
        out = tok.load_notice(codec.encode(bn))
        assert out["kind"] == "BalanceNotice" and out["amount"] == 2500
        bal = tok.balance("1234")
        assert bal["balance"] == 97500 and bal["notice_serial"] == 9
        # a notice signed by the wrong key is refused
        forged = codec.Obj(codec.BALANCE, "BKA", 10, int(time.time()), dict(bn.values))
        codec.sign(forged, suite.generate_private())
        with pytest.raises(ErrorReply) as e:
            tok.load_notice(codec.encode(forged))
        assert e.value.code == P.ERR_VERIFY
        # the payee's receipt marks the note in the history
        p = world.payee(PAYEE)
        rc = codec.Obj(
            codec.RECEIPT,
            PAYEE,
            3,
            int(time.time()),
            {
                "template": p.template,
                "amount": 2500,
                "purpose": "coffee+cake!",
                "payer": PAYER,
                "note_id": nid,
            },
        )
        codec.sign(rc, p.private)
        assert tok.load_notice(codec.encode(rc))["kind"] == "Receipt"
        assert tok.notes()[-1]["receipt"] is True


def test_typed_payment_on_device(world: TokenWorld) -> None:
    """Payee and amount typed with the buttons (no signed request), PIN on the wheel."""
    state = world.provisioned(PAYER)
    with world.running(state, "m5stack_core") as (sim, tok):
        sim.press(
            "home: ok",  # "Pay" is the first menu item
            "menu: down ok",  # second bank: BKB
            "text: 0 0 0 0 0 0 0 0 0 0 0 7 enter",
            "amount: 1 2 " + "up " * 10 + "ok 5 enter",  # the dot is on the wheel
            "confirm: ok",
            "pin: 1 2 3 4 enter",
        )
        sim.wait_for(lambda: tok.info()["notes"] == 1, 30, "the typed payment")
        note = tok.note()
        check_note(world, note, 1250, 1, payee=PAYEE)
        assert codec.decode(note).get("purpose") is None


def test_provisioning_checks(world: TokenWorld) -> None:
    """A bundle sealed to another key, or a template that does not match the key, is refused;
    a provisioned token refuses a second provisioning."""
    from hubi.token import provision as prov

    state = world.new_state()
    with world.running(state, "headless") as (_sim, tok):
        info = tok.info()
        assert info["state"] == "blank" and len(bytes.fromhex(info["transport_key"])) == 33
        files = prov.trust_files(world.home)
        for name, data in files.items():
            tok.upload_file(name, data)
        issued = prov.issue(world.home, PAYER)
        other = suite.public_key(suite.generate_private(), compressed=True)
        blob = prov.seal_bundle(
            other, issued, "1234", files["consortium.json"], None, int(time.time())
        )
        with pytest.raises(ErrorReply) as e:
            tok.provision_commit(blob)
        assert e.value.code == P.ERR_PROVISION and "cannot open" in e.value.text
        wrong = prov.Issued(PAYER, issued.private + 1, issued.template)
        blob = prov.seal_bundle(
            bytes.fromhex(info["transport_key"]),
            wrong,
            "1234",
            files["consortium.json"],
            None,
            int(time.time()),
        )
        with pytest.raises(ErrorReply) as e:
            tok.provision_commit(blob)
        assert e.value.code == P.ERR_PROVISION and "does not match" in e.value.text
        assert tok.info()["state"] == "blank"
        out = world.provision(tok, PAYER, "1234")
        assert out["state"] == "ready" and out["transport_key"] is None
        with pytest.raises(RuntimeError):
            world.provision(tok, PAYER, "1234")


def test_payments_do_not_grow_the_heap(world: TokenWorld) -> None:
    """Five payments in a row: what stays in the heap after each (gc.collect in GET_INFO)
    does not grow: caches are trimmed, notes live in flash."""
    state = world.provisioned(PAYER)
    used = []
    with world.running(state, "headless") as (_sim, tok):
        for _ in range(5):
            tok.pay(world.request(PAYEE, 100))
            tok.confirm_pay("1234")
            used.append(-tok.info()["heap_free"])
    assert max(used[1:]) - used[1] <= 2048, used


def test_damaged_counter_stops_signing_until_a_new_allowance(world: TokenWorld) -> None:
    """A ctr.bin that fails its MAC is never read as "serial 1": nothing is signed until the
    bank loads an allowance, whose first_serial restarts the serials above the known ones."""
    from hubi.token.provision import make_allowance

    state = world.provisioned(PAYER)
    ctr = state / "flash" / "ctr.bin"
    raw = bytearray(ctr.read_bytes())
    raw[12] ^= 0x40
    ctr.write_bytes(bytes(raw))
    with world.running(state, "headless") as (_sim, tok):
        with pytest.raises(ErrorReply) as e:
            tok.pay(world.request(PAYEE, 100))
        assert e.value.code == P.ERR_STORAGE and "serial counter is damaged" in e.value.text
        bank = kmc.load_bank_identity(world.home, "BKA")
        a = make_allowance(bank, PAYER, 5000, 100, int(time.time()) + 3600, serial=1 << 41)
        assert tok.load_allowance(codec.encode(a))["first_serial"] == 100
        tok.pay(world.request(PAYEE, 100))
        check_note(world, tok.confirm_pay("1234"), 100, 100)
