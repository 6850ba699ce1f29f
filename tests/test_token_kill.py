"""Power cuts: SIGKILL the simulator at seeded storage steps during provisioning, PIN checks
and signing (14 + 48 seeded points, at least 50 of them real kills). After every restart the token must boot with an intact
keystore; across the whole campaign no serial is used twice, the notes never exceed the
offline allowance, and the persisted serial and allowance never go backwards.

A kill point is a storage step of the firmware (hal.storage: each written chunk, sync, rename,
remove); at a chunk write half of the chunk reaches the file first (a torn write). The
simulator then stops dead and the test SIGKILLs it (drivers/sim/storage.py).
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from hubi.token.client import TokenClient
from hubi.token.harness import TokenWorld
from hubi.token.sim import ROOT, Simulator
from hubi_core import codec
from hubi_core import protocol as P
from hubi_core.errors import ErrorReply, FrameError, LinkClosed, LinkError, LinkTimeout
from hubi_core.verify import verify_object

pytestmark = [pytest.mark.micropython, pytest.mark.slow]
PAYER = "BKA-000000000042"
PAYEE = "BKB-000000000007"
SEED = 20261122
CAP = 4000
N_PROVISION = 14
N_SESSION = 48

sys.path.insert(0, str(ROOT / "firmware"))
from core import store  # noqa: E402 - firmware core runs on CPython too
from core.keystore import _DEV_KEY  # noqa: E402


def check_flash(flash: Path) -> None:
    """Every state file is an intact record (MAC good) or a leftover temp file."""
    dev = store.open_record(_DEV_KEY, "dev.bin", (flash / "dev.bin").read_bytes())
    from core import kdf

    key = kdf.hkdf_expand(kdf.hkdf_extract(dev[:32], b"hubi"), b"hubi/token/mac/1")
    for p in flash.rglob("*"):
        rel = p.relative_to(flash).as_posix()
        if p.is_dir() or rel.endswith((".tmp", ".part")) or rel == "dev.bin":
            continue
        if rel.startswith("trust/") and not rel.endswith("keys.bin") or rel.startswith("stage/"):
            continue  # public files, checked against the consortium digests by the token
        store.open_record(key, rel, p.read_bytes())  # raises store.Corrupt


def ops_of(sim: Simulator) -> list[tuple[int, str, str]]:
    out = []
    for ln in sim.tail(10**8).splitlines():
        if ln.startswith("HUBI-OP"):
            _, n, op, name = ln.split()
            out.append((int(n), op, name))
    return out


def killed(sim: Simulator) -> bool:
    return "HUBI-KILLPOINT" in sim.tail(10**6)


class PowerCut:
    """SIGKILL the simulator the moment it reports its kill point (a watcher thread), so the
    host sees the port die at once, as when a board loses power."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.cut = threading.Event()  # set once the process was killed at its kill point
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        proc = self.sim.proc
        while not self.stop.is_set() and proc is not None and proc.poll() is None:
            if killed(self.sim):
                os.kill(proc.pid, signal.SIGKILL)
                self.cut.set()
                return
            time.sleep(0.005)

    def __enter__(self) -> PowerCut:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.sim.kill()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> TokenWorld:
    return TokenWorld(tmp_path_factory.mktemp("token-kill"))


def _open(sim: Simulator) -> TokenClient:
    return TokenClient.open(sim.port, timeout_ms=5000, retries=0)


def test_kill_during_provisioning(world: TokenWorld) -> None:
    # dry run: how many storage steps do first boot + provisioning take?
    state = world.new_state()
    sim = world.sim(state, "headless", trace=True).start()
    try:
        sim.wait_ready()
        with _open(sim) as tok:
            world.provision(tok, PAYER, "1234")
        total = len(ops_of(sim))
    finally:
        sim.stop()
    assert total > 20
    rng = random.Random(SEED)
    points = sorted(rng.sample(range(1, total + 1), N_PROVISION))
    outcomes = {"blank": 0, "ready": 0}
    for k in points:
        state = world.new_state()
        sim = world.sim(state, "headless", kill_at=k).start()
        with PowerCut(sim):
            try:
                sim.wait_ready(10)
                with _open(sim) as tok:
                    world.provision(tok, PAYER, "1234")
            except (LinkError, RuntimeError, OSError):
                pass
            assert killed(sim), f"kill point {k} of {total} not reached"
        # power back on: the token boots, is blank or ready, and its records are intact
        with world.running(state, "headless") as (_s, tok):
            info = tok.info()
            outcomes[info["state"]] += 1
            if info["state"] == "blank":
                assert info["transport_key"], f"kill at {k}: blank token without transport key"
                world.provision(tok, PAYER, "1234")
            tok.pay(world.request(PAYEE, 10))
            note = tok.confirm_pay("1234")
            assert verify_object(note, world.trust).ok
            assert codec.decode(note).serial == 1
        check_flash(state / "flash")
    assert outcomes["blank"] >= 1


