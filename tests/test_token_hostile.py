"""The token and its host tools against hostile peers.

Token side (the real firmware in the MicroPython simulator): a payment confirmed after its
request expired is refused EXPIRED (nothing signed, no serial used, no PIN try spent); PIN
fields and file names that are not UTF-8 get a clear refusal, never INTERNAL; a frame larger
than the max_payload agreed in HELLO is refused (its PING echo was served from a buffer the
next frames overwrote).

Host side (`hubi token ...` against a fake token on a pty, served by the real
hubi_core.link.Server: a real token never sends these): a token that answers WAIT for ever, and
replies that are not UTF-8, not JSON, nested too deep, of the wrong shape, with an unknown
status, terminal escapes or rich markup: a clear error (exit 2) or escaped text, never a
traceback or a hang.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi import link_client as host_link
from hubi.cli import main
from hubi.token import client as token_client
from hubi.token.harness import TokenWorld
from hubi_core import codec, ecies, link, tokenmsg
from hubi_core import protocol as P
from hubi_core.errors import ErrorReply, LinkTimeout
from hubi_core.link import Client
from hubi_core.wire import varint
from tests.token_fakes import FakeToken, fake_token, run

PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"


# ---------------------------------------------------------------------------- token side
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> TokenWorld:
    return TokenWorld(tmp_path_factory.mktemp("token-hostile"))


@pytest.mark.micropython
def test_confirm_after_the_request_expired_is_refused(world: TokenWorld) -> None:
    """PAY_REQUEST, the clock moved past the request's expiry, PAY_CONFIRM with the right PIN:
    it signed a note before (the expiry was checked only when the request came in)."""
    state = world.provisioned(PAYER)
    with world.running(state, "headless") as (_sim, tok):
        req = world.request(PAYEE, 700, expiry=300)
        expiry = codec.decode(req, codec.REQUEST)["expiry"]
        r = tok.pay(req)
        assert r.summary is not None and r.summary["expiry"] == expiry
        before = tok.info()
        tok.set_time(expiry + 600)
        with pytest.raises(ErrorReply) as e:
            tok.confirm_pay("1234")
        assert e.value.code == P.ERR_EXPIRED, e.value
        assert f"request expired at {expiry}" in e.value.text
        after = tok.info()
        assert after["next_serial"] == before["next_serial"] == 1  # no serial used up
        assert after["allowance"] == before["allowance"]  # nothing spent
        assert after["pin_tries_left"] == before["pin_tries_left"]  # refused before the PIN
        assert after["notes"] == 0 and after["pending"] is None
        with pytest.raises(ErrorReply) as e:
            tok.note()
        assert e.value.code == P.ERR_NOT_FOUND
        with pytest.raises(ErrorReply) as e:  # the expired payment is gone, not kept waiting
            tok.confirm_pay("1234")
        assert e.value.code == P.ERR_STATE
        # the same request sent fresh at that clock: refused the same way
        with pytest.raises(ErrorReply) as e:
            tok.pay(req)
        assert e.value.code == P.ERR_EXPIRED

        # confirmed before its expiry, a request is paid (the clock may be set back: nothing
        # was signed since provisioning)
        tok.set_time(int(time.time()))
        req2 = world.request(PAYEE, 800, expiry=300)
        assert tok.pay(req2).summary is not None
        note = tok.confirm_pay("1234")
        n = codec.decode(note, codec.NOTE)
        assert (n.serial, n["amount"], n["payee"]) == (1, 800, PAYEE)
        info = tok.info()
        assert info["next_serial"] == 2 and info["allowance"]["spent"] == 800


@pytest.mark.micropython
def test_pins_and_names_that_are_not_utf8(world: TokenWorld) -> None:
    """Bytes that are not UTF-8 in a PIN field were `INTERNAL ... UnicodeError` with an empty
    reason. They are PINs that break the rule: a wrong try, counted like a PIN with letters,
    and the reply says what is wrong; a bad new PIN is refused before the old one is tried."""
    state = world.provisioned(PAYER)
    with world.running(state, "headless") as (_sim, tok):
        tries = tok.info()["pin_tries_left"]
        assert tok.pay(world.request(PAYEE, 100)).summary is not None
        for t, payload in (
            (P.PAY_CONFIRM, b"\xff\xfe12"),
            (P.SHOW_BALANCE, b"12\xc3"),
            (P.CHANGE_PIN, b"\xff\x001234"),
            (P.WIPE, b"\x80\x81\x82\x83"),
            (P.PAY_CONFIRM, b"12a4"),  # letters: the same rule, the same count
        ):
            with pytest.raises(ErrorReply) as e:
                tok.link.call(t, payload, timeout_ms=20000)
            assert e.value.code == P.ERR_PIN_WRONG, (P.type_name(t), e.value)
            assert "PIN must be digits only" in e.value.text, e.value
            tries -= 1
            assert tok.info()["pin_tries_left"] == tries
        with pytest.raises(ErrorReply) as e:
            tok.link.call(P.CHANGE_PIN, b"1234\x00\xff\xfe\xfd\xfc")
        assert e.value.code == P.ERR_BAD_PAYLOAD
        assert e.value.text == "new PIN: PIN must be digits only"
        assert tok.info()["pin_tries_left"] == tries  # not counted
        note = tok.confirm_pay("1234")  # the payment still waits; the right PIN pays it
        assert codec.decode(note, codec.NOTE).serial == 1
        assert tok.info()["pin_tries_left"] == 10


@pytest.mark.micropython
def test_provisioning_names_and_pins_that_are_not_utf8(world: TokenWorld) -> None:
    with world.running(world.new_state(), "headless") as (_sim, tok):
        with pytest.raises(ErrorReply) as e:
            tok.link.call(P.PROVISION_FILE, b"\x0f" + b"\xff" * 15 + b"{}")
        assert e.value.code == P.ERR_BAD_PAYLOAD
        assert e.value.text == "PROVISION_FILE: the file name is not UTF-8"
        tk = bytes.fromhex(tok.info()["transport_key"])

        def field(tag: int, v: bytes) -> bytes:
            return bytes([tag]) + varint(len(v)) + v

        bundle = (
            field(1, b"\x01" * 32) + field(2, b"T" * 50) + field(3, b"\xff\xfe\xfd\xfc")
            + field(4, b"\x00" * 32)
        )  # fmt: skip
        blob = ecies.seal(tk, bundle, tokenmsg.PROVISION_INFO)
        with pytest.raises(ErrorReply) as e:
            tok.link.call(P.PROVISION_COMMIT, blob, timeout_ms=30000)
        assert e.value.code == P.ERR_PROVISION
        assert e.value.text == "provisioning bundle: pin: PIN must be digits only"
        assert tok.info()["state"] == "blank"


@pytest.mark.micropython
def test_frames_above_the_agreed_max_payload_are_refused(world: TokenWorld) -> None:
    """HELLO with max_payload 64, then a 1000-byte PING in one frame: the token answered with a
    large reply served from its receive buffer, which the BULK_READ frames overwrote (right
    CRC announced, other bytes served)."""
    state = world.provisioned(PAYER)
    with world.running(state, "headless") as (sim, tok):
        tok.close()
        c = Client(host_link.SerialTransport(sim.port), timeout_ms=3000)
        try:
            c.max_payload = 64  # announced in HELLO (its buffers hold 1024-byte frames)
            assert c.hello()["max_payload"] == 1024 and c.peer_max_payload == 64
            data = bytes((i * 7 + 3) & 0xFF for i in range(1000))
            c.peer_max_payload = 1024  # break the agreement: one 1000-byte frame
            with pytest.raises(ErrorReply) as e:
                c.ping(data)
            assert e.value.code == P.ERR_OVERSIZE, e.value
            assert "1000 payload bytes, above the 64 per frame agreed in HELLO" in e.value.text
            c.peer_max_payload = 64  # within the agreement: bulk both ways, byte-exact
            assert c.ping(data) == data
            assert c.ping(b"x" * 60) == b"x" * 60
        finally:
            c.close()


# ---------------------------------------------------------------------------- host side


INFO = {
    "state": "ready", "account": PAYER, "currency": "CNY", "next_serial": 1,
    "allowance": {"serial": 1, "cap": 5000, "spent": 0, "left": 5000, "expiry": 2000000000,
                  "first_serial": 1},
    "pin_tries_left": 10, "notes": 0, "board": "fake", "firmware": "x",
}  # fmt: skip


def test_a_token_that_answers_wait_for_ever(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every WAIT restarted the timer: `hubi token info` hung for ever. One request may now be
    kept waiting for Client.wait_limit_ms (a minute for messages that wait for no person)."""
    assert token_client.WAIT_LIMIT_MS <= 60_000 < token_client.PERSON_WAIT_MS
    f = FakeToken({})
    f.srv.handle(P.SET_TIME, f.wait_forever)
    f.srv.handle(P.GET_INFO, f.wait_forever)
    f.thread.start()
    try:
        c = host_link.connect(f.port, timeout_ms=500)
        try:
            t0 = time.monotonic()
            with pytest.raises(LinkTimeout) as e:
                c.call(P.GET_INFO, wait_limit_ms=1500)
            took = time.monotonic() - t0
            assert 1.4 < took < 6, took  # room for a loaded machine (the fake waits 8 s)
            assert "GET_INFO (0x20)" in str(e.value) and "only answered WAIT" in str(e.value)
            assert "limit of 1500 ms" in str(e.value)
        finally:
            c.close()
        # the CLI: a limit of 1.5 s is 5 s, its timeout per attempt (WAIT never shortens that)
        monkeypatch.setattr(token_client, "WAIT_LIMIT_MS", 1500)
        code, out = run("info", "--port", f.port)
        assert code == 2 and "only answered WAIT" in out and "SET_TIME" in out, out
        assert "limit of 5000 ms" in out, out
    finally:
        f.close()


