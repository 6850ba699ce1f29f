"""Make release-<commit>.tar.gz with an OLD hubi (kept so the fixture can be made again).

    git worktree add /tmp/old cfbc434
    cd /tmp/old && PYTHONPATH=host:shared /work/main/.venv/bin/python \
        /work/main/tests/data/upgrade/make_release_fixture.py /tmp/fixture
    cd /tmp/fixture && tar --sort=name --owner=0 --group=0 --numeric-owner \
        --mtime='2026-11-22 23:46Z' --exclude=bankhome/banks/BKA/kmc.secret \
        --exclude=merchant/qr -czf release-cfbc434.tar.gz bankhome merchant

Bank BKB (checkpoint every 4 entries): treasury, two funded customers, 7 notes booked from
files; a merchant home whose outbox holds 3 notes the old node booked, one it refused (a payer
serial used twice) and 2 still pending. Test keys only (seeded), never real ones.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from hubi import kmc
from hubi.merchant import Merchant
from hubi_core import codec

T0 = 1_760_000_000
MERCHANT = "BKB-000000000007"
PAYER = "BKB-000000000042"
CLI = [sys.executable, "-c", "from hubi.cli import main; main()"]


def hubi(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def note(bank_home: Path, account: str, serial: int, amount: int, payee: str) -> bytes:
    folder = bank_home / "accounts"
    priv = int.from_bytes((folder / f"{account}.secret").read_bytes(), "big")
    tpl = codec.decode((folder / f"{account}.template").read_bytes(), codec.TEMPLATE)
    made = codec.make_note(tpl, serial, T0 + 100 + serial, amount, payee, "coffee")
    return codec.encode(codec.sign(made, priv))


def main(root: Path) -> None:
    bh, mh = root / "bankhome", root / "merchant"
    kmc.create_home(bh, ["BKA", "BKB"], time=T0, seed=b"upgrade")
    on = ["--home", str(bh), "--bank", "BKB"]
    hubi("bank", "init", *on, "--checkpoint-every", "4")
    hubi("bank", "open-account", PAYER, *on, "--fund", "100000")
    hubi("bank", "open-account", "BKB-000000000043", *on)
    hubi("bank", "fund", "BKB-000000000043", "700", *on)
    hubi("bank", "open-account", MERCHANT, *on, "--out", str(root / "mkeys"))
    notes = root / "notes"
    notes.mkdir()
    for s in range(1, 8):
        (notes / f"n{s}.note").write_bytes(note(bh, PAYER, s, 10 * s, "BKB-000000000043"))
    hubi("bank", "book", str(notes), *on, "--batch", "3")
    keys = root / "mkeys"
    hubi(
        "merchant", "--home", str(mh), "init", "--key", str(keys / f"{MERCHANT}.secret"),
        "--template", str(keys / f"{MERCHANT}.template"), "--trust", str(bh / "trust"),
    )  # fmt: skip

    def pay(serial: int, amount: int) -> None:
        with Merchant.open(mh) as m:
            m.request(amount, "coffee", expires=10**6, now=T0)
            res = m.accept(note(bh, PAYER, serial, amount, MERCHANT), now=T0 + 1)
            assert res.ok, res.verdict.message()

    for i in range(3):
        pay(20 + i, 100 + i)
    pay(1, 10)  # serial 1 was booked above: the node refuses it as a double issue
    ready = root / "ready.json"
    node = subprocess.Popen(
        [*CLI, "bank", "serve", *on, "--port", "0", "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while not (ready.exists() and ready.read_text().strip()):
        time.sleep(0.1)
    url = json.loads(ready.read_text())["url"]
    hubi("merchant", "--home", str(mh), "upload", "--bank", url, "--retries", "0")
    node.send_signal(signal.SIGTERM)
    node.wait(30)
    for i in range(2):
        pay(30 + i, 200 + i)  # left pending
    with Merchant.open(mh) as m:
        print(m.outbox.counts())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
