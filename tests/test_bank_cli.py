"""`hubi bank` and `hubi audit` end to end on a real home: init, accounts, funding, booking note
files, show; audit verify / locate / recover / restore with JSON and exit codes."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubi import kmc
from hubi.bank import restore
from hubi.bank.server import ServeConfig, build_node
from hubi.bank.store import StoreError
from hubi.cli import main
from hubi_core import codec, png
from tests.test_bank_support import make_url, postgres_server  # noqa: F401

pytestmark = pytest.mark.xdist_group("bank-cli")


def run(*args: str, code: int = 0) -> dict:
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert res.exit_code == code, res.output
    return json.loads(res.output) if "--json" in args else {"output": res.output}


def _account(home: Path, account: str) -> tuple[int, codec.Obj]:
    folder = home / "accounts"
    priv = int.from_bytes((folder / f"{account}.secret").read_bytes(), "big")
    return priv, codec.decode((folder / f"{account}.template").read_bytes(), codec.TEMPLATE)


def _notes(
    home: Path, folder: Path, payer: str, payee: str, count: int, first: int = 1
) -> list[Path]:
    priv, tpl = _account(home, payer)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for s in range(first, first + count):
        note = codec.sign(
            codec.make_note(tpl, s, 1_760_000_000 + s, 10 * s, payee, f"item {s}"), priv
        )
        p = folder / f"{payer}-{s:04d}.note"
        p.write_bytes(codec.encode(note))
        out.append(p)
    return out


@pytest.fixture(scope="module")
def made_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    h = tmp_path_factory.mktemp("home")
    kmc.create_home(h, ["BKA", "BKB"], seed=b"cli-test")
    return h


@pytest.fixture
def home(made_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the home for each test: the tests make treasuries and accounts in it (`bank
    init` in one made the next one's "treasury_created" false, whichever ran first)."""
    h = tmp_path_factory.mktemp("home") / "home"  # not in tmp_path: tests look at what is there
    shutil.copytree(made_home, h)
    return h


