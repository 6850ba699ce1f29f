"""A user name and password in a node URL ("http://alice:pw@host:8700") were taken by every
URL option and then shown in progress lines and errors (hubi nodes take signed requests, so
they did nothing but leak). Every option that takes a node URL now refuses them, naming the
option and without echoing the password. Real `hubi` processes."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.test_merchant_support import frames, hubi, make_shop

SECRET = "s3cretpw"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


URL = f"http://alice:{SECRET}@127.0.0.1:{_closed_port()}"


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["bank", "serve", "--replica-of", URL], "'--replica-of'"),
        (["consortium", "init", "--banks", "BKA,BKB", "--endpoint", f"BKA={URL}"], "--endpoint"),
        (["consortium", "init", "--banks", "BKA,BKB", "--etcd", f"BKA={URL}"], "--etcd"),
        (["consortium", "join", "--bank", "BKC", "--endpoint", URL], "--endpoint"),
        (["consortium", "join", "--bank", "BKC", "--etcd", URL], "--etcd"),
        (["audit", "restore", "--db", "sqlite:///nowhere.db", "--backup", URL], "'--backup'"),
        (["audit", "restore", "--db", "sqlite:///nowhere.db", "--backup", URL.upper()], ""),
    ],
)
def test_every_node_url_option_refuses_a_password(
    tmp_path: Path, args: list[str], option: str
) -> None:
    if args[0] == "consortium":
        args = [*args[:2], "--home", str(tmp_path / "c"), *args[2:]]
    proc = hubi(*args)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert f"Invalid value for {option}" in out and "user name or password" in out, out
    assert SECRET not in out and SECRET.upper() not in out, out
    assert not (tmp_path / "c").exists()  # refused before anything was written


def test_merchant_upload_refuses_a_password_and_keeps_the_note_pending(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    folder = tmp_path / "f"
    folder.mkdir()
    with shop.merchant() as m:
        m.request(500, "coffee", expires=600)
        frames(shop.payer().note(500, time=int(time.time())), folder)
        (res,) = m.scan(sorted(folder.iterdir()))
    assert res.ok, res
    proc = hubi("merchant", "--home", str(shop.home), "upload", "--bank", URL, "--retries", "0")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Invalid value for '--bank'" in out and "user name or password" in out, out
    assert SECRET not in out and "http://***@127.0.0.1" in out, out
    with shop.merchant() as m:  # the accepted note is still there, waiting for its upload
        assert len(m.outbox.pending()) == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://alice:pa/ss@127.0.0.1:8700",  # a raw '/' in the password ended the authority
        "http://alice:pa?ss@127.0.0.1:8700",
        "http://alice:pa#ss@127.0.0.1:8700",
        "http://alice:hunter2@127.0.0.1:99999",  # and another fault that quotes the URL
    ],
)
def test_no_part_of_a_password_is_shown_however_it_is_written(url: str) -> None:
    proc = hubi("audit", "restore", "--db", "sqlite:///nowhere.db", "--backup", url)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "user name or password" in out, out
    secret = url.partition("://")[2].rpartition("@")[0]  # alice:pa/ss and the like
    assert secret not in out and secret.partition(":")[2] not in out, out
    assert ":pa" not in out and "'pa'" not in out, out
    assert "http://***@127.0.0.1" in out, out
