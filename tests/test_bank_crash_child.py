"""The process ``test_bank_crash`` kills: books a stream of notes and says ``OK i`` after each
commit. Kept free of pytest and the server fixtures so it starts fast. No tests here."""

from __future__ import annotations

import sys
from pathlib import Path

from hubi.bank.engine import BankEngine
from tests.world import make_world


def child() -> None:  # the killed process: python -c "...; child()" URL NOTES START STOP BATCH
    url, notes_file = sys.argv[1], sys.argv[2]
    start, stop, batch = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    w = make_world()
    eng = BankEngine(url, w.banks["BKA"], w.trust)
    data = Path(notes_file).read_bytes()
    notes, pos = [], 0
    while pos < len(data):
        ln = int.from_bytes(data[pos : pos + 2], "big")
        notes.append(data[pos + 2 : pos + 2 + ln])
        pos += 2 + ln
    print("READY", flush=True)
    i = start
    while i < stop:
        chunk = notes[i : min(i + batch, stop)]
        outs = eng.book_many(chunk) if batch > 1 else [eng.book(chunk[0])]
        for k, out in enumerate(outs):
            assert out.status == "booked", out.reason
            print(f"OK {i + k}", flush=True)  # the "success reply": after the commit
        i += len(chunk)
    print("DONE", flush=True)
