"""hubi.jsonload: JSON from outside is the document or one JsonError (a ValueError) whose message
names what was read and why, never a RecursionError or a UnicodeDecodeError; and the callers
that read a peer's reply, an upload, a file or a log entry with it say so in their own terms."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

from hubi import kmc
from hubi.bank import api
from hubi.bank.client import BankError, _doc
from hubi.consortium import entries as ent
from hubi.consortium.errors import ConsortiumError, EntryError
from hubi.consortium.service import NodeConfig
from hubi.jsonload import MAX_DEPTH, JsonError, loads
from hubi.token.client import BadReply, parse_json
from hubi_core import protocol as P

DEEP_ARRAYS = b"[" * 100_000 + b"]" * 100_000  # past the parser's stack
DEEP_OBJECTS = b'{"a":' * 100_000 + b"1" + b"}" * 100_000


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (DEEP_ARRAYS, f"nested too deeply: more than {MAX_DEPTH} levels"),
        (DEEP_OBJECTS, f"nested too deeply: more than {MAX_DEPTH} levels"),
        (b"[" * 100_000, "nested too deeply"),  # not even closed: the depth is what is said
        (b"[" * 65 + b"]" * 65, f"nested too deeply: more than {MAX_DEPTH} levels"),  # parses
        (b'{"a": "\xc3\xa9", "b": "\xff"}', "is not UTF-8 text (byte 18 of 21)"),
        (b'{"amount": 5, "payee": "BK', "is not valid JSON (Unterminated string"),
        (b'{"amount": 5,', "is not valid JSON (Expecting property name"),
        (b"[1, 2] 3", "is not valid JSON (Extra data: line 1 column 8"),
        (b"1" * 5000, f"holds an integer of more than {sys.get_int_max_str_digits()} digits"),
        (b"[" + b"9" * 5000 + b"]", "holds an integer of more than"),
        (b"", "is empty"),
        (b" \n\t", "is empty"),
        ("", "is empty"),
    ],
)
def test_what_is_not_json_is_one_error_naming_the_thing_and_the_cause(
    data: bytes | str, words: str
) -> None:
    with pytest.raises(JsonError) as exc:
        loads(data, "the reply from BKB")
    assert isinstance(exc.value, ValueError)  # callers catching ValueError still do
    assert str(exc.value).startswith("the reply from BKB "), exc.value
    assert words in str(exc.value), exc.value


@pytest.mark.parametrize(
    "doc",
    [
        {"records": [{"book": "BKA", "number": 7, "sig": "ab" * 32}], "missing": []},
        ["[{", '"]}\\', {"k[": '\\"[[['}, "\u00e9\u4e2d", None, True, 1.5, -(10**40)],
        json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH),  # the limit itself is fine
        "just a string",
        0,
    ],
)
def test_json_comes_back_as_json_loads_gives_it(doc: object) -> None:
    text = json.dumps(doc, ensure_ascii=False)
    assert loads(text, "x") == doc
    assert loads(text.encode(), "x") == doc
    assert loads(b"\xef\xbb\xbf" + text.encode(), "x") == doc  # a byte-order mark, as json.loads


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    text = json.dumps({"a": "[" * 1000, "b": ['\\"' + "{" * 500], "c": "\\" * 7 + "[[["})
    assert loads(text, "x")["a"] == "[" * 1000


def test_the_depth_limit_is_a_parameter_and_none_leaves_the_parsers_own() -> None:
    doc = b"[" * 100 + b"]" * 100
    with pytest.raises(JsonError, match="more than 64 levels"):
        loads(doc, "x")
    assert loads(doc, "x", max_depth=100) == json.loads(doc)
    assert loads(doc, "x", max_depth=None) == json.loads(doc)
    with pytest.raises(JsonError, match=r"x is not valid JSON \(nested too deeply\)$"):
        loads(DEEP_ARRAYS, "x", max_depth=None)


# ------------------------------------------------------------------ through the real callers


def test_a_tokens_reply_nested_past_the_limit_is_a_bad_reply_naming_the_message() -> None:
    for raw in (DEEP_ARRAYS, b"[" * 200 + b"]" * 200):
        with pytest.raises(BadReply) as exc:
            parse_json(P.GET_INFO, raw)
        assert str(exc.value).startswith("reply to GET_INFO (0x20) is not valid JSON (nested")
    with pytest.raises(BadReply, match=r"reply to GET_INFO \(0x20\) is not UTF-8 text \(byte 1 "):
        parse_json(P.GET_INFO, b"[\xff]")
    assert parse_json(P.GET_INFO, b'{"state": "blank"}') == {"state": "blank"}


def test_a_bank_nodes_answer_that_is_no_json_is_not_a_bank() -> None:
    for body in (DEEP_ARRAYS, b"1" * 5000, b"\xff", b""):
        with pytest.raises(BankError) as exc:
            _doc(httpx.Response(200, content=body))
        assert exc.value.code == "not-a-bank", exc.value
    assert _doc(httpx.Response(200, content=b'{"ok": 1}')) == {"ok": 1}


def test_an_upload_that_is_no_json_is_a_400_naming_the_body() -> None:
    for body, words in [
        (DEEP_ARRAYS, "body is not valid JSON (nested too deeply"),
        (b'{"hex": "00"', "body is not valid JSON (Expecting ',' delimiter"),
        (b'{"hex": "\xff"}', "body is not UTF-8 text (byte 9 of 12)"),
    ]:
        with pytest.raises(api.ApiError) as exc:
            api._decode_upload(body, "application/json")
        assert (exc.value.status, exc.value.code) == (400, "bad-json"), exc.value
        assert exc.value.message.startswith(words), exc.value.message
    assert api._decode_upload(b'{"hex": "00ff"}', "application/json") == b"\x00\xff"


def test_a_node_configuration_that_is_no_json_names_the_file() -> None:
    for raw, words in [
        (b'{"orderer": ' + b"[" * 100 + b"]" * 100 + b"}", "more than 64 levels"),
        (b"\xff\xfe\x00binary", "not UTF-8 text (byte 0 of 9)"),
        (b"", "is empty"),
    ]:
        with pytest.raises(ConsortiumError) as exc:
            NodeConfig.from_json(raw, "/banks/BKA/consortium.json")
        assert str(exc.value).startswith("/banks/BKA/consortium.json is "), exc.value
        assert words in str(exc.value), exc.value


def test_a_trust_bundle_whose_consortium_file_is_no_json_is_named(tmp_path: Path) -> None:
    (tmp_path / "consortium.json").write_bytes(DEEP_OBJECTS)
    with pytest.raises(kmc.TrustBundleError) as exc:
        kmc.load_trust(tmp_path)
    said = str(exc.value)
    assert said.startswith(f"trust bundle {tmp_path}: consortium.json is not valid JSON"), said
    assert "nested too deeply" in said


def test_log_entries_keep_the_rule_every_bank_reads_them_by() -> None:
    """What parses in the log is the same at every bank, however deep the call that reads it:
    at most MAX_DEPTH levels (the parser's own limit is the stack left to it: an entry 950
    deep parsed at the top of a thread and not 50 calls down), UTF-16 read as json.loads
    reads it; still never another exception."""
    entry = ent.NoteEntry(b"\x01\x02", [b"\x03"], "BKA", 5)
    assert ent.decode_entry(entry.encode()) == entry
    assert ent.decode_entry(entry.encode().decode().encode("utf-16")) == entry
    junk = json.loads(entry.encode())
    junk["x"] = json.loads("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1))  # the whole: 64 deep
    assert ent.decode_entry(json.dumps(junk).encode()) == entry
    junk["x"] = json.loads("[" * 900 + "]" * 900)
    deep = json.dumps(junk).encode()  # parses at the top of a thread ...

    def at_depth(n: int) -> str:  # ... and gets one verdict however deep the call
        if n:
            return at_depth(n - 1)
        with pytest.raises(EntryError) as exc:
            ent.decode_entry(deep)
        return str(exc.value)

    assert (
        at_depth(0)
        == at_depth(60)
        == (f"log entry is not valid JSON (nested too deeply: more than {MAX_DEPTH} levels)")
    )
    for value, words in [
        (DEEP_ARRAYS, "log entry is not valid JSON (nested too deeply"),
        (b"", "log entry is empty"),
        (b"\xff\xff", "log entry is not JSON"),
        (b"{", "log entry is not valid JSON (Expecting property name"),
    ]:
        with pytest.raises(EntryError) as exc:
            ent.decode_entry(value)
        assert str(exc.value).startswith(words), exc.value
