"""Firmware core on CPython (it imports there unchanged) and on the MicroPython unix port:
KDF against hashlib, authenticated records, keystore ordering (attempt counter written before
the check), back-off schedule, QR plan rule, the panel driver against a recorded SPI bus,
buttons, provisioning bundle layout."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from hubi_core import suite, tokenmsg
from hubi_core.errors import BadValue
from tests.mpy import ROOT, run_mpy

sys.path.insert(0, str(ROOT / "firmware"))
from core import fmt, kdf, keystore, store  # noqa: E402
from hal import Clock, Rng  # noqa: E402
from hal.storage import FsStorage  # noqa: E402
from ui.qrview import plan  # noqa: E402


def test_pbkdf2_matches_hashlib() -> None:
    for pw, salt, n, dk in [
        (b"1234", b"salt" * 4, 1, 32),
        (b"000000", b"s", 1000, 32),
        (b"x" * 70, b"t", 3, 40),
    ]:
        assert kdf.pbkdf2_sha256(pw, salt, n, dk) == hashlib.pbkdf2_hmac("sha256", pw, salt, n, dk)


def test_records_detect_tampering_and_misplacement(tmp_path: Path) -> None:
    st = FsStorage(str(tmp_path))
    r = store.Records(st, b"k" * 32)
    r.put("ctr.bin", b"hello")
    assert r.get("ctr.bin") == b"hello"
    raw = bytearray((tmp_path / "ctr.bin").read_bytes())
    raw[9] ^= 1
    (tmp_path / "ctr.bin").write_bytes(bytes(raw))
    with pytest.raises(store.Corrupt):
        r.get("ctr.bin")
    r.put("a.bin", b"A")
    (tmp_path / "b.bin").write_bytes((tmp_path / "a.bin").read_bytes())  # copied to another name
    with pytest.raises(store.Corrupt):
        r.get("b.bin")
    assert r.get("missing") is None
    # FAT-style interruption: main file gone, complete temp file present -> taken
    (tmp_path / "c.bin.tmp").write_bytes(store.seal_record(b"k" * 32, "c.bin", b"new"))
    assert r.get("c.bin") == b"new"
    (tmp_path / "d.bin.tmp").write_bytes(b"HUBR\x01\x00")  # torn: ignored
    assert r.get("d.bin") is None


class RecordingStorage(FsStorage):
    def __init__(self, root: str) -> None:
        super().__init__(root, self._rec)
        self.log: list[tuple[str, str]] = []

    def _rec(self, op: str, name: str) -> None:
        self.log.append((op, name))


class FakeClock(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.slept: list[int] = []

    def sleep_ms(self, ms: int) -> None:
        self.slept.append(ms)


def test_keystore_counts_before_checking(tmp_path: Path) -> None:
    st = RecordingStorage(str(tmp_path))
    clock = FakeClock()
    ks = keystore.Keystore(st, Rng(), clock, iterations=50, backoff_base_ms=1000)
    assert ks.boot() is False and ks.transport_public() is not None
    priv = suite.generate_private()
    ks.create("BKA-1", priv, "123456")
    checked = []
    real = ks._derive

    def spy(pin: str, salt: bytes, iters: int) -> tuple[bytes, bytes]:
        checked.append(list(st.log))
        return real(pin, salt, iters)

    ks._derive = spy  # type: ignore[method-assign]
    st.log.clear()
    with pytest.raises(keystore.WrongPin):
        ks.unlock("000000")
    # the counter's rename happened before the PIN was derived and compared
    assert ("rename", "pin.cnt") in checked[0]
    assert ks.fails() == 1
    assert ks.unlock("123456") == priv and ks.fails() == 0
    for i in range(9):
        with pytest.raises(keystore.WrongPin) as e:
            ks.unlock("999999")
        assert e.value.left == 9 - i
    assert clock.slept == [1000, 2000, 4000, 8000, 16000, 32000]
    with pytest.raises(keystore.Wiped):
        ks.unlock("999999")
    assert not ks.provisioned and not (tmp_path / "ks.bin").exists()
    assert ks.transport_public() is not None  # blank again, ready for provisioning


def test_backoff_schedule_caps() -> None:
    assert [keystore.backoff_ms(f, 1000) for f in range(12)] == [
        0, 0, 0, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 64000, 64000,
    ]  # fmt: skip


def test_pin_rules() -> None:
    """The token and the host that provisions it take the same PINs (one rule, hubi_core.pin)."""
    for bad in ("123", "123456789", "12a4", "", "１２３４", None):
        with pytest.raises(ValueError, match="PIN must be"):
            keystore.check_pin(bad)
        with pytest.raises(BadValue, match="PIN must be"):
            tokenmsg.check_pin(bad)
    for good in ("0000", "12345678"):
        assert keystore.check_pin(good) == tokenmsg.check_pin(good) == good


def test_amount_format() -> None:
    assert fmt.amount(123456789, "CNY") == "1,234,567.89 CNY"
    assert fmt.amount(5) == "0.05"
    assert fmt.parse_amount("12.5") == 1250 and fmt.parse_amount("7") == 700
    with pytest.raises(ValueError):
        fmt.parse_amount("1.234")


def test_qr_plan_rule() -> None:
    """Single QR when it fits at >= min_px with the quiet zone; else parts <= version 7."""
    p = plan(401, 320, 240, "M", 2)
    assert p.single and p.scale >= 2
    p = plan(401, 240, 240, "M", 3)
    assert not p.single and p.version <= 7 and p.scale >= 3
    p = plan(401, 240, 240, "M", 2)
    assert p.single


class FakePin:
    def __init__(self, v: int = 1) -> None:
        self.v = v

    def value(self, v: int | None = None) -> int:
        if v is not None:
            self.v = v
        return self.v


PANEL_SCRIPT = """
from drivers.panel import CASET, RAMWR, RASET, Panel

