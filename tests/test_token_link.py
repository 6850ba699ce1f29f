"""The token's link at the application level: garbage, bad CRCs, truncated and oversize frames
get clear errors and the session goes on; malformed application payloads get application
errors; a seeded fuzz of every application message never kills the token or its state."""

from __future__ import annotations

import random
import struct
import time

import pytest
import serial

from hubi.token.client import TokenClient
from hubi.token.harness import TokenWorld
from hubi_core import link
from hubi_core import protocol as P
from hubi_core.errors import ErrorReply

pytestmark = pytest.mark.micropython
PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> TokenWorld:
    return TokenWorld(tmp_path_factory.mktemp("token-link"))


def raw_exchange(port: str, data: bytes, wait: float = 0.5) -> list[object]:
    """Write raw bytes to the token; return the frames and events it sent back (waits at least
    `wait` seconds, and up to 5 s for an ERROR frame when a busy machine slows the token)."""
    with serial.Serial(port, 115200, timeout=0) as s:
        s.write(data)
        got = b""
        start = time.monotonic()
        while True:
            time.sleep(0.05)
            got += s.read(65536)
            waited = time.monotonic() - start
            if waited >= wait and (errors_in(link.decode_frames(got)) or waited > 5):
                break
            if waited >= wait and not data.startswith(P.SYNC) and waited > 1:
                break  # plain garbage: nothing is answered
        return link.decode_frames(got)


def errors_in(items: list[object]) -> list[int]:
    out = []
    for f in items:
        if isinstance(f, link.Frame) and f.type == P.ERROR:
            out.append(struct.unpack(">H", f.payload[:2])[0])
    return out


def test_framing_errors_then_recovery(world: TokenWorld) -> None:
    state = world.provisioned(PAYER)
    with world.running(state, "headless") as (sim, tok):
        port = sim.port
        tok.close()
        # garbage, including sync bytes and half headers: silently skipped
        rng = random.Random(1)
        junk = bytes(rng.randrange(256) for _ in range(3000)) + P.SYNC + b"\x01"
        raw_exchange(port, junk, 0.4)
        # a frame with a wrong CRC over its payload -> BAD_CRC
        good = bytearray(link.encode_frame(P.GET_INFO, 77, b"x"))
        good[-1] ^= 0xFF
        assert P.ERR_BAD_CRC in errors_in(raw_exchange(port, bytes(good)))
        # a header announcing more than 1024 bytes -> OVERSIZE
        big = link.encode_frame(P.PING, 78, b"\x00" * 2000, max_payload=4096)
        assert P.ERR_OVERSIZE in errors_in(raw_exchange(port, big[:40]))
        # a frame that stops half way -> TRUNCATED after the frame timeout
        cut = link.encode_frame(P.PING, 79, b"y" * 300)[:100]
        assert P.ERR_TRUNCATED in errors_in(raw_exchange(port, cut, 0.8))
        # an unknown application type -> UNKNOWN_TYPE; a reply type sent as request
        assert P.ERR_UNKNOWN_TYPE in errors_in(raw_exchange(port, link.encode_frame(0x6E, 80)))
        assert P.ERR_NOT_A_REQUEST in errors_in(raw_exchange(port, link.encode_frame(0xA0, 81)))
        # the session still works
        with TokenClient.open(port) as tok2:
            assert tok2.info()["state"] == "ready"
            stats = tok2.link.peer_stats()
            assert stats["bad_crcs"] >= 1 and stats["oversize"] >= 1 and stats["truncated"] >= 1
            assert stats["skipped_bytes"] >= 3000


def test_malformed_application_payloads(world: TokenWorld) -> None:
    state = world.provisioned(PAYER)
    with world.running(state, "headless") as (_sim, tok):
        cases = [
            (P.SET_TIME, b"\x01\x02\x03", P.ERR_BAD_PAYLOAD),
            (P.PAY_REQUEST, b"", P.ERR_CODEC),
            (P.PAY_REQUEST, b"\x01" * 5000, P.ERR_CODEC),  # bulk upload, then refused
            (P.PAY_CONFIRM, b"1234", P.ERR_STATE),
            (P.NOTE_GET, b"\xff", P.ERR_CODEC),
            (P.NOTE_GET, b"\x05", P.ERR_NOT_FOUND),
            (P.LOAD_NOTICE, b"\x01\x03\x01", P.ERR_CODEC),
            (P.LOAD_ALLOWANCE, b"nonsense", P.ERR_CODEC),
            (P.PROVISION_FILE, b"\x05hello", P.ERR_STATE),  # provisioned: no staging
            (P.PROVISION_COMMIT, b"\x01" * 80, P.ERR_STATE),
            (P.CHANGE_PIN, b"1234", P.ERR_BAD_PAYLOAD),
        ]
        for t, payload, code in cases:
            with pytest.raises(ErrorReply) as e:
                tok.link.call(t, payload)
            assert e.value.code == code, (P.type_name(t), e.value)
            assert e.value.text  # every refusal says why
        assert tok.info()["state"] == "ready"


def test_fuzz_application_messages(world: TokenWorld) -> None:
    state = world.provisioned(PAYER)
    rng = random.Random(20261122)
    types = [
        P.SET_TIME, P.PROVISION_FILE, P.PROVISION_COMMIT, P.LOAD_ALLOWANCE, P.PAY_REQUEST,
        P.PAY_CANCEL, P.NOTE_GET, P.NOTE_LIST, P.LOAD_NOTICE,
    ]  # fmt: skip
    req = world.request(PAYEE, 100)
    with world.running(state, "headless") as (_sim, tok):
        answered = 0
        for _ in range(300):
            t = rng.choice(types)
            if rng.random() < 0.5:  # mutate a real request
                b = bytearray(req)
                for _ in range(rng.randint(1, 4)):
                    b[rng.randrange(len(b))] = rng.randrange(256)
                payload = bytes(b[: rng.randint(0, len(b))])
            else:
                payload = bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
            if t == P.SET_TIME:
                payload = payload[:4]
            try:
                tok.link.call(t, payload)
            except ErrorReply as e:
                assert e.code != P.ERR_INTERNAL, (P.type_name(t), e)
            answered += 1
        assert answered == 300
        tok.set_time(int(time.time()))
        info = tok.info()
        assert info["state"] == "ready" and info["next_serial"] == 1
        tok.pay(world.request(PAYEE, 100))
        assert tok.confirm_pay("1234")
