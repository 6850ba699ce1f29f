"""The consortium file: founders' signatures, join at a new epoch (chained by digest), the
validation policy, compatibility with files written before the optional fields existed, the
token's MicroPython reading it, and `hubi consortium init/join/sign/show`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi import kmc as kmc_mod
from hubi.cli import main
from hubi_core.consortium import BankEntry, Consortium
from hubi_core.errors import VerifyError
from hubi_core.verify import Trust
from tests.mpy import ROOT, run_mpy
from tests.world import make_world


def test_quorum_is_more_than_half_and_always_the_payers_bank() -> None:
    w = make_world(("BKA", "BKB", "BKC", "BKD"))
    c = w.consortium
    assert c.quorum() == 3
    assert c.quorum_ok(["BKA", "BKB", "BKC"], "BKA") == (True, "")
    ok, why = c.quorum_ok(["BKB", "BKC", "BKD"], "BKA")
    assert not ok and "payer's bank BKA" in why
    ok, why = c.quorum_ok(["BKA", "BKB"], "BKA")
    assert not ok and "2 of 4" in why and "needs 3" in why
    ok, why = c.quorum_ok(["BKA", "BKB", "BKZ"], "BKA")
    assert not ok and "BKZ" in why  # a stranger does not count
    assert c.quorum_ok(["BKA", "BKA", "BKB"], "BKA")[0] is False  # a bank counts once
    c.policy = {"rule": "majority", "include_payer_bank": True, "include_payee_bank": True}
    ok, why = c.quorum_ok(["BKA", "BKC", "BKD"], "BKA", "BKB")
    assert not ok and "payee's bank BKB" in why
    c.policy = {"rule": "all"}
    assert c.quorum() == 4


def test_a_file_without_the_new_fields_keeps_its_signatures() -> None:
    w = make_world(("BKA", "BKB"))
    text = w.consortium.to_json()
    doc = json.loads(text)
    assert "previous" not in doc and "orderer" not in doc
    again = Consortium.from_json(text)
    assert again.to_json() == text
    again.check_signatures(w.trust)


def test_join_makes_a_chained_epoch_signed_by_the_founders() -> None:
    w = make_world(("BKA", "BKB", "BKC"))
    c1 = w.consortium
    kmc = kmc_mod.Kmc.create("BKE", seed=b"joiner")
    priv, sep = kmc.issue("BKE")
    entry = BankEntry("BKE", sep, kmc.public.digest(), ["http://127.0.0.1:9999"])
    entry.extra["etcd"] = ["http://127.0.0.1:2379"]
    c2 = c1.with_bank(entry, 1_800_000_000)
    assert c2.epoch == 2 and c2.previous == c1.digest()
    assert c2.banks["BKE"].extra["joined"] == 2
    assert c2.founders == c1.founders
    assert c2.missing_signatures() == ["BKA", "BKB", "BKC"]
    matrices = dict(w.trust.matrices)
    matrices["BKE"] = kmc.public
    t2 = Trust(c2, matrices)
    for b in ("BKA", "BKB"):
        c2.sign(b, w.banks[b].private)
    with pytest.raises(VerifyError, match="founder BKC has not signed"):
        c2.check_signatures(t2)
    c2.sign("BKC", w.banks["BKC"].private)
    c2.sign("BKE", priv)  # the joiner may sign too; its signature is checked
    c2.check_signatures(t2)
    c2.check_successor(c1)
    assert c2.etcd_endpoints() == ["http://127.0.0.1:2379"]
    assert c2.quorum() == 3  # 4 banks now
    # a forged extra signature, a tampered body or a broken chain are all caught
    bad = Consortium.from_json(c2.to_json())
    bad.signatures["BKE"] = c2.signatures["BKA"]
    with pytest.raises(VerifyError, match="signature of BKE"):
        bad.check_signatures(t2)
    bad = Consortium.from_json(c2.to_json())
    bad.banks["BKE"].endpoints = ["http://evil"]
    with pytest.raises(VerifyError, match="founder BKA"):
        bad.check_signatures(t2)
    skip = c2.with_bank(BankEntry("BKF", sep, kmc.public.digest()), 1_800_000_001)
    with pytest.raises(VerifyError, match="epoch 3 does not follow epoch 1"):
        skip.check_successor(c1)
    rekey = c2.successor(1_800_000_002)
    rekey.banks["BKA"] = BankEntry("BKA", sep, c1.banks["BKA"].matrix)
    with pytest.raises(VerifyError, match="BKA changed its key"):
        rekey.check_successor(c2)
    with pytest.raises(ValueError, match="already in consortium"):
        c2.with_bank(BankEntry("BKA", sep, kmc.public.digest()), 0)


def test_micropython_reads_a_joined_file(tmp_path: Path) -> None:
    w = make_world(("BKA", "BKB"))
    c1 = w.consortium
    c1.orderer = {"kind": "etcd", "prefix": "hubi/test/"}
    c1.signatures = {}
    for b in ("BKA", "BKB"):
        c1.sign(b, w.banks[b].private)
    kmc = kmc_mod.Kmc.create("BKC", seed=b"mpy")
    _, sep = kmc.issue("BKC")
    c2 = c1.with_bank(BankEntry("BKC", sep, kmc.public.digest(), ["http://x"]), 1_800_000_000)
    for b in ("BKA", "BKB"):
        c2.sign(b, w.banks[b].private)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"c1": c1.to_json(), "c2": c2.to_json()}))
    code = (
        "import json\n"
        "from hubi_core.consortium import Consortium\n"
        f"spec = json.load(open({str(spec)!r}))\n"
        "c1 = Consortium.from_json(spec['c1'])\n"
        "c2 = Consortium.from_json(spec['c2'])\n"
        "c2.check_successor(c1)\n"
        "d = json.loads(spec['c1'])\n"
        "d['name'] = 'a/b'\n"
        "try:\n"
        "    Consortium.from_json(json.dumps(d))\n"
        "    nested = 'accepted'\n"
        "except Exception as e:\n"
        "    nested = str(e)\n"
        "print(json.dumps({'same': c2.to_json() == spec['c2'], 'epoch': c2.epoch,"
        " 'quorum': c2.quorum(), 'prefix': c2.log_prefix(),"
        " 'ok': c2.quorum_ok(['BKA', 'BKB'], 'BKA')[0],"
        " 'digest': c1.digest().hex(), 'nested': nested}))\n"
    )
    out = json.loads(run_mpy(code=code, heapsize="512k").strip().splitlines()[-1])
    assert out == {
        "same": True,
        "epoch": 2,
        "quorum": 2,
        "prefix": "hubi/test/",
        "ok": True,
        "digest": c1.digest().hex(),
        "nested": "consortium name 'a/b' may only use A-Z a-z 0-9 . _ -",
    }


def _cli(*args: str) -> dict:
    r = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_cli_init_join_sign_show(tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = _cli(
        "consortium",
        "init",
        "--home",
        str(home),
        "--banks",
        "BKA,BKB,BKC",
        "--name",
        "cli",
        "--endpoint",
        "BKA=http://127.0.0.1:8701",
        "--orderer",
        "embedded",
        "--json",
    )
    assert out["epoch"] == 1 and out["signatures"] == ["BKA", "BKB", "BKC"]
    assert out["orderer"] == {"kind": "embedded", "prefix": "hubi/cli/"}
    # keys are files with owner-only permissions, never printed
    assert (home / "banks" / "BKA" / "identity.secret").stat().st_mode & 0o077 == 0
    # join with every founder's key present: installed at once
    out = _cli("consortium", "join", "--home", str(home), "--bank", "BKD", "--json")
    assert out == {"installed": True, "epoch": 2, "signed": ["BKA", "BKB", "BKC", "BKD"]}
    shown = _cli("consortium", "show", "--home", str(home), "--json")
    assert [b["id"] for b in shown["banks"]] == ["BKA", "BKB", "BKC", "BKD"]
    assert shown["previous"] and shown["quorum"] == 3
    assert (home / "trust" / "epochs" / "1.json").exists()
    # join when one founder's key lives elsewhere: pending until that founder signs
    away = tmp_path / "away"
    (home / "banks" / "BKC").rename(away)
    out = _cli("consortium", "join", "--home", str(home), "--bank", "BKE", "--json")
    assert out["installed"] is False and out["missing"] == ["BKC"]
    assert _cli("consortium", "show", "--home", str(home), "--json")["epoch"] == 2
    away.rename(home / "banks" / "BKC")
    out = _cli("consortium", "sign", "--home", str(home), "--bank", "BKC", "--json")
    assert out == {"installed": True, "epoch": 3}
    trust = kmc_mod.load_trust(home / "trust")
    assert trust.consortium.bank_ids() == ["BKA", "BKB", "BKC", "BKD", "BKE"]
    prev = Consortium.from_json((home / "trust" / "epochs" / "2.json").read_text())
    trust.consortium.check_successor(prev)
    # errors name the problem and exit non-zero
    r = CliRunner().invoke(
        main, ["consortium", "join", "--home", str(home), "--bank", "BKA", "--json"]
    )
    assert r.exit_code == 2 and "already in consortium" in r.output


@pytest.mark.parametrize(
    "args, words",
    [
        (
            ["init", "--banks", "BKA,BKB", "--endpoint", "BKC=http://127.0.0.1:8703"],
            "'BKC=http://127.0.0.1:8703' names BKC, which is not among the banks BKA, BKB",
        ),
        (["init", "--banks", "BKA,BKB", "--endpoint", "BKA=127.0.0.1:8701"], "'127.0.0.1:8701'"),
        (["init", "--banks", "BKA,BKB", "--etcd", "BKB=http://127.0.0.1:99999"], "1-65535"),
        (["init", "--banks", "BKA,BKB", "--etcd", "BKB=http://"], "'http://' is not an http://"),
        (["join", "--bank", "BKC", "--endpoint", "ftp://bank.example"], "'ftp://bank.example'"),
        (["join", "--bank", "BKC", "--etcd", "bank.example:2379"], "'bank.example:2379'"),
        # the name makes the log's prefix hubi/<name>/: 'a/b' would sit inside consortium a's
        (["init", "--banks", "BKA,BKB", "--name", "a/b"], "'a/b' may only use A-Z a-z 0-9 . _ -"),
        (["init", "--banks", "BKA,BKB", "--name", "[b]x"], "'[b]x' may only use"),
        (["init", "--banks", "BKA,BKB", "--name", "x" * 33], "must be 1-32 characters"),
    ],
)
def test_cli_refuses_an_endpoint_or_a_name_it_cannot_use(
    tmp_path: Path, args: list[str], words: str
) -> None:
    """A peer or etcd URL that is not one, or one for a bank outside the file, used to be written
    into the signed file (or dropped) and failed only at the first request; a name with a '/'
    made a log prefix inside another consortium's. Each is a usage error naming it, and nothing
    is written."""
    home = tmp_path / "home"
    if args[0] == "join":
        _cli("consortium", "init", "--home", str(home), "--banks", "BKA,BKB", "--json")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    r = CliRunner().invoke(main, ["consortium", args[0], "--home", str(home), *args[1:]])
    said = " ".join(r.output.split())
    assert r.exit_code == 2 and "Invalid value for" in said and words in said, said
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_up_refuses_funds_no_balance_holds_before_it_starts_anything(tmp_path: Path) -> None:
    """`consortium up --funds` past 2^63 - 1 made the folder and the banks' keys, then failed
    funding the first demo account; it is a usage error now, and the folder is not made."""
    r = CliRunner().invoke(
        main, ["consortium", "up", "--dir", str(tmp_path / "c"), "--funds", str(1 << 63)]
    )
    said = " ".join(r.output.split())
    assert r.exit_code == 2 and "Invalid value for '--funds'" in said, said
    assert "0<=x<=9223372036854775807" in said and not (tmp_path / "c").exists()


def test_show_prints_an_ipv6_endpoint_whole(tmp_path: Path) -> None:
    """Rich took the host of http://[fe80::1]:8700 for markup and printed http://:8700."""
    home = str(tmp_path / "home")
    url = "http://[fe80::1]:8700"
    args = ["--banks", "BKA,BKB", "--endpoint", f"BKA={url}", "--orderer", "none"]
    _cli("consortium", "init", "--home", home, *args, "--json")
    r = CliRunner().invoke(main, ["consortium", "show", "--home", home])
    assert r.exit_code == 0 and f"BKA: {url}  etcd -" in r.output, r.output
    assert "orderer none" in r.output