def test_bank_and_audit_cli(home: Path, tmp_path: Path) -> None:
    h = str(home)
    init = run("bank", "init", "--home", h, "--bank", "BKA", "--checkpoint-every", "16", "--json")
    assert init["treasury_created"] and init["schema_version"] >= 1
    assert not run("bank", "init", "--home", h, "--bank", "BKA", "--json")["treasury_created"]
    assert (home / "banks" / "BKA" / "treasury.secret").stat().st_mode & 0o777 == 0o600
    amy = run(
        "bank", "open-account", "BKA-amy", "--home", h, "--bank", "BKA", "--fund", "5000", "--json"
    )
    assert amy["funding"]["status"] == "booked" and "secret" not in json.dumps(amy["template"])
    run("bank", "open-account", "BKA-bo", "--home", h, "--bank", "BKA", "--json")
    assert (home / "accounts" / "BKA-amy.secret").stat().st_mode & 0o777 == 0o600
    run("bank", "fund", "BKA-bo", "700", "--home", h, "--bank", "BKA")
    files = _notes(home, tmp_path / "notes", "BKA-amy", "BKA-bo", 12)
    booked = run(
        "bank",
        "book",
        str(tmp_path / "notes"),
        "--home",
        h,
        "--bank",
        "BKA",
        "--batch",
        "5",
        "--json",
    )
    assert booked["ok"] and [o["status"] for o in booked["outcomes"]] == ["booked"] * 12
    again = run("bank", "book", str(files[3]), "--home", h, "--bank", "BKA", "--json")
    assert again["outcomes"][0]["replay"]
    (tmp_path / "junk.note").write_bytes(b"\x01\x03\x01junk")
    bad = run(
        "bank", "book", str(tmp_path / "junk.note"), "--home", h, "--bank", "BKA", "--json", code=1
    )
    assert bad["outcomes"][0]["status"] == "rejected"
    # One outcome per file, in the files' order: an empty file is a rejected note (it was
    # dropped: no outcome, exit 0), an image with no QR code in it is rejected with its reason.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a-empty.note").write_bytes(b"")
    with (mixed / "b-blank.png").open("wb") as f:
        png.write(f, 64, 64, [bytes([255] * 64)] * 64)
    shutil.copy(files[3], mixed / "c-again.note")
    shutil.copy(tmp_path / "junk.note", mixed / "d-junk.note")
    # a note as hex text, as `hubi token note` prints it (it was "unknown suite 48": the '0')
    (mixed / "e-hex.txt").write_text(files[4].read_bytes().hex() + "\n")
    out = run("bank", "book", str(mixed), "--home", h, "--bank", "BKA", "--json", code=1)
    assert [Path(o["file"]).name for o in out["outcomes"]] == sorted(os.listdir(mixed))
    statuses = [o["status"] for o in out["outcomes"]]
    assert statuses == ["rejected", "rejected", "booked", "rejected", "booked"], out
    assert "empty file" in out["outcomes"][0]["reason"] and out["outcomes"][2]["replay"]
    assert out["outcomes"][4]["replay"]  # the same note as files[4], booked above
    show = run("bank", "show", "BKA-amy", "--home", h, "--bank", "BKA", "--json")
    assert show["balance"] == 5000 - sum(10 * s for s in range(1, 13)) and show["records"] == 13
    assert "amy" in run("bank", "show", "BKA-amy", "--home", h, "--bank", "BKA")["output"]

    db = home / "banks" / "BKA" / "bank.db"
    url = f"sqlite:///{db}"
    clean = run("audit", "verify", "--db", url, "--home", h, "--json")
    assert (
        clean["ok"]
        and clean["checks"]["balances"] == "checked"
        and clean["checks"]["checkpoints"] >= 1
    )
    assert run("audit", "verify", "--db", url, "--json", "--chain-only")["ok"]
    assert "clean" in run("audit", "verify", "--db", url, "--trust", str(home / "trust"))["output"]

    backup = tmp_path / "standby.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    shutil.copy(db, backup)
    con = sqlite3.connect(db)
    con.execute("DELETE FROM records WHERE book = 'BKA-amy' AND n = 7")
    con.commit()
    con.close()
    bad = run("audit", "verify", "--db", url, "--home", h, "--json", code=1)
    assert [(f["book"], f["record"], f["kind"]) for f in bad["findings"]] == [
        ("BKA-amy", 7, "missing")
    ]
    human = run("audit", "verify", "--db", url, "--home", h, code=1)["output"]
    assert "missing" in human and "BKA-amy #7" in human
    loc = run("audit", "locate", "--db", url, "--book", "BKA-amy", "--home", h, "--json")
    assert loc["record"] == 7 and loc["kind"] == "debit" and loc["delta"] == -60
    payees = tmp_path / "payees.txt"
    payees.write_text("\n".join([f"BKA-{i:08d}" for i in range(3000)] + ["BKA-bo"]) + "\n")
    purposes = tmp_path / "purposes.txt"
    purposes.write_text("\n".join([f"item {i}" for i in range(100)] + ["", "misc"]) + "\n")
    found = run(
        "audit",
        "recover",
        "--db",
        url,
        "--book",
        "BKA-amy",
        "--payees",
        str(payees),
        "--purposes",
        str(purposes),
        "--home",
        h,
        "--json",
    )
    assert found["found"] == 1
    got = found["candidates"][0]
    assert (got["payee"], got["serial"], got["amount"], got["purpose"], got["note_in_db"]) == (
        "BKA-bo",
        6,
        60,
        "item 6",
        True,
    )
    # a candidates file that is not text, and a book that is not there, are named plainly
    latin = tmp_path / "payees-latin1.txt"
    latin.write_bytes("BKA-bö\n".encode("latin-1"))
    for book, cands, words in (
        ("BKA-amy", latin, f"{latin} is not UTF-8 text (byte 5)"),
        ("BKA-nobody", payees, f"no book BKA-nobody in {url}"),
    ):
        args = ["--book", book, "--payees", str(cands), "--purposes", str(purposes), "--json"]
        err = run("audit", "recover", "--db", url, "--home", h, *args, code=2)
        assert err["error"] == "RecoveryError" and words in err["message"], err
    # a serial range past what a serial holds, or too wide to try, is a usage error (a range of
    # 10^11 took 2.3 GB before a MemoryError; 2^64 was an OverflowError naming nothing)
    for serials, words in (
        ("1-100000000000", "a range of 100,000,000,000 serials: at most 1,000,000"),
        ("18446744073709551616", "serials must be 0 <= A <= B < 2^64"),
    ):
        args = ["--book", "BKA-amy", "--payees", str(payees), "--purposes", str(purposes)]
        res = CliRunner().invoke(
            main, ["audit", "recover", "--db", url, "--home", h, *args, "--serials", serials]
        )
        assert res.exit_code == 2 and "Invalid value for --serials" in res.output, res.output
        assert words in res.output, res.output
    restored = run(
        "audit", "restore", "--db", url, "--backup", f"sqlite:///{backup}", "--home", h, "--json"
    )
    assert restored["ok"] and restored["restored"] == [{"book": "BKA-amy", "record": 7}]
    assert run("audit", "verify", "--db", url, "--home", h, "--json")["ok"]
    err = run("audit", "verify", "--db", "mysql://nope", "--json", code=2)
    assert "sqlite:// or postgresql://" in err["message"]


