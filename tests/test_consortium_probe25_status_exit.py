"""`hubi consortium status` tells a script, by its exit status, whether the consortium runs well
(round 25): it exited 0 whatever it found (a bank node killed, an etcd member down, a stopped
consortium whose ports another program answers, an up.json listing nothing), so `status ||
alert` never alerted. Now 0 only when every bank node and etcd member is healthy, 1 otherwise
(text and --json alike, the report still printed), 2 for a usage error or nothing to judge."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hubi.consortium.supervisor import Supervisor, init_home
from hubi.infra import _process

HUBI = [sys.executable, "-m", "hubi.cli"]


def _cli_status(folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HUBI, "consortium", "status", *extra],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _status_code_when(folder: Path, code: int) -> subprocess.CompletedProcess[str]:
    """`status --json` once it exits with `code` (or the last try after 60 s, for the asserts
    to name): an etcd member killed while it led leaves the others unhealthy for a while."""
    deadline = time.monotonic() + 60
    while True:
        r = _cli_status(folder, "--json")
        if r.returncode == code or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


class _Fine(BaseHTTPRequestHandler):
    """Says every part is fine: a bank's /health and an etcd member's /health."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = b'{"health": "true"}' if self.path.startswith("/etcd") else b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def fine(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder with a consortium home and a real HTTP server saying every part is fine."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Fine)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    init_home(tmp_path / "home", ["BKA"], seed=b"status exit codes")
    (tmp_path / "hubi-consortium").mkdir()
    try:
        yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _write_up(folder: Path, url: str, state: str, banks: bool = True, etcd: bool = True) -> None:
    up = {
        "state": state,
        "home": str(folder / "home"),
        "banks": [{"id": "BKA", "url": url + "/bank", "pid": None}] if banks else [],
        "etcd": [{"name": "m0", "url": url + "/etcd", "pid": None}] if etcd else [],
    }
    (folder / "hubi-consortium" / "up.json").write_text(json.dumps(up))


def test_every_part_answering_well_is_0(fine: tuple[Path, str]) -> None:
    folder, url = fine
    _write_up(folder, url, "running")
    for extra in ((), ("--json",)):
        r = _cli_status(folder, *extra)
        assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize(
    ("state", "banks", "etcd", "why"),
    [
        ("stopped", True, True, "a stopped consortium: whatever answers its ports is not it"),
        ("stopping", True, True, "a consortium stopping"),
        ("running", False, True, "an up.json listing no bank node runs nothing"),
        ("running", False, False, "an up.json listing nothing runs nothing"),
    ],
    ids=["stopped", "stopping", "no-bank", "nothing"],
)
def test_a_consortium_not_running_is_1_whatever_answers(
    fine: tuple[Path, str], state: str, banks: bool, etcd: bool, why: str
) -> None:
    folder, url = fine
    _write_up(folder, url, state, banks, etcd)
    r = _cli_status(folder)
    assert r.returncode == 1, (why, r.stdout + r.stderr)
    assert f"({state})" in r.stdout and "Traceback" not in r.stderr, r.stdout + r.stderr
    r = _cli_status(folder, "--json")
    assert r.returncode == 1, (why, r.stdout + r.stderr)
    st = json.loads(r.stdout)  # the report is still printed
    assert st["healthy"] is False and st["state"] == state, st


def test_usage_errors_and_nothing_to_judge_are_2(tmp_path: Path) -> None:
    r = _cli_status(tmp_path, "--no-such-option")
    assert r.returncode == 2 and "No such option" in r.stderr, r.stderr
    r = _cli_status(tmp_path)  # no consortium here
    assert r.returncode == 2 and "no consortium in" in " ".join(r.stderr.split()), r.stderr
    r = _cli_status(tmp_path, "--json")
    assert r.returncode == 2 and json.loads(r.stdout)["error"] == "FileNotFoundError", r.stdout


@pytest.mark.slow
def test_real_nodes_down_or_killed_are_1_and_healthy_again_is_0(tmp_path: Path) -> None:
    """A real consortium (one bank node, three etcd members): each part killed in turn makes
    `status` exit 1, text and --json, with the report as before; restarted, 0 again."""
    sup = Supervisor(tmp_path, banks=1, accounts=0, etcd_members=3, durable=False)
    try:
        assert sup.start(timeout=120)
        r = _status_code_when(tmp_path, 0)
        assert r.returncode == 0, r.stdout + r.stderr
        assert json.loads(r.stdout)["healthy"] is True

        # an etcd member down: 1, the member named down
        assert sup.cluster is not None
        sup.cluster.kill(2)
        r = _cli_status(tmp_path)
        said = " ".join(r.stdout.split())
        assert r.returncode == 1, said + r.stderr
        assert f"etcd m2 {sup.cluster.members[2].client_url} down" in said, said
        r = _cli_status(tmp_path, "--json")
        assert r.returncode == 1, r.stdout + r.stderr
        st = json.loads(r.stdout)
        assert st["healthy"] is False and st["etcd"][2]["healthy"] is False, st
        sup.cluster.restart(2, timeout=60)
        r = _status_code_when(tmp_path, 0)
        assert r.returncode == 0, r.stdout + r.stderr

        # the bank node killed (nobody restarts it here): 1, the bank named down
        bka = sup.banks["BKA"]
        assert bka.proc is not None
        _process.kill9(bka.proc)
        r = _cli_status(tmp_path)
        said = " ".join(r.stdout.split())
        assert r.returncode == 1 and f"bank BKA {bka.url} down" in said, said + r.stderr
        r = _cli_status(tmp_path, "--json")
        assert r.returncode == 1, r.stdout + r.stderr
        assert json.loads(r.stdout)["banks"][0]["healthy"] is False
        bka.spawn()
        assert bka.wait_ready(60)
        r = _status_code_when(tmp_path, 0)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        sup.stop()
    # stopped: nothing runs, 1
    r = _cli_status(tmp_path, "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["state"] == "stopped", r.stdout + r.stderr


def test_the_help_says_the_rule() -> None:
    r = subprocess.run(
        [*HUBI, "consortium", "status", "--help"], capture_output=True, text=True, timeout=60
    )
    said = " ".join(r.stdout.split())
    assert r.returncode == 0, r.stderr
    assert "Exit status: 0 when every bank node and etcd member is running and healthy" in said
    assert "1 when any is down, failed, halted or unreachable" in said, said