@pytest.mark.parametrize(
    "reply, said",
    [
        (b'{"state": "\xff\xfe"}', "reply to GET_INFO (0x20) is not UTF-8"),
        (b"hello", "reply to GET_INFO (0x20) is not valid JSON"),
        (b"[" * 100000 + b"]" * 100000, "reply to GET_INFO (0x20) is not valid JSON (nested"),
        (b"[]", "reply to GET_INFO (0x20) is a list, not a JSON object"),
        (b'{"state": "ready"}', "reply to GET_INFO (0x20) lacks 'account'"),
        (
            json.dumps(dict(INFO, allowance=dict(INFO["allowance"], left="lots"))).encode(),
            "'allowance.left' is a string, not a whole number",
        ),
        (json.dumps(dict(INFO, notes=-1)).encode(), "'notes' is -1, not in 0..2^64-1"),
        (json.dumps(dict(INFO, state="odd")).encode(), "'state' is 'odd', not 'ready' or"),
        (json.dumps(dict(INFO, currency=7)).encode(), "'currency' is a whole number, not a str"),
    ],
)
def test_malformed_info_replies(reply: bytes, said: str) -> None:
    with fake_token({P.GET_INFO: reply}) as f:
        code, out = run("info", "--port", f.port)
    assert code == 2, out
    assert out.startswith("token: ") and said in out, out
    assert "Traceback" not in out


