"""Probe 25r of the URL check (hubi.commands.params.check_url): an IPv6 host with a numeric
zone id, "http://[::1%1]:8700/", was refused as holding "a '%' that is not a %XX escape", and
the advice (write it as %25) gave a URL the client sends to getaddrinfo as zone "251", another
interface. The client (httpx) takes "[::1%1]" as written; it is a host, not a path escape. A
bad escape elsewhere in such a URL is still named. Real `hubi` processes, a real socket.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.test_merchant_support import frames, hubi, hubi_json, make_shop


def _closed_port() -> int:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        return s.getsockname()[1]


def test_an_ipv6_zone_id_is_taken_and_the_bank_is_asked(tmp_path: Path) -> None:
    shop = make_shop(tmp_path)
    folder = tmp_path / "f"
    folder.mkdir()
    with shop.merchant() as m:
        m.request(500, "coffee", expires=600)
        frames(shop.payer().note(500, time=int(time.time())), folder)
        (res,) = m.scan(sorted(folder.iterdir()))
    assert res.ok, res
    url = f"http://[::1%1]:{_closed_port()}/"
    code, rep = hubi_json(
        "merchant", "--home", str(shop.home), "upload", "--bank", url, "--retries", "0"
    )
    assert code == 1 and rep["stopped"].startswith("bank unreachable"), rep
    assert rep["items"][0]["state"] == "pending", rep


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://[::1%1]:8700/100%", "a '%' that is not a %XX escape"),
        # a user name is refused before anything else is looked at (stop 26)
        ("http://u%zz@[::1%1]:8700/", "a user name or password"),
    ],
)
def test_a_bad_escape_beside_a_zone_id_is_still_named(tmp_path: Path, url: str, words: str) -> None:
    proc = hubi("merchant", "--home", str(tmp_path), "upload", "--bank", url)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Invalid value for '--bank'" in proc.stderr, proc.stderr
    assert words in proc.stderr, proc.stderr