class Pin:
    def __init__(self, v=1):
        self.v = v
    def value(self, v=None):
        if v is not None:
            self.v = v
        return self.v

class Spi:
    def __init__(self, dc):
        self.dc = dc
        self.out = []
    def write(self, b):
        self.out.append((self.dc.v, bytes(b)))

dc = Pin()
spi = Spi(dc)
p = Panel(spi, dc, Pin(), Pin(), 320, 240, "ili9342")
cmds = [b[0] for d, b in spi.out if d == 0]
assert cmds[0] == 0x01 and 0x29 in cmds, cmds
spi.out.clear()
p.fill_rect(10, 20, 4, 3, 1)
seq = spi.out
assert seq[0] == (0, bytes([CASET])) and seq[1] == (1, bytes([0, 10, 0, 13])), seq[:2]
assert seq[2] == (0, bytes([RASET])) and seq[3] == (1, bytes([0, 20, 0, 22]))
assert seq[4] == (0, bytes([RAMWR]))
assert b"".join(b for d, b in seq[5:] if d == 1) == b"\\xff\\xff" * 12
spi.out.clear()
p.fill_rect(318, 238, 10, 10, 0)
assert b"".join(b for d, b in spi.out[5:] if d == 1) == b"\\x00\\x00" * 4
spi.out.clear()
p.text("A", 0, 0, 0, 2)
px = b"".join(b for d, b in spi.out if d == 1 and len(b) > 4)
assert len(px) == 16 * 16 * 2 and b"\\x00\\x00" in px and b"\\xff\\xff" in px
print("ok")
"""


@pytest.mark.micropython
def test_panel_driver_on_a_recorded_bus() -> None:
    """ILI9342 init, windows, pixel streams and clipping, against a recorded SPI bus (real
    MicroPython framebuf for the font): what a board would receive, minus the glass."""
    assert run_mpy(code=PANEL_SCRIPT, heapsize="512k").strip() == "ok"


def test_buttons_short_and_long_press() -> None:
    import time

    from drivers.buttons import Buttons

    up, down, ok = FakePin(), FakePin(), FakePin()
    b = Buttons(up, down, ok, debounce_ms=0, long_ms=50)
    up.v = 0
    assert b.get(20) == "up"
    up.v = 1
    b.get(5)
    ok.v = 0
    assert b.get(5) is None
    ok.v = 1
    assert b.get(20) == "ok"
    ok.v = 0
    b.get(5)
    time.sleep(0.06)
    assert b.get(20) == "back"


def test_bundle_roundtrip_and_checks() -> None:
    fields = {
        "key": b"\x01" * 32,
        "template": b"T" * 10,
        "pin": b"1234",
        "consortium": b"\x02" * 32,
        "time": 7,
    }
    out = tokenmsg.decode_bundle(tokenmsg.encode_bundle(fields))
    assert out["pin"] == "1234" and out["time"] == 7 and out["key"] == b"\x01" * 32
    with pytest.raises(BadValue):
        tokenmsg.encode_bundle({"key": b"k"})
    with pytest.raises(BadValue):
        tokenmsg.decode_bundle(b"\x03\x01x\x01\x01y")  # out of order
    assert tokenmsg.check_file_name("BKA.pub") == "BKA.pub"
    with pytest.raises(BadValue):
        tokenmsg.check_file_name("../x")


@pytest.mark.micropython
def test_core_under_micropython(tmp_path: Path) -> None:
    """The same KDF, records and keystore logic on the real MicroPython unix port."""
    want = hashlib.pbkdf2_hmac("sha256", b"4321", b"salty", 200, 32).hex()
    code = f"""
import os
from core import kdf, store, keystore
from hal import Clock, Rng
from hal.storage import FsStorage
import binascii
assert binascii.hexlify(kdf.pbkdf2_sha256(b"4321", b"salty", 200)).decode() == "{want}"
st = FsStorage("{tmp_path}")
ks = keystore.Keystore(st, Rng(), Clock(), iterations=20, backoff_base_ms=1)
assert ks.boot() is False
ks.create("BKA-1", 12345, "1234")
try:
    ks.unlock("4321")
    raise SystemExit("wrong PIN accepted")
except keystore.WrongPin as e:
    assert e.left == 9
assert ks.fails() == 1
assert ks.unlock("1234") == 12345 and ks.fails() == 0
print("ok")
"""
    assert run_mpy(code=code, heapsize="512k").strip() == "ok"
