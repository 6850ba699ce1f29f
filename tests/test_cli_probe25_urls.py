"""Probe round 25, node URLs: an empty port (`http://h:`), and a character a URL may not hold
unescaped (a space, '"', '|', a backslash, a bad '%' escape), passed every option that takes a
node URL and failed only at request time (httpx sent `http://h:` to port 80, and quietly
rewrote the path). Each option now refuses them at once, naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from hubi.cli import main
from hubi.commands.params import check_url

# (URL, the words naming what is wrong with it)
BAD = [
    ("http://127.0.0.1:", "its port is empty"),
    ("http://127.0.0.1:/api", "its port is empty"),
    ("http://[::1]:", "its port is empty"),
    ("http://bank.example/my node", "it holds ' '; write a space as %20"),
    ("http://bank.example/?who=a b", "it holds ' '"),
    (
        'http://bank.example/"x"',
        "it holds '\"', which a URL must not hold unescaped (write it as %22)",
    ),
    ("http://bank.example/a|b", "it holds '|'"),
    ("http://bank.example/a\\b", "it holds '\\\\'"),
    ("http://bank.example/{id}", "it holds '{'"),
    ("http://bank.example/100%", "a '%' that is not a %XX escape"),
    ("http://bank.example:+80", "its port '+80' is not a number 1-65535"),
    ("http://[::1]x/", "'x' follows its host"),
]


@pytest.mark.parametrize(("url", "words"), BAD)
def test_a_url_that_no_request_can_use_is_refused_naming_why(url: str, words: str) -> None:
    with pytest.raises(click.BadParameter) as err:
        check_url(url, "'--bank'")
    message = err.value.format_message()
    assert "is not an http:// or https:// URL" in message and words in message, message


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "http://bank.example/my%20node",
        "http://bank.example/a/b?x=1&y=2",
        "https://bank.example:443/",
        "http://[::1]:8700/",
        "http://bank_a.internal:8700",
        "http://例子.cn/路径",  # a name in another script is encoded when sent
    ],
)
def test_urls_a_request_can_use_still_pass(url: str) -> None:
    assert check_url(url, "'--bank'") == url


def _options(tmp_path: Path, url: str) -> list[tuple[str, list[str]]]:
    """(option, argv) for every option of `hubi` that takes a node URL, given `url`."""
    home = tmp_path / "home"
    return [
        ("--bank", ["merchant", "--home", str(tmp_path / "shop"), "upload", "--bank", url]),
        ("--replica-of", ["bank", "serve", "--home", str(tmp_path), "--bank", "BKA",
                          "--replica-of", url]),
        ("--endpoint", ["consortium", "init", "--home", str(home), "--banks", "BKA,BKB",
                        "--endpoint", f"BKA={url}"]),
        ("--etcd", ["consortium", "init", "--home", str(home), "--banks", "BKA,BKB",
                    "--orderer", "etcd", "--etcd", f"BKB={url}"]),
        ("--endpoint", ["consortium", "join", "--home", str(home), "--bank", "BKC",
                        "--endpoint", url]),
        ("--etcd", ["consortium", "join", "--home", str(home), "--bank", "BKC", "--etcd", url]),
        ("--backup", ["audit", "restore", "--db", f"sqlite:///{tmp_path}/b.db", "--backup", url]),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("url", "words"),
    [("http://127.0.0.1:", "its port is empty"), ("http://127.0.0.1:8700/a b", "it holds ' '")],
)
def test_every_option_taking_a_node_url_refuses_it_before_anything_is_made(
    tmp_path: Path, url: str, words: str
) -> None:
    for option, argv in _options(tmp_path, url):
        res = CliRunner().invoke(main, argv)
        assert res.exit_code == 2, (argv, res.output)
        assert f"Invalid value for '{option}'" in res.output or f"{option}:" in res.output, (
            argv,
            res.output,
        )
        assert words in res.output, (argv, res.output)
        assert sorted(p.name for p in tmp_path.iterdir()) == [], argv  # nothing made


@pytest.fixture(scope="module")
def bank_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_bank_support import make_bank
    from tests.world import make_world

    path = tmp_path_factory.mktemp("bank") / "bank.db"
    make_bank(f"sqlite:///{path}", make_world(), accounts=("BKA-alice",), fund=100).close()
    return path


@pytest.mark.parametrize("scheme", ["HTTP", "Https"])
def test_restore_takes_a_node_url_in_any_case_as_a_node(bank_db: Path, scheme: str) -> None:
    """'HTTP://node' (a scheme is case-blind) was taken for a database URL: not checked as a
    URL, then opened as a database and refused as one."""
    args = ["audit", "restore", "--db", f"sqlite:///{bank_db}", "--backup"]
    res = CliRunner().invoke(main, [*args, f"{scheme}://127.0.0.1:"])
    assert res.exit_code == 2 and "Invalid value for '--backup'" in res.output, res.output
    assert "its port is empty" in res.output, res.output
    res = CliRunner().invoke(main, [*args, f"{scheme}://127.0.0.1:1"])
    assert res.exit_code == 2, res.output
    assert "a hot-backup node only answers requests signed by the bank: pass --home" in res.output
