"""Loopback port reservation: distinct, bindable, outside the ephemeral range, cross-process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hubi.infra import ports

ROOT = Path(__file__).resolve().parent.parent


def test_ports_distinct_bindable_and_outside_ephemeral_range() -> None:
    got = ports.free_ports(20)
    try:
        assert len(set(got)) == 20
        lo, hi = ports._ephemeral_range()
        assert all(not lo <= p <= hi for p in got)
        assert set(got) <= ports.reserved_ports()
        for p in got[:5]:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p))
                s.listen()
    finally:
        for p in got:
            ports.release_port(p)
    assert not set(got) & ports.reserved_ports()


def test_reservation_holds_across_processes() -> None:
    held = ports.free_port()
    try:
        lo = held - 1 if held > 20000 else held
        code = "from hubi.infra import ports\nprint(sorted(ports.free_port() for _ in range(2)))\n"
        # A child limited to [held-1, held+2) must skip the port this process holds.
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=str(ROOT),
            env={**os.environ, "HUBI_PORT_RANGE": "%d-%d" % (lo, held + 2)},
        )
        assert (
            str(held)
            not in out.stdout.replace("[", " ").replace("]", " ").replace(",", " ").split()
        )
    finally:
        ports.release_port(held)


def test_busy_port_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        monkeypatch.setenv("HUBI_PORT_RANGE", "%d-%d" % (busy, busy + 3))
        got = ports.free_port()
        try:
            assert got != busy
        finally:
            ports.release_port(got)