def test_info_shows_the_tokens_text_as_text() -> None:
    """Terminal escapes and rich markup from the token reached the terminal."""
    info = dict(INFO, account="[red]X[/red]\x1b[2J", board="[bold]b\x1b]0;pwn\x07")
    info["currency"] = "C\u202eNY"
    with fake_token({P.GET_INFO: json.dumps(info).encode()}) as f:
        r = CliRunner().invoke(main, ["token", "info", "--port", f.port])
    assert r.exit_code == 0, r.output
    out = r.output
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out, repr(out)
    assert "[red]X[/red]\\x1b[2J" in out and "[bold]b\\x1b]0;pwn\\x07" in out, out
    assert "C\\u202eNY" in out


def test_a_one_byte_error_reply_is_named_as_such() -> None:
    """A 1-byte ERROR was reported as BAD_PAYLOAD (0x0007), a code the token never sent."""

    def short_error(_payload: bytes) -> bytes:
        f.srv.transport.write(link.encode_frame(P.ERROR, f.srv._cur_seq, b"\x01"))
        return b""

    with fake_token({}) as f:
        f.srv.handle(P.GET_INFO, short_error)
        code, out = run("info", "--port", f.port)
    assert code == 2, out
    assert "GET_INFO (0x20) was answered with a malformed ERROR reply (1 byte, no error" in out
    assert "BAD_PAYLOAD" not in out


