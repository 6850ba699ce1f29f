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
                # as the servers bind (and free_port probes): a socket an earlier test left in
                # TIME_WAIT on the port would stop a bind without SO_REUSEADDR, not theirs
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", p))
                s.listen()
    finally:
        for p in got:
            ports.release_port(p)
    assert not set(got) & ports.reserved_ports()


def test_reservation_holds_across_processes() -> None:
    held = ports.free_port()
    try:
        lo = held - 3 if held > 20000 else held
        # A child limited to [held-3, held+4) takes every port it can until the range is
        # exhausted, so it tries each one, and must skip the port this process holds. (Asking
        # for a fixed count failed whenever a neighbour was busy: other tests run beside it.)
        code = (
            "from hubi.infra import ports\n"
            "got = []\n"
            "try:\n"
            "    while True:\n"
            "        got.append(ports.free_port())\n"
            "except ports.PortRangeExhausted:\n"
            "    pass\n"
            "print(sorted(got))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=str(ROOT),
            env={**os.environ, "HUBI_PORT_RANGE": "%d-%d" % (lo, held + 4)},
        )
        got = out.stdout.replace("[", " ").replace("]", " ").replace(",", " ").split()
        assert str(held) not in got
        assert got, out.stdout  # some other port of the range was free: the check meant something
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