def test_error_lines_keep_a_long_path_whole(tmp_path: Path) -> None:
    """Error lines are not wrapped: a path longer than the terminal was folded mid-word, so it
    could not be copied, and a test matching it failed when the fold fell at its colon."""
    deep = tmp_path / ("d" * 90) / "bank.db"
    deep.parent.mkdir()
    res = CliRunner().invoke(main, ["audit", "verify", "--db", f"sqlite:///{deep}"])
    assert res.exit_code == 2
    assert f"no database at {deep}: the file does not exist" in res.output, res.output


@pytest.mark.parametrize("backup", ["http://[::1", "http://127.0.0.1:99999", "https://"])
def test_restore_refuses_a_backup_node_url_that_is_not_one(tmp_path: Path, backup: str) -> None:
    """It was a bare 'ValueError: Invalid IPv6 URL', or a failed request after the audit."""
    res = CliRunner().invoke(
        main, ["audit", "restore", "--db", f"sqlite:///{tmp_path}/b.db", "--backup", backup]
    )
    assert res.exit_code == 2 and "Invalid value for '--backup'" in res.output, res.output
    assert "is not an http:// or https:// URL" in res.output and not list(tmp_path.iterdir())


def test_a_mistyped_database_is_named_and_nothing_is_created(home: Path, tmp_path: Path) -> None:
    """Only `hubi bank init` makes a database. Every other command (and `bank serve`) on a path
    with no file, on a file that is not SQLite, or on a database without the books' schema
    says which, exits non-zero, and leaves the path as it was: an audit of a mistyped path used
    to create an empty file there and fail on a missing table, and `bank show` made new empty
    books that the audit then called clean."""
    h = str(home)
    typo = tmp_path / "bnak.db"
    url = f"sqlite:///{typo}"
    uses = [
        ("audit", "verify", "--db", url, "--json"),
        ("audit", "locate", "--db", url, "--book", "BKA-amy", "--json"),
        ("bank", "show", "BKA-treasury", "--home", h, "--bank", "BKA", "--db", url, "--json"),
        ("bank", "fund", "BKA-treasury", "5", "--home", h, "--bank", "BKA", "--db", url),
    ]

    def said(args: tuple[str, ...] | list[str]) -> str:  # exits non-zero; its words, unwrapped
        res = CliRunner().invoke(main, list(args), catch_exceptions=False)
        assert res.exit_code != 0, (args, res.output)
        return " ".join(res.output.split())

    for args in uses:
        assert f"no database at {typo}: the file does not exist" in said(args), args
    assert not typo.exists() and not list(tmp_path.iterdir())
    serve = ["bank", "serve", "--home", h, "--bank", "BKA", "--db", url, "--port", "0"]
    assert f"no database at {typo}" in said(serve)
    with pytest.raises(StoreError, match=f"no database at {typo}: the file does not exist"):
        restore.open_source(url)  # `hubi audit restore --backup URL`: a bank's or a replica's
    assert not typo.exists()
    # three slashes and a relative-looking path: the message says which file it looked for
    err = run("audit", "verify", "--db", "sqlite:///bnak.db", "--json", code=2)["message"]
    assert err == (
        "no database at /bnak.db: the file does not exist "
        "(sqlite:///bnak.db names the absolute path /bnak.db)"
    )

    typo.write_bytes(bytes(range(256)) * 20)  # not SQLite
    err = run("audit", "verify", "--db", url, "--json", code=2)["message"]
    assert "file is not a database" in err and typo.read_bytes() == bytes(range(256)) * 20
    typo.unlink()
    con = sqlite3.connect(typo)  # SQLite, but not bank books
    con.execute("CREATE TABLE other (x)")
    con.close()
    for args in [*uses, serve]:
        assert "holds no bank books (no hubi schema in it" in said(args), args
    con = sqlite3.connect(typo)
    assert [r[0] for r in con.execute("SELECT name FROM sqlite_master")] == ["other"]
    con.close()