def test_a_file_whose_name_would_nest_its_log_or_that_has_none_is_refused() -> None:
    c = make_world(("BKA", "BKB")).consortium
    assert Consortium.from_json(c.to_json()).log_prefix() == f"hubi/{c.name}/"
    for name, words in (("a/b", "may only use"), (None, "must be 1-32"), ("", "must be 1-32")):
        doc = json.loads(c.to_json())
        if name is None:
            del doc["name"]  # was a KeyError: 'name'
        else:
            doc["name"] = name
        with pytest.raises(ValueError, match=words):
            Consortium.from_json(json.dumps(doc))


def _damaged(doc: dict, path: str, value: object) -> str:
    """The file's JSON with one value replaced ("policy.rule", "banks.0.key"; _DROP removes
    it)."""
    doc = json.loads(json.dumps(doc))
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key = int(last) if isinstance(node, list) else last
    if value is _DROP:
        del node[key]
    else:
        node[key] = value
    return json.dumps(doc)


_DROP = object()
DAMAGE = [  # (where, what, the error's words)
    ("banks.0.key", _DROP, "bank BKA has no key"),
    ("banks.0", "BKA", "a bank entry must be an object, not a string"),
    ("banks.0.id", 5, "a bank entry's id must be a string, not a number"),
    ("banks.0.endpoints", "http://x", "bank BKA endpoints must be a list of strings"),
    ("banks.1.etcd", "http://x", "bank BKB etcd must be a list of strings"),
    ("banks", {"BKA": 1}, "consortium file must list its banks"),
    ("banks", [], "consortium file must list its banks"),
    ("policy", "majority", "policy must be an object, not a string"),
    ("policy.rule", "most", 'policy rule must be "majority", "all" or a count, not \'most\''),
    ("policy.rule", 3, "policy rule 3 must be a count of 1 to 2 (the banks)"),
    ("policy.rule", True, 'policy rule must be "majority", "all" or a count, not True'),
    ("policy.include_payer_bank", "yes", "policy include_payer_bank must be true or false"),
    ("policy.min_banks", 1, "policy has an unknown key 'min_banks'"),
    ("epoch", "one", "epoch must be a whole number of at least 1, not 'one'"),
    ("time", -1, "time must be a whole number of at least 0, not -1"),
    ("founders", "BKA", "founders must be a list of strings"),
    ("founders", ["BKA", "BKZ"], "founder BKZ is not one of the banks"),
    ("signatures", ["00"], "signatures must be an object, not a list"),
    ("orderer", "etcd", "orderer must be an object, not a string"),
]