_ALLOWANCE_SERIAL = [1 << 40]  # above the provisioning allowance's (time-based) serial


def _new_allowance(tok: TokenClient, world: TokenWorld) -> None:
    """The bank loads a fresh allowance (serials increase; a replayed one is refused)."""
    from hubi import kmc
    from hubi.token.provision import make_allowance

    _ALLOWANCE_SERIAL[0] += 1
    bank = kmc.load_bank_identity(world.home, "BKA")
    info = tok.info()
    a = make_allowance(
        bank, PAYER, CAP, info["next_serial"], int(time.time()) + 86400, serial=_ALLOWANCE_SERIAL[0]
    )
    tok.load_allowance(codec.encode(a))


def _session(tok: TokenClient, world: TokenWorld, rng: random.Random, notes: list[bytes]) -> None:
    """One connection: a wrong PIN, then two payments with the right one; when the offline
    allowance is used up, the bank loads a new one."""
    for i in range(2):
        amount = rng.randint(50, 400)
        try:
            tok.pay(world.request(PAYEE, amount))
        except ErrorReply as e:
            assert e.code == P.ERR_ALLOWANCE
            _new_allowance(tok, world)
            return
        if i == 0:
            try:
                tok.confirm_pay("9999")
            except ErrorReply as e:
                assert e.code == P.ERR_PIN_WRONG
        notes.append(tok.confirm_pay("1234"))


def test_kill_during_pin_checks_and_signing(world: TokenWorld) -> None:
    state = world.provisioned(PAYER, cap=CAP)
    rng = random.Random(SEED + 1)
    # dry run on a copy: storage steps of one session
    dry = world.provisioned(PAYER, cap=CAP)
    sim = world.sim(dry, "headless", trace=True).start()
    try:
        sim.wait_ready()
        with _open(sim) as tok:
            _session(tok, world, random.Random(0), [])
        steps = len(ops_of(sim))
    finally:
        sim.stop()
    assert steps >= 8  # counter + PIN writes around each signature
    notes: list[bytes] = []
    last_serial = 0
    last_spent = 0
    last_allowance = 0
    firsts = {1}  # first serial of every allowance the token held (the provisioning one: 1)
    kills = 0
    for _ in range(N_SESSION):
        k = rng.randint(1, steps)
        sim = world.sim(state, "headless", kill_at=k).start()
        with PowerCut(sim):
            try:
                sim.wait_ready(10)
                with _open(sim) as tok:
                    _session(tok, world, rng, notes)
            except (LinkClosed, LinkTimeout, FrameError, OSError):
                pass  # the token died mid-request; any ERROR reply would fail the test
            kills += killed(sim)  # else the session ended first: the cut comes when idle
        with world.running(state, "headless") as (_s, tok):
            info = tok.info()
            assert info["state"] == "ready", sim.tail()
            al = info["allowance"]
            assert info["next_serial"] >= last_serial
            assert (al["serial"], al["spent"]) >= (last_allowance, last_spent)
            assert al["spent"] <= CAP
            last_serial, last_spent, last_allowance = info["next_serial"], al["spent"], al["serial"]
            firsts.add(al["first_serial"])
        check_flash(state / "flash")
    # every provisioning point is a real kill; together at least 50 real power cuts
    assert N_PROVISION + kills >= 50, kills
    serials = [codec.decode(n).serial for n in notes]
    assert len(serials) == len(set(serials)), "a serial was used twice"
    spent: dict[int, int] = {}
    for n in notes:
        o = codec.decode(n)
        assert "allowance" not in o.values  # the bank infers it from the serial
        # the allowance a note spends: the one whose serial range (from its first serial on)
        # holds the note's serial, as the bank decides it
        first = max(f for f in firsts if f <= o.serial)
        spent[first] = spent.get(first, 0) + o["amount"]
    assert spent and max(spent.values()) <= CAP, spent  # never past any allowance
    assert max(serials) < last_serial
    for n in notes:
        assert verify_object(n, world.trust).ok
    # the keystore still opens with the PIN
    with world.running(state, "headless") as (_s, tok):
        tok.change_pin("1234", "1234")
        assert tok.info()["pin_tries_left"] == 10