def test_a_bank_id_the_home_does_not_hold_is_named_before_any_file_is_touched(
    home: Path, tmp_path: Path
) -> None:
    """`--bank BKZ` (a typo) was only found out when the database folder was missing, and
    `--bank ..` made the books' default path HOME/bank.db, outside HOME/banks. A bank id is
    now checked as one, and against the banks HOME holds; a home with no bank says how to make
    one (it named a `hubi kmc` command that does not exist)."""
    before = sorted(str(p.relative_to(home)) for p in home.rglob("*"))

    def said(*args: str) -> str:
        res = CliRunner().invoke(main, list(args), catch_exceptions=False)
        assert res.exit_code == 2, (args, res.output)  # a usage error
        return " ".join(res.output.split())

    for command in (
        ["bank", "init"],
        ["bank", "show", "BKA-treasury"],
        ["bank", "fund", "BKA-x", "5"],
    ):
        err = said(*command, "--home", str(home), "--bank", "BKZ")
        assert f"{home} holds no bank BKZ (it holds BKA, BKB)" in err, err
        assert "hubi consortium init" in err
        for bad in ("..", "bka"):
            err = said(*command, "--home", str(home), "--bank", bad)
            assert f"Invalid value for --bank: bank id '{bad}' may only use A-Z and 0-9" in err
    # funding another bank's account named the engine's debit()/credit() (an interbank note)
    err = said("bank", "fund", "BKB-bo", "5", "--home", str(home), "--bank", "BKA")
    assert "BKB-bo is an account of bank BKB: bank BKA's treasury funds its own accounts" in err
    assert "(fund it with --bank BKB)" in err and "debit()" not in err
    err = said("bank", "fund", "bka-x", "5", "--home", str(home), "--bank", "BKA")
    assert "Invalid value for ACCOUNT: account id" in err, err
    # a folder with no files in it booked nothing and said nothing, with exit status 0
    (tmp_path / "none").mkdir()
    err = said("bank", "book", str(tmp_path / "none"), "--home", str(home), "--bank", "BKA")
    assert f"no note files in {tmp_path / 'none'}" in err, err
    # an amount no balance holds was "BadValue: varint out of range"
    err = said("bank", "fund", "BKA-bo", str(1 << 64), "--home", str(home), "--bank", "BKA")
    assert "Invalid value for 'AMOUNT'" in err and "1<=x<=9223372036854775807" in err, err
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    err = said("bank", "init", "--home", str(empty))
    assert f"make the home first (`hubi consortium init --home {empty} --banks BKA,BKB`" in err
    assert "hubi kmc" not in err and not list(empty.iterdir())