def test_a_damaged_file_is_refused_with_what_is_wrong_on_both_interpreters(
    tmp_path: Path,
) -> None:
    """A file edited by hand, cut or from a faulty tool: each fault was a KeyError, a TypeError,
    an AttributeError or "dictionary update sequence element #0" (or, for a policy the banks
    can never meet, only a failed signature). Each is now named; the token's MicroPython reads
    the file with the same code and gives the same words."""
    c = make_world(("BKA", "BKB")).consortium
    doc = json.loads(c.to_json())
    texts = [_damaged(doc, where, value) for where, value, _ in DAMAGE]
    for text, (where, _, words) in zip(texts, DAMAGE):
        with pytest.raises(ValueError) as caught:
            Consortium.from_json(text)
        assert str(caught.value) == words, where
    spec = tmp_path / "damaged.json"
    spec.write_text(json.dumps(texts))
    code = (
        "import json\n"
        "from hubi_core.consortium import Consortium\n"
        f"texts = json.load(open({str(spec)!r}))\n"
        "said = []\n"
        "for t in texts:\n"
        "    try:\n"
        "        Consortium.from_json(t)\n"
        "        said.append('accepted')\n"
        "    except Exception as e:\n"
        "        said.append(str(e))\n"
        "print(json.dumps(said))\n"
    )
    said = json.loads(run_mpy(code=code, heapsize="512k").strip().splitlines()[-1])
    assert said == [words for _, _, words in DAMAGE]


def test_status_without_a_running_consortium_says_so(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "hubi.cli",
            "consortium",
            "status",
            "--json",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 2
    assert "hubi consortium up" in json.loads(r.stdout)["message"]