@pytest.mark.parametrize(
    "reply, said",
    [
        (b"", "reply to PAY_REQUEST (0x28) is empty"),
        (b"\x03junk", "reply to PAY_REQUEST (0x28) has status 3, not 1 (a note) or 2"),
        (b"\x02{not json", "reply to PAY_REQUEST (0x28) is not valid JSON"),
        (b"\x02[1]", "reply to PAY_REQUEST (0x28) is a list, not a JSON object"),
        (b'\x02{"payee": "x"}', "reply to PAY_REQUEST (0x28) lacks 'amount'"),
    ],
)
def test_malformed_pay_replies(tmp_path: Path, reply: bytes, said: str) -> None:
    req = tmp_path / "req.bin"
    req.write_bytes(b"\x01\x02\x03")  # the fake token reads nothing
    with fake_token({P.GET_INFO: json.dumps(INFO).encode(), P.PAY_REQUEST: reply}) as f:
        code, out = run(
            "pay", "--port", f.port, "--request", str(req), "--yes", "--pin", "1234",
            "--out", str(tmp_path / "note.bin"),
        )  # fmt: skip
    assert code == 2 and said in out, out
    assert not (tmp_path / "note.bin").exists()


def test_pay_reply_that_is_not_a_note(tmp_path: Path) -> None:
    """`pay --out F` wrote whatever the token returned to F before decoding it, and the error
    said nothing of the file: the bytes are now kept apart, and the message says where."""
    req = tmp_path / "req.bin"
    req.write_bytes(b"\x01\x02\x03")
    junk = bytes(range(7, 250))
    out_file = tmp_path / "note.bin"
    with fake_token({P.PAY_REQUEST: b"\x01" + junk}) as f:
        code, out = run(
            "pay", "--port", f.port, "--request", str(req), "--out", str(out_file), "--json"
        )
    assert code == 2, out
    assert "the reply to PAY_REQUEST is not a note" in out, out
    kept = tmp_path / "note.bin.not-a-note"
    assert f"its {len(junk)} bytes were written to {kept} (not to {out_file})" in out, out
    assert not out_file.exists() and kept.read_bytes() == junk
    assert "hubi token note --port" in out


def test_malformed_replies_to_the_other_messages(tmp_path: Path) -> None:
    """notes, allowance, balance, notice: the shapes the CLI prints are checked."""
    notice = tmp_path / "n.bin"
    notice.write_bytes(b"\x01\x02\x03")
    replies: dict[int, bytes | Callable[[bytes], bytes]] = {
        P.GET_INFO: json.dumps(INFO).encode(),
        P.NOTE_LIST: json.dumps([{"serial": 1, "time": 5, "amount": "x"}]).encode(),
        P.SHOW_BALANCE: json.dumps({"balance": 5}).encode(),
        P.LOAD_NOTICE: b"\xff",
    }
    with fake_token(replies) as f:
        code, out = run("notes", "--port", f.port)
        assert code == 2 and "reply to NOTE_LIST (0x2c): '[0].amount' is a string" in out, out
        code, out = run("balance", "--port", f.port, "--pin", "1234")
        assert code == 2 and "reply to SHOW_BALANCE (0x31) lacks 'balance_text'" in out, out
        code, out = run("notice", "--port", f.port, str(notice))
        assert code == 2 and "reply to LOAD_NOTICE (0x30) is not UTF-8" in out, out


def test_notes_with_a_time_no_calendar_holds() -> None:
    entry = {
        "serial": 1, "time": 2**63, "amount": 5, "payee": "[b]P\x1b[1m", "purpose": "",
        "note_id": "ab" * 16, "receipt": False,
    }  # fmt: skip
    replies = {P.GET_INFO: json.dumps(INFO).encode(), P.NOTE_LIST: json.dumps([entry]).encode()}
    with fake_token(replies) as f:
        r = CliRunner().invoke(main, ["token", "notes", "--port", f.port])
    assert r.exit_code == 0, r.output
    assert f"{2**63} (Unix time)" in r.output and "[b]P\\x1b[1m" in r.output
    assert "\x1b" not in r.output


def test_error_texts_from_the_token_are_escaped() -> None:
    """An ERROR text with terminal escapes (valid UTF-8) went to the terminal as it was."""

    def refuse(_payload: bytes) -> bytes:
        raise ErrorReply(P.ERR_VERIFY, "\x1b[31mred\x1b]0;title\x07 [bold]x[/bold]")

    with fake_token({P.GET_INFO: refuse}) as f:
        r = CliRunner().invoke(main, ["token", "info", "--port", f.port])
    assert r.exit_code == 2
    assert "\x1b" not in r.output and "\x07" not in r.output, repr(r.output)
    assert "\\x1b[31mred" in r.output and "[bold]x[/bold]" in r.output
