"""`hubi consortium status` and `up` on damaged state files and on strange replies (a real HTTP
server answering /health and /v1/consortium/status with garbage): a named error for a damaged
file, "down" or "details unknown" for a reply, never a RecursionError/AttributeError traceback."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hubi.consortium.supervisor import Supervisor, init_home, status

HUBI = [sys.executable, "-m", "hubi.cli"]
DEEP = "[" * 100_000 + "]" * 100_000
OK_BANK = '{"status": "ok"}'
OK_ETCD = '{"health": "true"}'


def _cli_status(folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HUBI, "consortium", "status", *extra],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (DEEP, "is damaged: not JSON (the text is not valid JSON (nested too deeply"),
        ('{"home": "/x", "banks": [5], "etcd": []}', "banks must be objects with id and url"),
        ('{"home": "/x", "banks": [{"id": "BKA"}], "etcd": []}', "banks must be objects with"),
        ('{"home": "/x", "banks": [], "etcd": [["m0"]]}', "etcd must be objects with name and"),
    ],
    ids=["too-deep", "bank-not-object", "bank-without-url", "member-not-object"],
)
def test_a_damaged_up_json_is_named(tmp_path: Path, text: str, words: str) -> None:
    root = tmp_path / "hubi-consortium"
    root.mkdir()
    (root / "up.json").write_text(text)
    with pytest.raises(RuntimeError) as info:
        status(tmp_path)
    assert f"{root / 'up.json'} " in str(info.value) and words in str(info.value)
    r = _cli_status(tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert words in " ".join(r.stderr.split()), r.stderr


@pytest.mark.parametrize("text", [DEEP, "[1]", '{"supervisor_pid": true}', "\xff\xfe"])
def test_a_second_up_names_the_running_one_whatever_up_json_holds(
    tmp_path: Path, text: str
) -> None:
    """The folder is locked by a running `up` (here: this test); its up.json is damaged. The
    second `up` still says the folder is taken, without a pid it cannot read."""
    root = tmp_path / "hubi-consortium"
    root.mkdir()
    (root / "up.json").write_text(text, encoding="latin-1")
    fd = os.open(root / "up.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RuntimeError) as info:
            Supervisor(tmp_path, banks=1).prepare()
    finally:
        os.close(fd)
    msg = str(info.value)
    assert "is already running in" in msg and "supervisor pid" not in msg, msg


class _Strange(BaseHTTPRequestHandler):
    """Answers GET <path> from ``replies`` (200 and the text), anything else 404."""

    replies: dict[str, str] = {}

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = self.replies.get(self.path)
        data = (body or "not here").encode()
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("home")
    init_home(path, ["BKA"], seed=b"strange replies")
    return path


@pytest.fixture
def strange(tmp_path: Path, home: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A folder whose up.json names one bank and one etcd member, both served by a real HTTP
    server answering from the dict (path -> reply) the test fills in."""
    replies: dict[str, str] = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("S", (_Strange,), {"replies": replies}))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    up = {
        "state": "running",
        "home": str(home),
        "banks": [{"id": "BKA", "url": url + "/bank", "pid": None}],
        "etcd": [{"name": "m0", "url": url + "/etcd", "pid": None}],
    }
    root = tmp_path / "hubi-consortium"
    root.mkdir()
    (root / "up.json").write_text(json.dumps(up))
    try:
        yield tmp_path, replies
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("bank", "etcd", "says"),
    [
        (DEEP, OK_ETCD, "nested too deeply"),
        ("[]", OK_ETCD, "is list, not an object"),
        ("no json here", OK_ETCD, "not valid JSON"),
        (OK_BANK, DEEP, "nested too deeply"),
        (OK_BANK, '"true"', "is str, not an object"),
    ],
    ids=["bank-too-deep", "bank-list", "bank-not-json", "etcd-too-deep", "etcd-text"],
)
def test_a_strange_health_reply_is_down(
    strange: tuple[Path, dict[str, str]], bank: str, etcd: str, says: str
) -> None:
    folder, replies = strange
    replies.update({"/bank/health": bank, "/etcd/health": etcd})
    st = status(folder)
    assert st["healthy"] is False
    down = [x for x in st["banks"] + st["etcd"] if not x["healthy"]]
    assert len(down) == 1 and says in down[0]["error"], down
    r = _cli_status(folder)
    assert r.returncode == 1 and "down" in r.stdout and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize(
    ("reply", "shown"),
    [
        ("[1, 2]", {}),  # details unknown
        (DEEP, {}),
        ('{"applied_revision": 7, "peers": [1]}', {"applied_revision": 7, "stalled_peers": []}),
        ('{"peers": {"BKB": 5, "BKC": {"stalled": true}}}', {"stalled_peers": ["BKC"]}),
        ('{"pruning": {"pruner": "BKA", "waiting_for": [1, 2]}}', {"pruning": None}),
        ('{"pruning": "all of it"}', {"pruning": None}),
    ],
    ids=["list", "too-deep", "peers-list", "peer-not-object", "waiting-for-numbers", "pruning"],
)
def test_a_strange_consortium_status_reply_is_unknown(
    strange: tuple[Path, dict[str, str]], reply: str, shown: dict[str, object]
) -> None:
    """The bank is healthy; what it says of the log is shown where it makes sense, else left
    out (the command's text output joins the peers and banks it names)."""
    folder, replies = strange
    replies.update(
        {"/bank/health": OK_BANK, "/etcd/health": OK_ETCD, "/bank/v1/consortium/status": reply}
    )
    st = status(folder)
    assert st["healthy"] is True
    bank = st["banks"][0]
    assert {k: bank.get(k) for k in shown} == shown
    if not shown:
        assert "applied_revision" not in bank
    r = _cli_status(folder)
    assert r.returncode == 0 and "healthy" in r.stdout and "Traceback" not in r.stderr, r.stderr