def test_bank_init_keeps_the_subtrees_a_version_1_database_lacks(
    home: Path, tmp_path: Path
) -> None:
    """A database migrated from schema version 1 has no kept subtrees for its older records, so
    proofs over them read the records. `hubi bank init` (the migration command) and a node as it
    starts hash the register once and keep them, but only when the tree they make is the signed
    one."""
    h, db = str(home), f"sqlite:///{tmp_path / 'v1.db'}"
    on = ["--home", h, "--bank", "BKA", "--db", db]
    run("bank", "init", *on, "--checkpoint-every", "64", "--json")
    run("bank", "open-account", "BKA-cy", *on, "--fund", "1000000", "--json")
    run("bank", "open-account", "BKA-di", *on, "--json")
    _notes(home, tmp_path / "notes", "BKA-cy", "BKA-di", 150)
    assert run("bank", "book", str(tmp_path / "notes"), *on, "--json")["ok"]
    con = sqlite3.connect(tmp_path / "v1.db")
    kept = con.execute("SELECT level, idx, hash FROM merkle_nodes ORDER BY level, idx").fetchall()
    assert [(lv, i) for lv, i, _ in kept] == [(8, 0)]  # 300+ entries, heads every 64
    con.execute("DELETE FROM merkle_nodes")  # as a version-1 database comes out of migration
    con.commit()
    init = run("bank", "init", *on, "--json")
    assert (init["kept_subtrees_added"], init["kept_subtrees_not_added"]) == (1, None), init
    assert con.execute("SELECT level, idx, hash FROM merkle_nodes").fetchall() == kept
    assert run("bank", "init", *on, "--json")["kept_subtrees_added"] == 0  # all there
    # a node started on such a database (without `bank init`) keeps them as it starts
    con.execute("DELETE FROM merkle_nodes")
    con.commit()
    node = build_node(ServeConfig(home=home, bank="BKA", db=db))
    node.backend.close()
    assert con.execute("SELECT level, idx, hash FROM merkle_nodes").fetchall() == kept
    # a record changed since it was signed: nothing is kept from it
    con.execute("DELETE FROM merkle_nodes")
    (body,) = con.execute("SELECT body FROM records WHERE book = 'BKA-cy' AND n = 5").fetchone()
    con.execute(
        "UPDATE records SET body = ? WHERE book = 'BKA-cy' AND n = 5",
        (body[:-1] + bytes([body[-1] ^ 1]),),
    )
    con.commit()
    init = run("bank", "init", *on, "--json")
    assert init["kept_subtrees_added"] == 0, init
    assert "differs from the signed checkpoint of tree size" in init["kept_subtrees_not_added"]
    assert con.execute("SELECT COUNT(*) FROM merkle_nodes").fetchone()[0] == 0
    con.close()


def test_bank_cli_on_postgresql(home: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    h = str(home)
    url = make_url("postgresql", tmp_path, request)
    # an empty database is not books: named, and left empty
    err = run("audit", "verify", "--db", url, "--json", code=2)["message"]
    assert "holds no bank books (no hubi schema in it" in err
    err = run("bank", "show", "BKB-x", "--home", h, "--bank", "BKB", "--db", url, "--json", code=2)
    assert "holds no bank books" in err["message"]
    run("bank", "init", "--home", h, "--bank", "BKB", "--db", url, "--json")
    run(
        "bank",
        "open-account",
        "BKB-cy",
        "--home",
        h,
        "--bank",
        "BKB",
        "--db",
        url,
        "--fund",
        "900",
        "--json",
    )
    run("bank", "open-account", "BKB-di", "--home", h, "--bank", "BKB", "--db", url, "--json")
    _notes(home, tmp_path / "n", "BKB-cy", "BKB-di", 3)
    assert run(
        "bank", "book", str(tmp_path / "n"), "--home", h, "--bank", "BKB", "--db", url, "--json"
    )["ok"]
    report = run("audit", "verify", "--db", url, "--home", h, "--json")
    assert report["ok"] and report["records"] == 2 * 4 + 0
    assert "***" in report["checks"]["database"] or "@" not in report["checks"]["database"]


@pytest.mark.parametrize(
    "args",
    [
        ["bank", "serve", "--home", "H", "--bank", "BKA", "--port", "0", "--ready-file"],
        ["token", "sim", "--state", "S", "--port-file"],
    ],
)
def test_a_file_to_write_in_a_missing_folder_is_named_before_anything_starts(
    tmp_path: Path, args: list[str]
) -> None:
    """`bank serve --ready-file` and `token sim --port-file` in a folder that does not exist:
    the node listened (the simulator ran) and then died with a FileNotFoundError traceback."""
    missing = tmp_path / "no" / "such" / "ready.json"
    args = [str(tmp_path) if a in ("H", "S") else a for a in args] + [str(missing)]
    res = CliRunner().invoke(main, args)
    said = " ".join(res.output.split())
    assert res.exit_code == 2, res.output
    assert f"there is no folder {missing.parent} to write ready.json in" in said, said
    assert not (tmp_path / "no").exists()
