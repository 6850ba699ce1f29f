"""Probe 25 of the consortium file's strict JSON check (shared/hubi_core/consortium.py): a
member name twice in one object.

Both json modules keep the last value of a repeated name, while a person reading the file (or
another parser) takes the first: a file that shows the founders one bank key and is used with
another. The check now refuses a name given twice in any object, naming it and where, with
the same words on the token (the real MicroPython unix port) as on the host; a name written
with escapes ("\\u0061", a surrogate pair) is the same name as its plain form.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hubi import kmc
from hubi_core.consortium import Consortium, json_problem
from hubi_core.errors import HubiError
from tests.mpy import run_mpy
from tests.world import make_world

pytestmark = pytest.mark.micropython

# Runs under MicroPython and CPython alike: the verdict on every case.
VERDICTS = r"""
import json, sys
from hubi_core.consortium import Consortium, json_problem
from hubi_core.errors import HubiError


def one(raw):
    text = raw.decode()
    try:
        Consortium.from_json(text)
        return ["ok", json_problem(text)]
    except HubiError as e:
        return ["refused", str(e)]
    except Exception as e:
        return ["CRASH", type(e).__name__ + ": " + str(e)]


with open(sys.argv[1]) as f:
    cases = json.load(f)
print(json.dumps([one(bytes.fromhex(h)) for h in cases]))
"""


def verdict_here(raw: bytes) -> list:
    text = raw.decode()
    try:
        Consortium.from_json(text)
        return ["ok", json_problem(text)]
    except HubiError as e:
        return ["refused", str(e)]
    except Exception as e:  # noqa: BLE001 - the point: no other exception may come out
        return ["CRASH", f"{type(e).__name__}: {e}"]


def verdicts_on_token(cases: list[bytes], tmp_path: Path) -> list[list]:
    script = tmp_path / "verdicts.py"
    script.write_text(VERDICTS)
    spec = tmp_path / "cases.json"
    spec.write_text(json.dumps([raw.hex() for raw in cases]))
    return json.loads(run_mpy(script=script, args=[str(spec)], heapsize="16M", timeout=300))


def cases() -> tuple[str, list[tuple[bytes, str | None]]]:
    """(the good file, [(a file, the refusal it must get or None)])."""
    good = make_world().consortium.to_json()
    doc = json.loads(good)
    key_b = doc["banks"][1]["key"]
    forged = "02" + "11" * 32
    out: list[tuple[bytes, str | None]] = [(good.encode(), None)]

    def at(text: str, needle: str, nth: int = 1) -> int:
        """The byte offset of the nth `needle` in text (the repeated key's opening quote)."""
        pos = -1
        for _ in range(nth):
            pos = text.index(needle, pos + 1)
        return len(text[:pos].encode())

    # the epoch twice at the top: the reader sees 1, the code used 7
    t = good.replace('"epoch":1,', '"epoch":1,"epoch":7,')
    out.append((t.encode(), f"duplicate name 'epoch' at byte {at(t, chr(34) + 'epoch', 2)}"))
    # a bank's key twice: the founders' reviewer sees the forged key first
    t = good.replace(f'"key":"{key_b}"', f'"key":"{forged}","key":"{key_b}"')
    out.append((t.encode(), f"duplicate name 'key' at byte {at(t, chr(34) + 'key', 3)}"))
    # the name written with an escape is the same name
    t = good.replace('"epoch":1,', '"epoch":1,"\\u0065poch":7,')
    out.append((t.encode(), f"duplicate name 'epoch' at byte {at(t, chr(34) + chr(92) + 'u0065')}"))
    # in the policy object, and with a one-letter escape
    t = good.replace('"rule":"majority"', '"rule":"all","ru\\u006ce":"majority"')
    out.append((t.encode(), f"duplicate name 'rule' at byte {at(t, chr(34) + 'ru' + chr(92))}"))
    # the signatures object: a second signature of BKA
    t = good.replace('"signatures":{"BKA":', '"signatures":{"BKA":"00","BKA":')
    out.append((t.encode(), f"duplicate name 'BKA' at byte {at(t, chr(34) + 'BKA' + chr(34), 4)}"))
    # an unknown member the code drops anyway: still refused (a reader cannot tell)
    t = good.replace('"epoch":1,', '"\U0001f600":1,"\\ud83d\\ude00":2,"epoch":1,')
    where = at(t, chr(34) + chr(92) + "ud83d")
    out.append((t.encode(), f"duplicate name '\\U0001f600' at byte {where}"))
    t = good.replace('"epoch":1,', '"\\u00e9":1,"\xe9":2,"epoch":1,')
    out.append((t.encode(), f"duplicate name '\\xe9' at byte {at(t, chr(34) + chr(0xE9))}"))
    # a name cut at 40 characters in the message
    long = "n" * 300
    t = good.replace('"epoch":1,', f'"{long}":1,"{long}":2,"epoch":1,')
    out.append((t.encode(), f"duplicate name '{'n' * 40}'... at byte {at(t, chr(34) + long, 2)}"))
    # the same name in two objects, or a name that only looks alike: not a repeat
    t = good.replace('"epoch":1,', '"x":{"a":1},"y":{"a":1},"z":[{"a":1},{"a":1}],"epoch":1,')
    out.append((t.encode(), None))
    t = good.replace('"epoch":1,', '"\\u00e9":1,"e\\u0301":2,"Epoch":3,"epoch\\u0000":4,"epoch":1,')
    out.append((t.encode(), None))
    return good, out


def test_a_name_twice_in_one_object_is_refused_alike_on_token_and_host(tmp_path: Path) -> None:
    _, got = cases()
    raws = [raw for raw, _ in got]
    here = [verdict_here(raw) for raw in raws]
    there = verdicts_on_token(raws, tmp_path)
    assert here == there, [(a, b) for a, b in zip(here, there, strict=True) if a != b]
    for (raw, want), verdict in zip(got, here, strict=True):
        if want is None:
            assert verdict == ["ok", None], (raw[:120], verdict)
        else:
            assert verdict == ["refused", f"consortium file is not JSON ({want})"], verdict


def test_the_hosts_trust_loader_refuses_it_naming_the_name(tmp_path: Path) -> None:
    """The trust folder a merchant or a bank loads: the file with a repeated key is refused,
    before any of it is used."""
    good, got = cases()
    w = make_world()
    trust = tmp_path / "trust"
    (trust / "matrices").mkdir(parents=True)
    for bank, k in w.kmcs.items():
        (trust / "matrices" / f"{bank}.pub").write_bytes(k.public.to_bytes())
    (trust / "consortium.json").write_text(good)
    assert kmc._load_trust(trust).consortium.epoch == 1  # the good file loads
    raw, want = got[2]  # the bank key given twice
    (trust / "consortium.json").write_bytes(raw)
    with pytest.raises(HubiError, match="duplicate name 'key' at byte"):
        kmc._load_trust(trust)
    assert want is not None and want.startswith("duplicate name 'key'")
